/*
 * events_store: event log keys, batched writes, searches and the retention
 * sweep over store/store.h. Three named databases: "events" (time key ->
 * packed Event), "by_message" (message key -> time key) and "meta" (the
 * event count, kept in the same transactions as the events). Not a cache:
 * every search reads LMDB in a read transaction. Commits are not synced
 * (no 250 waits for an event): the service calls evstore_sync on a timer.
 */
#include "events_store.h"
#include "core/alloc.h"
#include "core/log.h"
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DB_EVENTS     "events"
#define DB_BY_MESSAGE "by_message"
#define DB_META       "meta"
#define META_COUNT    "count"

struct evstore {
    store_t *store;
    unsigned db_events;
    unsigned db_by_message;
    unsigned db_meta;
    uint64_t count;
    int unsynced; /* a commit since the last sync */
};

typedef struct batch_entry {
    uint8_t *packed;
    size_t len;
    uint64_t at_ms;
    char id[EVSTORE_ID_MAX + 1];
    char message_id[EVSTORE_ID_MAX + 1];
} batch_entry_t;

struct evstore_batch {
    batch_entry_t *v;
    size_t n, cap;
};

/* ---- keys ---- */

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

size_t evstore_key_time(uint8_t *out, size_t size, uint64_t at_ms, const char *event_id)
{
    size_t idlen = strlen(event_id);
    if (idlen > EVSTORE_ID_MAX || size < 8 + idlen)
        return 0;
    put_be64(out, at_ms);
    memcpy(out + 8, event_id, idlen);
    return 8 + idlen;
}

/* message id, NUL: no message id is a prefix of another's keys */
static size_t key_message_prefix(uint8_t *out, size_t size, const char *message_id)
{
    size_t mlen = strlen(message_id);
    if (mlen > EVSTORE_ID_MAX || size < mlen + 1)
        return 0;
    memcpy(out, message_id, mlen);
    out[mlen] = 0;
    return mlen + 1;
}

size_t evstore_key_message(uint8_t *out, size_t size, const char *message_id, uint64_t at_ms,
                           const char *event_id)
{
    size_t plen = key_message_prefix(out, size, message_id);
    if (plen == 0)
        return 0;
    size_t tlen = evstore_key_time(out + plen, size - plen, at_ms, event_id);
    return tlen ? plen + tlen : 0;
}

/* ---- open ---- */

static int count_read(evstore_t *st)
{
    store_txn_t *txn = store_begin(st->store, 0);
    if (txn == NULL)
        return -1;
    store_val_t v;
    int rc = store_get(txn, st->db_meta, META_COUNT, strlen(META_COUNT), &v);
    if (rc == STORE_OK && v.len == 8)
        st->count = get_be64(v.data);
    store_abort(&txn);
    return rc == STORE_OK || rc == STORE_NOTFOUND ? 0 : -1;
}

static int count_write(evstore_t *st, store_txn_t *txn, uint64_t count)
{
    uint8_t b[8];
    put_be64(b, count);
    return store_put(txn, st->db_meta, META_COUNT, strlen(META_COUNT), b, sizeof(b));
}

evstore_t *evstore_open(const char *dir, char *err, size_t errlen)
{
    evstore_t *st = xcalloc(1, sizeof(*st));
    store_opts_t opts = {.nosync = 1};
    st->store = store_open(dir, &opts, err, errlen);
    if (st->store == NULL)
        goto fail;
    if (store_db(st->store, DB_EVENTS, &st->db_events) != STORE_OK ||
        store_db(st->store, DB_BY_MESSAGE, &st->db_by_message) != STORE_OK ||
        store_db(st->store, DB_META, &st->db_meta) != STORE_OK || count_read(st) < 0) {
        snprintf(err, errlen, "%s: cannot open the event databases", dir);
        goto fail;
    }
    return st;
fail:
    evstore_close(&st);
    return NULL;
}

void evstore_close(evstore_t **p)
{
    evstore_t *st = *p;
    if (st == NULL)
        return;
    if (st->store)
        evstore_sync(st); /* a clean stop leaves every event on disk */
    store_close(&st->store);
    free(st);
    *p = NULL;
}

int evstore_sync(evstore_t *st)
{
    if (!st->unsynced)
        return 0;
    int rc = store_sync(st->store);
    if (rc == STORE_OK)
        st->unsynced = 0;
    return rc;
}

uint64_t evstore_count(const evstore_t *st)
{
    return st->count;
}

size_t evstore_bytes(evstore_t *st)
{
    store_stats_t s;
    store_stats(st->store, &s);
    return s.used_bytes;
}

/* ---- checks ---- */

/* Ids go into keys and log lines: printable ASCII without spaces. */
static int id_ok(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= max || s[n] <= ' ' || s[n] > '~')
            return 0;
    return 1;
}

/* Types become metric labels: letters, digits, '_', '-', '.'. */
static int type_ok(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '-' || c == '.';
        if (!ok || n >= EVSTORE_TYPE_MAX)
            return 0;
    }
    return n > 0;
}

int evstore_check(const PB(Event) * ev, char *why, size_t whylen)
{
    if (ev == NULL) {
        snprintf(why, whylen, "no event");
        return -1;
    }
    if (ev->id == NULL || ev->id[0] == '\0' || !id_ok(ev->id, EVSTORE_ID_MAX)) {
        snprintf(why, whylen, "missing or malformed event id");
        return -1;
    }
    if (ev->at_ms == 0) {
        snprintf(why, whylen, "missing time");
        return -1;
    }
    if (ev->type == NULL || !type_ok(ev->type)) {
        snprintf(why, whylen, "missing or malformed type");
        return -1;
    }
    if (ev->message_id && !id_ok(ev->message_id, EVSTORE_ID_MAX)) {
        snprintf(why, whylen, "malformed message id");
        return -1;
    }
    size_t len = PB_FN(event, get_packed_size)(ev);
    if (len > EVSTORE_EVENT_MAX) {
        snprintf(why, whylen, "event of %zu bytes exceeds %u", len, EVSTORE_EVENT_MAX);
        return -1;
    }
    return 0;
}

/* ---- batches ---- */

evstore_batch_t *evstore_batch_new(void)
{
    return xcalloc(1, sizeof(evstore_batch_t));
}

static void batch_clear(evstore_batch_t *b)
{
    for (size_t i = 0; i < b->n; i++)
        free(b->v[i].packed);
    b->n = 0;
}

void evstore_batch_destroy(evstore_batch_t **p)
{
    evstore_batch_t *b = *p;
    if (b == NULL)
        return;
    batch_clear(b);
    free(b->v);
    free(b);
    *p = NULL;
}

int evstore_batch_add(evstore_batch_t *b, const PB(Event) * ev, char *why, size_t whylen)
{
    if (evstore_check(ev, why, whylen) < 0)
        return -1;
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->v = xrealloc(b->v, b->cap * sizeof(*b->v));
    }
    batch_entry_t *e = &b->v[b->n];
    e->len = PB_FN(event, get_packed_size)(ev);
    e->packed = xmalloc(e->len ? e->len : 1);
    PB_FN(event, pack)(ev, e->packed);
    e->at_ms = ev->at_ms;
    sx_strlcpy(e->id, ev->id, sizeof(e->id));
    sx_strlcpy(e->message_id, ev->message_id, sizeof(e->message_id));
    b->n++;
    return 0;
}

size_t evstore_batch_count(const evstore_batch_t *b)
{
    return b->n;
}

typedef struct write_ctx {
    evstore_t *st;
    evstore_batch_t *b;
    size_t stored, dups;
} write_ctx_t;

/* One transaction for the whole batch; store_write may run it again after growing the map. */
static int write_txn(store_txn_t *txn, void *arg)
{
    write_ctx_t *w = arg;
    evstore_t *st = w->st;
    w->stored = w->dups = 0;
    for (size_t i = 0; i < w->b->n; i++) {
        batch_entry_t *e = &w->b->v[i];
        uint8_t tkey[EVSTORE_TIME_KEY_MAX], mkey[EVSTORE_MSG_KEY_MAX];
        size_t tlen = evstore_key_time(tkey, sizeof(tkey), e->at_ms, e->id);
        store_val_t old;
        int rc = store_get(txn, st->db_events, tkey, tlen, &old);
        if (rc == STORE_OK) {
            w->dups++;
            continue;
        }
        if (rc != STORE_NOTFOUND)
            return rc;
        rc = store_put(txn, st->db_events, tkey, tlen, e->packed, e->len);
        if (rc != STORE_OK)
            return rc;
        if (e->message_id[0]) {
            size_t mlen = evstore_key_message(mkey, sizeof(mkey), e->message_id, e->at_ms, e->id);
            rc = store_put(txn, st->db_by_message, mkey, mlen, tkey, tlen);
            if (rc != STORE_OK)
                return rc;
        }
        w->stored++;
    }
    return w->stored ? count_write(st, txn, st->count + w->stored) : 0;
}

int evstore_write(evstore_t *st, evstore_batch_t *b, size_t *stored, size_t *duplicates)
{
    write_ctx_t w = {.st = st, .b = b};
    *stored = *duplicates = 0;
    if (b->n == 0)
        return 0;
    int rc = store_write(st->store, write_txn, &w);
    batch_clear(b);
    if (rc != STORE_OK)
        return rc;
    st->count += w.stored;
    st->unsynced = 1;
    *stored = w.stored;
    *duplicates = w.dups;
    return 0;
}

/* ---- search ---- */

int evstore_query_check(const evstore_query_t *q, char *why, size_t whylen)
{
    if (q->message_id && strlen(q->message_id) > EVSTORE_ID_MAX) {
        snprintf(why, whylen, "message id longer than %d characters", EVSTORE_ID_MAX);
        return -1;
    }
    if (q->type && strlen(q->type) > EVSTORE_TYPE_MAX) {
        snprintf(why, whylen, "type longer than %d characters", EVSTORE_TYPE_MAX);
        return -1;
    }
    if (q->recipient && strlen(q->recipient) > EVSTORE_FILTER_MAX) {
        snprintf(why, whylen, "recipient longer than %d characters", EVSTORE_FILTER_MAX);
        return -1;
    }
    if (q->limit > EVSTORE_LIMIT_MAX) {
        snprintf(why, whylen, "limit %u is above the maximum of %d", q->limit, EVSTORE_LIMIT_MAX);
        return -1;
    }
    if (q->since_ms && q->until_ms && q->since_ms > q->until_ms) {
        snprintf(why, whylen, "since is after until");
        return -1;
    }
    return 0;
}

typedef struct search_ctx {
    evstore_t *st;
    store_txn_t *txn;
    const evstore_query_t *q;
    evstore_result_t *out;
    uint32_t limit;
    size_t plen; /* message key prefix length; 0 when walking time keys */
    size_t cap;
} search_ctx_t;

static int nonempty(const char *s)
{
    return s && *s;
}

/* Examine one stored event; nonzero stops the walk. */
static int search_consider(search_ctx_t *cx, const void *data, size_t len)
{
    evstore_result_t *out = cx->out;
    if (out->scanned >= EVSTORE_SCAN_MAX) {
        out->truncated = 1;
        return 1;
    }
    out->scanned++;
    PB(Event) *ev = PB_FN(event, unpack)(NULL, len, data);
    if (ev == NULL) {
        log_warn("event=store_corrupt_event bytes=%zu", len);
        return 0;
    }
    const evstore_query_t *q = cx->q;
    int match = (!nonempty(q->type) || strcmp(ev->type, q->type) == 0) &&
                (!nonempty(q->recipient) || strcasecmp(ev->recipient, q->recipient) == 0) &&
                (!nonempty(q->message_id) || strcmp(ev->message_id, q->message_id) == 0);
    if (!match) {
        PB_FN(event, free_unpacked)(ev, NULL);
        return 0;
    }
    if (out->n >= cx->limit || (q->max_bytes && out->bytes + len > q->max_bytes)) {
        out->truncated = 1;
        PB_FN(event, free_unpacked)(ev, NULL);
        return 1;
    }
    if (out->n == cx->cap) {
        cx->cap = cx->cap ? cx->cap * 2 : 16;
        out->events = xrealloc(out->events, cx->cap * sizeof(*out->events));
    }
    out->events[out->n++] = ev;
    out->bytes += len;
    return 0;
}

static int search_time_each(const store_val_t *key, const store_val_t *val, void *arg)
{
    search_ctx_t *cx = arg;
    if (key->len < 8)
        return 0;
    uint64_t at = get_be64(key->data);
    if (cx->q->until_ms && at > cx->q->until_ms)
        return 1;
    return search_consider(cx, val->data, val->len);
}

static int search_message_each(const store_val_t *key, const store_val_t *val, void *arg)
{
    search_ctx_t *cx = arg;
    if (key->len < cx->plen + 8)
        return 0;
    uint64_t at = get_be64((const uint8_t *)key->data + cx->plen);
    if (cx->q->until_ms && at > cx->q->until_ms)
        return 1;
    store_val_t ev;
    int rc = store_get(cx->txn, cx->st->db_events, val->data, val->len, &ev);
    if (rc != STORE_OK) {
        log_warn("event=store_dangling_index rc=%d", rc);
        return 0;
    }
    return search_consider(cx, ev.data, ev.len);
}

int evstore_search(evstore_t *st, const evstore_query_t *q, evstore_result_t *out, char *why,
                   size_t whylen)
{
    memset(out, 0, sizeof(*out));
    if (evstore_query_check(q, why, whylen) < 0)
        return -1;
    store_txn_t *txn = store_begin(st->store, 0);
    if (txn == NULL) {
        snprintf(why, whylen, "store unavailable");
        return -1;
    }
    search_ctx_t cx = {.st = st, .txn = txn, .q = q, .out = out};
    cx.limit = q->limit ? q->limit : EVSTORE_LIMIT_DEFAULT;
    long rc;
    if (nonempty(q->message_id)) {
        uint8_t start[EVSTORE_MSG_KEY_MAX];
        cx.plen = key_message_prefix(start, sizeof(start), q->message_id);
        put_be64(start + cx.plen, q->since_ms);
        rc = store_scan(txn, st->db_by_message, start, cx.plen, start, cx.plen + 8,
                        search_message_each, &cx);
    } else {
        uint8_t start[8];
        put_be64(start, q->since_ms);
        rc = store_scan(txn, st->db_events, NULL, 0, start, sizeof(start), search_time_each, &cx);
    }
    store_abort(&txn);
    if (rc < 0) {
        evstore_result_free(out);
        snprintf(why, whylen, "store error");
        return -1;
    }
    return 0;
}

void evstore_result_free(evstore_result_t *r)
{
    for (size_t i = 0; i < r->n; i++)
        PB_FN(event, free_unpacked)(r->events[i], NULL);
    free(r->events);
    memset(r, 0, sizeof(*r));
}

/* ---- retention ---- */

typedef struct sweep_key {
    uint8_t tkey[EVSTORE_TIME_KEY_MAX];
    uint8_t mkey[EVSTORE_MSG_KEY_MAX];
    size_t tlen, mlen;
} sweep_key_t;

typedef struct sweep_ctx {
    evstore_t *st;
    uint64_t before_ms;
    sweep_key_t *keys;
    size_t max, n;
    int more;
} sweep_ctx_t;

static int sweep_each(const store_val_t *key, const store_val_t *val, void *arg)
{
    sweep_ctx_t *sw = arg;
    if (key->len < 8 || key->len > EVSTORE_TIME_KEY_MAX)
        return 0;
    uint64_t at = get_be64(key->data);
    if (at >= sw->before_ms)
        return 1;
    if (sw->n == sw->max) {
        sw->more = 1;
        return 1;
    }
    sweep_key_t *k = &sw->keys[sw->n++];
    memcpy(k->tkey, key->data, key->len);
    k->tlen = key->len;
    k->mlen = 0;
    PB(Event) *ev = PB_FN(event, unpack)(NULL, val->len, val->data);
    if (ev == NULL) {
        log_warn("event=store_corrupt_event bytes=%zu action=delete", val->len);
        return 0;
    }
    if (ev->message_id && ev->message_id[0]) {
        size_t plen = key_message_prefix(k->mkey, sizeof(k->mkey), ev->message_id);
        if (plen && plen + key->len <= sizeof(k->mkey)) {
            memcpy(k->mkey + plen, key->data, key->len);
            k->mlen = plen + key->len;
        }
    }
    PB_FN(event, free_unpacked)(ev, NULL);
    return 0;
}

static int sweep_txn(store_txn_t *txn, void *arg)
{
    sweep_ctx_t *sw = arg;
    evstore_t *st = sw->st;
    sw->n = 0;
    sw->more = 0;
    if (store_scan(txn, st->db_events, NULL, 0, NULL, 0, sweep_each, sw) < 0)
        return STORE_ERROR;
    for (size_t i = 0; i < sw->n; i++) {
        sweep_key_t *k = &sw->keys[i];
        int rc;
        if (k->mlen) {
            rc = store_del(txn, st->db_by_message, k->mkey, k->mlen);
            if (rc != STORE_OK && rc != STORE_NOTFOUND)
                return rc;
        }
        rc = store_del(txn, st->db_events, k->tkey, k->tlen);
        if (rc != STORE_OK && rc != STORE_NOTFOUND)
            return rc;
    }
    if (sw->n == 0)
        return 0;
    return count_write(st, txn, st->count >= sw->n ? st->count - sw->n : 0);
}

int evstore_sweep(evstore_t *st, uint64_t before_ms, size_t max, size_t *deleted)
{
    *deleted = 0;
    if (max == 0)
        return 0;
    sweep_ctx_t sw = {.st = st, .before_ms = before_ms, .max = max};
    sw.keys = xmalloc(max * sizeof(*sw.keys));
    int rc = store_write(st->store, sweep_txn, &sw);
    free(sw.keys);
    if (rc != STORE_OK)
        return rc < 0 ? rc : STORE_ERROR;
    st->count = st->count >= sw.n ? st->count - sw.n : 0;
    st->unsynced |= sw.n > 0;
    *deleted = sw.n;
    return sw.more;
}
