/* test_store_events.c - storage/store_events.c: the event log (one event per
 * state change, in the job's transaction, gapless seqs, bounded, resumable),
 * batches (all or nothing, finished by their last job), deliveries (queued
 * with a job's end, recorded), and recovery's events.
 *
 * Callbacks run on the writer thread and only record; tests check after
 * store_sync(). Batching is forced with store__debug_pause, never by timing.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/clock.h"
#include "../../common/id.h"
#include "../../common/job.h"
#include "../../common/log.h"
#include "../../storage/store.h"
#include "../../storage/store_int.h"
#include "harness.h"
#include "tmpdir.h"

#define MAX_SEEN 4096

/* Every event the store announced after a commit. */
struct seen {
    int n;
    uint64_t seq[MAX_SEEN];
    char type[MAX_SEEN][8];
    char job[MAX_SEEN][ID_LEN + 1];
    char status[MAX_SEEN][16];
};

static void on_event(void *ctx, const struct store_event *ev)
{
    struct seen *s = ctx;
    if (s->n >= MAX_SEEN) return;
    s->seq[s->n] = ev->seq;
    snprintf(s->type[s->n], sizeof s->type[0], "%s", ev->type);
    snprintf(s->job[s->n], sizeof s->job[0], "%s", ev->job_id);
    const char *st = strstr(ev->data, "\"status\":\"");
    snprintf(s->status[s->n], sizeof s->status[0], "%.*s", st ? (int)strcspn(st + 10, "\"") : 0, st ? st + 10 : "");
    s->n++;
}

static struct store *open_at(const char *path, long event_log)
{
    struct store_options opt = {.path = path, .event_log = event_log};
    struct store *st = NULL;
    CHECK_EQ_INT(store_open(&opt, &st), 0);
    return st;
}

static struct job *make_job(const char *task, enum job_status status)
{
    struct job *j = job_new();
    if (!j) abort();
    id_new(j->id);
    if (job_set_str(&j->task, task)) abort();
    j->status = status;
    j->created_at_ms = j->scheduled_at_ms = clock_wall_ms();
    return j;
}

struct bdone {
    atomic_int calls;
    int rc;
    size_t n;
};

static void batch_cb(void *ctx, int rc, struct job **jobs, size_t n)
{
    struct bdone *d = ctx;
    d->rc = rc;
    d->n = n;
    for (size_t i = 0; i < n; i++) job_free(jobs[i]);
    free(jobs);
    atomic_fetch_add(&d->calls, 1);
}

static void update_to(struct store *st, const struct job *j, enum job_status s)
{
    struct job *c = job_dup(j);
    c->status = s;
    if (job_status_terminal(s)) c->finished_at_ms = clock_wall_ms();
    CHECK_EQ_INT(store_job_update(st, c, NULL, NULL), 0);
}

struct readback {
    int n;
    uint64_t seq[64];
};

static void on_read(void *ctx, const struct store_event *ev)
{
    struct readback *r = ctx;
    if (r->n < 64) r->seq[r->n++] = ev->seq;
}

/* ---- the log ------------------------------------------------------------------ */

static void test_every_state_change_is_one_event_in_order(void)
{
    struct tmp t;
    tmp_make(&t, "events");
    struct store *st = open_at(t.db, 0);
    struct seen *s = calloc(1, sizeof *s);
    store_set_event_cb(st, on_event, s);
    struct job *j = make_job("noop", JOB_QUEUED);
    /* running and succeeded in one transaction: the row update of "running" is
     * coalesced away, its event is not. */
    store__debug_pause(st, true);
    CHECK_EQ_INT(store_job_insert(st, job_dup(j), NULL, NULL), 0);
    update_to(st, j, JOB_RUNNING);
    update_to(st, j, JOB_SUCCEEDED);
    store__debug_pause(st, false);
    store_sync(st);
    CHECK_EQ_INT(s->n, 3);
    CHECK_EQ_STR(s->status[0], "queued");
    CHECK_EQ_STR(s->status[1], "running");
    CHECK_EQ_STR(s->status[2], "succeeded");
    CHECK(s->seq[0] == 1 && s->seq[1] == 2 && s->seq[2] == 3);
    CHECK_EQ_STR(s->job[2], j->id);
    uint64_t oldest, latest;
    store_events_range(st, &oldest, &latest);
    CHECK(oldest == 1 && latest == 3);
    struct readback r = {0};
    CHECK_EQ_INT(store_events_read(st, 1, 10, on_read, &r), 2);
    CHECK(r.seq[0] == 2 && r.seq[1] == 3);
    store_close(st);

    /* Seqs go on after a restart: never reused. */
    st = open_at(t.db, 0);
    s->n = 0;
    store_set_event_cb(st, on_event, s);
    update_to(st, j, JOB_FAILED); /* any update is a change */
    store_sync(st);
    CHECK_EQ_INT(s->n, 1);
    CHECK(s->seq[0] == 4);
    store_close(st);
    free(s);
    job_free(j);
    tmp_remove(&t);
}

static void test_failed_write_announces_nothing(void)
{
    struct tmp t;
    tmp_make(&t, "events-fail");
    struct store *st = open_at(t.db, 0);
    struct seen *s = calloc(1, sizeof *s);
    store_set_event_cb(st, on_event, s);
    struct job *ghost = make_job("noop", JOB_RUNNING); /* never inserted: -ENOENT */
    update_to(st, ghost, JOB_RUNNING);
    struct job *j = make_job("noop", JOB_QUEUED);
    CHECK_EQ_INT(store_job_insert(st, job_dup(j), NULL, NULL), 0);
    store_sync(st);
    CHECK_EQ_INT(s->n, 1); /* only the insert */
    CHECK(s->seq[0] == 1); /* and no seq was spent on the failed update */
    store_close(st);
    free(s);
    job_free(ghost);
    job_free(j);
    tmp_remove(&t);
}

static void hook_full(void *ctx, sqlite3 *db)
{
    (void)ctx;
    /* max_page_count cannot go below the current size: this freezes it */
    sqlite3_exec(db, "PRAGMA max_page_count = 1", NULL, NULL, NULL);
}

static void hook_room(void *ctx, sqlite3 *db)
{
    (void)ctx;
    sqlite3_exec(db, "PRAGMA max_page_count = 1073741823", NULL, NULL, NULL);
}

/* A transaction that rolls back (disk full) announces none of its events:
 * they were never committed, and their seqs are given to later events. A
 * bug published them, so a live stream saw ids twice after a disk full. */
static void test_rolled_back_transaction_announces_nothing(void)
{
    struct tmp t;
    tmp_make(&t, "events-rollback");
    struct store *st = open_at(t.db, 0);
    struct seen *s = calloc(1, sizeof *s);
    store_set_event_cb(st, on_event, s);
    store__debug_set_batch_hook(st, hook_full, NULL);
    /* One batch: a small insert that fits in the pages there are (its event
     * row is written), then big ones that need new pages and fail it. */
    store__debug_pause(st, true);
    struct job *small = make_job("noop", JOB_QUEUED);
    CHECK_EQ_INT(store_job_insert(st, small, NULL, NULL), 0);
    for (int i = 0; i < 3; i++) {
        struct job *j = make_job("echo", JOB_QUEUED);
        char *args = malloc(64 * 1024);
        memset(args, 'x', 64 * 1024 - 1);
        memcpy(args, "{\"p\":\"", 6);
        memcpy(args + 64 * 1024 - 3, "\"}", 3);
        free(j->args);
        j->args = args;
        CHECK_EQ_INT(store_job_insert(st, j, NULL, NULL), 0);
    }
    store__debug_pause(st, false);
    store_sync(st);
    struct store_stats stats;
    store_get_stats(st, &stats);
    CHECK(stats.failed_ops == 4); /* the whole batch rolled back */
    CHECK_EQ_INT(s->n, 0);
    store__debug_set_batch_hook(st, hook_room, NULL);
    struct job *j = make_job("noop", JOB_QUEUED);
    CHECK_EQ_INT(store_job_insert(st, j, NULL, NULL), 0);
    store_sync(st);
    CHECK_EQ_INT(s->n, 1);
    CHECK(s->seq[0] == 1); /* the first event that was committed */
    store_close(st);
    free(s);
    tmp_remove(&t);
}

/* Event rows are written 16 at a time (one multi-row INSERT) and the rest
 * at the commit; a batch op that fails in the middle of a transaction
 * (here: a job id that exists) undoes its own events only. Every event of
 * the transaction's other ops is announced and stored, seqs gapless. */
static void test_events_in_chunks_survive_a_failed_batch_op_in_their_transaction(void)
{
    struct tmp t;
    tmp_make(&t, "events-chunks");
    struct store *st = open_at(t.db, 0);
    struct seen *s = calloc(1, sizeof *s);
    store_set_event_cb(st, on_event, s);
    char ids[26][ID_LEN + 1];
    store__debug_pause(st, true); /* one transaction for all of it */
    for (int i = 0; i < 20; i++) {
        struct job *j = make_job("noop", JOB_QUEUED);
        memcpy(ids[i], j->id, sizeof ids[i]);
        CHECK_EQ_INT(store_job_insert(st, j, NULL, NULL), 0);
    }
    struct store_batch b = {.created_at_ms = clock_wall_ms()};
    id_new(b.id);
    struct job **jobs = calloc(3, sizeof *jobs);
    for (int i = 0; i < 3; i++) {
        jobs[i] = make_job("noop", JOB_QUEUED);
        job_set_str(&jobs[i]->batch_id, b.id);
    }
    memcpy(jobs[2]->id, ids[5], sizeof ids[5]); /* collides: the batch fails after 2 of its events */
    struct bdone d = {0};
    CHECK_EQ_INT(store_batch_insert(st, &b, jobs, 3, batch_cb, &d), 0);
    for (int i = 20; i < 26; i++) {
        struct job *j = make_job("noop", JOB_QUEUED);
        memcpy(ids[i], j->id, sizeof ids[i]);
        CHECK_EQ_INT(store_job_insert(st, j, NULL, NULL), 0);
    }
    store__debug_pause(st, false);
    store_sync(st);
    CHECK_EQ_INT(d.rc, -EEXIST);
    CHECK_EQ_INT(s->n, 26);
    for (int i = 0; i < s->n && i < 26; i++) {
        CHECK(s->seq[i] == (uint64_t)i + 1);
        CHECK_EQ_STR(s->job[i], ids[i]);
    }
    struct readback r = {0};
    CHECK_EQ_INT(store_events_read(st, 0, 64, on_read, &r), 26); /* how many it read */
    CHECK_EQ_INT(r.n, 26);
    for (int i = 0; i < r.n; i++) CHECK(r.seq[i] == (uint64_t)i + 1);
    store_close(st);
    free(s);
    tmp_remove(&t);
}

static void test_log_is_bounded_and_keeps_the_newest(void)
{
    struct tmp t;
    tmp_make(&t, "events-bound");
    struct store *st = open_at(t.db, 1000);
    for (int i = 0; i < 3000; i++) {
        struct job *j = make_job("noop", JOB_QUEUED);
        CHECK_EQ_INT(store_job_insert(st, j, NULL, NULL), 0);
    }
    store_sync(st);
    uint64_t oldest, latest;
    store_events_range(st, &oldest, &latest);
    CHECK(latest == 3000);
    CHECK(latest - oldest + 1 >= 1000);        /* keeps at least the bound */
    CHECK(latest - oldest + 1 <= 1000 + 1024); /* and trims past its slack */
    struct readback r = {0};
    CHECK_EQ_INT(store_events_read(st, 0, 1, on_read, &r), 1);
    CHECK(r.seq[0] == oldest); /* reading from before the log starts at its oldest */
    store_close(st);
    tmp_remove(&t);
}

/* ---- batches ------------------------------------------------------------------- */

static void test_batch_is_all_or_nothing_and_finishes_with_its_last_job(void)
{
    struct tmp t;
    tmp_make(&t, "batch");
    struct store *st = open_at(t.db, 0);
    struct seen *s = calloc(1, sizeof *s);
    store_set_event_cb(st, on_event, s);
    struct store_batch b = {.created_at_ms = clock_wall_ms(), .idempotency_key = "k1",
                            .callback_url = "http://127.0.0.1:9/cb"};
    id_new(b.id);
    struct job *copies[3];
    struct job **jobs = calloc(3, sizeof *jobs);
    for (int i = 0; i < 3; i++) {
        jobs[i] = make_job("noop", JOB_QUEUED);
        job_set_str(&jobs[i]->batch_id, b.id);
        copies[i] = job_dup(jobs[i]);
    }
    struct bdone d = {0};
    CHECK_EQ_INT(store_batch_insert(st, &b, jobs, 3, batch_cb, &d), 0);
    store_sync(st);
    CHECK_EQ_INT(d.rc, 0);
    CHECK_EQ_INT((int)d.n, 3);
    CHECK_EQ_INT(s->n, 3); /* one event per job */

    /* Same key again: refused whole, nothing written. */
    struct store_batch b2 = b;
    id_new(b2.id);
    struct job **jobs2 = calloc(1, sizeof *jobs2);
    jobs2[0] = make_job("noop", JOB_QUEUED);
    struct job *j2 = job_dup(jobs2[0]);
    struct bdone d2 = {0};
    CHECK_EQ_INT(store_batch_insert(st, &b2, jobs2, 1, batch_cb, &d2), 0);
    store_sync(st);
    CHECK_EQ_INT(d2.rc, -EEXIST);
    struct job *none = NULL;
    CHECK_EQ_INT(store_job_get(st, j2->id, &none), -ENOENT);
    CHECK_EQ_INT(s->n, 3);

    struct store_batch got;
    CHECK_EQ_INT(store_batch_get(st, b.id, false, &got), 0);
    CHECK(got.total == 3 && got.counts[JOB_QUEUED] == 3 && got.finished_at_ms == 0);
    store_batch_clear(&got);
    CHECK_EQ_INT(store_batch_get(st, "k1", true, &got), 0);
    CHECK_EQ_STR(got.id, b.id);
    store_batch_clear(&got);

    update_to(st, copies[0], JOB_SUCCEEDED);
    update_to(st, copies[1], JOB_FAILED);
    store_sync(st);
    CHECK_EQ_INT(store_batch_get(st, b.id, false, &got), 0);
    CHECK(got.finished_at_ms == 0);
    store_batch_clear(&got);
    update_to(st, copies[2], JOB_CANCELLED);
    store_sync(st);
    CHECK_EQ_INT(store_batch_get(st, b.id, false, &got), 0);
    CHECK(got.finished_at_ms > 0);
    CHECK(got.counts[JOB_SUCCEEDED] == 1 && got.counts[JOB_FAILED] == 1 && got.counts[JOB_CANCELLED] == 1);
    CHECK_EQ_STR(got.callback_status, "pending");
    store_batch_clear(&got);
    CHECK_EQ_STR(s->type[s->n - 1], "batch"); /* its end is an event too */
    struct store_delivery dl[4];
    CHECK_EQ_INT(store_deliveries_next(st, dl, 4), 1);
    CHECK_EQ_STR(dl[0].kind, "batch");
    CHECK_EQ_STR(dl[0].ref_id, b.id);

    /* Recorded delivered: the row goes, the status says so. */
    CHECK_EQ_INT(store_delivery_record(st, &dl[0], STORE_DELIVERY_DELIVERED, NULL, NULL, NULL), 0);
    store_sync(st);
    CHECK_EQ_INT(store_deliveries_next(st, dl, 4), 0);
    CHECK_EQ_INT(store_batch_get(st, b.id, false, &got), 0);
    CHECK_EQ_STR(got.callback_status, "delivered");
    store_batch_clear(&got);
    store_close(st);
    for (int i = 0; i < 3; i++) job_free(copies[i]);
    job_free(j2);
    free(s);
    tmp_remove(&t);
}

/* Makes a batch of n queued noops (committed); copies[i] are their jobs. */
static void make_batch(struct store *st, struct store_batch *b, struct job **copies, int n)
{
    *b = (struct store_batch){.created_at_ms = clock_wall_ms(), .callback_url = "http://127.0.0.1:9/cb"};
    id_new(b->id);
    struct job **jobs = calloc((size_t)n, sizeof *jobs);
    for (int i = 0; i < n; i++) {
        jobs[i] = make_job("noop", JOB_QUEUED);
        job_set_str(&jobs[i]->batch_id, b->id);
        copies[i] = job_dup(jobs[i]);
    }
    struct bdone d = {0};
    CHECK_EQ_INT(store_batch_insert(st, b, jobs, (size_t)n, batch_cb, &d), 0);
    store_sync(st);
    CHECK_EQ_INT(d.rc, 0);
}

static void test_batches_ending_in_one_transaction_finish_once_after_every_job_event(void)
{
    struct tmp t;
    tmp_make(&t, "batch-one-txn");
    struct store *st = open_at(t.db, 0);
    struct store_batch a, b;
    struct job *ja[4], *jb[3];
    make_batch(st, &a, ja, 4);
    make_batch(st, &b, jb, 3);
    struct job *other = make_job("noop", JOB_QUEUED);
    CHECK_EQ_INT(store_job_insert(st, job_dup(other), NULL, NULL), 0);
    store_sync(st);
    struct seen *s = calloc(1, sizeof *s);
    store_set_event_cb(st, on_event, s);

    /* One transaction: the jobs of both batches end, interleaved, one of
     * a's twice over (running, then its end), and an unrelated job last. */
    store__debug_pause(st, true);
    for (int i = 0; i < 4; i++) {
        if (i == 2) update_to(st, ja[i], JOB_RUNNING);
        update_to(st, ja[i], i == 3 ? JOB_FAILED : JOB_SUCCEEDED);
        if (i < 3) update_to(st, jb[i], JOB_CANCELLED);
    }
    update_to(st, other, JOB_RUNNING);
    store__debug_pause(st, false);
    store_sync(st);

    int batch_events = 0, jobs_after_batch = 0;
    for (int k = 0; k < s->n; k++) {
        if (strcmp(s->type[k], "batch") == 0) batch_events++;
        else if (batch_events) jobs_after_batch++;
        if (k) CHECK(s->seq[k] == s->seq[k - 1] + 1); /* announced in seq order, no gap */
    }
    CHECK_EQ_INT(s->n, 4 + 1 + 3 + 1 + 2); /* 8 job ends, a running, other's start, two batches */
    CHECK_EQ_INT(batch_events, 2);
    CHECK_EQ_INT(jobs_after_batch, 0); /* a batch ends after every job event of its transaction */
    struct store_batch got;
    CHECK_EQ_INT(store_batch_get(st, a.id, false, &got), 0);
    CHECK(got.finished_at_ms > 0 && got.counts[JOB_SUCCEEDED] == 3 && got.counts[JOB_FAILED] == 1);
    store_batch_clear(&got);
    CHECK_EQ_INT(store_batch_get(st, b.id, false, &got), 0);
    CHECK(got.finished_at_ms > 0 && got.counts[JOB_CANCELLED] == 3);
    store_batch_clear(&got);
    struct store_delivery dl[4];
    CHECK_EQ_INT(store_deliveries_next(st, dl, 4), 2); /* one callback per batch */

    /* A batch with a job still pending at COMMIT is not finished. */
    struct store_batch c;
    struct job *jc[2];
    make_batch(st, &c, jc, 2);
    store__debug_pause(st, true);
    update_to(st, jc[0], JOB_SUCCEEDED);
    update_to(st, jc[1], JOB_RUNNING);
    store__debug_pause(st, false);
    store_sync(st);
    CHECK_EQ_INT(store_batch_get(st, c.id, false, &got), 0);
    CHECK(got.finished_at_ms == 0);
    store_batch_clear(&got);
    update_to(st, jc[1], JOB_SUCCEEDED);
    store_sync(st);
    CHECK_EQ_INT(store_batch_get(st, c.id, false, &got), 0);
    CHECK(got.finished_at_ms > 0);
    store_batch_clear(&got);

    store_close(st);
    for (int i = 0; i < 4; i++) job_free(ja[i]);
    for (int i = 0; i < 3; i++) job_free(jb[i]);
    for (int i = 0; i < 2; i++) job_free(jc[i]);
    job_free(other);
    free(s);
    tmp_remove(&t);
}

/* ---- deliveries and recovery ----------------------------------------------------- */

static void test_job_end_queues_its_callback_and_retries_are_kept(void)
{
    struct tmp t;
    tmp_make(&t, "delivery");
    struct store *st = open_at(t.db, 0);
    struct job *j = make_job("noop", JOB_QUEUED);
    job_set_str(&j->callback_url, "http://127.0.0.1:9/x");
    CHECK_EQ_INT(store_job_insert(st, job_dup(j), NULL, NULL), 0);
    update_to(st, j, JOB_RUNNING);
    store_sync(st);
    struct store_delivery dl[2];
    CHECK_EQ_INT(store_deliveries_next(st, dl, 2), 0); /* not before its end */
    update_to(st, j, JOB_SUCCEEDED);
    store_sync(st);
    CHECK_EQ_INT(store_deliveries_next(st, dl, 2), 1);
    struct job *got = NULL;
    CHECK_EQ_INT(store_job_get(st, j->id, &got), 0);
    CHECK_EQ_STR(got->callback_status, "pending");
    job_free(got);
    dl[0].attempts = 1;
    dl[0].next_at_ms = clock_wall_ms() + 60000;
    CHECK_EQ_INT(store_delivery_record(st, &dl[0], STORE_DELIVERY_RETRY, "HTTP 500", NULL, NULL), 0);
    store_sync(st);
    store_close(st);
    /* A pending delivery survives a restart, with its attempts. */
    st = open_at(t.db, 0);
    CHECK_EQ_INT(store_deliveries_next(st, dl, 2), 1);
    CHECK_EQ_INT(dl[0].attempts, 1);
    CHECK_EQ_INT(store_delivery_record(st, &dl[0], STORE_DELIVERY_FAILED, "HTTP 500", NULL, NULL), 0);
    store_sync(st);
    CHECK_EQ_INT(store_job_get(st, j->id, &got), 0);
    CHECK_EQ_STR(got->callback_status, "failed");
    job_free(got);
    store_close(st);
    job_free(j);
    tmp_remove(&t);
}

static void test_recovery_announces_its_changes_and_keeps_the_attempt(void)
{
    struct tmp t;
    tmp_make(&t, "recover-events");
    struct store *st = open_at(t.db, 0);
    struct job *again = make_job("noop", JOB_QUEUED), *lost = make_job("noop", JOB_QUEUED);
    again->max_attempts = 2;
    CHECK_EQ_INT(store_job_insert(st, job_dup(again), NULL, NULL), 0);
    CHECK_EQ_INT(store_job_insert(st, job_dup(lost), NULL, NULL), 0);
    again->attempt = lost->attempt = 1;
    again->started_at_ms = lost->started_at_ms = clock_wall_ms();
    update_to(st, again, JOB_RUNNING);
    update_to(st, lost, JOB_RUNNING);
    store_sync(st);
    store_close(st);

    st = open_at(t.db, 0);
    struct seen *s = calloc(1, sizeof *s);
    store_set_event_cb(st, on_event, s);
    int requeued = 0, failed = 0;
    CHECK_EQ_INT(store_recover(st, clock_wall_ms(), &requeued, &failed), 0);
    CHECK(requeued == 1 && failed == 1);
    CHECK_EQ_INT(s->n, 2);
    struct job *g = NULL;
    CHECK_EQ_INT(store_job_get(st, lost->id, &g), 0);
    CHECK(g->status == JOB_FAILED && g->error_type == JOB_ERR_WORKER_LOST);
    CHECK(g->attempts && strstr(g->attempts, "worker_lost"));
    job_free(g);
    CHECK_EQ_INT(store_job_get(st, again->id, &g), 0);
    CHECK(g->status == JOB_QUEUED && g->error_type == JOB_ERR_NONE);
    CHECK(g->attempts && strstr(g->attempts, "worker_lost")); /* the lost attempt is in its history */
    job_free(g);
    store_close(st);
    free(s);
    job_free(again);
    job_free(lost);
    tmp_remove(&t);
}

int main(void)
{
    log_init(LOG_LEVEL_OFF, LOG_FORMAT_TEXT);
    RUN(test_every_state_change_is_one_event_in_order);
    RUN(test_failed_write_announces_nothing);
    RUN(test_rolled_back_transaction_announces_nothing);
    RUN(test_events_in_chunks_survive_a_failed_batch_op_in_their_transaction);
    RUN(test_log_is_bounded_and_keeps_the_newest);
    RUN(test_batch_is_all_or_nothing_and_finishes_with_its_last_job);
    RUN(test_batches_ending_in_one_transaction_finish_once_after_every_job_event);
    RUN(test_job_end_queues_its_callback_and_retries_are_kept);
    RUN(test_recovery_announces_its_changes_and_keeps_the_attempt);
    return harness_finish();
}
