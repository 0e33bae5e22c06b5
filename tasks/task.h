/* task.h - the task registry and the contract between a task and whoever runs it.
 *
 * A task is a named C entry point. The registry is filled at start-up (built-ins,
 * then command tasks and plugins) and is read-only afterwards, so lookups take no
 * lock. Tasks know nothing of executors: the runner (an executor) fills in a
 * struct task_ctx with its own progress, stop and sleep hooks.
 */
#ifndef JOBD_TASK_H
#define JOBD_TASK_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/apierr.h"
#include "../common/job.h"

/* Executor kinds, as a bit mask of those that may run a task. */
enum task_kind {
    TASK_KIND_THREAD = 1u << 0,
    TASK_KIND_PROCESS = 1u << 1,
    TASK_KIND_ASYNC = 1u << 2,
};
#define TASK_KIND_ALL (TASK_KIND_THREAD | TASK_KIND_PROCESS | TASK_KIND_ASYNC)

/* "thread", "process", "async"; NULL for a mask that is not exactly one kind. */
const char *task_kind_name(unsigned kind);
/* Returns 0 and the kind bit, or -EINVAL. */
int task_kind_parse(const char *name, unsigned *out);

/* One call of a task. The runner owns the struct; the task reads `args`, may
 * call the hooks, and on return has set either `result` (success; the runner
 * takes ownership and frees it; NULL means JSON null) or `error_type` and
 * `error_message` (failure).
 *
 * Threading: the hooks may only be called from the thread running the task. */
struct task_ctx {
    const cJSON *args;   /* validated by the task's validate() at submit */
    const char *job_id;  /* for messages */
    int64_t deadline_ns; /* clock_mono_ns() deadline, 0 = none */

    /* Reports progress: fraction in [0, 1], message may be NULL. Cheap; the
     * runner throttles what it stores. */
    void (*progress)(struct task_ctx *ctx, double fraction, const char *message);
    /* True when the job was cancelled or its deadline passed: stop soon. */
    bool (*should_stop)(struct task_ctx *ctx);
    /* Sleeps up to ms milliseconds. Returns 0 after the full sleep, or
     * -ECANCELED when woken early because the job must stop. */
    int (*sleep_ms)(struct task_ctx *ctx, int64_t ms);
    void *runner; /* the runner's own state */

    /* Outputs. */
    cJSON *result;
    enum job_error_type error_type;
    char error_message[512];
};

/* Sets ctx's error and returns -1, for `return task_fail(...)`. */
int task_fail(struct task_ctx *ctx, enum job_error_type type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Checks args (never NULL; any JSON value) before the job is stored. Returns 0,
 * or -1 with err set: code API_INVALID_ARGUMENT, field "args.x", a sentence. */
typedef int (*task_validate_fn)(const cJSON *args, struct api_err *err);
/* Runs the task synchronously. Returns 0 on success, -1 on failure (ctx error set). */
typedef int (*task_run_fn)(struct task_ctx *ctx);

struct task_def {
    const char *name;
    const char *description;
    unsigned kinds;        /* TASK_KIND_* mask of executor kinds allowed */
    unsigned default_kind; /* one TASK_KIND_* bit, inside kinds */
    /* Why some kinds are not allowed, for the refusal message (may be NULL). */
    const char *kinds_reason;
    task_validate_fn validate; /* NULL: any args */
    task_run_fn run;           /* for thread and process executors */
};

struct task_registry;

/* A registry holding the built-in tasks. Returns 0 or -ENOMEM. Free with task_registry_free. */
int task_registry_new(struct task_registry **out);
void task_registry_free(struct task_registry *reg); /* accepts NULL */

/* Adds a task; the registry copies *def (strings must outlive the registry).
 * Returns 0, -EEXIST for a duplicate name, -EINVAL for a bad definition, -ENOMEM. */
int task_register(struct task_registry *reg, const struct task_def *def);

/* The task named `name`, or NULL. No lock: the registry is read-only once running. */
const struct task_def *task_find(const struct task_registry *reg, const char *name);
size_t task_count(const struct task_registry *reg);
/* Tasks in registration order; i < task_count(). */
const struct task_def *task_at(const struct task_registry *reg, size_t i);

#endif
