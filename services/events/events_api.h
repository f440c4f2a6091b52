/*
 * events_api: the HTTP endpoints of the events service, apart from the
 * HTTP server itself so they can be tested without sockets:
 *   GET /healthz         200 "ok\n"
 *   GET /metrics         Prometheus text format: the event counters, and
 *                        what events_metrics last heard from every service
 *   GET /api/v1/events   search: message_id, type, recipient, since, until
 *                        (ISO 8601), limit (1..10000) -> {"events": [...]}
 * Unknown paths get 404, bad parameters 400, other methods 405, each with
 * a JSON body {"error": "..."}. It neither listens nor parses HTTP.
 */
#ifndef SX_EVENTS_API_H
#define SX_EVENTS_API_H

#include "core/buf.h"
#include "events_ingest.h"
#include "events_metrics.h"
#include "events_store.h"

#include <stddef.h>

#define EVAPI_PARAMS_MAX 16
#define EVAPI_BODY_MAX   (64u << 20)

typedef struct events_api_param {
    const char *key;
    const char *value; /* NULL for "?key" without "=" */
} events_api_param_t;

typedef struct events_api_reply {
    unsigned status;
    const char *content_type; /* static */
    buf_t body;
} events_api_reply_t;

/*
 * Answer one request; out is always filled (free it with events_api_reply_free).
 * metrics may be NULL (no service metrics).
 */
void events_api_handle(evstore_t *st, const evingest_t *in, const evmetrics_t *metrics,
                       const char *method, const char *path, const events_api_param_t *params,
                       size_t nparams, events_api_reply_t *out);
void events_api_reply_free(events_api_reply_t *r);

#endif
