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
 *
 *   owned[]  what the registry frees after the definitions (task_registry_own):
 *            command tasks' state, plugins' library handles, curl's global
 *            state. Freed in reverse order, so a plugin is unloaded last.
 *
 * Besides the registry, this file holds what the tasks share (task_extra_int.h):
 * the argument helpers that every task's parse function uses, and the text
 * conversion of a program's output.
 */
#include "task.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "task_int.h"
#include "task_extra_int.h"

#include <limits.h>
#include <math.h>

#define TASK_NAME_MAX 64      /* bytes; names match [a-z0-9_.-]{1,64} */
#define TASK_SLOTS_MIN 16     /* initial hash table capacity, a power of two */

struct task_slot {
    uint64_t hash;  /* hash of defs[index - 1]->name, valid when index != 0 */
    uint32_t index; /* 1-based index into defs[]; 0 = empty slot */
};

struct task_owned {
    void (*free_fn)(void *);
    void *p;
};

struct task_registry {
    struct task_def **defs; /* registration order; each entry owned by the registry */
    size_t count;
    size_t cap;              /* allocated entries of defs[] */
    struct task_slot *slots; /* hash table; nslots is a power of two, >= 2 * count */
    size_t nslots;
    struct task_owned *owned; /* freed by task_registry_free, last first */
    size_t n_owned, cap_owned;
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

int task_registry_new(const struct task_registry_options *opt, struct task_registry **out)
{
    int rc = 0;
    bool allow_exec = opt && opt->allow_exec;
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
    if ((rc = task_http_global_init()) < 0) goto out;
    if ((rc = task_registry_own(reg, task_http_global_fini, NULL)) < 0) {
        task_http_global_fini(NULL);
        goto out;
    }
    const struct task_def *extra[] = {task_http_get_def(), task_exec_def(allow_exec), task_crash_def()};
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
        rc = task_register(reg, extra[i]);
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
    for (size_t i = reg->n_owned; i > 0; i--) reg->owned[i - 1].free_fn(reg->owned[i - 1].p);
    free(reg->owned);
    free(reg);
}

int task_registry_own(struct task_registry *reg, void (*free_fn)(void *), void *p)
{
    if (reg->n_owned == reg->cap_owned) {
        size_t cap = reg->cap_owned ? reg->cap_owned * 2 : 8;
        struct task_owned *owned = realloc(reg->owned, cap * sizeof *owned);
        if (!owned) return -ENOMEM;
        reg->owned = owned;
        reg->cap_owned = cap;
    }
    reg->owned[reg->n_owned++] = (struct task_owned){free_fn, p};
    return 0;
}

int task_register(struct task_registry *reg, const struct task_def *def)
{
    int rc = 0;
    struct task_def *copy = NULL;

    if (!reg || !def || !name_valid(def->name)) {
        rc = -EINVAL;
        goto out;
    }
    /* Each kind needs its entry point: run() for threads and processes,
     * start_async() for the async loop. */
    if (((def->kinds & (TASK_KIND_THREAD | TASK_KIND_PROCESS)) && !def->run) ||
        ((def->kinds & TASK_KIND_ASYNC) && !def->start_async)) {
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

/* Formats an error message into buf (size bytes) and sets *type_out: the body
 * of task_fail() and task_afail(). A message that does not fit is cut without
 * splitting a UTF-8 sequence, so it stays valid in JSON. Returns -1. */
static int vfail(enum job_error_type *type_out, char *buf, size_t size, enum job_error_type type, const char *fmt,
                 va_list ap) __attribute__((format(printf, 5, 0)));
static int vfail(enum job_error_type *type_out, char *buf, size_t size, enum job_error_type type, const char *fmt,
                 va_list ap)
{
    int n = vsnprintf(buf, size, fmt, ap);
    if (n < 0) {
        snprintf(buf, size, "%s", "the task failed (its error message could not be formatted)");
    } else if ((size_t)n >= size) {
        size_t len = size - 1, j = len;
        while (j > 0 && ((unsigned char)buf[j - 1] & 0xC0) == 0x80) j--;
        if (j > 0 && (unsigned char)buf[j - 1] >= 0xC0 && j - 1 + utf8_seq_len((unsigned char)buf[j - 1]) > len)
            buf[j - 1] = '\0';
    }
    *type_out = type;
    return -1;
}

int task_fail(struct task_ctx *ctx, enum job_error_type type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vfail(&ctx->error_type, ctx->error_message, sizeof ctx->error_message, type, fmt, ap);
    va_end(ap);
    return rc;
}

int task_afail(struct task_actx *actx, enum job_error_type type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vfail(&actx->error_type, actx->error_message, sizeof actx->error_message, type, fmt, ap);
    va_end(ap);
    return rc;
}

int task_fail_args(struct task_ctx *ctx, const struct api_err *err)
{
    return task_fail(ctx, JOB_ERR_TASK, "invalid args: %s", err->message);
}

int task_afail_args(struct task_actx *actx, const struct api_err *err)
{
    return task_afail(actx, JOB_ERR_TASK, "invalid args: %s", err->message);
}

/* ---- argument helpers of every task -------------------------------------- */

#define SHOW_MAX 40 /* bytes of a string value quoted in a message */

/* The longest prefix of s, at most max bytes, that does not cut a UTF-8 sequence. */
static size_t utf8_prefix(const char *s, size_t max)
{
    size_t len = strlen(s);
    if (len <= max) return len;
    size_t k = max;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    return k;
}

int task_utf8_clip(const char *s, size_t max)
{
    size_t n = utf8_prefix(s ? s : "", max);
    return n > INT_MAX ? INT_MAX : (int)n;
}

/* Writes v in the shortest form that reads back as the same double. */
static void format_number(double v, char *out, size_t size)
{
    if (!isfinite(v)) {
        snprintf(out, size, "%s", "a number too large to represent");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, size, "%.*g", prec, v);
        if (strtod(out, NULL) == v) return;
    }
}

void task_describe_value(const cJSON *v, char *out, size_t size)
{
    if (cJSON_IsString(v) && v->valuestring) {
        const char *s = v->valuestring;
        size_t n = utf8_prefix(s, SHOW_MAX), o = 0, i = 0;
        if (size < 32) {
            snprintf(out, size, "%s", "a string");
            return;
        }
        out[o++] = '"';
        for (; i < n; i++) {
            unsigned char c = (unsigned char)s[i];
            /* At a sequence start, keep room for its bytes (4) or an escape (6),
             * then '..."' and the NUL. */
            if ((c & 0xC0) != 0x80 && o + 16 > size) break;
            if (c == '"' || c == '\\') {
                out[o++] = '\\';
                out[o++] = (char)c;
            } else if (c < 0x20) {
                o += (size_t)snprintf(out + o, size - o, "\\u%04x", c);
            } else {
                out[o++] = (char)c;
            }
        }
        snprintf(out + o, size - o, "%s", s[i] ? "...\"" : "\"");
    } else if (cJSON_IsNumber(v)) {
        format_number(v->valuedouble, out, size);
    } else if (cJSON_IsTrue(v)) {
        snprintf(out, size, "%s", "true");
    } else if (cJSON_IsFalse(v)) {
        snprintf(out, size, "%s", "false");
    } else if (cJSON_IsNull(v)) {
        snprintf(out, size, "%s", "null");
    } else if (cJSON_IsArray(v)) {
        snprintf(out, size, "%s", "an array");
    } else if (cJSON_IsObject(v)) {
        snprintf(out, size, "%s", "an object");
    } else {
        snprintf(out, size, "%s", "an unsupported value");
    }
}

int task_args_object(const cJSON *args, const char *task, const char *example, const char *const *fields,
                     struct api_err *err)
{
    char got[64];
    if (!cJSON_IsObject(args)) {
        task_describe_value(args, got, sizeof got);
        return api_err_set(err, API_INVALID_ARGUMENT, "args", "args of %s must be a JSON object such as %s, got %s.",
                           task, example, got);
    }
    for (const cJSON *c = args->child; c; c = c->next) {
        const char *key = c->string ? c->string : "";
        char field[sizeof err->field];
        snprintf(field, sizeof field, "args.%.*s", (int)utf8_prefix(key, sizeof field - 6), key);
        size_t i = 0;
        while (fields[i] && strcmp(fields[i], key) != 0) i++;
        if (!fields[i]) {
            char allowed[160] = "";
            size_t o = 0;
            for (size_t j = 0; fields[j] && o < sizeof allowed; j++)
                o += (size_t)snprintf(allowed + o, sizeof allowed - o, "%s\"%s\"",
                                      j == 0 ? "" : fields[j + 1] ? ", " : " and ", fields[j]);
            return api_err_set(err, API_INVALID_ARGUMENT, field,
                               "args has no field \"%.*s\"; task %s accepts only %s, e.g. %s.",
                               (int)utf8_prefix(key, 64), key, task, allowed, example);
        }
        for (const cJSON *d = args->child; d != c; d = d->next)
            if (d->string && strcmp(d->string, key) == 0)
                return api_err_set(err, API_INVALID_ARGUMENT, field, "%s appears more than once in args; give it once.",
                                   field);
    }
    return 0;
}

int task_args_string(const cJSON *args, const char *key, bool required, size_t max_len, const char *example,
                     const char **out, struct api_err *err)
{
    char field[64], got[64];
    snprintf(field, sizeof field, "args.%s", key);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(args, key);
    *out = NULL;
    if (!v || (cJSON_IsNull(v) && !required)) {
        if (required)
            return api_err_set(err, API_INVALID_ARGUMENT, field, "%s is required: a string, e.g. %s.", field,
                               example);
        return 0;
    }
    if (!cJSON_IsString(v) || !v->valuestring) {
        task_describe_value(v, got, sizeof got);
        return api_err_set(err, API_INVALID_ARGUMENT, field, "%s must be a string, got %s.", field, got);
    }
    size_t len = strlen(v->valuestring);
    if (len > max_len)
        return api_err_set(err, API_INVALID_ARGUMENT, field, "%s must be at most %zu bytes long, got %zu bytes.",
                           field, max_len, len);
    *out = v->valuestring;
    return 0;
}

int task_args_number(const cJSON *args, const struct task_num_spec *ns, double *out, struct api_err *err)
{
    char field[64], got[64];
    snprintf(field, sizeof field, "args.%s", ns->key);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(args, ns->key);
    if (!v || (cJSON_IsNull(v) && !ns->required)) {
        if (ns->required)
            return api_err_set(err, API_INVALID_ARGUMENT, field, "%s is required: %s, e.g. %s.", field, ns->range,
                               ns->example);
        *out = ns->dflt;
        return 0;
    }
    bool ok = cJSON_IsNumber(v) && isfinite(v->valuedouble) && v->valuedouble >= ns->min &&
              v->valuedouble <= ns->max && (!ns->integer || v->valuedouble == floor(v->valuedouble));
    if (!ok) {
        task_describe_value(v, got, sizeof got);
        return api_err_set(err, API_INVALID_ARGUMENT, field, "%s must be %s, got %s.", field, ns->range, got);
    }
    *out = v->valuedouble + 0.0; /* + 0.0 turns -0 into 0 */
    return 0;
}

/* Length of the well-formed UTF-8 sequence at s[0..avail) (RFC 3629's table:
 * no overlongs, no surrogates, nothing past U+10FFFF), 0 when it is not one,
 * or -1 when it is the valid start of a sequence that avail cuts short. */
static int utf8_seq_at(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    int n;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c >= 0xE0 && c <= 0xEF) n = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) n = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else return 0;
    for (int i = 1; i < n; i++) {
        if ((size_t)i >= avail) return -1;
        if (s[i] < (i == 1 ? lo : 0x80) || s[i] > (i == 1 ? hi : 0xBF)) return 0;
    }
    return n;
}

cJSON *task_text_json(const char *buf, size_t len, bool cut)
{
    static const char replacement[] = "\xEF\xBF\xBD"; /* U+FFFD */
    const unsigned char *s = (const unsigned char *)buf;
    cJSON *j = NULL;
    char *out = malloc(len * 3 + 1); /* each bad byte becomes 3 */
    size_t o = 0;
    if (!out) return NULL;
    for (size_t i = 0; i < len;) {
        int n = s[i] ? utf8_seq_at(s + i, len - i) : 0;
        if (n < 0 && cut) break; /* the cap cut this character in half */
        if (n <= 0) {
            memcpy(out + o, replacement, 3);
            o += 3;
            i++;
            continue;
        }
        memcpy(out + o, s + i, (size_t)n);
        o += (size_t)n;
        i += (size_t)n;
    }
    out[o] = '\0';
    j = cJSON_CreateString(out);
    free(out);
    return j;
}
