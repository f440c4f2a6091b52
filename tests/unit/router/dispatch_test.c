/*
 * dispatch_test: the router's bookkeeping with the bus replaced by fakes:
 * a task goes to the worker with the most free slots; with none free the
 * job waits in order and leaves when a slot frees; past max_pending the
 * newest job is deferred at once; results reach the right queue request
 * with an outcome for every recipient; a silent worker's tasks are deferred
 * with an event per recipient; unrouted jobs are answered by the router
 * itself, MX jobs go to delivery; a failed send moves the task to another
 * worker. With an injected clock: endpoints that fail move to the end of
 * the next task, all down means "not attempted" until the probe time and
 * then one probe per endpoint; a destination over its connections holds
 * jobs, past shape_max_wait they go back not attempted; a slow-down reply
 * pauses the provider with an event; a learnt MX host moves a domain to its
 * provider; tasks carry source addresses within warm-up allowances.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/conf.h"
#include "core/loop.h"
#include "ipc/codec.h"
#include "router_dispatch.h"
#include "router_route.h"

#define MAX_REC 64

typedef struct sent {
    bus_peer_t worker;
    uint64_t task_id;
    char message_id[64];
    char route[64];
    char body[64];
    char endpoints[200]; /* the task's endpoint order */
    char source_ip[64];
    char provider[32];
    uint32_t per_connection;
    int kind;
} sent_t;

typedef struct answer {
    bus_peer_t queue;
    uint64_t request_id;
    char job_id[64];
    size_t n;
    unsigned codes[8];
    int outcomes[8];
    char text[8][160];
    char route[64];
    int not_attempted;
    uint32_t retry_after_ms;
} answer_t;

typedef struct rec {
    sent_t sent[MAX_REC];
    size_t nsent;
    answer_t answers[MAX_REC];
    size_t nanswers;
    char events[MAX_REC][300];
    size_t nevents;
    bus_peer_t fail_to; /* sends to this peer fail */
    uint64_t now;       /* the injected clocks */
    uint64_t wall;
} rec_t;

static int peer_eq(const bus_peer_t *a, const bus_peer_t *b)
{
    return a->len == b->len && memcmp(a->id, b->id, a->len) == 0;
}

static int fake_send(const bus_peer_t *worker, uint64_t task_id, PB(DeliveryTask) * task,
                     zmq_msg_t *payload, void *arg)
{
    rec_t *r = arg;
    if (r->fail_to.len && peer_eq(worker, &r->fail_to)) {
        zmq_msg_close(payload);
        return -1;
    }
    assert_true(r->nsent < MAX_REC);
    sent_t *s = &r->sent[r->nsent++];
    s->worker = *worker;
    s->task_id = task_id;
    snprintf(s->message_id, sizeof(s->message_id), "%s", task->job->message_id);
    snprintf(s->route, sizeof(s->route), "%s", task->route->name);
    snprintf(s->body, sizeof(s->body), "%.*s", (int)zmq_msg_size(payload),
             (const char *)zmq_msg_data(payload));
    s->endpoints[0] = '\0';
    for (size_t i = 0; i < task->route->n_endpoints; i++)
        snprintf(s->endpoints + strlen(s->endpoints), sizeof(s->endpoints) - strlen(s->endpoints),
                 "%s%s", i ? " " : "", task->route->endpoints[i]->name);
    snprintf(s->source_ip, sizeof(s->source_ip), "%s", task->route->source_ip);
    snprintf(s->provider, sizeof(s->provider), "%s", task->route->provider);
    s->per_connection = task->route->messages_per_connection;
    s->kind = task->route->kind;
    zmq_msg_close(payload);
    return 0;
}

static void fake_answer(const bus_peer_t *queue, uint64_t request_id, PB(DeliveryResult) * res,
                        void *arg)
{
    rec_t *r = arg;
    assert_true(r->nanswers < MAX_REC);
    answer_t *a = &r->answers[r->nanswers++];
    a->queue = *queue;
    a->request_id = request_id;
    snprintf(a->job_id, sizeof(a->job_id), "%s", res->job_id);
    snprintf(a->route, sizeof(a->route), "%s", res->route ? res->route : "");
    a->n = res->n_recipients;
    a->not_attempted = res->not_attempted;
    a->retry_after_ms = res->retry_after_ms;
    for (size_t i = 0; i < res->n_recipients && i < 8; i++) {
        a->codes[i] = res->recipients[i]->reply ? res->recipients[i]->reply->code : 0;
        a->outcomes[i] = res->recipients[i]->outcome;
        snprintf(a->text[i], sizeof(a->text[i]), "%s",
                 res->recipients[i]->reply ? res->recipients[i]->reply->text : "");
    }
}

static void fake_event(PB(Event) * ev, void *arg)
{
    rec_t *r = arg;
    assert_true(r->nevents < MAX_REC);
    char *e = r->events[r->nevents++];
    snprintf(e, sizeof(r->events[0]), "%s %s %s %u %s", ev->type, ev->message_id, ev->recipient,
             ev->reply->code, ev->reply->enhanced);
    for (size_t i = 0; i < ev->n_attrs; i++)
        snprintf(e + strlen(e), sizeof(r->events[0]) - strlen(e), " %s=%s", ev->attrs[i]->key,
                 ev->attrs[i]->value);
}

static uint64_t fake_now(void *arg)
{
    return ((rec_t *)arg)->now;
}

static uint64_t fake_wall(void *arg)
{
    return ((rec_t *)arg)->wall;
}

static const dispatch_ops_t ops = {
    .send_task = fake_send, .answer = fake_answer, .event = fake_event};
static const dispatch_ops_t clock_ops = {.send_task = fake_send,
                                         .answer = fake_answer,
                                         .event = fake_event,
                                         .now = fake_now,
                                         .wall = fake_wall};

typedef struct router_conf {
    route_table_t *routes;
    provider_table_t *providers;
    pool_table_t *pools;
    tenant_pools_t *tenants;
} router_conf_t;

typedef struct fixture {
    loop_t *loop;
    route_table_t *routes;
    router_conf_t conf;
    shape_t *shape;
    source_t *source;
    dispatch_t *d;
    rec_t rec;
} fixture_t;

static const conf_field_t table[] = {
    {"routes", CONF_CUSTOM, 0, NULL, 0, 0, 0, route_table_parse, route_table_release, ""},
    {NULL},
};

static const conf_field_t full_table[] = {
    {"routes", CONF_CUSTOM, offsetof(router_conf_t, routes), NULL, 0, 0, 0, route_table_parse,
     route_table_release, ""},
    {"providers", CONF_CUSTOM, offsetof(router_conf_t, providers), NULL, 0, 0, 0,
     provider_table_parse, provider_table_release, ""},
    {"source_pools", CONF_CUSTOM, offsetof(router_conf_t, pools), NULL, 0, 0, 0, pool_table_parse,
     pool_table_release, ""},
    {"tenant_pools", CONF_CUSTOM, offsetof(router_conf_t, tenants), NULL, 0, 0, 0,
     tenant_pools_parse, tenant_pools_release, ""},
    {NULL},
};

static fixture_t *setup_with(size_t max_pending)
{
    fixture_t *f = calloc(1, sizeof(*f));
    f->loop = loop_new();
    char err[512];
    conf_file_t *cf = conf_open_string(
        "t.conf",
        "router = { routes = (\n"
        " { name = \"mx\"; kind = \"mx\"; match = { recipient_domains = [\"mx.example\"]; }; },\n"
        " { name = \"known\"; endpoints = [\"127.0.0.1:25\"];\n"
        "   match = { recipient_domains = [\"example.org\", \"example.net\"]; }; }\n"
        "); };",
        err, sizeof(err));
    assert_non_null(cf);
    assert_int_equal(conf_section(cf, "router", table, &f->routes, err, sizeof(err)), 0);
    conf_close(&cf);
    dispatch_limits_t lim = {.worker_timeout_ms = 5000,
                             .max_pending = max_pending,
                             .pending_timeout_ms = 60000,
                             .shape_max_wait_ms = 5000,
                             .shape_queue_max = 1000,
                             .health = {.probe_base_ms = 5000, .probe_max_ms = 300000}};
    f->d = dispatch_new(f->loop, f->routes, &lim, &ops, &f->rec);
    return f;
}

/* A dispatcher over a whole router section, with the injected clocks and a fixed seed. */
static fixture_t *setup_router(const char *body)
{
    fixture_t *f = calloc(1, sizeof(*f));
    f->loop = loop_new();
    char err[1024], text[4096];
    snprintf(text, sizeof(text), "router = {\n%s\n};", body);
    conf_file_t *cf = conf_open_string("t.conf", text, err, sizeof(err));
    if (cf == NULL || conf_section(cf, "router", full_table, &f->conf, err, sizeof(err)) < 0)
        fail_msg("%s", err);
    conf_close(&cf);
    f->routes = f->conf.routes;
    f->conf.routes = NULL;
    shape_limits_t sl = {.pause_base_ms = 60000,
                         .pause_max_ms = 900000,
                         .recover_interval_ms = 60000,
                         .recover_step = 0.1,
                         .mx_cache_max = 100,
                         .mx_cache_ttl_ms = 3600000,
                         .dests_max = 1000};
    f->shape = shape_new(f->conf.providers, &sl);
    source_limits_t srcl = {.warmup_first_day = 2,
                            .warmup_ready = 100000,
                            .deprioritize_ms = 1800000,
                            .deprioritize_divisor = 10};
    f->source = source_new(f->conf.pools, f->conf.tenants, &srcl, 99);
    f->rec.now = 1000000;
    f->rec.wall = 20777ull * 86400000 + 3600000;
    source_begin(f->source, f->rec.wall);
    dispatch_limits_t lim = {.worker_timeout_ms = 3600000,
                             .max_pending = 100,
                             .pending_timeout_ms = 120000,
                             .shape_max_wait_ms = 5000,
                             .shape_queue_max = 3,
                             .health = {.probe_base_ms = 5000, .probe_max_ms = 300000}};
    f->d = dispatch_new(f->loop, f->routes, &lim, &clock_ops, &f->rec);
    dispatch_set_shaping(f->d, f->shape, pool_table_count(f->conf.pools) ? f->source : NULL);
    return f;
}

static void teardown(fixture_t *f)
{
    dispatch_destroy(&f->d);
    shape_destroy(&f->shape);
    source_destroy(&f->source);
    route_table_destroy(&f->routes);
    provider_table_destroy(&f->conf.providers);
    pool_table_destroy(&f->conf.pools);
    tenant_pools_destroy(&f->conf.tenants);
    loop_destroy(&f->loop);
    free(f);
}

static bus_peer_t peer(const char *name)
{
    bus_peer_t p;
    memset(&p, 0, sizeof(p));
    p.len = (uint8_t)strlen(name);
    memcpy(p.id, name, p.len);
    return p;
}

/* A job as it comes off the bus: a decoded, owned envelope and a body frame. */
static void job_attempt(fixture_t *f, const char *queue, uint64_t rid, const char *id,
                        const char *domain, size_t nrcpt, uint32_t attempt)
{
    PB(DeliveryRecipient) rc[8];
    PB(DeliveryRecipient) * rp[8];
    char addr[8][64];
    for (size_t i = 0; i < nrcpt; i++) {
        PB(DeliveryRecipient) init = PB_INIT(DELIVERY_RECIPIENT);
        rc[i] = init;
        rc[i].index = (uint32_t)i;
        snprintf(addr[i], sizeof(addr[i]), "r%zu@%s", i, domain);
        rc[i].address = addr[i];
        rp[i] = &rc[i];
    }
    PB(DeliveryJob) j = PB_INIT(DELIVERY_JOB);
    j.job_id = (char *)id;
    j.message_id = (char *)id;
    j.mail_from = "s@sender.test";
    j.domain = (char *)domain;
    j.tenant = "t";
    j.attempt = attempt;
    j.recipients = rp;
    j.n_recipients = nrcpt;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(DELIVERY_JOB);
    env.delivery_job = &j;
    size_t len;
    uint8_t *bytes = codec_encode(&env, &len);
    sx_env_t *owned = NULL;
    char err[128];
    assert_int_equal(codec_decode(bytes, len, &owned, err, sizeof(err)), 0);
    free(bytes);
    zmq_msg_t body;
    char text[64];
    snprintf(text, sizeof(text), "body of %s", id);
    zmq_msg_init_size(&body, strlen(text));
    memcpy(zmq_msg_data(&body), text, strlen(text));
    bus_peer_t q = peer(queue);
    dispatch_job(f->d, &q, rid, &owned, &body);
    assert_null(owned); /* taken */
    zmq_msg_close(&body);
}

static void job(fixture_t *f, const char *queue, uint64_t rid, const char *id, const char *domain,
                size_t nrcpt)
{
    job_attempt(f, queue, rid, id, domain, nrcpt, 2);
}

static void ready(fixture_t *f, const char *name, uint32_t slots)
{
    bus_peer_t p = peer(name);
    dispatch_worker_ready(f->d, &p, name, slots);
}

/* A result for task: every recipient delivered. */
static void result(fixture_t *f, const char *worker, uint64_t task_id, size_t nrcpt)
{
    PB(Status) st = PB_INIT(STATUS);
    st.code = 250;
    st.enhanced = "2.0.0";
    st.text = "ok";
    PB(DeliveryRecipientResult) rr[8];
    PB(DeliveryRecipientResult) * rp[8];
    for (size_t i = 0; i < nrcpt; i++) {
        PB(DeliveryRecipientResult) init = PB_INIT(DELIVERY_RECIPIENT_RESULT);
        rr[i] = init;
        rr[i].index = (uint32_t)i;
        rr[i].outcome = SENDARIX__V1__DELIVERY_RECIPIENT_RESULT__OUTCOME__DELIVERED;
        rr[i].reply = &st;
        rp[i] = &rr[i];
    }
    PB(DeliveryResult) res = PB_INIT(DELIVERY_RESULT);
    res.job_id = "from-worker";
    res.recipients = rp;
    res.n_recipients = nrcpt;
    res.remote_host = "h";
    bus_peer_t p = peer(worker);
    dispatch_result(f->d, &p, task_id, &res, NULL);
}

/* A result for a one-recipient task: one reply, the host that gave it, maybe an MX host. */
static void result_full(fixture_t *f, const char *worker, uint64_t task_id, unsigned code,
                        const char *enh, const char *text, const char *host, const char *mx)
{
    PB(Status) st = PB_INIT(STATUS);
    st.code = code;
    st.enhanced = (char *)enh;
    st.text = (char *)text;
    PB(DeliveryRecipientResult) rr = PB_INIT(DELIVERY_RECIPIENT_RESULT);
    rr.index = 0;
    rr.outcome = code / 100 == 2   ? PB_ENUM(DELIVERY_RECIPIENT_RESULT__OUTCOME__DELIVERED)
                 : code / 100 == 5 ? PB_ENUM(DELIVERY_RECIPIENT_RESULT__OUTCOME__BOUNCED)
                                   : PB_ENUM(DELIVERY_RECIPIENT_RESULT__OUTCOME__DEFERRED);
    rr.reply = &st;
    PB(DeliveryRecipientResult) *rp = &rr;
    PB(DeliveryResult) res = PB_INIT(DELIVERY_RESULT);
    res.job_id = "w";
    res.recipients = &rp;
    res.n_recipients = 1;
    res.remote_host = (char *)host;
    res.remote_ip = (char *)host;
    res.mx_host = (char *)(mx ? mx : "");
    res.not_attempted = 1; /* a worker cannot claim this: router clears it */
    bus_peer_t p = peer(worker);
    dispatch_result(f->d, &p, task_id, &res, NULL);
}

static const char *worker_of(const sent_t *s, char *buf)
{
    memcpy(buf, s->worker.id, s->worker.len);
    buf[s->worker.len] = '\0';
    return buf;
}

static void test_most_free_slots(void **state)
{
    (void)state;
    fixture_t *f = setup_with(100);
    ready(f, "w1", 2);
    ready(f, "w2", 5);
    char b[64];
    /* w2 has 5 free, w1 2: w2, w2, w2 (then 2 vs 2: the first wins), w1, then alternating */
    const char *want[] = {"w2", "w2", "w2", "w1", "w2", "w1", "w2"};
    for (size_t i = 0; i < 7; i++) {
        char id[16];
        snprintf(id, sizeof(id), "m%zu", i);
        job(f, "q", 100 + i, id, "example.org", 1);
    }
    assert_int_equal(f->rec.nsent, 7);
    for (size_t i = 0; i < 7; i++)
        if (strcmp(worker_of(&f->rec.sent[i], b), want[i]) != 0)
            fail_msg("task %zu went to %s, want %s", i, b, want[i]);
    assert_string_equal(f->rec.sent[0].route, "known");
    assert_string_equal(f->rec.sent[0].body, "body of m0");
    dispatch_stats_t st;
    dispatch_get_stats(f->d, &st);
    assert_int_equal(st.workers, 2);
    assert_int_equal(st.free_slots, 0);
    assert_int_equal(st.inflight, 7);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.jobs_total, 7);
    assert_int_equal(f->rec.nanswers, 0);
    teardown(f);
}

static void test_pending_fifo_and_results(void **state)
{
    (void)state;
    fixture_t *f = setup_with(100);
    /* no worker yet: jobs wait */
    job(f, "q1", 11, "a", "example.org", 2);
    job(f, "q2", 12, "b", "example.net", 1);
    job(f, "q1", 13, "c", "example.org", 1);
    assert_int_equal(f->rec.nsent, 0);
    dispatch_stats_t st;
    dispatch_get_stats(f->d, &st);
    assert_int_equal(st.pending, 3);

    ready(f, "w1", 2); /* two leave, in order */
    assert_int_equal(f->rec.nsent, 2);
    assert_string_equal(f->rec.sent[0].message_id, "a");
    assert_string_equal(f->rec.sent[1].message_id, "b");

    /* a heartbeat with the same slots sends nothing more */
    ready(f, "w1", 2);
    assert_int_equal(f->rec.nsent, 2);

    /* the result of "a" goes to q1 with its request id; its slot takes "c" */
    result(f, "w1", f->rec.sent[0].task_id, 2);
    assert_int_equal(f->rec.nanswers, 1);
    answer_t *a = &f->rec.answers[0];
    bus_peer_t q1 = peer("q1");
    assert_true(peer_eq(&a->queue, &q1));
    assert_int_equal(a->request_id, 11);
    assert_string_equal(a->job_id, "a"); /* the job's id, whatever the worker said */
    assert_int_equal(a->n, 2);
    assert_int_equal(a->codes[0], 250);
    assert_int_equal(a->codes[1], 250);
    assert_string_equal(a->route, "known");
    assert_int_equal(f->rec.nsent, 3);
    assert_string_equal(f->rec.sent[2].message_id, "c");

    /* the same result twice: the task is gone, nothing is answered */
    result(f, "w1", f->rec.sent[0].task_id, 2);
    assert_int_equal(f->rec.nanswers, 1);
    /* an id nobody sent */
    result(f, "w1", 12345, 1);
    assert_int_equal(f->rec.nanswers, 1);
    assert_int_equal(f->rec.nevents, 0);
    teardown(f);
}

/* Lanes share the workers in turn: a destination with many held jobs does
 * not keep another one waiting behind all of them. */
static void test_lanes_take_turns(void **state)
{
    (void)state;
    fixture_t *f = setup_with(100);
    job(f, "q", 1, "org1", "example.org", 1);
    job(f, "q", 2, "org2", "example.org", 1);
    job(f, "q", 3, "org3", "example.org", 1);
    job(f, "q", 4, "net1", "example.net", 1);
    ready(f, "w1", 2);
    assert_int_equal(f->rec.nsent, 2);
    assert_string_equal(f->rec.sent[0].message_id, "org1");
    assert_string_equal(f->rec.sent[1].message_id, "net1");
    /* freed slots go to what is left, oldest first */
    result(f, "w1", f->rec.sent[1].task_id, 1);
    assert_int_equal(f->rec.nsent, 3);
    assert_string_equal(f->rec.sent[2].message_id, "org2");
    result(f, "w1", f->rec.sent[0].task_id, 1);
    assert_int_equal(f->rec.nsent, 4);
    assert_string_equal(f->rec.sent[3].message_id, "org3");
    dispatch_stats_t st;
    dispatch_get_stats(f->d, &st);
    assert_int_equal(st.pending, 0);
    teardown(f);
}

static void test_capacity_bound(void **state)
{
    (void)state;
    fixture_t *f = setup_with(2);
    job(f, "q", 1, "a", "example.org", 1);
    job(f, "q", 2, "b", "example.org", 1);
    assert_int_equal(f->rec.nanswers, 0);
    job(f, "q", 3, "c", "example.org", 2); /* past the bound: deferred at once */
    assert_int_equal(f->rec.nanswers, 1);
    answer_t *a = &f->rec.answers[0];
    assert_int_equal(a->request_id, 3);
    assert_int_equal(a->n, 2);
    assert_int_equal(a->codes[0], 451);
    assert_int_equal(a->outcomes[1], SENDARIX__V1__DELIVERY_RECIPIENT_RESULT__OUTCOME__DEFERRED);
    assert_non_null(strstr(a->text[0], "capacity exhausted"));
    assert_int_equal(f->rec.nevents, 2);
    assert_non_null(strstr(f->rec.events[0], "deferred c r0@example.org 451 4.3.2"));
    dispatch_stats_t st;
    dispatch_get_stats(f->d, &st);
    assert_int_equal(st.pending, 2);
    teardown(f);

    /* max_pending 0: nothing waits, but a free slot still takes the job */
    f = setup_with(0);
    job(f, "q", 1, "a", "example.org", 1);
    assert_int_equal(f->rec.nanswers, 1);
    ready(f, "w", 1);
    job(f, "q", 2, "b", "example.org", 1);
    assert_int_equal(f->rec.nsent, 1);
    assert_int_equal(f->rec.nanswers, 1);
    teardown(f);
}

static void test_worker_lost(void **state)
{
    (void)state;
    fixture_t *f = setup_with(100);
    ready(f, "w1", 4);
    ready(f, "w2", 1);
    job(f, "q", 1, "a", "example.org", 2); /* w1 */
    job(f, "q", 2, "b", "example.org", 1); /* w1: 3 free vs 1 */
    job(f, "q", 3, "c", "example.org", 1); /* w1: 2 vs 1 */
    char b[64];
    assert_string_equal(worker_of(&f->rec.sent[0], b), "w1");
    uint64_t now = loop_now(f->loop);
    dispatch_expire(f->d, now + 4999);
    assert_int_equal(f->rec.nanswers, 0);
    dispatch_expire(f->d, now + 5000);
    /* both were last seen at "now": both are dropped; w1's three tasks are answered */
    assert_int_equal(f->rec.nanswers, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(f->rec.answers[i].codes[0], 451);
        assert_non_null(strstr(f->rec.answers[i].text[0], "delivery worker lost"));
    }
    assert_int_equal(f->rec.nevents, 4); /* one per recipient */
    assert_non_null(strstr(f->rec.events[0], "deferred"));
    assert_non_null(strstr(f->rec.events[0], "4.4.0"));
    dispatch_stats_t st;
    dispatch_get_stats(f->d, &st);
    assert_int_equal(st.workers, 0);
    assert_int_equal(st.inflight, 0);
    assert_int_equal(st.workers_lost, 2);
    /* a late result from the lost worker finds nothing */
    result(f, "w1", f->rec.sent[0].task_id, 2);
    assert_int_equal(f->rec.nanswers, 3);
    teardown(f);
}

static void test_router_decides(void **state)
{
    (void)state;
    fixture_t *f = setup_with(100);
    ready(f, "w", 10);
    job(f, "q", 7, "a", "nowhere.example", 2);
    assert_int_equal(f->rec.nsent, 0);
    assert_int_equal(f->rec.nanswers, 1);
    assert_int_equal(f->rec.answers[0].request_id, 7);
    assert_int_equal(f->rec.answers[0].codes[1], 451);
    assert_string_equal(f->rec.answers[0].text[0], "no route for nowhere.example");
    /* an MX route goes to delivery, which looks the MX up */
    job(f, "q", 8, "b", "mx.example", 1);
    assert_int_equal(f->rec.nsent, 1);
    assert_int_equal(f->rec.nanswers, 1);
    assert_string_equal(f->rec.sent[0].route, "mx");
    assert_int_equal(f->rec.nevents, 2);
    teardown(f);
}

static void test_incomplete_result_and_worker_error(void **state)
{
    (void)state;
    fixture_t *f = setup_with(100);
    ready(f, "w", 10);
    job(f, "q", 1, "a", "example.org", 3);
    job(f, "q", 2, "b", "example.org", 2);
    result(f, "w", f->rec.sent[0].task_id, 1); /* only recipient 0 reported */
    answer_t *a = &f->rec.answers[0];
    assert_int_equal(a->n, 3);
    assert_int_equal(a->codes[0], 250);
    assert_int_equal(a->codes[1], 451);
    assert_int_equal(a->outcomes[2], SENDARIX__V1__DELIVERY_RECIPIENT_RESULT__OUTCOME__DEFERRED);
    assert_string_equal(a->text[2], "delivery worker reported no outcome");
    assert_int_equal(f->rec.nevents, 2);

    PB(Status) st = PB_INIT(STATUS);
    st.code = 451;
    st.text = "malformed recipient";
    bus_peer_t w = peer("w");
    dispatch_result(f->d, &w, f->rec.sent[1].task_id, NULL, &st);
    a = &f->rec.answers[1];
    assert_int_equal(a->request_id, 2);
    assert_int_equal(a->n, 2);
    assert_int_equal(a->codes[1], 451);
    assert_string_equal(a->text[0], "malformed recipient");
    teardown(f);
}

static void test_failed_send_moves_on(void **state)
{
    (void)state;
    fixture_t *f = setup_with(100);
    ready(f, "gone", 10);
    ready(f, "w", 2);
    f->rec.fail_to = peer("gone");
    job(f, "q", 1, "a", "example.org", 1);
    char b[64];
    assert_int_equal(f->rec.nsent, 1);
    assert_string_equal(worker_of(&f->rec.sent[0], b), "w");
    assert_string_equal(f->rec.sent[0].body, "body of a"); /* the body survived the failure */
    job(f, "q", 2, "b", "example.org", 1);
    job(f, "q", 3, "c", "example.org", 1); /* "gone" is not picked again, w is full */
    assert_int_equal(f->rec.nsent, 2);
    dispatch_stats_t st;
    dispatch_get_stats(f->d, &st);
    assert_int_equal(st.pending, 1);
    /* "gone" speaks again: picked again */
    f->rec.fail_to.len = 0;
    ready(f, "gone", 10);
    assert_int_equal(f->rec.nsent, 3);
    assert_string_equal(worker_of(&f->rec.sent[2], b), "gone");
    assert_string_equal(f->rec.sent[2].body, "body of c");
    teardown(f);
}

static void test_held_too_long(void **state)
{
    (void)state;
    fixture_t *f = setup_with(100);
    job(f, "q", 1, "a", "example.org", 1);
    dispatch_expire(f->d, loop_now(f->loop) + 59999);
    assert_int_equal(f->rec.nanswers, 0);
    dispatch_expire(f->d, loop_now(f->loop) + 60000);
    assert_int_equal(f->rec.nanswers, 1);
    assert_int_equal(f->rec.answers[0].codes[0], 451);
    dispatch_stats_t st;
    dispatch_get_stats(f->d, &st);
    assert_int_equal(st.pending, 0);
    teardown(f);
}

static const char *failover_conf =
    "routes = ( { name = \"pool\"; endpoints = [ \"127.0.0.2:25\", \"127.0.0.3:25\" ]; } );";

static void test_failover_and_all_down(void **state)
{
    (void)state;
    fixture_t *f = setup_router(failover_conf);
    ready(f, "w", 10);
    job_attempt(f, "q", 1, "a", "example.org", 1, 1);
    assert_int_equal(f->rec.nsent, 1);
    assert_string_equal(f->rec.sent[0].endpoints, "127.0.0.2:25 127.0.0.3:25");
    /* delivered by the second endpoint: the first failed (result without attempts) */
    result_full(f, "w", f->rec.sent[0].task_id, 250, "2.0.0", "ok", "127.0.0.3", NULL);
    assert_int_equal(f->rec.answers[0].not_attempted, 0);
    assert_int_equal(f->rec.answers[0].codes[0], 250);
    job_attempt(f, "q", 2, "b", "example.org", 1, 1);
    assert_string_equal(f->rec.sent[1].endpoints, "127.0.0.3:25 127.0.0.2:25");
    /* the second endpoint fails too: every endpoint is down */
    f->rec.now += 1000;
    result_full(f, "w", f->rec.sent[1].task_id, 451, "4.4.1",
                "connection to 127.0.0.2 (127.0.0.2) failed: Connection refused", "127.0.0.2",
                NULL);
    dispatch_stats_t st;
    dispatch_get_stats(f->d, &st);
    assert_int_equal(st.endpoints_down, 2);
    /* jobs are not dispatched: answered at once, not attempted, until the first probe is due */
    size_t events = f->rec.nevents;
    job_attempt(f, "q", 3, "c", "example.org", 2, 1);
    assert_int_equal(f->rec.nsent, 2);
    answer_t *a = &f->rec.answers[2];
    assert_int_equal(a->request_id, 3);
    assert_int_equal(a->not_attempted, 1);
    assert_int_equal(a->retry_after_ms, 4000); /* 127.0.0.2 went down 1 s earlier */
    assert_int_equal(a->n, 2);
    assert_non_null(strstr(a->text[0], "every endpoint of the route is down"));
    /* an event per recipient says why, and that nothing was attempted */
    assert_int_equal(f->rec.nevents, events + 2);
    assert_string_equal(f->rec.events[events],
                        "deferred c r0@example.org 451 4.4.1 route=pool not_attempted=1 "
                        "retry_after_ms=4000");
    /* at the probe time: one probe task per down endpoint, the rest wait again */
    f->rec.now += 4000;
    job_attempt(f, "q", 4, "d", "example.org", 1, 1);
    assert_int_equal(f->rec.nsent, 3);
    assert_string_equal(f->rec.sent[2].endpoints, "127.0.0.2:25 127.0.0.3:25");
    job_attempt(f, "q", 5, "e", "example.org", 1, 1);
    assert_int_equal(f->rec.nsent, 3); /* 127.0.0.3's probe is due a second later */
    assert_int_equal(f->rec.answers[3].not_attempted, 1);
    assert_int_equal(f->rec.answers[3].retry_after_ms, 1000);
    f->rec.now += 1000;
    job_attempt(f, "q", 6, "f", "example.org", 1, 1);
    assert_string_equal(f->rec.sent[3].endpoints, "127.0.0.3:25 127.0.0.2:25");
    job_attempt(f, "q", 7, "g", "example.org", 1, 1);
    assert_int_equal(f->rec.nsent, 4);
    assert_int_equal(f->rec.answers[4].not_attempted, 1);
    /* the first probe succeeds: that endpoint is up, and takes the next job first */
    result_full(f, "w", f->rec.sent[2].task_id, 250, "2.0.0", "ok", "127.0.0.2", NULL);
    job_attempt(f, "q", 8, "h", "example.org", 1, 1);
    assert_int_equal(f->rec.nsent, 5);
    assert_string_equal(f->rec.sent[4].endpoints, "127.0.0.2:25 127.0.0.3:25");
    dispatch_get_stats(f->d, &st);
    assert_int_equal(st.endpoints_down, 1);
    assert_int_equal(st.held_back, 3);
    /* 127.0.0.3's probe is still out: with 127.0.0.2 drained nothing may be tried */
    assert_int_equal(health_drain(dispatch_health(f->d), "", "127.0.0.2:25", 1, NULL, NULL), 1);
    job_attempt(f, "q", 9, "i", "example.org", 1, 1);
    assert_int_equal(f->rec.nsent, 5);
    assert_int_equal(f->rec.answers[f->rec.nanswers - 1].not_attempted, 1);
    /* its probe works: drained endpoints are never listed */
    result_full(f, "w", f->rec.sent[3].task_id, 250, "2.0.0", "ok", "127.0.0.3", NULL);
    job_attempt(f, "q", 10, "j", "example.org", 1, 1);
    assert_string_equal(f->rec.sent[5].endpoints, "127.0.0.3:25");
    teardown(f);
}

static const char *shaping_conf =
    "routes = ( { name = \"out\"; endpoints = [ \"127.0.0.1:25\" ]; } );\n"
    "providers = ( { name = \"gmail\"; connections = 2; },\n"
    "              { name = \"slow\"; domains = \"slow.example\"; rate_per_minute = 60; } );";

static void test_shaping_holds_and_pauses(void **state)
{
    (void)state;
    fixture_t *f = setup_router(shaping_conf);
    ready(f, "w", 10);
    job_attempt(f, "q", 1, "a", "gmail.com", 1, 1);
    job_attempt(f, "q", 2, "b", "googlemail.com", 1, 1);
    job_attempt(f, "q", 3, "c", "gmail.com", 1, 1);   /* two connections: it waits */
    job_attempt(f, "q", 4, "d", "example.org", 1, 1); /* another destination is not held up */
    assert_int_equal(f->rec.nsent, 3);
    assert_string_equal(f->rec.sent[0].provider, "gmail");
    assert_int_equal(f->rec.sent[0].per_connection, 50);
    assert_string_equal(f->rec.sent[2].message_id, "d");
    assert_string_equal(f->rec.sent[2].provider, "default");
    dispatch_stats_t st;
    dispatch_get_stats(f->d, &st);
    assert_int_equal(st.pending, 1);
    /* a task ends: the held job goes */
    result_full(f, "w", f->rec.sent[0].task_id, 250, "2.0.0", "ok", "127.0.0.1", NULL);
    assert_int_equal(f->rec.nsent, 4);
    assert_string_equal(f->rec.sent[3].message_id, "c");
    /* one held longer than shape_max_wait goes back to queue, not attempted */
    job_attempt(f, "q", 5, "e", "gmail.com", 1, 1);
    size_t events = f->rec.nevents;
    f->rec.now += 4999;
    dispatch_expire(f->d, f->rec.now);
    assert_int_equal(f->rec.nanswers, 1);
    f->rec.now += 1;
    dispatch_expire(f->d, f->rec.now);
    assert_int_equal(f->rec.nanswers, 2);
    assert_int_equal(f->rec.answers[1].request_id, 5);
    assert_int_equal(f->rec.answers[1].not_attempted, 1);
    assert_int_equal(f->rec.answers[1].retry_after_ms, 5000);
    assert_int_equal(f->rec.nevents, events); /* a short wait for a slot: no event */
    /* a slow-down reply pauses gmail: an event with the reply, and jobs held back */
    result_full(f, "w", f->rec.sent[1].task_id, 421, "4.7.28", "rate limited", "127.0.0.1", NULL);
    assert_non_null(strstr(f->rec.events[f->rec.nevents - 1],
                           "destination_paused b r0@googlemail.com 421 4.7.28 destination=gmail "
                           "provider=gmail paused_until_ms="));
    assert_non_null(strstr(f->rec.events[f->rec.nevents - 1], "rate_per_minute=300.0"));
    job_attempt(f, "q", 6, "f", "gmail.com", 1, 1);
    answer_t *a = &f->rec.answers[f->rec.nanswers - 1];
    assert_int_equal(a->request_id, 6);
    assert_int_equal(a->not_attempted, 1);
    assert_int_equal(a->retry_after_ms, 60000);
    assert_non_null(strstr(a->text[0], "destination gmail"));
    /* after the pause gmail takes jobs again */
    f->rec.now += 60000;
    job_attempt(f, "q", 7, "g", "gmail.com", 1, 1);
    assert_string_equal(f->rec.sent[f->rec.nsent - 1].message_id, "g");
    /* a rate of 60 a minute: one now, the next a second later */
    job_attempt(f, "q", 8, "s1", "slow.example", 1, 1);
    job_attempt(f, "q", 9, "s2", "slow.example", 1, 1);
    assert_string_equal(f->rec.sent[f->rec.nsent - 1].message_id, "s1");
    f->rec.now += 1000;
    dispatch_expire(f->d, f->rec.now);
    assert_string_equal(f->rec.sent[f->rec.nsent - 1].message_id, "s2");
    teardown(f);
}

static void test_mx_learnt_moves_provider(void **state)
{
    (void)state;
    fixture_t *f = setup_router("routes = ( { name = \"direct\"; kind = \"mx\"; } );");
    ready(f, "w", 10);
    job_attempt(f, "q", 1, "a", "corp.example", 1, 1);
    assert_string_equal(f->rec.sent[0].provider, "default");
    assert_int_equal(f->rec.sent[0].kind, SENDARIX__V1__DELIVERY_ROUTE__KIND__MX);
    result_full(f, "w", f->rec.sent[0].task_id, 250, "2.0.0", "ok", "aspmx.l.google.com",
                "aspmx.l.google.com");
    job_attempt(f, "q", 2, "b", "corp.example", 1, 1);
    assert_string_equal(f->rec.sent[1].provider, "gmail");
    teardown(f);
}

/* A destination holding its share sends the next job back for as long as
 * its lane takes to drain at the pace it has been sending, not the longest wait. */
static void test_full_lane_offers_its_drain_time(void **state)
{
    (void)state;
    fixture_t *f = setup_router(shaping_conf); /* gmail: two connections; lanes hold 3 */
    ready(f, "w", 10);
    job_attempt(f, "q", 1, "a", "gmail.com", 1, 1);
    job_attempt(f, "q", 2, "b", "gmail.com", 1, 1);
    job_attempt(f, "q", 3, "c", "gmail.com", 1, 1);
    job_attempt(f, "q", 4, "d", "gmail.com", 1, 1);
    job_attempt(f, "q", 5, "e", "gmail.com", 1, 1);
    assert_int_equal(f->rec.nsent, 2);
    f->rec.now += 100;
    result_full(f, "w", f->rec.sent[0].task_id, 250, "2.0.0", "ok", "127.0.0.1", NULL);
    f->rec.now += 200;
    result_full(f, "w", f->rec.sent[1].task_id, 250, "2.0.0", "ok", "127.0.0.1", NULL);
    assert_int_equal(f->rec.nsent, 4); /* c and d went, 200 ms apart; e waits */
    job_attempt(f, "q", 6, "f", "gmail.com", 1, 1);
    job_attempt(f, "q", 7, "g", "gmail.com", 1, 1);
    size_t answers = f->rec.nanswers;
    job_attempt(f, "q", 8, "h", "gmail.com", 1, 1); /* the lane holds 3: h is sent back */
    assert_int_equal(f->rec.nanswers, answers + 1);
    answer_t *a = &f->rec.answers[f->rec.nanswers - 1];
    assert_int_equal(a->request_id, 8);
    assert_int_equal(a->not_attempted, 1);
    assert_int_equal(a->retry_after_ms, 300); /* half of three jobs, 200 ms apart */
    teardown(f);
}

static void test_unshaped_route_keeps_connections(void **state)
{
    (void)state;
    fixture_t *f = setup_router(
        "routes = ( { name = \"relay\"; endpoints = [ \"127.0.0.1:25\" ]; shaping = false; } );");
    ready(f, "w", 10);
    job_attempt(f, "q", 1, "a", "example.org", 1, 1);
    assert_int_equal(f->rec.nsent, 1);
    assert_string_equal(f->rec.sent[0].provider, "");
    /* no profile matched, yet the connection is kept as the default profile says */
    assert_int_equal(f->rec.sent[0].per_connection, 100);
    teardown(f);
}

static const char *pool_conf =
    "routes = ( { name = \"out\"; endpoints = [ \"127.0.0.1:25\" ]; source_pool = \"main\"; },\n"
    "           { name = \"other\"; endpoints = [ \"127.0.0.1:26\" ]; match = { tenants = \"x\"; "
    "}; } );\n"
    "source_pools = ( { name = \"main\"; addresses = (\n"
    "    { address = \"127.0.0.2\"; weight = 10; },\n"
    "    { address = \"127.0.0.3\"; weight = 10; warmup = true; } ); } );";

static void test_sources_in_tasks(void **state)
{
    (void)state;
    fixture_t *f = setup_router(pool_conf);
    ready(f, "w", 100);
    /* retries never go to the warming address */
    for (int i = 0; i < 15; i++) {
        job_attempt(f, "q", 100 + (uint64_t)i, "r", "example.net", 1, 2);
        assert_string_equal(f->rec.sent[f->rec.nsent - 1].source_ip, "127.0.0.2");
    }
    size_t warm = 0, cold = 0;
    for (int i = 0; i < 18; i++) {
        char id[16];
        snprintf(id, sizeof(id), "m%d", i);
        job_attempt(f, "q", (uint64_t)i + 1, id, "example.org", 1, 1);
        const sent_t *s = &f->rec.sent[f->rec.nsent - 1];
        if (strcmp(s->source_ip, "127.0.0.2") == 0)
            warm++;
        else if (strcmp(s->source_ip, "127.0.0.3") == 0)
            cold++;
    }
    assert_int_equal(f->rec.nsent, 33);
    /* the warming address took its first day's 2 tasks for the provider and no more */
    assert_int_equal(cold, 2);
    assert_int_equal(warm, 16);
    assert_int_equal(source_sent_today(f->source, "127.0.0.3", "default", f->rec.wall), 2);
    /* a block reply at 127.0.0.2 deprioritizes it for that destination */
    result_full(f, "w", f->rec.sent[0].task_id, 554, "5.7.1",
                "Service unavailable; client host blocked using a block list", "127.0.0.1", NULL);
    assert_true(source_deprioritized(f->source, "127.0.0.2", "example.net", f->rec.now));
    assert_false(source_deprioritized(f->source, "127.0.0.2", "example.org", f->rec.now));
    assert_int_equal(f->rec.answers[0].codes[0], 554);
    teardown(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failover_and_all_down),
        cmocka_unit_test(test_shaping_holds_and_pauses),
        cmocka_unit_test(test_unshaped_route_keeps_connections),
        cmocka_unit_test(test_full_lane_offers_its_drain_time),
        cmocka_unit_test(test_mx_learnt_moves_provider),
        cmocka_unit_test(test_sources_in_tasks),
        cmocka_unit_test(test_most_free_slots),
        cmocka_unit_test(test_pending_fifo_and_results),
        cmocka_unit_test(test_lanes_take_turns),
        cmocka_unit_test(test_capacity_bound),
        cmocka_unit_test(test_worker_lost),
        cmocka_unit_test(test_router_decides),
        cmocka_unit_test(test_incomplete_result_and_worker_error),
        cmocka_unit_test(test_failed_send_moves_on),
        cmocka_unit_test(test_held_too_long),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
