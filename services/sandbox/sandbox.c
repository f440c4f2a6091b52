/*
 * sandbox: the relay's local default destination and failover-drill target,
 * an SMTP sink that stores what it accepts in a Maildir and fails on demand
 * (recipient local parts, or a fail mode set over the bus).
 *
 * This file holds main, the `sandbox` config table and start-up; the SMTP
 * dialogue is in sandbox_session.c, storage in sandbox_maildir.c, the
 * listener and shared state in sandbox_server.c, the bus in
 * sandbox_control.c. The sandbox publishes no relay events: it is a
 * destination, not a step on the relay's path.
 */
#include "core/alloc.h"
#include "core/conf.h"
#include "core/log.h"
#include "ipc/service.h"
#include "net/sock.h"
#include "net/tls.h"
#include "sandbox_control.h"
#include "sandbox_maildir.h"
#include "sandbox_server.h"

#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define SANDBOX_FDS_PER_CONN 2  /* the socket and a spool file */
#define SANDBOX_FDS_SPARE    64 /* listener, bus, logs, Maildir */

typedef struct sandbox_conf {
    char *address;
    long long port;
    char *maildir;
    char *tls_cert;
    char *tls_key;
    char *hostname;
    uint64_t slow_delay;       /* ms */
    uint64_t max_message_size; /* octets */
    long long max_connections;
    uint64_t idle_timeout;     /* ms */
} sandbox_conf_t;

#define F(name, type, field, def, min, max, flags, doc)                                        \
    {name, type, offsetof(sandbox_conf_t, field), def, min, max, flags, NULL, NULL, doc}

static const conf_field_t sandbox_table[] = {
    F("address", CONF_STRING, address, "127.0.0.1", 0, 0, 0, "numeric IP address to listen on"),
    F("port", CONF_INT, port, "2526", 1, 65535, 0, "SMTP port"),
    F("maildir", CONF_STRING, maildir, NULL, 0, 0, CONF_REQUIRED,
      "Maildir for accepted messages (new/, cur/, tmp/ made when missing)"),
    F("tls_cert", CONF_STRING, tls_cert, NULL, 0, 0, 0,
      "PEM certificate chain; with tls_key, STARTTLS is offered"),
    F("tls_key", CONF_STRING, tls_key, NULL, 0, 0, 0, "PEM private key for tls_cert"),
    F("hostname", CONF_STRING, hostname, NULL, 0, 0, 0,
      "name in the greeting and EHLO (default: relay.hostname)"),
    F("slow_delay", CONF_DURATION, slow_delay, "3s", 0, 3600000, 0,
      "how long slow-* recipients hold each reply"),
    F("max_message_size", CONF_SIZE, max_message_size, "64M", 1024, 1ll << 30, 0,
      "largest message accepted, in octets after unstuffing"),
    F("max_connections", CONF_INT, max_connections, "2000", 1, 100000, 0,
      "simultaneous SMTP connections; more are greeted with 421"),
    F("idle_timeout", CONF_DURATION, idle_timeout, "5m", 1000, 3600000, 0,
      "a client silent this long is disconnected with 421"),
    {NULL},
};

/* A setting that passed the table but not a later check: "file:line: sandbox.key: reason". */
static void conf_fail(const service_t *svc, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void conf_fail(const service_t *svc, const char *key, const char *fmt, ...)
{
    char reason[512], where[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    const config_setting_t *group = conf_group(svc->conf, "sandbox");
    const config_setting_t *s =
        group ? config_setting_lookup((config_setting_t *)group, key) : NULL;
    if (s)
        conf_where(s, where, sizeof(where));
    else
        sx_strlcpy(where, conf_path(svc->conf), sizeof(where));
    fprintf(stderr, "sendarix-sandbox: %s: sandbox.%s: %s\n", where, key, reason);
}

/* Checks the table cannot express. 0, or -1 after printing why. */
static int conf_check(const service_t *svc, sandbox_conf_t *c)
{
    sock_addr_t a;
    if (sock_addr_parse(c->address, (unsigned)c->port, &a) < 0) {
        conf_fail(svc, "address", "\"%s\" is not a numeric IPv4 or IPv6 address", c->address);
        return -1;
    }
    if (c->maildir[0] == '\0') {
        conf_fail(svc, "maildir", "must not be empty");
        return -1;
    }
    if ((c->tls_cert[0] == '\0') != (c->tls_key[0] == '\0')) {
        /* name the one that is set: it has a line to point at */
        conf_fail(svc, c->tls_cert[0] ? "tls_cert" : "tls_key",
                  "%s is missing: tls_cert and tls_key go together", c->tls_cert[0] ? "tls_key"
                                                                          : "tls_cert");
        return -1;
    }
    if (c->hostname[0] == '\0') {
        free(c->hostname);
        c->hostname = xstrdup(svc->relay.hostname);
    }
    for (const char *p = c->hostname; *p; p++) {
        if (*p <= ' ' || *p > '~') {
            conf_fail(svc, "hostname", "\"%s\" must be printable ASCII without spaces",
                      c->hostname);
            return -1;
        }
    }
    if (c->hostname[0] == '\0' || strlen(c->hostname) > 255) {
        conf_fail(svc, "hostname", "must be 1 to 255 characters long");
        return -1;
    }
    return 0;
}

/* Enough descriptors for max_connections sessions, each with a spool file open. */
static void raise_fd_limit(long long max_connections)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    rlim_t want = (rlim_t)max_connections * SANDBOX_FDS_PER_CONN + SANDBOX_FDS_SPARE;
    if (rl.rlim_cur >= want)
        return;
    rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < want)
        log_warn("event=fd_limit_low limit=%llu wanted=%llu", (unsigned long long)rl.rlim_cur,
                 (unsigned long long)want);
}

/* What SIGHUP needs to load the certificate again. */
typedef struct reload {
    const sandbox_conf_t *conf;
    sandbox_server_t *srv;
    SSL_CTX **tls;
} reload_t;

/* SIGHUP: read tls_cert and tls_key again; on failure keep serving with the old ones. */
static void on_sighup(loop_t *loop, int signo, void *arg)
{
    (void)loop;
    (void)signo;
    reload_t *r = arg;
    if (r->conf->tls_cert[0] == '\0') {
        log_info("event=reload tls=none");
        return;
    }
    char err[1024], q[1200];
    SSL_CTX *fresh = tls_server_ctx(r->conf->tls_cert, r->conf->tls_key, err, sizeof(err));
    if (fresh == NULL) {
        log_error("event=tls_reload_failed err=%s", log_quote(q, sizeof(q), err, strlen(err)));
        return;
    }
    sandbox_server_set_tls(r->srv, fresh);
    tls_ctx_free(r->tls); /* sessions in TLS hold their own reference */
    *r->tls = fresh;
    log_info("event=tls_reloaded cert=%s", log_quote(q, sizeof(q), r->conf->tls_cert,
                                                     strlen(r->conf->tls_cert)));
}

int main(int argc, char **argv)
{
    service_t svc;
    if (service_init(&svc, "sandbox", argc, argv) < 0) {
        service_fini(&svc);
        return 1;
    }
    sandbox_conf_t conf;
    memset(&conf, 0, sizeof(conf));
    int rc = 1;
    maildir_t *md = NULL;
    SSL_CTX *tls = NULL;
    sandbox_server_t *srv = NULL;
    sandbox_control_t *ctl = NULL;

    if (service_section(&svc, sandbox_table, &conf) < 0)
        goto out_noconf;
    if (conf_check(&svc, &conf) < 0)
        goto out;

    char err[1024];
    const char *endpoint = service_endpoint(&svc, &svc.ep.sandbox);
    if (endpoint == NULL) {
        fprintf(stderr, "sendarix-sandbox: %s: bus.sandbox has no endpoint for instance %s\n",
                conf_path(svc.conf), svc.instance);
        goto out;
    }
    md = maildir_open(conf.maildir, conf.hostname, err, sizeof(err));
    if (md == NULL) {
        conf_fail(&svc, "maildir", "%s", err);
        goto out;
    }
    if (conf.tls_cert[0]) {
        tls = tls_server_ctx(conf.tls_cert, conf.tls_key, err, sizeof(err));
        if (tls == NULL) {
            conf_fail(&svc, "tls_cert", "%s", err);
            goto out;
        }
    }
    raise_fd_limit(conf.max_connections);

    sandbox_opts_t opts = {
        .address = conf.address,
        .port = (unsigned)conf.port,
        .hostname = conf.hostname,
        .slow_delay_ms = conf.slow_delay,
        .max_message_size = conf.max_message_size,
        .idle_timeout_ms = conf.idle_timeout,
        .max_connections = (size_t)conf.max_connections,
        .tls = tls,
        .maildir = md,
    };
    srv = sandbox_server_new(svc.loop, &opts, err, sizeof(err));
    if (srv == NULL) {
        fprintf(stderr, "sendarix-sandbox: cannot listen: %s\n", err);
        goto out;
    }
    ctl = sandbox_control_new(svc.bus, endpoint, srv);
    if (ctl == NULL) {
        fprintf(stderr, "sendarix-sandbox: cannot bind the control socket %s\n", endpoint);
        goto out;
    }
    bus_set_stats(svc.bus, sandbox_server_stats, srv);
    reload_t reload = {.conf = &conf, .srv = srv, .tls = &tls};
    if (loop_signal_add(svc.loop, SIGHUP, on_sighup, &reload) < 0)
        log_warn("event=sighup_unavailable");
    log_info("event=sandbox_ready maildir=%s hostname=%s slow_delay_ms=%llu "
             "max_message_size=%llu idle_timeout_ms=%llu control=%s",
             maildir_path(md), conf.hostname, (unsigned long long)conf.slow_delay,
             (unsigned long long)conf.max_message_size, (unsigned long long)conf.idle_timeout,
             endpoint);

    rc = service_run(&svc) == 0 ? 0 : 1;

out:
    bus_set_stats(svc.bus, NULL, NULL);
    sandbox_control_destroy(&ctl);
    sandbox_server_destroy(&srv);
    tls_ctx_free(&tls);
    maildir_destroy(&md);
    conf_release(sandbox_table, &conf);
out_noconf:
    service_fini(&svc);
    return rc;
}
