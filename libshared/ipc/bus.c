/*
 * bus: envelopes over ZeroMQ. Every socket is non-blocking and driven by
 * the service's loop; nothing here waits.
 */
#include "bus.h"
#include "pending.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/id.h"
#include "core/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BUS_HWM             20000
#define BUS_RECONNECT_MS    100
#define BUS_RECONNECT_MAX   2000
#define BUS_HEARTBEAT_MS    2000
#define BUS_HEARTBEAT_TTL   6000
#define BUS_DOWN_AFTER      3 /* deadlines in a row before a client counts as down */

struct bus {
    loop_t *loop;
    void *ctx;
    char name[96];
    uint64_t next_request_id;
    uint64_t started_at_ms;
    bus_stats_fn stats;
    void *stats_arg;
};

struct bus_server {
    bus_t *bus;
    void *sock;
    char *endpoint;
    bus_server_fn fn;
    void *arg;
};

typedef struct client_wait {
    bus_reply_fn fn;
    void *arg;
} client_wait_t;

struct bus_client {
    bus_t *bus;
    void *sock;
    char *endpoint;
    pending_t *pending;
    bus_client_fn on_message;
    void *on_message_arg;
    int down_count;
    int unavailable;
};

struct bus_push {
    bus_t *bus;
    void *sock;
    uint64_t dropped;
};

struct bus_pull {
    bus_t *bus;
    void *sock;
    bus_pull_fn fn;
    void *arg;
};

bus_t *bus_new(loop_t *loop, const char *service, const char *instance)
{
    bus_t *bus = xcalloc(1, sizeof(*bus));
    bus->loop = loop;
    bus->ctx = zmq_ctx_new();
    if (bus->ctx == NULL) {
        free(bus);
        return NULL;
    }
    zmq_ctx_set(bus->ctx, ZMQ_IO_THREADS, 1);
    snprintf(bus->name, sizeof(bus->name), "%s/%s", service, instance);
    /* ids from a random start: a restarted process never reuses recent ids */
    bus->next_request_id = (id_random64() >> 16) | 1;
    bus->started_at_ms = clock_wall_ms();
    return bus;
}

void bus_destroy(bus_t **p)
{
    bus_t *bus = *p;
    if (bus == NULL)
        return;
    zmq_ctx_term(bus->ctx);
    free(bus);
    *p = NULL;
}

loop_t *bus_loop(bus_t *bus)
{
    return bus->loop;
}

void *bus_context(bus_t *bus)
{
    return bus->ctx;
}

const char *bus_name(const bus_t *bus)
{
    return bus->name;
}

void bus_set_stats(bus_t *bus, bus_stats_fn fn, void *arg)
{
    bus->stats = fn;
    bus->stats_arg = arg;
}

int bus_endpoint_prepare(const char *endpoint)
{
    /* only filesystem sockets need a directory ("ipc://@name" is abstract) */
    if (strncmp(endpoint, "ipc://", 6) != 0 || endpoint[6] == '@')
        return 0;
    char path[512];
    sx_strlcpy(path, endpoint + 6, sizeof(path));
    char *slash = strrchr(path, '/');
    if (slash == NULL)
        return 0;
    *slash = '\0';
    /* mkdir -p */
    for (char *p = path + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0750);
            *p = '/';
        }
    }
    if (mkdir(path, 0750) < 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* ---- sockets ---- */

static void *socket_open(bus_t *bus, int type)
{
    void *s = zmq_socket(bus->ctx, type);
    if (s == NULL)
        return NULL;
    int zero = 0, hwm = BUS_HWM, ivl = BUS_RECONNECT_MS, ivl_max = BUS_RECONNECT_MAX;
    int hb = BUS_HEARTBEAT_MS, hb_ttl = BUS_HEARTBEAT_TTL;
    int64_t maxmsg = (int64_t)BUS_MAX_PAYLOAD + CODEC_MAX_ENVELOPE;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof(hwm));
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof(hwm));
    zmq_setsockopt(s, ZMQ_RECONNECT_IVL, &ivl, sizeof(ivl));
    zmq_setsockopt(s, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof(ivl_max));
    zmq_setsockopt(s, ZMQ_HEARTBEAT_IVL, &hb, sizeof(hb));
    zmq_setsockopt(s, ZMQ_HEARTBEAT_TIMEOUT, &hb_ttl, sizeof(hb_ttl));
    zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg));
    return s;
}

static void free_encoded(void *data, void *hint)
{
    (void)hint;
    free(data);
}

static int send_frames(void *sock, const bus_peer_t *peer, uint8_t *bytes, size_t len,
                       zmq_msg_t *payload);

/*
 * Send [peer] encoded envelope (bytes, which it takes) [payload].
 * Non-blocking: -1 with errno EAGAIN when no peer can take it. The payload,
 * when given, is moved (closed after).
 */
static int send_encoded(bus_t *bus, void *sock, const bus_peer_t *peer, uint8_t *bytes,
                        size_t len, zmq_msg_t *payload)
{
    int rc = send_frames(sock, peer, bytes, len, payload);
    int e = errno;
    loop_zmq_touch(bus->loop, sock);
    errno = e;
    return rc;
}

/* send_encoded of env */
static int send_message(bus_t *bus, void *sock, const bus_peer_t *peer, sx_env_t *env,
                        zmq_msg_t *payload)
{
    size_t len;
    uint8_t *bytes = codec_encode(env, &len);
    return send_encoded(bus, sock, peer, bytes, len, payload);
}

/* The encoded envelope (bytes, which it takes) between peer and payload. */
static int send_frames(void *sock, const bus_peer_t *peer, uint8_t *bytes, size_t len,
                       zmq_msg_t *payload)
{
    int has_payload = payload != NULL;
    if (peer) {
        if (zmq_send(sock, peer->id, peer->len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
            free(bytes);
            goto fail;
        }
    }
    zmq_msg_t frame;
    zmq_msg_init_data(&frame, bytes, len, free_encoded, NULL);
    if (zmq_msg_send(&frame, sock, (has_payload ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0) {
        int e = errno;
        zmq_msg_close(&frame);
        errno = e;
        goto fail;
    }
    if (has_payload) {
        /* the envelope went: ZeroMQ guarantees the rest of a multipart message */
        if (zmq_msg_send(payload, sock, ZMQ_DONTWAIT) < 0) {
            int e = errno;
            zmq_msg_close(payload);
            errno = e;
            return -1;
        }
    }
    return 0;
fail:
    if (has_payload) {
        int e = errno;
        zmq_msg_close(payload);
        errno = e;
    }
    return -1;
}

static void drain_rest(void *sock)
{
    int more = 1;
    size_t len = sizeof(more);
    while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &len) == 0 && more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return;
        }
        zmq_msg_close(&m);
        len = sizeof(more);
    }
}

static int has_more(void *sock)
{
    int more = 0;
    size_t len = sizeof(more);
    zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &len);
    return more;
}

/*
 * Receive one message. 1: msg filled (free with msg_release); 0: nothing to
 * read; -1: a malformed message was read and dropped (logged).
 */
static int recv_message(void *sock, int routed, bus_msg_t *msg)
{
    memset(msg, 0, sizeof(*msg));
    zmq_msg_init(&msg->payload);
    zmq_msg_t frame;
    if (routed) {
        zmq_msg_init(&frame);
        if (zmq_msg_recv(&frame, sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&frame);
            return 0;
        }
        size_t n = zmq_msg_size(&frame);
        if (n == 0 || n > BUS_PEER_MAX || !has_more(sock)) {
            zmq_msg_close(&frame);
            drain_rest(sock);
            log_warn("event=bus_drop reason=bad_peer_frame");
            return -1;
        }
        memcpy(msg->peer.id, zmq_msg_data(&frame), n);
        msg->peer.len = (uint8_t)n;
        zmq_msg_close(&frame);
    }
    zmq_msg_init(&frame);
    if (zmq_msg_recv(&frame, sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&frame);
        return routed ? -1 : 0;
    }
    char err[160];
    int rc = codec_decode(zmq_msg_data(&frame), zmq_msg_size(&frame), &msg->env, err,
                          sizeof(err));
    zmq_msg_close(&frame);
    if (has_more(sock)) {
        if (zmq_msg_recv(&msg->payload, sock, ZMQ_DONTWAIT) < 0)
            rc = -1;
        if (has_more(sock)) {
            snprintf(err, sizeof(err), "more than two frames");
            rc = -1;
            drain_rest(sock);
        }
    }
    if (rc < 0) {
        log_warn("event=bus_drop reason=%s", err[0] ? err : "receive_failed");
        codec_free(&msg->env);
        zmq_msg_close(&msg->payload);
        return -1;
    }
    return 1;
}

static void msg_release(bus_msg_t *msg)
{
    codec_free(&msg->env);
    zmq_msg_close(&msg->payload);
}

sx_env_t *bus_msg_take_env(bus_msg_t *msg)
{
    sx_env_t *env = msg->env;
    msg->env = NULL;
    return env;
}

void bus_msg_take_payload(bus_msg_t *msg, zmq_msg_t *dst)
{
    zmq_msg_init(dst);
    zmq_msg_move(dst, &msg->payload);
}

static void env_prepare(bus_t *bus, sx_env_t *env, uint64_t request_id)
{
    env->request_id = request_id;
    env->sender = bus->name;
}

/* ---- server ---- */

void bus_pong_stat(PB(ServicePong) * pong, const char *key, const char *fmt, ...)
{
    char value[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(value, sizeof(value), fmt, ap);
    va_end(ap);
    PB(Attr) *a = xmalloc(sizeof(*a));
    PB(Attr) init = PB_INIT(ATTR);
    *a = init;
    a->key = xstrdup(key);
    a->value = xstrdup(value);
    pong->stats = xrealloc(pong->stats, (pong->n_stats + 1) * sizeof(*pong->stats));
    pong->stats[pong->n_stats++] = a;
}

static void server_pong(bus_server_t *srv, bus_msg_t *msg)
{
    bus_t *bus = srv->bus;
    PB(ServicePong) pong = PB_INIT(SERVICE_PONG);
    char service[32];
    sx_strlcpy(service, log_service(), sizeof(service));
    pong.service = service;
    pong.instance = (char *)log_instance();
    pong.version = SENDARIX_VERSION;
    pong.started_at_ms = bus->started_at_ms;
    pong.pid = (uint32_t)getpid();
    if (bus->stats)
        bus->stats(&pong, bus->stats_arg);
    /* every service's: its live heap, which a leak would grow (RSS mixes in the LMDB maps) */
    bus_pong_stat(&pong, "heap_in_use_bytes", "%zu", sx_heap_in_use());
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(SERVICE_PONG);
    env.service_pong = &pong;
    bus_server_send(srv, &msg->peer, msg->env->request_id, &env, NULL);
    for (size_t i = 0; i < pong.n_stats; i++) {
        free(pong.stats[i]->key);
        free(pong.stats[i]->value);
        free(pong.stats[i]);
    }
    free(pong.stats);
}

static int server_readable(loop_t *loop, void *sock, void *arg)
{
    (void)loop;
    bus_server_t *srv = arg;
    bus_msg_t msg;
    int rc = recv_message(sock, 1, &msg);
    if (rc <= 0)
        return rc != 0;
    if (msg.env->body_case == PB_BODY(SERVICE_PING))
        server_pong(srv, &msg);
    else
        srv->fn(srv, &msg, srv->arg);
    msg_release(&msg);
    return 1;
}

bus_server_t *bus_server_new(bus_t *bus, const char *endpoint, bus_server_fn fn, void *arg)
{
    bus_server_t *srv = xcalloc(1, sizeof(*srv));
    srv->bus = bus;
    srv->fn = fn;
    srv->arg = arg;
    srv->endpoint = xstrdup(endpoint);
    srv->sock = socket_open(bus, ZMQ_ROUTER);
    int one = 1;
    if (srv->sock)
        zmq_setsockopt(srv->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof(one));
    if (srv->sock == NULL || bus_endpoint_prepare(endpoint) < 0 ||
        zmq_bind(srv->sock, endpoint) < 0 ||
        loop_zmq_add(bus->loop, srv->sock, server_readable, srv) < 0) {
        log_error("event=bus_bind_failed endpoint=%s err=\"%s\"", endpoint, zmq_strerror(errno));
        bus_server_destroy(&srv);
        return NULL;
    }
    log_info("event=bus_listen endpoint=%s pattern=router", endpoint);
    return srv;
}

void bus_server_destroy(bus_server_t **p)
{
    bus_server_t *srv = *p;
    if (srv == NULL)
        return;
    if (srv->sock) {
        loop_zmq_remove(srv->bus->loop, srv->sock);
        zmq_close(srv->sock);
    }
    free(srv->endpoint);
    free(srv);
    *p = NULL;
}

int bus_server_send(bus_server_t *srv, const bus_peer_t *peer, uint64_t request_id, sx_env_t *env,
                    zmq_msg_t *payload)
{
    env_prepare(srv->bus, env, request_id);
    if (send_message(srv->bus, srv->sock, peer, env, payload) < 0) {
        log_warn("event=bus_send_failed endpoint=%s body=%s err=\"%s\"", srv->endpoint,
                 codec_body_name(env), zmq_strerror(errno));
        return -1;
    }
    return 0;
}

int bus_server_error(bus_server_t *srv, const bus_peer_t *peer, uint64_t request_id,
                     unsigned code, const char *enhanced, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    PB(Status) st = PB_INIT(STATUS);
    st.code = code;
    st.enhanced = (char *)enhanced;
    st.text = text;
    PB(Error) e = PB_INIT(ERROR);
    e.status = &st;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(ERROR);
    env.error = &e;
    return bus_server_send(srv, peer, request_id, &env, NULL);
}

/* ---- client ---- */

static void client_expired(uint64_t id, void *data, void *arg)
{
    bus_client_t *cl = arg;
    client_wait_t *w = data;
    cl->down_count++;
    log_warn("event=bus_timeout endpoint=%s request=%llu", cl->endpoint, (unsigned long long)id);
    bus_reply_fn fn = w->fn;
    void *fn_arg = w->arg;
    free(w);
    fn(NULL, BUS_TIMEOUT, fn_arg);
}

static int client_readable(loop_t *loop, void *sock, void *arg)
{
    (void)loop;
    bus_client_t *cl = arg;
    bus_msg_t msg;
    int rc = recv_message(sock, 0, &msg);
    if (rc <= 0)
        return rc != 0;
    cl->down_count = 0;
    cl->unavailable = 0;
    client_wait_t *w = pending_take(cl->pending, msg.env->request_id);
    if (w) {
        bus_reply_fn fn = w->fn;
        void *fn_arg = w->arg;
        free(w);
        fn(&msg, BUS_OK, fn_arg);
    } else if (cl->on_message) {
        cl->on_message(cl, &msg, cl->on_message_arg);
    } else {
        log_debug("event=bus_late_reply endpoint=%s request=%llu body=%s", cl->endpoint,
                  (unsigned long long)msg.env->request_id, codec_body_name(msg.env));
    }
    msg_release(&msg);
    return 1;
}

bus_client_t *bus_client_new(bus_t *bus, const char *endpoint)
{
    bus_client_t *cl = xcalloc(1, sizeof(*cl));
    cl->bus = bus;
    cl->endpoint = xstrdup(endpoint);
    cl->pending = pending_new(bus->loop, client_expired, cl);
    cl->sock = socket_open(bus, ZMQ_DEALER);
    int one = 1;
    /* queue nothing for peers that are not connected: a send fails at once */
    if (cl->sock)
        zmq_setsockopt(cl->sock, ZMQ_IMMEDIATE, &one, sizeof(one));
    if (cl->sock == NULL || zmq_connect(cl->sock, endpoint) < 0 ||
        loop_zmq_add(bus->loop, cl->sock, client_readable, cl) < 0) {
        log_error("event=bus_connect_failed endpoint=%s err=\"%s\"", endpoint,
                  zmq_strerror(errno));
        bus_client_destroy(&cl);
        return NULL;
    }
    return cl;
}

static void free_wait(void *data)
{
    free(data);
}

void bus_client_destroy(bus_client_t **p)
{
    bus_client_t *cl = *p;
    if (cl == NULL)
        return;
    if (cl->sock) {
        loop_zmq_remove(cl->bus->loop, cl->sock);
        zmq_close(cl->sock);
    }
    pending_destroy(&cl->pending, free_wait);
    free(cl->endpoint);
    free(cl);
    *p = NULL;
}

void bus_client_on_message(bus_client_t *cl, bus_client_fn fn, void *arg)
{
    cl->on_message = fn;
    cl->on_message_arg = arg;
}

int bus_client_request(bus_client_t *cl, sx_env_t *env, zmq_msg_t *payload, uint64_t timeout_ms,
                       bus_reply_fn fn, void *arg, uint64_t *request_id)
{
    uint64_t id = cl->bus->next_request_id++;
    env_prepare(cl->bus, env, id);
    if (send_message(cl->bus, cl->sock, NULL, env, payload) < 0) {
        if (errno == EAGAIN)
            cl->unavailable = 1;
        log_debug("event=bus_unavailable endpoint=%s body=%s err=\"%s\"", cl->endpoint,
                  codec_body_name(env), zmq_strerror(errno));
        return -1;
    }
    cl->unavailable = 0;
    client_wait_t *w = xmalloc(sizeof(*w));
    w->fn = fn;
    w->arg = arg;
    pending_add(cl->pending, id, w, timeout_ms);
    if (request_id)
        *request_id = id;
    return 0;
}

int bus_client_send(bus_client_t *cl, uint64_t request_id, sx_env_t *env, zmq_msg_t *payload)
{
    env_prepare(cl->bus, env, request_id);
    if (send_message(cl->bus, cl->sock, NULL, env, payload) < 0) {
        if (errno == EAGAIN)
            cl->unavailable = 1;
        return -1;
    }
    cl->unavailable = 0;
    return 0;
}

void bus_client_cancel(bus_client_t *cl, uint64_t request_id)
{
    free(pending_take(cl->pending, request_id));
}

const char *bus_client_endpoint(const bus_client_t *cl)
{
    return cl->endpoint;
}

size_t bus_client_pending(const bus_client_t *cl)
{
    return pending_count(cl->pending);
}

int bus_client_up(const bus_client_t *cl)
{
    return !cl->unavailable && cl->down_count < BUS_DOWN_AFTER;
}

/* ---- push / pull ---- */

bus_push_t *bus_push_new(bus_t *bus, const char *endpoint)
{
    bus_push_t *ps = xcalloc(1, sizeof(*ps));
    ps->bus = bus;
    ps->sock = socket_open(bus, ZMQ_PUSH);
    /* events queued while the collector restarts are kept, up to the HWM;
     * at exit we give them a moment to leave */
    int linger = 2000;
    if (ps->sock)
        zmq_setsockopt(ps->sock, ZMQ_LINGER, &linger, sizeof(linger));
    if (ps->sock == NULL || zmq_connect(ps->sock, endpoint) < 0) {
        log_error("event=bus_connect_failed endpoint=%s err=\"%s\"", endpoint,
                  zmq_strerror(errno));
        bus_push_destroy(&ps);
        return NULL;
    }
    return ps;
}

void bus_push_destroy(bus_push_t **p)
{
    bus_push_t *ps = *p;
    if (ps == NULL)
        return;
    if (ps->sock)
        zmq_close(ps->sock);
    free(ps);
    *p = NULL;
}

static int push_result(bus_push_t *ps, int rc)
{
    if (rc < 0 && ps->dropped++ % 1000 == 0)
        log_warn("event=bus_push_dropped count=%llu err=\"%s\"",
                 (unsigned long long)ps->dropped, zmq_strerror(errno));
    return rc;
}

int bus_push_send(bus_push_t *ps, sx_env_t *env)
{
    env_prepare(ps->bus, env, 0);
    return push_result(ps, send_message(ps->bus, ps->sock, NULL, env, NULL));
}

int bus_push_send_packed(bus_push_t *ps, uint32_t field, const void *body, size_t body_len)
{
    sx_env_t env = PB_INIT(ENVELOPE);
    env_prepare(ps->bus, &env, 0);
    size_t len;
    uint8_t *bytes = codec_encode_packed(&env, field, body, body_len, &len);
    return push_result(ps, send_encoded(ps->bus, ps->sock, NULL, bytes, len, NULL));
}

static int pull_readable(loop_t *loop, void *sock, void *arg)
{
    (void)loop;
    bus_pull_t *pl = arg;
    bus_msg_t msg;
    int rc = recv_message(sock, 0, &msg);
    if (rc <= 0)
        return rc != 0;
    pl->fn(pl, &msg, pl->arg);
    msg_release(&msg);
    return 1;
}

bus_pull_t *bus_pull_new(bus_t *bus, const char *endpoint, bus_pull_fn fn, void *arg)
{
    bus_pull_t *pl = xcalloc(1, sizeof(*pl));
    pl->bus = bus;
    pl->fn = fn;
    pl->arg = arg;
    pl->sock = socket_open(bus, ZMQ_PULL);
    if (pl->sock == NULL || bus_endpoint_prepare(endpoint) < 0 ||
        zmq_bind(pl->sock, endpoint) < 0 ||
        loop_zmq_add(bus->loop, pl->sock, pull_readable, pl) < 0) {
        log_error("event=bus_bind_failed endpoint=%s err=\"%s\"", endpoint, zmq_strerror(errno));
        bus_pull_destroy(&pl);
        return NULL;
    }
    log_info("event=bus_listen endpoint=%s pattern=pull", endpoint);
    return pl;
}

void bus_pull_destroy(bus_pull_t **p)
{
    bus_pull_t *pl = *p;
    if (pl == NULL)
        return;
    if (pl->sock) {
        loop_zmq_remove(pl->bus->loop, pl->sock);
        zmq_close(pl->sock);
    }
    free(pl);
    *p = NULL;
}
