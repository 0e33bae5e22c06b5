/* core_int.h - private to core/: the dispatcher's state and small containers. */
#ifndef JOBD_CORE_INT_H
#define JOBD_CORE_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "../executors/exec.h"
#include "core.h"

/* --- an intrusive hash map from id strings to nodes (not thread-safe) --- */
struct hnode {
    struct hnode *next;
    const char *key; /* points into the owning struct */
    uint64_t hash;
};
struct hmap {
    struct hnode **b;
    size_t nb, n;
};
int hmap_init(struct hmap *m);                     /* 0 or -ENOMEM */
void hmap_fini(struct hmap *m);                    /* frees buckets, not nodes */
struct hnode *hmap_get(const struct hmap *m, const char *key);
int hmap_put(struct hmap *m, struct hnode *node);  /* node->key set; 0 or -ENOMEM */
void hmap_del(struct hmap *m, struct hnode *node); /* node must be in the map */

/* --- an intrusive binary min-heap on an int64 key (not thread-safe) --- */
struct tnode {
    int64_t key;
    long idx; /* position in the heap, -1 when not in it */
};
struct theap {
    struct tnode **v;
    long n, cap;
};
int theap_push(struct theap *h, struct tnode *t); /* 0 or -ENOMEM */
struct tnode *theap_peek(const struct theap *h);
void theap_del(struct theap *h, struct tnode *t); /* t must be in the heap */
void theap_fini(struct theap *h);

#define CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Where a live (unfinished) job is, from the dispatcher's point of view. */
enum live_state {
    LIVE_SCHEDULED, /* in c->sched, job owned by the entry */
    LIVE_QUEUED,    /* handed to its executor */
    LIVE_RUNNING,   /* started by a worker */
    LIVE_FINISHING, /* terminal update queued, not yet committed */
    LIVE_WAITING,   /* scheduled, waiting on depends_on; job owned, deps_left > 0 */
    LIVE_HELD,      /* queued, held back by its concurrency key; job owned, in the key's heap */
};

struct live {
    struct hnode h; /* key = id */
    struct tnode t; /* in c->sched while LIVE_SCHEDULED; key = due wall ms */
    char id[ID_LEN + 1];
    enum live_state state;
    int exec_idx;
    bool cancel_requested;
    int deps_left;   /* LIVE_WAITING: dependencies not yet succeeded */
    struct job *job; /* owned while LIVE_SCHEDULED, LIVE_WAITING or LIVE_HELD, else NULL */
    struct ckey *ckey; /* the concurrency key slot it holds while handed to an executor, or NULL */
};

/* Jobs waiting on one dependency (c->deps, keyed by the dependency's id). */
struct depwait {
    struct hnode h;
    char id[ID_LEN + 1];
    size_t n, cap;
    char (*dependents)[ID_LEN + 1]; /* ids of LIVE_WAITING jobs (checked when fired) */
};

/* One concurrency key (c->ckeys): how many of its jobs are handed to an
 * executor, and those held back, best first (the heap's key orders by
 * priority, then arrival). Freed when both are zero. */
struct ckey {
    struct hnode h;
    char *name; /* owned; h.key */
    int running;
    struct theap held; /* of struct live .t */
    uint32_t next_seq;
};

/* A terminal update that failed with the transaction (disk full, I/O
 * error): queued again by the timer thread at due_mono_ms (c->end_retries,
 * c->lock), so that the job ends in the database with its real outcome
 * once the store can write again, not as worker_lost at the next start. */
struct end_retry {
    struct end_retry *next;
    struct job *job;      /* owned */
    void *op;             /* dispatch.c's op, owned */
    int64_t due_mono_ms;
};

/* A waiter of a waitset: one per live job of the set (see struct waiter). */
struct core_waitset;

struct waiter {
    struct hnode h; /* in c->waiters under the job id; chained through `next` */
    struct tnode t; /* in c->wheap; key = deadline mono ms */
    char id[ID_LEN + 1];
    uint64_t token;
    core_wake_cb cb;
    void *ctx;
    struct waiter *next; /* further waiters on the same job */
    struct core_waitset *ws; /* non-NULL: a member of a waitset (cb unused) */
};

struct core_exec {
    struct executor *ex;
    struct core_executor_config cfg;
    atomic_long held; /* scheduled + queued jobs counted against cfg.max_queued */
    atomic_ullong submitted, succeeded, failed, cancelled;
};

#define STATS_SAMPLES 2048
#define STATS_WINDOW_S 60

/* One CORE_HISTORY_INTERVAL_S bucket of the history: jobs that finished in
 * it by status, and a uniform sample (reservoir) of their queue waits and run
 * times for its percentiles. */
#define STATS_HISTORY_SAMPLES 256
struct core_stats_bucket {
    int64_t start_s; /* wall second it starts at (a multiple of the interval); 0 = unused */
    int64_t succeeded, failed, cancelled;
    long n_wait, n_run; /* samples offered; the first STATS_HISTORY_SAMPLES are kept, then one in n */
    float wait_ms[STATS_HISTORY_SAMPLES], run_ms[STATS_HISTORY_SAMPLES];
};

struct core_statsbuf {
    pthread_mutex_t lock; /* guards everything below */
    int64_t counts[JOB_STATUS_COUNT];
    int64_t bucket_sec[STATS_WINDOW_S]; /* which wall second each bucket counts */
    int64_t bucket_n[STATS_WINDOW_S];
    double wait_ms[STATS_SAMPLES], run_ms[STATS_SAMPLES];
    long n_wait, n_run; /* samples written (ring) */
    struct core_stats_bucket history[CORE_HISTORY_POINTS]; /* ring, by start_s / interval */
    uint64_t rng;                                           /* xorshift state of the reservoirs */
};

/* Job counters and latency histograms (core/metrics.c). The arrays and the
 * name table are immutable after core_metrics_init; the counters are atomics
 * updated with relaxed order (each is exact; no ordering between them). */
struct core_job_cell {
    atomic_ullong submitted, succeeded, failed, cancelled;
};
struct core_hist {
    atomic_ullong bucket[CORE_LATENCY_BUCKETS + 1];
    atomic_ullong sum_ms;
};
struct core_metrics {
    size_t n_tasks;
    int n_execs;
    uint32_t *slots;             /* task name -> index + 1 (0 = empty); open addressing */
    size_t nslots;               /* a power of two, >= 2 * n_tasks */
    struct core_job_cell *cells; /* [n_tasks * n_execs], task-major */
    struct core_hist *wait, *run; /* [n_execs] */
};

/* The retention thread (core/retention.c). keep_ms and interval_ms are
 * immutable after core_retention_start; `lock` guards `stop`; `thread` and
 * `started` belong to whoever opens and drains the core. */
struct core_retention {
    int64_t keep_ms[JOB_STATUS_COUNT]; /* terminal statuses; 0 = keep forever */
    int64_t interval_ms;
    pthread_mutex_t lock;
    pthread_cond_t wake; /* the thread sleeps here between passes (CLOCK_MONOTONIC) */
    bool stop;
    pthread_t thread;
    bool started;
};

struct core {
    const struct task_registry *tasks;
    struct store *store;
    struct core_exec *execs; /* immutable array after open */
    int n_execs;

    /* `lock` guards: live, sched, waiters, wheap, next_token, stop_timer,
     * deps, ckeys (and every waitset's counters). */
    pthread_mutex_t lock;
    pthread_cond_t timer_cv; /* wakes the timer thread: earlier deadline or stop */
    struct hmap live;
    struct theap sched;
    struct hmap waiters;
    struct theap wheap;
    struct end_retry *end_retries; /* terminal updates to store again */
    /* Cold jobs that could not be read back (core__hook_load): a lock-free
     * stack, since the hook runs under an executor's lock and core->lock is
     * never nested in another module's. The timer thread takes it whole. */
    struct lost_id *_Atomic lost;
    long resident_max;             /* core_options.resident_jobs (0: no limit) */
    struct hmap deps;  /* of struct depwait */
    struct hmap ckeys; /* of struct ckey */
    uint64_t next_token;
    bool stop_timer;
    pthread_t timer_thread;
    bool timer_started;

    atomic_bool ready;
    atomic_bool draining;
    atomic_bool drained;

    struct core_statsbuf stats;
    struct core_retention retention;
    struct core_metrics metrics;
    struct core_events *events;       /* core/events.c */
    struct core_callbacks *callbacks; /* core/callbacks.c */
};

/* core/events.c. init: 0 or a negative errno; publish: called for each
 * committed event on the store writer thread, must not block; shutdown: wakes
 * every subscriber (they then get -ESHUTDOWN); fini accepts a core whose
 * events never started. */
int core_events_init(struct core *c, const struct core_options *opt);
void core_events_publish(struct core *c, const struct store_event *ev);
void core_events_shutdown(struct core *c);
void core_events_fini(struct core *c);

/* core/callbacks.c: the delivery thread. start: 0 or a negative errno;
 * kick: a delivery may have been queued (any thread, never blocks); stop:
 * joins the thread (deliveries in flight are abandoned and stay pending in
 * the database); accepts a core whose callbacks never started. */
int core_callbacks_start(struct core *c, const struct core_options *opt);
void core_callbacks_kick(struct core *c);
void core_callbacks_stop(struct core *c);

/* core/waiters.c */
/* Fires the waiters on id (a job that ended with `status`, or -1: unknown or a batch). */
void core_waiters_fire_id(struct core *c, const char *id, int status);
/* Pops waiters whose deadline is <= now_mono_ms; returns them as a list (caller fires). Lock held. */
struct waiter *core_waiters_take_expired_locked(struct core *c, int64_t now_mono_ms);
void core_waiters_fire_list(struct waiter *list);
void core_waiters_fire_all(struct core *c);

/* core/dispatch.c, for lifecycle.c. */
int core__exec_index(struct core *c, const char *name); /* -1 when unknown */
/* Adds a live entry for a committed job (not owned yet); NULL when out of memory. */
struct live *core__live_add(struct core *c, const struct job *job, int exec_idx, enum live_state state);
/* A pending job waiting on depends_on (scheduled with a non-empty list). */
bool core__has_deps(const struct job *job);
enum live_state core__live_state_of(const struct job *job);
/* Sets a committed, live pending job (moved in) on its way: its
 * dependencies, the timer heap or its executor. reloadable: the job equals
 * its committed row (but for a status change from scheduled to queued), so
 * it may be dropped from memory and read back when its turn comes (see
 * core_options.resident_jobs). */
void core__start_pending(struct core *c, struct job *job, int exec_idx, bool reloadable);
/* Puts a scheduled job (moved in) on the timer heap; a reloadable one is
 * kept cold (no job in memory) once the heap holds c->resident_max. */
void core__schedule_job(struct core *c, struct job *job, int exec_idx, bool reloadable);
/* Reads back a pending job kept cold, as the executor `executor` runs it
 * (NULL: keep the stored executor): the job, or NULL (logged) when it is
 * gone, no longer pending, or cannot be read. */
struct job *core__load_pending(struct core *c, const char *id, const char *executor);
/* Forgets a live job that was never started and is not held anywhere any
 * more (drained, or lost: see core__hook_load): its executor's count and
 * concurrency slot are given back; the database keeps it pending for the
 * next start. */
void core__forget_unstarted(struct core *c, const char *id);
/* Ids that core__hook_load could not read back, handled by the timer thread. */
struct lost_id {
    struct lost_id *next;
    char id[ID_LEN + 1];
};
/* core/cold.c: forgets each job of the list (taken from c->lost, lock not
 * held) and frees it. */
void core__lost_fire(struct core *c, struct lost_id *list);
/* core/deps.c. Job `id` ended with `status` (committed; writer thread): its
 * dependents go on or are cancelled. */
void core__deps_fire(struct core *c, const char *id, enum job_status status);
/* Starts the wait of a live job (moved in) on its dependencies. */
void core__deps_register(struct core *c, struct job *job, int exec_idx);
/* Hands a queued job (moved in) to its executor, gated by its concurrency
 * key; reloadable as for core__start_pending. */
void core__dispatch_job(struct core *c, struct job *job, int exec_idx, bool reloadable);
/* Queues an update of the job (moved in): terminal ones end the live entry
 * and wake waiters once committed. */
void core__store_update(struct core *c, struct job *job, int from, bool terminal, core_done_cb cb, void *ctx);
/* Queues again, now, the terminal updates of `list` (taken from
 * c->end_retries by the timer thread, lock not held). */
void core__end_retries_fire(struct core *c, struct end_retry *list);
/* Frees what is left in c->end_retries (close; the jobs are recovered at
 * the next start). */
void core__end_retries_free(struct core *c);
/* The executor hooks (worker threads). */
void core__hook_started(void *ctx, const struct job *job);
void core__hook_progress(void *ctx, const char *job_id, double fraction, const char *message);
void core__hook_done(void *ctx, struct job *job, enum exec_outcome outcome);
struct job *core__hook_load(void *ctx, const char *executor, const char *job_id);
void core__hook_dropped(void *ctx, const char *job_id);

/* core/gates.c: dependencies and concurrency keys, all with c->lock held
 * (except fini, at close). */
/* The key's slot, created when missing; NULL when out of memory. */
struct ckey *core_ckey_get_locked(struct core *c, const char *name);
/* The heap key of a job held by ck: priority first, then arrival. */
int64_t core_ckey_order(struct ckey *ck, int64_t priority);
/* Frees ck when nothing runs or waits under it. */
void core_ckey_maybe_free_locked(struct core *c, struct ckey *ck);
/* Records that dependent_id waits on dep_id. 0 or -ENOMEM. */
int core_dep_add_locked(struct core *c, const char *dep_id, const char *dependent_id);
/* Unlinks and returns who waits on dep_id (NULL: nobody); free with core_depwait_free. */
struct depwait *core_dep_take_locked(struct core *c, const char *dep_id);
void core_depwait_free(struct depwait *dw);
void core_gates_fini(struct core *c);

/* core/stats.c */
void core_stats_init(struct core_statsbuf *s);
void core_stats_fini(struct core_statsbuf *s);
void core_stats_transition(struct core_statsbuf *s, int from, int to); /* -1 = none */
void core_stats_finished(struct core_statsbuf *s, const struct job *job);
/* core_get_stats_history on one statsbuf (a seam for tests). */
int core_stats_history(struct core_statsbuf *s, struct core_stats_history *out);

/* core/metrics.c */
/* Sizes the arrays for the registry's tasks and c->n_execs executors (call
 * after the executors exist). Returns 0 or -ENOMEM. */
int core_metrics_init(struct core *c);
void core_metrics_fini(struct core_metrics *m); /* accepts a zeroed struct */
/* A job was committed (submit or retry). */
void core_metrics_submitted(struct core *c, int exec_idx, const struct job *job);
/* A job reached its terminal status (job->status): the outcome and, when it
 * started, its queue wait and run time. */
void core_metrics_finished(struct core *c, int exec_idx, const struct job *job);

/* core/retention.c */
/* Starts the retention thread when a retention is set (else does nothing).
 * Returns 0 or a negative errno. */
int core_retention_start(struct core *c, const struct core_options *opt);
/* Stops the thread (waiting for at most the batch in progress) and frees its
 * lock. Accepts a core whose retention never started; idempotent. */
void core_retention_stop(struct core *c);

/* core/validate.c */
/* core_job_from_json for job `self` of a batch of batch_n jobs (0: not in a
 * batch), where depends_on may hold indexes into the batch. */
int core__job_from_json(struct core *c, const cJSON *spec, const char *prefix, size_t batch_n, size_t self,
                        struct job **out, struct api_err *err);
/* The executor for a job of task def, by name (NULL = the task's default). */
int core_resolve_executor(struct core *c, const struct task_def *def, const char *name, int *idx,
                          struct api_err *err);

#endif
