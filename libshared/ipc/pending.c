/*
 * pending: chained hash table of in-flight requests with per-entry timers.
 */
#include "pending.h"
#include "core/alloc.h"

#include <stdlib.h>

typedef struct pending_entry {
    uint64_t id;
    void *data;
    pending_t *table;
    loop_timer_t timer;
    struct pending_entry *next;
} pending_entry_t;

struct pending {
    loop_t *loop;
    pending_expire_fn on_expire;
    void *arg;
    pending_entry_t **buckets;
    size_t nbuckets;
    size_t count;
};

static size_t bucket_of(const pending_t *p, uint64_t id)
{
    /* request ids are sequential: mix them so buckets fill evenly */
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdull;
    id ^= id >> 33;
    return (size_t)(id & (p->nbuckets - 1));
}

pending_t *pending_new(loop_t *loop, pending_expire_fn on_expire, void *arg)
{
    pending_t *p = xcalloc(1, sizeof(*p));
    p->loop = loop;
    p->on_expire = on_expire;
    p->arg = arg;
    p->nbuckets = 64;
    p->buckets = xcalloc(p->nbuckets, sizeof(*p->buckets));
    return p;
}

void pending_destroy(pending_t **pp, void (*free_data)(void *data))
{
    pending_t *p = *pp;
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->nbuckets; i++) {
        pending_entry_t *e = p->buckets[i];
        while (e) {
            pending_entry_t *next = e->next;
            loop_timer_stop(p->loop, &e->timer);
            if (free_data)
                free_data(e->data);
            free(e);
            e = next;
        }
    }
    free(p->buckets);
    free(p);
    *pp = NULL;
}

static void pending_grow(pending_t *p)
{
    size_t old_n = p->nbuckets;
    pending_entry_t **old = p->buckets;
    p->nbuckets *= 2;
    p->buckets = xcalloc(p->nbuckets, sizeof(*p->buckets));
    for (size_t i = 0; i < old_n; i++) {
        pending_entry_t *e = old[i];
        while (e) {
            pending_entry_t *next = e->next;
            size_t b = bucket_of(p, e->id);
            e->next = p->buckets[b];
            p->buckets[b] = e;
            e = next;
        }
    }
    free(old);
}

static pending_entry_t *unlink_entry(pending_t *p, uint64_t id)
{
    pending_entry_t **link = &p->buckets[bucket_of(p, id)];
    for (pending_entry_t *e = *link; e; link = &e->next, e = e->next) {
        if (e->id == id) {
            *link = e->next;
            p->count--;
            return e;
        }
    }
    return NULL;
}

static pending_entry_t *find_entry(const pending_t *p, uint64_t id)
{
    for (pending_entry_t *e = p->buckets[bucket_of(p, id)]; e; e = e->next)
        if (e->id == id)
            return e;
    return NULL;
}

static void entry_expired(loop_t *loop, void *arg)
{
    pending_entry_t *e = arg;
    pending_t *p = e->table;
    uint64_t id = e->id;
    void *data = e->data;
    unlink_entry(p, id);
    free(e);
    if (p->on_expire)
        p->on_expire(id, data, p->arg);
}

int pending_add(pending_t *p, uint64_t id, void *data, uint64_t timeout_ms)
{
    /* by entry, not by data: an entry may carry NULL */
    if (find_entry(p, id) != NULL)
        return -1;
    if (p->count >= p->nbuckets)
        pending_grow(p);
    pending_entry_t *e = xcalloc(1, sizeof(*e));
    e->id = id;
    e->data = data;
    e->table = p;
    loop_timer_init(&e->timer, entry_expired, e);
    if (timeout_ms)
        loop_timer_start(p->loop, &e->timer, timeout_ms);
    size_t b = bucket_of(p, id);
    e->next = p->buckets[b];
    p->buckets[b] = e;
    p->count++;
    return 0;
}

void *pending_take(pending_t *p, uint64_t id)
{
    pending_entry_t *e = unlink_entry(p, id);
    if (e == NULL)
        return NULL;
    loop_timer_stop(p->loop, &e->timer);
    void *data = e->data;
    free(e);
    return data;
}

void *pending_peek(pending_t *p, uint64_t id)
{
    pending_entry_t *e = find_entry(p, id);
    return e ? e->data : NULL;
}

size_t pending_count(const pending_t *p)
{
    return p->count;
}

void pending_each(pending_t *p, void (*fn)(uint64_t id, void *data, void *arg), void *arg)
{
    for (size_t i = 0; i < p->nbuckets; i++)
        for (pending_entry_t *e = p->buckets[i]; e; e = e->next)
            fn(e->id, e->data, arg);
}
