/*
 * buf_test: the growable buffer: appending and consuming, reserve and the
 * writable tail, compaction of the front gap, the per-buffer limit, sizes
 * that would overflow, steal, find_lf and printf growth.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"

static void test_append_consume(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(buf_used(&b), 0);
    assert_int_equal(buf_append(&b, "hello ", 6), 0);
    assert_int_equal(buf_append_str(&b, "world"), 0);
    assert_int_equal(buf_used(&b), 11);
    assert_memory_equal(buf_head(&b), "hello world", 11);

    buf_consume(&b, 6);
    assert_int_equal(buf_used(&b), 5);
    assert_memory_equal(buf_head(&b), "world", 5);

    /* appending zero bytes changes nothing, even from NULL */
    assert_int_equal(buf_append(&b, NULL, 0), 0);
    assert_int_equal(buf_used(&b), 5);

    /* consuming more than is there empties the buffer */
    buf_consume(&b, 1000);
    assert_int_equal(buf_used(&b), 0);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 0);

    assert_int_equal(buf_append_str(&b, "again"), 0);
    assert_memory_equal(buf_head(&b), "again", 5);
    buf_reset(&b);
    assert_int_equal(buf_used(&b), 0);
    buf_free(&b);
    assert_null(b.data);
    buf_free(&b); /* safe twice */
}

static void test_large_appends_keep_order(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, 0);
    /* interleave appends and consumes; the content must stay a running sequence */
    unsigned char chunk[777];
    uint32_t next_in = 0, next_out = 0;
    for (int round = 0; round < 500; round++) {
        for (size_t i = 0; i < sizeof(chunk); i++)
            chunk[i] = (unsigned char)(next_in++ % 251);
        assert_int_equal(buf_append(&b, chunk, sizeof(chunk)), 0);
        size_t take = buf_used(&b) * (size_t)(round % 3 + 1) / 4;
        for (size_t i = 0; i < take; i++)
            assert_int_equal((unsigned char)buf_head(&b)[i], (next_out + i) % 251);
        buf_consume(&b, take);
        next_out += (uint32_t)take;
    }
    assert_int_equal(buf_used(&b), next_in - next_out);
    for (size_t i = 0; i < buf_used(&b); i++)
        assert_int_equal((unsigned char)buf_head(&b)[i], (next_out + i) % 251);
    buf_free(&b);
}

static void test_reserve_tail_advance(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(buf_reserve(&b, 100), 0);
    assert_true(buf_room(&b) >= 100);
    memcpy(buf_tail(&b), "0123456789", 10);
    buf_advance(&b, 10);
    assert_int_equal(buf_used(&b), 10);
    assert_memory_equal(buf_head(&b), "0123456789", 10);

    /* advancing past the room is clamped, never past the capacity */
    size_t room = buf_room(&b);
    buf_advance(&b, room + 1000);
    assert_int_equal(b.len, b.cap);
    buf_free(&b);
}

static void test_compaction_reuses_front_gap(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, 0);
    char block[200];
    memset(block, 'a', sizeof(block));
    assert_int_equal(buf_append(&b, block, sizeof(block)), 0);
    size_t cap = b.cap;
    char *data = b.data;
    buf_consume(&b, 150);
    /* 50 unread; ask for more than the tail room but less than cap - used */
    size_t want = cap - 50;
    assert_true(want > buf_room(&b));
    assert_int_equal(buf_reserve(&b, want), 0);
    assert_int_equal(b.cap, cap);   /* no growth */
    assert_ptr_equal(b.data, data); /* same memory, moved to the front */
    assert_int_equal(b.off, 0);
    assert_int_equal(buf_used(&b), 50);
    for (size_t i = 0; i < 50; i++)
        assert_int_equal(buf_head(&b)[i], 'a');
    buf_free(&b);
}

static void test_limit_refused(void **state)
{
    (void)state;
    static const struct {
        size_t limit;
        size_t first, second;
        int second_rc;
    } cases[] = {
        {16, 10, 6, 0},       /* exactly the limit */
        {16, 10, 7, -1},      /* one past */
        {16, 0, 17, -1},      /* one append over */
        {1000, 999, 1, 0},
        {1000, 999, 2, -1},
        {300, 256, 44, 0},    /* growth capped at the limit, not doubled past it */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        buf_t b;
        buf_init(&b, cases[i].limit);
        char *p = calloc(1, cases[i].first + cases[i].second + 1);
        assert_int_equal(buf_append(&b, p, cases[i].first), 0);
        assert_int_equal(buf_append(&b, p, cases[i].second), cases[i].second_rc);
        size_t expect = cases[i].first + (cases[i].second_rc == 0 ? cases[i].second : 0);
        assert_int_equal(buf_used(&b), expect); /* a refused append leaves nothing */
        assert_true(b.cap <= cases[i].limit);
        free(p);
        buf_free(&b);
    }
}

static void test_limit_counts_unread_only(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, 64);
    char block[64];
    memset(block, 'x', sizeof(block));
    assert_int_equal(buf_append(&b, block, 64), 0);
    assert_int_equal(buf_append(&b, "y", 1), -1);
    buf_consume(&b, 32);
    /* consumed bytes no longer count against the limit */
    assert_int_equal(buf_append(&b, block, 32), 0);
    assert_int_equal(buf_used(&b), 64);
    assert_int_equal(buf_append(&b, "y", 1), -1);
    buf_free(&b);
}

static void test_overflow_safe_sizes(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(buf_append(&b, "abc", 3), 0);
    /* used + n would wrap around */
    assert_int_equal(buf_reserve(&b, SIZE_MAX), -1);
    assert_int_equal(buf_reserve(&b, SIZE_MAX - 2), -1);
    assert_int_equal(buf_append(&b, "abc", SIZE_MAX - 1), -1);
    assert_int_equal(buf_used(&b), 3);
    assert_memory_equal(buf_head(&b), "abc", 3);
    buf_free(&b);

    /* with a limit, a huge request is refused by the limit before any allocation */
    buf_init(&b, 1024);
    assert_int_equal(buf_reserve(&b, SIZE_MAX), -1);
    assert_int_equal(buf_reserve(&b, SIZE_MAX / 2 + 1), -1);
    assert_null(b.data);
    buf_free(&b);
}

static void test_steal(void **state)
{
    (void)state;
    buf_t b;
    size_t len = 99;

    /* empty: still a valid pointer the caller frees */
    buf_init(&b, 0);
    char *p = buf_steal(&b, &len);
    assert_non_null(p);
    assert_int_equal(len, 0);
    free(p);

    /* no front gap: the memory itself is handed over */
    buf_init(&b, 0);
    buf_append_str(&b, "message body");
    char *data = b.data;
    p = buf_steal(&b, &len);
    assert_ptr_equal(p, data);
    assert_int_equal(len, 12);
    assert_memory_equal(p, "message body", 12);
    assert_null(b.data);
    assert_int_equal(buf_used(&b), 0);
    free(p);

    /* with a front gap: only the unread bytes */
    buf_init(&b, 0);
    buf_append_str(&b, "skip:keep");
    buf_consume(&b, 5);
    p = buf_steal(&b, &len);
    assert_int_equal(len, 4);
    assert_memory_equal(p, "keep", 4);
    assert_null(b.data);
    free(p);

    /* the buffer is usable again afterwards */
    assert_int_equal(buf_append_str(&b, "new"), 0);
    assert_memory_equal(buf_head(&b), "new", 3);
    buf_free(&b);
}

static void test_find_lf(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(buf_find_lf(&b, 0), -1);
    buf_append_str(&b, "xxEHLO a\r\nNOOP\r\n");
    buf_consume(&b, 2); /* offsets are relative to the unread bytes */
    assert_int_equal(buf_find_lf(&b, 0), 7);
    assert_int_equal(buf_find_lf(&b, 7), 7);
    assert_int_equal(buf_find_lf(&b, 8), 13);
    assert_int_equal(buf_find_lf(&b, 14), -1);
    assert_int_equal(buf_find_lf(&b, 1000), -1);
    buf_consume(&b, 8);
    assert_int_equal(buf_find_lf(&b, 0), 5);
    buf_free(&b);
}

static void test_printf_growth(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(buf_printf(&b, "%d %s", 250, "OK"), 0);
    assert_int_equal(buf_used(&b), 6);
    assert_memory_equal(buf_head(&b), "250 OK", 6);

    /* a formatted string far larger than the first allocation */
    char big[5000];
    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(buf_printf(&b, "[%s]", big), 0);
    assert_int_equal(buf_used(&b), 6 + 5001);
    assert_int_equal(buf_head(&b)[6], '[');
    assert_int_equal(buf_head(&b)[6 + 5000], ']');
    for (size_t i = 7; i < 6 + 5000; i++)
        assert_int_equal(buf_head(&b)[i], 'z');

    /* many small printfs accumulate in order */
    buf_reset(&b);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(buf_printf(&b, "%03d,", i), 0);
    assert_int_equal(buf_used(&b), 4000);
    assert_memory_equal(buf_head(&b) + 4 * 999, "999,", 4);
    buf_free(&b);
}

/* Text is formatted straight into the free room when it fits with its
 * terminator, else measured and written again: both sides of that edge. */
static void test_printf_room_edges(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(buf_reserve(&b, 1), 0);
    size_t cap = b.cap;
    char text[1024];
    memset(text, 'a', cap - 1);
    text[cap - 1] = '\0';
    assert_int_equal(buf_printf(&b, "%s", text), 0); /* cap - 1 bytes: fits in one pass */
    assert_int_equal(b.cap, cap);
    assert_int_equal(buf_used(&b), cap - 1);
    assert_int_equal(buf_printf(&b, "%c", 'b'), 0); /* one byte left: no room for the NUL */
    assert_int_equal(buf_used(&b), cap);
    assert_int_equal(buf_head(&b)[cap - 2], 'a');
    assert_int_equal(buf_head(&b)[cap - 1], 'b');
    assert_int_equal(buf_printf(&b, "%s-%d", "c", 7), 0); /* grew, then wrote */
    assert_true(b.cap > cap);
    assert_int_equal(buf_used(&b), cap + 3);
    assert_memory_equal(buf_head(&b) + cap, "c-7", 3);
    buf_free(&b);
}

static void test_printf_limit(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, 10);
    assert_int_equal(buf_printf(&b, "%s", "12345"), 0);
    /* a refused printf leaves the buffer as it was */
    assert_int_equal(buf_printf(&b, "%s", "abcdef"), -1);
    assert_int_equal(buf_used(&b), 5);
    /* output that reaches the limit exactly is accepted, as with buf_append */
    assert_int_equal(buf_printf(&b, "%s", "abcde"), 0);
    assert_int_equal(buf_used(&b), 10);
    assert_memory_equal(buf_head(&b), "12345abcde", 10);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_consume),
        cmocka_unit_test(test_large_appends_keep_order),
        cmocka_unit_test(test_reserve_tail_advance),
        cmocka_unit_test(test_compaction_reuses_front_gap),
        cmocka_unit_test(test_limit_refused),
        cmocka_unit_test(test_limit_counts_unread_only),
        cmocka_unit_test(test_overflow_safe_sizes),
        cmocka_unit_test(test_steal),
        cmocka_unit_test(test_find_lf),
        cmocka_unit_test(test_printf_growth),
        cmocka_unit_test(test_printf_room_edges),
        cmocka_unit_test(test_printf_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
