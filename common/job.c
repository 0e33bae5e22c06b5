#include "job.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

static const char *const status_names[JOB_STATUS_COUNT] = {
    "scheduled", "queued", "running", "succeeded", "failed", "cancelled",
};

static const char *const error_names[JOB_ERR_COUNT] = {
    NULL, "task_error", "timeout", "cancelled", "worker_lost", "exit_status", "signal", "dependency_failed",
    "invalid_result",
};

struct job *job_new(void)
{
    struct job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->max_attempts = 1;
    j->retry_backoff_ms = 1000;
    j->progress_fraction = -1.0;
    j->args = strdup("{}");
    j->depends_on = strdup("[]");
    if (!j->args || !j->depends_on) {
        job_free(j);
        return NULL;
    }
    return j;
}

#define JOB_STRINGS(X)                                                                             \
    X(task) X(args) X(executor) X(progress_message) X(result) X(error_message) X(worker_thread)   \
        X(batch_id) X(depends_on) X(concurrency_key) X(idempotency_key) X(callback_url) X(callback_status) X(attempts)

void job_free(struct job *j)
{
    if (!j) return;
#define FREE_FIELD(f) free(j->f);
    JOB_STRINGS(FREE_FIELD)
#undef FREE_FIELD
    free(j);
}

struct job *job_dup(const struct job *src)
{
    struct job *j = malloc(sizeof *j);
    if (!j) return NULL;
    *j = *src;
    bool ok = true;
#define DUP_FIELD(f)                                                                               \
    if (src->f) {                                                                                  \
        j->f = strdup(src->f);                                                                     \
        ok = ok && j->f;                                                                           \
    }
    JOB_STRINGS(DUP_FIELD)
#undef DUP_FIELD
    if (!ok) {
        job_free(j);
        return NULL;
    }
    return j;
}

int job_set_str(char **slot, const char *s)
{
    char *copy = NULL;
    if (s && !(copy = strdup(s))) return -ENOMEM;
    free(*slot);
    *slot = copy;
    return 0;
}

const char *job_status_name(enum job_status s)
{
    return (unsigned)s < JOB_STATUS_COUNT ? status_names[s] : "unknown";
}

int job_status_parse(const char *name, enum job_status *out)
{
    for (int i = 0; i < JOB_STATUS_COUNT; i++) {
        if (strcmp(name, status_names[i]) == 0) {
            *out = (enum job_status)i;
            return 0;
        }
    }
    return -EINVAL;
}

bool job_status_terminal(enum job_status s)
{
    return s == JOB_SUCCEEDED || s == JOB_FAILED || s == JOB_CANCELLED;
}

const char *job_error_type_name(enum job_error_type t)
{
    return (unsigned)t < JOB_ERR_COUNT ? error_names[t] : NULL;
}

int job_error_type_parse(const char *name, enum job_error_type *out)
{
    for (int i = 1; i < JOB_ERR_COUNT; i++) {
        if (strcmp(name, error_names[i]) == 0) {
            *out = (enum job_error_type)i;
            return 0;
        }
    }
    return -EINVAL;
}

void job_json_add_time(cJSON *o, const char *name, int64_t ms)
{
    if (ms <= 0) {
        cJSON_AddNullToObject(o, name);
        return;
    }
    char buf[CLOCK_RFC3339_LEN];
    clock_format_rfc3339(ms, buf);
    cJSON_AddStringToObject(o, name, buf);
}

static void add_str(cJSON *o, const char *name, const char *s)
{
    if (s)
        cJSON_AddStringToObject(o, name, s);
    else
        cJSON_AddNullToObject(o, name);
}

/* Adds stored JSON text as a value; text that fails to parse (it never should)
 * is kept as a string so nothing is hidden. */
static void add_raw_json(cJSON *o, const char *name, const char *text, const char *fallback)
{
    const char *t = text ? text : fallback;
    if (!t) {
        cJSON_AddNullToObject(o, name);
        return;
    }
    cJSON *v = cJSON_Parse(t);
    if (!v) v = cJSON_CreateString(t);
    cJSON_AddItemToObject(o, name, v);
}

cJSON *job_to_json(const struct job *j)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "id", j->id);
    add_str(o, "task", j->task);
    add_raw_json(o, "args", j->args, "{}");
    add_str(o, "executor", j->executor);
    cJSON_AddStringToObject(o, "status", job_status_name(j->status));
    cJSON_AddNumberToObject(o, "priority", (double)j->priority);
    cJSON_AddNumberToObject(o, "attempt", j->attempt);
    cJSON_AddNumberToObject(o, "max_attempts", j->max_attempts);
    if (j->timeout_ms > 0)
        cJSON_AddNumberToObject(o, "timeout", (double)j->timeout_ms / 1000.0);
    else
        cJSON_AddNullToObject(o, "timeout");
    job_json_add_time(o, "created_at", j->created_at_ms);
    job_json_add_time(o, "scheduled_at", j->scheduled_at_ms);
    job_json_add_time(o, "started_at", j->started_at_ms);
    job_json_add_time(o, "finished_at", j->finished_at_ms);
    if (j->progress_fraction >= 0) {
        cJSON *p = cJSON_AddObjectToObject(o, "progress");
        cJSON_AddNumberToObject(p, "fraction", j->progress_fraction);
        add_str(p, "message", j->progress_message);
    } else {
        cJSON_AddNullToObject(o, "progress");
    }
    add_raw_json(o, "result", j->result, NULL);
    if (j->error_type != JOB_ERR_NONE) {
        cJSON *e = cJSON_AddObjectToObject(o, "error");
        cJSON_AddStringToObject(e, "type", job_error_type_name(j->error_type));
        add_str(e, "message", j->error_message ? j->error_message : "");
    } else {
        cJSON_AddNullToObject(o, "error");
    }
    if (j->worker_thread) {
        cJSON *w = cJSON_AddObjectToObject(o, "worker");
        add_str(w, "executor", j->executor);
        cJSON_AddNumberToObject(w, "pid", j->worker_pid);
        cJSON_AddStringToObject(w, "thread", j->worker_thread);
    } else {
        cJSON_AddNullToObject(o, "worker");
    }
    add_str(o, "batch_id", j->batch_id);
    add_raw_json(o, "depends_on", j->depends_on, "[]");
    add_str(o, "concurrency_key", j->concurrency_key);
    if (j->concurrency_limit > 0)
        cJSON_AddNumberToObject(o, "concurrency_limit", j->concurrency_limit);
    else
        cJSON_AddNullToObject(o, "concurrency_limit");
    add_str(o, "idempotency_key", j->idempotency_key);
    add_str(o, "callback_url", j->callback_url);
    add_str(o, "callback_status", j->callback_status);
    add_raw_json(o, "attempts", j->attempts, "[]");
    return o;
}

void job_json_escape(char *buf, size_t cap, size_t *len, const char *s)
{
    size_t o = *len;
#define PUT(ch)                                                                                    \
    do {                                                                                           \
        if (o + 1 < cap) buf[o++] = (ch);                                                          \
    } while (0)
    PUT('"');
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        unsigned char ch = *p;
        if (ch == '"' || ch == '\\') {
            PUT('\\');
            PUT((char)ch);
        } else if (ch < 0x20) {
            static const char hex[] = "0123456789abcdef";
            PUT('\\');
            PUT('u');
            PUT('0');
            PUT('0');
            PUT(hex[ch >> 4]);
            PUT(hex[ch & 15]);
        } else {
            PUT((char)ch);
        }
    }
    PUT('"');
#undef PUT
    buf[o < cap ? o : cap - 1] = '\0';
    *len = o;
}

static void ev_raw(char *buf, size_t cap, size_t *len, const char *text);

/* Appends ,"name":"time" or ,"name":null. */
static void ev_time(char *buf, size_t cap, size_t *len, const char *name, int64_t ms)
{
    char t[CLOCK_RFC3339_LEN + 2];
    ev_raw(buf, cap, len, ",\"");
    ev_raw(buf, cap, len, name);
    ev_raw(buf, cap, len, "\":");
    if (ms > 0) {
        t[0] = '"';
        clock_format_rfc3339(ms, t + 1);
        t[CLOCK_RFC3339_LEN] = '"';
        t[CLOCK_RFC3339_LEN + 1] = '\0';
        ev_raw(buf, cap, len, t);
    } else {
        ev_raw(buf, cap, len, "null");
    }
}

/* Appends text (truncated at the capacity, kept NUL-terminated). memcpy, not
 * snprintf: this runs a dozen times per event. */
static void ev_raw(char *buf, size_t cap, size_t *len, const char *text)
{
    size_t n = strlen(text);
    if (*len + n >= cap) n = cap - *len - 1;
    memcpy(buf + *len, text, n);
    *len += n;
    buf[*len] = '\0';
}

char *job_event_text(const struct job *j)
{
    /* Everything but the error message and the names is bounded; those are
     * escaped at most 6x. */
    size_t cap = 512 + 6 * (strlen(j->task ? j->task : "") + strlen(j->executor ? j->executor : "") +
                            strlen(j->error_message ? j->error_message : ""));
    char *buf = malloc(cap);
    if (!buf) return NULL;
    size_t len = 0;
    char num[96];
    ev_raw(buf, cap, &len, "{\"id\":\"");
    ev_raw(buf, cap, &len, j->id);
    ev_raw(buf, cap, &len, "\",\"status\":\"");
    ev_raw(buf, cap, &len, job_status_name(j->status));
    ev_raw(buf, cap, &len, "\",\"task\":");
    job_json_escape(buf, cap, &len, j->task);
    ev_raw(buf, cap, &len, ",\"executor\":");
    if (j->executor) job_json_escape(buf, cap, &len, j->executor);
    else ev_raw(buf, cap, &len, "null");
    ev_raw(buf, cap, &len, ",\"batch_id\":");
    if (j->batch_id) job_json_escape(buf, cap, &len, j->batch_id);
    else ev_raw(buf, cap, &len, "null");
    snprintf(num, sizeof num, ",\"attempt\":%d,\"max_attempts\":%d", j->attempt, j->max_attempts);
    ev_raw(buf, cap, &len, num);
    ev_time(buf, cap, &len, "created_at", j->created_at_ms);
    ev_time(buf, cap, &len, "scheduled_at", j->scheduled_at_ms);
    ev_time(buf, cap, &len, "started_at", j->started_at_ms);
    ev_time(buf, cap, &len, "finished_at", j->finished_at_ms);
    if (j->error_type != JOB_ERR_NONE) {
        ev_raw(buf, cap, &len, ",\"error\":{\"type\":\"");
        ev_raw(buf, cap, &len, job_error_type_name(j->error_type));
        ev_raw(buf, cap, &len, "\",\"message\":");
        job_json_escape(buf, cap, &len, j->error_message ? j->error_message : "");
        ev_raw(buf, cap, &len, "}}");
    } else {
        ev_raw(buf, cap, &len, ",\"error\":null}");
    }
    return buf;
}

int job_attempts_append(struct job *j)
{
    /* Textual append (no parse and re-print): it runs once per finished
     * attempt, on the executor's thread. The array is ours, always "[...]". */
    size_t old = j->attempts ? strlen(j->attempts) : 0;
    bool empty = old < 2 || strcmp(j->attempts, "[]") == 0;
    size_t cap = old + 384 + 6 * (strlen(j->worker_thread ? j->worker_thread : "") +
                                  strlen(j->error_message ? j->error_message : ""));
    char *buf = malloc(cap), num[64];
    if (!buf) return -ENOMEM;
    size_t len = 0;
    if (empty) {
        ev_raw(buf, cap, &len, "[");
    } else {
        memcpy(buf, j->attempts, old - 1); /* all but the closing ']' */
        buf[old - 1] = '\0';
        len = old - 1;
        ev_raw(buf, cap, &len, ",");
    }
    snprintf(num, sizeof num, "{\"attempt\":%d,\"status\":\"", j->attempt);
    ev_raw(buf, cap, &len, num);
    ev_raw(buf, cap, &len, job_status_name(j->status));
    ev_raw(buf, cap, &len, "\"");
    ev_time(buf, cap, &len, "started_at", j->started_at_ms);
    ev_time(buf, cap, &len, "finished_at", j->finished_at_ms);
    if (j->worker_thread) {
        snprintf(num, sizeof num, ",\"worker\":{\"pid\":%d,\"thread\":", j->worker_pid);
        ev_raw(buf, cap, &len, num);
        job_json_escape(buf, cap, &len, j->worker_thread);
        ev_raw(buf, cap, &len, "}");
    } else {
        ev_raw(buf, cap, &len, ",\"worker\":null");
    }
    if (j->error_type != JOB_ERR_NONE) {
        ev_raw(buf, cap, &len, ",\"error\":{\"type\":\"");
        ev_raw(buf, cap, &len, job_error_type_name(j->error_type));
        ev_raw(buf, cap, &len, "\",\"message\":");
        job_json_escape(buf, cap, &len, j->error_message ? j->error_message : "");
        ev_raw(buf, cap, &len, "}}]");
    } else {
        ev_raw(buf, cap, &len, ",\"error\":null}]");
    }
    free(j->attempts);
    j->attempts = buf;
    return 0;
}
