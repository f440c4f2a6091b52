/*
 * pending_test: the table of requests awaiting replies: add, take and peek,
 * duplicate ids, deadlines that call back exactly once, take after expiry,
 * growth with many entries, each, and destroy.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/loop.h"
#include "ipc/pending.h"

typedef struct expiry_log {
    uint64_t ids[64];
    void *data[64];
    int n;
    int stop_at;
    pending_t *p;
    size_t count_in_cb;
} expiry_log_t;

static void on_expire(uint64_t id, void *data, void *arg)
{
    expiry_log_t *log = arg;
    log->count_in_cb = pending_count(log->p);
    if (log->n < 64) {
        log->ids[log->n] = id;
        log->data[log->n] = data;
    }
    log->n++;
}

static void on_stop(loop_t *loop, void *arg)
{
    (void)arg;
    loop_stop(loop);
}

static void run_for(loop_t *loop, uint64_t ms)
{
    loop_timer_t t;
    loop_timer_init(&t, on_stop, NULL);
    loop_timer_start(loop, &t, ms);
    assert_int_equal(loop_run(loop), 0);
    loop_timer_stop(loop, &t);
}

static void test_add_take_peek(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    expiry_log_t log = {0};
    pending_t *p = pending_new(loop, on_expire, &log);
    log.p = p;
    int a, b, c;
    assert_int_equal(pending_count(p), 0);
    assert_null(pending_peek(p, 1));
    assert_null(pending_take(p, 1));

    assert_int_equal(pending_add(p, 1, &a, 0), 0);
    assert_int_equal(pending_add(p, 2, &b, 0), 0);
    assert_int_equal(pending_add(p, UINT64_MAX, &c, 0), 0);
    assert_int_equal(pending_count(p), 3);

    /* a second entry with the same id is refused and changes nothing */
    assert_int_equal(pending_add(p, 2, &c, 0), -1);
    assert_int_equal(pending_count(p), 3);
    assert_ptr_equal(pending_peek(p, 2), &b);

    /* peek does not remove; take does, once */
    assert_ptr_equal(pending_peek(p, 1), &a);
    assert_ptr_equal(pending_peek(p, 1), &a);
    assert_ptr_equal(pending_take(p, 1), &a);
    assert_null(pending_take(p, 1));
    assert_null(pending_peek(p, 1));
    assert_int_equal(pending_count(p), 2);
    assert_ptr_equal(pending_take(p, UINT64_MAX), &c);
    assert_ptr_equal(pending_take(p, 2), &b);
    assert_int_equal(pending_count(p), 0);

    /* an id can be reused once its entry is gone */
    assert_int_equal(pending_add(p, 2, &a, 0), 0);
    assert_ptr_equal(pending_take(p, 2), &a);

    pending_destroy(&p, NULL);
    assert_null(p);
    pending_destroy(&p, NULL); /* safe twice */
    loop_destroy(&loop);
}

static void test_duplicate_with_null_data(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    expiry_log_t log = {0};
    pending_t *p = pending_new(loop, on_expire, &log);
    log.p = p;
    /* an entry without data is still an entry: its id is taken */
    assert_int_equal(pending_add(p, 9, NULL, 20), 0);
    assert_int_equal(pending_add(p, 9, NULL, 20), -1);
    assert_int_equal(pending_count(p), 1);
    run_for(loop, 60);
    assert_int_equal(log.n, 1);
    assert_int_equal(pending_count(p), 0);
    pending_destroy(&p, NULL);
    loop_destroy(&loop);
}

static void test_expiry(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    expiry_log_t log = {0};
    pending_t *p = pending_new(loop, on_expire, &log);
    log.p = p;
    int a, b, c, d;
    assert_int_equal(pending_add(p, 10, &a, 30), 0);
    assert_int_equal(pending_add(p, 11, &b, 10), 0);
    assert_int_equal(pending_add(p, 12, &c, 0), 0);  /* no deadline */
    assert_int_equal(pending_add(p, 13, &d, 20), 0);
    /* answered in time: its deadline is cancelled */
    assert_ptr_equal(pending_take(p, 13), &d);

    run_for(loop, 100);
    assert_int_equal(log.n, 2);
    assert_int_equal(log.ids[0], 11);
    assert_ptr_equal(log.data[0], &b);
    assert_int_equal(log.ids[1], 10);
    assert_ptr_equal(log.data[1], &a);
    /* the entry is gone before its callback runs */
    assert_int_equal(log.count_in_cb, 1);

    /* a reply after the deadline finds nothing */
    assert_null(pending_take(p, 10));
    assert_null(pending_peek(p, 11));
    assert_int_equal(pending_count(p), 1);
    assert_ptr_equal(pending_peek(p, 12), &c);

    /* nothing fires twice */
    run_for(loop, 50);
    assert_int_equal(log.n, 2);
    pending_destroy(&p, NULL);
    loop_destroy(&loop);
}

/* An expiry callback that re-adds its id: the table must be consistent. */
static pending_t *readd_p;
static int readd_calls;

static void on_expire_readd(uint64_t id, void *data, void *arg)
{
    (void)arg;
    readd_calls++;
    if (readd_calls < 3)
        assert_int_equal(pending_add(readd_p, id, data, 5), 0);
}

static void test_expiry_callback_may_add(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    readd_p = pending_new(loop, on_expire_readd, NULL);
    int a;
    readd_calls = 0;
    assert_int_equal(pending_add(readd_p, 77, &a, 5), 0);
    run_for(loop, 100);
    assert_int_equal(readd_calls, 3);
    assert_int_equal(pending_count(readd_p), 0);
    pending_destroy(&readd_p, NULL);
    loop_destroy(&loop);
}

static void count_each(uint64_t id, void *data, void *arg)
{
    uint64_t *sum = arg;
    assert_true(*(uint64_t *)data == id); /* each entry carries its own id */
    sum[0]++;
    sum[1] += id;
}

static void test_growth(void **state)
{
    (void)state;
    enum { N = 20000 };
    loop_t *loop = loop_new();
    expiry_log_t log = {0};
    pending_t *p = pending_new(loop, on_expire, &log);
    log.p = p;
    uint64_t *ids = malloc(sizeof(uint64_t) * N);
    /* sequential ids from a high start, as the bus makes them, then some spread out */
    uint64_t base = 0x00007fff12345001ull, want = 0;
    for (uint64_t i = 0; i < N; i++) {
        ids[i] = i < N / 2 ? base + i : (i * 0x9e3779b97f4a7c15ull) | 1;
        want += ids[i];
        assert_int_equal(pending_add(p, ids[i], &ids[i], i % 2 ? 60000 : 0), 0);
    }
    assert_int_equal(pending_count(p), N);
    uint64_t sum[2] = {0, 0};
    pending_each(p, count_each, sum);
    assert_int_equal(sum[0], N);
    assert_true(sum[1] == want);
    for (uint64_t i = 0; i < N; i += 2)
        assert_ptr_equal(pending_take(p, ids[i]), &ids[i]);
    assert_int_equal(pending_count(p), N / 2);
    for (uint64_t i = 0; i < N; i++) {
        if (i % 2)
            assert_ptr_equal(pending_peek(p, ids[i]), &ids[i]);
        else
            assert_null(pending_peek(p, ids[i]));
    }
    pending_destroy(&p, NULL);
    free(ids);
    loop_destroy(&loop);
}

static int freed;

static void free_counted(void *data)
{
    freed++;
    free(data);
}

static void test_destroy_frees_and_stops_timers(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    expiry_log_t log = {0};
    pending_t *p = pending_new(loop, on_expire, &log);
    log.p = p;
    freed = 0;
    for (uint64_t i = 1; i <= 100; i++)
        assert_int_equal(pending_add(p, i, malloc(16), 10), 0);
    free(pending_take(p, 50));
    pending_destroy(&p, free_counted);
    assert_int_equal(freed, 99);
    /* the deadlines went with the table: nothing fires on freed entries */
    run_for(loop, 50);
    assert_int_equal(log.n, 0);
    loop_destroy(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_take_peek),
        cmocka_unit_test(test_duplicate_with_null_data),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_expiry_callback_may_add),
        cmocka_unit_test(test_growth),
        cmocka_unit_test(test_destroy_frees_and_stops_timers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
