/*
 * router_health: endpoint states and task plans. What delivery tried comes
 * from DeliveryResult.attempts; a result without them is read the way
 * delivery walks a route (it moves to the next endpoint only when one
 * fails before the transaction), so every endpoint listed before the one
 * that answered failed, and that one failed only when every recipient got
 * a failure of the endpoint itself.
 */
#include "router_health.h"
#include "core/alloc.h"
#include "core/log.h"
#include "router_shape.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct ep_state {
    int down;
    int drained;
    uint32_t failures;
    uint64_t down_since;
    uint64_t next_probe;
    uint64_t backoff;
    uint64_t last_ok;
    uint64_t probe_task; /* the task probing it, 0: none */
    uint32_t inflight;
    char last_error[HEALTH_ERROR_MAX];
} ep_state_t;

struct health {
    const route_table_t *routes;
    health_limits_t lim;
    ep_state_t **eps; /* per route, per endpoint */
};

health_t *health_new(const route_table_t *routes, const health_limits_t *limits)
{
    health_t *h = xcalloc(1, sizeof(*h));
    h->routes = routes;
    h->lim = *limits;
    if (h->lim.probe_base_ms == 0)
        h->lim.probe_base_ms = 1;
    if (h->lim.probe_max_ms < h->lim.probe_base_ms)
        h->lim.probe_max_ms = h->lim.probe_base_ms;
    size_t n = route_table_count(routes);
    h->eps = xcalloc(n ? n : 1, sizeof(*h->eps));
    for (size_t i = 0; i < n; i++) {
        size_t ne = route_endpoint_count(route_table_get(routes, i));
        h->eps[i] = xcalloc(ne ? ne : 1, sizeof(**h->eps));
        for (size_t k = 0; k < ne; k++)
            h->eps[i][k].backoff = h->lim.probe_base_ms;
    }
    return h;
}

void health_destroy(health_t **p)
{
    health_t *h = *p;
    if (h == NULL)
        return;
    for (size_t i = 0; i < route_table_count(h->routes); i++)
        free(h->eps[i]);
    free(h->eps);
    free(h);
    *p = NULL;
}

static ep_state_t *ep_of(health_t *h, const route_t *r, size_t i)
{
    return &h->eps[route_index(r)][i];
}

/* ---- plans ---- */

int health_plan(health_t *h, const route_t *r, uint64_t now, health_plan_t *plan)
{
    memset(plan, 0, sizeof(*plan));
    size_t n = route_endpoint_count(r);
    if (n == 0)
        return 0;
    ep_state_t *eps = h->eps[route_index(r)];
    size_t up[ROUTE_ENDPOINT_MAX], down[ROUTE_ENDPOINT_MAX], nup = 0, ndown = 0;
    for (size_t i = 0; i < n; i++) {
        if (eps[i].drained)
            continue;
        if (eps[i].down)
            down[ndown++] = i;
        else
            up[nup++] = i;
    }
    if (nup == 0 && ndown == 0) {
        plan->retry_after_ms = HEALTH_DRAINED_RETRY_MS;
        plan->why = "every endpoint of the route is drained";
        return -1;
    }
    /* down endpoints by next probe time, the earliest first (stable: config order on ties) */
    for (size_t a = 1; a < ndown; a++) {
        size_t v = down[a], b = a;
        while (b > 0 && eps[down[b - 1]].next_probe > eps[v].next_probe) {
            down[b] = down[b - 1];
            b--;
        }
        down[b] = v;
    }
    size_t probe = SIZE_MAX;
    for (size_t k = 0; k < ndown; k++) {
        const ep_state_t *e = &eps[down[k]];
        if (e->probe_task == 0 && e->next_probe <= now) {
            probe = down[k];
            break;
        }
    }
    if (probe == SIZE_MAX && nup == 0) {
        uint64_t earliest = UINT64_MAX;
        for (size_t k = 0; k < ndown; k++)
            if (eps[down[k]].next_probe < earliest)
                earliest = eps[down[k]].next_probe;
        uint64_t wait = earliest > now ? earliest - now : 0;
        plan->retry_after_ms = wait < HEALTH_RETRY_MIN_MS ? HEALTH_RETRY_MIN_MS : wait;
        plan->why = "every endpoint of the route is down";
        return -1;
    }
    if (probe != SIZE_MAX) {
        plan->order[plan->n++] = probe;
        plan->probe = 1;
    }
    for (size_t k = 0; k < nup; k++)
        plan->order[plan->n++] = up[k];
    for (size_t k = 0; k < ndown; k++)
        if (down[k] != probe)
            plan->order[plan->n++] = down[k];
    return 0;
}

void health_sent(health_t *h, const route_t *r, const health_plan_t *plan, uint64_t task_id,
                 uint64_t now)
{
    if (plan->n == 0)
        return;
    ep_state_t *e = ep_of(h, r, plan->order[0]);
    e->inflight++;
    if (plan->probe) {
        e->probe_task = task_id;
        /* should the answer never come, the next probe is due after one back-off */
        e->next_probe = now + e->backoff;
        log_info("event=endpoint_probe route=%s endpoint=%s task=%" PRIu64 " failures=%u",
                 route_name(r), route_endpoint_name(r, plan->order[0]), task_id, e->failures);
    }
}

/* ---- what a result says ---- */

static void mark_ok(health_t *h, const route_t *r, size_t i, uint64_t now)
{
    ep_state_t *e = ep_of(h, r, i);
    if (e->down)
        log_info("event=endpoint_up route=%s endpoint=%s after_failures=%u down_ms=%" PRIu64,
                 route_name(r), route_endpoint_name(r, i), e->failures, now - e->down_since);
    e->down = 0;
    e->failures = 0;
    e->down_since = 0;
    e->next_probe = 0;
    e->backoff = h->lim.probe_base_ms;
    e->last_ok = now;
}

static void mark_failed(health_t *h, const route_t *r, size_t i, int probed, const char *why,
                        uint64_t now)
{
    ep_state_t *e = ep_of(h, r, i);
    e->failures++;
    sx_strlcpy(e->last_error, why, sizeof(e->last_error));
    char q[HEALTH_ERROR_MAX + 16];
    log_quote(q, sizeof(q), e->last_error, strlen(e->last_error));
    if (!e->down) {
        e->down = 1;
        e->down_since = now;
        e->backoff = h->lim.probe_base_ms;
        e->next_probe = now + e->backoff;
        log_warn("event=endpoint_down route=%s endpoint=%s next_probe_ms=%" PRIu64 " error=%s",
                 route_name(r), route_endpoint_name(r, i), e->backoff, q);
    } else if (probed) {
        e->backoff = e->backoff * 2 > h->lim.probe_max_ms ? h->lim.probe_max_ms : e->backoff * 2;
        e->next_probe = now + e->backoff;
        log_warn("event=endpoint_probe_failed route=%s endpoint=%s failures=%u "
                 "next_probe_ms=%" PRIu64 " error=%s",
                 route_name(r), route_endpoint_name(r, i), e->failures, e->backoff, q);
    }
}

static int in_plan(const health_plan_t *plan, size_t i)
{
    for (size_t k = 0; k < plan->n; k++)
        if (plan->order[k] == i)
            return 1;
    return 0;
}

static int text_has(const char *text, const char *word)
{
    return text && strcasestr(text, word) != NULL;
}

int health_reply_is_endpoint_failure(const PB(Status) * st, const char *reason)
{
    if (st == NULL || st->code / 100 == 2 || st->code / 100 == 5)
        return 0;
    if (reason && (strcmp(reason, "network") == 0 || strcmp(reason, "tls") == 0 ||
                   strcmp(reason, "dns") == 0))
        return 1;
    if (shape_reply_is_slowdown(st, reason))
        return 0;
    if (st->code == 421)
        return 1;
    const char *enh = st->enhanced ? st->enhanced : "";
    if (strcmp(enh, "4.4.1") == 0 || strcmp(enh, "4.4.3") == 0 || strcmp(enh, "4.7.5") == 0)
        return 1;
    /* lost or timed out before the transaction began */
    if (strcmp(enh, "4.4.2") == 0)
        return text_has(st->text, "greeting") || text_has(st->text, "EHLO") ||
               text_has(st->text, "HELO") || text_has(st->text, "STARTTLS") ||
               text_has(st->text, "TLS handshake") || text_has(st->text, "AUTH reply");
    if (strcmp(enh, "4.7.0") == 0)
        return text_has(st->text, "authentication to") || text_has(st->text, "offers no");
    return 0;
}

/* A 421 that closed the transaction: the endpoint turned the rest of the work away. */
static const char *closing_421(const PB(DeliveryResult) * res)
{
    for (size_t i = 0; i < res->n_recipients; i++) {
        const PB(DeliveryRecipientResult) *rr = res->recipients[i];
        if (rr && rr->reply && rr->reply->code == 421 &&
            !shape_reply_is_slowdown(rr->reply, rr->reason))
            return rr->reply->text ? rr->reply->text : "421";
    }
    return NULL;
}

/* The text of a Status, "code enh text". */
static const char *status_text(const PB(Status) * st, char *buf, size_t size)
{
    if (st == NULL) {
        snprintf(buf, size, "no reply");
        return buf;
    }
    snprintf(buf, size, "%u %s %s", st->code, st->enhanced ? st->enhanced : "",
             st->text ? st->text : "");
    return buf;
}

/* The endpoint of plan that gave the final answer, from endpoint or remote_host; -1: unknown. */
static int final_endpoint(const route_t *r, const health_plan_t *plan,
                          const PB(DeliveryResult) * res)
{
    if (res->endpoint && *res->endpoint) {
        int i = route_endpoint_find(r, res->endpoint);
        if (i >= 0 && in_plan(plan, (size_t)i))
            return i;
    }
    if (res->remote_host == NULL || *res->remote_host == '\0')
        return -1;
    for (size_t k = 0; k < plan->n; k++) {
        const char *host = route_endpoint_host(r, plan->order[k]);
        if (strcasecmp(host, res->remote_host) == 0 ||
            (res->remote_ip && strcasecmp(host, res->remote_ip) == 0))
            return (int)plan->order[k];
    }
    return -1;
}

void health_result(health_t *h, const route_t *r, const health_plan_t *plan, uint64_t task_id,
                   const PB(DeliveryResult) * res, uint64_t now)
{
    if (plan->n == 0)
        return;
    ep_state_t *first = ep_of(h, r, plan->order[0]);
    if (first->inflight > 0)
        first->inflight--;
    int probed_first = first->probe_task == task_id && task_id != 0;
    if (probed_first)
        first->probe_task = 0;
    if (res == NULL)
        return;
    char why[HEALTH_ERROR_MAX];

    if (res->n_attempts > 0) {
        /* per endpoint: up when any of its addresses took the transaction, down when one
         * failed and none took it; an address skipped on purpose (4.4.4: a class of address
         * or a source family the route may not use) says nothing about the endpoint */
        int seen[ROUTE_ENDPOINT_MAX] = {0}; /* 1: failed, 2: ok */
        const PB(Status) * err[ROUTE_ENDPOINT_MAX] = {0};
        int last_ok = -1;
        for (size_t k = 0; k < res->n_attempts; k++) {
            const PB(DeliveryEndpointAttempt) *a = res->attempts[k];
            if (a == NULL)
                continue;
            int i = route_endpoint_find(r, a->endpoint);
            if (i < 0 || !in_plan(plan, (size_t)i))
                continue; /* an MX host, or not ours */
            if (a->ok) {
                seen[i] = 2;
                last_ok = i;
            } else if (seen[i] == 0 && !(a->status && a->status->enhanced &&
                                         strcmp(a->status->enhanced, "4.4.4") == 0)) {
                seen[i] = 1;
                err[i] = a->status;
            }
        }
        for (size_t k = 0; k < plan->n; k++) {
            size_t i = plan->order[k];
            if (seen[i] == 2)
                mark_ok(h, r, i, now);
            else if (seen[i] == 1)
                mark_failed(h, r, i, probed_first && k == 0, status_text(err[i], why, sizeof(why)),
                            now);
        }
        const char *c421 = last_ok >= 0 ? closing_421(res) : NULL;
        if (c421) {
            snprintf(why, sizeof(why), "421 %s", c421);
            mark_failed(h, r, (size_t)last_ok, 0, why, now);
        }
        return;
    }

    int fin = final_endpoint(r, plan, res);
    if (fin < 0)
        return;
    for (size_t k = 0; k < plan->n && plan->order[k] != (size_t)fin; k++) {
        snprintf(why, sizeof(why), "failed before the transaction; delivery moved on to %s",
                 route_endpoint_name(r, (size_t)fin));
        mark_failed(h, r, plan->order[k], probed_first && k == 0, why, now);
    }
    int failed = res->n_recipients > 0;
    for (size_t i = 0; i < res->n_recipients && failed; i++) {
        const PB(DeliveryRecipientResult) *rr = res->recipients[i];
        if (rr == NULL || !health_reply_is_endpoint_failure(rr->reply, rr->reason))
            failed = 0;
    }
    const char *c421 = failed ? NULL : closing_421(res);
    if (failed) {
        const PB(DeliveryRecipientResult) *rr = res->recipients[0];
        mark_failed(h, r, (size_t)fin, probed_first && plan->order[0] == (size_t)fin,
                    status_text(rr->reply, why, sizeof(why)), now);
    } else if (c421) {
        snprintf(why, sizeof(why), "421 %s", c421);
        mark_failed(h, r, (size_t)fin, probed_first && plan->order[0] == (size_t)fin, why, now);
    } else {
        mark_ok(h, r, (size_t)fin, now);
    }
}

/* ---- operators ---- */

static void view_of(health_t *h, const route_t *r, size_t i, health_view_t *v)
{
    const ep_state_t *e = ep_of(h, r, i);
    v->route = route_name(r);
    v->endpoint = route_endpoint_name(r, i);
    v->state = e->drained ? "drained" : e->down ? "down" : "up";
    v->failures = e->failures;
    v->down_since = e->down ? e->down_since : 0;
    v->next_probe = e->down ? e->next_probe : 0;
    v->last_ok = e->last_ok;
    v->last_error = e->last_error;
    v->inflight = e->inflight;
}

size_t health_drain(health_t *h, const char *route, const char *endpoint, int drain,
                    void (*fn)(const health_view_t *v, void *arg), void *arg)
{
    size_t matched = 0;
    for (size_t ri = 0; ri < route_table_count(h->routes); ri++) {
        const route_t *r = route_table_get(h->routes, ri);
        if (route && *route && strcmp(route, route_name(r)) != 0)
            continue;
        int i = route_endpoint_find(r, endpoint);
        if (i < 0)
            continue;
        ep_state_t *e = ep_of(h, r, (size_t)i);
        if (e->drained != !!drain)
            log_info("event=endpoint_%s route=%s endpoint=%s", drain ? "drained" : "undrained",
                     route_name(r), route_endpoint_name(r, (size_t)i));
        e->drained = !!drain;
        matched++;
        if (fn) {
            health_view_t v;
            view_of(h, r, (size_t)i, &v);
            fn(&v, arg);
        }
    }
    return matched;
}

void health_each(health_t *h, void (*fn)(const health_view_t *v, void *arg), void *arg)
{
    for (size_t ri = 0; ri < route_table_count(h->routes); ri++) {
        const route_t *r = route_table_get(h->routes, ri);
        for (size_t i = 0; i < route_endpoint_count(r); i++) {
            health_view_t v;
            view_of(h, r, i, &v);
            fn(&v, arg);
        }
    }
}

size_t health_down_count(const health_t *h)
{
    size_t n = 0;
    for (size_t ri = 0; ri < route_table_count(h->routes); ri++) {
        const route_t *r = route_table_get(h->routes, ri);
        for (size_t i = 0; i < route_endpoint_count(r); i++)
            n += h->eps[ri][i].down && !h->eps[ri][i].drained;
    }
    return n;
}
