/*
 * events_metrics: what /metrics tells about the other services. A timer
 * pings every service endpoint of the bus section (ServicePing, as
 * `sendarixctl status` does; not the PULL socket events_ingest nor
 * router_workers) and asks each queue instance for QueueStats; the
 * replies arrive later on the loop and replace the last ones kept. A
 * scrape renders only what is kept, so it never waits on the bus. It
 * neither serves HTTP (events_http) nor routes paths (events_api).
 */
#ifndef SX_EVENTS_METRICS_H
#define SX_EVENTS_METRICS_H

#include "core/buf.h"
#include "ipc/service.h"

#include <stdint.h>

#define EVMETRICS_INTERVAL_DEFAULT "5s"
#define EVMETRICS_FIRST_MS         250 /* the first round, once the connections are up */

typedef struct evmetrics evmetrics_t;

/* Start asking every endpoint of ep every interval_ms on bus's loop; NULL on failure. */
evmetrics_t *evmetrics_new(bus_t *bus, const endpoints_t *ep, uint64_t interval_ms);
void evmetrics_destroy(evmetrics_t **m);
/* Ask now instead of at the next tick (tests, and a service just started). */
void evmetrics_poll(evmetrics_t *m);
/* Rounds of answers so far, ping and stats alike (tests wait on it). */
uint64_t evmetrics_replies(const evmetrics_t *m);

/*
 * Append the Prometheus text: sendarix_up{service,instance},
 * sendarix_queue_messages / _scheduled / _inflight / _oldest_age_seconds
 * {instance}, sendarix_queue_recipients{instance,state} and
 * sendarix_service_stat{service,instance,stat} for every numeric pong
 * stat. Services that did not answer the last ping are up 0 and nothing
 * else. m may be NULL: then nothing is appended.
 */
void evmetrics_render(const evmetrics_t *m, buf_t *b);

#endif
