/* http_get.c - the http_get task: one GET with libcurl, on every executor kind.
 *
 * DESIGN
 *
 * args {"url", "timeout" (s, default 30, at most 600), "max_bytes" (default
 * 1 MiB, at most 64 MiB)}. Only http:// and https:// are accepted, at submit
 * and again by libcurl (CURLOPT_PROTOCOLS_STR), and redirects are not
 * followed: a 3xx is a result like any other status, with its "location"
 * header, and the caller decides. A non-2xx status is a success too.
 *
 * Result {"status", "headers": {content-type, content-length, location: the
 * ones the response has}, "bytes": body bytes received, "body": the first
 * max_bytes as text, or base64 with "body_encoding": "base64" when they are
 * not UTF-8 (or hold NUL), "truncated", "elapsed_ms"}. Past max_bytes the
 * transfer is ended (not read to its end) and "truncated" is true.
 *
 * Failures: a connection error is task_error with curl's message; the
 * request's own timeout is `timeout`; a stop is `cancelled` (the runner turns
 * that into `timeout` when the job's deadline caused it).
 *
 * Two runners share the easy-handle setup and the result:
 *   - sync (thread, process): a private multi handle driven by
 *     curl_multi_poll() in slices of 100 ms, so should_stop() is polled at
 *     least that often (the progress callback would only run once a second
 *     on a silent connection).
 *   - async: curl's multi-socket API on the executor's libuv loop: a
 *     uv_poll_t per socket (CURLMOPT_SOCKETFUNCTION), one uv_timer_t
 *     (CURLMOPT_TIMERFUNCTION), curl_multi_socket_action() from their
 *     callbacks. Name resolution runs in libcurl's resolver thread, so the
 *     loop never blocks. One multi handle per loop, found through a
 *     thread-local pointer (a loop is one thread, and one thread runs one
 *     loop): created by the first transfer and cleaned up, with its handles,
 *     when the last transfer ends, so an idle loop holds none of our handles
 *     (the executor may close its loop at any time it is idle). Each transfer
 *     owns one more timer, never started, whose close callback calls done():
 *     done() thus always comes from the loop, never from inside start(),
 *     stop() or a libcurl callback.
 */
#include "task_extra_int.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "../common/clock.h"
#include "../common/utf8.h"

#define HTTP_URL_MAX 8192
#define HTTP_TIMEOUT_DEFAULT_S 30.0
#define HTTP_TIMEOUT_MAX_S 600.0
#define HTTP_MAX_BYTES_DEFAULT (1u << 20)
#define HTTP_MAX_BYTES_MAX (64u << 20)
#define HTTP_HEADER_VALUE_MAX 1024
#define HTTP_POLL_MS 100 /* sync: should_stop() is polled at least this often */
#define HTTP_EXAMPLE "{\"url\": \"https://example.com/\", \"timeout\": 10}"
#define HTTP_USER_AGENT "jobd/0.1"

static const char *const http_fields[] = {"url", "timeout", "max_bytes", NULL};
enum { H_CONTENT_TYPE, H_CONTENT_LENGTH, H_LOCATION, H_N };
static const char *const kept_headers[H_N] = {"content-type", "content-length", "location"};

/* ---- args ---------------------------------------------------------------- */

struct http_req {
    const char *url; /* points into the job's args */
    double timeout_s;
    size_t max_bytes;
};

static const struct task_num_spec http_timeout = {
    .key = "timeout", .min = 0.001, .max = HTTP_TIMEOUT_MAX_S, .dflt = HTTP_TIMEOUT_DEFAULT_S,
    .range = "a number of seconds from 0.001 to 600"};
static const struct task_num_spec http_max_bytes = {
    .key = "max_bytes", .max = HTTP_MAX_BYTES_MAX, .integer = true, .dflt = HTTP_MAX_BYTES_DEFAULT,
    .range = "an integer from 0 to 67108864 (64 MiB)"};

static int http_parse(const cJSON *args, struct http_req *q, struct api_err *err)
{
    double d = 0;
    if (task_args_object(args, "http_get", HTTP_EXAMPLE, http_fields, err) < 0 ||
        task_args_string(args, "url", true, HTTP_URL_MAX, HTTP_EXAMPLE, &q->url, err) < 0)
        return -1;
    const char *rest = NULL;
    if (strncasecmp(q->url, "http://", 7) == 0) rest = q->url + 7;
    else if (strncasecmp(q->url, "https://", 8) == 0) rest = q->url + 8;
    if (!rest || !*rest || *rest == '/')
        return api_err_set(err, API_INVALID_ARGUMENT, "args.url",
                           "args.url must be an http:// or https:// URL with a host, e.g. https://example.com/.");
    for (const char *p = q->url; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return api_err_set(err, API_INVALID_ARGUMENT, "args.url",
                               "args.url must not hold spaces or control characters; percent-encode them.");
    if (task_args_number(args, &http_timeout, &q->timeout_s, err) < 0 ||
        task_args_number(args, &http_max_bytes, &d, err) < 0)
        return -1;
    q->max_bytes = (size_t)d;
    return 0;
}

static int http_validate(const cJSON *args, struct api_err *err)
{
    struct http_req q;
    return http_parse(args, &q, err);
}

/* ---- the response, shared by both runners -------------------------------- */

struct http_resp {
    char *body;
    size_t len, cap, max;
    uint64_t bytes; /* body bytes received, kept or not */
    bool truncated, oom;
    char *headers[H_N]; /* values of kept_headers, NULL when absent */
    int64_t start_ns;
    char errbuf[CURL_ERROR_SIZE];
};

static void http_resp_fini(struct http_resp *r)
{
    free(r->body);
    for (int i = 0; i < H_N; i++) free(r->headers[i]);
}

/* CURLOPT_WRITEFUNCTION: keeps up to max bytes; past that it ends the
 * transfer (returning less than given), which http_outputs() treats as a
 * truncated success. */
static size_t http_on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct http_resp *r = userdata;
    size_t n = size * nmemb, room = r->max - r->len, take = n < room ? n : room;
    r->bytes += n;
    if (take > 0 && r->len + take > r->cap) {
        size_t cap = r->cap ? r->cap : 16384;
        while (cap < r->len + take) cap *= 2;
        if (cap > r->max) cap = r->max;
        char *body = realloc(r->body, cap);
        if (!body) {
            r->oom = true;
            return 0;
        }
        r->body = body;
        r->cap = cap;
    }
    if (take > 0) memcpy(r->body + r->len, ptr, take);
    r->len += take;
    if (take < n) r->truncated = true;
    return take;
}

/* CURLOPT_HEADERFUNCTION: keeps the headers of kept_headers, of the last
 * response (a status line starts a new one: 100 Continue, proxies). */
static size_t http_on_header(char *buf, size_t size, size_t nitems, void *userdata)
{
    struct http_resp *r = userdata;
    size_t n = size * nitems;
    if (n >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
        for (int i = 0; i < H_N; i++) {
            free(r->headers[i]);
            r->headers[i] = NULL;
        }
        return n;
    }
    const char *colon = memchr(buf, ':', n);
    if (!colon) return n;
    size_t name_len = (size_t)(colon - buf);
    for (int i = 0; i < H_N; i++) {
        if (strlen(kept_headers[i]) != name_len || strncasecmp(buf, kept_headers[i], name_len) != 0) continue;
        const char *v = colon + 1, *end = buf + n;
        while (v < end && (*v == ' ' || *v == '\t')) v++;
        while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t')) end--;
        size_t len = (size_t)(end - v) < HTTP_HEADER_VALUE_MAX ? (size_t)(end - v) : HTTP_HEADER_VALUE_MAX;
        char *copy = strndup(v, len);
        if (!copy) {
            r->oom = true;
            return 0;
        }
        free(r->headers[i]);
        r->headers[i] = copy;
    }
    return n;
}

/* A new easy handle for q, writing into r. NULL when out of memory. */
static CURL *http_easy_new(const struct http_req *q, struct http_resp *r)
{
    CURL *e = curl_easy_init();
    if (!e) return NULL;
    long timeout_ms = (long)(q->timeout_s * 1000.0 + 0.5);
    if (timeout_ms < 1) timeout_ms = 1;
    r->max = q->max_bytes;
    r->start_ns = clock_mono_ns();
    bool ok = curl_easy_setopt(e, CURLOPT_URL, q->url) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK && /* threads: no SIGALRM */
              curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_USERAGENT, HTTP_USER_AGENT) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_on_body) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_WRITEDATA, r) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, http_on_header) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_HEADERDATA, r) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf) == CURLE_OK;
    if (!ok) {
        curl_easy_cleanup(e);
        return NULL;
    }
    return e;
}

/* The body as a JSON string: text when it is UTF-8 without NUL (a sequence
 * that max_bytes cut in half is left out), else base64 (*base64 set). */
static cJSON *http_body_json(const struct http_resp *r, bool *base64)
{
    const char *b = r->body ? r->body : "";
    size_t len = r->len, bad = 0;
    *base64 = false;
    bool text = !memchr(b, 0, len) && utf8_valid(b, len, &bad);
    if (!text && r->truncated && !memchr(b, 0, len) && bad < len && len - bad < 4) {
        /* Is the tail the start of a sequence that continued past the cut? */
        unsigned char lead = (unsigned char)b[bad];
        size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC2 ? 2 : 0;
        bool prefix = need > len - bad;
        for (size_t i = bad + 1; prefix && i < len; i++) prefix = ((unsigned char)b[i] & 0xC0) == 0x80;
        if (prefix) {
            text = true;
            len = bad;
        }
    }
    if (text) {
        char *s = strndup(b, len);
        cJSON *j = s ? cJSON_CreateString(s) : NULL;
        free(s);
        return j;
    }
    *base64 = true;
    unsigned char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (!out) return NULL;
    EVP_EncodeBlock(out, (const unsigned char *)b, (int)len); /* len <= 64 MiB: fits an int */
    cJSON *j = cJSON_CreateString((const char *)out);
    free(out);
    return j;
}

/* Builds the outputs of a finished (or stopped) transfer. Returns 0 with
 * *result, or -1 with *type and msg. */
static int http_outputs(const struct http_req *q, const struct http_resp *r, CURL *e, CURLcode code, bool stopped,
                        cJSON **result, enum job_error_type *type, char *msg, size_t msize)
{
    double elapsed_ms = (double)(clock_mono_ns() - r->start_ns) / 1e6;
    const char *why = r->errbuf[0] ? r->errbuf : curl_easy_strerror(code);
    *result = NULL;
    *type = JOB_ERR_TASK;
    if (stopped) {
        *type = JOB_ERR_CANCELLED;
        snprintf(msg, msize, "GET %.*s stopped after %.3f s (cancelled)", task_utf8_clip(q->url, 150), q->url,
                 elapsed_ms / 1000.0);
        return -1;
    }
    if (r->oom) {
        snprintf(msg, msize, "%s", "out of memory while receiving the response");
        return -1;
    }
    if (code == CURLE_OPERATION_TIMEDOUT) {
        *type = JOB_ERR_TIMEOUT;
        snprintf(msg, msize, "GET %.*s timed out after %g s: %.*s", task_utf8_clip(q->url, 150), q->url, q->timeout_s,
                 task_utf8_clip(why, 200), why);
        return -1;
    }
    if (code != CURLE_OK && !(code == CURLE_WRITE_ERROR && r->truncated)) {
        snprintf(msg, msize, "GET %.*s failed: %.*s", task_utf8_clip(q->url, 150), q->url, task_utf8_clip(why, 200),
                 why);
        return -1;
    }
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status); /* stays 0 if unknown */
    bool base64 = false;
    cJSON *res = cJSON_CreateObject(), *headers = cJSON_CreateObject();
    bool ok = res && headers && cJSON_AddNumberToObject(res, "status", (double)status);
    for (int i = 0; ok && i < H_N; i++)
        if (r->headers[i]) ok = cJSON_AddItemToObject(headers, kept_headers[i], task_text_json(r->headers[i], strlen(r->headers[i]), false));
    ok = ok && cJSON_AddItemToObject(res, "headers", headers);
    if (ok) headers = NULL; /* owned by res */
    ok = ok && cJSON_AddNumberToObject(res, "bytes", (double)r->bytes);
    ok = ok && cJSON_AddItemToObject(res, "body", http_body_json(r, &base64));
    if (ok && base64) ok = cJSON_AddStringToObject(res, "body_encoding", "base64") != NULL;
    ok = ok && cJSON_AddBoolToObject(res, "truncated", r->truncated);
    ok = ok && cJSON_AddNumberToObject(res, "elapsed_ms", (double)(int64_t)(elapsed_ms * 1000.0) / 1000.0);
    cJSON_Delete(headers);
    if (!ok) {
        cJSON_Delete(res);
        snprintf(msg, msize, "%s", "out of memory while building the result");
        return -1;
    }
    *result = res;
    return 0;
}

/* ---- the synchronous runner ---------------------------------------------- */

static int http_get_run(struct task_ctx *ctx)
{
    struct http_req q;
    struct http_resp r;
    struct api_err err;
    CURL *e = NULL;
    CURLM *m = NULL;
    CURLcode code = CURLE_OK;
    bool stopped = false, added = false;
    enum job_error_type type = JOB_ERR_TASK;
    char msg[512];
    int rc = -1;

    memset(&r, 0, sizeof r);
    if (http_parse(ctx->args, &q, &err) < 0) {
        rc = task_fail_args(ctx, &err);
        goto out;
    }
    if (!(e = http_easy_new(&q, &r)) || !(m = curl_multi_init()) || curl_multi_add_handle(m, e) != CURLM_OK) {
        rc = task_fail(ctx, JOB_ERR_TASK, "out of memory while setting up the request");
        goto out;
    }
    added = true;
    for (;;) {
        int running = 0;
        CURLMcode mc = curl_multi_perform(m, &running);
        if (mc == CURLM_OK && running == 0) break;
        if (mc == CURLM_OK && ctx->should_stop(ctx)) {
            stopped = true;
            break;
        }
        if (mc == CURLM_OK) mc = curl_multi_poll(m, NULL, 0, HTTP_POLL_MS, NULL);
        if (mc != CURLM_OK) {
            rc = task_fail(ctx, JOB_ERR_TASK, "GET %.*s failed: %s", task_utf8_clip(q.url, 150), q.url,
                           curl_multi_strerror(mc));
            goto out;
        }
    }
    if (!stopped) {
        int left = 0;
        CURLMsg *cm;
        code = CURLE_GOT_NOTHING; /* unless a DONE message says otherwise */
        while ((cm = curl_multi_info_read(m, &left)))
            if (cm->msg == CURLMSG_DONE && cm->easy_handle == e) code = cm->data.result;
    }
    cJSON *result = NULL;
    rc = http_outputs(&q, &r, e, code, stopped, &result, &type, msg, sizeof msg);
    ctx->result = result;
    if (rc < 0) task_fail(ctx, type, "%s", msg);
out:
    if (added) curl_multi_remove_handle(m, e);
    curl_multi_cleanup(m); /* accepts NULL */
    curl_easy_cleanup(e);  /* accepts NULL */
    http_resp_fini(&r);
    return rc;
}

/* ---- the async runner: curl multi on the libuv loop ---------------------- */

/* One multi handle and its timer, per loop. Lives while transfers run on it,
 * and until its handles are closed after that. Loop thread only. */
struct curl_sock;
struct curl_loop {
    uv_loop_t *loop;
    CURLM *multi;   /* NULL once released */
    uv_timer_t timer;
    int handles;    /* open uv handles: the timer and the socket polls */
    int transfers;  /* easy handles added */
    struct curl_sock *socks; /* polls not yet closed */
};

/* The current multi of this thread's loop, or NULL. Thread-local: each loop
 * runs on one thread, so no lock; released with its last transfer. */
static _Thread_local struct curl_loop *tl_curl;

struct curl_sock {
    uv_poll_t poll;
    struct curl_loop *cl;
    curl_socket_t fd;
    struct curl_sock *prev, *next; /* on cl->socks */
};

/* One async transfer: owned by the runner's actx until done(). */
struct http_xfer {
    struct task_actx *actx;
    struct curl_loop *cl;
    CURL *easy;
    struct http_req req;
    struct http_resp resp;
    uv_timer_t defer; /* never started: its close callback calls done() */
    CURLcode code;
    bool attached, stopped, finished;
    struct http_xfer *next_done;
};

static void cl_handle_closed(uv_handle_t *h)
{
    struct curl_loop *cl = h->data;
    if (--cl->handles == 0) free(cl);
}

static void sock_closed(uv_handle_t *h)
{
    struct curl_sock *cs = h->data;
    struct curl_loop *cl = cs->cl;
    free(cs);
    if (--cl->handles == 0) free(cl);
}

/* Stops watching a socket (before libcurl closes it) and closes its poll. */
static void sock_close(struct curl_sock *cs)
{
    struct curl_loop *cl = cs->cl;
    if (cs->prev) cs->prev->next = cs->next;
    else cl->socks = cs->next;
    if (cs->next) cs->next->prev = cs->prev;
    uv_poll_stop(&cs->poll);
    uv_close((uv_handle_t *)&cs->poll, sock_closed);
}

/* The last transfer ended: clean the multi up (which may still call
 * cl_on_socket to remove sockets), close any poll it left, and the timer. */
static void cl_release(struct curl_loop *cl)
{
    if (tl_curl == cl) tl_curl = NULL;
    curl_multi_cleanup(cl->multi);
    cl->multi = NULL;
    while (cl->socks) sock_close(cl->socks);
    uv_close((uv_handle_t *)&cl->timer, cl_handle_closed);
}

static void xfer_finish(struct http_xfer *x);

/* Takes the finished transfers off the multi, releases the multi when it is
 * idle, then finishes them. cl must not be used after this returns. */
static void cl_check(struct curl_loop *cl)
{
    struct http_xfer *list = NULL;
    CURLMsg *m;
    int left = 0;
    while (cl->multi && (m = curl_multi_info_read(cl->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        char *priv = NULL;
        CURL *easy = m->easy_handle;
        CURLcode code = m->data.result; /* m is invalid after remove_handle */
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
        struct http_xfer *x = (struct http_xfer *)priv;
        if (!x || !x->attached) continue;
        x->code = code;
        curl_multi_remove_handle(cl->multi, easy);
        x->attached = false;
        cl->transfers--;
        x->next_done = list;
        list = x;
    }
    if (cl->transfers == 0 && cl->multi) cl_release(cl);
    while (list) {
        struct http_xfer *x = list;
        list = x->next_done;
        xfer_finish(x);
    }
}

static void cl_on_poll(uv_poll_t *h, int status, int events)
{
    struct curl_sock *cs = h->data;
    struct curl_loop *cl = cs->cl;
    int flags = status < 0 ? CURL_CSELECT_ERR : 0, running = 0;
    if (!cl->multi) return;
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(cl->multi, cs->fd, flags, &running); /* errors surface per transfer */
    cl_check(cl);
}

static void cl_on_timer(uv_timer_t *t)
{
    struct curl_loop *cl = t->data;
    int running = 0;
    if (!cl->multi) return;
    curl_multi_socket_action(cl->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    cl_check(cl);
}

/* CURLMOPT_SOCKETFUNCTION: what to watch on socket s. */
static int cl_on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct curl_loop *cl = userp;
    struct curl_sock *cs = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (cs) sock_close(cs); /* libcurl forgets the assignment itself */
        return 0;
    }
    if (!cs) {
        if (!(cs = calloc(1, sizeof *cs))) return -1;
        if (uv_poll_init_socket(cl->loop, &cs->poll, s) < 0) {
            free(cs);
            return -1;
        }
        cs->poll.data = cs;
        cs->cl = cl;
        cs->fd = s;
        cs->next = cl->socks;
        if (cl->socks) cl->socks->prev = cs;
        cl->socks = cs;
        cl->handles++;
        curl_multi_assign(cl->multi, s, cs);
    }
    int events = (what & CURL_POLL_IN ? UV_READABLE : 0) | (what & CURL_POLL_OUT ? UV_WRITABLE : 0);
    return uv_poll_start(&cs->poll, events, cl_on_poll) < 0 ? -1 : 0;
}

/* CURLMOPT_TIMERFUNCTION: when to call curl_multi_socket_action(TIMEOUT). */
static int cl_on_timer_change(CURLM *multi, long timeout_ms, void *userp)
{
    struct curl_loop *cl = userp;
    if (timeout_ms < 0) uv_timer_stop(&cl->timer);
    else uv_timer_start(&cl->timer, cl_on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* This thread's multi for `loop`, created on first use. NULL when out of memory. */
static struct curl_loop *cl_get(uv_loop_t *loop)
{
    if (tl_curl && tl_curl->loop == loop) return tl_curl;
    struct curl_loop *cl = calloc(1, sizeof *cl);
    if (!cl) return NULL;
    if (!(cl->multi = curl_multi_init()) ||
        curl_multi_setopt(cl->multi, CURLMOPT_SOCKETFUNCTION, cl_on_socket) != CURLM_OK ||
        curl_multi_setopt(cl->multi, CURLMOPT_SOCKETDATA, cl) != CURLM_OK ||
        curl_multi_setopt(cl->multi, CURLMOPT_TIMERFUNCTION, cl_on_timer_change) != CURLM_OK ||
        curl_multi_setopt(cl->multi, CURLMOPT_TIMERDATA, cl) != CURLM_OK) {
        curl_multi_cleanup(cl->multi);
        free(cl);
        return NULL;
    }
    cl->loop = loop;
    uv_timer_init(loop, &cl->timer); /* cannot fail */
    cl->timer.data = cl;
    cl->handles = 1;
    tl_curl = cl; /* a multi of another loop on this thread (tests) lives on without it */
    return cl;
}

static void xfer_closed(uv_handle_t *h)
{
    struct http_xfer *x = h->data;
    struct task_actx *a = x->actx;
    free(x);
    a->task_state = NULL;
    a->done(a);
}

/* Sets the outputs, frees the transfer's curl state and closes `defer`,
 * whose close callback calls done(). */
static void xfer_finish(struct http_xfer *x)
{
    struct task_actx *a = x->actx;
    cJSON *result = NULL;
    enum job_error_type type = JOB_ERR_TASK;
    char msg[512];
    x->finished = true;
    if (http_outputs(&x->req, &x->resp, x->easy, x->code, x->stopped, &result, &type, msg, sizeof msg) < 0)
        task_afail(a, type, "%s", msg);
    a->result = result;
    curl_easy_cleanup(x->easy);
    x->easy = NULL;
    http_resp_fini(&x->resp);
    uv_close((uv_handle_t *)&x->defer, xfer_closed);
}

static void http_get_stop(struct task_actx *a)
{
    struct http_xfer *x = a->task_state;
    if (!x || x->finished) return;
    struct curl_loop *cl = x->cl;
    x->stopped = true;
    if (x->attached) {
        curl_multi_remove_handle(cl->multi, x->easy);
        x->attached = false;
        if (--cl->transfers == 0) cl_release(cl);
    }
    xfer_finish(x);
}

static int http_get_start(struct task_actx *a)
{
    struct api_err err;
    struct http_xfer *x = calloc(1, sizeof *x);
    struct curl_loop *cl = NULL;
    if (!x) return task_afail(a, JOB_ERR_TASK, "out of memory");
    if (http_parse(a->args, &x->req, &err) < 0) {
        free(x);
        return task_afail_args(a, &err);
    }
    if (!(x->easy = http_easy_new(&x->req, &x->resp)) ||
        curl_easy_setopt(x->easy, CURLOPT_PRIVATE, (char *)x) != CURLE_OK || !(cl = cl_get(a->loop)) ||
        curl_multi_add_handle(cl->multi, x->easy) != CURLM_OK) {
        if (cl && cl->transfers == 0) cl_release(cl);
        curl_easy_cleanup(x->easy);
        http_resp_fini(&x->resp);
        free(x);
        return task_afail(a, JOB_ERR_TASK, "out of memory while setting up the request");
    }
    x->actx = a;
    x->cl = cl;
    x->attached = true;
    cl->transfers++;
    uv_timer_init(a->loop, &x->defer); /* cannot fail */
    x->defer.data = x;
    a->task_state = x;
    a->stop = http_get_stop;
    return 0;
}

/* ---- registration -------------------------------------------------------- */

int task_http_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -ENOMEM;
}

void task_http_global_fini(void *unused)
{
    curl_global_cleanup();
}

static const struct task_def http_get_def = {
    "http_get",
    "GETs args.url (http/https; timeout, max_bytes); returns status, headers and body. Not blocking on async.",
    TASK_KIND_ALL,
    TASK_KIND_ASYNC,
    NULL,
    http_validate,
    http_get_run,
    http_get_start,
};

const struct task_def *task_http_get_def(void)
{
    return &http_get_def;
}
