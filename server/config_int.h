/* config_int.h - what server/config.c (the settings table, argv, the
 * environment) and server/config_file.c (the config file) share. Private to
 * the two; everything else includes config.h.
 */
#ifndef JOBD_CONFIG_INT_H
#define JOBD_CONFIG_INT_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "config.h"

#define MAX_QUEUED_MAX 100000000L
#define CONFIG_FILE_MAX (1 << 20) /* bytes */

struct load {
    struct config *cfg;
    char *err;
    size_t errlen;
    const char *token_by; /* flag of the token setting used in the current source, or NULL */
    /* Settings given by a higher-precedence source: a lower source's value for
     * them is never looked at, so a bad JOBD_LISTEN cannot stop a good --listen. */
    bool by_flag[64];
    bool by_env[64];
};

/* T_DURATION_MS: whole seconds, or a whole number with a unit suffix s, m, h
 * or d ("90s", "12h", "7d"); bounds in seconds; stored as int64_t ms. */
enum type { T_STRING, T_BOOL, T_INT, T_LONG, T_SECONDS_MS, T_DURATION_MS, T_CUSTOM };

struct setting {
    const char *flag;    /* without "--"; the file key is this with '_' for '-' */
    const char *metavar; /* NULL for booleans, which take no value */
    const char *env;
    enum type type;
    const char *def;     /* default as text ("N" = cores), NULL = none */
    long long min, max;  /* bounds of T_INT, T_LONG, T_SECONDS_MS, T_DURATION_MS (seconds) */
    size_t offset, size; /* field in struct config (all but T_CUSTOM) */
    int (*parse)(struct load *L, const char *name, const char *value); /* T_CUSTOM */
    const char *help;
};

struct exec_list {
    struct core_executor_config e[CONFIG_MAX_EXECUTORS];
    int n;
};

/* Writes the message to L->err; returns -1 (CONFIG_ERROR's value). */
int config__fail(struct load *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int config__parse_int(struct load *L, const char *name, const char *v, long long min, long long max,
                      long long *out);
/* Reads a whole file of at most max bytes (NUL-terminated); 0 or -errno. */
int config__read_file(const char *path, size_t max, char **out, size_t *len);
/* Parses v as setting s and stores it; name is how the user wrote it. */
int config__setting_apply(struct load *L, const struct setting *s, const char *name, const char *v);
const struct setting *config__setting_by_key(const char *key);
const struct setting *config__setting_by_flag(const char *flag, size_t len);
/* True when a higher-precedence source (argv, environment) gave s. */
bool config__overridden(const struct load *L, const struct setting *s);
int config__plugin_add(struct load *L, const char *name, const char *path, size_t len);
int config__set_executors(struct load *L, const char *name, const char *v);
/* Validates one executor and appends it to x (max_queued < 0: cfg->max_queued later). */
int config__exec_add(struct load *L, struct exec_list *x, const char *where, const char *name, const char *kind,
                     const char *size, long max_queued);

/* server/config_file.c: applies a JSON config file. */
int config__file_apply(struct load *L, const char *file);

#endif
