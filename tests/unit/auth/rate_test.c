/*
 * rate_test: the rate limiter on a temporary store with a clock the test
 * moves: minute and day limits of credentials and tenants, a refusal
 * counts nothing anywhere, the answer names the limit that frees up last,
 * windows open again on time, and day counters are written only by a
 * flush (one record per name, however many messages) and survive a
 * reopen, while unflushed counts do not.
 */
#include "auth_fixture.h"
#include "auth_rate.h"

#define T0  1700000000000ull
#define SEC 1000ull

static auth_rate_t *rate_new(fixture_t *f)
{
    auth_rate_t *r = auth_rate_new(f->st, 100);
    assert_non_null(r);
    return r;
}

/* 0: counted, 1: refused (ref filled). */
static int take(auth_rate_t *r, const auth_rate_limit_t *l, size_t n, uint64_t now,
                auth_rate_refusal_t *ref)
{
    auth_rate_refusal_t tmp;
    int rc = auth_rate_take(r, l, n, now, ref ? ref : &tmp);
    assert_true(rc == 0 || rc == 1);
    return rc;
}

static void test_minute_limit(void **state)
{
    fixture_t *f = *state;
    auth_rate_t *r = rate_new(f);
    auth_rate_limit_t cred = {AUTH_RATE_CREDENTIAL, "app", 3, 0};
    auth_rate_refusal_t ref;
    for (int i = 0; i < 3; i++)
        assert_int_equal(take(r, &cred, 1, T0 + (uint64_t)i * SEC, NULL), 0);
    assert_int_equal(take(r, &cred, 1, T0 + 10 * SEC, &ref), 1);
    assert_int_equal(ref.scope, AUTH_RATE_CREDENTIAL);
    assert_string_equal(ref.name, "app");
    assert_int_equal(ref.per_day, 0);
    assert_int_equal(ref.limit, 3);
    assert_int_equal(ref.retry_after_s, 50); /* the window opened at T0 */
    assert_int_equal(take(r, &cred, 1, T0 + 59 * SEC + 500, &ref), 1);
    assert_int_equal(ref.retry_after_s, 1);
    /* a new window at T0 + 60 s */
    assert_int_equal(take(r, &cred, 1, T0 + 60 * SEC, NULL), 0);
    assert_int_equal(take(r, &cred, 1, T0 + 61 * SEC, NULL), 0);
    assert_int_equal(take(r, &cred, 1, T0 + 62 * SEC, NULL), 0);
    assert_int_equal(take(r, &cred, 1, T0 + 63 * SEC, &ref), 1);
    assert_int_equal(ref.retry_after_s, 57);
    /* another credential has its own window; minute windows are never written */
    auth_rate_limit_t other = {AUTH_RATE_CREDENTIAL, "other", 3, 0};
    assert_int_equal(take(r, &other, 1, T0 + 63 * SEC, NULL), 0);
    assert_int_equal(auth_rate_dirty(r), 0);
    auth_rate_destroy(&r);
}

/* A refusal by one limit counts nothing against the others. */
static void test_refusal_counts_nothing(void **state)
{
    fixture_t *f = *state;
    auth_rate_t *r = rate_new(f);
    auth_rate_limit_t both[2] = {{AUTH_RATE_CREDENTIAL, "app", 2, 0},
                                 {AUTH_RATE_TENANT, "acme", 3, 0}};
    auth_rate_limit_t sibling[1] = {{AUTH_RATE_TENANT, "acme", 3, 0}};
    auth_rate_refusal_t ref;
    assert_int_equal(take(r, both, 2, T0, NULL), 0);
    assert_int_equal(take(r, both, 2, T0 + SEC, NULL), 0);
    /* app is full; many refusals later, the tenant still has exactly one left */
    for (int i = 0; i < 10; i++) {
        assert_int_equal(take(r, both, 2, T0 + 2 * SEC, &ref), 1);
        assert_int_equal(ref.scope, AUTH_RATE_CREDENTIAL);
    }
    assert_int_equal(take(r, sibling, 1, T0 + 3 * SEC, NULL), 0);
    assert_int_equal(take(r, sibling, 1, T0 + 4 * SEC, &ref), 1);
    assert_int_equal(ref.scope, AUTH_RATE_TENANT);
    assert_string_equal(ref.name, "acme");
    auth_rate_stats_t st;
    auth_rate_stats(r, &st);
    assert_int_equal(st.counted, 3);
    assert_int_equal(st.refused, 11);
    auth_rate_destroy(&r);
}

static void test_day_limit_and_longest_wait(void **state)
{
    fixture_t *f = *state;
    auth_rate_t *r = rate_new(f);
    auth_rate_limit_t l[2] = {{AUTH_RATE_CREDENTIAL, "app", 1, 0},
                              {AUTH_RATE_TENANT, "acme", 0, 2}};
    auth_rate_refusal_t ref;
    assert_int_equal(take(r, l, 2, T0, NULL), 0);
    /* the minute is full, the day is not: the minute limit answers */
    assert_int_equal(take(r, l, 2, T0 + 30 * SEC, &ref), 1);
    assert_int_equal(ref.scope, AUTH_RATE_CREDENTIAL);
    assert_int_equal(ref.retry_after_s, 30);
    assert_int_equal(take(r, l, 2, T0 + 60 * SEC, NULL), 0); /* a new minute */
    /* now both are full: the day limit frees up last, so it is the answer */
    assert_int_equal(take(r, l, 2, T0 + 61 * SEC, &ref), 1);
    assert_int_equal(ref.scope, AUTH_RATE_TENANT);
    assert_string_equal(ref.name, "acme");
    assert_int_equal(ref.per_day, 1);
    assert_int_equal(ref.limit, 2);
    assert_int_equal(ref.retry_after_s, 86400 - 61);
    /* a day after the first message the window opens again */
    assert_int_equal(take(r, l, 2, T0 + 86400 * SEC, NULL), 0);
    assert_int_equal(take(r, l, 2, T0 + 86400 * SEC + 60 * SEC, NULL), 0);
    assert_int_equal(take(r, l, 2, T0 + 86400 * SEC + 120 * SEC, &ref), 1);
    assert_int_equal(ref.per_day, 1);
    auth_rate_destroy(&r);
}

static void test_no_limits_no_counting(void **state)
{
    fixture_t *f = *state;
    auth_rate_t *r = rate_new(f);
    auth_rate_limit_t none[2] = {{AUTH_RATE_CREDENTIAL, "app", 0, 0},
                                 {AUTH_RATE_TENANT, "acme", 0, 0}};
    for (int i = 0; i < 1000; i++)
        assert_int_equal(take(r, none, 2, T0 + (uint64_t)i, NULL), 0);
    assert_int_equal(take(r, none, 0, T0, NULL), 0);
    auth_rate_stats_t st;
    auth_rate_stats(r, &st);
    assert_int_equal(st.names, 0);
    assert_int_equal(st.dirty, 0);
    auth_rate_destroy(&r);
}

static void test_day_counts_persist(void **state)
{
    fixture_t *f = *state;
    auth_rate_t *r = rate_new(f);
    auth_rate_limit_t l[2] = {{AUTH_RATE_CREDENTIAL, "app", 0, 5},
                              {AUTH_RATE_TENANT, "acme", 0, 100}};
    for (int i = 0; i < 3; i++)
        assert_int_equal(take(r, l, 2, T0 + (uint64_t)i * SEC, NULL), 0);
    /* three messages, two names: two records waiting, nothing written yet */
    assert_int_equal(auth_rate_dirty(r), 2);
    uint64_t start;
    uint32_t count;
    assert_int_equal(auth_store_rate_get(f->st, "c:app", &start, &count), AUTH_ST_NOTFOUND);
    assert_int_equal(auth_rate_flush(r), 0);
    assert_int_equal(auth_rate_dirty(r), 0);
    assert_int_equal(auth_store_rate_get(f->st, "c:app", &start, &count), AUTH_ST_OK);
    assert_int_equal(start, T0);
    assert_int_equal(count, 3);
    /* one more, not flushed: lost with the process, as documented */
    assert_int_equal(take(r, l, 2, T0 + 10 * SEC, NULL), 0);
    auth_rate_destroy(&r);

    fx_reopen(f);
    r = rate_new(f);
    auth_rate_refusal_t ref;
    assert_int_equal(take(r, l, 2, T0 + 20 * SEC, NULL), 0);
    assert_int_equal(take(r, l, 2, T0 + 21 * SEC, NULL), 0);
    assert_int_equal(take(r, l, 2, T0 + 22 * SEC, &ref), 1);
    assert_string_equal(ref.name, "app");
    assert_int_equal(ref.retry_after_s, 86400 - 22); /* the stored window's start */
    assert_int_equal(auth_rate_flush(r), 0);
    auth_rate_destroy(&r);
    assert_int_equal(auth_store_rate_get(f->st, "t:acme", &start, &count), AUTH_ST_OK);
    assert_int_equal(count, 5);

    /* a stored window older than a day counts for nothing */
    fx_reopen(f);
    r = rate_new(f);
    for (int i = 0; i < 5; i++)
        assert_int_equal(take(r, l, 2, T0 + 86400 * SEC + (uint64_t)i, NULL), 0);
    assert_int_equal(take(r, l, 2, T0 + 86400 * SEC + 10, NULL), 1);
    auth_rate_destroy(&r);
}

/* The table forgets a name; its day count comes back from the store. */
static void test_eviction_reloads(void **state)
{
    fixture_t *f = *state;
    auth_rate_t *r = auth_rate_new(f->st, 1); /* raised to the minimum */
    assert_non_null(r);
    auth_rate_limit_t app = {AUTH_RATE_CREDENTIAL, "app", 0, 2};
    assert_int_equal(take(r, &app, 1, T0, NULL), 0);
    assert_int_equal(take(r, &app, 1, T0 + 1, NULL), 0);
    assert_int_equal(auth_rate_flush(r), 0);
    char name[32];
    for (int i = 0; i < AUTH_RATE_KEYS_MIN + 4; i++) {
        snprintf(name, sizeof(name), "u%d", i);
        auth_rate_limit_t l = {AUTH_RATE_CREDENTIAL, name, 0, 10};
        assert_int_equal(take(r, &l, 1, T0 + 2, NULL), 0);
    }
    auth_rate_stats_t st;
    auth_rate_stats(r, &st);
    assert_int_equal(st.names, AUTH_RATE_KEYS_MIN);
    assert_int_equal(take(r, &app, 1, T0 + 3, NULL), 1);
    auth_rate_destroy(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_minute_limit, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_refusal_counts_nothing, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_day_limit_and_longest_wait, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_no_limits_no_counting, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_day_counts_persist, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_eviction_reloads, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
