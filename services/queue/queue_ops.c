/*
 * queue_ops: what operators do to the queue: list messages by id, domain,
 * tenant, recipient, state or age; hold, release, retry, delete or bounce
 * them; suspend and resume a destination domain. Selection runs on the
 * in-memory index (no store scan), and each action is one synced write, so
 * looking at a busy queue never stalls delivery.
 */
#include "queue.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LIST_DEFAULT   100
#define LIST_MAX       10000
#define ACTION_MAX     100000

static size_t select_ids(queue_t *q, const PB(QueueSelect) * sel, size_t max,
                         char (**ids)[ID_BUF_SIZE], size_t *matched)
{
    *ids = xmalloc((max ? max : 1) * sizeof(**ids));
    return queue_index_select(q, sel, *ids, max, matched);
}

/* ---- list ---- */

static void summary_fill(PB(QueueMessageSummary) * m, const PB(QueueRecord) * rec, char **doms,
                         size_t *ndoms)
{
    const PB(QueueEnvelope) *e = rec->envelope;
    m->message_id = e->message_id;
    m->mail_from = e->mail_from;
    m->tenant = e->tenant;
    m->received_at_ms = e->received_at_ms;
    m->size = rec->body_size;
    m->recipients = (uint32_t)rec->n_recipients;
    m->state = rec->done_at_ms ? "done" : rec->held ? "held" : "active";
    m->next_attempt_ms = queue_record_next_due(rec);
    *ndoms = 0;
    for (size_t i = 0; i < rec->n_recipients; i++) {
        const PB(QueueRecipientState) *st = rec->recipients[i];
        if (!queue_rcpt_pending(st))
            continue;
        m->pending++;
        if (st->last_reply && st->last_reply->code >= 400)
            m->last_error = st->last_reply->text;
        const char *d = queue_rcpt_domain(st->address);
        size_t k;
        for (k = 0; k < *ndoms; k++)
            if (strcmp(doms[k], d) == 0)
                break;
        if (k == *ndoms)
            doms[(*ndoms)++] = (char *)d;
    }
    m->domains = doms;
    m->n_domains = *ndoms;
}

void queue_on_list(queue_t *q, bus_msg_t *msg)
{
    PB(QueueSelect) *sel = msg->env->queue_list->select;
    PB(QueueSelect) empty = PB_INIT(QUEUE_SELECT);
    if (sel == NULL)
        sel = &empty;
    size_t limit = sel->limit ? sel->limit : LIST_DEFAULT;
    if (limit > LIST_MAX)
        limit = LIST_MAX;
    char(*ids)[ID_BUF_SIZE];
    size_t matched;
    size_t n = select_ids(q, sel, limit, &ids, &matched);

    PB(QueueMessageSummary) *sums = xcalloc(n ? n : 1, sizeof(*sums));
    PB(QueueMessageSummary) **sp = xcalloc(n ? n : 1, sizeof(*sp));
    PB(QueueRecord) **recs = xcalloc(n ? n : 1, sizeof(*recs));
    char ***doms = xcalloc(n ? n : 1, sizeof(*doms));
    size_t got = 0;
    store_txn_t *txn = store_begin(q->store, 0);
    for (size_t i = 0; txn && i < n; i++) {
        PB(QueueRecord) *rec = queue_store_get(q, txn, ids[i]);
        if (rec == NULL)
            continue;
        PB(QueueMessageSummary) init = PB_INIT(QUEUE_MESSAGE_SUMMARY);
        sums[got] = init;
        doms[got] = xcalloc(rec->n_recipients ? rec->n_recipients : 1, sizeof(char *));
        size_t nd;
        summary_fill(&sums[got], rec, doms[got], &nd);
        recs[got] = rec;
        sp[got] = &sums[got];
        got++;
    }
    PB(QueueListReply) r = PB_INIT(QUEUE_LIST_REPLY);
    r.messages = sp;
    r.n_messages = got;
    r.matched = (uint32_t)matched;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(QUEUE_LIST_REPLY);
    env.queue_list_reply = &r;
    bus_server_send(q->api, &msg->peer, msg->env->request_id, &env, NULL);
    for (size_t i = 0; i < got; i++) {
        free(doms[i]);
        queue_record_free(&recs[i]);
    }
    store_abort(&txn);
    free(doms);
    free(recs);
    free(sums);
    free(sp);
    free(ids);
}

/* ---- actions ---- */

typedef struct action_run {
    queue_t *q;
    int kind;
    char (*ids)[ID_BUF_SIZE];
    size_t n;
    PB(QueueRecord) **after;  /* records as written (NULL: deleted) */
    int *changed;
} action_run_t;

static int action_write(store_txn_t *txn, void *arg)
{
    action_run_t *a = arg;
    queue_t *q = a->q;
    uint64_t now = clock_wall_ms();
    for (size_t i = 0; i < a->n; i++) {
        queue_record_free(&a->after[i]);
        a->changed[i] = 0;
        PB(QueueRecord) *rec = queue_store_get(q, txn, a->ids[i]);
        if (rec == NULL || rec->done_at_ms) {
            queue_record_free(&rec);
            continue;
        }
        const char *id = a->ids[i];
        int rc = STORE_OK;
        switch (a->kind) {
        case PB_ENUM(QUEUE_ACTION__KIND__HOLD):
            a->changed[i] = !rec->held;
            rec->held = 1;
            break;
        case PB_ENUM(QUEUE_ACTION__KIND__RELEASE):
            a->changed[i] = rec->held;
            rec->held = 0;
            break;
        case PB_ENUM(QUEUE_ACTION__KIND__RETRY):
            for (size_t k = 0; k < rec->n_recipients; k++) {
                PB(QueueRecipientState) *st = rec->recipients[k];
                if (queue_rcpt_pending(st)) {
                    st->next_attempt_ms = now;
                    a->changed[i] = 1;
                }
            }
            break;
        case PB_ENUM(QUEUE_ACTION__KIND__DELETE):
            rc = store_del(txn, q->db_msg, id, strlen(id));
            if (rc == STORE_OK) {
                int b = store_del(txn, q->db_body, id, strlen(id));
                rc = b == STORE_NOTFOUND ? STORE_OK : b;
            }
            a->changed[i] = 1;
            queue_record_free(&rec);
            if (rc != STORE_OK)
                return rc;
            continue;
        default:
            break;
        }
        rc = queue_store_put(q, txn, rec);
        a->after[i] = rec;
        if (rc != STORE_OK)
            return rc;
    }
    return 0;
}

/* BOUNCE goes through the results path: the same reports and events as a
 * remote bounce. */
static size_t bounce_selected(queue_t *q, char (*ids)[ID_BUF_SIZE], size_t n, int *changed)
{
    size_t done = 0;
    store_txn_t *txn = store_begin(q->store, 0);
    for (size_t i = 0; txn && i < n; i++) {
        PB(QueueRecord) *rec = queue_store_get(q, txn, ids[i]);
        if (rec == NULL || rec->done_at_ms) {
            queue_record_free(&rec);
            continue;
        }
        uint32_t *idx = xcalloc(rec->n_recipients ? rec->n_recipients : 1, sizeof(*idx));
        size_t k = 0;
        for (size_t j = 0; j < rec->n_recipients; j++)
            if (queue_rcpt_pending(rec->recipients[j]))
                idx[k++] = (uint32_t)j;
        if (k > 0) {
            result_t *r = xcalloc(1, sizeof(*r));
            r->kind = RESULT_OPERATOR;
            r->job = xcalloc(1, sizeof(*r->job));
            r->job->q = q;
            sx_strlcpy(r->job->id, ids[i], sizeof(r->job->id));
            r->job->indexes = idx;
            r->job->n = k;
            queue_results_push(q, r);
            changed[i] = 1;
            done++;
        } else {
            free(idx);
        }
        queue_record_free(&rec);
    }
    store_abort(&txn);
    return done;
}

static const char *kind_name(int kind)
{
    switch (kind) {
    case PB_ENUM(QUEUE_ACTION__KIND__HOLD):
        return "hold";
    case PB_ENUM(QUEUE_ACTION__KIND__RELEASE):
        return "release";
    case PB_ENUM(QUEUE_ACTION__KIND__RETRY):
        return "retry";
    case PB_ENUM(QUEUE_ACTION__KIND__DELETE):
        return "delete";
    case PB_ENUM(QUEUE_ACTION__KIND__BOUNCE):
        return "bounce";
    }
    return "?";
}

void queue_on_action(queue_t *q, bus_msg_t *msg)
{
    PB(QueueAction) *req = msg->env->queue_action;
    uint64_t rid = msg->env->request_id;
    PB(QueueSelect) *sel = req->select;
    if (sel == NULL || (sel->n_message_ids == 0 && !sel->domain[0] && !sel->tenant[0] &&
                        !sel->older_than_s && !sel->state[0] && !sel->recipient[0])) {
        bus_server_error(q->api, &msg->peer, rid, 400, "",
                         "an action needs message ids or at least one condition");
        return;
    }
    char(*ids)[ID_BUF_SIZE];
    size_t matched;
    size_t n = select_ids(q, sel, ACTION_MAX, &ids, &matched);
    size_t affected = 0;
    int *changed = xcalloc(n ? n : 1, sizeof(int));
    if (req->kind == PB_ENUM(QUEUE_ACTION__KIND__BOUNCE)) {
        affected = bounce_selected(q, ids, n, changed);
    } else {
        action_run_t a = {.q = q, .kind = req->kind, .ids = ids, .n = n,
                          .after = xcalloc(n ? n : 1, sizeof(PB(QueueRecord) *)),
                          .changed = changed};
        int rc = store_write(q->store, action_write, &a);
        if (rc != STORE_OK) {
            for (size_t i = 0; i < n; i++)
                queue_record_free(&a.after[i]);
            free(a.after);
            free(changed);
            free(ids);
            bus_server_error(q->api, &msg->peer, rid, 500, "", "the store refused the change: %s",
                             store_strerror(rc));
            return;
        }
        uint64_t now = clock_wall_ms();
        if (req->kind == PB_ENUM(QUEUE_ACTION__KIND__RETRY) && sel->domain[0]) {
            /* an operator's retry overrides the hold that failures put on the
             * domain (not a suspension, which only resume lifts) */
            queue_domain_t *d = queue_domain_get(q, sel->domain, 0);
            if (d) {
                d->held_until = 0;
                d->failures = 0;
            }
        }
        for (size_t i = 0; i < n; i++) {
            if (!changed[i])
                continue;
            affected++;
            if (req->kind == PB_ENUM(QUEUE_ACTION__KIND__DELETE)) {
                queue_index_drop(q, ids[i]);
                PB(Event) ev = PB_INIT(EVENT);
                ev.type = "deleted";
                ev.message_id = ids[i];
                service_event(q->svc, &ev);
                continue;
            }
            if (a.after[i] == NULL)
                continue;
            queue_index_put(q, a.after[i]);
            if (!a.after[i]->held && !queue_sched_is_inflight(q, ids[i]))
                queue_sched_add(q, ids[i],
                                req->kind == PB_ENUM(QUEUE_ACTION__KIND__RETRY)
                                    ? now
                                    : queue_record_next_due(a.after[i]),
                                NULL);
        }
        for (size_t i = 0; i < n; i++)
            queue_record_free(&a.after[i]);
        free(a.after);
    }
    log_info("event=operator_action action=%s selected=%zu affected=%zu", kind_name(req->kind),
             n, affected);
    PB(QueueActionReply) r = PB_INIT(QUEUE_ACTION_REPLY);
    r.affected = (uint32_t)affected;
    char **idp = xcalloc(n ? n : 1, sizeof(char *));
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (changed[i])
            idp[k++] = ids[i];
    r.message_ids = idp;
    r.n_message_ids = k;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(QUEUE_ACTION_REPLY);
    env.queue_action_reply = &r;
    bus_server_send(q->api, &msg->peer, rid, &env, NULL);
    free(idp);
    free(changed);
    free(ids);
}

/* ---- domain suspension ---- */

typedef struct dom_write {
    queue_t *q;
    const char *domain;
    uint64_t until;
} dom_write_t;

static int suspend_write(store_txn_t *txn, void *arg)
{
    dom_write_t *d = arg;
    if (d->until == 0) {
        int rc = store_del(txn, d->q->db_dom, d->domain, strlen(d->domain));
        return rc == STORE_NOTFOUND ? 0 : rc;
    }
    return store_put(txn, d->q->db_dom, d->domain, strlen(d->domain), &d->until,
                     sizeof(d->until));
}

void queue_on_suspend(queue_t *q, bus_msg_t *msg)
{
    PB(QueueDomainSuspend) *req = msg->env->queue_domain_suspend;
    uint64_t rid = msg->env->request_id;
    char domain[256];
    size_t dl = strlen(req->domain);
    if (dl == 0 || dl >= sizeof(domain) || strpbrk(req->domain, " @<>\r\n")) {
        bus_server_error(q->api, &msg->peer, rid, 400, "", "\"%s\" is not a domain",
                         req->domain);
        return;
    }
    for (size_t i = 0; i <= dl; i++)
        domain[i] = (char)(req->domain[i] >= 'A' && req->domain[i] <= 'Z' ? req->domain[i] + 32
                                                                          : req->domain[i]);
    uint64_t now = clock_wall_ms();
    uint64_t until = 0;
    if (req->suspend)
        until = req->seconds ? now + (uint64_t)req->seconds * 1000 : UINT64_MAX;
    dom_write_t dw = {.q = q, .domain = domain, .until = until};
    if (store_write(q->store, suspend_write, &dw) != STORE_OK) {
        bus_server_error(q->api, &msg->peer, rid, 500, "", "cannot record the suspension");
        return;
    }
    queue_domain_t *d = queue_domain_get(q, domain, 1);
    d->suspended_until = until;
    log_info("event=domain_%s domain=%s until=%llu", req->suspend ? "suspended" : "resumed",
             domain, (unsigned long long)until);
    if (!req->suspend) {
        /* what waited for the domain goes now */
        PB(QueueSelect) sel = PB_INIT(QUEUE_SELECT);
        sel.domain = domain;
        char(*ids)[ID_BUF_SIZE];
        size_t matched;
        size_t n = select_ids(q, &sel, ACTION_MAX, &ids, &matched);
        for (size_t i = 0; i < n; i++)
            if (!queue_index_held(q, ids[i]) && !queue_sched_is_inflight(q, ids[i]))
                queue_sched_add(q, ids[i], now, NULL);
        free(ids);
    }
    PB(QueueDomainSuspendReply) r = PB_INIT(QUEUE_DOMAIN_SUSPEND_REPLY);
    r.domain = domain;
    r.suspended = req->suspend;
    r.until_ms = until == UINT64_MAX ? 0 : until;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(QUEUE_DOMAIN_SUSPEND_REPLY);
    env.queue_domain_suspend_reply = &r;
    bus_server_send(q->api, &msg->peer, rid, &env, NULL);
}

static int load_one(const store_val_t *key, const store_val_t *val, void *arg)
{
    queue_t *q = arg;
    char domain[256];
    if (key->len == 0 || key->len >= sizeof(domain) || val->len != sizeof(uint64_t))
        return 0;
    memcpy(domain, key->data, key->len);
    domain[key->len] = '\0';
    uint64_t until;
    memcpy(&until, val->data, sizeof(until));
    queue_domain_get(q, domain, 1)->suspended_until = until;
    return 0;
}

int queue_ops_load(queue_t *q)
{
    store_txn_t *txn = store_begin(q->store, 0);
    if (txn == NULL)
        return -1;
    long n = store_scan(txn, q->db_dom, NULL, 0, NULL, 0, load_one, q);
    store_abort(&txn);
    return n < 0 ? -1 : 0;
}
