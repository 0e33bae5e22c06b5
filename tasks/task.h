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

/* --- async tasks (the async executor's libuv loop) ---
 *
 * An async task is started on the executor's loop thread and must never block
 * it: it starts libuv handles (timers, pipes, processes, curl multi sockets)
 * and reports its end through done(). The runner enforces the timeout and
 * cancellation by calling stop(); the task then closes every handle it opened
 * and calls done() once they are closed. */
struct uv_loop_s;
struct task_actx {
    const cJSON *args;      /* validated at submit; valid until done() */
    const char *job_id;
    struct uv_loop_s *loop; /* the executor's loop */

    /* Set by the runner. */
    void (*done)(struct task_actx *actx); /* exactly once, after start() returned 0 */
    void (*progress)(struct task_actx *actx, double fraction, const char *message);
    void *runner;

    /* Set by the task in start() when it returns 0: asks it to stop early
     * (cancel or timeout). Called at most once, on the loop thread, never
     * after done(). The task must still call done() (with an error set). */
    void (*stop)(struct task_actx *actx);
    void *task_state; /* the task's own */

    /* Outputs, as in struct task_ctx: result on success, or error_type and
     * error_message on failure. A failed task may also leave a result (exec
     * keeps its output when the command exits non-zero). */
    cJSON *result;
    enum job_error_type error_type;
    char error_message[512];
};

/* Starts an async task. Returns 0 when started (done() comes later, never
 * from inside start()), 1 when it finished at once (outputs set, done() is
 * not called), -1 when it failed at once (error set, done() not called). */
typedef int (*task_async_start_fn)(struct task_actx *actx);

/* Sets actx's error and returns -1. */
int task_afail(struct task_actx *actx, enum job_error_type type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

struct task_def {
    const char *name;
    const char *description;
    unsigned kinds;        /* TASK_KIND_* mask of executor kinds allowed */
    unsigned default_kind; /* one TASK_KIND_* bit, inside kinds */
    /* Why some kinds are not allowed, for the refusal message (may be NULL). */
    const char *kinds_reason;
    task_validate_fn validate; /* NULL: any args */
    task_run_fn run;           /* for thread and process executors; NULL if it has neither kind */
    task_async_start_fn start_async; /* for the async executor; required when kinds has TASK_KIND_ASYNC */
};

/* Options that shape which tasks the registry offers. */
struct task_registry_options {
    bool allow_exec; /* the exec task runs only when true; otherwise submits are refused */
};

struct task_registry;

/* A registry holding the built-in tasks. Returns 0 or -ENOMEM. Free with
 * task_registry_free. opt may be NULL (defaults: exec not allowed). */
int task_registry_new(const struct task_registry_options *opt, struct task_registry **out);
void task_registry_free(struct task_registry *reg); /* accepts NULL */

/* Adds a task; the registry copies *def (strings must outlive the registry).
 * Returns 0, -EEXIST for a duplicate name, -EINVAL for a bad definition, -ENOMEM. */
int task_register(struct task_registry *reg, const struct task_def *def);

/* Registers the command tasks of the config file (SPEC §4): `commands` is the
 * file's "commands" array (NULL or empty: none). Each entry is
 * {"name", "description"?, "argv": [template...], "executor"?: "process" |
 * "async", "timeout"?: seconds, "env"?: [NAME...], "args"?: {placeholder:
 * "string" | "integer" | "number"}, "cwd"?}. The values of the "env" allowlist
 * are read from envp now, at start-up. Returns 0, or -1 with a message in err
 * naming the entry ("commands[0] \"resize\": ..."). */
int task_register_commands(struct task_registry *reg, const cJSON *commands, char *const *envp, char *err,
                           size_t errlen);

/* Loads the plugin at `path` (dlopen) and lets it register its tasks (see
 * include/jobd_plugin.h). The registry keeps the library loaded until it is
 * freed. Returns 0, or -1 with a message in err ("cannot load: ...", "does
 * not export ...", version mismatch, init failure, duplicate task). */
int task_load_plugin(struct task_registry *reg, const char *path, char *err, size_t errlen);

/* The task named `name`, or NULL. No lock: the registry is read-only once running. */
const struct task_def *task_find(const struct task_registry *reg, const char *name);
size_t task_count(const struct task_registry *reg);
/* Tasks in registration order; i < task_count(). */
const struct task_def *task_at(const struct task_registry *reg, size_t i);

/* For the process executor's worker: the process group of the program the
 * exec or a command task is running in this process right now (0: none), so
 * that the worker can kill it when the server dies. Any thread. */
int task_exec_running_group(void);

#endif
