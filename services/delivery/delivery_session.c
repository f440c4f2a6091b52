/*
 * delivery_session: the SMTP client state machine over one connection.
 * Every state has a deadline; every reply is read whole (mail/reply.c)
 * before it is acted on; nothing the server sends is trusted to be well
 * formed. The message is never sent unless the TLS policy was met.
 */
#include "delivery_session.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"
#include "delivery_reason.h"
#include "mail/base64.h"
#include "net/conn.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SESSION_PUMP_MS  5    /* re-check for room while a large body goes out */
#define SESSION_CMD_MAX  1600 /* "AUTH PLAIN " and the base64 of SESSION_AUTH_MAX + 2 fit */
#define SESSION_AUTH_MAX 1024 /* username + password */

typedef enum {
    ST_CONNECTING = 0,
    ST_GREETING,
    ST_EHLO,
    ST_HELO,
    ST_STARTTLS,
    ST_TLS,
    ST_AUTH,       /* the final AUTH reply (235) */
    ST_AUTH_LOGIN, /* AUTH LOGIN sent: the 334 that asks for the username */
    ST_AUTH_USER,  /* username sent: the 334 that asks for the password */
    ST_READY,
    ST_RSET, /* a kept connection's next transaction starts here */
    ST_MAIL, /* MAIL and RCPT replies */
    ST_DATA,
    ST_BODY,
    ST_DOT,
    ST_DISCARD, /* DATA went pipelined for nobody and got 354: the lone dot's reply */
    ST_QUIT,
    ST_CLOSED,
} session_state_t;

static const char *const state_names[] = {
    "connecting", "greeting", "ehlo", "helo", "starttls", "tls", "auth", "auth_login", "auth_user",
    "ready",      "rset",     "mail", "data", "body",     "dot", "discard", "quit", "closed",
};

/* What the session waits for in each state, for timeout and loss messages. */
static const char *const state_steps[] = {
    "connection",   "greeting",         "EHLO reply",
    "HELO reply",   "STARTTLS reply",   "TLS handshake",
    "AUTH reply",   "AUTH LOGIN reply", "AUTH username reply",
    "next command", "RSET reply",       "MAIL/RCPT reply",
    "DATA reply",   "body transfer",    "end of data reply",
    "end of data reply", "QUIT reply",  "nothing",
};

struct session {
    loop_t *loop;
    session_params_t p;
    session_handlers_t h;
    void *arg;
    conn_t *conn;
    session_state_t state;
    char ip[SOCK_ADDR_MAX];
    char local_ip[SOCK_ADDR_MAX];
    char tls_version[32];
    char tls_cipher[96];
    char ids[128];
    ehlo_caps_t caps;
    int is_tls;
    int tls_verified;
    unsigned txns;
    int tried_helo;
    const char *auth_mech; /* "PLAIN" or "LOGIN" once AUTH began, for logs */
    int dirty;             /* a transaction ended without its end: not ready until RSET */
    dlv_reply_t last;
    smtp_reply_t reply;

    session_txn_t *txn;
    size_t replies_wanted;
    size_t replies_got;
    int pipelined;
    int mail_ok;
    size_t head_at;      /* the next byte of the transaction's head to send */
    size_t body_at;      /* the next body byte to send (stuffing is added on the way) */

    loop_timer_t step;   /* the current state's deadline */
    loop_timer_t pump;   /* more body when the connection has room */
    loop_timer_t defer;  /* handlers that must not run inside a session_* call */
    int defer_what;      /* DEFER_* */
    session_fail_t defer_kind;
    dlv_reply_t defer_reply;

    int busy;
    int dead;
    int detached; /* after session_quit: frees itself */
};

enum { DEFER_NONE = 0, DEFER_FAILED, DEFER_TXN_DONE };

static void session_free(session_t *s);
static void handle_reply(session_t *s);
static void send_mail(session_t *s);

/* ---- entry guard: a handler may destroy the session under us ---- */

static void enter(session_t *s)
{
    s->busy++;
}

static void leave(session_t *s)
{
    if (--s->busy == 0 && s->dead)
        session_free(s);
}

/* ---- states ---- */

static uint64_t state_deadline(const session_t *s, session_state_t st)
{
    switch (st) {
    case ST_CONNECTING:
        return s->p.connect_timeout_ms;
    case ST_TLS:
        /* with implicit TLS the handshake comes before the greeting and is timed like it */
        if (!s->p.implicit_tls)
            return s->p.command_timeout_ms;
        /* fall through */
    case ST_GREETING:
        return s->p.greeting_timeout_ms ? s->p.greeting_timeout_ms : s->p.command_timeout_ms;
    case ST_BODY:
    case ST_DOT:
    case ST_DISCARD:
        return s->p.data_timeout_ms;
    case ST_QUIT:
        return SESSION_QUIT_MS;
    case ST_READY:
    case ST_CLOSED:
        return 0;
    default:
        return s->p.command_timeout_ms;
    }
}

static void enter_state(session_t *s, session_state_t st)
{
    log_debug("event=session_state %s host=%s ip=%s from=%s to=%s", s->ids, s->p.host, s->ip,
              state_names[s->state], state_names[st]);
    s->state = st;
    uint64_t ms = state_deadline(s, st);
    if (ms)
        loop_timer_start(s->loop, &s->step, ms);
    else
        loop_timer_stop(s->loop, &s->step);
}

/* ---- output ---- */

/* Bytes for the server. Writes made in one loop turn leave together (the
 * connection sends them at the end of the turn), so a pipelined group of
 * RSET, MAIL and RCPTs costs one send. */
static int out_write(session_t *s, const void *p, size_t n)
{
    if (s->conn == NULL)
        return -1;
    return conn_write(s->conn, p, n);
}

/* One command line; secret: what the log shows instead of the line (credentials). */
static void send_vline(session_t *s, const char *secret, const char *fmt, va_list ap)
{
    char line[SESSION_CMD_MAX];
    int n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof(line) - 3)
        n = (int)sizeof(line) - 3;
    if (secret)
        log_debug("event=smtp_send %s host=%s cmd=\"%s\"", s->ids, s->p.host, secret);
    else
        log_debug("event=smtp_send %s host=%s cmd=\"%.*s\"", s->ids, s->p.host,
                  n < 40 ? n : 40, line);
    memcpy(line + n, "\r\n", 2);
    out_write(s, line, (size_t)n + 2);
    if (secret)
        OPENSSL_cleanse(line, sizeof(line));
}

static void send_line(session_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void send_line(session_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    send_vline(s, NULL, fmt, ap);
    va_end(ap);
}

/* A line that carries credentials: the log shows `shown`, never the line. */
static void send_secret(session_t *s, const char *shown, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void send_secret(session_t *s, const char *shown, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    send_vline(s, shown, fmt, ap);
    va_end(ap);
}

/* ---- ending a transaction or the session ---- */

static void run_deferred(loop_t *loop, void *arg)
{
    session_t *s = arg;
    enter(s);
    int what = s->defer_what;
    s->defer_what = DEFER_NONE;
    if (what == DEFER_FAILED && s->h.on_failed)
        s->h.on_failed(s, s->defer_kind, &s->defer_reply, s->arg);
    else if (what == DEFER_TXN_DONE && s->h.on_txn_done)
        s->h.on_txn_done(s, s->arg);
    leave(s);
    (void)loop;
}

static void txn_done(session_t *s, int from_api)
{
    session_txn_t *t = s->txn;
    s->txn = NULL;
    loop_timer_stop(s->loop, &s->pump);
    if (s->state != ST_CLOSED) {
        if (s->dirty)
            log_debug("event=session_dirty %s host=%s", s->ids, s->p.host);
        enter_state(s, ST_READY);
    }
    (void)t;
    if (from_api) {
        s->defer_what = DEFER_TXN_DONE;
        loop_timer_start(s->loop, &s->defer, 0);
        return;
    }
    if (s->h.on_txn_done)
        s->h.on_txn_done(s, s->arg);
}

/* Outcome for every recipient not yet decided (or only accepted). */
static void rcpts_settle(session_t *s, rcpt_state_t which_max, const dlv_reply_t *r)
{
    for (size_t i = 0; s->txn && i < s->txn->nrcpt; i++) {
        session_rcpt_t *rc = &s->txn->rcpts[i];
        if (rc->state == RCPT_DONE || rc->state > which_max)
            continue;
        rc->state = RCPT_DONE;
        rc->outcome = caps_outcome(r->code);
        rc->reply = *r;
    }
}

/* The connection is over; tell the owner what that means. */
static void session_fail(session_t *s, session_fail_t kind, const dlv_reply_t *r)
{
    session_state_t was = s->state;
    conn_destroy(&s->conn);
    loop_timer_stop(s->loop, &s->pump);
    enter_state(s, ST_CLOSED);
    log_info("event=session_failed %s host=%s ip=%s state=%s code=%u enh=%s reason=\"%s\"",
             s->ids, s->p.host, s->ip, state_names[was], r->code, r->enhanced, r->text);
    if (s->txn && was == ST_RSET) {
        /* the kept connection went before this transaction began: nothing was taken */
        for (size_t i = 0; i < s->txn->nrcpt; i++)
            s->txn->rcpts[i].state = RCPT_PENDING;
        s->txn = NULL;
        kind = SESSION_FAIL_STALE;
    }
    if (s->detached) {
        session_t *self = s;
        session_destroy(&self); /* callers hold the entry guard */
        return;
    }
    if (s->txn) {
        rcpts_settle(s, RCPT_ACCEPTED, r);
        txn_done(s, 0);
        return;
    }
    if (s->h.on_failed)
        s->h.on_failed(s, kind, r, s->arg);
}

static void fail_lost(session_t *s, const char *what)
{
    dlv_reply_t r;
    dlv_reply_set(&r, 451, "4.4.2", "%s %s %s", what, state_steps[s->state], s->p.host);
    session_fail(s, SESSION_FAIL_LOST, &r);
}

/* ---- connection callbacks ---- */

/*
 * The TLS handshake: after a 220 to STARTTLS, or right after the connect on
 * an implicit-TLS endpoint. Verified (chain and name) when TLS is required.
 */
static void start_tls(session_t *s)
{
    enter_state(s, ST_TLS);
    if (conn_tls_connect(s->conn, s->p.tls_ctx, s->p.host, s->p.tls == POLICY_TLS_REQUIRED) < 0) {
        dlv_reply_t r;
        dlv_reply_set(&r, 451, "4.7.5", "cannot start TLS with %s", s->p.host);
        /* implicit TLS has no plaintext to fall back to */
        session_fail(s,
                     s->p.tls == POLICY_TLS_REQUIRED || s->p.implicit_tls ? SESSION_FAIL_TLS
                                                                          : SESSION_FAIL_TLS_RETRY,
                     &r);
    }
}

static void on_connected(conn_t *c, int err, void *arg)
{
    session_t *s = arg;
    enter(s);
    if (err) {
        dlv_reply_t r;
        dlv_reply_set(&r, 451, "4.4.1", "connection to %s (%s) failed: %s", s->p.host, s->ip,
                      strerror(err));
        session_fail(s, SESSION_FAIL_CONNECT, &r);
    } else {
        sock_addr_t local;
        if (sock_local(conn_fd(c), &local) == 0)
            sock_addr_ip(&local, s->local_ip, sizeof(s->local_ip));
        if (s->p.implicit_tls)
            start_tls(s);
        else
            enter_state(s, ST_GREETING);
    }
    leave(s);
}

static void on_data(conn_t *c, void *arg)
{
    session_t *s = arg;
    enter(s);
    while (!s->dead && s->conn == c && s->state != ST_CLOSED && s->state != ST_TLS) {
        buf_t *in = conn_in(c);
        if (buf_used(in) == 0)
            break;
        reply_status_t rs = reply_read(in, &s->reply);
        if (rs == REPLY_INCOMPLETE) {
            if (buf_used(in) >= SESSION_IN_LIMIT)
                fail_lost(s, "oversized reply while waiting for");
            break;
        }
        if (rs == REPLY_BAD) {
            fail_lost(s, "malformed reply while waiting for");
            break;
        }
        dlv_reply_from_smtp(&s->last, &s->reply);
        log_debug("event=smtp_reply %s host=%s state=%s code=%u text=\"%.80s\"", s->ids,
                  s->p.host, state_names[s->state], s->reply.code, s->reply.text);
        handle_reply(s);
    }
    leave(s);
}

static void on_close(conn_t *c, int err, void *arg)
{
    session_t *s = arg;
    (void)c;
    enter(s);
    if (s->state == ST_QUIT) {
        session_t *self = s;
        conn_destroy(&s->conn);
        enter_state(s, ST_CLOSED);
        session_destroy(&self); /* freed by leave() */
    } else if (s->state != ST_CLOSED) {
        char what[96];
        snprintf(what, sizeof(what), "connection lost%s%s while waiting for",
                 err ? ": " : "", err ? strerror(err) : "");
        fail_lost(s, what);
    }
    leave(s);
}

static void after_ehlo(session_t *s);

static void on_tls(conn_t *c, int ok, const char *why, void *arg)
{
    session_t *s = arg;
    enter(s);
    if (ok) {
        s->is_tls = 1;
        sx_strlcpy(s->tls_version, conn_tls_version(c), sizeof(s->tls_version));
        sx_strlcpy(s->tls_cipher, conn_tls_cipher(c), sizeof(s->tls_cipher));
        s->tls_verified = conn_tls_verified(c);
        log_info("event=tls_up %s host=%s ip=%s version=%s cipher=%s verified=%d implicit=%d",
                 s->ids, s->p.host, s->ip, s->tls_version, s->tls_cipher, s->tls_verified,
                 s->p.implicit_tls);
        memset(&s->caps, 0, sizeof(s->caps));
        if (s->p.implicit_tls) {
            enter_state(s, ST_GREETING); /* the server greets inside TLS */
        } else {
            enter_state(s, ST_EHLO);
            send_line(s, "EHLO %s", s->p.helo);
        }
    } else if (s->p.tls == POLICY_TLS_REQUIRED) {
        dlv_reply_t r;
        dlv_reply_set(&r, 451, "4.7.5", "TLS required: handshake with %s failed: %s", s->p.host,
                      why ? why : "unknown error");
        session_fail(s, SESSION_FAIL_TLS, &r);
    } else if (s->p.implicit_tls) {
        /* the endpoint speaks only TLS: nothing to retry in plaintext */
        dlv_reply_t r;
        dlv_reply_set(&r, 451, "4.7.5", "implicit TLS handshake with %s failed: %s", s->p.host,
                      why ? why : "unknown error");
        session_fail(s, SESSION_FAIL_TLS, &r);
    } else {
        dlv_reply_t r;
        dlv_reply_set(&r, 451, "4.7.5", "TLS handshake with %s failed: %s", s->p.host,
                      why ? why : "unknown error");
        session_fail(s, SESSION_FAIL_TLS_RETRY, &r);
    }
    leave(s);
}

static const conn_handlers_t session_conn_handlers = {
    .on_data = on_data,
    .on_close = on_close,
    .on_connected = on_connected,
    .on_tls = on_tls,
};

/* ---- timers ---- */

static void on_step_timeout(loop_t *loop, void *arg)
{
    session_t *s = arg;
    (void)loop;
    enter(s);
    if (s->state == ST_QUIT) {
        session_t *self = s;
        conn_destroy(&s->conn);
        enter_state(s, ST_CLOSED);
        session_destroy(&self); /* freed by leave() */
    } else if (s->state == ST_CONNECTING) {
        dlv_reply_t r;
        dlv_reply_set(&r, 451, "4.4.1", "timeout connecting to %s (%s)", s->p.host, s->ip);
        session_fail(s, SESSION_FAIL_CONNECT, &r);
    } else if (s->state != ST_CLOSED && s->state != ST_READY) {
        dlv_reply_t r;
        dlv_reply_set(&r, 451, "4.4.2", "timeout waiting for %s from %s", state_steps[s->state],
                      s->p.host);
        session_fail(s, SESSION_FAIL_LOST, &r);
    }
    leave(s);
}

static void pump_body(session_t *s);

static void on_pump(loop_t *loop, void *arg)
{
    session_t *s = arg;
    (void)loop;
    enter(s);
    if (s->state == ST_BODY)
        pump_body(s);
    leave(s);
}

/* ---- the dialogue ---- */

static void to_ready(session_t *s)
{
    enter_state(s, ST_READY);
    log_debug("event=session_ready %s host=%s ip=%s tls=%s esmtp=%d pipelining=%d", s->ids,
              s->p.host, s->ip, s->is_tls ? s->tls_version : "none", s->caps.esmtp,
              s->caps.pipelining);
    if (s->h.on_ready)
        s->h.on_ready(s, s->arg);
}

static void fail_remote(session_t *s, const char *what)
{
    dlv_reply_t r = s->last;
    if (r.code / 100 != 4 && r.code / 100 != 5)
        dlv_reply_set(&r, 451, "4.4.2", "unexpected %s from %s: %u %s", what, s->p.host,
                      s->last.code, s->last.text);
    session_fail(s, SESSION_FAIL_REMOTE, &r);
}

/* The server said no to AUTH (at any step): deferred, naming the host and its reply. */
static void auth_refused(session_t *s)
{
    dlv_reply_t r;
    dlv_reply_set(&r, 451, "4.7.0", "authentication to %s failed: %u %s", s->p.host, s->last.code,
                  s->last.text);
    r.reason = REASON_CONFIG;
    log_info("event=auth_failed %s host=%s user=%s mech=%s code=%u enh=%s", s->ids, s->p.host,
             s->p.auth_username, s->auth_mech, s->last.code, s->last.enhanced);
    session_fail(s, SESSION_FAIL_REMOTE, &r);
}

/* Credentials the route cannot send: deferred as a config problem. */
static void auth_config_fail(session_t *s, const char *why)
{
    dlv_reply_t r;
    dlv_reply_set(&r, 451, "4.7.0", "%s", why);
    r.reason = REASON_CONFIG;
    session_fail(s, SESSION_FAIL_REMOTE, &r);
}

/*
 * Base64 of raw into out (out cleansed on failure); -1 when it does not fit.
 * out must hold SESSION_AUTH_B64 bytes.
 */
#define SESSION_AUTH_B64 (((SESSION_AUTH_MAX + 3) / 3) * 4 + 8)

static long auth_b64(const void *raw, size_t n, char *out)
{
    long len = base64_encode(raw, n, out, SESSION_AUTH_B64);
    if (len < 0)
        OPENSSL_cleanse(out, SESSION_AUTH_B64);
    return len;
}

/* AUTH LOGIN: the 334 after the command asks for the username, the next for the password. */
static void auth_login_next(session_t *s)
{
    int user = s->state == ST_AUTH_LOGIN;
    const char *v = user ? s->p.auth_username : s->p.auth_password;
    char b64[SESSION_AUTH_B64];
    if (auth_b64(v, strlen(v), b64) < 0) {
        auth_config_fail(s, "cannot encode route credentials");
        return;
    }
    enter_state(s, user ? ST_AUTH_USER : ST_AUTH);
    send_secret(s, user ? "(username)" : "(password)", "%s", b64);
    OPENSSL_cleanse(b64, sizeof(b64));
}

static void do_auth(session_t *s)
{
    auth_step_t step = caps_auth_step(s->p.auth_username && *s->p.auth_username, &s->caps,
                                      s->is_tls);
    dlv_reply_t r;
    switch (step) {
    case AUTH_STEP_SKIP:
        if (s->p.auth_username && *s->p.auth_username)
            log_warn("event=auth_not_offered %s host=%s", s->ids, s->p.host);
        to_ready(s);
        return;
    case AUTH_STEP_NO_TLS:
        dlv_reply_set(&r, 451, "4.7.0",
                      "%s offers no TLS: credentials are never sent in plaintext", s->p.host);
        r.reason = REASON_TLS;
        session_fail(s, SESSION_FAIL_TLS, &r);
        return;
    case AUTH_STEP_NO_MECH:
        dlv_reply_set(&r, 451, "4.7.0", "%s offers no AUTH mechanism we speak (PLAIN, LOGIN)",
                      s->p.host);
        r.reason = REASON_CONFIG;
        session_fail(s, SESSION_FAIL_REMOTE, &r);
        return;
    case AUTH_STEP_PLAIN:
    case AUTH_STEP_LOGIN:
        break;
    }
    size_t ul = strlen(s->p.auth_username), pl = strlen(s->p.auth_password);
    if (ul + pl > SESSION_AUTH_MAX) {
        auth_config_fail(s, "route credentials too long");
        return;
    }
    if (step == AUTH_STEP_LOGIN) {
        s->auth_mech = "LOGIN";
        enter_state(s, ST_AUTH_LOGIN);
        send_line(s, "AUTH LOGIN");
        return;
    }
    s->auth_mech = "PLAIN";
    unsigned char raw[SESSION_AUTH_MAX + 3];
    char b64[SESSION_AUTH_B64];
    raw[0] = '\0';
    memcpy(raw + 1, s->p.auth_username, ul);
    raw[1 + ul] = '\0';
    memcpy(raw + 2 + ul, s->p.auth_password, pl);
    long n = auth_b64(raw, ul + pl + 2, b64);
    OPENSSL_cleanse(raw, sizeof(raw));
    if (n < 0) {
        auth_config_fail(s, "cannot encode route credentials");
        return;
    }
    enter_state(s, ST_AUTH);
    send_secret(s, "AUTH PLAIN ****", "AUTH PLAIN %s", b64);
    OPENSSL_cleanse(b64, sizeof(b64));
}

/* EHLO (or HELO) done: TLS next, then AUTH. */
static void after_ehlo(session_t *s)
{
    tls_step_t step = s->p.no_starttls && s->p.tls == POLICY_TLS_OPPORTUNISTIC
                          ? TLS_STEP_SKIP
                          : caps_tls_step(s->p.tls, &s->caps, s->is_tls);
    if (step == TLS_STEP_START) {
        enter_state(s, ST_STARTTLS);
        send_line(s, "STARTTLS");
        return;
    }
    if (step == TLS_STEP_FAIL) {
        dlv_reply_t r;
        dlv_reply_set(&r, 451, "4.7.5", "TLS required but %s does not offer STARTTLS",
                      s->p.host);
        session_fail(s, SESSION_FAIL_TLS, &r);
        return;
    }
    do_auth(s);
}

static void send_rcpt(session_t *s, size_t i)
{
    send_line(s, "RCPT TO:<%s>", s->txn->rcpts[i].address);
}

/* MAIL was refused or no RCPT accepted: there is nobody to send a body to. */
static int nobody_accepted(const session_t *s)
{
    if (!s->mail_ok)
        return 1;
    for (size_t i = 0; i < s->txn->nrcpt; i++)
        if (s->txn->rcpts[i].state == RCPT_ACCEPTED)
            return 0;
    return 1;
}

static void on_mail_reply(session_t *s)
{
    size_t k = s->replies_got++;
    if (k == 0) {
        s->mail_ok = s->last.code / 100 == 2;
        if (!s->mail_ok) {
            log_info("event=mail_refused %s host=%s code=%u enh=%s", s->ids, s->p.host,
                     s->last.code, s->last.enhanced);
            rcpts_settle(s, RCPT_PENDING, &s->last);
            s->dirty = 1;
        }
    } else if (k - 1 < s->txn->nrcpt) {
        session_rcpt_t *rc = &s->txn->rcpts[k - 1];
        if (rc->state == RCPT_PENDING) {
            rc->reply = s->last;
            if (s->last.code / 100 == 2) {
                rc->state = RCPT_ACCEPTED;
            } else {
                rc->state = RCPT_DONE;
                rc->outcome = caps_outcome(s->last.code);
            }
        }
    }
    if (s->replies_got < s->replies_wanted) {
        if (!s->pipelined) {
            if (!s->mail_ok) {
                txn_done(s, 0);
                return;
            }
            loop_timer_start(s->loop, &s->step, s->p.command_timeout_ms);
            send_rcpt(s, s->replies_got - 1);
        }
        return;
    }
    int nobody = nobody_accepted(s);
    if (nobody)
        s->dirty = 1;
    if (s->pipelined) {
        enter_state(s, ST_DATA); /* DATA went with the group: its reply is next */
        return;
    }
    if (nobody) {
        txn_done(s, 0);
        return;
    }
    enter_state(s, ST_DATA);
    send_line(s, "DATA");
}

/*
 * The reply to a DATA that went pipelined although nobody was accepted. A
 * refusal is what it should get; a server that says 354 anyway gets a lone
 * dot, which ends its transaction empty (RFC 2920 3.1).
 */
static void on_data_for_nobody(session_t *s)
{
    if (s->last.code != 354) {
        txn_done(s, 0);
        return;
    }
    enter_state(s, ST_DISCARD);
    if (out_write(s, ".\r\n", 3) < 0)
        fail_lost(s, "cannot write to");
}

/*
 * The dot of the next line that starts with "." in body [from, end), or end
 * when there is none. Lines end with CRLF; the body's first byte starts one.
 */
static size_t next_dot_line(const char *body, size_t from, size_t end)
{
    if (from == 0 && end > 0 && body[0] == '.')
        return 0;
    /* memchr for the dot, then a look behind it: memmem with a short
     * needle goes byte by byte, a fifth of delivery's time on 100 KiB */
    for (size_t at = from; at < end;) {
        const char *dot = memchr(body + at, '.', end - at);
        if (dot == NULL)
            return end;
        size_t i = (size_t)(dot - body);
        if (i >= 2 && body[i - 1] == '\n' && body[i - 2] == '\r')
            return i;
        at = i + 1;
    }
    return end;
}

/* The end of data: CRLF "." CRLF, without the CRLF when the body already
 * ends with one (or is empty). */
static const char *data_end(const session_t *s)
{
    const char *body = s->txn->body;
    size_t len = s->txn->body_len;
    int ends_crlf = len >= 2 && body[len - 2] == '\r' && body[len - 1] == '\n';
    return len == 0 || ends_crlf ? ".\r\n" : "\r\n.\r\n";
}

/*
 * Pieces of text [*at, end), dot-stuffed (RFC 5321 4.5.2), into v from k
 * while two more fit under max: the spans between line-starting dots go
 * straight from the text, each such dot followed by one more. The new k.
 */
static int add_stuffed(struct iovec *v, int k, int max, const char *text, size_t *at,
                       size_t end)
{
    while (*at < end && k + 2 <= max) {
        size_t dot = next_dot_line(text, *at, end);
        size_t stop = dot < end ? dot + 1 : end;
        v[k++] = (struct iovec){.iov_base = (void *)(text + *at), .iov_len = stop - *at};
        if (dot < end)
            v[k++] = (struct iovec){.iov_base = (void *)".", .iov_len = 1};
        *at = stop;
    }
    return k;
}

/*
 * The head (a signature), then body bytes up to end, and the end of data
 * after the body's last byte, a batch of pieces per write. The body is never
 * copied whole, and on a plain connection with room not at all
 * (conn_writev). The head ends with CRLF, so the body starts a line.
 */
static int write_stuffed(session_t *s, size_t end)
{
    const session_txn_t *txn = s->txn;
    int last = end == txn->body_len;
    struct iovec v[SESSION_BODY_IOV];
    for (;;) {
        /* the last place is kept for the end of data */
        int k = add_stuffed(v, 0, SESSION_BODY_IOV - 1, txn->head, &s->head_at, txn->head_len);
        k = add_stuffed(v, k, SESSION_BODY_IOV - 1, txn->body, &s->body_at, end);
        int done = s->head_at == txn->head_len && s->body_at == end;
        if (done && last) {
            const char *e = data_end(s);
            v[k++] = (struct iovec){.iov_base = (void *)e, .iov_len = strlen(e)};
        }
        if (k > 0 && (s->conn == NULL || conn_writev(s->conn, v, k) < 0))
            return -1;
        if (done)
            return 0;
    }
}

static void pump_body(session_t *s)
{
    size_t len = s->txn->body_len;
    while (conn_out_pending(s->conn) < SESSION_BODY_HIGH) {
        size_t end = len - s->body_at > SESSION_BODY_CHUNK ? s->body_at + SESSION_BODY_CHUNK : len;
        if (write_stuffed(s, end) < 0) {
            fail_lost(s, "cannot write to");
            return;
        }
        if (s->state != ST_BODY || s->conn == NULL)
            return; /* the write found the connection closed */
        if (end == len) {
            enter_state(s, ST_DOT);
            return;
        }
    }
    loop_timer_start(s->loop, &s->pump, SESSION_PUMP_MS);
}

static void on_final_reply(session_t *s)
{
    if (s->state == ST_BODY)
        log_info("event=early_reply %s host=%s code=%u", s->ids, s->p.host, s->last.code);
    rcpts_settle(s, RCPT_ACCEPTED, &s->last);
    if (s->state == ST_BODY) {
        /* the server answered before the body ended: the connection is out of step */
        s->dirty = 1;
        conn_destroy(&s->conn);
        loop_timer_stop(s->loop, &s->pump);
        enter_state(s, ST_CLOSED);
    }
    txn_done(s, 0);
}

static void handle_reply(session_t *s)
{
    unsigned cls = s->last.code / 100;
    switch (s->state) {
    case ST_GREETING:
        if (cls == 2) {
            enter_state(s, ST_EHLO);
            send_line(s, "EHLO %s", s->p.helo);
        } else {
            fail_remote(s, "greeting");
        }
        return;
    case ST_EHLO:
        if (cls == 2) {
            caps_parse(&s->reply, &s->caps);
            after_ehlo(s);
        } else if (cls == 5 && !s->tried_helo && (!s->is_tls || s->p.implicit_tls)) {
            /* HELO only as the first greeting: never after STARTTLS */
            s->tried_helo = 1;
            enter_state(s, ST_HELO);
            send_line(s, "HELO %s", s->p.helo);
        } else {
            fail_remote(s, "EHLO reply");
        }
        return;
    case ST_HELO:
        if (cls == 2) {
            memset(&s->caps, 0, sizeof(s->caps));
            after_ehlo(s);
        } else {
            fail_remote(s, "HELO reply");
        }
        return;
    case ST_STARTTLS:
        if (s->last.code == 220) {
            start_tls(s);
        } else if (s->p.tls == POLICY_TLS_REQUIRED) {
            dlv_reply_t r;
            dlv_reply_set(&r, 451, "4.7.5", "TLS required but %s refused STARTTLS: %u %s",
                          s->p.host, s->last.code, s->last.text);
            session_fail(s, SESSION_FAIL_TLS, &r);
        } else {
            log_info("event=starttls_refused %s host=%s code=%u", s->ids, s->p.host,
                     s->last.code);
            do_auth(s);
        }
        return;
    case ST_AUTH:
        if (s->last.code == 235) {
            log_info("event=auth_ok %s host=%s user=%s mech=%s", s->ids, s->p.host,
                     s->p.auth_username, s->auth_mech);
            to_ready(s);
        } else {
            auth_refused(s);
        }
        return;
    case ST_AUTH_LOGIN:
    case ST_AUTH_USER:
        if (s->last.code == 334)
            auth_login_next(s);
        else
            auth_refused(s);
        return;
    case ST_RSET:
        if (cls != 2) {
            dlv_reply_t r = s->last;
            session_fail(s, SESSION_FAIL_STALE, &r);
            return;
        }
        s->dirty = 0;
        enter_state(s, ST_MAIL);
        if (!s->pipelined)
            send_mail(s);
        return;
    case ST_MAIL:
        on_mail_reply(s);
        return;
    case ST_DATA:
        if (nobody_accepted(s)) {
            on_data_for_nobody(s);
        } else if (s->last.code == 354) {
            enter_state(s, ST_BODY);
            s->head_at = s->body_at = 0;
            pump_body(s);
        } else {
            /* only a 4xx or 5xx refuses DATA; anything else is out of step and never
             * "delivered", since no body went */
            dlv_reply_t r = s->last;
            if (cls != 4 && cls != 5)
                dlv_reply_set(&r, 451, "4.4.2", "unexpected DATA reply from %s: %u %s",
                              s->p.host, s->last.code, s->last.text);
            rcpts_settle(s, RCPT_ACCEPTED, &r);
            s->dirty = 1;
            txn_done(s, 0);
        }
        return;
    case ST_BODY:
    case ST_DOT:
        on_final_reply(s);
        return;
    case ST_DISCARD:
        txn_done(s, 0); /* dirty: the next transaction starts with RSET */
        return;
    case ST_QUIT: {
        session_t *self = s;
        conn_destroy(&s->conn);
        enter_state(s, ST_CLOSED);
        session_destroy(&self); /* freed when on_data leaves */
        return;
    }
    default:
        /* READY, CONNECTING, TLS: nobody asked */
        log_info("event=unsolicited_reply %s host=%s state=%s code=%u", s->ids, s->p.host,
                 state_names[s->state], s->last.code);
        if (s->state == ST_READY) {
            /* out of step (often a 421 before the server hangs up): the connection is done */
            s->dirty = 1;
            dlv_reply_t r = s->last;
            session_fail(s, SESSION_FAIL_LOST, &r);
        }
        return;
    }
}

/* ---- public ---- */

static void free_params(session_t *s)
{
    free((char *)s->p.helo);
    free((char *)s->p.auth_username);
    if (s->p.auth_password) {
        OPENSSL_cleanse((char *)s->p.auth_password, strlen(s->p.auth_password));
        free((char *)s->p.auth_password);
    }
    s->p.helo = s->p.auth_username = s->p.auth_password = NULL;
}

session_t *session_new(loop_t *loop, const session_params_t *p, const session_handlers_t *h,
                       void *arg)
{
    int fd = sock_connect(&p->addr, p->has_src ? &p->src : NULL);
    if (fd < 0)
        return NULL;
    session_t *s = xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->p = *p;
    /* own copies: a kept session outlives the task whose route these came from */
    s->p.helo = xstrdup(p->helo ? p->helo : "");
    s->p.auth_username = xstrdup(p->auth_username ? p->auth_username : "");
    s->p.auth_password = xstrdup(p->auth_password ? p->auth_password : "");
    s->h = *h;
    s->arg = arg;
    sx_strlcpy(s->ids, p->log_ids, sizeof(s->ids));
    s->p.log_ids = NULL;
    sock_addr_ip(&p->addr, s->ip, sizeof(s->ip));
    loop_timer_init(&s->step, on_step_timeout, s);
    loop_timer_init(&s->pump, on_pump, s);
    loop_timer_init(&s->defer, run_deferred, s);
    s->state = ST_CONNECTING;
    s->auth_mech = "-";
    s->conn = conn_new(loop, fd, 1, SESSION_IN_LIMIT, &session_conn_handlers, s);
    if (s->conn == NULL) {
        int e = errno;
        free_params(s);
        free(s);
        errno = e ? e : ENOMEM;
        return NULL;
    }
    enter_state(s, ST_CONNECTING);
    log_debug("event=session_connect %s host=%s ip=%s port=%u implicit_tls=%d", s->ids, s->p.host,
              s->ip, sock_addr_port(&p->addr), s->p.implicit_tls);
    return s;
}

static void session_free(session_t *s)
{
    free_params(s);
    loop_timer_stop(s->loop, &s->step);
    loop_timer_stop(s->loop, &s->pump);
    loop_timer_stop(s->loop, &s->defer);
    conn_destroy(&s->conn);
    reply_clear(&s->reply);
    free(s);
}

void session_destroy(session_t **p)
{
    session_t *s = *p;
    if (s == NULL)
        return;
    *p = NULL;
    if (s->busy) {
        s->dead = 1;
        s->h.on_ready = NULL;
        s->h.on_failed = NULL;
        s->h.on_txn_done = NULL;
        loop_timer_stop(s->loop, &s->defer);
        return;
    }
    session_free(s);
}

void session_quit(session_t **p)
{
    session_t *s = *p;
    if (s == NULL)
        return;
    *p = NULL;
    s->h.on_ready = NULL;
    s->h.on_failed = NULL;
    s->h.on_txn_done = NULL;
    s->txn = NULL;
    loop_timer_stop(s->loop, &s->defer);
    loop_timer_stop(s->loop, &s->pump);
    /* in the middle of an AUTH LOGIN exchange QUIT would be read as a credential */
    if (s->conn == NULL || s->state == ST_CLOSED || s->state == ST_CONNECTING ||
        s->state == ST_TLS || s->state == ST_BODY || s->state == ST_AUTH_LOGIN ||
        s->state == ST_AUTH_USER) {
        session_destroy(&s);
        return;
    }
    s->detached = 1;
    enter_state(s, ST_QUIT);
    send_line(s, "QUIT");
}

/* MAIL, and when the server takes them pipelined every RCPT and DATA too:
 * DATA may close a group (RFC 2920 3.1), which saves a round trip. */
static void send_mail(session_t *s)
{
    session_txn_t *txn = s->txn;
    char params[128];
    size_t size = txn->head_len + txn->body_len;
    caps_mail_params(&s->caps, size, txn->eightbit, txn->smtputf8, params, sizeof(params));
    send_line(s, "MAIL FROM:<%s>%s", txn->mail_from ? txn->mail_from : "", params);
    if (s->pipelined) {
        for (size_t i = 0; i < txn->nrcpt; i++)
            send_rcpt(s, i);
        send_line(s, "DATA");
    }
}

void session_start(session_t *s, session_txn_t *txn)
{
    s->txn = txn;
    s->replies_got = 0;
    s->replies_wanted = 1 + txn->nrcpt;
    s->mail_ok = 0;
    for (size_t i = 0; i < txn->nrcpt; i++)
        txn->rcpts[i].state = RCPT_PENDING;
    dlv_reply_t why;
    if (caps_mail_check(&s->caps, txn->head_len + txn->body_len, txn->smtputf8, &why) < 0) {
        log_info("event=message_refused_locally %s host=%s code=%u enh=%s reason=\"%s\"",
                 s->ids, s->p.host, why.code, why.enhanced, why.text);
        rcpts_settle(s, RCPT_ACCEPTED, &why);
        txn_done(s, 1);
        return;
    }
    s->pipelined = s->caps.pipelining;
    if (s->txns++ > 0) {
        enter_state(s, ST_RSET);
        send_line(s, "RSET");
        if (s->pipelined)
            send_mail(s); /* RSET, MAIL and RCPT in one write (RFC 2920) */
        return;
    }
    enter_state(s, ST_MAIL);
    send_mail(s);
}

void session_set_handlers(session_t *s, const session_handlers_t *h, void *arg)
{
    s->h = *h;
    s->arg = arg;
}

void session_set_log_ids(session_t *s, const char *ids)
{
    sx_strlcpy(s->ids, ids, sizeof(s->ids));
}

int session_is_ready(const session_t *s)
{
    return s->state == ST_READY && !s->dirty && s->conn != NULL;
}

int session_reusable(const session_t *s)
{
    return s->state == ST_READY && s->conn != NULL && !s->dead && !s->detached &&
           s->last.code != 421;
}

unsigned session_txn_count(const session_t *s)
{
    return s->txns;
}

const char *session_local_ip(const session_t *s)
{
    return s->local_ip;
}

int session_tls_verified(const session_t *s)
{
    return s->tls_verified;
}

const char *session_host(const session_t *s)
{
    return s->p.host;
}

const char *session_ip(const session_t *s)
{
    return s->ip;
}

const char *session_tls_version(const session_t *s)
{
    return s->tls_version;
}

const char *session_tls_cipher(const session_t *s)
{
    return s->tls_cipher;
}

const dlv_reply_t *session_last_reply(const session_t *s)
{
    return &s->last;
}
