/*
 * sandbox_session: one SMTP client of the sandbox, from greeting to close.
 * An explicit state machine over a net/conn connection: commands are read
 * from the connection's input, answered in order (pipelining), message text
 * is unstuffed (DATA) or taken raw (BDAT) and spooled to the Maildir, and a
 * 250 goes out only after the files are on disk. Recipient local parts and
 * the fail mode in force at accept steer replies; delays use loop timers.
 * It does not listen, count connections against a limit or talk to the bus:
 * sandbox_server does that.
 */
#ifndef SX_SANDBOX_SESSION_H
#define SX_SANDBOX_SESSION_H

#include "core/loop.h"
#include "net/sock.h"
#include "sandbox_maildir.h"

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

typedef struct session session_t;

/* What every session shares: settings, the Maildir, counters and the live list. */
typedef struct session_ctx {
    loop_t *loop;
    const char *hostname;      /* in the greeting and EHLO */
    uint64_t max_message_size; /* octets after unstuffing */
    uint64_t slow_delay_ms;    /* slow-* recipients */
    uint64_t idle_timeout_ms;  /* a client silent this long is dropped */
    SSL_CTX *tls;              /* NULL: STARTTLS not offered */
    maildir_t *maildir;

    /* kept by the sessions */
    session_t *head;
    size_t active;
    uint64_t total;
    uint64_t messages; /* messages stored */
    uint64_t files;    /* files written to new/ (one per recipient) */
    uint64_t refused;  /* messages refused at their end */
} session_ctx_t;

/*
 * Run a session on an accepted connection (the session owns fd from here,
 * even on failure). fail_code is the fail mode in force at accept: 421 greets
 * with 421 and closes; 450, 451, 550 and 554 answer every RCPT so; 0 is
 * normal. fail_text replaces the default reply text when not empty.
 * Returns the session, or NULL when it could not start (fd closed).
 */
session_t *session_start(session_ctx_t *ctx, int fd, const sock_addr_t *peer,
                         unsigned fail_code, const char *fail_text);

/*
 * A fail mode was set (or cleared with 0): open sessions follow it too. 421
 * answers and closes each at once; other codes apply to their next RCPTs.
 */
void session_fail_all(session_ctx_t *ctx, unsigned code, const char *text);

/* End every session at once (shutdown): connections closed, spools removed. */
void session_close_all(session_ctx_t *ctx);

#endif
