/*
 * reply: reading multi-line SMTP replies.
 */
#include "reply.h"
#include "core/alloc.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void reply_clear(smtp_reply_t *r)
{
    for (size_t i = 0; i < r->nlines; i++)
        free(r->lines[i]);
    free(r->lines);
    memset(r, 0, sizeof(*r));
}

size_t reply_enhanced_prefix(const char *text, char *out, size_t size)
{
    /* class.subject.detail: [245].1-3 digits.1-3 digits */
    const char *p = text;
    if (*p != '2' && *p != '4' && *p != '5')
        return 0;
    p++;
    for (int part = 0; part < 2; part++) {
        if (*p != '.')
            return 0;
        p++;
        int digits = 0;
        while (isdigit((unsigned char)*p) && digits < 3) {
            p++;
            digits++;
        }
        if (digits == 0)
            return 0;
    }
    if (*p && *p != ' ')
        return 0;
    size_t n = (size_t)(p - text);
    if (n >= size)
        return 0;
    memcpy(out, text, n);
    out[n] = '\0';
    return n;
}

reply_status_t reply_read(buf_t *in, smtp_reply_t *out)
{
    /* first check a whole reply is there, without consuming */
    size_t pos = 0, lines = 0;
    const char *base = buf_head(in);
    size_t used = buf_used(in);
    int complete = 0;
    while (pos < used) {
        const char *nl = memchr(base + pos, '\n', used - pos);
        if (nl == NULL) {
            if (used - pos > REPLY_LINE_MAX)
                return REPLY_BAD;
            return REPLY_INCOMPLETE;
        }
        size_t len = (size_t)(nl - (base + pos));
        if (len > REPLY_LINE_MAX || len < 3 || ++lines > REPLY_LINES_MAX)
            return REPLY_BAD;
        const char *l = base + pos;
        if (!isdigit((unsigned char)l[0]) || !isdigit((unsigned char)l[1]) ||
            !isdigit((unsigned char)l[2]))
            return REPLY_BAD;
        /* RFC 5321 4.2.1: every line of a reply carries the same code, so a
         * "250-" line cannot turn a final "550" into a success */
        if (lines > 1 && memcmp(l, base, 3) != 0)
            return REPLY_BAD;
        char sep = len > 3 ? l[3] : ' ';
        if (sep == '\r')
            sep = ' ';
        if (sep != ' ' && sep != '-')
            return REPLY_BAD;
        pos += len + 1;
        if (sep == ' ') {
            complete = 1;
            break;
        }
    }
    if (!complete)
        return REPLY_INCOMPLETE;

    reply_clear(out);
    out->lines = xcalloc(lines, sizeof(char *));
    size_t tlen = 0;
    size_t off = 0;
    for (size_t i = 0; i < lines; i++) {
        const char *l = base + off;
        const char *nl = memchr(l, '\n', pos - off);
        size_t len = (size_t)(nl - l);
        off += len + 1;
        if (len && l[len - 1] == '\r')
            len--;
        if (i == 0)
            out->code = (unsigned)((l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0'));
        const char *t = len > 4 ? l + 4 : "";
        size_t tl = len > 4 ? len - 4 : 0;
        out->lines[i] = xstrndup(t, tl);
        out->nlines++;
        const char *text = out->lines[i];
        if (i == 0) {
            size_t e = reply_enhanced_prefix(text, out->enhanced, sizeof(out->enhanced));
            if (e && out->enhanced[0] - '0' != (int)(out->code / 100))
                out->enhanced[0] = '\0', e = 0; /* class must match the basic code */
            text += e;
        } else if (out->enhanced[0]) {
            char tmp[16];
            text += reply_enhanced_prefix(text, tmp, sizeof(tmp));
        }
        while (*text == ' ')
            text++;
        int n = snprintf(out->text + tlen, sizeof(out->text) - tlen, "%s%s", i ? "; " : "",
                         text);
        if (n > 0)
            tlen = tlen + (size_t)n >= sizeof(out->text) ? sizeof(out->text) - 1 : tlen + (size_t)n;
    }
    buf_consume(in, pos);
    return REPLY_DONE;
}

int reply_has_keyword(const smtp_reply_t *r, const char *keyword)
{
    size_t k = strlen(keyword);
    for (size_t i = 1; i < r->nlines; i++) {
        const char *l = r->lines[i];
        if (strncasecmp(l, keyword, k) == 0 && (l[k] == '\0' || l[k] == ' ' || l[k] == '='))
            return 1;
    }
    return 0;
}
