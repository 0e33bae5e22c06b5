/* seeds_wire.c - writes the seed corpus of fuzz_worker_wire with the real
 * encoder (executors/wire.c), so the seeds are the frames workers send:
 *
 *   cc -std=c11 -D_GNU_SOURCE -o /tmp/seeds_wire tests/fuzz/seeds_wire.c executors/wire.c && \
 *     /tmp/seeds_wire tests/fuzz/corpus/fuzz_worker_wire
 *
 * Each seed is one read-size byte (see fuzz_worker_wire.c) and a stream of
 * one or more frames. Not part of the build: rerun it when the format changes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../executors/wire.h"

#define ID "01M7Y9B187D9P0KKXS4XTW3P67"

static const char *g_dir;

static void save(const char *name, unsigned char chunk, struct exec_wire_buf *b)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fputc(chunk, f) == EOF || fwrite(b->data + b->off, 1, b->len - b->off, f) != b->len - b->off ||
        fclose(f) != 0) {
        perror(path);
        exit(1);
    }
    exec_wire_buf_fini(b);
}

int main(int argc, char **argv)
{
    struct exec_wire_buf b = {0};
    if (argc != 2) return 2;
    g_dir = argv[1];
    exec_wire_put_job(&b, ID, "sleep", "{\"seconds\":0.2}", 10000);
    save("job", 255, &b);
    exec_wire_put_job(&b, ID, "noop", "{}", 0);
    save("job-no-timeout-bytewise", 0, &b);
    exec_wire_put_id(&b, WIRE_SKIP, ID);
    save("skip", 255, &b);
    exec_wire_put_id(&b, WIRE_SKIPPED, "x");
    save("skipped-short-id", 7, &b);
    exec_wire_put_started(&b, ID, 4242, 1763712000123LL);
    save("started", 255, &b);
    exec_wire_put_started(&b, ID, -1, -9223372036854775807LL - 1);
    save("started-extremes", 3, &b);
    exec_wire_put_progress(&b, ID, 0.5, "halfway");
    save("progress", 255, &b);
    exec_wire_put_progress(&b, ID, -0.0, NULL);
    save("progress-no-message", 255, &b);
    exec_wire_put_progress(&b, ID, 1e308, "\xc3\xa9t\xc3\xa9");
    save("progress-huge-utf8", 15, &b);
    exec_wire_put_done(&b, ID, true, "{\"slept\":0.2}", 0, NULL, 1763712000456LL, 200123);
    save("done-ok", 255, &b);
    exec_wire_put_done(&b, ID, false, NULL, 2, "boom", 1763712000456LL, 5);
    save("done-failed", 255, &b);
    exec_wire_put_done(&b, ID, false, NULL, 255, "", 0, 0);
    save("done-bad-error-type", 1, &b);
    /* A conversation: what one worker sends for two jobs, one skipped. */
    exec_wire_put_started(&b, ID, 77, 1763712000000LL);
    exec_wire_put_progress(&b, ID, 0.25, NULL);
    exec_wire_put_progress(&b, ID, 0.75, "almost");
    exec_wire_put_done(&b, ID, true, "null", 0, NULL, 1763712000999LL, 999000);
    exec_wire_put_id(&b, WIRE_SKIPPED, "01M7Y9B187D9P0KKXS4XTW3P68");
    save("conversation", 31, &b);
    exec_wire_put_job(&b, ID, "echo", "\"hello\"", 1);
    exec_wire_put_job(&b, "01M7Y9B187D9P0KKXS4XTW3P68", "square", "{\"n\":12}", 1);
    exec_wire_put_id(&b, WIRE_SKIP, "01M7Y9B187D9P0KKXS4XTW3P68");
    save("server-stream", 63, &b);
    /* Hand-made edges: a truncated frame, a zero length, a huge length, trailing bytes. */
    exec_wire_put_done(&b, ID, true, "{}", 0, NULL, 1, 1);
    b.len -= 3;
    save("done-truncated", 255, &b);
    static const unsigned char zero[] = {0, 0, 0, 0, 16};
    static const unsigned char huge[] = {0xff, 0xff, 0xff, 0x7f, 16};
    static const unsigned char trailing[] = {7, 0, 0, 0, 2, 1, 0, 0, 0, 'a', 'b'};
    static const unsigned char absent_id[] = {5, 0, 0, 0, 19, 0xff, 0xff, 0xff, 0xff};
    static const unsigned char nul_id[] = {7, 0, 0, 0, 19, 2, 0, 0, 0, 'a', 0};
    static const unsigned char bad_bool[] = {30, 0, 0, 0, 18, 1, 0, 0, 0, 'a', 2, 0xff, 0xff, 0xff, 0xff, 0,
                                             0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    struct { const char *name; const unsigned char *p; size_t n; } raw[] = {
        {"len-zero", zero, sizeof zero},           {"len-huge", huge, sizeof huge},
        {"trailing-bytes", trailing, sizeof trailing}, {"absent-id", absent_id, sizeof absent_id},
        {"nul-in-id", nul_id, sizeof nul_id},      {"bad-bool", bad_bool, sizeof bad_bool},
    };
    for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
        if (exec_wire_buf_reserve(&b, raw[i].n) < 0) return 1;
        memcpy(b.data + b.len, raw[i].p, raw[i].n);
        b.len += raw[i].n;
        save(raw[i].name, 255, &b);
    }
    return 0;
}
