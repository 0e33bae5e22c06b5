/* process_io.c - the process executor's side of a worker's life that is not
 * scheduling: ending jobs (finish, requeue, lost), the messages a worker
 * sends (started, done, skipped), reading and writing its socket, killing
 * it and reaping it. Runs on the executor's I/O thread; see process.c's
 * DESIGN comment and the lock rules at struct proc_exec (process_int.h).
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
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "process_int.h"

/* ---- ending jobs ------------------------------------------------------------ */

/* Hands a job to hooks.done (no lock held), then releases its count. */
void proc__finish(struct proc_exec *pe, struct job *job, enum exec_outcome outcome, bool started)
{
    if (!job->finished_at_ms) job->finished_at_ms = clock_wall_ms();
    pe->base.hooks.done(pe->base.hooks.ctx, job, outcome);
    pthread_mutex_lock(&pe->lock);
    pe->held--;
    if (started) pe->busy--;
    if (pe->held == 0) pthread_cond_broadcast(&pe->cv);
    pthread_mutex_unlock(&pe->lock);
}

void proc__set_error(struct job *job, enum job_error_type type, const char *msg)
{
    job->error_type = type;
    job_set_str(&job->error_message, msg); /* -ENOMEM: the dispatcher writes a generic one */
}

/* Removes fl[i] (lock held). */
struct flight proc__flight_take_locked(struct proc_exec *pe, struct slot *s, int i)
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
    if (exec_heap_push(&pe->base, &pe->heap, f->job, false) < 0) return LEAVE_LOST;
    pe->held--;
    return LEAVE_REQUEUED;
}

static void finish_leave(struct proc_exec *pe, struct job *job, enum leave how)
{
    switch (how) {
    case LEAVE_REQUEUED: break;
    case LEAVE_CANCELLED:
        proc__set_error(job, JOB_ERR_CANCELLED, "cancelled while queued");
        proc__finish(pe, job, EXEC_CANCELLED, false);
        break;
    case LEAVE_DRAINED: proc__finish(pe, job, EXEC_DRAINED, false); break;
    case LEAVE_LOST:
        proc__set_error(job, JOB_ERR_WORKER_LOST, "its worker died before starting it, and it could not be re-queued");
        proc__finish(pe, job, EXEC_FAILED, false);
        break;
    }
}

/* Decides that the worker in s must die; its running job's outcome is fixed now. */
void proc__slot_kill(struct proc_exec *pe, struct slot *s, enum kill_reason why, const char *note)
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

void proc__protocol_error(struct proc_exec *pe, struct slot *s, const char *what)
{
    char note[192];
    snprintf(note, sizeof note, "worker %s (pid %d) broke the protocol (%s) and was replaced", s->name, s->pid, what);
    LOG_ERROR("executor %s: %s", pe->base.name, note);
    proc__slot_kill(pe, s, KILL_PROTOCOL, note);
}

/* ---- messages from a worker ------------------------------------------------- */

static void on_started(struct proc_exec *pe, struct slot *s, const struct exec_wire_msg *m)
{
    if (s->n == 0 || s->fl[0].started || !exec_wire_str_eq(&m->id, s->fl[0].job->id)) {
        proc__protocol_error(pe, s, "STARTED for a job that is not next");
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
    if (cancel) proc__slot_kill(pe, s, KILL_CANCEL, NULL); /* raced with its SKIP: it started */
}

static void on_done(struct proc_exec *pe, struct slot *s, const struct exec_wire_msg *m)
{
    if (s->n == 0 || !s->fl[0].started || !exec_wire_str_eq(&m->id, s->fl[0].job->id) ||
        (!m->ok && (m->error_type == JOB_ERR_NONE || m->error_type >= JOB_ERR_COUNT))) {
        proc__protocol_error(pe, s, "DONE for a job that is not running");
        return;
    }
    struct job *job = s->fl[0].job;
    char *result = NULL, *message = NULL;
    if (exec_wire_str_dup(&m->result, &result) < 0 || exec_wire_str_dup(&m->error_message, &message) < 0) {
        free(result);
        proc__protocol_error(pe, s, "out of memory for a result");
        return;
    }
    pthread_mutex_lock(&pe->lock);
    struct flight f = proc__flight_take_locked(pe, s, 0);
    pthread_mutex_unlock(&pe->lock);
    if (f.def) {
        struct speed *sp = proc__speed_of(pe, f.def);
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
    proc__finish(pe, job, outcome, true);
}

static void on_skipped(struct proc_exec *pe, struct slot *s, const struct exec_wire_msg *m)
{
    int i = 0;
    while (i < s->n && !exec_wire_str_eq(&m->id, s->fl[i].job->id)) i++;
    if (i == s->n || s->fl[i].started || !s->fl[i].skip_sent) {
        proc__protocol_error(pe, s, "SKIPPED for a job that was not to be skipped");
        return;
    }
    pthread_mutex_lock(&pe->lock);
    struct flight f = proc__flight_take_locked(pe, s, i);
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
            proc__protocol_error(pe, s, "PROGRESS for a job that is not running");
        } else if (pe->base.hooks.progress) {
            char *msg = NULL;
            double fr = m->fraction < 0 ? 0 : m->fraction > 1 ? 1 : m->fraction;
            if (exec_wire_str_dup(&m->message, &msg) == 0)
                pe->base.hooks.progress(pe->base.hooks.ctx, s->fl[0].job->id, fr, msg);
            free(msg);
        }
        break;
    default: proc__protocol_error(pe, s, "a message a worker does not send"); break;
    }
}

/* Reads and handles what the worker sent, in at most max_rounds reads. Once a
 * kill is decided, the rest is read and dropped. */
void proc__slot_read(struct proc_exec *pe, struct slot *s, int max_rounds)
{
    for (int round = 0; round < max_rounds && s->sock >= 0 && !s->eof; round++) {
        if (exec_wire_buf_reserve(&s->in, READ_CHUNK) < 0) {
            proc__protocol_error(pe, s, "out of memory for its messages");
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
                proc__protocol_error(pe, s, rc == -EMSGSIZE ? "a message too large" : "a garbled message");
                /* Drop the rest here rather than rely on slot_kill having set
                 * s->kill: it does nothing for a worker already reaped (pid
                 * <= 0), and decoding the same bytes again would spin. */
                s->in.off = s->in.len = 0;
                break;
            }
            if (rc == 0) {
                if (exec_wire_buf_reserve(&s->in, frame - (s->in.len - s->in.off)) < 0)
                    proc__protocol_error(pe, s, "out of memory for its messages");
                break;
            }
            handle_msg(pe, s, &m);
            exec_wire_buf_consume(&s->in, frame);
        }
    }
}

/* Sends what is pending to the worker without blocking; arms EPOLLOUT for the rest. */
void proc__slot_flush(struct proc_exec *pe, struct slot *s)
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
                                 .data.u64 = proc__ev_data(EV_SOCK, s->index, s->gen)};
        if (epoll_ctl(pe->epfd, EPOLL_CTL_MOD, s->sock, &ev) == 0) s->out_armed = want;
    }
}

/* The worker in s is dead (or dying): settle its jobs, reap it, replace it. */
void proc__slot_reap(struct proc_exec *pe, struct slot *s)
{
    if (s->kill == KILL_NONE && !s->eof) proc__slot_read(pe, s, 1 << 20); /* its last words, up to EOF */
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
    if (s->n > 0 && s->fl[0].started) head = proc__flight_take_locked(pe, s, 0);
    for (; s->n > 0; n_rest++) {
        rest[n_rest] = proc__flight_take_locked(pe, s, 0);
        how[n_rest] = leave_locked(pe, &rest[n_rest]);
    }
    pthread_mutex_unlock(&pe->lock);

    if (head.job) {
        if (s->kill == KILL_NONE) LOG_WARN("executor %s: %s while running job %s", pe->base.name, msg, head.job->id);
        proc__set_error(head.job, type, msg);
        head.job->finished_at_ms = clock_wall_ms();
        proc__finish(pe, head.job, outcome, true);
    } else if (s->kill == KILL_NONE) {
        LOG_WARN("executor %s: %s while idle", pe->base.name, msg);
    }
    for (int i = 0; i < n_rest; i++) finish_leave(pe, rest[i].job, how[i]);

    pthread_mutex_lock(&pe->lock);
    bool replace = !pe->draining && !pe->stopping;
    pthread_mutex_unlock(&pe->lock);
    bool quick = !s->ran_a_job && s->kill == KILL_NONE && clock_mono_ns() - s->spawned_ns < QUICK_DEATH_NS;
    s->kill = KILL_NONE;
    if (replace) proc__slot_respawn(pe, s, quick);
}
