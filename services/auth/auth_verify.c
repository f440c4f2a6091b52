/*
 * auth_verify: AuthLoginVerify. A login passes when the username names a
 * credential that is not revoked and the secret matches one of its live
 * password hashes (authzid, when given, must equal the username). Every
 * refusal of credentials gets the same 535 5.7.8, and an unknown user is
 * checked against a dummy hash of the same cost, so neither the reply nor
 * its timing tells which usernames exist. Successful checks go into the
 * login cache; failures never do. Each check is logged (never the secret)
 * and each failure published as an auth_failed event. Not here: hashing
 * passwords of new credentials (auth_api), threads (auth_worker), rate
 * limits and lockouts.
 */
#include "auth_api_int.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define QUOTED_MAX (4 * AUTH_USERNAME_MAX + 8) /* log_quote of a username, worst case */

typedef enum {
    V_OK = 0,
    V_UNKNOWN_USER,
    V_BAD_PASSWORD,
    V_REVOKED,
    V_NO_PASSWORD,   /* the credential has no live password */
    V_AUTHZID,       /* authzid names someone else */
    V_BAD_REQUEST,   /* username or secret that no credential can have */
    V_MECHANISM,     /* a mechanism this service does not check */
    V_STORE_ERROR,   /* unreadable record or store failure: try later */
    V_BUSY,          /* the hash queue is full: try later */
} verdict_t;

static const char *const verdict_names[] = {
    [V_OK] = "ok",
    [V_UNKNOWN_USER] = "unknown_user",
    [V_BAD_PASSWORD] = "bad_password",
    [V_REVOKED] = "revoked",
    [V_NO_PASSWORD] = "no_password",
    [V_AUTHZID] = "authzid_mismatch",
    [V_BAD_REQUEST] = "bad_request",
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
    unsigned char *secret;
    size_t secret_len;
    /* from the store, when the username names a credential */
    int known;
    int revoked;
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
    uint64_t started_ms;
};

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
    for (size_t i = 0; i < v->n_domains; i++)
        free(v->domains[i]);
    free(v->domains);
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

static PB(Status) * verdict_status(verdict_t verdict)
{
    switch (verdict) {
    case V_OK:
        return status_new(235, "2.7.0", "Authentication successful");
    case V_MECHANISM:
        return status_new(504, "5.5.4", "Unrecognized authentication type");
    case V_STORE_ERROR:
    case V_BUSY:
        return status_new(454, "4.7.0", "Temporary authentication failure");
    default:
        return status_new(535, "5.7.8", "Authentication credentials invalid");
    }
}

static void publish_failure(auth_api_t *api, const auth_verify_t *v, verdict_t verdict,
                            const char *user, const PB(Status) * status)
{
    if (api->event_fn == NULL)
        return;
    PB(Attr) attrs[4];
    PB(Attr) *pattrs[4];
    const char *keys[4] = {"username", "client_ip", "reason", "mechanism"};
    const char *values[4] = {user, v->client_ip, verdict_names[verdict], v->mechanism};
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

/* Log, count, publish and answer; consumes the job. */
static PB(AuthLoginVerifyReply) * conclude(auth_api_t *api, auth_verify_t **vp, verdict_t verdict,
                                          int cached)
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
              sid, user, ip, mech, verdict == V_OK ? "ok" : "failed", verdict_names[verdict],
              cached, v->known ? v->tenant : "-", (unsigned long long)ms);

    PB(AuthLoginVerifyReply) *r = xmalloc(sizeof(*r));
    PB(AuthLoginVerifyReply) init = PB_INIT(AUTH_LOGIN_VERIFY_REPLY);
    *r = init;
    r->status = verdict_status(verdict);
    if (verdict == V_OK) {
        api->verify_ok++;
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
        else
            api->verify_failed++;
        publish_failure(api, v, verdict, user, r->status);
    }
    auth_verify_free(vp);
    return r;
}

/* ---- step 1 ---- */

static int mechanism_known(const char *m)
{
    return *m == '\0' || strcasecmp(m, "PLAIN") == 0 || strcasecmp(m, "LOGIN") == 0;
}

static const char *str_or_empty(const char *s)
{
    return s ? s : "";
}

/* Copy what step 2 needs from the credential; V_OK or the verdict already known. */
static verdict_t load_credential(auth_api_t *api, auth_verify_t *v, const auth_cred_t *c)
{
    v->known = 1;
    v->revoked = c->pub->revoked;
    v->generation = c->generation;
    sx_strlcpy(v->tenant, c->pub->tenant, sizeof(v->tenant));
    sx_strlcpy(v->environment, c->pub->environment, sizeof(v->environment));
    uint64_t now = clock_wall_ms();
    for (size_t i = 0; i < c->n_secrets && v->n_hashes < AUTH_SECRETS_MAX; i++) {
        const auth_secret_t *s = &c->secrets[i];
        if (s->kind != AUTH_SECRET_PASSWORD || (s->expires_at_ms && s->expires_at_ms <= now))
            continue;
        v->expires[v->n_hashes] = s->expires_at_ms;
        v->hashes[v->n_hashes++] = xstrdup(s->hash);
    }
    if (v->n_hashes == 0) {
        v->no_live = 1;
        v->hashes[v->n_hashes++] = xstrdup(api->dummy_hash);
    }
    if (v->revoked || v->no_live)
        return V_OK;
    if (auth_store_login_domains(api->st, c, &v->domains, &v->n_domains) != AUTH_ST_OK)
        return V_STORE_ERROR;
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
    const char *user = req ? str_or_empty(req->username) : "";
    const char *authzid = req ? str_or_empty(req->authzid) : "";
    sx_strlcpy(v->username, user, sizeof(v->username));
    sx_strlcpy(v->client_ip, req ? str_or_empty(req->client_ip) : "", sizeof(v->client_ip));
    sx_strlcpy(v->session_id, req ? str_or_empty(req->session_id) : "", sizeof(v->session_id));
    sx_strlcpy(v->mechanism, req ? str_or_empty(req->mechanism) : "", sizeof(v->mechanism));

    if (!mechanism_known(v->mechanism)) {
        *reply = conclude(api, &v, V_MECHANISM, 0);
        return NULL;
    }
    /* no stored password holds a NUL, and scrypt would treat "pw\0" as "pw" */
    size_t slen = req ? req->secret.len : 0;
    if (!auth_username_valid(user) || slen > AUTH_PASSWORD_MAX ||
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
    if (v->cacheable &&
        auth_cache_lookup(api->cache, v->cache_key, v->generation, clock_mono_ms())) {
        *reply = conclude(api, &v, V_OK, 1);
        return NULL;
    }
    return v;
}

/* ---- step 2 ---- */

void auth_verify_run(auth_verify_t *v)
{
    for (size_t i = 0; i < v->n_hashes && v->matched == 0; i++) {
        auth_hash_result_t r = auth_hash_verify(v->hashes[i], v->secret, v->secret_len);
        if (r == AUTH_HASH_MATCH)
            v->matched = i + 1;
        else if (r == AUTH_HASH_MALFORMED)
            v->malformed++;
    }
    OPENSSL_cleanse(v->secret, v->secret_len);
}

/* ---- step 3 ---- */

PB(AuthLoginVerifyReply) * auth_api_verify_finish(auth_api_t *api, auth_verify_t **vp)
{
    auth_verify_t *v = *vp;
    verdict_t verdict = !v->known      ? V_UNKNOWN_USER
                        : v->revoked   ? V_REVOKED
                        : v->no_live   ? V_NO_PASSWORD
                        : v->matched   ? V_OK
                                       : V_BAD_PASSWORD;
    if (v->malformed && v->known && !v->no_live) {
        char user[QUOTED_MAX];
        log_error("event=hash_malformed user=%s count=%u",
                  log_quote(user, sizeof(user), v->username, strlen(v->username)),
                  v->malformed);
    }
    if (verdict == V_OK && v->cacheable) {
        /* a password that is being rotated out must not outlive its expiry in the cache */
        uint64_t lifetime = 0, expires = v->expires[v->matched - 1], now = clock_wall_ms();
        if (expires)
            lifetime = expires > now ? expires - now : 1;
        auth_cache_put(api->cache, v->cache_key, v->generation, clock_mono_ms(), lifetime);
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
