/* wire.c - the process executor's message codec (see wire.h for the format).
 *
 * The decoder is written for hostile input: every field read goes through
 * struct rd, which checks the bytes left before touching them, so no length
 * taken from the stream is ever trusted to size a read.
 */
#include "wire.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define STR_ABSENT 0xffffffffu

/* ---- decoding ------------------------------------------------------------- */

struct rd {
    const uint8_t *p;
    size_t left;
    bool bad; /* sticky: a read went past the end or a value was invalid */
};

static uint64_t get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint8_t rd_u8(struct rd *r)
{
    if (r->bad || r->left < 1) {
        r->bad = true;
        return 0;
    }
    uint8_t v = r->p[0];
    r->p++;
    r->left--;
    return v;
}

static int64_t rd_i64(struct rd *r)
{
    if (r->bad || r->left < 8) {
        r->bad = true;
        return 0;
    }
    uint64_t v = get_le(r->p, 8);
    r->p += 8;
    r->left -= 8;
    int64_t s;
    memcpy(&s, &v, sizeof s); /* two's complement, without an implementation-defined cast */
    return s;
}

static double rd_f64(struct rd *r)
{
    int64_t bits = rd_i64(r);
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* Reads a string; `required` makes absence invalid, `max` bounds its length
 * (0 = the frame's own bound). */
static struct exec_wire_str rd_str(struct rd *r, bool required, uint32_t max)
{
    struct exec_wire_str s = {0};
    if (r->bad || r->left < 4) {
        r->bad = true;
        return s;
    }
    uint32_t n = (uint32_t)get_le(r->p, 4);
    r->p += 4;
    r->left -= 4;
    if (n == STR_ABSENT) {
        if (required) r->bad = true;
        return s;
    }
    if (n > r->left || (max && n > max) || memchr(r->p, '\0', n)) {
        r->bad = true;
        return s;
    }
    s.p = (const char *)r->p;
    s.len = n;
    s.present = true;
    r->p += n;
    r->left -= n;
    return s;
}

static bool rd_bool(struct rd *r)
{
    uint8_t v = rd_u8(r);
    if (v > 1) r->bad = true;
    return v == 1;
}

int exec_wire_decode(const uint8_t *buf, size_t len, struct exec_wire_msg *out, size_t *frame_len)
{
    memset(out, 0, sizeof *out);
    if (len < WIRE_HEADER) {
        *frame_len = WIRE_HEADER;
        return 0;
    }
    uint32_t n = (uint32_t)get_le(buf, 4);
    if (n == 0 || n > WIRE_MAX_FRAME) return -EMSGSIZE;
    *frame_len = (size_t)WIRE_HEADER + n;
    if (len - WIRE_HEADER < n) return 0;

    struct rd r = {.p = buf + WIRE_HEADER, .left = n};
    uint8_t type = rd_u8(&r);
    out->type = (enum exec_wire_type)type;
    switch (type) {
    case WIRE_JOB:
        out->id = rd_str(&r, true, WIRE_ID_MAX);
        out->task = rd_str(&r, true, 0);
        out->args = rd_str(&r, true, 0);
        out->timeout_ms = rd_i64(&r);
        if (out->timeout_ms < 0) r.bad = true;
        break;
    case WIRE_SKIP:
    case WIRE_SKIPPED:
        out->id = rd_str(&r, true, WIRE_ID_MAX);
        break;
    case WIRE_STARTED:
        out->id = rd_str(&r, true, WIRE_ID_MAX);
        out->pid = rd_i64(&r);
        out->started_at_ms = rd_i64(&r);
        break;
    case WIRE_PROGRESS:
        out->id = rd_str(&r, true, WIRE_ID_MAX);
        out->fraction = rd_f64(&r);
        out->message = rd_str(&r, false, 0);
        if (!isfinite(out->fraction)) r.bad = true;
        break;
    case WIRE_DONE:
        out->id = rd_str(&r, true, WIRE_ID_MAX);
        out->ok = rd_bool(&r);
        out->result = rd_str(&r, false, 0);
        out->error_type = rd_u8(&r);
        out->error_message = rd_str(&r, false, 0);
        out->finished_at_ms = rd_i64(&r);
        out->run_us = rd_i64(&r);
        break;
    default:
        r.bad = true;
    }
    if (!r.bad && out->id.len == 0) r.bad = true;
    if (r.bad || r.left != 0) {
        memset(out, 0, sizeof *out);
        return -EPROTO;
    }
    return 1;
}

/* ---- buffers -------------------------------------------------------------- */

int exec_wire_buf_reserve(struct exec_wire_buf *b, size_t more)
{
    if (b->off > 0 && b->cap - b->len < more) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->cap - b->len >= more) return 0;
    if (more > SIZE_MAX / 2 - b->len) return -ENOMEM;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < more) cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d) return -ENOMEM;
    b->data = d;
    b->cap = cap;
    return 0;
}

void exec_wire_buf_consume(struct exec_wire_buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len) b->off = b->len = 0;
}

void exec_wire_buf_fini(struct exec_wire_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* ---- encoding ------------------------------------------------------------- */

/* A frame is built in two passes over the same field list: one to size it
 * (w.out == NULL), one to write it, so that an oversized frame is refused
 * before anything is appended. */
struct wr {
    uint8_t *out;
    size_t n;
};

static void put_le(struct wr *w, uint64_t v, int bytes)
{
    if (w->out)
        for (int i = 0; i < bytes; i++) w->out[w->n + (size_t)i] = (uint8_t)(v >> (8 * i));
    w->n += (size_t)bytes;
}

static void wr_u8(struct wr *w, uint8_t v) { put_le(w, v, 1); }

static void wr_i64(struct wr *w, int64_t v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    put_le(w, u, 8);
}

static void wr_f64(struct wr *w, double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    put_le(w, u, 8);
}

static void wr_str(struct wr *w, const char *s)
{
    if (!s) {
        put_le(w, STR_ABSENT, 4);
        return;
    }
    size_t n = strlen(s);
    /* Longer than a frame: size the frame past the limit so it is refused. */
    if (n > WIRE_MAX_FRAME) n = WIRE_MAX_FRAME + 1;
    put_le(w, (uint32_t)n, 4);
    if (w->out) memcpy(w->out + w->n, s, n);
    w->n += n;
}

struct fields {
    enum exec_wire_type type;
    const char *id, *task, *args, *message, *result, *error_message;
    int64_t i1, i2, i3; /* timeout_ms | pid, started_at_ms | finished_at_ms, run_us */
    double fraction;
    bool ok;
    uint8_t error_type;
};

static void write_fields(struct wr *w, const struct fields *f)
{
    put_le(w, 0, 4); /* the length, patched by put_frame */
    wr_u8(w, (uint8_t)f->type);
    wr_str(w, f->id);
    switch (f->type) {
    case WIRE_JOB:
        wr_str(w, f->task);
        wr_str(w, f->args);
        wr_i64(w, f->i1);
        break;
    case WIRE_STARTED:
        wr_i64(w, f->i1);
        wr_i64(w, f->i2);
        break;
    case WIRE_PROGRESS:
        wr_f64(w, f->fraction);
        wr_str(w, f->message);
        break;
    case WIRE_DONE:
        wr_u8(w, f->ok ? 1 : 0);
        wr_str(w, f->result);
        wr_u8(w, f->error_type);
        wr_str(w, f->error_message);
        wr_i64(w, f->i2);
        wr_i64(w, f->i3);
        break;
    default: /* SKIP, SKIPPED: the id only */
        break;
    }
}

static int put_frame(struct exec_wire_buf *b, const struct fields *f)
{
    struct wr size = {0};
    write_fields(&size, f);
    if (size.n - WIRE_HEADER > WIRE_MAX_FRAME) return -EMSGSIZE;
    int rc = exec_wire_buf_reserve(b, size.n);
    if (rc < 0) return rc;
    struct wr w = {.out = b->data + b->len};
    write_fields(&w, f);
    struct wr len = {.out = b->data + b->len};
    put_le(&len, (uint32_t)(size.n - WIRE_HEADER), 4);
    b->len += size.n;
    return 0;
}

int exec_wire_put_job(struct exec_wire_buf *b, const char *id, const char *task, const char *args, int64_t timeout_ms)
{
    struct fields f = {.type = WIRE_JOB, .id = id, .task = task, .args = args, .i1 = timeout_ms};
    return put_frame(b, &f);
}

int exec_wire_put_id(struct exec_wire_buf *b, enum exec_wire_type type, const char *id)
{
    struct fields f = {.type = type, .id = id};
    return put_frame(b, &f);
}

int exec_wire_put_started(struct exec_wire_buf *b, const char *id, int64_t pid, int64_t started_at_ms)
{
    struct fields f = {.type = WIRE_STARTED, .id = id, .i1 = pid, .i2 = started_at_ms};
    return put_frame(b, &f);
}

int exec_wire_put_progress(struct exec_wire_buf *b, const char *id, double fraction, const char *message)
{
    struct fields f = {.type = WIRE_PROGRESS, .id = id, .fraction = fraction, .message = message};
    return put_frame(b, &f);
}

int exec_wire_put_done(struct exec_wire_buf *b, const char *id, bool ok, const char *result, uint8_t error_type,
                  const char *error_message, int64_t finished_at_ms, int64_t run_us)
{
    struct fields f = {.type = WIRE_DONE,
                       .id = id,
                       .ok = ok,
                       .result = result,
                       .error_type = error_type,
                       .error_message = error_message,
                       .i2 = finished_at_ms,
                       .i3 = run_us};
    return put_frame(b, &f);
}

int exec_wire_str_dup(const struct exec_wire_str *s, char **out)
{
    *out = NULL;
    if (!s->present) return 0;
    char *c = malloc((size_t)s->len + 1);
    if (!c) return -ENOMEM;
    memcpy(c, s->p, s->len);
    c[s->len] = '\0';
    *out = c;
    return 0;
}

bool exec_wire_str_eq(const struct exec_wire_str *s, const char *c)
{
    return s->present && strlen(c) == s->len && memcmp(s->p, c, s->len) == 0;
}
