/* test_core.c - core/: validation, dispatch, cancel, retry, delete, waiters,
 * stats and drain, against a real store in a mkdtemp directory and thread
 * executors.
 *
 * Core callbacks run on the store's writer thread or the timer thread, so they
 * never CHECK: they record into a `struct ev` under one mutex and signal one
 * condition; the test waits on it with a deadline. Jobs that must stay put are
 * held by a `sleep 30` on a one-worker executor or a `delay` of 60 s and
 * cancelled by the test, so orderings are forced rather than timed. The wall
 * clock is frozen through clock_set_wall() where exact times are checked.
 */
#include <errno.h>
#include <pthread.h>
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

/* ---- validation -------------------------------------------------------------------------- */

struct refusal {
    const char *json, *prefix, *field, *part; /* part: a piece of the message */
};

static void expect_refused(struct env *e, const struct refusal *r)
{
    cJSON *spec = cJSON_Parse(r->json);
    struct job *sentinel = (struct job *)&g_seq, *j = sentinel;
    struct api_err err;
    memset(&err, 0, sizeof err);
    int rc = spec ? core_job_from_json(e->c, spec, r->prefix, &j, &err) : -100;
    cJSON_Delete(spec);
    if (rc != -1 || strcmp(err.field, r->field) != 0 || !strstr(err.message, r->part))
        fprintf(stderr, "    %s%s -> rc %d field \"%s\" message \"%s\"\n", r->prefix, r->json, rc, err.field,
                err.message);
    CHECK_EQ_INT(rc, -1);
    CHECK_EQ_INT(err.code, API_INVALID_ARGUMENT);
    CHECK_EQ_STR(err.field, r->field);
    CHECK(strstr(err.message, r->part) != NULL);
    CHECK(j == sentinel); /* untouched */
}

static void test_validation_refusals_name_the_field(void)
{
    static const struct refusal cases[] = {
        {"{}", "", "task", "required"},
        {"{\"args\":{}}", "jobs[3].", "jobs[3].task", "required"},
        {"{\"task\":\"nope\"}", "", "task", "Unknown task"},
        {"{\"task\":5}", "", "task", "must be a string"},
        {"{\"task\":null}", "", "task", "must be a string"},
        {"{\"task\":\"square\",\"args\":{\"n\":\"x\"}}", "", "args.n", "args.n"},
        {"{\"task\":\"square\",\"args\":{\"n\":\"x\"}}", "jobs[3].", "jobs[3].args.n", "args.n"},
        {"{\"task\":\"square\",\"args\":[1]}", "", "args", "JSON object"},
        {"{\"task\":\"noop\",\"colour\":\"red\"}", "", "colour", "Unknown field"},
        {"{\"task\":\"noop\",\"depends_on\":[\"01ARYZ6S410000000000000000\"]}", "", "depends_on[0]", "no job has the id"},
        {"{\"task\":\"noop\",\"depends_on\":[0]}", "", "depends_on[0]", "must be a job id"},
        {"{\"task\":\"noop\",\"concurrency_limit\":3}", "", "concurrency_limit", "needs a concurrency_key"},
        {"{\"task\":\"noop\",\"callback_url\":\"file:///etc/passwd\"}", "", "callback_url", "http:// or https://"},
        {"{\"task\":\"noop\",\"priority\":1.5}", "", "priority", "integer"},
        {"{\"task\":\"noop\",\"priority\":\"high\"}", "", "priority", "integer"},
        {"{\"task\":\"noop\",\"timeout\":0}", "", "timeout", "timeout"},
        {"{\"task\":\"noop\",\"timeout\":-1}", "", "timeout", "timeout"},
        {"{\"task\":\"noop\",\"max_attempts\":0}", "", "max_attempts", "from 1 to 100"},
        {"{\"task\":\"noop\",\"max_attempts\":101}", "", "max_attempts", "from 1 to 100"},
        {"{\"task\":\"noop\",\"delay\":-1}", "", "delay", "delay"},
        {"{\"task\":\"noop\",\"delay\":5,\"run_at\":\"2030-01-01T00:00:00Z\"}", "", "run_at", "either delay or run_at"},
        {"{\"task\":\"noop\",\"run_at\":\"tomorrow\"}", "", "run_at", "RFC 3339"},
        {"{\"task\":\"noop\",\"run_at\":\"2030-13-01T00:00:00Z\"}", "", "run_at", "RFC 3339"},
        {"{\"task\":\"noop\",\"run_at\":\"2999-01-01T00:00:00Z\"}", "", "run_at", "within"},
        {"{\"task\":\"noop\",\"delay\":31708800}", "", "delay", "delay"},
        {"{\"task\":\"noop\",\"task\":\"echo\"}", "jobs[1].", "jobs[1].task", "twice"},
        {"{\"task\":\"noop\",\"executor\":\"gpu\"}", "", "executor", "Unknown executor"},
        {"{\"task\":\"noop\",\"executor\":\"gpu\"}", "jobs[3].", "jobs[3].executor", "'w', 'io'"},
        {"{\"task\":\"noop\",\"idempotency_key\":\"\"}", "", "idempotency_key", "non-empty"},
        {"[1,2]", "", "", "JSON object"},
    };
    struct env e;
    env_open(&e, k_two, 2);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) expect_refused(&e, &cases[i]);
    env_close(&e);
}

/* A batch entry that is not an object is itself the offending value: its path
 * is "jobs[0]", not "jobs[0]." (SPEC §3: field is a JSON path). */
static void test_non_object_batch_entry_field_is_its_path(void)
{
    static const struct refusal cases[] = {{"[1,2]", "jobs[0].", "jobs[0]", "JSON object"},
                                           {"\"noop\"", "jobs[7].", "jobs[7]", "JSON object"}};
    struct env e;
    env_open(&e, k_two, 2);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) expect_refused(&e, &cases[i]);
    env_close(&e);
}

static int64_t g_frozen_ms;
static int64_t frozen_wall(void)
{
    return g_frozen_ms;
}

static void test_validation_defaults_and_options(void)
{
    struct env e;
    env_open(&e, k_two, 2);
    int64_t before = clock_wall_ms();
    struct job *j = spec_job(&e, NOOP);
    CHECK(id_valid(j->id));
    CHECK_EQ_INT(j->status, JOB_QUEUED);
    CHECK_EQ_STR(j->executor, "w"); /* the first thread executor */
    CHECK_EQ_STR(j->task, "noop");
    CHECK_EQ_STR(j->args, "{}");
    CHECK_EQ_INT(j->max_attempts, 1);
    CHECK_EQ_INT(j->attempt + j->priority + j->timeout_ms, 0);
    CHECK_EQ_INT(j->retry_backoff_ms, 1000);
    CHECK(j->created_at_ms >= before && j->created_at_ms <= clock_wall_ms());
    CHECK_EQ_INT(j->scheduled_at_ms, j->created_at_ms);
    CHECK(j->idempotency_key == NULL);
    job_free(j);
    j = spec_job(&e, "{\"task\":\"sleep\",\"args\":{\"seconds\":1}}"); /* default kind async: none here */
    CHECK_EQ_STR(j->executor, "w");
    job_free(j);
    j = spec_job(&e, "{\"task\":\"square\",\"args\":{\"n\":3},\"executor\":\"io\",\"priority\":-7,\"timeout\":1.5,"
                     "\"max_attempts\":3,\"retry_backoff\":0.25,\"idempotency_key\":\"k-1\"}");
    CHECK_EQ_STR(j->executor, "io");
    CHECK_EQ_STR(j->args, "{\"n\":3}");
    CHECK_EQ_INT(j->priority, -7);
    CHECK_EQ_INT(j->timeout_ms, 1500);
    CHECK_EQ_INT(j->max_attempts, 3);
    CHECK_EQ_INT(j->retry_backoff_ms, 250);
    CHECK_EQ_STR(j->idempotency_key, "k-1");
    job_free(j);

    /* delay and run_at count from created_at (a frozen clock) */
    g_frozen_ms = 1795255200000; /* 2026-11-21T10:00:00Z */
    clock_set_wall(frozen_wall);
    j = spec_job(&e, "{\"task\":\"noop\",\"delay\":1.5}");
    CHECK_EQ_INT(j->status, JOB_SCHEDULED);
    CHECK_EQ_INT(j->created_at_ms, g_frozen_ms);
    CHECK_EQ_INT(j->scheduled_at_ms, g_frozen_ms + 1500);
    job_free(j);
    j = spec_job(&e, "{\"task\":\"noop\",\"delay\":0}");
    CHECK(j->status == JOB_QUEUED && j->scheduled_at_ms == g_frozen_ms);
    job_free(j);
    j = spec_job(&e, "{\"task\":\"noop\",\"run_at\":\"2026-11-21T12:00:00.250+02:00\"}");
    CHECK_EQ_INT(j->status, JOB_SCHEDULED);
    CHECK_EQ_INT(j->scheduled_at_ms, g_frozen_ms + 250);
    job_free(j);
    j = spec_job(&e, "{\"task\":\"noop\",\"run_at\":\"2020-01-01T00:00:00Z\"}"); /* past: now */
    CHECK(j->status == JOB_QUEUED && j->scheduled_at_ms == g_frozen_ms);
    job_free(j);
    clock_set_wall(NULL);
    env_close(&e);
}

/* delay and retry_backoff truncate seconds * 1000 while timeout rounds it:
 * 1.005 (the double 1.00499999...) gives a 1005 ms timeout but a 1004 ms delay. */
static void test_delay_and_backoff_round_to_the_millisecond_like_timeout(void)
{
    struct env e;
    env_open(&e, k_two, 2);
    g_frozen_ms = 1795255200000;
    clock_set_wall(frozen_wall);
    struct job *j = spec_job(&e, "{\"task\":\"noop\",\"delay\":1.005,\"timeout\":1.005,\"retry_backoff\":1.005}");
    CHECK_EQ_INT(j->timeout_ms, 1005);
    CHECK_EQ_INT(j->scheduled_at_ms - j->created_at_ms, 1005);
    CHECK_EQ_INT(j->retry_backoff_ms, 1005);
    job_free(j);
    clock_set_wall(NULL);
    env_close(&e);
}

/* ---- dispatch ------------------------------------------------------------------------------ */

static void test_submit_calls_back_once_after_commit_and_wakes_waiter(void)
{
    struct env e;
    env_open(&e, k_two, 2);
    struct job *j = spec_job(&e, "{\"task\":\"square\",\"args\":{\"n\":3}}");
    char id[ID_LEN + 1];
    memcpy(id, j->id, sizeof id);
    struct ev sub = {.st = e.st}, wake = {0};
    memcpy(sub.id, id, sizeof id);
    uint64_t tok = 0;
    CHECK_EQ_INT(core_wait_job(e.c, id, clock_mono_ms() + 60000, ev_wake, &wake, &tok), 0);
    CHECK_EQ_INT(core_job_submit(e.c, j, ev_done, &sub), 0);
    CHECK(ev_wait(&sub, 1, 5000));
    CHECK_EQ_INT(sub.rc, 0);
    CHECK_EQ_INT(sub.found_rc, 0); /* the row was committed before the callback */
    CHECK(ev_wait(&wake, 1, 5000));
    struct job *g = NULL;
    CHECK_EQ_INT(store_job_get(e.st, id, &g), 0);
    CHECK(g && g->status == JOB_SUCCEEDED && g->attempt == 1 && g->result && strcmp(g->result, "9") == 0);
    CHECK(g && g->executor && strcmp(g->executor, "w") == 0 && g->worker_thread &&
          strncmp(g->worker_thread, "w-", 2) == 0);
    CHECK(g && g->started_at_ms > 0 && g->finished_at_ms >= g->started_at_ms);
    job_free(g);
    CHECK(!core_wait_cancel(e.c, id, tok)); /* already fired */
    env_close(&e);
    CHECK_EQ_INT(sub.calls, 1);
    CHECK_EQ_INT(wake.calls, 1); /* not again at drain */
}

static void test_priority_orders_a_one_worker_executor(void)
{
    struct env e;
    env_open(&e, k_one, 1);
    char blocker[ID_LEN + 1];
    hold_worker(&e, blocker);
    const int prio[3] = {1, 5, 3};
    struct ev wake[3];
    memset(wake, 0, sizeof wake);
    for (int i = 0; i < 3; i++) {
        struct job *j = spec_job(&e, NOOP);
        uint64_t tok;
        j->priority = prio[i];
        CHECK_EQ_INT(core_wait_job(e.c, j->id, clock_mono_ms() + 60000, ev_wake, &wake[i], &tok), 0);
        CHECK_EQ_INT(core_job_submit(e.c, j, NULL, NULL), 0);
    }
    CHECK(wait_exec_queued(&e, 0, 3, 5000));
    CHECK_EQ_INT(core_job_cancel(e.c, blocker), 0);
    for (int i = 0; i < 3; i++) CHECK(ev_wait(&wake[i], 1, 5000));
    CHECK(wake[1].seq < wake[2].seq); /* 5 before 3 */
    CHECK(wake[2].seq < wake[0].seq); /* 3 before 1 */
    expect_end(&e, blocker, JOB_CANCELLED);
    env_close(&e);
}

static void test_max_queued_refuses_synchronously_past_the_limit(void)
{
    const struct core_executor_config cfg[] = {{.name = "one", .kind = TASK_KIND_THREAD, .size = 1, .max_queued = 2}};
    struct env e;
    env_open(&e, cfg, 1);
    char blocker[ID_LEN + 1], id[ID_LEN + 1], acc[5][ID_LEN + 1];
    hold_worker(&e, blocker); /* running: it no longer counts */
    struct ev sub[5];
    memset(sub, 0, sizeof sub);
    int accepted = 0, rc = 0;
    for (int i = 0; i < 5 && rc == 0; i++) {
        rc = submit_json(&e, NOOP, id, &sub[i]);
        if (rc == 0) memcpy(acc[accepted++], id, ID_LEN + 1);
    }
    CHECK_EQ_INT(accepted, 2);
    CHECK_EQ_INT(rc, -EAGAIN);
    struct core_executor_stats s;
    CHECK_EQ_INT(core_executor_stats(e.c, &s, 1), 1);
    CHECK(s.max_queued == 2 && s.size == 1);
    CHECK_EQ_STR(s.name, "one");
    CHECK_EQ_STR(s.kind, "thread");
    CHECK_EQ_INT(core_job_cancel(e.c, blocker), 0);
    for (int i = 0; i < accepted; i++) expect_end(&e, acc[i], JOB_SUCCEEDED);
    expect_end(&e, blocker, JOB_CANCELLED);
    job_free(run_json(&e, NOOP, id)); /* the slots came back */
    env_close(&e);
    CHECK_EQ_INT(sub[0].calls + sub[1].calls, 2);
    CHECK_EQ_INT(sub[2].calls, 0); /* the refused one: no callback */
}

static void test_cancel_scheduled_queued_running_finished_unknown(void)
{
    struct env e;
    env_open(&e, k_one, 1);
    char sched[ID_LEN + 1], running[ID_LEN + 1], queued[ID_LEN + 1];
    struct ev s1 = {.st = e.st};
    CHECK_EQ_INT(submit_json(&e, LATER, sched, &s1), 0);
    CHECK(ev_wait(&s1, 1, 5000));
    CHECK(s1.rc == 0 && s1.found_rc == 0);
    CHECK(wait_status(&e, sched, JOB_SCHEDULED, 10));
    CHECK_EQ_INT(core_job_cancel(e.c, sched), 0);
    struct job *j = wait_end(&e, sched, 5000);
    CHECK(j && j->status == JOB_CANCELLED && j->error_type == JOB_ERR_CANCELLED);
    CHECK(j && j->started_at_ms == 0 && j->finished_at_ms > 0);
    job_free(j);

    hold_worker(&e, running);
    CHECK_EQ_INT(submit_json(&e, NOOP, queued, NULL), 0);
    CHECK(wait_exec_queued(&e, 0, 1, 5000));
    CHECK_EQ_INT(core_job_cancel(e.c, queued), 0);
    j = wait_end(&e, queued, 5000);
    CHECK(j && j->status == JOB_CANCELLED && j->started_at_ms == 0 && j->attempt == 0);
    job_free(j);

    int64_t t0 = clock_mono_ms();
    CHECK_EQ_INT(core_job_cancel(e.c, running), 0);
    j = wait_end(&e, running, 5000);
    CHECK(clock_mono_ms() - t0 < 1000);
    CHECK(j && j->status == JOB_CANCELLED && j->error_type == JOB_ERR_CANCELLED && j->attempt == 1);
    job_free(j);

    CHECK_EQ_INT(core_job_cancel(e.c, running), -EALREADY);
    CHECK_EQ_INT(core_job_cancel(e.c, sched), -EALREADY);
    char unknown[ID_LEN + 1];
    id_new(unknown);
    CHECK_EQ_INT(core_job_cancel(e.c, unknown), -ENOENT);
    env_close(&e);
}

/* The submit callback is the acknowledgement (HTTP 202): a client may cancel
 * the moment it has it. The callback here holds the writer thread (as a
 * preempted thread would) while the "client" cancels: the job is committed,
 * so the cancel must be taken, not refused with -EBUSY "not live yet". */
static void test_cancel_right_after_submit_ack_is_not_ebusy(void)
{
    struct env e;
    env_open(&e, k_one, 1);
    char blocker[ID_LEN + 1], id[ID_LEN + 1];
    hold_worker(&e, blocker); /* so that a queued job stays queued */
    const char *specs[2] = {LATER, NOOP};
    for (int i = 0; i < 2; i++) {
        struct ev sub = {.gate = true};
        pthread_mutex_lock(&g_mu);
        g_gate_open = false;
        pthread_mutex_unlock(&g_mu);
        CHECK_EQ_INT(submit_json(&e, specs[i], id, &sub), 0);
        CHECK(ev_wait(&sub, 1, 5000)); /* acknowledged; the writer is held in the callback */
        int rc = core_job_cancel(e.c, id);
        pthread_mutex_lock(&g_mu);
        g_gate_open = true;
        pthread_cond_broadcast(&g_cv);
        pthread_mutex_unlock(&g_mu);
        if (rc != 0) fprintf(stderr, "    %s: cancel after the ack returned %d\n", specs[i], rc);
        CHECK_EQ_INT(rc, 0);
        if (rc == 0) expect_end(&e, id, JOB_CANCELLED);
    }
    CHECK_EQ_INT(core_job_cancel(e.c, blocker), 0);
    expect_end(&e, blocker, JOB_CANCELLED);
    env_close(&e);
}

static void test_retry_with_backoff_ends_failed_after_max_attempts(void)
{
    struct env e;
    env_open(&e, k_two, 2);
    char id[ID_LEN + 1];
    int64_t t0 = clock_mono_ms();
    struct job *j =
        run_json(&e, "{\"task\":\"fail\",\"args\":{\"message\":\"nope\"},\"max_attempts\":3,\"retry_backoff\":0.05}", id);
    int64_t took = clock_mono_ms() - t0;
    CHECK(j && j->status == JOB_FAILED && j->attempt == 3 && j->error_type == JOB_ERR_TASK);
    CHECK(j && j->error_message && strcmp(j->error_message, "nope") == 0);
    job_free(j);
    CHECK(took >= 150); /* back-off 50 ms, then 100 ms */
    CHECK(took < 3000);
    struct core_executor_stats s[2];
    core_executor_stats(e.c, s, 2);
    CHECK_EQ_INT(s[0].failed, 1);
    CHECK_EQ_INT(s[0].submitted, 3); /* one hand-off per attempt */
    env_close(&e);
}

static void test_core_job_retry_runs_again_under_a_new_id(void)
{
    struct env e;
    env_open(&e, k_two, 2);
    char failed[ID_LEN + 1], cancelled[ID_LEN + 1], ok[ID_LEN + 1];
    job_free(run_json(&e, "{\"task\":\"fail\",\"priority\":4,\"max_attempts\":1}", failed));
    struct ev sub = {0};
    struct job *nj = NULL;
    CHECK_EQ_INT(core_job_retry(e.c, failed, ev_done, &sub, &nj), 0);
    CHECK(nj != NULL);
    if (nj) {
        CHECK(strcmp(nj->id, failed) != 0 && id_valid(nj->id));
        CHECK(nj->status == JOB_QUEUED && nj->attempt == 0 && nj->priority == 4);
        CHECK_EQ_STR(nj->task, "fail");
        struct job *j = wait_end(&e, nj->id, 5000);
        CHECK(j && j->status == JOB_FAILED && j->attempt == 1 && j->started_at_ms > 0);
        job_free(j);
    }
    CHECK(ev_wait(&sub, 1, 5000));
    CHECK_EQ_INT(sub.rc, 0);
    job_free(nj);
    struct job *old = NULL;
    CHECK_EQ_INT(store_job_get(e.st, failed, &old), 0);
    CHECK(old && old->status == JOB_FAILED); /* the original is left as it was */
    job_free(old);

    /* a cancelled job runs again too */
    submit_acked(&e, "{\"task\":\"square\",\"args\":{\"n\":4},\"delay\":60}", cancelled);
    CHECK_EQ_INT(core_job_cancel(e.c, cancelled), 0);
    expect_end(&e, cancelled, JOB_CANCELLED);
    nj = NULL;
    CHECK_EQ_INT(core_job_retry(e.c, cancelled, NULL, NULL, &nj), 0);
    if (nj) {
        struct job *j = wait_end(&e, nj->id, 5000);
        CHECK(j && j->status == JOB_SUCCEEDED && j->result && strcmp(j->result, "16") == 0);
        job_free(j);
    }
    job_free(nj);

    job_free(run_json(&e, NOOP, ok));
    CHECK_EQ_INT(core_job_retry(e.c, ok, NULL, NULL, NULL), -EALREADY);
    char unknown[ID_LEN + 1];
    id_new(unknown);
    CHECK_EQ_INT(core_job_retry(e.c, unknown, NULL, NULL, NULL), -ENOENT);
    env_close(&e);
}

static void test_delete_terminal_refuses_live_and_unknown(void)
{
    struct env e;
    env_open(&e, k_two, 2);
    char done[ID_LEN + 1], later[ID_LEN + 1];
    job_free(run_json(&e, NOOP, done));
    struct ev del = {0}, del2 = {0};
    CHECK_EQ_INT(core_job_delete(e.c, done, ev_done, &del), 0);
    CHECK(ev_wait(&del, 1, 5000));
    CHECK_EQ_INT(del.rc, 0);
    struct job *g = NULL;
    CHECK_EQ_INT(store_job_get(e.st, done, &g), -ENOENT);
    struct core_stats st;
    core_get_stats(e.c, &st);
    CHECK_EQ_INT(st.counts[JOB_SUCCEEDED], 0);

    submit_acked(&e, LATER, later);
    CHECK_EQ_INT(core_job_delete(e.c, later, ev_done, &del2), -EALREADY);
    CHECK_EQ_INT(core_job_delete(e.c, done, ev_done, &del2), -ENOENT);
    CHECK_EQ_INT(store_job_get(e.st, later, &g), 0);
    job_free(g);
    env_close(&e);
    CHECK_EQ_INT(del.calls, 1);
    CHECK_EQ_INT(del2.calls, 0);
}

/* ---- waiters -------------------------------------------------------------------------------- */

static void test_waiter_deadline_cancel_and_chains(void)
{
    struct env e;
    env_open(&e, k_two, 2);
    char id[ID_LEN + 1];
    submit_acked(&e, LATER, id);
    struct ev a = {0}, b = {0}, c = {0}, d = {0};
    uint64_t ta, tb, tc, td;
    int64_t t0 = clock_mono_ms();
    CHECK_EQ_INT(core_wait_job(e.c, id, t0 + 100, ev_wake, &a, &ta), 0); /* first: the chain's head */
    CHECK_EQ_INT(core_wait_job(e.c, id, t0 + 60000, ev_wake, &b, &tb), 0);
    CHECK_EQ_INT(core_wait_job(e.c, id, t0 + 60000, ev_wake, &c, &tc), 0);
    CHECK(ta != tb && tb != tc);
    CHECK(core_wait_cancel(e.c, id, tb));
    CHECK(!core_wait_cancel(e.c, id, tb)); /* once */
    CHECK(ev_wait(&a, 1, 5000));
    CHECK(a.at_ms - t0 >= 100);
    CHECK(a.at_ms - t0 < 1000);
    CHECK(!core_wait_cancel(e.c, id, ta)); /* already fired */
    CHECK_EQ_INT(ev_calls(&c), 0);
    CHECK_EQ_INT(core_job_cancel(e.c, id), 0); /* the job ends: the rest of the chain fires */
    CHECK(ev_wait(&c, 1, 5000));
    CHECK_EQ_INT(core_wait_job(e.c, id, clock_mono_ms() + 60000, ev_wake, &d, &td), 0);
    CHECK(core_wait_cancel(e.c, id, td)); /* a finished job: only the deadline would fire it */
    env_close(&e);
    CHECK_EQ_INT(a.calls, 1);
    CHECK_EQ_INT(b.calls, 0);
    CHECK_EQ_INT(c.calls, 1);
    CHECK_EQ_INT(d.calls, 0);
}

/* ---- stats, open -------------------------------------------------------------------------------- */

static void test_stats_count_what_happened(void)
{
    struct env e;
    env_open(&e, k_two, 2);
    char id[ID_LEN + 1], sched[ID_LEN + 1], canc[ID_LEN + 1];
    const char *runs[3] = {NOOP, "{\"task\":\"square\",\"args\":{\"n\":2}}", "{\"task\":\"fail\"}"};
    for (int i = 0; i < 3; i++) job_free(run_json(&e, runs[i], id));
    submit_acked(&e, LATER, sched);
    submit_acked(&e, LATER, canc);
    CHECK_EQ_INT(core_job_cancel(e.c, canc), 0);
    expect_end(&e, canc, JOB_CANCELLED);

    struct core_stats st;
    int64_t want[JOB_STATUS_COUNT] = {[JOB_SCHEDULED] = 1, [JOB_SUCCEEDED] = 2, [JOB_FAILED] = 1,
                                      [JOB_CANCELLED] = 1};
    /* The counts move in the store's callbacks, just after the commit that
     * expect_end saw in the database: wait for them, with a deadline. */
    for (int64_t end = clock_mono_ms() + 5000;;) {
        core_get_stats(e.c, &st);
        if (memcmp(st.counts, want, sizeof want) == 0 || clock_mono_ms() >= end) break;
        sleep_ms(1);
    }
    int64_t db[JOB_STATUS_COUNT];
    CHECK_EQ_INT(store_count_by_status(e.st, db), 0);
    for (int i = 0; i < JOB_STATUS_COUNT; i++) {
        if (st.counts[i] != want[i]) fprintf(stderr, "    counts[%s]\n", job_status_name((enum job_status)i));
        CHECK_EQ_INT(st.counts[i], want[i]);
        CHECK_EQ_INT(db[i], want[i]);
    }
    CHECK(st.throughput_per_s > 0);
    CHECK(st.run_time_ms_p95 >= st.run_time_ms_p50 && st.run_time_ms_p50 >= 0);
    CHECK(st.queue_wait_ms_p95 >= st.queue_wait_ms_p50 && st.queue_wait_ms_p50 >= 0);
    struct core_executor_stats ex[2];
    CHECK_EQ_INT(core_executor_stats(e.c, ex, 2), 2);
    CHECK(ex[0].submitted == 3 && ex[0].succeeded == 2 && ex[0].failed == 1 && ex[0].cancelled == 1);
    CHECK(ex[0].busy == 0 && ex[1].submitted == 0);
    CHECK(core_ready(e.c));

    /* a new core over the same store starts from the database's counts */
    core_close(e.c);
    env_open_core(&e);
    core_get_stats(e.c, &st);
    for (int i = 0; i < JOB_STATUS_COUNT; i++) CHECK_EQ_INT(st.counts[i], want[i]);

    /* and one with an executor kind this build lacks is refused, cleanly */
    core_close(e.c);
    const struct core_executor_config bad[] = {
        {.name = "t", .kind = TASK_KIND_THREAD, .size = 1, .max_queued = 10},
        {.name = "p", .kind = TASK_KIND_PROCESS, .size = 1, .max_queued = 10},
    };
    struct core_options co = {.executors = bad, .n_executors = 2, .tasks = g_reg, .store = e.st};
    e.c = (struct core *)&g_seq;
    CHECK_EQ_INT(core_open(&co, &e.c), -EINVAL);
    CHECK(e.c == (struct core *)&g_seq); /* untouched */
    e.c = NULL;                          /* core_close(NULL) is accepted */
    env_close(&e);
}

/* ---- drain ------------------------------------------------------------------------------------------ */

static void test_drain_requeues_a_running_job_for_the_next_start(void)
{
    struct env e;
    env_open(&e, k_one, 1);
    char id[ID_LEN + 1], late[ID_LEN + 1];
    hold_worker(&e, id);
    struct ev w = {0}, w2 = {0};
    uint64_t tok;
    CHECK_EQ_INT(core_wait_job(e.c, id, clock_mono_ms() + 60000, ev_wake, &w, &tok), 0);
    int64_t t0 = clock_mono_ms();
    core_drain(e.c, 100);
    int64_t took = clock_mono_ms() - t0;
    CHECK(took >= 100);
    CHECK(took < 2000);
    CHECK_EQ_INT(ev_calls(&w), 1); /* drain wakes every waiter */
    CHECK(!core_ready(e.c));
    CHECK_EQ_INT(submit_json(&e, NOOP, late, NULL), -ESHUTDOWN);
    CHECK_EQ_INT(core_wait_job(e.c, id, clock_mono_ms() + 60000, ev_wake, &w2, &tok), -ESHUTDOWN);
    core_drain(e.c, 100); /* idempotent */
    core_close(e.c);
    store_close(e.st);

    env_open_store(&e);
    struct job *j = NULL;
    CHECK_EQ_INT(store_job_get(e.st, id, &j), 0);
    CHECK(j && j->status == JOB_QUEUED); /* re-queued, not failed or lost */
    CHECK(j && j->attempt == 0);         /* the stopped attempt does not count */
    CHECK(j && j->started_at_ms == 0 && j->error_type == JOB_ERR_NONE);
    job_free(j);
    CHECK_EQ_INT(store_job_get(e.st, late, &j), -ENOENT);
    env_open_core(&e);
    CHECK(wait_status(&e, id, JOB_RUNNING, 5000));
    CHECK_EQ_INT(core_job_cancel(e.c, id), 0);
    j = wait_end(&e, id, 5000);
    CHECK(j && j->status == JOB_CANCELLED && j->attempt == 1);
    job_free(j);
    env_close(&e);
    CHECK_EQ_INT(w.calls, 1);
    CHECK_EQ_INT(w2.calls, 0);
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
    RUN(test_validation_refusals_name_the_field);
    RUN(test_non_object_batch_entry_field_is_its_path);
    RUN(test_validation_defaults_and_options);
    RUN(test_delay_and_backoff_round_to_the_millisecond_like_timeout);
    RUN(test_submit_calls_back_once_after_commit_and_wakes_waiter);
    RUN(test_priority_orders_a_one_worker_executor);
    RUN(test_max_queued_refuses_synchronously_past_the_limit);
    RUN(test_cancel_scheduled_queued_running_finished_unknown);
    RUN(test_cancel_right_after_submit_ack_is_not_ebusy);
    RUN(test_retry_with_backoff_ends_failed_after_max_attempts);
    RUN(test_core_job_retry_runs_again_under_a_new_id);
    RUN(test_delete_terminal_refuses_live_and_unknown);
    RUN(test_waiter_deadline_cancel_and_chains);
    RUN(test_stats_count_what_happened);
    RUN(test_drain_requeues_a_running_job_for_the_next_start);
    task_registry_free(g_reg);
    pthread_cond_destroy(&g_cv);
    return harness_finish();
}
