/*
 * ctl_json and ctl_read_password: the documents sendarixctl prints (an
 * event, a pong up and down, a credential without its password, a tenant,
 * a queued message) checked key by key, and how a password is read from
 * stdin (one newline stripped, empty / NUL / overlong refused).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ctl.h"
#include "ctl_json.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T0 1700000000123ull /* 2023-11-14T22:13:20.123Z */

static const char *str(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v))
        fail_msg("%s is not a string", key);
    return json_string_value(v);
}

static long long num(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        fail_msg("%s is not an integer", key);
    return json_integer_value(v);
}

static void test_event(void **state)
{
    (void)state;
    PB(Status) reply = PB_INIT(STATUS);
    reply.code = 250;
    reply.enhanced = "2.0.0";
    reply.text = "ok queued";
    PB(Attr) a = PB_INIT(ATTR), b = PB_INIT(ATTR), *attrs[] = {&a, &b};
    a.key = "tls";
    a.value = "TLSv1.3";
    b.key = "route";
    b.value = "sandbox";
    PB(Event) ev = PB_INIT(EVENT);
    ev.id = "ev1";
    ev.at_ms = T0;
    ev.type = "delivered";
    ev.service = "delivery";
    ev.instance = "2";
    ev.message_id = "msg1";
    ev.recipient = "r@example.test";
    ev.rcpt_index = 4;
    ev.sender = "s@example.test";
    ev.tenant = "demo";
    ev.reply = &reply;
    ev.attempt = 3;
    ev.remote_host = "mx.example.test";
    ev.session_id = "0123456789abcdef";
    ev.attrs = attrs;
    ev.n_attrs = 2;

    json_t *o = ctl_json_event(&ev);
    assert_string_equal(str(o, "id"), "ev1");
    assert_string_equal(str(o, "at"), "2023-11-14T22:13:20.123Z");
    assert_string_equal(str(o, "type"), "delivered");
    assert_string_equal(str(o, "service"), "delivery");
    assert_string_equal(str(o, "instance"), "2");
    assert_string_equal(str(o, "message_id"), "msg1");
    assert_string_equal(str(o, "recipient"), "r@example.test");
    assert_int_equal(num(o, "rcpt_index"), 4);
    assert_string_equal(str(o, "sender"), "s@example.test");
    assert_string_equal(str(o, "tenant"), "demo");
    json_t *r = json_object_get(o, "reply");
    assert_int_equal(num(r, "code"), 250);
    assert_string_equal(str(r, "enhanced"), "2.0.0");
    assert_string_equal(str(r, "text"), "ok queued");
    assert_int_equal(num(o, "attempt"), 3);
    assert_string_equal(str(o, "remote_host"), "mx.example.test");
    assert_string_equal(str(o, "session_id"), "0123456789abcdef");
    json_t *at = json_object_get(o, "attrs");
    assert_int_equal(json_object_size(at), 2);
    assert_string_equal(str(at, "tls"), "TLSv1.3");
    assert_string_equal(str(at, "route"), "sandbox");
    assert_int_equal(json_object_size(o), 15);
    json_decref(o);

    /* defaults: no reply is null, absent strings are "", bytes that are not UTF-8 survive */
    PB(Event) bare = PB_INIT(EVENT);
    bare.at_ms = T0;
    bare.type = "caf\xe9";
    o = ctl_json_event(&bare);
    assert_true(json_is_null(json_object_get(o, "reply")));
    assert_string_equal(str(o, "id"), "");
    assert_string_equal(str(o, "type"), "caf?");
    assert_int_equal(json_object_size(json_object_get(o, "attrs")), 0);
    json_decref(o);
}

static void test_pong(void **state)
{
    (void)state;
    PB(Attr) s1 = PB_INIT(ATTR), *stats[] = {&s1};
    s1.key = "events_stored";
    s1.value = "42";
    PB(ServicePong) pong = PB_INIT(SERVICE_PONG);
    pong.service = "events";
    pong.instance = "1";
    pong.version = "0.1.0";
    pong.started_at_ms = T0;
    pong.pid = 4242;
    pong.stats = stats;
    pong.n_stats = 1;
    json_t *o = ctl_json_pong("events", 2, "ipc:///x/events-2.sock", &pong, T0 + 61500, NULL);
    assert_string_equal(str(o, "service"), "events");
    assert_string_equal(str(o, "instance"), "2");
    assert_string_equal(str(o, "endpoint"), "ipc:///x/events-2.sock");
    assert_true(json_is_true(json_object_get(o, "up")));
    assert_int_equal(num(o, "pid"), 4242);
    assert_string_equal(str(o, "version"), "0.1.0");
    assert_int_equal(num(o, "uptime_s"), 61);
    assert_string_equal(str(json_object_get(o, "stats"), "events_stored"), "42");
    json_decref(o);

    o = ctl_json_pong("queue", 1, "ipc:///x/queue-1.sock", NULL, T0, "not reachable");
    assert_true(json_is_false(json_object_get(o, "up")));
    assert_null(json_object_get(o, "pid"));
    assert_null(json_object_get(o, "uptime_s"));
    assert_string_equal(str(o, "error"), "not reachable");
    json_decref(o);

    /* a clock behind the service's start gives 0, not a huge number */
    o = ctl_json_pong("events", 1, "e", &pong, T0 - 5000, NULL);
    assert_int_equal(num(o, "uptime_s"), 0);
    json_decref(o);
}

static void test_credential_and_tenant(void **state)
{
    (void)state;
    char *domains[] = {"a.test", "b.test"};
    PB(Credential) c = PB_INIT(CREDENTIAL);
    c.username = "alice";
    c.tenant = "acme";
    c.environment = "staging";
    c.created_at_ms = T0;
    c.password_count = 2;
    c.domains = domains;
    c.n_domains = 2;
    json_t *o = ctl_json_credential(&c);
    assert_string_equal(str(o, "username"), "alice");
    assert_string_equal(str(o, "tenant"), "acme");
    assert_string_equal(str(o, "environment"), "staging");
    assert_string_equal(str(o, "created_at"), "2023-11-14T22:13:20Z");
    assert_true(json_is_false(json_object_get(o, "revoked")));
    assert_int_equal(num(o, "password_count"), 2);
    assert_int_equal(json_array_size(json_object_get(o, "domains")), 2);
    assert_null(json_object_get(o, "password"));
    assert_int_equal(json_array_size(json_object_get(o, "allowed_networks")), 0);
    assert_true(json_is_null(json_object_get(o, "rotated_at")));
    assert_int_equal(num(o, "rate_per_minute"), 0);
    assert_int_equal(num(o, "rate_per_day"), 0);
    assert_int_equal(json_object_size(o), 11);
    json_decref(o);

    char *nets[] = {"10.0.0.0/8", "2001:db8::/32"};
    c.allowed_networks = nets;
    c.n_allowed_networks = 2;
    c.rotated_at_ms = T0 + 1000;
    c.rate_per_minute = 60;
    c.rate_per_day = 5000;
    c.revoked = 1;
    o = ctl_json_credential(&c);
    assert_string_equal(
        json_string_value(json_array_get(json_object_get(o, "allowed_networks"), 1)),
        "2001:db8::/32");
    assert_string_equal(str(o, "rotated_at"), "2023-11-14T22:13:21Z");
    assert_int_equal(num(o, "rate_per_minute"), 60);
    assert_int_equal(num(o, "rate_per_day"), 5000);
    assert_true(json_is_true(json_object_get(o, "revoked")));
    json_decref(o);

    PB(Tenant) t = PB_INIT(TENANT);
    t.name = "acme";
    t.domains = domains;
    t.n_domains = 1;
    o = ctl_json_tenant(&t);
    assert_string_equal(str(o, "name"), "acme");
    assert_true(json_is_null(json_object_get(o, "created_at")));
    assert_string_equal(json_string_value(json_array_get(json_object_get(o, "domains"), 0)),
                        "a.test");
    assert_int_equal(num(o, "rate_per_minute"), 0);
    assert_int_equal(json_object_size(o), 5);
    json_decref(o);
    t.rate_per_day = 100;
    o = ctl_json_tenant(&t);
    assert_int_equal(num(o, "rate_per_day"), 100);
    json_decref(o);

    PB(Domain) d = PB_INIT(DOMAIN);
    d.name = "a.test";
    d.tenant = "acme";
    d.verified = 1;
    d.created_at_ms = T0;
    o = ctl_json_domain(&d);
    assert_string_equal(str(o, "domain"), "a.test");
    assert_string_equal(str(o, "tenant"), "acme");
    assert_true(json_is_true(json_object_get(o, "verified")));
    assert_string_equal(str(o, "created_at"), "2023-11-14T22:13:20Z");
    assert_int_equal(json_object_size(o), 4);
    json_decref(o);
    d.verified = 0;
    d.created_at_ms = 0;
    o = ctl_json_domain(&d);
    assert_true(json_is_false(json_object_get(o, "verified")));
    assert_true(json_is_null(json_object_get(o, "created_at")));
    json_decref(o);
}

static void test_queue_show(void **state)
{
    (void)state;
    PB(QueueEnvelope) e = PB_INIT(QUEUE_ENVELOPE);
    e.message_id = "m1";
    e.mail_from = "s@example.test";
    e.tenant = "demo";
    e.username = "demo";
    e.client_ip = "127.0.0.1";
    e.helo = "client.test";
    e.tls = "TLSv1.3 TLS_AES_256_GCM_SHA384";
    e.received_at_ms = T0;
    e.size = 1234;
    e.dsn_ret = "HDRS";
    e.dsn_envid = "env-1";
    PB(Status) last = PB_INIT(STATUS);
    last.code = 451;
    last.enhanced = "4.7.1";
    last.text = "greylisted";
    PB(QueueRecipientState)
    r0 = PB_INIT(QUEUE_RECIPIENT_STATE), r1 = PB_INIT(QUEUE_RECIPIENT_STATE);
    r0.index = 0;
    r0.address = "a@example.test";
    r0.state = "delivered";
    r0.attempts = 1;
    r1.index = 1;
    r1.address = "b@example.test";
    r1.state = "deferred";
    r1.attempts = 2;
    r1.next_attempt_ms = T0 + 60000;
    r1.last_reply = &last;
    r1.last_remote = "mx.example.test";
    PB(QueueRecipientState) * rcpts[] = {&r0, &r1};
    PB(QueueMessageShowReply) rep = PB_INIT(QUEUE_MESSAGE_SHOW_REPLY);
    rep.envelope = &e;
    rep.recipients = rcpts;
    rep.n_recipients = 2;
    rep.state = "active";
    rep.body_size = 1200;

    json_t *o = ctl_json_queue_show(&rep);
    json_t *m = json_object_get(o, "message");
    assert_string_equal(str(m, "message_id"), "m1");
    assert_string_equal(str(m, "mail_from"), "s@example.test");
    assert_string_equal(str(m, "client_ip"), "127.0.0.1");
    assert_string_equal(str(m, "received_at"), "2023-11-14T22:13:20Z");
    assert_int_equal(num(m, "size"), 1234);
    assert_string_equal(str(m, "dsn_ret"), "HDRS");
    assert_string_equal(str(m, "dsn_envid"), "env-1");
    assert_string_equal(str(o, "state"), "active");
    assert_int_equal(num(o, "body_size"), 1200);
    json_t *list = json_object_get(o, "recipients");
    assert_int_equal(json_array_size(list), 2);
    json_t *j0 = json_array_get(list, 0), *j1 = json_array_get(list, 1);
    assert_true(json_is_null(json_object_get(j0, "next_attempt")));
    assert_true(json_is_null(json_object_get(j0, "last_reply")));
    assert_string_equal(str(j1, "state"), "deferred");
    assert_int_equal(num(j1, "attempts"), 2);
    assert_string_equal(str(j1, "next_attempt"), "2023-11-14T22:14:20Z");
    assert_int_equal(num(json_object_get(j1, "last_reply"), "code"), 451);
    assert_string_equal(str(j1, "last_remote"), "mx.example.test");
    json_decref(o);
}

static int read_pw(const char *input, size_t len, char *buf, size_t size, char *why)
{
    FILE *in = fmemopen((void *)input, len, "r");
    int rc = ctl_read_password(in, buf, size, why, 128);
    fclose(in);
    return rc;
}

static void test_read_password(void **state)
{
    (void)state;
    char buf[16], why[128];
    assert_int_equal(read_pw("secret\n", 7, buf, sizeof(buf), why), 0);
    assert_string_equal(buf, "secret");
    assert_int_equal(read_pw("secret", 6, buf, sizeof(buf), why), 0);
    assert_string_equal(buf, "secret");
    assert_int_equal(read_pw("secret\r\n", 8, buf, sizeof(buf), why), 0);
    assert_string_equal(buf, "secret");
    /* only one newline goes: the rest is the password's own */
    assert_int_equal(read_pw("two\n\n", 5, buf, sizeof(buf), why), 0);
    assert_string_equal(buf, "two\n");
    assert_int_equal(read_pw("with space \n", 12, buf, sizeof(buf), why), 0);
    assert_string_equal(buf, "with space ");

    assert_int_equal(read_pw("\n", 1, buf, sizeof(buf), why), -1);
    assert_non_null(strstr(why, "empty"));
    assert_int_equal(read_pw("", 0, buf, sizeof(buf), why), -1);
    assert_int_equal(read_pw("a\0b\n", 4, buf, sizeof(buf), why), -1);
    assert_non_null(strstr(why, "NUL"));
    /* 14 bytes fit a 16-byte buffer (with the newline); 15 do not */
    assert_int_equal(read_pw("12345678901234\n", 15, buf, sizeof(buf), why), 0);
    assert_int_equal(read_pw("123456789012345\n", 16, buf, sizeof(buf), why), -1);
    assert_int_equal(read_pw("123456789012345", 15, buf, sizeof(buf), why), -1);
    assert_non_null(strstr(why, "longer"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event),
        cmocka_unit_test(test_pong),
        cmocka_unit_test(test_credential_and_tenant),
        cmocka_unit_test(test_queue_show),
        cmocka_unit_test(test_read_password),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
