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
#include <unistd.h>

#include "../common/log.h"
#include "../core/core.h"
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

static bool is_loopback(const char *host)
{
    return strcmp(host, "127.0.0.1") == 0 || strncmp(host, "127.", 4) == 0 || strcmp(host, "::1") == 0 ||
           strcmp(host, "localhost") == 0;
}

int main(int argc, char **argv)
{
    static struct config cfg; /* large: keep it off the stack */
    char err[1024] = "";
    long ncores = sysconf(_SC_NPROCESSORS_ONLN);
    enum config_result cr = config_load(&cfg, argc, argv, environ, ncores > 0 ? (int)ncores : 1, stdout, err,
                                        sizeof err);
    if (cr == CONFIG_EXIT) return 0;
    if (cr == CONFIG_ERROR) {
        fprintf(stderr, "jobd: %s\n", err);
        return 2;
    }
    log_init(cfg.log_level, cfg.log_format);

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* inherited by every thread created below */
    signal(SIGPIPE, SIG_IGN);

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
    struct store_options so = {.path = cfg.db_path, .sync_full = cfg.sync_full};
    if (lock_fd == -2) {
        /* Create the directory through the store, then lock before any use. */
        if ((rc = store_open(&so, &store)) == 0) {
            store_close(store);
            store = NULL;
        }
        if ((lock_fd = lock_database(cfg.db_path)) < 0) {
            if (lock_fd == -2) fprintf(stderr, "jobd: --db: cannot create '%s.lock': %s\n", cfg.db_path, strerror(errno));
            status = 2;
            goto out;
        }
    }
    if ((rc = store_open(&so, &store)) < 0) {
        fprintf(stderr, "jobd: --db: cannot use database '%s': %s\n", cfg.db_path,
                rc == -EINVAL ? "not a jobd database, or made by a newer jobd" : strerror(-rc));
        status = 2;
        goto out;
    }
    if ((rc = task_registry_new(&tasks)) < 0) {
        LOG_ERROR("cannot create the task registry: %s", strerror(-rc));
        goto out;
    }
    struct core_options co = {.executors = cfg.executors, .n_executors = cfg.n_executors, .tasks = tasks,
                              .store = store};
    if ((rc = core_open(&co, &core)) < 0) {
        LOG_ERROR("cannot start the dispatcher: %s", strerror(-rc));
        goto out;
    }
    if ((rc = srv_start(&cfg, core, store, tasks, &srv)) < 0) {
        fprintf(stderr, "jobd: --listen: cannot listen on %s:%d: %s\n", cfg.listen_host, cfg.listen_port,
                strerror(-rc));
        status = 2;
        goto out;
    }
    if (!cfg.token[0] && !is_loopback(cfg.listen_host))
        LOG_WARN("listening on %s with no token: anyone who can reach this address can run jobs", cfg.listen_host);
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
    if (status == 0) LOG_INFO("stopped cleanly");
    return status;
}
