/*
 * dispatch_test: the router's bookkeeping with the bus replaced by fakes:
 * a task goes to the worker with the most free slots; with none free the
 * job waits in order and leaves when a slot frees; past max_pending the
 * newest job is deferred at once; results reach the right queue request
 * with an outcome for every recipient; a silent worker's tasks are deferred
 * with an event per recipient; unrouted jobs are answered by the router
 * itself, MX jobs go to delivery; a failed send moves the task to another
 * worker.
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
} sent_t;

typedef struct answer {
    bus_peer_t queue;
    uint64_t request_id;
    char job_id[64];
    size_t n;
    unsigned codes[8];
    int outcomes[8];
    char text[8][128];
    char route[64];
} answer_t;

typedef struct rec {
    sent_t sent[MAX_REC];
    size_t nsent;
    answer_t answers[MAX_REC];
    size_t nanswers;
    char events[MAX_REC][160];
    size_t nevents;
    bus_peer_t fail_to; /* sends to this peer fail */
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
    snprintf(r->events[r->nevents++], sizeof(r->events[0]), "%s %s %s %u %s", ev->type,
             ev->message_id, ev->recipient, ev->reply->code, ev->reply->enhanced);
}

static const dispatch_ops_t ops = {.send_task = fake_send, .answer = fake_answer,
                                   .event = fake_event};

typedef struct fixture {
    loop_t *loop;
    route_table_t *routes;
    dispatch_t *d;
    rec_t rec;
} fixture_t;

static const conf_field_t table[] = {
    {"routes", CONF_CUSTOM, 0, NULL, 0, 0, 0, route_table_parse, route_table_release, ""},
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
    dispatch_limits_t lim = {.worker_timeout_ms = 5000, .max_pending = max_pending,
                             .pending_timeout_ms = 60000, .shape_max_wait_ms = 5000,
                             .shape_queue_max = 1000,
                             .health = {.probe_base_ms = 5000, .probe_max_ms = 300000}};
    f->d = dispatch_new(f->loop, f->routes, &lim, &ops, &f->rec);
    return f;
}

static void teardown(fixture_t *f)
{
    dispatch_destroy(&f->d);
    route_table_destroy(&f->routes);
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
static void job(fixture_t *f, const char *queue, uint64_t rid, const char *id, const char *domain,
                size_t nrcpt)
{
    PB(DeliveryRecipient) rc[8];
    PB(DeliveryRecipient) *rp[8];
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
    j.attempt = 2;
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
    PB(DeliveryRecipientResult) *rp[8];
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_most_free_slots),
        cmocka_unit_test(test_pending_fifo_and_results),
        cmocka_unit_test(test_capacity_bound),
        cmocka_unit_test(test_worker_lost),
        cmocka_unit_test(test_router_decides),
        cmocka_unit_test(test_incomplete_result_and_worker_error),
        cmocka_unit_test(test_failed_send_moves_on),
        cmocka_unit_test(test_held_too_long),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
