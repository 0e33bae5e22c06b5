/* async.c - the async executor: asyncio's event loop + asyncio.Semaphore(size).
 *
 * DESIGN. One thread runs a libuv loop, and every job of this executor runs on
 * it as an async task (task.h, struct task_actx): the task starts libuv handles
 * (timers, pipes, processes, sockets) and reports its end through done(). At
 * most base.size jobs run at once; the rest wait in the ready heap.
 *
 * Hand-off. exec_submit() (any thread) pushes the job into the heap under
 * `lock` and, only when a slot is free, wakes the loop with uv_async_send(),
 * which libuv coalesces: a burst of submits costs one wake-up, and a saturated
 * executor none at all, since the loop pops the heap itself whenever a job
 * ends. The loop pops in batches of PUMP_BATCH per lock acquisition and starts
 * at most PUMP_BUDGET jobs per callback before letting other events in.
 *
 * A running job is one `struct ajob` (one allocation, recycled through a free
 * list): its task_actx, its timeout timer and its links. It is in two places:
 * `running`, a list only the loop touches (drain stops everything on it), and
 * `index`, a hash by job id under `lock`, so that exec_cancel() from any thread
 * finds it in O(1). A cancel links the job on `cancels` and wakes the loop,
 * which calls the task's stop(); the timeout timer calls stop() the same way.
 * stop() is called at most once per job and never after done(). A task that
 * then fails is reported by the cause (cancel and drain: EXEC_CANCELLED;
 * timeout: EXEC_FAILED "timeout"); one that succeeds anyway, or has no stop()
 * and runs to its end, keeps its outcome, as on the thread executor.
 *
 * End of a job. done() (or a start() that returned 1 or -1) fixes the outcome
 * and takes the job out of `index` (a cancel no longer finds it). The loop then
 * closes the job's timer and reports hooks.done only in that close callback,
 * once every handle of the job is closed. `busy` drops after hooks.done
 * returns, so exec_drain() returning means every end was handed over.
 *
 * Nothing on the loop thread blocks: no storage, no sleeping, and no lock is
 * held across a call-out (hooks and tasks run with `lock` released). The hooks
 * take the core's locks briefly; that is allowed. exec_free() stops the loop,
 * closes whatever is left and requires uv_loop_close() == 0.
 *
 * Ownership: fields marked "lock" are guarded by `lock`; every other field of
 * struct ajob and the fields marked "loop" belong to the loop thread.
 */
#include "exec.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "exec_int.h"

#define PROGRESS_INTERVAL_NS (100 * 1000000LL) /* progress reaches the hooks at most this often per job */
#define PUMP_BATCH 64     /* jobs popped per lock acquisition */
#define PUMP_BUDGET 4096  /* jobs started per loop callback before yielding */
#define SPARE_MAX 1024    /* free records kept for reuse */
#define OOM_RETRY_MS 100  /* when a record cannot be allocated, pump again after this */
#define INDEX_MIN 16

enum stop_reason { STOP_NONE = 0, STOP_CANCEL, STOP_TIMEOUT, STOP_DRAIN };

struct async_exec;

struct ajob {
    struct task_actx actx; /* actx.runner == this */
    uv_timer_t timer;      /* timeout; initialised once start() returned 0 (has_timer) */
    struct async_exec *ae;
    struct job *job;
    cJSON *args;
    char id[ID_LEN + 1];        /* lock (written at pop, then immutable until recycled) */
    int64_t started_at_ms;      /* lock, the same way */
    struct ajob *hnext;         /* lock: chain in ae->index */
    struct ajob *cprev, *cnext; /* lock: on ae->cancels */
    bool in_cancels;            /* lock */
    struct ajob *prev, *next;   /* on ae->running; `next` also links ae->spare */
    struct ajob *stop_next;     /* a batch of cancels being served */
    enum stop_reason stop_reason;
    enum exec_outcome outcome;  /* set when finished */
    bool in_start, done_early, finished, has_timer;
    int64_t last_progress_ns;
};

struct async_exec {
    struct executor base;
    uv_loop_t loop;
    uv_async_t wake;  /* sent from any thread: work, cancels, stop_all, quit */
    uv_timer_t retry; /* loop: pump again after an allocation failure */
    pthread_t thread;
    int pid;
    char thread_name[64]; /* "<name>-0", immutable */

    pthread_mutex_t lock;
    pthread_cond_t idle_cv;  /* CLOCK_MONOTONIC; broadcast when busy drops to 0 */
    struct exec_heap heap;   /* lock */
    int busy;                /* lock: jobs popped and not yet reported */
    bool draining;           /* lock: no more submits nor pops */
    bool stop_all;           /* lock: the drain grace is over: stop every running job */
    bool quit;               /* lock: exec_free: stop the loop */
    struct ajob **index;     /* lock: running jobs by id; nindex buckets, a power of two */
    size_t nindex;
    struct ajob *cancels;    /* lock: running jobs to stop */

    struct ajob *running; /* loop */
    struct ajob *spare;   /* loop (and exec_free after the join) */
    int nspare;           /* loop */
    bool stopped_all;     /* loop: stop_all served */
};

/* ---- the index and the cancel list (lock held) --------------------------- */

static size_t id_hash(const char *id)
{
    uint64_t h = 0xcbf29ce484222325u; /* FNV-1a */
    for (; *id; id++) {
        h ^= (unsigned char)*id;
        h *= 0x100000001b3u;
    }
    return (size_t)h;
}

static void index_put(struct async_exec *ae, struct ajob *r)
{
    struct ajob **b = &ae->index[id_hash(r->id) & (ae->nindex - 1)];
    r->hnext = *b;
    *b = r;
}

static void index_del(struct async_exec *ae, struct ajob *r)
{
    struct ajob **p = &ae->index[id_hash(r->id) & (ae->nindex - 1)];
    while (*p && *p != r) p = &(*p)->hnext;
    if (*p) *p = r->hnext;
}

static struct ajob *index_get(struct async_exec *ae, const char *id)
{
    struct ajob *r = ae->index[id_hash(id) & (ae->nindex - 1)];
    while (r && strcmp(r->id, id) != 0) r = r->hnext;
    return r;
}

static void cancels_add(struct async_exec *ae, struct ajob *r)
{
    r->cprev = NULL;
    r->cnext = ae->cancels;
    if (ae->cancels) ae->cancels->cprev = r;
    ae->cancels = r;
    r->in_cancels = true;
}

static void cancels_del(struct async_exec *ae, struct ajob *r)
{
    if (r->cprev) r->cprev->cnext = r->cnext;
    else ae->cancels = r->cnext;
    if (r->cnext) r->cnext->cprev = r->cprev;
    r->cprev = r->cnext = NULL;
    r->in_cancels = false;
}

/* ---- loop-only lists ----------------------------------------------------- */

static void running_add(struct async_exec *ae, struct ajob *r)
{
    r->prev = NULL;
    r->next = ae->running;
    if (ae->running) ae->running->prev = r;
    ae->running = r;
}

static void running_del(struct async_exec *ae, struct ajob *r)
{
    if (r->prev) r->prev->next = r->next;
    else ae->running = r->next;
    if (r->next) r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

/* Keeps at least n zeroed records on the free list; returns how many it holds
 * (fewer than n only when out of memory). */
static int spare_fill(struct async_exec *ae, int n)
{
    while (ae->nspare < n) {
        struct ajob *r = calloc(1, sizeof *r);
        if (!r) break;
        r->next = ae->spare;
        ae->spare = r;
        ae->nspare++;
    }
    return ae->nspare;
}

static void spare_put(struct async_exec *ae, struct ajob *r)
{
    if (ae->nspare >= SPARE_MAX) {
        free(r);
        return;
    }
    memset(r, 0, sizeof *r);
    r->next = ae->spare;
    ae->spare = r;
    ae->nspare++;
}

/* ---- one job's life on the loop ------------------------------------------ */

static void pump(struct async_exec *ae);

/* Moves the task's outputs into the job (result, or error type and message,
 * rewritten for a stop the runner asked for) and frees the task's args and
 * result. Returns the outcome. */
static enum exec_outcome job_collect(struct ajob *r, bool failed)
{
    struct job *job = r->job;
    struct task_actx *a = &r->actx;
    enum exec_outcome outcome = EXEC_OK;
    char msg[128];

    if (!failed) {
        char *text = NULL;
        if (a->result && !(text = cJSON_PrintUnformatted(a->result))) {
            failed = true;
            a->error_type = JOB_ERR_INVALID_RESULT;
            snprintf(a->error_message, sizeof a->error_message, "%s", "the task's result could not be serialised");
        } else {
            free(job->result);
            job->result = text;
        }
    } else if (a->result) { /* a failed task may leave a result (exec keeps its output) */
        free(job->result);
        job->result = cJSON_PrintUnformatted(a->result);
    }
    if (failed) {
        /* Like the thread executor: a task that succeeds despite a stop
         * request keeps its success; one that fails is reported by the cause. */
        enum job_error_type type = a->error_type != JOB_ERR_NONE ? a->error_type : JOB_ERR_TASK;
        const char *text = a->error_message[0] ? a->error_message : "the task failed";
        outcome = EXEC_FAILED;
        if (r->stop_reason == STOP_TIMEOUT) {
            type = JOB_ERR_TIMEOUT;
            snprintf(msg, sizeof msg, "timed out after %.3f s", (double)job->timeout_ms / 1000.0);
            text = msg;
        } else if (r->stop_reason == STOP_CANCEL || r->stop_reason == STOP_DRAIN) {
            type = JOB_ERR_CANCELLED;
            text = r->stop_reason == STOP_CANCEL ? "cancelled while running"
                                                 : "cancelled while running: the executor was drained";
            outcome = EXEC_CANCELLED;
        }
        job->error_type = type;
        job_set_str(&job->error_message, text); /* -ENOMEM leaves no message; the type says enough */
    }
    job->finished_at_ms = clock_wall_ms();
    cJSON_Delete(a->result);
    a->result = NULL;
    a->args = NULL;
    cJSON_Delete(r->args);
    r->args = NULL;
    return outcome;
}

/* Hands the job to hooks.done, recycles the record and frees the slot. */
static void job_report(struct ajob *r)
{
    struct async_exec *ae = r->ae;
    struct job *job = r->job;
    enum exec_outcome outcome = r->outcome;
    running_del(ae, r);
    spare_put(ae, r);
    ae->base.hooks.done(ae->base.hooks.ctx, job, outcome);
    pthread_mutex_lock(&ae->lock);
    if (--ae->busy == 0) pthread_cond_broadcast(&ae->idle_cv);
    pthread_mutex_unlock(&ae->lock);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct ajob *r = h->data;
    struct async_exec *ae = r->ae;
    job_report(r);
    pump(ae); /* a slot is free */
}

/* The outcome is known: takes the job out of reach of exec_cancel() and
 * reports it, at once when none of our handles is open, else once its timer
 * is closed. */
static void job_end(struct ajob *r, bool failed)
{
    struct async_exec *ae = r->ae;
    r->finished = true;
    r->outcome = job_collect(r, failed);
    pthread_mutex_lock(&ae->lock);
    index_del(ae, r);
    if (r->in_cancels) cancels_del(ae, r);
    pthread_mutex_unlock(&ae->lock);
    if (r->has_timer)
        uv_close((uv_handle_t *)&r->timer, on_timer_closed); /* stops it if active */
    else
        job_report(r);
}

/* actx->done: the task has closed its handles and set its outputs. */
static void on_task_done(struct task_actx *a)
{
    struct ajob *r = a->runner;
    if (r->in_start) { /* against the contract; handled when start() returns */
        r->done_early = true;
        return;
    }
    if (r->finished) {
        LOG_ERROR("job %s: task %s called done() twice; ignored", r->id, r->job->task);
        return;
    }
    job_end(r, a->error_type != JOB_ERR_NONE);
}

static void on_task_progress(struct task_actx *a, double fraction, const char *message)
{
    struct ajob *r = a->runner;
    struct async_exec *ae = r->ae;
    if (r->finished || !ae->base.hooks.progress) return;
    int64_t now = clock_mono_ns();
    if (fraction < 1.0 && now - r->last_progress_ns < PROGRESS_INTERVAL_NS) return;
    r->last_progress_ns = now;
    if (!(fraction >= 0)) fraction = 0; /* also NaN */
    if (fraction > 1) fraction = 1;
    ae->base.hooks.progress(ae->base.hooks.ctx, r->id, fraction, message);
}

/* Asks a running task to stop, once: the first reason wins. A task without
 * stop() runs to its end, and its failure is then reported by this reason. */
static void job_stop(struct ajob *r, enum stop_reason reason)
{
    if (r->finished || r->stop_reason != STOP_NONE) return;
    r->stop_reason = reason;
    if (r->actx.stop) r->actx.stop(&r->actx);
}

static void on_timeout(uv_timer_t *t)
{
    job_stop(t->data, STOP_TIMEOUT);
}

/* Starts a popped job: marks it running, calls hooks.started and the task. */
static void job_start(struct ajob *r)
{
    struct async_exec *ae = r->ae;
    struct job *job = r->job;
    struct task_actx *a = &r->actx;
    int rc = -1;

    job->status = JOB_RUNNING;
    job->attempt++;
    job->started_at_ms = r->started_at_ms;
    job->finished_at_ms = 0;
    job->worker_pid = ae->pid;
    job_set_str(&job->worker_thread, ae->thread_name); /* -ENOMEM leaves the old name: harmless */
    running_add(ae, r);
    if (ae->base.hooks.started) ae->base.hooks.started(ae->base.hooks.ctx, job);

    a->job_id = r->id;
    a->loop = &ae->loop;
    a->done = on_task_done;
    a->progress = on_task_progress;
    a->runner = r;
    const struct task_def *def = task_find(ae->base.tasks, job->task);
    if (!def) {
        task_afail(a, JOB_ERR_TASK, "task '%s' is not registered on this server", job->task);
    } else if (!def->start_async) { /* the core refuses these at submit */
        task_afail(a, JOB_ERR_TASK, "task '%s' has no async implementation", job->task);
    } else if (!(r->args = cJSON_Parse(job->args ? job->args : "{}"))) {
        task_afail(a, JOB_ERR_TASK, "%s", "the stored args are not valid JSON");
    } else {
        a->args = r->args;
        r->in_start = true;
        rc = def->start_async(a);
        r->in_start = false;
    }
    if (rc == 0) {
        uv_timer_init(&ae->loop, &r->timer); /* cannot fail */
        r->timer.data = r;
        r->has_timer = true;
        if (r->done_early) {
            LOG_ERROR("job %s: task %s called done() from inside start()", r->id, job->task);
            job_end(r, a->error_type != JOB_ERR_NONE);
        } else if (job->timeout_ms > 0) {
            uv_timer_start(&r->timer, on_timeout, (uint64_t)job->timeout_ms, 0);
        }
        return;
    }
    if (rc != 1 && a->error_type == JOB_ERR_NONE) a->error_type = JOB_ERR_TASK;
    job_end(r, rc != 1);
}

static void on_retry(uv_timer_t *t)
{
    pump(t->data);
}

/* Starts queued jobs while slots are free, in heap order. */
static void pump(struct async_exec *ae)
{
    struct ajob *batch[PUMP_BATCH];
    int want = ae->base.size < PUMP_BATCH ? ae->base.size : PUMP_BATCH;
    int started = 0;

    for (;;) {
        /* spare_fill returns every spare (up to SPARE_MAX once jobs have
         * ended): at most `want` of them fit in batch[]. */
        int have = spare_fill(ae, want), n = 0;
        if (have > want) have = want;
        bool starved = false;
        int64_t now_ms = clock_wall_ms();
        pthread_mutex_lock(&ae->lock);
        while (ae->busy < ae->base.size && ae->heap.n > 0 && !ae->draining) {
            if (n == have) {
                starved = n == 0;
                break;
            }
            struct job *job = exec_heap_pop(&ae->base, &ae->heap);
            if (!job) break; /* its cold entries could not be read back */
            struct ajob *r = ae->spare;
            ae->spare = r->next;
            ae->nspare--;
            r->next = NULL;
            r->ae = ae;
            r->job = job;
            memcpy(r->id, r->job->id, sizeof r->id);
            r->started_at_ms = now_ms;
            index_put(ae, r);
            ae->busy++;
            batch[n++] = r;
        }
        pthread_mutex_unlock(&ae->lock);
        if (starved) {
            LOG_ERROR("executor %s: out of memory; retrying in %d ms", ae->base.name, OOM_RETRY_MS);
            uv_timer_start(&ae->retry, on_retry, OOM_RETRY_MS, 0);
            return;
        }
        if (n == 0) return;
        uv_update_time(&ae->loop); /* so that timers count from each job's start */
        for (int i = 0; i < n; i++) job_start(batch[i]);
        started += n;
        if (started >= PUMP_BUDGET) {
            uv_async_send(&ae->wake); /* more next iteration; let timers and I/O in */
            return;
        }
    }
}

/* The loop's wake-up: cancels, the end of a drain's grace, exec_free, work. */
static void on_wake(uv_async_t *h)
{
    struct async_exec *ae = h->data;
    struct ajob *stops = NULL;
    pthread_mutex_lock(&ae->lock);
    bool quit = ae->quit, stop_all = ae->stop_all && !ae->stopped_all;
    while (ae->cancels) {
        struct ajob *r = ae->cancels;
        cancels_del(ae, r);
        r->stop_next = stops;
        stops = r;
    }
    pthread_mutex_unlock(&ae->lock);

    /* Records stay valid here: a job ends at the earliest in a close callback,
     * which runs in a later phase of the loop. */
    for (struct ajob *r = stops; r; r = r->stop_next) job_stop(r, STOP_CANCEL);
    if (stop_all) {
        ae->stopped_all = true;
        for (struct ajob *r = ae->running; r; r = r->next) job_stop(r, STOP_DRAIN);
    }
    if (quit) {
        uv_stop(&ae->loop);
        return;
    }
    pump(ae);
}

static void close_left(uv_handle_t *h, void *arg)
{
    struct async_exec *ae = arg;
    if (uv_is_closing(h)) return;
    if (h != (uv_handle_t *)&ae->wake && h != (uv_handle_t *)&ae->retry)
        LOG_WARN("executor %s: a task left a %s handle open; closing it", ae->base.name,
                 uv_handle_type_name(h->type));
    uv_close(h, NULL);
}

static void *loop_main(void *arg)
{
    struct async_exec *ae = arg;
    uv_run(&ae->loop, UV_RUN_DEFAULT); /* until on_wake sees quit */
    uv_walk(&ae->loop, close_left, ae);
    uv_run(&ae->loop, UV_RUN_DEFAULT); /* runs the close callbacks, then returns */
    return NULL;
}

/* ---- the executor interface ---------------------------------------------- */

static int ae_submit(struct executor *ex, struct job *job, bool reloadable)
{
    struct async_exec *ae = (struct async_exec *)ex;
    bool wake = false;
    int rc = 0;
    pthread_mutex_lock(&ae->lock);
    if (ae->draining) {
        rc = -ESHUTDOWN;
        goto out;
    }
    rc = exec_heap_push(ex, &ae->heap, job, reloadable);
    /* With every slot busy the loop pops by itself when a job ends. */
    wake = rc == 0 && ae->busy < ex->size;
out:
    pthread_mutex_unlock(&ae->lock);
    if (wake) uv_async_send(&ae->wake);
    return rc;
}

static int ae_cancel(struct executor *ex, const char *job_id)
{
    struct async_exec *ae = (struct async_exec *)ex;
    struct job *queued = NULL;
    bool running = false;
    pthread_mutex_lock(&ae->lock);
    queued = exec_heap_remove_id(ex, &ae->heap, job_id);
    if (!queued) {
        struct ajob *r = index_get(ae, job_id);
        if (r) {
            running = true;
            if (!r->in_cancels) cancels_add(ae, r);
        }
    }
    pthread_mutex_unlock(&ae->lock);

    if (queued) {
        queued->error_type = JOB_ERR_CANCELLED;
        job_set_str(&queued->error_message, "cancelled while queued");
        queued->finished_at_ms = clock_wall_ms();
        ex->hooks.done(ex->hooks.ctx, queued, EXEC_CANCELLED);
        return 0;
    }
    if (running) {
        uv_async_send(&ae->wake);
        return 0;
    }
    return -ENOENT;
}

static void ae_stats(struct executor *ex, struct exec_stats *out)
{
    struct async_exec *ae = (struct async_exec *)ex;
    pthread_mutex_lock(&ae->lock);
    out->size = ex->size;
    out->busy = ae->busy;
    out->queued = ae->heap.n;
    pthread_mutex_unlock(&ae->lock);
}

/* Running jobs, from the index: their order is the hash's, not their age. */
static int ae_workers(struct executor *ex, struct exec_worker *out, int max)
{
    struct async_exec *ae = (struct async_exec *)ex;
    int n = 0;
    if (max > EXEC_ASYNC_WORKERS_MAX) max = EXEC_ASYNC_WORKERS_MAX;
    pthread_mutex_lock(&ae->lock);
    if (max > ae->busy) max = ae->busy; /* busy >= jobs in the index: stops the walk early */
    for (size_t b = 0; b < ae->nindex && n < max; b++)
        for (const struct ajob *r = ae->index[b]; r && n < max; r = r->hnext, n++)
            exec_worker_fill(&out[n], n, ae->pid, ae->thread_name, r->job, r->started_at_ms);
    pthread_mutex_unlock(&ae->lock);
    return n;
}

static void ae_drain(struct executor *ex, int64_t grace_ms)
{
    struct async_exec *ae = (struct async_exec *)ex;
    pthread_mutex_lock(&ae->lock);
    ae->draining = true;
    struct exec_heap left = exec_heap_take(&ae->heap);
    pthread_mutex_unlock(&ae->lock);
    exec_heap_drained(ex, &left);

    int64_t end = clock_mono_ns() + (grace_ms > 0 ? grace_ms : 0) * 1000000LL;
    pthread_mutex_lock(&ae->lock);
    if (!exec_wait_idle(&ae->lock, &ae->idle_cv, &ae->busy, end)) { /* the grace is over: stop them all */
        ae->stop_all = true;
        pthread_mutex_unlock(&ae->lock);
        uv_async_send(&ae->wake);
        pthread_mutex_lock(&ae->lock);
        exec_wait_idle(&ae->lock, &ae->idle_cv, &ae->busy, INT64_MAX);
    }
    pthread_mutex_unlock(&ae->lock);
}

/* Frees what exec_async_new() built; the loop thread is gone (or never ran). */
static void ae_destroy(struct async_exec *ae)
{
    while (ae->spare) {
        struct ajob *r = ae->spare;
        ae->spare = r->next;
        free(r);
    }
    pthread_mutex_destroy(&ae->lock);
    pthread_cond_destroy(&ae->idle_cv);
    exec_heap_fini(&ae->heap);
    free(ae->index);
    exec_base_fini(&ae->base);
    free(ae);
}

/* Closes the loop, which must hold no handle any more (libuv's rule: a
 * handle left open is a leak and a bug). */
static void loop_close(struct async_exec *ae)
{
    int rc = uv_loop_close(&ae->loop);
    if (rc != 0) LOG_ERROR("executor %s: uv_loop_close: %s (a handle is still open)", ae->base.name, uv_strerror(rc));
    assert(rc == 0);
}

static void ae_free(struct executor *ex)
{
    struct async_exec *ae = (struct async_exec *)ex;
    ae_drain(ex, 0);
    pthread_mutex_lock(&ae->lock);
    ae->quit = true;
    pthread_mutex_unlock(&ae->lock);
    uv_async_send(&ae->wake);
    pthread_join(ae->thread, NULL);
    loop_close(ae);
    ae_destroy(ae);
}

static const struct exec_vtable async_vtable = {
    .submit = ae_submit, .cancel = ae_cancel, .stats = ae_stats, .workers = ae_workers, .drain = ae_drain,
    .free = ae_free,
};

int exec_async_new(const struct exec_config *cfg, const struct task_registry *tasks,
                   const struct exec_hooks *hooks, struct executor **out)
{
    int rc = 0;
    bool loop_ok = false;
    struct async_exec *ae = calloc(1, sizeof *ae);
    if (!ae) return -ENOMEM;
    if ((rc = exec_base_init(&ae->base, &async_vtable, cfg, tasks, hooks)) < 0) {
        free(ae);
        return rc;
    }
    pthread_mutex_init(&ae->lock, NULL);
    exec_cond_init_mono(&ae->idle_cv);
    ae->pid = (int)getpid();
    snprintf(ae->thread_name, sizeof ae->thread_name, "%s-0", cfg->name);

    /* Running jobs never exceed size: a fixed table keeps chains short. */
    ae->nindex = INDEX_MIN;
    while (ae->nindex < (size_t)cfg->size) ae->nindex *= 2;
    ae->index = calloc(ae->nindex, sizeof *ae->index);
    if (!ae->index) {
        rc = -ENOMEM;
        goto fail;
    }
    if ((rc = uv_loop_init(&ae->loop)) < 0) goto fail;
    loop_ok = true;
    if ((rc = uv_async_init(&ae->loop, &ae->wake, on_wake)) < 0) goto fail;
    ae->wake.data = ae;
    uv_timer_init(&ae->loop, &ae->retry);
    ae->retry.data = ae;
    int e = pthread_create(&ae->thread, NULL, loop_main, ae);
    if (e) {
        rc = -e;
        goto fail;
    }
    *out = &ae->base;
    return 0;
fail:
    if (loop_ok) {
        uv_walk(&ae->loop, close_left, ae);
        uv_run(&ae->loop, UV_RUN_DEFAULT);
        loop_close(ae);
    }
    ae_destroy(ae);
    return rc;
}
