/*
 * auth_record: encoders and strict decoders for tenant, domain and
 * credential records. Nothing here touches the store or logs: a caller that
 * gets -1 decides what to say about it.
 */
#include "auth_record.h"
#include "auth_hash.h"
#include "core/alloc.h"

#include <openssl/crypto.h>

#include <stdlib.h>
#include <string.h>

#define REC_HEADER_LEN   2
#define REC_FIELD_HEAD   5  /* tag + u32 length */
#define REC_SECRET_FIXED 17 /* kind + created + expires, before the hash text */

enum { REC_TENANT = 'T', REC_DOMAIN = 'D', REC_CRED = 'C', REC_DKIM = 'K' };

enum { DOMAIN_F_TENANT = 1, DOMAIN_F_CREATED = 2, DOMAIN_F_VERIFIED = 3 };
enum { TENANT_F_PUBLIC = 1 };
enum { DKIM_F_GENERATION = 1, DKIM_F_VERIFIED_AT = 2, DKIM_F_KEY = 3 };
enum { KEY_F_SELECTOR = 1, KEY_F_ALG = 2, KEY_F_CREATED = 3, KEY_F_PUBLIC = 4, KEY_F_PRIVATE = 5 };

/* ---- little-endian integers ---- */

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* ---- writing ---- */

static int rec_begin(buf_t *out, char kind)
{
    uint8_t h[REC_HEADER_LEN] = {(uint8_t)kind, AUTH_RECORD_VERSION};
    return buf_append(out, h, sizeof(h));
}

static int rec_field(buf_t *out, uint8_t tag, const void *v, size_t len)
{
    if (len > AUTH_RECORD_MAX || buf_used(out) + REC_FIELD_HEAD + len > AUTH_RECORD_MAX)
        return -1;
    uint8_t h[REC_FIELD_HEAD];
    h[0] = tag;
    put_u32(h + 1, (uint32_t)len);
    if (buf_append(out, h, sizeof(h)) < 0)
        return -1;
    return len ? buf_append(out, v, len) : 0;
}

static int rec_u64(buf_t *out, uint8_t tag, uint64_t v)
{
    uint8_t b[8];
    put_u64(b, v);
    return rec_field(out, tag, b, sizeof(b));
}

/* Pack a protobuf message as one field. */
static int rec_message(buf_t *out, uint8_t tag, const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    if (len > AUTH_RECORD_MAX)
        return -1;
    uint8_t *tmp = xmalloc(len);
    protobuf_c_message_pack(m, tmp);
    int rc = rec_field(out, tag, tmp, len);
    free(tmp);
    return rc;
}

/* ---- reading ---- */

typedef struct rec_reader {
    const uint8_t *p;
    size_t left;
} rec_reader_t;

static int rec_open(const void *data, size_t len, char kind, rec_reader_t *r)
{
    const uint8_t *p = data;
    if (data == NULL || len < REC_HEADER_LEN || len > AUTH_RECORD_MAX || p[0] != (uint8_t)kind ||
        p[1] != AUTH_RECORD_VERSION)
        return -1;
    r->p = p + REC_HEADER_LEN;
    r->left = len - REC_HEADER_LEN;
    return 0;
}

/* 1: a field; 0: the end; -1: truncated. */
static int rec_next(rec_reader_t *r, uint8_t *tag, const uint8_t **val, size_t *vlen)
{
    if (r->left == 0)
        return 0;
    if (r->left < REC_FIELD_HEAD)
        return -1;
    uint32_t n = get_u32(r->p + 1);
    if (n > r->left - REC_FIELD_HEAD)
        return -1;
    *tag = r->p[0];
    *val = r->p + REC_FIELD_HEAD;
    *vlen = n;
    r->p += REC_FIELD_HEAD + n;
    r->left -= REC_FIELD_HEAD + n;
    return 1;
}

static int field_u64(const uint8_t *v, size_t n, uint64_t *out)
{
    if (n != 8)
        return -1;
    *out = get_u64(v);
    return 0;
}

/* A stored name: non-empty, bounded, no NUL inside. */
static int text_ok(const char *s, size_t max)
{
    if (s == NULL)
        return 0;
    size_t n = strnlen(s, max + 1);
    return n > 0 && n <= max;
}

/* ---- tenant ---- */

int auth_record_tenant_encode(const PB(Tenant) * t, buf_t *out)
{
    PB(Tenant) copy = *t;
    copy.n_domains = 0; /* a tenant's domains live in their own records */
    copy.domains = NULL;
    if (rec_begin(out, REC_TENANT) < 0 ||
        rec_message(out, TENANT_F_PUBLIC, (const ProtobufCMessage *)&copy) < 0)
        return -1;
    return 0;
}

PB(Tenant) * auth_record_tenant_decode(const void *data, size_t len)
{
    rec_reader_t r;
    uint8_t tag;
    const uint8_t *v;
    size_t n;
    int rc;
    PB(Tenant) *t = NULL;
    if (rec_open(data, len, REC_TENANT, &r) < 0)
        return NULL;
    while ((rc = rec_next(&r, &tag, &v, &n)) == 1) {
        if (tag != TENANT_F_PUBLIC)
            continue;
        if (t != NULL)
            goto bad;
        t = PB_FN(tenant, unpack)(NULL, n, v);
        if (t == NULL)
            return NULL;
    }
    if (rc < 0 || t == NULL || !text_ok(t->name, AUTH_TENANT_MAX) || t->n_domains != 0)
        goto bad;
    return t;
bad:
    if (t)
        PB_FN(tenant, free_unpacked)(t, NULL);
    return NULL;
}

/* ---- domain ---- */

int auth_record_domain_encode(const auth_domain_rec_t *d, buf_t *out)
{
    if (rec_begin(out, REC_DOMAIN) < 0 ||
        rec_field(out, DOMAIN_F_TENANT, d->tenant, strnlen(d->tenant, AUTH_TENANT_MAX)) < 0 ||
        rec_u64(out, DOMAIN_F_CREATED, d->created_at_ms) < 0)
        return -1;
    uint8_t verified = d->verified ? 1 : 0;
    return rec_field(out, DOMAIN_F_VERIFIED, &verified, 1);
}

int auth_record_domain_decode(const void *data, size_t len, auth_domain_rec_t *out)
{
    rec_reader_t r;
    uint8_t tag;
    const uint8_t *v;
    size_t n;
    int rc, have_tenant = 0;
    memset(out, 0, sizeof(*out));
    out->verified = 1; /* written before the flag existed */
    if (rec_open(data, len, REC_DOMAIN, &r) < 0)
        return -1;
    while ((rc = rec_next(&r, &tag, &v, &n)) == 1) {
        if (tag == DOMAIN_F_TENANT) {
            if (have_tenant || n == 0 || n > AUTH_TENANT_MAX || memchr(v, 0, n))
                return -1;
            memcpy(out->tenant, v, n);
            out->tenant[n] = '\0';
            have_tenant = 1;
        } else if (tag == DOMAIN_F_CREATED) {
            if (field_u64(v, n, &out->created_at_ms) < 0)
                return -1;
        } else if (tag == DOMAIN_F_VERIFIED) {
            if (n != 1 || v[0] > 1)
                return -1;
            out->verified = v[0];
        }
    }
    return rc < 0 || !have_tenant ? -1 : 0;
}

/* ---- credential ---- */

static void secret_wipe(auth_secret_t *s)
{
    if (s->hash) {
        memset(s->hash, 0, strlen(s->hash));
        free(s->hash);
        s->hash = NULL;
    }
}

void auth_cred_init(auth_cred_t *c)
{
    memset(c, 0, sizeof(*c));
    c->pub = xmalloc(sizeof(*c->pub));
    PB(Credential) init = PB_INIT(CREDENTIAL);
    *c->pub = init;
    buf_init(&c->unknown, AUTH_RECORD_MAX);
}

void auth_cred_clear(auth_cred_t *c)
{
    if (c->pub)
        PB_FN(credential, free_unpacked)(c->pub, NULL);
    c->pub = NULL;
    for (size_t i = 0; i < c->n_secrets; i++)
        secret_wipe(&c->secrets[i]);
    free(c->secrets);
    c->secrets = NULL;
    c->n_secrets = 0;
    buf_free(&c->unknown);
}

int auth_cred_add_secret(auth_cred_t *c, uint8_t kind, const char *hash, uint64_t created_at_ms,
                         uint64_t expires_at_ms)
{
    if (c->n_secrets >= AUTH_SECRETS_MAX)
        return -1;
    c->secrets = xrealloc(c->secrets, (c->n_secrets + 1) * sizeof(*c->secrets));
    auth_secret_t *s = &c->secrets[c->n_secrets++];
    s->kind = kind;
    s->hash = xstrdup(hash);
    s->created_at_ms = created_at_ms;
    s->expires_at_ms = expires_at_ms;
    return 0;
}

static size_t password_count(const auth_cred_t *c)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n_secrets; i++)
        n += c->secrets[i].kind == AUTH_SECRET_PASSWORD;
    return n;
}

static int secret_live(const auth_secret_t *s, uint64_t now_ms)
{
    return s->expires_at_ms == 0 || s->expires_at_ms > now_ms;
}

size_t auth_cred_live_passwords(const auth_cred_t *c, uint64_t now_ms)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n_secrets; i++)
        n += c->secrets[i].kind == AUTH_SECRET_PASSWORD && secret_live(&c->secrets[i], now_ms);
    return n;
}

void auth_cred_prune(auth_cred_t *c, uint64_t now_ms)
{
    size_t kept = 0;
    for (size_t i = 0; i < c->n_secrets; i++) {
        if (secret_live(&c->secrets[i], now_ms))
            c->secrets[kept++] = c->secrets[i];
        else
            secret_wipe(&c->secrets[i]);
    }
    c->n_secrets = kept;
}

void auth_cred_drop_secrets(auth_cred_t *c)
{
    for (size_t i = 0; i < c->n_secrets; i++)
        secret_wipe(&c->secrets[i]);
    c->n_secrets = 0;
}

static int secret_encode(buf_t *out, const auth_secret_t *s)
{
    size_t hlen = strnlen(s->hash, AUTH_HASH_STR_MAX);
    if (hlen == 0 || hlen >= AUTH_HASH_STR_MAX)
        return -1;
    uint8_t b[REC_SECRET_FIXED + AUTH_HASH_STR_MAX];
    b[0] = s->kind;
    put_u64(b + 1, s->created_at_ms);
    put_u64(b + 9, s->expires_at_ms);
    memcpy(b + REC_SECRET_FIXED, s->hash, hlen);
    return rec_field(out, AUTH_CRED_F_SECRET, b, REC_SECRET_FIXED + hlen);
}

int auth_record_cred_encode(const auth_cred_t *c, buf_t *out)
{
    if (c->pub == NULL || c->n_secrets > AUTH_SECRETS_MAX)
        return -1;
    PB(Credential) pub = *c->pub;
    pub.password_count = (uint32_t)password_count(c);
    if (rec_begin(out, REC_CRED) < 0 ||
        rec_message(out, AUTH_CRED_F_PUBLIC, (const ProtobufCMessage *)&pub) < 0 ||
        rec_u64(out, AUTH_CRED_F_GENERATION, c->generation) < 0 ||
        rec_u64(out, AUTH_CRED_F_UPDATED, c->updated_at_ms) < 0)
        return -1;
    for (size_t i = 0; i < c->n_secrets; i++)
        if (secret_encode(out, &c->secrets[i]) < 0)
            return -1;
    if (buf_used(&c->unknown) > 0) {
        if (buf_used(out) + buf_used(&c->unknown) > AUTH_RECORD_MAX ||
            buf_append(out, buf_head(&c->unknown), buf_used(&c->unknown)) < 0)
            return -1;
    }
    return 0;
}

static int secret_decode(auth_cred_t *c, const uint8_t *v, size_t n)
{
    if (n <= REC_SECRET_FIXED || n - REC_SECRET_FIXED >= AUTH_HASH_STR_MAX)
        return -1;
    size_t hlen = n - REC_SECRET_FIXED;
    if (memchr(v + REC_SECRET_FIXED, 0, hlen))
        return -1;
    char hash[AUTH_HASH_STR_MAX];
    memcpy(hash, v + REC_SECRET_FIXED, hlen);
    hash[hlen] = '\0';
    return auth_cred_add_secret(c, v[0], hash, get_u64(v + 1), get_u64(v + 9));
}

/* The public part must name a user and a tenant and stay within limits. */
static int cred_public_ok(const PB(Credential) * p)
{
    if (!text_ok(p->username, AUTH_USERNAME_MAX) || !text_ok(p->tenant, AUTH_TENANT_MAX) ||
        p->n_domains > AUTH_CRED_DOMAINS_MAX)
        return 0;
    for (size_t i = 0; i < p->n_domains; i++)
        if (!text_ok(p->domains[i], AUTH_DOMAIN_MAX))
            return 0;
    if (p->n_allowed_networks > AUTH_CRED_NETWORKS_MAX)
        return 0;
    for (size_t i = 0; i < p->n_allowed_networks; i++)
        if (!text_ok(p->allowed_networks[i], AUTH_NETWORK_MAX))
            return 0;
    return 1;
}

int auth_record_cred_decode(const void *data, size_t len, auth_cred_t *out)
{
    rec_reader_t r;
    uint8_t tag;
    const uint8_t *v;
    size_t n;
    int rc, have_generation = 0;
    auth_cred_t c;
    memset(&c, 0, sizeof(c));
    buf_init(&c.unknown, AUTH_RECORD_MAX);
    if (rec_open(data, len, REC_CRED, &r) < 0)
        goto bad;
    while ((rc = rec_next(&r, &tag, &v, &n)) == 1) {
        switch (tag) {
        case AUTH_CRED_F_PUBLIC:
            if (c.pub != NULL || (c.pub = PB_FN(credential, unpack)(NULL, n, v)) == NULL)
                goto bad;
            break;
        case AUTH_CRED_F_GENERATION:
            if (have_generation || field_u64(v, n, &c.generation) < 0)
                goto bad;
            have_generation = 1;
            break;
        case AUTH_CRED_F_UPDATED:
            if (field_u64(v, n, &c.updated_at_ms) < 0)
                goto bad;
            break;
        case AUTH_CRED_F_SECRET:
            if (secret_decode(&c, v, n) < 0)
                goto bad;
            break;
        default:
            /* a newer version's field: keep it for the next write */
            if (buf_append(&c.unknown, v - REC_FIELD_HEAD, n + REC_FIELD_HEAD) < 0)
                goto bad;
            break;
        }
    }
    if (rc < 0 || c.pub == NULL || !have_generation || !cred_public_ok(c.pub))
        goto bad;
    c.pub->password_count = (uint32_t)password_count(&c);
    *out = c;
    return 0;
bad:
    auth_cred_clear(&c);
    return -1;
}

/* ---- DKIM keys ---- */

static void key_clear(auth_dkim_key_t *k)
{
    if (k->private_pem) {
        OPENSSL_cleanse(k->private_pem, strlen(k->private_pem));
        free(k->private_pem);
    }
    free(k->public_b64);
    memset(k, 0, sizeof(*k));
}

void auth_dkim_rec_clear(auth_dkim_rec_t *r)
{
    for (size_t i = 0; i < r->n && i < AUTH_DKIM_KEYS_MAX; i++)
        key_clear(&r->keys[i]);
    memset(r, 0, sizeof(*r));
}

void auth_dkim_rec_move(auth_dkim_rec_t *dst, auth_dkim_rec_t *src)
{
    auth_dkim_rec_clear(dst);
    *dst = *src;
    memset(src, 0, sizeof(*src));
}

static int key_encode(const auth_dkim_key_t *k, buf_t *out)
{
    buf_t b;
    buf_init(&b, AUTH_RECORD_MAX);
    uint8_t alg = k->alg;
    size_t pem = k->private_pem ? strnlen(k->private_pem, AUTH_DKIM_PEM_MAX + 1) : 0;
    size_t pub = k->public_b64 ? strnlen(k->public_b64, AUTH_DKIM_PUBLIC_MAX + 1) : 0;
    int rc = -1;
    if (pem > 0 && pem <= AUTH_DKIM_PEM_MAX && pub > 0 && pub <= AUTH_DKIM_PUBLIC_MAX &&
        rec_field(&b, KEY_F_SELECTOR, k->selector, strnlen(k->selector, AUTH_DKIM_SELECTOR_MAX)) ==
            0 &&
        rec_field(&b, KEY_F_ALG, &alg, 1) == 0 &&
        rec_u64(&b, KEY_F_CREATED, k->created_at_ms) == 0 &&
        rec_field(&b, KEY_F_PUBLIC, k->public_b64, pub) == 0 &&
        rec_field(&b, KEY_F_PRIVATE, k->private_pem, pem) == 0)
        rc = rec_field(out, DKIM_F_KEY, buf_head(&b), buf_used(&b));
    OPENSSL_cleanse(b.data, b.cap);
    buf_free(&b);
    return rc;
}

int auth_record_dkim_encode(const auth_dkim_rec_t *r, buf_t *out)
{
    if (r->n > AUTH_DKIM_KEYS_MAX || rec_begin(out, REC_DKIM) < 0 ||
        rec_u64(out, DKIM_F_GENERATION, r->generation) < 0 ||
        rec_u64(out, DKIM_F_VERIFIED_AT, r->verified_at_ms) < 0)
        return -1;
    for (size_t i = 0; i < r->n; i++)
        if (key_encode(&r->keys[i], out) < 0)
            return -1;
    return 0;
}

/* A text sub-field: 1..max bytes, no NUL inside. */
static char *text_field(const uint8_t *v, size_t n, size_t max)
{
    if (n == 0 || n > max || memchr(v, 0, n))
        return NULL;
    return xstrndup((const char *)v, n);
}

static int key_decode(const uint8_t *data, size_t len, auth_dkim_key_t *k)
{
    rec_reader_t r = {data, len};
    uint8_t tag;
    const uint8_t *v;
    size_t n;
    int rc, have_sel = 0, have_alg = 0;
    while ((rc = rec_next(&r, &tag, &v, &n)) == 1) {
        switch (tag) {
        case KEY_F_SELECTOR:
            if (have_sel || n == 0 || n > AUTH_DKIM_SELECTOR_MAX || memchr(v, 0, n))
                return -1;
            memcpy(k->selector, v, n);
            k->selector[n] = '\0';
            have_sel = 1;
            break;
        case KEY_F_ALG:
            if (have_alg || n != 1 || v[0] == 0)
                return -1;
            k->alg = v[0];
            have_alg = 1;
            break;
        case KEY_F_CREATED:
            if (field_u64(v, n, &k->created_at_ms) < 0)
                return -1;
            break;
        case KEY_F_PUBLIC:
            if (k->public_b64 || (k->public_b64 = text_field(v, n, AUTH_DKIM_PUBLIC_MAX)) == NULL)
                return -1;
            break;
        case KEY_F_PRIVATE:
            if (k->private_pem || (k->private_pem = text_field(v, n, AUTH_DKIM_PEM_MAX)) == NULL)
                return -1;
            break;
        default:
            break;
        }
    }
    return rc < 0 || !have_sel || !have_alg || !k->public_b64 || !k->private_pem ? -1 : 0;
}

int auth_record_dkim_decode(const void *data, size_t len, auth_dkim_rec_t *out)
{
    rec_reader_t r;
    uint8_t tag;
    const uint8_t *v;
    size_t n;
    int rc, have_gen = 0;
    uint64_t g;
    auth_dkim_rec_t d;
    memset(&d, 0, sizeof(d));
    if (rec_open(data, len, REC_DKIM, &r) < 0)
        return -1;
    while ((rc = rec_next(&r, &tag, &v, &n)) == 1) {
        if (tag == DKIM_F_GENERATION) {
            if (have_gen || field_u64(v, n, &g) < 0 || g > UINT32_MAX)
                goto bad;
            d.generation = (uint32_t)g;
            have_gen = 1;
        } else if (tag == DKIM_F_VERIFIED_AT) {
            if (field_u64(v, n, &d.verified_at_ms) < 0)
                goto bad;
        } else if (tag == DKIM_F_KEY) {
            if (d.n >= AUTH_DKIM_KEYS_MAX)
                goto bad;
            d.n++;
            if (key_decode(v, n, &d.keys[d.n - 1]) < 0)
                goto bad;
        }
    }
    if (rc < 0 || !have_gen)
        goto bad;
    *out = d;
    return 0;
bad:
    auth_dkim_rec_clear(&d);
    return -1;
}
