/*
 * auth_cache: a hash table of login keys with an age list. Keys are HMAC
 * outputs, already uniform, so their first bytes pick the bucket. The age
 * list is in insertion order: its head is the entry to evict first. No
 * locking and no timers: callers pass the time, and expiry is checked when
 * an entry is met.
 */
#include "auth_cache.h"
#include "core/alloc.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_HMAC_KEY_LEN 32
#define CACHE_MIN_BUCKETS  16

typedef struct cache_entry {
    unsigned char key[AUTH_CACHE_KEY_LEN];
    uint64_t generation;
    uint64_t expires_ms;
    struct cache_entry *chain;         /* next in the bucket */
    struct cache_entry *older, *newer; /* age list */
} cache_entry_t;

struct auth_cache {
    size_t max;
    uint64_t ttl_ms;
    cache_entry_t **buckets;
    size_t mask;
    cache_entry_t *oldest, *newest;
    EVP_MAC_CTX *mac; /* keyed template, duplicated per key */
    auth_cache_stats_t stats;
};

auth_cache_t *auth_cache_new(size_t max, uint64_t ttl_ms)
{
    auth_cache_t *c = xcalloc(1, sizeof(*c));
    c->max = ttl_ms ? max : 0;
    c->ttl_ms = ttl_ms;
    size_t n = CACHE_MIN_BUCKETS;
    while (n < c->max && n < ((size_t)1 << 30))
        n <<= 1;
    c->buckets = xcalloc(n, sizeof(*c->buckets));
    c->mask = n - 1;

    unsigned char k[CACHE_HMAC_KEY_LEN];
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (mac != NULL && RAND_bytes(k, sizeof(k)) == 1)
        c->mac = EVP_MAC_CTX_new(mac);
    if (c->mac == NULL || EVP_MAC_init(c->mac, k, sizeof(k), params) != 1)
        auth_cache_destroy(&c);
    OPENSSL_cleanse(k, sizeof(k));
    EVP_MAC_free(mac);
    return c;
}

void auth_cache_destroy(auth_cache_t **p)
{
    auth_cache_t *c = *p;
    if (c == NULL)
        return;
    auth_cache_clear(c);
    free(c->buckets);
    EVP_MAC_CTX_free(c->mac);
    free(c);
    *p = NULL;
}

int auth_cache_key(auth_cache_t *c, const char *username, size_t ulen, const void *password,
                   size_t plen, unsigned char out[AUTH_CACHE_KEY_LEN])
{
    static const unsigned char zero = 0;
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_dup(c->mac);
    size_t n = 0;
    int ok = ctx != NULL && EVP_MAC_update(ctx, (const unsigned char *)username, ulen) == 1 &&
             EVP_MAC_update(ctx, &zero, 1) == 1 &&
             (plen == 0 || EVP_MAC_update(ctx, password, plen) == 1) &&
             EVP_MAC_final(ctx, out, &n, AUTH_CACHE_KEY_LEN) == 1 && n == AUTH_CACHE_KEY_LEN;
    EVP_MAC_CTX_free(ctx);
    return ok ? 0 : -1;
}

static size_t bucket_of(const auth_cache_t *c, const unsigned char *key)
{
    uint64_t h;
    memcpy(&h, key, sizeof(h));
    return (size_t)h & c->mask;
}

static cache_entry_t **find_slot(auth_cache_t *c, const unsigned char *key)
{
    cache_entry_t **slot = &c->buckets[bucket_of(c, key)];
    while (*slot && CRYPTO_memcmp((*slot)->key, key, AUTH_CACHE_KEY_LEN) != 0)
        slot = &(*slot)->chain;
    return slot;
}

static void age_unlink(auth_cache_t *c, cache_entry_t *e)
{
    if (e->older)
        e->older->newer = e->newer;
    else
        c->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        c->newest = e->older;
    e->older = e->newer = NULL;
}

static void age_append(auth_cache_t *c, cache_entry_t *e)
{
    e->older = c->newest;
    e->newer = NULL;
    if (c->newest)
        c->newest->newer = e;
    else
        c->oldest = e;
    c->newest = e;
}

static void entry_remove(auth_cache_t *c, cache_entry_t *e)
{
    cache_entry_t **slot = find_slot(c, e->key);
    if (*slot == e)
        *slot = e->chain;
    age_unlink(c, e);
    OPENSSL_cleanse(e->key, sizeof(e->key));
    free(e);
    c->stats.entries--;
}

int auth_cache_lookup(auth_cache_t *c, const unsigned char key[AUTH_CACHE_KEY_LEN],
                      uint64_t generation, uint64_t now_ms)
{
    if (c->max == 0) {
        c->stats.misses++;
        return 0;
    }
    cache_entry_t *e = *find_slot(c, key);
    if (e == NULL) {
        c->stats.misses++;
        return 0;
    }
    if (e->generation != generation || now_ms >= e->expires_ms) {
        entry_remove(c, e);
        c->stats.stale++;
        c->stats.misses++;
        return 0;
    }
    c->stats.hits++;
    return 1;
}

void auth_cache_put(auth_cache_t *c, const unsigned char key[AUTH_CACHE_KEY_LEN],
                    uint64_t generation, uint64_t now_ms, uint64_t lifetime_ms)
{
    if (c->max == 0)
        return;
    if (lifetime_ms == 0 || lifetime_ms > c->ttl_ms)
        lifetime_ms = c->ttl_ms;
    /* expired entries at the old end go first: they would only take room */
    while (c->oldest && c->oldest->expires_ms <= now_ms)
        entry_remove(c, c->oldest);

    cache_entry_t *e = *find_slot(c, key);
    if (e != NULL) {
        age_unlink(c, e);
    } else {
        if (c->stats.entries >= c->max) {
            entry_remove(c, c->oldest);
            c->stats.evictions++;
        }
        e = xcalloc(1, sizeof(*e));
        memcpy(e->key, key, AUTH_CACHE_KEY_LEN);
        size_t b = bucket_of(c, key);
        e->chain = c->buckets[b];
        c->buckets[b] = e;
        c->stats.entries++;
    }
    e->generation = generation;
    e->expires_ms = now_ms + lifetime_ms;
    age_append(c, e);
}

void auth_cache_clear(auth_cache_t *c)
{
    while (c->oldest)
        entry_remove(c, c->oldest);
}

void auth_cache_stats(const auth_cache_t *c, auth_cache_stats_t *out)
{
    *out = c->stats;
}
