/*
 * sts_test: MTA-STS (RFC 8461) pieces: the _mta-sts TXT record (the RFC's
 * example, several records, malformed ids and fields), policy files (the
 * RFC's example, CRLF and LF, unknown and repeated fields, every way a
 * policy is refused), MX pattern matching (4.1: a wildcard stands for one
 * label), and the cache (expiry by max_age, replacement, eviction).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "delivery_sts.h"

static int txt(const char *const *recs, size_t n, char *id)
{
    char why[160];
    return sts_txt_parse(recs, n, id, STS_ID_MAX + 1, why, sizeof(why));
}

static void test_txt_records(void **state)
{
    (void)state;
    char id[STS_ID_MAX + 1];
    const char *rfc[] = {"v=STSv1; id=20160831085700Z;"};
    assert_int_equal(txt(rfc, 1, id), 1);
    assert_string_equal(id, "20160831085700Z");

    const char *plain[] = {"v=STSv1;id=abc"};
    assert_int_equal(txt(plain, 1, id), 1);
    assert_string_equal(id, "abc");

    /* other TXT records at the name are ignored; unknown fields too; the first id wins */
    const char *mixed[] = {"google-site-verification=xyz", "v=STSv1; ext=1.2; id=A1; id=B2"};
    assert_int_equal(txt(mixed, 2, id), 1);
    assert_string_equal(id, "A1");

    const char *none[] = {"v=spf1 -all", "v=STSv10; id=1;", "V=STSv1; id=1;"};
    assert_int_equal(txt(none, 3, id), 0);
    assert_int_equal(txt(none, 0, id), 0);

    static const char *const bad[] = {
        "v=STSv1;",                                       /* no id */
        "v=STSv1; id=;",                                  /* empty id */
        "v=STSv1; id=has-dash;",                          /* not alphanumeric */
        "v=STSv1; id=123456789012345678901234567890123;", /* 33 characters */
        "v=STSv1 id=1",                                   /* no delimiter */
        "v=STSv1; id=1 2;",                               /* a space inside a value */
        "v=STSv1; =1; id=2",                              /* a field without a name */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *one[] = {bad[i]};
        if (txt(one, 1, id) != -1)
            fail_msg("accepted %s", bad[i]);
    }
    /* two STSv1 records: no usable record (RFC 8461 3.1) */
    const char *two[] = {"v=STSv1; id=1;", "v=STSv1; id=2;"};
    assert_int_equal(txt(two, 2, id), -1);
}

static int parse(const char *text, sts_policy_t *p)
{
    char why[160];
    return sts_policy_parse(text, strlen(text), p, why, sizeof(why));
}

static void test_policy_rfc_example(void **state)
{
    (void)state;
    sts_policy_t p;
    assert_int_equal(parse("version: STSv1\r\n"
                           "mode: enforce\r\n"
                           "mx: mail.example.com\r\n"
                           "mx: *.example.net\r\n"
                           "mx: backupmx.example.com\r\n"
                           "max_age: 604800\r\n",
                           &p),
                     0);
    assert_int_equal(p.mode, STS_MODE_ENFORCE);
    assert_int_equal(p.max_age, 604800);
    assert_int_equal(p.nmx, 3);
    assert_string_equal(p.mx[1], "*.example.net");
    assert_true(sts_mx_matches(&p, "mail.example.com"));
    assert_true(sts_mx_matches(&p, "MAIL.example.com."));
    assert_true(sts_mx_matches(&p, "mx1.example.net"));
    assert_false(sts_mx_matches(&p, "example.net"));
    assert_false(sts_mx_matches(&p, "a.b.example.net"));
    assert_false(sts_mx_matches(&p, "other.example.com"));
    sts_policy_t copy;
    sts_policy_copy(&copy, &p);
    sts_policy_free(&p);
    assert_true(sts_mx_matches(&copy, "backupmx.example.com"));
    sts_policy_free(&copy);
}

static void test_policy_lenient_parts(void **state)
{
    (void)state;
    sts_policy_t p;
    /* LF lines, no final newline, fields in another order, unknown fields, blank lines,
     * a repeated mode (the first counts), trailing spaces, upper-case mx */
    assert_int_equal(parse("mx: MX1.Example.ORG\n"
                           "max_age: 86400\n"
                           "\n"
                           "mode: testing\n"
                           "mode: enforce\n"
                           "x-extension: whatever it says\n"
                           "version: STSv1   \n"
                           "mx: *.example.org",
                           &p),
                     0);
    assert_int_equal(p.mode, STS_MODE_TESTING);
    assert_int_equal(p.nmx, 2);
    assert_string_equal(p.mx[0], "mx1.example.org");
    sts_policy_free(&p);
    /* mode none needs no mx; a huge max_age is capped at a year */
    assert_int_equal(parse("version: STSv1\nmode: none\nmax_age: 9999999999\n", &p), 0);
    assert_int_equal(p.mode, STS_MODE_NONE);
    assert_int_equal(p.max_age, STS_MAX_AGE_MAX);
    sts_policy_free(&p);
}

static void test_policy_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "mode: enforce\nmx: a.example\nmax_age: 1\n",                           /* no version */
        "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n",           /* other version */
        "version: STSv1\nmx: a.example\nmax_age: 1\n",                          /* no mode */
        "version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n",            /* unknown mode */
        "version: STSv1\nmode: enforce\nmx: a.example\n",                       /* no max_age */
        "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n",          /* not digits */
        "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 12345678901\n", /* 11 digits */
        "version: STSv1\nmode: enforce\nmax_age: 100\n",                        /* enforce, no mx */
        "version: STSv1\nmode: testing\nmax_age: 100\n",                        /* testing, no mx */
        "version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 1\n",          /* empty label */
        "version: STSv1\nmode: enforce\nmx: *.*.example\nmax_age: 1\n",         /* two wildcards */
        "version: STSv1\nmode: enforce\nmx: a.example/x\nmax_age: 1\n",         /* not a name */
        "version: STSv1\nmode: enforce\nthis line has no colon\nmx: a.example\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n<html>\n",
        "<html><body>404</body></html>",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sts_policy_t p;
        if (parse(bad[i], &p) != -1)
            fail_msg("accepted policy %zu: %s", i, bad[i]);
        assert_int_equal(p.nmx, 0); /* nothing left to free */
    }
    /* over the size bound */
    static char big[STS_POLICY_MAX + 2];
    memset(big, '\n', sizeof(big));
    sts_policy_t p;
    char why[160];
    assert_int_equal(sts_policy_parse(big, sizeof(big), &p, why, sizeof(why)), -1);
}

static void test_patterns(void **state)
{
    (void)state;
    assert_true(sts_pattern_matches("mail.example.com", "mail.example.com"));
    assert_true(sts_pattern_matches("mail.example.com", "Mail.Example.Com."));
    assert_false(sts_pattern_matches("mail.example.com", "xmail.example.com"));
    assert_true(sts_pattern_matches("*.example.com", "mx.example.com"));
    assert_false(sts_pattern_matches("*.example.com", "example.com"));
    assert_false(sts_pattern_matches("*.example.com", "a.mx.example.com"));
    assert_false(sts_pattern_matches("*.example.com", ".example.com"));
    assert_false(sts_pattern_matches("*.example.com", "mx.example.com.evil"));
}

static sts_policy_t make_policy(const char *id, uint64_t max_age, const char *mx)
{
    sts_policy_t p;
    char text[256];
    snprintf(text, sizeof(text), "version: STSv1\nmode: enforce\nmx: %s\nmax_age: %llu\n", mx,
             (unsigned long long)max_age);
    assert_int_equal(parse(text, &p), 0);
    snprintf(p.id, sizeof(p.id), "%s", id);
    return p;
}

static void test_cache(void **state)
{
    (void)state;
    sts_cache_t *c = sts_cache_new(2);
    sts_policy_t p1 = make_policy("one", 100, "mx1.a.example");
    sts_cache_put(c, "A.example", &p1, 1000);
    sts_policy_free(&p1); /* the cache keeps its own copy */
    const sts_policy_t *got = sts_cache_get(c, "a.example", 1000 + 99999);
    assert_non_null(got);
    assert_string_equal(got->id, "one");
    assert_true(sts_mx_matches(got, "mx1.a.example"));
    /* max_age is in seconds: gone at 100 s */
    assert_null(sts_cache_get(c, "a.example", 1000 + 100000));
    assert_int_equal(sts_cache_count(c), 0);

    /* a new policy for a domain replaces the old */
    sts_policy_t p2 = make_policy("two", 100, "mx2.a.example");
    sts_policy_t p3 = make_policy("three", 100, "mx3.a.example");
    sts_cache_put(c, "a.example", &p2, 0);
    sts_cache_put(c, "a.example", &p3, 0);
    assert_int_equal(sts_cache_count(c), 1);
    assert_string_equal(sts_cache_get(c, "a.example", 10)->id, "three");
    /* full (max 2): the entry stored longest ago leaves */
    sts_cache_put(c, "b.example", &p2, 1);
    sts_cache_put(c, "c.example", &p2, 2);
    assert_int_equal(sts_cache_count(c), 2);
    assert_null(sts_cache_get(c, "a.example", 10));
    assert_non_null(sts_cache_get(c, "b.example", 10));
    assert_non_null(sts_cache_get(c, "c.example", 10));
    sts_policy_free(&p2);
    sts_policy_free(&p3);
    sts_cache_destroy(&c);
    assert_null(c);
    sts_cache_destroy(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_txt_records),
        cmocka_unit_test(test_policy_rfc_example),
        cmocka_unit_test(test_policy_lenient_parts),
        cmocka_unit_test(test_policy_refused),
        cmocka_unit_test(test_patterns),
        cmocka_unit_test(test_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
