/*
 * events_bus: the events service's requests on the bus. EventPublish
 * (one event, or a sender's batch of one loop turn) arrives on the PULL
 * socket and goes to events_ingest; EventSearch
 * arrives on the ROUTER socket and is answered from events_store with an
 * EventSearchReply, or an Error (400 bad query, 500 store failure).
 * ServicePing is answered by the bus itself. It neither stores nor
 * searches: events_ingest and events_store do.
 */
#ifndef SX_EVENTS_BUS_H
#define SX_EVENTS_BUS_H

#include "events_ingest.h"
#include "events_store.h"
#include "ipc/bus.h"

/* A reply must fit one bus frame (CODEC_MAX_ENVELOPE) with room to spare. */
#define EVBUS_REPLY_MAX_BYTES (3u << 20)

/* bus_pull_fn: arg is the evingest_t. */
void events_bus_on_publish(bus_pull_t *pl, bus_msg_t *msg, void *arg);
/* bus_server_fn: arg is the evstore_t. */
void events_bus_on_request(bus_server_t *srv, bus_msg_t *msg, void *arg);

/* Build the store query for a search request; -1 with why for a 400. */
int events_bus_query(const PB(EventSearch) * req, evstore_query_t *q, char *why, size_t whylen);

#endif
