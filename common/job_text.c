/* job_text.c - the job as SPEC §2 JSON text, written straight into one
 * buffer: the same document as cJSON_PrintUnformatted(job_to_json(job)), for
 * the replies that send one job (a submit's 202, GET /v1/jobs/{id}, cancel).
 * Building a cJSON tree of 23 members and printing it cost ~12% of an HTTP
 * thread's instructions per submit (docs/PERFORMANCE.md).
 *
 * The stored JSON texts (args, result, depends_on, attempts) are copied as
 * they are once cJSON has checked that each is one valid JSON value; one
 * that is not (a row edited by hand) is sent as a string, as job_to_json does.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "job.h"

struct out {
    char *buf;
    size_t len, cap;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->len + n >= o->cap) n = o->cap - o->len - 1; /* cannot happen: cap is computed */
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    o->buf[o->len] = '\0';
}
#define PUTS(o, lit) put((o), (lit), sizeof(lit) - 1)

static void put_str(struct out *o, const char *s) /* "s" escaped, or null */
{
    if (!s) {
        PUTS(o, "null");
        return;
    }
    job_json_escape(o->buf, o->cap, &o->len, s);
}

static void put_long(struct out *o, long long v)
{
    char num[24], *p = num + sizeof num;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) *--p = '-';
    put(o, p, (size_t)(num + sizeof num - p));
}

/* A double as cJSON prints it: an integer when it is one, else the shortest
 * of %1.15g and %1.17g that reads back the same. */
static void put_double(struct out *o, double d)
{
    char num[32];
    int n;
    if (isnan(d) || isinf(d)) {
        PUTS(o, "null");
        return;
    }
    if (fabs(d) < 1e15 && d == (double)(long long)d) {
        put_long(o, (long long)d);
        return;
    } else {
        n = snprintf(num, sizeof num, "%1.15g", d);
        if (strtod(num, NULL) != d) n = snprintf(num, sizeof num, "%1.17g", d);
    }
    put(o, num, (size_t)n);
}

static void put_time(struct out *o, int64_t ms)
{
    if (ms <= 0) {
        PUTS(o, "null");
        return;
    }
    char t[CLOCK_RFC3339_LEN + 2];
    t[0] = '"';
    clock_format_rfc3339(ms, t + 1);
    t[CLOCK_RFC3339_LEN] = '"';
    put(o, t, CLOCK_RFC3339_LEN + 1);
}

/* A stored JSON text: as it is when valid, else as a string; NULL: dflt
 * (itself JSON) or null. */
static void put_raw(struct out *o, const char *text, const char *dflt)
{
    if (!text) {
        if (dflt)
            put(o, dflt, strlen(dflt));
        else
            PUTS(o, "null");
        return;
    }
    /* The short canonical cases need no parse. */
    if (strcmp(text, "{}") == 0 || strcmp(text, "[]") == 0 || strcmp(text, "null") == 0) {
        put(o, text, strlen(text));
        return;
    }
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithOpts(text, &end, 1);
    if (v) {
        cJSON_Delete(v);
        put(o, text, strlen(text));
    } else {
        put_str(o, text);
    }
}

static size_t slen(const char *s) { return s ? strlen(s) : 0; }

char *job_json_text(const struct job *j, size_t *len_out)
{
    /* Escaping grows a string at most 6x; a raw text sent as a string too. */
    size_t strs = slen(j->task) + 2 * slen(j->executor) + slen(j->progress_message) + slen(j->error_message) +
                  slen(j->worker_thread) + slen(j->batch_id) + slen(j->concurrency_key) +
                  slen(j->idempotency_key) + slen(j->callback_url) + slen(j->callback_status) + slen(j->args) +
                  slen(j->result) + slen(j->depends_on) + slen(j->attempts);
    struct out o = {.cap = 1024 + 6 * strs};
    if (!(o.buf = malloc(o.cap))) return NULL;
    o.buf[0] = '\0';
    PUTS(&o, "{\"id\":");
    put_str(&o, j->id);
    PUTS(&o, ",\"task\":");
    put_str(&o, j->task);
    PUTS(&o, ",\"args\":");
    put_raw(&o, j->args, "{}");
    PUTS(&o, ",\"executor\":");
    put_str(&o, j->executor);
    PUTS(&o, ",\"status\":\"");
    put(&o, job_status_name(j->status), strlen(job_status_name(j->status)));
    PUTS(&o, "\",\"priority\":");
    put_double(&o, (double)j->priority); /* cJSON keeps numbers as doubles */
    PUTS(&o, ",\"attempt\":");
    put_long(&o, j->attempt);
    PUTS(&o, ",\"max_attempts\":");
    put_long(&o, j->max_attempts);
    PUTS(&o, ",\"timeout\":");
    if (j->timeout_ms > 0)
        put_double(&o, (double)j->timeout_ms / 1000.0);
    else
        PUTS(&o, "null");
    PUTS(&o, ",\"created_at\":");
    put_time(&o, j->created_at_ms);
    PUTS(&o, ",\"scheduled_at\":");
    put_time(&o, j->scheduled_at_ms);
    PUTS(&o, ",\"started_at\":");
    put_time(&o, j->started_at_ms);
    PUTS(&o, ",\"finished_at\":");
    put_time(&o, j->finished_at_ms);
    PUTS(&o, ",\"progress\":");
    if (j->progress_fraction >= 0) {
        PUTS(&o, "{\"fraction\":");
        put_double(&o, j->progress_fraction);
        PUTS(&o, ",\"message\":");
        put_str(&o, j->progress_message);
        PUTS(&o, "}");
    } else {
        PUTS(&o, "null");
    }
    PUTS(&o, ",\"result\":");
    put_raw(&o, j->result, NULL);
    PUTS(&o, ",\"error\":");
    if (j->error_type != JOB_ERR_NONE) {
        PUTS(&o, "{\"type\":");
        put_str(&o, job_error_type_name(j->error_type));
        PUTS(&o, ",\"message\":");
        put_str(&o, j->error_message ? j->error_message : "");
        PUTS(&o, "}");
    } else {
        PUTS(&o, "null");
    }
    PUTS(&o, ",\"worker\":");
    if (j->worker_thread) {
        PUTS(&o, "{\"executor\":");
        put_str(&o, j->executor);
        PUTS(&o, ",\"pid\":");
        put_long(&o, j->worker_pid);
        PUTS(&o, ",\"thread\":");
        put_str(&o, j->worker_thread);
        PUTS(&o, "}");
    } else {
        PUTS(&o, "null");
    }
    PUTS(&o, ",\"batch_id\":");
    put_str(&o, j->batch_id);
    PUTS(&o, ",\"depends_on\":");
    put_raw(&o, j->depends_on, "[]");
    PUTS(&o, ",\"concurrency_key\":");
    put_str(&o, j->concurrency_key);
    PUTS(&o, ",\"concurrency_limit\":");
    if (j->concurrency_limit > 0)
        put_long(&o, j->concurrency_limit);
    else
        PUTS(&o, "null");
    PUTS(&o, ",\"idempotency_key\":");
    put_str(&o, j->idempotency_key);
    PUTS(&o, ",\"callback_url\":");
    put_str(&o, j->callback_url);
    PUTS(&o, ",\"callback_status\":");
    put_str(&o, j->callback_status);
    PUTS(&o, ",\"attempts\":");
    put_raw(&o, j->attempts, "[]");
    PUTS(&o, "}");
    if (len_out) *len_out = o.len;
    return o.buf;
}
