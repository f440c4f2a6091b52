/*
 * alloc_test: sx_strlcpy, the bounded copy that replaced snprintf("%s"):
 * it always terminates, cuts at the size, reports the source length (so a
 * caller can tell it was cut), leaves dst alone for size 0 and copies an
 * absent source as an empty string; sx_heap_in_use, which counts live blocks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/alloc.h"

static void test_fits(void **state)
{
    (void)state;
    char dst[8];
    memset(dst, 'x', sizeof(dst));
    assert_int_equal(sx_strlcpy(dst, "abc", sizeof(dst)), 3);
    assert_string_equal(dst, "abc");
    assert_int_equal(sx_strlcpy(dst, "1234567", sizeof(dst)), 7); /* exactly full */
    assert_string_equal(dst, "1234567");
}

static void test_cut(void **state)
{
    (void)state;
    char dst[6];
    memset(dst, 'x', sizeof(dst));
    size_t n = sx_strlcpy(dst, "mx1.example.net", sizeof(dst));
    assert_int_equal(n, 15);
    assert_true(n >= sizeof(dst)); /* the caller's test for "was cut" */
    assert_string_equal(dst, "mx1.e");
}

static void test_size_zero_and_absent(void **state)
{
    (void)state;
    char dst[4] = "zzz";
    assert_int_equal(sx_strlcpy(dst, "abc", 0), 3);
    assert_string_equal(dst, "zzz"); /* nothing written */
    assert_int_equal(sx_strlcpy(dst, NULL, sizeof(dst)), 0);
    assert_string_equal(dst, "");
}

/* A live block shows in the count, and leaves it when freed: what the soak
 * compares between quiet moments (bench/traffic_soak.py). */
static void test_heap_in_use_follows_live_blocks(void **state)
{
    (void)state;
    const size_t n = 4u << 20;
    size_t before = sx_heap_in_use();
    assert_true(before > 0);
    char *p = xmalloc(n);
    memset(p, 1, n);
    size_t held = sx_heap_in_use();
    assert_true(held >= before + n);
    free(p);
    size_t after = sx_heap_in_use();
    assert_true(after + n <= held);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fits),
        cmocka_unit_test(test_cut),
        cmocka_unit_test(test_size_zero_and_absent),
        cmocka_unit_test(test_heap_in_use_follows_live_blocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
