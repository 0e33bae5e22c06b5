#include "id.h"

#include <pthread.h>
#include <string.h>
#include <sys/random.h>

#include "clock.h"

static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/* g_lock guards g_last_ms and g_last_rnd: the last id handed out. */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t g_last_ms;
static uint8_t g_last_rnd[10];

void id_make(int64_t ms, const uint8_t rnd[10], char out[ID_LEN + 1])
{
    uint64_t t = (uint64_t)ms;
    for (int i = 9; i >= 0; i--) {
        out[i] = alphabet[t & 31];
        t >>= 5;
    }
    /* 80 random bits -> 16 characters, 5 bits each, most significant first. */
    int bit = 0;
    for (int i = 0; i < 16; i++) {
        int v = 0;
        for (int b = 0; b < 5; b++, bit++) v = (v << 1) | ((rnd[bit / 8] >> (7 - bit % 8)) & 1);
        out[10 + i] = alphabet[v];
    }
    out[ID_LEN] = '\0';
}

void id_new(char out[ID_LEN + 1])
{
    int64_t ms = clock_wall_ms();
    uint8_t rnd[10];
    pthread_mutex_lock(&g_lock);
    if (ms <= g_last_ms) {
        /* Same millisecond (or the clock stepped back): keep order by incrementing. */
        ms = g_last_ms;
        for (int i = 9; i >= 0; i--)
            if (++g_last_rnd[i] != 0) break;
    } else {
        g_last_ms = ms;
        /* getrandom of 10 bytes from an initialised pool never blocks or fails short. */
        if (getrandom(g_last_rnd, sizeof g_last_rnd, 0) != (ssize_t)sizeof g_last_rnd) {
            uint64_t x = (uint64_t)clock_mono_ns() * 0x9E3779B97F4A7C15ull;
            memcpy(g_last_rnd, &x, 8);
        }
        g_last_rnd[0] &= 0x7f; /* headroom so increments within a ms never wrap */
    }
    memcpy(rnd, g_last_rnd, sizeof rnd);
    pthread_mutex_unlock(&g_lock);
    id_make(ms, rnd, out);
}

bool id_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        if (s[n] == '\0' || !strchr(alphabet, s[n]) || n >= ID_LEN) return false;
    }
    return n == ID_LEN;
}
