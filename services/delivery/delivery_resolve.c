/*
 * delivery_resolve: c-ares on the loop. c-ares tells us which sockets it
 * wants watched (sock_state_cb) and when it next needs a turn
 * (ares_timeout); we watch them with loop_fd_add and a loop timer and
 * hand events back with ares_process_fd.
 */
#include "delivery_resolve.h"
#include "core/alloc.h"
#include "core/log.h"

#include <ares.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RESOLVE_FDS_MAX 16

struct resolver_query {
    resolver_t *r;
    resolver_fn fn;
    void *arg;
    int cancelled;
    int answered;
    sock_addr_t addrs[RESOLVE_ADDRS_MAX];
    size_t n;
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

static void query_free(resolver_query_t *q)
{
    loop_timer_stop(q->r->loop, &q->deliver);
    query_unlink(q);
    free(q);
}

void resolver_destroy(resolver_t **p)
{
    resolver_t *r = *p;
    if (r == NULL)
        return;
    r->destroying = 1;
    ares_destroy(r->ch); /* runs the callbacks of running queries, which free them */
    while (r->queries)
        query_free(r->queries);
    for (size_t i = 0; i < r->nfds; i++)
        loop_fd_remove(r->loop, r->fds[i].fd);
    loop_timer_stop(r->loop, &r->timer);
    free(r);
    ares_library_cleanup();
    *p = NULL;
}

static void deliver(loop_t *loop, void *arg)
{
    resolver_query_t *q = arg;
    (void)loop;
    query_unlink(q);
    resolver_fn fn = q->fn;
    if (fn)
        fn(q->addrs, q->n, q->err, q->arg);
    free(q);
}

static void on_answer(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    resolver_query_t *q = arg;
    (void)timeouts;
    if (q->cancelled || q->r->destroying) {
        if (res)
            ares_freeaddrinfo(res);
        query_free(q);
        return;
    }
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
        if (q->n == 0)
            snprintf(q->err, sizeof(q->err), "no IPv4 or IPv6 address");
    } else {
        snprintf(q->err, sizeof(q->err), "%s", ares_strerror(status));
    }
    if (res)
        ares_freeaddrinfo(res);
    q->answered = 1;
    loop_timer_start(q->r->loop, &q->deliver, 0);
}

resolver_query_t *resolver_lookup(resolver_t *r, const char *host, unsigned port, resolver_fn fn,
                                  void *arg)
{
    resolver_query_t *q = xcalloc(1, sizeof(*q));
    q->r = r;
    q->fn = fn;
    q->arg = arg;
    loop_timer_init(&q->deliver, deliver, q);
    q->next = r->queries;
    if (r->queries)
        r->queries->prev = q;
    r->queries = q;
    char service[8];
    snprintf(service, sizeof(service), "%u", port);
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = ARES_AI_NUMERICSERV;
    ares_getaddrinfo(r->ch, host, service, &hints, on_answer, q);
    rearm(r);
    return q;
}

void resolver_cancel(resolver_query_t **p)
{
    resolver_query_t *q = *p;
    if (q == NULL)
        return;
    *p = NULL;
    if (q->answered) {
        query_free(q);
        return;
    }
    q->cancelled = 1;
    q->fn = NULL;
}
