/* store.c - opening and closing the store: the database file, its pragmas,
 * the schema and its migrations, and the statistics. The writer thread lives
 * in store_writer.c, the reads in store_read.c; store_int.h has the struct
 * and the lock rules. */
#include "store.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/log.h"
#include "store_int.h"

#define STORE_DEFAULT_MAX_BATCH 4096
#define STORE_DEFAULT_LINGER_US 500
#define STORE_DEFAULT_EVENT_LOG 100000
#define STORE_BUSY_TIMEOUT_MS 5000

/* PRAGMA application_id of a jobd database: "jobd" in ASCII. Tells our
 * database from any other SQLite file. */
#define STORE_APPLICATION_ID 0x6A6F6264

/* THE SCHEMA, as the list of steps that build it. PRAGMA user_version is the
 * number of steps a database has had applied.
 *
 * To change the schema: append a step, never edit or reorder a released one
 * (databases in the field have already run it, and would not run it again).
 * A step ends by setting user_version to its own 1-based position; open checks
 * that it did. Each step runs in its own transaction, so a crash leaves the
 * database at the previous version and the next open carries on from there.
 * SQLite cannot ALTER a column's type or constraints: to change one, create the
 * new table, copy the rows, drop the old one and rename, all in one step
 * (https://sqlite.org/lang_altertable.html#otheralter). Add an index only for a
 * query that needs it: every index is written on every job state change and
 * costs group-commit throughput. Update STORE_JOB_COLUMNS / enum store_col in
 * store_int.h with any column change. A binary refuses (-EINVAL) a database
 * whose user_version is newer than its last step.
 *
 * v1 notes: WITHOUT ROWID makes the 26-character ULID the b-tree key (ids sort
 * by creation time, so inserts append and no separate unique index on id is
 * written). Times and worker_pid are NULL when 0 ("not yet"); progress is NULL
 * when none was reported; status and error_type are stored as their names so
 * the sqlite3 CLI shows something readable. */
static const char *const schema_steps[] = {
    /* v1 */
    "CREATE TABLE jobs ("
    " id TEXT NOT NULL PRIMARY KEY,"
    " task TEXT NOT NULL,"
    " args TEXT NOT NULL DEFAULT '{}',"
    " executor TEXT,"
    /* an OR chain, not IN (...): SQLite builds an ephemeral table for an IN
     * list of more than two constants on every statement run, which cost 40%
     * of insert/update throughput */
    " status TEXT NOT NULL CHECK (status = 'scheduled' OR status = 'queued' OR status = 'running'"
    "  OR status = 'succeeded' OR status = 'failed' OR status = 'cancelled'),"
    " priority INTEGER NOT NULL DEFAULT 0,"
    " attempt INTEGER NOT NULL DEFAULT 0,"
    " max_attempts INTEGER NOT NULL DEFAULT 1,"
    " timeout_ms INTEGER NOT NULL DEFAULT 0,"
    " retry_backoff_ms INTEGER NOT NULL DEFAULT 0,"
    " created_at_ms INTEGER NOT NULL,"
    " scheduled_at_ms INTEGER,"
    " started_at_ms INTEGER,"
    " finished_at_ms INTEGER,"
    " progress_fraction REAL,"
    " progress_message TEXT,"
    " result TEXT,"
    " error_type TEXT,"
    " error_message TEXT,"
    " worker_pid INTEGER,"
    " worker_thread TEXT,"
    " batch_id TEXT,"
    " depends_on TEXT NOT NULL DEFAULT '[]',"
    " concurrency_key TEXT,"
    " concurrency_limit INTEGER NOT NULL DEFAULT 0,"
    " idempotency_key TEXT,"
    " callback_url TEXT,"
    " callback_status TEXT"
    ") WITHOUT ROWID;"
    /* listing by status, recovery, scan of pending jobs, counts */
    "CREATE INDEX jobs_status ON jobs (status, id);"
    /* Idempotency-Key lookups, and the guarantee of one job per key */
    "CREATE UNIQUE INDEX jobs_idempotency ON jobs (idempotency_key)"
    " WHERE idempotency_key IS NOT NULL;"
    /* GET /v1/batches/{id} and ?batch= */
    "CREATE INDEX jobs_batch ON jobs (batch_id, id) WHERE batch_id IS NOT NULL;"
    "PRAGMA application_id = 1785684580;" /* STORE_APPLICATION_ID */
    "PRAGMA user_version = 1;",

    /* v2: futures (issue #4). attempts keeps each finished attempt of a job
     * (JSON array). jobs_batch gains status, so "is any job of this batch
     * still pending?" - asked on every terminal update of a batch job - is
     * three index probes, not a walk of the batch. events is the durable,
     * bounded event log behind GET /v1/events (seq is the rowid: appends,
     * and trimming the oldest is a range delete). deliveries holds the
     * callbacks still to be POSTed, so they survive a restart. */
    "ALTER TABLE jobs ADD COLUMN attempts TEXT;"
    "DROP INDEX jobs_batch;"
    "CREATE INDEX jobs_batch ON jobs (batch_id, status) WHERE batch_id IS NOT NULL;"
    "CREATE TABLE batches ("
    " id TEXT NOT NULL PRIMARY KEY,"
    " total INTEGER NOT NULL,"
    " created_at_ms INTEGER NOT NULL,"
    " finished_at_ms INTEGER,"
    " callback_url TEXT,"
    " callback_status TEXT,"
    " idempotency_key TEXT"
    ") WITHOUT ROWID;"
    "CREATE UNIQUE INDEX batches_idempotency ON batches (idempotency_key) WHERE idempotency_key IS NOT NULL;"
    /* A job event keeps integers (status and error type as enum values, the
     * time of the change) and is completed from the job's row when read back;
     * only a batch event, whose counts change no more, keeps its JSON. */
    "CREATE TABLE events ("
    " seq INTEGER PRIMARY KEY,"
    " type INTEGER NOT NULL," /* 0 job, 1 batch */
    " job_id TEXT,"
    " batch_id TEXT,"
    " status INTEGER,"
    " attempt INTEGER,"
    " at_ms INTEGER,"
    " error_type INTEGER,"
    " data TEXT);"
    /* AUTOINCREMENT: a delivery id (the Jobd-Delivery header) is never reused */
    "CREATE TABLE deliveries ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " kind TEXT NOT NULL CHECK (kind = 'job' OR kind = 'batch'),"
    " ref_id TEXT NOT NULL,"
    " url TEXT NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " next_at_ms INTEGER NOT NULL,"
    " last_error TEXT);"
    "CREATE INDEX deliveries_due ON deliveries (next_at_ms);"
    "PRAGMA user_version = 2;",
};
#define SCHEMA_VERSION ((int)(sizeof schema_steps / sizeof schema_steps[0]))

int store__errno(int sqlite_rc)
{
    /* connections run with extended result codes on */
    if (sqlite_rc == SQLITE_CONSTRAINT_UNIQUE || sqlite_rc == SQLITE_CONSTRAINT_PRIMARYKEY) return -EEXIST;
    switch (sqlite_rc & 0xff) {
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_READONLY:
        return -EROFS;
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return -EACCES;
    case SQLITE_NOTADB:
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
    case SQLITE_TOOBIG:
        return -EINVAL;
    default: /* SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_CANTOPEN, SQLITE_ERROR, ... */
        return -EIO;
    }
}

int store__prepare(sqlite3 *db, const char *sql, sqlite3_stmt **out)
{
    int rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL);
    if (rc != SQLITE_OK) {
        LOG_ERROR("store: cannot prepare statement: %s (%s)", sqlite3_errmsg(db), sql);
        *out = NULL;
        return store__errno(rc);
    }
    return 0;
}

/* Runs constant SQL (no parameters, results ignored). Returns 0 or a negative
 * errno after logging SQLite's message prefixed by `what`. */
static int exec_sql(sqlite3 *db, const char *sql, const char *what)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        LOG_ERROR("store: %s: %s", what, msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return store__errno(rc);
    }
    return 0;
}

/* Runs a constant single-row integer query such as "PRAGMA user_version".
 * Returns 0 and *out, or a negative errno. */
static int query_int(sqlite3 *db, const char *sql, int64_t *out)
{
    sqlite3_stmt *s = NULL;
    int ret = 0;
    int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(s, 0);
    } else {
        LOG_ERROR("store: %s: %s", sql, sqlite3_errmsg(db));
        ret = rc == SQLITE_DONE ? -EIO : store__errno(rc);
    }
    sqlite3_finalize(s);
    return ret;
}

int store__pragmas_common(sqlite3 *db, bool writer)
{
    (void)sqlite3_extended_result_codes(db, 1); /* only fails for a NULL db */
    int rc = sqlite3_busy_timeout(db, STORE_BUSY_TIMEOUT_MS);
    if (rc != SQLITE_OK) return store__errno(rc);
    rc = exec_sql(db, "PRAGMA foreign_keys = OFF; PRAGMA temp_store = MEMORY;", "pragmas");
    if (rc) return rc;
    /* cache_size in KiB when negative: 32 MiB for the writer, which touches
     * every index on every commit, 8 MiB per reader. A PRAGMA takes no bound
     * parameter, hence the two constants. */
    return exec_sql(db, writer ? "PRAGMA cache_size = -32768" : "PRAGMA cache_size = -8192",
                    "cache_size");
}

/* Maps an errno from the file system to the ones store_open reports. */
static int fs_errno(int e)
{
    return e == EACCES || e == EPERM ? -EACCES : e == EROFS ? -EROFS : e == ENOSPC ? -ENOSPC : -EIO;
}

/* Creates every missing directory above the file `path` (mkdir -p of its
 * dirname). Returns 0, -EACCES, -EROFS or -EIO. */
static int make_parent_dirs(const char *path)
{
    int ret = 0;
    char *dir = strdup(path);
    if (!dir) return -ENOMEM;
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) goto out; /* relative to cwd, or in "/" */
    *slash = '\0';
    for (char *p = dir + 1;; p++) {
        bool last = *p == '\0';
        if (*p != '/' && !last) continue;
        *p = '\0';
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
            int e = errno;
            LOG_ERROR("store: cannot create directory %s: %s", dir, strerror(e));
            ret = fs_errno(e);
            goto out;
        }
        if (last) break;
        *p = '/';
    }
out:
    free(dir);
    return ret;
}

/* Maps a failed sqlite3_open_v2 of `path` to an errno, from the OS error
 * behind it. SQLite retries a failed read-write open read-only, so the error
 * it keeps may be that retry's ENOENT: the directory then tells the truth. */
static int open_errno(sqlite3 *db, int rc, const char *path)
{
    int sys = db ? sqlite3_system_errno(db) : 0;
    if ((rc & 0xff) != SQLITE_CANTOPEN && (rc & 0xff) != SQLITE_PERM) return store__errno(rc);
    if (sys == EACCES || sys == EPERM || sys == EROFS) return fs_errno(sys);
    int ret = -EIO;
    char *dir = strdup(path);
    if (!dir) return -ENOMEM;
    char *slash = strrchr(dir, '/');
    const char *d = slash ? dir : ".";
    if (slash == dir)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    if (access(d, W_OK | X_OK) != 0) ret = fs_errno(errno);
    free(dir);
    return ret;
}

/* Reads the database's schema version into *version and checks that this
 * binary may use it: a jobd database no newer than SCHEMA_VERSION, or an
 * empty file. Returns 0, -EINVAL (logged), or the errno of a failed read
 * (SQLITE_NOTADB, a file that is no SQLite database, gives -EINVAL). */
static int check_identity(sqlite3 *db, const char *path, int64_t *version)
{
    int64_t app_id = 0, objects = 0;
    int ret = query_int(db, "PRAGMA user_version", version);
    if (ret == -EINVAL) LOG_ERROR("store: %s is not a SQLite database", path);
    if (ret) return ret;
    if ((ret = query_int(db, "PRAGMA application_id", &app_id))) return ret;
    if (*version == 0 && (ret = query_int(db, "SELECT count(*) FROM sqlite_schema", &objects)))
        return ret;
    if ((*version == 0 && objects > 0) || (*version > 0 && app_id != STORE_APPLICATION_ID)) {
        LOG_ERROR("store: %s is a SQLite database but not a jobd one (application_id %lld)", path,
                  (long long)app_id);
        return -EINVAL;
    }
    if (*version > SCHEMA_VERSION) {
        LOG_ERROR("store: %s has schema version %lld, newer than this jobd knows (%d);"
                  " run a newer jobd or use another database",
                  path, (long long)*version, SCHEMA_VERSION);
        return -EINVAL;
    }
    return 0;
}

/* Runs every schema step the database lacks, each in its own transaction.
 * Returns 0, -EINVAL (newer schema, or not a jobd database), or the errno of
 * a failed step. */
static int migrate(sqlite3 *db, const char *path)
{
    int ret = 0;
    for (;;) {
        int64_t version = 0;
        /* IMMEDIATE, and the check again inside: of two processes opening one
         * new file, the second sees what the first did. */
        if ((ret = exec_sql(db, "BEGIN IMMEDIATE", "begin migration"))) goto out;
        if ((ret = check_identity(db, path, &version))) goto out;
        if (version == SCHEMA_VERSION) break;
        LOG_INFO("store: migrating %s from schema version %lld to %lld", path, (long long)version,
                 (long long)version + 1);
        if ((ret = exec_sql(db, schema_steps[version], "migration"))) goto out;
        int64_t now = 0;
        if ((ret = query_int(db, "PRAGMA user_version", &now))) goto out;
        if (now != version + 1) {
            /* our bug: a step that does not set its version would loop forever */
            LOG_ERROR("store: schema step %lld left user_version at %lld", (long long)version + 1,
                      (long long)now);
            ret = -EINVAL;
            goto out;
        }
        if ((ret = exec_sql(db, "COMMIT", "commit migration"))) goto out;
    }
    ret = exec_sql(db, "COMMIT", "end of migration check");
out:
    /* The error being reported is the one that matters; ROLLBACK's own result
     * adds nothing (it only fails when there is no transaction left). */
    if (!sqlite3_get_autocommit(db)) (void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return ret;
}

/* Opens the writer connection and brings the schema up to date. */
static int open_writer(struct store *st)
{
    int ret = 0;
    int rc = sqlite3_open_v2(st->path, &st->wdb,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        LOG_ERROR("store: cannot open %s: %s", st->path,
                  st->wdb ? sqlite3_errmsg(st->wdb) : sqlite3_errstr(rc));
        ret = rc == SQLITE_NOMEM ? -ENOMEM : open_errno(st->wdb, rc, st->path);
        goto out;
    }
    if (sqlite3_db_readonly(st->wdb, "main") == 1) {
        LOG_ERROR("store: %s can only be opened read-only", st->path);
        ret = -EROFS;
        goto out;
    }
    /* The first statement reads the header: a file that is not a database,
     * or not ours, or too new, is refused here before anything is changed. */
    int64_t version = 0;
    if ((ret = check_identity(st->wdb, st->path, &version))) {
        int sys = sqlite3_system_errno(st->wdb);
        if (ret == -EIO && (sys == EACCES || sys == EPERM)) ret = -EACCES;
        /* A WAL database opens its -wal and -shm companions at the first
         * read: in a read-only directory that is SQLITE_CANTOPEN, which the
         * directory explains (-EACCES, -EROFS) better than "I/O error". */
        else if (ret == -EIO && (sqlite3_errcode(st->wdb) & 0xff) == SQLITE_CANTOPEN)
            ret = open_errno(st->wdb, SQLITE_CANTOPEN, st->path);
        goto out;
    }
    sqlite3_stmt *s = NULL;
    rc = sqlite3_prepare_v2(st->wdb, "PRAGMA journal_mode = WAL", -1, &s, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        const char *mode = (const char *)sqlite3_column_text(s, 0);
        /* Degrade rather than refuse (e.g. a file system without shared memory):
         * writes still work, reads then wait for the writer. */
        if (!mode || strcmp(mode, "wal") != 0)
            LOG_WARN("store: %s: WAL mode unavailable (journal_mode %s); reads will wait for writes",
                     st->path, mode ? mode : "?");
    } else {
        LOG_ERROR("store: %s: cannot set WAL mode: %s", st->path, sqlite3_errmsg(st->wdb));
        ret = store__errno(rc);
    }
    sqlite3_finalize(s);
    if (ret) goto out;
    if ((ret = exec_sql(st->wdb, st->sync_full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL",
                        "synchronous")))
        goto out;
    /* Truncate the WAL back to 64 MiB after a checkpoint instead of keeping
     * whatever size a burst grew it to. */
    if ((ret = exec_sql(st->wdb, "PRAGMA journal_size_limit = 67108864", "journal_size_limit")))
        goto out;
    if ((ret = store__pragmas_common(st->wdb, true))) goto out;
    ret = migrate(st->wdb, st->path);
out:
    return ret;
}

/* Frees what store_open built, in any state of completion. */
static void store_free(struct store *st)
{
    if (!st) return;
    bool was_open = st->writer_started;
    store__writer_stop(st);
    store__writer_finalize(st);
    /* Readers first: the last connection to close checkpoints the WAL into
     * the database and removes it, and only the writer can do that. */
    store__readers_close(st);
    if (st->wdb && was_open) {
        /* Lets the query planner gather statistics it found missing, reading
         * a bounded sample so that closing stays quick on a big database. Its
         * failure costs nothing but speed, so it is only logged. */
        if (sqlite3_exec(st->wdb, "PRAGMA analysis_limit = 1000; PRAGMA optimize", NULL, NULL, NULL) !=
            SQLITE_OK)
            LOG_DEBUG("store: PRAGMA optimize: %s", sqlite3_errmsg(st->wdb));
    }
    if (st->wdb) {
        int rc = sqlite3_close(st->wdb);
        if (rc != SQLITE_OK) LOG_ERROR("store: closing %s: %s", st->path, sqlite3_errstr(rc));
    }
    free(st->dedup);
    free(st->bend);
    pthread_mutex_destroy(&st->q_lock);
    pthread_cond_destroy(&st->q_wake);
    pthread_cond_destroy(&st->q_idle);
    pthread_mutex_destroy(&st->pool_lock);
    free(st->path);
    free(st);
}

int store_open(const struct store_options *opt, struct store **out)
{
    int ret = 0;
    struct store *st = NULL;
    *out = NULL;
    if (!opt || !opt->path || !opt->path[0] || strcmp(opt->path, ":memory:") == 0 ||
        strncmp(opt->path, "file:", 5) == 0 || opt->max_batch < 0) {
        /* every connection must see one file: no in-memory database, no URI */
        LOG_ERROR("store: invalid options (a database file path is required)");
        return -EINVAL;
    }
    if (!sqlite3_threadsafe()) {
        LOG_ERROR("store: libsqlite3 was built without thread support");
        return -EINVAL;
    }
    st = calloc(1, sizeof *st);
    if (!st) return -ENOMEM;
    pthread_mutex_init(&st->q_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the writer's linger is timed */
    pthread_cond_init(&st->q_wake, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&st->q_idle, NULL);
    pthread_mutex_init(&st->pool_lock, NULL);
    st->sync_full = opt->sync_full;
    st->max_batch = opt->max_batch ? opt->max_batch : STORE_DEFAULT_MAX_BATCH;
    st->linger_us = opt->linger_us ? opt->linger_us : STORE_DEFAULT_LINGER_US;
    st->ev_keep = opt->event_log > 0 ? (uint64_t)opt->event_log : STORE_DEFAULT_EVENT_LOG;
    if (!(st->path = strdup(opt->path))) {
        ret = -ENOMEM;
        goto out;
    }
    if ((ret = make_parent_dirs(st->path))) goto out;
    if ((ret = open_writer(st))) goto out;
    if ((ret = store__writer_prepare(st))) goto out;
    if ((ret = store__events_open(st))) goto out;
    if ((ret = store__writer_start(st))) goto out;
    LOG_DEBUG("store: opened %s (schema version %d, synchronous %s)", st->path, SCHEMA_VERSION,
              st->sync_full ? "FULL" : "NORMAL");
    *out = st;
    st = NULL;
out:
    store_free(st);
    return ret;
}

void store_close(struct store *st)
{
    /* from a store_done_cb it would join the thread it runs on */
    assert(!st || !store__on_store_thread(st));
    store_free(st);
}

void store_get_stats(struct store *st, struct store_stats *out)
{
    pthread_mutex_lock(&st->q_lock);
    *out = st->stats;
    out->queued = st->q_len;
    pthread_mutex_unlock(&st->q_lock);
}
