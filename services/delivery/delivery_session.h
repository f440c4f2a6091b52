/*
 * delivery_session: one outgoing SMTP connection, as an explicit state
 * machine: connect (and at once the TLS handshake, for an implicit-TLS
 * endpoint), greeting, EHLO (HELO fallback), STARTTLS and EHLO again, AUTH
 * PLAIN (LOGIN when the server offers no PLAIN), then ready. A ready
 * session is handed a transaction (MAIL, RCPTs, DATA, body, final reply)
 * and reports each recipient's outcome; afterwards it is ready again and
 * can be kept open for the next task to the same place, which starts with
 * RSET. It does not pick endpoints, resolve names, keep idle connections or
 * build bus messages: delivery_task.c and delivery_pool.c do.
 */
#ifndef SX_DELIVERY_SESSION_H
#define SX_DELIVERY_SESSION_H

#include "core/loop.h"
#include "delivery_caps.h"
#include "net/sock.h"

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

#define SESSION_IN_LIMIT   (128u << 10) /* unread server bytes before it is a protocol error */
#define SESSION_QUIT_MS    5000         /* how long QUIT waits for 221 */
#define SESSION_BODY_CHUNK (256u << 10) /* body bytes handed to the connection at once */
#define SESSION_BODY_HIGH  (1u << 20)   /* no more body while this much is unsent */
#define SESSION_BODY_IOV   64             /* pieces of stuffed body per write */
#define SESSION_HOST_MAX   256

typedef struct session session_t;

typedef struct session_params {
    sock_addr_t addr;           /* where to connect */
    sock_addr_t src;            /* the local address to connect from, when has_src */
    int has_src;
    char host[SESSION_HOST_MAX]; /* the endpoint's name (or IP), for TLS checks and messages */
    const char *helo;           /* our name in EHLO */
    tls_policy_t tls;
    int implicit_tls;           /* TLS from the first byte (smtps://): never STARTTLS */
    int no_starttls;            /* opportunistic TLS failed here before: stay plaintext */
    SSL_CTX *tls_ctx;
    const char *auth_username;  /* NULL or "": no AUTH */
    const char *auth_password;
    uint64_t connect_timeout_ms;
    uint64_t command_timeout_ms;
    uint64_t greeting_timeout_ms;
    uint64_t data_timeout_ms;
    const char *log_ids;        /* "msg=... task=..." for every log line */
} session_params_t;

typedef enum { RCPT_PENDING = 0, RCPT_ACCEPTED, RCPT_DONE } rcpt_state_t;

typedef struct session_rcpt {
    const char *address;
    rcpt_state_t state;
    outcome_t outcome;
    dlv_reply_t reply;
} session_rcpt_t;

/* One message to some recipients; the session fills each rcpt's outcome. */
typedef struct session_txn {
    const char *mail_from;
    int smtputf8;
    int eightbit;
    const char *head;  /* header lines sent before the body (a DKIM-Signature), or NULL */
    size_t head_len;
    const char *body;
    size_t body_len;
    session_rcpt_t *rcpts;
    size_t nrcpt;
} session_txn_t;

/* Why a session failed before a transaction. */
typedef enum {
    SESSION_FAIL_CONNECT = 0, /* refused, unreachable, timed out */
    SESSION_FAIL_REMOTE,      /* the server said no (greeting, EHLO, STARTTLS, AUTH) */
    SESSION_FAIL_TLS,         /* required TLS not offered or not verified */
    SESSION_FAIL_TLS_RETRY,   /* opportunistic TLS failed: a plaintext retry may work */
    SESSION_FAIL_LOST,        /* connection lost, timeout or garbage from the server */
    SESSION_FAIL_STALE,       /* a kept connection failed at RSET: nothing was sent, try a new one */
} session_fail_t;

typedef struct session_handlers {
    void (*on_ready)(session_t *s, void *arg);
    /* Before a transaction: the session is dead; reply says why. */
    void (*on_failed)(session_t *s, session_fail_t kind, const dlv_reply_t *reply, void *arg);
    /* The transaction has an outcome for every recipient. */
    void (*on_txn_done)(session_t *s, void *arg);
} session_handlers_t;

/*
 * Start connecting. NULL with errno when the connect cannot even start.
 * Handlers run later, from the loop, never from inside a session_* call.
 */
session_t *session_new(loop_t *loop, const session_params_t *p, const session_handlers_t *h,
                       void *arg);
/* Close at once (no QUIT) and free; safe inside a handler. */
void session_destroy(session_t **s);
/* Send QUIT and let the session free itself after 221, a close, or SESSION_QUIT_MS. */
void session_quit(session_t **s);

/*
 * On a ready session: run txn (which must outlive it). A session that ran
 * a transaction before sends RSET first (in one write with MAIL and RCPT
 * when the server offers PIPELINING).
 */
void session_start(session_t *s, session_txn_t *txn);

/* Hand the session to another owner (a kept connection changing hands). */
void session_set_handlers(session_t *s, const session_handlers_t *h, void *arg);
/* The "msg=... task=..." of the task it now works for, for its log lines. */
void session_set_log_ids(session_t *s, const char *ids);

int session_is_ready(const session_t *s);
/* Ready, connected and not told to go away (421): worth keeping for another message. */
int session_reusable(const session_t *s);
/* Transactions started on this connection. */
unsigned session_txn_count(const session_t *s);
/* The local address of the connection ("" before it is connected). */
const char *session_local_ip(const session_t *s);
/* TLS is up with a verified chain and name. */
int session_tls_verified(const session_t *s);
const char *session_host(const session_t *s);
const char *session_ip(const session_t *s);
const char *session_tls_version(const session_t *s);
const char *session_tls_cipher(const session_t *s);
/* The server's reply to the last command (for logs); code 0 when none. */
const dlv_reply_t *session_last_reply(const session_t *s);

#endif
