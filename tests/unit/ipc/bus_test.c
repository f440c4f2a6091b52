/*
 * bus_test: a bus_server and bus_client over inproc:// on one loop:
 * request and reply with a payload frame, error replies, deadlines, no
 * peer, unsolicited messages from the server, push/pull, ServicePing with
 * stats, and malformed frames from raw sockets that must be dropped while
 * the bus keeps answering.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/loop.h"
#include "ipc/bus.h"

enum { SRV_ECHO, SRV_ERROR, SRV_SILENT, SRV_ALSO_PUSH };

typedef struct fx {
    loop_t *loop;
    bus_t *bus;
    bus_server_t *srv;
    bus_client_t *cl;
    loop_timer_t guard;
    int timed_out;

    int mode;
    int server_calls;
    char last_username[64];

    int replies;
    int want_replies;
    bus_status_t status[8];
    unsigned body[8];
    uint64_t reply_ids[8];
    char text[8][128];
    size_t payload_len[8];
    int payload_ok[8];
    const uint8_t *payload_expect;

    int unsolicited;
    uint64_t unsolicited_id;
    char unsolicited_user[64];

    /* made by single tests; closed in teardown even when a test fails */
    bus_client_t *extra;
    void *raw;
    bus_push_t *push;
    bus_pull_t *pull;
} fx_t;

static void on_guard(loop_t *loop, void *arg)
{
    ((fx_t *)arg)->timed_out = 1;
    loop_stop(loop);
}

static void run(fx_t *f, uint64_t max_ms)
{
    f->timed_out = 0;
    loop_timer_start(f->loop, &f->guard, max_ms);
    assert_int_equal(loop_run(f->loop), 0);
    loop_timer_stop(f->loop, &f->guard);
}

static void server_fn(bus_server_t *srv, bus_msg_t *msg, void *arg)
{
    fx_t *f = arg;
    f->server_calls++;
    assert_true(msg->peer.len > 0);
    if (msg->env->body_case == PB_BODY(AUTH_LOGIN_VERIFY))
        snprintf(f->last_username, sizeof(f->last_username), "%s",
                 msg->env->auth_login_verify->username);
    switch (f->mode) {
    case SRV_SILENT:
        return;
    case SRV_ERROR:
        bus_server_error(srv, &msg->peer, msg->env->request_id, 550, "5.7.1", "denied %s",
                         f->last_username);
        return;
    case SRV_ECHO:
    case SRV_ALSO_PUSH: {
        PB(AuthLoginVerifyReply) r = PB_INIT(AUTH_LOGIN_VERIFY_REPLY);
        r.ok = 1;
        r.username = f->last_username;
        sx_env_t env = PB_INIT(ENVELOPE);
        env.body_case = PB_BODY(AUTH_LOGIN_VERIFY_REPLY);
        env.auth_login_verify_reply = &r;
        zmq_msg_t pl;
        int has_payload = zmq_msg_size(&msg->payload) > 0;
        if (has_payload)
            bus_msg_take_payload(msg, &pl);
        assert_int_equal(
            bus_server_send(srv, &msg->peer, msg->env->request_id, &env, has_payload ? &pl : NULL),
            0);
        if (f->mode == SRV_ALSO_PUSH) {
            /* a message of our own to the same peer, answering nothing */
            r.username = "pushed";
            assert_int_equal(bus_server_send(srv, &msg->peer, 0, &env, NULL), 0);
        }
        return;
    }
    }
}

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));
    log_init("bustest", "3");
    log_set_level(LOG_ERROR);
    f->loop = loop_new();
    f->bus = bus_new(f->loop, "bustest", "3");
    assert_non_null(f->bus);
    assert_string_equal(bus_name(f->bus), "bustest/3");
    assert_ptr_equal(bus_loop(f->bus), f->loop);
    loop_timer_init(&f->guard, on_guard, f);
    f->srv = bus_server_new(f->bus, "inproc://bus-test", server_fn, f);
    assert_non_null(f->srv);
    f->cl = bus_client_new(f->bus, "inproc://bus-test");
    assert_non_null(f->cl);
    assert_string_equal(bus_client_endpoint(f->cl), "inproc://bus-test");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    if (f->raw) {
        loop_zmq_remove(f->loop, f->raw);
        zmq_close(f->raw);
    }
    bus_client_destroy(&f->extra);
    bus_push_destroy(&f->push);
    bus_pull_destroy(&f->pull);
    bus_client_destroy(&f->cl);
    bus_client_destroy(&f->cl); /* safe twice */
    bus_server_destroy(&f->srv);
    bus_server_destroy(&f->srv);
    bus_destroy(&f->bus);
    assert_null(f->bus);
    loop_destroy(&f->loop);
    free(f);
    return 0;
}

static void on_reply(bus_msg_t *reply, bus_status_t status, void *arg)
{
    fx_t *f = arg;
    int i = f->replies++;
    assert_true(i < 8);
    f->status[i] = status;
    if (status == BUS_OK) {
        assert_non_null(reply);
        f->body[i] = (unsigned)reply->env->body_case;
        f->reply_ids[i] = reply->env->request_id;
        assert_string_equal(reply->env->sender, "bustest/3");
        if (reply->env->body_case == PB_BODY(AUTH_LOGIN_VERIFY_REPLY))
            snprintf(f->text[i], sizeof(f->text[i]), "%s",
                     reply->env->auth_login_verify_reply->username);
        if (reply->env->body_case == PB_BODY(ERROR))
            snprintf(f->text[i], sizeof(f->text[i]), "%u %s %s",
                     reply->env->error->status->code, reply->env->error->status->enhanced,
                     reply->env->error->status->text);
        f->payload_len[i] = zmq_msg_size(&reply->payload);
        f->payload_ok[i] = f->payload_expect &&
                           (f->payload_len[i] == 0 ||
                            memcmp(zmq_msg_data(&reply->payload), f->payload_expect,
                                   f->payload_len[i]) == 0);
    } else {
        assert_null(reply);
    }
    if (f->replies == f->want_replies)
        loop_stop(f->loop);
}

static int request(fx_t *f, const char *user, zmq_msg_t *payload, uint64_t timeout_ms,
                   uint64_t *id)
{
    PB(AuthLoginVerify) v = PB_INIT(AUTH_LOGIN_VERIFY);
    v.mechanism = "PLAIN";
    v.username = (char *)user;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(AUTH_LOGIN_VERIFY);
    env.auth_login_verify = &v;
    return bus_client_request(f->cl, &env, payload, timeout_ms, on_reply, f, id);
}

static void test_request_reply_with_payload(void **state)
{
    fx_t *f = *state;
    f->mode = SRV_ECHO;
    size_t n = 3 << 20; /* a body-sized payload */
    uint8_t *body = malloc(n);
    for (size_t i = 0; i < n; i++)
        body[i] = (uint8_t)(i * 131 + (i >> 9));
    f->payload_expect = body;
    zmq_msg_t pl;
    zmq_msg_init_size(&pl, n);
    memcpy(zmq_msg_data(&pl), body, n);

    uint64_t id1 = 0, id2 = 0;
    f->want_replies = 2;
    assert_int_equal(request(f, "alice@example.org", &pl, 5000, &id1), 0);
    assert_int_equal(request(f, "bob@example.org", NULL, 5000, &id2), 0);
    assert_true(id1 != 0 && id2 != 0 && id1 != id2);
    assert_int_equal(bus_client_pending(f->cl), 2);
    run(f, 5000);
    assert_false(f->timed_out);
    assert_int_equal(f->replies, 2);
    assert_int_equal(f->server_calls, 2);
    /* matched by id: each reply names its own request's user */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(f->status[i], BUS_OK);
        assert_int_equal(f->body[i], PB_BODY(AUTH_LOGIN_VERIFY_REPLY));
        assert_string_equal(f->text[i],
                            f->reply_ids[i] == id1 ? "alice@example.org" : "bob@example.org");
    }
    /* alice's payload came back intact; the reply to bob carried none */
    for (int i = 0; i < 2; i++) {
        if (f->reply_ids[i] == id1) {
            assert_int_equal(f->payload_len[i], n);
            assert_true(f->payload_ok[i]);
        } else {
            assert_int_equal(f->payload_len[i], 0);
        }
    }
    assert_int_equal(bus_client_pending(f->cl), 0);
    assert_true(bus_client_up(f->cl));
    free(body);
}

static void test_payload_intact(void **state)
{
    fx_t *f = *state;
    f->mode = SRV_ECHO;
    static const uint8_t body[] = "Subject: x\r\n\r\n\0binary\xff\x00tail";
    f->payload_expect = body;
    zmq_msg_t pl;
    zmq_msg_init_size(&pl, sizeof(body));
    memcpy(zmq_msg_data(&pl), body, sizeof(body));
    f->want_replies = 1;
    assert_int_equal(request(f, "carol", &pl, 5000, NULL), 0);
    run(f, 5000);
    assert_int_equal(f->replies, 1);
    assert_int_equal(f->payload_len[0], sizeof(body));
    assert_true(f->payload_ok[0]);
}

static void test_error_reply(void **state)
{
    fx_t *f = *state;
    f->mode = SRV_ERROR;
    f->want_replies = 1;
    assert_int_equal(request(f, "mallory", NULL, 5000, NULL), 0);
    run(f, 5000);
    assert_int_equal(f->replies, 1);
    assert_int_equal(f->status[0], BUS_OK);
    assert_int_equal(f->body[0], PB_BODY(ERROR));
    assert_string_equal(f->text[0], "550 5.7.1 denied mallory");
}

static void test_timeout(void **state)
{
    fx_t *f = *state;
    f->mode = SRV_SILENT;
    f->want_replies = 3;
    uint64_t start = clock_mono_ms();
    for (int i = 0; i < 3; i++)
        assert_int_equal(request(f, "slow", NULL, 40, NULL), 0);
    assert_true(bus_client_up(f->cl));
    run(f, 5000);
    assert_false(f->timed_out);
    assert_int_equal(f->replies, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(f->status[i], BUS_TIMEOUT);
    assert_true(clock_mono_ms() - start >= 40);
    assert_int_equal(f->server_calls, 3);
    assert_int_equal(bus_client_pending(f->cl), 0);
    /* three deadlines in a row: the client counts as down, until a reply arrives */
    assert_false(bus_client_up(f->cl));
    f->mode = SRV_ECHO;
    f->replies = 0;
    f->want_replies = 1;
    assert_int_equal(request(f, "back", NULL, 5000, NULL), 0);
    run(f, 5000);
    assert_int_equal(f->status[0], BUS_OK);
    assert_true(bus_client_up(f->cl));
}

static void test_cancel(void **state)
{
    fx_t *f = *state;
    f->mode = SRV_ECHO;
    uint64_t id;
    assert_int_equal(request(f, "cancelled", NULL, 5000, &id), 0);
    bus_client_cancel(f->cl, id);
    assert_int_equal(bus_client_pending(f->cl), 0);
    /* the reply still comes, finds nothing, and no callback runs */
    loop_timer_start(f->loop, &f->guard, 100);
    assert_int_equal(loop_run(f->loop), 0);
    assert_int_equal(f->server_calls, 1);
    assert_int_equal(f->replies, 0);
}

static void test_no_peer_fails_at_once(void **state)
{
    fx_t *f = *state;
    /* a loopback port nobody listens on (inproc would queue for a later bind) */
    char ep[64];
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &alen), 0);
    close(s);
    snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%u", (unsigned)ntohs(a.sin_port));
    bus_client_t *lonely = f->extra = bus_client_new(f->bus, ep);
    assert_non_null(lonely);
    assert_true(bus_client_up(lonely));
    PB(ServicePing) ping = PB_INIT(SERVICE_PING);
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(SERVICE_PING);
    env.service_ping = &ping;
    zmq_msg_t pl;
    zmq_msg_init_size(&pl, 1000); /* the payload is released even on failure */
    memset(zmq_msg_data(&pl), 'p', 1000);
    uint64_t start = clock_mono_ms();
    assert_int_equal(bus_client_request(lonely, &env, &pl, 5000, on_reply, f, NULL), -1);
    assert_int_equal(bus_client_request(lonely, &env, NULL, 5000, on_reply, f, NULL), -1);
    assert_true(clock_mono_ms() - start < 1000);
    assert_int_equal(bus_client_pending(lonely), 0);
    assert_false(bus_client_up(lonely));
    assert_int_equal(bus_client_send(lonely, 1, &env, NULL), -1);
    /* and the callback never runs */
    loop_timer_start(f->loop, &f->guard, 50);
    assert_int_equal(loop_run(f->loop), 0);
    assert_int_equal(f->replies, 0);
    bus_client_destroy(&f->extra);
}

static void on_unsolicited(bus_client_t *cl, bus_msg_t *msg, void *arg)
{
    fx_t *f = arg;
    assert_non_null(cl);
    f->unsolicited++;
    f->unsolicited_id = msg->env->request_id;
    if (msg->env->body_case == PB_BODY(AUTH_LOGIN_VERIFY_REPLY))
        snprintf(f->unsolicited_user, sizeof(f->unsolicited_user), "%s",
                 msg->env->auth_login_verify_reply->username);
    loop_stop(f->loop);
}

static void test_unsolicited_message(void **state)
{
    fx_t *f = *state;
    f->mode = SRV_ALSO_PUSH;
    bus_client_on_message(f->cl, on_unsolicited, f);
    f->want_replies = 100; /* stop on the unsolicited one */
    assert_int_equal(request(f, "dave", NULL, 5000, NULL), 0);
    run(f, 5000);
    assert_false(f->timed_out);
    assert_int_equal(f->replies, 1);
    assert_string_equal(f->text[0], "dave");
    assert_int_equal(f->unsolicited, 1);
    assert_int_equal(f->unsolicited_id, 0);
    assert_string_equal(f->unsolicited_user, "pushed");
}

/* ---- ServicePing ---- */

static void add_stats(PB(ServicePong) * pong, void *arg)
{
    bus_pong_stat(pong, "queue_depth", "%d", *(int *)arg);
    bus_pong_stat(pong, "role", "%s", "primary");
}

static PB(ServicePong) * pong_copy;

static void on_pong(bus_msg_t *reply, bus_status_t status, void *arg)
{
    fx_t *f = arg;
    f->replies++;
    assert_int_equal(status, BUS_OK);
    assert_int_equal(reply->env->body_case, PB_BODY(SERVICE_PONG));
    /* keep a decoded copy to check after the loop */
    size_t n = PB_FN(service_pong, get_packed_size)(reply->env->service_pong);
    uint8_t *b = malloc(n ? n : 1);
    PB_FN(service_pong, pack)(reply->env->service_pong, b);
    pong_copy = PB_FN(service_pong, unpack)(NULL, n, b);
    free(b);
    loop_stop(f->loop);
}

static void test_ping_answered_with_stats(void **state)
{
    fx_t *f = *state;
    int depth = 42;
    bus_set_stats(f->bus, add_stats, &depth);
    uint64_t before = clock_wall_ms();
    PB(ServicePing) ping = PB_INIT(SERVICE_PING);
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(SERVICE_PING);
    env.service_ping = &ping;
    assert_int_equal(bus_client_request(f->cl, &env, NULL, 5000, on_pong, f, NULL), 0);
    run(f, 5000);
    assert_int_equal(f->replies, 1);
    assert_int_equal(f->server_calls, 0); /* answered by the bus, not the service */
    assert_non_null(pong_copy);
    assert_string_equal(pong_copy->service, "bustest");
    assert_string_equal(pong_copy->instance, "3");
    assert_string_equal(pong_copy->version, SENDARIX_VERSION);
    assert_int_equal(pong_copy->pid, (uint32_t)getpid());
    assert_true(pong_copy->started_at_ms > 0 && pong_copy->started_at_ms <= before);
    assert_int_equal(pong_copy->n_stats, 3);
    assert_string_equal(pong_copy->stats[0]->key, "queue_depth");
    assert_string_equal(pong_copy->stats[0]->value, "42");
    assert_string_equal(pong_copy->stats[1]->key, "role");
    assert_string_equal(pong_copy->stats[1]->value, "primary");
    /* the bus adds every service's live heap after the service's own */
    assert_string_equal(pong_copy->stats[2]->key, "heap_in_use_bytes");
    assert_true(strtoull(pong_copy->stats[2]->value, NULL, 10) > 0);
    PB_FN(service_pong, free_unpacked)(pong_copy, NULL);
    pong_copy = NULL;
}

/* ---- push / pull ---- */

typedef struct pull_ctx {
    int got;
    int bad;
    loop_t *loop;
} pull_ctx_t;

static void on_pull(bus_pull_t *pl, bus_msg_t *msg, void *arg)
{
    pull_ctx_t *p = arg;
    assert_non_null(pl);
    if (msg->env->body_case != PB_BODY(EVENT_PUBLISH) || msg->env->request_id != 0 ||
        strcmp(msg->env->sender, "bustest/3") != 0 ||
        (int)msg->env->event_publish->event->attempt != p->got)
        p->bad++;
    if (++p->got == 500)
        loop_stop(p->loop);
}

static void test_push_pull(void **state)
{
    fx_t *f = *state;
    pull_ctx_t p = {.loop = f->loop};
    bus_pull_t *pl = f->pull = bus_pull_new(f->bus, "inproc://bus-test-events", on_pull, &p);
    assert_non_null(pl);
    bus_push_t *ps = f->push = bus_push_new(f->bus, "inproc://bus-test-events");
    assert_non_null(ps);
    for (int i = 0; i < 500; i++) {
        PB(Event) ev = PB_INIT(EVENT);
        ev.type = "accepted";
        ev.attempt = (uint32_t)i;
        PB(EventPublish) pub = PB_INIT(EVENT_PUBLISH);
        pub.event = &ev;
        sx_env_t env = PB_INIT(ENVELOPE);
        env.body_case = PB_BODY(EVENT_PUBLISH);
        env.event_publish = &pub;
        assert_int_equal(bus_push_send(ps, &env), 0);
    }
    run(f, 5000);
    assert_false(f->timed_out);
    assert_int_equal(p.got, 500);
    assert_int_equal(p.bad, 0);
    bus_push_destroy(&f->push);
    bus_push_destroy(&f->push); /* safe twice */
    bus_pull_destroy(&f->pull);
    bus_pull_destroy(&f->pull);
}

/* ---- malformed input from raw sockets ---- */

typedef struct raw_ctx {
    int got;
    uint64_t id;
    unsigned body;
    loop_t *loop;
} raw_ctx_t;

static int on_raw_reply(loop_t *loop, void *sock, void *arg)
{
    raw_ctx_t *r = arg;
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m);
        return 0;
    }
    sx_env_t *env = NULL;
    char err[160];
    if (codec_decode(zmq_msg_data(&m), zmq_msg_size(&m), &env, err, sizeof(err)) == 0) {
        r->got++;
        r->id = env->request_id;
        r->body = (unsigned)env->body_case;
        codec_free(&env);
        loop_stop(loop);
    }
    zmq_msg_close(&m);
    return 1;
}

static void test_server_drops_malformed(void **state)
{
    fx_t *f = *state;
    f->mode = SRV_ECHO;
    void *raw = f->raw = zmq_socket(bus_context(f->bus), ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(raw, ZMQ_LINGER, &zero, sizeof(zero));
    assert_int_equal(zmq_connect(raw, "inproc://bus-test"), 0);

    /* not an envelope */
    assert_int_equal(zmq_send(raw, "\x01\x02garbage", 9, 0), 9);
    /* empty */
    assert_int_equal(zmq_send(raw, "", 0, 0), 0);
    /* a good envelope, but three frames */
    PB(ServicePing) ping = PB_INIT(SERVICE_PING);
    sx_env_t env = PB_INIT(ENVELOPE);
    env.request_id = 1111;
    env.body_case = PB_BODY(SERVICE_PING);
    env.service_ping = &ping;
    size_t len;
    uint8_t *bytes = codec_encode(&env, &len);
    zmq_send(raw, bytes, len, ZMQ_SNDMORE);
    zmq_send(raw, "payload", 7, ZMQ_SNDMORE);
    zmq_send(raw, "extra", 5, 0);
    free(bytes);
    /* an envelope frame over the codec's limit */
    size_t big = CODEC_MAX_ENVELOPE + 10;
    uint8_t *junk = calloc(1, big);
    junk[0] = 0x08;
    junk[1] = 0x01;
    assert_int_equal(zmq_send(raw, junk, big, 0), (int)big);
    free(junk);
    /* a random flood of short frames */
    unsigned seed = 7;
    for (int i = 0; i < 300; i++) {
        uint8_t b[40];
        size_t n = (size_t)(rand_r(&seed) % 40);
        for (size_t j = 0; j < n; j++)
            b[j] = (uint8_t)rand_r(&seed);
        zmq_send(raw, b, n, 0);
    }
    /* then a good request */
    PB(AuthLoginVerify) v = PB_INIT(AUTH_LOGIN_VERIFY);
    v.username = "after-garbage";
    env.request_id = 4242;
    env.body_case = PB_BODY(AUTH_LOGIN_VERIFY);
    env.auth_login_verify = &v;
    bytes = codec_encode(&env, &len);
    assert_int_equal(zmq_send(raw, bytes, len, 0), (int)len);
    free(bytes);

    raw_ctx_t r = {.loop = f->loop};
    assert_int_equal(loop_zmq_add(f->loop, raw, on_raw_reply, &r), 0);
    run(f, 5000);
    assert_false(f->timed_out);
    assert_int_equal(r.got, 1);
    assert_int_equal(r.id, 4242);
    assert_int_equal(r.body, PB_BODY(AUTH_LOGIN_VERIFY_REPLY));
    assert_string_equal(f->last_username, "after-garbage");
    /* only requests that decoded reached the service (random bytes rarely do) */
    assert_true(f->server_calls >= 1);

    /* and the normal client still works */
    f->want_replies = 1;
    assert_int_equal(request(f, "still-fine", NULL, 5000, NULL), 0);
    run(f, 5000);
    assert_int_equal(f->replies, 1);
    assert_string_equal(f->text[0], "still-fine");

}

static void test_client_drops_malformed(void **state)
{
    fx_t *f = *state;
    /* a raw ROUTER plays the server: garbage first, then the real reply */
    void *router = f->raw = zmq_socket(bus_context(f->bus), ZMQ_ROUTER);
    int zero = 0;
    zmq_setsockopt(router, ZMQ_LINGER, &zero, sizeof(zero));
    assert_int_equal(zmq_bind(router, "inproc://bus-test-raw"), 0);
    bus_client_t *cl = f->extra = bus_client_new(f->bus, "inproc://bus-test-raw");
    assert_non_null(cl);
    PB(ServicePing) ping = PB_INIT(SERVICE_PING);
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(SERVICE_PING);
    env.service_ping = &ping;
    uint64_t id = 0;
    f->want_replies = 1;
    assert_int_equal(bus_client_request(cl, &env, NULL, 5000, on_reply, f, &id), 0);

    uint8_t peer[256];
    int plen = zmq_recv(router, peer, sizeof(peer), 0);
    assert_true(plen > 0);
    uint8_t frame[512];
    int n = zmq_recv(router, frame, sizeof(frame), 0);
    sx_env_t *req = NULL;
    char err[160];
    assert_int_equal(codec_decode(frame, (size_t)n, &req, err, sizeof(err)), 0);
    assert_int_equal(req->request_id, id);
    codec_free(&req);

    zmq_send(router, peer, (size_t)plen, ZMQ_SNDMORE);
    zmq_send(router, "\xff\xff\xff", 3, 0);
    zmq_send(router, peer, (size_t)plen, ZMQ_SNDMORE);
    zmq_send(router, "", 0, 0);
    PB(Status) st = PB_INIT(STATUS);
    st.code = 421;
    st.enhanced = "4.3.2";
    st.text = "raw";
    PB(Error) e = PB_INIT(ERROR);
    e.status = &st;
    sx_env_t rep = PB_INIT(ENVELOPE);
    rep.request_id = id;
    rep.sender = "bustest/3";
    rep.body_case = PB_BODY(ERROR);
    rep.error = &e;
    size_t len;
    uint8_t *bytes = codec_encode(&rep, &len);
    zmq_send(router, peer, (size_t)plen, ZMQ_SNDMORE);
    zmq_send(router, bytes, len, 0);
    free(bytes);

    run(f, 5000);
    assert_false(f->timed_out);
    assert_int_equal(f->replies, 1);
    assert_string_equal(f->text[0], "421 4.3.2 raw");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_request_reply_with_payload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_payload_intact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_peer_fails_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsolicited_message, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ping_answered_with_stats, setup, teardown),
        cmocka_unit_test_setup_teardown(test_push_pull, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_drops_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_drops_malformed, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
