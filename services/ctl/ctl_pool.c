/*
 * ctl_pool: `sendarixctl pool list` and `pool drain|undrain <HOST:PORT>
 * [--route NAME]`. Each router instance keeps its own view of endpoint
 * health, destination shaping and source addresses, so both go to every
 * instance: list merges the answers (each row names its router instance),
 * drain must reach them all. An instance that cannot be asked makes the
 * command fail rather than show half the picture.
 */
#include "ctl.h"
#include "core/alloc.h"
#include "ctl_json.h"
#include "core/isotime.h"

#include <stdlib.h>
#include <string.h>

#define POOL_ROUTE_MAX    64
#define POOL_ENDPOINT_MAX 300

static json_t *endpoint_json(const char *router, const PB(RouterEndpointState) * e)
{
    json_t *o = json_object();
    json_object_set_new(o, "router", ctl_json_str(router));
    json_object_set_new(o, "route", ctl_json_str(e->route));
    json_object_set_new(o, "endpoint", ctl_json_str(e->endpoint));
    json_object_set_new(o, "state", ctl_json_str(e->state));
    json_object_set_new(o, "failures", json_integer(e->failures));
    json_object_set_new(o, "down_since", ctl_json_time(e->down_since_ms, 0));
    json_object_set_new(o, "next_probe", ctl_json_time(e->next_probe_ms, 0));
    json_object_set_new(o, "last_error", ctl_json_str(e->last_error));
    json_object_set_new(o, "last_ok", ctl_json_time(e->last_ok_ms, 0));
    json_object_set_new(o, "inflight", json_integer(e->inflight));
    return o;
}

static json_t *destination_json(const char *router, const PB(RouterDestinationState) * d)
{
    json_t *o = json_object();
    json_object_set_new(o, "router", ctl_json_str(router));
    json_object_set_new(o, "key", ctl_json_str(d->key));
    json_object_set_new(o, "provider", ctl_json_str(d->provider));
    json_object_set_new(o, "paused_until", ctl_json_time(d->paused_until_ms, 0));
    json_object_set_new(o, "rate_per_minute", json_real(d->rate_per_minute));
    json_object_set_new(o, "connection_limit", json_integer(d->connection_limit));
    json_object_set_new(o, "inflight", json_integer(d->inflight));
    json_object_set_new(o, "reason", ctl_json_str(d->reason));
    return o;
}

static json_t *source_json(const char *router, const PB(RouterSourceState) * s)
{
    json_t *o = json_object();
    json_object_set_new(o, "router", ctl_json_str(router));
    json_object_set_new(o, "pool", ctl_json_str(s->pool));
    json_object_set_new(o, "address", ctl_json_str(s->address));
    json_object_set_new(o, "provider", ctl_json_str(s->provider));
    json_object_set_new(o, "state", ctl_json_str(s->state));
    json_object_set_new(o, "sent_today", json_integer((json_int_t)s->sent_today));
    json_object_set_new(o, "daily_limit", json_integer((json_int_t)s->daily_limit));
    json_object_set_new(o, "weight", json_integer(s->weight));
    return o;
}

static const char *str_of(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s && *s ? s : "-";
}

static long long int_of(json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}

static void print_endpoints(FILE *f, json_t *list)
{
    size_t i;
    json_t *o;
    fprintf(f, "%-6s %-16s %-28s %-8s %8s %8s %-20s %s\n", "router", "route", "endpoint", "state",
            "failures", "inflight", "next_probe", "last_error");
    json_array_foreach(list, i, o)
    {
        fprintf(f, "%-6s %-16s %-28s %-8s %8lld %8lld %-20s %s\n", str_of(o, "router"),
                str_of(o, "route"), str_of(o, "endpoint"), str_of(o, "state"),
                int_of(o, "failures"), int_of(o, "inflight"), str_of(o, "next_probe"),
                str_of(o, "last_error"));
    }
}

static void print_destinations(FILE *f, json_t *list)
{
    size_t i;
    json_t *o;
    fprintf(f, "%-6s %-32s %-10s %10s %6s %8s %-20s %s\n", "router", "destination", "provider",
            "rate/min", "conns", "inflight", "paused_until", "reason");
    json_array_foreach(list, i, o)
    {
        double rate = json_real_value(json_object_get(o, "rate_per_minute"));
        char r[32];
        if (rate > 0)
            snprintf(r, sizeof(r), "%.1f", rate);
        else
            snprintf(r, sizeof(r), "-");
        fprintf(f, "%-6s %-32s %-10s %10s %6lld %8lld %-20s %s\n", str_of(o, "router"),
                str_of(o, "key"), str_of(o, "provider"), r, int_of(o, "connection_limit"),
                int_of(o, "inflight"), str_of(o, "paused_until"), str_of(o, "reason"));
    }
}

static void print_sources(FILE *f, json_t *list)
{
    size_t i;
    json_t *o;
    fprintf(f, "%-6s %-12s %-24s %-24s %-14s %10s %10s %6s\n", "router", "pool", "address",
            "provider", "state", "sent_today", "limit", "weight");
    json_array_foreach(list, i, o)
    {
        char limit[32];
        if (int_of(o, "daily_limit") > 0)
            snprintf(limit, sizeof(limit), "%lld", int_of(o, "daily_limit"));
        else
            snprintf(limit, sizeof(limit), "-");
        fprintf(f, "%-6s %-12s %-24s %-24s %-14s %10lld %10s %6lld\n", str_of(o, "router"),
                str_of(o, "pool"), str_of(o, "address"), str_of(o, "provider"), str_of(o, "state"),
                int_of(o, "sent_today"), limit, int_of(o, "weight"));
    }
}

/* The same request to every router instance; NULL calls when there is none (printed). */
static ctl_call_t *ask_routers(ctl_t *ctl, sx_env_t *req, size_t *n)
{
    *n = ctl->ep.router.n;
    if (*n == 0) {
        ctl_fail(ctl, "no bus.router endpoint in %s", ctl->config_path);
        return NULL;
    }
    ctl_call_t *calls = xcalloc(*n, sizeof(*calls));
    for (size_t i = 0; i < *n; i++) {
        calls[i].endpoint = ctl->ep.router.v[i];
        calls[i].req = req;
    }
    ctl_calls_run(ctl, calls, *n, ctl->timeout_ms);
    return calls;
}

/* Why call has no usable answer of the expected case (NULL: it has one). */
static const char *call_problem(const ctl_t *ctl, const ctl_call_t *c, int expect, unsigned *code,
                                char *buf, size_t size)
{
    if (code)
        *code = 0;
    if (c->state != CTL_CALL_OK)
        return ctl_call_problem(ctl, c, buf, size);
    const char *err = ctl_reply_error(c->reply, code);
    if (err) {
        sx_strlcpy(buf, err, size);
        return buf;
    }
    if ((int)c->reply->body_case != expect) {
        snprintf(buf, size, "unexpected reply (%s)", codec_body_name(c->reply));
        return buf;
    }
    return NULL;
}

int ctl_cmd_pool_list(ctl_t *ctl, const ctl_args_t *args)
{
    (void)args;
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    PB(RouterPoolList) list = PB_INIT(ROUTER_POOL_LIST);
    sx_env_t req = PB_INIT(ENVELOPE);
    req.body_case = PB_BODY(ROUTER_POOL_LIST);
    req.router_pool_list = &list;
    size_t n;
    ctl_call_t *calls = ask_routers(ctl, &req, &n);
    if (calls == NULL)
        return CTL_FAIL;
    json_t *eps = json_array(), *dests = json_array(), *srcs = json_array();
    char problem[CTL_TEXT_MAX + 64] = "";
    for (size_t i = 0; i < n && problem[0] == '\0'; i++) {
        char why[CTL_TEXT_MAX], inst[24];
        if (call_problem(ctl, &calls[i], PB_BODY(ROUTER_POOL_LIST_REPLY), NULL, why, sizeof(why))) {
            snprintf(problem, sizeof(problem), "router instance %zu: %s", i + 1, why);
            break;
        }
        snprintf(inst, sizeof(inst), "%zu", i + 1);
        const PB(RouterPoolListReply) *r = calls[i].reply->router_pool_list_reply;
        for (size_t k = 0; r && k < r->n_endpoints; k++)
            json_array_append_new(eps, endpoint_json(inst, r->endpoints[k]));
        for (size_t k = 0; r && k < r->n_destinations; k++)
            json_array_append_new(dests, destination_json(inst, r->destinations[k]));
        for (size_t k = 0; r && k < r->n_sources; k++)
            json_array_append_new(srcs, source_json(inst, r->sources[k]));
    }
    ctl_calls_free(calls, n);
    free(calls);
    if (problem[0]) {
        json_decref(eps);
        json_decref(dests);
        json_decref(srcs);
        return ctl_fail(ctl, "%s", problem);
    }
    if (ctl->json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "endpoints", eps);
        json_object_set_new(doc, "destinations", dests);
        json_object_set_new(doc, "sources", srcs);
        ctl_emit(ctl, doc);
        return CTL_OK;
    }
    fprintf(ctl->out, "endpoints\n");
    print_endpoints(ctl->out, eps);
    fprintf(ctl->out, "\ndestinations\n");
    print_destinations(ctl->out, dests);
    if (json_array_size(srcs) > 0) {
        fprintf(ctl->out, "\nsources\n");
        print_sources(ctl->out, srcs);
    }
    json_decref(eps);
    json_decref(dests);
    json_decref(srcs);
    return CTL_OK;
}

/* "host:port" or "[v6]:port" with a port from 1 to 65535. */
static int endpoint_ok(const char *v)
{
    size_t len = strlen(v);
    if (len == 0 || len > POOL_ENDPOINT_MAX)
        return 0;
    const char *colon = strrchr(v, ':');
    if (colon == NULL || colon == v)
        return 0;
    unsigned long port;
    if (ctl_parse_uint(colon + 1, 1, 65535, &port) < 0)
        return 0;
    for (const char *p = v; p < colon; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
            return 0;
    return 1;
}

static int pool_drain(ctl_t *ctl, const ctl_args_t *args, int drain)
{
    const char *endpoint = args->arg, *route = ctl_opt(args, "route");
    if (endpoint == NULL || !endpoint_ok(endpoint))
        return ctl_usage_error(ctl, args->cmd, "'%s' is not HOST:PORT", endpoint ? endpoint : "");
    if (route && (*route == '\0' || strlen(route) > POOL_ROUTE_MAX))
        return ctl_usage_error(ctl, args->cmd, "--route takes a route name of 1 to %d characters",
                               POOL_ROUTE_MAX);
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    PB(RouterPoolDrain) body = PB_INIT(ROUTER_POOL_DRAIN);
    body.endpoint = (char *)endpoint;
    body.route = (char *)(route ? route : "");
    body.drain = drain;
    sx_env_t req = PB_INIT(ENVELOPE);
    req.body_case = PB_BODY(ROUTER_POOL_DRAIN);
    req.router_pool_drain = &body;
    size_t n;
    ctl_call_t *calls = ask_routers(ctl, &req, &n);
    if (calls == NULL)
        return CTL_FAIL;
    json_t *eps = json_array();
    char problem[CTL_TEXT_MAX + 64] = "", missing[CTL_TEXT_MAX] = "";
    size_t matched = 0;
    for (size_t i = 0; i < n; i++) {
        char why[CTL_TEXT_MAX], inst[24];
        unsigned code = 0;
        if (call_problem(ctl, &calls[i], PB_BODY(ROUTER_POOL_DRAIN_REPLY), &code, why,
                         sizeof(why))) {
            /* an instance without that endpoint is no failure if another has it */
            if (code == 404 && missing[0] == '\0')
                sx_strlcpy(missing, why, sizeof(missing));
            else if (code != 404 && problem[0] == '\0')
                snprintf(problem, sizeof(problem), "router instance %zu: %s", i + 1, why);
            continue;
        }
        matched++;
        snprintf(inst, sizeof(inst), "%zu", i + 1);
        const PB(RouterPoolDrainReply) *r = calls[i].reply->router_pool_drain_reply;
        for (size_t k = 0; r && k < r->n_endpoints; k++)
            json_array_append_new(eps, endpoint_json(inst, r->endpoints[k]));
    }
    ctl_calls_free(calls, n);
    free(calls);
    if (problem[0] || matched == 0) {
        json_decref(eps);
        return ctl_fail(ctl, "%s", problem[0] ? problem : missing);
    }
    if (ctl->json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "endpoints", eps);
        ctl_emit(ctl, doc);
        return CTL_OK;
    }
    size_t i;
    json_t *o;
    json_array_foreach(eps, i, o)
    {
        fprintf(ctl->out, "router %s: route %s endpoint %s is %s\n", str_of(o, "router"),
                str_of(o, "route"), str_of(o, "endpoint"), str_of(o, "state"));
    }
    json_decref(eps);
    return CTL_OK;
}

int ctl_cmd_pool_drain(ctl_t *ctl, const ctl_args_t *args)
{
    return pool_drain(ctl, args, 1);
}

int ctl_cmd_pool_undrain(ctl_t *ctl, const ctl_args_t *args)
{
    return pool_drain(ctl, args, 0);
}
