/*
 * guard_test: lockout counters on a clock the test moves: a client or a
 * user is locked at the limit and not before, the window slides, the
 * lockout ends on time and starts a fresh count, a success clears only the
 * user's count, a limit of 0 never locks, and the bounded table forgets
 * its oldest entry first. Also the table underneath (auth_table).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "auth_guard.h"
#include "auth_table.h"

#include <stdio.h>
#include <string.h>

#define T0 1700000000000ull
#define S  1000ull

static auth_guard_t *guard(unsigned failures, uint64_t window_ms, uint64_t duration_ms, size_t max)
{
    auth_guard_conf_t c = {failures, window_ms, duration_ms, max};
    auth_guard_t *g = auth_guard_new(&c);
    assert_non_null(g);
    return g;
}

static uint32_t locked(auth_guard_t *g, const char *client, const char *user, uint64_t now,
                       auth_guard_kind_t *which)
{
    auth_guard_kind_t w;
    uint32_t s = auth_guard_locked(g, client, user, now, &w);
    if (which)
        *which = w;
    return s;
}

static void test_client_lockout(void **state)
{
    (void)state;
    auth_guard_t *g = guard(3, 600 * S, 900 * S, 100);
    assert_int_equal(auth_guard_failure(g, "192.0.2.7", NULL, T0), AUTH_GUARD_NONE);
    assert_int_equal(auth_guard_failure(g, "192.0.2.7", NULL, T0 + 1 * S), AUTH_GUARD_NONE);
    assert_int_equal(locked(g, "192.0.2.7", NULL, T0 + 2 * S, NULL), 0);
    assert_int_equal(auth_guard_failure(g, "192.0.2.7", NULL, T0 + 2 * S), AUTH_GUARD_CLIENT);
    auth_guard_kind_t which;
    assert_int_equal(locked(g, "192.0.2.7", "anyone", T0 + 2 * S, &which), 900);
    assert_int_equal(which, AUTH_GUARD_CLIENT);
    /* rounded up: 0.5 s left is 1 s */
    assert_int_equal(locked(g, "192.0.2.7", NULL, T0 + 902 * S - 500, NULL), 1);
    /* another client is not touched */
    assert_int_equal(locked(g, "192.0.2.8", NULL, T0 + 3 * S, NULL), 0);
    /* failures while locked do not extend it */
    assert_int_equal(auth_guard_failure(g, "192.0.2.7", NULL, T0 + 100 * S), AUTH_GUARD_NONE);
    assert_int_equal(locked(g, "192.0.2.7", NULL, T0 + 100 * S, NULL), 802);
    /* the end of the lockout: free again, with a fresh count */
    assert_int_equal(locked(g, "192.0.2.7", NULL, T0 + 902 * S, NULL), 0);
    assert_int_equal(auth_guard_failure(g, "192.0.2.7", NULL, T0 + 903 * S), AUTH_GUARD_NONE);
    assert_int_equal(auth_guard_failure(g, "192.0.2.7", NULL, T0 + 904 * S), AUTH_GUARD_NONE);
    assert_int_equal(locked(g, "192.0.2.7", NULL, T0 + 905 * S, NULL), 0);

    auth_guard_stats_t st;
    auth_guard_stats(g, &st);
    assert_int_equal(st.lockouts, 1);
    assert_true(st.refused >= 3);
    auth_guard_destroy(&g);
    assert_null(g);
    auth_guard_destroy(&g);
}

static void test_window_slides(void **state)
{
    (void)state;
    auth_guard_t *g = guard(3, 10 * S, 60 * S, 100);
    /* two failures, then one each 6 s: never three inside 10 s */
    auth_guard_failure(g, NULL, "alice", T0);
    auth_guard_failure(g, NULL, "alice", T0 + 6 * S);
    for (uint64_t t = 12; t <= 60; t += 6) {
        assert_int_equal(auth_guard_failure(g, NULL, "alice", T0 + t * S), AUTH_GUARD_NONE);
        assert_int_equal(locked(g, NULL, "alice", T0 + t * S, NULL), 0);
    }
    /* 54 and 60 are still inside the window at 63: a third failure locks */
    assert_int_equal(auth_guard_failure(g, NULL, "alice", T0 + 63 * S), AUTH_GUARD_USER);
    auth_guard_kind_t which;
    assert_int_equal(locked(g, "192.0.2.1", "alice", T0 + 63 * S, &which), 60);
    assert_int_equal(which, AUTH_GUARD_USER);
    auth_guard_destroy(&g);
}

static void test_success_clears_user_only(void **state)
{
    (void)state;
    auth_guard_t *g = guard(3, 600 * S, 60 * S, 100);
    auth_guard_failure(g, "192.0.2.7", "alice", T0);
    auth_guard_failure(g, "192.0.2.7", "alice", T0 + S);
    auth_guard_success(g, "alice");
    /* alice starts again; the client's two failures still count */
    assert_int_equal(auth_guard_failure(g, "192.0.2.7", "alice", T0 + 2 * S), AUTH_GUARD_CLIENT);
    assert_int_equal(locked(g, NULL, "alice", T0 + 2 * S, NULL), 0);
    assert_int_equal(locked(g, "192.0.2.7", NULL, T0 + 2 * S, NULL), 60);
    /* both locked: the longer wait is the answer */
    auth_guard_failure(g, NULL, "alice", T0 + 30 * S);
    auth_guard_failure(g, NULL, "alice", T0 + 31 * S);
    auth_guard_kind_t which;
    assert_int_equal(locked(g, "192.0.2.7", "alice", T0 + 31 * S, &which), 60);
    assert_int_equal(which, AUTH_GUARD_USER);
    auth_guard_destroy(&g);
}

static void test_off_and_bounded(void **state)
{
    (void)state;
    auth_guard_t *g = guard(0, 600 * S, 60 * S, 100);
    for (int i = 0; i < 100; i++)
        assert_int_equal(auth_guard_failure(g, "192.0.2.7", "alice", T0 + (uint64_t)i),
                         AUTH_GUARD_NONE);
    assert_int_equal(locked(g, "192.0.2.7", "alice", T0 + 100, NULL), 0);
    auth_guard_destroy(&g);

    /* room for 2 counters: a third client pushes out the oldest, whose count is lost */
    g = guard(2, 600 * S, 60 * S, 2);
    auth_guard_failure(g, "c1", NULL, T0);
    auth_guard_failure(g, "c2", NULL, T0 + 1);
    auth_guard_failure(g, "c3", NULL, T0 + 2);
    assert_int_equal(auth_guard_failure(g, "c1", NULL, T0 + 3), AUTH_GUARD_NONE);
    assert_int_equal(auth_guard_failure(g, "c3", NULL, T0 + 4), AUTH_GUARD_CLIENT);
    auth_guard_stats_t st;
    auth_guard_stats(g, &st);
    assert_int_equal(st.entries, 2);
    assert_true(st.evictions >= 2);
    /* an empty key counts nothing */
    assert_int_equal(auth_guard_failure(g, "", "", T0), AUTH_GUARD_NONE);
    auth_guard_destroy(&g);
}

/* ---- the table ---- */

typedef struct val {
    int n;
} val_t;

static int count_fn(const char *key, void *value, void *arg)
{
    (void)value;
    char *seen = arg;
    strcat(seen, key);
    strcat(seen, ",");
    return strcmp(key, "b") == 0; /* remove b */
}

static void test_table(void **state)
{
    (void)state;
    assert_null(auth_table_new(0, sizeof(val_t)));
    auth_table_t *t = auth_table_new(3, sizeof(val_t));
    assert_non_null(t);
    int created;
    val_t *a = auth_table_touch(t, "a", &created);
    assert_true(created);
    assert_int_equal(a->n, 0);
    a->n = 1;
    val_t *b = auth_table_touch(t, "b", &created);
    b->n = 2;
    auth_table_touch(t, "c", &created);
    assert_ptr_equal(auth_table_touch(t, "a", &created), a); /* a is the newest now */
    assert_false(created);
    assert_int_equal(a->n, 1);
    auth_table_touch(t, "d", &created); /* evicts b, the least recently touched */
    assert_null(auth_table_find(t, "b"));
    assert_non_null(auth_table_find(t, "a"));
    assert_int_equal(auth_table_evictions(t), 1);
    b = auth_table_touch(t, "b", &created); /* evicts c */
    assert_true(created);
    assert_int_equal(b->n, 0);
    assert_null(auth_table_find(t, "c"));

    char seen[64] = "";
    auth_table_each(t, count_fn, seen);
    assert_string_equal(seen, "a,d,b,");
    assert_null(auth_table_find(t, "b"));
    assert_int_equal(auth_table_count(t), 2);
    auth_table_remove(t, "a");
    auth_table_remove(t, "nothing");
    assert_int_equal(auth_table_count(t), 1);

    char longkey[AUTH_TABLE_KEY_MAX + 2];
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    assert_null(auth_table_touch(t, longkey, &created));
    longkey[AUTH_TABLE_KEY_MAX] = '\0';
    assert_non_null(auth_table_touch(t, longkey, &created));
    auth_table_destroy(&t);
    assert_null(t);

    /* many keys: each found again with its own value */
    t = auth_table_new(5000, sizeof(val_t));
    char key[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "user-%d", i);
        ((val_t *)auth_table_touch(t, key, NULL))->n = i;
    }
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "user-%d", i);
        val_t *v = auth_table_find(t, key);
        assert_non_null(v);
        assert_int_equal(v->n, i);
    }
    auth_table_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_lockout),
        cmocka_unit_test(test_window_slides),
        cmocka_unit_test(test_success_clears_user_only),
        cmocka_unit_test(test_off_and_bounded),
        cmocka_unit_test(test_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
