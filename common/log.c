#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Written once by log_init() before threads start; read-only afterwards.
 * Atomic so that TSan agrees and a late log_init() in tests is still safe. */
static _Atomic int g_level = LOG_LEVEL_INFO;
static _Atomic int g_format = LOG_FORMAT_TEXT;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

void log_init(enum log_level level, enum log_format format)
{
    atomic_store(&g_level, (int)level);
    atomic_store(&g_format, (int)format);
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (int i = 0; i <= LOG_LEVEL_OFF; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    if (strcmp(s, "warning") == 0) {
        *out = LOG_LEVEL_WARN;
        return 0;
    }
    return -EINVAL;
}

int log_enabled(enum log_level level)
{
    return (int)level >= atomic_load(&g_level);
}

/* Escapes `in` as the inside of a JSON string into out (always terminated). */
static void json_escape(const char *in, char *out, size_t cap)
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p && o + 7 < cap; p++) {
        if (*p == '"' || *p == '\\') {
            out[o++] = '\\';
            out[o++] = (char)*p;
        } else if (*p < 0x20) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", *p);
        } else {
            out[o++] = (char)*p;
        }
    }
    out[o] = '\0';
}

void log_write(enum log_level level, const char *file, int line, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char date[24], when[40];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when, sizeof when, "%.19s.%03dZ", date, (int)(ts.tv_nsec / 1000000));
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    int idx = (int)level < 0 || level > LOG_LEVEL_ERROR ? LOG_LEVEL_ERROR : (int)level;

    if (atomic_load(&g_format) == LOG_FORMAT_JSON) {
        char esc[4096];
        json_escape(msg, esc, sizeof esc);
        fprintf(stderr, "{\"ts\":\"%s\",\"level\":\"%s\",\"src\":\"%s:%d\",\"msg\":\"%s\"}\n", when,
                level_names[idx], base, line, esc);
    } else {
        fprintf(stderr, "%s %-5s %s:%d: %s\n", when, level_names[idx], base, line, msg);
    }
}
