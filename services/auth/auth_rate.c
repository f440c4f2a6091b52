/*
 * auth_rate: one auth_table entry per limited name ("c:<username>" or
 * "t:<tenant>") holding both windows, and a list of the names whose day
 * window changed since the last flush.
 */
#include "auth_rate.h"
#include "auth_table.h"
#include "core/alloc.h"
#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RATE_KEY_MAX (AUTH_TABLE_KEY_MAX + 1)

typedef struct rate_entry {
    uint64_t min_start;
    uint32_t min_count;
    uint64_t day_start;
    uint32_t day_count;
    int day_loaded; /* the day window has been read from the store */
    int dirty;      /* on the dirty list */
} rate_entry_t;

struct auth_rate {
    auth_store_t *st;
    auth_table_t *table;
    char **dirty; /* keys */
    size_t n_dirty, cap_dirty;
    uint64_t counted, refused, flushes, flush_failures;
};

auth_rate_t *auth_rate_new(auth_store_t *st, size_t max_names)
{
    auth_rate_t *r = xcalloc(1, sizeof(*r));
    r->st = st;
    r->table = auth_table_new(max_names < AUTH_RATE_KEYS_MIN ? AUTH_RATE_KEYS_MIN : max_names,
                              sizeof(rate_entry_t));
    if (r->table == NULL)
        auth_rate_destroy(&r);
    return r;
}

static void dirty_clear(auth_rate_t *r)
{
    for (size_t i = 0; i < r->n_dirty; i++)
        free(r->dirty[i]);
    r->n_dirty = 0;
}

void auth_rate_destroy(auth_rate_t **p)
{
    auth_rate_t *r = *p;
    if (r == NULL)
        return;
    dirty_clear(r);
    free(r->dirty);
    auth_table_destroy(&r->table);
    free(r);
    *p = NULL;
}

static int make_key(char *out, const auth_rate_limit_t *l)
{
    int n = snprintf(out, RATE_KEY_MAX, "%c:%s", l->scope == AUTH_RATE_TENANT ? 't' : 'c', l->name);
    return n > 2 && n < RATE_KEY_MAX ? 0 : -1;
}

/* Read the stored day window of a name met for the first time (or again after eviction). */
static int load_day(auth_rate_t *r, const char *key, rate_entry_t *e)
{
    uint64_t start = 0;
    uint32_t count = 0;
    auth_st_t st = auth_store_rate_get(r->st, key, &start, &count);
    if (st == AUTH_ST_NOTFOUND || st == AUTH_ST_CORRUPT) {
        start = 0;
        count = 0;
    } else if (st != AUTH_ST_OK) {
        return -1;
    }
    e->day_start = start;
    e->day_count = count;
    e->day_loaded = 1;
    return 0;
}

static uint32_t seconds_until(uint64_t when_ms, uint64_t now_ms)
{
    uint64_t s = when_ms > now_ms ? (when_ms - now_ms + 999) / 1000 : 1;
    if (s == 0)
        s = 1;
    return s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

/* Close windows whose time is over. */
static void roll(rate_entry_t *e, uint64_t now_ms)
{
    if (e->min_count && now_ms >= e->min_start + AUTH_RATE_MINUTE_MS)
        e->min_count = 0;
    if (e->day_count && now_ms >= e->day_start + AUTH_RATE_DAY_MS)
        e->day_count = 0;
}

static void mark_dirty(auth_rate_t *r, const char *key, rate_entry_t *e)
{
    if (e->dirty)
        return;
    if (r->n_dirty == r->cap_dirty) {
        r->cap_dirty = r->cap_dirty ? 2 * r->cap_dirty : 16;
        r->dirty = xrealloc(r->dirty, r->cap_dirty * sizeof(*r->dirty));
    }
    r->dirty[r->n_dirty++] = xstrdup(key);
    e->dirty = 1;
}

/* Keep the refusal that frees up last: retrying before then would fail again. */
static void consider(auth_rate_refusal_t *best, int *have, const auth_rate_limit_t *l, int per_day,
                     uint32_t limit, uint32_t retry)
{
    if (*have && best->retry_after_s >= retry)
        return;
    best->scope = l->scope;
    best->name = l->name;
    best->per_day = per_day;
    best->limit = limit;
    best->retry_after_s = retry;
    *have = 1;
}

int auth_rate_take(auth_rate_t *r, const auth_rate_limit_t *limits, size_t n, uint64_t now_ms,
                   auth_rate_refusal_t *out)
{
    memset(out, 0, sizeof(*out));
    int refused = 0;
    /* pass 1: check every limit; pass 2: count against every limit */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n; i++) {
            const auth_rate_limit_t *l = &limits[i];
            char key[RATE_KEY_MAX];
            if ((l->per_minute == 0 && l->per_day == 0) || l->name == NULL || make_key(key, l) < 0)
                continue;
            rate_entry_t *e = auth_table_touch(r->table, key, NULL);
            if (e == NULL)
                continue;
            if (l->per_day && !e->day_loaded && load_day(r, key, e) < 0)
                return -1;
            roll(e, now_ms);
            if (pass == 0) {
                if (l->per_minute && e->min_count >= l->per_minute)
                    consider(out, &refused, l, 0, l->per_minute,
                             seconds_until(e->min_start + AUTH_RATE_MINUTE_MS, now_ms));
                if (l->per_day && e->day_count >= l->per_day)
                    consider(out, &refused, l, 1, l->per_day,
                             seconds_until(e->day_start + AUTH_RATE_DAY_MS, now_ms));
                continue;
            }
            if (l->per_minute) {
                if (e->min_count == 0)
                    e->min_start = now_ms;
                e->min_count++;
            }
            if (l->per_day) {
                if (e->day_count == 0)
                    e->day_start = now_ms;
                e->day_count++;
                mark_dirty(r, key, e);
            }
        }
        if (refused) {
            r->refused++;
            return 1;
        }
    }
    r->counted++;
    return 0;
}

size_t auth_rate_dirty(const auth_rate_t *r)
{
    return r->n_dirty;
}

int auth_rate_flush(auth_rate_t *r)
{
    if (r->n_dirty == 0)
        return 0;
    auth_rate_rec_t *recs = xcalloc(r->n_dirty, sizeof(*recs));
    rate_entry_t **entries = xcalloc(r->n_dirty, sizeof(*entries));
    size_t n = 0;
    for (size_t i = 0; i < r->n_dirty; i++) {
        rate_entry_t *e = auth_table_find(r->table, r->dirty[i]);
        if (e == NULL)
            continue; /* evicted meanwhile: its last count is lost, as documented */
        recs[n].key = r->dirty[i];
        recs[n].start_ms = e->day_count ? e->day_start : 0;
        recs[n].count = e->day_count;
        entries[n++] = e;
    }
    int rc = 0;
    if (auth_store_rate_put(r->st, recs, n) == AUTH_ST_OK) {
        for (size_t i = 0; i < n; i++)
            entries[i]->dirty = 0;
        dirty_clear(r);
        r->flushes++;
    } else {
        r->flush_failures++;
        rc = -1;
    }
    free(recs);
    free(entries);
    return rc;
}

void auth_rate_stats(const auth_rate_t *r, auth_rate_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    out->names = auth_table_count(r->table);
    out->dirty = r->n_dirty;
    out->counted = r->counted;
    out->refused = r->refused;
    out->flushes = r->flushes;
    out->flush_failures = r->flush_failures;
}
