/*
 * delivery_sts: MTA-STS records, policies, patterns and the policy cache.
 * Parsers are strict where RFC 8461 is (version, mode, max_age, id) and
 * lenient where it asks to be (unknown fields ignored, the first of a
 * repeated field wins, a trailing line end or blank line is fine).
 */
#include "delivery_sts.h"
#include "core/alloc.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define STS_BUCKETS 1024

static int is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

/* ---- the TXT record ---- */

/* One record: 0 with the id, or -1 with why. */
static int txt_one(const char *rec, char *id, size_t idlen, char *why, size_t whylen)
{
    const char *p = rec + 7; /* after "v=STSv1" */
    while (is_wsp(*p))
        p++;
    if (*p != ';') {
        snprintf(why, whylen, "record does not start with \"v=STSv1;\"");
        return -1;
    }
    int have_id = 0;
    while (*p == ';') {
        p++;
        while (is_wsp(*p))
            p++;
        if (*p == '\0')
            break; /* a trailing delimiter */
        const char *key = p;
        while (isalnum((unsigned char)*p) || *p == '_' || *p == '-' || *p == '.')
            p++;
        size_t klen = (size_t)(p - key);
        if (klen == 0 || klen > 32 || !isalnum((unsigned char)key[0]) || *p != '=') {
            snprintf(why, whylen, "malformed field in the record");
            return -1;
        }
        p++;
        const char *val = p;
        while (*p > 0x20 && *p < 0x7f && *p != ';')
            p++;
        size_t vlen = (size_t)(p - val);
        if (vlen == 0) {
            snprintf(why, whylen, "empty value in the record");
            return -1;
        }
        while (is_wsp(*p))
            p++;
        if (*p != ';' && *p != '\0') {
            snprintf(why, whylen, "malformed value in the record");
            return -1;
        }
        if (klen == 2 && strncmp(key, "id", 2) == 0 && !have_id) {
            if (vlen > STS_ID_MAX || vlen >= idlen) {
                snprintf(why, whylen, "id longer than %d characters", STS_ID_MAX);
                return -1;
            }
            for (size_t i = 0; i < vlen; i++) {
                if (!isalnum((unsigned char)val[i])) {
                    snprintf(why, whylen, "id is not alphanumeric");
                    return -1;
                }
            }
            memcpy(id, val, vlen);
            id[vlen] = '\0';
            have_id = 1;
        }
    }
    if (*p != '\0') {
        snprintf(why, whylen, "malformed record");
        return -1;
    }
    if (!have_id) {
        snprintf(why, whylen, "record without id");
        return -1;
    }
    return 0;
}

int sts_txt_parse(const char *const *records, size_t n, char *id, size_t idlen, char *why,
                  size_t whylen)
{
    const char *found = NULL;
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        if (records[i] && strncmp(records[i], "v=STSv1", 7) == 0 &&
            (records[i][7] == ';' || is_wsp(records[i][7]))) {
            found = records[i];
            count++;
        }
    }
    if (count == 0)
        return 0;
    if (count > 1) {
        snprintf(why, whylen, "%zu STSv1 records", count);
        return -1;
    }
    return txt_one(found, id, idlen, why, whylen) < 0 ? -1 : 1;
}

/* ---- the policy ---- */

void sts_policy_free(sts_policy_t *p)
{
    for (size_t i = 0; i < p->nmx; i++)
        free(p->mx[i]);
    memset(p, 0, sizeof(*p));
}

void sts_policy_copy(sts_policy_t *out, const sts_policy_t *in)
{
    *out = *in;
    for (size_t i = 0; i < in->nmx; i++)
        out->mx[i] = xstrdup(in->mx[i]);
}

/* An mx value: "*."? then labels of letters, digits and hyphens. */
static int mx_pattern_ok(const char *v, size_t len)
{
    if (len >= 2 && v[0] == '*' && v[1] == '.') {
        v += 2;
        len -= 2;
    }
    if (len == 0 || len >= STS_NAME_MAX)
        return 0;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        char c = v[i];
        if (c == '.') {
            if (label == 0)
                return 0;
            label = 0;
        } else if (isalnum((unsigned char)c) || c == '-' || c == '_') {
            if (++label > 63)
                return 0;
        } else {
            return 0;
        }
    }
    return 1;
}

int sts_policy_parse(const char *text, size_t len, sts_policy_t *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof(*out));
    int have_version = 0, have_mode = 0, have_age = 0;
    size_t pos = 0, lineno = 0;
    if (len > STS_POLICY_MAX) {
        snprintf(why, whylen, "policy larger than %d bytes", STS_POLICY_MAX);
        return -1;
    }
    while (pos < len) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - line) : len - pos;
        pos += ll + (nl ? 1 : 0);
        lineno++;
        if (ll > 0 && line[ll - 1] == '\r')
            ll--;
        while (ll > 0 && is_wsp(line[ll - 1]))
            ll--;
        if (ll == 0)
            continue;
        const char *colon = memchr(line, ':', ll);
        if (colon == NULL || colon == line) {
            snprintf(why, whylen, "line %zu is not \"key: value\"", lineno);
            goto bad;
        }
        size_t klen = (size_t)(colon - line);
        for (size_t i = 0; i < klen; i++) {
            if (!isalnum((unsigned char)line[i]) && line[i] != '_' && line[i] != '-' &&
                line[i] != '.') {
                snprintf(why, whylen, "line %zu: malformed field name", lineno);
                goto bad;
            }
        }
        const char *v = colon + 1;
        while (v < line + ll && is_wsp(*v))
            v++;
        size_t vlen = (size_t)(line + ll - v);
        for (size_t i = 0; i < vlen; i++) {
            if ((unsigned char)v[i] < 0x20 && v[i] != '\t') {
                snprintf(why, whylen, "line %zu: control characters", lineno);
                goto bad;
            }
        }
#define KEY_IS(k) (klen == sizeof(k) - 1 && strncmp(line, k, klen) == 0)
        if (KEY_IS("version")) {
            if (have_version)
                continue;
            if (vlen != 5 || strncmp(v, "STSv1", 5) != 0) {
                snprintf(why, whylen, "version is not STSv1");
                goto bad;
            }
            have_version = 1;
        } else if (KEY_IS("mode")) {
            if (have_mode)
                continue;
            if (vlen == 7 && strncmp(v, "enforce", 7) == 0)
                out->mode = STS_MODE_ENFORCE;
            else if (vlen == 7 && strncmp(v, "testing", 7) == 0)
                out->mode = STS_MODE_TESTING;
            else if (vlen == 4 && strncmp(v, "none", 4) == 0)
                out->mode = STS_MODE_NONE;
            else {
                snprintf(why, whylen, "mode is not enforce, testing or none");
                goto bad;
            }
            have_mode = 1;
        } else if (KEY_IS("max_age")) {
            if (have_age)
                continue;
            if (vlen == 0 || vlen > 10) {
                snprintf(why, whylen, "max_age is not 1 to 10 digits");
                goto bad;
            }
            uint64_t age = 0;
            for (size_t i = 0; i < vlen; i++) {
                if (!isdigit((unsigned char)v[i])) {
                    snprintf(why, whylen, "max_age is not a number");
                    goto bad;
                }
                age = age * 10 + (uint64_t)(v[i] - '0');
            }
            out->max_age = age > STS_MAX_AGE_MAX ? STS_MAX_AGE_MAX : age;
            have_age = 1;
        } else if (KEY_IS("mx")) {
            if (!mx_pattern_ok(v, vlen)) {
                snprintf(why, whylen, "line %zu: malformed mx pattern", lineno);
                goto bad;
            }
            if (out->nmx < STS_MX_MAX) {
                char *m = xmalloc(vlen + 1);
                for (size_t i = 0; i < vlen; i++)
                    m[i] = (char)tolower((unsigned char)v[i]);
                m[vlen] = '\0';
                out->mx[out->nmx++] = m;
            }
        }
        /* anything else is an extension: ignored */
#undef KEY_IS
    }
    if (!have_version) {
        snprintf(why, whylen, "no version");
        goto bad;
    }
    if (!have_mode) {
        snprintf(why, whylen, "no mode");
        goto bad;
    }
    if (!have_age) {
        snprintf(why, whylen, "no max_age");
        goto bad;
    }
    if (out->mode != STS_MODE_NONE && out->nmx == 0) {
        snprintf(why, whylen, "mode %s without mx", sts_mode_name(out->mode));
        goto bad;
    }
    return 0;
bad:
    sts_policy_free(out);
    return -1;
}

static size_t bare_len(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && s[n - 1] == '.' ? n - 1 : n;
}

int sts_pattern_matches(const char *pattern, const char *host)
{
    size_t pl = bare_len(pattern), hl = bare_len(host);
    if (pl == 0 || hl == 0)
        return 0;
    if (pl > 2 && pattern[0] == '*' && pattern[1] == '.') {
        /* exactly one label in front of the suffix */
        const char *dot = memchr(host, '.', hl);
        if (dot == NULL || dot == host)
            return 0;
        size_t rest = hl - (size_t)(dot + 1 - host);
        return rest == pl - 2 && strncasecmp(dot + 1, pattern + 2, rest) == 0;
    }
    return pl == hl && strncasecmp(pattern, host, pl) == 0;
}

int sts_mx_matches(const sts_policy_t *p, const char *host)
{
    for (size_t i = 0; i < p->nmx; i++)
        if (sts_pattern_matches(p->mx[i], host))
            return 1;
    return 0;
}

const char *sts_mode_name(sts_mode_t m)
{
    switch (m) {
    case STS_MODE_ENFORCE:
        return "enforce";
    case STS_MODE_TESTING:
        return "testing";
    default:
        return "none";
    }
}

/* ---- the cache ---- */

typedef struct sts_entry {
    char *domain;
    sts_policy_t policy;
    uint64_t expires_ms;
    uint64_t stored_seq; /* for evicting the oldest */
    struct sts_entry *next;
} sts_entry_t;

struct sts_cache {
    sts_entry_t *buckets[STS_BUCKETS];
    size_t count;
    size_t max;
    uint64_t seq;
};

static size_t bucket_of(const char *domain)
{
    uint32_t h = 2166136261u;
    for (const char *p = domain; *p; p++) {
        h ^= (uint32_t)tolower((unsigned char)*p);
        h *= 16777619u;
    }
    return h % STS_BUCKETS;
}

sts_cache_t *sts_cache_new(size_t max)
{
    sts_cache_t *c = xcalloc(1, sizeof(*c));
    c->max = max ? max : 1;
    return c;
}

static void entry_free(sts_entry_t *e)
{
    free(e->domain);
    sts_policy_free(&e->policy);
    free(e);
}

void sts_cache_destroy(sts_cache_t **p)
{
    sts_cache_t *c = *p;
    if (c == NULL)
        return;
    for (size_t b = 0; b < STS_BUCKETS; b++) {
        while (c->buckets[b]) {
            sts_entry_t *e = c->buckets[b];
            c->buckets[b] = e->next;
            entry_free(e);
        }
    }
    free(c);
    *p = NULL;
}

static sts_entry_t **find(sts_cache_t *c, const char *domain)
{
    sts_entry_t **pp = &c->buckets[bucket_of(domain)];
    while (*pp && strcasecmp((*pp)->domain, domain) != 0)
        pp = &(*pp)->next;
    return pp;
}

static void unlink_free(sts_cache_t *c, sts_entry_t **pp)
{
    sts_entry_t *e = *pp;
    *pp = e->next;
    entry_free(e);
    c->count--;
}

const sts_policy_t *sts_cache_get(sts_cache_t *c, const char *domain, uint64_t now_ms)
{
    sts_entry_t **pp = find(c, domain);
    if (*pp == NULL)
        return NULL;
    if ((*pp)->expires_ms <= now_ms) {
        unlink_free(c, pp);
        return NULL;
    }
    return &(*pp)->policy;
}

/* Make room: expired entries first, else the one stored longest ago. */
static void evict(sts_cache_t *c, uint64_t now_ms)
{
    sts_entry_t **oldest = NULL;
    for (size_t b = 0; b < STS_BUCKETS; b++) {
        for (sts_entry_t **pp = &c->buckets[b]; *pp;) {
            if ((*pp)->expires_ms <= now_ms) {
                unlink_free(c, pp);
                continue;
            }
            if (oldest == NULL || (*pp)->stored_seq < (*oldest)->stored_seq)
                oldest = pp;
            pp = &(*pp)->next;
        }
    }
    if (c->count >= c->max && oldest)
        unlink_free(c, oldest);
}

void sts_cache_put(sts_cache_t *c, const char *domain, const sts_policy_t *p, uint64_t now_ms)
{
    sts_entry_t **pp = find(c, domain);
    if (*pp)
        unlink_free(c, pp);
    if (c->count >= c->max)
        evict(c, now_ms);
    sts_entry_t *e = xcalloc(1, sizeof(*e));
    e->domain = xstrdup(domain);
    for (char *q = e->domain; *q; q++)
        *q = (char)tolower((unsigned char)*q);
    sts_policy_copy(&e->policy, p);
    e->expires_ms = now_ms + p->max_age * 1000u;
    e->stored_seq = ++c->seq;
    size_t b = bucket_of(domain);
    e->next = c->buckets[b];
    c->buckets[b] = e;
    c->count++;
}

size_t sts_cache_count(const sts_cache_t *c)
{
    return c->count;
}
