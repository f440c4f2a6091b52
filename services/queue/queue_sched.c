/*
 * queue_sched: deciding when each recipient is tried and acting on results.
 *
 * The durable truth is the record of each message (per-recipient state and
 * next attempt time). In memory we keep a min-heap of (due time, message id)
 * rebuilt from the records at start, a table of messages handed to router,
 * and a FIFO of finished messages kept for `queue show` until retention ends.
 * A tick pops due messages, groups their due recipients by domain into
 * DeliveryJobs for router, and marks them in flight; results are applied in
 * grouped, synced write transactions. Nothing here blocks acceptance: a
 * backlog only makes the heap bigger.
 */
#include "queue.h"
#include "ipc/pending.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCHED_TICK_MAX_MS    1000
#define SCHED_ROUTER_WAIT_MS 2000  /* retry dispatch this soon when no router answers */
#define SCHED_DISPATCH_BATCH 256   /* messages per tick, so a backlog cannot stall the loop */
#define SCHED_MAX_DOMAINS    64    /* jobs per message per tick */
#define DONE_SWEEP_MS        10000

typedef struct sched_entry {
    uint64_t due;
    char id[ID_BUF_SIZE];
} sched_entry_t;

typedef struct inflight {
    char id[ID_BUF_SIZE];
    unsigned jobs;
    struct inflight *next;
} inflight_t;

typedef struct job_ctx {
    queue_t *q;
    char id[ID_BUF_SIZE];
    uint32_t *indexes;
    size_t n;
} job_ctx_t;

typedef struct result {
    job_ctx_t *job;
    PB(DeliveryResult) *res;   /* NULL: no result (timeout) */
    const char *fail_text;
    /* filled by the write */
    int finished;
    uint64_t next_due;
    struct result *next;
} result_t;

typedef struct done_entry {
    uint64_t done_at;
    char id[ID_BUF_SIZE];
    struct done_entry *next;
} done_entry_t;

struct queue_sched {
    sched_entry_t *heap;
    size_t len, cap;
    inflight_t **inflight;     /* hash buckets */
    size_t inflight_buckets;
    size_t inflight_count;
    uint64_t job_seq;
    loop_timer_t tick;
    result_t *results, **results_tail;
    loop_timer_t results_timer;
    done_entry_t *done_head, *done_tail;
    loop_timer_t done_sweep;
};

/* ---- heap ---- */

static void heap_swap(sched_entry_t *a, sched_entry_t *b)
{
    sched_entry_t t = *a;
    *a = *b;
    *b = t;
}

static void heap_push(queue_sched_t *s, uint64_t due, const char *id)
{
    if (s->len == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1024;
        s->heap = xrealloc(s->heap, s->cap * sizeof(*s->heap));
    }
    size_t i = s->len++;
    s->heap[i].due = due;
    sx_strlcpy(s->heap[i].id, id, sizeof(s->heap[i].id));
    while (i > 0 && s->heap[(i - 1) / 2].due > s->heap[i].due) {
        heap_swap(&s->heap[(i - 1) / 2], &s->heap[i]);
        i = (i - 1) / 2;
    }
}

static sched_entry_t heap_pop(queue_sched_t *s)
{
    sched_entry_t top = s->heap[0];
    s->heap[0] = s->heap[--s->len];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < s->len && s->heap[l].due < s->heap[m].due)
            m = l;
        if (r < s->len && s->heap[r].due < s->heap[m].due)
            m = r;
        if (m == i)
            break;
        heap_swap(&s->heap[m], &s->heap[i]);
        i = m;
    }
    return top;
}

/* ---- in-flight table ---- */

static size_t id_hash(const char *id, size_t buckets)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = id; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return (size_t)(h % buckets);
}

static inflight_t *inflight_get(queue_sched_t *s, const char *id)
{
    for (inflight_t *f = s->inflight[id_hash(id, s->inflight_buckets)]; f; f = f->next)
        if (strcmp(f->id, id) == 0)
            return f;
    return NULL;
}

static void inflight_add(queue_sched_t *s, const char *id, unsigned jobs)
{
    inflight_t *f = xcalloc(1, sizeof(*f));
    sx_strlcpy(f->id, id, sizeof(f->id));
    f->jobs = jobs;
    size_t b = id_hash(id, s->inflight_buckets);
    f->next = s->inflight[b];
    s->inflight[b] = f;
    s->inflight_count++;
}

/* One job of id finished; 1 when it was the last. */
static int inflight_done(queue_sched_t *s, const char *id)
{
    inflight_t **link = &s->inflight[id_hash(id, s->inflight_buckets)];
    for (inflight_t *f = *link; f; link = &f->next, f = f->next) {
        if (strcmp(f->id, id) != 0)
            continue;
        if (--f->jobs > 0)
            return 0;
        *link = f->next;
        free(f);
        s->inflight_count--;
        return 1;
    }
    return 1;
}

/* ---- scheduling ---- */

static void sched_arm(queue_t *q)
{
    queue_sched_t *s = q->sched;
    uint64_t delay = SCHED_TICK_MAX_MS;
    if (s->len > 0) {
        uint64_t now = clock_wall_ms();
        delay = s->heap[0].due <= now ? 0 : s->heap[0].due - now;
        if (delay > SCHED_TICK_MAX_MS)
            delay = SCHED_TICK_MAX_MS;
    }
    if (!loop_timer_active(&s->tick) || delay == 0)
        loop_timer_start(q->svc->loop, &s->tick, delay);
}

void queue_sched_add(queue_t *q, const char *id, uint64_t due_ms)
{
    heap_push(q->sched, due_ms, id);
    sched_arm(q);
}

size_t queue_sched_size(const queue_t *q)
{
    return q->sched->len;
}

size_t queue_sched_inflight(const queue_t *q)
{
    return q->sched->inflight_count;
}

static int rcpt_pending(const PB(QueueRecipientState) * r)
{
    return strcmp(r->state, "queued") == 0 || strcmp(r->state, "deferred") == 0;
}

static const char *rcpt_domain(const char *address)
{
    const char *at = strrchr(address, '@');
    return at ? at + 1 : "";
}

/* Earliest next attempt of the pending recipients, or 0 when none. */
static uint64_t record_next_due(const PB(QueueRecord) * rec)
{
    uint64_t due = 0;
    for (size_t i = 0; i < rec->n_recipients; i++) {
        const PB(QueueRecipientState) *r = rec->recipients[i];
        if (rcpt_pending(r) && (due == 0 || r->next_attempt_ms < due))
            due = r->next_attempt_ms ? r->next_attempt_ms : 1;
    }
    return due;
}

static void on_job_result(bus_msg_t *reply, bus_status_t status, void *arg);

static bus_client_t *pick_router(queue_t *q)
{
    for (size_t k = 0; k < q->nrouters; k++) {
        bus_client_t *c = q->routers[(q->next_router + k) % q->nrouters];
        if (bus_client_up(c)) {
            q->next_router = (q->next_router + k + 1) % q->nrouters;
            return c;
        }
    }
    /* none known up: try them in turn anyway, the send tells */
    return q->nrouters ? q->routers[q->next_router++ % q->nrouters] : NULL;
}

/* Send one job (recipients idx[0..n) of rec); 0 when a router took it. */
static int send_job(queue_t *q, const PB(QueueRecord) * rec, const store_val_t *body,
                    const uint32_t *idx, size_t n, const char *domain)
{
    queue_sched_t *s = q->sched;
    const PB(QueueEnvelope) *e = rec->envelope;
    char job_id[64];
    snprintf(job_id, sizeof(job_id), "%s.%llu", e->message_id, (unsigned long long)++s->job_seq);

    PB(DeliveryJob) job = PB_INIT(DELIVERY_JOB);
    job.job_id = job_id;
    job.message_id = e->message_id;
    job.mail_from = e->mail_from;
    job.tenant = e->tenant;
    job.domain = (char *)domain;
    job.smtputf8 = e->smtputf8;
    job.eightbit = e->eightbit;
    job.dsn_ret = e->dsn_ret;
    job.dsn_envid = e->dsn_envid;
    PB(DeliveryRecipient) *rcpts = xcalloc(n, sizeof(*rcpts));
    PB(DeliveryRecipient) **rp = xcalloc(n, sizeof(*rp));
    uint32_t attempt = 0;
    for (size_t i = 0; i < n; i++) {
        PB(DeliveryRecipient) init = PB_INIT(DELIVERY_RECIPIENT);
        rcpts[i] = init;
        rcpts[i].index = idx[i];
        rcpts[i].address = rec->recipients[idx[i]]->address;
        rp[i] = &rcpts[i];
        if (rec->recipients[idx[i]]->attempts > attempt)
            attempt = rec->recipients[idx[i]]->attempts;
    }
    job.recipients = rp;
    job.n_recipients = n;
    job.attempt = attempt + 1;

    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(DELIVERY_JOB);
    env.delivery_job = &job;

    job_ctx_t *ctx = xcalloc(1, sizeof(*ctx));
    ctx->q = q;
    sx_strlcpy(ctx->id, e->message_id, sizeof(ctx->id));
    ctx->indexes = xmemdup(idx, n * sizeof(*idx));
    ctx->n = n;

    int rc = -1;
    for (size_t tries = 0; tries < q->nrouters && rc < 0; tries++) {
        bus_client_t *router = pick_router(q);
        zmq_msg_t payload;
        zmq_msg_init_size(&payload, body->len);
        if (body->len)
            memcpy(zmq_msg_data(&payload), body->data, body->len);
        rc = bus_client_request(router, &env, &payload, q->conf.job_timeout, on_job_result, ctx,
                                NULL);
    }
    free(rcpts);
    free(rp);
    if (rc < 0) {
        free(ctx->indexes);
        free(ctx);
        return -1;
    }
    log_info("event=dispatched msg=%s job=%s domain=%s rcpts=%zu attempt=%u", e->message_id,
             job_id, domain, n, job.attempt);
    return 0;
}

/*
 * Dispatch the due recipients of one message. Returns the number of jobs
 * sent, 0 when nothing was due (due_out gets the next due time), -1 when
 * no router would take a job (the message is re-queued by the caller).
 */
static int dispatch_message(queue_t *q, store_txn_t *txn, const char *id, uint64_t now,
                            uint64_t *due_out)
{
    *due_out = 0;
    PB(QueueRecord) *rec = queue_store_get(q, txn, id);
    if (rec == NULL || rec->done_at_ms) {
        queue_record_free(&rec);
        return 0;
    }
    store_val_t body;
    if (store_get(txn, q->db_body, id, strlen(id), &body) != STORE_OK) {
        log_error("event=body_missing msg=%s", id);
        queue_record_free(&rec);
        return 0;
    }
    size_t n = rec->n_recipients;
    uint32_t *idx = xcalloc(n ? n : 1, sizeof(*idx));
    char *taken = xcalloc(n ? n : 1, 1);
    int jobs = 0, failed = 0;
    for (size_t i = 0; i < n && jobs < SCHED_MAX_DOMAINS; i++) {
        PB(QueueRecipientState) *r = rec->recipients[i];
        if (taken[i] || !rcpt_pending(r) || r->next_attempt_ms > now)
            continue;
        const char *domain = rcpt_domain(r->address);
        size_t k = 0;
        for (size_t j = i; j < n; j++) {
            PB(QueueRecipientState) *o = rec->recipients[j];
            if (!taken[j] && rcpt_pending(o) && o->next_attempt_ms <= now &&
                strcasecmp(rcpt_domain(o->address), domain) == 0) {
                idx[k++] = (uint32_t)j;
                taken[j] = 1;
            }
        }
        char dom[256];
        size_t dl = strlen(domain) < sizeof(dom) - 1 ? strlen(domain) : sizeof(dom) - 1;
        for (size_t c = 0; c < dl; c++)
            dom[c] = (char)tolower((unsigned char)domain[c]);
        dom[dl] = '\0';
        if (send_job(q, rec, &body, idx, k, dom) < 0) {
            failed = 1;
            break;
        }
        jobs++;
    }
    if (jobs > 0)
        inflight_add(q->sched, id, (unsigned)jobs);
    if (jobs == 0 && !failed)
        *due_out = record_next_due(rec);
    free(idx);
    free(taken);
    queue_record_free(&rec);
    return failed && jobs == 0 ? -1 : jobs;
}

static void sched_tick(loop_t *loop, void *arg)
{
    queue_t *q = arg;
    queue_sched_t *s = q->sched;
    uint64_t now = clock_wall_ms();
    store_txn_t *txn = NULL;
    int sent = 0;
    while (s->len > 0 && s->heap[0].due <= now && sent < SCHED_DISPATCH_BATCH &&
           s->inflight_count < (size_t)q->conf.max_inflight) {
        sched_entry_t e = heap_pop(s);
        if (inflight_get(s, e.id))
            continue; /* rescheduled when its results arrive */
        if (txn == NULL && (txn = store_begin(q->store, 0)) == NULL) {
            heap_push(s, e.due, e.id);
            break;
        }
        uint64_t due;
        int rc = dispatch_message(q, txn, e.id, now, &due);
        if (rc < 0) {
            log_warn("event=router_unavailable msg=%s retry_in_ms=%d", e.id,
                     SCHED_ROUTER_WAIT_MS);
            heap_push(s, now + SCHED_ROUTER_WAIT_MS, e.id);
            break;
        }
        if (rc == 0 && due)
            heap_push(s, due, e.id);
        sent++;
    }
    store_abort(&txn);
    (void)loop;
    sched_arm(q);
}

/* ---- results ---- */

static void results_schedule(queue_t *q)
{
    if (!loop_timer_active(&q->sched->results_timer))
        loop_timer_start(q->svc->loop, &q->sched->results_timer, 0);
}

static void on_job_result(bus_msg_t *reply, bus_status_t status, void *arg)
{
    job_ctx_t *ctx = arg;
    queue_t *q = ctx->q;
    result_t *r = xcalloc(1, sizeof(*r));
    r->job = ctx;
    if (status == BUS_OK && reply->env->body_case == PB_BODY(DELIVERY_RESULT)) {
        /* keep a copy: the envelope is freed when this callback returns */
        PB(DeliveryResult) *res = reply->env->delivery_result;
        size_t n = PB_FN(delivery_result, get_packed_size)(res);
        uint8_t *buf = xmalloc(n ? n : 1);
        PB_FN(delivery_result, pack)(res, buf);
        r->res = PB_FN(delivery_result, unpack)(NULL, n, buf);
        free(buf);
    } else if (status == BUS_OK && reply->env->body_case == PB_BODY(ERROR) &&
               reply->env->error->status) {
        r->fail_text = "router refused the job";
        log_warn("event=job_refused msg=%s err=\"%s\"", ctx->id,
                 reply->env->error->status->text);
    } else {
        r->fail_text = status == BUS_TIMEOUT ? "no delivery result in time"
                                             : "unexpected reply from router";
    }
    *q->sched->results_tail = r;
    q->sched->results_tail = &r->next;
    results_schedule(q);
}

/* Replace a string field of an unpacked message (which may point at
 * protobuf-c's shared empty string, never to be freed). */
static void set_str(char **field, const char *value)
{
    if (*field && *field != protobuf_c_empty_string)
        free(*field);
    *field = xstrdup(value);
}

static PB(Status) * status_new(unsigned code, const char *enh, const char *text)
{
    PB(Status) *st = xmalloc(sizeof(*st));
    PB(Status) init = PB_INIT(STATUS);
    *st = init;
    st->code = code;
    st->enhanced = xstrdup(enh);
    st->text = xstrdup(text);
    return st;
}

/* Apply one result to rec (in memory). */
static void apply_result(queue_t *q, PB(QueueRecord) * rec, result_t *r, uint64_t now)
{
    job_ctx_t *job = r->job;
    for (size_t k = 0; k < job->n; k++) {
        uint32_t idx = job->indexes[k];
        if (idx >= rec->n_recipients)
            continue;
        PB(QueueRecipientState) *st = rec->recipients[idx];
        if (!rcpt_pending(st))
            continue; /* already final: a late duplicate result */
        const PB(DeliveryRecipientResult) *rr = NULL;
        if (r->res)
            for (size_t i = 0; i < r->res->n_recipients; i++)
                if (r->res->recipients[i]->index == idx)
                    rr = r->res->recipients[i];
        int outcome = rr ? rr->outcome : PB_ENUM(DELIVERY_RECIPIENT_RESULT__OUTCOME__DEFERRED);
        /* the record owns what we put in it: it is freed with free_unpacked */
        if (st->last_reply)
            PB_FN(status, free_unpacked)(st->last_reply, NULL);
        if (rr && rr->reply)
            st->last_reply = status_new(rr->reply->code, rr->reply->enhanced ? rr->reply->enhanced : "",
                                        rr->reply->text ? rr->reply->text : "");
        else
            st->last_reply = status_new(451, "4.4.7", r->fail_text ? r->fail_text
                                                                   : "no result for recipient");
        if (r->res && r->res->remote_host && r->res->remote_host[0])
            set_str(&st->last_remote, r->res->remote_host);
        st->attempts++;
        if (outcome == PB_ENUM(DELIVERY_RECIPIENT_RESULT__OUTCOME__DELIVERED)) {
            set_str(&st->state, "delivered");
            q->delivered++;
        } else if (outcome == PB_ENUM(DELIVERY_RECIPIENT_RESULT__OUTCOME__BOUNCED)) {
            set_str(&st->state, "bounced");
            q->bounced++;
        } else if (now - rec->envelope->received_at_ms >= q->conf.max_age) {
            set_str(&st->state, "bounced");
            q->expired++;
            log_info("event=expired msg=%s rcpt=%u attempts=%u", job->id, idx, st->attempts);
            PB(Event) ev = PB_INIT(EVENT);
            ev.type = "expired";
            ev.message_id = job->id;
            ev.recipient = st->address;
            ev.rcpt_index = idx;
            ev.sender = rec->envelope->mail_from;
            ev.tenant = rec->envelope->tenant;
            ev.reply = st->last_reply;
            ev.attempt = st->attempts;
            service_event(q->svc, &ev);
        } else {
            set_str(&st->state, "deferred");
            st->next_attempt_ms = now + queue_backoff(&q->conf, st->attempts, id_random64());
            q->deferred++;
        }
    }
}

static int results_write(store_txn_t *txn, void *arg)
{
    queue_t *q = arg;
    uint64_t now = clock_wall_ms();
    for (result_t *r = q->sched->results; r; r = r->next) {
        PB(QueueRecord) *rec = queue_store_get(q, txn, r->job->id);
        if (rec == NULL)
            continue;
        apply_result(q, rec, r, now);
        r->finished = queue_record_finished(rec);
        r->next_due = r->finished ? 0 : record_next_due(rec);
        if (r->finished && rec->done_at_ms == 0) {
            rec->done_at_ms = now;
            int rc = store_del(txn, q->db_body, r->job->id, strlen(r->job->id));
            if (rc != STORE_OK && rc != STORE_NOTFOUND) {
                queue_record_free(&rec);
                return rc;
            }
        }
        int rc = queue_store_put(q, txn, rec);
        queue_record_free(&rec);
        if (rc != STORE_OK)
            return rc;
    }
    return 0;
}

static void done_push(queue_sched_t *s, const char *id, uint64_t at)
{
    done_entry_t *d = xcalloc(1, sizeof(*d));
    d->done_at = at;
    sx_strlcpy(d->id, id, sizeof(d->id));
    if (s->done_tail)
        s->done_tail->next = d;
    else
        s->done_head = d;
    s->done_tail = d;
}

static void results_run(loop_t *loop, void *arg)
{
    queue_t *q = arg;
    queue_sched_t *s = q->sched;
    if (s->results == NULL)
        return;
    int rc = store_write(q->store, results_write, q);
    if (rc != STORE_OK)
        log_error("event=results_write_failed err=\"%s\"", store_strerror(rc));
    uint64_t now = clock_wall_ms();
    result_t *r = s->results;
    s->results = NULL;
    s->results_tail = &s->results;
    while (r) {
        result_t *next = r->next;
        int last = inflight_done(s, r->job->id);
        if (rc != STORE_OK) {
            /* nothing was recorded: try the message again soon */
            if (last)
                heap_push(s, now + SCHED_ROUTER_WAIT_MS, r->job->id);
        } else if (r->finished) {
            if (last) {
                log_info("event=done msg=%s", r->job->id);
                done_push(s, r->job->id, now);
            }
        } else if (last && r->next_due) {
            heap_push(s, r->next_due, r->job->id);
        }
        if (r->res)
            PB_FN(delivery_result, free_unpacked)(r->res, NULL);
        free(r->job->indexes);
        free(r->job);
        free(r);
        r = next;
    }
    (void)loop;
    sched_arm(q);
}

/* ---- finished messages: kept for `queue show`, then removed ---- */

static int done_delete(store_txn_t *txn, void *arg)
{
    queue_t *q = arg;
    queue_sched_t *s = q->sched;
    uint64_t now = clock_wall_ms();
    int n = 0;
    for (done_entry_t *d = s->done_head; d && n < 1000; d = d->next, n++) {
        if (now - d->done_at < q->conf.done_retention)
            break;
        int rc = store_del(txn, q->db_msg, d->id, strlen(d->id));
        if (rc != STORE_OK && rc != STORE_NOTFOUND)
            return rc;
    }
    return 0;
}

static void done_sweep(loop_t *loop, void *arg)
{
    queue_t *q = arg;
    queue_sched_t *s = q->sched;
    uint64_t now = clock_wall_ms();
    if (s->done_head && now - s->done_head->done_at >= q->conf.done_retention &&
        store_write(q->store, done_delete, q) == STORE_OK) {
        int n = 0;
        while (s->done_head && n < 1000 && now - s->done_head->done_at >= q->conf.done_retention) {
            done_entry_t *d = s->done_head;
            s->done_head = d->next;
            free(d);
            n++;
        }
        if (s->done_head == NULL)
            s->done_tail = NULL;
    }
    loop_timer_start(loop, &s->done_sweep, DONE_SWEEP_MS);
}

/* ---- start: rebuild the schedule from the store ---- */

typedef struct rebuild {
    queue_t *q;
    size_t active, done;
} rebuild_t;

static int rebuild_one(const store_val_t *key, const store_val_t *val, void *arg)
{
    rebuild_t *rb = arg;
    char id[ID_BUF_SIZE];
    if (key->len != ID_LEN)
        return 0;
    memcpy(id, key->data, ID_LEN);
    id[ID_LEN] = '\0';
    PB(QueueRecord) *rec = PB_FN(queue_record, unpack)(NULL, val->len, val->data);
    if (rec == NULL || rec->envelope == NULL) {
        log_error("event=record_unreadable msg=%s", id);
        queue_record_free(&rec);
        return 0;
    }
    if (rec->done_at_ms || queue_record_finished(rec)) {
        done_push(rb->q->sched, id, rec->done_at_ms ? rec->done_at_ms : clock_wall_ms());
        rb->done++;
    } else {
        heap_push(rb->q->sched, record_next_due(rec), id);
        rb->active++;
    }
    queue_record_free(&rec);
    return 0;
}

int queue_sched_init(queue_t *q)
{
    queue_sched_t *s = xcalloc(1, sizeof(*s));
    q->sched = s;
    s->inflight_buckets = 4096;
    s->inflight = xcalloc(s->inflight_buckets, sizeof(*s->inflight));
    s->results_tail = &s->results;
    loop_timer_init(&s->tick, sched_tick, q);
    loop_timer_init(&s->results_timer, results_run, q);
    loop_timer_init(&s->done_sweep, done_sweep, q);

    rebuild_t rb = {.q = q};
    store_txn_t *txn = store_begin(q->store, 0);
    if (txn == NULL)
        return -1;
    long n = store_scan(txn, q->db_msg, NULL, 0, NULL, 0, rebuild_one, &rb);
    store_abort(&txn);
    if (n < 0)
        return -1;
    /* ids sort by arrival, close enough to the order messages finished for
     * the sweep, which stops at the first one still within retention */
    log_info("event=recovered active=%zu done=%zu", rb.active, rb.done);
    loop_timer_start(q->svc->loop, &s->done_sweep, DONE_SWEEP_MS);
    sched_arm(q);
    return 0;
}

void queue_sched_fini(queue_t *q)
{
    queue_sched_t *s = q->sched;
    if (s == NULL)
        return;
    loop_timer_stop(q->svc->loop, &s->tick);
    loop_timer_stop(q->svc->loop, &s->results_timer);
    loop_timer_stop(q->svc->loop, &s->done_sweep);
    for (size_t b = 0; b < s->inflight_buckets; b++) {
        inflight_t *f = s->inflight[b];
        while (f) {
            inflight_t *next = f->next;
            free(f);
            f = next;
        }
    }
    while (s->results) {
        result_t *r = s->results;
        s->results = r->next;
        if (r->res)
            PB_FN(delivery_result, free_unpacked)(r->res, NULL);
        free(r->job->indexes);
        free(r->job);
        free(r);
    }
    while (s->done_head) {
        done_entry_t *d = s->done_head;
        s->done_head = d->next;
        free(d);
    }
    free(s->inflight);
    free(s->heap);
    free(s);
    q->sched = NULL;
}
