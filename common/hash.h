/* hash.h - the one string hash of jobd: FNV-1a, 64 bits. For hash tables of
 * ids, names and keys (not for anything an attacker should not collide:
 * every table it serves is bounded or keyed by our own ids). */
#ifndef JOBD_HASH_H
#define JOBD_HASH_H

#include <stdint.h>

static inline uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

#endif
