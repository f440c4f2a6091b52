/*
 * events_metrics: one DEALER per service endpoint, a ping (and for queue a
 * QueueStats) per target per tick, never two of a kind in flight to one
 * target. A send that finds no connected peer, a reply past the deadline
 * or a reply of the wrong kind counts as down until the next answer.
 */
#include "events_metrics.h"
#include "core/alloc.h"
#include "core/log.h"

#include <stdlib.h>
#include <string.h>

typedef struct target {
    struct evmetrics *m;
    const char *service; /* the bus key: "queue" */
    unsigned instance;   /* 1-based position in the bus list */
    int is_queue;
    bus_client_t *client;
    int ping_out, stats_out; /* a request in flight */
    int up;
    sx_env_t *pong;  /* the last ServicePong, owned */
    sx_env_t *stats; /* queue: the last QueueStatsReply, owned */
} target_t;

struct evmetrics {
    loop_t *loop;
    bus_t *bus;
    uint64_t interval_ms;
    loop_timer_t tick;
    target_t *targets;
    size_t n;
    uint64_t replies;
};

static void on_pong(bus_msg_t *reply, bus_status_t status, void *arg)
{
    target_t *t = arg;
    t->ping_out = 0;
    t->m->replies++;
    if (status == BUS_OK && reply && reply->env->body_case == PB_BODY(SERVICE_PONG) &&
        reply->env->service_pong) {
        codec_free(&t->pong);
        t->pong = bus_msg_take_env(reply);
        t->up = 1;
        return;
    }
    if (t->up)
        log_info("event=service_down service=%s instance=%u reason=%s", t->service, t->instance,
                 status == BUS_OK ? "unexpected_reply" : "timeout");
    t->up = 0;
}

static void on_stats(bus_msg_t *reply, bus_status_t status, void *arg)
{
    target_t *t = arg;
    t->stats_out = 0;
    t->m->replies++;
    codec_free(&t->stats);
    if (status == BUS_OK && reply && reply->env->body_case == PB_BODY(QUEUE_STATS_REPLY) &&
        reply->env->queue_stats_reply)
        t->stats = bus_msg_take_env(reply);
}

static void ask(target_t *t)
{
    uint64_t timeout = t->m->interval_ms;
    if (!t->ping_out) {
        PB(ServicePing) ping = PB_INIT(SERVICE_PING);
        sx_env_t env = PB_INIT(ENVELOPE);
        env.body_case = PB_BODY(SERVICE_PING);
        env.service_ping = &ping;
        if (bus_client_request(t->client, &env, NULL, timeout, on_pong, t, NULL) == 0) {
            t->ping_out = 1;
        } else {
            if (t->up)
                log_info("event=service_down service=%s instance=%u reason=not_connected",
                         t->service, t->instance);
            t->up = 0;
        }
    }
    if (t->is_queue && !t->stats_out) {
        PB(QueueStats) qs = PB_INIT(QUEUE_STATS);
        sx_env_t env = PB_INIT(ENVELOPE);
        env.body_case = PB_BODY(QUEUE_STATS);
        env.queue_stats = &qs;
        if (bus_client_request(t->client, &env, NULL, timeout, on_stats, t, NULL) == 0)
            t->stats_out = 1;
        else
            codec_free(&t->stats);
    }
}

void evmetrics_poll(evmetrics_t *m)
{
    for (size_t i = 0; i < m->n; i++)
        ask(&m->targets[i]);
}

static void on_tick(loop_t *loop, void *arg)
{
    evmetrics_t *m = arg;
    evmetrics_poll(m);
    loop_timer_start(loop, &m->tick, m->interval_ms);
}

evmetrics_t *evmetrics_new(bus_t *bus, const endpoints_t *ep, uint64_t interval_ms)
{
    const struct {
        const char *name;
        const conf_strlist_t *list;
    } lists[] = {
        {"ingress", &ep->ingress}, {"auth", &ep->auth},         {"queue", &ep->queue},
        {"router", &ep->router},   {"delivery", &ep->delivery}, {"events", &ep->events},
        {"sandbox", &ep->sandbox},
    };
    evmetrics_t *m = xcalloc(1, sizeof(*m));
    m->bus = bus;
    m->loop = bus_loop(bus);
    m->interval_ms = interval_ms ? interval_ms : 1;
    loop_timer_init(&m->tick, on_tick, m);
    size_t max = 0;
    for (size_t l = 0; l < sizeof(lists) / sizeof(lists[0]); l++)
        max += lists[l].list->n;
    m->targets = xcalloc(max ? max : 1, sizeof(*m->targets));
    for (size_t l = 0; l < sizeof(lists) / sizeof(lists[0]); l++) {
        for (size_t i = 0; i < lists[l].list->n; i++) {
            target_t *t = &m->targets[m->n];
            t->m = m;
            t->service = lists[l].name;
            t->instance = (unsigned)i + 1;
            t->is_queue = strcmp(lists[l].name, "queue") == 0;
            t->client = bus_client_new(bus, lists[l].list->v[i]);
            if (t->client == NULL) {
                log_error("event=metrics_connect_failed service=%s endpoint=%s", t->service,
                          lists[l].list->v[i]);
                evmetrics_destroy(&m);
                return NULL;
            }
            m->n++;
        }
    }
    loop_timer_start(m->loop, &m->tick,
                     m->interval_ms < EVMETRICS_FIRST_MS ? m->interval_ms : EVMETRICS_FIRST_MS);
    return m;
}

void evmetrics_destroy(evmetrics_t **p)
{
    evmetrics_t *m = *p;
    if (m == NULL)
        return;
    loop_timer_stop(m->loop, &m->tick);
    for (size_t i = 0; i < m->n; i++) {
        bus_client_destroy(&m->targets[i].client); /* drops what is in flight, unanswered */
        codec_free(&m->targets[i].pong);
        codec_free(&m->targets[i].stats);
    }
    free(m->targets);
    free(m);
    *p = NULL;
}

uint64_t evmetrics_replies(const evmetrics_t *m)
{
    return m ? m->replies : 0;
}

/* ---- rendering ---- */

/* A Prometheus sample value: [-]digits[.digits][e[+-]digits], nothing else. */
static int numeric(const char *s)
{
    const char *p = s;
    if (p == NULL)
        return 0;
    if (*p == '-')
        p++;
    if (*p < '0' || *p > '9')
        return 0;
    while (*p >= '0' && *p <= '9')
        p++;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return 0;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (*p < '0' || *p > '9')
            return 0;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    return *p == '\0';
}

/* A label value: backslash, quote and newline escaped, other control or non-ASCII bytes '?'. */
static void label(buf_t *b, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '\\')
            buf_append_str(b, "\\\\");
        else if (*p == '"')
            buf_append_str(b, "\\\"");
        else if (*p == '\n')
            buf_append_str(b, "\\n");
        else if (*p < 0x20 || *p >= 0x7f)
            buf_append_str(b, "?");
        else
            buf_append(b, p, 1);
    }
}

static void family(buf_t *b, const char *name, const char *help)
{
    buf_printf(b, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
}

static const char *pong_stat(const target_t *t, const char *key)
{
    const PB(ServicePong) *p = t->pong->service_pong;
    for (size_t i = 0; i < p->n_stats; i++)
        if (p->stats[i] && p->stats[i]->key && strcmp(p->stats[i]->key, key) == 0)
            return p->stats[i]->value;
    return NULL;
}

/* One queue gauge from the pong's stat of the same meaning. */
static void queue_pong_gauge(const evmetrics_t *m, buf_t *b, const char *name, const char *key,
                             const char *help)
{
    family(b, name, help);
    for (size_t i = 0; i < m->n; i++) {
        const target_t *t = &m->targets[i];
        if (!t->is_queue || !t->up || t->pong == NULL)
            continue;
        const char *v = pong_stat(t, key);
        if (numeric(v))
            buf_printf(b, "%s{instance=\"%u\"} %s\n", name, t->instance, v);
    }
}

void evmetrics_render(const evmetrics_t *m, buf_t *b)
{
    if (m == NULL)
        return;
    family(b, "sendarix_up", "Whether a service endpoint answered the last ping (1) or not (0).");
    for (size_t i = 0; i < m->n; i++)
        buf_printf(b, "sendarix_up{service=\"%s\",instance=\"%u\"} %d\n", m->targets[i].service,
                   m->targets[i].instance, m->targets[i].up);

    queue_pong_gauge(m, b, "sendarix_queue_messages", "messages",
                     "Messages a queue instance holds that are not finished.");
    queue_pong_gauge(m, b, "sendarix_queue_scheduled", "scheduled",
                     "Messages in a queue instance's schedule.");
    queue_pong_gauge(m, b, "sendarix_queue_inflight", "inflight",
                     "Messages a queue instance has handed to router and not heard back about.");

    family(b, "sendarix_queue_oldest_age_seconds",
           "Age of the oldest message a queue instance holds (0 when empty).");
    for (size_t i = 0; i < m->n; i++) {
        const target_t *t = &m->targets[i];
        if (t->is_queue && t->up && t->stats)
            buf_printf(b, "sendarix_queue_oldest_age_seconds{instance=\"%u\"} %llu\n", t->instance,
                       (unsigned long long)t->stats->queue_stats_reply->oldest_age_s);
    }
    family(b, "sendarix_queue_recipients",
           "Recipients waiting in a queue instance, by state (queued, deferred, held, inflight).");
    for (size_t i = 0; i < m->n; i++) {
        const target_t *t = &m->targets[i];
        if (!t->is_queue || !t->up || t->stats == NULL)
            continue;
        const PB(QueueStatsReply) *r = t->stats->queue_stats_reply;
        for (size_t k = 0; k < r->n_by_state; k++) {
            if (r->by_state[k] == NULL || r->by_state[k]->key == NULL)
                continue;
            buf_printf(b, "sendarix_queue_recipients{instance=\"%u\",state=\"", t->instance);
            label(b, r->by_state[k]->key);
            buf_printf(b, "\"} %llu\n", (unsigned long long)r->by_state[k]->count);
        }
    }

    family(b, "sendarix_service_stat", "Every numeric stat of a service's last ping answer.");
    for (size_t i = 0; i < m->n; i++) {
        const target_t *t = &m->targets[i];
        if (!t->up || t->pong == NULL)
            continue;
        const PB(ServicePong) *p = t->pong->service_pong;
        for (size_t k = 0; k < p->n_stats; k++) {
            const PB(Attr) *a = p->stats[k];
            if (a == NULL || a->key == NULL || a->key[0] == '\0' || !numeric(a->value))
                continue;
            buf_printf(b, "sendarix_service_stat{service=\"%s\",instance=\"%u\",stat=\"",
                       t->service, t->instance);
            label(b, a->key);
            buf_printf(b, "\"} %s\n", a->value);
        }
    }
}
