/* sse.c - GET /v1/events: the event feed as Server-Sent Events.
 *
 * A stream is a libmicrohttpd response with a content reader (sse_read),
 * which runs on the HTTP thread that owns the connection. It pulls events
 * from its core subscription (core_events_next) and formats them:
 *
 *     id: 42
 *     event: job
 *     data: {"id":"...","status":"running",...}
 *
 * When nothing is ready it registers a wake with the core, suspends the
 * connection and returns 0: an idle stream holds no thread and no timer of
 * libmicrohttpd (suspended connections do not time out). The wake - a new
 * event for it, its heartbeat deadline, or the drain - resumes it from
 * whichever thread fires it. A heartbeat comment goes out after
 * --heartbeat of silence; writing it is also how a client that went away is
 * noticed. A client that stops reading leaves its connection unwritable:
 * libmicrohttpd stops calling the reader and closes the connection after
 * --connection-timeout without progress; if it reads again before that and
 * the ring overran it, it gets `event: resync` and the stream ends.
 *
 * Threads and ownership. `struct sse` is shared by the HTTP thread (the
 * reader, the free callback) and the waker; `lock` guards suspended and
 * woken; refs counts the response (1) and a registered wake (1). The
 * reader's own fields (out, positions) are the HTTP thread's alone.
 */
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/clock.h"
#include "../common/id.h"
#include "../common/log.h"
#include "server.h"

#define SSE_BLOCK 4096 /* preferred size of a chunk handed to libmicrohttpd */

struct sse {
    struct MHD_Connection *conn; /* outlives the response */
    struct core *core;
    struct core_sub *sub; /* the HTTP thread's; freed by the free callback */
    int64_t heartbeat_ms;
    int64_t end_ms; /* clock_mono_ms after which the stream ends once caught up; 0 = never */

    /* HTTP thread only. */
    char *out; /* bytes formatted and not yet handed over: out[off..len) */
    size_t len, off, cap;
    int64_t last_out_ms; /* when the last bytes were formatted (heartbeat clock) */
    bool ending;         /* send what is in out, then end the stream */
    bool failed;         /* out of memory: end the stream with an error */

    /* `lock` guards suspended and woken. */
    pthread_mutex_t lock;
    bool suspended; /* the reader suspended the connection; the next wake resumes it */
    bool woken;     /* a wake ran since the reader last looked */
    atomic_int refs;
};

static void sse_unref(struct sse *x)
{
    if (atomic_fetch_sub(&x->refs, 1) != 1) return;
    free(x->out);
    pthread_mutex_destroy(&x->lock);
    free(x);
}

/* Appends printf output to x->out. On failure sets x->failed. */
__attribute__((format(printf, 2, 3))) static void out_printf(struct sse *x, const char *fmt, ...)
{
    if (x->failed) return;
    for (int pass = 0; pass < 2; pass++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(x->out ? x->out + x->len : NULL, x->out ? x->cap - x->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) break;
        if (x->out && x->len + (size_t)n < x->cap) {
            x->len += (size_t)n;
            x->last_out_ms = clock_mono_ms();
            return;
        }
        size_t cap = x->cap ? x->cap : 1024;
        while (cap <= x->len + (size_t)n) cap *= 2;
        char *b = realloc(x->out, cap);
        if (!b) break;
        x->out = b;
        x->cap = cap;
    }
    x->failed = true;
}

static void out_resync(struct sse *x, uint64_t id, const char *reason)
{
    out_printf(x, "id: %" PRIu64 "\nevent: resync\ndata: {\"reason\":\"%s\",\"latest\":%" PRIu64 "}\n\n", id, reason,
               core_events_latest(x->core));
}

/* A core_wake_cb: any thread. Drops the reference the registration held. */
static void sse_wake(void *ctx)
{
    struct sse *x = ctx;
    pthread_mutex_lock(&x->lock);
    x->woken = true;
    bool resume = x->suspended;
    x->suspended = false;
    struct MHD_Connection *conn = x->conn;
    pthread_mutex_unlock(&x->lock);
    /* A suspended connection cannot be closed (libmicrohttpd does not look at
     * it until resumed), so conn is valid here. */
    if (resume) MHD_resume_connection(conn);
    sse_unref(x);
}

/* Formats what comes next into x->out. Returns 1 when something was added
 * (or the stream is ending), 0 when the reader should suspend (a wake is
 * registered and had not run yet). */
static int produce(struct sse *x)
{
    for (;;) {
        int64_t now = clock_mono_ms();
        if (now - x->last_out_ms >= x->heartbeat_ms) {
            out_printf(x, ": heartbeat\n\n");
            return 1;
        }
        int64_t deadline = x->last_out_ms + x->heartbeat_ms;
        if (x->end_ms && x->end_ms > now && x->end_ms < deadline) deadline = x->end_ms;

        /* Past ?timeout the stream ends as soon as it has caught up: no wake. */
        bool past_end = x->end_ms && now >= x->end_ms;
        pthread_mutex_lock(&x->lock);
        x->woken = false;
        pthread_mutex_unlock(&x->lock);
        struct core_event ev = {0};
        if (!past_end) atomic_fetch_add(&x->refs, 1); /* for the wake, should one be registered */
        int rc = core_events_next(x->sub, &ev, deadline, past_end ? NULL : sse_wake, x);
        if (!past_end && rc != 0) atomic_fetch_sub(&x->refs, 1); /* none registered; the response's ref remains */
        switch (rc) {
        case 1:
            out_printf(x, "id: %" PRIu64 "\nevent: %s\ndata: %s\n\n", ev.seq, ev.type, ev.data);
            free(ev.data);
            return 1;
        case 0:
            if (past_end) {
                x->ending = true;
                return 1;
            }
            pthread_mutex_lock(&x->lock);
            bool woken = x->woken;
            if (!woken) {
                x->suspended = true;
                MHD_suspend_connection(x->conn);
            }
            pthread_mutex_unlock(&x->lock);
            if (woken) continue;
            return 0;
        case -ERANGE:
            out_resync(x, ev.seq, "events after your Last-Event-ID were deleted from the event log; re-read what you need");
            return 1;
        case -ESTALE:
            out_resync(x, ev.seq, "this client fell too far behind; re-read what you need, then reconnect from this id");
            x->ending = true;
            return 1;
        case -ESHUTDOWN:
            x->ending = true;
            return 1;
        default:
            LOG_WARN("events: ending a stream: %s", strerror(-rc));
            x->failed = true;
            return 1;
        }
    }
}

/* libmicrohttpd's content reader (the connection's HTTP thread). */
static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct sse *x = cls;
    for (;;) {
        if (x->off < x->len) {
            size_t n = x->len - x->off < max ? x->len - x->off : max;
            memcpy(buf, x->out + x->off, n);
            x->off += n;
            if (x->off == x->len) x->off = x->len = 0;
            return (ssize_t)n;
        }
        if (x->failed) return MHD_CONTENT_READER_END_WITH_ERROR;
        if (x->ending) return MHD_CONTENT_READER_END_OF_STREAM;
        if (!produce(x)) return 0; /* suspended */
    }
}

/* libmicrohttpd's free callback: the response is done with (sent, or the
 * connection closed). */
static void sse_free(void *cls)
{
    struct sse *x = cls;
    if (core_events_unsubscribe(x->sub)) sse_unref(x); /* the cancelled wake's reference */
    x->sub = NULL;
    sse_unref(x);
}

/* Parses a decimal seq. */
static bool parse_seq(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9' || strlen(s) > 19) return false;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end) return false;
    *out = v;
    return true;
}

enum srv_step srv_h_events(struct srv_req *req)
{
    const struct config *cfg = srv_req_config(req);
    struct core *core = srv_req_core(req);
    const char *job = srv_req_query(req, "job"), *batch = srv_req_query(req, "batch");
    if (job && !id_valid(job)) {
        srv_reply_errorf(req, API_INVALID_ARGUMENT, "job", "job must be a job id (26 characters).");
        return STEP_DONE;
    }
    if (batch && !id_valid(batch)) {
        srv_reply_errorf(req, API_INVALID_ARGUMENT, "batch", "batch must be a batch id (26 characters).");
        return STEP_DONE;
    }
    /* The header is what EventSource sends on reconnecting; the query
     * argument is for clients that cannot set headers. */
    const char *last_name = "Last-Event-ID", *last = srv_req_header(req, "Last-Event-ID");
    if (!last) {
        last_name = "last_event_id";
        last = srv_req_query(req, "last_event_id");
    }
    uint64_t after = 0;
    if (last && !parse_seq(last, &after)) {
        srv_reply_errorf(req, API_INVALID_ARGUMENT, last_name, "%s must be an event id (a sequence number).",
                         last_name);
        return STEP_DONE;
    }
    int64_t end_ms = 0;
    const char *t = srv_req_query(req, "timeout");
    if (t) {
        char *endp;
        double s = strtod(t, &endp);
        double max = (double)cfg->max_wait_ms / 1000.0;
        if (endp == t || *endp || !(s >= 0 && s <= max)) {
            srv_reply_errorf(req, API_INVALID_ARGUMENT, "timeout", "timeout must be a number of seconds from 0 to %g.",
                             max);
            return STEP_DONE;
        }
        end_ms = clock_mono_ms() + (int64_t)(s * 1000.0);
        if (!end_ms) end_ms = 1;
    }

    uint64_t latest = core_events_latest(core);
    bool ahead = last && after > latest;
    if (!last || ahead) after = latest;

    struct sse *x = calloc(1, sizeof *x);
    if (!x) {
        srv_reply_errorf(req, API_INTERNAL, NULL, "The server ran out of memory.");
        return STEP_DONE;
    }
    x->conn = srv_req_connection(req);
    x->core = core;
    x->heartbeat_ms = cfg->heartbeat_ms > 0 ? cfg->heartbeat_ms : 15000;
    x->end_ms = end_ms;
    x->last_out_ms = clock_mono_ms();
    pthread_mutex_init(&x->lock, NULL);
    atomic_store(&x->refs, 1);
    int rc = core_events_subscribe(core, after, job, batch, &x->sub);
    if (rc < 0) {
        sse_unref(x);
        struct api_err err;
        api_err_from_errno(&err, rc, "events");
        srv_reply_error(req, &err);
        return STEP_DONE;
    }
    if (ahead)
        out_resync(x, latest, "Last-Event-ID is newer than the newest event here (another or a restored database)");
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, SSE_BLOCK, sse_read, x, sse_free);
    if (!resp) {
        core_events_unsubscribe(x->sub); /* no wake was ever registered */
        sse_unref(x);
        srv_reply_errorf(req, API_INTERNAL, NULL, "The server ran out of memory.");
        return STEP_DONE;
    }
    srv_reply_response(req, 200, resp);
    srv_reply_header(req, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    srv_reply_header(req, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    srv_reply_header(req, "X-Accel-Buffering", "no"); /* nginx: do not buffer the stream */
    return STEP_DONE;
}
