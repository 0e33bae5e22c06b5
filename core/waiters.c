/* waiters.c - long-polls and other waits on a job's end.
 *
 * A waiter is registered under its job id (c->waiters, chained) and by its
 * deadline (c->wheap), both guarded by c->lock. It leaves both structures
 * under the lock exactly once - fired by the job's terminal commit, by its
 * deadline, by a drain, or cancelled - and its callback runs after the lock
 * is released, so a callback may call back into the core.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/clock.h"
#include "core_int.h"

/* Unlinks w from the id map (it may be the head of its chain). Lock held. */
static void unlink_id_locked(struct core *c, struct waiter *w)
{
    struct hnode *hn = hmap_get(&c->waiters, w->id);
    struct waiter *head = hn ? CONTAINER_OF(hn, struct waiter, h) : NULL;
    if (head == w) {
        hmap_del(&c->waiters, &w->h);
        if (w->next) {
            w->next->h.key = w->next->id;
            hmap_put(&c->waiters, &w->next->h); /* cannot fail: one out, one in, no growth needed */
        }
        return;
    }
    for (struct waiter *p = head; p; p = p->next) {
        if (p->next == w) {
            p->next = w->next;
            return;
        }
    }
}

int core_wait_job(struct core *c, const char *id, int64_t deadline_mono_ms, core_wake_cb cb, void *ctx,
                  uint64_t *token)
{
    struct waiter *w = calloc(1, sizeof *w);
    if (!w) return -ENOMEM;
    snprintf(w->id, sizeof w->id, "%s", id);
    w->cb = cb;
    w->ctx = ctx;
    w->t.key = deadline_mono_ms;
    int rc = 0;
    pthread_mutex_lock(&c->lock);
    if (atomic_load(&c->drained)) {
        rc = -ESHUTDOWN;
        goto out;
    }
    if ((rc = theap_push(&c->wheap, &w->t)) < 0) goto out;
    struct hnode *hn = hmap_get(&c->waiters, w->id);
    if (hn) {
        struct waiter *head = CONTAINER_OF(hn, struct waiter, h);
        w->next = head->next;
        head->next = w;
    } else {
        w->h.key = w->id;
        if ((rc = hmap_put(&c->waiters, &w->h)) < 0) {
            theap_del(&c->wheap, &w->t);
            goto out;
        }
    }
    w->token = ++c->next_token;
    *token = w->token;
    /* The timer thread may sleep past this deadline: wake it if this is now the earliest. */
    if (theap_peek(&c->wheap) == &w->t) pthread_cond_signal(&c->timer_cv);
out:
    pthread_mutex_unlock(&c->lock);
    if (rc < 0) free(w);
    return rc;
}

bool core_wait_cancel(struct core *c, const char *id, uint64_t token)
{
    struct waiter *found = NULL;
    pthread_mutex_lock(&c->lock);
    struct hnode *hn = hmap_get(&c->waiters, id);
    for (struct waiter *w = hn ? CONTAINER_OF(hn, struct waiter, h) : NULL; w; w = w->next) {
        if (w->token == token) {
            found = w;
            break;
        }
    }
    if (found) {
        unlink_id_locked(c, found);
        theap_del(&c->wheap, &found->t);
    }
    pthread_mutex_unlock(&c->lock);
    free(found);
    return found != NULL;
}

/* --- waitsets (POST /v1/wait) ---
 *
 * A waitset has one member waiter per live job, chained under the job's id
 * like any waiter but not on the deadline heap, and one deadline waiter (on
 * the heap, no id) whose callback is ws_fire. The set fires exactly once, by
 * firing its deadline waiter: when a member's job ends and the condition then
 * holds (core_waiters_fire_id), at the deadline, or at drain. Counters and
 * flags are guarded by c->lock. */
struct core_waitset {
    struct core *c;
    enum core_return_when when;
    size_t n, done, failed;
    bool armed;  /* the deadline waiter is on the heap */
    bool fired;  /* the deadline waiter left the heap to fire */
    bool cb_ran; /* ws_fire returned from the caller's callback */
    bool closed; /* the owner let go: whoever finishes last frees */
    core_wake_cb cb;
    void *ctx;
    struct waiter *dl;      /* the deadline waiter (owned until it fires) */
    struct waiter *members; /* n_members of them; linked while `linked` */
    size_t n_members;
};

static bool ws_holds(const struct core_waitset *ws)
{
    switch (ws->when) {
    case CORE_FIRST_COMPLETED:
        return ws->done >= 1 || ws->n == 0;
    case CORE_FIRST_EXCEPTION:
        return ws->failed >= 1 || ws->done >= ws->n;
    default:
        return ws->done >= ws->n;
    }
}

/* Unlinks every member still chained under its job id. Lock held. */
static void ws_unlink_members_locked(struct core *c, struct core_waitset *ws)
{
    for (size_t i = 0; i < ws->n_members; i++) {
        struct waiter *m = &ws->members[i];
        if (m->token) { /* token != 0: still linked */
            unlink_id_locked(c, m);
            m->token = 0;
        }
    }
}

static void ws_fire(void *arg)
{
    struct core_waitset *ws = arg;
    struct core *c = ws->c;
    ws->cb(ws->ctx);
    pthread_mutex_lock(&c->lock);
    ws->cb_ran = true;
    bool free_it = ws->closed;
    pthread_mutex_unlock(&c->lock);
    if (free_it) {
        free(ws->members);
        free(ws);
    }
}

int core_waitset_open(struct core *c, const char *const *ids, size_t n, enum core_return_when when,
                      struct core_waitset **out, size_t **not_live, size_t *n_not_live)
{
    struct core_waitset *ws = calloc(1, sizeof *ws);
    size_t *nl = calloc(n + 1, sizeof *nl);
    int rc = 0;
    *out = NULL;
    *not_live = NULL;
    *n_not_live = 0;
    if (!ws || !nl || !(ws->members = calloc(n + 1, sizeof *ws->members)) || !(ws->dl = calloc(1, sizeof *ws->dl))) {
        rc = -ENOMEM;
        goto fail;
    }
    ws->c = c;
    ws->when = when;
    ws->n = n;
    ws->dl->ws = ws;
    ws->dl->cb = ws_fire;
    ws->dl->ctx = ws;
    ws->dl->t.idx = -1;
    size_t k = 0;
    pthread_mutex_lock(&c->lock);
    if (atomic_load(&c->drained)) {
        pthread_mutex_unlock(&c->lock);
        rc = -ESHUTDOWN;
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        if (!hmap_get(&c->live, ids[i])) {
            nl[k++] = i;
            continue;
        }
        struct waiter *m = &ws->members[ws->n_members];
        snprintf(m->id, sizeof m->id, "%s", ids[i]);
        m->ws = ws;
        m->t.idx = -1;
        struct hnode *hn = hmap_get(&c->waiters, m->id);
        if (hn) {
            struct waiter *head = CONTAINER_OF(hn, struct waiter, h);
            m->next = head->next;
            head->next = m;
        } else {
            m->h.key = m->id;
            if (hmap_put(&c->waiters, &m->h) < 0) {
                ws_unlink_members_locked(c, ws);
                pthread_mutex_unlock(&c->lock);
                rc = -ENOMEM;
                goto fail;
            }
        }
        m->token = ++c->next_token;
        ws->n_members++;
    }
    pthread_mutex_unlock(&c->lock);
    *out = ws;
    *not_live = nl;
    *n_not_live = k;
    return 0;
fail:
    if (ws) {
        free(ws->members);
        free(ws->dl);
    }
    free(ws);
    free(nl);
    return rc;
}

void core_waitset_done(struct core_waitset *ws, enum job_status status)
{
    pthread_mutex_lock(&ws->c->lock);
    ws->done++;
    if (status == JOB_FAILED) ws->failed++;
    pthread_mutex_unlock(&ws->c->lock);
}

bool core_waitset_arm(struct core_waitset *ws, int64_t deadline_mono_ms, core_wake_cb cb, void *ctx)
{
    struct core *c = ws->c;
    bool now = false;
    pthread_mutex_lock(&c->lock);
    ws->cb = cb;
    ws->ctx = ctx;
    ws->dl->t.key = deadline_mono_ms;
    if (ws_holds(ws) || atomic_load(&c->drained) || theap_push(&c->wheap, &ws->dl->t) < 0) {
        now = true;
    } else {
        ws->armed = true;
        if (theap_peek(&c->wheap) == &ws->dl->t) pthread_cond_signal(&c->timer_cv);
    }
    pthread_mutex_unlock(&c->lock);
    return now;
}

bool core_waitset_close(struct core_waitset *ws)
{
    struct core *c = ws->c;
    bool free_now;
    pthread_mutex_lock(&c->lock);
    ws_unlink_members_locked(c, ws);
    if (ws->fired) {
        free_now = ws->cb_ran;
        ws->closed = true;
    } else {
        if (ws->armed) theap_del(&c->wheap, &ws->dl->t);
        free(ws->dl);
        ws->dl = NULL;
        free_now = true;
    }
    pthread_mutex_unlock(&c->lock);
    if (free_now) {
        free(ws->members);
        free(ws);
    }
    return free_now;
}

void core_waiters_fire_list(struct waiter *list)
{
    while (list) {
        struct waiter *next = list->next;
        list->cb(list->ctx);
        free(list);
        list = next;
    }
}

void core_waiters_fire_id(struct core *c, const char *id, int status)
{
    struct waiter *list = NULL, *chain = NULL, *next;
    pthread_mutex_lock(&c->lock);
    struct hnode *hn = hmap_get(&c->waiters, id);
    if (hn) {
        chain = CONTAINER_OF(hn, struct waiter, h);
        hmap_del(&c->waiters, hn);
    }
    for (struct waiter *w = chain; w; w = next) {
        next = w->next;
        if (!w->ws) {
            theap_del(&c->wheap, &w->t);
            w->next = list;
            list = w;
            continue;
        }
        /* A waitset member: count the end; fire the set when it now holds. */
        struct core_waitset *ws = w->ws;
        w->token = 0;
        w->next = NULL;
        ws->done++;
        if (status == JOB_FAILED) ws->failed++;
        if (ws->armed && !ws->fired && ws_holds(ws)) {
            ws->fired = true;
            theap_del(&c->wheap, &ws->dl->t);
            ws_unlink_members_locked(c, ws);
            ws->dl->next = list;
            list = ws->dl;
            ws->dl = NULL;
        }
    }
    pthread_mutex_unlock(&c->lock);
    core_waiters_fire_list(list);
}

struct waiter *core_waiters_take_expired_locked(struct core *c, int64_t now_mono_ms)
{
    struct waiter *list = NULL;
    struct tnode *t;
    while ((t = theap_peek(&c->wheap)) && t->key <= now_mono_ms) {
        struct waiter *w = CONTAINER_OF(t, struct waiter, t);
        theap_del(&c->wheap, t);
        if (w->ws) { /* a waitset's deadline */
            w->ws->fired = true;
            ws_unlink_members_locked(c, w->ws);
            w->ws->dl = NULL;
        } else {
            unlink_id_locked(c, w);
        }
        w->next = list;
        list = w;
    }
    return list;
}

void core_waiters_fire_all(struct core *c)
{
    pthread_mutex_lock(&c->lock);
    struct waiter *list = core_waiters_take_expired_locked(c, INT64_MAX);
    pthread_mutex_unlock(&c->lock);
    core_waiters_fire_list(list);
}
