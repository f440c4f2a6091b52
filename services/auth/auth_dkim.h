/*
 * auth_dkim: a sending domain's DKIM keys as auth sees them. Making a key
 * set (slow: an RSA key; safe on a worker thread), turning it into the
 * DkimKey messages of replies (public parts and the TXT records to
 * publish, never the private keys), and judging what DNS returned for a
 * key's record. It stores nothing (auth_store) and looks nothing up
 * (auth_dns).
 */
#ifndef SX_AUTH_DKIM_H
#define SX_AUTH_DKIM_H

#include "auth_record.h"
#include "ipc/proto.h"

#include <stddef.h>
#include <stdint.h>

#define AUTH_DKIM_TXT_NAME_MAX  320 /* "<selector>._domainkey.<domain>" */
#define AUTH_DKIM_TXT_VALUE_MAX 600
#define AUTH_DKIM_DETAIL_MAX    200

/*
 * The keys of generation g: RSA 2048 "sx<g>" and Ed25519 "sx<g>e", created
 * at now_ms, into rec (cleared first). 0, or -1 when OpenSSL fails. Any
 * thread: it touches only rec.
 */
int auth_dkim_generate(auth_dkim_rec_t *rec, uint32_t generation, uint64_t now_ms);

/* The public view of rec for domain: one new DkimKey per key (free each and the array). */
PB(DkimKey) * *auth_dkim_public(const char *domain, const auth_dkim_rec_t *rec, size_t *n);

/*
 * Judge one key against what a TXT lookup of its record gave: the texts of
 * the records found (each one's strings joined), or lookup_err when the
 * lookup failed. Fills check (strings owned by check: free with
 * auth_dkim_check_clear); returns 1 when a record matches the key.
 */
int auth_dkim_check(const char *domain, const auth_dkim_key_t *key, char *const *txts, size_t n,
                    const char *lookup_err, PB(DkimCheck) * check);
void auth_dkim_check_clear(PB(DkimCheck) * check);

#endif
