/*
 * auth_jwt: bearer tokens (XOAUTH2, OAUTHBEARER) checked locally as JWTs
 * against the issuers in the config (auth.oauth_issuers). A token passes
 * when it is three parts of strict base64url (no padding), its header's
 * alg is exactly its issuer's algorithm (HS256, RS256 or ES256; "none" and
 * everything else refused), its signature verifies with that issuer's key
 * (OpenSSL 3), and its claims hold: iss is a configured issuer, aud (a
 * string or an array) holds its audience, exp is present and not past,
 * nbf and iat (when present) are not in the future, each with
 * AUTH_JWT_SKEW_S of clock skew allowed, and the identity claim (email if
 * present, else sub) equals the SASL user name.
 *
 * The issuer list is built once at start and read-only afterwards, so
 * auth_jwt_verify may run on any thread. Nothing here logs; a token is
 * never copied anywhere but the caller's memory. Not here: whether the
 * user may log in at all (auth_verify).
 */
#ifndef SX_AUTH_JWT_H
#define SX_AUTH_JWT_H

#include <libconfig.h>
#include <stddef.h>
#include <stdint.h>

#define AUTH_JWT_TOKEN_MAX    8192 /* bytes of a token */
#define AUTH_JWT_ISSUERS_MAX  16
#define AUTH_JWT_NAME_MAX     255 /* issuer and audience */
#define AUTH_JWT_SECRET_MIN   32  /* bytes of an HS256 secret */
#define AUTH_JWT_SECRET_MAX   1024
#define AUTH_JWT_RSA_BITS_MIN 2048
#define AUTH_JWT_SKEW_S       60

typedef enum {
    AUTH_JWT_OK = 0,
    AUTH_JWT_MALFORMED, /* not three base64url parts holding JSON objects */
    AUTH_JWT_ALG,       /* alg "none", unknown, or not the issuer's */
    AUTH_JWT_ISSUER,    /* iss missing or not configured */
    AUTH_JWT_SIGNATURE,
    AUTH_JWT_EXPIRED, /* exp missing or past */
    AUTH_JWT_NOT_YET, /* nbf or iat in the future */
    AUTH_JWT_AUDIENCE,
    AUTH_JWT_IDENTITY, /* email (or sub) is not the user name */
} auth_jwt_status_t;

typedef struct auth_jwt_issuers auth_jwt_issuers_t;

typedef struct auth_jwt_result {
    auth_jwt_status_t status;
    /* the configured issuer the token names ("" when none), for the error reply */
    char issuer[AUTH_JWT_NAME_MAX + 1];
} auth_jwt_result_t;

/* Call once on the main thread before tokens are checked on other threads. */
void auth_jwt_global_init(void);

auth_jwt_issuers_t *auth_jwt_issuers_new(void);
void auth_jwt_issuers_destroy(auth_jwt_issuers_t **l);
size_t auth_jwt_issuers_count(const auth_jwt_issuers_t *l);

/*
 * Add an issuer. algorithm is "HS256" (secret, at least AUTH_JWT_SECRET_MIN
 * bytes), "RS256" (public_key: a PEM public key or certificate of an RSA
 * key of AUTH_JWT_RSA_BITS_MIN bits or more) or "ES256" (public_key: a P-256
 * key). 0, or -1 with the reason in err.
 */
int auth_jwt_issuers_add(auth_jwt_issuers_t *l, const char *issuer, const char *audience,
                         const char *algorithm, const char *secret, const char *public_key,
                         char *err, size_t errlen);

/*
 * The config's oauth_issuers list, as a conf CUSTOM field (field is an
 * auth_jwt_issuers_t *; absent: NULL). Each error names the entry and its
 * file:line.
 */
int auth_jwt_conf_parse(const config_setting_t *s, void *field, char *err, size_t errlen);
void auth_jwt_conf_release(void *field);

/* Check token for identity at now_ms (wall clock). l may be NULL (no issuers). */
auth_jwt_status_t auth_jwt_verify(const auth_jwt_issuers_t *l, const void *token, size_t len,
                                  const char *identity, uint64_t now_ms, auth_jwt_result_t *out);

/* "token_expired"...: the reason word for logs and events. */
const char *auth_jwt_status_name(auth_jwt_status_t s);

#endif
