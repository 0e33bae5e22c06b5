/* registry.c - the task registry: definitions by name and in registration order.
 *
 * DESIGN
 *
 * The registry is filled at start-up by one thread (built-ins, then command tasks
 * and plugins) and only read afterwards, by any thread, without a lock. It keeps
 * two views of the same definitions:
 *
 *   defs[]   one heap copy of each struct task_def, in registration order. Each
 *            copy is its own allocation, so a pointer returned by task_find() or
 *            task_at() stays valid while more tasks are registered (the array of
 *            pointers may move; the definitions never do).
 *   slots[]  an open-addressing hash table (linear probing) of indexes into
 *            defs[], stored as index + 1 so that 0 means "empty". Its capacity is a
 *            power of two kept at least twice the number of tasks, so a probe
 *            sequence always ends at an empty slot and lookups are O(1) on average.
 *            Tasks are never removed, so no tombstones are needed.
 *
 * task_find() runs on every submit and every job start: it hashes the name once,
 * compares strings only on a hash match, and never allocates.
 */
#include "task.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "task_int.h"

#define TASK_NAME_MAX 64      /* bytes; names match [a-z0-9_.-]{1,64} */
#define TASK_SLOTS_MIN 16     /* initial hash table capacity, a power of two */

struct task_slot {
    uint64_t hash;  /* hash of defs[index - 1]->name, valid when index != 0 */
    uint32_t index; /* 1-based index into defs[]; 0 = empty slot */
};

struct task_registry {
    struct task_def **defs; /* registration order; each entry owned by the registry */
    size_t count;
    size_t cap;              /* allocated entries of defs[] */
    struct task_slot *slots; /* hash table; nslots is a power of two, >= 2 * count */
    size_t nslots;
};

/* FNV-1a, 64 bits: short names, no allocation, good enough spread for linear probing. */
static uint64_t name_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3u;
    }
    return h;
}

/* True when name matches [a-z0-9_.-]{1,64}. */
static bool name_valid(const char *name)
{
    if (!name) return false;
    size_t n = 0;
    for (const char *p = name; *p; p++, n++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
        if (!ok || n >= TASK_NAME_MAX) return false;
    }
    return n >= 1;
}

/* True when mask has exactly one bit set. */
static bool one_bit(unsigned mask)
{
    return mask != 0 && (mask & (mask - 1)) == 0;
}

/* Inserts defs[index] into slots (which must have an empty slot). */
static void slots_put(struct task_slot *slots, size_t nslots, uint64_t hash, size_t index)
{
    size_t mask = nslots - 1;
    size_t i = (size_t)hash & mask;
    while (slots[i].index != 0) i = (i + 1) & mask;
    slots[i].hash = hash;
    slots[i].index = (uint32_t)(index + 1);
}

/* Makes room for one more task in defs[] and slots[]. Returns 0 or -ENOMEM; on
 * failure the registry is unchanged. */
static int registry_reserve(struct task_registry *reg)
{
    int rc = 0;
    struct task_slot *slots = NULL;

    if (reg->count == reg->cap) {
        size_t cap = reg->cap ? reg->cap * 2 : 16;
        struct task_def **defs = realloc(reg->defs, cap * sizeof *defs);
        if (!defs) {
            rc = -ENOMEM;
            goto out;
        }
        reg->defs = defs;
        reg->cap = cap;
    }
    if (reg->count >= UINT32_MAX - 1) { /* slot indexes are 32-bit */
        rc = -ENOMEM;
        goto out;
    }
    if ((reg->count + 1) * 2 > reg->nslots) {
        size_t nslots = reg->nslots ? reg->nslots * 2 : TASK_SLOTS_MIN;
        slots = calloc(nslots, sizeof *slots);
        if (!slots) {
            rc = -ENOMEM;
            goto out;
        }
        for (size_t i = 0; i < reg->nslots; i++)
            if (reg->slots[i].index != 0)
                slots_put(slots, nslots, reg->slots[i].hash, reg->slots[i].index - 1);
        free(reg->slots);
        reg->slots = slots;
        reg->nslots = nslots;
        slots = NULL;
    }
out:
    free(slots);
    return rc;
}

int task_registry_new(struct task_registry **out)
{
    int rc = 0;
    struct task_registry *reg = calloc(1, sizeof *reg);
    if (!reg) {
        rc = -ENOMEM;
        goto out;
    }
    size_t n = 0;
    const struct task_def *builtins = task_builtin_defs(&n);
    for (size_t i = 0; i < n; i++) {
        rc = task_register(reg, &builtins[i]);
        /* A built-in that does not register is our bug, not the caller's. */
        assert(rc != -EINVAL && rc != -EEXIST);
        if (rc < 0) goto out;
    }
out:
    if (rc < 0) {
        task_registry_free(reg);
        reg = NULL;
    }
    *out = reg;
    return rc;
}

void task_registry_free(struct task_registry *reg)
{
    if (!reg) return;
    for (size_t i = 0; i < reg->count; i++) free(reg->defs[i]);
    free(reg->defs);
    free(reg->slots);
    free(reg);
}

int task_register(struct task_registry *reg, const struct task_def *def)
{
    int rc = 0;
    struct task_def *copy = NULL;

    if (!reg || !def || !name_valid(def->name) || def->run == NULL) {
        rc = -EINVAL;
        goto out;
    }
    if (def->kinds == 0 || (def->kinds & ~(unsigned)TASK_KIND_ALL) != 0 || !one_bit(def->default_kind) ||
        (def->default_kind & def->kinds) == 0) {
        rc = -EINVAL;
        goto out;
    }
    if (task_find(reg, def->name)) {
        rc = -EEXIST;
        goto out;
    }
    copy = malloc(sizeof *copy);
    if (!copy) {
        rc = -ENOMEM;
        goto out;
    }
    *copy = *def;
    rc = registry_reserve(reg);
    if (rc < 0) goto out;

    slots_put(reg->slots, reg->nslots, name_hash(copy->name), reg->count);
    reg->defs[reg->count++] = copy;
    copy = NULL; /* owned by the registry now */
out:
    free(copy);
    return rc;
}

const struct task_def *task_find(const struct task_registry *reg, const char *name)
{
    if (!reg || !name || reg->nslots == 0) return NULL;
    uint64_t h = name_hash(name);
    size_t mask = reg->nslots - 1;
    /* Terminates: the table is never more than half full. */
    for (size_t i = (size_t)h & mask; reg->slots[i].index != 0; i = (i + 1) & mask) {
        const struct task_slot *s = &reg->slots[i];
        if (s->hash == h && strcmp(reg->defs[s->index - 1]->name, name) == 0) return reg->defs[s->index - 1];
    }
    return NULL;
}

size_t task_count(const struct task_registry *reg)
{
    return reg ? reg->count : 0;
}

const struct task_def *task_at(const struct task_registry *reg, size_t i)
{
    if (!reg || i >= reg->count) return NULL;
    return reg->defs[i];
}

const char *task_kind_name(unsigned kind)
{
    switch (kind) {
    case TASK_KIND_THREAD: return "thread";
    case TASK_KIND_PROCESS: return "process";
    case TASK_KIND_ASYNC: return "async";
    default: return NULL;
    }
}

int task_kind_parse(const char *name, unsigned *out)
{
    static const unsigned kinds[] = {TASK_KIND_THREAD, TASK_KIND_PROCESS, TASK_KIND_ASYNC};
    if (!name) return -EINVAL;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (strcmp(name, task_kind_name(kinds[i])) == 0) {
            *out = kinds[i];
            return 0;
        }
    }
    return -EINVAL;
}

/* Length of the sequence a UTF-8 lead byte starts (1 for anything unexpected). */
static size_t utf8_seq_len(unsigned char lead)
{
    if (lead >= 0xF0) return 4;
    if (lead >= 0xE0) return 3;
    if (lead >= 0xC0) return 2;
    return 1;
}

int task_fail(struct task_ctx *ctx, enum job_error_type type, const char *fmt, ...)
{
    char *buf = ctx->error_message;
    size_t size = sizeof ctx->error_message;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    if (n < 0) {
        snprintf(buf, size, "%s", "the task failed (its error message could not be formatted)");
    } else if ((size_t)n >= size) {
        /* Truncated: drop a UTF-8 sequence cut in half, so the message stays valid
         * UTF-8 when it is put into JSON. */
        size_t len = size - 1, j = len;
        while (j > 0 && ((unsigned char)buf[j - 1] & 0xC0) == 0x80) j--;
        if (j > 0 && (unsigned char)buf[j - 1] >= 0xC0 && j - 1 + utf8_seq_len((unsigned char)buf[j - 1]) > len)
            buf[j - 1] = '\0';
    }
    ctx->error_type = type;
    return -1;
}
