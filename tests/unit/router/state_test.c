/*
 * state_test: the router's own store. Warm-up counts and start days written
 * by one router come back after a restart (a new store handle, a new source
 * table); counts of other days are not restored, and those older than
 * RSTATE_KEEP_DAYS are deleted; a flush with nothing new writes nothing;
 * an address with no start day yet starts on the day of the load.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/conf.h"
#include "router_source.h"
#include "router_state.h"
#include "store/store.h"

#define DAY SOURCE_DAY_MS

typedef struct conf {
    pool_table_t *pools;
} conf_t;

static const conf_field_t table[] = {
    {"source_pools", CONF_CUSTOM, offsetof(conf_t, pools), NULL, 0, 0, 0, pool_table_parse,
     pool_table_release, ""},
    {NULL},
};

static const source_limits_t limits = {.warmup_first_day = 50,
                                       .warmup_ready = 100000,
                                       .deprioritize_ms = 1800000,
                                       .deprioritize_divisor = 10};

typedef struct fx {
    char base[512];
    char dir[600];
    conf_t c;
} fx_t;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));
    const char *tmp = getenv("SENDARIX_TEST_TMP");
    if (tmp == NULL || *tmp == '\0')
        tmp = "/tmp";
    mkdir(tmp, 0700);
    snprintf(f->base, sizeof(f->base), "%s/router-state-XXXXXX", tmp);
    if (mkdtemp(f->base) == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "%s/router-1", f->base);
    char err[512];
    conf_file_t *cf = conf_open_string("t.conf",
                                       "router = { source_pools = ( { name = \"p\"; addresses = (\n"
                                       "  { address = \"127.0.0.2\"; },\n"
                                       "  { address = \"127.0.0.3\"; warmup = true; },\n"
                                       "  { address = \"127.0.0.4\"; warmup = true; } ); } ); };",
                                       err, sizeof(err));
    if (cf == NULL || conf_section(cf, "router", table, &f->c, err, sizeof(err)) < 0)
        return -1;
    conf_close(&cf);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    pool_table_destroy(&f->c.pools);
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->base);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static void test_counts_survive_a_restart(void **state)
{
    fx_t *f = *state;
    const uint64_t day = 20777ull * DAY + 3600000;
    char err[512];
    rstate_t *st = rstate_open(f->dir, err, sizeof(err));
    if (st == NULL)
        fail_msg("%s", err);
    source_t *s = source_new(f->c.pools, NULL, &limits, 1);
    assert_int_equal(rstate_load(st, s, day), 0);
    for (int i = 0; i < 7; i++)
        source_sent(s, "127.0.0.3", "gmail", day);
    source_sent(s, "127.0.0.3", "outlook", day);
    source_sent(s, "127.0.0.4", "gmail", day - 2 * DAY);  /* an older day */
    source_sent(s, "127.0.0.4", "yahoo", day - 30 * DAY); /* long ago */
    assert_int_equal(rstate_flush(st, s), 0);
    assert_int_equal(rstate_flush(st, s), 0); /* nothing new */
    source_destroy(&s);
    rstate_close(&st);

    /* the next day the router starts again: day 2 of warm-up for both */
    st = rstate_open(f->dir, err, sizeof(err));
    assert_non_null(st);
    s = source_new(f->c.pools, NULL, &limits, 2);
    assert_int_equal(rstate_load(st, s, day), 0);
    assert_int_equal(source_sent_today(s, "127.0.0.3", "gmail", day), 7);
    assert_int_equal(source_sent_today(s, "127.0.0.3", "outlook", day), 1);
    assert_int_equal(source_sent_today(s, "127.0.0.4", "gmail", day), 0);
    assert_int_equal(source_allowance(s, "127.0.0.3", day + DAY), 100);
    assert_int_equal(source_allowance(s, "127.0.0.4", day + DAY), 100);
    assert_int_equal(source_allowance(s, "127.0.0.2", day), 0);
    source_destroy(&s);
    rstate_close(&st);

    /* the count from 30 days ago was deleted at the last load, the one from 2 days ago kept */
    store_opts_t opts = {.max_dbs = 4};
    store_t *raw = store_open(f->dir, &opts, err, sizeof(err));
    assert_non_null(raw);
    unsigned db;
    assert_int_equal(store_db(raw, "warmup", &db), STORE_OK);
    assert_int_equal(store_db_entries(raw, db), 3);
    store_close(&raw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_counts_survive_a_restart, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
