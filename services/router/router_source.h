/*
 * router_source: source address pools. A pool is a named list of local
 * addresses with weights; a route's `source_pool`, else the tenant's entry
 * in `tenant_pools`, picks the pool for a task, and an address is drawn at
 * random by weight among those that may take it:
 *
 * - warm-up: an address marked warmup takes at most a daily volume per
 *   provider, warmup_first_day on its first day and twice as much each day
 *   of its age, until that reaches warmup_ready; its counts are kept by the
 *   caller's store (router_state.c) so they survive restarts;
 * - failover traffic (a retry, or a provider for which some address of the
 *   pool is deprioritized) only goes to warm addresses;
 * - an address a provider blocks or rate-limits is deprioritized for that
 *   provider for deprioritize_ms: its weight divided by deprioritize_divisor,
 *   and it never takes the overflow of addresses that are busy;
 * - the caller says, per address, whether the destination has room now; a
 *   healthy address without room passes its task to a healthy one with room.
 *
 * The random draw comes from a seeded generator, so tests are repeatable.
 * Days are UTC days of the wall clock passed in; other times are monotonic.
 */
#ifndef SX_ROUTER_SOURCE_H
#define SX_ROUTER_SOURCE_H

#include "ipc/proto.h"

#include <libconfig.h>
#include <stddef.h>
#include <stdint.h>

#define SOURCE_POOL_MAX    64
#define SOURCE_ADDR_MAX    64 /* addresses in one pool */
#define SOURCE_NAME_MAX    64
#define SOURCE_IP_MAX      64
#define SOURCE_TENANTS_MAX 10000
#define SOURCE_WEIGHT_MAX  1000000
#define SOURCE_DAY_MS      86400000ull

typedef struct source_addr {
    char ip[SOURCE_IP_MAX];
    uint32_t weight;
    int warmup;
    int64_t warmup_start; /* UTC day warm-up began; -1: from the store or the first start */
} source_addr_t;

typedef struct source_pool {
    char name[SOURCE_NAME_MAX + 1];
    source_addr_t *addrs;
    size_t n;
} source_pool_t;

typedef struct pool_table pool_table_t;
typedef struct tenant_pools tenant_pools_t;

/* conf parsers for `router.source_pools` and `router.tenant_pools` (CONF_CUSTOM). */
int pool_table_parse(const config_setting_t *s, void *field, char *err, size_t errlen);
void pool_table_release(void *field);
void pool_table_destroy(pool_table_t **t);
int tenant_pools_parse(const config_setting_t *s, void *field, char *err, size_t errlen);
void tenant_pools_release(void *field);
void tenant_pools_destroy(tenant_pools_t **t);

size_t pool_table_count(const pool_table_t *t);
const source_pool_t *pool_table_get(const pool_table_t *t, size_t i);
const source_pool_t *pool_find(const pool_table_t *t, const char *name);
size_t tenant_pools_count(const tenant_pools_t *t);
/* Entry i: the tenant and the pool it names. */
void tenant_pools_get(const tenant_pools_t *t, size_t i, const char **tenant, const char **pool);

typedef struct source_limits {
    uint64_t warmup_first_day;     /* a warming address's allowance on its first day */
    uint64_t warmup_ready;         /* an allowance this big means warm */
    uint64_t deprioritize_ms;      /* how long a blocked or rate-limited address stays back */
    uint32_t deprioritize_divisor; /* its weight is divided by this meanwhile */
} source_limits_t;

typedef struct source source_t;

/* pools and tenants are borrowed (either may be NULL: none). */
source_t *source_new(const pool_table_t *pools, const tenant_pools_t *tenants,
                     const source_limits_t *limits, uint64_t seed);
void source_destroy(source_t **s);

/* The pool for a task: the route's, else the tenant's, else NULL. */
const source_pool_t *source_pool_for(const source_t *s, const char *route_pool, const char *tenant);

/* Per address: 0 when the destination can take a task from it now, else how long to wait. */
typedef uint64_t (*source_room_fn)(const char *ip, void *arg);

typedef enum {
    SOURCE_PICKED = 0, /* ip is set */
    SOURCE_WAIT,       /* eligible addresses, none with room now: wait_ms (UINT64_MAX: a slot) */
    SOURCE_NONE,       /* no address may take it (warm-up spent, ...): retry after wait_ms */
} source_pick_status_t;

typedef struct source_pick {
    source_pick_status_t status;
    const char *ip;
    uint64_t wait_ms;
    const char *why;
} source_pick_t;

/*
 * Pick an address of pool for a task to provider (whose warm-up allowance
 * counts) and destination dkey (which deprioritizes addresses: the
 * provider's name, or a domain). failover: the task is a retry. room (may
 * be NULL: always room) is asked for each candidate.
 */
void source_pick(source_t *s, const source_pool_t *pool, const char *provider, const char *dkey,
                 int failover, uint64_t now, uint64_t wall_ms, source_room_fn room, void *arg,
                 source_pick_t *out);
/* The same, keeping the weighted draw in *kept (-1: draw now) across tries of one job. */
void source_pick_kept(source_t *s, const source_pool_t *pool, const char *provider,
                      const char *dkey, int failover, uint64_t now, uint64_t wall_ms,
                      source_room_fn room, void *arg, int *kept, source_pick_t *out);
/* A task to provider left from ip: count it toward the day's warm-up allowance. */
void source_sent(source_t *s, const char *ip, const char *provider, uint64_t wall_ms);
/*
 * A recipient's reply to a task from ip: a block (5.7.x speaking of blocks,
 * listings or reputation) or a slow-down deprioritizes ip for destination
 * dkey. Returns 1 when that began now.
 */
int source_reply(source_t *s, const char *ip, const char *dkey, const PB(Status) * reply,
                 const char *reason, uint64_t now);
int source_reply_is_block(const PB(Status) * st, const char *reason);

/* Is ip deprioritized for destination dkey at now? */
int source_deprioritized(source_t *s, const char *ip, const char *dkey, uint64_t now);
/* The allowance of ip for one provider on wall day; 0 when it is warm (no limit). */
uint64_t source_allowance(const source_t *s, const char *ip, uint64_t wall_ms);
/* Tasks sent from ip to provider on the day of wall_ms. */
uint64_t source_sent_today(const source_t *s, const char *ip, const char *provider,
                           uint64_t wall_ms);

typedef struct source_view {
    const char *pool;
    const char *address;
    const char *provider; /* a provider (warm-up counts) or destination (deprioritized); "" for the
                             address */
    const char *state;    /* warming, ready, deprioritized */
    uint64_t sent_today;
    uint64_t daily_limit; /* 0: none */
    uint32_t weight;      /* as it counts now */
} source_view_t;

void source_each(source_t *s, uint64_t now, uint64_t wall_ms,
                 void (*fn)(const source_view_t *v, void *arg), void *arg);

/* ---- persistence (router_state.c) ---- */

/* Restore a count and a warm-up start read from the store. */
void source_restore_count(source_t *s, const char *ip, const char *provider, uint32_t day,
                          uint64_t count);
void source_restore_start(source_t *s, const char *ip, uint32_t day);
/* Warming addresses with no start yet begin today (marked for the store). */
void source_begin(source_t *s, uint64_t wall_ms);
/* Hand every change since the last call to fn, which stores it. Returns how many. */
typedef void (*source_count_fn)(const char *ip, const char *provider, uint32_t day, uint64_t count,
                                void *arg);
typedef void (*source_start_fn)(const char *ip, uint32_t day, void *arg);
size_t source_take_changes(source_t *s, source_count_fn count_fn, source_start_fn start_fn,
                           void *arg);
/* Put changes a failed store write took back, so the next call hands them again. */
void source_mark_all_dirty(source_t *s);

#endif
