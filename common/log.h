/* log.h - the one logging module.
 *
 * One line per event to stderr, written with a single fprintf so lines from
 * different threads never interleave. Level-checked macros carry file:line.
 * log_init() is called once at start-up, before any thread exists; after that
 * the level and format are only read.
 */
#ifndef JOBD_LOG_H
#define JOBD_LOG_H

enum log_level { LOG_LEVEL_DEBUG = 0, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR, LOG_LEVEL_OFF };
enum log_format { LOG_FORMAT_TEXT = 0, LOG_FORMAT_JSON };

/* Sets the threshold and format. Call before starting threads. */
void log_init(enum log_level level, enum log_format format);

/* Parses "debug", "info", "warn", "error", "off". Returns 0 or -EINVAL. */
int log_level_parse(const char *s, enum log_level *out);

/* Nonzero when messages at `level` are printed. */
int log_enabled(enum log_level level);

void log_write(enum log_level level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define LOG_AT(lvl, ...)                                                                  \
    do {                                                                                  \
        if (log_enabled(lvl)) log_write((lvl), __FILE__, __LINE__, __VA_ARGS__);          \
    } while (0)
#define LOG_DEBUG(...) LOG_AT(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define LOG_INFO(...) LOG_AT(LOG_LEVEL_INFO, __VA_ARGS__)
#define LOG_WARN(...) LOG_AT(LOG_LEVEL_WARN, __VA_ARGS__)
#define LOG_ERROR(...) LOG_AT(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
