/* job.h - the job record: plain data that every layer passes around.
 *
 * A struct job owns all its strings (heap, NUL-terminated, NULL = unknown).
 * It crosses threads only by being moved (the sender forgets it) or copied
 * with job_dup(); it is never shared. Times are wall-clock ms since the epoch,
 * 0 meaning "not yet". args and result hold compact JSON text.
 */
#ifndef JOBD_JOB_H
#define JOBD_JOB_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "id.h"

/* The values of job_status and job_error_type are stored in the event log
 * (storage/store.c, table events): never renumber them, only append. */
enum job_status {
    JOB_SCHEDULED = 0, /* not yet eligible: run_at/delay, retry back-off, dependencies */
    JOB_QUEUED,        /* eligible, waiting for a worker */
    JOB_RUNNING,
    JOB_SUCCEEDED, /* terminal */
    JOB_FAILED,    /* terminal */
    JOB_CANCELLED, /* terminal */
    JOB_STATUS_COUNT
};

/* Error types of SPEC §2, stored as their names. */
enum job_error_type {
    JOB_ERR_NONE = 0,
    JOB_ERR_TASK,              /* "task_error" */
    JOB_ERR_TIMEOUT,           /* "timeout" */
    JOB_ERR_CANCELLED,         /* "cancelled" */
    JOB_ERR_WORKER_LOST,       /* "worker_lost" */
    JOB_ERR_EXIT_STATUS,       /* "exit_status" */
    JOB_ERR_SIGNAL,            /* "signal" */
    JOB_ERR_DEPENDENCY_FAILED, /* "dependency_failed" */
    JOB_ERR_INVALID_RESULT,    /* "invalid_result" */
    JOB_ERR_COUNT
};

struct job {
    char id[ID_LEN + 1];
    char *task;
    char *args; /* JSON text, never NULL once valid ("{}" by default) */
    char *executor;
    enum job_status status;
    int64_t priority; /* higher runs first */
    int attempt;      /* 0 before the first run; incremented when an attempt starts */
    int max_attempts; /* >= 1 */
    int64_t timeout_ms;       /* 0 = none */
    int64_t retry_backoff_ms; /* first back-off; doubled per attempt */
    int64_t created_at_ms;
    int64_t scheduled_at_ms; /* when it becomes (or became) eligible */
    int64_t started_at_ms;
    int64_t finished_at_ms;
    double progress_fraction; /* < 0: no progress reported */
    char *progress_message;
    char *result; /* JSON text or NULL */
    enum job_error_type error_type;
    char *error_message;
    int worker_pid;      /* 0 = never ran */
    char *worker_thread; /* "thread-3", "process-1", "async-0" */
    char *batch_id;
    char *depends_on; /* JSON array text, "[]" when none */
    char *concurrency_key;
    int concurrency_limit; /* 0 = none */
    char *idempotency_key;
    char *callback_url;
    char *callback_status; /* NULL (no callback_url), "pending", "delivered" or "failed" */
    char *attempts;        /* JSON array text of the finished attempts, oldest first; NULL = none */
};

/* A zeroed job with defaults (attempt 0, max_attempts 1, progress -1,
 * args "{}", depends_on "[]"). Returns NULL when out of memory. Free with job_free. */
struct job *job_new(void);
void job_free(struct job *job); /* accepts NULL */
/* Deep copy, or NULL when out of memory. */
struct job *job_dup(const struct job *job);

/* Replaces *slot with a copy of s (NULL allowed). Returns 0 or -ENOMEM. */
int job_set_str(char **slot, const char *s);

const char *job_status_name(enum job_status s);
/* Returns 0 and sets *out, or -EINVAL for an unknown name. */
int job_status_parse(const char *name, enum job_status *out);
bool job_status_terminal(enum job_status s);

const char *job_error_type_name(enum job_error_type t); /* NULL for JOB_ERR_NONE */
int job_error_type_parse(const char *name, enum job_error_type *out);

/* The job as SPEC §2 JSON (every field present). Caller owns the result
 * (cJSON_Delete). Returns NULL when out of memory. */
cJSON *job_to_json(const struct job *job);

/* The same document as text, written without a cJSON tree (common/job_text.c):
 * what replies about one job send. Caller frees; *len (may be NULL) gets its
 * length. NULL when out of memory. */
char *job_json_text(const struct job *job, size_t *len);

/* Adds "name": an RFC 3339 time, or null when ms <= 0 ("not yet"). */
void job_json_add_time(cJSON *o, const char *name, int64_t ms);

/* The job's state-change event (GET /v1/events, the durable event log):
 * compact JSON text {"id", "status", "task", "executor", "batch_id",
 * "attempt", "max_attempts", "created_at", "scheduled_at", "started_at",
 * "finished_at", "error": {"type", "message"} | null}. Built with snprintf,
 * not cJSON: it runs once per state change. Caller frees; NULL when out of
 * memory. */
char *job_event_text(const struct job *job);

/* Appends `s` to buf (at *len, capacity cap) as a JSON string with quotes.
 * Stops at the capacity, keeping buf NUL-terminated; *len may then reach
 * cap - 1. Used by job_event_text and batch events. */
void job_json_escape(char *buf, size_t cap, size_t *len, const char *s);

/* Appends one finished attempt {"attempt", "started_at", "finished_at",
 * "status", "error": {...} | null} to job->attempts. 0 or -ENOMEM. */
int job_attempts_append(struct job *job);

#endif
