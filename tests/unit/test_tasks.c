/* test_tasks.c - tests for tasks/: the registry and the built-in tasks.
 *
 * Tasks run against a fake runner: a struct task_ctx whose progress hook counts
 * calls, whose should_stop reads a flag, and whose sleep_ms returns 0 or
 * -ECANCELED as told, without sleeping. Async starts run on a real libuv loop
 * that the test drives itself, with a done() hook that counts calls.
 */
#include "../../tasks/task.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "../../common/clock.h"
#include "harness.h"

/* ---- the fake runner ----------------------------------------------------- */

struct fake_runner {
    int progress_calls;
    double last_fraction;
    char last_message[128];
    bool fraction_out_of_order; /* a fraction went down or left [0, 1] */
    bool stop;                  /* what should_stop answers */
    int stop_polls;
    int sleep_rc;          /* what sleep_ms returns */
    int64_t sleep_asked_ms; /* the last ms passed to sleep_ms, -1 = never called */
};

static void fake_progress(struct task_ctx *ctx, double fraction, const char *message)
{
    struct fake_runner *f = ctx->runner;
    if (fraction < 0 || fraction > 1 || (f->progress_calls > 0 && fraction < f->last_fraction))
        f->fraction_out_of_order = true;
    f->progress_calls++;
    f->last_fraction = fraction;
    snprintf(f->last_message, sizeof f->last_message, "%s", message ? message : "");
}

static bool fake_should_stop(struct task_ctx *ctx)
{
    struct fake_runner *f = ctx->runner;
    f->stop_polls++;
    return f->stop;
}

static int fake_sleep_ms(struct task_ctx *ctx, int64_t ms)
{
    struct fake_runner *f = ctx->runner;
    f->sleep_asked_ms = ms;
    return f->sleep_rc;
}

static void fake_init(struct fake_runner *f, struct task_ctx *ctx, const cJSON *args)
{
    memset(f, 0, sizeof *f);
    f->last_fraction = -1;
    f->sleep_asked_ms = -1;
    memset(ctx, 0, sizeof *ctx);
    ctx->args = args;
    ctx->job_id = "01TESTJOB0000000000000000";
    ctx->progress = fake_progress;
    ctx->should_stop = fake_should_stop;
    ctx->sleep_ms = fake_sleep_ms;
    ctx->runner = f;
}

/* ---- helpers ------------------------------------------------------------- */

static struct task_registry *g_reg; /* built-ins; set up by main() before any test */

static int dummy_run(struct task_ctx *ctx)
{
    return 0;
}

static int dummy_start(struct task_actx *actx)
{
    return 1;
}

/* Validates json (text) with the named task. Returns the validator's return. */
static int validate(const char *task, const char *json, struct api_err *err)
{
    const struct task_def *def = task_find(g_reg, task);
    cJSON *args = cJSON_Parse(json);
    int rc = -100;
    memset(err, 0, sizeof *err);
    if (!def || !args) {
        fprintf(stderr, "    bad test input: %s %s\n", task, json);
        goto out;
    }
    rc = def->validate ? def->validate(args, err) : 0;
out:
    cJSON_Delete(args);
    return rc;
}

/* Expects json to be accepted by task's validator. */
#define ACCEPT(task, json)                                                                          \
    do {                                                                                            \
        struct api_err e_;                                                                          \
        int rc_ = validate((task), (json), &e_);                                                    \
        if (rc_ != 0) fprintf(stderr, "    refused %s %s: %s\n", (task), (json), e_.message);         \
        CHECK_EQ_INT(rc_, 0);                                                                       \
    } while (0)

/* Expects json to be refused with API_INVALID_ARGUMENT, the given field, and a
 * message that contains `part`. */
#define REFUSE(task, json, want_field, part)                                                        \
    do {                                                                                            \
        struct api_err e_;                                                                          \
        CHECK_EQ_INT(validate((task), (json), &e_), -1);                                            \
        CHECK_EQ_INT(e_.code, API_INVALID_ARGUMENT);                                                \
        CHECK_EQ_STR(e_.field, (want_field));                                                       \
        if (!strstr(e_.message, (part)))                                                            \
            fprintf(stderr, "    message \"%s\" lacks \"%s\"\n", e_.message, (part));               \
        CHECK(strstr(e_.message, (part)) != NULL);                                                  \
    } while (0)

/* Runs task with json args against a fresh fake runner. Returns run()'s return;
 * the caller frees ctx->result and *args. */
static int run(const char *task, const char *json, struct fake_runner *f, struct task_ctx *ctx, cJSON **args)
{
    const struct task_def *def = task_find(g_reg, task);
    *args = cJSON_Parse(json);
    fake_init(f, ctx, *args);
    if (!def || !*args) {
        fprintf(stderr, "    bad test input: %s %s\n", task, json);
        return -100;
    }
    return def->run(ctx);
}

/* The result as compact JSON text, or "(null)" for no result. Caller frees. */
static char *result_text(const struct task_ctx *ctx)
{
    return ctx->result ? cJSON_PrintUnformatted(ctx->result) : strdup("(null)");
}

/* ---- registry ------------------------------------------------------------ */

static void test_registry_has_builtins_in_order(void)
{
    /* The seven original built-ins come first; http_get, exec and crash follow
     * (tests/unit/test_tasks_extra.c covers those). */
    static const char *const want[] = {"noop", "echo", "sleep", "square", "crunch", "sha256", "fail"};
    CHECK_EQ_INT(task_count(g_reg), 10);
    for (size_t i = 0; i < 7; i++) {
        const struct task_def *def = task_at(g_reg, i);
        CHECK(def != NULL);
        if (!def) continue;
        CHECK_EQ_STR(def->name, want[i]);
        CHECK(def->description && def->description[0] && strlen(def->description) < 120);
        /* CPU-bound tasks would block the async loop: thread and process only, and
         * the refusal says why; every other built-in runs everywhere. */
        bool cpu = strcmp(want[i], "crunch") == 0 || strcmp(want[i], "sha256") == 0;
        CHECK_EQ_INT(def->kinds, cpu ? TASK_KIND_THREAD | TASK_KIND_PROCESS : TASK_KIND_ALL);
        CHECK(def->run != NULL);
        CHECK(cpu ? def->start_async == NULL : def->start_async != NULL);
        CHECK(cpu ? def->kinds_reason && strstr(def->kinds_reason, "CPU-bound") : def->kinds_reason == NULL);
        CHECK(task_find(g_reg, want[i]) == def);
    }
    CHECK_EQ_STR(task_at(g_reg, 7) ? task_at(g_reg, 7)->name : NULL, "http_get");
    CHECK_EQ_STR(task_at(g_reg, 8) ? task_at(g_reg, 8)->name : NULL, "exec");
    CHECK_EQ_STR(task_at(g_reg, 9) ? task_at(g_reg, 9)->name : NULL, "crash");
    CHECK(task_at(g_reg, 10) == NULL);
    CHECK_EQ_INT(task_find(g_reg, "noop")->default_kind, TASK_KIND_THREAD);
    CHECK_EQ_INT(task_find(g_reg, "echo")->default_kind, TASK_KIND_THREAD);
    CHECK_EQ_INT(task_find(g_reg, "sleep")->default_kind, TASK_KIND_ASYNC);
    CHECK_EQ_INT(task_find(g_reg, "square")->default_kind, TASK_KIND_THREAD);
    CHECK_EQ_INT(task_find(g_reg, "crunch")->default_kind, TASK_KIND_PROCESS);
    CHECK_EQ_INT(task_find(g_reg, "sha256")->default_kind, TASK_KIND_PROCESS);
    CHECK_EQ_INT(task_find(g_reg, "fail")->default_kind, TASK_KIND_THREAD);
}

static void test_registry_find_hit_and_miss(void)
{
    const struct task_def *def = task_find(g_reg, "sha256");
    CHECK(def != NULL && strcmp(def->name, "sha256") == 0);
    CHECK(task_find(g_reg, "nope") == NULL);
    CHECK(task_find(g_reg, "") == NULL);
    CHECK(task_find(g_reg, "SLEEP") == NULL);
    CHECK(task_find(g_reg, "sleep ") == NULL);
    CHECK(task_find(g_reg, "slee") == NULL);
    CHECK(task_find(g_reg, NULL) == NULL);
    CHECK(task_find(NULL, "sleep") == NULL);
    CHECK_EQ_INT(task_count(NULL), 0);
    task_registry_free(NULL); /* accepted */
}

static void test_registry_register_duplicate_is_eexist(void)
{
    struct task_registry *reg = NULL;
    CHECK_EQ_INT(task_registry_new(NULL, &reg), 0);
    struct task_def def = {"echo", "again", TASK_KIND_ALL, TASK_KIND_THREAD, NULL, NULL, dummy_run, dummy_start};
    CHECK_EQ_INT(task_register(reg, &def), -EEXIST);
    CHECK_EQ_INT(task_count(reg), 10);
    CHECK(task_find(reg, "echo")->run != dummy_run);
    def.name = "echo2";
    CHECK_EQ_INT(task_register(reg, &def), 0);
    CHECK_EQ_INT(task_register(reg, &def), -EEXIST);
    CHECK_EQ_INT(task_count(reg), 11);
    task_registry_free(reg);
}

static void test_registry_register_bad_defs_is_einval(void)
{
    struct task_registry *reg = NULL;
    CHECK_EQ_INT(task_registry_new(NULL, &reg), 0);
    const struct task_def good = {"my-task.v2_x", "d", TASK_KIND_THREAD | TASK_KIND_ASYNC, TASK_KIND_ASYNC, NULL,
                                  NULL, dummy_run, dummy_start};
    struct task_def d;
    static const char *const bad_names[] = {"", "Upper", "has space", "slash/x", "ümlaut", "tab\t"};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        d = good;
        d.name = bad_names[i];
        CHECK_EQ_INT(task_register(reg, &d), -EINVAL);
    }
    char long_name[66];
    memset(long_name, 'a', 65);
    long_name[65] = '\0';
    d = good;
    d.name = long_name;
    CHECK_EQ_INT(task_register(reg, &d), -EINVAL); /* 65 bytes */
    d = good;
    d.name = NULL;
    CHECK_EQ_INT(task_register(reg, &d), -EINVAL);
    d = good;
    d.kinds = 0;
    CHECK_EQ_INT(task_register(reg, &d), -EINVAL);
    d = good;
    d.kinds = TASK_KIND_ALL | 8u;
    CHECK_EQ_INT(task_register(reg, &d), -EINVAL);
    d = good;
    d.default_kind = 0;
    CHECK_EQ_INT(task_register(reg, &d), -EINVAL);
    d = good;
    d.default_kind = TASK_KIND_THREAD | TASK_KIND_ASYNC;
    CHECK_EQ_INT(task_register(reg, &d), -EINVAL);
    d = good;
    d.default_kind = TASK_KIND_PROCESS; /* not in kinds */
    CHECK_EQ_INT(task_register(reg, &d), -EINVAL);
    d = good;
    d.run = NULL;
    CHECK_EQ_INT(task_register(reg, &d), -EINVAL);
    d = good;
    d.start_async = NULL; /* kinds has async: it needs an async entry point */
    CHECK_EQ_INT(task_register(reg, &d), -EINVAL);
    CHECK_EQ_INT(task_register(reg, NULL), -EINVAL);
    CHECK_EQ_INT(task_count(reg), 10);

    CHECK_EQ_INT(task_register(reg, &good), 0);
    long_name[64] = '\0'; /* 64 bytes is the limit */
    d = good;
    d.name = long_name;
    CHECK_EQ_INT(task_register(reg, &d), 0);
    CHECK_EQ_INT(task_count(reg), 12);
    CHECK(task_at(reg, 10) == task_find(reg, "my-task.v2_x"));
    CHECK(task_find(reg, long_name) != NULL);
    task_registry_free(reg);
}

/* The registry copies definitions, keeps pointers stable while it grows, and
 * finds every name after its hash table was resized several times. */
static void test_registry_grows_and_keeps_pointers(void)
{
    struct task_registry *reg = NULL;
    CHECK_EQ_INT(task_registry_new(NULL, &reg), 0);
    const struct task_def *sleep_def = task_find(reg, "sleep");
    static char names[300][16];
    for (int i = 0; i < 300; i++) {
        snprintf(names[i], sizeof names[i], "t%d", i);
        struct task_def d = {names[i], "generated", TASK_KIND_ALL, TASK_KIND_THREAD, NULL, NULL, dummy_run,
                             dummy_start};
        CHECK_EQ_INT(task_register(reg, &d), 0);
        d.name = "overwritten"; /* the registry holds its own copy */
    }
    CHECK_EQ_INT(task_count(reg), 310);
    CHECK(task_find(reg, "sleep") == sleep_def);
    for (int i = 0; i < 300; i++) {
        const struct task_def *def = task_find(reg, names[i]);
        CHECK(def != NULL && def == task_at(reg, 10 + (size_t)i));
    }
    CHECK(task_find(reg, "t300") == NULL);
    CHECK(task_find(reg, "overwritten") == NULL);
    task_registry_free(reg);
}

static void test_kind_name_and_parse(void)
{
    unsigned k = 0;
    CHECK_EQ_STR(task_kind_name(TASK_KIND_THREAD), "thread");
    CHECK_EQ_STR(task_kind_name(TASK_KIND_PROCESS), "process");
    CHECK_EQ_STR(task_kind_name(TASK_KIND_ASYNC), "async");
    CHECK(task_kind_name(0) == NULL);
    CHECK(task_kind_name(TASK_KIND_ALL) == NULL);
    CHECK_EQ_INT(task_kind_parse("process", &k), 0);
    CHECK_EQ_INT(k, TASK_KIND_PROCESS);
    CHECK_EQ_INT(task_kind_parse("async", &k), 0);
    CHECK_EQ_INT(k, TASK_KIND_ASYNC);
    CHECK_EQ_INT(task_kind_parse("thread", &k), 0);
    CHECK_EQ_INT(k, TASK_KIND_THREAD);
    CHECK_EQ_INT(task_kind_parse("Thread", &k), -EINVAL);
    CHECK_EQ_INT(task_kind_parse("", &k), -EINVAL);
    CHECK_EQ_INT(task_kind_parse(NULL, &k), -EINVAL);
}

static void test_task_fail_sets_error_and_keeps_utf8_whole(void)
{
    struct fake_runner f;
    struct task_ctx ctx;
    fake_init(&f, &ctx, NULL);
    CHECK_EQ_INT(task_fail(&ctx, JOB_ERR_TIMEOUT, "took %d s", 5), -1);
    CHECK_EQ_INT(ctx.error_type, JOB_ERR_TIMEOUT);
    CHECK_EQ_STR(ctx.error_message, "took 5 s");

    /* 510 ASCII bytes then a 3-byte character: it does not fit and must go whole. */
    char big[600];
    memset(big, 'x', 510);
    strcpy(big + 510, "\xe2\x82\xac tail");
    task_fail(&ctx, JOB_ERR_TASK, "%s", big);
    CHECK_EQ_INT(strlen(ctx.error_message), 510);
    CHECK_EQ_INT(ctx.error_type, JOB_ERR_TASK);
}

/* ---- validators ---------------------------------------------------------- */

static void test_validate_noop_and_echo_take_anything(void)
{
    static const char *const any[] = {"{}", "null", "[1,2]", "\"s\"", "42", "true", "{\"x\":{\"y\":[]}}"};
    for (size_t i = 0; i < sizeof any / sizeof any[0]; i++) {
        ACCEPT("noop", any[i]);
        ACCEPT("echo", any[i]);
    }
}

static void test_validate_sleep(void)
{
    ACCEPT("sleep", "{\"seconds\": 0}");
    ACCEPT("sleep", "{\"seconds\": 1.5}");
    ACCEPT("sleep", "{\"seconds\": 86400}");
    REFUSE("sleep", "{}", "args.seconds", "required");
    REFUSE("sleep", "{\"seconds\": \"abc\"}", "args.seconds",
           "args.seconds must be a number from 0 to 86400, got \"abc\".");
    REFUSE("sleep", "{\"seconds\": -1}", "args.seconds", "got -1.");
    REFUSE("sleep", "{\"seconds\": 86400.5}", "args.seconds", "got 86400.5.");
    REFUSE("sleep", "{\"seconds\": 1e999}", "args.seconds", "too large");
    REFUSE("sleep", "{\"seconds\": true}", "args.seconds", "got true.");
    REFUSE("sleep", "{\"seconds\": null}", "args.seconds", "got null.");
    REFUSE("sleep", "{\"seconds\": [1]}", "args.seconds", "got an array.");
    REFUSE("sleep", "{\"seconds\": 1, \"bogus\": 2}", "args.bogus", "\"seconds\"");
    REFUSE("sleep", "{\"seconds\": 1, \"seconds\": 2}", "args.seconds", "more than once");
    REFUSE("sleep", "[1]", "args", "must be a JSON object");
    REFUSE("sleep", "5", "args", "got 5.");
    REFUSE("sleep", "\"x\"", "args", "got \"x\".");
}

static void test_validate_square(void)
{
    ACCEPT("square", "{\"n\": 3}");
    ACCEPT("square", "{\"n\": -2.5}");
    ACCEPT("square", "{\"n\": 1e150}");
    ACCEPT("square", "{\"n\": -1e150}");
    REFUSE("square", "{}", "args.n", "required");
    REFUSE("square", "{\"n\": 1e151}", "args.n", "got 1e+151.");
    REFUSE("square", "{\"n\": \"3\"}", "args.n", "got \"3\".");
    REFUSE("square", "{\"n\": false}", "args.n", "must be a finite number");
    REFUSE("square", "{\"n\": 2, \"bogus\": 1}", "args.bogus", "accepts only \"n\"");
    REFUSE("square", "null", "args", "got null.");
}

static void test_validate_crunch(void)
{
    ACCEPT("crunch", "{}");
    ACCEPT("crunch", "{\"iterations\": null}");
    ACCEPT("crunch", "{\"iterations\": 0}");
    ACCEPT("crunch", "{\"iterations\": 1000000000000}");
    ACCEPT("crunch", "{\"iterations\": 1e6}");
    REFUSE("crunch", "{\"iterations\": 1.5}", "args.iterations",
           "args.iterations must be an integer from 0 to 1000000000000, got 1.5.");
    REFUSE("crunch", "{\"iterations\": -1}", "args.iterations", "got -1.");
    REFUSE("crunch", "{\"iterations\": 1000000000001}", "args.iterations", "got 1000000000001.");
    REFUSE("crunch", "{\"iterations\": \"10\"}", "args.iterations", "got \"10\".");
    REFUSE("crunch", "{\"iterations\": {}}", "args.iterations", "got an object.");
    REFUSE("crunch", "{\"bogus\": 1}", "args.bogus", "accepts only \"iterations\"");
    REFUSE("crunch", "[]", "args", "must be a JSON object");
}

static void test_validate_sha256(void)
{
    ACCEPT("sha256", "{\"data\": \"abc\"}");
    ACCEPT("sha256", "{\"data\": \"\"}");
    ACCEPT("sha256", "{\"data\": \"abc\", \"rounds\": 10000000}");
    ACCEPT("sha256", "{\"data\": \"abc\", \"rounds\": null}");
    REFUSE("sha256", "{}", "args.data", "required");
    REFUSE("sha256", "{\"rounds\": 2}", "args.data", "required");
    REFUSE("sha256", "{\"data\": 12}", "args.data", "must be a string, got 12.");
    REFUSE("sha256", "{\"data\": null}", "args.data", "got null.");
    REFUSE("sha256", "{\"data\": \"a\", \"rounds\": 0}", "args.rounds", "an integer from 1 to 10000000, got 0.");
    REFUSE("sha256", "{\"data\": \"a\", \"rounds\": 10000001}", "args.rounds", "got 10000001.");
    REFUSE("sha256", "{\"data\": \"a\", \"rounds\": 2.5}", "args.rounds", "got 2.5.");
    REFUSE("sha256", "{\"data\": \"a\", \"rounds\": \"2\"}", "args.rounds", "got \"2\".");
    REFUSE("sha256", "{\"data\": \"a\", \"bogus\": 1}", "args.bogus", "\"data\" and \"rounds\"");
    REFUSE("sha256", "true", "args", "got true.");

    /* 1 MiB of data is the limit. */
    size_t mib = 1u << 20;
    char *big = malloc(mib + 1);
    CHECK(big != NULL);
    if (!big) return;
    memset(big, 'a', mib);
    big[mib] = '\0';
    cJSON *args = cJSON_CreateObject();
    cJSON_AddStringToObject(args, "data", big);
    struct api_err err;
    CHECK_EQ_INT(task_find(g_reg, "sha256")->validate(args, &err), 0);
    char *bigger = malloc(mib + 2);
    CHECK(bigger != NULL);
    if (bigger) {
        memcpy(bigger, big, mib);
        bigger[mib] = 'b';
        bigger[mib + 1] = '\0';
        cJSON_ReplaceItemInObjectCaseSensitive(args, "data", cJSON_CreateString(bigger));
        CHECK_EQ_INT(task_find(g_reg, "sha256")->validate(args, &err), -1);
        CHECK_EQ_STR(err.field, "args.data");
        CHECK(strstr(err.message, "at most 1048576 bytes long, got 1048577 bytes") != NULL);
    }
    free(bigger);
    free(big);
    cJSON_Delete(args);
}

static void test_validate_fail(void)
{
    ACCEPT("fail", "{}");
    ACCEPT("fail", "{\"message\": \"boom\"}");
    ACCEPT("fail", "{\"message\": null}");
    REFUSE("fail", "{\"message\": 3}", "args.message", "must be a string, got 3.");
    REFUSE("fail", "{\"msg\": \"x\"}", "args.msg", "accepts only \"message\"");
    REFUSE("fail", "[\"x\"]", "args", "must be a JSON object");
}

/* Messages quote what was sent: escaped, cut short, never a UTF-8 sequence in half. */
static void test_validate_messages_quote_values_safely(void)
{
    struct api_err err;
    CHECK_EQ_INT(validate("sleep", "{\"seconds\": \"a\\\"b\\n\"}", &err), -1);
    CHECK(strstr(err.message, "got \"a\\\"b\\u000a\".") != NULL);

    /* 39 ASCII bytes then a 2-byte character crossing the 40-byte cut. */
    CHECK_EQ_INT(validate("sleep", "{\"seconds\": \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\\u00e9yyyy\"}", &err),
                 -1);
    CHECK(strstr(err.message, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...\".") != NULL);

    /* A long unknown key fits err->field and is cut on a character boundary. */
    char json[600];
    char key[400];
    memset(key, 'k', 121);
    strcpy(key + 121, "\xc3\xa9\xc3\xa9zzzz");
    snprintf(json, sizeof json, "{\"%s\": 1}", key);
    CHECK_EQ_INT(validate("square", json, &err), -1);
    CHECK_EQ_INT(strlen(err.field), 5 + 121);
    CHECK(strncmp(err.field, "args.kkk", 8) == 0);
}

/* ---- runs ---------------------------------------------------------------- */

static void test_run_noop_returns_null(void)
{
    struct fake_runner f;
    struct task_ctx ctx;
    cJSON *args;
    CHECK_EQ_INT(run("noop", "{\"anything\": 1}", &f, &ctx, &args), 0);
    CHECK(ctx.result == NULL);
    CHECK_EQ_INT(ctx.error_type, JOB_ERR_NONE);
    cJSON_Delete(args);
}

static void test_run_echo_returns_a_copy(void)
{
    static const char *const inputs[] = {"{\"a\":[1,\"x\",{\"b\":null}],\"c\":true}", "[1,2,3]", "\"hi\"", "3.5",
                                         "null"};
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
        struct fake_runner f;
        struct task_ctx ctx;
        cJSON *args;
        CHECK_EQ_INT(run("echo", inputs[i], &f, &ctx, &args), 0);
        CHECK(ctx.result != NULL && ctx.result != args);
        CHECK(cJSON_Compare(ctx.result, args, true));
        cJSON_Delete(args); /* the result must not depend on args */
        char *text = result_text(&ctx);
        CHECK_EQ_STR(text, inputs[i]);
        free(text);
        cJSON_Delete(ctx.result);
    }
}

static void test_run_square(void)
{
    static const struct {
        const char *args;
        double want;
    } cases[] = {{"{\"n\": 3}", 9}, {"{\"n\": -1.5}", 2.25}, {"{\"n\": 0}", 0}, {"{\"n\": 1e150}", 1e150 * 1e150}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct fake_runner f;
        struct task_ctx ctx;
        cJSON *args;
        CHECK_EQ_INT(run("square", cases[i].args, &f, &ctx, &args), 0);
        CHECK(cJSON_IsNumber(ctx.result));
        CHECK(ctx.result && ctx.result->valuedouble == cases[i].want);
        cJSON_Delete(ctx.result);
        cJSON_Delete(args);
    }
}

static void test_run_square_with_bad_stored_args_fails(void)
{
    struct fake_runner f;
    struct task_ctx ctx;
    cJSON *args;
    CHECK_EQ_INT(run("square", "{\"n\": \"x\"}", &f, &ctx, &args), -1);
    CHECK_EQ_INT(ctx.error_type, JOB_ERR_TASK);
    CHECK(strstr(ctx.error_message, "args.n") != NULL);
    CHECK(ctx.result == NULL);
    cJSON_Delete(args);
}

/* Runs sha256 and returns its hex digest (caller frees), checking rounds. */
static char *sha256_hex(const char *json, double want_rounds)
{
    struct fake_runner f;
    struct task_ctx ctx;
    cJSON *args;
    char *hex = NULL;
    CHECK_EQ_INT(run("sha256", json, &f, &ctx, &args), 0);
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(ctx.result, "hex");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(ctx.result, "rounds");
    CHECK(cJSON_IsString(h) && cJSON_IsNumber(r));
    if (cJSON_IsString(h)) hex = strdup(h->valuestring);
    if (cJSON_IsNumber(r)) CHECK(r->valuedouble == want_rounds);
    cJSON_Delete(ctx.result);
    cJSON_Delete(args);
    return hex;
}

static void test_run_sha256_known_digests(void)
{
    char *hex = sha256_hex("{\"data\": \"abc\"}", 1);
    CHECK_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    free(hex);
    hex = sha256_hex("{\"data\": \"abc\", \"rounds\": 1}", 1);
    CHECK_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    free(hex);
    /* Round 2 hashes the 32 raw bytes of round 1's digest (values from Python's hashlib). */
    hex = sha256_hex("{\"data\": \"abc\", \"rounds\": 2}", 2);
    CHECK_EQ_STR(hex, "4f8b42c22dd3729b519ba6f68d2da7cc5b2d606d05daed5ad5128cc03e6c6358");
    free(hex);
    hex = sha256_hex("{\"data\": \"abc\", \"rounds\": 3}", 3);
    CHECK_EQ_STR(hex, "f2a778f1a6ed3d5bc59a5d79104c598f3f07093f240ca4e91333fb09ed4f36da");
    free(hex);
    hex = sha256_hex("{\"data\": \"\"}", 1);
    CHECK_EQ_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    free(hex);
}

static void test_run_sha256_stops_when_asked(void)
{
    struct fake_runner f;
    struct task_ctx ctx;
    cJSON *args = cJSON_Parse("{\"data\": \"abc\", \"rounds\": 10000000}");
    fake_init(&f, &ctx, args);
    f.stop = true;
    CHECK_EQ_INT(task_find(g_reg, "sha256")->run(&ctx), -1);
    CHECK_EQ_INT(ctx.error_type, JOB_ERR_CANCELLED);
    CHECK_EQ_INT(f.stop_polls, 1);
    CHECK(strstr(ctx.error_message, "10000 of 10000000") != NULL);
    CHECK(ctx.result == NULL);
    cJSON_Delete(args);
}

/* Runs crunch to completion; returns its checksum (caller frees). */
static char *crunch_checksum(const char *json, struct fake_runner *f, double want_iterations)
{
    struct task_ctx ctx;
    cJSON *args;
    char *sum = NULL;
    CHECK_EQ_INT(run("crunch", json, f, &ctx, &args), 0);
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(ctx.result, "iterations");
    const cJSON *cs = cJSON_GetObjectItemCaseSensitive(ctx.result, "checksum");
    CHECK(cJSON_IsNumber(it) && it->valuedouble == want_iterations);
    CHECK(cJSON_IsString(cs) && strlen(cs->valuestring) == 16 &&
          strspn(cs->valuestring, "0123456789abcdef") == 16);
    if (cJSON_IsString(cs)) sum = strdup(cs->valuestring);
    cJSON_Delete(ctx.result);
    cJSON_Delete(args);
    return sum;
}

static void test_run_crunch_is_deterministic_and_reports_progress(void)
{
    struct fake_runner f;
    int64_t t0 = clock_mono_ns();
    char *a = crunch_checksum("{}", &f, 1e7); /* the default */
    int64_t t1 = clock_mono_ns();
    printf("# crunch 10^7 iterations: %.1f ms\n", (double)(t1 - t0) / 1e6);
    CHECK(f.progress_calls >= 1 && f.progress_calls <= 101);
    CHECK(f.last_fraction == 1.0);
    CHECK_EQ_STR(f.last_message, "10000000 of 10000000");
    CHECK(!f.fraction_out_of_order);

    char *b = crunch_checksum("{\"iterations\": 10000000}", &f, 1e7);
    CHECK_EQ_STR(a, b);
    char *c = crunch_checksum("{\"iterations\": 9999999}", &f, 9999999);
    CHECK(a && c && strcmp(a, c) != 0);
    CHECK(f.progress_calls >= 1 && f.progress_calls <= 101);
    CHECK_EQ_STR(f.last_message, "9999999 of 9999999");

    /* Small counts: one report per step at most, and the same values every build. */
    char *d = crunch_checksum("{\"iterations\": 3}", &f, 3);
    CHECK_EQ_INT(f.progress_calls, 3);
    CHECK_EQ_STR(f.last_message, "3 of 3");
    char *e = crunch_checksum("{\"iterations\": 0}", &f, 0);
    CHECK_EQ_INT(f.progress_calls, 0);
    CHECK_EQ_STR(e, "0000000000000000");
    free(a);
    free(b);
    free(c);
    free(d);
    free(e);
}

static void test_run_crunch_checksum_is_pinned(void)
{
    /* Pinned so that thread and process workers, and future builds, agree. */
    struct fake_runner f;
    char *s = crunch_checksum("{\"iterations\": 1000}", &f, 1000);
    CHECK_EQ_STR(s, "ebefebd4f154ad8e"); /* from a Python model of the loop */
    free(s);
}

static void test_run_crunch_stops_when_asked(void)
{
    struct fake_runner f;
    struct task_ctx ctx;
    cJSON *args = cJSON_Parse("{\"iterations\": 1000000000000}");
    fake_init(&f, &ctx, args);
    f.stop = true;
    int64_t t0 = clock_mono_ns();
    CHECK_EQ_INT(task_find(g_reg, "crunch")->run(&ctx), -1);
    CHECK(clock_mono_ns() - t0 < 2000000000); /* the first poll stops it, not the end */
    CHECK_EQ_INT(ctx.error_type, JOB_ERR_CANCELLED);
    CHECK_EQ_INT(f.stop_polls, 1);
    CHECK(strstr(ctx.error_message, "of 1000000000000 iterations") != NULL);
    CHECK(ctx.result == NULL);
    cJSON_Delete(args);
}

static void test_run_sleep(void)
{
    struct fake_runner f;
    struct task_ctx ctx;
    cJSON *args;
    CHECK_EQ_INT(run("sleep", "{\"seconds\": 1.5}", &f, &ctx, &args), 0);
    CHECK_EQ_INT(f.sleep_asked_ms, 1500);
    char *text = result_text(&ctx);
    CHECK_EQ_STR(text, "{\"slept\":1.5}");
    free(text);
    cJSON_Delete(ctx.result);
    cJSON_Delete(args);

    CHECK_EQ_INT(run("sleep", "{\"seconds\": 0}", &f, &ctx, &args), 0);
    CHECK_EQ_INT(f.sleep_asked_ms, 0);
    text = result_text(&ctx);
    CHECK_EQ_STR(text, "{\"slept\":0}");
    free(text);
    cJSON_Delete(ctx.result);
    cJSON_Delete(args);
}

static void test_run_sleep_cancelled(void)
{
    struct fake_runner f;
    struct task_ctx ctx;
    cJSON *args = cJSON_Parse("{\"seconds\": 30}");
    fake_init(&f, &ctx, args);
    f.sleep_rc = -ECANCELED;
    CHECK_EQ_INT(task_find(g_reg, "sleep")->run(&ctx), -1);
    CHECK_EQ_INT(f.sleep_asked_ms, 30000);
    CHECK_EQ_INT(ctx.error_type, JOB_ERR_CANCELLED);
    CHECK(strncmp(ctx.error_message, "stopped after 0.0", 17) == 0);
    CHECK(strstr(ctx.error_message, " s of 30.000 s") != NULL);
    CHECK(ctx.result == NULL);

    /* Any other failure of the hook is a task error. */
    fake_init(&f, &ctx, args);
    f.sleep_rc = -EINTR;
    CHECK_EQ_INT(task_find(g_reg, "sleep")->run(&ctx), -1);
    CHECK_EQ_INT(ctx.error_type, JOB_ERR_TASK);
    cJSON_Delete(args);
}

static void test_run_fail(void)
{
    struct fake_runner f;
    struct task_ctx ctx;
    cJSON *args;
    CHECK_EQ_INT(run("fail", "{}", &f, &ctx, &args), -1);
    CHECK_EQ_INT(ctx.error_type, JOB_ERR_TASK);
    CHECK_EQ_STR(ctx.error_message, "task failed on purpose");
    CHECK(ctx.result == NULL);
    cJSON_Delete(args);

    CHECK_EQ_INT(run("fail", "{\"message\": \"disk on fire, 100%\"}", &f, &ctx, &args), -1);
    CHECK_EQ_INT(ctx.error_type, JOB_ERR_TASK);
    CHECK_EQ_STR(ctx.error_message, "disk on fire, 100%");
    cJSON_Delete(args);
}

/* ---- async starts, on a real libuv loop ----------------------------------- */

struct fake_arunner {
    int done_calls;
    int done_error_type; /* actx->error_type when done() came */
};

static void fake_adone(struct task_actx *actx)
{
    struct fake_arunner *f = actx->runner;
    f->done_calls++;
    f->done_error_type = (int)actx->error_type;
}

static void fake_aprogress(struct task_actx *actx, double fraction, const char *message)
{
}

/* Starts task with json args on loop. Returns start()'s return; the caller
 * frees actx->result and *args. */
static int astart(const char *task, const char *json, uv_loop_t *loop, struct fake_arunner *f,
                  struct task_actx *actx, cJSON **args)
{
    const struct task_def *def = task_find(g_reg, task);
    *args = cJSON_Parse(json);
    memset(f, 0, sizeof *f);
    memset(actx, 0, sizeof *actx);
    if (!def || !def->start_async || !*args) {
        fprintf(stderr, "    bad test input: %s %s\n", task, json);
        return -100;
    }
    actx->args = *args;
    actx->job_id = "01TESTJOB0000000000000000";
    actx->loop = loop;
    actx->done = fake_adone;
    actx->progress = fake_aprogress;
    actx->runner = f;
    return def->start_async(actx);
}

static char *aresult_text(const struct task_actx *actx)
{
    return actx->result ? cJSON_PrintUnformatted(actx->result) : strdup("(null)");
}

/* Each immediate task returns 1 or -1 without opening a handle or calling done(). */
static void test_async_immediate_tasks_finish_inside_start(void)
{
    static const struct {
        const char *task, *args;
        int rc;
        const char *result; /* or the error message's start when rc is -1 */
    } cases[] = {
        {"noop", "{}", 1, "(null)"},
        {"echo", "{\"a\":[1,\"x\"]}", 1, "{\"a\":[1,\"x\"]}"},
        {"echo", "7", 1, "7"},
        {"square", "{\"n\":-3}", 1, "9"},
        {"sleep", "{\"seconds\":0}", 1, "{\"slept\":0}"},
        {"fail", "{\"message\":\"disk on fire\"}", -1, "disk on fire"},
        {"fail", "{}", -1, "task failed on purpose"},
        {"square", "{\"n\":\"x\"}", -1, "invalid args: args.n"},
        {"sleep", "{\"seconds\":-1}", -1, "invalid args: args.seconds"},
    };
    uv_loop_t loop;
    CHECK_EQ_INT(uv_loop_init(&loop), 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct fake_arunner f;
        struct task_actx actx;
        cJSON *args = NULL;
        int rc = astart(cases[i].task, cases[i].args, &loop, &f, &actx, &args);
        CHECK_EQ_INT(rc, cases[i].rc);
        if (rc == 1) {
            char *text = aresult_text(&actx);
            CHECK_EQ_STR(text, cases[i].result);
            CHECK_EQ_INT(actx.error_type, JOB_ERR_NONE);
            free(text);
        } else {
            CHECK_EQ_INT(actx.error_type, JOB_ERR_TASK);
            CHECK(strncmp(actx.error_message, cases[i].result, strlen(cases[i].result)) == 0);
            CHECK(actx.result == NULL);
        }
        CHECK(actx.stop == NULL);
        CHECK_EQ_INT(uv_loop_alive(&loop), 0); /* no handle started */
        CHECK_EQ_INT(uv_run(&loop, UV_RUN_NOWAIT), 0);
        CHECK_EQ_INT(f.done_calls, 0); /* done() only follows a start() that returned 0 */
        cJSON_Delete(actx.result);
        cJSON_Delete(args);
    }
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

static void test_async_fail_message_is_cut_on_a_utf8_boundary(void)
{
    /* 300 two-byte characters: 600 bytes, more than the 511 the message holds. */
    char json[700] = "{\"message\":\"";
    size_t o = strlen(json);
    for (int i = 0; i < 300; i++) o += (size_t)snprintf(json + o, sizeof json - o, "%s", "\xc3\xa9");
    snprintf(json + o, sizeof json - o, "%s", "\"}");
    uv_loop_t loop;
    CHECK_EQ_INT(uv_loop_init(&loop), 0);
    struct fake_arunner f;
    struct task_actx actx;
    cJSON *args = NULL;
    CHECK_EQ_INT(astart("fail", json, &loop, &f, &actx, &args), -1);
    size_t len = strlen(actx.error_message);
    CHECK(len == 510); /* whole characters only */
    cJSON_Delete(args);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

static void test_async_sleep_completes_with_result(void)
{
    uv_loop_t loop;
    CHECK_EQ_INT(uv_loop_init(&loop), 0);
    struct fake_arunner f;
    struct task_actx actx;
    cJSON *args = NULL;
    int64_t t0 = clock_mono_ms();
    CHECK_EQ_INT(astart("sleep", "{\"seconds\":0.05}", &loop, &f, &actx, &args), 0);
    CHECK(actx.stop != NULL);
    CHECK_EQ_INT(f.done_calls, 0); /* never from inside start() */
    CHECK_EQ_INT(uv_loop_alive(&loop), 1);
    uv_run(&loop, UV_RUN_DEFAULT); /* returns once the sleep's timer is closed */
    int64_t took = clock_mono_ms() - t0;
    CHECK_EQ_INT(f.done_calls, 1);
    CHECK_EQ_INT(f.done_error_type, JOB_ERR_NONE);
    char *text = aresult_text(&actx);
    CHECK_EQ_STR(text, "{\"slept\":0.05}");
    free(text);
    CHECK(took >= 49);
    CHECK(took < 1000);
    cJSON_Delete(actx.result);
    cJSON_Delete(args);
    CHECK_EQ_INT(uv_loop_close(&loop), 0); /* the task closed its timer */
}

static void stop_from_timer(uv_timer_t *t)
{
    struct task_actx *actx = t->data;
    actx->stop(actx);
    uv_close((uv_handle_t *)t, NULL);
}

static void test_async_sleep_stop_ends_it_early_as_cancelled(void)
{
    uv_loop_t loop;
    CHECK_EQ_INT(uv_loop_init(&loop), 0);
    struct fake_arunner f;
    struct task_actx actx;
    cJSON *args = NULL;
    int64_t t0 = clock_mono_ms();
    CHECK_EQ_INT(astart("sleep", "{\"seconds\":30}", &loop, &f, &actx, &args), 0);
    uv_timer_t stopper; /* the runner calls stop() on the loop thread, as here */
    uv_timer_init(&loop, &stopper);
    stopper.data = &actx;
    uv_timer_start(&stopper, stop_from_timer, 20, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    int64_t took = clock_mono_ms() - t0;
    CHECK_EQ_INT(f.done_calls, 1);
    CHECK_EQ_INT(actx.error_type, JOB_ERR_CANCELLED);
    CHECK(strncmp(actx.error_message, "stopped after 0.0", 17) == 0);
    CHECK(strstr(actx.error_message, "of 30.000 s") != NULL);
    CHECK(actx.result == NULL);
    CHECK(took < 1000);
    cJSON_Delete(args);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

int main(void)
{
    if (task_registry_new(NULL, &g_reg) != 0) {
        fprintf(stderr, "task_registry_new failed\n");
        return 1;
    }
    RUN(test_registry_has_builtins_in_order);
    RUN(test_registry_find_hit_and_miss);
    RUN(test_registry_register_duplicate_is_eexist);
    RUN(test_registry_register_bad_defs_is_einval);
    RUN(test_registry_grows_and_keeps_pointers);
    RUN(test_kind_name_and_parse);
    RUN(test_task_fail_sets_error_and_keeps_utf8_whole);
    RUN(test_validate_noop_and_echo_take_anything);
    RUN(test_validate_sleep);
    RUN(test_validate_square);
    RUN(test_validate_crunch);
    RUN(test_validate_sha256);
    RUN(test_validate_fail);
    RUN(test_validate_messages_quote_values_safely);
    RUN(test_run_noop_returns_null);
    RUN(test_run_echo_returns_a_copy);
    RUN(test_run_square);
    RUN(test_run_square_with_bad_stored_args_fails);
    RUN(test_run_sha256_known_digests);
    RUN(test_run_sha256_stops_when_asked);
    RUN(test_run_crunch_is_deterministic_and_reports_progress);
    RUN(test_run_crunch_checksum_is_pinned);
    RUN(test_run_crunch_stops_when_asked);
    RUN(test_run_sleep);
    RUN(test_run_sleep_cancelled);
    RUN(test_run_fail);
    RUN(test_async_immediate_tasks_finish_inside_start);
    RUN(test_async_fail_message_is_cut_on_a_utf8_boundary);
    RUN(test_async_sleep_completes_with_result);
    RUN(test_async_sleep_stop_ends_it_early_as_cancelled);
    task_registry_free(g_reg);
    return harness_finish();
}
