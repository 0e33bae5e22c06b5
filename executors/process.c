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
#include "exec_int.h"
#include "wire.h"

#define PIPELINE_DEPTH 8                  /* jobs in flight per worker, at most */
#define PIPELINE_FAST_US 500              /* a task that may be pipelined runs in less, lately */
#define KILL_GRACE_NS (800 * MS)          /* SIGTERM, then SIGKILL after this (see below) */
#define EOF_GRACE_NS (200 * MS)           /* a worker that closed its socket but lives: killed after this */
#define QUICK_DEATH_NS (1000 * MS)        /* a worker dying this soon after its spawn backs off */
#define RESPAWN_BACKOFF_MAX_NS (5000 * MS)
#define SHUTDOWN_WAIT_NS (2000 * MS)      /* exec_free: how long workers get to exit on EOF */
#define READ_CHUNK 65536
#define MS 1000000LL

enum kill_reason { KILL_NONE = 0, KILL_TIMEOUT, KILL_CANCEL, KILL_DRAIN, KILL_PROTOCOL };
enum ev_kind { EV_WAKE = 0, EV_SOCK, EV_PIDFD };

struct flight {
    struct job *job;
    const struct task_def *def; /* for the run-time average; NULL for an unknown task */
    bool started;               /* STARTED read (only fl[0] can be) */
    int64_t started_at_ms;      /* set with started */
    bool cancel;                /* exec_cancel asked; read under lock */
    bool cancel_seen;           /* I/O thread: acted on */
    bool skip_sent;             /* I/O thread */
    int64_t started_ns;         /* I/O thread: when STARTED was read */
};

struct slot {
    int index;
    char name[32]; /* "<executor>-<index>", immutable */
    /* All below: I/O thread, except fl/n (written under lock, see DESIGN)
     * and pid, atomic so that exec_workers may read it from any thread. */
    atomic_int pid; /* 0: no worker */
    int sock, pidfd;
    uint32_t gen; /* bumped at each spawn: tells stale epoll events apart */
    struct flight fl[PIPELINE_DEPTH];
    int n;
    struct exec_wire_buf in, out;
    bool out_armed, eof;
    int64_t eof_deadline_ns;
    enum kill_reason kill;
    char kill_note[192];
    int64_t sigkill_at_ns;
    bool sigkill_sent, ran_a_job;
    int64_t spawned_ns, respawn_at_ns, backoff_ns;
};

struct speed {
    const struct task_def *def;
    int64_t slow_us; /* a decaying maximum of run_us: max(run, previous * 7/8); -1 = no run yet */
};

struct proc_exec {
    struct executor base;
    char **argv; /* copy of cfg->worker_argv */
    long memory_mb, cpu_seconds;
    int epfd, wakefd;
    pthread_t io;
    bool io_started;
    struct slot *slots; /* base.size of them; immutable pointer */
    struct speed *speeds; /* I/O thread */
    size_t n_speeds, cap_speeds;
    bool drain_skipped, drain_killed; /* I/O thread */

    pthread_mutex_t lock;
    pthread_cond_t cv;       /* held reached 0, or the I/O thread finished starting */
    struct exec_heap heap;   /* lock */
    long held;               /* lock: jobs taken from the heap whose done() has not returned */
    long unstarted;          /* lock: jobs sent to a worker and not started */
    int busy;                /* lock: started jobs whose done() has not returned */
    int idle_slots;          /* lock: live workers with nothing in flight */
    bool wake_pending;       /* lock: the eventfd was written and not yet seen */
    bool ctl_pending;        /* lock: a cancel flag waits for the I/O thread */
    bool draining, stopping; /* lock */
    int64_t drain_deadline_ns; /* lock */
    bool init_done;          /* lock */
    int init_rc;             /* lock */
};

static uint64_t ev_data(enum ev_kind kind, int index, uint32_t gen)
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

static struct speed *speed_of(struct proc_exec *pe, const struct task_def *def)
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
    struct speed *sp = def ? speed_of(pe, def) : NULL;
    return sp && sp->slow_us >= 0 && sp->slow_us < PIPELINE_FAST_US;
}

/* ---- spawning --------------------------------------------------------------- */

static int slot_spawn(struct proc_exec *pe, struct slot *s)
{
    struct exec_worker_proc w;
    int rc = exec_worker_spawn(pe->argv, pe->memory_mb, pe->cpu_seconds, &w);
    if (rc < 0) return rc;
    s->gen++;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = ev_data(EV_SOCK, s->index, s->gen)};
    if (epoll_ctl(pe->epfd, EPOLL_CTL_ADD, w.sock, &ev) < 0) rc = -errno;
    ev.data.u64 = ev_data(EV_PIDFD, s->index, s->gen);
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
static void slot_respawn(struct proc_exec *pe, struct slot *s, bool quick_death)
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

/* ---- ending jobs ------------------------------------------------------------ */

/* Hands a job to hooks.done (no lock held), then releases its count. */
static void finish(struct proc_exec *pe, struct job *job, enum exec_outcome outcome, bool started)
{
    if (!job->finished_at_ms) job->finished_at_ms = clock_wall_ms();
    pe->base.hooks.done(pe->base.hooks.ctx, job, outcome);
    pthread_mutex_lock(&pe->lock);
    pe->held--;
    if (started) pe->busy--;
    if (pe->held == 0) pthread_cond_broadcast(&pe->cv);
    pthread_mutex_unlock(&pe->lock);
}

static void set_error(struct job *job, enum job_error_type type, const char *msg)
{
    job->error_type = type;
    job_set_str(&job->error_message, msg); /* -ENOMEM: the dispatcher writes a generic one */
}

/* Removes fl[i] (lock held). */
static struct flight flight_take_locked(struct proc_exec *pe, struct slot *s, int i)
{
    struct flight f = s->fl[i];
    memmove(&s->fl[i], &s->fl[i + 1], (size_t)(s->n - i - 1) * sizeof *s->fl);
    s->n--;
    if (!f.started) pe->unstarted--;
    return f;
}

/* How a job that never started leaves its worker. */
enum leave { LEAVE_REQUEUED, LEAVE_CANCELLED, LEAVE_DRAINED, LEAVE_LOST };

/* Decides (lock held, in the same critical section that took f out of its
 * slot, so that exec_cancel always finds the job somewhere): back to the heap,
 * or out through finish_leave() once the lock is dropped. */
static enum leave leave_locked(struct proc_exec *pe, const struct flight *f)
{
    if (f->cancel) return LEAVE_CANCELLED;
    if (pe->draining) return LEAVE_DRAINED;
    if (exec_heap_push(&pe->heap, f->job) < 0) return LEAVE_LOST;
    pe->held--;
    return LEAVE_REQUEUED;
}

static void finish_leave(struct proc_exec *pe, struct job *job, enum leave how)
{
    switch (how) {
    case LEAVE_REQUEUED: break;
    case LEAVE_CANCELLED:
        set_error(job, JOB_ERR_CANCELLED, "cancelled while queued");
        finish(pe, job, EXEC_CANCELLED, false);
        break;
    case LEAVE_DRAINED: finish(pe, job, EXEC_DRAINED, false); break;
    case LEAVE_LOST:
        set_error(job, JOB_ERR_WORKER_LOST, "its worker died before starting it, and it could not be re-queued");
        finish(pe, job, EXEC_FAILED, false);
        break;
    }
}

/* Decides that the worker in s must die; its running job's outcome is fixed now. */
static void slot_kill(struct proc_exec *pe, struct slot *s, enum kill_reason why, const char *note)
{
    if (s->kill != KILL_NONE || s->pid <= 0) return;
    s->kill = why;
    snprintf(s->kill_note, sizeof s->kill_note, "%s", note ? note : "");
    int sig = why == KILL_PROTOCOL ? SIGKILL : SIGTERM;
    if (killpg(s->pid, sig) < 0 && errno != ESRCH)
        LOG_WARN("executor %s: killpg(%d): %s", pe->base.name, s->pid, strerror(errno));
    s->sigkill_sent = sig == SIGKILL;
    s->sigkill_at_ns = clock_mono_ns() + KILL_GRACE_NS;
}

static void protocol_error(struct proc_exec *pe, struct slot *s, const char *what)
{
    char note[192];
    snprintf(note, sizeof note, "worker %s (pid %d) broke the protocol (%s) and was replaced", s->name, s->pid, what);
    LOG_ERROR("executor %s: %s", pe->base.name, note);
    slot_kill(pe, s, KILL_PROTOCOL, note);
}

/* ---- messages from a worker ------------------------------------------------- */

static void on_started(struct proc_exec *pe, struct slot *s, const struct exec_wire_msg *m)
{
    if (s->n == 0 || s->fl[0].started || !exec_wire_str_eq(&m->id, s->fl[0].job->id)) {
        protocol_error(pe, s, "STARTED for a job that is not next");
        return;
    }
    struct flight *f = &s->fl[0];
    struct job *job = f->job;
    int64_t started_at_ms = m->started_at_ms > 0 ? m->started_at_ms : clock_wall_ms();
    pthread_mutex_lock(&pe->lock);
    f->started = true;
    f->started_at_ms = started_at_ms;
    pe->unstarted--;
    pe->busy++;
    bool cancel = f->cancel;
    pthread_mutex_unlock(&pe->lock);
    f->started_ns = clock_mono_ns();
    s->ran_a_job = true;
    s->backoff_ns = 0;
    job->status = JOB_RUNNING;
    job->attempt++;
    job->started_at_ms = started_at_ms;
    job->finished_at_ms = 0;
    job->worker_pid = s->pid;
    job_set_str(&job->worker_thread, s->name); /* -ENOMEM leaves the old name: harmless */
    if (pe->base.hooks.started) pe->base.hooks.started(pe->base.hooks.ctx, job);
    if (cancel) slot_kill(pe, s, KILL_CANCEL, NULL); /* raced with its SKIP: it started */
}

static void on_done(struct proc_exec *pe, struct slot *s, const struct exec_wire_msg *m)
{
    if (s->n == 0 || !s->fl[0].started || !exec_wire_str_eq(&m->id, s->fl[0].job->id) ||
        (!m->ok && (m->error_type == JOB_ERR_NONE || m->error_type >= JOB_ERR_COUNT))) {
        protocol_error(pe, s, "DONE for a job that is not running");
        return;
    }
    struct job *job = s->fl[0].job;
    char *result = NULL, *message = NULL;
    if (exec_wire_str_dup(&m->result, &result) < 0 || exec_wire_str_dup(&m->error_message, &message) < 0) {
        free(result);
        protocol_error(pe, s, "out of memory for a result");
        return;
    }
    pthread_mutex_lock(&pe->lock);
    struct flight f = flight_take_locked(pe, s, 0);
    pthread_mutex_unlock(&pe->lock);
    if (f.def) {
        struct speed *sp = speed_of(pe, f.def);
        int64_t us = m->run_us > 0 ? m->run_us : 0;
        if (sp) sp->slow_us = us > sp->slow_us - sp->slow_us / 8 ? us : sp->slow_us - sp->slow_us / 8;
    }
    free(job->result);
    job->result = result;
    job->finished_at_ms = m->finished_at_ms > 0 ? m->finished_at_ms : clock_wall_ms();
    enum exec_outcome outcome = EXEC_OK;
    if (!m->ok) {
        outcome = EXEC_FAILED;
        job->error_type = (enum job_error_type)m->error_type;
        free(job->error_message);
        job->error_message = message;
        message = NULL;
    }
    free(message);
    finish(pe, job, outcome, true);
}

static void on_skipped(struct proc_exec *pe, struct slot *s, const struct exec_wire_msg *m)
{
    int i = 0;
    while (i < s->n && !exec_wire_str_eq(&m->id, s->fl[i].job->id)) i++;
    if (i == s->n || s->fl[i].started || !s->fl[i].skip_sent) {
        protocol_error(pe, s, "SKIPPED for a job that was not to be skipped");
        return;
    }
    pthread_mutex_lock(&pe->lock);
    struct flight f = flight_take_locked(pe, s, i);
    enum leave how = leave_locked(pe, &f);
    pthread_mutex_unlock(&pe->lock);
    finish_leave(pe, f.job, how);
}

static void handle_msg(struct proc_exec *pe, struct slot *s, const struct exec_wire_msg *m)
{
    switch (m->type) {
    case WIRE_STARTED: on_started(pe, s, m); break;
    case WIRE_DONE: on_done(pe, s, m); break;
    case WIRE_SKIPPED: on_skipped(pe, s, m); break;
    case WIRE_PROGRESS:
        if (s->n == 0 || !s->fl[0].started || !exec_wire_str_eq(&m->id, s->fl[0].job->id)) {
            protocol_error(pe, s, "PROGRESS for a job that is not running");
        } else if (pe->base.hooks.progress) {
            char *msg = NULL;
            double fr = m->fraction < 0 ? 0 : m->fraction > 1 ? 1 : m->fraction;
            if (exec_wire_str_dup(&m->message, &msg) == 0)
                pe->base.hooks.progress(pe->base.hooks.ctx, s->fl[0].job->id, fr, msg);
            free(msg);
        }
        break;
    default: protocol_error(pe, s, "a message a worker does not send"); break;
    }
}

/* Reads and handles what the worker sent, in at most max_rounds reads. Once a
 * kill is decided, the rest is read and dropped. */
static void slot_read(struct proc_exec *pe, struct slot *s, int max_rounds)
{
    for (int round = 0; round < max_rounds && s->sock >= 0 && !s->eof; round++) {
        if (exec_wire_buf_reserve(&s->in, READ_CHUNK) < 0) {
            protocol_error(pe, s, "out of memory for its messages");
            s->in.off = s->in.len = 0;
            return;
        }
        ssize_t n = read(s->sock, s->in.data + s->in.len, s->in.cap - s->in.len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n <= 0) { /* EOF or a reset: the process is exiting, or closed fd 3 */
            s->eof = true;
            s->eof_deadline_ns = clock_mono_ns() + EOF_GRACE_NS;
            epoll_ctl(pe->epfd, EPOLL_CTL_DEL, s->sock, NULL);
            return;
        }
        s->in.len += (size_t)n;
        while (s->in.len > s->in.off) {
            if (s->kill != KILL_NONE) { /* outcome fixed: drop the rest */
                s->in.off = s->in.len = 0;
                break;
            }
            struct exec_wire_msg m;
            size_t frame = 0;
            int rc = exec_wire_decode(s->in.data + s->in.off, s->in.len - s->in.off, &m, &frame);
            if (rc < 0) {
                protocol_error(pe, s, rc == -EMSGSIZE ? "a message too large" : "a garbled message");
                /* Drop the rest here rather than rely on slot_kill having set
                 * s->kill: it does nothing for a worker already reaped (pid
                 * <= 0), and decoding the same bytes again would spin. */
                s->in.off = s->in.len = 0;
                break;
            }
            if (rc == 0) {
                if (exec_wire_buf_reserve(&s->in, frame - (s->in.len - s->in.off)) < 0)
                    protocol_error(pe, s, "out of memory for its messages");
                break;
            }
            handle_msg(pe, s, &m);
            exec_wire_buf_consume(&s->in, frame);
        }
    }
}

/* Sends what is pending to the worker without blocking; arms EPOLLOUT for the rest. */
static void slot_flush(struct proc_exec *pe, struct slot *s)
{
    while (s->out.len > s->out.off && s->sock >= 0) {
        ssize_t n = send(s->sock, s->out.data + s->out.off, s->out.len - s->out.off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n < 0) { /* the worker is gone: its death is handled through its pidfd or EOF */
            s->out.off = s->out.len = 0;
            break;
        }
        exec_wire_buf_consume(&s->out, (size_t)n);
    }
    bool want = s->out.len > s->out.off && !s->eof;
    if (want != s->out_armed && s->sock >= 0 && !s->eof) {
        struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0),
                                 .data.u64 = ev_data(EV_SOCK, s->index, s->gen)};
        if (epoll_ctl(pe->epfd, EPOLL_CTL_MOD, s->sock, &ev) == 0) s->out_armed = want;
    }
}

/* The worker in s is dead (or dying): settle its jobs, reap it, replace it. */
static void slot_reap(struct proc_exec *pe, struct slot *s)
{
    if (s->kill == KILL_NONE && !s->eof) slot_read(pe, s, 1 << 20); /* its last words, up to EOF */
    if (!s->eof) epoll_ctl(pe->epfd, EPOLL_CTL_DEL, s->sock, NULL);
    if (s->pidfd >= 0) epoll_ctl(pe->epfd, EPOLL_CTL_DEL, s->pidfd, NULL);
    struct exec_worker_proc wp = {.pid = s->pid, .sock = s->sock, .pidfd = s->pidfd};
    int pid = s->pid, status = 0, wait_rc = exec_worker_reap(&wp, 0, &status);
    s->sock = s->pidfd = -1;
    s->pid = 0;
    s->in.off = s->in.len = s->out.off = s->out.len = 0;

    char msg[256];
    enum exec_outcome outcome = EXEC_FAILED;
    enum job_error_type type = JOB_ERR_WORKER_LOST;
    struct flight head = {0};
    switch (s->kill) {
    case KILL_TIMEOUT:
        type = JOB_ERR_TIMEOUT;
        snprintf(msg, sizeof msg, "timed out after %.3f s",
                 s->n ? (double)s->fl[0].job->timeout_ms / 1000.0 : 0.0);
        break;
    case KILL_CANCEL:
        outcome = EXEC_CANCELLED;
        type = JOB_ERR_CANCELLED;
        snprintf(msg, sizeof msg, "cancelled while running");
        break;
    case KILL_DRAIN:
        outcome = EXEC_CANCELLED;
        type = JOB_ERR_CANCELLED;
        snprintf(msg, sizeof msg, "stopped: the executor was drained and the grace period ran out");
        break;
    case KILL_PROTOCOL: snprintf(msg, sizeof msg, "%s", s->kill_note); break;
    default:
        if (wait_rc == 0 && WIFSIGNALED(status)) {
            int sig = WTERMSIG(status);
            type = JOB_ERR_SIGNAL;
            snprintf(msg, sizeof msg, "worker %s (pid %d) was killed by signal %d (%s)", s->name, pid, sig,
                     sigdescr_np(sig) ? sigdescr_np(sig) : "unknown signal");
        } else if (wait_rc == 0 && WIFEXITED(status)) {
            snprintf(msg, sizeof msg, "worker %s (pid %d) exited with status %d", s->name, pid, WEXITSTATUS(status));
        } else {
            snprintf(msg, sizeof msg, "worker %s (pid %d) was lost (%s)", s->name, pid, strerror(-wait_rc));
        }
    }

    struct flight rest[PIPELINE_DEPTH];
    enum leave how[PIPELINE_DEPTH];
    int n_rest = 0;
    pthread_mutex_lock(&pe->lock);
    if (s->n > 0 && s->fl[0].started) head = flight_take_locked(pe, s, 0);
    for (; s->n > 0; n_rest++) {
        rest[n_rest] = flight_take_locked(pe, s, 0);
        how[n_rest] = leave_locked(pe, &rest[n_rest]);
    }
    pthread_mutex_unlock(&pe->lock);

    if (head.job) {
        if (s->kill == KILL_NONE) LOG_WARN("executor %s: %s while running job %s", pe->base.name, msg, head.job->id);
        set_error(head.job, type, msg);
        head.job->finished_at_ms = clock_wall_ms();
        finish(pe, head.job, outcome, true);
    } else if (s->kill == KILL_NONE) {
        LOG_WARN("executor %s: %s while idle", pe->base.name, msg);
    }
    for (int i = 0; i < n_rest; i++) finish_leave(pe, rest[i].job, how[i]);

    pthread_mutex_lock(&pe->lock);
    bool replace = !pe->draining && !pe->stopping;
    pthread_mutex_unlock(&pe->lock);
    bool quick = !s->ran_a_job && s->kill == KILL_NONE && clock_mono_ns() - s->spawned_ns < QUICK_DEATH_NS;
    s->kill = KILL_NONE;
    if (replace) slot_respawn(pe, s, quick);
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
        if (kill_head) slot_kill(pe, s, KILL_CANCEL, NULL);
        if (dirty) slot_flush(pe, s);
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
            const struct task_def *def = task_find(pe->base.tasks, pe->heap.v[0]->task);
            if (d > 0) {
                bool ok = task_fast(pe, def);
                for (int k = 0; k < s->n && ok; k++) ok = task_fast(pe, s->fl[k].def) && !s->fl[k].cancel;
                if (!ok) continue;
            }
            struct job *job = exec_heap_pop(&pe->heap);
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
            struct flight f = flight_take_locked(pe, s, k--);
            pthread_mutex_unlock(&pe->lock);
            set_error(f.job, JOB_ERR_TASK, msg);
            finish(pe, f.job, EXEC_FAILED, false);
        }
        if (s->n > old_n[i]) slot_flush(pe, s);
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
                if (pe->slots[i].n > 0) slot_kill(pe, &pe->slots[i], KILL_DRAIN, NULL);
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
                slot_kill(pe, s, KILL_TIMEOUT, NULL);
            else if (at < next)
                next = at;
        }
        if (s->pid > 0 && s->eof && s->kill == KILL_NONE) {
            if (s->pidfd < 0) {
                slot_reap(pe, s); /* no pidfd: EOF is all we get; it is SIGKILLed and reaped */
                continue;
            }
            if (now >= s->eof_deadline_ns)
                protocol_error(pe, s, "it closed its socket");
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
                slot_respawn(pe, s, false);
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
                slot_reap(pe, s);
            } else {
                if (evs[e].events & EPOLLOUT) slot_flush(pe, s);
                if (evs[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) slot_read(pe, s, 4);
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

static int pe_submit(struct executor *ex, struct job *job)
{
    struct proc_exec *pe = (struct proc_exec *)ex;
    int rc = -ESHUTDOWN;
    bool do_wake = false;
    pthread_mutex_lock(&pe->lock);
    if (!pe->draining && (rc = exec_heap_push(&pe->heap, job)) == 0 && pe->idle_slots > 0 && !pe->wake_pending)
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
    struct job *queued = exec_heap_remove_id(&pe->heap, job_id);
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
        set_error(queued, JOB_ERR_CANCELLED, "cancelled while queued");
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
    struct exec_heap left = pe->heap;
    memset(&pe->heap, 0, sizeof pe->heap);
    if (!pe->draining || at < pe->drain_deadline_ns) pe->drain_deadline_ns = at;
    pe->draining = true;
    pthread_mutex_unlock(&pe->lock);
    wake(pe);

    for (long i = 0; i < left.n; i++) ex->hooks.done(ex->hooks.ctx, left.v[i], EXEC_DRAINED);
    exec_heap_fini(&left);

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
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = ev_data(EV_WAKE, 0, 0)};
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
