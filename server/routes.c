/* routes.c - the route table and the API handlers (SPEC §3).
 *
 * Each handler is a step (see server.h): it replies, or registers one waker
 * and names the next step. Reads go straight to the store's read pool;
 * writes go through the core.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "../common/utf8.h"
#include "server.h"

#define LIST_LIMIT_DEFAULT 50
#define LIST_LIMIT_MAX 1000
#define LIST_Q_MAX 200 /* bytes of search text */
#define WORKERS_MAX 4096 /* workers listed per executor (the configuration's largest size) */
#define CANCEL_WAIT_MS 2000 /* how long a cancel reply waits for a running job to stop */

/* --- small helpers --- */

enum srv_step srv_reply_errno(struct srv_req *req, int rc, const char *what)
{
    struct api_err err;
    api_err_from_errno(&err, rc, what);
    srv_reply_error(req, &err);
    return STEP_DONE;
}

static enum srv_step reply_job(struct srv_req *req, unsigned status, const struct job *job)
{
    size_t len = 0;
    char *text = job_json_text(job, &len);
    if (!text) return srv_reply_errno(req, -ENOMEM, "The job");
    srv_reply_text(req, status, "application/json", text, len);
    if (status == 202) {
        char loc[64];
        snprintf(loc, sizeof loc, "/v1/jobs/%s", job->id);
        srv_reply_header(req, "Location", loc);
    }
    return STEP_DONE;
}

int srv_parse_wait(struct srv_req *req, int64_t *ms)
{
    const char *w = srv_req_query(req, "wait");
    *ms = 0;
    if (!w) return 0;
    char *end;
    double s = strtod(w, &end);
    double max = (double)srv_req_config(req)->max_wait_ms / 1000.0;
    if (end == w || *end || !isfinite(s) || s < 0 || s > max) {
        srv_reply_errorf(req, API_INVALID_ARGUMENT, "wait", "wait must be a number of seconds from 0 to %g.", max);
        return -1;
    }
    *ms = (int64_t)(s * 1000.0);
    return 0;
}

cJSON *srv_parse_body(struct srv_req *req, const char *example)
{
    const struct srv_req_info *in = srv_req_info(req);
    const char *end = NULL;
    size_t bad_at = 0;
    if (!utf8_valid(in->body, in->body_len, &bad_at)) {
        srv_reply_errorf(req, API_BAD_JSON, NULL, "The body is not valid UTF-8 (bad byte at offset %zu).", bad_at);
        return NULL;
    }
    /* The body is NUL-terminated; counting the NUL makes cJSON refuse trailing garbage. */
    cJSON *body = cJSON_ParseWithLengthOpts(in->body, in->body_len + 1, &end, true);
    if (!body) {
        size_t at = end && end >= in->body ? (size_t)(end - in->body) : 0;
        if (in->body_len)
            srv_reply_errorf(req, API_BAD_JSON, NULL, "The body is not valid JSON (error near byte %zu).", at);
        else
            srv_reply_errorf(req, API_BAD_JSON, NULL, "The body is empty; send a JSON object like %s.", example);
    }
    return body;
}

/* Replies 404 unless the path id is a well-formed id. */
static bool check_id(struct srv_req *req)
{
    const char *id = srv_req_info(req)->id;
    if (id && id_valid(id)) return true;
    srv_reply_errorf(req, API_NOT_FOUND, NULL, "No job with id '%.40s'.", id ? id : "");
    return false;
}

/* --- waiting on a job --- */

typedef enum srv_step (*finish_fn)(struct srv_req *req, const struct job *job);

/* Per-request: what to do with the job once the wait ends. Stored as an
 * index into this table so the state stays plain data. */
static enum srv_step finish_get(struct srv_req *req, const struct job *job);
static enum srv_step finish_submit(struct srv_req *req, const struct job *job);

static enum srv_step wait_woken(struct srv_req *req);

static enum srv_step finish_with(struct srv_req *req, const struct job *job)
{
    return srv_req_state(req)->ok_status == 202 ? finish_submit(req, job) : finish_get(req, job);
}

/* Reads the job and either finishes, or waits for its end until the deadline. */
static enum srv_step wait_or_finish(struct srv_req *req)
{
    struct srv_req_state *st = srv_req_state(req);
    struct core *c = srv_req_core(req);
    uint64_t token = 0;
    bool registered = false;
    if (clock_mono_ms() < st->deadline_ms) {
        srv_req_ref(req);
        int rc = core_wait_job(c, st->id, st->deadline_ms, srv_req_wake_cb, req, &token);
        if (rc == 0)
            registered = true;
        else
            srv_req_unref(req); /* draining: answer with what there is */
    }
    struct job *job = NULL;
    int rc = store_job_get(srv_req_store(req), st->id, &job);
    if (rc < 0 || job_status_terminal(job->status) || !registered) {
        if (registered && core_wait_cancel(c, st->id, token)) srv_req_unref(req);
        /* If the cancel lost the race, the waiter's wake only sets a flag. */
        enum srv_step r = rc < 0 ? srv_reply_errno(req, rc, "The job") : finish_with(req, job);
        job_free(job);
        if (registered && r == STEP_DONE) {
            /* The waiter may still wake us later: that is harmless (woken flag only). */
        }
        return r;
    }
    job_free(job);
    st->next = wait_woken;
    return STEP_PARK;
}

static enum srv_step wait_woken(struct srv_req *req)
{
    struct srv_req_state *st = srv_req_state(req);
    struct job *job = NULL;
    int rc = store_job_get(srv_req_store(req), st->id, &job);
    enum srv_step r = rc < 0 ? srv_reply_errno(req, rc, "The job") : finish_with(req, job);
    job_free(job);
    return r;
}

static enum srv_step finish_get(struct srv_req *req, const struct job *job)
{
    return reply_job(req, 200, job);
}

static enum srv_step finish_submit(struct srv_req *req, const struct job *job)
{
    return reply_job(req, job_status_terminal(job->status) ? 200 : 202, job);
}

/* --- POST /v1/jobs --- */

static enum srv_step submit_committed(struct srv_req *req)
{
    struct srv_req_state *st = srv_req_state(req);
    if (st->rc == -EEXIST && st->key[0]) {
        /* Lost an idempotency race: the first job wins. */
        struct job *first = NULL;
        int rc = store_job_get_by_idempotency(srv_req_store(req), st->key, &first);
        if (rc < 0) return srv_reply_errno(req, rc, "The job");
        enum srv_step r = reply_job(req, 200, first);
        job_free(first);
        return r;
    }
    if (st->rc < 0) return srv_reply_errno(req, st->rc, "The job");
    if (st->deadline_ms > 0) {
        st->ok_status = 202;
        return wait_or_finish(req);
    }
    /* The 202 body was rendered before the submit: the insert stores the
     * job as it was then. */
    srv_reply_text(req, 202, "application/json", st->text, st->text_len);
    st->text = NULL;
    char loc[64];
    snprintf(loc, sizeof loc, "/v1/jobs/%s", st->id);
    srv_reply_header(req, "Location", loc);
    return STEP_DONE;
}

static enum srv_step h_submit(struct srv_req *req)
{
    struct srv_req_state *st = srv_req_state(req);
    struct api_err err = {0};
    int64_t wait_ms;
    if (srv_parse_wait(req, &wait_ms) < 0) return STEP_DONE;

    cJSON *spec = srv_parse_body(req, "{\"task\": \"noop\"}");
    if (!spec) return STEP_DONE;
    const char *hkey = srv_req_header(req, "Idempotency-Key");
    if (hkey && cJSON_IsObject(spec)) {
        const cJSON *bkey = cJSON_GetObjectItemCaseSensitive(spec, "idempotency_key");
        if (!bkey)
            cJSON_AddStringToObject(spec, "idempotency_key", hkey);
        else if (!cJSON_IsString(bkey) || strcmp(bkey->valuestring, hkey) != 0) {
            cJSON_Delete(spec);
            srv_reply_errorf(req, API_INVALID_ARGUMENT, "idempotency_key",
                             "The Idempotency-Key header and the body's idempotency_key differ.");
            return STEP_DONE;
        }
    }
    struct job *job = NULL;
    int vrc = core_job_from_json(srv_req_core(req), spec, "", &job, &err);
    cJSON_Delete(spec);
    if (vrc < 0) {
        srv_reply_error(req, &err);
        return STEP_DONE;
    }
    if (job->idempotency_key) {
        snprintf(st->key, sizeof st->key, "%s", job->idempotency_key);
        struct job *first = NULL;
        if (store_job_get_by_idempotency(srv_req_store(req), st->key, &first) == 0) {
            job_free(job);
            enum srv_step r = reply_job(req, 200, first);
            job_free(first);
            return r;
        }
    }
    if (wait_ms <= 0 && !(st->text = job_json_text(job, &st->text_len))) {
        job_free(job);
        return srv_reply_errno(req, -ENOMEM, "The job");
    }
    snprintf(st->executor, sizeof st->executor, "%s", job->executor ? job->executor : "");
    memcpy(st->id, job->id, sizeof st->id);
    st->deadline_ms = wait_ms > 0 ? clock_mono_ms() + wait_ms : 0;
    srv_req_ref(req);
    int rc = core_job_submit(srv_req_core(req), job, srv_req_wake_rc, req);
    if (rc < 0) {
        srv_req_unref(req);
        if (rc == -EAGAIN) {
            srv_reply_errorf(req, API_QUEUE_FULL, NULL,
                             "Executor '%s' holds its maximum of queued jobs; retry later.", st->executor);
            return STEP_DONE;
        }
        return srv_reply_errno(req, rc, "The job");
    }
    st->next = submit_committed;
    return STEP_PARK;
}

/* --- GET /v1/jobs/{id} --- */

static enum srv_step h_get(struct srv_req *req)
{
    struct srv_req_state *st = srv_req_state(req);
    int64_t wait_ms;
    if (!check_id(req) || srv_parse_wait(req, &wait_ms) < 0) return STEP_DONE;
    snprintf(st->id, sizeof st->id, "%s", srv_req_info(req)->id);
    st->ok_status = 200;
    if (wait_ms > 0) {
        st->deadline_ms = clock_mono_ms() + wait_ms;
        return wait_or_finish(req);
    }
    struct job *job = NULL;
    int rc = store_job_get(srv_req_store(req), st->id, &job);
    if (rc < 0) return srv_reply_errno(req, rc, "The job");
    reply_job(req, 200, job);
    job_free(job);
    return STEP_DONE;
}

/* --- GET /v1/jobs --- */

static enum srv_step h_list(struct srv_req *req)
{
    struct store_filter f = {.limit = LIST_LIMIT_DEFAULT};
    const char *s;
    if ((s = srv_req_query(req, "status")) && *s) {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", s);
        for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            enum job_status st;
            if (job_status_parse(tok, &st) < 0) {
                srv_reply_errorf(req, API_INVALID_ARGUMENT, "status",
                                 "Unknown status '%.32s'; use scheduled, queued, running, succeeded, failed or "
                                 "cancelled, comma-separated.",
                                 tok);
                return STEP_DONE;
            }
            f.status_mask |= 1u << st;
        }
    }
    f.task = srv_req_query(req, "task");
    f.executor = srv_req_query(req, "executor");
    f.batch_id = srv_req_query(req, "batch");
    if ((s = srv_req_query(req, "q"))) {
        size_t len = strlen(s), bad_at = 0;
        if (len < 1 || len > LIST_Q_MAX || !utf8_valid(s, len, &bad_at)) {
            srv_reply_errorf(req, API_INVALID_ARGUMENT, "q", "q must be 1 to %d bytes of UTF-8 text to search for.",
                             LIST_Q_MAX);
            return STEP_DONE;
        }
        f.q = s;
    }
    if ((s = srv_req_query(req, "limit"))) {
        char *end;
        long n = strtol(s, &end, 10);
        if (end == s || *end || n < 1 || n > LIST_LIMIT_MAX) {
            srv_reply_errorf(req, API_INVALID_ARGUMENT, "limit", "limit must be an integer from 1 to %d.",
                             LIST_LIMIT_MAX);
            return STEP_DONE;
        }
        f.limit = (int)n;
    }
    if ((s = srv_req_query(req, "cursor")) && *s) {
        if (!id_valid(s)) {
            srv_reply_errorf(req, API_INVALID_ARGUMENT, "cursor",
                             "cursor must be the next_cursor value of a previous page.");
            return STEP_DONE;
        }
        f.before_id = s;
    }
    struct job **jobs = NULL;
    size_t n = 0;
    char next[ID_LEN + 1] = "";
    int rc = store_job_list(srv_req_store(req), &f, &jobs, &n, next);
    if (rc < 0) return srv_reply_errno(req, rc, "The job list");
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(root, "jobs");
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(arr, job_to_json(jobs[i]));
    if (next[0])
        cJSON_AddStringToObject(root, "next_cursor", next);
    else
        cJSON_AddNullToObject(root, "next_cursor");
    store_jobs_free(jobs, n);
    srv_reply_json(req, 200, root);
    return STEP_DONE;
}

/* --- cancel, retry, delete --- */

static enum srv_step h_cancel(struct srv_req *req)
{
    struct srv_req_state *st = srv_req_state(req);
    if (!check_id(req)) return STEP_DONE;
    snprintf(st->id, sizeof st->id, "%s", srv_req_info(req)->id);
    int rc = core_job_cancel(srv_req_core(req), st->id);
    if (rc == -EALREADY) {
        srv_reply_errorf(req, API_CONFLICT, NULL, "Job %s has already finished; there is nothing to cancel.", st->id);
        return STEP_DONE;
    }
    if (rc == -EBUSY) {
        /* Stored but not handed to the dispatcher yet (start-up recovery). */
        srv_reply_errorf(req, API_UNAVAILABLE, NULL, "Job %s is being loaded; retry the cancel in a moment.", st->id);
        return STEP_DONE;
    }
    if (rc < 0) return srv_reply_errno(req, rc, "The job");
    /* Give a running job a moment to stop so the reply usually shows the end. */
    st->ok_status = 200;
    st->deadline_ms = clock_mono_ms() + CANCEL_WAIT_MS;
    return wait_or_finish(req);
}

static enum srv_step retry_committed(struct srv_req *req)
{
    struct srv_req_state *st = srv_req_state(req);
    if (st->rc < 0) return srv_reply_errno(req, st->rc, "The job");
    return reply_job(req, 202, st->job);
}

static enum srv_step h_retry(struct srv_req *req)
{
    struct srv_req_state *st = srv_req_state(req);
    if (!check_id(req)) return STEP_DONE;
    srv_req_ref(req);
    int rc = core_job_retry(srv_req_core(req), srv_req_info(req)->id, srv_req_wake_rc, req, &st->job);
    if (rc < 0) {
        srv_req_unref(req);
        if (rc == -EALREADY) {
            srv_reply_errorf(req, API_CONFLICT, NULL, "Only a failed or cancelled job can be retried.");
            return STEP_DONE;
        }
        if (rc == -EAGAIN) {
            srv_reply_errorf(req, API_QUEUE_FULL, NULL, "The executor's queue is full; retry later.");
            return STEP_DONE;
        }
        if (rc == -EINVAL) {
            srv_reply_errorf(req, API_CONFLICT, NULL, "The job's task cannot run on this server's configuration.");
            return STEP_DONE;
        }
        return srv_reply_errno(req, rc, "The job");
    }
    st->next = retry_committed;
    return STEP_PARK;
}

static enum srv_step delete_committed(struct srv_req *req)
{
    struct srv_req_state *st = srv_req_state(req);
    if (st->rc == -EALREADY) {
        srv_reply_errorf(req, API_CONFLICT, NULL, "Job %s has not finished; cancel it first.", st->id);
        return STEP_DONE;
    }
    if (st->rc < 0) return srv_reply_errno(req, st->rc, "The job");
    srv_reply_empty(req, 204);
    return STEP_DONE;
}

static enum srv_step h_delete(struct srv_req *req)
{
    struct srv_req_state *st = srv_req_state(req);
    if (!check_id(req)) return STEP_DONE;
    snprintf(st->id, sizeof st->id, "%s", srv_req_info(req)->id);
    srv_req_ref(req);
    int rc = core_job_delete(srv_req_core(req), st->id, srv_req_wake_rc, req);
    if (rc < 0) {
        srv_req_unref(req);
        st->rc = rc;
        return delete_committed(req);
    }
    st->next = delete_committed;
    return STEP_PARK;
}

/* --- introspection --- */

static enum srv_step h_tasks(struct srv_req *req)
{
    const struct task_registry *reg = srv_req_tasks(req);
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(root, "tasks");
    for (size_t i = 0; i < task_count(reg); i++) {
        const struct task_def *t = task_at(reg, i);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", t->name);
        cJSON_AddStringToObject(o, "description", t->description ? t->description : "");
        cJSON *kinds = cJSON_AddArrayToObject(o, "kinds");
        for (unsigned k = TASK_KIND_THREAD; k <= TASK_KIND_ASYNC; k <<= 1)
            if (t->kinds & k) cJSON_AddItemToArray(kinds, cJSON_CreateString(task_kind_name(k)));
        cJSON_AddStringToObject(o, "default_executor", task_kind_name(t->default_kind));
        cJSON_AddItemToArray(arr, o);
    }
    srv_reply_json(req, 200, root);
    return STEP_DONE;
}

/* Adds "workers" to executor i's object o: what each worker runs. */
static void add_workers(struct srv_req *req, cJSON *o, int i, int size)
{
    cJSON *arr = cJSON_AddArrayToObject(o, "workers");
    int max = size < WORKERS_MAX ? size : WORKERS_MAX;
    struct core_worker *w = calloc((size_t)max, sizeof *w);
    int n = w ? core_executor_workers(srv_req_core(req), i, w, max) : 0;
    for (int k = 0; k < n; k++) {
        cJSON *x = cJSON_CreateObject();
        cJSON_AddNumberToObject(x, "slot", w[k].slot);
        cJSON_AddNumberToObject(x, "pid", w[k].pid);
        cJSON_AddStringToObject(x, "thread", w[k].thread);
        if (w[k].job_id[0]) {
            char at[CLOCK_RFC3339_LEN];
            clock_format_rfc3339(w[k].started_at_ms, at);
            cJSON_AddStringToObject(x, "job_id", w[k].job_id);
            cJSON_AddStringToObject(x, "task", w[k].task);
            cJSON_AddStringToObject(x, "started_at", at);
        } else {
            cJSON_AddNullToObject(x, "job_id");
            cJSON_AddNullToObject(x, "task");
            cJSON_AddNullToObject(x, "started_at");
        }
        cJSON_AddItemToArray(arr, x);
    }
    free(w);
}

static enum srv_step h_executors(struct srv_req *req)
{
    struct core_executor_stats es[CONFIG_MAX_EXECUTORS];
    int n = core_executor_stats(srv_req_core(req), es, CONFIG_MAX_EXECUTORS);
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(root, "executors");
    for (int i = 0; i < n && i < CONFIG_MAX_EXECUTORS; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", es[i].name);
        cJSON_AddStringToObject(o, "kind", es[i].kind);
        cJSON_AddNumberToObject(o, "size", es[i].size);
        cJSON_AddNumberToObject(o, "busy", es[i].busy);
        cJSON_AddNumberToObject(o, "queued", (double)es[i].queued);
        cJSON_AddNumberToObject(o, "max_queued", (double)es[i].max_queued);
        cJSON_AddNumberToObject(o, "submitted", (double)es[i].submitted);
        cJSON_AddNumberToObject(o, "succeeded", (double)es[i].succeeded);
        cJSON_AddNumberToObject(o, "failed", (double)es[i].failed);
        cJSON_AddNumberToObject(o, "cancelled", (double)es[i].cancelled);
        add_workers(req, o, i, es[i].size);
        cJSON_AddItemToArray(arr, o);
    }
    srv_reply_json(req, 200, root);
    return STEP_DONE;
}

static double round3(double x)
{
    return round(x * 1000.0) / 1000.0;
}

/* Adds "history" to /v1/stats: finished jobs per bucket, for the charts. */
static void add_history(struct srv_req *req, cJSON *root)
{
    struct core_stats_history hist; /* 60 points: ~4 KiB */
    const struct core_stats_history *h = &hist;
    core_get_stats_history(srv_req_core(req), &hist); /* -ENOMEM leaves the percentiles 0 */
    cJSON *o = cJSON_AddObjectToObject(root, "history");
    cJSON_AddNumberToObject(o, "interval_s", CORE_HISTORY_INTERVAL_S);
    cJSON *pts = cJSON_AddArrayToObject(o, "points");
    for (int k = 0; k < CORE_HISTORY_POINTS; k++) {
        const struct core_stats_point *p = &h->points[k];
        char at[CLOCK_RFC3339_LEN];
        clock_format_rfc3339(p->at_ms, at);
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "at", at);
        cJSON_AddNumberToObject(x, "succeeded", (double)p->succeeded);
        cJSON_AddNumberToObject(x, "failed", (double)p->failed);
        cJSON_AddNumberToObject(x, "cancelled", (double)p->cancelled);
        cJSON *w = cJSON_AddObjectToObject(x, "queue_wait_ms");
        cJSON_AddNumberToObject(w, "p50", round3(p->queue_wait_ms_p50));
        cJSON_AddNumberToObject(w, "p95", round3(p->queue_wait_ms_p95));
        cJSON *r = cJSON_AddObjectToObject(x, "run_time_ms");
        cJSON_AddNumberToObject(r, "p50", round3(p->run_time_ms_p50));
        cJSON_AddNumberToObject(r, "p95", round3(p->run_time_ms_p95));
        cJSON_AddItemToArray(pts, x);
    }
}

static enum srv_step h_stats(struct srv_req *req)
{
    struct core_stats s;
    core_get_stats(srv_req_core(req), &s);
    cJSON *root = cJSON_CreateObject();
    cJSON *counts = cJSON_AddObjectToObject(root, "counts");
    for (int i = 0; i < JOB_STATUS_COUNT; i++)
        cJSON_AddNumberToObject(counts, job_status_name((enum job_status)i), (double)s.counts[i]);
    cJSON_AddNumberToObject(root, "throughput_per_s", round3(s.throughput_per_s));
    cJSON *w = cJSON_AddObjectToObject(root, "queue_wait_ms");
    cJSON_AddNumberToObject(w, "p50", round3(s.queue_wait_ms_p50));
    cJSON_AddNumberToObject(w, "p95", round3(s.queue_wait_ms_p95));
    cJSON *r = cJSON_AddObjectToObject(root, "run_time_ms");
    cJSON_AddNumberToObject(r, "p50", round3(s.run_time_ms_p50));
    cJSON_AddNumberToObject(r, "p95", round3(s.run_time_ms_p95));
    add_history(req, root);
    srv_reply_json(req, 200, root);
    return STEP_DONE;
}

static enum srv_step h_healthz(struct srv_req *req)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "status", "ok");
    srv_reply_json(req, 200, root);
    return STEP_DONE;
}

static enum srv_step h_readyz(struct srv_req *req)
{
    if (!core_ready(srv_req_core(req))) {
        srv_reply_errorf(req, API_UNAVAILABLE, NULL, "jobd is starting or draining.");
        return STEP_DONE;
    }
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "status", "ready");
    srv_reply_json(req, 200, root);
    return STEP_DONE;
}

static const char *const q_wait[] = {"wait", NULL};
static const char *const q_list[] = {"status", "task", "executor", "batch", "limit", "cursor", "q", NULL};
static const char *const q_events[] = {"job", "batch", "last_event_id", "timeout", NULL};

const struct srv_route srv_routes[] = {
    {"GET", "/healthz", h_healthz, NULL, false},
    {"GET", "/readyz", h_readyz, NULL, false},
    {"POST", "/v1/jobs", h_submit, q_wait, true},
    {"GET", "/v1/jobs", h_list, q_list, true},
    {"GET", "/v1/jobs/{id}", h_get, q_wait, true},
    {"DELETE", "/v1/jobs/{id}", h_delete, NULL, true},
    {"POST", "/v1/jobs/{id}/cancel", h_cancel, NULL, true},
    {"POST", "/v1/jobs/{id}/retry", h_retry, NULL, true},
    {"POST", "/v1/wait", srv_h_wait, NULL, true},
    {"POST", "/v1/batches", srv_h_batch_create, NULL, true},
    {"GET", "/v1/batches/{id}", srv_h_batch_get, q_wait, true},
    {"GET", "/v1/events", srv_h_events, q_events, true},
    {"GET", "/v1/tasks", h_tasks, NULL, true},
    {"GET", "/v1/executors", h_executors, NULL, true},
    {"GET", "/v1/stats", h_stats, NULL, true},
    {"GET", "/v1/openapi.json", srv_h_openapi, NULL, false},
    {"GET", "/metrics", srv_h_metrics, NULL, true},
    {"GET", "/", srv_h_web_index, NULL, false},
    {"GET", "/app.js", srv_h_web_js, NULL, false},
    {"GET", "/app.css", srv_h_web_css, NULL, false},
};
const int srv_n_routes = (int)(sizeof srv_routes / sizeof *srv_routes);
