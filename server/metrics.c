/* metrics.c - GET /metrics: the Prometheus text exposition format 0.0.4, and
 * the HTTP request counters behind jobd_http_requests_total.
 *
 * DESIGN. Every number already lives where it is made: job counters and
 * latency histograms in the core (core/metrics.c), executor gauges in the
 * executors, commit histograms in the store's writer, request counters here.
 * A scrape reads them all (atomics, or a copy under the owner's lock) and
 * prints one buffer, handed to libmicrohttpd to free. Nothing on the request
 * path allocates for metrics: a request costs one relaxed atomic increment,
 * in a [route][method][status] array sized once at srv_start.
 *
 * Label values that come from configuration or plugins (task and executor
 * names) are escaped; route patterns, methods and statuses come from fixed
 * tables and need no escaping, but go through the same path anyway.
 */
#include "server.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/clock.h"

#include "../common/version.h"
#define METRICS_VERSION JOBD_VERSION
#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* --- the request counters ------------------------------------------------ */

/* Methods counted by name; anything else is counted as "other" (the label's
 * values stay bounded whatever clients send). */
static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"};
#define N_METHODS ((int)(sizeof methods / sizeof *methods))

/* Statuses counted by code; any other is counted as "other". */
static const unsigned statuses[] = {
    200, 201, 202, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 406, 408, 409,
    410, 411, 412, 413, 414, 415, 416, 417, 422, 429, 431, 500, 501, 502, 503, 504, 505,
};
#define N_STATUSES ((int)(sizeof statuses / sizeof *statuses))
#define N_STATUS_SLOTS (N_STATUSES + 1) /* the last slot: other */
#define MAX_STATUS 600

struct srv_metrics {
    int64_t started_at_ms;            /* wall clock at srv_metrics_new */
    int n_routes;                     /* srv_n_routes; slot n_routes counts unmatched paths */
    uint8_t status_slot[MAX_STATUS];  /* status code -> slot; immutable after new */
    atomic_ullong *count;             /* [(n_routes + 1) * N_METHODS * N_STATUS_SLOTS] */
};

int srv_metrics_new(struct srv_metrics **out)
{
    struct srv_metrics *m = calloc(1, sizeof *m);
    if (!m) return -ENOMEM;
    m->started_at_ms = clock_wall_ms();
    m->n_routes = srv_n_routes;
    size_t n = (size_t)(m->n_routes + 1) * N_METHODS * N_STATUS_SLOTS;
    /* All-zero bytes are a zero atomic_ullong on every platform we build for. */
    m->count = calloc(n, sizeof *m->count);
    if (!m->count) {
        free(m);
        return -ENOMEM;
    }
    memset(m->status_slot, N_STATUSES, sizeof m->status_slot);
    for (int i = 0; i < N_STATUSES; i++) m->status_slot[statuses[i]] = (uint8_t)i;
    *out = m;
    return 0;
}

void srv_metrics_free(struct srv_metrics *m)
{
    if (!m) return;
    free(m->count);
    free(m);
}

static int method_slot(const char *method)
{
    for (int i = 0; i < N_METHODS - 1; i++)
        if (strcmp(methods[i], method) == 0) return i;
    return N_METHODS - 1;
}

void srv_metrics_count(struct srv_metrics *m, int route, const char *method, unsigned status)
{
    if (!m) return;
    size_t r = route >= 0 && route < m->n_routes ? (size_t)route : (size_t)m->n_routes;
    size_t s = status < MAX_STATUS ? m->status_slot[status] : N_STATUSES;
    size_t i = (r * N_METHODS + (size_t)method_slot(method ? method : "")) * N_STATUS_SLOTS + s;
    atomic_fetch_add_explicit(&m->count[i], 1, memory_order_relaxed);
}

/* --- the output buffer ---------------------------------------------------- */

/* A growing text buffer; after a failed allocation it only records `oom`. */
struct mbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

static bool mb_reserve(struct mbuf *b, size_t more)
{
    if (b->oom) return false;
    if (b->len + more + 1 <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 16384;
    while (cap < b->len + more + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static void mb_printf(struct mbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void mb_printf(struct mbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !mb_reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

size_t srv_metrics_escape(char *out, size_t cap, const char *value)
{
    size_t n = 0;
    for (const char *v = value ? value : ""; *v; v++) {
        char esc = *v == '\\' ? '\\' : *v == '"' ? '"' : *v == '\n' ? 'n' : 0;
        char pair[2] = {'\\', esc};
        const char *w = esc ? pair : v;
        for (size_t k = 0; k < (esc ? 2u : 1u); k++, n++)
            if (n + 1 < cap) out[n] = w[k];
    }
    if (cap) out[n < cap ? n : cap - 1] = '\0';
    return n;
}

/* Appends `value` escaped as a label value (without the quotes). */
static void mb_label(struct mbuf *b, const char *value)
{
    size_t n = srv_metrics_escape(NULL, 0, value);
    if (!mb_reserve(b, n)) return;
    srv_metrics_escape(b->p + b->len, b->cap - b->len, value);
    b->len += n;
}

/* "name{k1="v1",k2="v2"} " - a sample's name and labels, escaped, up to the
 * value. labels: NULL-terminated pairs of name, value; may be NULL. */
static void mb_sample(struct mbuf *b, const char *name, const char *const *labels)
{
    mb_printf(b, "%s", name);
    for (int i = 0; labels && labels[i]; i += 2) {
        mb_printf(b, "%s%s=\"", i ? "," : "{", labels[i]);
        mb_label(b, labels[i + 1]);
        mb_printf(b, "\"");
    }
    mb_printf(b, "%s ", labels && labels[0] ? "}" : "");
}

static void mb_family(struct mbuf *b, const char *name, const char *type, const char *help)
{
    mb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void mb_u64(struct mbuf *b, const char *name, const char *const *labels, uint64_t v)
{
    mb_sample(b, name, labels);
    mb_printf(b, "%" PRIu64 "\n", v);
}

/* A value given as n / 10^digits, printed exactly ("12.345"). */
static void mb_fixed(struct mbuf *b, const char *name, const char *const *labels, uint64_t n, int digits)
{
    uint64_t scale = 1;
    for (int i = 0; i < digits; i++) scale *= 10;
    mb_sample(b, name, labels);
    if (digits == 0)
        mb_printf(b, "%" PRIu64 "\n", n);
    else
        mb_printf(b, "%" PRIu64 ".%0*" PRIu64 "\n", n / scale, digits, n % scale);
}

/* One histogram series: the _bucket lines (cumulative, ending with +Inf),
 * _sum (sum_n / 10^sum_digits) and _count. `bucket` holds n_bounds + 1
 * non-cumulative counts. `label`/`value`: one label of the series, or NULL. */
static void mb_histogram(struct mbuf *b, const char *name, const char *label, const char *value,
                         const double *bounds, int n_bounds, const uint64_t *bucket, uint64_t sum_n,
                         int sum_digits)
{
    char metric[128], le[32];
    const char *labels[] = {label, value, "le", le, NULL};
    const char *const *own = label ? labels : labels + 2;
    uint64_t cum = 0;
    snprintf(metric, sizeof metric, "%s_bucket", name);
    for (int i = 0; i <= n_bounds; i++) {
        cum += bucket[i];
        if (i < n_bounds)
            snprintf(le, sizeof le, "%g", bounds[i]);
        else
            snprintf(le, sizeof le, "+Inf");
        mb_u64(b, metric, own, cum);
    }
    labels[2] = NULL; /* _sum and _count carry the series label only */
    snprintf(metric, sizeof metric, "%s_sum", name);
    mb_fixed(b, metric, label ? labels : NULL, sum_n, sum_digits);
    snprintf(metric, sizeof metric, "%s_count", name);
    mb_u64(b, metric, label ? labels : NULL, cum);
}

/* --- the families ----------------------------------------------------------- */

struct jobs_ctx {
    struct mbuf *b;
    bool finished; /* which family this pass prints */
};

static void put_job_counters(void *arg, const struct core_job_counters *jc)
{
    struct jobs_ctx *x = arg;
    if (!x->finished) {
        const char *labels[] = {"task", jc->task, "executor", jc->executor, NULL};
        mb_u64(x->b, "jobd_jobs_submitted_total", labels, jc->submitted);
        return;
    }
    const char *status[] = {"succeeded", "failed", "cancelled"};
    const uint64_t n[] = {jc->succeeded, jc->failed, jc->cancelled};
    for (int i = 0; i < 3; i++) {
        const char *labels[] = {"task", jc->task, "executor", jc->executor, "status", status[i], NULL};
        mb_u64(x->b, "jobd_jobs_finished_total", labels, n[i]);
    }
}

static void put_jobs(struct mbuf *b, struct core *c)
{
    struct jobs_ctx x = {.b = b};
    mb_family(b, "jobd_jobs_submitted_total", "counter",
              "Jobs accepted (committed) since start, by submit or retry, by task and executor.");
    core_job_counters_each(c, put_job_counters, &x);
    x.finished = true;
    mb_family(b, "jobd_jobs_finished_total", "counter",
              "Jobs that reached a terminal status since start, by task, executor and status.");
    core_job_counters_each(c, put_job_counters, &x);

    struct core_stats s;
    core_get_stats(c, &s);
    mb_family(b, "jobd_jobs", "gauge", "Jobs in the database now, by status.");
    for (int i = 0; i < JOB_STATUS_COUNT; i++) {
        const char *labels[] = {"status", job_status_name((enum job_status)i), NULL};
        mb_u64(b, "jobd_jobs", labels, s.counts[i] > 0 ? (uint64_t)s.counts[i] : 0);
    }
}

static void put_executors(struct mbuf *b, struct core *c)
{
    struct core_executor_stats es[CONFIG_MAX_EXECUTORS];
    int n = core_executor_stats(c, es, CONFIG_MAX_EXECUTORS);
    if (n > CONFIG_MAX_EXECUTORS) n = CONFIG_MAX_EXECUTORS;
    static const struct {
        const char *name, *help;
    } gauges[] = {
        {"jobd_executor_size", "Workers (threads, processes or async slots) of the executor."},
        {"jobd_executor_busy", "Jobs the executor is running now."},
        {"jobd_executor_queued", "Jobs waiting in the executor's ready queue now."},
        {"jobd_executor_max_queued", "Scheduled and queued jobs the executor holds at most; past it submits get 429."},
    };
    for (size_t g = 0; g < sizeof gauges / sizeof *gauges; g++) {
        mb_family(b, gauges[g].name, "gauge", gauges[g].help);
        for (int i = 0; i < n; i++) {
            const char *labels[] = {"executor", es[i].name, "kind", es[i].kind, NULL};
            uint64_t v = g == 0 ? (uint64_t)es[i].size : g == 1 ? (uint64_t)es[i].busy
                       : g == 2 ? (uint64_t)es[i].queued : (uint64_t)es[i].max_queued;
            mb_u64(b, gauges[g].name, labels, v);
        }
    }
    /* i < n executors: core_executor_latency cannot fail here. */
    struct core_latency_hist wait[CONFIG_MAX_EXECUTORS] = {0}, run[CONFIG_MAX_EXECUTORS] = {0};
    for (int i = 0; i < n; i++) (void)core_executor_latency(c, i, &wait[i], &run[i]);
    mb_family(b, "jobd_job_queue_wait_seconds", "histogram",
              "Time from when a finished job could start (created, or scheduled) to its start, by executor.");
    for (int i = 0; i < n; i++)
        mb_histogram(b, "jobd_job_queue_wait_seconds", "executor", es[i].name, core_latency_bounds_s,
                     CORE_LATENCY_BUCKETS, wait[i].bucket, wait[i].sum_ms, 3);
    mb_family(b, "jobd_job_run_seconds", "histogram", "Run time of finished jobs (start to end), by executor.");
    for (int i = 0; i < n; i++)
        mb_histogram(b, "jobd_job_run_seconds", "executor", es[i].name, core_latency_bounds_s, CORE_LATENCY_BUCKETS,
                     run[i].bucket, run[i].sum_ms, 3);
}

static void put_http(struct mbuf *b, struct srv_metrics *m)
{
    mb_family(b, "jobd_http_requests_total", "counter",
              "HTTP requests answered since start, by route pattern (or unmatched), method and status.");
    for (int r = 0; r <= m->n_routes; r++) {
        const char *route = r < m->n_routes ? srv_routes[r].pattern : "unmatched";
        for (int k = 0; k < N_METHODS; k++) {
            for (int s = 0; s < N_STATUS_SLOTS; s++) {
                size_t i = ((size_t)r * N_METHODS + (size_t)k) * N_STATUS_SLOTS + (size_t)s;
                uint64_t v = atomic_load_explicit(&m->count[i], memory_order_relaxed);
                if (!v) continue; /* only combinations seen: most never happen */
                char code[8];
                if (s < N_STATUSES)
                    snprintf(code, sizeof code, "%u", statuses[s]);
                else
                    snprintf(code, sizeof code, "other");
                const char *labels[] = {"route", route, "method", methods[k], "status", code, NULL};
                mb_u64(b, "jobd_http_requests_total", labels, v);
            }
        }
    }
}

static void put_store(struct mbuf *b, struct store *st)
{
    struct store_stats s;
    store_get_stats(st, &s);
    double batch_bounds[STORE_BATCH_BUCKETS], commit_bounds[STORE_COMMIT_BUCKETS];
    for (int i = 0; i < STORE_BATCH_BUCKETS; i++) batch_bounds[i] = (double)(1u << i);
    for (int i = 0; i < STORE_COMMIT_BUCKETS; i++) commit_bounds[i] = (double)store_commit_bounds_ns[i] / 1e9;
    mb_family(b, "jobd_store_commit_batch_size", "histogram",
              "Writes (ops) per store transaction: group commit shares one commit among them.");
    mb_histogram(b, "jobd_store_commit_batch_size", NULL, NULL, batch_bounds, STORE_BATCH_BUCKETS, s.batch_hist,
                 s.ops + s.failed_ops, 0);
    mb_family(b, "jobd_store_commit_seconds", "histogram",
              "Time of one store transaction, BEGIN to COMMIT (an fsync with --sync full).");
    mb_histogram(b, "jobd_store_commit_seconds", NULL, NULL, commit_bounds, STORE_COMMIT_BUCKETS, s.commit_hist,
                 s.commit_ns_sum, 9);
    mb_family(b, "jobd_store_ops_total", "counter",
              "Store writes since start: committed, or failed (the transaction rolled back, or the write was refused).");
    const char *ok[] = {"result", "committed", NULL}, *failed[] = {"result", "failed", NULL};
    mb_u64(b, "jobd_store_ops_total", ok, s.ops);
    mb_u64(b, "jobd_store_ops_total", failed, s.failed_ops);
    mb_family(b, "jobd_store_queue_depth", "gauge", "Store writes queued now, waiting for the writer.");
    mb_u64(b, "jobd_store_queue_depth", NULL, s.queued);
}

static void put_process(struct mbuf *b, struct srv_metrics *m)
{
    mb_family(b, "jobd_build_info", "gauge", "Always 1; the version of this jobd in a label.");
    const char *labels[] = {"version", METRICS_VERSION, NULL};
    mb_u64(b, "jobd_build_info", labels, 1);
    mb_family(b, "jobd_start_time_seconds", "gauge", "When the server started, in seconds since the Unix epoch.");
    mb_fixed(b, "jobd_start_time_seconds", NULL, m->started_at_ms > 0 ? (uint64_t)m->started_at_ms : 0, 3);
}

enum srv_step srv_h_metrics(struct srv_req *req)
{
    struct mbuf b = {0};
    struct srv_metrics *m = srv_req_metrics(req);
    put_process(&b, m);
    put_jobs(&b, srv_req_core(req));
    put_executors(&b, srv_req_core(req));
    put_store(&b, srv_req_store(req));
    put_http(&b, m);
    if (b.oom || !b.p) {
        free(b.p);
        srv_reply_errorf(req, API_INTERNAL, NULL, "The server ran out of memory building the metrics.");
        return STEP_DONE;
    }
    srv_reply_text(req, 200, CONTENT_TYPE, b.p, b.len);
    return STEP_DONE;
}
