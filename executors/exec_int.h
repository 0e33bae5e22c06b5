/* exec_int.h - private to executors/: the base every executor kind embeds. */
#ifndef JOBD_EXEC_INT_H
#define JOBD_EXEC_INT_H

#include "exec.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct exec_vtable {
    int (*submit)(struct executor *ex, struct job *job, bool reloadable);
    int (*cancel)(struct executor *ex, const char *job_id);
    void (*stats)(struct executor *ex, struct exec_stats *out);
    int (*workers)(struct executor *ex, struct exec_worker *out, int max);
    void (*drain)(struct executor *ex, int64_t grace_ms);
    void (*free)(struct executor *ex);
};

/* Immutable after construction: read from any thread without a lock. */
struct executor {
    const struct exec_vtable *vt;
    char *name;
    unsigned kind;
    int size;
    long resident_max; /* see exec_config; 0 = every queued job stays in memory */
    struct exec_hooks hooks;
    const struct task_registry *tasks;
};

/* Fills the base; returns 0 or -ENOMEM. */
int exec_base_init(struct executor *ex, const struct exec_vtable *vt, const struct exec_config *cfg,
                   const struct task_registry *tasks, const struct exec_hooks *hooks);
void exec_base_fini(struct executor *ex);

/* Fills *w for a worker of slot/pid/thread running job (NULL = idle) since
 * started_at_ms. The caller holds the lock that guards the job pointer. */
void exec_worker_fill(struct exec_worker *w, int slot, int pid, const char *thread, const struct job *job,
                      int64_t started_at_ms);

/* Ready-queue order: priority descending, then id ascending (older first).
 * Returns < 0 when a runs before b. */
int exec_job_cmp(const struct job *a, const struct job *b);

/* A binary heap of queued jobs in exec_job_cmp order. Not thread-safe: the
 * owner's lock guards it, and every function below is called with it held.
 *
 * An entry is *resident* (it holds the job) or *cold* (only its id and
 * priority, ~48 bytes): exec_heap_push() keeps a reloadable job cold when
 * the heap already has ex->resident_max entries, and the job is read back
 * through hooks.load when it reaches the top (peek, pop) or is removed by
 * id. A cold entry whose load fails is dropped (the hook has told the
 * dispatcher). So a million queued jobs cost ~50 MB here, not ~500 MB. */
struct exec_qent {
    struct job *job; /* NULL: cold */
    int64_t priority;
    char id[ID_LEN + 1];
};
struct exec_heap {
    struct exec_qent *v;
    long n, cap;
};
/* 0 or -ENOMEM (the caller keeps the job). The job is moved in on success;
 * when kept cold it is freed at once. */
int exec_heap_push(struct executor *ex, struct exec_heap *h, struct job *job, bool reloadable);
/* The job that runs next (loaded if cold, still in the heap), or NULL when
 * the heap is (or, after failed loads, became) empty. */
struct job *exec_heap_peek(struct executor *ex, struct exec_heap *h);
struct job *exec_heap_pop(struct executor *ex, struct exec_heap *h); /* NULL when empty */
/* Removes and returns the job with this id (loaded if cold), or NULL. O(n). */
struct job *exec_heap_remove_id(struct executor *ex, struct exec_heap *h, const char *id);
void exec_heap_fini(struct exec_heap *h); /* frees the array, not the jobs */
/* The first half of every drain: moves the ready heap out of *h (left
 * empty) - call it under the executor's lock, with its draining flag set -
 * then, with no lock held, exec_heap_drained() reports each job in it
 * EXEC_DRAINED (each cold one through hooks.dropped: they stay queued in the
 * database) and frees the heap. */
struct exec_heap exec_heap_take(struct exec_heap *h);
void exec_heap_drained(struct executor *ex, struct exec_heap *left);

/* Initialises *cv on CLOCK_MONOTONIC, the clock of clock_mono_ns(), so that
 * pthread_cond_timedwait() takes deadlines from it. Destroy with
 * pthread_cond_destroy(). */
void exec_cond_init_mono(pthread_cond_t *cv);

/* Waits until *busy is 0 or clock_mono_ns() reaches deadline_ns (INT64_MAX:
 * no deadline). The caller holds *lock, which guards *busy, on entry and on
 * return; cv must come from exec_cond_init_mono() and be broadcast under
 * *lock whenever *busy drops to 0. Returns true when *busy is 0, false when
 * the deadline came first. */
bool exec_wait_idle(pthread_mutex_t *lock, pthread_cond_t *cv, const int *busy, int64_t deadline_ns);

/* Constructors of each kind. */
int exec_thread_new(const struct exec_config *cfg, const struct task_registry *tasks,
                    const struct exec_hooks *hooks, struct executor **out);
int exec_process_new(const struct exec_config *cfg, const struct task_registry *tasks,
                     const struct exec_hooks *hooks, struct executor **out); /* process.c */
int exec_async_new(const struct exec_config *cfg, const struct task_registry *tasks,
                   const struct exec_hooks *hooks, struct executor **out); /* async.c */

/* Runs a task synchronously for thread-like runners: parses args, calls the
 * task, and fills job->result or job->error_* from ctx. `ctx` must have its
 * hooks and runner set; this sets args, job_id and outputs. Returns the outcome
 * (EXEC_OK or EXEC_FAILED; the caller decides cancel vs timeout). */
enum exec_outcome exec_run_task(const struct task_registry *tasks, struct job *job, struct task_ctx *ctx);

#endif
