/* config.c - the settings table and the one pass that fills struct config.
 *
 * Every setting is one row of `settings[]`: its flag (which also gives the
 * config-file key, '-' read as '_'), its environment name, its type, its
 * default as text, its bounds and where it is stored. Defaults are parsed by
 * the same code as user input, so a row cannot hold a default it would refuse.
 *
 * Order of work (config_load): apply the defaults; scan argv once to check it
 * and find --help, --version and --config; the config file (--config, else
 * JOBD_CONFIG; read by config_file.c); the environment; argv again. A later source simply overwrites
 * an earlier one. Executors named without their own max_queued get
 * cfg->max_queued at the very end, so `--max-queued` reaches list entries.
 *
 * Error messages name the setting as the user wrote it ("--listen",
 * "JOBD_LISTEN", "/etc/jobd.json: listen") and the bad value, except the
 * token, which is a secret and never echoed.
 */
#include "config_int.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "../common/version.h"

/* The default executor list (SPEC §5); "N" is the number of cores, "2N" twice that. */
#define DEFAULT_EXECUTORS "thread=thread:2N,process=process:N,async=async:256"

#define EXEC_SIZE_MAX 4096      /* threads or processes */
#define ASYNC_SIZE_MAX 1000000  /* concurrent jobs on one event loop */
#define TOKEN_FILE_MAX 4096       /* bytes */
#define RETENTION_MAX_S (3650LL * 86400) /* ten years */





/* Writes the message into L->err; returns -1 for `return config__fail(...)`. */
int config__fail(struct load *L, const char *fmt, ...)
{
    if (L->err && L->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(L->err, L->errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Parses a whole decimal number in [min, max] into *out. */
int config__parse_int(struct load *L, const char *name, const char *v, long long min, long long max, long long *out)
{
    char *end = NULL;
    long long n = 0;
    errno = 0;
    /* strtoll alone would also take leading spaces and '+' */
    if (isdigit((unsigned char)v[0]) || (v[0] == '-' && isdigit((unsigned char)v[1]))) n = strtoll(v, &end, 10);
    if (!end || *end) return config__fail(L, "%s: \"%s\" is not a whole number", name, v);
    if (errno == ERANGE || n < min || n > max)
        return config__fail(L, "%s: \"%s\" is out of range %lld..%lld", name, v, min, max);
    *out = n;
    return 0;
}

/* Parses a duration (see T_DURATION_MS) in [min_s, max_s] seconds into *out_ms. */
static int parse_duration(struct load *L, const char *name, const char *v, long long min_s, long long max_s,
                          int64_t *out_ms)
{
    static const struct { char suffix; long long seconds; } units[] = {{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}};
    size_t digits = strspn(v, "0123456789");
    long long unit = 1, n = 0;
    if (digits == 0 || digits > 15 || (v[digits] && v[digits + 1])) goto bad;
    if (v[digits]) {
        size_t i = 0;
        while (i < sizeof units / sizeof units[0] && units[i].suffix != v[digits]) i++;
        if (i == sizeof units / sizeof units[0]) goto bad;
        unit = units[i].seconds;
    }
    n = strtoll(v, NULL, 10); /* at most 15 digits: no overflow here */
    /* but n * 86400 may overflow: compare before multiplying (max_s >= 0) */
    n = n > max_s / unit ? max_s + 1 : n * unit;
    if (n < min_s || n > max_s)
        return config__fail(L, "%s: \"%s\" is out of range %llds..%llds (%lld days)", name, v, min_s, max_s,
                            max_s / 86400);
    *out_ms = (int64_t)n * 1000;
    return 0;
bad:
    return config__fail(
        L, "%s: \"%s\" is not a duration: whole seconds, or a whole number with s, m, h or d (90s, 12h, 7d)", name, v);
}

static int parse_bool(struct load *L, const char *name, const char *v, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"}, *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(v, yes[i]) == 0) return *out = true, 0;
        if (strcasecmp(v, no[i]) == 0) return *out = false, 0;
    }
    return config__fail(L, "%s: \"%s\" is not a boolean (1/0, true/false, yes/no, on/off)", name, v);
}

/* Reads a whole file of at most `max` bytes into a new NUL-terminated buffer
 * (*out, freed by the caller). Returns 0 or a negative errno (-EFBIG when too large). */
int config__read_file(const char *path, size_t max, char **out, size_t *len)
{
    int rc = 0;
    char *buf = NULL;
    size_t n = 0;
    FILE *f = fopen(path, "re");
    if (!f) return -errno;
    if (!(buf = malloc(max + 1))) {
        rc = -ENOMEM;
        goto out;
    }
    errno = 0;
    n = fread(buf, 1, max + 1, f);
    if (ferror(f)) rc = errno ? -errno : -EIO; /* e.g. -EISDIR */
    else if (n > max) rc = -EFBIG;
out:
    fclose(f); /* read-only: nothing to lose on close */
    if (rc < 0) {
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

/* Applies one value from any source. `name` is how the user wrote the setting. */
int config__setting_apply(struct load *L, const struct setting *s, const char *name, const char *v)
{
    char *field = (char *)L->cfg + s->offset;
    long long n;
    switch (s->type) {
    case T_STRING:
        if (!*v) return config__fail(L, "%s: must not be empty", name);
        if (strlen(v) >= s->size)
            return config__fail(L, "%s: \"%s\" is too long (at most %zu bytes)", name, v, s->size - 1);
        memcpy(field, v, strlen(v) + 1);
        return 0;
    case T_BOOL:
        return parse_bool(L, name, v, (bool *)field);
    case T_INT:
    case T_LONG:
    case T_SECONDS_MS:
        if (config__parse_int(L, name, v, s->min, s->max, &n) < 0) return -1;
        if (s->type == T_INT) *(int *)field = (int)n;
        else if (s->type == T_LONG) *(long *)field = (long)n;
        else *(int64_t *)field = (int64_t)n * 1000;
        return 0;
    case T_DURATION_MS:
        return parse_duration(L, name, v, s->min, s->max, (int64_t *)field);
    case T_CUSTOM:
        return s->parse(L, name, v);
    }
    return config__fail(L, "%s: internal error: bad setting type", name);
}

static int set_listen(struct load *L, const char *name, const char *v)
{
    const char *host = v, *port;
    size_t hlen;
    long long p;
    if (v[0] == '[') { /* [IPv6]:PORT */
        const char *rb = strchr(v, ']');
        if (!rb || rb[1] != ':') goto bad;
        host = v + 1;
        hlen = (size_t)(rb - host);
        port = rb + 2;
        if (!memchr(host, ':', hlen)) goto bad;
    } else {
        const char *colon = strrchr(v, ':');
        if (!colon || memchr(v, ':', (size_t)(colon - v))) goto bad; /* bare IPv6 needs brackets */
        hlen = (size_t)(colon - v);
        port = colon + 1;
    }
    if (hlen == 0 || hlen >= sizeof L->cfg->listen_host) goto bad;
    for (size_t i = 0; i < hlen; i++)
        if (!isalnum((unsigned char)host[i]) && !strchr(".-_:%", host[i])) goto bad;
    if (!*port || strspn(port, "0123456789") != strlen(port) || strlen(port) > 5) goto bad;
    p = strtoll(port, NULL, 10);
    if (p > 65535) return config__fail(L, "%s: \"%s\": port %lld is out of range 0..65535", name, v, p);
    memcpy(L->cfg->listen_host, host, hlen);
    L->cfg->listen_host[hlen] = '\0';
    L->cfg->listen_port = (int)p;
    return 0;
bad:
    return config__fail(L, "%s: \"%s\" is not ADDR:PORT (example: 127.0.0.1:8080, [::1]:8080)", name, v);
}

/* Both token settings land here. The value is a secret: never echoed. */
static int token_store(struct load *L, const char *name, const char *by, const char *v)
{
    size_t n = strlen(v);
    if (L->token_by && strcmp(L->token_by, by) != 0)
        return config__fail(L, "%s: a token is already given by %s of the same source; use one of them", name,
                    L->token_by);
    L->token_by = by;
    if (n == 0) return config__fail(L, "%s: the token is empty", name);
    if (n >= sizeof L->cfg->token)
        return config__fail(L, "%s: the token is too long (at most %zu characters)", name, sizeof L->cfg->token - 1);
    for (size_t i = 0; i < n; i++)
        if (v[i] <= ' ' || v[i] > '~')
            return config__fail(L, "%s: the token may hold only printable ASCII without spaces", name);
    memcpy(L->cfg->token, v, n + 1);
    return 0;
}

static int set_token(struct load *L, const char *name, const char *v)
{
    return token_store(L, name, "token", v);
}

static int set_token_file(struct load *L, const char *name, const char *v)
{
    char *buf = NULL;
    size_t n = 0;
    int rc = config__read_file(v, TOKEN_FILE_MAX, &buf, &n);
    if (rc < 0) {
        rc = config__fail(L, "%s: cannot read \"%s\": %s", name, v, strerror(-rc));
        goto out;
    }
    while (n > 0 && isspace((unsigned char)buf[n - 1])) buf[--n] = '\0';
    if (n == 0) {
        rc = config__fail(L, "%s: \"%s\" is empty", name, v);
        goto out;
    }
    rc = token_store(L, name, "token-file", buf);
out:
    free(buf);
    return rc;
}

static int set_log_level(struct load *L, const char *name, const char *v)
{
    if (log_level_parse(v, &L->cfg->log_level) < 0)
        return config__fail(L, "%s: \"%s\" is not a log level (debug, info, warn, error, off)", name, v);
    return 0;
}

static int set_log_format(struct load *L, const char *name, const char *v)
{
    if (strcmp(v, "text") == 0) L->cfg->log_format = LOG_FORMAT_TEXT;
    else if (strcmp(v, "json") == 0) L->cfg->log_format = LOG_FORMAT_JSON;
    else return config__fail(L, "%s: \"%s\" is not a log format (text or json)", name, v);
    return 0;
}

static int set_sync(struct load *L, const char *name, const char *v)
{
    if (strcmp(v, "full") == 0) L->cfg->sync_full = true;
    else if (strcmp(v, "normal") == 0) L->cfg->sync_full = false;
    else return config__fail(L, "%s: \"%s\" is not a sync mode (full or normal)", name, v);
    return 0;
}

/* --plugin (repeatable) and JOBD_PLUGINS (colon-separated) append; a lower
 * source's list is never read once a higher one gave any (by_flag/by_env). */
int config__plugin_add(struct load *L, const char *name, const char *path, size_t len)
{
    struct config *cfg = L->cfg;
    if (len == 0) return config__fail(L, "%s: a plugin path is empty", name);
    if (len >= 4096) return config__fail(L, "%s: \"%.64s...\" is too long (at most 4095 bytes)", name, path);
    if (cfg->n_plugins == CONFIG_MAX_PLUGINS)
        return config__fail(L, "%s: too many plugins (at most %d)", name, CONFIG_MAX_PLUGINS);
    if (!(cfg->plugins[cfg->n_plugins] = strndup(path, len))) return config__fail(L, "%s: out of memory", name);
    cfg->n_plugins++;
    return 0;
}

static int set_plugin(struct load *L, const char *name, const char *v)
{
    if (strcmp(name, "JOBD_PLUGINS") != 0) return config__plugin_add(L, name, v, strlen(v));
    for (const char *p = v;; p++) {
        size_t len = strcspn(p, ":");
        if (len && config__plugin_add(L, name, p, len) < 0) return -1; /* "a::b" and a trailing ':' are forgiven */
        p += len;
        if (!*p) return 0;
    }
}

/* --- executors --- */


/* Validates one executor and appends it. `where` names the entry in errors;
 * max_queued < 0 means "cfg->max_queued, once every source is read". */
int config__exec_add(struct load *L, struct exec_list *x, const char *where, const char *name, const char *kind,
                    const char *size, long max_queued)
{
    static const struct { const char *name; unsigned kind; } kinds[] = {
        {"thread", TASK_KIND_THREAD}, {"process", TASK_KIND_PROCESS}, {"async", TASK_KIND_ASYNC}};
    size_t len = strlen(name);
    unsigned k = 0;
    char what[4400];
    long long n;
    if (len == 0 || len >= CORE_NAME_MAX || strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_-") != len)
        return config__fail(L, "%s: executor name \"%s\" must be 1..%d characters of a-z, 0-9, '_' and '-'", where,
                            name, CORE_NAME_MAX - 1);
    for (int i = 0; i < x->n; i++)
        if (strcmp(x->e[i].name, name) == 0)
            return config__fail(L, "%s: executor name \"%s\" is used twice", where, name);
    if (x->n == CONFIG_MAX_EXECUTORS)
        return config__fail(L, "%s: too many executors (at most %d)", where, CONFIG_MAX_EXECUTORS);
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(kind, kinds[i].name) == 0) k = kinds[i].kind;
    if (!k) return config__fail(L, "%s: \"%s\" is not an executor kind (thread, process or async)", where, kind);
    snprintf(what, sizeof what, "%s: size of executor \"%s\"", where, name);
    /* An async executor's size only bounds concurrent jobs on one loop (no
     * thread or process each), so it may be far larger. */
    if (config__parse_int(L, what, size, 1, k == TASK_KIND_ASYNC ? ASYNC_SIZE_MAX : EXEC_SIZE_MAX, &n) < 0) return -1;
    struct core_executor_config *e = &x->e[x->n++];
    memset(e, 0, sizeof *e); /* memory_mb, cpu_seconds: none unless the file's entry sets them */
    memcpy(e->name, name, len + 1);
    e->kind = k;
    e->size = (int)n;
    e->max_queued = max_queued;
    return 0;
}

/* Parses "NAME=KIND:SIZE[,...]" (spaces around entries allowed) into *x. */
static int exec_list_parse(struct load *L, const char *where, const char *list, long max_queued, struct exec_list *x)
{
    const char *p = list;
    x->n = 0;
    for (;;) {
        char entry[256];
        size_t len = strcspn(p, ",");
        const char *s = p, *e = p + len;
        while (s < e && isspace((unsigned char)*s)) s++;
        while (e > s && isspace((unsigned char)e[-1])) e--;
        if ((size_t)(e - s) >= sizeof entry) goto bad;
        memcpy(entry, s, (size_t)(e - s));
        entry[e - s] = '\0';
        char *eq = strchr(entry, '='), *colon = eq ? strchr(eq, ':') : NULL;
        if (!colon) goto bad;
        *eq = *colon = '\0';
        if (config__exec_add(L, x, where, entry, eq + 1, colon + 1, max_queued) < 0) return -1;
        if (!p[len]) return 0;
        p += len + 1;
        continue;
    bad:
        return config__fail(L, "%s: \"%.*s\" is not NAME=KIND:SIZE (example: cpu=thread:4)", where, (int)len, p);
    }
}

int config__set_executors(struct load *L, const char *name, const char *v)
{
    struct exec_list x;
    if (exec_list_parse(L, name, v, -1, &x) < 0) return -1;
    memcpy(L->cfg->executors, x.e, sizeof x.e);
    L->cfg->n_executors = x.n;
    return 0;
}

int config_parse_executors(struct config *cfg, const char *list, char *err, size_t errlen)
{
    struct load L = {.cfg = cfg, .err = err, .errlen = errlen};
    struct exec_list x;
    if (exec_list_parse(&L, "executors", list, cfg->max_queued, &x) < 0) return -1;
    memcpy(cfg->executors, x.e, sizeof x.e);
    cfg->n_executors = x.n;
    return 0;
}

/* --- the table --- */

#define FIELD(f) offsetof(struct config, f), sizeof(((struct config *)0)->f), NULL
#define CUSTOM(fn) 0, 0, fn

static const struct setting settings[] = {
    {"listen", "ADDR:PORT", "JOBD_LISTEN", T_CUSTOM, "127.0.0.1:8080", 0, 0, CUSTOM(set_listen),
     "address to serve HTTP on; IPv6 as [::1]:8080; port 0 picks a free port"},
    {"db", "PATH", "JOBD_DB", T_STRING, "./data/jobd.db", 0, 0, FIELD(db_path), "SQLite database file"},
    {"config", "FILE", "JOBD_CONFIG", T_STRING, NULL, 0, 0, FIELD(config_file),
     "JSON config file: keys are these flags without dashes, '_' for '-'"},
    {"token", "TOKEN", "JOBD_TOKEN", T_CUSTOM, NULL, 0, 0, CUSTOM(set_token),
     "require 'Authorization: Bearer TOKEN' on /v1 and /metrics"},
    {"token-file", "FILE", "JOBD_TOKEN_FILE", T_CUSTOM, NULL, 0, 0, CUSTOM(set_token_file),
     "read the token from FILE (trailing whitespace dropped)"},
    {"executors", "LIST", "JOBD_EXECUTORS", T_CUSTOM, DEFAULT_EXECUTORS, 0, 0, CUSTOM(config__set_executors),
     "NAME=KIND:SIZE[,...], KIND thread, process or async; SIZE 1..4096 (async: 1..1000000)"},
    {"allow-exec", NULL, "JOBD_ALLOW_EXEC", T_BOOL, "off", 0, 0, FIELD(allow_exec),
     "enable the exec task (runs commands); env: 1/0, true/false, yes/no, on/off"},
    {"plugin", "PATH.so", "JOBD_PLUGINS", T_CUSTOM, NULL, 0, 0, CUSTOM(set_plugin),
     "load a task plugin; repeatable; env: PATH:PATH...; file: \"plugins\": [PATH...]"},
    {"log-level", "LEVEL", "JOBD_LOG_LEVEL", T_CUSTOM, "info", 0, 0, CUSTOM(set_log_level),
     "debug, info, warn, error or off"},
    {"log-format", "text|json", "JOBD_LOG_FORMAT", T_CUSTOM, "text", 0, 0, CUSTOM(set_log_format),
     "log lines as text or JSON"},
    {"sync", "full|normal", "JOBD_SYNC", T_CUSTOM, "full", 0, 0, CUSTOM(set_sync),
     "SQLite synchronous mode: full survives power loss, normal only crashes"},
    {"max-body", "BYTES", "JOBD_MAX_BODY", T_LONG, "1048576", 1024, 1073741824, FIELD(max_body_bytes),
     "largest request body; larger ones get 413"},
    {"http-threads", "N", "JOBD_HTTP_THREADS", T_INT, "N", 1, 64, FIELD(http_threads),
     "HTTP worker threads (the default is capped at 64)"},
    {"max-connections", "N", "JOBD_MAX_CONNECTIONS", T_INT, "10000", 1, 1000000, FIELD(max_connections),
     "open HTTP connections at most"},
    {"connection-timeout", "SECONDS", "JOBD_CONNECTION_TIMEOUT", T_INT, "60", 1, 86400,
     FIELD(connection_timeout_s), "close idle HTTP connections after this long"},
    {"max-wait", "SECONDS", "JOBD_MAX_WAIT", T_SECONDS_MS, "3600", 0, 86400, FIELD(max_wait_ms),
     "largest ?wait= a request may ask for"},
    {"grace", "SECONDS", "JOBD_GRACE", T_SECONDS_MS, "30", 0, 86400, FIELD(grace_ms),
     "on SIGTERM, how long running jobs may take to finish"},
    {"max-queued", "N", "JOBD_MAX_QUEUED", T_LONG, "100000", 1, MAX_QUEUED_MAX, FIELD(max_queued),
     "jobs waiting per executor at most (unless it sets its own); past it submits get 429"},
    {"resident-jobs", "N", "JOBD_RESIDENT_JOBS", T_LONG, "20000", 0, MAX_QUEUED_MAX, FIELD(resident_jobs),
     "pending jobs per queue kept whole in memory; the rest wait as ~170-byte entries (0: all)"},
    {"insecure-no-auth", NULL, "JOBD_INSECURE_NO_AUTH", T_BOOL, "off", 0, 0, FIELD(insecure_no_auth),
     "allow a non-loopback --listen without a token (anyone who reaches it can run jobs)"},
    {"retention", "DURATION", "JOBD_RETENTION", T_DURATION_MS, "7d", 0, RETENTION_MAX_S, FIELD(retention_ms),
     "delete succeeded jobs this long after they finished (90s, 12h, 7d or seconds); 0 keeps them"},
    {"retention-failed", "DURATION", "JOBD_RETENTION_FAILED", T_DURATION_MS, "30d", 0, RETENTION_MAX_S,
     FIELD(retention_failed_ms), "the same for failed and cancelled jobs; 0 keeps them"},
    {"prune-interval", "DURATION", "JOBD_PRUNE_INTERVAL", T_DURATION_MS, "60s", 1, 86400, FIELD(prune_interval_ms),
     "pause between two background retention passes"},
    {"callback-secret", "SECRET", "JOBD_CALLBACK_SECRET", T_STRING, NULL, 0, 0, FIELD(callback_secret),
     "sign callback POSTs with HMAC-SHA256 (header Jobd-Signature); unset: unsigned"},
    {"callback-timeout", "SECONDS", "JOBD_CALLBACK_TIMEOUT", T_SECONDS_MS, "10", 1, 3600, FIELD(callback_timeout_ms),
     "one callback delivery attempt at most"},
    {"callback-attempts", "N", "JOBD_CALLBACK_ATTEMPTS", T_INT, "10", 1, 100, FIELD(callback_attempts),
     "delivery attempts before callback_status becomes failed"},
    {"callback-backoff-ms", "MS", "JOBD_CALLBACK_BACKOFF_MS", T_LONG, "1000", 1, 3600000, FIELD(callback_backoff_ms),
     "wait before the second attempt, doubled each time (+0-25% jitter, capped at 10 min)"},
    {"heartbeat", "SECONDS", "JOBD_HEARTBEAT", T_SECONDS_MS, "15", 1, 3600, FIELD(heartbeat_ms),
     "comment line sent to idle /v1/events streams this often"},
    {"event-log", "N", "JOBD_EVENT_LOG", T_LONG, "100000", 1000, 100000000, FIELD(event_log),
     "state-change events kept in the database for Last-Event-ID resumes"},
    {"event-buffer", "N", "JOBD_EVENT_BUFFER", T_LONG, "8192", 64, 1000000, FIELD(event_buffer),
     "recent events kept in memory; a live /v1/events client further behind is told to resync"},
};
#define N_SETTINGS ((int)(sizeof settings / sizeof settings[0]))
_Static_assert(sizeof settings / sizeof settings[0] <= 64, "struct load's by_flag/by_env hold 64 settings");

const struct setting *config__setting_by_flag(const char *flag, size_t len)
{
    for (int i = 0; i < N_SETTINGS; i++)
        if (strlen(settings[i].flag) == len && memcmp(settings[i].flag, flag, len) == 0) return &settings[i];
    return NULL;
}

const struct setting *config__setting_by_key(const char *key)
{
    for (int i = 0; i < N_SETTINGS; i++) {
        const char *f = settings[i].flag, *k = key;
        while (*f && (*k == *f || (*f == '-' && *k == '_'))) f++, k++;
        if (!*f && !*k) return &settings[i];
    }
    return NULL;
}

bool config__overridden(const struct load *L, const struct setting *s)
{
    return L->by_flag[s - settings] || L->by_env[s - settings];
}

/* --- environment and argv --- */

/* Applies every JOBD_* variable of the table (unknown ones are ignored; an
 * empty value counts as unset). JOBD_CONFIG was read before the file. */
static int env_apply(struct load *L, char **envp)
{
    L->token_by = NULL;
    for (char **e = envp; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (strncmp(*e, "JOBD_", 5) != 0 || !eq || !eq[1]) continue;
        for (int i = 0; i < N_SETTINGS; i++) {
            const struct setting *s = &settings[i];
            if (strlen(s->env) != (size_t)(eq - *e) || memcmp(s->env, *e, (size_t)(eq - *e)) != 0) continue;
            if (L->by_flag[i]) continue;
            if (strcmp(s->flag, "config") != 0 && config__setting_apply(L, s, s->env, eq + 1) < 0) return -1;
        }
    }
    return 0;
}

static const char *env_lookup(char **envp, const char *name)
{
    size_t n = strlen(name);
    for (char **e = envp; e && *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=' && (*e)[n + 1]) return *e + n + 1;
    return NULL;
}

/* Walks argv. With apply false it only checks the syntax, applies --config
 * and handles --help / --version (returns 1); with apply true it applies the
 * rest. Returns 0, 1 or -1 with the error set. */
static int args_scan(struct load *L, int argc, char **argv, bool apply, FILE *out)
{
    L->token_by = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *eq, *v;
        char name[128];
        if (strcmp(a, "-h") == 0) a = "--help";
        if (strncmp(a, "--", 2) != 0)
            return config__fail(L, "unexpected argument \"%s\" (see --help)", a);
        eq = strchr(a + 2, '=');
        size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        snprintf(name, sizeof name, "--%.*s", (int)len, a + 2);
        if (strcmp(name, "--help") == 0 || strcmp(name, "--version") == 0) {
            if (eq) return config__fail(L, "%s takes no value", name);
            if (apply) continue;
            if (name[2] == 'h') config_print_help(out);
            else fprintf(out, "jobd %s\n", JOBD_VERSION);
            return 1;
        }
        const struct setting *s = config__setting_by_flag(a + 2, len);
        if (!s) return config__fail(L, "unknown option \"%s\" (see --help)", name);
        if (eq) v = eq + 1;
        else if (!s->metavar) v = "true";
        else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) v = argv[++i];
        else return config__fail(L, "%s needs a value (%s)", name, s->metavar);
        bool early = strcmp(s->flag, "config") == 0;
        if (!apply) L->by_flag[s - settings] = true;
        if (early != apply && config__setting_apply(L, s, name, v) < 0) return -1;
    }
    return 0;
}

/* Expands "2N" and "N" in a default into numbers; N = ncores, kept within 1..2048. */
static void default_expand(const char *def, int ncores, char *buf, size_t len)
{
    int n = ncores < 1 ? 1 : ncores > EXEC_SIZE_MAX / 2 ? EXEC_SIZE_MAX / 2 : ncores;
    size_t o = 0;
    for (const char *p = def; *p && o + 16 < len; p++) {
        bool at_start = p == def || p[-1] == ':' || p[-1] == ',';
        if (at_start && p[0] == '2' && p[1] == 'N') o += (size_t)snprintf(buf + o, len - o, "%d", 2 * n), p++;
        else if (at_start && p[0] == 'N') o += (size_t)snprintf(buf + o, len - o, "%d", n);
        else buf[o++] = *p;
    }
    buf[o] = '\0';
}

static int defaults_apply(struct load *L, int ncores)
{
    for (int i = 0; i < N_SETTINGS; i++) {
        const struct setting *s = &settings[i];
        char v[512], name[64];
        long long n;
        if (!s->def) continue;
        default_expand(s->def, ncores, v, sizeof v);
        /* A default that follows the machine (N) is clamped, never refused. */
        if ((s->type == T_INT || s->type == T_LONG) &&
            config__parse_int(L, "default", v, LLONG_MIN, LLONG_MAX, &n) == 0)
            snprintf(v, sizeof v, "%lld", n < s->min ? s->min : n > s->max ? s->max : n);
        snprintf(name, sizeof name, "default of --%s", s->flag);
        if (config__setting_apply(L, s, name, v) < 0) return -1;
    }
    return 0;
}

enum config_result config_load(struct config *cfg, int argc, char **argv, char **envp, int ncores, FILE *out,
                               char *err, size_t errlen)
{
    struct load L = {.cfg = cfg, .err = err, .errlen = errlen};
    enum config_result res = CONFIG_ERROR;
    const char *path;
    int rc;
    config_free(cfg);
    memset(cfg, 0, sizeof *cfg);
    if (err && errlen) err[0] = '\0';
    if (defaults_apply(&L, ncores) < 0) goto out;
    rc = args_scan(&L, argc, argv, false, out); /* applies --config only */
    if (rc != 0) {
        res = rc > 0 ? CONFIG_EXIT : CONFIG_ERROR;
        goto out;
    }
    if (!cfg->config_file[0] && (path = env_lookup(envp, "JOBD_CONFIG")) &&
        config__setting_apply(&L, config__setting_by_flag("config", 6), "JOBD_CONFIG", path) < 0)
        goto out;
    for (int i = 0; i < N_SETTINGS; i++) L.by_env[i] = env_lookup(envp, settings[i].env) != NULL;
    if (cfg->config_file[0] && config__file_apply(&L, cfg->config_file) < 0) goto out;
    if (env_apply(&L, envp) < 0) goto out;
    if (args_scan(&L, argc, argv, true, out) < 0) goto out;
    for (int i = 0; i < cfg->n_executors; i++)
        if (cfg->executors[i].max_queued < 0) cfg->executors[i].max_queued = cfg->max_queued;
    if (!cfg->token[0] && !cfg->insecure_no_auth && !config_listen_is_loopback(cfg->listen_host)) {
        config__fail(&L, "--listen: %s is not a loopback address and no token is set: set --token, --token-file or "
                 "JOBD_TOKEN, or pass --insecure-no-auth (JOBD_INSECURE_NO_AUTH=1) to serve without authentication",
             cfg->listen_host);
        goto out;
    }
    res = CONFIG_OK;
out:
    if (res != CONFIG_OK) config_free(cfg);
    return res;
}

bool config_listen_is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (strcasecmp(host, "localhost") == 0) return true;
    if (inet_pton(AF_INET, host, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return false;
}

void config_free(struct config *cfg)
{
    if (!cfg) return;
    for (int i = 0; i < cfg->n_plugins; i++) free(cfg->plugins[i]);
    memset(cfg->plugins, 0, sizeof cfg->plugins);
    cfg->n_plugins = 0;
    cJSON_Delete(cfg->commands);
    cfg->commands = NULL;
}

void config_print_help(FILE *out)
{
    /* Output errors are not actionable here: the caller exits right after. */
    fprintf(out, "usage: jobd [OPTION]...\n"
                 "jobd %s - a job-execution server.\n\n"
                 "Each option may also be set by its environment variable, or in the JSON\n"
                 "config file under its name without dashes and with '_' for '-'.\n"
                 "Flags win over the environment, the environment over the file.\n"
                 "N below is the number of CPU cores.\n\n",
            JOBD_VERSION);
    for (int i = 0; i < N_SETTINGS; i++) {
        const struct setting *s = &settings[i];
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", s->flag, s->metavar ? " " : "", s->metavar ? s->metavar : "");
        fprintf(out, "  %-32s %s, default: %s\n      %s\n", left, s->env, s->def ? s->def : "none", s->help);
    }
    fprintf(out, "  %-32s print this help and exit\n  %-32s print the version and exit\n", "-h, --help",
            "--version");
    fprintf(out, "\nIn the config file only:\n"
                 "  \"commands\": [{\"name\", \"argv\": [\"/bin/prog\", \"{arg}\"], \"args\": {\"arg\": \"string\"},\n"
                 "                \"executor\": \"process\"|\"async\", \"timeout\", \"env\": [NAME...], \"cwd\",\n"
                 "                \"description\"}]   command tasks: argv filled from args, no shell\n");
}
