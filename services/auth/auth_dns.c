/*
 * auth_dns: c-ares on the loop. c-ares says which sockets it wants watched
 * (sock_state_cb) and when it next needs a turn (ares_timeout); the loop
 * watches them and hands events back with ares_process_fd. An answer is
 * parsed at once and delivered from a zero timer, so callbacks never run
 * inside a c-ares call.
 */
#include "auth_dns.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"

#include <ares.h>
#include <arpa/nameser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DNS_FDS_MAX 16

struct auth_dns_query {
    auth_dns_t *d;
    auth_dns_fn fn;
    void *arg;
    int cancelled;
    int answered;
    char *txts[AUTH_DNS_TXT_MAX];
    size_t n;
    char err[160];
    loop_timer_t deliver;
    struct auth_dns_query *prev, *next;
};

typedef struct dns_fd {
    int fd;
    unsigned events;
} dns_fd_t;

struct auth_dns {
    loop_t *loop;
    ares_channel ch;
    loop_timer_t timer;
    dns_fd_t fds[DNS_FDS_MAX];
    size_t nfds;
    auth_dns_query_t *queries;
    int destroying;
};

static void rearm(auth_dns_t *d)
{
    struct timeval tv;
    struct timeval *t = ares_timeout(d->ch, NULL, &tv);
    if (t == NULL) {
        loop_timer_stop(d->loop, &d->timer);
        return;
    }
    uint64_t ms = (uint64_t)t->tv_sec * 1000u + (uint64_t)(t->tv_usec + 999) / 1000u;
    loop_timer_start(d->loop, &d->timer, ms ? ms : 1);
}

static void on_timer(loop_t *loop, void *arg)
{
    auth_dns_t *d = arg;
    (void)loop;
    ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    rearm(d);
}

static void on_fd(loop_t *loop, int fd, unsigned events, void *arg)
{
    auth_dns_t *d = arg;
    (void)loop;
    ares_process_fd(d->ch, (events & (LOOP_READ | LOOP_ERROR)) ? fd : ARES_SOCKET_BAD,
                    (events & LOOP_WRITE) ? fd : ARES_SOCKET_BAD);
    rearm(d);
}

static void sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    auth_dns_t *d = data;
    unsigned ev = (readable ? LOOP_READ : 0) | (writable ? LOOP_WRITE : 0);
    size_t i;
    for (i = 0; i < d->nfds; i++)
        if (d->fds[i].fd == fd)
            break;
    if (ev == 0) {
        if (i < d->nfds) {
            loop_fd_remove(d->loop, fd);
            d->fds[i] = d->fds[--d->nfds];
        }
        return;
    }
    if (i < d->nfds) {
        loop_fd_modify(d->loop, fd, ev);
        d->fds[i].events = ev;
        return;
    }
    if (d->nfds >= DNS_FDS_MAX || loop_fd_add(d->loop, fd, ev, on_fd, d) < 0) {
        log_error("event=dns_watch_failed fd=%d", (int)fd);
        return;
    }
    d->fds[d->nfds++] = (dns_fd_t){.fd = fd, .events = ev};
}

auth_dns_t *auth_dns_new(loop_t *loop, const char *servers, char *err, size_t errlen)
{
    int rc = ares_library_init(ARES_LIB_INIT_ALL);
    if (rc != ARES_SUCCESS) {
        snprintf(err, errlen, "c-ares: %s", ares_strerror(rc));
        return NULL;
    }
    auth_dns_t *d = xcalloc(1, sizeof(*d));
    d->loop = loop;
    loop_timer_init(&d->timer, on_timer, d);
    struct ares_options opt;
    memset(&opt, 0, sizeof(opt));
    opt.sock_state_cb = sock_state;
    opt.sock_state_cb_data = d;
    opt.timeout = AUTH_DNS_TIMEOUT_MS;
    opt.tries = AUTH_DNS_TRIES;
    rc = ares_init_options(&d->ch, &opt,
                           ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
    if (rc != ARES_SUCCESS) {
        snprintf(err, errlen, "c-ares: %s", ares_strerror(rc));
        free(d);
        ares_library_cleanup();
        return NULL;
    }
    if (servers && *servers) {
        rc = ares_set_servers_ports_csv(d->ch, servers);
        if (rc != ARES_SUCCESS) {
            snprintf(err, errlen, "\"%s\" is not a list of ip[:port] servers: %s", servers,
                     ares_strerror(rc));
            ares_destroy(d->ch);
            free(d);
            ares_library_cleanup();
            return NULL;
        }
    }
    return d;
}

static void query_unlink(auth_dns_query_t *q)
{
    auth_dns_t *d = q->d;
    if (q->prev)
        q->prev->next = q->next;
    else if (d->queries == q)
        d->queries = q->next;
    if (q->next)
        q->next->prev = q->prev;
    q->prev = q->next = NULL;
}

static void query_free(auth_dns_query_t *q)
{
    loop_timer_stop(q->d->loop, &q->deliver);
    query_unlink(q);
    for (size_t i = 0; i < q->n; i++)
        free(q->txts[i]);
    free(q);
}

void auth_dns_destroy(auth_dns_t **p)
{
    auth_dns_t *d = *p;
    if (d == NULL)
        return;
    d->destroying = 1;
    ares_destroy(d->ch); /* runs the callbacks of running queries, which free them */
    while (d->queries)
        query_free(d->queries);
    for (size_t i = 0; i < d->nfds; i++)
        loop_fd_remove(d->loop, d->fds[i].fd);
    loop_timer_stop(d->loop, &d->timer);
    free(d);
    ares_library_cleanup();
    *p = NULL;
}

static void deliver(loop_t *loop, void *arg)
{
    auth_dns_query_t *q = arg;
    (void)loop;
    query_unlink(q);
    if (q->fn)
        q->fn(q->txts, q->n, q->err[0] ? q->err : NULL, q->arg);
    for (size_t i = 0; i < q->n; i++)
        free(q->txts[i]);
    free(q);
}

/* Join the strings of each record (record_start marks a new one). */
static void collect(auth_dns_query_t *q, const struct ares_txt_ext *txt)
{
    buf_t cur;
    buf_init(&cur, AUTH_DNS_TEXT_MAX);
    int open = 0, too_long = 0;
    for (const struct ares_txt_ext *t = txt; t; t = t->next) {
        if (t->record_start && open) {
            if (!too_long && q->n < AUTH_DNS_TXT_MAX)
                q->txts[q->n++] = xstrndup(buf_head(&cur), buf_used(&cur));
            buf_reset(&cur);
            too_long = 0;
        }
        open = 1;
        if (memchr(t->txt, 0, t->length) || buf_append(&cur, t->txt, t->length) < 0)
            too_long = 1;
    }
    if (open && !too_long && q->n < AUTH_DNS_TXT_MAX)
        q->txts[q->n++] = xstrndup(buf_head(&cur), buf_used(&cur));
    buf_free(&cur);
}

static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    auth_dns_query_t *q = arg;
    (void)timeouts;
    if (q->cancelled || q->d->destroying) {
        query_free(q);
        return;
    }
    if (status == ARES_SUCCESS) {
        struct ares_txt_ext *txt = NULL;
        int rc = ares_parse_txt_reply_ext(abuf, alen, &txt);
        if (rc == ARES_SUCCESS)
            collect(q, txt);
        else if (rc != ARES_ENODATA)
            sx_strlcpy(q->err, ares_strerror(rc), sizeof(q->err));
        if (txt)
            ares_free_data(txt);
    } else if (status != ARES_ENODATA) {
        sx_strlcpy(q->err, ares_strerror(status), sizeof(q->err));
    }
    q->answered = 1;
    loop_timer_start(q->d->loop, &q->deliver, 0);
}

auth_dns_query_t *auth_dns_txt(auth_dns_t *d, const char *name, auth_dns_fn fn, void *arg)
{
    auth_dns_query_t *q = xcalloc(1, sizeof(*q));
    q->d = d;
    q->fn = fn;
    q->arg = arg;
    loop_timer_init(&q->deliver, deliver, q);
    q->next = d->queries;
    if (d->queries)
        d->queries->prev = q;
    d->queries = q;
    ares_query(d->ch, name, ns_c_in, ns_t_txt, on_answer, q);
    rearm(d);
    return q;
}

void auth_dns_cancel(auth_dns_query_t **p)
{
    auth_dns_query_t *q = *p;
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
