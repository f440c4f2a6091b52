/*
 * events_http: the HTTP server of the events service, libmicrohttpd run
 * inside the service's own loop (no threads of its own): its epoll fd is
 * watched by the loop, MHD_run() is called when it is readable and on a
 * loop timer set from MHD_get_timeout(). What a path answers is decided
 * in events_api, not here.
 */
#ifndef SX_EVENTS_HTTP_H
#define SX_EVENTS_HTTP_H

#include "core/loop.h"
#include "events_ingest.h"
#include "events_metrics.h"
#include "events_store.h"

#include <stddef.h>

#define EVHTTP_CONNECTIONS_MAX 256
#define EVHTTP_IDLE_TIMEOUT_S  30

typedef struct events_http events_http_t;

/*
 * Listen on address:port (IPv4 or IPv6 literal); NULL with err set on
 * failure. metrics (may be NULL) is read by /metrics and must outlive h.
 */
events_http_t *events_http_new(loop_t *loop, const char *address, unsigned port, evstore_t *st,
                               const evingest_t *in, const evmetrics_t *metrics, char *err,
                               size_t errlen);
void events_http_destroy(events_http_t **h);

#endif
