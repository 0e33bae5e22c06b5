/* thread.c - the thread executor: ThreadPoolExecutor(max_workers=size).
 *
 * DESIGN. One mutex (`lock`) guards the ready heap, the worker slots' job
 * pointers and the counters. Workers loop: take the best job from the heap,
 * run it without the lock, hand it back through hooks.done, take the next. A
 * busy worker never sleeps between jobs, and exec_submit() signals the work
 * condition only when some worker is idle, so under load there is no cross-core
 * wake-up per job: the hand-off batches itself.
 *
 * Cancellation and timeouts are cooperative (a thread cannot be killed
 * safely): each slot has an atomic stop flag that the task polls through
 * should_stop(), and sleep_ms() waits on the slot's own condition so that a
 * cancel wakes it at once. The job's deadline is checked the same way, so no
 * watchdog thread is needed.
 *
 * Lock order: `lock` and a slot's `wake_lock` are never held together.
 */
#include "exec.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "exec_int.h"

/* Progress reports reach the hooks at most this often per job. */
#define PROGRESS_INTERVAL_NS (100 * 1000000LL)

struct slot {
    struct thread_exec *te;
    int index;
    pthread_t thread;
    struct job *job;          /* guarded by te->lock; the job this worker runs, or NULL */
    int64_t started_at_ms;    /* guarded by te->lock; when it took job */
    atomic_int stop;          /* set by cancel; reset when the worker takes a job */
    pthread_mutex_t wake_lock; /* with wake_cv: lets cancel interrupt sleep_ms */
    pthread_cond_t wake_cv;
    int64_t last_progress_ns; /* worker thread only */
    char name[32];            /* "thread-3", immutable */
};

struct thread_exec {
    struct executor base;
    pthread_mutex_t lock;
    pthread_cond_t work_cv; /* signalled when the heap gains a job or on drain */
    pthread_cond_t idle_cv; /* signalled when a worker finishes a job */
    struct exec_heap heap;  /* guarded by lock */
    int idle;               /* guarded by lock: workers waiting on work_cv */
    int busy;               /* guarded by lock: workers running a job */
    bool draining;          /* guarded by lock */
    bool stop_workers;      /* guarded by lock */
    struct slot *slots;     /* array of base.size, immutable pointer */
    int started;            /* threads successfully created (construction only) */
};

static void slot_wake(struct slot *s)
{
    pthread_mutex_lock(&s->wake_lock);
    pthread_cond_broadcast(&s->wake_cv);
    pthread_mutex_unlock(&s->wake_lock);
}

static bool deadline_passed(const struct task_ctx *ctx)
{
    return ctx->deadline_ns > 0 && clock_mono_ns() >= ctx->deadline_ns;
}

static bool hook_should_stop(struct task_ctx *ctx)
{
    struct slot *s = ctx->runner;
    return atomic_load(&s->stop) || deadline_passed(ctx);
}

static int hook_sleep_ms(struct task_ctx *ctx, int64_t ms)
{
    struct slot *s = ctx->runner;
    int64_t end = clock_mono_ns() + (ms > 0 ? ms : 0) * 1000000LL;
    bool by_deadline = false;
    if (ctx->deadline_ns > 0 && ctx->deadline_ns < end) {
        end = ctx->deadline_ns;
        by_deadline = true;
    }
    int rc = 0;
    pthread_mutex_lock(&s->wake_lock);
    for (;;) {
        if (atomic_load(&s->stop)) {
            rc = -ECANCELED;
            break;
        }
        if (clock_mono_ns() >= end) break;
        struct timespec ts = {.tv_sec = end / 1000000000LL, .tv_nsec = end % 1000000000LL};
        pthread_cond_timedwait(&s->wake_cv, &s->wake_lock, &ts); /* timeout or wake: re-check */
    }
    pthread_mutex_unlock(&s->wake_lock);
    if (rc == 0 && by_deadline) rc = -ECANCELED; /* the deadline cut the sleep short */
    return rc;
}

static void hook_progress(struct task_ctx *ctx, double fraction, const char *message)
{
    struct slot *s = ctx->runner;
    struct thread_exec *te = s->te;
    int64_t now = clock_mono_ns();
    if (fraction < 1.0 && now - s->last_progress_ns < PROGRESS_INTERVAL_NS) return;
    s->last_progress_ns = now;
    if (fraction < 0) fraction = 0;
    if (fraction > 1) fraction = 1;
    if (te->base.hooks.progress) te->base.hooks.progress(te->base.hooks.ctx, ctx->job_id, fraction, message);
}

/* Runs one job on slot s (no lock held) and returns its outcome. */
static enum exec_outcome run_job(struct slot *s, struct job *job)
{
    struct thread_exec *te = s->te;
    struct task_ctx ctx = {0};
    ctx.runner = s;
    ctx.progress = hook_progress;
    ctx.should_stop = hook_should_stop;
    ctx.sleep_ms = hook_sleep_ms;
    ctx.deadline_ns = job->timeout_ms > 0 ? clock_mono_ns() + job->timeout_ms * 1000000LL : 0;
    s->last_progress_ns = 0;

    enum exec_outcome outcome = exec_run_task(te->base.tasks, job, &ctx);
    if (outcome == EXEC_OK) return EXEC_OK;
    if (atomic_load(&s->stop)) {
        job->error_type = JOB_ERR_CANCELLED;
        free(job->error_message);
        job->error_message = strdup("cancelled while running");
        return EXEC_CANCELLED;
    }
    if (deadline_passed(&ctx)) {
        char msg[96];
        snprintf(msg, sizeof msg, "timed out after %.3f s", (double)job->timeout_ms / 1000.0);
        job->error_type = JOB_ERR_TIMEOUT;
        free(job->error_message);
        job->error_message = strdup(msg);
    }
    return EXEC_FAILED;
}

static void *worker_main(void *arg)
{
    struct slot *s = arg;
    struct thread_exec *te = s->te;
    pthread_mutex_lock(&te->lock);
    for (;;) {
        while (!te->stop_workers && te->heap.n == 0) {
            te->idle++;
            pthread_cond_wait(&te->work_cv, &te->lock);
            te->idle--;
        }
        if (te->stop_workers) break;
        struct job *job = exec_heap_pop(&te->base, &te->heap);
        if (!job) continue; /* its cold entries could not be read back */
        s->job = job;
        s->started_at_ms = clock_wall_ms();
        atomic_store(&s->stop, 0);
        te->busy++;
        int64_t started_at_ms = s->started_at_ms;
        pthread_mutex_unlock(&te->lock);

        job->status = JOB_RUNNING;
        job->attempt++;
        job->started_at_ms = started_at_ms;
        job->finished_at_ms = 0;
        job->worker_pid = (int)getpid();
        job_set_str(&job->worker_thread, s->name); /* -ENOMEM leaves the old name: harmless */
        if (te->base.hooks.started) te->base.hooks.started(te->base.hooks.ctx, job);

        enum exec_outcome outcome = run_job(s, job);
        job->finished_at_ms = clock_wall_ms();

        pthread_mutex_lock(&te->lock);
        s->job = NULL; /* cancel no longer finds it */
        pthread_mutex_unlock(&te->lock);

        /* Still counted busy until done() returns, so that exec_drain()
         * returns only after every running job's end has been handed over. */
        te->base.hooks.done(te->base.hooks.ctx, job, outcome);
        pthread_mutex_lock(&te->lock);
        te->busy--;
        pthread_cond_broadcast(&te->idle_cv);
    }
    pthread_mutex_unlock(&te->lock);
    return NULL;
}

static int te_submit(struct executor *ex, struct job *job, bool reloadable)
{
    struct thread_exec *te = (struct thread_exec *)ex;
    int rc = 0;
    pthread_mutex_lock(&te->lock);
    if (te->draining) {
        rc = -ESHUTDOWN;
        goto out;
    }
    rc = exec_heap_push(ex, &te->heap, job, reloadable);
    if (rc == 0 && te->idle > 0) pthread_cond_signal(&te->work_cv);
out:
    pthread_mutex_unlock(&te->lock);
    return rc;
}

static int te_cancel(struct executor *ex, const char *job_id)
{
    struct thread_exec *te = (struct thread_exec *)ex;
    struct job *queued = NULL;
    struct slot *running = NULL;
    pthread_mutex_lock(&te->lock);
    queued = exec_heap_remove_id(ex, &te->heap, job_id);
    if (!queued) {
        for (int i = 0; i < ex->size; i++) {
            if (te->slots[i].job && strcmp(te->slots[i].job->id, job_id) == 0) {
                running = &te->slots[i];
                atomic_store(&running->stop, 1);
                break;
            }
        }
    }
    pthread_mutex_unlock(&te->lock);

    if (queued) {
        queued->error_type = JOB_ERR_CANCELLED;
        job_set_str(&queued->error_message, "cancelled while queued");
        queued->finished_at_ms = clock_wall_ms();
        ex->hooks.done(ex->hooks.ctx, queued, EXEC_CANCELLED);
        return 0;
    }
    if (running) {
        /* The slot may already hold the next job by now: then this is a
         * spurious wake that sleep_ms tolerates, and the flag was reset. */
        slot_wake(running);
        return 0;
    }
    return -ENOENT;
}

static void te_stats(struct executor *ex, struct exec_stats *out)
{
    struct thread_exec *te = (struct thread_exec *)ex;
    pthread_mutex_lock(&te->lock);
    out->size = ex->size;
    out->busy = te->busy;
    out->queued = te->heap.n;
    pthread_mutex_unlock(&te->lock);
}

static int te_workers(struct executor *ex, struct exec_worker *out, int max)
{
    struct thread_exec *te = (struct thread_exec *)ex;
    int n = ex->size < max ? ex->size : max, pid = (int)getpid();
    pthread_mutex_lock(&te->lock);
    for (int i = 0; i < n; i++)
        exec_worker_fill(&out[i], i, pid, te->slots[i].name, te->slots[i].job, te->slots[i].started_at_ms);
    pthread_mutex_unlock(&te->lock);
    return n;
}

static void te_drain(struct executor *ex, int64_t grace_ms)
{
    struct thread_exec *te = (struct thread_exec *)ex;
    pthread_mutex_lock(&te->lock);
    te->draining = true;
    struct exec_heap left = exec_heap_take(&te->heap);
    pthread_mutex_unlock(&te->lock);
    exec_heap_drained(ex, &left);

    int64_t end = clock_mono_ns() + (grace_ms > 0 ? grace_ms : 0) * 1000000LL;
    pthread_mutex_lock(&te->lock);
    if (!exec_wait_idle(&te->lock, &te->idle_cv, &te->busy, end)) { /* the grace is over: stop them all */
        for (int i = 0; i < ex->size; i++)
            if (te->slots[i].job) atomic_store(&te->slots[i].stop, 1);
        pthread_mutex_unlock(&te->lock);
        for (int i = 0; i < ex->size; i++) slot_wake(&te->slots[i]);
        pthread_mutex_lock(&te->lock);
        exec_wait_idle(&te->lock, &te->idle_cv, &te->busy, INT64_MAX);
    }
    pthread_mutex_unlock(&te->lock);
}

static void te_free(struct executor *ex)
{
    struct thread_exec *te = (struct thread_exec *)ex;
    te_drain(ex, 0);
    pthread_mutex_lock(&te->lock);
    te->stop_workers = true;
    pthread_cond_broadcast(&te->work_cv);
    pthread_mutex_unlock(&te->lock);
    for (int i = 0; i < te->started; i++) pthread_join(te->slots[i].thread, NULL);
    for (int i = 0; i < ex->size; i++) {
        pthread_mutex_destroy(&te->slots[i].wake_lock);
        pthread_cond_destroy(&te->slots[i].wake_cv);
    }
    pthread_mutex_destroy(&te->lock);
    pthread_cond_destroy(&te->work_cv);
    pthread_cond_destroy(&te->idle_cv);
    exec_heap_fini(&te->heap);
    free(te->slots);
    exec_base_fini(ex);
    free(te);
}

static const struct exec_vtable thread_vtable = {
    .submit = te_submit, .cancel = te_cancel, .stats = te_stats, .workers = te_workers, .drain = te_drain,
    .free = te_free,
};

int exec_thread_new(const struct exec_config *cfg, const struct task_registry *tasks,
                    const struct exec_hooks *hooks, struct executor **out)
{
    int rc = 0;
    struct thread_exec *te = calloc(1, sizeof *te);
    if (!te) return -ENOMEM;
    if ((rc = exec_base_init(&te->base, &thread_vtable, cfg, tasks, hooks)) < 0) {
        free(te);
        return rc;
    }
    pthread_mutex_init(&te->lock, NULL);
    exec_cond_init_mono(&te->work_cv);
    exec_cond_init_mono(&te->idle_cv);
    te->slots = calloc((size_t)cfg->size, sizeof *te->slots);
    if (!te->slots) {
        rc = -ENOMEM;
        goto fail;
    }
    for (int i = 0; i < cfg->size; i++) {
        struct slot *s = &te->slots[i];
        s->te = te;
        s->index = i;
        pthread_mutex_init(&s->wake_lock, NULL);
        exec_cond_init_mono(&s->wake_cv);
        snprintf(s->name, sizeof s->name, "%s-%d", cfg->name, i);
    }
    for (int i = 0; i < cfg->size; i++) {
        int e = pthread_create(&te->slots[i].thread, NULL, worker_main, &te->slots[i]);
        if (e) {
            rc = -e;
            goto fail;
        }
        te->started++;
    }
    *out = &te->base;
    return 0;
fail:
    if (te->slots) {
        te_free(&te->base);
    } else {
        pthread_mutex_destroy(&te->lock);
        pthread_cond_destroy(&te->work_cv);
        pthread_cond_destroy(&te->idle_cv);
        exec_base_fini(&te->base);
        free(te);
    }
    return rc;
}
