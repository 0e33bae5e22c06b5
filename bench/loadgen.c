/*
 * loadgen - a small HTTP/1.1 keep-alive load generator for jobd's benchmark.
 *
 * DESIGN
 * Each worker thread owns one epoll instance and a slice of the connections;
 * workers share nothing but the read-only options and the request budget (an
 * atomic ticket counter in struct shared). The load is closed-loop: a
 * connection keeps `pipeline` requests in flight and takes a new ticket as soon
 * as a response completes. Responses are parsed incrementally (status line,
 * headers, then a Content-Length, chunked or read-until-close body); bodies are
 * skipped, never stored. Latency runs from the moment a request is queued for
 * sending to the moment its response's last byte is parsed, in nanoseconds,
 * kept exactly (one uint64_t per response) and sorted at the end.
 *
 * Connections are meant to be reused: `connections_opened` counts successful
 * connects, so it equals --connections only when the server honours keep-alive.
 * When the server closes a connection (Connection: close, or a bare FIN/RST)
 * the connection is reopened and counted again; requests that were in flight
 * on it are counted as errors.closed and never resent (a POST is not
 * idempotent). A connect failure retires that connection.
 *
 * Only loopback addresses are accepted: this tool exists to load a server on
 * the same machine.
 *
 * Output: one JSON line on stdout. Exit status 0 when at least one response
 * arrived, 1 otherwise or on bad usage.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RBUF_SIZE (64 * 1024) /* bytes; also the largest response head accepted */
#define MAX_HEADERS 16        /* extra --header options */
#define MAX_STATUS 600        /* status codes counted individually: [100, 600) */
#define MAX_CONNECTIONS 10000
#define MAX_THREADS 16
#define MAX_PIPELINE 128
#define TICK_MS 50 /* epoll timeout; timeouts and the deadline are checked this often */

struct opts {
    struct sockaddr_in addr;
    const char *host;
    int port;
    int connections;
    int threads;
    int pipeline;
    uint64_t requests; /* 0: no request limit (then duration_s > 0) */
    double duration_s; /* 0: no time limit (then requests > 0) */
    double timeout_s;  /* a request unanswered this long is an error */
    const char *method;
    const char *path;
    const char *body; /* NULL: none */
    const char *content_type;
    const char *headers[MAX_HEADERS];
    int nheaders;
    bool no_body_responses; /* HEAD: responses never carry a body */
    char *req;              /* the request, built once; owned, freed in main */
    size_t req_len;
};

/* Shared by all workers. Everything but `issued` is written before the workers
 * start and only read afterwards. */
struct shared {
    const struct opts *o;
    uint64_t start_ns;
    uint64_t deadline_ns;        /* 0: none */
    atomic_uint_fast64_t issued; /* tickets handed out; may overshoot requests */
};

/* Per worker; merged in main after the workers are joined. */
struct stats {
    uint64_t status[MAX_STATUS]; /* by HTTP status; [0] counts out-of-range codes */
    uint64_t responses;
    uint64_t *lat_ns; /* one entry per response; owned */
    size_t lat_len, lat_cap;
    uint64_t opened;          /* successful connects */
    uint64_t server_closes;   /* connections the server closed (any way) */
    uint64_t err_connect;     /* failed connects */
    uint64_t err_closed;      /* requests lost because the connection closed */
    uint64_t err_timeout;     /* requests unanswered after timeout_s */
    uint64_t err_parse;       /* requests lost to a malformed response */
    uint64_t bytes_in;
    uint64_t last_done_ns;    /* monotonic time of the last response */
};

enum conn_state { C_IDLE, C_CONNECTING, C_OPEN };

enum parse_state {
    P_HEAD,       /* status line and headers, up to the empty line */
    P_BODY_LEN,   /* `remaining` body bytes (Content-Length) */
    P_CHUNK_SIZE, /* a chunk-size line */
    P_CHUNK_DATA, /* `remaining` bytes of chunk data */
    P_CHUNK_END,  /* the CRLF after chunk data, `remaining` bytes of it */
    P_TRAILER,    /* trailer lines after the last chunk, up to the empty line */
    P_BODY_EOF,   /* no length: the body runs to the end of the connection */
};

struct conn {
    int fd; /* -1 when closed */
    uint32_t gen; /* bumped on every close, to drop stale epoll events */
    enum conn_state state;
    bool done; /* retired: no more work or connect failed */
    uint64_t since_ns; /* when the connect started */
    char *rbuf; /* RBUF_SIZE bytes; owned */
    size_t rlen;
    char *wbuf; /* pipeline * req_len bytes; owned */
    size_t wlen, woff;
    bool want_out; /* EPOLLOUT registered */
    uint64_t *sent_ns; /* ring of pipeline entries; owned */
    int head, inflight;
    enum parse_state ps;
    uint64_t remaining;
    int status;
    bool close_after; /* the current response ends the connection */
};

struct worker {
    struct shared *sh;
    int epfd;
    struct conn *conns;
    int nconns;
    int live; /* conns not retired */
    struct stats st;
    pthread_t tid;
    int rc; /* 0 or a negative errno */
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Returns true when one more request may be sent. */
static bool take_ticket(struct shared *sh)
{
    if (sh->deadline_ns && now_ns() >= sh->deadline_ns)
        return false;
    if (sh->o->requests && atomic_fetch_add(&sh->issued, 1) >= sh->o->requests)
        return false;
    return true;
}

static int stats_add_latency(struct stats *st, uint64_t ns)
{
    if (st->lat_len == st->lat_cap) {
        size_t cap = st->lat_cap ? st->lat_cap * 2 : 65536;
        uint64_t *p = realloc(st->lat_ns, cap * sizeof(*p));
        if (!p)
            return -ENOMEM;
        st->lat_ns = p;
        st->lat_cap = cap;
    }
    st->lat_ns[st->lat_len++] = ns;
    return 0;
}

static void conn_set_events(struct worker *w, struct conn *c, bool out)
{
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0),
                             .data.u64 = ((uint64_t)c->gen << 32) | (uint64_t)(c - w->conns)};
    /* MOD on a registered fd only fails on our own bug (EBADF/ENOENT). */
    if (epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        perror("loadgen: epoll_ctl MOD");
    c->want_out = out;
}

/* Closes the socket and forgets everything in flight; the caller has already
 * counted what was lost. */
static void conn_close(struct worker *w, struct conn *c)
{
    if (c->fd >= 0) {
        /* close() removes the fd from the epoll set; DEL first anyway so a
         * dup'ed descriptor could never keep it registered. Errors ignored:
         * the fd is going away either way. */
        (void)epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        (void)close(c->fd);
    }
    c->fd = -1;
    c->gen++;
    c->state = C_IDLE;
    c->rlen = 0;
    c->wlen = c->woff = 0;
    c->want_out = false;
    c->head = c->inflight = 0;
    c->ps = P_HEAD;
    c->remaining = 0;
    c->close_after = false;
}

static void conn_retire(struct worker *w, struct conn *c)
{
    conn_close(w, c);
    if (!c->done) {
        c->done = true;
        w->live--;
    }
}

/* Writes what is queued. Returns 0 (possibly with EPOLLOUT armed) or a
 * negative errno when the connection is broken. */
static int conn_flush(struct worker *w, struct conn *c)
{
    while (c->woff < c->wlen) {
        ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!c->want_out)
                    conn_set_events(w, c, true);
                return 0;
            }
            return -errno;
        }
        c->woff += (size_t)n;
    }
    c->wlen = c->woff = 0;
    if (c->want_out)
        conn_set_events(w, c, false);
    return 0;
}

static void conn_lost(struct worker *w, struct conn *c, bool by_server);
static void record_response(struct worker *w, struct conn *c);

/* Tops the pipeline up to `pipeline` requests while tickets last, and retires
 * the connection once it is idle with no ticket left. */
static void conn_fill(struct worker *w, struct conn *c)
{
    const struct opts *o = w->sh->o;
    bool queued = false;
    while (c->inflight < o->pipeline && take_ticket(w->sh)) {
        /* wbuf holds pipeline requests, and only requests in flight are in it */
        memcpy(c->wbuf + c->wlen, o->req, o->req_len);
        c->wlen += o->req_len;
        c->sent_ns[(c->head + c->inflight) % o->pipeline] = now_ns();
        c->inflight++;
        queued = true;
    }
    if (c->inflight == 0) {
        conn_retire(w, c);
        return;
    }
    if (queued && conn_flush(w, c) < 0)
        conn_lost(w, c, true);
}

static void conn_ready(struct worker *w, struct conn *c)
{
    c->state = C_OPEN;
    w->st.opened++;
    conn_set_events(w, c, false);
    conn_fill(w, c);
}

/* Starts a connection. Retires it when the connect fails at once. */
static void conn_open(struct worker *w, struct conn *c)
{
    const struct opts *o = w->sh->o;
    int one = 1;
    struct epoll_event ev;

    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        goto fail;
    /* Without NODELAY a pipelined request could wait for the previous ACK. */
    if (setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
        goto fail;
    c->since_ns = now_ns();
    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.u64 = ((uint64_t)c->gen << 32) | (uint64_t)(c - w->conns);
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        goto fail;
    c->want_out = true;
    if (connect(c->fd, (const struct sockaddr *)&o->addr, sizeof(o->addr)) == 0) {
        conn_ready(w, c);
        return;
    }
    if (errno == EINPROGRESS) {
        c->state = C_CONNECTING;
        return;
    }
fail:
    w->st.err_connect++;
    conn_retire(w, c);
}

/* The connection ended (EOF, reset, write error, or a response that said
 * Connection: close): a read-until-close body is complete, anything else in
 * flight is lost. Reopens it; conn_fill retires it if no work remains.
 * by_server: count it as a close the server made. */
static void conn_lost(struct worker *w, struct conn *c, bool by_server)
{
    if (c->ps == P_BODY_EOF && c->inflight > 0)
        record_response(w, c);
    if (by_server)
        w->st.server_closes++;
    w->st.err_closed += (uint64_t)c->inflight;
    conn_close(w, c);
    conn_open(w, c);
}

static void record_response(struct worker *w, struct conn *c)
{
    const struct opts *o = w->sh->o;
    uint64_t t = now_ns();
    uint64_t lat = t - c->sent_ns[c->head];

    c->head = (c->head + 1) % o->pipeline;
    c->inflight--;
    w->st.responses++;
    w->st.status[c->status >= 100 && c->status < MAX_STATUS ? c->status : 0]++;
    w->st.last_done_ns = t;
    if (stats_add_latency(&w->st, lat) < 0 && w->rc == 0)
        w->rc = -ENOMEM;
    c->ps = P_HEAD;
    c->remaining = 0;
}

/* Case-insensitive: is `tok` one of the comma-separated tokens in v[0..n)? */
static bool has_token(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok);
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tl && strncasecmp(v + s, tok, tl) == 0)
            return true;
    }
    return false;
}

static bool header_is(const char *line, size_t colon, const char *name)
{
    return colon == strlen(name) && strncasecmp(line, name, colon) == 0;
}

/* Parses a response head h[0..n), which ends just before its empty line.
 * Sets c->status, c->close_after and the next parse state. Returns 0 or
 * -EPROTO. */
static int parse_head(const struct opts *o, struct conn *c, const char *h, size_t n)
{
    const char *end = h + n;
    const char *eol = memmem(h, n, "\r\n", 2);
    bool chunked = false, has_len = false, keep_alive = false;
    uint64_t len = 0;

    if (!eol)
        eol = end;
    /* "HTTP/1.x SSS" at least */
    if (eol - h < 12 || memcmp(h, "HTTP/1.", 7) != 0 || h[8] != ' ')
        return -EPROTO;
    for (int i = 9; i < 12; i++)
        if (h[i] < '0' || h[i] > '9')
            return -EPROTO;
    c->status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
    bool http10 = h[7] == '0';

    for (const char *line = eol + 2; line < end;) {
        const char *le = memmem(line, (size_t)(end - line), "\r\n", 2);
        if (!le)
            le = end;
        const char *colon = memchr(line, ':', (size_t)(le - line));
        if (colon) {
            size_t cl = (size_t)(colon - line);
            const char *v = colon + 1;
            while (v < le && (*v == ' ' || *v == '\t'))
                v++;
            size_t vn = (size_t)(le - v);
            if (header_is(line, cl, "content-length")) {
                if (vn == 0)
                    return -EPROTO;
                len = 0;
                for (size_t i = 0; i < vn && v[i] != ' ' && v[i] != '\t'; i++) {
                    if (v[i] < '0' || v[i] > '9' || len > UINT64_MAX / 10 - 10)
                        return -EPROTO;
                    len = len * 10 + (uint64_t)(v[i] - '0');
                }
                has_len = true;
            } else if (header_is(line, cl, "transfer-encoding")) {
                chunked = has_token(v, vn, "chunked");
            } else if (header_is(line, cl, "connection")) {
                if (has_token(v, vn, "close"))
                    c->close_after = true;
                if (has_token(v, vn, "keep-alive"))
                    keep_alive = true;
            }
        }
        line = le + 2;
    }
    if (http10 && !keep_alive)
        c->close_after = true;

    if (c->status < 200 || c->status == 204 || c->status == 304 || o->no_body_responses)
        c->ps = P_HEAD; /* no body: complete (or, for 1xx, interim) */
    else if (chunked)
        c->ps = P_CHUNK_SIZE;
    else if (has_len) {
        c->remaining = len;
        c->ps = len ? P_BODY_LEN : P_HEAD;
    } else {
        c->ps = P_BODY_EOF;
        c->close_after = true;
    }
    return 0;
}

/* Parses what is in rbuf. Returns 0 when more bytes are needed, 1 when a
 * response ended the connection (Connection: close), -EPROTO on garbage. */
static int conn_parse(struct worker *w, struct conn *c)
{
    const struct opts *o = w->sh->o;
    char *b = c->rbuf;
    size_t pos = 0, len = c->rlen;
    int rc = 0;

    while (pos < len) {
        size_t avail = len - pos;
        if (c->inflight == 0) { /* bytes nobody asked for */
            rc = -EPROTO;
            goto out;
        }
        switch (c->ps) {
        case P_HEAD: {
            char *e = memmem(b + pos, avail, "\r\n\r\n", 4);
            if (!e)
                goto out;
            c->close_after = false;
            rc = parse_head(o, c, b + pos, (size_t)(e - (b + pos)));
            if (rc < 0)
                goto out;
            pos = (size_t)(e - b) + 4;
            if (c->status >= 100 && c->status < 200)
                break; /* interim response: the real one follows */
            if (c->ps == P_HEAD) {
                record_response(w, c);
                if (c->close_after) {
                    rc = 1;
                    goto out;
                }
            }
            break;
        }
        case P_BODY_LEN:
        case P_CHUNK_DATA: {
            uint64_t take = avail < c->remaining ? avail : c->remaining;
            pos += take;
            c->remaining -= take;
            if (c->remaining)
                break;
            if (c->ps == P_CHUNK_DATA) {
                c->ps = P_CHUNK_END;
                c->remaining = 2;
                break;
            }
            record_response(w, c);
            if (c->close_after) {
                rc = 1;
                goto out;
            }
            break;
        }
        case P_CHUNK_END:
            if (b[pos] != (c->remaining == 2 ? '\r' : '\n')) {
                rc = -EPROTO;
                goto out;
            }
            pos++;
            if (--c->remaining == 0)
                c->ps = P_CHUNK_SIZE;
            break;
        case P_CHUNK_SIZE: {
            char *e = memmem(b + pos, avail, "\r\n", 2);
            if (!e)
                goto out;
            uint64_t size = 0;
            size_t digits = 0;
            for (char *p = b + pos; p < e; p++, digits++) {
                int d;
                if (*p >= '0' && *p <= '9')
                    d = *p - '0';
                else if (*p >= 'a' && *p <= 'f')
                    d = *p - 'a' + 10;
                else if (*p >= 'A' && *p <= 'F')
                    d = *p - 'A' + 10;
                else
                    break; /* chunk extension or whitespace */
                if (size > (UINT64_MAX >> 4)) {
                    rc = -EPROTO;
                    goto out;
                }
                size = size * 16 + (uint64_t)d;
            }
            if (digits == 0) {
                rc = -EPROTO;
                goto out;
            }
            pos = (size_t)(e - b) + 2;
            c->remaining = size;
            c->ps = size ? P_CHUNK_DATA : P_TRAILER;
            break;
        }
        case P_TRAILER: {
            char *e = memmem(b + pos, avail, "\r\n", 2);
            if (!e)
                goto out;
            bool empty = e == b + pos;
            pos = (size_t)(e - b) + 2;
            if (!empty)
                break;
            record_response(w, c);
            if (c->close_after) {
                rc = 1;
                goto out;
            }
            break;
        }
        case P_BODY_EOF:
            pos = len;
            break;
        }
    }
out:
    if (rc == 0) {
        memmove(b, b + pos, len - pos);
        c->rlen = len - pos;
        if (c->rlen == RBUF_SIZE)
            rc = -EPROTO; /* a head or chunk-size line that fills the buffer */
    }
    return rc;
}

static void conn_on_readable(struct worker *w, struct conn *c)
{
    ssize_t n;
    int rc;

    do {
        n = recv(c->fd, c->rbuf + c->rlen, RBUF_SIZE - c->rlen, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return;
    if (n <= 0) { /* EOF, reset, or another error: the connection is gone */
        conn_lost(w, c, true);
        return;
    }
    w->st.bytes_in += (uint64_t)n;
    c->rlen += (size_t)n;
    rc = conn_parse(w, c);
    if (rc < 0) {
        w->st.err_parse += (uint64_t)c->inflight;
        c->inflight = 0; /* counted here, not again as closed */
        c->ps = P_HEAD;
        conn_lost(w, c, false);
        return;
    }
    if (rc == 1) { /* the server said Connection: close */
        w->st.server_closes++;
        conn_lost(w, c, false);
        return;
    }
    conn_fill(w, c);
}

static void conn_on_connected(struct worker *w, struct conn *c)
{
    int err = 0;
    socklen_t el = sizeof(err);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err != 0) {
        w->st.err_connect++;
        conn_retire(w, c);
        return;
    }
    conn_ready(w, c);
}

/* Times out requests (and connects) older than timeout_s. */
static void worker_check_timeouts(struct worker *w)
{
    const struct opts *o = w->sh->o;
    uint64_t t = now_ns();
    uint64_t limit = (uint64_t)(o->timeout_s * 1e9);

    for (int i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        if (c->done)
            continue;
        if (c->state == C_CONNECTING && t - c->since_ns > limit) {
            w->st.err_connect++;
            conn_retire(w, c);
        } else if (c->state == C_OPEN && c->inflight > 0 && t - c->sent_ns[c->head] > limit) {
            w->st.err_timeout += (uint64_t)c->inflight;
            c->inflight = 0;
            c->ps = P_HEAD;
            conn_lost(w, c, false);
        }
    }
}

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    struct epoll_event evs[256];
    uint64_t next_check = now_ns() + TICK_MS * 1000000u;

    for (int i = 0; i < w->nconns; i++)
        conn_open(w, &w->conns[i]);
    while (w->live > 0 && w->rc == 0) {
        int n = epoll_wait(w->epfd, evs, 256, TICK_MS);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            w->rc = -errno;
            goto out;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = &w->conns[(uint32_t)evs[i].data.u64];
            uint32_t gen = (uint32_t)(evs[i].data.u64 >> 32);
            uint32_t e = evs[i].events;
            if (gen != c->gen || c->fd < 0)
                continue; /* the connection was closed since */
            if (c->state == C_CONNECTING) {
                conn_on_connected(w, c);
                continue;
            }
            if (e & (EPOLLIN | EPOLLERR | EPOLLHUP))
                conn_on_readable(w, c);
            if (gen == c->gen && c->fd >= 0 && (e & EPOLLOUT) && conn_flush(w, c) < 0)
                conn_lost(w, c, true);
        }
        uint64_t t = now_ns();
        if (t >= next_check) {
            worker_check_timeouts(w);
            next_check = t + TICK_MS * 1000000u;
        }
    }
out:
    for (int i = 0; i < w->nconns; i++)
        conn_close(w, &w->conns[i]);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v[0..n), in milliseconds. */
static double pct_ms(const uint64_t *v, size_t n, double p)
{
    if (n == 0)
        return 0.0;
    size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return (double)v[rank - 1] / 1e6;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loadgen --port P [options]\n"
            "  --host H           loopback address (default 127.0.0.1)\n"
            "  --port P           server port (required)\n"
            "  --connections C    keep-alive connections (default 64)\n"
            "  --threads T        worker threads (default 1)\n"
            "  --requests N       stop after N requests\n"
            "  --duration S       stop sending after S seconds (with --requests: whichever first)\n"
            "  --method M         default GET, or POST with --body\n"
            "  --path P           default /\n"
            "  --body B           request body (sent with Content-Length)\n"
            "  --content-type T   default application/json\n"
            "  --header 'K: V'    extra request header (repeatable)\n"
            "  --pipeline N       requests in flight per connection (default 1)\n"
            "  --timeout S        per-request timeout (default 10)\n"
            "  --sequential-wait  one connection, POST /v1/jobs?wait=5 {\"task\":\"noop\"},\n"
            "                     one at a time (default --requests 2000)\n");
}

/* Parses a positive number; returns 0 or -EINVAL. */
static int parse_num(const char *s, double min, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= min && v <= max))
        return -EINVAL;
    *out = v;
    return 0;
}

static int opts_parse(int argc, char **argv, struct opts *o)
{
    enum { O_HOST = 256, O_PORT, O_CONN, O_THREADS, O_REQ, O_DUR, O_METHOD, O_PATH, O_BODY,
           O_CTYPE, O_HEADER, O_PIPE, O_TIMEOUT, O_SEQ, O_HELP };
    static const struct option lo[] = {
        {"host", required_argument, NULL, O_HOST},
        {"port", required_argument, NULL, O_PORT},
        {"connections", required_argument, NULL, O_CONN},
        {"threads", required_argument, NULL, O_THREADS},
        {"requests", required_argument, NULL, O_REQ},
        {"duration", required_argument, NULL, O_DUR},
        {"method", required_argument, NULL, O_METHOD},
        {"path", required_argument, NULL, O_PATH},
        {"body", required_argument, NULL, O_BODY},
        {"content-type", required_argument, NULL, O_CTYPE},
        {"header", required_argument, NULL, O_HEADER},
        {"pipeline", required_argument, NULL, O_PIPE},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"sequential-wait", no_argument, NULL, O_SEQ},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    bool seq = false, conn_set = false, req_set = false;
    double v;
    int opt, rc = 0;

    *o = (struct opts){.host = "127.0.0.1", .connections = 64, .threads = 1, .pipeline = 1,
                       .timeout_s = 10, .content_type = "application/json"};
    while ((opt = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (opt) {
        case O_HOST: o->host = optarg; break;
        case O_PORT:
            if ((rc = parse_num(optarg, 1, 65535, &v)) < 0)
                goto bad;
            o->port = (int)v;
            break;
        case O_CONN:
            if ((rc = parse_num(optarg, 1, MAX_CONNECTIONS, &v)) < 0)
                goto bad;
            o->connections = (int)v;
            conn_set = true;
            break;
        case O_THREADS:
            if ((rc = parse_num(optarg, 1, MAX_THREADS, &v)) < 0)
                goto bad;
            o->threads = (int)v;
            break;
        case O_REQ:
            if ((rc = parse_num(optarg, 1, 1e12, &v)) < 0)
                goto bad;
            o->requests = (uint64_t)v;
            req_set = true;
            break;
        case O_DUR:
            if ((rc = parse_num(optarg, 0.001, 86400, &v)) < 0)
                goto bad;
            o->duration_s = v;
            break;
        case O_METHOD: o->method = optarg; break;
        case O_PATH: o->path = optarg; break;
        case O_BODY: o->body = optarg; break;
        case O_CTYPE: o->content_type = optarg; break;
        case O_HEADER:
            if (o->nheaders == MAX_HEADERS || !strchr(optarg, ':')) {
                rc = -EINVAL;
                goto bad;
            }
            o->headers[o->nheaders++] = optarg;
            break;
        case O_PIPE:
            if ((rc = parse_num(optarg, 1, MAX_PIPELINE, &v)) < 0)
                goto bad;
            o->pipeline = (int)v;
            break;
        case O_TIMEOUT:
            if ((rc = parse_num(optarg, 0.01, 3600, &v)) < 0)
                goto bad;
            o->timeout_s = v;
            break;
        case O_SEQ: seq = true; break;
        case O_HELP: usage(stdout); exit(0);
        default: rc = -EINVAL; goto out;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "loadgen: unexpected argument '%s'\n", argv[optind]);
        rc = -EINVAL;
        goto out;
    }
    if (seq) {
        if (conn_set && o->connections != 1) {
            fprintf(stderr, "loadgen: --sequential-wait uses one connection\n");
            rc = -EINVAL;
            goto out;
        }
        o->connections = 1;
        o->threads = 1;
        o->pipeline = 1;
        if (!o->method)
            o->method = "POST";
        if (!o->path)
            o->path = "/v1/jobs?wait=5";
        if (!o->body)
            o->body = "{\"task\":\"noop\"}";
        if (!req_set)
            o->requests = 2000;
    }
    if (!o->method)
        o->method = o->body ? "POST" : "GET";
    if (!o->path)
        o->path = "/";
    o->no_body_responses = strcmp(o->method, "HEAD") == 0;
    if (o->port == 0) {
        fprintf(stderr, "loadgen: --port is required\n");
        rc = -EINVAL;
        goto out;
    }
    if (o->requests == 0 && o->duration_s == 0) {
        fprintf(stderr, "loadgen: give --requests, --duration or both\n");
        rc = -EINVAL;
        goto out;
    }
    if (o->threads > o->connections)
        o->threads = o->connections;

    o->addr.sin_family = AF_INET;
    o->addr.sin_port = htons((uint16_t)o->port);
    const char *ip = strcmp(o->host, "localhost") == 0 ? "127.0.0.1" : o->host;
    if (inet_pton(AF_INET, ip, &o->addr.sin_addr) != 1 ||
        (ntohl(o->addr.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "loadgen: --host must be a loopback IPv4 address (127.x.y.z), not '%s'\n",
                o->host);
        rc = -EINVAL;
        goto out;
    }
    goto out;
bad:
    fprintf(stderr, "loadgen: bad value for --%s: '%s'\n", lo[opt - O_HOST].name, optarg);
out:
    if (rc < 0)
        usage(stderr);
    return rc;
}

/* Builds the request once; every connection sends copies of it. */
static int opts_build_request(struct opts *o)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    int rc = 0;

    if (!f)
        return -errno;
    fprintf(f, "%s %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: jobd-loadgen\r\n", o->method, o->path,
            o->host, o->port);
    for (int i = 0; i < o->nheaders; i++)
        fprintf(f, "%s\r\n", o->headers[i]);
    if (o->body)
        fprintf(f, "Content-Type: %s\r\nContent-Length: %zu\r\n\r\n%s", o->content_type,
                strlen(o->body), o->body);
    else if (strcmp(o->method, "POST") == 0 || strcmp(o->method, "PUT") == 0)
        fputs("Content-Length: 0\r\n\r\n", f);
    else
        fputs("\r\n", f);
    if (fclose(f) != 0) {
        rc = -ENOMEM;
        free(buf);
        goto out;
    }
    o->req = buf;
    o->req_len = len;
out:
    return rc;
}

static int worker_init(struct worker *w, struct shared *sh, int nconns)
{
    const struct opts *o = sh->o;
    int rc = 0;

    memset(w, 0, sizeof(*w));
    w->sh = sh;
    w->nconns = w->live = nconns;
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (w->epfd < 0)
        return -errno;
    w->conns = calloc((size_t)nconns, sizeof(*w->conns));
    if (!w->conns) {
        rc = -ENOMEM;
        goto out;
    }
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &w->conns[i];
        c->fd = -1;
        c->rbuf = malloc(RBUF_SIZE);
        c->wbuf = malloc((size_t)o->pipeline * o->req_len);
        c->sent_ns = calloc((size_t)o->pipeline, sizeof(*c->sent_ns));
        if (!c->rbuf || !c->wbuf || !c->sent_ns) {
            rc = -ENOMEM;
            goto out;
        }
    }
out:
    return rc;
}

/* Accepts a worker that worker_init left half-built. */
static void worker_free(struct worker *w)
{
    if (w->conns)
        for (int i = 0; i < w->nconns; i++) {
            free(w->conns[i].rbuf);
            free(w->conns[i].wbuf);
            free(w->conns[i].sent_ns);
        }
    free(w->conns);
    free(w->st.lat_ns);
    if (w->epfd >= 0)
        (void)close(w->epfd);
}

/* Merges src into dst; takes src's latencies. Returns 0 or -ENOMEM. */
static int stats_merge(struct stats *dst, struct stats *src)
{
    for (int i = 0; i < MAX_STATUS; i++)
        dst->status[i] += src->status[i];
    dst->responses += src->responses;
    dst->opened += src->opened;
    dst->server_closes += src->server_closes;
    dst->err_connect += src->err_connect;
    dst->err_closed += src->err_closed;
    dst->err_timeout += src->err_timeout;
    dst->err_parse += src->err_parse;
    dst->bytes_in += src->bytes_in;
    if (src->last_done_ns > dst->last_done_ns)
        dst->last_done_ns = src->last_done_ns;
    if (!dst->lat_ns) {
        dst->lat_ns = src->lat_ns;
        dst->lat_len = src->lat_len;
        dst->lat_cap = src->lat_cap;
        src->lat_ns = NULL;
        return 0;
    }
    if (src->lat_len) {
        uint64_t *p = realloc(dst->lat_ns, (dst->lat_len + src->lat_len) * sizeof(*p));
        if (!p)
            return -ENOMEM;
        memcpy(p + dst->lat_len, src->lat_ns, src->lat_len * sizeof(*p));
        dst->lat_ns = p;
        dst->lat_len += src->lat_len;
        dst->lat_cap = dst->lat_len;
    }
    return 0;
}

static void report(const struct opts *o, const struct stats *st, double seconds)
{
    double sum = 0;
    for (size_t i = 0; i < st->lat_len; i++)
        sum += (double)st->lat_ns[i];
    printf("{\"requests\": %llu, \"seconds\": %.3f, \"rps\": %.1f, \"status\": {",
           (unsigned long long)st->responses, seconds,
           seconds > 0 ? (double)st->responses / seconds : 0.0);
    const char *sep = "";
    for (int i = 0; i < MAX_STATUS; i++) {
        if (!st->status[i])
            continue;
        if (i == 0)
            printf("%s\"other\": %llu", sep, (unsigned long long)st->status[i]);
        else
            printf("%s\"%d\": %llu", sep, i, (unsigned long long)st->status[i]);
        sep = ", ";
    }
    printf("}, \"p50_ms\": %.3f, \"p90_ms\": %.3f, \"p99_ms\": %.3f, \"max_ms\": %.3f, "
           "\"mean_ms\": %.3f, ",
           pct_ms(st->lat_ns, st->lat_len, 50), pct_ms(st->lat_ns, st->lat_len, 90),
           pct_ms(st->lat_ns, st->lat_len, 99), pct_ms(st->lat_ns, st->lat_len, 100),
           st->lat_len ? sum / (double)st->lat_len / 1e6 : 0.0);
    printf("\"connections\": %d, \"connections_opened\": %llu, \"server_closes\": %llu, "
           "\"errors\": {\"connect\": %llu, \"closed\": %llu, \"timeout\": %llu, \"parse\": %llu}, "
           "\"pipeline\": %d, \"threads\": %d, \"bytes_in\": %llu}\n",
           o->connections, (unsigned long long)st->opened, (unsigned long long)st->server_closes,
           (unsigned long long)st->err_connect, (unsigned long long)st->err_closed,
           (unsigned long long)st->err_timeout, (unsigned long long)st->err_parse, o->pipeline,
           o->threads, (unsigned long long)st->bytes_in);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    struct opts o;
    struct shared sh;
    struct worker *ws = NULL;
    struct stats total;
    int nw = 0, started = 0, rc = 1;

    memset(&total, 0, sizeof(total));
    if (opts_parse(argc, argv, &o) < 0)
        return 1;
    if (opts_build_request(&o) < 0) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 1;
    }
    /* send() uses MSG_NOSIGNAL; this covers anything else that might write. */
    signal(SIGPIPE, SIG_IGN);

    sh.o = &o;
    atomic_init(&sh.issued, 0);
    nw = o.threads;
    ws = calloc((size_t)nw, sizeof(*ws));
    if (!ws)
        goto out;
    for (int i = 0; i < nw; i++)
        ws[i].epfd = -1; /* so worker_free skips workers never set up */
    for (int i = 0; i < nw; i++) {
        int share = o.connections / nw + (i < o.connections % nw);
        if (worker_init(&ws[i], &sh, share) < 0) {
            fprintf(stderr, "loadgen: cannot set up worker %d: out of memory or descriptors\n", i);
            goto out;
        }
    }

    sh.start_ns = now_ns();
    sh.deadline_ns = o.duration_s > 0 ? sh.start_ns + (uint64_t)(o.duration_s * 1e9) : 0;
    for (started = 0; started < nw; started++) {
        int err = pthread_create(&ws[started].tid, NULL, worker_run, &ws[started]);
        if (err) {
            fprintf(stderr, "loadgen: pthread_create: %s\n", strerror(err));
            break;
        }
    }
    for (int i = 0; i < started; i++) {
        /* join cannot fail for a joinable thread we created */
        (void)pthread_join(ws[i].tid, NULL);
        if (ws[i].rc < 0)
            fprintf(stderr, "loadgen: worker %d: %s\n", i, strerror(-ws[i].rc));
        if (stats_merge(&total, &ws[i].st) < 0) {
            fprintf(stderr, "loadgen: out of memory\n");
            goto out;
        }
    }
    if (started < nw)
        goto out;

    uint64_t end = total.last_done_ns ? total.last_done_ns : now_ns();
    qsort(total.lat_ns, total.lat_len, sizeof(*total.lat_ns), cmp_u64);
    report(&o, &total, (double)(end - sh.start_ns) / 1e9);
    if (total.responses == 0)
        fprintf(stderr, "loadgen: no response from %s:%d (connect errors: %llu)\n", o.host,
                o.port, (unsigned long long)total.err_connect);
    rc = total.responses ? 0 : 1;
out:
    if (ws)
        for (int i = 0; i < nw; i++)
            worker_free(&ws[i]);
    free(ws);
    free(total.lat_ns);
    free(o.req);
    return rc;
}
