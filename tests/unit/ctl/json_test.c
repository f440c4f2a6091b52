/*
 * ctl_json and ctl_read_password: the documents sendarixctl prints (an
 * event, a pong up and down, a credential without its password, a tenant,
 * a queued message with its DSN options and held flag, and the merged
 * answers of several queue instances: list, stats, suppressions) checked
 * key by key, and how a password is read from stdin (one newline stripped,
 * empty / NUL / overlong refused).
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
    assert_true(json_is_null(json_object_get(o, "verified_at")));
    assert_int_equal(json_array_size(json_object_get(o, "dkim")), 0);
    assert_int_equal(json_object_size(o), 6);
    json_decref(o);
    /* the DKIM keys: what to publish, never a private key */
    PB(DkimKey) k = PB_INIT(DKIM_KEY);
    k.selector = "sx1e";
    k.algorithm = "ed25519-sha256";
    k.public_key = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    k.txt_name = "sx1e._domainkey.a.test";
    k.txt_value = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    k.created_at_ms = T0;
    PB(DkimKey) *kp = &k;
    d.dkim = &kp;
    d.n_dkim = 1;
    d.verified_at_ms = T0;
    o = ctl_json_domain(&d);
    assert_string_equal(str(o, "verified_at"), "2023-11-14T22:13:20Z");
    json_t *k0 = json_array_get(json_object_get(o, "dkim"), 0);
    assert_string_equal(json_string_value(json_object_get(k0, "selector")), "sx1e");
    assert_string_equal(json_string_value(json_object_get(k0, "algorithm")), "ed25519-sha256");
    assert_string_equal(json_string_value(json_object_get(k0, "txt_name")), k.txt_name);
    assert_string_equal(json_string_value(json_object_get(k0, "txt_value")), k.txt_value);
    assert_int_equal(json_object_size(k0), 5);
    json_decref(o);
    d.dkim = NULL;
    d.n_dkim = 0;
    d.verified_at_ms = 0;
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
    /* the envelope's recipients in another order than the states: matched by index */
    PB(QueueRecipient) e0 = PB_INIT(QUEUE_RECIPIENT), e1 = PB_INIT(QUEUE_RECIPIENT);
    e0.index = 1;
    e0.address = "b@example.test";
    e0.notify = "FAILURE,DELAY";
    e0.orcpt = "rfc822;B@example.test";
    e1.index = 0;
    e1.address = "a@example.test";
    PB(QueueRecipient) * erc[] = {&e0, &e1};
    e.recipients = erc;
    e.n_recipients = 2;
    PB(QueueMessageShowReply) rep = PB_INIT(QUEUE_MESSAGE_SHOW_REPLY);
    rep.envelope = &e;
    rep.recipients = rcpts;
    rep.n_recipients = 2;
    rep.state = "active";
    rep.body_size = 1200;

    json_t *o = ctl_json_queue_show(&rep, 1);
    assert_true(json_is_true(json_object_get(o, "held")));
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
    assert_string_equal(str(j1, "notify"), "FAILURE,DELAY");
    assert_string_equal(str(j1, "orcpt"), "rfc822;B@example.test");
    assert_string_equal(str(j0, "notify"), "");
    assert_string_equal(str(j0, "orcpt"), "");
    assert_int_equal(json_object_size(j0), 9);
    json_decref(o);

    /* held unknown: null; not held: false */
    o = ctl_json_queue_show(&rep, -1);
    assert_true(json_is_null(json_object_get(o, "held")));
    json_decref(o);
    o = ctl_json_queue_show(&rep, 0);
    assert_true(json_is_false(json_object_get(o, "held")));
    json_decref(o);
}

static PB(QueueMessageSummary) summary(const char *id, uint64_t at, const char *state)
{
    PB(QueueMessageSummary) m = PB_INIT(QUEUE_MESSAGE_SUMMARY);
    m.message_id = (char *)id;
    m.mail_from = "s@example.test";
    m.tenant = "demo";
    m.received_at_ms = at;
    m.size = 300;
    m.recipients = 2;
    m.pending = 1;
    m.state = (char *)state;
    return m;
}

/* Two instances' lists merged by arrival, each message naming its instance, cut to the limit. */
static void test_queue_list_merge(void **state)
{
    (void)state;
    static char *doms[] = {"a.example", "b.example"};
    PB(QueueMessageSummary) a = summary("m-a", T0 + 3000, "active");
    PB(QueueMessageSummary) b = summary("m-b", T0 + 1000, "held");
    PB(QueueMessageSummary) c = summary("m-c", T0 + 2000, "active");
    c.next_attempt_ms = T0 + 60000;
    c.last_error = "451 4.4.1 connection refused";
    c.domains = doms;
    c.n_domains = 2;
    PB(QueueMessageSummary) * l1[] = {&a}, *l2[] = {&b, &c};
    PB(QueueListReply) r1 = PB_INIT(QUEUE_LIST_REPLY), r2 = PB_INIT(QUEUE_LIST_REPLY);
    r1.messages = l1;
    r1.n_messages = 1;
    r1.matched = 1;
    r2.messages = l2;
    r2.n_messages = 2;
    r2.matched = 7; /* more matched than listed */
    PB(QueueListReply) * replies[] = {&r1, &r2};

    json_t *doc = ctl_queue_list_merge(replies, 2, 100);
    assert_int_equal(num(doc, "matched"), 8);
    json_t *list = json_object_get(doc, "messages");
    assert_int_equal(json_array_size(list), 3);
    static const char *order[] = {"m-b", "m-c", "m-a"}, *inst[] = {"2", "2", "1"};
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(str(json_array_get(list, i), "message_id"), order[i]);
        assert_string_equal(str(json_array_get(list, i), "instance"), inst[i]);
    }
    json_t *m = json_array_get(list, 1);
    assert_string_equal(str(m, "received_at"), "2023-11-14T22:13:22Z");
    assert_string_equal(str(m, "next_attempt"), "2023-11-14T22:14:20Z");
    assert_string_equal(str(m, "last_error"), "451 4.4.1 connection refused");
    assert_string_equal(str(m, "state"), "active");
    assert_int_equal(num(m, "size"), 300);
    assert_int_equal(num(m, "recipients"), 2);
    assert_int_equal(num(m, "pending"), 1);
    assert_string_equal(str(m, "mail_from"), "s@example.test");
    assert_string_equal(str(m, "tenant"), "demo");
    assert_int_equal(json_array_size(json_object_get(m, "domains")), 2);
    assert_int_equal(json_object_size(m), 12);
    assert_true(json_is_null(json_object_get(json_array_get(list, 0), "next_attempt")));
    assert_string_equal(str(json_array_get(list, 0), "state"), "held");
    json_decref(doc);

    /* the limit applies to the merged list; an instance without a reply adds nothing */
    replies[0] = NULL;
    doc = ctl_queue_list_merge(replies, 2, 1);
    list = json_object_get(doc, "messages");
    assert_int_equal(json_array_size(list), 1);
    assert_string_equal(str(json_array_get(list, 0), "message_id"), "m-b");
    assert_int_equal(num(doc, "matched"), 7);
    json_decref(doc);
}

static PB(QueueDomainStats)
    dstat(const char *domain, uint64_t pending, const char *err, uint64_t err_at)
{
    PB(QueueDomainStats) d = PB_INIT(QUEUE_DOMAIN_STATS);
    d.domain = (char *)domain;
    d.pending = pending;
    d.deferred = pending;
    d.last_error = (char *)err;
    d.last_error_at_ms = err_at;
    d.failures = 2;
    return d;
}

/* Counts summed, oldest age the largest, domains merged with the latest error. */
static void test_queue_stats_merge(void **state)
{
    (void)state;
    PB(QueueCount) q1 = PB_INIT(QUEUE_COUNT), d1 = PB_INIT(QUEUE_COUNT);
    PB(QueueCount) q2 = PB_INIT(QUEUE_COUNT), h2 = PB_INIT(QUEUE_COUNT);
    q1.key = "queued", q1.count = 2;
    d1.key = "deferred", d1.count = 3;
    q2.key = "queued", q2.count = 5;
    h2.key = "held", h2.count = 1;
    PB(QueueCount) * c1[] = {&q1, &d1}, *c2[] = {&q2, &h2};
    PB(QueueDomainStats) a1 = dstat("dead.example", 2, "451 4.4.1 old error", T0);
    PB(QueueDomainStats) a2 = dstat("Dead.Example", 1, "451 4.4.1 connection refused", T0 + 5000);
    PB(QueueDomainStats) b2 = dstat("busy.example", 9, "", 0);
    a1.held_until_ms = T0 + 60000;
    a2.suspended = 1;
    PB(QueueDomainStats) * ds1[] = {&a1}, *ds2[] = {&a2, &b2};
    PB(QueueStatsReply) r1 = PB_INIT(QUEUE_STATS_REPLY), r2 = PB_INIT(QUEUE_STATS_REPLY);
    r1.instance = "queue/1";
    r1.messages = 4;
    r1.by_state = c1;
    r1.n_by_state = 2;
    r1.oldest_age_s = 30;
    r1.suppressed = 2;
    r1.domains = ds1;
    r1.n_domains = 1;
    r2.instance = "queue/2";
    r2.messages = 6;
    r2.by_state = c2;
    r2.n_by_state = 2;
    r2.oldest_age_s = 90;
    r2.domains = ds2;
    r2.n_domains = 2;
    PB(QueueStatsReply) * replies[] = {&r1, &r2};
    json_t *doc = ctl_queue_stats_merge(replies, 2);

    json_t *insts = json_object_get(doc, "instances");
    assert_int_equal(json_array_size(insts), 2);
    json_t *i1 = json_array_get(insts, 0);
    assert_string_equal(str(i1, "instance"), "1");
    assert_int_equal(num(i1, "messages"), 4);
    assert_int_equal(num(i1, "oldest_age_s"), 30);
    assert_int_equal(num(i1, "suppressed"), 2);
    assert_int_equal(num(json_object_get(i1, "by_state"), "deferred"), 3);
    json_t *total = json_object_get(doc, "total");
    assert_int_equal(num(total, "messages"), 10);
    assert_int_equal(num(total, "oldest_age_s"), 90);
    json_t *bs = json_object_get(total, "by_state");
    assert_int_equal(num(bs, "queued"), 7);
    assert_int_equal(num(bs, "deferred"), 3);
    assert_int_equal(num(bs, "held"), 1);

    json_t *doms = json_object_get(doc, "domains");
    assert_int_equal(json_array_size(doms), 2);
    json_t *busy = json_array_get(doms, 0), *dead = json_array_get(doms, 1);
    assert_string_equal(str(busy, "domain"), "busy.example"); /* most pending first */
    assert_true(json_is_null(json_object_get(busy, "last_error_at")));
    assert_string_equal(str(busy, "last_error"), "");
    assert_string_equal(str(dead, "domain"), "dead.example");
    assert_int_equal(num(dead, "pending"), 3);
    assert_int_equal(num(dead, "deferred"), 3);
    assert_int_equal(num(dead, "failures"), 4);
    assert_string_equal(str(dead, "last_error"), "451 4.4.1 connection refused");
    assert_string_equal(str(dead, "last_error_at"), "2023-11-14T22:13:25Z");
    assert_true(json_is_true(json_object_get(dead, "suspended")));
    assert_string_equal(str(dead, "held_until"), "2023-11-14T22:14:20Z");
    assert_int_equal(json_object_size(dead), 8);
    json_decref(doc);
}

static PB(Suppression) entry(const char *tenant, const char *address, uint64_t created)
{
    PB(Suppression) e = PB_INIT(SUPPRESSION);
    e.tenant = (char *)tenant;
    e.address = (char *)address;
    e.reason = "operator";
    e.created_at_ms = created;
    return e;
}

/* The same entry from two instances once (the newest), sorted by tenant then address. */
static void test_suppress_merge(void **state)
{
    (void)state;
    PB(Status) bounce = PB_INIT(STATUS);
    bounce.code = 550;
    bounce.enhanced = "5.1.1";
    bounce.text = "no such user";
    PB(Suppression) a1 = entry("demo", "gone@example.org", T0);
    PB(Suppression) a2 = entry("demo", "Gone@Example.org", T0 + 1000);
    PB(Suppression) b = entry("acme", "x@example.org", T0);
    PB(Suppression) c = entry("demo", "aaa@example.org", T0);
    a2.reason = "hard-bounce";
    a2.reply = &bounce;
    c.expires_at_ms = T0 + 86400000;
    PB(Suppression) * l1[] = {&a1, &c}, *l2[] = {&a2, &b};
    PB(QueueSuppressReply) r1 = PB_INIT(QUEUE_SUPPRESS_REPLY), r2 = PB_INIT(QUEUE_SUPPRESS_REPLY);
    r1.entries = l1;
    r1.n_entries = 2;
    r2.entries = l2;
    r2.n_entries = 2;
    PB(QueueSuppressReply) * replies[] = {&r1, &r2};
    json_t *doc = ctl_suppress_merge(replies, 2, 1000);
    json_t *list = json_object_get(doc, "suppressions");
    assert_int_equal(num(doc, "count"), 3);
    assert_int_equal(json_array_size(list), 3);
    assert_string_equal(str(json_array_get(list, 0), "tenant"), "acme");
    assert_string_equal(str(json_array_get(list, 1), "address"), "aaa@example.org");
    assert_string_equal(str(json_array_get(list, 1), "expires_at"), "2023-11-15T22:13:20Z");
    json_t *g = json_array_get(list, 2);
    assert_string_equal(str(g, "address"), "Gone@Example.org");
    assert_string_equal(str(g, "reason"), "hard-bounce");
    assert_string_equal(str(g, "created_at"), "2023-11-14T22:13:21Z");
    assert_true(json_is_null(json_object_get(g, "expires_at")));
    json_t *reply = json_object_get(g, "reply");
    assert_int_equal(num(reply, "code"), 550);
    assert_string_equal(str(reply, "enhanced"), "5.1.1");
    assert_int_equal(json_object_size(g), 6);
    assert_true(json_is_null(json_object_get(json_array_get(list, 0), "reply")));
    json_decref(doc);

    doc = ctl_suppress_merge(replies, 2, 2);
    assert_int_equal(json_array_size(json_object_get(doc, "suppressions")), 2);
    json_decref(doc);
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
        cmocka_unit_test(test_queue_list_merge),
        cmocka_unit_test(test_queue_stats_merge),
        cmocka_unit_test(test_suppress_merge),
        cmocka_unit_test(test_read_password),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
