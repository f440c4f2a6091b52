/*
 * record_test: auth's stored record layout: round trips of tenant, domain
 * and credential records, fields of a newer version kept through a rewrite,
 * and every kind of damaged bytes refused rather than trusted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth_record.h"
#include "core/alloc.h"

static const char *const hash_a =
    "$scrypt$ln=10,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
static const char *const hash_b =
    "$scrypt$ln=11,r=8,p=1$BBBBBBBBBBBBBBBBBBBBBB==$BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA=";

static void sample_cred(auth_cred_t *c)
{
    auth_cred_init(c);
    c->pub->username = xstrdup("app@example.test");
    c->pub->tenant = xstrdup("acme");
    c->pub->environment = xstrdup("staging");
    c->pub->created_at_ms = 1700000000000ull;
    c->pub->n_domains = 2;
    c->pub->domains = xcalloc(2, sizeof(char *));
    c->pub->domains[0] = xstrdup("example.test");
    c->pub->domains[1] = xstrdup("mail.example.test");
    c->generation = 42;
    c->updated_at_ms = 1700000000123ull;
    assert_int_equal(auth_cred_add_secret(c, AUTH_SECRET_PASSWORD, hash_a, 1, 0), 0);
    assert_int_equal(auth_cred_add_secret(c, AUTH_SECRET_PASSWORD, hash_b, 2, 99), 0);
}

static void test_credential_round_trip(void **state)
{
    (void)state;
    auth_cred_t c, d;
    sample_cred(&c);
    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(auth_record_cred_encode(&c, &b), 0);
    assert_int_equal(auth_record_cred_decode(buf_head(&b), buf_used(&b), &d), 0);
    assert_string_equal(d.pub->username, "app@example.test");
    assert_string_equal(d.pub->tenant, "acme");
    assert_string_equal(d.pub->environment, "staging");
    assert_int_equal(d.pub->created_at_ms, 1700000000000ull);
    assert_int_equal(d.pub->n_domains, 2);
    assert_string_equal(d.pub->domains[1], "mail.example.test");
    assert_int_equal(d.pub->password_count, 2);
    assert_false(d.pub->revoked);
    assert_int_equal(d.generation, 42);
    assert_int_equal(d.updated_at_ms, 1700000000123ull);
    assert_int_equal(d.n_secrets, 2);
    assert_string_equal(d.secrets[0].hash, hash_a);
    assert_string_equal(d.secrets[1].hash, hash_b);
    assert_int_equal(d.secrets[1].created_at_ms, 2);
    assert_int_equal(d.secrets[1].expires_at_ms, 99);
    assert_int_equal(d.secrets[0].kind, AUTH_SECRET_PASSWORD);
    auth_cred_clear(&d);
    auth_cred_clear(&c);
    auth_cred_clear(&c); /* safe twice */
    buf_free(&b);
}

static void test_secret_limit(void **state)
{
    (void)state;
    auth_cred_t c;
    sample_cred(&c);
    for (size_t i = c.n_secrets; i < AUTH_SECRETS_MAX; i++)
        assert_int_equal(auth_cred_add_secret(&c, AUTH_SECRET_PASSWORD, hash_a, 0, 0), 0);
    assert_int_equal(auth_cred_add_secret(&c, AUTH_SECRET_PASSWORD, hash_a, 0, 0), -1);
    auth_cred_clear(&c);
}

/* A field this version does not know survives decode and re-encode. */
static void test_unknown_field_kept(void **state)
{
    (void)state;
    auth_cred_t c, d, e;
    sample_cred(&c);
    buf_t b, b2;
    buf_init(&b, 0);
    buf_init(&b2, 0);
    assert_int_equal(auth_record_cred_encode(&c, &b), 0);
    const uint8_t extra[] = {200, 3, 0, 0, 0, 'x', 'y', 'z'};
    buf_append(&b, extra, sizeof(extra));
    assert_int_equal(auth_record_cred_decode(buf_head(&b), buf_used(&b), &d), 0);
    d.pub->revoked = 1; /* a change made by this version */
    assert_int_equal(auth_record_cred_encode(&d, &b2), 0);
    assert_non_null(memmem(buf_head(&b2), buf_used(&b2), extra, sizeof(extra)));
    assert_int_equal(auth_record_cred_decode(buf_head(&b2), buf_used(&b2), &e), 0);
    assert_true(e.pub->revoked);
    auth_cred_clear(&c);
    auth_cred_clear(&d);
    auth_cred_clear(&e);
    buf_free(&b);
    buf_free(&b2);
}

static void test_credential_damage_refused(void **state)
{
    (void)state;
    auth_cred_t c, d;
    sample_cred(&c);
    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(auth_record_cred_encode(&c, &b), 0);
    const uint8_t *rec = (const uint8_t *)buf_head(&b);
    size_t len = buf_used(&b);
    uint8_t *copy = xmalloc(len + 16);

    /* every truncation is refused (the end of a field boundary may still decode:
     * then the record must lack a required field or be shorter than a whole one) */
    for (size_t n = 0; n < len; n++) {
        int rc = auth_record_cred_decode(rec, n, &d);
        if (rc == 0) {
            /* only a cut after the last secret keeps every required field */
            assert_true(d.n_secrets < c.n_secrets);
            auth_cred_clear(&d);
        }
    }
    /* wrong kind, wrong version */
    memcpy(copy, rec, len);
    copy[0] = 'T';
    assert_int_equal(auth_record_cred_decode(copy, len, &d), -1);
    memcpy(copy, rec, len);
    copy[1] = AUTH_RECORD_VERSION + 1;
    assert_int_equal(auth_record_cred_decode(copy, len, &d), -1);
    /* a field length pointing past the end */
    memcpy(copy, rec, len);
    copy[3] = 0xff;
    copy[4] = 0xff;
    assert_int_equal(auth_record_cred_decode(copy, len, &d), -1);
    /* garbage inside the packed public part */
    memcpy(copy, rec, len);
    memset(copy + 7, 0xff, 6);
    assert_int_equal(auth_record_cred_decode(copy, len, &d), -1);
    /* trailing half field header */
    memcpy(copy, rec, len);
    copy[len] = 3;
    copy[len + 1] = 1;
    assert_int_equal(auth_record_cred_decode(copy, len + 2, &d), -1);
    assert_int_equal(auth_record_cred_decode(NULL, 0, &d), -1);
    free(copy);
    auth_cred_clear(&c);
    buf_free(&b);
}

static void test_credential_required_fields(void **state)
{
    (void)state;
    buf_t b;
    auth_cred_t d;
    /* no public part */
    buf_init(&b, 0);
    const uint8_t head[] = {
        'C', AUTH_RECORD_VERSION, AUTH_CRED_F_GENERATION, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0};
    buf_append(&b, head, sizeof(head));
    assert_int_equal(auth_record_cred_decode(buf_head(&b), buf_used(&b), &d), -1);
    buf_free(&b);

    /* a public part without a tenant */
    auth_cred_t c;
    sample_cred(&c);
    free(c.pub->tenant);
    c.pub->tenant = xstrdup("");
    buf_init(&b, 0);
    assert_int_equal(auth_record_cred_encode(&c, &b), 0);
    assert_int_equal(auth_record_cred_decode(buf_head(&b), buf_used(&b), &d), -1);
    buf_free(&b);
    auth_cred_clear(&c);

    /* a secret with a NUL inside its hash, or with no hash at all */
    sample_cred(&c);
    buf_init(&b, 0);
    assert_int_equal(auth_record_cred_encode(&c, &b), 0);
    uint8_t secret[17 + 4] = {AUTH_SECRET_PASSWORD};
    memcpy(secret + 17, "a\0bc", 4);
    uint8_t fh[5] = {AUTH_CRED_F_SECRET, sizeof(secret), 0, 0, 0};
    buf_t b2;
    buf_init(&b2, 0);
    buf_append(&b2, buf_head(&b), buf_used(&b));
    buf_append(&b2, fh, sizeof(fh));
    buf_append(&b2, secret, sizeof(secret));
    assert_int_equal(auth_record_cred_decode(buf_head(&b2), buf_used(&b2), &d), -1);
    buf_reset(&b2);
    buf_append(&b2, buf_head(&b), buf_used(&b));
    fh[1] = 17;
    buf_append(&b2, fh, sizeof(fh));
    buf_append(&b2, secret, 17);
    assert_int_equal(auth_record_cred_decode(buf_head(&b2), buf_used(&b2), &d), -1);
    buf_free(&b2);
    buf_free(&b);
    auth_cred_clear(&c);
}

static void test_tenant_and_domain(void **state)
{
    (void)state;
    PB(Tenant) t = PB_INIT(TENANT);
    t.name = (char *)"acme";
    t.created_at_ms = 77;
    char *doms[] = {(char *)"not-stored.test"};
    t.domains = doms;
    t.n_domains = 1;
    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(auth_record_tenant_encode(&t, &b), 0);
    PB(Tenant) *d = auth_record_tenant_decode(buf_head(&b), buf_used(&b));
    assert_non_null(d);
    assert_string_equal(d->name, "acme");
    assert_int_equal(d->created_at_ms, 77);
    assert_int_equal(d->n_domains, 0); /* domains live in their own records */
    PB_FN(tenant, free_unpacked)(d, NULL);
    assert_null(auth_record_tenant_decode(buf_head(&b), buf_used(&b) - 1));
    assert_null(auth_record_tenant_decode("D\1", 2));
    buf_free(&b);

    auth_domain_rec_t dr = {.created_at_ms = 5}, out;
    snprintf(dr.tenant, sizeof(dr.tenant), "acme");
    buf_init(&b, 0);
    assert_int_equal(auth_record_domain_encode(&dr, &b), 0);
    assert_int_equal(auth_record_domain_decode(buf_head(&b), buf_used(&b), &out), 0);
    assert_string_equal(out.tenant, "acme");
    assert_int_equal(out.created_at_ms, 5);
    for (size_t n = 0; n < buf_used(&b); n++)
        if (auth_record_domain_decode(buf_head(&b), n, &out) == 0)
            assert_string_equal(out.tenant, "acme"); /* only cuts after the tenant field */
    /* a tenant name longer than any tenant can have */
    uint8_t longrec[2 + 5 + 100] = {'D', AUTH_RECORD_VERSION, 1, 100, 0, 0, 0};
    memset(longrec + 7, 'a', 100);
    assert_int_equal(auth_record_domain_decode(longrec, sizeof(longrec), &out), -1);
    buf_free(&b);
    /* the verified flag round-trips; a record written before it existed reads as verified */
    buf_t vb;
    buf_init(&vb, AUTH_RECORD_MAX);
    auth_domain_rec_t unv = {.tenant = "acme", .created_at_ms = 7, .verified = 0}, back;
    assert_int_equal(auth_record_domain_encode(&unv, &vb), 0);
    assert_int_equal(auth_record_domain_decode(buf_head(&vb), buf_used(&vb), &back), 0);
    assert_int_equal(back.verified, 0);
    buf_free(&vb);
    static const uint8_t legacy[] = {'D', 1, 1, 4, 0, 0, 0, 'a', 'c', 'm', 'e', 2,
                                     8,   0, 0, 0, 9, 0, 0, 0,   0,   0,   0,   0};
    assert_int_equal(auth_record_domain_decode(legacy, sizeof(legacy), &back), 0);
    assert_string_equal(back.tenant, "acme");
    assert_int_equal(back.created_at_ms, 9);
    assert_int_equal(back.verified, 1);
    static const uint8_t badflag[] = {'D', 1, 1, 4, 0, 0, 0, 'a', 'c', 'm', 'e', 3, 1, 0, 0, 0, 2};
    assert_int_equal(auth_record_domain_decode(badflag, sizeof(badflag), &back), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_credential_round_trip),
        cmocka_unit_test(test_secret_limit),
        cmocka_unit_test(test_unknown_field_kept),
        cmocka_unit_test(test_credential_damage_refused),
        cmocka_unit_test(test_credential_required_fields),
        cmocka_unit_test(test_tenant_and_domain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
