/*
 * queue_store: the queue's LMDB layout and what a record means. Databases:
 * "msg" maps the id of a message still in progress to its QueueRecord
 * (envelope and per-recipient state), "done" the id of a finished one, kept
 * for done_retention (queue_done.c), and "done_at" orders the finished ones
 * by time (8-byte big-endian ms, then the id; no value). Finished records
 * leave "msg", so the tree that every commit, dispatch and result walks
 * holds only live messages however many finished within the retention: a
 * message finished by a delivery's result stays in "msg" only until
 * queue_done.c moves it with others in a batch (done_move_delay), so the
 * turn that finishes it changes one tree rather than three.
 * "body" maps an id to the message bytes (gone once finished), "supp"
 * holds the suppression list (tenant NUL address -> Suppression), "soft"
 * the soft-bounce counts of addresses, "dom" the operator's domain
 * suspensions. A record is the durable truth about a message; the schedule
 * and index in memory are rebuilt from the records at start. Also the
 * reading of remote replies: backoff, greylisting waits, hard and soft
 * bounces.
 */
#include "queue.h"
#include "core/alloc.h"
#include "core/log.h"

#include <ctype.h>
#include <endian.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
        store_db(q->store, "body", &q->db_body) != STORE_OK ||
        store_db(q->store, "supp", &q->db_supp) != STORE_OK ||
        store_db(q->store, "soft", &q->db_soft) != STORE_OK ||
        store_db(q->store, "dom", &q->db_dom) != STORE_OK ||
        store_db(q->store, "done", &q->db_done) != STORE_OK ||
        store_db(q->store, "done_at", &q->db_done_at) != STORE_OK) {
        log_error("event=store_open_failed dir=%s err=\"cannot open databases\"", dir);
        return -1;
    }
    return 0;
}

size_t queue_done_key(uint64_t at_ms, const char *id, uint8_t key[QUEUE_DONE_KEY_LEN])
{
    uint64_t be = htobe64(at_ms);
    memcpy(key, &be, 8);
    size_t n = strnlen(id, ID_LEN);
    memcpy(key + 8, id, n);
    return 8 + n;
}

uint64_t queue_done_key_time(const void *key)
{
    uint64_t be;
    memcpy(&be, key, 8);
    return be64toh(be);
}

/* The packed record of id, live or finished: 1 when found. */
static int record_val(queue_t *q, store_txn_t *txn, const char *id, store_val_t *v)
{
    return store_get(txn, q->db_msg, id, strlen(id), v) == STORE_OK ||
           store_get(txn, q->db_done, id, strlen(id), v) == STORE_OK;
}

int queue_store_has(queue_t *q, store_txn_t *txn, const char *id)
{
    store_val_t v;
    return record_val(q, txn, id, &v);
}

PB(QueueRecord) * queue_store_get(queue_t *q, store_txn_t *txn, const char *id)
{
    store_val_t v;
    if (!record_val(q, txn, id, &v))
        return NULL;
    PB(QueueRecord) *rec = PB_FN(queue_record, unpack)(NULL, v.len, v.data);
    if (rec == NULL || rec->envelope == NULL) {
        log_error("event=record_unreadable msg=%s bytes=%zu", id, v.len);
        queue_record_free(&rec);
        return NULL;
    }
    return rec;
}

/* Pack rec into db under its id. */
static int put_into(queue_t *q, store_txn_t *txn, unsigned db, PB(QueueRecord) * rec)
{
    const char *id = rec->envelope->message_id;
    size_t n = PB_FN(queue_record, get_packed_size)(rec);
    void *dst;
    int rc = store_reserve(txn, db, id, strlen(id), n, &dst);
    if (rc != STORE_OK)
        return rc;
    PB_FN(queue_record, pack)(rec, dst);
    return STORE_OK;
}

/* Take id out of "msg" and list it in "done_at": its record goes to "done"
 * next (done_at_ms is set once, so listing it again changes nothing). */
static int leave_msg(queue_t *q, store_txn_t *txn, const char *id, uint64_t done_at_ms)
{
    int rc = store_del(txn, q->db_msg, id, strlen(id));
    if (rc != STORE_OK && rc != STORE_NOTFOUND)
        return rc;
    uint8_t key[QUEUE_DONE_KEY_LEN];
    return store_put(txn, q->db_done_at, key, queue_done_key(done_at_ms, id, key), "", 0);
}

int queue_store_put(queue_t *q, store_txn_t *txn, PB(QueueRecord) * rec)
{
    if (rec->done_at_ms == 0)
        return put_into(q, txn, q->db_msg, rec);
    int rc = leave_msg(q, txn, rec->envelope->message_id, rec->done_at_ms);
    return rc == STORE_OK ? put_into(q, txn, q->db_done, rec) : rc;
}

int queue_store_put_finishing(queue_t *q, store_txn_t *txn, PB(QueueRecord) * rec)
{
    return put_into(q, txn, q->db_msg, rec);
}

int queue_store_retire(queue_t *q, store_txn_t *txn, const char *id, uint64_t done_at_ms)
{
    store_val_t v;
    int rc = store_get(txn, q->db_msg, id, strlen(id), &v);
    if (rc != STORE_OK)
        return rc;
    /* the value points into the map: copied before the trees change */
    void *copy = xmemdup(v.data, v.len);
    size_t len = v.len;
    rc = leave_msg(q, txn, id, done_at_ms);
    if (rc == STORE_OK)
        rc = store_put(txn, q->db_done, id, strlen(id), copy, len);
    free(copy);
    return rc;
}

int queue_store_message(queue_t *q, store_txn_t *txn, PB(QueueRecord) * rec, const void *body,
                        size_t len)
{
    int rc = queue_store_put(q, txn, rec);
    if (rc != STORE_OK)
        return rc;
    const char *id = rec->envelope->message_id;
    return store_put(txn, q->db_body, id, strlen(id), body, len);
}

void queue_record_free(PB(QueueRecord) * *rec)
{
    if (*rec) {
        PB_FN(queue_record, free_unpacked)(*rec, NULL);
        *rec = NULL;
    }
}

int queue_rcpt_pending(const PB(QueueRecipientState) * r)
{
    return strcmp(r->state, "queued") == 0 || strcmp(r->state, "deferred") == 0;
}

int queue_record_finished(const PB(QueueRecord) * rec)
{
    for (size_t i = 0; i < rec->n_recipients; i++)
        if (queue_rcpt_pending(rec->recipients[i]))
            return 0;
    return 1;
}

uint64_t queue_record_next_due(const PB(QueueRecord) * rec)
{
    uint64_t due = 0;
    for (size_t i = 0; i < rec->n_recipients; i++) {
        const PB(QueueRecipientState) *r = rec->recipients[i];
        if (queue_rcpt_pending(r) && (due == 0 || r->next_attempt_ms < due))
            due = r->next_attempt_ms ? r->next_attempt_ms : 1;
    }
    return due;
}

const char *queue_rcpt_domain(const char *address)
{
    const char *at = strrchr(address, '@');
    return at ? at + 1 : "";
}

void queue_set_str(char **field, const char *value)
{
    if (*field && *field != protobuf_c_empty_string)
        free(*field);
    *field = xstrdup(value);
}

PB(Status) * queue_status_new(unsigned code, const char *enh, const char *text)
{
    PB(Status) *st = xmalloc(sizeof(*st));
    PB(Status) init = PB_INIT(STATUS);
    *st = init;
    st->code = code;
    st->enhanced = xstrdup(enh ? enh : "");
    st->text = xstrdup(text ? text : "");
    return st;
}

/* ---- reading replies ---- */

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

static int contains_ci(const char *hay, const char *needle)
{
    return hay && strcasestr(hay, needle) != NULL;
}

/* "in 300 seconds", "after 5 minutes", "retry in 60s": the wait in ms, or 0. */
static uint64_t named_wait(const char *text)
{
    if (text == NULL)
        return 0;
    for (const char *p = text; *p; p++) {
        const char *q = NULL;
        if (strncasecmp(p, "in ", 3) == 0)
            q = p + 3;
        else if (strncasecmp(p, "after ", 6) == 0)
            q = p + 6;
        if (q == NULL || (p > text && isalpha((unsigned char)p[-1])))
            continue;
        if (!isdigit((unsigned char)*q))
            continue;
        char *end;
        unsigned long long n = strtoull(q, &end, 10);
        while (*end == ' ')
            end++;
        uint64_t unit = 0;
        if (strncasecmp(end, "sec", 3) == 0 || ((*end == 's' || *end == 'S') &&
                                                 !isalpha((unsigned char)end[1])))
            unit = 1000;
        else if (strncasecmp(end, "min", 3) == 0 ||
                 ((*end == 'm' || *end == 'M') && !isalpha((unsigned char)end[1])))
            unit = 60000;
        else if (strncasecmp(end, "hour", 4) == 0)
            unit = 3600000;
        if (unit && n > 0 && n < 1000000)
            return n * unit;
    }
    return 0;
}

uint64_t queue_reply_wait(const queue_conf_t *c, unsigned code, const char *enh,
                          const char *text)
{
    if (code < 400 || code >= 500)
        return 0;
    int grey = contains_ci(text, "greylist") || contains_ci(text, "graylist") ||
               contains_ci(text, "greylisted") ||
               (enh && strcmp(enh, "4.2.0") == 0 && (code == 450 || code == 451)) ||
               (enh && strcmp(enh, "4.7.1") == 0 &&
                (contains_ci(text, "grey") || contains_ci(text, "gray")));
    uint64_t wait = named_wait(text);
    if (wait) {
        if (wait > c->greylist_max_wait)
            wait = c->greylist_max_wait;
        return wait;
    }
    return grey ? c->greylist_retry : 0;
}

int queue_hard_bounce(unsigned code, const char *enh)
{
    if (code < 500 || enh == NULL || enh[0] != '5')
        return 0;
    /* 5.1.x: the address (unknown user, bad domain, moved...); 5.2.1: disabled */
    return strncmp(enh, "5.1.", 4) == 0 || strcmp(enh, "5.2.1") == 0;
}

int queue_soft_bounce(unsigned code, const char *enh, const char *text)
{
    if (code < 400 || code >= 500 || enh == NULL)
        return 0;
    if (strncmp(enh, "4.2.", 4) != 0 && strncmp(enh, "4.1.", 4) != 0)
        return 0;
    return !(strcmp(enh, "4.2.0") == 0 || contains_ci(text, "greylist") ||
             contains_ci(text, "graylist"));
}

int queue_destination_failure(unsigned code, const char *enh)
{
    if (code == 421)
        return 1;
    if (code < 400 || code >= 500 || enh == NULL)
        return 0;
    return strncmp(enh, "4.4.", 4) == 0 || strcmp(enh, "4.3.2") == 0 || strcmp(enh, "4.7.5") == 0;
}

size_t queue_store_reserve(const queue_t *q)
{
    /* room kept for the writes that free space: results and deletions */
    size_t r = q->conf.map_max / 20;
    if (r < (64u << 10))
        r = 64u << 10;
    if (r > (64u << 20))
        r = 64u << 20;
    return r;
}
