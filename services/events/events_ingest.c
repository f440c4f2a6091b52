/*
 * events_ingest: checks, per-type counters and the per-turn write batch.
 * A failed write (store full, disk error) drops that batch with a log line:
 * events are records of what happened, not mail, and the collector must
 * keep accepting new ones.
 */
#include "events_ingest.h"
#include "core/alloc.h"
#include "core/log.h"
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OTHER_TYPE "other"

typedef struct type_count {
    char name[EVSTORE_TYPE_MAX + 1];
    uint64_t n;
} type_count_t;

struct evingest {
    loop_t *loop;
    evstore_t *store;
    evstore_batch_t *batch;
    loop_timer_t flush_timer;
    evingest_stats_t stats;
    type_count_t types[EVINGEST_TYPES_MAX + 1]; /* the last slot is "other" */
    size_t ntypes;
};

static void on_flush(loop_t *loop, void *arg)
{
    (void)loop;
    evingest_flush(arg);
}

evingest_t *evingest_new(loop_t *loop, evstore_t *store)
{
    evingest_t *in = xcalloc(1, sizeof(*in));
    in->loop = loop;
    in->store = store;
    in->batch = evstore_batch_new();
    loop_timer_init(&in->flush_timer, on_flush, in);
    sx_strlcpy(in->types[EVINGEST_TYPES_MAX].name, OTHER_TYPE, sizeof(in->types[0].name));
    return in;
}

void evingest_destroy(evingest_t **p)
{
    evingest_t *in = *p;
    if (in == NULL)
        return;
    evingest_flush(in);
    loop_timer_stop(in->loop, &in->flush_timer);
    evstore_batch_destroy(&in->batch);
    free(in);
    *p = NULL;
}

static void count_type(evingest_t *in, const char *type)
{
    for (size_t i = 0; i < in->ntypes; i++) {
        if (strcmp(in->types[i].name, type) == 0) {
            in->types[i].n++;
            return;
        }
    }
    if (in->ntypes < EVINGEST_TYPES_MAX) {
        type_count_t *t = &in->types[in->ntypes++];
        sx_strlcpy(t->name, type, sizeof(t->name));
        t->n = 1;
        return;
    }
    in->types[EVINGEST_TYPES_MAX].n++;
}

int evingest_add(evingest_t *in, const PB(Event) * ev)
{
    char why[128];
    if (evstore_batch_add(in->batch, ev, why, sizeof(why)) < 0) {
        in->stats.rejected++;
        char id[EVSTORE_ID_MAX + 3];
        log_quote(id, sizeof(id), ev && ev->id ? ev->id : "", ev && ev->id ? strlen(ev->id) : 0);
        log_warn("event=event_rejected id=%s reason=\"%s\" rejected=%llu", id, why,
                 (unsigned long long)in->stats.rejected);
        return -1;
    }
    in->stats.received++;
    count_type(in, ev->type);
    if (evstore_batch_count(in->batch) >= EVINGEST_BATCH_MAX)
        evingest_flush(in);
    else if (!loop_timer_active(&in->flush_timer))
        loop_timer_start(in->loop, &in->flush_timer, EVINGEST_DELAY_MS);
    return 0;
}

int evingest_flush(evingest_t *in)
{
    loop_timer_stop(in->loop, &in->flush_timer);
    size_t n = evstore_batch_count(in->batch);
    if (n == 0)
        return 0;
    size_t stored, dups;
    int rc = evstore_write(in->store, in->batch, &stored, &dups);
    if (rc != 0) {
        in->stats.dropped += n;
        log_error("event=events_write_failed count=%zu err=\"%s\" dropped=%llu", n,
                  store_strerror(rc), (unsigned long long)in->stats.dropped);
        return -1;
    }
    in->stats.stored += stored;
    in->stats.duplicates += dups;
    log_debug("event=events_written count=%zu duplicates=%zu", stored, dups);
    return 0;
}

size_t evingest_queued(const evingest_t *in)
{
    return evstore_batch_count(in->batch);
}

void evingest_stats(const evingest_t *in, evingest_stats_t *out)
{
    *out = in->stats;
}

void evingest_each_type(const evingest_t *in, evingest_type_fn fn, void *arg)
{
    uint64_t other = in->types[EVINGEST_TYPES_MAX].n;
    for (size_t i = 0; i < in->ntypes; i++) {
        uint64_t n = in->types[i].n;
        /* a type really named "other" takes the overflow: one series per label */
        if (other && strcmp(in->types[i].name, OTHER_TYPE) == 0) {
            n += other;
            other = 0;
        }
        fn(in->types[i].name, n, arg);
    }
    if (other)
        fn(OTHER_TYPE, other, arg);
}
