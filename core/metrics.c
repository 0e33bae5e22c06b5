/* metrics.c - job counters and latency histograms for GET /metrics.
 *
 * DESIGN. Everything is sized once, in core_open, from what is fixed for the
 * life of the process: the registry's tasks (read-only once running) and the
 * configured executors. Counters live in a flat array indexed
 * [task][executor] and are plain atomics updated with relaxed order, so the
 * hot path is a task-name lookup (one hash, one strcmp) and one increment on
 * submit, and the lookup, one increment and two histogram observations
 * (three increments each) on finish. No lock, no allocation. Readers load
 * each counter atomically; a scrape may see a job counted as submitted but
 * not yet finished, never a counter go backwards.
 *
 * Threads: core_metrics_submitted runs on the store writer (insert_done),
 * core_metrics_finished on executor workers (hook_done) and on whoever
 * cancels a scheduled job; readers on HTTP threads.
 */
#include "../common/hash.h"
#include "core_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

const double core_latency_bounds_s[CORE_LATENCY_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
};
/* The same bounds in microseconds, for integer comparison with whole-ms times. */
static const int64_t bounds_us[CORE_LATENCY_BUCKETS] = {
    500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000, 10000000, 30000000, 60000000,
};


int core_metrics_init(struct core *c)
{
    struct core_metrics *m = &c->metrics;
    m->n_tasks = task_count(c->tasks);
    m->n_execs = c->n_execs;
    m->nslots = 8;
    while (m->nslots < 2 * m->n_tasks) m->nslots <<= 1;
    m->slots = calloc(m->nslots, sizeof *m->slots);
    /* calloc(0) may return NULL: keep at least one cell so pointers are valid. */
    size_t n_cells = m->n_tasks * (size_t)m->n_execs;
    m->cells = calloc(n_cells ? n_cells : 1, sizeof *m->cells);
    m->wait = calloc(m->n_execs > 0 ? (size_t)m->n_execs : 1, sizeof *m->wait);
    m->run = calloc(m->n_execs > 0 ? (size_t)m->n_execs : 1, sizeof *m->run);
    if (!m->slots || !m->cells || !m->wait || !m->run) return -ENOMEM;
    size_t mask = m->nslots - 1;
    for (size_t i = 0; i < m->n_tasks; i++) {
        size_t s = (size_t)hash_str(task_at(c->tasks, i)->name) & mask;
        while (m->slots[s]) s = (s + 1) & mask; /* names are unique: no duplicate check */
        m->slots[s] = (uint32_t)(i + 1);
    }
    /* calloc'd atomics: all-zero bytes are a valid zero on every platform we build for. */
    return 0;
}

void core_metrics_fini(struct core_metrics *m)
{
    free(m->slots);
    free(m->cells);
    free(m->wait);
    free(m->run);
    memset(m, 0, sizeof *m);
}

/* The index of task `name`, or -1 (a job of a task this registry lacks). */
static long task_index(const struct core *c, const char *name)
{
    const struct core_metrics *m = &c->metrics;
    if (!name || !m->slots) return -1;
    size_t mask = m->nslots - 1;
    /* Terminates: the table is at most half full. */
    for (size_t s = (size_t)hash_str(name) & mask; m->slots[s]; s = (s + 1) & mask) {
        size_t i = m->slots[s] - 1;
        if (strcmp(task_at(c->tasks, i)->name, name) == 0) return (long)i;
    }
    return -1;
}

static struct core_job_cell *cell_of(struct core *c, int exec_idx, const struct job *job)
{
    struct core_metrics *m = &c->metrics;
    if (exec_idx < 0 || exec_idx >= m->n_execs) return NULL;
    long t = task_index(c, job->task);
    return t < 0 ? NULL : &m->cells[(size_t)t * (size_t)m->n_execs + (size_t)exec_idx];
}

static void count(atomic_ullong *a, uint64_t n)
{
    atomic_fetch_add_explicit(a, n, memory_order_relaxed);
}

static void observe(struct core_hist *h, int64_t ms)
{
    if (ms < 0) ms = 0; /* a wall-clock step backwards */
    int64_t us = ms * 1000;
    int b = 0;
    while (b < CORE_LATENCY_BUCKETS && us > bounds_us[b]) b++;
    count(&h->bucket[b], 1);
    count(&h->sum_ms, (uint64_t)ms);
}

void core_metrics_submitted(struct core *c, int exec_idx, const struct job *job)
{
    struct core_job_cell *cell = cell_of(c, exec_idx, job);
    if (cell) count(&cell->submitted, 1);
}

void core_metrics_finished(struct core *c, int exec_idx, const struct job *job)
{
    struct core_job_cell *cell = cell_of(c, exec_idx, job);
    if (cell) {
        switch (job->status) {
        case JOB_SUCCEEDED: count(&cell->succeeded, 1); break;
        case JOB_FAILED: count(&cell->failed, 1); break;
        case JOB_CANCELLED: count(&cell->cancelled, 1); break;
        default: break; /* not terminal: not an outcome */
        }
    }
    if (exec_idx < 0 || exec_idx >= c->metrics.n_execs || job->started_at_ms <= 0) return;
    int64_t eligible = job->scheduled_at_ms > 0 ? job->scheduled_at_ms : job->created_at_ms;
    observe(&c->metrics.wait[exec_idx], job->started_at_ms - eligible);
    if (job->finished_at_ms >= job->started_at_ms)
        observe(&c->metrics.run[exec_idx], job->finished_at_ms - job->started_at_ms);
}

static uint64_t load(atomic_ullong *a)
{
    return atomic_load_explicit(a, memory_order_relaxed);
}

void core_job_counters_each(struct core *c, core_job_counters_cb cb, void *ctx)
{
    struct core_metrics *m = &c->metrics;
    for (size_t t = 0; t < m->n_tasks; t++) {
        const struct task_def *def = task_at(c->tasks, t);
        for (int e = 0; e < m->n_execs; e++) {
            struct core_job_cell *cell = &m->cells[t * (size_t)m->n_execs + (size_t)e];
            struct core_job_counters jc = {
                .task = def->name,
                .executor = c->execs[e].cfg.name,
                .submitted = load(&cell->submitted),
                .succeeded = load(&cell->succeeded),
                .failed = load(&cell->failed),
                .cancelled = load(&cell->cancelled),
            };
            bool can_run = (c->execs[e].cfg.kind & def->kinds) != 0;
            if (can_run || jc.submitted || jc.succeeded || jc.failed || jc.cancelled) cb(ctx, &jc);
        }
    }
}

static void hist_copy(struct core_hist *h, struct core_latency_hist *out)
{
    for (int b = 0; b <= CORE_LATENCY_BUCKETS; b++) out->bucket[b] = load(&h->bucket[b]);
    out->sum_ms = load(&h->sum_ms);
}

int core_executor_latency(struct core *c, int i, struct core_latency_hist *wait, struct core_latency_hist *run)
{
    if (i < 0 || i >= c->metrics.n_execs) return -ENOENT;
    if (wait) hist_copy(&c->metrics.wait[i], wait);
    if (run) hist_copy(&c->metrics.run[i], run);
    return 0;
}
