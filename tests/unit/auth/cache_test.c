/*
 * cache_test: the verified-login cache: keys, hits, expiry, invalidation by
 * generation, eviction of the oldest entry at the size limit, per-entry
 * lifetimes and a cache that is switched off.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth_cache.h"

#define TTL 300000 /* 5 minutes */

static void key_of(auth_cache_t *c, const char *user, const char *pw,
                   unsigned char out[AUTH_CACHE_KEY_LEN])
{
    assert_int_equal(auth_cache_key(c, user, strlen(user), pw, strlen(pw), out), 0);
}

static void test_keys(void **state)
{
    (void)state;
    auth_cache_t *c = auth_cache_new(10, TTL);
    assert_non_null(c);
    unsigned char a[AUTH_CACHE_KEY_LEN], b[AUTH_CACHE_KEY_LEN];
    key_of(c, "alice", "password1", a);
    key_of(c, "alice", "password1", b);
    assert_memory_equal(a, b, AUTH_CACHE_KEY_LEN);
    key_of(c, "alice", "password2", b);
    assert_memory_not_equal(a, b, AUTH_CACHE_KEY_LEN);
    key_of(c, "bob", "password1", b);
    assert_memory_not_equal(a, b, AUTH_CACHE_KEY_LEN);
    /* the separator keeps "ab"+"c" apart from "a"+"bc" */
    key_of(c, "ab", "c", a);
    key_of(c, "a", "bc", b);
    assert_memory_not_equal(a, b, AUTH_CACHE_KEY_LEN);

    /* another process (another random key) gives other keys for the same login */
    auth_cache_t *c2 = auth_cache_new(10, TTL);
    key_of(c, "alice", "password1", a);
    key_of(c2, "alice", "password1", b);
    assert_memory_not_equal(a, b, AUTH_CACHE_KEY_LEN);
    auth_cache_destroy(&c2);
    auth_cache_destroy(&c);
    assert_null(c);
    auth_cache_destroy(&c); /* safe twice */
}

static void test_hit_and_miss(void **state)
{
    (void)state;
    auth_cache_t *c = auth_cache_new(10, TTL);
    unsigned char k[AUTH_CACHE_KEY_LEN], other[AUTH_CACHE_KEY_LEN];
    key_of(c, "alice", "password1", k);
    key_of(c, "alice", "wrong-password", other);
    assert_int_equal(auth_cache_lookup(c, k, 7, 1000), 0);
    auth_cache_put(c, k, 7, 1000, 0);
    assert_int_equal(auth_cache_lookup(c, k, 7, 1001), 1);
    assert_int_equal(auth_cache_lookup(c, k, 7, 1000 + TTL - 1), 1);
    assert_int_equal(auth_cache_lookup(c, other, 7, 1001), 0);
    auth_cache_stats_t st;
    auth_cache_stats(c, &st);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.misses, 2);
    assert_int_equal(st.entries, 1);
    auth_cache_destroy(&c);
}

static void test_expiry(void **state)
{
    (void)state;
    auth_cache_t *c = auth_cache_new(10, TTL);
    unsigned char k[AUTH_CACHE_KEY_LEN];
    key_of(c, "alice", "password1", k);
    auth_cache_put(c, k, 1, 5000, 0);
    assert_int_equal(auth_cache_lookup(c, k, 1, 5000 + TTL), 0);
    /* the stale entry is gone: an earlier time no longer finds it either */
    assert_int_equal(auth_cache_lookup(c, k, 1, 5001), 0);
    auth_cache_stats_t st;
    auth_cache_stats(c, &st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.stale, 1);

    /* a shorter lifetime (a password being rotated out) ends the entry sooner */
    auth_cache_put(c, k, 1, 10000, 2000);
    assert_int_equal(auth_cache_lookup(c, k, 1, 11999), 1);
    assert_int_equal(auth_cache_lookup(c, k, 1, 12000), 0);
    /* a longer one is capped at the ttl */
    auth_cache_put(c, k, 1, 20000, 10ull * TTL);
    assert_int_equal(auth_cache_lookup(c, k, 1, 20000 + TTL), 0);
    auth_cache_destroy(&c);
}

static void test_generation_invalidates(void **state)
{
    (void)state;
    auth_cache_t *c = auth_cache_new(10, TTL);
    unsigned char k[AUTH_CACHE_KEY_LEN];
    key_of(c, "alice", "password1", k);
    auth_cache_put(c, k, 41, 0, 0);
    assert_int_equal(auth_cache_lookup(c, k, 41, 10), 1);
    /* the credential changed: the entry is worthless and dropped */
    assert_int_equal(auth_cache_lookup(c, k, 42, 11), 0);
    assert_int_equal(auth_cache_lookup(c, k, 41, 12), 0);
    /* a new success under the new generation is cached again */
    auth_cache_put(c, k, 42, 13, 0);
    assert_int_equal(auth_cache_lookup(c, k, 42, 14), 1);
    auth_cache_destroy(&c);
}

static void test_eviction_at_max(void **state)
{
    (void)state;
    enum { MAX = 50 };
    auth_cache_t *c = auth_cache_new(MAX, TTL);
    unsigned char keys[MAX + 10][AUTH_CACHE_KEY_LEN];
    char user[32];
    for (int i = 0; i < MAX + 10; i++) {
        snprintf(user, sizeof(user), "user%d", i);
        key_of(c, user, "password", keys[i]);
    }
    for (int i = 0; i < MAX; i++)
        auth_cache_put(c, keys[i], 1, (uint64_t)i, 0);
    auth_cache_stats_t st;
    auth_cache_stats(c, &st);
    assert_int_equal(st.entries, MAX);
    assert_int_equal(st.evictions, 0);

    /* refreshing user0 makes it the newest: user1 is now the oldest */
    auth_cache_put(c, keys[0], 1, 100, 0);
    for (int i = MAX; i < MAX + 10; i++)
        auth_cache_put(c, keys[i], 1, 200 + (uint64_t)i, 0);
    auth_cache_stats(c, &st);
    assert_int_equal(st.entries, MAX);
    assert_int_equal(st.evictions, 10);
    assert_int_equal(auth_cache_lookup(c, keys[0], 1, 1000), 1);
    for (int i = 1; i <= 10; i++)
        assert_int_equal(auth_cache_lookup(c, keys[i], 1, 1000), 0);
    for (int i = 11; i < MAX + 10; i++)
        assert_int_equal(auth_cache_lookup(c, keys[i], 1, 1000), 1);
    auth_cache_destroy(&c);
}

static void test_expired_make_room_first(void **state)
{
    (void)state;
    auth_cache_t *c = auth_cache_new(3, 1000);
    unsigned char k[4][AUTH_CACHE_KEY_LEN];
    for (int i = 0; i < 4; i++) {
        char user[16];
        snprintf(user, sizeof(user), "u%d", i);
        key_of(c, user, "pw", k[i]);
    }
    auth_cache_put(c, k[0], 1, 0, 0);
    auth_cache_put(c, k[1], 1, 0, 0);
    auth_cache_put(c, k[2], 1, 900, 0);
    /* at 1000 the first two are dead: they go, and nothing live is evicted */
    auth_cache_put(c, k[3], 1, 1000, 0);
    auth_cache_stats_t st;
    auth_cache_stats(c, &st);
    assert_int_equal(st.entries, 2);
    assert_int_equal(st.evictions, 0);
    assert_int_equal(auth_cache_lookup(c, k[2], 1, 1001), 1);
    assert_int_equal(auth_cache_lookup(c, k[3], 1, 1001), 1);
    auth_cache_clear(c);
    auth_cache_stats(c, &st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(auth_cache_lookup(c, k[3], 1, 1002), 0);
    auth_cache_destroy(&c);
}

static void test_disabled(void **state)
{
    (void)state;
    auth_cache_t *off[2] = {auth_cache_new(0, TTL), auth_cache_new(100, 0)};
    for (int i = 0; i < 2; i++) {
        unsigned char k[AUTH_CACHE_KEY_LEN];
        key_of(off[i], "alice", "password1", k);
        auth_cache_put(off[i], k, 1, 0, 0);
        assert_int_equal(auth_cache_lookup(off[i], k, 1, 1), 0);
        auth_cache_destroy(&off[i]);
    }
}

/* Many entries sharing few buckets: chains must stay consistent under removal. */
static void test_many_entries(void **state)
{
    (void)state;
    enum { N = 5000 };
    auth_cache_t *c = auth_cache_new(N, TTL);
    static unsigned char keys[N][AUTH_CACHE_KEY_LEN];
    for (int i = 0; i < N; i++) {
        char user[32];
        snprintf(user, sizeof(user), "bulk%d", i);
        key_of(c, user, "pw", keys[i]);
        auth_cache_put(c, keys[i], (uint64_t)i, 0, 0);
    }
    /* invalidate every third by asking with another generation */
    for (int i = 0; i < N; i += 3)
        assert_int_equal(auth_cache_lookup(c, keys[i], (uint64_t)i + 1, 1), 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(auth_cache_lookup(c, keys[i], (uint64_t)i, 2), i % 3 != 0);
    auth_cache_stats_t st;
    auth_cache_stats(c, &st);
    assert_int_equal(st.entries, N - (N + 2) / 3);
    auth_cache_destroy(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_hit_and_miss),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_generation_invalidates),
        cmocka_unit_test(test_eviction_at_max),
        cmocka_unit_test(test_expired_make_room_first),
        cmocka_unit_test(test_disabled),
        cmocka_unit_test(test_many_entries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
