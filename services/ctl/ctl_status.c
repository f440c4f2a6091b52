/*
 * ctl_status: `sendarixctl status`. Pings every endpoint of every bus list
 * (except events_ingest, a PULL socket, and router_workers, which only
 * delivery workers speak to) in parallel and reports each as up, with its
 * pid, version, uptime and stats, or down. Exit 0 only when all are up.
 */
#include "ctl.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "ctl_json.h"

#include <stdlib.h>
#include <string.h>

typedef struct status_target {
    const char *service;
    unsigned instance;
} status_target_t;

/* The bus lists that answer ServicePing, in the order status shows them. */
static size_t collect(const endpoints_t *ep, status_target_t *targets, ctl_call_t *calls,
                      size_t max)
{
    const struct {
        const char *name;
        const conf_strlist_t *list;
    } lists[] = {
        {"ingress", &ep->ingress}, {"auth", &ep->auth},         {"queue", &ep->queue},
        {"router", &ep->router},   {"delivery", &ep->delivery}, {"events", &ep->events},
        {"sandbox", &ep->sandbox},
    };
    size_t n = 0;
    for (size_t l = 0; l < sizeof(lists) / sizeof(lists[0]); l++) {
        for (size_t i = 0; i < lists[l].list->n && n < max; i++, n++) {
            targets[n].service = lists[l].name;
            targets[n].instance = (unsigned)i + 1;
            memset(&calls[n], 0, sizeof(calls[n]));
            calls[n].endpoint = lists[l].list->v[i];
        }
    }
    return n;
}

static size_t endpoint_count(const endpoints_t *ep)
{
    return ep->ingress.n + ep->auth.n + ep->queue.n + ep->router.n + ep->delivery.n + ep->events.n +
           ep->sandbox.n;
}

static void print_text(ctl_t *ctl, json_t *list, size_t up, size_t down)
{
    fprintf(ctl->out, "%-10s %-4s %-5s %-8s %s\n", "SERVICE", "INST", "STATE", "PID", "UPTIME");
    size_t i;
    json_t *s;
    json_array_foreach(list, i, s)
    {
        const char *svc = json_string_value(json_object_get(s, "service"));
        const char *inst = json_string_value(json_object_get(s, "instance"));
        if (json_is_true(json_object_get(s, "up"))) {
            json_int_t pid = json_integer_value(json_object_get(s, "pid"));
            json_int_t secs = json_integer_value(json_object_get(s, "uptime_s"));
            char uptime[32];
            if (secs >= 86400)
                snprintf(uptime, sizeof(uptime), "%lldd%lldh", (long long)secs / 86400,
                         (long long)(secs % 86400) / 3600);
            else if (secs >= 3600)
                snprintf(uptime, sizeof(uptime), "%lldh%lldm", (long long)secs / 3600,
                         (long long)(secs % 3600) / 60);
            else
                snprintf(uptime, sizeof(uptime), "%llds", (long long)secs);
            fprintf(ctl->out, "%-10s %-4s %-5s %-8lld %s\n", svc, inst, "up", (long long)pid,
                    uptime);
        } else {
            const char *why = json_string_value(json_object_get(s, "error"));
            fprintf(ctl->out, "%-10s %-4s %-5s %-8s %s\n", svc, inst, "down", "-", why ? why : "-");
        }
    }
    fprintf(ctl->out, "%zu up, %zu down\n", up, down);
}

int ctl_cmd_status(ctl_t *ctl, const ctl_args_t *args)
{
    (void)args;
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    size_t max = endpoint_count(&ctl->ep);
    status_target_t *targets = xcalloc(max ? max : 1, sizeof(*targets));
    ctl_call_t *calls = xcalloc(max ? max : 1, sizeof(*calls));
    PB(ServicePing) ping = PB_INIT(SERVICE_PING);
    sx_env_t req = PB_INIT(ENVELOPE);
    req.body_case = PB_BODY(SERVICE_PING);
    req.service_ping = &ping;
    size_t n = collect(&ctl->ep, targets, calls, max);
    /* every call gets its own envelope: request ids are written into it */
    sx_env_t *reqs = xcalloc(n ? n : 1, sizeof(*reqs));
    for (size_t i = 0; i < n; i++) {
        reqs[i] = req;
        calls[i].req = &reqs[i];
    }
    ctl_calls_run(ctl, calls, n, ctl->timeout_set ? ctl->timeout_ms : CTL_PING_TIMEOUT_MS);

    uint64_t now = clock_wall_ms();
    size_t up = 0, down = 0;
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++) {
        const PB(ServicePong) *pong = NULL;
        char why[CTL_TEXT_MAX];
        const char *problem = NULL;
        if (calls[i].state == CTL_CALL_OK && calls[i].reply->body_case == PB_BODY(SERVICE_PONG) &&
            calls[i].reply->service_pong)
            pong = calls[i].reply->service_pong;
        else if (calls[i].state == CTL_CALL_OK)
            problem = "unexpected reply to a ping";
        else
            problem = ctl_call_problem(ctl, &calls[i], why, sizeof(why));
        if (pong)
            up++;
        else
            down++;
        json_array_append_new(list, ctl_json_pong(targets[i].service, targets[i].instance,
                                                  calls[i].endpoint, pong, now, problem));
    }
    if (ctl->json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "services", list);
        json_object_set_new(doc, "up", json_integer((json_int_t)up));
        json_object_set_new(doc, "down", json_integer((json_int_t)down));
        ctl_emit(ctl, doc);
    } else {
        print_text(ctl, list, up, down);
        json_decref(list);
    }
    ctl_calls_free(calls, n);
    free(reqs);
    free(calls);
    free(targets);
    return down == 0 ? CTL_OK : CTL_FAIL;
}
