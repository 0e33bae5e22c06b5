/* exec_run.c - running a program for a task: the exec task and command
 * tasks (exec_task.c, command.c) both start their programs here.
 *
 * DESIGN
 *
 * A program runs with the environment its caller built (exec: a clean one,
 * PATH=/usr/local/bin:/usr/bin:/bin plus what the job gives), in its own
 * process group, with every signal at its default and none blocked (the
 * server blocks SIGTERM and ignores SIGPIPE; the program must not inherit
 * that). argv[0] without a '/' is looked up in that environment's PATH by us,
 * before starting it, so the lookup never depends on the server's own
 * environment. Never a shell.
 *
 * Output: stdout and stderr are each kept up to TASK_EXEC_OUTPUT_MAX bytes;
 * past that they are read and dropped, so the program never blocks on a full
 * pipe, and `*_truncated` says so. Bytes that are not UTF-8 become U+FFFD.
 *
 * End: the job ends when the program (the group leader) exits. Whatever it
 * left running in its process group is then killed with SIGKILL (the group is
 * the job's), and the pipes are read until EOF for at most EXEC_DRAIN_MS, in
 * case something outside the group still holds them. A stop (cancel or
 * timeout) sends SIGTERM to the group, then SIGKILL after EXEC_KILL_GRACE_MS.
 *
 * Two runners:
 *   - task_exec_run(), synchronous, for the process executor's workers:
 *     posix_spawn (no fork of a big process, no code of ours between fork and
 *     exec), pipes with O_CLOEXEC on our ends, one poll() loop for stdin,
 *     stdout, stderr and a pidfd, waking at least every 100 ms to poll
 *     should_stop(). The leader's exit is seen with waitid(WNOWAIT), so the
 *     group is killed while the leader is a zombie and its pid (the group
 *     id) cannot have been reused. SIGPIPE is blocked in the calling thread
 *     while stdin is written, and a pending one is taken before returning.
 *   - task_exec_start(), on the async executor's libuv loop: uv_spawn with
 *     UV_PROCESS_DETACHED (setsid: its own group), three pipes and one timer
 *     (own timeout, then the SIGKILL grace, then the drain deadline). done()
 *     comes once the exit callback ran and all five handles are closed.
 */
#include "task_extra_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "../common/clock.h"

#define EXEC_POLL_MS 100            /* should_stop() is polled at least this often */
#define EXEC_KILL_GRACE_MS 500      /* SIGTERM, then SIGKILL after this */
#define EXEC_DRAIN_MS 1000          /* after the exit, read leftovers this long at most */
#define EXEC_READ_CHUNK (64u << 10)
#define EXEC_READS_PER_WAKE 16      /* reads of one pipe per poll() wake-up, so stops stay prompt */

/* ---- output and outcome, shared by both runners -------------------------- */

struct outbuf {
    char *data;
    size_t len, cap;
    bool truncated;
};

/* Keeps what fits under the cap; the rest is dropped and flagged. */
static void outbuf_add(struct outbuf *b, const char *p, size_t n)
{
    size_t room = TASK_EXEC_OUTPUT_MAX - b->len;
    if (n > room) {
        b->truncated = true;
        n = room;
    }
    if (n == 0) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        if (cap > TASK_EXEC_OUTPUT_MAX) cap = TASK_EXEC_OUTPUT_MAX;
        char *data = realloc(b->data, cap);
        if (!data) { /* keep what we have: flagged as truncated */
            b->truncated = true;
            return;
        }
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

enum exec_stop { EXEC_STOP_NONE = 0, EXEC_STOP_CANCEL, EXEC_STOP_TIMEOUT };

struct exec_end {
    bool exited;     /* normal exit: exit_code valid */
    int exit_code;
    int term_signal; /* killed by this signal, 0 = not */
    enum exec_stop stop;
    int64_t timeout_ms;
    struct outbuf out, err;
    char prog[80]; /* argv[0], for messages */
};

static void exec_end_fini(struct exec_end *e)
{
    free(e->out.data);
    free(e->err.data);
}

/* Builds the result and, unless the program exited 0 untroubled, the error.
 * Returns 0 (success) or -1 with *type and msg set; *result may be NULL only
 * when out of memory (then -1 with a message). */
static int exec_end_outputs(const struct exec_end *e, cJSON **result, enum job_error_type *type, char *msg,
                            size_t msize)
{
    cJSON *r = cJSON_CreateObject();
    bool ok = r != NULL;
    ok = ok && cJSON_AddItemToObject(r, "exit_code", e->exited ? cJSON_CreateNumber(e->exit_code) : cJSON_CreateNull());
    ok = ok && cJSON_AddItemToObject(r, "signal", e->term_signal ? cJSON_CreateNumber(e->term_signal) : cJSON_CreateNull());
    ok = ok && cJSON_AddItemToObject(r, "stdout", task_text_json(e->out.data ? e->out.data : "", e->out.len, e->out.truncated));
    ok = ok && cJSON_AddItemToObject(r, "stderr", task_text_json(e->err.data ? e->err.data : "", e->err.len, e->err.truncated));
    ok = ok && cJSON_AddBoolToObject(r, "stdout_truncated", e->out.truncated);
    ok = ok && cJSON_AddBoolToObject(r, "stderr_truncated", e->err.truncated);
    if (!ok) {
        cJSON_Delete(r);
        *result = NULL;
        *type = JOB_ERR_TASK;
        snprintf(msg, msize, "%s", "out of memory while building the result");
        return -1;
    }
    *result = r;
    if (e->stop == EXEC_STOP_TIMEOUT) {
        *type = JOB_ERR_TIMEOUT;
        snprintf(msg, msize, "%s timed out after %.3f s and was killed", e->prog, (double)e->timeout_ms / 1000.0);
    } else if (e->stop == EXEC_STOP_CANCEL) {
        /* The runner rewrites this as "timeout" when the job's deadline was the cause. */
        *type = JOB_ERR_CANCELLED;
        snprintf(msg, msize, "%s was stopped (cancelled)", e->prog);
    } else if (e->term_signal) {
        const char *abbrev = sigabbrev_np(e->term_signal);
        *type = JOB_ERR_SIGNAL;
        snprintf(msg, msize, "%s was killed by signal %d (SIG%s)", e->prog, e->term_signal, abbrev ? abbrev : "?");
    } else if (!e->exited) {
        *type = JOB_ERR_TASK;
        snprintf(msg, msize, "%s ended, but its exit status was lost", e->prog);
    } else if (e->exit_code != 0) {
        *type = JOB_ERR_EXIT_STATUS;
        snprintf(msg, msize, "%s exited with status %d", e->prog, e->exit_code);
    } else {
        return 0;
    }
    return -1;
}

int task_exec_resolve(const char *argv0, const char *const *envp, char *out, size_t size)
{
    if (strchr(argv0, '/')) {
        if (strlen(argv0) >= size) return -ENAMETOOLONG;
        memcpy(out, argv0, strlen(argv0) + 1);
        return 0;
    }
    const char *path = TASK_EXEC_PATH;
    for (const char *const *e = envp; *e; e++)
        if (strncmp(*e, "PATH=", 5) == 0) path = *e + 5;
    int rc = -ENOENT;
    for (const char *p = path;; p++) {
        size_t n = strcspn(p, ":");
        struct stat st;
        int w = snprintf(out, size, "%.*s%s%s", (int)n, n ? p : ".", "/", argv0);
        if (w > 0 && (size_t)w < size && stat(out, &st) == 0 && S_ISREG(st.st_mode)) {
            if (access(out, X_OK) == 0) return 0;
            rc = -EACCES;
        }
        p += n;
        if (!*p) break;
    }
    return rc;
}

/* Checks the program and its cwd before starting it, for a clear message.
 * Returns 0 with the resolved path, or -1 with msg set. */
static int exec_prepare(const struct task_exec_spec *spec, char *path, size_t size, char *msg, size_t msize)
{
    int rc = task_exec_resolve(spec->argv[0], spec->envp, path, size);
    if (rc == -ENOENT && !strchr(spec->argv[0], '/')) {
        snprintf(msg, msize, "cannot start '%.*s': no such program in PATH", task_utf8_clip(spec->argv[0], 150),
                 spec->argv[0]);
        return -1;
    }
    if (rc < 0) {
        snprintf(msg, msize, "cannot start '%.*s': %s", task_utf8_clip(spec->argv[0], 150), spec->argv[0],
                 strerror(-rc));
        return -1;
    }
    struct stat st;
    if (spec->cwd && (stat(spec->cwd, &st) != 0 || !S_ISDIR(st.st_mode))) {
        snprintf(msg, msize, "cannot start '%.*s': cwd '%.*s' is not a directory", task_utf8_clip(spec->argv[0], 150),
                 spec->argv[0], task_utf8_clip(spec->cwd, 150), spec->cwd);
        return -1;
    }
    return 0;
}

static void exec_end_init(struct exec_end *e, const struct task_exec_spec *spec)
{
    memset(e, 0, sizeof *e);
    const char *slash = strrchr(spec->argv[0], '/');
    snprintf(e->prog, sizeof e->prog, "%s", slash && slash[1] ? slash + 1 : spec->argv[0]);
    e->timeout_ms = spec->timeout_ms;
}

/* ---- the synchronous runner ---------------------------------------------- */

static void close_fd(int *fd)
{
    if (*fd >= 0) close(*fd); /* a pipe end: nothing is lost on close */
    *fd = -1;
}

/* Reads what fd has now into b (dropping past the cap). Closes fd at EOF or
 * on an error. */
static void drain_fd(int *fd, struct outbuf *b)
{
    char buf[EXEC_READ_CHUNK];
    for (int i = 0; i < EXEC_READS_PER_WAKE && *fd >= 0; i++) {
        ssize_t n = read(*fd, buf, sizeof buf);
        if (n > 0) {
            outbuf_add(b, buf, (size_t)n);
        } else if (n == 0) {
            close_fd(fd);
        } else if (errno == EINTR) {
            continue;
        } else {
            if (errno != EAGAIN && errno != EWOULDBLOCK) close_fd(fd);
            break;
        }
    }
}

/* Milliseconds from now_ns until t_ns, at least 0, rounded up. */
static int ms_until(int64_t t_ns, int64_t now_ns)
{
    int64_t ms = (t_ns - now_ns + 999999) / 1000000;
    return ms < 0 ? 0 : ms > INT_MAX ? INT_MAX : (int)ms;
}

/* Starts the program: pipes, file actions, attributes, posix_spawn. fds[0]
 * is our end of its stdin, fds[1] and fds[2] of its stdout and stderr.
 * Returns 0 or a positive errno. */
static int exec_spawn(const struct task_exec_spec *spec, const char *path, pid_t *pid, int fds[3])
{
    int p[3][2] = {{-1, -1}, {-1, -1}, {-1, -1}}, rc = 0;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    bool fa_ok = false, attr_ok = false;
    sigset_t none, all;

    for (int i = 0; i < 3; i++) {
        if (pipe2(p[i], O_CLOEXEC) < 0) {
            rc = errno;
            goto out;
        }
    }
    /* Our ends: stdin's write end, the read ends of stdout and stderr. */
    int ours[3] = {p[0][1], p[1][0], p[2][0]};
    for (int i = 0; i < 3; i++) {
        int fl = fcntl(ours[i], F_GETFL);
        if (fl < 0 || fcntl(ours[i], F_SETFL, fl | O_NONBLOCK) < 0) {
            rc = errno;
            goto out;
        }
    }
    if ((rc = posix_spawn_file_actions_init(&fa)) != 0) goto out;
    fa_ok = true;
    /* dup2 clears FD_CLOEXEC on 0, 1, 2; every other descriptor of ours is
     * O_CLOEXEC and disappears at exec. */
    if ((rc = posix_spawn_file_actions_adddup2(&fa, p[0][0], 0)) != 0 ||
        (rc = posix_spawn_file_actions_adddup2(&fa, p[1][1], 1)) != 0 ||
        (rc = posix_spawn_file_actions_adddup2(&fa, p[2][1], 2)) != 0)
        goto out;
    if (spec->cwd && (rc = posix_spawn_file_actions_addchdir_np(&fa, spec->cwd)) != 0) goto out;
    if ((rc = posix_spawnattr_init(&attr)) != 0) goto out;
    attr_ok = true;
    sigemptyset(&none);
    sigfillset(&all);
    if ((rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                                  POSIX_SPAWN_SETSIGDEF)) != 0 ||
        (rc = posix_spawnattr_setpgroup(&attr, 0)) != 0 || /* its own group: pgid = pid */
        (rc = posix_spawnattr_setsigmask(&attr, &none)) != 0 ||
        (rc = posix_spawnattr_setsigdefault(&attr, &all)) != 0)
        goto out;
    rc = posix_spawn(pid, path, &fa, &attr, (char *const *)spec->argv, (char *const *)spec->envp);
out:
    if (fa_ok) posix_spawn_file_actions_destroy(&fa);
    if (attr_ok) posix_spawnattr_destroy(&attr);
    close_fd(&p[0][0]); /* the child's ends: it has its copies */
    close_fd(&p[1][1]);
    close_fd(&p[2][1]);
    if (rc != 0) {
        close_fd(&p[0][1]);
        close_fd(&p[1][0]);
        close_fd(&p[2][0]);
    }
    fds[0] = p[0][1];
    fds[1] = p[1][0];
    fds[2] = p[2][0];
    return rc;
}

/* True (and the leader reaped, its status in e) when the leader has exited.
 * The group is killed first, while the leader is a zombie: its pid, which is
 * the group id, cannot have been reused yet. */
static bool exec_reap(pid_t pid, struct exec_end *e)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int r;
    do r = waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT);
    while (r < 0 && errno == EINTR);
    if (r < 0 && errno == ECHILD) return true; /* reaped by someone else: status lost */
    if (r < 0 || si.si_pid != pid) return false;
    killpg(pid, SIGKILL); /* whatever it left behind; ESRCH when nothing is left */
    int status = 0;
    pid_t w;
    do w = waitpid(pid, &status, 0);
    while (w < 0 && errno == EINTR);
    if (w == pid && WIFEXITED(status)) {
        e->exited = true;
        e->exit_code = WEXITSTATUS(status);
    } else if (w == pid && WIFSIGNALED(status)) {
        e->term_signal = WTERMSIG(status);
    }
    return true;
}

/* The process group of the program task_exec_run is running (0: none).
 * Written by the running job's thread, read by the worker's watchdog thread
 * (executors/worker.c) when the server dies: an atomic. */
static _Atomic int running_group;

int task_exec_running_group(void)
{
    return atomic_load(&running_group);
}

int task_exec_run(struct task_ctx *ctx, const struct task_exec_spec *spec)
{
    struct exec_end e;
    char path[PATH_MAX], msg[512];
    int fds[3] = {-1, -1, -1}, pidfd = -1, rc = -1;
    pid_t pid = -1;
    bool epipe = false, sigmask_set = false;
    sigset_t pipe_set, old_set;
    enum job_error_type type = JOB_ERR_TASK;

    exec_end_init(&e, spec);
    if (exec_prepare(spec, path, sizeof path, msg, sizeof msg) < 0) {
        rc = task_fail(ctx, JOB_ERR_TASK, "%s", msg);
        goto out;
    }
    int err = exec_spawn(spec, path, &pid, fds);
    if (err != 0) {
        rc = task_fail(ctx, JOB_ERR_TASK, "cannot start '%.*s': %s", task_utf8_clip(spec->argv[0], 150),
                       spec->argv[0], strerror(err));
        goto out;
    }
    atomic_store(&running_group, (int)pid);
    /* A write to a stdin the program closed must fail with EPIPE, not kill
     * the worker: SIGPIPE is blocked here, and a pending one taken below. */
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigmask_set = pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set) == 0;
    if (!spec->stdin_data || spec->stdin_len == 0) close_fd(&fds[0]);
    pidfd = pidfd_open(pid, 0); /* -1 on old kernels: then exits are polled every 10 ms */

    int64_t now = clock_mono_ns();
    int64_t own_deadline = spec->timeout_ms > 0 ? now + spec->timeout_ms * 1000000 : 0;
    int64_t kill_at = 0, drain_until = 0;
    size_t in_off = 0;
    bool reaped = false;
    for (;;) {
        now = clock_mono_ns();
        if (!reaped && e.stop == EXEC_STOP_NONE) {
            if (ctx->should_stop(ctx)) e.stop = EXEC_STOP_CANCEL;
            else if (own_deadline && now >= own_deadline) e.stop = EXEC_STOP_TIMEOUT;
            if (e.stop != EXEC_STOP_NONE) {
                killpg(pid, SIGTERM);
                kill_at = now + EXEC_KILL_GRACE_MS * 1000000LL;
                close_fd(&fds[0]);
            }
        }
        if (!reaped && kill_at && now >= kill_at) {
            killpg(pid, SIGKILL);
            kill_at = 0;
        }
        bool pipes_open = fds[0] >= 0 || fds[1] >= 0 || fds[2] >= 0;
        if (reaped && (!pipes_open || now >= drain_until)) break;

        struct pollfd pfd[4];
        int n = 0, idx[4] = {-1, -1, -1, -1};
        for (int i = 0; i < 3; i++) {
            if (fds[i] < 0) continue;
            idx[i] = n;
            pfd[n++] = (struct pollfd){.fd = fds[i], .events = i == 0 ? POLLOUT : POLLIN};
        }
        if (!reaped && pidfd >= 0) {
            idx[3] = n;
            pfd[n++] = (struct pollfd){.fd = pidfd, .events = POLLIN};
        }
        int wait_ms = reaped ? ms_until(drain_until, now) : (pidfd < 0 && !pipes_open) ? 10 : EXEC_POLL_MS;
        if (kill_at && ms_until(kill_at, now) < wait_ms) wait_ms = ms_until(kill_at, now);
        if (own_deadline && e.stop == EXEC_STOP_NONE && ms_until(own_deadline, now) < wait_ms)
            wait_ms = ms_until(own_deadline, now);
        if (poll(pfd, (nfds_t)n, wait_ms) < 0) {
            if (errno == EINTR) continue;
            /* Cannot wait any more (should not happen): end the program. */
            killpg(pid, SIGKILL);
            for (int i = 0; i < 3; i++) close_fd(&fds[i]);
            close_fd(&pidfd);
            if (e.stop == EXEC_STOP_NONE) e.stop = EXEC_STOP_CANCEL;
        }
        if (idx[0] >= 0 && fds[0] >= 0 && pfd[idx[0]].revents) {
            size_t left = spec->stdin_len - in_off;
            ssize_t w = write(fds[0], spec->stdin_data + in_off, left < EXEC_READ_CHUNK ? left : EXEC_READ_CHUNK);
            if (w > 0) in_off += (size_t)w;
            if (w < 0 && errno == EPIPE) epipe = true;
            if ((w < 0 && errno != EAGAIN && errno != EINTR) || in_off == spec->stdin_len) close_fd(&fds[0]);
        }
        drain_fd(&fds[1], &e.out);
        drain_fd(&fds[2], &e.err);
        if (!reaped && (pidfd < 0 || (idx[3] >= 0 && pfd[idx[3]].revents))) {
            reaped = exec_reap(pid, &e);
            if (reaped) {
                drain_until = clock_mono_ns() + EXEC_DRAIN_MS * 1000000LL;
                close_fd(&fds[0]);
            }
        }
    }

    cJSON *result = NULL;
    rc = exec_end_outputs(&e, &result, &type, msg, sizeof msg);
    ctx->result = result;
    if (rc < 0) task_fail(ctx, type, "%s", msg);
out:
    atomic_store(&running_group, 0);
    for (int i = 0; i < 3; i++) close_fd(&fds[i]);
    close_fd(&pidfd);
    if (sigmask_set) {
        if (epipe && !sigismember(&old_set, SIGPIPE)) {
            struct timespec zero = {0, 0};
            while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR) {
            }
        }
        pthread_sigmask(SIG_SETMASK, &old_set, NULL);
    }
    exec_end_fini(&e);
    return rc;
}

/* ---- the async runner (libuv) -------------------------------------------- */

enum { PIPE_IN = 0, PIPE_OUT, PIPE_ERR };

/* One running program on the loop. Owned by its handles: freed when the last
 * one is closed. `actx` is NULL when start failed (nobody to tell). */
struct exec_async {
    struct task_actx *actx;
    uv_process_t proc;
    uv_pipe_t pipes[3];
    uv_timer_t timer;
    uv_write_t wreq;
    int open;            /* handles not closed yet */
    bool pipe_open[3];   /* not yet handed to uv_close */
    bool timer_closing;
    bool spawned, reaped, term_sent;
    int pid;
    char *stdin_copy;
    size_t stdin_len;
    struct exec_end end;
    char readbuf[EXEC_READ_CHUNK]; /* one read at a time on the loop: shared by both pipes */
};

static void ea_finish(struct exec_async *st)
{
    struct task_actx *a = st->actx;
    if (a) {
        cJSON *result = NULL;
        enum job_error_type type = JOB_ERR_TASK;
        char msg[512];
        if (exec_end_outputs(&st->end, &result, &type, msg, sizeof msg) < 0) task_afail(a, type, "%s", msg);
        a->result = result;
        a->task_state = NULL;
    }
    exec_end_fini(&st->end);
    free(st->stdin_copy);
    free(st);
    if (a) a->done(a);
}

static void ea_closed(uv_handle_t *h)
{
    struct exec_async *st = h->data;
    if (--st->open == 0) ea_finish(st);
}

/* Once the program is reaped and every pipe is closed, the timer goes too. */
static void ea_maybe_close_timer(struct exec_async *st)
{
    if (!st->reaped || st->timer_closing) return;
    for (int i = 0; i < 3; i++)
        if (st->pipe_open[i]) return;
    st->timer_closing = true;
    uv_close((uv_handle_t *)&st->timer, ea_closed);
}

static void ea_close_pipe(struct exec_async *st, int i)
{
    if (!st->pipe_open[i]) return;
    st->pipe_open[i] = false;
    if (i != PIPE_IN) uv_read_stop((uv_stream_t *)&st->pipes[i]);
    uv_close((uv_handle_t *)&st->pipes[i], ea_closed); /* cancels a pending write */
    ea_maybe_close_timer(st);
}

static void ea_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct exec_async *st = h->data;
    *buf = uv_buf_init(st->readbuf, sizeof st->readbuf);
}

static void ea_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct exec_async *st = s->data;
    int i = s == (uv_stream_t *)&st->pipes[PIPE_OUT] ? PIPE_OUT : PIPE_ERR;
    if (nread > 0) outbuf_add(i == PIPE_OUT ? &st->end.out : &st->end.err, buf->base, (size_t)nread);
    else if (nread < 0) ea_close_pipe(st, i); /* UV_EOF or an error */
}

static void ea_written(uv_write_t *req, int status)
{
    struct exec_async *st = req->data;
    ea_close_pipe(st, PIPE_IN); /* all written, or it failed (EPIPE), or cancelled by a close */
}

static void ea_on_timer(uv_timer_t *t);

static void ea_exit(uv_process_t *p, int64_t exit_status, int term_signal)
{
    struct exec_async *st = p->data;
    st->reaped = true;
    if (term_signal) st->end.term_signal = term_signal;
    else st->end.exited = true, st->end.exit_code = (int)exit_status;
    /* Whatever it left in its group goes too. libuv has reaped the leader
     * already, so its pid could in theory be reused by now; a new process
     * would have to be a group leader with that id within microseconds. */
    uv_kill(-st->pid, SIGKILL);
    uv_close((uv_handle_t *)&st->proc, ea_closed);
    ea_close_pipe(st, PIPE_IN);
    uv_timer_start(&st->timer, ea_on_timer, EXEC_DRAIN_MS, 0); /* replaces a kill timer */
    ea_maybe_close_timer(st);
}

/* Sends SIGTERM to the group and arms the SIGKILL timer. */
static void ea_terminate(struct exec_async *st)
{
    st->term_sent = true;
    uv_kill(-st->pid, SIGTERM);
    ea_close_pipe(st, PIPE_IN);
    uv_timer_start(&st->timer, ea_on_timer, EXEC_KILL_GRACE_MS, 0);
}

/* Before the exit: the own timeout (first) or the SIGKILL grace (after
 * SIGTERM). After the exit: the drain deadline. */
static void ea_on_timer(uv_timer_t *t)
{
    struct exec_async *st = t->data;
    if (st->reaped) {
        for (int i = 0; i < 3; i++) ea_close_pipe(st, i);
    } else if (!st->term_sent) {
        if (st->end.stop == EXEC_STOP_NONE) st->end.stop = EXEC_STOP_TIMEOUT;
        ea_terminate(st);
    } else {
        uv_kill(-st->pid, SIGKILL);
    }
}

static void ea_stop(struct task_actx *a)
{
    struct exec_async *st = a->task_state;
    if (!st) return;
    if (st->end.stop == EXEC_STOP_NONE) st->end.stop = EXEC_STOP_CANCEL;
    if (!st->reaped) {
        if (!st->term_sent) ea_terminate(st);
    } else {
        for (int i = 0; i < 3; i++) ea_close_pipe(st, i); /* stop draining */
    }
}

int task_exec_start(struct task_actx *actx, const struct task_exec_spec *spec)
{
    char path[PATH_MAX], msg[512];
    struct exec_async *st = NULL;
    uv_loop_t *loop = actx->loop;
    int r;

    if (exec_prepare(spec, path, sizeof path, msg, sizeof msg) < 0) return task_afail(actx, JOB_ERR_TASK, "%s", msg);
    st = calloc(1, sizeof *st);
    if (!st) return task_afail(actx, JOB_ERR_TASK, "out of memory");
    exec_end_init(&st->end, spec);
    if (spec->stdin_data && spec->stdin_len > 0) {
        if (!(st->stdin_copy = malloc(spec->stdin_len))) {
            free(st);
            return task_afail(actx, JOB_ERR_TASK, "out of memory");
        }
        memcpy(st->stdin_copy, spec->stdin_data, spec->stdin_len);
        st->stdin_len = spec->stdin_len;
    }
    for (int i = 0; i < 3; i++) {
        uv_pipe_init(loop, &st->pipes[i], 0); /* cannot fail on Unix */
        st->pipes[i].data = st;
        st->pipe_open[i] = true;
    }
    uv_timer_init(loop, &st->timer);
    st->timer.data = st;
    st->proc.data = st;
    st->wreq.data = st;
    st->open = 5;

    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE; /* the child reads its stdin */
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    for (int i = 0; i < 3; i++) stdio[i].data.stream = (uv_stream_t *)&st->pipes[i];
    uv_process_options_t opt;
    memset(&opt, 0, sizeof opt);
    opt.exit_cb = ea_exit;
    opt.file = path;
    opt.args = (char **)spec->argv;
    opt.env = (char **)spec->envp;
    opt.cwd = spec->cwd;
    opt.flags = UV_PROCESS_DETACHED; /* setsid(): its own session and process group */
    opt.stdio_count = 3;
    opt.stdio = stdio;
    r = uv_spawn(loop, &st->proc, &opt);
    if (r < 0) {
        /* The handles are initialised and must be closed; the state frees
         * itself in the last close callback, with nobody to tell. */
        task_afail(actx, JOB_ERR_TASK, "cannot start '%.*s': %s", task_utf8_clip(spec->argv[0], 150), spec->argv[0],
                   uv_strerror(r));
        st->reaped = true;
        uv_close((uv_handle_t *)&st->proc, ea_closed);
        for (int i = 0; i < 3; i++) ea_close_pipe(st, i);
        ea_maybe_close_timer(st);
        return -1;
    }
    st->pid = st->proc.pid;
    st->spawned = true;
    st->actx = actx;
    actx->task_state = st;
    actx->stop = ea_stop;
    if (st->stdin_len > 0) {
        uv_buf_t b = uv_buf_init(st->stdin_copy, (unsigned)st->stdin_len);
        if (uv_write(&st->wreq, (uv_stream_t *)&st->pipes[PIPE_IN], &b, 1, ea_written) < 0)
            ea_close_pipe(st, PIPE_IN);
    } else {
        ea_close_pipe(st, PIPE_IN);
    }
    for (int i = PIPE_OUT; i <= PIPE_ERR; i++)
        if (uv_read_start((uv_stream_t *)&st->pipes[i], ea_alloc, ea_read) < 0) ea_close_pipe(st, i);
    if (spec->timeout_ms > 0) uv_timer_start(&st->timer, ea_on_timer, (uint64_t)spec->timeout_ms, 0);
    return 0;
}
