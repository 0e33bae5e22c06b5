/* test_store.c - storage/: schema and migrations, every read and write, group
 * commit, failure isolation, recovery, shutdown.
 *
 * Every test works in its own mkdtemp directory under /tmp and removes it.
 * Callbacks run on the store's writer thread, so they never CHECK: they record
 * what they saw in a `struct done`, which the test checks after store_sync()
 * (whose lock orders the writes before the reads). Faults and batching are
 * forced through the seams of storage/store_int.h, never by timing.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../common/clock.h"
#include "../../common/id.h"
#include "../../common/job.h"
#include "../../common/log.h"
#include "../../storage/store.h"
#include "../../storage/store_int.h"
#include "harness.h"
#include "tmpdir.h"

/* ---- helpers ---------------------------------------------------------------- */

static struct store *open_at(const char *path)
{
    struct store_options opt = {.path = path};
    struct store *st = NULL;
    int rc = store_open(&opt, &st);
    CHECK_EQ_INT(rc, 0);
    return st;
}

static struct job *make_job(const char *task, enum job_status status)
{
    struct job *j = job_new();
    if (!j) abort();
    id_new(j->id);
    if (job_set_str(&j->task, task)) abort();
    j->status = status;
    j->created_at_ms = clock_wall_ms();
    j->scheduled_at_ms = j->created_at_ms;
    return j;
}

/* What a store_done_cb saw. calls is atomic so "exactly once" is counted
 * even if a bug made two threads call back. */
struct done {
    atomic_int calls;
    int rc;
    struct job *job; /* kept (owned by the test) */
};

static void done_keep(void *ctx, int rc, struct job *job)
{
    struct done *d = ctx;
    d->rc = rc;
    job_free(d->job);
    d->job = job;
    atomic_fetch_add(&d->calls, 1);
}

static void done_clear(struct done *d)
{
    job_free(d->job);
    d->job = NULL;
}

/* Inserts a copy of j and waits for the commit; returns the callback's rc. */
static int insert_sync(struct store *st, const struct job *j)
{
    struct done d = {0};
    int rc = store_job_insert(st, job_dup(j), done_keep, &d);
    if (rc) return rc;
    store_sync(st);
    CHECK_EQ_INT(atomic_load(&d.calls), 1);
    done_clear(&d);
    return d.rc;
}

static int update_sync(struct store *st, const struct job *j)
{
    struct done d = {0};
    int rc = store_job_update(st, job_dup(j), done_keep, &d);
    if (rc) return rc;
    store_sync(st);
    CHECK_EQ_INT(atomic_load(&d.calls), 1);
    done_clear(&d);
    return d.rc;
}

static int delete_sync(struct store *st, const char *id)
{
    struct done d = {0};
    int rc = store_job_delete(st, id, done_keep, &d);
    if (rc) return rc;
    store_sync(st);
    CHECK_EQ_INT(atomic_load(&d.calls), 1);
    CHECK(d.job == NULL);
    return d.rc;
}

static int64_t raw_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int64_t v = -1;
    CHECK_EQ_INT(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

static void raw_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    CHECK_EQ_INT(sqlite3_open(path, &db), SQLITE_OK);
    CHECK_EQ_INT(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* ---- open, schema, migrations ---------------------------------------------- */

static void test_open_creates_dirs_schema_and_version(void)
{
    struct tmp t;
    tmp_make(&t, "store");
    char path[192];
    snprintf(path, sizeof path, "%s/a/b/jobd.db", t.dir);
    struct store *st = open_at(path);
    CHECK(st != NULL);
    store_close(st);
    CHECK_EQ_INT(access(path, F_OK), 0);
    CHECK_EQ_INT(raw_int(path, "PRAGMA user_version"), 2);
    CHECK_EQ_INT(raw_int(path, "PRAGMA application_id"), 0x6A6F6264);
    CHECK_EQ_INT(raw_int(path, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'jobs'"), 1);
    CHECK_EQ_INT(raw_int(path, "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND name LIKE 'jobs_%'"), 3);
    CHECK_EQ_INT(raw_int(path, "SELECT journal_mode = 'wal' FROM pragma_journal_mode"), 1);
    tmp_remove(&t);
}

static void test_reopen_is_idempotent_and_keeps_data(void)
{
    struct tmp t;
    tmp_make(&t, "store");
    struct store *st = open_at(t.db);
    struct job *j = make_job("echo", JOB_QUEUED);
    CHECK_EQ_INT(insert_sync(st, j), 0);
    store_close(st);
    for (int i = 0; i < 2; i++) {
        st = open_at(t.db);
        struct job *got = NULL;
        CHECK_EQ_INT(store_job_get(st, j->id, &got), 0);
        CHECK(got && strcmp(got->task, "echo") == 0);
        job_free(got);
        store_close(st);
    }
    CHECK_EQ_INT(raw_int(t.db, "PRAGMA user_version"), 2);
    job_free(j);
    tmp_remove(&t);
}

static void test_newer_schema_is_refused(void)
{
    struct tmp t;
    tmp_make(&t, "store");
    store_close(open_at(t.db));
    raw_exec(t.db, "PRAGMA user_version = 99");
    struct store_options opt = {.path = t.db};
    struct store *st = (struct store *)1;
    CHECK_EQ_INT(store_open(&opt, &st), -EINVAL);
    CHECK(st == NULL);
    CHECK_EQ_INT(raw_int(t.db, "PRAGMA user_version"), 99); /* untouched */
    tmp_remove(&t);
}

static void test_non_database_file_is_refused(void)
{
    struct tmp t;
    tmp_make(&t, "store");
    FILE *f = fopen(t.db, "w");
    CHECK(f != NULL);
    for (int i = 0; i < 512; i++) fputs("this is not a database, ", f);
    fclose(f);
    struct store_options opt = {.path = t.db};
    struct store *st = NULL;
    CHECK_EQ_INT(store_open(&opt, &st), -EINVAL);
    CHECK(st == NULL);
    tmp_remove(&t);
}

static void test_foreign_sqlite_database_is_refused(void)
{
    struct tmp t;
    tmp_make(&t, "store");
    raw_exec(t.db, "CREATE TABLE photos (id INTEGER PRIMARY KEY)");
    struct store_options opt = {.path = t.db};
    struct store *st = NULL;
    CHECK_EQ_INT(store_open(&opt, &st), -EINVAL);
    CHECK(st == NULL);
    CHECK_EQ_INT(raw_int(t.db, "SELECT count(*) FROM sqlite_schema WHERE name = 'jobs'"), 0);
    /* refused before anything was changed, not even the journal mode */
    CHECK_EQ_INT(raw_int(t.db, "SELECT journal_mode = 'delete' FROM pragma_journal_mode"), 1);
    tmp_remove(&t);
}

static void test_invalid_options_are_refused(void)
{
    struct store *st = NULL;
    struct store_options mem = {.path = ":memory:"}, none = {0};
    CHECK_EQ_INT(store_open(&mem, &st), -EINVAL);
    CHECK_EQ_INT(store_open(&none, &st), -EINVAL);
    CHECK_EQ_INT(store_open(NULL, &st), -EINVAL);
    store_close(NULL); /* accepted */
}

static void test_unwritable_location_is_refused(void)
{
    struct store_options opt = {.path = "/proc/jobd-test/jobd.db"};
    struct store *st = NULL;
    int rc = store_open(&opt, &st);
    CHECK(rc == -EACCES || rc == -EROFS || rc == -EIO || rc == -ENOENT);
    CHECK(st == NULL);
}

/* ---- writes and single reads ------------------------------------------------ */

static void test_insert_get_roundtrips_every_field(void)
{
    struct tmp t;
    tmp_make(&t, "store");
    struct store *st = open_at(t.db);
    struct job *j = make_job("sleep", JOB_RUNNING);
    job_set_str(&j->args, "{\"seconds\":1.5}");
    job_set_str(&j->executor, "async");
    j->priority = -7;
    j->attempt = 2;
    j->max_attempts = 5;
    j->timeout_ms = 30000;
    j->retry_backoff_ms = 1500;
    j->created_at_ms = 1700000000123;
    j->scheduled_at_ms = 1700000001000;
    j->started_at_ms = 1700000002000;
    j->finished_at_ms = 1700000003000;
    j->progress_fraction = 0.25;
    job_set_str(&j->progress_message, "a quarter");
    job_set_str(&j->result, "{\"slept\":1.5}");
    j->error_type = JOB_ERR_TIMEOUT;
    job_set_str(&j->error_message, "took too long");
    j->worker_pid = 4242;
    job_set_str(&j->worker_thread, "async-0");
    job_set_str(&j->batch_id, "01JD3W6R6ZK1Y8Q3V0C9XH2B7M");
    job_set_str(&j->depends_on, "[\"01JD3W6R6ZK1Y8Q3V0C9XH2B7A\"]");
    job_set_str(&j->concurrency_key, "db");
    j->concurrency_limit = 3;
    job_set_str(&j->idempotency_key, "key-1");
    job_set_str(&j->callback_url, "http://127.0.0.1:9/cb");
    job_set_str(&j->callback_status, "delivered");
    CHECK_EQ_INT(insert_sync(st, j), 0);

    struct job *g = NULL;
    CHECK_EQ_INT(store_job_get(st, j->id, &g), 0);
    CHECK(g != NULL);
    if (g) {
        CHECK_EQ_STR(g->id, j->id);
        CHECK_EQ_STR(g->task, "sleep");
        CHECK_EQ_STR(g->args, "{\"seconds\":1.5}");
        CHECK_EQ_STR(g->executor, "async");
        CHECK_EQ_INT(g->status, JOB_RUNNING);
        CHECK_EQ_INT(g->priority, -7);
        CHECK_EQ_INT(g->attempt, 2);
        CHECK_EQ_INT(g->max_attempts, 5);
        CHECK_EQ_INT(g->timeout_ms, 30000);
        CHECK_EQ_INT(g->retry_backoff_ms, 1500);
        CHECK_EQ_INT(g->created_at_ms, 1700000000123);
        CHECK_EQ_INT(g->scheduled_at_ms, 1700000001000);
        CHECK_EQ_INT(g->started_at_ms, 1700000002000);
        CHECK_EQ_INT(g->finished_at_ms, 1700000003000);
        CHECK(g->progress_fraction == 0.25);
        CHECK_EQ_STR(g->progress_message, "a quarter");
        CHECK_EQ_STR(g->result, "{\"slept\":1.5}");
        CHECK_EQ_INT(g->error_type, JOB_ERR_TIMEOUT);
        CHECK_EQ_STR(g->error_message, "took too long");
        CHECK_EQ_INT(g->worker_pid, 4242);
        CHECK_EQ_STR(g->worker_thread, "async-0");
        CHECK_EQ_STR(g->batch_id, "01JD3W6R6ZK1Y8Q3V0C9XH2B7M");
        CHECK_EQ_STR(g->depends_on, "[\"01JD3W6R6ZK1Y8Q3V0C9XH2B7A\"]");
        CHECK_EQ_STR(g->concurrency_key, "db");
        CHECK_EQ_INT(g->concurrency_limit, 3);
        CHECK_EQ_STR(g->idempotency_key, "key-1");
        CHECK_EQ_STR(g->callback_url, "http://127.0.0.1:9/cb");
        CHECK_EQ_STR(g->callback_status, "delivered");
    }
    job_free(g);
    g = NULL;
    CHECK_EQ_INT(store_job_get_by_idempotency(st, "key-1", &g), 0);
    CHECK(g && strcmp(g->id, j->id) == 0);
    job_free(g);
    CHECK_EQ_INT(store_job_get_by_idempotency(st, "key-2", &g), -ENOENT);
    CHECK(g == NULL);

    /* the defaults: NULL strings stay NULL, 0 stays 0, no progress stays -1 */
    struct job *d = make_job("noop", JOB_QUEUED);
    d->scheduled_at_ms = 0;
    CHECK_EQ_INT(insert_sync(st, d), 0);
    CHECK_EQ_INT(store_job_get(st, d->id, &g), 0);
    if (g) {
        CHECK(g->executor == NULL && g->result == NULL && g->error_message == NULL);
        CHECK(g->batch_id == NULL && g->idempotency_key == NULL && g->callback_status == NULL);
        CHECK(g->worker_thread == NULL && g->progress_message == NULL);
        CHECK_EQ_STR(g->args, "{}");
        CHECK_EQ_STR(g->depends_on, "[]");
        CHECK(g->progress_fraction < 0);
        CHECK_EQ_INT(g->error_type, JOB_ERR_NONE);
        CHECK_EQ_INT(g->scheduled_at_ms, 0);
        CHECK_EQ_INT(g->started_at_ms, 0);
        CHECK_EQ_INT(g->worker_pid, 0);
    }
    job_free(g);
    CHECK_EQ_INT(store_job_get(st, "01JD3W6R6ZK1Y8Q3V0C9XH2B7Z", &g), -ENOENT);
    /* stored readably for the sqlite3 CLI */
    store_close(st);
    CHECK_EQ_INT(raw_int(t.db, "SELECT count(*) FROM jobs WHERE status = 'running' AND error_type = 'timeout'"), 1);
    job_free(j);
    job_free(d);
    tmp_remove(&t);
}

static void test_update_writes_mutable_fields(void)
{
    struct tmp t;
    tmp_make(&t, "store");
    struct store *st = open_at(t.db);
    struct job *j = make_job("square", JOB_QUEUED);
    CHECK_EQ_INT(insert_sync(st, j), 0);

    j->status = JOB_FAILED;
    j->attempt = 1;
    j->started_at_ms = 1700000002000;
    j->finished_at_ms = 1700000003000;
    j->error_type = JOB_ERR_TASK;
    job_set_str(&j->error_message, "boom");
    job_set_str(&j->result, "42");
    j->worker_pid = 77;
    job_set_str(&j->worker_thread, "process-1");
    job_set_str(&j->executor, "process");
    job_set_str(&j->callback_status, "pending");
    j->progress_fraction = 1.0;
    CHECK_EQ_INT(update_sync(st, j), 0);

    struct job *g = NULL;
    CHECK_EQ_INT(store_job_get(st, j->id, &g), 0);
    if (g) {
        CHECK_EQ_INT(g->status, JOB_FAILED);
        CHECK_EQ_INT(g->attempt, 1);
        CHECK_EQ_INT(g->started_at_ms, 1700000002000);
        CHECK_EQ_INT(g->finished_at_ms, 1700000003000);
        CHECK_EQ_INT(g->error_type, JOB_ERR_TASK);
        CHECK_EQ_STR(g->error_message, "boom");
        CHECK_EQ_STR(g->result, "42");
        CHECK_EQ_INT(g->worker_pid, 77);
        CHECK_EQ_STR(g->worker_thread, "process-1");
        CHECK_EQ_STR(g->executor, "process");
        CHECK_EQ_STR(g->callback_status, "pending");
        CHECK(g->progress_fraction == 1.0);
        CHECK_EQ_STR(g->task, "square"); /* immutable fields untouched */
    }
    job_free(g);

    /* the callback gets the job back; an unknown id fails with -ENOENT */
    struct job *ghost = make_job("noop", JOB_QUEUED);
    struct done d = {0};
    char ghost_id[ID_LEN + 1];
    memcpy(ghost_id, ghost->id, sizeof ghost_id);
    CHECK_EQ_INT(store_job_update(st, ghost, done_keep, &d), 0);
    store_sync(st);
    CHECK_EQ_INT(atomic_load(&d.calls), 1);
    CHECK_EQ_INT(d.rc, -ENOENT);
    CHECK(d.job && strcmp(d.job->id, ghost_id) == 0);
    done_clear(&d);

    /* invalid input is answered synchronously, the job freed, no callback */
    struct done never = {0};
    struct job *bad = job_new();
    CHECK_EQ_INT(store_job_update(st, bad, done_keep, &never), -EINVAL);
    CHECK_EQ_INT(store_job_insert(st, NULL, done_keep, &never), -EINVAL);
    store_sync(st);
    CHECK_EQ_INT(atomic_load(&never.calls), 0);
    store_close(st);
    job_free(j);
    tmp_remove(&t);
}

static void test_progress_is_saved_only_while_running(void)
{
    struct tmp t;
    tmp_make(&t, "store");
    struct store *st = open_at(t.db);
    struct job *j = make_job("crunch", JOB_QUEUED);
    CHECK_EQ_INT(insert_sync(st, j), 0);
    struct job *g = NULL;

    CHECK_EQ_INT(store_job_progress(st, j->id, 0.1, "early"), 0);
    store_sync(st);
    CHECK_EQ_INT(store_job_get(st, j->id, &g), 0);
    CHECK(g && g->progress_fraction < 0 && g->progress_message == NULL);
    job_free(g);

    j->status = JOB_RUNNING;
    CHECK_EQ_INT(update_sync(st, j), 0);
    CHECK_EQ_INT(store_job_progress(st, j->id, 0.5, "halfway"), 0);
    store_sync(st);
    CHECK_EQ_INT(store_job_get(st, j->id, &g), 0);
    CHECK(g && g->progress_fraction == 0.5);
    CHECK_EQ_STR(g ? g->progress_message : NULL, "halfway");
    CHECK_EQ_STR(g ? g->task : NULL, "crunch");
    job_free(g);

    j->status = JOB_SUCCEEDED;
    j->progress_fraction = 1.0;
    CHECK_EQ_INT(update_sync(st, j), 0);
    CHECK_EQ_INT(store_job_progress(st, j->id, 0.7, "late"), 0);
    store_sync(st);
    CHECK_EQ_INT(store_job_get(st, j->id, &g), 0);
    CHECK(g && g->progress_fraction == 1.0);
    job_free(g);
    CHECK_EQ_INT(store_job_progress(st, "not-an-id", 0.7, NULL), -EINVAL);
    store_close(st);
    job_free(j);
    tmp_remove(&t);
}

static void test_delete_terminal_not_terminal_and_missing(void)
{
    struct tmp t;
    tmp_make(&t, "store");
    struct store *st = open_at(t.db);
    struct job *done_job = make_job("noop", JOB_SUCCEEDED);
    struct job *live = make_job("noop", JOB_RUNNING);
    CHECK_EQ_INT(insert_sync(st, done_job), 0);
    CHECK_EQ_INT(insert_sync(st, live), 0);

    CHECK_EQ_INT(delete_sync(st, done_job->id), 0);
    struct job *g = NULL;
    CHECK_EQ_INT(store_job_get(st, done_job->id, &g), -ENOENT);
    CHECK_EQ_INT(delete_sync(st, done_job->id), -ENOENT);
    CHECK_EQ_INT(delete_sync(st, live->id), -EALREADY);
    CHECK_EQ_INT(store_job_get(st, live->id, &g), 0);
    job_free(g);
    CHECK_EQ_INT(store_job_delete(st, "short", NULL, NULL), -EINVAL);
    store_close(st);
    job_free(done_job);
    job_free(live);
    tmp_remove(&t);
}

static void test_duplicate_idempotency_key_fails_only_that_op(void)
{
    struct tmp t;
    tmp_make(&t, "store");
    struct store *st = open_at(t.db);
    struct job *a = make_job("echo", JOB_QUEUED), *b = make_job("echo", JOB_QUEUED);
    struct job *c = make_job("echo", JOB_QUEUED);
    job_set_str(&a->idempotency_key, "k1");
    job_set_str(&b->idempotency_key, "k1");
    job_set_str(&c->idempotency_key, "k2");
    struct job *a_again = job_dup(a); /* same id: the primary key conflicts too */
    job_set_str(&a_again->idempotency_key, NULL);
    struct store_stats before, after;
    store_get_stats(st, &before);

    /* paused, the four ops can only be taken as one batch */
    store__debug_pause(st, true);
    struct done d[4] = {{0}};
    CHECK_EQ_INT(store_job_insert(st, job_dup(a), done_keep, &d[0]), 0);
    CHECK_EQ_INT(store_job_insert(st, job_dup(b), done_keep, &d[1]), 0);
    CHECK_EQ_INT(store_job_insert(st, job_dup(a_again), done_keep, &d[2]), 0);
    CHECK_EQ_INT(store_job_insert(st, job_dup(c), done_keep, &d[3]), 0);
    store_get_stats(st, &after);
    CHECK_EQ_INT(after.queued, 4);
    store__debug_pause(st, false);
    store_sync(st);
    store_get_stats(st, &after);

    CHECK_EQ_INT(after.commits - before.commits, 1);
    CHECK_EQ_INT(after.last_batch, 4);
    CHECK_EQ_INT(after.failed_ops - before.failed_ops, 2);
    int want[4] = {0, -EEXIST, -EEXIST, 0};
    for (int i = 0; i < 4; i++) {
        CHECK_EQ_INT(atomic_load(&d[i].calls), 1);
        CHECK_EQ_INT(d[i].rc, want[i]);
        CHECK(d[i].job != NULL); /* the failed ones get their job back too */
        done_clear(&d[i]);
    }
    struct job *g = NULL;
    CHECK_EQ_INT(store_job_get_by_idempotency(st, "k1", &g), 0);
    CHECK_EQ_STR(g ? g->id : NULL, a->id);
    job_free(g);
    CHECK_EQ_INT(store_job_get(st, b->id, &g), -ENOENT);
    CHECK_EQ_INT(store_job_get(st, c->id, &g), 0);
    job_free(g);
    store_close(st);
    job_free(a);
    job_free(b);
    job_free(c);
    job_free(a_again);
    tmp_remove(&t);
}

/* ---- lists, counts, scans ---------------------------------------------------- */

#define NLIST 30

/* Pages through a filter with the given limit; checks newest-first order and
 * no duplicates across pages; returns the number of jobs seen and writes
 * their ids (in order) to ids. */
static size_t list_all(struct store *st, struct store_filter f, char ids[][ID_LEN + 1], size_t cap)
{
    size_t total = 0;
    char cursor[ID_LEN + 1] = "";
    for (int page = 0; page < 100; page++) {
        struct job **jobs = NULL;
        size_t n = 0;
        char next[ID_LEN + 1];
        f.before_id = cursor[0] ? cursor : NULL;
        CHECK_EQ_INT(store_job_list(st, &f, &jobs, &n, next), 0);
        CHECK(n <= (size_t)f.limit);
        for (size_t i = 0; i < n; i++) {
            if (total > 0) CHECK(strcmp(ids[total - 1], jobs[i]->id) > 0); /* strictly descending */
            if (total < cap) memcpy(ids[total], jobs[i]->id, ID_LEN + 1);
            total++;
        }
        if (next[0]) CHECK(n == (size_t)f.limit && strcmp(next, jobs[n - 1]->id) == 0);
        store_jobs_free(jobs, n);
        if (!next[0]) break;
        memcpy(cursor, next, sizeof cursor);
    }
    return total;
}

static void test_list_order_filters_and_pagination(void)
{
    struct tmp t;
    tmp_make(&t, "store");
    struct store *st = open_at(t.db);
    char ids[NLIST][ID_LEN + 1];
    int n_succeeded = 0, n_sleep = 0, n_echo_succeeded = 0, n_async = 0, n_batch = 0;
    const char *batch = "01JD3W6R6ZK1Y8Q3V0C9XH2B7M";
    for (int i = 0; i < NLIST; i++) {
        bool sleep_task = i % 3 == 0, succeeded = i % 2 == 1;
        struct job *j = make_job(sleep_task ? "sleep" : "echo", succeeded ? JOB_SUCCEEDED : JOB_QUEUED);
        job_set_str(&j->executor, i % 5 == 0 ? "async" : "thread");
        if (i % 4 == 0) job_set_str(&j->batch_id, batch);
        memcpy(ids[i], j->id, ID_LEN + 1);
        n_succeeded += succeeded;
        n_sleep += sleep_task;
        n_echo_succeeded += succeeded && !sleep_task;
        n_async += i % 5 == 0;
        n_batch += i % 4 == 0;
        CHECK_EQ_INT(store_job_insert(st, j, NULL, NULL), 0);
    }
    store_sync(st);

    char seen[NLIST + 5][ID_LEN + 1];
    /* everything, in pages of 7: newest first, exactly the inserted ids */
    struct store_filter all = {.limit = 7};
    CHECK_EQ_INT(list_all(st, all, seen, NLIST + 5), NLIST);
    for (int i = 0; i < NLIST; i++) CHECK_EQ_STR(seen[i], ids[NLIST - 1 - i]);
    /* one page holding everything, and a page size that divides the total */
    all.limit = 1000;
    CHECK_EQ_INT(list_all(st, all, seen, NLIST + 5), NLIST);
    all.limit = 5;
    CHECK_EQ_INT(list_all(st, all, seen, NLIST + 5), NLIST);

    struct store_filter f = {.status_mask = 1u << JOB_SUCCEEDED, .limit = 4};
    CHECK_EQ_INT(list_all(st, f, seen, NLIST + 5), n_succeeded);
    f = (struct store_filter){.task = "sleep", .limit = 3};
    CHECK_EQ_INT(list_all(st, f, seen, NLIST + 5), n_sleep);
    f = (struct store_filter){.task = "echo", .status_mask = 1u << JOB_SUCCEEDED, .limit = 2};
    CHECK_EQ_INT(list_all(st, f, seen, NLIST + 5), n_echo_succeeded);
    f = (struct store_filter){.executor = "async", .limit = 10};
    CHECK_EQ_INT(list_all(st, f, seen, NLIST + 5), n_async);
    f = (struct store_filter){.batch_id = batch, .limit = 3};
    CHECK_EQ_INT(list_all(st, f, seen, NLIST + 5), n_batch);
    f = (struct store_filter){.status_mask = (1u << JOB_SUCCEEDED) | (1u << JOB_QUEUED), .limit = 6};
    CHECK_EQ_INT(list_all(st, f, seen, NLIST + 5), NLIST);
    f = (struct store_filter){.status_mask = (1u << JOB_SUCCEEDED) | (1u << JOB_QUEUED) | (1u << JOB_RUNNING),
                              .task = "echo", .limit = 3};
    CHECK_EQ_INT(list_all(st, f, seen, NLIST + 5), NLIST - n_sleep);
    f = (struct store_filter){.status_mask = (1u << JOB_STATUS_COUNT) - 1, .limit = 8};
    CHECK_EQ_INT(list_all(st, f, seen, NLIST + 5), NLIST);
    f = (struct store_filter){.status_mask = 1u << JOB_RUNNING, .limit = 6};
    CHECK_EQ_INT(list_all(st, f, seen, NLIST + 5), 0);
    f = (struct store_filter){.task = "nope", .limit = 6};
    CHECK_EQ_INT(list_all(st, f, seen, NLIST + 5), 0);

    /* limit is clamped to 1..1000 */
    struct job **jobs = NULL;
    size_t n = 0;
    char next[ID_LEN + 1];
    f = (struct store_filter){.limit = 0};
    CHECK_EQ_INT(store_job_list(st, &f, &jobs, &n, next), 0);
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_STR(next, ids[NLIST - 1]);
    store_jobs_free(jobs, n);
    store_close(st);
    tmp_remove(&t);
}

static void test_count_by_status(void)
{
    struct tmp t;
    tmp_make(&t, "store");
    struct store *st = open_at(t.db);
    int want[JOB_STATUS_COUNT] = {2, 3, 1, 4, 0, 2};
    for (int s = 0; s < JOB_STATUS_COUNT; s++)
        for (int i = 0; i < want[s]; i++)
            CHECK_EQ_INT(store_job_insert(st, make_job("noop", (enum job_status)s), NULL, NULL), 0);
    store_sync(st);
    int64_t counts[JOB_STATUS_COUNT];
    CHECK_EQ_INT(store_count_by_status(st, counts), 0);
    for (int s = 0; s < JOB_STATUS_COUNT; s++) CHECK_EQ_INT(counts[s], want[s]);
    store_close(st);
    tmp_remove(&t);
}

static void test_recover_requeues_or_fails_running_jobs(void)
{
    struct tmp t;
    tmp_make(&t, "store");
    struct store *st = open_at(t.db);
    struct job *retry = make_job("sleep", JOB_RUNNING), *lost = make_job("sleep", JOB_RUNNING);
    struct job *queued = make_job("sleep", JOB_QUEUED), *ok = make_job("sleep", JOB_SUCCEEDED);
    retry->attempt = 1;
    retry->max_attempts = 3;
    retry->started_at_ms = 1700000000000;
    retry->worker_pid = 42;
    job_set_str(&retry->worker_thread, "thread-1");
    lost->attempt = 2;
    lost->max_attempts = 2;
    lost->started_at_ms = 1700000000000;
    job_set_str(&lost->worker_thread, "process-0");
    ok->finished_at_ms = 1700000000500;
    struct job *all[] = {retry, lost, queued, ok};
    for (int i = 0; i < 4; i++) CHECK_EQ_INT(insert_sync(st, all[i]), 0);
    store_close(st);

    st = open_at(t.db); /* as after a crash: recovery runs at start */
    int requeued = -1, failed = -1;
    int64_t now = 1800000000000;
    CHECK_EQ_INT(store_recover(st, now, &requeued, &failed), 0);
    CHECK_EQ_INT(requeued, 1);
    CHECK_EQ_INT(failed, 1);

    struct job *g = NULL;
    CHECK_EQ_INT(store_job_get(st, retry->id, &g), 0);
    if (g) {
        CHECK_EQ_INT(g->status, JOB_QUEUED);
        CHECK_EQ_INT(g->started_at_ms, 0);
        CHECK_EQ_INT(g->worker_pid, 0);
        CHECK(g->worker_thread == NULL);
        CHECK_EQ_INT(g->attempt, 1);
        CHECK_EQ_INT(g->error_type, JOB_ERR_NONE);
    }
    job_free(g);
    CHECK_EQ_INT(store_job_get(st, lost->id, &g), 0);
    if (g) {
        CHECK_EQ_INT(g->status, JOB_FAILED);
        CHECK_EQ_INT(g->error_type, JOB_ERR_WORKER_LOST);
        CHECK_EQ_STR(g->error_message, "the server stopped while the job was running (attempt 2 of 2)");
        CHECK_EQ_INT(g->finished_at_ms, now);
        CHECK_EQ_STR(g->worker_thread, "process-0"); /* where it was lost */
    }
    job_free(g);
    CHECK_EQ_INT(store_job_get(st, queued->id, &g), 0);
    CHECK(g && g->status == JOB_QUEUED);
    job_free(g);
    CHECK_EQ_INT(store_job_get(st, ok->id, &g), 0);
    CHECK(g && g->status == JOB_SUCCEEDED && g->finished_at_ms == 1700000000500);
    job_free(g);

    CHECK_EQ_INT(store_recover(st, now, &requeued, &failed), 0); /* nothing left to do */
    CHECK_EQ_INT(requeued, 0);
    CHECK_EQ_INT(failed, 0);
    store_close(st);
    for (int i = 0; i < 4; i++) job_free(all[i]);
    tmp_remove(&t);
}

struct scan_seen {
    int n;
    char ids[8][ID_LEN + 1];
    enum job_status status[8];
};

static void scan_cb(void *ctx, struct job *job)
{
    struct scan_seen *s = ctx;
    if (s->n < 8) {
        memcpy(s->ids[s->n], job->id, ID_LEN + 1);
        s->status[s->n] = job->status;
    }
    s->n++;
    job_free(job);
}

static void test_scan_pending_oldest_first(void)
{
    struct tmp t;
    tmp_make(&t, "store");
    struct store *st = open_at(t.db);
    enum job_status order[] = {JOB_QUEUED, JOB_RUNNING, JOB_SCHEDULED, JOB_SUCCEEDED, JOB_QUEUED, JOB_CANCELLED};
    char ids[6][ID_LEN + 1];
    for (int i = 0; i < 6; i++) {
        struct job *j = make_job("noop", order[i]);
        memcpy(ids[i], j->id, ID_LEN + 1);
        CHECK_EQ_INT(store_job_insert(st, j, NULL, NULL), 0);
    }
    store_sync(st);
    struct scan_seen seen = {0};
    CHECK_EQ_INT(store_scan_pending(st, scan_cb, &seen), 0);
    CHECK_EQ_INT(seen.n, 3);
    CHECK_EQ_STR(seen.ids[0], ids[0]);
    CHECK_EQ_STR(seen.ids[1], ids[2]);
    CHECK_EQ_STR(seen.ids[2], ids[4]);
    CHECK_EQ_INT(seen.status[1], JOB_SCHEDULED);
    store_close(st);
    tmp_remove(&t);
}

/* ---- group commit, concurrency, shutdown, faults -------------------------------- */

#define GC_THREADS 4
#define GC_PER_THREAD 5000

struct slot {
    atomic_int calls;
    atomic_int rc;
};

static void slot_cb(void *ctx, int rc, struct job *job)
{
    struct slot *s = ctx;
    atomic_store(&s->rc, rc);
    atomic_fetch_add(&s->calls, 1);
    job_free(job);
}

struct producer {
    struct store *st;
    struct slot *slots;
    int failed_queue;
};

static void *producer_main(void *arg)
{
    struct producer *p = arg;
    for (int i = 0; i < GC_PER_THREAD; i++)
        if (store_job_insert(p->st, make_job("noop", JOB_QUEUED), slot_cb, &p->slots[i]) != 0) p->failed_queue++;
    return NULL;
}

struct reader_arg {
    struct store *st;
    atomic_bool stop;
    atomic_int reads, errors; /* shared by the reader threads */
};

/* Reads while the writer writes: WAL readers must neither block nor fail. */
static void *reader_main(void *arg)
{
    struct reader_arg *r = arg;
    while (!atomic_load(&r->stop)) {
        int64_t counts[JOB_STATUS_COUNT];
        struct job **jobs = NULL;
        size_t n = 0;
        char next[ID_LEN + 1];
        struct store_filter f = {.limit = 20};
        if (store_count_by_status(r->st, counts) != 0) atomic_fetch_add(&r->errors, 1);
        if (store_job_list(r->st, &f, &jobs, &n, next) != 0) atomic_fetch_add(&r->errors, 1);
        store_jobs_free(jobs, n);
        atomic_fetch_add(&r->reads, 1);
    }
    return NULL;
}

static void test_group_commit_batches_concurrent_inserts(void)
{
    struct tmp t;
    tmp_make(&t, "store");
    struct store *st = open_at(t.db);
    struct slot *slots = calloc(GC_THREADS * GC_PER_THREAD, sizeof *slots);
    pthread_t th[GC_THREADS], rth[2];
    struct producer p[GC_THREADS];
    struct reader_arg ra = {.st = st};
    for (int i = 0; i < 2; i++) pthread_create(&rth[i], NULL, reader_main, &ra);

    int64_t t0 = clock_mono_ns();
    for (int i = 0; i < GC_THREADS; i++) {
        p[i] = (struct producer){.st = st, .slots = slots + i * GC_PER_THREAD};
        pthread_create(&th[i], NULL, producer_main, &p[i]);
    }
    for (int i = 0; i < GC_THREADS; i++) pthread_join(th[i], NULL);
    store_sync(st);
    int64_t dt = clock_mono_ns() - t0;
    atomic_store(&ra.stop, true);
    for (int i = 0; i < 2; i++) pthread_join(rth[i], NULL);

    int total = GC_THREADS * GC_PER_THREAD, once = 0, ok = 0;
    for (int i = 0; i < total; i++) {
        once += atomic_load(&slots[i].calls) == 1;
        ok += atomic_load(&slots[i].rc) == 0;
    }
    for (int i = 0; i < GC_THREADS; i++) CHECK_EQ_INT(p[i].failed_queue, 0);
    CHECK_EQ_INT(once, total);
    CHECK_EQ_INT(ok, total);
    int64_t counts[JOB_STATUS_COUNT];
    CHECK_EQ_INT(store_count_by_status(st, counts), 0);
    CHECK_EQ_INT(counts[JOB_QUEUED], total);
    CHECK_EQ_INT(atomic_load(&ra.errors), 0);
    struct store_stats s;
    store_get_stats(st, &s);
    CHECK_EQ_INT(s.ops, total);
    CHECK_EQ_INT(s.failed_ops, 0);
    CHECK_EQ_INT(s.queued, 0);
    CHECK(s.commits * 4 < (uint64_t)total); /* batched, not one commit per op */
    printf("# group commit: %d inserts from %d threads in %.1f ms (%.0f ops/s), %llu commits,"
           " max batch %llu, %.1f ms in transactions, %d concurrent reads\n",
           total, GC_THREADS, dt / 1e6, total / (dt / 1e9), (unsigned long long)s.commits,
           (unsigned long long)s.max_batch, s.commit_ns_sum / 1e6, atomic_load(&ra.reads));
    store_close(st);

    /* all of it survives a reopen */
    st = open_at(t.db);
    CHECK_EQ_INT(store_count_by_status(st, counts), 0);
    CHECK_EQ_INT(counts[JOB_QUEUED], total);
    store_close(st);
    free(slots);
    tmp_remove(&t);
}

/* Insert, start, finish: the three writes of a job's life, timed. */
static void test_lifecycle_throughput(void)
{
    enum { N = 20000 };
    struct tmp t;
    tmp_make(&t, "store");
    struct store *st = open_at(t.db);
    struct job **jobs = calloc(N, sizeof *jobs);
    for (int i = 0; i < N; i++) jobs[i] = make_job("noop", JOB_QUEUED);
    int64_t t0 = clock_mono_ns();
    int fails = 0;
    for (int i = 0; i < N; i++) {
        fails += store_job_insert(st, job_dup(jobs[i]), NULL, NULL) != 0;
        if (i >= 100) { /* a window of jobs in flight, as a dispatcher would have */
            struct job *j = jobs[i - 100];
            j->status = JOB_RUNNING;
            j->attempt = 1;
            j->started_at_ms = clock_wall_ms();
            job_set_str(&j->worker_thread, "thread-0");
            fails += store_job_update(st, job_dup(j), NULL, NULL) != 0;
            j->status = JOB_SUCCEEDED;
            j->finished_at_ms = j->started_at_ms + 1;
            job_set_str(&j->result, "null");
            fails += store_job_update(st, job_dup(j), NULL, NULL) != 0;
        }
    }
    for (int i = N - 100; i < N; i++) {
        jobs[i]->status = JOB_SUCCEEDED;
        fails += store_job_update(st, job_dup(jobs[i]), NULL, NULL) != 0;
    }
    store_sync(st);
    int64_t dt = clock_mono_ns() - t0;
    CHECK_EQ_INT(fails, 0);
    int64_t counts[JOB_STATUS_COUNT];
    CHECK_EQ_INT(store_count_by_status(st, counts), 0);
    CHECK_EQ_INT(counts[JOB_SUCCEEDED], N);
    struct store_stats s;
    store_get_stats(st, &s);
    CHECK_EQ_INT(s.failed_ops, 0);
    printf("# lifecycles: %d jobs (insert+2 updates) in %.1f ms = %.0f lifecycles/s, %llu commits,"
           " max batch %llu, %.1f ms in transactions\n",
           N, dt / 1e6, N / (dt / 1e9), (unsigned long long)s.commits, (unsigned long long)s.max_batch,
           s.commit_ns_sum / 1e6);
    for (int i = 0; i < N; i++) job_free(jobs[i]);
    free(jobs);
    store_close(st);
    tmp_remove(&t);
}

static void test_close_commits_queued_ops_and_calls_back(void)
{
    enum { N = 100 };
    struct tmp t;
    tmp_make(&t, "store");
    struct store *st = open_at(t.db);
    struct slot slots[N];
    memset(slots, 0, sizeof slots);
    for (int i = 0; i < N; i++) atomic_store(&slots[i].rc, 1);
    store__debug_pause(st, true); /* the writer takes nothing: all N are still queued at close */
    for (int i = 0; i < N; i++) CHECK_EQ_INT(store_job_insert(st, make_job("noop", JOB_QUEUED), slot_cb, &slots[i]), 0);
    struct store_stats s;
    store_get_stats(st, &s);
    CHECK_EQ_INT(s.queued, N);
    store_close(st);
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(atomic_load(&slots[i].calls), 1);
        CHECK_EQ_INT(atomic_load(&slots[i].rc), 0);
    }
    st = open_at(t.db);
    int64_t counts[JOB_STATUS_COUNT];
    CHECK_EQ_INT(store_count_by_status(st, counts), 0);
    CHECK_EQ_INT(counts[JOB_QUEUED], N);
    store_close(st);
    tmp_remove(&t);
}

/* A callback that queues a follow-up write, as the dispatcher does. */
struct chain {
    struct store *st;
    atomic_int calls;
    atomic_int follow_rc;
};

static void chain_cb(void *ctx, int rc, struct job *job)
{
    struct chain *c = ctx;
    job->status = JOB_RUNNING;
    atomic_store(&c->follow_rc, store_job_update(c->st, job, NULL, NULL)); /* job moved */
    atomic_fetch_add(&c->calls, 1);
}

static void test_writes_after_close_began_are_refused(void)
{
    struct tmp t;
    tmp_make(&t, "store");
    struct store *st = open_at(t.db);
    struct chain c = {.st = st};
    store__debug_pause(st, true);
    CHECK_EQ_INT(store_job_insert(st, make_job("noop", JOB_QUEUED), chain_cb, &c), 0);
    store_close(st); /* the callback runs during close: its write is refused, its job freed */
    CHECK_EQ_INT(atomic_load(&c.calls), 1);
    CHECK_EQ_INT(atomic_load(&c.follow_rc), -ESHUTDOWN);
    tmp_remove(&t); /* LeakSanitizer checks the refused job was freed */
}

static void hook_disk_full(void *ctx, sqlite3 *db)
{
    (void)ctx;
    /* max_page_count cannot go below the current size: this freezes it */
    sqlite3_exec(db, "PRAGMA max_page_count = 1", NULL, NULL, NULL);
}

static void hook_disk_ok(void *ctx, sqlite3 *db)
{
    (void)ctx;
    sqlite3_exec(db, "PRAGMA max_page_count = 1073741823", NULL, NULL, NULL);
}

static struct job *make_big_job(void)
{
    struct job *j = make_job("echo", JOB_QUEUED);
    size_t n = 300 * 1024;
    char *args = malloc(n + 16);
    memcpy(args, "{\"pad\":\"", 8);
    memset(args + 8, 'x', n);
    memcpy(args + 8 + n, "\"}", 3);
    free(j->args);
    j->args = args;
    return j;
}

static void test_disk_full_fails_the_batch_then_recovers(void)
{
    struct tmp t;
    tmp_make(&t, "store");
    struct store *st = open_at(t.db);
    struct job *first = make_job("noop", JOB_QUEUED);
    CHECK_EQ_INT(insert_sync(st, first), 0);
    struct store_stats before, after;
    store_get_stats(st, &before);

    store__debug_set_batch_hook(st, hook_disk_full, NULL);
    store__debug_pause(st, true);
    struct done d[3] = {{0}};
    struct job *small = make_job("noop", JOB_QUEUED), *big = make_big_job();
    char small_id[ID_LEN + 1], big_id[ID_LEN + 1];
    memcpy(small_id, small->id, sizeof small_id);
    memcpy(big_id, big->id, sizeof big_id);
    first->status = JOB_RUNNING;
    CHECK_EQ_INT(store_job_insert(st, small, done_keep, &d[0]), 0);
    CHECK_EQ_INT(store_job_update(st, job_dup(first), done_keep, &d[1]), 0);
    CHECK_EQ_INT(store_job_insert(st, big, done_keep, &d[2]), 0);
    store__debug_pause(st, false);
    store_sync(st);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(atomic_load(&d[i].calls), 1);
        CHECK_EQ_INT(d[i].rc, -ENOSPC); /* the whole batch, small writes included */
        CHECK(d[i].job != NULL);
    }
    store_get_stats(st, &after);
    CHECK_EQ_INT(after.commits, before.commits);
    CHECK_EQ_INT(after.failed_ops - before.failed_ops, 3);
    struct job *g = NULL;
    CHECK_EQ_INT(store_job_get(st, small_id, &g), -ENOENT);
    CHECK_EQ_INT(store_job_get(st, first->id, &g), 0);
    CHECK(g && g->status == JOB_QUEUED); /* the update was rolled back */
    job_free(g);

    /* space is back: the same writes now succeed, without reopening */
    store__debug_set_batch_hook(st, hook_disk_ok, NULL);
    for (int i = 0; i < 3; i++) {
        struct job *again = d[i].job;
        d[i].job = NULL;
        CHECK_EQ_INT(i == 1 ? store_job_update(st, again, done_keep, &d[i]) : store_job_insert(st, again, done_keep, &d[i]), 0);
    }
    store_sync(st);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(atomic_load(&d[i].calls), 2);
        CHECK_EQ_INT(d[i].rc, 0);
        done_clear(&d[i]);
    }
    CHECK_EQ_INT(store_job_get(st, big_id, &g), 0);
    CHECK(g && strlen(g->args) > 300 * 1024);
    job_free(g);
    CHECK_EQ_INT(store_job_get(st, first->id, &g), 0);
    CHECK(g && g->status == JOB_RUNNING);
    job_free(g);
    store_close(st);
    job_free(first);
    tmp_remove(&t);
}

/* Two updates of one job in one batch: only the last is executed (it writes
 * every column), both callbacks run once with rc 0, and the row holds the last. */
static void test_updates_of_one_job_in_a_batch_are_coalesced(void)
{
    struct tmp t;
    tmp_make(&t, "store");
    struct store *st = open_at(t.db);
    struct job *j = make_job("echo", JOB_QUEUED);
    struct done d0 = {0};
    CHECK_EQ_INT(store_job_insert(st, job_dup(j), done_keep, &d0), 0);
    store_sync(st);
    CHECK_EQ_INT(d0.rc, 0);
    done_clear(&d0);

    struct job *running = job_dup(j), *finished = job_dup(j), *other = make_job("echo", JOB_QUEUED);
    running->status = JOB_RUNNING;
    running->attempt = 1;
    running->started_at_ms = 1000;
    job_set_str(&running->worker_thread, "thread-0");
    finished->status = JOB_SUCCEEDED;
    finished->attempt = 1;
    finished->started_at_ms = 1000;
    finished->finished_at_ms = 2000;
    job_set_str(&finished->result, "42");
    job_set_str(&finished->worker_thread, "thread-0");
    CHECK_EQ_INT(store_job_insert(st, job_dup(other), NULL, NULL), 0);
    store_sync(st);
    struct job *other_done = job_dup(other);
    other_done->status = JOB_FAILED;
    other_done->error_type = JOB_ERR_TASK;
    job_set_str(&other_done->error_message, "boom");

    store__debug_pause(st, true);
    struct done d[3] = {{0}};
    CHECK_EQ_INT(store_job_update(st, running, done_keep, &d[0]), 0);
    CHECK_EQ_INT(store_job_update(st, other_done, done_keep, &d[1]), 0);
    CHECK_EQ_INT(store_job_update(st, finished, done_keep, &d[2]), 0);
    store__debug_pause(st, false);
    store_sync(st);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(atomic_load(&d[i].calls), 1);
        CHECK_EQ_INT(d[i].rc, 0);
        done_clear(&d[i]);
    }
    struct job *g = NULL;
    CHECK_EQ_INT(store_job_get(st, j->id, &g), 0);
    CHECK(g && g->status == JOB_SUCCEEDED);
    CHECK_EQ_STR(g ? g->result : NULL, "42");
    CHECK_EQ_INT(g ? g->finished_at_ms : 0, 2000);
    job_free(g);
    CHECK_EQ_INT(store_job_get(st, other->id, &g), 0);
    CHECK(g && g->status == JOB_FAILED);
    job_free(g);
    /* A superseded update of a missing job shares the later one's -ENOENT. */
    struct job *ghost = make_job("echo", JOB_RUNNING), *ghost2 = NULL;
    ghost2 = job_dup(ghost);
    ghost2->status = JOB_SUCCEEDED;
    store__debug_pause(st, true);
    CHECK_EQ_INT(store_job_update(st, ghost, done_keep, &d[0]), 0);
    CHECK_EQ_INT(store_job_update(st, ghost2, done_keep, &d[1]), 0);
    store__debug_pause(st, false);
    store_sync(st);
    CHECK_EQ_INT(d[0].rc, -ENOENT);
    CHECK_EQ_INT(d[1].rc, -ENOENT);
    done_clear(&d[0]);
    done_clear(&d[1]);
    store_close(st);
    job_free(j);
    job_free(other);
    tmp_remove(&t);
}

int main(void)
{
    log_init(LOG_LEVEL_OFF, LOG_FORMAT_TEXT);
    RUN(test_open_creates_dirs_schema_and_version);
    RUN(test_reopen_is_idempotent_and_keeps_data);
    RUN(test_newer_schema_is_refused);
    RUN(test_non_database_file_is_refused);
    RUN(test_foreign_sqlite_database_is_refused);
    RUN(test_invalid_options_are_refused);
    RUN(test_unwritable_location_is_refused);
    RUN(test_insert_get_roundtrips_every_field);
    RUN(test_update_writes_mutable_fields);
    RUN(test_progress_is_saved_only_while_running);
    RUN(test_delete_terminal_not_terminal_and_missing);
    RUN(test_duplicate_idempotency_key_fails_only_that_op);
    RUN(test_updates_of_one_job_in_a_batch_are_coalesced);
    RUN(test_list_order_filters_and_pagination);
    RUN(test_count_by_status);
    RUN(test_recover_requeues_or_fails_running_jobs);
    RUN(test_scan_pending_oldest_first);
    RUN(test_group_commit_batches_concurrent_inserts);
    RUN(test_lifecycle_throughput);
    RUN(test_close_commits_queued_ops_and_calls_back);
    RUN(test_writes_after_close_began_are_refused);
    RUN(test_disk_full_fails_the_batch_then_recovers);
    return harness_finish();
}
