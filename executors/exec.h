/* exec.h - one interface for every executor kind (thread, process, async).
 *
 * An executor owns a ready queue ordered by priority (higher first) then id
 * (older first) and some workers that take jobs from it. It knows tasks (it
 * calls them) but no storage and no HTTP: it reports what happens through
 * hooks, and the dispatcher decides what that means for the job.
 *
 * Ownership: exec_submit() moves a job into the executor; the executor moves
 * it back through hooks.done exactly once per submitted job, whatever happens
 * (success, failure, cancel, drain). Hooks run on the executor's own threads,
 * never with an executor lock held; they must not block for long.
 */
#ifndef JOBD_EXEC_H
#define JOBD_EXEC_H

#include <stdbool.h>
#include <stdint.h>

#include "../common/job.h"
#include "../tasks/task.h"

struct executor;

/* How an attempt ended, as seen by the executor. */
enum exec_outcome {
    EXEC_OK = 0,    /* job->result holds the task's result (JSON text, may be NULL) */
    EXEC_FAILED,    /* job->error_type / error_message say why */
    EXEC_CANCELLED, /* cancelled by exec_cancel() while queued or running */
    EXEC_DRAINED,   /* never started: the executor was drained; the job stays queued */
};

struct exec_hooks {
    /* A worker started the job: job->started_at_ms, attempt, worker_pid and
     * worker_thread are set and status is JOB_RUNNING. The job is only lent:
     * copy what you need. */
    void (*started)(void *ctx, const struct job *job);
    /* The attempt ended: the job is moved to the callee with finished_at_ms and
     * the outcome's fields set; its status is left for the callee to decide. */
    void (*done)(void *ctx, struct job *job, enum exec_outcome outcome);
    /* Progress reported by a running task (throttled by the executor). */
    void (*progress)(void *ctx, const char *job_id, double fraction, const char *message);
    /* Reads back a job that waited cold in the ready queue (see
     * exec_config.resident_max), status queued, executor set to this
     * executor's name. Returns it (moved to the executor), or NULL when it is
     * gone or cannot be read: the callee then forgets the job itself, and the
     * executor drops the entry. Called WITH the executor's lock held (the
     * one exception to the rule above): it must not call into the executor. */
    struct job *(*load)(void *ctx, const char *executor, const char *job_id);
    /* A cold job was drained (the equivalent of done(EXEC_DRAINED)). */
    void (*dropped)(void *ctx, const char *job_id);
    void *ctx;
};

struct exec_config {
    const char *name; /* copied */
    unsigned kind;    /* TASK_KIND_* */
    int size;         /* workers / concurrent jobs, >= 1 */
    /* Ready-queue entries that keep their job in memory: past this many,
     * jobs submitted as reloadable wait as a small cold entry and are read
     * back through hooks.load (which must then be set) when their turn
     * comes. 0 = no limit. */
    long resident_max;
    /* Process executors only. */
    const char *const *worker_argv; /* how to start a worker: argv[0] is the jobd binary; NULL-terminated */
    long memory_mb;   /* RLIMIT_AS of each worker, 0 = none */
    long cpu_seconds; /* RLIMIT_CPU of each worker, 0 = none */
};

struct exec_stats {
    int size;
    int busy;     /* jobs running now */
    long queued;  /* jobs waiting in the ready queue */
};

/* Creates and starts an executor of cfg->kind. The registry must outlive it.
 * Returns 0, -EINVAL for a kind this build cannot run, -ENOMEM, or -errno
 * from thread creation. */
int exec_new(const struct exec_config *cfg, const struct task_registry *tasks, const struct exec_hooks *hooks,
             struct executor **out);

/* Hands a job (status queued, attempt not yet incremented) to the executor.
 * On success the job is moved; on error (-ESHUTDOWN after drain) the caller
 * keeps it. reloadable: the job equals its stored record (but for the status
 * queued), so the executor may free it and read it back through hooks.load. */
int exec_submit(struct executor *ex, struct job *job, bool reloadable);

/* Cancels a queued or running job by id: a queued one is removed and reported
 * done with EXEC_CANCELLED; a running one is told to stop (how depends on the
 * kind). Returns 0, or -ENOENT when the executor does not hold the job. */
int exec_cancel(struct executor *ex, const char *job_id);

void exec_get_stats(struct executor *ex, struct exec_stats *out);

/* Who works, and on what: one entry per worker thread (thread), per worker
 * process (process) or per running job (async). A copy taken under the
 * executor's lock; the strings are the entry's own. */
struct exec_worker {
    int slot;                  /* worker index; async: index in the list */
    int pid;                   /* the worker's process; 0 while a process worker is being replaced */
    char thread[72];           /* "<executor>-<slot>" as jobs show it; async: the loop's "<executor>-0" */
    char job_id[ID_LEN + 1];   /* the running job, "" when idle */
    char task[72];             /* its task ("" when idle); task names have at most 64 bytes */
    int64_t started_at_ms;     /* when it started, 0 when idle */
};
#define EXEC_ASYNC_WORKERS_MAX 100 /* an async executor lists at most this many running jobs */
/* Fills up to max entries (thread, process: workers in slot order; async:
 * running jobs, at most EXEC_ASYNC_WORKERS_MAX) and returns how many. */
int exec_workers(struct executor *ex, struct exec_worker *out, int max);

const char *exec_name(const struct executor *ex);
unsigned exec_kind(const struct executor *ex);

/* Stops taking jobs: queued jobs are reported done with EXEC_DRAINED, running
 * ones get grace_ms to finish and are then told to stop. Blocks until every
 * worker is idle. Idempotent. */
void exec_drain(struct executor *ex, int64_t grace_ms);

/* Drains (with no grace) and frees. Accepts NULL. */
void exec_free(struct executor *ex);

/* The body of a process-executor worker: `jobd --internal-worker ...` ends
 * up here after loading the same configuration and tasks as the server. It
 * serves jobs on fd (the socketpair end the server passed as fd 3) until the
 * server closes it. Returns the process exit status. */
int exec_worker_main(int fd, const struct task_registry *tasks);

#endif
