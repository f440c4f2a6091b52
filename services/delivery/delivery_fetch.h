/*
 * delivery_fetch: small HTTPS GETs (MTA-STS policies) through libcurl's
 * multi interface, driven by the service's loop. The caller resolves the
 * host itself and passes the addresses, so the same resolver (and the same
 * address checks) serve SMTP and HTTPS. HTTPS only, certificate and name
 * always verified (the CA file or the system store), no redirects, no
 * proxy, bounded in time and size. It does not parse what it fetches.
 */
#ifndef SX_DELIVERY_FETCH_H
#define SX_DELIVERY_FETCH_H

#include "core/loop.h"
#include "net/sock.h"

#include <stddef.h>
#include <stdint.h>

typedef struct fetcher fetcher_t;
typedef struct fetch fetch_t;

typedef struct fetch_result {
    int ok;           /* an HTTP answer came (any status) */
    long status;      /* HTTP status */
    const char *body; /* NUL-terminated for convenience */
    size_t len;
    const char *content_type; /* "" when none */
    const char *err;          /* why not ok (or "" ) */
} fetch_result_t;

/* Runs once, from the loop; the result is valid during the call only. */
typedef void (*fetch_fn)(const fetch_result_t *r, void *arg);

/* ca_file NULL or "": the system store. NULL with err when libcurl cannot start. */
fetcher_t *fetcher_new(loop_t *loop, const char *ca_file, char *err, size_t errlen);
/* Transfers still running are dropped; their callbacks never run. */
void fetcher_destroy(fetcher_t **f);

/*
 * GET https://host:port/path connecting to addrs (port taken from the
 * argument, not the addresses). NULL only when the transfer cannot be set up.
 */
fetch_t *fetch_get(fetcher_t *f, const char *host, unsigned port, const char *path,
                   const sock_addr_t *addrs, size_t naddrs, uint64_t timeout_ms, size_t max_bytes,
                   fetch_fn fn, void *arg);
/* The callback will not run; the handle is gone. */
void fetch_cancel(fetch_t **x);

#endif
