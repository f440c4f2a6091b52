/*
 * router_dispatch: workers, held jobs and tasks in flight. Every job that
 * enters is answered exactly once: by its worker's result, or by the router
 * itself when no route matches, the route or destination cannot take it
 * now (not attempted), capacity is exhausted, or the worker is lost.
 *
 * Held jobs wait in one FIFO in arrival order (for their deadlines) and in
 * their lane's FIFO (a lane is a destination and source pool). A pass goes
 * round the lanes that hold jobs, sending the first job of each lane that
 * has room while a worker has a free slot; a lane that sent goes to the back
 * of the round, and one found without room is skipped for the rest of the
 * pass. So lanes share the workers in turn, and a pass costs one look per
 * lane plus one per job sent, however many jobs wait.
 */
#include "router_dispatch.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/id.h"
#include "core/log.h"
#include "ipc/pending.h"
#include "router_map.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INSTANCE_MAX 64
#define LANE_KEY_MAX (SHAPE_KEY_MAX + SOURCE_NAME_MAX + 4)
#define LANE_RETRY_MIN_MS 100 /* the shortest wait offered for a full lane */
#define LANE_RETRY_NEW_MS 500 /* the wait offered by a full lane that has not sent yet */

typedef struct worker {
    bus_peer_t peer;
    char instance[INSTANCE_MAX];
    uint32_t slots;
    uint32_t inflight;
    uint64_t last_seen;
    uint64_t tasks_total;
    int broken; /* a send to it failed: not picked until it speaks again */
} worker_t;

/* The jobs held for one destination and source pool. */
typedef struct lane {
    char key[LANE_KEY_MAX];
    size_t n;              /* jobs held */
    struct job *head, *tail;     /* its jobs in arrival order */
    struct lane *prev, *next;    /* the round of lanes holding jobs */
    uint64_t blocked_pass; /* the pass that found it without room */
    int shaped;            /* its last look found it held by shaping (not by workers) */
    uint64_t wait_ms;      /* what that look said */
    uint64_t last_sent;    /* when it last sent a job (ms) */
    double gap_ms;         /* the average time between its sends */
} lane_t;

/* A job held for a free slot, or in flight as a task. */
typedef struct job {
    bus_peer_t queue;
    uint64_t request_id;
    sx_env_t *env; /* owns the DeliveryJob */
    zmq_msg_t payload;
    const route_t *route;
    const provider_t *provider; /* NULL: the route is not shaped */
    char key[SHAPE_KEY_MAX];    /* its destination */
    const source_pool_t *pool;
    int source_draw;            /* the pool draw kept across tries (-1: none yet) */
    lane_t *lane;
    uint64_t since;
    /* in flight */
    uint64_t task_id;
    worker_t *worker;
    health_plan_t plan;
    dest_t *dest;
    char source[SOURCE_IP_MAX];
    struct job *prev, *next;   /* FIFO links */
    struct job *lprev, *lnext; /* links in its lane */
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
    rmap_t *lanes;
    lane_t *round_head, *round_tail; /* lanes holding jobs, next to look at first */
    uint64_t pass;
    uint64_t next_task_id;
    uint64_t jobs_total;
    uint64_t workers_lost;
    uint64_t held_back;
    health_t *health;
    provider_table_t *own_providers;
    shape_t *own_shape;
    shape_t *shape;
    source_t *source;
    loop_timer_t tick;
};

static void dispatch_tick(loop_t *loop, void *arg);
static void pump(dispatch_t *d);

uint64_t dispatch_now(dispatch_t *d)
{
    return d->ops.now ? d->ops.now(d->arg) : loop_now(d->loop);
}

uint64_t dispatch_wall(dispatch_t *d)
{
    return d->ops.wall ? d->ops.wall(d->arg) : clock_wall_ms();
}

dispatch_t *dispatch_new(loop_t *loop, const route_table_t *routes, const dispatch_limits_t *limits,
                         const dispatch_ops_t *ops, void *arg)
{
    dispatch_t *d = xcalloc(1, sizeof(*d));
    d->loop = loop;
    d->routes = routes;
    d->lim = *limits;
    d->ops = *ops;
    d->arg = arg;
    d->tasks = pending_new(loop, NULL, NULL);
    d->lanes = rmap_new();
    d->health = health_new(routes, &d->lim.health);
    d->own_providers = provider_table_builtin();
    shape_limits_t sl = {.pause_base_ms = 60000,
                         .pause_max_ms = 900000,
                         .recover_interval_ms = 60000,
                         .recover_step = 0.1,
                         .mx_cache_max = 10000,
                         .mx_cache_ttl_ms = 3600000,
                         .dests_max = 100000};
    d->own_shape = shape_new(d->own_providers, &sl);
    d->shape = d->own_shape;
    /* ids from a random start: results from before a restart find nothing */
    d->next_task_id = (id_random64() >> 12) | 1;
    loop_timer_init(&d->tick, dispatch_tick, d);
    loop_timer_start(loop, &d->tick, DISPATCH_TICK_MS);
    return d;
}

void dispatch_set_shaping(dispatch_t *d, shape_t *shape, source_t *source)
{
    if (shape)
        d->shape = shape;
    d->source = source;
}

health_t *dispatch_health(dispatch_t *d)
{
    return d->health;
}

shape_t *dispatch_shape(dispatch_t *d)
{
    return d->shape;
}

source_t *dispatch_source(dispatch_t *d)
{
    return d->source;
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
    rmap_destroy(&d->lanes, free);
    for (size_t i = 0; i < d->nworkers; i++)
        free(d->workers[i]);
    free(d->workers);
    health_destroy(&d->health);
    shape_destroy(&d->own_shape);
    provider_table_destroy(&d->own_providers);
    free(d);
    *p = NULL;
}

static const PB(DeliveryJob) * job_of(const job_t *j)
{
    return j->env->delivery_job;
}

/* ---- answers the router decides itself ---- */

static void publish_deferred(dispatch_t *d, const PB(DeliveryJob) * job, const char *route,
                             const PB(DeliveryRecipient) * rc, PB(Status) * st, uint64_t held_ms)
{
    if (d->ops.event == NULL)
        return;
    char wait[32];
    snprintf(wait, sizeof(wait), "%" PRIu64, held_ms);
    PB(Attr) attr[3] = {PB_INIT(ATTR), PB_INIT(ATTR), PB_INIT(ATTR)};
    PB(Attr) * attrs[3] = {&attr[0], &attr[1], &attr[2]};
    attr[0].key = "route";
    attr[0].value = (char *)route;
    attr[1].key = "not_attempted";
    attr[1].value = "1";
    attr[2].key = "retry_after_ms";
    attr[2].value = wait;
    PB(Event) ev = PB_INIT(EVENT);
    ev.type = "deferred";
    ev.message_id = job->message_id;
    ev.recipient = rc->address;
    ev.rcpt_index = rc->index;
    ev.sender = job->mail_from;
    ev.tenant = job->tenant;
    ev.reply = st;
    ev.attempt = job->attempt;
    ev.n_attrs = route && *route ? (held_ms ? 3 : 1) : 0;
    ev.attrs = attrs;
    d->ops.event(&ev, d->arg);
}

/*
 * Answer every recipient of job with one reply and an event per recipient.
 * held: nothing was tried (not attempted, offer again after
 * retry_after_ms); its events only when quiet is 0, so short waits for a
 * rate token do not flood the event log.
 */
static void answer_with(dispatch_t *d, const bus_peer_t *queue, uint64_t request_id,
                        const PB(DeliveryJob) * job, const char *route, unsigned code,
                        const char *enhanced, const char *text, int held, uint64_t retry_after_ms,
                        int quiet)
{
    if (held) {
        if (retry_after_ms < HEALTH_RETRY_MIN_MS)
            retry_after_ms = HEALTH_RETRY_MIN_MS;
        if (retry_after_ms > DISPATCH_RETRY_MAX_MS)
            retry_after_ms = DISPATCH_RETRY_MAX_MS;
    }
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
        rr[i].outcome = code / 100 == 2   ? PB_ENUM(DELIVERY_RECIPIENT_RESULT__OUTCOME__DELIVERED)
                        : code / 100 == 5 ? PB_ENUM(DELIVERY_RECIPIENT_RESULT__OUTCOME__BOUNCED)
                                          : PB_ENUM(DELIVERY_RECIPIENT_RESULT__OUTCOME__DEFERRED);
        rr[i].reply = &st;
        rp[i] = &rr[i];
        if (!quiet)
            publish_deferred(d, job, route, job->recipients[i], &st, held ? retry_after_ms : 0);
    }
    PB(DeliveryResult) res = PB_INIT(DELIVERY_RESULT);
    res.job_id = job->job_id;
    res.message_id = job->message_id;
    res.recipients = rp;
    res.n_recipients = n;
    res.route = (char *)(route ? route : "");
    if (held) {
        res.not_attempted = 1;
        res.retry_after_ms = (uint32_t)retry_after_ms;
        d->held_back++;
    }
    d->ops.answer(queue, request_id, &res, d->arg);
    free(rr);
    free(rp);
}

static void answer_all(dispatch_t *d, const bus_peer_t *queue, uint64_t request_id,
                       const PB(DeliveryJob) * job, const char *route, unsigned code,
                       const char *enhanced, const char *text)
{
    answer_with(d, queue, request_id, job, route, code, enhanced, text, 0, 0, 0);
}

/*
 * Not attempted: queue keeps the job and offers it again after wait_ms,
 * counting no attempt. quiet: no events (a short wait for the destination's
 * limits, not worth one per recipient each time).
 */
static void answer_held(dispatch_t *d, job_t *j, uint64_t wait_ms, const char *enhanced,
                        const char *why, int quiet)
{
    const PB(DeliveryJob) *job = job_of(j);
    char text[400];
    snprintf(text, sizeof(text), "held by router: %s (route %s%s%s); retry in %" PRIu64 " ms", why,
             route_name(j->route), j->key[0] ? ", destination " : "", j->key, wait_ms);
    log_info(
        "event=held_back msg=%s job=%s route=%s destination=%s retry_ms=%" PRIu64 " why=\"%s\"",
        job->message_id, job->job_id, route_name(j->route), j->key[0] ? j->key : "-", wait_ms, why);
    answer_with(d, &j->queue, j->request_id, job, route_name(j->route), 451, enhanced, text, 1,
                wait_ms, quiet);
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

/* ---- the FIFO and lanes ---- */

static lane_t *lane_get(dispatch_t *d, const char *key, const source_pool_t *pool)
{
    char k[LANE_KEY_MAX];
    snprintf(k, sizeof(k), "%s\n%s", key, pool ? pool->name : "");
    lane_t *l = rmap_get(d->lanes, k);
    if (l == NULL) {
        l = xcalloc(1, sizeof(*l));
        sx_strlcpy(l->key, k, sizeof(l->key));
        rmap_put(d->lanes, l->key, l);
    }
    return l;
}

static void lane_sent(lane_t *l, uint64_t now)
{
    if (l->last_sent) {
        double gap = (double)(now - l->last_sent);
        l->gap_ms = l->gap_ms > 0 ? 0.9 * l->gap_ms + 0.1 * gap : gap;
    }
    l->last_sent = now;
}

/*
 * When to offer a job again to a full lane: when half of what it holds has
 * gone, at the pace it has been sending (it drains as fast as its
 * destination takes mail), so jobs come back while it still has work, not
 * after the longest wait.
 */
static uint64_t lane_drain_ms(const dispatch_t *d, const lane_t *l)
{
    uint64_t most = d->lim.shape_max_wait_ms;
    if (l->last_sent == 0 || l->gap_ms <= 0) /* no pace known yet */
        return LANE_RETRY_NEW_MS < most ? LANE_RETRY_NEW_MS : most;
    double ms = (double)l->n * l->gap_ms / 2;
    if (ms < LANE_RETRY_MIN_MS)
        return LANE_RETRY_MIN_MS;
    return ms > (double)most ? most : (uint64_t)ms;
}

static void round_append(dispatch_t *d, lane_t *l)
{
    l->next = NULL;
    l->prev = d->round_tail;
    if (d->round_tail)
        d->round_tail->next = l;
    else
        d->round_head = l;
    d->round_tail = l;
}

static void round_unlink(dispatch_t *d, lane_t *l)
{
    if (l->prev)
        l->prev->next = l->next;
    else
        d->round_head = l->next;
    if (l->next)
        l->next->prev = l->prev;
    else
        d->round_tail = l->prev;
    l->prev = l->next = NULL;
}

static void fifo_push(dispatch_t *d, job_t *j)
{
    j->next = NULL;
    j->prev = d->tail;
    if (d->tail)
        d->tail->next = j;
    else
        d->head = j;
    d->tail = j;
    d->npending++;
    lane_t *l = j->lane;
    j->lnext = NULL;
    j->lprev = l->tail;
    if (l->tail)
        l->tail->lnext = j;
    else
        l->head = j;
    l->tail = j;
    if (l->n++ == 0)
        round_append(d, l);
}

static void fifo_unlink(dispatch_t *d, job_t *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        d->head = j->next;
    if (j->next)
        j->next->prev = j->prev;
    else
        d->tail = j->prev;
    j->prev = j->next = NULL;
    d->npending--;
    lane_t *l = j->lane;
    j->lane = NULL;
    if (l == NULL)
        return;
    if (j->lprev)
        j->lprev->lnext = j->lnext;
    else
        l->head = j->lnext;
    if (j->lnext)
        j->lnext->lprev = j->lprev;
    else
        l->tail = j->lprev;
    j->lprev = j->lnext = NULL;
    if (--l->n == 0) {
        round_unlink(d, l);
        free(rmap_del(d->lanes, l->key));
    }
}

/* ---- sending ---- */

typedef enum { TRY_SENT, TRY_BLOCKED, TRY_ANSWERED, TRY_AGAIN } try_t;

typedef struct room_ctx {
    dispatch_t *d;
    job_t *j;
    uint64_t now;
} room_ctx_t;

/* Does j's destination, from source address ip, have room now? */
static uint64_t room_from(const char *ip, void *arg)
{
    room_ctx_t *c = arg;
    if (c->j->provider == NULL)
        return 0;
    dest_t *dest = shape_dest(c->d->shape, c->j->provider, c->j->key, ip, c->now);
    return dest ? shape_wait(dest, c->now) : 0;
}

/* j cannot go now: wait in its lane, or be answered when the wait is known to be long. */
static try_t blocked(dispatch_t *d, job_t *j, uint64_t wait, const char *why)
{
    if (wait != SHAPE_WAIT_SLOT && wait > d->lim.shape_max_wait_ms) {
        fifo_unlink(d, j);
        answer_held(d, j, wait, "4.4.5", why, 0);
        job_free(j);
        return TRY_ANSWERED;
    }
    j->lane->blocked_pass = d->pass;
    j->lane->shaped = 1;
    j->lane->wait_ms = wait == SHAPE_WAIT_SLOT ? d->lim.shape_max_wait_ms : wait;
    return TRY_BLOCKED;
}

/* Send j to w with plan and source. 0: in flight; -1: the send failed and j is untouched. */
static int send_to(dispatch_t *d, job_t *j, worker_t *w, const health_plan_t *plan,
                   const char *source, uint64_t now)
{
    uint64_t id = d->next_task_id++;
    if (id == 0)
        id = d->next_task_id++;
    const PB(DeliveryRoute) *base = route_pb(j->route);
    PB(DeliveryRoute) rt = *base;
    PB(DeliveryEndpoint) * eps[ROUTE_ENDPOINT_MAX];
    if (base->n_endpoints > 0) {
        for (size_t k = 0; k < plan->n; k++)
            eps[k] = base->endpoints[plan->order[k]];
        rt.endpoints = eps;
        rt.n_endpoints = plan->n;
    }
    rt.source_ip = (char *)(source ? source : "");
    rt.provider = (char *)(j->provider ? j->provider->name : "");
    /* a route without shaping keeps its connections as the default profile does */
    const provider_t *reuse = j->provider ? j->provider
                                          : provider_default(shape_providers(d->shape));
    rt.messages_per_connection = reuse ? reuse->messages_per_connection : 0;
    PB(DeliveryTask) task = PB_INIT(DELIVERY_TASK);
    task.job = j->env->delivery_job;
    task.route = &rt;
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
    j->since = now;
    j->plan = *plan;
    sx_strlcpy(j->source, source, sizeof(j->source));
    w->inflight++;
    w->tasks_total++;
    pending_add(d->tasks, id, j, 0);
    log_info("event=task_sent msg=%s job=%s task=%" PRIu64 " route=%s worker=%s rcpts=%zu "
             "inflight=%u/%u endpoint=%s%s destination=%s source=%s",
             job_of(j)->message_id, job_of(j)->job_id, id, route_name(j->route), w->instance,
             job_of(j)->n_recipients, w->inflight, w->slots,
             plan->n ? route_endpoint_name(j->route, plan->order[0]) : "-",
             plan->probe ? " probe=1" : "", j->key[0] ? j->key : "-",
             source && *source ? source : "-");
    return 0;
}

static try_t try_send(dispatch_t *d, job_t *j, worker_t *w, uint64_t now)
{
    const PB(DeliveryJob) *job = job_of(j);
    health_plan_t plan;
    if (health_plan(d->health, j->route, now, &plan) < 0) {
        fifo_unlink(d, j);
        answer_held(d, j, plan.retry_after_ms, "4.4.1", plan.why, 0);
        job_free(j);
        return TRY_ANSWERED;
    }
    const char *source = "";
    dest_t *dest = NULL;
    if (j->pool) {
        room_ctx_t rc = {d, j, now};
        source_pick_t pick;
        source_pick_kept(d->source, j->pool,
                         j->provider ? j->provider->name : SHAPE_DEFAULT_NAME, j->key,
                         job->attempt > 1, now, dispatch_wall(d), room_from, &rc,
                         &j->source_draw, &pick);
        if (pick.status == SOURCE_NONE) {
            fifo_unlink(d, j);
            answer_held(d, j, pick.wait_ms, "4.4.5", pick.why, 0);
            job_free(j);
            return TRY_ANSWERED;
        }
        if (pick.status == SOURCE_WAIT)
            return blocked(d, j, pick.wait_ms,
                           "the destination is paused or over its limits "
                           "from every address of the pool");
        source = pick.ip;
        if (j->provider)
            dest = shape_dest(d->shape, j->provider, j->key, source, now);
    } else if (j->provider) {
        dest = shape_dest(d->shape, j->provider, j->key, "", now);
        uint64_t wait = dest ? shape_wait(dest, now) : 0;
        if (wait)
            return blocked(d, j, wait,
                           dest_paused_until(dest) > now ? "the destination is paused"
                                                         : "the destination is over its limits");
    }
    if (send_to(d, j, w, &plan, source, now) < 0)
        return TRY_AGAIN;
    health_sent(d->health, j->route, &plan, j->task_id, now);
    if (dest)
        shape_started(dest, now);
    if (*source)
        source_sent(d->source, source, j->provider ? j->provider->name : SHAPE_DEFAULT_NAME,
                    dispatch_wall(d));
    j->dest = dest;
    j->lane->shaped = 0;
    lane_sent(j->lane, now);
    fifo_unlink(d, j);
    return TRY_SENT;
}

/* Hand held jobs to workers while any has a free slot; one look per lane and pass. */
static void pump(dispatch_t *d)
{
    uint64_t now = dispatch_now(d);
    d->pass++;
    lane_t *l = d->round_head;
    while (l) {
        lane_t *next = l->next;
        if (l->blocked_pass == d->pass) {
            l = next;
            continue;
        }
        worker_t *w = worker_pick(d);
        if (w == NULL)
            return;
        int last = l->n == 1; /* its job gone, the lane is freed */
        try_t t = try_send(d, l->head, w, now);
        if (t == TRY_AGAIN)
            continue; /* w is marked broken: try the next best */
        if (t == TRY_BLOCKED || last) {
            l = next;
            continue;
        }
        /* it sent (or answered) one: the others take their turn first */
        if (next) {
            round_unlink(d, l);
            round_append(d, l);
        }
        l = next ? next : l;
    }
}

void dispatch_kick(dispatch_t *d)
{
    pump(d);
}

void dispatch_job(dispatch_t *d, const bus_peer_t *queue, uint64_t request_id, sx_env_t **envp,
                  zmq_msg_t *payload)
{
    uint64_t now = dispatch_now(d);
    job_t *j = xcalloc(1, sizeof(*j));
    j->source_draw = -1;
    j->queue = *queue;
    j->request_id = request_id;
    j->env = *envp;
    *envp = NULL;
    zmq_msg_init(&j->payload);
    zmq_msg_move(&j->payload, payload);
    j->since = now;
    d->jobs_total++;

    const PB(DeliveryJob) *job = job_of(j);
    const char *sender_domain = route_sender_domain(job->mail_from);
    j->route = route_match(d->routes, job->domain, sender_domain, job->tenant, job->stream);
    if (j->route == NULL) {
        char text[300];
        snprintf(text, sizeof(text), "no route for %s", job->domain);
        log_warn("event=no_route msg=%s job=%s domain=%s sender_domain=%s tenant=%s stream=%s",
                 job->message_id, job->job_id, job->domain, sender_domain, job->tenant,
                 job->stream && *job->stream ? job->stream : "-");
        answer_all(d, queue, request_id, job, "", 451, "4.4.0", text);
        job_free(j);
        return;
    }
    health_plan_t plan;
    if (health_plan(d->health, j->route, now, &plan) < 0) {
        answer_held(d, j, plan.retry_after_ms, "4.4.1", plan.why, 0);
        job_free(j);
        return;
    }
    if (route_shaping(j->route))
        j->provider = shape_classify(d->shape, job->domain, now, j->key, sizeof(j->key));
    if (d->source)
        j->pool = source_pool_for(d->source, route_source_pool(j->route), job->tenant);
    j->lane = lane_get(d, j->key, j->pool);
    /* a destination already holding its share: do not wait behind it */
    if (j->provider && j->lane->n > 0 && j->lane->n >= d->lim.shape_queue_max) {
        answer_held(d, j, lane_drain_ms(d, j->lane), "4.4.5",
                    "too many jobs held for this destination", 1);
        job_free(j);
        return;
    }
    fifo_push(d, j);
    log_debug("event=job_held msg=%s job=%s destination=%s pending=%zu", job->message_id,
              job->job_id, j->key[0] ? j->key : "-", d->npending);
    pump(d); /* may send, answer or free j */
    if (d->npending > d->lim.max_pending) {
        job_t *over = d->tail;
        fifo_unlink(d, over);
        const PB(DeliveryJob) *oj = job_of(over);
        log_warn("event=capacity_exhausted msg=%s job=%s pending=%zu max_pending=%zu",
                 oj->message_id, oj->job_id, d->npending, d->lim.max_pending);
        answer_all(d, &over->queue, over->request_id, oj, route_name(over->route), 451, "4.3.2",
                   "delivery capacity exhausted");
        job_free(over);
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
        sx_strlcpy(w->instance, instance && *instance ? instance : "?", sizeof(w->instance));
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
    w->last_seen = dispatch_now(d);
    pump(d);
}

/* ---- results ---- */

static void publish_paused(dispatch_t *d, const job_t *j, const PB(DeliveryRecipient) * rc,
                           PB(Status) * reply, uint64_t now)
{
    if (d->ops.event == NULL)
        return;
    const PB(DeliveryJob) *job = job_of(j);
    char until[32], rate[32];
    uint64_t paused = dest_paused_until(j->dest);
    snprintf(until, sizeof(until), "%" PRIu64,
             dispatch_wall(d) + (paused > now ? paused - now : 0));
    snprintf(rate, sizeof(rate), "%.1f", dest_rate(j->dest));
    const char *keys[] = {"destination",     "provider",  "paused_until_ms",
                          "rate_per_minute", "source_ip", "route"};
    const char *vals[] = {dest_key(j->dest), dest_provider(j->dest)->name, until, rate,
                          j->source,         route_name(j->route)};
    PB(Attr) a[6];
    PB(Attr) * ap[6];
    size_t na = 0;
    for (size_t k = 0; k < 6; k++) {
        if (vals[k] == NULL || *vals[k] == '\0')
            continue;
        PB(Attr) init = PB_INIT(ATTR);
        a[na] = init;
        a[na].key = (char *)keys[k];
        a[na].value = (char *)vals[k];
        ap[na] = &a[na];
        na++;
    }
    PB(Event) ev = PB_INIT(EVENT);
    ev.type = "destination_paused";
    ev.message_id = job->message_id;
    ev.recipient = rc ? rc->address : "";
    ev.rcpt_index = rc ? rc->index : 0;
    ev.sender = job->mail_from;
    ev.tenant = job->tenant;
    ev.reply = reply;
    ev.attempt = job->attempt;
    ev.attrs = ap;
    ev.n_attrs = na;
    d->ops.event(&ev, d->arg);
}

static const PB(DeliveryRecipient) * recipient_of(const PB(DeliveryJob) * job, uint32_t index)
{
    for (size_t i = 0; i < job->n_recipients; i++)
        if (job->recipients[i]->index == index)
            return job->recipients[i];
    return NULL;
}

/* What a finished task teaches: endpoint health, the MX host, slow-downs, blocked addresses. */
static void task_end(dispatch_t *d, job_t *j, const PB(DeliveryResult) * res, uint64_t now)
{
    const PB(DeliveryJob) *job = job_of(j);
    health_result(d->health, j->route, &j->plan, j->task_id, res, now);
    int delivered = 0;
    for (size_t i = 0; res && i < res->n_recipients; i++)
        delivered |=
            res->recipients[i] &&
            res->recipients[i]->outcome == PB_ENUM(DELIVERY_RECIPIENT_RESULT__OUTCOME__DELIVERED);
    if (j->dest)
        shape_finished(j->dest, delivered, now);
    if (res == NULL)
        return;
    if (res->mx_host && *res->mx_host)
        shape_learn_mx(d->shape, job->domain, res->mx_host, now);
    const char *src = res->source_ip && *res->source_ip ? res->source_ip : j->source;
    for (size_t i = 0; i < res->n_recipients; i++) {
        const PB(DeliveryRecipientResult) *rr = res->recipients[i];
        if (rr == NULL || rr->reply == NULL)
            continue;
        if (j->dest && shape_reply_is_slowdown(rr->reply, rr->reason) &&
            shape_slowdown(d->shape, j->dest, rr->reply, now))
            publish_paused(d, j, recipient_of(job, rr->index), rr->reply, now);
        if (j->pool && *src)
            source_reply(d->source, src, j->key, rr->reply, rr->reason, now);
    }
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
        int known =
            got && (got->outcome == PB_ENUM(DELIVERY_RECIPIENT_RESULT__OUTCOME__DEFERRED) ||
                    got->outcome == PB_ENUM(DELIVERY_RECIPIENT_RESULT__OUTCOME__DELIVERED) ||
                    got->outcome == PB_ENUM(DELIVERY_RECIPIENT_RESULT__OUTCOME__BOUNCED));
        if (!known || got->reply == NULL) {
            rr[i].outcome = PB_ENUM(DELIVERY_RECIPIENT_RESULT__OUTCOME__DEFERRED);
            rr[i].reply = failure ? &failed : &missing;
            publish_deferred(d, job, route_name(j->route), rc, rr[i].reply, 0);
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
    /* a worker has no say in whether its own attempt counts */
    res.not_attempted = 0;
    res.retry_after_ms = 0;
    if (res.route == NULL || *res.route == '\0')
        res.route = (char *)route_name(j->route);
    if ((res.source_ip == NULL || *res.source_ip == '\0') && j->source[0])
        res.source_ip = j->source;
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
    uint64_t now = dispatch_now(d);
    worker_t *w = j->worker;
    if (w && w->inflight > 0)
        w->inflight--;
    if (w && worker_find(d, peer) == w)
        w->last_seen = now;
    log_info("event=task_done msg=%s task=%" PRIu64 " worker=%s ms=%" PRIu64 "%s",
             job_of(j)->message_id, task_id, w ? w->instance : "?", now - j->since,
             failure ? " worker_error=1" : "");
    task_end(d, j, failure ? NULL : result, now);
    answer_result(d, j, result, failure);
    job_free(j);
    pump(d);
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

static void worker_lost(dispatch_t *d, size_t idx, uint64_t now)
{
    worker_t *w = d->workers[idx];
    d->workers[idx] = d->workers[--d->nworkers];
    d->workers_lost++;
    log_warn("event=worker_lost worker=%s inflight=%u silent_ms=%" PRIu64, w->instance, w->inflight,
             now - w->last_seen);
    collect_t c = {.worker = w, .ids = xcalloc(pending_count(d->tasks) + 1, sizeof(uint64_t))};
    pending_each(d->tasks, collect_worker_tasks, &c);
    for (size_t i = 0; i < c.n; i++) {
        job_t *j = pending_take(d->tasks, c.ids[i]);
        const PB(DeliveryJob) *job = job_of(j);
        log_warn("event=task_lost msg=%s task=%" PRIu64 " worker=%s", job->message_id, j->task_id,
                 w->instance);
        task_end(d, j, NULL, now);
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
            worker_lost(d, i, now); /* the last one moved into i */
        else
            i++;
    }
    uint64_t first = d->lim.shape_max_wait_ms;
    if (d->lim.pending_timeout_ms && d->lim.pending_timeout_ms < first)
        first = d->lim.pending_timeout_ms;
    /* held jobs are in arrival order: only the old ones at the front need a look */
    for (job_t *j = d->head; j && now >= j->since + first;) {
        job_t *next = j->next;
        const PB(DeliveryJob) *job = job_of(j);
        if (j->lane->shaped && now >= j->since + d->lim.shape_max_wait_ms) {
            uint64_t wait = j->lane->wait_ms;
            fifo_unlink(d, j);
            answer_held(d, j, wait, "4.4.5", "held for its destination too long", 1);
            job_free(j);
        } else if (d->lim.pending_timeout_ms && now >= j->since + d->lim.pending_timeout_ms) {
            log_warn("event=held_too_long msg=%s job=%s held_ms=%" PRIu64, job->message_id,
                     job->job_id, now - j->since);
            fifo_unlink(d, j);
            answer_all(d, &j->queue, j->request_id, job, route_name(j->route), 451, "4.3.2",
                       "no delivery worker had a free slot in time");
            job_free(j);
        }
        j = next;
    }
    pump(d);
}

static void dispatch_tick(loop_t *loop, void *arg)
{
    dispatch_t *d = arg;
    dispatch_expire(d, dispatch_now(d));
    loop_timer_start(loop, &d->tick, DISPATCH_TICK_MS);
}

void dispatch_get_stats(dispatch_t *d, dispatch_stats_t *st)
{
    memset(st, 0, sizeof(*st));
    st->workers = d->nworkers;
    for (size_t i = 0; i < d->nworkers; i++)
        st->free_slots += worker_free(d->workers[i]);
    st->inflight = pending_count(d->tasks);
    st->pending = d->npending;
    st->jobs_total = d->jobs_total;
    st->workers_lost = d->workers_lost;
    st->held_back = d->held_back;
    st->endpoints_down = health_down_count(d->health);
    st->destinations_paused = shape_paused_count(d->shape, dispatch_now(d));
}
