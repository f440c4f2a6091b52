/*
 * router: main of sendarix-router. Reads the router section (the route
 * table and limits), binds the job socket queue connects to and the worker
 * socket delivery workers connect to, and passes messages between them and
 * router_dispatch. The routing and bookkeeping live in router_route.c and
 * router_dispatch.c; this file is only glue.
 */
#include "core/log.h"
#include "ipc/service.h"
#include "router_dispatch.h"
#include "router_route.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>

typedef struct router_conf {
    route_table_t *routes;
    uint64_t worker_timeout;
    long long max_pending;
    uint64_t pending_timeout;
} router_conf_t;

static const conf_field_t router_table[] = {
    {"routes", CONF_CUSTOM, offsetof(router_conf_t, routes), NULL, 0, 0, 0, route_table_parse,
     route_table_release, "routes, first match wins: ( { name; kind; endpoints; tls; match } )"},
    {"worker_timeout", CONF_DURATION, offsetof(router_conf_t, worker_timeout), "5s", 500,
     3600000, 0, NULL, NULL, "a delivery worker silent this long is dropped, its tasks deferred"},
    {"max_pending", CONF_INT, offsetof(router_conf_t, max_pending), "10000", 0, 10000000, 0,
     NULL, NULL, "jobs held while no worker has a free slot; past it jobs are deferred at once"},
    {"pending_timeout", CONF_DURATION, offsetof(router_conf_t, pending_timeout), "2m", 0,
     86400000, 0, NULL, NULL, "a job held this long without a free slot is deferred (0: never)"},
    {NULL},
};

typedef struct router {
    service_t *svc;
    bus_server_t *jobs;
    bus_server_t *workers;
    dispatch_t *dispatch;
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
        log_warn("event=unexpected_message body=%s sender=%s", codec_body_name(env),
                 env->sender);
        bus_server_error(srv, &msg->peer, env->request_id, 502, "5.5.1",
                         "router workers socket does not serve %s", codec_body_name(env));
        return;
    }
}

int main(int argc, char **argv)
{
    service_t svc;
    router_conf_t conf = {0};
    router_t rt = {.svc = &svc};
    int rc = 1;
    if (service_init(&svc, "router", argc, argv) < 0)
        goto out;
    if (service_section(&svc, router_table, &conf) < 0)
        goto out;
    const char *jobs_ep = service_endpoint(&svc, &svc.ep.router);
    const char *workers_ep = service_endpoint(&svc, &svc.ep.router_workers);
    if (jobs_ep == NULL || workers_ep == NULL) {
        fprintf(stderr, "sendarix-router: %s: bus.router and bus.router_workers need an "
                        "endpoint for instance %s\n",
                svc.config_path, svc.instance);
        goto out;
    }
    dispatch_limits_t lim = {.worker_timeout_ms = conf.worker_timeout,
                             .max_pending = (size_t)conf.max_pending,
                             .pending_timeout_ms = conf.pending_timeout};
    dispatch_ops_t ops = {.send_task = op_send_task, .answer = op_answer, .event = op_event};
    rt.dispatch = dispatch_new(svc.loop, conf.routes, &lim, &ops, &rt);
    rt.jobs = bus_server_new(svc.bus, jobs_ep, on_job, &rt);
    rt.workers = bus_server_new(svc.bus, workers_ep, on_worker, &rt);
    if (rt.jobs == NULL || rt.workers == NULL)
        goto out;
    bus_set_stats(svc.bus, router_stats, &rt);
    for (size_t i = 0; i < route_table_count(conf.routes); i++) {
        const route_t *r = route_table_get(conf.routes, i);
        char ep[300] = "";
        if (route_endpoint_count(r) > 0)
            route_endpoint_text(r, 0, ep, sizeof(ep));
        static const char *const tls_names[] = {"none", "opportunistic", "required"};
        log_info("event=route name=%s kind=%s tls=%s endpoints=%zu first=%s", route_name(r),
                 route_kind(r) == ROUTE_MX ? "mx" : "smarthost", tls_names[route_tls(r)],
                 route_endpoint_count(r), ep[0] ? ep : "-");
    }
    rc = service_run(&svc) == 0 ? 0 : 1;
out:
    bus_server_destroy(&rt.jobs);
    bus_server_destroy(&rt.workers);
    dispatch_destroy(&rt.dispatch);
    conf_release(router_table, &conf);
    service_fini(&svc);
    return rc;
}
