/*
 * isotime: ISO 8601 formatting and the strict parser used for --since
 * and --until (CLI and HTTP API). Table-driven.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/isotime.h"

static void test_format(void **state)
{
    (void)state;
    char b[ISOTIME_SIZE];
    assert_string_equal(isotime_format(0, 1, b, sizeof(b)), "1970-01-01T00:00:00.000Z");
    assert_string_equal(isotime_format(1700000000123ull, 1, b, sizeof(b)),
                        "2023-11-14T22:13:20.123Z");
    assert_string_equal(isotime_format(1700000000123ull, 0, b, sizeof(b)), "2023-11-14T22:13:20Z");
    assert_string_equal(isotime_format(951782400000ull, 0, b, sizeof(b)), "2000-02-29T00:00:00Z");
}

static void test_parse_accepts(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        uint64_t ms;
    } cases[] = {
        {"1970-01-01", 0},
        {"2023-11-14T22:13:20.123Z", 1700000000123ull},
        {"2023-11-14T22:13:20Z", 1700000000000ull},
        {"2023-11-14T22:13:20", 1700000000000ull},
        {"2023-11-14 22:13:20", 1700000000000ull},
        {"2023-11-14T22:13Z", 1700000000000ull - 20000},
        {"2023-11-14T22:13:20.1Z", 1700000000100ull},
        {"2023-11-14T22:13:20.123456Z", 1700000000123ull},
        {"2023-11-15T00:13:20+02:00", 1700000000000ull},
        {"2023-11-14T20:13:20-0200", 1700000000000ull},
        {"2000-02-29", 951782400000ull},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t ms = 1;
        if (isotime_parse(cases[i].text, &ms) != 0)
            fail_msg("refused %s", cases[i].text);
        if (ms != cases[i].ms)
            fail_msg("%s -> %llu, want %llu", cases[i].text, (unsigned long long)ms,
                     (unsigned long long)cases[i].ms);
    }
}

static void test_parse_refuses(void **state)
{
    (void)state;
    static const char *bad[] = {
        "",
        "now",
        "2023",
        "2023-11",
        "2023-13-01",
        "2023-02-29",
        "2023-11-31",
        "2023-11-14T",
        "2023-11-14T25:00",
        "2023-11-14T22:60",
        "2023-11-14T22:13:20.Z",
        "2023-11-14T22:13:20Q",
        "2023-11-14T22:13:20+2",
        "1969-12-31",
        "2023-11-14x",
        " 2023-11-14",
        "1700000000000",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t ms;
        if (isotime_parse(bad[i], &ms) == 0)
            fail_msg("accepted \"%s\"", bad[i]);
    }
}

static void test_round_trip(void **state)
{
    (void)state;
    char b[ISOTIME_SIZE];
    for (uint64_t ms = 1000000000000ull; ms < 2000000000000ull; ms += 123456789013ull) {
        uint64_t back;
        assert_int_equal(isotime_parse(isotime_format(ms, 1, b, sizeof(b)), &back), 0);
        assert_int_equal(back, ms);
    }
}

static void test_duration(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        uint64_t s;
    } good[] = {
        {"0", 0},   {"30s", 30}, {"5m", 300},      {"2h", 7200},      {"1d", 86400},
        {"90", 90}, {"0h", 0},   {"30d", 2592000}, {"720h", 2592000},
    };
    uint64_t v;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        if (ctl_duration_parse(good[i].text, 2592000, &v) < 0)
            fail_msg("%s refused", good[i].text);
        assert_int_equal(v, good[i].s);
    }
    static const char *const bad[] = {"",    "s",   "-5m",     "+5m",
                                      "5 m", "5mm", "1w",      "1.5h",
                                      "5M",  "31d", "2592001", "99999999999999999999",
                                      "0x10"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (ctl_duration_parse(bad[i], 2592000, &v) == 0)
            fail_msg("\"%s\" accepted as %llu", bad[i], (unsigned long long)v);
    assert_int_equal(ctl_duration_parse(NULL, 10, &v), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format),        cmocka_unit_test(test_parse_accepts),
        cmocka_unit_test(test_parse_refuses), cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_duration),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
