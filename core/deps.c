/* deps.c - depends_on: a job waits (LIVE_WAITING) until every dependency
 * has succeeded; a dependency that fails or is cancelled cancels it with
 * dependency_failed, and its end cancels its own dependents in turn. The
 * wait lists are c->deps (core/gates.c); see docs/DESIGN.md, "Futures".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "core_int.h"

static struct live *live_get_locked(struct core *c, const char *id)
{
    struct hnode *hn = hmap_get(&c->live, id);
    return hn ? CONTAINER_OF(hn, struct live, h) : NULL;
}

/* --- dependencies --- */

/* A job whose dependencies all succeeded (moved in; its live entry is
 * LIVE_QUEUED with no job): on the timer heap while its run_at/delay is
 * ahead, else queued now. */
static void make_eligible(struct core *c, struct job *job, int exec_idx)
{
    int64_t now = clock_wall_ms();
    if (job->scheduled_at_ms > now) {
        core__schedule_job(c, job, exec_idx, false);
        return;
    }
    job->status = JOB_QUEUED;
    job->scheduled_at_ms = now; /* eligible from now: its queue wait starts here */
    struct job *copy = job_dup(job);
    if (copy) core__store_update(c, copy, JOB_SCHEDULED, false, NULL, NULL);
    core__dispatch_job(c, job, exec_idx, false);
}

/* Ends a waiting job (moved in; live entry LIVE_FINISHING) as cancelled
 * because dependency dep_id did not succeed. Its own dependents follow when
 * this end commits (terminal_done), so a failure travels down the graph. */
static void cancel_dependency(struct core *c, struct job *job, int exec_idx, const char *dep_id, const char *why)
{
    char msg[160];
    snprintf(msg, sizeof msg, "dependency %s %s", dep_id, why);
    job->status = JOB_CANCELLED;
    job->error_type = JOB_ERR_DEPENDENCY_FAILED;
    job_set_str(&job->error_message, msg);
    job->finished_at_ms = clock_wall_ms();
    atomic_fetch_sub(&c->execs[exec_idx].held, 1);
    atomic_fetch_add(&c->execs[exec_idx].cancelled, 1);
    core_stats_finished(&c->stats, job);
    core_metrics_finished(c, exec_idx, job);
    core__store_update(c, job, JOB_SCHEDULED, true, NULL, NULL);
}

/* Starts the wait of a committed job (moved in) on its depends_on; its live
 * entry exists (LIVE_WAITING, no job yet). Live dependencies are waited on
 * (c->deps); the others have ended, and the database says how. The count
 * starts at 1 - held by this function - so that a dependency ending
 * meanwhile cannot release the job before every dependency is counted. */
void core__deps_register(struct core *c, struct job *job, int exec_idx)
{
    cJSON *deps = cJSON_Parse(job->depends_on);
    int n = cJSON_GetArraySize(deps), n_ended = 0;
    const char **ended = calloc((size_t)n + 1, sizeof *ended);
    char id[ID_LEN + 1];
    memcpy(id, job->id, sizeof id);
    bool oom = !deps || !ended;

    pthread_mutex_lock(&c->lock);
    struct live *l = live_get_locked(c, id);
    if (l) {
        l->state = LIVE_WAITING;
        l->exec_idx = exec_idx;
        l->job = job;
        l->deps_left = 1;
        for (const cJSON *d = deps ? deps->child : NULL; d && !oom; d = d->next) {
            if (!cJSON_IsString(d)) continue;
            if (hmap_get(&c->live, d->valuestring)) {
                if (core_dep_add_locked(c, d->valuestring, id) < 0) oom = true;
                else l->deps_left++;
            } else {
                ended[n_ended++] = d->valuestring;
            }
        }
    }
    pthread_mutex_unlock(&c->lock);
    if (!l) {
        job_free(job);
        goto out;
    }
    if (oom) LOG_ERROR("job %s: out of memory registering its dependencies; it stays scheduled until restart", id);

    /* Ended dependencies: their terminal state is committed. */
    const char *failed_dep = NULL, *why = NULL;
    for (int i = 0; i < n_ended && !failed_dep; i++) {
        struct job *d = NULL;
        int rc = store_job_get(c->store, ended[i], &d);
        if (rc == -ENOENT) failed_dep = ended[i], why = "no longer exists";
        else if (rc < 0) failed_dep = ended[i], why = "could not be read";
        else if (d->status == JOB_FAILED) failed_dep = ended[i], why = "failed";
        else if (d->status == JOB_CANCELLED) failed_dep = ended[i], why = "was cancelled";
        job_free(d);
    }

    struct job *go = NULL;
    pthread_mutex_lock(&c->lock);
    l = live_get_locked(c, id);
    if (l && l->state == LIVE_WAITING && !oom) {
        if (failed_dep || --l->deps_left == 0) {
            go = l->job;
            l->job = NULL;
            l->state = failed_dep ? LIVE_FINISHING : LIVE_QUEUED;
        }
    }
    pthread_mutex_unlock(&c->lock);
    if (go && failed_dep) cancel_dependency(c, go, exec_idx, failed_dep, why);
    else if (go) make_eligible(c, go, exec_idx);
out:
    free(ended);
    cJSON_Delete(deps);
}

/* Job `id` ended with `status` (committed): its dependents go on when it
 * succeeded, else they are cancelled (dependency_failed). Writer thread. */
void core__deps_fire(struct core *c, const char *id, enum job_status status)
{
    pthread_mutex_lock(&c->lock);
    struct depwait *dw = core_dep_take_locked(c, id);
    pthread_mutex_unlock(&c->lock);
    for (size_t i = 0; dw && i < dw->n; i++) {
        struct job *go = NULL;
        int idx = 0;
        pthread_mutex_lock(&c->lock);
        struct live *l = live_get_locked(c, dw->dependents[i]);
        if (l && l->state == LIVE_WAITING) { /* else cancelled meanwhile */
            if (status != JOB_SUCCEEDED || --l->deps_left == 0) {
                go = l->job;
                idx = l->exec_idx;
                l->job = NULL;
                l->state = status == JOB_SUCCEEDED ? LIVE_QUEUED : LIVE_FINISHING;
            }
        }
        pthread_mutex_unlock(&c->lock);
        if (!go) continue;
        if (status == JOB_SUCCEEDED) make_eligible(c, go, idx);
        else cancel_dependency(c, go, idx, id, status == JOB_FAILED ? "failed" : "was cancelled");
    }
    core_depwait_free(dw);
}

