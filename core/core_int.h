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
};

struct live {
    struct hnode h; /* key = id */
    struct tnode t; /* in c->sched while LIVE_SCHEDULED; key = due wall ms */
    char id[ID_LEN + 1];
    enum live_state state;
    int exec_idx;
    bool cancel_requested;
    struct job *job; /* owned while LIVE_SCHEDULED, else NULL */
};

struct waiter {
    struct hnode h; /* in c->waiters under the job id; chained through `next` */
    struct tnode t; /* in c->wheap; key = deadline mono ms */
    char id[ID_LEN + 1];
    uint64_t token;
    core_wake_cb cb;
    void *ctx;
    struct waiter *next; /* further waiters on the same job */
};

struct core_exec {
    struct executor *ex;
    struct core_executor_config cfg;
    atomic_long held; /* scheduled + queued jobs counted against cfg.max_queued */
    atomic_ullong submitted, succeeded, failed, cancelled;
};

#define STATS_SAMPLES 2048
#define STATS_WINDOW_S 60

struct core_statsbuf {
    pthread_mutex_t lock; /* guards everything below */
    int64_t counts[JOB_STATUS_COUNT];
    int64_t bucket_sec[STATS_WINDOW_S]; /* which wall second each bucket counts */
    int64_t bucket_n[STATS_WINDOW_S];
    double wait_ms[STATS_SAMPLES], run_ms[STATS_SAMPLES];
    long n_wait, n_run; /* samples written (ring) */
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

    /* `lock` guards: live, sched, waiters, wheap, next_token, stop_timer. */
    pthread_mutex_t lock;
    pthread_cond_t timer_cv; /* wakes the timer thread: earlier deadline or stop */
    struct hmap live;
    struct theap sched;
    struct hmap waiters;
    struct theap wheap;
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
};

/* core/waiters.c */
void core_waiters_fire_id(struct core *c, const char *id);
/* Pops waiters whose deadline is <= now_mono_ms; returns them as a list (caller fires). Lock held. */
struct waiter *core_waiters_take_expired_locked(struct core *c, int64_t now_mono_ms);
void core_waiters_fire_list(struct waiter *list);
void core_waiters_fire_all(struct core *c);

/* core/stats.c */
void core_stats_init(struct core_statsbuf *s);
void core_stats_fini(struct core_statsbuf *s);
void core_stats_transition(struct core_statsbuf *s, int from, int to); /* -1 = none */
void core_stats_finished(struct core_statsbuf *s, const struct job *job);

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
/* The executor for a job of task def, by name (NULL = the task's default). */
int core_resolve_executor(struct core *c, const struct task_def *def, const char *name, int *idx,
                          struct api_err *err);

#endif
