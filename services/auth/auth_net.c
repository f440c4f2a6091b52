/*
 * auth_net: normal forms of networks and client addresses on top of
 * libshared's cidr and sock parsers.
 */
#include "auth_net.h"
#include "net/cidr.h"
#include "net/sock.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#define NET_PREFIX_DIGITS_MAX 3
#define NET_V6_CLIENT_PREFIX  64

static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static void clear_host_bits(uint8_t *addr, size_t len, unsigned prefix)
{
    for (size_t i = 0; i < len; i++) {
        unsigned bit = (unsigned)i * 8;
        if (bit >= prefix)
            addr[i] = 0;
        else if (prefix - bit < 8)
            addr[i] &= (uint8_t)(0xff << (8 - (prefix - bit)));
    }
}

/* cidr_parse takes what strtol takes after the slash; we take digits only. */
static int prefix_syntax_ok(const char *text)
{
    const char *slash = strchr(text, '/');
    if (slash == NULL)
        return 1;
    size_t n = strlen(slash + 1);
    if (n == 0 || n > NET_PREFIX_DIGITS_MAX)
        return 0;
    for (size_t i = 1; i <= n; i++)
        if (slash[i] < '0' || slash[i] > '9')
            return 0;
    return 1;
}

int auth_net_normalize(const char *text, char out[AUTH_NETWORK_MAX + 1])
{
    cidr_t c;
    if (text == NULL || !prefix_syntax_ok(text) || cidr_parse(text, &c) < 0)
        return -1;
    if (c.family == AF_INET6 && c.prefix >= 96 && memcmp(c.addr, v4_mapped, 12) == 0) {
        memmove(c.addr, c.addr + 12, 4);
        memset(c.addr + 4, 0, 12);
        c.family = AF_INET;
        c.prefix -= 96;
    }
    clear_host_bits(c.addr, c.family == AF_INET ? 4 : 16, c.prefix);
    char host[INET6_ADDRSTRLEN];
    if (inet_ntop(c.family, c.addr, host, sizeof(host)) == NULL)
        return -1;
    int n = snprintf(out, AUTH_NETWORK_MAX + 1, "%s/%u", host, c.prefix);
    return n > 0 && n <= AUTH_NETWORK_MAX ? 0 : -1;
}

int auth_net_allowed(char *const *networks, size_t n, const char *client_ip)
{
    sock_addr_t addr;
    if (client_ip == NULL || *client_ip == '\0' || sock_addr_parse(client_ip, 0, &addr) < 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        cidr_t c;
        if (networks[i] && cidr_parse(networks[i], &c) == 0 && cidr_match(&c, &addr))
            return 1;
    }
    return 0;
}

int auth_net_client_key(const char *client_ip, char *out, size_t size)
{
    sock_addr_t addr;
    if (client_ip == NULL || *client_ip == '\0' || sock_addr_parse(client_ip, 0, &addr) < 0)
        return -1;
    char host[INET6_ADDRSTRLEN];
    int n;
    if (addr.ss.ss_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)&addr.ss;
        if (inet_ntop(AF_INET, &in4->sin_addr, host, sizeof(host)) == NULL)
            return -1;
        n = snprintf(out, size, "%s", host);
    } else {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&addr.ss;
        uint8_t a[16];
        memcpy(a, &in6->sin6_addr, sizeof(a));
        if (memcmp(a, v4_mapped, 12) == 0) {
            if (inet_ntop(AF_INET, a + 12, host, sizeof(host)) == NULL)
                return -1;
            n = snprintf(out, size, "%s", host);
        } else {
            clear_host_bits(a, sizeof(a), NET_V6_CLIENT_PREFIX);
            if (inet_ntop(AF_INET6, a, host, sizeof(host)) == NULL)
                return -1;
            n = snprintf(out, size, "%s/%d", host, NET_V6_CLIENT_PREFIX);
        }
    }
    return n > 0 && (size_t)n < size ? 0 : -1;
}
