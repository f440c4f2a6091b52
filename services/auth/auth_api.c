/*
 * auth_api: the management requests (tenants, domains, credentials). Input
 * syntax is checked here and refused with 400 and a clear text; the store
 * decides existence and ownership. Login verification lives in
 * auth_verify.c. Passwords are hashed before they reach the store and are
 * never logged.
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

auth_api_t *auth_api_new(auth_store_t *st, const auth_api_conf_t *conf, char *err,
                         size_t errlen)
{
    if (auth_hash_params_check(&conf->scrypt, err, errlen) < 0)
        return NULL;
    auth_api_t *api = xcalloc(1, sizeof(*api));
    api->st = st;
    api->conf = *conf;
    api->cache = auth_cache_new(conf->cache_max, conf->cache_ttl_ms);
    if (api->cache == NULL) {
        snprintf(err, errlen, "cannot set up the login cache (HMAC-SHA256 unavailable)");
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
    auth_cache_stats(api->cache, &cs);
    memset(out, 0, sizeof(*out));
    out->tenants = auth_store_tenant_count(api->st);
    out->credentials = auth_store_cred_count(api->st);
    out->verify_ok = api->verify_ok;
    out->verify_failed = api->verify_failed;
    out->verify_busy = api->verify_busy;
    out->cache_hits = cs.hits;
    out->cache_entries = cs.entries;
}

void auth_api_reply_free(void *reply)
{
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
}

/* ---- errors ---- */

static int fail(auth_err_t *err, unsigned code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(auth_err_t *err, unsigned code, const char *fmt, ...)
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

/* Turn a store refusal into an error; text is the store's explanation. */
static int fail_store(auth_err_t *err, auth_st_t st, const char *text, unsigned conflict_code)
{
    switch (st) {
    case AUTH_ST_NOTFOUND:
        return fail(err, 404, "%s", text);
    case AUTH_ST_EXISTS:
        return fail(err, 409, "%s", text);
    case AUTH_ST_CONFLICT:
        return fail(err, conflict_code, "%s", text);
    case AUTH_ST_FULL:
        fail(err, 500, "auth store is full: %s", text);
        err->enhanced = "4.3.1";
        return -1;
    case AUTH_ST_CORRUPT:
        return fail(err, 500, "auth store has an unreadable record: %s", text);
    default:
        return fail(err, 500, "auth store failed: %s", text[0] ? text : "see the auth log");
    }
}

/* ---- syntax ---- */

static const char *str_or_empty(const char *s)
{
    return s ? s : "";
}

int auth_tenant_name_valid(const char *s)
{
    size_t n = strnlen(s, AUTH_TENANT_MAX + 1);
    if (n == 0 || n > AUTH_TENANT_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
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

/* Lowercase and check a sending domain into out; 0 or -1. */
static int domain_normalize(const char *in, char out[AUTH_DOMAIN_MAX + 1])
{
    size_t n = strnlen(in, AUTH_DOMAIN_MAX + 1);
    if (n == 0 || n > AUTH_DOMAIN_MAX)
        return -1;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)tolower((unsigned char)in[i]);
    out[n] = '\0';
    return address_domain_valid(out, 0) ? 0 : -1;
}

/* A value from a request, quoted for an error text. */
static const char *quoted(char *buf, size_t size, const char *s)
{
    return log_quote(buf, size, s, strnlen(s, 128));
}

/* ---- tenants ---- */

int auth_api_tenant_add(auth_api_t *api, const PB(AuthTenantAdd) * req,
                        PB(AuthTenantAddReply) * *reply, auth_err_t *err)
{
    *reply = NULL;
    char q[160], text[AUTH_ERR_TEXT_MAX] = "";
    const char *name = req ? str_or_empty(req->name) : "";
    if (!auth_tenant_name_valid(name))
        return fail(err, 400,
                    "tenant name %s is invalid: 1 to %d characters of a-z, 0-9, '.', '_', '-'",
                    quoted(q, sizeof(q), name), AUTH_TENANT_MAX);
    PB(Tenant) *t = NULL;
    auth_st_t st = auth_store_tenant_add(api->st, name, clock_wall_ms(), &t, text, sizeof(text));
    if (st != AUTH_ST_OK)
        return fail_store(err, st, text, 409);
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
    PB(Tenant) **v;
    size_t n;
    auth_st_t st = auth_store_tenant_list(api->st, &v, &n);
    if (st != AUTH_ST_OK)
        return fail_store(err, st, "", 500);
    PB(AuthTenantListReply) *r = xmalloc(sizeof(*r));
    PB(AuthTenantListReply) init = PB_INIT(AUTH_TENANT_LIST_REPLY);
    *r = init;
    r->tenants = v;
    r->n_tenants = n;
    *reply = r;
    return 0;
}

/* ---- domains ---- */

int auth_api_domain_add(auth_api_t *api, const PB(AuthDomainAdd) * req,
                        PB(AuthDomainAddReply) * *reply, auth_err_t *err)
{
    *reply = NULL;
    char q[160], text[AUTH_ERR_TEXT_MAX] = "", domain[AUTH_DOMAIN_MAX + 1];
    const char *tenant = req ? str_or_empty(req->tenant) : "";
    const char *given = req ? str_or_empty(req->domain) : "";
    if (domain_normalize(given, domain) < 0)
        return fail(err, 400, "domain %s is not a valid host name",
                    quoted(q, sizeof(q), given));
    if (!auth_tenant_name_valid(tenant))
        return fail(err, 400, "tenant name %s is invalid", quoted(q, sizeof(q), tenant));
    auth_st_t st =
        auth_store_domain_add(api->st, domain, tenant, clock_wall_ms(), text, sizeof(text));
    if (st != AUTH_ST_OK)
        return fail_store(err, st, text, 409);
    log_info("event=domain_added domain=%s tenant=%s", domain, tenant);
    PB(AuthDomainAddReply) *r = xmalloc(sizeof(*r));
    PB(AuthDomainAddReply) init = PB_INIT(AUTH_DOMAIN_ADD_REPLY);
    *r = init;
    r->domain = xstrdup(domain);
    r->tenant = xstrdup(tenant);
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
static int credential_from_request(const PB(AuthCredentialAdd) * req, auth_cred_t *c,
                                   auth_err_t *err)
{
    char q[160];
    const char *user = str_or_empty(req->username);
    const char *tenant = str_or_empty(req->tenant);
    const char *env = str_or_empty(req->environment);
    const char *pw = str_or_empty(req->password);
    if (!auth_username_valid(user))
        return fail(err, 400,
                    "username %s is invalid: 1 to %d printable ASCII characters, no spaces",
                    quoted(q, sizeof(q), user), AUTH_USERNAME_MAX);
    size_t pwlen = strnlen(pw, AUTH_PASSWORD_MAX + 1);
    if (pwlen < AUTH_PASSWORD_MIN)
        return fail(err, 400, "password must have at least %d characters", AUTH_PASSWORD_MIN);
    if (pwlen > AUTH_PASSWORD_MAX)
        return fail(err, 400, "password must have at most %d characters", AUTH_PASSWORD_MAX);
    if (!auth_tenant_name_valid(tenant))
        return fail(err, 400, "tenant name %s is invalid", quoted(q, sizeof(q), tenant));
    if (*env == '\0')
        env = AUTH_ENV_DEFAULT;
    if (!environment_valid(env))
        return fail(err, 400, "environment %s is not production, staging or development",
                    quoted(q, sizeof(q), env));
    if (req->n_domains > AUTH_CRED_DOMAINS_MAX)
        return fail(err, 400, "a credential names at most %d domains", AUTH_CRED_DOMAINS_MAX);

    PB(Credential) *p = c->pub;
    p->username = xstrdup(user);
    p->tenant = xstrdup(tenant);
    p->environment = xstrdup(env);
    p->created_at_ms = clock_wall_ms();
    for (size_t i = 0; i < req->n_domains; i++) {
        char d[AUTH_DOMAIN_MAX + 1];
        const char *given = str_or_empty(req->domains[i]);
        if (domain_normalize(given, d) < 0)
            return fail(err, 400, "domain %s is not a valid host name",
                        quoted(q, sizeof(q), given));
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

/* A copy of the public part, for a reply. */
static PB(Credential) * credential_copy(const PB(Credential) * p)
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
        fail(err, 400, "empty request");
        goto done;
    }
    if (credential_from_request(req, &c, err) < 0)
        goto done;
    /* refuse what the store would refuse before paying for the hash */
    auth_st_t st = auth_store_cred_check(api->st, &c, text, sizeof(text));
    if (st != AUTH_ST_OK) {
        fail_store(err, st, text, 400);
        goto done;
    }
    const char *pw = req->password;
    if (auth_hash_make(&api->conf.scrypt, pw, strlen(pw), hash, sizeof(hash)) < 0) {
        fail(err, 500, "cannot hash the password");
        goto done;
    }
    auth_cred_add_secret(&c, AUTH_SECRET_PASSWORD, hash, c.pub->created_at_ms, 0);
    memset(hash, 0, sizeof(hash));
    c.updated_at_ms = c.pub->created_at_ms;
    st = auth_store_cred_add(api->st, &c, text, sizeof(text));
    if (st != AUTH_ST_OK) {
        fail_store(err, st, text, 400);
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
    r->credential = credential_copy(c.pub);
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
    char q[160];
    const char *tenant = req ? str_or_empty(req->tenant) : "";
    if (*tenant) {
        if (!auth_tenant_name_valid(tenant))
            return fail(err, 400, "tenant name %s is invalid", quoted(q, sizeof(q), tenant));
        int exists = auth_store_tenant_exists(api->st, tenant);
        if (exists < 0)
            return fail_store(err, AUTH_ST_ERROR, "", 500);
        if (exists == 0)
            return fail(err, 404, "tenant %s not found", tenant);
    }
    PB(Credential) **v;
    size_t n;
    auth_st_t st = auth_store_cred_list(api->st, tenant, &v, &n);
    if (st != AUTH_ST_OK)
        return fail_store(err, st, "", 500);
    PB(AuthCredentialListReply) *r = xmalloc(sizeof(*r));
    PB(AuthCredentialListReply) init = PB_INIT(AUTH_CREDENTIAL_LIST_REPLY);
    *r = init;
    r->credentials = v;
    r->n_credentials = n;
    *reply = r;
    return 0;
}
