/*
 * ingress: the relay's SMTP front door. Listens on the submission
 * (STARTTLS), smtps (implicit TLS) and legacy roles, authenticates clients
 * through auth, and hands each message to a queue instance, answering 250
 * only once queue has it on disk. Holds nothing durable.
 * This file: configuration, listeners, TLS context and its reload, start-up.
 */
#include "ingress.h"
#include "core/alloc.h"
#include "core/log.h"
#include "net/tls.h"

#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LISTEN_BACKLOG 1024
#define MAX_LISTENERS  16

/* listeners = ( { role = "submission"; address = "127.0.0.1"; port = 2587; }, ... ) */
static int parse_listeners(const config_setting_t *s, void *field, char *err, size_t errlen)
{
    listener_list_t *l = field;
    if (s == NULL) {
        snprintf(err, errlen, "at least one listener is required");
        return -1;
    }
    if (config_setting_type(s) != CONFIG_TYPE_LIST) {
        snprintf(err, errlen, "expected a list ( { role; address; port; }, ... )");
        return -1;
    }
    int n = config_setting_length(s);
    if (n == 0 || n > MAX_LISTENERS) {
        snprintf(err, errlen, "expected 1 to %d listeners", MAX_LISTENERS);
        return -1;
    }
    l->v = xcalloc((size_t)n, sizeof(*l->v));
    for (int i = 0; i < n; i++) {
        config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        const char *role = NULL, *addr = "127.0.0.1";
        int port = 0;
        char where[256];
        conf_where(e, where, sizeof(where));
        if (config_setting_type(e) != CONFIG_TYPE_GROUP ||
            !config_setting_lookup_string(e, "role", &role) ||
            !config_setting_lookup_int(e, "port", &port)) {
            snprintf(err, errlen, "[%d] (line %s) needs role and port", i + 1, where);
            return -1;
        }
        config_setting_lookup_string(e, "address", &addr);
        listener_conf_t *lc = &l->v[l->n];
        if (strcmp(role, "submission") == 0)
            lc->role = ROLE_SUBMISSION;
        else if (strcmp(role, "smtps") == 0)
            lc->role = ROLE_SMTPS;
        else if (strcmp(role, "legacy") == 0)
            lc->role = ROLE_LEGACY;
        else {
            snprintf(err, errlen, "[%d] (line %s): role \"%s\" is not submission, smtps or legacy",
                     i + 1, where, role);
            return -1;
        }
        if (port < 1 || port > 65535) {
            snprintf(err, errlen, "[%d] (line %s): port %d out of range 1..65535", i + 1, where,
                     port);
            return -1;
        }
        sock_addr_t tmp;
        if (sock_addr_parse(addr, (unsigned)port, &tmp) < 0) {
            snprintf(err, errlen, "[%d] (line %s): address \"%s\" is not a numeric IP address",
                     i + 1, where, addr);
            return -1;
        }
        sx_strlcpy(lc->address, addr, sizeof(lc->address));
        lc->port = (unsigned)port;
        l->n++;
    }
    return 0;
}

static void release_listeners(void *field)
{
    listener_list_t *l = field;
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

#define IF(name, type, field, def, min, max, doc)                                              \
    {name, type, offsetof(ingress_conf_t, field), def, min, max, 0, NULL, NULL, doc}

static const conf_field_t ingress_table[] = {
    {"listeners", CONF_CUSTOM, offsetof(ingress_conf_t, listeners), NULL, 0, 0, CONF_REQUIRED,
     parse_listeners, release_listeners, "listening sockets and their roles"},
    IF("tls_cert", CONF_STRING, tls_cert, "", 0, 0, "PEM certificate chain for TLS"),
    IF("tls_key", CONF_STRING, tls_key, "", 0, 0, "PEM private key for TLS"),
    IF("legacy_networks", CONF_STRLIST, legacy_networks, NULL, 0, 0,
       "client networks allowed to relay on the legacy role"),
    IF("legacy_tenant", CONF_STRING, legacy_tenant, "", 0, 0,
       "tenant that owns mail from the legacy role"),
    IF("max_message_size", CONF_SIZE, max_message_size, "50M", 1024, 1LL << 30,
       "largest message accepted (advertised in SIZE)"),
    IF("max_recipients", CONF_INT, max_recipients, "1000", 1, 100000,
       "recipients per message; beyond it 452 4.5.3"),
    IF("max_line", CONF_INT, max_line, "512", 512, 65536,
       "longest command line, CRLF included"),
    IF("max_connections", CONF_INT, max_connections, "10000", 1, 1000000,
       "concurrent client connections"),
    IF("chunk_size", CONF_SIZE, chunk_size, "1M", 4096, 64LL << 20,
       "message bytes sent to queue per chunk while DATA arrives"),
    IF("command_timeout", CONF_DURATION, command_timeout, "5m", 1000, 3600000,
       "time a client has for each command"),
    IF("data_timeout", CONF_DURATION, data_timeout, "10m", 1000, 3600000,
       "time a client has for the whole message text"),
    IF("auth_timeout", CONF_DURATION, auth_timeout, "10s", 100, 300000,
       "time auth has to answer a login"),
    IF("queue_timeout", CONF_DURATION, queue_timeout, "30s", 100, 600000,
       "time queue has to confirm a chunk or a commit"),
    IF("queue_wait", CONF_DURATION, queue_wait, "5s", 0, 60000,
       "time a whole message waits for a queue instance to come back before 451"),
    IF("max_header_size", CONF_SIZE, max_header_size, "256K", 1024, 64LL << 20,
       "largest header block of a message; beyond it 552 5.3.4"),
    IF("max_connections_per_ip", CONF_INT, max_connections_per_ip, "50", 1, 1000000,
       "concurrent connections from one client address"),
    IF("max_junk_commands", CONF_INT, max_junk_commands, "100", 1, 100000,
       "commands without a message (NOOP, RSET, VRFY, errors...) before the session ends"),
    IF("max_auth_failures", CONF_INT, max_auth_failures, "3", 1, 100,
       "failed AUTH attempts in one session before it ends"),
    {"scan", CONF_CUSTOM, offsetof(ingress_conf_t, scan), NULL, 0, 0, 0, scan_conf_parse,
     scan_conf_release, "content scanner before the 250 (see ingress_scan.h)"},
    {NULL},
};

/* ---- TLS ---- */

static int tls_load(ingress_t *ing)
{
    if (ing->conf.tls_cert[0] == '\0' || ing->conf.tls_key[0] == '\0') {
        ing->tls = NULL;
        return 0;
    }
    char err[512];
    SSL_CTX *ctx = tls_server_ctx(ing->conf.tls_cert, ing->conf.tls_key, err, sizeof(err));
    if (ctx == NULL) {
        log_error("event=tls_load_failed err=\"%s\"", err);
        return -1;
    }
    /* sessions under way hold their own reference to the old context */
    tls_ctx_free(&ing->tls);
    ing->tls = ctx;
    return 0;
}

static void on_sighup(loop_t *loop, int signo, void *arg)
{
    (void)loop;
    (void)signo;
    ingress_t *ing = arg;
    if (tls_load(ing) == 0)
        log_info("event=tls_reloaded cert=%s", ing->conf.tls_cert);
    else
        log_warn("event=tls_reload_failed keeping=previous");
}

/* ---- listeners ---- */

static void on_accept(loop_t *loop, int fd, unsigned events, void *arg)
{
    (void)loop;
    (void)events;
    ingress_listener_t *l = arg;
    for (int i = 0; i < 64; i++) {
        sock_addr_t peer;
        int cfd = sock_accept(fd, &peer);
        if (cfd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                log_warn("event=accept_failed err=\"%s\"", strerror(errno));
            return;
        }
        session_start(l->ing, cfd, &peer, l->role);
    }
}

static int listeners_open(ingress_t *ing)
{
    ing->listeners = xcalloc(ing->conf.listeners.n, sizeof(*ing->listeners));
    for (size_t i = 0; i < ing->conf.listeners.n; i++) {
        listener_conf_t *lc = &ing->conf.listeners.v[i];
        if (lc->role == ROLE_SMTPS && ing->tls == NULL) {
            log_error("event=config_error reason=\"smtps listener needs tls_cert and tls_key\"");
            return -1;
        }
        char err[256];
        int fd = sock_listen(lc->address, lc->port, LISTEN_BACKLOG, err, sizeof(err));
        if (fd < 0) {
            log_error("event=listen_failed role=%s err=\"%s\"", role_name(lc->role), err);
            return -1;
        }
        ingress_listener_t *l = &ing->listeners[ing->nlisteners++];
        l->ing = ing;
        l->role = lc->role;
        l->fd = fd;
        if (loop_fd_add(ing->svc->loop, fd, LOOP_READ, on_accept, l) < 0)
            return -1;
        log_info("event=listen role=%s address=%s port=%u", role_name(lc->role), lc->address,
                 lc->port);
    }
    return 0;
}

static void ingress_request(bus_server_t *srv, bus_msg_t *msg, void *arg)
{
    (void)arg;
    bus_server_error(srv, &msg->peer, msg->env->request_id, 400, "",
                     "ingress does not handle %s", codec_body_name(msg->env));
}

static void ingress_stats(PB(ServicePong) * pong, void *arg)
{
    ingress_t *ing = arg;
    bus_pong_stat(pong, "sessions", "%zu", ing->nsessions);
    bus_pong_stat(pong, "connections", "%llu", (unsigned long long)ing->connections);
    bus_pong_stat(pong, "accepted", "%llu", (unsigned long long)ing->accepted);
    bus_pong_stat(pong, "rejected", "%llu", (unsigned long long)ing->rejected);
    bus_pong_stat(pong, "auth_ok", "%llu", (unsigned long long)ing->auth_ok);
    bus_pong_stat(pong, "auth_failed", "%llu", (unsigned long long)ing->auth_failed);
    bus_pong_stat(pong, "rate_limited", "%llu", (unsigned long long)ing->rate_limited);
    bus_pong_stat(pong, "spam_rejected", "%llu", (unsigned long long)ing->scanned_spam);
}

static int legacy_networks(ingress_t *ing)
{
    conf_strlist_t *l = &ing->conf.legacy_networks;
    ing->legacy_nets = xcalloc(l->n ? l->n : 1, sizeof(*ing->legacy_nets));
    for (size_t i = 0; i < l->n; i++) {
        if (cidr_parse(l->v[i], &ing->legacy_nets[i]) < 0) {
            fprintf(stderr, "sendarix-ingress: %s: ingress.legacy_networks: \"%s\" is not a "
                            "network (e.g. 192.0.2.0/24)\n",
                    ing->svc->config_path, l->v[i]);
            return -1;
        }
    }
    ing->nlegacy_nets = l->n;
    return 0;
}

int main(int argc, char **argv)
{
    service_t svc;
    ingress_t ing = {0};
    int rc = 1;
    if (service_init(&svc, "ingress", argc, argv) < 0)
        return 1;
    ing.svc = &svc;
    if (service_section(&svc, ingress_table, &ing.conf) < 0 || legacy_networks(&ing) < 0)
        goto out;
    if (svc.ep.queue.n == 0 || svc.ep.auth.n == 0) {
        fprintf(stderr, "sendarix-ingress: %s: bus.queue and bus.auth must list endpoints\n",
                svc.config_path);
        goto out;
    }
    if (tls_load(&ing) < 0) {
        fprintf(stderr, "sendarix-ingress: cannot load TLS certificate %s / key %s\n",
                ing.conf.tls_cert, ing.conf.tls_key);
        goto out;
    }
    ing.auth = bus_client_new(svc.bus, svc.ep.auth.v[(service_index(&svc) - 1) % svc.ep.auth.n]);
    ing.queues = xcalloc(svc.ep.queue.n, sizeof(*ing.queues));
    for (size_t i = 0; i < svc.ep.queue.n; i++) {
        ing.queues[i] = bus_client_new(svc.bus, svc.ep.queue.v[i]);
        if (ing.queues[i] == NULL)
            goto out;
        ing.nqueues++;
    }
    if (ing.auth == NULL)
        goto out;
    const char *api = service_endpoint(&svc, &svc.ep.ingress);
    if (api && (ing.api = bus_server_new(svc.bus, api, ingress_request, &ing)) == NULL)
        goto out;
    ing.scanner = scanner_new(svc.loop, &ing.conf.scan);
    bus_set_stats(svc.bus, ingress_stats, &ing);
    loop_signal_add(svc.loop, SIGHUP, on_sighup, &ing);
    if (listeners_open(&ing) < 0)
        goto out;
    rc = service_run(&svc) == 0 ? 0 : 1;
out:
    session_close_all(&ing);
    scanner_destroy(&ing.scanner);
    auth_rate_leases_free(&ing);
    limits_fini(&ing);
    for (size_t i = 0; i < ing.nlisteners; i++) {
        loop_fd_remove(svc.loop, ing.listeners[i].fd);
        close(ing.listeners[i].fd);
    }
    free(ing.listeners);
    bus_server_destroy(&ing.api);
    bus_client_destroy(&ing.auth);
    for (size_t i = 0; i < ing.nqueues; i++)
        bus_client_destroy(&ing.queues[i]);
    free(ing.queues);
    free(ing.legacy_nets);
    tls_ctx_free(&ing.tls);
    conf_release(ingress_table, &ing.conf);
    service_fini(&svc);
    return rc;
}
