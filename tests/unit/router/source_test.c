/*
 * source_test: source address pools with a fixed random seed. Picks follow
 * the weights; a route's pool wins over the tenant's; a warming address
 * takes its day's allowance per provider (50 on day 1, doubling each day)
 * and no more, and no failover traffic while a warm address exists; a
 * block or rate reply deprioritizes an address for that destination (its
 * weight a tenth) until the time runs out; no room anywhere means wait,
 * no eligible address means come back later; counts go to the store and
 * come back from it; bad pool configs are refused with their line.
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
#include "router_source.h"

#define DAY SOURCE_DAY_MS

typedef struct conf {
    pool_table_t *pools;
    tenant_pools_t *tenants;
} conf_t;

static const conf_field_t table[] = {
    {"source_pools", CONF_CUSTOM, offsetof(conf_t, pools), NULL, 0, 0, 0, pool_table_parse,
     pool_table_release, ""},
    {"tenant_pools", CONF_CUSTOM, offsetof(conf_t, tenants), NULL, 0, 0, 0, tenant_pools_parse,
     tenant_pools_release, ""},
    {NULL},
};

static int load(const char *body, conf_t *c, char *err, size_t errlen)
{
    char text[4096];
    snprintf(text, sizeof(text), "router = {\n%s\n};\n", body);
    conf_file_t *cf = conf_open_string("test.conf", text, err, errlen);
    if (cf == NULL)
        return -1;
    memset(c, 0, sizeof(*c));
    int rc = conf_section(cf, "router", table, c, err, errlen);
    conf_close(&cf);
    return rc;
}

static const source_limits_t limits = {.warmup_first_day = 50,
                                       .warmup_ready = 100000,
                                       .deprioritize_ms = 1800000,
                                       .deprioritize_divisor = 10};

static const char *config =
    "source_pools = (\n"
    "  { name = \"main\"; addresses = (\n"
    "      { address = \"192.0.2.1\"; weight = 10; },\n"
    "      { address = \"192.0.2.2\"; weight = 30; },\n"
    "      { address = \"192.0.2.3\"; weight = 10; warmup = true; warmup_start = \"2026-11-20\"; } "
    "); },\n"
    "  { name = \"cold\"; addresses = ( { address = \"2001:DB8::9\"; warmup = true; } ); }\n"
    ");\n"
    "tenant_pools = ( { tenant = \"demo\"; pool = \"cold\"; } );";

typedef struct fx {
    conf_t c;
    source_t *s;
    const source_pool_t *main, *cold;
} fx_t;

static fx_t *setup(void)
{
    fx_t *f = calloc(1, sizeof(*f));
    char err[1024];
    if (load(config, &f->c, err, sizeof(err)) < 0)
        fail_msg("%s", err);
    f->s = source_new(f->c.pools, f->c.tenants, &limits, 42);
    f->main = pool_find(f->c.pools, "main");
    f->cold = pool_find(f->c.pools, "cold");
    return f;
}

static void teardown(fx_t *f)
{
    source_destroy(&f->s);
    pool_table_destroy(&f->c.pools);
    tenant_pools_destroy(&f->c.tenants);
    free(f);
}

/* 2026-11-20 00:00 UTC, the warm-up start of 192.0.2.3 */
static const uint64_t day1 = 20777ull * DAY;

static size_t draw(fx_t *f, const source_pool_t *p, const char *provider, int failover,
                   uint64_t now, uint64_t wall, size_t n, size_t counts[3], int count_sent)
{
    size_t picked = 0;
    counts[0] = counts[1] = counts[2] = 0;
    for (size_t i = 0; i < n; i++) {
        source_pick_t pick;
        source_pick(f->s, p, provider, provider, failover, now, wall, NULL, NULL, &pick);
        if (pick.status != SOURCE_PICKED)
            break;
        picked++;
        for (size_t k = 0; k < p->n && k < 3; k++)
            if (strcmp(pick.ip, p->addrs[k].ip) == 0)
                counts[k]++;
        if (count_sent)
            source_sent(f->s, pick.ip, provider, wall);
    }
    return picked;
}

static void test_weights_and_pool_choice(void **state)
{
    (void)state;
    fx_t *f = setup();
    assert_ptr_equal(source_pool_for(f->s, "main", "demo"), f->main); /* the route's first */
    assert_ptr_equal(source_pool_for(f->s, "", "DEMO"), f->cold);
    assert_null(source_pool_for(f->s, "", "other"));
    assert_string_equal(f->cold->addrs[0].ip, "2001:db8::9"); /* stored normalised */

    /* the warming third address is 10 days old: allowance 50 << 10 = 51200 a day */
    uint64_t wall = day1 + 10 * DAY;
    assert_int_equal(source_allowance(f->s, "192.0.2.3", wall), 51200);
    size_t c[3];
    assert_int_equal(draw(f, f->main, "gmail", 0, 0, wall, 5000, c, 0), 5000);
    /* weights 10, 30, 10 */
    assert_in_range(c[0], 900, 1100);
    assert_in_range(c[1], 2800, 3200);
    assert_in_range(c[2], 900, 1100);

    /* the same seed gives the same sequence */
    source_t *a = source_new(f->c.pools, NULL, &limits, 7),
             *b = source_new(f->c.pools, NULL, &limits, 7);
    for (int i = 0; i < 50; i++) {
        source_pick_t pa, pb;
        source_pick(a, f->main, "x", "x", 0, 0, wall, NULL, NULL, &pa);
        source_pick(b, f->main, "x", "x", 0, 0, wall, NULL, NULL, &pb);
        assert_string_equal(pa.ip, pb.ip);
    }
    source_destroy(&a);
    source_destroy(&b);
    teardown(f);
}

static void test_warmup(void **state)
{
    (void)state;
    fx_t *f = setup();
    /* allowance per day of age, until it reaches warmup_ready */
    static const uint64_t want[] = {50, 100, 200, 400, 800};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(source_allowance(f->s, "192.0.2.3", day1 + i * DAY + 5), want[i]);
    assert_int_equal(source_allowance(f->s, "192.0.2.3", day1 + 11 * DAY), 0); /* 102400: warm */
    assert_int_equal(source_allowance(f->s, "192.0.2.1", day1), 0);            /* never warming */

    /* day 1: the warming address takes 50 tasks to gmail, then no more */
    uint64_t wall = day1 + 3600000;
    size_t c[3];
    draw(f, f->main, "gmail", 0, 0, wall, 2000, c, 1);
    assert_int_equal(c[2], 50);
    assert_int_equal(source_sent_today(f->s, "192.0.2.3", "gmail", wall), 50);
    /* per provider: outlook has its own 50 */
    draw(f, f->main, "outlook", 0, 0, wall, 2000, c, 1);
    assert_int_equal(c[2], 50);
    /* the next day the count starts over, with twice the allowance */
    draw(f, f->main, "gmail", 0, 0, wall + DAY, 4000, c, 1);
    assert_int_equal(c[2], 100);

    /* retries never go to a warming address while a warm one exists */
    draw(f, f->main, "yahoo", 1, 0, wall, 500, c, 1);
    assert_int_equal(c[2], 0);
    assert_int_equal(c[0] + c[1], 500);

    /* a pool of warming addresses only: retries use it rather than nothing */
    source_begin(f->s, day1);
    assert_int_equal(source_allowance(f->s, "2001:db8::9", day1), 50);
    assert_int_equal(draw(f, f->cold, "gmail", 1, 0, day1, 100, c, 1), 50);
    source_pick_t pick;
    source_pick(f->s, f->cold, "gmail", "gmail", 0, 0, day1 + 1000, NULL, NULL, &pick);
    assert_int_equal(pick.status, SOURCE_NONE);
    assert_int_equal(pick.wait_ms, DAY - 1000); /* until the next UTC day */
    assert_non_null(strstr(pick.why, "warm-up allowance"));
    teardown(f);
}

static void test_deprioritization(void **state)
{
    (void)state;
    fx_t *f = setup();
    uint64_t wall = day1 + 2 * DAY, now = 5000; /* the third address is still warming */
    PB(Status) block = PB_INIT(STATUS);
    block.code = 550;
    block.enhanced = "5.7.1";
    block.text = "Service unavailable; client host [192.0.2.2] blocked using a DNS block list";
    assert_int_equal(source_reply_is_block(&block, ""), 1);
    assert_int_equal(source_reply(f->s, "192.0.2.2", "gmail", &block, "", now), 1);
    assert_int_equal(source_reply(f->s, "192.0.2.2", "gmail", &block, "", now + 1), 0);
    assert_true(source_deprioritized(f->s, "192.0.2.2", "gmail", now));
    assert_false(source_deprioritized(f->s, "192.0.2.2", "outlook", now));
    size_t c[3];
    /* weights now 10 and 3 (30/10); the warming third takes no traffic moved off an address */
    draw(f, f->main, "gmail", 0, now, wall, 2600, c, 0);
    assert_in_range(c[1], 450, 750);
    assert_in_range(c[0], 1850, 2150);
    assert_int_equal(c[2], 0);
    /* other providers are not affected */
    draw(f, f->main, "outlook", 0, now, wall, 5000, c, 0);
    assert_in_range(c[1], 2800, 3200);
    /* a rate reply does the same; an ordinary bounce does not */
    PB(Status) rate = PB_INIT(STATUS);
    rate.code = 421;
    rate.enhanced = "4.7.28";
    rate.text = "rate limited";
    PB(Status) unknown = PB_INIT(STATUS);
    unknown.code = 550;
    unknown.enhanced = "5.1.1";
    unknown.text = "no such user";
    PB(Status) policy = PB_INIT(STATUS);
    policy.code = 550;
    policy.enhanced = "5.7.1";
    policy.text = "message refused: content";
    assert_int_equal(source_reply(f->s, "192.0.2.1", "outlook", &unknown, "", now), 0);
    assert_int_equal(source_reply(f->s, "192.0.2.1", "outlook", &policy, "policy", now), 0);
    assert_int_equal(source_reply(f->s, "192.0.2.1", "outlook", &rate, "", now), 1);
    assert_int_equal(source_reply(f->s, "198.51.100.1", "outlook", &rate, "", now),
                     0); /* not ours */
    /* 30 minutes after the last such reply it is back */
    assert_true(source_deprioritized(f->s, "192.0.2.2", "gmail", now + 1 + 1799999));
    assert_false(source_deprioritized(f->s, "192.0.2.2", "gmail", now + 1 + 1800000));
    teardown(f);
}

static uint64_t room(const char *ip, void *arg)
{
    (void)arg;
    return strcmp(ip, "192.0.2.2") == 0 ? 0 : strcmp(ip, "192.0.2.1") == 0 ? 700 : 300;
}

static uint64_t no_room(const char *ip, void *arg)
{
    (void)arg;
    return strcmp(ip, "192.0.2.1") == 0 ? 800 : 250;
}

static void test_room(void **state)
{
    (void)state;
    fx_t *f = setup();
    uint64_t wall = day1 + 20 * DAY;
    for (int i = 0; i < 20; i++) {
        source_pick_t pick;
        source_pick(f->s, f->main, "gmail", "gmail", 0, 0, wall, room, NULL, &pick);
        assert_int_equal(pick.status, SOURCE_PICKED);
        assert_string_equal(pick.ip, "192.0.2.2");
    }
    source_pick_t pick;
    source_pick(f->s, f->main, "gmail", "gmail", 0, 0, wall, no_room, NULL, &pick);
    assert_int_equal(pick.status, SOURCE_WAIT);
    assert_int_equal(pick.wait_ms, 250);

    /* deprioritized, 192.0.2.2 keeps its small share but takes no overflow: with the others
     * busy, a task waits rather than leave from it, unless the draw picked it (3 in 23) */
    PB(Status) rate = PB_INIT(STATUS);
    rate.code = 421;
    rate.enhanced = "4.7.28";
    rate.text = "rate limited";
    assert_int_equal(source_reply(f->s, "192.0.2.2", "gmail", &rate, "", 0), 1);
    size_t picked = 0, waited = 0;
    for (int i = 0; i < 2300; i++) {
        source_pick(f->s, f->main, "gmail", "gmail", 0, 0, wall, room, NULL, &pick);
        if (pick.status == SOURCE_PICKED) {
            assert_string_equal(pick.ip, "192.0.2.2");
            picked++;
        } else {
            assert_int_equal(pick.status, SOURCE_WAIT);
            assert_true(pick.wait_ms == 300 || pick.wait_ms == 700);
            waited++;
        }
    }
    assert_in_range(picked, 200, 400);
    teardown(f);
}

typedef struct store {
    char lines[16][128];
    size_t n;
} store_t;

static void keep_count(const char *ip, const char *provider, uint32_t day, uint64_t count,
                       void *arg)
{
    store_t *s = arg;
    snprintf(s->lines[s->n++], sizeof(s->lines[0]), "count %s %s %u %llu", ip, provider, day,
             (unsigned long long)count);
}

static void keep_start(const char *ip, uint32_t day, void *arg)
{
    store_t *s = arg;
    snprintf(s->lines[s->n++], sizeof(s->lines[0]), "start %s %u", ip, day);
}

static int has(const store_t *s, const char *line)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->lines[i], line) == 0)
            return 1;
    return 0;
}

static void test_changes_and_restore(void **state)
{
    (void)state;
    fx_t *f = setup();
    store_t st = {0};
    /* the cold address starts its warm-up on the first day the router runs with it */
    source_begin(f->s, day1 + 5 * DAY + 99);
    source_sent(f->s, "192.0.2.3", "gmail", day1 + 5 * DAY);
    source_sent(f->s, "192.0.2.3", "gmail", day1 + 5 * DAY);
    source_sent(f->s, "192.0.2.1", "gmail", day1 + 5 * DAY); /* warm: not counted */
    assert_int_equal(source_take_changes(f->s, keep_count, keep_start, &st), 2);
    assert_true(has(&st, "count 192.0.2.3 gmail 20782 2"));
    assert_true(has(&st, "start 2001:db8::9 20782"));
    /* nothing new: nothing handed */
    memset(&st, 0, sizeof(st));
    assert_int_equal(source_take_changes(f->s, keep_count, keep_start, &st), 0);
    /* a failed write puts everything back */
    source_mark_all_dirty(f->s);
    assert_int_equal(source_take_changes(f->s, keep_count, keep_start, &st), 3);

    /* a restart: counts and starts come back from the store */
    source_t *again = source_new(f->c.pools, f->c.tenants, &limits, 1);
    source_restore_count(again, "192.0.2.3", "gmail", 20782, 49);
    source_restore_count(again, "203.0.113.7", "gmail", 20782, 5); /* no longer listed */
    source_restore_start(again, "2001:db8::9", 20780);
    source_begin(again, day1 + 5 * DAY);
    assert_int_equal(source_sent_today(again, "192.0.2.3", "gmail", day1 + 5 * DAY), 49);
    assert_int_equal(source_allowance(again, "2001:db8::9", day1 + 5 * DAY), 200);
    memset(&st, 0, sizeof(st));
    assert_int_equal(source_take_changes(again, keep_count, keep_start, &st), 0);
    source_destroy(&again);
    teardown(f);
}

typedef struct rows {
    char line[16][200];
    size_t n;
} rows_t;

static void row(const source_view_t *v, void *arg)
{
    rows_t *r = arg;
    if (r->n < 16)
        snprintf(r->line[r->n++], sizeof(r->line[0]), "%s %s %s %s sent=%llu limit=%llu w=%u",
                 v->pool, v->address, v->provider[0] ? v->provider : "-", v->state,
                 (unsigned long long)v->sent_today, (unsigned long long)v->daily_limit, v->weight);
}

static void test_listing(void **state)
{
    (void)state;
    fx_t *f = setup();
    uint64_t wall = day1 + 2 * DAY;
    source_begin(f->s, wall);
    source_sent(f->s, "192.0.2.3", "gmail", wall);
    PB(Status) block = PB_INIT(STATUS);
    block.code = 554;
    block.enhanced = "5.7.1";
    block.text = "listed at a reputation service";
    source_reply(f->s, "192.0.2.2", "outlook", &block, "", 10);
    rows_t r = {0};
    source_each(f->s, 10, wall, row, &r);
    static const char *want[] = {
        "main 192.0.2.1 - ready sent=0 limit=0 w=10",
        "main 192.0.2.2 - ready sent=0 limit=0 w=30",
        "main 192.0.2.2 outlook deprioritized sent=0 limit=0 w=3",
        "main 192.0.2.3 - warming sent=1 limit=200 w=10",
        "main 192.0.2.3 gmail warming sent=1 limit=200 w=10",
        "cold 2001:db8::9 - warming sent=0 limit=50 w=10",
    };
    assert_int_equal(r.n, 6);
    for (size_t i = 0; i < 6; i++)
        if (strcmp(r.line[i], want[i]) != 0)
            fail_msg("row %zu: \"%s\", want \"%s\"", i, r.line[i], want[i]);
    teardown(f);
}

static void test_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *body, *needle1, *needle2;
    } bad[] = {
        {"source_pools = { name = \"a\"; };", "expected a list", NULL},
        {"source_pools = ( { name = \"a\"; } );", "source_pools[1].addresses", "needs a list"},
        {"source_pools = ( { addresses = ( { address = \"192.0.2.1\"; } ); } );",
         "source_pools[1].name", "empty"},
        {"source_pools = ( { name = \"a\"; addresses = ( { address = \"host.example\"; } ); } );",
         "source_pools[1].addresses[1].address", "numeric"},
        {"source_pools = ( { name = \"a\"; addresses = ( { address = \"192.0.2.1\"; weight = -1; } "
         "); } );",
         "addresses[1].weight", NULL},
        {"source_pools = ( { name = \"a\"; addresses = ( { address = \"192.0.2.1\"; weight = 0; } "
         "); } );",
         "source_pools[1].addresses", "never be used"},
        {"source_pools = ( { name = \"a\"; addresses = ( { address = \"192.0.2.1\"; }, "
         "{ address = \"192.0.2.1\"; } ); } );",
         "source_pools[1].addresses", "listed twice"},
        {"source_pools = ( { name = \"a\"; addresses = ( { address = \"192.0.2.1\"; warmup = 1; } "
         "); } );",
         "addresses[1].warmup", "true or false"},
        {"source_pools = ( { name = \"a\"; addresses = ( { address = \"192.0.2.1\"; "
         "warmup_start = \"2026-02-30\"; } ); } );",
         "addresses[1].warmup_start", "YYYY-MM-DD"},
        {"source_pools = ( { name = \"a\"; addresses = ( { address = \"192.0.2.1\"; ip = 1; } ); } "
         ");",
         "addresses[1].ip", "unknown setting"},
        {"source_pools = ( { name = \"a\"; addresses = ( { address = \"192.0.2.1\"; } ); },\n"
         " { name = \"a\"; addresses = ( { address = \"192.0.2.2\"; } ); } );",
         "source_pools[2].name", "listed twice"},
        {"tenant_pools = ( { tenant = \"t\"; } );", "tenant_pools[1].pool", "empty"},
        {"tenant_pools = ( { tenant = \"t\"; pool = \"a\"; }, { tenant = \"T\"; pool = \"b\"; } );",
         "tenant_pools[2].tenant", "listed twice"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[1024] = "";
        conf_t c;
        if (load(bad[i].body, &c, err, sizeof(err)) == 0)
            fail_msg("case %zu loaded", i);
        if (strstr(err, bad[i].needle1) == NULL ||
            (bad[i].needle2 && strstr(err, bad[i].needle2) == NULL))
            fail_msg("case %zu: \"%s\"", i, err);
        if (strncmp(err, "test.conf:", 10) != 0)
            fail_msg("case %zu: \"%s\" does not name the file", i, err);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_weights_and_pool_choice),
        cmocka_unit_test(test_warmup),
        cmocka_unit_test(test_deprioritization),
        cmocka_unit_test(test_room),
        cmocka_unit_test(test_changes_and_restore),
        cmocka_unit_test(test_listing),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
