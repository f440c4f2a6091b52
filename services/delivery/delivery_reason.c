/*
 * delivery_reason: reply -> reason class. The enhanced code (RFC 3463)
 * decides first; the text only splits a few codes that servers overload
 * (4.7.x for rate limits, 5.7.1 for spam); the basic code decides when
 * there is no useful enhanced code.
 */
#include "delivery_reason.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Words that mark a 4.7.x as a rate limit and a 5.7.1 as about the content. */
static const char *const rate_words[] = {"rate", "limit", "too many", "throttl", "slow down", NULL};
static const char *const content_words[] = {"spam",  "content", "virus",       "malware",
                                            "phish", "junk",    "unsolicited", NULL};

/* 1 if some word of the list starts a word in text (case-insensitive). */
static int text_has(const char *text, const char *const *words)
{
    if (text == NULL)
        return 0;
    for (const char *p = text; *p; p++) {
        if (p != text && isalnum((unsigned char)p[-1]))
            continue;
        for (size_t i = 0; words[i]; i++)
            if (strncasecmp(p, words[i], strlen(words[i])) == 0)
                return 1;
    }
    return 0;
}

/* "4.7.28" -> 4, 7, 28; -1 when it is not an enhanced code. */
static int parse_enhanced(const char *e, unsigned *cls, unsigned *subj, unsigned *det)
{
    if (e == NULL || *e == '\0')
        return -1;
    unsigned v[3];
    const char *p = e;
    for (int i = 0; i < 3; i++) {
        if (!isdigit((unsigned char)*p))
            return -1;
        char *end;
        unsigned long n = strtoul(p, &end, 10);
        if (n > 999 || end - p > 3)
            return -1;
        v[i] = (unsigned)n;
        p = end;
        if (i < 2) {
            if (*p != '.')
                return -1;
            p++;
        }
    }
    if (*p != '\0')
        return -1;
    *cls = v[0];
    *subj = v[1];
    *det = v[2];
    return 0;
}

/* No enhanced detail to go on: the basic code (RFC 5321 4.2.3). */
static const char *by_basic_code(unsigned code)
{
    switch (code) {
    case 450: /* mailbox unavailable */
    case 550:
    case 551: /* user not local */
    case 553: /* mailbox name not allowed */
    case 452: /* insufficient storage */
    case 552:
        return REASON_MAILBOX;
    case 554:
        return REASON_POLICY;
    case 500:
    case 501:
    case 502:
    case 503:
    case 504:
    case 555:
        return REASON_PROTOCOL;
    default:
        return code / 100 == 5 ? REASON_POLICY : REASON_NETWORK;
    }
}

const char *reason_classify(unsigned code, const char *enhanced, const char *text, int local)
{
    if (code / 100 == 2)
        return "";
    unsigned cls = 0, subj = 0, det = 0;
    if (parse_enhanced(enhanced, &cls, &subj, &det) < 0 || cls != code / 100)
        subj = det = 0; /* missing or contradicting the code: not to be trusted */
    if (local && subj == 7 && det == 5)
        return REASON_TLS;
    /* rate limits, whatever their class number says */
    if (subj == 7 && det == 28)
        return REASON_RATE;
    if (code == 421 && subj == 7 && det == 0)
        return REASON_RATE;
    if (code == 452 && subj == 5 && det == 3)
        return REASON_RATE;
    if (code / 100 == 4 && subj == 7 && text_has(text, rate_words))
        return REASON_RATE;
    if (subj == 6 || (subj == 3 && det == 4))
        return REASON_CONTENT;
    if (subj == 7 && det == 1 && text_has(text, content_words))
        return REASON_CONTENT;
    switch (subj) {
    case 1:
    case 2:
        return REASON_MAILBOX;
    case 3:
    case 4:
        return REASON_NETWORK;
    case 5:
        return REASON_PROTOCOL;
    case 7:
        return REASON_POLICY;
    default:
        return by_basic_code(code);
    }
}

const char *reason_of(const dlv_reply_t *r)
{
    if (r->code / 100 == 2)
        return "";
    if (r->reason)
        return r->reason;
    return reason_classify(r->code, r->enhanced, r->text, r->local);
}
