/*
 * auth_verify: AuthLoginVerify. A login passes when the username names a
 * credential that is not revoked, the client address is inside the
 * credential's allowlist (when it has one), authzid (when given) equals
 * the username, and the secret is one of its live passwords (PLAIN,
 * LOGIN) or a bearer token that auth_jwt accepts for that username
 * (XOAUTH2, OAUTHBEARER). Every refusal of credentials gets the same 535
 * 5.7.8 (a refused token also gets the RFC 7628 error JSON), and an
 * unknown user is checked against a dummy hash of the same cost, so
 * neither the reply nor its timing tells which usernames exist.
 *
 * Failures count towards lockouts (auth_guard): per client, and per user
 * for known users. A locked client or user gets 421 4.7.0 before anything
 * is checked, so lockout refusals cost no hash. Successful password checks
 * go into the login cache; failures and tokens never do. When the
 * credential changes while a check runs on a worker (revoke, rotation,
 * allowlist), the result is checked again against the new record before it
 * is believed. Each check is logged (never the secret) and each failure
 * published as an auth_failed event. Not here: hashing passwords of new
 * credentials (auth_api), threads (auth_worker), rate limits (auth_manage).
 */
#include "auth_api_int.h"
#include "auth_net.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define QUOTED_MAX      (4 * AUTH_USERNAME_MAX + 8) /* log_quote of a username, worst case */
#define LOCKED_TEXT_MAX 128
#define OPENID_PATH     "/.well-known/openid-configuration"
#define OAUTH_SCOPE     "smtp"

typedef enum {
    MECH_PASSWORD = 0, /* PLAIN, LOGIN */
    MECH_XOAUTH2,
    MECH_OAUTHBEARER,
} mech_kind_t;

typedef enum {
    V_OK = 0,
    V_UNKNOWN_USER,
    V_BAD_PASSWORD,
    V_REVOKED,
    V_NO_PASSWORD, /* the credential has no live password */
    V_AUTHZID,     /* authzid names someone else */
    V_BAD_REQUEST, /* username or secret that no credential can have */
    V_NETWORK,     /* the client address is outside the credential's allowlist */
    V_TOKEN,       /* the bearer token was refused (auth_jwt says why) */
    V_LOCKED,      /* too many failures: refused unchecked */
    V_MECHANISM,   /* a mechanism this service does not check */
    V_STORE_ERROR, /* unreadable record or store failure: try later */
    V_BUSY,        /* the hash queue is full: try later */
} verdict_t;

static const char *const verdict_names[] = {
    [V_OK] = "ok",
    [V_UNKNOWN_USER] = "unknown_user",
    [V_BAD_PASSWORD] = "bad_password",
    [V_REVOKED] = "revoked",
    [V_NO_PASSWORD] = "no_password",
    [V_AUTHZID] = "authzid_mismatch",
    [V_BAD_REQUEST] = "bad_request",
    [V_NETWORK] = "network",
    [V_TOKEN] = "token",
    [V_LOCKED] = "locked_out",
    [V_MECHANISM] = "mechanism",
    [V_STORE_ERROR] = "store_error",
    [V_BUSY] = "busy",
};

struct auth_verify {
    /* from the request, bounded copies */
    char username[AUTH_USERNAME_MAX + 1];
    char client_ip[AUTH_IP_MAX + 1];
    char session_id[AUTH_SID_MAX + 1];
    char mechanism[AUTH_MECH_MAX + 1];
    mech_kind_t kind;
    char client_key[AUTH_NET_KEY_MAX]; /* "" when the address is unusable */
    unsigned char *secret;
    size_t secret_len;
    uint64_t now_ms; /* the api clock at step 1, for step 2's expiry checks */
    const auth_jwt_issuers_t *oauth;
    /* from the store, when the username names a credential */
    int known;
    int revoked;
    int net_refused;
    uint64_t generation;
    char tenant[AUTH_TENANT_MAX + 1];
    char environment[AUTH_ENV_MAX + 1];
    char **domains;
    size_t n_domains;
    /* what step 2 checks: live password hashes, or the dummy */
    char *hashes[AUTH_SECRETS_MAX];
    uint64_t expires[AUTH_SECRETS_MAX];
    size_t n_hashes;
    int no_live;
    int cacheable;
    unsigned char cache_key[AUTH_CACHE_KEY_LEN];
    /* step 2's result */
    size_t matched; /* index + 1 of the hash that matched; 0: none */
    unsigned malformed;
    auth_jwt_result_t jwt;
    /* a lockout */
    uint32_t retry_after_s;
    auth_guard_kind_t locked_kind;
    uint64_t started_ms;
};

static void free_domains(auth_verify_t *v)
{
    for (size_t i = 0; i < v->n_domains; i++)
        free(v->domains[i]);
    free(v->domains);
    v->domains = NULL;
    v->n_domains = 0;
}

void auth_verify_free(auth_verify_t **p)
{
    auth_verify_t *v = *p;
    if (v == NULL)
        return;
    if (v->secret) {
        OPENSSL_cleanse(v->secret, v->secret_len);
        free(v->secret);
    }
    for (size_t i = 0; i < v->n_hashes; i++)
        free(v->hashes[i]);
    free_domains(v);
    OPENSSL_cleanse(v->cache_key, sizeof(v->cache_key));
    free(v);
    *p = NULL;
}

/* ---- the answer ---- */

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

static PB(Status) * verdict_status(verdict_t verdict, uint32_t retry_after_s)
{
    char text[LOCKED_TEXT_MAX];
    switch (verdict) {
    case V_OK:
        return status_new(235, "2.7.0", "Authentication successful");
    case V_MECHANISM:
        return status_new(504, "5.5.4", "Unrecognized authentication type");
    case V_STORE_ERROR:
    case V_BUSY:
        return status_new(454, "4.7.0", "Temporary authentication failure");
    case V_LOCKED:
        snprintf(text, sizeof(text), "Too many authentication failures; try again in %u seconds",
                 retry_after_s);
        return status_new(421, "4.7.0", text);
    default:
        return status_new(535, "5.7.8", "Authentication credentials invalid");
    }
}

/* Refusals of what the client sent: these count towards lockouts. */
static int verdict_is_failure(verdict_t verdict)
{
    switch (verdict) {
    case V_UNKNOWN_USER:
    case V_BAD_PASSWORD:
    case V_REVOKED:
    case V_NO_PASSWORD:
    case V_AUTHZID:
    case V_BAD_REQUEST:
    case V_NETWORK:
    case V_TOKEN:
        return 1;
    default:
        return 0;
    }
}

static const char *verdict_reason(const auth_verify_t *v, verdict_t verdict)
{
    return verdict == V_TOKEN ? auth_jwt_status_name(v->jwt.status) : verdict_names[verdict];
}

/* The JSON a refused bearer token gets before the final 535 (RFC 7628, 3.2.2). */
static char *oauth_error_json(const auth_verify_t *v)
{
    json_t *o = json_object();
    if (v->kind == MECH_XOAUTH2) {
        json_object_set_new(o, "status", json_string("401"));
        json_object_set_new(o, "schemes", json_string("bearer"));
        json_object_set_new(o, "scope", json_string(OAUTH_SCOPE));
    } else {
        json_object_set_new(o, "status", json_string("invalid_token"));
        json_object_set_new(o, "scope", json_string(OAUTH_SCOPE));
        if (v->jwt.issuer[0]) {
            char url[AUTH_JWT_NAME_MAX + sizeof(OPENID_PATH) + 1];
            size_t n = strlen(v->jwt.issuer);
            while (n > 0 && v->jwt.issuer[n - 1] == '/')
                n--;
            snprintf(url, sizeof(url), "%.*s%s", (int)n, v->jwt.issuer, OPENID_PATH);
            json_object_set_new(o, "openid-configuration", json_string(url));
        }
    }
    char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    char *copy = xstrdup(text ? text : "{}");
    free(text);
    return copy;
}

static void publish_failure(auth_api_t *api, const auth_verify_t *v, verdict_t verdict,
                            const char *user, const PB(Status) * status)
{
    if (api->event_fn == NULL)
        return;
    PB(Attr) attrs[4];
    PB(Attr) * pattrs[4];
    const char *keys[4] = {"username", "client_ip", "reason", "mechanism"};
    const char *values[4] = {user, v->client_ip, verdict_reason(v, verdict), v->mechanism};
    for (size_t i = 0; i < 4; i++) {
        PB(Attr) init = PB_INIT(ATTR);
        attrs[i] = init;
        attrs[i].key = (char *)keys[i];
        attrs[i].value = (char *)values[i];
        pattrs[i] = &attrs[i];
    }
    PB(Event) ev = PB_INIT(EVENT);
    ev.type = (char *)"auth_failed";
    ev.session_id = (char *)v->session_id;
    ev.tenant = (char *)(v->known ? v->tenant : "");
    ev.reply = (PB(Status) *)status;
    ev.attrs = pattrs;
    ev.n_attrs = 4;
    api->event_fn(&ev, api->event_arg);
}

/* Count a failure towards the lockouts; log a lockout that begins. */
static void count_failure(auth_api_t *api, const auth_verify_t *v, const char *user,
                          const char *sid)
{
    unsigned began =
        auth_guard_failure(api->guard, v->client_key, v->known ? v->username : NULL, auth_now(api));
    if (began & AUTH_GUARD_CLIENT)
        log_warn("event=auth_lockout sid=%s scope=client client=%s duration_s=%llu", sid,
                 v->client_key, (unsigned long long)(api->conf.lockout.duration_ms / 1000));
    if (began & AUTH_GUARD_USER)
        log_warn("event=auth_lockout sid=%s scope=user user=%s duration_s=%llu", sid, user,
                 (unsigned long long)(api->conf.lockout.duration_ms / 1000));
}

/* Log, count, publish and answer; consumes the job. */
static PB(AuthLoginVerifyReply) *
    conclude(auth_api_t *api, auth_verify_t **vp, verdict_t verdict, int cached)
{
    auth_verify_t *v = *vp;
    char user[QUOTED_MAX], ip[2 * AUTH_IP_MAX + 8], sid[2 * AUTH_SID_MAX + 8];
    char mech[2 * AUTH_MECH_MAX + 8];
    log_quote(user, sizeof(user), v->username, strlen(v->username));
    log_quote(ip, sizeof(ip), v->client_ip, strlen(v->client_ip));
    log_quote(sid, sizeof(sid), v->session_id, strlen(v->session_id));
    log_quote(mech, sizeof(mech), v->mechanism, strlen(v->mechanism));
    uint64_t ms = clock_mono_ms() - v->started_ms;
    log_write(verdict == V_OK ? LOG_INFO : LOG_WARN,
              "event=auth_verify sid=%s user=%s ip=%s mech=%s result=%s reason=%s cached=%d "
              "tenant=%s ms=%llu",
              sid, user, ip, mech, verdict == V_OK ? "ok" : "failed", verdict_reason(v, verdict),
              cached, v->known ? v->tenant : "-", (unsigned long long)ms);

    PB(AuthLoginVerifyReply) *r = xmalloc(sizeof(*r));
    PB(AuthLoginVerifyReply) init = PB_INIT(AUTH_LOGIN_VERIFY_REPLY);
    *r = init;
    r->status = verdict_status(verdict, v->retry_after_s);
    if (verdict == V_OK) {
        api->verify_ok++;
        auth_guard_success(api->guard, v->username);
        r->ok = 1;
        r->tenant = xstrdup(v->tenant);
        r->username = xstrdup(v->username);
        r->environment = xstrdup(v->environment);
        r->domains = v->domains; /* moved */
        r->n_domains = v->n_domains;
        v->domains = NULL;
        v->n_domains = 0;
    } else {
        if (verdict == V_BUSY)
            api->verify_busy++;
        else if (verdict == V_LOCKED)
            api->verify_locked++;
        else
            api->verify_failed++;
        if (verdict == V_LOCKED)
            r->retry_after_s = v->retry_after_s;
        if (verdict_is_failure(verdict)) {
            count_failure(api, v, user, sid);
            if (v->kind != MECH_PASSWORD)
                r->oauth_error = oauth_error_json(v);
        }
        publish_failure(api, v, verdict, user, r->status);
    }
    auth_verify_free(vp);
    return r;
}

/* ---- step 1 ---- */

static int mechanism_kind(const char *m, mech_kind_t *kind)
{
    if (*m == '\0' || strcasecmp(m, "PLAIN") == 0 || strcasecmp(m, "LOGIN") == 0)
        *kind = MECH_PASSWORD;
    else if (strcasecmp(m, "XOAUTH2") == 0)
        *kind = MECH_XOAUTH2;
    else if (strcasecmp(m, "OAUTHBEARER") == 0)
        *kind = MECH_OAUTHBEARER;
    else
        return -1;
    return 0;
}

/* 1 when the credential lets this client address in. */
static int network_allowed(const auth_verify_t *v, const auth_cred_t *c)
{
    const PB(Credential) *p = c->pub;
    return p->n_allowed_networks == 0 ||
           auth_net_allowed(p->allowed_networks, p->n_allowed_networks, v->client_ip);
}

/* Copy what step 2 needs from the credential; V_OK or the verdict already known. */
static verdict_t load_credential(auth_api_t *api, auth_verify_t *v, const auth_cred_t *c)
{
    v->known = 1;
    v->revoked = c->pub->revoked;
    v->net_refused = !network_allowed(v, c);
    v->generation = c->generation;
    sx_strlcpy(v->tenant, c->pub->tenant, sizeof(v->tenant));
    sx_strlcpy(v->environment, c->pub->environment, sizeof(v->environment));
    if (v->kind == MECH_PASSWORD) {
        for (size_t i = 0; i < c->n_secrets && v->n_hashes < AUTH_SECRETS_MAX; i++) {
            const auth_secret_t *s = &c->secrets[i];
            if (s->kind != AUTH_SECRET_PASSWORD ||
                (s->expires_at_ms && s->expires_at_ms <= v->now_ms))
                continue;
            v->expires[v->n_hashes] = s->expires_at_ms;
            v->hashes[v->n_hashes++] = xstrdup(s->hash);
        }
        if (v->n_hashes == 0) {
            v->no_live = 1;
            v->hashes[v->n_hashes++] = xstrdup(api->dummy_hash);
        }
    }
    if (v->revoked || v->no_live || v->net_refused)
        return V_OK;
    if (auth_store_login_domains(api->st, c, &v->domains, &v->n_domains) != AUTH_ST_OK)
        return V_STORE_ERROR;
    if (v->kind == MECH_PASSWORD)
        v->cacheable = auth_cache_key(api->cache, v->username, strlen(v->username), v->secret,
                                      v->secret_len, v->cache_key) == 0;
    return V_OK;
}

auth_verify_t *auth_api_verify_begin(auth_api_t *api, const PB(AuthLoginVerify) * req,
                                     PB(AuthLoginVerifyReply) * *reply)
{
    *reply = NULL;
    auth_verify_t *v = xcalloc(1, sizeof(*v));
    v->started_ms = clock_mono_ms();
    v->now_ms = auth_now(api);
    v->oauth = api->conf.oauth;
    const char *user = req ? auth_str(req->username) : "";
    const char *authzid = req ? auth_str(req->authzid) : "";
    sx_strlcpy(v->username, user, sizeof(v->username));
    sx_strlcpy(v->client_ip, req ? auth_str(req->client_ip) : "", sizeof(v->client_ip));
    sx_strlcpy(v->session_id, req ? auth_str(req->session_id) : "", sizeof(v->session_id));
    sx_strlcpy(v->mechanism, req ? auth_str(req->mechanism) : "", sizeof(v->mechanism));

    if (mechanism_kind(v->mechanism, &v->kind) < 0) {
        *reply = conclude(api, &v, V_MECHANISM, 0);
        return NULL;
    }
    if (auth_net_client_key(v->client_ip, v->client_key, sizeof(v->client_key)) < 0)
        v->client_key[0] = '\0';
    int user_ok = auth_username_valid(user);
    v->retry_after_s = auth_guard_locked(api->guard, v->client_key, user_ok ? user : NULL,
                                         v->now_ms, &v->locked_kind);
    if (v->retry_after_s > 0) {
        *reply = conclude(api, &v, V_LOCKED, 0);
        return NULL;
    }
    /* no stored password holds a NUL, and scrypt would treat "pw\0" as "pw" */
    size_t slen = req ? req->secret.len : 0;
    size_t smax = v->kind == MECH_PASSWORD ? AUTH_PASSWORD_MAX : AUTH_JWT_TOKEN_MAX;
    if (!user_ok || slen > smax ||
        (slen > 0 && (req->secret.data == NULL || memchr(req->secret.data, 0, slen)))) {
        *reply = conclude(api, &v, V_BAD_REQUEST, 0);
        return NULL;
    }
    if (*authzid && strcmp(authzid, user) != 0) {
        *reply = conclude(api, &v, V_AUTHZID, 0);
        return NULL;
    }
    v->secret = xmalloc(slen ? slen : 1);
    if (slen)
        memcpy(v->secret, req->secret.data, slen);
    v->secret_len = slen;

    auth_cred_t c;
    auth_st_t st = auth_store_cred_get(api->st, v->username, &c);
    if (st == AUTH_ST_NOTFOUND) {
        if (v->kind == MECH_PASSWORD)
            v->hashes[v->n_hashes++] = xstrdup(api->dummy_hash);
        return v;
    }
    if (st != AUTH_ST_OK) {
        *reply = conclude(api, &v, V_STORE_ERROR, 0);
        return NULL;
    }
    verdict_t early = load_credential(api, v, &c);
    auth_cred_clear(&c);
    if (early != V_OK) {
        *reply = conclude(api, &v, early, 0);
        return NULL;
    }
    if (v->cacheable && auth_cache_lookup(api->cache, v->cache_key, v->generation, v->now_ms)) {
        *reply = conclude(api, &v, V_OK, 1);
        return NULL;
    }
    return v;
}

/* ---- step 2 ---- */

void auth_verify_run(auth_verify_t *v)
{
    if (v->kind == MECH_PASSWORD) {
        for (size_t i = 0; i < v->n_hashes && v->matched == 0; i++) {
            auth_hash_result_t r = auth_hash_verify(v->hashes[i], v->secret, v->secret_len);
            if (r == AUTH_HASH_MATCH)
                v->matched = i + 1;
            else if (r == AUTH_HASH_MALFORMED)
                v->malformed++;
        }
    } else {
        auth_jwt_verify(v->oauth, v->secret, v->secret_len, v->username, v->now_ms, &v->jwt);
    }
    OPENSSL_cleanse(v->secret, v->secret_len);
}

/* ---- step 3 ---- */

/*
 * The credential changed while step 2 ran (a revoke, a rotation, a new
 * allowlist): believe a pass only if the new record still allows it.
 */
static verdict_t recheck(auth_api_t *api, auth_verify_t *v)
{
    auth_cred_t c;
    auth_st_t st = auth_store_cred_get(api->st, v->username, &c);
    if (st == AUTH_ST_NOTFOUND)
        return V_UNKNOWN_USER;
    if (st != AUTH_ST_OK)
        return V_STORE_ERROR;
    verdict_t verdict = V_OK;
    uint64_t now = auth_now(api);
    if (c.generation == v->generation)
        goto done;
    if (c.pub->revoked) {
        verdict = V_REVOKED;
        goto done;
    }
    if (!network_allowed(v, &c)) {
        verdict = V_NETWORK;
        goto done;
    }
    if (v->kind == MECH_PASSWORD) {
        const char *hash = v->hashes[v->matched - 1];
        int live = 0;
        for (size_t i = 0; i < c.n_secrets && !live; i++) {
            const auth_secret_t *s = &c.secrets[i];
            if (s->kind == AUTH_SECRET_PASSWORD && strcmp(s->hash, hash) == 0 &&
                (s->expires_at_ms == 0 || s->expires_at_ms > now)) {
                live = 1;
                v->expires[v->matched - 1] = s->expires_at_ms;
            }
        }
        if (!live) {
            verdict = V_BAD_PASSWORD;
            goto done;
        }
    }
    free_domains(v);
    if (auth_store_login_domains(api->st, &c, &v->domains, &v->n_domains) != AUTH_ST_OK) {
        verdict = V_STORE_ERROR;
        goto done;
    }
    v->generation = c.generation;
    sx_strlcpy(v->tenant, c.pub->tenant, sizeof(v->tenant));
    sx_strlcpy(v->environment, c.pub->environment, sizeof(v->environment));
done:
    auth_cred_clear(&c);
    return verdict;
}

PB(AuthLoginVerifyReply) * auth_api_verify_finish(auth_api_t *api, auth_verify_t **vp)
{
    auth_verify_t *v = *vp;
    verdict_t verdict;
    if (!v->known)
        verdict = V_UNKNOWN_USER;
    else if (v->revoked)
        verdict = V_REVOKED;
    else if (v->net_refused)
        verdict = V_NETWORK;
    else if (v->kind != MECH_PASSWORD)
        verdict = v->jwt.status == AUTH_JWT_OK ? V_OK : V_TOKEN;
    else if (v->no_live)
        verdict = V_NO_PASSWORD;
    else
        verdict = v->matched ? V_OK : V_BAD_PASSWORD;
    if (v->malformed && v->known && !v->no_live) {
        char user[QUOTED_MAX];
        log_error("event=hash_malformed user=%s count=%u",
                  log_quote(user, sizeof(user), v->username, strlen(v->username)), v->malformed);
    }
    if (verdict == V_OK)
        verdict = recheck(api, v);
    if (verdict == V_OK && v->cacheable) {
        /* a password that is being rotated out must not outlive its expiry in the cache */
        uint64_t lifetime = 0, expires = v->expires[v->matched - 1], now = auth_now(api);
        if (expires)
            lifetime = expires > now ? expires - now : 1;
        auth_cache_put(api->cache, v->cache_key, v->generation, now, lifetime);
    }
    return conclude(api, vp, verdict, 0);
}

PB(AuthLoginVerifyReply) * auth_api_verify_busy(auth_api_t *api, auth_verify_t **vp)
{
    return conclude(api, vp, V_BUSY, 0);
}

PB(AuthLoginVerifyReply) * auth_api_login_verify(auth_api_t *api, const PB(AuthLoginVerify) * req)
{
    PB(AuthLoginVerifyReply) *reply = NULL;
    auth_verify_t *v = auth_api_verify_begin(api, req, &reply);
    if (v == NULL)
        return reply;
    auth_verify_run(v);
    return auth_api_verify_finish(api, &v);
}
