/* exec_task.c - the exec task: runs args.argv (never a shell) with args.stdin,
 * args.env and args.cwd, and returns {"exit_code", "signal", "stdout",
 * "stderr", "stdout_truncated", "stderr_truncated"} (SPEC §4). The program
 * runs through exec_run.c, which says how (process groups, output caps,
 * stops).
 *
 * The environment is clean: PATH=/usr/local/bin:/usr/bin:/bin (unless args.env
 * gives a PATH) plus args.env, nothing of the server's.
 *
 * Kinds: process and async only; it forks, and forking the multi-threaded
 * server from a job is what the process executor is there to avoid.
 *
 * The task is available only with --allow-exec: without it the registry holds
 * a definition whose validate() refuses every submit (field "task") and whose
 * run()/start() fail a job stored while it was allowed.
 */
#include "task_extra_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXEC_ARGV_MAX 4096          /* elements of args.argv */
#define EXEC_ARG_MAX (128u << 10)    /* bytes of one argv element or env value (Linux's MAX_ARG_STRLEN) */
#define EXEC_ENV_MAX 256            /* variables in args.env */
#define EXEC_STDIN_MAX (64u << 20)   /* bytes of args.stdin */
#define EXEC_CWD_MAX 4095
#define EXEC_DISABLED_MSG "the exec task is disabled; start jobd with --allow-exec"
#define EXEC_EXAMPLE "{\"argv\": [\"echo\", \"hello\"]}"

/* ---- the exec task: args ------------------------------------------------- */

static const char *const exec_fields[] = {"argv", "stdin", "env", "cwd", NULL};

/* The parsed args of one exec job. argv and envp are arrays of this struct's
 * own; their strings point into args (argv) or are allocated (envp). */
struct exec_args {
    const char **argv;
    char **envp;
    const char *cwd, *stdin_data;
};

static void exec_args_free(struct exec_args *x)
{
    free(x->argv);
    if (x->envp)
        for (char **e = x->envp; *e; e++) free(*e);
    free(x->envp);
    memset(x, 0, sizeof *x);
}

static bool env_name_valid(const char *s)
{
    if (!s || !((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_')) return false;
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

/* Checks args; with `x` also builds argv and the environment (x freed by the
 * caller with exec_args_free, also on failure). Returns 0, -1 with err set,
 * or -2 when out of memory. */
static int exec_parse(const cJSON *args, struct exec_args *x, struct api_err *err)
{
    char field[64], got[64];
    const cJSON *argv = NULL, *env = NULL, *v;
    const char *stdin_data = NULL, *cwd = NULL;
    int n = 0, i = 0;

    if (task_args_object(args, "exec", EXEC_EXAMPLE, exec_fields, err) < 0) return -1;
    argv = cJSON_GetObjectItemCaseSensitive(args, "argv");
    if (!argv)
        return api_err_set(err, API_INVALID_ARGUMENT, "args.argv",
                           "args.argv is required: the program and its arguments as a list of strings, e.g. %s.",
                           EXEC_EXAMPLE);
    n = cJSON_GetArraySize(argv);
    if (!cJSON_IsArray(argv) || n < 1 || n > EXEC_ARGV_MAX) {
        task_describe_value(argv, got, sizeof got);
        return api_err_set(err, API_INVALID_ARGUMENT, "args.argv",
                           "args.argv must be a list of 1 to %d strings (the program first), got %s.", EXEC_ARGV_MAX,
                           cJSON_IsArray(argv) ? "an empty list" : got);
    }
    cJSON_ArrayForEach(v, argv) {
        snprintf(field, sizeof field, "args.argv[%d]", i);
        if (!cJSON_IsString(v) || !v->valuestring) {
            task_describe_value(v, got, sizeof got);
            return api_err_set(err, API_INVALID_ARGUMENT, field, "%s must be a string, got %s.", field, got);
        }
        if (strlen(v->valuestring) > EXEC_ARG_MAX - 1)
            return api_err_set(err, API_INVALID_ARGUMENT, field, "%s is longer than %u bytes.", field, EXEC_ARG_MAX - 1);
        if (i == 0 && !v->valuestring[0])
            return api_err_set(err, API_INVALID_ARGUMENT, field, "%s must name the program to run, not be empty.",
                               field);
        i++;
    }
    if (task_args_string(args, "stdin", false, EXEC_STDIN_MAX, "{\"stdin\": \"text\"}", &stdin_data, err) < 0 ||
        task_args_string(args, "cwd", false, EXEC_CWD_MAX, "{\"cwd\": \"/tmp\"}", &cwd, err) < 0)
        return -1;
    if (cwd && !cwd[0])
        return api_err_set(err, API_INVALID_ARGUMENT, "args.cwd", "args.cwd must be a directory, not empty.");
    env = cJSON_GetObjectItemCaseSensitive(args, "env");
    int nenv = 0;
    if (env && !cJSON_IsNull(env)) {
        if (!cJSON_IsObject(env)) {
            task_describe_value(env, got, sizeof got);
            return api_err_set(err, API_INVALID_ARGUMENT, "args.env",
                               "args.env must be an object of NAME: \"value\" strings, e.g. {\"LANG\": \"C.UTF-8\"}, "
                               "got %s.",
                               got);
        }
        if ((nenv = cJSON_GetArraySize(env)) > EXEC_ENV_MAX)
            return api_err_set(err, API_INVALID_ARGUMENT, "args.env", "args.env holds %d variables; at most %d.", nenv,
                               EXEC_ENV_MAX);
        cJSON_ArrayForEach(v, env) {
            snprintf(field, sizeof field, "args.env.%.40s", v->string ? v->string : "");
            if (!env_name_valid(v->string))
                return api_err_set(err, API_INVALID_ARGUMENT, field,
                                   "%s: a variable name is letters, digits and '_', not starting with a digit.", field);
            if (!cJSON_IsString(v) || !v->valuestring) {
                task_describe_value(v, got, sizeof got);
                return api_err_set(err, API_INVALID_ARGUMENT, field, "%s must be a string, got %s.", field, got);
            }
            if (strlen(v->valuestring) > EXEC_ARG_MAX - 1)
                return api_err_set(err, API_INVALID_ARGUMENT, field, "%s is longer than %u bytes.", field,
                                   EXEC_ARG_MAX - 1);
            for (const cJSON *d = env->child; d != v; d = d->next)
                if (strcmp(d->string, v->string) == 0)
                    return api_err_set(err, API_INVALID_ARGUMENT, field, "%s is given twice.", field);
        }
    }
    if (!x) return 0;

    x->stdin_data = stdin_data;
    x->cwd = cwd;
    /* Build argv and the clean environment: PATH unless env gives its own. */
    x->argv = calloc((size_t)n + 1, sizeof *x->argv);
    x->envp = calloc((size_t)nenv + 2, sizeof *x->envp);
    if (!x->argv || !x->envp) return -2;
    i = 0;
    cJSON_ArrayForEach(v, argv) x->argv[i++] = v->valuestring;
    int e = 0;
    if (!env || !cJSON_GetObjectItemCaseSensitive(env, "PATH"))
        if (!(x->envp[e++] = strdup("PATH=" TASK_EXEC_PATH))) return -2;
    if (env)
        cJSON_ArrayForEach(v, env) {
            size_t len = strlen(v->string) + strlen(v->valuestring) + 2;
            if (!(x->envp[e] = malloc(len))) return -2;
            snprintf(x->envp[e++], len, "%s=%s", v->string, v->valuestring);
        }
    return 0;
}

static int exec_validate(const cJSON *args, struct api_err *err)
{
    return exec_parse(args, NULL, err);
}

/* Parses args into x and spec. Returns 0, or -1 with err set. */
static int exec_spec_from_args(const cJSON *args, struct exec_args *x, struct task_exec_spec *spec,
                               struct api_err *err)
{
    memset(x, 0, sizeof *x);
    int rc = exec_parse(args, x, err);
    if (rc == -2) return api_err_set(err, API_INTERNAL, "", "out of memory");
    if (rc < 0) return -1;
    memset(spec, 0, sizeof *spec);
    spec->argv = x->argv;
    spec->envp = (const char *const *)x->envp;
    spec->cwd = x->cwd;
    spec->stdin_data = x->stdin_data;
    spec->stdin_len = x->stdin_data ? strlen(x->stdin_data) : 0;
    spec->what = "exec";
    return 0;
}

static int exec_run(struct task_ctx *ctx)
{
    struct exec_args x;
    struct task_exec_spec spec;
    struct api_err err;
    int rc = exec_spec_from_args(ctx->args, &x, &spec, &err) < 0
                 ? task_fail_args(ctx, &err)
                 : task_exec_run(ctx, &spec);
    exec_args_free(&x);
    return rc;
}

static int exec_start(struct task_actx *actx)
{
    struct exec_args x;
    struct task_exec_spec spec;
    struct api_err err;
    int rc = exec_spec_from_args(actx->args, &x, &spec, &err) < 0
                 ? task_afail_args(actx, &err)
                 : task_exec_start(actx, &spec);
    exec_args_free(&x); /* uv_spawn copied what the child needs */
    return rc;
}

/* Without --allow-exec: every job is refused at submit, and one stored while
 * it was allowed fails when it runs. */
static int exec_validate_disabled(const cJSON *args, struct api_err *err)
{
    return api_err_set(err, API_INVALID_ARGUMENT, "task", "%s.", EXEC_DISABLED_MSG);
}

static int exec_run_disabled(struct task_ctx *ctx)
{
    return task_fail(ctx, JOB_ERR_TASK, "%s", EXEC_DISABLED_MSG);
}

static int exec_start_disabled(struct task_actx *actx)
{
    return task_afail(actx, JOB_ERR_TASK, "%s", EXEC_DISABLED_MSG);
}

#define EXEC_DESCRIPTION "Runs args.argv (no shell) with args.stdin, args.env, args.cwd; returns exit code and output."
#define EXEC_KINDS_REASON "it starts programs; run it on a process or async executor"

static const struct task_def exec_enabled_def = {
    "exec", EXEC_DESCRIPTION, TASK_KIND_PROCESS | TASK_KIND_ASYNC, TASK_KIND_PROCESS, EXEC_KINDS_REASON,
    exec_validate, exec_run, exec_start};
static const struct task_def exec_disabled_def = {
    "exec", EXEC_DESCRIPTION " Disabled: start jobd with --allow-exec.", TASK_KIND_PROCESS | TASK_KIND_ASYNC,
    TASK_KIND_PROCESS, EXEC_KINDS_REASON, exec_validate_disabled, exec_run_disabled, exec_start_disabled};

const struct task_def *task_exec_def(bool allowed)
{
    return allowed ? &exec_enabled_def : &exec_disabled_def;
}
