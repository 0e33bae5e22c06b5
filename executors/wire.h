/* wire.h - private to executors/: what a process executor (process.c) and its
 * workers (worker.c) share: the messages between them, and how the server
 * starts and ends a worker process.
 *
 * Framing, both directions: `u32 length (little endian) | u8 type | payload`,
 * where length counts the type byte and the payload (so it is >= 1) and is at
 * most WIRE_MAX_FRAME. Payload fields, in the fixed order of each type:
 *
 *   str  u32 byte count (LE) then the bytes, no NUL inside; 0xffffffff = absent
 *   i64  8 bytes LE (two's complement); f64 the 8 bytes of the IEEE double, LE
 *   u8   1 byte
 *
 *   server -> worker
 *     JOB      str id, str task, str args (JSON text), i64 timeout_ms
 *     SKIP     str id        "if you have not started it, do not": answered by
 *                            SKIPPED, or not at all when the job already started
 *   worker -> server
 *     STARTED  str id, i64 pid, i64 started_at_ms (the worker's wall clock)
 *     PROGRESS str id, f64 fraction (finite), str? message
 *     DONE     str id, u8 ok (0/1), str? result (JSON text), u8 error_type
 *              (enum job_error_type), str? error_message, i64 finished_at_ms,
 *              i64 run_us (how long the task ran, on the worker's clock)
 *     SKIPPED  str id
 *
 * A frame must be consumed exactly by its fields: trailing bytes, a short
 * field, an unknown type, a required string that is absent, an id longer than
 * WIRE_ID_MAX or empty, a NUL inside a string or a boolean other than 0/1 make
 * the whole stream invalid (there is no resynchronising a byte stream).
 * The format has no version: a server and its workers are always the same
 * binary (/proc/self/exe). To change a message, change its encoder, the
 * decoder and this table together; tests/unit/test_process.c round-trips and
 * fuzzes every type.
 */
#ifndef JOBD_WIRE_H
#define JOBD_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WIRE_HEADER 4u                 /* the length field */
#define WIRE_MAX_FRAME (64u << 20)     /* bytes after the length field, at most */
#define WIRE_ID_MAX 64u                /* bytes of an id */

enum exec_wire_type {
    WIRE_JOB = 1,
    WIRE_SKIP = 2,
    WIRE_STARTED = 16,
    WIRE_PROGRESS = 17,
    WIRE_DONE = 18,
    WIRE_SKIPPED = 19,
};

/* A string inside a decoded frame: not NUL-terminated, valid while the buffer
 * it was decoded from is. */
struct exec_wire_str {
    const char *p;
    uint32_t len;
    bool present;
};

/* One decoded message; only the fields of its type are set (others zero). */
struct exec_wire_msg {
    enum exec_wire_type type;
    struct exec_wire_str id;
    struct exec_wire_str task, args;      /* JOB */
    int64_t timeout_ms;              /* JOB */
    int64_t pid, started_at_ms;      /* STARTED */
    double fraction;                 /* PROGRESS */
    struct exec_wire_str message;         /* PROGRESS, optional */
    bool ok;                         /* DONE */
    struct exec_wire_str result;          /* DONE, optional */
    uint8_t error_type;              /* DONE */
    struct exec_wire_str error_message;   /* DONE, optional */
    int64_t finished_at_ms, run_us;  /* DONE */
};

/* Decodes the frame at the start of buf[0..len). Never reads outside it and
 * trusts no length in it. Returns
 *   1  a message: *out is filled (its strings point into buf) and *frame_len
 *      is the number of bytes it took;
 *   0  buf holds only part of a frame: *frame_len is the total size that frame
 *      will have once complete (WIRE_HEADER while the length is not yet known);
 *   -EMSGSIZE  the length exceeds WIRE_MAX_FRAME (or is 0);
 *   -EPROTO    the frame is complete but not a valid message. */
int exec_wire_decode(const uint8_t *buf, size_t len, struct exec_wire_msg *out, size_t *frame_len);

/* A growable byte buffer: data[off..len) is pending (unread or unsent). */
struct exec_wire_buf {
    uint8_t *data;
    size_t off, len, cap;
};

/* Makes room for `more` bytes after len (compacting first). 0 or -ENOMEM. */
int exec_wire_buf_reserve(struct exec_wire_buf *b, size_t more);
/* Marks n pending bytes as used; resets the buffer when none remain. */
void exec_wire_buf_consume(struct exec_wire_buf *b, size_t n);
void exec_wire_buf_fini(struct exec_wire_buf *b);

/* Encoders: append one frame to b. Return 0, -EMSGSIZE when the frame would
 * exceed WIRE_MAX_FRAME (b unchanged), or -ENOMEM (b unchanged). Strings are C
 * strings; NULL means absent where the field is optional. */
int exec_wire_put_job(struct exec_wire_buf *b, const char *id, const char *task, const char *args, int64_t timeout_ms);
int exec_wire_put_id(struct exec_wire_buf *b, enum exec_wire_type type, const char *id); /* SKIP or SKIPPED */
int exec_wire_put_started(struct exec_wire_buf *b, const char *id, int64_t pid, int64_t started_at_ms);
int exec_wire_put_progress(struct exec_wire_buf *b, const char *id, double fraction, const char *message);
int exec_wire_put_done(struct exec_wire_buf *b, const char *id, bool ok, const char *result, uint8_t error_type,
                  const char *error_message, int64_t finished_at_ms, int64_t run_us);

/* Copies s into a new NUL-terminated string in *out (NULL when absent).
 * Returns 0 or -ENOMEM. */
int exec_wire_str_dup(const struct exec_wire_str *s, char **out);
/* True when s is present and equal to the C string c. */
bool exec_wire_str_eq(const struct exec_wire_str *s, const char *c);

/* ---- worker processes (server side, worker.c) ---- */

struct exec_worker_proc {
    int pid;   /* also its process group id */
    int sock;  /* the server's end of the socketpair: close-on-exec, non-blocking */
    int pidfd; /* readable once the worker exits; -1 on kernels without pidfd_open */
};

/* Starts argv (argv[0] a path) as a worker: its end of a socketpair as fd 3,
 * stdin /dev/null, stdout and stderr inherited, nothing else open, signal mask
 * empty and dispositions default, in a new process group. memory_mb > 0 sets
 * RLIMIT_AS; cpu_seconds > 0 sets the soft RLIMIT_CPU, which the worker then
 * re-arms before each job as a per-job budget. Both are applied before this
 * returns, so before any job can be sent. Returns 0, or -errno (-ENOENT for a
 * missing binary). */
int exec_worker_spawn(char *const *argv, long memory_mb, long cpu_seconds, struct exec_worker_proc *out);

/* Ends a worker for good: closes its socket if still open (a worker exits at
 * EOF), waits up to wait_ns for it to exit, SIGKILLs whatever is left in its
 * process group (safe: the pid, hence the pgid, stays reserved until reaped),
 * reaps it and closes the pidfd. Sets *status to the waitpid status. Returns
 * 0, or -errno from waitpid (-ECHILD when someone set SIGCHLD to SIG_IGN). */
int exec_worker_reap(struct exec_worker_proc *w, int64_t wait_ns, int *status);

#endif
