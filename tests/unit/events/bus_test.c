/*
 * events_bus: the service's bus side in one process. Events pushed to the
 * PULL socket are stored within a loop turn; EventSearch on the ROUTER
 * socket is answered with the events in time order; bad searches and
 * requests events does not handle get an Error 400; a body that is not an
 * EventPublish on the ingest socket is dropped. A sender's batch (the
 * repeated `events`) is taken like separate events.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/clock.h"
#include "events_bus.h"
#include "events_ingest.h"
#include "events_store.h"
#include "ipc/bus.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define T0      1700000000000ull
#define WAIT_MS 5000

typedef struct fixture {
    char dir[400];
    char ingest_ep[600];
    char api_ep[600];
    loop_t *loop;
    bus_t *bus;
    evstore_t *store;
    evingest_t *ingest;
    bus_pull_t *pull;
    bus_server_t *server;
    bus_push_t *push;
    bus_client_t *client;
    /* the last reply */
    int replied;
    bus_status_t status;
    sx_env_t *reply;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    const char *base = getenv("SENDARIX_TEST_TMP");
    if (base == NULL || *base == '\0')
        base = "/tmp";
    mkdir(base, 0755);
    snprintf(f->dir, sizeof(f->dir), "%s/evbus-XXXXXX", base);
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->ingest_ep, sizeof(f->ingest_ep), "ipc://%s/ingest.sock", f->dir);
    snprintf(f->api_ep, sizeof(f->api_ep), "ipc://%s/api.sock", f->dir);
    char err[256], sdir[500];
    snprintf(sdir, sizeof(sdir), "%s/store", f->dir);
    f->store = evstore_open(sdir, err, sizeof(err));
    f->loop = loop_new();
    f->bus = bus_new(f->loop, "events", "1");
    if (f->store == NULL || f->bus == NULL)
        return -1;
    f->ingest = evingest_new(f->loop, f->store);
    f->pull = bus_pull_new(f->bus, f->ingest_ep, events_bus_on_publish, f->ingest);
    f->server = bus_server_new(f->bus, f->api_ep, events_bus_on_request, f->store);
    f->push = bus_push_new(f->bus, f->ingest_ep);
    f->client = bus_client_new(f->bus, f->api_ep);
    if (!f->pull || !f->server || !f->push || !f->client)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    codec_free(&f->reply);
    bus_client_destroy(&f->client);
    bus_push_destroy(&f->push);
    bus_server_destroy(&f->server);
    bus_pull_destroy(&f->pull);
    evingest_destroy(&f->ingest);
    evstore_close(&f->store);
    bus_destroy(&f->bus);
    loop_destroy(&f->loop);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", f->dir);
    free(f);
    return 0;
}

typedef int (*cond_fn)(fixture_t *f);

typedef struct waiter {
    fixture_t *f;
    cond_fn cond;
    uint64_t deadline;
    loop_timer_t t;
    int met;
} waiter_t;

static void check(loop_t *loop, void *arg)
{
    waiter_t *w = arg;
    if (w->cond(w->f)) {
        w->met = 1;
        loop_stop(loop);
    } else if (clock_mono_ms() > w->deadline) {
        loop_stop(loop);
    } else {
        loop_timer_start(loop, &w->t, 5);
    }
}

/* Run the loop until cond holds (1) or WAIT_MS pass (0). */
static int run_until(fixture_t *f, cond_fn cond)
{
    waiter_t w = {.f = f, .cond = cond, .deadline = clock_mono_ms() + WAIT_MS};
    loop_timer_init(&w.t, check, &w);
    loop_timer_start(f->loop, &w.t, 0);
    loop_run(f->loop);
    loop_timer_stop(f->loop, &w.t);
    return w.met;
}

static void push_event(fixture_t *f, const char *id, uint64_t at, const char *type, const char *msg)
{
    PB(Event) ev = PB_INIT(EVENT);
    ev.id = (char *)id;
    ev.at_ms = at;
    ev.type = (char *)type;
    ev.message_id = (char *)msg;
    ev.service = "ingress";
    ev.instance = "1";
    PB(EventPublish) pub = PB_INIT(EVENT_PUBLISH);
    pub.event = &ev;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(EVENT_PUBLISH);
    env.event_publish = &pub;
    assert_int_equal(bus_push_send(f->push, &env), 0);
}

static int five_stored(fixture_t *f)
{
    return evstore_count(f->store) == 5;
}

static int one_stored(fixture_t *f)
{
    return evstore_count(f->store) == 1;
}

static int got_reply(fixture_t *f)
{
    return f->replied;
}

static void on_reply(bus_msg_t *reply, bus_status_t status, void *arg)
{
    fixture_t *f = arg;
    f->replied = 1;
    f->status = status;
    codec_free(&f->reply);
    if (reply) {
        f->reply = reply->env;
        reply->env = NULL;
    }
}

static int connected(fixture_t *f)
{
    (void)f;
    return 1;
}

/* Send a request, waiting for the DEALER's connection first; run until the reply. */
static void request(fixture_t *f, sx_env_t *env)
{
    f->replied = 0;
    uint64_t deadline = clock_mono_ms() + WAIT_MS;
    while (bus_client_request(f->client, env, NULL, WAIT_MS, on_reply, f, NULL) < 0) {
        assert_true(clock_mono_ms() < deadline);
        run_until(f, connected);
        usleep(10000);
    }
    assert_true(run_until(f, got_reply));
    assert_int_equal(f->status, BUS_OK);
    assert_non_null(f->reply);
}

static void test_publish_then_search(void **state)
{
    fixture_t *f = *state;
    push_event(f, "b3", T0 + 30, "delivered", "msg-a");
    push_event(f, "b1", T0 + 10, "accepted", "msg-a");
    push_event(f, "c1", T0 + 15, "accepted", "msg-b");
    push_event(f, "b2", T0 + 20, "queued", "msg-a");
    /* a malformed event: counted as rejected, never stored */
    push_event(f, "bad", 0, "queued", "msg-a");
    push_event(f, "c2", T0 + 25, "queued", "msg-b");
    assert_true(run_until(f, five_stored));
    evingest_stats_t s;
    evingest_stats(f->ingest, &s);
    assert_int_equal(s.rejected, 1);

    PB(EventSearch) search = PB_INIT(EVENT_SEARCH);
    search.message_id = "msg-a";
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(EVENT_SEARCH);
    env.event_search = &search;
    request(f, &env);
    assert_int_equal(f->reply->body_case, PB_BODY(EVENT_SEARCH_REPLY));
    const PB(EventSearchReply) *r = f->reply->event_search_reply;
    assert_int_equal(r->n_events, 3);
    assert_string_equal(r->events[0]->id, "b1");
    assert_string_equal(r->events[1]->id, "b2");
    assert_string_equal(r->events[2]->id, "b3");
    assert_string_equal(r->events[2]->type, "delivered");

    /* an unknown id: an empty list, not an error */
    search.message_id = "nothing";
    request(f, &env);
    assert_int_equal(f->reply->body_case, PB_BODY(EVENT_SEARCH_REPLY));
    assert_int_equal(f->reply->event_search_reply->n_events, 0);

    /* limit */
    search.message_id = "";
    search.limit = 2;
    request(f, &env);
    assert_int_equal(f->reply->event_search_reply->n_events, 2);
    assert_string_equal(f->reply->event_search_reply->events[1]->id, "c1");
}

static int three_stored(fixture_t *f)
{
    return evstore_count(f->store) == 3;
}

static void test_batched_publish(void **state)
{
    fixture_t *f = *state;
    PB(Event) ev[4];
    PB(Event) *batch[3] = {&ev[1], &ev[2], &ev[3]};
    const char *ids[4] = {"lone", "e1", "bad", "e2"};
    for (int i = 0; i < 4; i++) {
        PB(Event) e = PB_INIT(EVENT);
        e.id = (char *)ids[i];
        e.at_ms = i == 2 ? 0 : T0 + (uint64_t)i; /* "bad" has no time */
        e.type = "queued";
        e.message_id = "msg-batch";
        ev[i] = e;
    }
    /* an EventPublish with neither form is dropped */
    PB(EventPublish) pub = PB_INIT(EVENT_PUBLISH);
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(EVENT_PUBLISH);
    env.event_publish = &pub;
    assert_int_equal(bus_push_send(f->push, &env), 0);
    /* both forms in one message */
    pub.event = &ev[0];
    pub.events = batch;
    pub.n_events = 3;
    assert_int_equal(bus_push_send(f->push, &env), 0);
    assert_true(run_until(f, three_stored));
    evingest_stats_t s;
    evingest_stats(f->ingest, &s);
    assert_int_equal(s.received, 3);
    assert_int_equal(s.rejected, 1);
}

static void test_bad_requests(void **state)
{
    fixture_t *f = *state;
    PB(EventSearch) search = PB_INIT(EVENT_SEARCH);
    search.since_ms = T0 + 100;
    search.until_ms = T0;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(EVENT_SEARCH);
    env.event_search = &search;
    request(f, &env);
    assert_int_equal(f->reply->body_case, PB_BODY(ERROR));
    assert_int_equal(f->reply->error->status->code, 400);

    search.since_ms = 0;
    search.until_ms = 0;
    search.limit = EVSTORE_LIMIT_MAX + 1;
    request(f, &env);
    assert_int_equal(f->reply->body_case, PB_BODY(ERROR));
    assert_int_equal(f->reply->error->status->code, 400);
    assert_non_null(strstr(f->reply->error->status->text, "limit"));

    /* a request events does not serve */
    PB(AuthTenantList) tl = PB_INIT(AUTH_TENANT_LIST);
    sx_env_t other = PB_INIT(ENVELOPE);
    other.body_case = PB_BODY(AUTH_TENANT_LIST);
    other.auth_tenant_list = &tl;
    request(f, &other);
    assert_int_equal(f->reply->body_case, PB_BODY(ERROR));
    assert_int_equal(f->reply->error->status->code, 400);

    /* pings are answered by the bus, with events' stats when set */
    PB(ServicePing) ping = PB_INIT(SERVICE_PING);
    sx_env_t p = PB_INIT(ENVELOPE);
    p.body_case = PB_BODY(SERVICE_PING);
    p.service_ping = &ping;
    request(f, &p);
    assert_int_equal(f->reply->body_case, PB_BODY(SERVICE_PONG));

    /* a body other than EventPublish on the ingest socket is dropped; later events still land */
    assert_int_equal(bus_push_send(f->push, &other), 0);
    push_event(f, "ok1", T0, "queued", "m");
    assert_true(run_until(f, one_stored));
    evingest_stats_t s;
    evingest_stats(f->ingest, &s);
    assert_int_equal(s.received, 1);
    assert_int_equal(s.rejected, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_publish_then_search, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batched_publish, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
