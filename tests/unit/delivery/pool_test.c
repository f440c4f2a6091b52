/*
 * pool_test: the bookkeeping of kept connections: a connection is kept only
 * while it may serve more messages (messages_per_connection 0 or 1 keeps
 * nothing), is found again only under its own key, the one kept last is
 * taken first, a full pool lets the one idle longest go, a connection that
 * closed while idle is forgotten without a close, and an idle one is
 * closed when its time is up.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/loop.h"
#include "delivery_pool.h"
#include "delivery_task.h"

typedef struct closed {
    void *conn[16];
    const char *why[16];
    size_t n;
} closed_t;

static void on_close(void *conn, const char *why, void *arg)
{
    closed_t *c = arg;
    c->conn[c->n] = conn;
    c->why[c->n] = why;
    c->n++;
}

static void test_keep_and_take(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    closed_t closed = {0};
    pool_t *p = pool_new(loop, 8, on_close, &closed);
    int a, b, c;
    /* one message per connection, or none said: nothing kept */
    assert_int_equal(pool_put(p, "k1", &a, 1, 0, 30000), 0);
    assert_int_equal(pool_put(p, "k1", &a, 1, 1, 30000), 0);
    /* used up: not kept */
    assert_int_equal(pool_put(p, "k1", &a, 5, 5, 30000), 0);
    /* no idle time: not kept */
    assert_int_equal(pool_put(p, "k1", &a, 1, 5, 0), 0);
    assert_int_equal(pool_count(p), 0);

    assert_int_equal(pool_put(p, "k1", &a, 1, 5, 30000), 1);
    assert_int_equal(pool_put(p, "k1", &b, 3, 5, 30000), 1);
    assert_int_equal(pool_put(p, "k2", &c, 2, 5, 30000), 1);
    assert_int_equal(pool_count(p), 3);
    assert_true(pool_has(p, "k1"));
    assert_false(pool_has(p, "k3"));
    assert_null(pool_take(p, "k3", NULL));
    unsigned used = 0;
    assert_ptr_equal(pool_take(p, "k1", &used), &b); /* kept last, taken first */
    assert_int_equal(used, 3);
    assert_ptr_equal(pool_take(p, "k1", &used), &a);
    assert_int_equal(used, 1);
    assert_null(pool_take(p, "k1", &used));
    assert_int_equal(pool_reused_total(p), 2);
    /* a connection that died while idle is forgotten, not closed */
    assert_int_equal(pool_forget(p, &c), 1);
    assert_int_equal(pool_forget(p, &c), 0);
    assert_int_equal(pool_count(p), 0);
    assert_int_equal(closed.n, 0);
    /* a key too long is never kept */
    char key[POOL_KEY_MAX + 2];
    memset(key, 'k', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    assert_int_equal(pool_put(p, key, &a, 1, 5, 30000), 0);
    pool_destroy(&p);
    assert_null(p);
    pool_destroy(&p);
    loop_destroy(&loop);
}

static void test_full_and_destroy(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    closed_t closed = {0};
    pool_t *p = pool_new(loop, 2, on_close, &closed);
    int a, b, c;
    assert_int_equal(pool_put(p, "k", &a, 1, 10, 30000), 1);
    assert_int_equal(pool_put(p, "k", &b, 1, 10, 30000), 1);
    assert_int_equal(pool_put(p, "k", &c, 1, 10, 30000), 1);
    assert_int_equal(pool_count(p), 2);
    assert_int_equal(closed.n, 1);
    assert_ptr_equal(closed.conn[0], &a); /* idle longest */
    assert_string_equal(closed.why[0], "pool_full");
    pool_destroy(&p);
    assert_int_equal(closed.n, 3);
    assert_string_equal(closed.why[1], "shutdown");
    loop_destroy(&loop);
}

static void give_up(loop_t *loop, void *arg)
{
    (void)arg;
    loop_stop(loop);
}

typedef struct watch {
    closed_t *closed;
    size_t want;
    loop_timer_t t;
} watch_t;

static void poll_closed(loop_t *loop, void *arg)
{
    watch_t *w = arg;
    if (w->closed->n >= w->want) {
        loop_stop(loop);
        return;
    }
    loop_timer_start(loop, &w->t, 5);
}

static void test_idle_timeout(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    closed_t closed = {0};
    pool_t *p = pool_new(loop, 8, on_close, &closed);
    int a, b;
    assert_int_equal(pool_put(p, "short", &a, 1, 10, 20), 1);
    assert_int_equal(pool_put(p, "long", &b, 1, 10, 600000), 1);
    watch_t w = {.closed = &closed, .want = 1};
    loop_timer_init(&w.t, poll_closed, &w);
    loop_timer_start(loop, &w.t, 5);
    loop_timer_t guard;
    loop_timer_init(&guard, give_up, NULL);
    loop_timer_start(loop, &guard, 10000);
    loop_run(loop);
    loop_timer_stop(loop, &guard);
    loop_timer_stop(loop, &w.t);
    assert_int_equal(closed.n, 1);
    assert_ptr_equal(closed.conn[0], &a);
    assert_string_equal(closed.why[0], "idle");
    assert_false(pool_has(p, "short"));
    assert_true(pool_has(p, "long"));
    /* taking a connection stops its idle timer: it is never closed behind the taker's back */
    assert_ptr_equal(pool_take(p, "long", NULL), &b);
    pool_destroy(&p);
    assert_int_equal(closed.n, 1);
    loop_destroy(&loop);
}

static void test_keys(void **state)
{
    (void)state;
    char k1[POOL_KEY_MAX + 1], k2[POOL_KEY_MAX + 1];
    task_pool_key(k1, sizeof(k1), 1, "mx.example.org", 25, "", 1, "relay.test", "");
    task_pool_key(k2, sizeof(k2), 1, "mx.example.org", 25, "127.0.0.5", 1, "relay.test", "");
    assert_string_not_equal(k1, k2); /* another source address: another connection */
    task_pool_key(k2, sizeof(k2), 1, "mx.example.org", 25, "", 2, "relay.test", "");
    assert_string_not_equal(k1, k2); /* verified TLS needed: not the opportunistic one */
    task_pool_key(k2, sizeof(k2), 0, "mx.example.org", 25, "", 1, "relay.test", "");
    assert_string_not_equal(k1, k2);
    task_pool_key(k2, sizeof(k2), 1, "mx.example.org", 25, "", 1, "relay.test", "");
    assert_string_equal(k1, k2);
    task_pool_key(k1, sizeof(k1), 0, "smtp.example.net", 587, "", 2, "relay.test", "alice");
    task_pool_key(k2, sizeof(k2), 0, "smtp.example.net", 587, "", 2, "relay.test", "bob");
    assert_string_not_equal(k1, k2); /* logged in as someone else */
}

static void test_tls_list(void **state)
{
    (void)state;
    char *list[] = {"gmail.com", "*.google.com", "*.protection.outlook.com"};
    assert_true(task_tls_listed(list, 3, "gmail.com"));
    assert_true(task_tls_listed(list, 3, "gmail-smtp-in.l.google.com"));
    assert_true(task_tls_listed(list, 3, "contoso-com.mail.protection.outlook.com"));
    assert_false(task_tls_listed(list, 3, "example.org"));
    assert_false(task_tls_listed(list, 3, "google.com"));
    assert_false(task_tls_listed(list, 0, "gmail.com"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keep_and_take), cmocka_unit_test(test_full_and_destroy),
        cmocka_unit_test(test_idle_timeout),  cmocka_unit_test(test_keys),
        cmocka_unit_test(test_tls_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
