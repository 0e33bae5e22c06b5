/* test_callbacks.c - core/callbacks.c: the back-off, the signature, and the
 * delivery thread against a real store (no receiver needed: a job that is
 * gone, and a port that refuses connections). The HTTP side (headers,
 * retries that succeed, timeouts, restarts) is tested black-box in
 * tests/integration/test_callbacks.py.
 */
#include <errno.h>
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
#include "../../core/core_int.h"
#include "../../storage/store.h"
#include "harness.h"
#include "tmpdir.h"

/* The test seams of core/callbacks.c. */
int64_t core__callback_delay_ms(int64_t backoff_ms, int attempts, uint64_t rnd);
int core__callback_sign(const char *secret, int64_t t, const char *body, char out[65]);

#define CAP_MS (10 * 60 * 1000LL)

static void test_delay_doubles_caps_and_jitters_up_to_a_quarter(void)
{
    CHECK_EQ_INT(core__callback_delay_ms(1000, 1, 0), 1000);
    CHECK_EQ_INT(core__callback_delay_ms(1000, 2, 0), 2000);
    CHECK_EQ_INT(core__callback_delay_ms(1000, 4, 0), 8000);
    CHECK_EQ_INT(core__callback_delay_ms(1000, 30, 0), CAP_MS);
    CHECK_EQ_INT(core__callback_delay_ms(1000, 1000000, 0), CAP_MS); /* no overflow */
    CHECK_EQ_INT(core__callback_delay_ms(3600000, 1, 0), CAP_MS);
    /* jitter: 0..25% of the delay, every value reachable */
    CHECK_EQ_INT(core__callback_delay_ms(1000, 1, 250), 1250);
    CHECK_EQ_INT(core__callback_delay_ms(1000, 1, 251), 1000);
    CHECK_EQ_INT(core__callback_delay_ms(1000, 30, UINT64_MAX), CAP_MS + (int64_t)(UINT64_MAX % (CAP_MS / 4 + 1)));
    for (uint64_t r = 0; r < 5000; r += 7) {
        int64_t d = core__callback_delay_ms(100, 3, r * 0x9e3779b97f4a7c15ULL);
        CHECK(d >= 400 && d <= 500);
    }
}

static void test_signature_is_hmac_sha256_of_t_dot_body(void)
{
    char sig[65];
    /* python3: hmac.new(b'key', b'1700000000.{"a":1}', hashlib.sha256).hexdigest() */
    CHECK_EQ_INT(core__callback_sign("key", 1700000000, "{\"a\":1}", sig), 0);
    CHECK_EQ_STR(sig, "a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03");
    CHECK_EQ_INT(core__callback_sign("other", 1700000000, "{\"a\":1}", sig), 0);
    CHECK(strcmp(sig, "a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03") != 0);
}

static void test_stop_accepts_a_core_whose_callbacks_never_started(void)
{
    struct core c;
    memset(&c, 0, sizeof c);
    core_callbacks_kick(&c);
    core_callbacks_stop(&c);
    core_callbacks_stop(&c);
    CHECK(c.callbacks == NULL);
}

/* ---- the delivery thread against a store ------------------------------------ */

static struct store *open_store(struct tmp *t, const char *name)
{
    struct store_options opt = {0};
    struct store *st = NULL;
    tmp_make(t, name);
    opt.path = t->db;
    CHECK_EQ_INT(store_open(&opt, &st), 0);
    return st;
}

static int count_deliveries(struct store *st)
{
    struct store_delivery d[4];
    return store_deliveries_next(st, d, 4);
}

/* Polls until the store holds no delivery, for at most ms. */
static bool wait_no_delivery(struct store *st, int64_t ms)
{
    int64_t end = clock_mono_ms() + ms;
    while (clock_mono_ms() < end) {
        if (count_deliveries(st) == 0) return true;
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    return false;
}

/* Inserts a delivery row for a job that does not exist (as a deleted one). */
static void insert_orphan_delivery(const char *db_path)
{
    sqlite3 *db = NULL;
    CHECK_EQ_INT(sqlite3_open(db_path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    CHECK_EQ_INT(sqlite3_exec(db,
                              "INSERT INTO deliveries (kind, ref_id, url, next_at_ms) VALUES "
                              "('job', '01M7Y9B187D9P0KKXS4XTW3P67', 'http://127.0.0.1:1/', 0)",
                              NULL, NULL, NULL),
                 SQLITE_OK);
    sqlite3_close(db);
}

static void test_delivery_of_a_job_that_is_gone_fails_at_once(void)
{
    struct tmp t;
    struct store *st = open_store(&t, "cb-gone");
    struct core c;
    struct core_options opt = {.callback_max_attempts = 5, .callback_backoff_ms = 1};
    memset(&c, 0, sizeof c);
    c.store = st;
    insert_orphan_delivery(t.db);
    CHECK_EQ_INT(count_deliveries(st), 1);
    CHECK_EQ_INT(core_callbacks_start(&c, &opt), 0);
    CHECK(wait_no_delivery(st, 10000));
    core_callbacks_stop(&c);
    core_callbacks_stop(&c); /* idempotent */
    store_close(st);
    tmp_remove(&t);
}

static void done_free(void *ctx, int rc, struct job *job)
{
    (void)ctx;
    CHECK_EQ_INT(rc, 0);
    job_free(job);
}

/* A finished job with a callback_url: its delivery row comes with it. */
static void finish_job_with_callback(struct store *st, const char *url, char id_out[ID_LEN + 1])
{
    struct job *job = job_new();
    CHECK(job != NULL);
    id_new(job->id);
    memcpy(id_out, job->id, ID_LEN + 1);
    job_set_str(&job->task, "noop");
    job_set_str(&job->executor, "thread");
    job_set_str(&job->callback_url, url);
    job->status = JOB_QUEUED;
    job->created_at_ms = job->scheduled_at_ms = clock_wall_ms();
    struct job *done = job_dup(job);
    CHECK(done != NULL);
    CHECK_EQ_INT(store_job_insert(st, job, done_free, NULL), 0);
    done->status = JOB_SUCCEEDED;
    done->attempt = 1;
    done->started_at_ms = done->finished_at_ms = clock_wall_ms();
    CHECK_EQ_INT(store_job_update(st, done, done_free, NULL), 0);
    store_sync(st);
}

static void test_refused_deliveries_end_failed_after_max_attempts(void)
{
    struct tmp t;
    struct store *st = open_store(&t, "cb-refused");
    struct core c;
    struct core_options opt = {.callback_max_attempts = 3, .callback_backoff_ms = 1, .callback_timeout_ms = 5000};
    char id[ID_LEN + 1];
    struct job *job = NULL;
    memset(&c, 0, sizeof c);
    c.store = st;
    finish_job_with_callback(st, "http://127.0.0.1:1/hook", id); /* port 1: connection refused */
    CHECK_EQ_INT(store_job_get(st, id, &job), 0);
    CHECK(job && job->callback_status && strcmp(job->callback_status, "pending") == 0);
    job_free(job);
    job = NULL;
    CHECK_EQ_INT(count_deliveries(st), 1);
    CHECK_EQ_INT(core_callbacks_start(&c, &opt), 0);
    CHECK(wait_no_delivery(st, 20000));
    core_callbacks_stop(&c);
    CHECK_EQ_INT(store_job_get(st, id, &job), 0);
    CHECK(job && job->callback_status && strcmp(job->callback_status, "failed") == 0);
    job_free(job);
    store_close(st);
    tmp_remove(&t);
}

static void test_stop_leaves_pending_deliveries_for_the_next_start(void)
{
    struct tmp t;
    struct store *st = open_store(&t, "cb-restart");
    struct core c;
    /* a long back-off (capped at 10 min): after the first failed attempt the row waits */
    struct core_options opt = {.callback_max_attempts = 5, .callback_backoff_ms = 3600000};
    char id[ID_LEN + 1];
    struct store_delivery d[2];
    memset(&c, 0, sizeof c);
    c.store = st;
    finish_job_with_callback(st, "http://127.0.0.1:1/hook", id);
    CHECK_EQ_INT(core_callbacks_start(&c, &opt), 0);
    int64_t end = clock_mono_ms() + 10000;
    int n;
    while ((n = store_deliveries_next(st, d, 2)) == 1 && d[0].attempts == 0 && clock_mono_ms() < end) {
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    core_callbacks_stop(&c);
    CHECK_EQ_INT(store_deliveries_next(st, d, 2), 1);
    CHECK_EQ_INT(d[0].attempts, 1);
    CHECK(d[0].next_at_ms >= clock_wall_ms() + 500000); /* the 10 min cap, less the time since */
    CHECK_EQ_STR(d[0].ref_id, id);
    /* started again: still pending (not due), and stops cleanly */
    CHECK_EQ_INT(core_callbacks_start(&c, &opt), 0);
    core_callbacks_stop(&c);
    CHECK_EQ_INT(store_deliveries_next(st, d, 2), 1);
    CHECK_EQ_INT(d[0].attempts, 1);
    store_close(st);
    tmp_remove(&t);
}

int main(void)
{
    log_init(LOG_LEVEL_ERROR, LOG_FORMAT_TEXT);
    RUN(test_delay_doubles_caps_and_jitters_up_to_a_quarter);
    RUN(test_signature_is_hmac_sha256_of_t_dot_body);
    RUN(test_stop_accepts_a_core_whose_callbacks_never_started);
    RUN(test_delivery_of_a_job_that_is_gone_fails_at_once);
    RUN(test_refused_deliveries_end_failed_after_max_attempts);
    RUN(test_stop_leaves_pending_deliveries_for_the_next_start);
    return harness_finish();
}
