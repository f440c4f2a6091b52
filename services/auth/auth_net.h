/*
 * auth_net: client addresses as auth sees them: the networks of a
 * credential's allowlist in one normal form (so "10.1.2.3/8" and
 * "10.0.0.0/8" are the same entry), whether a login's client address is
 * inside them, and the key a client's failures are counted under. Parsing
 * and prefix matching are libshared's (net/cidr); this module adds the
 * normal form and the rules. It keeps no state.
 */
#ifndef SX_AUTH_NET_H
#define SX_AUTH_NET_H

#include "auth_record.h"

#include <stddef.h>

#define AUTH_NET_KEY_MAX 64 /* a client key: an IPv4 address or an IPv6 /64 */

/*
 * The normal form of a network written as CIDR or as a bare address (a /32
 * or /128): host bits cleared, the address as inet_ntop prints it, the
 * prefix always written, and an IPv4-mapped IPv6 network (::ffff:a.b.c.d/96
 * and longer) as the IPv4 network it means. 0, or -1 when text is not a
 * network (a prefix is 1 to 3 digits, nothing else).
 */
int auth_net_normalize(const char *text, char out[AUTH_NETWORK_MAX + 1]);

/*
 * 1 when client_ip (numeric IPv4 or IPv6; an IPv4-mapped IPv6 address
 * counts as its IPv4 address) is inside one of the n networks; 0 when it
 * is outside all of them or is no address at all.
 */
int auth_net_allowed(char *const *networks, size_t n, const char *client_ip);

/*
 * The key failures from client_ip are counted under: the IPv4 address
 * (also for an IPv4-mapped one), or for IPv6 its /64, since one client
 * usually holds a whole /64. 0, or -1 when client_ip is no address.
 */
int auth_net_client_key(const char *client_ip, char *out, size_t size);

#endif
