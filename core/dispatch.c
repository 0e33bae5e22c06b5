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
    bool end_retried; /* terminal: its update failed once and is being tried again */
};

static struct op *op_new(struct core *c, int exec_idx, int from, int to, core_done_cb cb, void *ctx)
{
    struct op *op = malloc(sizeof *op);
    if (!op) return NULL;
    *op = (struct op){.c = c, .exec_idx = exec_idx, .from = from, .to = to, .cb = cb, .ctx = ctx};
    return op;
}

int core__exec_index(struct core *c, const char *name)
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
struct live *core__live_add(struct core *c, const struct job *job, int exec_idx, enum live_state state)
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
        if (l->t.idx >= 0) theap_del(l->state == LIVE_HELD ? &l->ckey->held : &c->sched, &l->t);
    }
    pthread_mutex_unlock(&c->lock);
    if (l) job_free(l->job);
    free(l);
}

static void cancel_scheduled(struct core *c, struct job *job, int exec_idx, int from);
static void dispatch_now(struct core *c, struct job *job, int exec_idx, bool reloadable);

/* --- concurrency keys --- */

/* Takes a slot of job's concurrency key for it (true), or holds the job back
 * in the key's heap (false: the job is taken, LIVE_HELD). Jobs wait best
 * first: priority, then arrival. A job starts only while fewer than its own
 * concurrency_limit jobs of its key are handed to executors. */
static bool ckey_acquire(struct core *c, struct job *job, int exec_idx)
{
    bool go = true;
    pthread_mutex_lock(&c->lock);
    struct live *l = live_get_locked(c, job->id);
    struct ckey *ck = l ? core_ckey_get_locked(c, job->concurrency_key) : NULL;
    if (!ck) {
        if (l) LOG_ERROR("job %s: out of memory for its concurrency key; it runs unlimited", job->id);
        goto out;
    }
    int limit = job->concurrency_limit > 0 ? job->concurrency_limit : 1;
    l->ckey = ck;
    if (ck->running < limit || l->cancel_requested) {
        ck->running++;
        goto out;
    }
    l->t.key = core_ckey_order(ck, job->priority);
    if (theap_push(&ck->held, &l->t) < 0) {
        ck->running++; /* out of memory: better run over the limit than lose the job */
        LOG_ERROR("job %s: out of memory holding it for its concurrency key; it runs now", job->id);
        goto out;
    }
    l->state = LIVE_HELD;
    l->exec_idx = exec_idx;
    l->job = job;
    go = false;
out:
    pthread_mutex_unlock(&c->lock);
    return go;
}

/* Takes the concurrency slot live job `id` holds (NULL: none) off its live
 * entry, to be given back with release_ckey() once the job's update is
 * queued. Lock held. */
static struct ckey *take_slot_locked(struct core *c, const char *id)
{
    struct live *l = live_get_locked(c, id);
    struct ckey *ck = l && l->state != LIVE_HELD ? l->ckey : NULL;
    if (ck) l->ckey = NULL;
    return ck;
}

/* Gives back a slot of ck (taken with take_slot_locked; NULL: nothing) and
 * hands the held jobs that may now go to their executors. The caller queues
 * the job's own update first: the store commits in queue order, so the
 * database never shows the next job running before this one's end. A slot
 * keeps its key alive (running > 0), so ck is valid until this call. */
static void release_ckey(struct core *c, struct ckey *ck)
{
    struct job *go[16];
    int go_idx[16], n = 0;
    if (!ck) return;
    pthread_mutex_lock(&c->lock);
    {
        ck->running--;
        struct tnode *t;
        while (n < 16 && (t = theap_peek(&ck->held))) {
            struct live *h = CONTAINER_OF(t, struct live, t);
            int limit = h->job->concurrency_limit > 0 ? h->job->concurrency_limit : 1;
            if (ck->running >= limit) break;
            theap_del(&ck->held, t);
            ck->running++;
            h->state = LIVE_QUEUED;
            go[n] = h->job;
            go_idx[n++] = h->exec_idx;
            h->job = NULL;
        }
        core_ckey_maybe_free_locked(c, ck);
    }
    pthread_mutex_unlock(&c->lock);
    for (int i = 0; i < n; i++) dispatch_now(c, go[i], go_idx[i], false);
}

void core__schedule_job(struct core *c, struct job *job, int exec_idx, bool reloadable)
{
    pthread_mutex_lock(&c->lock);
    struct live *l = live_get_locked(c, job->id);
    /* The key must be set before the push: theap_push sifts by it. */
    if (l) l->t.key = job->scheduled_at_ms;
    if (!l || theap_push(&c->sched, &l->t) < 0) {
        pthread_mutex_unlock(&c->lock);
        LOG_ERROR("job %s: cannot schedule (out of memory); it stays scheduled in the database", job->id);
        job_free(job);
        return;
    }
    l->state = LIVE_SCHEDULED;
    l->exec_idx = exec_idx;
    l->job = job;
    if (l->cancel_requested) {
        /* Cancelled while on its way here (see core_job_cancel). */
        theap_del(&c->sched, &l->t);
        l->job = NULL;
        l->state = LIVE_FINISHING;
        pthread_mutex_unlock(&c->lock);
        cancel_scheduled(c, job, exec_idx, JOB_SCHEDULED);
        return;
    }
    /* Cold: the timer reads it back when it is due (or a cancel does). */
    bool cold = reloadable && c->resident_max > 0 && c->sched.n > c->resident_max;
    if (cold) l->job = NULL;
    if (theap_peek(&c->sched) == &l->t) pthread_cond_signal(&c->timer_cv);
    pthread_mutex_unlock(&c->lock);
    if (cold) job_free(job);
}

/* Hands a queued job (moved in) to its executor, its concurrency slot (if
 * any) already taken. */
static void dispatch_now(struct core *c, struct job *job, int exec_idx, bool reloadable)
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
    if (exec_submit(ce->ex, job, reloadable) < 0) {
        /* Draining: the job stays queued in the database for the next start. */
        job_free(job);
        atomic_fetch_sub(&ce->held, 1);
        pthread_mutex_lock(&c->lock);
        struct ckey *ck = take_slot_locked(c, id);
        pthread_mutex_unlock(&c->lock);
        release_ckey(c, ck);
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

/* Hands a queued job (moved in) to its executor, or holds it back while its
 * concurrency key is at its limit (it then goes when a slot frees). */
void core__dispatch_job(struct core *c, struct job *job, int exec_idx, bool reloadable)
{
    if (job->concurrency_key && !ckey_acquire(c, job, exec_idx)) return;
    dispatch_now(c, job, exec_idx, reloadable);
}

#define END_RETRY_MS 500 /* a failed terminal update is tried again this often */

/* A job's terminal update committed (writer thread). When the transaction
 * failed (disk full, I/O error) the update is tried again later - see
 * struct end_retry - unless the server is draining: then the database keeps
 * the previous state and recovery settles the job at the next start. */
static void terminal_done(void *arg, int rc, struct job *job)
{
    struct op *op = arg;
    struct core *c = op->c;
    if (rc < 0 && rc != -ENOENT && rc != -EINVAL && !atomic_load(&c->draining)) {
        struct end_retry *r = malloc(sizeof *r);
        if (r) {
            if (!op->end_retried) /* once per job: a long outage would log every 500 ms */
                LOG_ERROR("job %s: storing its end failed (%s); trying again every %d ms", job->id, strerror(-rc),
                          END_RETRY_MS);
            op->end_retried = true;
            r->job = job;
            r->op = op;
            r->due_mono_ms = clock_mono_ms() + END_RETRY_MS;
            pthread_mutex_lock(&c->lock);
            r->next = c->end_retries;
            c->end_retries = r;
            pthread_cond_signal(&c->timer_cv);
            pthread_mutex_unlock(&c->lock);
            return;
        }
    }
    if (rc < 0) {
        LOG_ERROR("job %s: storing its end failed (%s); it will be recovered at restart", job->id, strerror(-rc));
    } else {
        if (op->end_retried) LOG_INFO("job %s: its end is stored now (%s)", job->id, job_status_name(job->status));
        core_stats_transition(&c->stats, op->from, op->to);
    }
    live_remove(c, job->id);
    core_waiters_fire_id(c, job->id, (int)job->status);
    if (rc == 0 && job_status_terminal(job->status)) core__deps_fire(c, job->id, job->status);
    if (rc == 0 && job->callback_url) core_callbacks_kick(c);
    if (op->cb) op->cb(op->ctx, rc, job);
    job_free(job);
    free(op);
}

void core__end_retries_fire(struct core *c, struct end_retry *list)
{
    while (list) {
        struct end_retry *r = list;
        list = r->next;
        char id[ID_LEN + 1];
        memcpy(id, r->job->id, sizeof id);
        struct op *op = r->op;
        int rc = store_job_update(c->store, r->job, terminal_done, op); /* the job is moved in */
        if (rc < 0) {
            /* The store is closing: recovery settles the job at the next start. */
            free(op);
            live_remove(c, id);
            core_waiters_fire_id(c, id, -1);
        }
        free(r);
    }
}

void core__end_retries_free(struct core *c)
{
    struct end_retry *r = c->end_retries;
    c->end_retries = NULL;
    while (r) {
        struct end_retry *next = r->next;
        job_free(r->job);
        free(r->op);
        free(r);
        r = next;
    }
}

void core__forget_unstarted(struct core *c, const char *id)
{
    pthread_mutex_lock(&c->lock);
    struct ckey *ck = take_slot_locked(c, id);
    struct live *l = live_get_locked(c, id);
    int idx = l ? l->exec_idx : -1;
    pthread_mutex_unlock(&c->lock);
    if (!l) return;
    atomic_fetch_sub(&c->execs[idx].held, 1);
    release_ckey(c, ck);
    live_remove(c, id);
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
void core__store_update(struct core *c, struct job *job, int from, bool terminal, core_done_cb cb, void *ctx)
{
    struct op *op = op_new(c, core__exec_index(c, job->executor), from, (int)job->status, cb, ctx);
    if (!op) {
        LOG_ERROR("job %s: out of memory recording status %s", job->id, job_status_name(job->status));
        if (terminal) {
            live_remove(c, job->id);
            core_waiters_fire_id(c, job->id, -1);
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
            core_waiters_fire_id(c, job->id, -1);
        }
    }
}

bool core__has_deps(const struct job *job)
{
    return job->status == JOB_SCHEDULED && job->depends_on && strcmp(job->depends_on, "[]") != 0;
}

enum live_state core__live_state_of(const struct job *job)
{
    return core__has_deps(job) ? LIVE_WAITING : job->status == JOB_SCHEDULED ? LIVE_SCHEDULED : LIVE_QUEUED;
}

/* Sets a committed, live pending job (moved in) on its way: waiting on its
 * dependencies, on the timer heap, or to its executor. */
void core__start_pending(struct core *c, struct job *job, int exec_idx, bool reloadable)
{
    if (core__has_deps(job)) core__deps_register(c, job, exec_idx);
    else if (job->status == JOB_SCHEDULED) core__schedule_job(c, job, exec_idx, reloadable);
    else core__dispatch_job(c, job, exec_idx, reloadable);
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
    if (!core__live_add(c, job, op->exec_idx, core__live_state_of(job))) {
        LOG_ERROR("job %s: out of memory; it stays %s in the database until restart", job->id,
                  job_status_name(job->status));
        atomic_fetch_sub(&ce->held, 1);
        job_free(job);
    } else {
        core__start_pending(c, job, op->exec_idx, true);
    }
out:
    if (op->cb) op->cb(op->ctx, rc, NULL);
    free(op);
}

int core_job_submit(struct core *c, struct job *job, core_done_cb cb, void *ctx)
{
    int idx = core__exec_index(c, job->executor);
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

void core__hook_started(void *ctx, const struct job *job)
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
        core__store_update(c, copy, JOB_QUEUED, false, NULL, NULL);
    else
        LOG_WARN("job %s: out of memory recording its start", job->id);
    if (cancel && idx >= 0) exec_cancel(c->execs[idx].ex, job->id);
}

void core__hook_progress(void *ctx, const char *job_id, double fraction, const char *message)
{
    struct core *c = ctx;
    store_job_progress(c->store, job_id, fraction, message); /* -ESHUTDOWN at exit: progress is best effort */
}

/* retry_backoff doubled per attempt made, capped at MAX_BACKOFF_MS, plus a
 * random 0-25% so that jobs that failed together do not retry together. */
static int64_t backoff_ms(const struct job *job)
{
    int64_t b = job->retry_backoff_ms;
    for (int i = 1; i < job->attempt && b < MAX_BACKOFF_MS; i++) b *= 2;
    if (b > MAX_BACKOFF_MS) b = MAX_BACKOFF_MS;
    if (b >= 4) b += (int64_t)arc4random_uniform((uint32_t)(b / 4 + 1));
    return b;
}

void core__hook_done(void *ctx, struct job *job, enum exec_outcome outcome)
{
    struct core *c = ctx;
    enum live_state was = LIVE_QUEUED;
    bool cancel_requested = false;
    int idx = core__exec_index(c, job->executor);
    struct core_exec *ce = idx >= 0 ? &c->execs[idx] : NULL;

    bool retry = false;
    pthread_mutex_lock(&c->lock);
    struct ckey *ck = take_slot_locked(c, job->id); /* given back below, after this job's update */
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
        release_ckey(c, ck);
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
        core__store_update(c, job, from, true, NULL, NULL);
        release_ckey(c, ck);
        return;
    }
    if (!job->finished_at_ms) job->finished_at_ms = clock_wall_ms();
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
        job->status = JOB_FAILED;
        break;
    }
    /* Every attempt that ran is kept in the job's history (its detail shows it). */
    if (job->started_at_ms && job_attempts_append(job) < 0)
        LOG_WARN("job %s: out of memory recording attempt %d in its history", job->id, job->attempt);
    if (outcome != EXEC_OK && outcome != EXEC_CANCELLED) {
        if (retry) {
            /* Retry after back-off: scheduled again, the last error kept for view. */
            job->status = JOB_SCHEDULED;
            job->finished_at_ms = 0;
            job->scheduled_at_ms = clock_wall_ms() + backoff_ms(job);
            if (ce) atomic_fetch_add(&ce->held, 1); /* retries are never refused */
            struct job *copy = job_dup(job);
            if (copy) core__store_update(c, copy, from, false, NULL, NULL);
            release_ckey(c, ck);
            core__schedule_job(c, job, idx >= 0 ? idx : 0, false);
            return;
        }
        if (ce) atomic_fetch_add(&ce->failed, 1);
    }
    core_stats_finished(&c->stats, job);
    core_metrics_finished(c, idx, job);
    core__store_update(c, job, from, true, NULL, NULL);
    release_ckey(c, ck);
}

/* --- cancel, retry, delete --- */

/* Ends a job that never started as cancelled (scheduled, waiting on
 * dependencies, or held by its concurrency key: its live entry already
 * unlinked from any heap, state LIVE_FINISHING). */
static void cancel_scheduled(struct core *c, struct job *job, int exec_idx, int from)
{
    job->status = JOB_CANCELLED;
    job->error_type = JOB_ERR_CANCELLED;
    job_set_str(&job->error_message, "cancelled before it started");
    job->finished_at_ms = clock_wall_ms();
    atomic_fetch_sub(&c->execs[exec_idx].held, 1);
    atomic_fetch_add(&c->execs[exec_idx].cancelled, 1);
    core_stats_finished(&c->stats, job);
    core_metrics_finished(c, exec_idx, job);
    core__store_update(c, job, from, true, NULL, NULL);
}

int core_job_cancel(struct core *c, const char *id)
{
    struct job *sched_job = NULL;
    bool cold = false;
    int idx = -1, from = JOB_SCHEDULED;
    pthread_mutex_lock(&c->lock);
    struct live *l = live_get_locked(c, id);
    enum live_state state = l ? l->state : LIVE_FINISHING;
    if (l) {
        idx = l->exec_idx;
        if (state == LIVE_WAITING || state == LIVE_HELD) {
            /* Waiting on dependencies (its entries in c->deps go stale and
             * are skipped) or held by its concurrency key. */
            if (state == LIVE_HELD) {
                theap_del(&l->ckey->held, &l->t);
                core_ckey_maybe_free_locked(c, l->ckey);
                l->ckey = NULL;
                from = JOB_QUEUED;
            }
            sched_job = l->job;
            l->job = NULL;
            l->state = LIVE_FINISHING;
        } else if (state == LIVE_SCHEDULED && l->t.idx < 0) {
            /* Not on the timer heap yet: core__schedule_job() will see the flag. */
            l->cancel_requested = true;
        } else if (state == LIVE_SCHEDULED) {
            theap_del(&c->sched, &l->t);
            cold = !l->job;
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
    if (cold && !(sched_job = core__load_pending(c, id, c->execs[idx].cfg.name))) {
        core__forget_unstarted(c, id); /* logged; it stays scheduled in the database */
        core_waiters_fire_id(c, id, -1);
        return -EIO;
    }
    if (sched_job) {
        cancel_scheduled(c, sched_job, idx, from);
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
    idx = core__exec_index(c, old->executor);
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

