/* clock.h - time in the units jobd uses everywhere.
 *
 * Wall-clock time is integer milliseconds since the Unix epoch (`_ms` names);
 * monotonic time is nanoseconds from an arbitrary origin (`_ns`). Tests may swap
 * the wall clock through clock_set_wall() (a seam, never used in production).
 */
#ifndef JOBD_CLOCK_H
#define JOBD_CLOCK_H

#include <stddef.h>
#include <stdint.h>

/* RFC 3339 UTC with milliseconds: "2026-11-21T10:00:00.123Z" plus NUL. */
#define CLOCK_RFC3339_LEN 25

int64_t clock_wall_ms(void);
int64_t clock_mono_ns(void);
int64_t clock_mono_ms(void);

/* Replaces the wall clock (NULL restores the real one). Test seam only. */
void clock_set_wall(int64_t (*fn)(void));

/* Writes ms as RFC 3339 into out (at least CLOCK_RFC3339_LEN bytes). */
void clock_format_rfc3339(int64_t ms, char *out);

/* Parses RFC 3339 ("2026-11-21T10:00:00Z", fractional seconds and numeric
 * offsets allowed) into ms since the epoch. Returns 0 or -EINVAL. */
int clock_parse_rfc3339(const char *s, int64_t *out_ms);

#endif
