/*
 * address: parsing of SMTP paths and their ESMTP parameters (RFC 5321 4.1.2,
 * RFC 6531 for UTF-8). Strict: a path is "<local@domain>" (or "<>" where a
 * null path is allowed); the local part is a dot-string or a quoted string,
 * kept exactly as written (so user+tag and "quoted parts" pass through);
 * the domain is a hostname or an address literal. Source routes, bang paths
 * and a second '@' are refused: the relay never interprets routing inside an
 * address, so no such trick can turn it into an open relay.
 */
#ifndef SX_ADDRESS_H
#define SX_ADDRESS_H

#include <stddef.h>

#define ADDR_LOCAL_MAX  64
#define ADDR_DOMAIN_MAX 255
#define ADDR_PATH_MAX   256
#define ADDR_PARAMS_MAX 16

typedef struct mail_addr {
    char local[ADDR_PATH_MAX + 1];   /* as written, quotes included */
    char domain[ADDR_DOMAIN_MAX + 1];/* lowercased when ASCII */
    char full[ADDR_PATH_MAX + ADDR_DOMAIN_MAX + 2]; /* local@domain; "" for the null path */
    int is_null;
    int is_literal;                  /* [192.0.2.1] or [IPv6:...] */
    int utf8;                        /* non-ASCII bytes present */
} mail_addr_t;

typedef struct mail_param {
    char key[32];        /* uppercased */
    char value[512];     /* as given, xtext not decoded; "" when absent */
    int has_value;
} mail_param_t;

typedef struct mail_params {
    mail_param_t v[ADDR_PARAMS_MAX];
    size_t n;
} mail_params_t;

typedef enum {
    ADDR_OK = 0,
    ADDR_SYNTAX,      /* 501 5.1.3 / 5.1.7 */
    ADDR_TOO_LONG,    /* 501 5.1.3 */
    ADDR_UTF8,        /* non-ASCII without SMTPUTF8: 553 5.6.7 */
    ADDR_ROUTE,       /* source route, bang path, %-hack: 553 5.1.3 */
    ADDR_PARAMS,      /* malformed parameters: 501 5.5.4 */
} addr_status_t;

/*
 * Parse "<path> [params]" (the text after "MAIL FROM:" or "RCPT TO:", leading
 * spaces allowed). allow_null: "<>" is accepted (MAIL FROM). allow_utf8: the
 * client declared SMTPUTF8.
 */
addr_status_t address_parse(const char *text, int allow_null, int allow_utf8, mail_addr_t *out,
                            mail_params_t *params);

/* The value of a parameter, or NULL when absent. */
const mail_param_t *address_param(const mail_params_t *params, const char *key);

/* 1 if domain is syntactically a hostname (ASCII labels or UTF-8 when allowed). */
int address_domain_valid(const char *domain, int allow_utf8);

/* Decode RFC 3461 xtext ("+2B" -> "+") into dst; -1 when malformed. */
int address_xtext_decode(const char *src, char *dst, size_t size);

const char *address_status_text(addr_status_t st);

#endif
