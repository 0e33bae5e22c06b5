/* fuzz_worker_wire.c - the process executor's message decoder
 * (executors/wire.c), fed the way process.c and worker.c feed it.
 *
 * Input: byte 0 picks the read size (1..256 bytes per "read"); the rest is
 * the byte stream a worker (or the server) would send. The stream goes
 * through an exec_wire_buf in reads of that size, and every complete frame
 * is decoded as slot_read() does, until the stream turns invalid.
 *
 * Oracles beyond the sanitizers: a decoded message re-encoded by the real
 * encoder gives back exactly the frame's bytes (the format has one encoding
 * per message); frame_len never exceeds what was available when 1 is
 * returned; the string helpers agree with the decoded strings.
 */
#include <errno.h>
#include <string.h>

#include "../../executors/wire.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return 0;
}

/* Re-encodes m into a new buffer; returns 0 or a negative errno. */
static int reencode(const struct exec_wire_msg *m, struct exec_wire_buf *b)
{
    char *id = NULL, *task = NULL, *args = NULL, *msg = NULL, *result = NULL, *emsg = NULL;
    int rc = -ENOMEM;
    if (exec_wire_str_dup(&m->id, &id) < 0 || exec_wire_str_dup(&m->task, &task) < 0 ||
        exec_wire_str_dup(&m->args, &args) < 0 || exec_wire_str_dup(&m->message, &msg) < 0 ||
        exec_wire_str_dup(&m->result, &result) < 0 || exec_wire_str_dup(&m->error_message, &emsg) < 0)
        goto out;
    FUZZ_CHECK(id && exec_wire_str_eq(&m->id, id));
    switch (m->type) {
    case WIRE_JOB: rc = exec_wire_put_job(b, id, task, args, m->timeout_ms); break;
    case WIRE_SKIP:
    case WIRE_SKIPPED: rc = exec_wire_put_id(b, m->type, id); break;
    case WIRE_STARTED: rc = exec_wire_put_started(b, id, m->pid, m->started_at_ms); break;
    case WIRE_PROGRESS: rc = exec_wire_put_progress(b, id, m->fraction, msg); break;
    case WIRE_DONE:
        rc = exec_wire_put_done(b, id, m->ok, result, m->error_type, emsg, m->finished_at_ms, m->run_us);
        break;
    default: FUZZ_CHECK(!"decoded a message of an unknown type");
    }
out:
    free(id);
    free(task);
    free(args);
    free(msg);
    free(result);
    free(emsg);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t chunk = 1 + (size_t)data[0];
    const uint8_t *in = data + 1;
    size_t left = size - 1;
    struct exec_wire_buf b = {0};
    bool invalid = false;
    while (left > 0 && !invalid) {
        size_t n = left < chunk ? left : chunk;
        if (exec_wire_buf_reserve(&b, n) < 0) break;
        memcpy(b.data + b.len, in, n);
        b.len += n;
        in += n;
        left -= n;
        while (b.len > b.off) {
            struct exec_wire_msg m;
            size_t frame = 0, avail = b.len - b.off;
            int rc = exec_wire_decode(b.data + b.off, avail, &m, &frame);
            if (rc < 0) {
                FUZZ_CHECK(rc == -EPROTO || rc == -EMSGSIZE);
                invalid = true;
                break;
            }
            if (rc == 0) {
                FUZZ_CHECK(frame > avail && frame >= WIRE_HEADER && frame <= WIRE_HEADER + WIRE_MAX_FRAME);
                /* process.c reserves the rest of the frame here; reserving
                 * only what the input can still fill keeps RSS bounded. */
                size_t want = frame - avail;
                if (want > left) want = left;
                if (exec_wire_buf_reserve(&b, want) < 0) invalid = true;
                break;
            }
            FUZZ_CHECK(rc == 1 && frame > WIRE_HEADER && frame <= avail);
            FUZZ_CHECK(m.id.present && m.id.len > 0 && m.id.len <= WIRE_ID_MAX);
            struct exec_wire_buf again = {0};
            int erc = reencode(&m, &again);
            FUZZ_CHECK(erc == 0 || erc == -ENOMEM);
            if (erc == 0) {
                FUZZ_CHECK(again.len == frame);
                FUZZ_CHECK(memcmp(again.data, b.data + b.off, frame) == 0);
            }
            exec_wire_buf_fini(&again);
            exec_wire_buf_consume(&b, frame);
        }
    }
    exec_wire_buf_fini(&b);
    return 0;
}
