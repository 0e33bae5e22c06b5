/* http.c - libmicrohttpd glue: request state, body accumulation, routing,
 * auth, replies and parking (suspend/resume).
 *
 * libmicrohttpd runs a pool of threads, each with its own epoll set
 * (MHD_USE_EPOLL_INTERNAL_THREAD + MHD_OPTION_THREAD_POOL_SIZE). A request's
 * handler runs on the thread that owns its connection; wakers (store writer,
 * core timer, executor threads) only touch a request through srv_req_wake(),
 * which takes the request's own lock.
 *
 * libmicrohttpd 0.9.75 closes a keep-alive connection when the response is
 * queued on the first call of the access handler, so every reply is queued
 * on a later call (the final one, after the body), except the early 413 for
 * a Content-Length over the limit, where closing is what we want.
 */
#include "server.h"
#include "http_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/clock.h"
#include "../common/log.h"

/* libmicrohttpd's per-connection memory pool: it holds the request line,
 * headers and the read buffer (bodies stream through it in chunks). 0.9.75
 * zeroes the pool on every request, so its size is paid per request: at
 * 64 KiB that memset was 39% of the server's instructions (callgrind).
 * 16 KiB leaves room for ~12 KiB of headers. */
#define SRV_CONNECTION_POOL_BYTES (16 * 1024)

struct srv {
    struct MHD_Daemon *daemon;
    const struct config *cfg;
    struct core *core;
    struct store *store;
    const struct task_registry *tasks;
    struct srv_metrics *metrics; /* request counters; atomics, any thread */
    int port;
    /* live_lock guards live_reqs (requests allocated and not yet freed) and
     * pairs with all_done, which srv_stop waits on so that replies woken by
     * the drain are written before the daemon stops. */
    pthread_mutex_t live_lock;
    pthread_cond_t all_done;
    long live_reqs;
};

struct srv_req {
    struct srv *srv;
    struct MHD_Connection *conn;
    const struct srv_route *route;
    int route_idx; /* srv_routes index of the path (even with a wrong method), -1 = none: for the counters */
    char path_id[ID_LEN + 8];
    char allow[64]; /* the methods of the path, when the method is wrong */
    bool has_id;
    bool bad_method; /* path known, method not: reply 405 */
    bool unauthorized;
    bool too_large;
    bool bad_type;
    bool started;
    char *body;
    size_t body_len, body_cap;
    struct srv_req_info info;
    struct srv_req_state st;

    /* Reply under construction (HTTP thread only). */
    struct MHD_Response *resp;
    unsigned status;

    /* Access log, at debug level only (HTTP thread): the URL and when the request began. */
    char log_url[192];
    int64_t log_t0_ns;

    /* Parking: `lock` guards parked and woken. */
    pthread_mutex_t lock;
    bool parked, woken;
    atomic_int refs;
};

/* --- the reply helpers --- */

static void set_response(struct srv_req *req, unsigned status, struct MHD_Response *resp)
{
    if (req->resp) MHD_destroy_response(req->resp);
    req->resp = resp;
    req->status = status;
}

void srv_reply_json(struct srv_req *req, unsigned status, cJSON *body)
{
    char *text = body ? cJSON_PrintUnformatted(body) : NULL;
    cJSON_Delete(body);
    if (!text) {
        static const char oom[] = "{\"error\":{\"code\":\"internal\",\"message\":\"The server ran out of memory.\"}}";
        set_response(req, 500, MHD_create_response_from_buffer(sizeof oom - 1, (void *)oom, MHD_RESPMEM_PERSISTENT));
    } else {
        /* cJSON allocates with malloc (default hooks), so MHD may free() it. */
        set_response(req, status, MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE));
    }
    if (req->resp) MHD_add_response_header(req->resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
}

void srv_reply_empty(struct srv_req *req, unsigned status)
{
    set_response(req, status, MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT));
}

void srv_reply_static(struct srv_req *req, unsigned status, const char *content_type, const void *buf, size_t len)
{
    /* PERSISTENT: MHD sends from buf without copying it, and never frees it. */
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)buf, MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        srv_reply_errorf(req, API_INTERNAL, NULL, "The server ran out of memory.");
        return;
    }
    set_response(req, status, resp);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
}

void srv_reply_text(struct srv_req *req, unsigned status, const char *content_type, char *buf, size_t len)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(buf);
        srv_reply_errorf(req, API_INTERNAL, NULL, "The server ran out of memory.");
        return;
    }
    set_response(req, status, resp);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
}

void srv_reply_header(struct srv_req *req, const char *name, const char *value)
{
    if (req->resp) MHD_add_response_header(req->resp, name, value);
}

void srv_reply_response(struct srv_req *req, unsigned status, struct MHD_Response *resp)
{
    if (!resp) {
        srv_reply_errorf(req, API_INTERNAL, NULL, "The server ran out of memory.");
        return;
    }
    set_response(req, status, resp);
}

/* The one place where API codes become HTTP statuses. */
static unsigned status_of(enum api_code code)
{
    switch (code) {
    case API_OK: return 200;
    case API_BAD_JSON:
    case API_INVALID_ARGUMENT: return 400;
    case API_UNAUTHORIZED: return 401;
    case API_NOT_FOUND: return 404;
    case API_METHOD_NOT_ALLOWED: return 405;
    case API_CONFLICT: return 409;
    case API_PAYLOAD_TOO_LARGE: return 413;
    case API_UNSUPPORTED_MEDIA_TYPE: return 415;
    case API_QUEUE_FULL: return 429;
    case API_INTERNAL: return 500;
    case API_UNAVAILABLE: return 503;
    }
    return 500;
}

void srv_reply_error(struct srv_req *req, const struct api_err *err)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(e, "code", api_code_name(err->code));
    cJSON_AddStringToObject(e, "message", err->message);
    if (err->field[0])
        cJSON_AddStringToObject(e, "field", err->field);
    else
        cJSON_AddNullToObject(e, "field");
    srv_reply_json(req, status_of(err->code), root);
    if (err->code == API_QUEUE_FULL || err->code == API_UNAVAILABLE) srv_reply_header(req, "Retry-After", "1");
    if (err->code == API_UNAUTHORIZED) srv_reply_header(req, "WWW-Authenticate", "Bearer realm=\"jobd\"");
}

void srv_reply_errorf(struct srv_req *req, enum api_code code, const char *field, const char *fmt, ...)
{
    struct api_err err = {.code = code};
    snprintf(err.field, sizeof err.field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err.message, sizeof err.message, fmt, ap);
    va_end(ap);
    srv_reply_error(req, &err);
}

/* --- accessors for handlers --- */

const struct srv_req_info *srv_req_info(struct srv_req *req) { return &req->info; }
struct core *srv_req_core(struct srv_req *req) { return req->srv->core; }
struct store *srv_req_store(struct srv_req *req) { return req->srv->store; }
const struct config *srv_req_config(struct srv_req *req) { return req->srv->cfg; }
const struct task_registry *srv_req_tasks(struct srv_req *req) { return req->srv->tasks; }
struct srv_req_state *srv_req_state(struct srv_req *req) { return &req->st; }
struct MHD_Connection *srv_req_connection(struct srv_req *req) { return req->conn; }
struct srv_metrics *srv_req_metrics(struct srv_req *req) { return req->srv->metrics; }

const char *srv_req_query(struct srv_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *srv_req_header(struct srv_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

/* --- request lifetime and parking --- */

void srv_req_ref(struct srv_req *req)
{
    atomic_fetch_add(&req->refs, 1);
}

void srv_req_unref(struct srv_req *req)
{
    if (atomic_fetch_sub(&req->refs, 1) != 1) return;
    struct srv *s = req->srv;
    pthread_mutex_lock(&s->live_lock);
    if (--s->live_reqs == 0) pthread_cond_broadcast(&s->all_done);
    pthread_mutex_unlock(&s->live_lock);
    if (req->resp) MHD_destroy_response(req->resp);
    job_free(req->st.job);
    free(req->st.text);
    if (req->st.ext_free) req->st.ext_free(req->st.ext);
    free(req->body);
    pthread_mutex_destroy(&req->lock);
    free(req);
}

void srv_req_wake(struct srv_req *req)
{
    pthread_mutex_lock(&req->lock);
    bool resume = req->parked;
    req->parked = false;
    req->woken = true;
    pthread_mutex_unlock(&req->lock);
    /* Resuming is safe from any thread; a suspended connection cannot be
     * closed under us, since libmicrohttpd does not look at it until resumed. */
    if (resume) MHD_resume_connection(req->conn);
    srv_req_unref(req);
}

void srv_req_wake_rc(void *ctx, int rc, const struct job *job)
{
    struct srv_req *req = ctx;
    req->st.rc = rc; /* published to the HTTP thread by the lock in srv_req_wake */
    srv_req_wake(req);
}

void srv_req_wake_cb(void *ctx)
{
    srv_req_wake(ctx);
}

/* Parks the request unless its waker already ran. Returns true when parked. */
static bool park(struct srv_req *req)
{
    bool parked = false;
    pthread_mutex_lock(&req->lock);
    if (!req->woken) {
        req->parked = true;
        MHD_suspend_connection(req->conn);
        parked = true;
    }
    pthread_mutex_unlock(&req->lock);
    return parked;
}

/* Runs steps until one replies or parks. */
static void run_steps(struct srv_req *req, srv_step_fn step)
{
    for (;;) {
        pthread_mutex_lock(&req->lock);
        req->woken = false;
        pthread_mutex_unlock(&req->lock);
        req->st.next = NULL;
        if (step(req) == STEP_DONE) return;
        if (!req->st.next) {
            srv_reply_errorf(req, API_INTERNAL, NULL, "Internal error: a handler parked without a continuation.");
            return;
        }
        step = req->st.next;
        if (park(req)) return;
    }
}

/* --- routing --- */

/* Matches path against pattern; "{id}" matches one segment, copied to id. */
static bool route_match(const char *pattern, const char *path, char *id, size_t id_cap, bool *has_id)
{
    const char *p = pattern, *u = path;
    *has_id = false;
    while (*p && *u) {
        if (strncmp(p, "{id}", 4) == 0) {
            size_t n = strcspn(u, "/");
            if (n == 0) return false;
            snprintf(id, id_cap, "%.*s", (int)(n < id_cap ? n : id_cap - 1), u);
            if (n >= id_cap) id[0] = '#'; /* too long: never a valid id */
            *has_id = true;
            p += 4;
            u += n;
            continue;
        }
        if (*p != *u) return false;
        p++;
        u++;
    }
    return *p == '\0' && *u == '\0';
}

void srv__route_find(const char *method, const char *url, struct srv__route_hit *hit)
{
    memset(hit, 0, sizeof *hit);
    hit->route = hit->route_idx = -1;
    char allow[64] = "";
    for (int i = 0; i < srv_n_routes; i++) {
        char id[sizeof hit->path_id] = ""; /* stays "" for a pattern without {id} */
        bool has_id;
        if (!route_match(srv_routes[i].pattern, url, id, sizeof id, &has_id)) continue;
        if (strcmp(srv_routes[i].method, method) == 0 ||
            (strcmp(method, "HEAD") == 0 && strcmp(srv_routes[i].method, "GET") == 0)) {
            hit->route = hit->route_idx = i;
            memcpy(hit->path_id, id, sizeof id);
            hit->has_id = has_id;
            hit->bad_method = false;
            return;
        }
        size_t o = strlen(allow);
        snprintf(allow + o, sizeof allow - o, "%s%s", o ? ", " : "", srv_routes[i].method);
        if (!hit->bad_method) hit->route_idx = i;
        hit->bad_method = true;
    }
    if (hit->bad_method) memcpy(hit->allow, allow, sizeof allow);
}

static void route_lookup(struct srv_req *req, const char *method, const char *url)
{
    struct srv__route_hit hit;
    srv__route_find(method, url, &hit);
    req->route = hit.route >= 0 ? &srv_routes[hit.route] : NULL;
    req->route_idx = hit.route_idx;
    memcpy(req->path_id, hit.path_id, sizeof req->path_id);
    req->has_id = hit.has_id;
    req->bad_method = hit.bad_method;
    memcpy(req->allow, hit.allow, sizeof req->allow);
}

/* Constant-time comparison of the Authorization header with "Bearer TOKEN". */
bool srv__auth_ok(const char *token, const char *header)
{
    if (!token[0]) return true;
    if (!header || strncasecmp(header, "Bearer ", 7) != 0) return false;
    const char *given = header + 7;
    size_t gl = strlen(given), tl = strlen(token);
    volatile unsigned char diff = (unsigned char)(gl != tl);
    for (size_t i = 0; i < tl; i++) diff |= (unsigned char)(token[i] ^ (i < gl ? given[i] : 0));
    return diff == 0;
}

bool srv__content_type_ok(const char *ct)
{
    if (!ct || !*ct) return true;
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t')) n--;
    static const char *const ok[] = {"application/json", "text/json", "application/x-www-form-urlencoded"};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        if (strlen(ok[i]) == n && strncasecmp(ct, ok[i], n) == 0) return true;
    return n > 5 && strncasecmp(ct + n - 5, "+json", 5) == 0;
}

struct query_check {
    const struct srv_route *route;
    char bad[64];
};

bool srv__query_allowed(const struct srv_route *r, const char *key)
{
    for (const char *const *a = r->query; a && *a; a++)
        if (strcmp(*a, key) == 0) return true;
    return false;
}

static enum MHD_Result check_query_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    struct query_check *qc = cls;
    if (srv__query_allowed(qc->route, key)) return MHD_YES;
    snprintf(qc->bad, sizeof qc->bad, "%s", key);
    return MHD_NO;
}

void srv__log_url(char *out, size_t cap, const char *url)
{
    /* Bytes other than printable ASCII as %XX, so a log line stays one line
     * of valid UTF-8 (JSON format) whatever the client sent; truncated when
     * long: it is only logged. */
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)url; *p && o + 4 < cap; p++) {
        if (*p > ' ' && *p < 0x7f) out[o++] = (char)*p;
        else o += (size_t)snprintf(out + o, cap - o, "%%%02X", *p);
    }
    out[o] = '\0';
}

/* The first call: everything known from the request line and headers. */
static struct srv_req *req_new(struct srv *s, struct MHD_Connection *conn, const char *method, const char *url)
{
    struct srv_req *req = calloc(1, sizeof *req);
    if (!req) return NULL;
    req->srv = s;
    pthread_mutex_lock(&s->live_lock);
    s->live_reqs++;
    pthread_mutex_unlock(&s->live_lock);
    req->conn = conn;
    pthread_mutex_init(&req->lock, NULL);
    atomic_store(&req->refs, 1);
    req->route_idx = -1;
    if (log_enabled(LOG_LEVEL_DEBUG)) {
        srv__log_url(req->log_url, sizeof req->log_url, url);
        req->log_t0_ns = clock_mono_ns();
    }
    route_lookup(req, method, url);
    if (req->route && req->route->auth)
        req->unauthorized =
            !srv__auth_ok(s->cfg->token, MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization"));
    if (req->route && strcmp(method, "POST") == 0)
        req->bad_type = !srv__content_type_ok(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type"));
    return req;
}

static enum srv_step reply_early_error(struct srv_req *req, const char *method)
{
    if (req->bad_method) {
        srv_reply_errorf(req, API_METHOD_NOT_ALLOWED, NULL, "%s is not allowed here; use %s.", method, req->allow);
        srv_reply_header(req, "Allow", req->allow);
        return STEP_DONE;
    }
    if (!req->route) {
        srv_reply_errorf(req, API_NOT_FOUND, NULL, "No such route; the API lives under /v1 (see docs/API.md).");
        return STEP_DONE;
    }
    if (req->unauthorized) {
        srv_reply_errorf(req, API_UNAUTHORIZED, NULL, "Send the token as 'Authorization: Bearer TOKEN'.");
        return STEP_DONE;
    }
    if (req->too_large) {
        srv_reply_errorf(req, API_PAYLOAD_TOO_LARGE, NULL, "The request body is larger than %ld bytes.",
                         req->srv->cfg->max_body_bytes);
        return STEP_DONE;
    }
    if (req->bad_type) {
        srv_reply_errorf(req, API_UNSUPPORTED_MEDIA_TYPE, NULL,
                         "Send the body as JSON with 'Content-Type: application/json'.");
        return STEP_DONE;
    }
    struct query_check qc = {.route = req->route};
    MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, check_query_arg, &qc);
    if (qc.bad[0]) {
        srv_reply_errorf(req, API_INVALID_ARGUMENT, qc.bad, "Unknown query parameter '%s'.", qc.bad);
        return STEP_PARK; /* sentinel: "error set" */
    }
    return STEP_PARK; /* no early error */
}

/* Queues the response set by the handler; every reply passes here once, so
 * this is where requests are counted. */
static enum MHD_Result queue_reply(struct srv_req *req, const char *method)
{
    if (!req->resp) srv_reply_errorf(req, API_INTERNAL, NULL, "Internal error: no response.");
    if (!req->resp) return MHD_NO;
    srv_metrics_count(req->srv->metrics, req->route_idx, method, req->status);
    enum MHD_Result r = MHD_queue_response(req->conn, req->status, req->resp);
    MHD_destroy_response(req->resp);
    req->resp = NULL;
    /* One access-log line per request: time from its headers to its reply (a long poll's wait included). */
    if (log_enabled(LOG_LEVEL_DEBUG))
        LOG_DEBUG("http: %s %s -> %u (%.1f ms)", method, req->log_url, req->status,
                  (double)(clock_mono_ns() - req->log_t0_ns) / 1e6);
    return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    struct srv *s = cls;
    struct srv_req *req = *con_cls;
    if (!req) {
        if (!(req = req_new(s, conn, method, url))) return MHD_NO;
        *con_cls = req;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoll(cl, NULL, 10) > s->cfg->max_body_bytes) {
            /* Refuse before reading a byte of it; libmicrohttpd closes the connection after. */
            req->too_large = true;
            req->started = true;
            reply_early_error(req, method);
            return queue_reply(req, method);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (req->too_large || req->body_len + n > (size_t)s->cfg->max_body_bytes) {
            req->too_large = true; /* keep reading and dropping, so the connection stays usable */
            return MHD_YES;
        }
        if (req->body_len + n + 1 > req->body_cap) {
            size_t cap = req->body_cap ? req->body_cap : 1024;
            while (cap < req->body_len + n + 1) cap *= 2;
            char *b = realloc(req->body, cap);
            if (!b) return MHD_NO;
            req->body = b;
            req->body_cap = cap;
        }
        memcpy(req->body + req->body_len, upload_data, n);
        req->body_len += n;
        req->body[req->body_len] = '\0';
        return MHD_YES;
    }
    if (!req->started) {
        req->started = true;
        req->info.id = req->has_id ? req->path_id : NULL;
        req->info.body = req->body ? req->body : "";
        req->info.body_len = req->body_len;
        if (reply_early_error(req, method) == STEP_DONE || req->resp) return queue_reply(req, method);
        run_steps(req, req->route->handler);
    } else if (req->st.next) {
        /* Resumed after parking. */
        run_steps(req, req->st.next);
    }
    if (req->resp) return queue_reply(req, method);
    return MHD_YES; /* parked */
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    struct srv_req *req = *con_cls;
    *con_cls = NULL;
    if (req) srv_req_unref(req);
}

static void mhd_logger(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    LOG_WARN("libmicrohttpd: %s", msg);
}

int srv_start(const struct config *cfg, struct core *core, struct store *store, const struct task_registry *tasks,
              struct srv **out)
{
    struct srv *s = calloc(1, sizeof *s);
    if (s) {
        pthread_mutex_init(&s->live_lock, NULL);
        pthread_cond_init(&s->all_done, NULL);
    }
    if (!s) return -ENOMEM;
    s->cfg = cfg;
    s->core = core;
    s->store = store;
    s->tasks = tasks;
    int rc = srv_metrics_new(&s->metrics);
    if (rc < 0) {
        free(s);
        return rc;
    }

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->listen_port);
    int gai = getaddrinfo(cfg->listen_host, port, &hints, &ai);
    if (gai != 0 || !ai) {
        LOG_ERROR("--listen: cannot resolve '%s': %s", cfg->listen_host, gai_strerror(gai));
        srv_metrics_free(s->metrics);
        free(s);
        return -EINVAL;
    }
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, s, MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned)cfg->http_threads, MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->connection_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)SRV_CONNECTION_POOL_BYTES, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->daemon) {
        LOG_ERROR("--listen: cannot listen on %s:%d (in use, or not an address of this machine)", cfg->listen_host,
                  cfg->listen_port);
        srv_metrics_free(s->metrics);
        free(s);
        return -EADDRINUSE;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : cfg->listen_port;
    *out = s;
    return 0;
}

int srv_port(const struct srv *s)
{
    return s->port;
}

/* How long srv_stop lets requests still in progress (parked ones the drain
 * woke, SSE streams ending) write their replies. */
#define SRV_STOP_GRACE_MS 3000

void srv_stop(struct srv *s)
{
    if (!s) return;
    /* Woken by core_drain, parked long polls and waits are being answered on
     * the HTTP threads right now: stopping the daemon under them would close
     * their connections with no reply. Wait (bounded) for them to finish. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += SRV_STOP_GRACE_MS / 1000;
    pthread_mutex_lock(&s->live_lock);
    while (s->daemon && s->live_reqs > 0 && pthread_cond_timedwait(&s->all_done, &s->live_lock, &ts) == 0) {
    }
    long left = s->live_reqs;
    pthread_mutex_unlock(&s->live_lock);
    if (left > 0) LOG_DEBUG("stopping with %ld request(s) still in progress", left);
    if (s->daemon) MHD_stop_daemon(s->daemon);
    srv_metrics_free(s->metrics);
    pthread_cond_destroy(&s->all_done);
    pthread_mutex_destroy(&s->live_lock);
    free(s);
}
