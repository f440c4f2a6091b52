/*
 * buf: growable buffer with a front offset. Growth doubles, checked against
 * overflow and the per-buffer limit.
 */
#include "buf.h"
#include "alloc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUF_MIN_CAP 256

void buf_init(buf_t *b, size_t limit)
{
    b->data = NULL;
    b->off = b->len = b->cap = 0;
    b->limit = limit;
}

void buf_free(buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}

void buf_reset(buf_t *b)
{
    b->off = b->len = 0;
}

int buf_reserve(buf_t *b, size_t n)
{
    size_t used = b->len - b->off;
    if (n > SIZE_MAX - used)
        return -1;
    if (b->limit && used + n > b->limit)
        return -1;
    if (b->cap - b->len >= n)
        return 0;
    /* Compact first when the front gap gives enough room. */
    if (b->off && b->cap - used >= n) {
        memmove(b->data, b->data + b->off, used);
        b->len = used;
        b->off = 0;
        return 0;
    }
    size_t want = used + n;
    size_t cap = b->cap ? b->cap : BUF_MIN_CAP;
    while (cap < want) {
        if (cap > SIZE_MAX / 2) {
            cap = want;
            break;
        }
        cap *= 2;
    }
    if (b->limit && cap > b->limit && want <= b->limit)
        cap = b->limit;
    char *p = xmalloc(cap);
    if (used)
        memcpy(p, b->data + b->off, used);
    free(b->data);
    b->data = p;
    b->cap = cap;
    b->len = used;
    b->off = 0;
    return 0;
}

int buf_append(buf_t *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int buf_append_str(buf_t *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

int buf_vprintf(buf_t *b, const char *fmt, va_list ap)
{
    va_list cp;
    va_copy(cp, ap);
    size_t room = b->cap - b->len;
    /* one pass when the text fits where it goes (the usual case), else
     * measure, make room and write it again */
    int n = vsnprintf(room ? b->data + b->len : NULL, room, fmt, cp);
    va_end(cp);
    if (n < 0)
        return -1;
    if (n == 0)
        return 0;
    /* the limit counts the output, not vsnprintf's terminator; with the text
     * already in the room this only checks it (the bytes past the data are
     * not part of the buffer until len moves) */
    if (buf_reserve(b, (size_t)n) < 0)
        return -1;
    if ((size_t)n < room) {
        b->len += (size_t)n;
        return 0;
    }
    if (buf_room(b) > (size_t)n) {
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    } else {
        char *tmp = xmalloc((size_t)n + 1);
        vsnprintf(tmp, (size_t)n + 1, fmt, ap);
        memcpy(b->data + b->len, tmp, (size_t)n);
        free(tmp);
    }
    b->len += (size_t)n;
    return 0;
}

int buf_printf(buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void buf_advance(buf_t *b, size_t n)
{
    if (n > b->cap - b->len)
        n = b->cap - b->len;
    b->len += n;
}

void buf_consume(buf_t *b, size_t n)
{
    size_t used = b->len - b->off;
    if (n >= used) {
        b->off = b->len = 0;
        return;
    }
    b->off += n;
}

char *buf_steal(buf_t *b, size_t *len)
{
    size_t used = b->len - b->off;
    char *p;
    if (b->off == 0 && b->data) {
        p = b->data;
    } else {
        p = xmalloc(used ? used : 1);
        if (used)
            memcpy(p, b->data + b->off, used);
        free(b->data);
    }
    if (len)
        *len = used;
    b->data = NULL;
    b->off = b->len = b->cap = 0;
    return p;
}

long buf_find_lf(const buf_t *b, size_t from)
{
    size_t used = b->len - b->off;
    if (from >= used)
        return -1;
    const char *p = memchr(b->data + b->off + from, '\n', used - from);
    return p ? (long)(p - (b->data + b->off)) : -1;
}
