/* builtin.c - the built-in tasks of SPEC §4: noop, echo, sleep, square, crunch,
 * sha256, fail.
 *
 * Each task with arguments has one parse function that both its validate() (at
 * submit) and its run() (at start) call, so the two can never disagree. Parsing
 * rules, the same for every task (the task_args_*() helpers of registry.c,
 * task_extra_int.h, apply them):
 *
 *   - args must be a JSON object (noop and echo take any JSON value);
 *   - a field not in the task's list is refused ("args.<name>"), and so is a
 *     field given twice;
 *   - a missing required field is refused; an optional field that is absent or
 *     null takes its default;
 *   - numbers are doubles in cJSON: integer fields must be integral and in range;
 *     booleans, strings and null are refused with the expected type in the message.
 *
 * Every refusal is API_INVALID_ARGUMENT with the JSON path in `field` and a
 * sentence saying what was expected and what was sent. run() treats a parse
 * failure (stored args that no longer validate) as a task_error with that sentence.
 *
 * Async entry points (start_async, for the async executor's loop): sleep arms a
 * uv_timer; noop, echo, square and fail finish inside start() (return 1 or -1),
 * since they never block. crunch and sha256 are CPU-bound and have none: they
 * would hold the event loop for their whole run, so they are thread and
 * process tasks only.
 *
 * No global mutable state: every task may run on many threads at once.
 */
#include "task_int.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "../common/clock.h"
#include "task_extra_int.h"

#define SLEEP_MAX_S 86400.0       /* one day */
#define SQUARE_MAX_ABS 1e150      /* so that n * n stays finite */
#define CRUNCH_MAX 1e12           /* iterations */
#define CRUNCH_DEFAULT 1e7        /* iterations; roughly 5-30 ms */
#define CRUNCH_POLL (1u << 20)    /* iterations between two should_stop polls, at most */
#define CRUNCH_REPORTS 100        /* progress reports per run, at most (plus none extra) */
#define SHA256_DATA_MAX (1u << 20) /* bytes of args.data */
#define SHA256_ROUNDS_MAX 1e7
#define SHA256_POLL 10000u         /* rounds between two should_stop polls */
#define FAIL_DEFAULT_MESSAGE "task failed on purpose"

/* ---- results ------------------------------------------------------------ */

/* Sets ctx->result, or fails when building it ran out of memory (result is NULL). */
static int set_result(struct task_ctx *ctx, cJSON *result)
{
    if (!result) return task_fail(ctx, JOB_ERR_TASK, "out of memory while building the result");
    ctx->result = result;
    return 0;
}

/* For a start() that finishes at once: 1 with the result, or -1 when building
 * it ran out of memory (result is NULL). */
static int aset_result(struct task_actx *actx, cJSON *result)
{
    if (!result) return task_afail(actx, JOB_ERR_TASK, "out of memory while building the result");
    actx->result = result;
    return 1;
}

/* ---- noop, echo ---------------------------------------------------------- */

static int noop_run(struct task_ctx *ctx)
{
    ctx->result = NULL; /* JSON null */
    return 0;
}

static int noop_start(struct task_actx *actx)
{
    actx->result = NULL;
    return 1;
}

static int echo_run(struct task_ctx *ctx)
{
    if (!ctx->args) { /* defensive: args is never NULL once validated */
        ctx->result = NULL;
        return 0;
    }
    return set_result(ctx, cJSON_Duplicate(ctx->args, true));
}

static int echo_start(struct task_actx *actx)
{
    if (!actx->args) {
        actx->result = NULL;
        return 1;
    }
    return aset_result(actx, cJSON_Duplicate(actx->args, true));
}

/* ---- sleep --------------------------------------------------------------- */

#define SLEEP_EXAMPLE "{\"seconds\": 1}"
static const char *const sleep_fields[] = {"seconds", NULL};
static const struct task_num_spec sleep_seconds = {
    .key = "seconds", .max = SLEEP_MAX_S, .required = true, .range = "a number from 0 to 86400",
    .example = SLEEP_EXAMPLE};

static int sleep_parse(const cJSON *args, double *seconds, struct api_err *err)
{
    if (task_args_object(args, "sleep", SLEEP_EXAMPLE, sleep_fields, err) < 0) return -1;
    return task_args_number(args, &sleep_seconds, seconds, err);
}

static int sleep_validate(const cJSON *args, struct api_err *err)
{
    double seconds = 0;
    return sleep_parse(args, &seconds, err);
}

/* {"slept": seconds}, or NULL when out of memory. */
static cJSON *sleep_result(double seconds)
{
    cJSON *result = cJSON_CreateObject();
    if (result && !cJSON_AddNumberToObject(result, "slept", seconds)) {
        cJSON_Delete(result);
        result = NULL;
    }
    return result;
}

static int sleep_run(struct task_ctx *ctx)
{
    struct api_err err;
    double seconds = 0;
    if (sleep_parse(ctx->args, &seconds, &err) < 0) return task_fail_args(ctx, &err);

    int64_t start_ns = clock_mono_ns();
    int rc = ctx->sleep_ms(ctx, (int64_t)llround(seconds * 1000.0));
    if (rc == -ECANCELED) {
        /* The runner turns this into "timeout" when the deadline was the cause. */
        double slept = (double)(clock_mono_ns() - start_ns) / 1e9;
        return task_fail(ctx, JOB_ERR_CANCELLED, "stopped after %.3f s of %.3f s", slept, seconds);
    }
    if (rc < 0) return task_fail(ctx, JOB_ERR_TASK, "sleep failed: %s", strerror(-rc));
    return set_result(ctx, sleep_result(seconds));
}

/* On the async loop a sleep is one uv_timer. Its end, natural or by stop(),
 * goes through sleep_closed(), which alone sets the outputs and calls done():
 * done() comes only once the timer is closed. */
struct sleep_state {
    uv_timer_t timer; /* timer.data == this */
    struct task_actx *actx;
    double seconds;
    int64_t start_ns; /* clock_mono_ns() at start */
    bool stopped;     /* stop() came before the timer fired */
};

static void sleep_closed(uv_handle_t *h)
{
    struct sleep_state *st = h->data;
    struct task_actx *actx = st->actx;
    if (st->stopped) {
        double slept = (double)(clock_mono_ns() - st->start_ns) / 1e9;
        task_afail(actx, JOB_ERR_CANCELLED, "stopped after %.3f s of %.3f s", slept, st->seconds);
    } else {
        aset_result(actx, sleep_result(st->seconds));
    }
    actx->task_state = NULL;
    free(st);
    actx->done(actx);
}

static void sleep_fired(uv_timer_t *t)
{
    uv_close((uv_handle_t *)t, sleep_closed);
}

static void sleep_stop(struct task_actx *actx)
{
    struct sleep_state *st = actx->task_state;
    if (uv_is_closing((uv_handle_t *)&st->timer)) return; /* it fired: the sleep ends as a success */
    st->stopped = true;
    uv_close((uv_handle_t *)&st->timer, sleep_closed); /* stops the timer */
}

static int sleep_start(struct task_actx *actx)
{
    struct api_err err;
    double seconds = 0;
    if (sleep_parse(actx->args, &seconds, &err) < 0) return task_afail_args(actx, &err);
    uint64_t ms = (uint64_t)llround(seconds * 1000.0);
    if (ms == 0) return aset_result(actx, sleep_result(seconds));

    struct sleep_state *st = calloc(1, sizeof *st);
    if (!st) return task_afail(actx, JOB_ERR_TASK, "out of memory while starting the timer");
    st->actx = actx;
    st->seconds = seconds;
    st->start_ns = clock_mono_ns();
    uv_timer_init(actx->loop, &st->timer); /* cannot fail */
    st->timer.data = st;
    uv_timer_start(&st->timer, sleep_fired, ms, 0); /* fails only without a callback */
    actx->task_state = st;
    actx->stop = sleep_stop;
    return 0;
}

/* ---- square -------------------------------------------------------------- */

#define SQUARE_EXAMPLE "{\"n\": 3}"
static const char *const square_fields[] = {"n", NULL};
static const struct task_num_spec square_n = {
    .key = "n", .min = -SQUARE_MAX_ABS, .max = SQUARE_MAX_ABS, .required = true,
    .range = "a finite number from -1e150 to 1e150", .example = SQUARE_EXAMPLE};

static int square_parse(const cJSON *args, double *n, struct api_err *err)
{
    if (task_args_object(args, "square", SQUARE_EXAMPLE, square_fields, err) < 0) return -1;
    return task_args_number(args, &square_n, n, err);
}

static int square_validate(const cJSON *args, struct api_err *err)
{
    double n = 0;
    return square_parse(args, &n, err);
}

static int square_run(struct task_ctx *ctx)
{
    struct api_err err;
    double n = 0;
    if (square_parse(ctx->args, &n, &err) < 0) return task_fail_args(ctx, &err);
    return set_result(ctx, cJSON_CreateNumber(n * n));
}

static int square_start(struct task_actx *actx)
{
    struct api_err err;
    double n = 0;
    if (square_parse(actx->args, &n, &err) < 0) return task_afail_args(actx, &err);
    return aset_result(actx, cJSON_CreateNumber(n * n));
}

/* ---- crunch -------------------------------------------------------------- */

static const char *const crunch_fields[] = {"iterations", NULL};
static const struct task_num_spec crunch_iterations = {
    .key = "iterations", .max = CRUNCH_MAX, .integer = true, .dflt = CRUNCH_DEFAULT,
    .range = "an integer from 0 to 1000000000000"};

static int crunch_parse(const cJSON *args, uint64_t *iterations, struct api_err *err)
{
    double d = 0;
    if (task_args_object(args, "crunch", "{\"iterations\": 10000000}", crunch_fields, err) < 0) return -1;
    if (task_args_number(args, &crunch_iterations, &d, err) < 0) return -1;
    *iterations = (uint64_t)d; /* integral and in [0, 1e12]: exact */
    return 0;
}

static int crunch_validate(const cJSON *args, struct api_err *err)
{
    uint64_t n = 0;
    return crunch_parse(args, &n, err);
}

/* Runs n steps of xorshift64 mixed into an accumulator. Each step depends on the
 * previous one and the result is returned, so the compiler can neither drop nor
 * vectorise the loop. The result depends only on the starting state and n, not on
 * how the work is split into calls. */
static void crunch_steps(uint64_t *x, uint64_t *acc, uint64_t n)
{
    uint64_t a = *x, s = *acc;
    for (uint64_t i = 0; i < n; i++) {
        a ^= a << 13;
        a ^= a >> 7;
        a ^= a << 17;
        s = (s ^ a) * 0x2545F4914F6CDD1Du + 1;
    }
    *x = a;
    *acc = s;
}

static int crunch_run(struct task_ctx *ctx)
{
    struct api_err err;
    uint64_t n = 0;
    if (crunch_parse(ctx->args, &n, &err) < 0) return task_fail_args(ctx, &err);

    /* Work in chunks: progress at each chunk end that crosses the next hundredth,
     * a should_stop poll at each chunk end (at most CRUNCH_POLL iterations apart). */
    uint64_t report_step = n / CRUNCH_REPORTS + (n % CRUNCH_REPORTS != 0);
    uint64_t chunk = report_step < CRUNCH_POLL ? report_step : CRUNCH_POLL;
    if (chunk == 0) chunk = 1;
    uint64_t x = 0x9E3779B97F4A7C15u, acc = 0, done = 0, next_report = report_step;
    char msg[64];

    while (done < n) {
        uint64_t k = n - done < chunk ? n - done : chunk;
        crunch_steps(&x, &acc, k);
        done += k;
        if (done >= next_report || done == n) {
            snprintf(msg, sizeof msg, "%" PRIu64 " of %" PRIu64, done, n);
            ctx->progress(ctx, (double)done / (double)n, msg);
            while (next_report <= done) next_report += report_step;
        }
        if (done < n && ctx->should_stop(ctx))
            return task_fail(ctx, JOB_ERR_CANCELLED, "stopped after %" PRIu64 " of %" PRIu64 " iterations", done,
                             n);
    }

    char hex[17];
    snprintf(hex, sizeof hex, "%016" PRIx64, acc);
    cJSON *result = cJSON_CreateObject();
    if (result && (!cJSON_AddNumberToObject(result, "iterations", (double)n) ||
                   !cJSON_AddStringToObject(result, "checksum", hex))) {
        cJSON_Delete(result);
        result = NULL;
    }
    return set_result(ctx, result);
}

/* ---- sha256 -------------------------------------------------------------- */

static const char *const sha256_fields[] = {"data", "rounds", NULL};
static const struct task_num_spec sha256_rounds = {
    .key = "rounds", .min = 1, .max = SHA256_ROUNDS_MAX, .integer = true, .dflt = 1,
    .range = "an integer from 1 to 10000000"};

static int sha256_parse(const cJSON *args, const char **data, uint64_t *rounds, struct api_err *err)
{
    double d = 0;
    if (task_args_object(args, "sha256", "{\"data\": \"abc\", \"rounds\": 1}", sha256_fields, err) < 0) return -1;
    if (task_args_string(args, "data", true, SHA256_DATA_MAX, "{\"data\": \"abc\"}", data, err) < 0) return -1;
    if (task_args_number(args, &sha256_rounds, &d, err) < 0) return -1;
    *rounds = (uint64_t)d;
    return 0;
}

static int sha256_validate(const cJSON *args, struct api_err *err)
{
    const char *data = NULL;
    uint64_t rounds = 0;
    return sha256_parse(args, &data, &rounds, err);
}

/* Round 1 hashes data; each further round hashes the previous 32-byte digest.
 * One EVP_MD_CTX is reused for every round (EVP_Digest would allocate one each). */
static int sha256_run(struct task_ctx *ctx)
{
    struct api_err err;
    const char *data = NULL;
    uint64_t rounds = 0;
    int rc = 0;
    EVP_MD_CTX *md = NULL;
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    cJSON *result = NULL;

    if (sha256_parse(ctx->args, &data, &rounds, &err) < 0) {
        rc = task_fail_args(ctx, &err);
        goto out;
    }
    md = EVP_MD_CTX_new();
    if (!md) {
        rc = task_fail(ctx, JOB_ERR_TASK, "out of memory in OpenSSL");
        goto out;
    }
    const EVP_MD *sha256 = EVP_sha256();
    const void *in = data;
    size_t in_len = strlen(data);
    uint64_t report_step = rounds / CRUNCH_REPORTS + 1;
    uint64_t next_report = report_step;
    char msg[64];
    for (uint64_t r = 1; r <= rounds; r++) {
        if (EVP_DigestInit_ex(md, sha256, NULL) != 1 || EVP_DigestUpdate(md, in, in_len) != 1 ||
            EVP_DigestFinal_ex(md, digest, &len) != 1 || len != 32) {
            rc = task_fail(ctx, JOB_ERR_TASK, "SHA-256 failed inside OpenSSL at round %" PRIu64, r);
            goto out;
        }
        in = digest;
        in_len = len;
        if (r % SHA256_POLL == 0 && r < rounds) {
            if (r >= next_report) {
                snprintf(msg, sizeof msg, "%" PRIu64 " of %" PRIu64 " rounds", r, rounds);
                ctx->progress(ctx, (double)r / (double)rounds, msg);
                while (next_report <= r) next_report += report_step;
            }
            if (ctx->should_stop(ctx)) {
                rc = task_fail(ctx, JOB_ERR_CANCELLED, "stopped after %" PRIu64 " of %" PRIu64 " rounds", r,
                               rounds);
                goto out;
            }
        }
    }

    char hex[65];
    for (unsigned i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    result = cJSON_CreateObject();
    if (result && (!cJSON_AddStringToObject(result, "hex", hex) ||
                   !cJSON_AddNumberToObject(result, "rounds", (double)rounds))) {
        cJSON_Delete(result);
        result = NULL;
    }
    rc = set_result(ctx, result);
out:
    EVP_MD_CTX_free(md);
    return rc;
}

/* ---- fail ---------------------------------------------------------------- */

#define FAIL_EXAMPLE "{\"message\": \"boom\"}"
static const char *const fail_fields[] = {"message", NULL};

/* The message is not limited here: task_fail() truncates it to fit the error. */
static int fail_parse(const cJSON *args, const char **message, struct api_err *err)
{
    if (task_args_object(args, "fail", FAIL_EXAMPLE, fail_fields, err) < 0) return -1;
    if (task_args_string(args, "message", false, SIZE_MAX, FAIL_EXAMPLE, message, err) < 0) return -1;
    if (!*message) *message = FAIL_DEFAULT_MESSAGE;
    return 0;
}

static int fail_validate(const cJSON *args, struct api_err *err)
{
    const char *message = NULL;
    return fail_parse(args, &message, err);
}

static int fail_run(struct task_ctx *ctx)
{
    struct api_err err;
    const char *message = NULL;
    if (fail_parse(ctx->args, &message, &err) < 0) return task_fail_args(ctx, &err);
    return task_fail(ctx, JOB_ERR_TASK, "%s", message);
}

static int fail_start(struct task_actx *actx)
{
    struct api_err err;
    const char *message = NULL;
    if (fail_parse(actx->args, &message, &err) < 0) return task_afail_args(actx, &err);
    return task_afail(actx, JOB_ERR_TASK, "%s", message);
}

/* ---- the table ----------------------------------------------------------- */

/* Why crunch and sha256 are not async tasks; the core's refusal reads
 * "Task 'crunch' cannot run on executor 'async' (kind async): it runs on
 * thread, process executors, because <this>." */
#define CPU_BOUND_REASON "it is CPU-bound and would block the event loop"
#define CPU_KINDS (TASK_KIND_THREAD | TASK_KIND_PROCESS)

static const struct task_def builtins[] = {
    {.name = "noop", .description = "Does nothing and returns null; measures the server's own overhead.",
     .kinds = TASK_KIND_ALL, .default_kind = TASK_KIND_THREAD, .run = noop_run, .start_async = noop_start},
    {.name = "echo", .description = "Returns its args unchanged.", .kinds = TASK_KIND_ALL,
     .default_kind = TASK_KIND_THREAD, .run = echo_run, .start_async = echo_start},
    {.name = "sleep", .description = "Waits args.seconds (0 to 86400) and returns {\"slept\": seconds}.",
     .kinds = TASK_KIND_ALL, .default_kind = TASK_KIND_ASYNC, .validate = sleep_validate, .run = sleep_run,
     .start_async = sleep_start},
    {.name = "square", .description = "Returns args.n squared.", .kinds = TASK_KIND_ALL,
     .default_kind = TASK_KIND_THREAD, .validate = square_validate, .run = square_run,
     .start_async = square_start},
    {.name = "crunch", .description = "Burns CPU for args.iterations steps of a deterministic loop, reporting progress.",
     .kinds = CPU_KINDS, .default_kind = TASK_KIND_PROCESS, .kinds_reason = CPU_BOUND_REASON,
     .validate = crunch_validate, .run = crunch_run},
    {.name = "sha256",
     .description = "Hashes args.data with SHA-256, args.rounds times over, and returns the hex digest.",
     .kinds = CPU_KINDS, .default_kind = TASK_KIND_PROCESS, .kinds_reason = CPU_BOUND_REASON,
     .validate = sha256_validate, .run = sha256_run},
    {.name = "fail", .description = "Always fails with args.message, to try out error handling.",
     .kinds = TASK_KIND_ALL, .default_kind = TASK_KIND_THREAD, .validate = fail_validate, .run = fail_run,
     .start_async = fail_start},
};

const struct task_def *task_builtin_defs(size_t *count)
{
    *count = sizeof builtins / sizeof builtins[0];
    return builtins;
}
