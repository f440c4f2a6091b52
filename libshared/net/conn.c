/*
 * conn: buffered non-blocking I/O over a socket, optionally through OpenSSL.
 */
#include "conn.h"
#include "tls.h"
#include "core/alloc.h"
#include "core/log.h"

#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CONN_READ_CHUNK  16384
#define CONN_READ_DIRECT 4096 /* room in the input buffer worth reading into */
#define CONN_WRITE_DIRECT 8192 /* a write worth sending from the caller's memory */
#define CONN_OUT_LIMIT  (8u << 20) /* a peer that never reads cannot grow us past this */

typedef enum { TLS_NONE, TLS_PENDING, TLS_HANDSHAKE, TLS_UP } conn_tls_state_t;

struct conn {
    loop_t *loop;
    int fd;
    buf_t in, out;
    size_t in_limit;
    const conn_handlers_t *h;
    void *arg;

    SSL *ssl;
    conn_tls_state_t tls;
    int tls_server;
    int tls_verify;

    unsigned interest;
    int connecting;
    int read_paused;
    int paused_hit; /* bytes came while paused: stop polling for input */
    int closing;   /* close once out is empty */
    int closed;    /* on_close already reported */
    int busy;      /* inside a callback */
    int dead;      /* destroy requested inside a callback */
    int user_call; /* inside one of our functions called by the owner */
    int close_pending; /* a close found during a user call, reported next turn */
    int close_err;
    int eof_pending;   /* the peer closed after bytes not yet handed over (errno + 1) */
    int read_wants_write;  /* SSL_read needs the socket writable */
    int write_wants_read;  /* SSL_write needs the socket readable */
    loop_timer_t kick;     /* runs buffered TLS input after a resume */
    loop_timer_t flush;    /* sends what the owner wrote outside a callback */
};

static void conn_event(loop_t *loop, int fd, unsigned events, void *arg);
static void conn_flush(conn_t *c);
static void conn_update(conn_t *c);

static void conn_free(conn_t *c);
static void conn_flush_later(loop_t *loop, void *arg);

/*
 * The zero-delay timer: reports a close found while the owner was calling
 * us (so on_close never runs inside conn_write and friends, and the owner's
 * objects stay valid until its call returns), or runs TLS input that
 * OpenSSL buffered while reading was paused.
 */
static void conn_kick(loop_t *loop, void *arg)
{
    conn_t *c = arg;
    if (c->close_pending) {
        c->close_pending = 0;
        c->busy++;
        if (c->h->on_close)
            c->h->on_close(c, c->close_err, c->arg);
        c->busy--;
        if (c->dead)
            conn_free(c);
        return;
    }
    conn_event(loop, c->fd, LOOP_READ, c);
}

conn_t *conn_new(loop_t *loop, int fd, int connecting, size_t in_limit, const conn_handlers_t *h,
                 void *arg)
{
    conn_t *c = xcalloc(1, sizeof(*c));
    c->loop = loop;
    c->fd = fd;
    c->connecting = connecting;
    c->in_limit = in_limit;
    c->h = h;
    c->arg = arg;
    buf_init(&c->in, 0);
    buf_init(&c->out, CONN_OUT_LIMIT);
    loop_timer_init(&c->kick, conn_kick, c);
    loop_timer_init(&c->flush, conn_flush_later, c);
    c->interest = connecting ? LOOP_WRITE : LOOP_READ;
    if (loop_fd_add(loop, fd, c->interest, conn_event, c) < 0) {
        close(fd);
        buf_free(&c->in);
        buf_free(&c->out);
        free(c);
        return NULL;
    }
    return c;
}

static void conn_free(conn_t *c)
{
    if (loop_timer_active(&c->flush) && !c->closed) {
        /* a last word written just before the destroy (QUIT, 421): one try */
        c->user_call++;
        conn_flush(c);
    }
    loop_timer_stop(c->loop, &c->flush);
    loop_timer_stop(c->loop, &c->kick);
    loop_fd_remove(c->loop, c->fd);
    if (c->ssl) {
        /* a quiet close_notify; we do not wait for the peer's */
        if (c->tls == TLS_UP)
            SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
    }
    close(c->fd);
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
}

void conn_destroy(conn_t **p)
{
    conn_t *c = *p;
    if (c == NULL)
        return;
    *p = NULL;
    if (c->busy) {
        c->dead = 1;
        return;
    }
    conn_free(c);
}

buf_t *conn_in(conn_t *c)
{
    return &c->in;
}

int conn_fd(const conn_t *c)
{
    return c->fd;
}

size_t conn_out_pending(const conn_t *c)
{
    return buf_used(&c->out);
}

int conn_is_tls(const conn_t *c)
{
    return c->tls == TLS_UP;
}

const char *conn_tls_version(const conn_t *c)
{
    return c->ssl && c->tls == TLS_UP ? SSL_get_version(c->ssl) : "";
}

const char *conn_tls_cipher(const conn_t *c)
{
    return c->ssl && c->tls == TLS_UP ? SSL_get_cipher_name(c->ssl) : "";
}

int conn_tls_verified(const conn_t *c)
{
    return c->ssl && c->tls == TLS_UP && SSL_get0_peer_certificate(c->ssl) != NULL &&
           SSL_get_verify_result(c->ssl) == X509_V_OK && c->tls_verify;
}

/* ---- callbacks, guarded against destroy-inside-callback ---- */

static int report_close(conn_t *c, int err)
{
    if (c->closed)
        return -1;
    c->closed = 1;
    /* out of epoll: a dead socket must not wake the loop again */
    loop_fd_remove(c->loop, c->fd);
    c->interest = 0;
    if (c->user_call) {
        c->close_pending = 1;
        c->close_err = err;
        loop_timer_start(c->loop, &c->kick, 0);
        return -1;
    }
    if (c->h->on_close)
        c->h->on_close(c, err, c->arg);
    return -1;
}

/* ---- reading ---- */

static int want_read(const conn_t *c)
{
    return !c->read_paused && !c->closing && !c->closed &&
           (c->in_limit == 0 || buf_used(&c->in) < c->in_limit);
}

/*
 * Whether epoll should report input. A paused connection stays armed until
 * bytes actually arrive: a client waiting for its reply sends nothing, and
 * disarming and re-arming around every wait for the bus cost two epoll_ctl
 * calls per message.
 */
static int arm_read(const conn_t *c)
{
    if (c->read_paused)
        return !c->paused_hit && !c->closing && !c->closed &&
               (c->in_limit == 0 || buf_used(&c->in) < c->in_limit);
    return want_read(c);
}

/*
 * Read what is available. 1: got bytes; 0: nothing; -1: closed (reported).
 * Bytes go straight into the input buffer when it has CONN_READ_DIRECT of
 * room, which it has once a large message has grown it: the text of a big
 * message is then not copied on its way in. A buffer with less room reads
 * into a shared chunk first, so an idle connection's buffer stays small.
 */
static int conn_read(conn_t *c)
{
    static char chunk[CONN_READ_CHUNK];
    int got = 0;
    while (want_read(c)) {
        size_t room = buf_room(&c->in);
        int direct = room >= CONN_READ_DIRECT;
        char *dst = direct ? buf_tail(&c->in) : chunk;
        size_t want = direct ? room : sizeof(chunk);
        if (want > INT_MAX)
            want = INT_MAX;
        ssize_t n;
        if (c->ssl) {
            c->read_wants_write = 0;
            ERR_clear_error();
            int r = SSL_read(c->ssl, dst, (int)want);
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_READ)
                    break;
                if (e == SSL_ERROR_WANT_WRITE) {
                    c->read_wants_write = 1;
                    break;
                }
                int err = 0;
                if (e != SSL_ERROR_ZERO_RETURN) {
                    char why[256];
                    err = e == SSL_ERROR_SYSCALL && errno ? errno : EPROTO;
                    log_debug("event=tls_read_failed fd=%d err=\"%s\"", c->fd,
                              tls_last_error(why, sizeof(why)));
                }
                if (got) {
                    c->eof_pending = err + 1; /* deliver the bytes first */
                    break;
                }
                return report_close(c, err);
            }
            n = r;
        } else {
            n = read(c->fd, dst, want);
            if (n <= 0 && !(n < 0 && (errno == EAGAIN || errno == EINTR))) {
                int err = n == 0 ? 0 : errno;
                if (got) {
                    c->eof_pending = err + 1;
                    break;
                }
                return report_close(c, err);
            }
            if (n < 0)
                break;
        }
        if (direct)
            buf_advance(&c->in, (size_t)n);
        else if (buf_append(&c->in, chunk, (size_t)n) < 0)
            return report_close(c, ENOBUFS);
        got = 1;
        if ((size_t)n < want && !c->ssl)
            break; /* the socket is drained: skip the EAGAIN round trip */
    }
    return got;
}

/* ---- writing ---- */

static void conn_flush(conn_t *c)
{
    if (c->connecting || c->closed || c->tls == TLS_HANDSHAKE)
        return;
    while (buf_used(&c->out) > 0) {
        ssize_t n;
        if (c->ssl && c->tls == TLS_UP) {
            c->write_wants_read = 0;
            ERR_clear_error();
            int r = SSL_write(c->ssl, buf_head(&c->out), (int)(buf_used(&c->out) > 1 << 30
                                                                   ? 1 << 30
                                                                   : buf_used(&c->out)));
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_WRITE)
                    break;
                if (e == SSL_ERROR_WANT_READ) {
                    c->write_wants_read = 1;
                    break;
                }
                report_close(c, EPIPE);
                return;
            }
            n = r;
        } else {
            n = send(c->fd, buf_head(&c->out), buf_used(&c->out), MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    break;
                report_close(c, errno);
                return;
            }
        }
        buf_consume(&c->out, (size_t)n);
    }
    if (buf_used(&c->out) == 0 && c->out.cap > 65536)
        buf_free(&c->out); /* an idle session keeps no big buffer */
}

/*
 * Writes made outside a callback (say, replies sent when an answer comes
 * from the bus) go out at the end of the loop turn, together: a reply and
 * the replies to the pipelined commands it released leave in one send.
 */
static void conn_flush_later(loop_t *loop, void *arg)
{
    (void)loop;
    conn_t *c = arg;
    c->user_call++;
    conn_flush(c);
    c->user_call--;
    conn_update(c);
}

int conn_write(conn_t *c, const void *p, size_t n)
{
    if (c->closed)
        return -1;
    if (buf_append(&c->out, p, n) < 0) {
        log_warn("event=conn_output_overflow fd=%d", c->fd);
        return -1;
    }
    if (!c->busy && !loop_timer_active(&c->flush))
        loop_timer_start(c->loop, &c->flush, 0);
    return 0;
}

int conn_writev(conn_t *c, const struct iovec *iov, int cnt)
{
    if (c->closed)
        return -1;
    size_t total = 0;
    for (int i = 0; i < cnt; i++)
        total += iov[i].iov_len;
    size_t sent = 0;
    if (c->ssl == NULL && c->tls == TLS_NONE && !c->connecting && buf_used(&c->out) == 0 &&
        total >= CONN_WRITE_DIRECT) {
        struct msghdr mh = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)cnt};
        ssize_t n = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        if (n > 0)
            sent = (size_t)n;
        /* a full socket or an error: the rest goes through the buffer,
         * whose flush waits for room or reports the error */
    }
    for (int i = 0; i < cnt; i++) {
        size_t len = iov[i].iov_len;
        if (sent >= len) {
            sent -= len;
            continue;
        }
        if (conn_write(c, (const char *)iov[i].iov_base + sent, len - sent) < 0)
            return -1;
        sent = 0;
    }
    return 0;
}

int conn_printf(conn_t *c, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    if ((size_t)n >= sizeof(line))
        n = sizeof(line) - 1;
    return conn_write(c, line, (size_t)n);
}

/* ---- TLS ---- */

static int tls_step(conn_t *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->tls = TLS_UP;
        if (c->h->on_tls)
            c->h->on_tls(c, 1, NULL, c->arg);
        return 1;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    char why[256];
    if (c->tls_verify && SSL_get_verify_result(c->ssl) != X509_V_OK)
        snprintf(why, sizeof(why), "certificate verification failed: %s",
                 X509_verify_cert_error_string(SSL_get_verify_result(c->ssl)));
    else if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
        snprintf(why, sizeof(why), "connection closed during handshake");
    else
        tls_last_error(why, sizeof(why));
    c->tls = TLS_NONE;
    if (c->h->on_tls)
        c->h->on_tls(c, 0, why, c->arg);
    if (!c->dead)
        report_close(c, EPROTO);
    return -1;
}

static int tls_begin(conn_t *c)
{
    buf_reset(&c->in);
    c->tls = TLS_HANDSHAKE;
    return tls_step(c) < 0 ? -1 : 0;
}

static int tls_setup(conn_t *c, SSL_CTX *ctx, int server)
{
    if (c->ssl || c->closed)
        return -1;
    c->ssl = SSL_new(ctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1)
        return -1;
    c->tls_server = server;
    if (server)
        SSL_set_accept_state(c->ssl);
    else
        SSL_set_connect_state(c->ssl);
    /* the plaintext reply that announced TLS must leave before the handshake */
    c->tls = TLS_PENDING;
    buf_reset(&c->in);
    return 0;
}

/* Flush the plaintext and, when it is all out, begin the handshake. */
static int tls_start_now(conn_t *c)
{
    if (c->busy)
        return 0; /* conn_event does it when the callback returns */
    int rc = 0;
    c->user_call++;
    c->busy++; /* on_tls may destroy the conn: free it only once we are done */
    conn_flush(c);
    if (!c->closed && buf_used(&c->out) == 0 && tls_begin(c) < 0)
        rc = -1;
    c->busy--;
    c->user_call--;
    if (c->dead) {
        conn_free(c);
        return -1;
    }
    conn_update(c);
    return rc;
}

int conn_tls_accept(conn_t *c, SSL_CTX *ctx)
{
    if (tls_setup(c, ctx, 1) < 0)
        return -1;
    return tls_start_now(c);
}

int conn_tls_connect(conn_t *c, SSL_CTX *ctx, const char *host, int verify)
{
    if (tls_setup(c, ctx, 0) < 0)
        return -1;
    c->tls_verify = verify;
    sock_addr_t literal;
    /* SNI carries names only (RFC 6066 3) */
    if (host && *host && sock_addr_parse(host, 0, &literal) < 0)
        SSL_set_tlsext_host_name(c->ssl, host);
    if (verify) {
        SSL_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
        SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (SSL_set1_host(c->ssl, host) != 1)
            return -1;
    } else {
        SSL_set_verify(c->ssl, SSL_VERIFY_NONE, NULL);
    }
    return tls_start_now(c);
}

/* ---- the event handler ---- */

static void conn_update(conn_t *c)
{
    if (c->closed || c->dead)
        return;
    unsigned want = 0;
    if (c->connecting) {
        want = LOOP_WRITE;
    } else if (c->tls == TLS_HANDSHAKE) {
        want = SSL_want_write(c->ssl) ? LOOP_WRITE : LOOP_READ;
    } else if (c->tls == TLS_PENDING) {
        want = LOOP_WRITE; /* flush the announcement, then start the handshake */
    } else {
        if (arm_read(c) || c->write_wants_read)
            want |= LOOP_READ;
        /* output the flush timer sends this turn needs no EPOLLOUT (arming
         * it for that cost two epoll_ctl calls per reply); the timer arms it
         * if the socket does not take everything */
        if ((buf_used(&c->out) > 0 &&
             (!loop_timer_active(&c->flush) || (c->interest & LOOP_WRITE))) ||
            c->read_wants_write)
            want |= LOOP_WRITE;
    }
    if (want != c->interest) {
        loop_fd_modify(c->loop, c->fd, want);
        c->interest = want;
    }
    /* OpenSSL may hold decrypted bytes that epoll will never announce */
    if (c->ssl && c->tls == TLS_UP && want_read(c) && SSL_pending(c->ssl) > 0 &&
        !loop_timer_active(&c->kick))
        loop_timer_start(c->loop, &c->kick, 0);
}

static void conn_event(loop_t *loop, int fd, unsigned events, void *arg)
{
    (void)loop;
    (void)fd;
    conn_t *c = arg;
    if (c->closed)
        return;
    c->busy++;

    if (c->connecting) {
        if (!(events & (LOOP_WRITE | LOOP_ERROR)))
            goto out;
        int err = sock_connect_result(c->fd);
        c->connecting = 0;
        if (c->h->on_connected)
            c->h->on_connected(c, err, c->arg);
        if (c->dead || err)
            goto out;
        conn_flush(c);
        goto out;
    }

    if (c->tls == TLS_HANDSHAKE) {
        if (tls_step(c) <= 0 || c->dead)
            goto out;
    }

    if (c->tls != TLS_HANDSHAKE && c->tls != TLS_PENDING) {
        int readable = (events & LOOP_READ) || (c->read_wants_write && (events & LOOP_WRITE));
        if (readable && want_read(c)) {
            int r = conn_read(c);
            if (r < 0 || c->dead)
                goto out;
            if (r > 0 && c->h->on_data) {
                c->h->on_data(c, c->arg);
                if (c->dead || c->closed)
                    goto out;
            }
            if (c->eof_pending) {
                report_close(c, c->eof_pending - 1);
                goto out;
            }
        } else if ((events & LOOP_ERROR) && buf_used(&c->out) == 0) {
            /* a reset or hang-up while we are not reading: nothing else will
             * ever tell us, and the error would wake the loop forever */
            int err = sock_connect_result(c->fd);
            report_close(c, err ? err : ECONNRESET);
            goto out;
        } else if (readable && c->read_paused) {
            c->paused_hit = 1; /* left in the socket until the owner resumes */
        }
    }

    size_t before = buf_used(&c->out);
    conn_flush(c);
    if (c->closed || c->dead)
        goto out;
    if (before > 0 && buf_used(&c->out) == 0 && c->h->on_drain && c->tls != TLS_PENDING) {
        c->h->on_drain(c, c->arg);
        if (c->closed || c->dead)
            goto out;
    }
    /* STARTTLS: the plaintext reply is out, the handshake may begin */
    if (c->tls == TLS_PENDING && buf_used(&c->out) == 0) {
        if (tls_begin(c) < 0 || c->dead)
            goto out;
    }
    if (c->closing && buf_used(&c->out) == 0) {
        report_close(c, 0);
        goto out;
    }

out:
    c->busy--;
    if (c->dead) {
        if (c->busy == 0)
            conn_free(c);
        return;
    }
    conn_update(c);
}

void conn_read_pause(conn_t *c, int paused)
{
    c->read_paused = paused;
    if (!paused)
        c->paused_hit = 0;
    if (!c->busy)
        conn_update(c);
}

void conn_close_after_flush(conn_t *c)
{
    c->closing = 1;
    if (c->busy)
        return;
    c->user_call++;
    conn_flush(c);
    if (!c->closed && buf_used(&c->out) == 0)
        report_close(c, 0);
    c->user_call--;
    conn_update(c);
}
