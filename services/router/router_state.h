/*
 * router_state: the router's own LMDB store (state_dir/router-<instance>),
 * holding what must survive a restart: each warming source address's
 * warm-up start day and its tasks per provider per UTC day. Counts are
 * written in batches (router.c flushes them every second), so a crash
 * loses at most the last batch, never more. Endpoint health and
 * destination pauses are not kept: after a restart they are learnt again.
 */
#ifndef SX_ROUTER_STATE_H
#define SX_ROUTER_STATE_H

#include "router_source.h"

#include <stddef.h>
#include <stdint.h>

#define RSTATE_KEEP_DAYS 7 /* counts older than this many days are deleted at load */

typedef struct rstate rstate_t;

rstate_t *rstate_open(const char *dir, char *err, size_t errlen);
void rstate_close(rstate_t **st);

/* Give src today's counts and every warm-up start; drop counts past RSTATE_KEEP_DAYS. 0 or -1. */
int rstate_load(rstate_t *st, source_t *src, uint64_t wall_ms);

/* Write what changed in src since the last flush. 0 (also when nothing did) or -1. */
int rstate_flush(rstate_t *st, source_t *src);

#endif
