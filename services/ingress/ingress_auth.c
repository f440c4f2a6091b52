/*
 * ingress_auth: SMTP AUTH (RFC 4954) with PLAIN, LOGIN, XOAUTH2 and
 * OAUTHBEARER (RFC 7628). Ingress only decodes the SASL exchange; whether
 * the credentials or the bearer token are good is asked of the auth
 * service, which also keeps the lockouts. AUTH is refused before TLS (the
 * command table already requires STARTTLS on the submission role) and on
 * the legacy role, so credentials never cross a plaintext connection.
 * Also here: MAIL's message-rate check, asked of auth as well.
 */
#include "ingress.h"
#include "core/alloc.h"
#include "core/log.h"
#include "mail/base64.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define AUTH_MECH_PLAIN       1
#define AUTH_MECH_LOGIN       2
#define AUTH_MECH_XOAUTH2     3
#define AUTH_MECH_OAUTHBEARER 4
#define AUTH_MECH_OAUTH_ERROR 5 /* error challenge sent; the client's answer ends it */
#define AUTH_SASL_MAX         12288
#define AUTH_TOKEN_MAX        8192

static void auth_reset(session_t *s)
{
    s->auth_mech = 0;
    OPENSSL_cleanse(s->auth_user, sizeof(s->auth_user));
    if (s->state == SS_AUTH)
        session_enter_state(s, SS_READY);
}

/* A refusal counts against this session; past the limit the session ends. */
static void auth_refused(session_t *s, const char *reply)
{
    s->ing->auth_failed++;
    s->auth_failures++;
    session_reply(s, "%s", reply);
    if (s->auth_failures >= s->ing->conf.max_auth_failures) {
        log_info("sid=%s event=auth_failure_limit ip=%s failures=%d", s->sid, s->ip,
                 s->auth_failures);
        session_reply(s, "421 4.7.0 %s Too many authentication failures, closing connection",
                      s->ing->svc->relay.hostname);
        session_enter_state(s, SS_CLOSING);
        conn_close_after_flush(s->conn);
    }
}

static void on_verify(bus_msg_t *reply, bus_status_t status, void *arg)
{
    session_t *s = arg;
    int mech = s->auth_mech;
    s->req_id = 0;
    s->req_client = NULL;
    auth_reset(s);
    if (status != BUS_OK || reply->env->body_case != PB_BODY(AUTH_LOGIN_VERIFY_REPLY)) {
        log_warn("sid=%s event=auth_unavailable status=%d body=%s", s->sid, (int)status,
                 status == BUS_OK ? codec_body_name(reply->env) : "-");
        session_reply(s, "454 4.7.0 Temporary authentication failure, try again later");
        session_resume(s);
        return;
    }
    PB(AuthLoginVerifyReply) *r = reply->env->auth_login_verify_reply;
    if (!r->ok) {
        unsigned code = r->status && r->status->code ? r->status->code : 535;
        const char *enh = r->status && r->status->enhanced[0] ? r->status->enhanced : "5.7.8";
        const char *text = r->status && r->status->text[0] ? r->status->text
                                                          : "Authentication credentials invalid";
        char line[600];
        snprintf(line, sizeof(line), "%u %s %s", code, enh, text);
        log_info("sid=%s event=auth_failed ip=%s code=%u", s->sid, s->ip, code);
        if (code == 421) {
            /* locked out by auth: say so and end the session */
            s->ing->auth_failed++;
            session_reply(s, "%s", line);
            session_enter_state(s, SS_CLOSING);
            conn_close_after_flush(s->conn);
            return;
        }
        if ((mech == AUTH_MECH_XOAUTH2 || mech == AUTH_MECH_OAUTHBEARER) && r->oauth_error[0]) {
            /* RFC 7628 3.2.2: the error as a challenge; the client answers, then 535 */
            char b64[2048];
            if (base64_encode((const unsigned char *)r->oauth_error, strlen(r->oauth_error), b64,
                              sizeof(b64)) >= 0) {
                s->auth_mech = AUTH_MECH_OAUTH_ERROR;
                sx_strlcpy(s->auth_error, line, sizeof(s->auth_error));
                session_enter_state(s, SS_AUTH);
                session_reply(s, "334 %s", b64);
                session_resume(s);
                return;
            }
        }
        auth_refused(s, line);
        if (s->state != SS_CLOSING)
            session_resume(s);
        return;
    }
    s->ing->auth_ok++;
    s->authed = 1;
    sx_strlcpy(s->username, r->username, sizeof(s->username));
    sx_strlcpy(s->tenant, r->tenant, sizeof(s->tenant));
    conf_strlist_free(&s->domains);
    s->domains.v = xcalloc(r->n_domains ? r->n_domains : 1, sizeof(char *));
    for (size_t i = 0; i < r->n_domains; i++)
        s->domains.v[s->domains.n++] = xstrdup(r->domains[i]);
    log_info("sid=%s event=auth_ok user=%s tenant=%s ip=%s domains=%zu", s->sid, s->username,
             s->tenant, s->ip, s->domains.n);
    session_reply(s, "235 2.7.0 Authentication successful");
    session_resume(s);
}

/* Ask auth; the session waits for the answer. */
static void auth_verify(session_t *s, const char *mech, const char *authzid, const char *user,
                        const char *secret, size_t secretlen)
{
    PB(AuthLoginVerify) req = PB_INIT(AUTH_LOGIN_VERIFY);
    req.mechanism = (char *)mech;
    req.username = (char *)user;
    req.authzid = (char *)authzid;
    req.secret.data = (uint8_t *)secret;
    req.secret.len = secretlen;
    req.client_ip = s->ip;
    req.session_id = s->sid;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(AUTH_LOGIN_VERIFY);
    env.auth_login_verify = &req;
    uint64_t id;
    if (s->ing->auth == NULL ||
        bus_client_request(s->ing->auth, &env, NULL, s->ing->conf.auth_timeout, on_verify, s,
                           &id) < 0) {
        auth_reset(s);
        log_warn("sid=%s event=auth_unavailable reason=not_connected", s->sid);
        session_reply(s, "454 4.7.0 Temporary authentication failure, try again later");
        return;
    }
    s->req_id = id;
    s->req_client = s->ing->auth;
    s->waiting = 1;
}

/* Decode a SASL response; -1 (and the 501 reply sent) when it is not base64. */
static long sasl_decode(session_t *s, const char *b64, unsigned char *buf, size_t size)
{
    long n = base64_decode(b64, strlen(b64), buf, size - 1);
    if (n < 0) {
        auth_reset(s);
        session_reply(s, "501 5.5.2 Cannot decode AUTH response");
        return -1;
    }
    buf[n] = '\0';
    return n;
}

static void auth_plain(session_t *s, const char *b64)
{
    unsigned char buf[AUTH_SASL_MAX];
    long n = sasl_decode(s, b64, buf, sizeof(buf));
    if (n < 0)
        return;
    /* authzid NUL authcid NUL passwd */
    const unsigned char *end = buf + n;
    const unsigned char *z1 = memchr(buf, '\0', (size_t)n);
    const unsigned char *z2 = z1 ? memchr(z1 + 1, '\0', (size_t)(end - z1 - 1)) : NULL;
    char authzid[256], user[256];
    size_t zl = z1 ? (size_t)(z1 - buf) : 0, ul = z2 ? (size_t)(z2 - z1 - 1) : 0;
    if (z1 == NULL || z2 == NULL || ul == 0 || memchr(z2 + 1, '\0', (size_t)(end - z2 - 1)) ||
        zl >= sizeof(authzid) || ul >= sizeof(user)) {
        OPENSSL_cleanse(buf, sizeof(buf));
        auth_reset(s);
        session_reply(s, "501 5.5.2 Malformed AUTH PLAIN response");
        return;
    }
    memcpy(authzid, buf, zl);
    authzid[zl] = '\0';
    memcpy(user, z1 + 1, ul);
    user[ul] = '\0';
    auth_verify(s, "PLAIN", authzid, user, (const char *)z2 + 1, (size_t)(end - z2 - 1));
    OPENSSL_cleanse(buf, sizeof(buf));
}

/* The value after "key=" in a ^A-separated SASL field list, or NULL. */
static const char *kv_field(char *fields[], size_t n, const char *key)
{
    size_t k = strlen(key);
    for (size_t i = 0; i < n; i++)
        if (strncmp(fields[i], key, k) == 0 && fields[i][k] == '=')
            return fields[i] + k + 1;
    return NULL;
}

/*
 * XOAUTH2: "user=" U ^A "auth=Bearer " T ^A ^A.
 * OAUTHBEARER: gs2-header ("n,a=" U ",") ^A "host=..." ^A "auth=Bearer " T ^A ^A.
 */
static void auth_bearer(session_t *s, int mech, const char *b64)
{
    unsigned char buf[AUTH_SASL_MAX];
    long n = sasl_decode(s, b64, buf, sizeof(buf));
    if (n < 0)
        return;
    char *fields[16];
    size_t nf = 0;
    char *p = (char *)buf, *gs2 = NULL;
    if (mech == AUTH_MECH_OAUTHBEARER) {
        gs2 = p;
        p = strchr(p, '\x01');
        if (p)
            *p++ = '\0';
    }
    while (p && *p && nf < 16) {
        fields[nf++] = p;
        p = strchr(p, '\x01');
        if (p)
            *p++ = '\0';
    }
    char user[256] = "";
    const char *auth = kv_field(fields, nf, "auth");
    int ok = auth && strncasecmp(auth, "Bearer ", 7) == 0 && strlen(auth + 7) > 0 &&
             strlen(auth + 7) < AUTH_TOKEN_MAX;
    if (ok && mech == AUTH_MECH_XOAUTH2) {
        const char *u = kv_field(fields, nf, "user");
        ok = u && *u && strlen(u) < sizeof(user);
        if (ok)
            sx_strlcpy(user, u, sizeof(user));
    } else if (ok) {
        /* gs2-header: "n," or "y," (no channel binding), then [a=authzid] "," */
        ok = gs2 && (strncmp(gs2, "n,", 2) == 0 || strncmp(gs2, "y,", 2) == 0);
        if (ok && strncmp(gs2 + 2, "a=", 2) == 0) {
            size_t o = 0;
            for (const char *q = gs2 + 4; *q && *q != ',' && o + 1 < sizeof(user); q++) {
                if (strncmp(q, "=2C", 3) == 0) {
                    user[o++] = ',';
                    q += 2;
                } else if (strncmp(q, "=3D", 3) == 0) {
                    user[o++] = '=';
                    q += 2;
                } else {
                    user[o++] = *q;
                }
            }
            user[o] = '\0';
        }
    }
    if (!ok) {
        OPENSSL_cleanse(buf, sizeof(buf));
        auth_reset(s);
        session_reply(s, "501 5.5.2 Malformed %s response",
                      mech == AUTH_MECH_XOAUTH2 ? "XOAUTH2" : "OAUTHBEARER");
        return;
    }
    const char *token = auth + 7;
    s->auth_mech = mech; /* on_verify needs it for the error exchange */
    auth_verify(s, mech == AUTH_MECH_XOAUTH2 ? "XOAUTH2" : "OAUTHBEARER", "", user, token,
                strlen(token));
    OPENSSL_cleanse(buf, sizeof(buf));
}

void auth_command(session_t *s, char *args)
{
    if (s->role == ROLE_LEGACY || !conn_is_tls(s->conn)) {
        session_reply(s, "%s", s->role == ROLE_LEGACY
                                   ? "503 5.5.1 AUTH not available on this port"
                                   : "530 5.7.0 Must issue a STARTTLS command first");
        return;
    }
    if (s->authed) {
        session_reply(s, "503 5.5.1 Already authenticated");
        return;
    }
    if (s->state != SS_READY) {
        session_reply(s, "503 5.5.1 AUTH not allowed during a mail transaction");
        return;
    }
    char *mech = args;
    char *initial = strchr(args, ' ');
    if (initial)
        *initial++ = '\0';
    int m = strcasecmp(mech, "PLAIN") == 0         ? AUTH_MECH_PLAIN
            : strcasecmp(mech, "LOGIN") == 0       ? AUTH_MECH_LOGIN
            : strcasecmp(mech, "XOAUTH2") == 0     ? AUTH_MECH_XOAUTH2
            : strcasecmp(mech, "OAUTHBEARER") == 0 ? AUTH_MECH_OAUTHBEARER
                                                   : 0;
    if (m == 0) {
        session_reply(s, "504 5.5.4 Unrecognized authentication type");
        return;
    }
    s->auth_mech = m;
    session_enter_state(s, SS_AUTH);
    if (initial && *initial) {
        /* "=" is an empty initial response (RFC 4954 4) */
        auth_continue(s, strcmp(initial, "=") == 0 ? (char *)"" : initial);
        return;
    }
    session_reply(s, "%s", m == AUTH_MECH_LOGIN ? "334 VXNlcm5hbWU6" /* "Username:" */
                                                : "334 ");
}

void auth_continue(session_t *s, char *line)
{
    if (s->auth_mech == AUTH_MECH_OAUTH_ERROR) {
        /* whatever the client says after the error challenge, the answer is the refusal */
        char reply[sizeof(s->auth_error)];
        sx_strlcpy(reply, s->auth_error, sizeof(reply));
        auth_reset(s);
        auth_refused(s, reply);
        return;
    }
    if (strcmp(line, "*") == 0) {
        auth_reset(s);
        session_reply(s, "501 5.7.0 Authentication aborted");
        return;
    }
    switch (s->auth_mech) {
    case AUTH_MECH_PLAIN:
        auth_plain(s, line);
        return;
    case AUTH_MECH_XOAUTH2:
    case AUTH_MECH_OAUTHBEARER:
        auth_bearer(s, s->auth_mech, line);
        return;
    default:
        break;
    }
    unsigned char buf[512];
    long n = sasl_decode(s, line, buf, sizeof(buf));
    if (n < 0)
        return;
    if (memchr(buf, '\0', (size_t)n)) {
        auth_reset(s);
        session_reply(s, "501 5.5.2 Cannot decode AUTH response");
        return;
    }
    if (s->auth_user[0] == '\0') {
        if (n == 0 || (size_t)n >= sizeof(s->auth_user)) {
            auth_reset(s);
            session_reply(s, "501 5.5.2 Bad AUTH LOGIN username");
            return;
        }
        memcpy(s->auth_user, buf, (size_t)n + 1);
        session_reply(s, "334 UGFzc3dvcmQ6"); /* "Password:" */
        return;
    }
    char user[sizeof(s->auth_user)];
    sx_strlcpy(user, s->auth_user, sizeof(user));
    auth_verify(s, "LOGIN", "", user, (const char *)buf, (size_t)n);
    OPENSSL_cleanse(buf, sizeof(buf));
}

/* ---- MAIL's rate check ---- */

/*
 * Auth tells when a credential and its tenant have no rate limit at all; for
 * that long, MAIL skips the round trip to auth for them. A handful of
 * entries: the table only saves work, a credential that finds no room in it
 * is simply checked every time.
 */
#define RATE_LEASES 64

typedef struct rate_lease {
    char tenant[65];
    char username[129];
    uint64_t until_ms;
} rate_lease_t;

static rate_lease_t *lease_find(ingress_t *ing, const session_t *s)
{
    for (size_t i = 0; ing->rate_leases && i < RATE_LEASES; i++) {
        rate_lease_t *l = &ing->rate_leases[i];
        if (l->until_ms && strcmp(l->tenant, s->tenant) == 0 &&
            strcmp(l->username, s->username) == 0)
            return l;
    }
    return NULL;
}

static int lease_valid(ingress_t *ing, const session_t *s)
{
    rate_lease_t *l = lease_find(ing, s);
    return l && l->until_ms > loop_now(ing->svc->loop);
}

static void lease_put(ingress_t *ing, const session_t *s, uint32_t for_ms)
{
    if (ing->rate_leases == NULL)
        ing->rate_leases = xcalloc(RATE_LEASES, sizeof(*ing->rate_leases));
    rate_lease_t *l = lease_find(ing, s);
    for (size_t i = 0; l == NULL && i < RATE_LEASES; i++) {
        rate_lease_t *c = &ing->rate_leases[i];
        if (l == NULL || c->until_ms < l->until_ms)
            l = c; /* the one that ends first (or a free one) */
    }
    sx_strlcpy(l->tenant, s->tenant, sizeof(l->tenant));
    sx_strlcpy(l->username, s->username, sizeof(l->username));
    l->until_ms = loop_now(ing->svc->loop) + for_ms;
}

void auth_rate_leases_free(ingress_t *ing)
{
    free(ing->rate_leases);
    ing->rate_leases = NULL;
}


static void on_rate(bus_msg_t *reply, bus_status_t status, void *arg)
{
    session_t *s = arg;
    rate_done_fn done = s->rate_done;
    s->req_id = 0;
    s->req_client = NULL;
    s->waiting = 0;
    if (status != BUS_OK || reply->env->body_case != PB_BODY(AUTH_RATE_CHECK_REPLY)) {
        /* limits cannot be checked: mail is not refused for that */
        log_warn("sid=%s event=rate_check_unavailable status=%d", s->sid, (int)status);
        done(s, 1, NULL);
    } else {
        PB(AuthRateCheckReply) *r = reply->env->auth_rate_check_reply;
        if (r->ok && r->unlimited_for_ms)
            lease_put(s->ing, s, r->unlimited_for_ms < 60000 ? r->unlimited_for_ms : 60000);
        char line[600];
        if (!r->ok) {
            const char *text = r->status && r->status->text[0] ? r->status->text
                                                              : "Message rate limit reached";
            snprintf(line, sizeof(line), "451 4.7.1 %s", text);
        }
        done(s, r->ok, r->ok ? NULL : line);
    }
    session_resume(s);
}

int auth_rate_check(session_t *s, rate_done_fn done)
{
    if ((s->tenant[0] == '\0' && s->username[0] == '\0') || s->ing->auth == NULL ||
        lease_valid(s->ing, s))
        return -1;
    PB(AuthRateCheck) req = PB_INIT(AUTH_RATE_CHECK);
    req.tenant = s->tenant;
    req.username = s->username;
    req.session_id = s->sid;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(AUTH_RATE_CHECK);
    env.auth_rate_check = &req;
    uint64_t id;
    if (bus_client_request(s->ing->auth, &env, NULL, s->ing->conf.auth_timeout, on_rate, s, &id) <
        0)
        return -1;
    s->rate_done = done;
    s->req_id = id;
    s->req_client = s->ing->auth;
    s->waiting = 1;
    return 0;
}
