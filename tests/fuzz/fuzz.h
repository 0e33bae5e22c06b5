/* fuzz.h - what the libFuzzer targets of tests/fuzz share.
 *
 * Each target defines LLVMFuzzerTestOneInput (and LLVMFuzzerInitialize when
 * it needs set-up done once). They are built two ways (see the Makefile):
 * with clang and -fsanitize=fuzzer,address,undefined for `make fuzz`, and
 * with replay.c, a main() that feeds files to them, by the variant's own
 * compiler for `make fuzz-regress` (so `make test` needs no clang).
 *
 * A target must not leak, and must leave no global state behind from one
 * input to the next: anything made once lives in Initialize and is freed at
 * exit (fuzz_atexit), anything made per input is freed before returning.
 * A target aborts (FUZZ_CHECK) when an invariant of the code under test does
 * not hold: that is a finding, like a sanitizer report.
 */
#ifndef JOBD_FUZZ_H
#define JOBD_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
