/*
 * delivery_sts: MTA-STS (RFC 8461) as pure functions and a cache: reading
 * the _mta-sts TXT record (v=STSv1; id=...), parsing a policy file
 * (version, mode, mx patterns, max_age), matching an MX host against the
 * policy's patterns, and keeping each domain's policy until its max_age.
 * Fetching the policy over HTTPS is delivery_policy.c's job.
 */
#ifndef SX_DELIVERY_STS_H
#define SX_DELIVERY_STS_H

#include <stddef.h>
#include <stdint.h>

#define STS_ID_MAX      32       /* id: 1*32 alphanumerics */
#define STS_MX_MAX      64       /* mx patterns kept from one policy */
#define STS_MAX_AGE_MAX 31557600 /* RFC 8461 3.2: at most a year, in seconds */
#define STS_POLICY_MAX  65536    /* policy file bytes read at most */
#define STS_CACHE_MAX   10000    /* domains in the cache */
#define STS_NAME_MAX    256

typedef enum { STS_MODE_NONE = 0, STS_MODE_TESTING, STS_MODE_ENFORCE } sts_mode_t;

typedef struct sts_policy {
    char id[STS_ID_MAX + 1]; /* the TXT id it was fetched under */
    sts_mode_t mode;
    uint64_t max_age;     /* seconds */
    char *mx[STS_MX_MAX]; /* patterns, lowercase, owned */
    size_t nmx;
} sts_policy_t;

/*
 * The TXT records of _mta-sts.<domain> (each already joined from its
 * strings): 1 and the id when exactly one record starts "v=STSv1" and is
 * well formed; 0 when none does; -1 with why when there are several or the
 * one is malformed (RFC 8461 3.1: then the domain has no usable record).
 */
int sts_txt_parse(const char *const *records, size_t n, char *id, size_t idlen, char *why,
                  size_t whylen);

/* Parse a policy body into out (which the caller frees). 0, or -1 with why. */
int sts_policy_parse(const char *text, size_t len, sts_policy_t *out, char *why, size_t whylen);
void sts_policy_free(sts_policy_t *p);
/* A deep copy into out (which the caller frees). */
void sts_policy_copy(sts_policy_t *out, const sts_policy_t *in);

/*
 * RFC 8461 4.1: an MX host against one pattern: "mail.example.com" exactly,
 * "*.example.net" any name with exactly one label in front of example.net.
 */
int sts_pattern_matches(const char *pattern, const char *host);
/* 1 if host matches one of the policy's mx patterns. */
int sts_mx_matches(const sts_policy_t *p, const char *host);

const char *sts_mode_name(sts_mode_t m);

/* ---- the cache: domain -> policy and when it expires ---- */

typedef struct sts_cache sts_cache_t;

sts_cache_t *sts_cache_new(size_t max);
void sts_cache_destroy(sts_cache_t **c);
/* The domain's unexpired policy (valid until the next put), or NULL. */
const sts_policy_t *sts_cache_get(sts_cache_t *c, const char *domain, uint64_t now_ms);
/* Store a copy of p for domain until now + max_age; the oldest entry goes when full. */
void sts_cache_put(sts_cache_t *c, const char *domain, const sts_policy_t *p, uint64_t now_ms);
size_t sts_cache_count(const sts_cache_t *c);

#endif
