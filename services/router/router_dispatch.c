/*
 * router_dispatch: workers, tasks in flight and held jobs. Every job that
 * enters is answered exactly once: by its worker's result, or by the router
 * itself when no route matches, capacity is exhausted, or the worker is lost.
 */
#include "router_dispatch.h"
#include "core/alloc.h"
#include "core/id.h"
#include "core/log.h"
#include "ipc/pending.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INSTANCE_MAX 64

typedef struct worker {
    bus_peer_t peer;
    char instance[INSTANCE_MAX];
    uint32_t slots;
    uint32_t inflight;
    uint64_t last_seen;
    uint64_t tasks_total;
    int broken; /* a send to it failed: not picked until it speaks again */
} worker_t;

/* A job held for a free slot, or in flight as a task. */
typedef struct job {
    bus_peer_t queue;
    uint64_t request_id;
    sx_env_t *env; /* owns the DeliveryJob */
    zmq_msg_t payload;
    const route_t *route;
    uint64_t since;
    /* in flight */
    uint64_t task_id;
    worker_t *worker;
    struct job *next; /* FIFO link */
} job_t;

struct dispatch {
    loop_t *loop;
    const route_table_t *routes;
    dispatch_limits_t lim;
    dispatch_ops_t ops;
    void *arg;
    worker_t **workers;
    size_t nworkers;
    pending_t *tasks; /* task id -> job_t */
    job_t *head, *tail;
    size_t npending;
    uint64_t next_task_id;
    uint64_t jobs_total;
    uint64_t workers_lost;
    loop_timer_t tick;
};

static void dispatch_tick(loop_t *loop, void *arg);

dispatch_t *dispatch_new(loop_t *loop, const route_table_t *routes,
                         const dispatch_limits_t *limits, const dispatch_ops_t *ops, void *arg)
{
    dispatch_t *d = xcalloc(1, sizeof(*d));
    d->loop = loop;
    d->routes = routes;
    d->lim = *limits;
    d->ops = *ops;
    d->arg = arg;
    d->tasks = pending_new(loop, NULL, NULL);
    /* ids from a random start: results from before a restart find nothing */
    d->next_task_id = (id_random64() >> 12) | 1;
    loop_timer_init(&d->tick, dispatch_tick, d);
    loop_timer_start(loop, &d->tick, DISPATCH_TICK_MS);
    return d;
}

static void job_free(job_t *j)
{
    if (j == NULL)
        return;
    codec_free(&j->env);
    zmq_msg_close(&j->payload);
    free(j);
}

static void job_free_data(void *data)
{
    job_free(data);
}

void dispatch_destroy(dispatch_t **p)
{
    dispatch_t *d = *p;
    if (d == NULL)
        return;
    loop_timer_stop(d->loop, &d->tick);
    pending_destroy(&d->tasks, job_free_data);
    while (d->head) {
        job_t *j = d->head;
        d->head = j->next;
        job_free(j);
    }
    for (size_t i = 0; i < d->nworkers; i++)
        free(d->workers[i]);
    free(d->workers);
    free(d);
    *p = NULL;
}

static const PB(DeliveryJob) * job_of(const job_t *j)
{
    return j->env->delivery_job;
}

/* ---- answers the router decides itself ---- */

static void publish_deferred(dispatch_t *d, const PB(DeliveryJob) * job, const char *route,
                             const PB(DeliveryRecipient) * rc, PB(Status) * st)
{
    if (d->ops.event == NULL)
        return;
    PB(Attr) attr = PB_INIT(ATTR);
    attr.key = "route";
    attr.value = (char *)route;
    PB(Attr) *attrs[1] = {&attr};
    PB(Event) ev = PB_INIT(EVENT);
    ev.type = "deferred";
    ev.message_id = job->message_id;
    ev.recipient = rc->address;
    ev.rcpt_index = rc->index;
    ev.sender = job->mail_from;
    ev.tenant = job->tenant;
    ev.reply = st;
    ev.attempt = job->attempt;
    ev.n_attrs = route && *route ? 1 : 0;
    ev.attrs = attrs;
    d->ops.event(&ev, d->arg);
}

/* Answer every recipient of job with one reply, publishing an event for each. */
static void answer_all(dispatch_t *d, const bus_peer_t *queue, uint64_t request_id,
                       const PB(DeliveryJob) * job, const char *route, unsigned code,
                       const char *enhanced, const char *text)
{
    size_t n = job->n_recipients;
    PB(Status) st = PB_INIT(STATUS);
    st.code = code;
    st.enhanced = (char *)enhanced;
    st.text = (char *)text;
    PB(DeliveryRecipientResult) *rr = xcalloc(n ? n : 1, sizeof(*rr));
    PB(DeliveryRecipientResult) **rp = xcalloc(n ? n : 1, sizeof(*rp));
    for (size_t i = 0; i < n; i++) {
        PB(DeliveryRecipientResult) init = PB_INIT(DELIVERY_RECIPIENT_RESULT);
        rr[i] = init;
        rr[i].index = job->recipients[i]->index;
        rr[i].outcome = code / 100 == 2   ? SENDARIX__V1__DELIVERY_RECIPIENT_RESULT__OUTCOME__DELIVERED
                        : code / 100 == 5 ? SENDARIX__V1__DELIVERY_RECIPIENT_RESULT__OUTCOME__BOUNCED
                                          : SENDARIX__V1__DELIVERY_RECIPIENT_RESULT__OUTCOME__DEFERRED;
        rr[i].reply = &st;
        rp[i] = &rr[i];
        publish_deferred(d, job, route, job->recipients[i], &st);
    }
    PB(DeliveryResult) res = PB_INIT(DELIVERY_RESULT);
    res.job_id = job->job_id;
    res.message_id = job->message_id;
    res.recipients = rp;
    res.n_recipients = n;
    res.route = (char *)(route ? route : "");
    d->ops.answer(queue, request_id, &res, d->arg);
    free(rr);
    free(rp);
}

/* ---- workers ---- */

static worker_t *worker_find(dispatch_t *d, const bus_peer_t *peer)
{
    for (size_t i = 0; i < d->nworkers; i++) {
        worker_t *w = d->workers[i];
        if (w->peer.len == peer->len && memcmp(w->peer.id, peer->id, peer->len) == 0)
            return w;
    }
    return NULL;
}

static uint32_t worker_free(const worker_t *w)
{
    return w->broken || w->inflight >= w->slots ? 0 : w->slots - w->inflight;
}

/* The worker with the most free slots; NULL when none has one. */
static worker_t *worker_pick(dispatch_t *d)
{
    worker_t *best = NULL;
    for (size_t i = 0; i < d->nworkers; i++) {
        worker_t *w = d->workers[i];
        if (worker_free(w) > 0 && (best == NULL || worker_free(w) > worker_free(best)))
            best = w;
    }
    return best;
}

/* ---- dispatching ---- */

static void fifo_push(dispatch_t *d, job_t *j)
{
    j->next = NULL;
    if (d->tail)
        d->tail->next = j;
    else
        d->head = j;
    d->tail = j;
    d->npending++;
}

static job_t *fifo_pop(dispatch_t *d)
{
    job_t *j = d->head;
    if (j == NULL)
        return NULL;
    d->head = j->next;
    if (d->head == NULL)
        d->tail = NULL;
    j->next = NULL;
    d->npending--;
    return j;
}

/* Remove the newest held job (the one past the bound). */
static job_t *fifo_pop_tail(dispatch_t *d)
{
    if (d->head == NULL)
        return NULL;
    if (d->head == d->tail)
        return fifo_pop(d);
    job_t *p = d->head;
    while (p->next != d->tail)
        p = p->next;
    job_t *j = d->tail;
    p->next = NULL;
    d->tail = p;
    d->npending--;
    return j;
}

/* Send j to w. 0: in flight; -1: the send failed and j is untouched. */
static int send_to(dispatch_t *d, job_t *j, worker_t *w)
{
    uint64_t id = d->next_task_id++;
    if (id == 0)
        id = d->next_task_id++;
    PB(DeliveryTask) task = PB_INIT(DELIVERY_TASK);
    task.job = j->env->delivery_job;
    task.route = route_pb(j->route);
    /* the send consumes the frame even when it fails: keep a reference (no copy) */
    zmq_msg_t frame;
    zmq_msg_init(&frame);
    zmq_msg_copy(&frame, &j->payload);
    if (d->ops.send_task(&w->peer, id, &task, &frame, d->arg) < 0) {
        log_warn("event=task_send_failed msg=%s job=%s worker=%s", job_of(j)->message_id,
                 job_of(j)->job_id, w->instance);
        w->broken = 1;
        return -1;
    }
    zmq_msg_close(&j->payload);
    zmq_msg_init(&j->payload);
    j->task_id = id;
    j->worker = w;
    j->since = loop_now(d->loop);
    w->inflight++;
    w->tasks_total++;
    pending_add(d->tasks, id, j, 0);
    log_info("event=task_sent msg=%s job=%s task=%" PRIu64 " route=%s worker=%s rcpts=%zu "
             "inflight=%u/%u",
             job_of(j)->message_id, job_of(j)->job_id, id, route_name(j->route), w->instance,
             job_of(j)->n_recipients, w->inflight, w->slots);
    return 0;
}

/* Hand held jobs to workers while any has a free slot. */
static void drain(dispatch_t *d)
{
    while (d->head) {
        worker_t *w = worker_pick(d);
        if (w == NULL)
            return;
        if (send_to(d, d->head, w) < 0)
            continue; /* w is marked broken: try the next best */
        fifo_pop(d);
    }
}

void dispatch_job(dispatch_t *d, const bus_peer_t *queue, uint64_t request_id, sx_env_t **envp,
                  zmq_msg_t *payload)
{
    job_t *j = xcalloc(1, sizeof(*j));
    j->queue = *queue;
    j->request_id = request_id;
    j->env = *envp;
    *envp = NULL;
    zmq_msg_init(&j->payload);
    zmq_msg_move(&j->payload, payload);
    j->since = loop_now(d->loop);
    d->jobs_total++;

    const PB(DeliveryJob) *job = job_of(j);
    const char *sender_domain = route_sender_domain(job->mail_from);
    j->route = route_match(d->routes, job->domain, sender_domain, job->tenant);
    if (j->route == NULL) {
        char text[300];
        snprintf(text, sizeof(text), "no route for %s", job->domain);
        log_warn("event=no_route msg=%s job=%s domain=%s sender_domain=%s tenant=%s",
                 job->message_id, job->job_id, job->domain, sender_domain, job->tenant);
        answer_all(d, queue, request_id, job, "", 451, "4.4.0", text);
        job_free(j);
        return;
    }
    if (route_kind(j->route) == ROUTE_MX) {
        log_warn("event=mx_unavailable msg=%s job=%s route=%s domain=%s", job->message_id,
                 job->job_id, route_name(j->route), job->domain);
        answer_all(d, queue, request_id, job, route_name(j->route), 451, "4.4.3",
                   "MX delivery not available yet");
        job_free(j);
        return;
    }
    fifo_push(d, j);
    drain(d);
    if (d->npending > d->lim.max_pending) {
        job_t *over = fifo_pop_tail(d);
        const PB(DeliveryJob) *oj = job_of(over);
        log_warn("event=capacity_exhausted msg=%s job=%s pending=%zu max_pending=%zu",
                 oj->message_id, oj->job_id, d->npending, d->lim.max_pending);
        answer_all(d, &over->queue, over->request_id, oj, route_name(over->route), 451, "4.3.2",
                   "delivery capacity exhausted");
        job_free(over);
    } else if (d->head) {
        log_debug("event=job_held msg=%s job=%s pending=%zu", job->message_id, job->job_id,
                  d->npending);
    }
}

void dispatch_worker_ready(dispatch_t *d, const bus_peer_t *peer, const char *instance,
                           uint32_t slots)
{
    if (slots > DISPATCH_SLOTS_MAX) {
        log_warn("event=worker_refused reason=slots slots=%u max=%u", slots, DISPATCH_SLOTS_MAX);
        slots = DISPATCH_SLOTS_MAX;
    }
    worker_t *w = worker_find(d, peer);
    if (w == NULL) {
        if (d->nworkers >= DISPATCH_WORKERS_MAX) {
            log_warn("event=worker_refused reason=too_many workers=%zu", d->nworkers);
            return;
        }
        w = xcalloc(1, sizeof(*w));
        w->peer = *peer;
        d->workers = xrealloc(d->workers, (d->nworkers + 1) * sizeof(*d->workers));
        d->workers[d->nworkers++] = w;
        snprintf(w->instance, sizeof(w->instance), "%s", instance && *instance ? instance : "?");
        for (char *p = w->instance; *p; p++)
            if (*p <= ' ' || *p >= 0x7f || *p == '=' || *p == '"')
                *p = '_';
        log_info("event=worker_joined worker=%s slots=%u workers=%zu", w->instance, slots,
                 d->nworkers);
    } else if (w->slots != slots) {
        log_info("event=worker_slots worker=%s slots=%u was=%u inflight=%u", w->instance, slots,
                 w->slots, w->inflight);
    }
    w->slots = slots;
    w->broken = 0;
    w->last_seen = loop_now(d->loop);
    drain(d);
}

/* Put a worker's result in the queue's terms: one outcome for every recipient of the job. */
static void answer_result(dispatch_t *d, job_t *j, const PB(DeliveryResult) * in,
                          const PB(Status) * failure)
{
    const PB(DeliveryJob) *job = job_of(j);
    size_t n = job->n_recipients;
    PB(DeliveryRecipientResult) *rr = xcalloc(n ? n : 1, sizeof(*rr));
    PB(DeliveryRecipientResult) **rp = xcalloc(n ? n : 1, sizeof(*rp));
    PB(Status) missing = PB_INIT(STATUS);
    missing.code = 451;
    missing.enhanced = "4.4.0";
    missing.text = "delivery worker reported no outcome";
    PB(Status) failed = PB_INIT(STATUS);
    if (failure) {
        /* a worker's refusal of the task is never final for the recipients */
        failed.code = 451;
        failed.enhanced = "4.3.0";
        failed.text = failure->text && *failure->text ? failure->text : "delivery worker error";
    }
    size_t gaps = 0;
    for (size_t i = 0; i < n; i++) {
        const PB(DeliveryRecipient) *rc = job->recipients[i];
        const PB(DeliveryRecipientResult) *got = NULL;
        for (size_t k = 0; in && k < in->n_recipients; k++) {
            if (in->recipients[k] && in->recipients[k]->index == rc->index) {
                got = in->recipients[k];
                break;
            }
        }
        PB(DeliveryRecipientResult) init = PB_INIT(DELIVERY_RECIPIENT_RESULT);
        rr[i] = got ? *got : init;
        rr[i].index = rc->index;
        rp[i] = &rr[i];
        int known = got && (got->outcome == SENDARIX__V1__DELIVERY_RECIPIENT_RESULT__OUTCOME__DEFERRED ||
                            got->outcome == SENDARIX__V1__DELIVERY_RECIPIENT_RESULT__OUTCOME__DELIVERED ||
                            got->outcome == SENDARIX__V1__DELIVERY_RECIPIENT_RESULT__OUTCOME__BOUNCED);
        if (!known || got->reply == NULL) {
            rr[i].outcome = SENDARIX__V1__DELIVERY_RECIPIENT_RESULT__OUTCOME__DEFERRED;
            rr[i].reply = failure ? &failed : &missing;
            publish_deferred(d, job, route_name(j->route), rc, rr[i].reply);
            gaps++;
        }
    }
    if (gaps && failure == NULL)
        log_warn("event=result_incomplete msg=%s task=%" PRIu64 " missing=%zu", job->message_id,
                 j->task_id, gaps);
    PB(DeliveryResult) res = PB_INIT(DELIVERY_RESULT);
    if (in)
        res = *in;
    res.job_id = job->job_id;
    res.message_id = job->message_id;
    res.recipients = rp;
    res.n_recipients = n;
    if (res.route == NULL || *res.route == '\0')
        res.route = (char *)route_name(j->route);
    d->ops.answer(&j->queue, j->request_id, &res, d->arg);
    free(rr);
    free(rp);
}

void dispatch_result(dispatch_t *d, const bus_peer_t *peer, uint64_t task_id,
                     const PB(DeliveryResult) * result, const PB(Status) * failure)
{
    job_t *j = pending_take(d->tasks, task_id);
    if (j == NULL) {
        worker_t *w = worker_find(d, peer);
        log_warn("event=result_unknown task=%" PRIu64 " worker=%s msg=%s", task_id,
                 w ? w->instance : "?", result && result->message_id ? result->message_id : "");
        return;
    }
    worker_t *w = j->worker;
    if (w && w->inflight > 0)
        w->inflight--;
    if (w && worker_find(d, peer) == w)
        w->last_seen = loop_now(d->loop);
    log_info("event=task_done msg=%s task=%" PRIu64 " worker=%s ms=%" PRIu64 "%s",
             job_of(j)->message_id, task_id, w ? w->instance : "?",
             loop_now(d->loop) - j->since, failure ? " worker_error=1" : "");
    answer_result(d, j, result, failure);
    job_free(j);
    drain(d);
}

/* ---- expiry ---- */

typedef struct collect {
    worker_t *worker;
    uint64_t *ids;
    size_t n;
} collect_t;

static void collect_worker_tasks(uint64_t id, void *data, void *arg)
{
    collect_t *c = arg;
    job_t *j = data;
    if (j->worker == c->worker)
        c->ids[c->n++] = id;
}

static void worker_lost(dispatch_t *d, size_t idx)
{
    worker_t *w = d->workers[idx];
    d->workers[idx] = d->workers[--d->nworkers];
    d->workers_lost++;
    log_warn("event=worker_lost worker=%s inflight=%u silent_ms=%" PRIu64, w->instance,
             w->inflight, loop_now(d->loop) - w->last_seen);
    collect_t c = {.worker = w, .ids = xcalloc(pending_count(d->tasks) + 1, sizeof(uint64_t))};
    pending_each(d->tasks, collect_worker_tasks, &c);
    for (size_t i = 0; i < c.n; i++) {
        job_t *j = pending_take(d->tasks, c.ids[i]);
        const PB(DeliveryJob) *job = job_of(j);
        log_warn("event=task_lost msg=%s task=%" PRIu64 " worker=%s", job->message_id,
                 j->task_id, w->instance);
        answer_all(d, &j->queue, j->request_id, job, route_name(j->route), 451, "4.4.0",
                   "delivery worker lost before reporting");
        job_free(j);
    }
    free(c.ids);
    free(w);
}

void dispatch_expire(dispatch_t *d, uint64_t now)
{
    for (size_t i = 0; i < d->nworkers;) {
        worker_t *w = d->workers[i];
        if (now >= w->last_seen + d->lim.worker_timeout_ms)
            worker_lost(d, i); /* the last one moved into i */
        else
            i++;
    }
    while (d->lim.pending_timeout_ms && d->head &&
           now >= d->head->since + d->lim.pending_timeout_ms) {
        job_t *j = fifo_pop(d);
        const PB(DeliveryJob) *job = job_of(j);
        log_warn("event=held_too_long msg=%s job=%s held_ms=%" PRIu64, job->message_id,
                 job->job_id, now - j->since);
        answer_all(d, &j->queue, j->request_id, job, route_name(j->route), 451, "4.3.2",
                   "no delivery worker had a free slot in time");
        job_free(j);
    }
}

static void dispatch_tick(loop_t *loop, void *arg)
{
    dispatch_t *d = arg;
    dispatch_expire(d, loop_now(loop));
    loop_timer_start(loop, &d->tick, DISPATCH_TICK_MS);
}

void dispatch_get_stats(const dispatch_t *d, dispatch_stats_t *st)
{
    memset(st, 0, sizeof(*st));
    st->workers = d->nworkers;
    for (size_t i = 0; i < d->nworkers; i++)
        st->free_slots += worker_free(d->workers[i]);
    st->inflight = pending_count(d->tasks);
    st->pending = d->npending;
    st->jobs_total = d->jobs_total;
    st->workers_lost = d->workers_lost;
}
