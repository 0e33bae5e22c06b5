/* process.c - the process executor: ProcessPoolExecutor(max_workers=size),
 * where a crash fails one job and the worker is replaced (no BrokenProcessPool).
 *
 * DESIGN. `size` workers are started once, at exec_process_new, and replaced
 * when they die (spawning per job would cap throughput at ~2,000 jobs/s; a
 * round trip to a live worker costs tens of microseconds). A worker is
 * cfg->worker_argv (the jobd binary with --internal-worker) started with
 * posix_spawn: its end of a socketpair dup'ed to fd 3 (every other descriptor
 * is close-on-exec, and closefrom(4) is a second guard), stdin /dev/null,
 * stdout and stderr inherited, the signal mask cleared and dispositions reset,
 * and in its own process group (pgid = pid), so that killpg() reaches whatever
 * the job started. RLIMIT_AS and a per-job RLIMIT_CPU budget are applied
 * with prlimit() right after the spawn, before the worker is sent a job (see
 * worker.c, which also has the spawning code and the worker's side, and
 * wire.h for the messages).
 *
 * One I/O thread per executor owns the workers: an epoll set with an eventfd
 * (wake-ups), each worker's socket and its pidfd (readable when the process
 * exits). It sends jobs, reads messages, enforces timeouts, kills and reaps.
 * It reaps only its own pids (waitpid(pid), never waitpid(-1), and no SIGCHLD
 * handler); every worker is spawned from this thread, because PDEATHSIG
 * follows the parent *thread*. Hooks run on it without any lock held.
 *
 * `lock` guards the ready heap, the counters and each slot's in-flight list
 * (the I/O thread writes the list under the lock and may read it without,
 * being its only writer; exec_cancel reads it under the lock). Submit pushes
 * to the heap and writes the eventfd only when a live worker has nothing in
 * flight: a busy worker's next job is sent when its DONE is read.
 *
 * Pipelining: a worker may hold up to PIPELINE_DEPTH jobs (sent, in a FIFO),
 * but only jobs of a task whose recent runs were all short (a decaying
 * maximum of its run times under PIPELINE_FAST_US), queued behind jobs that
 * are all of such tasks; an idle worker always gets one job first. Short jobs
 * then flow at ~200,000/s instead of ~50,000/s (one write carries several
 * jobs, no wake-up per job), and no job is parked behind a known-long one
 * while another worker idles. The price, bounded to PIPELINE_DEPTH - 1 jobs:
 * a task whose every recent run was short that suddenly runs long delays the
 * jobs queued behind it on that worker.
 *
 * started_at: when the worker began the job (its STARTED message, stamped
 * with its wall clock); only then are attempt, pid and status changed and
 * hooks.started called. The timeout runs from when the I/O thread reads
 * STARTED. A job sent but not started is still "queued": stats count it in
 * `queued`, and when its worker dies or is killed it goes back to the heap
 * with its attempt not counted. Cancel or drain of such a job sends SKIP; the
 * worker answers SKIPPED when it reaches it, or STARTED if it got there first.
 *
 * Ending a running job early (timeout, cancel, drain after grace) kills the
 * worker's group: SIGTERM, then SIGKILL after KILL_GRACE_NS. The worker turns
 * SIGTERM into should_stop(), so a cooperative task stops at once and cleans
 * up (the exec task stops its program within 100 ms + its own 500 ms grace,
 * hence 800 ms here); a task that does not cooperate dies at the SIGKILL. The
 * outcome is fixed when the kill is decided (later messages from that worker
 * are ignored) and reported once the worker is dead. Before reaping a worker
 * (while its pid, hence its pgid, cannot be reused) the rest of its group is
 * SIGKILLed. An unexpected death fails only the running job (`signal` or
 * `worker_lost`); the worker is replaced at once, or after a back-off when it
 * keeps dying right after start.
 */
#include "exec.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "process_int.h"

uint64_t proc__ev_data(enum ev_kind kind, int index, uint32_t gen)
{
    return (uint64_t)gen << 32 | (uint64_t)kind << 24 | (uint64_t)index;
}

static void wake(struct proc_exec *pe)
{
    uint64_t one = 1;
    /* EAGAIN means the counter is already non-zero: awake anyway. */
    while (write(pe->wakefd, &one, sizeof one) < 0 && errno == EINTR) {
    }
}

static bool slot_live(const struct slot *s)
{
    return s->pid > 0 && s->kill == KILL_NONE && !s->eof;
}

struct speed *proc__speed_of(struct proc_exec *pe, const struct task_def *def)
{
    for (size_t i = 0; i < pe->n_speeds; i++)
        if (pe->speeds[i].def == def) return &pe->speeds[i];
    if (pe->n_speeds == pe->cap_speeds) {
        size_t cap = pe->cap_speeds ? pe->cap_speeds * 2 : 16;
        struct speed *v = realloc(pe->speeds, cap * sizeof *v);
        if (!v) return NULL;
        pe->speeds = v;
        pe->cap_speeds = cap;
    }
    pe->speeds[pe->n_speeds] = (struct speed){.def = def, .slow_us = -1};
    return &pe->speeds[pe->n_speeds++];
}

static bool task_fast(struct proc_exec *pe, const struct task_def *def)
{
    struct speed *sp = def ? proc__speed_of(pe, def) : NULL;
    return sp && sp->slow_us >= 0 && sp->slow_us < PIPELINE_FAST_US;
}

/* ---- spawning --------------------------------------------------------------- */

static int slot_spawn(struct proc_exec *pe, struct slot *s)
{
    struct exec_worker_proc w;
    int rc = exec_worker_spawn(pe->argv, pe->memory_mb, pe->cpu_seconds, &w);
    if (rc < 0) return rc;
    s->gen++;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = proc__ev_data(EV_SOCK, s->index, s->gen)};
    if (epoll_ctl(pe->epfd, EPOLL_CTL_ADD, w.sock, &ev) < 0) rc = -errno;
    ev.data.u64 = proc__ev_data(EV_PIDFD, s->index, s->gen);
    if (rc == 0 && w.pidfd >= 0 && epoll_ctl(pe->epfd, EPOLL_CTL_ADD, w.pidfd, &ev) < 0) rc = -errno;
    if (rc < 0) { /* closing the fds also takes them out of the epoll set */
        int status;
        exec_worker_reap(&w, 0, &status);
        return rc;
    }
    s->pid = w.pid;
    s->sock = w.sock;
    s->pidfd = w.pidfd;
    s->eof = s->out_armed = s->sigkill_sent = s->ran_a_job = false;
    s->kill = KILL_NONE;
    s->spawned_ns = clock_mono_ns();
    s->respawn_at_ns = 0;
    LOG_DEBUG("executor %s: worker %s started (pid %d)", pe->base.name, s->name, s->pid);
    return 0;
}

/* Spawns into a dead slot, or (after a quick death or a failed spawn)
 * schedules a retry with a back-off that doubles up to RESPAWN_BACKOFF_MAX_NS. */
void proc__slot_respawn(struct proc_exec *pe, struct slot *s, bool quick_death)
{
    int rc = quick_death ? 0 : slot_spawn(pe, s);
    if (rc == 0 && !quick_death) return;
    s->backoff_ns = s->backoff_ns ? s->backoff_ns * 2 : 100 * MS;
    if (s->backoff_ns > RESPAWN_BACKOFF_MAX_NS) s->backoff_ns = RESPAWN_BACKOFF_MAX_NS;
    s->respawn_at_ns = clock_mono_ns() + s->backoff_ns;
    if (rc < 0)
        LOG_ERROR("executor %s: cannot start worker %s (%s): %s; retrying in %lld ms", pe->base.name, s->name,
                  pe->argv[0], strerror(-rc), (long long)(s->backoff_ns / MS));
}

/* ---- the I/O thread's rounds ------------------------------------------------ */

/* Acts on cancel flags set by exec_cancel and on the start of a drain. */
static void handle_ctl(struct proc_exec *pe, bool draining)
{
    for (int i = 0; i < pe->base.size; i++) {
        struct slot *s = &pe->slots[i];
        bool kill_head = false, dirty = false;
        pthread_mutex_lock(&pe->lock);
        for (int k = 0; k < s->n; k++) {
            struct flight *f = &s->fl[k];
            bool skip = false;
            if (f->cancel && !f->cancel_seen) {
                f->cancel_seen = true;
                if (f->started)
                    kill_head = true;
                else
                    skip = true;
            }
            if (draining && !f->started) skip = true;
            if (skip && !f->skip_sent && s->kill == KILL_NONE) {
                f->skip_sent = true;
                dirty |= exec_wire_put_id(&s->out, WIRE_SKIP, f->job->id) == 0;
            }
        }
        pthread_mutex_unlock(&pe->lock);
        if (kill_head) proc__slot_kill(pe, s, KILL_CANCEL, NULL);
        if (dirty) proc__slot_flush(pe, s);
    }
}

/* Sends ready jobs: one to each idle worker first, then pipelined ones. */
static void dispatch(struct proc_exec *pe)
{
    int old_n[pe->base.size];
    pthread_mutex_lock(&pe->lock);
    pe->wake_pending = false;
    for (int i = 0; i < pe->base.size; i++) old_n[i] = pe->slots[i].n;
    for (int d = 0; d < PIPELINE_DEPTH && pe->heap.n > 0 && !pe->draining; d++) {
        for (int i = 0; i < pe->base.size && pe->heap.n > 0; i++) {
            struct slot *s = &pe->slots[i];
            if (!slot_live(s) || s->n != d) continue;
            struct job *next = exec_heap_peek(&pe->base, &pe->heap);
            if (!next) break; /* its cold entries could not be read back */
            const struct task_def *def = task_find(pe->base.tasks, next->task);
            if (d > 0) {
                bool ok = task_fast(pe, def);
                for (int k = 0; k < s->n && ok; k++) ok = task_fast(pe, s->fl[k].def) && !s->fl[k].cancel;
                if (!ok) continue;
            }
            struct job *job = exec_heap_pop(&pe->base, &pe->heap);
            s->fl[s->n++] = (struct flight){.job = job, .def = def};
            pe->held++;
            pe->unstarted++;
        }
    }
    int idle = 0;
    for (int i = 0; i < pe->base.size; i++) idle += slot_live(&pe->slots[i]) && pe->slots[i].n == 0;
    pe->idle_slots = idle;
    pthread_mutex_unlock(&pe->lock);

    for (int i = 0; i < pe->base.size; i++) {
        struct slot *s = &pe->slots[i];
        for (int k = old_n[i]; k < s->n; k++) {
            struct job *job = s->fl[k].job;
            int rc = exec_wire_put_job(&s->out, job->id, job->task, job->args ? job->args : "{}", job->timeout_ms);
            if (rc == 0) continue;
            char msg[160];
            snprintf(msg, sizeof msg, "cannot send the job to a worker: %s",
                     rc == -EMSGSIZE ? "its args are larger than 64 MiB" : strerror(-rc));
            pthread_mutex_lock(&pe->lock);
            struct flight f = proc__flight_take_locked(pe, s, k--);
            pthread_mutex_unlock(&pe->lock);
            proc__set_error(f.job, JOB_ERR_TASK, msg);
            proc__finish(pe, f.job, EXEC_FAILED, false);
        }
        if (s->n > old_n[i]) proc__slot_flush(pe, s);
    }
}

/* Fires due timers and returns the ms until the next one (-1: none). */
static int run_timers(struct proc_exec *pe)
{
    int64_t now = clock_mono_ns(), next = INT64_MAX;
    pthread_mutex_lock(&pe->lock);
    bool draining = pe->draining, stopping = pe->stopping;
    int64_t drain_at = pe->drain_deadline_ns;
    pthread_mutex_unlock(&pe->lock);
    if (draining && !pe->drain_killed) {
        if (now >= drain_at) {
            for (int i = 0; i < pe->base.size; i++)
                if (pe->slots[i].n > 0) proc__slot_kill(pe, &pe->slots[i], KILL_DRAIN, NULL);
            pe->drain_killed = true;
        } else if (drain_at < next) {
            next = drain_at;
        }
    }
    for (int i = 0; i < pe->base.size; i++) {
        struct slot *s = &pe->slots[i];
        if (slot_live(s) && s->n > 0 && s->fl[0].started && s->fl[0].job->timeout_ms > 0) {
            int64_t at = s->fl[0].started_ns + s->fl[0].job->timeout_ms * MS;
            if (now >= at)
                proc__slot_kill(pe, s, KILL_TIMEOUT, NULL);
            else if (at < next)
                next = at;
        }
        if (s->pid > 0 && s->eof && s->kill == KILL_NONE) {
            if (s->pidfd < 0) {
                proc__slot_reap(pe, s); /* no pidfd: EOF is all we get; it is SIGKILLed and reaped */
                continue;
            }
            if (now >= s->eof_deadline_ns)
                proc__protocol_error(pe, s, "it closed its socket");
            else if (s->eof_deadline_ns < next)
                next = s->eof_deadline_ns;
        }
        if (s->pid > 0 && s->kill != KILL_NONE && !s->sigkill_sent) {
            if (now >= s->sigkill_at_ns) {
                killpg(s->pid, SIGKILL);
                s->sigkill_sent = true;
            } else if (s->sigkill_at_ns < next) {
                next = s->sigkill_at_ns;
            }
        }
        if (s->pid == 0 && s->respawn_at_ns > 0 && !draining && !stopping) {
            if (now >= s->respawn_at_ns)
                proc__slot_respawn(pe, s, false);
            else if (s->respawn_at_ns < next)
                next = s->respawn_at_ns;
        }
    }
    if (next == INT64_MAX) return -1;
    int64_t ms = (next - clock_mono_ns() + MS - 1) / MS;
    return ms < 0 ? 0 : ms > 60000 ? 60000 : (int)ms;
}

/* exec_free: close every socket (a worker exits at EOF), give them
 * SHUTDOWN_WAIT_NS together, then SIGKILL what is left; reap everything. */
static void shutdown_workers(struct proc_exec *pe)
{
    int64_t end = clock_mono_ns() + SHUTDOWN_WAIT_NS;
    for (int i = 0; i < pe->base.size; i++) {
        struct slot *s = &pe->slots[i];
        if (s->pid <= 0) continue;
        if (!s->eof) epoll_ctl(pe->epfd, EPOLL_CTL_DEL, s->sock, NULL);
        close(s->sock);
        s->sock = -1;
    }
    for (int i = 0; i < pe->base.size; i++) {
        struct slot *s = &pe->slots[i];
        if (s->pid <= 0) continue;
        struct exec_worker_proc wp = {.pid = s->pid, .sock = -1, .pidfd = s->pidfd};
        int status = 0;
        bool reaped = exec_worker_reap(&wp, end - clock_mono_ns(), &status) == 0;
        if (reaped && (!WIFEXITED(status) || WEXITSTATUS(status) != 0))
            LOG_WARN("executor %s: worker %s (pid %d) ended with wait status %#x", pe->base.name, s->name, s->pid,
                     (unsigned)status);
        s->pidfd = -1;
        s->pid = 0;
    }
}

static void *io_main(void *arg)
{
    struct proc_exec *pe = arg;
    int rc = 0;
    for (int i = 0; i < pe->base.size && rc == 0; i++) rc = slot_spawn(pe, &pe->slots[i]);
    pthread_mutex_lock(&pe->lock);
    pe->init_rc = rc;
    pe->init_done = true;
    pthread_cond_broadcast(&pe->cv);
    pthread_mutex_unlock(&pe->lock);

    struct epoll_event evs[64];
    int timeout = 0;
    for (;;) {
        int n = epoll_wait(pe->epfd, evs, 64, timeout);
        if (n < 0 && errno != EINTR) {
            LOG_ERROR("executor %s: epoll_wait: %s", pe->base.name, strerror(errno));
            n = 0;
        }
        for (int e = 0; e < n; e++) {
            uint64_t d = evs[e].data.u64;
            enum ev_kind kind = (enum ev_kind)((d >> 24) & 0xff);
            if (kind == EV_WAKE) {
                uint64_t v;
                while (read(pe->wakefd, &v, sizeof v) < 0 && errno == EINTR) {
                }
                continue;
            }
            struct slot *s = &pe->slots[d & 0xffffff];
            if ((uint32_t)(d >> 32) != s->gen || s->pid <= 0) continue; /* a previous worker's */
            if (kind == EV_PIDFD) {
                proc__slot_reap(pe, s);
            } else {
                if (evs[e].events & EPOLLOUT) proc__slot_flush(pe, s);
                if (evs[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) proc__slot_read(pe, s, 4);
            }
        }
        pthread_mutex_lock(&pe->lock);
        bool ctl = pe->ctl_pending, draining = pe->draining, stopping = pe->stopping;
        pe->ctl_pending = false;
        pthread_mutex_unlock(&pe->lock);
        if (ctl || (draining && !pe->drain_skipped)) handle_ctl(pe, draining);
        if (draining) pe->drain_skipped = true;
        timeout = run_timers(pe);
        if (stopping) break;
        dispatch(pe);
    }
    shutdown_workers(pe);
    return NULL;
}

/* ---- the interface ---------------------------------------------------------- */

static int pe_submit(struct executor *ex, struct job *job, bool reloadable)
{
    struct proc_exec *pe = (struct proc_exec *)ex;
    int rc = -ESHUTDOWN;
    bool do_wake = false;
    pthread_mutex_lock(&pe->lock);
    if (!pe->draining && (rc = exec_heap_push(ex, &pe->heap, job, reloadable)) == 0 && pe->idle_slots > 0 && !pe->wake_pending)
        do_wake = pe->wake_pending = true;
    pthread_mutex_unlock(&pe->lock);
    if (do_wake) wake(pe);
    return rc;
}

static int pe_cancel(struct executor *ex, const char *job_id)
{
    struct proc_exec *pe = (struct proc_exec *)ex;
    int rc = -ENOENT;
    pthread_mutex_lock(&pe->lock);
    struct job *queued = exec_heap_remove_id(ex, &pe->heap, job_id);
    for (int i = 0; i < ex->size && !queued && rc != 0; i++) {
        struct slot *s = &pe->slots[i];
        for (int k = 0; k < s->n; k++) {
            if (strcmp(s->fl[k].job->id, job_id) != 0) continue;
            s->fl[k].cancel = true;
            pe->ctl_pending = true;
            rc = 0;
            break;
        }
    }
    pthread_mutex_unlock(&pe->lock);
    if (queued) {
        proc__set_error(queued, JOB_ERR_CANCELLED, "cancelled while queued");
        queued->finished_at_ms = clock_wall_ms();
        ex->hooks.done(ex->hooks.ctx, queued, EXEC_CANCELLED);
        return 0;
    }
    if (rc == 0) wake(pe);
    return rc;
}

static void pe_stats(struct executor *ex, struct exec_stats *out)
{
    struct proc_exec *pe = (struct proc_exec *)ex;
    pthread_mutex_lock(&pe->lock);
    out->size = ex->size;
    out->busy = pe->busy;
    out->queued = pe->heap.n + pe->unstarted;
    pthread_mutex_unlock(&pe->lock);
}

static int pe_workers(struct executor *ex, struct exec_worker *out, int max)
{
    struct proc_exec *pe = (struct proc_exec *)ex;
    int n = ex->size < max ? ex->size : max;
    pthread_mutex_lock(&pe->lock);
    for (int i = 0; i < n; i++) {
        const struct slot *s = &pe->slots[i];
        bool on = s->n > 0 && s->fl[0].started;
        exec_worker_fill(&out[i], i, s->pid, s->name, on ? s->fl[0].job : NULL, on ? s->fl[0].started_at_ms : 0);
    }
    pthread_mutex_unlock(&pe->lock);
    return n;
}

static void pe_drain(struct executor *ex, int64_t grace_ms)
{
    struct proc_exec *pe = (struct proc_exec *)ex;
    int64_t at = clock_mono_ns() + (grace_ms > 0 ? grace_ms : 0) * MS;
    pthread_mutex_lock(&pe->lock);
    struct exec_heap left = exec_heap_take(&pe->heap);
    if (!pe->draining || at < pe->drain_deadline_ns) pe->drain_deadline_ns = at;
    pe->draining = true;
    pthread_mutex_unlock(&pe->lock);
    wake(pe);

    exec_heap_drained(ex, &left);

    pthread_mutex_lock(&pe->lock);
    while (pe->held > 0) pthread_cond_wait(&pe->cv, &pe->lock);
    pthread_mutex_unlock(&pe->lock);
}

static void pe_free(struct executor *ex)
{
    struct proc_exec *pe = (struct proc_exec *)ex;
    if (pe->io_started) {
        pe_drain(ex, 0);
        pthread_mutex_lock(&pe->lock);
        pe->stopping = true;
        pthread_mutex_unlock(&pe->lock);
        wake(pe);
        pthread_join(pe->io, NULL);
    }
    for (int i = 0; pe->slots && i < ex->size; i++) {
        exec_wire_buf_fini(&pe->slots[i].in);
        exec_wire_buf_fini(&pe->slots[i].out);
    }
    if (pe->epfd >= 0) close(pe->epfd);
    if (pe->wakefd >= 0) close(pe->wakefd);
    for (size_t i = 0; pe->argv && pe->argv[i]; i++) free(pe->argv[i]);
    free(pe->argv);
    free(pe->slots);
    free(pe->speeds);
    exec_heap_fini(&pe->heap);
    pthread_mutex_destroy(&pe->lock);
    pthread_cond_destroy(&pe->cv);
    exec_base_fini(ex);
    free(pe);
}

static const struct exec_vtable process_vtable = {
    .submit = pe_submit, .cancel = pe_cancel, .stats = pe_stats, .workers = pe_workers, .drain = pe_drain,
    .free = pe_free,
};

int exec_process_new(const struct exec_config *cfg, const struct task_registry *tasks,
                     const struct exec_hooks *hooks, struct executor **out)
{
    if (!cfg->worker_argv || !cfg->worker_argv[0]) {
        LOG_ERROR("executor %s: a process executor needs the command that starts a worker", cfg->name);
        return -EINVAL;
    }
    int rc = 0;
    struct proc_exec *pe = calloc(1, sizeof *pe);
    if (!pe) return -ENOMEM;
    pe->epfd = pe->wakefd = -1;
    pthread_mutex_init(&pe->lock, NULL);
    pthread_cond_init(&pe->cv, NULL);
    if ((rc = exec_base_init(&pe->base, &process_vtable, cfg, tasks, hooks)) < 0) goto fail;
    pe->memory_mb = cfg->memory_mb;
    pe->cpu_seconds = cfg->cpu_seconds;
    size_t argc = 0;
    while (cfg->worker_argv[argc]) argc++;
    rc = -ENOMEM;
    if (!(pe->argv = calloc(argc + 1, sizeof *pe->argv))) goto fail;
    for (size_t i = 0; i < argc; i++)
        if (!(pe->argv[i] = strdup(cfg->worker_argv[i]))) goto fail;
    if (!(pe->slots = calloc((size_t)cfg->size, sizeof *pe->slots))) goto fail;
    for (int i = 0; i < cfg->size; i++) {
        struct slot *s = &pe->slots[i];
        s->index = i;
        s->sock = s->pidfd = -1;
        snprintf(s->name, sizeof s->name, "%s-%d", cfg->name, i);
    }
    if ((pe->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0 || (pe->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) {
        rc = -errno;
        goto fail;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = proc__ev_data(EV_WAKE, 0, 0)};
    if (epoll_ctl(pe->epfd, EPOLL_CTL_ADD, pe->wakefd, &ev) < 0) {
        rc = -errno;
        goto fail;
    }
    if ((rc = -pthread_create(&pe->io, NULL, io_main, pe)) < 0) goto fail;
    pe->io_started = true;
    pthread_mutex_lock(&pe->lock);
    while (!pe->init_done) pthread_cond_wait(&pe->cv, &pe->lock);
    rc = pe->init_rc;
    pthread_mutex_unlock(&pe->lock);
    if (rc < 0) {
        LOG_ERROR("executor %s: cannot start a worker (%s): %s", cfg->name, pe->argv[0], strerror(-rc));
        goto fail;
    }
    *out = &pe->base;
    return 0;
fail:
    pe_free(&pe->base);
    return rc;
}
