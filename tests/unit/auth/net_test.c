/*
 * net_test: allowlist networks in their normal form (host bits cleared,
 * bare addresses as /32 and /128, IPv4-mapped networks as IPv4, strict
 * prefixes), client addresses matched against them (IPv4, IPv6 and
 * IPv4-mapped IPv6), and the keys failures are counted under.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "auth_net.h"

#include <string.h>

static void test_normalize(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } good[] = {
        {"10.0.0.0/8", "10.0.0.0/8"},
        {"10.1.2.3/8", "10.0.0.0/8"},
        {"192.0.2.77", "192.0.2.77/32"},
        {"192.0.2.77/32", "192.0.2.77/32"},
        {"192.0.2.130/25", "192.0.2.128/25"},
        {"0.0.0.0/0", "0.0.0.0/0"},
        {"2001:DB8::1", "2001:db8::1/128"},
        {"2001:db8:0:0:1::/64", "2001:db8::/64"},
        {"2001:db8:abcd:12ff::/56", "2001:db8:abcd:1200::/56"},
        {"::/0", "::/0"},
        {"::ffff:192.0.2.1", "192.0.2.1/32"},
        {"::ffff:10.0.0.0/104", "10.0.0.0/8"},
        {"::ffff:0:0/96", "0.0.0.0/0"},
        {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
         "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"},
    };
    char out[AUTH_NETWORK_MAX + 1];
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        if (auth_net_normalize(good[i].in, out) < 0)
            fail_msg("%s refused", good[i].in);
        if (strcmp(out, good[i].out) != 0)
            fail_msg("%s -> %s, want %s", good[i].in, out, good[i].out);
    }
    static const char *const bad[] = {"",
                                      "10.0.0.0/",
                                      "10.0.0.0/33",
                                      "10.0.0.0/-1",
                                      "10.0.0.0/+8",
                                      "10.0.0.0/ 8",
                                      "10.0.0.0/8x",
                                      "10.0.0.0/0008",
                                      "10.0.0/8",
                                      "10.0.0.256",
                                      "example.test",
                                      "::1/129",
                                      " 10.0.0.1",
                                      "fe80::1%eth0",
                                      "/8",
                                      "1.2.3.4/8/8"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (auth_net_normalize(bad[i], out) == 0)
            fail_msg("\"%s\" accepted as %s", bad[i], out);
    assert_int_equal(auth_net_normalize(NULL, out), -1);
}

static void test_allowed(void **state)
{
    (void)state;
    char *nets[] = {(char *)"10.0.0.0/8", (char *)"192.0.2.77/32", (char *)"2001:db8::/32"};
    static const struct {
        const char *ip;
        int want;
    } cases[] = {
        {"10.1.2.3", 1},
        {"10.255.255.255", 1},
        {"11.0.0.1", 0},
        {"192.0.2.77", 1},
        {"192.0.2.78", 0},
        {"::ffff:10.9.9.9", 1}, /* IPv4-mapped: matches the IPv4 network */
        {"::ffff:192.0.2.77", 1},
        {"::ffff:11.0.0.1", 0},
        {"2001:db8:1::5", 1},
        {"2001:db9::5", 0},
        {"[2001:db8::1]", 1},
        {"::1", 0},
        {"127.0.0.1", 0},
        {"", 0},
        {"not-an-address", 0},
        {"10.1.2.3:25", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (auth_net_allowed(nets, 3, cases[i].ip) != cases[i].want)
            fail_msg("%s: want %d", cases[i].ip, cases[i].want);
    assert_int_equal(auth_net_allowed(nets, 3, NULL), 0);
    assert_int_equal(auth_net_allowed(nets, 0, "10.1.2.3"), 0);
    /* IPv6 networks do not match IPv4 clients, and ::/0 holds every IPv6 address */
    char *v6[] = {(char *)"::/0"};
    assert_int_equal(auth_net_allowed(v6, 1, "2001:db8::1"), 1);
    assert_int_equal(auth_net_allowed(v6, 1, "192.0.2.1"), 0);
}

static void test_client_key(void **state)
{
    (void)state;
    static const struct {
        const char *ip, *key;
    } cases[] = {
        {"192.0.2.7", "192.0.2.7"},
        {"::ffff:192.0.2.7", "192.0.2.7"},
        {"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
        {"2001:db8:1:2::ffff", "2001:db8:1:2::/64"},
        {"[::1]", "::/64"},
    };
    char key[AUTH_NET_KEY_MAX];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(auth_net_client_key(cases[i].ip, key, sizeof(key)), 0);
        assert_string_equal(key, cases[i].key);
    }
    assert_int_equal(auth_net_client_key("", key, sizeof(key)), -1);
    assert_int_equal(auth_net_client_key("host.example", key, sizeof(key)), -1);
    assert_int_equal(auth_net_client_key(NULL, key, sizeof(key)), -1);
    char tiny[4];
    assert_int_equal(auth_net_client_key("192.0.2.7", tiny, sizeof(tiny)), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_allowed),
        cmocka_unit_test(test_client_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
