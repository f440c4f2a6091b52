/*
 * auth_record: the byte layout of auth's stored records. Every value starts
 * with two bytes, the record kind ('T' tenant, 'D' domain, 'C' credential)
 * and the format version, then fields, each a tag (1 byte), a length
 * (4 bytes, little-endian) and that many bytes. The credential decoder keeps
 * fields it does not know and the encoder writes them back unchanged, so a
 * credential written by a newer version survives a rewrite by an older one
 * (protobuf-c does the same inside the packed messages). The public part of
 * tenants and credentials is the auth.proto message (Tenant, Credential)
 * packed in field 1, so it reaches list replies as is; what never leaves the
 * service (password hashes, generation) has fields of its own.
 *
 * A domain's DKIM keys are a record of their own ('K'): the generation
 * that named their selectors, when their DNS records last matched, and per
 * key its selector, algorithm, creation time, public value and PEM private
 * key, each key a field holding sub-fields of the same tag-length shape.
 *
 * Decoders check every length and refuse what does not add up; they never
 * trust the bytes. Which key holds which record is auth_store's business.
 */
#ifndef SX_AUTH_RECORD_H
#define SX_AUTH_RECORD_H

#include "core/buf.h"
#include "ipc/proto.h"

#include <stddef.h>
#include <stdint.h>

#define AUTH_RECORD_VERSION 1
#define AUTH_RECORD_MAX     (64u << 10) /* no record of ours comes near this */

#define AUTH_TENANT_MAX        64 /* tenant name length */
#define AUTH_USERNAME_MAX      128
#define AUTH_DOMAIN_MAX        255
#define AUTH_CRED_DOMAINS_MAX  100 /* sending domains named on one credential */
#define AUTH_SECRETS_MAX       8   /* live secrets on one credential (rotation) */
#define AUTH_CRED_NETWORKS_MAX 64  /* client networks allowed on one credential */
#define AUTH_NETWORK_MAX       49  /* "ffff:...:ffff/128", normalised */
#define AUTH_DKIM_KEYS_MAX     2   /* keys a domain signs with at once (RSA, Ed25519) */
#define AUTH_DKIM_SELECTOR_MAX 63
#define AUTH_DKIM_PEM_MAX      8192
#define AUTH_DKIM_PUBLIC_MAX   512

/* Field tags of a credential record. */
enum {
    AUTH_CRED_F_PUBLIC = 1,     /* packed Credential message */
    AUTH_CRED_F_GENERATION = 2, /* u64: changes on every write of the credential */
    AUTH_CRED_F_SECRET = 3,     /* one per live secret, see auth_secret_t */
    AUTH_CRED_F_NETWORKS = 4,   /* reserved; networks live in the public part */
    AUTH_CRED_F_UPDATED = 5,    /* u64 wall ms of the last write */
};

typedef enum {
    AUTH_SECRET_PASSWORD = 1, /* hash is an auth_hash string */
} auth_secret_kind_t;

/*
 * One secret a credential accepts. Several live at once while a password
 * is rotated: the old one gets an expiry, the new one none.
 */
typedef struct auth_secret {
    uint8_t kind;           /* auth_secret_kind_t; others are kept but never match */
    uint64_t created_at_ms; /* wall clock */
    uint64_t expires_at_ms; /* 0: no end */
    char *hash;
} auth_secret_t;

typedef struct auth_cred {
    PB(Credential) * pub; /* username, tenant, environment, created, revoked, domains,
                             networks, limits, rotated */
    uint64_t generation;
    uint64_t updated_at_ms;
    auth_secret_t *secrets;
    size_t n_secrets;
    buf_t unknown; /* fields of a newer format, written back as they were */
} auth_cred_t;

/*
 * A sending domain. A record written before the verified flag existed
 * decodes as verified: the domain was usable then, and an upgrade must not
 * stop a tenant's mail.
 */
typedef struct auth_domain_rec {
    char tenant[AUTH_TENANT_MAX + 1];
    uint64_t created_at_ms;
    int verified;
} auth_domain_rec_t;

/* One DKIM key of a domain. */
typedef struct auth_dkim_key {
    char selector[AUTH_DKIM_SELECTOR_MAX + 1];
    uint8_t alg; /* dkim_alg_t */
    uint64_t created_at_ms;
    char *public_b64;  /* the p= value */
    char *private_pem; /* never logged; leaves auth only in AuthDkimKeyGetReply */
} auth_dkim_key_t;

/*
 * A domain's DKIM keys. Generation g names the selectors "sx<g>" (RSA) and
 * "sx<g>e" (Ed25519); a rotation makes generation g + 1 and replaces them.
 */
typedef struct auth_dkim_rec {
    uint32_t generation;     /* 0: no keys */
    uint64_t verified_at_ms; /* when DNS last showed every key; 0: never */
    size_t n;
    auth_dkim_key_t keys[AUTH_DKIM_KEYS_MAX];
} auth_dkim_rec_t;

/* Wipe the private keys and free the strings; the record is empty after. */
void auth_dkim_rec_clear(auth_dkim_rec_t *r);
/* Give dst the keys of src (dst cleared first); src is empty after. */
void auth_dkim_rec_move(auth_dkim_rec_t *dst, auth_dkim_rec_t *src);

/* An empty credential (pub allocated, no secrets). */
void auth_cred_init(auth_cred_t *c);
void auth_cred_clear(auth_cred_t *c);
/* Append a secret (hash copied); -1 when the credential has AUTH_SECRETS_MAX already. */
int auth_cred_add_secret(auth_cred_t *c, uint8_t kind, const char *hash, uint64_t created_at_ms,
                         uint64_t expires_at_ms);

/* Password secrets that still work at now_ms (wall clock). */
size_t auth_cred_live_passwords(const auth_cred_t *c, uint64_t now_ms);
/* Drop secrets whose expiry has passed (their hashes wiped). */
void auth_cred_prune(auth_cred_t *c, uint64_t now_ms);
/* Drop every secret (revoke). */
void auth_cred_drop_secrets(auth_cred_t *c);

/* Encoders append to out and return 0, or -1 when the record would pass AUTH_RECORD_MAX. */
int auth_record_tenant_encode(const PB(Tenant) * t, buf_t *out);
int auth_record_domain_encode(const auth_domain_rec_t *d, buf_t *out);
int auth_record_cred_encode(const auth_cred_t *c, buf_t *out);
int auth_record_dkim_encode(const auth_dkim_rec_t *r, buf_t *out);

/* Decoders return NULL / -1 for bytes that are not a valid record of that kind. */
PB(Tenant) * auth_record_tenant_decode(const void *data, size_t len);
int auth_record_domain_decode(const void *data, size_t len, auth_domain_rec_t *out);
/* out is filled (free with auth_cred_clear) only on success. */
int auth_record_cred_decode(const void *data, size_t len, auth_cred_t *out);
/* out is filled (free with auth_dkim_rec_clear) only on success. */
int auth_record_dkim_decode(const void *data, size_t len, auth_dkim_rec_t *out);

#endif
