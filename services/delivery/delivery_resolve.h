/*
 * delivery_resolve: A/AAAA lookups with c-ares, driven by the service's
 * loop (its sockets in epoll, its timeouts as a loop timer), so a slow DNS
 * server never blocks a delivery. Results always arrive later, from the
 * loop, never inside resolver_lookup(). It does no MX lookups (yet) and
 * keeps no cache.
 */
#ifndef SX_DELIVERY_RESOLVE_H
#define SX_DELIVERY_RESOLVE_H

#include "core/loop.h"
#include "net/sock.h"

#include <stddef.h>

#define RESOLVE_ADDRS_MAX  16   /* addresses kept per name */
#define RESOLVE_TIMEOUT_MS 3000 /* per try; c-ares tries each server RESOLVE_TRIES times */
#define RESOLVE_TRIES      2

typedef struct resolver resolver_t;
typedef struct resolver_query resolver_query_t;

/* n == 0: the lookup failed and err says why. */
typedef void (*resolver_fn)(const sock_addr_t *addrs, size_t n, const char *err, void *arg);

/* servers: "" for /etc/resolv.conf, or "127.0.0.1:5353[,...]". NULL with err on failure. */
resolver_t *resolver_new(loop_t *loop, const char *servers, char *err, size_t errlen);
/* Queries still running are cancelled: their callbacks never run. */
void resolver_destroy(resolver_t **r);

/* Look up host's addresses, with port filled in. NULL only if the query cannot start. */
resolver_query_t *resolver_lookup(resolver_t *r, const char *host, unsigned port, resolver_fn fn,
                                  void *arg);
/* The callback will not run; the handle is gone. */
void resolver_cancel(resolver_query_t **q);

#endif
