/* store_writer.c - the op queue and the writer thread (group commit).
 *
 * DESIGN. Every write is an op appended to one FIFO under q_lock. The writer
 * thread sleeps on q_wake while the FIFO is empty; when it is not, it unlinks
 * up to max_batch ops from the head under the lock, then, without the lock,
 * runs BEGIN IMMEDIATE, each op through a statement prepared once at open,
 * COMMIT, and finally calls each op's callback in queue order and frees the
 * op. There is no timer: while one batch commits (an fsync with
 * synchronous=FULL), new ops pile up and form the next, bigger batch, so the
 * cost of a commit is shared by however many ops arrived during the last one.
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
#include "../common/log.h"
#include "store_int.h"

const uint64_t store_commit_bounds_ns[STORE_COMMIT_BUCKETS] = {
    100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000, /* 0.1 ms .. 10 ms */
    25000000, 50000000, 100000000, 250000000, 500000000, 1000000000, 2500000000u,
};

/* Adds one batch of n ops that took ns to the stats histograms. q_lock held. */
static void stats_observe_batch(struct store_stats *s, uint64_t n, uint64_t ns)
{
    /* Smallest i with n <= 1 << i: the bit length of n - 1. */
    int b = n <= 1 ? 0 : 64 - __builtin_clzll(n - 1);
    s->batch_hist[b < STORE_BATCH_BUCKETS ? b : STORE_BATCH_BUCKETS]++;
    int c = 0;
    while (c < STORE_COMMIT_BUCKETS && ns > store_commit_bounds_ns[c]) c++;
    s->commit_hist[c]++;
}

static const char *const wst_sql[WST_COUNT] = {
    [WST_BEGIN] = "BEGIN IMMEDIATE",
    [WST_COMMIT] = "COMMIT",
    [WST_ROLLBACK] = "ROLLBACK",
    [WST_INSERT] = "INSERT INTO jobs (" STORE_JOB_COLUMNS ") VALUES ("
                   "?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, "
                   "?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28) "
                   /* any unique key (id, idempotency_key): insert nothing, and
                    * sqlite3_changes() tells. Keeps the transaction alive. */
                   "ON CONFLICT DO NOTHING",
    [WST_UPDATE] = "UPDATE jobs SET status = ?2, attempt = ?3, scheduled_at_ms = ?4, "
                   "started_at_ms = ?5, finished_at_ms = ?6, progress_fraction = ?7, "
                   "progress_message = ?8, result = ?9, error_type = ?10, error_message = ?11, "
                   "worker_pid = ?12, worker_thread = ?13, executor = ?14, callback_status = ?15 "
                   "WHERE id = ?1",
    [WST_PROGRESS] = "UPDATE jobs SET progress_fraction = ?2, progress_message = ?3 "
                     "WHERE id = ?1 AND status = 'running'",
    /* OR, not IN: see the CHECK on status in store.c */
    [WST_DELETE] = "DELETE FROM jobs WHERE id = ?1 "
                   "AND (status = 'succeeded' OR status = 'failed' OR status = 'cancelled')",
    [WST_EXISTS] = "SELECT 1 FROM jobs WHERE id = ?1",
    [WST_RECOVER_REQUEUE] = "UPDATE jobs SET status = 'queued', started_at_ms = NULL, "
                            "worker_pid = NULL, worker_thread = NULL, progress_fraction = NULL, "
                            "progress_message = NULL "
                            "WHERE status = 'running' AND attempt < max_attempts",
    [WST_RECOVER_FAIL] = "UPDATE jobs SET status = 'failed', error_type = 'worker_lost', "
                         "error_message = printf('the server stopped while the job was running "
                         "(attempt %d of %d)', attempt, max_attempts), finished_at_ms = ?1 "
                         "WHERE status = 'running'",
};

int store__writer_prepare(struct store *st)
{
    for (int i = 0; i < WST_COUNT; i++) {
        int ret = store__prepare(st->wdb, wst_sql[i], &st->wst[i]);
        if (ret) return ret;
    }
    return store__prune_prepare(st);
}

void store__writer_finalize(struct store *st)
{
    for (int i = 0; i < WST_COUNT; i++) {
        sqlite3_finalize(st->wst[i]); /* accepts NULL; returns the last step's error only */
        st->wst[i] = NULL;
    }
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

static int bind_insert(sqlite3_stmt *s, const struct job *j)
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
    return rc;
}

/* Parameter positions of WST_UPDATE, 0-based like enum store_col. */
enum { UP_ID, UP_STATUS, UP_ATTEMPT, UP_SCHEDULED, UP_STARTED, UP_FINISHED, UP_FRACTION,
       UP_MESSAGE, UP_RESULT, UP_ERROR_TYPE, UP_ERROR_MESSAGE, UP_PID, UP_THREAD, UP_EXECUTOR,
       UP_CALLBACK_STATUS };

static int bind_update(sqlite3_stmt *s, const struct job *j)
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
    return rc;
}

/* ---- running a batch (writer thread only) -------------------------------- */

/* Steps a bound statement once, logs a failure with SQLite's message, then
 * resets it and drops its bindings (which point into the op). Returns the
 * SQLite code of the step: SQLITE_DONE or SQLITE_ROW on success. */
static int step_reset(struct store *st, sqlite3_stmt *s)
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
static bool error_is_local(sqlite3 *db, int rc)
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
    if (op->kind == OP_PRUNE) return store__prune_exec(st, op->prune); /* its own statements */
    switch (op->kind) {
    case OP_INSERT:
        s = st->wst[WST_INSERT];
        rc = bind_insert(s, op->job);
        break;
    case OP_UPDATE:
        s = st->wst[WST_UPDATE];
        rc = bind_update(s, op->job);
        break;
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
    case OP_RECOVER:
        s = st->wst[WST_RECOVER_REQUEUE];
        break;
    case OP_PRUNE:
        break; /* handled above */
    }
    if (rc != SQLITE_OK) { /* binding touches no data: always the op's own failure */
        LOG_WARN("store: cannot bind op: %s", sqlite3_errstr(rc));
        (void)sqlite3_reset(s);
        (void)sqlite3_clear_bindings(s);
        op->rc = store__errno(rc);
        return 0;
    }
    rc = step_reset(st, s);
    if (rc != SQLITE_DONE) goto fail;
    changes = sqlite3_changes(db);

    switch (op->kind) {
    case OP_INSERT:
        op->rc = changes ? 0 : -EEXIST;
        break;
    case OP_UPDATE:
        op->rc = changes ? 0 : -ENOENT;
        break;
    case OP_PROGRESS:
        break; /* not running (any more): nothing to do, by contract */
    case OP_DELETE:
        if (changes) break;
        s = st->wst[WST_EXISTS];
        rc = SQLITE_OK;
        bind_text(s, 0, op->id, &rc);
        if (rc == SQLITE_OK) rc = step_reset(st, s);
        if (rc == SQLITE_ROW)
            op->rc = -EALREADY;
        else if (rc == SQLITE_DONE)
            op->rc = -ENOENT;
        else
            goto fail;
        break;
    case OP_RECOVER:
        op->recover->requeued = changes;
        s = st->wst[WST_RECOVER_FAIL];
        rc = sqlite3_bind_int64(s, 1, op->recover->now_ms);
        if (rc == SQLITE_OK) rc = step_reset(st, s);
        if (rc != SQLITE_DONE) goto fail;
        op->recover->failed = sqlite3_changes(db);
        break;
    case OP_PRUNE:
        break;
    }
    return 0;
fail:
    if (error_is_local(db, rc)) {
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
        uint64_t h = 1469598103934665603ull;
        for (const char *c = op->job->id; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ull;
        size_t i = h & (cap - 1);
        while (st->dedup[i] && strcmp(st->dedup[i]->job->id, op->job->id) != 0) i = (i + 1) & (cap - 1);
        if (st->dedup[i]) st->dedup[i]->superseded_by = op;
        st->dedup[i] = op;
    }
    /* Clear only the slots used (the batch is at most max_batch ops). */
    for (struct store_op *op = batch; op; op = op->next) {
        if (op->kind != OP_UPDATE) continue;
        uint64_t h = 1469598103934665603ull;
        for (const char *c = op->job->id; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ull;
        size_t i = h & (cap - 1);
        while (st->dedup[i]) {
            st->dedup[i] = NULL;
            i = (i + 1) & (cap - 1);
        }
    }
}

static int batch_commit(struct store *st, struct store_op *batch)
{
    int ret = 0;
    int rc = step_reset(st, st->wst[WST_BEGIN]);
    if (rc != SQLITE_DONE) {
        ret = store__errno(rc);
        goto out;
    }
    batch_dedup(st, batch);
    for (struct store_op *op = batch; op; op = op->next)
        if (!op->superseded_by && (ret = op_exec(st, op))) goto out;
    /* A skipped update shares the fate of the one that overwrote it. */
    for (struct store_op *op = batch; op; op = op->next) {
        struct store_op *last = op->superseded_by;
        while (last && last->superseded_by) last = last->superseded_by;
        if (last) op->rc = last->rc;
    }
    rc = step_reset(st, st->wst[WST_COMMIT]);
    if (rc != SQLITE_DONE) ret = store__errno(rc);
out:
    if (ret) {
        /* After SQLITE_FULL/IOERR SQLite may already have rolled back. */
        if (!sqlite3_get_autocommit(st->wdb)) (void)step_reset(st, st->wst[WST_ROLLBACK]);
        LOG_ERROR("store: transaction rolled back: %s; its writes are reported failed",
                  strerror(-ret));
        for (struct store_op *op = batch; op; op = op->next) op->rc = ret;
    }
    return ret;
}

/* Hands each op's outcome to its owner, in queue order, and frees the op.
 * Counts the ops that succeeded into *ok. */
static void batch_finish(struct store_op *batch, uint64_t *ok)
{
    struct store_op *next;
    for (struct store_op *op = batch; op; op = next) {
        next = op->next;
        if (op->rc == 0) (*ok)++;
        switch (op->kind) {
        case OP_INSERT:
        case OP_UPDATE:
            if (op->cb)
                op->cb(op->ctx, op->rc, op->job); /* the callee owns the job now */
            else
                job_free(op->job);
            break;
        case OP_DELETE:
            if (op->cb) op->cb(op->ctx, op->rc, NULL);
            break;
        case OP_PROGRESS:
            if (op->rc) LOG_DEBUG("store: progress of %s not saved: %s", op->id, strerror(-op->rc));
            free(op->message);
            break;
        case OP_RECOVER:
            op->recover->rc = op->rc;
            if (op->rc) op->recover->requeued = op->recover->failed = 0;
            break;
        case OP_PRUNE:
            op->prune->rc = op->rc; /* nonzero: rolled back, the caller drops op->prune->work */
            break;
        }
        free(op);
    }
}

static void *writer_main(void *arg)
{
    struct store *st = arg;
    pthread_setname_np(pthread_self(), "jobd-store");
    for (;;) {
        pthread_mutex_lock(&st->q_lock);
        while (!st->closing && (!st->q_head || st->paused)) pthread_cond_wait(&st->q_wake, &st->q_lock);
        struct store_op *batch = st->q_head, *last = st->q_head;
        uint64_t n = 0;
        if (batch) {
            n = 1;
            while (last->next && n < (uint64_t)st->max_batch) {
                last = last->next;
                n++;
            }
            st->q_head = last->next;
            if (!st->q_head) st->q_tail = NULL;
            last->next = NULL;
            st->q_len -= n;
        }
        store_batch_hook_cb hook = st->hook;
        void *hook_ctx = st->hook_ctx;
        pthread_mutex_unlock(&st->q_lock);
        if (!batch) break; /* closing, and nothing left */

        if (hook) hook(hook_ctx, st->wdb);
        int64_t t0 = clock_mono_ns();
        int rc = batch_commit(st, batch);
        int64_t dt = clock_mono_ns() - t0;
        uint64_t ok = 0;
        batch_finish(batch, &ok);

        pthread_mutex_lock(&st->q_lock);
        if (rc == 0) st->stats.commits++;
        st->stats.ops += ok;
        st->stats.failed_ops += n - ok;
        st->stats.last_batch = n;
        if (n > st->stats.max_batch) st->stats.max_batch = n;
        st->stats.commit_ns_sum += (uint64_t)dt;
        stats_observe_batch(&st->stats, n, (uint64_t)dt);
        st->q_done += n;
        pthread_cond_broadcast(&st->q_idle);
        pthread_mutex_unlock(&st->q_lock);
    }
    return NULL;
}

int store__writer_start(struct store *st)
{
    int e = pthread_create(&st->writer, NULL, writer_main, st);
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
    ret = enqueue(st, op);
out:
    if (ret) {
        job_free(job);
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

/* True on the writer thread, i.e. inside a store_done_cb. st->writer was
 * written before any op could reach the writer (ordered by q_lock). */
static bool on_writer_thread(struct store *st)
{
    return st->writer_started && pthread_equal(pthread_self(), st->writer);
}

void store_sync(struct store *st)
{
    if (on_writer_thread(st)) {
        /* waiting for the writer on the writer: it would never return */
        LOG_ERROR("store: store_sync called from a store callback; not waiting");
        return;
    }
    pthread_mutex_lock(&st->q_lock);
    uint64_t target = st->q_seq;
    while (st->q_done < target) pthread_cond_wait(&st->q_idle, &st->q_lock);
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
    if (on_writer_thread(st)) return -EDEADLK; /* it waits for the writer */
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
