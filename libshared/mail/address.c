/*
 * address: RFC 5321 path and parameter parsing.
 */
#include "address.h"
#include "core/alloc.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* RFC 5321 atext: what a dot-string may contain besides dots. */
static int is_atext(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/*
 * 1 if s[0..n) is well-formed UTF-8 (RFC 3629): no stray or missing
 * continuation bytes, no overlong forms, surrogates or code points past
 * U+10FFFF. SMTPUTF8 allows UTF-8, not any byte above 0x7f.
 */
static int utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        size_t len;
        unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            len = 2;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            lo = c == 0xe0 ? 0xa0 : 0x80;
            hi = c == 0xed ? 0x9f : 0xbf;
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            lo = c == 0xf0 ? 0x90 : 0x80;
            hi = c == 0xf4 ? 0x8f : 0xbf;
        } else {
            return 0;
        }
        if (n - i < len || p[i + 1] < lo || p[i + 1] > hi)
            return 0;
        for (size_t k = 2; k < len; k++)
            if (p[i + k] < 0x80 || p[i + k] > 0xbf)
                return 0;
        i += len;
    }
    return 1;
}

static int is_label_char(unsigned char c, int allow_utf8)
{
    return isalnum(c) || c == '-' || (allow_utf8 && c >= 0x80);
}

int address_domain_valid(const char *d, int allow_utf8)
{
    size_t n = strlen(d);
    if (n == 0 || n > ADDR_DOMAIN_MAX)
        return 0;
    if (allow_utf8 && !utf8_valid(d, n))
        return 0;
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)d[i];
        if (c == '.') {
            if (label == 0 || d[i - 1] == '-')
                return 0;
            label = 0;
            continue;
        }
        if (!is_label_char(c, allow_utf8))
            return 0;
        if (label == 0 && c == '-')
            return 0;
        if (++label > 63)
            return 0;
    }
    return label > 0 && d[n - 1] != '-';
}

static int literal_valid(const char *lit)
{
    /* lit is "[...]" */
    size_t n = strlen(lit);
    if (n < 3 || lit[0] != '[' || lit[n - 1] != ']')
        return 0;
    char inner[ADDR_DOMAIN_MAX + 1];
    memcpy(inner, lit + 1, n - 2);
    inner[n - 2] = '\0';
    unsigned char tmp[16];
    if (strncasecmp(inner, "IPv6:", 5) == 0)
        return inet_pton(AF_INET6, inner + 5, tmp) == 1;
    return inet_pton(AF_INET, inner, tmp) == 1;
}

/* Local part: dot-string or quoted-string. Returns its length or -1. */
static long parse_local(const char *s, size_t n, int *utf8)
{
    if (n == 0)
        return -1;
    if (s[0] == '"') {
        size_t i = 1;
        while (i < n && s[i] != '"') {
            unsigned char c = (unsigned char)s[i];
            if (c == '\\') {
                if (i + 1 >= n || (unsigned char)s[i + 1] < 32 || s[i + 1] == 127)
                    return -1;
                i += 2;
                continue;
            }
            if (c < 32 || c == 127)
                return -1;
            if (c >= 0x80)
                *utf8 = 1;
            i++;
        }
        if (i >= n)
            return -1;
        return (long)i + 1;
    }
    size_t i = 0, atom = 0;
    for (; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (atom == 0)
                return -1;
            atom = 0;
            continue;
        }
        if (c >= 0x80) {
            *utf8 = 1;
        } else if (!is_atext(c)) {
            break;
        }
        atom++;
    }
    if (atom == 0)
        return -1;
    return (long)i;
}

static addr_status_t parse_params(const char *p, mail_params_t *params)
{
    if (params)
        params->n = 0;
    while (*p) {
        while (*p == ' ')
            p++;
        if (*p == '\0')
            break;
        const char *start = p;
        while (*p && *p != ' ')
            p++;
        size_t len = (size_t)(p - start);
        if (params == NULL)
            return ADDR_PARAMS;
        if (params->n >= ADDR_PARAMS_MAX)
            return ADDR_PARAMS;
        mail_param_t *mp = &params->v[params->n];
        const char *eq = memchr(start, '=', len);
        size_t klen = eq ? (size_t)(eq - start) : len;
        if (klen == 0 || klen >= sizeof(mp->key))
            return ADDR_PARAMS;
        for (size_t i = 0; i < klen; i++) {
            unsigned char c = (unsigned char)start[i];
            if (!isalnum(c) && c != '-')
                return ADDR_PARAMS;
            mp->key[i] = (char)toupper(c);
        }
        mp->key[klen] = '\0';
        mp->has_value = eq != NULL;
        mp->value[0] = '\0';
        if (eq) {
            size_t vlen = len - klen - 1;
            if (vlen == 0 || vlen >= sizeof(mp->value))
                return ADDR_PARAMS;
            for (size_t i = 0; i < vlen; i++) {
                unsigned char c = (unsigned char)eq[1 + i];
                if (c < 33 || c == '=' || c > 126) {
                    /* RFC 6531 allows UTF-8 in some values; accept high bytes */
                    if (c < 0x80)
                        return ADDR_PARAMS;
                }
            }
            memcpy(mp->value, eq + 1, vlen);
            mp->value[vlen] = '\0';
        }
        for (size_t i = 0; i < params->n; i++)
            if (strcmp(params->v[i].key, mp->key) == 0)
                return ADDR_PARAMS; /* a parameter given twice */
        params->n++;
    }
    return ADDR_OK;
}

addr_status_t address_parse(const char *text, int allow_null, int allow_utf8, mail_addr_t *out,
                            mail_params_t *params)
{
    memset(out, 0, sizeof(*out));
    if (params)
        params->n = 0;
    while (*text == ' ')
        text++;
    if (*text != '<')
        return ADDR_SYNTAX;
    const char *close = strchr(text, '>');
    if (close == NULL)
        return ADDR_SYNTAX;
    /* a quoted local part may hold '>': find the real end */
    if (text[1] == '"') {
        const char *q = text + 2;
        while (*q && *q != '"') {
            if (*q == '\\' && q[1])
                q++;
            q++;
        }
        if (*q != '"')
            return ADDR_SYNTAX;
        close = strchr(q, '>');
        if (close == NULL)
            return ADDR_SYNTAX;
    }
    const char *path = text + 1;
    size_t plen = (size_t)(close - path);
    const char *rest = close + 1;
    if (*rest && *rest != ' ')
        return ADDR_SYNTAX;

    if (plen > ADDR_PATH_MAX)
        return ADDR_TOO_LONG;
    if (plen == 0) {
        if (!allow_null)
            return ADDR_SYNTAX;
        out->is_null = 1;
        return parse_params(rest, params);
    }
    if (path[0] == '@')
        return ADDR_ROUTE; /* source route: @host,@host:user@domain */

    int utf8 = 0;
    long llen = parse_local(path, plen, &utf8);
    if (llen < 0)
        return memchr(path, '!', plen) ? ADDR_ROUTE : ADDR_SYNTAX;
    if ((size_t)llen >= plen || path[llen] != '@')
        return memchr(path, '!', plen) ? ADDR_ROUTE : ADDR_SYNTAX;
    if (llen > ADDR_LOCAL_MAX)
        return ADDR_TOO_LONG;
    if (utf8 && !utf8_valid(path, (size_t)llen))
        return ADDR_SYNTAX;
    const char *dom = path + llen + 1;
    size_t dlen = plen - (size_t)llen - 1;
    if (dlen == 0 || dlen > ADDR_DOMAIN_MAX)
        return dlen ? ADDR_TOO_LONG : ADDR_SYNTAX;
    if (memchr(dom, '@', dlen))
        return ADDR_ROUTE;
    memcpy(out->local, path, (size_t)llen);
    out->local[llen] = '\0';
    memcpy(out->domain, dom, dlen);
    out->domain[dlen] = '\0';
    if (out->domain[0] == '[') {
        if (!literal_valid(out->domain))
            return ADDR_SYNTAX;
        out->is_literal = 1;
    } else {
        for (size_t i = 0; i < dlen; i++) {
            if ((unsigned char)out->domain[i] >= 0x80)
                utf8 = 1;
            else
                out->domain[i] = (char)tolower((unsigned char)out->domain[i]);
        }
        if (!address_domain_valid(out->domain, 1))
            return ADDR_SYNTAX;
    }
    /* a %-hack or bang path inside an unquoted local part is a routing trick */
    if (out->local[0] != '"' && (strchr(out->local, '%') || strchr(out->local, '!')))
        return ADDR_ROUTE;
    out->utf8 = utf8;
    if (utf8 && !allow_utf8)
        return ADDR_UTF8;
    snprintf(out->full, sizeof(out->full), "%s@%s", out->local, out->domain);
    return parse_params(rest, params);
}

const mail_param_t *address_param(const mail_params_t *params, const char *key)
{
    for (size_t i = 0; i < params->n; i++)
        if (strcasecmp(params->v[i].key, key) == 0)
            return &params->v[i];
    return NULL;
}

int address_xtext_decode(const char *src, char *dst, size_t size)
{
    size_t o = 0;
    for (const char *p = src; *p; p++) {
        char c = *p;
        if (c == '+') {
            if (!isxdigit((unsigned char)p[1]) || !isxdigit((unsigned char)p[2]))
                return -1;
            char hex[3] = {p[1], p[2], 0};
            c = (char)strtol(hex, NULL, 16);
            if (c == '\0')
                return -1; /* would silently cut the decoded text short */
            p += 2;
        } else if ((unsigned char)c < 33 || (unsigned char)c > 126 || c == '=') {
            return -1;
        }
        if (o + 1 >= size)
            return -1;
        dst[o++] = c;
    }
    if (size == 0)
        return -1;
    dst[o] = '\0';
    return 0;
}

const char *address_status_text(addr_status_t st)
{
    switch (st) {
    case ADDR_OK:
        return "ok";
    case ADDR_SYNTAX:
        return "syntax error in mailbox address";
    case ADDR_TOO_LONG:
        return "address too long";
    case ADDR_UTF8:
        return "UTF-8 address requires SMTPUTF8";
    case ADDR_ROUTE:
        return "source routes, bang paths and %-addresses are not accepted";
    case ADDR_PARAMS:
        return "malformed parameters";
    }
    return "invalid address";
}
