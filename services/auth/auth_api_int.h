/*
 * auth_api_int: the api object as auth_api.c (management requests) and
 * auth_verify.c (login checks) share it. Nothing else includes this file.
 */
#ifndef SX_AUTH_API_INT_H
#define SX_AUTH_API_INT_H

#include "auth_api.h"
#include "auth_cache.h"

#include <openssl/rand.h>

struct auth_api {
    auth_store_t *st; /* borrowed */
    auth_api_conf_t conf;
    auth_cache_t *cache;
    char dummy_hash[AUTH_HASH_STR_MAX]; /* checked for unknown users */
    auth_event_fn event_fn;
    void *event_arg;
    uint64_t verify_ok;
    uint64_t verify_failed;
    uint64_t verify_busy;
};

/* 1 to AUTH_TENANT_MAX characters of a-z 0-9 . _ - */
int auth_tenant_name_valid(const char *s);
/* 1 to AUTH_USERNAME_MAX printable ASCII characters, no spaces */
int auth_username_valid(const char *s);

#endif
