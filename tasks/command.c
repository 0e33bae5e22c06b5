/* command.c - command tasks: programs the operator declares in the config file,
 * with an argv template filled from the job's args (SPEC §4).
 *
 *   "commands": [{"name": "resize", "description": "...",
 *                 "argv": ["/usr/bin/convert", "{input}", "-resize", "{size}", "{output}"],
 *                 "args": {"input": "string", "size": "string", "output": "string"},
 *                 "executor": "process" | "async", "timeout": 60,
 *                 "env": ["LANG", "TZ"], "cwd": "/srv/images"}]
 *
 * DESIGN
 *
 * Filling. A placeholder "{name}" stands anywhere inside an argv element
 * ("--size={size}"), "{{" and "}}" are literal braces. Each element stays one
 * element whatever the values hold: there is no shell and no splitting, so a
 * value can never add an argument. (It can still start with '-': a template
 * that passes values to a program that parses options should put "--" before
 * them.) argv[0] is fixed: a job never chooses the program. Every declared arg
 * is required, used somewhere in argv, and typed: "string" (the default),
 * "integer" or "number"; numbers are written in their shortest exact form.
 *
 * Everything is checked at start-up: a placeholder not declared in "args", a
 * declared arg that argv never uses, a program that is not an executable
 * file, a bad name. The environment is PATH=/usr/local/bin:/usr/bin:/bin plus
 * the variables of the "env" allowlist, read from the server's environment at
 * start-up (an allowlisted PATH replaces the default).
 *
 * Running is exec's code (task_exec_run / task_exec_start), on a process or
 * async executor ("executor" picks the default kind). Command tasks need no
 * --allow-exec: the operator wrote them.
 *
 * Timeout. "timeout" is the default of the command's jobs: a job that gives no
 * timeout of its own gets the command's, enforced by the task itself (error
 * type `timeout`). On a process executor the task sees the job's deadline and
 * applies the command's only when there is none; the async contract carries
 * no deadline, so there the command's timeout also caps a longer job timeout.
 *
 * Dispatch. A task's entry points receive only the args, not which task they
 * belong to, so each command gets one of COMMANDS_MAX slots with its own
 * trampolines (validate/run/start) that pass the slot's command on. The slot
 * table is written only at start-up, before any executor thread exists, and
 * released with the registry; afterwards it is only read.
 */
#include "task_extra_int.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define COMMANDS_MAX 64       /* command tasks per process */
#define COMMAND_ARGS_MAX 32   /* declared args of one command */
#define COMMAND_ARGV_MAX 256  /* elements of one argv template */
#define COMMAND_ENV_MAX 64    /* names in the env allowlist */
#define COMMAND_VALUE_MAX (128u << 10) /* bytes of one filled argv element */
#define COMMAND_TIMEOUT_MAX_S (7 * 86400.0)
#define COMMAND_PH_NAME_MAX 64

enum ph_type { PH_STRING = 0, PH_INTEGER, PH_NUMBER };
static const char *const ph_type_names[] = {"string", "integer", "number"};

struct command {
    int slot;
    char *name, *description, *cwd;
    unsigned kind;        /* default kind: process or async */
    int64_t timeout_ms;   /* 0 = none */
    char **argv;          /* the template, NULL-terminated */
    char **envp;          /* the program's whole environment, NULL-terminated */
    char *ph_names[COMMAND_ARGS_MAX + 1]; /* declared args, NULL-terminated */
    enum ph_type ph_types[COMMAND_ARGS_MAX];
    int n_ph;
    char example[192];    /* a valid args object, for messages */
};

/* Slot i's command, or NULL. Written at start-up only (see DESIGN). */
static struct command *command_slots[COMMANDS_MAX];

static void strv_free(char **v)
{
    if (v)
        for (char **p = v; *p; p++) free(*p);
    free(v);
}

static void command_free(void *p)
{
    struct command *c = p;
    if (!c) return;
    if (c->slot >= 0 && command_slots[c->slot] == c) command_slots[c->slot] = NULL;
    free(c->name);
    free(c->description);
    free(c->cwd);
    strv_free(c->argv);
    strv_free(c->envp);
    for (int i = 0; i < c->n_ph; i++) free(c->ph_names[i]);
    free(c);
}

/* ---- templates ----------------------------------------------------------- */

/* Walks one template element. For each placeholder calls ph(name, len) and
 * for each literal run lit(text, len) ("{{" and "}}" give one brace). Returns
 * 0, or -1 with a description of the syntax error in msg. */
static int tmpl_walk(const char *s, void *ctx, int (*lit)(void *ctx, const char *p, size_t n),
                     int (*ph)(void *ctx, const char *name, size_t n), char *msg, size_t msize)
{
    while (*s) {
        size_t run = strcspn(s, "{}");
        if (run && lit(ctx, s, run) < 0) return -1;
        s += run;
        if (!*s) break;
        if (s[0] == s[1]) { /* "{{" or "}}" */
            if (lit(ctx, s, 1) < 0) return -1;
            s += 2;
            continue;
        }
        if (s[0] == '}') {
            snprintf(msg, msize, "a lone '}' (write \"}}\" for a literal brace)");
            return -1;
        }
        const char *name = s + 1;
        size_t n = strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_");
        if (name[n] != '}' || n == 0 || n > COMMAND_PH_NAME_MAX || (name[0] >= '0' && name[0] <= '9')) {
            snprintf(msg, msize, "a '{' that does not start a {placeholder} (write \"{{\" for a literal brace)");
            return -1;
        }
        if (ph(ctx, name, n) < 0) return -1;
        s = name + n + 1;
    }
    return 0;
}

/* Start-up check of one element: every placeholder declared; marks the used ones. */
struct tmpl_check {
    const struct command *c;
    bool *used;
    char *msg;
    size_t msize;
};

static int check_lit(void *ctx, const char *p, size_t n)
{
    return 0;
}

static int check_ph(void *ctx, const char *name, size_t n)
{
    struct tmpl_check *k = ctx;
    for (int i = 0; i < k->c->n_ph; i++) {
        if (strlen(k->c->ph_names[i]) == n && memcmp(k->c->ph_names[i], name, n) == 0) {
            k->used[i] = true;
            return 0;
        }
    }
    snprintf(k->msg, k->msize, "placeholder {%.*s} is not declared in \"args\"", (int)n, name);
    return -1;
}

/* Filling one element at run time. */
struct tmpl_fill {
    const struct command *c;
    const char *const *values; /* per declared arg */
    char *out;                 /* NULL: only count */
    size_t len;
};

static int fill_lit(void *ctx, const char *p, size_t n)
{
    struct tmpl_fill *f = ctx;
    if (f->out) memcpy(f->out + f->len, p, n);
    f->len += n;
    return 0;
}

static int fill_ph(void *ctx, const char *name, size_t n)
{
    struct tmpl_fill *f = ctx;
    for (int i = 0; i < f->c->n_ph; i++)
        if (strlen(f->c->ph_names[i]) == n && memcmp(f->c->ph_names[i], name, n) == 0)
            return fill_lit(ctx, f->values[i], strlen(f->values[i]));
    return -1; /* checked at start-up: cannot happen */
}

/* ---- args of a job ------------------------------------------------------- */

/* Renders the declared args of `args` as strings into vals[] (buf holds the
 * numbers' text, COMMAND_ARGS_MAX * 32 bytes). Returns 0 or -1 with err. */
static int command_values(const struct command *c, const cJSON *args, const char **vals, char *buf,
                          struct api_err *err)
{
    char field[96], got[64];
    if (task_args_object(args, c->name, c->example, (const char *const *)c->ph_names, err) < 0) return -1;
    for (int i = 0; i < c->n_ph; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(args, c->ph_names[i]);
        char *num = buf + i * 32;
        snprintf(field, sizeof field, "args.%s", c->ph_names[i]);
        if (!v)
            return api_err_set(err, API_INVALID_ARGUMENT, field, "%s is required: %s %s, e.g. %s.", field,
                               c->ph_types[i] == PH_INTEGER ? "an" : "a", ph_type_names[c->ph_types[i]], c->example);
        bool ok = false;
        if (c->ph_types[i] == PH_STRING) {
            ok = cJSON_IsString(v) && v->valuestring && strlen(v->valuestring) < COMMAND_VALUE_MAX;
            if (ok) vals[i] = v->valuestring;
        } else if (cJSON_IsNumber(v) && isfinite(v->valuedouble)) {
            double d = v->valuedouble + 0.0;
            if (c->ph_types[i] == PH_INTEGER) {
                ok = d == floor(d) && fabs(d) <= 9007199254740992.0; /* 2^53: exact in a double */
                if (ok) snprintf(num, 32, "%lld", (long long)d);
            } else {
                ok = true;
                for (int prec = 1; prec <= 17; prec++) { /* shortest form that reads back the same */
                    snprintf(num, 32, "%.*g", prec, d);
                    if (strtod(num, NULL) == d) break;
                }
            }
            vals[i] = num;
        }
        if (!ok) {
            task_describe_value(v, got, sizeof got);
            return api_err_set(err, API_INVALID_ARGUMENT, field, "%s must be %s %s%s, got %s.", field,
                               c->ph_types[i] == PH_INTEGER ? "an" : "a", ph_type_names[c->ph_types[i]],
                               c->ph_types[i] == PH_STRING ? " shorter than 128 KiB" : "", got);
        }
    }
    return 0;
}

static int command_validate(const struct command *c, const cJSON *args, struct api_err *err)
{
    const char *vals[COMMAND_ARGS_MAX];
    char buf[COMMAND_ARGS_MAX * 32];
    return command_values(c, args, vals, buf, err);
}

/* Fills the template: a new NULL-terminated argv (free with strv_free).
 * Returns 0, -1 with err set, or -ENOMEM. */
static int command_fill(const struct command *c, const cJSON *args, char ***out, struct api_err *err)
{
    const char *vals[COMMAND_ARGS_MAX];
    char buf[COMMAND_ARGS_MAX * 32], msg[8];
    size_t n = 0;
    if (command_values(c, args, vals, buf, err) < 0) return -1;
    while (c->argv[n]) n++;
    char **argv = calloc(n + 1, sizeof *argv);
    if (!argv) return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        struct tmpl_fill f = {c, vals, NULL, 0};
        tmpl_walk(c->argv[i], &f, fill_lit, fill_ph, msg, sizeof msg); /* counts */
        if (!(f.out = malloc(f.len + 1))) {
            strv_free(argv);
            return -ENOMEM;
        }
        f.len = 0;
        tmpl_walk(c->argv[i], &f, fill_lit, fill_ph, msg, sizeof msg); /* writes */
        f.out[f.len] = '\0';
        argv[i] = f.out;
    }
    *out = argv;
    return 0;
}

static void command_spec(const struct command *c, char **argv, struct task_exec_spec *spec)
{
    memset(spec, 0, sizeof *spec);
    spec->argv = (const char *const *)argv;
    spec->envp = (const char *const *)c->envp;
    spec->cwd = c->cwd;
    spec->what = c->name;
}

static int command_run(const struct command *c, struct task_ctx *ctx)
{
    struct api_err err;
    struct task_exec_spec spec;
    char **argv = NULL;
    int rc = command_fill(c, ctx->args, &argv, &err);
    if (rc == -1) return task_fail_args(ctx, &err);
    if (rc < 0) return task_fail(ctx, JOB_ERR_TASK, "out of memory");
    command_spec(c, argv, &spec);
    spec.timeout_ms = ctx->deadline_ns == 0 ? c->timeout_ms : 0; /* the job's own timeout wins */
    rc = task_exec_run(ctx, &spec);
    strv_free(argv);
    return rc;
}

static int command_start(const struct command *c, struct task_actx *actx)
{
    struct api_err err;
    struct task_exec_spec spec;
    char **argv = NULL;
    int rc = command_fill(c, actx->args, &argv, &err);
    if (rc == -1) return task_afail_args(actx, &err);
    if (rc < 0) return task_afail(actx, JOB_ERR_TASK, "out of memory");
    command_spec(c, argv, &spec);
    spec.timeout_ms = c->timeout_ms; /* see DESIGN: no deadline in the async contract */
    rc = task_exec_start(actx, &spec);
    strv_free(argv); /* uv_spawn has copied it into the child */
    return rc;
}

/* ---- the slots' trampolines ---------------------------------------------- */

#define COMMAND_SLOT_LIST(X)                                                                                        \
    X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15) X(16) X(17) X(18) X(19)    \
    X(20) X(21) X(22) X(23) X(24) X(25) X(26) X(27) X(28) X(29) X(30) X(31) X(32) X(33) X(34) X(35) X(36) X(37)     \
    X(38) X(39) X(40) X(41) X(42) X(43) X(44) X(45) X(46) X(47) X(48) X(49) X(50) X(51) X(52) X(53) X(54) X(55)     \
    X(56) X(57) X(58) X(59) X(60) X(61) X(62) X(63)

#define COMMAND_TRAMPOLINES(i)                                                                                      \
    static int command_validate_##i(const cJSON *args, struct api_err *err)                                        \
    {                                                                                                               \
        return command_validate(command_slots[i], args, err);                                                      \
    }                                                                                                               \
    static int command_run_##i(struct task_ctx *ctx) { return command_run(command_slots[i], ctx); }               \
    static int command_start_##i(struct task_actx *actx) { return command_start(command_slots[i], actx); }
COMMAND_SLOT_LIST(COMMAND_TRAMPOLINES)

#define COMMAND_ENTRY(i) {command_validate_##i, command_run_##i, command_start_##i},
static const struct {
    task_validate_fn validate;
    task_run_fn run;
    task_async_start_fn start;
} command_entries[COMMANDS_MAX] = {COMMAND_SLOT_LIST(COMMAND_ENTRY)};
_Static_assert(sizeof command_entries / sizeof command_entries[0] == COMMANDS_MAX, "one trampoline set per slot");

/* ---- parsing the config -------------------------------------------------- */

struct cfg_err {
    char *buf;
    size_t len;
    char where[96]; /* "commands[2] \"resize\"" */
};

static int cfg_fail(struct cfg_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int cfg_fail(struct cfg_err *e, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (e->buf && e->len) snprintf(e->buf, e->len, "%s: %s", e->where, msg);
    return -1;
}

static const char *json_kind(const cJSON *j)
{
    return cJSON_IsString(j) ? "a string" : cJSON_IsNumber(j) ? "a number" : cJSON_IsBool(j) ? "a boolean"
         : cJSON_IsArray(j) ? "a list" : cJSON_IsObject(j) ? "an object" : "null";
}

/* The environment: PATH and the allowlisted variables present in envp. */
static int command_env(struct command *c, const cJSON *names, char *const *envp, struct cfg_err *e)
{
    int n = names ? cJSON_GetArraySize(names) : 0, k = 0;
    const cJSON *v;
    if (names && (!cJSON_IsArray(names) || n > COMMAND_ENV_MAX))
        return cfg_fail(e, "\"env\" must be a list of at most %d variable names, e.g. [\"LANG\", \"TZ\"]",
                        COMMAND_ENV_MAX);
    if (!(c->envp = calloc((size_t)n + 2, sizeof *c->envp))) return cfg_fail(e, "out of memory");
    bool path_given = false;
    cJSON_ArrayForEach(v, names) {
        const char *name = cJSON_IsString(v) ? v->valuestring : NULL;
        size_t len = name ? strlen(name) : 0;
        if (!name || !len || strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") != len ||
            (name[0] >= '0' && name[0] <= '9'))
            return cfg_fail(e, "\"env\" holds %s%s%s, not a variable name", name ? "\"" : "", name ? name : json_kind(v),
                            name ? "\"" : "");
        for (char *const *p = envp; p && *p; p++) {
            if (strncmp(*p, name, len) != 0 || (*p)[len] != '=') continue;
            if (!(c->envp[k++] = strdup(*p))) return cfg_fail(e, "out of memory");
            path_given |= strcmp(name, "PATH") == 0;
            break;
        }
    }
    if (!path_given && !(c->envp[k++] = strdup("PATH=" TASK_EXEC_PATH))) return cfg_fail(e, "out of memory");
    return 0;
}

/* Declared args: {"name": "string" | "integer" | "number"}. */
static int command_args(struct command *c, const cJSON *args, struct cfg_err *e)
{
    const cJSON *v;
    size_t o = 0;
    if (!args) return 0;
    if (!cJSON_IsObject(args))
        return cfg_fail(e, "\"args\" must be an object of placeholder: type, e.g. {\"input\": \"string\"}");
    o += (size_t)snprintf(c->example, sizeof c->example, "{");
    cJSON_ArrayForEach(v, args) {
        const char *name = v->string;
        size_t len = strlen(name);
        if (c->n_ph == COMMAND_ARGS_MAX) return cfg_fail(e, "\"args\" declares more than %d placeholders", COMMAND_ARGS_MAX);
        if (!len || len > COMMAND_PH_NAME_MAX ||
            strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != len ||
            (name[0] >= '0' && name[0] <= '9'))
            return cfg_fail(e, "\"args\": \"%.64s\" is not a placeholder name (letters, digits, '_')", name);
        for (int i = 0; i < c->n_ph; i++)
            if (strcmp(c->ph_names[i], name) == 0) return cfg_fail(e, "\"args\" declares \"%s\" twice", name);
        int t = -1;
        for (int i = 0; i < 3 && cJSON_IsString(v); i++)
            if (strcmp(v->valuestring, ph_type_names[i]) == 0) t = i;
        if (t < 0) return cfg_fail(e, "\"args\".%s must be \"string\", \"integer\" or \"number\"", name);
        if (!(c->ph_names[c->n_ph] = strdup(name))) return cfg_fail(e, "out of memory");
        c->ph_types[c->n_ph++] = (enum ph_type)t;
        if (o < sizeof c->example)
            o += (size_t)snprintf(c->example + o, sizeof c->example - o, "%s\"%s\": %s", c->n_ph > 1 ? ", " : "", name,
                                  t == PH_STRING ? "\"...\"" : "1");
    }
    if (o < sizeof c->example) snprintf(c->example + o, sizeof c->example - o, "}");
    if (o + 1 >= sizeof c->example) snprintf(c->example, sizeof c->example, "{...}");
    return 0;
}

/* The argv template: strings, argv[0] fixed and executable, every
 * placeholder declared, every declared arg used. */
static int command_argv(struct command *c, const cJSON *argv, struct cfg_err *e)
{
    int n = argv ? cJSON_GetArraySize(argv) : 0, i = 0;
    bool used[COMMAND_ARGS_MAX] = {false};
    char msg[160], path[PATH_MAX];
    const cJSON *v;
    if (!cJSON_IsArray(argv) || n < 1 || n > COMMAND_ARGV_MAX)
        return cfg_fail(e, "\"argv\" must be a list of 1 to %d strings, the program first", COMMAND_ARGV_MAX);
    if (!(c->argv = calloc((size_t)n + 1, sizeof *c->argv))) return cfg_fail(e, "out of memory");
    cJSON_ArrayForEach(v, argv) {
        if (!cJSON_IsString(v)) return cfg_fail(e, "argv[%d] must be a string, not %s", i, json_kind(v));
        if (i == 0 && (strchr(v->valuestring, '{') || strchr(v->valuestring, '}') || !v->valuestring[0]))
            return cfg_fail(e, "argv[0] must name a fixed program, without placeholders");
        struct tmpl_check k = {c, used, msg, sizeof msg};
        if (tmpl_walk(v->valuestring, &k, check_lit, check_ph, msg, sizeof msg) < 0)
            return cfg_fail(e, "argv[%d] \"%.100s\": %s", i, v->valuestring, msg);
        if (!(c->argv[i++] = strdup(v->valuestring))) return cfg_fail(e, "out of memory");
    }
    for (int j = 0; j < c->n_ph; j++)
        if (!used[j]) return cfg_fail(e, "\"args\" declares \"%s\" but argv never uses {%s}", c->ph_names[j], c->ph_names[j]);
    struct stat st;
    int rc = task_exec_resolve(c->argv[0], (const char *const *)c->envp, path, sizeof path);
    if (rc == 0 && (stat(path, &st) != 0 || !S_ISREG(st.st_mode))) rc = -ENOENT;
    else if (rc == 0 && access(path, X_OK) != 0) rc = -EACCES;
    if (rc < 0)
        return cfg_fail(e, "argv[0] \"%.200s\": %s", c->argv[0],
                        rc == -ENOENT ? "no such program (not an executable file, or not in PATH)" : strerror(-rc));
    return 0;
}

/* Parses one entry into a new command (freed by the caller on failure too). */
static int command_parse(const cJSON *item, char *const *envp, struct command *c, struct cfg_err *e)
{
    enum { K_NAME, K_DESC, K_ARGV, K_EXEC, K_TIMEOUT, K_ENV, K_ARGS, K_CWD, K_N };
    static const char *const keys[K_N] = {"name", "description", "argv", "executor", "timeout", "env", "args", "cwd"};
    const cJSON *v[K_N] = {NULL};
    if (!cJSON_IsObject(item)) return cfg_fail(e, "expected an object, not %s", json_kind(item));
    for (const cJSON *f = item->child; f; f = f->next) {
        int k = 0;
        while (k < K_N && strcmp(f->string, keys[k]) != 0) k++;
        if (k == K_N)
            return cfg_fail(e, "unknown key \"%.64s\" (name, description, argv, args, executor, timeout, env, cwd)",
                            f->string);
        v[k] = f;
    }
    if (!cJSON_IsString(v[K_NAME])) return cfg_fail(e, "needs a \"name\" string");
    const char *name = v[K_NAME]->valuestring;
    size_t len = strlen(name);
    if (!len || len > 64 || strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_.-") != len)
        return cfg_fail(e, "\"name\" must be 1 to 64 characters of a-z, 0-9, '_', '.' and '-'");
    if (!(c->name = strdup(name))) return cfg_fail(e, "out of memory");
    if (v[K_DESC] && !cJSON_IsString(v[K_DESC])) return cfg_fail(e, "\"description\" must be a string");
    if (v[K_DESC]) c->description = strdup(v[K_DESC]->valuestring);
    else if (cJSON_IsArray(v[K_ARGV]) && cJSON_IsString(cJSON_GetArrayItem(v[K_ARGV], 0))) {
        size_t dlen = strlen(cJSON_GetArrayItem(v[K_ARGV], 0)->valuestring) + 32;
        if ((c->description = malloc(dlen)))
            snprintf(c->description, dlen, "Runs %s (a command task).", cJSON_GetArrayItem(v[K_ARGV], 0)->valuestring);
    } else c->description = strdup("A command task.");
    if (!c->description) return cfg_fail(e, "out of memory");
    c->kind = TASK_KIND_PROCESS;
    if (v[K_EXEC]) {
        const char *k = cJSON_IsString(v[K_EXEC]) ? v[K_EXEC]->valuestring : "";
        if (strcmp(k, "process") == 0) c->kind = TASK_KIND_PROCESS;
        else if (strcmp(k, "async") == 0) c->kind = TASK_KIND_ASYNC;
        else return cfg_fail(e, "\"executor\" must be \"process\" or \"async\" (a command runs a program: not on a thread)");
    }
    if (v[K_TIMEOUT]) {
        double t = cJSON_IsNumber(v[K_TIMEOUT]) ? v[K_TIMEOUT]->valuedouble : -1;
        if (!(t >= 0.001 && t <= COMMAND_TIMEOUT_MAX_S))
            return cfg_fail(e, "\"timeout\" must be a number of seconds from 0.001 to %.0f", COMMAND_TIMEOUT_MAX_S);
        c->timeout_ms = (int64_t)ceil(t * 1000.0);
    }
    if (v[K_CWD] && (!cJSON_IsString(v[K_CWD]) || !v[K_CWD]->valuestring[0]))
        return cfg_fail(e, "\"cwd\" must be a directory");
    if (v[K_CWD] && !(c->cwd = strdup(v[K_CWD]->valuestring))) return cfg_fail(e, "out of memory");
    if (command_env(c, v[K_ENV], envp, e) < 0 || command_args(c, v[K_ARGS], e) < 0) return -1;
    if (!c->n_ph) snprintf(c->example, sizeof c->example, "{}");
    return command_argv(c, v[K_ARGV], e);
}

int task_register_commands(struct task_registry *reg, const cJSON *commands, char *const *envp, char *err,
                           size_t errlen)
{
    struct cfg_err e = {err, errlen, "commands"};
    const cJSON *item;
    int i = 0;
    if (!commands || cJSON_IsNull(commands)) return 0;
    if (!cJSON_IsArray(commands)) return cfg_fail(&e, "expected a list of command objects, not %s", json_kind(commands));
    cJSON_ArrayForEach(item, commands) {
        const cJSON *name = cJSON_IsObject(item) ? cJSON_GetObjectItemCaseSensitive(item, "name") : NULL;
        snprintf(e.where, sizeof e.where, "commands[%d]%s%.64s%s", i++, cJSON_IsString(name) ? " \"" : "",
                 cJSON_IsString(name) ? name->valuestring : "", cJSON_IsString(name) ? "\"" : "");
        struct command *c = calloc(1, sizeof *c);
        if (!c) return cfg_fail(&e, "out of memory");
        c->slot = -1;
        if (command_parse(item, envp, c, &e) < 0) {
            command_free(c);
            return -1;
        }
        int slot = 0;
        while (slot < COMMANDS_MAX && command_slots[slot]) slot++;
        if (slot == COMMANDS_MAX) {
            command_free(c);
            return cfg_fail(&e, "too many command tasks (at most %d)", COMMANDS_MAX);
        }
        if (task_registry_own(reg, command_free, c) < 0) {
            command_free(c);
            return cfg_fail(&e, "out of memory");
        }
        c->slot = slot;
        command_slots[slot] = c; /* start-up: no executor thread exists yet */
        struct task_def def = {c->name, c->description, TASK_KIND_PROCESS | TASK_KIND_ASYNC, c->kind,
                               "a command runs a program; run it on a process or async executor",
                               command_entries[slot].validate, command_entries[slot].run, command_entries[slot].start};
        int rc = task_register(reg, &def);
        if (rc == -EEXIST) return cfg_fail(&e, "a task named \"%s\" already exists (built in, or an earlier entry)", c->name);
        if (rc < 0) return cfg_fail(&e, "cannot register: %s", strerror(-rc));
    }
    return 0;
}
