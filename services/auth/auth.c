/*
 * auth: the sendarix-auth daemon. Owns credentials, tenants, sending
 * domains and the day counters of the rate limits in its LMDB store and
 * answers on its bus server (bus.auth): AuthLoginVerify and AuthRateCheck
 * from ingress, and the management requests from sendarixctl. This file
 * holds main, the config table, the bus glue and the timer that writes
 * changed day counters (at most once a second); what the answers are is
 * auth_api/auth_manage/auth_verify/auth_dkim_api, the store is
 * auth_store, and slow hashes, token checks and DKIM key generation run on
 * the auth_worker pool. The DNS lookups of AuthDomainVerify run on the
 * loop (auth_dns) and are answered when the last one is back.
 */
#include "auth_api.h"
#include "auth_dns.h"
#include "auth_jwt.h"
#include "auth_store.h"
#include "auth_worker.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"
#include "ipc/service.h"

#include <openssl/crypto.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RATE_FLUSH_MS 1000 /* day counters are written at most this often */

typedef struct auth_conf {
    long long scrypt_ln;
    long long scrypt_r;
    long long scrypt_p;
    uint64_t cache_ttl;
    long long cache_max;
    long long hash_threads;
    long long hash_queue_max;
    long long lockout_failures;
    uint64_t lockout_window;
    uint64_t lockout_duration;
    long long lockout_table_max;
    long long rate_table_max;
    auth_jwt_issuers_t *oauth_issuers;
    char *resolver;
} auth_conf_t;

/* clang-format off */
#define F(name, type, def, min, max, doc) \
    {#name, type, offsetof(auth_conf_t, name), def, min, max, 0, NULL, NULL, doc}
#define C(name, parse, release, doc) \
    {#name, CONF_CUSTOM, offsetof(auth_conf_t, name), NULL, 0, 0, 0, parse, release, doc}
/* clang-format on */

static const conf_field_t auth_conf_table[] = {
    F(scrypt_ln, CONF_INT, "15", AUTH_SCRYPT_LN_MIN, AUTH_SCRYPT_LN_MAX,
      "scrypt cost of new password hashes: N = 2^scrypt_ln"),
    F(scrypt_r, CONF_INT, "8", 1, AUTH_SCRYPT_R_MAX, "scrypt block size of new hashes"),
    F(scrypt_p, CONF_INT, "1", 1, AUTH_SCRYPT_P_MAX, "scrypt parallelism of new hashes"),
    F(cache_ttl, CONF_DURATION, "5m", 0, 86400000,
      "how long a verified login skips the hash; 0 turns the cache off"),
    F(cache_max, CONF_INT, "10000", 0, 1000000, "verified logins kept; the oldest goes first"),
    F(hash_threads, CONF_INT, "2", 0, AUTH_WORKER_THREADS_MAX,
      "threads that run password hashes; 0 runs them on the loop thread"),
    /* 64 waiting at ~7 hashes a second per thread (ln=15): a few seconds, inside ingress's
     * auth_timeout, so no hash is spent on a login whose client has given up */
    F(hash_queue_max, CONF_INT, "64", 1, 100000,
      "logins waiting for a hash before new ones get 454 (try later)"),
    F(lockout_failures, CONF_INT, "5", 0, AUTH_LOCKOUT_FAILURES_MAX,
      "failed logins from one client or for one user that lock it out; 0 turns lockouts off"),
    F(lockout_window, CONF_DURATION, "10m", 1000, 86400000,
      "failures older than this no longer count"),
    F(lockout_duration, CONF_DURATION, "15m", 1000, 86400000,
      "how long a lockout lasts (counters are in memory: a restart clears them)"),
    F(lockout_table_max, CONF_INT, "100000", 100, 10000000,
      "clients and users whose failures are tracked at once; the oldest goes first"),
    F(rate_table_max, CONF_INT, "100000", 16, 10000000,
      "credentials and tenants whose rate windows are kept in memory"),
    C(oauth_issuers, auth_jwt_conf_parse, auth_jwt_conf_release,
      "issuers whose bearer tokens (XOAUTH2, OAUTHBEARER) are accepted: a list of groups "
      "{ issuer; audience; algorithm (HS256, RS256, ES256); secret or public_key }"),
    F(resolver, CONF_STRING, "", 0, 0,
      "DNS servers for the DKIM record checks, \"ip[:port],...\"; empty: /etc/resolv.conf"),
    {NULL},
};

typedef struct dkim_check_job dkim_check_job_t;

typedef struct auth_ctx {
    service_t *svc;
    auth_api_t *api;
    auth_worker_t *worker; /* NULL: hash on the loop thread */
    bus_server_t *server;
    loop_timer_t rate_flush;
    auth_dns_t *dns;
    dkim_check_job_t *checks; /* AuthDomainVerify requests waiting for DNS */
} auth_ctx_t;

/* A login check waiting for a worker. */
typedef struct verify_job {
    auth_ctx_t *ctx;
    bus_peer_t peer;
    uint64_t request_id;
    auth_verify_t *v;
} verify_job_t;

static void send_verify_reply(auth_ctx_t *ctx, const bus_peer_t *peer, uint64_t request_id,
                              PB(AuthLoginVerifyReply) * r)
{
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(AUTH_LOGIN_VERIFY_REPLY);
    env.auth_login_verify_reply = r;
    bus_server_send(ctx->server, peer, request_id, &env, NULL);
    auth_api_reply_free(r);
}

static void verify_work(void *arg)
{
    verify_job_t *job = arg;
    auth_verify_run(job->v);
}

static void verify_done(void *arg, int completed)
{
    verify_job_t *job = arg;
    if (completed) {
        PB(AuthLoginVerifyReply) *r = auth_api_verify_finish(job->ctx->api, &job->v);
        send_verify_reply(job->ctx, &job->peer, job->request_id, r);
    }
    auth_verify_free(&job->v);
    free(job);
}

static void handle_verify(auth_ctx_t *ctx, bus_msg_t *msg)
{
    uint64_t rid = msg->env->request_id;
    PB(AuthLoginVerifyReply) *r = NULL;
    auth_verify_t *v = auth_api_verify_begin(ctx->api, msg->env->auth_login_verify, &r);
    if (v != NULL && ctx->worker == NULL) {
        auth_verify_run(v);
        r = auth_api_verify_finish(ctx->api, &v);
    } else if (v != NULL) {
        verify_job_t *job = xcalloc(1, sizeof(*job));
        job->ctx = ctx;
        job->peer = msg->peer;
        job->request_id = rid;
        job->v = v;
        if (auth_worker_submit(ctx->worker, verify_work, verify_done, job) == 0)
            return;
        free(job);
        r = auth_api_verify_busy(ctx->api, &v);
    }
    send_verify_reply(ctx, &msg->peer, rid, r);
}

/* Send a management reply or the error that replaced it to peer; frees the reply. */
static void answer_to(auth_ctx_t *ctx, const bus_peer_t *peer, uint64_t request_id,
                      const char *body, int rc, const auth_err_t *err, sx_env_t *env, void *reply)
{
    if (rc < 0) {
        char text[2 * AUTH_ERR_TEXT_MAX + 8];
        log_info("event=request_refused body=%s code=%u text=%s", body, err->code,
                 log_quote(text, sizeof(text), err->text, strlen(err->text)));
        bus_server_error(ctx->server, peer, request_id, err->code, err->enhanced, "%s", err->text);
    } else {
        bus_server_send(ctx->server, peer, request_id, env, NULL);
    }
    auth_api_reply_free(reply);
}

static void answer(auth_ctx_t *ctx, bus_msg_t *msg, int rc, const auth_err_t *err, sx_env_t *env,
                   void *reply)
{
    answer_to(ctx, &msg->peer, msg->env->request_id, codec_body_name(msg->env), rc, err, env,
              reply);
}

/* ---- requests that need DKIM keys made first (AuthDomainAdd, AuthDomainDkim) ---- */

typedef struct keygen_job {
    auth_ctx_t *ctx;
    bus_peer_t peer;
    sx_env_t *req; /* the request, kept until the answer */
    uint32_t generation;
    uint64_t now_ms;
    int failed;
    auth_dkim_rec_t keys;
} keygen_job_t;

/*
 * Run the handler of a keyed request (fresh NULL: it may ask for keys,
 * returning 1) and, unless it asks, answer it.
 */
static int keyed_run(auth_ctx_t *ctx, const bus_peer_t *peer, const sx_env_t *req,
                     auth_dkim_rec_t *fresh, uint32_t *generation)
{
    sx_env_t env = PB_INIT(ENVELOPE);
    auth_err_t err = {0};
    void *reply = NULL;
    int rc;
    *generation = 1;
    if (req->body_case == PB_BODY(AUTH_DOMAIN_ADD)) {
        PB(AuthDomainAddReply) *r = NULL;
        rc = auth_api_domain_add_keyed(ctx->api, req->auth_domain_add, fresh, &r, &err);
        env.body_case = PB_BODY(AUTH_DOMAIN_ADD_REPLY);
        env.auth_domain_add_reply = r;
        reply = r;
    } else {
        PB(AuthDomainDkimReply) *r = NULL;
        rc = auth_api_domain_dkim(ctx->api, req->auth_domain_dkim, fresh, generation, &r, &err);
        env.body_case = PB_BODY(AUTH_DOMAIN_DKIM_REPLY);
        env.auth_domain_dkim_reply = r;
        reply = r;
    }
    if (rc != 1)
        answer_to(ctx, peer, req->request_id, codec_body_name(req), rc, &err, &env, reply);
    return rc;
}

static void keygen_finish(keygen_job_t *job)
{
    uint32_t g;
    if (job->failed) {
        auth_err_t err = {.code = 500, .enhanced = "4.3.0"};
        snprintf(err.text, sizeof(err.text), "cannot make DKIM keys (OpenSSL failed)");
        log_error("event=dkim_keygen_failed generation=%u", job->generation);
        answer_to(job->ctx, &job->peer, job->req->request_id, codec_body_name(job->req), -1, &err,
                  NULL, NULL);
    } else {
        keyed_run(job->ctx, &job->peer, job->req, &job->keys, &g);
    }
}

static void keygen_free(keygen_job_t *job)
{
    auth_dkim_rec_clear(&job->keys);
    codec_free(&job->req);
    free(job);
}

static void keygen_work(void *arg)
{
    keygen_job_t *job = arg;
    job->failed = auth_dkim_generate(&job->keys, job->generation, job->now_ms) < 0;
}

static void keygen_done(void *arg, int completed)
{
    keygen_job_t *job = arg;
    if (completed)
        keygen_finish(job);
    keygen_free(job);
}

static void handle_keyed(auth_ctx_t *ctx, bus_msg_t *msg)
{
    uint32_t generation;
    if (keyed_run(ctx, &msg->peer, msg->env, NULL, &generation) != 1)
        return;
    keygen_job_t *job = xcalloc(1, sizeof(*job));
    job->ctx = ctx;
    job->peer = msg->peer;
    job->req = bus_msg_take_env(msg);
    job->generation = generation;
    job->now_ms = clock_wall_ms();
    if (ctx->worker && auth_worker_submit(ctx->worker, keygen_work, keygen_done, job) == 0)
        return;
    /* no worker, or its queue is full: an operator's request waits no less for that */
    keygen_work(job);
    keygen_done(job, 1);
}

/* ---- AuthDomainVerify: one TXT lookup per key ---- */

typedef struct check_slot {
    dkim_check_job_t *job;
    size_t index;
    auth_dns_query_t *query;
} check_slot_t;

struct dkim_check_job {
    auth_ctx_t *ctx;
    bus_peer_t peer;
    uint64_t request_id;
    char domain[AUTH_DOMAIN_MAX + 1];
    auth_dkim_rec_t keys; /* public parts only */
    PB(DkimCheck) checks[AUTH_DKIM_KEYS_MAX];
    check_slot_t slots[AUTH_DKIM_KEYS_MAX];
    size_t pending;
    dkim_check_job_t *prev, *next;
};

static void check_job_free(dkim_check_job_t *job)
{
    auth_ctx_t *ctx = job->ctx;
    if (job->prev)
        job->prev->next = job->next;
    else if (ctx->checks == job)
        ctx->checks = job->next;
    if (job->next)
        job->next->prev = job->prev;
    for (size_t i = 0; i < job->keys.n; i++) {
        auth_dns_cancel(&job->slots[i].query);
        auth_dkim_check_clear(&job->checks[i]);
    }
    auth_dkim_rec_clear(&job->keys);
    free(job);
}

static void on_txt(char *const *txts, size_t n, const char *err, void *arg)
{
    check_slot_t *slot = arg;
    dkim_check_job_t *job = slot->job;
    slot->query = NULL;
    auth_dkim_check(job->domain, &job->keys.keys[slot->index], txts, n, err,
                    &job->checks[slot->index]);
    if (--job->pending > 0)
        return;
    auth_err_t e = {0};
    PB(AuthDomainVerifyReply) *r = NULL;
    int rc =
        auth_api_domain_verify_finish(job->ctx->api, job->domain, &job->keys, job->checks, &r, &e);
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(AUTH_DOMAIN_VERIFY_REPLY);
    env.auth_domain_verify_reply = r;
    answer_to(job->ctx, &job->peer, job->request_id, "auth_domain_verify", rc, &e, &env, r);
    check_job_free(job);
}

static void handle_domain_verify(auth_ctx_t *ctx, bus_msg_t *msg)
{
    dkim_check_job_t *job = xcalloc(1, sizeof(*job));
    auth_err_t err = {0};
    job->ctx = ctx;
    job->peer = msg->peer;
    job->request_id = msg->env->request_id;
    if (auth_api_domain_verify_begin(ctx->api, msg->env->auth_domain_verify, job->domain,
                                     &job->keys, &err) < 0) {
        free(job);
        answer(ctx, msg, -1, &err, NULL, NULL);
        return;
    }
    job->next = ctx->checks;
    if (ctx->checks)
        ctx->checks->prev = job;
    ctx->checks = job;
    job->pending = job->keys.n;
    for (size_t i = 0; i < job->keys.n; i++) {
        char name[AUTH_DKIM_TXT_NAME_MAX];
        PB(DkimCheck) init = PB_INIT(DKIM_CHECK);
        job->checks[i] = init;
        job->slots[i] = (check_slot_t){job, i, NULL};
        snprintf(name, sizeof(name), "%s._domainkey.%s", job->keys.keys[i].selector, job->domain);
        job->slots[i].query = auth_dns_txt(ctx->dns, name, on_txt, &job->slots[i]);
    }
}

/* The private keys of a reply are wiped before its memory goes back. */
static void handle_key_get(auth_ctx_t *ctx, bus_msg_t *msg)
{
    auth_err_t err = {0};
    PB(AuthDkimKeyGetReply) *r = NULL;
    int rc = auth_api_dkim_key_get(ctx->api, msg->env->auth_dkim_key_get, &r, &err);
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(AUTH_DKIM_KEY_GET_REPLY);
    env.auth_dkim_key_get_reply = r;
    if (rc < 0) {
        answer(ctx, msg, rc, &err, &env, r);
        return;
    }
    bus_server_send(ctx->server, &msg->peer, msg->env->request_id, &env, NULL);
    for (size_t i = 0; i < r->n_keys; i++)
        if (r->keys[i] && r->keys[i]->private_key_pem)
            OPENSSL_cleanse(r->keys[i]->private_key_pem, strlen(r->keys[i]->private_key_pem));
    auth_api_reply_free(r);
}

/* One management request: call the handler, answer with its reply or its error. */
#define HANDLE(BODY, field, fn, REPLY_BODY, reply_field, Reply)                                    \
    case PB_BODY(BODY): {                                                                          \
        PB(Reply) * r;                                                                             \
        rc = fn(ctx->api, e->field, &r, &err);                                                     \
        env.body_case = PB_BODY(REPLY_BODY);                                                       \
        env.reply_field = r;                                                                       \
        answer(ctx, msg, rc, &err, &env, r);                                                       \
        break;                                                                                     \
    }

static void on_request(bus_server_t *srv, bus_msg_t *msg, void *arg)
{
    (void)srv;
    auth_ctx_t *ctx = arg;
    const sx_env_t *e = msg->env;
    sx_env_t env = PB_INIT(ENVELOPE);
    auth_err_t err = {0};
    int rc;

    switch (e->body_case) {
    case PB_BODY(AUTH_LOGIN_VERIFY):
        handle_verify(ctx, msg);
        break;
    case PB_BODY(AUTH_DOMAIN_ADD):
    case PB_BODY(AUTH_DOMAIN_DKIM):
        handle_keyed(ctx, msg);
        break;
    case PB_BODY(AUTH_DOMAIN_VERIFY):
        handle_domain_verify(ctx, msg);
        break;
    case PB_BODY(AUTH_DKIM_KEY_GET):
        handle_key_get(ctx, msg);
        break;
        HANDLE(AUTH_RATE_CHECK, auth_rate_check, auth_api_rate_check, AUTH_RATE_CHECK_REPLY,
               auth_rate_check_reply, AuthRateCheckReply)
        HANDLE(AUTH_TENANT_ADD, auth_tenant_add, auth_api_tenant_add, AUTH_TENANT_ADD_REPLY,
               auth_tenant_add_reply, AuthTenantAddReply)
        HANDLE(AUTH_TENANT_LIST, auth_tenant_list, auth_api_tenant_list, AUTH_TENANT_LIST_REPLY,
               auth_tenant_list_reply, AuthTenantListReply)
        HANDLE(AUTH_DOMAIN_LIST, auth_domain_list, auth_api_domain_list, AUTH_DOMAIN_LIST_REPLY,
               auth_domain_list_reply, AuthDomainListReply)
        HANDLE(AUTH_CREDENTIAL_ADD, auth_credential_add, auth_api_credential_add,
               AUTH_CREDENTIAL_ADD_REPLY, auth_credential_add_reply, AuthCredentialAddReply)
        HANDLE(AUTH_CREDENTIAL_LIST, auth_credential_list, auth_api_credential_list,
               AUTH_CREDENTIAL_LIST_REPLY, auth_credential_list_reply, AuthCredentialListReply)
        HANDLE(AUTH_CREDENTIAL_ROTATE, auth_credential_rotate, auth_api_credential_rotate,
               AUTH_CREDENTIAL_ROTATE_REPLY, auth_credential_rotate_reply,
               AuthCredentialRotateReply)
        HANDLE(AUTH_CREDENTIAL_REVOKE, auth_credential_revoke, auth_api_credential_revoke,
               AUTH_CREDENTIAL_REVOKE_REPLY, auth_credential_revoke_reply,
               AuthCredentialRevokeReply)
        HANDLE(AUTH_ALLOW_ADD, auth_allow_add, auth_api_allow_add, AUTH_ALLOW_REPLY,
               auth_allow_reply, AuthAllowReply)
        HANDLE(AUTH_ALLOW_REMOVE, auth_allow_remove, auth_api_allow_remove, AUTH_ALLOW_REPLY,
               auth_allow_reply, AuthAllowReply)
        HANDLE(AUTH_ALLOW_LIST, auth_allow_list, auth_api_allow_list, AUTH_ALLOW_REPLY,
               auth_allow_reply, AuthAllowReply)
        HANDLE(AUTH_LIMIT_SET, auth_limit_set, auth_api_limit_set, AUTH_LIMIT_SET_REPLY,
               auth_limit_set_reply, AuthLimitSetReply)
    default:
        log_warn("event=request_refused body=%s reason=unsupported", codec_body_name(e));
        bus_server_error(ctx->server, &msg->peer, e->request_id, 400, "5.5.1",
                         "auth does not answer %s", codec_body_name(e));
        break;
    }
    if (auth_api_rate_pending(ctx->api) && !loop_timer_active(&ctx->rate_flush))
        loop_timer_start(ctx->svc->loop, &ctx->rate_flush, RATE_FLUSH_MS);
}

/* Write the day counters that changed since the last time; try again later on failure. */
static void on_rate_flush(loop_t *loop, void *arg)
{
    auth_ctx_t *ctx = arg;
    if (auth_api_rate_flush(ctx->api) < 0)
        loop_timer_start(loop, &ctx->rate_flush, RATE_FLUSH_MS);
}

static void on_stats(PB(ServicePong) * pong, void *arg)
{
    auth_ctx_t *ctx = arg;
    auth_stats_t s;
    auth_api_stats(ctx->api, &s);
    bus_pong_stat(pong, "credentials", "%zu", s.credentials);
    bus_pong_stat(pong, "tenants", "%zu", s.tenants);
    bus_pong_stat(pong, "verify_ok", "%llu", (unsigned long long)s.verify_ok);
    bus_pong_stat(pong, "verify_failed", "%llu", (unsigned long long)s.verify_failed);
    bus_pong_stat(pong, "verify_busy", "%llu", (unsigned long long)s.verify_busy);
    bus_pong_stat(pong, "verify_locked", "%llu", (unsigned long long)s.verify_locked);
    bus_pong_stat(pong, "lockouts", "%llu", (unsigned long long)s.lockouts);
    bus_pong_stat(pong, "lockout_entries", "%zu", s.lockout_entries);
    bus_pong_stat(pong, "rate_counted", "%llu", (unsigned long long)s.rate_counted);
    bus_pong_stat(pong, "rate_refused", "%llu", (unsigned long long)s.rate_refused);
    bus_pong_stat(pong, "rate_unwritten", "%zu", s.rate_dirty);
    bus_pong_stat(pong, "cache_hits", "%llu", (unsigned long long)s.cache_hits);
    bus_pong_stat(pong, "cache_entries", "%zu", s.cache_entries);
    bus_pong_stat(pong, "hash_pending", "%zu",
                  ctx->worker ? auth_worker_pending(ctx->worker) : (size_t)0);
}

static void on_event(PB(Event) * ev, void *arg)
{
    service_event(arg, ev);
}

int main(int argc, char **argv)
{
    service_t svc;
    auth_conf_t conf;
    auth_ctx_t ctx = {.svc = &svc};
    auth_store_t *st = NULL;
    char err[1024], dir[512];
    int rc = 1;

    memset(&conf, 0, sizeof(conf));
    if (service_init(&svc, "auth", argc, argv) < 0)
        return 1;
    if (service_section(&svc, auth_conf_table, &conf) < 0)
        goto out;
    auth_api_conf_t api_conf = {
        .scrypt = {(unsigned)conf.scrypt_ln, (unsigned)conf.scrypt_r, (unsigned)conf.scrypt_p},
        .cache_ttl_ms = conf.cache_ttl,
        .cache_max = (size_t)conf.cache_max,
        .lockout = {(unsigned)conf.lockout_failures, conf.lockout_window, conf.lockout_duration,
                    (size_t)conf.lockout_table_max},
        .rate_names_max = (size_t)conf.rate_table_max,
        .oauth = conf.oauth_issuers,
    };
    if (auth_hash_params_check(&api_conf.scrypt, err, sizeof(err)) < 0) {
        char where[512];
        fprintf(stderr, "sendarix-auth: %s: auth: %s\n",
                conf_where(conf_group(svc.conf, "auth"), where, sizeof(where)), err);
        goto out;
    }
    const char *endpoint = service_endpoint(&svc, &svc.ep.auth);
    if (endpoint == NULL) {
        fprintf(stderr, "sendarix-auth: %s: bus.auth has no endpoint for instance %s\n",
                conf_path(svc.conf), svc.instance);
        goto out;
    }
    st = auth_store_open(service_store_dir(&svc, dir, sizeof(dir)), err, sizeof(err));
    if (st == NULL) {
        fprintf(stderr, "sendarix-auth: %s\n", err);
        goto out;
    }
    ctx.api = auth_api_new(st, &api_conf, err, sizeof(err));
    if (ctx.api == NULL) {
        fprintf(stderr, "sendarix-auth: %s\n", err);
        goto out;
    }
    auth_api_on_event(ctx.api, on_event, &svc);
    if (conf.hash_threads > 0) {
        ctx.worker =
            auth_worker_new(svc.loop, (unsigned)conf.hash_threads, (size_t)conf.hash_queue_max);
        if (ctx.worker == NULL) {
            fprintf(stderr, "sendarix-auth: cannot start %lld hash threads\n", conf.hash_threads);
            goto out;
        }
    }
    ctx.dns = auth_dns_new(svc.loop, conf.resolver, err, sizeof(err));
    if (ctx.dns == NULL) {
        char where[512];
        fprintf(stderr, "sendarix-auth: %s: auth.resolver: %s\n",
                conf_where(conf_group(svc.conf, "auth"), where, sizeof(where)), err);
        goto out;
    }
    loop_timer_init(&ctx.rate_flush, on_rate_flush, &ctx);
    ctx.server = bus_server_new(svc.bus, endpoint, on_request, &ctx);
    if (ctx.server == NULL) {
        fprintf(stderr, "sendarix-auth: cannot bind %s\n", endpoint);
        goto out;
    }
    bus_set_stats(svc.bus, on_stats, &ctx);
    log_info("event=auth_ready store=%s tenants=%zu credentials=%zu scrypt_ln=%lld "
             "hash_threads=%lld cache_max=%lld cache_ttl_ms=%llu lockout_failures=%lld "
             "oauth_issuers=%zu resolver=%s",
             dir, auth_store_tenant_count(st), auth_store_cred_count(st), conf.scrypt_ln,
             conf.hash_threads, conf.cache_max, (unsigned long long)conf.cache_ttl,
             conf.lockout_failures, auth_jwt_issuers_count(conf.oauth_issuers),
             conf.resolver && *conf.resolver ? conf.resolver : "system");
    rc = service_run(&svc) == 0 ? 0 : 1;
    loop_timer_stop(svc.loop, &ctx.rate_flush);
    if (auth_api_rate_pending(ctx.api))
        auth_api_rate_flush(ctx.api);
out:
    bus_set_stats(svc.bus, NULL, NULL);
    auth_worker_destroy(&ctx.worker);
    while (ctx.checks)
        check_job_free(ctx.checks);
    auth_dns_destroy(&ctx.dns);
    bus_server_destroy(&ctx.server);
    auth_api_destroy(&ctx.api);
    auth_store_close(&st);
    conf_release(auth_conf_table, &conf);
    service_fini(&svc);
    return rc;
}
