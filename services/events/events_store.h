/*
 * events_store: the event log in LMDB. Each event is kept packed (protobuf
 * Event) under a key ordered by time: at_ms big-endian, then the event id.
 * An index by message id (message id, NUL, at_ms big-endian, event id ->
 * time key) returns one message's events in time order without a scan.
 * Searches by time range, type or recipient walk the time keys with
 * filters, within a scan budget. Writes come in batches, one transaction
 * each; the retention sweep deletes old events and their index entries a
 * bounded batch at a time. It knows nothing of the bus or of HTTP.
 *
 * Commits are not synced to disk when they return (events are not covered
 * by the "250 means on disk" rule): a crash of the process loses nothing,
 * a crash of the machine loses what was written since the last
 * evstore_sync(), which the service calls every sync_interval.
 */
#ifndef SX_EVENTS_STORE_H
#define SX_EVENTS_STORE_H

#include "ipc/proto.h"

#include <stddef.h>
#include <stdint.h>

#define EVSTORE_ID_MAX        64          /* event ids and message ids, bytes */
#define EVSTORE_TYPE_MAX      32          /* event type names, bytes */
#define EVSTORE_FILTER_MAX    320         /* recipient filter, bytes */
#define EVSTORE_EVENT_MAX     (64u << 10) /* one packed event */
#define EVSTORE_LIMIT_DEFAULT 100
#define EVSTORE_LIMIT_MAX     10000
#define EVSTORE_SCAN_MAX      200000 /* events one search may examine */
#define EVSTORE_TIME_KEY_MAX  (8 + EVSTORE_ID_MAX)
#define EVSTORE_MSG_KEY_MAX   (EVSTORE_ID_MAX + 1 + 8 + EVSTORE_ID_MAX)

typedef struct evstore evstore_t;
typedef struct evstore_batch evstore_batch_t;

evstore_t *evstore_open(const char *dir, char *err, size_t errlen);
/* Syncs, then closes. */
void evstore_close(evstore_t **st);
/* Put every write since the last sync on disk; 0 or a store status. */
int evstore_sync(evstore_t *st);

/* Events held now, and the bytes the store takes on disk. */
uint64_t evstore_count(const evstore_t *st);
size_t evstore_bytes(evstore_t *st);

/*
 * Key encodings, exposed for tests. Each returns the key length, or 0 when
 * out is too small or an id is longer than EVSTORE_ID_MAX.
 */
size_t evstore_key_time(uint8_t *out, size_t size, uint64_t at_ms, const char *event_id);
size_t evstore_key_message(uint8_t *out, size_t size, const char *message_id, uint64_t at_ms,
                           const char *event_id);

/* 0 when ev may be stored; -1 with the reason in why. */
int evstore_check(const PB(Event) * ev, char *why, size_t whylen);

/* ---- batched writes ---- */

evstore_batch_t *evstore_batch_new(void);
void evstore_batch_destroy(evstore_batch_t **b);
/* Check ev and append a packed copy; -1 (why filled) when it is refused. */
int evstore_batch_add(evstore_batch_t *b, const PB(Event) * ev, char *why, size_t whylen);
size_t evstore_batch_count(const evstore_batch_t *b);

/*
 * Write every event of the batch in one transaction and empty the
 * batch, whatever the outcome. An event whose key is already present (the
 * same event sent twice) is skipped. 0 with *stored and *duplicates set, or
 * a store status (STORE_FULL, STORE_ERROR) when nothing was written.
 */
int evstore_write(evstore_t *st, evstore_batch_t *b, size_t *stored, size_t *duplicates);

/* ---- search ---- */

typedef struct evstore_query {
    const char *message_id; /* NULL or "": any */
    const char *type;       /* NULL or "": any */
    const char *recipient;  /* NULL or "": any; compared without case */
    uint64_t since_ms;      /* inclusive; 0: from the start */
    uint64_t until_ms;      /* inclusive; 0: to the end */
    uint32_t limit;         /* 0: EVSTORE_LIMIT_DEFAULT */
    size_t max_bytes;       /* stop before the packed events pass this; 0: no cap */
} evstore_query_t;

typedef struct evstore_result {
    PB(Event) * *events; /* in time order; owned */
    size_t n;
    size_t bytes;   /* packed size of the events returned */
    size_t scanned; /* events examined */
    int truncated;  /* more would match: limit, byte cap or scan budget reached */
} evstore_result_t;

/* 0 when q is a valid query; -1 with the reason (for a 400 reply). */
int evstore_query_check(const evstore_query_t *q, char *why, size_t whylen);

/* Run q (checked first); 0 with out filled, -1 on a bad query or store error. */
int evstore_search(evstore_t *st, const evstore_query_t *q, evstore_result_t *out, char *why,
                   size_t whylen);
void evstore_result_free(evstore_result_t *r);

/*
 * Delete up to max events older than before_ms (at_ms < before_ms) with
 * their index entries, in one transaction. Returns 1 when more old events
 * remain, 0 when none do, a negative store status on failure.
 */
int evstore_sweep(evstore_t *st, uint64_t before_ms, size_t max, size_t *deleted);

#endif
