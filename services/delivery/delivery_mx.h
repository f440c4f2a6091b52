/*
 * delivery_mx: the pure decisions of MX delivery: the order in which MX
 * hosts are tried (RFC 5321 5.1: preference, then random among equals), the
 * null MX (RFC 7505), which addresses a relay must not connect to unless
 * told so (loopback, private, link-local...), and the host patterns of the
 * required-TLS list. No DNS, no sockets: delivery_task.c does those.
 */
#ifndef SX_DELIVERY_MX_H
#define SX_DELIVERY_MX_H

#include "net/sock.h"

#include <stddef.h>
#include <stdint.h>

#define MX_NAME_MAX 256 /* a host name and its NUL */

typedef struct mx_host {
    char name[MX_NAME_MAX]; /* lowercase, no trailing dot; "" for the null MX target "." */
    unsigned pref;
} mx_host_t;

/* A small, seedable generator (splitmix64): equal preferences are shuffled with it. */
uint64_t mx_rand(uint64_t *state);

/*
 * Sort by preference (lowest first) and shuffle hosts of equal preference.
 * Stable for a given seed, so a test can fix it.
 */
void mx_order(mx_host_t *mx, size_t n, uint64_t *rand_state);

/* 1 if the answer is a null MX: one record, target ".", i.e. no mail at all. */
int mx_is_null(const mx_host_t *mx, size_t n);

/* Remove targets that are "." from a list that has others; the new count. */
size_t mx_drop_null(mx_host_t *mx, size_t n);

/* Normalise a name into a host entry: lowercase, trailing dot dropped. -1 when too long. */
int mx_host_set(mx_host_t *h, const char *name, unsigned pref);

typedef enum {
    ADDR_PUBLIC = 0,
    ADDR_UNSPECIFIED, /* 0.0.0.0/8, :: */
    ADDR_LOOPBACK,    /* 127.0.0.0/8, ::1 */
    ADDR_PRIVATE,     /* RFC 1918, fc00::/7 (ULA), fec0::/10 (old site-local) */
    ADDR_LINK_LOCAL,  /* 169.254.0.0/16, fe80::/10 */
    ADDR_MULTICAST,   /* 224.0.0.0/4, ff00::/8 */
    ADDR_RESERVED,    /* 240.0.0.0/4 and the broadcast address */
} addr_class_t;

/* The class of an address (IPv4-mapped IPv6 is judged as IPv4). */
addr_class_t mx_addr_class(const sock_addr_t *a);
const char *mx_addr_class_name(addr_class_t c);

/*
 * A required-TLS pattern against a domain or host name: "example.com" is
 * that name only, "*.example.com" any name below it (at any depth).
 * Case-insensitive; a trailing dot on either side is ignored.
 */
int mx_pattern_matches(const char *pattern, const char *name);

#endif
