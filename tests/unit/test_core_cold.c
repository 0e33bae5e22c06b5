/* test_core_cold.c - pending jobs kept cold (core/cold.c, the executors'
 * ready heap in executors/exec.c): past core_options.resident_jobs a queued
 * or scheduled job waits without its record in memory and is read back from
 * the database when its turn comes. These tests set the limit to 2 or 3 so
 * that most jobs go cold, and check that nothing about a job changes: its
 * order (priority, then age), its args, cancel, drain and the next start, and
 * what happens when a cold job's row is no longer pending.
 */
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../common/clock.h"
#include "../../common/id.h"
#include "../../common/job.h"
#include "../../common/log.h"
#include "../../core/core.h"
#include "../../storage/store.h"
#include "../../tasks/task.h"
#include "harness.h"
#include "tmpdir.h"

#include "core_env.h"

#define N_COLD 30

/* The job's result is {"i": i} (an echo of its args). */
static bool result_is(const struct job *j, int i)
{
    char want[32];
    snprintf(want, sizeof want, "{\"i\":%d}", i);
    if (j && j->result && strcmp(j->result, want) == 0) return true;
    fprintf(stderr, "    result %s, want %s\n", j && j->result ? j->result : "(none)", want);
    return false;
}

static void test_cold_queued_jobs_run_in_order_with_their_args(void)
{
    struct env e;
    env_open_resident(&e, k_one, 1, 3);
    char blocker[ID_LEN + 1];
    hold_worker(&e, blocker);
    struct ev wake[N_COLD];
    char ids[N_COLD][ID_LEN + 1];
    int64_t prio[N_COLD];
    memset(wake, 0, sizeof wake);
    for (int i = 0; i < N_COLD; i++) {
        char spec[96];
        prio[i] = (i * 7) % 5;
        snprintf(spec, sizeof spec, "{\"task\":\"echo\",\"args\":{\"i\":%d},\"priority\":%lld}", i, (long long)prio[i]);
        struct job *j = spec_job(&e, spec);
        memcpy(ids[i], j->id, sizeof ids[i]);
        uint64_t tok;
        CHECK_EQ_INT(core_wait_job(e.c, j->id, clock_mono_ms() + 60000, ev_wake, &wake[i], &tok), 0);
        CHECK_EQ_INT(core_job_submit(e.c, j, NULL, NULL), 0);
    }
    /* All 30 are queued (27 of them cold) behind the sleeper. */
    CHECK(wait_exec_queued(&e, 0, N_COLD, 5000));
    CHECK_EQ_INT(core_job_cancel(e.c, blocker), 0);
    for (int i = 0; i < N_COLD; i++) CHECK(ev_wait(&wake[i], 1, 5000));
    /* One worker: they ended in the order they ran - priority first, then age. */
    for (int i = 0; i < N_COLD; i++) {
        for (int k = 0; k < N_COLD; k++) {
            bool before = prio[i] > prio[k] || (prio[i] == prio[k] && i < k);
            if (before && wake[i].seq > wake[k].seq) {
                fprintf(stderr, "    job %d (priority %lld) ran after job %d (priority %lld)\n", i,
                        (long long)prio[i], k, (long long)prio[k]);
                CHECK(false);
            }
        }
        struct job *j = NULL;
        CHECK_EQ_INT(store_job_get(e.st, ids[i], &j), 0);
        CHECK(j && j->status == JOB_SUCCEEDED && j->attempt == 1);
        CHECK(result_is(j, i));
        CHECK(j && strcmp(j->executor, "one") == 0);
        job_free(j);
    }
    env_close(&e);
}

static void test_cancel_of_a_cold_queued_job(void)
{
    struct env e;
    env_open_resident(&e, k_one, 1, 2);
    char blocker[ID_LEN + 1], ids[8][ID_LEN + 1];
    hold_worker(&e, blocker);
    for (int i = 0; i < 8; i++) submit_acked(&e, NOOP, ids[i]);
    CHECK(wait_exec_queued(&e, 0, 8, 5000));
    CHECK_EQ_INT(core_job_cancel(e.c, ids[6]), 0); /* cold: read back to be cancelled */
    expect_end(&e, ids[6], JOB_CANCELLED);
    struct job *j = NULL;
    CHECK_EQ_INT(store_job_get(e.st, ids[6], &j), 0);
    CHECK(j && j->error_message && strstr(j->error_message, "cancelled while queued"));
    job_free(j);
    CHECK(wait_exec_queued(&e, 0, 7, 5000));
    CHECK_EQ_INT(core_job_cancel(e.c, blocker), 0);
    for (int i = 0; i < 8; i++)
        if (i != 6) expect_end(&e, ids[i], JOB_SUCCEEDED);
    env_close(&e);
}

/* Sets a job's stored status behind the store's back. */
static void set_stored_status(struct env *e, const char *id, const char *status)
{
    sqlite3 *db = NULL;
    CHECK_EQ_INT(sqlite3_open(e->tmp.db, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    char sql[160];
    snprintf(sql, sizeof sql, "UPDATE jobs SET status = '%s' WHERE id = '%s'", status, id);
    CHECK_EQ_INT(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    CHECK_EQ_INT(sqlite3_changes(db), 1);
    sqlite3_close(db);
}

static void test_cold_scheduled_jobs_run_when_due_and_cancel(void)
{
    struct env e;
    env_open_resident(&e, k_two, 2, 3);
    char ids[12][ID_LEN + 1];
    for (int i = 0; i < 12; i++) {
        char spec[96];
        snprintf(spec, sizeof spec, "{\"task\":\"echo\",\"args\":{\"i\":%d},\"delay\":0.4}", i);
        submit_acked(&e, spec, ids[i]);
    }
    /* The last ones are cold on the timer heap: cancel reads one back, and
     * one whose row stops being pending is not run when due. */
    CHECK_EQ_INT(core_job_cancel(e.c, ids[11]), 0);
    expect_end(&e, ids[11], JOB_CANCELLED);
    set_stored_status(&e, ids[10], "failed");
    struct ev w = {0};
    uint64_t tok;
    CHECK_EQ_INT(core_wait_job(e.c, ids[10], clock_mono_ms() + 60000, ev_wake, &w, &tok), 0);
    for (int i = 0; i < 10; i++) {
        struct job *j = wait_end(&e, ids[i], 5000);
        CHECK(j && j->status == JOB_SUCCEEDED);
        CHECK(result_is(j, i));
        CHECK(j && j->started_at_ms >= j->scheduled_at_ms);
        job_free(j);
    }
    struct job *j = NULL;
    CHECK(ev_wait(&w, 1, 5000)); /* fired when it was found not pending */
    CHECK_EQ_INT(store_job_get(e.st, ids[10], &j), 0);
    CHECK(j && j->status == JOB_FAILED && j->attempt == 0);
    job_free(j);
    env_close(&e);
}

static void test_cold_jobs_stay_pending_through_a_drain_and_run_at_the_next_start(void)
{
    struct env e;
    env_open_resident(&e, k_one, 1, 2);
    char blocker[ID_LEN + 1], ids[10][ID_LEN + 1], later[4][ID_LEN + 1];
    hold_worker(&e, blocker);
    for (int i = 0; i < 10; i++) {
        char spec[64];
        snprintf(spec, sizeof spec, "{\"task\":\"echo\",\"args\":{\"i\":%d}}", i);
        submit_acked(&e, spec, ids[i]);
    }
    for (int i = 0; i < 4; i++) submit_acked(&e, LATER, later[i]);
    CHECK(wait_exec_queued(&e, 0, 10, 5000));
    core_close(e.c); /* drain: every cold entry is dropped, not read back */
    for (int i = 0; i < 10; i++) {
        struct job *j = NULL;
        CHECK_EQ_INT(store_job_get(e.st, ids[i], &j), 0);
        CHECK(j && j->status == JOB_QUEUED);
        job_free(j);
    }
    env_open_core(&e);
    CHECK_EQ_INT(core_job_cancel(e.c, blocker), 0); /* re-queued by the drain; runs first (oldest) */
    for (int i = 0; i < 10; i++) {
        struct job *j = wait_end(&e, ids[i], 5000);
        CHECK(j && j->status == JOB_SUCCEEDED);
        CHECK(result_is(j, i));
        job_free(j);
    }
    for (int i = 0; i < 4; i++) {
        CHECK_EQ_INT(core_job_cancel(e.c, later[i]), 0);
        expect_end(&e, later[i], JOB_CANCELLED);
    }
    env_close(&e);
}

static void test_a_cold_job_no_longer_pending_is_forgotten_not_run(void)
{
    struct env e;
    env_open_resident(&e, k_one, 1, 2);
    char blocker[ID_LEN + 1], ids[6][ID_LEN + 1];
    hold_worker(&e, blocker);
    for (int i = 0; i < 6; i++) submit_acked(&e, NOOP, ids[i]);
    CHECK(wait_exec_queued(&e, 0, 6, 5000));
    set_stored_status(&e, ids[4], "failed");
    struct ev w = {0};
    uint64_t tok;
    CHECK_EQ_INT(core_wait_job(e.c, ids[4], clock_mono_ms() + 60000, ev_wake, &w, &tok), 0);
    CHECK_EQ_INT(core_job_cancel(e.c, blocker), 0);
    for (int i = 0; i < 6; i++)
        if (i != 4) expect_end(&e, ids[i], JOB_SUCCEEDED);
    CHECK(ev_wait(&w, 1, 5000)); /* its waiters are told */
    struct job *j = NULL;
    CHECK_EQ_INT(store_job_get(e.st, ids[4], &j), 0);
    CHECK(j && j->status == JOB_FAILED && j->attempt == 0); /* never ran */
    job_free(j);
    CHECK(wait_exec_queued(&e, 0, 0, 5000));
    /* Its place under max_queued was given back: the core accepts 100 again. */
    char more[ID_LEN + 1];
    for (int i = 0; i < 100; i++) CHECK_EQ_INT(submit_json(&e, LATER, more, NULL), 0);
    env_close(&e);
}

int main(void)
{
    log_init(LOG_LEVEL_OFF, LOG_FORMAT_TEXT);
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&g_cv, &a);
    pthread_condattr_destroy(&a);
    if (task_registry_new(NULL, &g_reg) != 0) {
        fprintf(stderr, "task_registry_new failed\n");
        return 1;
    }
    RUN(test_cold_queued_jobs_run_in_order_with_their_args);
    RUN(test_cancel_of_a_cold_queued_job);
    RUN(test_cold_scheduled_jobs_run_when_due_and_cancel);
    RUN(test_cold_jobs_stay_pending_through_a_drain_and_run_at_the_next_start);
    RUN(test_a_cold_job_no_longer_pending_is_forgotten_not_run);
    task_registry_free(g_reg);
    pthread_cond_destroy(&g_cv);
    return harness_finish();
}
