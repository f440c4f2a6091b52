/*
 * store: the one LMDB wrapper. Every service that keeps state opens its
 * environment here. Commits are synced to disk before they return (LMDB's
 * default), so "committed" means "on disk", unless the store is opened with
 * `nosync` (the event log only): then a commit reaches the OS page cache and
 * store_sync() puts it on disk. When
 * the map fills, store_write() grows it and runs the transaction again, up to
 * a configured ceiling; past it, or when the disk is full, callers get
 * STORE_FULL and must refuse new work instead of losing it.
 */
#ifndef SX_STORE_H
#define SX_STORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct store store_t;
typedef struct store_txn store_txn_t;

typedef enum {
    STORE_OK = 0,
    STORE_NOTFOUND = 1,
    STORE_ERROR = -1,
    STORE_FULL = -2,   /* map at its ceiling or disk full */
} store_status_t;

typedef struct store_opts {
    size_t map_size;   /* initial map size, bytes */
    size_t map_max;    /* growth ceiling, bytes */
    unsigned max_dbs;  /* named databases */
    /*
     * 1: commits are not synced (MDB_NOSYNC); call store_sync() now and then.
     * A process crash loses nothing (written pages are in the OS cache); a
     * machine crash loses the commits since the last sync. Never for a store
     * whose commits a reply depends on (queue, auth).
     */
    int nosync;
} store_opts_t;

#define STORE_DEFAULT_MAP  (64u << 20)
#define STORE_DEFAULT_MAX  (64ull << 30)

typedef struct store_val {
    const void *data;  /* valid until the transaction ends */
    size_t len;
} store_val_t;

store_t *store_open(const char *dir, const store_opts_t *opts, char *err, size_t errlen);
void store_close(store_t **st);

/* Put every commit on disk (a no-op cost on a synced store); a STORE_* code. */
int store_sync(store_t *st);

/* Open (creating) a named database; call at start, before other transactions. */
int store_db(store_t *st, const char *name, unsigned *dbi);

store_txn_t *store_begin(store_t *st, int write);
int store_commit(store_txn_t **txn);
void store_abort(store_txn_t **txn);

int store_get(store_txn_t *txn, unsigned dbi, const void *key, size_t klen, store_val_t *val);
int store_put(store_txn_t *txn, unsigned dbi, const void *key, size_t klen, const void *val,
              size_t vlen);
/* Reserve vlen bytes for key and return where to write them (no extra copy). */
int store_reserve(store_txn_t *txn, unsigned dbi, const void *key, size_t klen, size_t vlen,
                  void **dst);
int store_del(store_txn_t *txn, unsigned dbi, const void *key, size_t klen);

/*
 * Visit keys from start (inclusive) while they begin with prefix; fn returns
 * nonzero to stop. Returns the count visited or STORE_ERROR.
 */
typedef int (*store_each_fn)(const store_val_t *key, const store_val_t *val, void *arg);
long store_scan(store_txn_t *txn, unsigned dbi, const void *prefix, size_t plen,
                const void *start, size_t slen, store_each_fn fn, void *arg);

/*
 * Run fn inside a write transaction and commit it. When the map is full, the
 * transaction is aborted, the map grown and fn run again, so fn must only
 * read and write through txn. fn returns 0 to commit, a STORE_* code from a
 * failed call to abort with it, or a value above 100 of its own to abort
 * (returned as is, never confused with a STORE_* code).
 */
typedef int (*store_write_fn)(store_txn_t *txn, void *arg);
int store_write(store_t *st, store_write_fn fn, void *arg);

typedef struct store_stats {
    size_t map_size;
    size_t map_max;
    size_t used_bytes; /* high-water mark of the data file */
    size_t live_bytes; /* pages holding data now (freed pages are reused) */
    size_t entries;    /* in all named databases */
    unsigned grows;
} store_stats_t;
void store_stats(store_t *st, store_stats_t *out);
/*
 * Whether a write of about `bytes` more data fits, keeping `reserve` bytes
 * of map and disk for the writes that free space (deleting what is done).
 * 1: fits; 0: the map would pass its ceiling or the disk is too full.
 */
int store_has_room(store_t *st, size_t bytes, size_t reserve);

/* Entries in one named database. */
size_t store_db_entries(store_t *st, unsigned dbi);

const char *store_strerror(int rc);

#endif
