/*
 * delivery: main of sendarix-delivery, a delivery worker. Reads the
 * delivery section, binds its control socket, connects to every router's
 * worker socket, announces its free slots there every second (the
 * heartbeat), runs the DeliveryTasks routers send (delivery_task.c) and
 * answers each with its DeliveryResult on the same connection. It owns
 * what tasks share: the resolver, the pool of kept connections, the
 * MTA-STS policy cache and its HTTPS fetcher, the required-TLS list. The
 * SMTP dialogue and the per-task logic live in their own files; this is
 * glue.
 */
#include "core/alloc.h"
#include "core/id.h"
#include "core/log.h"
#include "delivery_fetch.h"
#include "delivery_policy.h"
#include "delivery_pool.h"
#include "delivery_dkim.h"
#include "delivery_resolve.h"
#include "delivery_session.h"
#include "delivery_task.h"
#include "ipc/service.h"
#include "mail/address.h"
#include "net/tls.h"

#include <ctype.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DELIVERY_HEARTBEAT_MS 1000
#define DELIVERY_HEARTBEAT_RETRY_MS 200
#define DELIVERY_ROUTERS_MAX  16
#define DELIVERY_POOL_MAX     1000 /* kept connections per worker */
#define DELIVERY_TLS_LIST_MAX 1000 /* require_tls patterns */

/* Destinations that take mail over verified TLS only (recipient domain or MX host). */
static const char *const default_require_tls[] = {
    "gmail.com",     "googlemail.com", "*.google.com",   "outlook.com",
    "hotmail.com",   "*.outlook.com",  "*.protection.outlook.com",
    "yahoo.com",     "*.yahoodns.net", NULL,
};

typedef struct tls_list {
    char **v;
    size_t n;
} tls_list_t;

typedef struct delivery_conf {
    long long slots;
    char *helo;
    uint64_t connect_timeout;
    uint64_t command_timeout;
    uint64_t greeting_timeout;
    uint64_t data_timeout;
    char *tls_ca_file;
    char *resolver;
    long long mx_port;
    uint64_t idle_timeout;
    tls_list_t require_tls;
    int mta_sts;
    long long mta_sts_port;
    uint64_t mta_sts_timeout;
} delivery_conf_t;

static void tls_list_release(void *field)
{
    tls_list_t *l = field;
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static void tls_list_push(tls_list_t *l, const char *v)
{
    l->v = xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
    l->v[l->n] = xstrdup(v);
    for (char *p = l->v[l->n]; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    l->n++;
}

/* A name pattern: "example.com" or "*.example.com", letters, digits, dots and hyphens. */
static int tls_pattern_ok(const char *v)
{
    const char *p = strncmp(v, "*.", 2) == 0 ? v + 2 : v;
    if (*p == '\0' || *p == '.' || strlen(v) >= MX_NAME_MAX)
        return 0;
    for (; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' && *p != '_')
            return 0;
    return 1;
}

/* delivery.require_tls: absent gives the default list; [ ] means none. */
static int tls_list_parse(const config_setting_t *s, void *field, char *err, size_t errlen)
{
    tls_list_t *l = field;
    memset(l, 0, sizeof(*l));
    if (s == NULL) {
        for (size_t i = 0; default_require_tls[i]; i++)
            tls_list_push(l, default_require_tls[i]);
        return 0;
    }
    if (config_setting_type(s) != CONFIG_TYPE_ARRAY &&
        config_setting_type(s) != CONFIG_TYPE_LIST) {
        snprintf(err, errlen,
                 "expected a list of domain patterns: [ \"example.com\", \"*.example.net\" ]");
        return -1;
    }
    int n = config_setting_length(s);
    if (n > DELIVERY_TLS_LIST_MAX) {
        snprintf(err, errlen, "%d patterns, at most %d", n, DELIVERY_TLS_LIST_MAX);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        const char *v = config_setting_get_string_elem(s, i);
        if (v == NULL || !tls_pattern_ok(v)) {
            snprintf(err, errlen, "element %d is not a domain or \"*.domain\" pattern", i + 1);
            tls_list_release(l);
            return -1;
        }
        tls_list_push(l, v);
    }
    return 0;
}

static const conf_field_t delivery_table[] = {
    {"slots", CONF_INT, offsetof(delivery_conf_t, slots), "32", 1, 10000, 0, NULL, NULL,
     "deliveries this worker runs at once"},
    {"helo", CONF_STRING, offsetof(delivery_conf_t, helo), "", 0, 0, 0, NULL, NULL,
     "our name in EHLO (default: relay.hostname); a route's helo wins"},
    {"connect_timeout", CONF_DURATION, offsetof(delivery_conf_t, connect_timeout), "5s", 100,
     600000, 0, NULL, NULL, "how long a TCP connect may take (then the next address is tried)"},
    {"command_timeout", CONF_DURATION, offsetof(delivery_conf_t, command_timeout), "60s", 100,
     3600000, 0, NULL, NULL, "how long the server may take to answer a command"},
    {"greeting_timeout", CONF_DURATION, offsetof(delivery_conf_t, greeting_timeout), "5s", 100,
     3600000, 0, NULL, NULL,
     "how long a smart host may take to greet before it counts as down (MX hosts get "
     "command_timeout)"},
    {"data_timeout", CONF_DURATION, offsetof(delivery_conf_t, data_timeout), "5m", 100,
     7200000, 0, NULL, NULL, "how long the body transfer and the final reply may take"},
    {"tls_ca_file", CONF_STRING, offsetof(delivery_conf_t, tls_ca_file), "", 0, 0, 0, NULL, NULL,
     "trust anchors for required TLS (PEM); empty: the system store"},
    {"resolver", CONF_STRING, offsetof(delivery_conf_t, resolver), "", 0, 0, 0, NULL, NULL,
     "DNS servers \"ip[:port],...\"; empty: /etc/resolv.conf"},
    {"mx_port", CONF_INT, offsetof(delivery_conf_t, mx_port), "25", 1, 65535, 0, NULL, NULL,
     "the SMTP port of MX hosts (tests point it at a sandbox)"},
    {"idle_timeout", CONF_DURATION, offsetof(delivery_conf_t, idle_timeout), "30s", 0, 3600000, 0,
     NULL, NULL, "how long a kept connection waits for the next message; 0: none kept"},
    {"require_tls", CONF_CUSTOM, offsetof(delivery_conf_t, require_tls), NULL, 0, 0, 0,
     tls_list_parse, tls_list_release,
     "recipient domains or MX hosts (\"*.domain\": any name below) reached over verified TLS "
     "only; absent: the large mailbox providers; [ ]: none"},
    {"mta_sts", CONF_BOOL, offsetof(delivery_conf_t, mta_sts), "true", 0, 0, 0, NULL, NULL,
     "look up and apply recipient domains' MTA-STS policies (RFC 8461)"},
    {"mta_sts_port", CONF_INT, offsetof(delivery_conf_t, mta_sts_port), "443", 1, 65535, 0, NULL,
     NULL, "the HTTPS port of mta-sts.<domain> (tests point it elsewhere)"},
    {"mta_sts_timeout", CONF_DURATION, offsetof(delivery_conf_t, mta_sts_timeout), "10s", 100,
     120000, 0, NULL, NULL, "how long fetching one MTA-STS policy may take"},
    {NULL},
};

typedef struct delivery delivery_t;

/* One task from one router, running or waiting for a slot. */
typedef struct work {
    delivery_t *dl;
    size_t router; /* index into clients */
    uint64_t request_id;
    task_t *task;
    int running;
    struct work *prev, *next;
} work_t;

struct delivery {
    service_t *svc;
    delivery_conf_t conf;
    delivery_ctx_t ctx;
    bus_server_t *control;
    bus_client_t *routers[DELIVERY_ROUTERS_MAX];
    size_t nrouters;
    size_t running_by[DELIVERY_ROUTERS_MAX];
    int router_up[DELIVERY_ROUTERS_MAX]; /* the last heartbeat went out */
    size_t running;
    work_t *works;           /* every task, running or not */
    work_t *wait_head;       /* FIFO of tasks beyond the slots */
    size_t waiting;
    uint64_t tasks_total;
    uint64_t results_lost;
    loop_timer_t heartbeat;
    uint64_t rand_state;
};

/* ---- work list ---- */

static void work_unlink(delivery_t *dl, work_t *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        dl->works = w->next;
    if (w->next)
        w->next->prev = w->prev;
}

static void work_free(delivery_t *dl, work_t *w)
{
    work_unlink(dl, w);
    task_destroy(&w->task);
    free(w);
}

static void start_waiting(delivery_t *dl);

static void send_result(delivery_t *dl, size_t router, uint64_t request_id,
                        PB(DeliveryResult) * result)
{
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(DELIVERY_RESULT);
    env.delivery_result = result;
    if (bus_client_send(dl->routers[router], request_id, &env, NULL) < 0) {
        dl->results_lost++;
        log_warn("event=result_send_failed msg=%s task=%" PRIu64 " router=%s",
                 result->message_id, request_id, bus_client_endpoint(dl->routers[router]));
    }
}

static void on_task_done(task_t *t, PB(DeliveryResult) * result, void *arg)
{
    work_t *w = arg;
    delivery_t *dl = w->dl;
    (void)t;
    send_result(dl, w->router, w->request_id, result);
    if (w->running) {
        dl->running--;
        dl->running_by[w->router]--;
    }
    work_free(dl, w);
    start_waiting(dl);
}

static void work_run(delivery_t *dl, work_t *w)
{
    w->running = 1;
    dl->running++;
    dl->running_by[w->router]++;
    task_start(w->task);
}

/* Tasks beyond the slots (several routers each saw free slots) wait here, in order. */
static void start_waiting(delivery_t *dl)
{
    while (dl->running < (size_t)dl->conf.slots && dl->waiting > 0) {
        work_t *w = NULL;
        for (work_t *p = dl->works; p; p = p->next)
            if (!p->running)
                w = p; /* the list is newest first: the last one waited longest */
        if (w == NULL)
            break;
        dl->waiting--;
        work_run(dl, w);
    }
}

/* ---- bus ---- */

static void send_error(delivery_t *dl, size_t router, uint64_t request_id, const char *why)
{
    PB(Status) st = PB_INIT(STATUS);
    st.code = 451;
    st.enhanced = "4.3.0";
    st.text = (char *)why;
    PB(Error) e = PB_INIT(ERROR);
    e.status = &st;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(ERROR);
    env.error = &e;
    bus_client_send(dl->routers[router], request_id, &env, NULL);
}

static void on_router_message(bus_client_t *cl, bus_msg_t *msg, void *arg)
{
    delivery_t *dl = arg;
    size_t router = 0;
    while (router < dl->nrouters && dl->routers[router] != cl)
        router++;
    if (router == dl->nrouters)
        return;
    uint64_t rid = msg->env->request_id;
    if (msg->env->body_case != PB_BODY(DELIVERY_TASK)) {
        log_warn("event=unexpected_message body=%s sender=%s", codec_body_name(msg->env),
                 msg->env->sender);
        return;
    }
    const char *why = rid == 0 ? "task without request id" : task_invalid(msg->env->delivery_task);
    if (why) {
        log_warn("event=task_refused task=%" PRIu64 " reason=\"%s\" sender=%s", rid, why,
                 msg->env->sender);
        if (rid)
            send_error(dl, router, rid, why);
        return;
    }
    size_t limit = (size_t)dl->conf.slots * 2;
    if (dl->running + dl->waiting >= limit) {
        log_warn("event=task_refused task=%" PRIu64 " reason=overloaded running=%zu waiting=%zu",
                 rid, dl->running, dl->waiting);
        send_error(dl, router, rid, "delivery worker overloaded");
        return;
    }
    /* the task keeps the decoded envelope and the body: take them from the message */
    sx_env_t *env = msg->env;
    msg->env = NULL;
    zmq_msg_t body;
    bus_msg_take_payload(msg, &body);
    work_t *w = xcalloc(1, sizeof(*w));
    w->dl = dl;
    w->router = router;
    w->request_id = rid;
    w->task = task_new(&dl->ctx, rid, &env, &body, on_task_done, w);
    zmq_msg_close(&body);
    w->next = dl->works;
    if (dl->works)
        dl->works->prev = w;
    dl->works = w;
    dl->tasks_total++;
    if (dl->running < (size_t)dl->conf.slots) {
        work_run(dl, w);
    } else {
        dl->waiting++;
        log_info("event=task_waiting msg=%s task=%" PRIu64 " waiting=%zu",
                 task_message_id(w->task), rid, dl->waiting);
    }
}

/*
 * Each router is told the slots the others leave free, so with several
 * routers the sum of what they send stays near the real capacity.
 */
static void heartbeat(loop_t *loop, void *arg)
{
    delivery_t *dl = arg;
    for (size_t i = 0; i < dl->nrouters; i++) {
        size_t others = dl->running - dl->running_by[i];
        size_t slots = (size_t)dl->conf.slots > others ? (size_t)dl->conf.slots - others : 0;
        PB(DeliveryWorkerReady) ready = PB_INIT(DELIVERY_WORKER_READY);
        ready.instance = (char *)bus_name(dl->svc->bus);
        ready.slots = (uint32_t)slots;
        sx_env_t env = PB_INIT(ENVELOPE);
        env.body_case = PB_BODY(DELIVERY_WORKER_READY);
        env.delivery_worker_ready = &ready;
        int ok = bus_client_send(dl->routers[i], 0, &env, NULL) == 0;
        if (ok != dl->router_up[i])
            log_info("event=router_%s router=%s", ok ? "up" : "down",
                     bus_client_endpoint(dl->routers[i]));
        dl->router_up[i] = ok;
    }
    /* a router not reached yet is tried again soon, so a new worker is used at once */
    size_t up = 0;
    for (size_t i = 0; i < dl->nrouters; i++)
        up += dl->router_up[i] != 0;
    loop_timer_start(loop, &dl->heartbeat,
                     up == dl->nrouters ? DELIVERY_HEARTBEAT_MS : DELIVERY_HEARTBEAT_RETRY_MS);
}

static void on_control(bus_server_t *srv, bus_msg_t *msg, void *arg)
{
    (void)arg;
    log_warn("event=unexpected_request body=%s sender=%s", codec_body_name(msg->env),
             msg->env->sender);
    bus_server_error(srv, &msg->peer, msg->env->request_id, 502, "5.5.1",
                     "delivery does not serve %s", codec_body_name(msg->env));
}

static void delivery_stats(PB(ServicePong) * pong, void *arg)
{
    delivery_t *dl = arg;
    bus_pong_stat(pong, "slots", "%lld", dl->conf.slots);
    bus_pong_stat(pong, "running", "%zu", dl->running);
    bus_pong_stat(pong, "waiting", "%zu", dl->waiting);
    bus_pong_stat(pong, "tasks_total", "%" PRIu64, dl->tasks_total);
    bus_pong_stat(pong, "results_lost", "%" PRIu64, dl->results_lost);
    size_t up = 0;
    for (size_t i = 0; i < dl->nrouters; i++)
        up += dl->router_up[i] != 0;
    bus_pong_stat(pong, "routers_up", "%zu/%zu", up, dl->nrouters);
    if (dl->ctx.pool) {
        bus_pong_stat(pong, "connections_kept", "%zu", pool_count(dl->ctx.pool));
        bus_pong_stat(pong, "connections_reused", "%" PRIu64, pool_reused_total(dl->ctx.pool));
    }
    if (dl->ctx.policy) {
        bus_pong_stat(pong, "mta_sts_cached", "%zu", policy_cached(dl->ctx.policy));
        bus_pong_stat(pong, "mta_sts_fetches", "%" PRIu64, policy_fetches(dl->ctx.policy));
    }
}

/* The pool gives up a kept connection: say goodbye properly. */
static void pool_close(void *conn, const char *why, void *arg)
{
    session_t *s = conn;
    (void)arg;
    log_debug("event=kept_connection_done host=%s ip=%s why=%s", session_host(s), session_ip(s),
              why);
    if (strcmp(why, "shutdown") == 0)
        session_destroy(&s); /* the loop has stopped: no QUIT exchange */
    else
        session_quit(&s);
}

static void on_event(PB(Event) * ev, void *arg)
{
    service_event(arg, ev);
}

int main(int argc, char **argv)
{
    service_t svc;
    delivery_t dl;
    memset(&dl, 0, sizeof(dl));
    dl.svc = &svc;
    SSL_CTX *tls = NULL;
    resolver_t *resolver = NULL;
    dkim_signer_t *dkim = NULL;
    fetcher_t *fetcher = NULL;
    policy_mgr_t *policy = NULL;
    pool_t *pool = NULL;
    int rc = 1;
    char err[512];
    loop_timer_init(&dl.heartbeat, heartbeat, &dl);
    if (service_init(&svc, "delivery", argc, argv) < 0)
        goto out;
    if (service_section(&svc, delivery_table, &dl.conf) < 0)
        goto out;
    const char *helo = *dl.conf.helo ? dl.conf.helo : svc.relay.hostname;
    if (!address_domain_valid(helo, 0)) {
        fprintf(stderr, "sendarix-delivery: %s: delivery.helo: \"%s\" is not a host name\n",
                svc.config_path, helo);
        goto out;
    }
    const char *control_ep = service_endpoint(&svc, &svc.ep.delivery);
    if (control_ep == NULL || svc.ep.router_workers.n == 0) {
        fprintf(stderr, "sendarix-delivery: %s: bus.delivery needs an endpoint for instance %s "
                        "and bus.router_workers at least one\n",
                svc.config_path, svc.instance);
        goto out;
    }
    if (svc.ep.router_workers.n > DELIVERY_ROUTERS_MAX) {
        fprintf(stderr, "sendarix-delivery: %s: bus.router_workers: at most %d routers\n",
                svc.config_path, DELIVERY_ROUTERS_MAX);
        goto out;
    }
    tls = tls_client_ctx(*dl.conf.tls_ca_file ? dl.conf.tls_ca_file : NULL, err, sizeof(err));
    if (tls == NULL) {
        fprintf(stderr, "sendarix-delivery: %s: delivery.tls_ca_file: %s\n", svc.config_path,
                err);
        goto out;
    }
    resolver = resolver_new(svc.loop, dl.conf.resolver, err, sizeof(err));
    if (resolver == NULL) {
        fprintf(stderr, "sendarix-delivery: %s: delivery.resolver: %s\n", svc.config_path, err);
        goto out;
    }
    if (dl.conf.mta_sts) {
        const char *ca = *dl.conf.tls_ca_file ? dl.conf.tls_ca_file : NULL;
        fetcher = fetcher_new(svc.loop, ca, err, sizeof(err));
        if (fetcher == NULL) {
            fprintf(stderr, "sendarix-delivery: %s: delivery.mta_sts: %s\n", svc.config_path, err);
            goto out;
        }
        policy_conf_t pc = {.port = (unsigned)dl.conf.mta_sts_port,
                            .timeout_ms = dl.conf.mta_sts_timeout,
                            .cache_max = STS_CACHE_MAX};
        policy = policy_new(svc.loop, resolver, fetcher, &pc);
    }
    pool = pool_new(svc.loop, DELIVERY_POOL_MAX, pool_close, NULL);
    dl.rand_state = id_random64();
    /* signing keys come from the first auth instance, which owns them */
    dkim = dkim_signer_new(svc.loop, svc.bus, svc.ep.auth.n ? svc.ep.auth.v[0] : NULL);
    dl.ctx = (delivery_ctx_t){
        .loop = svc.loop,
        .tls_ctx = tls,
        .resolver = resolver,
        .dkim = dkim,
        .pool = pool,
        .policy = policy,
        .helo = helo,
        .connect_timeout_ms = dl.conf.connect_timeout,
        .command_timeout_ms = dl.conf.command_timeout,
        .greeting_timeout_ms = dl.conf.greeting_timeout,
        .data_timeout_ms = dl.conf.data_timeout,
        .idle_timeout_ms = dl.conf.idle_timeout,
        .mx_port = (unsigned)dl.conf.mx_port,
        .require_tls = dl.conf.require_tls.v,
        .nrequire_tls = dl.conf.require_tls.n,
        .rand_state = &dl.rand_state,
        .event = on_event,
        .event_arg = &svc,
    };
    dl.control = bus_server_new(svc.bus, control_ep, on_control, &dl);
    if (dl.control == NULL)
        goto out;
    for (size_t i = 0; i < svc.ep.router_workers.n; i++) {
        bus_client_t *cl = bus_client_new(svc.bus, svc.ep.router_workers.v[i]);
        if (cl == NULL)
            goto out;
        bus_client_on_message(cl, on_router_message, &dl);
        dl.routers[dl.nrouters++] = cl;
    }
    bus_set_stats(svc.bus, delivery_stats, &dl);
    loop_timer_start(svc.loop, &dl.heartbeat, 0);
    log_info("event=worker slots=%lld helo=%s routers=%zu resolver=%s ca=%s mx_port=%lld "
             "idle_timeout_ms=%llu require_tls=%zu mta_sts=%d connect_timeout_ms=%llu",
             dl.conf.slots, helo, dl.nrouters, *dl.conf.resolver ? dl.conf.resolver : "system",
             *dl.conf.tls_ca_file ? dl.conf.tls_ca_file : "system", dl.conf.mx_port,
             (unsigned long long)dl.conf.idle_timeout, dl.conf.require_tls.n, dl.conf.mta_sts,
             (unsigned long long)dl.conf.connect_timeout);
    rc = service_run(&svc) == 0 ? 0 : 1;
    if (dl.running)
        log_warn("event=stopping_with_tasks running=%zu waiting=%zu", dl.running, dl.waiting);
out:
    while (dl.works)
        work_free(&dl, dl.works);
    if (svc.loop)
        loop_timer_stop(svc.loop, &dl.heartbeat);
    for (size_t i = 0; i < dl.nrouters; i++)
        bus_client_destroy(&dl.routers[i]);
    bus_server_destroy(&dl.control);
    pool_destroy(&pool);
    policy_destroy(&policy);
    fetcher_destroy(&fetcher);
    dkim_signer_destroy(&dkim);
    resolver_destroy(&resolver);
    tls_ctx_free(&tls);
    conf_release(delivery_table, &dl.conf);
    service_fini(&svc);
    return rc;
}
