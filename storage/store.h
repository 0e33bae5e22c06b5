/* store.h - durable storage of jobs in SQLite.
 *
 * DESIGN. One writer thread owns the write connection. Every write (insert,
 * update, delete, progress) is queued as an op; the writer takes everything
 * queued (up to a batch limit), runs it in one BEGIN IMMEDIATE ... COMMIT, then
 * hands the batch to the callback thread (the finisher), which calls each
 * op's callback in queue order while the writer commits the next batch. So
 * a busy server commits large
 * batches and an idle one commits at once: group commit without a fixed delay.
 * One exception: a queue holding only job starts (running, progress) waits
 * up to linger_us for one more op, so a fast job's start and end share a
 * commit.
 * Reads use a pool of separate read connections (WAL: readers never wait for
 * the writer). storage/ knows nothing of HTTP or executors.
 */
#ifndef JOBD_STORE_H
#define JOBD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/job.h"

struct store;

struct store_options {
    const char *path;  /* database file; its directory is created if missing */
    bool sync_full;    /* PRAGMA synchronous=FULL (fsync per commit) instead of NORMAL */
    int max_batch;     /* ops per transaction at most; 0 = default (4096) */
    long event_log;    /* events the log keeps at least; 0 = default (100000) */
    long linger_us;    /* how long a queue of job starts alone waits for one more
                        * op before it commits; 0 = default (500), < 0 = never */
};

/* Opens (creating if needed) the database, runs migrations, and starts the
 * writer thread. Returns 0, -EINVAL (not a jobd database / newer schema),
 * -EIO/-EACCES/-EROFS (cannot open or write), -ENOMEM. */
int store_open(const struct store_options *opt, struct store **out);

/* Commits everything queued (calling its callbacks), stops the writer, closes
 * every connection and frees the store. Accepts NULL. */
void store_close(struct store *st);

/* Called on the store's callback thread once an op is committed (rc 0) or has failed
 * (negative errno: -ENOSPC disk full, -EIO, -EBUSY, -EEXIST duplicate,
 * -ENOENT no such job, -EALREADY job not terminal). `job` is the op's job,
 * handed to the callback to keep or free (NULL for deletes). Must not block:
 * every later callback waits for it. */
typedef void (*store_done_cb)(void *ctx, int rc, struct job *job);

/* Queue a write. The job is moved into the store (do not touch it after the
 * call, even on error: on error it is freed). cb may be NULL. Returns 0, or
 * -ESHUTDOWN when the store is closing (cb is then never called). */
int store_job_insert(struct store *st, struct job *job, store_done_cb cb, void *ctx);
/* Writes every mutable field of the job (status, attempt, times, progress,
 * result, error, worker, executor, callback_status) by id. */
int store_job_update(struct store *st, struct job *job, store_done_cb cb, void *ctx);
/* Updates only progress, and only while the job is running. */
int store_job_progress(struct store *st, const char *id, double fraction, const char *message);
/* Deletes a terminal job: -ENOENT if absent, -EALREADY if not terminal. */
int store_job_delete(struct store *st, const char *id, store_done_cb cb, void *ctx);

/* --- the event log ---
 *
 * Every insert and update of a job is a state change and writes one event
 * row in the same transaction: {seq, "job", job id, batch id, data} where
 * data is job_event_text() of the job as written. When a batch's last job
 * ends, a "batch" event is written too. seq increases by one per event and is
 * never reused (the log keeps the newest `event_log` events; older ones are
 * deleted). After each commit the writer calls the event callback for every
 * event of that commit, in seq order, before the ops' own callbacks. */
struct store_event {
    uint64_t seq;
    const char *type;     /* "job" or "batch" */
    const char *job_id;   /* "" for batch events */
    const char *batch_id; /* "" when none */
    const char *data;     /* JSON text */
    /* Non-NULL for committed events (not for store_events_read): the
     * listener may take `data` for itself by setting *steal to NULL (it then
     * frees it), instead of copying it. */
    char **steal;
};
/* Lent for the call; runs on the callback thread (or the reading thread for
 * store_events_read) and must not block. */
typedef void (*store_event_cb)(void *ctx, const struct store_event *ev);
/* Sets the listener of committed events (NULL: none). Any thread; once it
 * returns (off the store's threads) the previous listener is not running and
 * will not be called again. */
void store_set_event_cb(struct store *st, store_event_cb cb, void *ctx);
/* Calls cb for up to `limit` events with seq > after_seq, oldest first, from
 * the log. Returns the number read (>= 0) or a negative errno. */
int store_events_read(struct store *st, uint64_t after_seq, int limit, store_event_cb cb, void *ctx);
/* The seq of the newest committed event (0: none yet) and of the oldest the
 * log still holds (latest + 1 when it is empty). Any thread, no I/O. */
void store_events_range(struct store *st, uint64_t *oldest, uint64_t *latest);

/* --- batches ---
 *
 * A batch row is inserted with all its jobs in one op, all or nothing. The
 * batch is finished, in the transaction of its last job's terminal update,
 * when none of its jobs is scheduled, queued or running any more: then
 * finished_at_ms is set, a "batch" event written, and, with a callback_url,
 * callback_status becomes "pending" and a delivery is queued. Recovery
 * finishes batches whose last job ended without that (worker_lost). */
struct store_batch {
    char id[ID_LEN + 1];
    int64_t total;
    int64_t counts[JOB_STATUS_COUNT]; /* reads only */
    int64_t created_at_ms, finished_at_ms; /* 0 = not finished */
    char *callback_url;    /* owned, may be NULL */
    char *callback_status; /* owned, may be NULL */
    char *idempotency_key; /* owned, may be NULL */
};
void store_batch_clear(struct store_batch *b); /* frees the strings; accepts a zeroed struct */
/* Called once on the callback thread: rc 0, -EEXIST (a batch with the same
 * idempotency key or a job id collision: nothing was written) or a
 * transaction errno. The jobs array (n jobs, in order) is handed back to the
 * callee, which frees each job and the array. */
typedef void (*store_batch_done_cb)(void *ctx, int rc, struct job **jobs, size_t n);
/* Queues the insert of batch b (its strings copied) and of the n jobs
 * (array and jobs moved in; freed on error). Returns 0 or -ESHUTDOWN/-ENOMEM
 * (cb not called). */
int store_batch_insert(struct store *st, const struct store_batch *b, struct job **jobs, size_t n,
                       store_batch_done_cb cb, void *ctx);
/* The batch with its counts by status: 0, -ENOENT or -EIO. by_key looks it
 * up by idempotency key instead of id. The caller clears *out. */
int store_batch_get(struct store *st, const char *id_or_key, bool by_key, struct store_batch *out);

/* --- callback deliveries ---
 *
 * A job that ends with a callback_url (its callback_status is set to
 * "pending" by the writer) gets a delivery row in the same transaction; so
 * does a finished batch with one. The deliverer (core/callbacks.c) reads due
 * deliveries and reports each attempt's outcome. */
struct store_delivery {
    int64_t id;
    char kind[8];             /* "job" or "batch" */
    char ref_id[ID_LEN + 1];  /* the job or batch id */
    char url[2048];
    int attempts;             /* attempts made so far */
    int64_t next_at_ms;       /* wall ms when it is due */
};
/* The deliveries with the earliest next_at_ms (due or not), up to max, into
 * out. Returns the number (>= 0) or a negative errno. */
int store_deliveries_next(struct store *st, struct store_delivery *out, int max);
enum store_delivery_outcome { STORE_DELIVERY_DELIVERED, STORE_DELIVERY_FAILED, STORE_DELIVERY_RETRY };
/* Records one attempt: DELIVERED / FAILED delete the delivery and set the
 * job's or batch's callback_status to "delivered" / "failed"; RETRY keeps it
 * with attempts and next_at_ms. done (may be NULL) runs on the callback thread
 * after the commit with 0 or a negative errno. Returns 0 or -ESHUTDOWN/-ENOMEM
 * (done not called). */
typedef void (*store_delivery_done_cb)(void *ctx, int rc);
int store_delivery_record(struct store *st, const struct store_delivery *d, enum store_delivery_outcome outcome,
                          const char *last_error, store_delivery_done_cb done, void *ctx);

/* Blocks until every op queued before the call is committed. For tests and shutdown. */
void store_sync(struct store *st);

/* Reads: each uses a pooled read connection and never waits for the writer. */

/* The job with this id: 0 and *out (caller frees), -ENOENT, or -EIO. */
int store_job_get(struct store *st, const char *id, struct job **out);
/* The job with this idempotency key: 0 and *out, or -ENOENT. */
int store_job_get_by_idempotency(struct store *st, const char *key, struct job **out);

struct store_filter {
    unsigned status_mask; /* bit (1 << status); 0 = any */
    const char *task;     /* NULL = any */
    const char *executor;
    const char *batch_id;
    const char *before_id; /* keyset cursor: only ids < before_id; NULL = from newest */
    /* Search text, NULL = none: a job matches when its id equals q, or q
     * occurs (ASCII case-insensitive, as LIKE) in its args, result or error
     * message. A scan of the rows the other filters select, in id order,
     * until the page is full. */
    const char *q;
    int limit; /* 1..1000 */
};

/* Jobs newest first. *out is an array of *n jobs (free with store_jobs_free).
 * next_cursor gets the id to pass as before_id for the next page, or "" when
 * this page is the last. */
int store_job_list(struct store *st, const struct store_filter *f, struct job ***out, size_t *n,
                   char next_cursor[ID_LEN + 1]);
void store_jobs_free(struct job **jobs, size_t n);

/* Number of jobs in each status. */
int store_count_by_status(struct store *st, int64_t counts[JOB_STATUS_COUNT]);

/* Recovery, run once at start before jobs are dispatched: every job left
 * `running` by a dead server is set `queued` when attempt < max_attempts, else
 * `failed` with error worker_lost. Counts what it did in *requeued, *failed. */
int store_recover(struct store *st, int64_t now_ms, int *requeued, int *failed);

/* Calls cb for every `scheduled` and `queued` job, oldest first; cb owns the
 * job. Runs on the caller's thread with a read connection. Returns 0 or -EIO. */
typedef void (*store_job_cb)(void *ctx, struct job *job);
int store_scan_pending(struct store *st, store_job_cb cb, void *ctx);

/* Retention pruning (storage/store_prune.c). A *pass* deletes every terminal
 * job that finished before its status's cutoff, in small batches; each batch
 * is one op in the writer's queue, so other writes interleave between
 * batches and a pass never holds the writer for long.
 *
 * How a batch finds its rows without a full scan: it walks the (status, id)
 * index of one status in id order from the pass's cursor, only over ids
 * made before the cutoff. Ids sort by creation time and a job is created
 * before it finishes, so every job finished before the cutoff lies in that
 * range; the few in it that finished later (long runs, delayed starts) are
 * stepped over by the cursor and taken by a later pass. A batch examines at
 * most `limit` index entries, deleted or not. */
struct store_prune {
    /* In, set before the first batch of a pass and left alone after. */
    int64_t cutoff_ms[JOB_STATUS_COUNT]; /* terminal statuses only: delete the jobs of that status that
                                            finished before this wall time (ms); 0 = keep them all */
    int limit;                           /* index entries examined per batch, 1..10000; 0 = 500 */
    /* In/out: the progress of the pass. Zero the struct to begin a pass. */
    char after[JOB_STATUS_COUNT][ID_LEN + 1]; /* keyset cursor per status, "" = from the oldest */
    bool exhausted[JOB_STATUS_COUNT];
    /* Out, from the last batch only. */
    int64_t deleted[JOB_STATUS_COUNT]; /* jobs deleted, by status */
    int64_t examined;                  /* index entries looked at */
    bool done;                         /* every status's range is walked: the pass is over */
};

/* Runs one batch of a pass on the writer thread and waits for it (like
 * store_recover, so not from a store callback: -EDEADLK). Returns 0 (see
 * p->deleted, p->done), -EINVAL (bad limit or cutoff on a non-terminal status),
 * -ESHUTDOWN (closing), -ENOMEM, or the errno of a failed transaction (then
 * nothing of this batch was deleted and the cursors did not move). */
int store_prune_batch(struct store *st, struct store_prune *p);

/* Histogram buckets of the writer's transactions (every batch, committed or
 * rolled back). batch_hist[i] counts batches of at most (1 << i) ops and more
 * than (1 << (i - 1)); commit_hist[i] batches whose BEGIN..COMMIT took at most
 * store_commit_bounds_ns[i] and more than the bound before. The last entry of
 * each counts the rest (+Inf). Not cumulative; the total of either is the
 * number of batches, and the batch sizes add up to ops + failed_ops. */
#define STORE_BATCH_BUCKETS 13 /* 1, 2, 4, ... 4096 ops (the default max_batch) */
#define STORE_COMMIT_BUCKETS 14
extern const uint64_t store_commit_bounds_ns[STORE_COMMIT_BUCKETS];

struct store_stats {
    uint64_t commits;       /* transactions committed */
    uint64_t ops;           /* ops committed */
    uint64_t failed_ops;    /* ops that failed */
    uint64_t last_batch;    /* ops in the last transaction */
    uint64_t max_batch;     /* largest transaction */
    uint64_t commit_ns_sum; /* time spent in BEGIN..COMMIT */
    uint64_t queued;        /* ops waiting now */
    uint64_t batch_hist[STORE_BATCH_BUCKETS + 1];
    uint64_t commit_hist[STORE_COMMIT_BUCKETS + 1];
};
void store_get_stats(struct store *st, struct store_stats *out);

#endif
