/*
 * router_dispatch: the router's bookkeeping between queue and delivery
 * workers. It learns workers from their heartbeats, routes each job, hands
 * it as a task to the worker with the most free slots (or holds it in a
 * bounded FIFO), keeps the table of tasks in flight, passes results back
 * and answers for tasks whose worker went silent. All bus I/O goes through
 * the ops callbacks, so it runs the same under unit tests; it never opens
 * a socket itself and never reads the message body.
 */
#ifndef SX_ROUTER_DISPATCH_H
#define SX_ROUTER_DISPATCH_H

#include "ipc/bus.h"
#include "router_route.h"

#include <stddef.h>
#include <stdint.h>

#define DISPATCH_WORKERS_MAX 1024 /* distinct workers tracked at once */
#define DISPATCH_SLOTS_MAX   10000 /* slots a worker may announce */
#define DISPATCH_TICK_MS     250   /* how often silent workers and old jobs are checked */

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
} dispatch_ops_t;

typedef struct dispatch_limits {
    uint64_t worker_timeout_ms;  /* a worker silent this long is dropped */
    size_t max_pending;          /* jobs held while no worker has a free slot */
    uint64_t pending_timeout_ms; /* a job held this long is answered deferred; 0: never */
} dispatch_limits_t;

typedef struct dispatch_stats {
    size_t workers;
    size_t free_slots;
    size_t inflight;
    size_t pending;
    uint64_t jobs_total;
    uint64_t workers_lost;
} dispatch_stats_t;

/* routes is borrowed and must outlive the dispatcher. */
dispatch_t *dispatch_new(loop_t *loop, const route_table_t *routes,
                         const dispatch_limits_t *limits, const dispatch_ops_t *ops, void *arg);
void dispatch_destroy(dispatch_t **d);

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

/* Drop workers silent since before now - worker_timeout, answer old held jobs. */
void dispatch_expire(dispatch_t *d, uint64_t now);

void dispatch_get_stats(const dispatch_t *d, dispatch_stats_t *st);

#endif
