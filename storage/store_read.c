/* store_read.c - reads, on a pool of read-only connections.
 *
 * In WAL mode a reader sees the last commit made before its statement began
 * and never waits for the writer. Each read pops an idle connection from the
 * pool (pool_lock), or opens a new one when none is idle, uses it without any
 * lock, and pushes it back; so the pool grows to the number of threads that
 * read at once and no further. Every connection keeps its own prepared
 * statements; all of them are closed by store_close.
 */
#include "store.h"

#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "store_int.h"

#define SELECT_JOB "SELECT " STORE_JOB_COLUMNS " FROM jobs "

/* ---- the pool ------------------------------------------------------------- */

static void reader_free(struct store_reader *r)
{
    if (!r) return;
    sqlite3_finalize(r->get); /* finalize accepts NULL */
    sqlite3_finalize(r->get_by_idempotency);
    sqlite3_finalize(r->count);
    sqlite3_finalize(r->scan[0]);
    sqlite3_finalize(r->scan[1]);
    sqlite3_finalize(r->events);
    sqlite3_finalize(r->batch_get);
    sqlite3_finalize(r->batch_by_key);
    sqlite3_finalize(r->batch_counts);
    sqlite3_finalize(r->deliveries);
    for (int i = 0; i < STORE_LIST_SHAPES; i++)
        for (int k = 0; k < JOB_STATUS_COUNT; k++) sqlite3_finalize(r->list[i][k]);
    int rc = sqlite3_close(r->db); /* accepts NULL */
    if (rc != SQLITE_OK) LOG_ERROR("store: closing a read connection: %s", sqlite3_errstr(rc));
    free(r);
}

/* Opens a new read connection with its fixed statements. */
static int reader_open(struct store *st, struct store_reader **out)
{
    int ret = 0;
    struct store_reader *r = calloc(1, sizeof *r);
    if (!r) return -ENOMEM;
    int rc = sqlite3_open_v2(st->path, &r->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        LOG_ERROR("store: cannot open a read connection to %s: %s", st->path,
                  r->db ? sqlite3_errmsg(r->db) : sqlite3_errstr(rc));
        ret = store__errno(rc);
        goto out;
    }
    if ((ret = store__pragmas_common(r->db, false))) goto out;
    if ((ret = store__prepare(r->db, SELECT_JOB "WHERE id = ?1", &r->get))) goto out;
    if ((ret = store__prepare(r->db, SELECT_JOB "WHERE idempotency_key = ?1", &r->get_by_idempotency)))
        goto out;
    if ((ret = store__prepare(r->db, "SELECT status, count(*) FROM jobs GROUP BY status", &r->count)))
        goto out;
    if ((ret = store__prepare(r->db, SELECT_JOB "WHERE status = 'scheduled' ORDER BY id", &r->scan[0])))
        goto out;
    if ((ret = store__prepare(r->db, SELECT_JOB "WHERE status = 'queued' ORDER BY id", &r->scan[1])))
        goto out;
    if ((ret = store__prepare(r->db,
                              "SELECT e.seq, e.type, e.job_id, e.batch_id, e.status, e.attempt, e.at_ms, e.error_type, "
                              "e.data, j.task, j.executor, j.created_at_ms, j.scheduled_at_ms, j.started_at_ms, "
                              "j.finished_at_ms, j.max_attempts, j.error_type, j.error_message "
                              "FROM events e LEFT JOIN jobs j ON j.id = e.job_id "
                              "WHERE e.seq > ?1 ORDER BY e.seq LIMIT ?2", &r->events)))
        goto out;
#define SELECT_BATCH "SELECT id, total, created_at_ms, finished_at_ms, callback_url, callback_status, " \
                     "idempotency_key FROM batches "
    if ((ret = store__prepare(r->db, SELECT_BATCH "WHERE id = ?1", &r->batch_get))) goto out;
    if ((ret = store__prepare(r->db, SELECT_BATCH "WHERE idempotency_key = ?1", &r->batch_by_key))) goto out;
#undef SELECT_BATCH
    if ((ret = store__prepare(r->db, "SELECT status, count(*) FROM jobs WHERE batch_id = ?1 GROUP BY status",
                              &r->batch_counts)))
        goto out;
    if ((ret = store__prepare(r->db, "SELECT id, kind, ref_id, url, attempts, next_at_ms FROM deliveries "
                                     "ORDER BY next_at_ms LIMIT ?1", &r->deliveries)))
        goto out;
    pthread_mutex_lock(&st->pool_lock);
    st->readers_open++;
    pthread_mutex_unlock(&st->pool_lock);
    *out = r;
    r = NULL;
out:
    reader_free(r);
    return ret;
}

/* Lends a read connection to the calling thread; give it back with reader_put. */
int store__reader_get(struct store *st, struct store_reader **out)
{
    pthread_mutex_lock(&st->pool_lock);
    struct store_reader *r = st->pool;
    if (r) st->pool = r->next;
    pthread_mutex_unlock(&st->pool_lock);
    if (r) {
        *out = r;
        return 0;
    }
    return reader_open(st, out);
}

void store__reader_put(struct store *st, struct store_reader *r)
{
    pthread_mutex_lock(&st->pool_lock);
    r->next = st->pool;
    st->pool = r;
    pthread_mutex_unlock(&st->pool_lock);
}

void store__readers_close(struct store *st)
{
    pthread_mutex_lock(&st->pool_lock);
    struct store_reader *r = st->pool;
    st->pool = NULL;
    int lent = st->readers_open;
    pthread_mutex_unlock(&st->pool_lock);
    while (r) {
        struct store_reader *next = r->next;
        reader_free(r);
        lent--;
        r = next;
    }
    /* A read still running while the store closes is the caller's bug; its
     * connection leaks rather than being closed under it. */
    if (lent) LOG_ERROR("store: closed with %d read(s) still in progress", lent);
}

/* ---- rows ------------------------------------------------------------------- */

/* Replaces *slot with a copy of the column's text, or NULL for SQL NULL. */
static int col_str(sqlite3_stmt *s, int col, char **slot)
{
    char *copy = NULL;
    if (sqlite3_column_type(s, col) != SQLITE_NULL) {
        const unsigned char *t = sqlite3_column_text(s, col);
        int len = sqlite3_column_bytes(s, col);
        if (!t || !(copy = malloc((size_t)len + 1))) return -ENOMEM;
        memcpy(copy, t, (size_t)len);
        copy[len] = '\0';
    }
    free(*slot);
    *slot = copy;
    return 0;
}

/* The one conversion of a row (columns in STORE_JOB_COLUMNS order) into a
 * new job, which the caller owns. NULL columns become NULL strings and 0;
 * NULL progress becomes -1. Returns 0, -ENOMEM, or -EIO for a row that no
 * jobd wrote (bad id or status). */
int store__row_to_job(sqlite3_stmt *s, struct job **out)
{
    int ret = 0;
    struct job *j = job_new();
    *out = NULL;
    if (!j) return -ENOMEM;

    const char *id = (const char *)sqlite3_column_text(s, COL_ID);
    const char *status = (const char *)sqlite3_column_text(s, COL_STATUS);
    if (!id || sqlite3_column_bytes(s, COL_ID) != ID_LEN || !status ||
        job_status_parse(status, &j->status) != 0) {
        LOG_ERROR("store: skipping a malformed row (id %s, status %s)", id ? id : "NULL",
                  status ? status : "NULL");
        ret = -EIO;
        goto out;
    }
    memcpy(j->id, id, ID_LEN + 1);

    const char *etype = (const char *)sqlite3_column_text(s, COL_ERROR_TYPE);
    if (etype && job_error_type_parse(etype, &j->error_type) != 0) {
        /* a newer jobd's error type: keep the job readable as a task error */
        LOG_WARN("store: job %s has unknown error type '%s'", j->id, etype);
        j->error_type = JOB_ERR_TASK;
    }

    static const struct {
        int col;
        size_t off;
    } strs[] = {
        {COL_TASK, offsetof(struct job, task)},
        {COL_ARGS, offsetof(struct job, args)},
        {COL_EXECUTOR, offsetof(struct job, executor)},
        {COL_PROGRESS_MESSAGE, offsetof(struct job, progress_message)},
        {COL_RESULT, offsetof(struct job, result)},
        {COL_ERROR_MESSAGE, offsetof(struct job, error_message)},
        {COL_WORKER_THREAD, offsetof(struct job, worker_thread)},
        {COL_BATCH_ID, offsetof(struct job, batch_id)},
        {COL_DEPENDS_ON, offsetof(struct job, depends_on)},
        {COL_CONCURRENCY_KEY, offsetof(struct job, concurrency_key)},
        {COL_IDEMPOTENCY_KEY, offsetof(struct job, idempotency_key)},
        {COL_CALLBACK_URL, offsetof(struct job, callback_url)},
        {COL_CALLBACK_STATUS, offsetof(struct job, callback_status)},
        {COL_ATTEMPTS, offsetof(struct job, attempts)},
    };
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if ((ret = col_str(s, strs[i].col, (char **)((char *)j + strs[i].off)))) goto out;

    j->priority = sqlite3_column_int64(s, COL_PRIORITY);
    j->attempt = sqlite3_column_int(s, COL_ATTEMPT);
    j->max_attempts = sqlite3_column_int(s, COL_MAX_ATTEMPTS);
    j->timeout_ms = sqlite3_column_int64(s, COL_TIMEOUT_MS);
    j->retry_backoff_ms = sqlite3_column_int64(s, COL_RETRY_BACKOFF_MS);
    j->created_at_ms = sqlite3_column_int64(s, COL_CREATED_AT_MS);
    j->scheduled_at_ms = sqlite3_column_int64(s, COL_SCHEDULED_AT_MS);
    j->started_at_ms = sqlite3_column_int64(s, COL_STARTED_AT_MS);
    j->finished_at_ms = sqlite3_column_int64(s, COL_FINISHED_AT_MS);
    j->progress_fraction = sqlite3_column_type(s, COL_PROGRESS_FRACTION) == SQLITE_NULL
                               ? -1.0
                               : sqlite3_column_double(s, COL_PROGRESS_FRACTION);
    j->worker_pid = sqlite3_column_int(s, COL_WORKER_PID);
    j->concurrency_limit = sqlite3_column_int(s, COL_CONCURRENCY_LIMIT);
    *out = j;
    j = NULL;
out:
    job_free(j);
    return ret;
}

/* Logs a failed step on a read connection and maps its code. */
int store__read_errno(struct store_reader *r, int rc)
{
    LOG_ERROR("store: read failed: %s", sqlite3_errmsg(r->db));
    return store__errno(rc);
}

/* ---- single jobs ------------------------------------------------------------- */

/* Looks one job up by id, or by idempotency key. */
static int get_one(struct store *st, bool by_idempotency, const char *key, struct job **out)
{
    struct store_reader *r = NULL;
    *out = NULL;
    if (!key) return -EINVAL;
    int ret = store__reader_get(st, &r);
    if (ret) return ret;
    sqlite3_stmt *s = by_idempotency ? r->get_by_idempotency : r->get;
    int rc = sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        ret = store__row_to_job(s, out);
    else if (rc == SQLITE_DONE)
        ret = -ENOENT;
    else
        ret = store__read_errno(r, rc);
    sqlite3_reset(s); /* repeats the step's error, handled above */
    sqlite3_clear_bindings(s);
    store__reader_put(st, r);
    return ret;
}

int store_job_get(struct store *st, const char *id, struct job **out)
{
    return get_one(st, false, id, out);
}

int store_job_get_by_idempotency(struct store *st, const char *key, struct job **out)
{
    return get_one(st, true, key, out);
}

/* ---- lists ------------------------------------------------------------------- */

enum { SHAPE_TASK = 1, SHAPE_EXECUTOR = 2, SHAPE_BATCH = 4, SHAPE_BEFORE = 8, SHAPE_Q = 16 };

static void sql_add(char *buf, size_t cap, size_t *len, const char *piece)
{
    size_t n = strlen(piece);
    assert(*len + n < cap); /* the pieces are constants: overflow is our bug */
    memcpy(buf + *len, piece, n + 1);
    *len += n;
}

/* Appends one SELECT of jobs matching the filter shape, newest first, at
 * most ?5 rows; status_param names the parameter of its one status, or is
 * NULL for any status. */
static void list_select(char *sql, size_t cap, size_t *len, unsigned shape, const char *status_param)
{
    sql_add(sql, cap, len, SELECT_JOB "WHERE 1");
    if (status_param) {
        sql_add(sql, cap, len, " AND status = ");
        sql_add(sql, cap, len, status_param);
    }
    if (shape & SHAPE_TASK) sql_add(sql, cap, len, " AND task = ?1");
    if (shape & SHAPE_EXECUTOR) sql_add(sql, cap, len, " AND executor = ?2");
    if (shape & SHAPE_BATCH) sql_add(sql, cap, len, " AND batch_id = ?3");
    if (shape & SHAPE_BEFORE) sql_add(sql, cap, len, " AND id < ?4");
    if (shape & SHAPE_Q)
        sql_add(sql, cap, len,
                " AND (id = ?12 OR args LIKE ?13 ESCAPE '\\' OR result LIKE ?13 ESCAPE '\\'"
                " OR error_message LIKE ?13 ESCAPE '\\')");
    sql_add(sql, cap, len, " ORDER BY id DESC LIMIT ?5");
}

/* The list statement for a filter shape and a number of statuses (0 = any),
 * prepared on first use and kept by the reader. Only constant pieces make up
 * the SQL; every value is a bound parameter: ?1 task, ?2 executor, ?3
 * batch_id, ?4 before_id, ?5 the row limit, ?6..?11 the statuses, ?12 the
 * search text (equal to the id) and ?13 its LIKE pattern (see like_pattern).
 *
 * A search has no index to use: the LIKEs are checked on the rows the other
 * filters walk, newest first, until ?5 of them match; so its cost is bounded
 * by the rows scanned to fill a page, not by the page size alone.
 *
 * Several statuses become a UNION ALL of one SELECT per status rather than
 * `status IN (...)`: each member then walks the (status, id) index newest
 * first and stops after ?5 rows, and SQLite merges the sorted members. With
 * IN, SQLite scans the whole table by id instead, which for a rare set such as
 * queued+running among millions of finished jobs reads every row. */
static int list_stmt(struct store_reader *r, unsigned shape, int nstatus, sqlite3_stmt **out)
{
    static const char *const status_params[JOB_STATUS_COUNT] = {"?6", "?7", "?8", "?9", "?10", "?11"};
    if (r->list[shape][nstatus]) {
        *out = r->list[shape][nstatus];
        return 0;
    }
    char sql[8192];
    size_t len = 0;
    sql[0] = '\0';
    if (nstatus <= 1) {
        list_select(sql, sizeof sql, &len, shape, nstatus ? status_params[0] : NULL);
    } else {
        for (int i = 0; i < nstatus; i++) {
            sql_add(sql, sizeof sql, &len, i ? " UNION ALL SELECT * FROM (" : "SELECT * FROM (");
            list_select(sql, sizeof sql, &len, shape, status_params[i]);
            sql_add(sql, sizeof sql, &len, ")");
        }
        sql_add(sql, sizeof sql, &len, " ORDER BY id DESC LIMIT ?5");
    }
    int ret = store__prepare(r->db, sql, &r->list[shape][nstatus]);
    *out = r->list[shape][nstatus];
    return ret;
}

/* "%q%" with q's %, _ and \ escaped by \, for LIKE ... ESCAPE '\'. Caller frees. */
static char *like_pattern(const char *q)
{
    size_t n = strlen(q), k = 0;
    char *p = malloc(2 * n + 3);
    if (!p) return NULL;
    p[k++] = '%';
    for (size_t i = 0; i < n; i++) {
        if (q[i] == '%' || q[i] == '_' || q[i] == '\\') p[k++] = '\\';
        p[k++] = q[i];
    }
    p[k++] = '%';
    p[k] = '\0';
    return p;
}

int store_job_list(struct store *st, const struct store_filter *f, struct job ***out, size_t *n,
                   char next_cursor[ID_LEN + 1])
{
    int ret = 0, rc = SQLITE_OK;
    struct store_reader *r = NULL;
    sqlite3_stmt *s = NULL;
    struct job **jobs = NULL;
    char *pattern = NULL;
    size_t count = 0;
    bool more = false;
    *out = NULL;
    *n = 0;
    next_cursor[0] = '\0';
    if (!f) return -EINVAL;

    int limit = f->limit < 1 ? 1 : f->limit > 1000 ? 1000 : f->limit;
    const char *names[JOB_STATUS_COUNT];
    int nstatus = 0;
    for (int i = 0; i < JOB_STATUS_COUNT; i++)
        if (f->status_mask & (1u << i)) names[nstatus++] = job_status_name((enum job_status)i);
    if (f->status_mask && nstatus == 0) goto out; /* only unknown statuses: nothing matches */
    if (nstatus == JOB_STATUS_COUNT) nstatus = 0;  /* all of them: no filter */
    unsigned shape = (f->task ? SHAPE_TASK : 0) | (f->executor ? SHAPE_EXECUTOR : 0) |
                     (f->batch_id ? SHAPE_BATCH : 0) | (f->before_id ? SHAPE_BEFORE : 0) | (f->q ? SHAPE_Q : 0);

    if (!(jobs = calloc((size_t)limit, sizeof *jobs)) || (f->q && !(pattern = like_pattern(f->q)))) {
        ret = -ENOMEM;
        goto out;
    }
    if ((ret = store__reader_get(st, &r))) goto out;
    if ((ret = list_stmt(r, shape, nstatus, &s))) goto out;
    if (f->task) rc = sqlite3_bind_text(s, 1, f->task, -1, SQLITE_STATIC);
    if (f->executor && rc == SQLITE_OK) rc = sqlite3_bind_text(s, 2, f->executor, -1, SQLITE_STATIC);
    if (f->batch_id && rc == SQLITE_OK) rc = sqlite3_bind_text(s, 3, f->batch_id, -1, SQLITE_STATIC);
    if (f->before_id && rc == SQLITE_OK) rc = sqlite3_bind_text(s, 4, f->before_id, -1, SQLITE_STATIC);
    if (f->q && rc == SQLITE_OK) rc = sqlite3_bind_text(s, 12, f->q, -1, SQLITE_STATIC);
    if (f->q && rc == SQLITE_OK) rc = sqlite3_bind_text(s, 13, pattern, -1, SQLITE_STATIC);
    /* one row more than the page: its presence says there is a next page */
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(s, 5, limit + 1);
    for (int i = 0; i < nstatus && rc == SQLITE_OK; i++)
        rc = sqlite3_bind_text(s, 6 + i, names[i], -1, SQLITE_STATIC);
    while (rc == SQLITE_OK || rc == SQLITE_ROW) {
        rc = sqlite3_step(s);
        if (rc != SQLITE_ROW) break;
        if (count == (size_t)limit) {
            more = true;
            rc = SQLITE_DONE;
            break;
        }
        if ((ret = store__row_to_job(s, &jobs[count]))) goto out;
        count++;
    }
    if (rc != SQLITE_DONE) {
        ret = store__read_errno(r, rc);
        goto out;
    }
    if (more) memcpy(next_cursor, jobs[count - 1]->id, ID_LEN + 1);
    *out = jobs;
    *n = count;
    jobs = NULL;
out:
    if (s) {
        sqlite3_reset(s); /* repeats the step's error, handled above */
        sqlite3_clear_bindings(s);
    }
    if (r) store__reader_put(st, r);
    store_jobs_free(jobs, count);
    free(pattern);
    return ret;
}

void store_jobs_free(struct job **jobs, size_t n)
{
    if (!jobs) return;
    for (size_t i = 0; i < n; i++) job_free(jobs[i]);
    free(jobs);
}

/* ---- aggregates and scans ------------------------------------------------------ */

int store_count_by_status(struct store *st, int64_t counts[JOB_STATUS_COUNT])
{
    struct store_reader *r = NULL;
    int rc;
    memset(counts, 0, sizeof(int64_t) * JOB_STATUS_COUNT);
    int ret = store__reader_get(st, &r);
    if (ret) return ret;
    sqlite3_stmt *s = r->count;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(s, 0);
        enum job_status status;
        if (name && job_status_parse(name, &status) == 0) counts[status] = sqlite3_column_int64(s, 1);
    }
    if (rc != SQLITE_DONE) ret = store__read_errno(r, rc);
    sqlite3_reset(s); /* repeats the step's error, handled above */
    store__reader_put(st, r);
    return ret;
}

/* Each statement walks the index jobs_status (status, id) in id order, and
 * the two are merged by id: oldest first without a sort. (The single query
 * "status IN ('scheduled', 'queued') ORDER BY id" copied every pending row's
 * whole record into a temporary b-tree and sorted it, about a third of the
 * start-up time with a million pending jobs.) Both statements read in one
 * transaction, so they see one snapshot: the timer thread already runs and
 * may move a job from scheduled to queued meanwhile, and the job must not be
 * seen twice. */
int store_scan_pending(struct store *st, store_job_cb cb, void *ctx)
{
    struct store_reader *r = NULL;
    int rc[2] = {SQLITE_DONE, SQLITE_DONE};
    int ret = store__reader_get(st, &r);
    if (ret) return ret;
    int trc = sqlite3_exec(r->db, "BEGIN", NULL, NULL, NULL);
    if (trc != SQLITE_OK) {
        ret = store__read_errno(r, trc);
        goto out;
    }
    rc[0] = sqlite3_step(r->scan[0]);
    rc[1] = sqlite3_step(r->scan[1]);
    for (;;) {
        bool row0 = rc[0] == SQLITE_ROW, row1 = rc[1] == SQLITE_ROW;
        if ((!row0 && rc[0] != SQLITE_DONE) || (!row1 && rc[1] != SQLITE_DONE) || (!row0 && !row1)) break;
        int i = 0;
        if (!row0) {
            i = 1;
        } else if (row1) {
            const char *a = (const char *)sqlite3_column_text(r->scan[0], COL_ID);
            const char *b = (const char *)sqlite3_column_text(r->scan[1], COL_ID);
            i = strcmp(a ? a : "", b ? b : "") <= 0 ? 0 : 1;
        }
        struct job *job;
        if ((ret = store__row_to_job(r->scan[i], &job))) break;
        cb(ctx, job);
        rc[i] = sqlite3_step(r->scan[i]);
    }
    for (int i = 0; i < 2 && !ret; i++)
        if (rc[i] != SQLITE_ROW && rc[i] != SQLITE_DONE) ret = store__read_errno(r, rc[i]);
    sqlite3_reset(r->scan[0]); /* repeat the steps' errors, handled above */
    sqlite3_reset(r->scan[1]);
    /* Ends a read-only transaction: nothing to lose, but a failure would
     * leave the pooled connection inside it, so it is reported. */
    trc = sqlite3_exec(r->db, "COMMIT", NULL, NULL, NULL);
    if (trc != SQLITE_OK && !ret) ret = store__read_errno(r, trc);
out:
    store__reader_put(st, r);
    return ret;
}
