/* futures.c - the handlers that coordinate many jobs: POST /v1/wait
 * (concurrent.futures.wait), POST /v1/batches and GET /v1/batches/{id}
 * (executor.map / gather, and a barrier on their end).
 *
 * Like every handler they are steps (server.h): a wait registers one waker
 * in the core - a waitset, or a waiter on the batch id - and parks, holding
 * no thread.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/clock.h"
#include "../common/hash.h"
#include "../common/log.h"
#include "server.h"

#define WAIT_MAX_IDS 10000

/* --- POST /v1/wait --- */

struct wait_state {
    char (*ids)[ID_LEN + 1]; /* distinct, in request order */
    size_t *at;              /* [n]: where each one first appears in the request's ids */
    size_t n;
    struct core_waitset *ws;
};

static void wait_state_free(void *p)
{
    struct wait_state *w = p;
    if (!w) return;
    free(w->ids);
    free(w->at);
    free(w);
}

/* Replies {"done": [...], "not_done": [...]} from the jobs as they are now. */
static enum srv_step wait_reply(struct srv_req *req)
{
    struct wait_state *w = srv_req_state(req)->ext;
    if (w->ws) {
        core_waitset_close(w->ws); /* false: firing now; the core frees it after */
        w->ws = NULL;
    }
    cJSON *root = cJSON_CreateObject();
    cJSON *done = cJSON_AddArrayToObject(root, "done"), *not_done = cJSON_AddArrayToObject(root, "not_done");
    for (size_t i = 0; i < w->n; i++) {
        struct job *job = NULL;
        int rc = store_job_get(srv_req_store(req), w->ids[i], &job);
        if (rc < 0) { /* deleted meanwhile: it had finished */
            if (rc != -ENOENT) {
                cJSON_Delete(root);
                return srv_reply_errno(req, rc, "The job");
            }
            continue;
        }
        cJSON_AddItemToArray(job_status_terminal(job->status) ? done : not_done, job_to_json(job));
        job_free(job);
    }
    srv_reply_json(req, 200, root);
    return STEP_DONE;
}

enum srv_step srv_h_wait(struct srv_req *req)
{
    struct srv_req_state *st = srv_req_state(req);
    const struct config *cfg = srv_req_config(req);
    cJSON *body = srv_parse_body(req, "{\"ids\": [\"...\"], \"return_when\": \"ALL_COMPLETED\", \"timeout\": 10}");
    struct wait_state *w = NULL;
    enum core_return_when when = CORE_ALL_COMPLETED;
    double timeout_s = (double)cfg->max_wait_ms / 1000.0;
    size_t *not_live = NULL, n_not_live = 0;
    enum srv_step r = STEP_DONE;
    if (!body) return STEP_DONE;
    if (!cJSON_IsObject(body)) {
        srv_reply_errorf(req, API_INVALID_ARGUMENT, NULL,
                         "The body must be a JSON object like {\"ids\": [...], \"return_when\": \"ALL_COMPLETED\"}.");
        goto out;
    }
    for (const cJSON *f = body->child; f; f = f->next) {
        if (strcmp(f->string, "ids") && strcmp(f->string, "return_when") && strcmp(f->string, "timeout")) {
            srv_reply_errorf(req, API_INVALID_ARGUMENT, f->string,
                             "Unknown field %.64s; a wait takes ids, return_when and timeout.", f->string);
            goto out;
        }
    }
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(body, "ids");
    if (!cJSON_IsArray(ids) || cJSON_GetArraySize(ids) < 1 || cJSON_GetArraySize(ids) > WAIT_MAX_IDS) {
        srv_reply_errorf(req, API_INVALID_ARGUMENT, "ids", "ids must be an array of 1 to %d job ids.", WAIT_MAX_IDS);
        goto out;
    }
    const cJSON *rw = cJSON_GetObjectItemCaseSensitive(body, "return_when");
    if (rw && !cJSON_IsNull(rw)) {
        if (cJSON_IsString(rw) && strcmp(rw->valuestring, "ALL_COMPLETED") == 0) when = CORE_ALL_COMPLETED;
        else if (cJSON_IsString(rw) && strcmp(rw->valuestring, "FIRST_COMPLETED") == 0) when = CORE_FIRST_COMPLETED;
        else if (cJSON_IsString(rw) && strcmp(rw->valuestring, "FIRST_EXCEPTION") == 0) when = CORE_FIRST_EXCEPTION;
        else {
            srv_reply_errorf(req, API_INVALID_ARGUMENT, "return_when",
                             "return_when must be ALL_COMPLETED, FIRST_COMPLETED or FIRST_EXCEPTION.");
            goto out;
        }
    }
    const cJSON *to = cJSON_GetObjectItemCaseSensitive(body, "timeout");
    if (to && !cJSON_IsNull(to)) {
        double max = (double)cfg->max_wait_ms / 1000.0;
        if (!cJSON_IsNumber(to) || !isfinite(to->valuedouble) || to->valuedouble < 0 || to->valuedouble > max) {
            srv_reply_errorf(req, API_INVALID_ARGUMENT, "timeout", "timeout must be a number of seconds from 0 to %g.",
                             max);
            goto out;
        }
        timeout_s = to->valuedouble;
    }
    if (!(w = calloc(1, sizeof *w))) {
        r = srv_reply_errno(req, -ENOMEM, "The wait");
        goto out;
    }
    st->ext = w;
    st->ext_free = wait_state_free;
    if (!(w->ids = calloc((size_t)cJSON_GetArraySize(ids), sizeof *w->ids)) ||
        !(w->at = calloc((size_t)cJSON_GetArraySize(ids), sizeof *w->at))) {
        r = srv_reply_errno(req, -ENOMEM, "The wait");
        goto out;
    }
    /* Duplicates found with a hash set of the ids kept so far (up to 10,000
     * ids: comparing each with every earlier one was 50 M strcmp). */
    size_t cap = 16;
    while (cap < 2 * (size_t)cJSON_GetArraySize(ids)) cap <<= 1;
    size_t *set = calloc(cap, sizeof *set); /* index into w->ids + 1; 0 = empty */
    if (!set) {
        r = srv_reply_errno(req, -ENOMEM, "The wait");
        goto out;
    }
    int i = 0;
    for (const cJSON *e = ids->child; e; e = e->next, i++) {
        if (!cJSON_IsString(e) || !id_valid(e->valuestring)) {
            char field[32];
            snprintf(field, sizeof field, "ids[%d]", i);
            srv_reply_errorf(req, API_INVALID_ARGUMENT, field, "%s must be a job id (26 characters).", field);
            free(set);
            goto out;
        }
        size_t k = hash_str(e->valuestring) & (cap - 1);
        while (set[k] && strcmp(w->ids[set[k] - 1], e->valuestring) != 0) k = (k + 1) & (cap - 1);
        if (set[k]) continue; /* given before */
        set[k] = w->n + 1;
        w->at[w->n] = (size_t)i;
        memcpy(w->ids[w->n++], e->valuestring, ID_LEN + 1);
    }
    free(set);

    /* Register first, then read: a job that ends in between is counted by its waiter. */
    const char **idp = calloc(w->n, sizeof *idp);
    if (!idp) {
        r = srv_reply_errno(req, -ENOMEM, "The wait");
        goto out;
    }
    for (size_t k = 0; k < w->n; k++) idp[k] = w->ids[k];
    int rc = core_waitset_open(srv_req_core(req), idp, w->n, when, &w->ws, &not_live, &n_not_live);
    free(idp);
    if (rc < 0) {
        r = srv_reply_errno(req, rc, "The wait");
        goto out;
    }
    for (size_t k = 0; k < n_not_live; k++) {
        struct job *job = NULL;
        size_t at = not_live[k];
        rc = store_job_get(srv_req_store(req), w->ids[at], &job);
        if (rc == -ENOENT) {
            char field[32];
            snprintf(field, sizeof field, "ids[%zu]", w->at[at]);
            srv_reply_errorf(req, API_NOT_FOUND, field, "No job has the id %s.", w->ids[at]);
            goto out;
        }
        if (rc < 0) {
            r = srv_reply_errno(req, rc, "The job");
            goto out;
        }
        if (job_status_terminal(job->status)) core_waitset_done(w->ws, job->status);
        job_free(job);
    }
    srv_req_ref(req);
    if (core_waitset_arm(w->ws, clock_mono_ms() + (int64_t)(timeout_s * 1000.0), srv_req_wake_cb, req)) {
        srv_req_unref(req); /* holds already (or draining): no callback */
        r = wait_reply(req);
        goto out;
    }
    st->next = wait_reply;
    r = STEP_PARK;
out:
    if (r == STEP_DONE && w && w->ws) {
        core_waitset_close(w->ws);
        w->ws = NULL;
    }
    free(not_live);
    cJSON_Delete(body);
    return r;
}

/* --- POST /v1/batches --- */

struct batch_state {
    struct store_batch b;
    struct job **jobs; /* copies for the reply */
    size_t n;
};

static void batch_state_free(void *p)
{
    struct batch_state *bs = p;
    if (!bs) return;
    store_batch_clear(&bs->b);
    for (size_t i = 0; i < bs->n; i++) job_free(bs->jobs[i]);
    free(bs->jobs);
    free(bs);
}

/* The batch as a repeat of an earlier request: the batch and its jobs, oldest first. */
static enum srv_step reply_existing_batch(struct srv_req *req, const char *key)
{
    struct store_batch b;
    int rc = store_batch_get(srv_req_store(req), key, true, &b);
    if (rc < 0) return srv_reply_errno(req, rc, "The batch");
    cJSON *root = core_batch_to_json(&b);
    cJSON *arr = cJSON_CreateArray();
    struct store_filter f = {.batch_id = b.id, .limit = 1000};
    char cursor[ID_LEN + 1] = "";
    do {
        struct job **jobs = NULL;
        size_t n = 0;
        f.before_id = cursor[0] ? cursor : NULL;
        char next[ID_LEN + 1];
        if ((rc = store_job_list(srv_req_store(req), &f, &jobs, &n, next)) < 0) break;
        for (size_t i = 0; i < n; i++) cJSON_InsertItemInArray(arr, 0, job_to_json(jobs[i]));
        store_jobs_free(jobs, n);
        memcpy(cursor, next, sizeof cursor);
    } while (cursor[0]);
    store_batch_clear(&b);
    if (rc < 0) {
        cJSON_Delete(root);
        cJSON_Delete(arr);
        return srv_reply_errno(req, rc, "The batch");
    }
    cJSON_AddItemToObject(root, "jobs", arr);
    srv_reply_json(req, 200, root);
    return STEP_DONE;
}

static enum srv_step batch_committed(struct srv_req *req)
{
    struct srv_req_state *st = srv_req_state(req);
    struct batch_state *bs = st->ext;
    if (st->rc == -EEXIST && bs->b.idempotency_key) return reply_existing_batch(req, bs->b.idempotency_key);
    if (st->rc < 0) return srv_reply_errno(req, st->rc, "The batch");
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "id", bs->b.id);
    cJSON_AddNumberToObject(root, "total", (double)bs->n);
    cJSON *arr = cJSON_AddArrayToObject(root, "jobs");
    for (size_t i = 0; i < bs->n; i++) cJSON_AddItemToArray(arr, job_to_json(bs->jobs[i]));
    srv_reply_json(req, 202, root);
    char loc[64];
    snprintf(loc, sizeof loc, "/v1/batches/%s", bs->b.id);
    srv_reply_header(req, "Location", loc);
    return STEP_DONE;
}

enum srv_step srv_h_batch_create(struct srv_req *req)
{
    struct srv_req_state *st = srv_req_state(req);
    struct api_err err = {0};
    struct job **jobs = NULL;
    size_t n = 0;
    cJSON *body = srv_parse_body(req, "{\"jobs\": [{\"task\": \"noop\"}]}");
    if (!body) return STEP_DONE;
    struct batch_state *bs = calloc(1, sizeof *bs);
    if (!bs) {
        cJSON_Delete(body);
        return srv_reply_errno(req, -ENOMEM, "The batch");
    }
    st->ext = bs;
    st->ext_free = batch_state_free;
    int rc = core_batch_from_json(srv_req_core(req), body, srv_req_header(req, "Idempotency-Key"), &bs->b, &jobs, &n,
                                  &err);
    cJSON_Delete(body);
    if (rc < 0) {
        srv_reply_error(req, &err);
        return STEP_DONE;
    }
    if (bs->b.idempotency_key) {
        struct store_batch first;
        if (store_batch_get(srv_req_store(req), bs->b.idempotency_key, true, &first) == 0) {
            store_batch_clear(&first);
            for (size_t i = 0; i < n; i++) job_free(jobs[i]);
            free(jobs);
            return reply_existing_batch(req, bs->b.idempotency_key);
        }
    }
    if (!(bs->jobs = calloc(n, sizeof *bs->jobs))) goto oom;
    for (; bs->n < n; bs->n++)
        if (!(bs->jobs[bs->n] = job_dup(jobs[bs->n]))) goto oom;
    srv_req_ref(req);
    rc = core_batch_submit(srv_req_core(req), &bs->b, jobs, n, srv_req_wake_rc, req);
    if (rc < 0) {
        srv_req_unref(req);
        if (rc == -EAGAIN) {
            srv_reply_errorf(req, API_QUEUE_FULL, NULL,
                             "The batch would take an executor past its maximum of queued jobs; retry later or "
                             "send fewer jobs.");
            return STEP_DONE;
        }
        return srv_reply_errno(req, rc, "The batch");
    }
    st->next = batch_committed;
    return STEP_PARK;
oom:
    for (size_t i = 0; i < n; i++) job_free(jobs[i]);
    free(jobs);
    return srv_reply_errno(req, -ENOMEM, "The batch");
}

/* --- GET /v1/batches/{id}[?wait=S] --- */

/* Reads the batch and replies, unless it is not done and the wait goes on:
 * then it registers a waiter on the batch id (fired by the batch's end) and
 * parks. */
static enum srv_step batch_get_step(struct srv_req *req)
{
    struct srv_req_state *st = srv_req_state(req);
    struct core *c = srv_req_core(req);
    uint64_t token = 0;
    bool registered = false;
    if (st->deadline_ms > 0 && clock_mono_ms() < st->deadline_ms) {
        srv_req_ref(req);
        if (core_wait_job(c, st->id, st->deadline_ms, srv_req_wake_cb, req, &token) == 0) registered = true;
        else srv_req_unref(req);
    }
    struct store_batch b;
    int rc = store_batch_get(srv_req_store(req), st->id, false, &b);
    if (rc < 0 || b.finished_at_ms > 0 || !registered) {
        if (registered && core_wait_cancel(c, st->id, token)) srv_req_unref(req);
        if (rc == -ENOENT) {
            srv_reply_errorf(req, API_NOT_FOUND, NULL, "No batch with id '%s'.", st->id);
            return STEP_DONE;
        }
        if (rc < 0) return srv_reply_errno(req, rc, "The batch");
        srv_reply_json(req, 200, core_batch_to_json(&b));
        store_batch_clear(&b);
        return STEP_DONE;
    }
    store_batch_clear(&b);
    st->deadline_ms = 0; /* woken: read once more and reply */
    st->next = batch_get_step;
    return STEP_PARK;
}

enum srv_step srv_h_batch_get(struct srv_req *req)
{
    struct srv_req_state *st = srv_req_state(req);
    const char *id = srv_req_info(req)->id;
    int64_t wait_ms;
    if (!id || !id_valid(id)) {
        srv_reply_errorf(req, API_NOT_FOUND, NULL, "No batch with id '%.40s'.", id ? id : "");
        return STEP_DONE;
    }
    if (srv_parse_wait(req, &wait_ms) < 0) return STEP_DONE;
    snprintf(st->id, sizeof st->id, "%s", id);
    st->deadline_ms = wait_ms > 0 ? clock_mono_ms() + wait_ms : 0;
    return batch_get_step(req);
}
