/*
 * manage_test: the requests that change credentials and tenants after
 * they exist, called without a bus: rotation with and without a grace
 * period (and its expiry on a moved clock), revoke (also of a login that
 * is cached), allowlists (normal form, duplicates, absent networks, v4,
 * v6 and mapped clients), limits (exactly one of tenant and credential),
 * and the rate check ingress asks before each message.
 */
#include "auth_fixture.h"

#define HOUR_MS 3600000ull

static void setup_acme(fixture_t *f)
{
    fx_tenant(f, "acme");
    fx_domain(f, "acme.test", "acme");
    fx_cred(f, "app", "first-password", "acme", NULL, 0);
}

/* Rotate; 0 or the error code. cred (when given) gets a copy of the reply's credential. */
static unsigned rotate(fixture_t *f, const char *user, const char *pw, uint32_t grace_s,
                       PB(Credential) * *cred, auth_err_t *err_out)
{
    PB(AuthCredentialRotate) req = PB_INIT(AUTH_CREDENTIAL_ROTATE);
    req.username = (char *)user;
    req.password = (char *)pw;
    req.grace_s = grace_s;
    PB(AuthCredentialRotateReply) * r;
    auth_err_t err;
    int rc = auth_api_credential_rotate(f->api, &req, &r, &err);
    if (err_out)
        *err_out = err;
    if (rc < 0) {
        assert_null(r);
        return err.code;
    }
    if (cred) {
        *cred = r->credential;
        r->credential = NULL;
    }
    auth_api_reply_free(r);
    return 0;
}

static unsigned revoke_cred(fixture_t *f, const char *user, PB(Credential) * *cred)
{
    PB(AuthCredentialRevoke) req = PB_INIT(AUTH_CREDENTIAL_REVOKE);
    req.username = (char *)user;
    PB(AuthCredentialRevokeReply) * r;
    auth_err_t err;
    if (auth_api_credential_revoke(f->api, &req, &r, &err) < 0)
        return err.code;
    if (cred) {
        *cred = r->credential;
        r->credential = NULL;
    }
    auth_api_reply_free(r);
    return 0;
}

static void free_cred(PB(Credential) * c)
{
    auth_api_reply_free(c);
}

static PB(Credential) * listed(fixture_t *f, const char *user)
{
    PB(AuthCredentialListReply) * r;
    auth_err_t err;
    assert_int_equal(auth_api_credential_list(f->api, NULL, &r, &err), 0);
    PB(Credential) *found = NULL;
    for (size_t i = 0; i < r->n_credentials; i++) {
        if (strcmp(r->credentials[i]->username, user) == 0) {
            found = r->credentials[i];
            r->credentials[i] = r->credentials[--r->n_credentials];
            break;
        }
    }
    auth_api_reply_free(r);
    assert_non_null(found);
    return found;
}

/* ---- rotation ---- */

static void test_rotate_with_grace(void **state)
{
    fixture_t *f = *state;
    setup_acme(f);
    f->now_ms = 1700000000000ull;
    PB(Credential) * c;
    assert_int_equal(rotate(f, "app", "second-password", 3600, &c, NULL), 0);
    assert_int_equal(c->password_count, 2);
    assert_int_equal(c->rotated_at_ms, f->now_ms);
    assert_false(c->revoked);
    free_cred(c);
    assert_true(fx_login_ok(f, "app", "first-password"));
    assert_true(fx_login_ok(f, "app", "second-password"));

    /* an hour less a second later the old one still works (from the cache too) */
    f->now_ms += HOUR_MS - 1000;
    assert_true(fx_login_ok(f, "app", "first-password"));
    c = listed(f, "app");
    assert_int_equal(c->password_count, 2);
    free_cred(c);
    /* at the hour it stops, although a cached login of it is younger than the cache ttl */
    f->now_ms += 1000;
    assert_false(fx_login_ok(f, "app", "first-password"));
    assert_string_equal(f->events[f->n_events - 1].reason, "bad_password");
    assert_true(fx_login_ok(f, "app", "second-password"));
    c = listed(f, "app");
    assert_int_equal(c->password_count, 1); /* live passwords only */
    free_cred(c);

    /* a rotation inside a grace period never extends it */
    f->now_ms = 1700000000000ull + 10 * HOUR_MS;
    assert_int_equal(rotate(f, "app", "third-password", 7200, NULL, NULL), 0);
    f->now_ms += 1800 * 1000;
    assert_int_equal(rotate(f, "app", "fourth-password", 86400, &c, NULL), 0);
    assert_int_equal(c->password_count, 3);
    free_cred(c);
    f->now_ms += 5400 * 1000; /* two hours after the first of these rotations */
    assert_false(fx_login_ok(f, "app", "second-password"));
    assert_true(fx_login_ok(f, "app", "third-password"));
    assert_true(fx_login_ok(f, "app", "fourth-password"));
}

static void test_rotate_at_once(void **state)
{
    fixture_t *f = *state;
    setup_acme(f);
    /* the old password cached a moment before */
    assert_true(fx_login_ok(f, "app", "first-password"));
    assert_true(fx_login_ok(f, "app", "first-password"));
    PB(Credential) * c;
    assert_int_equal(rotate(f, "app", "second-password", 0, &c, NULL), 0);
    assert_int_equal(c->password_count, 1);
    free_cred(c);
    assert_false(fx_login_ok(f, "app", "first-password"));
    assert_true(fx_login_ok(f, "app", "second-password"));

    /* the stored record keeps only live secrets */
    auth_cred_t rec;
    assert_int_equal(auth_store_cred_get(f->st, "app", &rec), AUTH_ST_OK);
    assert_int_equal(rec.n_secrets, 1);
    auth_cred_clear(&rec);
}

static void test_rotate_refusals(void **state)
{
    fixture_t *f = *state;
    auth_err_t err;
    setup_acme(f);
    assert_int_equal(rotate(f, "nobody", "second-password", 0, NULL, &err), 404);
    assert_non_null(strstr(err.text, "nobody"));
    assert_int_equal(rotate(f, "app", "short", 0, NULL, &err), 400);
    assert_int_equal(rotate(f, "app", "second-password", AUTH_GRACE_MAX_S + 1, NULL, &err), 400);
    assert_int_equal(rotate(f, "has space", "second-password", 0, NULL, &err), 400);
    PB(AuthCredentialRotateReply) * r;
    assert_int_equal(auth_api_credential_rotate(f->api, NULL, &r, &err), -1);
    assert_int_equal(err.code, 400);
    /* none of these changed anything */
    assert_true(fx_login_ok(f, "app", "first-password"));

    /* live passwords are bounded: with long grace periods the limit is reached */
    char pw[32];
    unsigned code = 0;
    int n;
    for (n = 0; n < AUTH_SECRETS_MAX + 2 && code == 0; n++) {
        snprintf(pw, sizeof(pw), "password-%02d", n);
        code = rotate(f, "app", pw, 86400, NULL, &err);
    }
    assert_int_equal(code, 409);
    assert_int_equal(n, AUTH_SECRETS_MAX);
    assert_non_null(strstr(err.text, "grace 0"));
    /* grace 0 always works and leaves one */
    PB(Credential) * c;
    assert_int_equal(rotate(f, "app", "the-only-one", 0, &c, NULL), 0);
    assert_int_equal(c->password_count, 1);
    free_cred(c);
}

/* ---- revoke ---- */

static void test_revoke(void **state)
{
    fixture_t *f = *state;
    setup_acme(f);
    assert_int_equal(rotate(f, "app", "second-password", 3600, NULL, NULL), 0);
    /* both passwords cached a moment before the revoke */
    assert_true(fx_login_ok(f, "app", "first-password"));
    assert_true(fx_login_ok(f, "app", "second-password"));
    assert_true(fx_login_ok(f, "app", "second-password"));
    auth_stats_t s;
    auth_api_stats(f->api, &s);
    assert_true(s.cache_hits >= 1);

    PB(Credential) * c;
    assert_int_equal(revoke_cred(f, "app", &c), 0);
    assert_true(c->revoked);
    assert_int_equal(c->password_count, 0);
    free_cred(c);
    PB(AuthLoginVerifyReply) *r = fx_verify(f, "app", "second-password");
    assert_false(r->ok);
    assert_int_equal(r->status->code, 535);
    assert_string_equal(r->status->enhanced, "5.7.8");
    auth_api_reply_free(r);
    assert_string_equal(f->events[f->n_events - 1].reason, "revoked");
    assert_false(fx_login_ok(f, "app", "first-password"));

    /* again: no error, still revoked; no password can be rotated in */
    assert_int_equal(revoke_cred(f, "app", &c), 0);
    assert_true(c->revoked);
    free_cred(c);
    auth_err_t err;
    assert_int_equal(rotate(f, "app", "third-password", 0, NULL, &err), 409);
    assert_non_null(strstr(err.text, "revoked"));
    c = listed(f, "app");
    assert_true(c->revoked);
    free_cred(c);
    assert_int_equal(revoke_cred(f, "nobody", NULL), 404);
    assert_int_equal(revoke_cred(f, "", NULL), 400);
}

/* ---- allowlists ---- */

static unsigned allow(fixture_t *f, int add, const char *user, const char *net,
                      PB(AuthAllowReply) * *out)
{
    PB(AuthAllowReply) * r;
    auth_err_t err;
    int rc;
    if (add) {
        PB(AuthAllowAdd) req = PB_INIT(AUTH_ALLOW_ADD);
        req.username = (char *)user;
        req.network = (char *)net;
        rc = auth_api_allow_add(f->api, &req, &r, &err);
    } else {
        PB(AuthAllowRemove) req = PB_INIT(AUTH_ALLOW_REMOVE);
        req.username = (char *)user;
        req.network = (char *)net;
        rc = auth_api_allow_remove(f->api, &req, &r, &err);
    }
    if (rc < 0)
        return err.code;
    if (out)
        *out = r;
    else
        auth_api_reply_free(r);
    return 0;
}

static int login_from(fixture_t *f, const char *ip)
{
    PB(AuthLoginVerifyReply) *r = fx_verify_ip(f, "PLAIN", "app", "first-password", NULL, ip);
    int ok = r->ok;
    if (!ok) {
        assert_int_equal(r->status->code, 535);
        assert_string_equal(r->status->enhanced, "5.7.8");
    }
    auth_api_reply_free(r);
    return ok;
}

static void test_allowlist(void **state)
{
    fixture_t *f = *state;
    setup_acme(f);
    /* no networks: any client */
    assert_true(login_from(f, "203.0.113.9"));
    assert_true(login_from(f, "203.0.113.9")); /* cached now */

    PB(AuthAllowReply) * r;
    assert_int_equal(allow(f, 1, "app", "10.1.2.3/8", &r), 0);
    assert_string_equal(r->username, "app");
    assert_int_equal(r->n_networks, 1);
    assert_string_equal(r->networks[0], "10.0.0.0/8");
    auth_api_reply_free(r);
    assert_int_equal(allow(f, 1, "app", "2001:db8::/32", NULL), 0);
    assert_int_equal(allow(f, 1, "app", "::ffff:192.0.2.7", &r), 0);
    assert_int_equal(r->n_networks, 3);
    assert_string_equal(r->networks[2], "192.0.2.7/32");
    auth_api_reply_free(r);

    /* the cached login from outside no longer passes */
    size_t before = f->n_events;
    assert_false(login_from(f, "203.0.113.9"));
    assert_int_equal(f->n_events, before + 1);
    assert_string_equal(f->events[before].reason, "network");
    assert_string_equal(f->events[before].client_ip, "203.0.113.9");
    assert_true(login_from(f, "10.200.0.1"));
    assert_true(login_from(f, "::ffff:10.200.0.1"));
    assert_true(login_from(f, "2001:db8:5::1"));
    assert_true(login_from(f, "192.0.2.7"));
    assert_true(login_from(f, "::ffff:192.0.2.7"));
    assert_false(login_from(f, "192.0.2.8"));
    assert_false(login_from(f, "2001:db9::1"));
    assert_false(login_from(f, ""));
    assert_false(login_from(f, "garbage"));
    /* the right password from outside is still refused, with the one reply */
    PB(AuthLoginVerifyReply) *v =
        fx_verify_ip(f, "PLAIN", "app", "first-password", NULL, "198.51.100.1");
    assert_false(v->ok);
    assert_string_equal(v->status->text, "Authentication credentials invalid");
    auth_api_reply_free(v);

    /* duplicates (in any spelling), absent networks, bad ones */
    assert_int_equal(allow(f, 1, "app", "10.9.9.9/8", NULL), 409);
    assert_int_equal(allow(f, 0, "app", "172.16.0.0/12", NULL), 404);
    assert_int_equal(allow(f, 1, "app", "10.0.0.0/33", NULL), 400);
    assert_int_equal(allow(f, 1, "app", "example.test", NULL), 400);
    assert_int_equal(allow(f, 1, "nobody", "10.0.0.0/8", NULL), 404);
    assert_int_equal(allow(f, 0, "nobody", "10.0.0.0/8", NULL), 404);

    /* list, and the credential shows them */
    PB(AuthAllowList) lreq = PB_INIT(AUTH_ALLOW_LIST);
    lreq.username = (char *)"app";
    auth_err_t err;
    assert_int_equal(auth_api_allow_list(f->api, &lreq, &r, &err), 0);
    assert_int_equal(r->n_networks, 3);
    auth_api_reply_free(r);
    fx_reopen(f); /* kept in the store */
    PB(Credential) *c = listed(f, "app");
    assert_int_equal(c->n_allowed_networks, 3);
    assert_string_equal(c->allowed_networks[1], "2001:db8::/32");
    free_cred(c);

    /* removing every network opens the credential again */
    assert_int_equal(allow(f, 0, "app", "10.0.0.0/8", NULL), 0);
    assert_int_equal(allow(f, 0, "app", "2001:db8::1/32", NULL), 0);
    assert_int_equal(allow(f, 0, "app", "192.0.2.7", &r), 0);
    assert_int_equal(r->n_networks, 0);
    auth_api_reply_free(r);
    assert_true(login_from(f, "203.0.113.9"));

    /* bounded */
    char net[32];
    unsigned code = 0;
    for (int i = 0; i <= AUTH_CRED_NETWORKS_MAX && code == 0; i++) {
        snprintf(net, sizeof(net), "10.0.%d.0/24", i);
        code = allow(f, 1, "app", net, NULL);
    }
    assert_int_equal(code, 400);
}

/* ---- limits and the rate check ---- */

static unsigned limit_set(fixture_t *f, const char *tenant, const char *user, uint32_t per_minute,
                          uint32_t per_day)
{
    PB(AuthLimitSet) req = PB_INIT(AUTH_LIMIT_SET);
    req.tenant = (char *)tenant;
    req.username = (char *)user;
    req.per_minute = per_minute;
    req.per_day = per_day;
    PB(AuthLimitSetReply) * r;
    auth_err_t err;
    if (auth_api_limit_set(f->api, &req, &r, &err) < 0)
        return err.code;
    assert_int_equal(r->per_minute, per_minute);
    assert_int_equal(r->per_day, per_day);
    auth_api_reply_free(r);
    return 0;
}

/* The rate check: 0 passed, 451 refused (text and retry filled), or the error code. */
static unsigned rate_check(fixture_t *f, const char *tenant, const char *user, char *text,
                           size_t size, uint32_t *retry)
{
    PB(AuthRateCheck) req = PB_INIT(AUTH_RATE_CHECK);
    req.tenant = (char *)tenant;
    req.username = (char *)user;
    req.session_id = (char *)"sid-1";
    PB(AuthRateCheckReply) * r;
    auth_err_t err;
    if (auth_api_rate_check(f->api, &req, &r, &err) < 0) {
        if (text)
            snprintf(text, size, "%s", err.text);
        return err.code;
    }
    unsigned code = r->ok ? 0 : r->status->code;
    if (!r->ok) {
        assert_string_equal(r->status->enhanced, "4.7.1");
        assert_true(r->retry_after_s > 0);
    }
    if (text)
        snprintf(text, size, "%s", r->status->text);
    if (retry)
        *retry = r->retry_after_s;
    auth_api_reply_free(r);
    return code;
}

static void test_limit_set(void **state)
{
    fixture_t *f = *state;
    setup_acme(f);
    assert_int_equal(limit_set(f, "acme", "", 100, 1000), 0);
    assert_int_equal(limit_set(f, "", "app", 10, 0), 0);
    assert_int_equal(limit_set(f, "acme", "app", 1, 1), 400);
    assert_int_equal(limit_set(f, "", "", 1, 1), 400);
    assert_int_equal(limit_set(f, "nobody", "", 1, 1), 404);
    assert_int_equal(limit_set(f, "", "nobody", 1, 1), 404);
    assert_int_equal(limit_set(f, "Bad Name", "", 1, 1), 400);
    PB(AuthLimitSetReply) * r;
    auth_err_t err;
    assert_int_equal(auth_api_limit_set(f->api, NULL, &r, &err), -1);
    assert_int_equal(err.code, 400);

    PB(AuthTenantListReply) * tl;
    assert_int_equal(auth_api_tenant_list(f->api, NULL, &tl, &err), 0);
    assert_int_equal(tl->tenants[0]->rate_per_minute, 100);
    assert_int_equal(tl->tenants[0]->rate_per_day, 1000);
    assert_int_equal(tl->tenants[0]->n_domains, 1); /* the domains are still listed */
    auth_api_reply_free(tl);
    PB(Credential) *c = listed(f, "app");
    assert_int_equal(c->rate_per_minute, 10);
    assert_int_equal(c->rate_per_day, 0);
    free_cred(c);
    /* limits survive a restart */
    fx_reopen(f);
    c = listed(f, "app");
    assert_int_equal(c->rate_per_minute, 10);
    free_cred(c);
    /* the login still works after the change */
    assert_true(fx_login_ok(f, "app", "first-password"));
}

static void test_rate_check(void **state)
{
    fixture_t *f = *state;
    setup_acme(f);
    fx_cred(f, "app2", "other-password", "acme", NULL, 0);
    f->now_ms = 1700000000000ull;
    char text[300];
    uint32_t retry;
    /* no limits: always yes */
    for (int i = 0; i < 20; i++)
        assert_int_equal(rate_check(f, "acme", "app", NULL, 0, NULL), 0);

    assert_int_equal(limit_set(f, "", "app", 2, 0), 0);
    assert_int_equal(limit_set(f, "acme", "", 0, 3), 0);
    assert_int_equal(rate_check(f, "acme", "app", NULL, 0, NULL), 0);
    f->now_ms += 1000;
    assert_int_equal(rate_check(f, "acme", "app", NULL, 0, NULL), 0);
    f->now_ms += 1000;
    assert_int_equal(rate_check(f, "acme", "app", text, sizeof(text), &retry), 451);
    assert_string_equal(text, "Rate limit of 2 messages per minute reached for credential app; "
                              "retry in 58 seconds");
    assert_int_equal(retry, 58);
    /* the refusal counted nothing against the tenant: app2 gets the tenant's last one */
    assert_int_equal(rate_check(f, "acme", "app2", NULL, 0, NULL), 0);
    assert_int_equal(rate_check(f, "acme", "app2", text, sizeof(text), &retry), 451);
    assert_string_equal(text, "Rate limit of 3 messages per day reached for tenant acme; "
                              "retry in 86398 seconds");
    /* legacy mail names only the tenant */
    assert_int_equal(rate_check(f, "acme", "", NULL, 0, NULL), 451);
    /* a credential alone checks only the credential */
    f->now_ms += 60000;
    assert_int_equal(rate_check(f, "", "app", NULL, 0, NULL), 0);
    /* nothing named: nothing to limit */
    assert_int_equal(rate_check(f, "", "", NULL, 0, NULL), 0);

    /* errors */
    assert_int_equal(rate_check(f, "nobody", "", text, sizeof(text), NULL), 404);
    assert_int_equal(rate_check(f, "", "nobody", text, sizeof(text), NULL), 404);
    fx_tenant(f, "other");
    assert_int_equal(rate_check(f, "other", "app", text, sizeof(text), NULL), 400);
    assert_non_null(strstr(text, "belongs to tenant acme"));
    auth_stats_t s;
    auth_api_stats(f->api, &s);
    assert_true(s.rate_refused >= 3);
    assert_true(auth_api_rate_pending(f->api) > 0);
    assert_int_equal(auth_api_rate_flush(f->api), 0);
    assert_int_equal(auth_api_rate_pending(f->api), 0);
}

/* The day counts survive a restart once flushed. */
static void test_rate_check_persists(void **state)
{
    fixture_t *f = *state;
    setup_acme(f);
    f->now_ms = 1700000000000ull;
    assert_int_equal(limit_set(f, "", "app", 0, 2), 0);
    assert_int_equal(rate_check(f, "acme", "app", NULL, 0, NULL), 0);
    assert_int_equal(auth_api_rate_flush(f->api), 0);
    fx_reopen(f);
    f->now_ms += 3600000;
    assert_int_equal(rate_check(f, "acme", "app", NULL, 0, NULL), 0);
    uint32_t retry;
    assert_int_equal(rate_check(f, "acme", "app", NULL, 0, &retry), 451);
    assert_int_equal(retry, 86400 - 3600);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rotate_with_grace, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_rotate_at_once, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_rotate_refusals, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_revoke, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_allowlist, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_limit_set, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_rate_check, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_rate_check_persists, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
