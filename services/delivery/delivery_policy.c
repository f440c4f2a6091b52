/*
 * delivery_policy: one discovery per domain in flight, with the tasks
 * waiting for it. Steps: TXT, then (when the id is new) the policy host's
 * addresses, then the HTTPS fetch; each step ends the discovery early when
 * it can (cache hit, no record, failure with or without a cached policy).
 */
#include "delivery_policy.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"
#include "delivery_mx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define POLICY_PATH "/.well-known/mta-sts.txt"

struct policy_wait {
    struct discovery *d;
    policy_fn fn;
    void *arg;
    struct policy_wait *next;
};

typedef struct discovery {
    policy_mgr_t *m;
    char domain[MX_NAME_MAX];
    char host[MX_NAME_MAX + 16]; /* mta-sts.<domain> */
    int allow_private;
    char id[STS_ID_MAX + 1];
    resolver_query_t *query;
    fetch_t *fetch;
    policy_wait_t *waiters;
    struct discovery *prev, *next;
} discovery_t;

struct policy_mgr {
    loop_t *loop;
    resolver_t *r;
    fetcher_t *f;
    policy_conf_t conf;
    sts_cache_t *cache;
    discovery_t *running;
    uint64_t fetches;
};

policy_mgr_t *policy_new(loop_t *loop, resolver_t *r, fetcher_t *f, const policy_conf_t *conf)
{
    policy_mgr_t *m = xcalloc(1, sizeof(*m));
    m->loop = loop;
    m->r = r;
    m->f = f;
    m->conf = *conf;
    m->cache = sts_cache_new(conf->cache_max ? conf->cache_max : STS_CACHE_MAX);
    return m;
}

static void discovery_free(discovery_t *d)
{
    policy_mgr_t *m = d->m;
    if (d->prev)
        d->prev->next = d->next;
    else
        m->running = d->next;
    if (d->next)
        d->next->prev = d->prev;
    resolver_cancel(&d->query);
    fetch_cancel(&d->fetch);
    while (d->waiters) {
        policy_wait_t *w = d->waiters;
        d->waiters = w->next;
        free(w);
    }
    free(d);
}

void policy_destroy(policy_mgr_t **p)
{
    policy_mgr_t *m = *p;
    if (m == NULL)
        return;
    *p = NULL;
    while (m->running)
        discovery_free(m->running);
    sts_cache_destroy(&m->cache);
    free(m);
}

/* Tell every waiter and end the discovery. */
static void discovery_done(discovery_t *d, const sts_policy_t *p, const char *source)
{
    /* a copy: a waiter's callback may start a lookup that replaces the cache entry */
    sts_policy_t copy;
    if (p)
        sts_policy_copy(&copy, p);
    while (d->waiters) {
        policy_wait_t *w = d->waiters;
        d->waiters = w->next;
        policy_fn fn = w->fn;
        void *arg = w->arg;
        free(w);
        fn(p ? &copy : NULL, source, arg);
    }
    if (p)
        sts_policy_free(&copy);
    discovery_free(d);
}

/* The discovery found nothing new: an unexpired cached policy, or none. */
static void fall_back(discovery_t *d, const char *why)
{
    const sts_policy_t *cached = sts_cache_get(d->m->cache, d->domain, clock_mono_ms());
    if (cached) {
        log_info("event=mta_sts_cached domain=%s id=%s mode=%s why=\"%s\"", d->domain, cached->id,
                 sts_mode_name(cached->mode), why);
        discovery_done(d, cached, "cache");
        return;
    }
    discovery_done(d, NULL, why);
}

static void on_fetched(const fetch_result_t *r, void *arg)
{
    discovery_t *d = arg;
    d->fetch = NULL;
    char why[400];
    if (!r->ok) {
        snprintf(why, sizeof(why), "policy fetch failed: %s", r->err);
    } else if (r->status != 200) {
        snprintf(why, sizeof(why), "policy fetch answered HTTP %ld", r->status);
    } else if (strncasecmp(r->content_type, "text/plain", 10) != 0 ||
               (r->content_type[10] != '\0' && r->content_type[10] != ';' &&
                r->content_type[10] != ' ')) {
        snprintf(why, sizeof(why), "policy is not text/plain");
    } else {
        sts_policy_t p;
        char perr[160];
        if (sts_policy_parse(r->body, r->len, &p, perr, sizeof(perr)) < 0) {
            snprintf(why, sizeof(why), "bad policy: %s", perr);
        } else {
            sx_strlcpy(p.id, d->id, sizeof(p.id));
            sts_cache_put(d->m->cache, d->domain, &p, clock_mono_ms());
            log_info("event=mta_sts_policy domain=%s id=%s mode=%s mx=%zu max_age=%llu", d->domain,
                     p.id, sts_mode_name(p.mode), p.nmx, (unsigned long long)p.max_age);
            discovery_done(d, &p, "fetched");
            sts_policy_free(&p);
            return;
        }
    }
    log_warn("event=mta_sts_fetch_failed domain=%s id=%s reason=\"%s\"", d->domain, d->id, why);
    fall_back(d, why);
}

static void on_host(dns_status_t st, const sock_addr_t *addrs, size_t n, const char *err, void *arg)
{
    discovery_t *d = arg;
    d->query = NULL;
    char why[400];
    if (st != DNS_OK) {
        snprintf(why, sizeof(why), "cannot resolve %s: %s", d->host, err);
        log_warn("event=mta_sts_fetch_failed domain=%s reason=\"%s\"", d->domain, why);
        fall_back(d, why);
        return;
    }
    sock_addr_t ok[RESOLVE_ADDRS_MAX];
    size_t nok = 0;
    for (size_t i = 0; i < n; i++)
        if (d->allow_private || mx_addr_class(&addrs[i]) == ADDR_PUBLIC)
            ok[nok++] = addrs[i];
    if (nok == 0) {
        char ip[SOCK_ADDR_MAX];
        snprintf(why, sizeof(why), "%s is on a %s address (%s)", d->host,
                 mx_addr_class_name(mx_addr_class(&addrs[0])),
                 sock_addr_ip(&addrs[0], ip, sizeof(ip)));
        log_warn("event=mta_sts_fetch_failed domain=%s reason=\"%s\"", d->domain, why);
        fall_back(d, why);
        return;
    }
    d->m->fetches++;
    d->fetch = fetch_get(d->m->f, d->host, d->m->conf.port, POLICY_PATH, ok, nok,
                         d->m->conf.timeout_ms, STS_POLICY_MAX, on_fetched, d);
}

static void on_txt(dns_status_t st, const char *const *txt, size_t n, const char *err, void *arg)
{
    discovery_t *d = arg;
    d->query = NULL;
    if (st != DNS_OK) {
        /* no record: the domain has no policy, or had one that is still cached */
        fall_back(d, st == DNS_TEMPFAIL ? err : "no record");
        return;
    }
    char why[160];
    int rc = sts_txt_parse(txt, n, d->id, sizeof(d->id), why, sizeof(why));
    if (rc <= 0) {
        if (rc < 0)
            log_warn("event=mta_sts_bad_record domain=%s reason=\"%s\"", d->domain, why);
        fall_back(d, rc < 0 ? why : "no record");
        return;
    }
    const sts_policy_t *cached = sts_cache_get(d->m->cache, d->domain, clock_mono_ms());
    if (cached && strcmp(cached->id, d->id) == 0) {
        discovery_done(d, cached, "cache");
        return;
    }
    d->query = resolver_addrs(d->m->r, d->host, d->m->conf.port, on_host, d);
}

policy_wait_t *policy_lookup(policy_mgr_t *m, const char *domain, int allow_private, policy_fn fn,
                             void *arg)
{
    discovery_t *d = m->running;
    while (d && (strcasecmp(d->domain, domain) != 0 || d->allow_private != allow_private))
        d = d->next;
    if (d == NULL) {
        d = xcalloc(1, sizeof(*d));
        d->m = m;
        mx_host_t h;
        if (mx_host_set(&h, domain, 0) < 0)
            h.name[0] = '\0';
        sx_strlcpy(d->domain, h.name, sizeof(d->domain));
        snprintf(d->host, sizeof(d->host), "mta-sts.%s", h.name);
        d->allow_private = allow_private;
        d->next = m->running;
        if (m->running)
            m->running->prev = d;
        m->running = d;
        char name[MX_NAME_MAX + 16];
        snprintf(name, sizeof(name), "_mta-sts.%s", h.name);
        d->query = resolver_txt(m->r, name, on_txt, d);
    }
    policy_wait_t *w = xcalloc(1, sizeof(*w));
    w->d = d;
    w->fn = fn;
    w->arg = arg;
    w->next = d->waiters;
    d->waiters = w;
    return w;
}

void policy_cancel(policy_wait_t **p)
{
    policy_wait_t *w = *p;
    if (w == NULL)
        return;
    *p = NULL;
    discovery_t *d = w->d;
    for (policy_wait_t **pp = &d->waiters; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    }
    free(w);
    /* the discovery goes on without waiters: its policy still fills the cache */
}

size_t policy_cached(const policy_mgr_t *m)
{
    return sts_cache_count(m->cache);
}

uint64_t policy_fetches(const policy_mgr_t *m)
{
    return m->fetches;
}
