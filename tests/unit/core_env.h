/* core_env.h - what the core's unit tests share: recording callbacks (with
 * waits that have deadlines), and an environment of a temp dir, a store and a
 * core. Included once by each test file after harness.h and tmpdir.h; every
 * function is static inline so a file needs only what it calls. main() must
 * set g_cv up with CLOCK_MONOTONIC and g_reg with task_registry_new().
 */
#ifndef JOBD_CORE_ENV_H
#define JOBD_CORE_ENV_H

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../common/clock.h"
#include "../../common/id.h"
#include "../../common/job.h"
#include "../../core/core.h"
#include "../../storage/store.h"
#include "../../tasks/task.h"

#define SLEEP30 "{\"task\":\"sleep\",\"args\":{\"seconds\":30}}"
#define LATER "{\"task\":\"noop\",\"delay\":60}"
#define NOOP "{\"task\":\"noop\"}"

static struct task_registry *g_reg;

/* ---- callback recording ---------------------------------------------------------- */

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv; /* CLOCK_MONOTONIC, set up by main */
static int g_seq;           /* guarded by g_mu: order in which callbacks fired */
static bool g_gate_open;    /* guarded by g_mu: see ev.gate */

struct ev {
    int calls, rc, seq;
    int64_t at_ms;    /* clock_mono_ms() of the last call */
    struct store *st; /* when set, the cb reads job `id` back: rc in found_rc */
    char id[ID_LEN + 1];
    int found_rc;
    bool gate; /* when set, the cb then holds its thread until g_gate_open (2 s max) */
};

static inline void abs_deadline(struct timespec *ts, int64_t timeout_ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    int64_t ns = (int64_t)ts->tv_sec * 1000000000LL + ts->tv_nsec + timeout_ms * 1000000LL;
    ts->tv_sec = ns / 1000000000LL;
    ts->tv_nsec = ns % 1000000000LL;
}

static inline void ev_done(void *ctx, int rc, const struct job *job)
{
    struct ev *e = ctx;
    int found = -1;
    if (e->st) {
        struct job *back = NULL;
        found = store_job_get(e->st, job ? job->id : e->id, &back);
        job_free(back);
    }
    pthread_mutex_lock(&g_mu);
    e->calls++;
    e->rc = rc;
    e->found_rc = found;
    e->seq = ++g_seq;
    e->at_ms = clock_mono_ms();
    /* Read before waiting: once the gate opens, the test may be done with
     * *e (a local of a loop) before this thread wakes (ASan caught it). */
    bool gate = e->gate;
    pthread_cond_broadcast(&g_cv);
    struct timespec ts;
    abs_deadline(&ts, 2000);
    while (gate && !g_gate_open && pthread_cond_timedwait(&g_cv, &g_mu, &ts) == 0) {
    }
    pthread_mutex_unlock(&g_mu);
}

static inline void ev_wake(void *ctx)
{
    ev_done(ctx, 0, NULL);
}

static inline bool ev_wait(struct ev *e, int n, int64_t timeout_ms)
{
    struct timespec ts;
    abs_deadline(&ts, timeout_ms);
    pthread_mutex_lock(&g_mu);
    int rc = 0;
    while (e->calls < n && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&g_cv, &g_mu, &ts);
    bool ok = e->calls >= n;
    pthread_mutex_unlock(&g_mu);
    if (!ok) fprintf(stderr, "    timed out after %lld ms waiting for a callback\n", (long long)timeout_ms);
    return ok;
}

static inline int ev_calls(struct ev *e)
{
    pthread_mutex_lock(&g_mu);
    int n = e->calls;
    pthread_mutex_unlock(&g_mu);
    return n;
}

static inline void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- the environment: a temp dir, a store, a core ----------------------------------- */

struct env {
    struct tmp tmp;
    struct store *st;
    struct core *c;
    const struct core_executor_config *cfg;
    int n_cfg;
    long resident; /* core_options.resident_jobs */
};

static const struct core_executor_config k_two[] = {
    {.name = "w", .kind = TASK_KIND_THREAD, .size = 2, .max_queued = 1000},
    {.name = "io", .kind = TASK_KIND_THREAD, .size = 1, .max_queued = 1000},
};
static const struct core_executor_config k_one[] = {
    {.name = "one", .kind = TASK_KIND_THREAD, .size = 1, .max_queued = 100},
};

static inline void env_open_store(struct env *e)
{
    struct store_options so = {.path = e->tmp.db};
    if (store_open(&so, &e->st) != 0) abort();
}

static inline void env_open_core(struct env *e)
{
    struct core_options co = {
        .executors = e->cfg, .n_executors = e->n_cfg, .tasks = g_reg, .store = e->st, .resident_jobs = e->resident};
    if (core_open(&co, &e->c) != 0) abort();
}

/* resident: core_options.resident_jobs (0: every pending job in memory). */
static inline void env_open_resident(struct env *e, const struct core_executor_config *cfg, int n, long resident)
{
    memset(e, 0, sizeof *e);
    tmp_make(&e->tmp, "core");
    e->cfg = cfg;
    e->n_cfg = n;
    e->resident = resident;
    env_open_store(e);
    env_open_core(e);
}

static inline void env_open(struct env *e, const struct core_executor_config *cfg, int n)
{
    env_open_resident(e, cfg, n, 0);
}

static inline void env_close(struct env *e)
{
    core_close(e->c);
    store_close(e->st);
    tmp_remove(&e->tmp);
}

/* A job from a JSON spec, which must validate. */
static inline struct job *spec_job(struct env *e, const char *json)
{
    cJSON *spec = cJSON_Parse(json);
    struct job *j = NULL;
    struct api_err err = {0};
    int rc = core_job_from_json(e->c, spec, "", &j, &err);
    cJSON_Delete(spec);
    if (rc != 0) {
        fprintf(stderr, "    spec %s refused: %s: %s\n", json, err.field, err.message);
        abort();
    }
    return j;
}

/* Submits a spec; id gets its id. sub (may be NULL) receives the commit cb. */
static inline int submit_json(struct env *e, const char *json, char id[ID_LEN + 1], struct ev *sub)
{
    struct job *j = spec_job(e, json);
    memcpy(id, j->id, ID_LEN + 1);
    if (sub) memcpy(sub->id, j->id, ID_LEN + 1);
    return core_job_submit(e->c, j, sub ? ev_done : NULL, sub);
}

/* Submits and waits for the commit callback (the client's acknowledgement). */
static inline void submit_acked(struct env *e, const char *json, char id[ID_LEN + 1])
{
    struct ev sub = {0};
    CHECK_EQ_INT(submit_json(e, json, id, &sub), 0);
    CHECK(ev_wait(&sub, 1, 5000));
    CHECK_EQ_INT(sub.rc, 0);
}

/* Waits (registering first, then reading) until the job is terminal, and
 * returns it from the store (caller frees), or NULL / a live job on timeout. */
static inline struct job *wait_end(struct env *e, const char *id, int64_t timeout_ms)
{
    struct ev w = {0};
    uint64_t tok = 0;
    struct job *j = NULL;
    int rc = core_wait_job(e->c, id, clock_mono_ms() + timeout_ms, ev_wake, &w, &tok);
    CHECK_EQ_INT(rc, 0);
    if (rc) return NULL;
    if (store_job_get(e->st, id, &j) == 0 && job_status_terminal(j->status)) {
        if (!core_wait_cancel(e->c, id, tok)) ev_wait(&w, 1, 5000); /* firing: let it finish with w */
        return j;
    }
    job_free(j);
    j = NULL;
    ev_wait(&w, 1, timeout_ms + 2000);
    store_job_get(e->st, id, &j);
    if (!j || !job_status_terminal(j->status)) fprintf(stderr, "    job %s did not end in time\n", id);
    return j;
}

/* Waits for the job to end and checks how. */
static inline void expect_end(struct env *e, const char *id, enum job_status status)
{
    struct job *j = wait_end(e, id, 5000);
    CHECK(j != NULL);
    if (j && j->status != status) fprintf(stderr, "    job ended %s\n", job_status_name(j->status));
    CHECK(j && j->status == status);
    job_free(j);
}

/* Submits a spec and returns the ended job (caller frees). */
static inline struct job *run_json(struct env *e, const char *json, char id[ID_LEN + 1])
{
    CHECK_EQ_INT(submit_json(e, json, id, NULL), 0);
    return wait_end(e, id, 5000);
}

/* Polls the store until the job has `status` (a condition with a deadline). */
static inline bool wait_status(struct env *e, const char *id, enum job_status status, int64_t timeout_ms)
{
    int64_t end = clock_mono_ms() + timeout_ms;
    for (;;) {
        struct job *j = NULL;
        bool ok = store_job_get(e->st, id, &j) == 0 && j->status == status;
        job_free(j);
        if (ok) return true;
        if (clock_mono_ms() >= end) break;
        sleep_ms(2);
    }
    fprintf(stderr, "    job %s never became %s\n", id, job_status_name(status));
    return false;
}

/* Occupies a worker with a sleep 30 and waits until it runs. */
static inline void hold_worker(struct env *e, char id[ID_LEN + 1])
{
    CHECK_EQ_INT(submit_json(e, SLEEP30, id, NULL), 0);
    CHECK(wait_status(e, id, JOB_RUNNING, 5000));
}

/* Polls until executor idx holds `queued` jobs in its ready queue. */
static inline bool wait_exec_queued(struct env *e, int idx, long queued, int64_t timeout_ms)
{
    int64_t end = clock_mono_ms() + timeout_ms;
    struct core_executor_stats s[4];
    do {
        core_executor_stats(e->c, s, 4);
        if (s[idx].queued == queued) return true;
        sleep_ms(2);
    } while (clock_mono_ms() < end);
    fprintf(stderr, "    executor %d holds %ld queued, not %ld\n", idx, s[idx].queued, queued);
    return false;
}

#endif
