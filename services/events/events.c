/*
 * sendarix-events: the event collector. main, the `events` config table
 * and the wiring: the PULL socket every service pushes events to, the
 * ROUTER socket that answers searches, the HTTP server, the retention
 * sweep, the periodic sync of the event log (its commits are not synced),
 * the service metrics poller and the stats in ServicePong. The work
 * itself is in events_*.c.
 */
#include "core/clock.h"
#include "core/log.h"
#include "events_bus.h"
#include "events_http.h"
#include "events_ingest.h"
#include "events_metrics.h"
#include "events_store.h"
#include "ipc/service.h"
#include "store/store.h"

#include <stddef.h>
#include <stdio.h>

#define SWEEP_BATCH    1000 /* events deleted per transaction */
#define SWEEP_AGAIN_MS 10   /* pause between batches while old events remain */

typedef struct events_conf {
    uint64_t retention_ms;
    uint64_t sweep_interval_ms;
    char *http_address;
    long long http_port;
    uint64_t metrics_interval_ms;
    uint64_t sync_interval_ms;
} events_conf_t;

static const conf_field_t events_table[] = {
    {"retention", CONF_DURATION, offsetof(events_conf_t, retention_ms), "30d", 60000,
     3650LL * 86400000, 0, NULL, NULL, "how long events are kept"},
    {"sweep_interval", CONF_DURATION, offsetof(events_conf_t, sweep_interval_ms), "60s", 1000,
     86400000, 0, NULL, NULL, "how often expired events are looked for"},
    {"http_address", CONF_STRING, offsetof(events_conf_t, http_address), "127.0.0.1", 0, 0, 0, NULL,
     NULL, "address of the HTTP API, /metrics and /healthz"},
    {"http_port", CONF_INT, offsetof(events_conf_t, http_port), "8025", 0, 65535, 0, NULL, NULL,
     "port of the HTTP API; 0 turns HTTP off"},
    {"metrics_interval", CONF_DURATION, offsetof(events_conf_t, metrics_interval_ms),
     EVMETRICS_INTERVAL_DEFAULT, 200, 3600000, 0, NULL, NULL,
     "how often every service is pinged (and each queue asked for its stats) for /metrics"},
    {"sync_interval", CONF_DURATION, offsetof(events_conf_t, sync_interval_ms), "1s", 10, 60000,
     0, NULL, NULL,
     "how often the event log is synced to disk: a machine crash loses at most this much"},
    {NULL},
};

typedef struct events_app {
    service_t svc;
    events_conf_t conf;
    evstore_t *store;
    evingest_t *ingest;
    bus_pull_t *pull;
    bus_server_t *server;
    events_http_t *http;
    evmetrics_t *metrics;
    loop_timer_t sweep;
    loop_timer_t sync;
} events_app_t;

static void on_sweep(loop_t *loop, void *arg)
{
    events_app_t *app = arg;
    uint64_t now = clock_wall_ms();
    uint64_t before = now > app->conf.retention_ms ? now - app->conf.retention_ms : 0;
    size_t deleted = 0;
    int rc = evstore_sweep(app->store, before, SWEEP_BATCH, &deleted);
    if (rc < 0)
        log_error("event=sweep_failed rc=%d", rc);
    else if (deleted)
        log_info("event=sweep deleted=%zu more=%d", deleted, rc);
    loop_timer_start(loop, &app->sweep, rc == 1 ? SWEEP_AGAIN_MS : app->conf.sweep_interval_ms);
}

static void on_sync(loop_t *loop, void *arg)
{
    events_app_t *app = arg;
    int rc = evstore_sync(app->store);
    if (rc != 0)
        log_error("event=events_sync_failed err=\"%s\"", store_strerror(rc));
    loop_timer_start(loop, &app->sync, app->conf.sync_interval_ms);
}

static void on_stats(PB(ServicePong) * pong, void *arg)
{
    events_app_t *app = arg;
    evingest_stats_t s;
    evingest_stats(app->ingest, &s);
    bus_pong_stat(pong, "events_stored", "%llu", (unsigned long long)evstore_count(app->store));
    bus_pong_stat(pong, "events_received", "%llu", (unsigned long long)s.received);
    bus_pong_stat(pong, "events_rejected", "%llu", (unsigned long long)s.rejected);
    bus_pong_stat(pong, "events_dropped", "%llu", (unsigned long long)s.dropped);
    bus_pong_stat(pong, "store_bytes", "%zu", evstore_bytes(app->store));
}

static int app_start(events_app_t *app)
{
    service_t *svc = &app->svc;
    char dir[512], err[512];
    const char *ingest_ep = service_endpoint(svc, &svc->ep.events_ingest);
    const char *api_ep = service_endpoint(svc, &svc->ep.events);
    if (ingest_ep == NULL || api_ep == NULL) {
        fprintf(stderr,
                "sendarix-events: %s: bus.events and bus.events_ingest need an endpoint "
                "for instance %s\n",
                svc->config_path, svc->instance);
        return -1;
    }
    app->store = evstore_open(service_store_dir(svc, dir, sizeof(dir)), err, sizeof(err));
    if (app->store == NULL) {
        fprintf(stderr, "sendarix-events: %s\n", err);
        return -1;
    }
    app->ingest = evingest_new(svc->loop, app->store);
    app->pull = bus_pull_new(svc->bus, ingest_ep, events_bus_on_publish, app->ingest);
    app->server = bus_server_new(svc->bus, api_ep, events_bus_on_request, app->store);
    if (app->pull == NULL || app->server == NULL) {
        fprintf(stderr, "sendarix-events: cannot bind %s or %s\n", ingest_ep, api_ep);
        return -1;
    }
    app->metrics = evmetrics_new(svc->bus, &svc->ep, app->conf.metrics_interval_ms);
    if (app->metrics == NULL) {
        fprintf(stderr, "sendarix-events: cannot connect to the services for /metrics\n");
        return -1;
    }
    if (app->conf.http_port) {
        app->http =
            events_http_new(svc->loop, app->conf.http_address, (unsigned)app->conf.http_port,
                            app->store, app->ingest, app->metrics, err, sizeof(err));
        if (app->http == NULL) {
            fprintf(stderr, "sendarix-events: %s\n", err);
            return -1;
        }
    }
    bus_set_stats(svc->bus, on_stats, app);
    loop_timer_start(svc->loop, &app->sweep, 0);
    loop_timer_start(svc->loop, &app->sync, app->conf.sync_interval_ms);
    log_info("event=events_ready stored=%llu retention_ms=%llu",
             (unsigned long long)evstore_count(app->store),
             (unsigned long long)app->conf.retention_ms);
    return 0;
}

static void app_stop(events_app_t *app)
{
    loop_timer_stop(app->svc.loop, &app->sweep);
    loop_timer_stop(app->svc.loop, &app->sync);
    events_http_destroy(&app->http);
    evmetrics_destroy(&app->metrics);
    bus_server_destroy(&app->server);
    bus_pull_destroy(&app->pull);
    evingest_destroy(&app->ingest); /* writes what is still queued */
    evstore_close(&app->store); /* syncs */
    conf_release(events_table, &app->conf);
}

int main(int argc, char **argv)
{
    static events_app_t app;
    if (service_init(&app.svc, "events", argc, argv) < 0)
        return 1;
    loop_timer_init(&app.sweep, on_sweep, &app);
    loop_timer_init(&app.sync, on_sync, &app);
    int rc = 1;
    if (service_section(&app.svc, events_table, &app.conf) == 0 && app_start(&app) == 0)
        rc = service_run(&app.svc) == 0 ? 0 : 1;
    app_stop(&app);
    service_fini(&app.svc);
    return rc;
}
