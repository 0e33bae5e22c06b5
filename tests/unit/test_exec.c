/* test_exec.c - executors/: the thread executor behind exec.h.
 *
 * Hooks run on the executor's threads, so they never CHECK: they copy what
 * they saw into a `struct rec` log guarded by a mutex (exec_log.h), signal a
 * condition, and free the job they own. The test waits on that condition with
 * a deadline (never a bare sleep) and checks the log afterwards. Running jobs
 * are held with a long `sleep` that the test cancels, so orderings are
 * forced, not timed.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../common/clock.h"
#include "../../common/id.h"
#include "../../common/job.h"
#include "../../common/log.h"
#include "../../executors/exec.h"
#include "../../tasks/task.h"
#include "harness.h"
#include "exec_log.h"

static struct task_registry *g_reg;

/* ---- helpers --------------------------------------------------------------------- */

static struct executor *make_exec(const char *name, int size, struct log *lg)
{
    struct exec_config cfg = {.name = name, .kind = TASK_KIND_THREAD, .size = size};
    struct exec_hooks hooks = {.started = hook_started, .done = hook_done, .ctx = lg};
    struct executor *ex = NULL;
    int rc = exec_new(&cfg, g_reg, &hooks, &ex);
    CHECK_EQ_INT(rc, 0);
    if (rc) abort();
    return ex;
}

/* ---- tests --------------------------------------------------------------------------- */

static void test_job_runs_and_done_is_called_once_with_result(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("w", 2, &lg);
    char id[ID_LEN + 1];
    int64_t before = clock_wall_ms();
    CHECK_EQ_INT(submit(ex, make_job("square", "{\"n\":3}"), id), 0);
    WAIT_DONE(&lg, 1, 5000);
    exec_free(ex); /* joins the workers: no further hook can run */
    CHECK_EQ_INT(lg.n_started, 1);
    CHECK_EQ_INT(lg.n_done, 1);
    struct rec *d = &lg.done[0];
    CHECK_EQ_STR(d->id, id);
    CHECK_EQ_INT(d->outcome, EXEC_OK);
    CHECK(d->has_result);
    CHECK_EQ_STR(d->result, "9");
    CHECK_EQ_INT(d->error_type, JOB_ERR_NONE);
    CHECK(d->finished_ms >= d->started_ms && d->started_ms >= before);
    CHECK_EQ_INT(d->attempt, 1);
    log_fini(&lg);
}

static void test_started_hook_sees_running_attempt_worker_and_pid(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("pool", 1, &lg);
    struct job *j = make_job("echo", "{\"a\":1}");
    j->attempt = 1; /* a retry: the executor counts the new attempt */
    char id[ID_LEN + 1];
    CHECK_EQ_INT(submit(ex, j, id), 0);
    WAIT_DONE(&lg, 1, 5000);
    CHECK_EQ_INT(submit(ex, make_job("noop", NULL), NULL), 0);
    WAIT_DONE(&lg, 2, 5000);
    exec_free(ex);
    struct rec *s = &lg.started[0];
    CHECK_EQ_STR(s->id, id);
    CHECK_EQ_INT(s->status, JOB_RUNNING);
    CHECK_EQ_INT(s->attempt, 2);
    CHECK_EQ_STR(s->thread, "pool-0");
    CHECK_EQ_INT(s->pid, getpid());
    CHECK(s->started_ms > 0);
    CHECK_EQ_INT(s->finished_ms, 0);
    CHECK_EQ_STR(lg.done[0].result, "{\"a\":1}");
    CHECK_EQ_INT(lg.done[0].attempt, 2);
    CHECK_EQ_STR(lg.started[1].thread, "pool-0");
    CHECK_EQ_INT(lg.started[1].attempt, 1);
    log_fini(&lg);
}

static void test_priority_then_age_orders_the_queue(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("one", 1, &lg);
    char blocker[ID_LEN + 1], p1[ID_LEN + 1], p5[ID_LEN + 1], p3[ID_LEN + 1];
    CHECK_EQ_INT(submit(ex, make_job("sleep", "{\"seconds\":30}"), blocker), 0);
    WAIT_STARTED(&lg, 1, 5000); /* the only worker is busy: everything below queues */
    int prios[3] = {1, 5, 3};
    char *ids[3] = {p1, p5, p3};
    for (int i = 0; i < 3; i++) {
        struct job *j = make_job("noop", NULL);
        j->priority = prios[i];
        CHECK_EQ_INT(submit(ex, j, ids[i]), 0);
    }
    /* equal priority: the older id runs first, whatever the submit order */
    struct job *older = make_job("noop", NULL), *newer = make_job("noop", NULL);
    char id_old[ID_LEN + 1], id_new_[ID_LEN + 1];
    CHECK(strcmp(older->id, newer->id) < 0);
    CHECK_EQ_INT(submit(ex, newer, id_new_), 0);
    CHECK_EQ_INT(submit(ex, older, id_old), 0);
    struct exec_stats st;
    exec_get_stats(ex, &st);
    CHECK_EQ_INT(st.queued, 5);
    CHECK_EQ_INT(exec_cancel(ex, blocker), 0);
    WAIT_DONE(&lg, 6, 5000);
    exec_free(ex);
    const char *want[6] = {blocker, p5, p3, p1, id_old, id_new_};
    for (int i = 0; i < 6; i++) CHECK_EQ_STR(lg.done[i].id, want[i]);
    CHECK_EQ_INT(lg.done[0].outcome, EXEC_CANCELLED);
    for (int i = 1; i < 6; i++) CHECK_EQ_INT(lg.done[i].outcome, EXEC_OK);
    log_fini(&lg);
}

static void test_failing_task_reports_task_error(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("w", 1, &lg);
    CHECK_EQ_INT(submit(ex, make_job("fail", "{\"message\":\"disk on fire\"}"), NULL), 0);
    CHECK_EQ_INT(submit(ex, make_job("fail", NULL), NULL), 0);
    CHECK_EQ_INT(submit(ex, make_job("no_such_task", NULL), NULL), 0);
    WAIT_DONE(&lg, 3, 5000);
    exec_free(ex);
    CHECK_EQ_INT(lg.done[0].outcome, EXEC_FAILED);
    CHECK_EQ_INT(lg.done[0].error_type, JOB_ERR_TASK);
    CHECK_EQ_STR(lg.done[0].error, "disk on fire");
    CHECK(!lg.done[0].has_result);
    CHECK_EQ_INT(lg.done[1].outcome, EXEC_FAILED);
    CHECK_EQ_STR(lg.done[1].error, "task failed on purpose");
    CHECK_EQ_INT(lg.done[2].outcome, EXEC_FAILED);
    CHECK_EQ_INT(lg.done[2].error_type, JOB_ERR_TASK);
    CHECK(strstr(lg.done[2].error, "no_such_task") != NULL);
    log_fini(&lg);
}

static void test_timeout_stops_a_sleep(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("w", 1, &lg);
    struct job *j = make_job("sleep", "{\"seconds\":10}");
    j->timeout_ms = 100;
    int64_t t0 = clock_mono_ms();
    CHECK_EQ_INT(submit(ex, j, NULL), 0);
    WAIT_DONE(&lg, 1, 5000);
    int64_t took = lg.done[0].at_mono_ms - t0;
    exec_free(ex);
    CHECK_EQ_INT(lg.done[0].outcome, EXEC_FAILED);
    CHECK_EQ_INT(lg.done[0].error_type, JOB_ERR_TIMEOUT);
    CHECK(strstr(lg.done[0].error, "timed out") != NULL);
    CHECK(took >= 100);
    CHECK(took < 1000);
    log_fini(&lg);
}

static void test_cancel_queued_running_and_unknown(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("w", 1, &lg);
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

    /* running: the sleep is woken and ends within a second */
    int64_t t0 = clock_mono_ms();
    CHECK_EQ_INT(exec_cancel(ex, running), 0);
    WAIT_DONE(&lg, 2, 5000);
    CHECK(lg.done[1].at_mono_ms - t0 < 1000);
    CHECK_EQ_STR(lg.done[1].id, running);
    CHECK_EQ_INT(lg.done[1].outcome, EXEC_CANCELLED);
    CHECK_EQ_INT(lg.done[1].error_type, JOB_ERR_CANCELLED);
    CHECK_EQ_INT(lg.done[1].attempt, 1);

    char unknown[ID_LEN + 1];
    id_new(unknown);
    CHECK_EQ_INT(exec_cancel(ex, unknown), -ENOENT);
    CHECK_EQ_INT(exec_cancel(ex, running), -ENOENT); /* finished */
    exec_free(ex);
    CHECK_EQ_INT(lg.n_started, 1); /* the cancelled queued job never started */
    CHECK_EQ_INT(lg.n_done, 2);
    log_fini(&lg);
}

static void test_stats_busy_queued_size(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("stats", 2, &lg);
    struct exec_stats st;
    exec_get_stats(ex, &st);
    CHECK_EQ_INT(st.size, 2);
    CHECK_EQ_INT(st.busy, 0);
    CHECK_EQ_INT(st.queued, 0);
    CHECK_EQ_STR(exec_name(ex), "stats");
    CHECK_EQ_INT(exec_kind(ex), TASK_KIND_THREAD);
    char a[ID_LEN + 1], b[ID_LEN + 1];
    CHECK_EQ_INT(submit(ex, make_job("sleep", "{\"seconds\":30}"), a), 0);
    CHECK_EQ_INT(submit(ex, make_job("sleep", "{\"seconds\":30}"), b), 0);
    WAIT_STARTED(&lg, 2, 5000);
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(submit(ex, make_job("noop", NULL), NULL), 0);
    exec_get_stats(ex, &st);
    CHECK_EQ_INT(st.size, 2);
    CHECK_EQ_INT(st.busy, 2);
    CHECK_EQ_INT(st.queued, 3);
    CHECK_EQ_INT(exec_cancel(ex, a), 0);
    CHECK_EQ_INT(exec_cancel(ex, b), 0);
    WAIT_DONE(&lg, 5, 5000);
    exec_free(ex);
    log_fini(&lg);
}

static void test_workers_show_each_thread_and_its_job(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("wk", 2, &lg);
    struct exec_worker w[3];
    CHECK_EQ_INT(exec_workers(ex, w, 3), 2);
    for (int i = 0; i < 2; i++) {
        char name[32];
        snprintf(name, sizeof name, "wk-%d", i);
        CHECK_EQ_INT(w[i].slot, i);
        CHECK_EQ_INT(w[i].pid, getpid());
        CHECK_EQ_STR(w[i].thread, name);
        CHECK_EQ_STR(w[i].job_id, "");
        CHECK_EQ_INT(w[i].started_at_ms, 0);
    }
    char id[ID_LEN + 1];
    CHECK_EQ_INT(submit(ex, make_job("sleep", "{\"seconds\":30}"), id), 0);
    WAIT_STARTED(&lg, 1, 5000);
    CHECK_EQ_INT(exec_workers(ex, w, 2), 2);
    int k = strcmp(w[0].job_id, id) == 0 ? 0 : 1; /* either thread may take it */
    CHECK_EQ_STR(w[k].job_id, id);
    CHECK_EQ_STR(w[k].task, "sleep");
    CHECK_EQ_STR(w[k].thread, lg.started[0].thread);
    CHECK_EQ_INT(w[k].started_at_ms, lg.started[0].started_ms);
    CHECK_EQ_STR(w[1 - k].job_id, "");
    CHECK_EQ_STR(w[1 - k].task, "");
    CHECK_EQ_INT(exec_workers(ex, w, 1), 1); /* max bounds it */
    CHECK_EQ_INT(exec_workers(ex, w, 0), 0);
    CHECK_EQ_INT(exec_cancel(ex, id), 0);
    WAIT_DONE(&lg, 1, 5000);
    CHECK_EQ_INT(exec_workers(ex, w, 2), 2);
    CHECK(w[0].job_id[0] == '\0' && w[1].job_id[0] == '\0');
    exec_free(ex);
    log_fini(&lg);
}

static void test_drain_returns_queued_stops_running_refuses_submits(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("w", 1, &lg);
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
    WAIT_DONE(&lg, 3, 5000);
    int drained = 0;
    for (int i = 0; i < 3; i++) {
        struct rec *d = &lg.done[i];
        if (strcmp(d->id, running) == 0) {
            CHECK_EQ_INT(d->outcome, EXEC_CANCELLED); /* told to stop after the grace */
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

    /* after drain: refused, and the caller still owns the job */
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
    struct executor *ex = make_exec("w", 1, &lg);
    CHECK_EQ_INT(submit(ex, make_job("sleep", "{\"seconds\":0.05}"), NULL), 0);
    WAIT_STARTED(&lg, 1, 5000);
    int64_t t0 = clock_mono_ms();
    exec_drain(ex, 5000);
    CHECK(clock_mono_ms() - t0 < 2000); /* returned when the job ended, not at the grace */
    WAIT_DONE(&lg, 1, 5000);
    CHECK_EQ_INT(lg.done[0].outcome, EXEC_OK);
    CHECK_EQ_STR(lg.done[0].result, "{\"slept\":0.05}");
    exec_free(ex);
    log_fini(&lg);
}

/* exec.h: exec_drain "blocks until every worker is idle", and the core relies
 * on it (core_drain then store_sync()s expecting the stopped job's update to be
 * queued). A worker still handing its job to `done` is not idle: drain must not
 * return before that call has returned. The done hook here holds on (up to
 * 500 ms) until the test says exec_drain returned. */
static void test_drain_returns_only_after_done_of_running_job(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("w", 1, &lg);
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
    WAIT_DONE(&lg, 1, 5000);
    exec_free(ex);
    CHECK_EQ_INT(done_when_drain_returned, 1);
    CHECK(!lg.done_saw_drain_returned);
    log_fini(&lg);
}

static void test_exec_new_refuses_bad_config(void)
{
    struct log lg;
    log_init_(&lg);
    struct exec_hooks hooks = {.started = hook_started, .done = hook_done, .ctx = &lg};
    struct executor *ex = (struct executor *)1;
    /* A process executor needs to know how to start its workers. */
    struct exec_config process = {.name = "p", .kind = TASK_KIND_PROCESS, .size = 1};
    CHECK_EQ_INT(exec_new(&process, g_reg, &hooks, &ex), -EINVAL);
    struct exec_config nokind = {.name = "x", .kind = 0, .size = 1};
    CHECK_EQ_INT(exec_new(&nokind, g_reg, &hooks, &ex), -EINVAL);
    struct exec_config zero = {.name = "t", .kind = TASK_KIND_THREAD, .size = 0};
    CHECK_EQ_INT(exec_new(&zero, g_reg, &hooks, &ex), -EINVAL);
    struct exec_config noname = {.name = NULL, .kind = TASK_KIND_THREAD, .size = 1};
    CHECK_EQ_INT(exec_new(&noname, g_reg, &hooks, &ex), -EINVAL);
    CHECK(ex == (struct executor *)1); /* untouched */
    exec_free(NULL);                  /* accepted */
    log_fini(&lg);
}

static void test_ten_thousand_noops_each_done_exactly_once(void)
{
    enum { N = 10000 };
    struct log lg;
    log_init_(&lg);
    struct job **jobs = log_bulk(&lg, N, "noop", NULL);
    struct executor *ex = make_exec("bulk", 4, &lg);
    int refused = 0;
    for (int i = 0; i < N; i++) refused += submit(ex, jobs[i], NULL) != 0;
    CHECK_EQ_INT(refused, 0);
    WAIT_DONE(&lg, N, 20000);
    exec_free(ex);
    CHECK_EQ_INT(log_bulk_once(&lg), N);
    CHECK_EQ_INT(lg.unknown_done, 0);
    CHECK_EQ_INT(lg.n_done, N);
    CHECK_EQ_INT(lg.n_started, N);
    free(jobs);
    log_bulk_fini(&lg);
    log_fini(&lg);
}

int main(void)
{
    log_init(LOG_LEVEL_OFF, LOG_FORMAT_TEXT);
    if (task_registry_new(NULL, &g_reg) != 0) {
        fprintf(stderr, "task_registry_new failed\n");
        return 1;
    }
    RUN(test_job_runs_and_done_is_called_once_with_result);
    RUN(test_started_hook_sees_running_attempt_worker_and_pid);
    RUN(test_priority_then_age_orders_the_queue);
    RUN(test_failing_task_reports_task_error);
    RUN(test_timeout_stops_a_sleep);
    RUN(test_cancel_queued_running_and_unknown);
    RUN(test_stats_busy_queued_size);
    RUN(test_workers_show_each_thread_and_its_job);
    RUN(test_drain_returns_queued_stops_running_refuses_submits);
    RUN(test_drain_lets_a_short_job_finish_within_grace);
    RUN(test_drain_returns_only_after_done_of_running_job);
    RUN(test_exec_new_refuses_bad_config);
    RUN(test_ten_thousand_noops_each_done_exactly_once);
    task_registry_free(g_reg);
    return harness_finish();
}
