/* server.h - the HTTP server: libmicrohttpd glue, routing, replies, auth.
 *
 * Request life: libmicrohttpd calls the access handler several times per
 * request (headers, body chunks, final). The body is accumulated up to
 * max_body_bytes. On the final call the route's handler runs a *step*: a step
 * either sets the response (STEP_DONE) or parks the request (STEP_PARK) after
 * registering exactly one waker (a commit callback or a core waiter). Parking
 * suspends the connection, so a waiting request holds no thread; the waker
 * resumes it from any thread and the next step runs on an HTTP thread.
 */
#ifndef JOBD_SERVER_H
#define JOBD_SERVER_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "../common/apierr.h"
#include "../core/core.h"
#include "config.h"

struct srv;
struct srv_req;

enum srv_step { STEP_DONE, STEP_PARK };
typedef enum srv_step (*srv_step_fn)(struct srv_req *req);

/* Starts listening (cfg->listen_*) with a thread pool. The core, store and
 * registry outlive the server. Returns 0 or a negative errno (message logged). */
int srv_start(const struct config *cfg, struct core *core, struct store *store, const struct task_registry *tasks,
              struct srv **out);
/* The port actually bound (useful with port 0). */
int srv_port(const struct srv *s);
/* Stops accepting and closes every connection. Parked requests must have been
 * woken first (core_drain does that). Accepts NULL. */
void srv_stop(struct srv *s);

/* --- used by the route handlers (server/routes.c) --- */

struct srv_req_info {
    const char *id;        /* the {id} path segment, or NULL */
    const char *body;      /* request body (NUL-terminated), may be empty */
    size_t body_len;
};
const struct srv_req_info *srv_req_info(struct srv_req *req);
struct core *srv_req_core(struct srv_req *req);
struct store *srv_req_store(struct srv_req *req);
const struct config *srv_req_config(struct srv_req *req);
const struct task_registry *srv_req_tasks(struct srv_req *req);
/* A query argument or NULL. */
const char *srv_req_query(struct srv_req *req, const char *name);
/* A request header or NULL. */
const char *srv_req_header(struct srv_req *req, const char *name);

/* Per-request scratch owned by the handlers; freed with the request. */
struct srv_req_state {
    srv_step_fn next;      /* the step to run when the request is woken */
    int rc;                /* result handed over by the waker */
    struct job *job;       /* a job the handler keeps (freed with the request) */
    char *text;            /* a reply rendered ahead (freed with the request unless sent) */
    size_t text_len;
    char executor[128];    /* the submitted job's executor, for a 429's message */
    int64_t deadline_ms;   /* clock_mono_ms deadline of a wait */
    char id[ID_LEN + 1];
    char key[256];         /* idempotency key */
    int ok_status;         /* the status for a successful reply */
    void *ext;             /* a handler's own state, freed with the request by ext_free (if set) */
    void (*ext_free)(void *ext);
};
struct srv_req_state *srv_req_state(struct srv_req *req);

/* Replies. Each sets the response; the handler then returns STEP_DONE. */
void srv_reply_json(struct srv_req *req, unsigned status, cJSON *body); /* takes body */
void srv_reply_error(struct srv_req *req, const struct api_err *err);
void srv_reply_errorf(struct srv_req *req, enum api_code code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void srv_reply_empty(struct srv_req *req, unsigned status);
/* Replies with buf as is: static or otherwise never freed (e.g. an embedded file). */
void srv_reply_static(struct srv_req *req, unsigned status, const char *content_type, const void *buf, size_t len);
/* A body of len bytes in buf, which must come from malloc: the reply takes it
 * (libmicrohttpd frees it), even when it fails. */
void srv_reply_text(struct srv_req *req, unsigned status, const char *content_type, char *buf, size_t len);
/* Adds a header to the response set by the last reply call. */
void srv_reply_header(struct srv_req *req, const char *name, const char *value);

/* Streaming replies (server/sse.c). The handler builds a libmicrohttpd
 * response itself (e.g. MHD_create_response_from_callback) and hands it over
 * with srv_reply_response(), which takes it (NULL: replies 500). The
 * connection is for MHD_suspend_connection()/MHD_resume_connection() from
 * the response's content reader; it outlives the response. */
struct MHD_Connection;
struct MHD_Response;
void srv_reply_response(struct srv_req *req, unsigned status, struct MHD_Response *resp);
struct MHD_Connection *srv_req_connection(struct srv_req *req);

/* Parking. srv_req_ref() before handing the request to a waker; the waker
 * calls srv_req_wake() exactly once (which also drops that reference). A
 * handler that cancels a waker that will then never run calls srv_req_unref(). */
void srv_req_ref(struct srv_req *req);
void srv_req_unref(struct srv_req *req);
void srv_req_wake(struct srv_req *req);
/* A core_done_cb that stores rc in state->rc and wakes the request. */
void srv_req_wake_rc(void *ctx, int rc, const struct job *job);
/* A core_wake_cb that wakes the request. */
void srv_req_wake_cb(void *ctx);

/* --- HTTP request counters (server/metrics.c) ---
 *
 * One relaxed atomic increment per reply, in an array sized at start:
 * [route pattern or unmatched][method][status]. http.c counts every reply it
 * queues; GET /metrics reads them. */
struct srv_metrics;
/* Returns 0 or -ENOMEM. Free with srv_metrics_free (accepts NULL). */
int srv_metrics_new(struct srv_metrics **out);
void srv_metrics_free(struct srv_metrics *m);
/* route: an index into srv_routes (the pattern matched, even when the method
 * was not allowed), or -1 for a path no route has. Any thread. */
void srv_metrics_count(struct srv_metrics *m, int route, const char *method, unsigned status);
struct srv_metrics *srv_req_metrics(struct srv_req *req);

/* Writes `value` escaped as a label value of the Prometheus text format
 * (backslash, double quote and newline as \\, \" and \n) into out, NUL
 * terminated and truncated to cap bytes like snprintf. Returns the length of
 * the whole escaped value (>= cap means truncated). */
size_t srv_metrics_escape(char *out, size_t cap, const char *value);

/* Handlers in their own files. */
enum srv_step srv_h_metrics(struct srv_req *req); /* server/metrics.c: GET /metrics */
enum srv_step srv_h_openapi(struct srv_req *req); /* server/openapi.c: GET /v1/openapi.json */
enum srv_step srv_h_events(struct srv_req *req);  /* server/sse.c: GET /v1/events */
/* server/web.c: the dashboard, compiled in (no token) */
enum srv_step srv_h_web_index(struct srv_req *req); /* GET / */
enum srv_step srv_h_web_js(struct srv_req *req);    /* GET /app.js */
enum srv_step srv_h_web_css(struct srv_req *req);   /* GET /app.css */
/* server/futures.c */
enum srv_step srv_h_wait(struct srv_req *req);         /* POST /v1/wait */
enum srv_step srv_h_batch_create(struct srv_req *req); /* POST /v1/batches */
enum srv_step srv_h_batch_get(struct srv_req *req);    /* GET /v1/batches/{id} */
/* Parses ?wait=SECONDS into *ms (0 when absent); replies 400 and returns -1 when bad. */
int srv_parse_wait(struct srv_req *req, int64_t *ms);
/* Parses a JSON request body (UTF-8, no trailing garbage); replies 400 and returns NULL when bad. */
cJSON *srv_parse_body(struct srv_req *req, const char *example);
/* Replies with the error for a negative errno from core/store about `what` ("The job"). */
enum srv_step srv_reply_errno(struct srv_req *req, int rc, const char *what);

/* --- the route table (server/routes.c) --- */
struct srv_route {
    const char *method;
    const char *pattern; /* "/v1/jobs/{id}/cancel" */
    srv_step_fn handler;
    const char *const *query; /* allowed query arguments, NULL-terminated; NULL = none */
    bool auth;                /* needs the token when one is configured */
};
extern const struct srv_route srv_routes[];
extern const int srv_n_routes;

#endif
