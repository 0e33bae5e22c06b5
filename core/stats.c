/* stats.c - counts by status, throughput and latency samples for /v1/stats. */
#include <stdlib.h>
#include <string.h>

#include "../common/clock.h"
#include "core_int.h"

void core_stats_init(struct core_statsbuf *s)
{
    memset(s, 0, sizeof *s);
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

void core_stats_finished(struct core_statsbuf *s, const struct job *job)
{
    int64_t sec = clock_wall_ms() / 1000;
    int b = (int)(sec % STATS_WINDOW_S);
    pthread_mutex_lock(&s->lock);
    if (s->bucket_sec[b] != sec) {
        s->bucket_sec[b] = sec;
        s->bucket_n[b] = 0;
    }
    s->bucket_n[b]++;
    if (job->started_at_ms > 0) {
        int64_t eligible = job->scheduled_at_ms > 0 ? job->scheduled_at_ms : job->created_at_ms;
        double wait = (double)(job->started_at_ms - eligible);
        s->wait_ms[s->n_wait++ % STATS_SAMPLES] = wait < 0 ? 0 : wait;
        if (job->finished_at_ms >= job->started_at_ms)
            s->run_ms[s->n_run++ % STATS_SAMPLES] = (double)(job->finished_at_ms - job->started_at_ms);
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
