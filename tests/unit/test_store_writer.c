/* test_store_writer.c - how the writer schedules its work
 * (storage/store_writer.c, store_finish.c):
 *  - a queue holding only job starts (running updates, progress) waits up to
 *    linger_us for one more op, so that a fast job's start and end share one
 *    commit; anything else - an insert, an end, store_sync, store_close - is
 *    never held back;
 *  - callbacks run on the writer when nothing else waits, else on the
 *    finisher, and either way in queue order.
 *
 * A long linger (60 s) makes every check independent of timing: what should
 * commit at once does so long before it, and what should wait cannot miss it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../common/clock.h"
#include "../../common/id.h"
#include "../../common/job.h"
#include "../../common/log.h"
#include "../../storage/store.h"
#include "../../storage/store_int.h"
#include "harness.h"
#include "tmpdir.h"

#define LONG_LINGER_US 60000000L

static struct store *open_linger(const char *path, long linger_us)
{
    struct store_options opt = {.path = path, .linger_us = linger_us};
    struct store *st = NULL;
    CHECK_EQ_INT(store_open(&opt, &st), 0);
    return st;
}

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

static void update_to(struct store *st, const struct job *j, enum job_status s)
{
    struct job *c = job_dup(j);
    c->status = s;
    if (s == JOB_RUNNING) c->started_at_ms = clock_wall_ms();
    if (job_status_terminal(s)) c->finished_at_ms = clock_wall_ms();
    CHECK_EQ_INT(store_job_update(st, c, NULL, NULL), 0);
}

static void count_done(void *ctx, int rc, struct job *job)
{
    atomic_int *n = ctx;
    job_free(job);
    if (rc == 0) atomic_fetch_add(n, 1);
}

static struct store_stats stats_of(struct store *st)
{
    struct store_stats s;
    store_get_stats(st, &s);
    return s;
}

static enum job_status status_in_db(struct store *st, const char *id)
{
    struct job *j = NULL;
    CHECK_EQ_INT(store_job_get(st, id, &j), 0);
    enum job_status s = j ? j->status : JOB_QUEUED;
    job_free(j);
    return s;
}

/* Sleeps `ms`: a poll interval, or the window in which a writer that did
 * not linger would have committed long before. */
static void pass_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {}
}

static void test_a_start_waits_for_the_jobs_end_and_both_share_one_commit(void)
{
    struct tmp t;
    tmp_make(&t, "linger-share");
    struct store *st = open_linger(t.db, LONG_LINGER_US);
    struct job *j = make_job();
    CHECK_EQ_INT(store_job_insert(st, job_dup(j), NULL, NULL), 0);
    store_sync(st); /* an insert never lingers: this returns at once */
    struct store_stats before = stats_of(st);

    update_to(st, j, JOB_RUNNING);
    pass_ms(200);
    struct store_stats mid = stats_of(st);
    CHECK_EQ_INT(mid.commits, before.commits); /* still waiting for more */
    CHECK_EQ_INT(mid.queued, 1);
    CHECK_EQ_INT(status_in_db(st, j->id), JOB_QUEUED);

    atomic_int ended = 0;
    struct job *end = job_dup(j);
    end->status = JOB_SUCCEEDED;
    end->finished_at_ms = clock_wall_ms();
    CHECK_EQ_INT(store_job_update(st, end, count_done, &ended), 0);
    int64_t t0 = clock_mono_ms();
    while (atomic_load(&ended) == 0 && clock_mono_ms() - t0 < 30000) pass_ms(1);
    CHECK_EQ_INT(atomic_load(&ended), 1);
    CHECK(clock_mono_ms() - t0 < 30000); /* the end did not wait out the linger */
    struct store_stats after = stats_of(st);
    CHECK_EQ_INT(after.commits, before.commits + 1);
    CHECK_EQ_INT(after.last_batch, 2);
    CHECK_EQ_INT(status_in_db(st, j->id), JOB_SUCCEEDED);
    uint64_t oldest, latest;
    store_events_range(st, &oldest, &latest);
    CHECK_EQ_INT(latest, 3); /* queued, running, succeeded: the start's event is kept */
    store_close(st);
    job_free(j);
    tmp_remove(&t);
}

static void test_sync_and_close_end_the_linger(void)
{
    struct tmp t;
    tmp_make(&t, "linger-sync");
    struct store *st = open_linger(t.db, LONG_LINGER_US);
    struct job *j = make_job();
    CHECK_EQ_INT(store_job_insert(st, job_dup(j), NULL, NULL), 0);
    store_sync(st);
    int64_t t0 = clock_mono_ms();
    update_to(st, j, JOB_RUNNING);
    store_sync(st); /* commits the lingering start now */
    CHECK(clock_mono_ms() - t0 < 30000);
    CHECK_EQ_INT(status_in_db(st, j->id), JOB_RUNNING);
    CHECK_EQ_INT(stats_of(st).queued, 0);

    /* progress is a start too; close commits it without waiting */
    CHECK_EQ_INT(store_job_progress(st, j->id, 0.5, "half"), 0);
    t0 = clock_mono_ms();
    store_close(st);
    CHECK(clock_mono_ms() - t0 < 30000);
    st = open_linger(t.db, -1);
    struct job *r = NULL;
    CHECK_EQ_INT(store_job_get(st, j->id, &r), 0);
    CHECK(r && r->status == JOB_RUNNING && r->progress_fraction == 0.5);
    job_free(r);
    store_close(st);
    job_free(j);
    tmp_remove(&t);
}

/* Commits a job's insert, queues its start alone and waits (deadline 30 s)
 * for the writer to commit it by itself; returns the stats after. */
static struct store_stats start_alone(const char *name, long linger_us, enum job_status *in_db)
{
    struct tmp t;
    tmp_make(&t, name);
    struct store *st = open_linger(t.db, linger_us);
    struct job *j = make_job();
    CHECK_EQ_INT(store_job_insert(st, job_dup(j), NULL, NULL), 0);
    store_sync(st);
    uint64_t commits = stats_of(st).commits;
    update_to(st, j, JOB_RUNNING);
    /* no store_sync (it would end a linger): wait for the writer itself */
    int64_t t0 = clock_mono_ms();
    while (stats_of(st).commits == commits && clock_mono_ms() - t0 < 30000) pass_ms(1);
    struct store_stats after = stats_of(st);
    CHECK_EQ_INT(after.commits, commits + 1);
    *in_db = status_in_db(st, j->id);
    store_close(st);
    job_free(j);
    tmp_remove(&t);
    return after;
}

static void test_a_start_alone_commits_after_the_default_linger(void)
{
    enum job_status s;
    struct store_stats after = start_alone("linger-default", 0, &s); /* 500 us */
    CHECK_EQ_INT(after.last_batch, 1);
    CHECK_EQ_INT(s, JOB_RUNNING);
}

static void test_without_linger_a_start_commits_alone(void)
{
    enum job_status s;
    struct store_stats after = start_alone("linger-off", -1, &s);
    CHECK_EQ_INT(after.last_batch, 1);
    CHECK_EQ_INT(s, JOB_RUNNING);
}

/* ---- where callbacks run ------------------------------------------------ */

#define N_ORDERED 200

struct order {
    atomic_int n;
    int seen[N_ORDERED];
    char thread[N_ORDERED][16];
};

struct order_ctx {
    struct order *o;
    int i;
};

static void record_order(void *ctx, int rc, struct job *job)
{
    struct order_ctx *c = ctx;
    int k = atomic_fetch_add(&c->o->n, 1);
    if (k < N_ORDERED) {
        c->o->seen[k] = rc == 0 ? c->i : -1;
        pthread_getname_np(pthread_self(), c->o->thread[k], sizeof c->o->thread[k]);
    }
    job_free(job);
    free(c);
}

static void insert_recorded(struct store *st, struct order *o, int i)
{
    struct order_ctx *c = malloc(sizeof *c);
    if (!c) abort();
    *c = (struct order_ctx){.o = o, .i = i};
    CHECK_EQ_INT(store_job_insert(st, make_job(), record_order, c), 0);
}

static void test_a_quiet_store_runs_callbacks_on_the_writer(void)
{
    struct tmp t;
    tmp_make(&t, "writer-inline");
    struct store *st = open_linger(t.db, -1);
    struct order *o = calloc(1, sizeof *o);
    insert_recorded(st, o, 0);
    store_sync(st);
    insert_recorded(st, o, 1);
    store_sync(st);
    CHECK_EQ_INT(atomic_load(&o->n), 2);
    CHECK(o->seen[0] == 0 && o->seen[1] == 1);
    CHECK_EQ_STR(o->thread[0], "jobd-store");
    CHECK_EQ_STR(o->thread[1], "jobd-store");
    store_close(st);
    free(o);
    tmp_remove(&t);
}

static void test_a_busy_store_hands_callbacks_to_the_finisher_in_order(void)
{
    struct tmp t;
    tmp_make(&t, "writer-finisher");
    struct store_options opt = {.path = t.db, .max_batch = 1, .linger_us = -1};
    struct store *st = NULL;
    CHECK_EQ_INT(store_open(&opt, &st), 0);
    struct order *o = calloc(1, sizeof *o);
    store__debug_pause(st, true); /* all queued first: every commit finds more waiting */
    for (int i = 0; i < N_ORDERED; i++) insert_recorded(st, o, i);
    store__debug_pause(st, false);
    store_sync(st);
    CHECK_EQ_INT(atomic_load(&o->n), N_ORDERED);
    int in_order = 0, on_finisher = 0;
    for (int i = 0; i < N_ORDERED; i++) {
        in_order += o->seen[i] == i;
        on_finisher += strcmp(o->thread[i], "jobd-store-cb") == 0;
    }
    CHECK_EQ_INT(in_order, N_ORDERED);
    CHECK_EQ_STR(o->thread[0], "jobd-store-cb"); /* 199 ops were waiting behind it */
    CHECK(on_finisher >= 1);
    store_close(st);
    free(o);
    tmp_remove(&t);
}

int main(void)
{
    log_init(LOG_LEVEL_OFF, LOG_FORMAT_TEXT);
    RUN(test_a_start_waits_for_the_jobs_end_and_both_share_one_commit);
    RUN(test_sync_and_close_end_the_linger);
    RUN(test_a_start_alone_commits_after_the_default_linger);
    RUN(test_without_linger_a_start_commits_alone);
    RUN(test_a_quiet_store_runs_callbacks_on_the_writer);
    RUN(test_a_busy_store_hands_callbacks_to_the_finisher_in_order);
    return harness_finish();
}
