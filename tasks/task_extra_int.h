/* task_extra_int.h - private to tasks/: what the tasks share through registry.c
 * (the argument helpers every task's parse function uses), and the tasks
 * beyond builtin.c (http_get, exec, crash, command tasks, plugins).
 *
 * Nothing outside tasks/ includes this file; the public contract is task.h.
 */
#ifndef JOBD_TASK_EXTRA_INT_H
#define JOBD_TASK_EXTRA_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "task.h"

/* ---- registry-owned resources (registry.c) ---- */

/* Hands `p` to the registry: free_fn(p) runs when the registry is freed, in
 * reverse order of registration and after every definition is gone (so a
 * plugin's code is unloaded only when nothing points into it any more).
 * Returns 0, or -ENOMEM (then the caller still owns p). */
int task_registry_own(struct task_registry *reg, void (*free_fn)(void *), void *p);

/* ---- argument helpers (registry.c): the parsing rules told atop builtin.c ---- */

/* For run(): stored args that no longer parse are the task's failure. Sets
 * ctx's error to JOB_ERR_TASK "invalid args: <err->message>" and returns -1. */
int task_fail_args(struct task_ctx *ctx, const struct api_err *err);
/* The async twin of task_fail_args(), for start_async(). Returns -1. */
int task_afail_args(struct task_actx *actx, const struct api_err *err);

/* Checks that args is an object holding only `fields` (NULL-terminated), each
 * at most once. `task` and `example` are for messages. Returns 0 or -1 with err. */
int task_args_object(const cJSON *args, const char *task, const char *example, const char *const *fields,
                     struct api_err *err);
/* Reads the string args.<key>: *out NULL when absent or null and not
 * required. Refused when longer than max_len bytes. Returns 0 or -1 with err. */
int task_args_string(const cJSON *args, const char *key, bool required, size_t max_len, const char *example,
                     const char **out, struct api_err *err);

/* A numeric field of args: bounds, integrality, and the words for messages. */
struct task_num_spec {
    const char *key;
    double min, max;
    bool integer;        /* must be integral */
    bool required;       /* refused when absent; null is then refused as not a number */
    double dflt;         /* when not required and absent or null */
    const char *range;   /* says the bounds in words: "a number from 0 to 86400" */
    const char *example; /* a valid args object, for "is required"; NULL when not required */
};
/* Reads the number args.<ns->key> as ns says. Returns 0 and *out, or -1 with err. */
int task_args_number(const cJSON *args, const struct task_num_spec *ns, double *out, struct api_err *err);

/* The length of the longest prefix of s of at most max bytes that does not
 * cut a UTF-8 sequence: for "%.*s" of strings from users in messages. */
int task_utf8_clip(const char *s, size_t max);
/* Describes a JSON value for "got ..." in a message (a short quoted, escaped
 * string, a number in its shortest form or "a number too large to represent",
 * true/false/null, "an object", "an array"). */
void task_describe_value(const cJSON *v, char *out, size_t size);

/* A JSON string holding buf[0..len) as text: invalid UTF-8 and NUL bytes
 * become U+FFFD; with `cut` (the bytes were truncated) an incomplete sequence
 * at the very end is dropped instead. Returns NULL when out of memory. */
cJSON *task_text_json(const char *buf, size_t len, bool cut);

/* ---- the task definitions, for task_registry_new() ---- */

const struct task_def *task_http_get_def(void);
const struct task_def *task_exec_def(bool allowed); /* allowed false: a definition that refuses every job */
const struct task_def *task_crash_def(void);

/* curl_global_init() for http_get; call at start-up, before threads. Returns
 * 0 or -ENOMEM. Each success is paired with task_http_global_fini(). */
int task_http_global_init(void);
void task_http_global_fini(void *unused);

/* ---- running a program (exec_run.c), shared by exec and command tasks ---- */

#define TASK_EXEC_PATH "/usr/local/bin:/usr/bin:/bin" /* PATH of a program's clean environment */
#define TASK_EXEC_OUTPUT_MAX (1u << 20)               /* bytes of stdout (and of stderr) kept */

/* What to run. Everything is only read, and only during the call to
 * task_exec_run() / task_exec_start() (the async runner copies what it keeps). */
struct task_exec_spec {
    const char *const *argv; /* NULL-terminated, argv[0] non-empty; searched in envp's PATH when it has no '/' */
    const char *const *envp; /* NULL-terminated "NAME=value": the whole environment */
    const char *cwd;         /* NULL: the server's */
    const char *stdin_data;  /* NULL or empty: stdin is closed at once (reads see EOF) */
    size_t stdin_len;
    /* A timeout of the task's own (a command's default), 0 = none; reaching it
     * stops the program like a stop request and fails the task with "timeout". */
    int64_t timeout_ms;
    const char *what; /* how messages name the task ("exec", "command resize") */
};

/* Finds argv0 as execvp would, but in the PATH of envp (TASK_EXEC_PATH when
 * envp has none); a name with a '/' is taken as it is. Writes the path into
 * out. Returns 0, -ENOENT, -EACCES or -ENAMETOOLONG. */
int task_exec_resolve(const char *argv0, const char *const *envp, char *out, size_t size);

/* Runs a program to its end and sets ctx's outputs: result {"exit_code",
 * "signal", "stdout", "stderr", "stdout_truncated", "stderr_truncated"},
 * and on a non-zero exit, a signal or a stop also the error (exit_status,
 * signal, cancelled, timeout). Polls ctx->should_stop every 100 ms at most.
 * Returns 0 (exit status 0) or -1. */
int task_exec_run(struct task_ctx *ctx, const struct task_exec_spec *spec);

/* The async form, on actx->loop: returns 0 (started: actx->stop set, done()
 * later) or -1 (failed at once, error set). */
int task_exec_start(struct task_actx *actx, const struct task_exec_spec *spec);

#endif
