/* test_tasks_extra.c - the tasks beyond builtin.c: exec, http_get, crash,
 * command tasks and plugins (tasks/exec_task.c, http_get.c, crash.c,
 * command.c, plugin.c, and exec_run.c which runs the programs).
 *
 * Sync runs use a fake runner: a struct task_ctx whose should_stop() answers
 * true once a given time has passed since the run began (that is how a cancel
 * arrives "while it runs"). Async runs use a real libuv loop in this thread:
 * the fake done() records the call, and the loop runs until no handle is left;
 * every async test then checks uv_loop_close() == 0 (no handle left open).
 *
 * HTTP goes to servers of our own on 127.0.0.1:0: a thread that answers a few
 * fixed routes, and a socket that listens but never accepts (connects succeed
 * through the backlog; no answer ever comes).
 *
 * SIGPIPE keeps its default disposition for the sync tests (the exec runner
 * must guard its own writes) and is ignored before the async ones, as in the
 * server.
 */
#include "../../tasks/task.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "../../common/clock.h"
#include "harness.h"

static struct task_registry *g_reg;        /* allow_exec */
static struct task_registry *g_reg_noexec; /* defaults */
static char g_plugin_dir[PATH_MAX];        /* build/VARIANT, from /proc/self/exe */

/* ---- the fake sync runner ------------------------------------------------ */

struct fake {
    int64_t start_ns;
    int64_t stop_after_ms; /* should_stop() true after this; < 0 = never */
    int polls;
};

static bool fake_should_stop(struct task_ctx *ctx)
{
    struct fake *f = ctx->runner;
    f->polls++;
    return f->stop_after_ms >= 0 && clock_mono_ns() - f->start_ns >= f->stop_after_ms * 1000000;
}

static void fake_progress(struct task_ctx *ctx, double fraction, const char *message)
{
}

static int fake_sleep_ms(struct task_ctx *ctx, int64_t ms)
{
    return 0;
}

/* Runs `task` of reg with args (JSON text) synchronously. *ms gets the run's
 * duration. The caller frees ctx->result. */
static int run_sync(struct task_registry *reg, const char *task, const char *json, int64_t stop_after_ms,
                    struct task_ctx *ctx, int64_t *ms)
{
    static struct fake f;
    const struct task_def *def = task_find(reg, task);
    cJSON *args = cJSON_Parse(json);
    memset(ctx, 0, sizeof *ctx);
    if (!def || !args || !def->run) {
        fprintf(stderr, "    bad test input: %s %s\n", task, json);
        cJSON_Delete(args);
        return -100;
    }
    f = (struct fake){clock_mono_ns(), stop_after_ms, 0};
    ctx->args = args;
    ctx->job_id = "01TESTJOB0000000000000000";
    ctx->should_stop = fake_should_stop;
    ctx->progress = fake_progress;
    ctx->sleep_ms = fake_sleep_ms;
    ctx->runner = &f;
    int rc = def->run(ctx);
    if (ms) *ms = (clock_mono_ns() - f.start_ns) / 1000000;
    ctx->args = NULL;
    cJSON_Delete(args);
    return rc;
}

static const char *res_str(const struct task_ctx *ctx, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(ctx->result, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double res_num(const cJSON *result, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(result, key);
    return cJSON_IsNumber(v) ? v->valuedouble : -12345;
}

static bool res_true(const cJSON *result, const char *key)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(result, key));
}

static bool res_null(const cJSON *result, const char *key)
{
    return cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(result, key));
}

/* Validates json with reg's task. Returns the validator's return; err filled. */
static int validate(struct task_registry *reg, const char *task, const char *json, struct api_err *err)
{
    const struct task_def *def = task_find(reg, task);
    cJSON *args = cJSON_Parse(json);
    memset(err, 0, sizeof *err);
    int rc = def && args ? (def->validate ? def->validate(args, err) : 0) : -100;
    cJSON_Delete(args);
    return rc;
}

#define REFUSE(reg, task, json, want_field, part)                                                   \
    do {                                                                                            \
        struct api_err e_;                                                                          \
        CHECK_EQ_INT(validate((reg), (task), (json), &e_), -1);                                     \
        CHECK_EQ_INT(e_.code, API_INVALID_ARGUMENT);                                                \
        CHECK_EQ_STR(e_.field, (want_field));                                                       \
        if (!strstr(e_.message, (part))) fprintf(stderr, "    \"%s\" lacks \"%s\"\n", e_.message, (part)); \
        CHECK(strstr(e_.message, (part)) != NULL);                                                  \
    } while (0)

#define ACCEPT(reg, task, json)                                                                     \
    do {                                                                                            \
        struct api_err e_;                                                                          \
        int rc_ = validate((reg), (task), (json), &e_);                                             \
        if (rc_ != 0) fprintf(stderr, "    refused %s: %s\n", (json), e_.message);                  \
        CHECK_EQ_INT(rc_, 0);                                                                       \
    } while (0)

/* ---- the async runner: a loop in this thread ----------------------------- */

struct afake {
    uv_loop_t loop;
    struct task_actx a;
    uv_timer_t stop_timer;
    bool timer_open;
    uv_timer_t tick; /* see afake_tick */
    bool tick_open;
    int done_calls;
    int64_t start_ns, done_ns;
    int start_rc;
    cJSON *args;
};

static void afake_timer_closed(uv_handle_t *h)
{
}

static void afake_close_timer(struct afake *f)
{
    if (!f->timer_open) return;
    f->timer_open = false;
    uv_close((uv_handle_t *)&f->stop_timer, afake_timer_closed);
}

/* Wakes the loop 20 times a second (unreferenced: it keeps nothing alive).
 * Under TSan a SIGCHLD can wait in the runtime until the thread next enters
 * an intercepted call, and a loop with nothing else to do would sleep in
 * epoll_wait for ever: a TSan CI rehearsal hung in test_command_fills_
 * placeholders so. Also fails the test after 60 s instead of hanging. */
static void afake_tick(uv_timer_t *t)
{
    struct afake *f = t->data;
    if (clock_mono_ns() - f->start_ns > 60LL * 1000000000LL && f->done_calls == 0) {
        fprintf(stderr, "    timed out after 60 s: the task never called done\n");
        uv_stop(&f->loop);
    }
}

static void afake_done(struct task_actx *a)
{
    struct afake *f = a->runner;
    f->done_calls++;
    f->done_ns = clock_mono_ns();
    afake_close_timer(f);
}

static void afake_stop_fired(uv_timer_t *t)
{
    struct afake *f = t->data;
    if (f->done_calls == 0 && f->a.stop) f->a.stop(&f->a);
    afake_close_timer(f);
}

static void afake_progress(struct task_actx *a, double fraction, const char *message)
{
}

/* Starts `task` on a fresh loop and runs the loop until nothing is left;
 * stop() after stop_after_ms (< 0: never). The caller checks f and then
 * calls afake_fini(). */
static void run_async(struct task_registry *reg, const char *task, const char *json, int64_t stop_after_ms,
                      struct afake *f)
{
    memset(f, 0, sizeof *f);
    CHECK_EQ_INT(uv_loop_init(&f->loop), 0);
    const struct task_def *def = task_find(reg, task);
    f->args = cJSON_Parse(json);
    if (!def || !def->start_async || !f->args) {
        fprintf(stderr, "    bad test input: %s %s\n", task, json);
        f->start_rc = -100;
        return;
    }
    f->a.args = f->args;
    f->a.job_id = "01TESTJOB0000000000000000";
    f->a.loop = &f->loop;
    f->a.done = afake_done;
    f->a.progress = afake_progress;
    f->a.runner = f;
    f->start_ns = clock_mono_ns();
    f->start_rc = def->start_async(&f->a);
    CHECK_EQ_INT(f->done_calls, 0); /* never from inside start() */
    if (f->start_rc == 0 && stop_after_ms >= 0) {
        uv_timer_init(&f->loop, &f->stop_timer);
        f->stop_timer.data = f;
        f->timer_open = true;
        uv_update_time(&f->loop); /* count from now, not from the loop's last tick */
        uv_timer_start(&f->stop_timer, afake_stop_fired, (uint64_t)stop_after_ms, 0);
    }
    uv_timer_init(&f->loop, &f->tick);
    f->tick.data = f;
    f->tick_open = true;
    uv_timer_start(&f->tick, afake_tick, 50, 50);
    uv_unref((uv_handle_t *)&f->tick);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    if (f->tick_open) {
        f->tick_open = false;
        uv_close((uv_handle_t *)&f->tick, afake_timer_closed);
        uv_run(&f->loop, UV_RUN_NOWAIT); /* runs the close (NOWAIT: after a time-out the hung task stays) */
    }
    if (f->start_rc == 0) CHECK_EQ_INT(f->done_calls, 1);
    else CHECK_EQ_INT(f->done_calls, 0);
}

static int64_t afake_ms(const struct afake *f)
{
    /* libuv's clock is CLOCK_MONOTONIC_COARSE: its timers may fire a few ms
     * before ours says they are due. Lower bounds below allow for that. */
    return (f->done_ns - f->start_ns) / 1000000;
}

static void afake_fini(struct afake *f)
{
    CHECK_EQ_INT(uv_loop_close(&f->loop), 0); /* no handle left open */
    cJSON_Delete(f->a.result);
    cJSON_Delete(f->args);
}

/* ---- a tiny HTTP server -------------------------------------------------- */

struct http_srv {
    int fd, port;
    pthread_t thread;
    atomic_bool quit;
    atomic_int served;
};

/* A listening socket on 127.0.0.1:0; its port in *port. */
static int listen_any(int *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 64) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return;
        p += w;
        n -= (size_t)w;
    }
}

/* Answers one connection by the request path. */
static void http_answer(int c)
{
    char req[4096];
    size_t n = 0;
    while (n < sizeof req - 1 && !memmem(req, n, "\r\n\r\n", 4)) {
        ssize_t r = recv(c, req + n, sizeof req - 1 - n, 0);
        if (r <= 0) return;
        n += (size_t)r;
    }
    req[n] = '\0';
    char head[256];
    if (strncmp(req, "GET /big ", 9) == 0) {
        size_t len = 3u << 20;
        char *body = malloc(len);
        if (!body) return;
        memset(body, 'x', len);
        snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n", len);
        write_all(c, head, strlen(head));
        write_all(c, body, len);
        free(body);
    } else if (strncmp(req, "GET /bin ", 9) == 0) {
        static const char body[] = {'\x00', '\xff', '\xfe', 'a'};
        snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 4\r\n\r\n");
        write_all(c, head, strlen(head));
        write_all(c, body, 4);
    } else if (strncmp(req, "GET /redirect ", 14) == 0) {
        snprintf(head, sizeof head, "HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n");
        write_all(c, head, strlen(head));
    } else if (strncmp(req, "GET /missing ", 13) == 0) {
        snprintf(head, sizeof head, "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nnope");
        write_all(c, head, strlen(head));
    } else {
        snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nX-Other: 1\r\n"
                                    "Content-Length: 13\r\n\r\nhello, w\xc3\xb6rld");
        write_all(c, head, strlen(head));
    }
}

static void *http_srv_main(void *arg)
{
    struct http_srv *s = arg;
    for (;;) {
        int c = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC);
        if (atomic_load(&s->quit)) {
            if (c >= 0) close(c);
            return NULL;
        }
        if (c < 0) continue;
        http_answer(c);
        atomic_fetch_add(&s->served, 1);
        close(c);
    }
}

static struct http_srv g_http;
static int g_silent_fd = -1, g_silent_port; /* listens, never accepts */

static int http_srv_start(struct http_srv *s)
{
    if ((s->fd = listen_any(&s->port)) < 0) return -1;
    return pthread_create(&s->thread, NULL, http_srv_main, s) == 0 ? 0 : -1;
}

static void http_srv_stop(struct http_srv *s)
{
    int port = 0;
    atomic_store(&s->quit, true);
    /* Wake accept() with one connection of our own. */
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    (void)port;
    if (fd >= 0) {
        if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) perror("connect");
        close(fd);
    }
    pthread_join(s->thread, NULL);
    close(s->fd);
}

static void url(char *buf, size_t size, int port, const char *path)
{
    snprintf(buf, size, "http://127.0.0.1:%d%s", port, path);
}

/* ==== exec, sync ========================================================== */

static void test_exec_true_and_false(void)
{
    struct task_ctx ctx;
    CHECK_EQ_INT(run_sync(g_reg, "exec", "{\"argv\": [\"true\"]}", -1, &ctx, NULL), 0);
    CHECK_EQ_INT(res_num(ctx.result, "exit_code"), 0);
    CHECK(res_null(ctx.result, "signal"));
    CHECK_EQ_STR(res_str(&ctx, "stdout"), "");
    CHECK(!res_true(ctx.result, "stdout_truncated") && !res_true(ctx.result, "stderr_truncated"));
    cJSON_Delete(ctx.result);

    CHECK_EQ_INT(run_sync(g_reg, "exec", "{\"argv\": [\"/bin/false\"]}", -1, &ctx, NULL), -1);
    CHECK_EQ_INT(ctx.error_type, JOB_ERR_EXIT_STATUS);
    CHECK(strstr(ctx.error_message, "exited with status 1") != NULL);
    CHECK(ctx.result != NULL); /* kept: exec_run_task stores it with the failure */
    CHECK_EQ_INT(res_num(ctx.result, "exit_code"), 1);
    cJSON_Delete(ctx.result);
}

static void test_exec_captures_stdout_stderr_and_exit_code(void)
{
    struct task_ctx ctx;
    CHECK_EQ_INT(run_sync(g_reg, "exec", "{\"argv\": [\"sh\", \"-c\", \"echo out; echo err >&2; exit 3\"]}", -1,
                          &ctx, NULL),
                 -1);
    CHECK_EQ_INT(ctx.error_type, JOB_ERR_EXIT_STATUS);
    CHECK(strstr(ctx.error_message, "exited with status 3") != NULL);
    CHECK_EQ_INT(res_num(ctx.result, "exit_code"), 3);
    CHECK_EQ_STR(res_str(&ctx, "stdout"), "out\n");
    CHECK_EQ_STR(res_str(&ctx, "stderr"), "err\n");
    cJSON_Delete(ctx.result);
}

static void test_exec_truncates_10mb_of_output_to_1mib(void)
{
    struct task_ctx ctx;
    CHECK_EQ_INT(run_sync(g_reg, "exec",
                          "{\"argv\": [\"sh\", \"-c\", \"head -c 10485760 /dev/zero | tr '\\\\0' a; echo e >&2\"]}",
                          -1, &ctx, NULL),
                 0);
    const char *out = res_str(&ctx, "stdout");
    CHECK(out && strlen(out) == 1048576 && out[0] == 'a' && out[1048575] == 'a');
    CHECK(res_true(ctx.result, "stdout_truncated"));
    CHECK(!res_true(ctx.result, "stderr_truncated"));
    CHECK_EQ_STR(res_str(&ctx, "stderr"), "e\n");
    cJSON_Delete(ctx.result);
}

static void test_exec_passes_stdin(void)
{
    struct task_ctx ctx;
    CHECK_EQ_INT(run_sync(g_reg, "exec", "{\"argv\": [\"cat\"], \"stdin\": \"hello\\nworld\"}", -1, &ctx, NULL), 0);
    CHECK_EQ_STR(res_str(&ctx, "stdout"), "hello\nworld");
    cJSON_Delete(ctx.result);

    /* 600 KB through cat: stdin and stdout flow at the same time. */
    size_t n = 600000;
    char *json = malloc(n + 64);
    CHECK(json != NULL);
    if (!json) return;
    int o = snprintf(json, 64, "{\"argv\": [\"cat\"], \"stdin\": \"");
    memset(json + o, 'z', n);
    snprintf(json + o + n, 8, "\"}");
    CHECK_EQ_INT(run_sync(g_reg, "exec", json, -1, &ctx, NULL), 0);
    CHECK(res_str(&ctx, "stdout") && strlen(res_str(&ctx, "stdout")) == n);
    cJSON_Delete(ctx.result);

    /* A program that never reads a large stdin: EPIPE, not SIGPIPE for us. */
    o = snprintf(json, 64, "{\"argv\": [\"true\"], \"stdin\": \"");
    memset(json + o, 'z', n);
    snprintf(json + o + n, 8, "\"}");
    CHECK_EQ_INT(run_sync(g_reg, "exec", json, -1, &ctx, NULL), 0);
    CHECK_EQ_INT(res_num(ctx.result, "exit_code"), 0);
    cJSON_Delete(ctx.result);
    free(json);
}

static void test_exec_environment_is_clean(void)
{
    struct task_ctx ctx;
    CHECK_EQ_INT(run_sync(g_reg, "exec", "{\"argv\": [\"env\"], \"env\": {\"FOO\": \"bar baz\", \"LANG\": \"C\"}}", -1,
                          &ctx, NULL),
                 0);
    CHECK_EQ_STR(res_str(&ctx, "stdout"), "PATH=/usr/local/bin:/usr/bin:/bin\nFOO=bar baz\nLANG=C\n");
    cJSON_Delete(ctx.result);
    /* An explicit PATH replaces the default. */
    CHECK_EQ_INT(run_sync(g_reg, "exec", "{\"argv\": [\"/usr/bin/env\"], \"env\": {\"PATH\": \"/bin\"}}", -1, &ctx,
                          NULL),
                 0);
    CHECK_EQ_STR(res_str(&ctx, "stdout"), "PATH=/bin\n");
    cJSON_Delete(ctx.result);
}

static void test_exec_cwd(void)
{
    struct task_ctx ctx;
    CHECK_EQ_INT(run_sync(g_reg, "exec", "{\"argv\": [\"pwd\"], \"cwd\": \"/tmp\"}", -1, &ctx, NULL), 0);
    CHECK_EQ_STR(res_str(&ctx, "stdout"), "/tmp\n");
    cJSON_Delete(ctx.result);
    CHECK_EQ_INT(run_sync(g_reg, "exec", "{\"argv\": [\"pwd\"], \"cwd\": \"/no/such/dir\"}", -1, &ctx, NULL), -1);
    CHECK_EQ_INT(ctx.error_type, JOB_ERR_TASK);
    CHECK(strstr(ctx.error_message, "/no/such/dir") != NULL);
    CHECK(ctx.result == NULL);
}

static void test_exec_unknown_program_fails_clearly(void)
{
    struct task_ctx ctx;
    CHECK_EQ_INT(run_sync(g_reg, "exec", "{\"argv\": [\"no-such-program-jobd\"]}", -1, &ctx, NULL), -1);
    CHECK_EQ_INT(ctx.error_type, JOB_ERR_TASK);
    CHECK(strstr(ctx.error_message, "no such program") != NULL);
    CHECK_EQ_INT(run_sync(g_reg, "exec", "{\"argv\": [\"/etc/hostname\"]}", -1, &ctx, NULL), -1);
    CHECK(strstr(ctx.error_message, "cannot start") != NULL);
}

/* Reaps what a killed group left to us (we are a subreaper), then checks that
 * no process of the group is left. */
static void check_group_gone(pid_t pgid)
{
    while (waitpid(-pgid, NULL, 0) > 0 || errno == EINTR) {
    }
    CHECK_EQ_INT(kill(-pgid, 0), -1);
    CHECK_EQ_INT(errno, ESRCH);
}

static void test_exec_should_stop_kills_the_group_within_1s(void)
{
    struct task_ctx ctx;
    int64_t ms = 0;
    /* The shell prints its pid (= the group id), starts a sleeper in the
     * background and waits on another one. */
    CHECK_EQ_INT(run_sync(g_reg, "exec", "{\"argv\": [\"sh\", \"-c\", \"echo $$; sleep 30 & sleep 30; wait\"]}", 200,
                          &ctx, &ms),
                 -1);
    CHECK_EQ_INT(ctx.error_type, JOB_ERR_CANCELLED);
    CHECK(ms >= 200 && ms < 1000);
    CHECK_EQ_INT(res_num(ctx.result, "signal"), SIGTERM);
    CHECK(res_null(ctx.result, "exit_code"));
    const char *out = res_str(&ctx, "stdout");
    pid_t pgid = out ? (pid_t)atoi(out) : 0;
    CHECK(pgid > 1);
    if (pgid > 1) check_group_gone(pgid);
    cJSON_Delete(ctx.result);

    /* SIGTERM ignored: SIGKILL follows 500 ms later. */
    CHECK_EQ_INT(run_sync(g_reg, "exec", "{\"argv\": [\"sh\", \"-c\", \"trap '' TERM; echo $$; sleep 30\"]}", 100, &ctx,
                          &ms),
                 -1);
    CHECK_EQ_INT(ctx.error_type, JOB_ERR_CANCELLED);
    CHECK(ms >= 600 && ms < 1500);
    CHECK_EQ_INT(res_num(ctx.result, "signal"), SIGKILL);
    out = res_str(&ctx, "stdout");
    pgid = out ? (pid_t)atoi(out) : 0;
    if (pgid > 1) check_group_gone(pgid);
    cJSON_Delete(ctx.result);
}

static void test_exec_leftovers_are_killed_when_the_program_exits(void)
{
    struct task_ctx ctx;
    int64_t ms = 0;
    /* The background sleeper keeps stdout open: the job still ends at once. */
    CHECK_EQ_INT(run_sync(g_reg, "exec", "{\"argv\": [\"sh\", \"-c\", \"sleep 30 & echo $$\"]}", -1, &ctx, &ms), 0);
    CHECK(ms < 1000);
    const char *out = res_str(&ctx, "stdout");
    pid_t pgid = out ? (pid_t)atoi(out) : 0;
    CHECK(pgid > 1);
    if (pgid > 1) check_group_gone(pgid);
    cJSON_Delete(ctx.result);
}

static void test_exec_signal_is_reported(void)
{
    struct task_ctx ctx;
    CHECK_EQ_INT(run_sync(g_reg, "exec", "{\"argv\": [\"sh\", \"-c\", \"kill -KILL $$\"]}", -1, &ctx, NULL), -1);
    CHECK_EQ_INT(ctx.error_type, JOB_ERR_SIGNAL);
    CHECK(strstr(ctx.error_message, "SIGKILL") != NULL);
    CHECK_EQ_INT(res_num(ctx.result, "signal"), 9);
    cJSON_Delete(ctx.result);
}

static void test_exec_validate(void)
{
    REFUSE(g_reg_noexec, "exec", "{\"argv\": [\"true\"]}", "task", "--allow-exec");
    struct task_ctx ctx;
    CHECK_EQ_INT(run_sync(g_reg_noexec, "exec", "{\"argv\": [\"true\"]}", -1, &ctx, NULL), -1);
    CHECK(strstr(ctx.error_message, "--allow-exec") != NULL);

    ACCEPT(g_reg, "exec", "{\"argv\": [\"echo\", \"a b\"], \"stdin\": \"x\", \"env\": {\"A_1\": \"v\"}, \"cwd\": \"/\"}");
    ACCEPT(g_reg, "exec", "{\"argv\": [\"true\"], \"stdin\": null, \"env\": null, \"cwd\": null}");
    REFUSE(g_reg, "exec", "{}", "args.argv", "required");
    REFUSE(g_reg, "exec", "{\"argv\": []}", "args.argv", "an empty list");
    REFUSE(g_reg, "exec", "{\"argv\": \"ls -l\"}", "args.argv", "list of 1 to");
    REFUSE(g_reg, "exec", "{\"argv\": [\"ls\", 3]}", "args.argv[1]", "must be a string");
    REFUSE(g_reg, "exec", "{\"argv\": [\"\"]}", "args.argv[0]", "name the program");
    REFUSE(g_reg, "exec", "{\"argv\": [\"ls\"], \"env\": {\"1X\": \"v\"}}", "args.env.1X", "variable name");
    REFUSE(g_reg, "exec", "{\"argv\": [\"ls\"], \"env\": {\"X\": 1}}", "args.env.X", "must be a string");
    REFUSE(g_reg, "exec", "{\"argv\": [\"ls\"], \"env\": [\"X\"]}", "args.env", "object");
    REFUSE(g_reg, "exec", "{\"argv\": [\"ls\"], \"shell\": true}", "args.shell", "no field \"shell\"");
    REFUSE(g_reg, "exec", "[\"ls\"]", "args", "JSON object");

    const struct task_def *def = task_find(g_reg, "exec");
    CHECK(def && def->kinds == (TASK_KIND_PROCESS | TASK_KIND_ASYNC) && def->default_kind == TASK_KIND_PROCESS);
    CHECK(def && def->kinds_reason && strstr(def->kinds_reason, "process or async"));
}

/* ==== crash =============================================================== */

static void test_crash_validate_and_kinds(void)
{
    const struct task_def *def = task_find(g_reg, "crash");
    CHECK(def && def->kinds == TASK_KIND_PROCESS && def->start_async == NULL);
    CHECK(def && def->kinds_reason && strstr(def->kinds_reason, "process executor"));
    ACCEPT(g_reg, "crash", "{}");
    ACCEPT(g_reg, "crash", "{\"signal\": \"ABRT\"}");
    ACCEPT(g_reg, "crash", "{\"signal\": \"SIGKILL\"}");
    ACCEPT(g_reg, "crash", "{\"signal\": 9}");
    REFUSE(g_reg, "crash", "{\"signal\": \"STOP\"}", "args.signal", "ends a process");
    REFUSE(g_reg, "crash", "{\"signal\": 19}", "args.signal", "ends a process"); /* SIGSTOP */
    REFUSE(g_reg, "crash", "{\"signal\": 0}", "args.signal", "ends a process");
    REFUSE(g_reg, "crash", "{\"sig\": 9}", "args.sig", "no field");
}

/* Runs crash in a child process: it must die of the signal asked for. */
static void test_crash_kills_its_process(void)
{
    static const struct {
        const char *args;
        int sig;
    } cases[] = {{"{}", SIGSEGV}, {"{\"signal\": \"ABRT\"}", SIGABRT}, {"{\"signal\": \"KILL\"}", SIGKILL}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            struct task_ctx ctx;
            run_sync(g_reg, "crash", cases[i].args, -1, &ctx, NULL);
            _exit(42); /* not reached when it works */
        }
        int status = 0;
        CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
        CHECK(WIFSIGNALED(status));
        CHECK_EQ_INT(WIFSIGNALED(status) ? WTERMSIG(status) : -1, cases[i].sig);
    }
}

/* ==== http_get, sync ====================================================== */

static void test_http_get_validate(void)
{
    ACCEPT(g_reg, "http_get", "{\"url\": \"http://example.com/\"}");
    ACCEPT(g_reg, "http_get", "{\"url\": \"HTTPS://example.com/x?y=1\", \"timeout\": 0.5, \"max_bytes\": 0}");
    REFUSE(g_reg, "http_get", "{\"url\": \"ftp://example.com/\"}", "args.url", "http:// or https://");
    REFUSE(g_reg, "http_get", "{\"url\": \"file:///etc/passwd\"}", "args.url", "http:// or https://");
    REFUSE(g_reg, "http_get", "{\"url\": \"http:///x\"}", "args.url", "with a host");
    REFUSE(g_reg, "http_get", "{\"url\": \"http://a b/\"}", "args.url", "spaces");
    REFUSE(g_reg, "http_get", "{}", "args.url", "required");
    REFUSE(g_reg, "http_get", "{\"url\": \"http://x/\", \"timeout\": 601}", "args.timeout", "0.001 to 600");
    REFUSE(g_reg, "http_get", "{\"url\": \"http://x/\", \"timeout\": 0}", "args.timeout", "0.001 to 600");
    REFUSE(g_reg, "http_get", "{\"url\": \"http://x/\", \"max_bytes\": 67108865}", "args.max_bytes", "64 MiB");
    REFUSE(g_reg, "http_get", "{\"url\": \"http://x/\", \"max_bytes\": 1.5}", "args.max_bytes", "integer");
    const struct task_def *def = task_find(g_reg, "http_get");
    CHECK(def && def->kinds == TASK_KIND_ALL && def->default_kind == TASK_KIND_ASYNC && def->run && def->start_async);
}

static void check_hello_response(const cJSON *r)
{
    CHECK_EQ_INT(res_num(r, "status"), 200);
    const cJSON *body = cJSON_GetObjectItemCaseSensitive(r, "body");
    CHECK(cJSON_IsString(body) && strcmp(body->valuestring, "hello, w\xc3\xb6rld") == 0);
    CHECK(!cJSON_GetObjectItemCaseSensitive(r, "body_encoding"));
    CHECK_EQ_INT(res_num(r, "bytes"), 13);
    CHECK(!res_true(r, "truncated"));
    CHECK(res_num(r, "elapsed_ms") >= 0);
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(r, "headers");
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(h, "content-type");
    CHECK(cJSON_IsString(ct) && strcmp(ct->valuestring, "text/plain; charset=utf-8") == 0);
    CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(h, "content-length")));
    CHECK(!cJSON_GetObjectItemCaseSensitive(h, "x-other") && !cJSON_GetObjectItemCaseSensitive(h, "location"));
}

static void test_http_get_sync_fetches(void)
{
    struct task_ctx ctx;
    char u[128], json[256];
    url(u, sizeof u, g_http.port, "/hello");
    snprintf(json, sizeof json, "{\"url\": \"%s\"}", u);
    CHECK_EQ_INT(run_sync(g_reg, "http_get", json, -1, &ctx, NULL), 0);
    check_hello_response(ctx.result);
    cJSON_Delete(ctx.result);

    url(u, sizeof u, g_http.port, "/missing"); /* a 404 is a result, not a failure */
    snprintf(json, sizeof json, "{\"url\": \"%s\"}", u);
    CHECK_EQ_INT(run_sync(g_reg, "http_get", json, -1, &ctx, NULL), 0);
    CHECK_EQ_INT(res_num(ctx.result, "status"), 404);
    CHECK_EQ_STR(res_str(&ctx, "body"), "nope");
    cJSON_Delete(ctx.result);

    url(u, sizeof u, g_http.port, "/redirect"); /* not followed */
    snprintf(json, sizeof json, "{\"url\": \"%s\"}", u);
    CHECK_EQ_INT(run_sync(g_reg, "http_get", json, -1, &ctx, NULL), 0);
    CHECK_EQ_INT(res_num(ctx.result, "status"), 302);
    const cJSON *loc = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(ctx.result, "headers"), "location");
    CHECK(cJSON_IsString(loc) && strcmp(loc->valuestring, "/elsewhere") == 0);
    cJSON_Delete(ctx.result);

    url(u, sizeof u, g_http.port, "/bin"); /* not UTF-8: base64 */
    snprintf(json, sizeof json, "{\"url\": \"%s\"}", u);
    CHECK_EQ_INT(run_sync(g_reg, "http_get", json, -1, &ctx, NULL), 0);
    CHECK_EQ_STR(res_str(&ctx, "body"), "AP/+YQ==");
    CHECK_EQ_STR(res_str(&ctx, "body_encoding"), "base64");
    cJSON_Delete(ctx.result);
}

static void test_http_get_sync_max_bytes_truncates(void)
{
    struct task_ctx ctx;
    char u[128], json[256];
    url(u, sizeof u, g_http.port, "/big");
    snprintf(json, sizeof json, "{\"url\": \"%s\", \"max_bytes\": 1000}", u);
    CHECK_EQ_INT(run_sync(g_reg, "http_get", json, -1, &ctx, NULL), 0);
    CHECK_EQ_INT(res_num(ctx.result, "status"), 200);
    CHECK(res_str(&ctx, "body") && strlen(res_str(&ctx, "body")) == 1000);
    CHECK(res_true(ctx.result, "truncated"));
    CHECK(res_num(ctx.result, "bytes") >= 1000);
    cJSON_Delete(ctx.result);
}

static void test_http_get_sync_timeout_and_stop(void)
{
    struct task_ctx ctx;
    char u[128], json[256];
    int64_t ms = 0;
    url(u, sizeof u, g_silent_port, "/");
    snprintf(json, sizeof json, "{\"url\": \"%s\", \"timeout\": 0.5}", u);
    CHECK_EQ_INT(run_sync(g_reg, "http_get", json, -1, &ctx, &ms), -1);
    CHECK_EQ_INT(ctx.error_type, JOB_ERR_TIMEOUT);
    CHECK(strstr(ctx.error_message, "timed out") != NULL);
    CHECK(ms >= 450 && ms < 1500);

    snprintf(json, sizeof json, "{\"url\": \"%s\", \"timeout\": 30}", u);
    CHECK_EQ_INT(run_sync(g_reg, "http_get", json, 200, &ctx, &ms), -1);
    CHECK_EQ_INT(ctx.error_type, JOB_ERR_CANCELLED);
    CHECK(ms >= 200 && ms < 1000);

    /* Nobody listens: a connection error, task_error with curl's message. */
    int port = 0, fd = listen_any(&port);
    close(fd);
    url(u, sizeof u, port, "/");
    snprintf(json, sizeof json, "{\"url\": \"%s\", \"timeout\": 5}", u);
    CHECK_EQ_INT(run_sync(g_reg, "http_get", json, -1, &ctx, &ms), -1);
    CHECK_EQ_INT(ctx.error_type, JOB_ERR_TASK);
    CHECK(strstr(ctx.error_message, "failed") != NULL);
}

/* ==== command tasks ======================================================= */

/* A registry with the commands of `json` (a JSON array). Returns it, or NULL
 * with the error in err. */
static struct task_registry *commands_reg(const char *json, char *const *envp, char *err, size_t errlen)
{
    struct task_registry *reg = NULL;
    struct task_registry_options opt = {.allow_exec = false};
    cJSON *cmds = cJSON_Parse(json);
    err[0] = '\0';
    if (!cmds || task_registry_new(&opt, &reg) < 0) {
        snprintf(err, errlen, "bad test input");
        cJSON_Delete(cmds);
        return NULL;
    }
    if (task_register_commands(reg, cmds, envp, err, errlen) < 0) {
        task_registry_free(reg);
        reg = NULL;
    }
    cJSON_Delete(cmds);
    return reg;
}

static void test_command_fills_placeholders(void)
{
    char err[512];
    char *envp[] = {"JOBD_TEST_KEEP=yes", "JOBD_TEST_DROP=no", NULL};
    struct task_registry *reg = commands_reg(
        "[{\"name\": \"greet\", \"description\": \"Greets.\", \"argv\": [\"/bin/echo\", \"hello {who}\", "
        "\"--n={n}\", \"{{x}}\", \"{ratio}\"], \"args\": {\"who\": \"string\", \"n\": \"integer\", \"ratio\": "
        "\"number\"}},"
        " {\"name\": \"showenv\", \"argv\": [\"env\"], \"env\": [\"JOBD_TEST_KEEP\", \"JOBD_TEST_UNSET\"], "
        "\"executor\": \"async\", \"cwd\": \"/\"}]",
        envp, err, sizeof err);
    CHECK(reg != NULL);
    if (!reg) {
        fprintf(stderr, "    %s\n", err);
        return;
    }
    const struct task_def *def = task_find(reg, "greet");
    CHECK(def && def->kinds == (TASK_KIND_PROCESS | TASK_KIND_ASYNC) && def->default_kind == TASK_KIND_PROCESS);
    CHECK(def && strcmp(def->description, "Greets.") == 0);
    CHECK_EQ_INT(task_find(reg, "showenv")->default_kind, TASK_KIND_ASYNC);
    CHECK(task_find(reg, "exec") != NULL); /* the built-ins are still there */

    ACCEPT(reg, "greet", "{\"who\": \"bob\", \"n\": 3, \"ratio\": 0.5}");
    REFUSE(reg, "greet", "{\"who\": \"bob\", \"n\": 3}", "args.ratio", "required");
    REFUSE(reg, "greet", "{\"who\": \"bob\", \"n\": 3.5, \"ratio\": 1}", "args.n", "an integer");
    REFUSE(reg, "greet", "{\"who\": 5, \"n\": 3, \"ratio\": 1}", "args.who", "a string");
    REFUSE(reg, "greet", "{\"who\": \"x\", \"n\": 3, \"ratio\": 1, \"extra\": 1}", "args.extra", "no field");
    REFUSE(reg, "showenv", "{\"x\": 1}", "args.x", "no field");
    ACCEPT(reg, "showenv", "{}");

    struct task_ctx ctx;
    CHECK_EQ_INT(run_sync(reg, "greet", "{\"who\": \"bob; rm -rf / $HOME\", \"n\": -7, \"ratio\": 0.1}", -1, &ctx, NULL), 0);
    CHECK_EQ_STR(res_str(&ctx, "stdout"), "hello bob; rm -rf / $HOME --n=-7 {x} 0.1\n");
    cJSON_Delete(ctx.result);
    CHECK_EQ_INT(run_sync(reg, "showenv", "{}", -1, &ctx, NULL), 0);
    CHECK_EQ_STR(res_str(&ctx, "stdout"), "JOBD_TEST_KEEP=yes\nPATH=/usr/local/bin:/usr/bin:/bin\n");
    cJSON_Delete(ctx.result);

    /* The same through the async runner. */
    struct afake f;
    signal(SIGPIPE, SIG_IGN);
    run_async(reg, "greet", "{\"who\": \"ann\", \"n\": 1, \"ratio\": 2}", -1, &f);
    CHECK_EQ_INT(f.start_rc, 0);
    CHECK(f.a.result && strcmp(cJSON_GetObjectItemCaseSensitive(f.a.result, "stdout")->valuestring,
                               "hello ann --n=1 {x} 2\n") == 0);
    afake_fini(&f);
    task_registry_free(reg);
}

#define CMD_REFUSED(json, part)                                                                     \
    do {                                                                                            \
        char e_[512];                                                                               \
        struct task_registry *r_ = commands_reg((json), NULL, e_, sizeof e_);                       \
        CHECK(r_ == NULL);                                                                          \
        task_registry_free(r_);                                                                     \
        if (!strstr(e_, (part))) fprintf(stderr, "    \"%s\" lacks \"%s\"\n", e_, (part));          \
        CHECK(strstr(e_, (part)) != NULL);                                                          \
    } while (0)

static void test_command_config_errors(void)
{
    CMD_REFUSED("[{\"name\": \"c\", \"argv\": [\"/bin/echo\", \"{nope}\"]}]",
                "commands[0] \"c\": argv[1] \"{nope}\": placeholder {nope} is not declared in \"args\"");
    CMD_REFUSED("[{\"name\": \"c\", \"argv\": [\"/bin/echo\"], \"args\": {\"x\": \"string\"}}]",
                "declares \"x\" but argv never uses {x}");
    CMD_REFUSED("[{\"name\": \"c\", \"argv\": [\"{prog}\"], \"args\": {\"prog\": \"string\"}}]", "argv[0] must name a fixed");
    CMD_REFUSED("[{\"name\": \"c\", \"argv\": [\"/bin/echo\", \"{a\"]}]", "'{' that does not start");
    CMD_REFUSED("[{\"name\": \"c\", \"argv\": [\"/bin/echo\", \"a}\"]}]", "lone '}'");
    CMD_REFUSED("[{\"name\": \"echo\", \"argv\": [\"/bin/echo\"]}]", "a task named \"echo\" already exists");
    CMD_REFUSED("[{\"name\": \"a\", \"argv\": [\"/bin/echo\"]}, {\"name\": \"a\", \"argv\": [\"/bin/echo\"]}]",
                "commands[1] \"a\": a task named \"a\" already exists");
    CMD_REFUSED("[{\"name\": \"Bad Name\", \"argv\": [\"/bin/echo\"]}]", "\"name\" must be");
    CMD_REFUSED("[{\"name\": \"c\", \"argv\": [\"/no/such/program\"]}]", "no such program");
    CMD_REFUSED("[{\"name\": \"c\", \"argv\": [\"/bin/echo\"], \"executor\": \"thread\"}]", "\"process\" or \"async\"");
    CMD_REFUSED("[{\"name\": \"c\", \"argv\": [\"/bin/echo\", \"{n}\"], \"args\": {\"n\": \"float\"}}]",
                "\"string\", \"integer\" or \"number\"");
    CMD_REFUSED("[{\"name\": \"c\", \"argv\": [\"/bin/echo\"], \"timeout\": 0}]", "\"timeout\" must be");
    CMD_REFUSED("[{\"name\": \"c\", \"argv\": [\"/bin/echo\"], \"shell\": true}]", "unknown key \"shell\"");
    CMD_REFUSED("[{\"name\": \"c\", \"argv\": []}]", "\"argv\" must be a list");
    CMD_REFUSED("[{\"name\": \"c\", \"argv\": [\"/bin/echo\"], \"env\": [\"A=B\"]}]", "not a variable name");
    CMD_REFUSED("{}", "expected a list");
    /* Slots are given back when a registry is freed: this works many times over. */
    for (int i = 0; i < 100; i++) {
        char e[256];
        struct task_registry *r = commands_reg("[{\"name\": \"c\", \"argv\": [\"true\"]}]", NULL, e, sizeof e);
        CHECK(r != NULL);
        task_registry_free(r);
    }
}

static void test_command_timeout_applies_when_the_job_has_none(void)
{
    char err[512];
    struct task_registry *reg =
        commands_reg("[{\"name\": \"slow\", \"argv\": [\"sleep\", \"10\"], \"timeout\": 0.3}]", NULL, err, sizeof err);
    CHECK(reg != NULL);
    if (!reg) return;
    struct task_ctx ctx;
    int64_t ms = 0;
    CHECK_EQ_INT(run_sync(reg, "slow", "{}", -1, &ctx, &ms), -1);
    CHECK_EQ_INT(ctx.error_type, JOB_ERR_TIMEOUT);
    CHECK(strstr(ctx.error_message, "timed out after 0.300 s") != NULL);
    CHECK(ms >= 300 && ms < 1300);
    cJSON_Delete(ctx.result);

    struct afake f;
    run_async(reg, "slow", "{}", -1, &f);
    CHECK_EQ_INT(f.a.error_type, JOB_ERR_TIMEOUT);
    CHECK(afake_ms(&f) >= 280 && afake_ms(&f) < 1300);
    afake_fini(&f);
    task_registry_free(reg);
}

/* ==== plugins ============================================================= */

static struct task_registry *plugin_reg(const char *file, char *err, size_t errlen, int *rc)
{
    char path[PATH_MAX + 64];
    struct task_registry *reg = NULL;
    snprintf(path, sizeof path, "%s/%s", g_plugin_dir, file);
    if (task_registry_new(NULL, &reg) < 0) return NULL;
    err[0] = '\0';
    *rc = task_load_plugin(reg, file[0] == '/' ? file : path, err, errlen);
    return reg;
}

static void test_plugin_hello_loads_and_runs(void)
{
    char err[1024];
    int rc = -100;
    struct task_registry *reg = plugin_reg("examples/hello.so", err, sizeof err, &rc);
    CHECK_EQ_INT(rc, 0);
    if (rc != 0) fprintf(stderr, "    %s\n", err);
    const struct task_def *def = task_find(reg, "hello");
    CHECK(def && def->kinds == (TASK_KIND_THREAD | TASK_KIND_PROCESS));
    if (def) {
        struct task_ctx ctx;
        CHECK_EQ_INT(run_sync(reg, "hello", "{\"name\": \"world\"}", -1, &ctx, NULL), 0);
        CHECK_EQ_STR(res_str(&ctx, "greeting"), "hello, world");
        cJSON_Delete(ctx.result);
        REFUSE(reg, "hello", "{\"name\": 5}", "args.name", "required");
        REFUSE(reg, "hello", "{\"name\": \"x\", \"n\": 1}", "args", "no field");
    }
    task_registry_free(reg); /* unloads it */
}

#define PLUGIN_REFUSED(file, part)                                                                  \
    do {                                                                                            \
        char e_[1024];                                                                              \
        int rc_ = -100;                                                                             \
        struct task_registry *r_ = plugin_reg((file), e_, sizeof e_, &rc_);                         \
        CHECK_EQ_INT(rc_, -1);                                                                      \
        if (!strstr(e_, (part)) || !strstr(e_, "--plugin "))                                        \
            fprintf(stderr, "    \"%s\" lacks \"%s\"\n", e_, (part));                               \
        CHECK(strstr(e_, (part)) != NULL && strstr(e_, "--plugin ") != NULL);                      \
        CHECK(strstr(e_, (file)) != NULL);                                                          \
        task_registry_free(r_);                                                                     \
    } while (0)

static void test_plugin_errors(void)
{
    PLUGIN_REFUSED("/no/such/plugin.so", "cannot load");
    PLUGIN_REFUSED("tests/plugins/nover.so", "does not export jobd_plugin_api_version");
    PLUGIN_REFUSED("tests/plugins/badver.so", "plugin API version 999");
    PLUGIN_REFUSED("tests/plugins/noinit.so", "does not export jobd_plugin_init");
    PLUGIN_REFUSED("tests/plugins/initfail.so", "returned 7");
    PLUGIN_REFUSED("tests/plugins/dup.so", "task \"echo\": a task of that name is already registered");
}

/* ==== registry rules ====================================================== */

static int dummy_run(struct task_ctx *ctx)
{
    return 0;
}

static int dummy_start(struct task_actx *actx)
{
    return 1;
}

static void test_registry_requires_the_entry_point_of_each_kind(void)
{
    struct task_registry *reg = NULL;
    CHECK_EQ_INT(task_registry_new(NULL, &reg), 0);
    struct task_def d = {"t1", "d", TASK_KIND_ASYNC, TASK_KIND_ASYNC, NULL, NULL, dummy_run, NULL};
    CHECK_EQ_INT(task_register(reg, &d), -EINVAL); /* async without start_async */
    d = (struct task_def){"t2", "d", TASK_KIND_PROCESS, TASK_KIND_PROCESS, NULL, NULL, NULL, dummy_start};
    CHECK_EQ_INT(task_register(reg, &d), -EINVAL); /* process without run */
    d = (struct task_def){"t3", "d", TASK_KIND_ASYNC, TASK_KIND_ASYNC, NULL, NULL, NULL, dummy_start};
    CHECK_EQ_INT(task_register(reg, &d), 0);
    d = (struct task_def){"t4", "d", TASK_KIND_ALL, TASK_KIND_THREAD, NULL, NULL, dummy_run, dummy_start};
    CHECK_EQ_INT(task_register(reg, &d), 0);
    for (size_t i = 0; i < task_count(reg); i++) { /* every registered task honours the rule */
        const struct task_def *t = task_at(reg, i);
        CHECK(!(t->kinds & (TASK_KIND_THREAD | TASK_KIND_PROCESS)) || t->run);
        CHECK(!(t->kinds & TASK_KIND_ASYNC) || t->start_async);
    }
    task_registry_free(reg);
}

static void test_afail_formats_like_task_fail(void)
{
    struct task_actx a;
    memset(&a, 0, sizeof a);
    CHECK_EQ_INT(task_afail(&a, JOB_ERR_SIGNAL, "killed by %d", 9), -1);
    CHECK_EQ_INT(a.error_type, JOB_ERR_SIGNAL);
    CHECK_EQ_STR(a.error_message, "killed by 9");
}

/* ==== async =============================================================== */

static void test_exec_async_runs_and_captures(void)
{
    struct afake f;
    run_async(g_reg, "exec", "{\"argv\": [\"echo\", \"hello\"]}", -1, &f);
    CHECK_EQ_INT(f.start_rc, 0);
    CHECK_EQ_INT(f.a.error_type, JOB_ERR_NONE);
    CHECK(f.a.result && strcmp(cJSON_GetObjectItemCaseSensitive(f.a.result, "stdout")->valuestring, "hello\n") == 0);
    CHECK_EQ_INT(res_num(f.a.result, "exit_code"), 0);
    afake_fini(&f);

    run_async(g_reg, "exec", "{\"argv\": [\"sh\", \"-c\", \"cat; echo bad >&2; exit 3\"], \"stdin\": \"in\"}", -1, &f);
    CHECK_EQ_INT(f.a.error_type, JOB_ERR_EXIT_STATUS);
    CHECK(strstr(f.a.error_message, "exited with status 3") != NULL);
    CHECK_EQ_INT(res_num(f.a.result, "exit_code"), 3);
    CHECK(f.a.result && strcmp(cJSON_GetObjectItemCaseSensitive(f.a.result, "stdout")->valuestring, "in") == 0);
    CHECK(f.a.result && strcmp(cJSON_GetObjectItemCaseSensitive(f.a.result, "stderr")->valuestring, "bad\n") == 0);
    afake_fini(&f);

    run_async(g_reg, "exec", "{\"argv\": [\"sh\", \"-c\", \"head -c 10485760 /dev/zero | tr '\\\\0' b\"]}", -1, &f);
    CHECK_EQ_INT(f.a.error_type, JOB_ERR_NONE);
    const cJSON *out = cJSON_GetObjectItemCaseSensitive(f.a.result, "stdout");
    CHECK(cJSON_IsString(out) && strlen(out->valuestring) == 1048576);
    CHECK(res_true(f.a.result, "stdout_truncated"));
    afake_fini(&f);

    run_async(g_reg, "exec", "{\"argv\": [\"env\"], \"env\": {\"X\": \"1\"}}", -1, &f);
    CHECK(f.a.result && strcmp(cJSON_GetObjectItemCaseSensitive(f.a.result, "stdout")->valuestring,
                               "PATH=/usr/local/bin:/usr/bin:/bin\nX=1\n") == 0);
    afake_fini(&f);

    run_async(g_reg, "exec", "{\"argv\": [\"no-such-program-jobd\"]}", -1, &f);
    CHECK_EQ_INT(f.start_rc, -1);
    CHECK(strstr(f.a.error_message, "no such program") != NULL);
    afake_fini(&f);
}

static void test_exec_async_stop_kills_sleep(void)
{
    struct afake f;
    run_async(g_reg, "exec", "{\"argv\": [\"sh\", \"-c\", \"echo $$; sleep 30 & sleep 30; wait\"]}", 200, &f);
    CHECK_EQ_INT(f.start_rc, 0);
    CHECK_EQ_INT(f.a.error_type, JOB_ERR_CANCELLED);
    CHECK(afake_ms(&f) >= 180 && afake_ms(&f) < 1000);
    CHECK_EQ_INT(res_num(f.a.result, "signal"), SIGTERM);
    const cJSON *out = cJSON_GetObjectItemCaseSensitive(f.a.result, "stdout");
    pid_t pgid = cJSON_IsString(out) ? (pid_t)atoi(out->valuestring) : 0;
    CHECK(pgid > 1);
    if (pgid > 1) check_group_gone(pgid);
    afake_fini(&f);

    run_async(g_reg, "exec", "{\"argv\": [\"sh\", \"-c\", \"trap '' TERM; sleep 30\"]}", 100, &f);
    CHECK_EQ_INT(f.a.error_type, JOB_ERR_CANCELLED);
    CHECK(afake_ms(&f) >= 570 && afake_ms(&f) < 1500);
    CHECK_EQ_INT(res_num(f.a.result, "signal"), SIGKILL);
    afake_fini(&f);
}

static void test_http_get_async_fetches(void)
{
    struct afake f;
    char u[128], json[256];
    url(u, sizeof u, g_http.port, "/hello");
    snprintf(json, sizeof json, "{\"url\": \"%s\"}", u);
    run_async(g_reg, "http_get", json, -1, &f);
    CHECK_EQ_INT(f.start_rc, 0);
    CHECK_EQ_INT(f.a.error_type, JOB_ERR_NONE);
    if (f.a.result) check_hello_response(f.a.result);
    afake_fini(&f);

    url(u, sizeof u, g_http.port, "/big");
    snprintf(json, sizeof json, "{\"url\": \"%s\", \"max_bytes\": 100000}", u);
    run_async(g_reg, "http_get", json, -1, &f);
    CHECK_EQ_INT(f.a.error_type, JOB_ERR_NONE);
    const cJSON *body = cJSON_GetObjectItemCaseSensitive(f.a.result, "body");
    CHECK(cJSON_IsString(body) && strlen(body->valuestring) == 100000);
    CHECK(res_true(f.a.result, "truncated"));
    afake_fini(&f);
}

/* Several transfers on one loop share one multi handle; all finish, and the
 * loop is left with no handle. */
static void test_http_get_async_many_at_once(void)
{
    enum { N = 8 };
    static struct afake fs[N];
    uv_loop_t loop;
    char u[128], json[256];
    CHECK_EQ_INT(uv_loop_init(&loop), 0);
    url(u, sizeof u, g_http.port, "/hello");
    snprintf(json, sizeof json, "{\"url\": \"%s\"}", u);
    const struct task_def *def = task_find(g_reg, "http_get");
    for (int i = 0; i < N; i++) {
        struct afake *f = &fs[i];
        memset(f, 0, sizeof *f);
        f->args = cJSON_Parse(json);
        f->a.args = f->args;
        f->a.job_id = "01TESTJOB0000000000000000";
        f->a.loop = &loop;
        f->a.done = afake_done;
        f->a.progress = afake_progress;
        f->a.runner = f;
        CHECK_EQ_INT(def->start_async(&f->a), 0);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(fs[i].done_calls, 1);
        CHECK_EQ_INT(res_num(fs[i].a.result, "status"), 200);
        cJSON_Delete(fs[i].a.result);
        cJSON_Delete(fs[i].args);
    }
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

static void test_http_get_async_timeout_and_stop(void)
{
    struct afake f;
    char u[128], json[256];
    url(u, sizeof u, g_silent_port, "/");
    snprintf(json, sizeof json, "{\"url\": \"%s\", \"timeout\": 0.5}", u);
    run_async(g_reg, "http_get", json, -1, &f);
    CHECK_EQ_INT(f.start_rc, 0);
    CHECK_EQ_INT(f.a.error_type, JOB_ERR_TIMEOUT);
    CHECK(afake_ms(&f) >= 450 && afake_ms(&f) < 1500);
    CHECK(f.a.result == NULL);
    afake_fini(&f);

    snprintf(json, sizeof json, "{\"url\": \"%s\", \"timeout\": 30}", u);
    run_async(g_reg, "http_get", json, 200, &f);
    CHECK_EQ_INT(f.a.error_type, JOB_ERR_CANCELLED);
    CHECK(afake_ms(&f) >= 180 && afake_ms(&f) < 1000);
    afake_fini(&f);
}

/* ==== main ================================================================ */

int main(void)
{
    /* Our children's orphans come to us, so tests can reap a killed group. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    ssize_t n = readlink("/proc/self/exe", g_plugin_dir, sizeof g_plugin_dir - 1);
    if (n > 0) {
        g_plugin_dir[n] = '\0';
        char *slash = strrchr(g_plugin_dir, '/'); /* build/VARIANT/tests/test_tasks_extra */
        if (slash) *slash = '\0';
        if ((slash = strrchr(g_plugin_dir, '/'))) *slash = '\0';
    }
    struct task_registry_options opt = {.allow_exec = true};
    if (task_registry_new(&opt, &g_reg) != 0 || task_registry_new(NULL, &g_reg_noexec) != 0) {
        fprintf(stderr, "task_registry_new failed\n");
        return 1;
    }
    if (http_srv_start(&g_http) < 0 || (g_silent_fd = listen_any(&g_silent_port)) < 0) {
        fprintf(stderr, "cannot start the test HTTP servers\n");
        return 1;
    }

    RUN(test_registry_requires_the_entry_point_of_each_kind);
    RUN(test_afail_formats_like_task_fail);
    RUN(test_exec_true_and_false);
    RUN(test_exec_captures_stdout_stderr_and_exit_code);
    RUN(test_exec_truncates_10mb_of_output_to_1mib);
    RUN(test_exec_passes_stdin);
    RUN(test_exec_environment_is_clean);
    RUN(test_exec_cwd);
    RUN(test_exec_unknown_program_fails_clearly);
    RUN(test_exec_should_stop_kills_the_group_within_1s);
    RUN(test_exec_leftovers_are_killed_when_the_program_exits);
    RUN(test_exec_signal_is_reported);
    RUN(test_exec_validate);
    RUN(test_crash_validate_and_kinds);
    RUN(test_crash_kills_its_process);
    RUN(test_http_get_validate);
    RUN(test_http_get_sync_fetches);
    RUN(test_http_get_sync_max_bytes_truncates);
    RUN(test_http_get_sync_timeout_and_stop);
    RUN(test_plugin_hello_loads_and_runs);
    RUN(test_plugin_errors);
    /* From here on SIGPIPE is ignored, as in the server (libuv writes pipes). */
    RUN(test_command_fills_placeholders);
    RUN(test_command_config_errors);
    RUN(test_command_timeout_applies_when_the_job_has_none);
    RUN(test_exec_async_runs_and_captures);
    RUN(test_exec_async_stop_kills_sleep);
    RUN(test_http_get_async_fetches);
    RUN(test_http_get_async_many_at_once);
    RUN(test_http_get_async_timeout_and_stop);

    http_srv_stop(&g_http);
    close(g_silent_fd);
    task_registry_free(g_reg);
    task_registry_free(g_reg_noexec);
    return harness_finish();
}
