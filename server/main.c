/* main.c - start-up and shutdown of jobd.
 *
 * Start: configuration (exit 2 on a bad setting), logging, the store
 * (migrations), the task registry, the core (executors, recovery), then the
 * HTTP server. Signals are blocked in every thread and taken synchronously
 * with sigwait() here, so no signal handler runs at all. The first SIGTERM or
 * SIGINT drains (readyz turns 503, submits get 503, running jobs get the grace
 * period, the store is flushed) and exits 0; a second one exits at once,
 * leaving SQLite's WAL to keep the database consistent.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>

#include "../common/log.h"
#include "../core/core.h"
#include "../executors/exec.h"
#include "../storage/store.h"
#include "../tasks/task.h"
#include "config.h"
#include "server.h"

extern char **environ;

/* Waits for a second signal while draining, and then exits at once. */
static void *second_signal_main(void *arg)
{
    sigset_t *set = arg;
    int sig = 0;
    if (sigwait(set, &sig) == 0) {
        LOG_WARN("second signal (%s): exiting now; the database stays consistent, running jobs are retried at "
                 "the next start",
                 strsignal(sig));
        _exit(1);
    }
    return NULL;
}

/* Takes an exclusive lock on DB.lock so that two servers never share one
 * database (each would recover the other's running jobs). The descriptor is
 * kept open for the life of the process; the kernel drops the lock at exit,
 * even after kill -9. Returns the fd, or -1 with a message printed. */
static int lock_database(const char *db_path)
{
    char path[4200];
    snprintf(path, sizeof path, "%s.lock", db_path);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        /* The directory may not exist yet: the store creates it, so retry after. */
        return -2;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        fprintf(stderr, "jobd: --db: database '%s' is in use by another jobd process\n", db_path);
        close(fd);
        return -1;
    }
    return fd;
}

/* Why the database cannot be used, for the start-up message (exit status 2):
 * the errno store_open or the recovery in core_open returned, in words an
 * operator can act on. */
static const char *db_error_text(int rc, char *buf, size_t len)
{
    switch (rc) {
    case -EINVAL: return "not a jobd database, or made by a newer jobd";
    case -EROFS:
    case -EACCES:
        snprintf(buf, len,
                 "the file or its directory is not writable (%s); jobd writes the file and creates -wal, -shm "
                 "and .lock files beside it",
                 strerror(-rc));
        return buf;
    case -EIO:
        return "the file is damaged (truncated or corrupted) or cannot be read; restore it from a backup";
    case -ENOSPC: return "no space left on its file system";
    default: return strerror(-rc);
    }
}

/* Builds the task registry from the configuration: the built-ins (exec as
 * --allow-exec says), the config file's command tasks, then the plugins in
 * the order given. Both the server and each process-executor worker run this,
 * so they offer the same tasks. Returns 0, or -1 with a message in err
 * (exit status 2: the configuration is wrong); *out is NULL on failure. */
static int tasks_build(const struct config *cfg, struct task_registry **out, char *err, size_t errlen)
{
    struct task_registry *tasks = NULL;
    struct task_registry_options to = {.allow_exec = cfg->allow_exec};
    char msg[1024];
    int rc = task_registry_new(&to, &tasks);
    if (rc < 0) {
        snprintf(err, errlen, "cannot create the task registry: %s", strerror(-rc));
        goto out;
    }
    if (task_register_commands(tasks, cfg->commands, environ, msg, sizeof msg) < 0) {
        snprintf(err, errlen, "%.300s: %.700s", cfg->config_file[0] ? cfg->config_file : "config", msg);
        rc = -1;
        goto out;
    }
    for (int i = 0; i < cfg->n_plugins; i++) {
        if ((rc = task_load_plugin(tasks, cfg->plugins[i], err, errlen)) < 0) goto out;
    }
    rc = 0;
out:
    if (rc < 0) {
        task_registry_free(tasks);
        tasks = NULL;
    }
    *out = tasks;
    return rc < 0 ? -1 : 0;
}

#define WORKER_FLAG "--internal-worker"
#define WORKER_FD 3 /* the socketpair end a process executor hands its worker */

/* A process-executor worker: the same binary, started by the server as
 * `jobd --internal-worker <the server's own arguments>`, so it loads the
 * same configuration and tasks (plugins, command tasks) as the server. */
static int worker_main(int argc, char **argv)
{
    static struct config cfg;
    char err[1024] = "";
    struct task_registry *tasks = NULL;
    argv[1] = argv[0]; /* drop the flag: the rest is the server's command line */
    if (config_load(&cfg, argc - 1, argv + 1, environ, 1, stderr, err, sizeof err) != CONFIG_OK) {
        fprintf(stderr, "jobd worker: %s\n", err);
        return 2;
    }
    log_init(cfg.log_level, cfg.log_format);
    if (tasks_build(&cfg, &tasks, err, sizeof err) < 0) {
        fprintf(stderr, "jobd worker: %s\n", err);
        config_free(&cfg);
        return 2;
    }
    int status = exec_worker_main(WORKER_FD, tasks);
    task_registry_free(tasks);
    config_free(&cfg);
    return status;
}

int main(int argc, char **argv)
{
    static struct config cfg; /* large: keep it off the stack */
    char err[1024] = "";
    if (argc > 1 && strcmp(argv[1], WORKER_FLAG) == 0) return worker_main(argc, argv);
    long ncores = sysconf(_SC_NPROCESSORS_ONLN);
    enum config_result cr = config_load(&cfg, argc, argv, environ, ncores > 0 ? (int)ncores : 1, stdout, err,
                                        sizeof err);
    if (cr == CONFIG_EXIT) return 0;
    if (cr == CONFIG_ERROR) {
        fprintf(stderr, "jobd: %s\n", err);
        return 2;
    }
    log_init(cfg.log_level, cfg.log_format);

    /* Workers re-execute this very binary (even if the file was replaced since). */
    const char **worker_argv = calloc((size_t)argc + 2, sizeof *worker_argv);
    if (!worker_argv) return 1;
    worker_argv[0] = "/proc/self/exe";
    worker_argv[1] = WORKER_FLAG;
    for (int i = 1; i < argc; i++) worker_argv[i + 1] = argv[i];

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* inherited by every thread created below */
    signal(SIGPIPE, SIG_IGN);
    /* Every open connection is a descriptor, and an SSE client holds one for
     * as long as it listens: the usual soft limit of 1024 would cap the
     * server near 1,000 clients, well under --max-connections. The soft
     * limit may be raised up to the hard one without privileges. */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &nofile) != 0) LOG_WARN("cannot raise the open-file limit: %s", strerror(errno));
    }

    int status = 1, rc;
    struct store *store = NULL;
    struct task_registry *tasks = NULL;
    struct core *core = NULL;
    struct srv *srv = NULL;

    int lock_fd = lock_database(cfg.db_path);
    if (lock_fd == -1) {
        status = 2;
        goto out;
    }
    struct store_options so = {.path = cfg.db_path, .sync_full = cfg.sync_full, .event_log = cfg.event_log};
    if (lock_fd == -2) {
        /* Create the directory through the store, then lock before any use. */
        if ((rc = store_open(&so, &store)) == 0) {
            store_close(store);
            store = NULL;
        }
        if ((lock_fd = lock_database(cfg.db_path)) < 0) {
            if (lock_fd == -2)
                fprintf(stderr, "jobd: --db: cannot create '%s.lock': %s (the database's directory must be writable)\n",
                        cfg.db_path, strerror(errno));
            status = 2;
            goto out;
        }
    }
    if ((rc = store_open(&so, &store)) < 0) {
        fprintf(stderr, "jobd: --db: cannot use database '%s': %s\n", cfg.db_path,
                db_error_text(rc, err, sizeof err));
        status = 2;
        goto out;
    }
    if (tasks_build(&cfg, &tasks, err, sizeof err) < 0) {
        fprintf(stderr, "jobd: %s\n", err);
        status = 2;
        goto out;
    }
    struct core_options co = {.executors = cfg.executors,
                              .n_executors = cfg.n_executors,
                              .tasks = tasks,
                              .store = store,
                              .worker_argv = worker_argv,
                              .retention_ms = cfg.retention_ms,
                              .event_buffer = cfg.event_buffer,
                              .resident_jobs = cfg.resident_jobs,
                              .callback_secret = cfg.callback_secret,
                              .callback_timeout_ms = cfg.callback_timeout_ms,
                              .callback_max_attempts = cfg.callback_attempts,
                              .callback_backoff_ms = cfg.callback_backoff_ms,
                              .retention_failed_ms = cfg.retention_failed_ms,
                              .prune_interval_ms = cfg.prune_interval_ms};
    if ((rc = core_open(&co, &core)) < 0) {
        /* Recovery reads every pending job: a file whose header is sound but
         * whose pages are damaged fails here, not in store_open. -EIO and
         * -ENOSPC come only from the store, so they name the database. */
        if (rc == -EIO || rc == -ENOSPC) {
            fprintf(stderr, "jobd: --db: cannot use database '%s': %s\n", cfg.db_path,
                    db_error_text(rc, err, sizeof err));
            status = 2;
        } else {
            LOG_ERROR("cannot start the dispatcher: %s", strerror(-rc));
        }
        goto out;
    }
    if ((rc = srv_start(&cfg, core, store, tasks, &srv)) < 0) {
        fprintf(stderr, "jobd: --listen: cannot listen on %s:%d: %s\n", cfg.listen_host, cfg.listen_port,
                strerror(-rc));
        status = 2;
        goto out;
    }
    /* config_load refused a non-loopback address without a token unless
     * --insecure-no-auth was given (SPEC §3). */
    if (!cfg.token[0] && !config_listen_is_loopback(cfg.listen_host))
        LOG_WARN("--insecure-no-auth: listening on %s with no token: anyone who can reach this address can run "
                 "jobs",
                 cfg.listen_host);
    else if (!cfg.token[0])
        LOG_INFO("no token configured: listening on loopback only");
    /* Scripts and tests read the port from this line: it is printed at every
     * level but "off" (log_write directly, bypassing the threshold). */
    if (cfg.log_level != LOG_LEVEL_OFF)
        log_write(LOG_LEVEL_INFO, __FILE__, __LINE__, "jobd listening on http://%s%s%s:%d (database %s, %d executor(s))",
             strchr(cfg.listen_host, ':') ? "[" : "", cfg.listen_host, strchr(cfg.listen_host, ':') ? "]" : "",
             srv_port(srv), cfg.db_path, cfg.n_executors);

    int sig = 0;
    while (sigwait(&set, &sig) != 0) {
    }
    LOG_INFO("%s: draining (grace %.1f s)", strsignal(sig), (double)cfg.grace_ms / 1000.0);
    pthread_t watcher;
    if (pthread_create(&watcher, NULL, second_signal_main, &set) == 0) pthread_detach(watcher);
    core_drain(core, cfg.grace_ms);
    status = 0;
out:
    srv_stop(srv);
    core_close(core);
    store_close(store);
    task_registry_free(tasks);
    free(worker_argv);
    config_free(&cfg);
    if (status == 0) LOG_INFO("stopped cleanly");
    return status;
}
