/*
 * store: LMDB environment, transactions, scans and map growth.
 */
#include "store.h"
#include "core/alloc.h"
#include "core/log.h"

#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#define STORE_MAX_DBS 16

struct store {
    MDB_env *env;
    char *dir;
    size_t map_size;
    size_t map_max;
    unsigned grows;
    MDB_dbi dbis[STORE_MAX_DBS];
    unsigned ndbis;
    int full;          /* 1: map full (grow and retry); 2: disk full */
};

struct store_txn {
    store_t *st;
    MDB_txn *txn;
    int write;
};

#define STORE_DISK_LOW (1u << 20) /* below this much free disk, an EIO means disk full */

/* Free bytes on the store's file system for an unprivileged writer. */
static size_t store_disk_free(const store_t *st)
{
    struct statvfs vfs;
    if (statvfs(st->dir, &vfs) < 0)
        return SIZE_MAX;
    return (size_t)vfs.f_bavail * (size_t)vfs.f_frsize;
}

static int map_rc(store_t *st, int rc)
{
    switch (rc) {
    case MDB_SUCCESS:
        return STORE_OK;
    case MDB_NOTFOUND:
        return STORE_NOTFOUND;
    case MDB_MAP_FULL:
    case MDB_TXN_FULL:
        if (st)
            st->full = 1; /* the map can grow */
        return STORE_FULL;
    case EIO:
        /* LMDB reports a short write (the disk filled mid-commit) as EIO */
        if (st && store_disk_free(st) < (size_t)STORE_DISK_LOW)
            goto disk_full;
        log_error("event=store_error dir=%s err=\"%s\"", st ? st->dir : "?", mdb_strerror(rc));
        return STORE_ERROR;
    case ENOSPC:
    case EDQUOT:
    disk_full:
        if (st)
            st->full = 2; /* the disk is full: growing the map will not help */
        log_error("event=store_disk_full dir=%s", st ? st->dir : "?");
        return STORE_FULL;
    default:
        log_error("event=store_error dir=%s err=\"%s\"", st ? st->dir : "?", mdb_strerror(rc));
        return STORE_ERROR;
    }
}

const char *store_strerror(int rc)
{
    switch (rc) {
    case STORE_OK:
        return "ok";
    case STORE_NOTFOUND:
        return "not found";
    case STORE_FULL:
        return "store full";
    default:
        return "store error";
    }
}

store_t *store_open(const char *dir, const store_opts_t *opts, char *err, size_t errlen)
{
    store_t *st = xcalloc(1, sizeof(*st));
    st->dir = xstrdup(dir);
    st->map_size = opts && opts->map_size ? opts->map_size : STORE_DEFAULT_MAP;
    st->map_max = opts && opts->map_max ? opts->map_max : STORE_DEFAULT_MAX;
    if (st->map_max < st->map_size)
        st->map_max = st->map_size;

    if (mkdir(dir, 0750) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: cannot create: %s", dir, strerror(errno));
        goto fail;
    }
    int rc = mdb_env_create(&st->env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(st->env, opts && opts->max_dbs ? opts->max_dbs : STORE_MAX_DBS);
    if (rc == 0)
        rc = mdb_env_set_mapsize(st->env, st->map_size);
    /* NOTLS: read transactions belong to our one thread, not to a TLS slot.
     * NOSYNC rather than NOMETASYNC: the latter still fdatasyncs the data
     * pages at every commit, the very cost a nosync store is meant to drop. */
    unsigned flags = MDB_NOTLS | (opts && opts->nosync ? MDB_NOSYNC : 0);
    if (rc == 0)
        rc = mdb_env_open(st->env, dir, flags, 0640);
    if (rc != 0) {
        snprintf(err, errlen, "%s: cannot open store: %s", dir, mdb_strerror(rc));
        goto fail;
    }
    /* the file may be larger than asked (an earlier run grew it): adopt its size */
    MDB_envinfo info;
    mdb_env_info(st->env, &info);
    if (info.me_mapsize > st->map_size)
        st->map_size = info.me_mapsize;
    int dead = 0;
    mdb_reader_check(st->env, &dead);
    return st;
fail:
    store_close(&st);
    return NULL;
}

void store_close(store_t **p)
{
    store_t *st = *p;
    if (st == NULL)
        return;
    if (st->env)
        mdb_env_close(st->env);
    free(st->dir);
    free(st);
    *p = NULL;
}

int store_sync(store_t *st)
{
    return map_rc(st, mdb_env_sync(st->env, 1));
}

int store_db(store_t *st, const char *name, unsigned *dbi)
{
    if (st->ndbis >= STORE_MAX_DBS)
        return STORE_ERROR;
    MDB_txn *txn;
    int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc)
        return map_rc(st, rc);
    MDB_dbi d;
    rc = mdb_dbi_open(txn, name, MDB_CREATE, &d);
    if (rc) {
        mdb_txn_abort(txn);
        return map_rc(st, rc);
    }
    rc = mdb_txn_commit(txn);
    if (rc)
        return map_rc(st, rc);
    st->dbis[st->ndbis++] = d;
    *dbi = d;
    return STORE_OK;
}

store_txn_t *store_begin(store_t *st, int write)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(st->env, NULL, write ? 0 : MDB_RDONLY, &txn);
    if (rc) {
        map_rc(st, rc);
        return NULL;
    }
    store_txn_t *t = xmalloc(sizeof(*t));
    t->st = st;
    t->txn = txn;
    t->write = write;
    return t;
}

int store_commit(store_txn_t **p)
{
    store_txn_t *t = *p;
    if (t == NULL)
        return STORE_ERROR;
    int rc = mdb_txn_commit(t->txn);
    store_t *st = t->st;
    free(t);
    *p = NULL;
    return map_rc(st, rc);
}

void store_abort(store_txn_t **p)
{
    store_txn_t *t = *p;
    if (t == NULL)
        return;
    mdb_txn_abort(t->txn);
    free(t);
    *p = NULL;
}

int store_get(store_txn_t *t, unsigned dbi, const void *key, size_t klen, store_val_t *val)
{
    MDB_val k = {.mv_size = klen, .mv_data = (void *)key}, v;
    int rc = mdb_get(t->txn, dbi, &k, &v);
    if (rc == 0) {
        val->data = v.mv_data;
        val->len = v.mv_size;
    }
    return map_rc(t->st, rc);
}

int store_put(store_txn_t *t, unsigned dbi, const void *key, size_t klen, const void *val,
              size_t vlen)
{
    MDB_val k = {.mv_size = klen, .mv_data = (void *)key};
    MDB_val v = {.mv_size = vlen, .mv_data = (void *)val};
    return map_rc(t->st, mdb_put(t->txn, dbi, &k, &v, 0));
}

int store_reserve(store_txn_t *t, unsigned dbi, const void *key, size_t klen, size_t vlen,
                  void **dst)
{
    MDB_val k = {.mv_size = klen, .mv_data = (void *)key};
    MDB_val v = {.mv_size = vlen, .mv_data = NULL};
    int rc = mdb_put(t->txn, dbi, &k, &v, MDB_RESERVE);
    if (rc == 0)
        *dst = v.mv_data;
    return map_rc(t->st, rc);
}

int store_del(store_txn_t *t, unsigned dbi, const void *key, size_t klen)
{
    MDB_val k = {.mv_size = klen, .mv_data = (void *)key};
    return map_rc(t->st, mdb_del(t->txn, dbi, &k, NULL));
}

long store_scan(store_txn_t *t, unsigned dbi, const void *prefix, size_t plen,
                const void *start, size_t slen, store_each_fn fn, void *arg)
{
    MDB_cursor *cur;
    if (mdb_cursor_open(t->txn, dbi, &cur) != 0)
        return STORE_ERROR;
    MDB_val k, v;
    int rc;
    if (slen) {
        k.mv_size = slen;
        k.mv_data = (void *)start;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    } else if (plen) {
        k.mv_size = plen;
        k.mv_data = (void *)prefix;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    } else {
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    }
    long count = 0;
    while (rc == 0) {
        if (plen && (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0))
            break;
        store_val_t key = {k.mv_data, k.mv_size}, val = {v.mv_data, v.mv_size};
        count++;
        if (fn(&key, &val, arg))
            break;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return map_rc(t->st, rc);
    return count;
}

/* Double the map, up to the ceiling; -1 when already there. */
static int store_grow(store_t *st)
{
    if (st->map_size >= st->map_max)
        return -1;
    size_t next = st->map_size * 2;
    if (next > st->map_max || next < st->map_size)
        next = st->map_max;
    int rc = mdb_env_set_mapsize(st->env, next);
    if (rc != 0) {
        log_error("event=store_grow_failed dir=%s size=%zu err=\"%s\"", st->dir, next,
                  mdb_strerror(rc));
        return -1;
    }
    log_info("event=store_grown dir=%s from=%zu to=%zu", st->dir, st->map_size, next);
    st->map_size = next;
    st->grows++;
    return 0;
}

int store_write(store_t *st, store_write_fn fn, void *arg)
{
    for (;;) {
        st->full = 0;
        store_txn_t *t = store_begin(st, 1);
        if (t == NULL) {
            if (st->full == 1 && store_grow(st) == 0)
                continue;
            return st->full ? STORE_FULL : STORE_ERROR;
        }
        int rc = fn(t, arg);
        if (rc != 0) {
            store_abort(&t);
            if (st->full == 1 && store_grow(st) == 0)
                continue;
            return st->full ? STORE_FULL : rc;
        }
        rc = store_commit(&t);
        if (rc == STORE_FULL && st->full == 1 && store_grow(st) == 0)
            continue;
        return rc;
    }
}

static size_t db_pages(const MDB_stat *ds)
{
    return ds->ms_branch_pages + ds->ms_leaf_pages + ds->ms_overflow_pages;
}

void store_stats(store_t *st, store_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    out->map_size = st->map_size;
    out->map_max = st->map_max;
    out->grows = st->grows;
    MDB_envinfo info;
    MDB_stat ms;
    mdb_env_info(st->env, &info);
    mdb_env_stat(st->env, &ms);
    size_t psize = ms.ms_psize;
    out->used_bytes = (info.me_last_pgno + 1) * psize;
    /* live pages: the main database (named databases' roots), each named
     * database, the free list's own pages, and the two meta pages */
    size_t live = db_pages(&ms) + 2;
    MDB_txn *txn;
    if (mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn) == 0) {
        MDB_stat fs;
        if (mdb_stat(txn, 0, &fs) == 0)
            live += db_pages(&fs);
        for (unsigned i = 0; i < st->ndbis; i++) {
            MDB_stat ds;
            if (mdb_stat(txn, st->dbis[i], &ds) == 0) {
                out->entries += ds.ms_entries;
                live += db_pages(&ds);
            }
        }
        mdb_txn_abort(txn);
    }
    out->live_bytes = live * psize;
}

int store_has_room(store_t *st, size_t bytes, size_t reserve)
{
    store_stats_t s;
    store_stats(st, &s);
    /* a copy-on-write commit needs room for the new pages before old ones free up */
    size_t need = bytes + bytes / 8 + reserve;
    if (s.live_bytes + need > s.map_max)
        return 0;
    /* the file only grows where free pages inside it do not suffice; the
     * disk keeps a smaller reserve: freeing writes need only a few pages */
    size_t disk_need = bytes + bytes / 8 + (reserve < STORE_DISK_LOW ? reserve : STORE_DISK_LOW);
    size_t inside = s.used_bytes > s.live_bytes ? s.used_bytes - s.live_bytes : 0;
    if (disk_need > inside && store_disk_free(st) < disk_need - inside)
        return 0;
    return 1;
}

size_t store_db_entries(store_t *st, unsigned dbi)
{
    MDB_txn *txn;
    MDB_stat ds;
    size_t n = 0;
    if (mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn) == 0) {
        if (mdb_stat(txn, dbi, &ds) == 0)
            n = ds.ms_entries;
        mdb_txn_abort(txn);
    }
    return n;
}
