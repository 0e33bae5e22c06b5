/* test_process.c - executors/: the process executor (process.c, worker.c, wire.c).
 *
 * The workers are real `jobd --internal-worker` processes, so this test needs
 * the jobd binary of the same build variant: build/<variant>/jobd, found next
 * to this binary's folder (build/<variant>/tests/test_process -> ../jobd), or
 * JOBD_BIN. Hooks run on the executor's I/O thread, so they never CHECK: they
 * copy what they saw into a log guarded by a mutex (exec_log.h) and signal a
 * condition; the test waits on it with a deadline and checks afterwards.
 * Running jobs are held with a long `sleep` that the test kills, cancels or
 * times out, so orderings are forced, not timed. Every test ends with "no
 * child process left".
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../common/clock.h"
#include "../../common/id.h"
#include "../../common/job.h"
#include "../../common/log.h"
#include "../../executors/exec.h"
#include "../../executors/wire.h"
#include "../../tasks/task.h"
#include "harness.h"
#include "exec_log.h"

static struct task_registry *g_reg;
static char g_jobd[PATH_MAX];
static const char *g_worker_argv[8];

/* ---- helpers --------------------------------------------------------------------- */

static struct executor *make_exec(const char *name, int size, struct log *lg)
{
    struct exec_config cfg = {.name = name, .kind = TASK_KIND_PROCESS, .size = size, .worker_argv = g_worker_argv};
    struct exec_hooks hooks = {.started = hook_started, .done = hook_done, .progress = hook_progress, .ctx = lg};
    struct executor *ex = NULL;
    int rc = exec_new(&cfg, g_reg, &hooks, &ex);
    CHECK_EQ_INT(rc, 0);
    if (rc) abort();
    return ex;
}

/* True when this process has no child at all, not even a zombie. */
static bool no_children(void)
{
    return waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD;
}

/* True when pid no longer exists (it was reaped). */
static bool pid_gone(int pid)
{
    return pid > 0 && kill(pid, 0) < 0 && errno == ESRCH;
}

static bool pgrp_gone(int pgid)
{
    return pgid > 0 && killpg(pgid, 0) < 0 && errno == ESRCH;
}

static int64_t bulk_run(int size, int n, bool cancel_some, int *once_out, int *ok_out, int *cancelled_out);

/* ---- tests --------------------------------------------------------------------------- */

static void test_square_echo_noop_run_in_a_worker_once_with_results(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("proc", 2, &lg);
    char sq[ID_LEN + 1], echo[ID_LEN + 1], noop[ID_LEN + 1];
    int64_t before = clock_wall_ms();
    CHECK_EQ_INT(submit(ex, make_job("square", "{\"n\":3}"), sq), 0);
    CHECK_EQ_INT(submit(ex, make_job("echo", "{\"a\":[1,\"x\"]}"), echo), 0);
    struct job *retry = make_job("noop", NULL);
    retry->attempt = 1; /* a retry: the executor counts the new attempt */
    CHECK_EQ_INT(submit(ex, retry, noop), 0);
    WAIT_DONE(&lg, 3, 10000);
    exec_free(ex); /* joins the I/O thread: no further hook can run */
    CHECK(no_children());
    CHECK_EQ_INT(lg.n_started, 3);
    CHECK_EQ_INT(lg.n_done, 3);
    int seen = 0;
    for (int i = 0; i < 3; i++) {
        struct rec *d = &lg.done[i];
        CHECK_EQ_INT(d->outcome, EXEC_OK);
        CHECK_EQ_INT(d->error_type, JOB_ERR_NONE);
        CHECK(d->started_ms >= before && d->finished_ms >= d->started_ms);
        CHECK(d->pid > 0 && d->pid != getpid());
        CHECK(strcmp(d->thread, "proc-0") == 0 || strcmp(d->thread, "proc-1") == 0);
        if (strcmp(d->id, sq) == 0) {
            seen++;
            CHECK_EQ_STR(d->result, "9");
            CHECK_EQ_INT(d->attempt, 1);
        } else if (strcmp(d->id, echo) == 0) {
            seen++;
            CHECK_EQ_STR(d->result, "{\"a\":[1,\"x\"]}");
        } else if (strcmp(d->id, noop) == 0) {
            seen++;
            CHECK_EQ_INT(d->attempt, 2);
        }
    }
    CHECK_EQ_INT(seen, 3);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(lg.started[i].status, JOB_RUNNING);
        CHECK_EQ_INT(lg.started[i].finished_ms, 0);
        CHECK(lg.started[i].pid > 0 && lg.started[i].pid != getpid());
        CHECK(pid_gone(lg.started[i].pid));
    }
    log_fini(&lg);
}

static void test_failing_and_unknown_tasks_report_task_error(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("w", 1, &lg);
    CHECK_EQ_INT(submit(ex, make_job("fail", "{\"message\":\"disk on fire\"}"), NULL), 0);
    CHECK_EQ_INT(submit(ex, make_job("no_such_task", NULL), NULL), 0);
    WAIT_DONE(&lg, 2, 10000);
    exec_free(ex);
    CHECK_EQ_INT(lg.done[0].outcome, EXEC_FAILED);
    CHECK_EQ_INT(lg.done[0].error_type, JOB_ERR_TASK);
    CHECK_EQ_STR(lg.done[0].error, "disk on fire");
    CHECK(!lg.done[0].has_result);
    CHECK_EQ_INT(lg.done[1].outcome, EXEC_FAILED);
    CHECK_EQ_INT(lg.done[1].error_type, JOB_ERR_TASK);
    CHECK(strstr(lg.done[1].error, "no_such_task") != NULL);
    CHECK(no_children());
    log_fini(&lg);
}

static void test_two_thousand_noops_on_two_workers_each_done_once(void)
{
    int once = 0, ok = 0;
    int64_t us = bulk_run(2, 2000, false, &once, &ok, NULL);
    CHECK_EQ_INT(once, 2000);
    CHECK_EQ_INT(ok, 2000);
    printf("    2000 noops on 2 workers: %.0f jobs/s\n", 2000 / ((double)us / 1e6));
    /* a longer run for the figure */
    us = bulk_run(2, 20000, false, &once, &ok, NULL);
    CHECK_EQ_INT(once, 20000);
    CHECK_EQ_INT(ok, 20000);
    printf("    20000 noops on 2 workers: %.0f jobs/s\n", 20000 / ((double)us / 1e6));
    CHECK(no_children());
}

static void test_round_trip_latency_of_one_job(void)
{
    enum { N = 500 };
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("rt", 1, &lg);
    CHECK_EQ_INT(submit(ex, make_job("noop", NULL), NULL), 0); /* warm up: the worker is loaded */
    WAIT_DONE(&lg, 1, 10000);
    int64_t t0 = clock_mono_ns();
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(submit(ex, make_job("noop", NULL), NULL), 0);
        if (!log_wait(&lg, &lg.n_done, i + 2, 10000)) {
            CHECK(0);
            break;
        }
    }
    double us = (double)(clock_mono_ns() - t0) / 1e3 / N;
    exec_free(ex);
    printf("    round trip of one noop (submit to done, one at a time): %.1f us\n", us);
    CHECK(no_children());
    log_fini(&lg);
}

/* A worker killed by sig while running `sleep 30`. */
static void check_worker_killed_by(int sig, const char *sig_text)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("proc", 1, &lg);
    char id[ID_LEN + 1];
    CHECK_EQ_INT(submit(ex, make_job("sleep", "{\"seconds\":30}"), id), 0);
    WAIT_STARTED(&lg, 1, 10000);
    int pid = lg.started[0].pid;
    CHECK(pid > 0 && pid != getpid());
    int64_t t0 = clock_mono_ms();
    CHECK_EQ_INT(kill(pid, sig), 0);
    WAIT_DONE(&lg, 1, 5000);
    CHECK(lg.done[0].at_mono_ms - t0 < 1000);
    CHECK_EQ_STR(lg.done[0].id, id);
    CHECK_EQ_INT(lg.done[0].outcome, EXEC_FAILED);
    CHECK_EQ_INT(lg.done[0].error_type, JOB_ERR_SIGNAL);
    CHECK_EQ_INT(lg.done[0].attempt, 1);
    char want[64];
    snprintf(want, sizeof want, "(pid %d) was killed by signal %d (%s)", pid, sig, sig_text);
    if (!strstr(lg.done[0].error, want)) fprintf(stderr, "    error: %s\n", lg.done[0].error);
    CHECK(strstr(lg.done[0].error, want) != NULL);
    CHECK(strstr(lg.done[0].error, "worker proc-0") != NULL);
    CHECK(pid_gone(pid)); /* reaped before done() */
    /* the replacement serves the next job */
    CHECK_EQ_INT(submit(ex, make_job("square", "{\"n\":4}"), NULL), 0);
    WAIT_DONE(&lg, 2, 10000);
    CHECK_EQ_INT(lg.done[1].outcome, EXEC_OK);
    CHECK_EQ_STR(lg.done[1].result, "16");
    CHECK(lg.done[1].pid > 0 && lg.done[1].pid != pid);
    struct exec_stats st;
    exec_get_stats(ex, &st);
    CHECK_EQ_INT(st.queued, 0);
    exec_free(ex);
    CHECK(no_children());
    log_fini(&lg);
}

static void test_worker_killed_by_sigsegv_fails_only_its_job_and_is_replaced(void)
{
    check_worker_killed_by(SIGSEGV, "Segmentation fault");
}

static void test_worker_killed_by_sigkill_fails_only_its_job_and_is_replaced(void)
{
    check_worker_killed_by(SIGKILL, "Killed");
}

/* The `crash` task (tasks/crash.c) kills its worker for real: only that job
 * fails, with `signal`; the jobs around it on the other worker and after it
 * on the replacement all succeed. */
static void test_crash_task_fails_one_job_and_the_worker_is_replaced(void)
{
    if (!task_find(g_reg, "crash")) {
        printf("    (no crash task registered: skipped)\n");
        return;
    }
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("proc", 2, &lg);
    char segv[ID_LEN + 1], abrt[ID_LEN + 1];
    for (int i = 0; i < 4; i++) CHECK_EQ_INT(submit(ex, make_job("square", "{\"n\":2}"), NULL), 0);
    CHECK_EQ_INT(submit(ex, make_job("crash", "{\"signal\":\"SEGV\"}"), segv), 0);
    for (int i = 0; i < 4; i++) CHECK_EQ_INT(submit(ex, make_job("square", "{\"n\":2}"), NULL), 0);
    CHECK_EQ_INT(submit(ex, make_job("crash", "{\"signal\":\"ABRT\"}"), abrt), 0);
    for (int i = 0; i < 4; i++) CHECK_EQ_INT(submit(ex, make_job("square", "{\"n\":2}"), NULL), 0);
    WAIT_DONE(&lg, 14, 20000);
    exec_free(ex);
    int ok = 0;
    for (int i = 0; i < 14; i++) {
        struct rec *d = &lg.done[i];
        if (strcmp(d->id, segv) == 0 || strcmp(d->id, abrt) == 0) {
            CHECK_EQ_INT(d->outcome, EXEC_FAILED);
            CHECK_EQ_INT(d->error_type, JOB_ERR_SIGNAL);
            CHECK(strstr(d->error, strcmp(d->id, segv) == 0 ? "signal 11 (Segmentation fault)" : "signal 6 (Aborted)"));
            CHECK(pid_gone(d->pid));
        } else {
            ok += d->outcome == EXEC_OK && strcmp(d->result, "4") == 0;
        }
    }
    CHECK_EQ_INT(ok, 12);
    CHECK_EQ_INT(lg.n_started, 14); /* nothing ran twice */
    CHECK(no_children());
    log_fini(&lg);
}

static void test_idle_worker_that_dies_is_replaced_and_loses_no_job(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("proc", 1, &lg);
    CHECK_EQ_INT(submit(ex, make_job("noop", NULL), NULL), 0);
    WAIT_DONE(&lg, 1, 10000);
    int pid = lg.done[0].pid;
    CHECK_EQ_INT(kill(pid, SIGKILL), 0);
    /* submitted at once: it may be sent to the dead worker, and then must be re-queued */
    CHECK_EQ_INT(submit(ex, make_job("square", "{\"n\":5}"), NULL), 0);
    WAIT_DONE(&lg, 2, 10000);
    CHECK_EQ_INT(lg.done[1].outcome, EXEC_OK);
    CHECK_EQ_STR(lg.done[1].result, "25");
    CHECK_EQ_INT(lg.done[1].attempt, 1);
    CHECK(lg.done[1].pid != pid);
    CHECK(pid_gone(pid));
    exec_free(ex);
    CHECK(no_children());
    log_fini(&lg);
}

static void test_timeout_kills_the_worker_group_within_a_second(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("proc", 1, &lg);
    struct job *j = make_job("sleep", "{\"seconds\":30}");
    j->timeout_ms = 300;
    int64_t t0 = clock_mono_ms();
    CHECK_EQ_INT(submit(ex, j, NULL), 0);
    WAIT_STARTED(&lg, 1, 10000);
    int64_t t_started = lg.started[0].at_mono_ms;
    WAIT_DONE(&lg, 1, 5000);
    int64_t took = lg.done[0].at_mono_ms - t_started;
    int pid = lg.started[0].pid;
    CHECK_EQ_INT(lg.done[0].outcome, EXEC_FAILED);
    CHECK_EQ_INT(lg.done[0].error_type, JOB_ERR_TIMEOUT);
    CHECK_EQ_STR(lg.done[0].error, "timed out after 0.300 s");
    CHECK(took >= 290);
    CHECK(lg.done[0].at_mono_ms - t0 < 1500);
    CHECK(pid_gone(pid));
    CHECK(pgrp_gone(pid));
    CHECK_EQ_INT(submit(ex, make_job("noop", NULL), NULL), 0);
    WAIT_DONE(&lg, 2, 10000);
    CHECK_EQ_INT(lg.done[1].outcome, EXEC_OK);
    CHECK(lg.done[1].pid != pid);
    exec_free(ex);
    CHECK(no_children());
    log_fini(&lg);
}

/* True when some live process has `marker` as an argument (scans /proc). */
static bool process_with_arg(const char *marker)
{
    bool found = false;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && !found && (e = readdir(d))) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
        char path[300], buf[4096], state = 0;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        if (fgets(buf, sizeof buf, f) && strrchr(buf, ')')) state = strrchr(buf, ')')[2];
        fclose(f);
        if (state == 'Z') continue; /* exited, not yet reaped by its new parent */
        snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
        if (!(f = fopen(path, "r"))) continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        for (size_t i = 0; i < n; i += strlen(buf + i) + 1) {
            buf[n] = '\0';
            if (strcmp(buf + i, marker) == 0) found = true;
        }
    }
    if (d) closedir(d);
    return found;
}

/* The exec task runs its program in a process group of its own, which the
 * executor's killpg does not reach: a timeout must still end the program,
 * through the worker turning SIGTERM into should_stop(). */
static void test_timeout_of_an_exec_job_ends_its_program_too(void)
{
    struct task_registry_options to = {.allow_exec = true};
    struct task_registry *reg = NULL;
    if (task_registry_new(&to, &reg) != 0 || !task_find(reg, "exec")) {
        printf("    (no exec task: skipped)\n");
        task_registry_free(reg);
        return;
    }
    struct log lg;
    log_init_(&lg);
    const char *argv[10];
    int n = 0;
    while (g_worker_argv[n]) {
        argv[n] = g_worker_argv[n];
        n++;
    }
    argv[n++] = "--allow-exec";
    argv[n] = NULL;
    struct exec_config cfg = {.name = "x", .kind = TASK_KIND_PROCESS, .size = 1, .worker_argv = argv};
    struct exec_hooks hooks = {.started = hook_started, .done = hook_done, .ctx = &lg};
    struct executor *ex = NULL;
    CHECK_EQ_INT(exec_new(&cfg, reg, &hooks, &ex), 0);
    if (!ex) return;
    char marker[32];
    snprintf(marker, sizeof marker, "30.%d", (int)getpid() % 1000 + 1000);
    char args[96];
    snprintf(args, sizeof args, "{\"argv\":[\"sleep\",\"%s\"]}", marker);
    struct job *j = make_job("exec", args);
    j->timeout_ms = 300;
    CHECK_EQ_INT(submit(ex, j, NULL), 0);
    WAIT_STARTED(&lg, 1, 10000);
    bool seen = false;
    for (int i = 0; i < 100 && !seen; i++) { /* the program starts a moment after the job */
        seen = process_with_arg(marker);
        if (!seen) usleep(10000);
    }
    CHECK(seen);
    WAIT_DONE(&lg, 1, 5000);
    CHECK_EQ_INT(lg.done[0].outcome, EXEC_FAILED);
    CHECK_EQ_INT(lg.done[0].error_type, JOB_ERR_TIMEOUT);
    CHECK(lg.done[0].at_mono_ms - lg.started[0].at_mono_ms < 1500);
    bool gone = false;
    for (int i = 0; i < 100 && !gone; i++) { /* it may take its exit a moment after the worker's */
        gone = !process_with_arg(marker);
        if (!gone) usleep(10000);
    }
    CHECK(gone);
    exec_free(ex);
    CHECK(no_children());
    task_registry_free(reg);
    log_fini(&lg);
}

static void test_cancel_queued_running_and_unknown(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("proc", 1, &lg);
    char running[ID_LEN + 1], queued[ID_LEN + 1];
    CHECK_EQ_INT(submit(ex, make_job("sleep", "{\"seconds\":30}"), running), 0);
    WAIT_STARTED(&lg, 1, 10000);
    CHECK_EQ_INT(submit(ex, make_job("noop", NULL), queued), 0);

    /* queued: removed and reported at once, on the caller's thread, never started */
    CHECK_EQ_INT(exec_cancel(ex, queued), 0);
    CHECK_EQ_INT(log_count(&lg, &lg.n_done), 1);
    CHECK_EQ_STR(lg.done[0].id, queued);
    CHECK_EQ_INT(lg.done[0].outcome, EXEC_CANCELLED);
    CHECK_EQ_INT(lg.done[0].error_type, JOB_ERR_CANCELLED);
    CHECK_EQ_INT(lg.done[0].attempt, 0);
    CHECK_EQ_INT(lg.done[0].started_ms, 0);
    CHECK(lg.done[0].finished_ms > 0);
    CHECK_EQ_INT(exec_cancel(ex, queued), -ENOENT); /* gone */

    /* running: the worker's group is killed and the job ends within a second */
    int pid = lg.started[0].pid;
    int64_t t0 = clock_mono_ms();
    CHECK_EQ_INT(exec_cancel(ex, running), 0);
    WAIT_DONE(&lg, 2, 5000);
    CHECK(lg.done[1].at_mono_ms - t0 < 1000);
    CHECK_EQ_STR(lg.done[1].id, running);
    CHECK_EQ_INT(lg.done[1].outcome, EXEC_CANCELLED);
    CHECK_EQ_INT(lg.done[1].error_type, JOB_ERR_CANCELLED);
    CHECK_EQ_INT(lg.done[1].attempt, 1);
    CHECK(pid_gone(pid));
    CHECK(pgrp_gone(pid));

    char unknown[ID_LEN + 1];
    id_new(unknown);
    CHECK_EQ_INT(exec_cancel(ex, unknown), -ENOENT);
    CHECK_EQ_INT(exec_cancel(ex, running), -ENOENT); /* finished */
    CHECK_EQ_INT(submit(ex, make_job("noop", NULL), NULL), 0); /* a new worker took over */
    WAIT_DONE(&lg, 3, 10000);
    CHECK_EQ_INT(lg.done[2].outcome, EXEC_OK);
    exec_free(ex);
    CHECK_EQ_INT(lg.n_started, 2); /* the cancelled queued job never started */
    CHECK_EQ_INT(lg.n_done, 3);
    CHECK(no_children());
    log_fini(&lg);
}

static void test_priority_then_age_orders_the_queue_on_one_worker(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("one", 1, &lg);
    char blocker[ID_LEN + 1], p1[ID_LEN + 1], p5[ID_LEN + 1], p3[ID_LEN + 1];
    CHECK_EQ_INT(submit(ex, make_job("sleep", "{\"seconds\":30}"), blocker), 0);
    WAIT_STARTED(&lg, 1, 10000); /* the only worker is busy: everything below queues */
    int prios[3] = {1, 5, 3};
    char *ids[3] = {p1, p5, p3};
    for (int i = 0; i < 3; i++) {
        struct job *j = make_job("noop", NULL);
        j->priority = prios[i];
        CHECK_EQ_INT(submit(ex, j, ids[i]), 0);
    }
    struct job *older = make_job("noop", NULL), *newer = make_job("noop", NULL);
    char id_old[ID_LEN + 1], id_new_[ID_LEN + 1];
    CHECK(strcmp(older->id, newer->id) < 0);
    CHECK_EQ_INT(submit(ex, newer, id_new_), 0);
    CHECK_EQ_INT(submit(ex, older, id_old), 0);
    struct exec_stats st;
    exec_get_stats(ex, &st);
    CHECK_EQ_INT(st.queued, 5);
    CHECK_EQ_INT(st.busy, 1);
    CHECK_EQ_INT(exec_cancel(ex, blocker), 0);
    WAIT_DONE(&lg, 6, 10000);
    exec_free(ex);
    const char *want[6] = {blocker, p5, p3, p1, id_old, id_new_};
    for (int i = 0; i < 6; i++) CHECK_EQ_STR(lg.done[i].id, want[i]);
    CHECK_EQ_INT(lg.done[0].outcome, EXEC_CANCELLED);
    for (int i = 1; i < 6; i++) CHECK_EQ_INT(lg.done[i].outcome, EXEC_OK);
    CHECK(no_children());
    log_fini(&lg);
}

static void test_stats_busy_queued_size(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("stats", 2, &lg);
    struct exec_stats st;
    exec_get_stats(ex, &st);
    CHECK_EQ_INT(st.size, 2);
    CHECK_EQ_INT(st.busy, 0);
    CHECK_EQ_INT(st.queued, 0);
    CHECK_EQ_STR(exec_name(ex), "stats");
    CHECK_EQ_INT(exec_kind(ex), TASK_KIND_PROCESS);
    char a[ID_LEN + 1], b[ID_LEN + 1];
    CHECK_EQ_INT(submit(ex, make_job("sleep", "{\"seconds\":30}"), a), 0);
    CHECK_EQ_INT(submit(ex, make_job("sleep", "{\"seconds\":30}"), b), 0);
    WAIT_STARTED(&lg, 2, 10000);
    CHECK(lg.started[0].pid != lg.started[1].pid);
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(submit(ex, make_job("noop", NULL), NULL), 0);
    exec_get_stats(ex, &st);
    CHECK_EQ_INT(st.size, 2);
    CHECK_EQ_INT(st.busy, 2);
    CHECK_EQ_INT(st.queued, 3);
    CHECK_EQ_INT(exec_cancel(ex, a), 0);
    CHECK_EQ_INT(exec_cancel(ex, b), 0);
    WAIT_DONE(&lg, 5, 10000);
    exec_free(ex);
    CHECK(no_children());
    log_fini(&lg);
}

static void test_workers_show_each_process_and_its_job(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("pw", 2, &lg);
    struct exec_worker w[2];
    char id[ID_LEN + 1];
    CHECK_EQ_INT(submit(ex, make_job("sleep", "{\"seconds\":30}"), id), 0);
    WAIT_STARTED(&lg, 1, 10000);
    CHECK_EQ_INT(exec_workers(ex, w, 2), 2);
    int k = strcmp(w[0].job_id, id) == 0 ? 0 : 1;
    CHECK_EQ_STR(w[k].job_id, id);
    CHECK_EQ_STR(w[k].task, "sleep");
    CHECK_EQ_INT(w[k].pid, lg.started[0].pid);
    CHECK_EQ_STR(w[k].thread, lg.started[0].thread);
    CHECK_EQ_INT(w[k].slot, k);
    CHECK_EQ_INT(w[k].started_at_ms, lg.started[0].started_ms);
    CHECK(w[1 - k].pid > 0 && w[1 - k].pid != w[k].pid && w[1 - k].pid != getpid());
    CHECK_EQ_STR(w[1 - k].job_id, "");
    CHECK_EQ_INT(w[1 - k].started_at_ms, 0);
    /* its worker dies: the slot is idle, its pid 0 or the replacement's */
    int old = w[k].pid;
    CHECK_EQ_INT(kill(old, SIGKILL), 0);
    WAIT_DONE(&lg, 1, 5000);
    CHECK_EQ_INT(exec_workers(ex, w, 2), 2);
    CHECK(w[k].pid != old);
    CHECK_EQ_STR(w[k].job_id, "");
    exec_free(ex);
    CHECK(no_children());
    log_fini(&lg);
}

static void test_drain_returns_queued_stops_running_refuses_submits(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("w", 1, &lg);
    char running[ID_LEN + 1], q1[ID_LEN + 1], q2[ID_LEN + 1];
    CHECK_EQ_INT(submit(ex, make_job("sleep", "{\"seconds\":30}"), running), 0);
    WAIT_STARTED(&lg, 1, 10000);
    CHECK_EQ_INT(submit(ex, make_job("noop", NULL), q1), 0);
    CHECK_EQ_INT(submit(ex, make_job("noop", NULL), q2), 0);
    int pid = lg.started[0].pid;
    int64_t t0 = clock_mono_ms();
    exec_drain(ex, 300);
    int64_t took = clock_mono_ms() - t0;
    CHECK(took >= 300); /* the running job had its grace */
    CHECK(took < 1500);
    CHECK_EQ_INT(log_count(&lg, &lg.n_done), 3); /* every done() returned before drain did */
    int drained = 0;
    for (int i = 0; i < 3; i++) {
        struct rec *d = &lg.done[i];
        if (strcmp(d->id, running) == 0) {
            CHECK_EQ_INT(d->outcome, EXEC_CANCELLED); /* stopped after the grace */
            CHECK_EQ_INT(d->error_type, JOB_ERR_CANCELLED);
            CHECK_EQ_INT(d->attempt, 1);
        } else {
            drained++;
            CHECK(strcmp(d->id, q1) == 0 || strcmp(d->id, q2) == 0);
            CHECK_EQ_INT(d->outcome, EXEC_DRAINED);
            CHECK_EQ_INT(d->status, JOB_QUEUED); /* stays queued */
            CHECK_EQ_INT(d->attempt, 0);
            CHECK_EQ_INT(d->started_ms, 0);
        }
    }
    CHECK_EQ_INT(drained, 2);
    CHECK_EQ_INT(lg.n_started, 1);
    CHECK(pid_gone(pid));

    struct job *late = make_job("noop", NULL);
    CHECK_EQ_INT(exec_submit(ex, late, false), -ESHUTDOWN);
    CHECK_EQ_STR(late->task, "noop"); /* still ours */
    job_free(late);
    exec_drain(ex, 100); /* idempotent */
    struct exec_stats st;
    exec_get_stats(ex, &st);
    CHECK_EQ_INT(st.busy, 0);
    CHECK_EQ_INT(st.queued, 0);
    exec_free(ex);
    CHECK_EQ_INT(lg.n_done, 3);
    CHECK(no_children());
    log_fini(&lg);
}

static void test_drain_lets_a_short_job_finish_within_grace(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("w", 1, &lg);
    CHECK_EQ_INT(submit(ex, make_job("sleep", "{\"seconds\":0.2}"), NULL), 0);
    WAIT_STARTED(&lg, 1, 10000);
    int64_t t0 = clock_mono_ms();
    exec_drain(ex, 5000);
    CHECK(clock_mono_ms() - t0 < 2000); /* returned when the job ended, not at the grace */
    CHECK_EQ_INT(log_count(&lg, &lg.n_done), 1);
    CHECK_EQ_INT(lg.done[0].outcome, EXEC_OK);
    CHECK_EQ_STR(lg.done[0].result, "{\"slept\":0.2}");
    exec_free(ex);
    CHECK(no_children());
    log_fini(&lg);
}

static void test_free_leaves_no_child_process(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("p", 3, &lg);
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(submit(ex, make_job("sleep", "{\"seconds\":30}"), NULL), 0);
    WAIT_STARTED(&lg, 3, 10000);
    int pids[3] = {lg.started[0].pid, lg.started[1].pid, lg.started[2].pid};
    CHECK(!no_children());
    int64_t t0 = clock_mono_ms();
    exec_free(ex); /* running jobs are stopped at once */
    CHECK(clock_mono_ms() - t0 < 3000);
    CHECK_EQ_INT(lg.n_done, 3);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(lg.done[i].outcome, EXEC_CANCELLED);
        CHECK(pid_gone(pids[i]));
    }
    CHECK(no_children());
    log_fini(&lg);
}

static void test_progress_from_crunch_reaches_the_hook(void)
{
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("p", 1, &lg);
    char id[ID_LEN + 1];
    CHECK_EQ_INT(submit(ex, make_job("crunch", "{\"iterations\":300000000}"), id), 0);
    WAIT_DONE(&lg, 1, 60000);
    exec_free(ex);
    CHECK_EQ_INT(lg.done[0].outcome, EXEC_OK);
    CHECK(strstr(lg.done[0].result, "\"iterations\":300000000") != NULL);
    CHECK(lg.n_progress >= 1);
    CHECK_EQ_STR(lg.progress_id, id);
    CHECK(lg.progress_last > 0 && lg.progress_last <= 1.0);
    CHECK(no_children());
    log_fini(&lg);
}

/* Cancels every third job while a stream of noops is pipelined: whatever
 * path each cancel takes (heap, SKIP, or a kill when the worker started it
 * first), every job is reported exactly once. */
static void test_cancel_storm_in_a_pipelined_stream_reports_each_job_once(void)
{
    int once = 0, ok = 0, cancelled = 0;
    bulk_run(2, 3000, true, &once, &ok, &cancelled);
    CHECK_EQ_INT(once, 3000);
    CHECK_EQ_INT(ok + cancelled, 3000);
    CHECK(ok >= 2000); /* the ones not cancelled ran */
    CHECK(no_children());
}

/* Drains while a stream of noops is pipelined: a job comes back once, done or drained. */
static void test_drain_of_a_pipelined_stream_reports_each_job_once(void)
{
    enum { N = 3000 };
    struct log lg;
    log_init_(&lg);
    struct job **jobs = log_bulk(&lg, N, "noop", NULL);
    struct executor *ex = make_exec("d", 2, &lg);
    for (int i = 0; i < N; i++) CHECK_EQ_INT(submit(ex, jobs[i], NULL), 0);
    log_wait(&lg, &lg.n_done, N / 3, 20000);
    exec_drain(ex, 5000);
    CHECK_EQ_INT(log_count(&lg, &lg.n_done), N);
    exec_free(ex);
    int once = 0, ok = 0, drained = 0;
    for (int i = 0; i < N; i++) {
        once += lg.counts[i] == 1;
        ok += lg.outcomes[i] == EXEC_OK;
        drained += lg.outcomes[i] == EXEC_DRAINED;
    }
    CHECK_EQ_INT(once, N);
    CHECK_EQ_INT(ok + drained, N);
    CHECK_EQ_INT(lg.unknown_done, 0);
    CHECK(no_children());
    free(jobs);
    log_bulk_fini(&lg);
    log_fini(&lg);
}

static void test_exec_new_refuses_a_missing_worker_command(void)
{
    struct log lg;
    log_init_(&lg);
    struct exec_hooks hooks = {.started = hook_started, .done = hook_done, .ctx = &lg};
    struct executor *ex = (struct executor *)1;
    struct exec_config none = {.name = "p", .kind = TASK_KIND_PROCESS, .size = 1};
    CHECK_EQ_INT(exec_new(&none, g_reg, &hooks, &ex), -EINVAL);
    const char *missing[] = {"/nonexistent/jobd", "--internal-worker", NULL};
    struct exec_config bad = {.name = "p", .kind = TASK_KIND_PROCESS, .size = 2, .worker_argv = missing};
    CHECK_EQ_INT(exec_new(&bad, g_reg, &hooks, &ex), -ENOENT);
    CHECK(ex == (struct executor *)1); /* untouched */
    CHECK(no_children());
    log_fini(&lg);
}

/* Reads "Max <what>" soft limit of pid from /proc, or -2 when not found. */
static long long proc_limit(int pid, const char *what)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/limits", pid);
    FILE *f = fopen(path, "r");
    long long v = -2;
    if (!f) return v;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, what, strlen(what)) != 0) continue;
        const char *p = line + strlen(what);
        while (*p == ' ') p++;
        v = strncmp(p, "unlimited", 9) == 0 ? -1 : atoll(p);
    }
    fclose(f);
    return v;
}

/* cpu_seconds is a budget per job, not per worker: three jobs of ~0.45 s of
 * CPU each run on one worker with cpu_seconds 1, and a runaway one is
 * stopped by SIGXCPU. memory_mb sets RLIMIT_AS (not under sanitizers, whose
 * shadow memory needs terabytes of address space). */
static void test_cpu_seconds_is_a_per_job_budget_and_memory_mb_a_limit(void)
{
    struct log lg;
    log_init_(&lg);
    /* calibrate crunch on this machine (and build) */
    struct executor *ex = make_exec("cal", 1, &lg);
    CHECK_EQ_INT(submit(ex, make_job("crunch", "{\"iterations\":100000000}"), NULL), 0);
    WAIT_DONE(&lg, 1, 60000);
    exec_free(ex);
    double secs = (double)(lg.done[0].finished_ms - lg.done[0].started_ms) / 1000.0;
    if (secs < 0.01) secs = 0.01;
    long long iters = (long long)(1e8 * 0.45 / secs);
    char args[96];
    snprintf(args, sizeof args, "{\"iterations\":%lld}", iters);

    long mem = 0;
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    mem = 1024;
#endif
    struct exec_config cfg = {.name = "lim", .kind = TASK_KIND_PROCESS, .size = 1, .worker_argv = g_worker_argv,
                              .memory_mb = mem, .cpu_seconds = 1};
    struct exec_hooks hooks = {.started = hook_started, .done = hook_done, .ctx = &lg};
    ex = NULL;
    CHECK_EQ_INT(exec_new(&cfg, g_reg, &hooks, &ex), 0);
    if (!ex) return;
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(submit(ex, make_job("crunch", args), NULL), 0);
    WAIT_DONE(&lg, 4, 60000);
    for (int i = 1; i < 4; i++) {
        CHECK_EQ_INT(lg.done[i].outcome, EXEC_OK);
        CHECK_EQ_INT(lg.done[i].pid, lg.done[1].pid); /* one worker, more than 1 s of CPU in all */
    }
    int pid = lg.done[1].pid;
    if (mem) CHECK_EQ_INT(proc_limit(pid, "Max address space"), mem << 20);
    CHECK(proc_limit(pid, "Max cpu time") >= 2); /* moved past the CPU it used */
    CHECK_EQ_INT(submit(ex, make_job("crunch", "{\"iterations\":1000000000000}"), NULL), 0);
    WAIT_DONE(&lg, 5, 60000);
    CHECK_EQ_INT(lg.done[4].outcome, EXEC_FAILED);
    CHECK_EQ_INT(lg.done[4].error_type, JOB_ERR_SIGNAL);
    CHECK(strstr(lg.done[4].error, "signal 24 (CPU time limit exceeded)") != NULL);
    CHECK(lg.done[4].finished_ms - lg.done[4].started_ms < 5000);
    CHECK_EQ_INT(submit(ex, make_job("noop", NULL), NULL), 0);
    WAIT_DONE(&lg, 6, 10000);
    CHECK_EQ_INT(lg.done[5].outcome, EXEC_OK);
    CHECK(lg.done[5].pid != pid);
    exec_free(ex);
    CHECK(no_children());
    log_fini(&lg);
}

/* ---- misbehaving workers --------------------------------------------------------- */

/* A fake worker in Python that speaks just enough of the protocol: it answers
 * each JOB with STARTED, then misbehaves as argv[1] says. */
static const char fake_worker_py[] =
    "import os, struct, sys, time\n"
    "mode = sys.argv[1]\n"
    "if mode == 'die_at_start': sys.exit(1)\n"
    "buf = b''\n"
    "def frame():\n"
    "    global buf\n"
    "    while True:\n"
    "        if len(buf) >= 4:\n"
    "            n = struct.unpack('<I', buf[:4])[0]\n"
    "            if len(buf) >= 4 + n:\n"
    "                f = buf[4:4 + n]; buf = buf[4 + n:]; return f\n"
    "        d = os.read(3, 65536)\n"
    "        if not d: sys.exit(0)\n"
    "        buf += d\n"
    "def send(body): os.write(3, struct.pack('<I', len(body)) + body)\n"
    "while True:\n"
    "    f = frame()\n"
    "    if f[0] != 1: continue\n"
    "    n = struct.unpack('<I', f[1:5])[0]; jid = f[5:5 + n]\n"
    "    send(bytes([16]) + struct.pack('<I', len(jid)) + jid + struct.pack('<qq', os.getpid(), 0))\n"
    "    if mode == 'exit3': sys.exit(3)\n"
    "    if mode == 'garbage': os.write(3, b'\\x05\\x00\\x00\\x00\\x63hello')\n"
    "    if mode == 'close': os.close(3); time.sleep(30)\n";

static char g_fake_path[64];

/* Runs one noop on a fake worker in `mode`; returns the done record's copy. */
static void run_on_fake_worker(const char *mode, struct log *lg, int64_t *took_ms)
{
    const char *argv[] = {"/usr/bin/python3", g_fake_path, mode, NULL};
    struct exec_config cfg = {.name = "fake", .kind = TASK_KIND_PROCESS, .size = 1, .worker_argv = argv};
    struct exec_hooks hooks = {.started = hook_started, .done = hook_done, .progress = hook_progress, .ctx = lg};
    struct executor *ex = NULL;
    CHECK_EQ_INT(exec_new(&cfg, g_reg, &hooks, &ex), 0);
    if (!ex) return;
    int64_t t0 = clock_mono_ms();
    CHECK_EQ_INT(submit(ex, make_job("noop", NULL), NULL), 0);
    if (strcmp(mode, "die_at_start") != 0) WAIT_DONE(lg, 1, 10000);
    *took_ms = clock_mono_ms() - t0;
    exec_free(ex); /* replacements of the fake worker are reaped too */
    CHECK(no_children());
}

static bool have_fake_worker(void)
{
    if (access("/usr/bin/python3", X_OK) != 0) {
        printf("    (no /usr/bin/python3: fake-worker test skipped)\n");
        return false;
    }
    return g_fake_path[0] != '\0';
}

static void test_worker_that_exits_fails_its_job_with_worker_lost(void)
{
    if (!have_fake_worker()) return;
    struct log lg;
    log_init_(&lg);
    int64_t took = 0;
    run_on_fake_worker("exit3", &lg, &took);
    CHECK_EQ_INT(lg.n_done, 1);
    CHECK_EQ_INT(lg.done[0].outcome, EXEC_FAILED);
    CHECK_EQ_INT(lg.done[0].error_type, JOB_ERR_WORKER_LOST);
    CHECK(strstr(lg.done[0].error, "exited with status 3") != NULL);
    CHECK_EQ_INT(lg.done[0].attempt, 1);
    log_fini(&lg);
}

static void test_worker_that_sends_garbage_is_replaced_and_fails_its_job(void)
{
    if (!have_fake_worker()) return;
    struct log lg;
    log_init_(&lg);
    int64_t took = 0;
    run_on_fake_worker("garbage", &lg, &took);
    CHECK_EQ_INT(lg.n_done, 1);
    CHECK_EQ_INT(lg.done[0].outcome, EXEC_FAILED);
    CHECK_EQ_INT(lg.done[0].error_type, JOB_ERR_WORKER_LOST);
    CHECK(strstr(lg.done[0].error, "broke the protocol (a garbled message)") != NULL);
    log_fini(&lg);
}

static void test_worker_that_closes_its_socket_is_killed(void)
{
    if (!have_fake_worker()) return;
    struct log lg;
    log_init_(&lg);
    int64_t took = 0;
    run_on_fake_worker("close", &lg, &took);
    CHECK_EQ_INT(lg.n_done, 1);
    CHECK_EQ_INT(lg.done[0].outcome, EXEC_FAILED);
    CHECK_EQ_INT(lg.done[0].error_type, JOB_ERR_WORKER_LOST);
    CHECK(strstr(lg.done[0].error, "closed its socket") != NULL);
    CHECK(took < 2000);
    log_fini(&lg);
}

/* A worker that dies at once, every time: the job it was sent never started,
 * so it is not failed; it waits (re-queued) while the slot backs off, and
 * comes back drained at exec_free. */
static void test_worker_that_dies_at_start_never_fails_a_job(void)
{
    if (!have_fake_worker()) return;
    struct log lg;
    log_init_(&lg);
    int64_t took = 0;
    run_on_fake_worker("die_at_start", &lg, &took);
    CHECK_EQ_INT(lg.n_started, 0);
    CHECK_EQ_INT(lg.n_done, 1);
    CHECK_EQ_INT(lg.done[0].outcome, EXEC_DRAINED);
    CHECK_EQ_INT(lg.done[0].attempt, 0);
    log_fini(&lg);
}

static void test_large_args_and_result_cross_in_pieces(void)
{
    enum { BIG = 4 << 20 };
    struct log lg;
    log_init_(&lg);
    struct executor *ex = make_exec("big", 1, &lg);
    char *args = malloc(BIG + 16);
    if (!args) abort();
    memcpy(args, "{\"s\":\"", 6);
    memset(args + 6, 'x', BIG);
    memcpy(args + 6 + BIG, "\"}", 3);
    CHECK_EQ_INT(submit(ex, make_job("echo", args), NULL), 0);
    CHECK_EQ_INT(submit(ex, make_job("square", "{\"n\":2}"), NULL), 0);
    WAIT_DONE(&lg, 2, 20000);
    exec_free(ex);
    free(args);
    CHECK_EQ_INT(lg.done[0].outcome, EXEC_OK);
    CHECK(strncmp(lg.done[0].result, "{\"s\":\"xxxx", 10) == 0);
    CHECK_EQ_STR(lg.done[1].result, "4");
    CHECK(no_children());
    log_fini(&lg);
}

/* ---- the wire codec -------------------------------------------------------------- */

static void test_wire_round_trips_every_message(void)
{
    struct exec_wire_buf b = {0};
    CHECK_EQ_INT(exec_wire_put_job(&b, "01ABC", "sleep", "{\"seconds\":1}", 2500), 0);
    CHECK_EQ_INT(exec_wire_put_id(&b, WIRE_SKIP, "01ABC"), 0);
    CHECK_EQ_INT(exec_wire_put_started(&b, "01ABC", 4242, 1700000000123LL), 0);
    CHECK_EQ_INT(exec_wire_put_progress(&b, "01ABC", 0.5, "halfway"), 0);
    CHECK_EQ_INT(exec_wire_put_progress(&b, "01ABC", 1.0, NULL), 0);
    CHECK_EQ_INT(exec_wire_put_done(&b, "01ABC", true, "{\"slept\":1}", 0, NULL, 1700000001123LL, 1000123), 0);
    CHECK_EQ_INT(exec_wire_put_done(&b, "01ABC", false, NULL, JOB_ERR_TASK, "boom", 5, 6), 0);
    CHECK_EQ_INT(exec_wire_put_id(&b, WIRE_SKIPPED, "01ABC"), 0);
    size_t off = 0, frame = 0;
    struct exec_wire_msg m;
    int types[8] = {WIRE_JOB,      WIRE_SKIP, WIRE_STARTED, WIRE_PROGRESS,
                    WIRE_PROGRESS, WIRE_DONE, WIRE_DONE,    WIRE_SKIPPED};
    for (int i = 0; i < 8; i++) {
        /* every strict prefix of a frame is "incomplete", never an error */
        CHECK_EQ_INT(exec_wire_decode(b.data + off, 0, &m, &frame), 0);
        size_t full = 0;
        int rc = exec_wire_decode(b.data + off, b.len - off, &m, &full);
        CHECK_EQ_INT(rc, 1);
        for (size_t cut = 1; cut < full; cut++) {
            rc = exec_wire_decode(b.data + off, cut, &m, &frame);
            CHECK_EQ_INT(rc, 0);
            CHECK(frame == (cut < WIRE_HEADER ? WIRE_HEADER : full));
        }
        CHECK_EQ_INT(exec_wire_decode(b.data + off, b.len - off, &m, &frame), 1);
        CHECK_EQ_INT(m.type, types[i]);
        CHECK(exec_wire_str_eq(&m.id, "01ABC"));
        switch (i) {
        case 0:
            CHECK(exec_wire_str_eq(&m.task, "sleep") && exec_wire_str_eq(&m.args, "{\"seconds\":1}"));
            CHECK_EQ_INT(m.timeout_ms, 2500);
            break;
        case 2: CHECK(m.pid == 4242 && m.started_at_ms == 1700000000123LL); break;
        case 3: CHECK(m.fraction == 0.5 && exec_wire_str_eq(&m.message, "halfway")); break;
        case 4: CHECK(m.fraction == 1.0 && !m.message.present); break;
        case 5:
            CHECK(m.ok && exec_wire_str_eq(&m.result, "{\"slept\":1}") && !m.error_message.present);
            CHECK(m.finished_at_ms == 1700000001123LL && m.run_us == 1000123);
            break;
        case 6:
            CHECK(!m.ok && !m.result.present && m.error_type == JOB_ERR_TASK);
            CHECK(exec_wire_str_eq(&m.error_message, "boom"));
            break;
        default: break;
        }
        off += frame;
    }
    CHECK_EQ_INT(off, b.len);
    char *dup = NULL;
    struct exec_wire_str s = {.p = "abc", .len = 2, .present = true};
    CHECK_EQ_INT(exec_wire_str_dup(&s, &dup), 0);
    CHECK_EQ_STR(dup, "ab");
    free(dup);
    exec_wire_buf_fini(&b);
}

static void test_wire_decoder_refuses_bad_frames(void)
{
    struct exec_wire_msg m;
    size_t frame = 0;
    uint8_t zero_len[5] = {0, 0, 0, 0, WIRE_SKIP};
    CHECK_EQ_INT(exec_wire_decode(zero_len, sizeof zero_len, &m, &frame), -EMSGSIZE);
    uint8_t huge[5] = {0xff, 0xff, 0xff, 0x7f, WIRE_SKIP};
    CHECK_EQ_INT(exec_wire_decode(huge, sizeof huge, &m, &frame), -EMSGSIZE);
    uint8_t max_plus_one[4] = {0x01, 0x00, 0x00, 0x04}; /* 64 MiB + 1 */
    CHECK_EQ_INT(exec_wire_decode(max_plus_one, sizeof max_plus_one, &m, &frame), -EMSGSIZE);
    uint8_t unknown_type[5] = {1, 0, 0, 0, 99};
    CHECK_EQ_INT(exec_wire_decode(unknown_type, sizeof unknown_type, &m, &frame), -EPROTO);
    /* SKIP with a string length past the frame */
    uint8_t past[9] = {5, 0, 0, 0, WIRE_SKIP, 200, 0, 0, 0};
    CHECK_EQ_INT(exec_wire_decode(past, sizeof past, &m, &frame), -EPROTO);
    /* SKIP with an empty id, and with a NUL inside the id */
    uint8_t empty[9] = {5, 0, 0, 0, WIRE_SKIP, 0, 0, 0, 0};
    CHECK_EQ_INT(exec_wire_decode(empty, sizeof empty, &m, &frame), -EPROTO);
    uint8_t nul[11] = {7, 0, 0, 0, WIRE_SKIP, 2, 0, 0, 0, 'a', 0};
    CHECK_EQ_INT(exec_wire_decode(nul, sizeof nul, &m, &frame), -EPROTO);
    /* a trailing byte after a valid SKIP */
    uint8_t trailing[12] = {8, 0, 0, 0, WIRE_SKIP, 2, 0, 0, 0, 'a', 'b', 'c'};
    CHECK_EQ_INT(exec_wire_decode(trailing, sizeof trailing, &m, &frame), -EPROTO);
    /* an absent required id */
    uint8_t absent[9] = {5, 0, 0, 0, WIRE_SKIP, 0xff, 0xff, 0xff, 0xff};
    CHECK_EQ_INT(exec_wire_decode(absent, sizeof absent, &m, &frame), -EPROTO);
    /* an id longer than WIRE_ID_MAX */
    struct exec_wire_buf b = {0};
    char longid[WIRE_ID_MAX + 2];
    memset(longid, 'A', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    CHECK_EQ_INT(exec_wire_put_id(&b, WIRE_SKIP, longid), 0);
    CHECK_EQ_INT(exec_wire_decode(b.data, b.len, &m, &frame), -EPROTO);
    /* a progress fraction that is not finite */
    b.off = b.len = 0;
    CHECK_EQ_INT(exec_wire_put_progress(&b, "x", NAN, NULL), 0);
    CHECK_EQ_INT(exec_wire_decode(b.data, b.len, &m, &frame), -EPROTO);
    /* an encoder refuses a frame above the limit, leaving the buffer as it was */
    b.off = b.len = 0;
    size_t big = WIRE_MAX_FRAME + 10;
    char *args = malloc(big + 1);
    if (args) {
        memset(args, ' ', big);
        args[big] = '\0';
        CHECK_EQ_INT(exec_wire_put_job(&b, "x", "echo", args, 0), -EMSGSIZE);
        CHECK_EQ_INT(b.len, 0);
        free(args);
    }
    exec_wire_buf_fini(&b);
}

/* Deterministic fuzzing: valid frames with random bytes changed, random
 * garbage, random cuts. The decoder must only ever answer 1, 0 or an error,
 * and a "message" must fit inside the bytes it was given (ASan watches). */
static void test_wire_decoder_survives_mutated_and_random_bytes(void)
{
    struct exec_wire_buf b = {0};
    exec_wire_put_job(&b, "01JD3W6R6ZK1Y8Q3V0C9XH2B7M", "echo", "{\"a\":[1,2,3]}", 100);
    exec_wire_put_started(&b, "01JD3W6R6ZK1Y8Q3V0C9XH2B7M", 77, 123);
    exec_wire_put_progress(&b, "01JD3W6R6ZK1Y8Q3V0C9XH2B7M", 0.25, "a quarter");
    exec_wire_put_done(&b, "01JD3W6R6ZK1Y8Q3V0C9XH2B7M", false, "{\"exit_code\":3}", JOB_ERR_EXIT_STATUS, "exit 3",
                       9, 10);
    uint64_t x = 0x9E3779B97F4A7C15u;
    int decoded = 0;
    for (int iter = 0; iter < 200000; iter++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t len = (size_t)(x % (b.len + 1));
        uint8_t *buf = malloc(len ? len : 1);
        if (!buf) break;
        if (iter % 4 == 0) {
            for (size_t i = 0; i < len; i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf[i] = (uint8_t)x;
            }
        } else {
            memcpy(buf, b.data, len);
            for (int k = 0; k < 1 + iter % 3 && len; k++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf[(x >> 8) % len] = (uint8_t)(x >> 40);
            }
        }
        size_t off = 0;
        for (;;) {
            struct exec_wire_msg m;
            size_t frame = 0;
            int rc = exec_wire_decode(buf + off, len - off, &m, &frame);
            if (rc != 1) {
                CHECK(rc == 0 || rc == -EPROTO || rc == -EMSGSIZE);
                if (rc == 0) CHECK(frame > len - off);
                break;
            }
            decoded++;
            CHECK(frame <= len - off);
            CHECK(m.id.present && m.id.len >= 1 && m.id.len <= WIRE_ID_MAX);
            CHECK((const uint8_t *)m.id.p >= buf + off && (const uint8_t *)m.id.p + m.id.len <= buf + off + frame);
            off += frame;
        }
        free(buf);
    }
    CHECK(decoded > 1000);
    exec_wire_buf_fini(&b);
}

/* ---- bulk -------------------------------------------------------------------------- */

/* Runs n noops on `size` workers; with cancel_some, cancels every third one
 * while they run. Returns the elapsed microseconds from the first submit to the
 * last done(); *once_out = ids done exactly once. */
static int64_t bulk_run(int size, int n, bool cancel_some, int *once_out, int *ok_out, int *cancelled_out)
{
    struct log lg;
    log_init_(&lg);
    struct job **jobs = log_bulk(&lg, n, "noop", NULL);
    struct executor *ex = make_exec("bulk", size, &lg);
    int refused = 0;
    int64_t t0 = clock_mono_ns();
    for (int i = 0; i < n; i++) {
        refused += submit(ex, jobs[i], NULL) != 0;
        if (cancel_some && i % 3 == 2) {
            exec_cancel(ex, lg.ids[i - 1]); /* -ENOENT when it already finished */
        }
    }
    CHECK_EQ_INT(refused, 0);
    CHECK(log_wait(&lg, &lg.n_done, n, 60000));
    int64_t us = (clock_mono_ns() - t0) / 1000;
    exec_free(ex);
    int once = 0, ok = 0, cancelled = 0;
    for (int i = 0; i < n; i++) {
        once += lg.counts[i] == 1;
        ok += lg.counts[i] == 1 && lg.outcomes[i] == EXEC_OK;
        cancelled += lg.counts[i] == 1 && lg.outcomes[i] == EXEC_CANCELLED;
    }
    CHECK_EQ_INT(lg.unknown_done, 0);
    CHECK_EQ_INT(lg.n_done, n);
    *once_out = once;
    *ok_out = ok;
    if (cancelled_out) *cancelled_out = cancelled;
    free(jobs);
    log_bulk_fini(&lg);
    log_fini(&lg);
    return us;
}

/* The jobd binary of this build: ../jobd from this binary's folder, else JOBD_BIN. */
static bool find_jobd(void)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
            char cand[PATH_MAX + 8];
            snprintf(cand, sizeof cand, "%s/../jobd", self);
            if (realpath(cand, g_jobd) && access(g_jobd, X_OK) == 0) return true;
        }
    }
    const char *env = getenv("JOBD_BIN");
    if (env && realpath(env, g_jobd) && access(g_jobd, X_OK) == 0) return true;
    return false;
}

int main(void)
{
    log_init(LOG_LEVEL_OFF, LOG_FORMAT_TEXT);
    signal(SIGPIPE, SIG_IGN);
    /* A sanitizer's SEGV handler would turn the workers' SIGSEGV into exit(1):
     * let the signal through (workers inherit the environment; this process
     * has already read its options). */
#if defined(__SANITIZE_ADDRESS__)
    const char *opt_name = "ASAN_OPTIONS";
#elif defined(__SANITIZE_THREAD__)
    const char *opt_name = "TSAN_OPTIONS";
#else
    const char *opt_name = NULL;
#endif
    if (opt_name) {
        const char *old = getenv(opt_name);
        char opts[1024];
        snprintf(opts, sizeof opts, "%s%shandle_segv=0", old ? old : "", old && *old ? ":" : "");
        setenv(opt_name, opts, 1);
    }
    if (!find_jobd()) {
        fprintf(stderr, "test_process: no jobd binary next to this test (../jobd) and no JOBD_BIN: build it first "
                        "(make VARIANT=<variant> build/<variant>/jobd)\n");
        printf("0 passed, 1 failed\n");
        return 1;
    }
    char db[64];
    snprintf(db, sizeof db, "/tmp/jobd-test-process-%d.db", (int)getpid()); /* never opened by a worker */
    const char *argv[] = {g_jobd, "--internal-worker", "--db", db, "--log-level", "error", NULL};
    memcpy(g_worker_argv, argv, sizeof argv);
    snprintf(g_fake_path, sizeof g_fake_path, "/tmp/jobd-fake-worker-%d.py", (int)getpid());
    FILE *f = fopen(g_fake_path, "w");
    if (!f || fputs(fake_worker_py, f) < 0 || fclose(f) != 0) g_fake_path[0] = '\0';
    if (task_registry_new(NULL, &g_reg) != 0) {
        fprintf(stderr, "task_registry_new failed\n");
        return 1;
    }
    RUN(test_wire_round_trips_every_message);
    RUN(test_wire_decoder_refuses_bad_frames);
    RUN(test_wire_decoder_survives_mutated_and_random_bytes);
    RUN(test_square_echo_noop_run_in_a_worker_once_with_results);
    RUN(test_failing_and_unknown_tasks_report_task_error);
    RUN(test_worker_killed_by_sigsegv_fails_only_its_job_and_is_replaced);
    RUN(test_worker_killed_by_sigkill_fails_only_its_job_and_is_replaced);
    RUN(test_crash_task_fails_one_job_and_the_worker_is_replaced);
    RUN(test_idle_worker_that_dies_is_replaced_and_loses_no_job);
    RUN(test_timeout_kills_the_worker_group_within_a_second);
    RUN(test_timeout_of_an_exec_job_ends_its_program_too);
    RUN(test_cancel_queued_running_and_unknown);
    RUN(test_priority_then_age_orders_the_queue_on_one_worker);
    RUN(test_stats_busy_queued_size);
    RUN(test_workers_show_each_process_and_its_job);
    RUN(test_drain_returns_queued_stops_running_refuses_submits);
    RUN(test_drain_lets_a_short_job_finish_within_grace);
    RUN(test_free_leaves_no_child_process);
    RUN(test_progress_from_crunch_reaches_the_hook);
    RUN(test_exec_new_refuses_a_missing_worker_command);
    RUN(test_cpu_seconds_is_a_per_job_budget_and_memory_mb_a_limit);
    RUN(test_worker_that_exits_fails_its_job_with_worker_lost);
    RUN(test_worker_that_sends_garbage_is_replaced_and_fails_its_job);
    RUN(test_worker_that_closes_its_socket_is_killed);
    RUN(test_worker_that_dies_at_start_never_fails_a_job);
    RUN(test_large_args_and_result_cross_in_pieces);
    RUN(test_round_trip_latency_of_one_job);
    RUN(test_two_thousand_noops_on_two_workers_each_done_once);
    RUN(test_cancel_storm_in_a_pipelined_stream_reports_each_job_once);
    RUN(test_drain_of_a_pipelined_stream_reports_each_job_once);
    task_registry_free(g_reg);
    if (g_fake_path[0]) unlink(g_fake_path);
    return harness_finish();
}
