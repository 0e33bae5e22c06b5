/* store_int.h - private to storage/: the store's struct, its write ops, the
 * read-connection pool, and the helpers its files share.
 *
 * Files: store.c (open, close, pragmas, schema and migrations, stats),
 * store_writer.c (the op queue and the writer thread), store_finish.c (the
 * finisher thread: callbacks of committed batches), store_events.c (event
 * log, batches, deliveries), store_read.c (the reader pool and every read),
 * store_prune.c (retention pruning). Internal
 * cross-file names start `store__`.
 * Nothing outside storage/ includes this header, except tests/unit/test_store.c
 * for the test seams at its end.
 *
 * LOCKS. Three, never held together, and nothing calls out (SQLite, callbacks)
 * while holding any:
 *   q_lock    guards the op queue, the closing/paused flags, the batch hook and
 *             the stats;
 *   f_lock    guards the finisher's FIFO of committed batches;
 *   pool_lock guards the stack of idle read connections.
 * The writer connection and its statements need no lock: store_open owns them
 * until it starts the writer thread, then the writer thread alone uses them,
 * then store_close takes them back after joining it. A read connection is used
 * by one thread at a time: whoever popped it from the pool.
 */
#ifndef JOBD_STORE_INT_H
#define JOBD_STORE_INT_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>

#include "store.h"

/* The columns of `jobs` in the one order every SELECT lists them and the
 * insert binds them (parameter ?N is column N-1). Keep in step with
 * enum store_col and with the schema in store.c. */
#define STORE_JOB_COLUMNS                                                                          \
    "id, task, args, executor, status, priority, attempt, max_attempts, timeout_ms, "              \
    "retry_backoff_ms, created_at_ms, scheduled_at_ms, started_at_ms, finished_at_ms, "            \
    "progress_fraction, progress_message, result, error_type, error_message, worker_pid, "         \
    "worker_thread, batch_id, depends_on, concurrency_key, concurrency_limit, idempotency_key, "   \
    "callback_url, callback_status, attempts"

enum store_col {
    COL_ID,
    COL_TASK,
    COL_ARGS,
    COL_EXECUTOR,
    COL_STATUS,
    COL_PRIORITY,
    COL_ATTEMPT,
    COL_MAX_ATTEMPTS,
    COL_TIMEOUT_MS,
    COL_RETRY_BACKOFF_MS,
    COL_CREATED_AT_MS,
    COL_SCHEDULED_AT_MS,
    COL_STARTED_AT_MS,
    COL_FINISHED_AT_MS,
    COL_PROGRESS_FRACTION,
    COL_PROGRESS_MESSAGE,
    COL_RESULT,
    COL_ERROR_TYPE,
    COL_ERROR_MESSAGE,
    COL_WORKER_PID,
    COL_WORKER_THREAD,
    COL_BATCH_ID,
    COL_DEPENDS_ON,
    COL_CONCURRENCY_KEY,
    COL_CONCURRENCY_LIMIT,
    COL_IDEMPOTENCY_KEY,
    COL_CALLBACK_URL,
    COL_CALLBACK_STATUS,
    COL_ATTEMPTS,
    COL_COUNT
};

enum store_op_kind { OP_INSERT, OP_UPDATE, OP_PROGRESS, OP_DELETE, OP_RECOVER, OP_PRUNE, OP_BATCH, OP_DELIVERY };

/* One event of the log (storage/store_events.c): made with its data by the
 * queueing thread (job events) or the writer (batch events, recovery), given
 * its seq by the writer, handed to the event callback after the commit. */
struct store_evrec {
    struct store_evrec *next;
    uint64_t seq; /* 0 until written */
    char type[8]; /* "job" or "batch" */
    char job_id[ID_LEN + 1];   /* "" for a batch event */
    char batch_id[ID_LEN + 1]; /* "" when none */
    char *data;                /* owned: the event's JSON, as announced after the commit */
    /* What the log row keeps of a job event (the rest is the job's row, joined
     * when the log is read back): a few integers instead of the JSON, which
     * would double the bytes written per state change. */
    int status, attempt, error_type;
    int64_t at_ms; /* when the change happened: started_at for running, finished_at for an end, else scheduled_at */
};

/* Where a prune op works; lives on store_prune_batch's stack, which waits
 * (store_sync) for the writer. The writer works on `work`, a copy of the
 * caller's struct, and the caller copies it back only when rc is 0, so a
 * rolled-back batch leaves the caller's cursors and counts as they were. */
struct store_prune_result {
    struct store_prune work;
    char (*ids)[ID_LEN + 1]; /* scratch for work.limit ids, allocated by the caller */
    int rc;
};

/* Where a recover op leaves its result; lives on store_recover's stack, which
 * waits (store_sync) until the writer has filled it. */
struct store_recover_result {
    int64_t now_ms;
    int rc;
    int requeued;
    int failed;
};

/* Where an OP_DELIVERY's input lives (owned by the op). */
struct store_delivery_result {
    struct store_delivery d;
    enum store_delivery_outcome outcome;
    char *last_error;
    store_delivery_done_cb done;
    void *ctx;
};

/* What the writer learnt of a batch, kept in its head op for the finisher. */
struct store_batch_done {
    struct store_op *next_batch; /* the finisher's FIFO (f_lock) */
    uint64_t n;                  /* ops in the batch */
    int rc;                      /* the transaction's outcome */
    int64_t dt_ns;               /* BEGIN..COMMIT */
    store_event_cb ecb;          /* the event callback when the writer took it */
    void *ectx;
};

/* One queued write. Made by the queueing thread, then owned by the queue
 * (q_lock), then by the writer thread, then by the finisher, which frees it
 * after its callback. */
struct store_op {
    struct store_op *next;
    enum store_op_kind kind;
    int rc;                              /* the op's outcome, set by the writer */
    struct job *job;                     /* insert, update: owned, handed to cb */
    char id[ID_LEN + 1];                 /* progress, delete */
    double fraction;                     /* progress; < 0 stored as NULL */
    char *message;                       /* progress; owned, may be NULL */
    struct store_recover_result *recover; /* recover: not owned */
    struct store_prune_result *prune;     /* prune: not owned */
    store_done_cb cb;                    /* insert, update, delete; may be NULL */
    void *ctx;
    struct store_op *superseded_by;      /* writer only: a later update of the same job in this batch */
    /* Events of this op, in seq order once written (owned). An insert or
     * update carries its job's event from the queueing thread; the writer
     * appends batch events and those of recovery. */
    struct store_evrec *events;
    /* OP_BATCH: the batch row and its jobs (owned until handed to bcb). */
    struct store_batch *batch;
    struct job **jobs;
    size_t n_jobs;
    store_batch_done_cb bcb;
    /* OP_DELIVERY */
    struct store_delivery_result *delivery;
    struct store_batch_done done; /* a batch's head op only */
};

/* Cached statements of the writer connection (prepared once in store_open). */
enum store_wstmt {
    WST_BEGIN,
    WST_COMMIT,
    WST_ROLLBACK,
    WST_INSERT,
    WST_UPDATE,
    WST_PROGRESS,
    WST_DELETE,
    WST_EXISTS,
    WST_RECOVER_SCAN,
    WST_EVENT_INSERT,
    WST_EVENT_TRIM,
    WST_BATCH_PENDING,
    WST_BATCH_FINISH,
    WST_BATCH_COUNTS,
    WST_BATCH_INSERT,
    WST_BATCH_UNFINISHED,
    WST_DELIVERY_INSERT,
    WST_DELIVERY_DELETE,
    WST_DELIVERY_RETRY,
    WST_CALLBACK_STATUS_JOB,
    WST_CALLBACK_STATUS_BATCH,
    WST_SAVEPOINT,
    WST_RELEASE,
    WST_ROLLBACK_TO,
    WST_COUNT
};

/* store_job_list caches one statement per filter shape: which of task,
 * executor, batch_id, before_id, q are set (5 bits) x how many statuses (0 = any). */
#define STORE_LIST_SHAPES 32

/* A read connection and its statements. In the pool (pool_lock) or in the
 * hands of exactly one reading thread. */
struct store_reader {
    struct store_reader *next;
    sqlite3 *db;
    sqlite3_stmt *get;
    sqlite3_stmt *get_by_idempotency;
    sqlite3_stmt *count;
    sqlite3_stmt *scan[2];    /* store_scan_pending: scheduled, then queued jobs, each in id order */
    sqlite3_stmt *events;     /* store_events_read */
    sqlite3_stmt *batch_get;  /* store_batch_get, by id or idempotency key */
    sqlite3_stmt *batch_by_key;
    sqlite3_stmt *batch_counts;
    sqlite3_stmt *deliveries; /* store_deliveries_due */
    sqlite3_stmt *list[STORE_LIST_SHAPES][JOB_STATUS_COUNT]; /* prepared on first use */
};

/* Test seam: called on the writer thread before each batch, outside any
 * transaction, with the writer connection (e.g. to set max_page_count). */
typedef void (*store_batch_hook_cb)(void *ctx, sqlite3 *db);

struct store {
    /* Immutable once store_open returns. */
    char *path;
    bool sync_full;
    int max_batch;
    long linger_us; /* < 0: never linger (see linger_for_more in store_writer.c) */

    /* Writer connection: see LOCKS above. */
    sqlite3 *wdb;
    sqlite3_stmt *wst[WST_COUNT];
    sqlite3_stmt *prune_scan, *prune_delete; /* store_prune.c's statements, same rules as wst */
    struct store_op **dedup; /* writer thread only: open-addressing table, 2 * max_batch slots */
    pthread_t writer;
    bool writer_started; /* written by open before the thread exists, read by close */
    /* The finisher thread runs the callbacks of committed batches, in commit
     * order, while the writer commits the next one (store_writer.c). f_lock
     * guards its FIFO, f_stop and f_busy. */
    pthread_t finisher;
    bool finisher_started; /* like writer_started */
    pthread_mutex_t f_lock;
    pthread_cond_t f_wake;
    struct store_op *f_head, *f_tail; /* batches (their head ops), linked by done.next_batch */
    bool f_stop;
    bool f_busy; /* the finisher is running batches it took */

    /* q_lock guards every field of this block. */
    pthread_mutex_t q_lock;
    pthread_cond_t q_wake; /* the writer waits here for ops, closing or resume */
    pthread_cond_t q_idle; /* store_sync waits here for q_done to advance */
    struct store_op *q_head, *q_tail; /* FIFO of ops not yet taken by the writer */
    uint64_t q_len;                   /* ops in the FIFO */
    uint64_t q_seq;                   /* ops ever accepted */
    uint64_t q_done;                  /* ops ever finished (callbacks returned); FIFO
                                         order makes q_done >= n mean "the first n are done" */
    bool closing;                     /* set by store_close: accept nothing more */
    bool paused;                      /* test seam: the writer takes nothing while set */
    int syncing;                      /* store_sync callers waiting: the writer does not linger */
    store_batch_hook_cb hook;         /* test seam */
    void *hook_ctx;
    struct store_stats stats; /* .queued unused: q_len is the truth */
    store_event_cb event_cb;  /* read by the writer with each batch it takes */
    void *event_ctx;

    /* The event log. ev_seq and ev_trimmed are the writer's (store_open's
     * before it starts); ev_latest and ev_oldest are published after each
     * commit for readers (atomics, any thread). */
    uint64_t ev_keep;    /* events kept at least (the log's bound) */
    uint64_t ev_seq;     /* the last seq written, committed or not */
    uint64_t ev_trimmed; /* every seq <= this is deleted */
    /* Events given their seq but not inserted yet (writer only): they go
     * STORE_EV_ROWS at a time through one multi-row INSERT (ev_insert_n),
     * the rest before the batch's COMMIT (store__events_flush). One
     * statement per event row was ~30% of the writer's work. */
    struct store_evrec *ev_pend[16];
    int ev_npend;
    sqlite3_stmt *ev_insert_n;
    /* Batches one of whose jobs ended in the open transaction (writer only):
     * whether each is finished is probed once, before COMMIT
     * (store__batches_finish), not once per job - that probe was ~14% of
     * the writer's time with batches of 100. */
    char (*bend)[ID_LEN + 1];
    size_t bend_n, bend_cap;
    _Atomic uint64_t ev_latest, ev_oldest;

    /* pool_lock guards every field of this block. */
    pthread_mutex_t pool_lock;
    struct store_reader *pool; /* idle read connections (a stack) */
    int readers_open;          /* read connections alive, idle or lent */
};

/* SQLite result code -> negative errno (SQLITE_FULL -> -ENOSPC, SQLITE_IOERR
 * -> -EIO, SQLITE_BUSY/LOCKED -> -EBUSY, ...). Never 0 for an error code. */
int store__errno(int sqlite_rc);

/* Prepares sql on db as a long-lived statement. Returns 0 or a negative
 * errno, after logging SQLite's message. */
int store__prepare(sqlite3 *db, const char *sql, sqlite3_stmt **out);

/* Applies the connection pragmas shared by writer and readers (busy timeout,
 * foreign_keys, temp_store, cache size). Returns 0 or a negative errno. */
int store__pragmas_common(sqlite3 *db, bool writer);

/* Writer side (store_writer.c). */
int store__writer_prepare(struct store *st);
int store__writer_start(struct store *st);
/* The finisher (store_finish.c): start (0 or -ENOMEM), stop (after the
 * writer has stopped: runs what is left, joins; accepts one never started),
 * and the writer's hand-off of a committed or rolled-back batch. */
int store__finisher_start(struct store *st);
void store__finisher_stop(struct store *st);
void store__finisher_hand_off(struct store *st, struct store_op *batch);
/* True on the writer or the finisher thread (inside a store callback). */
bool store__on_store_thread(struct store *st);
/* Stops accepting ops, lets the writer commit what is queued, joins it. */
void store__writer_stop(struct store *st);
/* Appends an op to the writer's FIFO. Returns 0, or -ESHUTDOWN when the
 * store is closing (the op stays the caller's). */
int store__enqueue(struct store *st, struct store_op *op);
void store__writer_finalize(struct store *st);

/* Pruning (store_prune.c), on the writer connection. prepare: 0 or a
 * negative errno; finalize accepts statements never prepared. exec runs a
 * prune op inside the open transaction and returns 0, or a negative errno:
 * any failure of its statements is treated as the transaction's (the batch is
 * rolled back), so a batch never half-counts its deletions. */
int store__prune_prepare(struct store *st);
void store__prune_finalize(struct store *st);
int store__prune_exec(struct store *st, struct store_prune_result *r);

/* Reader side (store_read.c). Closes every idle read connection. */
void store__readers_close(struct store *st);
/* Borrows a read connection from the pool (opening one when none is idle) and
 * gives it back. 0 or a negative errno. */
int store__reader_get(struct store *st, struct store_reader **out);
void store__reader_put(struct store *st, struct store_reader *r);
/* The conversion of a row in STORE_JOB_COLUMNS order to a new job. */
int store__row_to_job(sqlite3_stmt *s, struct job **out);
/* Logs a failed step on a read connection and maps its code. */
int store__read_errno(struct store_reader *r, int rc);

/* The writer's side of events, batches and deliveries (store_events.c),
 * inside the open transaction. Each returns 0 (op->rc holds the op's own
 * outcome) or a negative errno that loses the transaction. */
/* Binds and runs one job row write (insert or update) with what goes with
 * it: the job's event, a pending callback delivery when it ends, and the end
 * of its batch when it was the batch's last job. */
int store__job_write(struct store *st, struct store_op *op, struct job *job, bool insert);
/* Only the event of an update overwritten later in the same transaction. */
int store__event_write_only(struct store *st, struct store_op *op);
int store__batch_exec(struct store *st, struct store_op *op);
int store__delivery_exec(struct store *st, struct store_op *op);
int store__recover_exec(struct store *st, struct store_op *op);
/* Finishes each batch noted by a job's end in this transaction whose jobs
 * have all ended; the batches' events go with `last`, the transaction's last
 * op, so that events are announced in seq order. Forgets the notes. */
int store__batches_finish(struct store *st, struct store_op *last);
/* Inserts the events given a seq but not written yet (struct store::ev_pend).
 * 0 or the transaction's errno. Before COMMIT, and before an op that may
 * roll back to a savepoint. */
int store__events_flush(struct store *st);
/* Prepares / finalizes ev_insert_n. */
int store__events_prepare(struct store *st);
void store__events_finalize(struct store *st);
/* Deletes the oldest events past the log's bound (cheap: a rowid range). */
int store__events_trim(struct store *st);
/* Reads ev_seq and ev_trimmed at open. 0 or a negative errno. */
int store__events_open(struct store *st);
void store__evrecs_free(struct store_evrec *e);
/* A new job event for job as it is now (data = job_event_text). NULL when out of memory. */
struct store_evrec *store__evrec_job(const struct job *job);
/* Statements of the writer connection, in wst_sql order (store_writer.c). */
int store__bind_insert(sqlite3_stmt *s, const struct job *j);
int store__bind_update(sqlite3_stmt *s, const struct job *j);
int store__step_reset(struct store *st, sqlite3_stmt *s);
bool store__error_is_local(sqlite3 *db, int rc);

/* Test seams, for tests/unit/test_store.c only. */
/* While paused the writer takes no op from the queue (ops accumulate into one
 * batch). store_close overrides a pause. */
void store__debug_pause(struct store *st, bool paused);
void store__debug_set_batch_hook(struct store *st, store_batch_hook_cb fn, void *ctx);

#endif
