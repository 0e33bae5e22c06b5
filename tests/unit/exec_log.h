/* exec_log.h - the recording hooks of the executor tests (test_exec.c,
 * test_async.c, test_process.c).
 *
 * Hooks run on an executor's own threads (its workers, its loop thread, its
 * I/O thread, or the canceller's for a queued job), so they never CHECK: they
 * copy what they saw into a `struct log` guarded by lg->mu, broadcast lg->cv
 * (CLOCK_MONOTONIC), and free the job they own. The test waits on that
 * condition with a deadline (log_wait, WAIT_STARTED, WAIT_DONE; never a bare
 * sleep) and reads the log once exec_free() has joined the executor, or under
 * lg->mu (log_count) before.
 *
 * Two modes:
 *   - records: started[] and done[] keep the first REC_MAX calls in order;
 *   - bulk (log_bulk): for many jobs, counts[i] and outcomes[i] say how many
 *     done calls ids[i] had and the last outcome; started[] stays empty.
 *
 * A test includes this once, after harness.h; REC_MAX may be defined before.
 * Everything is static inline so that a test needs only what it calls.
 */
#ifndef JOBD_EXEC_LOG_H
#define JOBD_EXEC_LOG_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../common/clock.h"
#include "../../common/id.h"
#include "../../common/job.h"
#include "../../executors/exec.h"

#ifndef REC_MAX
#define REC_MAX 64 /* calls kept in started[] and done[] */
#endif
#define LOG_PROGRESS_MAX 64 /* progress calls whose time and fraction are kept */

/* One started or done call: a copy of the job as the hook saw it. */
struct rec {
    char id[ID_LEN + 1];
    enum exec_outcome outcome; /* done only */
    enum job_status status;
    int attempt, pid;
    char thread[32];
    enum job_error_type error_type;
    char error[200];
    char result[64];
    bool has_result;
    int64_t started_ms, finished_ms, at_mono_ms; /* at_mono_ms: when the hook ran */
};

/* Every field is guarded by mu. */
struct log {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    int n_started, n_done;
    int running, max_running; /* started and not yet done, as the hooks see it */
    struct rec started[REC_MAX], done[REC_MAX];
    int64_t last_done_mono_ms;
    /* bulk mode: ids sorted ascending; counts[i] = done calls for ids[i],
     * outcomes[i] = the outcome of the last one */
    char (*ids)[ID_LEN + 1];
    int n_ids;
    int *counts;
    enum exec_outcome *outcomes;
    int unknown_done, bulk_not_ok;
    /* progress: every call counted; the first LOG_PROGRESS_MAX timed; the last kept */
    int n_progress;
    int64_t progress_ms[LOG_PROGRESS_MAX];
    double progress_fraction[LOG_PROGRESS_MAX];
    char progress_id[ID_LEN + 1];
    double progress_last;
    /* slow-done mode: the done hook of a non-drained job waits (up to 500 ms)
     * for the test to say exec_drain returned, and records whether it had */
    bool slow_done, drain_returned, done_saw_drain_returned;
};

static inline void log_init_(struct log *lg)
{
    memset(lg, 0, sizeof *lg);
    pthread_mutex_init(&lg->mu, NULL);
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&lg->cv, &a);
    pthread_condattr_destroy(&a);
}

static inline void log_fini(struct log *lg)
{
    pthread_mutex_destroy(&lg->mu);
    pthread_cond_destroy(&lg->cv);
}

static inline void fill_rec(struct rec *r, const struct job *job)
{
    memcpy(r->id, job->id, sizeof r->id);
    r->status = job->status;
    r->attempt = job->attempt;
    r->pid = job->worker_pid;
    snprintf(r->thread, sizeof r->thread, "%s", job->worker_thread ? job->worker_thread : "");
    r->error_type = job->error_type;
    snprintf(r->error, sizeof r->error, "%s", job->error_message ? job->error_message : "");
    r->has_result = job->result != NULL;
    snprintf(r->result, sizeof r->result, "%s", job->result ? job->result : "");
    r->started_ms = job->started_at_ms;
    r->finished_ms = job->finished_at_ms;
    r->at_mono_ms = clock_mono_ms();
}

static inline void hook_started(void *ctx, const struct job *job)
{
    struct log *lg = ctx;
    pthread_mutex_lock(&lg->mu);
    if (!lg->counts && lg->n_started < REC_MAX) fill_rec(&lg->started[lg->n_started], job);
    lg->n_started++;
    if (++lg->running > lg->max_running) lg->max_running = lg->running;
    pthread_cond_broadcast(&lg->cv);
    pthread_mutex_unlock(&lg->mu);
}

static inline int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

static inline void hook_done(void *ctx, struct job *job, enum exec_outcome outcome)
{
    struct log *lg = ctx;
    pthread_mutex_lock(&lg->mu);
    if (lg->slow_done && outcome != EXEC_DRAINED) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 500 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        while (!lg->drain_returned && pthread_cond_timedwait(&lg->cv, &lg->mu, &ts) == 0) {
        }
        lg->done_saw_drain_returned = lg->drain_returned;
    }
    if (job->started_at_ms > 0) lg->running--; /* a started job (not one cancelled or drained while queued) */
    if (lg->counts) {
        char(*hit)[ID_LEN + 1] = bsearch(job->id, lg->ids, (size_t)lg->n_ids, sizeof *lg->ids, cmp_id);
        if (hit) {
            lg->counts[hit - lg->ids]++;
            lg->outcomes[hit - lg->ids] = outcome;
        } else {
            lg->unknown_done++;
        }
        if (outcome != EXEC_OK) lg->bulk_not_ok++;
    } else if (lg->n_done < REC_MAX) {
        fill_rec(&lg->done[lg->n_done], job);
        lg->done[lg->n_done].outcome = outcome;
    }
    lg->n_done++;
    lg->last_done_mono_ms = clock_mono_ms();
    pthread_cond_broadcast(&lg->cv);
    pthread_mutex_unlock(&lg->mu);
    job_free(job); /* done owns the job */
}

static inline void hook_progress(void *ctx, const char *job_id, double fraction, const char *message)
{
    struct log *lg = ctx;
    pthread_mutex_lock(&lg->mu);
    if (lg->n_progress < LOG_PROGRESS_MAX) {
        lg->progress_ms[lg->n_progress] = clock_mono_ms();
        lg->progress_fraction[lg->n_progress] = fraction;
    }
    snprintf(lg->progress_id, sizeof lg->progress_id, "%s", job_id);
    lg->progress_last = fraction;
    lg->n_progress++;
    pthread_cond_broadcast(&lg->cv);
    pthread_mutex_unlock(&lg->mu);
}

/* Waits until *counter >= n or timeout_ms passes. True when reached. */
static inline bool log_wait(struct log *lg, const int *counter, int n, int64_t timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t end_ns = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec + timeout_ms * 1000000LL;
    ts.tv_sec = end_ns / 1000000000LL;
    ts.tv_nsec = end_ns % 1000000000LL;
    pthread_mutex_lock(&lg->mu);
    int rc = 0;
    while (*counter < n && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&lg->cv, &lg->mu, &ts);
    bool ok = *counter >= n;
    pthread_mutex_unlock(&lg->mu);
    if (!ok) fprintf(stderr, "    timed out after %lld ms waiting for %d calls\n", (long long)timeout_ms, n);
    return ok;
}

/* Reads *counter (a field of lg) under lg->mu. */
static inline int log_count(struct log *lg, const int *counter)
{
    pthread_mutex_lock(&lg->mu);
    int n = *counter;
    pthread_mutex_unlock(&lg->mu);
    return n;
}

#define WAIT_STARTED(lg, n, ms) CHECK(log_wait((lg), &(lg)->n_started, (n), (ms)))
#define WAIT_DONE(lg, n, ms) CHECK(log_wait((lg), &(lg)->n_done, (n), (ms)))

/* A queued job of `task` with `args` (NULL: none), created and due now. */
static inline struct job *make_job(const char *task, const char *args)
{
    struct job *j = job_new();
    if (!j) abort();
    id_new(j->id);
    job_set_str(&j->task, task);
    if (args) job_set_str(&j->args, args);
    j->status = JOB_QUEUED;
    j->created_at_ms = j->scheduled_at_ms = clock_wall_ms();
    return j;
}

/* Submits a job and copies its id into id_out (may be NULL). */
static inline int submit(struct executor *ex, struct job *j, char *id_out)
{
    if (id_out) memcpy(id_out, j->id, ID_LEN + 1);
    int rc = exec_submit(ex, j, false);
    if (rc) job_free(j); /* on error the caller keeps the job */
    return rc;
}

/* Puts lg in bulk mode for n jobs made here (ids increasing, so sorted) and
 * returns them, to submit; free the array, and call log_bulk_fini(). */
static inline struct job **log_bulk(struct log *lg, int n, const char *task, const char *args)
{
    lg->ids = calloc((size_t)n, sizeof *lg->ids);
    lg->counts = calloc((size_t)n, sizeof *lg->counts);
    lg->outcomes = calloc((size_t)n, sizeof *lg->outcomes);
    lg->n_ids = n;
    struct job **jobs = calloc((size_t)n, sizeof *jobs);
    if (!lg->ids || !lg->counts || !lg->outcomes || !jobs) abort();
    for (int i = 0; i < n; i++) {
        jobs[i] = make_job(task, args);
        memcpy(lg->ids[i], jobs[i]->id, ID_LEN + 1);
    }
    return jobs;
}

/* How many ids were reported exactly once. */
static inline int log_bulk_once(struct log *lg)
{
    int once = 0;
    for (int i = 0; i < lg->n_ids; i++) once += lg->counts[i] == 1;
    return once;
}

static inline void log_bulk_fini(struct log *lg)
{
    free(lg->ids);
    free(lg->counts);
    free(lg->outcomes);
    lg->ids = NULL;
    lg->counts = NULL;
    lg->outcomes = NULL;
}

#endif
