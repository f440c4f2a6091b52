/*
 * events_api and events_ingest: the HTTP endpoints answered from a real
 * store fed through the intake (checks, per-type counters, the per-turn
 * write), without sockets: /healthz, /metrics, /api/v1/events with its
 * parameters, and the 400/404/405 answers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "events_api.h"
#include "events_ingest.h"
#include "events_store.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define T0 1700000000000ull

typedef struct fixture {
    char dir[512];
    loop_t *loop;
    evstore_t *store;
    evingest_t *ingest;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    const char *base = getenv("SENDARIX_TEST_TMP");
    if (base == NULL || *base == '\0')
        base = "/tmp";
    mkdir(base, 0755);
    snprintf(f->dir, sizeof(f->dir), "%s/evapi-XXXXXX", base);
    if (mkdtemp(f->dir) == NULL)
        return -1;
    char err[256];
    f->store = evstore_open(f->dir, err, sizeof(err));
    f->loop = loop_new();
    if (f->store == NULL || f->loop == NULL)
        return -1;
    f->ingest = evingest_new(f->loop, f->store);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    evingest_destroy(&f->ingest);
    evstore_close(&f->store);
    loop_destroy(&f->loop);
    char path[700];
    snprintf(path, sizeof(path), "%s/data.mdb", f->dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/lock.mdb", f->dir);
    unlink(path);
    rmdir(f->dir);
    free(f);
    return 0;
}

static int publish(fixture_t *f, const char *id, uint64_t at, const char *type, const char *msg,
                   const char *rcpt)
{
    PB(Event) ev = PB_INIT(EVENT);
    ev.id = (char *)id;
    ev.at_ms = at;
    ev.type = (char *)type;
    ev.message_id = (char *)msg;
    ev.recipient = (char *)rcpt;
    ev.service = "queue";
    ev.instance = "1";
    return evingest_add(f->ingest, &ev);
}

static void stop_loop(loop_t *loop, void *arg)
{
    (void)arg;
    loop_stop(loop);
}

/* Run the loop until the intake's timer has written the batch. */
static void run_turn(fixture_t *f)
{
    loop_timer_t t;
    loop_timer_init(&t, stop_loop, NULL);
    loop_timer_start(f->loop, &t, EVINGEST_DELAY_MS + 5);
    loop_run(f->loop);
    loop_timer_stop(f->loop, &t);
}

static void seed(fixture_t *f)
{
    assert_int_equal(publish(f, "e2", T0 + 2000, "queued", "m1", ""), 0);
    assert_int_equal(publish(f, "e1", T0 + 1000, "accepted", "m1", ""), 0);
    assert_int_equal(publish(f, "e3", T0 + 3000, "delivered", "m1", "a@example.test"), 0);
    assert_int_equal(publish(f, "x1", T0 + 1500, "accepted", "m2", ""), 0);
    assert_int_equal(publish(f, "e4", T0 + 4000, "delivered", "m1", "b@example.test"), 0);
    assert_int_equal(evingest_queued(f->ingest), 5);
    run_turn(f);
    assert_int_equal(evingest_queued(f->ingest), 0);
    assert_int_equal(evstore_count(f->store), 5);
}

static json_t *get_json(fixture_t *f, const char *path, const events_api_param_t *p, size_t n,
                        unsigned want_status)
{
    events_api_reply_t r;
    events_api_handle(f->store, f->ingest, NULL, "GET", path, p, n, &r);
    if (r.status != want_status)
        fail_msg("%s: status %u, want %u: %.*s", path, r.status, want_status,
                 (int)buf_used(&r.body), buf_head(&r.body));
    assert_string_equal(r.content_type, "application/json");
    json_error_t jerr;
    json_t *doc = json_loadb(buf_head(&r.body), buf_used(&r.body), 0, &jerr);
    events_api_reply_free(&r);
    assert_non_null(doc);
    return doc;
}

static void test_intake_rejects_and_counts(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(publish(f, "", T0, "queued", "m", ""), -1);  /* no id */
    assert_int_equal(publish(f, "r1", 0, "queued", "m", ""), -1); /* no time */
    assert_int_equal(publish(f, "r2", T0, "a b", "m", ""), -1);   /* type with a space */
    assert_int_equal(evingest_add(f->ingest, NULL), -1);
    seed(f);
    evingest_stats_t s;
    evingest_stats(f->ingest, &s);
    assert_int_equal(s.rejected, 4);
    assert_int_equal(s.received, 5);
    assert_int_equal(s.stored, 5);
    /* the same event again is received but not stored twice */
    assert_int_equal(publish(f, "e1", T0 + 1000, "accepted", "m1", ""), 0);
    assert_int_equal(evingest_flush(f->ingest), 0);
    evingest_stats(f->ingest, &s);
    assert_int_equal(s.duplicates, 1);
    assert_int_equal(evstore_count(f->store), 5);
}

static void test_healthz_and_404_405(void **state)
{
    fixture_t *f = *state;
    events_api_reply_t r;
    events_api_handle(f->store, f->ingest, NULL, "GET", "/healthz", NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.content_type, "text/plain; charset=utf-8");
    assert_int_equal(buf_used(&r.body), 3);
    assert_memory_equal(buf_head(&r.body), "ok\n", 3);
    events_api_reply_free(&r);

    json_t *doc = get_json(f, "/nope", NULL, 0, 404);
    assert_non_null(json_string_value(json_object_get(doc, "error")));
    json_decref(doc);

    events_api_handle(f->store, f->ingest, NULL, "POST", "/api/v1/events", NULL, 0, &r);
    assert_int_equal(r.status, 405);
    events_api_reply_free(&r);
}

static void test_metrics(void **state)
{
    fixture_t *f = *state;
    seed(f);
    events_api_reply_t r;
    events_api_handle(f->store, f->ingest, NULL, "GET", "/metrics", NULL, 0, &r);
    assert_int_equal(r.status, 200);
    buf_append(&r.body, "", 1); /* terminate for strstr */
    const char *text = buf_head(&r.body);
    assert_non_null(strstr(text, "# TYPE sendarix_events_total counter\n"));
    assert_non_null(strstr(text, "sendarix_events_total{type=\"accepted\"} 2\n"));
    assert_non_null(strstr(text, "sendarix_events_total{type=\"delivered\"} 2\n"));
    assert_non_null(strstr(text, "sendarix_events_total{type=\"queued\"} 1\n"));
    assert_non_null(
        strstr(text, "# TYPE sendarix_events_stored gauge\nsendarix_events_stored 5\n"));
    const char *bytes = strstr(text, "\nsendarix_events_store_bytes ");
    assert_non_null(bytes);
    assert_true(strtoull(bytes + strlen("\nsendarix_events_store_bytes "), NULL, 10) > 0);
    events_api_reply_free(&r);
}

static void test_events_by_message(void **state)
{
    fixture_t *f = *state;
    seed(f);
    events_api_param_t p[] = {{"message_id", "m1"}};
    json_t *doc = get_json(f, "/api/v1/events", p, 1, 200);
    json_t *list = json_object_get(doc, "events");
    assert_int_equal(json_array_size(list), 4);
    const char *want[] = {"e1", "e2", "e3", "e4"};
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(json_string_value(json_object_get(json_array_get(list, i), "id")),
                            want[i]);
    json_t *e1 = json_array_get(list, 0);
    assert_string_equal(json_string_value(json_object_get(e1, "at")), "2023-11-14T22:13:21.000Z");
    assert_string_equal(json_string_value(json_object_get(e1, "type")), "accepted");
    assert_string_equal(json_string_value(json_object_get(e1, "service")), "queue");
    assert_true(json_is_null(json_object_get(e1, "reply")));
    assert_true(json_is_object(json_object_get(e1, "attrs")));
    assert_true(json_is_integer(json_object_get(e1, "rcpt_index")));
    json_decref(doc);
}

static void test_events_filters(void **state)
{
    fixture_t *f = *state;
    seed(f);
    events_api_param_t p[] = {
        {"type", "delivered"},
        {"since", "2023-11-14T22:13:23Z"},
        {"limit", "1"},
    };
    json_t *doc = get_json(f, "/api/v1/events", p, 3, 200);
    json_t *list = json_object_get(doc, "events");
    assert_int_equal(json_array_size(list), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "id")), "e3");
    assert_true(json_is_true(json_object_get(doc, "truncated")));
    json_decref(doc);

    events_api_param_t q[] = {{"recipient", "B@EXAMPLE.TEST"}, {"until", "2023-11-14T22:13:24Z"}};
    doc = get_json(f, "/api/v1/events", q, 2, 200);
    list = json_object_get(doc, "events");
    assert_int_equal(json_array_size(list), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "id")), "e4");
    json_decref(doc);

    events_api_param_t none[] = {{"message_id", "unknown"}};
    doc = get_json(f, "/api/v1/events", none, 1, 200);
    assert_int_equal(json_array_size(json_object_get(doc, "events")), 0);
    json_decref(doc);
}

static void test_events_bad_parameters(void **state)
{
    fixture_t *f = *state;
    static const events_api_param_t bad[][1] = {
        {{"limit", "0"}},     {{"limit", "10001"}},     {{"limit", "ten"}},
        {{"limit", "-5"}},    {{"since", "yesterday"}}, {{"until", "2023-02-30"}},
        {{"colour", "blue"}}, {{"limit", NULL}},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *doc = get_json(f, "/api/v1/events", bad[i], 1, 400);
        assert_non_null(json_string_value(json_object_get(doc, "error")));
        json_decref(doc);
    }
    events_api_param_t inverted[] = {{"since", "2023-11-15"}, {"until", "2023-11-14"}};
    json_t *doc = get_json(f, "/api/v1/events", inverted, 2, 400);
    json_decref(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_intake_rejects_and_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_healthz_and_404_405, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events_by_message, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events_filters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events_bad_parameters, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
