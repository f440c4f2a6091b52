/*
 * auth_hash: scrypt password hashes in a self-describing string. Parsing is
 * strict (exact field order, bounded numbers, canonical base64), because a
 * string that parses loosely could make the service spend unbounded memory
 * or accept something it never wrote. No state, no logging.
 */
#include "auth_hash.h"
#include "mail/base64.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>

#define HASH_PREFIX     "$scrypt$"
#define HASH_NUM_DIGITS 3 /* no parameter needs more */

uint64_t auth_hash_memory(const auth_scrypt_params_t *p)
{
    /* what OpenSSL's scrypt allocates: B (128*r*p) and V (128*r*(N+2)) */
    uint64_t n = 1ull << p->ln;
    return 128ull * p->r * (n + 2) + 128ull * p->r * p->p;
}

int auth_hash_params_check(const auth_scrypt_params_t *p, char *err, size_t errlen)
{
    if (p->ln < AUTH_SCRYPT_LN_MIN || p->ln > AUTH_SCRYPT_LN_MAX) {
        snprintf(err, errlen, "scrypt ln %u is out of range %d..%d", p->ln, AUTH_SCRYPT_LN_MIN,
                 AUTH_SCRYPT_LN_MAX);
        return -1;
    }
    if (p->r < 1 || p->r > AUTH_SCRYPT_R_MAX) {
        snprintf(err, errlen, "scrypt r %u is out of range 1..%d", p->r, AUTH_SCRYPT_R_MAX);
        return -1;
    }
    if (p->p < 1 || p->p > AUTH_SCRYPT_P_MAX) {
        snprintf(err, errlen, "scrypt p %u is out of range 1..%d", p->p, AUTH_SCRYPT_P_MAX);
        return -1;
    }
    if (auth_hash_memory(p) > AUTH_SCRYPT_MEM_MAX) {
        snprintf(err, errlen, "scrypt ln=%u r=%u needs %llu MiB, more than the %llu MiB allowed",
                 p->ln, p->r, (unsigned long long)(auth_hash_memory(p) >> 20),
                 (unsigned long long)(AUTH_SCRYPT_MEM_MAX >> 20));
        return -1;
    }
    return 0;
}

static int params_ok(const auth_scrypt_params_t *p)
{
    char err[160];
    return auth_hash_params_check(p, err, sizeof(err)) == 0;
}

/* Derive key_len bytes; 0 or -1. */
static int derive(const auth_scrypt_params_t *p, const void *password, size_t len,
                  const unsigned char *salt, size_t salt_len, unsigned char *key, size_t key_len)
{
    if (!params_ok(p))
        return -1;
    uint64_t maxmem = auth_hash_memory(p);
    const char *pw = len ? password : "";
    return EVP_PBE_scrypt(pw, len, salt, salt_len, 1ull << p->ln, p->r, p->p, maxmem, key,
                          key_len) == 1
               ? 0
               : -1;
}

int auth_hash_make(const auth_scrypt_params_t *p, const void *password, size_t len, char *out,
                   size_t size)
{
    unsigned char salt[AUTH_HASH_SALT_LEN], key[AUTH_HASH_KEY_LEN];
    char salt64[AUTH_HASH_SALT_LEN * 2], key64[AUTH_HASH_KEY_LEN * 2];
    int rc = -1;
    if (!params_ok(p) || RAND_bytes(salt, sizeof(salt)) != 1)
        return -1;
    if (derive(p, password, len, salt, sizeof(salt), key, sizeof(key)) < 0)
        goto done;
    if (base64_encode(salt, sizeof(salt), salt64, sizeof(salt64)) < 0 ||
        base64_encode(key, sizeof(key), key64, sizeof(key64)) < 0)
        goto done;
    int n =
        snprintf(out, size, HASH_PREFIX "ln=%u,r=%u,p=%u$%s$%s", p->ln, p->r, p->p, salt64, key64);
    if (n > 0 && (size_t)n < size)
        rc = 0;
done:
    OPENSSL_cleanse(key, sizeof(key));
    return rc;
}

/* Read "<name>=<digits>" followed by term; advances *s. */
static int parse_param(const char **s, const char *name, char term, unsigned *out)
{
    size_t nlen = strlen(name);
    if (strncmp(*s, name, nlen) != 0 || (*s)[nlen] != '=')
        return -1;
    const char *d = *s + nlen + 1;
    unsigned v = 0;
    size_t i = 0;
    for (; d[i] >= '0' && d[i] <= '9'; i++) {
        if (i == HASH_NUM_DIGITS)
            return -1;
        v = v * 10 + (unsigned)(d[i] - '0');
    }
    if (i == 0 || (i > 1 && d[0] == '0') || d[i] != term)
        return -1;
    *out = v;
    *s = d + i + 1;
    return 0;
}

int auth_hash_parse(const char *s, auth_hash_parsed_t *out)
{
    memset(out, 0, sizeof(*out));
    if (s == NULL || strnlen(s, AUTH_HASH_STR_MAX) >= AUTH_HASH_STR_MAX)
        return -1;
    if (strncmp(s, HASH_PREFIX, strlen(HASH_PREFIX)) != 0)
        return -1;
    const char *p = s + strlen(HASH_PREFIX);
    if (parse_param(&p, "ln", ',', &out->params.ln) < 0 ||
        parse_param(&p, "r", ',', &out->params.r) < 0 ||
        parse_param(&p, "p", '$', &out->params.p) < 0 || !params_ok(&out->params))
        return -1;
    const char *dollar = strchr(p, '$');
    if (dollar == NULL)
        return -1;
    const char *key = dollar + 1;
    if (strchr(key, '$') != NULL)
        return -1;
    long salt_len = base64_decode(p, (size_t)(dollar - p), out->salt, sizeof(out->salt));
    long key_len = base64_decode(key, strlen(key), out->key, sizeof(out->key));
    if (salt_len < AUTH_HASH_SALT_MIN || key_len < AUTH_HASH_KEY_MIN)
        return -1;
    out->salt_len = (size_t)salt_len;
    out->key_len = (size_t)key_len;
    return 0;
}

auth_hash_result_t auth_hash_verify(const char *stored, const void *password, size_t len)
{
    auth_hash_parsed_t h;
    unsigned char key[AUTH_HASH_KEY_MAX];
    if (auth_hash_parse(stored, &h) < 0)
        return AUTH_HASH_MALFORMED;
    if (derive(&h.params, password, len, h.salt, h.salt_len, key, h.key_len) < 0)
        return AUTH_HASH_MALFORMED;
    int same = CRYPTO_memcmp(key, h.key, h.key_len) == 0;
    OPENSSL_cleanse(key, sizeof(key));
    return same ? AUTH_HASH_MATCH : AUTH_HASH_MISMATCH;
}

int auth_hash_outdated(const char *stored, const auth_scrypt_params_t *p)
{
    auth_hash_parsed_t h;
    if (auth_hash_parse(stored, &h) < 0)
        return 0;
    return h.params.ln != p->ln || h.params.r != p->r || h.params.p != p->p;
}
