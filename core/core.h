/* core.h - validation, the dispatcher and the waiters.
 *
 * The core turns a validated job into a committed row, hands it to its
 * executor when it becomes eligible, records every state change through the
 * store, and wakes whoever waits on a job when it ends. It knows no HTTP: the
 * server passes callbacks (`core_done_cb`, `core_wake_cb`) and a context.
 */
#ifndef JOBD_CORE_H
#define JOBD_CORE_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "../common/apierr.h"
#include "../common/job.h"
#include "../storage/store.h"
#include "../tasks/task.h"

struct core;

#define CORE_NAME_MAX 64

struct core_executor_config {
    char name[CORE_NAME_MAX];
    unsigned kind;   /* TASK_KIND_* */
    int size;        /* >= 1 */
    long max_queued; /* scheduled + queued jobs held at most; past it submits get -EAGAIN */
    long memory_mb;   /* process executors: RLIMIT_AS per worker, 0 = none */
    long cpu_seconds; /* process executors: RLIMIT_CPU per worker, 0 = none */
};

struct core_options {
    const struct core_executor_config *executors;
    int n_executors;
    const struct task_registry *tasks; /* outlives the core */
    struct store *store;               /* outlives the core */
    const char *const *worker_argv;    /* how process executors start a worker (outlives the core) */
    /* Retention (core/retention.c): a background thread deletes finished
     * jobs this long (ms) after they finished; 0 keeps them forever. */
    int64_t retention_ms;        /* succeeded jobs */
    int64_t retention_failed_ms; /* failed and cancelled jobs */
    int64_t prune_interval_ms;   /* pause between passes; 0 = 60 s */
    /* Events (core/events.c): how many recent events are kept in memory for
     * live subscribers; one that falls further behind is told to resync. */
    long event_buffer; /* 0 = 8192 */
    /* Pending jobs kept whole in memory per executor ready queue and on the
     * timer heap; past it a job waits as a small cold entry and is read back
     * from the database when its turn comes (core/cold.c). 0 = no limit. */
    long resident_jobs;
    /* Callbacks (core/callbacks.c). */
    const char *callback_secret;  /* HMAC-SHA256 key for the signature header; NULL or "" = unsigned */
    int64_t callback_timeout_ms;  /* one delivery attempt at most; 0 = 10 s */
    int callback_max_attempts;    /* attempts before callback_status "failed"; 0 = 10 */
    int64_t callback_backoff_ms;  /* wait before the 2nd attempt, doubled each time (capped at 10 min); 0 = 1 s */
};

/* Starts the executors and the timer thread, runs recovery (store_recover),
 * re-dispatches every pending job and starts the retention thread. Returns 0
 * or a negative errno. */
int core_open(const struct core_options *opt, struct core **out);

/* Stops accepting jobs and pruning, gives running jobs grace_ms to finish
 * (then tells them to stop: they are retried at the next start), wakes every
 * waiter, and waits for the store to commit what is pending. Idempotent. */
void core_drain(struct core *c, int64_t grace_ms);

/* Drains with no grace if not drained, then frees. Accepts NULL. */
void core_close(struct core *c);

/* --- validation --- */

/* Builds a job from a submit spec (SPEC §2 fields). `field_prefix` is prepended
 * to field paths in errors ("" or "jobs[3]."). On success *out is a new job
 * (id, created_at, status queued or scheduled, executor resolved); on failure
 * returns -1 with err set and *out untouched. */
int core_job_from_json(struct core *c, const cJSON *spec, const char *field_prefix, struct job **out,
                       struct api_err *err);

/* --- jobs --- */

/* Called once when an operation is settled: rc 0 or a negative errno
 * (-EAGAIN queue full, -ENOSPC/-EIO/-EBUSY storage, -ESHUTDOWN draining,
 * -ENOENT no such job, -EALREADY wrong state). `job` is lent for the call
 * and may be NULL (it is NULL for submits: the job is already running).
 * Runs on a core or store thread: must not block. */
typedef void (*core_done_cb)(void *ctx, int rc, const struct job *job);

/* Commits the job and then dispatches it; cb runs after the commit. The job
 * is moved in. Returns 0 (cb will be called) or a negative errno (-EAGAIN
 * when its executor's queue is full, -ESHUTDOWN when draining; cb not called,
 * job freed). */
int core_job_submit(struct core *c, struct job *job, core_done_cb cb, void *ctx);

/* Cancels a job that is not finished. A scheduled or queued job ends
 * `cancelled` (its terminal update is queued before this returns); a running
 * one is told to stop (the thread executor asks the task to stop; it ends
 * `cancelled` when the task notices). Wait on the job to see the outcome.
 * Returns 0, -ENOENT (no such job), -EALREADY (finished or finishing) or
 * -EBUSY (the job is not live yet: starting up). Runs on the caller's thread. */
int core_job_cancel(struct core *c, const char *id);

/* Submits a copy of a failed or cancelled job as a new job (new id, attempt 0,
 * same task, args and options) exactly like core_job_submit(). When out_new is
 * not NULL it gets a copy of the new job (caller frees). Returns 0 (cb will be
 * called after the commit), -ENOENT, -EALREADY (not failed or cancelled),
 * -EINVAL (the task can no longer run here), or core_job_submit's errors. */
int core_job_retry(struct core *c, const char *id, core_done_cb cb, void *ctx, struct job **out_new);

/* Forgets a finished job. cb gets 0, -ENOENT or -EALREADY (not finished). */
int core_job_delete(struct core *c, const char *id, core_done_cb cb, void *ctx);

/* --- waiters --- */

/* Called exactly once per registered waiter that is not cancelled: when the
 * job's terminal state is committed, when the deadline passes, or when the
 * core drains. From a core or store thread: must not block. */
typedef void (*core_wake_cb)(void *ctx);

/* Registers a waiter on job `id` until deadline_mono_ms (clock_mono_ms()).
 * Register first, then read the job: a job that ends in between still wakes
 * the waiter. Returns 0 and a token, or -ENOMEM / -ESHUTDOWN. */
int core_wait_job(struct core *c, const char *id, int64_t deadline_mono_ms, core_wake_cb cb, void *ctx,
                  uint64_t *token);

/* Unregisters a waiter. True when it was still registered (its callback will
 * never run); false when it already fired or is firing. */
bool core_wait_cancel(struct core *c, const char *id, uint64_t token);

/* --- waiting on many jobs (POST /v1/wait) --- */

enum core_return_when { CORE_ALL_COMPLETED, CORE_FIRST_COMPLETED, CORE_FIRST_EXCEPTION };
struct core_waitset;

/* Waits, like concurrent.futures.wait(), on the n jobs `ids` (valid ids,
 * duplicates allowed) until `when` holds or deadline_mono_ms passes. The jobs
 * that are not live (finished, or unknown) are returned in *not_live (an
 * array of indexes into ids, *n_not_live of them; caller frees): the caller
 * reads them and reports each one that finished with core_waitset_done()
 * before core_waitset_arm(). FIRST_EXCEPTION counts failed jobs (as Python
 * counts futures that raised; a cancelled job is not an exception). Returns
 * 0 or -ENOMEM / -ESHUTDOWN. */
int core_waitset_open(struct core *c, const char *const *ids, size_t n, enum core_return_when when,
                      struct core_waitset **out, size_t **not_live, size_t *n_not_live);
/* A job of the set found finished by the caller (status terminal). */
void core_waitset_done(struct core_waitset *ws, enum job_status status);
/* Returns true when the condition already holds (cb will never run), else
 * false: cb then runs exactly once - when it holds, at the deadline or at
 * drain - from a core or store thread. */
bool core_waitset_arm(struct core_waitset *ws, int64_t deadline_mono_ms, core_wake_cb cb, void *ctx);
/* Frees the set. Returns true when cb will not run (it ran, or was never
 * going to); false when it is firing right now: then it still runs once, and
 * the set is freed by the core after it. Call once, from the owner. */
bool core_waitset_close(struct core_waitset *ws);

/* --- batches (core/batches.c) --- */

#define CORE_BATCH_MAX 10000

/* Validates a POST /v1/batches body {"jobs": [spec...], "callback_url"?,
 * "idempotency_key"?} all or nothing (errors name "jobs[3].task"). In a
 * batch, depends_on may also hold integers: the index of another job of the
 * same batch; cycles are refused. On success *jobs is an array of *n new jobs
 * (batch_id set) and *batch the batch row (its strings owned; clear with
 * store_batch_clear). The idempotency key may instead come from the header
 * (header_key, may be NULL): both given and different is an error. */
int core_batch_from_json(struct core *c, const cJSON *body, const char *header_key, struct store_batch *batch,
                         struct job ***jobs, size_t *n, struct api_err *err);
/* Commits the batch and its jobs in one transaction, then dispatches them;
 * cb runs after the commit (rc 0, -EEXIST idempotency key taken meanwhile,
 * or a storage errno). jobs (array and jobs) are moved in. Returns 0 (cb
 * will be called) or -EAGAIN (an executor's queue would overflow: nothing
 * written), -ESHUTDOWN, -ENOMEM (cb not called; everything freed). */
int core_batch_submit(struct core *c, const struct store_batch *batch, struct job **jobs, size_t n,
                      core_done_cb cb, void *ctx);
/* The batch resource {"id", "total", "counts", "done", "created_at",
 * "finished_at", "callback_url", "callback_status"}. NULL when out of memory. */
cJSON *core_batch_to_json(const struct store_batch *b);

/* --- events (core/events.c): the live feed behind GET /v1/events ---
 *
 * Committed events (store_event) are kept in a ring of the last
 * event_buffer events (copies). A subscriber reads from a seq onwards: from
 * the durable log (store_events_read, on the caller's thread) while it is
 * older than the ring, then from the ring. Idle subscribers hold no thread:
 * core_events_next() returns 0 and calls a wake callback later.
 *
 * One subscriber is used by one thread at a time (its owner). */
struct core_sub;
struct core_event {
    uint64_t seq;
    char type[8]; /* "job" or "batch" */
    char *data;   /* JSON text, owned by the receiver (free()); NULL unless next returned 1 */
};
/* Subscribes from after_seq: events with a greater seq are delivered (pass
 * core_events_latest() to get only new ones). job_id and batch_id (NULL =
 * any; else valid ids) filter: a job filter passes that job's events, a
 * batch filter the events of the batch's jobs and the batch's own event.
 * Returns 0 and *out (free with core_events_unsubscribe) or -ENOMEM /
 * -ESHUTDOWN. */
int core_events_subscribe(struct core *c, uint64_t after_seq, const char *job_id, const char *batch_id,
                          struct core_sub **out);
/* The seq of the newest committed event (0: none yet). Any thread, no I/O. */
uint64_t core_events_latest(struct core *c);
/* The next event for the subscriber. Returns
 *   1            an event in *ev (the caller frees ev->data);
 *   0            none yet. If wake is not NULL it is registered: wake(ctx)
 *                is then called exactly once - when an event that passes the
 *                filter is published, when deadline_mono_ms (clock_mono_ms;
 *                0 = none) passes, or at drain - from a core or store
 *                thread, outside every core lock, unless
 *                core_events_unsubscribe() cancels it. At most one wake is
 *                registered per subscriber: call again only after it ran;
 *   -ERANGE      events between the subscriber's position and the oldest
 *                the log still holds were deleted (the log keeps
 *                --event-log events): ev->seq is the last seq lost; the
 *                next call continues after it (once per gap);
 *   -ESTALE      the subscriber, reading from the ring, fell further behind
 *                than the ring holds: ev->seq is the latest seq and the
 *                subscriber now stands there (re-read the state, then carry
 *                on, or stop);
 *   -ESHUTDOWN   the core drains (from then on, every call);
 *   or another negative errno (-ENOMEM, storage errors reading the log).
 * Reading from the log happens on the caller's thread (SQLite reads, one
 * page of events at a time, until a page holds an event that passes the
 * filter). */
int core_events_next(struct core_sub *s, struct core_event *ev, int64_t deadline_mono_ms, core_wake_cb wake,
                     void *ctx);
/* Ends the subscription and frees it (accepts NULL). Returns true when it
 * cancelled a registered wake (it will never run); false when none was
 * registered, or when it is being called right now (then it still runs
 * exactly once, possibly after this returns). */
bool core_events_unsubscribe(struct core_sub *s);

/* --- introspection --- */

struct core_executor_stats {
    const char *name; /* valid while the core lives */
    const char *kind;
    int size, busy;
    long queued, max_queued;
    uint64_t submitted, succeeded, failed, cancelled;
};
/* Fills up to max entries; returns the number of executors. */
int core_executor_stats(struct core *c, struct core_executor_stats *out, int max);

/* What one worker of an executor is doing (see exec_workers). */
struct core_worker {
    int slot;
    int pid;                 /* 0 while a process worker is being replaced */
    char thread[72];
    char job_id[ID_LEN + 1]; /* "" when idle */
    char task[72];           /* "" when idle */
    int64_t started_at_ms;   /* 0 when idle */
};
/* Fills up to max entries for executor i (the order of core_executor_stats):
 * thread and process executors one per worker, async executors one per
 * running job (at most 100). Returns the number filled, or -ENOENT when i is
 * not an executor. */
int core_executor_workers(struct core *c, int i, struct core_worker *out, int max);

struct core_stats {
    int64_t counts[JOB_STATUS_COUNT];
    double throughput_per_s; /* jobs finished per second over the last minute */
    double queue_wait_ms_p50, queue_wait_ms_p95;
    double run_time_ms_p50, run_time_ms_p95;
};
void core_get_stats(struct core *c, struct core_stats *out);

/* The last CORE_HISTORY_POINTS * CORE_HISTORY_INTERVAL_S seconds of finished
 * jobs, in buckets aligned on the wall clock (start = a multiple of the
 * interval since the epoch): oldest first, the current, partial bucket last;
 * a bucket in which no job finished is all zeros. Percentiles come from a
 * bounded uniform sample of each bucket's jobs (0 when it has none). */
#define CORE_HISTORY_INTERVAL_S 10
#define CORE_HISTORY_POINTS 60
struct core_stats_point {
    int64_t at_ms; /* start of the bucket, wall clock */
    int64_t succeeded, failed, cancelled;
    double queue_wait_ms_p50, queue_wait_ms_p95;
    double run_time_ms_p50, run_time_ms_p95;
};
struct core_stats_history {
    struct core_stats_point points[CORE_HISTORY_POINTS];
};
/* Returns 0, or -ENOMEM (then *out holds the counts without percentiles). */
int core_get_stats_history(struct core *c, struct core_stats_history *out);

/* False while starting or once draining. */
bool core_ready(struct core *c);

/* --- metrics (core/metrics.c), for GET /metrics ---
 *
 * Counters since the core opened, kept in arrays sized at core_open (tasks of
 * the registry x executors) and updated with relaxed atomics: a couple of
 * increments per job, no lock, no allocation. A reader sees each counter
 * exactly, though not all of them at one instant. */

/* Upper bounds, in seconds and ascending, of the buckets of the job latency
 * histograms; an implicit last bucket is +Inf. Job times are whole
 * milliseconds, so a 0 ms wait lands in the first bucket. */
#define CORE_LATENCY_BUCKETS 16
extern const double core_latency_bounds_s[CORE_LATENCY_BUCKETS];

/* One (task, executor) pair. */
struct core_job_counters {
    const char *task, *executor; /* valid while the core lives */
    uint64_t submitted;          /* jobs committed by a submit or a retry (not recovery) */
    /* Terminal outcomes, counted when the executor reports them (so before a
     * GET can see the job finished). A failed attempt that is retried is not
     * an outcome; a job stopped by shutdown is not either. */
    uint64_t succeeded, failed, cancelled;
};
typedef void (*core_job_counters_cb)(void *ctx, const struct core_job_counters *jc);
/* Calls cb, on the caller's thread, for every pair whose executor can run the
 * task (zeros included, so the series exist from the start) and for any other
 * pair that has counted something; tasks in registration order, then
 * executors in configuration order. */
void core_job_counters_each(struct core *c, core_job_counters_cb cb, void *ctx);

/* A histogram snapshot. bucket[i] counts observations in
 * (bound[i-1], bound[i]] - not cumulative; bucket[CORE_LATENCY_BUCKETS] those
 * above the last bound. Their total is the count. */
struct core_latency_hist {
    uint64_t bucket[CORE_LATENCY_BUCKETS + 1];
    uint64_t sum_ms;
};
/* Queue wait (started - eligible, where eligible is scheduled_at or else
 * created_at) and run time (finished - started) of the jobs of executor i
 * (the order of core_executor_stats) that finished after they started.
 * Returns 0, or -ENOENT when i is not an executor. */
int core_executor_latency(struct core *c, int i, struct core_latency_hist *wait, struct core_latency_hist *run);

#endif
