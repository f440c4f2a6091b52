/*
 * ingress: internal interfaces of the submission service, shared by its
 * files. Nothing here is seen outside services/ingress.
 */
#ifndef SX_INGRESS_H
#define SX_INGRESS_H

#include "core/buf.h"
#include "core/id.h"
#include "ipc/service.h"
#include "mail/address.h"
#include "mail/smtp_data.h"
#include "net/cidr.h"
#include "net/conn.h"
#include "ingress_scan.h"

#include <openssl/ssl.h>
#include <stdint.h>

typedef enum {
    ROLE_SUBMISSION = 0, /* STARTTLS, then AUTH (the 587 role) */
    ROLE_SMTPS,          /* TLS from the first byte, then AUTH (the 465 role) */
    ROLE_LEGACY,         /* no AUTH; only allowlisted networks relay */
} listener_role_t;

typedef struct listener_conf {
    listener_role_t role;
    char address[64];
    unsigned port;
} listener_conf_t;

typedef struct listener_list {
    listener_conf_t *v;
    size_t n;
} listener_list_t;

typedef struct ingress_conf {
    listener_list_t listeners;
    char *tls_cert;
    char *tls_key;
    conf_strlist_t legacy_networks;
    char *legacy_tenant;
    uint64_t max_message_size;
    long long max_recipients;
    long long max_line;
    long long max_connections;
    uint64_t chunk_size;
    uint64_t command_timeout;
    uint64_t data_timeout;
    uint64_t auth_timeout;
    uint64_t queue_timeout;
    uint64_t queue_wait;
    uint64_t max_header_size;
    long long max_connections_per_ip;
    long long max_junk_commands;
    long long max_auth_failures;
    scan_conf_t scan;
} ingress_conf_t;

typedef struct ingress_listener {
    struct ingress *ing;
    listener_role_t role;
    int fd;
} ingress_listener_t;

typedef struct ingress {
    service_t *svc;
    ingress_conf_t conf;
    cidr_t *legacy_nets;
    size_t nlegacy_nets;
    SSL_CTX *tls;
    ingress_listener_t *listeners;
    size_t nlisteners;
    bus_server_t *api;
    bus_client_t *auth;
    bus_client_t **queues;
    size_t nqueues;
    size_t next_queue;
    struct session *sessions;   /* all live sessions */
    size_t nsessions;
    struct ip_count **ip_counts; /* connections per client address */
    size_t ip_buckets;
    scanner_t *scanner;          /* NULL: no content scanning */
    struct rate_lease *rate_leases; /* credentials auth said have no limit, for a while */
    /* counters for ServicePong */
    uint64_t connections, accepted, rejected, auth_ok, auth_failed, rate_limited, scanned_spam;
} ingress_t;

typedef struct session session_t;
/* MAIL's rate check finished: ok, or the reply to give. */
typedef void (*rate_done_fn)(session_t *s, int ok, const char *reply);

typedef enum {
    SS_CONNECTED = 0, /* greeting sent, waiting for EHLO/HELO */
    SS_READY,         /* greeted, no transaction */
    SS_MAIL,          /* MAIL accepted */
    SS_RCPT,          /* at least one RCPT accepted */
    SS_DATA,          /* reading DATA text */
    SS_BDAT,          /* reading a BDAT chunk */
    SS_AUTH,          /* AUTH waiting for the client's next line */
    SS_TLS,           /* STARTTLS handshake running */
    SS_CLOSING,       /* reply sent, closing */
} session_state_t;

typedef struct rcpt {
    char address[ADDR_PATH_MAX + ADDR_DOMAIN_MAX + 2];
    char notify[64];
    char orcpt[512];
} rcpt_t;

typedef struct session {
    ingress_t *ing;
    conn_t *conn;
    listener_role_t role;
    session_state_t state;
    char sid[17];
    sock_addr_t peer;
    char ip[64];
    char helo[256];
    int esmtp;
    int discarding;       /* dropping an over-long command line */
    int waiting;          /* an async step (auth, queue) is under way */
    loop_timer_t timer;   /* command/data/auth deadline */

    /* login */
    int authed;
    char username[129];
    char tenant[65];
    conf_strlist_t domains;  /* sending domains allowed for this login */
    int auth_mech;           /* AUTH in progress: AUTH_MECH_* of ingress_auth.c */
    char auth_user[256];     /* LOGIN: username between steps */
    int auth_failures;       /* in this session */
    rate_done_fn rate_done;  /* MAIL waiting on its rate check */
    char auth_error[320];    /* the refusal to give after a bearer-token error challenge */
    int junk;                /* commands since the last message */

    /* the transaction */
    char msgid[ID_BUF_SIZE];
    char mail_from[ADDR_PATH_MAX + ADDR_DOMAIN_MAX + 2];
    int smtputf8, eightbit;
    char dsn_ret[8];
    char dsn_envid[128];
    uint64_t declared_size;
    rcpt_t *rcpts;
    size_t nrcpts;
    size_t rcpts_cap;

    /* DATA / BDAT */
    data_reader_t reader;
    buf_t body;              /* message bytes not yet sent to queue */
    uint64_t body_total;     /* bytes of the message so far; the last one's until the next begins */
    uint32_t chunks_sent;
    bus_client_t *queue;     /* instance holding this message's chunks */
    uint64_t req_id;         /* outstanding bus request (0: none) */
    bus_client_t *req_client;
    uint64_t bdat_left;      /* bytes of the current BDAT chunk still to read */
    int bdat_last;
    int bdat_open;           /* a BDAT transaction has begun (DATA no longer allowed) */
    int bdat_failed;         /* refusal (503/554) to give once the chunk is consumed */
    session_state_t bdat_return_state;
    int bdat_bad_eol;        /* bare CR/LF seen in BDAT data */
    int bdat_prev_cr;
    size_t bdat_line;        /* octets of the current BDAT text line so far */
    int data_error;          /* 0, or the reply already decided for this message */
    int commit_pending;      /* end of data reached, commit waits for a chunk reply */
    zmq_msg_t commit_body;   /* the bytes of the commit, held while no queue takes it */
    int commit_held;
    uint64_t queue_wait_until; /* monotonic ms: the last try of a held commit */
    loop_timer_t queue_retry;  /* the next try of a held commit */
    buf_t header;            /* the client's header block, up to max_header_size */
    int header_done;         /* its blank line has been seen */
    buf_t scan_copy;         /* the whole message for the scanner, up to its max_size */
    int scan_too_big;
    scan_job_t *scan_job;
    char *prepend;           /* header lines decided at the end (scan verdict) */

    struct session *prev, *next;
} session_t;

/* ---- sessions (ingress_session.c) ---- */
void session_start(ingress_t *ing, int fd, const sock_addr_t *peer, listener_role_t role);
void session_close_all(ingress_t *ing);
void session_reply(session_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void session_enter_state(session_t *s, session_state_t st);
void session_reset_transaction(session_t *s);
/* Restart the deadline of the current step (command, DATA or BDAT). */
void session_arm(session_t *s);
/* Continue with buffered input after an async step. */
void session_resume(session_t *s);
void session_close(session_t *s);
const char *role_name(listener_role_t r);
/* 1 if this login may send as domain (always on the legacy role). */
int session_domain_allowed(const session_t *s, const char *domain);

/* ---- AUTH (ingress_auth.c) ---- */
void auth_command(session_t *s, char *args);
void auth_continue(session_t *s, char *line);

/* ---- DATA and BDAT (ingress_data.c) ---- */
void data_begin(session_t *s);
/* Feed buffered input in SS_DATA / SS_BDAT; returns 1 when it consumed something. */
int data_feed(session_t *s);
void bdat_command(session_t *s, char *args);
/* The session ends: give up the upload. */
void data_abandon(session_t *s);
/* loop timer: try again a commit that no queue instance took */
void data_commit_retry(loop_t *loop, void *arg);

/* ---- queue instances ---- */
bus_client_t *ingress_pick_queue(ingress_t *ing, bus_client_t *not_this);

/* ---- limits (ingress_limits.c) ---- */
/* Count a new connection from ip; 0 when within max_connections_per_ip. */
int limits_connection_open(ingress_t *ing, const char *ip);
void limits_connection_close(ingress_t *ing, const char *ip);
void limits_fini(ingress_t *ing);
/* A command that is not part of a message; 1 when the session must end. */
int limits_junk(session_t *s);

/* ---- MAIL's rate check (ingress_auth.c) ---- */
/* Ask auth whether one more message may go; done runs later (or the
 * session waits). Returns -1 when there is nothing to wait for: auth cannot
 * be asked, or it said lately that this credential and tenant have no limit. */
int auth_rate_check(session_t *s, rate_done_fn done);
void auth_rate_leases_free(ingress_t *ing);

#endif
