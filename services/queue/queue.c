/*
 * queue: the durable store and scheduler of the relay. Holds every message
 * between ingress's 250 and its final outcome; survives kill -9 with
 * nothing lost (every confirmation follows a synced LMDB commit).
 * This file: configuration, start-up and the bus request dispatch.
 */
#include "queue.h"
#include "core/alloc.h"
#include "core/log.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#define QF(name, type, field, def, min, max, doc)                                              \
    {name, type, offsetof(queue_conf_t, field), def, min, max, 0, NULL, NULL, doc}

static const conf_field_t queue_table[] = {
    QF("retry_base", CONF_DURATION, retry_base, "60s", 1, 86400000,
       "delay before the first retry; doubles each attempt"),
    QF("retry_max_interval", CONF_DURATION, retry_max_interval, "1h", 1, 7 * 86400000LL,
       "longest delay between two attempts"),
    QF("max_age", CONF_DURATION, max_age, "5d", 1000, 60 * 86400000LL,
       "after this a message that still fails is bounced"),
    QF("greylist_retry", CONF_DURATION, greylist_retry, "2m", 1000, 3600000,
       "retry after a greylisting reply that names no wait"),
    QF("greylist_max_wait", CONF_DURATION, greylist_max_wait, "30m", 1000, 86400000,
       "longest wait a reply may ask for before the retry"),
    QF("domain_hold_after", CONF_INT, domain_hold_after, "5", 1, 10000,
       "connection-level failures in a row before a domain is held"),
    QF("domain_hold_base", CONF_DURATION, domain_hold_base, "1m", 1000, 86400000,
       "first hold of a failing domain; doubles with each failed probe"),
    QF("domain_hold_max", CONF_DURATION, domain_hold_max, "30m", 1000, 7 * 86400000LL,
       "longest hold of a failing domain"),
    QF("soft_bounce_limit", CONF_INT, soft_bounce_limit, "5", 1, 10000,
       "soft bounces of one address before it is treated as a hard bounce"),
    QF("soft_bounce_window", CONF_DURATION, soft_bounce_window, "3d", 60000,
       365 * 86400000LL, "soft bounces spread over this long also count as hard"),
    QF("suppression_ttl", CONF_DURATION, suppression_ttl, "90d", 0, 3650 * 86400000LL,
       "how long an automatic suppression lasts (0: forever)"),
    QF("dsn_max_return", CONF_SIZE, dsn_max_return, "256K", 0, 64LL << 20,
       "a bounce returns the whole original up to this size, else its header"),
    QF("max_inflight", CONF_INT, max_inflight, "2000", 1, 1000000,
       "messages handed to router at once"),
    QF("max_inflight_bytes", CONF_SIZE, max_inflight_bytes, "256M", 1 << 20, 1LL << 40,
       "body bytes of the jobs out at routers at once (a larger message still goes)"),
    QF("job_timeout", CONF_DURATION, job_timeout, "15m", 1000, 86400000,
       "a job without result by then counts as a deferred attempt"),
    QF("upload_memory_max", CONF_SIZE, upload_memory_max, "512M", 1 << 20, 1LL << 40,
       "memory for chunks of messages whose DATA is still arriving"),
    QF("upload_idle_timeout", CONF_DURATION, upload_idle_timeout, "10m", 1000, 86400000,
       "chunks of an upload idle this long are dropped"),
    QF("group_commit_max", CONF_INT, group_commit_max, "512", 1, 100000,
       "messages written in one synced transaction at most"),
    QF("results_hold", CONF_DURATION, results_hold, "10ms", 0, 60000,
       "outcomes of attempts wait this long for new messages to share their synced write"),
    QF("done_retention", CONF_DURATION, done_retention, "1h", 0, 30 * 86400000LL,
       "how long a finished message stays visible to `queue show`"),
    QF("done_move_delay", CONF_DURATION, done_move_delay, "1s", 0, 3600000,
       "a message just finished waits this long among the live ones, to be moved out with others"),
    QF("map_size", CONF_SIZE, map_size, "64M", 1 << 20, 1LL << 44, "initial LMDB map size"),
    QF("map_max", CONF_SIZE, map_max, "64G", 1 << 20, 1LL << 46,
       "largest the LMDB map may grow; past it new messages get 452 4.3.1"),
    {NULL},
};

static void queue_request(bus_server_t *srv, bus_msg_t *msg, void *arg)
{
    queue_t *q = arg;
    switch (msg->env->body_case) {
    case PB_BODY(QUEUE_CHUNK_PUT):
        queue_on_chunk(q, msg);
        break;
    case PB_BODY(QUEUE_MESSAGE_COMMIT):
        queue_on_commit(q, msg);
        break;
    case PB_BODY(QUEUE_MESSAGE_ABORT):
        queue_on_abort(q, msg);
        break;
    case PB_BODY(QUEUE_MESSAGE_SHOW):
        queue_on_show(q, msg);
        break;
    case PB_BODY(QUEUE_LIST):
        queue_on_list(q, msg);
        break;
    case PB_BODY(QUEUE_STATS):
        queue_on_stats(q, msg);
        break;
    case PB_BODY(QUEUE_ACTION):
        queue_on_action(q, msg);
        break;
    case PB_BODY(QUEUE_DOMAIN_SUSPEND):
        queue_on_suspend(q, msg);
        break;
    case PB_BODY(QUEUE_SUPPRESS_ADD):
    case PB_BODY(QUEUE_SUPPRESS_REMOVE):
    case PB_BODY(QUEUE_SUPPRESS_LIST):
    case PB_BODY(QUEUE_SUPPRESS_CHECK):
        queue_on_suppress(q, msg);
        break;
    default:
        log_warn("event=unsupported_request body=%s from=%s", codec_body_name(msg->env),
                 msg->env->sender);
        bus_server_error(srv, &msg->peer, msg->env->request_id, 400, "",
                         "queue does not handle %s", codec_body_name(msg->env));
        break;
    }
}

static void queue_stats(PB(ServicePong) * pong, void *arg)
{
    queue_t *q = arg;
    store_stats_t st;
    store_stats(q->store, &st);
    bus_pong_stat(pong, "messages", "%zu", queue_index_count(q));
    bus_pong_stat(pong, "scheduled", "%zu", queue_sched_size(q));
    bus_pong_stat(pong, "inflight", "%zu", queue_sched_inflight(q));
    bus_pong_stat(pong, "inflight_bytes", "%zu", queue_sched_inflight_bytes(q));
    bus_pong_stat(pong, "accepted", "%llu", (unsigned long long)q->accepted);
    bus_pong_stat(pong, "delivered", "%llu", (unsigned long long)q->delivered);
    bus_pong_stat(pong, "bounced", "%llu", (unsigned long long)q->bounced);
    bus_pong_stat(pong, "deferred", "%llu", (unsigned long long)q->deferred);
    bus_pong_stat(pong, "expired", "%llu", (unsigned long long)q->expired);
    bus_pong_stat(pong, "suppressed", "%llu", (unsigned long long)q->suppressed);
    bus_pong_stat(pong, "dsn_sent", "%llu", (unsigned long long)q->dsn_sent);
    bus_pong_stat(pong, "commit_batches", "%llu", (unsigned long long)q->commit_batches);
    bus_pong_stat(pong, "upload_bytes", "%llu", (unsigned long long)q->upload_bytes);
    bus_pong_stat(pong, "store_bytes", "%zu", st.used_bytes);
    bus_pong_stat(pong, "store_map", "%zu", st.map_size);
}

int main(int argc, char **argv)
{
    service_t svc;
    queue_t q = {0};
    int rc = 1;
    if (service_init(&svc, "queue", argc, argv) < 0)
        return 1;
    q.svc = &svc;
    if (service_section(&svc, queue_table, &q.conf) < 0)
        goto out;
    if (q.conf.map_max < q.conf.map_size)
        q.conf.map_max = q.conf.map_size;

    const char *endpoint = service_endpoint(&svc, &svc.ep.queue);
    if (endpoint == NULL) {
        fprintf(stderr, "sendarix-queue: %s: bus.queue has no endpoint for instance %s\n",
                svc.config_path, svc.instance);
        goto out;
    }
    if (svc.ep.router.n == 0) {
        fprintf(stderr, "sendarix-queue: %s: bus.router lists no router\n", svc.config_path);
        goto out;
    }
    snprintf(q.name, sizeof(q.name), "queue/%s", svc.instance);
    queue_write_init(&q);
    queue_results_init(&q);
    queue_suppress_init(&q);
    if (queue_store_open(&q) < 0 || queue_index_init(&q) < 0 || queue_ops_load(&q) < 0 ||
        queue_accept_init(&q) < 0 || queue_sched_init(&q) < 0)
        goto out;
    /* the other instances, to pass suppressions on to */
    q.peers = xcalloc(svc.ep.queue.n ? svc.ep.queue.n : 1, sizeof(*q.peers));
    for (size_t i = 0; i < svc.ep.queue.n; i++) {
        if (i + 1 == service_index(&svc))
            continue;
        q.peers[q.npeers] = bus_client_new(svc.bus, svc.ep.queue.v[i]);
        if (q.peers[q.npeers])
            q.npeers++;
    }
    q.routers = xcalloc(svc.ep.router.n, sizeof(*q.routers));
    for (size_t i = 0; i < svc.ep.router.n; i++) {
        q.routers[i] = bus_client_new(svc.bus, svc.ep.router.v[i]);
        if (q.routers[i] == NULL)
            goto out;
        q.nrouters++;
    }
    queue_sched_watch_routers(&q);
    q.api = bus_server_new(svc.bus, endpoint, queue_request, &q);
    if (q.api == NULL)
        goto out;
    bus_set_stats(svc.bus, queue_stats, &q);
    rc = service_run(&svc) == 0 ? 0 : 1;
    queue_write_flush(&q);
    queue_done_flush(&q);
out:
    bus_server_destroy(&q.api);
    for (size_t i = 0; i < q.nrouters; i++)
        bus_client_destroy(&q.routers[i]);
    free(q.routers);
    for (size_t i = 0; i < q.npeers; i++)
        bus_client_destroy(&q.peers[i]);
    free(q.peers);
    queue_write_fini(&q);
    queue_results_fini(&q);
    queue_sched_fini(&q);
    queue_accept_fini(&q);
    queue_suppress_fini(&q);
    queue_index_fini(&q);
    store_close(&q.store);
    conf_release(queue_table, &q.conf);
    service_fini(&svc);
    return rc;
}
