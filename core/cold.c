/* cold.c - pending jobs kept cold: past core_options.resident_jobs, a job
 * waiting on the timer heap or in an executor's ready queue keeps only its
 * id, priority and place (~170 bytes with its live entry) instead of the
 * whole job (~550 bytes), and is read back from the database when its turn
 * comes. Only a job whose committed row is its current state is let go (see
 * core__start_pending), so reading it back loses nothing. See
 * docs/DESIGN.md, "Memory of pending jobs".
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "core_int.h"

struct job *core__load_pending(struct core *c, const char *id, const char *executor)
{
    struct job *job = NULL;
    int rc = store_job_get(c->store, id, &job);
    if (rc == 0 && job->status != JOB_QUEUED && job->status != JOB_SCHEDULED) rc = -ESTALE;
    if (rc == 0 && executor && (!job->executor || strcmp(job->executor, executor) != 0))
        rc = job_set_str(&job->executor, executor);
    if (rc < 0) {
        LOG_ERROR("job %s: cannot read it back from the database (%s); it stays %s there and runs after a restart",
                  id, rc == -ESTALE ? "it is no longer pending" : strerror(-rc),
                  job ? job_status_name(job->status) : "pending");
        job_free(job);
        return NULL;
    }
    return job;
}

/* Executor hook, called with the executor's lock held: reads the job; when
 * that fails, the timer thread forgets it (core__lost_fire), since
 * forgetting calls back into executors (a held job of its concurrency key
 * may go). No core lock is taken here: the id goes on a lock-free stack, and
 * the signal may miss a timer about to sleep, which then finds it within
 * its 1 s tick. */
struct job *core__hook_load(void *ctx, const char *executor, const char *job_id)
{
    struct core *c = ctx;
    struct job *job = core__load_pending(c, job_id, executor);
    if (job) {
        job->status = JOB_QUEUED;
        return job;
    }
    struct lost_id *lost = malloc(sizeof *lost);
    if (!lost) {
        LOG_ERROR("job %s: out of memory; it stays live until restart", job_id);
        return NULL;
    }
    memcpy(lost->id, job_id, sizeof lost->id);
    struct lost_id *head = atomic_load(&c->lost);
    do {
        lost->next = head;
    } while (!atomic_compare_exchange_weak(&c->lost, &head, lost));
    pthread_cond_signal(&c->timer_cv);
    return NULL;
}

void core__hook_dropped(void *ctx, const char *job_id)
{
    core__forget_unstarted(ctx, job_id);
}

void core__lost_fire(struct core *c, struct lost_id *list)
{
    while (list) {
        struct lost_id *next = list->next;
        core__forget_unstarted(c, list->id);
        core_waiters_fire_id(c, list->id, -1);
        free(list);
        list = next;
    }
}
