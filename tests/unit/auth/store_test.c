/*
 * store_test: auth's LMDB store below the api: records survive a reopen,
 * generations come from one counter that never goes back, updates are
 * refused when the credential changed meanwhile, and corrupt records
 * (garbage bytes, a record filed under another user's key, a foreign
 * schema) are skipped or refused, never trusted and never a crash.
 */
#include "auth_fixture.h"
#include "store/store.h"

/* Write raw bytes under a key of one of auth's databases, with the store closed. */
static void poke(fixture_t *f, const char *db, const char *key, const void *val, size_t len)
{
    fx_close(f);
    char err[256];
    store_t *st = store_open(f->dir, NULL, err, sizeof(err));
    assert_non_null(st);
    unsigned dbi;
    assert_int_equal(store_db(st, db, &dbi), STORE_OK);
    store_txn_t *txn = store_begin(st, 1);
    assert_non_null(txn);
    assert_int_equal(store_put(txn, dbi, key, strlen(key), val, len), STORE_OK);
    assert_int_equal(store_commit(&txn), STORE_OK);
    store_close(&st);
    fx_open(f);
}

/* Copy the raw record of one key to another key. */
static void copy_record(fixture_t *f, const char *db, const char *from, const char *to)
{
    fx_close(f);
    char err[256];
    store_t *st = store_open(f->dir, NULL, err, sizeof(err));
    unsigned dbi;
    assert_int_equal(store_db(st, db, &dbi), STORE_OK);
    store_txn_t *txn = store_begin(st, 1);
    store_val_t v;
    assert_int_equal(store_get(txn, dbi, from, strlen(from), &v), STORE_OK);
    void *copy = xmemdup(v.data, v.len);
    assert_int_equal(store_put(txn, dbi, to, strlen(to), copy, v.len), STORE_OK);
    free(copy);
    assert_int_equal(store_commit(&txn), STORE_OK);
    store_close(&st);
    fx_open(f);
}

static void test_reopen_keeps_everything(void **state)
{
    fixture_t *f = *state;
    fx_tenant(f, "acme");
    fx_domain(f, "acme.test", "acme");
    const char *doms[] = {"acme.test"};
    fx_cred(f, "app", "password-one", "acme", doms, 1);
    auth_cred_t c;
    assert_int_equal(auth_store_cred_get(f->st, "app", &c), AUTH_ST_OK);
    uint64_t g1 = c.generation;
    auth_cred_clear(&c);

    fx_close(f);
    fx_open(f);
    auth_stats_t s;
    auth_api_stats(f->api, &s);
    assert_int_equal(s.tenants, 1);
    assert_int_equal(s.credentials, 1);
    assert_true(fx_login_ok(f, "app", "password-one"));
    assert_int_equal(auth_store_tenant_exists(f->st, "acme"), 1);
    assert_int_equal(auth_store_tenant_exists(f->st, "nobody"), 0);

    /* the generation counter continued where it was */
    fx_cred(f, "app2", "password-two", "acme", NULL, 0);
    assert_int_equal(auth_store_cred_get(f->st, "app2", &c), AUTH_ST_OK);
    assert_true(c.generation > g1);
    auth_cred_clear(&c);

    /* the domain kept its owner across the restart */
    PB(AuthDomainAdd) req = PB_INIT(AUTH_DOMAIN_ADD);
    req.domain = (char *)"acme.test";
    req.tenant = (char *)"acme";
    PB(AuthDomainAddReply) * r;
    auth_err_t err;
    assert_int_equal(auth_api_domain_add(f->api, &req, &r, &err), -1);
    assert_int_equal(err.code, 409);
}

static void test_update_conflict(void **state)
{
    fixture_t *f = *state;
    char err[256];
    fx_tenant(f, "acme");
    fx_cred(f, "app", "password-one", "acme", NULL, 0);
    auth_cred_t a, b;
    assert_int_equal(auth_store_cred_get(f->st, "app", &a), AUTH_ST_OK);
    assert_int_equal(auth_store_cred_get(f->st, "app", &b), AUTH_ST_OK);
    uint64_t g = a.generation;
    a.pub->revoked = 1;
    assert_int_equal(auth_store_cred_update(f->st, &a, g, err, sizeof(err)), AUTH_ST_OK);
    /* b was read before a's write: its update must not silently undo the revoke */
    free(b.pub->environment);
    b.pub->environment = xstrdup("staging");
    assert_int_equal(auth_store_cred_update(f->st, &b, g, err, sizeof(err)), AUTH_ST_CONFLICT);
    assert_non_null(strstr(err, "changed"));
    auth_cred_clear(&a);
    auth_cred_clear(&b);
    assert_int_equal(auth_store_cred_get(f->st, "app", &a), AUTH_ST_OK);
    assert_true(a.pub->revoked);
    assert_string_equal(a.pub->environment, "production");
    auth_cred_clear(&a);

    auth_cred_init(&a);
    a.pub->username = xstrdup("ghost");
    a.pub->tenant = xstrdup("acme");
    assert_int_equal(auth_store_cred_update(f->st, &a, 1, err, sizeof(err)), AUTH_ST_NOTFOUND);
    auth_cred_clear(&a);
}

static void test_corrupt_credential(void **state)
{
    fixture_t *f = *state;
    fx_tenant(f, "acme");
    fx_cred(f, "app", "password-one", "acme", NULL, 0);
    fx_cred(f, "zed", "password-zed", "acme", NULL, 0);
    poke(f, "credentials", "broken", "\x43\x01garbage", 9);
    /* app's record filed under another name: a login as "impostor" must not pass */
    copy_record(f, "credentials", "app", "impostor");

    PB(AuthLoginVerifyReply) *r = fx_verify(f, "broken", "anything-at-all");
    assert_false(r->ok);
    assert_int_equal(r->status->code, 454);
    auth_api_reply_free(r);
    r = fx_verify(f, "impostor", "password-one");
    assert_false(r->ok);
    assert_int_equal(r->status->code, 454);
    auth_api_reply_free(r);

    /* the rest of the store works */
    assert_true(fx_login_ok(f, "app", "password-one"));
    assert_true(fx_login_ok(f, "zed", "password-zed"));
    PB(AuthCredentialList) req = PB_INIT(AUTH_CREDENTIAL_LIST);
    PB(AuthCredentialListReply) * lr;
    auth_err_t err;
    assert_int_equal(auth_api_credential_list(f->api, &req, &lr, &err), 0);
    assert_int_equal(lr->n_credentials, 2);
    assert_string_equal(lr->credentials[0]->username, "app");
    assert_string_equal(lr->credentials[1]->username, "zed");
    auth_api_reply_free(lr);

    /* adding over a corrupt record is still refused as a duplicate */
    assert_int_equal(fx_cred_try(f, "broken", "password-new", "acme", NULL, NULL, 0, NULL), 409);
}

static void test_corrupt_tenant_and_domain(void **state)
{
    fixture_t *f = *state;
    fx_tenant(f, "acme");
    fx_tenant(f, "beta");
    fx_domain(f, "acme.test", "acme");
    poke(f, "tenants", "broken", "T\x01\x01\xff\xff\xff\x7f", 7);
    poke(f, "domains", "bad.test", "nonsense", 8);

    PB(AuthTenantListReply) * r;
    auth_err_t err;
    assert_int_equal(auth_api_tenant_list(f->api, NULL, &r, &err), 0);
    assert_int_equal(r->n_tenants, 2);
    assert_string_equal(r->tenants[0]->name, "acme");
    assert_string_equal(r->tenants[1]->name, "beta");
    auth_api_reply_free(r);

    /* the unreadable domain is neither given away nor usable */
    PB(AuthDomainAdd) dreq = PB_INIT(AUTH_DOMAIN_ADD);
    dreq.domain = (char *)"bad.test";
    dreq.tenant = (char *)"beta";
    PB(AuthDomainAddReply) * dr;
    assert_int_equal(auth_api_domain_add(f->api, &dreq, &dr, &err), -1);
    assert_int_equal(err.code, 500);
    const char *doms[] = {"bad.test"};
    assert_int_equal(fx_cred_try(f, "app", "password-one", "beta", NULL, doms, 1, &err), 500);
}

static void test_foreign_schema_refused(void **state)
{
    fixture_t *f = *state;
    const uint8_t v99[4] = {99, 0, 0, 0};
    fx_close(f);
    char err[256];
    store_t *st = store_open(f->dir, NULL, err, sizeof(err));
    unsigned dbi;
    assert_int_equal(store_db(st, "meta", &dbi), STORE_OK);
    store_txn_t *txn = store_begin(st, 1);
    assert_int_equal(store_put(txn, dbi, "schema", 6, v99, sizeof(v99)), STORE_OK);
    assert_int_equal(store_commit(&txn), STORE_OK);
    store_close(&st);
    assert_null(auth_store_open(f->dir, err, sizeof(err)));
    assert_non_null(strstr(err, "version"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reopen_keeps_everything, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_update_conflict, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_credential, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_tenant_and_domain, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_foreign_schema_refused, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
