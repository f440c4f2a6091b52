/*
 * delivery_task: endpoints, failover and the result of one task.
 */
#include "delivery_task.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"
#include "delivery_session.h"
#include "ipc/codec.h"
#include "mail/address.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TASK_RCPTS_MAX 2000 /* recipients in one task */

struct task {
    const delivery_ctx_t *ctx;
    uint64_t id;
    sx_env_t *env;
    zmq_msg_t body;
    const PB(DeliveryJob) * job;
    const PB(DeliveryRoute) * route;
    task_done_fn done;
    void *done_arg;
    char ids[128];

    session_rcpt_t *rcpts;
    session_txn_t txn;
    tls_policy_t tls;
    const char *helo;

    size_t ep;                 /* next endpoint to try */
    char host[SESSION_HOST_MAX];
    unsigned port;
    sock_addr_t addrs[RESOLVE_ADDRS_MAX];
    size_t naddrs;
    size_t ai;                 /* next address of the current endpoint */
    resolver_query_t *query;
    session_t *session;
    unsigned tries;

    dlv_reply_t last;          /* the latest failure, for recipients nobody answered */
    char remote_host[SESSION_HOST_MAX];
    char remote_ip[SOCK_ADDR_MAX];
    char tls_version[32];
    char tls_cipher[96];
    uint64_t started_ms;
    loop_timer_t kick;
    dkim_prep_t *dkim; /* the signed copy of the message, while the task runs */
};

static void next_endpoint(task_t *t);
static void next_address(task_t *t);

/* ---- checking what the router sent ---- */

static int has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f || *s == '<' || *s == '>')
            return 1;
    return 0;
}

static int path_ok(const char *addr, int allow_null, int utf8)
{
    if (addr == NULL)
        return allow_null;
    if (*addr == '\0')
        return allow_null;
    if (strlen(addr) > ADDR_PATH_MAX + ADDR_DOMAIN_MAX + 1 || has_control(addr))
        return 0;
    char text[ADDR_PATH_MAX + ADDR_DOMAIN_MAX + 8];
    snprintf(text, sizeof(text), "<%s>", addr);
    mail_addr_t a;
    mail_params_t params;
    return address_parse(text, allow_null, utf8, &a, &params) == ADDR_OK && params.n == 0;
}

const char *task_invalid(const PB(DeliveryTask) * task)
{
    if (task == NULL || task->job == NULL)
        return "task without job";
    if (task->route == NULL)
        return "task without route";
    const PB(DeliveryJob) *job = task->job;
    if (job->n_recipients == 0)
        return "job without recipients";
    if (job->n_recipients > TASK_RCPTS_MAX)
        return "too many recipients";
    if (!path_ok(job->mail_from, 1, job->smtputf8))
        return "malformed sender";
    for (size_t i = 0; i < job->n_recipients; i++) {
        const PB(DeliveryRecipient) *rc = job->recipients[i];
        if (rc == NULL || rc->address == NULL || *rc->address == '\0' ||
            !path_ok(rc->address, 0, job->smtputf8))
            return "malformed recipient";
    }
    if (job->message_id == NULL || has_control(job->message_id) || strchr(job->message_id, ' '))
        return "malformed message id";
    return NULL;
}

/* ---- life ---- */

static void on_kick(loop_t *loop, void *arg)
{
    (void)loop;
    next_endpoint(arg);
}

task_t *task_new(const delivery_ctx_t *ctx, uint64_t id, sx_env_t **env, zmq_msg_t *body,
                 task_done_fn done, void *arg)
{
    task_t *t = xcalloc(1, sizeof(*t));
    t->ctx = ctx;
    t->id = id;
    t->env = *env;
    *env = NULL;
    zmq_msg_init(&t->body);
    zmq_msg_move(&t->body, body);
    t->job = t->env->delivery_task->job;
    t->route = t->env->delivery_task->route;
    t->done = done;
    t->done_arg = arg;
    snprintf(t->ids, sizeof(t->ids), "msg=%s task=%" PRIu64, t->job->message_id, id);
    t->rcpts = xcalloc(t->job->n_recipients, sizeof(*t->rcpts));
    for (size_t i = 0; i < t->job->n_recipients; i++)
        t->rcpts[i].address = t->job->recipients[i]->address;
    t->txn.mail_from = t->job->mail_from;
    t->txn.smtputf8 = t->job->smtputf8;
    t->txn.eightbit = t->job->eightbit;
    t->txn.body = zmq_msg_data(&t->body);
    t->txn.body_len = zmq_msg_size(&t->body);
    t->txn.rcpts = t->rcpts;
    t->txn.nrcpt = t->job->n_recipients;
    t->tls = caps_tls_policy(t->route->tls);
    t->helo = t->route->helo && *t->route->helo && address_domain_valid(t->route->helo, 0)
                  ? t->route->helo
                  : ctx->helo;
    dlv_reply_set(&t->last, 451, "4.4.0", "no endpoint could be tried");
    loop_timer_init(&t->kick, on_kick, t);
    return t;
}

void task_start(task_t *t)
{
    t->started_ms = clock_mono_ms();
    log_info("event=task_start %s route=%s rcpts=%zu size=%zu endpoints=%zu tls=%s attempt=%u",
             t->ids, t->route->name, t->job->n_recipients, t->txn.body_len,
             t->route->n_endpoints, t->route->tls, t->job->attempt);
    /* the message is signed (or not) before the first connection; then kick */
    t->dkim = dkim_prepare(t->ctx->dkim, t->ctx->loop, t->job, &t->txn, t->ids, &t->kick);
}

void task_destroy(task_t **p)
{
    task_t *t = *p;
    if (t == NULL)
        return;
    *p = NULL;
    loop_timer_stop(t->ctx->loop, &t->kick);
    resolver_cancel(&t->query);
    session_destroy(&t->session);
    codec_free(&t->env);
    zmq_msg_close(&t->body);
    dkim_prep_free(&t->dkim);
    free(t->rcpts);
    free(t);
}

uint64_t task_id(const task_t *t)
{
    return t->id;
}

const char *task_message_id(const task_t *t)
{
    return t->job->message_id;
}

/* ---- the result ---- */

static PB(DeliveryRecipientResult__Outcome) pb_outcome(outcome_t o)
{
    switch (o) {
    case OUTCOME_DELIVERED:
        return SENDARIX__V1__DELIVERY_RECIPIENT_RESULT__OUTCOME__DELIVERED;
    case OUTCOME_BOUNCED:
        return SENDARIX__V1__DELIVERY_RECIPIENT_RESULT__OUTCOME__BOUNCED;
    default:
        return SENDARIX__V1__DELIVERY_RECIPIENT_RESULT__OUTCOME__DEFERRED;
    }
}

static void publish(task_t *t, size_t i, PB(Status) * st)
{
    if (t->ctx->event == NULL)
        return;
    const session_rcpt_t *rc = &t->rcpts[i];
    PB(Attr) a[4];
    PB(Attr) *ap[4];
    const char *keys[4] = {"remote_ip", "tls_version", "tls_cipher", "route"};
    const char *vals[4] = {t->remote_ip, t->tls_version, t->tls_cipher, t->route->name};
    size_t na = 0;
    for (size_t k = 0; k < 4; k++) {
        if (vals[k] == NULL || *vals[k] == '\0')
            continue;
        PB(Attr) init = PB_INIT(ATTR);
        a[na] = init;
        a[na].key = (char *)keys[k];
        a[na].value = (char *)vals[k];
        ap[na] = &a[na];
        na++;
    }
    char session[24];
    snprintf(session, sizeof(session), "%" PRIx64, t->id);
    PB(Event) ev = PB_INIT(EVENT);
    ev.type = (char *)caps_outcome_name(rc->outcome);
    ev.message_id = t->job->message_id;
    ev.recipient = (char *)rc->address;
    ev.rcpt_index = t->job->recipients[i]->index;
    ev.sender = t->job->mail_from;
    ev.tenant = t->job->tenant;
    ev.reply = st;
    ev.attempt = t->job->attempt;
    ev.remote_host = t->remote_host;
    ev.session_id = session;
    ev.attrs = ap;
    ev.n_attrs = na;
    t->ctx->event(&ev, t->ctx->event_arg);
}

/* Every recipient has its outcome: report, log, hand the result over. */
static void finish(task_t *t)
{
    size_t n = t->job->n_recipients;
    for (size_t i = 0; i < n; i++) {
        if (t->rcpts[i].state != RCPT_DONE) {
            t->rcpts[i].state = RCPT_DONE;
            t->rcpts[i].outcome = caps_outcome(t->last.code);
            t->rcpts[i].reply = t->last;
        }
    }
    PB(Status) *st = xcalloc(n, sizeof(*st));
    PB(DeliveryRecipientResult) *rr = xcalloc(n, sizeof(*rr));
    PB(DeliveryRecipientResult) **rp = xcalloc(n, sizeof(*rp));
    size_t count[3] = {0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        session_rcpt_t *rc = &t->rcpts[i];
        PB(Status) sinit = PB_INIT(STATUS);
        st[i] = sinit;
        st[i].code = rc->reply.code;
        st[i].enhanced = rc->reply.enhanced;
        st[i].text = rc->reply.text;
        PB(DeliveryRecipientResult) rinit = PB_INIT(DELIVERY_RECIPIENT_RESULT);
        rr[i] = rinit;
        rr[i].index = t->job->recipients[i]->index;
        rr[i].outcome = pb_outcome(rc->outcome);
        rr[i].reply = &st[i];
        rp[i] = &rr[i];
        count[rc->outcome]++;
        publish(t, i, &st[i]);
    }
    const dlv_reply_t *shown = &t->rcpts[0].reply;
    char quoted[DLV_REPLY_TEXT_MAX + 64];
    log_quote(quoted, sizeof(quoted), shown->text, strlen(shown->text));
    log_info("event=delivery %s route=%s host=%s ip=%s tls=%s cipher=%s tries=%u delivered=%zu "
             "deferred=%zu bounced=%zu ms=%" PRIu64 " code=%u enh=%s reply=%s",
             t->ids, t->route->name, t->remote_host[0] ? t->remote_host : "-",
             t->remote_ip[0] ? t->remote_ip : "-", t->tls_version[0] ? t->tls_version : "none",
             t->tls_cipher[0] ? t->tls_cipher : "-", t->tries, count[OUTCOME_DELIVERED],
             count[OUTCOME_DEFERRED], count[OUTCOME_BOUNCED], clock_mono_ms() - t->started_ms,
             shown->code, shown->enhanced[0] ? shown->enhanced : "-", quoted);
    PB(DeliveryResult) res = PB_INIT(DELIVERY_RESULT);
    res.job_id = t->job->job_id;
    res.message_id = t->job->message_id;
    res.recipients = rp;
    res.n_recipients = n;
    res.remote_host = t->remote_host;
    res.remote_ip = t->remote_ip;
    res.tls_version = t->tls_version;
    res.tls_cipher = t->tls_cipher;
    res.route = t->route->name;
    task_done_fn done = t->done;
    void *arg = t->done_arg;
    done(t, &res, arg); /* may destroy t */
    free(st);
    free(rr);
    free(rp);
}

/* ---- sessions ---- */

static void note_session(task_t *t, session_t *s)
{
    snprintf(t->remote_host, sizeof(t->remote_host), "%s", session_host(s));
    snprintf(t->remote_ip, sizeof(t->remote_ip), "%s", session_ip(s));
    snprintf(t->tls_version, sizeof(t->tls_version), "%s", session_tls_version(s));
    snprintf(t->tls_cipher, sizeof(t->tls_cipher), "%s", session_tls_cipher(s));
}

static void start_session(task_t *t, const sock_addr_t *addr, int no_starttls);

static void on_ready(session_t *s, void *arg)
{
    task_t *t = arg;
    note_session(t, s);
    session_start(s, &t->txn);
}

static void on_txn_done(session_t *s, void *arg)
{
    task_t *t = arg;
    note_session(t, s);
    session_quit(&t->session);
    finish(t);
}

static void on_failed(session_t *s, session_fail_t kind, const dlv_reply_t *reply, void *arg)
{
    task_t *t = arg;
    note_session(t, s);
    t->last = *reply;
    session_destroy(&t->session);
    if (kind == SESSION_FAIL_TLS_RETRY && t->ai > 0) {
        /* opportunistic TLS that fails is no reason to give up: plaintext, same address */
        log_info("event=tls_fallback %s host=%s ip=%s reason=\"%s\"", t->ids, t->host,
                 t->remote_ip, reply->text);
        start_session(t, &t->addrs[t->ai - 1], 1);
        return;
    }
    next_address(t);
}

static const session_handlers_t task_session_handlers = {
    .on_ready = on_ready,
    .on_failed = on_failed,
    .on_txn_done = on_txn_done,
};

static void start_session(task_t *t, const sock_addr_t *addr, int no_starttls)
{
    session_params_t p;
    memset(&p, 0, sizeof(p));
    p.addr = *addr;
    snprintf(p.host, sizeof(p.host), "%s", t->host);
    p.helo = t->helo;
    p.tls = t->tls;
    p.no_starttls = no_starttls;
    p.tls_ctx = t->ctx->tls_ctx;
    p.auth_username = t->route->auth_username;
    p.auth_password = t->route->auth_password;
    p.connect_timeout_ms = t->ctx->connect_timeout_ms;
    p.command_timeout_ms = t->ctx->command_timeout_ms;
    p.data_timeout_ms = t->ctx->data_timeout_ms;
    p.log_ids = t->ids;
    t->tries++;
    t->session = session_new(t->ctx->loop, &p, &task_session_handlers, t);
    if (t->session == NULL) {
        char ip[SOCK_ADDR_MAX];
        dlv_reply_set(&t->last, 451, "4.4.1", "cannot connect to %s (%s): %s", t->host,
                      sock_addr_ip(addr, ip, sizeof(ip)), strerror(errno));
        snprintf(t->remote_host, sizeof(t->remote_host), "%s", t->host);
        snprintf(t->remote_ip, sizeof(t->remote_ip), "%s", ip);
        next_address(t);
    }
}

/* ---- endpoints and addresses ---- */

static void next_address(task_t *t)
{
    if (t->ai >= t->naddrs) {
        next_endpoint(t);
        return;
    }
    const sock_addr_t *a = &t->addrs[t->ai++];
    start_session(t, a, 0);
}

static void on_resolved(const sock_addr_t *addrs, size_t n, const char *err, void *arg)
{
    task_t *t = arg;
    t->query = NULL;
    if (n == 0) {
        dlv_reply_set(&t->last, 451, "4.4.3", "cannot resolve %s: %s", t->host, err);
        snprintf(t->remote_host, sizeof(t->remote_host), "%s", t->host);
        t->remote_ip[0] = '\0';
        log_info("event=resolve_failed %s host=%s err=\"%s\"", t->ids, t->host, err);
        next_endpoint(t);
        return;
    }
    memcpy(t->addrs, addrs, n * sizeof(*addrs));
    t->naddrs = n;
    t->ai = 0;
    next_address(t);
}

static void next_endpoint(task_t *t)
{
    if (t->route->kind == SENDARIX__V1__DELIVERY_ROUTE__KIND__MX) {
        dlv_reply_set(&t->last, 451, "4.4.3", "MX delivery not available yet");
        finish(t);
        return;
    }
    while (t->ep < t->route->n_endpoints) {
        const PB(DeliveryEndpoint) *e = t->route->endpoints[t->ep++];
        t->naddrs = t->ai = 0;
        if (e == NULL || e->host == NULL || e->port == 0 || e->port > 65535 ||
            strlen(e->host) >= sizeof(t->host)) {
            dlv_reply_set(&t->last, 451, "4.4.0", "route %s has a malformed endpoint",
                          t->route->name);
            continue;
        }
        snprintf(t->host, sizeof(t->host), "%s", e->host);
        t->port = e->port;
        if (sock_addr_parse(e->host, e->port, &t->addrs[0]) == 0) {
            t->naddrs = 1;
            next_address(t);
            return;
        }
        if (!address_domain_valid(e->host, 0)) {
            dlv_reply_set(&t->last, 451, "4.4.0", "route %s has a malformed endpoint host",
                          t->route->name);
            continue;
        }
        t->query = resolver_lookup(t->ctx->resolver, e->host, e->port, on_resolved, t);
        return;
    }
    finish(t);
}
