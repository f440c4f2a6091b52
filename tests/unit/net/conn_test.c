/*
 * conn_test: a listening socket and a connecting conn on loopback in one
 * loop: bytes both ways (small and large), close detection, close after
 * flush, read pause and resume, destroy from inside a callback; TLS after
 * STARTTLS (with plaintext sent behind STARTTLS discarded) and implicit,
 * TLS 1.2 and 1.3, large transfers over TLS, and certificate verification
 * that fails with a reason.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/loop.h"
#include "net/conn.h"
#include "net/sock.h"
#include "net/tls.h"
#include "test_cert.h"

typedef struct fx fx_t;

typedef struct side {
    fx_t *f;
    conn_t *c;
    buf_t got;
    int data_calls;
    int closed, close_err;
    size_t got_at_close;
    int connected, connect_err;
    int tls_done, tls_ok;
    char tls_why[256];
    char tls_version[32];
    char tls_cipher[64];
    int verified;
} side_t;

struct fx {
    loop_t *loop;
    int lfd;
    unsigned port;
    side_t srv, cli;
    loop_timer_t guard, timer;
    int timed_out;
    size_t srv_in_limit;

    void (*srv_accepted)(fx_t *f);
    void (*srv_data)(fx_t *f);
    void (*cli_connected)(fx_t *f);
    void (*cli_data)(fx_t *f);
    void (*on_closed)(fx_t *f, side_t *s);
    void (*on_tls)(fx_t *f, side_t *s);
    void (*on_timer)(fx_t *f);

    SSL_CTX *sctx, *cctx;
    const char *verify_name;
    int verify;
    uint8_t *pattern;
    size_t pattern_len;
    int stage;
    size_t in_before_tls, in_after_tls;
    int paused_ok;
    int destroy_on_tls_failure;
    int tls_rc;
};

static test_cert_t tc;

static int group_setup(void **state)
{
    (void)state;
    log_set_level(LOG_FATAL);
    return test_cert_make(&tc);
}

static int group_teardown(void **state)
{
    (void)state;
    test_cert_remove(&tc);
    return 0;
}

/* ---- plumbing shared by every case ---- */

static void take_all(side_t *s)
{
    buf_t *in = conn_in(s->c);
    buf_append(&s->got, buf_head(in), buf_used(in));
    buf_consume(in, buf_used(in));
}

static int got_has(side_t *s, const char *text)
{
    size_t n = strlen(text);
    const char *h = buf_head(&s->got);
    size_t u = buf_used(&s->got);
    for (size_t i = 0; i + n <= u; i++)
        if (memcmp(h + i, text, n) == 0)
            return 1;
    return 0;
}

static void h_data(conn_t *c, void *arg)
{
    side_t *s = arg;
    assert_ptr_equal(c, s->c);
    s->data_calls++;
    void (*hook)(fx_t *) = s == &s->f->srv ? s->f->srv_data : s->f->cli_data;
    if (hook)
        hook(s->f);
    else
        take_all(s);
}

static void h_close(conn_t *c, int err, void *arg)
{
    side_t *s = arg;
    assert_ptr_equal(c, s->c);
    s->closed = 1;
    s->close_err = err;
    s->got_at_close = buf_used(&s->got) + buf_used(conn_in(c));
    conn_destroy(&s->c);
    if (s->f->on_closed)
        s->f->on_closed(s->f, s);
}

static void h_connected(conn_t *c, int err, void *arg)
{
    side_t *s = arg;
    assert_ptr_equal(c, s->c);
    s->connected = 1;
    s->connect_err = err;
    if (err != 0)
        loop_stop(s->f->loop); /* nothing more can happen on this conn */
    else if (s->f->cli_connected)
        s->f->cli_connected(s->f);
}

static void h_tls(conn_t *c, int ok, const char *why, void *arg)
{
    side_t *s = arg;
    s->tls_done = 1;
    s->tls_ok = ok;
    snprintf(s->tls_why, sizeof(s->tls_why), "%s", why ? why : "");
    snprintf(s->tls_version, sizeof(s->tls_version), "%s", conn_tls_version(c));
    snprintf(s->tls_cipher, sizeof(s->tls_cipher), "%s", conn_tls_cipher(c));
    s->verified = conn_tls_verified(c);
    if (ok)
        assert_true(conn_is_tls(c));
    if (!ok && s->f->destroy_on_tls_failure) {
        conn_destroy(&s->c); /* allowed in any callback */
        assert_null(s->c);
    }
    if (s->f->on_tls)
        s->f->on_tls(s->f, s);
}

static const conn_handlers_t handlers = {
    .on_data = h_data,
    .on_close = h_close,
    .on_connected = h_connected,
    .on_tls = h_tls,
};

static void on_listen(loop_t *loop, int fd, unsigned events, void *arg)
{
    (void)events;
    fx_t *f = arg;
    sock_addr_t peer;
    int afd = sock_accept(fd, &peer);
    if (afd < 0)
        return;
    assert_null(f->srv.c);
    f->srv.c = conn_new(loop, afd, 0, f->srv_in_limit, &handlers, &f->srv);
    assert_non_null(f->srv.c);
    assert_int_equal(conn_fd(f->srv.c), afd);
    if (f->srv_accepted)
        f->srv_accepted(f);
}

static void on_guard(loop_t *loop, void *arg)
{
    ((fx_t *)arg)->timed_out = 1;
    loop_stop(loop);
}

static void on_timer(loop_t *loop, void *arg)
{
    (void)loop;
    fx_t *f = arg;
    if (f->on_timer)
        f->on_timer(f);
}

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));
    f->loop = loop_new();
    f->srv.f = f->cli.f = f;
    buf_init(&f->srv.got, 0);
    buf_init(&f->cli.got, 0);
    char err[256];
    f->lfd = sock_listen("127.0.0.1", 0, 16, err, sizeof(err));
    assert_true(f->lfd >= 0);
    sock_addr_t a;
    sock_local(f->lfd, &a);
    f->port = sock_addr_port(&a);
    assert_int_equal(loop_fd_add(f->loop, f->lfd, LOOP_READ, on_listen, f), 0);
    loop_timer_init(&f->guard, on_guard, f);
    loop_timer_init(&f->timer, on_timer, f);
    f->sctx = tls_server_ctx(tc.cert, tc.key, err, sizeof(err));
    f->cctx = tls_client_ctx(tc.cert, err, sizeof(err));
    assert_non_null(f->sctx);
    assert_non_null(f->cctx);
    f->verify_name = TEST_CERT_NAME;
    f->verify = 1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    conn_destroy(&f->srv.c);
    conn_destroy(&f->cli.c);
    if (f->lfd >= 0) {
        loop_fd_remove(f->loop, f->lfd);
        close(f->lfd);
    }
    buf_free(&f->srv.got);
    buf_free(&f->cli.got);
    tls_ctx_free(&f->sctx);
    tls_ctx_free(&f->cctx);
    free(f->pattern);
    loop_destroy(&f->loop);
    free(f);
    return 0;
}

static void start_client(fx_t *f)
{
    sock_addr_t dst;
    sock_addr_parse("127.0.0.1", f->port, &dst);
    int fd = sock_connect(&dst, NULL);
    assert_true(fd >= 0);
    f->cli.c = conn_new(f->loop, fd, 1, 0, &handlers, &f->cli);
    assert_non_null(f->cli.c);
}

static void run(fx_t *f)
{
    loop_timer_start(f->loop, &f->guard, 10000);
    assert_int_equal(loop_run(f->loop), 0);
    loop_timer_stop(f->loop, &f->guard);
    assert_false(f->timed_out);
}

static void make_pattern(fx_t *f, size_t n)
{
    f->pattern = malloc(n);
    f->pattern_len = n;
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        f->pattern[i] = (uint8_t)x;
    }
}

/* ---- plain ---- */

static void plain_cli_connected(fx_t *f)
{
    assert_int_equal(conn_write(f->cli.c, "EHLO client\r\n", 13), 0);
}

static void plain_srv_data(fx_t *f)
{
    take_all(&f->srv);
    if (got_has(&f->srv, "\r\n"))
        assert_int_equal(conn_printf(f->srv.c, "250 hello %s\r\n", "client"), 0);
}

static void plain_cli_data(fx_t *f)
{
    take_all(&f->cli);
    if (got_has(&f->cli, "\r\n"))
        loop_stop(f->loop);
}

static void test_plain_both_ways(void **state)
{
    fx_t *f = *state;
    f->cli_connected = plain_cli_connected;
    f->srv_data = plain_srv_data;
    f->cli_data = plain_cli_data;
    start_client(f);
    run(f);
    assert_true(f->cli.connected);
    assert_int_equal(f->cli.connect_err, 0);
    assert_int_equal(buf_used(&f->srv.got), 13);
    assert_memory_equal(buf_head(&f->srv.got), "EHLO client\r\n", 13);
    assert_int_equal(buf_used(&f->cli.got), 18);
    assert_memory_equal(buf_head(&f->cli.got), "250 hello client\r\n", 18);
    assert_false(conn_is_tls(f->cli.c));
    assert_string_equal(conn_tls_version(f->cli.c), "");
    assert_string_equal(conn_tls_cipher(f->srv.c), "");
    assert_false(conn_tls_verified(f->cli.c));
    assert_int_equal(conn_out_pending(f->srv.c), 0);
}

static void test_connect_refused(void **state)
{
    fx_t *f = *state;
    /* nobody listens any more */
    loop_fd_remove(f->loop, f->lfd);
    close(f->lfd);
    f->lfd = -1;
    start_client(f);
    run(f);
    assert_true(f->cli.connected);
    assert_int_equal(f->cli.connect_err, ECONNREFUSED);
}

/* ---- large transfers, plain and TLS ---- */

static void big_send(fx_t *f)
{
    assert_int_equal(conn_write(f->cli.c, f->pattern, f->pattern_len), 0);
}

static void big_srv_data(fx_t *f)
{
    take_all(&f->srv);
    if (buf_used(&f->srv.got) == f->pattern_len)
        assert_int_equal(conn_write(f->srv.c, f->pattern, f->pattern_len), 0);
}

static void big_cli_data(fx_t *f)
{
    take_all(&f->cli);
    if (buf_used(&f->cli.got) >= f->pattern_len)
        loop_stop(f->loop);
}

static void check_big(fx_t *f)
{
    assert_int_equal(buf_used(&f->srv.got), f->pattern_len);
    assert_memory_equal(buf_head(&f->srv.got), f->pattern, f->pattern_len);
    assert_int_equal(buf_used(&f->cli.got), f->pattern_len);
    assert_memory_equal(buf_head(&f->cli.got), f->pattern, f->pattern_len);
}

static void test_plain_large_both_ways(void **state)
{
    fx_t *f = *state;
    make_pattern(f, 6u << 20);
    f->cli_connected = big_send;
    f->srv_data = big_srv_data;
    f->cli_data = big_cli_data;
    start_client(f);
    run(f);
    check_big(f);
    /* the output went out in many writes, through the write-readiness path */
    assert_true(f->srv.data_calls > 1);
}

static void test_output_limit(void **state)
{
    fx_t *f = *state;
    f->cli_connected = NULL;
    start_client(f);
    /* nothing can leave yet: the output buffer stops growing at its limit */
    make_pattern(f, 1u << 20);
    int refused = 0;
    for (int i = 0; i < 64 && !refused; i++)
        refused = conn_write(f->cli.c, f->pattern, f->pattern_len) < 0;
    assert_true(refused);
    assert_true(conn_out_pending(f->cli.c) <= (8u << 20));
}

/* ---- closing ---- */

static void quit_cli_connected(fx_t *f)
{
    conn_write(f->cli.c, "QUIT\r\n", 6);
}

static void quit_srv_data(fx_t *f)
{
    take_all(&f->srv);
    if (!got_has(&f->srv, "QUIT\r\n"))
        return;
    /* a long reply, then close once it has all gone */
    assert_int_equal(conn_write(f->srv.c, f->pattern, f->pattern_len), 0);
    assert_int_equal(conn_write(f->srv.c, "221 bye\r\n", 9), 0);
    conn_close_after_flush(f->srv.c);
}

static void quit_closed(fx_t *f, side_t *s)
{
    (void)s;
    if (f->srv.closed && f->cli.closed)
        loop_stop(f->loop);
}

static void test_close_after_flush(void **state)
{
    fx_t *f = *state;
    make_pattern(f, 3u << 20);
    f->cli_connected = quit_cli_connected;
    f->srv_data = quit_srv_data;
    f->on_closed = quit_closed;
    start_client(f);
    run(f);
    assert_true(f->srv.closed);
    assert_int_equal(f->srv.close_err, 0);
    assert_true(f->cli.closed);
    assert_int_equal(f->cli.close_err, 0);
    /* every byte arrived before the client saw the close */
    assert_int_equal(f->cli.got_at_close, f->pattern_len + 9);
    assert_int_equal(buf_used(&f->cli.got), f->pattern_len + 9);
    assert_memory_equal(buf_head(&f->cli.got), f->pattern, f->pattern_len);
    assert_memory_equal(buf_head(&f->cli.got) + f->pattern_len, "221 bye\r\n", 9);
    assert_null(f->srv.c);
    assert_null(f->cli.c);
}

static void destroy_srv_data(fx_t *f)
{
    /* the owner drops the conn from inside its own callback */
    take_all(&f->srv);
    conn_destroy(&f->srv.c);
    assert_null(f->srv.c);
}

static void destroy_closed(fx_t *f, side_t *s)
{
    if (s == &f->cli)
        loop_stop(f->loop);
}

static void test_destroy_in_callback_and_close_detection(void **state)
{
    fx_t *f = *state;
    f->cli_connected = quit_cli_connected;
    f->srv_data = destroy_srv_data;
    f->on_closed = destroy_closed;
    start_client(f);
    run(f);
    assert_int_equal(buf_used(&f->srv.got), 6);
    assert_false(f->srv.closed); /* destroyed by its owner: no on_close */
    assert_true(f->cli.closed);
    assert_int_equal(f->cli.close_err, 0);
}

/* ---- read pause ---- */

static void pause_accepted(fx_t *f)
{
    conn_read_pause(f->srv.c, 1);
    loop_timer_start(f->loop, &f->timer, 100);
}

static void pause_cli_connected(fx_t *f)
{
    conn_write(f->cli.c, "sent while paused\r\n", 19);
}

static void pause_timer(fx_t *f)
{
    /* nothing was read while paused */
    f->paused_ok = f->srv.data_calls == 0 && buf_used(conn_in(f->srv.c)) == 0;
    conn_read_pause(f->srv.c, 0);
}

static void pause_srv_data(fx_t *f)
{
    take_all(&f->srv);
    if (got_has(&f->srv, "\r\n"))
        loop_stop(f->loop);
}

static void test_read_pause_resume(void **state)
{
    fx_t *f = *state;
    f->srv_accepted = pause_accepted;
    f->cli_connected = pause_cli_connected;
    f->on_timer = pause_timer;
    f->srv_data = pause_srv_data;
    start_client(f);
    run(f);
    assert_true(f->paused_ok);
    assert_int_equal(buf_used(&f->srv.got), 19);
    assert_memory_equal(buf_head(&f->srv.got), "sent while paused\r\n", 19);
}

/* ---- STARTTLS ---- */

static void st_cli_connected(fx_t *f)
{
    /* a client that pipelines a command behind STARTTLS, in one packet */
    conn_write(f->cli.c, "STARTTLS\r\nNOOP\r\n", 16);
}

static void st_srv_data(fx_t *f)
{
    buf_t *in = conn_in(f->srv.c);
    if (f->stage == 0) {
        if (buf_used(in) < 10)
            return;
        assert_memory_equal(buf_head(in), "STARTTLS\r\n", 10);
        buf_consume(in, 10);
        f->in_before_tls = buf_used(in);
        conn_write(f->srv.c, "220 ready\r\n", 11);
        assert_int_equal(conn_tls_accept(f->srv.c, f->sctx), 0);
        f->in_after_tls = buf_used(in);
        f->stage = 1;
        return;
    }
    take_all(&f->srv);
    if (got_has(&f->srv, "\r\n"))
        conn_write(f->srv.c, "250 secure\r\n", 12);
}

static void st_cli_data(fx_t *f)
{
    take_all(&f->cli);
    if (!conn_is_tls(f->cli.c)) {
        if (got_has(&f->cli, "220 ready\r\n")) {
            buf_reset(&f->cli.got);
            assert_int_equal(conn_tls_connect(f->cli.c, f->cctx, f->verify_name, f->verify), 0);
        }
        return;
    }
    if (got_has(&f->cli, "250 secure\r\n"))
        loop_stop(f->loop);
}

static void st_on_tls(fx_t *f, side_t *s)
{
    if (s == &f->cli && s->tls_ok)
        conn_write(f->cli.c, "EHLO secure\r\n", 13);
}

static void test_starttls(void **state)
{
    fx_t *f = *state;
    f->cli_connected = st_cli_connected;
    f->srv_data = st_srv_data;
    f->cli_data = st_cli_data;
    f->on_tls = st_on_tls;
    start_client(f);
    run(f);
    /* the plaintext NOOP was in the buffer, and STARTTLS discarded it */
    assert_int_equal(f->in_before_tls, 6);
    assert_int_equal(f->in_after_tls, 0);
    assert_int_equal(buf_used(&f->srv.got), 13);
    assert_memory_equal(buf_head(&f->srv.got), "EHLO secure\r\n", 13);
    assert_int_equal(buf_used(&f->cli.got), 12);
    assert_true(f->srv.tls_ok && f->cli.tls_ok);
    assert_string_equal(f->srv.tls_version, "TLSv1.3");
    assert_string_equal(f->cli.tls_version, "TLSv1.3");
    assert_string_equal(conn_tls_version(f->cli.c), "TLSv1.3");
    assert_true(strlen(f->cli.tls_cipher) > 0);
    assert_string_equal(f->cli.tls_cipher, f->srv.tls_cipher);
    assert_true(f->cli.verified);
    assert_true(conn_tls_verified(f->cli.c));
    /* TLS cannot start twice */
    assert_int_equal(conn_tls_accept(f->srv.c, f->sctx), -1);
    assert_int_equal(conn_tls_connect(f->cli.c, f->cctx, TEST_CERT_NAME, 1), -1);
}

/* ---- implicit TLS ---- */

static void imp_accepted(fx_t *f)
{
    assert_int_equal(conn_tls_accept(f->srv.c, f->sctx), 0);
}

static void imp_cli_connected(fx_t *f)
{
    assert_int_equal(conn_tls_connect(f->cli.c, f->cctx, f->verify_name, f->verify), 0);
}

static void imp_on_tls(fx_t *f, side_t *s)
{
    if (s == &f->cli && s->tls_ok)
        big_send(f);
    if (!s->tls_ok && f->cli.tls_done && (f->srv.tls_done || f->srv.closed))
        loop_stop(f->loop);
}

static void imp_closed(fx_t *f, side_t *s)
{
    (void)s;
    if (f->cli.closed && (f->srv.closed || f->srv.tls_done))
        loop_stop(f->loop);
}

static void test_implicit_tls12_large(void **state)
{
    fx_t *f = *state;
    SSL_CTX_set_max_proto_version(f->cctx, TLS1_2_VERSION);
    make_pattern(f, 2u << 20);
    f->srv_accepted = imp_accepted;
    f->cli_connected = imp_cli_connected;
    f->on_tls = imp_on_tls;
    f->srv_data = big_srv_data;
    f->cli_data = big_cli_data;
    start_client(f);
    run(f);
    check_big(f);
    assert_string_equal(f->srv.tls_version, "TLSv1.2");
    assert_string_equal(f->cli.tls_version, "TLSv1.2");
    assert_non_null(strstr(f->cli.tls_cipher, "GCM"));
    assert_true(f->cli.verified);
}

static void test_implicit_tls13_large(void **state)
{
    fx_t *f = *state;
    make_pattern(f, 3u << 20);
    f->srv_accepted = imp_accepted;
    f->cli_connected = imp_cli_connected;
    f->on_tls = imp_on_tls;
    f->srv_data = big_srv_data;
    f->cli_data = big_cli_data;
    start_client(f);
    run(f);
    check_big(f);
    assert_string_equal(f->cli.tls_version, "TLSv1.3");
}

static void test_verify_wrong_name(void **state)
{
    fx_t *f = *state;
    f->verify_name = "other.example";
    f->srv_accepted = imp_accepted;
    f->cli_connected = imp_cli_connected;
    f->on_tls = imp_on_tls;
    f->on_closed = imp_closed;
    start_client(f);
    run(f);
    assert_true(f->cli.tls_done);
    assert_false(f->cli.tls_ok);
    if (strstr(f->cli.tls_why, "certificate verification failed") == NULL ||
        strstr(f->cli.tls_why, "mismatch") == NULL)
        fail_msg("reason: \"%s\"", f->cli.tls_why);
    /* the client reported the close itself; the server saw the refusal */
    assert_true(f->cli.closed);
    assert_int_equal(f->cli.close_err, EPROTO);
    assert_true(f->srv.closed || (f->srv.tls_done && !f->srv.tls_ok));
}

static void test_verify_unknown_issuer(void **state)
{
    fx_t *f = *state;
    char err[256];
    tls_ctx_free(&f->cctx);
    /* trust only a certificate that did not sign the server's */
    test_cert_t other;
    assert_int_equal(test_cert_make(&other), 0);
    f->cctx = tls_client_ctx(other.cert, err, sizeof(err));
    test_cert_remove(&other);
    assert_non_null(f->cctx);
    f->srv_accepted = imp_accepted;
    f->cli_connected = imp_cli_connected;
    f->on_tls = imp_on_tls;
    f->on_closed = imp_closed;
    start_client(f);
    run(f);
    assert_false(f->cli.tls_ok);
    assert_non_null(strstr(f->cli.tls_why, "certificate verification failed"));
}

static void noverify_on_tls(fx_t *f, side_t *s)
{
    if (s == &f->cli && f->cli.tls_done && f->srv.tls_done)
        loop_stop(f->loop);
    if (s == &f->srv && f->cli.tls_done && f->srv.tls_done)
        loop_stop(f->loop);
}

static void test_no_verify_goes_on(void **state)
{
    fx_t *f = *state;
    char err[256];
    test_cert_t other;
    assert_int_equal(test_cert_make(&other), 0);
    tls_ctx_free(&f->cctx);
    f->cctx = tls_client_ctx(other.cert, err, sizeof(err));
    test_cert_remove(&other);
    /* opportunistic: verification off, wrong trust and wrong name */
    f->verify = 0;
    f->verify_name = "other.example";
    f->srv_accepted = imp_accepted;
    f->cli_connected = imp_cli_connected;
    f->on_tls = noverify_on_tls;
    start_client(f);
    run(f);
    assert_true(f->cli.tls_ok);
    assert_true(f->srv.tls_ok);
    assert_false(f->cli.verified);
    assert_false(conn_tls_verified(f->cli.c));
    assert_true(conn_is_tls(f->cli.c));
}

/*
 * A client that sends plaintext before the server even accepts: the
 * handshake fails inside conn_tls_accept itself. on_tls reports it there
 * and may destroy the conn; the call then returns -1 without touching the
 * conn again. A conn not destroyed reports its close on the next turn.
 */
static void early_accepted(fx_t *f)
{
    f->tls_rc = conn_tls_accept(f->srv.c, f->sctx);
    if (f->destroy_on_tls_failure)
        loop_stop(f->loop);
}

static void early_closed(fx_t *f, side_t *s)
{
    if (s == &f->srv)
        loop_stop(f->loop);
}

static void early_garbage(fx_t *f, int destroy_on_tls)
{
    f->destroy_on_tls_failure = destroy_on_tls;
    f->srv_accepted = early_accepted;
    f->on_closed = early_closed;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sock_addr_t dst;
    sock_addr_parse("127.0.0.1", f->port, &dst);
    assert_int_equal(connect(fd, (struct sockaddr *)&dst.ss, dst.len), 0);
    static const char junk[] = "EHLO plaintext.example\r\n";
    assert_int_equal(write(fd, junk, sizeof(junk) - 1), (ssize_t)(sizeof(junk) - 1));
    f->tls_rc = 99;
    run(f);
    close(fd);
    assert_int_equal(f->tls_rc, -1);
    assert_true(f->srv.tls_done);
    assert_false(f->srv.tls_ok);
    assert_true(strlen(f->srv.tls_why) > 0);
    assert_null(f->srv.c); /* destroyed by a callback, exactly once */
}

static void test_tls_fails_inside_accept_destroy_on_tls(void **state)
{
    early_garbage(*state, 1);
}

static void test_tls_fails_inside_accept_destroy_on_close(void **state)
{
    fx_t *f = *state;
    early_garbage(f, 0);
    assert_true(f->srv.closed);
    assert_int_equal(f->srv.close_err, EPROTO);
}

/* ---- pause over TLS: decrypted bytes held by OpenSSL are not lost ---- */

static void tls_pause_srv_data(fx_t *f)
{
    take_all(&f->srv);
    if (f->stage == 0) {
        f->stage = 1;
        conn_read_pause(f->srv.c, 1);
        loop_timer_start(f->loop, &f->timer, 80);
        return;
    }
    if (buf_used(&f->srv.got) == f->pattern_len)
        loop_stop(f->loop);
}

static void tls_pause_timer(fx_t *f)
{
    f->paused_ok = buf_used(&f->srv.got) < f->pattern_len && f->srv.data_calls == 1;
    conn_read_pause(f->srv.c, 0);
}

static void test_tls_pause_resume(void **state)
{
    fx_t *f = *state;
    make_pattern(f, 300000);
    f->srv_in_limit = 20000; /* the first callback sees only part of it */
    f->srv_accepted = imp_accepted;
    f->cli_connected = imp_cli_connected;
    f->on_tls = imp_on_tls;
    f->srv_data = tls_pause_srv_data;
    f->on_timer = tls_pause_timer;
    start_client(f);
    run(f);
    assert_true(f->paused_ok);
    assert_int_equal(buf_used(&f->srv.got), f->pattern_len);
    assert_memory_equal(buf_head(&f->srv.got), f->pattern, f->pattern_len);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_plain_both_ways, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_large_both_ways, setup, teardown),
        cmocka_unit_test_setup_teardown(test_output_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_after_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_in_callback_and_close_detection, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_read_pause_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_starttls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_implicit_tls12_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_implicit_tls13_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_wrong_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_unknown_issuer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_verify_goes_on, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_pause_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_fails_inside_accept_destroy_on_tls, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_tls_fails_inside_accept_destroy_on_close, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
