/*
 * queue_done: finished messages. Their records stay in the "done" database
 * for done_retention, so that `queue show` still answers for them, and the
 * "done_at" database lists them oldest first (queue_store.c). The sweep
 * reads that list from its start and removes what is past the retention,
 * a batch per transaction, at once again while batches come back full: a
 * relay finishing thousands of messages a second must remove as many.
 * Nothing about them is kept in memory.
 *
 * Stores written before finished records had their own databases keep
 * them in "msg"; the start moves them over.
 */
#include "queue.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"

#include <stdlib.h>
#include <string.h>

#define DONE_SWEEP_MS    10000
#define DONE_SWEEP_BATCH 1000 /* records removed per transaction */

typedef struct sweep {
    queue_t *q;
    uint64_t cutoff;                            /* done before this: remove */
    uint8_t keys[DONE_SWEEP_BATCH][QUEUE_DONE_KEY_LEN];
    size_t lens[DONE_SWEEP_BATCH];
    size_t n;
} sweep_t;

static int sweep_collect(const store_val_t *key, const store_val_t *val, void *arg)
{
    (void)val;
    sweep_t *sw = arg;
    if (key->len < 8 || key->len > QUEUE_DONE_KEY_LEN)
        return 0; /* not ours: left alone */
    if (queue_done_key_time(key->data) >= sw->cutoff)
        return 1;
    memcpy(sw->keys[sw->n], key->data, key->len);
    sw->lens[sw->n] = key->len;
    return ++sw->n == DONE_SWEEP_BATCH;
}

/* Collect first, then delete: no cursor walks a page being changed. */
static int sweep_write(store_txn_t *txn, void *arg)
{
    sweep_t *sw = arg;
    queue_t *q = sw->q;
    sw->n = 0;
    if (store_scan(txn, q->db_done_at, NULL, 0, NULL, 0, sweep_collect, sw) < 0)
        return STORE_ERROR;
    for (size_t i = 0; i < sw->n; i++) {
        int rc = store_del(txn, q->db_done_at, sw->keys[i], sw->lens[i]);
        if (rc == STORE_OK)
            rc = store_del(txn, q->db_done, sw->keys[i] + 8, sw->lens[i] - 8);
        if (rc != STORE_OK && rc != STORE_NOTFOUND)
            return rc;
    }
    return 0;
}

static void done_sweep(loop_t *loop, void *arg)
{
    queue_t *q = arg;
    uint64_t now = clock_wall_ms();
    sweep_t *sw = xmalloc(sizeof(*sw));
    sw->q = q;
    sw->cutoff = now > q->conf.done_retention ? now - q->conf.done_retention : 0;
    int rc = store_write(q->store, sweep_write, sw);
    size_t n = rc == STORE_OK ? sw->n : 0;
    free(sw);
    if (rc != STORE_OK)
        log_error("event=done_sweep_failed err=\"%s\"", store_strerror(rc));
    else if (n)
        log_debug("event=done_swept messages=%zu", n);
    loop_timer_start(loop, &q->done_sweep, n == DONE_SWEEP_BATCH ? 0 : DONE_SWEEP_MS);
}

typedef struct adopt {
    queue_t *q;
    char **ids;
    size_t n;
    uint64_t now;
} adopt_t;

static int adopt_write(store_txn_t *txn, void *arg)
{
    adopt_t *a = arg;
    for (size_t i = 0; i < a->n; i++) {
        PB(QueueRecord) *rec = queue_store_get(a->q, txn, a->ids[i]);
        if (rec == NULL)
            continue;
        if (rec->done_at_ms == 0)
            rec->done_at_ms = a->now;
        int rc = queue_store_put(a->q, txn, rec);
        queue_record_free(&rec);
        if (rc == STORE_OK)
            rc = store_del(txn, a->q->db_body, a->ids[i], strlen(a->ids[i]));
        if (rc != STORE_OK && rc != STORE_NOTFOUND)
            return rc;
    }
    return 0;
}

int queue_done_init(queue_t *q, char **ids, size_t n)
{
    adopt_t a = {.q = q, .now = clock_wall_ms()};
    for (size_t at = 0; at < n; at += DONE_SWEEP_BATCH) {
        a.ids = ids + at;
        a.n = n - at < DONE_SWEEP_BATCH ? n - at : DONE_SWEEP_BATCH;
        int rc = store_write(q->store, adopt_write, &a);
        if (rc != STORE_OK) {
            log_error("event=done_move_failed err=\"%s\"", store_strerror(rc));
            return -1;
        }
    }
    if (n)
        log_info("event=done_moved messages=%zu", n);
    loop_timer_init(&q->done_sweep, done_sweep, q);
    loop_timer_start(q->svc->loop, &q->done_sweep, 0);
    return 0;
}

void queue_done_fini(queue_t *q)
{
    loop_timer_stop(q->svc->loop, &q->done_sweep);
}
