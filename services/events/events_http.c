/*
 * events_http: libmicrohttpd in external-epoll mode on the service loop.
 * What each path answers lives in events_api.c; this file only moves
 * requests and responses between the two and keeps MHD's timers running.
 */
#include "events_http.h"
#include "core/alloc.h"
#include "core/log.h"
#include "events_api.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct events_http {
    loop_t *loop;
    struct MHD_Daemon *daemon;
    int epoll_fd;
    loop_timer_t timer;
    evstore_t *store;
    const evingest_t *ingest;
    const evmetrics_t *metrics;
};

typedef struct param_set {
    events_api_param_t v[EVAPI_PARAMS_MAX];
    size_t n;
    int overflow;
} param_set_t;

static void http_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char text[512], q[600];
    vsnprintf(text, sizeof(text), fmt, ap);
    size_t n = strlen(text);
    while (n && (text[n - 1] == '\n' || text[n - 1] == '\r'))
        text[--n] = '\0';
    log_warn("event=http_error text=%s", log_quote(q, sizeof(q), text, n));
}

static enum MHD_Result collect_param(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    (void)kind;
    param_set_t *ps = cls;
    if (ps->n == EVAPI_PARAMS_MAX) {
        ps->overflow = 1;
        return MHD_NO;
    }
    ps->v[ps->n].key = key;
    ps->v[ps->n].value = value;
    ps->n++;
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)req_cls;
    events_http_t *h = cls;
    param_set_t ps = {0};
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, collect_param, &ps);
    events_api_reply_t reply;
    if (ps.overflow) {
        const char *msg = "{\"error\":\"too many parameters\"}\n";
        reply.status = 400;
        reply.content_type = "application/json";
        buf_init(&reply.body, 0);
        buf_append_str(&reply.body, msg);
    } else {
        events_api_handle(h->store, h->ingest, h->metrics, method, url, ps.v, ps.n, &reply);
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        buf_used(&reply.body), (void *)buf_head(&reply.body), MHD_RESPMEM_MUST_COPY);
    enum MHD_Result rc = MHD_NO;
    if (resp) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, reply.content_type);
        if (reply.status == 405)
            MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
        rc = MHD_queue_response(conn, reply.status, resp);
        MHD_destroy_response(resp);
    }
    char path[160];
    log_debug("event=http_request method=%.8s path=%s status=%u", method,
              log_quote(path, sizeof(path), url, strlen(url)), reply.status);
    events_api_reply_free(&reply);
    return rc;
}

/* MHD tells how long it may wait before it must run again; keep a timer for that. */
static void http_rearm(events_http_t *h)
{
    MHD_UNSIGNED_LONG_LONG ms = 0;
    if (MHD_get_timeout(h->daemon, &ms) == MHD_YES)
        loop_timer_start(h->loop, &h->timer, (uint64_t)ms);
    else
        loop_timer_stop(h->loop, &h->timer);
}

static void http_run(events_http_t *h)
{
    MHD_run(h->daemon);
    http_rearm(h);
}

static void on_readable(loop_t *loop, int fd, unsigned events, void *arg)
{
    (void)loop;
    (void)fd;
    (void)events;
    http_run(arg);
}

static void on_timer(loop_t *loop, void *arg)
{
    (void)loop;
    http_run(arg);
}

/* Fill a socket address from a literal; 0, or -1 when address is neither IPv4 nor IPv6. */
static int make_addr(const char *address, unsigned port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, address, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        return 0;
    }
    if (inet_pton(AF_INET6, address, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        return 0;
    }
    return -1;
}

events_http_t *events_http_new(loop_t *loop, const char *address, unsigned port, evstore_t *st,
                               const evingest_t *in, const evmetrics_t *metrics, char *err,
                               size_t errlen)
{
    struct sockaddr_storage ss;
    if (make_addr(address, port, &ss) < 0) {
        snprintf(err, errlen, "http_address \"%s\" is not an IPv4 or IPv6 address", address);
        return NULL;
    }
    events_http_t *h = xcalloc(1, sizeof(*h));
    h->loop = loop;
    h->store = st;
    h->ingest = in;
    h->metrics = metrics;
    h->epoll_fd = -1;
    loop_timer_init(&h->timer, on_timer, h);
    unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* the logger goes first so that MHD never writes to stderr itself */
    h->daemon = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, h,
                                 MHD_OPTION_EXTERNAL_LOGGER, http_log, h, MHD_OPTION_SOCK_ADDR,
                                 (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT,
                                 (unsigned)EVHTTP_CONNECTIONS_MAX, MHD_OPTION_CONNECTION_TIMEOUT,
                                 (unsigned)EVHTTP_IDLE_TIMEOUT_S, MHD_OPTION_END);
    if (h->daemon == NULL) {
        snprintf(err, errlen, "cannot listen for HTTP on %s port %u (in use?)", address, port);
        goto fail;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_EPOLL_FD);
    if (info == NULL || info->epoll_fd < 0 ||
        loop_fd_add(loop, info->epoll_fd, LOOP_READ, on_readable, h) < 0) {
        snprintf(err, errlen, "cannot watch the HTTP server's epoll descriptor");
        goto fail;
    }
    h->epoll_fd = info->epoll_fd;
    http_rearm(h);
    log_info("event=http_listen address=%s port=%u", address, port);
    return h;
fail:
    events_http_destroy(&h);
    return NULL;
}

void events_http_destroy(events_http_t **p)
{
    events_http_t *h = *p;
    if (h == NULL)
        return;
    loop_timer_stop(h->loop, &h->timer);
    if (h->epoll_fd >= 0)
        loop_fd_remove(h->loop, h->epoll_fd);
    if (h->daemon)
        MHD_stop_daemon(h->daemon);
    free(h);
    *p = NULL;
}
