/*
 * dkim: relaxed canonicalization, the body hash as a stream, the header
 * hash, RSA and Ed25519 signatures through OpenSSL 3 EVP, the folded
 * DKIM-Signature field, key records, and a verifier for tests.
 */
#include "dkim.h"
#include "core/alloc.h"
#include "mail/base64.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#define FIELDS_MAX   2000 /* header fields looked at in one message */
#define NAME_MAX_LEN 128  /* a field name we compare */
#define HLIST_MAX    64   /* names in one h= tag */
#define SIG_MAX      1024 /* bytes of a signature (RSA 8192 fits) */
#define TAG_MAX      16   /* tags in one DKIM-Signature we look at */
#define PUB_DER_MAX  2048

struct dkim_key {
    char selector[DKIM_SELECTOR_MAX + 1];
    dkim_alg_t alg;
    EVP_PKEY *pkey;
};

const char *const dkim_signed_fields[] = {
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "sender",
    NULL,
};

static void set_err(char *err, size_t errlen, const char *text)
{
    if (err && errlen)
        sx_strlcpy(err, text, errlen);
}

static int is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

const char *dkim_alg_name(dkim_alg_t alg)
{
    switch (alg) {
    case DKIM_ALG_RSA_SHA256:
        return "rsa-sha256";
    case DKIM_ALG_ED25519_SHA256:
        return "ed25519-sha256";
    default:
        return NULL;
    }
}

dkim_alg_t dkim_alg_parse(const char *name)
{
    if (name == NULL)
        return DKIM_ALG_NONE;
    if (strcasecmp(name, "rsa-sha256") == 0)
        return DKIM_ALG_RSA_SHA256;
    if (strcasecmp(name, "ed25519-sha256") == 0)
        return DKIM_ALG_ED25519_SHA256;
    return DKIM_ALG_NONE;
}

const char *dkim_alg_key_type(dkim_alg_t alg)
{
    switch (alg) {
    case DKIM_ALG_RSA_SHA256:
        return "rsa";
    case DKIM_ALG_ED25519_SHA256:
        return "ed25519";
    default:
        return NULL;
    }
}

/* ---- keys ---- */

static int selector_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > DKIM_SELECTOR_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!isalnum((unsigned char)c) && c != '-' && c != '_' && c != '.')
            return 0;
    }
    return 1;
}

/* Never prompt for a passphrase: an encrypted key is refused. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/* The key type fits the algorithm (RSA long enough, or Ed25519). */
static int pkey_fits(EVP_PKEY *pkey, dkim_alg_t alg)
{
    if (alg == DKIM_ALG_RSA_SHA256)
        return EVP_PKEY_get_base_id(pkey) == EVP_PKEY_RSA &&
               EVP_PKEY_get_bits(pkey) >= DKIM_RSA_BITS_MIN;
    if (alg == DKIM_ALG_ED25519_SHA256)
        return EVP_PKEY_get_base_id(pkey) == EVP_PKEY_ED25519;
    return 0;
}

static EVP_PKEY *pkey_from_pem(const char *pem, size_t len)
{
    if (pem == NULL || len == 0 || len > DKIM_PEM_MAX)
        return NULL;
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (bio == NULL)
        return NULL;
    EVP_PKEY *pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    return pkey;
}

dkim_key_t *dkim_key_from_pem(const char *selector, dkim_alg_t alg, const char *pem, size_t pem_len,
                              char *err, size_t errlen)
{
    if (!selector_valid(selector)) {
        set_err(err, errlen, "the selector is not a DNS label");
        return NULL;
    }
    if (dkim_alg_name(alg) == NULL) {
        set_err(err, errlen, "unknown algorithm");
        return NULL;
    }
    EVP_PKEY *pkey = pkey_from_pem(pem, pem_len);
    if (pkey == NULL) {
        set_err(err, errlen, "the private key is not a PEM key");
        return NULL;
    }
    if (!pkey_fits(pkey, alg)) {
        EVP_PKEY_free(pkey);
        set_err(err, errlen,
                alg == DKIM_ALG_RSA_SHA256
                    ? "the private key is not an RSA key of 1024 bits or more"
                    : "the private key is not an Ed25519 key");
        return NULL;
    }
    dkim_key_t *k = xcalloc(1, sizeof(*k));
    sx_strlcpy(k->selector, selector, sizeof(k->selector));
    k->alg = alg;
    k->pkey = pkey;
    return k;
}

void dkim_key_destroy(dkim_key_t **p)
{
    dkim_key_t *k = *p;
    if (k == NULL)
        return;
    EVP_PKEY_free(k->pkey);
    free(k);
    *p = NULL;
}

const char *dkim_key_selector(const dkim_key_t *k)
{
    return k->selector;
}

dkim_alg_t dkim_key_alg(const dkim_key_t *k)
{
    return k->alg;
}

void dkim_secret_free(char *pem)
{
    if (pem == NULL)
        return;
    OPENSSL_cleanse(pem, strlen(pem));
    free(pem);
}

/* The p= value of a key (public part of a private key works too). */
static int public_b64(EVP_PKEY *pkey, dkim_alg_t alg, char *out, size_t size)
{
    unsigned char der[PUB_DER_MAX];
    size_t n = 0;
    if (alg == DKIM_ALG_ED25519_SHA256) {
        n = sizeof(der);
        if (EVP_PKEY_get_raw_public_key(pkey, der, &n) != 1 || n != 32)
            return -1;
    } else {
        int len = i2d_PUBKEY(pkey, NULL);
        if (len <= 0 || (size_t)len > sizeof(der))
            return -1;
        unsigned char *p = der;
        if (i2d_PUBKEY(pkey, &p) != len)
            return -1;
        n = (size_t)len;
    }
    return base64_encode(der, n, out, size) < 0 ? -1 : 0;
}

int dkim_key_generate(dkim_alg_t alg, char **pem, char *public_b64_out, size_t public_size)
{
    *pem = NULL;
    EVP_PKEY *pkey = NULL;
    if (alg == DKIM_ALG_RSA_SHA256)
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)DKIM_RSA_BITS);
    else if (alg == DKIM_ALG_ED25519_SHA256)
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (pkey == NULL)
        return -1;
    int rc = -1;
    BIO *bio = BIO_new(BIO_s_secmem());
    if (bio && PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) == 1 &&
        public_b64(pkey, alg, public_b64_out, public_size) == 0) {
        char *data = NULL;
        long len = BIO_get_mem_data(bio, &data);
        if (len > 0 && (size_t)len < DKIM_PEM_MAX) {
            *pem = xstrndup(data, (size_t)len);
            rc = 0;
        }
    }
    BIO_free(bio);
    EVP_PKEY_free(pkey);
    return rc;
}

int dkim_public_from_pem(dkim_alg_t alg, const char *pem, size_t pem_len, char *out, size_t size)
{
    EVP_PKEY *pkey = pkey_from_pem(pem, pem_len);
    if (pkey == NULL)
        return -1;
    int rc = pkey_fits(pkey, alg) ? public_b64(pkey, alg, out, size) : -1;
    EVP_PKEY_free(pkey);
    return rc;
}

/* ---- DNS records ---- */

int dkim_record_name(const char *selector, const char *domain, char *out, size_t size)
{
    int n = snprintf(out, size, "%s._domainkey.%s", selector, domain);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

int dkim_record_value(dkim_alg_t alg, const char *pub, char *out, size_t size)
{
    const char *k = dkim_alg_key_type(alg);
    if (k == NULL)
        return -1;
    int n = snprintf(out, size, "v=DKIM1; k=%s; p=%s", k, pub);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

/* Trim WSP (and folding) from both ends of [*s, *e). */
static void trim(const char **s, const char **e)
{
    while (*s < *e && isspace((unsigned char)**s))
        (*s)++;
    while (*e > *s && isspace((unsigned char)(*e)[-1]))
        (*e)--;
}

/* Copy [s, e) into out without any whitespace; -1 when it does not fit. */
static int copy_no_wsp(const char *s, const char *e, char *out, size_t size)
{
    size_t o = 0;
    for (; s < e; s++) {
        if (isspace((unsigned char)*s))
            continue;
        if (o + 1 >= size)
            return -1;
        out[o++] = *s;
    }
    out[o] = '\0';
    return 0;
}

int dkim_record_parse(const char *txt, size_t len, dkim_record_t *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    snprintf(out->k, sizeof(out->k), "rsa");
    const char *p = txt, *end = txt + len;
    int first = 1, have_p = 0;
    *why = NULL;
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *te = semi ? semi : end;
        const char *eq = memchr(p, '=', (size_t)(te - p));
        const char *ns = p, *ne = eq ? eq : te;
        trim(&ns, &ne);
        if (eq == NULL) {
            if (ns != ne) {
                *why = "a tag without '='";
                return -1;
            }
        } else {
            const char *vs = eq + 1, *ve = te;
            trim(&vs, &ve);
            size_t nlen = (size_t)(ne - ns);
            if (nlen == 1 && *ns == 'v') {
                if (!first || (size_t)(ve - vs) != 5 || strncmp(vs, "DKIM1", 5) != 0) {
                    *why = "v= is not DKIM1 or not the first tag";
                    return -1;
                }
            } else if (nlen == 1 && *ns == 'k') {
                if (copy_no_wsp(vs, ve, out->k, sizeof(out->k)) < 0) {
                    *why = "k= is too long";
                    return -1;
                }
            } else if (nlen == 1 && *ns == 'p') {
                if (copy_no_wsp(vs, ve, out->p, sizeof(out->p)) < 0) {
                    *why = "p= is too long";
                    return -1;
                }
                have_p = 1;
            }
            first = 0;
        }
        p = semi ? semi + 1 : end;
    }
    if (!have_p) {
        *why = "no p= tag";
        return -1;
    }
    return 0;
}

/* ---- canonicalization ---- */

int dkim_canon_header(const char *field, size_t len, buf_t *out)
{
    const char *colon = memchr(field, ':', len);
    if (colon == NULL)
        return -1;
    size_t nlen = (size_t)(colon - field);
    while (nlen > 0 && is_wsp(field[nlen - 1]))
        nlen--;
    if (buf_reserve(out, len + 1) < 0)
        return -1;
    char *o = buf_tail(out);
    size_t n = 0;
    for (size_t i = 0; i < nlen; i++)
        o[n++] = (char)tolower((unsigned char)field[i]);
    o[n++] = ':';
    size_t value_start = n;
    int wsp = 0;
    for (const char *p = colon + 1; p < field + len; p++) {
        char c = *p;
        if (c == '\r' || c == '\n')
            continue; /* unfolding: the WSP after the line end stays */
        if (is_wsp(c)) {
            wsp = 1;
            continue;
        }
        if (wsp && n > value_start)
            o[n++] = ' ';
        wsp = 0;
        o[n++] = c;
    }
    buf_advance(out, n);
    return 0;
}

static int stage_flush(dkim_body_t *b)
{
    int ok = b->staged == 0 || EVP_DigestUpdate(b->md, b->stage, b->staged) == 1;
    b->staged = 0;
    return ok ? 0 : -1;
}

static int body_emit(dkim_body_t *b, const char *p, size_t n)
{
    b->length += n;
    if (b->md == NULL)
        return buf_append(b->out, p, n);
    if (b->staged + n > sizeof(b->stage) && stage_flush(b) < 0)
        return -1;
    if (n >= sizeof(b->stage))
        return EVP_DigestUpdate(b->md, p, n) == 1 ? 0 : -1;
    memcpy(b->stage + b->staged, p, n);
    b->staged += n;
    return 0;
}

/* Characters that are neither WSP nor CR, after the line ends and the
 * whitespace that wait for them. */
static int body_text(dkim_body_t *b, const char *p, size_t n)
{
    for (; b->crlf_pending > 0; b->crlf_pending--)
        if (body_emit(b, "\r\n", 2) < 0)
            return -1;
    if (b->wsp_pending && body_emit(b, " ", 1) < 0)
        return -1;
    b->wsp_pending = 0;
    b->any = 1;
    return body_emit(b, p, n);
}

int dkim_body_init(dkim_body_t *b)
{
    memset(b, 0, sizeof(*b));
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(md);
        return -1;
    }
    b->md = md;
    return 0;
}

void dkim_body_init_collect(dkim_body_t *b, buf_t *out)
{
    memset(b, 0, sizeof(*b));
    b->out = out;
}

int dkim_body_update(dkim_body_t *b, const char *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        char c = p[i];
        if (b->cr_pending) {
            b->cr_pending = 0;
            if (c == '\n') {
                /* a line end: whitespace before it goes, the line end waits */
                b->wsp_pending = 0;
                b->crlf_pending++;
                i++;
                continue;
            }
            if (body_text(b, "\r", 1) < 0) /* a CR alone is an ordinary character */
                return -1;
        }
        if (c == '\r') {
            b->cr_pending = 1;
            i++;
        } else if (is_wsp(c)) {
            b->wsp_pending = 1;
            i++;
        } else {
            /* a run of ordinary characters (a lone LF is one) goes in one piece */
            size_t j = i + 1;
            while (j < len && p[j] != '\r' && !is_wsp(p[j]))
                j++;
            if (body_text(b, p + i, j - i) < 0)
                return -1;
            i = j;
        }
    }
    return 0;
}

int dkim_body_final(dkim_body_t *b, uint8_t hash[DKIM_HASH_LEN])
{
    int rc = 0;
    if (b->cr_pending && body_text(b, "\r", 1) < 0)
        rc = -1;
    b->cr_pending = 0;
    /* trailing empty lines go; a body with text ends with exactly one CRLF */
    if (rc == 0 && b->any && body_emit(b, "\r\n", 2) < 0)
        rc = -1;
    if (rc == 0 && b->md && stage_flush(b) < 0)
        rc = -1;
    if (rc == 0 && b->md) {
        unsigned int n = 0;
        if (EVP_DigestFinal_ex(b->md, hash, &n) != 1 || n != DKIM_HASH_LEN)
            rc = -1;
    }
    dkim_body_release(b);
    return rc;
}

void dkim_body_release(dkim_body_t *b)
{
    if (b->md)
        EVP_MD_CTX_free(b->md);
    b->md = NULL;
}

/* ---- header fields ---- */

typedef struct field {
    const char *start;
    size_t len;      /* with its CRLF */
    size_t name_len; /* before the colon, trailing WSP removed */
    int used;        /* taken by an h= entry already */
} field_t;

typedef struct fields {
    field_t *v;
    size_t n;
} fields_t;

/* Split a header block into fields (up to the blank line); -1 when malformed. */
static int fields_split(const char *h, size_t len, fields_t *f)
{
    f->v = NULL;
    f->n = 0;
    size_t i = 0;
    while (i < len) {
        if (h[i] == '\r' || h[i] == '\n')
            break; /* the blank line */
        if (is_wsp(h[i]))
            return -1; /* a continuation with no field */
        size_t start = i;
        for (;;) {
            while (i < len && h[i] != '\n')
                i++;
            if (i < len)
                i++;
            if (i >= len || !is_wsp(h[i]))
                break;
        }
        const char *colon = memchr(h + start, ':', i - start);
        if (colon == NULL)
            return -1;
        if (f->n >= FIELDS_MAX)
            return -1;
        size_t nl = (size_t)(colon - (h + start));
        while (nl > 0 && is_wsp(h[start + nl - 1]))
            nl--;
        if (nl == 0)
            return -1;
        if (f->n % 64 == 0)
            f->v = xrealloc(f->v, (f->n + 64) * sizeof(*f->v));
        f->v[f->n++] = (field_t){h + start, i - start, nl, 0};
    }
    return 0;
}

static int field_is(const field_t *fl, const char *name, size_t nlen)
{
    return fl->name_len == nlen && strncasecmp(fl->start, name, nlen) == 0;
}

static size_t field_count(const fields_t *f, const char *name, size_t nlen)
{
    size_t c = 0;
    for (size_t i = 0; i < f->n; i++)
        c += field_is(&f->v[i], name, nlen);
    return c;
}

/*
 * Append the canonical field for the next h= entry called name: the last
 * instance not yet used (RFC 6376 5.4.2); nothing when none is left.
 */
static int hash_field(fields_t *f, const char *name, size_t nlen, buf_t *data)
{
    for (size_t i = f->n; i-- > 0;) {
        field_t *fl = &f->v[i];
        if (fl->used || !field_is(fl, name, nlen))
            continue;
        fl->used = 1;
        if (dkim_canon_header(fl->start, fl->len, data) < 0 || buf_append(data, "\r\n", 2) < 0)
            return -1;
        return 0;
    }
    return 0;
}

/* ---- signing ---- */

typedef struct fold {
    buf_t *out;
    size_t col;
} fold_t;

/* Append a token; break the line before it when it would pass the width. */
static int fold_add(fold_t *f, const char *tok, size_t n, int breakable)
{
    if (breakable && f->col > 8 && f->col + n > DKIM_LINE_WIDTH) {
        if (buf_append(f->out, "\r\n\t", 3) < 0)
            return -1;
        f->col = 8;
        if (n > 0 && tok[0] == ' ') {
            tok++;
            n--;
        }
    }
    f->col += n;
    return buf_append(f->out, tok, n);
}

static int fold_str(fold_t *f, const char *s, int breakable)
{
    return fold_add(f, s, strlen(s), breakable);
}

/* The h= names for this message, From oversigned. */
static size_t hlist_build(const fields_t *f, const char **names, size_t max)
{
    size_t n = 0;
    for (size_t k = 0; dkim_signed_fields[k]; k++) {
        const char *name = dkim_signed_fields[k];
        size_t c = field_count(f, name, strlen(name));
        if (strcmp(name, "from") == 0)
            c++;
        for (size_t j = 0; j < c && n < max; j++)
            names[n++] = name;
    }
    /* Resent- fields: each name as often as it appears, in order of first appearance */
    for (size_t i = 0; i < f->n; i++) {
        const field_t *fl = &f->v[i];
        if (fl->name_len <= 7 || fl->name_len > NAME_MAX_LEN ||
            strncasecmp(fl->start, "resent-", 7) != 0)
            continue;
        int seen = 0;
        for (size_t j = 0; j < i && !seen; j++)
            seen = field_is(&f->v[j], fl->start, fl->name_len);
        if (seen)
            continue;
        size_t c = field_count(f, fl->start, fl->name_len);
        for (size_t j = 0; j < c && n < max; j++)
            names[n++] = fl->start; /* length from the field: see hlist_len */
    }
    return n;
}

/* An h= name's length: a table name ends at NUL, a Resent- one at ':' or WSP. */
static size_t hlist_len(const char *name)
{
    size_t n = 0;
    while (name[n] && name[n] != ':' && !is_wsp(name[n]))
        n++;
    return n;
}

/* The signature of data by key, base64, into sig64. */
static int sign_data(const dkim_key_t *key, const buf_t *data, char *sig64, size_t size)
{
    unsigned char sig[SIG_MAX], hash[DKIM_HASH_LEN];
    size_t siglen = sizeof(sig);
    int rc = -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL)
        return -1;
    if (key->alg == DKIM_ALG_RSA_SHA256) {
        if (EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key->pkey) == 1 &&
            EVP_DigestSign(ctx, sig, &siglen, (const unsigned char *)buf_head(data),
                           buf_used(data)) == 1)
            rc = 0;
    } else {
        unsigned int hl = 0;
        /* RFC 8463: Ed25519 signs the SHA-256 of the header data */
        if (EVP_Digest(buf_head(data), buf_used(data), hash, &hl, EVP_sha256(), NULL) == 1 &&
            EVP_DigestSignInit(ctx, NULL, NULL, NULL, key->pkey) == 1 &&
            EVP_DigestSign(ctx, sig, &siglen, hash, sizeof(hash)) == 1)
            rc = 0;
    }
    EVP_MD_CTX_free(ctx);
    if (rc == 0 && base64_encode(sig, siglen, sig64, size) < 0)
        rc = -1;
    return rc;
}

/* One DKIM-Signature field for key over the common header data. */
static int sign_one(const dkim_key_t *key, const char *domain, const char **names, size_t nnames,
                    const char *bh64, uint64_t t, const buf_t *common, buf_t *out)
{
    buf_t field, data;
    buf_init(&field, 0);
    buf_init(&data, 0);
    fold_t f = {&field, 0};
    char tok[DKIM_DOMAIN_MAX + 64];
    int rc = -1;
    if (fold_str(&f, "DKIM-Signature: v=1;", 0) < 0)
        goto done;
    snprintf(tok, sizeof(tok), " a=%s;", dkim_alg_name(key->alg));
    if (fold_str(&f, tok, 1) < 0 || fold_str(&f, " c=relaxed/relaxed;", 1) < 0)
        goto done;
    snprintf(tok, sizeof(tok), " d=%s;", domain);
    if (fold_str(&f, tok, 1) < 0)
        goto done;
    snprintf(tok, sizeof(tok), " s=%s;", key->selector);
    if (fold_str(&f, tok, 1) < 0)
        goto done;
    snprintf(tok, sizeof(tok), " t=%" PRIu64 ";", t);
    if (fold_str(&f, tok, 1) < 0)
        goto done;
    for (size_t i = 0; i < nnames; i++) {
        size_t nl = hlist_len(names[i]);
        char name[NAME_MAX_LEN + 8];
        size_t o = 0;
        if (i == 0) {
            memcpy(name, " h=", 3);
            o = 3;
        }
        for (size_t j = 0; j < nl; j++)
            name[o++] = (char)tolower((unsigned char)names[i][j]);
        name[o++] = i + 1 < nnames ? ':' : ';';
        if (fold_add(&f, name, o, 1) < 0)
            goto done;
    }
    snprintf(tok, sizeof(tok), " bh=%s;", bh64);
    if (fold_str(&f, tok, 1) < 0 || fold_str(&f, " b=", 1) < 0)
        goto done;
    /* the header data: the signed fields, then this field with b= empty, no CRLF */
    if (buf_append(&data, buf_head(common), buf_used(common)) < 0 ||
        dkim_canon_header(buf_head(&field), buf_used(&field), &data) < 0)
        goto done;
    char sig64[SIG_MAX * 2];
    if (sign_data(key, &data, sig64, sizeof(sig64)) < 0)
        goto done;
    size_t left = strlen(sig64), at = 0;
    while (left > 0) {
        size_t room = f.col < DKIM_LINE_WIDTH ? DKIM_LINE_WIDTH - f.col : 0;
        if (room < 8) {
            if (buf_append(&field, "\r\n\t", 3) < 0)
                goto done;
            f.col = 8;
            room = DKIM_LINE_WIDTH - f.col;
        }
        size_t n = left < room ? left : room;
        if (fold_add(&f, sig64 + at, n, 0) < 0)
            goto done;
        at += n;
        left -= n;
    }
    if (buf_append(&field, "\r\n", 2) < 0 ||
        buf_append(out, buf_head(&field), buf_used(&field)) < 0)
        goto done;
    rc = 0;
done:
    buf_free(&field);
    buf_free(&data);
    return rc;
}

static int domain_ok(const char *d)
{
    size_t n = d ? strlen(d) : 0;
    if (n == 0 || n > DKIM_DOMAIN_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)d[i]) && d[i] != '-' && d[i] != '.')
            return 0;
    return 1;
}

int dkim_sign_header(const char *header, size_t header_len, const uint8_t body_hash[DKIM_HASH_LEN],
                     const char *domain, dkim_key_t *const *keys, size_t nkeys, uint64_t t,
                     buf_t *out, char *err, size_t errlen)
{
    if (!domain_ok(domain)) {
        set_err(err, errlen, "the signing domain is not a host name");
        return -1;
    }
    if (header_len > DKIM_HEADER_MAX) {
        set_err(err, errlen, "the header block is too large to sign");
        return -1;
    }
    fields_t f;
    if (fields_split(header, header_len, &f) < 0) {
        free(f.v);
        set_err(err, errlen, "the header block is malformed");
        return -1;
    }
    int rc = -1;
    buf_t common;
    buf_init(&common, 0);
    const char *names[HLIST_MAX];
    size_t nnames = hlist_build(&f, names, HLIST_MAX);
    char bh64[2 * DKIM_HASH_LEN];
    if (field_count(&f, "from", 4) == 0) {
        set_err(err, errlen, "the message has no From field");
        goto done;
    }
    for (size_t i = 0; i < nnames; i++)
        if (hash_field(&f, names[i], hlist_len(names[i]), &common) < 0) {
            set_err(err, errlen, "cannot canonicalize the header");
            goto done;
        }
    base64_encode(body_hash, DKIM_HASH_LEN, bh64, sizeof(bh64));
    size_t mark = buf_used(out);
    for (size_t k = 0; k < nkeys; k++) {
        if (sign_one(keys[k], domain, names, nnames, bh64, t, &common, out) < 0) {
            out->len = out->off + mark; /* no half-written fields */
            set_err(err, errlen, "the key cannot sign");
            goto done;
        }
    }
    rc = 0;
done:
    buf_free(&common);
    free(f.v);
    return rc;
}

/* Header block and body of a message; a message without a blank line is all header. */
static void message_split(const char *msg, size_t len, size_t *hlen, const char **body,
                          size_t *blen)
{
    long end = -1;
    if (len >= 2 && msg[0] == '\r' && msg[1] == '\n') {
        end = 2;
    } else {
        for (size_t i = 0; i + 3 < len; i++)
            if (msg[i] == '\r' && msg[i + 1] == '\n' && msg[i + 2] == '\r' && msg[i + 3] == '\n') {
                end = (long)(i + 4);
                break;
            }
    }
    if (end < 0) {
        *hlen = len;
        *body = msg + len;
        *blen = 0;
        return;
    }
    *hlen = (size_t)end;
    *body = msg + end;
    *blen = len - (size_t)end;
}

static int body_hash_of(const char *body, size_t blen, uint8_t hash[DKIM_HASH_LEN])
{
    dkim_body_t b;
    if (dkim_body_init(&b) < 0)
        return -1;
    if (dkim_body_update(&b, body, blen) < 0) {
        dkim_body_release(&b);
        return -1;
    }
    return dkim_body_final(&b, hash);
}

int dkim_sign_message(const char *msg, size_t len, const char *domain, dkim_key_t *const *keys,
                      size_t nkeys, uint64_t t, buf_t *out, char *err, size_t errlen)
{
    size_t hlen, blen;
    const char *body;
    uint8_t hash[DKIM_HASH_LEN];
    message_split(msg, len, &hlen, &body, &blen);
    if (body_hash_of(body, blen, hash) < 0) {
        set_err(err, errlen, "cannot hash the body");
        return -1;
    }
    return dkim_sign_header(msg, hlen, hash, domain, keys, nkeys, t, out, err, errlen);
}

/* ---- verifying ---- */

typedef struct tag {
    char name[8];
    const char *vs, *ve;   /* value, trimmed */
    size_t raw_vs, raw_ve; /* value offsets in the field, untrimmed (for b=) */
} tag_t;

/* Tags of a DKIM-Signature field's value; returns how many, -1 when malformed. */
static int sig_tags(const field_t *fl, tag_t *tags, size_t max)
{
    const char *p = memchr(fl->start, ':', fl->len) + 1;
    const char *end = fl->start + fl->len;
    size_t n = 0;
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *te = semi ? semi : end;
        const char *eq = memchr(p, '=', (size_t)(te - p));
        const char *ns = p, *ne = eq ? eq : te;
        trim(&ns, &ne);
        if (eq == NULL) {
            if (ns != ne)
                return -1;
        } else {
            if (n >= max || ne - ns == 0 || (size_t)(ne - ns) >= sizeof(tags[n].name))
                return -1;
            tag_t *t = &tags[n++];
            memcpy(t->name, ns, (size_t)(ne - ns));
            t->name[ne - ns] = '\0';
            t->vs = eq + 1;
            t->ve = te;
            t->raw_vs = (size_t)(t->vs - fl->start);
            t->raw_ve = (size_t)(te - fl->start);
            trim(&t->vs, &t->ve);
        }
        p = semi ? semi + 1 : end;
    }
    return (int)n;
}

static const tag_t *tag_get(const tag_t *tags, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(tags[i].name, name) == 0)
            return &tags[i];
    return NULL;
}

static int tag_is(const tag_t *t, const char *v)
{
    size_t n = strlen(v);
    return t && (size_t)(t->ve - t->vs) == n && strncasecmp(t->vs, v, n) == 0;
}

static EVP_PKEY *record_key(const dkim_record_t *rec, dkim_alg_t alg)
{
    unsigned char der[PUB_DER_MAX];
    long n = base64_decode(rec->p, strlen(rec->p), der, sizeof(der));
    if (n <= 0)
        return NULL;
    if (alg == DKIM_ALG_ED25519_SHA256)
        return n == 32 ? EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, der, 32) : NULL;
    const unsigned char *p = der;
    EVP_PKEY *pkey = d2i_PUBKEY(NULL, &p, n);
    if (pkey && !pkey_fits(pkey, alg)) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
    return pkey;
}

static int verify_data(EVP_PKEY *pkey, dkim_alg_t alg, const buf_t *data, const unsigned char *sig,
                       size_t siglen)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = 0;
    if (ctx == NULL)
        return 0;
    if (alg == DKIM_ALG_RSA_SHA256) {
        ok = EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pkey) == 1 &&
             EVP_DigestVerify(ctx, sig, siglen, (const unsigned char *)buf_head(data),
                              buf_used(data)) == 1;
    } else {
        unsigned char hash[DKIM_HASH_LEN];
        unsigned int hl = 0;
        ok = EVP_Digest(buf_head(data), buf_used(data), hash, &hl, EVP_sha256(), NULL) == 1 &&
             EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pkey) == 1 &&
             EVP_DigestVerify(ctx, sig, siglen, hash, sizeof(hash)) == 1;
    }
    EVP_MD_CTX_free(ctx);
    return ok;
}

static void copy_tag(const tag_t *t, char *out, size_t size)
{
    size_t n = t ? (size_t)(t->ve - t->vs) : 0;
    if (n >= size)
        n = size - 1;
    if (n)
        memcpy(out, t->vs, n);
    out[n] = '\0';
}

static int verify_fail(dkim_result_t *r, const char *why)
{
    sx_strlcpy(r->why, why, sizeof(r->why));
    r->ok = 0;
    return 0;
}

static int verify_one(fields_t *f, const field_t *sigf, const uint8_t body_hash[DKIM_HASH_LEN],
                      dkim_lookup_fn lookup, void *arg, dkim_result_t *r)
{
    tag_t tags[TAG_MAX];
    memset(r, 0, sizeof(*r));
    int nt = sig_tags(sigf, tags, TAG_MAX);
    if (nt < 0)
        return verify_fail(r, "malformed tag list");
    const tag_t *a = tag_get(tags, nt, "a"), *b = tag_get(tags, nt, "b");
    const tag_t *bh = tag_get(tags, nt, "bh"), *d = tag_get(tags, nt, "d");
    const tag_t *s = tag_get(tags, nt, "s"), *h = tag_get(tags, nt, "h");
    copy_tag(d, r->domain, sizeof(r->domain));
    copy_tag(s, r->selector, sizeof(r->selector));
    char alg[32];
    copy_tag(a, alg, sizeof(alg));
    r->alg = dkim_alg_parse(alg);
    if (!tag_is(tag_get(tags, nt, "v"), "1") || !a || !b || !bh || !d || !s || !h)
        return verify_fail(r, "a required tag is missing");
    if (r->alg == DKIM_ALG_NONE)
        return verify_fail(r, "unknown algorithm");
    if (!tag_is(tag_get(tags, nt, "c"), "relaxed/relaxed"))
        return verify_fail(r, "canonicalization is not relaxed/relaxed");
    if (tag_get(tags, nt, "l"))
        return verify_fail(r, "l= is not supported");

    char bh64[128];
    if (copy_no_wsp(bh->vs, bh->ve, bh64, sizeof(bh64)) < 0)
        return verify_fail(r, "bh= is too long");
    unsigned char want[64];
    if (base64_decode(bh64, strlen(bh64), want, sizeof(want)) != DKIM_HASH_LEN)
        return verify_fail(r, "bh= is not a SHA-256 hash");
    if (memcmp(want, body_hash, DKIM_HASH_LEN) != 0)
        return verify_fail(r, "body hash does not match");

    char b64[SIG_MAX * 2];
    unsigned char sig[SIG_MAX];
    if (copy_no_wsp(b->vs, b->ve, b64, sizeof(b64)) < 0)
        return verify_fail(r, "b= is too long");
    long siglen = base64_decode(b64, strlen(b64), sig, sizeof(sig));
    if (siglen <= 0)
        return verify_fail(r, "b= is not base64");

    const char *txt = lookup(r->selector, r->domain, arg);
    if (txt == NULL)
        return verify_fail(r, "no key record");
    dkim_record_t rec;
    const char *why;
    if (dkim_record_parse(txt, strlen(txt), &rec, &why) < 0)
        return verify_fail(r, why);
    if (strcasecmp(rec.k, dkim_alg_key_type(r->alg)) != 0)
        return verify_fail(r, "key type does not match the algorithm");
    EVP_PKEY *pkey = record_key(&rec, r->alg);
    if (pkey == NULL)
        return verify_fail(r, "the record's key does not decode");

    buf_t data;
    buf_init(&data, 0);
    for (size_t i = 0; i < f->n; i++)
        f->v[i].used = 0;
    int bad = 0;
    const char *p = h->vs;
    while (p < h->ve && !bad) {
        const char *c = memchr(p, ':', (size_t)(h->ve - p));
        const char *ns = p, *ne = c ? c : h->ve;
        trim(&ns, &ne);
        if (ne > ns)
            bad = hash_field(f, ns, (size_t)(ne - ns), &data) < 0;
        p = c ? c + 1 : h->ve;
    }
    /* this field with the value of b= taken out */
    buf_t self;
    buf_init(&self, 0);
    bad = bad || buf_append(&self, sigf->start, b->raw_vs) < 0 ||
          buf_append(&self, sigf->start + b->raw_ve, sigf->len - b->raw_ve) < 0 ||
          dkim_canon_header(buf_head(&self), buf_used(&self), &data) < 0;
    int ok = !bad && verify_data(pkey, r->alg, &data, sig, (size_t)siglen);
    buf_free(&self);
    buf_free(&data);
    EVP_PKEY_free(pkey);
    if (!ok)
        return verify_fail(r, bad ? "cannot canonicalize the header" : "signature does not verify");
    r->ok = 1;
    return 0;
}

int dkim_verify_message(const char *msg, size_t len, dkim_lookup_fn lookup, void *arg,
                        dkim_result_t *results, size_t max)
{
    size_t hlen, blen;
    const char *body;
    message_split(msg, len, &hlen, &body, &blen);
    fields_t f;
    if (hlen > DKIM_HEADER_MAX || fields_split(msg, hlen, &f) < 0) {
        free(f.v);
        return -1;
    }
    uint8_t hash[DKIM_HASH_LEN];
    if (body_hash_of(body, blen, hash) < 0) {
        free(f.v);
        return -1;
    }
    int count = 0;
    for (size_t i = 0; i < f.n; i++) {
        if (!field_is(&f.v[i], "dkim-signature", 14))
            continue;
        field_t sigf = f.v[i];
        if ((size_t)count < max)
            verify_one(&f, &sigf, hash, lookup, arg, &results[count]);
        count++;
    }
    free(f.v);
    return count;
}
