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
    uint64_t greylist_retry;      /* ms: retry after a greylisting reply that names no wait */
    uint64_t greylist_max_wait;   /* ms: a wait asked for by a reply is capped at this */
    long long max_inflight;       /* messages handed to router at once */
    uint64_t max_inflight_bytes;  /* body bytes of the jobs out at routers */
    uint64_t job_timeout;         /* ms: no result by then counts as deferred */
    uint64_t upload_memory_max;   /* bytes of chunks held for unfinished DATA */
    uint64_t upload_idle_timeout; /* ms */
    long long group_commit_max;   /* messages per synced transaction */
    uint64_t results_hold;        /* ms outcomes wait to share a commit's write */
    uint64_t done_retention;      /* ms a finished message stays visible to `queue show` */
    uint64_t done_move_delay;     /* ms a just-finished record waits in "msg" for its batch */
    long long domain_hold_after;  /* consecutive connection-level failures before a hold */
    uint64_t domain_hold_base;    /* ms: first hold, doubling on each failed probe */
    uint64_t domain_hold_max;     /* ms */
    long long soft_bounce_limit;  /* soft bounces of one address before it counts as hard */
    uint64_t soft_bounce_window;  /* ms: ... or soft bounces spread over this long */
    uint64_t suppression_ttl;     /* ms an automatic suppression lasts (0: forever) */
    uint64_t dsn_max_return;      /* bytes of the original returned whole in a bounce */
    uint64_t map_size;
    uint64_t map_max;
} queue_conf_t;

typedef struct queue_upload queue_upload_t;
typedef struct queue_sched queue_sched_t;
typedef struct queue_index queue_index_t;

typedef struct queue {
    service_t *svc;
    queue_conf_t conf;
    char name[48];     /* "queue/1": how router and peers know this instance */
    store_t *store;
    unsigned db_msg;   /* message id -> QueueRecord */
    unsigned db_body;  /* message id -> body bytes */
    unsigned db_supp;  /* tenant NUL address -> Suppression */
    unsigned db_soft;  /* tenant NUL address -> soft bounce count and first time */
    unsigned db_dom;   /* domain -> operator suspension (until, ms) */
    unsigned db_done;  /* message id -> QueueRecord of a finished message */
    unsigned db_done_at; /* done time and id (queue_done_key) -> nothing */
    bus_server_t *api;
    bus_client_t **routers;
    uint64_t *router_started;  /* start time each router reported; a change means a restart */
    size_t nrouters;
    size_t next_router;
    loop_timer_t router_ping;
    bus_client_t **peers;  /* the other queue instances (suppression replication) */
    size_t npeers;

    /* accept side: chunks of messages whose DATA is still arriving, and
     * commits waiting for the next group commit */
    queue_upload_t *uploads;
    uint64_t upload_bytes;
    struct queue_commit *commits;      /* FIFO */
    struct queue_commit **commits_tail;
    size_t ncommits;
    struct queue_commit *batch;        /* taken for this turn's write */
    loop_timer_t upload_sweep;

    loop_timer_t write_timer;  /* the synced write of this loop turn (queue_write.c) */
    loop_timer_t results_timer; /* results alone wait this long for a commit to join */

    queue_sched_t *sched;
    queue_index_t *index;
    void *results;             /* queue_results.c's pending results */
    loop_timer_t supp_sweep;
    loop_timer_t done_sweep;   /* finished messages past done_retention (queue_done.c) */
    loop_timer_t done_move;    /* just-finished records moved out of "msg" in batches */
    struct done_pending *done_pending;

    /* counters for ServicePong */
    uint64_t accepted, commit_batches, commit_failures, delivered, bounced, deferred, expired;
    uint64_t suppressed, dsn_sent;
} queue_t;

/* ---- store (queue_store.c) ---- */
int queue_store_open(queue_t *q);
/* Unpacked record for id from txn, live or finished, or NULL (not found or
 * unreadable). */
PB(QueueRecord) * queue_store_get(queue_t *q, store_txn_t *txn, const char *id);
/* Write rec: into "msg" while it is live, into "done" (with its "done_at"
 * key, out of "msg") once done_at_ms is set. */
int queue_store_put(queue_t *q, store_txn_t *txn, PB(QueueRecord) * rec);
/* Write a record that finishes in this transaction into "msg" all the same;
 * once the transaction is on disk, queue_done_later has it moved. */
int queue_store_put_finishing(queue_t *q, store_txn_t *txn, PB(QueueRecord) * rec);
/* Move the finished record of id from "msg" to "done" (done_at_ms its
 * "done_at" key) as it is; STORE_NOTFOUND when it is no longer in "msg". */
int queue_store_retire(queue_t *q, store_txn_t *txn, const char *id, uint64_t done_at_ms);
void queue_record_free(PB(QueueRecord) * *rec);
/* 1 when no recipient is still waiting (queued or deferred). */
int queue_record_finished(const PB(QueueRecord) * rec);
int queue_rcpt_pending(const PB(QueueRecipientState) * r);
/* Earliest next attempt of the pending recipients, or 0 when none. */
uint64_t queue_record_next_due(const PB(QueueRecord) * rec);
const char *queue_rcpt_domain(const char *address);
/* Replace a string field of an unpacked message (never freeing protobuf-c's
 * shared empty string). */
void queue_set_str(char **field, const char *value);
PB(Status) * queue_status_new(unsigned code, const char *enh, const char *text);

/* Bytes of map and disk kept free for the writes that free space. */
size_t queue_store_reserve(const queue_t *q);
/* Whether a record with this id exists, live or finished. */
int queue_store_has(queue_t *q, store_txn_t *txn, const char *id);
/* The "done_at" key of a message finished at at_ms; its length. */
#define QUEUE_DONE_KEY_LEN (8 + ID_LEN)
size_t queue_done_key(uint64_t at_ms, const char *id, uint8_t key[QUEUE_DONE_KEY_LEN]);
uint64_t queue_done_key_time(const void *key);
/* Store a new message (record and body) in txn, as a commit does. */
int queue_store_message(queue_t *q, store_txn_t *txn, PB(QueueRecord) * rec, const void *body,
                        size_t len);

/* Retry delay after the n-th failed attempt (n >= 1), with jitter. */
uint64_t queue_backoff(const queue_conf_t *c, uint32_t attempts, uint64_t random);
/*
 * A deferral that is greylisting or names its own wait: the delay to use
 * (ms), or 0 for the normal backoff.
 */
uint64_t queue_reply_wait(const queue_conf_t *c, unsigned code, const char *enh,
                          const char *text);
/* 1 for a bounce that proves the address does not exist (5.1.1, 5.1.2...). */
int queue_hard_bounce(unsigned code, const char *enh);
/* 1 for a deferral about the mailbox (full, busy...), not the network. */
int queue_soft_bounce(unsigned code, const char *enh, const char *text);
/* 1 for a failure of the destination as a whole (connection, 421, timeouts). */
int queue_destination_failure(unsigned code, const char *enh);

/* ---- accept (queue_accept.c): chunks, commits, aborts, show ---- */
int queue_accept_init(queue_t *q);
void queue_accept_fini(queue_t *q);
void queue_on_chunk(queue_t *q, bus_msg_t *msg);
void queue_on_commit(queue_t *q, bus_msg_t *msg);
void queue_on_abort(queue_t *q, bus_msg_t *msg);
void queue_on_show(queue_t *q, bus_msg_t *msg);

/* ---- the one synced write of each loop turn (queue_write.c) ---- */
void queue_write_init(queue_t *q);
void queue_write_fini(queue_t *q);
/* Have pending commits and results written at the end of this loop turn. */
void queue_write_soon(queue_t *q);
/* Have pending results written with the next commit, or alone after a short
 * hold when no commit comes: nobody waits on a result's write, and a
 * results-only fsync would hold up the commit that arrives during it. */
void queue_write_results_soon(queue_t *q);
/* At a stop: write what is pending now rather than drop what was held. */
void queue_write_flush(queue_t *q);

/*
 * Each side's part of that write: take what is pending (the count to
 * write), write it inside the transaction (replayed whole when the map
 * grows), then act on the outcome once the commit returned.
 */
size_t queue_commits_take(queue_t *q);
int queue_commits_write(queue_t *q, store_txn_t *txn);
void queue_commits_done(queue_t *q, int rc);
size_t queue_results_take(queue_t *q);
int queue_results_write(queue_t *q, store_txn_t *txn);
void queue_results_done(queue_t *q, int rc);

/* ---- in-memory index of messages and destinations (queue_index.c) ---- */
typedef struct queue_domain {
    char name[256];
    uint32_t failures;        /* consecutive destination failures */
    uint32_t hold_level;      /* holds in a row without a success */
    uint64_t held_until;      /* wall ms: held after repeated failures */
    uint64_t suspended_until; /* wall ms: operator; UINT64_MAX: until resumed */
    char last_error[256];
    uint64_t last_error_at;
    uint64_t pending, deferred; /* recipients waiting for it (kept by the index) */
    struct queue_domain *next;
} queue_domain_t;

int queue_index_init(queue_t *q);
void queue_index_fini(queue_t *q);
/* (Re)build the entry of a message from its record; a finished one is dropped. */
void queue_index_put(queue_t *q, const PB(QueueRecord) * rec);
void queue_index_drop(queue_t *q, const char *id);
size_t queue_index_count(const queue_t *q);
/* Ids of messages matching sel (up to max; *matched: all that match). */
size_t queue_index_select(queue_t *q, const PB(QueueSelect) * sel, char (*ids)[ID_BUF_SIZE],
                          size_t max, size_t *matched);
int queue_index_held(queue_t *q, const char *id);
queue_domain_t *queue_domain_get(queue_t *q, const char *domain, int create);
/* A domain not to be tried now; *until gets when it may be (wall ms). */
int queue_domain_blocked(queue_t *q, const char *domain, uint64_t now, uint64_t *until);
void queue_domain_result(queue_t *q, const char *domain, int failed, const char *error,
                         uint64_t now);
void queue_on_stats(queue_t *q, bus_msg_t *msg);

/* ---- operations (queue_ops.c) ---- */
void queue_on_list(queue_t *q, bus_msg_t *msg);
void queue_on_action(queue_t *q, bus_msg_t *msg);
void queue_on_suspend(queue_t *q, bus_msg_t *msg);
int queue_ops_load(queue_t *q);  /* operator suspensions from the store */

/* ---- suppression (queue_suppress.c) ---- */
void queue_suppress_init(queue_t *q);
void queue_suppress_fini(queue_t *q);
/* 1 if (tenant, address) is suppressed now; *entry filled when not NULL. */
int queue_suppressed(queue_t *q, store_txn_t *txn, const char *tenant, const char *address);
int queue_suppress_put(queue_t *q, store_txn_t *txn, const PB(Suppression) * e);
/* Tell the other instances about an entry learnt here. */
void queue_suppress_replicate(queue_t *q, const PB(Suppression) * e);
void queue_on_suppress(queue_t *q, bus_msg_t *msg);
size_t queue_suppress_count(queue_t *q);
/* Count a soft bounce of (tenant, address); 1 when it has now become hard. */
int queue_soft_count(queue_t *q, store_txn_t *txn, const char *tenant, const char *address,
                     uint64_t now);
void queue_soft_clear(queue_t *q, store_txn_t *txn, const char *tenant, const char *address);

/* ---- bounces (queue_dsn.c) ---- */
typedef struct dsn_rcpt {
    const PB(QueueRecipientState) * state;
    const PB(QueueRecipient) * orig;   /* NOTIFY and ORCPT as given, may be NULL */
    const char *action;                /* failed, delayed, relayed */
} dsn_rcpt_t;
/*
 * Build a delivery status notification (RFC 3464) about rcpts of rec, sent
 * from the null sender to the envelope sender; NULL when the sender is null
 * (a bounce is never bounced). Returns the new record; *body and *len get
 * the message (caller frees both).
 */
PB(QueueRecord) * queue_dsn_build(queue_t *q, const PB(QueueRecord) * rec, const dsn_rcpt_t *rcpts,
                                  size_t n, const void *orig_body, size_t orig_len, char **body,
                                  size_t *len);
/* 1 if the recipient's NOTIFY asks for this kind of report (failed, relayed). */
int queue_dsn_wanted(const PB(QueueRecipient) * orig, const char *action);
void queue_dsn_record_free(PB(QueueRecord) * rec);

/* ---- scheduler (queue_sched.c) and results (queue_results.c) ---- */

/* Recipients of one message handed to router together (one domain). */
typedef struct job_ctx {
    queue_t *q;
    char id[ID_BUF_SIZE];
    char domain[256];
    uint32_t *indexes;
    size_t n;
    size_t router;            /* which router took it */
    size_t body_bytes;        /* the body it carried, counted while out */
    uint64_t request_id;      /* its bus request, to cancel if that router restarts */
    struct job_ctx *prev, *next; /* jobs out at routers */
} job_ctx_t;

typedef enum {
    RESULT_REMOTE = 0,   /* a DeliveryResult (or its absence: res NULL) */
    RESULT_SUPPRESSED,   /* recipients found on the suppression list */
    RESULT_OPERATOR,     /* recipients bounced by an operator */
} result_kind_t;

typedef struct result {
    result_kind_t kind;
    job_ctx_t *job;
    sx_env_t *res_env;         /* REMOTE: the DeliveryResult's envelope; NULL when none came */
    const char *fail_text;
    int counts_inflight;       /* releases an in-flight job when applied */
    /* filled by the write */
    PB(QueueRecord) * rec;     /* the record as written */
    PB(QueueRecord) * dsn;     /* a report generated for the sender */
    PB(Suppression) * *supp;   /* entries added */
    size_t nsupp;
    int *outcomes;             /* per recipient of the job: what became of it */
    int dest_failed;           /* -1 unknown, 0 the destination answered, 1 it failed */
    char dest_error[256];
    int finished_now;          /* the write finished the message (left in "msg" to move) */
    struct result *next;
} result_t;

void queue_results_push(queue_t *q, result_t *r);
void queue_results_init(queue_t *q);
void queue_results_fini(queue_t *q);
void queue_result_free(result_t *r);
void queue_job_free(job_ctx_t *job);
/* Called by the results path once a result is on disk. */
void queue_sched_result_done(queue_t *q, result_t *r, int written, uint64_t now);

int queue_sched_init(queue_t *q);
void queue_sched_fini(queue_t *q);
/* A message (now stored) has recipients due at due_ms (wall clock). body, when
 * given, is the whole body in one frame: a reference is kept for the first job. */
void queue_sched_add(queue_t *q, const char *id, uint64_t due_ms, zmq_msg_t *body);
size_t queue_sched_size(const queue_t *q);
size_t queue_sched_inflight(const queue_t *q);
size_t queue_sched_inflight_bytes(const queue_t *q);
int queue_sched_is_inflight(const queue_t *q, const char *id);
/* Ping routers; jobs held by one that restarted are retried at once. */
void queue_sched_watch_routers(queue_t *q);

/* ---- finished messages (queue_done.c) ---- */

/* Move the finished records found in "msg" at start (left by a stop before
 * their batch, or by an older store); start the sweep. */
int queue_done_init(queue_t *q, char **ids, size_t n);
void queue_done_fini(queue_t *q);
/* A record written with queue_store_put_finishing is on disk: move it out
 * of "msg" with the next batch, done_move_delay from the first one pending. */
void queue_done_later(queue_t *q, const char *id, uint64_t done_at_ms);
/* At a stop: move what is pending now. */
void queue_done_flush(queue_t *q);

#endif
