/*
 * sqlite_limit - the storage limit behind jobd's throughput figures: how many
 * job lifecycles per second raw SQLite commits on this disk, with nothing of
 * jobd around it (no HTTP, no threads, no JSON, no queueing).
 *
 * DESIGN
 * The database is jobd's own: the same pragmas as the writer connection
 * (storage/store.c: WAL, synchronous FULL, journal_size_limit 64 MiB,
 * temp_store MEMORY, cache_size 32 MiB, foreign_keys OFF), the same `jobs`
 * table with its indexes and the same `events` table (copied from a database
 * jobd made: --schema), and the same INSERT / UPDATE statements and
 * bindings as storage/store_writer.c for a noop job (queued -> running ->
 * succeeded). A job's life is one INSERT and two UPDATEs that rewrite every
 * mutable column, as jobd's update does.
 *
 * Each transaction (BEGIN IMMEDIATE ... COMMIT) carries the work of --batch
 * jobs, pipelined the way a busy server spreads a job over commits: commit k
 * inserts the jobs of slice k, starts those of slice k-1 and finishes those of
 * slice k-2 (so a transaction is 3 x batch statements, and rows are updated
 * after they were committed, not while still hot in the same transaction).
 * With --events every statement also appends one `events` row (type, job id,
 * status, attempt, time), as jobd writes one event per state change, and the
 * log is trimmed to its newest 100,000 events with jobd's slack
 * (storage/store_events.c store__events_trim).
 *
 * The database lives in a fresh directory made under --dir (so on the disk
 * under test) and is removed at the end.
 *
 * Output: one JSON line on stdout. Exit status 0, or 1 on bad usage or a
 * SQLite error (reported on stderr).
 *
 * Build: cc -O2 -o sqlite_limit bench/sqlite_limit.c -lsqlite3
 */
#include <errno.h>
#include <getopt.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ID_LEN 26
#define EVENT_KEEP 100000 /* jobd's default --event-log */

/* The schema is not written here: it is read from a database jobd made
 * (--schema), so it is always jobd's current one. Tables and indexes in the
 * order jobd's migrations left them (rowid order of sqlite_schema). */
static int copy_schema(sqlite3 *db, const char *from)
{
    sqlite3 *src = NULL;
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_open_v2(from, &src, SQLITE_OPEN_READONLY, NULL), ok = 0;
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(src, "SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite%' "
                                     "ORDER BY rowid", -1, &s, NULL);
    while (rc == SQLITE_OK || rc == SQLITE_ROW) {
        rc = sqlite3_step(s);
        if (rc != SQLITE_ROW) break;
        char *err = NULL;
        if (sqlite3_exec(db, (const char *)sqlite3_column_text(s, 0), NULL, NULL, &err) != SQLITE_OK) {
            fprintf(stderr, "sqlite_limit: schema: %s\n", err ? err : "?");
            sqlite3_free(err);
            rc = SQLITE_ERROR;
            break;
        }
        ok++;
    }
    if (rc != SQLITE_DONE || ok == 0)
        fprintf(stderr, "sqlite_limit: cannot read jobd's schema from %s: %s\n", from,
                src ? sqlite3_errmsg(src) : "out of memory");
    sqlite3_finalize(s);
    sqlite3_close(src);
    return rc == SQLITE_DONE && ok > 0 ? 0 : -1;
}

/* storage/store_writer.c */
#define JOB_COLUMNS                                                                                \
    "id, task, args, executor, status, priority, attempt, max_attempts, timeout_ms, "              \
    "retry_backoff_ms, created_at_ms, scheduled_at_ms, started_at_ms, finished_at_ms, "            \
    "progress_fraction, progress_message, result, error_type, error_message, worker_pid, "         \
    "worker_thread, batch_id, depends_on, concurrency_key, concurrency_limit, idempotency_key, "   \
    "callback_url, callback_status, attempts"
static const char insert_sql[] =
    "INSERT INTO jobs (" JOB_COLUMNS ") VALUES ("
    "?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, "
    "?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29) ON CONFLICT DO NOTHING";
static const char update_sql[] =
    "UPDATE jobs SET status = ?2, attempt = ?3, scheduled_at_ms = ?4, "
    "started_at_ms = ?5, finished_at_ms = ?6, progress_fraction = ?7, "
    "progress_message = ?8, result = ?9, error_type = ?10, error_message = ?11, "
    "worker_pid = ?12, worker_thread = ?13, executor = ?14, callback_status = ?15, "
    "attempts = ?16 WHERE id = ?1";
static const char event_sql[] =
    "INSERT INTO events (seq, type, job_id, batch_id, status, attempt, at_ms, error_type, data) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
static const char trim_sql[] = "DELETE FROM events WHERE seq <= ?1";

enum { ST_QUEUED = 1, ST_RUNNING = 2, ST_SUCCEEDED = 3 }; /* common/job.h enum values, for events */

struct bench {
    sqlite3 *db;
    sqlite3_stmt *begin, *commit, *ins, *upd, *ev, *trim;
    bool events;
    uint64_t seq, trimmed;
    int64_t t0_ms;
};

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A ULID-shaped id that sorts by n: 10 characters of time, 16 of counter. */
static void make_id(char out[ID_LEN + 1], int64_t ms, uint64_t n)
{
    static const char b32[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    for (int i = 9; i >= 0; i--, ms >>= 5) out[i] = b32[ms & 31];
    for (int i = 25; i >= 10; i--, n >>= 5) out[i] = b32[n & 31];
    out[ID_LEN] = '\0';
}

/* Steps a statement to completion and resets it. Returns 0 or -1 after
 * printing SQLite's message. */
static int run(struct bench *b, sqlite3_stmt *s, const char *what)
{
    int rc = sqlite3_step(s);
    (void)sqlite3_reset(s); /* its error is the step's, reported below */
    if (rc != SQLITE_DONE) {
        fprintf(stderr, "sqlite_limit: %s: %s\n", what, sqlite3_errmsg(b->db));
        return -1;
    }
    return 0;
}

static int event(struct bench *b, const char *id, int status, int attempt, int64_t at_ms)
{
    if (!b->events) return 0;
    sqlite3_stmt *s = b->ev;
    sqlite3_bind_int64(s, 1, (sqlite3_int64)++b->seq);
    sqlite3_bind_int(s, 2, 0);
    sqlite3_bind_text(s, 3, id, ID_LEN, SQLITE_STATIC);
    sqlite3_bind_null(s, 4);
    sqlite3_bind_int(s, 5, status);
    sqlite3_bind_int(s, 6, attempt);
    sqlite3_bind_int64(s, 7, at_ms);
    sqlite3_bind_null(s, 8);
    sqlite3_bind_null(s, 9);
    return run(b, s, "event insert");
}

/* The bindings of store__bind_insert for a fresh noop job. */
static int job_insert(struct bench *b, uint64_t n)
{
    char id[ID_LEN + 1];
    int64_t now = wall_ms();
    make_id(id, b->t0_ms, n);
    sqlite3_stmt *s = b->ins;
    sqlite3_clear_bindings(s); /* NULL for every optional column */
    sqlite3_bind_text(s, 1, id, ID_LEN, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, "noop", -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, "{}", -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, "thread", -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 5, "queued", -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 6, 0);
    sqlite3_bind_int(s, 7, 0);
    sqlite3_bind_int(s, 8, 1);
    sqlite3_bind_int(s, 9, 0);
    sqlite3_bind_int(s, 10, 1000);
    sqlite3_bind_int64(s, 11, now);
    sqlite3_bind_int64(s, 12, now);
    sqlite3_bind_text(s, 23, "[]", -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 25, 0);
    if (run(b, s, "insert")) return -1;
    return event(b, id, ST_QUEUED, 0, now);
}

/* The bindings of store__bind_update: running (attempt 1, a worker) or
 * succeeded (result null). */
static int job_update(struct bench *b, uint64_t n, bool done)
{
    char id[ID_LEN + 1];
    int64_t now = wall_ms();
    make_id(id, b->t0_ms, n);
    sqlite3_stmt *s = b->upd;
    sqlite3_clear_bindings(s);
    sqlite3_bind_text(s, 1, id, ID_LEN, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, done ? "succeeded" : "running", -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 3, 1);
    sqlite3_bind_int64(s, 4, now);
    sqlite3_bind_int64(s, 5, now);
    if (done) {
        sqlite3_bind_int64(s, 6, now);
        sqlite3_bind_text(s, 9, "null", -1, SQLITE_STATIC);
    }
    sqlite3_bind_text(s, 13, "thread-0", -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 14, "thread", -1, SQLITE_STATIC);
    if (run(b, s, "update")) return -1;
    if (sqlite3_changes(b->db) != 1) {
        fprintf(stderr, "sqlite_limit: update of job %llu changed no row\n", (unsigned long long)n);
        return -1;
    }
    return event(b, id, done ? ST_SUCCEEDED : ST_RUNNING, 1, now);
}

/* jobd's trim policy: keep EVENT_KEEP, delete in steps of at least 1024. */
static int events_trim(struct bench *b)
{
    uint64_t slack = EVENT_KEEP / 100 > 1024 ? EVENT_KEEP / 100 : 1024;
    if (!b->events || b->seq <= EVENT_KEEP || b->seq - EVENT_KEEP < b->trimmed + slack) return 0;
    uint64_t upto = b->seq - EVENT_KEEP;
    sqlite3_bind_int64(b->trim, 1, (sqlite3_int64)upto);
    if (run(b, b->trim, "event trim")) return -1;
    b->trimmed = upto;
    return 0;
}

static int exec_sql(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        fprintf(stderr, "sqlite_limit: %s: %s\n", sql, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: sqlite_limit --dir DIR --schema JOBD_DB [--jobs N] [--batch B] [--events] [--sync full|normal]\n"
               "  --dir DIR      a fresh directory is made (and removed) under DIR for the database\n"
               "  --schema DB    a database made by jobd: its tables and indexes are copied\n"
               "  --jobs N       job lifecycles (default 200000)\n"
               "  --batch B      jobs' worth of work per transaction (default 1000)\n"
               "  --events       also write one events row per state change, as jobd does\n"
               "  --sync MODE    synchronous FULL (default, jobd's) or NORMAL\n");
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *schema = NULL, *sync = "full";
    long jobs = 200000, batch = 1000;
    struct bench b = {0};
    static const struct option lo[] = {{"dir", required_argument, NULL, 'd'}, {"schema", required_argument, NULL, 'S'},    {"jobs", required_argument, NULL, 'n'},
                                       {"batch", required_argument, NULL, 'b'},  {"events", no_argument, NULL, 'e'},
                                       {"sync", required_argument, NULL, 's'},   {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'd': dir = optarg; break;
        case 'S': schema = optarg; break;
        case 'n': jobs = strtol(optarg, NULL, 10); break;
        case 'b': batch = strtol(optarg, NULL, 10); break;
        case 'e': b.events = true; break;
        case 's': sync = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 1;
        }
    }
    if (!dir || !schema || jobs < 1 || jobs > 100000000 || batch < 1 || batch > jobs ||
        (strcmp(sync, "full") != 0 && strcmp(sync, "normal") != 0)) {
        usage(stderr);
        return 1;
    }

    int ret = 1;
    char tmpl[4096], path[4200];
    snprintf(tmpl, sizeof tmpl, "%s/sqlite-limit.XXXXXX", dir);
    if (!mkdtemp(tmpl)) {
        fprintf(stderr, "sqlite_limit: mkdtemp %s: %s\n", tmpl, strerror(errno));
        return 1;
    }
    snprintf(path, sizeof path, "%s/limit.db", tmpl);
    if (sqlite3_open_v2(path, &b.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        fprintf(stderr, "sqlite_limit: open %s: %s\n", path, b.db ? sqlite3_errmsg(b.db) : "out of memory");
        goto out;
    }
    char pragmas[512];
    snprintf(pragmas, sizeof pragmas,
             "PRAGMA journal_mode = WAL; PRAGMA synchronous = %s; PRAGMA journal_size_limit = 67108864;"
             "PRAGMA foreign_keys = OFF; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -32768;",
             strcmp(sync, "full") == 0 ? "FULL" : "NORMAL");
    if (exec_sql(b.db, pragmas) || exec_sql(b.db, "BEGIN") || copy_schema(b.db, schema) ||
        exec_sql(b.db, "COMMIT"))
        goto out;
    if (sqlite3_prepare_v2(b.db, "BEGIN IMMEDIATE", -1, &b.begin, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(b.db, "COMMIT", -1, &b.commit, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(b.db, insert_sql, -1, &b.ins, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(b.db, update_sql, -1, &b.upd, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(b.db, event_sql, -1, &b.ev, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(b.db, trim_sql, -1, &b.trim, NULL) != SQLITE_OK) {
        fprintf(stderr, "sqlite_limit: prepare: %s\n", sqlite3_errmsg(b.db));
        goto out;
    }
    b.t0_ms = wall_ms();

    /* Slice k = jobs [k*batch, (k+1)*batch). Commit k inserts slice k, starts
     * slice k-1 and finishes slice k-2; two extra commits drain the pipeline. */
    long slices = (jobs + batch - 1) / batch, commits = 0;
    int64_t t0 = mono_ns();
    for (long k = 0; k < slices + 2; k++) {
        if (run(&b, b.begin, "begin")) goto out;
        for (long s = k; s >= k - 2; s--) {
            if (s < 0 || s >= slices) continue;
            long lo_n = s * batch, hi_n = lo_n + batch < jobs ? lo_n + batch : jobs;
            for (long n = lo_n; n < hi_n; n++) {
                int rc = s == k ? job_insert(&b, (uint64_t)n) : job_update(&b, (uint64_t)n, s == k - 2);
                if (rc) goto out;
            }
        }
        if (events_trim(&b) || run(&b, b.commit, "commit")) goto out;
        commits++;
    }
    double secs = (double)(mono_ns() - t0) / 1e9;
    printf("{\"jobs\": %ld, \"batch\": %ld, \"events\": %s, \"sync\": \"%s\", \"commits\": %ld, "
           "\"statements\": %ld, \"seconds\": %.4f, \"jobs_per_s\": %.1f, \"sqlite\": \"%s\"}\n",
           jobs, batch, b.events ? "true" : "false", sync, commits, jobs * (b.events ? 6L : 3L), secs,
           (double)jobs / secs, sqlite3_libversion());
    ret = 0;
out:
    sqlite3_finalize(b.begin);
    sqlite3_finalize(b.commit);
    sqlite3_finalize(b.ins);
    sqlite3_finalize(b.upd);
    sqlite3_finalize(b.ev);
    sqlite3_finalize(b.trim);
    if (b.db && sqlite3_close(b.db) != SQLITE_OK) fprintf(stderr, "sqlite_limit: close: %s\n", sqlite3_errmsg(b.db));
    static const char *const suffix[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/limit.db%s", tmpl, suffix[i]);
        if (unlink(path) && errno != ENOENT) fprintf(stderr, "sqlite_limit: unlink %s: %s\n", path, strerror(errno));
    }
    if (rmdir(tmpl)) fprintf(stderr, "sqlite_limit: rmdir %s: %s\n", tmpl, strerror(errno));
    return ret;
}
