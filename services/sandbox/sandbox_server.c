/*
 * sandbox_server: accept loop, connection limit, fail mode and counters.
 */
#include "sandbox_server.h"
#include "sandbox_fail.h"
#include "sandbox_session.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/id.h"
#include "core/log.h"
#include "ipc/bus.h"
#include "net/sock.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SERVER_BACKLOG        1024
#define SERVER_ACCEPT_BATCH   64   /* accepts per readiness event, so one burst cannot starve I/O */
#define SERVER_EMFILE_PAUSE_MS 200 /* out of descriptors: stop accepting this long */

struct sandbox_server {
    loop_t *loop;
    int lfd;
    char hostname[256];
    size_t max_connections;
    session_ctx_t ctx;
    fail_mode_t fail;
    loop_timer_t fail_timer;   /* logs the end of a fail mode */
    loop_timer_t resume_timer; /* accepting again after EMFILE */
    uint64_t refused_busy;     /* connections turned away at the limit */
};

/* Turn a connection away without a session: at the connection limit. */
static void refuse_busy(sandbox_server_t *srv, int fd, const sock_addr_t *peer)
{
    char line[512], ip[SOCK_ADDR_MAX], sid[17];
    id_session(sid);
    int n = snprintf(line, sizeof(line),
                     "421 4.3.2 %s Error: too many connections, try again later\r\n",
                     srv->hostname);
    /* one non-blocking send into an empty socket buffer; if it does not fit, so be it */
    if (n > 0 && send(fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        log_debug("event=refuse_send_failed err=\"%s\"", strerror(errno));
    close(fd);
    srv->refused_busy++;
    log_warn("sid=%s event=connection_refused reason=max_connections peer=%s:%u limit=%zu", sid,
             sock_addr_ip(peer, ip, sizeof(ip)), sock_addr_port(peer), srv->max_connections);
}

static void on_resume_timer(loop_t *loop, void *arg)
{
    sandbox_server_t *srv = arg;
    loop_fd_modify(loop, srv->lfd, LOOP_READ);
}

static void on_accept(loop_t *loop, int fd, unsigned events, void *arg)
{
    (void)fd;
    (void)events;
    sandbox_server_t *srv = arg;
    for (int i = 0; i < SERVER_ACCEPT_BATCH; i++) {
        sock_addr_t peer;
        int cfd = sock_accept(srv->lfd, &peer);
        if (cfd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                continue;
            log_error("event=accept_failed err=\"%s\" pause_ms=%d", strerror(errno),
                      SERVER_EMFILE_PAUSE_MS);
            /* EMFILE and friends: the listener would stay readable and spin */
            loop_fd_modify(loop, srv->lfd, 0);
            loop_timer_start(loop, &srv->resume_timer, SERVER_EMFILE_PAUSE_MS);
            return;
        }
        if (srv->ctx.active >= srv->max_connections) {
            refuse_busy(srv, cfd, &peer);
            continue;
        }
        unsigned code = fail_mode_code(&srv->fail, loop_now(loop));
        session_start(&srv->ctx, cfd, &peer, code, code ? srv->fail.text : NULL);
    }
}

static void on_fail_timer(loop_t *loop, void *arg)
{
    sandbox_server_t *srv = arg;
    if (srv->fail.code && fail_mode_code(&srv->fail, loop_now(loop)) == 0) {
        log_info("event=fail_mode_ended code=%u", srv->fail.code);
        memset(&srv->fail, 0, sizeof(srv->fail));
        session_fail_all(&srv->ctx, 0, NULL);
    }
}

sandbox_server_t *sandbox_server_new(loop_t *loop, const sandbox_opts_t *o, char *err,
                                     size_t errlen)
{
    sandbox_server_t *srv = xcalloc(1, sizeof(*srv));
    srv->loop = loop;
    sx_strlcpy(srv->hostname, o->hostname, sizeof(srv->hostname));
    srv->max_connections = o->max_connections;
    srv->ctx.loop = loop;
    srv->ctx.hostname = srv->hostname;
    srv->ctx.max_message_size = o->max_message_size;
    srv->ctx.slow_delay_ms = o->slow_delay_ms;
    srv->ctx.idle_timeout_ms = o->idle_timeout_ms;
    srv->ctx.tls = o->tls;
    srv->ctx.maildir = o->maildir;
    loop_timer_init(&srv->fail_timer, on_fail_timer, srv);
    loop_timer_init(&srv->resume_timer, on_resume_timer, srv);
    srv->lfd = sock_listen(o->address, o->port, SERVER_BACKLOG, err, errlen);
    if (srv->lfd < 0) {
        free(srv);
        return NULL;
    }
    if (loop_fd_add(loop, srv->lfd, LOOP_READ, on_accept, srv) < 0) {
        snprintf(err, errlen, "cannot watch the listening socket: %s", strerror(errno));
        close(srv->lfd);
        free(srv);
        return NULL;
    }
    log_info("event=listening address=%s port=%u tls=%s max_connections=%zu", o->address,
             o->port, o->tls ? "starttls" : "none", o->max_connections);
    return srv;
}

void sandbox_server_destroy(sandbox_server_t **p)
{
    sandbox_server_t *srv = *p;
    if (srv == NULL)
        return;
    loop_timer_stop(srv->loop, &srv->fail_timer);
    loop_timer_stop(srv->loop, &srv->resume_timer);
    loop_fd_remove(srv->loop, srv->lfd);
    close(srv->lfd);
    session_close_all(&srv->ctx);
    free(srv);
    *p = NULL;
}

void sandbox_server_set_tls(sandbox_server_t *srv, SSL_CTX *tls)
{
    srv->ctx.tls = tls;
}

int sandbox_server_fail_set(sandbox_server_t *srv, unsigned code, uint64_t seconds,
                            const char *text, uint64_t *until_wall_ms, char *err, size_t errlen)
{
    if (fail_mode_set(&srv->fail, code, seconds, text, loop_now(srv->loop), clock_wall_ms(), err,
                      errlen) < 0)
        return -1;
    if (code == 0) {
        loop_timer_stop(srv->loop, &srv->fail_timer);
        *until_wall_ms = 0;
        log_info("event=fail_mode_cleared");
        session_fail_all(&srv->ctx, 0, NULL);
        return 0;
    }
    session_fail_all(&srv->ctx, code, srv->fail.text);
    loop_timer_start(srv->loop, &srv->fail_timer, seconds * 1000u);
    *until_wall_ms = srv->fail.until_wall;
    char q[FAIL_TEXT_MAX * 4 + 8];
    log_info("event=fail_mode_set code=%u seconds=%llu until_ms=%llu text=%s", code,
             (unsigned long long)seconds, (unsigned long long)srv->fail.until_wall,
             log_quote(q, sizeof(q), srv->fail.text, strlen(srv->fail.text)));
    return 0;
}

void sandbox_server_stats(PB(ServicePong) * pong, void *arg)
{
    sandbox_server_t *srv = arg;
    uint64_t now = loop_now(srv->loop);
    bus_pong_stat(pong, "connections", "%zu", srv->ctx.active);
    bus_pong_stat(pong, "connections_total", "%llu", (unsigned long long)srv->ctx.total);
    bus_pong_stat(pong, "connections_refused", "%llu", (unsigned long long)srv->refused_busy);
    bus_pong_stat(pong, "messages_stored", "%llu", (unsigned long long)srv->ctx.messages);
    bus_pong_stat(pong, "files_stored", "%llu", (unsigned long long)srv->ctx.files);
    bus_pong_stat(pong, "messages_refused", "%llu", (unsigned long long)srv->ctx.refused);
    bus_pong_stat(pong, "fail_code", "%u", fail_mode_code(&srv->fail, now));
    bus_pong_stat(pong, "fail_seconds_left", "%llu",
                  (unsigned long long)fail_mode_seconds_left(&srv->fail, now));
}
