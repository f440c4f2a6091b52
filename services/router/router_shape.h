/*
 * router_shape: traffic shaping per destination provider. A provider
 * profile (gmail, outlook, yahoo, apple and a default for everything else,
 * each overridable from the config's `providers` list) names recipient
 * domains, MX host patterns and the limits: connections (tasks in flight),
 * messages per connection (handed to delivery) and a rate per minute (a
 * token bucket). A job's provider is found by its recipient domain, else by
 * the MX host delivery last reported for that domain (kept in a bounded
 * cache with expiry), else the default profile, whose limits apply per
 * domain. A destination is a provider (or, for the default profile, a
 * domain), and one per source address when source pools are used.
 *
 * Slow-down replies (421 4.7.0, x.7.28, 450/451 4.7.x speaking of rate or
 * limits, 452 4.5.3, or delivery's reason "rate") halve the destination's
 * rate (floor 1 a minute) and pause it, for pause_base on the first and
 * twice as long each time after, up to pause_max; afterwards the rate
 * grows by recover_step for every minute with a success, until it is back
 * at the profile's. All times are monotonic ms passed in by the caller, so
 * the arithmetic runs the same under tests; nothing here does I/O.
 */
#ifndef SX_ROUTER_SHAPE_H
#define SX_ROUTER_SHAPE_H

#include "ipc/proto.h"

#include <libconfig.h>
#include <stddef.h>
#include <stdint.h>

#define PROVIDER_NAME_MAX  32
#define PROVIDER_MAX       64  /* profiles in one table */
#define PROVIDER_LIST_MAX  256 /* domains or MX patterns of one profile */
#define SHAPE_KEY_MAX      320 /* "provider or domain" + "/" + source address */
#define SHAPE_REASON_MAX   200
#define SHAPE_WAIT_SLOT    UINT64_MAX /* shape_wait(): waiting for a task to finish */
#define SHAPE_DEFAULT_NAME "default"

typedef struct provider {
    char name[PROVIDER_NAME_MAX + 1];
    char **domains; /* lowercase; "*.x" for names below x */
    size_t ndomains;
    char **mx; /* MX host patterns, as domains */
    size_t nmx;
    uint32_t connections;             /* tasks in flight per destination */
    uint32_t messages_per_connection; /* for delivery's connection reuse */
    double rate_per_minute;           /* 0: no rate limit */
} provider_t;

typedef struct provider_table provider_table_t;

/*
 * conf parser for `router.providers` (conf_field_t.parse): field is a
 * provider_table_t *, the built-in profiles with the config's merged in (a
 * profile naming a built-in replaces the settings it gives). Absent: the
 * built-ins alone.
 */
int provider_table_parse(const config_setting_t *s, void *field, char *err, size_t errlen);
void provider_table_release(void *field);
provider_table_t *provider_table_builtin(void);
void provider_table_destroy(provider_table_t **t);

size_t provider_table_count(const provider_table_t *t);
const provider_t *provider_table_get(const provider_table_t *t, size_t i);
const provider_t *provider_find(const provider_table_t *t, const char *name);
/* The profile listing this recipient domain, or NULL. */
const provider_t *provider_by_domain(const provider_table_t *t, const char *domain);
/* The profile whose MX patterns match this host, or NULL. */
const provider_t *provider_by_mx(const provider_table_t *t, const char *mx_host);
const provider_t *provider_default(const provider_table_t *t);

/* Exact, or "*.example.org" for any name below it; without case. */
int shape_domain_matches(const char *pattern, const char *domain);

typedef struct shape_limits {
    uint64_t pause_base_ms;       /* the first pause after a slow-down */
    uint64_t pause_max_ms;        /* pauses double up to this */
    uint64_t recover_interval_ms; /* one recovery step per this long with a success */
    double recover_step;          /* the rate grows by this fraction per step (0.1) */
    size_t mx_cache_max;          /* learnt MX hosts kept */
    uint64_t mx_cache_ttl_ms;     /* a learnt MX host is forgotten after this */
    size_t dests_max;             /* destinations tracked; idle ones are dropped first */
} shape_limits_t;

typedef struct shape shape_t;
typedef struct dest dest_t;

/* providers is borrowed and must outlive the shaper. */
shape_t *shape_new(const provider_table_t *providers, const shape_limits_t *limits);
void shape_destroy(shape_t **s);
const provider_table_t *shape_providers(const shape_t *s);

/*
 * The provider of a recipient domain at now, and its destination key into
 * key: the profile's name, or the domain itself for the default profile.
 */
const provider_t *shape_classify(shape_t *s, const char *domain, uint64_t now, char *key,
                                 size_t keylen);
/* delivery reported that domain's mail went to mx_host. */
void shape_learn_mx(shape_t *s, const char *domain, const char *mx_host, uint64_t now);
/* The MX host kept for domain, or NULL (expired or never learnt). */
const char *shape_mx_of(shape_t *s, const char *domain, uint64_t now);

/*
 * The destination for key (and source address, "" or NULL for none),
 * made on first use. NULL only when the table is full of busy ones.
 */
dest_t *shape_dest(shape_t *s, const provider_t *p, const char *key, const char *source,
                   uint64_t now);
/* 0: a task may start now; SHAPE_WAIT_SLOT: every connection is busy; else ms to wait. */
uint64_t shape_wait(dest_t *d, uint64_t now);
/* A task to d started (takes a token and a connection). */
void shape_started(dest_t *d, uint64_t now);
/* A task to d ended; ok when something was delivered. */
void shape_finished(dest_t *d, int ok, uint64_t now);
/*
 * A slow-down reply from d: halve the rate and pause. Returns 1 when this
 * began a pause (one reply per pause counts: the tasks in flight when the
 * first came answer the same way), 0 when d was paused already.
 */
int shape_slowdown(shape_t *s, dest_t *d, const PB(Status) * reply, uint64_t now);
int shape_reply_is_slowdown(const PB(Status) * st, const char *reason);

const char *dest_key(const dest_t *d);
const provider_t *dest_provider(const dest_t *d);
uint64_t dest_paused_until(const dest_t *d);
double dest_rate(const dest_t *d);
uint32_t dest_inflight(const dest_t *d);

typedef struct dest_view {
    const char *key; /* "gmail", "example.org", "gmail/192.0.2.1" */
    const char *provider;
    const char *source;     /* "" when no source address */
    uint64_t paused_until;  /* monotonic ms, 0: not paused */
    double rate_per_minute; /* current; 0: no limit */
    uint32_t connection_limit;
    uint32_t inflight;
    const char *reason; /* the reply that slowed it ("" when none) */
} dest_view_t;

void shape_each(shape_t *s, uint64_t now, void (*fn)(const dest_view_t *v, void *arg), void *arg);
/* Forget expired MX hosts and idle destinations that are back at their profile's limits. */
void shape_sweep(shape_t *s, uint64_t now);
size_t shape_paused_count(shape_t *s, uint64_t now);

#endif
