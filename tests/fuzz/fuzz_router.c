/* fuzz_router.c - request intake in server/http.c, without libmicrohttpd:
 * route lookup and {id} extraction, the query-argument allowlist, the
 * Content-Type and token checks and the access log's URL escaping (the seam
 * of server/http_int.h), plus the metrics label escaping (server.h).
 *
 * Input: lines (\n) of "METHOD", "URL" (path?query, as sent on the request
 * line), "Content-Type", "Authorization" and "token"; missing lines are
 * absent (NULL headers, no token). The query is split and unescaped the way
 * libmicrohttpd does it ('&', then the first '=', then MHD_http_unescape).
 *
 * Oracles: a route found matches its pattern and method; an id extracted is
 * one path segment, NUL-terminated inside its buffer, and marked '#' when it
 * was too long; 405 comes with a non-empty Allow; every escaped string stays
 * inside its buffer, NUL-terminated, printable; the token check accepts
 * exactly "Bearer TOKEN".
 */
#include <microhttpd.h>
#include <string.h>
#include <strings.h>

#include "../../common/id.h"
#include "../../common/job.h"
#include "../../server/http_int.h"
#include "fuzz.h"

#define LINES 5

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return 0;
}

/* Splits a copy of data at '\n' into up to LINES NUL-terminated lines. */
static char *split_lines(const uint8_t *data, size_t size, const char *line[LINES])
{
    char *copy = malloc(size + 1);
    if (!copy) return NULL;
    memcpy(copy, data, size);
    copy[size] = '\0';
    char *p = copy;
    for (int i = 0; i < LINES; i++) {
        line[i] = NULL;
        if (!p) continue;
        line[i] = p;
        char *nl = strchr(p, '\n');
        if (nl) *nl = '\0';
        p = nl ? nl + 1 : NULL;
    }
    return copy;
}

/* Checks what srv__route_find said about method and path. */
static void check_hit(const char *method, const char *path, const struct srv__route_hit *h)
{
    FUZZ_CHECK(h->route >= -1 && h->route < srv_n_routes);
    FUZZ_CHECK(h->route_idx >= -1 && h->route_idx < srv_n_routes);
    FUZZ_CHECK(memchr(h->path_id, '\0', sizeof h->path_id) != NULL);
    FUZZ_CHECK(memchr(h->allow, '\0', sizeof h->allow) != NULL);
    if (h->route >= 0) {
        const struct srv_route *r = &srv_routes[h->route];
        FUZZ_CHECK(!h->bad_method && h->route_idx == h->route);
        FUZZ_CHECK(strcmp(r->method, method) == 0 || (strcmp(method, "HEAD") == 0 && strcmp(r->method, "GET") == 0));
        FUZZ_CHECK(h->has_id == (strstr(r->pattern, "{id}") != NULL));
        if (!h->has_id) FUZZ_CHECK(strcmp(r->pattern, path) == 0);
    } else if (h->bad_method) {
        FUZZ_CHECK(h->route_idx >= 0 && h->allow[0]);
    } else {
        FUZZ_CHECK(h->route_idx == -1 && !h->has_id);
    }
    if (h->has_id) {
        size_t n = strlen(h->path_id);
        FUZZ_CHECK(n > 0 && !strchr(h->path_id, '/'));
        /* A valid id came through whole: it is a segment of the path. */
        if (id_valid(h->path_id)) FUZZ_CHECK(strlen(h->path_id) == ID_LEN && strstr(path, h->path_id));
        if (h->path_id[0] != '#') FUZZ_CHECK(strstr(path, h->path_id) != NULL);
    }
}

static void check_escaped(const char *out, size_t cap)
{
    const char *end = memchr(out, '\0', cap);
    FUZZ_CHECK(end != NULL);
    for (const char *p = out; p < end; p++) FUZZ_CHECK(*p > ' ' && *p < 0x7f);
}

/* One query argument, as libmicrohttpd would hand it to check_query_arg. */
static void check_arg(const struct srv_route *r, char *arg)
{
    char *eq = strchr(arg, '=');
    char *value = NULL;
    if (eq) {
        *eq = '\0';
        value = eq + 1;
        MHD_http_unescape(value);
    }
    MHD_http_unescape(arg);
    bool allowed = srv__query_allowed(r, arg);
    bool listed = false;
    for (const char *const *a = r->query; a && *a; a++) listed = listed || strcmp(*a, arg) == 0;
    FUZZ_CHECK(allowed == listed);
    /* What the handlers do first with the values that name things. */
    if (allowed && value && (strcmp(arg, "cursor") == 0 || strcmp(arg, "job") == 0 || strcmp(arg, "batch") == 0))
        FUZZ_CHECK(!id_valid(value) || strlen(value) == ID_LEN);
    if (allowed && value && strcmp(arg, "status") == 0) {
        enum job_status st;
        if (job_status_parse(value, &st) == 0) FUZZ_CHECK(strcmp(job_status_name(st), value) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *line[LINES];
    char *copy = split_lines(data, size, line);
    if (!copy) return 0;
    const char *method = line[0], *url = line[1] ? line[1] : "/";
    char *path = strdup(url);
    if (!path) goto out;
    char *query = strchr(path, '?');
    if (query) *query++ = '\0';

    struct srv__route_hit hit;
    srv__route_find(method, path, &hit);
    check_hit(method, path, &hit);

    if (hit.route >= 0 && query) {
        for (char *save = NULL, *arg = strtok_r(query, "&", &save); arg; arg = strtok_r(NULL, "&", &save))
            check_arg(&srv_routes[hit.route], arg);
    }

    /* POST bodies: any answer, but no crash on any header. */
    (void)srv__content_type_ok(line[2]);
    if (line[2] && strncasecmp(line[2], "application/json", 16) == 0 && (!line[2][16] || line[2][16] == ';'))
        FUZZ_CHECK(srv__content_type_ok(line[2]));

    const char *token = line[4] ? line[4] : "";
    bool ok = srv__auth_ok(token, line[3]);
    bool want = !token[0] || (line[3] && strncasecmp(line[3], "Bearer ", 7) == 0 && strcmp(line[3] + 7, token) == 0);
    FUZZ_CHECK(ok == want);

    char logbuf[192];
    srv__log_url(logbuf, sizeof logbuf, url);
    check_escaped(logbuf, sizeof logbuf);
    for (size_t cap = 1; cap <= 9; cap++) {
        char small[9];
        srv__log_url(small, cap, url);
        check_escaped(small, cap);
    }

    char label[64];
    size_t full = srv_metrics_escape(label, sizeof label, url);
    FUZZ_CHECK(memchr(label, '\0', sizeof label) != NULL);
    FUZZ_CHECK(full >= strlen(url));
    if (full < sizeof label) FUZZ_CHECK(strlen(label) == full);
    else FUZZ_CHECK(strlen(label) == sizeof label - 1);
out:
    free(path);
    free(copy);
    return 0;
}
