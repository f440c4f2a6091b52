/*
 * delivery_resolve: DNS with c-ares, driven by the service's loop (its
 * sockets in epoll, its timeouts as a loop timer), so a slow DNS server
 * never blocks a delivery: host lookups for smart hosts (the system's way:
 * hosts file, then DNS), and for MX delivery DNS-only lookups of MX, TXT
 * and A/AAAA records that tell a missing name (NXDOMAIN) from a name
 * without such records (NODATA) and from a failure worth retrying.
 * Results always arrive later, from the loop, never inside the call that
 * asked. It keeps no cache.
 */
#ifndef SX_DELIVERY_RESOLVE_H
#define SX_DELIVERY_RESOLVE_H

#include "core/loop.h"
#include "delivery_mx.h"
#include "net/sock.h"

#include <stddef.h>

#define RESOLVE_ADDRS_MAX  16   /* addresses kept per name */
#define RESOLVE_MX_MAX     32   /* MX records kept per domain */
#define RESOLVE_TXT_MAX    16   /* TXT records kept per name */
#define RESOLVE_TXT_LEN    4096 /* bytes kept of one TXT record (its strings joined) */
#define RESOLVE_TIMEOUT_MS 3000 /* per try; c-ares tries each server RESOLVE_TRIES times */
#define RESOLVE_TRIES      2

typedef enum {
    DNS_OK = 0,
    DNS_NXDOMAIN, /* the name does not exist: final */
    DNS_NODATA,   /* the name exists, without records of that type */
    DNS_TEMPFAIL, /* timeout, SERVFAIL, refused, garbage: try later */
} dns_status_t;

typedef struct resolver resolver_t;
typedef struct resolver_query resolver_query_t;

/* Addresses (port filled in); n == 0 unless st == DNS_OK; err says why when it failed. */
typedef void (*resolver_fn)(dns_status_t st, const sock_addr_t *addrs, size_t n, const char *err,
                            void *arg);
/* MX records as the server gave them (not ordered); "" names the null MX target. */
typedef void (*resolver_mx_fn)(dns_status_t st, const mx_host_t *mx, size_t n, const char *err,
                               void *arg);
/* TXT records, each with its strings joined. */
typedef void (*resolver_txt_fn)(dns_status_t st, const char *const *txt, size_t n,
                                const char *err, void *arg);

/* servers: "" for /etc/resolv.conf, or "127.0.0.1:5353[,...]". NULL with err on failure. */
resolver_t *resolver_new(loop_t *loop, const char *servers, char *err, size_t errlen);
/* Queries still running are cancelled: their callbacks never run. */
void resolver_destroy(resolver_t **r);

/* A smart host's addresses (hosts file, then DNS with the search list). */
resolver_query_t *resolver_lookup(resolver_t *r, const char *host, unsigned port, resolver_fn fn,
                                  void *arg);
/* An MX host's addresses from DNS only: AAAA then A records, name taken as absolute. */
resolver_query_t *resolver_addrs(resolver_t *r, const char *host, unsigned port, resolver_fn fn,
                                 void *arg);
resolver_query_t *resolver_mx(resolver_t *r, const char *domain, resolver_mx_fn fn, void *arg);
resolver_query_t *resolver_txt(resolver_t *r, const char *name, resolver_txt_fn fn, void *arg);
/* The callback will not run; the handle is gone. */
void resolver_cancel(resolver_query_t **q);

/* A c-ares status in our terms. */
dns_status_t resolve_status(int ares_status);
const char *dns_status_name(dns_status_t st);

#endif
