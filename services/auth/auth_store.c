/*
 * auth_store: tenants, domains and credentials in LMDB. Checks that decide
 * a write run inside the write transaction; lists and lookups use short read
 * transactions. Logs corrupt records (with their key) and store failures;
 * does not log successful writes, which auth_api reports.
 */
#include "auth_store.h"
#include "auth_dkim.h"
#include "core/alloc.h"
#include "core/log.h"
#include "store/store.h"

#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define META_SCHEMA     "schema"
#define META_GENERATION "generation"
#define INDEX_KEY_MAX   (AUTH_TENANT_MAX + 1 + AUTH_DOMAIN_MAX)

struct auth_store {
    store_t *st;
    unsigned tenants, domains, tenant_domains, credentials, rate_day, meta, dkim;
    size_t n_tenants;
    size_t n_creds;
};

static void log_corrupt(const char *db, const void *key, size_t klen)
{
    char q[2 * AUTH_DOMAIN_MAX + 8];
    log_error("event=record_corrupt db=%s key=%s action=skipped", db,
              log_quote(q, sizeof(q), key, klen));
}

static auth_st_t map_store(int rc)
{
    switch (rc) {
    case STORE_OK:
        return AUTH_ST_OK;
    case STORE_NOTFOUND:
        return AUTH_ST_NOTFOUND;
    case STORE_FULL:
        return AUTH_ST_FULL;
    default:
        return AUTH_ST_ERROR;
    }
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int count_fn(const store_val_t *key, const store_val_t *val, void *arg)
{
    (void)key;
    (void)val;
    (void)arg;
    return 0;
}

/* Check the store's format version, writing it on a new store. */
static int schema_fn(store_txn_t *txn, void *arg)
{
    auth_store_t *as = arg;
    store_val_t v;
    int rc = store_get(txn, as->meta, META_SCHEMA, strlen(META_SCHEMA), &v);
    if (rc == STORE_NOTFOUND) {
        uint8_t b[4] = {AUTH_STORE_SCHEMA, 0, 0, 0};
        return store_put(txn, as->meta, META_SCHEMA, strlen(META_SCHEMA), b, sizeof(b));
    }
    if (rc != STORE_OK)
        return rc;
    if (v.len != 4)
        return STORE_ERROR;
    const uint8_t *b = v.data;
    uint32_t schema =
        (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return schema == AUTH_STORE_SCHEMA ? 0 : STORE_ERROR;
}

auth_store_t *auth_store_open(const char *dir, char *err, size_t errlen)
{
    auth_store_t *as = xcalloc(1, sizeof(*as));
    store_opts_t opts = {0};
    as->st = store_open(dir, &opts, err, errlen);
    if (as->st == NULL)
        goto fail;
    if (store_db(as->st, "tenants", &as->tenants) != STORE_OK ||
        store_db(as->st, "domains", &as->domains) != STORE_OK ||
        store_db(as->st, "tenant_domains", &as->tenant_domains) != STORE_OK ||
        store_db(as->st, "credentials", &as->credentials) != STORE_OK ||
        store_db(as->st, "rate_day", &as->rate_day) != STORE_OK ||
        store_db(as->st, "meta", &as->meta) != STORE_OK ||
        store_db(as->st, "dkim", &as->dkim) != STORE_OK) {
        set_err(err, errlen, "%s: cannot open the named databases", dir);
        goto fail;
    }
    if (store_write(as->st, schema_fn, as) != STORE_OK) {
        set_err(err, errlen, "%s: store format is not version %d (or unreadable)", dir,
                AUTH_STORE_SCHEMA);
        goto fail;
    }
    store_txn_t *txn = store_begin(as->st, 0);
    if (txn == NULL) {
        set_err(err, errlen, "%s: cannot read the store", dir);
        goto fail;
    }
    long t = store_scan(txn, as->tenants, NULL, 0, NULL, 0, count_fn, NULL);
    long c = store_scan(txn, as->credentials, NULL, 0, NULL, 0, count_fn, NULL);
    store_abort(&txn);
    if (t < 0 || c < 0) {
        set_err(err, errlen, "%s: cannot read the store", dir);
        goto fail;
    }
    as->n_tenants = (size_t)t;
    as->n_creds = (size_t)c;
    return as;
fail:
    auth_store_close(&as);
    return NULL;
}

void auth_store_close(auth_store_t **p)
{
    auth_store_t *as = *p;
    if (as == NULL)
        return;
    store_close(&as->st);
    free(as);
    *p = NULL;
}

size_t auth_store_tenant_count(const auth_store_t *st)
{
    return st->n_tenants;
}

size_t auth_store_cred_count(const auth_store_t *st)
{
    return st->n_creds;
}

/* ---- string arrays, shaped like repeated protobuf fields ---- */

static void strv_push(char ***v, size_t *n, const char *s, size_t len)
{
    *v = xrealloc(*v, (*n + 1) * sizeof(**v));
    (*v)[(*n)++] = xstrndup(s, len);
}

static void strv_free(char ***v, size_t *n)
{
    for (size_t i = 0; i < *n; i++)
        free((*v)[i]);
    free(*v);
    *v = NULL;
    *n = 0;
}

/* ---- records inside a transaction ---- */

static int put_encoded(store_txn_t *txn, unsigned dbi, const char *key, const buf_t *b)
{
    return store_put(txn, dbi, key, strlen(key), buf_head(b), buf_used(b));
}

/* The owner of a domain, AUTH_ST_NOTFOUND or AUTH_ST_CORRUPT. */
static auth_st_t domain_owner(auth_store_t *as, store_txn_t *txn, const char *domain,
                              auth_domain_rec_t *rec)
{
    store_val_t v;
    int rc = store_get(txn, as->domains, domain, strlen(domain), &v);
    if (rc != STORE_OK)
        return map_store(rc);
    if (auth_record_domain_decode(v.data, v.len, rec) < 0) {
        log_corrupt("domains", domain, strlen(domain));
        return AUTH_ST_CORRUPT;
    }
    return AUTH_ST_OK;
}

static int index_key(char *out, size_t size, const char *tenant, const char *domain)
{
    size_t t = strlen(tenant), d = strlen(domain);
    if (t + 1 + d > size)
        return -1;
    memcpy(out, tenant, t);
    out[t] = '\0';
    memcpy(out + t + 1, domain, d);
    return (int)(t + 1 + d);
}

typedef struct domains_scan {
    size_t prefix_len;
    char **v;
    size_t n;
} domains_scan_t;

static int tenant_domains_fn(const store_val_t *key, const store_val_t *val, void *arg)
{
    (void)val;
    domains_scan_t *s = arg;
    if (key->len > s->prefix_len)
        strv_push(&s->v, &s->n, (const char *)key->data + s->prefix_len, key->len - s->prefix_len);
    return 0;
}

/* Every domain of a tenant, from the index. */
static auth_st_t tenant_domains(auth_store_t *as, store_txn_t *txn, const char *tenant, char ***v,
                                size_t *n)
{
    char prefix[AUTH_TENANT_MAX + 2];
    size_t plen = strlen(tenant) + 1;
    if (plen > sizeof(prefix))
        return AUTH_ST_NOTFOUND;
    memcpy(prefix, tenant, plen); /* the terminator is the separator */
    domains_scan_t s = {.prefix_len = plen};
    if (store_scan(txn, as->tenant_domains, prefix, plen, NULL, 0, tenant_domains_fn, &s) < 0) {
        strv_free(&s.v, &s.n);
        return AUTH_ST_ERROR;
    }
    *v = s.v;
    *n = s.n;
    return AUTH_ST_OK;
}

/* ---- tenants ---- */

typedef struct tenant_add {
    auth_store_t *as;
    const char *name;
    uint64_t now_ms;
    auth_st_t result;
    char *err;
    size_t errlen;
} tenant_add_t;

static int tenant_add_fn(store_txn_t *txn, void *arg)
{
    tenant_add_t *a = arg;
    store_val_t v;
    a->result = AUTH_ST_OK;
    int rc = store_get(txn, a->as->tenants, a->name, strlen(a->name), &v);
    if (rc == STORE_OK) {
        a->result = AUTH_ST_EXISTS;
        set_err(a->err, a->errlen, "tenant %s already exists", a->name);
        return -1;
    }
    if (rc != STORE_NOTFOUND)
        return rc;
    PB(Tenant) t = PB_INIT(TENANT);
    t.name = (char *)a->name;
    t.created_at_ms = a->now_ms;
    buf_t b;
    buf_init(&b, AUTH_RECORD_MAX);
    rc = auth_record_tenant_encode(&t, &b) < 0 ? STORE_ERROR
                                               : put_encoded(txn, a->as->tenants, a->name, &b);
    buf_free(&b);
    return rc;
}

auth_st_t auth_store_tenant_add(auth_store_t *st, const char *name, uint64_t now_ms,
                                PB(Tenant) * *out, char *err, size_t errlen)
{
    tenant_add_t a = {.as = st, .name = name, .now_ms = now_ms, .err = err, .errlen = errlen};
    int rc = store_write(st->st, tenant_add_fn, &a);
    if (a.result != AUTH_ST_OK)
        return a.result;
    if (rc != STORE_OK) {
        set_err(err, errlen, "cannot write the tenant: %s", store_strerror(rc));
        return map_store(rc) == AUTH_ST_FULL ? AUTH_ST_FULL : AUTH_ST_ERROR;
    }
    st->n_tenants++;
    if (out) {
        PB(Tenant) *t = xmalloc(sizeof(*t));
        PB(Tenant) init = PB_INIT(TENANT);
        *t = init;
        t->name = xstrdup(name);
        t->created_at_ms = now_ms;
        *out = t;
    }
    return AUTH_ST_OK;
}

int auth_store_tenant_exists(auth_store_t *st, const char *name)
{
    store_txn_t *txn = store_begin(st->st, 0);
    if (txn == NULL)
        return -1;
    store_val_t v;
    int rc = store_get(txn, st->tenants, name, strlen(name), &v);
    store_abort(&txn);
    return rc == STORE_OK ? 1 : rc == STORE_NOTFOUND ? 0 : -1;
}

/* Decode a tenant record and check it is the one its key names. */
static PB(Tenant) * tenant_decode_checked(const void *key, size_t klen, const store_val_t *val)
{
    PB(Tenant) *t = auth_record_tenant_decode(val->data, val->len);
    if (t == NULL || strlen(t->name) != klen || memcmp(t->name, key, klen) != 0) {
        if (t)
            PB_FN(tenant, free_unpacked)(t, NULL);
        log_corrupt("tenants", key, klen);
        return NULL;
    }
    return t;
}

typedef struct tenant_list {
    auth_store_t *as;
    store_txn_t *txn;
    PB(Tenant) * *v;
    size_t n;
    int failed;
} tenant_list_t;

static int tenant_list_fn(const store_val_t *key, const store_val_t *val, void *arg)
{
    tenant_list_t *l = arg;
    PB(Tenant) *t = tenant_decode_checked(key->data, key->len, val);
    if (t == NULL)
        return 0;
    if (tenant_domains(l->as, l->txn, t->name, &t->domains, &t->n_domains) != AUTH_ST_OK) {
        PB_FN(tenant, free_unpacked)(t, NULL);
        l->failed = 1;
        return 1;
    }
    l->v = xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
    l->v[l->n++] = t;
    return 0;
}

auth_st_t auth_store_tenant_list(auth_store_t *st, PB(Tenant) * **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    store_txn_t *txn = store_begin(st->st, 0);
    if (txn == NULL)
        return AUTH_ST_ERROR;
    tenant_list_t l = {.as = st, .txn = txn};
    long rc = store_scan(txn, st->tenants, NULL, 0, NULL, 0, tenant_list_fn, &l);
    store_abort(&txn);
    if (rc < 0 || l.failed) {
        for (size_t i = 0; i < l.n; i++)
            PB_FN(tenant, free_unpacked)(l.v[i], NULL);
        free(l.v);
        return AUTH_ST_ERROR;
    }
    *out = l.v;
    *n = l.n;
    return AUTH_ST_OK;
}

auth_st_t auth_store_tenant_get(auth_store_t *st, const char *name, PB(Tenant) * *out)
{
    *out = NULL;
    store_txn_t *txn = store_begin(st->st, 0);
    if (txn == NULL)
        return AUTH_ST_ERROR;
    store_val_t v;
    size_t klen = strlen(name);
    auth_st_t rc = map_store(store_get(txn, st->tenants, name, klen, &v));
    if (rc == AUTH_ST_OK) {
        PB(Tenant) *t = tenant_decode_checked(name, klen, &v);
        if (t == NULL)
            rc = AUTH_ST_CORRUPT;
        else if ((rc = tenant_domains(st, txn, name, &t->domains, &t->n_domains)) != AUTH_ST_OK)
            PB_FN(tenant, free_unpacked)(t, NULL);
        else
            *out = t;
    }
    store_abort(&txn);
    return rc;
}

typedef struct tenant_limits {
    auth_store_t *as;
    const char *name;
    uint32_t per_minute, per_day;
    auth_st_t result;
    char *err;
    size_t errlen;
} tenant_limits_t;

static int tenant_limits_fn(store_txn_t *txn, void *arg)
{
    tenant_limits_t *a = arg;
    size_t klen = strlen(a->name);
    store_val_t v;
    a->result = AUTH_ST_OK;
    int rc = store_get(txn, a->as->tenants, a->name, klen, &v);
    if (rc == STORE_NOTFOUND) {
        a->result = AUTH_ST_NOTFOUND;
        set_err(a->err, a->errlen, "tenant %s not found", a->name);
        return -1;
    }
    if (rc != STORE_OK)
        return rc;
    PB(Tenant) *t = tenant_decode_checked(a->name, klen, &v);
    if (t == NULL) {
        a->result = AUTH_ST_CORRUPT;
        set_err(a->err, a->errlen, "the record of tenant %s is unreadable", a->name);
        return -1;
    }
    t->rate_per_minute = a->per_minute;
    t->rate_per_day = a->per_day;
    buf_t b;
    buf_init(&b, AUTH_RECORD_MAX);
    rc = auth_record_tenant_encode(t, &b) < 0 ? STORE_ERROR
                                              : put_encoded(txn, a->as->tenants, a->name, &b);
    buf_free(&b);
    PB_FN(tenant, free_unpacked)(t, NULL);
    return rc;
}

auth_st_t auth_store_tenant_set_limits(auth_store_t *st, const char *name, uint32_t per_minute,
                                       uint32_t per_day, char *err, size_t errlen)
{
    tenant_limits_t a = {.as = st,
                         .name = name,
                         .per_minute = per_minute,
                         .per_day = per_day,
                         .err = err,
                         .errlen = errlen};
    int rc = store_write(st->st, tenant_limits_fn, &a);
    if (a.result != AUTH_ST_OK)
        return a.result;
    if (rc != STORE_OK) {
        set_err(err, errlen, "cannot write the tenant: %s", store_strerror(rc));
        return map_store(rc) == AUTH_ST_FULL ? AUTH_ST_FULL : AUTH_ST_ERROR;
    }
    return AUTH_ST_OK;
}

/* ---- domains ---- */

typedef struct domain_add {
    auth_store_t *as;
    const char *domain;
    const char *tenant;
    int verified;
    uint64_t now_ms;
    const auth_dkim_rec_t *keys;
    int updated;
    auth_st_t result;
    char *err;
    size_t errlen;
} domain_add_t;

static int put_domain(store_txn_t *txn, auth_store_t *as, const char *domain,
                      const auth_domain_rec_t *rec)
{
    buf_t b;
    buf_init(&b, AUTH_RECORD_MAX);
    int rc = auth_record_domain_encode(rec, &b) < 0 ? STORE_ERROR
                                                    : put_encoded(txn, as->domains, domain, &b);
    buf_free(&b);
    return rc;
}

static int put_dkim(store_txn_t *txn, auth_store_t *as, const char *domain,
                    const auth_dkim_rec_t *rec)
{
    buf_t b;
    buf_init(&b, AUTH_RECORD_MAX);
    int rc =
        auth_record_dkim_encode(rec, &b) < 0 ? STORE_ERROR : put_encoded(txn, as->dkim, domain, &b);
    OPENSSL_cleanse(b.data, b.cap);
    buf_free(&b);
    return rc;
}

/* The domain's keys inside txn: none is AUTH_ST_OK with an empty rec. */
static auth_st_t dkim_read(auth_store_t *as, store_txn_t *txn, const char *domain,
                           auth_dkim_rec_t *rec)
{
    store_val_t v;
    memset(rec, 0, sizeof(*rec));
    int rc = store_get(txn, as->dkim, domain, strlen(domain), &v);
    if (rc == STORE_NOTFOUND)
        return AUTH_ST_OK;
    if (rc != STORE_OK)
        return map_store(rc);
    if (auth_record_dkim_decode(v.data, v.len, rec) < 0) {
        log_corrupt("dkim", domain, strlen(domain));
        return AUTH_ST_CORRUPT;
    }
    return AUTH_ST_OK;
}

/* Whether the domain has keys inside txn: 1, 0, or -1 (unreadable). */
static int dkim_present(auth_store_t *as, store_txn_t *txn, const char *domain)
{
    store_val_t v;
    int rc = store_get(txn, as->dkim, domain, strlen(domain), &v);
    return rc == STORE_OK ? 1 : rc == STORE_NOTFOUND ? 0 : -1;
}

static int domain_add_fn(store_txn_t *txn, void *arg)
{
    domain_add_t *a = arg;
    store_val_t v;
    a->result = AUTH_ST_OK;
    a->updated = 0;
    int with_keys = a->keys && a->keys->n > 0;
    int rc = store_get(txn, a->as->tenants, a->tenant, strlen(a->tenant), &v);
    if (rc == STORE_NOTFOUND) {
        a->result = AUTH_ST_NOTFOUND;
        set_err(a->err, a->errlen, "tenant %s not found", a->tenant);
        return -1;
    }
    if (rc != STORE_OK)
        return rc;
    auth_domain_rec_t rec;
    auth_st_t st = domain_owner(a->as, txn, a->domain, &rec);
    if (st == AUTH_ST_OK) {
        int same = strcmp(rec.tenant, a->tenant) == 0;
        if (same && a->verified && !rec.verified) {
            rec.verified = 1;
            a->updated = 1;
            rc = put_domain(txn, a->as, a->domain, &rec);
            if (rc == STORE_OK && with_keys && dkim_present(a->as, txn, a->domain) == 0)
                rc = put_dkim(txn, a->as, a->domain, a->keys);
            return rc;
        }
        a->result = same ? AUTH_ST_EXISTS : AUTH_ST_CONFLICT;
        set_err(a->err, a->errlen, "domain %s already belongs to %s", a->domain,
                same ? "this tenant" : "another tenant");
        return -1;
    }
    if (st != AUTH_ST_NOTFOUND) {
        a->result = st;
        set_err(a->err, a->errlen, "the record of domain %s is unreadable", a->domain);
        return -1;
    }
    char key[INDEX_KEY_MAX];
    int klen = index_key(key, sizeof(key), a->tenant, a->domain);
    if (klen < 0)
        return STORE_ERROR;
    memset(&rec, 0, sizeof(rec));
    sx_strlcpy(rec.tenant, a->tenant, sizeof(rec.tenant));
    rec.created_at_ms = a->now_ms;
    rec.verified = a->verified;
    rc = put_domain(txn, a->as, a->domain, &rec);
    if (rc == STORE_OK)
        rc = store_put(txn, a->as->tenant_domains, key, (size_t)klen, "", 0);
    if (rc == STORE_OK && with_keys)
        rc = put_dkim(txn, a->as, a->domain, a->keys);
    return rc;
}

auth_st_t auth_store_domain_add(auth_store_t *st, const char *domain, const char *tenant,
                                int verified, uint64_t now_ms, const auth_dkim_rec_t *keys,
                                int *updated, char *err, size_t errlen)
{
    domain_add_t a = {.as = st,
                      .domain = domain,
                      .tenant = tenant,
                      .verified = verified,
                      .now_ms = now_ms,
                      .keys = keys,
                      .err = err,
                      .errlen = errlen};
    int rc = store_write(st->st, domain_add_fn, &a);
    if (updated)
        *updated = a.updated;
    if (a.result != AUTH_ST_OK)
        return a.result;
    if (rc != STORE_OK) {
        set_err(err, errlen, "cannot write the domain: %s", store_strerror(rc));
        return map_store(rc) == AUTH_ST_FULL ? AUTH_ST_FULL : AUTH_ST_ERROR;
    }
    return AUTH_ST_OK;
}

/* A domain's public view from its record and its keys' record inside txn. */
static PB(Domain) * domain_view(auth_store_t *as, store_txn_t *txn, const char *name, size_t nlen,
                                const auth_domain_rec_t *rec)
{
    PB(Domain) *d = xmalloc(sizeof(*d));
    PB(Domain) init = PB_INIT(DOMAIN);
    *d = init;
    d->name = xstrndup(name, nlen);
    d->tenant = xstrdup(rec->tenant);
    d->verified = rec->verified != 0;
    d->created_at_ms = rec->created_at_ms;
    auth_dkim_rec_t keys;
    if (dkim_read(as, txn, d->name, &keys) == AUTH_ST_OK) {
        d->dkim = auth_dkim_public(d->name, &keys, &d->n_dkim);
        d->verified_at_ms = keys.verified_at_ms;
        auth_dkim_rec_clear(&keys);
    }
    return d;
}

auth_st_t auth_store_domain_get(auth_store_t *st, const char *domain, PB(Domain) * *out)
{
    *out = NULL;
    store_txn_t *txn = store_begin(st->st, 0);
    if (txn == NULL)
        return AUTH_ST_ERROR;
    auth_domain_rec_t rec;
    auth_st_t rc = domain_owner(st, txn, domain, &rec);
    if (rc == AUTH_ST_OK)
        *out = domain_view(st, txn, domain, strlen(domain), &rec);
    store_abort(&txn);
    return rc;
}

typedef struct domain_list {
    auth_store_t *as;
    store_txn_t *txn;
    const char *tenant; /* NULL: all */
    PB(Domain) * *v;
    size_t n;
} domain_list_t;

static int domain_list_fn(const store_val_t *key, const store_val_t *val, void *arg)
{
    domain_list_t *l = arg;
    auth_domain_rec_t rec;
    if (key->len > AUTH_DOMAIN_MAX || auth_record_domain_decode(val->data, val->len, &rec) < 0) {
        log_corrupt("domains", key->data, key->len);
        return 0;
    }
    if (l->tenant == NULL || strcmp(l->tenant, rec.tenant) == 0) {
        l->v = xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
        l->v[l->n++] = domain_view(l->as, l->txn, key->data, key->len, &rec);
    }
    return 0;
}

auth_st_t auth_store_domain_list(auth_store_t *st, const char *tenant, PB(Domain) * **out,
                                 size_t *n)
{
    *out = NULL;
    *n = 0;
    store_txn_t *txn = store_begin(st->st, 0);
    if (txn == NULL)
        return AUTH_ST_ERROR;
    domain_list_t l = {.as = st, .txn = txn, .tenant = tenant && *tenant ? tenant : NULL};
    long rc = store_scan(txn, st->domains, NULL, 0, NULL, 0, domain_list_fn, &l);
    store_abort(&txn);
    if (rc < 0) {
        for (size_t i = 0; i < l.n; i++)
            PB_FN(domain, free_unpacked)(l.v[i], NULL);
        free(l.v);
        return AUTH_ST_ERROR;
    }
    *out = l.v;
    *n = l.n;
    return AUTH_ST_OK;
}

/* ---- DKIM keys ---- */

auth_st_t auth_store_dkim_get(auth_store_t *st, const char *domain, auth_domain_rec_t *dom,
                              auth_dkim_rec_t *keys)
{
    store_txn_t *txn = store_begin(st->st, 0);
    if (txn == NULL)
        return AUTH_ST_ERROR;
    auth_st_t rc = domain_owner(st, txn, domain, dom);
    if (rc == AUTH_ST_OK)
        rc = dkim_read(st, txn, domain, keys);
    store_abort(&txn);
    return rc;
}

typedef struct dkim_change {
    auth_store_t *as;
    const char *domain;
    const auth_dkim_rec_t *keys; /* replace: the new keys; NULL: mark verified */
    uint32_t generation;         /* the generation the keys must still be at */
    uint64_t now_ms;
    auth_st_t result;
    char *err;
    size_t errlen;
} dkim_change_t;

static int dkim_change_fn(store_txn_t *txn, void *arg)
{
    dkim_change_t *a = arg;
    a->result = AUTH_ST_OK;
    auth_domain_rec_t dom;
    auth_st_t st = domain_owner(a->as, txn, a->domain, &dom);
    if (st == AUTH_ST_NOTFOUND) {
        a->result = st;
        set_err(a->err, a->errlen, "domain %s not found", a->domain);
        return -1;
    }
    auth_dkim_rec_t cur;
    if (st == AUTH_ST_OK)
        st = dkim_read(a->as, txn, a->domain, &cur);
    if (st != AUTH_ST_OK) {
        a->result = st;
        set_err(a->err, a->errlen, "the records of domain %s are unreadable", a->domain);
        return -1;
    }
    uint32_t at = cur.generation;
    int rc;
    if (at != a->generation) {
        auth_dkim_rec_clear(&cur);
        a->result = AUTH_ST_CONFLICT;
        set_err(a->err, a->errlen, "the DKIM keys of %s changed meanwhile; try again", a->domain);
        return -1;
    }
    if (a->keys) {
        rc = put_dkim(txn, a->as, a->domain, a->keys);
    } else {
        cur.verified_at_ms = a->now_ms;
        dom.verified = 1;
        rc = put_dkim(txn, a->as, a->domain, &cur);
        if (rc == STORE_OK)
            rc = put_domain(txn, a->as, a->domain, &dom);
    }
    auth_dkim_rec_clear(&cur);
    return rc;
}

static auth_st_t dkim_change(dkim_change_t *a)
{
    int rc = store_write(a->as->st, dkim_change_fn, a);
    if (a->result != AUTH_ST_OK)
        return a->result;
    if (rc != STORE_OK) {
        set_err(a->err, a->errlen, "cannot write the DKIM keys: %s", store_strerror(rc));
        return map_store(rc) == AUTH_ST_FULL ? AUTH_ST_FULL : AUTH_ST_ERROR;
    }
    return AUTH_ST_OK;
}

auth_st_t auth_store_dkim_replace(auth_store_t *st, const char *domain, const auth_dkim_rec_t *keys,
                                  uint32_t expected, char *err, size_t errlen)
{
    dkim_change_t a = {.as = st,
                       .domain = domain,
                       .keys = keys,
                       .generation = expected,
                       .err = err,
                       .errlen = errlen};
    return dkim_change(&a);
}

auth_st_t auth_store_dkim_verified(auth_store_t *st, const char *domain, uint32_t generation,
                                   uint64_t now_ms, char *err, size_t errlen)
{
    dkim_change_t a = {.as = st,
                       .domain = domain,
                       .generation = generation,
                       .now_ms = now_ms,
                       .err = err,
                       .errlen = errlen};
    return dkim_change(&a);
}

/* ---- credentials ---- */

/* The checks a new credential must pass, inside txn. */
static auth_st_t cred_checks(auth_store_t *as, store_txn_t *txn, const auth_cred_t *c, char *err,
                             size_t errlen)
{
    const PB(Credential) *p = c->pub;
    store_val_t v;
    int rc = store_get(txn, as->tenants, p->tenant, strlen(p->tenant), &v);
    if (rc == STORE_NOTFOUND) {
        set_err(err, errlen, "tenant %s not found", p->tenant);
        return AUTH_ST_NOTFOUND;
    }
    if (rc != STORE_OK)
        return map_store(rc);
    for (size_t i = 0; i < p->n_domains; i++) {
        auth_domain_rec_t rec;
        auth_st_t st = domain_owner(as, txn, p->domains[i], &rec);
        if (st == AUTH_ST_NOTFOUND) {
            set_err(err, errlen, "domain %s not found", p->domains[i]);
            return st;
        }
        if (st != AUTH_ST_OK) {
            set_err(err, errlen, "the record of domain %s is unreadable", p->domains[i]);
            return st;
        }
        if (strcmp(rec.tenant, p->tenant) != 0) {
            set_err(err, errlen, "domain %s does not belong to tenant %s", p->domains[i],
                    p->tenant);
            return AUTH_ST_CONFLICT;
        }
    }
    rc = store_get(txn, as->credentials, p->username, strlen(p->username), &v);
    if (rc == STORE_OK) {
        set_err(err, errlen, "credential %s already exists", p->username);
        return AUTH_ST_EXISTS;
    }
    return rc == STORE_NOTFOUND ? AUTH_ST_OK : map_store(rc);
}

auth_st_t auth_store_cred_check(auth_store_t *st, const auth_cred_t *c, char *err, size_t errlen)
{
    store_txn_t *txn = store_begin(st->st, 0);
    if (txn == NULL)
        return AUTH_ST_ERROR;
    auth_st_t rc = cred_checks(st, txn, c, err, errlen);
    store_abort(&txn);
    return rc;
}

/* Take the next credential generation from the store-wide counter. */
static int next_generation(auth_store_t *as, store_txn_t *txn, uint64_t *out)
{
    store_val_t v;
    uint64_t g = 0;
    int rc = store_get(txn, as->meta, META_GENERATION, strlen(META_GENERATION), &v);
    if (rc == STORE_OK) {
        if (v.len != sizeof(g))
            return STORE_ERROR;
        memcpy(&g, v.data, sizeof(g));
    } else if (rc != STORE_NOTFOUND) {
        return rc;
    }
    g++;
    rc = store_put(txn, as->meta, META_GENERATION, strlen(META_GENERATION), &g, sizeof(g));
    if (rc == STORE_OK)
        *out = g;
    return rc;
}

typedef struct cred_add {
    auth_store_t *as;
    auth_cred_t *c;
    auth_st_t result;
    char *err;
    size_t errlen;
} cred_add_t;

static int cred_add_fn(store_txn_t *txn, void *arg)
{
    cred_add_t *a = arg;
    a->result = cred_checks(a->as, txn, a->c, a->err, a->errlen);
    if (a->result == AUTH_ST_FULL || a->result == AUTH_ST_ERROR) {
        a->result = AUTH_ST_OK; /* store_write tells these apart */
        return STORE_ERROR;
    }
    if (a->result != AUTH_ST_OK)
        return -1;
    int rc = next_generation(a->as, txn, &a->c->generation);
    if (rc != STORE_OK)
        return rc;
    buf_t b;
    buf_init(&b, AUTH_RECORD_MAX);
    rc = auth_record_cred_encode(a->c, &b) < 0
             ? STORE_ERROR
             : put_encoded(txn, a->as->credentials, a->c->pub->username, &b);
    buf_free(&b);
    return rc;
}

auth_st_t auth_store_cred_add(auth_store_t *st, auth_cred_t *c, char *err, size_t errlen)
{
    cred_add_t a = {.as = st, .c = c, .err = err, .errlen = errlen};
    int rc = store_write(st->st, cred_add_fn, &a);
    if (a.result != AUTH_ST_OK)
        return a.result;
    if (rc != STORE_OK) {
        set_err(err, errlen, "cannot write the credential: %s", store_strerror(rc));
        return map_store(rc) == AUTH_ST_FULL ? AUTH_ST_FULL : AUTH_ST_ERROR;
    }
    st->n_creds++;
    return AUTH_ST_OK;
}

typedef struct cred_update {
    auth_store_t *as;
    auth_cred_t *c;
    uint64_t expected;
    auth_st_t result;
    char *err;
    size_t errlen;
} cred_update_t;

static int cred_decode_checked(const void *key, size_t klen, const store_val_t *val,
                               auth_cred_t *out);

static int cred_update_fn(store_txn_t *txn, void *arg)
{
    cred_update_t *a = arg;
    const char *user = a->c->pub->username;
    size_t klen = strlen(user);
    store_val_t v;
    auth_cred_t cur;
    a->result = AUTH_ST_OK;
    int rc = store_get(txn, a->as->credentials, user, klen, &v);
    if (rc == STORE_NOTFOUND) {
        a->result = AUTH_ST_NOTFOUND;
        set_err(a->err, a->errlen, "credential %s not found", user);
        return -1;
    }
    if (rc != STORE_OK)
        return rc;
    if (cred_decode_checked(user, klen, &v, &cur) < 0) {
        log_corrupt("credentials", user, klen);
        a->result = AUTH_ST_CORRUPT;
        set_err(a->err, a->errlen, "the record of credential %s is unreadable", user);
        return -1;
    }
    uint64_t generation = cur.generation;
    auth_cred_clear(&cur);
    if (generation != a->expected) {
        a->result = AUTH_ST_CONFLICT;
        set_err(a->err, a->errlen, "credential %s changed meanwhile", user);
        return -1;
    }
    rc = next_generation(a->as, txn, &a->c->generation);
    if (rc != STORE_OK)
        return rc;
    buf_t b;
    buf_init(&b, AUTH_RECORD_MAX);
    rc = auth_record_cred_encode(a->c, &b) < 0 ? STORE_ERROR
                                               : put_encoded(txn, a->as->credentials, user, &b);
    buf_free(&b);
    return rc;
}

auth_st_t auth_store_cred_update(auth_store_t *st, auth_cred_t *c, uint64_t expected_generation,
                                 char *err, size_t errlen)
{
    cred_update_t a = {
        .as = st, .c = c, .expected = expected_generation, .err = err, .errlen = errlen};
    int rc = store_write(st->st, cred_update_fn, &a);
    if (a.result != AUTH_ST_OK)
        return a.result;
    if (rc != STORE_OK) {
        set_err(err, errlen, "cannot write the credential: %s", store_strerror(rc));
        return map_store(rc) == AUTH_ST_FULL ? AUTH_ST_FULL : AUTH_ST_ERROR;
    }
    return AUTH_ST_OK;
}

/* Decode a credential and check it is the one its key names. */
static int cred_decode_checked(const void *key, size_t klen, const store_val_t *val,
                               auth_cred_t *out)
{
    if (auth_record_cred_decode(val->data, val->len, out) < 0)
        return -1;
    if (strlen(out->pub->username) != klen || memcmp(out->pub->username, key, klen) != 0) {
        auth_cred_clear(out);
        return -1;
    }
    return 0;
}

auth_st_t auth_store_cred_get(auth_store_t *st, const char *username, auth_cred_t *out)
{
    store_txn_t *txn = store_begin(st->st, 0);
    if (txn == NULL)
        return AUTH_ST_ERROR;
    store_val_t v;
    size_t klen = strlen(username);
    auth_st_t rc = map_store(store_get(txn, st->credentials, username, klen, &v));
    if (rc == AUTH_ST_OK && cred_decode_checked(username, klen, &v, out) < 0) {
        log_corrupt("credentials", username, klen);
        rc = AUTH_ST_CORRUPT;
    }
    store_abort(&txn);
    return rc;
}

typedef struct cred_list {
    const char *tenant;
    uint64_t now_ms;
    PB(Credential) * *v;
    size_t n;
} cred_list_t;

static int cred_list_fn(const store_val_t *key, const store_val_t *val, void *arg)
{
    cred_list_t *l = arg;
    auth_cred_t c;
    if (cred_decode_checked(key->data, key->len, val, &c) < 0) {
        log_corrupt("credentials", key->data, key->len);
        return 0;
    }
    if (l->tenant == NULL || strcmp(l->tenant, c.pub->tenant) == 0) {
        c.pub->password_count = (uint32_t)auth_cred_live_passwords(&c, l->now_ms);
        l->v = xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
        l->v[l->n++] = c.pub;
        c.pub = NULL; /* moved into the list */
    }
    auth_cred_clear(&c);
    return 0;
}

auth_st_t auth_store_cred_list(auth_store_t *st, const char *tenant, uint64_t now_ms,
                               PB(Credential) * **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    store_txn_t *txn = store_begin(st->st, 0);
    if (txn == NULL)
        return AUTH_ST_ERROR;
    cred_list_t l = {.tenant = tenant && *tenant ? tenant : NULL, .now_ms = now_ms};
    long rc = store_scan(txn, st->credentials, NULL, 0, NULL, 0, cred_list_fn, &l);
    store_abort(&txn);
    if (rc < 0) {
        for (size_t i = 0; i < l.n; i++)
            PB_FN(credential, free_unpacked)(l.v[i], NULL);
        free(l.v);
        return AUTH_ST_ERROR;
    }
    *out = l.v;
    *n = l.n;
    return AUTH_ST_OK;
}

auth_st_t auth_store_login_domains(auth_store_t *st, const auth_cred_t *c, char ***v, size_t *n)
{
    *v = NULL;
    *n = 0;
    store_txn_t *txn = store_begin(st->st, 0);
    if (txn == NULL)
        return AUTH_ST_ERROR;
    const PB(Credential) *p = c->pub;
    char **all = NULL;
    size_t n_all = 0;
    auth_st_t rc = AUTH_ST_OK;
    if (p->n_domains == 0)
        rc = tenant_domains(st, txn, p->tenant, &all, &n_all);
    char *const *names = p->n_domains ? p->domains : all;
    size_t count = p->n_domains ? p->n_domains : n_all;
    for (size_t i = 0; rc == AUTH_ST_OK && i < count; i++) {
        auth_domain_rec_t rec;
        if (domain_owner(st, txn, names[i], &rec) == AUTH_ST_OK &&
            strcmp(rec.tenant, p->tenant) == 0 && rec.verified)
            strv_push(v, n, names[i], strlen(names[i]));
    }
    strv_free(&all, &n_all);
    store_abort(&txn);
    return rc;
}

/* ---- day counters ---- */

#define RATE_REC_LEN 12 /* u64 start, u32 count, little-endian */

auth_st_t auth_store_rate_get(auth_store_t *st, const char *key, uint64_t *start_ms,
                              uint32_t *count)
{
    store_txn_t *txn = store_begin(st->st, 0);
    if (txn == NULL)
        return AUTH_ST_ERROR;
    store_val_t v;
    size_t klen = strlen(key);
    auth_st_t rc = map_store(store_get(txn, st->rate_day, key, klen, &v));
    if (rc == AUTH_ST_OK && v.len != RATE_REC_LEN) {
        log_corrupt("rate_day", key, klen);
        rc = AUTH_ST_CORRUPT;
    } else if (rc == AUTH_ST_OK) {
        const uint8_t *b = v.data;
        uint64_t s = 0;
        uint32_t c = 0;
        for (int i = 7; i >= 0; i--)
            s = (s << 8) | b[i];
        for (int i = 3; i >= 0; i--)
            c = (c << 8) | b[8 + i];
        *start_ms = s;
        *count = c;
    }
    store_abort(&txn);
    return rc;
}

typedef struct rate_put {
    auth_store_t *as;
    const auth_rate_rec_t *recs;
    size_t n;
} rate_put_t;

static int rate_put_fn(store_txn_t *txn, void *arg)
{
    rate_put_t *a = arg;
    for (size_t i = 0; i < a->n; i++) {
        const auth_rate_rec_t *r = &a->recs[i];
        size_t klen = strlen(r->key);
        int rc;
        if (r->start_ms == 0 && r->count == 0) {
            rc = store_del(txn, a->as->rate_day, r->key, klen);
            if (rc == STORE_NOTFOUND)
                rc = STORE_OK;
        } else {
            uint8_t b[RATE_REC_LEN];
            for (int k = 0; k < 8; k++)
                b[k] = (uint8_t)(r->start_ms >> (8 * k));
            for (int k = 0; k < 4; k++)
                b[8 + k] = (uint8_t)(r->count >> (8 * k));
            rc = store_put(txn, a->as->rate_day, r->key, klen, b, sizeof(b));
        }
        if (rc != STORE_OK)
            return rc;
    }
    return 0;
}

auth_st_t auth_store_rate_put(auth_store_t *st, const auth_rate_rec_t *recs, size_t n)
{
    if (n == 0)
        return AUTH_ST_OK;
    rate_put_t a = {.as = st, .recs = recs, .n = n};
    int rc = store_write(st->st, rate_put_fn, &a);
    if (rc != STORE_OK)
        log_error("event=store_failed db=rate_day records=%zu error=\"%s\"", n, store_strerror(rc));
    return map_store(rc);
}
