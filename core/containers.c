/* containers.c - the intrusive hash map and heap used by the dispatcher. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../common/hash.h"
#include "core_int.h"

int hmap_init(struct hmap *m)
{
    m->nb = 1024;
    m->n = 0;
    m->b = calloc(m->nb, sizeof *m->b);
    return m->b ? 0 : -ENOMEM;
}

void hmap_fini(struct hmap *m)
{
    free(m->b);
    m->b = NULL;
    m->nb = m->n = 0;
}

struct hnode *hmap_get(const struct hmap *m, const char *key)
{
    uint64_t h = hash_str(key);
    for (struct hnode *n = m->b[h & (m->nb - 1)]; n; n = n->next)
        if (n->hash == h && strcmp(n->key, key) == 0) return n;
    return NULL;
}

static int hmap_grow(struct hmap *m)
{
    size_t nb = m->nb * 2;
    struct hnode **b = calloc(nb, sizeof *b);
    if (!b) return -ENOMEM;
    for (size_t i = 0; i < m->nb; i++) {
        struct hnode *n = m->b[i];
        while (n) {
            struct hnode *next = n->next;
            n->next = b[n->hash & (nb - 1)];
            b[n->hash & (nb - 1)] = n;
            n = next;
        }
    }
    free(m->b);
    m->b = b;
    m->nb = nb;
    return 0;
}

int hmap_put(struct hmap *m, struct hnode *node)
{
    if (m->n + 1 > m->nb && hmap_grow(m) < 0 && m->n + 1 > m->nb * 4) return -ENOMEM;
    node->hash = hash_str(node->key);
    struct hnode **slot = &m->b[node->hash & (m->nb - 1)];
    node->next = *slot;
    *slot = node;
    m->n++;
    return 0;
}

void hmap_del(struct hmap *m, struct hnode *node)
{
    for (struct hnode **p = &m->b[node->hash & (m->nb - 1)]; *p; p = &(*p)->next) {
        if (*p == node) {
            *p = node->next;
            m->n--;
            return;
        }
    }
}

static void theap_set(struct theap *h, long i, struct tnode *t)
{
    h->v[i] = t;
    t->idx = i;
}

static void theap_up(struct theap *h, long i)
{
    struct tnode *t = h->v[i];
    while (i > 0) {
        long p = (i - 1) / 2;
        if (h->v[p]->key <= t->key) break;
        theap_set(h, i, h->v[p]);
        i = p;
    }
    theap_set(h, i, t);
}

static void theap_down(struct theap *h, long i)
{
    struct tnode *t = h->v[i];
    for (;;) {
        long l = 2 * i + 1, r = l + 1, m = i;
        int64_t mk = t->key;
        if (l < h->n && h->v[l]->key < mk) {
            m = l;
            mk = h->v[l]->key;
        }
        if (r < h->n && h->v[r]->key < mk) m = r;
        if (m == i) break;
        theap_set(h, i, h->v[m]);
        i = m;
    }
    theap_set(h, i, t);
}

int theap_push(struct theap *h, struct tnode *t)
{
    if (h->n == h->cap) {
        long cap = h->cap ? h->cap * 2 : 256;
        struct tnode **v = realloc(h->v, (size_t)cap * sizeof *v);
        if (!v) return -ENOMEM;
        h->v = v;
        h->cap = cap;
    }
    theap_set(h, h->n++, t);
    theap_up(h, h->n - 1);
    return 0;
}

struct tnode *theap_peek(const struct theap *h)
{
    return h->n ? h->v[0] : NULL;
}

void theap_del(struct theap *h, struct tnode *t)
{
    long i = t->idx;
    t->idx = -1;
    struct tnode *last = h->v[--h->n];
    if (i == h->n) return;
    theap_set(h, i, last);
    theap_up(h, i);
    theap_down(h, last->idx);
}

void theap_fini(struct theap *h)
{
    free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}
