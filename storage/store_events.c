/* store_events.c - the event log, batches and callback deliveries: what the
 * writer does around a job's row (its event, its batch's end, its pending
 * callback), the batch and delivery ops, recovery, and their reads.
 *
 * DESIGN. Everything that must be true together is written in the same
 * transaction as the job row it follows from: a state change and its event;
 * a terminal update, the pending delivery of its callback and, for the last
 * job of a batch, the batch's end. So after a crash the log, the batches and
 * the deliveries agree with the jobs, and nothing is announced (event
 * callback, SSE) that did not commit.
 *
 * Seqs: the writer numbers events from ev_seq (the log's max at open); a
 * rolled-back transaction gives its numbers back (batch_commit restores
 * ev_seq), so committed seqs are gapless and increasing. The log keeps the
 * newest ev_keep events: trimming deletes a seq range once it is ~1% (at
 * least 1024) over, so that a trim is rare and cheap.
 */
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "store_int.h"

void store__evrecs_free(struct store_evrec *e)
{
    while (e) {
        struct store_evrec *next = e->next;
        free(e->data);
        free(e);
        e = next;
    }
}

struct store_evrec *store__evrec_job(const struct job *j)
{
    struct store_evrec *e = calloc(1, sizeof *e);
    if (!e || !(e->data = job_event_text(j))) {
        free(e);
        return NULL;
    }
    memcpy(e->type, "job", 4);
    memcpy(e->job_id, j->id, ID_LEN + 1);
    if (j->batch_id && id_valid(j->batch_id)) memcpy(e->batch_id, j->batch_id, ID_LEN + 1);
    e->status = (int)j->status;
    e->attempt = j->attempt;
    e->error_type = (int)j->error_type;
    e->at_ms = j->status == JOB_RUNNING ? j->started_at_ms
               : job_status_terminal(j->status) ? j->finished_at_ms
                                                : j->scheduled_at_ms;
    return e;
}

#define EV_COLS 9
#define EV_ROWS ((int)(sizeof ((struct store *)0)->ev_pend / sizeof ((struct store *)0)->ev_pend[0]))

int store__events_prepare(struct store *st)
{
    /* INSERT INTO events (...) VALUES (?1, ..., ?9), (?10, ...), ... */
    char sql[4096];
    size_t len = (size_t)snprintf(sql, sizeof sql, "INSERT INTO events (seq, type, job_id, batch_id, status, attempt, "
                                                   "at_ms, error_type, data) VALUES ");
    for (int r = 0; r < EV_ROWS; r++) {
        len += (size_t)snprintf(sql + len, sizeof sql - len, "%s(", r ? ", " : "");
        for (int k = 1; k <= EV_COLS; k++)
            len += (size_t)snprintf(sql + len, sizeof sql - len, "?%d%s", r * EV_COLS + k, k < EV_COLS ? ", " : ")");
    }
    return store__prepare(st->wdb, sql, &st->ev_insert_n);
}

void store__events_finalize(struct store *st)
{
    sqlite3_finalize(st->ev_insert_n);
    st->ev_insert_n = NULL;
}

/* Binds event e (seq already given) as parameters base+1 .. base+9. */
static int event_bind(sqlite3_stmt *s, int base, const struct store_evrec *e)
{
    bool job = strcmp(e->type, "job") == 0;
    int rc = sqlite3_bind_int64(s, base + 1, (sqlite3_int64)e->seq);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(s, base + 2, job ? 0 : 1);
    if (rc == SQLITE_OK)
        rc = e->job_id[0] ? sqlite3_bind_text(s, base + 3, e->job_id, -1, SQLITE_STATIC) : sqlite3_bind_null(s, base + 3);
    if (rc == SQLITE_OK)
        rc = e->batch_id[0] ? sqlite3_bind_text(s, base + 4, e->batch_id, -1, SQLITE_STATIC)
                            : sqlite3_bind_null(s, base + 4);
    if (job) { /* the compact row; see struct store_evrec */
        if (rc == SQLITE_OK) rc = sqlite3_bind_int(s, base + 5, e->status);
        if (rc == SQLITE_OK) rc = sqlite3_bind_int(s, base + 6, e->attempt);
        if (rc == SQLITE_OK) rc = e->at_ms ? sqlite3_bind_int64(s, base + 7, e->at_ms) : sqlite3_bind_null(s, base + 7);
        if (rc == SQLITE_OK)
            rc = e->error_type ? sqlite3_bind_int(s, base + 8, e->error_type) : sqlite3_bind_null(s, base + 8);
        if (rc == SQLITE_OK) rc = sqlite3_bind_null(s, base + 9);
    } else {
        for (int k = 5; k <= 8 && rc == SQLITE_OK; k++) rc = sqlite3_bind_null(s, base + k);
        if (rc == SQLITE_OK) rc = sqlite3_bind_text(s, base + 9, e->data, -1, SQLITE_STATIC);
    }
    return rc;
}

/* Runs s once bound; 0 or the transaction's errno. */
static int event_step(struct store *st, sqlite3_stmt *s, int bind_rc)
{
    if (bind_rc != SQLITE_OK) {
        (void)sqlite3_reset(s);
        (void)sqlite3_clear_bindings(s);
        return store__errno(bind_rc);
    }
    int rc = store__step_reset(st, s);
    return rc == SQLITE_DONE ? 0 : store__errno(rc);
}

int store__events_flush(struct store *st)
{
    int n = st->ev_npend, ret = 0;
    st->ev_npend = 0;
    if (n == EV_ROWS) {
        int rc = SQLITE_OK;
        for (int i = 0; i < n && rc == SQLITE_OK; i++) rc = event_bind(st->ev_insert_n, i * EV_COLS, st->ev_pend[i]);
        return event_step(st, st->ev_insert_n, rc);
    }
    sqlite3_stmt *s = st->wst[WST_EVENT_INSERT];
    for (int i = 0; i < n && !ret; i++) ret = event_step(st, s, event_bind(s, 0, st->ev_pend[i]));
    return ret;
}

/* Gives an event the next seq and queues its row (written EV_ROWS at a time,
 * the rest at the commit). Returns 0 or a negative errno (the transaction's:
 * an event that cannot be written loses the batch). */
static int event_insert(struct store *st, struct store_evrec *e)
{
    e->seq = ++st->ev_seq;
    st->ev_pend[st->ev_npend++] = e;
    return st->ev_npend == EV_ROWS ? store__events_flush(st) : 0;
}

/* Appends an event the writer makes (batch ends, recovery) to op->events. */
static struct store_evrec *evrec_append(struct store_op *op, const char *type, const char *job_id,
                                        const char *batch_id, char *data)
{
    struct store_evrec *e = calloc(1, sizeof *e);
    if (!e) {
        free(data);
        return NULL;
    }
    snprintf(e->type, sizeof e->type, "%s", type);
    if (job_id) snprintf(e->job_id, sizeof e->job_id, "%s", job_id);
    if (batch_id) snprintf(e->batch_id, sizeof e->batch_id, "%s", batch_id);
    e->data = data;
    struct store_evrec **tail = &op->events;
    while (*tail) tail = &(*tail)->next;
    *tail = e;
    return e;
}

/* The first event of op not yet written (the job event an insert or update carries). */
static struct store_evrec *next_unwritten(struct store_op *op)
{
    for (struct store_evrec *e = op->events; e; e = e->next)
        if (!e->seq) return e;
    return NULL;
}

int store__event_write_only(struct store *st, struct store_op *op)
{
    struct store_evrec *e = next_unwritten(op);
    return e ? event_insert(st, e) : 0;
}

static int delivery_insert(struct store *st, const char *kind, const char *ref_id, const char *url)
{
    sqlite3_stmt *s = st->wst[WST_DELIVERY_INSERT];
    int rc = sqlite3_bind_text(s, 1, kind, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(s, 2, ref_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(s, 3, url, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(s, 4, clock_wall_ms());
    if (rc != SQLITE_OK) {
        (void)sqlite3_reset(s);
        (void)sqlite3_clear_bindings(s);
        return store__errno(rc);
    }
    rc = store__step_reset(st, s);
    return rc == SQLITE_DONE ? 0 : store__errno(rc);
}

/* The batch event's data: {"id", "total", "done": true, "finished_at", "counts": {...}}. */
static char *batch_event_text(struct store *st, const char *batch_id, int64_t total, int64_t finished_ms)
{
    int64_t counts[JOB_STATUS_COUNT] = {0};
    sqlite3_stmt *s = st->wst[WST_BATCH_COUNTS];
    int rc = sqlite3_bind_text(s, 1, batch_id, -1, SQLITE_STATIC);
    while (rc == SQLITE_OK || rc == SQLITE_ROW) {
        rc = sqlite3_step(s);
        if (rc != SQLITE_ROW) break;
        enum job_status js;
        const char *name = (const char *)sqlite3_column_text(s, 0);
        if (name && job_status_parse(name, &js) == 0) counts[js] = sqlite3_column_int64(s, 1);
    }
    (void)sqlite3_reset(s); /* a failed count only leaves zeros in an event */
    (void)sqlite3_clear_bindings(s);
    char t[CLOCK_RFC3339_LEN];
    clock_format_rfc3339(finished_ms, t);
    char *buf = malloc(512);
    if (!buf) return NULL;
    size_t len = (size_t)snprintf(buf, 512, "{\"id\":\"%s\",\"total\":%lld,\"done\":true,\"finished_at\":\"%s\",\"counts\":{",
                                  batch_id, (long long)total, t);
    for (int i = 0; i < JOB_STATUS_COUNT && len < 512; i++)
        len += (size_t)snprintf(buf + len, 512 - len, "%s\"%s\":%lld", i ? "," : "",
                                job_status_name((enum job_status)i), (long long)counts[i]);
    if (len < 512) snprintf(buf + len, 512 - len, "}}");
    return buf;
}

/* Finishes batch_id when none of its jobs is pending any more (and it is not
 * finished yet): sets finished_at, writes its event, queues its callback. */
static int batch_maybe_finish(struct store *st, struct store_op *op, const char *batch_id)
{
    sqlite3_stmt *s = st->wst[WST_BATCH_PENDING];
    int rc = sqlite3_bind_text(s, 1, batch_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = store__step_reset(st, s);
    if (rc == SQLITE_ROW) return 0; /* still pending */
    if (rc != SQLITE_DONE) return store__errno(rc);

    int64_t now = clock_wall_ms(), total = 0;
    char *url = NULL;
    bool finished = false;
    s = st->wst[WST_BATCH_FINISH];
    rc = sqlite3_bind_text(s, 1, batch_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(s, 2, now);
    if (rc == SQLITE_OK) rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        finished = true;
        total = sqlite3_column_int64(s, 0);
        const char *u = (const char *)sqlite3_column_text(s, 1);
        if (u && !(url = strdup(u))) rc = SQLITE_NOMEM;
        else rc = sqlite3_step(s); /* SQLITE_DONE: RETURNING has one row */
    }
    if (rc != SQLITE_DONE) LOG_ERROR("store: finishing batch %s: %s", batch_id, sqlite3_errmsg(st->wdb));
    (void)sqlite3_reset(s);
    (void)sqlite3_clear_bindings(s);
    int ret = rc == SQLITE_DONE ? 0 : store__errno(rc);
    if (ret || !finished) goto out;
    if (url && (ret = delivery_insert(st, "batch", batch_id, url))) goto out;
    char *data = batch_event_text(st, batch_id, total, now);
    struct store_evrec *e = data ? evrec_append(op, "batch", NULL, batch_id, data) : NULL;
    ret = e ? event_insert(st, e) : -ENOMEM;
out:
    free(url);
    return ret;
}

/* Notes that a job of batch_id ended in this transaction. Jobs of one batch
 * tend to end together, so only the last 16 notes are searched for it; a
 * batch noted twice is probed twice, which finishes it once all the same. */
static int batch_note_end(struct store *st, const char *batch_id)
{
    size_t from = st->bend_n > 16 ? st->bend_n - 16 : 0;
    for (size_t i = st->bend_n; i-- > from;)
        if (strcmp(st->bend[i], batch_id) == 0) return 0;
    if (strlen(batch_id) != ID_LEN) return 0; /* not a batch id this server made: nothing to finish */
    if (st->bend_n == st->bend_cap) {
        size_t ncap = st->bend_cap ? 2 * st->bend_cap : 64;
        void *nb = realloc(st->bend, ncap * sizeof *st->bend);
        if (!nb) return -ENOMEM;
        st->bend = nb;
        st->bend_cap = ncap;
    }
    memcpy(st->bend[st->bend_n++], batch_id, ID_LEN + 1);
    return 0;
}

int store__job_write(struct store *st, struct store_op *op, struct job *job, bool insert)
{
    sqlite3 *db = st->wdb;
    bool terminal = !insert && job_status_terminal(job->status);
    if (terminal && job->callback_url && !job->callback_status &&
        job_set_str(&job->callback_status, "pending") < 0) {
        op->rc = -ENOMEM;
        return 0;
    }
    sqlite3_stmt *s = st->wst[insert ? WST_INSERT : WST_UPDATE];
    int rc = insert ? store__bind_insert(s, job) : store__bind_update(s, job);
    if (rc != SQLITE_OK) {
        LOG_WARN("store: cannot bind job %s: %s", job->id, sqlite3_errstr(rc));
        (void)sqlite3_reset(s);
        (void)sqlite3_clear_bindings(s);
        op->rc = store__errno(rc);
        return 0;
    }
    rc = store__step_reset(st, s);
    if (rc != SQLITE_DONE) {
        if (store__error_is_local(db, rc)) {
            op->rc = store__errno(rc);
            return 0;
        }
        return store__errno(rc);
    }
    if (!sqlite3_changes(db)) {
        op->rc = insert ? -EEXIST : -ENOENT; /* nothing written: no event either */
        return 0;
    }
    struct store_evrec *e = next_unwritten(op);
    int ret = e ? event_insert(st, e) : 0;
    if (!ret && terminal && job->callback_url && strcmp(job->callback_status, "pending") == 0)
        ret = delivery_insert(st, "job", job->id, job->callback_url);
    if (!ret && terminal && job->batch_id) ret = batch_note_end(st, job->batch_id);
    return ret;
}

int store__batches_finish(struct store *st, struct store_op *last)
{
    int ret = 0;
    for (size_t i = 0; i < st->bend_n && !ret; i++) ret = batch_maybe_finish(st, last, st->bend[i]);
    st->bend_n = 0;
    return ret;
}

/* ---- batches ---------------------------------------------------------------- */

static int savepoint(struct store *st, enum store_wstmt which)
{
    int rc = store__step_reset(st, st->wst[which]);
    return rc == SQLITE_DONE ? 0 : store__errno(rc);
}

int store__batch_exec(struct store *st, struct store_op *op)
{
    struct store_batch *b = op->batch;
    /* Earlier ops' events are written before the savepoint, so that every
     * event still pending on an undo is this op's (and none of theirs is
     * rolled back with it). */
    int ret = store__events_flush(st);
    if (ret) return ret;
    uint64_t seq0 = st->ev_seq;
    ret = savepoint(st, WST_SAVEPOINT);
    if (ret) return ret;
    sqlite3_stmt *s = st->wst[WST_BATCH_INSERT];
    int rc = sqlite3_bind_text(s, 1, b->id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(s, 2, b->total);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(s, 3, b->created_at_ms);
    if (rc == SQLITE_OK)
        rc = b->callback_url ? sqlite3_bind_text(s, 4, b->callback_url, -1, SQLITE_STATIC) : sqlite3_bind_null(s, 4);
    if (rc == SQLITE_OK)
        rc = b->idempotency_key ? sqlite3_bind_text(s, 5, b->idempotency_key, -1, SQLITE_STATIC)
                                : sqlite3_bind_null(s, 5);
    if (rc == SQLITE_OK) rc = store__step_reset(st, s);
    else {
        (void)sqlite3_reset(s);
        (void)sqlite3_clear_bindings(s);
    }
    if (rc != SQLITE_DONE) {
        ret = store__errno(rc);
        goto undo;
    }
    if (!sqlite3_changes(st->wdb)) {
        op->rc = -EEXIST;
        goto undo_op;
    }
    for (size_t i = 0; i < op->n_jobs; i++) {
        if ((ret = store__job_write(st, op, op->jobs[i], true))) goto undo;
        if (op->rc) goto undo_op;
    }
    return savepoint(st, WST_RELEASE);
undo_op:
    /* The op fails alone: undo what it wrote, keep the transaction. */
    ret = 0;
undo:
    st->ev_seq = seq0;
    st->ev_npend = 0; /* all this op's (see above); written ones go with the rollback */
    for (struct store_evrec *e = op->events; e; e = e->next) e->seq = 0;
    if (!sqlite3_get_autocommit(st->wdb)) {
        int r1 = savepoint(st, WST_ROLLBACK_TO), r2 = savepoint(st, WST_RELEASE);
        if (!ret) ret = r1 ? r1 : r2;
    }
    if (ret && !op->rc) op->rc = ret;
    return ret;
}

/* ---- deliveries ---------------------------------------------------------------- */

int store__delivery_exec(struct store *st, struct store_op *op)
{
    struct store_delivery_result *r = op->delivery;
    const struct store_delivery *d = &r->d;
    sqlite3_stmt *s;
    int rc;
    if (r->outcome == STORE_DELIVERY_RETRY) {
        s = st->wst[WST_DELIVERY_RETRY];
        rc = sqlite3_bind_int64(s, 1, d->id);
        if (rc == SQLITE_OK) rc = sqlite3_bind_int(s, 2, d->attempts);
        if (rc == SQLITE_OK) rc = sqlite3_bind_int64(s, 3, d->next_at_ms);
        if (rc == SQLITE_OK)
            rc = r->last_error ? sqlite3_bind_text(s, 4, r->last_error, -1, SQLITE_STATIC) : sqlite3_bind_null(s, 4);
        if (rc == SQLITE_OK) rc = store__step_reset(st, s);
        return rc == SQLITE_DONE ? 0 : store__errno(rc);
    }
    s = st->wst[WST_DELIVERY_DELETE];
    rc = sqlite3_bind_int64(s, 1, d->id);
    if (rc == SQLITE_OK) rc = store__step_reset(st, s);
    if (rc != SQLITE_DONE) return store__errno(rc);
    s = st->wst[strcmp(d->kind, "batch") == 0 ? WST_CALLBACK_STATUS_BATCH : WST_CALLBACK_STATUS_JOB];
    rc = sqlite3_bind_text(s, 1, d->ref_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(s, 2, r->outcome == STORE_DELIVERY_DELIVERED ? "delivered" : "failed", -1,
                               SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = store__step_reset(st, s);
    return rc == SQLITE_DONE ? 0 : store__errno(rc); /* 0 rows: the job was deleted meanwhile */
}

/* ---- recovery ------------------------------------------------------------------- */

/* Every job left running by a dead server: queued again while attempts
 * remain, else failed with worker_lost; the interrupted attempt is kept in
 * its history either way. Then every unfinished batch whose jobs all ended
 * is finished. Each change goes through store__job_write, so it has its
 * event, its callback and its batch's end like any other. */
int store__recover_exec(struct store *st, struct store_op *op)
{
    int ret = 0, rc;
    struct job **jobs = NULL;
    size_t n = 0, cap = 0;
    sqlite3_stmt *s = st->wst[WST_RECOVER_SCAN];
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct job *j = NULL;
        if (n == cap) {
            size_t ncap = cap ? 2 * cap : 16;
            struct job **nj = realloc(jobs, ncap * sizeof *nj);
            if (!nj) {
                ret = -ENOMEM;
                break;
            }
            jobs = nj;
            cap = ncap;
        }
        if (store__row_to_job(s, &j) == 0) jobs[n++] = j; /* a malformed row stays as it is */
    }
    if (!ret && rc != SQLITE_DONE) ret = store__errno(rc);
    (void)sqlite3_reset(s);
    int64_t now = op->recover->now_ms;
    for (size_t i = 0; i < n && !ret; i++) {
        struct job *j = jobs[i];
        bool again = j->attempt < j->max_attempts;
        char msg[128];
        snprintf(msg, sizeof msg, "the server stopped while the job was running (attempt %d of %d)", j->attempt,
                 j->max_attempts);
        j->status = JOB_FAILED;
        j->error_type = JOB_ERR_WORKER_LOST;
        j->finished_at_ms = now;
        if (job_set_str(&j->error_message, msg) < 0 || job_attempts_append(j) < 0) {
            ret = -ENOMEM;
            break;
        }
        if (again) {
            j->status = JOB_QUEUED;
            j->error_type = JOB_ERR_NONE;
            job_set_str(&j->error_message, NULL);
            j->started_at_ms = j->finished_at_ms = 0;
            j->worker_pid = 0;
            job_set_str(&j->worker_thread, NULL);
            j->progress_fraction = -1;
            job_set_str(&j->progress_message, NULL);
            op->recover->requeued++;
        } else {
            op->recover->failed++;
        }
        struct store_evrec *ev = store__evrec_job(j), **tail = &op->events;
        if (!ev) {
            ret = -ENOMEM;
            break;
        }
        while (*tail) tail = &(*tail)->next;
        *tail = ev;
        ret = store__job_write(st, op, j, false);
        if (op->rc && !ret) ret = op->rc;
    }
    for (size_t i = 0; i < n; i++) job_free(jobs[i]);
    free(jobs);
    if (ret) return ret;

    /* Batches whose last job ended in a way that did not finish them. */
    char (*ids)[ID_LEN + 1] = NULL;
    n = cap = 0;
    s = st->wst[WST_BATCH_UNFINISHED];
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(s, 0);
        if (!id || strlen(id) != ID_LEN) continue;
        if (n == cap) {
            size_t ncap = cap ? 2 * cap : 16;
            void *ni = realloc(ids, ncap * sizeof *ids);
            if (!ni) {
                ret = -ENOMEM;
                break;
            }
            ids = ni;
            cap = ncap;
        }
        memcpy(ids[n++], id, ID_LEN + 1);
    }
    if (!ret && rc != SQLITE_DONE) ret = store__errno(rc);
    (void)sqlite3_reset(s);
    for (size_t i = 0; i < n && !ret; i++) ret = batch_maybe_finish(st, op, ids[i]);
    free(ids);
    return ret;
}

/* ---- the log's bound ------------------------------------------------------------ */

int store__events_trim(struct store *st)
{
    uint64_t slack = st->ev_keep / 100 > 1024 ? st->ev_keep / 100 : 1024;
    if (st->ev_seq <= st->ev_keep || st->ev_seq - st->ev_keep < st->ev_trimmed + slack) return 0;
    uint64_t upto = st->ev_seq - st->ev_keep;
    sqlite3_stmt *s = st->wst[WST_EVENT_TRIM];
    int rc = sqlite3_bind_int64(s, 1, (sqlite3_int64)upto);
    if (rc == SQLITE_OK) rc = store__step_reset(st, s);
    if (rc != SQLITE_DONE) return store__errno(rc);
    st->ev_trimmed = upto;
    return 0;
}

int store__events_open(struct store *st)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(st->wdb, "SELECT coalesce(min(seq), 0), coalesce(max(seq), 0) FROM events", -1, &s,
                                NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        uint64_t lo = (uint64_t)sqlite3_column_int64(s, 0), hi = (uint64_t)sqlite3_column_int64(s, 1);
        st->ev_seq = hi;
        st->ev_trimmed = lo ? lo - 1 : hi;
        rc = SQLITE_OK;
    } else {
        LOG_ERROR("store: reading the event log: %s", sqlite3_errmsg(st->wdb));
    }
    sqlite3_finalize(s);
    atomic_store(&st->ev_latest, st->ev_seq);
    atomic_store(&st->ev_oldest, st->ev_trimmed + 1);
    return rc == SQLITE_OK ? 0 : store__errno(rc);
}

/* ---- reads ------------------------------------------------------------------------ */

static const char *col_text(sqlite3_stmt *s, int col)
{
    const char *t = (const char *)sqlite3_column_text(s, col);
    return t ? t : "";
}

/* A job event read back from the log: the row's status, attempt, time and
 * error type, and the job's row (joined) for what does not change or is not
 * kept per event (task, executor, created_at, max_attempts, the error message
 * when the type matches). A job deleted since is announced with what the log
 * has. Returns job_event_text's string (caller frees) or NULL. */
static char *event_text_from_row(sqlite3_stmt *s)
{
    struct job j = {0};
    char *text = NULL;
    snprintf(j.id, sizeof j.id, "%s", col_text(s, 2));
    j.status = (enum job_status)sqlite3_column_int(s, 4);
    if ((unsigned)j.status >= JOB_STATUS_COUNT) j.status = JOB_QUEUED;
    j.attempt = sqlite3_column_int(s, 5);
    int64_t at = sqlite3_column_int64(s, 6);
    j.error_type = (enum job_error_type)sqlite3_column_int(s, 7);
    if ((unsigned)j.error_type >= JOB_ERR_COUNT) j.error_type = JOB_ERR_TASK;
    j.task = (char *)sqlite3_column_text(s, 9);
    j.executor = (char *)sqlite3_column_text(s, 10);
    j.batch_id = sqlite3_column_type(s, 3) == SQLITE_NULL ? NULL : (char *)sqlite3_column_text(s, 3);
    j.created_at_ms = sqlite3_column_int64(s, 11);
    j.scheduled_at_ms = sqlite3_column_int64(s, 12);
    j.max_attempts = sqlite3_column_int(s, 15);
    if (j.status == JOB_RUNNING) {
        j.started_at_ms = at;
    } else if (job_status_terminal(j.status)) {
        j.started_at_ms = sqlite3_column_int64(s, 13);
        j.finished_at_ms = at;
    } else if (at) {
        j.scheduled_at_ms = at;
    }
    const char *etype = (const char *)sqlite3_column_text(s, 16);
    if (j.error_type != JOB_ERR_NONE && etype && strcmp(etype, job_error_type_name(j.error_type)) == 0)
        j.error_message = (char *)sqlite3_column_text(s, 17);
    text = job_event_text(&j);
    return text; /* j's strings belong to the statement: nothing else to free */
}

int store_events_read(struct store *st, uint64_t after_seq, int limit, store_event_cb cb, void *ctx)
{
    struct store_reader *r = NULL;
    int n = 0, rc;
    int ret = store__reader_get(st, &r);
    if (ret) return ret;
    sqlite3_stmt *s = r->events;
    rc = sqlite3_bind_int64(s, 1, (sqlite3_int64)after_seq);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(s, 2, limit);
    while (rc == SQLITE_OK || rc == SQLITE_ROW) {
        rc = sqlite3_step(s);
        if (rc != SQLITE_ROW) break;
        bool job = sqlite3_column_int(s, 1) == 0;
        char *built = job ? event_text_from_row(s) : NULL;
        if (job && !built) {
            rc = SQLITE_NOMEM;
            break;
        }
        struct store_event ev = {.seq = (uint64_t)sqlite3_column_int64(s, 0),
                                 .type = job ? "job" : "batch",
                                 .job_id = col_text(s, 2),
                                 .batch_id = col_text(s, 3),
                                 .data = job ? built : col_text(s, 8)};
        cb(ctx, &ev);
        free(built);
        n++;
    }
    ret = rc == SQLITE_DONE ? n : rc == SQLITE_NOMEM ? -ENOMEM : store__read_errno(r, rc);
    (void)sqlite3_reset(s);
    (void)sqlite3_clear_bindings(s);
    store__reader_put(st, r);
    return ret;
}

static int dup_col(sqlite3_stmt *s, int col, char **out)
{
    const char *t = (const char *)sqlite3_column_text(s, col);
    *out = NULL;
    if (t && !(*out = strdup(t))) return -ENOMEM;
    return 0;
}

int store_batch_get(struct store *st, const char *id_or_key, bool by_key, struct store_batch *out)
{
    struct store_reader *r = NULL;
    memset(out, 0, sizeof *out);
    if (!id_or_key) return -EINVAL;
    int ret = store__reader_get(st, &r);
    if (ret) return ret;
    sqlite3_stmt *s = by_key ? r->batch_by_key : r->batch_get;
    int rc = sqlite3_bind_text(s, 1, id_or_key, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        snprintf(out->id, sizeof out->id, "%s", col_text(s, 0));
        out->total = sqlite3_column_int64(s, 1);
        out->created_at_ms = sqlite3_column_int64(s, 2);
        out->finished_at_ms = sqlite3_column_int64(s, 3);
        if (dup_col(s, 4, &out->callback_url) || dup_col(s, 5, &out->callback_status) ||
            dup_col(s, 6, &out->idempotency_key))
            ret = -ENOMEM;
    } else {
        ret = rc == SQLITE_DONE ? -ENOENT : store__read_errno(r, rc);
    }
    (void)sqlite3_reset(s);
    (void)sqlite3_clear_bindings(s);
    if (!ret) {
        s = r->batch_counts;
        rc = sqlite3_bind_text(s, 1, out->id, -1, SQLITE_STATIC);
        while (rc == SQLITE_OK || rc == SQLITE_ROW) {
            rc = sqlite3_step(s);
            if (rc != SQLITE_ROW) break;
            enum job_status js;
            if (job_status_parse(col_text(s, 0), &js) == 0) out->counts[js] = sqlite3_column_int64(s, 1);
        }
        if (rc != SQLITE_DONE) ret = store__read_errno(r, rc);
        (void)sqlite3_reset(s);
        (void)sqlite3_clear_bindings(s);
    }
    store__reader_put(st, r);
    if (ret) store_batch_clear(out);
    return ret;
}

int store_deliveries_next(struct store *st, struct store_delivery *out, int max)
{
    struct store_reader *r = NULL;
    int n = 0, rc;
    int ret = store__reader_get(st, &r);
    if (ret) return ret;
    sqlite3_stmt *s = r->deliveries;
    rc = sqlite3_bind_int(s, 1, max);
    while ((rc == SQLITE_OK || rc == SQLITE_ROW) && n < max) {
        rc = sqlite3_step(s);
        if (rc != SQLITE_ROW) break;
        struct store_delivery *d = &out[n];
        d->id = sqlite3_column_int64(s, 0);
        snprintf(d->kind, sizeof d->kind, "%s", col_text(s, 1));
        snprintf(d->ref_id, sizeof d->ref_id, "%s", col_text(s, 2));
        snprintf(d->url, sizeof d->url, "%s", col_text(s, 3));
        d->attempts = sqlite3_column_int(s, 4);
        d->next_at_ms = sqlite3_column_int64(s, 5);
        n++;
    }
    ret = rc == SQLITE_DONE || rc == SQLITE_ROW ? n : store__read_errno(r, rc);
    (void)sqlite3_reset(s);
    (void)sqlite3_clear_bindings(s);
    store__reader_put(st, r);
    return ret;
}
