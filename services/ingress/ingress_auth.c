/*
 * ingress_auth: SMTP AUTH (RFC 4954) with the PLAIN and LOGIN mechanisms.
 * Ingress only decodes the SASL exchange; whether the credentials are good
 * is asked of the auth service. AUTH is refused before TLS (the command
 * table already requires STARTTLS on the submission role) and on the legacy
 * role, so credentials never cross a plaintext connection.
 */
#include "ingress.h"
#include "core/alloc.h"
#include "core/log.h"
#include "mail/base64.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define AUTH_MECH_PLAIN 1
#define AUTH_MECH_LOGIN 2
#define AUTH_SASL_MAX   2048

typedef struct auth_wait {
    session_t *s;
} auth_wait_t;

static void auth_reset(session_t *s)
{
    s->auth_mech = 0;
    OPENSSL_cleanse(s->auth_user, sizeof(s->auth_user));
    if (s->state == SS_AUTH)
        session_enter_state(s, SS_READY);
}

static void on_verify(bus_msg_t *reply, bus_status_t status, void *arg)
{
    session_t *s = arg;
    s->req_id = 0;
    s->req_client = NULL;
    auth_reset(s);
    if (status != BUS_OK) {
        log_warn("sid=%s event=auth_unavailable status=%d", s->sid, (int)status);
        session_reply(s, "454 4.7.0 Temporary authentication failure, try again later");
        session_resume(s);
        return;
    }
    if (reply->env->body_case != PB_BODY(AUTH_LOGIN_VERIFY_REPLY)) {
        log_warn("sid=%s event=auth_error body=%s", s->sid, codec_body_name(reply->env));
        session_reply(s, "454 4.7.0 Temporary authentication failure");
        session_resume(s);
        return;
    }
    PB(AuthLoginVerifyReply) *r = reply->env->auth_login_verify_reply;
    if (!r->ok) {
        s->ing->auth_failed++;
        unsigned code = r->status && r->status->code ? r->status->code : 535;
        const char *enh = r->status && r->status->enhanced[0] ? r->status->enhanced : "5.7.8";
        const char *text = r->status && r->status->text[0] ? r->status->text
                                                          : "Authentication credentials invalid";
        log_info("sid=%s event=auth_failed ip=%s code=%u", s->sid, s->ip, code);
        session_reply(s, "%u %s %s", code, enh, text);
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
    log_info("sid=%s event=auth_ok user=%s tenant=%s ip=%s", s->sid, s->username, s->tenant,
             s->ip);
    session_reply(s, "235 2.7.0 Authentication successful");
    session_resume(s);
}

/* Ask auth; the session waits for the answer. */
static void auth_verify(session_t *s, const char *mech, const char *authzid, const char *user,
                        const char *pass, size_t passlen)
{
    PB(AuthLoginVerify) req = PB_INIT(AUTH_LOGIN_VERIFY);
    req.mechanism = (char *)mech;
    req.username = (char *)user;
    req.authzid = (char *)authzid;
    req.secret.data = (uint8_t *)pass;
    req.secret.len = passlen;
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

static void auth_plain(session_t *s, const char *b64)
{
    unsigned char buf[AUTH_SASL_MAX];
    long n = base64_decode(b64, strlen(b64), buf, sizeof(buf) - 1);
    if (n < 0) {
        auth_reset(s);
        session_reply(s, "501 5.5.2 Cannot decode AUTH response");
        return;
    }
    /* authzid NUL authcid NUL passwd */
    const unsigned char *end = buf + n;
    const unsigned char *z1 = memchr(buf, '\0', (size_t)n);
    const unsigned char *z2 = z1 ? memchr(z1 + 1, '\0', (size_t)(end - z1 - 1)) : NULL;
    if (z1 == NULL || z2 == NULL || z2 == z1 + 1 || memchr(z2 + 1, '\0', (size_t)(end - z2 - 1))) {
        OPENSSL_cleanse(buf, sizeof(buf));
        auth_reset(s);
        session_reply(s, "501 5.5.2 Malformed AUTH PLAIN response");
        return;
    }
    char authzid[256], user[256];
    size_t zl = (size_t)(z1 - buf), ul = (size_t)(z2 - z1 - 1);
    if (zl >= sizeof(authzid) || ul >= sizeof(user)) {
        OPENSSL_cleanse(buf, sizeof(buf));
        auth_reset(s);
        session_reply(s, "501 5.5.2 AUTH PLAIN response too long");
        return;
    }
    memcpy(authzid, buf, zl);
    authzid[zl] = '\0';
    memcpy(user, z1 + 1, ul);
    user[ul] = '\0';
    auth_verify(s, "PLAIN", authzid, user, (const char *)z2 + 1, (size_t)(end - z2 - 1));
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
    if (strcasecmp(mech, "PLAIN") == 0) {
        if (initial && *initial) {
            auth_plain(s, strcmp(initial, "=") == 0 ? "" : initial);
            return;
        }
        s->auth_mech = AUTH_MECH_PLAIN;
        session_enter_state(s, SS_AUTH);
        session_reply(s, "334 ");
        return;
    }
    if (strcasecmp(mech, "LOGIN") == 0) {
        s->auth_mech = AUTH_MECH_LOGIN;
        session_enter_state(s, SS_AUTH);
        if (initial && *initial) {
            auth_continue(s, initial);
            return;
        }
        session_reply(s, "334 VXNlcm5hbWU6"); /* "Username:" */
        return;
    }
    session_reply(s, "504 5.5.4 Unrecognized authentication type");
}

void auth_continue(session_t *s, char *line)
{
    if (strcmp(line, "*") == 0) {
        auth_reset(s);
        session_reply(s, "501 5.7.0 Authentication aborted");
        return;
    }
    if (s->auth_mech == AUTH_MECH_PLAIN) {
        auth_plain(s, line);
        return;
    }
    unsigned char buf[512];
    long n = base64_decode(line, strlen(line), buf, sizeof(buf) - 1);
    if (n < 0 || memchr(buf, '\0', (size_t)n)) {
        auth_reset(s);
        session_reply(s, "501 5.5.2 Cannot decode AUTH response");
        return;
    }
    buf[n] = '\0';
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
