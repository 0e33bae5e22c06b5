/* config.h - jobd's configuration: one table of settings (flag, environment
 * name, type, default, bounds), parsed and validated once at start and then
 * passed down read-only as `const struct config *`. Precedence: flags win over
 * environment, environment over the config file, the file over defaults.
 * Nothing reads getenv() after config_load().
 */
#ifndef JOBD_CONFIG_H
#define JOBD_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "../common/log.h"
#include "../core/core.h"

#define CONFIG_MAX_EXECUTORS 32
#define CONFIG_MAX_PLUGINS 32

struct config {
    char listen_host[256];  /* "127.0.0.1", "0.0.0.0", "::1", "localhost" */
    int listen_port;        /* 0 = any free port (tests) */
    char db_path[4096];
    char config_file[4096]; /* "" = none */
    char token[512];        /* "" = no auth */
    bool insecure_no_auth;  /* allow a non-loopback listen address without a token */
    struct core_executor_config executors[CONFIG_MAX_EXECUTORS];
    int n_executors;
    bool allow_exec;
    enum log_level log_level;
    enum log_format log_format;
    bool sync_full;         /* --sync full|normal */
    long max_body_bytes;    /* request bodies larger than this get 413 */
    int http_threads;       /* libmicrohttpd thread pool size */
    int max_connections;
    int connection_timeout_s;
    int64_t max_wait_ms;    /* largest accepted ?wait= */
    int64_t grace_ms;       /* SIGTERM drain grace */
    long max_queued;        /* default max_queued of executors that do not set one */
    int64_t retention_ms;        /* succeeded jobs are pruned this long after they finished; 0 = kept forever */
    int64_t retention_failed_ms; /* the same for failed and cancelled jobs */
    int64_t prune_interval_ms;   /* pause between two retention passes (>= 1000) */
    char callback_secret[512];   /* "" = callbacks are not signed */
    int64_t callback_timeout_ms; /* one delivery attempt at most */
    int callback_attempts;       /* attempts before callback_status "failed" */
    long callback_backoff_ms;    /* before the 2nd attempt; doubled each time, capped at 10 min */
    int64_t heartbeat_ms;        /* SSE comment heartbeat interval */
    long event_log;              /* events the durable log keeps */
    long event_buffer;           /* recent events kept in memory for live SSE clients */
    long resident_jobs;          /* pending jobs kept whole in memory per queue; 0 = all */
    /* Owned (heap): freed by config_free(). */
    char *plugins[CONFIG_MAX_PLUGINS]; /* --plugin PATH (repeatable), JOBD_PLUGINS (a:b), file "plugins" */
    int n_plugins;
    struct cJSON *commands; /* the file's "commands" array as given (checked by the task registry), or NULL */
};

/* Result of config_load(). */
enum config_result {
    CONFIG_OK = 0,  /* run the server */
    CONFIG_EXIT,    /* --help or --version was printed: exit 0 */
    CONFIG_ERROR,   /* err holds a message naming the setting: exit 2 */
};

/* Fills *cfg from defaults, the config file (--config / JOBD_CONFIG), the
 * environment `envp` (NULL-terminated "NAME=value" strings, e.g. environ) and
 * argv, then checks the settings together: a --listen address that is not
 * loopback (config_listen_is_loopback) needs a token or --insecure-no-auth
 * (SPEC §3), else CONFIG_ERROR. `ncores` sizes the default executors. Output for --help/--version goes
 * to `out`. *cfg must be zeroed or hold an earlier config_load() result (whose
 * heap parts are freed first); on CONFIG_OK the caller frees it with
 * config_free(), on any other result nothing is left to free. */
enum config_result config_load(struct config *cfg, int argc, char **argv, char **envp, int ncores, FILE *out,
                               char *err, size_t errlen);

/* Parses an executor list "NAME=KIND:SIZE[,...]" into cfg->executors
 * (replacing them); each gets cfg->max_queued. Returns 0 or -1 with err set. */
int config_parse_executors(struct config *cfg, const char *list, char *err, size_t errlen);

void config_print_help(FILE *out);

/* True when `host` (cfg->listen_host) can only be reached from this machine:
 * "localhost", an IPv4 address in 127.0.0.0/8, or ::1 (also as ::ffff:127.x.y.z).
 * Any other name counts as reachable from outside, even one that would resolve
 * to a loopback address: names are not resolved here. */
bool config_listen_is_loopback(const char *host);

/* Frees what config_load() allocated (plugins, commands) and clears those
 * fields. Accepts NULL and a config that holds none. */
void config_free(struct config *cfg);

#endif
