/*
 * auth_api_int: the api object as auth_api.c and auth_manage.c (management
 * requests) and auth_verify.c (login checks) share it, with the helpers
 * they have in common. Nothing else includes this file.
 */
#ifndef SX_AUTH_API_INT_H
#define SX_AUTH_API_INT_H

#include "auth_api.h"
#include "auth_cache.h"
#include "auth_guard.h"
#include "auth_rate.h"

#include <openssl/rand.h>

struct auth_api {
    auth_store_t *st; /* borrowed */
    auth_api_conf_t conf;
    auth_cache_t *cache;
    auth_guard_t *guard;
    auth_rate_t *rate;
    char dummy_hash[AUTH_HASH_STR_MAX]; /* checked for unknown users */
    auth_event_fn event_fn;
    void *event_arg;
    uint64_t verify_ok;
    uint64_t verify_failed;
    uint64_t verify_busy;
    uint64_t verify_locked;
};

/* The api's clock: wall-clock ms. */
uint64_t auth_now(const auth_api_t *api);

/* Fill err (400/404/409/500) and return -1. */
int auth_fail(auth_err_t *err, unsigned code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Turn a store refusal into an error; text is the store's explanation. */
int auth_fail_store(auth_err_t *err, auth_st_t st, const char *text, unsigned conflict_code);
/* A value from a request, quoted for an error text. */
const char *auth_quoted(char *buf, size_t size, const char *s);
static inline const char *auth_str(const char *s)
{
    return s ? s : "";
}
/* A copy of a credential's public part, for a reply. */
PB(Credential) * auth_credential_copy(const PB(Credential) * p);

/* Lowercase and check a sending domain into out; 0 or -1. */
int auth_domain_normalize(const char *in, char out[AUTH_DOMAIN_MAX + 1]);
/* 1 to AUTH_TENANT_MAX characters of a-z 0-9 . _ - */
int auth_tenant_name_valid(const char *s);
/* 1 to AUTH_USERNAME_MAX printable ASCII characters, no spaces */
int auth_username_valid(const char *s);

#endif
