/*
 * cmd_test: command line parsing of the sandbox: line intake (CR, control
 * octets), verb splitting, FROM:/TO: keywords, numbers and BDAT arguments.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sandbox_cmd.h"

static void test_line_take(void **state)
{
    (void)state;
    char out[CMD_LINE_MAX];
    assert_int_equal(cmd_line_take("NOOP\r", 5, out), CMD_LINE_OK);
    assert_string_equal(out, "NOOP");
    assert_int_equal(cmd_line_take("NOOP", 4, out), CMD_LINE_OK); /* bare LF ending */
    assert_string_equal(out, "NOOP");
    assert_int_equal(cmd_line_take("HELO\tx", 6, out), CMD_LINE_OK);
    assert_int_equal(cmd_line_take("NO\0OP", 5, out), CMD_LINE_CONTROL);
    assert_int_equal(cmd_line_take("A\rB", 3, out), CMD_LINE_CONTROL);
    assert_int_equal(cmd_line_take("DEL\x7f", 4, out), CMD_LINE_CONTROL);
    assert_int_equal(cmd_line_take("RCPT TO:<jos\xc3\xa9@x.y>", 19, out), CMD_LINE_OK);
    /* never writes past the buffer, even when asked to */
    char big[CMD_LINE_MAX * 2];
    memset(big, 'x', sizeof(big));
    assert_int_equal(cmd_line_take(big, sizeof(big), out), CMD_LINE_OK);
    assert_int_equal(strlen(out), CMD_LINE_MAX - 1);
}

static void test_split(void **state)
{
    (void)state;
    static const struct {
        const char *line, *verb, *args;
    } cases[] = {
        {"ehlo client.test", "EHLO", "client.test"},
        {"MAIL FROM:<a@b.c> SIZE=10", "MAIL", "FROM:<a@b.c> SIZE=10"},
        {"QUIT", "QUIT", ""},
        {"  noop   x", "NOOP", "x"},
        {"NOOP\targ", "NOOP", "arg"},
        {"", "", ""},
        {"VERYLONGVERBNAMEOVERSIXTEEN x", "?ERYLONGVERBNAM", "x"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char verb[CMD_VERB_MAX];
        const char *args;
        cmd_split(cases[i].line, verb, &args);
        assert_string_equal(verb, cases[i].verb);
        assert_string_equal(args, cases[i].args);
    }
}

static void test_keyword(void **state)
{
    (void)state;
    assert_string_equal(cmd_after_keyword("FROM:<a@b.c>", "FROM:"), "<a@b.c>");
    assert_string_equal(cmd_after_keyword("from:  <a@b.c>", "FROM:"), "<a@b.c>");
    assert_string_equal(cmd_after_keyword("To:<x@y.z>", "TO:"), "<x@y.z>");
    assert_null(cmd_after_keyword("TO <x@y.z>", "TO:"));
    assert_null(cmd_after_keyword("FRO:<a@b.c>", "FROM:"));
    assert_null(cmd_after_keyword("", "TO:"));
}

static void test_number(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(cmd_number("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(cmd_number("67108864", &v), 0);
    assert_int_equal(v, 67108864);
    assert_int_equal(cmd_number("9999999999999999999", &v), 0); /* 19 digits fit */
    static const char *const bad[] = {"", "-1", "+1", "1k", " 1", "1 ", "0x10",
                                      "99999999999999999999" /* 20 digits */};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(cmd_number(bad[i], &v), -1);
}

static void test_bdat(void **state)
{
    (void)state;
    static const struct {
        const char *args;
        int rc;
        uint64_t size;
        int last;
    } cases[] = {
        {"100", 0, 100, 0},
        {"0 LAST", 0, 0, 1},
        {"5 last", 0, 5, 1},
        {"5  LAST  ", 0, 5, 1},
        {"", -1, 0, 0},
        {"LAST", -1, 0, 0},
        {"5 LASTX", -1, 0, 0},
        {"5 FIRST", -1, 0, 0},
        {"-5", -1, 0, 0},
        {"5x LAST", -1, 0, 0},
        {"99999999999999999999 LAST", -1, 0, 0},
        {"5 LAST extra", -1, 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t size = 12345;
        int last = 7;
        int rc = cmd_bdat_parse(cases[i].args, &size, &last);
        if (rc != cases[i].rc)
            fail_msg("\"%s\": rc %d, want %d", cases[i].args, rc, cases[i].rc);
        if (rc == 0) {
            assert_int_equal(size, cases[i].size);
            assert_int_equal(last, cases[i].last);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_take), cmocka_unit_test(test_split),
        cmocka_unit_test(test_keyword),   cmocka_unit_test(test_number),
        cmocka_unit_test(test_bdat),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
