/*
 * auth_manage: the requests that change a credential or a tenant after it
 * exists (password rotation, revoke, client network allowlists, message
 * rate limits) and the rate check ingress asks before each message. Each
 * change to a credential is one auth_store_cred_update, which gives the
 * credential a new generation and so retires its cached logins at once.
 * A revoked credential stays revoked: rotation refuses it. Not here: the
 * counting itself (auth_rate), login checks (auth_verify).
 */
#include "auth_api_int.h"
#include "auth_net.h"
#include "core/alloc.h"
#include "core/log.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define USER_QUOTED_MAX (4 * AUTH_USERNAME_MAX + 8)
#define RATE_TEXT_MAX   512

/* ---- credentials read and written whole ---- */

/* Read the credential a request names; 0, or -1 with err (400, 404, 500). */
static int load_cred(auth_api_t *api, const char *user, auth_cred_t *c, auth_err_t *err)
{
    char q[160];
    if (!auth_username_valid(user))
        return auth_fail(err, 400,
                         "username %s is invalid: 1 to %d printable ASCII characters, no spaces",
                         auth_quoted(q, sizeof(q), user), AUTH_USERNAME_MAX);
    auth_st_t st = auth_store_cred_get(api->st, user, c);
    if (st == AUTH_ST_NOTFOUND)
        return auth_fail(err, 404, "credential %s not found", auth_quoted(q, sizeof(q), user));
    if (st != AUTH_ST_OK)
        return auth_fail_store(err, st, "", 500);
    return 0;
}

/* Write c back if nobody changed it since it was read; consumes nothing. */
static int save_cred(auth_api_t *api, auth_cred_t *c, auth_err_t *err)
{
    char text[AUTH_ERR_TEXT_MAX] = "";
    c->updated_at_ms = auth_now(api);
    auth_st_t st = auth_store_cred_update(api->st, c, c->generation, text, sizeof(text));
    return st == AUTH_ST_OK ? 0 : auth_fail_store(err, st, text, 409);
}

static PB(Credential) * reply_credential(const auth_api_t *api, auth_cred_t *c)
{
    c->pub->password_count = (uint32_t)auth_cred_live_passwords(c, auth_now(api));
    return auth_credential_copy(c->pub);
}

static const char *user_quoted(char *buf, const char *user)
{
    return log_quote(buf, USER_QUOTED_MAX, user, strlen(user));
}

/* ---- rotation and revoke ---- */

int auth_api_credential_rotate(auth_api_t *api, const PB(AuthCredentialRotate) * req,
                               PB(AuthCredentialRotateReply) * *reply, auth_err_t *err)
{
    *reply = NULL;
    if (req == NULL)
        return auth_fail(err, 400, "empty request");
    const char *pw = auth_str(req->password);
    size_t pwlen = strnlen(pw, AUTH_PASSWORD_MAX + 1);
    if (pwlen < AUTH_PASSWORD_MIN)
        return auth_fail(err, 400, "password must have at least %d characters", AUTH_PASSWORD_MIN);
    if (pwlen > AUTH_PASSWORD_MAX)
        return auth_fail(err, 400, "password must have at most %d characters", AUTH_PASSWORD_MAX);
    if (req->grace_s > AUTH_GRACE_MAX_S)
        return auth_fail(err, 400, "grace period must be at most %u seconds (30 days)",
                         AUTH_GRACE_MAX_S);
    auth_cred_t c;
    if (load_cred(api, auth_str(req->username), &c, err) < 0)
        return -1;
    int rc = -1;
    char hash[AUTH_HASH_STR_MAX], q[USER_QUOTED_MAX];
    const char *user = c.pub->username;
    if (c.pub->revoked) {
        auth_fail(err, 409, "credential %s is revoked, and a revoked credential stays revoked",
                  user_quoted(q, user));
        goto done;
    }
    uint64_t now = auth_now(api), until = now + (uint64_t)req->grace_s * 1000;
    auth_cred_prune(&c, now);
    for (size_t i = 0; i < c.n_secrets; i++) {
        auth_secret_t *s = &c.secrets[i];
        if (s->kind == AUTH_SECRET_PASSWORD && (s->expires_at_ms == 0 || s->expires_at_ms > until))
            s->expires_at_ms = until;
    }
    auth_cred_prune(&c, now); /* grace 0: the old ones go now */
    if (c.n_secrets >= AUTH_SECRETS_MAX) {
        auth_fail(err, 409,
                  "credential %s already has %zu live passwords; rotate with grace 0 or wait "
                  "for older ones to expire",
                  user_quoted(q, user), c.n_secrets);
        goto done;
    }
    if (auth_hash_make(&api->conf.scrypt, pw, pwlen, hash, sizeof(hash)) < 0) {
        auth_fail(err, 500, "cannot hash the password");
        goto done;
    }
    auth_cred_add_secret(&c, AUTH_SECRET_PASSWORD, hash, now, 0);
    OPENSSL_cleanse(hash, sizeof(hash));
    c.pub->rotated_at_ms = now;
    if (save_cred(api, &c, err) < 0)
        goto done;
    log_info("event=credential_rotated user=%s tenant=%s grace_s=%u live_passwords=%zu "
             "generation=%llu",
             user_quoted(q, user), c.pub->tenant, req->grace_s, auth_cred_live_passwords(&c, now),
             (unsigned long long)c.generation);
    PB(AuthCredentialRotateReply) *r = xmalloc(sizeof(*r));
    PB(AuthCredentialRotateReply) init = PB_INIT(AUTH_CREDENTIAL_ROTATE_REPLY);
    *r = init;
    r->credential = reply_credential(api, &c);
    *reply = r;
    rc = 0;
done:
    auth_cred_clear(&c);
    return rc;
}

int auth_api_credential_revoke(auth_api_t *api, const PB(AuthCredentialRevoke) * req,
                               PB(AuthCredentialRevokeReply) * *reply, auth_err_t *err)
{
    *reply = NULL;
    auth_cred_t c;
    if (load_cred(api, req ? auth_str(req->username) : "", &c, err) < 0)
        return -1;
    if (!c.pub->revoked) {
        char q[USER_QUOTED_MAX];
        c.pub->revoked = 1;
        auth_cred_drop_secrets(&c);
        if (save_cred(api, &c, err) < 0) {
            auth_cred_clear(&c);
            return -1;
        }
        log_info("event=credential_revoked user=%s tenant=%s generation=%llu",
                 user_quoted(q, c.pub->username), c.pub->tenant, (unsigned long long)c.generation);
    }
    PB(AuthCredentialRevokeReply) *r = xmalloc(sizeof(*r));
    PB(AuthCredentialRevokeReply) init = PB_INIT(AUTH_CREDENTIAL_REVOKE_REPLY);
    *r = init;
    r->credential = reply_credential(api, &c);
    *reply = r;
    auth_cred_clear(&c);
    return 0;
}

/* ---- allowlists ---- */

static PB(AuthAllowReply) * allow_reply(const PB(Credential) * p)
{
    PB(AuthAllowReply) *r = xmalloc(sizeof(*r));
    PB(AuthAllowReply) init = PB_INIT(AUTH_ALLOW_REPLY);
    *r = init;
    r->username = xstrdup(p->username);
    r->networks = xcalloc(p->n_allowed_networks ? p->n_allowed_networks : 1, sizeof(char *));
    for (size_t i = 0; i < p->n_allowed_networks; i++)
        r->networks[i] = xstrdup(p->allowed_networks[i]);
    r->n_networks = p->n_allowed_networks;
    return r;
}

/* The normal form of a requested network; 0 or -1 with err (400). */
static int network_arg(const char *given, char out[AUTH_NETWORK_MAX + 1], auth_err_t *err)
{
    if (auth_net_normalize(given, out) == 0)
        return 0;
    char q[160];
    return auth_fail(err, 400,
                     "network %s is not an IPv4 or IPv6 network (CIDR such as 192.0.2.0/24, or one "
                     "address)",
                     auth_quoted(q, sizeof(q), given));
}

static ssize_t network_index(const PB(Credential) * p, const char *net)
{
    for (size_t i = 0; i < p->n_allowed_networks; i++)
        if (strcmp(p->allowed_networks[i], net) == 0)
            return (ssize_t)i;
    return -1;
}

/* Add (add = 1) or remove a network and save; the reply lists what is left. */
static int allow_change(auth_api_t *api, const char *user, const char *given, int add,
                        PB(AuthAllowReply) * *reply, auth_err_t *err)
{
    *reply = NULL;
    char net[AUTH_NETWORK_MAX + 1], q[USER_QUOTED_MAX];
    if (network_arg(given, net, err) < 0)
        return -1;
    auth_cred_t c;
    if (load_cred(api, user, &c, err) < 0)
        return -1;
    PB(Credential) *p = c.pub;
    ssize_t at = network_index(p, net);
    int rc = -1;
    if (add && at >= 0) {
        auth_fail(err, 409, "network %s is already allowed for credential %s", net,
                  user_quoted(q, user));
    } else if (add && p->n_allowed_networks >= AUTH_CRED_NETWORKS_MAX) {
        auth_fail(err, 400, "a credential allows at most %d networks", AUTH_CRED_NETWORKS_MAX);
    } else if (!add && at < 0) {
        auth_fail(err, 404, "network %s is not allowed for credential %s", net,
                  user_quoted(q, user));
    } else {
        if (add) {
            p->allowed_networks =
                xrealloc(p->allowed_networks, (p->n_allowed_networks + 1) * sizeof(char *));
            p->allowed_networks[p->n_allowed_networks++] = xstrdup(net);
        } else {
            free(p->allowed_networks[at]);
            memmove(&p->allowed_networks[at], &p->allowed_networks[at + 1],
                    (p->n_allowed_networks - (size_t)at - 1) * sizeof(char *));
            p->n_allowed_networks--;
        }
        if (save_cred(api, &c, err) == 0) {
            log_info("event=%s user=%s network=%s networks=%zu generation=%llu",
                     add ? "network_allowed" : "network_removed", user_quoted(q, user), net,
                     p->n_allowed_networks, (unsigned long long)c.generation);
            *reply = allow_reply(p);
            rc = 0;
        }
    }
    auth_cred_clear(&c);
    return rc;
}

int auth_api_allow_add(auth_api_t *api, const PB(AuthAllowAdd) * req, PB(AuthAllowReply) * *reply,
                       auth_err_t *err)
{
    return allow_change(api, req ? auth_str(req->username) : "", req ? auth_str(req->network) : "",
                        1, reply, err);
}

int auth_api_allow_remove(auth_api_t *api, const PB(AuthAllowRemove) * req,
                          PB(AuthAllowReply) * *reply, auth_err_t *err)
{
    return allow_change(api, req ? auth_str(req->username) : "", req ? auth_str(req->network) : "",
                        0, reply, err);
}

int auth_api_allow_list(auth_api_t *api, const PB(AuthAllowList) * req, PB(AuthAllowReply) * *reply,
                        auth_err_t *err)
{
    *reply = NULL;
    auth_cred_t c;
    if (load_cred(api, req ? auth_str(req->username) : "", &c, err) < 0)
        return -1;
    *reply = allow_reply(c.pub);
    auth_cred_clear(&c);
    return 0;
}

/* ---- rate limits ---- */

int auth_api_limit_set(auth_api_t *api, const PB(AuthLimitSet) * req,
                       PB(AuthLimitSetReply) * *reply, auth_err_t *err)
{
    *reply = NULL;
    const char *tenant = req ? auth_str(req->tenant) : "";
    const char *user = req ? auth_str(req->username) : "";
    char q[USER_QUOTED_MAX];
    if ((*tenant != '\0') == (*user != '\0'))
        return auth_fail(err, 400, "name exactly one of a tenant and a credential");
    if (*tenant) {
        char text[AUTH_ERR_TEXT_MAX] = "";
        if (!auth_tenant_name_valid(tenant))
            return auth_fail(err, 400, "tenant name %s is invalid",
                             auth_quoted(q, sizeof(q), tenant));
        auth_st_t st = auth_store_tenant_set_limits(api->st, tenant, req->per_minute, req->per_day,
                                                    text, sizeof(text));
        if (st != AUTH_ST_OK)
            return auth_fail_store(err, st, text, 409);
    } else {
        auth_cred_t c;
        if (load_cred(api, user, &c, err) < 0)
            return -1;
        c.pub->rate_per_minute = req->per_minute;
        c.pub->rate_per_day = req->per_day;
        int rc = save_cred(api, &c, err);
        auth_cred_clear(&c);
        if (rc < 0)
            return -1;
    }
    log_info("event=limits_set %s=%s per_minute=%u per_day=%u", *tenant ? "tenant" : "user",
             *tenant ? tenant : user_quoted(q, user), req->per_minute, req->per_day);
    PB(AuthLimitSetReply) *r = xmalloc(sizeof(*r));
    PB(AuthLimitSetReply) init = PB_INIT(AUTH_LIMIT_SET_REPLY);
    *r = init;
    r->tenant = xstrdup(tenant);
    r->username = xstrdup(user);
    r->per_minute = req->per_minute;
    r->per_day = req->per_day;
    *reply = r;
    return 0;
}

static PB(Status) * status_new(unsigned code, const char *enhanced, const char *text)
{
    PB(Status) *s = xmalloc(sizeof(*s));
    PB(Status) init = PB_INIT(STATUS);
    *s = init;
    s->code = code;
    s->enhanced = xstrdup(enhanced);
    s->text = xstrdup(text);
    return s;
}

/* The limits that apply to a rate check; 0 or -1 with err (400, 404, 500). */
static int rate_limits(auth_api_t *api, const char *tenant, const char *user,
                       auth_rate_limit_t *limits, size_t *n, auth_err_t *err)
{
    char q[USER_QUOTED_MAX];
    *n = 0;
    if (*user) {
        auth_cred_t c;
        if (load_cred(api, user, &c, err) < 0)
            return -1;
        int other = *tenant && strcmp(c.pub->tenant, tenant) != 0;
        if (other)
            auth_fail(err, 400, "credential %s belongs to tenant %s, not %s", user_quoted(q, user),
                      c.pub->tenant, tenant);
        limits[(*n)++] = (auth_rate_limit_t){AUTH_RATE_CREDENTIAL, user, c.pub->rate_per_minute,
                                             c.pub->rate_per_day};
        auth_cred_clear(&c);
        if (other)
            return -1;
    }
    if (*tenant) {
        if (!auth_tenant_name_valid(tenant))
            return auth_fail(err, 400, "tenant name %s is invalid",
                             auth_quoted(q, sizeof(q), tenant));
        PB(Tenant) *t = NULL;
        auth_st_t st = auth_store_tenant_get(api->st, tenant, &t);
        if (st == AUTH_ST_NOTFOUND)
            return auth_fail(err, 404, "tenant %s not found", tenant);
        if (st != AUTH_ST_OK)
            return auth_fail_store(err, st, "", 500);
        limits[(*n)++] =
            (auth_rate_limit_t){AUTH_RATE_TENANT, tenant, t->rate_per_minute, t->rate_per_day};
        PB_FN(tenant, free_unpacked)(t, NULL);
    }
    return 0;
}

static int rate_unlimited(const auth_rate_limit_t *limits, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (limits[i].per_minute || limits[i].per_day)
            return 0;
    return 1;
}

int auth_api_rate_check(auth_api_t *api, const PB(AuthRateCheck) * req,
                        PB(AuthRateCheckReply) * *reply, auth_err_t *err)
{
    *reply = NULL;
    const char *tenant = req ? auth_str(req->tenant) : "";
    const char *user = req ? auth_str(req->username) : "";
    char sid[2 * AUTH_SID_MAX + 8], q[USER_QUOTED_MAX];
    const char *given_sid = req ? auth_str(req->session_id) : "";
    log_quote(sid, sizeof(sid), given_sid, strnlen(given_sid, AUTH_SID_MAX));
    auth_rate_limit_t limits[2];
    size_t n;
    if (rate_limits(api, tenant, user, limits, &n, err) < 0)
        return -1;
    auth_rate_refusal_t ref;
    int rc = auth_rate_take(api->rate, limits, n, auth_now(api), &ref);
    if (rc < 0)
        return auth_fail(err, 500, "cannot read the day counters of the rate limits");
    PB(AuthRateCheckReply) *r = xmalloc(sizeof(*r));
    PB(AuthRateCheckReply) init = PB_INIT(AUTH_RATE_CHECK_REPLY);
    *r = init;
    if (rc == 0) {
        r->ok = 1;
        r->status = status_new(250, "2.0.0", "Within the rate limits");
        if (rate_unlimited(limits, n))
            r->unlimited_for_ms = AUTH_RATE_UNLIMITED_LEASE_MS;
        log_debug("event=rate_check sid=%s user=%s tenant=%s result=ok", sid,
                  *user ? user_quoted(q, user) : "-", *tenant ? tenant : "-");
    } else {
        char text[RATE_TEXT_MAX];
        int cred = ref.scope == AUTH_RATE_CREDENTIAL;
        snprintf(text, sizeof(text),
                 "Rate limit of %u messages per %s reached for %s %s; retry in %u seconds",
                 ref.limit, ref.per_day ? "day" : "minute", cred ? "credential" : "tenant",
                 ref.name, ref.retry_after_s);
        r->status = status_new(451, "4.7.1", text);
        r->retry_after_s = ref.retry_after_s;
        log_warn("event=rate_limited sid=%s user=%s tenant=%s scope=%s window=%s limit=%u "
                 "retry_after_s=%u",
                 sid, *user ? user_quoted(q, user) : "-", *tenant ? tenant : "-",
                 cred ? "credential" : "tenant", ref.per_day ? "day" : "minute", ref.limit,
                 ref.retry_after_s);
    }
    *reply = r;
    return 0;
}

size_t auth_api_rate_pending(const auth_api_t *api)
{
    return auth_rate_dirty(api->rate);
}

int auth_api_rate_flush(auth_api_t *api)
{
    size_t n = auth_rate_dirty(api->rate);
    if (auth_rate_flush(api->rate) < 0) {
        log_error("event=rate_flush_failed counters=%zu", n);
        return -1;
    }
    return 0;
}
