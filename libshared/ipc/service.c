/*
 * service: common start-up, shared config sections and event publishing
 * (batched per loop turn).
 */
#include "service.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/id.h"
#include "core/log.h"
#include "codec.h"

#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* The events emitted lately, packed as EventPublish's `events` fields one
 * after another (each event is packed once, straight from the caller's
 * structure); a timer sends them SERVICE_EVENT_DELAY_MS after the first. */
struct event_batch {
    uint8_t *buf;
    size_t len, cap;
    size_t n;
    loop_timer_t timer;
};
static void on_events_timer(loop_t *loop, void *arg);

/* EventPublish's field numbers (proto/sendarix/v1/events.proto) */
#define EVENT_PUBLISH_EVENT  1
#define EVENT_PUBLISH_EVENTS 2

#define EP(field, doc)                                                                         \
    {#field, CONF_STRLIST, offsetof(endpoints_t, field), NULL, 0, 0, 0, NULL, NULL, doc}

const conf_field_t service_bus_table[] = {
    EP(ingress, "ingress control sockets (ROUTER, one per instance)"),
    EP(auth, "auth API sockets (ROUTER)"),
    EP(queue, "queue API sockets (ROUTER), one per instance"),
    EP(router, "router job sockets (ROUTER), queue connects"),
    EP(router_workers, "router worker sockets (ROUTER), delivery connects"),
    EP(delivery, "delivery control sockets (ROUTER)"),
    EP(events, "events query sockets (ROUTER)"),
    EP(events_ingest, "events ingest sockets (PULL), every service pushes"),
    EP(sandbox, "sandbox control sockets (ROUTER)"),
    {NULL},
};

const conf_field_t service_relay_table[] = {
    {"hostname", CONF_STRING, offsetof(relay_conf_t, hostname), "localhost", 0, 0, 0, NULL, NULL,
     "the relay's name in greetings and Received: headers"},
    {"state_dir", CONF_STRING, offsetof(relay_conf_t, state_dir), "var/state", 0, 0, 0, NULL,
     NULL, "directory of every service's LMDB store"},
    {"log_level", CONF_STRING, offsetof(relay_conf_t, log_level), "info", 0, 0, 0, NULL, NULL,
     "debug, info, warn or error"},
    {NULL},
};

static void usage(const char *name)
{
    fprintf(stderr,
            "usage: sendarix-%s [--config FILE] [--instance N]\n"
            "  --config FILE   the relay's config (default: $SENDARIX_CONFIG or "
            "var/sendarix.conf)\n"
            "  --instance N    which instance of the service this is (default 1)\n",
            name);
}

static void on_stop_signal(loop_t *loop, int signo, void *arg)
{
    (void)arg;
    log_info("event=stopping signal=%d", signo);
    loop_stop(loop);
}

int service_init(service_t *svc, const char *name, int argc, char **argv)
{
    memset(svc, 0, sizeof(*svc));
    svc->name = name;
    /*
     * Message bodies (up to a chunk each) are allocated and freed for every
     * message. By default malloc gives freed memory above 128 KiB back to
     * the system and maps large blocks afresh, so every message paid page
     * faults for pages it had a moment before; keep up to 32 MiB of free
     * heap and map only blocks over 8 MiB.
     */
    mallopt(M_MMAP_THRESHOLD, 8 << 20);
    mallopt(M_TRIM_THRESHOLD, 32 << 20);
    snprintf(svc->instance, sizeof(svc->instance), "1");
    const char *config = getenv("SENDARIX_CONFIG");
    if (config == NULL || *config == '\0')
        config = "var/sendarix.conf";

    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"instance", required_argument, NULL, 'i'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:i:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            config = optarg;
            break;
        case 'i': {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (*end || n < 1 || n > 999) {
                fprintf(stderr, "sendarix-%s: --instance must be a number from 1 to 999\n",
                        name);
                return -1;
            }
            snprintf(svc->instance, sizeof(svc->instance), "%ld", n);
            break;
        }
        case 'h':
            usage(name);
            exit(0);
        default:
            usage(name);
            exit(2);
        }
    }
    svc->config_path = xstrdup(config);
    log_init(name, svc->instance);

    char err[1024];
    svc->conf = conf_open(config, err, sizeof(err));
    if (svc->conf == NULL) {
        fprintf(stderr, "sendarix-%s: %s\n", name, err);
        return -1;
    }
    if (conf_section(svc->conf, "relay", service_relay_table, &svc->relay, err, sizeof(err)) <
            0 ||
        conf_section(svc->conf, "bus", service_bus_table, &svc->ep, err, sizeof(err)) < 0) {
        fprintf(stderr, "sendarix-%s: %s\n", name, err);
        return -1;
    }
    log_level_t level;
    if (log_level_parse(svc->relay.log_level, &level) < 0) {
        fprintf(stderr, "sendarix-%s: %s: relay.log_level: \"%s\" is not one of debug, info, "
                        "warn, error\n",
                name, config, svc->relay.log_level);
        return -1;
    }
    log_set_level(level);

    svc->loop = loop_new();
    svc->bus = svc->loop ? bus_new(svc->loop, name, svc->instance) : NULL;
    if (svc->bus == NULL) {
        fprintf(stderr, "sendarix-%s: cannot start the event loop or bus\n", name);
        return -1;
    }
    /* a relay holds thousands of sockets: take every descriptor allowed */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    loop_signal_add(svc->loop, SIGTERM, on_stop_signal, svc);
    loop_signal_add(svc->loop, SIGINT, on_stop_signal, svc);
    signal(SIGPIPE, SIG_IGN);

    if (svc->ep.events_ingest.n > 0 && strcmp(name, "events") != 0) {
        /* events of one service go to one collector; instances share by index */
        size_t i = (service_index(svc) - 1) % svc->ep.events_ingest.n;
        svc->events = bus_push_new(svc->bus, svc->ep.events_ingest.v[i]);
        svc->event_batch = xcalloc(1, sizeof(*svc->event_batch));
        loop_timer_init(&svc->event_batch->timer, on_events_timer, svc);
    }
    return 0;
}

void service_fini(service_t *svc)
{
    service_events_flush(svc); /* events of the shutdown itself */
    if (svc->event_batch)
        free(svc->event_batch->buf);
    free(svc->event_batch);
    svc->event_batch = NULL;
    bus_push_destroy(&svc->events);
    bus_destroy(&svc->bus);
    loop_destroy(&svc->loop);
    conf_release(service_bus_table, &svc->ep);
    conf_release(service_relay_table, &svc->relay);
    conf_close(&svc->conf);
    free(svc->config_path);
    svc->config_path = NULL;
}

int service_section(service_t *svc, const conf_field_t *table, void *out)
{
    char err[1024];
    if (conf_section(svc->conf, svc->name, table, out, err, sizeof(err)) < 0) {
        fprintf(stderr, "sendarix-%s: %s\n", svc->name, err);
        return -1;
    }
    return 0;
}

unsigned service_index(const service_t *svc)
{
    return (unsigned)strtoul(svc->instance, NULL, 10);
}

const char *service_endpoint(const service_t *svc, const conf_strlist_t *list)
{
    unsigned i = service_index(svc);
    return i >= 1 && i <= list->n ? list->v[i - 1] : NULL;
}

const char *service_store_dir(service_t *svc, char *buf, size_t size)
{
    /* mkdir -p state_dir; the store itself makes the last level */
    char path[512];
    sx_strlcpy(path, svc->relay.state_dir, sizeof(path));
    for (char *p = path + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0750);
            *p = '/';
        }
    }
    mkdir(path, 0750);
    snprintf(buf, size, "%s/%s-%s", svc->relay.state_dir, svc->name, svc->instance);
    return buf;
}

void service_events_flush(service_t *svc)
{
    struct event_batch *b = svc->event_batch;
    if (b == NULL)
        return;
    loop_timer_stop(svc->loop, &b->timer);
    if (b->n == 0)
        return;
    if (b->n == 1) {
        /* a lone event goes in `event`, as before batching: the same length
         * of tag, as both field numbers are below 16 */
        uint8_t head[CODEC_FIELD_HEAD];
        codec_field_head(head, EVENT_PUBLISH_EVENT, 0);
        b->buf[0] = head[0];
    }
    bus_push_send_packed(svc->events, PB_BODY(EVENT_PUBLISH), b->buf, b->len);
    b->n = 0;
    b->len = 0;
}

static void on_events_timer(loop_t *loop, void *arg)
{
    (void)loop;
    service_events_flush(arg);
}

void service_event(service_t *svc, PB(Event) * ev)
{
    struct event_batch *b = svc->event_batch;
    if (svc->events == NULL || b == NULL)
        return;
    char id[ID_BUF_SIZE];
    id_new(id);
    ev->id = id;
    ev->at_ms = clock_wall_ms();
    ev->service = (char *)svc->name;
    ev->instance = svc->instance;
    size_t len = PB_FN(event, get_packed_size)(ev);
    if (b->n > 0 && b->len + CODEC_FIELD_HEAD + len > SERVICE_EVENT_BATCH_BYTES)
        service_events_flush(svc);
    if (b->cap - b->len < CODEC_FIELD_HEAD + len) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < CODEC_FIELD_HEAD + len)
            cap *= 2;
        b->buf = xrealloc(b->buf, cap);
        b->cap = cap;
    }
    b->len += codec_field_head(b->buf + b->len, EVENT_PUBLISH_EVENTS, len);
    b->len += PB_FN(event, pack)(ev, b->buf + b->len);
    b->n++;
    if (b->n == SERVICE_EVENT_BATCH_MAX)
        service_events_flush(svc);
    else if (!loop_timer_active(&b->timer))
        loop_timer_start(svc->loop, &b->timer, SERVICE_EVENT_DELAY_MS);
}

int service_run(service_t *svc)
{
    log_info("event=started pid=%d config=%s", (int)getpid(), svc->config_path);
    int rc = loop_run(svc->loop);
    service_events_flush(svc); /* the loop stopped before its end-of-turn send */
    log_info("event=stopped");
    return rc;
}
