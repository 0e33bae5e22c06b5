/* stats.c - counts by status, throughput and latency samples for /v1/stats,
 * and the history behind its charts: a ring of CORE_HISTORY_POINTS buckets of
 * CORE_HISTORY_INTERVAL_S wall-clock seconds each, indexed by (start / interval)
 * % points, so that a bucket is reused (zeroed) when time comes round to it
 * again. Everything is under s->lock, taken once per finished job; sorting
 * for percentiles happens on copies, outside it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../common/clock.h"
#include "core_int.h"

void core_stats_init(struct core_statsbuf *s)
{
    memset(s, 0, sizeof *s);
    s->rng = 0x9e3779b97f4a7c15u;
    pthread_mutex_init(&s->lock, NULL);
}

void core_stats_fini(struct core_statsbuf *s)
{
    pthread_mutex_destroy(&s->lock);
}

void core_stats_transition(struct core_statsbuf *s, int from, int to)
{
    pthread_mutex_lock(&s->lock);
    if (from >= 0 && s->counts[from] > 0) s->counts[from]--;
    if (to >= 0) s->counts[to]++;
    pthread_mutex_unlock(&s->lock);
}

/* Offers sample v to a bucket's reservoir of which *n were offered before
 * (lock held): the first STATS_HISTORY_SAMPLES are kept, then each new one
 * replaces a random kept one with probability STATS_HISTORY_SAMPLES / n. */
static void reservoir_add(struct core_statsbuf *s, float *v, long *n, double x)
{
    long i = (*n)++;
    if (i >= STATS_HISTORY_SAMPLES) {
        s->rng ^= s->rng << 13; /* xorshift64 */
        s->rng ^= s->rng >> 7;
        s->rng ^= s->rng << 17;
        i = (long)(s->rng % (uint64_t)(i + 1));
        if (i >= STATS_HISTORY_SAMPLES) return;
    }
    v[i] = (float)x;
}

/* The history bucket that starts at start_s, reset if it held an older one (lock held). */
static struct core_stats_bucket *bucket_at(struct core_statsbuf *s, int64_t start_s)
{
    struct core_stats_bucket *h = &s->history[(start_s / CORE_HISTORY_INTERVAL_S) % CORE_HISTORY_POINTS];
    if (h->start_s != start_s) {
        h->start_s = start_s;
        h->succeeded = h->failed = h->cancelled = 0;
        h->n_wait = h->n_run = 0;
    }
    return h;
}

void core_stats_finished(struct core_statsbuf *s, const struct job *job)
{
    int64_t sec = clock_wall_ms() / 1000;
    int b = (int)(sec % STATS_WINDOW_S);
    int64_t hsec = sec < 0 ? 0 : sec; /* a clock before 1970: the first bucket rather than out of the ring */
    pthread_mutex_lock(&s->lock);
    struct core_stats_bucket *h = bucket_at(s, hsec - hsec % CORE_HISTORY_INTERVAL_S);
    if (job->status == JOB_SUCCEEDED) h->succeeded++;
    else if (job->status == JOB_FAILED) h->failed++;
    else if (job->status == JOB_CANCELLED) h->cancelled++;
    if (s->bucket_sec[b] != sec) {
        s->bucket_sec[b] = sec;
        s->bucket_n[b] = 0;
    }
    s->bucket_n[b]++;
    if (job->started_at_ms > 0) {
        int64_t eligible = job->scheduled_at_ms > 0 ? job->scheduled_at_ms : job->created_at_ms;
        double wait = (double)(job->started_at_ms - eligible);
        s->wait_ms[s->n_wait++ % STATS_SAMPLES] = wait < 0 ? 0 : wait;
        reservoir_add(s, h->wait_ms, &h->n_wait, wait < 0 ? 0 : wait);
        if (job->finished_at_ms >= job->started_at_ms) {
            double run = (double)(job->finished_at_ms - job->started_at_ms);
            s->run_ms[s->n_run++ % STATS_SAMPLES] = run;
            reservoir_add(s, h->run_ms, &h->n_run, run);
        }
    }
    pthread_mutex_unlock(&s->lock);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Quantile q of the first n samples in v (sorted in place). */
static double quantile(double *v, long n, double q)
{
    if (n <= 0) return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    long i = (long)(q * (double)(n - 1) + 0.5);
    return v[i];
}

void core_get_stats(struct core *c, struct core_stats *out)
{
    struct core_statsbuf *s = &c->stats;
    static __thread double wait[STATS_SAMPLES], run[STATS_SAMPLES];
    int64_t now_sec = clock_wall_ms() / 1000;
    int64_t finished = 0;
    long nw, nr;
    pthread_mutex_lock(&s->lock);
    memcpy(out->counts, s->counts, sizeof out->counts);
    for (int b = 0; b < STATS_WINDOW_S; b++)
        if (s->bucket_sec[b] > now_sec - STATS_WINDOW_S && s->bucket_sec[b] <= now_sec) finished += s->bucket_n[b];
    nw = s->n_wait < STATS_SAMPLES ? s->n_wait : STATS_SAMPLES;
    nr = s->n_run < STATS_SAMPLES ? s->n_run : STATS_SAMPLES;
    memcpy(wait, s->wait_ms, (size_t)nw * sizeof *wait);
    memcpy(run, s->run_ms, (size_t)nr * sizeof *run);
    pthread_mutex_unlock(&s->lock);
    out->throughput_per_s = (double)finished / STATS_WINDOW_S;
    out->queue_wait_ms_p50 = quantile(wait, nw, 0.50);
    out->queue_wait_ms_p95 = quantile(wait, nw, 0.95);
    out->run_time_ms_p50 = quantile(run, nr, 0.50);
    out->run_time_ms_p95 = quantile(run, nr, 0.95);
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Quantile q of the n floats in v (sorted in place), as quantile() does. */
static double quantile_f(float *v, long n, double q)
{
    if (n <= 0) return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_float);
    return v[(long)(q * (double)(n - 1) + 0.5)];
}

int core_stats_history(struct core_statsbuf *s, struct core_stats_history *out)
{
    int64_t now_s = clock_wall_ms() / 1000;
    if (now_s < 0) now_s = 0;
    int64_t last = now_s - now_s % CORE_HISTORY_INTERVAL_S;
    int64_t first = last - (int64_t)(CORE_HISTORY_POINTS - 1) * CORE_HISTORY_INTERVAL_S;
    /* the kept samples of every point, copied out so that sorting them holds no lock */
    struct samples {
        long n_wait, n_run;
        float wait[STATS_HISTORY_SAMPLES], run[STATS_HISTORY_SAMPLES];
    } *smp = malloc(CORE_HISTORY_POINTS * sizeof *smp);
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&s->lock);
    for (int k = 0; k < CORE_HISTORY_POINTS; k++) {
        int64_t start = first + (int64_t)k * CORE_HISTORY_INTERVAL_S;
        struct core_stats_point *p = &out->points[k];
        p->at_ms = start * 1000;
        if (start < 0) continue;
        const struct core_stats_bucket *h = &s->history[(start / CORE_HISTORY_INTERVAL_S) % CORE_HISTORY_POINTS];
        if (h->start_s != start) continue; /* nothing finished then (or its bucket was reused) */
        p->succeeded = h->succeeded;
        p->failed = h->failed;
        p->cancelled = h->cancelled;
        if (!smp) continue;
        smp[k].n_wait = h->n_wait < STATS_HISTORY_SAMPLES ? h->n_wait : STATS_HISTORY_SAMPLES;
        smp[k].n_run = h->n_run < STATS_HISTORY_SAMPLES ? h->n_run : STATS_HISTORY_SAMPLES;
        memcpy(smp[k].wait, h->wait_ms, (size_t)smp[k].n_wait * sizeof(float));
        memcpy(smp[k].run, h->run_ms, (size_t)smp[k].n_run * sizeof(float));
    }
    pthread_mutex_unlock(&s->lock);
    if (!smp) return -ENOMEM;
    for (int k = 0; k < CORE_HISTORY_POINTS; k++) {
        struct core_stats_point *p = &out->points[k];
        if (p->succeeded + p->failed + p->cancelled == 0) continue; /* its samples were not copied */
        p->queue_wait_ms_p50 = quantile_f(smp[k].wait, smp[k].n_wait, 0.50);
        p->queue_wait_ms_p95 = quantile_f(smp[k].wait, smp[k].n_wait, 0.95);
        p->run_time_ms_p50 = quantile_f(smp[k].run, smp[k].n_run, 0.50);
        p->run_time_ms_p95 = quantile_f(smp[k].run, smp[k].n_run, 0.95);
    }
    free(smp);
    return 0;
}

int core_get_stats_history(struct core *c, struct core_stats_history *out)
{
    return core_stats_history(&c->stats, out);
}
