/*
 * router_shape: provider profiles, learnt MX hosts and destination state
 * (token bucket, connections in flight, pauses and recovery).
 */
#include "router_shape.h"
#include "core/alloc.h"
#include "core/conf.h"
#include "core/log.h"
#include "mail/address.h"
#include "router_map.h"

#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct provider_table {
    provider_t v[PROVIDER_MAX];
    size_t n;
};

/* ---- built-in profiles ---- */

typedef struct builtin {
    const char *name;
    const char *domains[8];
    const char *mx[4];
    uint32_t connections, per_connection;
    double rate;
} builtin_t;

/*
 * The default profile covers every domain no other profile names, on
 * smart-host routes as on MX routes (shaping goes by recipient domain). A
 * connection serves 100 messages: a smart host is usually one's own relay,
 * and each new connection costs a connect, EHLO and often TLS and AUTH.
 */
static const builtin_t builtins[] = {
    {SHAPE_DEFAULT_NAME, {NULL}, {NULL}, 20, 100, 0},
    {"gmail",
     {"gmail.com", "googlemail.com", NULL},
     {"*.google.com", "*.googlemail.com", NULL},
     20,
     50,
     600},
    {"outlook",
     {"outlook.com", "hotmail.com", "live.com", "msn.com", NULL},
     {"*.protection.outlook.com", "*.outlook.com", NULL},
     10,
     20,
     300},
    {"yahoo", {"yahoo.com", "ymail.com", "aol.com", NULL}, {"*.yahoodns.net", NULL}, 10, 20, 300},
    {"apple", {"icloud.com", "me.com", "mac.com", NULL}, {"*.icloud.com", NULL}, 10, 20, 300},
};

static void strs_free(char ***v, size_t *n)
{
    for (size_t i = 0; i < *n; i++)
        free((*v)[i]);
    free(*v);
    *v = NULL;
    *n = 0;
}

static void strs_add(char ***v, size_t *n, const char *s)
{
    char *copy = xstrdup(s);
    for (char *p = copy; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    *v = xrealloc(*v, (*n + 1) * sizeof(**v));
    (*v)[(*n)++] = copy;
}

provider_table_t *provider_table_builtin(void)
{
    provider_table_t *t = xcalloc(1, sizeof(*t));
    for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++) {
        provider_t *p = &t->v[t->n++];
        sx_strlcpy(p->name, builtins[i].name, sizeof(p->name));
        for (size_t k = 0; builtins[i].domains[k]; k++)
            strs_add(&p->domains, &p->ndomains, builtins[i].domains[k]);
        for (size_t k = 0; builtins[i].mx[k]; k++)
            strs_add(&p->mx, &p->nmx, builtins[i].mx[k]);
        p->connections = builtins[i].connections;
        p->messages_per_connection = builtins[i].per_connection;
        p->rate_per_minute = builtins[i].rate;
    }
    return t;
}

void provider_table_destroy(provider_table_t **p)
{
    provider_table_t *t = *p;
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n; i++) {
        strs_free(&t->v[i].domains, &t->v[i].ndomains);
        strs_free(&t->v[i].mx, &t->v[i].nmx);
    }
    free(t);
    *p = NULL;
}

void provider_table_release(void *field)
{
    provider_table_destroy((provider_table_t **)field);
}

size_t provider_table_count(const provider_table_t *t)
{
    return t ? t->n : 0;
}

const provider_t *provider_table_get(const provider_table_t *t, size_t i)
{
    return t && i < t->n ? &t->v[i] : NULL;
}

const provider_t *provider_find(const provider_table_t *t, const char *name)
{
    for (size_t i = 0; t && name && i < t->n; i++)
        if (strcasecmp(t->v[i].name, name) == 0)
            return &t->v[i];
    return NULL;
}

int shape_domain_matches(const char *pattern, const char *domain)
{
    if (strncmp(pattern, "*.", 2) == 0) {
        size_t pl = strlen(pattern + 1), dl = strlen(domain);
        return dl > pl && strcasecmp(domain + dl - pl, pattern + 1) == 0;
    }
    return strcasecmp(pattern, domain) == 0;
}

/* A trailing dot (absolute names from DNS) does not count. */
static const char *bare(const char *name, char *buf, size_t size)
{
    size_t n = strlen(name);
    if (n > 0 && name[n - 1] == '.' && n < size) {
        memcpy(buf, name, n - 1);
        buf[n - 1] = '\0';
        return buf;
    }
    return name;
}

const provider_t *provider_by_domain(const provider_table_t *t, const char *domain)
{
    char b[ADDR_DOMAIN_MAX + 2];
    if (domain == NULL || *domain == '\0')
        return NULL;
    domain = bare(domain, b, sizeof(b));
    for (size_t i = 0; t && i < t->n; i++)
        for (size_t k = 0; k < t->v[i].ndomains; k++)
            if (shape_domain_matches(t->v[i].domains[k], domain))
                return &t->v[i];
    return NULL;
}

const provider_t *provider_by_mx(const provider_table_t *t, const char *mx_host)
{
    char b[ADDR_DOMAIN_MAX + 2];
    if (mx_host == NULL || *mx_host == '\0')
        return NULL;
    mx_host = bare(mx_host, b, sizeof(b));
    for (size_t i = 0; t && i < t->n; i++)
        for (size_t k = 0; k < t->v[i].nmx; k++)
            if (shape_domain_matches(t->v[i].mx[k], mx_host))
                return &t->v[i];
    return NULL;
}

const provider_t *provider_default(const provider_table_t *t)
{
    return provider_find(t, SHAPE_DEFAULT_NAME);
}

/* ---- parsing ---- */

static int perr(char *err, size_t errlen, int index, const config_setting_t *s, const char *key,
                const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* "providers[N].key: reason (at file:line)" */
static int perr(char *err, size_t errlen, int index, const config_setting_t *s, const char *key,
                const char *fmt, ...)
{
    char reason[512], where[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    conf_where(s, where, sizeof(where));
    int nofile = strncmp(where, "?:", 2) == 0;
    snprintf(err, errlen, "providers[%d]%s%s: %s (at %s%s)", index, key ? "." : "", key ? key : "",
             reason, nofile ? "line " : "", nofile ? where + 2 : where);
    return -1;
}

static int parse_names(char *err, size_t errlen, int index, const config_setting_t *s,
                       const char *key, char ***v, size_t *n)
{
    int t = config_setting_type(s);
    if (t != CONFIG_TYPE_STRING && t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST)
        return perr(err, errlen, index, s, key, "expected a string or a list of strings");
    int count = t == CONFIG_TYPE_STRING ? 1 : config_setting_length(s);
    if (count > PROVIDER_LIST_MAX)
        return perr(err, errlen, index, s, key, "%d entries, at most %d", count, PROVIDER_LIST_MAX);
    strs_free(v, n);
    for (int i = 0; i < count; i++) {
        const char *d = t == CONFIG_TYPE_STRING ? config_setting_get_string(s)
                                                : config_setting_get_string_elem(s, i);
        if (d == NULL || *d == '\0')
            return perr(err, errlen, index, s, key, "element %d is not a non-empty string", i + 1);
        const char *plain = strncmp(d, "*.", 2) == 0 ? d + 2 : d;
        if (!address_domain_valid(plain, 1))
            return perr(err, errlen, index, s, key, "\"%s\" is not a domain (or *.domain)", d);
        strs_add(v, n, d);
    }
    return 0;
}

static int parse_count(char *err, size_t errlen, int index, const config_setting_t *g,
                       const char *key, long long min, long long max, uint32_t *out)
{
    const config_setting_t *s = config_setting_get_member(g, key);
    if (s == NULL)
        return 0;
    int t = config_setting_type(s);
    if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64)
        return perr(err, errlen, index, s, key, "expected a whole number");
    long long v = config_setting_get_int64(s);
    if (v < min || v > max)
        return perr(err, errlen, index, s, key, "%lld is not within %lld..%lld", v, min, max);
    *out = (uint32_t)v;
    return 0;
}

static int parse_provider(char *err, size_t errlen, int index, const config_setting_t *g,
                          provider_table_t *t)
{
    static const char *const keys[] = {
        "name", "domains", "mx", "connections", "messages_per_connection", "rate_per_minute", NULL};
    if (config_setting_type(g) != CONFIG_TYPE_GROUP)
        return perr(err, errlen, index, g, NULL, "expected a group { name = ...; ... }");
    for (int i = 0; i < config_setting_length(g); i++) {
        const config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(s);
        int known = 0;
        for (size_t k = 0; keys[k] && !known; k++)
            known = name && strcmp(name, keys[k]) == 0;
        if (!known)
            return perr(err, errlen, index, s, name ? name : "?", "unknown setting");
    }
    const config_setting_t *ns = config_setting_get_member(g, "name");
    const char *name =
        ns && config_setting_type(ns) == CONFIG_TYPE_STRING ? config_setting_get_string(ns) : NULL;
    if (name == NULL || *name == '\0')
        return perr(err, errlen, index, ns ? ns : g, "name", "every provider needs a name");
    if (strlen(name) > PROVIDER_NAME_MAX)
        return perr(err, errlen, index, ns, "name", "longer than %d characters", PROVIDER_NAME_MAX);
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
            return perr(err, errlen, index, ns, "name",
                        "\"%s\": letters, digits, '-', '_' and '.' only", name);
    provider_t *p = (provider_t *)provider_find(t, name);
    int is_new = p == NULL;
    if (is_new) {
        if (t->n >= PROVIDER_MAX)
            return perr(err, errlen, index, g, NULL, "more than %d providers", PROVIDER_MAX);
        const provider_t *def = provider_default(t);
        p = &t->v[t->n++];
        memset(p, 0, sizeof(*p));
        sx_strlcpy(p->name, name, sizeof(p->name));
        for (char *c = p->name; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        p->connections = def->connections;
        p->messages_per_connection = def->messages_per_connection;
        p->rate_per_minute = def->rate_per_minute;
    }
    int is_default = strcmp(p->name, SHAPE_DEFAULT_NAME) == 0;
    const config_setting_t *s;
    if ((s = config_setting_get_member(g, "domains")) != NULL) {
        if (is_default)
            return perr(err, errlen, index, s, "domains",
                        "the default profile applies to every other domain");
        if (parse_names(err, errlen, index, s, "domains", &p->domains, &p->ndomains) < 0)
            return -1;
    }
    if ((s = config_setting_get_member(g, "mx")) != NULL) {
        if (is_default)
            return perr(err, errlen, index, s, "mx",
                        "the default profile applies to every other domain");
        if (parse_names(err, errlen, index, s, "mx", &p->mx, &p->nmx) < 0)
            return -1;
    }
    if (parse_count(err, errlen, index, g, "connections", 1, 100000, &p->connections) < 0 ||
        parse_count(err, errlen, index, g, "messages_per_connection", 1, 100000,
                    &p->messages_per_connection) < 0)
        return -1;
    if ((s = config_setting_get_member(g, "rate_per_minute")) != NULL) {
        int ty = config_setting_type(s);
        double v;
        if (ty == CONFIG_TYPE_INT || ty == CONFIG_TYPE_INT64)
            v = (double)config_setting_get_int64(s);
        else if (ty == CONFIG_TYPE_FLOAT)
            v = config_setting_get_float(s);
        else
            return perr(err, errlen, index, s, "rate_per_minute", "expected a number");
        if (!(v >= 0 && v <= 1e7))
            return perr(err, errlen, index, s, "rate_per_minute",
                        "must be within 0..10000000 (0: no limit)");
        p->rate_per_minute = v;
    }
    if (is_new && p->ndomains == 0 && p->nmx == 0)
        return perr(err, errlen, index, g, "domains",
                    "a new provider needs domains or mx patterns to match anything");
    return 0;
}

int provider_table_parse(const config_setting_t *s, void *field, char *err, size_t errlen)
{
    provider_table_t **out = field;
    provider_table_t *t = provider_table_builtin();
    *out = NULL;
    if (s != NULL) {
        if (config_setting_type(s) != CONFIG_TYPE_LIST) {
            snprintf(err, errlen, "expected a list of providers: ( { name = ...; }, ... )");
            provider_table_destroy(&t);
            return -1;
        }
        for (int i = 0; i < config_setting_length(s); i++) {
            const config_setting_t *g = config_setting_get_elem(s, (unsigned)i);
            /* a second entry for the same name would silently win: refuse it */
            const config_setting_t *ns = config_setting_get_member(g, "name");
            const char *name = ns && config_setting_type(ns) == CONFIG_TYPE_STRING
                                   ? config_setting_get_string(ns)
                                   : NULL;
            for (int j = 0; name && j < i; j++) {
                const config_setting_t *o =
                    config_setting_get_member(config_setting_get_elem(s, (unsigned)j), "name");
                if (o && config_setting_type(o) == CONFIG_TYPE_STRING &&
                    strcasecmp(config_setting_get_string(o), name) == 0) {
                    perr(err, errlen, i + 1, ns, "name", "\"%s\" is already providers[%d]", name,
                         j + 1);
                    provider_table_destroy(&t);
                    return -1;
                }
            }
            if (parse_provider(err, errlen, i + 1, g, t) < 0) {
                provider_table_destroy(&t);
                return -1;
            }
        }
    }
    *out = t;
    return 0;
}

/* ---- reply classes ---- */

static int has_word(const char *text, const char *w)
{
    return text && strcasestr(text, w) != NULL;
}

int shape_reply_is_slowdown(const PB(Status) * st, const char *reason)
{
    if (reason && strcmp(reason, "rate") == 0)
        return 1;
    if (st == NULL)
        return 0;
    const char *enh = st->enhanced ? st->enhanced : "";
    if (strcmp(enh + (enh[0] ? 1 : 0), ".7.28") == 0)
        return 1;
    if (st->code == 421 && strcmp(enh, "4.7.0") == 0)
        return 1;
    if ((st->code == 450 || st->code == 451) && strncmp(enh, "4.7.", 4) == 0)
        return has_word(st->text, "rate") || has_word(st->text, "limit") ||
               has_word(st->text, "too many");
    if (st->code == 452 && strcmp(enh, "4.5.3") == 0)
        return 1;
    return 0;
}

/* ---- destinations ---- */

struct dest {
    shape_t *owner;
    char key[SHAPE_KEY_MAX];
    char source[64];
    const provider_t *p;
    int pinned; /* a named profile's own row: always listed, never swept */
    uint32_t inflight;
    double rate; /* current; 0: none */
    double tokens;
    uint64_t refill_at;
    uint64_t paused_until;
    unsigned level;     /* pauses in a row without full recovery */
    int slowed;         /* rate below the profile's: recovering */
    double rate_target; /* what recovery climbs back to */
    uint64_t recover_at;
    uint32_t ok_since_step;
    uint64_t win_start; /* tasks started per minute, for a profile without a rate */
    uint32_t win_count, prev_count;
    uint64_t last_used;
    char reason[SHAPE_REASON_MAX];
};

typedef struct mx_entry {
    char host[ADDR_DOMAIN_MAX + 1];
    uint64_t expires;
} mx_entry_t;

struct shape {
    const provider_table_t *providers;
    shape_limits_t lim;
    rmap_t *dests;
    rmap_t *mx;
};

static double capacity(double rate)
{
    return rate / 60.0 > 1.0 ? rate / 60.0 : 1.0;
}

static dest_t *dest_make(shape_t *s, const provider_t *p, const char *key, const char *source,
                         uint64_t now)
{
    dest_t *d = xcalloc(1, sizeof(*d));
    d->owner = s;
    sx_strlcpy(d->key, key, sizeof(d->key));
    sx_strlcpy(d->source, source, sizeof(d->source));
    d->p = p;
    d->rate = p->rate_per_minute;
    d->tokens = capacity(d->rate);
    d->refill_at = now;
    d->win_start = now;
    d->last_used = now;
    return d;
}

shape_t *shape_new(const provider_table_t *providers, const shape_limits_t *limits)
{
    shape_t *s = xcalloc(1, sizeof(*s));
    s->providers = providers;
    s->lim = *limits;
    if (s->lim.pause_base_ms == 0)
        s->lim.pause_base_ms = 1;
    if (s->lim.pause_max_ms < s->lim.pause_base_ms)
        s->lim.pause_max_ms = s->lim.pause_base_ms;
    if (s->lim.recover_interval_ms == 0)
        s->lim.recover_interval_ms = 60000;
    s->dests = rmap_new();
    s->mx = rmap_new();
    /* every named profile has a row of its own, so its limits show before any traffic */
    for (size_t i = 0; i < provider_table_count(providers); i++) {
        const provider_t *p = provider_table_get(providers, i);
        if (strcmp(p->name, SHAPE_DEFAULT_NAME) == 0)
            continue;
        dest_t *d = dest_make(s, p, p->name, "", 0);
        d->pinned = 1;
        rmap_put(s->dests, d->key, d);
    }
    return s;
}

void shape_destroy(shape_t **p)
{
    shape_t *s = *p;
    if (s == NULL)
        return;
    rmap_destroy(&s->dests, free);
    rmap_destroy(&s->mx, free);
    free(s);
    *p = NULL;
}

const provider_table_t *shape_providers(const shape_t *s)
{
    return s->providers;
}

const char *shape_mx_of(shape_t *s, const char *domain, uint64_t now)
{
    char key[ADDR_DOMAIN_MAX + 2];
    sx_strlcpy(key, domain, sizeof(key));
    for (char *c = key; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    mx_entry_t *e = rmap_get(s->mx, key);
    if (e == NULL)
        return NULL;
    if (now >= e->expires) {
        free(rmap_del(s->mx, key));
        return NULL;
    }
    return e->host;
}

const provider_t *shape_classify(shape_t *s, const char *domain, uint64_t now, char *key,
                                 size_t keylen)
{
    const provider_t *p = provider_by_domain(s->providers, domain);
    if (p == NULL)
        p = provider_by_mx(s->providers, shape_mx_of(s, domain, now));
    if (p == NULL || strcmp(p->name, SHAPE_DEFAULT_NAME) == 0) {
        p = provider_default(s->providers);
        sx_strlcpy(key, domain, keylen);
        for (char *c = key; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        size_t n = strlen(key);
        if (n > 0 && key[n - 1] == '.')
            key[n - 1] = '\0';
    } else {
        sx_strlcpy(key, p->name, keylen);
    }
    return p;
}

typedef struct oldest {
    const char *key;
    uint64_t expires;
    uint64_t now;
    size_t expired;
} oldest_t;

static int mx_expired(const char *key, void *value, void *arg)
{
    oldest_t *o = arg;
    mx_entry_t *e = value;
    if (o->now >= e->expires) {
        free(e);
        o->expired++;
        return 1;
    }
    if (o->key == NULL || e->expires < o->expires) {
        o->key = key;
        o->expires = e->expires;
    }
    return 0;
}

void shape_learn_mx(shape_t *s, const char *domain, const char *mx_host, uint64_t now)
{
    if (domain == NULL || *domain == '\0' || mx_host == NULL || *mx_host == '\0' ||
        strlen(domain) > ADDR_DOMAIN_MAX || strlen(mx_host) > ADDR_DOMAIN_MAX ||
        s->lim.mx_cache_max == 0)
        return;
    char key[ADDR_DOMAIN_MAX + 2];
    sx_strlcpy(key, domain, sizeof(key));
    for (char *c = key; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    mx_entry_t *e = rmap_get(s->mx, key);
    if (e == NULL) {
        if (rmap_count(s->mx) >= s->lim.mx_cache_max) {
            oldest_t o = {.now = now};
            rmap_each(s->mx, mx_expired, &o);
            if (o.expired == 0 && o.key) {
                char victim[ADDR_DOMAIN_MAX + 2];
                sx_strlcpy(victim, o.key, sizeof(victim));
                free(rmap_del(s->mx, victim));
            }
        }
        e = xcalloc(1, sizeof(*e));
        rmap_put(s->mx, key, e);
    }
    sx_strlcpy(e->host, mx_host, sizeof(e->host));
    for (char *c = e->host; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    e->expires = now + s->lim.mx_cache_ttl_ms;
}

/* Is d back at its profile's limits with nothing going on? */
static int dest_idle(const dest_t *d, uint64_t now)
{
    return !d->pinned && d->inflight == 0 && !d->slowed && d->paused_until <= now;
}

typedef struct sweep {
    uint64_t now;
    uint64_t idle_ms;
    size_t removed;
} sweep_t;

static int dest_sweep(const char *key, void *value, void *arg)
{
    (void)key;
    sweep_t *sw = arg;
    dest_t *d = value;
    if (dest_idle(d, sw->now) && sw->now >= d->last_used + sw->idle_ms) {
        free(d);
        sw->removed++;
        return 1;
    }
    return 0;
}

dest_t *shape_dest(shape_t *s, const provider_t *p, const char *key, const char *source,
                   uint64_t now)
{
    char full[SHAPE_KEY_MAX];
    if (source && *source)
        snprintf(full, sizeof(full), "%s/%s", key, source);
    else
        sx_strlcpy(full, key, sizeof(full));
    dest_t *d = rmap_get(s->dests, full);
    if (d) {
        d->p = p; /* a learnt MX host may move a domain to another profile */
        d->last_used = now;
        return d;
    }
    if (s->lim.dests_max && rmap_count(s->dests) >= s->lim.dests_max) {
        sweep_t sw = {.now = now, .idle_ms = 0};
        rmap_each(s->dests, dest_sweep, &sw);
        if (rmap_count(s->dests) >= s->lim.dests_max) {
            log_warn("event=destinations_full max=%zu key=%s", s->lim.dests_max, full);
            return NULL;
        }
    }
    d = dest_make(s, p, full, source, now);
    rmap_put(s->dests, d->key, d);
    return d;
}

/* Tokens since the last look, and a recovery step per interval that saw a success. */
static void refresh(shape_t *s, dest_t *d, uint64_t now)
{
    if (d->rate > 0 && now > d->refill_at) {
        d->tokens += (double)(now - d->refill_at) * d->rate / 60000.0;
        if (d->tokens > capacity(d->rate))
            d->tokens = capacity(d->rate);
    }
    if (now > d->refill_at)
        d->refill_at = now;
    if (!d->slowed || now < d->recover_at)
        return;
    uint64_t steps = (now - d->recover_at) / s->lim.recover_interval_ms + 1;
    if (d->ok_since_step > 0) {
        double before = d->rate;
        d->rate = d->rate * (1.0 + s->lim.recover_step);
        if (d->rate < before + 1.0)
            d->rate = before + 1.0;
        if (d->rate >= d->rate_target) {
            log_info("event=destination_recovered key=%s provider=%s", d->key, d->p->name);
            d->rate = d->p->rate_per_minute;
            d->slowed = 0;
            d->level = 0;
            d->reason[0] = '\0';
            d->tokens = d->tokens > capacity(d->rate) ? capacity(d->rate) : d->tokens;
        } else {
            log_info("event=destination_recovering key=%s provider=%s rate_per_minute=%.1f", d->key,
                     d->p->name, d->rate);
        }
    }
    d->ok_since_step = 0;
    d->recover_at += steps * s->lim.recover_interval_ms;
}

uint64_t shape_wait(dest_t *d, uint64_t now)
{
    refresh(d->owner, d, now);
    if (d->paused_until > now)
        return d->paused_until - now;
    if (d->inflight >= d->p->connections)
        return SHAPE_WAIT_SLOT;
    if (d->rate > 0 && d->tokens < 1.0) {
        /* a hair below a whole millisecond is float noise, not another millisecond */
        double ms = ceil((1.0 - d->tokens) * 60000.0 / d->rate - 1e-6);
        return ms < 1 ? 1 : (uint64_t)ms;
    }
    return 0;
}

void shape_started(dest_t *d, uint64_t now)
{
    refresh(d->owner, d, now);
    if (d->rate > 0)
        d->tokens -= 1.0;
    d->inflight++;
    d->last_used = now;
    if (now >= d->win_start + 60000) {
        d->prev_count = now < d->win_start + 120000 ? d->win_count : 0;
        d->win_start = now;
        d->win_count = 0;
    }
    d->win_count++;
}

void shape_finished(dest_t *d, int ok, uint64_t now)
{
    if (d->inflight > 0)
        d->inflight--;
    if (ok)
        d->ok_since_step++;
    d->last_used = now;
}

int shape_slowdown(shape_t *s, dest_t *d, const PB(Status) * reply, uint64_t now)
{
    refresh(s, d, now);
    if (d->paused_until > now)
        return 0;
    double base = d->rate;
    if (base <= 0) {
        /* no rate limit so far: halve what it actually took over the last minute */
        base = d->win_count > d->prev_count ? d->win_count : d->prev_count;
        if (base < 1)
            base = 1;
    }
    if (!d->slowed) {
        d->rate_target = d->p->rate_per_minute > 0 ? d->p->rate_per_minute : base;
        d->slowed = 1;
    }
    d->rate = base / 2 < 1 ? 1 : base / 2;
    if (d->tokens > capacity(d->rate))
        d->tokens = capacity(d->rate);
    d->level++;
    uint64_t pause = s->lim.pause_base_ms;
    for (unsigned i = 1; i < d->level && pause < s->lim.pause_max_ms; i++)
        pause *= 2;
    if (pause > s->lim.pause_max_ms)
        pause = s->lim.pause_max_ms;
    d->paused_until = now + pause;
    d->recover_at = d->paused_until + s->lim.recover_interval_ms;
    d->ok_since_step = 0;
    snprintf(d->reason, sizeof(d->reason), "%u %s %s", reply ? reply->code : 0,
             reply && reply->enhanced ? reply->enhanced : "",
             reply && reply->text ? reply->text : "");
    char q[SHAPE_REASON_MAX + 16];
    log_quote(q, sizeof(q), d->reason, strlen(d->reason));
    log_warn("event=destination_paused key=%s provider=%s pause_ms=%" PRIu64
             " rate_per_minute=%.1f level=%u reply=%s",
             d->key, d->p->name, pause, d->rate, d->level, q);
    return 1;
}

/* The accessors refresh nothing: shape_wait() and shape_each() do. */
const char *dest_key(const dest_t *d)
{
    return d->key;
}

const provider_t *dest_provider(const dest_t *d)
{
    return d->p;
}

uint64_t dest_paused_until(const dest_t *d)
{
    return d->paused_until;
}

double dest_rate(const dest_t *d)
{
    return d->rate;
}

uint32_t dest_inflight(const dest_t *d)
{
    return d->inflight;
}

typedef struct each_ctx {
    shape_t *s;
    uint64_t now;
    void (*fn)(const dest_view_t *v, void *arg);
    void *arg;
    size_t paused;
} each_ctx_t;

static int dest_visit(const char *key, void *value, void *arg)
{
    (void)key;
    each_ctx_t *c = arg;
    dest_t *d = value;
    refresh(c->s, d, c->now);
    if (d->paused_until > c->now)
        c->paused++;
    if (c->fn) {
        dest_view_t v = {
            .key = d->key,
            .provider = d->p->name,
            .source = d->source,
            .paused_until = d->paused_until > c->now ? d->paused_until : 0,
            .rate_per_minute = d->rate,
            .connection_limit = d->p->connections,
            .inflight = d->inflight,
            .reason = d->reason,
        };
        c->fn(&v, c->arg);
    }
    return 0;
}

void shape_each(shape_t *s, uint64_t now, void (*fn)(const dest_view_t *v, void *arg), void *arg)
{
    each_ctx_t c = {.s = s, .now = now, .fn = fn, .arg = arg};
    rmap_each(s->dests, dest_visit, &c);
}

size_t shape_paused_count(shape_t *s, uint64_t now)
{
    each_ctx_t c = {.s = s, .now = now};
    rmap_each(s->dests, dest_visit, &c);
    return c.paused;
}

void shape_sweep(shape_t *s, uint64_t now)
{
    oldest_t o = {.now = now};
    rmap_each(s->mx, mx_expired, &o);
    sweep_t sw = {.now = now, .idle_ms = 10 * 60000};
    rmap_each(s->dests, dest_sweep, &sw);
}
