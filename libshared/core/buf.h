/*
 * buf: the one growable byte buffer. Data lives between a read offset and a
 * write offset, so a consumer can take bytes off the front without moving
 * memory each time; the buffer compacts itself when it needs room. Every
 * growth is checked against overflow and against the buffer's own limit, so
 * a peer can never make it grow without bound.
 */
#ifndef SX_BUF_H
#define SX_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct buf {
    char *data;
    size_t off;   /* first unread byte */
    size_t len;   /* bytes in use, from data[0] (so unread = len - off) */
    size_t cap;
    size_t limit; /* 0: no limit beyond SIZE_MAX */
} buf_t;

void buf_init(buf_t *b, size_t limit);
void buf_free(buf_t *b);
void buf_reset(buf_t *b);

/* Make room for n more bytes; -1 if that would pass the limit. */
int buf_reserve(buf_t *b, size_t n);
int buf_append(buf_t *b, const void *p, size_t n);
int buf_append_str(buf_t *b, const char *s);
int buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(buf_t *b, const char *fmt, va_list ap);

static inline const char *buf_head(const buf_t *b)
{
    return b->data + b->off;
}
static inline size_t buf_used(const buf_t *b)
{
    return b->len - b->off;
}
/* Writable tail after buf_reserve(); commit with buf_advance(). */
static inline char *buf_tail(buf_t *b)
{
    return b->data + b->len;
}
static inline size_t buf_room(const buf_t *b)
{
    return b->cap - b->len;
}
void buf_advance(buf_t *b, size_t n);

/* Drop n bytes from the front. */
void buf_consume(buf_t *b, size_t n);

/* Hand the bytes over: returns the memory (caller frees), leaves b empty. */
char *buf_steal(buf_t *b, size_t *len);

/* Offset of the first "\n" in the unread bytes, or -1. */
long buf_find_lf(const buf_t *b, size_t from);

#endif
