/* utf8.h - UTF-8 validation for untrusted input (cJSON does not check it). */
#ifndef JOBD_UTF8_H
#define JOBD_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* True when s[0..len) is well-formed UTF-8 (no overlongs, no surrogates, no
 * code points past U+10FFFF). On false, *bad_at (if not NULL) is the offset
 * of the first bad byte. */
bool utf8_valid(const char *s, size_t len, size_t *bad_at);

#endif
