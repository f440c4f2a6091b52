/*
 * router_route: parsing and matching of the route table. Everything a
 * route needs is checked here, at start, so a route that could never
 * deliver (no endpoint, credentials over plaintext) never loads.
 */
#include "router_route.h"
#include "core/alloc.h"
#include "core/conf.h"
#include "mail/address.h"
#include "net/sock.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct route_list {
    char **v;
    size_t n;
} route_list_t;

struct route {
    char *name;
    size_t index;
    route_kind_t kind;
    route_tls_t tls;
    char *auth_username;
    char *auth_password;
    char *helo;
    char *source_pool;
    int allow_private;
    int shaping;
    route_list_t rcpt_domains;   /* empty: any */
    route_list_t sender_domains; /* empty: any */
    route_list_t tenants;        /* empty: any */
    route_list_t streams;        /* empty: any */
    PB(DeliveryRoute) pb;
    PB(DeliveryEndpoint) * endpoints;
    PB(DeliveryEndpoint) * *endpoint_ptrs;
};

struct route_table {
    route_t *v;
    size_t n;
};

static const char *const kind_names[] = {"smarthost", "mx"};
static const char *const tls_names[] = {"none", "opportunistic", "required"};

/* ---- small helpers ---- */

static void list_free(route_list_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static void route_free(route_t *r)
{
    free(r->name);
    free(r->auth_username);
    free(r->auth_password);
    free(r->helo);
    free(r->source_pool);
    list_free(&r->rcpt_domains);
    list_free(&r->sender_domains);
    list_free(&r->tenants);
    list_free(&r->streams);
    for (size_t i = 0; i < r->pb.n_endpoints; i++) {
        free(r->endpoints[i].host);
        free(r->endpoints[i].name);
    }
    free(r->endpoints);
    free(r->endpoint_ptrs);
    memset(r, 0, sizeof(*r));
}

void route_table_destroy(route_table_t **p)
{
    route_table_t *t = *p;
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n; i++)
        route_free(&t->v[i]);
    free(t->v);
    free(t);
    *p = NULL;
}

void route_table_release(void *field)
{
    route_table_destroy((route_table_t **)field);
}

size_t route_table_count(const route_table_t *t)
{
    return t ? t->n : 0;
}

const route_t *route_table_get(const route_table_t *t, size_t i)
{
    return t && i < t->n ? &t->v[i] : NULL;
}

const char *route_name(const route_t *r)
{
    return r->name;
}

size_t route_index(const route_t *r)
{
    return r->index;
}

route_kind_t route_kind(const route_t *r)
{
    return r->kind;
}

const char *route_source_pool(const route_t *r)
{
    return r->source_pool ? r->source_pool : "";
}

int route_shaping(const route_t *r)
{
    return r->shaping;
}

route_tls_t route_tls(const route_t *r)
{
    return r->tls;
}

size_t route_endpoint_count(const route_t *r)
{
    return r->pb.n_endpoints;
}

const char *route_endpoint_text(const route_t *r, size_t i, char *buf, size_t size)
{
    if (i >= r->pb.n_endpoints) {
        snprintf(buf, size, "?");
        return buf;
    }
    const PB(DeliveryEndpoint) *e = &r->endpoints[i];
    if (strchr(e->host, ':'))
        snprintf(buf, size, "[%s]:%u", e->host, e->port);
    else
        snprintf(buf, size, "%s:%u", e->host, e->port);
    return buf;
}

const char *route_endpoint_name(const route_t *r, size_t i)
{
    return i < r->pb.n_endpoints ? r->endpoints[i].name : NULL;
}

const char *route_endpoint_host(const route_t *r, size_t i)
{
    return i < r->pb.n_endpoints ? r->endpoints[i].host : NULL;
}

int route_endpoint_implicit_tls(const route_t *r, size_t i)
{
    return i < r->pb.n_endpoints && r->endpoints[i].implicit_tls;
}

int route_endpoint_find(const route_t *r, const char *name)
{
    for (size_t i = 0; name && i < r->pb.n_endpoints; i++)
        if (strcasecmp(r->endpoints[i].name, name) == 0)
            return (int)i;
    return -1;
}

PB(DeliveryRoute) * route_pb(const route_t *r)
{
    return (PB(DeliveryRoute) *)&r->pb;
}

/* ---- host:port ---- */

int route_parse_hostport(const char *text, char *host, size_t hostlen, unsigned *port, char *why,
                         size_t whylen)
{
    const char *colon;
    size_t hl;
    const char *h;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':') {
            snprintf(why, whylen, "\"%s\" is not [IPv6]:port", text);
            return -1;
        }
        h = text + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (colon == NULL || colon == text) {
            snprintf(why, whylen, "\"%s\" is not host:port", text);
            return -1;
        }
        if (memchr(text, ':', (size_t)(colon - text))) {
            snprintf(why, whylen, "\"%s\": write an IPv6 address as [addr]:port", text);
            return -1;
        }
        h = text;
        hl = (size_t)(colon - text);
    }
    if (hl == 0 || hl >= hostlen) {
        snprintf(why, whylen, "\"%s\" has an empty or too long host", text);
        return -1;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    const char *p = colon + 1;
    if (!isdigit((unsigned char)*p) || strlen(p) > 5) {
        snprintf(why, whylen, "\"%s\" has no valid port", text);
        return -1;
    }
    char *end;
    unsigned long v = strtoul(p, &end, 10);
    if (*end || v == 0 || v > 65535) {
        snprintf(why, whylen, "\"%s\": port must be 1..65535", text);
        return -1;
    }
    *port = (unsigned)v;
    sock_addr_t a;
    int numeric = sock_addr_parse(host, *port, &a) == 0;
    if (text[0] == '[' && !(numeric && strchr(host, ':'))) {
        snprintf(why, whylen, "\"%s\": only an IPv6 address goes in brackets", text);
        return -1;
    }
    if (!numeric && !address_domain_valid(host, 0)) {
        snprintf(why, whylen, "\"%s\": \"%s\" is neither an IP address nor a host name", text,
                 host);
        return -1;
    }
    return 0;
}

/* ---- parsing ---- */

typedef struct parse_ctx {
    char *err;
    size_t errlen;
    int index; /* route number, from 1 */
} parse_ctx_t;

static int perr(parse_ctx_t *cx, const config_setting_t *s, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* "routes[N].key: reason (at file:line)" */
static int perr(parse_ctx_t *cx, const config_setting_t *s, const char *key, const char *fmt, ...)
{
    char reason[512], where[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    conf_where(s, where, sizeof(where));
    /* text read from a string has no file name: the line alone then */
    int nofile = strncmp(where, "?:", 2) == 0;
    snprintf(cx->err, cx->errlen, "routes[%d]%s%s: %s (at %s%s)", cx->index, key ? "." : "",
             key ? key : "", reason, nofile ? "line " : "", nofile ? where + 2 : where);
    return -1;
}

static int get_string(parse_ctx_t *cx, const config_setting_t *group, const char *key, char **out)
{
    const config_setting_t *s = config_setting_get_member(group, key);
    if (s == NULL)
        return 0;
    if (config_setting_type(s) != CONFIG_TYPE_STRING)
        return perr(cx, s, key, "expected a string");
    free(*out);
    *out = xstrdup(config_setting_get_string(s));
    return 1;
}

/* A string or a list of strings, lowercased: domains and tenants compare without case. */
static int get_list(parse_ctx_t *cx, const config_setting_t *group, const char *key,
                    const char *label, route_list_t *out, int domains)
{
    const config_setting_t *s = config_setting_get_member(group, key);
    if (s == NULL)
        return 0;
    int t = config_setting_type(s);
    int n = t == CONFIG_TYPE_STRING ? 1 : config_setting_length(s);
    if (t != CONFIG_TYPE_STRING && t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST)
        return perr(cx, s, label, "expected a string or a list of strings");
    for (int i = 0; i < n; i++) {
        const char *v = t == CONFIG_TYPE_STRING ? config_setting_get_string(s)
                                                : config_setting_get_string_elem(s, i);
        if (v == NULL || *v == '\0')
            return perr(cx, s, label, "element %d is not a non-empty string", i + 1);
        if (domains) {
            const char *d = strncmp(v, "*.", 2) == 0 ? v + 2 : v;
            if (!address_domain_valid(d, 1))
                return perr(cx, s, label, "\"%s\" is not a domain (or *.domain)", v);
        }
        char *copy = xstrdup(v);
        for (char *p = copy; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        out->v = xrealloc(out->v, (out->n + 1) * sizeof(*out->v));
        out->v[out->n++] = copy;
    }
    return 0;
}

static int known_key(const char *name, const char *const keys[])
{
    for (size_t i = 0; keys[i]; i++)
        if (strcmp(name, keys[i]) == 0)
            return 1;
    return 0;
}

static int check_keys(parse_ctx_t *cx, const config_setting_t *group, const char *prefix,
                      const char *const keys[])
{
    for (int i = 0; i < config_setting_length(group); i++) {
        const config_setting_t *s = config_setting_get_elem(group, i);
        const char *name = config_setting_name(s);
        if (name && !known_key(name, keys)) {
            char key[128];
            snprintf(key, sizeof(key), "%s%s", prefix, name);
            return perr(cx, s, key, "unknown setting");
        }
    }
    return 0;
}

static int parse_enum(parse_ctx_t *cx, const config_setting_t *group, const char *key,
                      const char *const names[], size_t n, int *out)
{
    char *v = NULL;
    int rc = get_string(cx, group, key, &v);
    if (rc <= 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v, names[i]) == 0) {
            *out = (int)i;
            free(v);
            return 0;
        }
    }
    char allowed[128] = "";
    for (size_t i = 0; i < n; i++)
        snprintf(allowed + strlen(allowed), sizeof(allowed) - strlen(allowed), "%s\"%s\"",
                 i ? (i + 1 == n ? " or " : ", ") : "", names[i]);
    perr(cx, config_setting_get_member(group, key), key, "\"%s\" is not %s", v, allowed);
    free(v);
    return -1;
}

int route_parse_endpoint(const char *text, char *host, size_t hostlen, unsigned *port,
                         int *implicit_tls, char *why, size_t whylen)
{
    const char *sep = strstr(text, "://");
    *implicit_tls = 0;
    if (sep != NULL) {
        size_t n = (size_t)(sep - text);
        if (n == 5 && strncasecmp(text, "smtps", 5) == 0) {
            *implicit_tls = 1;
        } else if (!(n == 4 && strncasecmp(text, "smtp", 4) == 0)) {
            snprintf(why, whylen,
                     "\"%s\": unknown scheme \"%.*s\" (smtps://host:port for TLS from the first "
                     "byte, smtp://host:port or host:port for STARTTLS or plaintext)",
                     text, (int)(n < 32 ? n : 32), text);
            return -1;
        }
        text = sep + 3;
    }
    return route_parse_hostport(text, host, hostlen, port, why, whylen);
}

static int parse_endpoints(parse_ctx_t *cx, const config_setting_t *group, route_t *r)
{
    const config_setting_t *s = config_setting_get_member(group, "endpoints");
    if (s == NULL) {
        if (r->kind == ROUTE_SMARTHOST)
            return perr(cx, group, "endpoints", "a smarthost route needs at least one endpoint");
        return 0;
    }
    int t = config_setting_type(s);
    if (t != CONFIG_TYPE_STRING && t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST)
        return perr(cx, s, "endpoints",
                    "expected a list of \"host:port\" or \"smtps://host:port\" strings");
    int n = t == CONFIG_TYPE_STRING ? 1 : config_setting_length(s);
    if (n == 0 && r->kind == ROUTE_SMARTHOST)
        return perr(cx, s, "endpoints", "a smarthost route needs at least one endpoint");
    if (n > ROUTE_ENDPOINT_MAX)
        return perr(cx, s, "endpoints", "%d endpoints, at most %d", n, ROUTE_ENDPOINT_MAX);
    r->endpoints = xcalloc((size_t)(n ? n : 1), sizeof(*r->endpoints));
    r->endpoint_ptrs = xcalloc((size_t)(n ? n : 1), sizeof(*r->endpoint_ptrs));
    for (int i = 0; i < n; i++) {
        const char *v = t == CONFIG_TYPE_STRING ? config_setting_get_string(s)
                                                : config_setting_get_string_elem(s, i);
        if (v == NULL)
            return perr(cx, s, "endpoints", "element %d is not a string", i + 1);
        char host[ADDR_DOMAIN_MAX + 1], why[400];
        unsigned port;
        int implicit_tls;
        if (route_parse_endpoint(v, host, sizeof(host), &port, &implicit_tls, why, sizeof(why)) < 0)
            return perr(cx, s, "endpoints", "%s", why);
        PB(DeliveryEndpoint) init = PB_INIT(DELIVERY_ENDPOINT);
        r->endpoints[i] = init;
        r->endpoints[i].host = xstrdup(host);
        r->endpoints[i].port = port;
        r->endpoints[i].implicit_tls = implicit_tls;
        r->endpoint_ptrs[i] = &r->endpoints[i];
        r->pb.n_endpoints = (size_t)i + 1;
        char name[ROUTE_EP_NAME_MAX];
        r->endpoints[i].name = xstrdup(route_endpoint_text(r, (size_t)i, name, sizeof(name)));
        for (int j = 0; j < i; j++)
            if (strcasecmp(r->endpoints[j].name, r->endpoints[i].name) == 0)
                return perr(cx, s, "endpoints", "\"%s\" is listed twice", v);
    }
    return 0;
}

static int parse_match(parse_ctx_t *cx, const config_setting_t *group, route_t *r)
{
    static const char *const keys[] = {"recipient_domains", "sender_domains", "tenants", "streams",
                                       NULL};
    const config_setting_t *m = config_setting_get_member(group, "match");
    if (m == NULL)
        return 0;
    if (config_setting_type(m) != CONFIG_TYPE_GROUP)
        return perr(cx, m, "match", "expected a group { ... }");
    if (check_keys(cx, m, "match.", keys) < 0 ||
        get_list(cx, m, "recipient_domains", "match.recipient_domains", &r->rcpt_domains, 1) < 0 ||
        get_list(cx, m, "sender_domains", "match.sender_domains", &r->sender_domains, 1) < 0 ||
        get_list(cx, m, "tenants", "match.tenants", &r->tenants, 0) < 0 ||
        get_list(cx, m, "streams", "match.streams", &r->streams, 0) < 0)
        return -1;
    return 0;
}

/* A boolean setting; 0 when absent (out keeps its default), -1 on a wrong type. */
static int get_bool(parse_ctx_t *cx, const config_setting_t *group, const char *key, int *out)
{
    const config_setting_t *s = config_setting_get_member(group, key);
    if (s == NULL)
        return 0;
    if (config_setting_type(s) != CONFIG_TYPE_BOOL)
        return perr(cx, s, key, "expected true or false");
    *out = config_setting_get_bool(s);
    return 0;
}

static int parse_route(parse_ctx_t *cx, const config_setting_t *g, route_t *r)
{
    static const char *const keys[] = {"name",          "kind",          "endpoints", "tls",
                                       "auth_username", "auth_password", "helo",      "match",
                                       "allow_private", "source_pool",   "shaping",   NULL};
    PB(DeliveryRoute) init = PB_INIT(DELIVERY_ROUTE);
    r->pb = init;
    r->tls = ROUTE_TLS_OPPORTUNISTIC;
    r->shaping = 1;
    if (config_setting_type(g) != CONFIG_TYPE_GROUP)
        return perr(cx, g, NULL, "expected a group { name = ...; ... }");
    if (check_keys(cx, g, "", keys) < 0)
        return -1;
    if (get_string(cx, g, "name", &r->name) < 0)
        return -1;
    if (r->name == NULL || r->name[0] == '\0')
        return perr(cx, g, "name", "every route needs a name");
    if (strlen(r->name) > ROUTE_NAME_MAX)
        return perr(cx, g, "name", "longer than %d characters", ROUTE_NAME_MAX);
    int kind = ROUTE_SMARTHOST, tls = ROUTE_TLS_OPPORTUNISTIC;
    if (parse_enum(cx, g, "kind", kind_names, 2, &kind) < 0 ||
        parse_enum(cx, g, "tls", tls_names, 3, &tls) < 0)
        return -1;
    r->kind = (route_kind_t)kind;
    r->tls = (route_tls_t)tls;
    if (get_string(cx, g, "auth_username", &r->auth_username) < 0 ||
        get_string(cx, g, "auth_password", &r->auth_password) < 0 ||
        get_string(cx, g, "helo", &r->helo) < 0)
        return -1;
    int has_user = r->auth_username && *r->auth_username;
    int has_pass = r->auth_password && *r->auth_password;
    if (has_user != has_pass)
        return perr(cx, g, has_user ? "auth_password" : "auth_username",
                    "auth_username and auth_password go together");
    if (has_user && r->tls == ROUTE_TLS_NONE)
        return perr(cx, config_setting_get_member(g, "tls"), "tls",
                    "\"none\" with auth credentials: credentials never cross plaintext");
    if (r->helo && *r->helo && !address_domain_valid(r->helo, 0))
        return perr(cx, config_setting_get_member(g, "helo"), "helo", "\"%s\" is not a host name",
                    r->helo);
    if (get_bool(cx, g, "allow_private", &r->allow_private) < 0 ||
        get_bool(cx, g, "shaping", &r->shaping) < 0 ||
        get_string(cx, g, "source_pool", &r->source_pool) < 0)
        return -1;
    if (r->source_pool && strlen(r->source_pool) > ROUTE_NAME_MAX)
        return perr(cx, config_setting_get_member(g, "source_pool"), "source_pool",
                    "longer than %d characters", ROUTE_NAME_MAX);
    if (parse_endpoints(cx, g, r) < 0 || parse_match(cx, g, r) < 0)
        return -1;
    for (size_t i = 0; r->tls == ROUTE_TLS_NONE && i < r->pb.n_endpoints; i++)
        if (r->endpoints[i].implicit_tls)
            return perr(cx, config_setting_get_member(g, "tls"), "tls",
                        "\"none\" with the smtps:// endpoint %s: an implicit-TLS endpoint "
                        "always encrypts (use \"opportunistic\" or \"required\")",
                        r->endpoints[i].name);

    r->pb.name = r->name;
    r->pb.kind = r->kind == ROUTE_MX ? SENDARIX__V1__DELIVERY_ROUTE__KIND__MX
                                     : SENDARIX__V1__DELIVERY_ROUTE__KIND__SMARTHOST;
    r->pb.endpoints = r->endpoint_ptrs;
    r->pb.tls = (char *)tls_names[r->tls];
    r->pb.auth_username = r->auth_username ? r->auth_username : (char *)"";
    r->pb.auth_password = r->auth_password ? r->auth_password : (char *)"";
    r->pb.helo = r->helo ? r->helo : (char *)"";
    r->pb.allow_private = r->allow_private;
    r->pb.source_ip = (char *)"";
    r->pb.provider = (char *)"";
    r->pb.tls_reason = (char *)"route";
    return 0;
}

int route_table_parse(const config_setting_t *s, void *field, char *err, size_t errlen)
{
    route_table_t **out = field;
    *out = NULL;
    if (s == NULL) {
        snprintf(err, errlen, "at least one route is required");
        return -1;
    }
    if (config_setting_type(s) != CONFIG_TYPE_LIST) {
        snprintf(err, errlen, "expected a list of routes: ( { name = ...; }, ... )");
        return -1;
    }
    int n = config_setting_length(s);
    if (n == 0) {
        snprintf(err, errlen, "at least one route is required");
        return -1;
    }
    if (n > ROUTE_MAX) {
        snprintf(err, errlen, "%d routes, at most %d", n, ROUTE_MAX);
        return -1;
    }
    route_table_t *t = xcalloc(1, sizeof(*t));
    t->v = xcalloc((size_t)n, sizeof(*t->v));
    parse_ctx_t cx = {.err = err, .errlen = errlen};
    for (int i = 0; i < n; i++) {
        cx.index = i + 1;
        const config_setting_t *g = config_setting_get_elem(s, (unsigned)i);
        t->n = (size_t)i + 1;
        t->v[i].index = (size_t)i;
        if (parse_route(&cx, g, &t->v[i]) < 0)
            goto fail;
        for (int j = 0; j < i; j++) {
            if (strcmp(t->v[j].name, t->v[i].name) == 0) {
                perr(&cx, config_setting_get_member(g, "name"), "name",
                     "\"%s\" is already the name of routes[%d]", t->v[i].name, j + 1);
                goto fail;
            }
        }
    }
    *out = t;
    return 0;
fail:
    route_table_destroy(&t);
    return -1;
}

/* ---- matching ---- */

/* Exact, or "*.example.org" for any name below example.org. Both sides lowercase. */
static int domain_matches(const char *pattern, const char *domain)
{
    if (strncmp(pattern, "*.", 2) == 0) {
        size_t pl = strlen(pattern + 1), dl = strlen(domain);
        return dl > pl && strcasecmp(domain + dl - pl, pattern + 1) == 0;
    }
    return strcasecmp(pattern, domain) == 0;
}

static int list_matches(const route_list_t *l, const char *value, int domains)
{
    if (l->n == 0)
        return 1;
    if (value == NULL || *value == '\0')
        return 0;
    for (size_t i = 0; i < l->n; i++) {
        if (domains ? domain_matches(l->v[i], value) : strcasecmp(l->v[i], value) == 0)
            return 1;
    }
    return 0;
}

const route_t *route_match(const route_table_t *t, const char *rcpt_domain,
                           const char *sender_domain, const char *tenant, const char *stream)
{
    for (size_t i = 0; t && i < t->n; i++) {
        const route_t *r = &t->v[i];
        if (list_matches(&r->rcpt_domains, rcpt_domain, 1) &&
            list_matches(&r->sender_domains, sender_domain, 1) &&
            list_matches(&r->tenants, tenant, 0) && list_matches(&r->streams, stream, 0))
            return r;
    }
    return NULL;
}

const char *route_sender_domain(const char *mail_from)
{
    const char *at = mail_from ? strrchr(mail_from, '@') : NULL;
    return at ? at + 1 : "";
}
