/*
 * cidr: network parsing and prefix matching.
 */
#include "cidr.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cidr_parse(const char *text, cidr_t *out)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(text, '/');
    size_t hl = slash ? (size_t)(slash - text) : strlen(text);
    if (hl == 0 || hl >= sizeof(host))
        return -1;
    memcpy(host, text, hl);
    host[hl] = '\0';
    memset(out, 0, sizeof(*out));
    unsigned max;
    if (inet_pton(AF_INET, host, out->addr) == 1) {
        out->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, host, out->addr) == 1) {
        out->family = AF_INET6;
        max = 128;
    } else {
        return -1;
    }
    out->prefix = max;
    if (slash) {
        char *end;
        long p = strtol(slash + 1, &end, 10);
        if (slash[1] == '\0' || *end || p < 0 || (unsigned long)p > max)
            return -1;
        out->prefix = (unsigned)p;
    }
    return 0;
}

static int prefix_equal(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned bytes = bits / 8, rest = bits % 8;
    if (memcmp(a, b, bytes) != 0)
        return 0;
    if (rest == 0)
        return 1;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[bytes] & mask) == (b[bytes] & mask);
}

int cidr_match(const cidr_t *net, const sock_addr_t *addr)
{
    const struct sockaddr *sa = (const struct sockaddr *)&addr->ss;
    if (sa->sa_family == AF_INET) {
        const uint8_t *a = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
        return net->family == AF_INET && prefix_equal(net->addr, a, net->prefix);
    }
    if (sa->sa_family != AF_INET6)
        return 0;
    const uint8_t *a6 = (const uint8_t *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (net->family == AF_INET)
        return memcmp(a6, mapped, 12) == 0 && prefix_equal(net->addr, a6 + 12, net->prefix);
    return prefix_equal(net->addr, a6, net->prefix);
}

int cidr_match_any(const cidr_t *nets, size_t n, const sock_addr_t *addr)
{
    for (size_t i = 0; i < n; i++)
        if (cidr_match(&nets[i], addr))
            return 1;
    return 0;
}
