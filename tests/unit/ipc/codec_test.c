/*
 * codec_test: the bus envelope on the wire: round trips with several body
 * kinds, an envelope that decodes to far more than its frame (the arena
 * grows), and refusal (with a reason, without a crash or a leak) of empty,
 * truncated, oversized, wrong-version, bodiless and random frames.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ipc/codec.h"

static sx_env_t *round_trip(sx_env_t *env)
{
    size_t len = 0;
    uint8_t *bytes = codec_encode(env, &len);
    assert_non_null(bytes);
    assert_true(len > 0);
    assert_int_equal(env->version, CODEC_VERSION);
    sx_env_t *out = NULL;
    char err[160] = "";
    if (codec_decode(bytes, len, &out, err, sizeof(err)) != 0)
        fail_msg("decode failed: %s", err);
    free(bytes);
    assert_non_null(out);
    assert_int_equal(out->version, CODEC_VERSION);
    assert_int_equal(out->body_case, env->body_case);
    assert_true(out->request_id == env->request_id);
    assert_string_equal(out->sender, env->sender ? env->sender : "");
    return out;
}

static void test_round_trip_ping(void **state)
{
    (void)state;
    PB(ServicePing) ping = PB_INIT(SERVICE_PING);
    sx_env_t env = PB_INIT(ENVELOPE);
    env.version = 77; /* encode always writes the current version */
    env.request_id = 0x8000000000000005ull;
    env.sender = "ingress/1";
    env.body_case = PB_BODY(SERVICE_PING);
    env.service_ping = &ping;
    sx_env_t *out = round_trip(&env);
    assert_non_null(out->service_ping);
    assert_string_equal(codec_body_name(out), "service_ping");
    codec_free(&out);
    assert_null(out);
    codec_free(&out); /* safe twice */
}

static void test_round_trip_login(void **state)
{
    (void)state;
    static const uint8_t secret[] = {0, 'p', 'w', 0, 0xff, 0x80};
    PB(AuthLoginVerify) v = PB_INIT(AUTH_LOGIN_VERIFY);
    v.mechanism = "PLAIN";
    v.username = "user@example.org";
    v.secret.data = (uint8_t *)secret;
    v.secret.len = sizeof(secret);
    v.client_ip = "192.0.2.7";
    v.session_id = "9f2c0000aaaabbbb";
    sx_env_t env = PB_INIT(ENVELOPE);
    env.request_id = 1;
    env.sender = "ingress/2";
    env.body_case = PB_BODY(AUTH_LOGIN_VERIFY);
    env.auth_login_verify = &v;
    sx_env_t *out = round_trip(&env);
    PB(AuthLoginVerify) *o = out->auth_login_verify;
    assert_string_equal(o->mechanism, "PLAIN");
    assert_string_equal(o->username, "user@example.org");
    assert_int_equal(o->secret.len, sizeof(secret));
    assert_memory_equal(o->secret.data, secret, sizeof(secret));
    assert_string_equal(o->authzid, "");
    assert_string_equal(o->client_ip, "192.0.2.7");
    assert_string_equal(codec_body_name(out), "auth_login_verify");
    codec_free(&out);
}

static void test_round_trip_commit(void **state)
{
    (void)state;
    PB(QueueRecipient) r[3];
    PB(QueueRecipient) *rp[3];
    static const char *addrs[] = {"a@example.org", "b@example.net", "\xc3\xa9@example.com"};
    for (int i = 0; i < 3; i++) {
        PB(QueueRecipient) init = PB_INIT(QUEUE_RECIPIENT);
        r[i] = init;
        r[i].index = (uint32_t)i;
        r[i].address = (char *)addrs[i];
        r[i].notify = i == 1 ? "SUCCESS,FAILURE" : "";
        rp[i] = &r[i];
    }
    PB(QueueEnvelope) qe = PB_INIT(QUEUE_ENVELOPE);
    qe.message_id = "01k8g0tnohpnur4cpbro";
    qe.mail_from = "sender@example.org";
    qe.n_recipients = 3;
    qe.recipients = rp;
    qe.size = 123456789012ull;
    qe.smtputf8 = 1;
    PB(QueueMessageCommit) c = PB_INIT(QUEUE_MESSAGE_COMMIT);
    c.envelope = &qe;
    c.chunks = 42;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.request_id = 99;
    env.sender = "ingress/1";
    env.body_case = PB_BODY(QUEUE_MESSAGE_COMMIT);
    env.queue_message_commit = &c;
    sx_env_t *out = round_trip(&env);
    PB(QueueMessageCommit) *oc = out->queue_message_commit;
    assert_int_equal(oc->chunks, 42);
    assert_non_null(oc->envelope);
    assert_string_equal(oc->envelope->message_id, "01k8g0tnohpnur4cpbro");
    assert_true(oc->envelope->size == 123456789012ull);
    assert_true(oc->envelope->smtputf8);
    assert_false(oc->envelope->eightbit);
    assert_int_equal(oc->envelope->n_recipients, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(oc->envelope->recipients[i]->index, i);
        assert_string_equal(oc->envelope->recipients[i]->address, addrs[i]);
    }
    assert_string_equal(oc->envelope->recipients[1]->notify, "SUCCESS,FAILURE");
    codec_free(&out);
}

static void test_round_trip_error_and_result(void **state)
{
    (void)state;
    PB(Status) st = PB_INIT(STATUS);
    st.code = 451;
    st.enhanced = "4.3.0";
    st.text = "try again later";
    PB(Error) e = PB_INIT(ERROR);
    e.status = &st;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.request_id = 7;
    env.body_case = PB_BODY(ERROR);
    env.error = &e;
    sx_env_t *out = round_trip(&env);
    assert_int_equal(out->error->status->code, 451);
    assert_string_equal(out->error->status->enhanced, "4.3.0");
    assert_string_equal(out->error->status->text, "try again later");
    assert_string_equal(codec_body_name(out), "error");
    codec_free(&out);

    PB(DeliveryRecipientResult) rr = PB_INIT(DELIVERY_RECIPIENT_RESULT);
    rr.index = 2;
    rr.outcome = SENDARIX__V1__DELIVERY_RECIPIENT_RESULT__OUTCOME__BOUNCED;
    rr.reply = &st;
    PB(DeliveryRecipientResult) *rrp = &rr;
    PB(DeliveryResult) res = PB_INIT(DELIVERY_RESULT);
    res.job_id = "job-1";
    res.n_recipients = 1;
    res.recipients = &rrp;
    res.tls_version = "TLSv1.3";
    env.body_case = PB_BODY(DELIVERY_RESULT);
    env.delivery_result = &res;
    out = round_trip(&env);
    assert_string_equal(out->delivery_result->job_id, "job-1");
    assert_int_equal(out->delivery_result->n_recipients, 1);
    assert_int_equal(out->delivery_result->recipients[0]->outcome,
                     SENDARIX__V1__DELIVERY_RECIPIENT_RESULT__OUTCOME__BOUNCED);
    assert_int_equal(out->delivery_result->recipients[0]->reply->code, 451);
    codec_free(&out);
}

/*
 * An envelope whose body was packed on its own (codec_encode_packed) is the
 * same bytes as protobuf-c's packing of it with the body set: a two-byte
 * tag (field 130) and lengths of one, two and three bytes.
 */
static void test_encode_packed_body(void **state)
{
    (void)state;
    static const size_t detail_len[] = {10, 300, 20000};
    char *details[3];
    PB(Event) ev[3], *evp[3];
    for (int i = 0; i < 3; i++) {
        details[i] = malloc(detail_len[i] + 1);
        memset(details[i], 'a' + i, detail_len[i]);
        details[i][detail_len[i]] = '\0';
        PB(Event) init = PB_INIT(EVENT);
        ev[i] = init;
        ev[i].type = "delivered";
        ev[i].message_id = details[i];
        ev[i].at_ms = 1700000000000ull + (uint64_t)i;
        evp[i] = &ev[i];
    }
    for (size_t n = 1; n <= 3; n++) {
        PB(EventPublish) pub = PB_INIT(EVENT_PUBLISH);
        pub.events = evp;
        pub.n_events = n;
        sx_env_t env = PB_INIT(ENVELOPE);
        env.request_id = 9;
        env.sender = "delivery/1";
        env.body_case = PB_BODY(EVENT_PUBLISH);
        env.event_publish = &pub;
        size_t want_len;
        uint8_t *want = codec_encode(&env, &want_len);

        size_t body_len = PB_FN(event_publish, get_packed_size)(&pub);
        uint8_t *body = malloc(body_len);
        PB_FN(event_publish, pack)(&pub, body);
        sx_env_t head = PB_INIT(ENVELOPE);
        head.request_id = 9;
        head.sender = "delivery/1";
        size_t got_len;
        uint8_t *got = codec_encode_packed(&head, PB_BODY(EVENT_PUBLISH), body, body_len, &got_len);
        assert_int_equal(got_len, want_len);
        assert_memory_equal(got, want, want_len);

        sx_env_t *out = NULL;
        char err[160] = "";
        if (codec_decode(got, got_len, &out, err, sizeof(err)) != 0)
            fail_msg("decode failed: %s", err);
        assert_int_equal(out->body_case, PB_BODY(EVENT_PUBLISH));
        assert_int_equal(out->event_publish->n_events, n);
        assert_string_equal(out->event_publish->events[n - 1]->message_id, details[n - 1]);
        codec_free(&out);
        free(got);
        free(body);
        free(want);
    }
    for (int i = 0; i < 3; i++)
        free(details[i]);
}

/*
 * Empty sub-messages pack to two bytes each but unpack to a whole struct and
 * a pointer: the decoded envelope outgrows its first block many times over
 * and must come back intact, every recipient distinct, and free cleanly.
 */
static void test_decoded_larger_than_frame(void **state)
{
    (void)state;
    enum { N = 20000 };
    PB(DeliveryRecipientResult) *rr = calloc(N, sizeof(*rr));
    PB(DeliveryRecipientResult) **rrp = calloc(N, sizeof(*rrp));
    assert_non_null(rr);
    assert_non_null(rrp);
    for (size_t i = 0; i < N; i++) {
        PB(DeliveryRecipientResult) one = PB_INIT(DELIVERY_RECIPIENT_RESULT);
        rr[i] = one;
        rrp[i] = &rr[i];
    }
    rr[N - 1].index = 7; /* the last one carries a value, so order is checked */
    PB(DeliveryResult) res = PB_INIT(DELIVERY_RESULT);
    res.job_id = "job-many";
    res.n_recipients = N;
    res.recipients = rrp;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.request_id = 9;
    env.sender = "delivery/1";
    env.body_case = PB_BODY(DELIVERY_RESULT);
    env.delivery_result = &res;
    size_t len = 0;
    uint8_t *bytes = codec_encode(&env, &len);
    assert_true(len < (size_t)N * 4); /* a few bytes per recipient on the wire */

    sx_env_t *out = NULL;
    char err[160] = "";
    if (codec_decode(bytes, len, &out, err, sizeof(err)) != 0)
        fail_msg("decode failed: %s", err);
    free(bytes);
    assert_string_equal(out->delivery_result->job_id, "job-many");
    assert_int_equal(out->delivery_result->n_recipients, N);
    for (size_t i = 0; i + 1 < N; i++) {
        assert_non_null(out->delivery_result->recipients[i]);
        assert_int_equal(out->delivery_result->recipients[i]->index, 0);
        assert_ptr_not_equal(out->delivery_result->recipients[i],
                             out->delivery_result->recipients[i + 1]);
    }
    assert_int_equal(out->delivery_result->recipients[N - 1]->index, 7);
    codec_free(&out);
    assert_null(out);
    free(rrp);
    free(rr);
}

/* ---- refusals ---- */

static void expect_refused(const void *data, size_t len, const char *reason)
{
    sx_env_t *out = (sx_env_t *)(uintptr_t)1;
    char err[160] = "";
    assert_int_equal(codec_decode(data, len, &out, err, sizeof(err)), -1);
    assert_null(out);
    assert_true(err[0] != '\0');
    if (reason && strstr(err, reason) == NULL)
        fail_msg("reason \"%s\" does not mention \"%s\"", err, reason);
}

/* Pack without codec_encode, so the version can be anything. */
static uint8_t *pack_raw(sx_env_t *env, size_t *len)
{
    size_t n = PB_FN(envelope, get_packed_size)(env);
    uint8_t *p = malloc(n ? n : 1);
    *len = PB_FN(envelope, pack)(env, p);
    return p;
}

static void test_empty_and_no_body(void **state)
{
    (void)state;
    expect_refused("", 0, "empty");

    sx_env_t env = PB_INIT(ENVELOPE);
    env.version = CODEC_VERSION;
    env.request_id = 5;
    env.sender = "x/1";
    size_t len;
    uint8_t *p = pack_raw(&env, &len);
    expect_refused(p, len, "body");
    free(p);

    /* a body this version does not know (field 200, from a newer peer) */
    static const uint8_t newer[] = {0x08, 0x01,             /* version = 1 */
                                    0xc2, 0x0c, 0x02, 0x08, 0x01}; /* field 200, 2 bytes */
    expect_refused(newer, sizeof(newer), "body");
}

static void test_wrong_version(void **state)
{
    (void)state;
    PB(ServicePing) ping = PB_INIT(SERVICE_PING);
    static const uint32_t versions[] = {0, 2, 255, 0xffffffffu};
    for (size_t i = 0; i < 4; i++) {
        sx_env_t env = PB_INIT(ENVELOPE);
        env.version = versions[i];
        env.body_case = PB_BODY(SERVICE_PING);
        env.service_ping = &ping;
        size_t len;
        uint8_t *p = pack_raw(&env, &len);
        expect_refused(p, len, "version");
        free(p);
    }
}

static void test_unknown_fields_ignored(void **state)
{
    (void)state;
    /* a known body plus a field this version does not know: accepted */
    static const uint8_t bytes[] = {0x08, 0x01,             /* version = 1 */
                                    0x10, 0x2a,             /* request_id = 42 */
                                    0x5a, 0x00,             /* service_ping (11) = {} */
                                    0xb8, 0x3e, 0x07};      /* field 999 varint 7 */
    sx_env_t *out = NULL;
    char err[160] = "";
    if (codec_decode(bytes, sizeof(bytes), &out, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    assert_int_equal(out->body_case, PB_BODY(SERVICE_PING));
    assert_int_equal(out->request_id, 42);
    codec_free(&out);
}

static sx_env_t *login_env(PB(AuthLoginVerify) * v, size_t secret_len)
{
    static sx_env_t env;
    sx_env_t init = PB_INIT(ENVELOPE);
    env = init;
    PB(AuthLoginVerify) vi = PB_INIT(AUTH_LOGIN_VERIFY);
    *v = vi;
    v->mechanism = "PLAIN";
    v->secret.len = secret_len;
    v->secret.data = calloc(1, secret_len ? secret_len : 1);
    env.request_id = 3;
    env.body_case = PB_BODY(AUTH_LOGIN_VERIFY);
    env.auth_login_verify = v;
    return &env;
}

static void test_size_limit(void **state)
{
    (void)state;
    PB(AuthLoginVerify) v;
    size_t len;
    /* find the secret size whose envelope is exactly CODEC_MAX_ENVELOPE bytes */
    sx_env_t *env = login_env(&v, CODEC_MAX_ENVELOPE);
    uint8_t *p = codec_encode(env, &len);
    free(p);
    size_t secret = CODEC_MAX_ENVELOPE - (len - CODEC_MAX_ENVELOPE);
    free(v.secret.data);

    env = login_env(&v, secret);
    p = codec_encode(env, &len);
    assert_int_equal(len, CODEC_MAX_ENVELOPE);
    sx_env_t *out = NULL;
    char err[160];
    assert_int_equal(codec_decode(p, len, &out, err, sizeof(err)), 0);
    assert_int_equal(out->auth_login_verify->secret.len, secret);
    codec_free(&out);
    free(p);
    free(v.secret.data);

    env = login_env(&v, secret + 1);
    p = codec_encode(env, &len);
    assert_int_equal(len, CODEC_MAX_ENVELOPE + 1);
    expect_refused(p, len, "exceeds");
    free(p);
    free(v.secret.data);

    /* the size is checked before anything is read: a huge length with no data behind it */
    static const uint8_t tiny[] = {0x08, 0x01};
    expect_refused(tiny, (size_t)CODEC_MAX_ENVELOPE * 64, "exceeds");
}

static void test_truncated(void **state)
{
    (void)state;
    PB(AuthLoginVerify) v = PB_INIT(AUTH_LOGIN_VERIFY);
    v.mechanism = "LOGIN";
    v.username = "someone@example.org";
    v.client_ip = "2001:db8::1";
    sx_env_t env = PB_INIT(ENVELOPE);
    env.request_id = 123456789;
    env.sender = "ingress/1";
    env.body_case = PB_BODY(AUTH_LOGIN_VERIFY);
    env.auth_login_verify = &v;
    size_t len;
    uint8_t *p = codec_encode(&env, &len);
    /* the body is the last field: every cut loses it or breaks it */
    for (size_t cut = 1; cut < len; cut++) {
        uint8_t *copy = malloc(cut);
        memcpy(copy, p, cut); /* exact size, so ASan sees any read past the end */
        expect_refused(copy, cut, NULL);
        free(copy);
    }
    free(p);
}

static unsigned long long rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)rng_state;
}

static void decode_any(const uint8_t *p, size_t len, int *accepted)
{
    sx_env_t *out = NULL;
    char err[160] = "";
    int rc = codec_decode(p, len, &out, err, sizeof(err));
    if (rc == 0) {
        assert_non_null(out);
        assert_int_equal(out->version, CODEC_VERSION);
        assert_true(out->body_case != PB_BODY(_NOT_SET));
        (void)codec_body_name(out);
        codec_free(&out);
        (*accepted)++;
    } else {
        assert_int_equal(rc, -1);
        assert_null(out);
        assert_true(err[0] != '\0');
    }
}

static void test_random_buffers(void **state)
{
    (void)state;
    int accepted = 0;
    for (int i = 0; i < 10000; i++) {
        size_t len = rnd() % 300;
        uint8_t *p = malloc(len ? len : 1);
        for (size_t j = 0; j < len; j++)
            p[j] = (uint8_t)rnd();
        /* half of them start like an envelope, so the parser goes deeper */
        if (len >= 4 && (i & 1)) {
            p[0] = 0x08;
            p[1] = 0x01;
        }
        decode_any(p, len, &accepted);
        free(p);
    }
    (void)accepted;
}

static void test_mutated_envelopes(void **state)
{
    (void)state;
    PB(Status) st = PB_INIT(STATUS);
    st.code = 250;
    st.text = "ok";
    PB(DeliveryRecipientResult) rr = PB_INIT(DELIVERY_RECIPIENT_RESULT);
    rr.reply = &st;
    PB(DeliveryRecipientResult) *rrp[2] = {&rr, &rr};
    PB(DeliveryResult) res = PB_INIT(DELIVERY_RESULT);
    res.job_id = "job";
    res.message_id = "01k8g0tnohpnur4cpbro";
    res.n_recipients = 2;
    res.recipients = rrp;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.request_id = 77;
    env.sender = "router/1";
    env.body_case = PB_BODY(DELIVERY_RESULT);
    env.delivery_result = &res;
    size_t len;
    uint8_t *good = codec_encode(&env, &len);
    int accepted = 0;
    for (int i = 0; i < 10000; i++) {
        uint8_t *p = malloc(len);
        memcpy(p, good, len);
        int flips = 1 + (int)(rnd() % 4);
        for (int f = 0; f < flips; f++)
            p[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8));
        decode_any(p, len, &accepted);
        free(p);
    }
    /* some mutations only change values: those still decode */
    assert_true(accepted > 0);
    free(good);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_ping),
        cmocka_unit_test(test_round_trip_login),
        cmocka_unit_test(test_round_trip_commit),
        cmocka_unit_test(test_round_trip_error_and_result),
        cmocka_unit_test(test_encode_packed_body),
        cmocka_unit_test(test_decoded_larger_than_frame),
        cmocka_unit_test(test_empty_and_no_body),
        cmocka_unit_test(test_wrong_version),
        cmocka_unit_test(test_unknown_fields_ignored),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_random_buffers),
        cmocka_unit_test(test_mutated_envelopes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
