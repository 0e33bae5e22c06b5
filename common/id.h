/* id.h - job and batch ids.
 *
 * ULID-like: 26 Crockford base32 characters, the first 10 the creation time in
 * milliseconds, the rest random. Ids made by one process are strictly
 * increasing (the random part is incremented within a millisecond), and they
 * sort by creation time across restarts, so ORDER BY id is creation order.
 */
#ifndef JOBD_ID_H
#define JOBD_ID_H

#include <stdbool.h>
#include <stdint.h>

#define ID_LEN 26

/* Writes a new id and its NUL into out[ID_LEN + 1]. Thread-safe. */
void id_new(char out[ID_LEN + 1]);

/* Writes the id for time ms with the given 80 random bits (tests). */
void id_make(int64_t ms, const uint8_t rnd[10], char out[ID_LEN + 1]);

/* True when s is exactly ID_LEN characters of the id alphabet (upper case). */
bool id_valid(const char *s);

#endif
