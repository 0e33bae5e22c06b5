/* process_int.h - private to the process executor (executors/process.c,
 * process_io.c): its constants, its state and the functions the two files
 * share. executors/process.c's DESIGN comment says how it works; the lock
 * rules are at struct proc_exec. Cross-file names start `proc__`.
 */
#ifndef JOBD_PROCESS_INT_H
#define JOBD_PROCESS_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "exec_int.h"
#include "wire.h"

#define PIPELINE_DEPTH 8                  /* jobs in flight per worker, at most */
#define PIPELINE_FAST_US 500              /* a task that may be pipelined runs in less, lately */
#define KILL_GRACE_NS (800 * MS)          /* SIGTERM, then SIGKILL after this (process.c, DESIGN) */
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

/* process.c */
uint64_t proc__ev_data(enum ev_kind kind, int index, uint32_t gen);
void proc__slot_respawn(struct proc_exec *pe, struct slot *s, bool quick_death);
struct speed *proc__speed_of(struct proc_exec *pe, const struct task_def *def);

/* process_io.c: ending jobs, a worker's messages, reading, writing and
 * reaping a worker (the I/O thread, except where a name ends in _locked). */
void proc__finish(struct proc_exec *pe, struct job *job, enum exec_outcome outcome, bool started);
struct flight proc__flight_take_locked(struct proc_exec *pe, struct slot *s, int i);
void proc__protocol_error(struct proc_exec *pe, struct slot *s, const char *what);
void proc__set_error(struct job *job, enum job_error_type type, const char *msg);
void proc__slot_flush(struct proc_exec *pe, struct slot *s);
void proc__slot_kill(struct proc_exec *pe, struct slot *s, enum kill_reason why, const char *note);
void proc__slot_read(struct proc_exec *pe, struct slot *s, int max_rounds);
void proc__slot_reap(struct proc_exec *pe, struct slot *s);

#endif
