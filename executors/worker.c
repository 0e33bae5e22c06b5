/* worker.c - a process-executor worker: its body (`jobd --internal-worker`,
 * exec_worker_main) and, for the server, how one is started and ended
 * (exec_worker_spawn, exec_worker_reap).
 *
 * DESIGN. One thread, one socket (fd, handed over as fd 3), one FIFO of jobs.
 * The loop: take in whatever the server has sent without blocking (JOBs join
 * the FIFO; a SKIP removes a job that has not started and is answered with
 * SKIPPED); if the FIFO is empty, flush what is pending and block on the
 * socket; else pop a job, send STARTED (flushed before the task runs, so the
 * server always knows when a job began, even if the task then kills the
 * process), run it with exec_run_task(), and queue DONE. DONE is not flushed
 * at once: when another job follows, DONE and the next STARTED leave in one
 * write, so a pipelined stream of short jobs costs one write per job.
 *
 * The server ends a running job (timeout, cancel, drain) by killing this
 * process's group: SIGTERM, then SIGKILL after a grace. SIGTERM only sets a
 * flag (the one signal handler), which should_stop() and sleep_ms() report:
 * a cooperative task stops at once and cleans up after itself (the exec task
 * kills its program, which runs in a process group of its own that the
 * server's killpg does not reach), and the worker then exits without
 * reporting (the server fixed the outcome when it decided to kill). The
 * task's own deadline is set WORKER_DEADLINE_SLACK_MS after the server's
 * timeout, as a backstop only. The worker exits 0 when the socket reaches EOF
 * (the server closed it, or died). If the server dies while a job runs, a
 * watchdog thread (blocked on a pidfd of the server) kills the program the
 * job started, if any - it runs in a process group of its own and would
 * otherwise be orphaned and run on beside the job's retry - and ends the
 * worker at once. Without pidfds (old kernels) the worker falls back to
 * PR_SET_PDEATHSIG with SIGKILL, which orphans such a program.
 *
 * Resource limits are applied by the server with prlimit() right after the
 * spawn, before any job is sent, so the worker reads no environment for them.
 * RLIMIT_AS holds as set. RLIMIT_CPU counts a process's whole life while a
 * worker serves many jobs, so the server sets only the soft limit, to the
 * per-job budget; the worker reads it at its first job and, before each job,
 * moves the soft limit to the CPU time used so far plus that budget (rounded
 * up to the second): a job gets between cpu_seconds and cpu_seconds + 1 of
 * CPU, then SIGXCPU kills the worker and the job fails with `signal`.
 */
#include "exec.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "exec_int.h"
#include "wire.h"

#define WORKER_DEADLINE_SLACK_MS 250      /* after the server's kill time */
#define PROGRESS_INTERVAL_NS (100 * 1000000LL)
#define READ_CHUNK 65536

extern char **environ;

/* Set by SIGTERM: the server is ending this worker; stop the job and exit. */
static volatile sig_atomic_t g_stop;

static void on_sigterm(int sig)
{
    (void)sig;
    g_stop = 1;
}

struct worker {
    int fd;
    const struct task_registry *tasks;
    struct exec_wire_buf in, out;
    struct job **fifo; /* jobs received and not yet started, oldest first */
    size_t n, cap;
    int pid;
    int64_t last_progress_ns;
    const char *job_id;   /* of the running job, for PROGRESS */
    int64_t cpu_budget_s; /* 0: not read yet; < 0: none */
};

/* Writes everything pending. Returns 0, or -EPIPE when the server is gone or
 * another -errno. */
static int flush_out(struct worker *w)
{
    while (w->out.len > w->out.off) {
        ssize_t n = send(w->fd, w->out.data + w->out.off, w->out.len - w->out.off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -errno;
        exec_wire_buf_consume(&w->out, (size_t)n);
    }
    return 0;
}

static int fifo_push(struct worker *w, struct job *job)
{
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 16;
        struct job **f = realloc(w->fifo, cap * sizeof *f);
        if (!f) return -ENOMEM;
        w->fifo = f;
        w->cap = cap;
    }
    w->fifo[w->n++] = job;
    return 0;
}

static struct job *fifo_pop(struct worker *w)
{
    struct job *job = w->fifo[0];
    memmove(w->fifo, w->fifo + 1, (w->n - 1) * sizeof *w->fifo);
    w->n--;
    return job;
}

static int take_job(struct worker *w, const struct exec_wire_msg *m)
{
    struct job *job = job_new();
    int rc = -ENOMEM;
    if (!job) return rc;
    if (m->id.len > ID_LEN) {
        rc = -EPROTO;
        goto out;
    }
    memcpy(job->id, m->id.p, m->id.len);
    job->id[m->id.len] = '\0';
    free(job->args);
    job->args = NULL;
    if (exec_wire_str_dup(&m->task, &job->task) < 0 || exec_wire_str_dup(&m->args, &job->args) < 0) goto out;
    job->timeout_ms = m->timeout_ms;
    job->status = JOB_QUEUED;
    if ((rc = fifo_push(w, job)) == 0) job = NULL;
out:
    job_free(job);
    return rc;
}

static int skip_job(struct worker *w, const struct exec_wire_msg *m)
{
    for (size_t i = 0; i < w->n; i++) {
        if (!exec_wire_str_eq(&m->id, w->fifo[i]->id)) continue;
        int rc = exec_wire_put_id(&w->out, WIRE_SKIPPED, w->fifo[i]->id);
        job_free(w->fifo[i]);
        memmove(w->fifo + i, w->fifo + i + 1, (w->n - i - 1) * sizeof *w->fifo);
        w->n--;
        return rc;
    }
    return 0; /* already started (or finished): the server learns it from STARTED */
}

/* Reads what the socket holds (blocking for the first bytes when `block`) and
 * handles every complete message. Returns 0, 1 at EOF, or -errno. */
static int ingest(struct worker *w, bool block)
{
    for (;;) {
        int rc = exec_wire_buf_reserve(&w->in, READ_CHUNK);
        if (rc < 0) return rc;
        ssize_t n = recv(w->fd, w->in.data + w->in.len, w->in.cap - w->in.len, block ? 0 : MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) {
            if (g_stop) return 1;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
        if (n < 0) return errno == ECONNRESET ? 1 : -errno;
        if (n == 0) return 1;
        w->in.len += (size_t)n;
        for (;;) {
            struct exec_wire_msg m;
            size_t frame = 0;
            rc = exec_wire_decode(w->in.data + w->in.off, w->in.len - w->in.off, &m, &frame);
            if (rc < 0) return rc;
            if (rc == 0) {
                /* A frame bigger than the buffer: grow for it, then read on. */
                size_t have = w->in.len - w->in.off;
                if (frame > w->in.cap - w->in.off && (rc = exec_wire_buf_reserve(&w->in, frame - have)) < 0) return rc;
                break;
            }
            if (m.type == WIRE_JOB)
                rc = take_job(w, &m);
            else if (m.type == WIRE_SKIP)
                rc = skip_job(w, &m);
            else
                rc = -EPROTO;
            if (rc < 0) return rc;
            exec_wire_buf_consume(&w->in, frame);
        }
        if ((size_t)n < READ_CHUNK) return 0; /* took all there was */
        block = false;
    }
}

/* ---- the task_ctx hooks --------------------------------------------------- */

static bool deadline_passed(const struct task_ctx *ctx)
{
    return ctx->deadline_ns > 0 && clock_mono_ns() >= ctx->deadline_ns;
}

static bool hook_should_stop(struct task_ctx *ctx)
{
    return g_stop || deadline_passed(ctx);
}

static int hook_sleep_ms(struct task_ctx *ctx, int64_t ms)
{
    int64_t end = clock_mono_ns() + (ms > 0 ? ms : 0) * 1000000LL;
    bool by_deadline = false;
    if (ctx->deadline_ns > 0 && ctx->deadline_ns < end) {
        end = ctx->deadline_ns;
        by_deadline = true;
    }
    struct timespec ts = {.tv_sec = end / 1000000000LL, .tv_nsec = end % 1000000000LL};
    while (!g_stop && clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
    return by_deadline || g_stop ? -ECANCELED : 0;
}

static void hook_progress(struct task_ctx *ctx, double fraction, const char *message)
{
    struct worker *w = ctx->runner;
    int64_t now = clock_mono_ns();
    if (fraction < 1.0 && now - w->last_progress_ns < PROGRESS_INTERVAL_NS) return;
    w->last_progress_ns = now;
    if (!(fraction >= 0)) fraction = 0; /* also NaN */
    if (fraction > 1) fraction = 1;
    /* A report that cannot be sent is dropped: progress is advisory, and a
     * dead server is noticed at the next read. */
    if (exec_wire_put_progress(&w->out, w->job_id, fraction, message) == 0) (void)flush_out(w);
}

/* Moves the soft RLIMIT_CPU to (CPU used so far + the per-job budget); see DESIGN. */
static void cpu_budget_arm(struct worker *w)
{
    struct rlimit rl;
    struct rusage ru;
    if (w->cpu_budget_s == 0) {
        w->cpu_budget_s = -1;
        if (getrlimit(RLIMIT_CPU, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) w->cpu_budget_s = (int64_t)rl.rlim_cur;
    }
    if (w->cpu_budget_s < 0 || getrlimit(RLIMIT_CPU, &rl) < 0 || getrusage(RUSAGE_SELF, &ru) < 0) return;
    rlim_t want = (rlim_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + 1 + w->cpu_budget_s);
    if (rl.rlim_max != RLIM_INFINITY && want > rl.rlim_max) want = rl.rlim_max;
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_CPU, &rl) < 0) /* the old limit stays: stricter, never looser */
        LOG_WARN("worker %d: cannot move RLIMIT_CPU: %s", w->pid, strerror(errno));
}

/* Runs one job and queues its DONE. Returns 0 or -errno (fatal). */
static int run_one(struct worker *w, struct job *job)
{
    cpu_budget_arm(w);
    int rc = exec_wire_put_started(&w->out, job->id, w->pid, clock_wall_ms());
    if (rc < 0 || (rc = flush_out(w)) < 0) return rc;

    struct task_ctx ctx = {0};
    ctx.runner = w;
    ctx.progress = hook_progress;
    ctx.should_stop = hook_should_stop;
    ctx.sleep_ms = hook_sleep_ms;
    int64_t start_ns = clock_mono_ns();
    if (job->timeout_ms > 0) ctx.deadline_ns = start_ns + (job->timeout_ms + WORKER_DEADLINE_SLACK_MS) * 1000000LL;
    w->last_progress_ns = 0;
    w->job_id = job->id;

    enum exec_outcome outcome = exec_run_task(w->tasks, job, &ctx);
    int64_t run_us = (clock_mono_ns() - start_ns) / 1000;
    if (outcome != EXEC_OK && deadline_passed(&ctx)) {
        char msg[96];
        snprintf(msg, sizeof msg, "timed out after %.3f s", (double)job->timeout_ms / 1000.0);
        job->error_type = JOB_ERR_TIMEOUT;
        job_set_str(&job->error_message, msg); /* -ENOMEM keeps the task's message */
    }
    w->job_id = NULL;
    bool ok = outcome == EXEC_OK;
    int64_t finished = clock_wall_ms();
    rc = exec_wire_put_done(&w->out, job->id, ok, job->result, ok ? 0 : (uint8_t)job->error_type,
                       ok ? NULL : job->error_message, finished, run_us);
    if (rc == -EMSGSIZE) {
        char msg[160];
        snprintf(msg, sizeof msg, "the result (%zu bytes) is larger than a process worker can return (%u bytes)",
                 job->result ? strlen(job->result) : (size_t)0, WIRE_MAX_FRAME - 1024);
        rc = exec_wire_put_done(&w->out, job->id, false, NULL, JOB_ERR_INVALID_RESULT, msg, finished, run_us);
    }
    return rc;
}

/* Blocks until the server (the parent) exits, then kills the program the
 * current job runs (SIGKILL to its group) and ends the worker: nobody is left
 * to take the result, and the job is retried or failed (worker_lost) at the
 * server's next start. */
static void *watchdog_main(void *arg)
{
    int pidfd = (int)(intptr_t)arg;
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    while (poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
    int group = task_exec_running_group();
    if (group > 0) killpg(group, SIGKILL);
    _exit(0);
    return NULL;
}

/* Starts the watchdog on a pidfd of `parent`. 0, or -1 when pidfds or the
 * thread are unavailable (the caller falls back to PR_SET_PDEATHSIG). */
static int watchdog_start(pid_t parent)
{
    int pidfd = (int)syscall(SYS_pidfd_open, parent, 0);
    if (pidfd < 0) return -1;
    (void)fcntl(pidfd, F_SETFD, FD_CLOEXEC); /* pidfd_open sets it already; belt and braces */
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, watchdog_main, (void *)(intptr_t)pidfd);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        close(pidfd);
        return -1;
    }
    return 0;
}

int exec_worker_main(int fd, const struct task_registry *tasks)
{
    struct worker w = {.fd = fd, .tasks = tasks, .pid = (int)getpid()};
    int status = 0, rc = 0;

    pid_t parent = getppid();
    if (watchdog_start(parent) < 0 && prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) return 0;
    if (getppid() != parent) return 0; /* the server is gone */
    /* No SA_RESTART: a blocking call of the task or of ours returns EINTR. */
    struct sigaction sa = {.sa_handler = on_sigterm};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL); /* the server's blocked SIGTERM must not shield us */
    /* fd arrives without FD_CLOEXEC (that is how it crossed exec); no task's
     * child may inherit it. */
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) {
        fprintf(stderr, "jobd: --internal-worker is started by a process executor, not by hand (fd %d: %s)\n", fd,
                strerror(errno));
        return 2;
    }

    for (;;) {
        rc = ingest(&w, false);
        if (rc == 0 && w.n == 0) {
            if ((rc = flush_out(&w)) < 0) break;
            rc = ingest(&w, true);
        }
        if (rc != 0 || g_stop) break;
        if (w.n == 0) continue;
        struct job *job = fifo_pop(&w);
        rc = run_one(&w, job);
        job_free(job);
        if (rc < 0 || g_stop) break; /* stopped: the server is not listening for this job any more */
    }
    if (rc == 1) (void)flush_out(&w); /* EOF: the server is leaving; nothing to report to */
    if (rc < 0 && rc != -EPIPE && rc != -ECONNRESET) {
        LOG_ERROR("worker %d: %s; exiting", w.pid,
                  rc == -EPROTO || rc == -EMSGSIZE ? "the server sent an invalid message" : strerror(-rc));
        status = 3;
    }
    for (size_t i = 0; i < w.n; i++) job_free(w.fifo[i]);
    free(w.fifo);
    exec_wire_buf_fini(&w.in);
    exec_wire_buf_fini(&w.out);
    return status;
}

/* ---- the server's side: starting and ending a worker ------------------------ */

/* Lowers rlimit `res` of pid to `value` (soft only, or soft and hard). */
static int limit_child(int pid, int res, rlim_t value, bool soft_only)
{
    struct rlimit old, lim;
    if (prlimit(pid, res, NULL, &old) < 0) return -errno;
    lim.rlim_cur = old.rlim_max != RLIM_INFINITY && value > old.rlim_max ? old.rlim_max : value;
    lim.rlim_max = soft_only ? old.rlim_max : lim.rlim_cur;
    return prlimit(pid, res, &lim, NULL) < 0 ? -errno : 0;
}

int exec_worker_spawn(char *const *argv, long memory_mb, long cpu_seconds, struct exec_worker_proc *out)
{
    int sv[2] = {-1, -1}, rc = 0, pid = 0, pidfd = -1;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    bool fa_ok = false, attr_ok = false;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return -errno;
    if (sv[1] <= 3) { /* dup2(3, 3) would leave close-on-exec set: move it up */
        int moved = fcntl(sv[1], F_DUPFD_CLOEXEC, 4);
        if (moved < 0) {
            rc = -errno;
            goto out;
        }
        close(sv[1]);
        sv[1] = moved;
    }
    if ((rc = -posix_spawn_file_actions_init(&fa)) < 0) goto out;
    fa_ok = true;
    if ((rc = -posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)) < 0 ||
        (rc = -posix_spawn_file_actions_adddup2(&fa, sv[1], 3)) < 0 ||
        (rc = -posix_spawn_file_actions_addclosefrom_np(&fa, 4)) < 0) /* a guard: all ours are CLOEXEC */
        goto out;
    if ((rc = -posix_spawnattr_init(&attr)) < 0) goto out;
    attr_ok = true;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);  /* the server blocks SIGTERM in all its threads */
    posix_spawnattr_setsigdefault(&attr, &all); /* and ignores SIGPIPE */
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    /* posix_spawn is vfork + exec: only async-signal-safe steps in the child,
     * and an exec failure comes back here as the return value. */
    if ((rc = -posix_spawn(&pid, argv[0], &fa, &attr, argv, environ)) < 0) {
        pid = 0;
        goto out;
    }
    if ((memory_mb > 0 && (rc = limit_child(pid, RLIMIT_AS, (rlim_t)memory_mb << 20, false)) < 0) ||
        (cpu_seconds > 0 && (rc = limit_child(pid, RLIMIT_CPU, (rlim_t)cpu_seconds, true)) < 0))
        goto out;
    pidfd = (int)syscall(SYS_pidfd_open, pid, 0); /* close-on-exec by definition; -1 on old kernels */
    if (fcntl(sv[0], F_SETFL, O_NONBLOCK) < 0) {
        rc = -errno;
        goto out;
    }
    *out = (struct exec_worker_proc){.pid = pid, .sock = sv[0], .pidfd = pidfd};
    sv[0] = pidfd = -1;
    pid = 0;
out:
    if (pid > 0) { /* spawned, then failed: it must not outlive this function */
        struct exec_worker_proc doomed = {.pid = pid, .sock = -1, .pidfd = pidfd};
        int status;
        exec_worker_reap(&doomed, 0, &status);
        pidfd = -1;
    }
    if (fa_ok) posix_spawn_file_actions_destroy(&fa);
    if (attr_ok) posix_spawnattr_destroy(&attr);
    if (sv[0] >= 0) close(sv[0]);
    if (sv[1] >= 0) close(sv[1]);
    if (pidfd >= 0) close(pidfd);
    return rc;
}

int exec_worker_reap(struct exec_worker_proc *w, int64_t wait_ns, int *status)
{
    int64_t end = clock_mono_ns() + wait_ns;
    int r = 0;
    *status = 0;
    if (w->sock >= 0) close(w->sock);
    w->sock = -1;
    for (;;) { /* wait for it to leave by itself, until `end` */
        int64_t left_ms = (end - clock_mono_ns()) / 1000000;
        if (left_ms <= 0) break;
        if (w->pidfd < 0) { /* no pidfd: poll waitpid (its group can then not be swept) */
            if ((r = waitpid(w->pid, status, WNOHANG)) == w->pid) goto out;
            usleep(5000);
            continue;
        }
        struct pollfd p = {.fd = w->pidfd, .events = POLLIN};
        r = poll(&p, 1, left_ms > 1000 ? 1000 : (int)left_ms);
        if (r > 0 || (r < 0 && errno != EINTR)) break;
    }
    killpg(w->pid, SIGKILL); /* ESRCH when the group is already empty */
    while ((r = waitpid(w->pid, status, 0)) < 0 && errno == EINTR) {
    }
out:
    if (r < 0) r = -errno;
    if (w->pidfd >= 0) close(w->pidfd);
    w->pidfd = -1;
    return r < 0 ? r : 0;
}
