/*
 * header: header block scanning and address-list parsing (RFC 5322 3.4).
 */
#include "header.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

#define ADDR_OUT_MAX 512

long header_block_end(const char *p, size_t len)
{
    if (len >= 2 && p[0] == '\r' && p[1] == '\n')
        return 2;
    for (size_t i = 0; i + 3 < len; i++)
        if (p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n')
            return (long)(i + 4);
    return -1;
}

int header_field(const char *block, size_t len, const char *name, char *out, size_t size)
{
    size_t nlen = strlen(name);
    int found = 0;
    size_t o = 0;
    if (size)
        out[0] = '\0';
    size_t i = 0;
    while (i < len) {
        size_t eol = i;
        while (eol < len && block[eol] != '\n')
            eol++;
        size_t line_len = eol - i;
        if (line_len && block[i + line_len - 1] == '\r')
            line_len--;
        if (line_len == 0)
            break; /* the blank line: end of the header block */
        const char *line = block + i;
        if (line[0] != ' ' && line[0] != '\t' && line_len > nlen && line[nlen] == ':' &&
            strncasecmp(line, name, nlen) == 0) {
            found++;
            if (found == 1) {
                /* the value, then its continuation lines, unfolded */
                size_t j = nlen + 1;
                for (;;) {
                    for (; j < line_len && o + 1 < size; j++)
                        out[o++] = line[j];
                    size_t next = eol + 1;
                    if (next >= len || (block[next] != ' ' && block[next] != '\t'))
                        break;
                    i = next;
                    eol = i;
                    while (eol < len && block[eol] != '\n')
                        eol++;
                    line = block + i;
                    line_len = eol - i;
                    if (line_len && line[line_len - 1] == '\r')
                        line_len--;
                    j = 0;
                }
                if (size)
                    out[o < size ? o : size - 1] = '\0';
            }
        }
        i = eol + 1;
    }
    return found;
}

/* ---- address lists ---- */

typedef struct parser {
    const char *p;
    int depth; /* inside a group */
} parser_t;

static void skip_cfws(parser_t *ps)
{
    for (;;) {
        while (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\r' || *ps->p == '\n')
            ps->p++;
        if (*ps->p != '(')
            return;
        int level = 0;
        do {
            if (*ps->p == '\\' && ps->p[1])
                ps->p++;
            else if (*ps->p == '(')
                level++;
            else if (*ps->p == ')')
                level--;
            ps->p++;
        } while (*ps->p && level > 0);
    }
}

/* Copy a quoted string (quotes kept) or an atom run to out; 0 when nothing. */
static size_t take_word(parser_t *ps, char *out, size_t size, size_t o)
{
    if (*ps->p == '"') {
        if (o + 1 < size)
            out[o++] = '"';
        ps->p++;
        while (*ps->p && *ps->p != '"') {
            if (*ps->p == '\\' && ps->p[1]) {
                if (o + 1 < size)
                    out[o++] = *ps->p;
                ps->p++;
            }
            if (o + 1 < size)
                out[o++] = *ps->p;
            ps->p++;
        }
        if (*ps->p == '"') {
            ps->p++;
            if (o + 1 < size)
                out[o++] = '"';
        }
        return o;
    }
    while (*ps->p && !strchr(" \t\r\n()<>[]:;@\\,\".", *ps->p)) {
        if (o + 1 < size)
            out[o++] = *ps->p;
        ps->p++;
    }
    return o;
}

/* addr-spec at ps->p (inside <> or bare): local@domain into out. */
static int take_addr_spec(parser_t *ps, char *out, size_t size)
{
    size_t o = 0;
    skip_cfws(ps);
    for (;;) {
        size_t before = o;
        o = take_word(ps, out, size, o);
        if (o == before)
            return -1;
        skip_cfws(ps);
        if (*ps->p != '.')
            break;
        if (o + 1 < size)
            out[o++] = '.';
        ps->p++;
        skip_cfws(ps);
    }
    if (*ps->p != '@')
        return -1;
    if (o + 1 < size)
        out[o++] = '@';
    ps->p++;
    skip_cfws(ps);
    if (*ps->p == '[') {
        while (*ps->p && *ps->p != ']') {
            if (o + 1 < size)
                out[o++] = *ps->p;
            ps->p++;
        }
        if (*ps->p != ']')
            return -1;
        if (o + 1 < size)
            out[o++] = ']';
        ps->p++;
    } else {
        for (;;) {
            size_t before = o;
            o = take_word(ps, out, size, o);
            if (o == before)
                return -1;
            skip_cfws(ps);
            if (*ps->p != '.')
                break;
            if (o + 1 < size)
                out[o++] = '.';
            ps->p++;
            skip_cfws(ps);
        }
    }
    out[o < size ? o : size - 1] = '\0';
    return 0;
}

int header_addresses(const char *value, void (*fn)(const char *addr, void *arg), void *arg)
{
    parser_t ps = {.p = value, .depth = 0};
    int count = 0;
    char addr[ADDR_OUT_MAX];
    for (;;) {
        skip_cfws(&ps);
        if (*ps.p == '\0')
            break;
        if (*ps.p == ',' || (*ps.p == ';' && ps.depth)) {
            if (*ps.p == ';')
                ps.depth = 0;
            ps.p++;
            continue;
        }
        /* Look ahead: a phrase followed by '<' (name-addr) or ':' (group),
         * or an addr-spec. */
        const char *start = ps.p;
        parser_t look = ps;
        char word[ADDR_OUT_MAX];
        for (;;) {
            skip_cfws(&look);
            if (*look.p == '"' || (*look.p && !strchr("<>[]:;@\\,.()", *look.p))) {
                take_word(&look, word, sizeof(word), 0);
                continue;
            }
            if (*look.p == '.') { /* obs-phrase or a dotted local part */
                look.p++;
                continue;
            }
            break;
        }
        if (*look.p == ':' && !ps.depth) {
            ps.p = look.p + 1; /* group: its members follow */
            ps.depth = 1;
            continue;
        }
        if (*look.p == '<') {
            ps.p = look.p + 1;
            if (take_addr_spec(&ps, addr, sizeof(addr)) < 0)
                return -1;
            skip_cfws(&ps);
            if (*ps.p != '>')
                return -1;
            ps.p++;
        } else {
            ps.p = start;
            if (take_addr_spec(&ps, addr, sizeof(addr)) < 0)
                return -1;
        }
        fn(addr, arg);
        count++;
        skip_cfws(&ps);
        if (*ps.p && *ps.p != ',' && *ps.p != ';')
            return -1;
    }
    return count;
}
