/*
 * events_store: key encoding and ordering, batched writes, searches (by
 * message id, time range, type, recipient, limit, byte cap), duplicates,
 * persistence and the retention sweep, on a real LMDB in a temporary dir.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "events_store.h"
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define T0 1700000000000ull /* a fixed wall-clock start, ms */

static char tmp_root[512];

static void make_dir(char *out, size_t size, const char *tag)
{
    const char *base = getenv("SENDARIX_TEST_TMP");
    if (base == NULL || *base == '\0')
        base = "/tmp";
    mkdir(base, 0755);
    snprintf(out, size, "%s/evstore-%s-XXXXXX", base, tag);
    assert_non_null(mkdtemp(out));
}

static void rm_dir(const char *dir)
{
    char path[700];
    snprintf(path, sizeof(path), "%s/data.mdb", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/lock.mdb", dir);
    unlink(path);
    rmdir(dir);
}

static int setup(void **state)
{
    make_dir(tmp_root, sizeof(tmp_root), "t");
    char err[256];
    evstore_t *st = evstore_open(tmp_root, err, sizeof(err));
    if (st == NULL)
        fprintf(stderr, "open: %s\n", err);
    *state = st;
    return st ? 0 : -1;
}

static int teardown(void **state)
{
    evstore_t *st = *state;
    evstore_close(&st);
    rm_dir(tmp_root);
    return 0;
}

typedef struct ev_spec {
    const char *id;
    uint64_t at;
    const char *type;
    const char *msg;
    const char *rcpt;
} ev_spec_t;

static void write_events(evstore_t *st, const ev_spec_t *specs, size_t n)
{
    evstore_batch_t *b = evstore_batch_new();
    char why[128];
    for (size_t i = 0; i < n; i++) {
        PB(Event) ev = PB_INIT(EVENT);
        ev.id = (char *)specs[i].id;
        ev.at_ms = specs[i].at;
        ev.type = (char *)specs[i].type;
        ev.message_id = (char *)(specs[i].msg ? specs[i].msg : "");
        ev.recipient = (char *)(specs[i].rcpt ? specs[i].rcpt : "");
        ev.service = "test";
        ev.instance = "1";
        assert_int_equal(evstore_batch_add(b, &ev, why, sizeof(why)), 0);
    }
    size_t stored, dups;
    assert_int_equal(evstore_write(st, b, &stored, &dups), 0);
    assert_int_equal(evstore_batch_count(b), 0);
    evstore_batch_destroy(&b);
}

static void search_ok(evstore_t *st, const evstore_query_t *q, evstore_result_t *r)
{
    char why[160];
    assert_int_equal(evstore_search(st, q, r, why, sizeof(why)), 0);
}

/* ---- keys ---- */

static void test_key_time_order(void **state)
{
    (void)state;
    /* big-endian time first: byte order is time order, even across byte boundaries */
    const uint64_t times[] = {0, 1, 255, 256, 65535, 65536, T0, T0 + 1, UINT64_MAX / 2};
    uint8_t prev[EVSTORE_TIME_KEY_MAX], cur[EVSTORE_TIME_KEY_MAX];
    size_t plen = evstore_key_time(prev, sizeof(prev), times[0], "a");
    assert_int_equal(plen, 9);
    for (size_t i = 1; i < sizeof(times) / sizeof(times[0]); i++) {
        size_t clen = evstore_key_time(cur, sizeof(cur), times[i], "a");
        assert_int_equal(clen, 9);
        assert_true(memcmp(prev, cur, 9) < 0);
        memcpy(prev, cur, clen);
    }
    /* same time: the event id breaks the tie */
    uint8_t a[EVSTORE_TIME_KEY_MAX], b[EVSTORE_TIME_KEY_MAX];
    size_t al = evstore_key_time(a, sizeof(a), T0, "aaa");
    size_t bl = evstore_key_time(b, sizeof(b), T0, "aab");
    assert_int_equal(al, bl);
    assert_true(memcmp(a, b, al) < 0);
    assert_int_equal(a[0], (uint8_t)(T0 >> 56));
    assert_int_equal(a[7], (uint8_t)(T0 & 0xff));
}

static void test_key_limits(void **state)
{
    (void)state;
    char long_id[EVSTORE_ID_MAX + 2];
    memset(long_id, 'x', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    uint8_t k[EVSTORE_MSG_KEY_MAX + 8];
    assert_int_equal(evstore_key_time(k, sizeof(k), T0, long_id), 0);
    assert_int_equal(evstore_key_message(k, sizeof(k), long_id, T0, "e"), 0);
    assert_int_equal(evstore_key_time(k, 8, T0, "e"), 0); /* buffer too small */
}

static void test_key_message_prefix(void **state)
{
    (void)state;
    /* "abc" must not be a prefix of "abcd"'s keys: the NUL separator sees to it */
    uint8_t k1[EVSTORE_MSG_KEY_MAX], k2[EVSTORE_MSG_KEY_MAX];
    size_t l1 = evstore_key_message(k1, sizeof(k1), "abc", T0, "e1");
    size_t l2 = evstore_key_message(k2, sizeof(k2), "abcd", T0, "e1");
    assert_int_equal(l1, 3 + 1 + 8 + 2);
    assert_int_equal(l2, 4 + 1 + 8 + 2);
    assert_int_equal(k1[3], 0);
    assert_memory_not_equal(k1, k2, 4);
    /* within one message, time order */
    size_t la = evstore_key_message(k1, sizeof(k1), "m", T0 + 5, "z");
    size_t lb = evstore_key_message(k2, sizeof(k2), "m", T0 + 6, "a");
    assert_int_equal(la, lb);
    assert_true(memcmp(k1, k2, la) < 0);
}

/* ---- checks ---- */

static void test_check_rejects(void **state)
{
    (void)state;
    char why[128];
    PB(Event) ev = PB_INIT(EVENT);
    ev.id = "e1";
    ev.at_ms = T0;
    ev.type = "queued";
    assert_int_equal(evstore_check(&ev, why, sizeof(why)), 0);

    ev.id = "";
    assert_int_equal(evstore_check(&ev, why, sizeof(why)), -1);
    ev.id = "has space";
    assert_int_equal(evstore_check(&ev, why, sizeof(why)), -1);
    ev.id = "e1";
    ev.at_ms = 0;
    assert_int_equal(evstore_check(&ev, why, sizeof(why)), -1);
    ev.at_ms = T0;
    ev.type = "";
    assert_int_equal(evstore_check(&ev, why, sizeof(why)), -1);
    ev.type = "bad\"type";
    assert_int_equal(evstore_check(&ev, why, sizeof(why)), -1);
    ev.type = "queued";
    char big[EVSTORE_ID_MAX + 5];
    memset(big, 'm', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    ev.message_id = big;
    assert_int_equal(evstore_check(&ev, why, sizeof(why)), -1);
    ev.message_id = "m1";
    char *huge = malloc(EVSTORE_EVENT_MAX + 10);
    memset(huge, 'x', EVSTORE_EVENT_MAX + 9);
    huge[EVSTORE_EVENT_MAX + 9] = '\0';
    ev.sender = huge;
    assert_int_equal(evstore_check(&ev, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "exceeds"));
    free(huge);
    assert_int_equal(evstore_check(NULL, why, sizeof(why)), -1);
}

static void test_query_check(void **state)
{
    (void)state;
    char why[160];
    evstore_query_t q = {0};
    assert_int_equal(evstore_query_check(&q, why, sizeof(why)), 0);
    q.limit = EVSTORE_LIMIT_MAX;
    assert_int_equal(evstore_query_check(&q, why, sizeof(why)), 0);
    q.limit = EVSTORE_LIMIT_MAX + 1;
    assert_int_equal(evstore_query_check(&q, why, sizeof(why)), -1);
    q.limit = 0;
    q.since_ms = T0 + 1;
    q.until_ms = T0;
    assert_int_equal(evstore_query_check(&q, why, sizeof(why)), -1);
}

/* ---- writes and searches ---- */

static void test_message_search_in_time_order(void **state)
{
    evstore_t *st = *state;
    /* written out of order, across two batches, mixed with another message */
    const ev_spec_t a[] = {
        {"e3", T0 + 300, "delivered", "msg1", "a@x.test"},
        {"e1", T0 + 100, "accepted", "msg1", ""},
        {"o1", T0 + 150, "accepted", "msg2", ""},
    };
    const ev_spec_t b[] = {
        {"e2", T0 + 200, "queued", "msg1", ""},
        {"o2", T0 + 250, "queued", "msg2", ""},
        {"e0", T0 + 100, "received", "msg1", ""}, /* same ms as e1: id order */
    };
    write_events(st, a, 3);
    write_events(st, b, 3);
    assert_int_equal(evstore_count(st), 6);

    evstore_query_t q = {.message_id = "msg1"};
    evstore_result_t r;
    search_ok(st, &q, &r);
    assert_int_equal(r.n, 4);
    const char *want[] = {"e0", "e1", "e2", "e3"};
    for (size_t i = 0; i < 4; i++) {
        assert_string_equal(r.events[i]->id, want[i]);
        assert_string_equal(r.events[i]->message_id, "msg1");
    }
    assert_string_equal(r.events[3]->recipient, "a@x.test");
    assert_false(r.truncated);
    evstore_result_free(&r);

    /* a message id that is a prefix of another finds nothing of the other's */
    q.message_id = "msg";
    search_ok(st, &q, &r);
    assert_int_equal(r.n, 0);
    evstore_result_free(&r);

    q.message_id = "nope";
    search_ok(st, &q, &r);
    assert_int_equal(r.n, 0);
    evstore_result_free(&r);
}

static void test_filters(void **state)
{
    evstore_t *st = *state;
    const ev_spec_t evs[] = {
        {"a1", T0 + 10, "accepted", "m1", ""},
        {"a2", T0 + 20, "delivered", "m1", "Bob@Example.test"},
        {"a3", T0 + 30, "deferred", "m2", "carol@example.test"},
        {"a4", T0 + 40, "delivered", "m2", "carol@example.test"},
        {"a5", T0 + 50, "bounced", "", "dave@example.test"}, /* no message id */
    };
    write_events(st, evs, 5);
    evstore_result_t r;

    evstore_query_t q = {.type = "delivered"};
    search_ok(st, &q, &r);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.events[0]->id, "a2");
    assert_string_equal(r.events[1]->id, "a4");
    evstore_result_free(&r);

    /* recipient matches without regard to case */
    q = (evstore_query_t){.recipient = "bob@example.TEST"};
    search_ok(st, &q, &r);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.events[0]->id, "a2");
    evstore_result_free(&r);

    /* time range, both ends inclusive */
    q = (evstore_query_t){.since_ms = T0 + 20, .until_ms = T0 + 40};
    search_ok(st, &q, &r);
    assert_int_equal(r.n, 3);
    assert_string_equal(r.events[0]->id, "a2");
    assert_string_equal(r.events[2]->id, "a4");
    evstore_result_free(&r);

    /* message id with time range and type */
    q = (evstore_query_t){.message_id = "m2", .since_ms = T0 + 31, .type = "delivered"};
    search_ok(st, &q, &r);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.events[0]->id, "a4");
    evstore_result_free(&r);
    q = (evstore_query_t){.message_id = "m2", .until_ms = T0 + 35};
    search_ok(st, &q, &r);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.events[0]->id, "a3");
    evstore_result_free(&r);

    /* an event without a message id is still found by time and type */
    q = (evstore_query_t){.type = "bounced"};
    search_ok(st, &q, &r);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.events[0]->recipient, "dave@example.test");
    evstore_result_free(&r);

    /* a bad query is refused, not run */
    char why[160];
    q = (evstore_query_t){.since_ms = T0 + 40, .until_ms = T0 + 10};
    assert_int_equal(evstore_search(st, &q, &r, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "since"));
}

static void test_limit_and_truncation(void **state)
{
    evstore_t *st = *state;
    enum { N = 250 };
    ev_spec_t evs[N];
    char ids[N][16];
    for (size_t i = 0; i < N; i++) {
        snprintf(ids[i], sizeof(ids[i]), "id%04zu", i);
        evs[i] = (ev_spec_t){ids[i], T0 + i, i % 2 ? "deferred" : "queued", "bulk", ""};
    }
    write_events(st, evs, N);
    evstore_result_t r;

    evstore_query_t q = {0}; /* default limit */
    search_ok(st, &q, &r);
    assert_int_equal(r.n, EVSTORE_LIMIT_DEFAULT);
    assert_true(r.truncated);
    assert_string_equal(r.events[0]->id, "id0000");
    assert_string_equal(r.events[99]->id, "id0099");
    evstore_result_free(&r);

    q.limit = 7;
    q.message_id = "bulk";
    q.type = "deferred";
    search_ok(st, &q, &r);
    assert_int_equal(r.n, 7);
    assert_string_equal(r.events[0]->id, "id0001");
    assert_string_equal(r.events[6]->id, "id0013");
    evstore_result_free(&r);

    /* exactly as many as match: not truncated */
    q = (evstore_query_t){.message_id = "bulk", .limit = N};
    search_ok(st, &q, &r);
    assert_int_equal(r.n, N);
    assert_false(r.truncated);
    evstore_result_free(&r);

    /* the byte cap stops early and says so */
    q = (evstore_query_t){.message_id = "bulk", .limit = N, .max_bytes = 1000};
    search_ok(st, &q, &r);
    assert_true(r.n > 0 && r.n < N);
    assert_true(r.bytes <= 1000);
    assert_true(r.truncated);
    evstore_result_free(&r);
}

static void test_duplicates_skipped(void **state)
{
    evstore_t *st = *state;
    const ev_spec_t evs[] = {
        {"d1", T0, "queued", "m", ""},
        {"d1", T0, "queued", "m", ""}, /* the same event twice in one batch */
    };
    evstore_batch_t *b = evstore_batch_new();
    char why[128];
    for (size_t i = 0; i < 2; i++) {
        PB(Event) ev = PB_INIT(EVENT);
        ev.id = (char *)evs[i].id;
        ev.at_ms = evs[i].at;
        ev.type = (char *)evs[i].type;
        ev.message_id = (char *)evs[i].msg;
        assert_int_equal(evstore_batch_add(b, &ev, why, sizeof(why)), 0);
    }
    size_t stored, dups;
    assert_int_equal(evstore_write(st, b, &stored, &dups), 0);
    assert_int_equal(stored, 1);
    assert_int_equal(dups, 1);
    /* and again in a later batch */
    write_events(st, evs, 1);
    assert_int_equal(evstore_count(st), 1);
    evstore_query_t q = {.message_id = "m"};
    evstore_result_t r;
    search_ok(st, &q, &r);
    assert_int_equal(r.n, 1);
    evstore_result_free(&r);
    evstore_batch_destroy(&b);

    /* an empty batch writes nothing and succeeds */
    b = evstore_batch_new();
    assert_int_equal(evstore_write(st, b, &stored, &dups), 0);
    assert_int_equal(stored, 0);
    evstore_batch_destroy(&b);
}

static void test_round_trip_fields_and_reopen(void **state)
{
    evstore_t *st = *state;
    PB(Status) reply = PB_INIT(STATUS);
    reply.code = 451;
    reply.enhanced = "4.7.1";
    reply.text = "try later";
    PB(Attr) a1 = PB_INIT(ATTR), *attrs[] = {&a1};
    a1.key = "tls";
    a1.value = "TLSv1.3";
    PB(Event) ev = PB_INIT(EVENT);
    ev.id = "rt1";
    ev.at_ms = T0 + 42;
    ev.type = "deferred";
    ev.service = "delivery";
    ev.instance = "2";
    ev.message_id = "m-rt";
    ev.recipient = "r@example.test";
    ev.rcpt_index = 3;
    ev.sender = "s@example.test";
    ev.tenant = "demo";
    ev.reply = &reply;
    ev.attempt = 2;
    ev.remote_host = "mx.example.test";
    ev.session_id = "abcdef0123456789";
    ev.attrs = attrs;
    ev.n_attrs = 1;
    evstore_batch_t *b = evstore_batch_new();
    char why[128];
    assert_int_equal(evstore_batch_add(b, &ev, why, sizeof(why)), 0);
    size_t stored, dups;
    assert_int_equal(evstore_write(st, b, &stored, &dups), 0);
    evstore_batch_destroy(&b);
    /* commits are not synced: a sync puts them on disk, a second has nothing to do */
    assert_int_equal(evstore_sync(st), 0);
    assert_int_equal(evstore_sync(st), 0);

    /* close (which syncs) and open again: the events and the count survive */
    evstore_close(&st);
    char err[256];
    st = evstore_open(tmp_root, err, sizeof(err));
    assert_non_null(st);
    *state = st;
    assert_int_equal(evstore_count(st), 1);
    assert_true(evstore_bytes(st) > 0);

    evstore_query_t q = {.message_id = "m-rt"};
    evstore_result_t r;
    search_ok(st, &q, &r);
    assert_int_equal(r.n, 1);
    const PB(Event) *got = r.events[0];
    assert_string_equal(got->id, "rt1");
    assert_int_equal(got->at_ms, T0 + 42);
    assert_string_equal(got->service, "delivery");
    assert_string_equal(got->instance, "2");
    assert_int_equal(got->rcpt_index, 3);
    assert_int_equal(got->attempt, 2);
    assert_non_null(got->reply);
    assert_int_equal(got->reply->code, 451);
    assert_string_equal(got->reply->enhanced, "4.7.1");
    assert_int_equal(got->n_attrs, 1);
    assert_string_equal(got->attrs[0]->value, "TLSv1.3");
    evstore_result_free(&r);
}

static int count_each(const store_val_t *k, const store_val_t *v, void *arg)
{
    (void)k;
    (void)v;
    (*(long *)arg)++;
    return 0;
}

/* Entries in a named database, read straight from LMDB (the index must shrink too). */
static long db_entries(const char *dir, const char *name)
{
    char err[256];
    store_t *s = store_open(dir, NULL, err, sizeof(err));
    assert_non_null(s);
    unsigned dbi;
    assert_int_equal(store_db(s, name, &dbi), STORE_OK);
    store_txn_t *txn = store_begin(s, 0);
    long n = 0;
    assert_true(store_scan(txn, dbi, NULL, 0, NULL, 0, count_each, &n) >= 0);
    store_abort(&txn);
    store_close(&s);
    return n;
}

static void test_retention_sweep(void **state)
{
    evstore_t *st = *state;
    enum { OLD = 25, NEW = 5 };
    ev_spec_t evs[OLD + NEW];
    char ids[OLD + NEW][16];
    for (size_t i = 0; i < OLD + NEW; i++) {
        snprintf(ids[i], sizeof(ids[i]), "s%03zu", i);
        /* old ones: two messages; new ones: one of those messages and one without id */
        const char *msg = i < OLD ? (i % 2 ? "old-a" : "mixed") : (i % 2 ? "mixed" : "");
        evs[i] = (ev_spec_t){ids[i], i < OLD ? T0 + i : T0 + 10000 + i, "queued", msg, ""};
    }
    write_events(st, evs, OLD + NEW);
    assert_int_equal(evstore_count(st), OLD + NEW);

    /* bounded batches: 10 at a time, "more" until the old ones are gone */
    size_t deleted, total = 0;
    int rounds = 0, rc;
    while ((rc = evstore_sweep(st, T0 + 5000, 10, &deleted)) == 1) {
        assert_int_equal(deleted, 10);
        total += deleted;
        rounds++;
    }
    assert_int_equal(rc, 0);
    total += deleted;
    assert_int_equal(total, OLD);
    assert_int_equal(rounds, 2);
    assert_int_equal(evstore_count(st), NEW);

    /* nothing old left: a sweep deletes nothing */
    assert_int_equal(evstore_sweep(st, T0 + 5000, 10, &deleted), 0);
    assert_int_equal(deleted, 0);

    evstore_result_t r;
    evstore_query_t q = {.message_id = "old-a"};
    search_ok(st, &q, &r);
    assert_int_equal(r.n, 0);
    evstore_result_free(&r);
    q.message_id = "mixed";
    search_ok(st, &q, &r);
    assert_int_equal(r.n, 3); /* s025, s027, s029 */
    for (size_t i = 0; i < r.n; i++)
        assert_true(r.events[i]->at_ms >= T0 + 5000);
    evstore_result_free(&r);
    q = (evstore_query_t){0};
    search_ok(st, &q, &r);
    assert_int_equal(r.n, NEW);
    evstore_result_free(&r);

    /* the index lost the old entries too: only the new events with a message id remain */
    evstore_close(&st);
    *state = NULL;
    assert_int_equal(db_entries(tmp_root, "events"), NEW);
    assert_int_equal(db_entries(tmp_root, "by_message"), 3);
    char err[256];
    st = evstore_open(tmp_root, err, sizeof(err));
    assert_non_null(st);
    *state = st;
    assert_int_equal(evstore_count(st), NEW);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_time_order),
        cmocka_unit_test(test_key_limits),
        cmocka_unit_test(test_key_message_prefix),
        cmocka_unit_test(test_check_rejects),
        cmocka_unit_test(test_query_check),
        cmocka_unit_test_setup_teardown(test_message_search_in_time_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_filters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limit_and_truncation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicates_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip_fields_and_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention_sweep, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
