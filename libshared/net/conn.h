/*
 * conn: one non-blocking TCP connection, plain or TLS, driven by the loop.
 * It owns an input buffer (bytes read, not yet consumed by the owner) and an
 * output buffer (bytes the owner wrote, not yet sent), hides OpenSSL's
 * want-read/want-write dance, and tells its owner through callbacks. It
 * knows nothing of SMTP.
 *
 * Callbacks may call conn_destroy(); the conn then stops touching itself and
 * is freed when the callback returns. on_close and on_data never run inside
 * a call the owner makes (conn_write, conn_close_after_flush...): a close
 * found there is reported on the next loop turn, so the owner's objects stay
 * valid until its own call returns. (on_tls may report a failed handshake
 * from inside conn_tls_accept/connect.) Writes made inside a callback are sent
 * together when it returns, so a pipelined burst of replies leaves in one
 * write instead of one per reply.
 */
#ifndef SX_CONN_H
#define SX_CONN_H

#include "core/buf.h"
#include "core/loop.h"
#include "sock.h"

#include <openssl/ssl.h>
#include <stddef.h>
#include <sys/uio.h>

typedef struct conn conn_t;

typedef struct conn_handlers {
    void (*on_data)(conn_t *c, void *arg);                /* new bytes in conn_in() */
    void (*on_close)(conn_t *c, int err, void *arg);      /* EOF (0) or errno; destroy it */
    void (*on_connected)(conn_t *c, int err, void *arg);  /* outgoing connect finished */
    void (*on_tls)(conn_t *c, int ok, const char *why, void *arg); /* handshake finished */
    void (*on_drain)(conn_t *c, void *arg); /* output left over from a write has all gone */
} conn_handlers_t;

/* Wrap an accepted or connecting fd (the conn closes it). in_limit caps unread input. */
conn_t *conn_new(loop_t *loop, int fd, int connecting, size_t in_limit, const conn_handlers_t *h,
                 void *arg);
void conn_destroy(conn_t **c);

buf_t *conn_in(conn_t *c);
int conn_fd(const conn_t *c);
size_t conn_out_pending(const conn_t *c);

int conn_write(conn_t *c, const void *p, size_t n);
/*
 * conn_write of several pieces. On a plain connection with nothing queued,
 * a large write is sent at once from the caller's memory, so a message body
 * is not copied into the output buffer on its way out; what the socket does
 * not take now is copied there as by conn_write.
 */
int conn_writev(conn_t *c, const struct iovec *iov, int cnt);
int conn_printf(conn_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Stop (1) or resume (0) reading from the peer; input already read stays. */
void conn_read_pause(conn_t *c, int paused);

/* Send what is buffered, then report on_close(0). */
void conn_close_after_flush(conn_t *c);

/*
 * Start TLS as server (after the plaintext output is flushed). Unread input
 * is discarded: anything a client sent after STARTTLS and before the
 * handshake was never protected and must not be executed.
 */
int conn_tls_accept(conn_t *c, SSL_CTX *ctx);

/*
 * Start TLS as client. verify: check the chain and that the certificate names
 * host; otherwise the handshake goes on and conn_tls_verified() tells.
 */
int conn_tls_connect(conn_t *c, SSL_CTX *ctx, const char *host, int verify);

int conn_is_tls(const conn_t *c);
const char *conn_tls_version(const conn_t *c); /* "TLSv1.3" or "" */
const char *conn_tls_cipher(const conn_t *c);
int conn_tls_verified(const conn_t *c);        /* chain and name checked and good */

#endif
