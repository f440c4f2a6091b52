/*
 * pending: the table of requests awaiting a reply, keyed by request id, each
 * with its own deadline. Replies are matched by id, never by order; a reply
 * that arrives after its deadline finds nothing and is dropped by the caller.
 */
#ifndef SX_PENDING_H
#define SX_PENDING_H

#include "core/loop.h"

#include <stddef.h>
#include <stdint.h>

typedef struct pending pending_t;

/* Called when an entry's deadline passes; the entry is already removed. */
typedef void (*pending_expire_fn)(uint64_t id, void *data, void *arg);

pending_t *pending_new(loop_t *loop, pending_expire_fn on_expire, void *arg);
/* Free the table; free_data (may be NULL) is called for each remaining entry. */
void pending_destroy(pending_t **p, void (*free_data)(void *data));

/* -1 if id is already present. timeout_ms 0: no deadline. */
int pending_add(pending_t *p, uint64_t id, void *data, uint64_t timeout_ms);
/* Remove and return the entry's data, or NULL when unknown. */
void *pending_take(pending_t *p, uint64_t id);
void *pending_peek(pending_t *p, uint64_t id);
size_t pending_count(const pending_t *p);

/* Call fn for every entry (fn must not add or take). */
void pending_each(pending_t *p, void (*fn)(uint64_t id, void *data, void *arg), void *arg);

#endif
