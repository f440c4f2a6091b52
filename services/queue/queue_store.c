/*
 * queue_store: the queue's LMDB layout. Two databases: "msg" maps a message
 * id to its QueueRecord (envelope and per-recipient state), "body" maps it
 * to the message bytes. A record is the durable truth about a message; the
 * schedule in memory is rebuilt from the records at start.
 */
#include "queue.h"
#include "core/alloc.h"
#include "core/log.h"

#include <stdlib.h>
#include <string.h>

int queue_store_open(queue_t *q)
{
    char dir[512], err[512];
    store_opts_t opts = {.map_size = q->conf.map_size, .map_max = q->conf.map_max};
    q->store = store_open(service_store_dir(q->svc, dir, sizeof(dir)), &opts, err, sizeof(err));
    if (q->store == NULL) {
        log_error("event=store_open_failed err=\"%s\"", err);
        return -1;
    }
    if (store_db(q->store, "msg", &q->db_msg) != STORE_OK ||
        store_db(q->store, "body", &q->db_body) != STORE_OK) {
        log_error("event=store_open_failed dir=%s err=\"cannot open databases\"", dir);
        return -1;
    }
    return 0;
}

PB(QueueRecord) * queue_store_get(queue_t *q, store_txn_t *txn, const char *id)
{
    store_val_t v;
    if (store_get(txn, q->db_msg, id, strlen(id), &v) != STORE_OK)
        return NULL;
    PB(QueueRecord) *rec = PB_FN(queue_record, unpack)(NULL, v.len, v.data);
    if (rec == NULL || rec->envelope == NULL) {
        log_error("event=record_unreadable msg=%s bytes=%zu", id, v.len);
        queue_record_free(&rec);
        return NULL;
    }
    return rec;
}

int queue_store_put(queue_t *q, store_txn_t *txn, PB(QueueRecord) * rec)
{
    const char *id = rec->envelope->message_id;
    size_t n = PB_FN(queue_record, get_packed_size)(rec);
    void *dst;
    int rc = store_reserve(txn, q->db_msg, id, strlen(id), n, &dst);
    if (rc != STORE_OK)
        return rc;
    PB_FN(queue_record, pack)(rec, dst);
    return STORE_OK;
}

void queue_record_free(PB(QueueRecord) * *rec)
{
    if (*rec) {
        PB_FN(queue_record, free_unpacked)(*rec, NULL);
        *rec = NULL;
    }
}

static int state_pending(const char *state)
{
    return strcmp(state, "queued") == 0 || strcmp(state, "deferred") == 0 ||
           strcmp(state, "inflight") == 0;
}

int queue_record_finished(const PB(QueueRecord) * rec)
{
    for (size_t i = 0; i < rec->n_recipients; i++)
        if (state_pending(rec->recipients[i]->state))
            return 0;
    return 1;
}

uint64_t queue_backoff(const queue_conf_t *c, uint32_t attempts, uint64_t random)
{
    uint64_t d = c->retry_base ? c->retry_base : 1000;
    for (uint32_t i = 1; i < attempts && d < c->retry_max_interval; i++)
        d *= 2;
    if (c->retry_max_interval && d > c->retry_max_interval)
        d = c->retry_max_interval;
    /* jitter of -10%..+10% so retries of a burst do not arrive together */
    uint64_t span = d / 5;
    if (span)
        d = d - span / 2 + random % span;
    return d;
}
