/*
 * delivery_task: one DeliveryTask from the router, from the first connect
 * to the DeliveryResult. It walks the route's endpoints in order (each
 * name's addresses in turn), moves on when one refuses, times out, greets
 * with a failure or cannot meet the TLS policy, hands the message to the
 * first session that becomes ready, and turns what happened into one
 * outcome per recipient, one event per recipient and one summary log line.
 * It does not speak SMTP (delivery_session.c) or the bus (delivery.c).
 */
#ifndef SX_DELIVERY_TASK_H
#define SX_DELIVERY_TASK_H

#include "core/loop.h"
#include "delivery_dkim.h"
#include "delivery_resolve.h"
#include "ipc/proto.h"

#include <openssl/ssl.h>
#include <stdint.h>
#include <zmq.h>

typedef struct delivery_ctx {
    loop_t *loop;
    SSL_CTX *tls_ctx;
    resolver_t *resolver;
    dkim_signer_t *dkim; /* signs messages of domains with keys; NULL: nothing signed */
    const char *helo; /* when the route names none */
    uint64_t connect_timeout_ms;
    uint64_t command_timeout_ms;
    uint64_t data_timeout_ms;
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

#endif
