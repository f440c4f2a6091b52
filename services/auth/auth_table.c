/*
 * auth_table: chained buckets plus a doubly linked age list (oldest at the
 * head). Each entry is one allocation: the header, the value, then the key.
 * The bucket count is a power of two at least the size limit, fixed at
 * creation, so chains stay short and nothing rehashes.
 */
#include "auth_table.h"
#include "core/alloc.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#define TABLE_MAC_KEY_LEN 32
#define TABLE_MIN_BUCKETS 16
#define TABLE_MAX_BUCKETS ((size_t)1 << 24)

typedef struct table_entry {
    struct table_entry *chain;
    struct table_entry *older, *newer;
    size_t klen;
    /* value_size bytes of value (aligned), then the key and its terminator */
    max_align_t value[];
} table_entry_t;

struct auth_table {
    size_t max;
    size_t value_size; /* rounded up to the alignment of max_align_t */
    table_entry_t **buckets;
    size_t mask;
    table_entry_t *oldest, *newest;
    size_t count;
    uint64_t evictions;
    EVP_MAC_CTX *mac; /* keyed HMAC-SHA256 template, duplicated per key */
};

static char *entry_key(const auth_table_t *t, table_entry_t *e)
{
    return (char *)e->value + t->value_size;
}

auth_table_t *auth_table_new(size_t max, size_t value_size)
{
    if (max == 0)
        return NULL;
    auth_table_t *t = xcalloc(1, sizeof(*t));
    size_t align = sizeof(max_align_t);
    t->max = max;
    t->value_size = (value_size + align - 1) / align * align;
    size_t n = TABLE_MIN_BUCKETS;
    while (n < max && n < TABLE_MAX_BUCKETS)
        n <<= 1;
    t->buckets = xcalloc(n, sizeof(*t->buckets));
    t->mask = n - 1;

    unsigned char k[TABLE_MAC_KEY_LEN];
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (mac != NULL && RAND_bytes(k, sizeof(k)) == 1)
        t->mac = EVP_MAC_CTX_new(mac);
    if (t->mac == NULL || EVP_MAC_init(t->mac, k, sizeof(k), params) != 1)
        auth_table_destroy(&t);
    OPENSSL_cleanse(k, sizeof(k));
    EVP_MAC_free(mac);
    return t;
}

static void age_unlink(auth_table_t *t, table_entry_t *e)
{
    if (e->older)
        e->older->newer = e->newer;
    else
        t->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        t->newest = e->older;
    e->older = e->newer = NULL;
}

static void age_append(auth_table_t *t, table_entry_t *e)
{
    e->older = t->newest;
    e->newer = NULL;
    if (t->newest)
        t->newest->newer = e;
    else
        t->oldest = e;
    t->newest = e;
}

/* A bucket index; on an OpenSSL failure every key lands in bucket 0 (slow, still right). */
static size_t bucket_of(const auth_table_t *t, const char *key, size_t klen)
{
    unsigned char out[EVP_MAX_MD_SIZE];
    size_t n = 0;
    uint64_t h = 0;
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_dup(t->mac);
    if (ctx != NULL && EVP_MAC_update(ctx, (const unsigned char *)key, klen) == 1 &&
        EVP_MAC_final(ctx, out, &n, sizeof(out)) == 1 && n >= sizeof(h))
        memcpy(&h, out, sizeof(h));
    EVP_MAC_CTX_free(ctx);
    return (size_t)h & t->mask;
}

static table_entry_t **find_slot(auth_table_t *t, const char *key, size_t klen, size_t bucket)
{
    table_entry_t **slot = &t->buckets[bucket];
    while (*slot && ((*slot)->klen != klen || memcmp(entry_key(t, *slot), key, klen) != 0))
        slot = &(*slot)->chain;
    return slot;
}

static void entry_remove(auth_table_t *t, table_entry_t *e)
{
    char *key = entry_key(t, e);
    table_entry_t **slot = find_slot(t, key, e->klen, bucket_of(t, key, e->klen));
    if (*slot == e)
        *slot = e->chain;
    age_unlink(t, e);
    free(e);
    t->count--;
}

void auth_table_destroy(auth_table_t **p)
{
    auth_table_t *t = *p;
    if (t == NULL)
        return;
    while (t->oldest) {
        table_entry_t *e = t->oldest;
        age_unlink(t, e);
        free(e);
    }
    free(t->buckets);
    EVP_MAC_CTX_free(t->mac);
    free(t);
    *p = NULL;
}

void *auth_table_find(auth_table_t *t, const char *key)
{
    size_t klen = strnlen(key, AUTH_TABLE_KEY_MAX + 1);
    if (klen > AUTH_TABLE_KEY_MAX)
        return NULL;
    table_entry_t *e = *find_slot(t, key, klen, bucket_of(t, key, klen));
    return e ? e->value : NULL;
}

void *auth_table_touch(auth_table_t *t, const char *key, int *created)
{
    if (created)
        *created = 0;
    size_t klen = strnlen(key, AUTH_TABLE_KEY_MAX + 1);
    if (klen > AUTH_TABLE_KEY_MAX)
        return NULL;
    size_t b = bucket_of(t, key, klen);
    table_entry_t *e = *find_slot(t, key, klen, b);
    if (e != NULL) {
        age_unlink(t, e);
        age_append(t, e);
        return e->value;
    }
    if (t->count >= t->max) {
        entry_remove(t, t->oldest);
        t->evictions++;
    }
    e = xcalloc(1, sizeof(*e) + t->value_size + klen + 1);
    e->klen = klen;
    memcpy(entry_key(t, e), key, klen);
    e->chain = t->buckets[b];
    t->buckets[b] = e;
    age_append(t, e);
    t->count++;
    if (created)
        *created = 1;
    return e->value;
}

void auth_table_remove(auth_table_t *t, const char *key)
{
    size_t klen = strnlen(key, AUTH_TABLE_KEY_MAX + 1);
    if (klen > AUTH_TABLE_KEY_MAX)
        return;
    table_entry_t *e = *find_slot(t, key, klen, bucket_of(t, key, klen));
    if (e)
        entry_remove(t, e);
}

void auth_table_each(auth_table_t *t, auth_table_each_fn fn, void *arg)
{
    table_entry_t *e = t->oldest;
    while (e) {
        table_entry_t *next = e->newer;
        if (fn(entry_key(t, e), e->value, arg))
            entry_remove(t, e);
        e = next;
    }
}

size_t auth_table_count(const auth_table_t *t)
{
    return t->count;
}

uint64_t auth_table_evictions(const auth_table_t *t)
{
    return t->evictions;
}
