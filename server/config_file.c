/* config_file.c - the config file (--config, JOBD_CONFIG): a JSON object
 * whose keys are the flags of jobd --help with '_' for '-', plus "commands"
 * (command tasks) and "plugins"; executors may be a list of objects with
 * per-executor limits. Each value goes through the same parser as the flag
 * (config.c); the settings given by argv or the environment are skipped.
 */
#include "config_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *json_type(const cJSON *j)
{
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsBool(j)) return "a boolean";
    if (cJSON_IsArray(j)) return "a list";
    if (cJSON_IsObject(j)) return "an object";
    return "null";
}

/* A JSON number as the decimal text the setting parsers take; -1 if not whole. */
static int json_int_text(const cJSON *j, char *buf, size_t len)
{
    double d = j->valuedouble;
    if (d != d || d < -9e15 || d > 9e15 || d != (double)(long long)d) return -1;
    snprintf(buf, len, "%lld", (long long)d);
    return 0;
}

/* Reads an optional whole-number key of an executor entry into *out. */
static int exec_entry_number(struct load *L, const char *where, const char *key, const cJSON *v, long long lo,
                             long long hi, long long *out)
{
    char what[4300], text[32];
    if (!v) return 0;
    snprintf(what, sizeof what, "%s.%s", where, key);
    if (!cJSON_IsNumber(v)) return config__fail(L, "%s: expected a number, not %s", what, json_type(v));
    if (json_int_text(v, text, sizeof text) < 0)
        return config__fail(L, "%s: %g is not a whole number", what, v->valuedouble);
    return config__parse_int(L, what, text, lo, hi, out);
}

/* The file form of executors:
 * [{"name", "kind", "size", "max_queued"?, "memory_mb"?, "cpu_seconds"?}, ...];
 * the limits apply to process executors only. */
static int exec_array_apply(struct load *L, const char *file, const cJSON *arr)
{
    enum { K_NAME, K_KIND, K_SIZE, K_MAXQ, K_MEM, K_CPU, K_N };
    static const char *const keys[K_N] = {"name", "kind", "size", "max_queued", "memory_mb", "cpu_seconds"};
    struct exec_list x = {.n = 0};
    const cJSON *item;
    int i = 0;
    cJSON_ArrayForEach(item, arr) {
        char where[4200], num[32];
        const cJSON *v[K_N] = {NULL};
        long long mq = -1, mem = 0, cpu = 0;
        snprintf(where, sizeof where, "%s: executors[%d]", file, i++);
        if (!cJSON_IsObject(item)) return config__fail(L, "%s: expected an object, not %s", where, json_type(item));
        for (const cJSON *f = item->child; f; f = f->next) {
            size_t k = 0;
            while (k < K_N && strcmp(f->string, keys[k]) != 0) k++;
            if (k == K_N)
                return config__fail(L, "%s: unknown key \"%s\" (name, kind, size, max_queued, memory_mb, cpu_seconds)",
                                    where, f->string);
            v[k] = f;
        }
        if (!cJSON_IsString(v[K_NAME]) || !cJSON_IsString(v[K_KIND]) || !cJSON_IsNumber(v[K_SIZE]))
            return config__fail(L, "%s: needs \"name\" and \"kind\" strings and a \"size\" number", where);
        if (json_int_text(v[K_SIZE], num, sizeof num) < 0)
            return config__fail(L, "%s: size of executor \"%s\" is not a whole number", where, v[K_NAME]->valuestring);
        if (exec_entry_number(L, where, "max_queued", v[K_MAXQ], 1, MAX_QUEUED_MAX, &mq) < 0 ||
            exec_entry_number(L, where, "memory_mb", v[K_MEM], 16, 1024 * 1024, &mem) < 0 ||
            exec_entry_number(L, where, "cpu_seconds", v[K_CPU], 1, 86400 * 365, &cpu) < 0)
            return -1;
        if ((v[K_MEM] || v[K_CPU]) && strcmp(v[K_KIND]->valuestring, "process") != 0)
            return config__fail(L, "%s: memory_mb and cpu_seconds apply to process executors only", where);
        if (config__exec_add(L, &x, where, v[K_NAME]->valuestring, v[K_KIND]->valuestring, num, (long)mq) < 0)
            return -1;
        x.e[x.n - 1].memory_mb = (long)mem;
        x.e[x.n - 1].cpu_seconds = (long)cpu;
    }
    /* found by fuzz_config: [] was taken, and the server started with nowhere to run a job */
    if (x.n == 0) return config__fail(L, "%s: executors: the list is empty (at least one executor is needed)", file);
    memcpy(L->cfg->executors, x.e, sizeof x.e);
    L->cfg->n_executors = x.n;
    return 0;
}

int config__file_apply(struct load *L, const char *file)
{
    char *text = NULL;
    size_t len = 0;
    cJSON *root = NULL;
    const char *end = NULL;
    int rc = config__read_file(file, CONFIG_FILE_MAX, &text, &len);
    if (rc < 0) {
        rc = config__fail(L, "config file \"%s\": cannot read: %s", file, strerror(-rc));
        goto out;
    }
    root = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (!root || !cJSON_IsObject(root)) {
        int line = 1;
        for (const char *c = text; root == NULL && end && c < end; c++) line += *c == '\n';
        rc = root ? config__fail(L, "%s: expected a JSON object of settings, not %s", file, json_type(root))
                  : config__fail(L, "%s: not valid JSON (line %d)", file, line);
        goto out;
    }
    L->token_by = NULL;
    for (const cJSON *j = root->child; j; j = j->next) {
        const struct setting *s = config__setting_by_key(j->string);
        char name[4200], num[32];
        const char *v = NULL;
        snprintf(name, sizeof name, "%s: %s", file, j->string);
        if (strcmp(j->string, "commands") == 0) { /* the file only; checked when tasks are registered */
            if (!cJSON_IsArray(j)) {
                rc = config__fail(L, "%s: expected a list of command objects, not %s", name, json_type(j));
                goto out;
            }
            cJSON_Delete(L->cfg->commands); /* a repeated key: the last one wins, as for every key */
            if (!(L->cfg->commands = cJSON_Duplicate(j, true))) {
                rc = config__fail(L, "%s: out of memory", name);
                goto out;
            }
            continue;
        }
        if (strcmp(j->string, "plugins") == 0) {
            s = config__setting_by_flag("plugin", 6);
            if (config__overridden(L, s)) continue; /* overridden */
            const cJSON *p;
            if (!cJSON_IsArray(j)) {
                rc = config__fail(L, "%s: expected a list of paths, not %s", name, json_type(j));
                goto out;
            }
            cJSON_ArrayForEach(p, j) {
                if (!cJSON_IsString(p)) {
                    rc = config__fail(L, "%s: expected a list of paths, but it holds %s", name, json_type(p));
                    goto out;
                }
                if ((rc = config__plugin_add(L, name, p->valuestring, strlen(p->valuestring))) < 0) goto out;
            }
            continue;
        }
        if (s && strcmp(s->flag, "plugin") == 0) s = NULL; /* the file says "plugins" */
        if (!s || strcmp(s->flag, "config") == 0) {
            rc = config__fail(L, "%s: unknown key \"%s\" (keys are the flags of jobd --help, '_' for '-')", file,
                              j->string);
            goto out;
        }
        if (config__overridden(L, s)) continue; /* overridden */
        if (s->parse == config__set_executors && cJSON_IsArray(j)) {
            if ((rc = exec_array_apply(L, file, j)) < 0) goto out;
            continue;
        }
        if (s->type == T_BOOL && cJSON_IsBool(j)) v = cJSON_IsTrue(j) ? "true" : "false";
        else if ((s->type == T_STRING || s->type == T_CUSTOM || s->type == T_DURATION_MS) && cJSON_IsString(j))
            v = j->valuestring;
        else if (s->type != T_BOOL && s->type != T_STRING && s->type != T_CUSTOM && cJSON_IsNumber(j)) {
            if (json_int_text(j, num, sizeof num) < 0) {
                rc = config__fail(L, "%s: %g is not a whole number", name, j->valuedouble);
                goto out;
            }
            v = num;
        }
        if (!v) {
            rc = config__fail(L, "%s: expected %s, not %s", name,
                      s->type == T_BOOL ? "true or false"
                      : s->parse == config__set_executors ? "a list of executors or a string"
                      : (s->type == T_STRING || s->type == T_CUSTOM) ? "a string"
                      : s->type == T_DURATION_MS ? "a number of seconds or a duration string (\"7d\")"
                      : "a number",
                      json_type(j));
            goto out;
        }
        if ((rc = config__setting_apply(L, s, name, v)) < 0) goto out;
    }
    rc = 0;
out:
    cJSON_Delete(root);
    free(text);
    return rc;
}
