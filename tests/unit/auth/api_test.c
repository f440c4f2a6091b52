/*
 * api_test: auth's request handlers on a temporary store, called without a
 * bus: tenants, domains and credentials (syntax, duplicates, ownership,
 * the verified flag), listing, and login verification (success, the one
 * reply for every bad login, authzid, domain resolution, cache, events,
 * logs, the split steps). Lockouts, allowlists and tokens: verify_test.
 */
#include "auth_fixture.h"

#include <fcntl.h>
#include <time.h>

/* ---- tenants ---- */

static unsigned tenant_add_code(fixture_t *f, const char *name)
{
    PB(AuthTenantAdd) req = PB_INIT(AUTH_TENANT_ADD);
    req.name = (char *)name;
    PB(AuthTenantAddReply) * r;
    auth_err_t err;
    int rc = auth_api_tenant_add(f->api, &req, &r, &err);
    if (rc == 0) {
        assert_non_null(r->tenant);
        assert_string_equal(r->tenant->name, name);
        assert_true(r->tenant->created_at_ms > 0);
        auth_api_reply_free(r);
        return 0;
    }
    assert_null(r);
    assert_true(err.text[0] != '\0');
    return err.code;
}

static void test_tenant_add(void **state)
{
    fixture_t *f = *state;
    char max[65], over[66];
    memset(max, 'a', 64);
    max[64] = '\0';
    memset(over, 'a', 65);
    over[65] = '\0';
    static const char *const good[] = {"acme", "a", "acme-1.x_y", "0"};
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(tenant_add_code(f, good[i]), 0);
    assert_int_equal(tenant_add_code(f, max), 0);
    static const char *const bad[] = {"", "Acme", "a b", "ac/me", "acme\n", "tenant@x", "é"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(tenant_add_code(f, bad[i]), 400);
    assert_int_equal(tenant_add_code(f, over), 400);
    assert_int_equal(tenant_add_code(f, "acme"), 409);

    auth_err_t err;
    PB(AuthTenantAddReply) * r;
    assert_int_equal(auth_api_tenant_add(f->api, NULL, &r, &err), -1);
    assert_int_equal(err.code, 400);

    auth_stats_t s;
    auth_api_stats(f->api, &s);
    assert_int_equal(s.tenants, 5);
}

static void test_tenant_list_with_domains(void **state)
{
    fixture_t *f = *state;
    fx_tenant(f, "beta");
    fx_tenant(f, "acme");
    fx_tenant(f, "acme2"); /* a name that starts with another must not see its domains */
    fx_domain(f, "b.example", "acme");
    fx_domain(f, "a.example", "acme");
    fx_domain(f, "c.example", "acme2");
    PB(AuthTenantListReply) * r;
    auth_err_t err;
    assert_int_equal(auth_api_tenant_list(f->api, NULL, &r, &err), 0);
    assert_int_equal(r->n_tenants, 3);
    assert_string_equal(r->tenants[0]->name, "acme");
    assert_int_equal(r->tenants[0]->n_domains, 2);
    assert_string_equal(r->tenants[0]->domains[0], "a.example");
    assert_string_equal(r->tenants[0]->domains[1], "b.example");
    assert_string_equal(r->tenants[1]->name, "acme2");
    assert_int_equal(r->tenants[1]->n_domains, 1);
    assert_string_equal(r->tenants[1]->domains[0], "c.example");
    assert_string_equal(r->tenants[2]->name, "beta");
    assert_int_equal(r->tenants[2]->n_domains, 0);
    auth_api_reply_free(r);
}

/* ---- domains ---- */

static unsigned domain_add(fixture_t *f, const char *domain, const char *tenant, char *text,
                           size_t size)
{
    PB(AuthDomainAdd) req = PB_INIT(AUTH_DOMAIN_ADD);
    req.domain = (char *)domain;
    req.tenant = (char *)tenant;
    PB(AuthDomainAddReply) * r;
    auth_err_t err;
    if (auth_api_domain_add(f->api, &req, &r, &err) == 0) {
        if (text)
            snprintf(text, size, "%s %s", r->domain, r->tenant);
        auth_api_reply_free(r);
        return 0;
    }
    if (text)
        snprintf(text, size, "%s", err.text);
    return err.code;
}

static void test_domain_add(void **state)
{
    fixture_t *f = *state;
    char text[300];
    fx_tenant(f, "acme");
    fx_tenant(f, "other");
    assert_int_equal(domain_add(f, "example.test", "nobody", text, sizeof(text)), 404);
    assert_non_null(strstr(text, "nobody"));
    assert_int_equal(domain_add(f, "Mail.Example.TEST", "acme", text, sizeof(text)), 0);
    assert_string_equal(text, "mail.example.test acme");
    /* again, in any case, for the same tenant or another */
    assert_int_equal(domain_add(f, "mail.example.test", "acme", text, sizeof(text)), 409);
    assert_non_null(strstr(text, "this tenant"));
    assert_int_equal(domain_add(f, "MAIL.example.test", "other", text, sizeof(text)), 409);
    assert_non_null(strstr(text, "another tenant"));

    static const char *const bad[] = {
        "",        "-bad.test", "bad-.test",     "a..test",     "exa mple.test", "[192.0.2.1]",
        "a.test.", ".a.test",   "ex_ample.test", "user@a.test", "bücher.test"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (domain_add(f, bad[i], "acme", NULL, 0) != 400)
            fail_msg("domain \"%s\" not refused with 400", bad[i]);
    }
    char longd[300];
    memset(longd, 'a', sizeof(longd) - 1);
    longd[sizeof(longd) - 1] = '\0';
    assert_int_equal(domain_add(f, longd, "acme", NULL, 0), 400);
    assert_int_equal(domain_add(f, "ok.test", "Bad Tenant", NULL, 0), 400);

    /* a refused domain left nothing behind */
    PB(AuthTenantListReply) * r;
    auth_err_t err;
    assert_int_equal(auth_api_tenant_list(f->api, NULL, &r, &err), 0);
    assert_int_equal(r->tenants[0]->n_domains, 1);
    assert_int_equal(r->tenants[1]->n_domains, 0);
    auth_api_reply_free(r);
}

/* Only verified domains reach a login; tenants list them all. */
static void test_domain_verified(void **state)
{
    fixture_t *f = *state;
    fx_tenant(f, "acme");
    fx_domain_v(f, "a.test", "acme", 1);
    fx_domain_v(f, "b.test", "acme", 0);
    const char *own[] = {"b.test", "a.test"};
    fx_cred(f, "all", "password-1", "acme", NULL, 0);
    fx_cred(f, "own", "password-2", "acme", own, 2); /* an unverified domain may be named */

    PB(AuthLoginVerifyReply) *r = fx_verify(f, "all", "password-1");
    assert_true(r->ok);
    assert_int_equal(r->n_domains, 1);
    assert_string_equal(r->domains[0], "a.test");
    auth_api_reply_free(r);
    r = fx_verify(f, "own", "password-2");
    assert_int_equal(r->n_domains, 1);
    assert_string_equal(r->domains[0], "a.test");
    auth_api_reply_free(r);

    PB(AuthTenantListReply) * tl;
    auth_err_t err;
    assert_int_equal(auth_api_tenant_list(f->api, NULL, &tl, &err), 0);
    assert_int_equal(tl->tenants[0]->n_domains, 2);
    auth_api_reply_free(tl);

    /* adding it again as verified marks it verified; it reaches logins at once */
    PB(AuthDomainAdd) req = PB_INIT(AUTH_DOMAIN_ADD);
    req.domain = (char *)"B.test";
    req.tenant = (char *)"acme";
    req.verified = 1;
    PB(AuthDomainAddReply) * dr;
    assert_int_equal(auth_api_domain_add(f->api, &req, &dr, &err), 0);
    assert_string_equal(dr->domain, "b.test");
    assert_true(dr->verified);
    auth_api_reply_free(dr);
    r = fx_verify(f, "own", "password-2");
    assert_int_equal(r->n_domains, 2);
    assert_string_equal(r->domains[0], "b.test");
    auth_api_reply_free(r);
    /* a repeat that changes nothing, or would unverify, is a conflict */
    assert_int_equal(auth_api_domain_add(f->api, &req, &dr, &err), -1);
    assert_int_equal(err.code, 409);
    req.verified = 0;
    assert_int_equal(auth_api_domain_add(f->api, &req, &dr, &err), -1);
    assert_int_equal(err.code, 409);
    /* and another tenant cannot take it by claiming it verified */
    fx_tenant(f, "other");
    req.tenant = (char *)"other";
    req.verified = 1;
    assert_int_equal(auth_api_domain_add(f->api, &req, &dr, &err), -1);
    assert_int_equal(err.code, 409);
    assert_non_null(strstr(err.text, "another tenant"));
}

static void test_domain_list(void **state)
{
    fixture_t *f = *state;
    fx_tenant(f, "acme");
    fx_tenant(f, "beta");
    f->now_ms = 1700000000000ull;
    fx_domain_v(f, "z.test", "acme", 1);
    f->now_ms += 1000;
    fx_domain_v(f, "m.test", "beta", 0);
    fx_domain_v(f, "a.test", "acme", 0);
    PB(AuthDomainList) req = PB_INIT(AUTH_DOMAIN_LIST);
    PB(AuthDomainListReply) * r;
    auth_err_t err;
    assert_int_equal(auth_api_domain_list(f->api, &req, &r, &err), 0);
    assert_int_equal(r->n_domains, 3);
    assert_string_equal(r->domains[0]->name, "a.test");
    assert_string_equal(r->domains[0]->tenant, "acme");
    assert_false(r->domains[0]->verified);
    assert_int_equal(r->domains[0]->created_at_ms, 1700000001000ull);
    assert_string_equal(r->domains[1]->name, "m.test");
    assert_string_equal(r->domains[1]->tenant, "beta");
    assert_string_equal(r->domains[2]->name, "z.test");
    assert_true(r->domains[2]->verified);
    assert_int_equal(r->domains[2]->created_at_ms, 1700000000000ull);
    auth_api_reply_free(r);

    req.tenant = (char *)"acme";
    assert_int_equal(auth_api_domain_list(f->api, &req, &r, &err), 0);
    assert_int_equal(r->n_domains, 2);
    assert_string_equal(r->domains[0]->name, "a.test");
    assert_string_equal(r->domains[1]->name, "z.test");
    auth_api_reply_free(r);
    fx_tenant(f, "empty");
    req.tenant = (char *)"empty";
    assert_int_equal(auth_api_domain_list(f->api, &req, &r, &err), 0);
    assert_int_equal(r->n_domains, 0);
    auth_api_reply_free(r);
    req.tenant = (char *)"nobody";
    assert_int_equal(auth_api_domain_list(f->api, &req, &r, &err), -1);
    assert_int_equal(err.code, 404);
    req.tenant = (char *)"Bad Name";
    assert_int_equal(auth_api_domain_list(f->api, &req, &r, &err), -1);
    assert_int_equal(err.code, 400);
    assert_int_equal(auth_api_domain_list(f->api, NULL, &r, &err), 0);
    assert_int_equal(r->n_domains, 3);
    auth_api_reply_free(r);
}

/* ---- credentials ---- */

static void test_credential_add_checks(void **state)
{
    fixture_t *f = *state;
    auth_err_t err;
    fx_tenant(f, "acme");
    fx_tenant(f, "other");
    fx_domain(f, "acme.test", "acme");
    fx_domain(f, "other.test", "other");

    assert_int_equal(fx_cred_try(f, "u1", "password1", "nobody", NULL, NULL, 0, &err), 404);
    assert_non_null(strstr(err.text, "nobody"));
    char longname[130];
    memset(longname, 'u', 129);
    longname[129] = '\0';
    static const char *const bad_users[] = {"", "has space", "tab\there", "caf\xc3\xa9", "del\x7f"};
    for (size_t i = 0; i < sizeof(bad_users) / sizeof(bad_users[0]); i++)
        assert_int_equal(fx_cred_try(f, bad_users[i], "password1", "acme", NULL, NULL, 0, NULL),
                         400);
    assert_int_equal(fx_cred_try(f, longname, "password1", "acme", NULL, NULL, 0, NULL), 400);
    longname[128] = '\0';
    assert_int_equal(fx_cred_try(f, longname, "password1", "acme", NULL, NULL, 0, NULL), 0);

    assert_int_equal(fx_cred_try(f, "u1", "short7!", "acme", NULL, NULL, 0, &err), 400);
    assert_non_null(strstr(err.text, "at least 8"));
    assert_int_equal(fx_cred_try(f, "u1", "password1", "acme", "prod", NULL, 0, &err), 400);
    assert_int_equal(fx_cred_try(f, "u1", "password1", "Acme", NULL, NULL, 0, NULL), 400);

    const char *theirs[] = {"acme.test", "other.test"};
    assert_int_equal(fx_cred_try(f, "u1", "password1", "acme", NULL, theirs, 2, &err), 400);
    assert_non_null(strstr(err.text, "other.test"));
    const char *unknown[] = {"nowhere.test"};
    assert_int_equal(fx_cred_try(f, "u1", "password1", "acme", NULL, unknown, 1, &err), 404);
    const char *malformed[] = {"not a domain"};
    assert_int_equal(fx_cred_try(f, "u1", "password1", "acme", NULL, malformed, 1, NULL), 400);

    /* none of the refusals created the user */
    assert_int_equal(fx_cred_try(f, "u1", "password1", "acme", "staging", NULL, 0, NULL), 0);
    assert_int_equal(fx_cred_try(f, "u1", "password2", "acme", NULL, NULL, 0, &err), 409);
    assert_non_null(strstr(err.text, "u1"));
    /* usernames are exact: another case is another user */
    assert_int_equal(fx_cred_try(f, "U1", "password2", "acme", NULL, NULL, 0, NULL), 0);

    auth_stats_t s;
    auth_api_stats(f->api, &s);
    assert_int_equal(s.credentials, 3);
}

static void test_credential_add_reply(void **state)
{
    fixture_t *f = *state;
    fx_tenant(f, "acme");
    fx_domain(f, "acme.test", "acme");
    fx_domain(f, "news.acme.test", "acme");
    PB(AuthCredentialAdd) req = PB_INIT(AUTH_CREDENTIAL_ADD);
    const char *doms[] = {"News.Acme.Test", "acme.test", "news.acme.test"};
    req.username = (char *)"app@acme.test";
    req.password = (char *)"hunter2-but-longer";
    req.tenant = (char *)"acme";
    req.domains = (char **)doms;
    req.n_domains = 3;
    PB(AuthCredentialAddReply) * r;
    auth_err_t err;
    assert_int_equal(auth_api_credential_add(f->api, &req, &r, &err), 0);
    PB(Credential) *c = r->credential;
    assert_non_null(c);
    assert_string_equal(c->username, "app@acme.test");
    assert_string_equal(c->tenant, "acme");
    assert_string_equal(c->environment, "production"); /* the default */
    assert_int_equal(c->password_count, 1);
    assert_false(c->revoked);
    assert_true(c->created_at_ms > 0);
    /* lowercased, duplicates dropped, order kept */
    assert_int_equal(c->n_domains, 2);
    assert_string_equal(c->domains[0], "news.acme.test");
    assert_string_equal(c->domains[1], "acme.test");
    /* neither the password nor its hash travels back */
    size_t len = PB_FN(auth_credential_add_reply, get_packed_size)(r);
    uint8_t *packed = xmalloc(len);
    PB_FN(auth_credential_add_reply, pack)(r, packed);
    assert_null(memmem(packed, len, "hunter2", 7));
    assert_null(memmem(packed, len, "$scrypt$", 8));
    free(packed);
    auth_api_reply_free(r);
}

static void test_credential_list(void **state)
{
    fixture_t *f = *state;
    fx_tenant(f, "acme");
    fx_tenant(f, "beta");
    fx_cred(f, "b-user", "password1", "beta", NULL, 0);
    fx_cred(f, "a-user", "password1", "acme", NULL, 0);
    fx_cred(f, "c-user", "password1", "acme", NULL, 0);

    PB(AuthCredentialList) req = PB_INIT(AUTH_CREDENTIAL_LIST);
    PB(AuthCredentialListReply) * r;
    auth_err_t err;
    assert_int_equal(auth_api_credential_list(f->api, &req, &r, &err), 0);
    assert_int_equal(r->n_credentials, 3);
    assert_string_equal(r->credentials[0]->username, "a-user");
    assert_string_equal(r->credentials[1]->username, "b-user");
    assert_string_equal(r->credentials[2]->username, "c-user");
    assert_int_equal(r->credentials[0]->password_count, 1);
    auth_api_reply_free(r);

    req.tenant = (char *)"acme";
    assert_int_equal(auth_api_credential_list(f->api, &req, &r, &err), 0);
    assert_int_equal(r->n_credentials, 2);
    assert_string_equal(r->credentials[0]->tenant, "acme");
    assert_string_equal(r->credentials[1]->tenant, "acme");
    auth_api_reply_free(r);

    req.tenant = (char *)"nobody";
    assert_int_equal(auth_api_credential_list(f->api, &req, &r, &err), -1);
    assert_int_equal(err.code, 404);
    req.tenant = (char *)"Bad Name";
    assert_int_equal(auth_api_credential_list(f->api, &req, &r, &err), -1);
    assert_int_equal(err.code, 400);
}

/* ---- verification ---- */

static void setup_acme(fixture_t *f)
{
    fx_tenant(f, "acme");
    fx_domain(f, "acme.test", "acme");
    fx_domain(f, "b.acme.test", "acme");
    fx_cred(f, "app", "correct-password", "acme", NULL, 0);
}

static void test_verify_ok(void **state)
{
    fixture_t *f = *state;
    setup_acme(f);
    PB(AuthLoginVerifyReply) *r = fx_verify(f, "app", "correct-password");
    assert_true(r->ok);
    assert_int_equal(r->status->code, 235);
    assert_string_equal(r->status->enhanced, "2.7.0");
    assert_string_equal(r->status->text, "Authentication successful");
    assert_string_equal(r->tenant, "acme");
    assert_string_equal(r->username, "app");
    assert_string_equal(r->environment, "production");
    assert_int_equal(r->n_domains, 2);
    assert_string_equal(r->domains[0], "acme.test");
    assert_string_equal(r->domains[1], "b.acme.test");
    auth_api_reply_free(r);
    assert_int_equal(f->n_events, 0); /* successes publish nothing */

    /* LOGIN and a lower-case mechanism name, an authzid equal to the user */
    assert_true(fx_login_ok(f, "app", "correct-password"));
    r = fx_verify_full(f, "login", "app", "correct-password", "app");
    assert_true(r->ok);
    auth_api_reply_free(r);
}

static uint8_t *pack_reply(const PB(AuthLoginVerifyReply) * r, size_t *len)
{
    *len = PB_FN(auth_login_verify_reply, get_packed_size)(r);
    uint8_t *p = xmalloc(*len ? *len : 1);
    PB_FN(auth_login_verify_reply, pack)(r, p);
    return p;
}

/* Unknown user, wrong password, revoked-like cases: byte-identical replies. */
static void test_verify_same_reply_for_every_bad_login(void **state)
{
    fixture_t *f = *state;
    setup_acme(f);
    PB(AuthLoginVerifyReply) *wrong = fx_verify(f, "app", "wrong-password");
    PB(AuthLoginVerifyReply) *unknown = fx_verify(f, "nobody", "correct-password");
    PB(AuthLoginVerifyReply) *empty = fx_verify(f, "app", "");
    PB(AuthLoginVerifyReply) *badname = fx_verify(f, "has space", "x");
    assert_false(wrong->ok);
    assert_int_equal(wrong->status->code, 535);
    assert_string_equal(wrong->status->enhanced, "5.7.8");
    assert_string_equal(wrong->status->text, "Authentication credentials invalid");
    assert_string_equal(wrong->tenant, "");
    assert_int_equal(wrong->n_domains, 0);
    size_t lw, lu, le, lb;
    uint8_t *pw = pack_reply(wrong, &lw), *pu = pack_reply(unknown, &lu);
    uint8_t *pe = pack_reply(empty, &le), *pb = pack_reply(badname, &lb);
    assert_int_equal(lw, lu);
    assert_memory_equal(pw, pu, lw);
    assert_int_equal(lw, le);
    assert_memory_equal(pw, pe, lw);
    assert_int_equal(lw, lb);
    assert_memory_equal(pw, pb, lw);
    free(pw);
    free(pu);
    free(pe);
    free(pb);
    auth_api_reply_free(wrong);
    auth_api_reply_free(unknown);
    auth_api_reply_free(empty);
    auth_api_reply_free(badname);

    auth_stats_t s;
    auth_api_stats(f->api, &s);
    assert_int_equal(s.verify_failed, 4);
    assert_int_equal(s.verify_ok, 0);
    assert_int_equal(s.cache_entries, 0); /* failures are never cached */
}

static void test_verify_authzid(void **state)
{
    fixture_t *f = *state;
    setup_acme(f);
    fx_cred(f, "admin", "admin-password", "acme", NULL, 0);
    /* authenticating as app, asking to act as admin: refused even with app's password */
    PB(AuthLoginVerifyReply) *r = fx_verify_full(f, "PLAIN", "app", "correct-password", "admin");
    assert_false(r->ok);
    assert_int_equal(r->status->code, 535);
    assert_string_equal(r->status->enhanced, "5.7.8");
    auth_api_reply_free(r);
    assert_int_equal(f->n_events, 1);
    assert_string_equal(f->events[0].reason, "authzid_mismatch");
    /* the same for an unknown authzid */
    r = fx_verify_full(f, "PLAIN", "app", "correct-password", "nobody");
    assert_false(r->ok);
    auth_api_reply_free(r);
    r = fx_verify_full(f, "PLAIN", "app", "correct-password", "app");
    assert_true(r->ok);
    auth_api_reply_free(r);
}

static void test_verify_mechanism_and_limits(void **state)
{
    fixture_t *f = *state;
    setup_acme(f);
    PB(AuthLoginVerifyReply) *r = fx_verify_full(f, "CRAM-MD5", "app", "correct-password", NULL);
    assert_false(r->ok);
    assert_int_equal(r->status->code, 504);
    auth_api_reply_free(r);
    r = fx_verify_full(f, "", "app", "correct-password", NULL);
    assert_true(r->ok); /* an empty mechanism is PLAIN */
    auth_api_reply_free(r);

    /* a secret longer than any password is refused without a lookup */
    char *big = xmalloc(AUTH_PASSWORD_MAX + 2);
    memset(big, 'x', AUTH_PASSWORD_MAX + 1);
    big[AUTH_PASSWORD_MAX + 1] = '\0';
    assert_false(fx_login_ok(f, "app", big));
    free(big);
    /* a NULL request is a refusal too, not a crash */
    r = auth_api_login_verify(f->api, NULL);
    assert_false(r->ok);
    assert_int_equal(r->status->code, 535);
    auth_api_reply_free(r);
    /* a secret with a NUL byte never matches, not even the password plus a NUL */
    PB(AuthLoginVerify) req = PB_INIT(AUTH_LOGIN_VERIFY);
    req.username = (char *)"app";
    req.secret.data = (uint8_t *)"correct-password\0";
    req.secret.len = 17;
    r = auth_api_login_verify(f->api, &req);
    assert_false(r->ok);
    assert_int_equal(r->status->code, 535);
    auth_api_reply_free(r);
    req.secret.data = (uint8_t *)"correct-password\0x";
    req.secret.len = 18;
    r = auth_api_login_verify(f->api, &req);
    assert_false(r->ok);
    auth_api_reply_free(r);
}

static void test_verify_domain_resolution(void **state)
{
    fixture_t *f = *state;
    fx_tenant(f, "acme");
    fx_tenant(f, "other");
    fx_domain(f, "a.test", "acme");
    fx_domain(f, "b.test", "acme");
    fx_domain(f, "z.test", "other");
    const char *own[] = {"b.test"};
    fx_cred(f, "all-domains", "password-1", "acme", NULL, 0);
    fx_cred(f, "one-domain", "password-2", "acme", own, 1);

    PB(AuthLoginVerifyReply) *r = fx_verify(f, "all-domains", "password-1");
    assert_true(r->ok);
    assert_int_equal(r->n_domains, 2);
    assert_string_equal(r->domains[0], "a.test");
    assert_string_equal(r->domains[1], "b.test");
    auth_api_reply_free(r);

    r = fx_verify(f, "one-domain", "password-2");
    assert_true(r->ok);
    assert_int_equal(r->n_domains, 1);
    assert_string_equal(r->domains[0], "b.test");
    auth_api_reply_free(r);

    /* a domain added to the tenant later reaches the tenant-wide login at once,
     * even through the cache, and not the login with its own list */
    fx_domain(f, "c.test", "acme");
    r = fx_verify(f, "all-domains", "password-1");
    assert_true(r->ok);
    assert_int_equal(r->n_domains, 3);
    assert_string_equal(r->domains[2], "c.test");
    auth_api_reply_free(r);
    r = fx_verify(f, "one-domain", "password-2");
    assert_int_equal(r->n_domains, 1);
    auth_api_reply_free(r);

    /* another tenant's login sees only that tenant's domains */
    fx_cred(f, "lonely", "password-3", "other", NULL, 0);
    r = fx_verify(f, "lonely", "password-3");
    assert_true(r->ok);
    assert_int_equal(r->n_domains, 1);
    assert_string_equal(r->domains[0], "z.test");
    auth_api_reply_free(r);

    /* a tenant without domains: the login passes with an empty list */
    fx_tenant(f, "bare");
    fx_cred(f, "bare-user", "password-4", "bare", NULL, 0);
    r = fx_verify(f, "bare-user", "password-4");
    assert_true(r->ok);
    assert_string_equal(r->tenant, "bare");
    assert_int_equal(r->n_domains, 0);
    auth_api_reply_free(r);
}

static void test_verify_cache(void **state)
{
    fixture_t *f = *state;
    setup_acme(f);
    auth_stats_t s;
    assert_true(fx_login_ok(f, "app", "correct-password"));
    auth_api_stats(f->api, &s);
    assert_int_equal(s.cache_hits, 0);
    assert_int_equal(s.cache_entries, 1);
    assert_true(fx_login_ok(f, "app", "correct-password"));
    assert_true(fx_login_ok(f, "app", "correct-password"));
    auth_api_stats(f->api, &s);
    assert_int_equal(s.cache_hits, 2);
    assert_int_equal(s.verify_ok, 3);
    /* a wrong password right after is checked, not served from the cache */
    assert_false(fx_login_ok(f, "app", "correct-passwor"));
    auth_api_stats(f->api, &s);
    assert_int_equal(s.cache_hits, 2);
    assert_int_equal(s.cache_entries, 1);
    /* another user with the same password does not hit app's entry */
    fx_cred(f, "app2", "other-password", "acme", NULL, 0);
    assert_false(fx_login_ok(f, "app2", "correct-password"));
    auth_api_stats(f->api, &s);
    assert_int_equal(s.cache_hits, 2);
}

/* A change to the credential (revoke, new password) retires its cached logins. */
static void test_verify_cache_invalidated_by_change(void **state)
{
    fixture_t *f = *state;
    char err[256];
    setup_acme(f);
    assert_true(fx_login_ok(f, "app", "correct-password"));
    assert_true(fx_login_ok(f, "app", "correct-password")); /* now cached */

    /* new password: the old one must stop working at once */
    auth_cred_t c;
    assert_int_equal(auth_store_cred_get(f->st, "app", &c), AUTH_ST_OK);
    uint64_t g = c.generation;
    char h[AUTH_HASH_STR_MAX];
    auth_scrypt_params_t fast = {10, 8, 1};
    assert_int_equal(auth_hash_make(&fast, "brand-new-password", 18, h, sizeof(h)), 0);
    free(c.secrets[0].hash);
    c.secrets[0].hash = xstrdup(h);
    assert_int_equal(auth_store_cred_update(f->st, &c, g, err, sizeof(err)), AUTH_ST_OK);
    assert_true(c.generation > g);
    auth_cred_clear(&c);
    auth_stats_t before, after;
    auth_api_stats(f->api, &before);
    assert_false(fx_login_ok(f, "app", "correct-password"));
    auth_api_stats(f->api, &after);
    assert_int_equal(after.cache_hits, before.cache_hits);
    assert_true(fx_login_ok(f, "app", "brand-new-password"));
    assert_true(fx_login_ok(f, "app", "brand-new-password"));

    /* revoke: even the cached new password fails */
    assert_int_equal(auth_store_cred_get(f->st, "app", &c), AUTH_ST_OK);
    c.pub->revoked = 1;
    assert_int_equal(auth_store_cred_update(f->st, &c, c.generation, err, sizeof(err)), AUTH_ST_OK);
    auth_cred_clear(&c);
    PB(AuthLoginVerifyReply) *r = fx_verify(f, "app", "brand-new-password");
    assert_false(r->ok);
    assert_int_equal(r->status->code, 535);
    auth_api_reply_free(r);
    assert_string_equal(f->events[f->n_events - 1].reason, "revoked");
}

/* Two live passwords during a rotation; an expired one no longer passes. */
static void test_verify_rotation(void **state)
{
    fixture_t *f = *state;
    char err[256], h[AUTH_HASH_STR_MAX];
    auth_scrypt_params_t fast = {10, 8, 1};
    setup_acme(f);
    auth_cred_t c;
    assert_int_equal(auth_store_cred_get(f->st, "app", &c), AUTH_ST_OK);
    assert_int_equal(auth_hash_make(&fast, "next-password", 13, h, sizeof(h)), 0);
    assert_int_equal(auth_cred_add_secret(&c, AUTH_SECRET_PASSWORD, h, 1, 0), 0);
    c.secrets[0].expires_at_ms = (uint64_t)time(NULL) * 1000 + 3600000;
    assert_int_equal(auth_store_cred_update(f->st, &c, c.generation, err, sizeof(err)), AUTH_ST_OK);
    auth_cred_clear(&c);
    assert_true(fx_login_ok(f, "app", "correct-password"));
    assert_true(fx_login_ok(f, "app", "next-password"));

    PB(AuthCredentialList) lreq = PB_INIT(AUTH_CREDENTIAL_LIST);
    PB(AuthCredentialListReply) * lr;
    auth_err_t aerr;
    assert_int_equal(auth_api_credential_list(f->api, &lreq, &lr, &aerr), 0);
    assert_int_equal(lr->credentials[0]->password_count, 2);
    auth_api_reply_free(lr);

    assert_int_equal(auth_store_cred_get(f->st, "app", &c), AUTH_ST_OK);
    c.secrets[0].expires_at_ms = 1; /* long gone */
    assert_int_equal(auth_store_cred_update(f->st, &c, c.generation, err, sizeof(err)), AUTH_ST_OK);
    auth_cred_clear(&c);
    assert_false(fx_login_ok(f, "app", "correct-password"));
    assert_true(fx_login_ok(f, "app", "next-password"));

    /* every password expired: nothing passes, the reply stays the generic one */
    assert_int_equal(auth_store_cred_get(f->st, "app", &c), AUTH_ST_OK);
    c.secrets[1].expires_at_ms = 1;
    assert_int_equal(auth_store_cred_update(f->st, &c, c.generation, err, sizeof(err)), AUTH_ST_OK);
    auth_cred_clear(&c);
    assert_false(fx_login_ok(f, "app", "next-password"));
    assert_string_equal(f->events[f->n_events - 1].reason, "no_password");
}

static void test_verify_events(void **state)
{
    fixture_t *f = *state;
    setup_acme(f);
    assert_false(fx_login_ok(f, "app", "Wrong-Secret-123"));
    assert_false(fx_login_ok(f, "ghost", "Ghost-Secret-456"));
    assert_int_equal(f->n_events, 2);
    for (size_t i = 0; i < 2; i++) {
        fx_event_t *e = &f->events[i];
        assert_string_equal(e->type, "auth_failed");
        assert_string_equal(e->client_ip, "192.0.2.7");
        assert_string_equal(e->session_id, "s1");
        assert_int_equal(e->code, 535);
        assert_null(strstr(e->all, "Secret"));
    }
    assert_string_equal(f->events[0].username, "app");
    assert_string_equal(f->events[0].reason, "bad_password");
    assert_string_equal(f->events[0].tenant, "acme");
    assert_string_equal(f->events[1].username, "ghost");
    assert_string_equal(f->events[1].reason, "unknown_user");
    assert_string_equal(f->events[1].tenant, "");
}

/* Run fn with stderr (the log) captured into buf. */
static void capture_log(void (*fn)(fixture_t *), fixture_t *f, char *buf, size_t size)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/log.txt", f->dir);
    fflush(stderr);
    int saved = dup(2);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    fn(f);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    ssize_t n = pread(fd, buf, size - 1, 0);
    close(fd);
    unlink(path);
    buf[n > 0 ? n : 0] = '\0';
}

static void logged_work(fixture_t *f)
{
    fx_tenant(f, "acme");
    fx_cred(f, "app", "Pa55word-Never-Logged", "acme", NULL, 0);
    assert_true(fx_login_ok(f, "app", "Pa55word-Never-Logged"));
    assert_false(fx_login_ok(f, "app", "Other-Never-Logged"));
    assert_false(fx_login_ok(f, "x y", "Third-Never-Logged"));
}

static void test_logs(void **state)
{
    fixture_t *f = *state;
    char log[16384];
    capture_log(logged_work, f, log, sizeof(log));
    assert_null(strstr(log, "Never-Logged"));
    assert_null(strstr(log, "$scrypt$"));
    assert_non_null(strstr(log, "event=credential_added user=app tenant=acme"));
    assert_non_null(strstr(log, "sid=s1 user=app ip=192.0.2.7 mech=PLAIN result=ok"));
    assert_non_null(strstr(log, "user=app ip=192.0.2.7 mech=PLAIN result=failed "
                                "reason=bad_password"));
    /* a username with a space is quoted, so the line still parses */
    assert_non_null(strstr(log, "user=\"x y\""));
}

/* The three steps as the daemon runs them, and the busy answer. */
static void test_verify_steps(void **state)
{
    fixture_t *f = *state;
    setup_acme(f);
    PB(AuthLoginVerify) req = PB_INIT(AUTH_LOGIN_VERIFY);
    req.username = (char *)"app";
    req.secret.data = (uint8_t *)"correct-password";
    req.secret.len = 16;
    PB(AuthLoginVerifyReply) *r = NULL;
    auth_verify_t *v = auth_api_verify_begin(f->api, &req, &r);
    assert_non_null(v);
    assert_null(r);
    auth_verify_run(v);
    r = auth_api_verify_finish(f->api, &v);
    assert_null(v);
    assert_true(r->ok);
    auth_api_reply_free(r);

    /* now cached: begin answers at once */
    v = auth_api_verify_begin(f->api, &req, &r);
    assert_null(v);
    assert_non_null(r);
    assert_true(r->ok);
    auth_api_reply_free(r);

    /* a job no worker could take gets 454, and nothing is cached or counted as failed */
    req.secret.data = (uint8_t *)"wrong-password!!";
    v = auth_api_verify_begin(f->api, &req, &r);
    assert_non_null(v);
    r = auth_api_verify_busy(f->api, &v);
    assert_false(r->ok);
    assert_int_equal(r->status->code, 454);
    assert_string_equal(r->status->enhanced, "4.7.0");
    auth_api_reply_free(r);
    auth_stats_t s;
    auth_api_stats(f->api, &s);
    assert_int_equal(s.verify_busy, 1);
    assert_int_equal(s.verify_failed, 0);

    /* a job dropped at shutdown frees cleanly */
    v = auth_api_verify_begin(f->api, &req, &r);
    assert_non_null(v);
    auth_verify_free(&v);
    assert_null(v);
    auth_verify_free(&v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tenant_add, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_tenant_list_with_domains, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_domain_add, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_domain_verified, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_domain_list, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_credential_add_checks, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_credential_add_reply, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_credential_list, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_verify_ok, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_verify_same_reply_for_every_bad_login, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_verify_authzid, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_verify_mechanism_and_limits, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_verify_domain_resolution, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_verify_cache, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_verify_cache_invalidated_by_change, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_verify_rotation, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_verify_events, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_logs, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_verify_steps, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
