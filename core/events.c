/* events.c - the live event feed behind GET /v1/events.
 *
 * DESIGN. The store writes one event row per state change in the same
 * transaction as the change, numbered by a gapless, increasing seq, and
 * after the commit calls core_events_publish() for each, in seq order, on
 * its writer thread. Here:
 *
 * - The ring holds copies of the last `cap` published events, seqs
 *   [first, next). Slot of seq s: s % cap. Publishing evicts the oldest.
 *
 * - A subscriber (struct core_sub) stands at next_seq, the first seq it has
 *   not seen. Its owner pulls with core_events_next():
 *     next_seq >= first: read from the ring (a copy of the data is made
 *       under the lock), and the subscriber is now "live";
 *     next_seq < first and not live: it is catching up (a resume from an
 *       old Last-Event-ID): it reads pages of the durable log with
 *       store_events_read(), outside the lock, on the caller's thread,
 *       until it reaches the ring. If the log no longer holds next_seq (it
 *       keeps --event-log events), the gap is reported once (-ERANGE);
 *     next_seq < first and live: the ring overran it (a slow client):
 *       -ESTALE, and the owner tells its client to resync.
 *
 * - An idle subscriber registers a wake ("armed"): it is on the armed list,
 *   and on the deadline heap when it gave a deadline (the SSE heartbeat).
 *   publish() fires the armed subscribers whose filter the new event passes
 *   and moves the others' next_seq past it (they were caught up, and the
 *   event is not for them: so a filtered, idle subscriber is never overrun
 *   by events it does not want). A small timer thread fires expired
 *   deadlines; shutdown fires everyone. Wakes are taken off the list under
 *   the lock, with their callback copied, in batches of FIRE_BATCH, and
 *   called after unlocking: exactly once each. `firing` counts the calls
 *   in progress so that unsubscribe never frees a subscriber under one.
 *
 * Nothing here blocks the writer: publish copies one event and walks the
 * armed list. The cost of a slow client is bounded by the ring: it never
 * holds more than its own position.
 */
#include "core_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/clock.h"
#include "../common/log.h"

#define RING_DEFAULT 8192
#define LOG_PAGE 256   /* events read from the durable log per query */
#define FIRE_BATCH 64  /* wakes taken per lock hold */

struct ev_slot {
    uint64_t seq;
    char type[8];
    char job_id[ID_LEN + 1];   /* "" for batch events */
    char batch_id[ID_LEN + 1]; /* "" when none */
    char *data;                /* owned */
};

struct core_events {
    struct core *c;

    /* `lock` guards everything below, and the fields of every core_sub
     * marked "lock". Never held while calling out (wakes, the store). */
    pthread_mutex_t lock;
    pthread_cond_t timer_cv; /* wakes the timer thread: an earlier deadline, or stop (CLOCK_MONOTONIC) */
    struct ev_slot *ring;
    uint64_t cap;
    uint64_t first, next;   /* the ring holds seqs [first, next) */
    struct core_sub *armed; /* subscribers with a registered wake (doubly linked) */
    struct theap deadlines; /* of armed subscribers' .t with a deadline; key = mono ms */
    long n_subs;
    bool shutdown; /* drained: every call gets -ESHUTDOWN, nothing arms */
    bool stop_timer;

    /* Owned by whoever opens and drains the core. */
    pthread_t timer;
    bool timer_started;
};

struct core_sub {
    struct core_events *e;
    char job_id[ID_LEN + 1];   /* immutable; "" = any */
    char batch_id[ID_LEN + 1]; /* immutable; "" = any */

    /* lock */
    uint64_t next_seq; /* the first seq not yet seen */
    bool live;         /* has read from the ring */
    bool armed;
    core_wake_cb wake;
    void *ctx;
    struct core_sub *aprev, *anext; /* on e->armed while armed */
    struct tnode t;                 /* on e->deadlines while armed with a deadline */
    int firing;                     /* wake calls in progress */
    bool dead;                      /* unsubscribed while firing: the last firer frees */

    /* The owner's thread only: events read ahead from the durable log. */
    struct core_event *cq;
    int cq_n, cq_i;
};

struct fire {
    struct core_sub *s;
    core_wake_cb cb;
    void *ctx;
};

/* ---- arming (lock held) --------------------------------------------------------- */

static void unarm_locked(struct core_events *e, struct core_sub *s)
{
    if (!s->armed) return;
    if (s->aprev) s->aprev->anext = s->anext;
    else e->armed = s->anext;
    if (s->anext) s->anext->aprev = s->aprev;
    s->aprev = s->anext = NULL;
    if (s->t.idx >= 0) theap_del(&e->deadlines, &s->t);
    s->armed = false;
}

/* Registers (or updates) the subscriber's wake. Returns 0 or -ENOMEM. */
static int arm_locked(struct core_events *e, struct core_sub *s, int64_t deadline_ms, core_wake_cb wake, void *ctx)
{
    if (s->t.idx >= 0) theap_del(&e->deadlines, &s->t);
    if (deadline_ms > 0) {
        s->t.key = deadline_ms;
        if (theap_push(&e->deadlines, &s->t) < 0) {
            unarm_locked(e, s);
            return -ENOMEM;
        }
        if (theap_peek(&e->deadlines) == &s->t) pthread_cond_signal(&e->timer_cv);
    }
    if (!s->armed) {
        s->anext = e->armed;
        s->aprev = NULL;
        if (e->armed) e->armed->aprev = s;
        e->armed = s;
        s->armed = true;
    }
    s->wake = wake;
    s->ctx = ctx;
    return 0;
}

/* Takes s's wake for firing: the caller calls it after unlocking, then fire_done(). */
static void take_locked(struct core_events *e, struct core_sub *s, struct fire *f)
{
    unarm_locked(e, s);
    s->firing++;
    f->s = s;
    f->cb = s->wake;
    f->ctx = s->ctx;
}

static void sub_free(struct core_sub *s)
{
    for (int i = s->cq_i; i < s->cq_n; i++) free(s->cq[i].data);
    free(s->cq);
    free(s);
}

/* Calls n taken wakes (lock not held), then settles them. */
static void fire_run(struct core_events *e, struct fire *f, int n)
{
    if (!n) return;
    for (int i = 0; i < n; i++) f[i].cb(f[i].ctx);
    struct core_sub *dead[FIRE_BATCH];
    int nd = 0;
    pthread_mutex_lock(&e->lock);
    for (int i = 0; i < n; i++) {
        struct core_sub *s = f[i].s;
        if (--s->firing == 0 && s->dead) dead[nd++] = s;
    }
    pthread_mutex_unlock(&e->lock);
    for (int i = 0; i < nd; i++) sub_free(dead[i]);
}

/* ---- the timer thread: heartbeat deadlines ---------------------------------------- */

static void *timer_main(void *arg)
{
    struct core_events *e = arg;
    pthread_setname_np(pthread_self(), "jobd-events");
    pthread_mutex_lock(&e->lock);
    while (!e->stop_timer) {
        struct tnode *t = theap_peek(&e->deadlines);
        int64_t now = clock_mono_ms();
        if (!t) {
            pthread_cond_wait(&e->timer_cv, &e->lock);
            continue;
        }
        if (t->key > now) {
            struct timespec ts = {.tv_sec = (time_t)(t->key / 1000), .tv_nsec = (long)(t->key % 1000) * 1000000L};
            pthread_cond_timedwait(&e->timer_cv, &e->lock, &ts); /* ETIMEDOUT or a signal: look again */
            continue;
        }
        struct fire f[FIRE_BATCH];
        int n = 0;
        while (n < FIRE_BATCH && (t = theap_peek(&e->deadlines)) && t->key <= now)
            take_locked(e, CONTAINER_OF(t, struct core_sub, t), &f[n++]);
        pthread_mutex_unlock(&e->lock);
        fire_run(e, f, n);
        pthread_mutex_lock(&e->lock);
    }
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

/* ---- life (core_int.h) ------------------------------------------------------------ */

int core_events_init(struct core *c, const struct core_options *opt)
{
    struct core_events *e = calloc(1, sizeof *e);
    if (!e) return -ENOMEM;
    e->c = c;
    e->cap = opt->event_buffer > 0 ? (uint64_t)opt->event_buffer : RING_DEFAULT;
    e->ring = calloc(e->cap, sizeof *e->ring);
    if (!e->ring) {
        free(e);
        return -ENOMEM;
    }
    uint64_t oldest, latest;
    store_events_range(c->store, &oldest, &latest);
    e->first = e->next = latest + 1;
    pthread_mutex_init(&e->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&e->timer_cv, &attr);
    pthread_condattr_destroy(&attr);
    c->events = e;
    int rc = pthread_create(&e->timer, NULL, timer_main, e);
    if (rc != 0) return -rc; /* core_events_fini frees e */
    e->timer_started = true;
    return 0;
}

static bool passes(const struct core_sub *s, const char *type, const char *job_id, const char *batch_id)
{
    if (s->job_id[0]) return strcmp(type, "job") == 0 && strcmp(job_id, s->job_id) == 0;
    if (s->batch_id[0]) return strcmp(batch_id, s->batch_id) == 0;
    return true;
}

/* Copies s (NULL: "") into a buffer of cap bytes, truncating: snprintf's
 * result without its cost, which showed in the writer's profile. */
static void copy_bounded(char *dst, size_t cap, const char *s)
{
    size_t n = s ? strnlen(s, cap - 1) : 0;
    memcpy(dst, s ? s : "", n);
    dst[n] = '\0';
}

void core_events_publish(struct core *c, const struct store_event *ev)
{
    struct core_events *e = c->events;
    if (!e) return;
    /* Taken from the store when it offers (the text of a committed event),
     * else copied - before locking: strdup need not run under the lock. */
    char *data;
    if (ev->steal && *ev->steal) {
        data = *ev->steal;
        *ev->steal = NULL;
    } else {
        data = strdup(ev->data ? ev->data : "");
    }
    pthread_mutex_lock(&e->lock);
    if (ev->seq < e->next) {
        /* Already published (cannot happen: the store publishes in order once). */
        pthread_mutex_unlock(&e->lock);
        free(data);
        return;
    }
    if (ev->seq > e->next || !data) {
        /* A gap (cannot happen: seqs are gapless), or no memory for the
         * copy: start the ring afresh after this event. Subscribers that
         * still need it read it from the log; live ones resync. */
        for (uint64_t q = e->first; q < e->next; q++) {
            free(e->ring[q % e->cap].data);
            e->ring[q % e->cap].data = NULL;
        }
        if (!data) LOG_WARN("events: out of memory copying event %llu; live subscribers resync",
                            (unsigned long long)ev->seq);
        e->first = e->next = ev->seq + (data ? 0 : 1);
    }
    struct ev_slot *slot = NULL;
    if (data) {
        if (e->next - e->first == e->cap) {
            struct ev_slot *old = &e->ring[e->first % e->cap];
            free(old->data);
            old->data = NULL;
            e->first++;
        }
        slot = &e->ring[e->next % e->cap];
        slot->seq = ev->seq;
        copy_bounded(slot->type, sizeof slot->type, ev->type);
        copy_bounded(slot->job_id, sizeof slot->job_id, ev->job_id);
        copy_bounded(slot->batch_id, sizeof slot->batch_id, ev->batch_id);
        slot->data = data;
        e->next++;
    }
    /* Wake the armed subscribers this event is for; move the others past it.
     * Each pass either takes a subscriber off the list or moves its
     * next_seq past ev->seq, so a later pass skips it. */
    for (;;) {
        struct fire f[FIRE_BATCH];
        int n = 0;
        struct core_sub *s = e->armed, *after;
        for (; s && n < FIRE_BATCH; s = after) {
            after = s->anext;
            if (ev->seq < s->next_seq) continue;
            if (!slot || passes(s, ev->type, ev->job_id ? ev->job_id : "", ev->batch_id ? ev->batch_id : ""))
                take_locked(e, s, &f[n++]);
            else
                s->next_seq = ev->seq + 1;
        }
        pthread_mutex_unlock(&e->lock);
        fire_run(e, f, n);
        if (n < FIRE_BATCH) break;
        pthread_mutex_lock(&e->lock);
    }
}

void core_events_shutdown(struct core *c)
{
    struct core_events *e = c->events;
    if (!e) return;
    pthread_mutex_lock(&e->lock);
    e->shutdown = true;
    e->stop_timer = true;
    pthread_cond_signal(&e->timer_cv);
    for (;;) {
        struct fire f[FIRE_BATCH];
        int n = 0;
        while (n < FIRE_BATCH && e->armed) take_locked(e, e->armed, &f[n++]);
        pthread_mutex_unlock(&e->lock);
        fire_run(e, f, n);
        pthread_mutex_lock(&e->lock);
        if (!e->armed) break;
    }
    pthread_mutex_unlock(&e->lock);
    if (e->timer_started) pthread_join(e->timer, NULL);
    e->timer_started = false;
}

void core_events_fini(struct core *c)
{
    struct core_events *e = c->events;
    if (!e) return;
    core_events_shutdown(c);
    if (e->n_subs) LOG_WARN("events: %ld subscriber(s) still open at close", e->n_subs);
    for (uint64_t q = e->first; q < e->next; q++) free(e->ring[q % e->cap].data);
    free(e->ring);
    theap_fini(&e->deadlines);
    pthread_cond_destroy(&e->timer_cv);
    pthread_mutex_destroy(&e->lock);
    free(e);
    c->events = NULL;
}

/* ---- subscribers (core.h) ----------------------------------------------------------- */

int core_events_subscribe(struct core *c, uint64_t after_seq, const char *job_id, const char *batch_id,
                          struct core_sub **out)
{
    struct core_events *e = c->events;
    *out = NULL;
    if (!e) return -ESHUTDOWN;
    struct core_sub *s = calloc(1, sizeof *s);
    if (!s) return -ENOMEM;
    s->e = e;
    snprintf(s->job_id, sizeof s->job_id, "%s", job_id ? job_id : "");
    snprintf(s->batch_id, sizeof s->batch_id, "%s", batch_id ? batch_id : "");
    s->next_seq = after_seq + 1;
    s->t.idx = -1;
    int rc = 0;
    pthread_mutex_lock(&e->lock);
    if (e->shutdown) rc = -ESHUTDOWN;
    else e->n_subs++;
    pthread_mutex_unlock(&e->lock);
    if (rc) {
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

uint64_t core_events_latest(struct core *c)
{
    uint64_t oldest, latest;
    store_events_range(c->store, &oldest, &latest);
    return latest;
}

bool core_events_unsubscribe(struct core_sub *s)
{
    if (!s) return false;
    struct core_events *e = s->e;
    pthread_mutex_lock(&e->lock);
    bool cancelled = s->armed;
    unarm_locked(e, s);
    bool free_now = s->firing == 0;
    s->dead = true;
    e->n_subs--;
    pthread_mutex_unlock(&e->lock);
    if (free_now) sub_free(s);
    return cancelled;
}

/* A page of the durable log, as read by store_events_read(). */
struct page {
    struct core_sub *s;
    uint64_t first_seq, last_seq; /* of the rows read (0: none) */
    int rc;
};

static void page_row(void *ctx, const struct store_event *ev)
{
    struct page *p = ctx;
    struct core_sub *s = p->s;
    if (!p->first_seq) p->first_seq = ev->seq;
    p->last_seq = ev->seq;
    if (p->rc || !passes(s, ev->type, ev->job_id, ev->batch_id)) return;
    struct core_event *ce = &s->cq[s->cq_n];
    if (!(ce->data = strdup(ev->data))) {
        p->rc = -ENOMEM;
        return;
    }
    ce->seq = ev->seq;
    snprintf(ce->type, sizeof ce->type, "%s", ev->type);
    s->cq_n++;
}

/* Reads the next page of the log after `after` into s->cq. Returns 0,
 * -ERANGE (with *lost: the log starts after after + 1) or a negative errno. */
static int read_page(struct core_sub *s, uint64_t after, uint64_t *lost)
{
    struct core_events *e = s->e;
    if (!s->cq && !(s->cq = calloc(LOG_PAGE, sizeof *s->cq))) return -ENOMEM;
    s->cq_n = s->cq_i = 0;
    struct page p = {.s = s};
    int n = store_events_read(e->c->store, after, LOG_PAGE, page_row, &p);
    if (n < 0 || p.rc) {
        for (int i = 0; i < s->cq_n; i++) free(s->cq[i].data);
        s->cq_n = 0;
        return n < 0 ? n : p.rc;
    }
    int rc = 0;
    pthread_mutex_lock(&e->lock);
    if (n == 0) {
        /* Nothing after `after` in the log, yet the ring starts later: the
         * log was trimmed past the ring's start (or is behind it).
         * Continue from the ring. */
        if (e->first > after + 1) {
            *lost = e->first - 1;
            rc = -ERANGE;
        }
        s->next_seq = e->first;
    } else {
        if (p.first_seq > after + 1) {
            *lost = p.first_seq - 1;
            rc = -ERANGE;
        }
        s->next_seq = p.last_seq + 1;
    }
    pthread_mutex_unlock(&e->lock);
    return rc;
}

/* Copies the first event of the ring at or after s->next_seq that passes
 * the filter into ev. Returns 1, or 0 when none (next_seq then = e->next). */
static int ring_take_locked(struct core_events *e, struct core_sub *s, struct core_event *ev, int *err)
{
    for (uint64_t q = s->next_seq; q < e->next; q++) {
        const struct ev_slot *slot = &e->ring[q % e->cap];
        if (!passes(s, slot->type, slot->job_id, slot->batch_id)) continue;
        if (!(ev->data = strdup(slot->data))) {
            s->next_seq = q;
            *err = -ENOMEM;
            return 0;
        }
        ev->seq = q;
        memcpy(ev->type, slot->type, sizeof ev->type);
        s->next_seq = q + 1;
        return 1;
    }
    if (s->next_seq < e->next) s->next_seq = e->next;
    return 0;
}

int core_events_next(struct core_sub *s, struct core_event *ev, int64_t deadline_mono_ms, core_wake_cb wake,
                     void *ctx)
{
    struct core_events *e = s->e;
    ev->data = NULL;
    for (;;) {
        if (s->cq_i < s->cq_n) {
            pthread_mutex_lock(&e->lock);
            bool down = e->shutdown;
            pthread_mutex_unlock(&e->lock);
            if (down) return -ESHUTDOWN;
            *ev = s->cq[s->cq_i++];
            s->cq[s->cq_i - 1].data = NULL;
            return 1;
        }
        int rc = 0;
        uint64_t after = 0;
        pthread_mutex_lock(&e->lock);
        if (e->shutdown) {
            rc = -ESHUTDOWN;
        } else if (s->next_seq >= e->first) {
            int err = 0;
            s->live = true;
            rc = ring_take_locked(e, s, ev, &err) ? 1 : err;
            if (rc == 0 && wake) rc = arm_locked(e, s, deadline_mono_ms, wake, ctx);
        } else if (s->live) {
            ev->seq = e->next - 1;
            s->next_seq = e->next;
            rc = -ESTALE;
        } else {
            after = s->next_seq - 1;
            rc = 2; /* catch up from the log, unlocked */
        }
        pthread_mutex_unlock(&e->lock);
        if (rc != 2) return rc;
        uint64_t lost = 0;
        rc = read_page(s, after, &lost);
        if (rc == -ERANGE) {
            ev->seq = lost;
            return rc;
        }
        if (rc < 0) return rc;
    }
}
