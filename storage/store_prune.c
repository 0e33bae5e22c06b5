/* store_prune.c - retention: deleting finished jobs past their cutoff, in
 * small batches run by the writer thread.
 *
 * DESIGN. A prune batch is an op like any other (OP_PRUNE): it runs on the
 * writer connection inside the writer's transaction, between the ops queued
 * before and after it, so pruning needs no second writer connection and
 * never waits on a database lock. The caller (the core's retention thread)
 * runs batches one after another until the pass is done; between two
 * batches the writer commits whatever else arrived, so a pass holds the
 * writer for one batch at a time (`limit` index entries, 500 by default).
 *
 * Finding the rows. finished_at_ms has no index, and adding one would cost
 * every job state change an index write. Instead a batch walks the
 * (status, id) index, which exists for listing and counting: ids begin with
 * their creation time (common/id.h) and a job finishes after it was created,
 * so every job of status S that finished before the cutoff has
 * (S, id < id_make(cutoff, 0)). The walk reads that range in id order from a
 * cursor (the last id seen), checks finished_at_ms (a primary-key lookup per
 * entry), and deletes what is old enough. Entries in the range that finished
 * later (a job that was delayed or ran long) are stepped over and taken by a
 * later pass, when the cutoff has moved past them. Work per pass is the rows
 * deleted plus those few; an idle database costs one empty index probe per
 * status. A terminal job without finished_at_ms (never written by this jobd)
 * counts as finished when it was created.
 *
 * The ids to delete are collected first and deleted after the scan statement
 * is reset, so no statement modifies the table under an open cursor on it.
 * Freed pages go to SQLite's freelist and are reused by later inserts, so
 * under a steady load the file stops growing once pruning keeps pace; the
 * file never shrinks (no VACUUM: it would rewrite the whole database while
 * holding the writer).
 */
#include "store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../common/id.h"
#include "../common/log.h"
#include "store_int.h"

#define PRUNE_DEFAULT_LIMIT 500
#define PRUNE_MAX_LIMIT 10000

/* INDEXED BY: the plan must be a range of jobs_status in id order, whatever
 * the planner's statistics say; a scan of the primary key would step over
 * every job of the other statuses without counting them against the limit.
 * The finished-at test is done in C for the same reason: in the WHERE clause,
 * rows failing it would not count against LIMIT. */
static const char prune_scan_sql[] =
    "SELECT id, COALESCE(finished_at_ms, created_at_ms) FROM jobs INDEXED BY jobs_status "
    "WHERE status = ?1 AND id > ?2 AND id < ?3 ORDER BY id LIMIT ?4";
static const char prune_delete_sql[] = "DELETE FROM jobs WHERE id = ?1 AND status = ?2";

int store__prune_prepare(struct store *st)
{
    int ret = store__prepare(st->wdb, prune_scan_sql, &st->prune_scan);
    if (ret == 0) ret = store__prepare(st->wdb, prune_delete_sql, &st->prune_delete);
    return ret;
}

void store__prune_finalize(struct store *st)
{
    /* accepts NULL; returns the last step's error only, already handled */
    sqlite3_finalize(st->prune_scan);
    sqlite3_finalize(st->prune_delete);
    st->prune_scan = st->prune_delete = NULL;
}

/* Logs a failed step with SQLite's message; resets the statement and drops
 * its bindings either way. Returns the step's SQLite code. */
static int prune_step(struct store *st, sqlite3_stmt *s, bool reset)
{
    int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        LOG_ERROR("store: prune failed: %s (%s)", sqlite3_errmsg(st->wdb), sqlite3_errstr(rc));
    if (reset || (rc != SQLITE_DONE && rc != SQLITE_ROW)) {
        (void)sqlite3_reset(s); /* repeats the step's error, handled above */
        (void)sqlite3_clear_bindings(s);
    }
    return rc;
}

/* Walks up to `budget` index entries of one status from its cursor and
 * deletes the jobs old enough. Adds to p->deleted[status] and p->examined,
 * moves the cursor, and marks the status exhausted when its range ends.
 * Returns 0 or the negative errno of a failed statement. */
static int prune_status(struct store *st, struct store_prune_result *r, int status, int budget)
{
    struct store_prune *p = &r->work;
    sqlite3_stmt *scan = st->prune_scan, *del = st->prune_delete;
    const char *name = job_status_name((enum job_status)status);
    static const uint8_t zero[10];
    char cutoff_id[ID_LEN + 1], from[ID_LEN + 1];
    int n_seen = 0, n_old = 0, rc = SQLITE_OK;
    bool malformed = false;
    id_make(p->cutoff_ms[status], zero, cutoff_id); /* the smallest id of the cutoff millisecond */
    memcpy(from, p->after[status], sizeof from);     /* the cursor moves while the scan runs */
    from[ID_LEN] = '\0';

    /* Strings bound SQLITE_STATIC: they outlive the reset below, unchanged. */
    rc = sqlite3_bind_text(scan, 1, name, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(scan, 2, from, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(scan, 3, cutoff_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(scan, 4, budget);
    if (rc != SQLITE_OK) {
        LOG_ERROR("store: prune: cannot bind: %s", sqlite3_errstr(rc));
        (void)sqlite3_reset(scan);
        (void)sqlite3_clear_bindings(scan);
        return store__errno(rc);
    }
    while ((rc = prune_step(st, scan, false)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(scan, 0);
        int64_t finished_ms = sqlite3_column_int64(scan, 1);
        n_seen++;
        if (!id || strlen(id) != ID_LEN) {
            /* Not an id jobd writes (inserts check id_valid): the cursor cannot
             * step past it, so this pass ends here for this status. */
            LOG_WARN("store: prune: a %s job has a malformed id; pruning stops at it", name);
            malformed = true;
            break;
        }
        memcpy(p->after[status], id, ID_LEN + 1);
        if (finished_ms < p->cutoff_ms[status]) memcpy(r->ids[n_old++], id, ID_LEN + 1);
    }
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return store__errno(rc); /* prune_step reset it */
    (void)sqlite3_reset(scan); /* after DONE or ROW: returns SQLITE_OK */
    (void)sqlite3_clear_bindings(scan);
    p->examined += n_seen;
    if (n_seen < budget || malformed) p->exhausted[status] = true;

    for (int i = 0; i < n_old; i++) {
        rc = sqlite3_bind_text(del, 1, r->ids[i], ID_LEN, SQLITE_STATIC);
        if (rc == SQLITE_OK) rc = sqlite3_bind_text(del, 2, name, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK) rc = prune_step(st, del, true);
        if (rc != SQLITE_DONE) return store__errno(rc);
        p->deleted[status] += sqlite3_changes(st->wdb);
    }
    return 0;
}

int store__prune_exec(struct store *st, struct store_prune_result *r)
{
    struct store_prune *p = &r->work;
    int budget = p->limit;
    int ret = 0;
    for (int s = 0; s < JOB_STATUS_COUNT && budget > 0; s++) {
        if (!job_status_terminal((enum job_status)s) || p->cutoff_ms[s] <= 0 || p->exhausted[s]) continue;
        int64_t before = p->examined;
        if ((ret = prune_status(st, r, s, budget))) return ret;
        budget -= (int)(p->examined - before);
    }
    p->done = true;
    for (int s = 0; s < JOB_STATUS_COUNT; s++)
        if (job_status_terminal((enum job_status)s) && p->cutoff_ms[s] > 0 && !p->exhausted[s]) p->done = false;
    return 0;
}

int store_prune_batch(struct store *st, struct store_prune *p)
{
    int ret = 0;
    struct store_prune_result res = {.work = *p};
    struct store_op *op = NULL;
    if (p->limit < 0 || p->limit > PRUNE_MAX_LIMIT) return -EINVAL;
    for (int s = 0; s < JOB_STATUS_COUNT; s++) {
        /* ids carry 48 bits of milliseconds */
        if (p->cutoff_ms[s] < 0 || p->cutoff_ms[s] >= (INT64_C(1) << 48)) return -EINVAL;
        if (p->cutoff_ms[s] && !job_status_terminal((enum job_status)s)) return -EINVAL;
    }
    /* store_sync would not wait on the writer thread (see store_recover) */
    if (store__on_store_thread(st)) return -EDEADLK;
    if (!res.work.limit) res.work.limit = PRUNE_DEFAULT_LIMIT;
    memset(res.work.deleted, 0, sizeof res.work.deleted);
    res.work.examined = 0;
    res.work.done = false;
    if (!(res.ids = malloc((size_t)res.work.limit * sizeof *res.ids)) || !(op = calloc(1, sizeof *op))) {
        ret = -ENOMEM;
        goto out;
    }
    op->kind = OP_PRUNE;
    op->prune = &res;
    if ((ret = store__enqueue(st, op))) goto out;
    op = NULL; /* the writer frees it */
    store_sync(st); /* the writer filled res before advancing q_done (q_lock) */
    if ((ret = res.rc) == 0) {
        res.work.limit = p->limit; /* hand back the caller's own setting */
        *p = res.work;
    }
out:
    free(op);
    free(res.ids);
    return ret;
}
