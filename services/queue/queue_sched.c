/*
 * queue_sched: deciding when each recipient is tried.
 *
 * The durable truth is the record of each message (per-recipient state and
 * next attempt time). In memory we keep a min-heap of (due time, message id)
 * rebuilt from the records at start, the set of messages handed to router,
 * a FIFO of finished messages kept for `queue show` until retention ends,
 * and the bodies of the newest messages as ingress sent them, for their
 * first jobs. A tick pops due messages and groups their due recipients by domain
 * into DeliveryJobs for router, skipping held messages, domains held after
 * repeated failures or suspended by an operator, and suppressed recipients
 * (which go straight to the results path). What results do is
 * queue_results.c's. Nothing here blocks acceptance: a backlog only makes
 * the heap bigger.
 */
#include "queue.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SCHED_TICK_MAX_MS    1000
#define SCHED_ROUTER_WAIT_MS 2000  /* retry dispatch this soon when no router answers */
#define SCHED_DISPATCH_BATCH 256   /* messages per tick, so a backlog cannot stall the loop */
#define SCHED_MAX_DOMAINS    64    /* jobs per message per tick */
#define SCHED_BLOCKED_POLL   60000 /* a message whose domains are all blocked looks again */
#define FRESH_MAX            256   /* new messages whose body is kept for their first job */
#define FRESH_MAX_BYTES      (32u << 20)

typedef struct sched_entry {
    uint64_t due;
    int kept; /* its body may be in the fresh list: only these look there */
    char id[ID_BUF_SIZE];
} sched_entry_t;

/* A new message's body as it came from ingress (a reference to the frame,
 * not a copy), so that its first job needs neither a read from the store
 * nor a copy of the body. Bounded: beyond the limits the oldest go, and
 * their message is read from the store like any other. */
typedef struct fresh_body {
    char id[ID_BUF_SIZE];
    zmq_msg_t body;
    struct fresh_body *next;
} fresh_body_t;

typedef struct inflight {
    char id[ID_BUF_SIZE];
    unsigned jobs;
    struct inflight *next;
} inflight_t;

struct queue_sched {
    job_ctx_t *jobs;           /* out at routers, newest first */
    sched_entry_t *heap;
    size_t len, cap;
    inflight_t **inflight;     /* hash buckets */
    size_t inflight_buckets;
    size_t inflight_count;
    size_t jobs_bytes;         /* bodies of the jobs out at routers */
    uint64_t job_seq;
    loop_timer_t tick;
    fresh_body_t *fresh, **fresh_tail; /* oldest first */
    size_t fresh_count, fresh_bytes;
};

/* ---- heap ---- */

static void heap_swap(sched_entry_t *a, sched_entry_t *b)
{
    sched_entry_t t = *a;
    *a = *b;
    *b = t;
}

static void heap_push(queue_sched_t *s, uint64_t due, const char *id, int kept)
{
    if (s->len == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1024;
        s->heap = xrealloc(s->heap, s->cap * sizeof(*s->heap));
    }
    size_t i = s->len++;
    s->heap[i].due = due;
    s->heap[i].kept = kept;
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

/* ---- in-flight set ---- */

static size_t id_hash(const char *id, size_t buckets)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = id; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return (size_t)(h % buckets);
}

static inflight_t *inflight_get(const queue_sched_t *s, const char *id)
{
    for (inflight_t *f = s->inflight[id_hash(id, s->inflight_buckets)]; f; f = f->next)
        if (strcmp(f->id, id) == 0)
            return f;
    return NULL;
}

static void inflight_add(queue_sched_t *s, const char *id, unsigned jobs)
{
    inflight_t *f = inflight_get(s, id);
    if (f) {
        f->jobs += jobs;
        return;
    }
    f = xcalloc(1, sizeof(*f));
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

int queue_sched_is_inflight(const queue_t *q, const char *id)
{
    return inflight_get(q->sched, id) != NULL;
}

/* ---- bodies of new messages ---- */

static fresh_body_t *fresh_unlink(queue_sched_t *s, fresh_body_t **link)
{
    fresh_body_t *f = *link;
    *link = f->next;
    if (*link == NULL)
        s->fresh_tail = link;
    s->fresh_count--;
    s->fresh_bytes -= zmq_msg_size(&f->body);
    return f;
}

static void fresh_free(fresh_body_t *f)
{
    if (f) {
        zmq_msg_close(&f->body);
        free(f);
    }
}

/* 1 when the body is kept */
static int fresh_keep(queue_sched_t *s, const char *id, zmq_msg_t *body)
{
    size_t n = zmq_msg_size(body);
    if (n > FRESH_MAX_BYTES)
        return 0;
    while (s->fresh && (s->fresh_count >= FRESH_MAX || s->fresh_bytes + n > FRESH_MAX_BYTES))
        fresh_free(fresh_unlink(s, &s->fresh));
    fresh_body_t *f = xcalloc(1, sizeof(*f));
    sx_strlcpy(f->id, id, sizeof(f->id));
    zmq_msg_init(&f->body);
    zmq_msg_copy(&f->body, body);
    *s->fresh_tail = f;
    s->fresh_tail = &f->next;
    s->fresh_count++;
    s->fresh_bytes += n;
    return 1;
}

/* The kept body of id, taken out of the list; NULL when none is kept. */
static fresh_body_t *fresh_take(queue_sched_t *s, const char *id)
{
    for (fresh_body_t **link = &s->fresh; *link; link = &(*link)->next)
        if (strcmp((*link)->id, id) == 0)
            return fresh_unlink(s, link);
    return NULL;
}

/* ---- scheduling ---- */

/* Room for another message at the routers: each job there holds a copy of
 * its body until delivery answers, so bytes are bounded as well as
 * messages. The check comes before a message goes: one larger than the
 * whole budget still goes, and at most one message's jobs pass it. */
static int inflight_room(const queue_t *q)
{
    const queue_sched_t *s = q->sched;
    return s->inflight_count < (size_t)q->conf.max_inflight &&
           s->jobs_bytes < q->conf.max_inflight_bytes;
}

/* The next tick: when the first message is due, unless the routers hold
 * all they may; a result that makes room arms it again. */
static void sched_arm(queue_t *q)
{
    queue_sched_t *s = q->sched;
    uint64_t delay = SCHED_TICK_MAX_MS;
    if (s->len > 0 && inflight_room(q)) {
        uint64_t now = clock_wall_ms();
        delay = s->heap[0].due <= now ? 0 : s->heap[0].due - now;
        if (delay > SCHED_TICK_MAX_MS)
            delay = SCHED_TICK_MAX_MS;
    }
    if (!loop_timer_active(&s->tick) || delay == 0)
        loop_timer_start(q->svc->loop, &s->tick, delay);
}

void queue_sched_add(queue_t *q, const char *id, uint64_t due_ms, zmq_msg_t *body)
{
    heap_push(q->sched, due_ms, id, body && fresh_keep(q->sched, id, body));
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

size_t queue_sched_inflight_bytes(const queue_t *q)
{
    return q->sched->jobs_bytes;
}

static void on_job_result(bus_msg_t *reply, bus_status_t status, void *arg);

static size_t pick_router(queue_t *q)
{
    for (size_t k = 0; k < q->nrouters; k++) {
        size_t i = (q->next_router + k) % q->nrouters;
        if (bus_client_up(q->routers[i])) {
            q->next_router = (i + 1) % q->nrouters;
            return i;
        }
    }
    /* none known up: try them in turn anyway, the send tells */
    return q->next_router++ % q->nrouters;
}

static void job_link(queue_sched_t *s, job_ctx_t *job)
{
    s->jobs_bytes += job->body_bytes;
    job->prev = NULL;
    job->next = s->jobs;
    if (s->jobs)
        s->jobs->prev = job;
    s->jobs = job;
}

static void job_unlink(queue_sched_t *s, job_ctx_t *job)
{
    s->jobs_bytes -= job->body_bytes;
    job->body_bytes = 0; /* unlinking twice counts once */
    if (job->prev)
        job->prev->next = job->next;
    else if (s->jobs == job)
        s->jobs = job->next;
    if (job->next)
        job->next->prev = job->prev;
    job->prev = job->next = NULL;
}

void queue_job_free(job_ctx_t *job)
{
    if (job) {
        free(job->indexes);
        free(job);
    }
}

static job_ctx_t *job_new(queue_t *q, const char *id, const char *domain, const uint32_t *idx,
                          size_t n)
{
    job_ctx_t *job = xcalloc(1, sizeof(*job));
    job->q = q;
    sx_strlcpy(job->id, id, sizeof(job->id));
    sx_strlcpy(job->domain, domain, sizeof(job->domain));
    job->indexes = xmemdup(idx, n * sizeof(*idx));
    job->n = n;
    return job;
}

/* Send one job (recipients idx[0..n) of rec); 0 when a router took it. */
static int send_job(queue_t *q, const PB(QueueRecord) * rec, zmq_msg_t *body,
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
    job.queue = q->name;
    job.stream = e->stream;
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

    job_ctx_t *ctx = job_new(q, e->message_id, domain, idx, n);
    ctx->body_bytes = zmq_msg_size(body);
    int rc = -1;
    for (size_t tries = 0; tries < q->nrouters && rc < 0; tries++) {
        ctx->router = pick_router(q);
        zmq_msg_t payload;
        zmq_msg_init(&payload);
        zmq_msg_copy(&payload, body);
        rc = bus_client_request(q->routers[ctx->router], &env, &payload, q->conf.job_timeout,
                                on_job_result, ctx, &ctx->request_id);
    }
    free(rcpts);
    free(rp);
    if (rc < 0) {
        queue_job_free(ctx);
        return -1;
    }
    job_link(s, ctx);
    log_info("event=dispatched msg=%s job=%s domain=%s rcpts=%zu attempt=%u", e->message_id,
             job_id, domain, n, job.attempt);
    return 0;
}

/* Suppressed recipients never leave: their outcome is recorded at once. */
static void suppress_local(queue_t *q, const char *id, const uint32_t *idx, size_t n)
{
    result_t *r = xcalloc(1, sizeof(*r));
    r->kind = RESULT_SUPPRESSED;
    r->job = job_new(q, id, "", idx, n);
    r->counts_inflight = 1;
    inflight_add(q->sched, id, 1);
    queue_results_push(q, r);
}

/*
 * Dispatch the due recipients of one message. Returns the number of jobs
 * sent (suppressed recipients count as one), 0 when nothing was sent
 * (due_out gets when to look again, 0 for never), -1 when no router would
 * take a job (the caller re-queues the message).
 */
static int dispatch_message(queue_t *q, store_txn_t *txn, const char *id, int kept, uint64_t now,
                            uint64_t *due_out)
{
    *due_out = 0;
    fresh_body_t *fresh = kept ? fresh_take(q->sched, id) : NULL;
    PB(QueueRecord) *rec = queue_store_get(q, txn, id);
    if (rec == NULL || rec->done_at_ms || rec->held) {
        queue_record_free(&rec); /* a held message comes back when released */
        fresh_free(fresh);
        return 0;
    }
    /* the body goes out as one frame: the kept one, or else a copy out of
     * the store (its pages are only valid while this transaction lasts),
     * made when the first job goes */
    zmq_msg_t body;
    zmq_msg_init(&body);
    store_val_t stored = {0};
    int have_body = fresh != NULL;
    if (fresh) {
        zmq_msg_move(&body, &fresh->body);
        fresh_free(fresh);
    } else if (store_get(txn, q->db_body, id, strlen(id), &stored) != STORE_OK) {
        log_error("event=body_missing msg=%s", id);
        zmq_msg_close(&body);
        queue_record_free(&rec);
        return 0;
    }
    size_t n = rec->n_recipients;
    uint32_t *idx = xcalloc(n ? n : 1, sizeof(*idx));
    uint32_t *supp = xcalloc(n ? n : 1, sizeof(*supp));
    char *taken = xcalloc(n ? n : 1, 1);
    size_t nsupp = 0;
    int jobs = 0, failed = 0;
    uint64_t blocked_until = 0;
    const char *tenant = rec->envelope->tenant ? rec->envelope->tenant : "";
    for (size_t i = 0; i < n && jobs < SCHED_MAX_DOMAINS; i++) {
        PB(QueueRecipientState) *r = rec->recipients[i];
        if (taken[i] || !queue_rcpt_pending(r) || r->next_attempt_ms > now)
            continue;
        if (queue_suppressed(q, txn, tenant, r->address)) {
            supp[nsupp++] = (uint32_t)i;
            taken[i] = 1;
            continue;
        }
        char dom[256];
        const char *d = queue_rcpt_domain(r->address);
        size_t dl = strlen(d) < sizeof(dom) - 1 ? strlen(d) : sizeof(dom) - 1;
        for (size_t c = 0; c < dl; c++)
            dom[c] = (char)tolower((unsigned char)d[c]);
        dom[dl] = '\0';
        uint64_t until;
        if (queue_domain_blocked(q, dom, now, &until)) {
            for (size_t j = i; j < n; j++)
                if (!taken[j] && strcasecmp(queue_rcpt_domain(rec->recipients[j]->address),
                                            dom) == 0)
                    taken[j] = 1;
            if (blocked_until == 0 || until < blocked_until)
                blocked_until = until;
            continue;
        }
        size_t k = 0;
        for (size_t j = i; j < n; j++) {
            PB(QueueRecipientState) *o = rec->recipients[j];
            if (!taken[j] && queue_rcpt_pending(o) && o->next_attempt_ms <= now &&
                strcasecmp(queue_rcpt_domain(o->address), dom) == 0 &&
                !queue_suppressed(q, txn, tenant, o->address)) {
                idx[k++] = (uint32_t)j;
                taken[j] = 1;
            }
        }
        if (!have_body) {
            zmq_msg_close(&body);
            zmq_msg_init_size(&body, stored.len);
            if (stored.len)
                memcpy(zmq_msg_data(&body), stored.data, stored.len);
            have_body = 1;
        }
        if (send_job(q, rec, &body, idx, k, dom) < 0) {
            failed = 1;
            break;
        }
        jobs++;
    }
    if (jobs > 0)
        inflight_add(q->sched, id, (unsigned)jobs);
    if (nsupp > 0) {
        suppress_local(q, id, supp, nsupp);
        jobs++;
    }
    if (jobs == 0 && !failed) {
        uint64_t due = queue_record_next_due(rec);
        if (blocked_until) {
            /* every due recipient waits for its domain */
            uint64_t look = blocked_until > now + SCHED_BLOCKED_POLL ? now + SCHED_BLOCKED_POLL
                                                                     : blocked_until;
            due = due > now ? (due < look ? due : look) : look;
        }
        *due_out = due;
    }
    free(idx);
    free(supp);
    free(taken);
    zmq_msg_close(&body);
    queue_record_free(&rec);
    return failed && jobs == 0 ? -1 : jobs;
}

static void sched_tick(loop_t *loop, void *arg)
{
    (void)loop;
    queue_t *q = arg;
    queue_sched_t *s = q->sched;
    uint64_t now = clock_wall_ms();
    store_txn_t *txn = NULL;
    int sent = 0;
    while (s->len > 0 && s->heap[0].due <= now && sent < SCHED_DISPATCH_BATCH &&
           inflight_room(q)) {
        sched_entry_t e = heap_pop(s);
        if (inflight_get(s, e.id))
            continue; /* rescheduled when its results arrive */
        if (txn == NULL && (txn = store_begin(q->store, 0)) == NULL) {
            heap_push(s, e.due, e.id, e.kept);
            break;
        }
        uint64_t due;
        int rc = dispatch_message(q, txn, e.id, e.kept, now, &due);
        if (rc < 0) {
            log_warn("event=router_unavailable msg=%s retry_in_ms=%d", e.id,
                     SCHED_ROUTER_WAIT_MS);
            heap_push(s, now + SCHED_ROUTER_WAIT_MS, e.id, 0);
            break;
        }
        if (rc == 0 && due)
            heap_push(s, due > now ? due : now + 1, e.id, 0);
        sent++;
    }
    store_abort(&txn);
    sched_arm(q);
}

/* ---- results arrive ---- */

static void on_job_result(bus_msg_t *reply, bus_status_t status, void *arg)
{
    job_ctx_t *ctx = arg;
    queue_t *q = ctx->q;
    job_unlink(q->sched, ctx);
    result_t *r = xcalloc(1, sizeof(*r));
    r->kind = RESULT_REMOTE;
    r->job = ctx;
    r->counts_inflight = 1;
    if (status == BUS_OK && reply->env->body_case == PB_BODY(DELIVERY_RESULT)) {
        /* keep the decoded result, and so its envelope (one allocation) */
        r->res_env = bus_msg_take_env(reply);
    } else if (status == BUS_OK && reply->env->body_case == PB_BODY(ERROR) &&
               reply->env->error->status) {
        r->fail_text = "router refused the job";
        log_warn("event=job_refused msg=%s err=\"%s\"", ctx->id,
                 reply->env->error->status->text);
    } else {
        r->fail_text = status == BUS_TIMEOUT ? "no delivery result in time"
                                             : "unexpected reply from router";
    }
    queue_results_push(q, r);
}

/* ---- routers that restart lose the jobs they held ---- */

#define ROUTER_PING_MS 2000

typedef struct router_ping {
    queue_t *q;
    size_t router;
} router_ping_t;

/* A router restarted: what it held will never be answered; try it again now. */
static void router_lost_jobs(queue_t *q, size_t router)
{
    queue_sched_t *s = q->sched;
    size_t n = 0;
    job_ctx_t *job = s->jobs;
    while (job) {
        job_ctx_t *next = job->next;
        if (job->router == router) {
            bus_client_cancel(q->routers[router], job->request_id);
            job_unlink(s, job);
            result_t *r = xcalloc(1, sizeof(*r));
            r->kind = RESULT_REMOTE;
            r->job = job;
            r->counts_inflight = 1;
            r->fail_text = "router restarted before reporting";
            queue_results_push(q, r);
            n++;
        }
        job = next;
    }
    if (n)
        log_warn("event=router_restarted router=%s jobs_lost=%zu",
                 bus_client_endpoint(q->routers[router]), n);
}

static void on_router_pong(bus_msg_t *reply, bus_status_t status, void *arg)
{
    router_ping_t *p = arg;
    queue_t *q = p->q;
    size_t i = p->router;
    free(p);
    if (status != BUS_OK || reply->env->body_case != PB_BODY(SERVICE_PONG))
        return;
    uint64_t started = reply->env->service_pong->started_at_ms;
    if (q->router_started[i] && started != q->router_started[i])
        router_lost_jobs(q, i);
    q->router_started[i] = started;
}

static void router_ping(loop_t *loop, void *arg)
{
    queue_t *q = arg;
    for (size_t i = 0; i < q->nrouters; i++) {
        PB(ServicePing) ping = PB_INIT(SERVICE_PING);
        sx_env_t env = PB_INIT(ENVELOPE);
        env.body_case = PB_BODY(SERVICE_PING);
        env.service_ping = &ping;
        router_ping_t *p = xmalloc(sizeof(*p));
        p->q = q;
        p->router = i;
        if (bus_client_request(q->routers[i], &env, NULL, ROUTER_PING_MS, on_router_pong, p,
                               NULL) < 0)
            free(p);
    }
    loop_timer_start(loop, &q->router_ping, ROUTER_PING_MS);
}

void queue_sched_watch_routers(queue_t *q)
{
    q->router_started = xcalloc(q->nrouters ? q->nrouters : 1, sizeof(uint64_t));
    loop_timer_init(&q->router_ping, router_ping, q);
    loop_timer_start(q->svc->loop, &q->router_ping, 0);
}

/* The results path has written (or failed to write) r: schedule what follows. */
void queue_sched_result_done(queue_t *q, result_t *r, int written, uint64_t now)
{
    queue_sched_t *s = q->sched;
    int last = r->counts_inflight ? inflight_done(s, r->job->id) : 1;
    if (!written) {
        /* nothing was recorded: try the message again soon */
        if (last)
            heap_push(s, now + SCHED_ROUTER_WAIT_MS, r->job->id, 0);
        sched_arm(q);
        return;
    }
    if (r->dsn) {
        queue_index_put(q, r->dsn);
        heap_push(s, now, r->dsn->envelope->message_id, 0);
    }
    if (r->rec) {
        queue_index_put(q, r->rec);
        if (r->rec->done_at_ms) {
            if (last)
                log_info("event=done msg=%s", r->job->id);
        } else if (last && !r->rec->held) {
            uint64_t due = queue_record_next_due(r->rec);
            if (due)
                heap_push(s, due, r->job->id, 0);
        }
    }
    sched_arm(q);
}

/* ---- start: rebuild the schedule and the index from the store ---- */

typedef struct rebuild {
    queue_t *q;
    size_t active, held;
    char **finished; /* finished records still in "msg" (an older store) */
    size_t nfinished, cap;
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
        if (rb->nfinished == rb->cap) {
            rb->cap = rb->cap ? rb->cap * 2 : 64;
            rb->finished = xrealloc(rb->finished, rb->cap * sizeof(*rb->finished));
        }
        rb->finished[rb->nfinished++] = xstrdup(id);
    } else {
        queue_index_put(rb->q, rec);
        if (rec->held)
            rb->held++;
        else
            heap_push(rb->q->sched, queue_record_next_due(rec), id, 0);
        rb->active++;
    }
    queue_record_free(&rec);
    return 0;
}

int queue_sched_init(queue_t *q)
{
    queue_sched_t *s = xcalloc(1, sizeof(*s));
    q->sched = s;
    s->fresh_tail = &s->fresh;
    s->inflight_buckets = 4096;
    s->inflight = xcalloc(s->inflight_buckets, sizeof(*s->inflight));
    loop_timer_init(&s->tick, sched_tick, q);

    rebuild_t rb = {.q = q};
    store_txn_t *txn = store_begin(q->store, 0);
    if (txn == NULL)
        return -1;
    long n = store_scan(txn, q->db_msg, NULL, 0, NULL, 0, rebuild_one, &rb);
    store_abort(&txn);
    int rc = n < 0 ? -1 : queue_done_init(q, rb.finished, rb.nfinished);
    for (size_t i = 0; i < rb.nfinished; i++)
        free(rb.finished[i]);
    free(rb.finished);
    if (rc < 0)
        return -1;
    log_info("event=recovered active=%zu held=%zu", rb.active, rb.held);
    sched_arm(q);
    return 0;
}

void queue_sched_fini(queue_t *q)
{
    queue_sched_t *s = q->sched;
    if (s == NULL)
        return;
    loop_timer_stop(q->svc->loop, &s->tick);
    queue_done_fini(q);
    loop_timer_stop(q->svc->loop, &q->router_ping);
    free(q->router_started);
    q->router_started = NULL;
    /* jobs still out: their bus requests died with the clients */
    while (s->jobs) {
        job_ctx_t *job = s->jobs;
        job_unlink(s, job);
        queue_job_free(job);
    }
    for (size_t b = 0; b < s->inflight_buckets; b++) {
        inflight_t *f = s->inflight[b];
        while (f) {
            inflight_t *next = f->next;
            free(f);
            f = next;
        }
    }
    while (s->fresh)
        fresh_free(fresh_unlink(s, &s->fresh));
    free(s->inflight);
    free(s->heap);
    free(s);
    q->sched = NULL;
}
