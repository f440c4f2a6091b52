/*
 * events_json: an Event as the JSON object the HTTP API returns. The
 * shape is the one sendarixctl prints for `log search --json`: id, at
 * (ISO 8601 with milliseconds, UTC), type, service, instance, message_id,
 * recipient, rcpt_index, sender, tenant, reply ({code, enhanced, text} or
 * null), attempt, remote_host, session_id and attrs (an object). JSON is
 * only written here, never read back.
 */
#ifndef SX_EVENTS_JSON_H
#define SX_EVENTS_JSON_H

#include "ipc/proto.h"

#include <jansson.h>

/* A new reference; never NULL. */
json_t *events_json_event(const PB(Event) * ev);

#endif
