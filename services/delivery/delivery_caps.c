/*
 * delivery_caps: EHLO capabilities, TLS/AUTH/MAIL decisions, reply outcomes.
 */
#include "delivery_caps.h"
#include "core/alloc.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The value after "KEYWORD" on an EHLO line: "SIZE 1000" -> "1000". */
static const char *keyword_line(const smtp_reply_t *r, const char *keyword)
{
    size_t k = strlen(keyword);
    for (size_t i = 1; i < r->nlines; i++) {
        const char *l = r->lines[i];
        if (strncasecmp(l, keyword, k) == 0 && (l[k] == '\0' || l[k] == ' ' || l[k] == '='))
            return l + k;
    }
    return NULL;
}

/* 1 if the space-separated list holds word (case-insensitive). */
static int has_word(const char *list, const char *word)
{
    size_t w = strlen(word);
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == '=')
            p++;
        const char *start = p;
        while (*p && *p != ' ')
            p++;
        if ((size_t)(p - start) == w && strncasecmp(start, word, w) == 0)
            return 1;
    }
    return 0;
}

void caps_parse(const smtp_reply_t *ehlo, ehlo_caps_t *out)
{
    memset(out, 0, sizeof(*out));
    if (ehlo == NULL || ehlo->code / 100 != 2)
        return;
    out->esmtp = 1;
    out->starttls = reply_has_keyword(ehlo, "STARTTLS");
    out->pipelining = reply_has_keyword(ehlo, "PIPELINING");
    out->smtputf8 = reply_has_keyword(ehlo, "SMTPUTF8");
    out->eightbitmime = reply_has_keyword(ehlo, "8BITMIME");
    const char *size = keyword_line(ehlo, "SIZE");
    if (size) {
        out->size = 1;
        while (*size == ' ')
            size++;
        if (isdigit((unsigned char)*size)) {
            char *end;
            unsigned long long v = strtoull(size, &end, 10);
            if (*end == '\0' || *end == ' ')
                out->size_max = v;
        }
    }
    /* "AUTH PLAIN LOGIN" and the old "AUTH=PLAIN LOGIN" form */
    for (size_t i = 1; i < ehlo->nlines; i++) {
        const char *l = ehlo->lines[i];
        if (strncasecmp(l, "AUTH", 4) == 0 && (l[4] == ' ' || l[4] == '=' || l[4] == '\0')) {
            out->auth = 1;
            if (has_word(l + 4, "PLAIN"))
                out->auth_plain = 1;
            if (has_word(l + 4, "LOGIN"))
                out->auth_login = 1;
        }
    }
}

tls_policy_t caps_tls_policy(const char *text)
{
    if (text == NULL || *text == '\0' || strcmp(text, "opportunistic") == 0)
        return POLICY_TLS_OPPORTUNISTIC;
    if (strcmp(text, "none") == 0)
        return POLICY_TLS_NONE;
    return POLICY_TLS_REQUIRED; /* "required", and anything we do not know: the safe side */
}

tls_step_t caps_tls_step(tls_policy_t policy, const ehlo_caps_t *caps, int is_tls)
{
    if (is_tls || policy == POLICY_TLS_NONE)
        return TLS_STEP_SKIP;
    if (caps->starttls)
        return TLS_STEP_START;
    return policy == POLICY_TLS_REQUIRED ? TLS_STEP_FAIL : TLS_STEP_SKIP;
}

auth_step_t caps_auth_step(int have_credentials, const ehlo_caps_t *caps, int is_tls)
{
    if (!have_credentials)
        return AUTH_STEP_SKIP;
    if (!is_tls)
        return AUTH_STEP_NO_TLS;
    if (!caps->auth)
        return AUTH_STEP_SKIP;
    if (caps->auth_plain)
        return AUTH_STEP_PLAIN;
    return caps->auth_login ? AUTH_STEP_LOGIN : AUTH_STEP_NO_MECH;
}

int caps_mail_check(const ehlo_caps_t *caps, uint64_t size, int smtputf8, dlv_reply_t *why)
{
    if (smtputf8 && !caps->smtputf8) {
        dlv_reply_set(why, 550, "5.6.7", "destination does not support SMTPUTF8");
        return -1;
    }
    if (caps->size && caps->size_max && size > caps->size_max) {
        dlv_reply_set(why, 552, "5.3.4", "message size %llu exceeds the destination's limit %llu",
                      (unsigned long long)size, (unsigned long long)caps->size_max);
        return -1;
    }
    return 0;
}

void caps_mail_params(const ehlo_caps_t *caps, uint64_t size, int eightbit, int smtputf8,
                      char *out, size_t outlen)
{
    size_t n = 0;
    out[0] = '\0';
    if (caps->size && n < outlen)
        n += (size_t)snprintf(out + n, outlen - n, " SIZE=%llu", (unsigned long long)size);
    if (eightbit && caps->eightbitmime && n < outlen)
        n += (size_t)snprintf(out + n, outlen - n, " BODY=8BITMIME");
    if (smtputf8 && caps->smtputf8 && n < outlen)
        snprintf(out + n, outlen - n, " SMTPUTF8");
}

outcome_t caps_outcome(unsigned code)
{
    switch (code / 100) {
    case 2:
        return OUTCOME_DELIVERED;
    case 5:
        return OUTCOME_BOUNCED;
    default:
        return OUTCOME_DEFERRED; /* 4xx, and nonsense is never final */
    }
}

const char *caps_outcome_name(outcome_t o)
{
    switch (o) {
    case OUTCOME_DELIVERED:
        return "delivered";
    case OUTCOME_BOUNCED:
        return "bounced";
    default:
        return "deferred";
    }
}

void dlv_reply_from_smtp(dlv_reply_t *out, const smtp_reply_t *r)
{
    out->code = r->code;
    out->local = 0;
    out->reason = NULL;
    if (r->enhanced[0])
        sx_strlcpy(out->enhanced, r->enhanced, sizeof(out->enhanced));
    else if (r->code / 100 >= 2 && r->code / 100 <= 5 && r->code / 100 != 3)
        snprintf(out->enhanced, sizeof(out->enhanced), "%u.0.0", r->code / 100);
    else
        out->enhanced[0] = '\0';
    /* a long server text is cut, never overflowed */
    size_t n = strnlen(r->text, sizeof(out->text) - 1);
    memcpy(out->text, r->text, n);
    out->text[n] = '\0';
}

void dlv_reply_set(dlv_reply_t *out, unsigned code, const char *enhanced, const char *fmt, ...)
{
    out->code = code;
    out->local = 1;
    out->reason = NULL;
    sx_strlcpy(out->enhanced, enhanced, sizeof(out->enhanced));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->text, sizeof(out->text), fmt, ap);
    va_end(ap);
}
