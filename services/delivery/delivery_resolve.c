/*
 * delivery_resolve: c-ares on the loop. c-ares tells us which sockets it
 * wants watched (sock_state_cb) and when it next needs a turn
 * (ares_timeout); we watch them with loop_fd_add and a loop timer and
 * hand events back with ares_process_fd. A query may run several c-ares
 * requests (AAAA and A); it is answered once all of them are back.
 */
#include "delivery_resolve.h"
#include "core/alloc.h"
#include "core/log.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ares.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RESOLVE_FDS_MAX 16

typedef enum { Q_LOOKUP = 0, Q_ADDRS, Q_MX, Q_TXT } query_kind_t;

struct resolver_query {
    resolver_t *r;
    query_kind_t kind;
    resolver_fn fn;
    resolver_mx_fn mx_fn;
    resolver_txt_fn txt_fn;
    void *arg;
    int cancelled;
    int answered;
    int outstanding; /* c-ares requests not back yet */
    unsigned port;
    dns_status_t st;
    dns_status_t st6, st4; /* Q_ADDRS: each family's answer */
    sock_addr_t addrs[RESOLVE_ADDRS_MAX];
    size_t n;
    sock_addr_t v4[RESOLVE_ADDRS_MAX];
    size_t n4;
    mx_host_t *mx;
    size_t nmx;
    char *txt[RESOLVE_TXT_MAX];
    size_t ntxt;
    char err[160];
    loop_timer_t deliver;
    struct resolver_query *prev, *next;
};

typedef struct resolver_fd {
    int fd;
    unsigned events;
} resolver_fd_t;

struct resolver {
    loop_t *loop;
    ares_channel ch;
    loop_timer_t timer;
    resolver_fd_t fds[RESOLVE_FDS_MAX];
    size_t nfds;
    resolver_query_t *queries;
    int destroying;
};

dns_status_t resolve_status(int s)
{
    switch (s) {
    case ARES_SUCCESS:
        return DNS_OK;
    case ARES_ENOTFOUND:
        return DNS_NXDOMAIN;
    case ARES_ENODATA:
        return DNS_NODATA;
    default:
        return DNS_TEMPFAIL;
    }
}

const char *dns_status_name(dns_status_t st)
{
    switch (st) {
    case DNS_OK:
        return "ok";
    case DNS_NXDOMAIN:
        return "nxdomain";
    case DNS_NODATA:
        return "nodata";
    default:
        return "tempfail";
    }
}

static void rearm(resolver_t *r)
{
    struct timeval tv;
    struct timeval *t = ares_timeout(r->ch, NULL, &tv);
    if (t == NULL) {
        loop_timer_stop(r->loop, &r->timer);
        return;
    }
    uint64_t ms = (uint64_t)t->tv_sec * 1000u + (uint64_t)(t->tv_usec + 999) / 1000u;
    loop_timer_start(r->loop, &r->timer, ms ? ms : 1);
}

static void on_timer(loop_t *loop, void *arg)
{
    resolver_t *r = arg;
    (void)loop;
    ares_process_fd(r->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    rearm(r);
}

static void on_fd(loop_t *loop, int fd, unsigned events, void *arg)
{
    resolver_t *r = arg;
    (void)loop;
    ares_process_fd(r->ch, (events & (LOOP_READ | LOOP_ERROR)) ? fd : ARES_SOCKET_BAD,
                    (events & LOOP_WRITE) ? fd : ARES_SOCKET_BAD);
    rearm(r);
}

static void sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    resolver_t *r = data;
    unsigned ev = (readable ? LOOP_READ : 0) | (writable ? LOOP_WRITE : 0);
    size_t i;
    for (i = 0; i < r->nfds; i++)
        if (r->fds[i].fd == fd)
            break;
    if (ev == 0) {
        if (i < r->nfds) {
            loop_fd_remove(r->loop, fd);
            r->fds[i] = r->fds[--r->nfds];
        }
        return;
    }
    if (i < r->nfds) {
        loop_fd_modify(r->loop, fd, ev);
        r->fds[i].events = ev;
        return;
    }
    if (r->nfds >= RESOLVE_FDS_MAX || loop_fd_add(r->loop, fd, ev, on_fd, r) < 0) {
        log_error("event=resolver_watch_failed fd=%d", (int)fd);
        return;
    }
    r->fds[r->nfds++] = (resolver_fd_t){.fd = fd, .events = ev};
}

resolver_t *resolver_new(loop_t *loop, const char *servers, char *err, size_t errlen)
{
    int rc = ares_library_init(ARES_LIB_INIT_ALL);
    if (rc != ARES_SUCCESS) {
        snprintf(err, errlen, "c-ares: %s", ares_strerror(rc));
        return NULL;
    }
    resolver_t *r = xcalloc(1, sizeof(*r));
    r->loop = loop;
    loop_timer_init(&r->timer, on_timer, r);
    struct ares_options opt;
    memset(&opt, 0, sizeof(opt));
    opt.sock_state_cb = sock_state;
    opt.sock_state_cb_data = r;
    opt.timeout = RESOLVE_TIMEOUT_MS;
    opt.tries = RESOLVE_TRIES;
    rc = ares_init_options(&r->ch, &opt,
                           ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
    if (rc != ARES_SUCCESS) {
        snprintf(err, errlen, "c-ares: %s", ares_strerror(rc));
        free(r);
        ares_library_cleanup();
        return NULL;
    }
    if (servers && *servers) {
        rc = ares_set_servers_ports_csv(r->ch, servers);
        if (rc != ARES_SUCCESS) {
            snprintf(err, errlen, "\"%s\" is not a list of ip[:port] servers: %s", servers,
                     ares_strerror(rc));
            ares_destroy(r->ch);
            free(r);
            ares_library_cleanup();
            return NULL;
        }
    }
    return r;
}

static void query_unlink(resolver_query_t *q)
{
    resolver_t *r = q->r;
    if (q->prev)
        q->prev->next = q->next;
    else
        r->queries = q->next;
    if (q->next)
        q->next->prev = q->prev;
    q->prev = q->next = NULL;
}

/* Free a query that is no longer in the resolver's list. */
static void query_release(resolver_query_t *q)
{
    loop_timer_stop(q->r->loop, &q->deliver);
    free(q->mx);
    for (size_t i = 0; i < q->ntxt; i++)
        free(q->txt[i]);
    free(q);
}

static void query_free(resolver_query_t *q)
{
    query_unlink(q);
    query_release(q);
}

void resolver_destroy(resolver_t **p)
{
    resolver_t *r = *p;
    if (r == NULL)
        return;
    r->destroying = 1;
    ares_destroy(r->ch); /* runs the callbacks of running requests, which free their queries */
    while (r->queries)
        query_free(r->queries);
    for (size_t i = 0; i < r->nfds; i++)
        loop_fd_remove(r->loop, r->fds[i].fd);
    loop_timer_stop(r->loop, &r->timer);
    free(r);
    ares_library_cleanup();
    *p = NULL;
}

/* The answer, from the loop; the handle is gone once the callback runs. */
static void deliver(loop_t *loop, void *arg)
{
    resolver_query_t *q = arg;
    (void)loop;
    query_unlink(q);
    switch (q->kind) {
    case Q_LOOKUP:
    case Q_ADDRS:
        if (q->fn)
            q->fn(q->st, q->addrs, q->n, q->err, q->arg);
        break;
    case Q_MX:
        if (q->mx_fn)
            q->mx_fn(q->st, q->mx, q->nmx, q->err, q->arg);
        break;
    case Q_TXT:
        if (q->txt_fn)
            q->txt_fn(q->st, (const char *const *)q->txt, q->ntxt, q->err, q->arg);
        break;
    }
    query_release(q);
}

/*
 * Every c-ares callback starts here: 1 when the query is still wanted and
 * this was its last request, so it can be answered; 0 when it is not (yet).
 */
static int request_back(resolver_query_t *q)
{
    q->outstanding--;
    if (q->cancelled || q->r->destroying) {
        if (q->outstanding == 0)
            query_free(q);
        return 0;
    }
    return 1;
}

static void answer(resolver_query_t *q)
{
    q->answered = 1;
    loop_timer_start(q->r->loop, &q->deliver, 0);
}

static void set_err(resolver_query_t *q, int status)
{
    sx_strlcpy(q->err, ares_strerror(status), sizeof(q->err));
}

static resolver_query_t *query_new(resolver_t *r, query_kind_t kind, void *arg)
{
    resolver_query_t *q = xcalloc(1, sizeof(*q));
    q->r = r;
    q->kind = kind;
    q->arg = arg;
    loop_timer_init(&q->deliver, deliver, q);
    q->next = r->queries;
    if (r->queries)
        r->queries->prev = q;
    r->queries = q;
    return q;
}

/* ---- host lookups (getaddrinfo) ---- */

static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    resolver_query_t *q = arg;
    (void)timeouts;
    if (!request_back(q)) {
        if (res)
            ares_freeaddrinfo(res);
        return;
    }
    q->st = resolve_status(status);
    if (status == ARES_SUCCESS && res) {
        for (struct ares_addrinfo_node *n = res->nodes; n && q->n < RESOLVE_ADDRS_MAX;
             n = n->ai_next) {
            if ((n->ai_family != AF_INET && n->ai_family != AF_INET6) ||
                n->ai_addrlen > sizeof(q->addrs[0].ss))
                continue;
            memcpy(&q->addrs[q->n].ss, n->ai_addr, n->ai_addrlen);
            q->addrs[q->n].len = n->ai_addrlen;
            q->n++;
        }
        if (q->n == 0) {
            q->st = DNS_NODATA;
            snprintf(q->err, sizeof(q->err), "no IPv4 or IPv6 address");
        }
    } else {
        if (q->st == DNS_OK)
            q->st = DNS_TEMPFAIL;
        set_err(q, status);
    }
    if (res)
        ares_freeaddrinfo(res);
    answer(q);
}

resolver_query_t *resolver_lookup(resolver_t *r, const char *host, unsigned port, resolver_fn fn,
                                  void *arg)
{
    resolver_query_t *q = query_new(r, Q_LOOKUP, arg);
    q->fn = fn;
    q->outstanding = 1;
    char service[8];
    snprintf(service, sizeof(service), "%u", port);
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = ARES_AI_NUMERICSERV;
    ares_getaddrinfo(r->ch, host, service, &hints, on_addrinfo, q);
    rearm(r);
    return q;
}

/* ---- DNS-only addresses: AAAA and A ---- */

static void addrs_finish(resolver_query_t *q)
{
    /* IPv6 first, then IPv4, each in the order the server gave */
    for (size_t i = 0; i < q->n4 && q->n < RESOLVE_ADDRS_MAX; i++)
        q->addrs[q->n++] = q->v4[i];
    if (q->n > 0)
        q->st = DNS_OK;
    else if (q->st6 == DNS_NXDOMAIN || q->st4 == DNS_NXDOMAIN)
        q->st = q->st6 == DNS_TEMPFAIL || q->st4 == DNS_TEMPFAIL ? DNS_TEMPFAIL : DNS_NXDOMAIN;
    else if (q->st6 == DNS_TEMPFAIL || q->st4 == DNS_TEMPFAIL)
        q->st = DNS_TEMPFAIL;
    else
        q->st = DNS_NODATA;
    if (q->st == DNS_NODATA && q->err[0] == '\0')
        snprintf(q->err, sizeof(q->err), "no IPv4 or IPv6 address");
    answer(q);
}

static void on_aaaa(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    resolver_query_t *q = arg;
    (void)timeouts;
    if (!request_back(q))
        return;
    if (status == ARES_SUCCESS) {
        struct ares_addr6ttl ttls[RESOLVE_ADDRS_MAX];
        int n = RESOLVE_ADDRS_MAX;
        status = ares_parse_aaaa_reply(abuf, alen, NULL, ttls, &n);
        for (int i = 0; status == ARES_SUCCESS && i < n && q->n < RESOLVE_ADDRS_MAX; i++) {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&q->addrs[q->n].ss;
            memset(&q->addrs[q->n], 0, sizeof(q->addrs[q->n]));
            in6->sin6_family = AF_INET6;
            in6->sin6_port = htons((uint16_t)q->port);
            memcpy(&in6->sin6_addr, &ttls[i].ip6addr, sizeof(in6->sin6_addr));
            q->addrs[q->n].len = sizeof(*in6);
            q->n++;
        }
    }
    q->st6 = resolve_status(status);
    if (status != ARES_SUCCESS && status != ARES_ENODATA)
        set_err(q, status);
    if (q->outstanding == 0)
        addrs_finish(q);
}

static void on_a(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    resolver_query_t *q = arg;
    (void)timeouts;
    if (!request_back(q))
        return;
    if (status == ARES_SUCCESS) {
        struct ares_addrttl ttls[RESOLVE_ADDRS_MAX];
        int n = RESOLVE_ADDRS_MAX;
        status = ares_parse_a_reply(abuf, alen, NULL, ttls, &n);
        for (int i = 0; status == ARES_SUCCESS && i < n && q->n4 < RESOLVE_ADDRS_MAX; i++) {
            struct sockaddr_in *in4 = (struct sockaddr_in *)&q->v4[q->n4].ss;
            memset(&q->v4[q->n4], 0, sizeof(q->v4[q->n4]));
            in4->sin_family = AF_INET;
            in4->sin_port = htons((uint16_t)q->port);
            in4->sin_addr = ttls[i].ipaddr;
            q->v4[q->n4].len = sizeof(*in4);
            q->n4++;
        }
    }
    q->st4 = resolve_status(status);
    if (status != ARES_SUCCESS && status != ARES_ENODATA)
        set_err(q, status);
    if (q->outstanding == 0)
        addrs_finish(q);
}

/* "name." so that no search domain is ever appended. */
static void absolute(char *out, size_t size, const char *name)
{
    size_t n = strlen(name);
    snprintf(out, size, "%s%s", name, n && name[n - 1] == '.' ? "" : ".");
}

resolver_query_t *resolver_addrs(resolver_t *r, const char *host, unsigned port, resolver_fn fn,
                                 void *arg)
{
    resolver_query_t *q = query_new(r, Q_ADDRS, arg);
    q->fn = fn;
    q->port = port;
    q->outstanding = 2;
    char name[MX_NAME_MAX + 2];
    absolute(name, sizeof(name), host);
    ares_query(r->ch, name, ns_c_in, ns_t_aaaa, on_aaaa, q);
    ares_query(r->ch, name, ns_c_in, ns_t_a, on_a, q);
    rearm(r);
    return q;
}

/* ---- MX ---- */

static void on_mx(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    resolver_query_t *q = arg;
    (void)timeouts;
    if (!request_back(q))
        return;
    struct ares_mx_reply *mx = NULL;
    if (status == ARES_SUCCESS)
        status = ares_parse_mx_reply(abuf, alen, &mx);
    q->st = resolve_status(status);
    if (status == ARES_SUCCESS) {
        size_t n = 0;
        for (struct ares_mx_reply *m = mx; m; m = m->next)
            n++;
        q->mx = xcalloc(n ? (n > RESOLVE_MX_MAX ? RESOLVE_MX_MAX : n) : 1, sizeof(*q->mx));
        for (struct ares_mx_reply *m = mx; m && q->nmx < RESOLVE_MX_MAX; m = m->next) {
            if (mx_host_set(&q->mx[q->nmx], m->host ? m->host : "", m->priority) == 0)
                q->nmx++;
        }
        if (q->nmx == 0) {
            q->st = DNS_NODATA;
            snprintf(q->err, sizeof(q->err), "no usable MX record");
        }
    } else {
        set_err(q, status);
    }
    if (mx)
        ares_free_data(mx);
    answer(q);
}

resolver_query_t *resolver_mx(resolver_t *r, const char *domain, resolver_mx_fn fn, void *arg)
{
    resolver_query_t *q = query_new(r, Q_MX, arg);
    q->mx_fn = fn;
    q->outstanding = 1;
    char name[MX_NAME_MAX + 2];
    absolute(name, sizeof(name), domain);
    ares_query(r->ch, name, ns_c_in, ns_t_mx, on_mx, q);
    rearm(r);
    return q;
}

/* ---- TXT ---- */

static void on_txt(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    resolver_query_t *q = arg;
    (void)timeouts;
    if (!request_back(q))
        return;
    struct ares_txt_ext *txt = NULL;
    if (status == ARES_SUCCESS)
        status = ares_parse_txt_reply_ext(abuf, alen, &txt);
    q->st = resolve_status(status);
    if (status == ARES_SUCCESS) {
        size_t len = 0;
        for (struct ares_txt_ext *t = txt; t; t = t->next) {
            if (t->record_start) {
                if (q->ntxt >= RESOLVE_TXT_MAX)
                    break;
                q->txt[q->ntxt++] = xcalloc(1, RESOLVE_TXT_LEN + 1);
                len = 0;
            }
            if (q->ntxt == 0)
                continue;
            size_t n = t->length;
            if (n > RESOLVE_TXT_LEN - len)
                n = RESOLVE_TXT_LEN - len;
            memcpy(q->txt[q->ntxt - 1] + len, t->txt, n);
            len += n;
        }
        if (q->ntxt == 0) {
            q->st = DNS_NODATA;
            snprintf(q->err, sizeof(q->err), "no TXT record");
        }
    } else {
        set_err(q, status);
    }
    if (txt)
        ares_free_data(txt);
    answer(q);
}

resolver_query_t *resolver_txt(resolver_t *r, const char *name, resolver_txt_fn fn, void *arg)
{
    resolver_query_t *q = query_new(r, Q_TXT, arg);
    q->txt_fn = fn;
    q->outstanding = 1;
    char abs_name[MX_NAME_MAX + 16];
    absolute(abs_name, sizeof(abs_name), name);
    ares_query(r->ch, abs_name, ns_c_in, ns_t_txt, on_txt, q);
    rearm(r);
    return q;
}

void resolver_cancel(resolver_query_t **p)
{
    resolver_query_t *q = *p;
    if (q == NULL)
        return;
    *p = NULL;
    if (q->answered || q->outstanding == 0) {
        query_free(q);
        return;
    }
    q->cancelled = 1;
    q->fn = NULL;
    q->mx_fn = NULL;
    q->txt_fn = NULL;
}
