/*
 * events_metrics on one loop with stand-in services, each on its own bus
 * so each has its own pong stats: two queue instances (the first answers
 * QueueStats, the second refuses it), a third queue endpoint nobody
 * serves, and auth with stats that are not numbers or need escaping.
 * Checks the /metrics text (up, queue gauges from pong and stats, every
 * numeric stat), that a service going away becomes up 0 without stale
 * gauges, and that /metrics renders from what is kept without asking.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/clock.h"
#include "events_metrics.h"
#include "ipc/bus.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define WAIT_MS     5000
#define INTERVAL_MS 100

typedef struct fixture {
    char dir[400];
    char ep[4][600]; /* queue 1, queue 2, queue 3 (nobody), auth */
    loop_t *loop;
    bus_t *bus; /* events' own */
    bus_t *qbus[2], *abus;
    bus_server_t *qsrv[2], *asrv;
    int stats_asked[2];
    evmetrics_t *m;
    endpoints_t ep_conf;
    char *queue_v[3], *auth_v[1];
} fixture_t;

static void queue_pong(PB(ServicePong) * pong, void *arg)
{
    int which = *(int *)arg;
    bus_pong_stat(pong, "messages", "%d", which == 1 ? 3 : 5);
    bus_pong_stat(pong, "scheduled", "%d", 2);
    bus_pong_stat(pong, "inflight", "%d", which == 1 ? 1 : 0);
    bus_pong_stat(pong, "store_bytes", "%s", "1.5e6");
}

static void auth_pong(PB(ServicePong) * pong, void *arg)
{
    (void)arg;
    bus_pong_stat(pong, "logins_ok", "%d", 42);
    bus_pong_stat(pong, "mode", "%s", "strict");  /* not a number: left out */
    bus_pong_stat(pong, "ratio", "%s", "-0.25");  /* a number */
    bus_pong_stat(pong, "hex", "%s", "0x10");     /* not a Prometheus number */
    bus_pong_stat(pong, "odd\"key\\", "%s", "7"); /* escaped in the label */
}

static int ids[2] = {1, 2};

static void queue_request(bus_server_t *srv, bus_msg_t *msg, void *arg)
{
    int which = *(int *)arg;
    if (msg->env->body_case != PB_BODY(QUEUE_STATS) || which == 2) {
        bus_server_error(srv, &msg->peer, msg->env->request_id, 500, "", "no stats here");
        return;
    }
    PB(QueueCount) c[2] = {PB_INIT(QUEUE_COUNT), PB_INIT(QUEUE_COUNT)};
    PB(QueueCount) * cp[2] = {&c[0], &c[1]};
    c[0].key = "queued", c[0].count = 4;
    c[1].key = "deferred", c[1].count = 6;
    PB(QueueStatsReply) rep = PB_INIT(QUEUE_STATS_REPLY);
    rep.messages = 3;
    rep.by_state = cp;
    rep.n_by_state = 2;
    rep.oldest_age_s = 321;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(QUEUE_STATS_REPLY);
    env.queue_stats_reply = &rep;
    bus_server_send(srv, &msg->peer, msg->env->request_id, &env, NULL);
}

static void auth_request(bus_server_t *srv, bus_msg_t *msg, void *arg)
{
    (void)arg;
    bus_server_error(srv, &msg->peer, msg->env->request_id, 400, "", "unexpected");
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    const char *base = getenv("SENDARIX_TEST_TMP");
    if (base == NULL || *base == '\0')
        base = "/tmp";
    mkdir(base, 0755);
    snprintf(f->dir, sizeof(f->dir), "%s/evmetrics-XXXXXX", base);
    if (mkdtemp(f->dir) == NULL)
        return -1;
    static const char *names[] = {"queue-1", "queue-2", "queue-3", "auth-1"};
    for (int i = 0; i < 4; i++)
        snprintf(f->ep[i], sizeof(f->ep[i]), "ipc://%s/%s.sock", f->dir, names[i]);
    f->loop = loop_new();
    f->bus = bus_new(f->loop, "events", "1");
    for (int i = 0; i < 2; i++) {
        f->qbus[i] = bus_new(f->loop, "queue", i ? "2" : "1");
        bus_set_stats(f->qbus[i], queue_pong, &ids[i]);
        f->qsrv[i] = bus_server_new(f->qbus[i], f->ep[i], queue_request, &ids[i]);
        if (f->qsrv[i] == NULL)
            return -1;
    }
    f->abus = bus_new(f->loop, "auth", "1");
    bus_set_stats(f->abus, auth_pong, NULL);
    f->asrv = bus_server_new(f->abus, f->ep[3], auth_request, NULL);
    if (f->asrv == NULL)
        return -1;
    for (int i = 0; i < 3; i++)
        f->queue_v[i] = f->ep[i];
    f->auth_v[0] = f->ep[3];
    f->ep_conf.queue.v = f->queue_v;
    f->ep_conf.queue.n = 3;
    f->ep_conf.auth.v = f->auth_v;
    f->ep_conf.auth.n = 1;
    f->m = evmetrics_new(f->bus, &f->ep_conf, INTERVAL_MS);
    if (f->m == NULL)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    evmetrics_destroy(&f->m);
    evmetrics_destroy(&f->m); /* safe twice */
    for (int i = 0; i < 2; i++) {
        bus_server_destroy(&f->qsrv[i]);
        bus_destroy(&f->qbus[i]);
    }
    bus_server_destroy(&f->asrv);
    bus_destroy(&f->abus);
    bus_destroy(&f->bus);
    loop_destroy(&f->loop);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", f->dir);
    free(f);
    return 0;
}

typedef struct waiter {
    fixture_t *f;
    uint64_t replies;
    uint64_t deadline;
    loop_timer_t t;
    int met;
} waiter_t;

static void check(loop_t *loop, void *arg)
{
    waiter_t *w = arg;
    if (evmetrics_replies(w->f->m) >= w->replies) {
        w->met = 1;
        loop_stop(loop);
    } else if (clock_mono_ms() > w->deadline) {
        loop_stop(loop);
    } else {
        loop_timer_start(loop, &w->t, 5);
    }
}

/* Run the loop until at least more replies (and timeouts) have come in. */
static void run_replies(fixture_t *f, uint64_t more)
{
    waiter_t w = {
        .f = f, .replies = evmetrics_replies(f->m) + more, .deadline = clock_mono_ms() + WAIT_MS};
    loop_timer_init(&w.t, check, &w);
    loop_timer_start(f->loop, &w.t, 0);
    loop_run(f->loop);
    loop_timer_stop(f->loop, &w.t);
    if (!w.met)
        fail_msg("fewer than %llu replies within %d ms", (unsigned long long)more, WAIT_MS);
}

static char *render(fixture_t *f)
{
    buf_t b;
    buf_init(&b, 1 << 20);
    evmetrics_render(f->m, &b);
    buf_append(&b, "", 1);
    size_t len;
    return buf_steal(&b, &len);
}

static void has(const char *text, const char *line)
{
    if (strstr(text, line) == NULL)
        fail_msg("/metrics lacks \"%s\":\n%s", line, text);
}

static void lacks(const char *text, const char *part)
{
    if (strstr(text, part) != NULL)
        fail_msg("/metrics should not have \"%s\":\n%s", part, text);
}

static void test_render(void **state)
{
    fixture_t *f = *state;
    /* before any answer every endpoint is down, and nothing else is claimed */
    char *text = render(f);
    has(text, "# TYPE sendarix_up gauge\n");
    has(text, "sendarix_up{service=\"queue\",instance=\"1\"} 0\n");
    lacks(text, "sendarix_queue_messages{");
    free(text);

    /* two rounds: 2 pings + 2 stats answered each (the third queue fails to send) */
    run_replies(f, 10);
    text = render(f);
    has(text, "sendarix_up{service=\"queue\",instance=\"1\"} 1\n");
    has(text, "sendarix_up{service=\"queue\",instance=\"2\"} 1\n");
    has(text, "sendarix_up{service=\"queue\",instance=\"3\"} 0\n");
    has(text, "sendarix_up{service=\"auth\",instance=\"1\"} 1\n");
    has(text, "# TYPE sendarix_queue_messages gauge\n");
    has(text, "sendarix_queue_messages{instance=\"1\"} 3\n");
    has(text, "sendarix_queue_messages{instance=\"2\"} 5\n");
    has(text, "sendarix_queue_scheduled{instance=\"1\"} 2\n");
    has(text, "sendarix_queue_inflight{instance=\"1\"} 1\n");
    has(text, "sendarix_queue_oldest_age_seconds{instance=\"1\"} 321\n");
    has(text, "sendarix_queue_recipients{instance=\"1\",state=\"queued\"} 4\n");
    has(text, "sendarix_queue_recipients{instance=\"1\",state=\"deferred\"} 6\n");
    /* queue 2 refused QueueStats: no age or recipients for it, and none for the absent one */
    lacks(text, "sendarix_queue_oldest_age_seconds{instance=\"2\"}");
    lacks(text, "sendarix_queue_recipients{instance=\"2\"");
    lacks(text, "{instance=\"3\"}");
    has(text, "sendarix_service_stat{service=\"auth\",instance=\"1\",stat=\"logins_ok\"} 42\n");
    has(text, "sendarix_service_stat{service=\"auth\",instance=\"1\",stat=\"ratio\"} -0.25\n");
    has(text, "sendarix_service_stat{service=\"auth\",instance=\"1\",stat=\"odd\\\"key\\\\\"} 7\n");
    has(text,
        "sendarix_service_stat{service=\"queue\",instance=\"2\",stat=\"store_bytes\"} 1.5e6\n");
    lacks(text, "stat=\"mode\"");
    lacks(text, "stat=\"hex\"");
    /* every family is declared once */
    const char *p = text;
    int types = 0;
    while ((p = strstr(p, "# TYPE sendarix_service_stat ")) != NULL) {
        types++;
        p++;
    }
    assert_int_equal(types, 1);
    free(text);

    /* queue 1 goes away: down at the next round, and its gauges are gone */
    bus_server_destroy(&f->qsrv[0]);
    uint64_t t0 = clock_mono_ms();
    for (;;) {
        run_replies(f, 1);
        text = render(f);
        if (strstr(text, "sendarix_up{service=\"queue\",instance=\"1\"} 0\n"))
            break;
        free(text);
        if (clock_mono_ms() - t0 > WAIT_MS)
            fail_msg("queue 1 never reported down");
    }
    lacks(text, "sendarix_queue_messages{instance=\"1\"}");
    lacks(text, "sendarix_queue_oldest_age_seconds{instance=\"1\"}");
    lacks(text, "service=\"queue\",instance=\"1\",stat=");
    has(text, "sendarix_queue_messages{instance=\"2\"} 5\n");
    free(text);
}

/* No metrics object: nothing rendered, nothing crashes. */
static void test_none(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, 1024);
    evmetrics_render(NULL, &b);
    assert_int_equal(buf_used(&b), 0);
    buf_free(&b);
    assert_int_equal(evmetrics_replies(NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_render, setup, teardown),
        cmocka_unit_test(test_none),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
