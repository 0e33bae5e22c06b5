/* gates.c - what holds an eligible-looking job back: its dependencies
 * (c->deps) and its concurrency key (c->ckeys). Plain data structures, all
 * under c->lock; dispatch.c decides what to do with what they return.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core_int.h"

struct ckey *core_ckey_get_locked(struct core *c, const char *name)
{
    struct hnode *hn = hmap_get(&c->ckeys, name);
    if (hn) return CONTAINER_OF(hn, struct ckey, h);
    struct ckey *ck = calloc(1, sizeof *ck);
    if (!ck || !(ck->name = strdup(name))) {
        free(ck);
        return NULL;
    }
    ck->h.key = ck->name;
    if (hmap_put(&c->ckeys, &ck->h) < 0) {
        free(ck->name);
        free(ck);
        return NULL;
    }
    return ck;
}

int64_t core_ckey_order(struct ckey *ck, int64_t priority)
{
    /* Higher priority first, then arrival: priority is within +-1e9 (validate.c),
     * so (1e9 - priority) fits 31 bits and the arrival number the low 32. */
    int64_t p = 1000000000LL - priority;
    if (p < 0) p = 0;
    return (p << 32) | (int64_t)ck->next_seq++;
}

void core_ckey_maybe_free_locked(struct core *c, struct ckey *ck)
{
    if (ck->running > 0 || ck->held.n > 0) return;
    hmap_del(&c->ckeys, &ck->h);
    theap_fini(&ck->held);
    free(ck->name);
    free(ck);
}

int core_dep_add_locked(struct core *c, const char *dep_id, const char *dependent_id)
{
    struct hnode *hn = hmap_get(&c->deps, dep_id);
    struct depwait *dw = hn ? CONTAINER_OF(hn, struct depwait, h) : NULL;
    if (!dw) {
        if (!(dw = calloc(1, sizeof *dw))) return -ENOMEM;
        memcpy(dw->id, dep_id, ID_LEN + 1);
        dw->h.key = dw->id;
        if (hmap_put(&c->deps, &dw->h) < 0) {
            free(dw);
            return -ENOMEM;
        }
    }
    if (dw->n == dw->cap) {
        size_t cap = dw->cap ? 2 * dw->cap : 4;
        void *p = realloc(dw->dependents, cap * sizeof *dw->dependents);
        if (!p) {
            if (!dw->n) {
                hmap_del(&c->deps, &dw->h);
                free(dw);
            }
            return -ENOMEM;
        }
        dw->dependents = p;
        dw->cap = cap;
    }
    memcpy(dw->dependents[dw->n++], dependent_id, ID_LEN + 1);
    return 0;
}

struct depwait *core_dep_take_locked(struct core *c, const char *dep_id)
{
    struct hnode *hn = hmap_get(&c->deps, dep_id);
    if (!hn) return NULL;
    hmap_del(&c->deps, hn);
    return CONTAINER_OF(hn, struct depwait, h);
}

void core_depwait_free(struct depwait *dw)
{
    if (!dw) return;
    free(dw->dependents);
    free(dw);
}

void core_gates_fini(struct core *c)
{
    for (size_t b = 0; c->deps.b && b < c->deps.nb; b++) {
        struct hnode *n = c->deps.b[b];
        while (n) {
            struct hnode *next = n->next;
            core_depwait_free(CONTAINER_OF(n, struct depwait, h));
            n = next;
        }
    }
    for (size_t b = 0; c->ckeys.b && b < c->ckeys.nb; b++) {
        struct hnode *n = c->ckeys.b[b];
        while (n) {
            struct hnode *next = n->next;
            struct ckey *ck = CONTAINER_OF(n, struct ckey, h);
            theap_fini(&ck->held);
            free(ck->name);
            free(ck);
            n = next;
        }
    }
    hmap_fini(&c->deps);
    hmap_fini(&c->ckeys);
}
