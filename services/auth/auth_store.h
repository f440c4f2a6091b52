/*
 * auth_store: auth's LMDB store (libshared store), one named database per
 * record kind:
 *
 *   tenants         name             -> tenant record
 *   domains         domain           -> domain record (its tenant, verified)
 *   tenant_domains  tenant \0 domain -> empty (a tenant's domains, in order)
 *   dkim            domain           -> the domain's DKIM keys (private keys too)
 *   credentials     username         -> credential record
 *   rate_day        rate key         -> u64 window start (wall ms), u32 count
 *   meta            "schema"         -> u32 store format version
 *                   "generation"     -> u64 last credential generation given
 *
 * Every write is one store_write() transaction (a synced commit) that
 * checks and writes together, so two requests racing for one name cannot
 * both win. Generations come from one counter for the whole store, so a
 * credential removed and created again never reuses one. A record that does
 * not decode is logged and skipped (or reported as corrupt), never trusted.
 * Not here: the syntax of names (auth_api), record bytes (auth_record).
 */
#ifndef SX_AUTH_STORE_H
#define SX_AUTH_STORE_H

#include "auth_record.h"

#include <stddef.h>
#include <stdint.h>

#define AUTH_STORE_SCHEMA 1

typedef struct auth_store auth_store_t;

typedef enum {
    AUTH_ST_OK = 0,
    AUTH_ST_NOTFOUND, /* a named record (or one it refers to) is missing */
    AUTH_ST_EXISTS,   /* the name is taken */
    AUTH_ST_CONFLICT, /* the domain belongs to another tenant */
    AUTH_ST_CORRUPT,  /* a record needed for the answer does not decode */
    AUTH_ST_FULL,     /* the store is at its size ceiling or the disk is full */
    AUTH_ST_ERROR,
} auth_st_t;

auth_store_t *auth_store_open(const char *dir, char *err, size_t errlen);
void auth_store_close(auth_store_t **st);

/* Records in the store, counted at open and kept up to date by the adds. */
size_t auth_store_tenant_count(const auth_store_t *st);
size_t auth_store_cred_count(const auth_store_t *st);

/* On refusal, err says why in words fit for an operator. */
auth_st_t auth_store_tenant_add(auth_store_t *st, const char *name, uint64_t now_ms,
                                PB(Tenant) * *out, char *err, size_t errlen);
/* Every tenant with its domains; the caller frees each (free_unpacked) and the array. */
auth_st_t auth_store_tenant_list(auth_store_t *st, PB(Tenant) * **out, size_t *n);
/* 1 if the tenant exists, 0 if not, -1 on a store error. */
int auth_store_tenant_exists(auth_store_t *st, const char *name);

/* The tenant record (with its domains); *out freed with free_unpacked. */
auth_st_t auth_store_tenant_get(auth_store_t *st, const char *name, PB(Tenant) * *out);
/* Set a tenant's message rate limits (0: none). */
auth_st_t auth_store_tenant_set_limits(auth_store_t *st, const char *name, uint32_t per_minute,
                                       uint32_t per_day, char *err, size_t errlen);

/*
 * Add a domain to a tenant, with keys (NULL or none: no DKIM keys yet).
 * Adding a domain the tenant already has, but unverified, with verified
 * set marks it verified (*updated = 1), and gives it keys when it has
 * none; any other repeat is AUTH_ST_EXISTS, another tenant's domain
 * AUTH_ST_CONFLICT.
 */
auth_st_t auth_store_domain_add(auth_store_t *st, const char *domain, const char *tenant,
                                int verified, uint64_t now_ms, const auth_dkim_rec_t *keys,
                                int *updated, char *err, size_t errlen);
/* One domain's public view, with its DKIM keys' public parts; free_unpacked. */
auth_st_t auth_store_domain_get(auth_store_t *st, const char *domain, PB(Domain) * *out);

/* ---- DKIM keys ---- */

/*
 * The domain's record and keys (keys->n 0 and generation 0 when it has
 * none); keys filled (auth_dkim_rec_clear) only on AUTH_ST_OK.
 */
auth_st_t auth_store_dkim_get(auth_store_t *st, const char *domain, auth_domain_rec_t *dom,
                              auth_dkim_rec_t *keys);
/*
 * Replace the domain's keys with keys if they are still at generation
 * expected (0: it had none), else AUTH_ST_CONFLICT (someone rotated
 * meanwhile). The domain's verified flag is left as it is.
 */
auth_st_t auth_store_dkim_replace(auth_store_t *st, const char *domain, const auth_dkim_rec_t *keys,
                                  uint32_t expected, char *err, size_t errlen);
/*
 * DNS showed every key of generation: mark the domain verified and note
 * when. AUTH_ST_CONFLICT when its keys changed since.
 */
auth_st_t auth_store_dkim_verified(auth_store_t *st, const char *domain, uint32_t generation,
                                   uint64_t now_ms, char *err, size_t errlen);
/* Domains of tenant ("" or NULL: all), by name; free each (free_unpacked) and the array. */
auth_st_t auth_store_domain_list(auth_store_t *st, const char *tenant, PB(Domain) * **out,
                                 size_t *n);

/* The checks auth_store_cred_add will make, without writing (before a slow hash). */
auth_st_t auth_store_cred_check(auth_store_t *st, const auth_cred_t *c, char *err, size_t errlen);
/* Add a new credential; sets c->generation. */
auth_st_t auth_store_cred_add(auth_store_t *st, auth_cred_t *c, char *err, size_t errlen);
/*
 * Write a changed credential (revoke, password rotation) if it is still at
 * expected_generation (else AUTH_ST_CONFLICT: someone changed it meanwhile);
 * sets c->generation to a new one, which retires its cached logins.
 */
auth_st_t auth_store_cred_update(auth_store_t *st, auth_cred_t *c, uint64_t expected_generation,
                                 char *err, size_t errlen);
/* out filled (auth_cred_clear) only on AUTH_ST_OK. */
auth_st_t auth_store_cred_get(auth_store_t *st, const char *username, auth_cred_t *out);
/*
 * Public parts of the credentials of tenant ("" or NULL: all), by username,
 * password_count counting the passwords still live at now_ms.
 */
auth_st_t auth_store_cred_list(auth_store_t *st, const char *tenant, uint64_t now_ms,
                               PB(Credential) * **out, size_t *n);

/*
 * The sending domains a login with c may use: its own list when not empty,
 * else every domain of its tenant; either way only verified domains the
 * tenant still owns. *v is a new array of new strings (free each and the
 * array).
 */
auth_st_t auth_store_login_domains(auth_store_t *st, const auth_cred_t *c, char ***v, size_t *n);

/* ---- day counters of the rate limiter ---- */

typedef struct auth_rate_rec {
    const char *key;
    uint64_t start_ms; /* start of the 24 h window; 0 with count 0: delete the record */
    uint32_t count;
} auth_rate_rec_t;

/* AUTH_ST_OK with the stored window, AUTH_ST_NOTFOUND, or an error. */
auth_st_t auth_store_rate_get(auth_store_t *st, const char *key, uint64_t *start_ms,
                              uint32_t *count);
/* Write (or delete) n counters in one transaction. */
auth_st_t auth_store_rate_put(auth_store_t *st, const auth_rate_rec_t *recs, size_t n);

#endif
