/*
 * auth_hash: password hashes. A hash is one self-describing string,
 *
 *     $scrypt$ln=15,r=8,p=1$<base64 salt>$<base64 derived key>
 *
 * so the cost can be raised later while hashes made with older parameters
 * still verify. scrypt runs through OpenSSL 3, salts come from RAND_bytes and
 * the derived keys are compared in constant time. The module keeps no state
 * and is safe to call from any thread. It does not decide who may log in:
 * that is auth_api.
 */
#ifndef SX_AUTH_HASH_H
#define SX_AUTH_HASH_H

#include <stddef.h>
#include <stdint.h>

#define AUTH_SCRYPT_LN_MIN  10
#define AUTH_SCRYPT_LN_MAX  20
#define AUTH_SCRYPT_R_MAX   32
#define AUTH_SCRYPT_P_MAX   16
#define AUTH_SCRYPT_MEM_MAX (2ull << 30) /* refuse parameters that need more memory */

#define AUTH_HASH_SALT_LEN 16 /* salt of new hashes */
#define AUTH_HASH_KEY_LEN  32 /* derived key of new hashes */
#define AUTH_HASH_SALT_MIN 8  /* what a stored hash may carry */
#define AUTH_HASH_SALT_MAX 64
#define AUTH_HASH_KEY_MIN  16
#define AUTH_HASH_KEY_MAX  64
#define AUTH_HASH_STR_MAX  256 /* longest hash string, terminator included */

typedef struct auth_scrypt_params {
    unsigned ln; /* N = 2^ln */
    unsigned r;
    unsigned p;
} auth_scrypt_params_t;

typedef struct auth_hash_parsed {
    auth_scrypt_params_t params;
    unsigned char salt[AUTH_HASH_SALT_MAX];
    size_t salt_len;
    unsigned char key[AUTH_HASH_KEY_MAX];
    size_t key_len;
} auth_hash_parsed_t;

typedef enum {
    AUTH_HASH_MALFORMED = -1, /* the stored string is not a hash we can check */
    AUTH_HASH_MISMATCH = 0,
    AUTH_HASH_MATCH = 1,
} auth_hash_result_t;

/* Bytes of memory scrypt needs with these parameters. */
uint64_t auth_hash_memory(const auth_scrypt_params_t *p);

/* 0 when the parameters are within bounds; -1 with a reason otherwise. */
int auth_hash_params_check(const auth_scrypt_params_t *p, char *err, size_t errlen);

/*
 * Hash a password with a fresh random salt into out (AUTH_HASH_STR_MAX
 * bytes are always enough). 0, or -1 when the parameters are out of bounds
 * or OpenSSL fails.
 */
int auth_hash_make(const auth_scrypt_params_t *p, const void *password, size_t len, char *out,
                   size_t size);

/* Split a hash string into its parts; -1 when it is not well formed. */
int auth_hash_parse(const char *s, auth_hash_parsed_t *out);

/* Check a password against a stored hash string. */
auth_hash_result_t auth_hash_verify(const char *stored, const void *password, size_t len);

/* 1 if a well-formed stored hash uses other parameters than p (a candidate for rehashing). */
int auth_hash_outdated(const char *stored, const auth_scrypt_params_t *p);

#endif
