/*
 * reply: SMTP replies as a client reads them (RFC 5321 4.2): one or more
 * lines "NNN-text" ending with "NNN text", with the enhanced status code
 * (RFC 3463) taken from the first line when present. What a reply means
 * for a delivery is decided by delivery, not here.
 */
#ifndef SX_REPLY_H
#define SX_REPLY_H

#include "core/buf.h"

#include <stddef.h>

#define REPLY_TEXT_MAX 1024 /* joined text kept for logs and events */
#define REPLY_LINE_MAX 1024 /* a longer line is a protocol error */
#define REPLY_LINES_MAX 64

typedef struct smtp_reply {
    unsigned code;             /* 250 */
    char enhanced[16];         /* "2.0.0" or "" */
    char text[REPLY_TEXT_MAX]; /* lines joined with "; ", codes stripped */
    char **lines;              /* each line's text, for EHLO keywords */
    size_t nlines;
} smtp_reply_t;

typedef enum {
    REPLY_INCOMPLETE = 0, /* need more bytes */
    REPLY_DONE = 1,       /* *out filled; bytes consumed from the buffer */
    REPLY_BAD = -1,       /* not an SMTP reply */
} reply_status_t;

/* Take one complete reply off the front of in. */
reply_status_t reply_read(buf_t *in, smtp_reply_t *out);
void reply_clear(smtp_reply_t *r);

/* Enhanced code at the start of text ("5.1.1 ..."): copy it, return its length or 0. */
size_t reply_enhanced_prefix(const char *text, char *out, size_t size);

/* 1 if an EHLO reply advertises keyword (case-insensitive, first word of a line). */
int reply_has_keyword(const smtp_reply_t *r, const char *keyword);

#endif
