/*
 * id_test: message ids: their format, that they do not repeat, that they
 * sort by time and carry it in their first 48 bits, and id_valid; session ids.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <time.h>

#include "core/clock.h"
#include "core/id.h"

static int digit_of(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'v')
        return c - 'a' + 10;
    return -1;
}

/* The 100 bits of an id as two halves of 50 bits. */
static void decode(const char *id, uint64_t *hi50, uint64_t *lo50)
{
    *hi50 = *lo50 = 0;
    for (int i = 0; i < 10; i++)
        *hi50 = (*hi50 << 5) | (uint64_t)digit_of(id[i]);
    for (int i = 10; i < 20; i++)
        *lo50 = (*lo50 << 5) | (uint64_t)digit_of(id[i]);
}

static void test_format(void **state)
{
    (void)state;
    for (int k = 0; k < 1000; k++) {
        char id[ID_BUF_SIZE];
        memset(id, 'X', sizeof(id));
        id_new(id);
        assert_int_equal(strlen(id), ID_LEN);
        for (int i = 0; i < ID_LEN; i++)
            assert_true(digit_of(id[i]) >= 0);
        assert_true(id_valid(id));
    }
}

static void test_time_in_first_48_bits(void **state)
{
    (void)state;
    for (int k = 0; k < 200; k++) {
        uint64_t before = clock_wall_ms();
        char id[ID_BUF_SIZE];
        id_new(id);
        uint64_t after = clock_wall_ms();
        uint64_t hi, lo;
        decode(id, &hi, &lo);
        /* bits 99..52 of the 100-bit value */
        uint64_t ms = hi >> 2;
        if (ms < (before & ((1ull << 48) - 1)) || ms > (after & ((1ull << 48) - 1)))
            fail_msg("id %s carries %llu ms, made between %llu and %llu", id,
                     (unsigned long long)ms, (unsigned long long)before,
                     (unsigned long long)after);
    }
}

static int cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, ID_LEN);
}

static void test_unique_over_100k(void **state)
{
    (void)state;
    enum { N = 100000 };
    char (*ids)[ID_BUF_SIZE] = malloc(sizeof(*ids) * N);
    assert_non_null(ids);
    for (int i = 0; i < N; i++)
        id_new(ids[i]);
    /* made in sequence, they are already in order of their time part */
    for (int i = 1; i < N; i++) {
        uint64_t h0, l0, h1, l1;
        decode(ids[i - 1], &h0, &l0);
        decode(ids[i], &h1, &l1);
        if ((h1 >> 2) < (h0 >> 2))
            fail_msg("id %d (%s) is older than id %d (%s)", i, ids[i], i - 1, ids[i - 1]);
    }
    qsort(ids, N, sizeof(*ids), cmp_id);
    for (int i = 1; i < N; i++)
        if (memcmp(ids[i - 1], ids[i], ID_LEN) == 0)
            fail_msg("duplicate id %s", ids[i]);
    free(ids);
}

static void test_later_sorts_after(void **state)
{
    (void)state;
    char a[ID_BUF_SIZE], b[ID_BUF_SIZE];
    for (int k = 0; k < 5; k++) {
        id_new(a);
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
        id_new(b);
        /* a later millisecond always sorts after, whatever the random bits */
        assert_true(strcmp(a, b) < 0);
    }
}

static void test_valid(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int ok;
    } cases[] = {
        {"0123456789abcdefghij", 1},
        {"01234567890123456789", 1},
        {"vvvvvvvvvvvvvvvvvvvv", 1},
        {"", 0},
        {"0123456789abcdefghi", 0},   /* 19 */
        {"0123456789abcdefghijk", 0}, /* 21 */
        {"0123456789ABCDEFGHIJ", 0},  /* uppercase */
        {"0123456789abcdefghiw", 0},  /* w is not base32 here */
        {"0123456789abcdefghi-", 0},
        {"0123456789abcdefghi/", 0},
        {"../../../etc/passwd0", 0},
        {"0123456789abcdefghi ", 0},
        {"0123456789abcdefghi\n", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (id_valid(cases[i].s) != cases[i].ok)
            fail_msg("id_valid(\"%s\") != %d", cases[i].s, cases[i].ok);
    assert_false(id_valid(NULL));
    /* an embedded NUL makes it short */
    char nul[ID_BUF_SIZE] = "0123456789abcdefghij";
    nul[5] = '\0';
    assert_false(id_valid(nul));
}

static void test_session_and_random(void **state)
{
    (void)state;
    char a[17], b[17];
    id_session(a);
    id_session(b);
    assert_int_equal(strlen(a), 16);
    assert_int_equal(strspn(a, "0123456789abcdef"), 16);
    assert_string_not_equal(a, b);
    /* 64 random bits: over 64 draws every bit is seen both set and clear */
    uint64_t any = 0, all = ~0ull;
    for (int i = 0; i < 64; i++) {
        uint64_t v = id_random64();
        any |= v;
        all &= v;
    }
    assert_true(any == ~0ull);
    assert_true(all == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_time_in_first_48_bits),
        cmocka_unit_test(test_unique_over_100k),
        cmocka_unit_test(test_later_sorts_after),
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_session_and_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
