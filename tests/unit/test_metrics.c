/* test_metrics.c - the metrics of GET /metrics below the HTTP layer:
 * label escaping (server/metrics.c), the job counters and latency histograms
 * of the core (core/metrics.c) and the writer's commit histograms
 * (storage/store_writer.c), against a real store in a mkdtemp directory.
 *
 * Nothing sleeps in place of a condition: counters are polled with a
 * deadline, and the store's writer is paused (store__debug_pause) to force a
 * batch of a known size.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../common/clock.h"
#include "../../common/id.h"
#include "../../common/job.h"
#include "../../common/log.h"
#include "../../core/core.h"
#include "../../server/server.h"
#include "../../storage/store_int.h"
#include "../../tasks/task.h"
#include "harness.h"
#include "tmpdir.h"

static struct task_registry *g_reg;

/* ---- escaping --------------------------------------------------------------- */

static void test_escape_backslash_quote_newline_and_nothing_else(void)
{
    char out[64];
    CHECK_EQ_INT(srv_metrics_escape(out, sizeof out, "plain-name_1"), 12);
    CHECK_EQ_STR(out, "plain-name_1");
    CHECK_EQ_INT(srv_metrics_escape(out, sizeof out, "a\\b"), 4);
    CHECK_EQ_STR(out, "a\\\\b");
    CHECK_EQ_INT(srv_metrics_escape(out, sizeof out, "say \"hi\""), 10);
    CHECK_EQ_STR(out, "say \\\"hi\\\"");
    CHECK_EQ_INT(srv_metrics_escape(out, sizeof out, "two\nlines"), 10);
    CHECK_EQ_STR(out, "two\\nlines");
    /* Tabs, carriage returns, braces, commas and UTF-8 pass through as they are. */
    CHECK_EQ_INT(srv_metrics_escape(out, sizeof out, "t\tr\r{,}=\xc3\xa9"), 10);
    CHECK_EQ_STR(out, "t\tr\r{,}=\xc3\xa9");
    CHECK_EQ_INT(srv_metrics_escape(out, sizeof out, "\\\"\n"), 6);
    CHECK_EQ_STR(out, "\\\\\\\"\\n");
    CHECK_EQ_INT(srv_metrics_escape(out, sizeof out, ""), 0);
    CHECK_EQ_STR(out, "");
    CHECK_EQ_INT(srv_metrics_escape(out, sizeof out, NULL), 0);
    CHECK_EQ_STR(out, "");
}

static void test_escape_truncates_like_snprintf(void)
{
    char out[5];
    memset(out, 'x', sizeof out);
    /* "a\"bc" escapes to a \ " b c (5 bytes): 4 fit, then the NUL. */
    CHECK_EQ_INT(srv_metrics_escape(out, sizeof out, "a\"bc"), 5);
    CHECK_EQ_STR(out, "a\\\"b");
    /* Only measuring. */
    CHECK_EQ_INT(srv_metrics_escape(NULL, 0, "x\ny"), 4);
    char one[1] = {'x'};
    CHECK_EQ_INT(srv_metrics_escape(one, 1, "abc"), 3);
    CHECK_EQ_INT(one[0], '\0');
}

/* ---- the core's counters ------------------------------------------------------ */

struct env {
    struct tmp tmp;
    struct store *st;
    struct core *c;
};

static const struct core_executor_config k_execs[] = {
    {.name = "w", .kind = TASK_KIND_THREAD, .size = 2, .max_queued = 1000},
};

/* A store and a core with the executors k_execs. */
static void env_open(struct env *e)
{
    memset(e, 0, sizeof *e);
    tmp_make(&e->tmp, "metrics");
    struct store_options so = {.path = e->tmp.db};
    if (store_open(&so, &e->st) != 0) abort();
    struct core_options co = {.executors = k_execs, .n_executors = (int)(sizeof k_execs / sizeof *k_execs), .tasks = g_reg, .store = e->st};
    if (core_open(&co, &e->c) != 0) abort();
}

static void env_close(struct env *e)
{
    core_close(e->c);
    store_close(e->st);
    tmp_remove(&e->tmp);
}

static int submit(struct env *e, const char *json, char id[ID_LEN + 1])
{
    cJSON *spec = cJSON_Parse(json);
    struct job *j = NULL;
    struct api_err err = {0};
    int rc = core_job_from_json(e->c, spec, "", &j, &err);
    cJSON_Delete(spec);
    if (rc != 0) {
        fprintf(stderr, "    spec %s refused: %s: %s\n", json, err.field, err.message);
        abort();
    }
    if (id) memcpy(id, j->id, ID_LEN + 1);
    return core_job_submit(e->c, j, NULL, NULL);
}

/* What core_job_counters_each reported for one pair. */
struct seen {
    const char *task, *executor;
    int times; /* how often the pair was reported in one pass */
    struct core_job_counters jc;
    int pairs; /* pairs reported in all */
    bool any_cannot_run; /* a pair reported whose executor cannot run the task, with zeros */
};

static void see(void *ctx, const struct core_job_counters *jc)
{
    struct seen *s = ctx;
    s->pairs++;
    if (strcmp(jc->task, s->task) == 0 && strcmp(jc->executor, s->executor) == 0) {
        s->times++;
        s->jc = *jc;
    }
    const struct task_def *def = task_find(g_reg, jc->task);
    if (def && !(def->kinds & TASK_KIND_THREAD) && !jc->submitted && !jc->succeeded && !jc->failed && !jc->cancelled)
        s->any_cannot_run = true;
}

static struct core_job_counters counters(struct env *e, const char *task, const char *executor)
{
    struct seen s = {.task = task, .executor = executor};
    core_job_counters_each(e->c, see, &s);
    CHECK_EQ_INT(s.times, 1);
    return s.jc;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Polls until the pair has `n` outcomes in all, or 5 s pass. */
static bool wait_outcomes(struct env *e, const char *task, const char *executor, uint64_t n)
{
    for (int64_t end = clock_mono_ms() + 5000; clock_mono_ms() < end; sleep_ms(5)) {
        struct core_job_counters jc = counters(e, task, executor);
        if (jc.succeeded + jc.failed + jc.cancelled >= n) return true;
    }
    fprintf(stderr, "    timed out waiting for %llu outcomes of %s on %s\n", (unsigned long long)n, task, executor);
    return false;
}

static uint64_t hist_count(const struct core_latency_hist *h)
{
    uint64_t n = 0;
    for (int i = 0; i <= CORE_LATENCY_BUCKETS; i++) n += h->bucket[i];
    return n;
}

static void test_job_counters_count_each_outcome_exactly_once(void)
{
    struct env e;
    env_open(&e);
    char id[ID_LEN + 1];
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(submit(&e, "{\"task\":\"noop\"}", id), 0);
    /* Two attempts: the first failure is retried, so it is no outcome. */
    CHECK_EQ_INT(submit(&e, "{\"task\":\"fail\",\"max_attempts\":2,\"retry_backoff\":0}", id), 0);
    CHECK_EQ_INT(submit(&e, "{\"task\":\"fail\"}", id), 0);
    /* Cancelled while scheduled: counted, and never started so no latency. */
    CHECK_EQ_INT(submit(&e, "{\"task\":\"echo\",\"delay\":60}", id), 0);
    store_sync(e.st); /* committed, so live: the cancel finds it */
    CHECK_EQ_INT(core_job_cancel(e.c, id), 0);

    CHECK(wait_outcomes(&e, "noop", "w", 3));
    CHECK(wait_outcomes(&e, "fail", "w", 2));
    CHECK(wait_outcomes(&e, "echo", "w", 1));
    struct core_job_counters noop = counters(&e, "noop", "w"), fail = counters(&e, "fail", "w"),
                             echo = counters(&e, "echo", "w");
    CHECK_EQ_INT(noop.submitted, 3);
    CHECK_EQ_INT(noop.succeeded, 3);
    CHECK_EQ_INT(noop.failed + noop.cancelled, 0);
    CHECK_EQ_INT(fail.submitted, 2);
    CHECK_EQ_INT(fail.failed, 2);
    CHECK_EQ_INT(fail.succeeded + fail.cancelled, 0);
    CHECK_EQ_INT(echo.submitted, 1);
    CHECK_EQ_INT(echo.cancelled, 1);

    /* Latency is observed once per outcome of a job that started: 3 noop and
     * 2 fail (the retried attempt is not an outcome); the echo never started. */
    struct core_latency_hist wait, run;
    CHECK_EQ_INT(core_executor_latency(e.c, 0, &wait, &run), 0);
    CHECK_EQ_INT(hist_count(&wait), 5);
    CHECK_EQ_INT(hist_count(&run), 5);
    CHECK_EQ_INT(core_executor_latency(e.c, 1, &wait, &run), -ENOENT);
    CHECK_EQ_INT(core_executor_latency(e.c, -1, NULL, NULL), -ENOENT);
    env_close(&e);
}

static void test_job_counters_list_the_pairs_that_can_run(void)
{
    struct env e;
    env_open(&e); /* one thread executor */
    struct seen s = {.task = "noop", .executor = "w"};
    core_job_counters_each(e.c, see, &s);
    CHECK_EQ_INT(s.times, 1);
    CHECK(!s.any_cannot_run);
    /* Every task that a thread executor can run, once each. */
    int can = 0;
    for (size_t i = 0; i < task_count(g_reg); i++) can += (task_at(g_reg, i)->kinds & TASK_KIND_THREAD) != 0;
    CHECK_EQ_INT(s.pairs, can);
    CHECK(can > 0);
    env_close(&e);
}

static void test_latency_histogram_buckets_by_milliseconds(void)
{
    /* A job that ran 30 ms (sleep) lands above 0.025 s and at most 0.05 s...
     * or later on a loaded machine: check the bucket is not below 0.025 s. */
    struct env e;
    env_open(&e);
    CHECK_EQ_INT(submit(&e, "{\"task\":\"sleep\",\"args\":{\"seconds\":0.03}}", NULL), 0);
    CHECK(wait_outcomes(&e, "sleep", "w", 1));
    struct core_latency_hist wait, run;
    CHECK_EQ_INT(core_executor_latency(e.c, 0, &wait, &run), 0);
    CHECK_EQ_INT(hist_count(&run), 1);
    int b = 0;
    while (b <= CORE_LATENCY_BUCKETS && !run.bucket[b]) b++;
    CHECK(b <= CORE_LATENCY_BUCKETS && b > 0 && core_latency_bounds_s[b - 1] >= 0.025);
    CHECK(run.sum_ms >= 30);
    for (int i = 1; i < CORE_LATENCY_BUCKETS; i++) CHECK(core_latency_bounds_s[i] > core_latency_bounds_s[i - 1]);
    env_close(&e);
}

/* ---- the store's commit histograms --------------------------------------------------------- */

static struct job *make_job(void)
{
    struct job *j = job_new();
    if (!j) abort();
    id_new(j->id);
    if (job_set_str(&j->task, "noop")) abort();
    j->status = JOB_QUEUED;
    j->created_at_ms = j->scheduled_at_ms = clock_wall_ms();
    return j;
}

static uint64_t total(const uint64_t *v, int n)
{
    uint64_t t = 0;
    for (int i = 0; i < n; i++) t += v[i];
    return t;
}

static void test_store_batch_histogram_buckets_by_powers_of_two(void)
{
    struct tmp t;
    tmp_make(&t, "metrics");
    struct store *st = NULL;
    struct store_options so = {.path = t.db};
    CHECK_EQ_INT(store_open(&so, &st), 0);
    struct store_stats before, after;
    store_get_stats(st, &before);
    /* Batches of 1, 2, 3, 5 and 8 ops -> buckets le 1, 2, 4, 8, 8. */
    const int sizes[] = {1, 2, 3, 5, 8};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        store__debug_pause(st, true);
        for (int i = 0; i < sizes[k]; i++) CHECK_EQ_INT(store_job_insert(st, make_job(), NULL, NULL), 0);
        store__debug_pause(st, false);
        store_sync(st);
    }
    store_get_stats(st, &after);
    uint64_t d[STORE_BATCH_BUCKETS + 1];
    for (int i = 0; i <= STORE_BATCH_BUCKETS; i++) d[i] = after.batch_hist[i] - before.batch_hist[i];
    CHECK_EQ_INT(d[0], 1);
    CHECK_EQ_INT(d[1], 1);
    CHECK_EQ_INT(d[2], 1);
    CHECK_EQ_INT(d[3], 2);
    CHECK_EQ_INT(total(d, STORE_BATCH_BUCKETS + 1), 5);
    /* Every batch is timed too; both histograms count the same batches. */
    CHECK_EQ_INT(total(after.commit_hist, STORE_COMMIT_BUCKETS + 1), total(after.batch_hist, STORE_BATCH_BUCKETS + 1));
    CHECK_EQ_INT(total(after.batch_hist, STORE_BATCH_BUCKETS + 1) - total(before.batch_hist, STORE_BATCH_BUCKETS + 1),
                 5);
    CHECK_EQ_INT((after.ops + after.failed_ops) - (before.ops + before.failed_ops), 19);
    for (int i = 1; i < STORE_COMMIT_BUCKETS; i++) CHECK(store_commit_bounds_ns[i] > store_commit_bounds_ns[i - 1]);
    store_close(st);
    tmp_remove(&t);
}

int main(void)
{
    log_init(LOG_LEVEL_OFF, LOG_FORMAT_TEXT);
    if (task_registry_new(NULL, &g_reg) != 0) {
        fprintf(stderr, "task_registry_new failed\n");
        return 1;
    }
    RUN(test_escape_backslash_quote_newline_and_nothing_else);
    RUN(test_escape_truncates_like_snprintf);
    RUN(test_job_counters_count_each_outcome_exactly_once);
    RUN(test_job_counters_list_the_pairs_that_can_run);
    RUN(test_latency_histogram_buckets_by_milliseconds);
    RUN(test_store_batch_histogram_buckets_by_powers_of_two);
    task_registry_free(g_reg);
    return harness_finish();
}
