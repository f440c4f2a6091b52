/*
 * delivery_pool: connections kept open between messages. A connection that
 * delivered a message and may serve more (its route allows more messages
 * per connection) is put here under a key saying what it is good for (the
 * endpoint or MX host, port, source address, TLS needs, credentials); the
 * next task with the same key takes it instead of connecting. Each kept
 * connection leaves after its idle time; the pool is bounded and the one
 * idle longest leaves first. The pool holds opaque pointers and closes them
 * through a callback, so it knows nothing of SMTP.
 */
#ifndef SX_DELIVERY_POOL_H
#define SX_DELIVERY_POOL_H

#include "core/loop.h"

#include <stddef.h>
#include <stdint.h>

#define POOL_KEY_MAX 768

typedef struct pool pool_t;

/* Close a connection the pool gives up (idle too long, no room, pool destroyed). */
typedef void (*pool_close_fn)(void *conn, const char *why, void *arg);

pool_t *pool_new(loop_t *loop, size_t max, pool_close_fn close_fn, void *arg);
/* Every kept connection is closed. */
void pool_destroy(pool_t **p);

/*
 * Offer a connection that has served `used` messages: kept (1) when
 * max_uses > 1, used < max_uses and idle_ms > 0; otherwise 0 and the
 * caller closes it. A key longer than POOL_KEY_MAX is never kept.
 */
int pool_put(pool_t *p, const char *key, void *conn, unsigned used, unsigned max_uses,
             uint64_t idle_ms);
/* The connection kept last under key (taken out of the pool), or NULL; *used its count. */
void *pool_take(pool_t *p, const char *key, unsigned *used);
/* 1 if some connection is kept under key. */
int pool_has(const pool_t *p, const char *key);
/* Forget conn (it closed while idle) without calling close; 1 if it was kept. */
int pool_forget(pool_t *p, void *conn);

size_t pool_count(const pool_t *p);
uint64_t pool_reused_total(const pool_t *p);

#endif
