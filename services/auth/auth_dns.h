/*
 * auth_dns: TXT lookups with c-ares, driven by the service's loop (its
 * sockets watched by the loop, its timeouts a loop timer), so a slow DNS
 * server never holds up a login. Auth uses it to read the DKIM records a
 * domain owner published. Results always arrive later, from the loop,
 * never inside auth_dns_txt(). No cache: every check asks again.
 */
#ifndef SX_AUTH_DNS_H
#define SX_AUTH_DNS_H

#include "core/loop.h"

#include <stddef.h>

#define AUTH_DNS_TIMEOUT_MS 1500 /* per try; c-ares tries each server AUTH_DNS_TRIES times */
#define AUTH_DNS_TRIES      2
#define AUTH_DNS_TXT_MAX    16   /* TXT records kept per name */
#define AUTH_DNS_TEXT_MAX   4096 /* bytes of one record, its strings joined */

typedef struct auth_dns auth_dns_t;
typedef struct auth_dns_query auth_dns_query_t;

/*
 * The TXT records at the name, each one's strings joined (n may be 0 when
 * the name exists without TXT records); err is NULL on success, else why
 * the lookup failed ("Domain name not found", "Timeout while contacting
 * DNS servers"...). Everything is valid during the call only.
 */
typedef void (*auth_dns_fn)(char *const *txts, size_t n, const char *err, void *arg);

/* servers: "" for /etc/resolv.conf, or "127.0.0.1:5353[,...]". NULL with err on failure. */
auth_dns_t *auth_dns_new(loop_t *loop, const char *servers, char *err, size_t errlen);
/* Queries still running are cancelled: their callbacks never run. */
void auth_dns_destroy(auth_dns_t **d);

/* Look up name's TXT records. NULL only when the query cannot start. */
auth_dns_query_t *auth_dns_txt(auth_dns_t *d, const char *name, auth_dns_fn fn, void *arg);
/* The callback will not run; the handle is gone. */
void auth_dns_cancel(auth_dns_query_t **q);

#endif
