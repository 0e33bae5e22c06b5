/* test_core_futures.c - core/: waitsets (POST /v1/wait), dependencies,
 * concurrency keys and batches, through the core's API with a real store.
 * Every wait has a deadline; "exactly once" is counted.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/log.h"
#include "harness.h"
#include "tmpdir.h"
#include "core_env.h"

static const struct core_executor_config k_exec[] = {
    {.name = "w", .kind = TASK_KIND_THREAD, .size = 4, .max_queued = 20000},
    {.name = "io", .kind = TASK_KIND_THREAD, .size = 4, .max_queued = 20000},
};

/* Opens a waitset on ids, reports the ones not live as the server does, arms
 * it; returns true when it held at once. */
static bool waitset_start(struct env *e, const char *const *ids, size_t n, enum core_return_when when,
                          int64_t timeout_ms, struct ev *w, struct core_waitset **ws)
{
    size_t *nl = NULL, k = 0;
    CHECK_EQ_INT(core_waitset_open(e->c, ids, n, when, ws, &nl, &k), 0);
    for (size_t i = 0; i < k; i++) {
        struct job *j = NULL;
        if (store_job_get(e->st, ids[nl[i]], &j) == 0 && job_status_terminal(j->status))
            core_waitset_done(*ws, j->status);
        job_free(j);
    }
    free(nl);
    return core_waitset_arm(*ws, clock_mono_ms() + timeout_ms, ev_wake, w);
}

static void test_waitset_all_first_and_exception(void)
{
    struct env e;
    env_open(&e, k_exec, 2);
    char a[ID_LEN + 1], b[ID_LEN + 1], f[ID_LEN + 1], done[ID_LEN + 1];
    struct job *j = run_json(&e, NOOP, done);
    job_free(j);
    submit_acked(&e, "{\"task\":\"sleep\",\"args\":{\"seconds\":0.2}}", a);
    submit_acked(&e, "{\"task\":\"sleep\",\"args\":{\"seconds\":0.4}}", b);
    submit_acked(&e, "{\"task\":\"fail\"}", f);

    /* FIRST_COMPLETED with a finished job: holds at once, no callback. */
    const char *ids1[] = {a, done};
    struct ev w1 = {0};
    struct core_waitset *ws = NULL;
    CHECK(waitset_start(&e, ids1, 2, CORE_FIRST_COMPLETED, 5000, &w1, &ws));
    CHECK(core_waitset_close(ws));
    CHECK_EQ_INT(ev_calls(&w1), 0);

    /* FIRST_EXCEPTION: the failing job fires it before the sleeps end. */
    const char *ids2[] = {a, b, f};
    struct ev w2 = {0};
    bool now = waitset_start(&e, ids2, 3, CORE_FIRST_EXCEPTION, 5000, &w2, &ws);
    if (!now) CHECK(ev_wait(&w2, 1, 5000));
    struct job *ja = NULL;
    CHECK_EQ_INT(store_job_get(e.st, b, &ja), 0);
    CHECK(!job_status_terminal(ja->status)); /* it did not wait for all */
    job_free(ja);
    core_waitset_close(ws);

    /* ALL_COMPLETED: fires once, when both sleeps are done. */
    const char *ids3[] = {a, b};
    struct ev w3 = {0};
    if (!waitset_start(&e, ids3, 2, CORE_ALL_COMPLETED, 5000, &w3, &ws)) CHECK(ev_wait(&w3, 1, 5000));
    CHECK_EQ_INT(store_job_get(e.st, b, &ja), 0);
    CHECK(ja->status == JOB_SUCCEEDED);
    job_free(ja);
    core_waitset_close(ws);
    sleep_ms(20);
    CHECK(ev_calls(&w3) <= 1);
    env_close(&e);
}

static void test_waitset_deadline_and_close_before_firing(void)
{
    struct env e;
    env_open(&e, k_exec, 2);
    char a[ID_LEN + 1];
    submit_acked(&e, SLEEP30, a);
    const char *ids[] = {a};
    struct ev w = {0};
    struct core_waitset *ws = NULL;
    int64_t t0 = clock_mono_ms();
    CHECK(!waitset_start(&e, ids, 1, CORE_ALL_COMPLETED, 100, &w, &ws));
    CHECK(ev_wait(&w, 1, 3000));
    CHECK(clock_mono_ms() - t0 >= 100);
    core_waitset_close(ws);
    /* Closed before anything fires: the callback never runs. */
    struct ev w2 = {0};
    CHECK(!waitset_start(&e, ids, 1, CORE_ALL_COMPLETED, 60000, &w2, &ws));
    CHECK(core_waitset_close(ws));
    CHECK_EQ_INT(core_job_cancel(e.c, a), 0);
    expect_end(&e, a, JOB_CANCELLED);
    sleep_ms(20);
    CHECK_EQ_INT(ev_calls(&w2), 0);
    env_close(&e);
}

static void test_dependencies_chain_and_failure_travels_down(void)
{
    struct env e;
    env_open(&e, k_exec, 2);
    char a[ID_LEN + 1], b[ID_LEN + 1], fa[ID_LEN + 1], fb[ID_LEN + 1], fc[ID_LEN + 1];
    char spec[256];
    submit_acked(&e, "{\"task\":\"sleep\",\"args\":{\"seconds\":0.1}}", a);
    snprintf(spec, sizeof spec, "{\"task\":\"noop\",\"depends_on\":[\"%s\"]}", a);
    submit_acked(&e, spec, b);
    struct job *jb = NULL;
    CHECK_EQ_INT(store_job_get(e.st, b, &jb), 0);
    CHECK(jb->status == JOB_SCHEDULED);
    job_free(jb);
    struct job *ja = wait_end(&e, a, 5000);
    jb = wait_end(&e, b, 5000);
    CHECK(ja && jb && jb->status == JOB_SUCCEEDED && jb->started_at_ms >= ja->finished_at_ms);
    job_free(ja);
    job_free(jb);

    submit_acked(&e, "{\"task\":\"fail\"}", fa);
    snprintf(spec, sizeof spec, "{\"task\":\"noop\",\"depends_on\":[\"%s\"]}", fa);
    submit_acked(&e, spec, fb);
    snprintf(spec, sizeof spec, "{\"task\":\"noop\",\"depends_on\":[\"%s\"]}", fb);
    submit_acked(&e, spec, fc);
    struct job *jc = wait_end(&e, fc, 5000);
    CHECK(jc && jc->status == JOB_CANCELLED && jc->error_type == JOB_ERR_DEPENDENCY_FAILED);
    CHECK(jc && jc->error_message && strstr(jc->error_message, fb));
    job_free(jc);
    env_close(&e);
}

static void test_concurrency_key_never_exceeds_its_limit(void)
{
    struct env e;
    env_open(&e, k_exec, 2);
    enum { N = 8 };
    char ids[N][ID_LEN + 1];
    for (int i = 0; i < N; i++) {
        char spec[160];
        snprintf(spec, sizeof spec,
                 "{\"task\":\"sleep\",\"args\":{\"seconds\":0.05},\"executor\":\"%s\",\"concurrency_key\":\"k\","
                 "\"concurrency_limit\":2}",
                 i % 2 ? "io" : "w");
        submit_acked(&e, spec, ids[i]);
    }
    int64_t st[N], fin[N];
    for (int i = 0; i < N; i++) {
        struct job *j = wait_end(&e, ids[i], 5000);
        CHECK(j && j->status == JOB_SUCCEEDED);
        st[i] = j ? j->started_at_ms : 0;
        fin[i] = j ? j->finished_at_ms : 0;
        job_free(j);
    }
    /* At any job's start, fewer than 2 others were running. */
    for (int i = 0; i < N; i++) {
        int overlap = 0;
        for (int k = 0; k < N; k++)
            if (k != i && st[k] <= st[i] && fin[k] > st[i]) overlap++;
        CHECK(overlap <= 1);
    }
    env_close(&e);
}

/* Regression: a job's slot was given back before its end was queued, so the
 * next job of the key could commit "running" first and the database showed
 * two jobs of a limit-1 key running at once. Replays the committed events in
 * order and counts running jobs of the key: never more than one. */
static void test_key_slot_is_given_back_after_the_end_is_queued(void)
{
    struct env e;
    env_open(&e, k_exec, 2);
    enum { N = 200 };
    uint64_t from = core_events_latest(e.c);
    char ids[N][ID_LEN + 1];
    for (int i = 0; i < N; i++) {
        char spec[160];
        snprintf(spec, sizeof spec, "{\"task\":\"noop\",\"executor\":\"%s\",\"concurrency_key\":\"one\"}",
                 i % 2 ? "io" : "w");
        submit_acked(&e, spec, ids[i]);
    }
    for (int i = 0; i < N; i++) expect_end(&e, ids[i], JOB_SUCCEEDED);
    store_sync(e.st); /* every commit's callbacks, the event feed included, have run */
    struct core_sub *sub = NULL;
    CHECK_EQ_INT(core_events_subscribe(e.c, from, NULL, NULL, &sub), 0);
    int running = 0, max_running = 0, ends = 0;
    struct core_event ev;
    while (core_events_next(sub, &ev, 0, NULL, NULL) == 1) {
        if (strstr(ev.data, "\"status\":\"running\"")) running++;
        if (strstr(ev.data, "\"status\":\"succeeded\"")) running--, ends++;
        if (running > max_running) max_running = running;
        free(ev.data);
    }
    core_events_unsubscribe(sub);
    CHECK_EQ_INT(ends, N);
    CHECK_EQ_INT(max_running, 1);
    env_close(&e);
}

/* Regression: schedule_job set a job's due time after pushing it on the
 * timer heap, which sifts by it, so later pushes could sit above earlier
 * due times and a job ran late, after one due after it. */
static void test_scheduled_jobs_start_in_due_order(void)
{
    static const struct core_executor_config one[] = {
        {.name = "one", .kind = TASK_KIND_THREAD, .size = 1, .max_queued = 100},
    };
    struct env e;
    env_open(&e, one, 1);
    char a[ID_LEN + 1], b[ID_LEN + 1], c[ID_LEN + 1];
    submit_acked(&e, "{\"task\":\"noop\",\"delay\":0.6}", a);
    submit_acked(&e, "{\"task\":\"noop\",\"delay\":0.2}", b);
    submit_acked(&e, "{\"task\":\"noop\",\"delay\":0.4}", c);
    struct job *ja = wait_end(&e, a, 5000), *jb = wait_end(&e, b, 5000), *jc = wait_end(&e, c, 5000);
    CHECK(ja && jb && jc);
    if (ja && jb && jc) {
        CHECK(jb->started_at_ms < jc->started_at_ms);
        CHECK(jc->started_at_ms < ja->started_at_ms);
        CHECK(jb->started_at_ms >= jb->scheduled_at_ms);
    }
    job_free(ja);
    job_free(jb);
    job_free(jc);
    env_close(&e);
}

static void test_batch_commits_all_and_index_dependencies_run_in_order(void)
{
    struct env e;
    env_open(&e, k_exec, 2);
    cJSON *body = cJSON_Parse("{\"jobs\":[{\"task\":\"sleep\",\"args\":{\"seconds\":0.05}},"
                              "{\"task\":\"noop\",\"depends_on\":[0]},{\"task\":\"noop\",\"depends_on\":[1,0]}]}");
    struct store_batch b;
    struct job **jobs = NULL;
    size_t n = 0;
    struct api_err err = {0};
    CHECK_EQ_INT(core_batch_from_json(e.c, body, NULL, &b, &jobs, &n, &err), 0);
    cJSON_Delete(body);
    CHECK_EQ_INT((int)n, 3);
    char ids[3][ID_LEN + 1];
    for (int i = 0; i < 3; i++) memcpy(ids[i], jobs[i]->id, ID_LEN + 1);
    CHECK(strstr(jobs[2]->depends_on, ids[0]) && strstr(jobs[2]->depends_on, ids[1]));
    struct ev sub = {0};
    CHECK_EQ_INT(core_batch_submit(e.c, &b, jobs, n, ev_done, &sub), 0);
    CHECK(ev_wait(&sub, 1, 5000));
    CHECK_EQ_INT(sub.rc, 0);
    struct job *j0 = wait_end(&e, ids[0], 5000), *j1 = wait_end(&e, ids[1], 5000), *j2 = wait_end(&e, ids[2], 5000);
    CHECK(j0 && j1 && j2 && j2->status == JOB_SUCCEEDED);
    CHECK(j1 && j0 && j1->started_at_ms >= j0->finished_at_ms);
    CHECK(j2 && j1 && j2->started_at_ms >= j1->finished_at_ms);
    job_free(j0);
    job_free(j1);
    job_free(j2);
    struct store_batch got;
    CHECK_EQ_INT(store_batch_get(e.st, b.id, false, &got), 0);
    CHECK(got.finished_at_ms > 0 && got.counts[JOB_SUCCEEDED] == 3);
    store_batch_clear(&got);
    store_batch_clear(&b);

    /* A cycle is refused before anything is made. */
    body = cJSON_Parse("{\"jobs\":[{\"task\":\"noop\",\"depends_on\":[2]},{\"task\":\"noop\",\"depends_on\":[0]},"
                       "{\"task\":\"noop\",\"depends_on\":[1]}]}");
    CHECK(core_batch_from_json(e.c, body, NULL, &b, &jobs, &n, &err) < 0);
    CHECK(strstr(err.field, "depends_on") != NULL && strstr(err.message, "cycle") != NULL);
    cJSON_Delete(body);
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
    if (task_registry_new(NULL, &g_reg) != 0) return 1;
    RUN(test_waitset_all_first_and_exception);
    RUN(test_waitset_deadline_and_close_before_firing);
    RUN(test_dependencies_chain_and_failure_travels_down);
    RUN(test_concurrency_key_never_exceeds_its_limit);
    RUN(test_batch_commits_all_and_index_dependencies_run_in_order);
    RUN(test_key_slot_is_given_back_after_the_end_is_queued);
    RUN(test_scheduled_jobs_start_in_due_order);
    task_registry_free(g_reg);
    pthread_cond_destroy(&g_cv);
    return harness_finish();
}
