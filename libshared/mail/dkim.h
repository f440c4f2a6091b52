/*
 * dkim: DomainKeys Identified Mail (RFC 6376) signatures over a message,
 * with relaxed/relaxed canonicalization and SHA-256, by rsa-sha256 and
 * ed25519-sha256 (RFC 8463: Ed25519 over the SHA-256 hash of the
 * canonicalized header data). Given the message (header block and body,
 * CRLF lines), a signing domain and keys, it returns the DKIM-Signature
 * fields to put in front of the message. The body hash can be fed in
 * pieces. Also here: key generation and the DNS record text (auth makes
 * keys and checks published records), and a verifier for signatures of
 * the shape we make, for tests. It does no DNS lookups and keeps no keys
 * beyond the objects it hands out.
 */
#ifndef SX_DKIM_H
#define SX_DKIM_H

#include "core/buf.h"

#include <stddef.h>
#include <stdint.h>

#define DKIM_SELECTOR_MAX 63 /* one DNS label */
#define DKIM_DOMAIN_MAX   255
#define DKIM_KEYS_MAX     4    /* signatures on one message */
#define DKIM_HASH_LEN     32   /* SHA-256 */
#define DKIM_PUBLIC_MAX   512  /* base64 of an RSA 2048 SubjectPublicKeyInfo fits */
#define DKIM_PEM_MAX      8192 /* a PEM private key we accept */
#define DKIM_RSA_BITS     2048
#define DKIM_RSA_BITS_MIN 1024         /* shorter keys are refused (RFC 8301) */
#define DKIM_HEADER_MAX   (256u << 10) /* header block we sign or verify */
#define DKIM_LINE_WIDTH   76           /* folded DKIM-Signature lines stay within this */

typedef enum {
    DKIM_ALG_NONE = 0,
    DKIM_ALG_RSA_SHA256,
    DKIM_ALG_ED25519_SHA256,
} dkim_alg_t;

/* "rsa-sha256", "ed25519-sha256"; NULL for NONE. */
const char *dkim_alg_name(dkim_alg_t alg);
/* The a= name to an algorithm; DKIM_ALG_NONE when unknown. */
dkim_alg_t dkim_alg_parse(const char *name);
/* The k= value of an algorithm's DNS record: "rsa", "ed25519". */
const char *dkim_alg_key_type(dkim_alg_t alg);

/* ---- keys ---- */

typedef struct dkim_key dkim_key_t;

/*
 * A signing key from its PEM private key; the PEM's key type must match
 * alg (an RSA key of at least DKIM_RSA_BITS_MIN bits, or an Ed25519 key).
 * NULL with err on failure; err never quotes the key.
 */
dkim_key_t *dkim_key_from_pem(const char *selector, dkim_alg_t alg, const char *pem, size_t pem_len,
                              char *err, size_t errlen);
void dkim_key_destroy(dkim_key_t **k);
const char *dkim_key_selector(const dkim_key_t *k);
dkim_alg_t dkim_key_alg(const dkim_key_t *k);

/*
 * A new key: RSA DKIM_RSA_BITS or Ed25519. *pem gets the PKCS#8 PEM private
 * key (free with dkim_secret_free), public (DKIM_PUBLIC_MAX) the p= value:
 * base64 of the SubjectPublicKeyInfo DER for RSA, of the raw 32-byte key for
 * Ed25519. 0 or -1. Safe on any thread.
 */
int dkim_key_generate(dkim_alg_t alg, char **pem, char *public_b64, size_t public_size);
/* The p= value of a PEM private key (as dkim_key_generate gives it). 0 or -1. */
int dkim_public_from_pem(dkim_alg_t alg, const char *pem, size_t pem_len, char *public_b64,
                         size_t public_size);
/* Wipe and free a string holding a private key; NULL is fine. */
void dkim_secret_free(char *pem);

/* ---- DNS records ---- */

/* "<selector>._domainkey.<domain>" into out; -1 when it does not fit. */
int dkim_record_name(const char *selector, const char *domain, char *out, size_t size);
/* "v=DKIM1; k=rsa; p=..." into out; -1 when it does not fit. */
int dkim_record_value(dkim_alg_t alg, const char *public_b64, char *out, size_t size);

/* What a published key record says. */
typedef struct dkim_record {
    char k[16];                  /* "rsa" when absent */
    char p[DKIM_PUBLIC_MAX + 1]; /* whitespace removed; "" for a revoked key */
} dkim_record_t;

/*
 * Parse a key record (RFC 6376 3.6.1): tag=value pairs; v= when present
 * must come first and be DKIM1; p= is required. 0, or -1 with why (static
 * text).
 */
int dkim_record_parse(const char *txt, size_t len, dkim_record_t *out, const char **why);

/* ---- canonicalization (relaxed) ---- */

/*
 * Relaxed header canonicalization (RFC 6376 3.4.2) of one field, which may
 * be folded and may end with CRLF: appended to out without the CRLF.
 */
int dkim_canon_header(const char *field, size_t len, buf_t *out);

#define DKIM_BODY_STAGE 4096

/* The relaxed body canonicalization as a stream. */
typedef struct dkim_body {
    void *md;            /* EVP_MD_CTX, or NULL when canonical bytes go to out */
    buf_t *out;          /* collect the canonical body (tests) */
    size_t crlf_pending; /* line ends seen since the last character */
    int wsp_pending;     /* whitespace seen inside the line */
    int cr_pending;      /* a CR that may start a CRLF */
    int any;             /* a character has been written */
    uint64_t length;     /* canonical bytes written */
    /* canonical bytes on their way to the digest: a digest update per
     * piece of a few bytes costs more than hashing them */
    size_t staged;
    char stage[DKIM_BODY_STAGE];
} dkim_body_t;

/* Start a body hash (SHA-256); 0 or -1. */
int dkim_body_init(dkim_body_t *b);
/* Or, for tests, collect the canonical bytes into out instead of hashing. */
void dkim_body_init_collect(dkim_body_t *b, buf_t *out);
/* Feed the next piece of the body (the bytes after the blank line). */
int dkim_body_update(dkim_body_t *b, const char *p, size_t len);
/* End the body; hash gets the digest (when hashing). Releases b. 0 or -1. */
int dkim_body_final(dkim_body_t *b, uint8_t hash[DKIM_HASH_LEN]);
/* Release without a result (safe after final). */
void dkim_body_release(dkim_body_t *b);

/* ---- signing ---- */

/*
 * Fields signed when present, in this order, then every Resent- field.
 * From is listed once more than it appears, so a From added on the way
 * breaks the signature (oversigning).
 */
extern const char *const dkim_signed_fields[];

/*
 * Sign: header is the header block (fields, with or without the blank line
 * that ends it), body_hash the body's relaxed SHA-256 (dkim_body_*), t the
 * signature time (seconds). For each key one DKIM-Signature field, folded,
 * CRLF-terminated, is appended to out, in the order of keys. 0, or -1 with
 * err (no From field, a key that cannot sign).
 */
int dkim_sign_header(const char *header, size_t header_len, const uint8_t body_hash[DKIM_HASH_LEN],
                     const char *domain, dkim_key_t *const *keys, size_t nkeys, uint64_t t,
                     buf_t *out, char *err, size_t errlen);

/* The whole message at once: header block, blank line, body. */
int dkim_sign_message(const char *msg, size_t len, const char *domain, dkim_key_t *const *keys,
                      size_t nkeys, uint64_t t, buf_t *out, char *err, size_t errlen);

/* ---- verifying (for tests of our own signatures) ---- */

/* The TXT record text for "<selector>._domainkey.<domain>", or NULL. */
typedef const char *(*dkim_lookup_fn)(const char *selector, const char *domain, void *arg);

typedef struct dkim_result {
    char domain[DKIM_DOMAIN_MAX + 1];
    char selector[DKIM_SELECTOR_MAX + 1];
    dkim_alg_t alg;
    int ok;        /* the signature verified */
    char why[128]; /* when not ok */
} dkim_result_t;

/*
 * Check each DKIM-Signature field of msg (relaxed/relaxed, rsa-sha256 or
 * ed25519-sha256, no l=). Fills up to max results; returns how many
 * signatures there were, or -1 when the message has no header block.
 */
int dkim_verify_message(const char *msg, size_t len, dkim_lookup_fn lookup, void *arg,
                        dkim_result_t *results, size_t max);

#endif
