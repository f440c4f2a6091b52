/*
 * auth_jwt: strict base64url, the JOSE header and claims through jansson
 * (duplicate keys refused), signatures through OpenSSL 3: HMAC for HS256,
 * EVP_DigestVerify for RS256 (PKCS#1 v1.5) and ES256 (the token's raw
 * r||s turned into the DER form OpenSSL checks). Signatures are checked
 * before any claim but iss, which picks the key.
 */
#include "auth_jwt.h"
#include "core/alloc.h"
#include "core/conf.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define JWT_SHA256_LEN   32
#define JWT_ES256_SIGLEN 64
#define JWT_EC_GROUP     "prime256v1"

typedef enum { JWT_HS256 = 1, JWT_RS256, JWT_ES256 } jwt_alg_t;

static const char *const alg_names[] = {
    [JWT_HS256] = "HS256", [JWT_RS256] = "RS256", [JWT_ES256] = "ES256"};

typedef struct jwt_issuer {
    char *issuer;
    char *audience;
    jwt_alg_t alg;
    unsigned char *secret; /* HS256 */
    size_t secret_len;
    EVP_PKEY *key; /* RS256, ES256 */
} jwt_issuer_t;

struct auth_jwt_issuers {
    jwt_issuer_t v[AUTH_JWT_ISSUERS_MAX];
    size_t n;
};

void auth_jwt_global_init(void)
{
    /* jansson seeds its hash on first use; do it here, not racing on a worker */
    json_object_seed(0);
}

auth_jwt_issuers_t *auth_jwt_issuers_new(void)
{
    return xcalloc(1, sizeof(auth_jwt_issuers_t));
}

void auth_jwt_issuers_destroy(auth_jwt_issuers_t **p)
{
    auth_jwt_issuers_t *l = *p;
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->n; i++) {
        jwt_issuer_t *is = &l->v[i];
        free(is->issuer);
        free(is->audience);
        if (is->secret) {
            OPENSSL_cleanse(is->secret, is->secret_len);
            free(is->secret);
        }
        EVP_PKEY_free(is->key);
    }
    free(l);
    *p = NULL;
}

size_t auth_jwt_issuers_count(const auth_jwt_issuers_t *l)
{
    return l ? l->n : 0;
}

static int set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* An issuer or audience: 1 to AUTH_JWT_NAME_MAX printable ASCII bytes, no quotes or spaces. */
static int name_ok(const char *s)
{
    size_t n = s ? strnlen(s, AUTH_JWT_NAME_MAX + 1) : 0;
    if (n == 0 || n > AUTH_JWT_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f || s[i] == '"' ||
            s[i] == '\\')
            return 0;
    return 1;
}

/* A public key from a PEM file holding a public key or a certificate. */
static EVP_PKEY *load_key(const char *path, char *err, size_t errlen)
{
    BIO *bio = BIO_new_file(path, "r");
    if (bio == NULL) {
        set_err(err, errlen, "public_key %s: cannot read: %s", path, strerror(errno));
        return NULL;
    }
    EVP_PKEY *key = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    if (key == NULL) {
        (void)BIO_reset(bio);
        X509 *cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (cert) {
            key = X509_get_pubkey(cert);
            X509_free(cert);
        }
    }
    BIO_free(bio);
    if (key == NULL)
        set_err(err, errlen, "public_key %s: no PEM public key or certificate in it", path);
    return key;
}

static int key_fits(EVP_PKEY *key, jwt_alg_t alg, const char *path, char *err, size_t errlen)
{
    if (alg == JWT_RS256) {
        if (!EVP_PKEY_is_a(key, "RSA"))
            return set_err(err, errlen, "public_key %s: RS256 needs an RSA key", path);
        if (EVP_PKEY_get_bits(key) < AUTH_JWT_RSA_BITS_MIN)
            return set_err(err, errlen, "public_key %s: RSA key of %d bits, at least %d needed",
                           path, EVP_PKEY_get_bits(key), AUTH_JWT_RSA_BITS_MIN);
        return 0;
    }
    char group[64] = "";
    if (!EVP_PKEY_is_a(key, "EC") ||
        EVP_PKEY_get_group_name(key, group, sizeof(group), NULL) != 1 ||
        strcmp(group, JWT_EC_GROUP) != 0)
        return set_err(err, errlen, "public_key %s: ES256 needs an EC key on curve P-256", path);
    return 0;
}

int auth_jwt_issuers_add(auth_jwt_issuers_t *l, const char *issuer, const char *audience,
                         const char *algorithm, const char *secret, const char *public_key,
                         char *err, size_t errlen)
{
    if (l->n >= AUTH_JWT_ISSUERS_MAX)
        return set_err(err, errlen, "at most %d issuers", AUTH_JWT_ISSUERS_MAX);
    if (!name_ok(issuer))
        return set_err(err, errlen,
                       "issuer must be 1 to %d printable characters without spaces or quotes",
                       AUTH_JWT_NAME_MAX);
    if (!name_ok(audience))
        return set_err(err, errlen,
                       "audience must be 1 to %d printable characters without spaces or quotes",
                       AUTH_JWT_NAME_MAX);
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i].issuer, issuer) == 0)
            return set_err(err, errlen, "issuer %s is listed twice", issuer);
    jwt_alg_t alg = 0;
    for (jwt_alg_t a = JWT_HS256; a <= JWT_ES256; a++)
        if (algorithm && strcmp(algorithm, alg_names[a]) == 0)
            alg = a;
    if (alg == 0)
        return set_err(err, errlen, "algorithm must be HS256, RS256 or ES256");
    jwt_issuer_t is = {.alg = alg};
    if (alg == JWT_HS256) {
        if (public_key)
            return set_err(err, errlen, "HS256 takes a secret, not a public_key");
        size_t n = secret ? strlen(secret) : 0;
        if (n < AUTH_JWT_SECRET_MIN || n > AUTH_JWT_SECRET_MAX)
            return set_err(err, errlen, "HS256 needs a secret of at least %d bytes (at most %d)",
                           AUTH_JWT_SECRET_MIN, AUTH_JWT_SECRET_MAX);
        is.secret = xmemdup(secret, n);
        is.secret_len = n;
    } else {
        if (secret)
            return set_err(err, errlen, "%s takes a public_key, not a secret", alg_names[alg]);
        if (public_key == NULL || *public_key == '\0')
            return set_err(err, errlen, "%s needs a public_key (a PEM file)", alg_names[alg]);
        is.key = load_key(public_key, err, errlen);
        if (is.key == NULL)
            return -1;
        if (key_fits(is.key, alg, public_key, err, errlen) < 0) {
            EVP_PKEY_free(is.key);
            return -1;
        }
    }
    is.issuer = xstrdup(issuer);
    is.audience = xstrdup(audience);
    l->v[l->n++] = is;
    return 0;
}

/* ---- config ---- */

static const char *const conf_keys[] = {"issuer", "audience",   "algorithm",
                                        "secret", "public_key", NULL};

/* One member of an issuer group as a string, NULL when absent; -1 when not a string. */
static int member_string(const config_setting_t *g, const char *name, const char **out)
{
    const config_setting_t *m = config_setting_get_member(g, name);
    *out = NULL;
    if (m == NULL)
        return 0;
    if (config_setting_type(m) != CONFIG_TYPE_STRING)
        return -1;
    *out = config_setting_get_string(m);
    return 0;
}

static int conf_entry(auth_jwt_issuers_t *l, const config_setting_t *g, int index, char *err,
                      size_t errlen)
{
    char where[512], why[512];
    conf_where(g, where, sizeof(where));
    if (config_setting_type(g) != CONFIG_TYPE_GROUP)
        return set_err(err, errlen, "entry %d (%s): expected a group { issuer = ...; }", index,
                       where);
    for (int i = 0; i < config_setting_length(g); i++) {
        const config_setting_t *m = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(m);
        size_t k = 0;
        while (conf_keys[k] && (name == NULL || strcmp(conf_keys[k], name) != 0))
            k++;
        if (conf_keys[k] == NULL)
            return set_err(err, errlen, "entry %d (%s): unknown setting %s", index,
                           conf_where(m, where, sizeof(where)), name ? name : "?");
        if (config_setting_type(m) != CONFIG_TYPE_STRING)
            return set_err(err, errlen, "entry %d (%s): %s must be a string", index,
                           conf_where(m, where, sizeof(where)), name);
    }
    const char *issuer, *audience, *algorithm, *secret, *key;
    member_string(g, "issuer", &issuer);
    member_string(g, "audience", &audience);
    member_string(g, "algorithm", &algorithm);
    member_string(g, "secret", &secret);
    member_string(g, "public_key", &key);
    static const char *const required[] = {"issuer", "audience", "algorithm", NULL};
    for (size_t i = 0; required[i]; i++)
        if (config_setting_get_member(g, required[i]) == NULL)
            return set_err(err, errlen, "entry %d (%s): %s is missing", index, where, required[i]);
    if (auth_jwt_issuers_add(l, issuer, audience, algorithm, secret, key, why, sizeof(why)) < 0)
        return set_err(err, errlen, "entry %d (%s): %s", index, where, why);
    return 0;
}

int auth_jwt_conf_parse(const config_setting_t *s, void *field, char *err, size_t errlen)
{
    auth_jwt_issuers_t **out = field;
    *out = NULL;
    if (s == NULL)
        return 0;
    if (config_setting_type(s) != CONFIG_TYPE_LIST)
        return set_err(err, errlen, "expected a list ( { issuer = ...; }, ... )");
    auth_jwt_issuers_t *l = auth_jwt_issuers_new();
    for (int i = 0; i < config_setting_length(s); i++) {
        if (conf_entry(l, config_setting_get_elem(s, (unsigned)i), i + 1, err, errlen) < 0) {
            auth_jwt_issuers_destroy(&l);
            return -1;
        }
    }
    *out = l;
    return 0;
}

void auth_jwt_conf_release(void *field)
{
    auth_jwt_issuers_destroy((auth_jwt_issuers_t **)field);
}

/* ---- base64url ---- */

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/*
 * Decode unpadded base64url into out (at least len * 3 / 4 bytes); the
 * length, or -1 for any other alphabet, padding, an impossible length or
 * unused bits that are not zero (so each value has one spelling).
 */
static long b64url_decode(const char *s, size_t len, unsigned char *out)
{
    if (len % 4 == 1)
        return -1;
    uint32_t acc = 0;
    int bits = 0;
    long n = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_value((unsigned char)s[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    return acc == 0 ? n : -1;
}

/* ---- checks ---- */

static const jwt_issuer_t *find_issuer(const auth_jwt_issuers_t *l, const char *iss)
{
    for (size_t i = 0; l && i < l->n; i++)
        if (strcmp(l->v[i].issuer, iss) == 0)
            return &l->v[i];
    return NULL;
}

static int verify_hs256(const jwt_issuer_t *is, const unsigned char *data, size_t len,
                        const unsigned char *sig, size_t siglen)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (siglen != JWT_SHA256_LEN ||
        HMAC(EVP_sha256(), is->secret, (int)is->secret_len, data, len, mac, &maclen) == NULL ||
        maclen != JWT_SHA256_LEN)
        return 0;
    int ok = CRYPTO_memcmp(mac, sig, JWT_SHA256_LEN) == 0;
    OPENSSL_cleanse(mac, sizeof(mac));
    return ok;
}

static int verify_pkey(EVP_PKEY *key, const unsigned char *data, size_t len,
                       const unsigned char *sig, size_t siglen)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
             EVP_DigestVerify(ctx, sig, siglen, data, len) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* ES256 signatures are r||s, 32 bytes each; OpenSSL checks the DER form. */
static int verify_es256(EVP_PKEY *key, const unsigned char *data, size_t len,
                        const unsigned char *sig, size_t siglen)
{
    if (siglen != JWT_ES256_SIGLEN)
        return 0;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, JWT_ES256_SIGLEN / 2, NULL);
    BIGNUM *s = BN_bin2bn(sig + JWT_ES256_SIGLEN / 2, JWT_ES256_SIGLEN / 2, NULL);
    unsigned char *der = NULL;
    int derlen = -1, ok = 0;
    if (es && r && s && ECDSA_SIG_set0(es, r, s) == 1) {
        r = s = NULL; /* owned by es now */
        derlen = i2d_ECDSA_SIG(es, &der);
    }
    if (derlen > 0)
        ok = verify_pkey(key, data, len, der, (size_t)derlen);
    OPENSSL_free(der);
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    return ok;
}

static int signature_ok(const jwt_issuer_t *is, const unsigned char *data, size_t len,
                        const unsigned char *sig, size_t siglen)
{
    switch (is->alg) {
    case JWT_HS256:
        return verify_hs256(is, data, len, sig, siglen);
    case JWT_RS256:
        return verify_pkey(is->key, data, len, sig, siglen);
    case JWT_ES256:
        return verify_es256(is->key, data, len, sig, siglen);
    }
    return 0;
}

/* A base64url part holding a JSON object, or NULL. */
static json_t *decode_object(const char *s, size_t len)
{
    unsigned char *buf = xmalloc(len * 3 / 4 + 1);
    long n = b64url_decode(s, len, buf);
    json_t *j = NULL;
    if (n > 0) {
        json_error_t jerr;
        j = json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
        if (j && !json_is_object(j)) {
            json_decref(j);
            j = NULL;
        }
    }
    free(buf);
    return j;
}

/* A time claim: -1 absent, -2 not a usable number, 0 with *v otherwise. */
static int time_claim(const json_t *claims, const char *name, double *v)
{
    const json_t *c = json_object_get(claims, name);
    if (c == NULL)
        return -1;
    if (!json_is_number(c))
        return -2;
    *v = json_number_value(c);
    return isfinite(*v) && *v >= 0 ? 0 : -2;
}

static int audience_ok(const json_t *claims, const char *audience)
{
    const json_t *aud = json_object_get(claims, "aud");
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), audience) == 0;
    if (!json_is_array(aud))
        return 0;
    size_t i;
    const json_t *a;
    json_array_foreach(aud, i, a)
    {
        if (json_is_string(a) && strcmp(json_string_value(a), audience) == 0)
            return 1;
    }
    return 0;
}

static auth_jwt_status_t claims_ok(const jwt_issuer_t *is, const json_t *claims,
                                   const char *identity, uint64_t now_ms)
{
    double now = (double)now_ms / 1000.0, exp, nbf, iat;
    int rc = time_claim(claims, "exp", &exp);
    if (rc == -2)
        return AUTH_JWT_MALFORMED;
    if (rc == -1 || now >= exp + AUTH_JWT_SKEW_S)
        return AUTH_JWT_EXPIRED;
    rc = time_claim(claims, "nbf", &nbf);
    if (rc == -2)
        return AUTH_JWT_MALFORMED;
    if (rc == 0 && nbf > now + AUTH_JWT_SKEW_S)
        return AUTH_JWT_NOT_YET;
    rc = time_claim(claims, "iat", &iat);
    if (rc == -2)
        return AUTH_JWT_MALFORMED;
    if (rc == 0 && iat > now + AUTH_JWT_SKEW_S)
        return AUTH_JWT_NOT_YET;
    if (!audience_ok(claims, is->audience))
        return AUTH_JWT_AUDIENCE;
    const json_t *id = json_object_get(claims, "email");
    if (id == NULL)
        id = json_object_get(claims, "sub");
    if (!json_is_string(id) || identity == NULL || strcmp(json_string_value(id), identity) != 0)
        return AUTH_JWT_IDENTITY;
    return AUTH_JWT_OK;
}

static auth_jwt_status_t verify(const auth_jwt_issuers_t *l, const char *tok, size_t len,
                                const char *identity, uint64_t now_ms, auth_jwt_result_t *out)
{
    const char *dot1 = memchr(tok, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - tok)) : NULL;
    if (dot1 == NULL || dot2 == NULL || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - tok)))
        return AUTH_JWT_MALFORMED;
    size_t hlen = (size_t)(dot1 - tok), plen = (size_t)(dot2 - dot1 - 1);
    size_t slen = len - (size_t)(dot2 + 1 - tok);
    json_t *header = decode_object(tok, hlen);
    json_t *claims = decode_object(dot1 + 1, plen);
    unsigned char *sig = xmalloc(slen * 3 / 4 + 1);
    long siglen = b64url_decode(dot2 + 1, slen, sig);
    auth_jwt_status_t st = AUTH_JWT_MALFORMED;
    const json_t *alg = header ? json_object_get(header, "alg") : NULL;
    const json_t *iss = claims ? json_object_get(claims, "iss") : NULL;
    const jwt_issuer_t *is = json_is_string(iss) ? find_issuer(l, json_string_value(iss)) : NULL;
    if (is)
        sx_strlcpy(out->issuer, is->issuer, sizeof(out->issuer));
    if (header == NULL || claims == NULL || siglen < 0 || !json_is_string(alg))
        st = AUTH_JWT_MALFORMED;
    else if (strcasecmp(json_string_value(alg), "none") == 0)
        st = AUTH_JWT_ALG;
    else if (json_object_get(header, "crit") != NULL)
        st = AUTH_JWT_MALFORMED; /* extensions we would have to understand */
    else if (is == NULL)
        st = AUTH_JWT_ISSUER;
    else if (strcmp(json_string_value(alg), alg_names[is->alg]) != 0)
        st = AUTH_JWT_ALG;
    else if (!signature_ok(is, (const unsigned char *)tok, (size_t)(dot2 - tok), sig,
                           (size_t)siglen))
        st = AUTH_JWT_SIGNATURE;
    else
        st = claims_ok(is, claims, identity, now_ms);
    json_decref(header);
    json_decref(claims);
    free(sig);
    return st;
}

auth_jwt_status_t auth_jwt_verify(const auth_jwt_issuers_t *l, const void *token, size_t len,
                                  const char *identity, uint64_t now_ms, auth_jwt_result_t *out)
{
    memset(out, 0, sizeof(*out));
    if (token == NULL || len == 0 || len > AUTH_JWT_TOKEN_MAX || memchr(token, 0, len))
        out->status = AUTH_JWT_MALFORMED;
    else
        out->status = verify(l, token, len, identity, now_ms, out);
    return out->status;
}

const char *auth_jwt_status_name(auth_jwt_status_t s)
{
    switch (s) {
    case AUTH_JWT_OK:
        return "ok";
    case AUTH_JWT_MALFORMED:
        return "token_malformed";
    case AUTH_JWT_ALG:
        return "token_alg";
    case AUTH_JWT_ISSUER:
        return "token_issuer";
    case AUTH_JWT_SIGNATURE:
        return "token_signature";
    case AUTH_JWT_EXPIRED:
        return "token_expired";
    case AUTH_JWT_NOT_YET:
        return "token_not_yet_valid";
    case AUTH_JWT_AUDIENCE:
        return "token_audience";
    case AUTH_JWT_IDENTITY:
        return "token_identity";
    }
    return "token_invalid";
}
