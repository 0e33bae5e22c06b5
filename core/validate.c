/* validate.c - from a submit spec (untrusted JSON) to a job, or a clear error.
 *
 * Every check names the offending field by its JSON path (with the caller's
 * prefix, e.g. "jobs[3].") and says what would be accepted. Nothing here
 * allocates a job until the whole spec is known to be good.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/clock.h"
#include "../common/hash.h"
#include "../common/log.h"
#include "core_int.h"

#define MAX_PRIORITY 1000000000.0
#define MAX_TIMEOUT_S (7 * 86400.0)
#define MAX_DELAY_S (366 * 86400.0)
#define MAX_BACKOFF_S 86400.0
#define MAX_ATTEMPTS 100
#define MAX_KEY_LEN 200

#define MAX_DEPS 1000
#define MAX_CONCURRENCY_LIMIT 100000
#define MAX_URL_LEN 2000

static const char *const known[] = {"task",         "args",          "executor", "priority",       "timeout",
                                    "max_attempts", "retry_backoff", "delay",    "run_at",         "idempotency_key",
                                    "depends_on",   "concurrency_key", "concurrency_limit", "callback_url"};

/* "thread", "thread and process", "thread, process and async" (or "or"). */
static const char *kinds_join(unsigned kinds, const char *conj, char *buf, size_t cap)
{
    const char *names[3];
    int n = 0;
    for (unsigned k = 1; k <= TASK_KIND_ASYNC; k <<= 1)
        if (kinds & k) names[n++] = task_kind_name(k);
    if (n == 1) snprintf(buf, cap, "%s", names[0]);
    else if (n == 2) snprintf(buf, cap, "%s %s %s", names[0], conj, names[1]);
    else if (n == 3) snprintf(buf, cap, "%s, %s %s %s", names[0], names[1], conj, names[2]);
    else snprintf(buf, cap, "no");
    return buf;
}

static const char *kinds_list(unsigned kinds, char *buf, size_t cap)
{
    return kinds_join(kinds, "and", buf, cap);
}

int core_resolve_executor(struct core *c, const struct task_def *def, const char *name, int *idx,
                          struct api_err *err)
{
    char kinds[64];
    if (name) {
        for (int i = 0; i < c->n_execs; i++) {
            if (strcmp(c->execs[i].cfg.name, name) != 0) continue;
            if (!(def->kinds & c->execs[i].cfg.kind))
                return api_err_set(err, API_INVALID_ARGUMENT, "executor",
                                   "Task '%s' cannot run on executor '%s' (kind %s): it runs on %s executors%s%s.",
                                   def->name, name, task_kind_name(c->execs[i].cfg.kind),
                                   kinds_list(def->kinds, kinds, sizeof kinds),
                                   def->kinds_reason ? ", because " : "", def->kinds_reason ? def->kinds_reason : "");
            *idx = i;
            return 0;
        }
        char names[512] = "";
        size_t o = 0;
        for (int i = 0; i < c->n_execs && o < sizeof names; i++)
            o += (size_t)snprintf(names + o, sizeof names - o, "%s'%s'", i ? ", " : "", c->execs[i].cfg.name);
        return api_err_set(err, API_INVALID_ARGUMENT, "executor", "Unknown executor '%s'; configured: %s.", name,
                           names);
    }
    for (int i = 0; i < c->n_execs; i++) {
        if (c->execs[i].cfg.kind == def->default_kind) {
            *idx = i;
            return 0;
        }
    }
    for (int i = 0; i < c->n_execs; i++) {
        if (c->execs[i].cfg.kind & def->kinds) {
            *idx = i;
            return 0;
        }
    }
    return api_err_set(err, API_INVALID_ARGUMENT, "task",
                       "No configured executor can run task '%s': it needs a %s executor.", def->name,
                       kinds_join(def->kinds, "or", kinds, sizeof kinds));
}

/* Reads an optional number field in [lo, hi]; integral when `integer`. */
static int get_number(const cJSON *spec, const char *name, const char *prefix, double lo, double hi, bool integer,
                      double *out, bool *present, struct api_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(spec, name);
    char field[128]; /* the field's path, made only for an error: this runs ~10 times per submit */
    *present = false;
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
        snprintf(field, sizeof field, "%s%s", prefix, name);
        return api_err_set(err, API_INVALID_ARGUMENT, field, "%s must be %s from %g to %g.", field,
                           integer ? "an integer" : "a number", lo, hi);
    }
    double d = v->valuedouble;
    if ((integer && d != floor(d)) || d < lo || d > hi) {
        snprintf(field, sizeof field, "%s%s", prefix, name);
        return api_err_set(err, API_INVALID_ARGUMENT, field, "%s must be %s from %g to %g, got %g.", field,
                           integer ? "an integer" : "a number", lo, hi, d);
    }
    *out = d;
    *present = true;
    return 0;
}

/* Reads an optional string field of 1..max_len bytes. */
static int get_string(const cJSON *spec, const char *name, const char *prefix, size_t max_len, const char **out,
                      struct api_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(spec, name);
    char field[128];
    *out = NULL;
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsString(v) || !v->valuestring[0] || strlen(v->valuestring) > max_len) {
        snprintf(field, sizeof field, "%s%s", prefix, name);
        return api_err_set(err, API_INVALID_ARGUMENT, field, "%s must be a non-empty string of at most %zu bytes.",
                           field, max_len);
    }
    *out = v->valuestring;
    return 0;
}

/* True when a job with this id exists: live, or in the database. */
static bool job_exists(struct core *c, const char *id)
{
    pthread_mutex_lock(&c->lock);
    bool live = hmap_get(&c->live, id) != NULL;
    pthread_mutex_unlock(&c->lock);
    if (live) return true;
    struct job *j = NULL;
    int rc = store_job_get(c->store, id, &j);
    job_free(j);
    return rc == 0;
}

/* depends_on: an array of existing job ids, or in a batch (batch_n > 0) also
 * of indexes of other jobs of the batch (kept as numbers in *out for
 * core_batch_from_json to replace). Duplicates are dropped. */
static int get_depends_on(struct core *c, const cJSON *spec, const char *prefix, size_t batch_n, size_t self,
                          char **out, struct api_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(spec, "depends_on");
    char field[160];
    *out = NULL;
    if (!v || cJSON_IsNull(v)) return 0;
    snprintf(field, sizeof field, "%sdepends_on", prefix);
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) > MAX_DEPS)
        return api_err_set(err, API_INVALID_ARGUMENT, field, "%s must be an array of at most %d job ids%s.", field,
                           MAX_DEPS, batch_n ? " (or indexes of jobs in this batch)" : "");
    /* Duplicates are found with a set (a bitmap of batch indexes, a hash
     * set of ids), not by comparing each entry with the ones before: up to
     * 1,000 entries on each of up to 10,000 jobs of a batch. */
    size_t n = (size_t)cJSON_GetArraySize(v), cap = 8;
    while (cap < 2 * n) cap <<= 1;
    cJSON *ids = cJSON_CreateArray();
    const char **seen_id = calloc(cap, sizeof *seen_id);
    unsigned char *seen_idx = batch_n ? calloc(batch_n, 1) : NULL;
    int i = 0, rc = -1;
    if (!ids || !seen_id || (batch_n && !seen_idx)) {
        api_err_set(err, API_INTERNAL, NULL, "The server ran out of memory.");
        goto out;
    }
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        snprintf(field, sizeof field, "%sdepends_on[%d]", prefix, i);
        cJSON *item = NULL;
        if (batch_n && cJSON_IsNumber(e)) {
            double d = e->valuedouble;
            if (d != floor(d) || d < 0 || d >= (double)batch_n) {
                api_err_set(err, API_INVALID_ARGUMENT, field, "%s must be the index of a job in this batch (0 to %zu).",
                            field, batch_n - 1);
                goto out;
            }
            if ((size_t)d == self) {
                api_err_set(err, API_INVALID_ARGUMENT, field, "%s: a job cannot depend on itself.", field);
                goto out;
            }
            if (seen_idx[(size_t)d]++) continue;
            item = cJSON_CreateNumber(d);
        } else if (cJSON_IsString(e) && id_valid(e->valuestring)) {
            size_t k = hash_str(e->valuestring) & (cap - 1);
            while (seen_id[k] && strcmp(seen_id[k], e->valuestring) != 0) k = (k + 1) & (cap - 1);
            if (seen_id[k]) continue; /* given before */
            seen_id[k] = e->valuestring;
            if (!job_exists(c, e->valuestring)) {
                api_err_set(err, API_INVALID_ARGUMENT, field, "%s: no job has the id %s.", field, e->valuestring);
                goto out;
            }
            item = cJSON_CreateString(e->valuestring);
        } else {
            api_err_set(err, API_INVALID_ARGUMENT, field, "%s must be a job id (26 characters, as returned by a submit)%s.",
                        field, batch_n ? " or the index of a job in this batch" : "");
            goto out;
        }
        if (!item) {
            api_err_set(err, API_INTERNAL, NULL, "The server ran out of memory.");
            goto out;
        }
        cJSON_AddItemToArray(ids, item);
    }
    if (!(*out = cJSON_PrintUnformatted(ids))) {
        api_err_set(err, API_INTERNAL, NULL, "The server ran out of memory.");
        goto out;
    }
    rc = 0;
out:
    cJSON_Delete(ids);
    free(seen_id);
    free(seen_idx);
    return rc;
}

/* callback_url: an absolute http:// or https:// URL. */
static int get_callback_url(const cJSON *spec, const char *prefix, const char **out, struct api_err *err)
{
    char field[160];
    if (get_string(spec, "callback_url", prefix, MAX_URL_LEN, out, err) < 0) return -1;
    const char *u = *out;
    if (u && ((strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0) || strlen(u) < 10 ||
              strpbrk(u, " \t\r\n") != NULL)) {
        snprintf(field, sizeof field, "%scallback_url", prefix);
        return api_err_set(err, API_INVALID_ARGUMENT, field,
                           "%s must be an absolute http:// or https:// URL without spaces, got \"%.64s\".", field, u);
    }
    return 0;
}

int core_job_from_json(struct core *c, const cJSON *spec, const char *prefix, struct job **out, struct api_err *err)
{
    return core__job_from_json(c, spec, prefix, 0, 0, out, err);
}

int core__job_from_json(struct core *c, const cJSON *spec, const char *prefix, size_t batch_n, size_t self,
                        struct job **out, struct api_err *err)
{
    char field[160];
    const char *task_name, *executor, *run_at_s, *idem, *ckey, *callback_url;
    double climit = 0;
    bool has_climit;
    char *deps_text = NULL;
    double priority = 0, timeout = 0, attempts = 1, backoff = 1, delay = 0;
    bool has_priority, has_timeout, has_attempts, has_backoff, has_delay;
    int64_t run_at_ms = 0;
    int exec_idx = -1;
    char *args_text = NULL;
    struct job *job = NULL;

    if (!cJSON_IsObject(spec)) {
        /* The prefix "jobs[3]." names the entry itself as "jobs[3]". */
        snprintf(field, sizeof field, "%.*s", (int)(strlen(prefix) ? strlen(prefix) - 1 : 0), prefix);
        return api_err_set(err, API_INVALID_ARGUMENT, field[0] ? field : NULL,
                           "A job must be a JSON object like {\"task\": \"noop\", \"args\": {}}.");
    }
    for (const cJSON *f = spec->child; f; f = f->next) {
        for (const cJSON *g = spec->child; g != f; g = g->next) {
            if (strcmp(g->string, f->string) == 0) {
                snprintf(field, sizeof field, "%s%s", prefix, f->string);
                return api_err_set(err, API_INVALID_ARGUMENT, field, "%s is given twice; give it once.", field);
            }
        }
        bool ok = false;
        for (size_t i = 0; i < sizeof known / sizeof *known; i++) ok = ok || strcmp(f->string, known[i]) == 0;
        if (ok) continue;
        snprintf(field, sizeof field, "%s%s", prefix, f->string);
        return api_err_set(err, API_INVALID_ARGUMENT, field,
                           "Unknown field %s; a job takes task, args, executor, priority, timeout, max_attempts, "
                           "retry_backoff, delay, run_at, idempotency_key, depends_on, concurrency_key, "
                           "concurrency_limit and callback_url.",
                           field);
    }

    const cJSON *t = cJSON_GetObjectItemCaseSensitive(spec, "task");
    if (prefix[0])
        snprintf(field, sizeof field, "%stask", prefix);
    else
        memcpy(field, "task", sizeof "task"); /* the common case, without printf */
    if (!t) return api_err_set(err, API_INVALID_ARGUMENT, field, "%s is required: the name of a registered task.", field);
    if (!cJSON_IsString(t))
        return api_err_set(err, API_INVALID_ARGUMENT, field, "%s must be a string naming a task (GET /v1/tasks).",
                           field);
    task_name = t->valuestring;
    const struct task_def *def = task_find(c->tasks, task_name);
    if (!def)
        return api_err_set(err, API_INVALID_ARGUMENT, field, "Unknown task '%.64s'; GET /v1/tasks lists them.",
                           task_name);

    const cJSON *args = cJSON_GetObjectItemCaseSensitive(spec, "args");
    cJSON *empty = NULL;
    if (!args) args = empty = cJSON_CreateObject();
    if (!args) return api_err_set(err, API_INTERNAL, NULL, "The server ran out of memory.");
    if (def->validate) {
        struct api_err aerr = {0};
        if (def->validate(args, &aerr) < 0) {
            cJSON_Delete(empty);
            /* Re-root the task's field ("args.n") under the prefix. */
            char fpath[256];
            snprintf(fpath, sizeof fpath, "%s%s", prefix, aerr.field[0] ? aerr.field : "args");
            return api_err_set(err, aerr.code ? aerr.code : API_INVALID_ARGUMENT, fpath, "%s", aerr.message);
        }
    }
    args_text = cJSON_PrintUnformatted(args);
    cJSON_Delete(empty);
    if (!args_text) return api_err_set(err, API_INTERNAL, NULL, "The server ran out of memory.");

    int rc = -1;
    if (get_string(spec, "executor", prefix, CORE_NAME_MAX - 1, &executor, err) < 0) goto out;
    if (core_resolve_executor(c, def, executor, &exec_idx, err) < 0) {
        if (prefix[0] && err->field[0]) {
            snprintf(field, sizeof field, "%s%s", prefix, err->field);
            snprintf(err->field, sizeof err->field, "%.127s", field);
        }
        goto out;
    }
    if (get_number(spec, "priority", prefix, -MAX_PRIORITY, MAX_PRIORITY, true, &priority, &has_priority, err) < 0 ||
        get_number(spec, "timeout", prefix, 0.001, MAX_TIMEOUT_S, false, &timeout, &has_timeout, err) < 0 ||
        get_number(spec, "max_attempts", prefix, 1, MAX_ATTEMPTS, true, &attempts, &has_attempts, err) < 0 ||
        get_number(spec, "retry_backoff", prefix, 0, MAX_BACKOFF_S, false, &backoff, &has_backoff, err) < 0 ||
        get_number(spec, "delay", prefix, 0, MAX_DELAY_S, false, &delay, &has_delay, err) < 0 ||
        get_string(spec, "run_at", prefix, 64, &run_at_s, err) < 0 ||
        get_string(spec, "idempotency_key", prefix, MAX_KEY_LEN, &idem, err) < 0 ||
        get_string(spec, "concurrency_key", prefix, MAX_KEY_LEN, &ckey, err) < 0 ||
        get_number(spec, "concurrency_limit", prefix, 1, MAX_CONCURRENCY_LIMIT, true, &climit, &has_climit, err) < 0 ||
        get_callback_url(spec, prefix, &callback_url, err) < 0 ||
        get_depends_on(c, spec, prefix, batch_n, self, &deps_text, err) < 0)
        goto out;
    if (has_climit && !ckey) {
        snprintf(field, sizeof field, "%sconcurrency_limit", prefix);
        api_err_set(err, API_INVALID_ARGUMENT, field, "%s needs a concurrency_key: the name of what is limited.",
                    field);
        goto out;
    }
    if (run_at_s) {
        snprintf(field, sizeof field, "%srun_at", prefix);
        if (has_delay) {
            api_err_set(err, API_INVALID_ARGUMENT, field, "Give either delay or run_at, not both.");
            goto out;
        }
        if (clock_parse_rfc3339(run_at_s, &run_at_ms) < 0) {
            api_err_set(err, API_INVALID_ARGUMENT, field,
                        "%s must be an RFC 3339 time like 2026-11-21T10:00:00Z, got \"%.64s\".", field, run_at_s);
            goto out;
        }
        if (run_at_ms > clock_wall_ms() + (int64_t)(MAX_DELAY_S * 1000.0)) {
            api_err_set(err, API_INVALID_ARGUMENT, field, "%s must be within %g days from now.", field,
                        MAX_DELAY_S / 86400.0);
            goto out;
        }
    }

    if (!(job = job_new())) {
        api_err_set(err, API_INTERNAL, NULL, "The server ran out of memory.");
        goto out;
    }
    id_new(job->id);
    job->created_at_ms = clock_wall_ms();
    free(job->args);
    job->args = args_text;
    args_text = NULL;
    job->priority = (int64_t)priority;
    job->timeout_ms = has_timeout ? (int64_t)(timeout * 1000.0 + 0.5) : 0;
    if (has_timeout && job->timeout_ms < 1) job->timeout_ms = 1;
    job->max_attempts = (int)attempts;
    job->retry_backoff_ms = (int64_t)(backoff * 1000.0 + 0.5);
    job->scheduled_at_ms = job->created_at_ms;
    if (has_delay && delay > 0) job->scheduled_at_ms = job->created_at_ms + (int64_t)(delay * 1000.0 + 0.5);
    if (run_at_s) job->scheduled_at_ms = run_at_ms > job->created_at_ms ? run_at_ms : job->created_at_ms;
    if (deps_text) {
        free(job->depends_on);
        job->depends_on = deps_text;
        deps_text = NULL;
    }
    job->concurrency_limit = ckey ? (has_climit ? (int)climit : 1) : 0;
    bool has_deps = strcmp(job->depends_on, "[]") != 0;
    job->status = job->scheduled_at_ms > job->created_at_ms || has_deps ? JOB_SCHEDULED : JOB_QUEUED;
    if (job_set_str(&job->task, def->name) < 0 || job_set_str(&job->executor, c->execs[exec_idx].cfg.name) < 0 ||
        job_set_str(&job->idempotency_key, idem) < 0 || job_set_str(&job->concurrency_key, ckey) < 0 ||
        job_set_str(&job->callback_url, callback_url) < 0) {
        api_err_set(err, API_INTERNAL, NULL, "The server ran out of memory.");
        goto out;
    }
    *out = job;
    job = NULL;
    rc = 0;
out:
    job_free(job);
    cJSON_free(args_text);
    cJSON_free(deps_text);
    return rc;
}
