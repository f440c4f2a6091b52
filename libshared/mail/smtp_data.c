/*
 * smtp_data: dot-unstuffing reader and dot-stuffing writer.
 */
#include "smtp_data.h"

#include <stdint.h>
#include <string.h>
/* SX_DATA_PORTABLE: the build for other machines, tested on this one too */
#if defined(__SSE2__) && !defined(SX_DATA_PORTABLE)
#define DATA_SSE2 1
#include <emmintrin.h>
#elif defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define DATA_SWAR 1
#endif

enum {
    DR_LINE_START = 0, /* after CRLF (or at the start) */
    DR_IN_LINE,
    DR_CR,             /* saw CR, want LF */
    DR_DOT,            /* saw "." at line start */
    DR_DOT_CR,         /* saw ".\r" at line start */
};

void data_reader_init(data_reader_t *r, uint64_t max_size, size_t line_max)
{
    memset(r, 0, sizeof(*r));
    r->max_size = max_size;
    r->line_max = line_max ? line_max : DATA_LINE_MAX;
}

static int emit(data_reader_t *r, const char *p, size_t n, buf_t *out)
{
    if (r->too_big)
        return 0;
    if (r->max_size && r->size + n > r->max_size) {
        /* keep the first max_size octets and drop the rest, so what is kept
         * does not depend on how the bytes were split into reads */
        r->too_big = 1;
        n = (size_t)(r->max_size - r->size);
        if (n == 0)
            return 0;
    }
    r->size += n;
    return buf_append(out, p, n);
}

static void count_line(data_reader_t *r, size_t n)
{
    r->line_len += n;
    if (r->line_len > r->line_max)
        r->line_too_long = 1;
}

/*
 * Where the run of bytes from i that holds no CR or LF ends (n when it
 * does not), and whether it holds a byte >= 0x80. A body's lines are
 * mostly such runs, and two memchr calls and an 8-bit pass per line were
 * the larger part of ingress's time for big messages: the runs are taken
 * sixteen bytes at a time with SSE2 (every x86-64), else eight at a time in
 * a 64-bit word (little-endian machines), the 8-bit check in the same
 * pass; the tail byte by byte. Linear whatever the text.
 */
static size_t line_run(const char *p, size_t i, size_t n, int *high)
{
#if DATA_SSE2
    const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
    unsigned hi = 0;
    for (; i + 16 <= n; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
        unsigned stop = (unsigned)_mm_movemask_epi8(
            _mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, lf)));
        unsigned top = (unsigned)_mm_movemask_epi8(v); /* the high bit of each byte */
        if (stop) {
            unsigned k = (unsigned)__builtin_ctz(stop);
            if (hi | (top & ((1u << k) - 1)))
                *high = 1;
            return i + k;
        }
        hi |= top;
    }
    if (hi)
        *high = 1;
#elif DATA_SWAR
    /* a byte of x is zero where the byte of w is CR (or LF); the lowest
     * flag of (x - ones) & ~x & highs is always a true one */
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t hi = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        uint64_t xc = w ^ (ones * '\r'), xl = w ^ (ones * '\n');
        uint64_t stop = (((xc - ones) & ~xc) | ((xl - ones) & ~xl)) & highs;
        if (stop) {
            unsigned k = (unsigned)__builtin_ctzll(stop) / 8;
            if (hi | (w & highs & ((1ull << (8 * k)) - 1)))
                *high = 1;
            return i + k;
        }
        hi |= w & highs;
    }
    if (hi)
        *high = 1;
#endif
    for (; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\r' || c == '\n')
            return i;
        if (c & 0x80)
            *high = 1;
    }
    return n;
}

/*
 * Output is the input less line-starting dots (and the final ".\r\n"), so
 * bytes from run to i pass through as they are and are appended in one go
 * when a dot is left out or the feed ends, not line by line.
 */
long data_reader_feed(data_reader_t *r, const char *p, size_t n, buf_t *out)
{
    size_t i = 0;
    size_t run = 0; /* the first input byte not yet appended */
    while (i < n && !r->done) {
        unsigned char c = (unsigned char)p[i];
        switch (r->state) {
        case DR_LINE_START:
            r->line_len = 0;
            if (c == '.') {
                if (i > run && emit(r, p + run, i - run, out) < 0)
                    return -1;
                r->state = DR_DOT;
                run = ++i; /* the dot is left out */
                continue;
            }
            r->state = DR_IN_LINE;
            continue;
        case DR_DOT:
            if (c == '\r') {
                r->state = DR_DOT_CR;
                run = ++i; /* held back: the end, or a bare CR */
                continue;
            }
            /* a stuffed dot: dropped, the line goes on */
            r->state = DR_IN_LINE;
            continue;
        case DR_DOT_CR:
            if (c == '\n') {
                r->done = 1;
                run = ++i;
                continue;
            }
            /* ".\r" then something else: a bare CR inside a line */
            r->bare_cr_lf = 1;
            if (emit(r, "\r", 1, out) < 0)
                return -1;
            count_line(r, 1);
            r->state = DR_IN_LINE;
            continue;
        case DR_IN_LINE: {
            /* the run up to the next CR or LF; a CRLF followed by anything
             * but a dot (most line ends) goes on to the next line's run here,
             * without a turn of the state machine per step */
            size_t j = line_run(p, i, n, &r->eightbit);
            while (j + 2 < n && p[j] == '\r' && p[j + 1] == '\n' && p[j + 2] != '.') {
                count_line(r, j - i);
                r->line_len = 0;
                i = j + 2;
                j = line_run(p, i, n, &r->eightbit);
            }
            if (j > i) {
                count_line(r, j - i);
                i = j;
                continue;
            }
            c = (unsigned char)p[i]; /* i < n: the loop above leaves a byte after it */
            if (c == '\r') {
                r->state = DR_CR;
            } else {
                /* bare LF: kept, flagged, and it does not start a line */
                r->bare_cr_lf = 1;
                count_line(r, 1);
            }
            i++;
            continue;
        }
        case DR_CR:
            if (c == '\n') {
                r->state = DR_LINE_START;
                i++;
                continue;
            }
            /* the CR was bare (it is in the run already) */
            r->bare_cr_lf = 1;
            count_line(r, 1);
            r->state = DR_IN_LINE;
            continue;
        }
    }
    if (i > run && emit(r, p + run, i - run, out) < 0)
        return -1;
    return (long)i;
}

int data_stuff(const char *body, size_t len, buf_t *out)
{
    /* worst case every line starts with a dot: reserve once for the common case */
    if (buf_reserve(out, len + len / 64 + 8) < 0)
        return -1;
    size_t start = 0;
    int at_line_start = 1;
    for (size_t i = 0; i < len; i++) {
        if (at_line_start && body[i] == '.') {
            if (buf_append(out, body + start, i - start) < 0 || buf_append(out, ".", 1) < 0)
                return -1;
            start = i;
        }
        at_line_start = body[i] == '\n' && i > 0 && body[i - 1] == '\r';
    }
    if (buf_append(out, body + start, len - start) < 0)
        return -1;
    if (len >= 2 && body[len - 2] == '\r' && body[len - 1] == '\n')
        return buf_append(out, ".\r\n", 3);
    return buf_append(out, len ? "\r\n.\r\n" : ".\r\n", len ? 5 : 3);
}
