/*
 * delivery_task: one DeliveryTask from the router, from the first lookup
 * to the DeliveryResult. For a smart-host route it walks the route's
 * endpoints in order (each name's addresses in turn); for an MX route it
 * looks up the recipient domain's MX records (or its own addresses when it
 * has none) and its MTA-STS policy, and walks the MX hosts in preference
 * order. It moves on when an address is refused by policy, will not
 * connect, greets with a failure or cannot meet the TLS policy; it takes a
 * kept connection from the pool when one fits and puts its own back after
 * the message; and it turns what happened into one outcome and reason per
 * recipient, the list of attempts, one event per recipient and one summary
 * log line. It does not speak SMTP (delivery_session.c) or the bus
 * (delivery.c).
 */
#ifndef SX_DELIVERY_TASK_H
#define SX_DELIVERY_TASK_H

#include "core/loop.h"
#include "delivery_dkim.h"
#include "delivery_policy.h"
#include "delivery_pool.h"
#include "delivery_resolve.h"
#include "ipc/proto.h"

#include <openssl/ssl.h>
#include <stdint.h>
#include <zmq.h>

#define TASK_ATTEMPTS_MAX 32 /* endpoint attempts reported per task */

typedef struct delivery_ctx {
    loop_t *loop;
    SSL_CTX *tls_ctx;
    resolver_t *resolver;
    dkim_signer_t *dkim; /* signs messages of domains with keys; NULL: nothing signed */
    pool_t *pool;             /* kept connections; NULL: none kept */
    policy_mgr_t *policy;     /* MTA-STS; NULL: not looked up */
    const char *helo;         /* when the route names none */
    uint64_t connect_timeout_ms;
    uint64_t command_timeout_ms;
    uint64_t greeting_timeout_ms; /* smart hosts: no greeting by then counts as down */
    uint64_t data_timeout_ms;
    uint64_t idle_timeout_ms; /* how long a kept connection may wait for the next message */
    unsigned mx_port;         /* the SMTP port of MX hosts (25) */
    char *const *require_tls; /* recipient domain or MX host patterns that need verified TLS */
    size_t nrequire_tls;
    uint64_t *rand_state;     /* shuffles MX hosts of equal preference */
    void (*event)(PB(Event) * ev, void *arg); /* may be NULL */
    void *event_arg;
} delivery_ctx_t;

typedef struct task task_t;

/* The result is valid during the call only; done may destroy the task. */
typedef void (*task_done_fn)(task_t *t, PB(DeliveryResult) * result, void *arg);

/*
 * A task from the envelope holding a DeliveryTask (taken: *env is NULLed)
 * and its body (moved). ctx must outlive the task. Nothing starts before
 * task_start(); done runs once, later, from the loop.
 */
task_t *task_new(const delivery_ctx_t *ctx, uint64_t id, sx_env_t **env, zmq_msg_t *body,
                 task_done_fn done, void *arg);
void task_start(task_t *t);
/* Stop at once: sessions closed, lookups cancelled, done never runs. */
void task_destroy(task_t **t);

uint64_t task_id(const task_t *t);
const char *task_message_id(const task_t *t);

/*
 * Why a DeliveryTask from a peer cannot be run as is (NULL: it can). Checks
 * the parts that reach the SMTP dialogue: no CR, LF or brackets can smuggle
 * a command into MAIL or RCPT.
 */
const char *task_invalid(const PB(DeliveryTask) * task);

/* 1 if name (a recipient domain or an MX host) matches one of the patterns. */
int task_tls_listed(char *const *patterns, size_t n, const char *name);

/* The pool key of a connection: what a later task must share to reuse it. */
void task_pool_key(char *out, size_t size, int mx, const char *host, unsigned port,
                   const char *source, int tls, const char *helo, const char *user);

#endif
