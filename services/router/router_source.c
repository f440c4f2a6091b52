/*
 * router_source: pools, weighted picks, warm-up counts and
 * deprioritization. Counts are per address, provider and UTC day; only
 * today's are kept in memory.
 */
#include "router_source.h"
#include "core/alloc.h"
#include "core/conf.h"
#include "core/log.h"
#include "net/sock.h"
#include "router_map.h"
#include "router_shape.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct pool_table {
    source_pool_t v[SOURCE_POOL_MAX];
    size_t n;
};

typedef struct tenant_pool {
    char *tenant;
    char *pool;
} tenant_pool_t;

struct tenant_pools {
    tenant_pool_t *v;
    size_t n;
};

/* ---- parsing ---- */

static int perr(char *err, size_t errlen, const char *list, int index, const config_setting_t *s,
                const char *key, const char *fmt, ...) __attribute__((format(printf, 7, 8)));

/* "list[N].key: reason (at file:line)" */
static int perr(char *err, size_t errlen, const char *list, int index, const config_setting_t *s,
                const char *key, const char *fmt, ...)
{
    char reason[512], where[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    conf_where(s, where, sizeof(where));
    int nofile = strncmp(where, "?:", 2) == 0;
    snprintf(err, errlen, "%s[%d]%s%s: %s (at %s%s)", list, index, key ? "." : "", key ? key : "",
             reason, nofile ? "line " : "", nofile ? where + 2 : where);
    return -1;
}

static int check_keys(char *err, size_t errlen, const char *list, int index,
                      const config_setting_t *g, const char *prefix, const char *const keys[])
{
    for (int i = 0; i < config_setting_length(g); i++) {
        const config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(s);
        int known = 0;
        for (size_t k = 0; keys[k] && name && !known; k++)
            known = strcmp(name, keys[k]) == 0;
        if (!known) {
            char key[128];
            snprintf(key, sizeof(key), "%s%s", prefix, name ? name : "?");
            return perr(err, errlen, list, index, s, key, "unknown setting");
        }
    }
    return 0;
}

/* A name: 1..SOURCE_NAME_MAX of letters, digits, '-', '_', '.'. NULL when good, else why. */
static const char *name_problem(const char *v)
{
    if (v == NULL || *v == '\0')
        return "must not be empty";
    if (strlen(v) > SOURCE_NAME_MAX)
        return "is too long";
    for (const char *p = v; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
            return "may hold letters, digits, '-', '_' and '.' only";
    return NULL;
}

static const char *get_str(const config_setting_t *g, const char *key)
{
    const config_setting_t *s = config_setting_get_member(g, key);
    return s && config_setting_type(s) == CONFIG_TYPE_STRING ? config_setting_get_string(s) : NULL;
}

/* "YYYY-MM-DD" as a UTC day number; -1 when it is not one. */
static int64_t parse_day(const char *text)
{
    int y, m, d;
    char tail;
    if (text == NULL || sscanf(text, "%4d-%2d-%2d%c", &y, &m, &d, &tail) != 3 || y < 1970 ||
        m < 1 || m > 12 || d < 1 || d > 31)
        return -1;
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = m - 1;
    tm.tm_mday = d;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    struct tm back;
    gmtime_r(&t, &back);
    if (back.tm_mday != d) /* February 30th */
        return -1;
    return (int64_t)(t / 86400);
}

static int parse_address(char *err, size_t errlen, int index, const config_setting_t *g, int k,
                         source_addr_t *a)
{
    static const char *const keys[] = {"address", "weight", "warmup", "warmup_start", NULL};
    char prefix[48];
    snprintf(prefix, sizeof(prefix), "addresses[%d].", k + 1);
    if (config_setting_type(g) != CONFIG_TYPE_GROUP)
        return perr(err, errlen, "source_pools", index, g, "addresses",
                    "element %d: expected a group { address = ...; }", k + 1);
    if (check_keys(err, errlen, "source_pools", index, g, prefix, keys) < 0)
        return -1;
    char key[64];
    snprintf(key, sizeof(key), "%saddress", prefix);
    const char *ip = get_str(g, "address");
    sock_addr_t sa;
    if (ip == NULL || strlen(ip) >= SOURCE_IP_MAX || sock_addr_parse(ip, 25, &sa) < 0)
        return perr(
            err, errlen, "source_pools", index,
            config_setting_get_member(g, "address") ? config_setting_get_member(g, "address") : g,
            key, "needs a numeric IPv4 or IPv6 address");
    char norm[SOCK_ADDR_MAX];
    sx_strlcpy(a->ip, sock_addr_ip(&sa, norm, sizeof(norm)), sizeof(a->ip));
    a->weight = 10;
    a->warmup = 0;
    a->warmup_start = -1;
    const config_setting_t *s;
    if ((s = config_setting_get_member(g, "weight")) != NULL) {
        snprintf(key, sizeof(key), "%sweight", prefix);
        int t = config_setting_type(s);
        long long w =
            t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64 ? config_setting_get_int64(s) : -1;
        if (w < 0 || w > SOURCE_WEIGHT_MAX)
            return perr(err, errlen, "source_pools", index, s, key,
                        "expected a whole number within 0..%d", SOURCE_WEIGHT_MAX);
        a->weight = (uint32_t)w;
    }
    if ((s = config_setting_get_member(g, "warmup")) != NULL) {
        snprintf(key, sizeof(key), "%swarmup", prefix);
        if (config_setting_type(s) != CONFIG_TYPE_BOOL)
            return perr(err, errlen, "source_pools", index, s, key, "expected true or false");
        a->warmup = config_setting_get_bool(s);
    }
    if ((s = config_setting_get_member(g, "warmup_start")) != NULL) {
        snprintf(key, sizeof(key), "%swarmup_start", prefix);
        a->warmup_start = parse_day(
            config_setting_type(s) == CONFIG_TYPE_STRING ? config_setting_get_string(s) : NULL);
        if (a->warmup_start < 0)
            return perr(err, errlen, "source_pools", index, s, key,
                        "expected a date \"YYYY-MM-DD\"");
    }
    return 0;
}

static void pool_free(source_pool_t *p)
{
    free(p->addrs);
    memset(p, 0, sizeof(*p));
}

void pool_table_destroy(pool_table_t **p)
{
    pool_table_t *t = *p;
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n; i++)
        pool_free(&t->v[i]);
    free(t);
    *p = NULL;
}

void pool_table_release(void *field)
{
    pool_table_destroy((pool_table_t **)field);
}

int pool_table_parse(const config_setting_t *s, void *field, char *err, size_t errlen)
{
    static const char *const keys[] = {"name", "addresses", NULL};
    pool_table_t **out = field;
    *out = NULL;
    if (s == NULL)
        return 0;
    if (config_setting_type(s) != CONFIG_TYPE_LIST) {
        snprintf(err, errlen, "expected a list of pools: ( { name = ...; addresses = ( ... ); } )");
        return -1;
    }
    int n = config_setting_length(s);
    if (n > SOURCE_POOL_MAX) {
        snprintf(err, errlen, "%d pools, at most %d", n, SOURCE_POOL_MAX);
        return -1;
    }
    pool_table_t *t = xcalloc(1, sizeof(*t));
    for (int i = 0; i < n; i++) {
        const config_setting_t *g = config_setting_get_elem(s, (unsigned)i);
        int idx = i + 1;
        if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
            perr(err, errlen, "source_pools", idx, g, NULL, "expected a group { name = ...; }");
            goto fail;
        }
        if (check_keys(err, errlen, "source_pools", idx, g, "", keys) < 0)
            goto fail;
        const char *name = get_str(g, "name");
        const char *why = name_problem(name);
        const config_setting_t *ns = config_setting_get_member(g, "name");
        if (why) {
            perr(err, errlen, "source_pools", idx, ns ? ns : g, "name", "%s", why);
            goto fail;
        }
        if (pool_find(t, name)) {
            perr(err, errlen, "source_pools", idx, ns, "name", "\"%s\" is listed twice", name);
            goto fail;
        }
        source_pool_t *p = &t->v[t->n++];
        sx_strlcpy(p->name, name, sizeof(p->name));
        const config_setting_t *as = config_setting_get_member(g, "addresses");
        if (as == NULL || config_setting_type(as) != CONFIG_TYPE_LIST ||
            config_setting_length(as) == 0) {
            perr(err, errlen, "source_pools", idx, as ? as : g, "addresses",
                 "a pool needs a list of addresses: ( { address = \"192.0.2.1\"; }, ... )");
            goto fail;
        }
        int na = config_setting_length(as);
        if (na > SOURCE_ADDR_MAX) {
            perr(err, errlen, "source_pools", idx, as, "addresses", "%d addresses, at most %d", na,
                 SOURCE_ADDR_MAX);
            goto fail;
        }
        p->addrs = xcalloc((size_t)na, sizeof(*p->addrs));
        uint64_t total = 0;
        for (int k = 0; k < na; k++) {
            if (parse_address(err, errlen, idx, config_setting_get_elem(as, (unsigned)k), k,
                              &p->addrs[k]) < 0)
                goto fail;
            for (size_t j = 0; j < p->n; j++) {
                if (strcmp(p->addrs[j].ip, p->addrs[k].ip) == 0) {
                    perr(err, errlen, "source_pools", idx, as, "addresses", "%s is listed twice",
                         p->addrs[k].ip);
                    goto fail;
                }
            }
            total += p->addrs[k].weight;
            p->n++;
        }
        if (total == 0) {
            perr(err, errlen, "source_pools", idx, as, "addresses",
                 "every weight is 0: the pool could never be used");
            goto fail;
        }
    }
    *out = t;
    return 0;
fail:
    pool_table_destroy(&t);
    return -1;
}

void tenant_pools_destroy(tenant_pools_t **p)
{
    tenant_pools_t *t = *p;
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n; i++) {
        free(t->v[i].tenant);
        free(t->v[i].pool);
    }
    free(t->v);
    free(t);
    *p = NULL;
}

void tenant_pools_release(void *field)
{
    tenant_pools_destroy((tenant_pools_t **)field);
}

int tenant_pools_parse(const config_setting_t *s, void *field, char *err, size_t errlen)
{
    static const char *const keys[] = {"tenant", "pool", NULL};
    tenant_pools_t **out = field;
    *out = NULL;
    if (s == NULL)
        return 0;
    if (config_setting_type(s) != CONFIG_TYPE_LIST) {
        snprintf(err, errlen, "expected a list: ( { tenant = ...; pool = ...; }, ... )");
        return -1;
    }
    int n = config_setting_length(s);
    if (n > SOURCE_TENANTS_MAX) {
        snprintf(err, errlen, "%d entries, at most %d", n, SOURCE_TENANTS_MAX);
        return -1;
    }
    tenant_pools_t *t = xcalloc(1, sizeof(*t));
    t->v = xcalloc((size_t)(n ? n : 1), sizeof(*t->v));
    for (int i = 0; i < n; i++) {
        const config_setting_t *g = config_setting_get_elem(s, (unsigned)i);
        if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
            perr(err, errlen, "tenant_pools", i + 1, g, NULL, "expected a group");
            goto fail;
        }
        if (check_keys(err, errlen, "tenant_pools", i + 1, g, "", keys) < 0)
            goto fail;
        const char *tenant = get_str(g, "tenant"), *pool = get_str(g, "pool");
        if (tenant == NULL || *tenant == '\0' || strlen(tenant) > 255) {
            const config_setting_t *ts = config_setting_get_member(g, "tenant");
            perr(err, errlen, "tenant_pools", i + 1, ts ? ts : g, "tenant",
                 "needs a tenant name of 1 to 255 characters");
            goto fail;
        }
        const char *why = name_problem(pool);
        if (why) {
            const config_setting_t *ps = config_setting_get_member(g, "pool");
            perr(err, errlen, "tenant_pools", i + 1, ps ? ps : g, "pool", "%s", why);
            goto fail;
        }
        for (size_t j = 0; j < t->n; j++) {
            if (strcasecmp(t->v[j].tenant, tenant) == 0) {
                perr(err, errlen, "tenant_pools", i + 1, config_setting_get_member(g, "tenant"),
                     "tenant", "\"%s\" is listed twice", tenant);
                goto fail;
            }
        }
        t->v[t->n].tenant = xstrdup(tenant);
        t->v[t->n].pool = xstrdup(pool);
        t->n++;
    }
    *out = t;
    return 0;
fail:
    tenant_pools_destroy(&t);
    return -1;
}

size_t pool_table_count(const pool_table_t *t)
{
    return t ? t->n : 0;
}

const source_pool_t *pool_table_get(const pool_table_t *t, size_t i)
{
    return t && i < t->n ? &t->v[i] : NULL;
}

const source_pool_t *pool_find(const pool_table_t *t, const char *name)
{
    for (size_t i = 0; t && name && i < t->n; i++)
        if (strcmp(t->v[i].name, name) == 0)
            return &t->v[i];
    return NULL;
}

size_t tenant_pools_count(const tenant_pools_t *t)
{
    return t ? t->n : 0;
}

void tenant_pools_get(const tenant_pools_t *t, size_t i, const char **tenant, const char **pool)
{
    *tenant = t->v[i].tenant;
    *pool = t->v[i].pool;
}

/* ---- state ---- */

typedef struct addr_state {
    int warmup;        /* marked warmup in some pool */
    int64_t start_day; /* -1: not known yet */
    int start_dirty;
} addr_state_t;

typedef struct count {
    uint32_t day;
    uint64_t count;
    int dirty;
} count_t;

typedef struct deprio {
    uint64_t until;
} deprio_t;

struct source {
    const pool_table_t *pools;
    const tenant_pools_t *tenants;
    source_limits_t lim;
    uint64_t rng;
    rmap_t *addrs;  /* ip -> addr_state_t */
    rmap_t *counts; /* "ip\nprovider" -> count_t */
    rmap_t *deprio; /* "ip\ndestination" -> deprio_t */
};

source_t *source_new(const pool_table_t *pools, const tenant_pools_t *tenants,
                     const source_limits_t *limits, uint64_t seed)
{
    source_t *s = xcalloc(1, sizeof(*s));
    s->pools = pools;
    s->tenants = tenants;
    s->lim = *limits;
    if (s->lim.deprioritize_divisor == 0)
        s->lim.deprioritize_divisor = 1;
    s->rng = seed ? seed : 0x9e3779b97f4a7c15ull;
    s->addrs = rmap_new();
    s->counts = rmap_new();
    s->deprio = rmap_new();
    for (size_t i = 0; i < pool_table_count(pools); i++) {
        const source_pool_t *p = pool_table_get(pools, i);
        for (size_t k = 0; k < p->n; k++) {
            addr_state_t *a = rmap_get(s->addrs, p->addrs[k].ip);
            if (a == NULL) {
                a = xcalloc(1, sizeof(*a));
                a->start_day = -1;
                rmap_put(s->addrs, p->addrs[k].ip, a);
            }
            if (p->addrs[k].warmup)
                a->warmup = 1;
            if (p->addrs[k].warmup_start >= 0 &&
                (a->start_day < 0 || p->addrs[k].warmup_start < a->start_day))
                a->start_day = p->addrs[k].warmup_start;
        }
    }
    return s;
}

void source_destroy(source_t **p)
{
    source_t *s = *p;
    if (s == NULL)
        return;
    rmap_destroy(&s->addrs, free);
    rmap_destroy(&s->counts, free);
    rmap_destroy(&s->deprio, free);
    free(s);
    *p = NULL;
}

const source_pool_t *source_pool_for(const source_t *s, const char *route_pool, const char *tenant)
{
    if (route_pool && *route_pool)
        return pool_find(s->pools, route_pool);
    for (size_t i = 0; tenant && *tenant && i < tenant_pools_count(s->tenants); i++)
        if (strcasecmp(s->tenants->v[i].tenant, tenant) == 0)
            return pool_find(s->pools, s->tenants->v[i].pool);
    return NULL;
}

static uint64_t rng_next(source_t *s)
{
    /* xorshift64* */
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return s->rng * 2685821657736338717ull;
}

static const char *pair_key(const char *ip, const char *provider, char *buf, size_t size)
{
    snprintf(buf, size, "%s\n%s", ip, provider ? provider : "");
    return buf;
}

uint64_t source_allowance(const source_t *s, const char *ip, uint64_t wall_ms)
{
    const addr_state_t *a = rmap_get(s->addrs, ip);
    if (a == NULL || !a->warmup)
        return 0;
    int64_t today = (int64_t)(wall_ms / SOURCE_DAY_MS);
    int64_t age = a->start_day < 0 || today < a->start_day ? 0 : today - a->start_day;
    uint64_t allowance = s->lim.warmup_first_day ? s->lim.warmup_first_day : 1;
    for (int64_t i = 0; i < age && allowance < s->lim.warmup_ready; i++)
        allowance *= 2;
    return allowance >= s->lim.warmup_ready ? 0 : allowance;
}

uint64_t source_sent_today(const source_t *s, const char *ip, const char *provider,
                           uint64_t wall_ms)
{
    char k[SOURCE_IP_MAX + PROVIDER_NAME_MAX + 4];
    const count_t *c = rmap_get(s->counts, pair_key(ip, provider, k, sizeof(k)));
    return c && c->day == (uint32_t)(wall_ms / SOURCE_DAY_MS) ? c->count : 0;
}

int source_deprioritized(source_t *s, const char *ip, const char *dkey, uint64_t now)
{
    char k[SOURCE_IP_MAX + SHAPE_KEY_MAX + 4];
    pair_key(ip, dkey, k, sizeof(k));
    deprio_t *d = rmap_get(s->deprio, k);
    if (d == NULL)
        return 0;
    if (now >= d->until) {
        log_info("event=source_restored address=%s destination=%s", ip, dkey);
        free(rmap_del(s->deprio, k));
        return 0;
    }
    return 1;
}

static uint32_t weight_now(source_t *s, const source_addr_t *a, const char *provider, uint64_t now)
{
    if (a->weight == 0)
        return 0;
    if (!source_deprioritized(s, a->ip, provider, now))
        return a->weight;
    uint32_t w = a->weight / s->lim.deprioritize_divisor;
    return w ? w : 1;
}

void source_pick(source_t *s, const source_pool_t *pool, const char *provider, const char *dkey,
                 int failover, uint64_t now, uint64_t wall_ms, source_room_fn room, void *arg,
                 source_pick_t *out)
{
    int drawn = -1;
    source_pick_kept(s, pool, provider, dkey, failover, now, wall_ms, room, arg, &drawn, out);
}

void source_pick_kept(source_t *s, const source_pool_t *pool, const char *provider,
                      const char *dkey, int failover, uint64_t now, uint64_t wall_ms,
                      source_room_fn room, void *arg, int *kept, source_pick_t *out)
{
    memset(out, 0, sizeof(*out));
    size_t n = pool->n;
    int warming[SOURCE_ADDR_MAX];
    int any_warm = 0, any_deprio = 0;
    for (size_t i = 0; i < n; i++) {
        warming[i] = source_allowance(s, pool->addrs[i].ip, wall_ms) > 0;
        any_warm |= !warming[i] && pool->addrs[i].weight > 0;
        any_deprio |= source_deprioritized(s, pool->addrs[i].ip, dkey, now);
    }
    /* cold addresses take no failover traffic, unless there is nothing warm to fail over to */
    int warm_only = (failover || any_deprio) && any_warm;
    uint32_t weights[SOURCE_ADDR_MAX];
    uint64_t rooms[SOURCE_ADDR_MAX];
    int deprio[SOURCE_ADDR_MAX];
    uint64_t total = 0;
    int spent = 0;
    for (size_t i = 0; i < n; i++) {
        const source_addr_t *a = &pool->addrs[i];
        weights[i] = 0;
        if (warming[i] && warm_only)
            continue;
        if (warming[i] &&
            source_sent_today(s, a->ip, provider, wall_ms) >= source_allowance(s, a->ip, wall_ms)) {
            spent = 1;
            continue;
        }
        weights[i] = weight_now(s, a, dkey, now);
        deprio[i] = source_deprioritized(s, a->ip, dkey, now);
        rooms[i] = weights[i] && room ? room(a->ip, arg) : 0;
        total += weights[i];
    }
    if (total == 0) {
        out->status = SOURCE_NONE;
        if (spent) {
            out->wait_ms = SOURCE_DAY_MS - wall_ms % SOURCE_DAY_MS;
            out->why = "every address of the pool has spent its warm-up allowance for today";
        } else {
            out->wait_ms = 60000;
            out->why = "no address of the pool may take this task";
        }
        return;
    }
    /* one draw by weight among every eligible address, whether it has room or not, so a
     * deprioritized address keeps its small share and never takes the overflow of others */
    size_t drawn = 0;
    if (*kept >= 0 && (size_t)*kept < n && weights[*kept]) {
        /* a job that waited keeps its first draw: drawing again at each try
         * would hand a deprioritized address more than its share */
        drawn = (size_t)*kept;
    } else {
        uint64_t x = rng_next(s) % total;
        for (size_t i = 0; i < n; i++) {
            if (x < weights[i]) {
                drawn = i;
                break;
            }
            x -= weights[i];
        }
        *kept = (int)drawn;
    }
    uint64_t x;
    out->why = "no address of the pool has room for this destination now";
    if (deprio[drawn]) {
        if (rooms[drawn] == 0) {
            out->status = SOURCE_PICKED;
            out->ip = pool->addrs[drawn].ip;
        } else {
            out->status = SOURCE_WAIT;
            out->wait_ms = rooms[drawn];
        }
        return;
    }
    /* a healthy address: it, or another healthy one with room, by weight */
    uint64_t healthy = 0, wait = UINT64_MAX;
    for (size_t i = 0; i < n; i++) {
        if (weights[i] == 0 || deprio[i])
            continue;
        if (rooms[i] == 0)
            healthy += weights[i];
        else if (rooms[i] < wait)
            wait = rooms[i];
    }
    if (healthy == 0) {
        out->status = SOURCE_WAIT;
        out->wait_ms = wait;
        return;
    }
    x = rooms[drawn] == 0 ? UINT64_MAX : rng_next(s) % healthy;
    for (size_t i = 0; i < n; i++) {
        if (weights[i] == 0 || deprio[i] || rooms[i] != 0)
            continue;
        if (x == UINT64_MAX ? i == drawn : x < weights[i]) {
            out->status = SOURCE_PICKED;
            out->ip = pool->addrs[i].ip;
            return;
        }
        if (x != UINT64_MAX)
            x -= weights[i];
    }
    out->status = SOURCE_WAIT; /* not reached: healthy > 0 */
    out->wait_ms = wait;
}

void source_sent(source_t *s, const char *ip, const char *provider, uint64_t wall_ms)
{
    addr_state_t *a = rmap_get(s->addrs, ip);
    if (a == NULL || !a->warmup)
        return; /* only warming addresses are counted */
    char k[SOURCE_IP_MAX + PROVIDER_NAME_MAX + 4];
    pair_key(ip, provider, k, sizeof(k));
    uint32_t today = (uint32_t)(wall_ms / SOURCE_DAY_MS);
    count_t *c = rmap_get(s->counts, k);
    if (c == NULL) {
        c = xcalloc(1, sizeof(*c));
        rmap_put(s->counts, k, c);
    }
    if (c->day != today) {
        c->day = today;
        c->count = 0;
    }
    c->count++;
    c->dirty = 1;
}

int source_reply_is_block(const PB(Status) * st, const char *reason)
{
    if (reason && strcmp(reason, "policy") != 0 && strcmp(reason, "rate") != 0 && *reason)
        return 0;
    if (st == NULL || st->code / 100 != 5 || st->enhanced == NULL ||
        strncmp(st->enhanced, "5.7.", 4) != 0)
        return 0;
    static const char *const words[] = {"block",    "listed",   "reputation", "blacklist",
                                        "denylist", "spamhaus", NULL};
    for (size_t i = 0; words[i]; i++)
        if (st->text && strcasestr(st->text, words[i]))
            return 1;
    return 0;
}

int source_reply(source_t *s, const char *ip, const char *dkey, const PB(Status) * reply,
                 const char *reason, uint64_t now)
{
    if (ip == NULL || *ip == '\0' || rmap_get(s->addrs, ip) == NULL)
        return 0;
    int block = source_reply_is_block(reply, reason);
    if (!block && !shape_reply_is_slowdown(reply, reason))
        return 0;
    char k[SOURCE_IP_MAX + SHAPE_KEY_MAX + 4];
    pair_key(ip, dkey, k, sizeof(k));
    deprio_t *d = rmap_get(s->deprio, k);
    int began = d == NULL || now >= d->until;
    if (d == NULL) {
        d = xcalloc(1, sizeof(*d));
        rmap_put(s->deprio, k, d);
    }
    d->until = now + s->lim.deprioritize_ms;
    if (began) {
        char q[300];
        const char *text = reply && reply->text ? reply->text : "";
        log_quote(q, sizeof(q), text, strlen(text));
        log_warn("event=source_deprioritized address=%s destination=%s for_ms=%" PRIu64
                 " why=%s code=%u reply=%s",
                 ip, dkey, s->lim.deprioritize_ms, block ? "block" : "rate",
                 reply ? reply->code : 0, q);
    }
    return began;
}

/* ---- listing ---- */

typedef struct list_ctx {
    source_t *s;
    const source_pool_t *pool;
    const source_addr_t *addr;
    uint64_t now, wall;
    uint32_t today;
    uint64_t total;
    void (*fn)(const source_view_t *v, void *arg);
    void *arg;
} list_ctx_t;

static int visit_count(const char *key, void *value, void *arg)
{
    list_ctx_t *c = arg;
    count_t *n = value;
    size_t iplen = strlen(c->addr->ip);
    if (strncmp(key, c->addr->ip, iplen) != 0 || key[iplen] != '\n')
        return 0;
    const char *provider = key + iplen + 1;
    uint64_t sent = n->day == c->today ? n->count : 0;
    c->total += sent;
    if (c->fn == NULL || sent == 0 || source_deprioritized(c->s, c->addr->ip, provider, c->now))
        return 0; /* deprioritized pairs are listed from the other table */
    uint64_t allowance = source_allowance(c->s, c->addr->ip, c->wall);
    source_view_t v = {c->pool->name, c->addr->ip, provider,       allowance ? "warming" : "ready",
                       sent,          allowance,   c->addr->weight};
    c->fn(&v, c->arg);
    return 0;
}

static int visit_deprio(const char *key, void *value, void *arg)
{
    list_ctx_t *c = arg;
    deprio_t *d = value;
    size_t iplen = strlen(c->addr->ip);
    if (strncmp(key, c->addr->ip, iplen) != 0 || key[iplen] != '\n' || c->now >= d->until)
        return 0;
    const char *provider = key + iplen + 1;
    source_view_t v = {c->pool->name,
                       c->addr->ip,
                       provider,
                       "deprioritized",
                       source_sent_today(c->s, c->addr->ip, provider, c->wall),
                       source_allowance(c->s, c->addr->ip, c->wall),
                       weight_now(c->s, c->addr, provider, c->now)};
    c->fn(&v, c->arg);
    return 0;
}

void source_each(source_t *s, uint64_t now, uint64_t wall_ms,
                 void (*fn)(const source_view_t *v, void *arg), void *arg)
{
    for (size_t i = 0; i < pool_table_count(s->pools); i++) {
        const source_pool_t *p = pool_table_get(s->pools, i);
        for (size_t k = 0; k < p->n; k++) {
            list_ctx_t c = {s,   p,       &p->addrs[k],
                            now, wall_ms, (uint32_t)(wall_ms / SOURCE_DAY_MS),
                            0,   NULL,    NULL};
            rmap_each(s->counts, visit_count, &c); /* the day's total first */
            uint64_t allowance = source_allowance(s, p->addrs[k].ip, wall_ms);
            source_view_t v = {
                p->name,   p->addrs[k].ip,    "", allowance ? "warming" : "ready", c.total,
                allowance, p->addrs[k].weight};
            fn(&v, arg);
            c.fn = fn;
            c.arg = arg;
            c.total = 0;
            rmap_each(s->counts, visit_count, &c);
            rmap_each(s->deprio, visit_deprio, &c);
        }
    }
}

/* ---- persistence ---- */

void source_restore_count(source_t *s, const char *ip, const char *provider, uint32_t day,
                          uint64_t count)
{
    if (rmap_get(s->addrs, ip) == NULL)
        return; /* an address no pool lists any more */
    char k[SOURCE_IP_MAX + PROVIDER_NAME_MAX + 4];
    pair_key(ip, provider, k, sizeof(k));
    count_t *c = rmap_get(s->counts, k);
    if (c == NULL) {
        c = xcalloc(1, sizeof(*c));
        rmap_put(s->counts, k, c);
    } else if (c->day > day) {
        return;
    }
    c->day = day;
    c->count = count;
    c->dirty = 0;
}

void source_restore_start(source_t *s, const char *ip, uint32_t day)
{
    addr_state_t *a = rmap_get(s->addrs, ip);
    if (a && (a->start_day < 0 || (int64_t)day < a->start_day)) {
        a->start_day = day;
        a->start_dirty = 0;
    }
}

typedef struct begin_ctx {
    int64_t today;
} begin_ctx_t;

static int begin_one(const char *key, void *value, void *arg)
{
    begin_ctx_t *b = arg;
    addr_state_t *a = value;
    if (a->warmup && a->start_day < 0) {
        a->start_day = b->today;
        a->start_dirty = 1;
        log_info("event=warmup_begins address=%s day=%" PRId64, key, b->today);
    }
    return 0;
}

void source_begin(source_t *s, uint64_t wall_ms)
{
    begin_ctx_t b = {(int64_t)(wall_ms / SOURCE_DAY_MS)};
    rmap_each(s->addrs, begin_one, &b);
}

typedef struct changes {
    source_count_fn count_fn;
    source_start_fn start_fn;
    void *arg;
    size_t n;
    int mark; /* mark everything dirty instead */
} changes_t;

static int take_count(const char *key, void *value, void *arg)
{
    changes_t *c = arg;
    count_t *n = value;
    if (c->mark) {
        n->dirty = 1;
        return 0;
    }
    if (!n->dirty)
        return 0;
    char ip[SOURCE_IP_MAX];
    const char *nl = strchr(key, '\n');
    size_t len = nl ? (size_t)(nl - key) : strlen(key);
    if (len >= sizeof(ip))
        return 0;
    memcpy(ip, key, len);
    ip[len] = '\0';
    c->count_fn(ip, nl ? nl + 1 : "", n->day, n->count, c->arg);
    n->dirty = 0;
    c->n++;
    return 0;
}

static int take_start(const char *key, void *value, void *arg)
{
    changes_t *c = arg;
    addr_state_t *a = value;
    if (c->mark) {
        a->start_dirty = a->start_day >= 0;
        return 0;
    }
    if (!a->start_dirty)
        return 0;
    c->start_fn(key, (uint32_t)a->start_day, c->arg);
    a->start_dirty = 0;
    c->n++;
    return 0;
}

size_t source_take_changes(source_t *s, source_count_fn count_fn, source_start_fn start_fn,
                           void *arg)
{
    changes_t c = {count_fn, start_fn, arg, 0, 0};
    rmap_each(s->counts, take_count, &c);
    rmap_each(s->addrs, take_start, &c);
    return c.n;
}

void source_mark_all_dirty(source_t *s)
{
    changes_t c = {NULL, NULL, NULL, 0, 1};
    rmap_each(s->counts, take_count, &c);
    rmap_each(s->addrs, take_start, &c);
}
