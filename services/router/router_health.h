/*
 * router_health: the state of every endpoint of every smarthost route
 * (up, down, drained), learnt from what delivery reports, and the order in
 * which a task should try them. A refused or timed-out connection, a
 * failed greeting, TLS or AUTH, or a 421 that is not a slow-down marks an
 * endpoint down at once; tasks then list the endpoints that are up first
 * and the down ones last. A down endpoint is probed: once its back-off
 * (probe_base, doubling to probe_max) has passed, the next task lists it
 * first; a success marks it up. When no endpoint of a route is up and no
 * probe is due, health_plan() says so, with when to look again, so jobs
 * are not sent at all. Drained endpoints (an operator's decision) are
 * never listed. Times are monotonic milliseconds passed in by the caller;
 * it keeps no clock and does no I/O.
 */
#ifndef SX_ROUTER_HEALTH_H
#define SX_ROUTER_HEALTH_H

#include "ipc/proto.h"
#include "router_route.h"

#include <stddef.h>
#include <stdint.h>

#define HEALTH_ERROR_MAX        200   /* bytes of the last error kept per endpoint */
#define HEALTH_DRAINED_RETRY_MS 30000 /* every endpoint drained: offer the job again after */
#define HEALTH_RETRY_MIN_MS     250   /* the shortest wait handed back for a held job */

typedef struct health health_t;

typedef struct health_limits {
    uint64_t probe_base_ms; /* first back-off after an endpoint goes down */
    uint64_t probe_max_ms;  /* the back-off doubles up to this */
} health_limits_t;

/* The endpoints one task tries, as indexes into its route, in order. */
typedef struct health_plan {
    size_t order[ROUTE_ENDPOINT_MAX];
    size_t n;
    int probe;               /* order[0] is a down endpoint being probed */
    uint64_t retry_after_ms; /* health_plan() refused: offer the job again after this */
    const char *why;         /* health_plan() refused: a sentence for logs and replies */
} health_plan_t;

/* One endpoint, for `sendarixctl pool list`. Times are monotonic ms (0: never). */
typedef struct health_view {
    const char *route;
    const char *endpoint;
    const char *state; /* up, down, drained */
    uint32_t failures; /* in a row */
    uint64_t down_since;
    uint64_t next_probe;
    uint64_t last_ok;
    const char *last_error;
    uint32_t inflight; /* tasks in flight that try it first */
} health_view_t;

/* routes is borrowed and must outlive the table. */
health_t *health_new(const route_table_t *routes, const health_limits_t *limits);
void health_destroy(health_t **h);

/*
 * The plan for a task on route r at now. 0: use plan (n is 0 for a route
 * without endpoints, an MX route). -1: nothing may be tried now; the plan's
 * retry_after_ms and why say when and why.
 */
int health_plan(health_t *h, const route_t *r, uint64_t now, health_plan_t *plan);

/* A task built from plan went out. */
void health_sent(health_t *h, const route_t *r, const health_plan_t *plan, uint64_t task_id,
                 uint64_t now);

/*
 * A task built from plan ended. res is delivery's result, or NULL when
 * there is none (worker lost or refused the task): then only the
 * bookkeeping is undone.
 */
void health_result(health_t *h, const route_t *r, const health_plan_t *plan, uint64_t task_id,
                   const PB(DeliveryResult) * res, uint64_t now);

/*
 * Drain (drain 1) or undrain an endpoint "host:port" of the route named
 * route, or of every route listing it when route is NULL or "". fn (may be
 * NULL) sees each endpoint changed. Returns how many matched.
 */
size_t health_drain(health_t *h, const char *route, const char *endpoint, int drain,
                    void (*fn)(const health_view_t *v, void *arg), void *arg);

void health_each(health_t *h, void (*fn)(const health_view_t *v, void *arg), void *arg);

/* Endpoints down (not counting drained ones), for stats. */
size_t health_down_count(const health_t *h);

/*
 * Does this reply, for every recipient, say the endpoint itself failed (no
 * connection, greeting, TLS, AUTH, or a 421 that is no slow-down)? For
 * results that carry no per-endpoint attempts.
 */
int health_reply_is_endpoint_failure(const PB(Status) * st, const char *reason);

#endif
