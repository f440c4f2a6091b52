/*
 * service_test: event publishing, batched per loop turn. The events of one
 * turn leave in one EventPublish (a lone event in `event`, several in
 * `events`), a full batch leaves at once, and events still waiting when
 * the loop stops are sent by service_run and service_fini, never lost.
 * A plain ZeroMQ PULL socket stands in for the events service.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ipc/codec.h"
#include "ipc/service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#define WAIT_MS 5000

typedef struct fixture {
    char dir[400];
    char conf[600];
    char ep[600];
    void *ctx;
    void *pull;
    service_t svc;
    loop_timer_t emit;
    int to_emit;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    const char *base = getenv("SENDARIX_TEST_TMP");
    if (base == NULL || *base == '\0')
        base = "/tmp";
    mkdir(base, 0755);
    snprintf(f->dir, sizeof(f->dir), "%s/svc-XXXXXX", base);
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->ep, sizeof(f->ep), "ipc://%s/ingest.sock", f->dir);
    snprintf(f->conf, sizeof(f->conf), "%s/relay.conf", f->dir);
    FILE *fp = fopen(f->conf, "w");
    if (fp == NULL)
        return -1;
    fprintf(fp, "relay = { state_dir = \"%s/state\"; };\nbus = { events_ingest = [\"%s\"]; };\n",
            f->dir, f->ep);
    fclose(fp);
    f->ctx = zmq_ctx_new();
    f->pull = zmq_socket(f->ctx, ZMQ_PULL);
    if (zmq_bind(f->pull, f->ep) < 0)
        return -1;
    char *argv[] = {"sendarix-queue", "--config", f->conf, NULL};
    if (service_init(&f->svc, "queue", 3, argv) < 0 || f->svc.events == NULL)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    service_fini(&f->svc);
    zmq_close(f->pull);
    zmq_ctx_term(f->ctx);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", f->dir);
    free(f);
    return 0;
}

static void emit(fixture_t *f, int n)
{
    for (int i = 0; i < n; i++) {
        PB(Event) ev = PB_INIT(EVENT);
        char mid[32];
        snprintf(mid, sizeof(mid), "m%d", i);
        ev.type = "queued";
        ev.message_id = mid; /* the caller's memory: the batch keeps a copy */
        service_event(&f->svc, &ev);
    }
}

/* The next EventPublish from the PULL socket; fails after WAIT_MS. */
static sx_env_t *next_publish(fixture_t *f)
{
    zmq_pollitem_t item = {.socket = f->pull, .events = ZMQ_POLLIN};
    assert_int_equal(zmq_poll(&item, 1, WAIT_MS), 1);
    zmq_msg_t m;
    zmq_msg_init(&m);
    assert_true(zmq_msg_recv(&m, f->pull, 0) >= 0);
    sx_env_t *env = NULL;
    char err[128];
    assert_int_equal(codec_decode(zmq_msg_data(&m), zmq_msg_size(&m), &env, err, sizeof(err)),
                     0);
    zmq_msg_close(&m);
    assert_int_equal(env->body_case, PB_BODY(EVENT_PUBLISH));
    return env;
}

static int nothing_waiting(fixture_t *f)
{
    zmq_pollitem_t item = {.socket = f->pull, .events = ZMQ_POLLIN};
    return zmq_poll(&item, 1, 100) == 0;
}

static void on_stop(loop_t *loop, void *arg)
{
    (void)arg;
    loop_stop(loop);
}

/* Run the loop for a few turns (the end-of-turn send among them). */
static void run_briefly(fixture_t *f)
{
    loop_timer_t t;
    loop_timer_init(&t, on_stop, f);
    loop_timer_start(f->svc.loop, &t, 20);
    loop_run(f->svc.loop);
    loop_timer_stop(f->svc.loop, &t);
}

static void test_one_message_per_turn(void **state)
{
    fixture_t *f = *state;
    emit(f, 3);
    run_briefly(f);
    sx_env_t *env = next_publish(f);
    const PB(EventPublish) *pub = env->event_publish;
    assert_null(pub->event);
    assert_int_equal(pub->n_events, 3);
    for (size_t i = 0; i < 3; i++) {
        char mid[32];
        snprintf(mid, sizeof(mid), "m%zu", i);
        assert_string_equal(pub->events[i]->message_id, mid);
        assert_string_equal(pub->events[i]->service, "queue");
        assert_true(pub->events[i]->at_ms > 0);
        assert_true(strlen(pub->events[i]->id) > 0);
    }
    assert_string_not_equal(pub->events[0]->id, pub->events[1]->id);
    codec_free(&env);
    assert_true(nothing_waiting(f));

    /* a lone event travels in `event`, as before batching */
    emit(f, 1);
    run_briefly(f);
    env = next_publish(f);
    assert_non_null(env->event_publish->event);
    assert_int_equal(env->event_publish->n_events, 0);
    assert_string_equal(env->event_publish->event->message_id, "m0");
    codec_free(&env);
}

static void test_full_batch_leaves_at_once(void **state)
{
    fixture_t *f = *state;
    emit(f, SERVICE_EVENT_BATCH_MAX + 6);
    /* the full batch was sent without a loop turn */
    sx_env_t *env = next_publish(f);
    assert_int_equal(env->event_publish->n_events, SERVICE_EVENT_BATCH_MAX);
    codec_free(&env);
    assert_true(nothing_waiting(f));
    run_briefly(f);
    env = next_publish(f);
    assert_int_equal(env->event_publish->n_events, 6);
    codec_free(&env);
}

/* Emits in a timer handler, then stops the loop: the end-of-turn send never runs. */
static void on_emit_and_stop(loop_t *loop, void *arg)
{
    fixture_t *f = arg;
    emit(f, f->to_emit);
    loop_stop(loop);
}

static void test_flushed_on_stop(void **state)
{
    fixture_t *f = *state;
    f->to_emit = 2;
    loop_timer_init(&f->emit, on_emit_and_stop, f);
    loop_timer_start(f->svc.loop, &f->emit, 0);
    assert_int_equal(service_run(&f->svc), 0);
    sx_env_t *env = next_publish(f);
    assert_int_equal(env->event_publish->n_events, 2);
    codec_free(&env);

    /* an event of the shutdown itself, after the loop: sent by service_fini */
    emit(f, 1);
    service_fini(&f->svc);
    env = next_publish(f);
    assert_non_null(env->event_publish->event);
    codec_free(&env);
    /* teardown finalises again: harmless */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_one_message_per_turn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_batch_leaves_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flushed_on_stop, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
