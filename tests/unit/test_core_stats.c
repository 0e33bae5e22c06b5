/* test_core_stats.c - core/stats.c: the history behind /v1/stats's charts.
 *
 * Works on a bare statsbuf (no store, no executors) with the wall clock
 * swapped through clock_set_wall(), so every bucket boundary is exact: jobs
 * are made with the waits and run times the test wants and handed to
 * core_stats_finished as the dispatcher would.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/clock.h"
#include "../../common/job.h"
#include "../../common/log.h"
#include "../../core/core.h"
#include "../../core/core_int.h"
#include "harness.h"

#define T0_MS 1700000005000LL /* 5 s into a 10 s bucket */
#define LAST CORE_HISTORY_POINTS - 1

static int64_t g_now_ms;

static int64_t fake_wall(void)
{
    return g_now_ms;
}

/* A job that ended with status, having waited wait_ms (-1: never started) and run run_ms. */
static void finish(struct core_statsbuf *s, enum job_status status, int64_t wait_ms, int64_t run_ms)
{
    struct job *j = job_new();
    if (!j) abort();
    j->status = status;
    j->created_at_ms = j->scheduled_at_ms = g_now_ms - 100000;
    if (wait_ms >= 0) {
        j->started_at_ms = j->scheduled_at_ms + wait_ms;
        j->finished_at_ms = j->started_at_ms + run_ms;
    } else {
        j->finished_at_ms = g_now_ms;
    }
    core_stats_finished(s, j);
    job_free(j);
}

static int64_t total(const struct core_stats_point *p)
{
    return p->succeeded + p->failed + p->cancelled;
}

static void test_history_buckets_count_by_status_with_percentiles(void)
{
    struct core_statsbuf *s = malloc(sizeof *s);
    struct core_stats_history *h = malloc(sizeof *h);
    if (!s || !h) abort();
    core_stats_init(s);
    clock_set_wall(fake_wall);
    g_now_ms = T0_MS;

    /* nothing yet: 60 zero points, 10 s apart, the last one holding now */
    CHECK_EQ_INT(core_stats_history(s, h), 0);
    for (int k = 0; k < CORE_HISTORY_POINTS; k++) {
        CHECK_EQ_INT(h->points[k].at_ms, T0_MS - 5000 - (int64_t)(LAST - k) * 10000);
        CHECK_EQ_INT(total(&h->points[k]), 0);
        CHECK(h->points[k].queue_wait_ms_p50 == 0 && h->points[k].run_time_ms_p95 == 0);
    }

    for (int i = 1; i <= 3; i++) finish(s, JOB_SUCCEEDED, 10 * i, 100 * i);
    finish(s, JOB_FAILED, 40, 400);
    finish(s, JOB_CANCELLED, -1, 0); /* cancelled before it started: counted, no sample */
    CHECK_EQ_INT(core_stats_history(s, h), 0);
    const struct core_stats_point *p = &h->points[LAST];
    CHECK_EQ_INT(p->at_ms, T0_MS - 5000);
    CHECK_EQ_INT(p->succeeded, 3);
    CHECK_EQ_INT(p->failed, 1);
    CHECK_EQ_INT(p->cancelled, 1);
    CHECK(p->queue_wait_ms_p50 == 30 && p->queue_wait_ms_p95 == 40); /* nearest rank of 10, 20, 30, 40 */
    CHECK(p->run_time_ms_p50 == 300 && p->run_time_ms_p95 == 400);
    CHECK_EQ_INT(total(&h->points[LAST - 1]), 0);

    /* 15 s later the bucket is two points back, unchanged; the new one fills */
    g_now_ms = T0_MS + 15000;
    finish(s, JOB_SUCCEEDED, 1, 2);
    CHECK_EQ_INT(core_stats_history(s, h), 0);
    CHECK_EQ_INT(h->points[LAST].at_ms, T0_MS + 15000); /* exactly its start */
    CHECK_EQ_INT(h->points[LAST].succeeded, 1);
    CHECK_EQ_INT(total(&h->points[LAST - 1]), 0);
    CHECK_EQ_INT(h->points[LAST - 2].at_ms, T0_MS - 5000);
    CHECK_EQ_INT(h->points[LAST - 2].succeeded, 3);
    CHECK(h->points[LAST - 2].run_time_ms_p95 == 400);

    /* ten minutes on, the first bucket's ring slot comes round again: it is
     * reset, not added to, and the old buckets have left the window */
    g_now_ms = T0_MS + 600000;
    finish(s, JOB_FAILED, 5, 5);
    CHECK_EQ_INT(core_stats_history(s, h), 0);
    CHECK_EQ_INT(h->points[LAST].at_ms, T0_MS - 5000 + 600000);
    CHECK_EQ_INT(h->points[LAST].failed, 1);
    CHECK_EQ_INT(h->points[LAST].succeeded, 0);
    int64_t sum = 0;
    for (int k = 0; k < CORE_HISTORY_POINTS; k++) sum += total(&h->points[k]);
    CHECK_EQ_INT(sum, 2); /* the +15 s bucket (58 points back) and this one */
    CHECK_EQ_INT(h->points[LAST - 58].succeeded, 1);

    clock_set_wall(NULL);
    core_stats_fini(s);
    free(s);
    free(h);
}

static void test_history_samples_are_bounded_and_uniform(void)
{
    struct core_statsbuf *s = malloc(sizeof *s);
    struct core_stats_history *h = malloc(sizeof *h);
    if (!s || !h) abort();
    core_stats_init(s);
    clock_set_wall(fake_wall);
    g_now_ms = T0_MS;
    for (int i = 0; i < 5000; i++) finish(s, JOB_SUCCEEDED, i % 1000, 1000 - i % 1000);
    CHECK_EQ_INT(core_stats_history(s, h), 0);
    const struct core_stats_point *p = &h->points[LAST];
    CHECK_EQ_INT(p->succeeded, 5000);
    /* a uniform sample of 256 from 0..999: its median is far from either end */
    printf("# 5000 jobs in one bucket: wait p50 %.0f p95 %.0f, run p50 %.0f p95 %.0f\n", p->queue_wait_ms_p50,
           p->queue_wait_ms_p95, p->run_time_ms_p50, p->run_time_ms_p95);
    CHECK(p->queue_wait_ms_p50 > 350 && p->queue_wait_ms_p50 < 650);
    CHECK(p->queue_wait_ms_p95 > 850 && p->queue_wait_ms_p95 <= 999);
    CHECK(p->run_time_ms_p50 > 350 && p->run_time_ms_p50 < 650);
    CHECK(p->run_time_ms_p95 > p->run_time_ms_p50);
    clock_set_wall(NULL);
    core_stats_fini(s);
    free(s);
    free(h);
}

int main(void)
{
    log_init(LOG_LEVEL_OFF, LOG_FORMAT_TEXT);
    RUN(test_history_buckets_count_by_status_with_percentiles);
    RUN(test_history_samples_are_bounded_and_uniform);
    return harness_finish();
}
