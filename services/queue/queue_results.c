/*
 * queue_results: what an attempt's outcome does to a message, applied in
 * grouped, synced write transactions. Delivered recipients are done;
 * bounced ones are done, with a report to the sender where NOTIFY asks for
 * it, and a suppression when the bounce proves the address bad; deferred
 * ones wait: the wait a greylisting reply asks for, or the backoff, until
 * max_age turns them into bounces; soft bounces of the same address that
 * persist become hard. A finished message loses its body at once. Results
 * of one loop turn share one transaction with that turn's new messages
 * (queue_write.c); nothing here touches memory the transaction could roll
 * back, so a map-full retry replays cleanly.
 */
#include "queue.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    O_NONE = 0,
    O_DELIVERED,
    O_BOUNCED,     /* by the remote server */
    O_DEFERRED,
    O_EXPIRED,     /* deferred past max_age */
    O_SOFT_HARD,   /* soft bounces that persisted */
    O_SUPPRESSED,
    O_OPERATOR,    /* bounced by an operator */
    O_THROTTLED,   /* router held it back; not an attempt */
} outcome_t;

typedef struct results_state {
    result_t *head, **tail;
    result_t *taken;     /* detached for this turn's write */
    loop_timer_t retry;  /* running while a failed write waits to be tried again */
    uint64_t retry_ms;
} results_state_t;

static results_state_t *rs_of(queue_t *q)
{
    return (results_state_t *)q->results;
}

void queue_result_free(result_t *r)
{
    if (r == NULL)
        return;
    codec_free(&r->res_env);
    queue_record_free(&r->rec);
    queue_record_free(&r->dsn);
    for (size_t i = 0; i < r->nsupp; i++)
        PB_FN(suppression, free_unpacked)(r->supp[i], NULL);
    free(r->supp);
    free(r->outcomes);
    queue_job_free(r->job);
    free(r);
}

void queue_results_push(queue_t *q, result_t *r)
{
    results_state_t *rs = rs_of(q);
    *rs->tail = r;
    rs->tail = &r->next;
    if (!loop_timer_active(&rs->retry))
        queue_write_results_soon(q);
}

/* ---- applying one result to its record (inside the transaction) ---- */

/* The delivery result a REMOTE result carries; NULL when none came. */
static const PB(DeliveryResult) * delivery_of(const result_t *r)
{
    return r->res_env ? r->res_env->delivery_result : NULL;
}

static const PB(DeliveryRecipientResult) * remote_of(const result_t *r, uint32_t idx)
{
    const PB(DeliveryResult) *res = delivery_of(r);
    if (res == NULL)
        return NULL;
    for (size_t i = 0; i < res->n_recipients; i++)
        if (res->recipients[i]->index == idx)
            return res->recipients[i];
    return NULL;
}

static void set_reply(PB(QueueRecipientState) * st, unsigned code, const char *enh,
                      const char *text)
{
    if (st->last_reply)
        PB_FN(status, free_unpacked)(st->last_reply, NULL);
    st->last_reply = queue_status_new(code, enh, text);
}

/* Add a suppression for a bad address, kept on r for replication. */
static int add_suppression(queue_t *q, store_txn_t *txn, result_t *r, const char *tenant,
                           const PB(QueueRecipientState) * st, const char *reason, uint64_t now)
{
    PB(Suppression) e = PB_INIT(SUPPRESSION);
    e.tenant = (char *)tenant;
    e.address = st->address;
    e.reason = (char *)reason;
    e.reply = st->last_reply;
    e.created_at_ms = now;
    e.expires_at_ms = q->conf.suppression_ttl ? now + q->conf.suppression_ttl : 0;
    int rc = queue_suppress_put(q, txn, &e);
    if (rc != STORE_OK)
        return rc;
    /* a copy that outlives the record, for events and the other instances */
    size_t n = PB_FN(suppression, get_packed_size)(&e);
    uint8_t *buf = xmalloc(n ? n : 1);
    PB_FN(suppression, pack)(&e, buf);
    r->supp = xrealloc(r->supp, (r->nsupp + 1) * sizeof(*r->supp));
    r->supp[r->nsupp++] = PB_FN(suppression, unpack)(NULL, n, buf);
    free(buf);
    return STORE_OK;
}

static int apply_remote(queue_t *q, store_txn_t *txn, PB(QueueRecord) * rec, result_t *r,
                        size_t k, uint64_t now)
{
    uint32_t idx = r->job->indexes[k];
    PB(QueueRecipientState) *st = rec->recipients[idx];
    const char *tenant = rec->envelope->tenant ? rec->envelope->tenant : "";
    const PB(DeliveryResult) *res = delivery_of(r);
    const PB(DeliveryRecipientResult) *rr = remote_of(r, idx);
    int outcome = rr ? rr->outcome : PB_ENUM(DELIVERY_RECIPIENT_RESULT__OUTCOME__DEFERRED);
    if (res && res->not_attempted) {
        /* held back by router (shaping, endpoints down): no attempt was made and
         * none is counted, but the recipient is waiting and says why */
        st->next_attempt_ms = now + (res->retry_after_ms ? res->retry_after_ms : 1000);
        if (rr && rr->reply && rr->reply->code)
            set_reply(st, rr->reply->code, rr->reply->enhanced, rr->reply->text);
        queue_set_str(&st->state, "deferred");
        r->dest_failed = -1;
        return O_THROTTLED;
    }
    if (rr && rr->reply)
        set_reply(st, rr->reply->code, rr->reply->enhanced, rr->reply->text);
    else
        set_reply(st, 451, "4.4.7", r->fail_text ? r->fail_text : "no result for recipient");
    if (res && res->remote_host && res->remote_host[0])
        queue_set_str(&st->last_remote, res->remote_host);
    st->attempts++;
    unsigned code = st->last_reply->code;
    const char *enh = st->last_reply->enhanced;
    const char *text = st->last_reply->text;

    /* does the destination itself work? (for holding a failing domain) Only
     * a result from delivery says so: a lost job is our failure, not theirs */
    if (rr == NULL) {
        /* unknown */
    } else if (outcome != PB_ENUM(DELIVERY_RECIPIENT_RESULT__OUTCOME__DEFERRED) ||
               !queue_destination_failure(code, enh)) {
        r->dest_failed = 0;
    } else if (r->dest_failed != 0) {
        r->dest_failed = 1;
        snprintf(r->dest_error, sizeof(r->dest_error), "%u %s %s", code, enh, text);
    }

    if (outcome == PB_ENUM(DELIVERY_RECIPIENT_RESULT__OUTCOME__DELIVERED)) {
        queue_set_str(&st->state, "delivered");
        queue_soft_clear(q, txn, tenant, st->address);
        return O_DELIVERED;
    }
    if (outcome == PB_ENUM(DELIVERY_RECIPIENT_RESULT__OUTCOME__BOUNCED)) {
        queue_set_str(&st->state, "bounced");
        if (queue_hard_bounce(code, enh) &&
            add_suppression(q, txn, r, tenant, st, "hard-bounce", now) != STORE_OK)
            return -1;
        return O_BOUNCED;
    }
    if (queue_soft_bounce(code, enh, text) &&
        queue_soft_count(q, txn, tenant, st->address, now)) {
        queue_set_str(&st->state, "bounced");
        if (add_suppression(q, txn, r, tenant, st, "soft-bounce", now) != STORE_OK)
            return -1;
        return O_SOFT_HARD;
    }
    if (now - rec->envelope->received_at_ms >= q->conf.max_age) {
        queue_set_str(&st->state, "bounced");
        return O_EXPIRED;
    }
    uint64_t wait = queue_reply_wait(&q->conf, code, enh, text);
    queue_set_str(&st->state, "deferred");
    st->next_attempt_ms = now + (wait ? wait : queue_backoff(&q->conf, st->attempts,
                                                             id_random64()));
    return O_DEFERRED;
}

static int apply_one(queue_t *q, store_txn_t *txn, result_t *r, uint64_t now)
{
    PB(QueueRecord) *rec = queue_store_get(q, txn, r->job->id);
    if (rec == NULL)
        return 0; /* deleted by an operator meanwhile */
    size_t n = r->job->n;
    r->outcomes = xcalloc(n ? n : 1, sizeof(int));
    dsn_rcpt_t *dsn = xcalloc(n ? n : 1, sizeof(*dsn));
    size_t ndsn = 0;
    for (size_t k = 0; k < n; k++) {
        uint32_t idx = r->job->indexes[k];
        if (idx >= rec->n_recipients || !queue_rcpt_pending(rec->recipients[idx]))
            continue; /* already final: a late duplicate result */
        PB(QueueRecipientState) *st = rec->recipients[idx];
        int o;
        switch (r->kind) {
        case RESULT_SUPPRESSED:
            queue_set_str(&st->state, "suppressed");
            set_reply(st, 550, "5.7.1", "recipient is on the suppression list");
            o = O_SUPPRESSED;
            break;
        case RESULT_OPERATOR:
            queue_set_str(&st->state, "bounced");
            set_reply(st, 554, "5.0.0", "message bounced by the relay operator");
            o = O_OPERATOR;
            break;
        default:
            o = apply_remote(q, txn, rec, r, k, now);
            break;
        }
        if (o < 0) {
            free(dsn);
            queue_record_free(&rec);
            return -1;
        }
        r->outcomes[k] = o;
        const PB(QueueRecipient) *orig =
            idx < rec->envelope->n_recipients ? rec->envelope->recipients[idx] : NULL;
        const char *action = NULL;
        if (o == O_BOUNCED || o == O_EXPIRED || o == O_SOFT_HARD || o == O_OPERATOR)
            action = "failed";
        else if (o == O_DELIVERED)
            action = "relayed";
        if (action && queue_dsn_wanted(orig, action)) {
            dsn[ndsn].state = st;
            dsn[ndsn].orig = orig;
            dsn[ndsn].action = action;
            ndsn++;
        }
    }
    int finished = queue_record_finished(rec);
    store_val_t body = {NULL, 0};
    int have_body = store_get(txn, q->db_body, r->job->id, strlen(r->job->id), &body) == STORE_OK;
    if (ndsn > 0) {
        char *text = NULL;
        size_t len = 0;
        r->dsn = queue_dsn_build(q, rec, dsn, ndsn, have_body ? body.data : NULL,
                                 have_body ? body.len : 0, &text, &len);
        if (r->dsn && queue_store_message(q, txn, r->dsn, text, len) != STORE_OK) {
            free(text);
            free(dsn);
            queue_record_free(&rec);
            return -1;
        }
        free(text);
    }
    free(dsn);
    if (finished && rec->done_at_ms == 0) {
        rec->done_at_ms = now;
        if (have_body && store_del(txn, q->db_body, r->job->id, strlen(r->job->id)) != STORE_OK) {
            queue_record_free(&rec);
            return -1;
        }
        r->finished_now = 1;
    }
    int rc = r->finished_now ? queue_store_put_finishing(q, txn, rec)
                             : queue_store_put(q, txn, rec);
    r->rec = rec;
    return rc == STORE_OK ? 0 : -1;
}

size_t queue_results_take(queue_t *q)
{
    results_state_t *rs = rs_of(q);
    if (rs->head == NULL || loop_timer_active(&rs->retry))
        return 0;
    /* detached, so that results pushed before it is done stay for the next turn */
    rs->taken = rs->head;
    rs->head = NULL;
    rs->tail = &rs->head;
    size_t n = 0;
    for (result_t *r = rs->taken; r; r = r->next)
        n++;
    return n;
}

int queue_results_write(queue_t *q, store_txn_t *txn)
{
    uint64_t now = clock_wall_ms();
    for (result_t *r = rs_of(q)->taken; r; r = r->next) {
        /* a retried transaction starts this result over */
        queue_record_free(&r->rec);
        queue_record_free(&r->dsn);
        for (size_t i = 0; i < r->nsupp; i++)
            PB_FN(suppression, free_unpacked)(r->supp[i], NULL);
        r->nsupp = 0;
        free(r->outcomes);
        r->outcomes = NULL;
        r->dest_failed = -1;
        r->dest_error[0] = '\0';
        r->finished_now = 0;
        if (apply_one(q, txn, r, now) < 0)
            return STORE_ERROR;
    }
    return 0;
}

/* ---- after the commit: events, counters, destinations, the schedule ---- */

static void emit(queue_t *q, const char *type, const PB(QueueRecord) * rec,
                 const PB(QueueRecipientState) * st, uint32_t idx, PB(Attr) * *attrs,
                 size_t nattrs)
{
    PB(Event) ev = PB_INIT(EVENT);
    ev.type = (char *)type;
    ev.message_id = rec->envelope->message_id;
    ev.sender = rec->envelope->mail_from;
    ev.tenant = rec->envelope->tenant;
    if (st) {
        ev.recipient = st->address;
        ev.rcpt_index = idx;
        ev.reply = st->last_reply;
        ev.attempt = st->attempts;
    }
    ev.attrs = attrs;
    ev.n_attrs = nattrs;
    service_event(q->svc, &ev);
}

static void after_commit(queue_t *q, result_t *r, uint64_t now)
{
    PB(QueueRecord) *rec = r->rec;
    if (rec) {
        for (size_t k = 0; k < r->job->n && r->outcomes; k++) {
            uint32_t idx = r->job->indexes[k];
            if (idx >= rec->n_recipients)
                continue;
            const PB(QueueRecipientState) *st = rec->recipients[idx];
            switch (r->outcomes[k]) {
            case O_DELIVERED:
                q->delivered++;
                break;
            case O_DEFERRED:
                q->deferred++;
                break;
            case O_BOUNCED:
                q->bounced++;
                break;
            case O_EXPIRED:
                q->expired++;
                log_info("event=expired msg=%s rcpt=%u attempts=%u", r->job->id, idx,
                         st->attempts);
                emit(q, "expired", rec, st, idx, NULL, 0);
                break;
            case O_SOFT_HARD: {
                q->bounced++;
                PB(Attr) a = PB_INIT(ATTR);
                a.key = "reason", a.value = "soft bounces persisted";
                PB(Attr) *ap = &a;
                emit(q, "bounced", rec, st, idx, &ap, 1);
                break;
            }
            case O_OPERATOR: {
                q->bounced++;
                PB(Attr) a = PB_INIT(ATTR);
                a.key = "reason", a.value = "operator";
                PB(Attr) *ap = &a;
                emit(q, "bounced", rec, st, idx, &ap, 1);
                break;
            }
            case O_SUPPRESSED:
                q->suppressed++;
                log_info("event=suppressed msg=%s rcpt=%u address=%s", r->job->id, idx,
                         st->address);
                emit(q, "suppressed", rec, st, idx, NULL, 0);
                break;
            default:
                break;
            }
        }
    }
    for (size_t i = 0; i < r->nsupp; i++) {
        PB(Suppression) *e = r->supp[i];
        log_info("event=suppression_added tenant=%s address=%s reason=%s", e->tenant, e->address,
                 e->reason);
        PB(Attr) a = PB_INIT(ATTR);
        a.key = "reason", a.value = e->reason;
        PB(Attr) *ap = &a;
        PB(Event) ev = PB_INIT(EVENT);
        ev.type = "suppression_added";
        ev.message_id = r->job->id;
        ev.recipient = e->address;
        ev.tenant = e->tenant;
        ev.reply = e->reply;
        ev.attrs = &ap;
        ev.n_attrs = 1;
        service_event(q->svc, &ev);
        queue_suppress_replicate(q, e);
    }
    if (r->dsn && rec) {
        q->dsn_sent++;
        PB(Attr) a[2] = {PB_INIT(ATTR), PB_INIT(ATTR)};
        a[0].key = "report_id", a[0].value = r->dsn->envelope->message_id;
        a[1].key = "to", a[1].value = rec->envelope->mail_from;
        PB(Attr) *ap[2] = {&a[0], &a[1]};
        emit(q, "dsn_queued", rec, NULL, 0, ap, 2);
    }
    if (r->kind == RESULT_REMOTE && r->job->domain[0] && r->dest_failed >= 0)
        queue_domain_result(q, r->job->domain, r->dest_failed,
                            r->dest_failed ? r->dest_error : NULL, now);
}

/* Put a list back in front of what was pushed since it was taken. */
static void requeue_front(results_state_t *rs, result_t *list)
{
    result_t *last = list;
    while (last->next)
        last = last->next;
    last->next = rs->head;
    if (rs->head == NULL)
        rs->tail = &last->next;
    rs->head = list;
}

static void retry_due(loop_t *loop, void *arg)
{
    (void)loop;
    queue_write_soon(arg);
}

void queue_results_done(queue_t *q, int rc)
{
    results_state_t *rs = rs_of(q);
    result_t *r = rs->taken;
    rs->taken = NULL;
    if (r == NULL)
        return;
    if (rc != STORE_OK) {
        /* keep every result and write it later: trying the messages again
         * instead would deliver them twice */
        rs->retry_ms = rs->retry_ms ? (rs->retry_ms * 2 > 30000 ? 30000 : rs->retry_ms * 2)
                                    : 500;
        log_error("event=results_write_failed err=\"%s\" retry_in_ms=%llu", store_strerror(rc),
                  (unsigned long long)rs->retry_ms);
        requeue_front(rs, r);
        loop_timer_start(q->svc->loop, &rs->retry, rs->retry_ms);
        return;
    }
    rs->retry_ms = 0;
    uint64_t now = clock_wall_ms();
    while (r) {
        result_t *next = r->next;
        after_commit(q, r, now);
        if (r->finished_now)
            queue_done_later(q, r->job->id, r->rec->done_at_ms);
        queue_sched_result_done(q, r, 1, now);
        queue_result_free(r);
        r = next;
    }
}

void queue_results_init(queue_t *q)
{
    results_state_t *rs = xcalloc(1, sizeof(*rs));
    rs->tail = &rs->head;
    loop_timer_init(&rs->retry, retry_due, q);
    q->results = rs;
}

void queue_results_fini(queue_t *q)
{
    results_state_t *rs = rs_of(q);
    if (rs == NULL)
        return;
    loop_timer_stop(q->svc->loop, &rs->retry);
    if (rs->taken)
        requeue_front(rs, rs->taken);
    while (rs->head) {
        result_t *r = rs->head;
        rs->head = r->next;
        queue_result_free(r);
    }
    free(rs);
    q->results = NULL;
}
