/* replay.c - a main() for the fuzz targets when they are not built with
 * libFuzzer: runs LLVMFuzzerTestOneInput once on each file named on the
 * command line (a directory stands for the files in it, in name order).
 * Prints "ok FILE" per input and, last, "N passed, 0 failed"; an input that
 * crashes the target ends the process (the caller counts that as a failure
 * and names the last file). Exit status 2 for an unreadable file.
 */
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int passed, unreadable;

static void run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    if (!f) goto bad;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            uint8_t *b = realloc(buf, cap);
            if (!b) goto bad;
            buf = b;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) break;
    }
    if (ferror(f)) goto bad;
    fclose(f);
    fprintf(stderr, "run %s\n", path); /* the last one named is the culprit of a crash */
    /* libFuzzer hands over a buffer of exactly len bytes: so does this. */
    uint8_t *exact = malloc(len ? len : 1);
    if (!exact) goto bad_closed;
    memcpy(exact, buf, len);
    free(buf);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    printf("ok %s\n", path);
    passed++;
    return;
bad:
    if (f) fclose(f);
bad_closed:
    free(buf);
    fprintf(stderr, "replay: cannot read %s: %s\n", path, strerror(errno));
    unreadable++;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static void run_path(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        struct dirent **ents = NULL;
        int n = scandir(path, &ents, NULL, by_name);
        for (int i = 0; i < n; i++) {
            char sub[4096];
            if (ents[i]->d_name[0] != '.') {
                snprintf(sub, sizeof sub, "%s/%s", path, ents[i]->d_name);
                run_path(sub);
            }
            free(ents[i]);
        }
        free(ents);
        return;
    }
    run_file(path);
}

int main(int argc, char **argv)
{
    LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) run_path(argv[i]);
    printf("%d passed, %d failed\n", passed, unreadable);
    return unreadable ? 2 : 0;
}
