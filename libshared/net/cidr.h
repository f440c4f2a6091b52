/*
 * cidr: IPv4/IPv6 networks ("192.0.2.0/24", "2001:db8::/32", a bare address
 * means a single host) and matching addresses against a list of them.
 * IPv4-mapped IPv6 addresses (::ffff:192.0.2.1) match IPv4 networks.
 */
#ifndef SX_CIDR_H
#define SX_CIDR_H

#include "sock.h"

#include <stddef.h>
#include <stdint.h>

typedef struct cidr {
    int family;          /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    unsigned prefix;
} cidr_t;

/* Parse text; -1 when it is not a network. */
int cidr_parse(const char *text, cidr_t *out);
int cidr_match(const cidr_t *net, const sock_addr_t *addr);
/* 1 if addr is inside any of the n networks. */
int cidr_match_any(const cidr_t *nets, size_t n, const sock_addr_t *addr);

#endif
