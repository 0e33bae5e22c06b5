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

void core_waiters_fire_list(struct waiter *list)
{
    while (list) {
        struct waiter *next = list->next;
        list->cb(list->ctx);
        free(list);
        list = next;
    }
}

void core_waiters_fire_id(struct core *c, const char *id)
{
    struct waiter *list = NULL;
    pthread_mutex_lock(&c->lock);
    struct hnode *hn = hmap_get(&c->waiters, id);
    if (hn) {
        list = CONTAINER_OF(hn, struct waiter, h);
        hmap_del(&c->waiters, hn);
        for (struct waiter *w = list; w; w = w->next) theap_del(&c->wheap, &w->t);
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
        unlink_id_locked(c, w);
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
