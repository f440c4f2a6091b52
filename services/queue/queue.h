/*
 * queue: internal interfaces of the queue service, shared by its files.
 * Nothing here is seen outside services/queue.
 */
#ifndef SX_QUEUE_H
#define SX_QUEUE_H

#include "core/id.h"
#include "ipc/service.h"
#include "store/store.h"

#include <stdint.h>
#include <zmq.h>

typedef struct queue_conf {
    uint64_t retry_base;          /* ms: first retry delay */
    uint64_t retry_max_interval;  /* ms: backoff cap */
    uint64_t max_age;             /* ms: give up and bounce after this */
    long long max_inflight;       /* messages handed to router at once */
    uint64_t job_timeout;         /* ms: no result by then counts as deferred */
    uint64_t upload_memory_max;   /* bytes of chunks held for unfinished DATA */
    uint64_t upload_idle_timeout; /* ms */
    long long group_commit_max;   /* messages per synced transaction */
    uint64_t done_retention;      /* ms a finished message stays visible to `queue show` */
    uint64_t map_size;
    uint64_t map_max;
} queue_conf_t;

typedef struct queue_upload queue_upload_t;
typedef struct queue_sched queue_sched_t;

typedef struct queue {
    service_t *svc;
    queue_conf_t conf;
    store_t *store;
    unsigned db_msg;   /* message id -> QueueRecord */
    unsigned db_body;  /* message id -> body bytes */
    bus_server_t *api;
    bus_client_t **routers;
    size_t nrouters;
    size_t next_router;

    /* accept side: chunks of messages whose DATA is still arriving, and
     * commits waiting for the next group commit */
    queue_upload_t *uploads;
    uint64_t upload_bytes;
    struct queue_commit *commits;      /* FIFO */
    struct queue_commit **commits_tail;
    size_t ncommits;
    loop_timer_t commit_timer;
    loop_timer_t upload_sweep;

    queue_sched_t *sched;

    /* counters for ServicePong */
    uint64_t accepted, commit_batches, commit_failures, delivered, bounced, deferred, expired;
} queue_t;

/* ---- store (queue_store.c) ---- */
int queue_store_open(queue_t *q);
/* Unpacked record for id from txn, or NULL (not found or unreadable). */
PB(QueueRecord) * queue_store_get(queue_t *q, store_txn_t *txn, const char *id);
int queue_store_put(queue_t *q, store_txn_t *txn, PB(QueueRecord) * rec);
void queue_record_free(PB(QueueRecord) * *rec);
/* 1 when no recipient is still waiting (queued, deferred or inflight). */
int queue_record_finished(const PB(QueueRecord) * rec);

/* ---- accept (queue_accept.c): chunks, commits, aborts, show ---- */
int queue_accept_init(queue_t *q);
void queue_accept_fini(queue_t *q);
void queue_on_chunk(queue_t *q, bus_msg_t *msg);
void queue_on_commit(queue_t *q, bus_msg_t *msg);
void queue_on_abort(queue_t *q, bus_msg_t *msg);
void queue_on_show(queue_t *q, bus_msg_t *msg);

/* ---- scheduler (queue_sched.c) ---- */
int queue_sched_init(queue_t *q);
void queue_sched_fini(queue_t *q);
/* A message (now stored) has recipients due at due_ms (wall clock). */
void queue_sched_add(queue_t *q, const char *id, uint64_t due_ms);
size_t queue_sched_size(const queue_t *q);
size_t queue_sched_inflight(const queue_t *q);

/* Retry delay after the n-th failed attempt (n >= 1), with jitter. */
uint64_t queue_backoff(const queue_conf_t *c, uint32_t attempts, uint64_t random);

#endif
