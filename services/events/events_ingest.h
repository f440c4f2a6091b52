/*
 * events_ingest: the intake of published events. It checks each event,
 * counts it by type, and gathers events into a batch that a loop timer
 * writes in one transaction EVINGEST_DELAY_MS after the first of them (or
 * at once past EVINGEST_BATCH_MAX): at a few messages a second that is one
 * write for several messages' events instead of one per arriving batch.
 * It does not read the bus itself: the service's PULL handler hands it
 * each event.
 */
#ifndef SX_EVENTS_INGEST_H
#define SX_EVENTS_INGEST_H

#include "core/loop.h"
#include "events_store.h"

#include <stdint.h>

#define EVINGEST_DELAY_MS  20   /* how long an event may wait for others */
#define EVINGEST_BATCH_MAX 2000 /* events in one transaction; more are written at once */
#define EVINGEST_TYPES_MAX 64   /* distinct type counters; later types count as "other" */

typedef struct evingest evingest_t;

typedef struct evingest_stats {
    uint64_t received;   /* events accepted for storing */
    uint64_t stored;     /* written */
    uint64_t rejected;   /* refused: malformed */
    uint64_t duplicates; /* already stored */
    uint64_t dropped;    /* lost to a failed write */
} evingest_stats_t;

typedef void (*evingest_type_fn)(const char *type, uint64_t count, void *arg);

evingest_t *evingest_new(loop_t *loop, evstore_t *store);
/* Writes what is still queued, then frees. */
void evingest_destroy(evingest_t **in);

/* Take one event (copied); 0 queued, -1 refused (logged and counted). */
int evingest_add(evingest_t *in, const PB(Event) * ev);
/* Write the queued events now; 0, or -1 when the write failed and they were dropped. */
int evingest_flush(evingest_t *in);
size_t evingest_queued(const evingest_t *in);

void evingest_stats(const evingest_t *in, evingest_stats_t *out);
/* Visit the per-type counters (events received since start). */
void evingest_each_type(const evingest_t *in, evingest_type_fn fn, void *arg);

#endif
