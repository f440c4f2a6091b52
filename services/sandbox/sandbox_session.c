/*
 * sandbox_session: the sandbox's ESMTP server state machine.
 *
 * Input is processed strictly in order: a command line, or message text
 * (DATA, unstuffed by mail/smtp_data), or the octets of a BDAT chunk, which
 * are never looked at as commands. Each command has a check step that
 * validates and answers errors, and a proceed step that acts. Replies are
 * written in order; while a reply is held back (slow-* recipients) nothing
 * further is read, so pipelined replies can never overtake each other.
 *
 * Every reply carries an enhanced status code (RFC 2034), except those RFC
 * 2034 exempts or that have no class to take one: the 220 greeting, the
 * answer to HELO/EHLO (whose lines are keywords) and 354.
 *
 * Not here: listening, connection limits, the fail-mode clock and the bus.
 */
#include "sandbox_session.h"
#include "sandbox_cmd.h"
#include "sandbox_fail.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/id.h"
#include "core/log.h"
#include "mail/address.h"
#include "mail/smtp_data.h"
#include "net/conn.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SESSION_IN_LIMIT      (64u << 10)  /* unread input kept per client */
#define SESSION_OUT_MAX       (256u << 10) /* unread replies: stop taking commands */
#define SESSION_DRAIN_POLL_MS 50
#define SESSION_FEED_MAX      (16u << 10)  /* message octets handled per step */
#define SESSION_BODY_LIMIT    (2 * SESSION_FEED_MAX)
#define SESSION_RCPT_MAX      1000
#define SESSION_REPLY_MAX     1024
#define SESSION_HELO_SHOWN    64           /* octets of the client's name echoed back */
#define SESSION_LOG_VALUE_MAX 600
#define SESSION_WATCH_MS      100          /* liveness checks while a reply is held */

typedef enum {
    SESSION_INIT = 0, /* greeted, no HELO/EHLO yet */
    SESSION_READY,    /* HELO/EHLO done, no transaction */
    SESSION_MAIL,     /* sender accepted */
    SESSION_RCPT,     /* at least one recipient accepted */
    SESSION_DATA,     /* reading message text after 354 */
    SESSION_BDAT,     /* reading the octets of a BDAT chunk */
    SESSION_TLS,      /* STARTTLS handshake under way */
    SESSION_CLOSING,  /* the last reply is leaving */
} session_state_t;

static const char *const state_names[] = {"init", "ready", "mail",    "rcpt",
                                          "data", "bdat",  "tls",     "closing"};

/* What happens once a reply has gone out (at once, or when a held reply leaves). */
typedef enum { AFTER_NONE = 0, AFTER_CLOSE, AFTER_TLS } after_t;

/* One mail transaction: from MAIL to the end of the message, RSET or EHLO. */
typedef struct txn {
    char sender[ADDR_PATH_MAX + ADDR_DOMAIN_MAX + 2];
    int smtputf8;
    char **rcpts;
    size_t nrcpt;
    int slow;            /* a slow-* recipient: hold every reply */
    int drop;            /* a drop-* recipient: close at DATA / first BDAT */
    spool_t *spool;
    data_reader_t reader;
    int bdat;            /* BDAT chunks have begun */
    uint64_t bdat_size;  /* octets received in chunks */
    int bdat_failed;     /* every later chunk gets failed_reply */
    char failed_reply[SESSION_REPLY_MAX];
} txn_t;

struct session {
    session_ctx_t *ctx;
    session_t *prev, *next;
    conn_t *conn;
    char sid[17];
    char peer[SOCK_ADDR_MAX];
    session_state_t state;
    int helo;                     /* 0 none, 1 HELO, 2 EHLO */
    unsigned fail_code;           /* fail mode at accept: every RCPT gets it */
    char fail_text[FAIL_TEXT_MAX + 1];
    txn_t txn;
    buf_t body;                   /* unstuffed octets on their way to the spool */
    int skip_line;                /* discarding the rest of an overlong command line */

    /* the BDAT chunk being read */
    uint64_t chunk_size, chunk_left;
    int chunk_last;
    int chunk_discard;            /* not stored; answered with chunk_reply */
    char chunk_reply[SESSION_REPLY_MAX];
    session_state_t chunk_resume; /* the state to return to after the chunk */

    buf_t held;                   /* a reply waiting for the slow timer */
    int holding;
    after_t after;

    loop_timer_t slow_timer, drain_timer, idle_timer, reap_timer, watch_timer;
    int closed;
    const char *close_reason;
    uint64_t started;
    unsigned messages;
};

/* Parsed arguments, filled by a check step and used by its proceed step. */
typedef struct cmd_ctx {
    const char *verb;
    const char *args;
    mail_addr_t addr;
    mail_params_t params;
    steer_t steer;
    uint64_t size;
    int last;
} cmd_ctx_t;

static void session_process(session_t *s);
static void session_end(session_t *s, const char *reason);
static void session_reply(session_t *s, after_t after, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void message_finish(session_t *s, const char *refuse_code, const char *refuse_why);

/* ---- state, transaction ---- */

static void session_enter(session_t *s, session_state_t st)
{
    if (s->state == st)
        return;
    log_debug("sid=%s event=state from=%s to=%s", s->sid, state_names[s->state],
              state_names[st]);
    s->state = st;
}

static int txn_active(const session_t *s)
{
    return s->state == SESSION_MAIL || s->state == SESSION_RCPT || s->state == SESSION_DATA ||
           (s->state == SESSION_BDAT && s->chunk_resume >= SESSION_MAIL);
}

static void txn_reset(session_t *s)
{
    txn_t *t = &s->txn;
    spool_abort(&t->spool);
    for (size_t i = 0; i < t->nrcpt; i++)
        free(t->rcpts[i]);
    free(t->rcpts);
    memset(t, 0, sizeof(*t));
    buf_free(&s->body); /* an idle session keeps no message buffer */
    if (s->state == SESSION_MAIL || s->state == SESSION_RCPT || s->state == SESSION_DATA ||
        s->state == SESSION_BDAT)
        session_enter(s, s->helo ? SESSION_READY : SESSION_INIT);
}

static const char *quote(char *dst, size_t size, const char *src)
{
    return log_quote(dst, size, src, strlen(src));
}

/* ---- replies ---- */

/*
 * Close once what is written has left. A message half received is given up
 * now, before the client can see the close, so nothing of it is left in the
 * maildir by then (the rest of the transaction goes when the session is
 * reaped).
 */
static void session_close(session_t *s)
{
    spool_abort(&s->txn.spool);
    session_enter(s, SESSION_CLOSING);
    conn_close_after_flush(s->conn);
}

/* Carry out what a reply asked for, once it is on its way. */
static void session_after(session_t *s)
{
    after_t a = s->after;
    s->after = AFTER_NONE;
    if (s->closed)
        return;
    switch (a) {
    case AFTER_CLOSE:
        session_close(s);
        break;
    case AFTER_TLS:
        session_enter(s, SESSION_TLS);
        if (conn_tls_accept(s->conn, s->ctx->tls) < 0) {
            log_warn("sid=%s event=tls_failed why=\"cannot start the handshake\"", s->sid);
            session_end(s, "tls_failed");
        }
        break;
    case AFTER_NONE:
        break;
    }
}

/*
 * Send one reply (fmt gives it without the final CRLF; a multi-line reply has
 * CRLF between its lines). In a slow transaction it waits slow_delay first,
 * and nothing else is read until it has left.
 */
static void session_reply(session_t *s, after_t after, const char *fmt, ...)
{
    char line[SESSION_REPLY_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > sizeof(line) - 3)
        n = (int)(sizeof(line) - 3);
    memcpy(line + n, "\r\n", 3);
    n += 2;
    if (after != AFTER_NONE)
        s->after = after;
    if (s->closed)
        return;
    char q[SESSION_LOG_VALUE_MAX];
    log_debug("sid=%s event=reply text=%s", s->sid, log_quote(q, sizeof(q), line, (size_t)n - 2));

    if (s->txn.slow && s->ctx->slow_delay_ms > 0) {
        buf_reset(&s->held);
        buf_append(&s->held, line, (size_t)n);
        s->holding = 1;
        loop_timer_start(s->ctx->loop, &s->slow_timer, s->ctx->slow_delay_ms);
        loop_timer_start(s->ctx->loop, &s->watch_timer, SESSION_WATCH_MS);
        return;
    }
    if (conn_write(s->conn, line, (size_t)n) < 0) {
        log_warn("sid=%s event=reply_failed why=\"client does not read its replies\"", s->sid);
        session_end(s, "output_overflow");
        return;
    }
    session_after(s);
}

/* The slow timer: the held reply leaves, then reading goes on. */
static void on_slow_timer(loop_t *loop, void *arg)
{
    session_t *s = arg;
    s->holding = 0;
    loop_timer_stop(loop, &s->watch_timer);
    if (s->closed)
        return;
    if (buf_used(&s->held) > 0 && conn_write(s->conn, buf_head(&s->held), buf_used(&s->held)) < 0) {
        session_end(s, "output_overflow");
        return;
    }
    buf_reset(&s->held);
    loop_timer_start(loop, &s->idle_timer, s->ctx->idle_timeout_ms);
    session_after(s);
    if (s->closed)
        return;
    session_process(s);
    if (!s->closed)
        conn_read_pause(s->conn, 0); /* input was consumed outside a conn callback */
}

/*
 * While a reply is held, nothing is read, and once conn's input is full it
 * watches the socket for nothing at all; a reset from the peer then shows
 * only as EPOLLERR/EPOLLHUP, which conn does not act on when it is not
 * reading. So look at the socket ourselves and end the session.
 */
static void on_watch_timer(loop_t *loop, void *arg)
{
    session_t *s = arg;
    if (s->closed || !s->holding)
        return;
    struct pollfd p = {.fd = conn_fd(s->conn), .events = 0};
    if (poll(&p, 1, 0) > 0 && (p.revents & (POLLERR | POLLHUP | POLLNVAL))) {
        log_debug("sid=%s event=peer_gone_while_held revents=0x%x", s->sid, (unsigned)p.revents);
        session_end(s, "peer_reset");
        return;
    }
    loop_timer_start(loop, &s->watch_timer, SESSION_WATCH_MS);
}

/* Replies piled up unread: look again until the client has taken them. */
static void on_drain_timer(loop_t *loop, void *arg)
{
    session_t *s = arg;
    if (s->closed)
        return;
    if (conn_out_pending(s->conn) > SESSION_OUT_MAX) {
        loop_timer_start(loop, &s->drain_timer, SESSION_DRAIN_POLL_MS);
        return;
    }
    session_process(s);
    if (!s->closed)
        conn_read_pause(s->conn, 0);
}

static void on_idle_timer(loop_t *loop, void *arg)
{
    session_t *s = arg;
    if (s->closed)
        return;
    if (s->holding) {
        /* we are the slow one, not the client */
        loop_timer_start(loop, &s->idle_timer, s->ctx->idle_timeout_ms);
        return;
    }
    log_info("sid=%s event=idle_timeout state=%s after_ms=%llu", s->sid, state_names[s->state],
             (unsigned long long)s->ctx->idle_timeout_ms);
    if (s->state == SESSION_TLS || s->state == SESSION_CLOSING) {
        session_end(s, "idle_timeout");
        return;
    }
    s->close_reason = "idle_timeout";
    conn_printf(s->conn, "421 4.4.2 %s Error: timeout exceeded, closing connection\r\n",
                s->ctx->hostname);
    if (s->closed)
        return; /* the write found the peer gone */
    /* a client that does not even read this is cut off at the next expiry */
    loop_timer_start(loop, &s->idle_timer, s->ctx->idle_timeout_ms);
    session_close(s);
}

/* ---- commands: helpers ---- */

static void reply_addr_error(session_t *s, addr_status_t st, int sender)
{
    const char *why = address_status_text(st);
    switch (st) {
    case ADDR_SYNTAX:
    case ADDR_TOO_LONG:
        session_reply(s, AFTER_NONE, "501 %s Error: bad %s address: %s",
                      sender ? "5.1.7" : "5.1.3", sender ? "sender" : "recipient", why);
        return;
    case ADDR_UTF8:
        session_reply(s, AFTER_NONE, "553 5.6.7 Error: non-ASCII address without SMTPUTF8");
        return;
    case ADDR_ROUTE:
        session_reply(s, AFTER_NONE, "553 5.1.3 Error: %s", why);
        return;
    case ADDR_PARAMS:
        session_reply(s, AFTER_NONE, "501 5.5.4 Error: malformed parameters: %s", why);
        return;
    case ADDR_OK:
        break;
    }
    session_reply(s, AFTER_NONE, "501 5.5.4 Error: bad address");
}

/* Close without a word: drop-* recipients at DATA or the first BDAT. */
static void session_drop(session_t *s, const char *verb)
{
    char q[SESSION_LOG_VALUE_MAX];
    log_info("sid=%s event=fail_applied mode=drop at=%s sender=%s", s->sid, verb,
             quote(q, sizeof(q), s->txn.sender));
    s->close_reason = "drop";
    s->after = AFTER_NONE;
    session_close(s); /* replies to earlier commands still leave */
}

/* ---- HELO, EHLO ---- */

static void do_helo(session_t *s, cmd_ctx_t *c)
{
    session_reply(s, AFTER_NONE, "250 %s Hello %.*s", s->ctx->hostname, SESSION_HELO_SHOWN,
                  c->args);
    txn_reset(s);
    s->helo = 1;
    session_enter(s, SESSION_READY);
}

static void do_ehlo(session_t *s, cmd_ctx_t *c)
{
    const char *kw[8];
    char size_kw[40];
    size_t n = 0;
    snprintf(size_kw, sizeof(size_kw), "SIZE %llu",
             (unsigned long long)s->ctx->max_message_size);
    kw[n++] = "PIPELINING";
    kw[n++] = size_kw;
    kw[n++] = "8BITMIME";
    kw[n++] = "SMTPUTF8";
    kw[n++] = "ENHANCEDSTATUSCODES";
    kw[n++] = "CHUNKING";
    if (s->ctx->tls && !conn_is_tls(s->conn))
        kw[n++] = "STARTTLS";
    char text[SESSION_REPLY_MAX];
    int len = snprintf(text, sizeof(text), "250-%s Hello %.*s", s->ctx->hostname,
                       SESSION_HELO_SHOWN, c->args);
    for (size_t i = 0; i < n && len > 0 && (size_t)len < sizeof(text); i++)
        len += snprintf(text + len, sizeof(text) - (size_t)len, "\r\n250%c%s",
                        i + 1 == n ? ' ' : '-', kw[i]);
    session_reply(s, AFTER_NONE, "%s", text);
    txn_reset(s);
    s->helo = 2;
    session_enter(s, SESSION_READY);
}

/* ---- STARTTLS ---- */

static int check_starttls(session_t *s, cmd_ctx_t *c)
{
    (void)c;
    if (s->ctx->tls == NULL) {
        session_reply(s, AFTER_NONE, "502 5.5.1 Error: STARTTLS is not available");
        return -1;
    }
    if (conn_is_tls(s->conn)) {
        session_reply(s, AFTER_NONE, "503 5.5.1 Error: TLS is already active");
        return -1;
    }
    if (txn_active(s)) {
        session_reply(s, AFTER_NONE, "503 5.5.1 Error: MAIL transaction in progress");
        return -1;
    }
    return 0;
}

static void do_starttls(session_t *s, cmd_ctx_t *c)
{
    (void)c;
    session_reply(s, AFTER_TLS, "220 2.0.0 Ready to start TLS");
}

static void on_tls(conn_t *c, int ok, const char *why, void *arg)
{
    (void)c;
    session_t *s = arg;
    if (s->closed)
        return;
    if (!ok) {
        char q[SESSION_LOG_VALUE_MAX];
        log_info("sid=%s event=tls_failed why=%s", s->sid, quote(q, sizeof(q), why ? why : ""));
        s->close_reason = "tls_failed";
        return; /* the conn reports the close next */
    }
    log_info("sid=%s event=tls version=%s cipher=%s", s->sid, conn_tls_version(s->conn),
             conn_tls_cipher(s->conn));
    /* RFC 3207 4.2: forget everything learnt before the handshake */
    txn_reset(s);
    s->helo = 0;
    s->skip_line = 0;
    session_enter(s, SESSION_INIT);
}

/* ---- MAIL ---- */

static int check_mail(session_t *s, cmd_ctx_t *c)
{
    if (txn_active(s)) {
        session_reply(s, AFTER_NONE, "503 5.5.1 Error: nested MAIL command");
        return -1;
    }
    const char *p = cmd_after_keyword(c->args, "FROM:");
    if (p == NULL) {
        session_reply(s, AFTER_NONE, "501 5.5.4 Syntax: MAIL FROM:<address>");
        return -1;
    }
    addr_status_t st = address_parse(p, 1, 1, &c->addr, &c->params);
    if (st != ADDR_OK) {
        reply_addr_error(s, st, 1);
        return -1;
    }
    if (c->addr.utf8 && address_param(&c->params, "SMTPUTF8") == NULL) {
        session_reply(s, AFTER_NONE, "553 5.6.7 Error: non-ASCII sender without SMTPUTF8");
        return -1;
    }
    const mail_param_t *size = address_param(&c->params, "SIZE");
    if (size) {
        uint64_t declared;
        if (!size->has_value || cmd_number(size->value, &declared) < 0) {
            session_reply(s, AFTER_NONE, "501 5.5.4 Error: SIZE wants a number of octets");
            return -1;
        }
        if (declared > s->ctx->max_message_size) {
            session_reply(s, AFTER_NONE,
                          "552 5.3.4 Error: message size exceeds the fixed maximum of %llu octets",
                          (unsigned long long)s->ctx->max_message_size);
            return -1;
        }
    }
    return 0;
}

static void do_mail(session_t *s, cmd_ctx_t *c)
{
    txn_reset(s);
    sx_strlcpy(s->txn.sender, c->addr.is_null ? "" : c->addr.full, sizeof(s->txn.sender));
    s->txn.smtputf8 = address_param(&c->params, "SMTPUTF8") != NULL;
    session_enter(s, SESSION_MAIL);
    session_reply(s, AFTER_NONE, "250 2.1.0 Sender OK");
}

/* ---- RCPT ---- */

static int check_rcpt(session_t *s, cmd_ctx_t *c)
{
    char q[SESSION_LOG_VALUE_MAX];
    if (s->state != SESSION_MAIL && s->state != SESSION_RCPT) {
        session_reply(s, AFTER_NONE, "503 5.5.1 Error: need MAIL command");
        return -1;
    }
    if (s->txn.bdat) {
        session_reply(s, AFTER_NONE, "503 5.5.1 Error: RCPT after BDAT");
        return -1;
    }
    const char *p = cmd_after_keyword(c->args, "TO:");
    if (p == NULL) {
        session_reply(s, AFTER_NONE, "501 5.5.4 Syntax: RCPT TO:<address>");
        return -1;
    }
    addr_status_t st = address_parse(p, 0, s->txn.smtputf8, &c->addr, &c->params);
    if (st != ADDR_OK) {
        reply_addr_error(s, st, 0);
        return -1;
    }
    if (s->txn.nrcpt >= SESSION_RCPT_MAX) {
        session_reply(s, AFTER_NONE, "452 4.5.3 Error: too many recipients");
        return -1;
    }
    if (s->fail_code) {
        log_info("sid=%s event=fail_applied mode=fail_mode code=%u rcpt=%s", s->sid,
                 s->fail_code, quote(q, sizeof(q), c->addr.full));
        session_reply(s, AFTER_NONE, "%u %s %s", s->fail_code, fail_enhanced(s->fail_code),
                      s->fail_text[0] ? s->fail_text : fail_default_text(s->fail_code));
        return -1;
    }
    c->steer = steer_classify(c->addr.local);
    if (c->steer != STEER_NONE)
        log_info("sid=%s event=fail_applied mode=%s rcpt=%s", s->sid, steer_name(c->steer),
                 quote(q, sizeof(q), c->addr.full));
    switch (c->steer) {
    case STEER_FAIL_421:
        s->close_reason = "fail-421";
        session_reply(s, AFTER_CLOSE,
                      "421 4.3.2 %s Service not available, closing transmission channel "
                      "(sandbox: fail-421)",
                      s->ctx->hostname);
        return -1;
    case STEER_FAIL_450:
        session_reply(s, AFTER_NONE,
                      "450 4.2.1 Mailbox temporarily unavailable (sandbox: fail-450)");
        return -1;
    case STEER_FAIL_550:
        session_reply(s, AFTER_NONE, "550 5.1.1 Mailbox unavailable (sandbox: fail-550)");
        return -1;
    case STEER_SLOW:
    case STEER_DROP:
    case STEER_NONE:
        break;
    }
    return 0;
}

static void do_rcpt(session_t *s, cmd_ctx_t *c)
{
    txn_t *t = &s->txn;
    if (c->steer == STEER_SLOW)
        t->slow = 1; /* this reply already waits */
    if (c->steer == STEER_DROP)
        t->drop = 1;
    t->rcpts = xrealloc(t->rcpts, (t->nrcpt + 1) * sizeof(*t->rcpts));
    t->rcpts[t->nrcpt++] = xstrdup(c->addr.full);
    session_enter(s, SESSION_RCPT);
    session_reply(s, AFTER_NONE, "250 2.1.5 Recipient OK");
}

/* ---- DATA ---- */

static int check_data(session_t *s, cmd_ctx_t *c)
{
    (void)c;
    if (s->state != SESSION_MAIL && s->state != SESSION_RCPT) {
        session_reply(s, AFTER_NONE, "503 5.5.1 Error: need MAIL command");
        return -1;
    }
    if (s->txn.bdat) {
        session_reply(s, AFTER_NONE, "503 5.5.1 Error: DATA after BDAT");
        return -1;
    }
    if (s->txn.nrcpt == 0) {
        session_reply(s, AFTER_NONE, "554 5.5.1 Error: no valid recipients");
        return -1;
    }
    if (s->txn.drop) {
        session_drop(s, "DATA");
        return -1;
    }
    return 0;
}

static void do_data(session_t *s, cmd_ctx_t *c)
{
    (void)c;
    txn_t *t = &s->txn;
    t->spool = spool_new(s->ctx->maildir, t->sender, t->rcpts[0]);
    if (t->spool == NULL) {
        log_error("sid=%s event=store_failed stage=spool err=\"%s\"", s->sid, strerror(errno));
        session_reply(s, AFTER_NONE, "451 4.3.0 Error: cannot store messages now; try later");
        txn_reset(s);
        return;
    }
    data_reader_init(&t->reader, s->ctx->max_message_size, 0);
    session_enter(s, SESSION_DATA);
    session_reply(s, AFTER_NONE, "354 End data with <CR><LF>.<CR><LF>");
}

/* Message text after 354: unstuff, spool, and finish at CRLF.CRLF. */
static int data_step(session_t *s, buf_t *in)
{
    txn_t *t = &s->txn;
    size_t n = buf_used(in) > SESSION_FEED_MAX ? SESSION_FEED_MAX : buf_used(in);
    long used = data_reader_feed(&t->reader, buf_head(in), n, &s->body);
    if (used < 0) {
        /* cannot happen while SESSION_BODY_LIMIT >= SESSION_FEED_MAX; never trust it */
        log_error("sid=%s event=data_overflow", s->sid);
        session_reply(s, AFTER_CLOSE, "421 4.3.0 %s Error: internal buffer error",
                      s->ctx->hostname);
        return 0;
    }
    buf_consume(in, (size_t)used);
    if (buf_used(&s->body) > 0) {
        if (t->spool)
            spool_write(t->spool, buf_head(&s->body), buf_used(&s->body));
        buf_reset(&s->body);
    }
    if (t->reader.done) {
        if (t->reader.too_big)
            message_finish(s, "552 5.3.4", "message size exceeds the fixed maximum");
        else if (t->reader.bare_cr_lf)
            message_finish(s, "554 5.6.0", "bare CR or LF in the message text");
        else if (t->reader.line_too_long)
            message_finish(s, "554 5.6.0", "a line is longer than 998 octets");
        else
            message_finish(s, NULL, NULL);
    }
    return used > 0 || t->reader.done;
}

/* ---- BDAT ---- */

static int check_bdat(session_t *s, cmd_ctx_t *c)
{
    if (cmd_bdat_parse(c->args, &c->size, &c->last) < 0) {
        /* without a size the chunk cannot be told from commands: stop here */
        s->close_reason = "bdat_syntax";
        session_reply(s, AFTER_CLOSE,
                      "501 5.5.4 Syntax: BDAT <size> [LAST]; closing the connection");
        return -1;
    }
    if (s->txn.drop && !s->txn.bdat && (s->state == SESSION_MAIL || s->state == SESSION_RCPT)) {
        session_drop(s, "BDAT");
        return -1;
    }
    return 0;
}

/* The chunk is read but not stored; its answer is fixed now. */
static void chunk_discard(session_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void chunk_discard(session_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->chunk_reply, sizeof(s->chunk_reply), fmt, ap);
    va_end(ap);
    s->chunk_discard = 1;
}

/* A transaction's chunks failed: this one and every later one get the same answer. */
static void bdat_fail(session_t *s, const char *reply)
{
    txn_t *t = &s->txn;
    t->bdat_failed = 1;
    sx_strlcpy(t->failed_reply, reply, sizeof(t->failed_reply));
    spool_abort(&t->spool);
    chunk_discard(s, "%s", t->failed_reply);
}

static void bdat_chunk_end(session_t *s);

static void do_bdat(session_t *s, cmd_ctx_t *c)
{
    txn_t *t = &s->txn;
    s->chunk_size = s->chunk_left = c->size;
    s->chunk_last = c->last;
    s->chunk_discard = 0;
    s->chunk_resume = s->state;
    if (s->state != SESSION_MAIL && s->state != SESSION_RCPT) {
        chunk_discard(s, s->helo ? "503 5.5.1 Error: need MAIL command"
                                 : "503 5.5.1 Error: send HELO/EHLO first");
    } else if (t->nrcpt == 0) {
        chunk_discard(s, "554 5.5.1 Error: no valid recipients");
    } else if (t->bdat_failed) {
        chunk_discard(s, "%s", t->failed_reply);
    } else if (c->size > s->ctx->max_message_size - t->bdat_size) {
        char reply[SESSION_REPLY_MAX];
        snprintf(reply, sizeof(reply),
                 "552 5.3.4 Error: message size exceeds the fixed maximum of %llu octets",
                 (unsigned long long)s->ctx->max_message_size);
        log_info("sid=%s event=message_refused code=552 reason=too_big size=%llu", s->sid,
                 (unsigned long long)(t->bdat_size + c->size));
        s->ctx->refused++;
        t->bdat = 1;
        bdat_fail(s, reply);
    } else if (!t->bdat) {
        t->bdat = 1;
        t->spool = spool_new(s->ctx->maildir, t->sender, t->rcpts[0]);
        if (t->spool == NULL) {
            log_error("sid=%s event=store_failed stage=spool err=\"%s\"", s->sid,
                      strerror(errno));
            bdat_fail(s, "451 4.3.0 Error: cannot store messages now; try later");
        }
    }
    session_enter(s, SESSION_BDAT);
    if (s->chunk_left == 0)
        bdat_chunk_end(s);
}

/* Chunk octets go to the spool as they are: never unstuffed, never parsed. */
static int bdat_step(session_t *s, buf_t *in)
{
    size_t n = buf_used(in);
    if ((uint64_t)n > s->chunk_left)
        n = (size_t)s->chunk_left;
    if (!s->chunk_discard) {
        if (s->txn.spool)
            spool_write(s->txn.spool, buf_head(in), n);
        s->txn.bdat_size += n;
    }
    buf_consume(in, n);
    s->chunk_left -= n;
    if (s->chunk_left == 0)
        bdat_chunk_end(s);
    return n > 0;
}

static void bdat_chunk_end(session_t *s)
{
    session_enter(s, s->chunk_resume);
    if (s->chunk_discard) {
        int in_txn = s->state == SESSION_MAIL || s->state == SESSION_RCPT;
        session_reply(s, AFTER_NONE, "%s", s->chunk_reply);
        if (s->chunk_last && in_txn)
            txn_reset(s);
        return;
    }
    if (s->chunk_last) {
        message_finish(s, NULL, NULL);
        return;
    }
    session_reply(s, AFTER_NONE, "250 2.0.0 %llu octets received",
                  (unsigned long long)s->chunk_size);
}

/* ---- the end of a message ---- */

/*
 * Store the message once per recipient, or refuse it (refuse_code set), then
 * answer and end the transaction. The 250 is written only after
 * spool_commit has the files synced in new/.
 */
static void message_finish(session_t *s, const char *refuse_code, const char *refuse_why)
{
    txn_t *t = &s->txn;
    char q1[SESSION_LOG_VALUE_MAX], q2[SESSION_LOG_VALUE_MAX], q3[SESSION_LOG_VALUE_MAX];
    uint64_t size = t->spool ? spool_size(t->spool) : 0;
    if (t->reader.size > size)
        size = t->reader.size;
    session_enter(s, SESSION_RCPT);

    if (refuse_code == NULL && (t->spool == NULL || spool_error(t->spool))) {
        log_error("sid=%s event=store_failed stage=write err=\"%s\"", s->sid,
                  t->spool ? strerror(spool_error(t->spool)) : "no spool");
        refuse_code = "451 4.3.0";
        refuse_why = "cannot store the message; try later";
    }
    if (refuse_code) {
        s->ctx->refused++;
        log_info("sid=%s event=message_refused reply=%s reason=%s size=%llu sender=%s", s->sid,
                 quote(q1, sizeof(q1), refuse_code), quote(q2, sizeof(q2), refuse_why),
                 (unsigned long long)size, quote(q3, sizeof(q3), t->sender));
        session_reply(s, AFTER_NONE, "%s Error: %s", refuse_code, refuse_why);
        txn_reset(s);
        return;
    }

    char(*names)[MAILDIR_NAME_MAX] = xcalloc(t->nrcpt, sizeof(*names));
    if (spool_commit(&t->spool, (const char *const *)t->rcpts, t->nrcpt, names) < 0) {
        log_error("sid=%s event=store_failed stage=commit err=\"%s\"", s->sid, strerror(errno));
        s->ctx->refused++;
        session_reply(s, AFTER_NONE, "451 4.3.0 Error: cannot store the message; try later");
        free(names);
        txn_reset(s);
        return;
    }
    for (size_t i = 0; i < t->nrcpt; i++)
        log_info("sid=%s event=stored file=%s sender=%s rcpt=%s size=%llu", s->sid, names[i],
                 quote(q1, sizeof(q1), t->sender), quote(q2, sizeof(q2), t->rcpts[i]),
                 (unsigned long long)size);
    s->ctx->messages++;
    s->ctx->files += t->nrcpt;
    s->messages++;
    session_reply(s, AFTER_NONE, "250 2.0.0 OK: stored as %s", names[0]);
    free(names);
    txn_reset(s);
}

/* ---- the small commands ---- */

static void do_rset(session_t *s, cmd_ctx_t *c)
{
    (void)c;
    session_reply(s, AFTER_NONE, "250 2.0.0 OK");
    txn_reset(s);
}

static void do_noop(session_t *s, cmd_ctx_t *c)
{
    (void)c;
    session_reply(s, AFTER_NONE, "250 2.0.0 OK");
}

static void do_quit(session_t *s, cmd_ctx_t *c)
{
    (void)c;
    s->close_reason = "quit";
    session_reply(s, AFTER_CLOSE, "221 2.0.0 %s closing connection", s->ctx->hostname);
}

static void do_vrfy(session_t *s, cmd_ctx_t *c)
{
    (void)c;
    session_reply(s, AFTER_NONE,
                  "252 2.0.0 Cannot VRFY user, but will accept the message and store it");
}

static void do_expn(session_t *s, cmd_ctx_t *c)
{
    (void)c;
    session_reply(s, AFTER_NONE, "502 5.5.1 Error: EXPN is not available");
}

static void do_help(session_t *s, cmd_ctx_t *c)
{
    (void)c;
    session_reply(s, AFTER_NONE,
                  "214 2.0.0 Commands: EHLO HELO STARTTLS MAIL RCPT DATA BDAT RSET NOOP QUIT "
                  "VRFY HELP");
}

/* ---- the command table ---- */

#define CMD_NEED_HELO 1u /* refused before HELO/EHLO */
#define CMD_NEED_ARGS 2u /* refused without arguments */
#define CMD_NO_ARGS   4u /* refused with arguments */

typedef int (*cmd_check_fn)(session_t *s, cmd_ctx_t *c); /* 0: proceed; -1: answered */
typedef void (*cmd_proceed_fn)(session_t *s, cmd_ctx_t *c);

static const struct command {
    const char *verb;
    unsigned flags;
    cmd_check_fn check;
    cmd_proceed_fn proceed;
    const char *syntax;
} commands[] = {
    {"EHLO", CMD_NEED_ARGS, NULL, do_ehlo, "EHLO hostname"},
    {"HELO", CMD_NEED_ARGS, NULL, do_helo, "HELO hostname"},
    {"STARTTLS", CMD_NEED_HELO | CMD_NO_ARGS, check_starttls, do_starttls, "STARTTLS"},
    {"MAIL", CMD_NEED_HELO | CMD_NEED_ARGS, check_mail, do_mail, "MAIL FROM:<address>"},
    {"RCPT", CMD_NEED_HELO | CMD_NEED_ARGS, check_rcpt, do_rcpt, "RCPT TO:<address>"},
    {"DATA", CMD_NEED_HELO | CMD_NO_ARGS, check_data, do_data, "DATA"},
    /* BDAT checks for itself: its chunk must be read whatever the answer */
    {"BDAT", 0, check_bdat, do_bdat, "BDAT <size> [LAST]"},
    {"RSET", CMD_NO_ARGS, NULL, do_rset, "RSET"},
    {"NOOP", 0, NULL, do_noop, "NOOP"},
    {"QUIT", 0, NULL, do_quit, "QUIT"},
    {"VRFY", CMD_NEED_ARGS, NULL, do_vrfy, "VRFY address"},
    {"EXPN", 0, NULL, do_expn, "EXPN list"},
    {"HELP", 0, NULL, do_help, "HELP"},
};

static void session_command(session_t *s, const char *line)
{
    char verb[CMD_VERB_MAX];
    const char *args;
    cmd_split(line, verb, &args);
    const struct command *cmd = NULL;
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(commands[i].verb, verb) == 0) {
            cmd = &commands[i];
            break;
        }
    }
    log_debug("sid=%s event=command verb=%s state=%s", s->sid, cmd ? cmd->verb : "unknown",
              state_names[s->state]);
    if (cmd == NULL) {
        session_reply(s, AFTER_NONE, "500 5.5.1 Error: command not recognized");
        return;
    }
    if (((cmd->flags & CMD_NEED_ARGS) && *args == '\0') ||
        ((cmd->flags & CMD_NO_ARGS) && *args != '\0')) {
        session_reply(s, AFTER_NONE, "501 5.5.4 Syntax: %s", cmd->syntax);
        return;
    }
    if ((cmd->flags & CMD_NEED_HELO) && !s->helo) {
        session_reply(s, AFTER_NONE, "503 5.5.1 Error: send HELO/EHLO first");
        return;
    }
    cmd_ctx_t c;
    memset(&c, 0, sizeof(c));
    c.verb = cmd->verb;
    c.args = args;
    if (cmd->check && cmd->check(s, &c) < 0)
        return;
    cmd->proceed(s, &c);
}

/* One command line off the input; 0 when a whole line has not arrived yet. */
static int command_step(session_t *s, buf_t *in)
{
    long lf = buf_find_lf(in, 0);
    if (s->skip_line) {
        if (lf < 0) {
            buf_consume(in, buf_used(in));
            return 0;
        }
        buf_consume(in, (size_t)lf + 1);
        s->skip_line = 0;
        return 1;
    }
    if (lf < 0) {
        if (buf_used(in) < CMD_LINE_MAX)
            return 0;
        /* no line end within the limit: answer now, drop the rest of the line */
        buf_consume(in, buf_used(in));
        s->skip_line = 1;
        log_info("sid=%s event=command_refused reason=line_too_long", s->sid);
        session_reply(s, AFTER_NONE, "500 5.5.2 Error: line too long (at most %d octets)",
                      CMD_LINE_MAX);
        return 1;
    }
    size_t len = (size_t)lf + 1;
    if (len > CMD_LINE_MAX) {
        buf_consume(in, len);
        log_info("sid=%s event=command_refused reason=line_too_long length=%zu", s->sid, len);
        session_reply(s, AFTER_NONE, "500 5.5.2 Error: line too long (at most %d octets)",
                      CMD_LINE_MAX);
        return 1;
    }
    char line[CMD_LINE_MAX];
    cmd_line_status_t st = cmd_line_take(buf_head(in), (size_t)lf, line);
    buf_consume(in, len);
    if (st != CMD_LINE_OK) {
        log_info("sid=%s event=command_refused reason=control_octets", s->sid);
        session_reply(s, AFTER_NONE, "500 5.5.2 Error: control characters in the command line");
        return 1;
    }
    session_command(s, line);
    return 1;
}

/* ---- driving the input ---- */

static int session_blocked(session_t *s)
{
    if (s->closed || s->holding || s->state == SESSION_TLS || s->state == SESSION_CLOSING)
        return 1;
    if (conn_out_pending(s->conn) > SESSION_OUT_MAX) {
        if (!loop_timer_active(&s->drain_timer))
            loop_timer_start(s->ctx->loop, &s->drain_timer, SESSION_DRAIN_POLL_MS);
        return 1;
    }
    return 0;
}

static void session_process(session_t *s)
{
    while (!session_blocked(s)) {
        buf_t *in = conn_in(s->conn);
        if (buf_used(in) == 0)
            break;
        int progress;
        switch (s->state) {
        case SESSION_DATA:
            progress = data_step(s, in);
            break;
        case SESSION_BDAT:
            progress = bdat_step(s, in);
            break;
        default:
            progress = command_step(s, in);
            break;
        }
        if (!progress)
            break;
    }
}

static void on_data(conn_t *c, void *arg)
{
    (void)c;
    session_t *s = arg;
    if (s->closed)
        return;
    loop_timer_start(s->ctx->loop, &s->idle_timer, s->ctx->idle_timeout_ms);
    session_process(s);
}

/* ---- start and end ---- */

static void session_free(session_t *s)
{
    session_ctx_t *ctx = s->ctx;
    loop_timer_stop(ctx->loop, &s->slow_timer);
    loop_timer_stop(ctx->loop, &s->drain_timer);
    loop_timer_stop(ctx->loop, &s->idle_timer);
    loop_timer_stop(ctx->loop, &s->reap_timer);
    loop_timer_stop(ctx->loop, &s->watch_timer);
    conn_destroy(&s->conn);
    txn_reset(s);
    buf_free(&s->body);
    buf_free(&s->held);
    if (s->prev)
        s->prev->next = s->next;
    else
        ctx->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    ctx->active--;
    free(s);
}

static void on_reap_timer(loop_t *loop, void *arg)
{
    (void)loop;
    session_free(arg);
}

/*
 * The session is over. The connection is freed on the next loop turn, never
 * from inside a call into conn, which may still be on the stack.
 */
static void session_end(session_t *s, const char *reason)
{
    if (s->closed)
        return;
    s->closed = 1;
    if (s->close_reason == NULL)
        s->close_reason = reason;
    session_ctx_t *ctx = s->ctx;
    loop_timer_stop(ctx->loop, &s->slow_timer);
    loop_timer_stop(ctx->loop, &s->drain_timer);
    loop_timer_stop(ctx->loop, &s->idle_timer);
    loop_timer_stop(ctx->loop, &s->watch_timer);
    log_info("sid=%s event=disconnect reason=%s state=%s messages=%u duration_ms=%llu", s->sid,
             s->close_reason, state_names[s->state], s->messages,
             (unsigned long long)(loop_now(ctx->loop) - s->started));
    loop_timer_start(ctx->loop, &s->reap_timer, 0);
}

static void on_close(conn_t *c, int err, void *arg)
{
    (void)c;
    session_t *s = arg;
    const char *reason = "peer_closed";
    if (s->state == SESSION_CLOSING)
        reason = "closed";
    else if (err)
        reason = "io_error";
    if (err && err != EPIPE && err != ECONNRESET)
        log_debug("sid=%s event=conn_error err=\"%s\"", s->sid, strerror(err));
    session_end(s, reason);
}

static const conn_handlers_t session_handlers = {
    .on_data = on_data,
    .on_close = on_close,
    .on_tls = on_tls,
};

session_t *session_start(session_ctx_t *ctx, int fd, const sock_addr_t *peer,
                         unsigned fail_code, const char *fail_text)
{
    session_t *s = xcalloc(1, sizeof(*s));
    s->ctx = ctx;
    id_session(s->sid);
    char ip[SOCK_ADDR_MAX];
    snprintf(s->peer, sizeof(s->peer), "%s:%u", sock_addr_ip(peer, ip, sizeof(ip)),
             sock_addr_port(peer));
    buf_init(&s->body, SESSION_BODY_LIMIT);
    buf_init(&s->held, 2 * SESSION_REPLY_MAX);
    loop_timer_init(&s->slow_timer, on_slow_timer, s);
    loop_timer_init(&s->drain_timer, on_drain_timer, s);
    loop_timer_init(&s->idle_timer, on_idle_timer, s);
    loop_timer_init(&s->reap_timer, on_reap_timer, s);
    loop_timer_init(&s->watch_timer, on_watch_timer, s);
    s->conn = conn_new(ctx->loop, fd, 0, SESSION_IN_LIMIT, &session_handlers, s);
    if (s->conn == NULL) {
        log_warn("sid=%s event=connect_failed peer=%s err=\"%s\"", s->sid, s->peer,
                 strerror(errno));
        buf_free(&s->body);
        buf_free(&s->held);
        free(s);
        return NULL;
    }
    s->next = ctx->head;
    if (ctx->head)
        ctx->head->prev = s;
    ctx->head = s;
    ctx->active++;
    ctx->total++;
    s->started = loop_now(ctx->loop);
    log_info("sid=%s event=connect peer=%s connections=%zu", s->sid, s->peer, ctx->active);
    loop_timer_start(ctx->loop, &s->idle_timer, ctx->idle_timeout_ms);

    const char *text = fail_text && *fail_text ? fail_text : fail_default_text(fail_code);
    if (fail_code == 421) {
        log_info("sid=%s event=fail_applied mode=fail_mode code=421 at=greeting", s->sid);
        s->close_reason = "fail_mode";
        session_reply(s, AFTER_CLOSE, "421 %s %s", fail_enhanced(421), text);
        return s;
    }
    if (fail_code) {
        s->fail_code = fail_code;
        sx_strlcpy(s->fail_text, text, sizeof(s->fail_text));
        log_info("sid=%s event=fail_applied mode=fail_mode code=%u at=rcpt", s->sid, fail_code);
    }
    session_reply(s, AFTER_NONE, "220 %s ESMTP Sendarix sandbox", ctx->hostname);
    return s;
}

void session_fail_all(session_ctx_t *ctx, unsigned code, const char *text)
{
    const char *t = text && *text ? text : fail_default_text(code);
    for (session_t *s = ctx->head; s; s = s->next) {
        if (s->closed || s->close_reason)
            continue;
        if (code == 421) {
            /* every connection fails: the ones already open too (kept connections) */
            log_info("sid=%s event=fail_applied mode=fail_mode code=421 at=open_session", s->sid);
            s->close_reason = "fail_mode";
            session_reply(s, AFTER_CLOSE, "421 %s %s", fail_enhanced(421), t);
            continue;
        }
        s->fail_code = code;
        sx_strlcpy(s->fail_text, code ? t : "", sizeof(s->fail_text));
    }
}

void session_close_all(session_ctx_t *ctx)
{
    while (ctx->head) {
        session_t *s = ctx->head;
        if (!s->closed) {
            s->close_reason = "shutdown";
            session_end(s, "shutdown");
        }
        session_free(s);
    }
}
