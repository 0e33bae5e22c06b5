/* batches.c - POST /v1/batches: validating a batch all or nothing, and
 * committing it with its jobs in one transaction.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "core_int.h"

cJSON *core_batch_to_json(const struct store_batch *b)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "id", b->id);
    cJSON_AddNumberToObject(o, "total", (double)b->total);
    cJSON *counts = cJSON_AddObjectToObject(o, "counts");
    for (int i = 0; i < JOB_STATUS_COUNT; i++)
        cJSON_AddNumberToObject(counts, job_status_name((enum job_status)i), (double)b->counts[i]);
    cJSON_AddBoolToObject(o, "done", b->finished_at_ms > 0);
    job_json_add_time(o, "created_at", b->created_at_ms);
    job_json_add_time(o, "finished_at", b->finished_at_ms);
    if (b->callback_url) cJSON_AddStringToObject(o, "callback_url", b->callback_url);
    else cJSON_AddNullToObject(o, "callback_url");
    if (b->callback_status) cJSON_AddStringToObject(o, "callback_status", b->callback_status);
    else cJSON_AddNullToObject(o, "callback_status");
    if (b->idempotency_key) cJSON_AddStringToObject(o, "idempotency_key", b->idempotency_key);
    else cJSON_AddNullToObject(o, "idempotency_key");
    return o;
}

/* Replaces the batch indexes in each job's depends_on by the ids of those
 * jobs and refuses a cycle among them (depth-first search, colours). */
static int resolve_batch_deps(struct job **jobs, size_t n, struct api_err *err)
{
    int rc = -1;
    size_t **adj = calloc(n, sizeof *adj), *deg = calloc(n, sizeof *deg);
    unsigned char *colour = calloc(n, 1);
    size_t *stack = calloc(n, sizeof *stack), *pos = calloc(n, sizeof *pos);
    if (!adj || !deg || !colour || !stack || !pos) {
        api_err_set(err, API_INTERNAL, NULL, "The server ran out of memory.");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        cJSON *deps = cJSON_Parse(jobs[i]->depends_on);
        bool changed = false;
        int k = cJSON_GetArraySize(deps);
        if (k > 0 && !(adj[i] = calloc((size_t)k, sizeof *adj[i]))) {
            cJSON_Delete(deps);
            api_err_set(err, API_INTERNAL, NULL, "The server ran out of memory.");
            goto out;
        }
        for (cJSON *d = deps ? deps->child : NULL; d; d = d->next) {
            if (!cJSON_IsNumber(d)) continue;
            size_t j = (size_t)d->valuedouble;
            adj[i][deg[i]++] = j;
            cJSON *id = cJSON_CreateString(jobs[j]->id);
            if (id) cJSON_ReplaceItemViaPointer(deps, d, id), d = id;
            changed = true;
        }
        if (changed) {
            char *text = cJSON_PrintUnformatted(deps);
            if (text) {
                free(jobs[i]->depends_on);
                jobs[i]->depends_on = strdup(text);
                cJSON_free(text);
            }
            if (!text || !jobs[i]->depends_on) {
                cJSON_Delete(deps);
                api_err_set(err, API_INTERNAL, NULL, "The server ran out of memory.");
                goto out;
            }
        }
        cJSON_Delete(deps);
    }
    /* Iterative DFS: colour 1 = on the stack, 2 = done. */
    for (size_t s = 0; s < n; s++) {
        if (colour[s]) continue;
        size_t top = 0;
        stack[top++] = s;
        colour[s] = 1;
        pos[s] = 0;
        while (top) {
            size_t v = stack[top - 1];
            if (pos[v] < deg[v]) {
                size_t w = adj[v][pos[v]++];
                if (colour[w] == 1) {
                    char field[64];
                    snprintf(field, sizeof field, "jobs[%zu].depends_on", v);
                    api_err_set(err, API_INVALID_ARGUMENT, field,
                                "The batch's dependencies form a cycle: jobs[%zu] depends on jobs[%zu], which "
                                "(through the others) depends on jobs[%zu]; no job of a cycle could ever run.",
                                v, w, v);
                    goto out;
                }
                if (!colour[w]) {
                    colour[w] = 1;
                    pos[w] = 0;
                    stack[top++] = w;
                }
            } else {
                colour[v] = 2;
                top--;
            }
        }
    }
    rc = 0;
out:
    for (size_t i = 0; adj && i < n; i++) free(adj[i]);
    free(adj);
    free(deg);
    free(colour);
    free(stack);
    free(pos);
    return rc;
}

int core_batch_from_json(struct core *c, const cJSON *body, const char *header_key, struct store_batch *batch,
                         struct job ***out_jobs, size_t *out_n, struct api_err *err)
{
    struct job **jobs = NULL;
    size_t n = 0;
    int rc = -1;
    memset(batch, 0, sizeof *batch);
    if (!cJSON_IsObject(body))
        return api_err_set(err, API_INVALID_ARGUMENT, NULL,
                           "A batch must be a JSON object like {\"jobs\": [{\"task\": \"noop\"}]}.");
    for (const cJSON *f = body->child; f; f = f->next) {
        if (strcmp(f->string, "jobs") != 0 && strcmp(f->string, "callback_url") != 0 &&
            strcmp(f->string, "idempotency_key") != 0)
            return api_err_set(err, API_INVALID_ARGUMENT, f->string,
                               "Unknown field %.64s; a batch takes jobs, callback_url and idempotency_key.", f->string);
    }
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(body, "jobs");
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) < 1 || cJSON_GetArraySize(arr) > CORE_BATCH_MAX)
        return api_err_set(err, API_INVALID_ARGUMENT, "jobs", "jobs must be an array of 1 to %d job specs.",
                           CORE_BATCH_MAX);
    const cJSON *url = cJSON_GetObjectItemCaseSensitive(body, "callback_url");
    if (url && !cJSON_IsNull(url)) {
        if (!cJSON_IsString(url) || (strncmp(url->valuestring, "http://", 7) != 0 &&
                                     strncmp(url->valuestring, "https://", 8) != 0) ||
            strlen(url->valuestring) > 2000 || strpbrk(url->valuestring, " \t\r\n"))
            return api_err_set(err, API_INVALID_ARGUMENT, "callback_url",
                               "callback_url must be an absolute http:// or https:// URL without spaces.");
        if (!(batch->callback_url = strdup(url->valuestring))) goto oom;
    }
    const cJSON *key = cJSON_GetObjectItemCaseSensitive(body, "idempotency_key");
    if (key && !cJSON_IsNull(key)) {
        if (!cJSON_IsString(key) || !key->valuestring[0] || strlen(key->valuestring) > 200) {
            api_err_set(err, API_INVALID_ARGUMENT, "idempotency_key",
                        "idempotency_key must be a non-empty string of at most 200 bytes.");
            goto out;
        }
        if (header_key && strcmp(header_key, key->valuestring) != 0) {
            api_err_set(err, API_INVALID_ARGUMENT, "idempotency_key",
                        "The Idempotency-Key header and the body's idempotency_key differ.");
            goto out;
        }
        if (!(batch->idempotency_key = strdup(key->valuestring))) goto oom;
    } else if (header_key) {
        if (!header_key[0] || strlen(header_key) > 200) {
            api_err_set(err, API_INVALID_ARGUMENT, "idempotency_key",
                        "The Idempotency-Key header must be 1 to 200 bytes.");
            goto out;
        }
        if (!(batch->idempotency_key = strdup(header_key))) goto oom;
    }

    size_t total = (size_t)cJSON_GetArraySize(arr);
    if (!(jobs = calloc(total, sizeof *jobs))) goto oom;
    id_new(batch->id);
    batch->created_at_ms = clock_wall_ms();
    batch->total = (int64_t)total;
    for (const cJSON *spec = arr->child; spec; spec = spec->next, n++) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "jobs[%zu].", n);
        if (core__job_from_json(c, spec, prefix, total, n, &jobs[n], err) < 0) goto out;
        if (jobs[n]->idempotency_key) {
            n++;
            char field[64];
            snprintf(field, sizeof field, "jobs[%zu].idempotency_key", n - 1);
            api_err_set(err, API_INVALID_ARGUMENT, field,
                        "Jobs of a batch take no idempotency_key of their own; give the batch one "
                        "(idempotency_key or the Idempotency-Key header).");
            goto out;
        }
        if (job_set_str(&jobs[n]->batch_id, batch->id) < 0) {
            n++;
            goto oom;
        }
    }
    if (resolve_batch_deps(jobs, n, err) < 0) goto out;
    *out_jobs = jobs;
    *out_n = n;
    jobs = NULL;
    rc = 0;
    goto out;
oom:
    api_err_set(err, API_INTERNAL, NULL, "The server ran out of memory.");
out:
    for (size_t i = 0; jobs && i < n; i++) job_free(jobs[i]);
    free(jobs);
    if (rc < 0) store_batch_clear(batch);
    return rc;
}

struct batch_op {
    struct core *c;
    int *exec_of; /* [n]: each job's executor */
    core_done_cb cb;
    void *ctx;
};

/* The batch committed (writer thread): every job is made live first, then
 * set on its way, so a job that depends on a later one of the batch finds it
 * live. */
static void batch_done(void *arg, int rc, struct job **jobs, size_t n)
{
    struct batch_op *op = arg;
    struct core *c = op->c;
    for (size_t i = 0; i < n; i++) {
        struct core_exec *ce = &c->execs[op->exec_of[i]];
        if (rc < 0 || !core__live_add(c, jobs[i], op->exec_of[i], core__live_state_of(jobs[i]))) {
            if (rc == 0) LOG_ERROR("job %s: out of memory; it stays pending in the database until restart", jobs[i]->id);
            atomic_fetch_sub(&ce->held, 1);
            job_free(jobs[i]);
            jobs[i] = NULL;
            continue;
        }
        core_stats_transition(&c->stats, -1, (int)jobs[i]->status);
        core_metrics_submitted(c, op->exec_of[i], jobs[i]);
    }
    for (size_t i = 0; i < n; i++)
        if (jobs[i]) core__start_pending(c, jobs[i], op->exec_of[i], true);
    free(jobs);
    if (op->cb) op->cb(op->ctx, rc, NULL);
    free(op->exec_of);
    free(op);
}

int core_batch_submit(struct core *c, const struct store_batch *batch, struct job **jobs, size_t n, core_done_cb cb,
                      void *ctx)
{
    int rc = 0;
    long *want = calloc((size_t)c->n_execs, sizeof *want);
    struct batch_op *op = calloc(1, sizeof *op);
    size_t took = 0;
    if (!want || !op || !(op->exec_of = calloc(n, sizeof *op->exec_of))) {
        rc = -ENOMEM;
        goto fail;
    }
    if (atomic_load(&c->draining)) {
        rc = -ESHUTDOWN;
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        int idx = core__exec_index(c, jobs[i]->executor);
        if (idx < 0) {
            rc = -EINVAL;
            goto fail;
        }
        op->exec_of[i] = idx;
        want[idx]++;
    }
    /* All or nothing against each executor's max_queued. */
    for (int e = 0; e < c->n_execs; e++, took++) {
        if (!want[e]) continue;
        if (atomic_fetch_add(&c->execs[e].held, want[e]) + want[e] > c->execs[e].cfg.max_queued) {
            atomic_fetch_sub(&c->execs[e].held, want[e]);
            rc = -EAGAIN;
            goto fail;
        }
    }
    op->c = c;
    op->cb = cb;
    op->ctx = ctx;
    rc = store_batch_insert(c->store, batch, jobs, n, batch_done, op);
    jobs = NULL; /* moved, even on error */
    if (rc < 0) {
        for (int e = 0; e < c->n_execs; e++) atomic_fetch_sub(&c->execs[e].held, want[e]);
        goto fail_freed;
    }
    free(want);
    return 0;
fail:
    for (size_t e = 0; e < took && e < (size_t)c->n_execs; e++) atomic_fetch_sub(&c->execs[e].held, want[e]);
    for (size_t i = 0; jobs && i < n; i++) job_free(jobs[i]);
    free(jobs);
fail_freed:
    if (op) free(op->exec_of);
    free(op);
    free(want);
    return rc;
}
