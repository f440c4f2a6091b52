/*
 * router: main of sendarix-router. Reads the router section (routes,
 * provider profiles, source pools, health and shaping limits), opens the
 * router's own store (warm-up counts), binds the job socket queue and
 * sendarixctl connect to and the worker socket delivery workers connect
 * to, and passes messages between them and router_dispatch. It answers
 * the operators' RouterPoolList and RouterPoolDrain. The routing and
 * bookkeeping live in the router_*.c modules; this file is only glue.
 */
#include "core/alloc.h"
#include "core/clock.h"
#include "core/id.h"
#include "core/log.h"
#include "ipc/service.h"
#include "router_dispatch.h"
#include "router_route.h"
#include "router_state.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUTER_FLUSH_MS 1000  /* warm-up counts are written this often */
#define ROUTER_SWEEP_MS 60000 /* idle destinations and old MX hosts are dropped this often */

typedef struct router_conf {
    route_table_t *routes;
    provider_table_t *providers;
    pool_table_t *pools;
    tenant_pools_t *tenant_pools;
    uint64_t worker_timeout;
    long long max_pending;
    uint64_t pending_timeout;
    uint64_t probe_base;
    uint64_t probe_max;
    uint64_t shape_max_wait;
    long long shape_queue_max;
    uint64_t pause_base;
    uint64_t pause_max;
    uint64_t recover_interval;
    long long recover_percent;
    long long mx_cache_max;
    uint64_t mx_cache_ttl;
    long long destinations_max;
    long long warmup_first_day;
    long long warmup_ready;
    uint64_t deprioritize_for;
    long long deprioritize_divisor;
} router_conf_t;

#define F(name, type, field, def, min, max, doc)                                                   \
    {                                                                                              \
        name, type, offsetof(router_conf_t, field), def, min, max, 0, NULL, NULL, doc              \
    }

static const conf_field_t router_table[] = {
    {"routes", CONF_CUSTOM, offsetof(router_conf_t, routes), NULL, 0, 0, 0, route_table_parse,
     route_table_release,
     "routes, first match wins: ( { name; kind; endpoints; tls; match; source_pool; ... } )"},
    {"providers", CONF_CUSTOM, offsetof(router_conf_t, providers), NULL, 0, 0, 0,
     provider_table_parse, provider_table_release,
     "provider profiles, merged over the built-in ones: ( { name; domains; mx; connections; "
     "messages_per_connection; rate_per_minute } )"},
    {"source_pools", CONF_CUSTOM, offsetof(router_conf_t, pools), NULL, 0, 0, 0, pool_table_parse,
     pool_table_release,
     "source address pools: ( { name; addresses = ( { address; weight; warmup } ) } )"},
    {"tenant_pools", CONF_CUSTOM, offsetof(router_conf_t, tenant_pools), NULL, 0, 0, 0,
     tenant_pools_parse, tenant_pools_release,
     "the source pool of a tenant's mail: ( { tenant; pool } )"},
    F("worker_timeout", CONF_DURATION, worker_timeout, "5s", 500, 3600000,
      "a delivery worker silent this long is dropped, its tasks deferred"),
    F("max_pending", CONF_INT, max_pending, "10000", 0, 10000000,
      "jobs held while no worker has a free slot; past it jobs are deferred at once"),
    F("pending_timeout", CONF_DURATION, pending_timeout, "2m", 0, 86400000,
      "a job held this long without a free slot is deferred (0: never)"),
    F("probe_base", CONF_DURATION, probe_base, "5s", 100, 3600000,
      "a down endpoint is probed after this, then after twice as long each time"),
    F("probe_max", CONF_DURATION, probe_max, "5m", 100, 86400000,
      "the longest wait between two probes of a down endpoint"),
    F("shape_max_wait", CONF_DURATION, shape_max_wait, "5s", 0, 600000,
      "a job held for its destination's limits longer goes back to queue, not attempted"),
    F("shape_queue_max", CONF_INT, shape_queue_max, "1000", 0, 10000000,
      "jobs held per destination; more go back to queue, not attempted"),
    F("pause_base", CONF_DURATION, pause_base, "60s", 100, 86400000,
      "a destination's first pause after a slow-down reply; doubles each time"),
    F("pause_max", CONF_DURATION, pause_max, "15m", 100, 86400000,
      "the longest pause of a destination"),
    F("recover_interval", CONF_DURATION, recover_interval, "60s", 100, 86400000,
      "after a pause, the rate grows once per this long with a success"),
    F("recover_percent", CONF_INT, recover_percent, "10", 1, 1000,
      "how much the rate grows per recovery step, in percent"),
    F("mx_cache_max", CONF_INT, mx_cache_max, "10000", 0, 10000000,
      "MX hosts learnt from delivery, kept to match providers by MX"),
    F("mx_cache_ttl", CONF_DURATION, mx_cache_ttl, "1h", 1000, 604800000,
      "how long a learnt MX host is kept"),
    F("destinations_max", CONF_INT, destinations_max, "100000", 100, 100000000,
      "destinations tracked for shaping"),
    F("warmup_first_day", CONF_INT, warmup_first_day, "50", 1, 100000000,
      "a warming address's tasks per provider on its first day; doubles each day"),
    F("warmup_ready", CONF_INT, warmup_ready, "100000", 1, 1000000000,
      "a warming address whose daily allowance reaches this is warm"),
    F("deprioritize_for", CONF_DURATION, deprioritize_for, "30m", 1000, 604800000,
      "how long an address a provider blocked or slowed stays deprioritized for it"),
    F("deprioritize_divisor", CONF_INT, deprioritize_divisor, "10", 1, 1000000,
      "a deprioritized address's weight is divided by this"),
    {NULL},
};

typedef struct router {
    service_t *svc;
    bus_server_t *jobs;
    bus_server_t *workers;
    dispatch_t *dispatch;
    shape_t *shape;
    source_t *source;
    rstate_t *state;
    loop_timer_t flush;
    loop_timer_t sweep;
} router_t;

/* ---- dispatch ops ---- */

static int op_send_task(const bus_peer_t *worker, uint64_t task_id, PB(DeliveryTask) * task,
                        zmq_msg_t *payload, void *arg)
{
    router_t *rt = arg;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(DELIVERY_TASK);
    env.delivery_task = task;
    return bus_server_send(rt->workers, worker, task_id, &env, payload);
}

static void op_answer(const bus_peer_t *queue, uint64_t request_id, PB(DeliveryResult) * result,
                      void *arg)
{
    router_t *rt = arg;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(DELIVERY_RESULT);
    env.delivery_result = result;
    if (bus_server_send(rt->jobs, queue, request_id, &env, NULL) < 0)
        log_warn("event=answer_failed msg=%s job=%s", result->message_id, result->job_id);
}

static void op_event(PB(Event) * ev, void *arg)
{
    router_t *rt = arg;
    service_event(rt->svc, ev);
}

static void router_stats(PB(ServicePong) * pong, void *arg)
{
    router_t *rt = arg;
    dispatch_stats_t st;
    dispatch_get_stats(rt->dispatch, &st);
    bus_pong_stat(pong, "workers", "%zu", st.workers);
    bus_pong_stat(pong, "free_slots", "%zu", st.free_slots);
    bus_pong_stat(pong, "tasks_in_flight", "%zu", st.inflight);
    bus_pong_stat(pong, "pending", "%zu", st.pending);
    bus_pong_stat(pong, "jobs_total", "%" PRIu64, st.jobs_total);
    bus_pong_stat(pong, "workers_lost", "%" PRIu64, st.workers_lost);
    bus_pong_stat(pong, "held_back", "%" PRIu64, st.held_back);
    bus_pong_stat(pong, "endpoints_down", "%zu", st.endpoints_down);
    bus_pong_stat(pong, "destinations_paused", "%zu", st.destinations_paused);
}

/* ---- pool list and drain ---- */

/* A monotonic time of the dispatcher as wall-clock ms (0 stays 0). */
static uint64_t to_wall(router_t *rt, uint64_t mono)
{
    if (mono == 0)
        return 0;
    uint64_t now = dispatch_now(rt->dispatch), wall = dispatch_wall(rt->dispatch);
    return mono >= now ? wall + (mono - now) : wall - (now - mono);
}

typedef struct listing {
    router_t *rt;
    PB(RouterEndpointState) * *eps;
    size_t neps;
    PB(RouterDestinationState) * *dests;
    size_t ndests;
    PB(RouterSourceState) * *srcs;
    size_t nsrcs;
} listing_t;

static void *grow(void *v, size_t n)
{
    return xrealloc(v, (n + 1) * sizeof(void *));
}

static void add_endpoint(const health_view_t *v, void *arg)
{
    listing_t *l = arg;
    PB(RouterEndpointState) *e = xmalloc(sizeof(*e));
    PB(RouterEndpointState) init = PB_INIT(ROUTER_ENDPOINT_STATE);
    *e = init;
    e->route = xstrdup(v->route);
    e->endpoint = xstrdup(v->endpoint);
    e->state = xstrdup(v->state);
    e->failures = v->failures;
    e->down_since_ms = to_wall(l->rt, v->down_since);
    e->next_probe_ms = to_wall(l->rt, v->next_probe);
    e->last_error = xstrdup(v->last_error);
    e->last_ok_ms = to_wall(l->rt, v->last_ok);
    e->inflight = v->inflight;
    l->eps = grow(l->eps, l->neps);
    l->eps[l->neps++] = e;
}

static void add_dest(const dest_view_t *v, void *arg)
{
    listing_t *l = arg;
    PB(RouterDestinationState) *e = xmalloc(sizeof(*e));
    PB(RouterDestinationState) init = PB_INIT(ROUTER_DESTINATION_STATE);
    *e = init;
    e->key = xstrdup(v->key);
    e->provider = xstrdup(v->provider);
    e->paused_until_ms = to_wall(l->rt, v->paused_until);
    e->rate_per_minute = v->rate_per_minute;
    e->connection_limit = v->connection_limit;
    e->inflight = v->inflight;
    e->reason = xstrdup(v->reason);
    l->dests = grow(l->dests, l->ndests);
    l->dests[l->ndests++] = e;
}

static void add_source(const source_view_t *v, void *arg)
{
    listing_t *l = arg;
    PB(RouterSourceState) *e = xmalloc(sizeof(*e));
    PB(RouterSourceState) init = PB_INIT(ROUTER_SOURCE_STATE);
    *e = init;
    e->pool = xstrdup(v->pool);
    e->address = xstrdup(v->address);
    e->provider = xstrdup(v->provider);
    e->state = xstrdup(v->state);
    e->sent_today = v->sent_today;
    e->daily_limit = v->daily_limit;
    e->weight = v->weight;
    l->srcs = grow(l->srcs, l->nsrcs);
    l->srcs[l->nsrcs++] = e;
}

static int dest_cmp(const void *a, const void *b)
{
    const PB(RouterDestinationState) *x = *(PB(RouterDestinationState) *const *)a;
    const PB(RouterDestinationState) *y = *(PB(RouterDestinationState) *const *)b;
    return strcmp(x->key, y->key);
}

static void free_endpoints(PB(RouterEndpointState) * *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i]->route);
        free(v[i]->endpoint);
        free(v[i]->state);
        free(v[i]->last_error);
        free(v[i]);
    }
    free(v);
}

static void on_pool_list(router_t *rt, const bus_peer_t *peer, uint64_t rid)
{
    listing_t l = {.rt = rt};
    uint64_t now = dispatch_now(rt->dispatch);
    health_each(dispatch_health(rt->dispatch), add_endpoint, &l);
    shape_each(dispatch_shape(rt->dispatch), now, add_dest, &l);
    if (l.ndests > 1)
        qsort(l.dests, l.ndests, sizeof(*l.dests), dest_cmp);
    if (dispatch_source(rt->dispatch))
        source_each(dispatch_source(rt->dispatch), now, dispatch_wall(rt->dispatch), add_source,
                    &l);
    PB(RouterPoolListReply) reply = PB_INIT(ROUTER_POOL_LIST_REPLY);
    reply.endpoints = l.eps;
    reply.n_endpoints = l.neps;
    reply.destinations = l.dests;
    reply.n_destinations = l.ndests;
    reply.sources = l.srcs;
    reply.n_sources = l.nsrcs;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(ROUTER_POOL_LIST_REPLY);
    env.router_pool_list_reply = &reply;
    if (bus_server_send(rt->jobs, peer, rid, &env, NULL) < 0)
        log_warn("event=answer_failed what=pool_list");
    free_endpoints(l.eps, l.neps);
    for (size_t i = 0; i < l.ndests; i++) {
        free(l.dests[i]->key);
        free(l.dests[i]->provider);
        free(l.dests[i]->reason);
        free(l.dests[i]);
    }
    free(l.dests);
    for (size_t i = 0; i < l.nsrcs; i++) {
        free(l.srcs[i]->pool);
        free(l.srcs[i]->address);
        free(l.srcs[i]->provider);
        free(l.srcs[i]->state);
        free(l.srcs[i]);
    }
    free(l.srcs);
}

static void on_pool_drain(router_t *rt, bus_server_t *srv, const bus_peer_t *peer, uint64_t rid,
                          const PB(RouterPoolDrain) * req)
{
    const char *endpoint = req && req->endpoint ? req->endpoint : "";
    const char *route = req && req->route ? req->route : "";
    if (*endpoint == '\0') {
        bus_server_error(srv, peer, rid, 501, "5.5.4", "an endpoint \"host:port\" is required");
        return;
    }
    listing_t l = {.rt = rt};
    size_t n =
        health_drain(dispatch_health(rt->dispatch), route, endpoint, req->drain, add_endpoint, &l);
    if (n == 0) {
        bus_server_error(srv, peer, rid, 404, "5.1.0", "no endpoint %s%s%s", endpoint,
                         *route ? " in route " : " in any route", route);
        return;
    }
    PB(RouterPoolDrainReply) reply = PB_INIT(ROUTER_POOL_DRAIN_REPLY);
    reply.endpoints = l.eps;
    reply.n_endpoints = l.neps;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(ROUTER_POOL_DRAIN_REPLY);
    env.router_pool_drain_reply = &reply;
    if (bus_server_send(srv, peer, rid, &env, NULL) < 0)
        log_warn("event=answer_failed what=pool_drain");
    free_endpoints(l.eps, l.neps);
    dispatch_kick(rt->dispatch);
}

/* ---- bus handlers ---- */

/* A job from a peer is checked before it is routed: never trust its shape. */
static const char *job_invalid(const PB(DeliveryJob) * job)
{
    if (job == NULL)
        return "empty job";
    if (job->n_recipients == 0)
        return "job without recipients";
    if (job->message_id == NULL || *job->message_id == '\0')
        return "job without message id";
    if (job->domain == NULL || *job->domain == '\0')
        return "job without recipient domain";
    for (size_t i = 0; i < job->n_recipients; i++)
        if (job->recipients[i] == NULL || job->recipients[i]->address == NULL ||
            *job->recipients[i]->address == '\0')
            return "recipient without address";
    return NULL;
}

static void on_job(bus_server_t *srv, bus_msg_t *msg, void *arg)
{
    router_t *rt = arg;
    uint64_t rid = msg->env->request_id;
    if (msg->env->body_case == PB_BODY(ROUTER_POOL_LIST)) {
        on_pool_list(rt, &msg->peer, rid);
        return;
    }
    if (msg->env->body_case == PB_BODY(ROUTER_POOL_DRAIN)) {
        on_pool_drain(rt, srv, &msg->peer, rid, msg->env->router_pool_drain);
        return;
    }
    if (msg->env->body_case != PB_BODY(DELIVERY_JOB)) {
        log_warn("event=unexpected_request body=%s sender=%s", codec_body_name(msg->env),
                 msg->env->sender);
        bus_server_error(srv, &msg->peer, rid, 502, "5.5.1", "router does not serve %s",
                         codec_body_name(msg->env));
        return;
    }
    const char *why = job_invalid(msg->env->delivery_job);
    if (why) {
        log_warn("event=job_refused reason=\"%s\" sender=%s request=%" PRIu64, why,
                 msg->env->sender, rid);
        bus_server_error(srv, &msg->peer, rid, 501, "5.5.4", "%s", why);
        return;
    }
    /* the job's envelope and body stay with it until it is answered: take them */
    sx_env_t *env = msg->env;
    msg->env = NULL;
    zmq_msg_t payload;
    bus_msg_take_payload(msg, &payload);
    dispatch_job(rt->dispatch, &msg->peer, rid, &env, &payload);
    zmq_msg_close(&payload);
}

static void on_worker(bus_server_t *srv, bus_msg_t *msg, void *arg)
{
    router_t *rt = arg;
    sx_env_t *env = msg->env;
    switch (env->body_case) {
    case PB_BODY(DELIVERY_WORKER_READY):
        dispatch_worker_ready(rt->dispatch, &msg->peer, env->delivery_worker_ready->instance,
                              env->delivery_worker_ready->slots);
        return;
    case PB_BODY(DELIVERY_RESULT):
        dispatch_result(rt->dispatch, &msg->peer, env->request_id, env->delivery_result, NULL);
        return;
    case PB_BODY(ERROR): {
        PB(Status) none = PB_INIT(STATUS);
        dispatch_result(rt->dispatch, &msg->peer, env->request_id, NULL,
                        env->error->status ? env->error->status : &none);
        return;
    }
    default:
        log_warn("event=unexpected_message body=%s sender=%s", codec_body_name(env), env->sender);
        bus_server_error(srv, &msg->peer, env->request_id, 502, "5.5.1",
                         "router workers socket does not serve %s", codec_body_name(env));
        return;
    }
}

/* ---- timers ---- */

static void on_flush(loop_t *loop, void *arg)
{
    router_t *rt = arg;
    rstate_flush(rt->state, rt->source);
    loop_timer_start(loop, &rt->flush, ROUTER_FLUSH_MS);
}

static void on_sweep(loop_t *loop, void *arg)
{
    router_t *rt = arg;
    shape_sweep(rt->shape, loop_now(loop));
    loop_timer_start(loop, &rt->sweep, ROUTER_SWEEP_MS);
}

/* ---- start-up ---- */

/* A setting that passed the table but not a check across settings: print it with its line. */
static void conf_fail(const service_t *svc, const char *list, int index, const char *key,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void conf_fail(const service_t *svc, const char *list, int index, const char *key,
                      const char *fmt, ...)
{
    char reason[512], where[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    const config_setting_t *g = conf_group(svc->conf, "router");
    const config_setting_t *s = g ? config_setting_get_member(g, list) : NULL;
    s = s ? config_setting_get_elem(s, (unsigned)index) : NULL;
    const config_setting_t *m = s ? config_setting_get_member(s, key) : NULL;
    if (m || s)
        conf_where(m ? m : s, where, sizeof(where));
    else
        sx_strlcpy(where, conf_path(svc->conf), sizeof(where));
    fprintf(stderr, "sendarix-router: %s: router.%s[%d].%s: %s\n", where, list, index + 1, key,
            reason);
}

/* Every pool a route or tenant names exists. 0, or -1 after printing which does not. */
static int check_pools(const service_t *svc, const router_conf_t *c)
{
    for (size_t i = 0; i < route_table_count(c->routes); i++) {
        const char *pool = route_source_pool(route_table_get(c->routes, i));
        if (*pool && pool_find(c->pools, pool) == NULL) {
            conf_fail(svc, "routes", (int)i, "source_pool", "no source pool named \"%s\"", pool);
            return -1;
        }
    }
    for (size_t i = 0; i < tenant_pools_count(c->tenant_pools); i++) {
        const char *tenant, *pool;
        tenant_pools_get(c->tenant_pools, i, &tenant, &pool);
        if (pool_find(c->pools, pool) == NULL) {
            conf_fail(svc, "tenant_pools", (int)i, "pool", "no source pool named \"%s\"", pool);
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    service_t svc;
    router_conf_t conf = {0};
    router_t rt = {.svc = &svc};
    int rc = 1;
    if (service_init(&svc, "router", argc, argv) < 0)
        goto out;
    if (service_section(&svc, router_table, &conf) < 0 || check_pools(&svc, &conf) < 0)
        goto out;
    const char *jobs_ep = service_endpoint(&svc, &svc.ep.router);
    const char *workers_ep = service_endpoint(&svc, &svc.ep.router_workers);
    if (jobs_ep == NULL || workers_ep == NULL) {
        fprintf(stderr,
                "sendarix-router: %s: bus.router and bus.router_workers need an "
                "endpoint for instance %s\n",
                svc.config_path, svc.instance);
        goto out;
    }
    char dir[512], err[512];
    rt.state = rstate_open(service_store_dir(&svc, dir, sizeof(dir)), err, sizeof(err));
    if (rt.state == NULL) {
        fprintf(stderr, "sendarix-router: %s\n", err);
        goto out;
    }
    shape_limits_t sl = {.pause_base_ms = conf.pause_base,
                         .pause_max_ms = conf.pause_max,
                         .recover_interval_ms = conf.recover_interval,
                         .recover_step = (double)conf.recover_percent / 100.0,
                         .mx_cache_max = (size_t)conf.mx_cache_max,
                         .mx_cache_ttl_ms = conf.mx_cache_ttl,
                         .dests_max = (size_t)conf.destinations_max};
    rt.shape = shape_new(conf.providers, &sl);
    source_limits_t srcl = {.warmup_first_day = (uint64_t)conf.warmup_first_day,
                            .warmup_ready = (uint64_t)conf.warmup_ready,
                            .deprioritize_ms = conf.deprioritize_for,
                            .deprioritize_divisor = (uint32_t)conf.deprioritize_divisor};
    rt.source = source_new(conf.pools, conf.tenant_pools, &srcl, id_random64());
    if (rstate_load(rt.state, rt.source, clock_wall_ms()) < 0) {
        fprintf(stderr, "sendarix-router: %s: cannot read the router's store\n", dir);
        goto out;
    }
    dispatch_limits_t lim = {
        .worker_timeout_ms = conf.worker_timeout,
        .max_pending = (size_t)conf.max_pending,
        .pending_timeout_ms = conf.pending_timeout,
        .shape_max_wait_ms = conf.shape_max_wait,
        .shape_queue_max = (size_t)conf.shape_queue_max,
        .health = {.probe_base_ms = conf.probe_base, .probe_max_ms = conf.probe_max}};
    dispatch_ops_t ops = {.send_task = op_send_task, .answer = op_answer, .event = op_event};
    rt.dispatch = dispatch_new(svc.loop, conf.routes, &lim, &ops, &rt);
    dispatch_set_shaping(rt.dispatch, rt.shape, pool_table_count(conf.pools) ? rt.source : NULL);
    rt.jobs = bus_server_new(svc.bus, jobs_ep, on_job, &rt);
    rt.workers = bus_server_new(svc.bus, workers_ep, on_worker, &rt);
    if (rt.jobs == NULL || rt.workers == NULL)
        goto out;
    bus_set_stats(svc.bus, router_stats, &rt);
    loop_timer_init(&rt.flush, on_flush, &rt);
    loop_timer_start(svc.loop, &rt.flush, ROUTER_FLUSH_MS);
    loop_timer_init(&rt.sweep, on_sweep, &rt);
    loop_timer_start(svc.loop, &rt.sweep, ROUTER_SWEEP_MS);
    for (size_t i = 0; i < route_table_count(conf.routes); i++) {
        const route_t *r = route_table_get(conf.routes, i);
        char ep[300] = "";
        if (route_endpoint_count(r) > 0)
            route_endpoint_text(r, 0, ep, sizeof(ep));
        static const char *const tls_names[] = {"none", "opportunistic", "required"};
        log_info("event=route name=%s kind=%s tls=%s endpoints=%zu first=%s source_pool=%s "
                 "shaping=%d",
                 route_name(r), route_kind(r) == ROUTE_MX ? "mx" : "smarthost",
                 tls_names[route_tls(r)], route_endpoint_count(r), ep[0] ? ep : "-",
                 *route_source_pool(r) ? route_source_pool(r) : "-", route_shaping(r));
    }
    for (size_t i = 0; i < provider_table_count(conf.providers); i++) {
        const provider_t *p = provider_table_get(conf.providers, i);
        log_info("event=provider name=%s domains=%zu mx=%zu connections=%u "
                 "messages_per_connection=%u rate_per_minute=%.1f",
                 p->name, p->ndomains, p->nmx, p->connections, p->messages_per_connection,
                 p->rate_per_minute);
    }
    rc = service_run(&svc) == 0 ? 0 : 1;
    loop_timer_stop(svc.loop, &rt.flush);
    loop_timer_stop(svc.loop, &rt.sweep);
    rstate_flush(rt.state, rt.source);
out:
    bus_server_destroy(&rt.jobs);
    bus_server_destroy(&rt.workers);
    dispatch_destroy(&rt.dispatch);
    shape_destroy(&rt.shape);
    source_destroy(&rt.source);
    rstate_close(&rt.state);
    conf_release(router_table, &conf);
    service_fini(&svc);
    return rc;
}
