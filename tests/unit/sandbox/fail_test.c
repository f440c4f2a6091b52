/*
 * fail_test: recipient steering by local part and the operator's fail mode
 * (validation, expiry, clearing, enhanced codes), table-driven.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sandbox_fail.h"

static void test_steer_classify(void **state)
{
    (void)state;
    static const struct {
        const char *local;
        steer_t want;
    } cases[] = {
        {"fail-421-x", STEER_FAIL_421},
        {"FAIL-421-", STEER_FAIL_421},
        {"Fail-450-later", STEER_FAIL_450},
        {"fail-550-nobody", STEER_FAIL_550},
        {"slow-tarpit", STEER_SLOW},
        {"SLOW-", STEER_SLOW},
        {"drop-me", STEER_DROP},
        {"\"drop-quoted\"", STEER_DROP},
        {"user", STEER_NONE},
        {"fail-421", STEER_NONE},   /* the prefix needs its dash */
        {"fail-500-x", STEER_NONE}, /* not a steering code */
        {"xslow-a", STEER_NONE},    /* a prefix, not a substring */
        {"slo", STEER_NONE},
        {"", STEER_NONE},
        {"\"", STEER_NONE},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        steer_t got = steer_classify(cases[i].local);
        if (got != cases[i].want)
            fail_msg("%s: got %s, want %s", cases[i].local, steer_name(got),
                     steer_name(cases[i].want));
    }
    assert_int_equal(steer_classify(NULL), STEER_NONE);
}

static void test_fail_mode_valid(void **state)
{
    (void)state;
    static const unsigned codes[] = {421, 450, 451, 550, 554};
    static const char *const enh[] = {"4.3.2", "4.2.1", "4.3.0", "5.2.1", "5.3.0"};
    for (size_t i = 0; i < 5; i++) {
        fail_mode_t f;
        memset(&f, 0, sizeof(f));
        char err[256] = "";
        assert_int_equal(fail_mode_set(&f, codes[i], 30, "drill", 1000, 5000000, err, sizeof(err)),
                         0);
        assert_int_equal(f.code, codes[i]);
        assert_string_equal(f.text, "drill");
        assert_int_equal(f.until_wall, 5000000 + 30000);
        assert_int_equal(fail_mode_code(&f, 1000), codes[i]);
        assert_int_equal(fail_mode_code(&f, 30999), codes[i]);
        assert_int_equal(fail_mode_code(&f, 31000), 0); /* over exactly on time */
        assert_int_equal(fail_mode_seconds_left(&f, 1000), 30);
        assert_int_equal(fail_mode_seconds_left(&f, 30500), 1); /* rounded up */
        assert_int_equal(fail_mode_seconds_left(&f, 31000), 0);
        assert_string_equal(fail_enhanced(codes[i]), enh[i]);
        assert_true(strlen(fail_default_text(codes[i])) > 0);
    }
}

static void test_fail_mode_clear_and_default_text(void **state)
{
    (void)state;
    fail_mode_t f;
    memset(&f, 0, sizeof(f));
    char err[256];
    assert_int_equal(fail_mode_set(&f, 421, 60, NULL, 0, 0, err, sizeof(err)), 0);
    assert_string_equal(f.text, "");
    assert_int_equal(fail_mode_code(&f, 10), 421);
    /* code 0 clears at once, whatever seconds say */
    assert_int_equal(fail_mode_set(&f, 0, 999999, "ignored", 10, 10, err, sizeof(err)), 0);
    assert_int_equal(fail_mode_code(&f, 10), 0);
    assert_int_equal(fail_mode_seconds_left(&f, 10), 0);
}

static void test_fail_mode_invalid(void **state)
{
    (void)state;
    char long_text[FAIL_TEXT_MAX + 2];
    memset(long_text, 'a', sizeof(long_text) - 1);
    long_text[sizeof(long_text) - 1] = '\0';
    static const struct {
        unsigned code;
        uint64_t seconds;
        const char *text;
    } cases[] = {
        {250, 10, ""},  {499, 10, ""},   {420, 10, ""},      {1, 10, ""},
        {421, 0, ""},   {450, FAIL_SECONDS_MAX + 1ull, ""}, {550, 10, "two\r\nlines"},
        {554, 10, "tab\there"}, {450, 10, "caf\xc3\xa9"}, {451, 10, NULL /* long_text */},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fail_mode_t f;
        memset(&f, 0, sizeof(f));
        assert_int_equal(fail_mode_set(&f, 421, 60, "before", 0, 0, (char[64]){0}, 64), 0);
        char err[256] = "";
        const char *text = cases[i].text ? cases[i].text : long_text;
        if (fail_mode_set(&f, cases[i].code, cases[i].seconds, text, 0, 0, err, sizeof(err)) != -1)
            fail_msg("case %zu (code %u) was accepted", i, cases[i].code);
        assert_true(err[0] != '\0');
        /* a refused request leaves the mode as it was */
        assert_int_equal(f.code, 421);
        assert_string_equal(f.text, "before");
    }
    /* exactly FAIL_TEXT_MAX octets is fine */
    fail_mode_t f;
    memset(&f, 0, sizeof(f));
    long_text[FAIL_TEXT_MAX] = '\0';
    char err[256];
    assert_int_equal(fail_mode_set(&f, 451, FAIL_SECONDS_MAX, long_text, 0, 0, err, sizeof(err)),
                     0);
    assert_int_equal(strlen(f.text), FAIL_TEXT_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_steer_classify),
        cmocka_unit_test(test_fail_mode_valid),
        cmocka_unit_test(test_fail_mode_clear_and_default_text),
        cmocka_unit_test(test_fail_mode_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
