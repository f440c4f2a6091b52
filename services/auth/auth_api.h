/*
 * auth_api: what auth answers, without the bus. Each handler takes a
 * decoded request and fills a reply (or an error with a status code and a
 * text), so the bus glue in auth.c only decodes, dispatches and sends, and
 * tests call the handlers directly.
 *
 * Login verification comes in three steps so the slow part can leave the
 * loop thread: verify_begin (loop thread: checks the request and the
 * lockouts, reads the credential, tries the cache), auth_verify_run (any
 * thread: the scrypt or token check, touching only the job), verify_finish
 * (loop thread: a recheck if the credential changed meanwhile, cache,
 * lockout counts, stats, log, event, reply). auth_api_login_verify runs the
 * three in a row.
 *
 * Time (password expiry, lockouts, rate windows, token expiry, the login
 * cache) comes from one clock, the wall clock unless the conf gives
 * another, so tests can move it.
 *
 * Replies are heap protobuf messages; free them with auth_api_reply_free.
 * Not here: record bytes (auth_record), transactions (auth_store), threads
 * (auth_worker), the flush timer of the day counters (auth.c).
 */
#ifndef SX_AUTH_API_H
#define SX_AUTH_API_H

#include "auth_dkim.h"
#include "auth_guard.h"
#include "auth_hash.h"
#include "auth_jwt.h"
#include "auth_store.h"
#include "ipc/proto.h"

#include <stddef.h>
#include <stdint.h>

#define AUTH_PASSWORD_MIN       8
#define AUTH_PASSWORD_MAX       1024           /* bytes of a password or a login secret */
#define AUTH_GRACE_MAX_S        (30u * 86400u) /* longest rotation grace period */
#define AUTH_RATE_NAMES_DEFAULT 100000
#define AUTH_IP_MAX             64
#define AUTH_SID_MAX            64
#define AUTH_MECH_MAX           20
#define AUTH_ENV_MAX            16
/* How long ingress may skip the rate check of a credential and tenant that
 * have no limit: a limit set meanwhile takes effect within this time. */
#define AUTH_RATE_UNLIMITED_LEASE_MS 5000
#define AUTH_ERR_TEXT_MAX       256

#define AUTH_ENV_DEFAULT "production"

typedef struct auth_api auth_api_t;
typedef struct auth_verify auth_verify_t;

/* Wall-clock milliseconds. */
typedef uint64_t (*auth_clock_fn)(void *arg);

typedef struct auth_api_conf {
    auth_scrypt_params_t scrypt; /* for new hashes */
    uint64_t cache_ttl_ms;       /* 0: no cache */
    size_t cache_max;
    auth_guard_conf_t lockout;       /* failures 0: no lockouts */
    size_t rate_names_max;           /* names with rate windows in memory; 0: the default */
    const auth_jwt_issuers_t *oauth; /* borrowed; NULL: no bearer token passes */
    auth_clock_fn clock;             /* NULL: the real wall clock */
    void *clock_arg;
} auth_api_conf_t;

/* Why a management request was refused: 400, 404, 409 or 500. */
typedef struct auth_err {
    unsigned code;
    const char *enhanced; /* static */
    char text[AUTH_ERR_TEXT_MAX];
} auth_err_t;

typedef struct auth_stats {
    size_t tenants;
    size_t credentials;
    uint64_t verify_ok;
    uint64_t verify_failed;
    uint64_t verify_busy;   /* refused with 454 because the hash queue was full */
    uint64_t verify_locked; /* refused with 421 during a lockout, unchecked */
    uint64_t cache_hits;
    size_t cache_entries;
    uint64_t lockouts; /* lockouts begun */
    size_t lockout_entries;
    uint64_t rate_counted;
    uint64_t rate_refused;
    size_t rate_dirty; /* day counters waiting for the next flush */
} auth_stats_t;

/* Where events go (service_event in the daemon, a recorder in tests). */
typedef void (*auth_event_fn)(PB(Event) * ev, void *arg);

/* st is borrowed and must outlive the api. NULL with err on failure. */
auth_api_t *auth_api_new(auth_store_t *st, const auth_api_conf_t *conf, char *err, size_t errlen);
void auth_api_destroy(auth_api_t **api);
void auth_api_on_event(auth_api_t *api, auth_event_fn fn, void *arg);
void auth_api_stats(const auth_api_t *api, auth_stats_t *out);

/* Free any reply message a handler returned (NULL is fine). */
void auth_api_reply_free(void *reply);

/* ---- management: 0 and *reply, or -1 and *err ---- */

int auth_api_tenant_add(auth_api_t *api, const PB(AuthTenantAdd) * req,
                        PB(AuthTenantAddReply) * *reply, auth_err_t *err);
int auth_api_tenant_list(auth_api_t *api, const PB(AuthTenantList) * req,
                         PB(AuthTenantListReply) * *reply, auth_err_t *err);
/* Makes the domain's DKIM keys itself when it needs them (see _keyed). */
int auth_api_domain_add(auth_api_t *api, const PB(AuthDomainAdd) * req,
                        PB(AuthDomainAddReply) * *reply, auth_err_t *err);
int auth_api_domain_list(auth_api_t *api, const PB(AuthDomainList) * req,
                         PB(AuthDomainListReply) * *reply, auth_err_t *err);
int auth_api_credential_add(auth_api_t *api, const PB(AuthCredentialAdd) * req,
                            PB(AuthCredentialAddReply) * *reply, auth_err_t *err);
int auth_api_credential_list(auth_api_t *api, const PB(AuthCredentialList) * req,
                             PB(AuthCredentialListReply) * *reply, auth_err_t *err);

/* ---- auth_dkim_api.c: the DKIM keys of sending domains ---- */

/*
 * Keys are slow to make (RSA), so the daemon makes them on a worker: a
 * handler called with fresh NULL returns 1 when the domain will need keys
 * (of generation *generation), and is called again with them made by
 * auth_dkim_generate; with fresh given it never returns 1 and uses the
 * keys only if the domain still has none (or is rotated).
 */

/* AuthDomainAdd: a new domain gets keys of generation 1. */
int auth_api_domain_add_keyed(auth_api_t *api, const PB(AuthDomainAdd) * req,
                              auth_dkim_rec_t *fresh, PB(AuthDomainAddReply) * *reply,
                              auth_err_t *err);
/*
 * AuthDomainDkim: the domain with its keys; a domain without keys (written
 * before there were any) gets them, and rotate replaces them with the next
 * generation's (the old selectors stop signing at once).
 */
int auth_api_domain_dkim(auth_api_t *api, const PB(AuthDomainDkim) * req, auth_dkim_rec_t *fresh,
                         uint32_t *generation, PB(AuthDomainDkimReply) * *reply, auth_err_t *err);
/*
 * AuthDomainVerify in two steps around the DNS lookups: begin gives the
 * normalised domain and its keys (public parts only); finish takes one
 * check per key (auth_dkim_check), marks the domain verified when every
 * key matched and the keys did not change meanwhile, and replies. A check
 * that fails never takes a verification away.
 */
int auth_api_domain_verify_begin(auth_api_t *api, const PB(AuthDomainVerify) * req,
                                 char domain[AUTH_DOMAIN_MAX + 1], auth_dkim_rec_t *keys,
                                 auth_err_t *err);
int auth_api_domain_verify_finish(auth_api_t *api, const char *domain, const auth_dkim_rec_t *keys,
                                  PB(DkimCheck) * checks, PB(AuthDomainVerifyReply) * *reply,
                                  auth_err_t *err);
/* AuthDkimKeyGet: the private keys of a verified domain; 404 for others. */
int auth_api_dkim_key_get(auth_api_t *api, const PB(AuthDkimKeyGet) * req,
                          PB(AuthDkimKeyGetReply) * *reply, auth_err_t *err);

/* ---- auth_manage.c: rotation, revoke, allowlists, limits ---- */

int auth_api_credential_rotate(auth_api_t *api, const PB(AuthCredentialRotate) * req,
                               PB(AuthCredentialRotateReply) * *reply, auth_err_t *err);
int auth_api_credential_revoke(auth_api_t *api, const PB(AuthCredentialRevoke) * req,
                               PB(AuthCredentialRevokeReply) * *reply, auth_err_t *err);
int auth_api_allow_add(auth_api_t *api, const PB(AuthAllowAdd) * req, PB(AuthAllowReply) * *reply,
                       auth_err_t *err);
int auth_api_allow_remove(auth_api_t *api, const PB(AuthAllowRemove) * req,
                          PB(AuthAllowReply) * *reply, auth_err_t *err);
int auth_api_allow_list(auth_api_t *api, const PB(AuthAllowList) * req, PB(AuthAllowReply) * *reply,
                        auth_err_t *err);
int auth_api_limit_set(auth_api_t *api, const PB(AuthLimitSet) * req,
                       PB(AuthLimitSetReply) * *reply, auth_err_t *err);

/*
 * May this login send one more message? A refusal is a reply (ok false,
 * 451 4.7.1); an unknown tenant or credential is an error (404).
 */
int auth_api_rate_check(auth_api_t *api, const PB(AuthRateCheck) * req,
                        PB(AuthRateCheckReply) * *reply, auth_err_t *err);
/* Day counters changed and not yet written; write them (one transaction). */
size_t auth_api_rate_pending(const auth_api_t *api);
int auth_api_rate_flush(auth_api_t *api);

/* ---- login verification ---- */

/* All three steps at once: always a reply (235, 535, 421, 454 or 504). */
PB(AuthLoginVerifyReply) * auth_api_login_verify(auth_api_t *api, const PB(AuthLoginVerify) * req);

/*
 * Step 1. Returns a job that needs a hash or token check, or NULL with
 * *reply set when the answer is already known (cache hit, lockout,
 * malformed request).
 */
auth_verify_t *auth_api_verify_begin(auth_api_t *api, const PB(AuthLoginVerify) * req,
                                     PB(AuthLoginVerifyReply) * *reply);
/* Step 2, on any thread. */
void auth_verify_run(auth_verify_t *v);
/* Step 3: consumes the job. */
PB(AuthLoginVerifyReply) * auth_api_verify_finish(auth_api_t *api, auth_verify_t **v);
/* Instead of steps 2 and 3 when no worker can take the job: 454, try later. */
PB(AuthLoginVerifyReply) * auth_api_verify_busy(auth_api_t *api, auth_verify_t **v);
/* Drop a job without an answer (shutdown). */
void auth_verify_free(auth_verify_t **v);

#endif
