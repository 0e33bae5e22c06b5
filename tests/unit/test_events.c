/* test_events.c - core/events.c: the ring, subscribers, filters, wakes.
 *
 * A bare struct core (core_int.h) with a real, empty store: events are
 * published by hand with core_events_publish(), as the store's writer would,
 * so every ordering is forced. Wakes only count (atomics); "exactly once" is
 * checked by counting.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../common/clock.h"
#include "../../common/log.h"
#include "../../core/core_int.h"
#include "../../storage/store.h"
#include "harness.h"
#include "tmpdir.h"

#define JOB_A "01M7Y9B187D9P0KKXS4XTW3PAA"
#define JOB_B "01M7Y9B187D9P0KKXS4XTW3PBB"
#define BATCH "01M7Y9B187D9P0KKXS4XTW3PCC"

struct fixture {
    struct tmp tmp;
    struct store *st;
    struct core c;
};

static void fx_open(struct fixture *f, const char *name, long ring)
{
    memset(f, 0, sizeof *f);
    tmp_make(&f->tmp, name);
    struct store_options so = {.path = f->tmp.db};
    if (store_open(&so, &f->st) != 0) abort();
    f->c.store = f->st;
    struct core_options opt = {.event_buffer = ring, .store = f->st};
    if (core_events_init(&f->c, &opt) != 0) abort();
}

static void fx_close(struct fixture *f)
{
    core_events_fini(&f->c);
    CHECK(f->c.events == NULL);
    store_close(f->st);
    tmp_remove(&f->tmp);
}

static void publish(struct fixture *f, uint64_t seq, const char *type, const char *job, const char *batch)
{
    char data[64];
    snprintf(data, sizeof data, "{\"n\":%llu}", (unsigned long long)seq);
    struct store_event ev = {.seq = seq, .type = type, .job_id = job, .batch_id = batch, .data = data};
    core_events_publish(&f->c, &ev);
}

static void wake_count(void *ctx)
{
    atomic_fetch_add((atomic_int *)ctx, 1);
}

/* Waits up to ms for *n to reach want. */
static bool wait_count(atomic_int *n, int want, int ms)
{
    int64_t end = clock_mono_ms() + ms;
    while (atomic_load(n) < want && clock_mono_ms() < end) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return atomic_load(n) >= want;
}

static void test_live_subscriber_reads_in_order_and_is_woken_once(void)
{
    struct fixture f;
    fx_open(&f, "events-live", 16);
    struct core_sub *s = NULL;
    CHECK_EQ_INT(core_events_subscribe(&f.c, core_events_latest(&f.c), NULL, NULL, &s), 0);
    struct core_event ev;
    atomic_int woken = 0;
    CHECK_EQ_INT(core_events_next(s, &ev, 0, wake_count, &woken), 0);
    publish(&f, 1, "job", JOB_A, "");
    publish(&f, 2, "job", JOB_B, "");
    CHECK_EQ_INT(atomic_load(&woken), 1); /* fired by the first publish, on this thread */
    CHECK_EQ_INT(core_events_next(s, &ev, 0, NULL, NULL), 1);
    CHECK_EQ_INT(ev.seq, 1);
    CHECK_EQ_STR(ev.type, "job");
    CHECK_EQ_STR(ev.data, "{\"n\":1}");
    free(ev.data);
    CHECK_EQ_INT(core_events_next(s, &ev, 0, NULL, NULL), 1);
    CHECK_EQ_INT(ev.seq, 2);
    free(ev.data);
    CHECK_EQ_INT(core_events_next(s, &ev, 0, NULL, NULL), 0);
    CHECK_EQ_INT(atomic_load(&woken), 1);
    CHECK(!core_events_unsubscribe(s));
    fx_close(&f);
}

static void test_filters_pass_their_events_and_skip_others_without_waking(void)
{
    struct fixture f;
    fx_open(&f, "events-filter", 64);
    struct core_sub *sj = NULL, *sb = NULL;
    CHECK_EQ_INT(core_events_subscribe(&f.c, 0, JOB_A, NULL, &sj), 0);
    CHECK_EQ_INT(core_events_subscribe(&f.c, 0, NULL, BATCH, &sb), 0);
    atomic_int wj = 0, wb = 0;
    struct core_event ev;
    CHECK_EQ_INT(core_events_next(sj, &ev, 0, wake_count, &wj), 0);
    CHECK_EQ_INT(core_events_next(sb, &ev, 0, wake_count, &wb), 0);
    publish(&f, 1, "job", JOB_B, "");
    CHECK_EQ_INT(atomic_load(&wj) + atomic_load(&wb), 0); /* not theirs: nobody woken */
    publish(&f, 2, "job", JOB_B, BATCH);
    CHECK_EQ_INT(atomic_load(&wj), 0);
    CHECK_EQ_INT(atomic_load(&wb), 1);
    publish(&f, 3, "job", JOB_A, "");
    CHECK_EQ_INT(atomic_load(&wj), 1);
    publish(&f, 4, "batch", "", BATCH);
    CHECK_EQ_INT(core_events_next(sj, &ev, 0, NULL, NULL), 1);
    CHECK_EQ_INT(ev.seq, 3);
    free(ev.data);
    CHECK_EQ_INT(core_events_next(sj, &ev, 0, NULL, NULL), 0);
    CHECK_EQ_INT(core_events_next(sb, &ev, 0, NULL, NULL), 1);
    CHECK_EQ_INT(ev.seq, 2);
    free(ev.data);
    CHECK_EQ_INT(core_events_next(sb, &ev, 0, NULL, NULL), 1);
    CHECK_EQ_INT(ev.seq, 4);
    CHECK_EQ_STR(ev.type, "batch");
    free(ev.data);
    core_events_unsubscribe(sj);
    core_events_unsubscribe(sb);
    fx_close(&f);
}

static void test_an_idle_filtered_subscriber_is_never_overrun(void)
{
    struct fixture f;
    fx_open(&f, "events-idle", 4);
    struct core_sub *s = NULL;
    CHECK_EQ_INT(core_events_subscribe(&f.c, 0, JOB_A, NULL, &s), 0);
    atomic_int w = 0;
    struct core_event ev;
    CHECK_EQ_INT(core_events_next(s, &ev, 0, wake_count, &w), 0);
    for (uint64_t q = 1; q <= 20; q++) publish(&f, q, "job", JOB_B, "");
    CHECK_EQ_INT(atomic_load(&w), 0);
    publish(&f, 21, "job", JOB_A, "");
    CHECK_EQ_INT(atomic_load(&w), 1);
    CHECK_EQ_INT(core_events_next(s, &ev, 0, NULL, NULL), 1);
    CHECK_EQ_INT(ev.seq, 21);
    free(ev.data);
    core_events_unsubscribe(s);
    fx_close(&f);
}

static void test_a_live_subscriber_overrun_by_the_ring_gets_estale(void)
{
    struct fixture f;
    fx_open(&f, "events-stale", 4);
    struct core_sub *s = NULL;
    CHECK_EQ_INT(core_events_subscribe(&f.c, 0, NULL, NULL, &s), 0);
    struct core_event ev;
    publish(&f, 1, "job", JOB_A, "");
    CHECK_EQ_INT(core_events_next(s, &ev, 0, NULL, NULL), 1); /* live now */
    free(ev.data);
    for (uint64_t q = 2; q <= 10; q++) publish(&f, q, "job", JOB_A, ""); /* the ring keeps 7..10 */
    CHECK_EQ_INT(core_events_next(s, &ev, 0, NULL, NULL), -ESTALE);
    CHECK_EQ_INT(ev.seq, 10);
    CHECK(ev.data == NULL);
    /* It stands at the latest now. */
    CHECK_EQ_INT(core_events_next(s, &ev, 0, NULL, NULL), 0);
    publish(&f, 11, "job", JOB_A, "");
    CHECK_EQ_INT(core_events_next(s, &ev, 0, NULL, NULL), 1);
    CHECK_EQ_INT(ev.seq, 11);
    free(ev.data);
    core_events_unsubscribe(s);
    fx_close(&f);
}

static void test_deadline_wakes_once_and_unsubscribe_cancels(void)
{
    struct fixture f;
    fx_open(&f, "events-deadline", 8);
    struct core_sub *s = NULL, *t = NULL;
    CHECK_EQ_INT(core_events_subscribe(&f.c, 0, NULL, NULL, &s), 0);
    CHECK_EQ_INT(core_events_subscribe(&f.c, 0, NULL, NULL, &t), 0);
    atomic_int ws = 0, wt = 0;
    struct core_event ev;
    CHECK_EQ_INT(core_events_next(s, &ev, clock_mono_ms() + 20, wake_count, &ws), 0);
    CHECK_EQ_INT(core_events_next(t, &ev, clock_mono_ms() + 60000, wake_count, &wt), 0);
    CHECK(wait_count(&ws, 1, 5000));
    publish(&f, 1, "job", JOB_A, ""); /* s is no longer armed: not woken again */
    CHECK_EQ_INT(atomic_load(&ws), 1);
    CHECK_EQ_INT(atomic_load(&wt), 1); /* t was armed: the event woke it */
    CHECK_EQ_INT(core_events_next(t, &ev, 0, NULL, NULL), 1);
    free(ev.data);
    CHECK_EQ_INT(core_events_next(t, &ev, clock_mono_ms() + 60000, wake_count, &wt), 0);
    CHECK(core_events_unsubscribe(t)); /* cancelled: it never runs */
    CHECK_EQ_INT(atomic_load(&wt), 1);
    core_events_unsubscribe(s);
    fx_close(&f);
}

static void test_shutdown_wakes_everyone_once_then_refuses(void)
{
    struct fixture f;
    fx_open(&f, "events-shutdown", 8);
    enum { N = 150 }; /* more than one firing batch */
    struct core_sub *s[N];
    atomic_int w[N];
    struct core_event ev;
    for (int i = 0; i < N; i++) {
        atomic_init(&w[i], 0);
        CHECK_EQ_INT(core_events_subscribe(&f.c, 0, NULL, NULL, &s[i]), 0);
        CHECK_EQ_INT(core_events_next(s[i], &ev, clock_mono_ms() + 60000, wake_count, &w[i]), 0);
    }
    core_events_shutdown(&f.c);
    core_events_shutdown(&f.c); /* idempotent */
    int total = 0;
    for (int i = 0; i < N; i++) {
        total += atomic_load(&w[i]) == 1;
        CHECK_EQ_INT(core_events_next(s[i], &ev, 0, wake_count, &w[i]), -ESHUTDOWN);
        CHECK(!core_events_unsubscribe(s[i]));
    }
    CHECK_EQ_INT(total, N);
    struct core_sub *late = NULL;
    CHECK_EQ_INT(core_events_subscribe(&f.c, 0, NULL, NULL, &late), -ESHUTDOWN);
    CHECK(late == NULL);
    fx_close(&f);
}

static void test_fini_accepts_a_core_whose_events_never_started(void)
{
    struct core c;
    memset(&c, 0, sizeof c);
    core_events_shutdown(&c);
    core_events_fini(&c);
    struct core_sub *s = NULL;
    CHECK_EQ_INT(core_events_subscribe(&c, 0, NULL, NULL, &s), -ESHUTDOWN);
    CHECK(!core_events_unsubscribe(NULL));
}

int main(void)
{
    log_init(LOG_LEVEL_OFF, LOG_FORMAT_TEXT);
    RUN(test_live_subscriber_reads_in_order_and_is_woken_once);
    RUN(test_filters_pass_their_events_and_skip_others_without_waking);
    RUN(test_an_idle_filtered_subscriber_is_never_overrun);
    RUN(test_a_live_subscriber_overrun_by_the_ring_gets_estale);
    RUN(test_deadline_wakes_once_and_unsubscribe_cancels);
    RUN(test_shutdown_wakes_everyone_once_then_refuses);
    RUN(test_fini_accepts_a_core_whose_events_never_started);
    return harness_finish();
}
