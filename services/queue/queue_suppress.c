/*
 * queue_suppress: the suppression list (recipients a tenant no longer sends
 * to) and the soft-bounce counts that lead to it. Keys are tenant NUL
 * lowercased address. Entries learnt by one queue instance (from a bounce
 * or from an operator) are passed to the others, each of which keeps its
 * own copy in its own store; an instance that was down when an entry was
 * passed learns it again from the next bounce or operator change.
 */
#include "queue.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SUPP_KEY_MAX      (64 + 1 + 512)
#define SUPP_LIST_DEFAULT 1000
#define SUPP_LIST_MAX     100000

static size_t supp_key(const char *tenant, const char *address, char *key)
{
    size_t t = strnlen(tenant ? tenant : "", 64);
    size_t a = strnlen(address, 511);
    memcpy(key, tenant ? tenant : "", t);
    key[t] = '\0';
    for (size_t i = 0; i < a; i++)
        key[t + 1 + i] = (char)tolower((unsigned char)address[i]);
    return t + 1 + a;
}

static PB(Suppression) * supp_read(const store_val_t *v)
{
    return PB_FN(suppression, unpack)(NULL, v->len, v->data);
}

int queue_suppressed(queue_t *q, store_txn_t *txn, const char *tenant, const char *address)
{
    char key[SUPP_KEY_MAX];
    size_t klen = supp_key(tenant, address, key);
    store_val_t v;
    if (store_get(txn, q->db_supp, key, klen, &v) != STORE_OK)
        return 0;
    PB(Suppression) *e = supp_read(&v);
    if (e == NULL)
        return 0;
    int live = e->expires_at_ms == 0 || e->expires_at_ms > clock_wall_ms();
    PB_FN(suppression, free_unpacked)(e, NULL);
    return live;
}

int queue_suppress_put(queue_t *q, store_txn_t *txn, const PB(Suppression) * e)
{
    char key[SUPP_KEY_MAX];
    size_t klen = supp_key(e->tenant, e->address, key);
    size_t n = PB_FN(suppression, get_packed_size)(e);
    void *dst;
    int rc = store_reserve(txn, q->db_supp, key, klen, n, &dst);
    if (rc == STORE_OK)
        PB_FN(suppression, pack)(e, dst);
    return rc;
}

size_t queue_suppress_count(queue_t *q)
{
    return store_db_entries(q->store, q->db_supp);
}

void queue_suppress_replicate(queue_t *q, const PB(Suppression) * e)
{
    PB(QueueSuppressAdd) add = PB_INIT(QUEUE_SUPPRESS_ADD);
    add.entry = (PB(Suppression) *)e;
    add.from_peer = 1;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(QUEUE_SUPPRESS_ADD);
    env.queue_suppress_add = &add;
    for (size_t i = 0; i < q->npeers; i++)
        if (bus_client_send(q->peers[i], 0, &env, NULL) < 0)
            log_warn("event=suppression_not_passed peer=%s address=%s",
                     bus_client_endpoint(q->peers[i]), e->address);
}

static void replicate_remove(queue_t *q, const char *tenant, const char *address)
{
    PB(QueueSuppressRemove) rm = PB_INIT(QUEUE_SUPPRESS_REMOVE);
    rm.tenant = (char *)tenant;
    rm.address = (char *)address;
    rm.from_peer = 1;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(QUEUE_SUPPRESS_REMOVE);
    env.queue_suppress_remove = &rm;
    for (size_t i = 0; i < q->npeers; i++)
        bus_client_send(q->peers[i], 0, &env, NULL);
}

/* ---- soft bounces ---- */

typedef struct soft_rec {
    uint64_t count;
    uint64_t first_ms;
} soft_rec_t;

int queue_soft_count(queue_t *q, store_txn_t *txn, const char *tenant, const char *address,
                     uint64_t now)
{
    char key[SUPP_KEY_MAX];
    size_t klen = supp_key(tenant, address, key);
    soft_rec_t r = {0, now};
    store_val_t v;
    if (store_get(txn, q->db_soft, key, klen, &v) == STORE_OK && v.len == sizeof(r))
        memcpy(&r, v.data, sizeof(r));
    r.count++;
    int hard = r.count >= (uint64_t)q->conf.soft_bounce_limit ||
               (r.count >= 2 && now - r.first_ms >= q->conf.soft_bounce_window);
    if (hard) {
        store_del(txn, q->db_soft, key, klen);
        return 1;
    }
    store_put(txn, q->db_soft, key, klen, &r, sizeof(r));
    return 0;
}

void queue_soft_clear(queue_t *q, store_txn_t *txn, const char *tenant, const char *address)
{
    char key[SUPP_KEY_MAX];
    size_t klen = supp_key(tenant, address, key);
    store_del(txn, q->db_soft, key, klen);
}

/* ---- operator requests ---- */

typedef struct supp_op {
    queue_t *q;
    PB(Suppression) *entry;   /* add */
    const char *tenant, *address;
    int found;                /* remove */
    PB(Suppression) *old;     /* remove: what was there */
} supp_op_t;

static int op_add(store_txn_t *txn, void *arg)
{
    supp_op_t *op = arg;
    return queue_suppress_put(op->q, txn, op->entry);
}

static int op_remove(store_txn_t *txn, void *arg)
{
    supp_op_t *op = arg;
    char key[SUPP_KEY_MAX];
    size_t klen = supp_key(op->tenant, op->address, key);
    store_val_t v;
    op->found = 0;
    if (store_get(txn, op->q->db_supp, key, klen, &v) != STORE_OK)
        return 0;
    op->found = 1;
    op->old = supp_read(&v);
    return store_del(txn, op->q->db_supp, key, klen);
}

static void reply_entries(queue_t *q, bus_msg_t *msg, PB(Suppression) * *entries, size_t n)
{
    PB(QueueSuppressReply) r = PB_INIT(QUEUE_SUPPRESS_REPLY);
    r.entries = entries;
    r.n_entries = n;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(QUEUE_SUPPRESS_REPLY);
    env.queue_suppress_reply = &r;
    bus_server_send(q->api, &msg->peer, msg->env->request_id, &env, NULL);
}

typedef struct list_ctx {
    PB(Suppression) **v;
    size_t n, max;
    uint64_t now;
} list_ctx_t;

static int list_one(const store_val_t *key, const store_val_t *val, void *arg)
{
    (void)key;
    list_ctx_t *lc = arg;
    PB(Suppression) *e = supp_read(val);
    if (e == NULL)
        return 0;
    if (e->expires_at_ms && e->expires_at_ms <= lc->now) {
        PB_FN(suppression, free_unpacked)(e, NULL);
        return 0;
    }
    lc->v[lc->n++] = e;
    return lc->n >= lc->max;
}

static int address_ok(const char *a)
{
    return a && *a && strchr(a, '@') && strlen(a) < 512 && !strpbrk(a, " \r\n<>");
}

void queue_on_suppress(queue_t *q, bus_msg_t *msg)
{
    sx_env_t *env = msg->env;
    uint64_t rid = env->request_id;
    uint64_t now = clock_wall_ms();
    switch (env->body_case) {
    case PB_BODY(QUEUE_SUPPRESS_ADD): {
        PB(Suppression) *e = env->queue_suppress_add->entry;
        if (e == NULL || !address_ok(e->address) || strlen(e->tenant) > 64) {
            bus_server_error(q->api, &msg->peer, rid, 400, "",
                             "a suppression needs a tenant and an address such as "
                             "user@example.org");
            return;
        }
        if (e->created_at_ms == 0)
            e->created_at_ms = now;
        if (e->reason[0] == '\0')
            queue_set_str(&e->reason, "operator");
        supp_op_t op = {.q = q, .entry = e};
        if (store_write(q->store, op_add, &op) != STORE_OK) {
            bus_server_error(q->api, &msg->peer, rid, 500, "", "cannot write the entry");
            return;
        }
        log_info("event=suppression_added tenant=%s address=%s reason=%s peer=%d", e->tenant,
                 e->address, e->reason, env->queue_suppress_add->from_peer);
        if (!env->queue_suppress_add->from_peer)
            queue_suppress_replicate(q, e);
        reply_entries(q, msg, &e, 1);
        return;
    }
    case PB_BODY(QUEUE_SUPPRESS_REMOVE): {
        PB(QueueSuppressRemove) *rm = env->queue_suppress_remove;
        if (!address_ok(rm->address)) {
            bus_server_error(q->api, &msg->peer, rid, 400, "", "an address is required");
            return;
        }
        supp_op_t op = {.q = q, .tenant = rm->tenant, .address = rm->address};
        if (store_write(q->store, op_remove, &op) != STORE_OK) {
            bus_server_error(q->api, &msg->peer, rid, 500, "", "cannot remove the entry");
            return;
        }
        if (!rm->from_peer)
            replicate_remove(q, rm->tenant, rm->address);
        if (!op.found) {
            bus_server_error(q->api, &msg->peer, rid, 404, "",
                             "%s is not suppressed for tenant \"%s\"", rm->address, rm->tenant);
            return;
        }
        log_info("event=suppression_removed tenant=%s address=%s", rm->tenant, rm->address);
        reply_entries(q, msg, op.old ? &op.old : NULL, op.old ? 1 : 0);
        if (op.old)
            PB_FN(suppression, free_unpacked)(op.old, NULL);
        return;
    }
    case PB_BODY(QUEUE_SUPPRESS_CHECK): {
        PB(QueueSuppressCheck) *ck = env->queue_suppress_check;
        if (!address_ok(ck->address)) {
            bus_server_error(q->api, &msg->peer, rid, 400, "", "an address is required");
            return;
        }
        char key[SUPP_KEY_MAX];
        size_t klen = supp_key(ck->tenant, ck->address, key);
        store_txn_t *txn = store_begin(q->store, 0);
        store_val_t v;
        PB(Suppression) *e = NULL;
        if (txn && store_get(txn, q->db_supp, key, klen, &v) == STORE_OK)
            e = supp_read(&v);
        store_abort(&txn);
        if (e && e->expires_at_ms && e->expires_at_ms <= now) {
            PB_FN(suppression, free_unpacked)(e, NULL);
            e = NULL;
        }
        reply_entries(q, msg, e ? &e : NULL, e ? 1 : 0);
        if (e)
            PB_FN(suppression, free_unpacked)(e, NULL);
        return;
    }
    case PB_BODY(QUEUE_SUPPRESS_LIST): {
        PB(QueueSuppressList) *ls = env->queue_suppress_list;
        size_t max = ls->limit ? ls->limit : SUPP_LIST_DEFAULT;
        if (max > SUPP_LIST_MAX)
            max = SUPP_LIST_MAX;
        list_ctx_t lc = {.v = xcalloc(max, sizeof(PB(Suppression) *)), .max = max, .now = now};
        char prefix[70];
        size_t plen = 0;
        if (ls->tenant[0]) {
            plen = strnlen(ls->tenant, 64);
            memcpy(prefix, ls->tenant, plen);
            prefix[plen++] = '\0';
        }
        store_txn_t *txn = store_begin(q->store, 0);
        if (txn)
            store_scan(txn, q->db_supp, prefix, plen, NULL, 0, list_one, &lc);
        store_abort(&txn);
        reply_entries(q, msg, lc.v, lc.n);
        for (size_t i = 0; i < lc.n; i++)
            PB_FN(suppression, free_unpacked)(lc.v[i], NULL);
        free(lc.v);
        return;
    }
    default:
        return;
    }
}

/* ---- expiry ---- */

#define SWEEP_MS    600000
#define SWEEP_BATCH 10000

typedef struct sweep {
    queue_t *q;
    uint64_t now;
    char (*keys)[SUPP_KEY_MAX];
    size_t *lens;
    size_t n;
    unsigned db;
} sweep_t;

static int sweep_supp_one(const store_val_t *key, const store_val_t *val, void *arg)
{
    sweep_t *sw = arg;
    PB(Suppression) *e = supp_read(val);
    int expired = e && e->expires_at_ms && e->expires_at_ms <= sw->now;
    if (e)
        PB_FN(suppression, free_unpacked)(e, NULL);
    if (expired && key->len <= SUPP_KEY_MAX) {
        memcpy(sw->keys[sw->n], key->data, key->len);
        sw->lens[sw->n++] = key->len;
    }
    return sw->n >= SWEEP_BATCH;
}

static int sweep_soft_one(const store_val_t *key, const store_val_t *val, void *arg)
{
    sweep_t *sw = arg;
    soft_rec_t r;
    int stale = val->len != sizeof(r);
    if (!stale) {
        memcpy(&r, val->data, sizeof(r));
        stale = sw->now - r.first_ms > 2 * sw->q->conf.soft_bounce_window;
    }
    if (stale && key->len <= SUPP_KEY_MAX) {
        memcpy(sw->keys[sw->n], key->data, key->len);
        sw->lens[sw->n++] = key->len;
    }
    return sw->n >= SWEEP_BATCH;
}

static int sweep_delete(store_txn_t *txn, void *arg)
{
    sweep_t *sw = arg;
    for (size_t i = 0; i < sw->n; i++) {
        int rc = store_del(txn, sw->db, sw->keys[i], sw->lens[i]);
        if (rc != STORE_OK && rc != STORE_NOTFOUND)
            return rc;
    }
    return 0;
}

/* Delete expired suppressions and stale soft-bounce counts, a batch at a time. */
static void sweep_run(loop_t *loop, void *arg)
{
    queue_t *q = arg;
    sweep_t sw = {.q = q, .now = clock_wall_ms()};
    sw.keys = xmalloc(SWEEP_BATCH * sizeof(*sw.keys));
    sw.lens = xmalloc(SWEEP_BATCH * sizeof(*sw.lens));
    unsigned dbs[2] = {q->db_supp, q->db_soft};
    for (int k = 0; k < 2; k++) {
        sw.n = 0;
        sw.db = dbs[k];
        store_txn_t *txn = store_begin(q->store, 0);
        if (txn)
            store_scan(txn, sw.db, NULL, 0, NULL, 0, k == 0 ? sweep_supp_one : sweep_soft_one,
                       &sw);
        store_abort(&txn);
        if (sw.n && store_write(q->store, sweep_delete, &sw) == STORE_OK)
            log_info("event=%s_swept entries=%zu", k == 0 ? "suppression" : "soft_bounce", sw.n);
    }
    free(sw.keys);
    free(sw.lens);
    loop_timer_start(loop, &q->supp_sweep, SWEEP_MS);
}

void queue_suppress_init(queue_t *q)
{
    loop_timer_init(&q->supp_sweep, sweep_run, q);
    loop_timer_start(q->svc->loop, &q->supp_sweep, SWEEP_MS);
}

void queue_suppress_fini(queue_t *q)
{
    loop_timer_stop(q->svc->loop, &q->supp_sweep);
}
