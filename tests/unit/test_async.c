/* test_async.c - executors/async.c: the async executor behind exec.h.
 *
 * Hooks run on the executor's loop thread (or the canceller's, for a queued
 * job), so they never CHECK: they copy what they saw into a `struct rec` log
 * guarded by a mutex (exec_log.h), signal a condition, and free the job they
 * own. The test waits on that condition with a deadline (never a bare sleep)
 * and checks the log afterwards. Running jobs are held with a long `sleep`
 * that the test cancels, so orderings are forced, not timed; the timing tests
 * measure what the executor promises (concurrency, makespan) with generous
 * bounds.
 *
 * exec_free() asserts uv_loop_close() == 0, so every test that frees an
 * executor also checks that no handle was left open.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "../../common/clock.h"
#include "../../common/id.h"
#include "../../common/job.h"
#include "../../common/log.h"
#include "../../executors/exec.h"
#include "../../tasks/task.h"
#include "harness.h"

#define REC_MAX 128
#include "exec_log.h"

static struct task_registry *g_reg;

/* ---- helpers --------------------------------------------------------------------- */

static struct executor *make_exec_reg(const char *name, int size, struct log *lg, const struct task_registry *reg)
{
    struct exec_config cfg = {.name = name, .kind = TASK_KIND_ASYNC, .size = size};
    struct exec_hooks hooks = {.started = hook_started, .done = hook_done, .progress = hook_progress, .ctx = lg};
    struct executor *ex = NULL;
    int rc = exec_new(&cfg, reg, &hooks, &ex);
    CHECK_EQ_INT(rc, 0);
    if (rc) abort();
    return ex;
}

static struct executor *make_exec(const char *name, int size, struct log *lg)
{
    return make_exec_reg(name, size, lg, g_reg);
}

static struct rec *find_done(struct log *lg, const char *id)
{
    for (int i = 0; i < lg->n_done && i < REC_MAX; i++)
        if (strcmp(lg->done[i].id, id) == 0) return &lg->done[i];
    return NULL;
}

/* Threads of this process, from /proc/self/task. */
static int count_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

/* ---- custom async tasks for what the built-ins do not exercise ----------------- */

/* ticker {"ticks": n}: a 1 ms repeating timer; progress at every tick; no
 * stop(), so a timeout or cancel lets it run to its end. */
struct ticker {
    uv_timer_t timer;
    struct task_actx *actx;
    int ticks, n;
};

static void ticker_closed(uv_handle_t *h)
{
    struct ticker *t = h->data;
    struct task_actx *actx = t->actx;
    actx->result = cJSON_CreateNumber(t->n);
    free(t);
    actx->done(actx);
}

static void ticker_tick(uv_timer_t *h)
{
    struct ticker *t = h->data;
    t->n++;
    t->actx->progress(t->actx, (double)t->n / t->ticks, "tick");
    if (t->n == t->ticks) uv_close((uv_handle_t *)h, ticker_closed);
}

static int ticker_start(struct task_actx *actx)
{
    const cJSON *ticks = cJSON_GetObjectItemCaseSensitive(actx->args, "ticks");
    struct ticker *t = calloc(1, sizeof *t);
    if (!t) return -1;
    t->actx = actx;
    t->ticks = cJSON_IsNumber(ticks) && ticks->valueint > 0 ? ticks->valueint : 1;
    uv_timer_init(actx->loop, &t->timer);
    t->timer.data = t;
    uv_timer_start(&t->timer, ticker_tick, 1, 1);
    return 0;
}

/* leaky: starts a timer it never closes and finishes at once (a buggy task);
 * exec_free must still close the loop cleanly. */
static uv_timer_t leaked_timer;

static void never_called(uv_timer_t *t)
{
}

static int leaky_start(struct task_actx *actx)
{
    uv_timer_init(actx->loop, &leaked_timer);
    uv_timer_start(&leaked_timer, never_called, 3600 * 1000, 0);
    return 1;
}

static struct task_registry *custom_registry(void)
{
    static const struct task_def defs[] = {
        {.name = "ticker", .description = "test", .kinds = TASK_KIND_ASYNC, .default_kind = TASK_KIND_ASYNC,
         .start_async = ticker_start},
        {.name = "leaky", .description = "test", .kinds = TASK_KIND_ASYNC, .default_kind = TASK_KIND_ASYNC,
         .start_async = leaky_start},
    };
    struct task_registry *reg = NULL;
    if (task_registry_new(NULL, &reg) != 0) abort();
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++) CHECK_EQ_INT(task_register(reg, &defs[i]), 0);
    return reg;
}

/* ---- tests --------------------------------------------------------------------------- */

static void test_immediate_tasks_report_results_once(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("async", 4, &lg);
    char noop[ID_LEN + 1], echo[ID_LEN + 1], square[ID_LEN + 1], fail[ID_LEN + 1];
    int64_t before = clock_wall_ms();
    CHECK_EQ_INT(submit(ex, make_job("noop", NULL), noop), 0);
    CHECK_EQ_INT(submit(ex, make_job("echo", "{\"a\":[1,2]}"), echo), 0);
    CHECK_EQ_INT(submit(ex, make_job("square", "{\"n\":12}"), square), 0);
    CHECK_EQ_INT(submit(ex, make_job("fail", "{\"message\":\"disk on fire\"}"), fail), 0);
    WAIT_DONE(&lg, 4, 5000);
    exec_free(ex); /* joins the loop: no further hook can run */
    CHECK_EQ_INT(lg.n_started, 4);
    CHECK_EQ_INT(lg.n_done, 4);
    struct rec *d = find_done(&lg, noop);
    CHECK(d && d->outcome == EXEC_OK && !d->has_result && d->error_type == JOB_ERR_NONE);
    d = find_done(&lg, echo);
    CHECK(d && d->outcome == EXEC_OK);
    if (d) CHECK_EQ_STR(d->result, "{\"a\":[1,2]}");
    d = find_done(&lg, square);
    CHECK(d && d->outcome == EXEC_OK);
    if (d) CHECK_EQ_STR(d->result, "144");
    d = find_done(&lg, fail);
    CHECK(d && d->outcome == EXEC_FAILED && d->error_type == JOB_ERR_TASK && !d->has_result);
    if (d) CHECK_EQ_STR(d->error, "disk on fire");
    for (int i = 0; i < 4; i++) {
        CHECK_EQ_INT(lg.done[i].attempt, 1);
        CHECK(lg.done[i].finished_ms >= lg.done[i].started_ms && lg.done[i].started_ms >= before);
    }
    log_fini(&lg);
}

static void test_started_hook_sees_running_attempt_loop_thread_and_pid(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("aio", 8, &lg);
    struct job *j = make_job("sleep", "{\"seconds\":0.01}");
    j->attempt = 1; /* a retry: the executor counts the new attempt */
    char id[ID_LEN + 1];
    CHECK_EQ_INT(submit(ex, j, id), 0);
    WAIT_DONE(&lg, 1, 5000);
    exec_free(ex);
    struct rec *s = &lg.started[0];
    CHECK_EQ_STR(s->id, id);
    CHECK_EQ_INT(s->status, JOB_RUNNING);
    CHECK_EQ_INT(s->attempt, 2);
    CHECK_EQ_STR(s->thread, "aio-0");
    CHECK_EQ_INT(s->pid, getpid());
    CHECK(s->started_ms > 0);
    CHECK_EQ_INT(s->finished_ms, 0);
    CHECK_EQ_INT(lg.done[0].outcome, EXEC_OK);
    CHECK_EQ_STR(lg.done[0].result, "{\"slept\":0.01}");
    CHECK_EQ_INT(lg.done[0].attempt, 2);
    CHECK(lg.done[0].finished_ms - lg.done[0].started_ms >= 9);
    log_fini(&lg);
}

static void test_unknown_task_bad_args_and_no_async_entry_fail(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("async", 2, &lg);
    char unknown[ID_LEN + 1], cpu[ID_LEN + 1], bad[ID_LEN + 1], badjson[ID_LEN + 1];
    CHECK_EQ_INT(submit(ex, make_job("no_such_task", NULL), unknown), 0);
    CHECK_EQ_INT(submit(ex, make_job("crunch", "{\"iterations\":10}"), cpu), 0); /* the core refuses this */
    CHECK_EQ_INT(submit(ex, make_job("sleep", "{\"seconds\":\"x\"}"), bad), 0);
    CHECK_EQ_INT(submit(ex, make_job("echo", "{not json"), badjson), 0);
    WAIT_DONE(&lg, 4, 5000);
    exec_free(ex);
    struct rec *d = find_done(&lg, unknown);
    CHECK(d && d->outcome == EXEC_FAILED && d->error_type == JOB_ERR_TASK && strstr(d->error, "no_such_task"));
    d = find_done(&lg, cpu);
    CHECK(d && d->outcome == EXEC_FAILED && d->error_type == JOB_ERR_TASK);
    if (d) CHECK_EQ_STR(d->error, "task 'crunch' has no async implementation");
    d = find_done(&lg, bad);
    CHECK(d && d->outcome == EXEC_FAILED && d->error_type == JOB_ERR_TASK && strstr(d->error, "args.seconds"));
    d = find_done(&lg, badjson);
    CHECK(d && d->outcome == EXEC_FAILED && strstr(d->error, "not valid JSON"));
    CHECK_EQ_INT(lg.n_started, 4);
    log_fini(&lg);
}

static void test_hundred_sleeps_run_at_once(void)
{
    enum { N = 100 };
    struct log lg;
    log_init_(&lg);
    struct job **jobs = log_bulk(&lg, N, "sleep", "{\"seconds\":0.2}");
    struct executor *ex = make_exec("async", 256, &lg);
    int64_t t0 = clock_mono_ms();
    int refused = 0;
    for (int i = 0; i < N; i++) refused += submit(ex, jobs[i], NULL) != 0;
    CHECK_EQ_INT(refused, 0);
    WAIT_DONE(&lg, N, 5000);
    int64_t took = lg.last_done_mono_ms - t0;
    exec_free(ex);
    printf("# %d x sleep 0.2 on size 256: %lld ms\n", N, (long long)took);
    CHECK(took >= 199);
    CHECK(took < 1000);
    CHECK_EQ_INT(log_bulk_once(&lg), N);
    CHECK_EQ_INT(lg.bulk_not_ok, 0);
    CHECK_EQ_INT(lg.max_running, N);
    free(jobs);
    log_bulk_fini(&lg);
    log_fini(&lg);
}

static void test_size_limits_concurrency(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("async", 2, &lg);
    int64_t t0 = clock_mono_ms();
    for (int i = 0; i < 4; i++) CHECK_EQ_INT(submit(ex, make_job("sleep", "{\"seconds\":0.2}"), NULL), 0);
    struct exec_stats st;
    exec_get_stats(ex, &st);
    CHECK_EQ_INT(st.size, 2);
    CHECK(st.busy <= 2);
    CHECK(st.busy + st.queued == 4);
    WAIT_DONE(&lg, 4, 5000);
    int64_t took = lg.done[3].at_mono_ms - t0;
    exec_free(ex);
    printf("# 4 x sleep 0.2 on size 2: %lld ms\n", (long long)took);
    CHECK_EQ_INT(lg.max_running, 2);
    CHECK(took >= 399); /* two rounds */
    CHECK(took < 1000);
    for (int i = 0; i < 4; i++) CHECK_EQ_INT(lg.done[i].outcome, EXEC_OK);
    log_fini(&lg);
}

static void test_timeout_stops_a_sleep(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("async", 4, &lg);
    struct job *j = make_job("sleep", "{\"seconds\":30}");
    j->timeout_ms = 200;
    int64_t t0 = clock_mono_ms();
    CHECK_EQ_INT(submit(ex, j, NULL), 0);
    WAIT_DONE(&lg, 1, 5000);
    int64_t took = lg.done[0].at_mono_ms - t0;
    exec_free(ex);
    CHECK_EQ_INT(lg.done[0].outcome, EXEC_FAILED);
    CHECK_EQ_INT(lg.done[0].error_type, JOB_ERR_TIMEOUT);
    CHECK_EQ_STR(lg.done[0].error, "timed out after 0.200 s");
    CHECK(took >= 199);
    CHECK(took < 1000);
    log_fini(&lg);
}

/* A task without stop() cannot be cut short: it runs to its end, and its
 * success stands (as on the thread executor, and as asyncio.wait_for returns
 * the value of a coroutine that swallowed its cancellation). */
static void test_timeout_of_a_task_without_stop_lets_it_finish(void)
{
    struct task_registry *reg = custom_registry();
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec_reg("async", 4, &lg, reg);
    struct job *j = make_job("ticker", "{\"ticks\":50}");
    j->timeout_ms = 5;
    CHECK_EQ_INT(submit(ex, j, NULL), 0);
    WAIT_DONE(&lg, 1, 5000);
    exec_free(ex);
    CHECK_EQ_INT(lg.done[0].outcome, EXEC_OK);
    CHECK_EQ_STR(lg.done[0].result, "50");
    task_registry_free(reg);
    log_fini(&lg);
}

static void test_progress_is_throttled_to_100_ms(void)
{
    struct task_registry *reg = custom_registry();
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec_reg("async", 4, &lg, reg);
    int64_t t0 = clock_mono_ms();
    CHECK_EQ_INT(submit(ex, make_job("ticker", "{\"ticks\":300}"), NULL), 0);
    WAIT_DONE(&lg, 1, 10000);
    int64_t took = clock_mono_ms() - t0;
    exec_free(ex);
    int n = lg.n_progress < 64 ? lg.n_progress : 64;
    CHECK(n >= 2);                         /* the first tick and the last */
    CHECK(lg.n_progress <= took / 100 + 2); /* 300 ticks, a few reports */
    for (int i = 1; i + 1 < n; i++) CHECK(lg.progress_ms[i] - lg.progress_ms[i - 1] >= 99);
    CHECK(lg.progress_fraction[n - 1] == 1.0); /* the end is always reported */
    CHECK_EQ_STR(lg.done[0].result, "300");
    task_registry_free(reg);
    log_fini(&lg);
}

static void test_cancel_running_sleep_ends_it_at_once(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("async", 4, &lg);
    char id[ID_LEN + 1];
    CHECK_EQ_INT(submit(ex, make_job("sleep", "{\"seconds\":30}"), id), 0);
    WAIT_STARTED(&lg, 1, 5000);
    int64_t t0 = clock_mono_ms();
    CHECK_EQ_INT(exec_cancel(ex, id), 0);
    WAIT_DONE(&lg, 1, 5000);
    int64_t took = lg.done[0].at_mono_ms - t0;
    CHECK_EQ_INT(exec_cancel(ex, id), -ENOENT); /* finished */
    exec_free(ex);
    printf("# cancel of a running sleep reported after %lld ms\n", (long long)took);
    CHECK(took < 100);
    CHECK_EQ_STR(lg.done[0].id, id);
    CHECK_EQ_INT(lg.done[0].outcome, EXEC_CANCELLED);
    CHECK_EQ_INT(lg.done[0].error_type, JOB_ERR_CANCELLED);
    CHECK_EQ_STR(lg.done[0].error, "cancelled while running");
    CHECK_EQ_INT(lg.done[0].attempt, 1);
    log_fini(&lg);
}

static void test_workers_list_running_jobs_up_to_a_hundred(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("aw", 200, &lg);
    static struct exec_worker w[200];
    CHECK_EQ_INT(exec_workers(ex, w, 200), 0); /* nothing runs: no entry */
    char a[ID_LEN + 1], b[ID_LEN + 1];
    CHECK_EQ_INT(submit(ex, make_job("sleep", "{\"seconds\":30}"), a), 0);
    CHECK_EQ_INT(submit(ex, make_job("sleep", "{\"seconds\":30}"), b), 0);
    WAIT_STARTED(&lg, 2, 5000);
    CHECK_EQ_INT(exec_workers(ex, w, 200), 2);
    int ka = strcmp(w[0].job_id, a) == 0 ? 0 : 1; /* the index's order, not the age */
    CHECK_EQ_STR(w[ka].job_id, a);
    CHECK_EQ_STR(w[1 - ka].job_id, b);
    for (int i = 0; i < 2; i++) {
        CHECK_EQ_INT(w[i].slot, i);
        CHECK_EQ_INT(w[i].pid, getpid());
        CHECK_EQ_STR(w[i].thread, "aw-0");
        CHECK_EQ_STR(w[i].task, "sleep");
        int r = strcmp(lg.started[0].id, w[i].job_id) == 0 ? 0 : 1; /* its started hook's record */
        CHECK_EQ_STR(lg.started[r].id, w[i].job_id);
        CHECK_EQ_INT(w[i].started_at_ms, lg.started[r].started_ms);
    }
    CHECK_EQ_INT(exec_cancel(ex, a), 0);
    WAIT_DONE(&lg, 1, 5000);
    CHECK_EQ_INT(exec_workers(ex, w, 200), 1);
    CHECK_EQ_STR(w[0].job_id, b);
    for (int i = 0; i < 119; i++) CHECK_EQ_INT(submit(ex, make_job("sleep", "{\"seconds\":30}"), NULL), 0);
    WAIT_STARTED(&lg, 121, 5000);
    CHECK_EQ_INT(exec_workers(ex, w, 200), EXEC_ASYNC_WORKERS_MAX);
    CHECK_EQ_INT(exec_workers(ex, w, 7), 7);
    exec_free(ex); /* drains with no grace: every sleep is stopped */
    log_fini(&lg);
}

static void test_cancel_queued_and_unknown(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("async", 1, &lg);
    char running[ID_LEN + 1], queued[ID_LEN + 1];
    CHECK_EQ_INT(submit(ex, make_job("sleep", "{\"seconds\":30}"), running), 0);
    WAIT_STARTED(&lg, 1, 5000);
    CHECK_EQ_INT(submit(ex, make_job("noop", NULL), queued), 0);

    /* queued: removed and reported at once, on the caller's thread, never started */
    CHECK_EQ_INT(exec_cancel(ex, queued), 0);
    CHECK_EQ_INT(log_count(&lg, &lg.n_done), 1);
    CHECK_EQ_STR(lg.done[0].id, queued);
    CHECK_EQ_INT(lg.done[0].outcome, EXEC_CANCELLED);
    CHECK_EQ_INT(lg.done[0].error_type, JOB_ERR_CANCELLED);
    CHECK_EQ_INT(lg.done[0].attempt, 0);
    CHECK_EQ_INT(lg.done[0].started_ms, 0);
    CHECK(lg.done[0].finished_ms > 0);
    CHECK_EQ_INT(exec_cancel(ex, queued), -ENOENT); /* gone */

    char unknown[ID_LEN + 1];
    id_new(unknown);
    CHECK_EQ_INT(exec_cancel(ex, unknown), -ENOENT);
    CHECK_EQ_INT(exec_cancel(ex, running), 0);
    CHECK_EQ_INT(exec_cancel(ex, running), 0); /* twice before it ends: one stop */
    WAIT_DONE(&lg, 2, 5000);
    CHECK_EQ_INT(lg.done[1].outcome, EXEC_CANCELLED);
    exec_free(ex);
    CHECK_EQ_INT(lg.n_started, 1);
    CHECK_EQ_INT(lg.n_done, 2);
    log_fini(&lg);
}

static void test_priority_then_age_orders_the_queue(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("one", 1, &lg);
    char blocker[ID_LEN + 1], p1[ID_LEN + 1], p5[ID_LEN + 1], p3[ID_LEN + 1];
    CHECK_EQ_INT(submit(ex, make_job("sleep", "{\"seconds\":30}"), blocker), 0);
    WAIT_STARTED(&lg, 1, 5000); /* the only slot is busy: everything below queues */
    int prios[3] = {1, 5, 3};
    char *ids[3] = {p1, p5, p3};
    for (int i = 0; i < 3; i++) {
        struct job *j = make_job("noop", NULL);
        j->priority = prios[i];
        CHECK_EQ_INT(submit(ex, j, ids[i]), 0);
    }
    struct job *older = make_job("noop", NULL), *newer = make_job("noop", NULL);
    char id_old[ID_LEN + 1], id_new_[ID_LEN + 1];
    CHECK(strcmp(older->id, newer->id) < 0);
    CHECK_EQ_INT(submit(ex, newer, id_new_), 0);
    CHECK_EQ_INT(submit(ex, older, id_old), 0);
    struct exec_stats st;
    exec_get_stats(ex, &st);
    CHECK_EQ_INT(st.size, 1);
    CHECK_EQ_INT(st.busy, 1);
    CHECK_EQ_INT(st.queued, 5);
    CHECK_EQ_INT(exec_cancel(ex, blocker), 0);
    WAIT_DONE(&lg, 6, 5000);
    exec_free(ex);
    const char *want[6] = {blocker, p5, p3, p1, id_old, id_new_};
    for (int i = 0; i < 6; i++) CHECK_EQ_STR(lg.done[i].id, want[i]);
    CHECK_EQ_INT(lg.done[0].outcome, EXEC_CANCELLED);
    for (int i = 1; i < 6; i++) CHECK_EQ_INT(lg.done[i].outcome, EXEC_OK);
    CHECK_EQ_INT(lg.max_running, 1);
    log_fini(&lg);
}

static void test_two_thousand_sleeps_share_one_thread(void)
{
    enum { N = 2000 };
    struct log lg;
    log_init_(&lg);
    struct job **jobs = log_bulk(&lg, N, "sleep", "{\"seconds\":30}");
    int before = count_threads();
    struct executor *ex = make_exec("async", N, &lg);
    for (int i = 0; i < N; i++) CHECK_EQ_INT(submit(ex, jobs[i], NULL), 0);
    WAIT_STARTED(&lg, N, 10000);
    int during = count_threads();
    struct exec_stats st;
    exec_get_stats(ex, &st);
    CHECK_EQ_INT(st.busy, N);
    CHECK_EQ_INT(st.queued, 0);
    int64_t t0 = clock_mono_ms();
    exec_free(ex); /* drains with no grace: every sleep is stopped */
    int64_t took = clock_mono_ms() - t0;
    printf("# threads: %d before, %d with %d sleeps running; freed in %lld ms\n", before, during, N,
           (long long)took);
    CHECK(before > 0);
    CHECK_EQ_INT(during, before + 1);
    CHECK_EQ_INT(count_threads(), before);
    CHECK_EQ_INT(lg.n_done, N);
    CHECK_EQ_INT(log_bulk_once(&lg), N);
    CHECK_EQ_INT(lg.bulk_not_ok, N); /* all cancelled */
    CHECK(took < 5000);
    free(jobs);
    log_bulk_fini(&lg);
    log_fini(&lg);
}

static void test_ten_thousand_sleeps_of_one_second_makespan(void)
{
    enum { N = 10000 };
    struct log lg;
    log_init_(&lg);
    struct job **jobs = log_bulk(&lg, N, "sleep", "{\"seconds\":1}");
    struct executor *ex = make_exec("async", N, &lg);
    int64_t t0 = clock_mono_ms();
    int refused = 0;
    for (int i = 0; i < N; i++) refused += submit(ex, jobs[i], NULL) != 0;
    int64_t submitted = clock_mono_ms() - t0;
    CHECK_EQ_INT(refused, 0);
    WAIT_DONE(&lg, N, 20000);
    int64_t makespan = lg.last_done_mono_ms - t0;
    exec_free(ex);
    printf("# %d x sleep 1 on size %d: makespan %lld ms (submits took %lld ms), max running %d\n", N, N,
           (long long)makespan, (long long)submitted, lg.max_running);
    CHECK(makespan >= 999);
    /* About 1.1 s in release and 1.2 s under TSan while CI runs the other
     * sanitizer's suite beside it; anything this side of a few seconds
     * shows the 10,000 ran at once (one after another would be hours). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    CHECK(makespan <= 3000);
#else
    CHECK(makespan <= 2000);
#endif
    CHECK_EQ_INT(log_bulk_once(&lg), N);
    CHECK_EQ_INT(lg.unknown_done, 0);
    CHECK_EQ_INT(lg.bulk_not_ok, 0);
    CHECK_EQ_INT(lg.n_started, N);
    free(jobs);
    log_bulk_fini(&lg);
    log_fini(&lg);
}

static void test_ten_thousand_noops_on_a_small_executor_each_done_once(void)
{
    enum { N = 10000 };
    struct log lg;
    log_init_(&lg);
    struct job **jobs = log_bulk(&lg, N, "noop", "{}");
    struct executor *ex = make_exec("async", 3, &lg);
    int refused = 0;
    for (int i = 0; i < N; i++) refused += submit(ex, jobs[i], NULL) != 0;
    CHECK_EQ_INT(refused, 0);
    WAIT_DONE(&lg, N, 20000);
    exec_free(ex);
    CHECK_EQ_INT(log_bulk_once(&lg), N);
    CHECK_EQ_INT(lg.bulk_not_ok, 0);
    CHECK(lg.max_running <= 3);
    free(jobs);
    log_bulk_fini(&lg);
    log_fini(&lg);
}

/* Regression: once ended jobs had left more spare records than a pump batch
 * (64), a burst of queued jobs on a large executor was popped into the
 * 64-entry batch array past its end (UBSan: index 64 out of bounds). Two
 * bursts of 500 on size 1000: the second finds ~500 spares. */
static void test_burst_after_many_spares_pops_at_most_a_batch(void)
{
    enum { N = 500 };
    struct log lg;
    log_init_(&lg);
    struct job **jobs = log_bulk(&lg, 2 * N, "noop", "{}");
    struct executor *ex = make_exec("async", 1000, &lg);
    int refused = 0;
    for (int i = 0; i < N; i++) refused += submit(ex, jobs[i], NULL) != 0;
    WAIT_DONE(&lg, N, 20000);
    for (int i = N; i < 2 * N; i++) refused += submit(ex, jobs[i], NULL) != 0;
    CHECK_EQ_INT(refused, 0);
    WAIT_DONE(&lg, 2 * N, 20000);
    exec_free(ex);
    CHECK_EQ_INT(log_bulk_once(&lg), 2 * N);
    CHECK_EQ_INT(lg.bulk_not_ok, 0);
    free(jobs);
    log_bulk_fini(&lg);
    log_fini(&lg);
}

struct canceller {
    struct executor *ex;
    struct log *lg;
    int from, to, ok, enoent;
};

static void *cancel_range(void *arg)
{
    struct canceller *c = arg;
    for (int i = c->from; i < c->to; i++) {
        int rc = exec_cancel(c->ex, c->lg->ids[i]);
        if (rc == 0) c->ok++;
        else if (rc == -ENOENT) c->enoent++;
    }
    return NULL;
}

/* Cancels from two threads race with jobs starting and ending on the loop:
 * whatever wins, each job is reported exactly once, as done or cancelled. */
static void test_cancels_racing_with_ends_report_each_job_once(void)
{
    enum { N = 2000 };
    struct log lg;
    log_init_(&lg);
    struct job **jobs = log_bulk(&lg, N, "sleep", "{\"seconds\":0.002}");
    struct executor *ex = make_exec("async", 64, &lg);
    for (int i = 0; i < N; i++) CHECK_EQ_INT(submit(ex, jobs[i], NULL), 0);
    struct canceller c[2] = {{ex, &lg, 0, N, 0, 0}, {ex, &lg, N / 2, N, 0, 0}};
    pthread_t t;
    CHECK_EQ_INT(pthread_create(&t, NULL, cancel_range, &c[1]), 0);
    cancel_range(&c[0]);
    pthread_join(t, NULL);
    WAIT_DONE(&lg, N, 10000);
    exec_free(ex);
    printf("# %d cancels answered 0, %d -ENOENT; %d jobs not ok\n", c[0].ok + c[1].ok, c[0].enoent + c[1].enoent,
           lg.bulk_not_ok);
    CHECK_EQ_INT(c[0].ok + c[0].enoent, N);
    CHECK_EQ_INT(c[1].ok + c[1].enoent, N / 2);
    CHECK_EQ_INT(log_bulk_once(&lg), N);
    CHECK_EQ_INT(lg.unknown_done, 0);
    CHECK(lg.bulk_not_ok >= 1);
    free(jobs);
    log_bulk_fini(&lg);
    log_fini(&lg);
}

static void test_drain_returns_queued_stops_running_refuses_submits(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("async", 1, &lg);
    char running[ID_LEN + 1], q1[ID_LEN + 1], q2[ID_LEN + 1];
    CHECK_EQ_INT(submit(ex, make_job("sleep", "{\"seconds\":30}"), running), 0);
    WAIT_STARTED(&lg, 1, 5000);
    CHECK_EQ_INT(submit(ex, make_job("noop", NULL), q1), 0);
    CHECK_EQ_INT(submit(ex, make_job("noop", NULL), q2), 0);
    int64_t t0 = clock_mono_ms();
    exec_drain(ex, 100);
    int64_t took = clock_mono_ms() - t0;
    CHECK(took >= 100); /* the running job had its grace */
    CHECK(took < 1500);
    CHECK_EQ_INT(log_count(&lg, &lg.n_done), 3); /* drain returned after every done() */
    int drained = 0;
    for (int i = 0; i < 3; i++) {
        struct rec *d = &lg.done[i];
        if (strcmp(d->id, running) == 0) {
            CHECK_EQ_INT(d->outcome, EXEC_CANCELLED); /* stopped after the grace */
            CHECK_EQ_INT(d->error_type, JOB_ERR_CANCELLED);
            CHECK_EQ_INT(d->attempt, 1);
        } else {
            drained++;
            CHECK(strcmp(d->id, q1) == 0 || strcmp(d->id, q2) == 0);
            CHECK_EQ_INT(d->outcome, EXEC_DRAINED);
            CHECK_EQ_INT(d->status, JOB_QUEUED); /* stays queued */
            CHECK_EQ_INT(d->attempt, 0);
            CHECK_EQ_INT(d->started_ms, 0);
        }
    }
    CHECK_EQ_INT(drained, 2);
    CHECK_EQ_INT(lg.n_started, 1);

    struct job *late = make_job("noop", NULL);
    CHECK_EQ_INT(exec_submit(ex, late, false), -ESHUTDOWN);
    CHECK_EQ_STR(late->task, "noop"); /* still ours (ASan would see a use after free) */
    job_free(late);
    exec_drain(ex, 100); /* idempotent */
    struct exec_stats st;
    exec_get_stats(ex, &st);
    CHECK_EQ_INT(st.busy, 0);
    CHECK_EQ_INT(st.queued, 0);
    exec_free(ex);
    CHECK_EQ_INT(lg.n_done, 3);
    log_fini(&lg);
}

static void test_drain_lets_a_short_job_finish_within_grace(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("async", 1, &lg);
    CHECK_EQ_INT(submit(ex, make_job("sleep", "{\"seconds\":0.05}"), NULL), 0);
    WAIT_STARTED(&lg, 1, 5000);
    int64_t t0 = clock_mono_ms();
    exec_drain(ex, 5000);
    CHECK(clock_mono_ms() - t0 < 2000); /* returned when the job ended, not at the grace */
    CHECK_EQ_INT(log_count(&lg, &lg.n_done), 1);
    CHECK_EQ_INT(lg.done[0].outcome, EXEC_OK);
    CHECK_EQ_STR(lg.done[0].result, "{\"slept\":0.05}");
    exec_free(ex);
    log_fini(&lg);
}

/* exec_drain must not return before the running job's done() has returned. */
static void test_drain_returns_only_after_done_of_running_job(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("async", 1, &lg);
    CHECK_EQ_INT(submit(ex, make_job("sleep", "{\"seconds\":30}"), NULL), 0);
    WAIT_STARTED(&lg, 1, 5000);
    pthread_mutex_lock(&lg.mu);
    lg.slow_done = true;
    pthread_mutex_unlock(&lg.mu);
    exec_drain(ex, 0);
    pthread_mutex_lock(&lg.mu);
    int done_when_drain_returned = lg.n_done;
    lg.drain_returned = true;
    pthread_cond_broadcast(&lg.cv);
    pthread_mutex_unlock(&lg.mu);
    exec_free(ex);
    CHECK_EQ_INT(done_when_drain_returned, 1);
    CHECK(!lg.done_saw_drain_returned);
    log_fini(&lg);
}

/* exec_free of a fresh executor, of one with queued and running work, and of
 * one whose task leaked a handle: the loop always closes (exec_free asserts
 * uv_loop_close() == 0) and every job is reported once. */
static void test_free_closes_every_handle(void)
{
    struct task_registry *reg = custom_registry();
    struct log lg;
    log_init_(&lg);
    exec_free(make_exec("async", 1, &lg)); /* idle */

    struct executor *ex = make_exec("async", 2, &lg);
    for (int i = 0; i < 5; i++) CHECK_EQ_INT(submit(ex, make_job("sleep", "{\"seconds\":30}"), NULL), 0);
    struct job *j = make_job("sleep", "{\"seconds\":30}");
    j->timeout_ms = 60000; /* a timer of the executor's own, open when freed */
    CHECK_EQ_INT(submit(ex, j, NULL), 0);
    WAIT_STARTED(&lg, 2, 5000);
    exec_free(ex);
    CHECK_EQ_INT(lg.n_done, 6);
    int cancelled = 0, drained = 0;
    for (int i = 0; i < 6; i++) {
        cancelled += lg.done[i].outcome == EXEC_CANCELLED;
        drained += lg.done[i].outcome == EXEC_DRAINED;
    }
    CHECK_EQ_INT(cancelled, 2);
    CHECK_EQ_INT(drained, 4);

    ex = make_exec_reg("async", 2, &lg, reg);
    CHECK_EQ_INT(submit(ex, make_job("leaky", NULL), NULL), 0);
    WAIT_DONE(&lg, 7, 5000);
    exec_free(ex); /* closes the leaked timer (and logs it) */
    CHECK_EQ_INT(lg.done[6].outcome, EXEC_OK);
    task_registry_free(reg);
    log_fini(&lg);
}

int main(void)
{
    log_init(LOG_LEVEL_OFF, LOG_FORMAT_TEXT);
    if (task_registry_new(NULL, &g_reg) != 0) {
        fprintf(stderr, "task_registry_new failed\n");
        return 1;
    }
    RUN(test_immediate_tasks_report_results_once);
    RUN(test_started_hook_sees_running_attempt_loop_thread_and_pid);
    RUN(test_unknown_task_bad_args_and_no_async_entry_fail);
    RUN(test_hundred_sleeps_run_at_once);
    RUN(test_size_limits_concurrency);
    RUN(test_timeout_stops_a_sleep);
    RUN(test_timeout_of_a_task_without_stop_lets_it_finish);
    RUN(test_progress_is_throttled_to_100_ms);
    RUN(test_cancel_running_sleep_ends_it_at_once);
    RUN(test_workers_list_running_jobs_up_to_a_hundred);
    RUN(test_cancel_queued_and_unknown);
    RUN(test_priority_then_age_orders_the_queue);
    RUN(test_two_thousand_sleeps_share_one_thread);
    RUN(test_ten_thousand_sleeps_of_one_second_makespan);
    RUN(test_ten_thousand_noops_on_a_small_executor_each_done_once);
    RUN(test_cancels_racing_with_ends_report_each_job_once);
    RUN(test_burst_after_many_spares_pops_at_most_a_batch);
    RUN(test_drain_returns_queued_stops_running_refuses_submits);
    RUN(test_drain_lets_a_short_job_finish_within_grace);
    RUN(test_drain_returns_only_after_done_of_running_job);
    RUN(test_free_closes_every_handle);
    task_registry_free(g_reg);
    return harness_finish();
}
