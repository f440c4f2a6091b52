/*
 * jwt_fixture: signing keys made with OpenSSL for the token tests (an RSA
 * 2048 and an EC P-256 key, their public halves written as PEM files),
 * and tokens built and signed the way an issuer would: base64url header
 * and claims, HS256, RS256 or ES256 (raw r||s), or "none". Header-only.
 */
#ifndef SX_JWT_FIXTURE_H
#define SX_JWT_FIXTURE_H

#include <limits.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define JF_ISS_HS    "https://hs.example.test"
#define JF_ISS_RS    "https://rs.example.test"
#define JF_ISS_ES    "https://es.example.test/"
#define JF_AUD       "sendarix"
#define JF_SECRET    "0123456789abcdef0123456789abcdef-hs256-test-secret"
#define JF_TOKEN_MAX 8192

typedef struct jf_keys {
    EVP_PKEY *rsa;
    EVP_PKEY *ec;
    EVP_PKEY *rsa_small; /* 1024 bits: refused as an issuer key */
    char rsa_pem[PATH_MAX];
    char ec_pem[PATH_MAX];
    char rsa_small_pem[PATH_MAX];
    char dir[PATH_MAX / 2];
} jf_keys_t;

static inline void jf_write_pub(EVP_PKEY *k, const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL || PEM_write_PUBKEY(f, k) != 1) {
        fprintf(stderr, "cannot write %s\n", path);
        abort();
    }
    fclose(f);
}

/* Keys in a fresh directory under base. */
static inline int jf_keys_make(jf_keys_t *k, const char *base)
{
    memset(k, 0, sizeof(*k));
    int n = snprintf(k->dir, sizeof(k->dir), "%s/jwtkeys-XXXXXX", base);
    if (n < 0 || (size_t)n >= sizeof(k->dir) || mkdtemp(k->dir) == NULL)
        return -1;
    k->rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    k->ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    k->rsa_small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    if (k->rsa == NULL || k->ec == NULL || k->rsa_small == NULL)
        return -1;
    snprintf(k->rsa_pem, sizeof(k->rsa_pem), "%s/rsa.pem", k->dir);
    snprintf(k->ec_pem, sizeof(k->ec_pem), "%s/ec.pem", k->dir);
    snprintf(k->rsa_small_pem, sizeof(k->rsa_small_pem), "%s/rsa1024.pem", k->dir);
    jf_write_pub(k->rsa, k->rsa_pem);
    jf_write_pub(k->ec, k->ec_pem);
    jf_write_pub(k->rsa_small, k->rsa_small_pem);
    return 0;
}

static inline void jf_keys_free(jf_keys_t *k)
{
    EVP_PKEY_free(k->rsa);
    EVP_PKEY_free(k->ec);
    EVP_PKEY_free(k->rsa_small);
    unlink(k->rsa_pem);
    unlink(k->ec_pem);
    unlink(k->rsa_small_pem);
    rmdir(k->dir);
}

static inline size_t jf_b64url(const unsigned char *in, size_t len, char *out)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t n = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[n++] = abc[(v >> 18) & 63];
        out[n++] = abc[(v >> 12) & 63];
        if (i + 1 < len)
            out[n++] = abc[(v >> 6) & 63];
        if (i + 2 < len)
            out[n++] = abc[v & 63];
    }
    out[n] = '\0';
    return n;
}

static inline long long jf_now(void)
{
    return (long long)time(NULL);
}

/* Claims for user from iss, valid for an hour; extra is appended inside the object. */
static inline void jf_claims(char *out, size_t size, const char *iss, const char *user,
                             const char *extra)
{
    snprintf(out, size, "{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"%s\",\"exp\":%lld%s%s}", iss,
             JF_AUD, user, jf_now() + 3600, extra && *extra ? "," : "", extra ? extra : "");
}

/*
 * Sign header.claims with sign_alg ("HS256" with secret, "RS256"/"ES256"
 * with key, "none": no signature) into out. header_alg is what the header
 * says (usually the same).
 */
static inline void jf_sign(char *out, const char *header_alg, const char *sign_alg,
                           const char *claims, EVP_PKEY *key, const char *secret)
{
    char header[128], *p = out;
    snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"typ\":\"JWT\"}", header_alg);
    p += jf_b64url((const unsigned char *)header, strlen(header), p);
    *p++ = '.';
    p += jf_b64url((const unsigned char *)claims, strlen(claims), p);
    size_t signed_len = (size_t)(p - out);
    *p++ = '.';
    *p = '\0';
    unsigned char sig[1024];
    size_t siglen = 0;
    if (strcmp(sign_alg, "HS256") == 0) {
        unsigned int n = 0;
        HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)out, signed_len, sig,
             &n);
        siglen = n;
    } else if (strcmp(sign_alg, "RS256") == 0 || strcmp(sign_alg, "ES256") == 0) {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        unsigned char der[1024];
        size_t dlen = sizeof(der);
        if (EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) != 1 ||
            EVP_DigestSign(ctx, der, &dlen, (const unsigned char *)out, signed_len) != 1)
            abort();
        EVP_MD_CTX_free(ctx);
        if (sign_alg[0] == 'R') {
            memcpy(sig, der, dlen);
            siglen = dlen;
        } else {
            const unsigned char *q = der;
            ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &q, (long)dlen);
            const BIGNUM *r, *s;
            ECDSA_SIG_get0(es, &r, &s);
            BN_bn2binpad(r, sig, 32);
            BN_bn2binpad(s, sig + 32, 32);
            ECDSA_SIG_free(es);
            siglen = 64;
        }
    }
    jf_b64url(sig, siglen, p);
}

/* A well-formed token of issuer alg ("HS256", "RS256", "ES256") for user with extra claims. */
static inline void jf_token(char *out, const jf_keys_t *k, const char *alg, const char *user,
                            const char *extra)
{
    char claims[2048];
    const char *iss = alg[0] == 'H' ? JF_ISS_HS : alg[0] == 'R' ? JF_ISS_RS : JF_ISS_ES;
    jf_claims(claims, sizeof(claims), iss, user, extra);
    jf_sign(out, alg, alg, claims, alg[0] == 'R' ? k->rsa : k->ec, JF_SECRET);
}

#endif
