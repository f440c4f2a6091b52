/*
 * sock_test: numeric address parsing and printing, listening, accepting and
 * non-blocking connects on loopback (IPv4 and, where the host has it, IPv6),
 * refused connects and binding the source address.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <unistd.h>

#include "net/sock.h"

static void test_addr_parse(void **state)
{
    (void)state;
    static const struct {
        const char *host;
        int rc;
        int family;
        const char *printed;
    } cases[] = {
        {"127.0.0.1", 0, AF_INET, "127.0.0.1"},
        {"192.0.2.255", 0, AF_INET, "192.0.2.255"},
        {"::1", 0, AF_INET6, "::1"},
        {"[::1]", 0, AF_INET6, "::1"},
        {"2001:db8::1", 0, AF_INET6, "2001:db8::1"},
        {"[2001:DB8:0:0::7]", 0, AF_INET6, "2001:db8::7"},
        {"::ffff:192.0.2.1", 0, AF_INET6, "192.0.2.1"}, /* mapped: shown as IPv4 */
        {"localhost", -1, 0, NULL},
        {"mx.example.org", -1, 0, NULL},
        {"1.2.3", -1, 0, NULL},
        {"256.1.1.1", -1, 0, NULL},
        {"", -1, 0, NULL},
        {"[::1", -1, 0, NULL},
        {"[]", -1, 0, NULL},
        {"[127.0.0.1]x", -1, 0, NULL},
        {"[[::1]]", -1, 0, NULL},
        {"[0000:0000:0000:0000:0000:0000:0000:0000:0001]", -1, 0, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sock_addr_t a;
        int rc = sock_addr_parse(cases[i].host, 2525, &a);
        if (rc != cases[i].rc)
            fail_msg("parse \"%s\": %d, want %d", cases[i].host, rc, cases[i].rc);
        if (rc != 0)
            continue;
        assert_int_equal(a.ss.ss_family, cases[i].family);
        assert_int_equal(sock_addr_port(&a), 2525);
        char buf[SOCK_ADDR_MAX];
        assert_string_equal(sock_addr_ip(&a, buf, sizeof(buf)), cases[i].printed);
    }
    /* ports are kept exactly, up to 65535 */
    sock_addr_t a;
    assert_int_equal(sock_addr_parse("127.0.0.1", 65535, &a), 0);
    assert_int_equal(sock_addr_port(&a), 65535);
    assert_int_equal(sock_addr_parse("::1", 0, &a), 0);
    assert_int_equal(sock_addr_port(&a), 0);
}

/* Wait for fd to be ready for events; 1 if it was within ms. */
static int wait_fd(int fd, short events, int ms)
{
    struct pollfd p = {.fd = fd, .events = events};
    return poll(&p, 1, ms) == 1;
}

static void connect_accept(const char *host)
{
    char err[256] = "";
    int lfd = sock_listen(host, 0, 16, err, sizeof(err));
    if (lfd < 0)
        fail_msg("listen %s: %s", host, err);
    sock_addr_t local;
    assert_int_equal(sock_local(lfd, &local), 0);
    unsigned port = sock_addr_port(&local);
    assert_true(port > 0);

    /* nothing to accept yet: non-blocking */
    sock_addr_t peer;
    assert_int_equal(sock_accept(lfd, &peer), -1);
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);

    sock_addr_t dst;
    assert_int_equal(sock_addr_parse(host, port, &dst), 0);
    int cfd = sock_connect(&dst, NULL);
    assert_true(cfd >= 0);
    assert_true(wait_fd(cfd, POLLOUT, 2000));
    assert_int_equal(sock_connect_result(cfd), 0);
    assert_true(wait_fd(lfd, POLLIN, 2000));
    int afd = sock_accept(lfd, &peer);
    assert_true(afd >= 0);

    /* the two ends see each other's addresses */
    sock_addr_t c_local, a_peer;
    assert_int_equal(sock_local(cfd, &c_local), 0);
    assert_int_equal(sock_peer(afd, &a_peer), 0);
    assert_int_equal(sock_addr_port(&c_local), sock_addr_port(&peer));
    assert_int_equal(sock_addr_port(&a_peer), sock_addr_port(&peer));
    char b1[SOCK_ADDR_MAX], b2[SOCK_ADDR_MAX];
    assert_string_equal(sock_addr_ip(&peer, b1, sizeof(b1)),
                        sock_addr_ip(&c_local, b2, sizeof(b2)));

    /* bytes pass; the accepted socket is non-blocking too */
    assert_int_equal(write(cfd, "ping", 4), 4);
    assert_true(wait_fd(afd, POLLIN, 2000));
    char buf[8];
    assert_int_equal(read(afd, buf, sizeof(buf)), 4);
    assert_memory_equal(buf, "ping", 4);
    assert_int_equal(read(afd, buf, sizeof(buf)), -1);
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);

    close(afd);
    close(cfd);
    close(lfd);
}

static void test_listen_connect_accept_v4(void **state)
{
    (void)state;
    connect_accept("127.0.0.1");
}

static void test_listen_connect_accept_v6(void **state)
{
    (void)state;
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    sock_addr_t a;
    sock_addr_parse("::1", 0, &a);
    if (probe < 0 || bind(probe, (struct sockaddr *)&a.ss, a.len) < 0) {
        if (probe >= 0)
            close(probe);
        skip(); /* no IPv6 loopback on this host */
    }
    close(probe);
    connect_accept("::1");
}

static void test_listen_errors(void **state)
{
    (void)state;
    char err[256] = "";
    assert_int_equal(sock_listen("localhost", 25, 16, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "localhost"));
    assert_non_null(strstr(err, "not a numeric"));
    /* an address this host does not have */
    err[0] = '\0';
    assert_int_equal(sock_listen("192.0.2.1", 0, 16, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "192.0.2.1"));
}

static void test_refused_and_source(void **state)
{
    (void)state;
    /* a port with nobody listening: the connect result says so */
    char err[256];
    int lfd = sock_listen("127.0.0.1", 0, 1, err, sizeof(err));
    sock_addr_t local;
    sock_local(lfd, &local);
    unsigned port = sock_addr_port(&local);
    close(lfd);
    sock_addr_t dst;
    sock_addr_parse("127.0.0.1", port, &dst);
    int fd = sock_connect(&dst, NULL);
    if (fd >= 0) {
        assert_true(wait_fd(fd, POLLOUT, 2000));
        assert_int_equal(sock_connect_result(fd), ECONNREFUSED);
        close(fd);
    } else {
        assert_int_equal(errno, ECONNREFUSED);
    }

    /* a chosen source address is used */
    lfd = sock_listen("127.0.0.1", 0, 4, err, sizeof(err));
    sock_local(lfd, &local);
    sock_addr_parse("127.0.0.1", sock_addr_port(&local), &dst);
    sock_addr_t src;
    sock_addr_parse("127.0.0.2", 0, &src);
    fd = sock_connect(&dst, &src);
    assert_true(fd >= 0);
    assert_true(wait_fd(fd, POLLOUT, 2000));
    assert_int_equal(sock_connect_result(fd), 0);
    sock_addr_t me;
    sock_local(fd, &me);
    char buf[SOCK_ADDR_MAX];
    assert_string_equal(sock_addr_ip(&me, buf, sizeof(buf)), "127.0.0.2");
    close(fd);

    /* a source address of the wrong family fails at once */
    sock_addr_t src6;
    sock_addr_parse("::1", 0, &src6);
    assert_int_equal(sock_connect(&dst, &src6), -1);
    close(lfd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addr_parse),
        cmocka_unit_test(test_listen_connect_accept_v4),
        cmocka_unit_test(test_listen_connect_accept_v6),
        cmocka_unit_test(test_listen_errors),
        cmocka_unit_test(test_refused_and_source),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
