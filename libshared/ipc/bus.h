/*
 * bus: ZeroMQ sockets that carry protobuf envelopes between services.
 *
 * Patterns (docs/ARCHITECTURE.md has the whole map):
 *   server  ROUTER, bound: a service's API. Answers requests, can also send
 *           unsolicited messages to a known peer (router -> delivery tasks).
 *           ServicePing is answered here for every service.
 *   client  DEALER, connected to one server endpoint: asynchronous requests
 *           matched to replies by request id, each with a deadline.
 *   push    PUSH, connected: fire-and-forget (events).
 *   pull    PULL, bound: the receiving end of push.
 *
 * A message is frame 1: the envelope; frame 2 (optional): a payload, the
 * message body, carried as its own frame so it is never copied into or out
 * of protobuf. On a ROUTER the peer identity comes first.
 */
#ifndef SX_BUS_H
#define SX_BUS_H

#include "codec.h"
#include "core/loop.h"

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#define BUS_MAX_PAYLOAD (64u << 20) /* above the largest message size we accept */
#define BUS_PEER_MAX    255

typedef struct bus bus_t;
typedef struct bus_server bus_server_t;
typedef struct bus_client bus_client_t;
typedef struct bus_push bus_push_t;
typedef struct bus_pull bus_pull_t;

typedef struct bus_peer {
    uint8_t id[BUS_PEER_MAX];
    uint8_t len;
} bus_peer_t;

typedef struct bus_msg {
    sx_env_t *env;      /* decoded envelope, freed after the handler returns */
    zmq_msg_t payload;  /* always initialised; size 0 when absent */
    bus_peer_t peer;    /* on a server: who sent it */
} bus_msg_t;

typedef enum {
    BUS_OK = 0,
    BUS_TIMEOUT,     /* no reply before the deadline */
    BUS_UNAVAILABLE, /* no connected peer to send to */
} bus_status_t;

/* Extra key=value stats a service adds to its ServicePong. */
typedef void (*bus_stats_fn)(PB(ServicePong) * pong, void *arg);

/* Add one stat to a pong from a bus_stats_fn. */
void bus_pong_stat(PB(ServicePong) * pong, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

bus_t *bus_new(loop_t *loop, const char *service, const char *instance);
void bus_destroy(bus_t **bus);
loop_t *bus_loop(bus_t *bus);
void *bus_context(bus_t *bus);
void bus_set_stats(bus_t *bus, bus_stats_fn fn, void *arg);
/* "service/instance", the sender name on every envelope. */
const char *bus_name(const bus_t *bus);

/* Keep the decoded envelope beyond the handler (free it with codec_free). */
sx_env_t *bus_msg_take_env(bus_msg_t *msg);
/* Move the payload out of a message (no copy); dst must be uninitialised. */
void bus_msg_take_payload(bus_msg_t *msg, zmq_msg_t *dst);

/* ---- server (ROUTER, bind) ---- */

typedef void (*bus_server_fn)(bus_server_t *srv, bus_msg_t *msg, void *arg);

bus_server_t *bus_server_new(bus_t *bus, const char *endpoint, bus_server_fn fn, void *arg);
void bus_server_destroy(bus_server_t **srv);
/* Send env (+ payload, moved, may be NULL) to peer with the given request id. */
int bus_server_send(bus_server_t *srv, const bus_peer_t *peer, uint64_t request_id, sx_env_t *env,
                    zmq_msg_t *payload);
int bus_server_error(bus_server_t *srv, const bus_peer_t *peer, uint64_t request_id,
                     unsigned code, const char *enhanced, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* ---- client (DEALER, connect) ---- */

/* reply is NULL unless status is BUS_OK. */
typedef void (*bus_reply_fn)(bus_msg_t *reply, bus_status_t status, void *arg);
/* A message that answers no pending request (a task pushed by a server). */
typedef void (*bus_client_fn)(bus_client_t *cl, bus_msg_t *msg, void *arg);

bus_client_t *bus_client_new(bus_t *bus, const char *endpoint);
void bus_client_destroy(bus_client_t **cl);
void bus_client_on_message(bus_client_t *cl, bus_client_fn fn, void *arg);
/*
 * Send a request; fn runs exactly once, later, with the reply or a failure.
 * Returns -1 (and fn never runs) when no peer is connected right now, so the
 * caller can try another instance at once.
 */
int bus_client_request(bus_client_t *cl, sx_env_t *env, zmq_msg_t *payload, uint64_t timeout_ms,
                       bus_reply_fn fn, void *arg, uint64_t *request_id);
/* Send without expecting a reply (answers to server-pushed tasks, heartbeats). */
int bus_client_send(bus_client_t *cl, uint64_t request_id, sx_env_t *env, zmq_msg_t *payload);
/* Forget a request: its callback will not run. */
void bus_client_cancel(bus_client_t *cl, uint64_t request_id);
const char *bus_client_endpoint(const bus_client_t *cl);
size_t bus_client_pending(const bus_client_t *cl);
/* 0 after a send found no peer or three deadlines in a row passed; 1 again on a reply. */
int bus_client_up(const bus_client_t *cl);

/* ---- push / pull ---- */

typedef void (*bus_pull_fn)(bus_pull_t *pl, bus_msg_t *msg, void *arg);

bus_push_t *bus_push_new(bus_t *bus, const char *endpoint);
void bus_push_destroy(bus_push_t **ps);
int bus_push_send(bus_push_t *ps, sx_env_t *env);
/* An envelope whose body, field number `field`, is packed already (codec_encode_packed). */
int bus_push_send_packed(bus_push_t *ps, uint32_t field, const void *body, size_t body_len);

bus_pull_t *bus_pull_new(bus_t *bus, const char *endpoint, bus_pull_fn fn, void *arg);
void bus_pull_destroy(bus_pull_t **pl);

/* Make the directory of an ipc:// endpoint; 0 for other transports. */
int bus_endpoint_prepare(const char *endpoint);

#endif
