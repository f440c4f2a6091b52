/*
 * delivery_task: targets, failover, policies and the result of one task.
 *
 * A target is what the task connects to next: a route endpoint, or an MX
 * host (the domain itself for an implicit MX). Each target gets its TLS
 * policy, then either a kept connection from the pool or a lookup of its
 * addresses, which are tried in order. Everything tried, and everything
 * skipped on purpose, becomes one attempt in the result.
 */
#include "delivery_task.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"
#include "delivery_mx.h"
#include "delivery_reason.h"
#include "delivery_session.h"
#include "ipc/codec.h"
#include "mail/address.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TASK_RCPTS_MAX 2000 /* recipients in one task */
#define TASK_TRIES_MAX 10   /* connections one task opens at most; the rest waits for a retry */
#define TASK_LABEL_MAX (SESSION_HOST_MAX + 8)
#define TASK_ATTRS_MAX 12
/* added to the TLS policy in a pool key: an implicit-TLS connection is never shared with
 * a STARTTLS or plaintext one to the same host and port */
#define TASK_KEY_IMPLICIT_TLS 8

typedef struct task_attempt {
    char endpoint[TASK_LABEL_MAX];
    char ip[SOCK_ADDR_MAX];
    dlv_reply_t status;
    int ok;
    uint64_t started_ms;
    uint64_t ms;
} task_attempt_t;

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
    tls_policy_t route_tls;
    const char *helo;
    int is_mx;
    sock_addr_t src;
    int has_src;
    unsigned max_uses; /* messages per connection; <= 1: close after each */

    /* MX routes */
    char domain[MX_NAME_MAX];
    resolver_query_t *mx_query;
    policy_wait_t *sts_wait;
    int mx_done, sts_done;
    dns_status_t mx_status;
    char mx_err[160];
    mx_host_t *hosts;
    size_t nhosts;
    size_t hi;         /* next MX host */
    int implicit_mx;
    sts_policy_t sts;  /* applies when sts_mode != NONE */
    char sts_source[64];

    /* the current target */
    size_t ep;         /* next route endpoint */
    char host[SESSION_HOST_MAX];
    char label[TASK_LABEL_MAX]; /* endpoint name or MX host, for attempts */
    char mx_host[SESSION_HOST_MAX];
    unsigned port;
    tls_policy_t tls;
    int implicit_tls; /* the endpoint speaks TLS from the first byte */
    const char *tls_name;
    char key[POOL_KEY_MAX + 1];
    int skip_pool;     /* the kept connection for this target just failed */
    int target_tried;  /* some target got as far as a lookup or a connection */
    sock_addr_t addrs[RESOLVE_ADDRS_MAX];
    size_t naddrs;
    size_t ai;         /* next address of the current target */
    resolver_query_t *query;
    session_t *session;
    unsigned tries;

    task_attempt_t *attempts; /* grown as attempts are made, up to TASK_ATTEMPTS_MAX */
    size_t nattempts, attempts_cap;
    size_t attempts_dropped;
    int cur_attempt;   /* index of the running attempt, -1 none */

    dlv_reply_t last;  /* the latest failure, for recipients nobody answered */
    int tried;         /* some failure more telling than a refusal happened */
    char remote_host[SESSION_HOST_MAX];
    char remote_ip[SOCK_ADDR_MAX];
    char tls_version[32];
    char tls_cipher[96];
    char final_endpoint[TASK_LABEL_MAX];
    char final_mx[SESSION_HOST_MAX];
    char source_ip[SOCK_ADDR_MAX];
    int tls_verified;
    const char *final_tls_name;
    uint64_t started_ms;
    loop_timer_t kick;
    dkim_prep_t *dkim; /* the signed copy of the message, while the task runs */
};

static void next_target(task_t *t);
static void next_address(task_t *t);
static void finish(task_t *t);

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
    const PB(DeliveryRoute) *r = task->route;
    if ((r->name && has_control(r->name)) || (r->source_ip && has_control(r->source_ip)) ||
        (r->provider && has_control(r->provider)) || (r->tls_reason && has_control(r->tls_reason)))
        return "malformed route";
    return NULL;
}

int task_tls_listed(char *const *patterns, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (mx_pattern_matches(patterns[i], name))
            return 1;
    return 0;
}

void task_pool_key(char *out, size_t size, int mx, const char *host, unsigned port,
                   const char *source, int tls, const char *helo, const char *user)
{
    snprintf(out, size, "%s|%s|%u|%s|%d|%s|%s", mx ? "mx" : "smarthost", host, port,
             source && *source ? source : "-", tls, helo ? helo : "", user ? user : "");
}

/* ---- life ---- */

static void on_kick(loop_t *loop, void *arg);

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
    /* the message bytes as they go out in DATA */
    t->txn.body = zmq_msg_data(&t->body);
    t->txn.body_len = zmq_msg_size(&t->body);
    t->txn.rcpts = t->rcpts;
    t->txn.nrcpt = t->job->n_recipients;
    t->route_tls = caps_tls_policy(t->route->tls);
    t->is_mx = t->route->kind == SENDARIX__V1__DELIVERY_ROUTE__KIND__MX;
    t->max_uses = t->route->messages_per_connection;
    t->helo = t->route->helo && *t->route->helo && address_domain_valid(t->route->helo, 0)
                  ? t->route->helo
                  : ctx->helo;
    t->cur_attempt = -1;
    t->final_tls_name = "";
    dlv_reply_set(&t->last, 451, "4.4.0", "no endpoint could be tried");
    t->last.reason = REASON_CONFIG;
    loop_timer_init(&t->kick, on_kick, t);
    return t;
}

void task_destroy(task_t **p)
{
    task_t *t = *p;
    if (t == NULL)
        return;
    *p = NULL;
    loop_timer_stop(t->ctx->loop, &t->kick);
    resolver_cancel(&t->query);
    resolver_cancel(&t->mx_query);
    policy_cancel(&t->sts_wait);
    session_destroy(&t->session);
    codec_free(&t->env);
    zmq_msg_close(&t->body);
    dkim_prep_free(&t->dkim);
    sts_policy_free(&t->sts);
    free(t->hosts);
    free(t->rcpts);
    free(t->attempts);
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

/* ---- attempts ---- */

static int attempt_begin(task_t *t, const char *ip)
{
    if (t->nattempts >= TASK_ATTEMPTS_MAX) {
        t->attempts_dropped++;
        return -1;
    }
    if (t->nattempts == t->attempts_cap) {
        /* most tasks make one attempt: a task is not born with room for all */
        size_t cap = t->attempts_cap ? t->attempts_cap * 2 : 2;
        if (cap > TASK_ATTEMPTS_MAX)
            cap = TASK_ATTEMPTS_MAX;
        t->attempts = xrealloc(t->attempts, cap * sizeof(*t->attempts));
        t->attempts_cap = cap;
    }
    task_attempt_t *a = &t->attempts[t->nattempts];
    memset(a, 0, sizeof(*a));
    sx_strlcpy(a->endpoint, t->label, sizeof(a->endpoint));
    sx_strlcpy(a->ip, ip, sizeof(a->ip));
    a->started_ms = clock_mono_ms();
    return (int)t->nattempts++;
}

static void attempt_end(task_t *t, int i, const dlv_reply_t *status, int ok)
{
    if (i < 0 || (size_t)i >= t->nattempts)
        return;
    task_attempt_t *a = &t->attempts[i];
    a->status = *status;
    a->ok = ok;
    a->ms = clock_mono_ms() - a->started_ms;
}

/* Something not tried on purpose (address class, MTA-STS, source family): an attempt of 0 ms. */
static void skip(task_t *t, const char *ip, const dlv_reply_t *why)
{
    char quoted[DLV_REPLY_TEXT_MAX + 64];
    log_info("event=skipped %s target=%s ip=%s code=%u enh=%s reason=%s why=%s", t->ids, t->label,
             ip && *ip ? ip : "-", why->code, why->enhanced, reason_of(why),
             log_quote(quoted, sizeof(quoted), why->text, strlen(why->text)));
    attempt_end(t, attempt_begin(t, ip), why, 0);
    if (!t->tried)
        t->last = *why;
}

/* A real failure (DNS, connect, greeting...): it says more than any refusal. */
static void failed(task_t *t, const dlv_reply_t *why)
{
    t->last = *why;
    t->tried = 1;
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

static void publish(task_t *t, size_t i, PB(Status) * st, const char *reason)
{
    if (t->ctx->event == NULL)
        return;
    const session_rcpt_t *rc = &t->rcpts[i];
    char attempt[16];
    snprintf(attempt, sizeof(attempt), "%zu", t->nattempts + t->attempts_dropped);
    PB(Attr) a[TASK_ATTRS_MAX];
    PB(Attr) *ap[TASK_ATTRS_MAX];
    const char *keys[] = {"remote_ip", "tls_version", "tls_cipher", "route",
                          "reason",    "endpoint",    "mx_host",    "attempt",
                          "source_ip", "tls_policy",  "tls_verified", "provider"};
    const char *vals[] = {t->remote_ip,      t->tls_version,   t->tls_cipher,
                          t->route->name,    reason,           t->final_endpoint,
                          t->final_mx,       attempt,          t->source_ip,
                          t->final_tls_name, t->tls_verified ? "true" : "",
                          t->route->provider};
    size_t na = 0;
    for (size_t k = 0; k < TASK_ATTRS_MAX; k++) {
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
    resolver_cancel(&t->query);
    resolver_cancel(&t->mx_query);
    policy_cancel(&t->sts_wait);
    if (t->final_endpoint[0] == '\0' && t->target_tried) {
        /* nobody took the message: the last target tried gave the answer */
        sx_strlcpy(t->final_endpoint, t->label, sizeof(t->final_endpoint));
        sx_strlcpy(t->final_mx, t->mx_host, sizeof(t->final_mx));
        t->final_tls_name = t->tls_name ? t->tls_name : "";
    }
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
    size_t na = t->nattempts;
    PB(Status) *ast = xcalloc(na ? na : 1, sizeof(*ast));
    PB(DeliveryEndpointAttempt) *at = xcalloc(na ? na : 1, sizeof(*at));
    PB(DeliveryEndpointAttempt) **atp = xcalloc(na ? na : 1, sizeof(*atp));
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
        rr[i].reason = rc->outcome == OUTCOME_DELIVERED ? "" : (char *)reason_of(&rc->reply);
        rp[i] = &rr[i];
        count[rc->outcome]++;
        publish(t, i, &st[i], rr[i].reason);
    }
    for (size_t i = 0; i < na; i++) {
        task_attempt_t *a = &t->attempts[i];
        PB(Status) sinit = PB_INIT(STATUS);
        ast[i] = sinit;
        ast[i].code = a->status.code;
        ast[i].enhanced = a->status.enhanced;
        ast[i].text = a->status.text;
        PB(DeliveryEndpointAttempt) ainit = PB_INIT(DELIVERY_ENDPOINT_ATTEMPT);
        at[i] = ainit;
        at[i].endpoint = a->endpoint;
        at[i].ip = a->ip;
        at[i].status = &ast[i];
        at[i].ok = a->ok;
        at[i].ms = a->ms;
        atp[i] = &at[i];
    }
    const dlv_reply_t *shown = &t->rcpts[0].reply;
    char quoted[DLV_REPLY_TEXT_MAX + 64];
    log_quote(quoted, sizeof(quoted), shown->text, strlen(shown->text));
    log_info("event=delivery %s route=%s host=%s ip=%s mx_host=%s src=%s tls=%s cipher=%s "
             "tls_policy=%s verified=%d tries=%u attempts=%zu delivered=%zu deferred=%zu "
             "bounced=%zu ms=%" PRIu64 " code=%u enh=%s reason=%s reply=%s",
             t->ids, t->route->name, t->remote_host[0] ? t->remote_host : "-",
             t->remote_ip[0] ? t->remote_ip : "-", t->final_mx[0] ? t->final_mx : "-",
             t->source_ip[0] ? t->source_ip : "-", t->tls_version[0] ? t->tls_version : "none",
             t->tls_cipher[0] ? t->tls_cipher : "-",
             t->final_tls_name[0] ? t->final_tls_name : "-", t->tls_verified, t->tries,
             t->nattempts + t->attempts_dropped, count[OUTCOME_DELIVERED],
             count[OUTCOME_DEFERRED], count[OUTCOME_BOUNCED], clock_mono_ms() - t->started_ms,
             shown->code, shown->enhanced[0] ? shown->enhanced : "-",
             rr[0].reason[0] ? rr[0].reason : "-", quoted);
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
    res.endpoint = t->final_endpoint;
    res.mx_host = t->final_mx;
    res.source_ip = t->source_ip;
    res.attempts = atp;
    res.n_attempts = na;
    res.tls_verified = t->tls_verified;
    res.tls_policy = (char *)t->final_tls_name;
    task_done_fn done = t->done;
    void *arg = t->done_arg;
    done(t, &res, arg); /* may destroy t */
    free(st);
    free(rr);
    free(rp);
    free(ast);
    free(at);
    free(atp);
}

/* Every recipient gets the same local outcome, now (nothing was sent). */
static void finish_all(task_t *t, unsigned code, const char *enh, const char *reason,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void finish_all(task_t *t, unsigned code, const char *enh, const char *reason,
                       const char *fmt, ...)
{
    char text[DLV_REPLY_TEXT_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    dlv_reply_set(&t->last, code, enh, "%s", text);
    t->last.reason = reason;
    finish(t);
}

/* ---- sessions ---- */

static void note_session(task_t *t, session_t *s)
{
    sx_strlcpy(t->remote_host, session_host(s), sizeof(t->remote_host));
    sx_strlcpy(t->remote_ip, session_ip(s), sizeof(t->remote_ip));
    sx_strlcpy(t->tls_version, session_tls_version(s), sizeof(t->tls_version));
    sx_strlcpy(t->tls_cipher, session_tls_cipher(s), sizeof(t->tls_cipher));
}

/* ---- kept connections ---- */

static void idle_failed(session_t *s, session_fail_t kind, const dlv_reply_t *r, void *arg)
{
    pool_t *pool = arg;
    (void)kind;
    log_info("event=kept_connection_closed host=%s ip=%s code=%u reason=\"%s\"", session_host(s),
             session_ip(s), r->code, r->text);
    pool_forget(pool, s);
    session_destroy(&s);
}

static const session_handlers_t idle_handlers = {.on_failed = idle_failed};

/* After a message: keep the connection for the next one, or say goodbye. */
static void release_session(task_t *t)
{
    session_t *s = t->session;
    t->session = NULL;
    pool_t *pool = t->ctx->pool;
    if (pool && session_reusable(s) &&
        pool_put(pool, t->key, s, session_txn_count(s), t->max_uses, t->ctx->idle_timeout_ms)) {
        session_set_handlers(s, &idle_handlers, pool);
        log_debug("event=connection_kept %s host=%s ip=%s used=%u max=%u", t->ids, t->host,
                  session_ip(s), session_txn_count(s), t->max_uses);
        return;
    }
    session_quit(&s);
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
    attempt_end(t, t->cur_attempt, session_last_reply(s), 1);
    t->cur_attempt = -1;
    sx_strlcpy(t->final_endpoint, t->label, sizeof(t->final_endpoint));
    sx_strlcpy(t->final_mx, t->mx_host, sizeof(t->final_mx));
    sx_strlcpy(t->source_ip, session_local_ip(s), sizeof(t->source_ip));
    t->tls_verified = session_tls_verified(s);
    t->final_tls_name = t->tls_name;
    release_session(t);
    finish(t);
}

static void on_failed(session_t *s, session_fail_t kind, const dlv_reply_t *reply, void *arg)
{
    task_t *t = arg;
    note_session(t, s);
    dlv_reply_t r = *reply;
    attempt_end(t, t->cur_attempt, &r, 0);
    t->cur_attempt = -1;
    session_destroy(&t->session);
    if (kind == SESSION_FAIL_STALE) {
        /* a kept connection the server closed meanwhile: same target, new connection */
        log_info("event=kept_connection_stale %s host=%s ip=%s", t->ids, t->host, t->remote_ip);
        t->skip_pool = 1;
        if (t->is_mx)
            t->hi--;
        else
            t->ep--;
        next_target(t);
        return;
    }
    failed(t, &r);
    if (kind == SESSION_FAIL_TLS_RETRY && t->tls == POLICY_TLS_OPPORTUNISTIC && t->ai > 0) {
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

/* A kept connection for the current target, if the pool has one that still works. */
static int take_kept(task_t *t)
{
    if (t->ctx->pool == NULL || t->skip_pool) {
        t->skip_pool = 0;
        return 0;
    }
    session_t *s;
    while ((s = pool_take(t->ctx->pool, t->key, NULL)) != NULL) {
        if (!session_reusable(s)) {
            session_destroy(&s);
            continue;
        }
        t->session = s;
        session_set_handlers(s, &task_session_handlers, t);
        session_set_log_ids(s, t->ids);
        note_session(t, s);
        t->cur_attempt = attempt_begin(t, session_ip(s));
        t->tries++;
        log_debug("event=connection_reused %s host=%s ip=%s used=%u", t->ids, t->host,
                 session_ip(s), session_txn_count(s));
        session_start(s, &t->txn);
        return 1;
    }
    return 0;
}

static void start_session(task_t *t, const sock_addr_t *addr, int no_starttls)
{
    session_params_t p;
    memset(&p, 0, sizeof(p));
    p.addr = *addr;
    if (t->has_src) {
        p.src = t->src;
        p.has_src = 1;
    }
    sx_strlcpy(p.host, t->host, sizeof(p.host));
    p.helo = t->helo;
    p.tls = t->tls;
    p.implicit_tls = t->implicit_tls;
    p.no_starttls = no_starttls;
    p.tls_ctx = t->ctx->tls_ctx;
    p.auth_username = t->route->auth_username;
    p.auth_password = t->route->auth_password;
    p.connect_timeout_ms = t->ctx->connect_timeout_ms;
    p.command_timeout_ms = t->ctx->command_timeout_ms;
    /* a smart host that does not greet is taken as down quickly, so failover
     * is fast; an MX host may delay its greeting on purpose */
    p.greeting_timeout_ms = t->is_mx ? t->ctx->command_timeout_ms : t->ctx->greeting_timeout_ms;
    p.data_timeout_ms = t->ctx->data_timeout_ms;
    p.log_ids = t->ids;
    char ip[SOCK_ADDR_MAX];
    sock_addr_ip(addr, ip, sizeof(ip));
    t->tries++;
    t->cur_attempt = attempt_begin(t, ip);
    t->session = session_new(t->ctx->loop, &p, &task_session_handlers, t);
    if (t->session == NULL) {
        int e = errno;
        dlv_reply_t r;
        if (t->has_src && (e == EADDRNOTAVAIL || e == EADDRINUSE || e == EINVAL)) {
            char src[SOCK_ADDR_MAX];
            dlv_reply_set(&r, 451, "4.4.4", "cannot connect from source address %s to %s (%s): %s",
                          sock_addr_ip(&t->src, src, sizeof(src)), t->host, ip, strerror(e));
            r.reason = REASON_CONFIG;
        } else {
            dlv_reply_set(&r, 451, "4.4.1", "cannot connect to %s (%s): %s", t->host, ip,
                          strerror(e));
        }
        attempt_end(t, t->cur_attempt, &r, 0);
        t->cur_attempt = -1;
        failed(t, &r);
        sx_strlcpy(t->remote_host, t->host, sizeof(t->remote_host));
        sx_strlcpy(t->remote_ip, ip, sizeof(t->remote_ip));
        next_address(t);
    }
}

/* ---- addresses ---- */

static void next_address(task_t *t)
{
    if (t->tries >= TASK_TRIES_MAX) {
        log_info("event=tries_exhausted %s tries=%u", t->ids, t->tries);
        finish(t);
        return;
    }
    while (t->ai < t->naddrs) {
        const sock_addr_t *a = &t->addrs[t->ai++];
        char ip[SOCK_ADDR_MAX];
        sock_addr_ip(a, ip, sizeof(ip));
        addr_class_t cls = mx_addr_class(a);
        if (t->is_mx && !t->route->allow_private && cls != ADDR_PUBLIC) {
            dlv_reply_t r;
            dlv_reply_set(&r, 451, "4.4.4", "%s has a %s address (%s): not allowed for MX delivery",
                          t->host, mx_addr_class_name(cls), ip);
            r.reason = REASON_CONFIG;
            skip(t, ip, &r);
            continue;
        }
        if (t->has_src && t->src.ss.ss_family != a->ss.ss_family) {
            char src[SOCK_ADDR_MAX];
            dlv_reply_t r;
            dlv_reply_set(&r, 451, "4.4.4", "source address %s cannot reach %s (%s)",
                          sock_addr_ip(&t->src, src, sizeof(src)), t->host, ip);
            r.reason = REASON_CONFIG;
            skip(t, ip, &r);
            continue;
        }
        start_session(t, a, 0);
        return;
    }
    next_target(t);
}

static void on_resolved(dns_status_t st, const sock_addr_t *addrs, size_t n, const char *err,
                        void *arg)
{
    task_t *t = arg;
    t->query = NULL;
    if (n == 0) {
        if (t->implicit_mx && (st == DNS_NXDOMAIN || st == DNS_NODATA)) {
            /* no MX and no address: nowhere to deliver, ever (RFC 5321 5.1) */
            finish_all(t, 550, "5.1.2", REASON_DNS, "%s has no MX record and no address",
                       t->domain);
            return;
        }
        dlv_reply_t r;
        dlv_reply_set(&r, 451, "4.4.3", "cannot resolve %s: %s", t->host, err);
        r.reason = REASON_DNS;
        attempt_end(t, attempt_begin(t, ""), &r, 0);
        failed(t, &r);
        sx_strlcpy(t->remote_host, t->host, sizeof(t->remote_host));
        t->remote_ip[0] = '\0';
        log_info("event=resolve_failed %s host=%s status=%s err=\"%s\"", t->ids, t->host,
                 dns_status_name(st), err);
        next_target(t);
        return;
    }
    memcpy(t->addrs, addrs, n * sizeof(*addrs));
    t->naddrs = n;
    t->ai = 0;
    next_address(t);
}

/* ---- targets: route endpoints ---- */

static void target_key(task_t *t)
{
    char src[SOCK_ADDR_MAX] = "";
    if (t->has_src)
        sock_addr_ip(&t->src, src, sizeof(src));
    int tls = (int)t->tls + (t->implicit_tls ? TASK_KEY_IMPLICIT_TLS : 0);
    task_pool_key(t->key, sizeof(t->key), t->is_mx, t->host, t->port, src, tls, t->helo,
                  t->route->auth_username);
}

static void next_endpoint(task_t *t)
{
    while (t->ep < t->route->n_endpoints) {
        const PB(DeliveryEndpoint) *e = t->route->endpoints[t->ep++];
        t->naddrs = t->ai = 0;
        if (e == NULL || e->host == NULL || e->port == 0 || e->port > 65535 ||
            strlen(e->host) >= sizeof(t->host)) {
            dlv_reply_set(&t->last, 451, "4.4.0", "route %s has a malformed endpoint",
                          t->route->name);
            t->last.reason = REASON_CONFIG;
            continue;
        }
        sx_strlcpy(t->host, e->host, sizeof(t->host));
        t->port = e->port;
        if (e->name && *e->name && !has_control(e->name))
            sx_strlcpy(t->label, e->name, sizeof(t->label));
        else
            snprintf(t->label, sizeof(t->label), strchr(e->host, ':') ? "[%s]:%u" : "%s:%u",
                     e->host, e->port);
        t->mx_host[0] = '\0';
        t->tls = t->route_tls;
        t->implicit_tls = e->implicit_tls;
        /* an implicit-TLS endpoint always encrypts (router refuses "none" with one) */
        if (t->implicit_tls && t->tls == POLICY_TLS_NONE)
            t->tls = POLICY_TLS_OPPORTUNISTIC;
        t->tls_name = t->tls == POLICY_TLS_REQUIRED
                          ? (t->route->tls_reason && strcmp(t->route->tls_reason, "provider") == 0
                                 ? "provider"
                                 : "required")
                      : t->tls == POLICY_TLS_NONE ? "none"
                                                  : "opportunistic";
        target_key(t);
        t->target_tried = 1;
        if (take_kept(t))
            return;
        if (sock_addr_parse(e->host, e->port, &t->addrs[0]) == 0) {
            t->naddrs = 1;
            next_address(t);
            return;
        }
        if (!address_domain_valid(e->host, 0)) {
            dlv_reply_set(&t->last, 451, "4.4.0", "route %s has a malformed endpoint host",
                          t->route->name);
            t->last.reason = REASON_CONFIG;
            continue;
        }
        t->query = resolver_lookup(t->ctx->resolver, e->host, e->port, on_resolved, t);
        return;
    }
    finish(t);
}

/* ---- targets: MX hosts ---- */

/* The TLS policy for MX host h of the task's domain; NULL when h may not be used at all. */
static const char *mx_tls(task_t *t, const mx_host_t *h, tls_policy_t *tls)
{
    if (t->sts.mode == STS_MODE_ENFORCE) {
        if (!sts_mx_matches(&t->sts, h->name))
            return NULL;
        *tls = POLICY_TLS_REQUIRED;
        return "mta-sts";
    }
    if (t->route_tls == POLICY_TLS_REQUIRED) {
        *tls = POLICY_TLS_REQUIRED;
        return t->route->tls_reason && strcmp(t->route->tls_reason, "provider") == 0 ? "provider"
                                                                                    : "required";
    }
    if (task_tls_listed(t->ctx->require_tls, t->ctx->nrequire_tls, t->domain) ||
        task_tls_listed(t->ctx->require_tls, t->ctx->nrequire_tls, h->name)) {
        *tls = POLICY_TLS_REQUIRED;
        return "provider";
    }
    *tls = t->route_tls;
    return t->route_tls == POLICY_TLS_NONE ? "none" : "opportunistic";
}

static void set_mx_target(task_t *t, const mx_host_t *h)
{
    sx_strlcpy(t->host, h->name, sizeof(t->host));
    sx_strlcpy(t->label, h->name, sizeof(t->label));
    sx_strlcpy(t->mx_host, h->name, sizeof(t->mx_host));
    t->port = t->ctx->mx_port;
    t->implicit_tls = 0; /* MX hosts take STARTTLS on port 25 */
    t->naddrs = t->ai = 0;
}

static void next_mx_host(task_t *t)
{
    while (t->hi < t->nhosts) {
        const mx_host_t *h = &t->hosts[t->hi++];
        set_mx_target(t, h);
        t->tls_name = mx_tls(t, h, &t->tls);
        if (t->tls_name == NULL) {
            dlv_reply_t r;
            dlv_reply_set(&r, 451, "4.7.5", "MX host %s is not in the MTA-STS policy of %s",
                          h->name, t->domain);
            r.reason = REASON_TLS;
            skip(t, "", &r);
            t->target_tried = 1;
            continue;
        }
        if (t->sts.mode == STS_MODE_TESTING && !sts_mx_matches(&t->sts, h->name))
            log_info("event=mta_sts_testing %s domain=%s mx_host=%s policy_id=%s would=skip",
                     t->ids, t->domain, h->name, t->sts.id);
        target_key(t);
        t->target_tried = 1;
        if (take_kept(t))
            return;
        t->query = resolver_addrs(t->ctx->resolver, h->name, t->port, on_resolved, t);
        return;
    }
    finish(t);
}

static void next_target(task_t *t)
{
    if (t->is_mx)
        next_mx_host(t);
    else
        next_endpoint(t);
}

/*
 * Within each preference, a host with a kept connection goes first: the
 * order among equals is random anyway, and reuse saves a handshake.
 */
static void prefer_kept(task_t *t)
{
    if (t->ctx->pool == NULL || pool_count(t->ctx->pool) == 0)
        return;
    for (size_t start = 0; start < t->nhosts;) {
        size_t end = start + 1;
        while (end < t->nhosts && t->hosts[end].pref == t->hosts[start].pref)
            end++;
        for (size_t i = start + 1; i < end; i++) {
            set_mx_target(t, &t->hosts[i]);
            tls_policy_t tls;
            const char *name = mx_tls(t, &t->hosts[i], &tls);
            if (name == NULL)
                continue;
            t->tls = tls;
            target_key(t);
            if (pool_has(t->ctx->pool, t->key)) {
                mx_host_t h = t->hosts[i];
                memmove(&t->hosts[start + 1], &t->hosts[start], (i - start) * sizeof(h));
                t->hosts[start] = h;
                break;
            }
        }
        start = end;
    }
}

/* MX answer and policy both in: decide where to go. */
static void mx_plan(task_t *t)
{
    if (!t->mx_done || !t->sts_done)
        return;
    if (t->mx_status == DNS_NODATA) {
        t->hosts = xcalloc(1, sizeof(*t->hosts));
        mx_host_set(&t->hosts[0], t->domain, 0);
        t->nhosts = 1;
        t->implicit_mx = 1;
    }
    log_info("event=mx_plan %s domain=%s hosts=%zu implicit=%d mta_sts=%s sts_source=\"%s\"",
             t->ids, t->domain, t->nhosts, t->implicit_mx, sts_mode_name(t->sts.mode),
             t->sts_source);
    prefer_kept(t);
    next_mx_host(t);
}

static void on_mx(dns_status_t st, const mx_host_t *mx, size_t n, const char *err, void *arg)
{
    task_t *t = arg;
    t->mx_query = NULL;
    t->mx_done = 1;
    t->mx_status = st;
    sx_strlcpy(t->mx_err, err, sizeof(t->mx_err));
    switch (st) {
    case DNS_NXDOMAIN:
        finish_all(t, 550, "5.1.2", REASON_DNS, "domain %s does not exist", t->domain);
        return;
    case DNS_TEMPFAIL:
        finish_all(t, 451, "4.4.3", REASON_DNS, "MX lookup for %s failed: %s", t->domain, err);
        return;
    case DNS_NODATA:
        break;
    case DNS_OK:
        if (mx_is_null(mx, n)) {
            finish_all(t, 556, "5.1.10", REASON_DNS,
                       "domain %s accepts no mail (null MX, RFC 7505)", t->domain);
            return;
        }
        t->hosts = xcalloc(n, sizeof(*t->hosts));
        memcpy(t->hosts, mx, n * sizeof(*mx));
        t->nhosts = mx_drop_null(t->hosts, n);
        if (t->nhosts == 0) {
            finish_all(t, 556, "5.1.10", REASON_DNS, "domain %s accepts no mail (null MX)",
                       t->domain);
            return;
        }
        mx_order(t->hosts, t->nhosts, t->ctx->rand_state);
        break;
    }
    mx_plan(t);
}

static void on_sts(const sts_policy_t *p, const char *source, void *arg)
{
    task_t *t = arg;
    t->sts_wait = NULL;
    t->sts_done = 1;
    sx_strlcpy(t->sts_source, source, sizeof(t->sts_source));
    if (p && p->mode != STS_MODE_NONE)
        sts_policy_copy(&t->sts, p);
    mx_plan(t);
}

static void mx_begin(task_t *t)
{
    const char *d = t->job->domain && *t->job->domain ? t->job->domain : NULL;
    if (d == NULL) {
        const char *at = strrchr(t->rcpts[0].address, '@');
        d = at ? at + 1 : "";
    }
    mx_host_t h;
    if (*d == '[') {
        finish_all(t, 451, "4.4.4", REASON_CONFIG,
                   "address literal %s: not delivered through MX routes", d);
        return;
    }
    if (mx_host_set(&h, d, 0) < 0 || !address_domain_valid(h.name, 0)) {
        finish_all(t, 451, "4.4.4", REASON_CONFIG, "cannot look up the domain %s", d);
        return;
    }
    sx_strlcpy(t->domain, h.name, sizeof(t->domain));
    t->mx_query = resolver_mx(t->ctx->resolver, t->domain, on_mx, t);
    if (t->ctx->policy)
        t->sts_wait = policy_lookup(t->ctx->policy, t->domain, t->route->allow_private, on_sts, t);
    else
        t->sts_done = 1;
}

static void on_kick(loop_t *loop, void *arg)
{
    task_t *t = arg;
    (void)loop;
    const char *src = t->route->source_ip;
    if (src && *src) {
        if (sock_addr_parse(src, 0, &t->src) < 0) {
            finish_all(t, 451, "4.4.4", REASON_CONFIG,
                       "route %s: source address \"%s\" is not an IP address", t->route->name,
                       src);
            return;
        }
        t->has_src = 1;
    }
    if (t->is_mx)
        mx_begin(t);
    else
        next_endpoint(t);
}

void task_start(task_t *t)
{
    t->started_ms = clock_mono_ms();
    log_info("event=task_start %s route=%s kind=%s rcpts=%zu size=%zu endpoints=%zu tls=%s "
             "src=%s per_connection=%u attempt=%u",
             t->ids, t->route->name, t->is_mx ? "mx" : "smarthost", t->job->n_recipients,
             t->txn.body_len, t->route->n_endpoints, t->route->tls,
             t->route->source_ip && *t->route->source_ip ? t->route->source_ip : "-",
             t->max_uses, t->job->attempt);
    /* the message is signed (or not) before the first connection; then kick */
    t->dkim = dkim_prepare(t->ctx->dkim, t->ctx->loop, t->job, &t->txn, t->ids, &t->kick);
}
