/*
 * log: one line per event, key=value, printf-checked. Every line starts with
 * ts, level and svc; callers add their ids (sid=, msg=). Values that may hold
 * spaces or client bytes go through log_quote(). Not a metrics system.
 */
#ifndef SX_LOG_H
#define SX_LOG_H

#include <stddef.h>

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_FATAL } log_level_t;

void log_init(const char *service, const char *instance);
void log_set_level(log_level_t level);
int log_level_parse(const char *name, log_level_t *out);
const char *log_service(void);
const char *log_instance(void);

void log_write(log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Hold the calling thread's debug and info lines and write them together,
 * up to PIPE_BUF bytes per write(2), so a batch is never interleaved with
 * another writer's lines. A warning or an error writes what is held and
 * itself at once. The event loop calls log_flush() before it waits, so a
 * line is out before its process sleeps; a crash loses at most one loop
 * turn's lines. Other threads' lines are written at once, as without it.
 */
void log_hold_lines(void);
void log_flush(void);

#define log_debug(...) log_write(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

/*
 * Quote a value for a key=value line: printable ASCII without spaces passes as
 * is; anything else is wrapped in double quotes with \", \\ and \xNN escapes.
 * Writes at most size bytes (always terminated) and returns dst.
 */
const char *log_quote(char *dst, size_t size, const char *src, size_t len);

#endif
