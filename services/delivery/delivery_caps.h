/*
 * delivery_caps: the decisions the SMTP client takes from what a server
 * says, as plain functions: reading an EHLO reply into capabilities, whether
 * to start TLS or AUTH, the MAIL FROM parameters (and whether the message
 * can go at all), and the outcome a reply means for a recipient. No I/O,
 * no state: delivery_session.c asks, these answer.
 */
#ifndef SX_DELIVERY_CAPS_H
#define SX_DELIVERY_CAPS_H

#include "mail/reply.h"

#include <stddef.h>
#include <stdint.h>

#define DLV_REPLY_TEXT_MAX 512

typedef enum { OUTCOME_DEFERRED = 0, OUTCOME_DELIVERED = 1, OUTCOME_BOUNCED = 2 } outcome_t;

typedef enum { POLICY_TLS_NONE = 0, POLICY_TLS_OPPORTUNISTIC, POLICY_TLS_REQUIRED } tls_policy_t;

/*
 * An SMTP-shaped outcome as kept for a recipient: code, enhanced code, text.
 * local: made up by us (a timeout, a refused connect, a TLS policy), not
 * said by the server. reason: a class fixed where the failure was known
 * ("dns", "config", "tls"); NULL lets reason_classify() read the codes.
 */
typedef struct dlv_reply {
    unsigned code;
    char enhanced[16];
    char text[DLV_REPLY_TEXT_MAX];
    int local;
    const char *reason; /* a static string or NULL */
} dlv_reply_t;

typedef struct ehlo_caps {
    int esmtp;         /* EHLO was accepted (0 after a HELO fallback) */
    int starttls;
    int pipelining;
    int smtputf8;
    int eightbitmime;
    int size;          /* SIZE advertised */
    uint64_t size_max; /* its limit; 0: none given */
    int auth;          /* some AUTH advertised */
    int auth_plain;
    int auth_login;
} ehlo_caps_t;

typedef enum {
    TLS_STEP_SKIP = 0, /* go on without TLS (none, or opportunistic and not offered) */
    TLS_STEP_START,    /* send STARTTLS */
    TLS_STEP_FAIL,     /* required and not possible: 4.7.5 */
} tls_step_t;

typedef enum {
    AUTH_STEP_SKIP = 0, /* no credentials, or the server asks for none */
    AUTH_STEP_PLAIN,    /* send AUTH PLAIN */
    AUTH_STEP_LOGIN,    /* no PLAIN, but LOGIN: user and password, each after a 334 */
    AUTH_STEP_NO_TLS,   /* credentials but no TLS: never sent in plaintext */
    AUTH_STEP_NO_MECH,  /* AUTH offered, but not a mechanism we speak */
} auth_step_t;

/* Capabilities from an EHLO reply (keywords on the lines after the first). */
void caps_parse(const smtp_reply_t *ehlo, ehlo_caps_t *out);

/* The route's tls string: "none", "opportunistic" ("" too), "required"; anything else: required. */
tls_policy_t caps_tls_policy(const char *text);

/* After EHLO: STARTTLS or not. is_tls: the connection is already encrypted. */
tls_step_t caps_tls_step(tls_policy_t policy, const ehlo_caps_t *caps, int is_tls);

/*
 * After EHLO (the one after TLS when there was TLS). PLAIN when offered,
 * else LOGIN; credentials only ever over TLS.
 */
auth_step_t caps_auth_step(int have_credentials, const ehlo_caps_t *caps, int is_tls);

/*
 * Before MAIL: can the message go to this server at all? 0: yes; -1: no,
 * with the bounce reply in why (SMTPUTF8 not offered, over the SIZE limit).
 */
int caps_mail_check(const ehlo_caps_t *caps, uint64_t size, int smtputf8, dlv_reply_t *why);

/* The MAIL FROM parameters (" SIZE=123 BODY=8BITMIME SMTPUTF8", or ""). */
void caps_mail_params(const ehlo_caps_t *caps, uint64_t size, int eightbit, int smtputf8,
                      char *out, size_t outlen);

/* 2xx delivered, 4xx deferred, 5xx bounced; anything else deferred. */
outcome_t caps_outcome(unsigned code);
const char *caps_outcome_name(outcome_t o);

/* Keep a server's reply; a missing enhanced code becomes the class default (4.0.0). */
void dlv_reply_from_smtp(dlv_reply_t *out, const smtp_reply_t *r);
/* A reply of our own (local = 1, reason NULL: set it after when known). */
void dlv_reply_set(dlv_reply_t *out, unsigned code, const char *enhanced, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
