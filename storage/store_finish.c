/* store_finish.c - the finisher thread: runs the callbacks of committed
 * batches in commit order while the writer commits the next one, then counts
 * them done (store stats, q_done for store_sync). See store_writer.c for why
 * it exists, and store_int.h (f_lock) for what it owns.
 */
#include "store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "store_int.h"

const uint64_t store_commit_bounds_ns[STORE_COMMIT_BUCKETS] = {
    100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000, /* 0.1 ms .. 10 ms */
    25000000, 50000000, 100000000, 250000000, 500000000, 1000000000, 2500000000u,
};

/* Adds one batch of n ops that took ns to the stats histograms. q_lock held. */
static void stats_observe_batch(struct store_stats *s, uint64_t n, uint64_t ns)
{
    /* Smallest i with n <= 1 << i: the bit length of n - 1. */
    int b = n <= 1 ? 0 : 64 - __builtin_clzll(n - 1);
    s->batch_hist[b < STORE_BATCH_BUCKETS ? b : STORE_BATCH_BUCKETS]++;
    int c = 0;
    while (c < STORE_COMMIT_BUCKETS && ns > store_commit_bounds_ns[c]) c++;
    s->commit_hist[c]++;
}

/* Hands each op's outcome to its owner, in queue order, and frees the op.
 * Counts the ops that succeeded into *ok. */
static void batch_finish(struct store_op *batch, uint64_t *ok, store_event_cb ecb, void *ectx)
{
    struct store_op *next;
    for (struct store_op *op = batch; op; op = next) {
        next = op->next;
        if (op->rc == 0) (*ok)++;
        for (struct store_evrec *e = op->events; ecb && e; e = e->next) {
            if (!e->seq) continue; /* not written (the op failed) */
            struct store_event ev = {.seq = e->seq, .type = e->type, .job_id = e->job_id,
                                     .batch_id = e->batch_id, .data = e->data, .steal = &e->data};
            ecb(ectx, &ev);
        }
        store__evrecs_free(op->events);
        switch (op->kind) {
        case OP_INSERT:
        case OP_UPDATE:
            if (op->cb)
                op->cb(op->ctx, op->rc, op->job); /* the callee owns the job now */
            else
                job_free(op->job);
            break;
        case OP_DELETE:
            if (op->cb) op->cb(op->ctx, op->rc, NULL);
            break;
        case OP_PROGRESS:
            if (op->rc) LOG_DEBUG("store: progress of %s not saved: %s", op->id, strerror(-op->rc));
            free(op->message);
            break;
        case OP_RECOVER:
            op->recover->rc = op->rc;
            if (op->rc) op->recover->requeued = op->recover->failed = 0;
            break;
        case OP_PRUNE:
            op->prune->rc = op->rc; /* nonzero: rolled back, the caller drops op->prune->work */
            break;
        case OP_BATCH:
            if (op->bcb) {
                op->bcb(op->ctx, op->rc, op->jobs, op->n_jobs); /* the callee owns the jobs now */
            } else {
                for (size_t i = 0; i < op->n_jobs; i++) job_free(op->jobs[i]);
                free(op->jobs);
            }
            store_batch_clear(op->batch);
            free(op->batch);
            break;
        case OP_DELIVERY:
            if (op->delivery->done) op->delivery->done(op->delivery->ctx, op->rc);
            free(op->delivery->last_error);
            free(op->delivery);
            break;
        }
        free(op);
    }
}

/* Runs a batch's callbacks, then counts it done (q_lock): store_sync's
 * waiters see it only once every callback has returned. The batch's head op
 * carries what the writer learnt of it (op->done). */
static void batch_done(struct store *st, struct store_op *batch)
{
    uint64_t ok = 0;
    struct store_batch_done d = batch->done;
    batch_finish(batch, &ok, d.ecb, d.ectx); /* frees the ops */
    pthread_mutex_lock(&st->q_lock);
    if (d.rc == 0) st->stats.commits++;
    st->stats.ops += ok;
    st->stats.failed_ops += d.n - ok;
    st->stats.last_batch = d.n;
    if (d.n > st->stats.max_batch) st->stats.max_batch = d.n;
    st->stats.commit_ns_sum += (uint64_t)d.dt_ns;
    stats_observe_batch(&st->stats, d.n, (uint64_t)d.dt_ns);
    st->q_done += d.n;
    pthread_cond_broadcast(&st->q_idle);
    pthread_mutex_unlock(&st->q_lock);
}

static void *finisher_main(void *arg)
{
    struct store *st = arg;
    pthread_setname_np(pthread_self(), "jobd-store-cb");
    pthread_mutex_lock(&st->f_lock);
    for (;;) {
        while (!st->f_head && !st->f_stop) pthread_cond_wait(&st->f_wake, &st->f_lock);
        struct store_op *batch = st->f_head;
        if (!batch) break; /* stopping, and nothing left */
        st->f_head = st->f_tail = NULL; /* take them all: fewer lock round trips under load */
        st->f_busy = true;
        pthread_mutex_unlock(&st->f_lock);
        while (batch) {
            struct store_op *next = batch->done.next_batch;
            batch_done(st, batch);
            batch = next;
        }
        pthread_mutex_lock(&st->f_lock);
        st->f_busy = false;
    }
    pthread_mutex_unlock(&st->f_lock);
    return NULL;
}

/* Hands a committed (or rolled back) batch to the finisher (writer thread).
 * When the finisher has nothing left to do and no op waits for the writer,
 * the writer runs the callbacks itself: nothing would overlap them, and the
 * hand-off's wake-up (~20 us across cores) is off the path of every reply of
 * a quiet server. Commit order is kept: only the writer hands batches off,
 * and the finisher is idle and has none. */
void store__finisher_hand_off(struct store *st, struct store_op *batch)
{
    batch->done.next_batch = NULL;
    pthread_mutex_lock(&st->q_lock);
    bool queue_empty = !st->q_head;
    pthread_mutex_unlock(&st->q_lock);
    pthread_mutex_lock(&st->f_lock);
    if (queue_empty && !st->f_head && !st->f_busy && !st->f_stop) {
        pthread_mutex_unlock(&st->f_lock);
        batch_done(st, batch);
        return;
    }
    if (st->f_tail)
        st->f_tail->done.next_batch = batch;
    else
        st->f_head = batch;
    st->f_tail = batch;
    pthread_cond_signal(&st->f_wake);
    pthread_mutex_unlock(&st->f_lock);
}


int store__finisher_start(struct store *st)
{
    pthread_mutex_init(&st->f_lock, NULL);
    pthread_cond_init(&st->f_wake, NULL);
    int e = pthread_create(&st->finisher, NULL, finisher_main, st);
    if (e) {
        LOG_ERROR("store: cannot start the finisher thread: %s", strerror(e));
        return -ENOMEM;
    }
    st->finisher_started = true;
    return 0;
}

void store__finisher_stop(struct store *st)
{
    if (!st->finisher_started) return;
    pthread_mutex_lock(&st->f_lock);
    st->f_stop = true;
    pthread_cond_signal(&st->f_wake);
    pthread_mutex_unlock(&st->f_lock);
    pthread_join(st->finisher, NULL);
    st->finisher_started = false;
    pthread_cond_destroy(&st->f_wake);
    pthread_mutex_destroy(&st->f_lock);
}
