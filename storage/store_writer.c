/* store_writer.c - the op queue and the writer thread (group commit).
 *
 * DESIGN. Every write is an op appended to one FIFO under q_lock. The writer
 * thread sleeps on q_wake while the FIFO is empty; when it is not, it unlinks
 * up to max_batch ops from the head under the lock, then, without the lock,
 * runs BEGIN IMMEDIATE, each op through a statement prepared once at open,
 * COMMIT, and hands the committed batch to the finisher thread (store_finish.c), which calls
 * each op's callback in queue order and frees the op. There is no batching
 * timer: while one batch commits (an fsync with synchronous=FULL), new ops
 * pile up and form the next, bigger batch, so the cost of a commit is shared
 * by however many ops arrived during the last one. The one wait: a queue of
 * job starts alone lingers up to linger_us for the next op (linger_for_more),
 * since nobody waits on a start and a fast job's end is microseconds behind.
 *
 * The finisher exists because the callbacks (resuming HTTP requests, handing
 * jobs to executors, waking waiters, publishing events) took about a third
 * of the writer's time: on the writer they delayed the next commit, on their
 * own thread they run while it happens. One finisher keeps commit order, so
 * callbacks still see every op in queue order. A callback may queue ops (it
 * never waits for them: store_sync refuses to run on either thread).
 *
 * Failures come in two kinds:
 *  - op-level: the statement failed or changed nothing, but the transaction
 *    is intact (insert hit a unique key: ON CONFLICT DO NOTHING changed 0 rows
 *    -> -EEXIST; update/delete of a missing row -> -ENOENT; delete of a job
 *    that is not terminal -> -EALREADY; a NOT NULL / CHECK violation, which
 *    SQLite undoes statement by statement -> -EINVAL). Only that op fails; the
 *    others of the batch commit.
 *  - transaction-level: SQLITE_FULL, SQLITE_IOERR, SQLITE_BUSY, ... during an
 *    op, BEGIN or COMMIT. The batch is rolled back and every op in it fails
 *    with the mapped errno (-ENOSPC, -EIO, -EBUSY). The writer keeps running:
 *    the next batch tries again, so the server recovers by itself once, say,
 *    disk space is back.
 *
 * store_sync needs no marker op: ops finish in FIFO order, so "everything
 * queued before me is done" is q_done >= the q_seq seen when sync was called.
 */
#include "store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../common/clock.h"
#include "../common/hash.h"
#include "../common/log.h"
#include "store_int.h"

static const char *const wst_sql[WST_COUNT] = {
    [WST_BEGIN] = "BEGIN IMMEDIATE",
    [WST_COMMIT] = "COMMIT",
    [WST_ROLLBACK] = "ROLLBACK",
    [WST_INSERT] = "INSERT INTO jobs (" STORE_JOB_COLUMNS ") VALUES ("
                   "?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, "
                   "?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29) "
                   /* any unique key (id, idempotency_key): insert nothing, and
                    * sqlite3_changes() tells. Keeps the transaction alive. */
                   "ON CONFLICT DO NOTHING",
    [WST_UPDATE] = "UPDATE jobs SET status = ?2, attempt = ?3, scheduled_at_ms = ?4, "
                   "started_at_ms = ?5, finished_at_ms = ?6, progress_fraction = ?7, "
                   "progress_message = ?8, result = ?9, error_type = ?10, error_message = ?11, "
                   "worker_pid = ?12, worker_thread = ?13, executor = ?14, callback_status = ?15, "
                   "attempts = ?16 "
                   "WHERE id = ?1",
    [WST_PROGRESS] = "UPDATE jobs SET progress_fraction = ?2, progress_message = ?3 "
                     "WHERE id = ?1 AND status = 'running'",
    /* OR, not IN: see the CHECK on status in store.c */
    [WST_DELETE] = "DELETE FROM jobs WHERE id = ?1 "
                   "AND (status = 'succeeded' OR status = 'failed' OR status = 'cancelled')",
    [WST_EXISTS] = "SELECT 1 FROM jobs WHERE id = ?1",
    [WST_RECOVER_SCAN] = "SELECT " STORE_JOB_COLUMNS " FROM jobs WHERE status = 'running'",
    [WST_EVENT_INSERT] = "INSERT INTO events (seq, type, job_id, batch_id, status, attempt, at_ms, error_type, data) "
                         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [WST_EVENT_TRIM] = "DELETE FROM events WHERE seq <= ?1",
    /* three probes of jobs_batch (batch_id, status) */
    [WST_BATCH_PENDING] = "SELECT 1 FROM jobs WHERE batch_id = ?1 AND (status = 'scheduled' OR "
                          "status = 'queued' OR status = 'running') LIMIT 1",
    [WST_BATCH_FINISH] = "UPDATE batches SET finished_at_ms = ?2, callback_status = CASE WHEN callback_url IS "
                         "NULL THEN NULL ELSE 'pending' END WHERE id = ?1 AND finished_at_ms IS NULL "
                         "RETURNING total, callback_url",
    [WST_BATCH_COUNTS] = "SELECT status, count(*) FROM jobs WHERE batch_id = ?1 GROUP BY status",
    [WST_BATCH_INSERT] = "INSERT INTO batches (id, total, created_at_ms, callback_url, idempotency_key) "
                         "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
    [WST_BATCH_UNFINISHED] = "SELECT id FROM batches WHERE finished_at_ms IS NULL",
    [WST_DELIVERY_INSERT] = "INSERT INTO deliveries (kind, ref_id, url, next_at_ms) VALUES (?1, ?2, ?3, ?4)",
    [WST_DELIVERY_DELETE] = "DELETE FROM deliveries WHERE id = ?1",
    [WST_DELIVERY_RETRY] = "UPDATE deliveries SET attempts = ?2, next_at_ms = ?3, last_error = ?4 WHERE id = ?1",
    [WST_CALLBACK_STATUS_JOB] = "UPDATE jobs SET callback_status = ?2 WHERE id = ?1",
    [WST_CALLBACK_STATUS_BATCH] = "UPDATE batches SET callback_status = ?2 WHERE id = ?1",
    [WST_SAVEPOINT] = "SAVEPOINT op",
    [WST_RELEASE] = "RELEASE op",
    [WST_ROLLBACK_TO] = "ROLLBACK TO op",
};

int store__writer_prepare(struct store *st)
{
    for (int i = 0; i < WST_COUNT; i++) {
        int ret = store__prepare(st->wdb, wst_sql[i], &st->wst[i]);
        if (ret) return ret;
    }
    int ret = store__events_prepare(st);
    return ret ? ret : store__prune_prepare(st);
}

void store__writer_finalize(struct store *st)
{
    for (int i = 0; i < WST_COUNT; i++) {
        sqlite3_finalize(st->wst[i]); /* accepts NULL; returns the last step's error only */
        st->wst[i] = NULL;
    }
    store__events_finalize(st);
    store__prune_finalize(st);
}

/* ---- binding: each helper does nothing once *rc holds an error ---------- */

/* Strings are bound SQLITE_STATIC: the op owns them until after the reset. */
static void bind_text(sqlite3_stmt *s, int col, const char *v, int *rc)
{
    if (*rc != SQLITE_OK) return;
    *rc = v ? sqlite3_bind_text(s, col + 1, v, -1, SQLITE_STATIC) : sqlite3_bind_null(s, col + 1);
}

static void bind_int(sqlite3_stmt *s, int col, int64_t v, int *rc)
{
    if (*rc != SQLITE_OK) return;
    *rc = sqlite3_bind_int64(s, col + 1, v);
}

/* A time or pid where 0 means "not yet": stored as NULL. */
static void bind_opt_int(sqlite3_stmt *s, int col, int64_t v, int *rc)
{
    if (*rc != SQLITE_OK) return;
    *rc = v ? sqlite3_bind_int64(s, col + 1, v) : sqlite3_bind_null(s, col + 1);
}

/* Progress: < 0 (none reported) is stored as NULL. */
static void bind_fraction(sqlite3_stmt *s, int col, double v, int *rc)
{
    if (*rc != SQLITE_OK) return;
    *rc = v >= 0 ? sqlite3_bind_double(s, col + 1, v) : sqlite3_bind_null(s, col + 1);
}

int store__bind_insert(sqlite3_stmt *s, const struct job *j)
{
    int rc = SQLITE_OK;
    bind_text(s, COL_ID, j->id, &rc);
    bind_text(s, COL_TASK, j->task, &rc);
    bind_text(s, COL_ARGS, j->args ? j->args : "{}", &rc);
    bind_text(s, COL_EXECUTOR, j->executor, &rc);
    bind_text(s, COL_STATUS, job_status_name(j->status), &rc);
    bind_int(s, COL_PRIORITY, j->priority, &rc);
    bind_int(s, COL_ATTEMPT, j->attempt, &rc);
    bind_int(s, COL_MAX_ATTEMPTS, j->max_attempts, &rc);
    bind_int(s, COL_TIMEOUT_MS, j->timeout_ms, &rc);
    bind_int(s, COL_RETRY_BACKOFF_MS, j->retry_backoff_ms, &rc);
    bind_int(s, COL_CREATED_AT_MS, j->created_at_ms, &rc);
    bind_opt_int(s, COL_SCHEDULED_AT_MS, j->scheduled_at_ms, &rc);
    bind_opt_int(s, COL_STARTED_AT_MS, j->started_at_ms, &rc);
    bind_opt_int(s, COL_FINISHED_AT_MS, j->finished_at_ms, &rc);
    bind_fraction(s, COL_PROGRESS_FRACTION, j->progress_fraction, &rc);
    bind_text(s, COL_PROGRESS_MESSAGE, j->progress_message, &rc);
    bind_text(s, COL_RESULT, j->result, &rc);
    bind_text(s, COL_ERROR_TYPE, job_error_type_name(j->error_type), &rc);
    bind_text(s, COL_ERROR_MESSAGE, j->error_message, &rc);
    bind_opt_int(s, COL_WORKER_PID, j->worker_pid, &rc);
    bind_text(s, COL_WORKER_THREAD, j->worker_thread, &rc);
    bind_text(s, COL_BATCH_ID, j->batch_id, &rc);
    bind_text(s, COL_DEPENDS_ON, j->depends_on ? j->depends_on : "[]", &rc);
    bind_text(s, COL_CONCURRENCY_KEY, j->concurrency_key, &rc);
    bind_int(s, COL_CONCURRENCY_LIMIT, j->concurrency_limit, &rc);
    bind_text(s, COL_IDEMPOTENCY_KEY, j->idempotency_key, &rc);
    bind_text(s, COL_CALLBACK_URL, j->callback_url, &rc);
    bind_text(s, COL_CALLBACK_STATUS, j->callback_status, &rc);
    bind_text(s, COL_ATTEMPTS, j->attempts, &rc);
    return rc;
}

/* Parameter positions of WST_UPDATE, 0-based like enum store_col. */
enum { UP_ID, UP_STATUS, UP_ATTEMPT, UP_SCHEDULED, UP_STARTED, UP_FINISHED, UP_FRACTION,
       UP_MESSAGE, UP_RESULT, UP_ERROR_TYPE, UP_ERROR_MESSAGE, UP_PID, UP_THREAD, UP_EXECUTOR,
       UP_CALLBACK_STATUS, UP_ATTEMPTS };

int store__bind_update(sqlite3_stmt *s, const struct job *j)
{
    int rc = SQLITE_OK;
    bind_text(s, UP_ID, j->id, &rc);
    bind_text(s, UP_STATUS, job_status_name(j->status), &rc);
    bind_int(s, UP_ATTEMPT, j->attempt, &rc);
    bind_opt_int(s, UP_SCHEDULED, j->scheduled_at_ms, &rc);
    bind_opt_int(s, UP_STARTED, j->started_at_ms, &rc);
    bind_opt_int(s, UP_FINISHED, j->finished_at_ms, &rc);
    bind_fraction(s, UP_FRACTION, j->progress_fraction, &rc);
    bind_text(s, UP_MESSAGE, j->progress_message, &rc);
    bind_text(s, UP_RESULT, j->result, &rc);
    bind_text(s, UP_ERROR_TYPE, job_error_type_name(j->error_type), &rc);
    bind_text(s, UP_ERROR_MESSAGE, j->error_message, &rc);
    bind_opt_int(s, UP_PID, j->worker_pid, &rc);
    bind_text(s, UP_THREAD, j->worker_thread, &rc);
    bind_text(s, UP_EXECUTOR, j->executor, &rc);
    bind_text(s, UP_CALLBACK_STATUS, j->callback_status, &rc);
    bind_text(s, UP_ATTEMPTS, j->attempts, &rc);
    return rc;
}

/* ---- running a batch (writer thread only) -------------------------------- */

/* Steps a bound statement once, logs a failure with SQLite's message, then
 * resets it and drops its bindings (which point into the op). Returns the
 * SQLite code of the step: SQLITE_DONE or SQLITE_ROW on success. */
int store__step_reset(struct store *st, sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        if ((rc & 0xff) == SQLITE_CONSTRAINT)
            LOG_WARN("store: write refused: %s", sqlite3_errmsg(st->wdb));
        else
            LOG_ERROR("store: write failed: %s (%s)", sqlite3_errmsg(st->wdb), sqlite3_errstr(rc));
    }
    /* reset repeats the step's error, already handled above */
    (void)sqlite3_reset(s);
    (void)sqlite3_clear_bindings(s);
    return rc;
}

/* True when a failed statement left the transaction usable: SQLite undid
 * that one statement and nothing else. */
bool store__error_is_local(sqlite3 *db, int rc)
{
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
    case SQLITE_TOOBIG:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
        return !sqlite3_get_autocommit(db);
    default:
        return false;
    }
}

/* Runs one op inside the open transaction. Sets op->rc to the op's own
 * outcome and returns 0, or returns a negative errno when the transaction
 * is lost (the caller rolls back the whole batch). */
static int op_exec(struct store *st, struct store_op *op)
{
    sqlite3 *db = st->wdb;
    sqlite3_stmt *s = NULL;
    int rc = SQLITE_OK, changes = 0;
    op->rc = 0;
    switch (op->kind) {
    case OP_PRUNE:
        return store__prune_exec(st, op->prune); /* its own statements */
    case OP_INSERT:
    case OP_UPDATE:
        return store__job_write(st, op, op->job, op->kind == OP_INSERT);
    case OP_RECOVER:
        return store__recover_exec(st, op);
    case OP_BATCH:
        return store__batch_exec(st, op);
    case OP_DELIVERY:
        return store__delivery_exec(st, op);
    case OP_PROGRESS:
        s = st->wst[WST_PROGRESS];
        bind_text(s, 0, op->id, &rc);
        bind_fraction(s, 1, op->fraction, &rc);
        bind_text(s, 2, op->message, &rc);
        break;
    case OP_DELETE:
        s = st->wst[WST_DELETE];
        bind_text(s, 0, op->id, &rc);
        break;
    }
    if (rc != SQLITE_OK) { /* binding touches no data: always the op's own failure */
        LOG_WARN("store: cannot bind op: %s", sqlite3_errstr(rc));
        (void)sqlite3_reset(s);
        (void)sqlite3_clear_bindings(s);
        op->rc = store__errno(rc);
        return 0;
    }
    rc = store__step_reset(st, s);
    if (rc != SQLITE_DONE) goto fail;
    changes = sqlite3_changes(db);
    if (op->kind == OP_DELETE && !changes) {
        s = st->wst[WST_EXISTS];
        rc = SQLITE_OK;
        bind_text(s, 0, op->id, &rc);
        if (rc == SQLITE_OK) rc = store__step_reset(st, s);
        if (rc == SQLITE_ROW)
            op->rc = -EALREADY;
        else if (rc == SQLITE_DONE)
            op->rc = -ENOENT;
        else
            goto fail;
    }
    /* OP_PROGRESS of a job not running (any more): nothing to do, by contract */
    return 0;
fail:
    if (store__error_is_local(db, rc)) {
        op->rc = store__errno(rc);
        return 0;
    }
    return store__errno(rc);
}

/* Runs the ops of `batch` (a NULL-terminated list) in one transaction and
 * sets each op's rc. Returns 0 when committed, else the transaction's errno
 * (every op's rc is then that errno). */
/* Marks each update that a later update of the same job in this batch
 * overwrites: an update writes every mutable column, so only the last one
 * matters. A fast job's "running" and final updates usually share a batch,
 * and this saves one statement (and its index changes) per job. Writer only;
 * without the table (out of memory) nothing is skipped. */
static void batch_dedup(struct store *st, struct store_op *batch)
{
    size_t cap = 1;
    while (cap < 2 * (size_t)st->max_batch) cap <<= 1;
    if (!st->dedup && !(st->dedup = calloc(cap, sizeof *st->dedup))) return;
    for (struct store_op *op = batch; op; op = op->next) {
        if (op->kind != OP_UPDATE) continue;
        size_t i = hash_str(op->job->id) & (cap - 1);
        while (st->dedup[i] && strcmp(st->dedup[i]->job->id, op->job->id) != 0) i = (i + 1) & (cap - 1);
        if (st->dedup[i]) st->dedup[i]->superseded_by = op;
        st->dedup[i] = op;
    }
    /* Clear only the slots used (the batch is at most max_batch ops). */
    for (struct store_op *op = batch; op; op = op->next) {
        if (op->kind != OP_UPDATE) continue;
        size_t i = hash_str(op->job->id) & (cap - 1);
        while (st->dedup[i]) {
            st->dedup[i] = NULL;
            i = (i + 1) & (cap - 1);
        }
    }
}

static int batch_commit(struct store *st, struct store_op *batch)
{
    int ret = 0;
    uint64_t seq0 = st->ev_seq, trimmed0 = st->ev_trimmed;
    int rc = store__step_reset(st, st->wst[WST_BEGIN]);
    if (rc != SQLITE_DONE) {
        ret = store__errno(rc);
        goto out;
    }
    batch_dedup(st, batch);
    struct store_op *tail = batch;
    for (struct store_op *op = batch; op; op = op->next) {
        /* A skipped update still writes its event: each state change is one. */
        ret = op->superseded_by ? store__event_write_only(st, op) : op_exec(st, op);
        if (ret) goto out;
        tail = op;
    }
    if ((ret = store__batches_finish(st, tail)) || (ret = store__events_flush(st)) ||
        (ret = store__events_trim(st)))
        goto out;
    /* A skipped update shares the fate of the one that overwrote it. */
    for (struct store_op *op = batch; op; op = op->next) {
        struct store_op *last = op->superseded_by;
        while (last && last->superseded_by) last = last->superseded_by;
        if (last) op->rc = last->rc;
    }
    rc = store__step_reset(st, st->wst[WST_COMMIT]);
    if (rc != SQLITE_DONE) ret = store__errno(rc);
out:
    if (ret) {
        /* After SQLITE_FULL/IOERR SQLite may already have rolled back. */
        if (!sqlite3_get_autocommit(st->wdb)) (void)store__step_reset(st, st->wst[WST_ROLLBACK]);
        LOG_ERROR("store: transaction rolled back: %s; its writes are reported failed",
                  strerror(-ret));
        /* Nothing of this batch was written: its events are not announced
         * (batch_finish skips seq 0) and their seqs go to later events. */
        for (struct store_op *op = batch; op; op = op->next) {
            op->rc = ret;
            for (struct store_evrec *e = op->events; e; e = e->next) e->seq = 0;
        }
        st->ev_seq = seq0;
        st->ev_npend = 0;
        st->bend_n = 0;
        st->ev_trimmed = trimmed0;
    } else {
        atomic_store(&st->ev_latest, st->ev_seq);
        atomic_store(&st->ev_oldest, st->ev_trimmed + 1);
    }
    return ret;
}

/* True when every queued op only records that a job is running (its start
 * or progress): nobody waits on those commits, and a fast job's end follows
 * its start within microseconds. Looks at no more than 64 ops. q_lock held. */
static bool queue_is_starts_only(const struct store *st)
{
    int n = 0;
    for (const struct store_op *op = st->q_head; op; op = op->next) {
        if (++n > 64) return false;
        if (op->kind == OP_PROGRESS) continue;
        if (op->kind != OP_UPDATE || op->job->status != JOB_RUNNING) return false;
    }
    return n > 0;
}

/* Waits up to st->linger_us (500 us by default) for one more op, q_lock
 * held. A queue of job starts alone would cost a commit - an fsync - of its
 * own, and the end of a fast job, queued microseconds later, a second one:
 * a submit-and-wait of a noop waited for three commits. Lingering puts the
 * start and the end in one commit (and batch_dedup writes the row once).
 * Any op ends the wait, so a busy server never lingers; so do closing, a
 * pause and store_sync. The start of a long job reaches the disk at most
 * linger_us later; nothing waits on it. */
static void linger_for_more(struct store *st)
{
    int64_t deadline_ns = clock_mono_ns() + (int64_t)st->linger_us * 1000; /* q_wake is CLOCK_MONOTONIC */
    struct timespec until = {.tv_sec = deadline_ns / 1000000000LL, .tv_nsec = deadline_ns % 1000000000LL};
    uint64_t seq = st->q_seq;
    while (!st->closing && !st->paused && !st->syncing && st->q_seq == seq)
        if (pthread_cond_timedwait(&st->q_wake, &st->q_lock, &until) == ETIMEDOUT) break;
}

static void *writer_main(void *arg)
{
    struct store *st = arg;
    pthread_setname_np(pthread_self(), "jobd-store");
    for (;;) {
        pthread_mutex_lock(&st->q_lock);
        while (!st->closing && (!st->q_head || st->paused)) pthread_cond_wait(&st->q_wake, &st->q_lock);
        if (st->linger_us > 0 && !st->closing && !st->syncing && queue_is_starts_only(st)) linger_for_more(st);
        if (st->paused && !st->closing) { /* paused while lingering: back to the top */
            pthread_mutex_unlock(&st->q_lock);
            continue;
        }
        struct store_op *batch = st->q_head, *last = st->q_head;
        uint64_t n = 0;
        if (batch) {
            if (st->q_len <= (uint64_t)st->max_batch) {
                last = st->q_tail; /* all of it: no walk over cache-cold ops under the lock */
                n = st->q_len;
            } else {
                n = 1;
                while (last->next && n < (uint64_t)st->max_batch) {
                    last = last->next;
                    n++;
                }
            }
            st->q_head = last->next;
            if (!st->q_head) st->q_tail = NULL;
            last->next = NULL;
            st->q_len -= n;
        }
        store_batch_hook_cb hook = st->hook;
        void *hook_ctx = st->hook_ctx;
        store_event_cb ecb = st->event_cb;
        void *ectx = st->event_ctx;
        pthread_mutex_unlock(&st->q_lock);
        if (!batch) break; /* closing, and nothing left */

        if (hook) hook(hook_ctx, st->wdb);
        int64_t t0 = clock_mono_ns();
        int rc = batch_commit(st, batch);
        batch->done = (struct store_batch_done){
            .n = n, .rc = rc, .dt_ns = clock_mono_ns() - t0, .ecb = ecb, .ectx = ectx};
        store__finisher_hand_off(st, batch);
    }
    return NULL;
}

int store__writer_start(struct store *st)
{
    int e = store__finisher_start(st);
    if (e) return e;
    e = pthread_create(&st->writer, NULL, writer_main, st);
    if (e) {
        LOG_ERROR("store: cannot start the writer thread: %s", strerror(e));
        return -ENOMEM;
    }
    st->writer_started = true;
    return 0;
}

void store__writer_stop(struct store *st)
{
    pthread_mutex_lock(&st->q_lock);
    st->closing = true;
    pthread_cond_broadcast(&st->q_wake);
    pthread_mutex_unlock(&st->q_lock);
    if (st->writer_started) {
        pthread_join(st->writer, NULL);
        st->writer_started = false;
    }
    store__finisher_stop(st); /* then the callbacks of what the writer committed last */
}

/* ---- queueing (any thread) ------------------------------------------------ */

/* Appends op to the FIFO. Returns 0, or -ESHUTDOWN when the store is closing
 * (the op stays the caller's). */
static int enqueue(struct store *st, struct store_op *op)
{
    int ret = 0;
    pthread_mutex_lock(&st->q_lock);
    if (st->closing) {
        ret = -ESHUTDOWN;
        goto out;
    }
    op->next = NULL;
    if (st->q_tail)
        st->q_tail->next = op;
    else
        st->q_head = op;
    st->q_tail = op;
    st->q_len++;
    st->q_seq++;
    pthread_cond_signal(&st->q_wake);
out:
    pthread_mutex_unlock(&st->q_lock);
    return ret;
}

int store__enqueue(struct store *st, struct store_op *op)
{
    return enqueue(st, op);
}

/* Queues an insert or update. On any error the job is freed and cb is not called. */
static int enqueue_job(struct store *st, enum store_op_kind kind, struct job *job, store_done_cb cb,
                       void *ctx)
{
    int ret = 0;
    struct store_op *op = NULL;
    if (!job || !id_valid(job->id) || (kind == OP_INSERT && !job->task)) {
        ret = -EINVAL;
        goto out;
    }
    if (!(op = calloc(1, sizeof *op))) {
        ret = -ENOMEM;
        goto out;
    }
    op->kind = kind;
    op->job = job;
    op->cb = cb;
    op->ctx = ctx;
    /* The event's text is made here, off the writer thread. */
    if (!(op->events = store__evrec_job(job))) {
        ret = -ENOMEM;
        goto out;
    }
    ret = enqueue(st, op);
out:
    if (ret) {
        job_free(job);
        if (op) store__evrecs_free(op->events);
        free(op);
    }
    return ret;
}

void store_set_event_cb(struct store *st, store_event_cb cb, void *ctx)
{
    pthread_mutex_lock(&st->q_lock);
    st->event_cb = cb;
    st->event_ctx = ctx;
    pthread_mutex_unlock(&st->q_lock);
    /* A batch taken before this carries the old listener to the finisher:
     * wait for it, so that the old one is never called after this returns. */
    if (!store__on_store_thread(st)) store_sync(st);
}

void store_events_range(struct store *st, uint64_t *oldest, uint64_t *latest)
{
    *latest = atomic_load(&st->ev_latest);
    *oldest = atomic_load(&st->ev_oldest);
}

void store_batch_clear(struct store_batch *b)
{
    if (!b) return;
    free(b->callback_url);
    free(b->callback_status);
    free(b->idempotency_key);
    b->callback_url = b->callback_status = b->idempotency_key = NULL;
}

int store_batch_insert(struct store *st, const struct store_batch *b, struct job **jobs, size_t n,
                       store_batch_done_cb cb, void *ctx)
{
    int ret = 0;
    struct store_op *op = calloc(1, sizeof *op);
    if (!op || !(op->batch = calloc(1, sizeof *op->batch))) {
        ret = -ENOMEM;
        goto out;
    }
    memcpy(op->batch->id, b->id, sizeof b->id);
    op->batch->total = (int64_t)n;
    op->batch->created_at_ms = b->created_at_ms;
    if (job_set_str(&op->batch->callback_url, b->callback_url) < 0 ||
        job_set_str(&op->batch->idempotency_key, b->idempotency_key) < 0) {
        ret = -ENOMEM;
        goto out;
    }
    /* One event per job, made here; the writer numbers them. */
    struct store_evrec **tail = &op->events;
    for (size_t i = 0; i < n; i++) {
        struct store_evrec *e = store__evrec_job(jobs[i]);
        if (!e) {
            ret = -ENOMEM;
            goto out;
        }
        memcpy(e->batch_id, b->id, ID_LEN + 1);
        *tail = e;
        tail = &e->next;
    }
    op->kind = OP_BATCH;
    op->jobs = jobs;
    op->n_jobs = n;
    op->bcb = cb;
    op->ctx = ctx;
    ret = enqueue(st, op);
out:
    if (ret) {
        for (size_t i = 0; i < n; i++) job_free(jobs[i]);
        free(jobs);
        if (op) {
            store__evrecs_free(op->events);
            store_batch_clear(op->batch);
            free(op->batch);
        }
        free(op);
    }
    return ret;
}

int store_delivery_record(struct store *st, const struct store_delivery *d, enum store_delivery_outcome outcome,
                          const char *last_error, store_delivery_done_cb done, void *ctx)
{
    int ret = 0;
    struct store_op *op = calloc(1, sizeof *op);
    if (!op || !(op->delivery = calloc(1, sizeof *op->delivery)) ||
        job_set_str(&op->delivery->last_error, last_error) < 0) {
        ret = -ENOMEM;
        goto out;
    }
    op->kind = OP_DELIVERY;
    op->delivery->d = *d;
    op->delivery->outcome = outcome;
    op->delivery->done = done;
    op->delivery->ctx = ctx;
    ret = enqueue(st, op);
out:
    if (ret && op) {
        if (op->delivery) free(op->delivery->last_error);
        free(op->delivery);
        free(op);
    }
    return ret;
}

int store_job_insert(struct store *st, struct job *job, store_done_cb cb, void *ctx)
{
    return enqueue_job(st, OP_INSERT, job, cb, ctx);
}

int store_job_update(struct store *st, struct job *job, store_done_cb cb, void *ctx)
{
    return enqueue_job(st, OP_UPDATE, job, cb, ctx);
}

int store_job_progress(struct store *st, const char *id, double fraction, const char *message)
{
    int ret = 0;
    struct store_op *op = NULL;
    if (!id || !id_valid(id)) {
        ret = -EINVAL;
        goto out;
    }
    if (!(op = calloc(1, sizeof *op)) || (message && !(op->message = strdup(message)))) {
        ret = -ENOMEM;
        goto out;
    }
    op->kind = OP_PROGRESS;
    memcpy(op->id, id, ID_LEN + 1);
    op->fraction = fraction;
    ret = enqueue(st, op);
out:
    if (ret && op) {
        free(op->message);
        free(op);
    }
    return ret;
}

int store_job_delete(struct store *st, const char *id, store_done_cb cb, void *ctx)
{
    int ret = 0;
    struct store_op *op = NULL;
    if (!id || !id_valid(id)) {
        ret = -EINVAL;
        goto out;
    }
    if (!(op = calloc(1, sizeof *op))) {
        ret = -ENOMEM;
        goto out;
    }
    op->kind = OP_DELETE;
    memcpy(op->id, id, ID_LEN + 1);
    op->cb = cb;
    op->ctx = ctx;
    ret = enqueue(st, op);
out:
    if (ret) free(op);
    return ret;
}

bool store__on_store_thread(struct store *st)
{
    return (st->writer_started && pthread_equal(pthread_self(), st->writer)) ||
           (st->finisher_started && pthread_equal(pthread_self(), st->finisher));
}

void store_sync(struct store *st)
{
    if (store__on_store_thread(st)) {
        /* waiting for the writer on the writer: it would never return */
        LOG_ERROR("store: store_sync called from a store callback; not waiting");
        return;
    }
    pthread_mutex_lock(&st->q_lock);
    uint64_t target = st->q_seq;
    st->syncing++;
    pthread_cond_broadcast(&st->q_wake); /* a lingering writer commits now */
    while (st->q_done < target) pthread_cond_wait(&st->q_idle, &st->q_lock);
    st->syncing--;
    pthread_mutex_unlock(&st->q_lock);
}

/* Recovery is an op like any other so that it runs on the writer connection,
 * in order with the writes queued around it, and the caller waits for it. */
int store_recover(struct store *st, int64_t now_ms, int *requeued, int *failed)
{
    int ret = 0;
    struct store_recover_result res = {.now_ms = now_ms};
    struct store_op *op = NULL;
    *requeued = *failed = 0;
    if (store__on_store_thread(st)) return -EDEADLK; /* it waits for the writer */
    if (!(op = calloc(1, sizeof *op))) return -ENOMEM;
    op->kind = OP_RECOVER;
    op->recover = &res;
    if ((ret = enqueue(st, op))) {
        free(op);
        goto out;
    }
    store_sync(st); /* the writer filled res before advancing q_done (q_lock) */
    ret = res.rc;
    *requeued = res.requeued;
    *failed = res.failed;
    if (ret == 0 && (res.requeued || res.failed))
        LOG_INFO("store: recovery: %d interrupted job(s) queued again, %d failed (worker_lost)",
                 res.requeued, res.failed);
out:
    return ret;
}

/* ---- test seams ----------------------------------------------------------- */

void store__debug_pause(struct store *st, bool paused)
{
    pthread_mutex_lock(&st->q_lock);
    st->paused = paused;
    pthread_cond_broadcast(&st->q_wake);
    pthread_mutex_unlock(&st->q_lock);
}

void store__debug_set_batch_hook(struct store *st, store_batch_hook_cb fn, void *ctx)
{
    pthread_mutex_lock(&st->q_lock);
    st->hook = fn;
    st->hook_ctx = ctx;
    pthread_mutex_unlock(&st->q_lock);
}
