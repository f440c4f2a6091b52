/*
 * header_test: finding header fields and reading address lists.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "mail/header.h"

#include <stdio.h>
#include <string.h>

static void test_block_end(void **state)
{
    (void)state;
    const char *m = "From: a@b\r\nSubject: x\r\n\r\nbody\r\n";
    assert_int_equal(header_block_end(m, strlen(m)), 25);
    assert_int_equal(header_block_end("\r\nbody", 6), 2);
    assert_int_equal(header_block_end("From: a@b\r\nSubj", 15), -1);
    /* a bare LF blank line does not end the block */
    assert_int_equal(header_block_end("From: a@b\n\nbody", 15), -1);
}

static void test_field_unfolds_and_counts(void **state)
{
    (void)state;
    const char *m = "Subject: hello\r\nfrom: \"Name\" <a@example.test>,\r\n\tb@example.test\r\n"
                    "X: y\r\nFrom: second@x.test\r\n\r\nFrom: in-body@x.test\r\n";
    char v[256];
    assert_int_equal(header_field(m, strlen(m), "From", v, sizeof(v)), 2);
    assert_string_equal(v, " \"Name\" <a@example.test>,\tb@example.test");
    assert_int_equal(header_field(m, strlen(m), "Subject", v, sizeof(v)), 1);
    assert_string_equal(v, " hello");
    assert_int_equal(header_field(m, strlen(m), "Sender", v, sizeof(v)), 0);
    assert_string_equal(v, "");
    /* a field name that is a prefix of another does not match */
    assert_int_equal(header_field(m, strlen(m), "X-", v, sizeof(v)), 0);
}

static void test_field_cut_to_size(void **state)
{
    (void)state;
    const char *m = "From: abcdefghijklmnop@example.test\r\n\r\n";
    char v[8];
    assert_int_equal(header_field(m, strlen(m), "From", v, sizeof(v)), 1);
    assert_string_equal(v, " abcdef");
}

typedef struct collected {
    char list[8][128];
    int n;
} collected_t;

static void collect(const char *addr, void *arg)
{
    collected_t *c = arg;
    if (c->n < 8)
        snprintf(c->list[c->n++], sizeof(c->list[0]), "%s", addr);
}

typedef struct addr_case {
    const char *value;
    int count;
    const char *first;
    const char *last;
} addr_case_t;

static void test_addresses(void **state)
{
    (void)state;
    static const addr_case_t cases[] = {
        {" a@example.test", 1, "a@example.test", "a@example.test"},
        {" App <app@example.test>", 1, "app@example.test", "app@example.test"},
        {" \"Doe, John\" <jd@example.test>, x@y.test", 2, "jd@example.test", "x@y.test"},
        {" a@b.test (comment, with comma)", 1, "a@b.test", "a@b.test"},
        {" (lead) Name (c) <n@d.test> (trail)", 1, "n@d.test", "n@d.test"},
        {" Team: a@t.test, B <b@t.test>;, c@u.test", 3, "a@t.test", "c@u.test"},
        {" Undisclosed recipients:;", 0, NULL, NULL},
        {" \"quoted local\"@example.test", 1, "\"quoted local\"@example.test",
         "\"quoted local\"@example.test"},
        {" first.last@sub.example.test", 1, "first.last@sub.example.test",
         "first.last@sub.example.test"},
        {" =?UTF-8?B?w6k=?= <e@x.test>", 1, "e@x.test", "e@x.test"},
        {" user@[192.0.2.1]", 1, "user@[192.0.2.1]", "user@[192.0.2.1]"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        collected_t c = {0};
        int n = header_addresses(cases[i].value, collect, &c);
        if (n != cases[i].count)
            fail_msg("case %zu (%s): %d addresses, want %d", i, cases[i].value, n,
                     cases[i].count);
        if (cases[i].first) {
            assert_string_equal(c.list[0], cases[i].first);
            assert_string_equal(c.list[c.n - 1], cases[i].last);
        }
    }
}

static void test_addresses_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {" <unterminated@example.test", " no-at-sign",
                                      " a@", " Name <a@b.test> trailing@x", " <@route:a@b>"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        collected_t c = {0};
        if (header_addresses(bad[i], collect, &c) != -1)
            fail_msg("accepted %s", bad[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_block_end),
        cmocka_unit_test(test_field_unfolds_and_counts),
        cmocka_unit_test(test_field_cut_to_size),
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_addresses_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
