/*
 * session_test: the SMTP client state machine against a scripted server in
 * the same loop (on 127.0.0.1): MAIL, RCPTs and DATA leave in one write
 * when PIPELINING is offered and one at a time when not; HELO follows a 5xx
 * to EHLO; a 421 greeting fails the session before any transaction;
 * required TLS without STARTTLS never sends MAIL; no accepted recipient
 * means no DATA without pipelining and no body with it (a pipelined DATA
 * answered 354 anyway gets a lone dot, and the next transaction starts with
 * RSET); the body arrives dot-stuffed; a silent server times out with 4.4.2;
 * SMTPUTF8 mail to a server without it bounces without MAIL; a 2xx to DATA
 * is never taken for delivery; a kept session's next transaction starts
 * with RSET (pipelined with MAIL, RCPT and DATA when offered, alone when not); a
 * kept session whose server refuses RSET fails as stale with nothing
 * decided; a session connects from the source address it is given.
 * Implicit TLS: the handshake comes before the greeting (verified for
 * required TLS), STARTTLS is never sent on it, a failed handshake is a TLS
 * failure with no plaintext retry; AUTH LOGIN answers the two 334s with the
 * base64 username and password when PLAIN is not offered, PLAIN stays
 * preferred, a refusal at any step defers 4.7.0 naming the host, and the
 * password is in no log line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../net/test_cert.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/loop.h"
#include "delivery_reason.h"
#include "delivery_session.h"
#include "mail/smtp_data.h"
#include "net/conn.h"
#include "net/sock.h"
#include "net/tls.h"

#include <fcntl.h>

/* One step of the script: when a line starting with expect arrives, send reply. */
typedef struct step {
    const char *expect; /* "." stands for the end of data */
    const char *reply;  /* NULL: say nothing */
} step_t;

typedef struct server {
    loop_t *loop;
    int lfd;
    unsigned port;
    conn_t *conn;
    const char *greeting;
    const step_t *script;
    size_t next;
    int in_data;
    buf_t seen;     /* every line received, CRLF kept */
    buf_t data;     /* the raw DATA bytes */
    int mail_chunk_had_rcpt;
    int mail_chunk_had_data;
    int rset_chunk_had_mail;
    int mismatch;
    char peer[SOCK_ADDR_MAX];
} server_t;

typedef struct result {
    int ready, failed, done;
    session_fail_t kind;
    dlv_reply_t reply;
} result_t;

static server_t srv;
static result_t res;
static session_t *sess;
static session_txn_t txn;
static session_rcpt_t rcpts[4];
/* a second transaction on the same session, as a kept connection would run */
static int second_txn;
static session_rcpt_t first_rcpts[4];
static loop_timer_t again;
/* connect from this address when set */
static const char *source_ip;
/* implicit TLS: the server starts TLS at accept and greets inside it */
static int implicit_tls;
static SSL_CTX *server_ctx, *client_ctx;
static const char *tls_host; /* the name the client checks ("127.0.0.1" when NULL) */
static const char *auth_user, *auth_pass;

static void srv_on_data(conn_t *c, void *arg)
{
    (void)arg;
    buf_t *in = conn_in(c);
    const char *chunk = buf_head(in);
    size_t chunk_len = buf_used(in);
    if (memmem(chunk, chunk_len, "MAIL FROM", 9) && memmem(chunk, chunk_len, "RCPT TO", 7))
        srv.mail_chunk_had_rcpt = 1;
    if (memmem(chunk, chunk_len, "MAIL FROM", 9) && memmem(chunk, chunk_len, "\r\nDATA\r\n", 8))
        srv.mail_chunk_had_data = 1;
    if (memmem(chunk, chunk_len, "RSET", 4) && memmem(chunk, chunk_len, "MAIL FROM", 9) &&
        memmem(chunk, chunk_len, "RCPT TO", 7))
        srv.rset_chunk_had_mail = 1;
    for (;;) {
        if (srv.in_data) {
            /* a body is consumed whole, so the buffer starts where it does */
            size_t n;
            if (buf_used(in) >= 3 && memcmp(buf_head(in), ".\r\n", 3) == 0) {
                n = 3; /* empty */
            } else {
                const char *end = memmem(buf_head(in), buf_used(in), "\r\n.\r\n", 5);
                if (end == NULL)
                    return;
                n = (size_t)(end - buf_head(in)) + 5;
            }
            buf_append(&srv.data, buf_head(in), n);
            buf_consume(in, n);
            srv.in_data = 0;
            buf_append_str(&srv.seen, ".\r\n");
            const step_t *st = &srv.script[srv.next++];
            if (strcmp(st->expect, ".") != 0)
                srv.mismatch = 1;
            if (st->reply)
                conn_printf(c, "%s\r\n", st->reply);
            continue;
        }
        long lf = buf_find_lf(in, 0);
        if (lf < 0)
            return;
        char line[1200];
        size_t n = (size_t)lf + 1;
        snprintf(line, sizeof(line), "%.*s", (int)n, buf_head(in));
        buf_consume(in, n);
        buf_append_str(&srv.seen, line);
        const step_t *st = &srv.script[srv.next];
        if (st->expect == NULL || strncmp(line, st->expect, strlen(st->expect)) != 0) {
            srv.mismatch = 1;
            conn_printf(c, "500 5.5.1 unexpected\r\n");
            continue;
        }
        srv.next++;
        if (st->reply)
            conn_printf(c, "%s\r\n", st->reply);
        if (st->reply && strncmp(st->reply, "354", 3) == 0)
            srv.in_data = 1;
        /* a 221 out of step closes at once; after QUIT the client closes
         * first, so that the run ends only once its session has freed
         * itself (a loop stopped before would leave it allocated) */
        if (st->reply && strncmp(st->reply, "221", 3) == 0 && strcmp(st->expect, "QUIT") != 0)
            conn_close_after_flush(c);
    }
}

static void srv_on_close(conn_t *c, int err, void *arg)
{
    (void)c;
    (void)err;
    (void)arg;
    conn_destroy(&srv.conn);
}

/* The server side of implicit TLS: greet once the handshake is done. */
static void srv_on_tls(conn_t *c, int ok, const char *why, void *arg)
{
    (void)why;
    (void)arg;
    if (ok)
        conn_printf(c, "%s\r\n", srv.greeting);
    else
        conn_destroy(&srv.conn);
}

static const conn_handlers_t srv_handlers = {
    .on_data = srv_on_data, .on_close = srv_on_close, .on_tls = srv_on_tls};

static void srv_accept(loop_t *loop, int fd, unsigned events, void *arg)
{
    (void)events;
    (void)arg;
    sock_addr_t peer;
    int cfd = sock_accept(fd, &peer);
    if (cfd < 0)
        return;
    sock_addr_ip(&peer, srv.peer, sizeof(srv.peer));
    srv.conn = conn_new(loop, cfd, 0, 0, &srv_handlers, NULL);
    if (implicit_tls && server_ctx)
        assert_int_equal(conn_tls_accept(srv.conn, server_ctx), 0);
    else
        conn_printf(srv.conn, "%s\r\n", srv.greeting);
}

static void on_ready(session_t *s, void *arg)
{
    (void)arg;
    res.ready = 1;
    session_start(s, &txn);
}

static void on_failed(session_t *s, session_fail_t kind, const dlv_reply_t *r, void *arg)
{
    (void)arg;
    res.failed = 1;
    res.kind = kind;
    res.reply = *r;
    session_destroy(&sess);
    (void)s;
    loop_stop(srv.loop);
}

static void start_again(loop_t *loop, void *arg)
{
    (void)loop;
    (void)arg;
    session_start(sess, &txn);
}

static void on_txn_done(session_t *s, void *arg)
{
    (void)arg;
    if (second_txn) {
        second_txn = 0;
        memcpy(first_rcpts, rcpts, sizeof(rcpts));
        assert_true(session_reusable(s));
        assert_int_equal(session_txn_count(s), 1);
        loop_timer_start(srv.loop, &again, 0); /* later, from the loop, like a new task */
        return;
    }
    res.done = 1;
    session_quit(&sess);
}

static const session_handlers_t handlers = {
    .on_ready = on_ready, .on_failed = on_failed, .on_txn_done = on_txn_done};
/* other handlers for the next run, when set */
static const session_handlers_t *run_with_handlers;

static void give_up(loop_t *loop, void *arg)
{
    (void)arg;
    loop_stop(loop);
}

/* After the transaction, wait for the QUIT exchange to end (the client closes). */
static void poll_end(loop_t *loop, void *arg)
{
    loop_timer_t *t = arg;
    if (res.failed || (res.done && srv.conn == NULL)) {
        loop_stop(loop);
        return;
    }
    loop_timer_start(loop, t, 5);
}

/* Run one session against the script; tls policy and body given. */
static void run(const char *greeting, const step_t *script, tls_policy_t tls, const char *body,
                size_t nrcpt, const char *const *addrs, int smtputf8, uint64_t cmd_timeout)
{
    memset(&srv, 0, sizeof(srv));
    memset(&res, 0, sizeof(res));
    memset(rcpts, 0, sizeof(rcpts));
    srv.loop = loop_new();
    srv.greeting = greeting;
    srv.script = script;
    buf_init(&srv.seen, 0);
    buf_init(&srv.data, 0);
    char err[128];
    srv.lfd = sock_listen("127.0.0.1", 0, 16, err, sizeof(err));
    assert_true(srv.lfd >= 0);
    sock_addr_t local;
    sock_local(srv.lfd, &local);
    srv.port = sock_addr_port(&local);
    loop_fd_add(srv.loop, srv.lfd, LOOP_READ, srv_accept, NULL);

    for (size_t i = 0; i < nrcpt; i++)
        rcpts[i].address = addrs[i];
    memset(&txn, 0, sizeof(txn));
    txn.mail_from = "a@example.test";
    txn.smtputf8 = smtputf8;
    txn.body = body;
    txn.body_len = strlen(body);
    txn.rcpts = rcpts;
    txn.nrcpt = nrcpt;

    session_params_t p;
    memset(&p, 0, sizeof(p));
    assert_int_equal(sock_addr_parse("127.0.0.1", srv.port, &p.addr), 0);
    snprintf(p.host, sizeof(p.host), "%s", tls_host ? tls_host : "127.0.0.1");
    p.helo = "relay.example.test";
    p.tls = tls;
    p.implicit_tls = implicit_tls;
    p.tls_ctx = client_ctx;
    p.auth_username = auth_user;
    p.auth_password = auth_pass;
    p.connect_timeout_ms = 2000;
    p.command_timeout_ms = cmd_timeout;
    p.data_timeout_ms = cmd_timeout;
    p.log_ids = "msg=test task=1";
    if (source_ip) {
        assert_int_equal(sock_addr_parse(source_ip, 0, &p.src), 0);
        p.has_src = 1;
    }
    loop_timer_init(&again, start_again, NULL);
    sess = session_new(srv.loop, &p, run_with_handlers ? run_with_handlers : &handlers, NULL);
    assert_non_null(sess);

    loop_timer_t guard, poll;
    loop_timer_init(&guard, give_up, NULL);
    loop_timer_start(srv.loop, &guard, 5000);
    loop_timer_init(&poll, poll_end, &poll);
    loop_timer_start(srv.loop, &poll, 5);
    loop_run(srv.loop);
    loop_timer_stop(srv.loop, &guard);
    loop_timer_stop(srv.loop, &poll);
    loop_timer_stop(srv.loop, &again);
    session_destroy(&sess);
    conn_destroy(&srv.conn);
    loop_fd_remove(srv.loop, srv.lfd);
    close(srv.lfd);
    buf_append(&srv.seen, "", 1); /* terminate for strstr */
    buf_append(&srv.data, "", 1);
}

static void finish(void)
{
    buf_free(&srv.seen);
    buf_free(&srv.data);
    loop_destroy(&srv.loop);
}

static void test_pipelined_delivery(void **state)
{
    (void)state;
    static const step_t script[] = {
        {"EHLO relay.example.test", "250-mx\r\n250-PIPELINING\r\n250-SIZE 100000\r\n250 8BITMIME"},
        {"MAIL FROM:<a@example.test> SIZE=", "250 2.1.0 ok"},
        {"RCPT TO:<one@example.org>", "250 2.1.5 ok"},
        {"RCPT TO:<two@example.org>", "550 5.1.1 no such user"},
        {"DATA", "354 go"},
        {".", "250 2.0.0 queued as X"},
        {"QUIT", "221 bye"},
        {NULL, NULL},
    };
    const char *addrs[] = {"one@example.org", "two@example.org"};
    const char *body = "Subject: t\r\n\r\n.starts with a dot\r\n.\r\nend\r\n";
    run("220 mx ESMTP", script, POLICY_TLS_OPPORTUNISTIC, body, 2, addrs, 0, 2000);
    assert_true(res.ready);
    assert_true(res.done);
    assert_false(res.failed);
    assert_false(srv.mismatch);
    assert_true(srv.mail_chunk_had_rcpt); /* MAIL, RCPTs and DATA in one write */
    assert_true(srv.mail_chunk_had_data);
    assert_int_equal(rcpts[0].outcome, OUTCOME_DELIVERED);
    assert_int_equal(rcpts[0].reply.code, 250);
    assert_string_equal(rcpts[0].reply.text, "queued as X");
    assert_int_equal(rcpts[1].outcome, OUTCOME_BOUNCED);
    assert_string_equal(rcpts[1].reply.enhanced, "5.1.1");
    assert_non_null(strstr(buf_head(&srv.seen), "SIZE=42"));
    assert_string_equal(buf_head(&srv.data),
                        "Subject: t\r\n\r\n..starts with a dot\r\n..\r\nend\r\n.\r\n");
    assert_int_equal(srv.next, 7); /* QUIT was sent */
    finish();
}

/* Deliver body over a plain pipelining server; the DATA bytes must be data_stuff's. */
static void check_stuffed(const char *body)
{
    static const step_t script[] = {
        {"EHLO", "250-mx\r\n250 PIPELINING"},
        {"MAIL", "250 ok"},
        {"RCPT", "250 ok"},
        {"DATA", "354 go"},
        {".", "250 2.0.0 ok"},
        {"QUIT", "221 bye"},
        {NULL, NULL},
    };
    const char *addrs[] = {"one@example.org"};
    run("220 mx", script, POLICY_TLS_NONE, body, 1, addrs, 0, 4000);
    assert_true(res.done);
    assert_false(srv.mismatch);
    buf_t want;
    buf_init(&want, 0);
    assert_int_equal(data_stuff(body, strlen(body), &want), 0);
    assert_int_equal(buf_used(&srv.data), buf_used(&want) + 1); /* + the test's NUL */
    assert_memory_equal(buf_head(&srv.data), buf_head(&want), buf_used(&want));
    buf_free(&want);
    finish();
}

/* Dots at the start, at the end, after bare LF (not a line start) and after CRLF. */
static void test_body_stuffing_edges(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        ".", "x", ".\r\n", "a\r\n.", "..x\r\n", "a\n.b\r\n", "a\r.b", "\r\n.\r\n",
        "a\r\n.\r\n.\r\n..\r\nz", "no end of line", "ends with CR\r", "ends with LF\n",
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++)
        check_stuffed(bodies[i]);
}

/*
 * A body of several chunks, larger than the connection may hold at once (so
 * the rest goes from the pump timer), with line-starting dots right at and
 * around each chunk boundary (and the CRLF before them split by it).
 */
static void test_body_stuffing_large(void **state)
{
    (void)state;
    size_t len = 3 * SESSION_BODY_HIGH + 777;
    char *body = malloc(len + 1);
    assert_non_null(body);
    for (size_t i = 0; i < len; i++)
        body[i] = (char)('a' + i % 26);
    for (size_t i = 70; i + 2 < len; i += 71)
        memcpy(body + i, "\r\n", 2);
    /* chunk boundary j gets its dot at j's offset - 2, - 1, 0 or + 1, and another 3 later */
    size_t j = 0;
    for (size_t k = SESSION_BODY_CHUNK; k + 8 < len; k += SESSION_BODY_CHUNK, j++) {
        size_t dot = k - 2 + j % 4;
        memcpy(body + dot - 2, "\r\n.", 3);
        memcpy(body + dot + 1, "\r\n.", 3);
    }
    body[len] = '\0';
    check_stuffed(body);
    free(body);
}

static void test_helo_fallback_no_pipelining(void **state)
{
    (void)state;
    static const step_t script[] = {
        {"EHLO", "502 5.5.1 what"},
        {"HELO relay.example.test", "250 mx"},
        {"MAIL FROM:<a@example.test>\r", "250 ok"},
        {"RCPT TO:<one@example.org>", "451 4.3.0 try later"},
        {"RCPT TO:<two@example.org>", "250 ok"},
        {"DATA", "354 go"},
        {".", "452 4.3.1 full"},
        {"QUIT", "221 bye"},
        {NULL, NULL},
    };
    const char *addrs[] = {"one@example.org", "two@example.org"};
    run("220 mx", script, POLICY_TLS_OPPORTUNISTIC, "x\r\n", 2, addrs, 0, 2000);
    assert_true(res.done);
    assert_false(srv.mismatch);
    assert_false(srv.mail_chunk_had_rcpt); /* one command at a time */
    assert_int_equal(rcpts[0].outcome, OUTCOME_DEFERRED);
    assert_int_equal(rcpts[0].reply.code, 451);
    assert_int_equal(rcpts[1].outcome, OUTCOME_DEFERRED);
    assert_int_equal(rcpts[1].reply.code, 452); /* the final reply applies to the accepted */
    finish();
}

static void test_greeting_421(void **state)
{
    (void)state;
    static const step_t script[] = {{NULL, NULL}};
    const char *addrs[] = {"one@example.org"};
    run("421 4.3.2 busy", script, POLICY_TLS_NONE, "x\r\n", 1, addrs, 0, 2000);
    assert_true(res.failed);
    assert_false(res.ready);
    assert_int_equal(res.kind, SESSION_FAIL_REMOTE);
    assert_int_equal(res.reply.code, 421);
    assert_string_equal(res.reply.enhanced, "4.3.2");
    finish();
}

static void test_required_tls_not_offered(void **state)
{
    (void)state;
    static const step_t script[] = {
        {"EHLO", "250-mx\r\n250 PIPELINING"},
        {NULL, NULL},
    };
    const char *addrs[] = {"one@example.org"};
    run("220 mx", script, POLICY_TLS_REQUIRED, "x\r\n", 1, addrs, 0, 2000);
    assert_true(res.failed);
    assert_int_equal(res.kind, SESSION_FAIL_TLS);
    assert_int_equal(res.reply.code, 451);
    assert_string_equal(res.reply.enhanced, "4.7.5");
    assert_null(strstr(buf_head(&srv.seen), "MAIL"));
    finish();
}

static void test_no_recipient_no_data(void **state)
{
    (void)state;
    static const step_t script[] = {
        {"EHLO", "250 mx"},
        {"MAIL", "250 ok"},
        {"RCPT", "550 5.1.1 no"},
        {"QUIT", "221 bye"},
        {NULL, NULL},
    };
    const char *addrs[] = {"one@example.org"};
    run("220 mx", script, POLICY_TLS_NONE, "x\r\n", 1, addrs, 0, 2000);
    assert_true(res.done);
    assert_false(srv.mismatch);
    assert_int_equal(rcpts[0].outcome, OUTCOME_BOUNCED);
    assert_null(strstr(buf_head(&srv.seen), "DATA"));
    finish();
}

/* Pipelined, DATA goes with the RCPT that fails; its refusal is expected and
 * the recipient's outcome stays the RCPT reply. */
static void test_no_recipient_pipelined_data_refused(void **state)
{
    (void)state;
    static const step_t script[] = {
        {"EHLO", "250-mx\r\n250 PIPELINING"},
        {"MAIL", "250 ok"},
        {"RCPT", "550 5.1.1 no"},
        {"DATA", "554 5.5.1 no valid recipients"},
        {"QUIT", "221 bye"},
        {NULL, NULL},
    };
    const char *addrs[] = {"one@example.org"};
    run("220 mx", script, POLICY_TLS_NONE, "x\r\n", 1, addrs, 0, 2000);
    assert_true(res.done);
    assert_false(res.failed);
    assert_false(srv.mismatch);
    assert_int_equal(rcpts[0].outcome, OUTCOME_BOUNCED);
    assert_int_equal(rcpts[0].reply.code, 550);
    assert_string_equal(rcpts[0].reply.enhanced, "5.1.1");
    assert_string_equal(buf_head(&srv.data), ""); /* no body went */
    assert_int_equal(srv.next, 5);                 /* QUIT was sent */
    finish();
}

/* A server that answers the pipelined DATA with 354 although it refused
 * every RCPT gets a lone dot, not the body; the kept session's next
 * transaction starts with RSET and delivers. */
static void test_no_recipient_pipelined_data_354(void **state)
{
    (void)state;
    static const step_t script[] = {
        {"EHLO", "250-mx\r\n250 PIPELINING"},
        {"MAIL", "250 ok"},
        {"RCPT", "550 5.1.1 no"},
        {"DATA", "354 go"},
        {".", "554 5.5.1 empty"},
        {"RSET", "250 ok"},
        {"MAIL", "250 ok"},
        {"RCPT", "250 ok"},
        {"DATA", "354 go"},
        {".", "250 2.0.0 second"},
        {"QUIT", "221 bye"},
        {NULL, NULL},
    };
    const char *addrs[] = {"one@example.org"};
    second_txn = 1;
    run("220 mx", script, POLICY_TLS_NONE, "x\r\n", 1, addrs, 0, 2000);
    assert_true(res.done);
    assert_false(res.failed);
    assert_false(srv.mismatch);
    assert_int_equal(first_rcpts[0].outcome, OUTCOME_BOUNCED);
    assert_int_equal(first_rcpts[0].reply.code, 550); /* not the dot's 554 */
    assert_int_equal(rcpts[0].outcome, OUTCOME_DELIVERED);
    assert_string_equal(rcpts[0].reply.text, "second");
    assert_string_equal(buf_head(&srv.data), ".\r\nx\r\n.\r\n"); /* the lone dot, then the body */
    assert_int_equal(srv.next, 11);
    finish();
}

static void test_mail_refused(void **state)
{
    (void)state;
    static const step_t script[] = {
        {"EHLO", "250-mx\r\n250 PIPELINING"},
        {"MAIL", "553 5.7.1 sender refused"},
        {"RCPT", "503 5.5.1 need MAIL"},
        {"RCPT", "503 5.5.1 need MAIL"},
        {"DATA", "503 5.5.1 need MAIL"},
        {"QUIT", "221 bye"},
        {NULL, NULL},
    };
    const char *addrs[] = {"one@example.org", "two@example.org"};
    run("220 mx", script, POLICY_TLS_NONE, "x\r\n", 2, addrs, 0, 2000);
    assert_true(res.done);
    for (size_t i = 0; i < 2; i++) {
        /* the MAIL reply, not the 503s that follow it, is each recipient's outcome */
        assert_int_equal(rcpts[i].outcome, OUTCOME_BOUNCED);
        assert_int_equal(rcpts[i].reply.code, 553);
    }
    assert_false(srv.mismatch);
    assert_string_equal(buf_head(&srv.data), ""); /* no body went */
    finish();
}

static void test_timeout_waiting_for_data_reply(void **state)
{
    (void)state;
    static const step_t script[] = {
        {"EHLO", "250 mx"},
        {"MAIL", "250 ok"},
        {"RCPT", "250 ok"},
        {"DATA", NULL},
        {NULL, NULL},
    };
    const char *addrs[] = {"one@example.org"};
    run("220 mx", script, POLICY_TLS_NONE, "x\r\n", 1, addrs, 0, 200);
    assert_true(res.done);
    assert_int_equal(rcpts[0].outcome, OUTCOME_DEFERRED);
    assert_int_equal(rcpts[0].reply.code, 451);
    assert_string_equal(rcpts[0].reply.enhanced, "4.4.2");
    assert_string_equal(rcpts[0].reply.text, "timeout waiting for DATA reply from 127.0.0.1");
    finish();
}

static void test_smtputf8_not_offered(void **state)
{
    (void)state;
    static const step_t script[] = {
        {"EHLO", "250-mx\r\n250 8BITMIME"},
        {"QUIT", "221 bye"},
        {NULL, NULL},
    };
    const char *addrs[] = {"one@example.org"};
    run("220 mx", script, POLICY_TLS_NONE, "x\r\n", 1, addrs, 1, 2000);
    assert_true(res.done);
    assert_int_equal(rcpts[0].outcome, OUTCOME_BOUNCED);
    assert_int_equal(rcpts[0].reply.code, 550);
    assert_string_equal(rcpts[0].reply.enhanced, "5.6.7");
    assert_null(strstr(buf_head(&srv.seen), "MAIL"));
    finish();
}

static void test_data_answered_out_of_step(void **state)
{
    (void)state;
    static const step_t script[] = {
        {"EHLO", "250 mx"},
        {"MAIL", "250 ok"},
        {"RCPT", "250 ok"},
        {"DATA", "221 closing"}, /* the script closes after a 221 */
        {NULL, NULL},
    };
    const char *addrs[] = {"one@example.org"};
    run("220 mx", script, POLICY_TLS_NONE, "x\r\n", 1, addrs, 0, 2000);
    assert_true(res.done);
    /* a 2xx to DATA is not 354: the body never went, so never "delivered" */
    assert_int_equal(rcpts[0].outcome, OUTCOME_DEFERRED);
    assert_int_equal(rcpts[0].reply.code, 451);
    assert_string_equal(rcpts[0].reply.enhanced, "4.4.2");
    assert_non_null(strstr(rcpts[0].reply.text, "unexpected DATA reply"));
    finish();
}

static void test_second_transaction_rset_pipelined(void **state)
{
    (void)state;
    static const step_t script[] = {
        {"EHLO", "250-mx\r\n250 PIPELINING"},
        {"MAIL FROM:<a@example.test>", "250 ok"},
        {"RCPT TO:<one@example.org>", "250 ok"},
        {"DATA", "354 go"},
        {".", "250 2.0.0 first"},
        {"RSET", "250 2.0.0 reset"},
        {"MAIL FROM:<a@example.test>", "250 ok"},
        {"RCPT TO:<one@example.org>", "250 ok"},
        {"DATA", "354 go"},
        {".", "250 2.0.0 second"},
        {"QUIT", "221 bye"},
        {NULL, NULL},
    };
    const char *addrs[] = {"one@example.org"};
    second_txn = 1;
    run("220 mx", script, POLICY_TLS_NONE, "x\r\n", 1, addrs, 0, 2000);
    assert_true(res.done);
    assert_false(res.failed);
    assert_false(srv.mismatch);
    assert_true(srv.rset_chunk_had_mail); /* RSET, MAIL, RCPT and DATA in one write */
    assert_string_equal(first_rcpts[0].reply.text, "first");
    assert_int_equal(rcpts[0].outcome, OUTCOME_DELIVERED);
    assert_string_equal(rcpts[0].reply.text, "second");
    assert_int_equal(srv.next, 11);
    finish();
}

static void test_second_transaction_rset_alone(void **state)
{
    (void)state;
    static const step_t script[] = {
        {"EHLO", "250 mx"},
        {"MAIL", "250 ok"},
        {"RCPT", "550 5.1.1 no"}, /* nobody accepted: the session stays usable after RSET */
        {"RSET", "250 ok"},
        {"MAIL", "250 ok"},
        {"RCPT", "250 ok"},
        {"DATA", "354 go"},
        {".", "250 2.0.0 second"},
        {"QUIT", "221 bye"},
        {NULL, NULL},
    };
    const char *addrs[] = {"one@example.org"};
    second_txn = 1;
    run("220 mx", script, POLICY_TLS_NONE, "x\r\n", 1, addrs, 0, 2000);
    assert_true(res.done);
    assert_false(srv.mismatch);
    assert_false(srv.rset_chunk_had_mail); /* no PIPELINING: MAIL waits for RSET's reply */
    assert_int_equal(first_rcpts[0].outcome, OUTCOME_BOUNCED);
    assert_int_equal(rcpts[0].outcome, OUTCOME_DELIVERED);
    finish();
}

static void test_kept_session_stale(void **state)
{
    (void)state;
    static const step_t script[] = {
        {"EHLO", "250-mx\r\n250 PIPELINING"},
        {"MAIL", "250 ok"},
        {"RCPT", "250 ok"},
        {"DATA", "354 go"},
        {".", "250 2.0.0 first"},
        {"RSET", "421 4.4.2 idle too long"},
        {"MAIL", NULL},
        {"RCPT", NULL},
        {"DATA", NULL},
        {NULL, NULL},
    };
    const char *addrs[] = {"one@example.org"};
    second_txn = 1;
    run("220 mx", script, POLICY_TLS_NONE, "x\r\n", 1, addrs, 0, 2000);
    assert_true(res.failed);
    assert_int_equal(res.kind, SESSION_FAIL_STALE);
    /* nothing was decided for the second message: a new connection can carry it */
    assert_int_equal(rcpts[0].state, RCPT_PENDING);
    const char *second = strstr(buf_head(&srv.seen), "RSET");
    assert_non_null(second);
    assert_string_equal(buf_head(&srv.data), "x\r\n.\r\n"); /* no second body */
    finish();
}

static void test_source_address(void **state)
{
    (void)state;
    static const step_t script[] = {
        {"EHLO", "250 mx"},
        {"MAIL", "250 ok"},
        {"RCPT", "250 ok"},
        {"DATA", "354 go"},
        {".", "250 ok"},
        {"QUIT", "221 bye"},
        {NULL, NULL},
    };
    const char *addrs[] = {"one@example.org"};
    source_ip = "127.0.0.5";
    run("220 mx", script, POLICY_TLS_NONE, "x\r\n", 1, addrs, 0, 2000);
    source_ip = NULL;
    assert_true(res.done);
    assert_string_equal(srv.peer, "127.0.0.5");
    assert_int_equal(rcpts[0].outcome, OUTCOME_DELIVERED);
    finish();
}

/* ---- implicit TLS and AUTH LOGIN ---- */

static test_cert_t cert;
static char tls_version[32];
static int tls_verified;

static int tls_setup(void **state)
{
    (void)state;
    char err[256];
    if (test_cert_make(&cert) < 0)
        return -1;
    server_ctx = tls_server_ctx(cert.cert, cert.key, err, sizeof(err));
    client_ctx = tls_client_ctx(cert.cert, err, sizeof(err)); /* trusts the test certificate */
    return server_ctx && client_ctx ? 0 : -1;
}

static int tls_teardown(void **state)
{
    (void)state;
    tls_ctx_free(&server_ctx);
    tls_ctx_free(&client_ctx);
    test_cert_remove(&cert);
    implicit_tls = 0;
    tls_host = NULL;
    auth_user = auth_pass = NULL;
    return 0;
}

/* TLS facts of the session, read when it is ready (before QUIT frees it). */
static void on_ready_tls(session_t *s, void *arg)
{
    (void)arg;
    snprintf(tls_version, sizeof(tls_version), "%s", session_tls_version(s));
    tls_verified = session_tls_verified(s);
    res.ready = 1;
    session_start(s, &txn);
}

/* Run with stderr (the log) captured into out; debug lines included. */
static void run_logged(const step_t *script, tls_policy_t tls, buf_t *out)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/log.txt", cert.dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    log_set_level(LOG_DEBUG);
    const char *addrs[] = {"one@example.org"};
    run("220 smtp.example.net ESMTP", script, tls, "x\r\n", 1, addrs, 0, 2000);
    log_set_level(LOG_INFO);
    dup2(saved, STDERR_FILENO);
    close(saved);
    buf_init(out, 0);
    char chunk[4096];
    ssize_t n;
    lseek(fd, 0, SEEK_SET);
    while ((n = read(fd, chunk, sizeof(chunk))) > 0)
        buf_append(out, chunk, (size_t)n);
    buf_append(out, "", 1);
    close(fd);
}

static const session_handlers_t tls_handlers = {
    .on_ready = on_ready_tls, .on_failed = on_failed, .on_txn_done = on_txn_done};

static void test_implicit_tls_auth_login(void **state)
{
    (void)state;
    /* STARTTLS is offered on purpose: the client is already in TLS and must not send it */
    static const step_t script[] = {
        {"EHLO relay.example.test", "250-smtp.example.net\r\n250-STARTTLS\r\n250 AUTH LOGIN"},
        {"AUTH LOGIN\r", "334 VXNlcm5hbWU6"},
        {"YWxpY2VAZXhhbXBsZS50ZXN0\r", "334 UGFzc3dvcmQ6"}, /* alice@example.test */
        {"czNjcjN0LXAhc3M=\r", "235 2.7.0 ok"},             /* s3cr3t-p!ss */
        {"MAIL FROM:<a@example.test>", "250 ok"},
        {"RCPT TO:<one@example.org>", "250 ok"},
        {"DATA", "354 go"},
        {".", "250 2.0.0 queued"},
        {"QUIT", "221 bye"},
        {NULL, NULL},
    };
    implicit_tls = 1;
    tls_host = TEST_CERT_NAME;
    auth_user = "alice@example.test";
    auth_pass = "s3cr3t-p!ss";
    tls_version[0] = '\0';
    tls_verified = 0;
    buf_t log;
    /* required: the chain and the name are checked, as for STARTTLS */
    run_with_handlers = &tls_handlers;
    run_logged(script, POLICY_TLS_REQUIRED, &log);
    run_with_handlers = NULL;
    assert_false(res.failed);
    assert_true(res.done);
    assert_false(srv.mismatch);
    assert_int_equal(srv.next, 9);
    assert_int_equal(rcpts[0].outcome, OUTCOME_DELIVERED);
    assert_null(strstr(buf_head(&srv.seen), "STARTTLS"));
    assert_true(strncmp(tls_version, "TLSv1.", 6) == 0);
    assert_true(tls_verified);
    /* neither the password nor its base64 is logged; the steps are */
    assert_null(strstr(buf_head(&log), "s3cr3t-p!ss"));
    assert_null(strstr(buf_head(&log), "czNjcjN0LXAhc3M="));
    assert_non_null(strstr(buf_head(&log), "cmd=\"(password)\""));
    assert_non_null(strstr(buf_head(&log), "event=auth_ok"));
    assert_non_null(strstr(buf_head(&log), "mech=LOGIN"));
    buf_free(&log);
    finish();
}

static void test_plain_preferred_over_login(void **state)
{
    (void)state;
    static const step_t script[] = {
        {"EHLO", "250-smtp.example.net\r\n250 AUTH LOGIN PLAIN"},
        /* "\0alice@example.test\0s3cr3t-p!ss" */
        {"AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzM2NyM3QtcCFzcw==\r", "235 2.7.0 ok"},
        {"MAIL", "250 ok"},
        {"RCPT", "250 ok"},
        {"DATA", "354 go"},
        {".", "250 ok"},
        {"QUIT", "221 bye"},
        {NULL, NULL},
    };
    implicit_tls = 1;
    tls_host = TEST_CERT_NAME;
    auth_user = "alice@example.test";
    auth_pass = "s3cr3t-p!ss";
    buf_t log;
    run_logged(script, POLICY_TLS_OPPORTUNISTIC, &log);
    assert_true(res.done);
    assert_false(srv.mismatch);
    assert_null(strstr(buf_head(&srv.seen), "AUTH LOGIN"));
    assert_null(strstr(buf_head(&log), "AGFsaWNlQGV4YW1wbGUudGVzdABzM2NyM3QtcCFzcw=="));
    buf_free(&log);
    finish();
}

/* A refusal at each step of AUTH LOGIN: deferred 4.7.0, host and reply named, no MAIL. */
static void test_auth_login_refused(void **state)
{
    (void)state;
    static const step_t at_command[] = {
        {"EHLO", "250-smtp.example.net\r\n250 AUTH=LOGIN"},
        {"AUTH LOGIN\r", "504 5.5.4 mechanism not enabled"},
        {NULL, NULL},
    };
    static const step_t at_password[] = {
        {"EHLO", "250-smtp.example.net\r\n250 AUTH LOGIN CRAM-MD5"},
        {"AUTH LOGIN\r", "334 VXNlcm5hbWU6"},
        {"YWxpY2VAZXhhbXBsZS50ZXN0\r", "334 UGFzc3dvcmQ6"},
        {"d3Jvbmc=\r", "535 5.7.8 Authentication credentials invalid"}, /* wrong */
        {NULL, NULL},
    };
    static const struct {
        const step_t *script;
        const char *pass;
        const char *reply;
    } cases[] = {
        {at_command, "s3cr3t-p!ss", "504 mechanism not enabled"},
        {at_password, "wrong", "535 Authentication credentials invalid"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        implicit_tls = 1;
        tls_host = TEST_CERT_NAME;
        auth_user = "alice@example.test";
        auth_pass = cases[i].pass;
        buf_t log;
        run_logged(cases[i].script, POLICY_TLS_REQUIRED, &log);
        assert_true(res.failed);
        assert_false(srv.mismatch);
        assert_int_equal(res.kind, SESSION_FAIL_REMOTE);
        assert_int_equal(res.reply.code, 451);
        assert_string_equal(res.reply.enhanced, "4.7.0");
        assert_non_null(strstr(res.reply.text, TEST_CERT_NAME));
        if (strstr(res.reply.text, cases[i].reply) == NULL)
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, res.reply.text, cases[i].reply);
        assert_string_equal(reason_of(&res.reply), REASON_CONFIG);
        assert_null(strstr(buf_head(&srv.seen), "MAIL"));
        assert_null(strstr(buf_head(&log), cases[i].pass));
        assert_non_null(strstr(buf_head(&log), "event=auth_failed"));
        buf_free(&log);
        finish();
    }
}

/* Required TLS on an implicit endpoint whose certificate names someone else: nothing sent. */
static void test_implicit_tls_wrong_name(void **state)
{
    (void)state;
    static const step_t script[] = {
        {"EHLO", "250 mx"},
        {NULL, NULL},
    };
    const char *addrs[] = {"one@example.org"};
    implicit_tls = 1;
    tls_host = "relay.example.net";
    auth_user = "alice@example.test";
    auth_pass = "s3cr3t-p!ss";
    run("220 mx", script, POLICY_TLS_REQUIRED, "x\r\n", 1, addrs, 0, 2000);
    assert_true(res.failed);
    assert_int_equal(res.kind, SESSION_FAIL_TLS);
    assert_string_equal(res.reply.enhanced, "4.7.5");
    assert_non_null(strstr(res.reply.text, "relay.example.net"));
    assert_string_equal(buf_head(&srv.seen), ""); /* not even EHLO */
    finish();
}

/* Implicit TLS to a server that talks plaintext: a TLS failure, never a plaintext retry. */
static void test_implicit_tls_to_plaintext_server(void **state)
{
    (void)state;
    static const step_t script[] = {
        {"EHLO", "250 mx"},
        {NULL, NULL},
    };
    const char *addrs[] = {"one@example.org"};
    implicit_tls = 1;
    SSL_CTX *keep = server_ctx;
    server_ctx = NULL; /* the server greets in plaintext at once */
    run("220 mx ESMTP", script, POLICY_TLS_OPPORTUNISTIC, "x\r\n", 1, addrs, 0, 2000);
    server_ctx = keep;
    assert_true(res.failed);
    assert_int_equal(res.kind, SESSION_FAIL_TLS);
    assert_string_equal(res.reply.enhanced, "4.7.5");
    assert_non_null(strstr(res.reply.text, "implicit TLS"));
    assert_null(strstr(buf_head(&srv.seen), "EHLO"));
    finish();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipelined_delivery),
        cmocka_unit_test(test_body_stuffing_edges),
        cmocka_unit_test(test_body_stuffing_large),
        cmocka_unit_test(test_helo_fallback_no_pipelining),
        cmocka_unit_test(test_greeting_421),
        cmocka_unit_test(test_required_tls_not_offered),
        cmocka_unit_test(test_no_recipient_no_data),
        cmocka_unit_test(test_no_recipient_pipelined_data_refused),
        cmocka_unit_test(test_no_recipient_pipelined_data_354),
        cmocka_unit_test(test_mail_refused),
        cmocka_unit_test(test_timeout_waiting_for_data_reply),
        cmocka_unit_test(test_smtputf8_not_offered),
        cmocka_unit_test(test_data_answered_out_of_step),
        cmocka_unit_test(test_second_transaction_rset_pipelined),
        cmocka_unit_test(test_second_transaction_rset_alone),
        cmocka_unit_test(test_kept_session_stale),
        cmocka_unit_test(test_source_address),
        cmocka_unit_test_setup_teardown(test_implicit_tls_auth_login, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_plain_preferred_over_login, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_auth_login_refused, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_implicit_tls_wrong_name, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_implicit_tls_to_plaintext_server, tls_setup,
                                        tls_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
