/*
 * smtp_data: the message text of DATA in both directions.
 *
 * Reading (server): bytes after "354" go through data_reader_feed(), which
 * removes dot-stuffing and finds the end. The end is CRLF "." CRLF and
 * nothing else (RFC 5321 4.1.1.4): a bare LF or bare CR never starts a line,
 * so no second message can be smuggled in behind one; a message holding one
 * is flagged and refused as a whole once its real end arrives. Lines longer
 * than the limit and messages bigger than the limit are flagged, not
 * stored: the reader keeps consuming until the end so the session stays in
 * step with the client.
 *
 * Writing (client): data_stuff() adds the dots back and the final ".".
 */
#ifndef SX_SMTP_DATA_H
#define SX_SMTP_DATA_H

#include "core/buf.h"

#include <stddef.h>
#include <stdint.h>

#define DATA_LINE_MAX 998 /* octets before CRLF (RFC 5321 4.5.3.1.6) */

typedef struct data_reader {
    int state;
    uint64_t size;        /* message octets after unstuffing */
    uint64_t max_size;    /* 0: unlimited */
    size_t line_len;
    size_t line_max;      /* 0: DATA_LINE_MAX */
    int bare_cr_lf;       /* a lone CR or LF was seen */
    int line_too_long;
    int too_big;          /* size passed max_size: the rest was dropped */
    int eightbit;         /* a byte >= 0x80 was seen */
    int done;
} data_reader_t;

void data_reader_init(data_reader_t *r, uint64_t max_size, size_t line_max);

/*
 * Feed n bytes; unstuffed message bytes are appended to out (unless too
 * big). Returns how many input bytes were consumed: fewer than n only when
 * the end was reached (r->done), and the rest belongs to the next command.
 * -1 if out refused to grow.
 */
long data_reader_feed(data_reader_t *r, const char *p, size_t n, buf_t *out);

/* Append body to out dot-stuffed and terminated by CRLF "." CRLF. */
int data_stuff(const char *body, size_t len, buf_t *out);

#endif
