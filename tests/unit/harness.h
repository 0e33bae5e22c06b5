/* harness.h - a small in-tree unit test harness.
 *
 * Each test file defines `static void test_x(void)` functions and a main()
 * that calls RUN(test_x) for each, then returns harness_finish(). A test fails
 * when any CHECK in it fails; the file prints one line per test and, last,
 * "N passed, N failed" for the runner to sum.
 */
#ifndef JOBD_HARNESS_H
#define JOBD_HARNESS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int harness_passed, harness_failed, harness_cur_failed;
static const char *harness_file = __FILE__;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "    %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);           \
            harness_cur_failed++;                                                                  \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_) {                                                                            \
            fprintf(stderr, "    %s:%d: CHECK failed: %s == %s (%lld != %lld)\n", __FILE__,         \
                    __LINE__, #a, #b, a_, b_);                                                     \
            harness_cur_failed++;                                                                  \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                                         \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                                   \
            fprintf(stderr, "    %s:%d: CHECK failed: %s == %s (\"%s\" != \"%s\")\n", __FILE__,     \
                    __LINE__, #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");                     \
            harness_cur_failed++;                                                                  \
        }                                                                                          \
    } while (0)

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        harness_cur_failed = 0;                                                                    \
        fn();                                                                                      \
        if (harness_cur_failed) {                                                                  \
            harness_failed++;                                                                      \
            printf("not ok - %s\n", #fn);                                                          \
        } else {                                                                                   \
            harness_passed++;                                                                      \
            printf("ok - %s\n", #fn);                                                              \
        }                                                                                          \
        fflush(stdout);                                                                            \
    } while (0)

static inline int harness_finish(void)
{
    (void)harness_file;
    printf("%d passed, %d failed\n", harness_passed, harness_failed);
    return harness_failed ? 1 : 0;
}

#endif
