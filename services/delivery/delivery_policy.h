/*
 * delivery_policy: a recipient domain's MTA-STS policy (RFC 8461 3-5),
 * found for a task: the _mta-sts TXT record, then the cached policy when
 * its id still matches, else the policy file fetched from
 * https://mta-sts.<domain>/.well-known/mta-sts.txt (its host resolved by
 * our own resolver), checked, cached until max_age. When the record is
 * gone or the fetch fails, an unexpired cached policy still applies.
 * Concurrent lookups for one domain share the work. What the policy means
 * for the delivery is delivery_task.c's business.
 */
#ifndef SX_DELIVERY_POLICY_H
#define SX_DELIVERY_POLICY_H

#include "core/loop.h"
#include "delivery_fetch.h"
#include "delivery_resolve.h"
#include "delivery_sts.h"

#include <stddef.h>
#include <stdint.h>

typedef struct policy_mgr policy_mgr_t;
typedef struct policy_wait policy_wait_t;

typedef struct policy_conf {
    unsigned port;       /* HTTPS port of mta-sts.<domain> (443; tests use another) */
    uint64_t timeout_ms; /* the whole fetch */
    size_t cache_max;    /* domains kept */
} policy_conf_t;

/*
 * p NULL: no policy applies. source says where it came from ("fetched",
 * "cache", "none", or why there is none). p is valid during the call only.
 */
typedef void (*policy_fn)(const sts_policy_t *p, const char *source, void *arg);

policy_mgr_t *policy_new(loop_t *loop, resolver_t *r, fetcher_t *f, const policy_conf_t *conf);
/* Lookups still running are dropped: their callbacks never run. */
void policy_destroy(policy_mgr_t **m);

/*
 * Find domain's policy; fn runs once, later, from the loop. allow_private:
 * the policy host may be on a loopback or private address (tests).
 */
policy_wait_t *policy_lookup(policy_mgr_t *m, const char *domain, int allow_private, policy_fn fn,
                             void *arg);
/* The callback will not run; the handle is gone. */
void policy_cancel(policy_wait_t **w);

size_t policy_cached(const policy_mgr_t *m);
uint64_t policy_fetches(const policy_mgr_t *m);

#endif
