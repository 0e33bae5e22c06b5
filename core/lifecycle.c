/* lifecycle.c - the core's life: open (executors, recovery, re-dispatch),
 * the timer thread (scheduled jobs and waiter deadlines), committed events,
 * drain and close, and introspection of the executors. The dispatching
 * itself is in dispatch.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "core_int.h"

/* --- committed events (store writer thread) --- */

/* Every committed state change: to the live event feed; a batch's end also
 * wakes its waiters (GET /v1/batches/{id}?wait=) and, with a callback, the
 * deliverer. */
static void on_store_event(void *ctx, const struct store_event *ev)
{
    struct core *c = ctx;
    core_events_publish(c, ev);
    if (strcmp(ev->type, "batch") == 0) {
        core_waiters_fire_id(c, ev->batch_id, -1);
        core_callbacks_kick(c);
    }
}

/* --- the timer thread --- */

static void *timer_main(void *arg)
{
    struct core *c = arg;
    pthread_mutex_lock(&c->lock);
    while (!c->stop_timer) {
        int64_t now_wall = clock_wall_ms(), now_mono = clock_mono_ms();
        struct job *batch[256]; /* NULL: cold, read back below */
        char ids[256][ID_LEN + 1];
        int exec_of[256];
        int n = 0;
        struct tnode *t;
        while (n < 256 && (t = theap_peek(&c->sched)) && t->key <= now_wall) {
            struct live *l = CONTAINER_OF(t, struct live, t);
            theap_del(&c->sched, t);
            batch[n] = l->job;
            memcpy(ids[n], l->id, sizeof ids[n]);
            exec_of[n] = l->exec_idx;
            l->job = NULL;
            l->state = LIVE_QUEUED;
            n++;
        }
        struct lost_id *lost = atomic_exchange(&c->lost, NULL);
        struct waiter *expired = core_waiters_take_expired_locked(c, now_mono);
        /* Failed terminal updates that are due again (see struct end_retry). */
        struct end_retry *retry = NULL, **rp = &c->end_retries;
        while (*rp) {
            struct end_retry *r = *rp;
            if (r->due_mono_ms <= now_mono) {
                *rp = r->next;
                r->next = retry;
                retry = r;
            } else {
                rp = &r->next;
            }
        }
        if (n || expired || retry || lost) {
            pthread_mutex_unlock(&c->lock);
            for (int i = 0; i < n; i++) {
                struct job *job = batch[i];
                bool cold = !job;
                if (cold && !(job = core__load_pending(c, ids[i], c->execs[exec_of[i]].cfg.name))) {
                    core__forget_unstarted(c, ids[i]); /* logged; it stays scheduled in the database */
                    core_waiters_fire_id(c, ids[i], -1);
                    continue;
                }
                job->status = JOB_QUEUED;
                struct job *copy = job_dup(job);
                if (copy) core__store_update(c, copy, JOB_SCHEDULED, false, NULL, NULL);
                /* Read back, it equals its row: it may go cold again in the executor. */
                core__dispatch_job(c, job, exec_of[i], cold);
            }
            core_waiters_fire_list(expired);
            core__end_retries_fire(c, retry);
            core__lost_fire(c, lost);
            pthread_mutex_lock(&c->lock);
            continue;
        }
        /* Sleep until the earliest deadline (at most 1 s, so wall-clock steps are noticed). */
        int64_t wake = now_mono + 1000;
        if ((t = theap_peek(&c->sched)) && now_mono + (t->key - now_wall) < wake) wake = now_mono + (t->key - now_wall);
        if ((t = theap_peek(&c->wheap)) && t->key < wake) wake = t->key;
        for (struct end_retry *r = c->end_retries; r; r = r->next)
            if (r->due_mono_ms < wake) wake = r->due_mono_ms;
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
    /* Jobs waiting on dependencies: registered after the scan, once every
     * pending job is live, since a job may depend on a later one (batches). */
    struct job **waiting;
    int *waiting_idx;
    size_t n_waiting, cap_waiting;
};

/* Re-dispatches one pending job found at start (open thread). */
static void recover_one(void *arg, struct job *job)
{
    struct recover_ctx *rc = arg;
    struct core *c = rc->c;
    int idx = core__exec_index(c, job->executor);
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
        core__store_update(c, job, from, false, NULL, NULL);
        return;
    }
    rc->n++;
    atomic_fetch_add(&c->execs[idx].held, 1);
    if (!core__live_add(c, job, idx, core__live_state_of(job))) {
        atomic_fetch_sub(&c->execs[idx].held, 1);
        job_free(job);
        return;
    }
    if (core__has_deps(job)) {
        if (rc->n_waiting == rc->cap_waiting) {
            size_t cap = rc->cap_waiting ? 2 * rc->cap_waiting : 64;
            struct job **w = realloc(rc->waiting, cap * sizeof *w);
            int *wi = w ? realloc(rc->waiting_idx, cap * sizeof *wi) : NULL;
            if (w) rc->waiting = w;
            if (wi) rc->waiting_idx = wi;
            if (!w || !wi) {
                LOG_ERROR("job %s: out of memory at recovery; it stays scheduled until restart", job->id);
                job_free(job);
                return;
            }
            rc->cap_waiting = cap;
        }
        rc->waiting[rc->n_waiting] = job;
        rc->waiting_idx[rc->n_waiting++] = idx;
        return;
    }
    core__start_pending(c, job, idx, true);
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
    if ((rc = hmap_init(&c->live)) < 0 || (rc = hmap_init(&c->waiters)) < 0 || (rc = hmap_init(&c->deps)) < 0 ||
        (rc = hmap_init(&c->ckeys)) < 0)
        goto fail;
    c->execs = calloc((size_t)opt->n_executors, sizeof *c->execs);
    if (!c->execs) {
        rc = -ENOMEM;
        goto fail;
    }
    c->resident_max = opt->resident_jobs;
    struct exec_hooks hooks = {.started = core__hook_started,
                               .done = core__hook_done,
                               .progress = core__hook_progress,
                               .load = core__hook_load,
                               .dropped = core__hook_dropped,
                               .ctx = c};
    for (int i = 0; i < opt->n_executors; i++) {
        struct core_exec *ce = &c->execs[i];
        ce->cfg = opt->executors[i];
        struct exec_config ec = {.name = ce->cfg.name,
                                 .kind = ce->cfg.kind,
                                 .size = ce->cfg.size,
                                 .resident_max = opt->resident_jobs,
                                 .worker_argv = opt->worker_argv,
                                 .memory_mb = ce->cfg.memory_mb,
                                 .cpu_seconds = ce->cfg.cpu_seconds};
        if ((rc = exec_new(&ec, c->tasks, &hooks, &ce->ex)) < 0) goto fail;
        c->n_execs++;
    }
    if ((rc = core_metrics_init(c)) < 0) goto fail;
    if ((rc = core_events_init(c, opt)) < 0) goto fail;
    store_set_event_cb(c->store, on_store_event, c);

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
    rc = store_scan_pending(c->store, recover_one, &rctx);
    for (size_t i = 0; i < rctx.n_waiting; i++) {
        if (rc == 0) core__deps_register(c, rctx.waiting[i], rctx.waiting_idx[i]);
        else job_free(rctx.waiting[i]);
    }
    free(rctx.waiting);
    free(rctx.waiting_idx);
    if (rc < 0) goto fail;
    if (rctx.n) LOG_INFO("recovery: %ld pending job(s) dispatched again", rctx.n);
    if ((rc = core_retention_start(c, opt)) < 0) goto fail;
    if ((rc = core_callbacks_start(c, opt)) < 0) goto fail;
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
    core_callbacks_stop(c); /* deliveries in flight stay pending for the next start */
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
    core_events_shutdown(c);
}

void core_close(struct core *c)
{
    if (!c) return;
    core_drain(c, 0);
    for (int i = 0; i < c->n_execs; i++) exec_free(c->execs[i].ex);
    store_sync(c->store);
    store_set_event_cb(c->store, NULL, NULL);
    core_events_fini(c);
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
    core__end_retries_free(c);
    for (struct lost_id *l = atomic_exchange(&c->lost, NULL), *next; l; l = next) {
        next = l->next;
        free(l);
    }
    hmap_fini(&c->live);
    hmap_fini(&c->waiters);
    core_gates_fini(c);
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

_Static_assert(sizeof ((struct core_worker *)0)->thread == sizeof ((struct exec_worker *)0)->thread, "thread");
_Static_assert(sizeof ((struct core_worker *)0)->task == sizeof ((struct exec_worker *)0)->task, "task");

int core_executor_workers(struct core *c, int i, struct core_worker *out, int max)
{
    if (i < 0 || i >= c->n_execs) return -ENOENT;
    if (c->execs[i].cfg.kind == TASK_KIND_ASYNC && max > EXEC_ASYNC_WORKERS_MAX) max = EXEC_ASYNC_WORKERS_MAX;
    if (max <= 0) return 0;
    struct exec_worker *w = malloc((size_t)max * sizeof *w);
    if (!w) return -ENOMEM;
    int n = exec_workers(c->execs[i].ex, w, max);
    for (int k = 0; k < n; k++) {
        out[k] = (struct core_worker){.slot = w[k].slot, .pid = w[k].pid, .started_at_ms = w[k].started_at_ms};
        memcpy(out[k].thread, w[k].thread, sizeof out[k].thread);
        memcpy(out[k].job_id, w[k].job_id, sizeof out[k].job_id);
        memcpy(out[k].task, w[k].task, sizeof out[k].task);
    }
    free(w);
    return n;
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
