/* dispatch.c - the dispatcher: from a committed job to its executor and back.
 *
 * DESIGN. Data flows one way: core_job_submit() queues the insert on the
 * store; the store's writer commits it and calls insert_done(), which records
 * the job as live and hands it to its executor (or to the timer heap when it
 * is scheduled for later). Executors report through exec hooks on their own
 * threads: `started` queues a "running" update; `done` decides the job's fate
 * (succeeded, failed, cancelled, or scheduled again for a retry with
 * back-off) and queues that update. When a terminal update is committed,
 * terminal_done() forgets the live entry and wakes the job's waiters - so a
 * waiter never sees a result that is not durable.
 *
 * Threads: HTTP threads (submit, cancel), the store writer (commit
 * callbacks), executor workers (hooks) and one timer thread (scheduled jobs
 * and waiter deadlines). `c->lock` guards the live map, the timer heaps and
 * the waiters; it is never held while calling the store, an executor or a
 * callback. Per-executor counters are atomics; stats have their own lock.
 *
 * Ordering: the store applies ops in the order they were queued, so a job's
 * updates (queued -> running -> done) are committed in order even when they
 * share one transaction.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "core_int.h"

/* Back-off doubles per attempt up to this cap. */
#define MAX_BACKOFF_MS (3600 * 1000LL)

/* Context of one queued store op. */
struct op {
    struct core *c;
    int exec_idx;
    int from, to; /* status transition for the counts; -1 = none */
    core_done_cb cb;
    void *ctx;
};

static struct op *op_new(struct core *c, int exec_idx, int from, int to, core_done_cb cb, void *ctx)
{
    struct op *op = malloc(sizeof *op);
    if (!op) return NULL;
    *op = (struct op){.c = c, .exec_idx = exec_idx, .from = from, .to = to, .cb = cb, .ctx = ctx};
    return op;
}

static int exec_index(struct core *c, const char *name)
{
    for (int i = 0; name && i < c->n_execs; i++)
        if (strcmp(c->execs[i].cfg.name, name) == 0) return i;
    return -1;
}

static struct live *live_get_locked(struct core *c, const char *id)
{
    struct hnode *hn = hmap_get(&c->live, id);
    return hn ? CONTAINER_OF(hn, struct live, h) : NULL;
}

/* Adds a live entry for job (not yet owned). Returns it, or NULL when out of memory. */
static struct live *live_add(struct core *c, const struct job *job, int exec_idx, enum live_state state)
{
    struct live *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    memcpy(l->id, job->id, sizeof l->id);
    l->h.key = l->id;
    l->t.idx = -1;
    l->state = state;
    l->exec_idx = exec_idx;
    pthread_mutex_lock(&c->lock);
    int rc = hmap_put(&c->live, &l->h);
    pthread_mutex_unlock(&c->lock);
    if (rc < 0) {
        free(l);
        return NULL;
    }
    return l;
}

static void live_remove(struct core *c, const char *id)
{
    pthread_mutex_lock(&c->lock);
    struct live *l = live_get_locked(c, id);
    if (l) {
        hmap_del(&c->live, &l->h);
        if (l->t.idx >= 0) theap_del(&c->sched, &l->t);
    }
    pthread_mutex_unlock(&c->lock);
    if (l) job_free(l->job);
    free(l);
}

static void cancel_scheduled(struct core *c, struct job *job, int exec_idx);

/* Puts a scheduled job (moved in) on the timer heap. */
static void schedule_job(struct core *c, struct job *job, int exec_idx)
{
    pthread_mutex_lock(&c->lock);
    struct live *l = live_get_locked(c, job->id);
    if (!l || theap_push(&c->sched, &l->t) < 0) {
        pthread_mutex_unlock(&c->lock);
        LOG_ERROR("job %s: cannot schedule (out of memory); it stays scheduled in the database", job->id);
        job_free(job);
        return;
    }
    l->state = LIVE_SCHEDULED;
    l->exec_idx = exec_idx;
    l->job = job;
    l->t.key = job->scheduled_at_ms;
    if (l->cancel_requested) {
        /* Cancelled while on its way here (see core_job_cancel). */
        theap_del(&c->sched, &l->t);
        l->job = NULL;
        l->state = LIVE_FINISHING;
        pthread_mutex_unlock(&c->lock);
        cancel_scheduled(c, job, exec_idx);
        return;
    }
    if (theap_peek(&c->sched) == &l->t) pthread_cond_signal(&c->timer_cv);
    pthread_mutex_unlock(&c->lock);
}

/* Hands a queued job (moved in) to its executor. */
static void dispatch_job(struct core *c, struct job *job, int exec_idx)
{
    char id[ID_LEN + 1];
    memcpy(id, job->id, sizeof id);
    struct core_exec *ce = &c->execs[exec_idx];
    pthread_mutex_lock(&c->lock);
    struct live *l = live_get_locked(c, id);
    if (l) {
        l->state = LIVE_QUEUED;
        l->exec_idx = exec_idx;
    }
    pthread_mutex_unlock(&c->lock);
    atomic_fetch_add(&ce->submitted, 1);
    if (exec_submit(ce->ex, job) < 0) {
        /* Draining: the job stays queued in the database for the next start. */
        job_free(job);
        atomic_fetch_sub(&ce->held, 1);
        live_remove(c, id);
        return;
    }
    /* A cancel that arrived before the executor held the job: apply it now. */
    pthread_mutex_lock(&c->lock);
    l = live_get_locked(c, id);
    bool cancel = l && l->cancel_requested;
    pthread_mutex_unlock(&c->lock);
    if (cancel) exec_cancel(ce->ex, id);
}

/* A job's terminal update committed (writer thread). */
static void terminal_done(void *arg, int rc, struct job *job)
{
    struct op *op = arg;
    struct core *c = op->c;
    if (rc < 0) LOG_ERROR("job %s: storing its end failed (%s); it will be recovered at restart", job->id,
                          strerror(-rc));
    else
        core_stats_transition(&c->stats, op->from, op->to);
    live_remove(c, job->id);
    core_waiters_fire_id(c, job->id);
    if (op->cb) op->cb(op->ctx, rc, job);
    job_free(job);
    free(op);
}

/* A non-terminal update committed (writer thread). */
static void update_done(void *arg, int rc, struct job *job)
{
    struct op *op = arg;
    if (rc < 0)
        LOG_WARN("job %s: storing status %s failed (%s)", job->id, job_status_name(job->status), strerror(-rc));
    else
        core_stats_transition(&op->c->stats, op->from, op->to);
    job_free(job);
    free(op);
}

/* Queues an update of a copy of the job: non-terminal (update_done) or
 * terminal (terminal_done, which also takes ownership of `job` itself). */
static void store_update(struct core *c, struct job *job, int from, bool terminal, core_done_cb cb, void *ctx)
{
    struct op *op = op_new(c, exec_index(c, job->executor), from, (int)job->status, cb, ctx);
    if (!op) {
        LOG_ERROR("job %s: out of memory recording status %s", job->id, job_status_name(job->status));
        if (terminal) {
            live_remove(c, job->id);
            core_waiters_fire_id(c, job->id);
            job_free(job);
        }
        return;
    }
    int rc = store_job_update(c->store, job, terminal ? terminal_done : update_done, op);
    if (rc < 0) {
        /* The store is closing: the database keeps the previous state, and
         * recovery at the next start settles the job. */
        free(op);
        if (terminal) {
            live_remove(c, job->id);
            core_waiters_fire_id(c, job->id);
        }
    }
}

/* The insert of a submitted job committed (writer thread). The job is made
 * live and handed on *before* the submitter is told, so that whatever the
 * client does next with the id (cancel, wait) finds it. */
static void insert_done(void *arg, int rc, struct job *job)
{
    struct op *op = arg;
    struct core *c = op->c;
    struct core_exec *ce = &c->execs[op->exec_idx];
    if (rc < 0) {
        atomic_fetch_sub(&ce->held, 1);
        job_free(job);
        goto out;
    }
    core_stats_transition(&c->stats, -1, (int)job->status);
    core_metrics_submitted(c, op->exec_idx, job);
    if (!live_add(c, job, op->exec_idx, job->status == JOB_SCHEDULED ? LIVE_SCHEDULED : LIVE_QUEUED)) {
        LOG_ERROR("job %s: out of memory; it stays %s in the database until restart", job->id,
                  job_status_name(job->status));
        atomic_fetch_sub(&ce->held, 1);
        job_free(job);
    } else if (job->status == JOB_SCHEDULED) {
        schedule_job(c, job, op->exec_idx);
    } else {
        dispatch_job(c, job, op->exec_idx);
    }
out:
    if (op->cb) op->cb(op->ctx, rc, NULL);
    free(op);
}

int core_job_submit(struct core *c, struct job *job, core_done_cb cb, void *ctx)
{
    int idx = exec_index(c, job->executor);
    if (atomic_load(&c->draining)) {
        job_free(job);
        return -ESHUTDOWN;
    }
    if (idx < 0) {
        job_free(job);
        return -EINVAL;
    }
    struct core_exec *ce = &c->execs[idx];
    if (atomic_fetch_add(&ce->held, 1) >= ce->cfg.max_queued) {
        atomic_fetch_sub(&ce->held, 1);
        job_free(job);
        return -EAGAIN;
    }
    struct op *op = op_new(c, idx, -1, (int)job->status, cb, ctx);
    if (!op) {
        atomic_fetch_sub(&ce->held, 1);
        job_free(job);
        return -ENOMEM;
    }
    int rc = store_job_insert(c->store, job, insert_done, op);
    if (rc < 0) {
        atomic_fetch_sub(&ce->held, 1);
        free(op);
    }
    return rc;
}

/* --- executor hooks (worker threads) --- */

static void hook_started(void *ctx, const struct job *job)
{
    struct core *c = ctx;
    bool cancel = false;
    int idx = -1;
    pthread_mutex_lock(&c->lock);
    struct live *l = live_get_locked(c, job->id);
    if (l) {
        l->state = LIVE_RUNNING;
        cancel = l->cancel_requested;
        idx = l->exec_idx;
    }
    pthread_mutex_unlock(&c->lock);
    if (idx >= 0) atomic_fetch_sub(&c->execs[idx].held, 1);
    struct job *copy = job_dup(job);
    if (copy)
        store_update(c, copy, JOB_QUEUED, false, NULL, NULL);
    else
        LOG_WARN("job %s: out of memory recording its start", job->id);
    if (cancel && idx >= 0) exec_cancel(c->execs[idx].ex, job->id);
}

static void hook_progress(void *ctx, const char *job_id, double fraction, const char *message)
{
    struct core *c = ctx;
    store_job_progress(c->store, job_id, fraction, message); /* -ESHUTDOWN at exit: progress is best effort */
}

static int64_t backoff_ms(const struct job *job)
{
    int64_t b = job->retry_backoff_ms;
    for (int i = 1; i < job->attempt && b < MAX_BACKOFF_MS; i++) b *= 2;
    return b < MAX_BACKOFF_MS ? b : MAX_BACKOFF_MS;
}

static void hook_done(void *ctx, struct job *job, enum exec_outcome outcome)
{
    struct core *c = ctx;
    enum live_state was = LIVE_QUEUED;
    bool cancel_requested = false;
    int idx = exec_index(c, job->executor);
    struct core_exec *ce = idx >= 0 ? &c->execs[idx] : NULL;

    bool retry = false;
    pthread_mutex_lock(&c->lock);
    struct live *l = live_get_locked(c, job->id);
    if (l) {
        was = l->state;
        cancel_requested = l->cancel_requested;
        retry = outcome == EXEC_FAILED && job->attempt < job->max_attempts && !cancel_requested;
        /* From here a cancel gets 409, except for a retry, which stays cancellable. */
        if (outcome != EXEC_DRAINED && !retry) l->state = LIVE_FINISHING;
    }
    pthread_mutex_unlock(&c->lock);
    int from = was == LIVE_RUNNING ? JOB_RUNNING : JOB_QUEUED;
    if (was != LIVE_RUNNING && ce) atomic_fetch_sub(&ce->held, 1); /* never started: release its slot */

    if (outcome == EXEC_DRAINED) {
        /* Never started, shutting down: it stays queued in the database. */
        live_remove(c, job->id);
        job_free(job);
        return;
    }
    if (outcome == EXEC_CANCELLED && !cancel_requested && atomic_load(&c->draining)) {
        /* Stopped by shutdown, not by a user: run it again at the next start
         * without counting this attempt. */
        job->status = JOB_QUEUED;
        job->attempt = job->attempt > 0 ? job->attempt - 1 : 0;
        job->started_at_ms = job->finished_at_ms = 0;
        job->worker_pid = 0;
        job_set_str(&job->worker_thread, NULL);
        job->error_type = JOB_ERR_NONE;
        job_set_str(&job->error_message, NULL);
        store_update(c, job, from, true, NULL, NULL);
        return;
    }
    switch (outcome) {
    case EXEC_OK:
        job->status = JOB_SUCCEEDED;
        job->error_type = JOB_ERR_NONE;
        job_set_str(&job->error_message, NULL);
        if (ce) atomic_fetch_add(&ce->succeeded, 1);
        break;
    case EXEC_CANCELLED:
        job->status = JOB_CANCELLED;
        job->error_type = JOB_ERR_CANCELLED;
        if (!job->error_message) job_set_str(&job->error_message, "cancelled");
        if (ce) atomic_fetch_add(&ce->cancelled, 1);
        break;
    default:
        if (retry) {
            /* Retry after back-off: scheduled again, the last error kept for view. */
            job->status = JOB_SCHEDULED;
            job->scheduled_at_ms = clock_wall_ms() + backoff_ms(job);
            if (ce) atomic_fetch_add(&ce->held, 1); /* retries are never refused */
            struct job *copy = job_dup(job);
            if (copy) store_update(c, copy, from, false, NULL, NULL);
            schedule_job(c, job, idx >= 0 ? idx : 0);
            return;
        }
        job->status = JOB_FAILED;
        if (ce) atomic_fetch_add(&ce->failed, 1);
        break;
    }
    core_stats_finished(&c->stats, job);
    core_metrics_finished(c, idx, job);
    store_update(c, job, from, true, NULL, NULL);
}

/* --- cancel, retry, delete --- */

/* Ends a scheduled job as cancelled (its live entry already unlinked from the heap). */
static void cancel_scheduled(struct core *c, struct job *job, int exec_idx)
{
    job->status = JOB_CANCELLED;
    job->error_type = JOB_ERR_CANCELLED;
    job_set_str(&job->error_message, "cancelled before it started");
    job->finished_at_ms = clock_wall_ms();
    atomic_fetch_sub(&c->execs[exec_idx].held, 1);
    atomic_fetch_add(&c->execs[exec_idx].cancelled, 1);
    core_stats_finished(&c->stats, job);
    core_metrics_finished(c, exec_idx, job);
    store_update(c, job, JOB_SCHEDULED, true, NULL, NULL);
}

int core_job_cancel(struct core *c, const char *id)
{
    struct job *sched_job = NULL;
    int idx = -1;
    pthread_mutex_lock(&c->lock);
    struct live *l = live_get_locked(c, id);
    enum live_state state = l ? l->state : LIVE_FINISHING;
    if (l) {
        idx = l->exec_idx;
        if (state == LIVE_SCHEDULED && l->t.idx < 0) {
            /* Not on the timer heap yet: schedule_job() will see the flag. */
            l->cancel_requested = true;
        } else if (state == LIVE_SCHEDULED) {
            theap_del(&c->sched, &l->t);
            sched_job = l->job;
            l->job = NULL;
            l->state = LIVE_FINISHING;
        } else if (state != LIVE_FINISHING) {
            l->cancel_requested = true;
        }
    }
    pthread_mutex_unlock(&c->lock);

    if (!l) {
        struct job *job = NULL;
        int rc = store_job_get(c->store, id, &job);
        if (rc == 0) rc = job_status_terminal(job->status) ? -EALREADY : -EBUSY;
        job_free(job);
        return rc;
    }
    if (state == LIVE_FINISHING) return -EALREADY;
    if (sched_job) {
        cancel_scheduled(c, sched_job, idx);
        return 0;
    }
    /* -ENOENT here means the job is between hand-off and start or just ending:
     * cancel_requested covers the first, and the second is too late anyway. */
    exec_cancel(c->execs[idx].ex, id);
    return 0;
}

int core_job_retry(struct core *c, const char *id, core_done_cb cb, void *ctx, struct job **out_new)
{
    struct job *old = NULL, *job = NULL;
    struct api_err err;
    int idx, rc = store_job_get(c->store, id, &old);
    if (rc < 0) goto out;
    if (old->status != JOB_FAILED && old->status != JOB_CANCELLED) {
        rc = -EALREADY;
        goto out;
    }
    const struct task_def *def = task_find(c->tasks, old->task);
    if (!def) {
        rc = -EINVAL;
        goto out;
    }
    idx = exec_index(c, old->executor);
    if (idx < 0 || !(c->execs[idx].cfg.kind & def->kinds)) {
        if (core_resolve_executor(c, def, NULL, &idx, &err) < 0) {
            rc = -EINVAL;
            goto out;
        }
    }
    if (!(job = job_new())) {
        rc = -ENOMEM;
        goto out;
    }
    id_new(job->id);
    job->created_at_ms = job->scheduled_at_ms = clock_wall_ms();
    job->status = JOB_QUEUED;
    job->priority = old->priority;
    job->max_attempts = old->max_attempts;
    job->timeout_ms = old->timeout_ms;
    job->retry_backoff_ms = old->retry_backoff_ms;
    if (job_set_str(&job->task, old->task) < 0 || job_set_str(&job->args, old->args) < 0 ||
        job_set_str(&job->executor, c->execs[idx].cfg.name) < 0) {
        rc = -ENOMEM;
        goto out;
    }
    if (out_new && !(*out_new = job_dup(job))) {
        rc = -ENOMEM;
        goto out;
    }
    rc = core_job_submit(c, job, cb, ctx);
    job = NULL;
    if (rc < 0 && out_new) {
        job_free(*out_new);
        *out_new = NULL;
    }
out:
    job_free(old);
    job_free(job);
    return rc;
}

struct delete_op {
    struct core *c;
    int status;
    core_done_cb cb;
    void *ctx;
};

static void delete_done(void *arg, int rc, struct job *job)
{
    struct delete_op *op = arg;
    if (rc == 0) core_stats_transition(&op->c->stats, op->status, -1);
    if (op->cb) op->cb(op->ctx, rc, NULL);
    job_free(job);
    free(op);
}

int core_job_delete(struct core *c, const char *id, core_done_cb cb, void *ctx)
{
    struct job *job = NULL;
    int rc = store_job_get(c->store, id, &job);
    if (rc < 0) goto out;
    if (!job_status_terminal(job->status)) {
        rc = -EALREADY;
        goto out;
    }
    struct delete_op *op = malloc(sizeof *op);
    if (!op) {
        rc = -ENOMEM;
        goto out;
    }
    *op = (struct delete_op){.c = c, .status = (int)job->status, .cb = cb, .ctx = ctx};
    rc = store_job_delete(c->store, id, delete_done, op);
    if (rc < 0) free(op);
out:
    job_free(job);
    return rc;
}

/* --- the timer thread --- */

static void *timer_main(void *arg)
{
    struct core *c = arg;
    pthread_mutex_lock(&c->lock);
    while (!c->stop_timer) {
        int64_t now_wall = clock_wall_ms(), now_mono = clock_mono_ms();
        struct job *due = NULL; /* chained through a small array below */
        struct job *batch[256];
        int exec_of[256];
        int n = 0;
        struct tnode *t;
        while (n < 256 && (t = theap_peek(&c->sched)) && t->key <= now_wall) {
            struct live *l = CONTAINER_OF(t, struct live, t);
            theap_del(&c->sched, t);
            batch[n] = l->job;
            exec_of[n] = l->exec_idx;
            l->job = NULL;
            l->state = LIVE_QUEUED;
            n++;
        }
        (void)due;
        struct waiter *expired = core_waiters_take_expired_locked(c, now_mono);
        if (n || expired) {
            pthread_mutex_unlock(&c->lock);
            for (int i = 0; i < n; i++) {
                struct job *job = batch[i];
                job->status = JOB_QUEUED;
                struct job *copy = job_dup(job);
                if (copy) store_update(c, copy, JOB_SCHEDULED, false, NULL, NULL);
                dispatch_job(c, job, exec_of[i]);
            }
            core_waiters_fire_list(expired);
            pthread_mutex_lock(&c->lock);
            continue;
        }
        /* Sleep until the earliest deadline (at most 1 s, so wall-clock steps are noticed). */
        int64_t wake = now_mono + 1000;
        if ((t = theap_peek(&c->sched)) && now_mono + (t->key - now_wall) < wake) wake = now_mono + (t->key - now_wall);
        if ((t = theap_peek(&c->wheap)) && t->key < wake) wake = t->key;
        struct timespec ts = {.tv_sec = wake / 1000, .tv_nsec = (wake % 1000) * 1000000L};
        pthread_cond_timedwait(&c->timer_cv, &c->lock, &ts);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

/* --- open, drain, close --- */

struct recover_ctx {
    struct core *c;
    long n;
};

/* Re-dispatches one pending job found at start (open thread). */
static void recover_one(void *arg, struct job *job)
{
    struct recover_ctx *rc = arg;
    struct core *c = rc->c;
    int idx = exec_index(c, job->executor);
    const struct task_def *def = task_find(c->tasks, job->task);
    struct api_err err;
    if (def && (idx < 0 || !(c->execs[idx].cfg.kind & def->kinds)) && core_resolve_executor(c, def, NULL, &idx, &err) == 0)
        job_set_str(&job->executor, c->execs[idx].cfg.name);
    if (!def || idx < 0) {
        LOG_WARN("job %s: task '%s' cannot run on this server's configuration; failing it", job->id, job->task);
        int from = (int)job->status;
        job->status = JOB_FAILED;
        job->error_type = JOB_ERR_TASK;
        job_set_str(&job->error_message, def ? "no configured executor can run this task"
                                             : "the task is not registered on this server");
        job->finished_at_ms = clock_wall_ms();
        store_update(c, job, from, false, NULL, NULL);
        return;
    }
    rc->n++;
    atomic_fetch_add(&c->execs[idx].held, 1);
    if (!live_add(c, job, idx, job->status == JOB_SCHEDULED ? LIVE_SCHEDULED : LIVE_QUEUED)) {
        atomic_fetch_sub(&c->execs[idx].held, 1);
        job_free(job);
    } else if (job->status == JOB_SCHEDULED) {
        schedule_job(c, job, idx);
    } else {
        dispatch_job(c, job, idx);
    }
}

int core_open(const struct core_options *opt, struct core **out)
{
    int rc = 0;
    struct core *c = calloc(1, sizeof *c);
    if (!c) return -ENOMEM;
    c->tasks = opt->tasks;
    c->store = opt->store;
    pthread_mutex_init(&c->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&c->timer_cv, &attr);
    pthread_condattr_destroy(&attr);
    core_stats_init(&c->stats);
    if ((rc = hmap_init(&c->live)) < 0 || (rc = hmap_init(&c->waiters)) < 0) goto fail;
    c->execs = calloc((size_t)opt->n_executors, sizeof *c->execs);
    if (!c->execs) {
        rc = -ENOMEM;
        goto fail;
    }
    struct exec_hooks hooks = {.started = hook_started, .done = hook_done, .progress = hook_progress, .ctx = c};
    for (int i = 0; i < opt->n_executors; i++) {
        struct core_exec *ce = &c->execs[i];
        ce->cfg = opt->executors[i];
        struct exec_config ec = {.name = ce->cfg.name,
                                 .kind = ce->cfg.kind,
                                 .size = ce->cfg.size,
                                 .worker_argv = opt->worker_argv,
                                 .memory_mb = ce->cfg.memory_mb,
                                 .cpu_seconds = ce->cfg.cpu_seconds};
        if ((rc = exec_new(&ec, c->tasks, &hooks, &ce->ex)) < 0) goto fail;
        c->n_execs++;
    }
    if ((rc = core_metrics_init(c)) < 0) goto fail;

    int requeued = 0, failed = 0;
    if ((rc = store_recover(c->store, clock_wall_ms(), &requeued, &failed)) < 0) goto fail;
    if (requeued || failed)
        LOG_WARN("recovery: %d job(s) that were running when the server stopped were re-queued, %d failed "
                 "(no attempts left)",
                 requeued, failed);
    if ((rc = store_count_by_status(c->store, c->stats.counts)) < 0) goto fail;
    if ((rc = pthread_create(&c->timer_thread, NULL, timer_main, c)) != 0) {
        rc = -rc;
        goto fail;
    }
    c->timer_started = true;
    struct recover_ctx rctx = {.c = c};
    if ((rc = store_scan_pending(c->store, recover_one, &rctx)) < 0) goto fail;
    if (rctx.n) LOG_INFO("recovery: %ld pending job(s) dispatched again", rctx.n);
    if ((rc = core_retention_start(c, opt)) < 0) goto fail;
    atomic_store(&c->ready, true);
    *out = c;
    return 0;
fail:
    core_close(c);
    return rc;
}

struct drain_arg {
    struct executor *ex;
    int64_t grace_ms;
    pthread_t thread;
    bool started;
};

static void *drain_main(void *arg)
{
    struct drain_arg *d = arg;
    exec_drain(d->ex, d->grace_ms);
    return NULL;
}

/* Drains every executor at the same time, one short-lived thread each, so
 * that all stop taking jobs at once and share one grace period: drained one
 * after another, each got the whole grace (shutdown took executors x grace)
 * and the later ones kept starting jobs meanwhile. Without a thread (out of
 * memory) an executor is drained here, with what is left of the grace. */
static void drain_executors(struct core *c, int64_t grace_ms)
{
    int64_t end_ms = clock_mono_ms() + grace_ms;
    struct drain_arg *d = calloc((size_t)c->n_execs, sizeof *d);
    for (int i = 0; d && i < c->n_execs; i++) {
        d[i].ex = c->execs[i].ex;
        d[i].grace_ms = grace_ms;
        d[i].started = pthread_create(&d[i].thread, NULL, drain_main, &d[i]) == 0;
    }
    for (int i = 0; i < c->n_execs; i++) {
        if (d && d[i].started) continue;
        int64_t left = end_ms - clock_mono_ms();
        exec_drain(c->execs[i].ex, left > 0 ? left : 0);
    }
    for (int i = 0; d && i < c->n_execs; i++)
        if (d[i].started) pthread_join(d[i].thread, NULL);
    free(d);
}

void core_drain(struct core *c, int64_t grace_ms)
{
    if (atomic_exchange(&c->draining, true)) return;
    atomic_store(&c->ready, false);
    core_retention_stop(c); /* first: it would only compete with the drain for the writer */
    LOG_INFO("draining: no new jobs; running jobs have %.1f s to finish", (double)grace_ms / 1000.0);
    drain_executors(c, grace_ms);

    pthread_mutex_lock(&c->lock);
    c->stop_timer = true;
    pthread_cond_signal(&c->timer_cv);
    pthread_mutex_unlock(&c->lock);
    if (c->timer_started) pthread_join(c->timer_thread, NULL);
    c->timer_started = false;

    /* Wait for the last updates (terminal ones wake their waiters), then wake the rest. */
    store_sync(c->store);
    atomic_store(&c->drained, true);
    core_waiters_fire_all(c);
}

void core_close(struct core *c)
{
    if (!c) return;
    core_drain(c, 0);
    for (int i = 0; i < c->n_execs; i++) exec_free(c->execs[i].ex);
    store_sync(c->store);
    /* Scheduled jobs still in memory stay scheduled in the database. */
    for (size_t b = 0; b < c->live.nb; b++) {
        struct hnode *n = c->live.b ? c->live.b[b] : NULL;
        while (n) {
            struct hnode *next = n->next;
            struct live *l = CONTAINER_OF(n, struct live, h);
            job_free(l->job);
            free(l);
            n = next;
        }
    }
    hmap_fini(&c->live);
    hmap_fini(&c->waiters);
    theap_fini(&c->sched);
    theap_fini(&c->wheap);
    free(c->execs);
    core_metrics_fini(&c->metrics);
    core_stats_fini(&c->stats);
    pthread_cond_destroy(&c->timer_cv);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

bool core_ready(struct core *c)
{
    return atomic_load(&c->ready);
}

int core_executor_stats(struct core *c, struct core_executor_stats *out, int max)
{
    for (int i = 0; i < c->n_execs && i < max; i++) {
        struct core_exec *ce = &c->execs[i];
        struct exec_stats es;
        exec_get_stats(ce->ex, &es);
        out[i] = (struct core_executor_stats){
            .name = ce->cfg.name,
            .kind = task_kind_name(ce->cfg.kind),
            .size = es.size,
            .busy = es.busy,
            .queued = es.queued,
            .max_queued = ce->cfg.max_queued,
            .submitted = atomic_load(&ce->submitted),
            .succeeded = atomic_load(&ce->succeeded),
            .failed = atomic_load(&ce->failed),
            .cancelled = atomic_load(&ce->cancelled),
        };
    }
    return c->n_execs;
}
