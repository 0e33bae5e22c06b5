/* retention.c - the background thread that deletes finished jobs once they
 * are older than the retention (SPEC §6).
 *
 * DESIGN. One thread of its own, not the core's timer thread: a pass waits
 * on the store's writer for each batch (store_prune_batch blocks until its
 * op is committed), and under load that wait is as long as the writer's
 * queue; on the timer thread it would delay scheduled jobs and the deadlines
 * of long polls by as much. The thread sleeps `interval_ms` on its own
 * condition variable (CLOCK_MONOTONIC), then runs a pass: the cutoff of each
 * terminal status is now minus its retention (succeeded: --retention;
 * failed and cancelled: --retention-failed), and batches of at most 500
 * index entries run one after another until the store reports the pass done.
 * Each batch is one op in the writer's ordinary queue, so the writer
 * interleaves other writes between batches and is never held for a whole
 * pass. The stop flag is checked before every batch, so draining waits for
 * one batch at most.
 *
 * Counts: the core keeps counts by status in memory (core->stats); each batch
 * reports how many jobs of each status it deleted, and those are taken off
 * the counts after the commit. A job deleted by a batch was terminal, and its
 * terminal update's count change ran (in its commit callback) before the
 * batch could see the row, so counts never go below the truth.
 *
 * Locks: `retention.lock` guards only `stop`, and is never held while
 * calling the store; the counts are changed under `stats.lock` alone.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "core_int.h"

#define DEFAULT_INTERVAL_MS 60000
#define PRUNE_BATCH 500

/* Takes the deleted jobs off the counts by status. */
static void counts_forget(struct core *c, const int64_t deleted[JOB_STATUS_COUNT])
{
    struct core_statsbuf *s = &c->stats;
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < JOB_STATUS_COUNT; i++)
        s->counts[i] = s->counts[i] > deleted[i] ? s->counts[i] - deleted[i] : 0;
    pthread_mutex_unlock(&s->lock);
}

static bool stopping(struct core_retention *r)
{
    pthread_mutex_lock(&r->lock);
    bool stop = r->stop;
    pthread_mutex_unlock(&r->lock);
    return stop;
}

/* Sleeps ms on the monotonic clock, or until stopped. Returns true when stopped. */
static bool sleep_or_stop(struct core_retention *r, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ns = (int64_t)ts.tv_nsec + (ms % 1000) * 1000000;
    ts.tv_sec += (time_t)(ms / 1000 + ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    pthread_mutex_lock(&r->lock);
    int e = 0;
    while (!r->stop && e != ETIMEDOUT) e = pthread_cond_timedwait(&r->wake, &r->lock, &ts);
    bool stop = r->stop;
    pthread_mutex_unlock(&r->lock);
    return stop;
}

/* One pass: every batch until the store says the pass is done, or a stop, or
 * an error (logged; the next pass tries again). */
static void retention_pass(struct core *c)
{
    struct core_retention *r = &c->retention;
    struct store_prune p;
    int64_t total[JOB_STATUS_COUNT] = {0}, sum = 0;
    int64_t now = clock_wall_ms(), t0 = clock_mono_ms();
    long batches = 0;
    memset(&p, 0, sizeof p);
    p.limit = PRUNE_BATCH;
    for (int s = 0; s < JOB_STATUS_COUNT; s++)
        if (r->keep_ms[s] > 0 && now > r->keep_ms[s]) p.cutoff_ms[s] = now - r->keep_ms[s];
    do {
        if (stopping(r)) break;
        int rc = store_prune_batch(c->store, &p);
        if (rc < 0) {
            LOG_WARN("retention: pruning failed (%s); trying again in %.0f s", strerror(-rc),
                     (double)r->interval_ms / 1000.0);
            break;
        }
        batches++;
        counts_forget(c, p.deleted);
        for (int s = 0; s < JOB_STATUS_COUNT; s++) {
            total[s] += p.deleted[s];
            sum += p.deleted[s];
        }
    } while (!p.done);
    if (sum > 0)
        LOG_INFO("retention: deleted %lld finished job(s) (%lld succeeded, %lld failed, %lld cancelled) in %ld "
                 "batch(es), %lld ms",
                 (long long)sum, (long long)total[JOB_SUCCEEDED], (long long)total[JOB_FAILED],
                 (long long)total[JOB_CANCELLED], batches, (long long)(clock_mono_ms() - t0));
    else
        LOG_DEBUG("retention: nothing to delete (%ld batch(es))", batches);
}

static void *retention_main(void *arg)
{
    struct core *c = arg;
    pthread_setname_np(pthread_self(), "jobd-retention");
    while (!sleep_or_stop(&c->retention, c->retention.interval_ms)) retention_pass(c);
    return NULL;
}

int core_retention_start(struct core *c, const struct core_options *opt)
{
    struct core_retention *r = &c->retention;
    pthread_condattr_t attr;
    int e;
    if (opt->retention_ms <= 0 && opt->retention_failed_ms <= 0) {
        LOG_INFO("retention: off, finished jobs are kept forever");
        return 0;
    }
    r->keep_ms[JOB_SUCCEEDED] = opt->retention_ms > 0 ? opt->retention_ms : 0;
    r->keep_ms[JOB_FAILED] = r->keep_ms[JOB_CANCELLED] = opt->retention_failed_ms > 0 ? opt->retention_failed_ms : 0;
    r->interval_ms = opt->prune_interval_ms > 0 ? opt->prune_interval_ms : DEFAULT_INTERVAL_MS;
    r->stop = false;
    pthread_mutex_init(&r->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&r->wake, &attr);
    pthread_condattr_destroy(&attr);
    if ((e = pthread_create(&r->thread, NULL, retention_main, c)) != 0) {
        LOG_ERROR("retention: cannot start its thread: %s", strerror(e));
        pthread_cond_destroy(&r->wake);
        pthread_mutex_destroy(&r->lock);
        return -e;
    }
    r->started = true;
    LOG_INFO("retention: succeeded jobs kept %.0f s, failed and cancelled %.0f s (0 = forever); pass every %.0f s",
             (double)r->keep_ms[JOB_SUCCEEDED] / 1000.0, (double)r->keep_ms[JOB_FAILED] / 1000.0,
             (double)r->interval_ms / 1000.0);
    return 0;
}

void core_retention_stop(struct core *c)
{
    struct core_retention *r = &c->retention;
    if (!r->started) return;
    pthread_mutex_lock(&r->lock);
    r->stop = true;
    pthread_cond_signal(&r->wake);
    pthread_mutex_unlock(&r->lock);
    pthread_join(r->thread, NULL);
    r->started = false;
    pthread_cond_destroy(&r->wake);
    pthread_mutex_destroy(&r->lock);
}
