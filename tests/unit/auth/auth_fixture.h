/*
 * auth_fixture: what the auth store and api tests share: a fresh LMDB
 * directory per test, an api on it with a fast scrypt cost and a clock the
 * test can set (f->now_ms; 0: the real wall clock), a recorder for
 * published events, and short helpers that add records and verify logins.
 * Tests change f->conf (lockouts, token issuers) and call fx_reopen.
 * Header-only so each test file stays one binary.
 */
#ifndef SX_AUTH_FIXTURE_H
#define SX_AUTH_FIXTURE_H

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth_api.h"
#include "auth_store.h"
#include "core/alloc.h"

#define FX_EVENTS_MAX 32
#define FX_TTL_MS     300000

typedef struct fx_event {
    char type[32];
    char session_id[80];
    char tenant[80];
    char username[300];
    char client_ip[80];
    char reason[40];
    char mechanism[40];
    unsigned code;
    char all[1024]; /* every attr value, joined, to search for what must not be there */
} fx_event_t;

typedef struct fixture {
    char dir[PATH_MAX];
    auth_store_t *st;
    auth_api_t *api;
    auth_api_conf_t conf;
    uint64_t now_ms; /* the api's clock when not 0 */
    fx_event_t events[FX_EVENTS_MAX];
    size_t n_events;
} fixture_t;

static inline void fx_record_event(PB(Event) * ev, void *arg)
{
    fixture_t *f = arg;
    if (f->n_events >= FX_EVENTS_MAX)
        return;
    fx_event_t *e = &f->events[f->n_events++];
    memset(e, 0, sizeof(*e));
    snprintf(e->type, sizeof(e->type), "%s", ev->type);
    snprintf(e->session_id, sizeof(e->session_id), "%s", ev->session_id);
    snprintf(e->tenant, sizeof(e->tenant), "%s", ev->tenant);
    e->code = ev->reply ? ev->reply->code : 0;
    for (size_t i = 0; i < ev->n_attrs; i++) {
        const char *k = ev->attrs[i]->key, *v = ev->attrs[i]->value;
        if (strcmp(k, "username") == 0)
            snprintf(e->username, sizeof(e->username), "%s", v);
        else if (strcmp(k, "client_ip") == 0)
            snprintf(e->client_ip, sizeof(e->client_ip), "%s", v);
        else if (strcmp(k, "reason") == 0)
            snprintf(e->reason, sizeof(e->reason), "%s", v);
        else if (strcmp(k, "mechanism") == 0)
            snprintf(e->mechanism, sizeof(e->mechanism), "%s", v);
        size_t n = strlen(e->all);
        snprintf(e->all + n, sizeof(e->all) - n, "%s|", v);
    }
}

static inline void fx_mkdirs(const char *path)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s", path);
    for (char *s = p + 1; *s; s++) {
        if (*s == '/') {
            *s = '\0';
            mkdir(p, 0750);
            *s = '/';
        }
    }
    mkdir(p, 0750);
}

static inline void fx_rmdir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char p[PATH_MAX + 256];
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static inline uint64_t fx_clock(void *arg)
{
    fixture_t *f = arg;
    if (f->now_ms)
        return f->now_ms;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline void fx_open(fixture_t *f)
{
    char err[512];
    f->st = auth_store_open(f->dir, err, sizeof(err));
    if (f->st == NULL)
        fail_msg("store: %s", err);
    f->api = auth_api_new(f->st, &f->conf, err, sizeof(err));
    if (f->api == NULL)
        fail_msg("api: %s", err);
    auth_api_on_event(f->api, fx_record_event, f);
}

static inline void fx_close(fixture_t *f)
{
    auth_api_destroy(&f->api);
    auth_store_close(&f->st);
}

/* Close and open again (after a change to f->conf, or to test persistence). */
static inline void fx_reopen(fixture_t *f)
{
    fx_close(f);
    fx_open(f);
}

static inline int fx_setup(void **state)
{
    fixture_t *f = xcalloc(1, sizeof(*f));
    const char *base = getenv("SENDARIX_TEST_TMP");
    if (base == NULL || *base == '\0')
        base = "/tmp";
    fx_mkdirs(base);
    snprintf(f->dir, sizeof(f->dir), "%s/auth-XXXXXX", base);
    if (mkdtemp(f->dir) == NULL)
        return -1;
    auth_api_conf_t conf = {.scrypt = {10, 8, 1},
                            .cache_ttl_ms = FX_TTL_MS,
                            .cache_max = 100,
                            .clock = fx_clock,
                            .clock_arg = f};
    f->conf = conf;
    fx_open(f);
    *state = f;
    return 0;
}

static inline int fx_teardown(void **state)
{
    fixture_t *f = *state;
    fx_close(f);
    fx_rmdir(f->dir);
    free(f);
    return 0;
}

/* ---- helpers that must succeed ---- */

static inline void fx_tenant(fixture_t *f, const char *name)
{
    PB(AuthTenantAdd) req = PB_INIT(AUTH_TENANT_ADD);
    req.name = (char *)name;
    PB(AuthTenantAddReply) * r;
    auth_err_t err;
    if (auth_api_tenant_add(f->api, &req, &r, &err) < 0)
        fail_msg("tenant %s: %u %s", name, err.code, err.text);
    auth_api_reply_free(r);
}

/* A domain, verified or not. */
static inline void fx_domain_v(fixture_t *f, const char *domain, const char *tenant, int verified)
{
    PB(AuthDomainAdd) req = PB_INIT(AUTH_DOMAIN_ADD);
    req.domain = (char *)domain;
    req.tenant = (char *)tenant;
    req.verified = verified;
    PB(AuthDomainAddReply) * r;
    auth_err_t err;
    if (auth_api_domain_add(f->api, &req, &r, &err) < 0)
        fail_msg("domain %s: %u %s", domain, err.code, err.text);
    auth_api_reply_free(r);
}

/* A verified domain: one a login may use. */
static inline void fx_domain(fixture_t *f, const char *domain, const char *tenant)
{
    fx_domain_v(f, domain, tenant, 1);
}

/* Add a credential; 0 or the error code (err filled when given). */
static inline unsigned fx_cred_try(fixture_t *f, const char *user, const char *pw,
                                   const char *tenant, const char *env, const char *const *domains,
                                   size_t n, auth_err_t *err_out)
{
    PB(AuthCredentialAdd) req = PB_INIT(AUTH_CREDENTIAL_ADD);
    req.username = (char *)user;
    req.password = (char *)pw;
    req.tenant = (char *)tenant;
    req.environment = (char *)(env ? env : "");
    req.domains = (char **)domains;
    req.n_domains = n;
    PB(AuthCredentialAddReply) * r;
    auth_err_t err;
    int rc = auth_api_credential_add(f->api, &req, &r, &err);
    if (err_out)
        *err_out = err;
    if (rc < 0) {
        assert_null(r);
        return err.code;
    }
    assert_non_null(r);
    auth_api_reply_free(r);
    return 0;
}

static inline void fx_cred(fixture_t *f, const char *user, const char *pw, const char *tenant,
                           const char *const *domains, size_t n)
{
    auth_err_t err;
    if (fx_cred_try(f, user, pw, tenant, NULL, domains, n, &err) != 0)
        fail_msg("credential %s: %u %s", user, err.code, err.text);
}

/* A login from a given client address. */
static inline PB(AuthLoginVerifyReply) * fx_verify_ip(fixture_t *f, const char *mech,
                                                      const char *user, const char *pw,
                                                      const char *authzid, const char *ip)
{
    PB(AuthLoginVerify) req = PB_INIT(AUTH_LOGIN_VERIFY);
    req.mechanism = (char *)mech;
    req.username = (char *)user;
    req.secret.data = (uint8_t *)pw;
    req.secret.len = strlen(pw);
    req.authzid = (char *)(authzid ? authzid : "");
    req.client_ip = (char *)ip;
    req.session_id = (char *)"s1";
    PB(AuthLoginVerifyReply) *r = auth_api_login_verify(f->api, &req);
    assert_non_null(r);
    assert_non_null(r->status);
    return r;
}

static inline PB(AuthLoginVerifyReply) * fx_verify_full(fixture_t *f, const char *mech,
                                                        const char *user, const char *pw,
                                                        const char *authzid)
{
    return fx_verify_ip(f, mech, user, pw, authzid, "192.0.2.7");
}

static inline PB(AuthLoginVerifyReply) * fx_verify(fixture_t *f, const char *user, const char *pw)
{
    return fx_verify_full(f, "PLAIN", user, pw, NULL);
}

/* 1 if the login passes; checks the reply is one of the two expected shapes. */
static inline int fx_login_ok(fixture_t *f, const char *user, const char *pw)
{
    PB(AuthLoginVerifyReply) *r = fx_verify(f, user, pw);
    int ok = r->ok;
    if (ok) {
        assert_int_equal(r->status->code, 235);
        assert_string_equal(r->status->enhanced, "2.7.0");
    } else {
        assert_int_equal(r->status->code, 535);
        assert_string_equal(r->status->enhanced, "5.7.8");
    }
    auth_api_reply_free(r);
    return ok;
}

#endif
