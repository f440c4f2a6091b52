/*
 * shape_test: provider profiles and destination arithmetic with time passed
 * in. A job's provider comes from its domain, else from the MX host learnt
 * for the domain (until it expires or is pushed out of the bounded cache),
 * else the default profile keyed by the domain; config profiles override
 * the built-ins field by field and bad ones are refused with their line.
 * The token bucket lets a burst of one second's worth through and then one
 * task per 60/rate seconds; connections cap tasks in flight; a slow-down
 * halves the rate (floor 1) and pauses for 60 s, doubling up to 15 min,
 * once per pause; the rate then grows 10 % per minute with a success until
 * it is back at the profile's.
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
#include "router_shape.h"

typedef struct conf {
    provider_table_t *providers;
} conf_t;

static const conf_field_t table[] = {
    {"providers", CONF_CUSTOM, offsetof(conf_t, providers), NULL, 0, 0, 0, provider_table_parse,
     provider_table_release, ""},
    {NULL},
};

static provider_table_t *load(const char *body, char *err, size_t errlen)
{
    char text[4096];
    snprintf(text, sizeof(text), "router = {\n%s\n};\n", body);
    conf_file_t *cf = conf_open_string("test.conf", text, err, errlen);
    if (cf == NULL)
        return NULL;
    conf_t c = {0};
    int rc = conf_section(cf, "router", table, &c, err, errlen);
    conf_close(&cf);
    return rc == 0 ? c.providers : NULL;
}

static const shape_limits_t limits = {.pause_base_ms = 60000,
                                      .pause_max_ms = 900000,
                                      .recover_interval_ms = 60000,
                                      .recover_step = 0.1,
                                      .mx_cache_max = 3,
                                      .mx_cache_ttl_ms = 3600000,
                                      .dests_max = 1000};

static void test_provider_matching(void **state)
{
    (void)state;
    provider_table_t *t = provider_table_builtin();
    shape_t *s = shape_new(t, &limits);
    char key[SHAPE_KEY_MAX];
    static const struct {
        const char *domain, *provider, *key;
    } cases[] = {
        {"gmail.com", "gmail", "gmail"},
        {"GoogleMail.COM", "gmail", "gmail"},
        {"gmail.com.", "gmail", "gmail"},
        {"mail.gmail.com", "default", "mail.gmail.com"}, /* the domain list is exact */
        {"hotmail.com", "outlook", "outlook"},
        {"msn.com", "outlook", "outlook"},
        {"aol.com", "yahoo", "yahoo"},
        {"me.com", "apple", "apple"},
        {"Example.ORG", "default", "example.org"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const provider_t *p = shape_classify(s, cases[i].domain, 0, key, sizeof(key));
        if (strcmp(p->name, cases[i].provider) != 0 || strcmp(key, cases[i].key) != 0)
            fail_msg("%s: got %s/%s, want %s/%s", cases[i].domain, p->name, key, cases[i].provider,
                     cases[i].key);
    }
    /* a domain hosted at a provider: learnt from delivery's MX host */
    uint64_t t0 = 1000;
    assert_string_equal(shape_classify(s, "corp.example", t0, key, sizeof(key))->name, "default");
    shape_learn_mx(s, "Corp.Example", "ASPMX.L.Google.COM.", t0);
    assert_string_equal(shape_mx_of(s, "corp.example", t0), "aspmx.l.google.com.");
    assert_string_equal(shape_classify(s, "corp.example", t0, key, sizeof(key))->name, "gmail");
    assert_string_equal(key, "gmail");
    shape_learn_mx(s, "m365.example", "m365-example.mail.protection.outlook.com", t0 + 1);
    assert_string_equal(shape_classify(s, "m365.example", t0 + 1, key, sizeof(key))->name,
                        "outlook");
    shape_learn_mx(s, "plain.example", "mx.plain.example", t0 + 2);
    assert_string_equal(shape_classify(s, "plain.example", t0 + 2, key, sizeof(key))->name,
                        "default");
    assert_string_equal(key, "plain.example");
    /* the cache is bounded: a fourth domain pushes out the oldest entry */
    shape_learn_mx(s, "y.example", "mx1.yahoodns.net", t0 + 10);
    assert_null(shape_mx_of(s, "corp.example", t0 + 10));
    assert_string_equal(shape_classify(s, "y.example", t0 + 10, key, sizeof(key))->name, "yahoo");
    /* and entries expire */
    assert_non_null(shape_mx_of(s, "m365.example", t0 + 1 + 3599999));
    assert_null(shape_mx_of(s, "m365.example", t0 + 1 + 3600000));
    assert_string_equal(shape_classify(s, "m365.example", t0 + 1 + 3600000, key, sizeof(key))->name,
                        "default");
    shape_destroy(&s);
    provider_table_destroy(&t);
}

static void test_config_profiles(void **state)
{
    (void)state;
    char err[1024] = "";
    provider_table_t *t = load(
        "providers = (\n"
        "  { name = \"gmail\"; rate_per_minute = 120; },\n"
        "  { name = \"corp\"; domains = [ \"corp.example\", \"*.corp.example\" ]; connections = 2; "
        "messages_per_connection = 5; rate_per_minute = 30.5; },\n"
        "  { name = \"default\"; connections = 4; }\n"
        ");",
        err, sizeof(err));
    if (t == NULL)
        fail_msg("%s", err);
    const provider_t *g = provider_find(t, "gmail");
    assert_int_equal((int)g->rate_per_minute, 120);
    assert_int_equal(g->connections, 20); /* kept from the built-in */
    assert_int_equal(g->ndomains, 2);
    assert_ptr_equal(provider_by_domain(t, "googlemail.com"), g);
    const provider_t *c = provider_by_domain(t, "eu.corp.example");
    assert_non_null(c);
    assert_string_equal(c->name, "corp");
    assert_int_equal(c->connections, 2);
    assert_int_equal(c->messages_per_connection, 5);
    assert_true(c->rate_per_minute > 30.4 && c->rate_per_minute < 30.6);
    assert_int_equal(provider_default(t)->connections, 4);
    assert_int_equal(provider_table_count(t), 6);
    provider_table_destroy(&t);

    /* absent: the built-ins */
    t = load("", err, sizeof(err));
    assert_non_null(t);
    assert_int_equal(provider_table_count(t), 5);
    assert_int_equal(provider_default(t)->messages_per_connection, 100);
    assert_int_equal(provider_find(t, "gmail")->messages_per_connection, 50);
    assert_int_equal(provider_find(t, "outlook")->messages_per_connection, 20);
    provider_table_destroy(&t);

    static const struct {
        const char *body, *needle1, *needle2;
    } bad[] = {
        {"providers = { name = \"x\"; };", "expected a list", NULL},
        {"providers = ( { name = \"x\"; } );", "providers[1].domains", "needs domains or mx"},
        {"providers = ( { domains = \"a.example\"; } );", "providers[1].name", "needs a name"},
        {"providers = ( { name = \"x y\"; domains = \"a.example\"; } );", "providers[1].name",
         "letters"},
        {"providers = ( { name = \"x\"; domains = \"not a domain\"; } );", "providers[1].domains",
         "not a domain"},
        {"providers = ( { name = \"gmail\"; connections = 0; } );", "providers[1].connections",
         "1..100000"},
        {"providers = ( { name = \"gmail\"; rate_per_minute = -1; } );",
         "providers[1].rate_per_minute", NULL},
        {"providers = ( { name = \"gmail\"; burst = 3; } );", "providers[1].burst",
         "unknown setting"},
        {"providers = ( { name = \"default\"; domains = \"a.example\"; } );",
         "providers[1].domains", "every other domain"},
        {"providers = ( { name = \"gmail\"; },\n { name = \"Gmail\"; } );", "providers[2].name",
         "already providers[1]"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        t = load(bad[i].body, err, sizeof(err));
        if (t != NULL)
            fail_msg("case %zu loaded", i);
        if (strstr(err, bad[i].needle1) == NULL ||
            (bad[i].needle2 && strstr(err, bad[i].needle2) == NULL))
            fail_msg("case %zu: \"%s\"", i, err);
        if (strncmp(err, "test.conf:", 10) != 0)
            fail_msg("case %zu: \"%s\" does not name the file", i, err);
    }
}

static void test_token_bucket_and_connections(void **state)
{
    (void)state;
    provider_table_t *t = provider_table_builtin();
    shape_t *s = shape_new(t, &limits);
    uint64_t now = 10000;
    const provider_t *gmail = provider_find(t, "gmail"); /* 600 a minute, 20 connections */
    dest_t *d = shape_dest(s, gmail, "gmail", "", now);
    assert_non_null(d);
    /* a burst of one second's worth: 10 tasks */
    for (int i = 0; i < 10; i++) {
        assert_int_equal(shape_wait(d, now), 0);
        shape_started(d, now);
    }
    assert_int_equal(shape_wait(d, now), 100); /* then one per 100 ms */
    assert_int_equal(shape_wait(d, now + 99), 1);
    assert_int_equal(shape_wait(d, now + 100), 0);
    shape_started(d, now + 100);
    assert_int_equal(shape_wait(d, now + 100), 100);
    /* a long quiet time refills no more than the burst */
    now += 600000;
    for (int i = 0; i < 9; i++) {
        assert_int_equal(shape_wait(d, now), 0);
        shape_started(d, now);
    }
    /* 20 in flight now: the connections are the limit */
    assert_int_equal(dest_inflight(d), 20);
    assert_true(shape_wait(d, now + 100000) == SHAPE_WAIT_SLOT);
    shape_finished(d, 1, now + 100000);
    assert_int_equal(shape_wait(d, now + 100000), 0);

    /* the same provider from a source address is a destination of its own */
    dest_t *d2 = shape_dest(s, gmail, "gmail", "192.0.2.1", now);
    assert_ptr_not_equal(d, d2);
    assert_string_equal(dest_key(d2), "gmail/192.0.2.1");
    assert_int_equal(shape_wait(d2, now), 0);

    /* a rate of 30 a minute: a burst of one, then one per 2 s */
    char err[256];
    provider_table_t *t2 = load("providers = ( { name = \"slow\"; domains = \"slow.example\"; "
                                "rate_per_minute = 30; connections = 100; } );",
                                err, sizeof(err));
    assert_non_null(t2);
    shape_t *s2 = shape_new(t2, &limits);
    dest_t *d3 = shape_dest(s2, provider_find(t2, "slow"), "slow", "", 0);
    assert_int_equal(shape_wait(d3, 0), 0);
    shape_started(d3, 0);
    assert_int_equal(shape_wait(d3, 0), 2000);
    assert_int_equal(shape_wait(d3, 1500), 500);
    /* the default profile has no rate: only its connections count */
    dest_t *d4 = shape_dest(s2, provider_default(t2), "example.org", "", 0);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(shape_wait(d4, 0), 0);
        shape_started(d4, 0);
    }
    assert_true(shape_wait(d4, 0) == SHAPE_WAIT_SLOT);
    shape_destroy(&s2);
    provider_table_destroy(&t2);
    shape_destroy(&s);
    provider_table_destroy(&t);
}

typedef struct row {
    char text[400];
} row_t;

static void grab(const dest_view_t *v, void *arg)
{
    row_t *r = arg;
    if (strcmp(v->key, "gmail") == 0)
        snprintf(r->text, sizeof(r->text), "%s %s paused=%llu rate=%.1f conns=%u inflight=%u %s",
                 v->key, v->provider, (unsigned long long)v->paused_until, v->rate_per_minute,
                 v->connection_limit, v->inflight, v->reason);
}

static void test_slowdown_and_recovery(void **state)
{
    (void)state;
    provider_table_t *t = provider_table_builtin();
    shape_t *s = shape_new(t, &limits);
    const provider_t *gmail = provider_find(t, "gmail");
    uint64_t now = 1000000;
    dest_t *d = shape_dest(s, gmail, "gmail", "", now);
    PB(Status) st = PB_INIT(STATUS);
    st.code = 421;
    st.enhanced = "4.7.28";
    st.text = "rate limited";
    assert_int_equal(shape_slowdown(s, d, &st, now), 1);
    assert_true(dest_rate(d) == 300);
    assert_int_equal(shape_wait(d, now), 60000);
    assert_int_equal(shape_wait(d, now + 59999), 1);
    /* the other tasks in flight answer the same: no second halving */
    assert_int_equal(shape_slowdown(s, d, &st, now + 10), 0);
    assert_true(dest_rate(d) == 300);
    assert_int_equal(shape_paused_count(s, now + 10), 1);
    row_t r = {""};
    shape_each(s, now + 10, grab, &r);
    assert_string_equal(r.text, "gmail gmail paused=1060000 rate=300.0 conns=20 inflight=0 "
                                "421 4.7.28 rate limited");
    /* after the pause it runs at the lower rate: 5 a second */
    now += 60000;
    assert_int_equal(shape_wait(d, now), 0);
    assert_int_equal(shape_paused_count(s, now), 0);
    /* a second slow-down soon after: half again, twice as long */
    assert_int_equal(shape_slowdown(s, d, &st, now), 1);
    assert_true(dest_rate(d) == 150);
    assert_int_equal(shape_wait(d, now), 120000);
    now += 120000;
    /* pauses double up to 15 minutes; the rate stops at 1 a minute */
    uint64_t want[] = {240000, 480000, 900000, 900000, 900000, 900000, 900000, 900000, 900000};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        assert_int_equal(shape_slowdown(s, d, &st, now), 1);
        if (shape_wait(d, now) != want[i])
            fail_msg("pause %zu: %llu, want %llu", i, (unsigned long long)shape_wait(d, now),
                     (unsigned long long)want[i]);
        now += want[i];
    }
    assert_true(dest_rate(d) == 1);

    /* recovery: +10 % (at least +1) per minute that saw a success, none for a quiet minute */
    now += 60000; /* the first step is a minute after the pause ended */
    shape_wait(d, now);
    assert_true(dest_rate(d) == 1);
    shape_started(d, now);
    shape_finished(d, 1, now + 1);
    now += 60000;
    shape_wait(d, now);
    assert_true(dest_rate(d) == 2);
    double rate = 2;
    int steps = 0;
    while (dest_rate(d) < 600 && steps < 200) {
        shape_finished(d, 1, now);
        now += 60000;
        shape_wait(d, now);
        double next = rate * 1.1 < rate + 1 ? rate + 1 : rate * 1.1;
        if (next >= 600)
            next = 600;
        if (dest_rate(d) < next - 0.001 || dest_rate(d) > next + 0.001)
            fail_msg("step %d: rate %.3f, want %.3f", steps, dest_rate(d), next);
        rate = next;
        steps++;
    }
    assert_true(dest_rate(d) == 600);
    assert_true(steps > 40 && steps < 100);
    r.text[0] = '\0';
    shape_each(s, now, grab, &r);
    assert_string_equal(r.text, "gmail gmail paused=0 rate=600.0 conns=20 inflight=0 ");
    /* recovered: the next slow-down starts again at a 60 s pause */
    assert_int_equal(shape_slowdown(s, d, &st, now), 1);
    assert_int_equal(shape_wait(d, now), 60000);
    shape_destroy(&s);
    provider_table_destroy(&t);
}

static void test_slowdown_without_rate(void **state)
{
    (void)state;
    provider_table_t *t = provider_table_builtin();
    shape_t *s = shape_new(t, &limits);
    dest_t *d = shape_dest(s, provider_default(t), "example.org", "", 0);
    for (int i = 0; i < 8; i++) {
        shape_started(d, (uint64_t)i);
        shape_finished(d, 1, (uint64_t)i);
    }
    PB(Status) st = PB_INIT(STATUS);
    st.code = 452;
    st.enhanced = "4.5.3";
    st.text = "too many recipients";
    assert_int_equal(shape_slowdown(s, d, &st, 100), 1);
    /* it took 8 in the last minute: now 4 a minute */
    assert_true(dest_rate(d) == 4);
    assert_int_equal(shape_wait(d, 100), 60000);
    /* recovery climbs back to what it took, then the limit goes away again */
    uint64_t now = 60100 + 60000;
    for (int i = 0; i < 10 && dest_rate(d) > 0; i++) {
        shape_finished(d, 1, now);
        now += 60000;
        shape_wait(d, now);
    }
    assert_true(dest_rate(d) == 0);
    shape_destroy(&s);
    provider_table_destroy(&t);
}

static void test_slowdown_replies(void **state)
{
    (void)state;
    static const struct {
        unsigned code;
        const char *enh, *text, *reason;
        int slow;
    } cases[] = {
        {421, "4.7.0", "Try again later, closing connection", "", 1},
        {421, "4.7.28", "Our system has detected an unusual rate", "", 1},
        {550, "5.7.28", "Our system has detected an unusual rate", "", 1},
        {451, "4.7.500", "Server busy, rate limit exceeded", "", 1},
        {450, "4.7.1", "Too many connections", "", 1},
        {450, "4.7.1", "greylisted, try again", "", 0},
        {451, "4.7.1", "Service unavailable, Client host blocked", "", 0},
        {452, "4.5.3", "Too many recipients", "", 1},
        {452, "4.2.2", "Mailbox full", "", 0},
        {421, "4.3.2", "Service not available", "", 0},
        {451, "4.3.0", "whatever", "rate", 1},
        {250, "2.0.0", "ok", "", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        PB(Status) st = PB_INIT(STATUS);
        st.code = cases[i].code;
        st.enhanced = (char *)cases[i].enh;
        st.text = (char *)cases[i].text;
        if (shape_reply_is_slowdown(&st, cases[i].reason) != cases[i].slow)
            fail_msg("case %zu: %u %s %s", i, cases[i].code, cases[i].enh, cases[i].text);
    }
    assert_false(shape_reply_is_slowdown(NULL, NULL));
}

static void count_rows(const dest_view_t *v, void *arg)
{
    (void)v;
    (*(size_t *)arg)++;
}

static void test_sweep(void **state)
{
    (void)state;
    provider_table_t *t = provider_table_builtin();
    shape_t *s = shape_new(t, &limits);
    size_t n = 0;
    shape_each(s, 0, count_rows, &n);
    assert_int_equal(n, 4); /* a row per named profile from the start */
    dest_t *d = shape_dest(s, provider_default(t), "a.example", "", 0);
    shape_started(d, 0);
    shape_dest(s, provider_default(t), "b.example", "", 0);
    dest_t *c = shape_dest(s, provider_default(t), "c.example", "", 0);
    PB(Status) st = PB_INIT(STATUS);
    st.code = 421;
    st.enhanced = "4.7.0";
    assert_int_equal(shape_slowdown(s, c, &st, 0), 1);
    n = 0;
    shape_each(s, 0, count_rows, &n);
    assert_int_equal(n, 7);
    /* ten idle minutes: b goes; a is busy, c is still slowed, the named profiles stay */
    shape_sweep(s, 10 * 60000);
    n = 0;
    shape_each(s, 10 * 60000, count_rows, &n);
    assert_int_equal(n, 6);
    assert_ptr_equal(shape_dest(s, provider_default(t), "a.example", "", 10 * 60000), d);
    assert_ptr_equal(shape_dest(s, provider_default(t), "c.example", "", 10 * 60000), c);
    shape_destroy(&s);
    provider_table_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_provider_matching),
        cmocka_unit_test(test_config_profiles),
        cmocka_unit_test(test_token_bucket_and_connections),
        cmocka_unit_test(test_slowdown_and_recovery),
        cmocka_unit_test(test_slowdown_without_rate),
        cmocka_unit_test(test_slowdown_replies),
        cmocka_unit_test(test_sweep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
