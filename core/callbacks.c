/* callbacks.c - callback_url deliveries: the finished job (or batch) is
 * POSTed to its callback_url, off the request path, at least once.
 *
 * DESIGN. The store writer queues a delivery row in the transaction that
 * ends a job with a callback_url (or finishes a batch with one) and sets its
 * callback_status to "pending"; so a delivery survives any crash once the
 * job's end is durable. One delivery thread (jobd-callbacks) drives libcurl's
 * multi interface, up to CB_MAX_INFLIGHT POSTs at once:
 *
 *   loop: when asked to (a kick, a slot freed, a due time reached), read the
 *         deliveries with the earliest next_at_ms (store_deliveries_next) and
 *         start the due ones that are not in flight; curl_multi_perform;
 *         settle each finished transfer; curl_multi_poll until the earliest
 *         next_at_ms, a socket event, a curl timer, or curl_multi_wakeup
 *         (a kick, a recorded outcome, stop).
 *
 * Each POST carries the JSON of the job (job_to_json) or of the batch
 * (core_batch_to_json) as it is when the attempt starts, with the headers
 * Content-Type, User-Agent, Jobd-Event (job.finished | batch.finished),
 * Jobd-Delivery (the delivery row's id: the same across one delivery's
 * attempts; SQLite may reuse it once the row is deleted, so receivers should
 * drop duplicates by the job or batch id instead), Jobd-Attempt (1, 2, ...)
 * and, with a secret, Jobd-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret,
 * "<t>.<body>")>.
 * Only http and https, no redirects (a 3xx is a failure), CURLOPT_TIMEOUT_MS
 * per attempt. A 2xx is delivered; anything else is a failed attempt: retried
 * after backoff * 2^(attempt - 1), capped at CB_BACKOFF_CAP_MS, plus 0-25%
 * jitter, until max_attempts; then callback_status becomes "failed". A job or
 * batch that no longer exists (deleted, pruned) fails at once.
 *
 * In flight, exactly once: a delivery's row stays in the table, due, while
 * its POST runs, so every scan sees it again. A slot (slots[], under `lock`)
 * holds its id from the moment it is started until the store has committed
 * the attempt's outcome: the slot is freed only in the done callback of
 * store_delivery_record (writer thread), and a scan after that reads the
 * committed row (or none). So an attempt is never started twice, and the
 * count of slots in use bounds the POSTs in flight.
 *
 * Restart: stop abandons the transfers in flight without recording anything;
 * their rows are still due, and the next start (its first scan) POSTs them
 * again - at least once, like the jobs themselves.
 *
 * Threads and ownership:
 *   - `lock` guards slots[].id, rescan, stop and hold_until_ms; it is never
 *     held while calling the store or libcurl.
 *   - the delivery thread alone owns the multi handle (except
 *     curl_multi_wakeup, which libcurl allows from any thread), xfers[],
 *     scan[] and rng.
 *   - everything else in struct core_callbacks is immutable after start.
 *   - c->callbacks is published with an atomic store before the thread
 *     starts and withdrawn at stop; kicks (store writer callbacks) read it
 *     with an atomic load. Stop frees the struct only after store_sync(): every
 *     writer callback that could still hold the pointer (a kick, a recorded
 *     outcome) has then returned. So kicks must come from the store writer's
 *     callbacks only (they do: terminal_done and on_store_event).
 */
#include <curl/curl.h>
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "../common/version.h"
#include "core_int.h"

#define CB_MAX_INFLIGHT 32
#define CB_SCAN_MAX (2 * CB_MAX_INFLIGHT) /* at most half of a scan is in flight */
#define CB_BACKOFF_CAP_MS (10 * 60 * 1000LL)
#define CB_DEFAULT_TIMEOUT_MS 10000
#define CB_DEFAULT_ATTEMPTS 10
#define CB_DEFAULT_BACKOFF_MS 1000
#define CB_IDLE_SCAN_MS 5000  /* scan at least this often (wall clock jumps, missed kicks) */
#define CB_STORE_RETRY_MS 1000 /* after a failed store read or record */

/* Test seams (tests/unit/test_callbacks.c): declared here, not in a header. */
int64_t core__callback_delay_ms(int64_t backoff_ms, int attempts, uint64_t rnd);
int core__callback_sign(const char *secret, int64_t t, const char *body, char out[65]);

struct core_callbacks;

#define CB_RECENT 256 /* settled deliveries remembered, more than can settle during one scan */

/* One delivery in flight. */
struct cb_slot {
    struct core_callbacks *cbs;
    int64_t id; /* the delivery's id, 0 = free (lock) */
};

/* The transfer of one attempt (delivery thread). */
struct cb_xfer {
    int slot;
    struct store_delivery d; /* as read; d.attempts = attempts before this one */
    CURL *easy;
    struct curl_slist *headers;
    char *body; /* the POSTed JSON, kept for the transfer's life (CURLOPT_POSTFIELDS does not copy) */
    char errbuf[CURL_ERROR_SIZE];
};

struct core_callbacks {
    struct core *c;
    /* Immutable after start. */
    char *secret; /* NULL = unsigned */
    int64_t timeout_ms, backoff_ms;
    int max_attempts;
    CURLM *multi;
    pthread_t thread;

    pthread_mutex_t lock; /* guards slots[].id, rescan, stop, hold_until_ms, settled, recent */
    struct cb_slot slots[CB_MAX_INFLIGHT];
    /* Deliveries settled lately, numbered: a scan that read the table
     * before a delivery's outcome committed, but looks at its slot after the
     * slot was freed, would start it again (seen: one job called back twice).
     * A scan skips the ids settled after it began (ids are never reused). */
    uint64_t settled;
    struct {
        int64_t id;
        uint64_t n; /* its `settled` number */
    } recent[CB_RECENT];
    bool rescan;           /* something may be due: scan before the next poll */
    bool stop;             /* the thread should exit */
    int64_t hold_until_ms; /* wall ms: no scan before (after a store failure) */

    /* The delivery thread's own. */
    struct cb_xfer *xfers[CB_MAX_INFLIGHT]; /* by slot; NULL while the slot waits for its record */
    struct store_delivery scan[CB_SCAN_MAX];
    uint64_t rng;
};

/* ---- pure helpers ----------------------------------------------------------- */

/* The wait before the next attempt after `attempts` failed ones (>= 1):
 * backoff_ms * 2^(attempts - 1), capped at CB_BACKOFF_CAP_MS, plus rnd's
 * share of 0..25% of that. */
int64_t core__callback_delay_ms(int64_t backoff_ms, int attempts, uint64_t rnd)
{
    int64_t d = backoff_ms > 0 ? backoff_ms : 1;
    for (int i = 1; i < attempts && d < CB_BACKOFF_CAP_MS; i++) d *= 2;
    if (d > CB_BACKOFF_CAP_MS) d = CB_BACKOFF_CAP_MS;
    return d + (int64_t)(rnd % (uint64_t)(d / 4 + 1));
}

/* out = lowercase hex HMAC-SHA256(secret, "<t>.<body>"). Returns 0 or -ENOMEM. */
int core__callback_sign(const char *secret, int64_t t, const char *body, char out[65])
{
    size_t blen = strlen(body);
    char *msg = malloc(blen + 32);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mlen = 0;
    int ret = -ENOMEM;
    if (!msg) goto out;
    int hlen = snprintf(msg, 32, "%lld.", (long long)t);
    memcpy(msg + hlen, body, blen);
    if (!HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)msg, (size_t)hlen + blen, mac,
              &mlen) ||
        mlen != 32)
        goto out;
    for (unsigned int i = 0; i < mlen; i++) snprintf(out + 2 * i, 3, "%02x", mac[i]);
    ret = 0;
out:
    free(msg);
    return ret;
}

static uint64_t rng_next(uint64_t *s) /* xorshift64* */
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

/* ---- recording an attempt's outcome ----------------------------------------- */

static void wake(struct core_callbacks *cbs)
{
    CURLMcode mc = curl_multi_wakeup(cbs->multi);
    if (mc != CURLM_OK) LOG_WARN("callbacks: cannot wake the delivery thread: %s", curl_multi_strerror(mc));
}

/* Frees a slot and asks for a scan; after a store failure, not before
 * CB_STORE_RETRY_MS (the row is unchanged and due: no busy loop). */
static void slot_release(struct cb_slot *slot, bool store_failed)
{
    struct core_callbacks *cbs = slot->cbs;
    pthread_mutex_lock(&cbs->lock);
    cbs->settled++;
    cbs->recent[cbs->settled % CB_RECENT].id = slot->id;
    cbs->recent[cbs->settled % CB_RECENT].n = cbs->settled;
    slot->id = 0;
    cbs->rescan = true;
    if (store_failed) cbs->hold_until_ms = clock_wall_ms() + CB_STORE_RETRY_MS;
    pthread_mutex_unlock(&cbs->lock);
}

/* store_delivery_record's done callback (writer thread): the outcome is
 * committed (or not: then the row is as it was, and is tried again). */
static void recorded(void *ctx, int rc)
{
    struct cb_slot *slot = ctx;
    struct core_callbacks *cbs = slot->cbs;
    if (rc < 0) LOG_WARN("callbacks: recording a delivery attempt failed (%s); it will be repeated", strerror(-rc));
    slot_release(slot, rc < 0);
    wake(cbs);
}

static const char *what_of(const struct store_delivery *d)
{
    return strcmp(d->kind, "batch") == 0 ? "batch" : "job";
}

/* Settles one attempt of the delivery in slot `slot`: delivered, or failed
 * because of `reason` (retried while attempts remain unless `final`). The
 * slot is released once the store has the outcome. */
static void settle(struct core_callbacks *cbs, int slot, const struct store_delivery *d0, bool ok, bool final,
                   const char *reason)
{
    struct store_delivery d = *d0;
    enum store_delivery_outcome outcome;
    d.attempts++;
    if (ok) {
        outcome = STORE_DELIVERY_DELIVERED;
        LOG_DEBUG("callbacks: delivery %lld of %s %s delivered to %s (attempt %d)", (long long)d.id, what_of(&d),
                  d.ref_id, d.url, d.attempts);
    } else if (final || d.attempts >= cbs->max_attempts) {
        outcome = STORE_DELIVERY_FAILED;
        LOG_WARN("callbacks: delivery %lld of %s %s to %s failed (attempt %d of %d): %s; giving up", (long long)d.id,
                 what_of(&d), d.ref_id, d.url, d.attempts, cbs->max_attempts, reason);
    } else {
        outcome = STORE_DELIVERY_RETRY;
        int64_t delay = core__callback_delay_ms(cbs->backoff_ms, d.attempts, rng_next(&cbs->rng));
        d.next_at_ms = clock_wall_ms() + delay;
        LOG_WARN("callbacks: delivery %lld of %s %s to %s failed (attempt %d of %d): %s; next attempt in %.1f s",
                 (long long)d.id, what_of(&d), d.ref_id, d.url, d.attempts, cbs->max_attempts, reason,
                 (double)delay / 1000.0);
    }
    int rc = store_delivery_record(cbs->c->store, &d, outcome, ok ? NULL : reason, recorded, &cbs->slots[slot]);
    if (rc < 0) {
        /* not queued (closing, out of memory): the row stays as it was */
        LOG_WARN("callbacks: cannot record delivery %lld (%s); it will be repeated", (long long)d.id,
                 strerror(-rc));
        slot_release(&cbs->slots[slot], true);
    }
}

/* ---- starting an attempt ----------------------------------------------------- */

static size_t discard_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    (void)ptr;
    (void)ud;
    return size * nmemb;
}

static void xfer_free(struct cb_xfer *x)
{
    if (!x) return;
    if (x->easy) curl_easy_cleanup(x->easy);
    curl_slist_free_all(x->headers);
    free(x->body);
    free(x);
}

/* The body of delivery d: 0 and *out (caller frees), -ENOENT (the job or
 * batch is gone), or another negative errno. */
static int body_of(struct core_callbacks *cbs, const struct store_delivery *d, char **out)
{
    cJSON *o = NULL;
    struct job *job = NULL;
    struct store_batch b;
    int rc;
    memset(&b, 0, sizeof b);
    if (strcmp(d->kind, "batch") == 0) {
        if ((rc = store_batch_get(cbs->c->store, d->ref_id, false, &b)) < 0) goto out;
        o = core_batch_to_json(&b);
    } else {
        if ((rc = store_job_get(cbs->c->store, d->ref_id, &job)) < 0) goto out;
        o = job_to_json(job);
    }
    rc = -ENOMEM;
    if (o && (*out = cJSON_PrintUnformatted(o))) rc = 0;
out:
    cJSON_Delete(o);
    job_free(job);
    store_batch_clear(&b);
    return rc;
}

static bool add_header(struct curl_slist **list, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool add_header(struct curl_slist **list, const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line) return false;
    struct curl_slist *l = curl_slist_append(*list, line);
    if (!l) return false;
    *list = l;
    return true;
}

/* The request of one attempt. Returns NULL (and *reason) on failure. */
static struct cb_xfer *xfer_new(struct core_callbacks *cbs, int slot, const struct store_delivery *d, char *body,
                                const char **reason)
{
    struct cb_xfer *x = calloc(1, sizeof *x);
    char sig[65];
    bool batch = strcmp(d->kind, "batch") == 0;
    *reason = "out of memory";
    if (!x) {
        free(body);
        return NULL;
    }
    x->slot = slot;
    x->d = *d;
    x->body = body;
    if (!(x->easy = curl_easy_init())) goto fail;
    bool ok = add_header(&x->headers, "Content-Type: application/json") &&
              add_header(&x->headers, "Expect:") && /* no 100-continue round trip for big bodies */
              add_header(&x->headers, "Jobd-Event: %s", batch ? "batch.finished" : "job.finished") &&
              add_header(&x->headers, "Jobd-Delivery: %lld", (long long)d->id) &&
              add_header(&x->headers, "Jobd-Attempt: %d", d->attempts + 1);
    if (ok && cbs->secret) {
        int64_t t = clock_wall_ms() / 1000;
        ok = core__callback_sign(cbs->secret, t, body, sig) == 0 &&
             add_header(&x->headers, "Jobd-Signature: t=%lld,v1=%s", (long long)t, sig);
    }
    if (!ok) goto fail;
    *reason = "libcurl refused an option";
    ok = curl_easy_setopt(x->easy, CURLOPT_URL, d->url) == CURLE_OK &&
         curl_easy_setopt(x->easy, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK &&
         curl_easy_setopt(x->easy, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
         curl_easy_setopt(x->easy, CURLOPT_NOSIGNAL, 1L) == CURLE_OK && /* threads: no SIGALRM */
         curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS, (long)cbs->timeout_ms) == CURLE_OK &&
         curl_easy_setopt(x->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)cbs->timeout_ms) == CURLE_OK &&
         curl_easy_setopt(x->easy, CURLOPT_USERAGENT, "jobd/" JOBD_VERSION) == CURLE_OK &&
         curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->headers) == CURLE_OK &&
         curl_easy_setopt(x->easy, CURLOPT_POST, 1L) == CURLE_OK &&
         curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, x->body) == CURLE_OK &&
         curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(x->body)) == CURLE_OK &&
         curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, discard_body) == CURLE_OK &&
         curl_easy_setopt(x->easy, CURLOPT_ERRORBUFFER, x->errbuf) == CURLE_OK &&
         curl_easy_setopt(x->easy, CURLOPT_PRIVATE, x) == CURLE_OK;
    if (!ok) goto fail;
    return x;
fail:
    xfer_free(x);
    return NULL;
}

/* Starts an attempt of d in slot `slot` (taken by the caller). Failures
 * before the POST are settled here. */
static void begin(struct core_callbacks *cbs, int slot, const struct store_delivery *d)
{
    char *body = NULL, why[160];
    const char *reason = why;
    int rc = body_of(cbs, d, &body);
    if (rc == -ENOENT) {
        snprintf(why, sizeof why, "the %s no longer exists", what_of(d));
        settle(cbs, slot, d, false, true, why);
        return;
    }
    if (rc < 0) {
        snprintf(why, sizeof why, "cannot read the %s: %s", what_of(d), strerror(-rc));
        settle(cbs, slot, d, false, false, why);
        return;
    }
    struct cb_xfer *x = xfer_new(cbs, slot, d, body, &reason);
    if (!x) {
        settle(cbs, slot, d, false, false, reason);
        return;
    }
    CURLMcode mc = curl_multi_add_handle(cbs->multi, x->easy);
    if (mc != CURLM_OK) {
        settle(cbs, slot, d, false, false, curl_multi_strerror(mc));
        xfer_free(x);
        return;
    }
    cbs->xfers[slot] = x;
}

/* Reads the deliveries with the earliest next_at_ms and starts the due ones
 * that are not in flight, while slots are free. Returns the wall ms when the
 * next scan is needed anyway (the earliest future delivery seen). */
static int64_t scan(struct core_callbacks *cbs, int64_t now)
{
    int64_t next = now + CB_IDLE_SCAN_MS;
    pthread_mutex_lock(&cbs->lock);
    uint64_t settled_before = cbs->settled;
    pthread_mutex_unlock(&cbs->lock);
    int n = store_deliveries_next(cbs->c->store, cbs->scan, CB_SCAN_MAX);
    if (n < 0) {
        LOG_WARN("callbacks: cannot read pending deliveries (%s); trying again in %d ms", strerror(-n),
                 CB_STORE_RETRY_MS);
        return now + CB_STORE_RETRY_MS;
    }
    for (int i = 0; i < n; i++) {
        const struct store_delivery *d = &cbs->scan[i];
        if (d->next_at_ms > now) {
            if (d->next_at_ms < next) next = d->next_at_ms;
            break; /* sorted by next_at_ms: the rest are later */
        }
        int free_slot = -1;
        bool busy = false;
        pthread_mutex_lock(&cbs->lock);
        for (int s = 0; s < CB_MAX_INFLIGHT; s++) {
            if (cbs->slots[s].id == d->id) busy = true;
            else if (free_slot < 0 && cbs->slots[s].id == 0) free_slot = s;
        }
        /* Settled since this scan read the table: its row here is stale.
         * (More than CB_RECENT settled meanwhile: trust none of it; the
         * releases asked for a new scan.) */
        if (cbs->settled - settled_before >= CB_RECENT) busy = true;
        for (uint64_t k = settled_before + 1; k <= cbs->settled && !busy; k++)
            if (cbs->recent[k % CB_RECENT].id == d->id) busy = true;
        if (!busy && free_slot >= 0) cbs->slots[free_slot].id = d->id;
        pthread_mutex_unlock(&cbs->lock);
        if (busy) continue;
        if (free_slot < 0) break; /* full: a freed slot asks for the next scan */
        begin(cbs, free_slot, d);
    }
    return next;
}

/* Settles every finished transfer. */
static void reap(struct core_callbacks *cbs)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(cbs->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        struct cb_xfer *x = NULL;
        char why[CURL_ERROR_SIZE + 64];
        bool ok = false;
        long status = 0;
        (void)curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        if (m->data.result == CURLE_OK) {
            (void)curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status); /* 0 stays a failure */
            ok = status >= 200 && status <= 299;
            snprintf(why, sizeof why, "the receiver answered HTTP %ld", status);
        } else {
            snprintf(why, sizeof why, "%s", x->errbuf[0] ? x->errbuf : curl_easy_strerror(m->data.result));
        }
        curl_multi_remove_handle(cbs->multi, x->easy); /* m is invalid from here on */
        cbs->xfers[x->slot] = NULL;
        settle(cbs, x->slot, &x->d, ok, false, why);
        xfer_free(x);
    }
}

/* When the thread should scan next (wall ms): at once when asked to, else
 * at next_scan_ms; never before hold_until_ms. Sets *stop. */
static int64_t scan_due(struct core_callbacks *cbs, int64_t next_scan_ms, int64_t now, bool *stop)
{
    pthread_mutex_lock(&cbs->lock);
    int64_t due = cbs->rescan ? now : next_scan_ms;
    if (due < cbs->hold_until_ms) due = cbs->hold_until_ms;
    *stop = cbs->stop;
    pthread_mutex_unlock(&cbs->lock);
    return due;
}

static void *cb_main(void *arg)
{
    struct core_callbacks *cbs = arg;
    int64_t next_scan_ms = 0;
    bool stop = false;
    pthread_setname_np(pthread_self(), "jobd-callbacks");
    for (;;) {
        int64_t now = clock_wall_ms();
        if (scan_due(cbs, next_scan_ms, now, &stop) <= now && !stop) {
            pthread_mutex_lock(&cbs->lock);
            cbs->rescan = false; /* a kick from here on asks for another scan */
            pthread_mutex_unlock(&cbs->lock);
            next_scan_ms = scan(cbs, now);
        }
        if (stop) break;

        int running = 0;
        CURLMcode mc = curl_multi_perform(cbs->multi, &running);
        if (mc != CURLM_OK) LOG_WARN("callbacks: curl_multi_perform: %s", curl_multi_strerror(mc));
        reap(cbs);

        now = clock_wall_ms();
        int64_t wait = scan_due(cbs, next_scan_ms, now, &stop) - now;
        if (stop) break;
        if (wait < 0) wait = 0;
        if (wait > CB_IDLE_SCAN_MS) wait = CB_IDLE_SCAN_MS;
        mc = curl_multi_poll(cbs->multi, NULL, 0, (int)wait, NULL); /* libcurl shortens it to its own timers */
        if (mc != CURLM_OK) {
            LOG_WARN("callbacks: curl_multi_poll: %s", curl_multi_strerror(mc));
            usleep(100 * 1000); /* not a busy loop should polling keep failing */
        }
    }
    /* Abandoned: their rows are unchanged, due again at the next start. */
    for (int s = 0; s < CB_MAX_INFLIGHT; s++) {
        struct cb_xfer *x = cbs->xfers[s];
        if (!x) continue;
        curl_multi_remove_handle(cbs->multi, x->easy);
        xfer_free(x);
        cbs->xfers[s] = NULL;
    }
    return NULL;
}

/* ---- start, kick, stop ---------------------------------------------------------- */

static void cbs_free(struct core_callbacks *cbs)
{
    if (!cbs) return;
    curl_multi_cleanup(cbs->multi); /* accepts NULL */
    pthread_mutex_destroy(&cbs->lock);
    free(cbs->secret);
    free(cbs);
}

int core_callbacks_start(struct core *c, const struct core_options *opt)
{
    struct core_callbacks *cbs = NULL;
    int rc = -ENOMEM, e;
    /* Thread-safe since libcurl 7.84, reference-counted; never cleaned up,
     * since http_get uses libcurl too until the process exits. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        LOG_ERROR("callbacks: curl_global_init failed");
        return -ENOMEM;
    }
    if (!(cbs = calloc(1, sizeof *cbs))) return -ENOMEM;
    pthread_mutex_init(&cbs->lock, NULL);
    cbs->c = c;
    cbs->timeout_ms = opt->callback_timeout_ms > 0 ? opt->callback_timeout_ms : CB_DEFAULT_TIMEOUT_MS;
    cbs->max_attempts = opt->callback_max_attempts > 0 ? opt->callback_max_attempts : CB_DEFAULT_ATTEMPTS;
    cbs->backoff_ms = opt->callback_backoff_ms > 0 ? opt->callback_backoff_ms : CB_DEFAULT_BACKOFF_MS;
    cbs->rescan = true; /* the first scan finds what a previous run left pending */
    cbs->rng = (uint64_t)clock_mono_ns() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ULL;
    if (!cbs->rng) cbs->rng = 1;
    for (int s = 0; s < CB_MAX_INFLIGHT; s++) cbs->slots[s].cbs = cbs;
    if (opt->callback_secret && opt->callback_secret[0] && !(cbs->secret = strdup(opt->callback_secret))) goto fail;
    if (!(cbs->multi = curl_multi_init())) goto fail;
    /* Published before the thread starts: a kick from now on is not lost,
     * and one from before concerns a delivery the first scan will see. */
    __atomic_store_n(&c->callbacks, cbs, __ATOMIC_RELEASE);
    if ((e = pthread_create(&cbs->thread, NULL, cb_main, cbs)) != 0) {
        LOG_ERROR("callbacks: cannot start the delivery thread: %s", strerror(e));
        __atomic_store_n(&c->callbacks, NULL, __ATOMIC_RELEASE);
        store_sync(c->store); /* a kick that saw the pointer has returned */
        rc = -e;
        goto fail;
    }
    LOG_INFO("callbacks: up to %d deliveries at once, %.1f s per attempt, %d attempts, back-off from %.1f s; %s",
             CB_MAX_INFLIGHT, (double)cbs->timeout_ms / 1000.0, cbs->max_attempts, (double)cbs->backoff_ms / 1000.0,
             cbs->secret ? "signed (Jobd-Signature)" : "unsigned (no --callback-secret)");
    return 0;
fail:
    cbs_free(cbs);
    return rc;
}

void core_callbacks_kick(struct core *c)
{
    struct core_callbacks *cbs = __atomic_load_n(&c->callbacks, __ATOMIC_ACQUIRE);
    if (!cbs) return; /* not started (its first scan will see it) or stopped (the next start will) */
    pthread_mutex_lock(&cbs->lock);
    cbs->rescan = true;
    pthread_mutex_unlock(&cbs->lock);
    wake(cbs);
}

void core_callbacks_stop(struct core *c)
{
    struct core_callbacks *cbs = __atomic_load_n(&c->callbacks, __ATOMIC_ACQUIRE);
    if (!cbs) return;
    __atomic_store_n(&c->callbacks, NULL, __ATOMIC_RELEASE);
    pthread_mutex_lock(&cbs->lock);
    cbs->stop = true;
    pthread_mutex_unlock(&cbs->lock);
    wake(cbs);
    pthread_join(cbs->thread, NULL);
    /* Every record the thread queued, and every kick that saw the pointer,
     * runs on the writer before the ops queued so far are done. */
    store_sync(c->store);
    cbs_free(cbs);
}
