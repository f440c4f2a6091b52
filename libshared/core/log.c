/*
 * log: key=value lines on stderr (the service supervisor or scripts/run
 * redirects stderr to var/log/<svc>.log). Whole lines per write(2), never
 * more than PIPE_BUF bytes, so lines from several processes sharing a file
 * or a pipe never interleave. The loop's thread holds its debug and info
 * lines until the loop is about to wait (about three lines per message and
 * service were as many system calls).
 */
#include "log.h"
#include "alloc.h"
#include "isotime.h"

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096

static char log_svc[32] = "sendarix";
static char log_inst[64] = "";
static log_level_t log_min = LOG_INFO;

/* lines held by the loop's thread (log_hold_lines) */
static char held[PIPE_BUF];
static size_t held_len;
static int holding;
static pthread_t holder;

/* Whether lines written now are held (the calling thread is the holder). */
static int held_here(void)
{
    return holding && pthread_equal(pthread_self(), holder);
}

static const char *const level_names[] = {"debug", "info", "warn", "error", "fatal"};

void log_init(const char *service, const char *instance)
{
    sx_strlcpy(log_svc, service, sizeof(log_svc));
    sx_strlcpy(log_inst, instance, sizeof(log_inst));
}

void log_set_level(log_level_t level)
{
    log_min = level;
}

int log_level_parse(const char *name, log_level_t *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            *out = (log_level_t)i;
            return 0;
        }
    }
    return -1;
}

const char *log_service(void)
{
    return log_svc;
}

const char *log_instance(void)
{
    return log_inst;
}

static char *put_str(char *p, const char *s)
{
    size_t n = strlen(s);
    memcpy(p, s, n);
    return p + n;
}

/*
 * "ts=<UTC time to the millisecond>Z level=<level> svc=<service> " into
 * line (at least 128 bytes); its length. The part up to the second is
 * formatted once a second per thread: a busy service writes thousands of
 * lines a second, and a formatted date was as costly as the rest of the
 * prefix and the line's own fields together.
 */
static size_t log_prefix(char *line, log_level_t level)
{
    static __thread time_t stamp_sec = (time_t)-1;
    static __thread char stamp[48]; /* "ts=2026-11-28T13:27:58" */
    static __thread size_t stamp_len;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    if (tv.tv_sec != stamp_sec) {
        memcpy(stamp, "ts=", 3);
        isotime_format((uint64_t)tv.tv_sec * 1000, 0, stamp + 3, sizeof(stamp) - 3);
        stamp_len = strlen(stamp) - 1; /* without its "Z": the milliseconds come first */
        stamp_sec = tv.tv_sec;
    }
    unsigned ms = (unsigned)(tv.tv_usec / 1000);
    char *p = line;
    memcpy(p, stamp, stamp_len);
    p += stamp_len;
    *p++ = '.';
    *p++ = (char)('0' + ms / 100);
    *p++ = (char)('0' + ms / 10 % 10);
    *p++ = (char)('0' + ms % 10);
    p = put_str(p, "Z level=");
    p = put_str(p, level_names[level]);
    p = put_str(p, " svc=");
    p = put_str(p, log_svc); /* at most 31 bytes */
    *p++ = ' ';
    return (size_t)(p - line);
}

void log_write(log_level_t level, const char *fmt, ...)
{
    if (level < log_min)
        return;

    char line[LOG_LINE_MAX];
    int n = (int)log_prefix(line, level);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2; /* truncated: still one line */
    line[len++] = '\n';
    if (held_here()) {
        if (held_len + len > sizeof(held))
            log_flush();
        if (len <= sizeof(held)) {
            memcpy(held + held_len, line, len);
            held_len += len;
            if (level >= LOG_WARN)
                log_flush();
            return;
        }
    }
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

static void flush_at_exit(void)
{
    if (held_here())
        log_flush();
}

void log_hold_lines(void)
{
    if (holding)
        return;
    holder = pthread_self();
    holding = 1;
    atexit(flush_at_exit);
}

void log_flush(void)
{
    if (held_len == 0)
        return;
    ssize_t w = write(STDERR_FILENO, held, held_len);
    (void)w;
    held_len = 0;
}

const char *log_quote(char *dst, size_t size, const char *src, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    int plain = len > 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)src[i];
        if (c <= ' ' || c >= 0x7f || c == '"' || c == '\\' || c == '=') {
            plain = 0;
            break;
        }
    }
    if (size == 0)
        return dst;
    if (plain) {
        size_t n = len < size - 1 ? len : size - 1;
        memcpy(dst, src, n);
        dst[n] = '\0';
        return dst;
    }
    size_t o = 0;
    if (o + 1 < size)
        dst[o++] = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)src[i];
        size_t need = (c == '"' || c == '\\') ? 2 : (c < ' ' || c >= 0x7f) ? 4 : 1;
        if (o + need + 2 > size)
            break; /* keep room for the closing quote and the terminator */
        if (c == '"' || c == '\\') {
            dst[o++] = '\\';
            dst[o++] = (char)c;
        } else if (c < ' ' || c >= 0x7f) {
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 15];
        } else {
            dst[o++] = (char)c;
        }
    }
    if (o + 1 < size)
        dst[o++] = '"';
    dst[o] = '\0';
    return dst;
}
