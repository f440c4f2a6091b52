/*
 * mx_test: the pure decisions of MX delivery: MX records in preference
 * order with equal preferences shuffled (a fixed seed gives a fixed order,
 * and over many seeds every host leads its preference), the null MX, name
 * normalisation, the address class of IPv4, IPv6 and IPv4-mapped
 * addresses, and the required-TLS name patterns.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "delivery_mx.h"
#include "delivery_resolve.h"

#include <ares.h>

static size_t make(mx_host_t *mx, const char *const *names, const unsigned *prefs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        assert_int_equal(mx_host_set(&mx[i], names[i], prefs[i]), 0);
    return n;
}

static void test_order_by_preference(void **state)
{
    (void)state;
    const char *names[] = {"c.example", "a.example", "d.example", "b.example", "e.example"};
    const unsigned prefs[] = {30, 10, 40, 20, 5};
    mx_host_t mx[5];
    make(mx, names, prefs, 5);
    uint64_t seed = 42;
    mx_order(mx, 5, &seed);
    const char *want[] = {"e.example", "a.example", "b.example", "c.example", "d.example"};
    for (size_t i = 0; i < 5; i++)
        assert_string_equal(mx[i].name, want[i]);
}

/* Hosts of equal preference stay after lower and before higher ones, in a seeded order. */
static void test_equal_preferences_shuffled(void **state)
{
    (void)state;
    const char *names[] = {"x1", "a1", "a2", "a3", "z1", "a4"};
    const unsigned prefs[] = {5, 10, 10, 10, 20, 10};
    int first_seen[4] = {0, 0, 0, 0};
    char fixed[4][MX_NAME_MAX];
    for (uint64_t s = 0; s < 400; s++) {
        mx_host_t mx[6];
        make(mx, names, prefs, 6);
        uint64_t seed = s;
        mx_order(mx, 6, &seed);
        assert_string_equal(mx[0].name, "x1");
        assert_string_equal(mx[5].name, "z1");
        int seen[4] = {0, 0, 0, 0};
        for (size_t i = 1; i < 5; i++) {
            assert_int_equal(mx[i].pref, 10);
            assert_int_equal(mx[i].name[0], 'a');
            seen[mx[i].name[1] - '1']++;
        }
        for (int k = 0; k < 4; k++)
            assert_int_equal(seen[k], 1); /* a permutation: nobody lost or doubled */
        first_seen[mx[1].name[1] - '1']++;
        if (s == 7)
            for (size_t i = 0; i < 4; i++)
                snprintf(fixed[i], sizeof(fixed[i]), "%s", mx[i + 1].name);
    }
    for (int k = 0; k < 4; k++)
        assert_true(first_seen[k] > 40); /* each leads about a quarter of the time */
    /* the same seed, the same order */
    mx_host_t mx[6];
    make(mx, names, prefs, 6);
    uint64_t seed = 7;
    mx_order(mx, 6, &seed);
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(mx[i + 1].name, fixed[i]);
}

static void test_null_mx(void **state)
{
    (void)state;
    mx_host_t mx[3];
    assert_int_equal(mx_host_set(&mx[0], ".", 0), 0);
    assert_string_equal(mx[0].name, "");
    assert_true(mx_is_null(mx, 1));
    assert_false(mx_is_null(mx, 0));
    assert_int_equal(mx_host_set(&mx[0], "", 0), 0);
    assert_true(mx_is_null(mx, 1));
    /* "." among real hosts is not a null MX: it is dropped and the others stay */
    assert_int_equal(mx_host_set(&mx[1], "MX1.Example.NET.", 10), 0);
    assert_int_equal(mx_host_set(&mx[2], "mx2.example.net", 20), 0);
    assert_false(mx_is_null(mx, 3));
    assert_int_equal(mx_drop_null(mx, 3), 2);
    assert_string_equal(mx[0].name, "mx1.example.net"); /* lowercase, no trailing dot */
    assert_string_equal(mx[1].name, "mx2.example.net");
    char longname[300];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(mx_host_set(&mx[0], longname, 0), -1);
}

static const struct {
    const char *ip;
    addr_class_t want;
} addr_table[] = {
    {"8.8.8.8", ADDR_PUBLIC},
    {"198.51.100.7", ADDR_PUBLIC},
    {"172.15.255.255", ADDR_PUBLIC},
    {"172.32.0.1", ADDR_PUBLIC},
    {"100.64.0.1", ADDR_PUBLIC},
    {"0.0.0.0", ADDR_UNSPECIFIED},
    {"0.1.2.3", ADDR_UNSPECIFIED},
    {"127.0.0.1", ADDR_LOOPBACK},
    {"127.255.0.9", ADDR_LOOPBACK},
    {"10.0.0.1", ADDR_PRIVATE},
    {"172.16.0.1", ADDR_PRIVATE},
    {"172.31.255.254", ADDR_PRIVATE},
    {"192.168.1.1", ADDR_PRIVATE},
    {"169.254.10.20", ADDR_LINK_LOCAL},
    {"224.0.0.1", ADDR_MULTICAST},
    {"239.255.255.250", ADDR_MULTICAST},
    {"240.0.0.1", ADDR_RESERVED},
    {"255.255.255.255", ADDR_RESERVED},
    {"2001:db8::25", ADDR_PUBLIC},
    {"2a00:1450:4001::1b", ADDR_PUBLIC},
    {"::", ADDR_UNSPECIFIED},
    {"::1", ADDR_LOOPBACK},
    {"fc00::1", ADDR_PRIVATE},
    {"fd12:3456::1", ADDR_PRIVATE},
    {"fec0::1", ADDR_PRIVATE},
    {"fe80::1", ADDR_LINK_LOCAL},
    {"febf::1", ADDR_LINK_LOCAL},
    {"ff02::1", ADDR_MULTICAST},
    {"::ffff:127.0.0.1", ADDR_LOOPBACK},
    {"::ffff:10.1.1.1", ADDR_PRIVATE},
    {"::ffff:8.8.4.4", ADDR_PUBLIC},
};

static void test_address_classes(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(addr_table) / sizeof(addr_table[0]); i++) {
        sock_addr_t a;
        assert_int_equal(sock_addr_parse(addr_table[i].ip, 25, &a), 0);
        addr_class_t got = mx_addr_class(&a);
        if (got != addr_table[i].want)
            fail_msg("%s: %s, want %s", addr_table[i].ip, mx_addr_class_name(got),
                     mx_addr_class_name(addr_table[i].want));
    }
    assert_string_equal(mx_addr_class_name(ADDR_LINK_LOCAL), "link-local");
}

static void test_patterns(void **state)
{
    (void)state;
    assert_true(mx_pattern_matches("gmail.com", "gmail.com"));
    assert_true(mx_pattern_matches("gmail.com", "GMAIL.COM."));
    assert_false(mx_pattern_matches("gmail.com", "mail.gmail.com"));
    assert_false(mx_pattern_matches("gmail.com", "xgmail.com"));
    assert_true(mx_pattern_matches("*.google.com", "aspmx.l.google.com"));
    assert_true(mx_pattern_matches("*.google.com", "gmail-smtp-in.l.google.com."));
    assert_false(mx_pattern_matches("*.google.com", "google.com"));
    assert_false(mx_pattern_matches("*.google.com", "notgoogle.com"));
    assert_false(mx_pattern_matches("*.google.com", "google.com.evil.test"));
    assert_false(mx_pattern_matches("", "a.b"));
    assert_false(mx_pattern_matches("a.b", ""));
}

static void test_dns_status(void **state)
{
    (void)state;
    assert_int_equal(resolve_status(ARES_SUCCESS), DNS_OK);
    assert_int_equal(resolve_status(ARES_ENOTFOUND), DNS_NXDOMAIN);
    assert_int_equal(resolve_status(ARES_ENODATA), DNS_NODATA);
    assert_int_equal(resolve_status(ARES_ETIMEOUT), DNS_TEMPFAIL);
    assert_int_equal(resolve_status(ARES_ESERVFAIL), DNS_TEMPFAIL);
    assert_int_equal(resolve_status(ARES_EREFUSED), DNS_TEMPFAIL);
    assert_int_equal(resolve_status(ARES_ECONNREFUSED), DNS_TEMPFAIL);
    assert_int_equal(resolve_status(ARES_EBADRESP), DNS_TEMPFAIL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_by_preference),
        cmocka_unit_test(test_equal_preferences_shuffled),
        cmocka_unit_test(test_null_mx),
        cmocka_unit_test(test_address_classes),
        cmocka_unit_test(test_patterns),
        cmocka_unit_test(test_dns_status),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
