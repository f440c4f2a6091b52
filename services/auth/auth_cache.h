/*
 * auth_cache: the verified-login cache, so a client that logs in many times
 * a second does not pay the slow hash each time. After a hash check
 * succeeds, the caller stores HMAC-SHA256(k, username || 0 || password)
 * with the credential's generation; k is random per process, so the cache
 * holds nothing that helps recover a password and nothing outlives the
 * process. An entry counts only while its generation equals the
 * credential's current one: any change to the credential bumps the
 * generation and so retires its entries. Failed checks are never stored.
 * Bounded: entries expire after their lifetime (at most the ttl) and, at
 * the size limit, the oldest entry makes room. Loop thread only.
 */
#ifndef SX_AUTH_CACHE_H
#define SX_AUTH_CACHE_H

#include <stddef.h>
#include <stdint.h>

#define AUTH_CACHE_KEY_LEN 32

typedef struct auth_cache auth_cache_t;

typedef struct auth_cache_stats {
    size_t entries;
    uint64_t hits;
    uint64_t misses;
    uint64_t stale;     /* found but expired or of an older generation */
    uint64_t evictions; /* pushed out by the size limit */
} auth_cache_stats_t;

/* max 0 or ttl_ms 0: a cache that never hits. NULL when OpenSSL fails. */
auth_cache_t *auth_cache_new(size_t max, uint64_t ttl_ms);
void auth_cache_destroy(auth_cache_t **c);

/* The cache key of a login; 0 or -1 (OpenSSL failure: do not use the cache). */
int auth_cache_key(auth_cache_t *c, const char *username, size_t ulen, const void *password,
                   size_t plen, unsigned char out[AUTH_CACHE_KEY_LEN]);

/*
 * 1 if key was verified for this generation and its entry is still alive
 * at now_ms (monotonic); 0 otherwise. A stale entry is dropped.
 */
int auth_cache_lookup(auth_cache_t *c, const unsigned char key[AUTH_CACHE_KEY_LEN],
                      uint64_t generation, uint64_t now_ms);

/*
 * Remember a successful check. The entry lives lifetime_ms, capped at the
 * ttl (0: the ttl). Storing a key again refreshes it.
 */
void auth_cache_put(auth_cache_t *c, const unsigned char key[AUTH_CACHE_KEY_LEN],
                    uint64_t generation, uint64_t now_ms, uint64_t lifetime_ms);

void auth_cache_clear(auth_cache_t *c);
void auth_cache_stats(const auth_cache_t *c, auth_cache_stats_t *out);

#endif
