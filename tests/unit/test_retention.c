/* test_retention.c - retention: the store's prune batches (storage/store_prune.c)
 * and the core's retention thread (core/retention.c).
 *
 * Jobs are written with explicit times: ids made with id_make() at their
 * creation time, so "old" jobs are old to the index walk too, exactly as
 * they would be after days of service. Every test works in its own mkdtemp
 * directory. A failed transaction is injected through the store's batch hook
 * (a second connection holds the write lock while the writer's busy timeout
 * is 0), never by timing.
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
#include "../../core/core_int.h"
#include "../../storage/store.h"
#include "../../storage/store_int.h"
#include "../../tasks/task.h"
#include "harness.h"
#include "tmpdir.h"

#define SEC 1000LL
#define DAY (86400 * SEC)

/* ---- helpers ------------------------------------------------------------------ */

static struct store *open_at(const char *path)
{
    struct store_options opt = {.path = path};
    struct store *st = NULL;
    CHECK_EQ_INT(store_open(&opt, &st), 0);
    if (!st) abort();
    return st;
}

static uint64_t g_rnd; /* makes ids of one millisecond distinct; test thread only */

/* Queues the insert of a job created at created_ms (its id says so too) and,
 * when finished_ms is not 0, finished then. The id goes to id_out when not NULL. */
static void put_job(struct store *st, enum job_status status, int64_t created_ms, int64_t finished_ms, char *id_out)
{
    struct job *j = job_new();
    uint8_t rnd[10] = {0};
    if (!j) abort();
    g_rnd++;
    for (int i = 0; i < 8; i++) rnd[9 - i] = (uint8_t)(g_rnd >> (8 * i));
    id_make(created_ms, rnd, j->id);
    if (job_set_str(&j->task, "noop")) abort();
    j->status = status;
    j->attempt = 1;
    j->max_attempts = 1;
    j->created_at_ms = j->scheduled_at_ms = created_ms;
    if (status == JOB_RUNNING || job_status_terminal(status)) j->started_at_ms = created_ms;
    j->finished_at_ms = finished_ms;
    if (id_out) memcpy(id_out, j->id, ID_LEN + 1);
    CHECK_EQ_INT(store_job_insert(st, j, NULL, NULL), 0);
}

static bool exists(struct store *st, const char *id)
{
    struct job *j = NULL;
    int rc = store_job_get(st, id, &j);
    job_free(j);
    CHECK(rc == 0 || rc == -ENOENT);
    return rc == 0;
}

static int64_t count_of(struct store *st, enum job_status s)
{
    int64_t counts[JOB_STATUS_COUNT] = {0};
    CHECK_EQ_INT(store_count_by_status(st, counts), 0);
    return counts[s];
}

/* Begins a pass: succeeded jobs finished before ok_cutoff go, failed and
 * cancelled ones before bad_cutoff (0 = keep). */
static void pass_begin(struct store_prune *p, int64_t ok_cutoff, int64_t bad_cutoff, int limit)
{
    memset(p, 0, sizeof *p);
    p->cutoff_ms[JOB_SUCCEEDED] = ok_cutoff;
    p->cutoff_ms[JOB_FAILED] = p->cutoff_ms[JOB_CANCELLED] = bad_cutoff;
    p->limit = limit;
}

/* Runs batches to the end of the pass; adds what they deleted to total. Returns the number of batches. */
static int pass_run(struct store *st, struct store_prune *p, int64_t total[JOB_STATUS_COUNT])
{
    int batches = 0;
    do {
        int rc = store_prune_batch(st, p);
        CHECK_EQ_INT(rc, 0);
        if (rc) break;
        batches++;
        for (int s = 0; s < JOB_STATUS_COUNT; s++) total[s] += p->deleted[s];
    } while (!p->done && batches < 1000);
    return batches;
}

/* ---- the prune op ----------------------------------------------------------------- */

static void test_prunes_only_terminal_jobs_past_their_cutoff(void)
{
    struct tmp t;
    tmp_make(&t, "retention");
    struct store *st = open_at(t.db);
    int64_t now = clock_wall_ms(), old = now - 10 * DAY;
    char sched[ID_LEN + 1], queued[ID_LEN + 1], running[ID_LEN + 1], ok_old[ID_LEN + 1], ok_new[ID_LEN + 1],
        failed_old[ID_LEN + 1], cancelled_old[ID_LEN + 1], ok_null[ID_LEN + 1];
    put_job(st, JOB_SCHEDULED, old, 0, sched);
    put_job(st, JOB_QUEUED, old, 0, queued);
    put_job(st, JOB_RUNNING, old, 0, running);
    put_job(st, JOB_SUCCEEDED, old, old + SEC, ok_old);
    put_job(st, JOB_SUCCEEDED, old, now - SEC, ok_new); /* created long ago, finished just now */
    put_job(st, JOB_FAILED, old, old + SEC, failed_old);
    put_job(st, JOB_CANCELLED, old, old + SEC, cancelled_old);
    put_job(st, JOB_SUCCEEDED, old, 0, ok_null); /* no finished_at: counts as finished when created */
    store_sync(st);

    struct store_prune p;
    int64_t total[JOB_STATUS_COUNT] = {0};
    pass_begin(&p, now - DAY, now - DAY, 0);
    pass_run(st, &p, total);
    CHECK(p.done);
    CHECK_EQ_INT(p.limit, 0); /* the caller's setting is handed back */
    CHECK_EQ_INT(total[JOB_SUCCEEDED], 2);
    CHECK_EQ_INT(total[JOB_FAILED], 1);
    CHECK_EQ_INT(total[JOB_CANCELLED], 1);
    CHECK_EQ_INT(total[JOB_SCHEDULED] + total[JOB_QUEUED] + total[JOB_RUNNING], 0);
    CHECK(exists(st, sched));
    CHECK(exists(st, queued));
    CHECK(exists(st, running));
    CHECK(exists(st, ok_new));
    CHECK(!exists(st, ok_old));
    CHECK(!exists(st, ok_null));
    CHECK(!exists(st, failed_old));
    CHECK(!exists(st, cancelled_old));

    /* A second pass finds nothing more. */
    memset(total, 0, sizeof total);
    pass_begin(&p, now - DAY, now - DAY, 0);
    pass_run(st, &p, total);
    CHECK_EQ_INT(total[JOB_SUCCEEDED] + total[JOB_FAILED] + total[JOB_CANCELLED], 0);
    store_close(st);
    tmp_remove(&t);
}

static void test_failed_cutoff_is_separate_and_zero_keeps_forever(void)
{
    struct tmp t;
    tmp_make(&t, "retention");
    struct store *st = open_at(t.db);
    int64_t now = clock_wall_ms();
    char ok_2d[ID_LEN + 1], failed_2d[ID_LEN + 1], cancelled_2d[ID_LEN + 1], failed_40d[ID_LEN + 1];
    put_job(st, JOB_SUCCEEDED, now - 2 * DAY, now - 2 * DAY, ok_2d);
    put_job(st, JOB_FAILED, now - 2 * DAY, now - 2 * DAY, failed_2d);
    put_job(st, JOB_CANCELLED, now - 2 * DAY, now - 2 * DAY, cancelled_2d);
    put_job(st, JOB_FAILED, now - 40 * DAY, now - 40 * DAY, failed_40d);
    store_sync(st);

    /* succeeded kept 1 day, failed and cancelled 30 days */
    struct store_prune p;
    int64_t total[JOB_STATUS_COUNT] = {0};
    pass_begin(&p, now - DAY, now - 30 * DAY, 0);
    pass_run(st, &p, total);
    CHECK_EQ_INT(total[JOB_SUCCEEDED], 1);
    CHECK_EQ_INT(total[JOB_FAILED], 1);
    CHECK_EQ_INT(total[JOB_CANCELLED], 0);
    CHECK(!exists(st, ok_2d));
    CHECK(exists(st, failed_2d));
    CHECK(exists(st, cancelled_2d));
    CHECK(!exists(st, failed_40d));

    /* cutoff 0: failed and cancelled kept forever, however old */
    memset(total, 0, sizeof total);
    put_job(st, JOB_SUCCEEDED, now - 400 * DAY, now - 400 * DAY, ok_2d);
    store_sync(st);
    pass_begin(&p, now - DAY, 0, 0);
    pass_run(st, &p, total);
    CHECK(p.done);
    CHECK_EQ_INT(total[JOB_SUCCEEDED], 1);
    CHECK_EQ_INT(total[JOB_FAILED] + total[JOB_CANCELLED], 0);
    CHECK(exists(st, failed_2d));
    CHECK(exists(st, cancelled_2d));

    /* every cutoff 0: nothing to do, done at once */
    pass_begin(&p, 0, 0, 0);
    CHECK_EQ_INT(store_prune_batch(st, &p), 0);
    CHECK(p.done);
    CHECK_EQ_INT(p.examined, 0);
    CHECK_EQ_INT(count_of(st, JOB_FAILED), 1);
    CHECK_EQ_INT(count_of(st, JOB_CANCELLED), 1);
    store_close(st);
    tmp_remove(&t);
}

static void test_batch_limit_bounds_each_batch(void)
{
    struct tmp t;
    tmp_make(&t, "retention");
    struct store *st = open_at(t.db);
    int64_t now = clock_wall_ms(), old = now - 10 * DAY;
    for (int i = 0; i < 1100; i++) put_job(st, JOB_SUCCEEDED, old + i, old + i + 5, NULL);
    for (int i = 0; i < 150; i++) put_job(st, JOB_FAILED, old + i, old + i + 5, NULL);
    for (int i = 0; i < 10; i++) put_job(st, JOB_SUCCEEDED, now - 1000 + i, now - 500 + i, NULL); /* young */
    store_sync(st);

    struct store_prune p;
    pass_begin(&p, now - DAY, now - DAY, 500);
    int64_t expect_ok[] = {500, 500, 100}, expect_failed[] = {0, 0, 150};
    for (int b = 0; b < 3; b++) {
        CHECK_EQ_INT(store_prune_batch(st, &p), 0);
        CHECK_EQ_INT(p.deleted[JOB_SUCCEEDED], expect_ok[b]);
        CHECK_EQ_INT(p.deleted[JOB_FAILED], expect_failed[b]);
        CHECK(p.examined <= 500);
        CHECK_EQ_INT(p.done, b == 2);
    }
    /* the third batch: 100 succeeded ends that range, then 150 failed and 0 cancelled */
    CHECK_EQ_INT(p.examined, 250);
    CHECK_EQ_INT(count_of(st, JOB_SUCCEEDED), 10);
    CHECK_EQ_INT(count_of(st, JOB_FAILED), 0);

    /* limit 1: one index entry per batch; the young jobs lie past the cutoff
     * id, so they cost nothing */
    put_job(st, JOB_CANCELLED, old, old + 1, NULL);
    put_job(st, JOB_CANCELLED, old + 1, old + 2, NULL);
    store_sync(st);
    pass_begin(&p, now - DAY, now - DAY, 1);
    for (int b = 0; b < 3; b++) {
        CHECK_EQ_INT(store_prune_batch(st, &p), 0);
        CHECK_EQ_INT(p.examined, b < 2 ? 1 : 0);
        CHECK_EQ_INT(p.deleted[JOB_CANCELLED], b < 2 ? 1 : 0);
        CHECK_EQ_INT(p.done, b == 2);
    }
    CHECK_EQ_INT(count_of(st, JOB_SUCCEEDED), 10);
    store_close(st);
    tmp_remove(&t);
}

/* A job created before the cutoff but finished after it is stepped over by
 * the cursor, not re-read forever; the jobs behind it are still reached. */
static void test_cursor_steps_over_jobs_that_finished_late(void)
{
    struct tmp t;
    tmp_make(&t, "retention");
    struct store *st = open_at(t.db);
    int64_t now = clock_wall_ms();
    char late[ID_LEN + 1], behind[ID_LEN + 1];
    put_job(st, JOB_SUCCEEDED, now - 10 * DAY, now - 1 * SEC, late); /* ran (or waited) for days */
    put_job(st, JOB_SUCCEEDED, now - 9 * DAY, now - 9 * DAY, behind);
    store_sync(st);

    struct store_prune p;
    pass_begin(&p, now - DAY, 0, 1);
    CHECK_EQ_INT(store_prune_batch(st, &p), 0);
    CHECK_EQ_INT(p.examined, 1);
    CHECK_EQ_INT(p.deleted[JOB_SUCCEEDED], 0);
    CHECK_EQ_STR(p.after[JOB_SUCCEEDED], late);
    CHECK(!p.done);
    CHECK_EQ_INT(store_prune_batch(st, &p), 0);
    CHECK_EQ_INT(p.deleted[JOB_SUCCEEDED], 1);
    CHECK_EQ_INT(store_prune_batch(st, &p), 0);
    CHECK_EQ_INT(p.examined, 0);
    CHECK(p.done);
    CHECK(exists(st, late));
    CHECK(!exists(st, behind));

    /* once its own time comes, a later pass takes it */
    int64_t total[JOB_STATUS_COUNT] = {0};
    pass_begin(&p, now, 0, 0);
    pass_run(st, &p, total);
    CHECK_EQ_INT(total[JOB_SUCCEEDED], 1);
    CHECK(!exists(st, late));
    store_close(st);
    tmp_remove(&t);
}

/* ---- a failed transaction --------------------------------------------------------- */

static sqlite3 *g_locker; /* holds the write lock while set (test thread opens, hook only reads) */

static void hook_no_wait(void *ctx, sqlite3 *db)
{
    (void)ctx;
    sqlite3_busy_timeout(db, 0);
}

static void hook_wait_again(void *ctx, sqlite3 *db)
{
    (void)ctx;
    sqlite3_busy_timeout(db, 5000);
}

static void test_rolled_back_batch_changes_nothing(void)
{
    struct tmp t;
    tmp_make(&t, "retention");
    struct store *st = open_at(t.db);
    int64_t now = clock_wall_ms();
    char id[ID_LEN + 1];
    put_job(st, JOB_SUCCEEDED, now - 10 * DAY, now - 10 * DAY, id);
    store_sync(st);

    CHECK_EQ_INT(sqlite3_open(t.db, &g_locker), SQLITE_OK);
    CHECK_EQ_INT(sqlite3_exec(g_locker, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    store__debug_set_batch_hook(st, hook_no_wait, NULL);
    struct store_prune p, before;
    pass_begin(&p, now - DAY, now - DAY, 0);
    strcpy(p.after[JOB_FAILED], "0"); /* a cursor of the caller's, kept as is */
    before = p;
    CHECK_EQ_INT(store_prune_batch(st, &p), -EBUSY);
    CHECK(memcmp(&p, &before, sizeof p) == 0);

    CHECK_EQ_INT(sqlite3_exec(g_locker, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    CHECK_EQ_INT(sqlite3_close(g_locker), SQLITE_OK);
    g_locker = NULL;
    store__debug_set_batch_hook(st, hook_wait_again, NULL);
    CHECK(exists(st, id));
    p.after[JOB_FAILED][0] = '\0';
    CHECK_EQ_INT(store_prune_batch(st, &p), 0);
    CHECK_EQ_INT(p.deleted[JOB_SUCCEEDED], 1);
    CHECK(!exists(st, id));
    store__debug_set_batch_hook(st, NULL, NULL);
    store_close(st);
    tmp_remove(&t);
}

static void test_invalid_arguments_are_refused(void)
{
    struct tmp t;
    tmp_make(&t, "retention");
    struct store *st = open_at(t.db);
    struct store_prune p;
    pass_begin(&p, 1, 1, -1);
    CHECK_EQ_INT(store_prune_batch(st, &p), -EINVAL);
    pass_begin(&p, 1, 1, 10001);
    CHECK_EQ_INT(store_prune_batch(st, &p), -EINVAL);
    pass_begin(&p, -5, 0, 0);
    CHECK_EQ_INT(store_prune_batch(st, &p), -EINVAL);
    pass_begin(&p, 1, 1, 0);
    p.cutoff_ms[JOB_QUEUED] = 1; /* only finished jobs are ever pruned */
    CHECK_EQ_INT(store_prune_batch(st, &p), -EINVAL);
    store_close(st);
    tmp_remove(&t);
}

/* The index walk is what the batch limit relies on: no full scan. */
static void test_scan_uses_the_status_index(void)
{
    struct tmp t;
    tmp_make(&t, "retention");
    struct store *st = open_at(t.db);
    store_close(st);
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    char plan[512] = "";
    CHECK_EQ_INT(sqlite3_open(t.db, &db), SQLITE_OK);
    CHECK_EQ_INT(sqlite3_prepare_v2(db,
                                    "EXPLAIN QUERY PLAN SELECT id, COALESCE(finished_at_ms, created_at_ms) FROM jobs "
                                    "INDEXED BY jobs_status WHERE status = ?1 AND id > ?2 AND id < ?3 ORDER BY id "
                                    "LIMIT ?4",
                                    -1, &s, NULL),
                 SQLITE_OK);
    while (s && sqlite3_step(s) == SQLITE_ROW) {
        size_t n = strlen(plan);
        snprintf(plan + n, sizeof plan - n, "%s;", (const char *)sqlite3_column_text(s, 3));
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    bool ok = strstr(plan, "USING INDEX jobs_status (status=? AND id>? AND id<?)") != NULL &&
              strstr(plan, "TEMP B-TREE") == NULL; /* no sort: the index gives id order */
    CHECK(ok);
    if (!ok) fprintf(stderr, "    plan: %s\n", plan);
    tmp_remove(&t);
}

/* ---- the core's retention thread -------------------------------------------------- */

static struct task_registry *g_reg;

static const struct core_executor_config k_exec[] = {
    {.name = "w", .kind = TASK_KIND_THREAD, .size = 1, .max_queued = 100},
};

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int64_t stats_count(struct core *c, enum job_status s)
{
    struct core_stats cs;
    core_get_stats(c, &cs);
    return cs.counts[s];
}

static void test_core_thread_prunes_and_keeps_counts_true(void)
{
    struct tmp t;
    tmp_make(&t, "retention");
    struct store *st = open_at(t.db);
    int64_t now = clock_wall_ms();
    for (int i = 0; i < 700; i++) put_job(st, JOB_SUCCEEDED, now - 10 * DAY + i, now - 10 * DAY + i, NULL);
    for (int i = 0; i < 3; i++) put_job(st, JOB_FAILED, now - 10 * DAY, now - 10 * DAY, NULL);
    for (int i = 0; i < 4; i++) put_job(st, JOB_SUCCEEDED, now - 1000, now - 500, NULL);
    store_sync(st);

    struct core *c = NULL;
    struct core_options co = {.executors = k_exec,
                              .n_executors = 1,
                              .tasks = g_reg,
                              .store = st,
                              .retention_ms = DAY,
                              .retention_failed_ms = 0, /* failed kept forever */
                              .prune_interval_ms = 20};
    CHECK_EQ_INT(core_open(&co, &c), 0);
    if (!c) abort();
    CHECK_EQ_INT(stats_count(c, JOB_SUCCEEDED), 704);
    int64_t deadline = clock_mono_ms() + 10000;
    while (stats_count(c, JOB_SUCCEEDED) != 4 && clock_mono_ms() < deadline) sleep_ms(10);
    CHECK_EQ_INT(stats_count(c, JOB_SUCCEEDED), 4);
    CHECK_EQ_INT(stats_count(c, JOB_FAILED), 3);
    CHECK_EQ_INT(count_of(st, JOB_SUCCEEDED), 4);
    CHECK_EQ_INT(count_of(st, JOB_FAILED), 3);
    core_drain(c, 0); /* stops the thread; then nothing more is pruned */
    core_close(c);
    store_close(st);
    tmp_remove(&t);
}

static void test_core_without_retention_prunes_nothing(void)
{
    struct tmp t;
    tmp_make(&t, "retention");
    struct store *st = open_at(t.db);
    int64_t now = clock_wall_ms();
    put_job(st, JOB_SUCCEEDED, now - 1000 * DAY, now - 1000 * DAY, NULL);
    store_sync(st);
    struct core *c = NULL;
    struct core_options co = {.executors = k_exec, .n_executors = 1, .tasks = g_reg, .store = st,
                              .prune_interval_ms = 1};
    CHECK_EQ_INT(core_open(&co, &c), 0);
    if (!c) abort();
    CHECK(!c->retention.started); /* no thread at all */
    sleep_ms(50); /* had a thread started, 1 ms passes would have pruned by now */
    core_close(c);
    CHECK_EQ_INT(count_of(st, JOB_SUCCEEDED), 1);
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
    RUN(test_prunes_only_terminal_jobs_past_their_cutoff);
    RUN(test_failed_cutoff_is_separate_and_zero_keeps_forever);
    RUN(test_batch_limit_bounds_each_batch);
    RUN(test_cursor_steps_over_jobs_that_finished_late);
    RUN(test_rolled_back_batch_changes_nothing);
    RUN(test_invalid_arguments_are_refused);
    RUN(test_scan_uses_the_status_index);
    RUN(test_core_thread_prunes_and_keeps_counts_true);
    RUN(test_core_without_retention_prunes_nothing);
    task_registry_free(g_reg);
    return harness_finish();
}
