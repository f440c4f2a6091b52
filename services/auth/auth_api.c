/*
 * auth_api: the api object and the management requests for tenants,
 * domains and new credentials. Input syntax is checked here and refused
 * with 400 and a clear text; the store decides existence and ownership.
 * Rotation, revoke, allowlists and limits are in auth_manage.c, login
 * verification in auth_verify.c. Passwords are hashed before they reach
 * the store and are never logged.
 */
#include "auth_api_int.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"
#include "mail/address.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const auth_environments[] = {"production", "staging", "development", NULL};

static uint64_t real_clock(void *arg)
{
    (void)arg;
    return clock_wall_ms();
}

uint64_t auth_now(const auth_api_t *api)
{
    return api->conf.clock(api->conf.clock_arg);
}

auth_api_t *auth_api_new(auth_store_t *st, const auth_api_conf_t *conf, char *err, size_t errlen)
{
    if (auth_hash_params_check(&conf->scrypt, err, errlen) < 0)
        return NULL;
    auth_jwt_global_init();
    auth_api_t *api = xcalloc(1, sizeof(*api));
    api->st = st;
    api->conf = *conf;
    if (api->conf.clock == NULL)
        api->conf.clock = real_clock;
    api->cache = auth_cache_new(conf->cache_max, conf->cache_ttl_ms);
    if (api->cache == NULL) {
        snprintf(err, errlen, "cannot set up the login cache (HMAC-SHA256 unavailable)");
        goto fail;
    }
    api->guard = auth_guard_new(&conf->lockout);
    api->rate =
        auth_rate_new(st, conf->rate_names_max ? conf->rate_names_max : AUTH_RATE_NAMES_DEFAULT);
    if (api->guard == NULL || api->rate == NULL) {
        snprintf(err, errlen, "cannot set up the lockout and rate tables (OpenSSL failed)");
        goto fail;
    }
    /* unknown users are checked against this, so they cost as much as known ones */
    unsigned char junk[AUTH_HASH_KEY_LEN];
    if (RAND_bytes(junk, sizeof(junk)) != 1 ||
        auth_hash_make(&conf->scrypt, junk, sizeof(junk), api->dummy_hash,
                       sizeof(api->dummy_hash)) < 0) {
        snprintf(err, errlen, "cannot make a scrypt hash (OpenSSL failed)");
        goto fail;
    }
    return api;
fail:
    auth_api_destroy(&api);
    return NULL;
}

void auth_api_destroy(auth_api_t **p)
{
    auth_api_t *api = *p;
    if (api == NULL)
        return;
    auth_cache_destroy(&api->cache);
    auth_guard_destroy(&api->guard);
    auth_rate_destroy(&api->rate);
    free(api);
    *p = NULL;
}

void auth_api_on_event(auth_api_t *api, auth_event_fn fn, void *arg)
{
    api->event_fn = fn;
    api->event_arg = arg;
}

void auth_api_stats(const auth_api_t *api, auth_stats_t *out)
{
    auth_cache_stats_t cs;
    auth_guard_stats_t gs;
    auth_rate_stats_t rs;
    auth_cache_stats(api->cache, &cs);
    auth_guard_stats(api->guard, &gs);
    auth_rate_stats(api->rate, &rs);
    memset(out, 0, sizeof(*out));
    out->tenants = auth_store_tenant_count(api->st);
    out->credentials = auth_store_cred_count(api->st);
    out->verify_ok = api->verify_ok;
    out->verify_failed = api->verify_failed;
    out->verify_busy = api->verify_busy;
    out->verify_locked = api->verify_locked;
    out->cache_hits = cs.hits;
    out->cache_entries = cs.entries;
    out->lockouts = gs.lockouts;
    out->lockout_entries = gs.entries;
    out->rate_counted = rs.counted;
    out->rate_refused = rs.refused;
    out->rate_dirty = rs.dirty;
}

void auth_api_reply_free(void *reply)
{
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
}

/* ---- errors ---- */

int auth_fail(auth_err_t *err, unsigned code, const char *fmt, ...)
{
    err->code = code;
    /* 400/404/409: the request cannot succeed as sent; 500: our side, may pass later */
    err->enhanced = code >= 500 ? "4.3.0" : "5.5.4";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->text, sizeof(err->text), fmt, ap);
    va_end(ap);
    return -1;
}

int auth_fail_store(auth_err_t *err, auth_st_t st, const char *text, unsigned conflict_code)
{
    switch (st) {
    case AUTH_ST_NOTFOUND:
        return auth_fail(err, 404, "%s", text);
    case AUTH_ST_EXISTS:
        return auth_fail(err, 409, "%s", text);
    case AUTH_ST_CONFLICT:
        return auth_fail(err, conflict_code, "%s", text);
    case AUTH_ST_FULL:
        auth_fail(err, 500, "auth store is full: %s", text);
        err->enhanced = "4.3.1";
        return -1;
    case AUTH_ST_CORRUPT:
        return auth_fail(err, 500, "auth store has an unreadable record: %s", text);
    default:
        return auth_fail(err, 500, "auth store failed: %s", text[0] ? text : "see the auth log");
    }
}

/* ---- syntax ---- */

int auth_tenant_name_valid(const char *s)
{
    size_t n = strnlen(s, AUTH_TENANT_MAX + 1);
    if (n == 0 || n > AUTH_TENANT_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

int auth_username_valid(const char *s)
{
    size_t n = strnlen(s, AUTH_USERNAME_MAX + 1);
    if (n == 0 || n > AUTH_USERNAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return 0;
    return 1;
}

int auth_domain_normalize(const char *in, char out[AUTH_DOMAIN_MAX + 1])
{
    size_t n = strnlen(in, AUTH_DOMAIN_MAX + 1);
    if (n == 0 || n > AUTH_DOMAIN_MAX)
        return -1;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)tolower((unsigned char)in[i]);
    out[n] = '\0';
    return address_domain_valid(out, 0) ? 0 : -1;
}

const char *auth_quoted(char *buf, size_t size, const char *s)
{
    return log_quote(buf, size, s, strnlen(s, 128));
}

/* ---- tenants ---- */

int auth_api_tenant_add(auth_api_t *api, const PB(AuthTenantAdd) * req,
                        PB(AuthTenantAddReply) * *reply, auth_err_t *err)
{
    *reply = NULL;
    char q[160], text[AUTH_ERR_TEXT_MAX] = "";
    const char *name = req ? auth_str(req->name) : "";
    if (!auth_tenant_name_valid(name))
        return auth_fail(err, 400,
                         "tenant name %s is invalid: 1 to %d characters of a-z, 0-9, '.', '_', '-'",
                         auth_quoted(q, sizeof(q), name), AUTH_TENANT_MAX);
    PB(Tenant) *t = NULL;
    auth_st_t st = auth_store_tenant_add(api->st, name, auth_now(api), &t, text, sizeof(text));
    if (st != AUTH_ST_OK)
        return auth_fail_store(err, st, text, 409);
    log_info("event=tenant_added tenant=%s", name);
    PB(AuthTenantAddReply) *r = xmalloc(sizeof(*r));
    PB(AuthTenantAddReply) init = PB_INIT(AUTH_TENANT_ADD_REPLY);
    *r = init;
    r->tenant = t;
    *reply = r;
    return 0;
}

int auth_api_tenant_list(auth_api_t *api, const PB(AuthTenantList) * req,
                         PB(AuthTenantListReply) * *reply, auth_err_t *err)
{
    (void)req;
    *reply = NULL;
    PB(Tenant) * *v;
    size_t n;
    auth_st_t st = auth_store_tenant_list(api->st, &v, &n);
    if (st != AUTH_ST_OK)
        return auth_fail_store(err, st, "", 500);
    PB(AuthTenantListReply) *r = xmalloc(sizeof(*r));
    PB(AuthTenantListReply) init = PB_INIT(AUTH_TENANT_LIST_REPLY);
    *r = init;
    r->tenants = v;
    r->n_tenants = n;
    *reply = r;
    return 0;
}

/* ---- domains ---- */

int auth_api_domain_add_keyed(auth_api_t *api, const PB(AuthDomainAdd) * req,
                              auth_dkim_rec_t *fresh, PB(AuthDomainAddReply) * *reply,
                              auth_err_t *err)
{
    *reply = NULL;
    char q[160], text[AUTH_ERR_TEXT_MAX] = "", domain[AUTH_DOMAIN_MAX + 1];
    const char *tenant = req ? auth_str(req->tenant) : "";
    const char *given = req ? auth_str(req->domain) : "";
    int verified = req ? req->verified != 0 : 0, updated = 0;
    if (auth_domain_normalize(given, domain) < 0)
        return auth_fail(err, 400, "domain %s is not a valid host name",
                         auth_quoted(q, sizeof(q), given));
    if (!auth_tenant_name_valid(tenant))
        return auth_fail(err, 400, "tenant name %s is invalid", auth_quoted(q, sizeof(q), tenant));
    if (fresh == NULL) {
        /* keys are made (slowly) only for a domain that will take them */
        auth_domain_rec_t dom;
        auth_dkim_rec_t have;
        auth_st_t st = auth_store_dkim_get(api->st, domain, &dom, &have);
        if (st == AUTH_ST_NOTFOUND && auth_store_tenant_exists(api->st, tenant) == 1)
            return 1;
        if (st == AUTH_ST_OK) {
            int need = have.n == 0 && verified && !dom.verified && strcmp(dom.tenant, tenant) == 0;
            auth_dkim_rec_clear(&have);
            if (need)
                return 1;
        }
    }
    auth_st_t st = auth_store_domain_add(api->st, domain, tenant, verified, auth_now(api), fresh,
                                         &updated, text, sizeof(text));
    if (st != AUTH_ST_OK)
        return auth_fail_store(err, st, text, 409);
    PB(Domain) *d = NULL;
    st = auth_store_domain_get(api->st, domain, &d);
    if (st != AUTH_ST_OK)
        return auth_fail_store(err, st, "", 500);
    log_info("event=%s domain=%s tenant=%s verified=%d dkim_keys=%zu",
             updated ? "domain_verified" : "domain_added", domain, tenant, d->verified != 0,
             d->n_dkim);
    PB(AuthDomainAddReply) *r = xmalloc(sizeof(*r));
    PB(AuthDomainAddReply) init = PB_INIT(AUTH_DOMAIN_ADD_REPLY);
    *r = init;
    r->domain = xstrdup(domain);
    r->tenant = xstrdup(tenant);
    r->verified = d->verified;
    r->dkim = d->dkim; /* moved into the reply */
    r->n_dkim = d->n_dkim;
    d->dkim = NULL;
    d->n_dkim = 0;
    PB_FN(domain, free_unpacked)(d, NULL);
    *reply = r;
    return 0;
}

int auth_api_domain_add(auth_api_t *api, const PB(AuthDomainAdd) * req,
                        PB(AuthDomainAddReply) * *reply, auth_err_t *err)
{
    int rc = auth_api_domain_add_keyed(api, req, NULL, reply, err);
    if (rc != 1)
        return rc;
    auth_dkim_rec_t fresh;
    memset(&fresh, 0, sizeof(fresh));
    if (auth_dkim_generate(&fresh, 1, auth_now(api)) < 0)
        return auth_fail(err, 500, "cannot make DKIM keys (OpenSSL failed)");
    rc = auth_api_domain_add_keyed(api, req, &fresh, reply, err);
    auth_dkim_rec_clear(&fresh);
    return rc;
}

/* Check a tenant filter of a list request: "" passes; 0 or -1 with err (400, 404). */
static int tenant_filter_ok(auth_api_t *api, const char *tenant, auth_err_t *err)
{
    if (*tenant == '\0')
        return 0;
    char q[160];
    if (!auth_tenant_name_valid(tenant))
        return auth_fail(err, 400, "tenant name %s is invalid", auth_quoted(q, sizeof(q), tenant));
    int exists = auth_store_tenant_exists(api->st, tenant);
    if (exists < 0)
        return auth_fail_store(err, AUTH_ST_ERROR, "", 500);
    if (exists == 0)
        return auth_fail(err, 404, "tenant %s not found", tenant);
    return 0;
}

int auth_api_domain_list(auth_api_t *api, const PB(AuthDomainList) * req,
                         PB(AuthDomainListReply) * *reply, auth_err_t *err)
{
    *reply = NULL;
    const char *tenant = req ? auth_str(req->tenant) : "";
    if (tenant_filter_ok(api, tenant, err) < 0)
        return -1;
    PB(Domain) * *v;
    size_t n;
    auth_st_t st = auth_store_domain_list(api->st, tenant, &v, &n);
    if (st != AUTH_ST_OK)
        return auth_fail_store(err, st, "", 500);
    PB(AuthDomainListReply) *r = xmalloc(sizeof(*r));
    PB(AuthDomainListReply) init = PB_INIT(AUTH_DOMAIN_LIST_REPLY);
    *r = init;
    r->domains = v;
    r->n_domains = n;
    *reply = r;
    return 0;
}

/* ---- credentials ---- */

static int environment_valid(const char *env)
{
    for (size_t i = 0; auth_environments[i]; i++)
        if (strcmp(env, auth_environments[i]) == 0)
            return 1;
    return 0;
}

/* Fill c's public part from a request; 0 or -1 with err (400). */
static int credential_from_request(const PB(AuthCredentialAdd) * req, uint64_t now_ms,
                                   auth_cred_t *c, auth_err_t *err)
{
    char q[160];
    const char *user = auth_str(req->username);
    const char *tenant = auth_str(req->tenant);
    const char *env = auth_str(req->environment);
    const char *pw = auth_str(req->password);
    if (!auth_username_valid(user))
        return auth_fail(err, 400,
                         "username %s is invalid: 1 to %d printable ASCII characters, no spaces",
                         auth_quoted(q, sizeof(q), user), AUTH_USERNAME_MAX);
    size_t pwlen = strnlen(pw, AUTH_PASSWORD_MAX + 1);
    if (pwlen < AUTH_PASSWORD_MIN)
        return auth_fail(err, 400, "password must have at least %d characters", AUTH_PASSWORD_MIN);
    if (pwlen > AUTH_PASSWORD_MAX)
        return auth_fail(err, 400, "password must have at most %d characters", AUTH_PASSWORD_MAX);
    if (!auth_tenant_name_valid(tenant))
        return auth_fail(err, 400, "tenant name %s is invalid", auth_quoted(q, sizeof(q), tenant));
    if (*env == '\0')
        env = AUTH_ENV_DEFAULT;
    if (!environment_valid(env))
        return auth_fail(err, 400, "environment %s is not production, staging or development",
                         auth_quoted(q, sizeof(q), env));
    if (req->n_domains > AUTH_CRED_DOMAINS_MAX)
        return auth_fail(err, 400, "a credential names at most %d domains", AUTH_CRED_DOMAINS_MAX);

    PB(Credential) *p = c->pub;
    p->username = xstrdup(user);
    p->tenant = xstrdup(tenant);
    p->environment = xstrdup(env);
    p->created_at_ms = now_ms;
    for (size_t i = 0; i < req->n_domains; i++) {
        char d[AUTH_DOMAIN_MAX + 1];
        const char *given = auth_str(req->domains[i]);
        if (auth_domain_normalize(given, d) < 0)
            return auth_fail(err, 400, "domain %s is not a valid host name",
                             auth_quoted(q, sizeof(q), given));
        int dup = 0;
        for (size_t j = 0; j < p->n_domains && !dup; j++)
            dup = strcmp(p->domains[j], d) == 0;
        if (dup)
            continue;
        p->domains = xrealloc(p->domains, (p->n_domains + 1) * sizeof(*p->domains));
        p->domains[p->n_domains++] = xstrdup(d);
    }
    return 0;
}

PB(Credential) * auth_credential_copy(const PB(Credential) * p)
{
    size_t len = PB_FN(credential, get_packed_size)(p);
    uint8_t *tmp = xmalloc(len);
    PB_FN(credential, pack)(p, tmp);
    PB(Credential) *copy = PB_FN(credential, unpack)(NULL, len, tmp);
    free(tmp);
    return copy;
}

int auth_api_credential_add(auth_api_t *api, const PB(AuthCredentialAdd) * req,
                            PB(AuthCredentialAddReply) * *reply, auth_err_t *err)
{
    *reply = NULL;
    char text[AUTH_ERR_TEXT_MAX] = "", hash[AUTH_HASH_STR_MAX];
    auth_cred_t c;
    auth_cred_init(&c);
    int rc = -1;
    if (req == NULL) {
        auth_fail(err, 400, "empty request");
        goto done;
    }
    if (credential_from_request(req, auth_now(api), &c, err) < 0)
        goto done;
    /* refuse what the store would refuse before paying for the hash */
    auth_st_t st = auth_store_cred_check(api->st, &c, text, sizeof(text));
    if (st != AUTH_ST_OK) {
        auth_fail_store(err, st, text, 400);
        goto done;
    }
    const char *pw = req->password;
    if (auth_hash_make(&api->conf.scrypt, pw, strlen(pw), hash, sizeof(hash)) < 0) {
        auth_fail(err, 500, "cannot hash the password");
        goto done;
    }
    auth_cred_add_secret(&c, AUTH_SECRET_PASSWORD, hash, c.pub->created_at_ms, 0);
    memset(hash, 0, sizeof(hash));
    c.updated_at_ms = c.pub->created_at_ms;
    st = auth_store_cred_add(api->st, &c, text, sizeof(text));
    if (st != AUTH_ST_OK) {
        auth_fail_store(err, st, text, 400);
        goto done;
    }
    char q[2 * AUTH_USERNAME_MAX + 8];
    log_info("event=credential_added user=%s tenant=%s env=%s domains=%zu generation=%llu",
             log_quote(q, sizeof(q), c.pub->username, strlen(c.pub->username)), c.pub->tenant,
             c.pub->environment, c.pub->n_domains, (unsigned long long)c.generation);
    PB(AuthCredentialAddReply) *r = xmalloc(sizeof(*r));
    PB(AuthCredentialAddReply) init = PB_INIT(AUTH_CREDENTIAL_ADD_REPLY);
    *r = init;
    c.pub->password_count = 1;
    r->credential = auth_credential_copy(c.pub);
    *reply = r;
    rc = 0;
done:
    auth_cred_clear(&c);
    return rc;
}

int auth_api_credential_list(auth_api_t *api, const PB(AuthCredentialList) * req,
                             PB(AuthCredentialListReply) * *reply, auth_err_t *err)
{
    *reply = NULL;
    const char *tenant = req ? auth_str(req->tenant) : "";
    if (tenant_filter_ok(api, tenant, err) < 0)
        return -1;
    PB(Credential) * *v;
    size_t n;
    auth_st_t st = auth_store_cred_list(api->st, tenant, auth_now(api), &v, &n);
    if (st != AUTH_ST_OK)
        return auth_fail_store(err, st, "", 500);
    PB(AuthCredentialListReply) *r = xmalloc(sizeof(*r));
    PB(AuthCredentialListReply) init = PB_INIT(AUTH_CREDENTIAL_LIST_REPLY);
    *r = init;
    r->credentials = v;
    r->n_credentials = n;
    *reply = r;
    return 0;
}
