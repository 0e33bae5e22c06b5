#include "exec.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "exec_int.h"

int exec_new(const struct exec_config *cfg, const struct task_registry *tasks, const struct exec_hooks *hooks,
             struct executor **out)
{
    if (!cfg || !cfg->name || cfg->size < 1) return -EINVAL;
    switch (cfg->kind) {
    case TASK_KIND_THREAD: return exec_thread_new(cfg, tasks, hooks, out);
    case TASK_KIND_PROCESS: return exec_process_new(cfg, tasks, hooks, out);
    case TASK_KIND_ASYNC: return exec_async_new(cfg, tasks, hooks, out);
    default:
        LOG_ERROR("executor %s: kind %s is not available in this build", cfg->name,
                  task_kind_name(cfg->kind) ? task_kind_name(cfg->kind) : "?");
        return -EINVAL;
    }
}

int exec_submit(struct executor *ex, struct job *job, bool reloadable)
{
    return ex->vt->submit(ex, job, reloadable && ex->hooks.load && ex->resident_max > 0);
}
int exec_cancel(struct executor *ex, const char *job_id) { return ex->vt->cancel(ex, job_id); }
void exec_get_stats(struct executor *ex, struct exec_stats *out) { ex->vt->stats(ex, out); }
int exec_workers(struct executor *ex, struct exec_worker *out, int max)
{
    return max > 0 ? ex->vt->workers(ex, out, max) : 0;
}
void exec_drain(struct executor *ex, int64_t grace_ms) { ex->vt->drain(ex, grace_ms); }
const char *exec_name(const struct executor *ex) { return ex->name; }
unsigned exec_kind(const struct executor *ex) { return ex->kind; }

void exec_free(struct executor *ex)
{
    if (ex) ex->vt->free(ex);
}

int exec_base_init(struct executor *ex, const struct exec_vtable *vt, const struct exec_config *cfg,
                   const struct task_registry *tasks, const struct exec_hooks *hooks)
{
    ex->vt = vt;
    ex->kind = cfg->kind;
    ex->size = cfg->size;
    ex->resident_max = cfg->resident_max > 0 ? cfg->resident_max : 0;
    ex->hooks = *hooks;
    ex->tasks = tasks;
    ex->name = strdup(cfg->name);
    return ex->name ? 0 : -ENOMEM;
}

void exec_base_fini(struct executor *ex)
{
    free(ex->name);
    ex->name = NULL;
}

void exec_worker_fill(struct exec_worker *w, int slot, int pid, const char *thread, const struct job *job,
                      int64_t started_at_ms)
{
    memset(w, 0, sizeof *w);
    w->slot = slot;
    w->pid = pid;
    snprintf(w->thread, sizeof w->thread, "%s", thread);
    if (!job) return;
    memcpy(w->job_id, job->id, sizeof w->job_id);
    snprintf(w->task, sizeof w->task, "%s", job->task ? job->task : "");
    w->started_at_ms = started_at_ms;
}

void exec_cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &attr);
    pthread_condattr_destroy(&attr);
}

bool exec_wait_idle(pthread_mutex_t *lock, pthread_cond_t *cv, const int *busy, int64_t deadline_ns)
{
    while (*busy > 0) {
        if (deadline_ns == INT64_MAX) {
            pthread_cond_wait(cv, lock);
            continue;
        }
        if (clock_mono_ns() >= deadline_ns) return false;
        struct timespec ts = {.tv_sec = deadline_ns / 1000000000LL, .tv_nsec = deadline_ns % 1000000000LL};
        pthread_cond_timedwait(cv, lock, &ts); /* timeout or wake: re-check */
    }
    return true;
}

int exec_job_cmp(const struct job *a, const struct job *b)
{
    if (a->priority != b->priority) return a->priority > b->priority ? -1 : 1;
    return strcmp(a->id, b->id);
}

/* exec_job_cmp on entries (a cold entry keeps the priority and id). */
static int qent_cmp(const struct exec_qent *a, const struct exec_qent *b)
{
    if (a->priority != b->priority) return a->priority > b->priority ? -1 : 1;
    return strcmp(a->id, b->id);
}

static void heap_swap(struct exec_heap *h, long i, long j)
{
    struct exec_qent t = h->v[i];
    h->v[i] = h->v[j];
    h->v[j] = t;
}

static void heap_up(struct exec_heap *h, long i)
{
    while (i > 0) {
        long p = (i - 1) / 2;
        if (qent_cmp(&h->v[i], &h->v[p]) >= 0) break;
        heap_swap(h, i, p);
        i = p;
    }
}

static void heap_down(struct exec_heap *h, long i)
{
    for (;;) {
        long l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && qent_cmp(&h->v[l], &h->v[m]) < 0) m = l;
        if (r < h->n && qent_cmp(&h->v[r], &h->v[m]) < 0) m = r;
        if (m == i) return;
        heap_swap(h, i, m);
        i = m;
    }
}

/* Takes entry i out, keeping the heap in order. */
static struct exec_qent heap_remove_at(struct exec_heap *h, long i)
{
    struct exec_qent e = h->v[i];
    h->v[i] = h->v[--h->n];
    if (i < h->n) {
        heap_up(h, i);
        heap_down(h, i);
    }
    return e;
}

/* Makes entry i resident: true, or false when its load failed and the entry
 * was removed (the heap changed: callers look again). */
static bool heap_warm(struct executor *ex, struct exec_heap *h, long i)
{
    if (h->v[i].job) return true;
    struct job *job = ex->hooks.load(ex->hooks.ctx, ex->name, h->v[i].id);
    if (!job) {
        heap_remove_at(h, i);
        return false;
    }
    h->v[i].job = job;
    return true;
}

int exec_heap_push(struct executor *ex, struct exec_heap *h, struct job *job, bool reloadable)
{
    if (h->n == h->cap) {
        long cap = h->cap ? h->cap * 2 : 64;
        struct exec_qent *v = realloc(h->v, (size_t)cap * sizeof *v);
        if (!v) return -ENOMEM;
        h->v = v;
        h->cap = cap;
    }
    struct exec_qent *e = &h->v[h->n];
    e->priority = job->priority;
    memcpy(e->id, job->id, sizeof e->id);
    e->job = job;
    if (reloadable && ex->resident_max > 0 && h->n >= ex->resident_max) {
        e->job = NULL;
        job_free(job);
    }
    heap_up(h, h->n++);
    return 0;
}

struct job *exec_heap_peek(struct executor *ex, struct exec_heap *h)
{
    while (h->n > 0 && !heap_warm(ex, h, 0)) {
    }
    return h->n > 0 ? h->v[0].job : NULL;
}

struct job *exec_heap_pop(struct executor *ex, struct exec_heap *h)
{
    struct job *top = exec_heap_peek(ex, h);
    if (top) heap_remove_at(h, 0);
    return top;
}

struct job *exec_heap_remove_id(struct executor *ex, struct exec_heap *h, const char *id)
{
    for (long i = 0; i < h->n; i++) {
        if (strcmp(h->v[i].id, id) != 0) continue;
        if (!heap_warm(ex, h, i)) return NULL;
        return heap_remove_at(h, i).job;
    }
    return NULL;
}

void exec_heap_fini(struct exec_heap *h)
{
    free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}

struct exec_heap exec_heap_take(struct exec_heap *h)
{
    struct exec_heap taken = *h;
    *h = (struct exec_heap){0};
    return taken;
}

void exec_heap_drained(struct executor *ex, struct exec_heap *left)
{
    for (long i = 0; i < left->n; i++) {
        if (left->v[i].job)
            ex->hooks.done(ex->hooks.ctx, left->v[i].job, EXEC_DRAINED);
        else if (ex->hooks.dropped)
            ex->hooks.dropped(ex->hooks.ctx, left->v[i].id);
    }
    exec_heap_fini(left);
}

enum exec_outcome exec_run_task(const struct task_registry *tasks, struct job *job, struct task_ctx *ctx)
{
    const struct task_def *def = task_find(tasks, job->task);
    cJSON *args = NULL;
    enum exec_outcome outcome = EXEC_FAILED;

    ctx->job_id = job->id;
    ctx->result = NULL;
    ctx->error_type = JOB_ERR_NONE;
    ctx->error_message[0] = '\0';
    if (!def) {
        task_fail(ctx, JOB_ERR_TASK, "task '%s' is not registered on this server", job->task);
        goto out;
    }
    args = cJSON_Parse(job->args ? job->args : "{}");
    if (!args) {
        task_fail(ctx, JOB_ERR_TASK, "the stored args are not valid JSON");
        goto out;
    }
    ctx->args = args;
    if (def->run(ctx) == 0) {
        char *text = NULL;
        if (ctx->result && !(text = cJSON_PrintUnformatted(ctx->result))) {
            task_fail(ctx, JOB_ERR_INVALID_RESULT, "the task's result could not be serialised");
            goto out;
        }
        free(job->result);
        job->result = text;
        outcome = EXEC_OK;
    } else {
        if (ctx->error_type == JOB_ERR_NONE) ctx->error_type = JOB_ERR_TASK;
        /* A failed task may leave a result (exec keeps its exit code and output). */
        if (ctx->result) {
            free(job->result);
            job->result = cJSON_PrintUnformatted(ctx->result);
        }
    }
out:
    if (outcome != EXEC_OK) {
        job->error_type = ctx->error_type;
        free(job->error_message);
        job->error_message = strdup(ctx->error_message[0] ? ctx->error_message : "the task failed");
    }
    cJSON_Delete(ctx->result);
    ctx->result = NULL;
    ctx->args = NULL;
    cJSON_Delete(args);
    return outcome;
}
