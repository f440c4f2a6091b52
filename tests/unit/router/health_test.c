/*
 * health_test: endpoint states and task plans, with time passed in. An
 * endpoint that refuses is down at once and listed last; a result without
 * attempts is read in delivery's order (endpoints before the one that
 * answered failed); the probe comes after the back-off, lists the down
 * endpoint first, doubles the back-off when it fails and marks the
 * endpoint up when it works; with every endpoint down the plan is refused
 * with the earliest probe time, and only one probe per endpoint goes out;
 * drained endpoints are never listed; a 421 that is not a slow-down marks
 * an endpoint down, a rate reply does not; with attempts, an endpoint is up
 * when any of its addresses worked, and a skipped address says nothing.
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
#include "router_health.h"
#include "router_route.h"

static const conf_field_t table[] = {
    {"routes", CONF_CUSTOM, 0, NULL, 0, 0, 0, route_table_parse, route_table_release, ""},
    {NULL},
};

typedef struct fx {
    route_table_t *routes;
    health_t *h;
    const route_t *pool; /* three endpoints */
    const route_t *mx;
} fx_t;

static fx_t *setup(void)
{
    fx_t *f = calloc(1, sizeof(*f));
    char err[512];
    conf_file_t *cf = conf_open_string(
        "t.conf",
        "router = { routes = (\n"
        " { name = \"mx\"; kind = \"mx\"; match = { recipient_domains = [\"mx.example\"]; }; },\n"
        " { name = \"pool\"; endpoints = [\"127.0.0.2:2526\", \"127.0.0.3:2526\", "
        "\"relay.example:25\"]; }\n"
        "); };",
        err, sizeof(err));
    assert_non_null(cf);
    assert_int_equal(conf_section(cf, "router", table, &f->routes, err, sizeof(err)), 0);
    conf_close(&cf);
    health_limits_t lim = {.probe_base_ms = 5000, .probe_max_ms = 300000};
    f->h = health_new(f->routes, &lim);
    f->mx = route_table_get(f->routes, 0);
    f->pool = route_table_get(f->routes, 1);
    return f;
}

static void teardown(fx_t *f)
{
    health_destroy(&f->h);
    route_table_destroy(&f->routes);
    free(f);
}

static const char *order(const fx_t *f, const health_plan_t *p, char *buf, size_t size)
{
    buf[0] = '\0';
    for (size_t i = 0; i < p->n; i++)
        snprintf(buf + strlen(buf), size - strlen(buf), "%s%s", i ? " " : "",
                 route_endpoint_name(f->pool, p->order[i]));
    return buf;
}

/* A result as delivery will send it: one attempt per endpoint tried. */
typedef struct att {
    const char *endpoint;
    int ok;
    unsigned code;
    const char *enh;
    const char *text;
} att_t;

static void result_attempts(fx_t *f, const health_plan_t *plan, uint64_t task, const att_t *a,
                            size_t n, uint64_t now)
{
    PB(Status) st[8];
    PB(DeliveryEndpointAttempt) at[8];
    PB(DeliveryEndpointAttempt) * ap[8];
    for (size_t i = 0; i < n; i++) {
        PB(Status) si = PB_INIT(STATUS);
        st[i] = si;
        st[i].code = a[i].code;
        st[i].enhanced = (char *)a[i].enh;
        st[i].text = (char *)a[i].text;
        PB(DeliveryEndpointAttempt) ai = PB_INIT(DELIVERY_ENDPOINT_ATTEMPT);
        at[i] = ai;
        at[i].endpoint = (char *)a[i].endpoint;
        at[i].ok = a[i].ok;
        at[i].status = &st[i];
        ap[i] = &at[i];
    }
    PB(Status) ok = PB_INIT(STATUS);
    ok.code = 250;
    ok.enhanced = "2.0.0";
    PB(DeliveryRecipientResult) rr = PB_INIT(DELIVERY_RECIPIENT_RESULT);
    rr.outcome = PB_ENUM(DELIVERY_RECIPIENT_RESULT__OUTCOME__DELIVERED);
    rr.reply = &ok;
    PB(DeliveryRecipientResult) *rp = &rr;
    PB(DeliveryResult) res = PB_INIT(DELIVERY_RESULT);
    res.recipients = &rp;
    res.n_recipients = 1;
    res.attempts = ap;
    res.n_attempts = n;
    health_result(f->h, f->pool, plan, task, &res, now);
}

/* A result without attempts: remote_host and one reply for the recipient. */
static void result_plain(fx_t *f, const health_plan_t *plan, uint64_t task, const char *host,
                         unsigned code, const char *enh, const char *text, uint64_t now)
{
    PB(Status) st = PB_INIT(STATUS);
    st.code = code;
    st.enhanced = (char *)enh;
    st.text = (char *)text;
    PB(DeliveryRecipientResult) rr = PB_INIT(DELIVERY_RECIPIENT_RESULT);
    rr.outcome = code / 100 == 2 ? PB_ENUM(DELIVERY_RECIPIENT_RESULT__OUTCOME__DELIVERED)
                                 : PB_ENUM(DELIVERY_RECIPIENT_RESULT__OUTCOME__DEFERRED);
    rr.reply = &st;
    PB(DeliveryRecipientResult) *rp = &rr;
    PB(DeliveryResult) res = PB_INIT(DELIVERY_RESULT);
    res.recipients = &rp;
    res.n_recipients = 1;
    res.remote_host = (char *)host;
    res.remote_ip = (char *)host;
    health_result(f->h, f->pool, plan, task, &res, now);
}

typedef struct seen {
    char line[8][200];
    size_t n;
} seen_t;

static void collect(const health_view_t *v, void *arg)
{
    seen_t *s = arg;
    if (s->n < 8)
        snprintf(s->line[s->n++], sizeof(s->line[0]),
                 "%s %s %s f=%u down=%llu probe=%llu "
                 "inflight=%u err=%s",
                 v->route, v->endpoint, v->state, v->failures, (unsigned long long)v->down_since,
                 (unsigned long long)v->next_probe, v->inflight, v->last_error);
}

static void test_down_failover_probe_up(void **state)
{
    (void)state;
    fx_t *f = setup();
    char b[256];
    health_plan_t p;
    uint64_t t = 1000000;

    /* a route without endpoints: nothing to plan, always allowed */
    assert_int_equal(health_plan(f->h, f->mx, t, &p), 0);
    assert_int_equal(p.n, 0);

    assert_int_equal(health_plan(f->h, f->pool, t, &p), 0);
    assert_string_equal(order(f, &p, b, sizeof(b)),
                        "127.0.0.2:2526 127.0.0.3:2526 relay.example:25");
    assert_false(p.probe);
    health_sent(f->h, f->pool, &p, 1, t);
    /* the first endpoint refused, the second took it */
    att_t a1[] = {{"127.0.0.2:2526", 0, 451, "4.4.1", "connection refused"},
                  {"127.0.0.3:2526", 1, 250, "2.0.0", "ok"}};
    result_attempts(f, &p, 1, a1, 2, t + 10);
    assert_int_equal(health_down_count(f->h), 1);

    /* the next task goes straight to the next endpoint; the down one is last */
    assert_int_equal(health_plan(f->h, f->pool, t + 20, &p), 0);
    assert_string_equal(order(f, &p, b, sizeof(b)),
                        "127.0.0.3:2526 relay.example:25 127.0.0.2:2526");
    assert_false(p.probe);

    seen_t s = {0};
    health_each(f->h, collect, &s);
    assert_int_equal(s.n, 3);
    assert_non_null(strstr(s.line[0], "pool 127.0.0.2:2526 down f=1 down=1000010 probe=1005010"));
    assert_non_null(strstr(s.line[0], "err=451 4.4.1 connection refused"));
    assert_non_null(strstr(s.line[1], "127.0.0.3:2526 up f=0"));

    /* 4999 ms after: still no probe; 5000 ms after: the probe lists it first */
    assert_int_equal(health_plan(f->h, f->pool, t + 10 + 4999, &p), 0);
    assert_false(p.probe);
    assert_int_equal(health_plan(f->h, f->pool, t + 10 + 5000, &p), 0);
    assert_true(p.probe);
    assert_string_equal(order(f, &p, b, sizeof(b)),
                        "127.0.0.2:2526 127.0.0.3:2526 relay.example:25");
    health_sent(f->h, f->pool, &p, 2, t + 5010);
    health_plan_t probe = p;
    /* while the probe is out, no second probe */
    assert_int_equal(health_plan(f->h, f->pool, t + 5020, &p), 0);
    assert_false(p.probe);
    assert_string_equal(order(f, &p, b, sizeof(b)),
                        "127.0.0.3:2526 relay.example:25 127.0.0.2:2526");

    /* the probe fails: back-off doubles to 10 s */
    att_t a2[] = {{"127.0.0.2:2526", 0, 451, "4.4.1", "timeout connecting"},
                  {"127.0.0.3:2526", 1, 250, "2.0.0", "ok"}};
    result_attempts(f, &probe, 2, a2, 2, t + 10000);
    assert_int_equal(health_plan(f->h, f->pool, t + 10000 + 9999, &p), 0);
    assert_false(p.probe);
    assert_int_equal(health_plan(f->h, f->pool, t + 20000, &p), 0);
    assert_true(p.probe);
    health_sent(f->h, f->pool, &p, 3, t + 20000);
    /* this probe works: up again, listed first in config order */
    att_t a3[] = {{"127.0.0.2:2526", 1, 250, "2.0.0", "ok"}};
    result_attempts(f, &p, 3, a3, 1, t + 20050);
    assert_int_equal(health_down_count(f->h), 0);
    assert_int_equal(health_plan(f->h, f->pool, t + 20060, &p), 0);
    assert_false(p.probe);
    assert_string_equal(order(f, &p, b, sizeof(b)),
                        "127.0.0.2:2526 127.0.0.3:2526 relay.example:25");
    memset(&s, 0, sizeof(s));
    health_each(f->h, collect, &s);
    assert_non_null(strstr(s.line[0], "up f=0 down=0 probe=0 inflight=0"));
    teardown(f);
}

static void test_backoff_caps(void **state)
{
    (void)state;
    fx_t *f = setup();
    health_plan_t p;
    uint64_t t = 0;
    assert_int_equal(health_plan(f->h, f->pool, t, &p), 0);
    health_sent(f->h, f->pool, &p, 1, t);
    att_t all[] = {{"127.0.0.2:2526", 0, 421, "4.3.2", "closing"},
                   {"127.0.0.3:2526", 0, 451, "4.4.1", "refused"},
                   {"relay.example:25", 0, 451, "4.4.3", "cannot resolve"}};
    result_attempts(f, &p, 1, all, 3, t);
    assert_int_equal(health_down_count(f->h), 3);
    /* probe after probe fails: 5, 10, 20, ... capped at 300 s */
    uint64_t want[] = {5000, 10000, 20000, 40000, 80000, 160000, 300000, 300000};
    uint64_t id = 2;
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        /* all three are probed in turn before any is due again */
        for (int k = 0; k < 3; k++) {
            int rc = health_plan(f->h, f->pool, t, &p);
            if (rc < 0)
                break;
            assert_true(p.probe);
            health_sent(f->h, f->pool, &p, id, t);
            att_t one[] = {{route_endpoint_name(f->pool, p.order[0]), 0, 451, "4.4.1", "x"}};
            result_attempts(f, &p, id, one, 1, t);
            id++;
        }
        assert_int_equal(health_plan(f->h, f->pool, t, &p), -1);
        if (p.retry_after_ms != want[i])
            fail_msg("round %zu: retry after %llu, want %llu", i,
                     (unsigned long long)p.retry_after_ms, (unsigned long long)want[i]);
        t += p.retry_after_ms;
    }
    teardown(f);
}

static void test_all_down_refused_with_earliest_probe(void **state)
{
    (void)state;
    fx_t *f = setup();
    health_plan_t p;
    uint64_t t = 50000;
    assert_int_equal(health_plan(f->h, f->pool, t, &p), 0);
    health_sent(f->h, f->pool, &p, 1, t);
    /* a result without attempts, answered by the last endpoint with a connection failure:
     * the two before it failed too */
    result_plain(f, &p, 1, "relay.example", 451, "4.4.1",
                 "connection to relay.example (192.0.2.9) failed: Connection refused", t);
    assert_int_equal(health_down_count(f->h), 3);
    assert_int_equal(health_plan(f->h, f->pool, t + 1000, &p), -1);
    assert_int_equal(p.retry_after_ms, 4000);
    assert_string_equal(p.why, "every endpoint of the route is down");
    /* when the time comes: one probe task per endpoint, then refusals again */
    int probes = 0;
    for (int i = 0; i < 5; i++) {
        if (health_plan(f->h, f->pool, t + 5000, &p) < 0)
            break;
        assert_true(p.probe);
        health_sent(f->h, f->pool, &p, 10 + (uint64_t)i, t + 5000);
        probes++;
    }
    assert_int_equal(probes, 3);
    assert_int_equal(health_plan(f->h, f->pool, t + 5001, &p), -1);
    /* a probe whose answer never comes: the endpoint is probed again after one back-off */
    assert_int_equal(p.retry_after_ms, 4999);
    teardown(f);
}

static void test_results_without_attempts(void **state)
{
    (void)state;
    fx_t *f = setup();
    health_plan_t p;
    char b[256];
    uint64_t t = 7;
    /* delivered by the second endpoint: the first failed before the transaction */
    assert_int_equal(health_plan(f->h, f->pool, t, &p), 0);
    health_sent(f->h, f->pool, &p, 1, t);
    result_plain(f, &p, 1, "127.0.0.3", 250, "2.0.0", "ok", t);
    assert_int_equal(health_down_count(f->h), 1);
    assert_int_equal(health_plan(f->h, f->pool, t, &p), 0);
    assert_string_equal(order(f, &p, b, sizeof(b)),
                        "127.0.0.3:2526 relay.example:25 127.0.0.2:2526");

    /* a recipient refused or deferred by the endpoint says nothing bad about it */
    health_sent(f->h, f->pool, &p, 2, t);
    result_plain(f, &p, 2, "127.0.0.3", 450, "4.2.1", "mailbox busy", t);
    result_plain(f, &p, 2, "127.0.0.3", 451, "4.4.2",
                 "connection lost while waiting for DATA reply from 127.0.0.3", t);
    assert_int_equal(health_down_count(f->h), 1);
    /* a slow-down 421 is the provider's business, not the endpoint's */
    result_plain(f, &p, 2, "127.0.0.3", 421, "4.7.0", "too many messages, slow down", t);
    assert_int_equal(health_down_count(f->h), 1);
    /* a 421 closing the channel, a greeting timeout, TLS: the endpoint failed */
    result_plain(f, &p, 2, "127.0.0.3", 421, "4.3.2", "Service not available", t);
    assert_int_equal(health_down_count(f->h), 2);
    result_plain(f, &p, 2, "relay.example", 451, "4.4.2", "timeout waiting for greeting from x", t);
    assert_int_equal(health_down_count(f->h), 3);
    /* unknown host: nothing learnt */
    result_plain(f, &p, 2, "elsewhere.example", 250, "2.0.0", "ok", t);
    assert_int_equal(health_down_count(f->h), 3);
    teardown(f);
}

static void test_endpoint_failure_classes(void **state)
{
    (void)state;
    static const struct {
        unsigned code;
        const char *enh, *text, *reason;
        int failure;
    } cases[] = {
        {451, "4.4.1", "connection refused", "", 1},
        {451, "4.4.1", "timeout connecting to h", "", 1},
        {451, "4.7.5", "TLS required: handshake failed", "", 1},
        {451, "4.4.3", "cannot resolve h", "", 1},
        {421, "4.3.2", "closing", "", 1},
        {421, "", "closing", "", 1},
        {421, "4.7.0", "slow down", "", 0},
        {421, "4.7.28", "rate limited", "", 0},
        {451, "4.4.2", "timeout waiting for EHLO reply from h", "", 1},
        {451, "4.4.2", "timeout waiting for end of data reply from h", "", 0},
        {451, "4.7.0", "authentication to h failed: 535 no", "", 1},
        {450, "4.2.1", "busy", "", 0},
        {550, "5.1.1", "unknown", "", 0},
        {250, "2.0.0", "ok", "", 0},
        {451, "4.3.0", "whatever", "network", 1},
        {451, "4.3.0", "whatever", "mailbox", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        PB(Status) st = PB_INIT(STATUS);
        st.code = cases[i].code;
        st.enhanced = (char *)cases[i].enh;
        st.text = (char *)cases[i].text;
        if (health_reply_is_endpoint_failure(&st, cases[i].reason) != cases[i].failure)
            fail_msg("case %zu: %u %s %s", i, cases[i].code, cases[i].enh, cases[i].text);
    }
}

static void test_attempts_per_endpoint(void **state)
{
    (void)state;
    fx_t *f = setup();
    health_plan_t p;
    char b[256];
    assert_int_equal(health_plan(f->h, f->pool, 0, &p), 0);
    health_sent(f->h, f->pool, &p, 1, 0);
    /* relay.example has two addresses: one refused, the other took it; the first endpoint's
     * only address is of a family the source cannot reach (skipped: says nothing) */
    att_t a[] = {{"127.0.0.2:2526", 0, 451, "4.4.4", "source address cannot reach it"},
                 {"127.0.0.3:2526", 0, 451, "4.4.1", "connection refused"},
                 {"relay.example:25", 0, 451, "4.4.1", "connection to relay.example (::1) refused"},
                 {"relay.example:25", 1, 250, "2.0.0", "ok"}};
    result_attempts(f, &p, 1, a, 4, 0);
    assert_int_equal(health_down_count(f->h), 1);
    assert_int_equal(health_plan(f->h, f->pool, 0, &p), 0);
    assert_string_equal(order(f, &p, b, sizeof(b)),
                        "127.0.0.2:2526 relay.example:25 127.0.0.3:2526");
    teardown(f);
}

static void test_drain(void **state)
{
    (void)state;
    fx_t *f = setup();
    health_plan_t p;
    char b[256];
    seen_t s = {0};
    assert_int_equal(health_drain(f->h, "", "127.0.0.2:2526", 1, collect, &s), 1);
    assert_non_null(strstr(s.line[0], "pool 127.0.0.2:2526 drained"));
    assert_int_equal(health_drain(f->h, "other", "127.0.0.3:2526", 1, NULL, NULL), 0);
    assert_int_equal(health_drain(f->h, NULL, "nowhere:25", 1, NULL, NULL), 0);
    assert_int_equal(health_plan(f->h, f->pool, 0, &p), 0);
    assert_string_equal(order(f, &p, b, sizeof(b)), "127.0.0.3:2526 relay.example:25");
    assert_int_equal(health_drain(f->h, "pool", "127.0.0.3:2526", 1, NULL, NULL), 1);
    assert_int_equal(health_drain(f->h, "pool", "RELAY.example:25", 1, NULL, NULL), 1);
    assert_int_equal(health_plan(f->h, f->pool, 0, &p), -1);
    assert_string_equal(p.why, "every endpoint of the route is drained");
    assert_int_equal(p.retry_after_ms, HEALTH_DRAINED_RETRY_MS);
    /* drained endpoints do not count as down */
    assert_int_equal(health_down_count(f->h), 0);
    assert_int_equal(health_drain(f->h, "pool", "127.0.0.2:2526", 0, NULL, NULL), 1);
    assert_int_equal(health_plan(f->h, f->pool, 0, &p), 0);
    assert_string_equal(order(f, &p, b, sizeof(b)), "127.0.0.2:2526");
    teardown(f);
}

static void test_inflight_and_lost_results(void **state)
{
    (void)state;
    fx_t *f = setup();
    health_plan_t p;
    assert_int_equal(health_plan(f->h, f->pool, 0, &p), 0);
    health_sent(f->h, f->pool, &p, 1, 0);
    health_sent(f->h, f->pool, &p, 2, 0);
    seen_t s = {0};
    health_each(f->h, collect, &s);
    assert_non_null(strstr(s.line[0], "inflight=2"));
    /* a lost task (no result) only gives its place back */
    health_result(f->h, f->pool, &p, 1, NULL, 5);
    memset(&s, 0, sizeof(s));
    health_each(f->h, collect, &s);
    assert_non_null(strstr(s.line[0], "up f=0 down=0 probe=0 inflight=1"));
    teardown(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_down_failover_probe_up),
        cmocka_unit_test(test_backoff_caps),
        cmocka_unit_test(test_all_down_refused_with_earliest_probe),
        cmocka_unit_test(test_results_without_attempts),
        cmocka_unit_test(test_endpoint_failure_classes),
        cmocka_unit_test(test_attempts_per_endpoint),
        cmocka_unit_test(test_drain),
        cmocka_unit_test(test_inflight_and_lost_results),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
