/*
 * delivery_dkim: DKIM signatures on outgoing messages. Before a task
 * connects, the message is signed by its sending domain: the From:
 * header's domain when it is a verified domain of the message's tenant,
 * else the envelope sender's domain when that one is, else nobody. The
 * tenant's domains (AuthDomainList) and a domain's private keys
 * (AuthDkimKeyGet) come from auth over the bus and are cached per tenant
 * and per domain for DKIM_CACHE_TTL_MS, "no keys" included. A task whose
 * answer is not cached waits for it at most DKIM_WAIT_MS; when auth does
 * not answer, the message goes unsigned (logged) and the failure is
 * remembered for DKIM_FAIL_TTL_MS, so a missing auth delays nothing more.
 * Every key of the domain signs (RSA and Ed25519: two DKIM-Signature
 * fields). The SMTP dialogue does not change: the task sends the signed
 * copy instead of the message.
 */
#ifndef SX_DELIVERY_DKIM_H
#define SX_DELIVERY_DKIM_H

#include "core/loop.h"
#include "delivery_session.h"
#include "ipc/bus.h"
#include "ipc/proto.h"

#define DKIM_CACHE_TTL_MS (5u * 60u * 1000u) /* tenants' domains and domains' keys */
#define DKIM_FAIL_TTL_MS  10000              /* auth did not answer: unsigned this long */
#define DKIM_WAIT_MS      2000               /* longest a task waits for auth */
#define DKIM_RETRY_MS     100                /* auth not connected yet: ask again after */
#define DKIM_CACHE_MAX    10000              /* tenants and domains cached */

typedef struct dkim_signer dkim_signer_t;
typedef struct dkim_prep dkim_prep_t;

/*
 * A signer asking auth at endpoint (the first bus.auth instance, which owns
 * the keys). NULL endpoint: nothing is signed.
 */
dkim_signer_t *dkim_signer_new(loop_t *loop, bus_t *bus, const char *endpoint);
void dkim_signer_destroy(dkim_signer_t **s);

/*
 * Sign txn's message (job's tenant and sender) if its domain has keys,
 * then start kick (0 ms), from the loop, never inside this call: by then
 * txn->body is what to send, signed or as it was. The returned handle owns
 * the signed copy; dkim_prep_free it when the task ends (that also stops a
 * wait). A NULL signer starts kick and returns NULL.
 */
dkim_prep_t *dkim_prepare(dkim_signer_t *s, loop_t *loop, const PB(DeliveryJob) * job,
                          session_txn_t *txn, const char *log_ids, loop_timer_t *kick);
void dkim_prep_free(dkim_prep_t **p);

#endif
