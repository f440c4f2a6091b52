/*
 * queue_done: finished messages. Their records stay in the "done" database
 * for done_retention, so that `queue show` still answers for them, and the
 * "done_at" database lists them oldest first (queue_store.c). The sweep
 * reads that list from its start and removes what is past the retention,
 * a batch per transaction, at once again while batches come back full: a
 * relay finishing thousands of messages a second must remove as many.
 *
 * A message finished by a delivery's result is written back into "msg" by
 * the turn that finishes it, and moved out here with others, a batch per
 * transaction, done_move_delay after the first of them: the turn, which
 * clients wait on, then changes one tree instead of three, and a batch
 * fills the pages of "done" and "done_at" many records at a time. Batches
 * are kept short and apart, so that a turn waits for one at most about its
 * own time. Only their ids wait in memory. A stop moves what is pending;
 * what a crash leaves in "msg", like the finished records of stores
 * written before "done" existed, the start moves over.
 */
#include "queue.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"

#include <stdlib.h>
#include <string.h>

#define DONE_SWEEP_MS      10000
#define DONE_SWEEP_BATCH   1000    /* records removed per transaction */
#define DONE_MOVE_BATCH    256     /* records moved per transaction: about a turn's time */
#define DONE_MOVE_GAP_MS   10      /* between two batches, turns get the loop */
#define DONE_MOVE_RETRY_MS 10000   /* after a batch that could not be written */
#define DONE_PENDING_MAX   1000000 /* past this, left in "msg" for the next start */

typedef struct done_entry {
    char id[ID_BUF_SIZE];
    uint64_t at; /* done_at_ms */
} done_entry_t;

/* Records finished in "msg", waiting for their move: v[head .. len). */
struct done_pending {
    done_entry_t *v;
    size_t head, len, cap;
    int full_logged;
};

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

/* ---- just-finished records: out of "msg" in batches ---- */

typedef struct move {
    queue_t *q;
    size_t n;     /* entries to move, from the head */
    size_t moved; /* of which were still in "msg" */
} move_t;

static int move_write(store_txn_t *txn, void *arg)
{
    move_t *m = arg;
    struct done_pending *p = m->q->done_pending;
    m->moved = 0;
    for (size_t i = 0; i < m->n; i++) {
        const done_entry_t *e = &p->v[p->head + i];
        int rc = queue_store_retire(m->q, txn, e->id, e->at);
        if (rc == STORE_OK)
            m->moved++;
        else if (rc != STORE_NOTFOUND) /* not found: deleted, or moved by a later write */
            return rc;
    }
    return 0;
}

/* Move one batch from the head; 0 when it is written, -1 when it failed. */
static int move_batch(queue_t *q)
{
    struct done_pending *p = q->done_pending;
    size_t pending = p->len - p->head;
    move_t m = {.q = q, .n = pending < DONE_MOVE_BATCH ? pending : DONE_MOVE_BATCH};
    uint64_t t0 = clock_mono_ms();
    int rc = store_write(q->store, move_write, &m);
    if (rc != STORE_OK) {
        log_error("event=done_move_failed pending=%zu err=\"%s\"", pending, store_strerror(rc));
        return -1;
    }
    p->head += m.n;
    if (p->head == p->len)
        p->head = p->len = 0;
    log_debug("event=done_move_batch messages=%zu ms=%llu", m.moved,
              (unsigned long long)(clock_mono_ms() - t0));
    return 0;
}

static void done_move(loop_t *loop, void *arg)
{
    queue_t *q = arg;
    struct done_pending *p = q->done_pending;
    if (p->len == p->head)
        return;
    if (move_batch(q) < 0) {
        loop_timer_start(loop, &q->done_move, DONE_MOVE_RETRY_MS);
        return;
    }
    size_t left = p->len - p->head;
    if (left)
        loop_timer_start(loop, &q->done_move,
                         left >= DONE_MOVE_BATCH ? DONE_MOVE_GAP_MS : q->conf.done_move_delay);
}

void queue_done_later(queue_t *q, const char *id, uint64_t done_at_ms)
{
    struct done_pending *p = q->done_pending;
    if (p->len - p->head >= DONE_PENDING_MAX) {
        if (!p->full_logged)
            log_warn("event=done_move_behind pending=%zu", p->len - p->head);
        p->full_logged = 1;
        return;
    }
    p->full_logged = 0;
    if (p->len == p->cap && p->head > 0) {
        memmove(p->v, p->v + p->head, (p->len - p->head) * sizeof(*p->v));
        p->len -= p->head;
        p->head = 0;
    }
    if (p->len == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 256;
        p->v = xrealloc(p->v, p->cap * sizeof(*p->v));
    }
    done_entry_t *e = &p->v[p->len++];
    sx_strlcpy(e->id, id, sizeof(e->id));
    e->at = done_at_ms;
    if (!loop_timer_active(&q->done_move))
        loop_timer_start(q->svc->loop, &q->done_move, q->conf.done_move_delay);
}

void queue_done_flush(queue_t *q)
{
    struct done_pending *p = q->done_pending;
    while (p && p->len > p->head && move_batch(q) == 0)
        ;
}

/* ---- at start: finished records found in "msg" ---- */

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
    q->done_pending = xcalloc(1, sizeof(*q->done_pending));
    loop_timer_init(&q->done_move, done_move, q);
    loop_timer_init(&q->done_sweep, done_sweep, q);
    loop_timer_start(q->svc->loop, &q->done_sweep, 0);
    return 0;
}

void queue_done_fini(queue_t *q)
{
    loop_timer_stop(q->svc->loop, &q->done_sweep);
    loop_timer_stop(q->svc->loop, &q->done_move);
    if (q->done_pending)
        free(q->done_pending->v);
    free(q->done_pending);
    q->done_pending = NULL;
}
