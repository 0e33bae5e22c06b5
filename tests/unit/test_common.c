/* test_common.c - common/: ids, clock (RFC 3339 and the wall-clock seam), the
 * job record and its JSON, status names, and the errno -> api code mapping.
 *
 * The wall clock is swapped through clock_set_wall() (the seam), never waited
 * on. Tests that swap it restore the real clock before they return.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../common/apierr.h"
#include "../../common/clock.h"
#include "../../common/id.h"
#include "../../common/job.h"
#include "../../common/log.h"
#include "harness.h"

/* ---- ids ------------------------------------------------------------------- */

static void test_id_new_is_valid_and_strictly_increasing(void)
{
    enum { N = 100000 };
    char prev[ID_LEN + 1] = "", cur[ID_LEN + 1];
    int bad_len = 0, invalid = 0, not_increasing = 0;
    for (int i = 0; i < N; i++) {
        id_new(cur);
        bad_len += strlen(cur) != ID_LEN;
        invalid += !id_valid(cur);
        not_increasing += i > 0 && strcmp(prev, cur) >= 0;
        memcpy(prev, cur, sizeof prev);
    }
    CHECK_EQ_INT(bad_len, 0);
    CHECK_EQ_INT(invalid, 0);
    CHECK_EQ_INT(not_increasing, 0);
}

#define ID_THREADS 4
#define ID_PER_THREAD 25000

struct id_batch {
    char (*ids)[ID_LEN + 1];
    int not_increasing;
};

static void *id_producer(void *arg)
{
    struct id_batch *b = arg;
    for (int i = 0; i < ID_PER_THREAD; i++) {
        id_new(b->ids[i]);
        if (i > 0 && strcmp(b->ids[i - 1], b->ids[i]) >= 0) b->not_increasing++;
    }
    return NULL;
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_id_new_unique_across_threads(void)
{
    char(*all)[ID_LEN + 1] = calloc(ID_THREADS * ID_PER_THREAD, sizeof *all);
    pthread_t th[ID_THREADS];
    struct id_batch b[ID_THREADS];
    for (int i = 0; i < ID_THREADS; i++) {
        b[i] = (struct id_batch){.ids = all + i * ID_PER_THREAD};
        CHECK_EQ_INT(pthread_create(&th[i], NULL, id_producer, &b[i]), 0);
    }
    for (int i = 0; i < ID_THREADS; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < ID_THREADS; i++) CHECK_EQ_INT(b[i].not_increasing, 0);
    qsort(all, ID_THREADS * ID_PER_THREAD, sizeof *all, cmp_id);
    int dups = 0, invalid = 0;
    for (int i = 0; i < ID_THREADS * ID_PER_THREAD; i++) {
        invalid += !id_valid(all[i]);
        dups += i > 0 && strcmp(all[i - 1], all[i]) == 0;
    }
    CHECK_EQ_INT(dups, 0);
    CHECK_EQ_INT(invalid, 0);
    free(all);
}

static void test_id_make_known_values(void)
{
    const uint8_t zero[10] = {0}, ones[10] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
                  seq[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    char out[ID_LEN + 1];
    /* The ULID reference example: 1469918176385 ms -> "01ARYZ6S41". */
    id_make(1469918176385, zero, out);
    CHECK_EQ_STR(out, "01ARYZ6S410000000000000000");
    id_make(1469918176385, ones, out);
    CHECK_EQ_STR(out, "01ARYZ6S41ZZZZZZZZZZZZZZZZ");
    id_make(0, seq, out);
    CHECK_EQ_STR(out, "0000000000041061050R3GG28A");
    id_make(1795255200123, zero, out); /* 2026-11-21T10:00:00.123Z */
    CHECK_EQ_INT(strlen(out), ID_LEN);
    CHECK(id_valid(out));
    /* ids sort by their time prefix */
    char later[ID_LEN + 1];
    id_make(1795255200124, zero, later);
    CHECK(strcmp(out, later) < 0);
}

static void test_id_valid_rejects_bad_ids(void)
{
    CHECK(id_valid("01ARYZ6S410000000000000000"));
    CHECK(id_valid("0123456789ABCDEFGHJKMNPQRS"));
    CHECK(id_valid("TVWXYZ0000000000000000000Z"));
    CHECK(!id_valid(""));
    CHECK(!id_valid("01aryz6s410000000000000000"));  /* lower case */
    CHECK(!id_valid("01ARYZ6S41000000000000000"));   /* 25 */
    CHECK(!id_valid("01ARYZ6S4100000000000000000")); /* 27 */
    CHECK(!id_valid("01ARYZ6S41000000000000000I"));
    CHECK(!id_valid("01ARYZ6S41000000000000000L"));
    CHECK(!id_valid("01ARYZ6S41000000000000000O"));
    CHECK(!id_valid("01ARYZ6S41000000000000000U"));
    CHECK(!id_valid("01ARYZ6S41-00000000000000Z"));
    CHECK(!id_valid("01ARYZ6S41 00000000000000Z"));
}

static int64_t g_fixed_ms;
static int64_t fixed_wall(void)
{
    return g_fixed_ms;
}

/* The seam: a frozen clock, then one stepped back, must not break the order. */
static void test_id_new_increasing_with_frozen_and_stepped_back_clock(void)
{
    g_fixed_ms = 4102444800000; /* 2100-01-01, later than any id made so far */
    clock_set_wall(fixed_wall);
    const uint8_t zero[10] = {0};
    char prefix[ID_LEN + 1], prev[ID_LEN + 1] = "", cur[ID_LEN + 1];
    id_make(g_fixed_ms, zero, prefix);
    int not_increasing = 0, wrong_prefix = 0;
    for (int i = 0; i < 20000; i++) {
        if (i == 10000) g_fixed_ms -= 86400000; /* the clock steps back a day */
        id_new(cur);
        not_increasing += i > 0 && strcmp(prev, cur) >= 0;
        wrong_prefix += memcmp(cur, prefix, 10) != 0; /* stays at the latest time seen */
        memcpy(prev, cur, sizeof prev);
    }
    clock_set_wall(NULL);
    CHECK_EQ_INT(not_increasing, 0);
    CHECK_EQ_INT(wrong_prefix, 0);
}

/* ---- clock ----------------------------------------------------------------- */

static void test_clock_format_rfc3339(void)
{
    char buf[CLOCK_RFC3339_LEN];
    clock_format_rfc3339(0, buf);
    CHECK_EQ_STR(buf, "1970-01-01T00:00:00.000Z");
    clock_format_rfc3339(1795255200123, buf);
    CHECK_EQ_STR(buf, "2026-11-21T10:00:00.123Z");
    clock_format_rfc3339(1709251199999, buf);
    CHECK_EQ_STR(buf, "2024-02-29T23:59:59.999Z");
    clock_format_rfc3339(-1, buf);
    CHECK_EQ_STR(buf, "1969-12-31T23:59:59.999Z");
    CHECK_EQ_INT(strlen(buf), CLOCK_RFC3339_LEN - 1);
}

static void test_clock_rfc3339_round_trip(void)
{
    char buf[CLOCK_RFC3339_LEN];
    int64_t samples[] = {0, 1, 999, 1000, 946684800000, 1709251199999, 1795255200123, 4102444799999};
    for (size_t i = 0; i < sizeof samples / sizeof *samples; i++) {
        int64_t back = -1;
        clock_format_rfc3339(samples[i], buf);
        CHECK_EQ_INT(clock_parse_rfc3339(buf, &back), 0);
        CHECK_EQ_INT(back, samples[i]);
    }
    /* a sweep through 2000..2100 in steps that hit every ms digit */
    int bad = 0;
    for (int64_t ms = 946684800000; ms < 4102444800000; ms += 7777777777) {
        int64_t back = -1;
        clock_format_rfc3339(ms, buf);
        bad += clock_parse_rfc3339(buf, &back) != 0 || back != ms;
    }
    CHECK_EQ_INT(bad, 0);
}

static int64_t parsed(const char *s)
{
    int64_t ms = -12345;
    int rc = clock_parse_rfc3339(s, &ms);
    if (rc != 0) fprintf(stderr, "    clock_parse_rfc3339(\"%s\") = %d\n", s, rc);
    return rc == 0 ? ms : -12345;
}

static void test_clock_parse_rfc3339_accepts(void)
{
    const int64_t base = 1795255200000; /* 2026-11-21T10:00:00Z */
    CHECK_EQ_INT(parsed("2026-11-21T10:00:00Z"), base);
    CHECK_EQ_INT(parsed("2026-11-21t10:00:00z"), base);
    CHECK_EQ_INT(parsed("2026-11-21 10:00:00Z"), base);
    CHECK_EQ_INT(parsed("2026-11-21T10:00:00.1Z"), base + 100);
    CHECK_EQ_INT(parsed("2026-11-21T10:00:00.12Z"), base + 120);
    CHECK_EQ_INT(parsed("2026-11-21T10:00:00.123Z"), base + 123);
    CHECK_EQ_INT(parsed("2026-11-21T10:00:00.1234Z"), base + 123);
    CHECK_EQ_INT(parsed("2026-11-21T10:00:00.12345Z"), base + 123);
    CHECK_EQ_INT(parsed("2026-11-21T10:00:00.123456Z"), base + 123);
    CHECK_EQ_INT(parsed("2026-11-21T12:00:00+02:00"), base);
    CHECK_EQ_INT(parsed("2026-11-21T12:00:00.123+02:00"), base + 123);
    CHECK_EQ_INT(parsed("2026-11-21T04:30:00-05:30"), base);
    CHECK_EQ_INT(parsed("2026-11-21T10:00:00+00:00"), base);
    CHECK_EQ_INT(parsed("2026-11-21T10:00:00-00:00"), base);
    CHECK_EQ_INT(parsed("2026-11-22T00:30:00+14:30"), base);
    CHECK_EQ_INT(parsed("1970-01-01T00:00:00Z"), 0);
    CHECK_EQ_INT(parsed("2024-02-29T23:59:59.999Z"), 1709251199999);
}

static void test_clock_parse_rfc3339_rejects_garbage(void)
{
    const char *bad[] = {
        "",
        "garbage",
        "2026-11-21",
        "2026-11-21T10:00",
        "2026-11-21T10:00:00",          /* no zone */
        "2026-11-21T10:00:00.123",      /* no zone */
        "2026-13-01T00:00:00Z",         /* month 13 */
        "2026-00-01T00:00:00Z",         /* month 0 */
        "2026-11-00T00:00:00Z",         /* day 0 */
        "2026-11-32T00:00:00Z",         /* day 32 */
        "2026-11-21T24:00:00Z",         /* hour 24 */
        "2026-11-21T10:60:00Z",         /* minute 60 */
        "2026-11-21T10:00:61Z",         /* second 61 */
        "2026-11-21T10:00:00.Z",        /* empty fraction */
        "2026-11-21T10:00:00+2:00",     /* offset needs two digits */
        "2026-11-21T10:00:00+0200",     /* offset needs a colon */
        "2026-11-21T10:00:00+24:00",    /* offset hour 24 */
        "2026-11-21T10:00:00ZZ",        /* trailing junk */
        "2026-11-21T10:00:00Z ",        /* trailing space */
        "2026/11/21T10:00:00Z",
        "26-11-21T10:00:00Z",
        "2026-11-21X10:00:00Z",
        "+2026-11-21T10:00:00Z",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int64_t ms = 777;
        int rc = clock_parse_rfc3339(bad[i], &ms);
        if (rc != -EINVAL) fprintf(stderr, "    accepted \"%s\" as %lld\n", bad[i], (long long)ms);
        CHECK_EQ_INT(rc, -EINVAL);
        CHECK_EQ_INT(ms, 777); /* untouched */
    }
}

/* A day that does not exist in its month is not a time: "2026-02-30" must not
 * silently become March 2nd (a run_at would fire two days off). */
static void test_clock_parse_rfc3339_rejects_impossible_dates(void)
{
    const char *bad[] = {"2026-02-29T00:00:00Z", "2026-02-30T00:00:00Z", "2026-02-31T00:00:00Z",
                         "2026-04-31T00:00:00Z", "2026-06-31T00:00:00Z", "2100-02-29T00:00:00Z"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int64_t ms = 777;
        int rc = clock_parse_rfc3339(bad[i], &ms);
        if (rc != -EINVAL) fprintf(stderr, "    accepted impossible date \"%s\"\n", bad[i]);
        CHECK_EQ_INT(rc, -EINVAL);
    }
    CHECK_EQ_INT(parsed("2000-02-29T00:00:00Z"), 951782400000); /* leap years stay valid */
    CHECK_EQ_INT(parsed("2024-02-29T00:00:00Z"), 1709164800000);
}

static int64_t g_seam_calls_value;
static atomic_int g_seam_calls;
static int64_t counting_wall(void)
{
    atomic_fetch_add(&g_seam_calls, 1);
    return g_seam_calls_value;
}

static void test_clock_set_wall_seam(void)
{
    g_seam_calls_value = 1234567;
    clock_set_wall(counting_wall);
    CHECK_EQ_INT(clock_wall_ms(), 1234567);
    g_seam_calls_value = 42;
    CHECK_EQ_INT(clock_wall_ms(), 42);
    CHECK_EQ_INT(atomic_load(&g_seam_calls), 2);
    int64_t m0 = clock_mono_ns();
    CHECK(m0 > 0); /* monotonic time is not swapped */
    clock_set_wall(NULL);
    int64_t real = (int64_t)time(NULL) * 1000, now = clock_wall_ms();
    CHECK(now > real - 5000 && now < real + 5000);
    CHECK_EQ_INT(atomic_load(&g_seam_calls), 2);
    CHECK(clock_mono_ns() >= m0);
    CHECK(clock_mono_ms() >= m0 / 1000000);
}

/* ---- the job record ------------------------------------------------------------ */

static void test_job_new_defaults(void)
{
    struct job *j = job_new();
    CHECK(j != NULL);
    if (!j) return;
    CHECK_EQ_STR(j->id, "");
    CHECK_EQ_INT(j->attempt, 0);
    CHECK_EQ_INT(j->max_attempts, 1);
    CHECK_EQ_INT(j->retry_backoff_ms, 1000); /* SPEC §2: retry_backoff defaults to 1 s */
    CHECK_EQ_INT(j->priority, 0);
    CHECK_EQ_INT(j->timeout_ms, 0);
    CHECK(j->progress_fraction < 0);
    CHECK_EQ_STR(j->args, "{}");
    CHECK_EQ_STR(j->depends_on, "[]");
    CHECK(!j->task && !j->executor && !j->result && !j->error_message && !j->worker_thread);
    CHECK(!j->batch_id && !j->idempotency_key && !j->callback_url && !j->callback_status);
    CHECK(!j->progress_message && !j->concurrency_key);
    CHECK_EQ_INT(j->error_type, JOB_ERR_NONE);
    CHECK_EQ_INT(j->created_at_ms + j->scheduled_at_ms + j->started_at_ms + j->finished_at_ms, 0);
    CHECK_EQ_INT(j->worker_pid, 0);
    job_free(j);
    job_free(NULL); /* accepted */
}

static struct job *full_job(void)
{
    struct job *j = job_new();
    if (!j) abort();
    id_new(j->id);
    job_set_str(&j->task, "sleep");
    job_set_str(&j->args, "{\"seconds\":1}");
    job_set_str(&j->executor, "async");
    j->status = JOB_FAILED;
    j->priority = -7;
    j->attempt = 2;
    j->max_attempts = 3;
    j->timeout_ms = 30500;
    j->created_at_ms = 1795255200123;
    j->scheduled_at_ms = 1795255201000;
    j->started_at_ms = 1795255202000;
    j->finished_at_ms = 1795255203000;
    j->progress_fraction = 0.5;
    job_set_str(&j->progress_message, "halfway");
    job_set_str(&j->result, "{\"slept\":1}");
    j->error_type = JOB_ERR_TIMEOUT;
    job_set_str(&j->error_message, "took too long");
    j->worker_pid = 4242;
    job_set_str(&j->worker_thread, "async-0");
    job_set_str(&j->batch_id, "01JD3W6R6ZK1Y8Q3V0C9XH2B7M");
    job_set_str(&j->depends_on, "[\"01JD3W6R6ZK1Y8Q3V0C9XH2B7A\"]");
    job_set_str(&j->concurrency_key, "db");
    j->concurrency_limit = 2;
    job_set_str(&j->idempotency_key, "key-1");
    job_set_str(&j->callback_url, "http://127.0.0.1:9/cb");
    job_set_str(&j->callback_status, "pending");
    return j;
}

static void test_job_dup_is_deep(void)
{
    struct job *a = full_job(), *b = job_dup(a);
    CHECK(b != NULL);
    if (!b) return;
    char *const sa[] = {a->task, a->args, a->executor, a->progress_message, a->result, a->error_message,
                        a->worker_thread, a->batch_id, a->depends_on, a->concurrency_key, a->idempotency_key,
                        a->callback_url, a->callback_status};
    char *const sb[] = {b->task, b->args, b->executor, b->progress_message, b->result, b->error_message,
                        b->worker_thread, b->batch_id, b->depends_on, b->concurrency_key, b->idempotency_key,
                        b->callback_url, b->callback_status};
    for (size_t i = 0; i < sizeof sa / sizeof *sa; i++) {
        CHECK(sa[i] != sb[i]); /* its own copy */
        CHECK_EQ_STR(sb[i], sa[i]);
    }
    CHECK_EQ_STR(b->id, a->id);
    CHECK_EQ_INT(b->timeout_ms, 30500);
    CHECK_EQ_INT(b->concurrency_limit, 2);
    /* mutate the copy in every way: the original does not move */
    for (size_t i = 0; i < sizeof sb / sizeof *sb; i++) sb[i][0] = '#';
    job_set_str(&b->task, "noop");
    job_set_str(&b->result, NULL);
    b->id[0] = 'Z';
    b->attempt = 9;
    CHECK_EQ_STR(a->task, "sleep");
    CHECK_EQ_STR(a->args, "{\"seconds\":1}");
    CHECK_EQ_STR(a->executor, "async");
    CHECK_EQ_STR(a->result, "{\"slept\":1}");
    CHECK_EQ_STR(a->error_message, "took too long");
    CHECK_EQ_STR(a->callback_status, "pending");
    CHECK_EQ_STR(a->depends_on, "[\"01JD3W6R6ZK1Y8Q3V0C9XH2B7A\"]");
    CHECK(a->id[0] == '0');
    CHECK_EQ_INT(a->attempt, 2);
    job_free(b);
    /* NULL strings stay NULL in the copy */
    struct job *n = job_new(), *m = job_dup(n);
    CHECK(m && m->task == NULL && m->result == NULL && m->args != n->args);
    job_free(n);
    job_free(m);
    job_free(a);
}

static const char *const spec_fields[] = {
    "id",         "task",         "args",       "executor",    "status",          "priority",
    "attempt",    "max_attempts", "timeout",    "created_at",  "scheduled_at",    "started_at",
    "finished_at", "progress",    "result",     "error",       "worker",          "batch_id",
    "depends_on", "concurrency_key", "idempotency_key", "callback_url", "callback_status",
};

static bool is_null(const cJSON *o, const char *name)
{
    return cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, name));
}

static const char *str_of(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double num_of(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsNumber(v) ? v->valuedouble : -99999;
}

static void test_job_to_json_fresh_job_has_every_field_null_where_unknown(void)
{
    struct job *j = job_new();
    id_new(j->id);
    job_set_str(&j->task, "noop");
    j->status = JOB_QUEUED;
    cJSON *o = job_to_json(j);
    CHECK(o != NULL);
    for (size_t i = 0; i < sizeof spec_fields / sizeof *spec_fields; i++) {
        bool has = cJSON_GetObjectItemCaseSensitive(o, spec_fields[i]) != NULL;
        if (!has) fprintf(stderr, "    missing field %s\n", spec_fields[i]);
        CHECK(has);
    }
    CHECK_EQ_STR(str_of(o, "id"), j->id);
    CHECK_EQ_STR(str_of(o, "task"), "noop");
    CHECK_EQ_STR(str_of(o, "status"), "queued");
    CHECK(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(o, "args")));
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(o, "args")), 0);
    CHECK(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(o, "depends_on")));
    CHECK_EQ_INT(num_of(o, "priority"), 0);
    CHECK_EQ_INT(num_of(o, "attempt"), 0);
    CHECK_EQ_INT(num_of(o, "max_attempts"), 1);
    const char *nulls[] = {"executor", "timeout",  "created_at",      "scheduled_at",    "started_at",
                           "finished_at", "progress", "result",       "error",           "worker",
                           "batch_id",  "concurrency_key", "idempotency_key", "callback_url", "callback_status"};
    for (size_t i = 0; i < sizeof nulls / sizeof *nulls; i++) {
        if (!is_null(o, nulls[i])) fprintf(stderr, "    %s is not null\n", nulls[i]);
        CHECK(is_null(o, nulls[i]));
    }
    cJSON_Delete(o);
    job_free(j);
}

static void test_job_to_json_full_job(void)
{
    struct job *j = full_job();
    cJSON *o = job_to_json(j);
    CHECK(o != NULL);
    for (size_t i = 0; i < sizeof spec_fields / sizeof *spec_fields; i++)
        CHECK(cJSON_GetObjectItemCaseSensitive(o, spec_fields[i]) != NULL);
    CHECK_EQ_STR(str_of(o, "status"), "failed");
    CHECK_EQ_STR(str_of(o, "executor"), "async");
    CHECK_EQ_INT(num_of(o, "priority"), -7);
    CHECK_EQ_INT(num_of(o, "attempt"), 2);
    CHECK_EQ_INT(num_of(o, "max_attempts"), 3);
    CHECK(num_of(o, "timeout") == 30.5);
    CHECK_EQ_STR(str_of(o, "created_at"), "2026-11-21T10:00:00.123Z");
    CHECK_EQ_STR(str_of(o, "scheduled_at"), "2026-11-21T10:00:01.000Z");
    CHECK_EQ_STR(str_of(o, "started_at"), "2026-11-21T10:00:02.000Z");
    CHECK_EQ_STR(str_of(o, "finished_at"), "2026-11-21T10:00:03.000Z");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(o, "args");
    CHECK(num_of(args, "seconds") == 1);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "progress");
    CHECK(num_of(p, "fraction") == 0.5);
    CHECK_EQ_STR(str_of(p, "message"), "halfway");
    CHECK(num_of(cJSON_GetObjectItemCaseSensitive(o, "result"), "slept") == 1);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
    CHECK(cJSON_IsObject(e));
    CHECK_EQ_INT(cJSON_GetArraySize(e), 2);
    CHECK_EQ_STR(str_of(e, "type"), "timeout");
    CHECK_EQ_STR(str_of(e, "message"), "took too long");
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(o, "worker");
    CHECK(cJSON_IsObject(w));
    CHECK_EQ_INT(cJSON_GetArraySize(w), 3);
    CHECK_EQ_STR(str_of(w, "executor"), "async");
    CHECK_EQ_INT(num_of(w, "pid"), 4242);
    CHECK_EQ_STR(str_of(w, "thread"), "async-0");
    CHECK_EQ_STR(str_of(o, "batch_id"), "01JD3W6R6ZK1Y8Q3V0C9XH2B7M");
    const cJSON *deps = cJSON_GetObjectItemCaseSensitive(o, "depends_on");
    CHECK(cJSON_IsArray(deps) && cJSON_GetArraySize(deps) == 1);
    CHECK_EQ_STR(str_of(o, "concurrency_key"), "db");
    CHECK_EQ_STR(str_of(o, "idempotency_key"), "key-1");
    CHECK_EQ_STR(str_of(o, "callback_url"), "http://127.0.0.1:9/cb");
    CHECK_EQ_STR(str_of(o, "callback_status"), "pending");
    cJSON_Delete(o);

    /* an error without a message still has both keys; a JSON-null result is null */
    job_set_str(&j->error_message, NULL);
    job_set_str(&j->result, "null");
    o = job_to_json(j);
    e = cJSON_GetObjectItemCaseSensitive(o, "error");
    CHECK_EQ_STR(str_of(e, "type"), "timeout");
    CHECK_EQ_STR(str_of(e, "message"), "");
    CHECK(is_null(o, "result"));
    cJSON_Delete(o);
    job_free(j);
}

static void test_job_status_names_round_trip(void)
{
    const char *names[] = {"scheduled", "queued", "running", "succeeded", "failed", "cancelled"};
    for (int s = 0; s < JOB_STATUS_COUNT; s++) {
        enum job_status back = JOB_STATUS_COUNT;
        CHECK_EQ_STR(job_status_name((enum job_status)s), names[s]);
        CHECK_EQ_INT(job_status_parse(job_status_name((enum job_status)s), &back), 0);
        CHECK_EQ_INT(back, s);
        CHECK_EQ_INT(job_status_terminal((enum job_status)s), s >= JOB_SUCCEEDED);
    }
    enum job_status untouched = JOB_RUNNING;
    CHECK_EQ_INT(job_status_parse("Queued", &untouched), -EINVAL);
    CHECK_EQ_INT(job_status_parse("", &untouched), -EINVAL);
    CHECK_EQ_INT(job_status_parse("done", &untouched), -EINVAL);
    CHECK_EQ_INT(untouched, JOB_RUNNING);
    CHECK_EQ_STR(job_status_name(JOB_STATUS_COUNT), "unknown");

    const char *errs[] = {"task_error", "timeout", "cancelled", "worker_lost", "exit_status", "signal",
                          "dependency_failed", "invalid_result"};
    CHECK(job_error_type_name(JOB_ERR_NONE) == NULL);
    for (int t = 1; t < JOB_ERR_COUNT; t++) {
        enum job_error_type back = JOB_ERR_NONE;
        CHECK_EQ_STR(job_error_type_name((enum job_error_type)t), errs[t - 1]);
        CHECK_EQ_INT(job_error_type_parse(errs[t - 1], &back), 0);
        CHECK_EQ_INT(back, t);
    }
    enum job_error_type e = JOB_ERR_NONE;
    CHECK_EQ_INT(job_error_type_parse("boom", &e), -EINVAL);
}

static void test_api_err_from_errno_codes(void)
{
    struct {
        int rc;
        enum api_code code;
    } cases[] = {
        {-ENOENT, API_NOT_FOUND},       {-EEXIST, API_CONFLICT},       {-EALREADY, API_CONFLICT},
        {-EAGAIN, API_QUEUE_FULL},      {-ENOSPC, API_UNAVAILABLE},    {-ESHUTDOWN, API_UNAVAILABLE},
        {-EBUSY, API_UNAVAILABLE},      {-EIO, API_UNAVAILABLE},       {-ENOMEM, API_INTERNAL},
        {-EPERM, API_INTERNAL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct api_err err;
        memset(&err, 'x', sizeof err);
        CHECK_EQ_INT(api_err_from_errno(&err, cases[i].rc, "Job 42"), -1);
        CHECK_EQ_INT(err.code, cases[i].code);
        CHECK_EQ_STR(err.field, "");
        CHECK(memchr(err.message, '\0', sizeof err.message) != NULL && err.message[0] != '\0');
    }
    struct api_err err;
    api_err_from_errno(&err, -ENOENT, "Job 42");
    CHECK(strstr(err.message, "Job 42") != NULL);
    CHECK_EQ_STR(api_code_name(API_QUEUE_FULL), "queue_full");
    CHECK_EQ_STR(api_code_name(API_INVALID_ARGUMENT), "invalid_argument");
    CHECK_EQ_INT(api_err_set(&err, API_CONFLICT, "args.n", "%s %d", "n", 3), -1);
    CHECK_EQ_STR(err.field, "args.n");
    CHECK_EQ_STR(err.message, "n 3");
}

/* clock_format_rfc3339 formats by hand: it must agree with gmtime_r +
 * strftime everywhere in years 1970..9999 (and around the leap days). */
static void test_rfc3339_by_hand_agrees_with_libc(void)
{
    uint64_t x = 88172645463325252ull;
    int bad = 0;
    for (int i = 0; i < 200000 && bad < 3; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int64_t ms = (int64_t)(x % 253402300800000ull); /* up to 9999-12-31T23:59:59.999 */
        if (i < 4) ms = (int64_t[]){0, 951782400000, 951868799999, 4107542400000}[i]; /* epoch, 2000-02-29.. */
        char mine[CLOCK_RFC3339_LEN], ref[64], date[32];
        clock_format_rfc3339(ms, mine);
        time_t secs = (time_t)(ms / 1000);
        struct tm tm;
        gmtime_r(&secs, &tm);
        strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(ref, sizeof ref, "%s.%03dZ", date, (int)(ms % 1000));
        if (strcmp(mine, ref) != 0) {
            fprintf(stderr, "    %lld: %s != %s\n", (long long)ms, mine, ref);
            bad++;
        }
    }
    CHECK_EQ_INT(bad, 0);
}

/* job_event_text and job_attempts_append write JSON by hand: whatever the
 * strings hold (quotes, backslashes, control characters, UTF-8), the result
 * parses, and says what the job says. */
/* job_json_text is job_to_json printed: the same document, field for field,
 * for a fresh job, a full one, odd strings and numbers, and stored JSON that
 * is not valid (sent as a string, as job_to_json does). */
static void expect_text_matches_tree(const struct job *j)
{
    size_t len = 0;
    char *text = job_json_text(j, &len);
    CHECK(text != NULL);
    if (!text) return;
    CHECK_EQ_INT((long)len, (long)strlen(text));
    cJSON *parsed = cJSON_Parse(text), *tree = job_to_json(j);
    CHECK(parsed != NULL);
    bool same = parsed && cJSON_Compare(parsed, tree, 1);
    if (!same) {
        char *want = cJSON_PrintUnformatted(tree);
        fprintf(stderr, "    text %s\n    tree %s\n", text, want);
        free(want);
    }
    CHECK(same);
    cJSON_Delete(parsed);
    cJSON_Delete(tree);
    free(text);
}

static void test_job_json_text_is_job_to_json(void)
{
    struct job *j = job_new();
    strcpy(j->id, "01HZZZZZZZZZZZZZZZZZZZZZZZ");
    job_set_str(&j->task, "noop");
    job_set_str(&j->executor, "default");
    expect_text_matches_tree(j); /* fresh */
    j->status = JOB_FAILED;
    j->priority = -7;
    j->attempt = 2;
    j->max_attempts = 3;
    j->timeout_ms = 1234;
    j->created_at_ms = 1700000000123;
    j->scheduled_at_ms = 1700000000456;
    j->started_at_ms = 1700000000789;
    j->finished_at_ms = 1700000001000;
    j->progress_fraction = 0.1;
    job_set_str(&j->progress_message, "ctl \x01\t\n \"quoted\" back\\slash \xc3\xa9");
    job_set_str(&j->args, "{\"n\":[1,2.5,{\"s\":\"x\"}],\"b\":true}");
    job_set_str(&j->result, "[1e300,-0.001,\"\\u00e9\"]");
    j->error_type = JOB_ERR_TIMEOUT;
    job_set_str(&j->error_message, "took too long");
    j->worker_pid = 4242;
    job_set_str(&j->worker_thread, "default-3");
    job_set_str(&j->batch_id, "01HZZZZZZZZZZZZZZZZZZZZZZY");
    job_set_str(&j->depends_on, "[\"01HZZZZZZZZZZZZZZZZZZZZZZX\"]");
    job_set_str(&j->concurrency_key, "k/1");
    j->concurrency_limit = 2;
    job_set_str(&j->idempotency_key, "key \xe2\x9c\x93");
    job_set_str(&j->callback_url, "http://127.0.0.1:1/cb?a=1&b=2");
    job_set_str(&j->callback_status, "pending");
    job_set_str(&j->attempts, "[{\"attempt\":1,\"status\":\"failed\"}]");
    expect_text_matches_tree(j); /* full */
    j->timeout_ms = 3600000;
    j->priority = 1000000;
    j->progress_fraction = 1.0 / 3.0;
    job_set_str(&j->result, "not json {");
    job_set_str(&j->args, "{}");
    expect_text_matches_tree(j); /* a stored text that is not JSON goes as a string */
    job_set_str(&j->result, "null");
    j->error_type = JOB_ERR_NONE;
    expect_text_matches_tree(j);
    job_free(j);
}

static void test_hand_written_event_and_attempts_json_parse(void)
{
    struct job *j = job_new();
    id_new(j->id);
    job_set_str(&j->task, "t\"a\\sk");
    job_set_str(&j->executor, "ex\n1");
    job_set_str(&j->error_message, "bad \"quote\"\x01\ttab \xc3\xa9");
    job_set_str(&j->worker_thread, "thread-\"2\"");
    j->status = JOB_FAILED;
    j->error_type = JOB_ERR_TASK;
    j->attempt = 1;
    j->max_attempts = 2;
    j->created_at_ms = 1795246371849;
    j->started_at_ms = 1795246371850;
    j->finished_at_ms = 1795246371999;
    char *ev = job_event_text(j);
    cJSON *o = cJSON_Parse(ev);
    CHECK(o != NULL);
    CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(o, "task")), "t\"a\\sk");
    CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(o, "status")), "failed");
    cJSON *err = cJSON_GetObjectItem(o, "error");
    CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(err, "message")), "bad \"quote\"\x01\ttab \xc3\xa9");
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(o, "batch_id")));
    cJSON_Delete(o);
    free(ev);

    CHECK_EQ_INT(job_attempts_append(j), 0);
    j->attempt = 2;
    j->status = JOB_SUCCEEDED;
    j->error_type = JOB_ERR_NONE;
    CHECK_EQ_INT(job_attempts_append(j), 0);
    cJSON *a = cJSON_Parse(j->attempts);
    CHECK(cJSON_IsArray(a) && cJSON_GetArraySize(a) == 2);
    cJSON *first = cJSON_GetArrayItem(a, 0), *second = cJSON_GetArrayItem(a, 1);
    CHECK_EQ_INT((int)cJSON_GetNumberValue(cJSON_GetObjectItem(first, "attempt")), 1);
    CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(first, "worker"), "thread")),
                 "thread-\"2\"");
    CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(first, "error"), "type")), "task_error");
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(second, "error")));
    CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(second, "status")), "succeeded");
    cJSON_Delete(a);
    job_free(j);
}

int main(void)
{
    log_init(LOG_LEVEL_OFF, LOG_FORMAT_TEXT);
    RUN(test_id_new_is_valid_and_strictly_increasing);
    RUN(test_id_new_unique_across_threads);
    RUN(test_id_make_known_values);
    RUN(test_id_valid_rejects_bad_ids);
    RUN(test_clock_format_rfc3339);
    RUN(test_clock_rfc3339_round_trip);
    RUN(test_clock_parse_rfc3339_accepts);
    RUN(test_clock_parse_rfc3339_rejects_garbage);
    RUN(test_clock_parse_rfc3339_rejects_impossible_dates);
    RUN(test_clock_set_wall_seam);
    RUN(test_job_new_defaults);
    RUN(test_job_dup_is_deep);
    RUN(test_job_to_json_fresh_job_has_every_field_null_where_unknown);
    RUN(test_job_to_json_full_job);
    RUN(test_hand_written_event_and_attempts_json_parse);
    RUN(test_job_json_text_is_job_to_json);
    RUN(test_rfc3339_by_hand_agrees_with_libc);
    RUN(test_job_status_names_round_trip);
    RUN(test_api_err_from_errno_codes);
    RUN(test_id_new_increasing_with_frozen_and_stepped_back_clock); /* last: leaves ids in 2100 */
    return harness_finish();
}
