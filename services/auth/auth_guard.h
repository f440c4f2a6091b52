/*
 * auth_guard: lockouts after repeated login failures. Failures are counted
 * per client (auth_net_client_key) and per username over a sliding window;
 * when either count reaches the limit, that client or that user is locked
 * for the lockout duration, and attempts are refused before anything is
 * checked (no hash is spent on them). A success clears the user's count.
 * Counters live in memory in a bounded table (the oldest entry makes room),
 * so a restart clears every count and every lockout. Time comes from the
 * caller (wall-clock ms), so tests drive it. Loop thread only. Not here:
 * what counts as a failure (auth_verify).
 */
#ifndef SX_AUTH_GUARD_H
#define SX_AUTH_GUARD_H

#include <stddef.h>
#include <stdint.h>

#define AUTH_LOCKOUT_FAILURES_MAX 50

typedef struct auth_guard_conf {
    unsigned failures;    /* failures that lock; 0: no lockouts */
    uint64_t window_ms;   /* failures older than this no longer count */
    uint64_t duration_ms; /* how long a lockout lasts */
    size_t max_entries;   /* clients and users tracked at once */
} auth_guard_conf_t;

typedef enum {
    AUTH_GUARD_NONE = 0,
    AUTH_GUARD_CLIENT = 1, /* bit: the client address */
    AUTH_GUARD_USER = 2,   /* bit: the username */
} auth_guard_kind_t;

typedef struct auth_guard auth_guard_t;

typedef struct auth_guard_stats {
    size_t entries;
    uint64_t lockouts; /* lockouts begun */
    uint64_t refused;  /* attempts refused while locked */
    uint64_t evictions;
} auth_guard_stats_t;

/* NULL when the table cannot be made (OpenSSL). A limit of 0 makes a guard that never locks. */
auth_guard_t *auth_guard_new(const auth_guard_conf_t *conf);
void auth_guard_destroy(auth_guard_t **g);

/*
 * Seconds until the lockout of client or user ends (the longer one when
 * both are locked; either key may be NULL), rounded up; 0 when neither is
 * locked. *which gets the kind that is locked.
 */
uint32_t auth_guard_locked(auth_guard_t *g, const char *client, const char *user, uint64_t now_ms,
                           auth_guard_kind_t *which);
/* Count one failure for client and user (either may be NULL); returns the kinds newly locked. */
unsigned auth_guard_failure(auth_guard_t *g, const char *client, const char *user, uint64_t now_ms);
/* A login of user passed: its count starts again. */
void auth_guard_success(auth_guard_t *g, const char *user);

void auth_guard_stats(const auth_guard_t *g, auth_guard_stats_t *out);

#endif
