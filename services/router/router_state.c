/*
 * router_state: two named databases. `warmup`: key address NUL provider
 * NUL day (4 bytes, big-endian), value the count (8 bytes, big-endian).
 * `warmup_start`: key address, value the first day (4 bytes, big-endian).
 */
#include "router_state.h"
#include "core/alloc.h"
#include "core/log.h"
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RSTATE_KEY_MAX (SOURCE_IP_MAX + 64 + 8)

struct rstate {
    store_t *store;
    unsigned db_count;
    unsigned db_start;
};

typedef struct change {
    char key[RSTATE_KEY_MAX];
    size_t klen;
    uint8_t val[8];
    size_t vlen;
    int start; /* goes to warmup_start */
} change_t;

typedef struct batch {
    change_t *v;
    size_t n, cap;
} batch_t;

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

static uint64_t get_be64(const uint8_t *p)
{
    return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

rstate_t *rstate_open(const char *dir, char *err, size_t errlen)
{
    store_opts_t opts = {.map_size = 4u << 20, .map_max = 1ull << 30, .max_dbs = 4};
    store_t *store = store_open(dir, &opts, err, errlen);
    if (store == NULL)
        return NULL;
    rstate_t *st = xcalloc(1, sizeof(*st));
    st->store = store;
    if (store_db(store, "warmup", &st->db_count) != STORE_OK ||
        store_db(store, "warmup_start", &st->db_start) != STORE_OK) {
        snprintf(err, errlen, "%s: cannot open the router's databases", dir);
        rstate_close(&st);
        return NULL;
    }
    return st;
}

void rstate_close(rstate_t **p)
{
    rstate_t *st = *p;
    if (st == NULL)
        return;
    store_close(&st->store);
    free(st);
    *p = NULL;
}

/* ---- load ---- */

typedef struct load_ctx {
    source_t *src;
    uint32_t today;
    batch_t old; /* keys to delete */
    size_t counts, starts;
} load_ctx_t;

static int load_count(const store_val_t *key, const store_val_t *val, void *arg)
{
    load_ctx_t *c = arg;
    const char *k = key->data;
    const char *nul1 = memchr(k, '\0', key->len);
    const char *nul2 = nul1 ? memchr(nul1 + 1, '\0', key->len - (size_t)(nul1 + 1 - k)) : NULL;
    if (nul2 == NULL || (size_t)(nul2 + 1 - k) + 4 != key->len || val->len != 8 ||
        key->len > RSTATE_KEY_MAX)
        return 0; /* not ours: leave it */
    uint32_t day = get_be32((const uint8_t *)nul2 + 1);
    if (day + RSTATE_KEEP_DAYS < c->today) {
        if (c->old.n == c->old.cap) {
            c->old.cap = c->old.cap ? c->old.cap * 2 : 16;
            c->old.v = xrealloc(c->old.v, c->old.cap * sizeof(*c->old.v));
        }
        change_t *d = &c->old.v[c->old.n++];
        memset(d, 0, sizeof(*d));
        memcpy(d->key, k, key->len);
        d->klen = key->len;
        return 0;
    }
    if (day == c->today) {
        source_restore_count(c->src, k, nul1 + 1, day, get_be64(val->data));
        c->counts++;
    }
    return 0;
}

static int load_start(const store_val_t *key, const store_val_t *val, void *arg)
{
    load_ctx_t *c = arg;
    char ip[SOURCE_IP_MAX];
    if (key->len == 0 || key->len >= sizeof(ip) || val->len != 4)
        return 0;
    memcpy(ip, key->data, key->len);
    ip[key->len] = '\0';
    source_restore_start(c->src, ip, get_be32(val->data));
    c->starts++;
    return 0;
}

typedef struct write_ctx {
    rstate_t *st;
    const batch_t *b;
    int del;
} write_ctx_t;

static int write_batch(store_txn_t *txn, void *arg)
{
    write_ctx_t *w = arg;
    for (size_t i = 0; i < w->b->n; i++) {
        const change_t *c = &w->b->v[i];
        unsigned db = c->start ? w->st->db_start : w->st->db_count;
        int rc = w->del ? store_del(txn, db, c->key, c->klen)
                        : store_put(txn, db, c->key, c->klen, c->val, c->vlen);
        if (rc != STORE_OK && rc != STORE_NOTFOUND)
            return rc;
    }
    return 0;
}

int rstate_load(rstate_t *st, source_t *src, uint64_t wall_ms)
{
    load_ctx_t c = {.src = src, .today = (uint32_t)(wall_ms / SOURCE_DAY_MS)};
    store_txn_t *txn = store_begin(st->store, 0);
    if (txn == NULL)
        return -1;
    long a = store_scan(txn, st->db_count, NULL, 0, NULL, 0, load_count, &c);
    long b = store_scan(txn, st->db_start, NULL, 0, NULL, 0, load_start, &c);
    store_abort(&txn);
    if (a < 0 || b < 0) {
        free(c.old.v);
        return -1;
    }
    int rc = 0;
    if (c.old.n) {
        write_ctx_t w = {st, &c.old, 1};
        rc = store_write(st->store, write_batch, &w) == STORE_OK ? 0 : -1;
    }
    log_info("event=state_loaded warmup_counts=%zu warmup_starts=%zu pruned=%zu", c.counts,
             c.starts, c.old.n);
    free(c.old.v);
    source_begin(src, wall_ms);
    return rc < 0 ? -1 : rstate_flush(st, src);
}

/* ---- flush ---- */

static change_t *batch_add(batch_t *b)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 16;
        b->v = xrealloc(b->v, b->cap * sizeof(*b->v));
    }
    change_t *c = &b->v[b->n++];
    memset(c, 0, sizeof(*c));
    return c;
}

static void add_count(const char *ip, const char *provider, uint32_t day, uint64_t count, void *arg)
{
    size_t il = strlen(ip), pl = strlen(provider);
    if (il + pl + 6 > RSTATE_KEY_MAX)
        return;
    change_t *c = batch_add(arg);
    memcpy(c->key, ip, il + 1);
    memcpy(c->key + il + 1, provider, pl + 1);
    put_be32((uint8_t *)c->key + il + pl + 2, day);
    c->klen = il + pl + 6;
    put_be64(c->val, count);
    c->vlen = 8;
}

static void add_start(const char *ip, uint32_t day, void *arg)
{
    size_t il = strlen(ip);
    if (il == 0 || il >= RSTATE_KEY_MAX)
        return;
    change_t *c = batch_add(arg);
    memcpy(c->key, ip, il);
    c->klen = il;
    put_be32(c->val, day);
    c->vlen = 4;
    c->start = 1;
}

int rstate_flush(rstate_t *st, source_t *src)
{
    batch_t b = {0};
    if (source_take_changes(src, add_count, add_start, &b) == 0) {
        free(b.v);
        return 0;
    }
    write_ctx_t w = {st, &b, 0};
    int rc = store_write(st->store, write_batch, &w);
    free(b.v);
    if (rc != STORE_OK) {
        log_error("event=state_write_failed err=\"%s\"", store_strerror(rc));
        source_mark_all_dirty(src);
        return -1;
    }
    return 0;
}
