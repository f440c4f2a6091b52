/*
 * verify_test: the login rules added to password checks, through the api
 * with a clock the test moves: lockouts per client and per user (421 with
 * the wait, unchecked, ended on time, cleared by a success), a credential
 * changed while its check ran on a worker (revoke, rotation, allowlist),
 * and bearer-token logins (XOAUTH2, OAUTHBEARER) with keys made here:
 * good HS256, RS256 and ES256 tokens, and every refusal with the RFC 7628
 * error JSON, unknown and revoked credentials, allowlists and lockouts
 * applying to tokens as to passwords, and no token in any log.
 */
#include "auth_fixture.h"
#include "jwt_fixture.h"

#include <fcntl.h>

#define T0   1700000000000ull
#define MIN  60000ull
#define USER "app@acme.test"

static jf_keys_t keys;
static auth_jwt_issuers_t *issuers;

static int group_setup(void **state)
{
    (void)state;
    const char *base = getenv("SENDARIX_TEST_TMP");
    if (base == NULL || *base == '\0')
        base = "/tmp";
    fx_mkdirs(base);
    if (jf_keys_make(&keys, base) < 0)
        return -1;
    char err[512];
    issuers = auth_jwt_issuers_new();
    if (auth_jwt_issuers_add(issuers, JF_ISS_HS, JF_AUD, "HS256", JF_SECRET, NULL, err,
                             sizeof(err)) < 0 ||
        auth_jwt_issuers_add(issuers, JF_ISS_RS, JF_AUD, "RS256", NULL, keys.rsa_pem, err,
                             sizeof(err)) < 0 ||
        auth_jwt_issuers_add(issuers, JF_ISS_ES, JF_AUD, "ES256", NULL, keys.ec_pem, err,
                             sizeof(err)) < 0)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    auth_jwt_issuers_destroy(&issuers);
    jf_keys_free(&keys);
    return 0;
}

/* A fixture with lockouts at 3 failures in 10 minutes, for 15 minutes, and the issuers. */
static int setup(void **state)
{
    if (fx_setup(state) < 0)
        return -1;
    fixture_t *f = *state;
    f->conf.lockout = (auth_guard_conf_t){3, 10 * MIN, 15 * MIN, 1000};
    f->conf.oauth = issuers;
    fx_reopen(f);
    f->now_ms = T0;
    fx_tenant(f, "acme");
    fx_domain(f, "acme.test", "acme");
    fx_cred(f, USER, "right-password", "acme", NULL, 0);
    return 0;
}

static PB(AuthLoginVerifyReply) *
    login(fixture_t *f, const char *mech, const char *user, const char *secret, const char *ip)
{
    return fx_verify_ip(f, mech, user, secret, NULL, ip);
}

/* The status code of a login. */
static unsigned code_of(fixture_t *f, const char *mech, const char *user, const char *secret,
                        const char *ip)
{
    PB(AuthLoginVerifyReply) *r = login(f, mech, user, secret, ip);
    unsigned code = r->status->code;
    assert_int_equal(r->ok, code == 235);
    auth_api_reply_free(r);
    return code;
}

/* ---- lockouts ---- */

static void test_lockout_per_client(void **state)
{
    fixture_t *f = *state;
    /* names that are no credential: only the client's count grows */
    static const char *const names[] = {"admin", "root", "test"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(code_of(f, "PLAIN", names[i], "guess", "192.0.2.7"), 535);
    /* the right password from that client is not even checked */
    PB(AuthLoginVerify) req = PB_INIT(AUTH_LOGIN_VERIFY);
    req.username = (char *)USER;
    req.secret.data = (uint8_t *)"right-password";
    req.secret.len = 14;
    req.client_ip = (char *)"192.0.2.7";
    req.session_id = (char *)"s9";
    PB(AuthLoginVerifyReply) *r = NULL;
    auth_verify_t *v = auth_api_verify_begin(f->api, &req, &r);
    assert_null(v); /* answered at once: no hash job */
    assert_non_null(r);
    assert_false(r->ok);
    assert_int_equal(r->status->code, 421);
    assert_string_equal(r->status->enhanced, "4.7.0");
    assert_string_equal(r->status->text,
                        "Too many authentication failures; try again in 900 seconds");
    assert_int_equal(r->retry_after_s, 900);
    auth_api_reply_free(r);
    fx_event_t *e = &f->events[f->n_events - 1];
    assert_string_equal(e->reason, "locked_out");
    assert_int_equal(e->code, 421);
    assert_string_equal(e->session_id, "s9");
    /* the same client in its IPv4-mapped spelling is the same client */
    assert_int_equal(code_of(f, "PLAIN", USER, "right-password", "::ffff:192.0.2.7"), 421);
    /* another client logs in: the user is not locked */
    f->now_ms += 1000;
    assert_int_equal(code_of(f, "PLAIN", USER, "right-password", "192.0.2.8"), 235);
    /* the wait shrinks with time, and ends */
    f->now_ms = T0 + 10 * MIN;
    r = login(f, "PLAIN", USER, "right-password", "192.0.2.7");
    assert_int_equal(r->retry_after_s, 300);
    auth_api_reply_free(r);
    f->now_ms = T0 + 15 * MIN;
    assert_int_equal(code_of(f, "PLAIN", USER, "right-password", "192.0.2.7"), 235);
    auth_stats_t s;
    auth_api_stats(f->api, &s);
    assert_int_equal(s.verify_locked, 3);
    assert_int_equal(s.lockouts, 1);
    assert_int_equal(s.verify_failed, 3); /* locked attempts are not failures of their own */
}

static void test_lockout_per_user(void **state)
{
    fixture_t *f = *state;
    /* three failures for the user from three clients lock the user, from anywhere */
    assert_int_equal(code_of(f, "PLAIN", USER, "wrong-1", "198.51.100.1"), 535);
    assert_int_equal(code_of(f, "LOGIN", USER, "wrong-2", "198.51.100.2"), 535);
    assert_int_equal(code_of(f, "PLAIN", USER, "wrong-3", "2001:db8::1"), 535);
    assert_int_equal(code_of(f, "PLAIN", USER, "right-password", "203.0.113.50"), 421);
    /* other users are free */
    fx_cred(f, "other", "other-password", "acme", NULL, 0);
    assert_int_equal(code_of(f, "PLAIN", "other", "other-password", "203.0.113.50"), 235);
    /* IPv6 clients are counted by /64 */
    assert_int_equal(code_of(f, "PLAIN", "other", "x-1", "2001:db8:1:2::1"), 535);
    assert_int_equal(code_of(f, "PLAIN", "nobody", "x-2", "2001:db8:1:2::2"), 535);
    assert_int_equal(code_of(f, "PLAIN", "nobody", "x-3", "2001:db8:1:2:ffff::3"), 535);
    assert_int_equal(code_of(f, "PLAIN", "other", "other-password", "2001:db8:1:2::99"), 421);
    assert_int_equal(code_of(f, "PLAIN", "other", "other-password", "2001:db8:1:3::99"), 235);
}

/* Unknown users count against the client only: no table entry per guessed name. */
static void test_unknown_users_count_against_client(void **state)
{
    fixture_t *f = *state;
    static const char *const ips[] = {"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"};
    for (int i = 0; i < 4; i++)
        assert_int_equal(code_of(f, "PLAIN", "ghost", "guess", ips[i]), 535);
    auth_stats_t s;
    auth_api_stats(f->api, &s);
    assert_int_equal(s.lockouts, 0);
    assert_int_equal(s.lockout_entries, 4);
    /* but a client guessing names is locked like any other */
    assert_int_equal(code_of(f, "PLAIN", "ghost2", "guess", "192.0.2.1"), 535);
    assert_int_equal(code_of(f, "PLAIN", "ghost3", "guess", "192.0.2.1"), 535);
    assert_int_equal(code_of(f, "PLAIN", USER, "right-password", "192.0.2.1"), 421);
}

static void test_success_clears_user_count(void **state)
{
    fixture_t *f = *state;
    for (int round = 0; round < 3; round++) {
        assert_int_equal(code_of(f, "PLAIN", USER, "wrong-a", "198.51.100.10"), 535);
        assert_int_equal(code_of(f, "PLAIN", USER, "wrong-b", "198.51.100.11"), 535);
        assert_int_equal(code_of(f, "PLAIN", USER, "right-password", "198.51.100.12"), 235);
        f->now_ms += 11 * MIN; /* the clients' counts slide out of the window */
    }
    /* failures older than the window do not count: with one gone, three are two */
    assert_int_equal(code_of(f, "PLAIN", USER, "wrong-a", "198.51.100.20"), 535);
    f->now_ms += 11 * MIN;
    assert_int_equal(code_of(f, "PLAIN", USER, "wrong-b", "198.51.100.21"), 535);
    assert_int_equal(code_of(f, "PLAIN", USER, "wrong-c", "198.51.100.22"), 535);
    assert_int_equal(code_of(f, "PLAIN", USER, "right-password", "198.51.100.23"), 235);
    /* and the success started the count again */
    assert_int_equal(code_of(f, "PLAIN", USER, "wrong-d", "198.51.100.24"), 535);
    assert_int_equal(code_of(f, "PLAIN", USER, "wrong-e", "198.51.100.25"), 535);
    assert_int_equal(code_of(f, "PLAIN", USER, "right-password", "198.51.100.26"), 235);
    for (int i = 0; i < 3; i++)
        assert_int_equal(code_of(f, "PLAIN", USER, "wrong-f", "198.51.100.27"), 535);
    assert_int_equal(code_of(f, "PLAIN", USER, "right-password", "198.51.100.28"), 421);
}

/* ---- a credential that changes while its check runs ---- */

static auth_verify_t *begin(fixture_t *f, const char *user, const char *pw, const char *ip)
{
    PB(AuthLoginVerify) req = PB_INIT(AUTH_LOGIN_VERIFY);
    req.username = (char *)user;
    req.secret.data = (uint8_t *)pw;
    req.secret.len = strlen(pw);
    req.client_ip = (char *)ip;
    PB(AuthLoginVerifyReply) *r = NULL;
    auth_verify_t *v = auth_api_verify_begin(f->api, &req, &r);
    if (v == NULL)
        fail_msg("answered at once: %u %s", r->status->code, r->status->text);
    return v;
}

static PB(AuthLoginVerifyReply) * finish(fixture_t *f, auth_verify_t *v)
{
    auth_verify_run(v);
    return auth_api_verify_finish(f->api, &v);
}

static void test_change_during_check(void **state)
{
    fixture_t *f = *state;
    PB(AuthLoginVerifyReply) * r;
    auth_err_t err;
    f->conf.lockout.failures = 0; /* the refusals here would lock the user */
    fx_reopen(f);

    /* the password rotated out at once while the hash ran */
    auth_verify_t *v = begin(f, USER, "right-password", "192.0.2.7");
    PB(AuthCredentialRotate) ro = PB_INIT(AUTH_CREDENTIAL_ROTATE);
    ro.username = (char *)USER;
    ro.password = (char *)"new-password";
    PB(AuthCredentialRotateReply) * ror;
    assert_int_equal(auth_api_credential_rotate(f->api, &ro, &ror, &err), 0);
    auth_api_reply_free(ror);
    r = finish(f, v);
    assert_false(r->ok);
    assert_int_equal(r->status->code, 535);
    auth_api_reply_free(r);
    assert_string_equal(f->events[f->n_events - 1].reason, "bad_password");
    /* and nothing was cached for it */
    assert_int_equal(code_of(f, "PLAIN", USER, "right-password", "192.0.2.9"), 535);

    /* an allowlist that shuts this client out */
    v = begin(f, USER, "new-password", "192.0.2.7");
    PB(AuthAllowAdd) aa = PB_INIT(AUTH_ALLOW_ADD);
    aa.username = (char *)USER;
    aa.network = (char *)"10.0.0.0/8";
    PB(AuthAllowReply) * ar;
    assert_int_equal(auth_api_allow_add(f->api, &aa, &ar, &err), 0);
    auth_api_reply_free(ar);
    r = finish(f, v);
    assert_false(r->ok);
    auth_api_reply_free(r);
    assert_string_equal(f->events[f->n_events - 1].reason, "network");

    /* a change that does not touch the login lets it through, with the new record */
    v = begin(f, USER, "new-password", "10.1.1.1");
    PB(AuthLimitSet) ls = PB_INIT(AUTH_LIMIT_SET);
    ls.username = (char *)USER;
    ls.per_minute = 5;
    PB(AuthLimitSetReply) * lsr;
    assert_int_equal(auth_api_limit_set(f->api, &ls, &lsr, &err), 0);
    auth_api_reply_free(lsr);
    fx_domain(f, "late.acme.test", "acme");
    r = finish(f, v);
    assert_true(r->ok);
    assert_int_equal(r->n_domains, 2);
    auth_api_reply_free(r);

    /* revoked while the hash ran */
    fx_cred(f, "second@acme.test", "second-password", "acme", NULL, 0);
    v = begin(f, "second@acme.test", "second-password", "192.0.2.7");
    PB(AuthCredentialRevoke) rv = PB_INIT(AUTH_CREDENTIAL_REVOKE);
    rv.username = (char *)"second@acme.test";
    PB(AuthCredentialRevokeReply) * rvr;
    assert_int_equal(auth_api_credential_revoke(f->api, &rv, &rvr, &err), 0);
    auth_api_reply_free(rvr);
    r = finish(f, v);
    assert_false(r->ok);
    assert_int_equal(r->status->code, 535);
    auth_api_reply_free(r);
    assert_string_equal(f->events[f->n_events - 1].reason, "revoked");
    auth_stats_t s;
    auth_api_stats(f->api, &s);
    assert_int_equal(s.cache_entries, 1); /* only the pass that was allowed */
}

/* ---- bearer tokens ---- */

/* Change one signature character to another valid one: a bad signature, still base64url. */
static void flip(char *tok)
{
    char *c = tok + strlen(tok) - 3;
    *c = *c == 'A' ? 'B' : 'A';
}

static void token(char *out, const char *alg, const char *user, const char *extra)
{
    jf_token(out, &keys, alg, user, extra);
}

static void test_token_logins(void **state)
{
    fixture_t *f = *state;
    f->now_ms = 0; /* tokens carry real times */
    char tok[JF_TOKEN_MAX];
    static const char *const algs[] = {"HS256", "RS256", "ES256"};
    static const char *const mechs[] = {"XOAUTH2", "OAUTHBEARER", "xoauth2"};
    for (size_t i = 0; i < 3; i++) {
        token(tok, algs[i], USER, NULL);
        PB(AuthLoginVerifyReply) *r = login(f, mechs[i], USER, tok, "192.0.2.7");
        if (!r->ok)
            fail_msg("%s %s: %u %s", algs[i], mechs[i], r->status->code,
                     f->n_events ? f->events[f->n_events - 1].reason : "");
        assert_int_equal(r->status->code, 235);
        assert_string_equal(r->tenant, "acme");
        assert_string_equal(r->username, USER);
        assert_int_equal(r->n_domains, 1);
        assert_string_equal(r->oauth_error, "");
        auth_api_reply_free(r);
    }
    auth_stats_t s;
    auth_api_stats(f->api, &s);
    assert_int_equal(s.cache_entries, 0); /* tokens are never cached */
    assert_int_equal(s.verify_ok, 3);
}

/* One refused token: 535 5.7.8, the reason on the event, and the error JSON. */
static void expect_refused(fixture_t *f, const char *mech, const char *tok, const char *reason,
                           const char *json)
{
    PB(AuthLoginVerifyReply) *r = login(f, mech, USER, tok, "192.0.2.7");
    assert_false(r->ok);
    assert_int_equal(r->status->code, 535);
    assert_string_equal(r->status->enhanced, "5.7.8");
    if (strcmp(f->events[f->n_events - 1].reason, reason) != 0)
        fail_msg("reason %s, want %s", f->events[f->n_events - 1].reason, reason);
    assert_string_equal(f->events[f->n_events - 1].mechanism, mech);
    if (strcmp(r->oauth_error, json) != 0)
        fail_msg("oauth_error %s, want %s", r->oauth_error, json);
    auth_api_reply_free(r);
}

#define BEARER_HS                                                                                  \
    "{\"status\":\"invalid_token\",\"scope\":\"smtp\",\"openid-configuration\":"                   \
    "\"https://hs.example.test/.well-known/openid-configuration\"}"
#define BEARER_ES                                                                                  \
    "{\"status\":\"invalid_token\",\"scope\":\"smtp\",\"openid-configuration\":"                   \
    "\"https://es.example.test/.well-known/openid-configuration\"}"
#define BEARER_NONE "{\"status\":\"invalid_token\",\"scope\":\"smtp\"}"
#define XOAUTH2_ERR "{\"status\":\"401\",\"schemes\":\"bearer\",\"scope\":\"smtp\"}"

static void test_token_refusals(void **state)
{
    fixture_t *f = *state;
    f->now_ms = 0;
    f->conf.lockout.failures = 0; /* many refusals in a row here */
    fx_reopen(f);
    char tok[JF_TOKEN_MAX], claims[1024];
    token(tok, "HS256", USER, NULL);
    flip(tok);
    expect_refused(f, "OAUTHBEARER", tok, "token_signature", BEARER_HS);
    expect_refused(f, "XOAUTH2", tok, "token_signature", XOAUTH2_ERR);

    jf_claims(claims, sizeof(claims), JF_ISS_HS, USER, NULL);
    jf_sign(tok, "none", "none", claims, NULL, NULL);
    expect_refused(f, "OAUTHBEARER", tok, "token_alg", BEARER_HS);
    jf_claims(claims, sizeof(claims), JF_ISS_ES, USER, NULL);
    jf_sign(tok, "RS256", "RS256", claims, keys.rsa, NULL);
    /* the issuer's name ends in a slash: the URL has one */
    expect_refused(f, "OAUTHBEARER", tok, "token_alg", BEARER_ES);

    snprintf(claims, sizeof(claims), "{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"%s\",\"exp\":%lld}",
             JF_ISS_HS, JF_AUD, USER, jf_now() - 120);
    jf_sign(tok, "HS256", "HS256", claims, NULL, JF_SECRET);
    expect_refused(f, "OAUTHBEARER", tok, "token_expired", BEARER_HS);
    expect_refused(f, "XOAUTH2", tok, "token_expired", XOAUTH2_ERR);
    token(tok, "HS256", USER, "\"nbf\":9999999999");
    expect_refused(f, "OAUTHBEARER", tok, "token_not_yet_valid", BEARER_HS);

    jf_claims(claims, sizeof(claims), "https://elsewhere.test", USER, NULL);
    jf_sign(tok, "HS256", "HS256", claims, NULL, JF_SECRET);
    expect_refused(f, "OAUTHBEARER", tok, "token_issuer", BEARER_NONE);
    snprintf(claims, sizeof(claims),
             "{\"iss\":\"%s\",\"aud\":\"someone-else\",\"sub\":\"%s\",\"exp\":%lld}", JF_ISS_HS,
             USER, jf_now() + 60);
    jf_sign(tok, "HS256", "HS256", claims, NULL, JF_SECRET);
    expect_refused(f, "OAUTHBEARER", tok, "token_audience", BEARER_HS);
    /* a good token for another user, presented as this one */
    token(tok, "ES256", "other@acme.test", NULL);
    expect_refused(f, "OAUTHBEARER", tok, "token_identity", BEARER_ES);
    expect_refused(f, "OAUTHBEARER", "not.a.token", "token_malformed", BEARER_NONE);
    expect_refused(f, "OAUTHBEARER", "eyJ=.e30.", "token_malformed", BEARER_NONE);
}

static void test_token_credential_rules(void **state)
{
    fixture_t *f = *state;
    f->now_ms = 0;
    char tok[JF_TOKEN_MAX];
    auth_err_t err;
    /* an issuer's good token for a name that is no credential */
    token(tok, "HS256", "stranger@acme.test", NULL);
    PB(AuthLoginVerifyReply) *r = login(f, "OAUTHBEARER", "stranger@acme.test", tok, "192.0.2.7");
    assert_false(r->ok);
    assert_int_equal(r->status->code, 535);
    assert_string_equal(r->oauth_error, BEARER_HS);
    auth_api_reply_free(r);
    assert_string_equal(f->events[f->n_events - 1].reason, "unknown_user");

    /* the allowlist applies */
    PB(AuthAllowAdd) aa = PB_INIT(AUTH_ALLOW_ADD);
    aa.username = (char *)USER;
    aa.network = (char *)"2001:db8::/32";
    PB(AuthAllowReply) * ar;
    assert_int_equal(auth_api_allow_add(f->api, &aa, &ar, &err), 0);
    auth_api_reply_free(ar);
    token(tok, "RS256", USER, NULL);
    assert_int_equal(code_of(f, "XOAUTH2", USER, tok, "192.0.2.7"), 535);
    assert_string_equal(f->events[f->n_events - 1].reason, "network");
    assert_int_equal(code_of(f, "XOAUTH2", USER, tok, "2001:db8::7"), 235);

    /* revoked: the token no longer helps */
    PB(AuthCredentialRevoke) rv = PB_INIT(AUTH_CREDENTIAL_REVOKE);
    rv.username = (char *)USER;
    PB(AuthCredentialRevokeReply) * rvr;
    assert_int_equal(auth_api_credential_revoke(f->api, &rv, &rvr, &err), 0);
    auth_api_reply_free(rvr);
    r = login(f, "XOAUTH2", USER, tok, "2001:db8::7");
    assert_false(r->ok);
    assert_string_equal(r->oauth_error, XOAUTH2_ERR);
    auth_api_reply_free(r);
    assert_string_equal(f->events[f->n_events - 1].reason, "revoked");

    /* token failures count towards lockouts: this client has had 2 so far */
    assert_int_equal(code_of(f, "XOAUTH2", "x@acme.test", "bad.token.here", "192.0.2.7"), 535);
    r = login(f, "XOAUTH2", USER, tok, "192.0.2.7");
    assert_int_equal(r->status->code, 421);
    assert_string_equal(r->oauth_error, ""); /* no SASL exchange for a lockout */
    auth_api_reply_free(r);

    /* a token longer than any accepted is refused unread */
    char *big = malloc(AUTH_JWT_TOKEN_MAX + 2);
    memset(big, 'A', AUTH_JWT_TOKEN_MAX + 1);
    big[AUTH_JWT_TOKEN_MAX + 1] = '\0';
    assert_int_equal(code_of(f, "OAUTHBEARER", USER, big, "198.51.100.1"), 535);
    assert_string_equal(f->events[f->n_events - 1].reason, "bad_request");
    free(big);
}

/* Without configured issuers every token is refused. */
static void test_token_without_issuers(void **state)
{
    fixture_t *f = *state;
    f->now_ms = 0;
    f->conf.oauth = NULL;
    fx_reopen(f);
    char tok[JF_TOKEN_MAX];
    token(tok, "HS256", USER, NULL);
    PB(AuthLoginVerifyReply) *r = login(f, "OAUTHBEARER", USER, tok, "192.0.2.7");
    assert_false(r->ok);
    assert_string_equal(r->oauth_error, BEARER_NONE);
    auth_api_reply_free(r);
    assert_string_equal(f->events[f->n_events - 1].reason, "token_issuer");
}

static char logged_token[JF_TOKEN_MAX];

static void token_work(fixture_t *f)
{
    assert_int_equal(code_of(f, "XOAUTH2", USER, logged_token, "192.0.2.7"), 235);
    flip(logged_token);
    assert_int_equal(code_of(f, "XOAUTH2", USER, logged_token, "192.0.2.7"), 535);
}

static void test_token_never_logged(void **state)
{
    fixture_t *f = *state;
    f->now_ms = 0;
    token(logged_token, "HS256", USER, NULL);
    char sig[16];
    snprintf(sig, sizeof(sig), "%.12s", strrchr(logged_token, '.') + 1);
    char head[16];
    snprintf(head, sizeof(head), "%.12s", logged_token);
    char path[PATH_MAX + 16], log[16384];
    snprintf(path, sizeof(path), "%s/log.txt", f->dir);
    fflush(stderr);
    int saved = dup(2);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    token_work(f);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    ssize_t n = pread(fd, log, sizeof(log) - 1, 0);
    close(fd);
    unlink(path);
    log[n > 0 ? n : 0] = '\0';
    assert_non_null(strstr(log, "mech=XOAUTH2 result=ok"));
    assert_non_null(strstr(log, "reason=token_signature"));
    assert_null(strstr(log, sig));
    assert_null(strstr(log, head));
    for (size_t i = 0; i < f->n_events; i++)
        assert_null(strstr(f->events[i].all, head));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lockout_per_client, setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_lockout_per_user, setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_unknown_users_count_against_client, setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_success_clears_user_count, setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_change_during_check, setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_token_logins, setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_token_refusals, setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_token_credential_rules, setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_token_without_issuers, setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_token_never_logged, setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
