/*
 * router_map: a small string-keyed hash table (chained, growing) for the
 * router's in-memory tables: destinations, learnt MX hosts, source address
 * counters. Keys are copied; values are the caller's. Not for anything
 * that must be ordered or persisted.
 */
#ifndef SX_ROUTER_MAP_H
#define SX_ROUTER_MAP_H

#include <stddef.h>

typedef struct rmap rmap_t;

rmap_t *rmap_new(void);
/* Free the table; free_value (may be NULL) sees every value. */
void rmap_destroy(rmap_t **m, void (*free_value)(void *value));

void *rmap_get(const rmap_t *m, const char *key);
/* Insert or replace; returns the value replaced (NULL when none). */
void *rmap_put(rmap_t *m, const char *key, void *value);
/* Remove; returns the value (NULL when absent). */
void *rmap_del(rmap_t *m, const char *key);
size_t rmap_count(const rmap_t *m);

/*
 * Visit every entry; fn returns 1 to remove the entry (after which it must
 * not touch the value unless it has taken it), 0 to keep it.
 */
void rmap_each(rmap_t *m, int (*fn)(const char *key, void *value, void *arg), void *arg);

#endif
