/*
 * auth_rate: message rate limits of credentials and tenants. Each limited
 * name has a minute window and a day window, each fixed: it opens with the
 * first message counted and lasts 60 s or 24 h. A message is counted only
 * when every limit given allows one more; a refusal counts nothing and
 * says which limit was hit and when it frees up. Only windows with a limit
 * are counted, so counting starts when a limit is set.
 *
 * Minute windows live in memory only. Day windows are read from the store
 * the first time a name is met and written back by auth_rate_flush, which
 * the daemon calls at most once a second while something changed: one
 * synced write for all changed counters, never one per message. A crash
 * loses at most the counts of the last second; a restart keeps the rest.
 * The in-memory table is bounded (the least recently used name makes room;
 * its day count is read again from the store when next needed). Time comes
 * from the caller (wall-clock ms). Loop thread only.
 */
#ifndef SX_AUTH_RATE_H
#define SX_AUTH_RATE_H

#include "auth_store.h"

#include <stddef.h>
#include <stdint.h>

#define AUTH_RATE_MINUTE_MS 60000ull
#define AUTH_RATE_DAY_MS    86400000ull
#define AUTH_RATE_KEYS_MIN  16

typedef enum {
    AUTH_RATE_CREDENTIAL = 0,
    AUTH_RATE_TENANT,
} auth_rate_scope_t;

typedef struct auth_rate_limit {
    auth_rate_scope_t scope;
    const char *name;
    uint32_t per_minute; /* 0: no limit */
    uint32_t per_day;    /* 0: no limit */
} auth_rate_limit_t;

typedef struct auth_rate_refusal {
    auth_rate_scope_t scope;
    const char *name; /* the limit's own name pointer */
    int per_day;      /* 1: the day limit, 0: the minute limit */
    uint32_t limit;
    uint32_t retry_after_s;
} auth_rate_refusal_t;

typedef struct auth_rate_stats {
    size_t names;
    size_t dirty;
    uint64_t counted;
    uint64_t refused;
    uint64_t flushes;
    uint64_t flush_failures;
} auth_rate_stats_t;

typedef struct auth_rate auth_rate_t;

/* st is borrowed. max_names is raised to AUTH_RATE_KEYS_MIN. NULL when OpenSSL fails. */
auth_rate_t *auth_rate_new(auth_store_t *st, size_t max_names);
/* Frees without writing: call auth_rate_flush first. */
void auth_rate_destroy(auth_rate_t **r);

/*
 * One message against n limits. 0: allowed and counted against every one;
 * 1: refused, *out says which limit (the one that frees up last), nothing
 * counted; -1: a day counter could not be read from the store.
 */
int auth_rate_take(auth_rate_t *r, const auth_rate_limit_t *limits, size_t n, uint64_t now_ms,
                   auth_rate_refusal_t *out);

/* Day counters changed since the last flush, waiting to be written. */
size_t auth_rate_dirty(const auth_rate_t *r);
/* Write them in one transaction; 0, or -1 (they stay waiting for the next flush). */
int auth_rate_flush(auth_rate_t *r);

void auth_rate_stats(const auth_rate_t *r, auth_rate_stats_t *out);

#endif
