/* crash.c - the crash task: kills the process that runs it with a signal, to
 * show that a process executor survives a worker's death (SPEC §1: a crash
 * fails one job, never the server).
 *
 * args {"signal": "SEGV" | "ABRT" | "KILL" | ... | a number}, default SEGV.
 * Only signals whose default action ends the process are accepted (a stop or
 * an ignored signal would leave the worker hanging or alive). Only process
 * executors may run it: on a thread or the async loop it would take the whole
 * server down.
 *
 * The signal is raised for real: its disposition is reset to the default and
 * it is unblocked first, so neither the worker's signal mask nor a handler a
 * sanitizer installed (ASan catches SEGV) turns it into something else.
 */
#include "task_extra_int.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define CRASH_EXAMPLE "{\"signal\": \"SEGV\"}"

static const char *const crash_fields[] = {"signal", NULL};

/* Signals whose default action terminates the process. */
static const struct {
    const char *name;
    int sig;
} crash_signals[] = {
    {"SEGV", SIGSEGV}, {"ABRT", SIGABRT}, {"KILL", SIGKILL}, {"TERM", SIGTERM}, {"INT", SIGINT},
    {"HUP", SIGHUP},   {"QUIT", SIGQUIT}, {"BUS", SIGBUS},   {"FPE", SIGFPE},   {"ILL", SIGILL},
    {"TRAP", SIGTRAP}, {"SYS", SIGSYS},   {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"ALRM", SIGALRM},
    {"PIPE", SIGPIPE}, {"XCPU", SIGXCPU}, {"XFSZ", SIGXFSZ}, {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF},
};
#define N_CRASH_SIGNALS (sizeof crash_signals / sizeof crash_signals[0])

static bool crash_signal_ok(int sig)
{
    for (size_t i = 0; i < N_CRASH_SIGNALS; i++)
        if (crash_signals[i].sig == sig) return true;
    return sig >= SIGRTMIN && sig <= SIGRTMAX; /* real-time signals terminate by default */
}

static int crash_parse(const cJSON *args, int *sig, struct api_err *err)
{
    char got[64];
    *sig = SIGSEGV;
    if (task_args_object(args, "crash", CRASH_EXAMPLE, crash_fields, err) < 0) return -1;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(args, "signal");
    if (!v || cJSON_IsNull(v)) return 0;
    if (cJSON_IsString(v) && v->valuestring) {
        const char *name = v->valuestring;
        if (strncasecmp(name, "SIG", 3) == 0) name += 3;
        for (size_t i = 0; i < N_CRASH_SIGNALS; i++) {
            if (strcasecmp(name, crash_signals[i].name) == 0) {
                *sig = crash_signals[i].sig;
                return 0;
            }
        }
    } else if (cJSON_IsNumber(v) && v->valuedouble >= 1 && v->valuedouble <= 64 &&
               v->valuedouble == (double)(int)v->valuedouble && crash_signal_ok((int)v->valuedouble)) {
        *sig = (int)v->valuedouble;
        return 0;
    }
    task_describe_value(v, got, sizeof got);
    return api_err_set(err, API_INVALID_ARGUMENT, "args.signal",
                       "args.signal must be a signal that ends a process: \"SEGV\", \"ABRT\", \"KILL\", \"TERM\", "
                       "\"BUS\", \"FPE\", ... or its number, got %s.",
                       got);
}

static int crash_validate(const cJSON *args, struct api_err *err)
{
    int sig = 0;
    return crash_parse(args, &sig, err);
}

static int crash_run(struct task_ctx *ctx)
{
    struct api_err err;
    int sig = 0;
    if (crash_parse(ctx->args, &sig, &err) < 0) return task_fail_args(ctx, &err);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    if (sig != SIGKILL) sigaction(sig, &sa, NULL); /* SIGKILL cannot be caught anyway */
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    raise(sig);
    kill(getpid(), sig); /* in case raise() was intercepted */
    return task_fail(ctx, JOB_ERR_TASK, "signal %d did not end the process", sig);
}

static const struct task_def crash_def = {
    "crash",
    "Kills the worker process with args.signal (default SEGV), to try out crash recovery.",
    TASK_KIND_PROCESS,
    TASK_KIND_PROCESS,
    "it kills the process that runs it: only a process executor survives that",
    crash_validate,
    crash_run,
    NULL,
};

const struct task_def *task_crash_def(void)
{
    return &crash_def;
}
