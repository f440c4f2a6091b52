/*
 * router_dispatch: the router's bookkeeping between queue and delivery
 * workers. It learns workers from their heartbeats, routes each job, holds
 * it back when its route has no endpoint up or its destination is paused
 * or over its limits (answering queue "not attempted", with when to offer
 * it again, when the wait would be long), picks the endpoint order and a
 * source address, hands it as a task to the worker with the most free
 * slots (or holds it in a bounded FIFO), keeps the table of tasks in
 * flight, learns endpoint health, MX hosts and slow-downs from results,
 * passes results back and answers for tasks whose worker went silent. All
 * bus I/O goes through the ops callbacks, so it runs the same under unit
 * tests; it never opens a socket itself and never reads the message body.
 */
#ifndef SX_ROUTER_DISPATCH_H
#define SX_ROUTER_DISPATCH_H

#include "ipc/bus.h"
#include "router_health.h"
#include "router_route.h"
#include "router_shape.h"
#include "router_source.h"

#include <stddef.h>
#include <stdint.h>

#define DISPATCH_WORKERS_MAX  1024  /* distinct workers tracked at once */
#define DISPATCH_SLOTS_MAX    10000 /* slots a worker may announce */
#define DISPATCH_TICK_MS      250   /* how often silent workers, old jobs and rates are checked */
#define DISPATCH_RETRY_MAX_MS 3600000u /* the longest wait handed back with a held job */

typedef struct dispatch dispatch_t;

typedef struct dispatch_ops {
    /* Send a task to a worker; payload is moved (closed on failure too). 0 or -1. */
    int (*send_task)(const bus_peer_t *worker, uint64_t task_id, PB(DeliveryTask) * task,
                     zmq_msg_t *payload, void *arg);
    /* Answer a job to the queue peer that sent it. */
    void (*answer)(const bus_peer_t *queue, uint64_t request_id, PB(DeliveryResult) * result,
                   void *arg);
    /* Publish an event about an outcome the router decided itself. May be NULL. */
    void (*event)(PB(Event) * ev, void *arg);
    /* Clocks (may be NULL: the loop's monotonic time, the wall clock). */
    uint64_t (*now)(void *arg);
    uint64_t (*wall)(void *arg);
} dispatch_ops_t;

typedef struct dispatch_limits {
    uint64_t worker_timeout_ms;  /* a worker silent this long is dropped */
    size_t max_pending;          /* jobs held while no worker has a free slot */
    uint64_t pending_timeout_ms; /* a job held this long is answered deferred; 0: never */
    uint64_t shape_max_wait_ms;  /* a job held for its destination longer: not attempted */
    size_t shape_queue_max;      /* jobs held per destination; more: not attempted */
    health_limits_t health;
} dispatch_limits_t;

typedef struct dispatch_stats {
    size_t workers;
    size_t free_slots;
    size_t inflight;
    size_t pending;
    uint64_t jobs_total;
    uint64_t workers_lost;
    uint64_t held_back; /* jobs answered "not attempted" */
    size_t endpoints_down;
    size_t destinations_paused;
} dispatch_stats_t;

/*
 * routes is borrowed and must outlive the dispatcher. Shaping starts with
 * the built-in provider profiles and no source pools; dispatch_set_shaping
 * replaces them.
 */
dispatch_t *dispatch_new(loop_t *loop, const route_table_t *routes, const dispatch_limits_t *limits,
                         const dispatch_ops_t *ops, void *arg);
void dispatch_destroy(dispatch_t **d);

/* Use this shaper and these source pools (borrowed; source may be NULL). Before any job. */
void dispatch_set_shaping(dispatch_t *d, shape_t *shape, source_t *source);

/*
 * A job from queue. Takes the envelope holding the DeliveryJob (*env is
 * NULLed) and the body (moved). Every job is answered exactly once, through
 * ops->answer, now or later.
 */
void dispatch_job(dispatch_t *d, const bus_peer_t *queue, uint64_t request_id, sx_env_t **env,
                  zmq_msg_t *payload);

/* A DeliveryWorkerReady (the heartbeat) from peer. */
void dispatch_worker_ready(dispatch_t *d, const bus_peer_t *peer, const char *instance,
                           uint32_t slots);

/*
 * A worker's answer to task_id: a DeliveryResult, or NULL with a failure
 * status (the worker sent an Error) that applies to every recipient.
 */
void dispatch_result(dispatch_t *d, const bus_peer_t *peer, uint64_t task_id,
                     const PB(DeliveryResult) * result, const PB(Status) * failure);

/*
 * Drop workers silent since before now - worker_timeout, answer old held
 * jobs, and send what waited for a rate token.
 */
void dispatch_expire(dispatch_t *d, uint64_t now);

/* After an operator drained or undrained endpoints: held jobs may move. */
void dispatch_kick(dispatch_t *d);

void dispatch_get_stats(dispatch_t *d, dispatch_stats_t *st);

/* The parts, for `pool list` and `pool drain` (owned by the dispatcher or borrowed by it). */
health_t *dispatch_health(dispatch_t *d);
shape_t *dispatch_shape(dispatch_t *d);
source_t *dispatch_source(dispatch_t *d);
uint64_t dispatch_now(dispatch_t *d);
uint64_t dispatch_wall(dispatch_t *d);

#endif
