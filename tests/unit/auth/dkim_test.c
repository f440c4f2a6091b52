/*
 * dkim_test: a sending domain's DKIM keys in auth. Keys made on add (RSA
 * sx1, Ed25519 sx1e) with the TXT records to publish; the private keys
 * only through AuthDkimKeyGet, and only for a verified domain; keys for a
 * domain written before there were any; rotation to the next selectors;
 * the DNS check (what a published record must say) and what it changes;
 * the key record's bytes.
 */
#include "auth_fixture.h"

#include "auth_dkim.h"
#include "auth_record.h"
#include "mail/dkim.h"

static PB(AuthDomainAddReply) * add_domain(fixture_t *f, const char *domain, int verified)
{
    PB(AuthDomainAdd) req = PB_INIT(AUTH_DOMAIN_ADD);
    req.domain = (char *)domain;
    req.tenant = "acme";
    req.verified = verified;
    PB(AuthDomainAddReply) *r = NULL;
    auth_err_t err;
    if (auth_api_domain_add(f->api, &req, &r, &err) < 0)
        fail_msg("domain %s: %u %s", domain, err.code, err.text);
    return r;
}

static int key_get(fixture_t *f, const char *domain, PB(AuthDkimKeyGetReply) * *r)
{
    PB(AuthDkimKeyGet) req = PB_INIT(AUTH_DKIM_KEY_GET);
    req.domain = (char *)domain;
    auth_err_t err;
    *r = NULL;
    if (auth_api_dkim_key_get(f->api, &req, r, &err) < 0)
        return (int)err.code;
    return 0;
}

static PB(Domain) * domain_dkim(fixture_t *f, const char *domain, int rotate, unsigned *code)
{
    PB(AuthDomainDkim) req = PB_INIT(AUTH_DOMAIN_DKIM);
    req.domain = (char *)domain;
    req.rotate = rotate;
    PB(AuthDomainDkimReply) *r = NULL;
    auth_err_t err;
    uint32_t gen = 0;
    int rc = auth_api_domain_dkim(f->api, &req, NULL, &gen, &r, &err);
    if (rc == 1) {
        auth_dkim_rec_t fresh;
        memset(&fresh, 0, sizeof(fresh));
        assert_int_equal(auth_dkim_generate(&fresh, gen, fx_clock(f)), 0);
        rc = auth_api_domain_dkim(f->api, &req, &fresh, &gen, &r, &err);
        auth_dkim_rec_clear(&fresh);
    }
    *code = rc < 0 ? err.code : 0;
    if (rc < 0)
        return NULL;
    PB(Domain) *d = r->domain;
    r->domain = NULL;
    auth_api_reply_free(r);
    return d;
}

static PB(Domain) * listed(fixture_t *f, const char *domain)
{
    PB(AuthDomainList) req = PB_INIT(AUTH_DOMAIN_LIST);
    PB(AuthDomainListReply) *r = NULL;
    auth_err_t err;
    assert_int_equal(auth_api_domain_list(f->api, &req, &r, &err), 0);
    PB(Domain) *found = NULL;
    for (size_t i = 0; i < r->n_domains; i++)
        if (strcmp(r->domains[i]->name, domain) == 0) {
            found = r->domains[i];
            r->domains[i] = r->domains[--r->n_domains];
            break;
        }
    auth_api_reply_free(r);
    assert_non_null(found);
    return found;
}

/* The packed bytes of a message contain no PEM private key. */
static void assert_no_private(const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *b = xmalloc(len + 1);
    protobuf_c_message_pack(m, b);
    b[len] = 0;
    assert_null(memmem(b, len, "PRIVATE KEY", 11));
    free(b);
}

static void test_add_makes_keys_and_records(void **state)
{
    fixture_t *f = *state;
    fx_tenant(f, "acme");
    PB(AuthDomainAddReply) *r = add_domain(f, "Mail.Example.TEST", 0);
    assert_false(r->verified);
    assert_int_equal(r->n_dkim, 2);
    PB(DkimKey) *rsa = r->dkim[0], *ed = r->dkim[1];
    assert_string_equal(rsa->selector, "sx1");
    assert_string_equal(rsa->algorithm, "rsa-sha256");
    assert_string_equal(rsa->txt_name, "sx1._domainkey.mail.example.test");
    char want[700];
    snprintf(want, sizeof(want), "v=DKIM1; k=rsa; p=%s", rsa->public_key);
    assert_string_equal(rsa->txt_value, want);
    assert_true(strlen(rsa->public_key) > 350); /* SPKI DER of RSA 2048 */
    assert_string_equal(ed->selector, "sx1e");
    assert_string_equal(ed->algorithm, "ed25519-sha256");
    assert_string_equal(ed->txt_name, "sx1e._domainkey.mail.example.test");
    assert_int_equal(strlen(ed->public_key), 44); /* 32 raw bytes */
    snprintf(want, sizeof(want), "v=DKIM1; k=ed25519; p=%s", ed->public_key);
    assert_string_equal(ed->txt_value, want);
    assert_true(rsa->created_at_ms > 0);
    assert_no_private(&r->base);

    /* listed with the same keys, and still no private key */
    PB(Domain) *d = listed(f, "mail.example.test");
    assert_int_equal(d->n_dkim, 2);
    assert_string_equal(d->dkim[0]->public_key, rsa->public_key);
    assert_string_equal(d->dkim[1]->txt_value, ed->txt_value);
    assert_int_equal(d->verified_at_ms, 0);
    assert_no_private(&d->base);
    PB_FN(domain, free_unpacked)(d, NULL);

    /* marking it verified later keeps the keys it has */
    PB(AuthDomainAddReply) *again = add_domain(f, "mail.example.test", 1);
    assert_true(again->verified);
    assert_int_equal(again->n_dkim, 2);
    assert_string_equal(again->dkim[0]->public_key, rsa->public_key);
    auth_api_reply_free(again);
    auth_api_reply_free(r);
}

static void test_key_get_only_when_verified(void **state)
{
    fixture_t *f = *state;
    fx_tenant(f, "acme");
    PB(AuthDomainAddReply) *added = add_domain(f, "example.test", 0);
    PB(AuthDkimKeyGetReply) * k;
    assert_int_equal(key_get(f, "example.test", &k), 404);
    assert_int_equal(key_get(f, "unknown.test", &k), 404);
    assert_int_equal(key_get(f, "not a domain", &k), 400);
    auth_api_reply_free(add_domain(f, "example.test", 1)); /* an operator vouches for it */
    assert_int_equal(key_get(f, "EXAMPLE.test", &k), 0);
    assert_string_equal(k->domain, "example.test");
    assert_int_equal(k->n_keys, 2);
    for (size_t i = 0; i < 2; i++) {
        const PB(DkimPrivateKey) *p = k->keys[i];
        dkim_alg_t alg = dkim_alg_parse(p->algorithm);
        assert_int_not_equal(alg, DKIM_ALG_NONE);
        assert_string_equal(p->selector, added->dkim[i]->selector);
        char pub[DKIM_PUBLIC_MAX];
        /* the private key is the one whose public part was published */
        assert_int_equal(dkim_public_from_pem(alg, p->private_key_pem, strlen(p->private_key_pem),
                                              pub, sizeof(pub)),
                         0);
        assert_string_equal(pub, added->dkim[i]->public_key);
        char err[128];
        dkim_key_t *key = dkim_key_from_pem(p->selector, alg, p->private_key_pem,
                                            strlen(p->private_key_pem), err, sizeof(err));
        assert_non_null(key);
        dkim_key_destroy(&key);
    }
    auth_api_reply_free(k);
    auth_api_reply_free(added);
    /* the keys survive a restart */
    fx_reopen(f);
    assert_int_equal(key_get(f, "example.test", &k), 0);
    assert_int_equal(k->n_keys, 2);
    auth_api_reply_free(k);
}

static void test_rotate_and_old_domains(void **state)
{
    fixture_t *f = *state;
    fx_tenant(f, "acme");
    /* a domain written before there were keys */
    char text[256];
    int updated;
    assert_int_equal(auth_store_domain_add(f->st, "old.test", "acme", 1, fx_clock(f), NULL,
                                           &updated, text, sizeof(text)),
                     AUTH_ST_OK);
    PB(AuthDkimKeyGetReply) * k;
    assert_int_equal(key_get(f, "old.test", &k), 0);
    assert_int_equal(k->n_keys, 0); /* verified, but nothing to sign with */
    auth_api_reply_free(k);
    unsigned code;
    PB(Domain) *d = domain_dkim(f, "old.test", 0, &code);
    assert_non_null(d);
    assert_int_equal(d->n_dkim, 2);
    assert_string_equal(d->dkim[0]->selector, "sx1");
    char first[DKIM_PUBLIC_MAX];
    snprintf(first, sizeof(first), "%s", d->dkim[1]->public_key);
    PB_FN(domain, free_unpacked)(d, NULL);

    /* asked again: the same keys */
    d = domain_dkim(f, "old.test", 0, &code);
    assert_string_equal(d->dkim[1]->public_key, first);
    PB_FN(domain, free_unpacked)(d, NULL);

    /* rotated: the next selectors, new keys, and those sign from now on */
    d = domain_dkim(f, "old.test", 1, &code);
    assert_non_null(d);
    assert_string_equal(d->dkim[0]->selector, "sx2");
    assert_string_equal(d->dkim[1]->selector, "sx2e");
    assert_string_not_equal(d->dkim[1]->public_key, first);
    assert_true(d->verified);
    PB_FN(domain, free_unpacked)(d, NULL);
    assert_int_equal(key_get(f, "old.test", &k), 0);
    assert_string_equal(k->keys[0]->selector, "sx2");
    assert_string_equal(k->keys[1]->selector, "sx2e");
    auth_api_reply_free(k);

    assert_null(domain_dkim(f, "nowhere.test", 0, &code));
    assert_int_equal(code, 404);

    /* keys made for a generation that is no longer next are refused */
    PB(AuthDomainDkim) req = PB_INIT(AUTH_DOMAIN_DKIM);
    req.domain = "old.test";
    req.rotate = 1;
    auth_dkim_rec_t stale;
    memset(&stale, 0, sizeof(stale));
    assert_int_equal(auth_dkim_generate(&stale, 2, fx_clock(f)), 0);
    PB(AuthDomainDkimReply) *r = NULL;
    auth_err_t err;
    uint32_t gen;
    assert_int_equal(auth_api_domain_dkim(f->api, &req, &stale, &gen, &r, &err), -1);
    assert_int_equal(err.code, 409);
    auth_dkim_rec_clear(&stale);
}

/* Run the verify steps with what "DNS" published for each key. */
static int verify(fixture_t *f, const char *domain, const char *const *published, int *verified,
                  char details[2][200])
{
    PB(AuthDomainVerify) req = PB_INIT(AUTH_DOMAIN_VERIFY);
    req.domain = (char *)domain;
    char dom[AUTH_DOMAIN_MAX + 1];
    auth_dkim_rec_t keys;
    auth_err_t err;
    if (auth_api_domain_verify_begin(f->api, &req, dom, &keys, &err) < 0)
        return (int)err.code;
    for (size_t i = 0; i < keys.n; i++)
        assert_null(keys.keys[i].private_pem);
    PB(DkimCheck) checks[AUTH_DKIM_KEYS_MAX];
    for (size_t i = 0; i < keys.n; i++) {
        char *txt = (char *)published[i];
        auth_dkim_check(dom, &keys.keys[i], &txt, txt ? 1 : 0, txt ? NULL : "Domain name not found",
                        &checks[i]);
    }
    PB(AuthDomainVerifyReply) *r = NULL;
    int rc = auth_api_domain_verify_finish(f->api, dom, &keys, checks, &r, &err);
    for (size_t i = 0; i < keys.n; i++)
        auth_dkim_check_clear(&checks[i]);
    auth_dkim_rec_clear(&keys);
    if (rc < 0)
        return (int)err.code;
    *verified = r->verified;
    assert_int_equal(r->n_checks, 2);
    for (size_t i = 0; i < 2; i++)
        snprintf(details[i], 200, "%s", r->checks[i]->detail);
    auth_api_reply_free(r);
    return 0;
}

static void test_verify_by_dns(void **state)
{
    fixture_t *f = *state;
    fx_tenant(f, "acme");
    PB(AuthDomainAddReply) *a = add_domain(f, "example.test", 0);
    const char *right[2] = {a->dkim[0]->txt_value, a->dkim[1]->txt_value};
    char details[2][200];
    int verified = -1;

    /* nothing published yet */
    const char *none[2] = {NULL, NULL};
    assert_int_equal(verify(f, "example.test", none, &verified, details), 0);
    assert_false(verified);
    assert_non_null(strstr(details[0], "Domain name not found"));
    PB(AuthDkimKeyGetReply) * k;
    assert_int_equal(key_get(f, "example.test", &k), 404);

    /* one right, one wrong: not verified, and the wrong one says why */
    char other[600];
    snprintf(other, sizeof(other),
             "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=");
    const char *half[2] = {right[0], other};
    assert_int_equal(verify(f, "example.test", half, &verified, details), 0);
    assert_false(verified);
    assert_string_equal(details[0], "published key matches");
    assert_non_null(strstr(details[1], "another key"));
    assert_int_equal(key_get(f, "example.test", &k), 404);

    /* the RSA record where the Ed25519 one belongs */
    const char *swapped[2] = {right[1], right[0]};
    assert_int_equal(verify(f, "example.test", swapped, &verified, details), 0);
    assert_false(verified);
    assert_non_null(strstr(details[0], "expected k=rsa"));

    /* both right: verified, with the time, and it signs */
    f->now_ms = 1700000000000ull;
    assert_int_equal(verify(f, "example.test", right, &verified, details), 0);
    assert_true(verified);
    PB(Domain) *d = listed(f, "example.test");
    assert_true(d->verified);
    assert_int_equal(d->verified_at_ms, 1700000000000ull);
    PB_FN(domain, free_unpacked)(d, NULL);
    assert_int_equal(key_get(f, "example.test", &k), 0);
    auth_api_reply_free(k);

    /* a later failed check says so but takes nothing away */
    assert_int_equal(verify(f, "example.test", none, &verified, details), 0);
    assert_false(verified);
    assert_int_equal(key_get(f, "example.test", &k), 0);
    auth_api_reply_free(k);

    /* rotated between the lookups and the answer: the check is stale */
    PB(AuthDomainVerify) req = PB_INIT(AUTH_DOMAIN_VERIFY);
    req.domain = "example.test";
    char dom[AUTH_DOMAIN_MAX + 1];
    auth_dkim_rec_t keys;
    auth_err_t err;
    assert_int_equal(auth_api_domain_verify_begin(f->api, &req, dom, &keys, &err), 0);
    unsigned code;
    PB_FN(domain, free_unpacked)(domain_dkim(f, "example.test", 1, &code), NULL);
    PB(DkimCheck) checks[2];
    for (size_t i = 0; i < 2; i++) {
        char *txt = (char *)right[i];
        auth_dkim_check(dom, &keys.keys[i], &txt, 1, NULL, &checks[i]);
    }
    PB(AuthDomainVerifyReply) *r = NULL;
    assert_int_equal(auth_api_domain_verify_finish(f->api, dom, &keys, checks, &r, &err), -1);
    assert_int_equal(err.code, 409);
    for (size_t i = 0; i < 2; i++)
        auth_dkim_check_clear(&checks[i]);
    auth_dkim_rec_clear(&keys);

    /* a domain without keys cannot be checked */
    char text[256];
    int updated;
    assert_int_equal(auth_store_domain_add(f->st, "bare.test", "acme", 0, fx_clock(f), NULL,
                                           &updated, text, sizeof(text)),
                     AUTH_ST_OK);
    assert_int_equal(verify(f, "bare.test", right, &verified, details), 409);
    assert_int_equal(verify(f, "unknown.test", right, &verified, details), 404);
    auth_api_reply_free(a);
}

static void test_check_details(void **state)
{
    (void)state;
    auth_dkim_key_t key = {.selector = "sx1e", .alg = DKIM_ALG_ED25519_SHA256};
    key.public_b64 = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    static const struct {
        const char *txts[3];
        size_t n;
        int found, matches;
        const char *detail;
    } cases[] = {
        {{"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="},
         1,
         1,
         1,
         "published key matches"},
        /* folded and spaced as zone files do */
        {{"v=DKIM1;k=ed25519;\tp=11qYAYKxCrfVS/7TyWQH Og7hcvPapiMlrwIaaPcHURo="},
         1,
         1,
         1,
         "published key matches"},
        {{"v=spf1 -all", "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="},
         2,
         1,
         1,
         "published key matches"},
        {{"v=DKIM1; k=ed25519; p="}, 1, 1, 0, "published key is empty (revoked)"},
        {{"v=DKIM1; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="},
         1,
         1,
         0,
         "published k=rsa, expected k=ed25519"},
        {{"v=spf1 -all"},
         1,
         0,
         0,
         "not a DKIM key record (v= is not DKIM1 or not the first tag): v=spf1 -all"},
        {{NULL}, 0, 0, 0, "no record: no TXT record at that name"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        PB(DkimCheck) c;
        int m = auth_dkim_check("example.test", &key, (char *const *)cases[i].txts, cases[i].n,
                                NULL, &c);
        assert_int_equal(m, cases[i].matches);
        assert_int_equal(c.found, cases[i].found);
        assert_int_equal(c.matches, cases[i].matches);
        assert_string_equal(c.detail, cases[i].detail);
        assert_string_equal(c.txt_name, "sx1e._domainkey.example.test");
        auth_dkim_check_clear(&c);
    }
}

static void test_key_record_bytes(void **state)
{
    fixture_t *f = *state;
    auth_dkim_rec_t rec, back;
    memset(&rec, 0, sizeof(rec));
    assert_int_equal(auth_dkim_generate(&rec, 7, fx_clock(f)), 0);
    rec.verified_at_ms = 12345;
    buf_t b;
    buf_init(&b, AUTH_RECORD_MAX);
    assert_int_equal(auth_record_dkim_encode(&rec, &b), 0);
    assert_int_equal(auth_record_dkim_decode(buf_head(&b), buf_used(&b), &back), 0);
    assert_int_equal(back.generation, 7);
    assert_int_equal(back.verified_at_ms, 12345);
    assert_int_equal(back.n, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_string_equal(back.keys[i].selector, rec.keys[i].selector);
        assert_int_equal(back.keys[i].alg, rec.keys[i].alg);
        assert_string_equal(back.keys[i].public_b64, rec.keys[i].public_b64);
        assert_string_equal(back.keys[i].private_pem, rec.keys[i].private_pem);
        assert_int_equal(back.keys[i].created_at_ms, rec.keys[i].created_at_ms);
    }
    assert_string_equal(back.keys[0].selector, "sx7");
    assert_string_equal(back.keys[1].selector, "sx7e");
    auth_dkim_rec_clear(&back);
    /* every truncation is refused */
    for (size_t n = 0; n < buf_used(&b); n++) {
        if (auth_record_dkim_decode(buf_head(&b), n, &back) == 0) {
            /* only a cut exactly between whole fields can decode, with fewer keys */
            assert_true(back.n < 2);
            auth_dkim_rec_clear(&back);
        }
    }
    /* another kind of record is refused */
    const uint8_t domain_rec[] = {'D', 1};
    assert_int_equal(auth_record_dkim_decode(domain_rec, sizeof(domain_rec), &back), -1);
    buf_free(&b);
    auth_dkim_rec_clear(&rec);
    auth_dkim_rec_clear(&rec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_add_makes_keys_and_records, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_key_get_only_when_verified, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_rotate_and_old_domains, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_verify_by_dns, fx_setup, fx_teardown),
        cmocka_unit_test(test_check_details),
        cmocka_unit_test_setup_teardown(test_key_record_bytes, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
