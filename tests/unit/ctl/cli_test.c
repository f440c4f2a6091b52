/*
 * sendarixctl against stand-in services: a thread runs its own loop and
 * bus with ROUTER sockets that answer like auth, queue (two instances),
 * events (two instances) and sandbox, while ingress, router and delivery
 * are absent. Each test runs ctl_main as the binary would and checks the
 * exit status, the JSON document and what reached the services: status,
 * tenants, domains (verified or not), credentials (add, list, rotate,
 * revoke), allowlists, limits, log search, queue show, sandbox.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/clock.h"
#include "ctl.h"
#include "ipc/bus.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define T0       1700000000000ull
#define MAX_ARGS 32
#define FAKE_MAX 16

typedef struct fake fake_t;

typedef struct fake_server {
    fake_t *f;
    const char *role;
    int instance;
    bus_server_t *srv;
} fake_server_t;

typedef struct tenant {
    char name[64];
    char domains[8][64];
    int verified[8];
    int ndomains;
    uint32_t per_minute, per_day;
} tenant_t;

typedef struct cred {
    char user[64];
    char tenant[64];
    char env[32];
    int ndomains;
    int revoked;
    char nets[8][64];
    int nnets;
    uint32_t per_minute, per_day;
    uint64_t rotated_at;
} cred_t;

struct fake {
    char dir[300];
    char config[400];
    char config_up[400];
    char config_dead[400];
    pthread_t thread;
    atomic_int stop;
    atomic_int ready;
    loop_t *loop;
    bus_t *bus;
    loop_timer_t poll;
    fake_server_t servers[FAKE_MAX];
    size_t nservers;
    /* what the stand-ins were told */
    tenant_t tenants[8];
    int ntenants;
    cred_t creds[8];
    int ncreds;
    char last_password[128];
    uint32_t last_grace;
    int limit_sets;
    unsigned sandbox_code, sandbox_seconds;
    char sandbox_text[128];
    int searches;
};

static fake_t fake;

/* ---- the stand-in services ---- */

static void send_env(bus_server_t *srv, bus_msg_t *msg, sx_env_t *env)
{
    bus_server_send(srv, &msg->peer, msg->env->request_id, env, NULL);
}

static tenant_t *find_tenant(const char *name)
{
    for (int i = 0; i < fake.ntenants; i++)
        if (strcmp(fake.tenants[i].name, name) == 0)
            return &fake.tenants[i];
    return NULL;
}

static cred_t *find_cred(const char *user)
{
    for (int i = 0; i < fake.ncreds; i++)
        if (strcmp(fake.creds[i].user, user) == 0)
            return &fake.creds[i];
    return NULL;
}

static void fill_tenant(PB(Tenant) * t, tenant_t *src, char **doms)
{
    PB(Tenant) init = PB_INIT(TENANT);
    *t = init;
    t->name = src->name;
    t->created_at_ms = T0;
    t->rate_per_minute = src->per_minute;
    t->rate_per_day = src->per_day;
    for (int i = 0; i < src->ndomains; i++)
        doms[i] = src->domains[i];
    t->domains = doms;
    t->n_domains = (size_t)src->ndomains;
}

/* nets: room for src->nnets pointers. */
static void fill_cred(PB(Credential) * c, cred_t *src, char **nets)
{
    PB(Credential) init = PB_INIT(CREDENTIAL);
    *c = init;
    c->username = src->user;
    c->tenant = src->tenant;
    c->environment = src->env;
    c->created_at_ms = T0;
    c->password_count = src->revoked ? 0 : src->rotated_at ? 2 : 1;
    c->revoked = src->revoked;
    c->rotated_at_ms = src->rotated_at;
    c->rate_per_minute = src->per_minute;
    c->rate_per_day = src->per_day;
    for (int i = 0; i < src->nnets; i++)
        nets[i] = src->nets[i];
    c->allowed_networks = nets;
    c->n_allowed_networks = (size_t)src->nnets;
}

static void send_cred(bus_server_t *srv, bus_msg_t *msg, cred_t *c, int body)
{
    sx_env_t env = PB_INIT(ENVELOPE);
    PB(Credential) pc;
    char *nets[8];
    fill_cred(&pc, c, nets);
    PB(AuthCredentialRotateReply) rot = PB_INIT(AUTH_CREDENTIAL_ROTATE_REPLY);
    PB(AuthCredentialRevokeReply) rev = PB_INIT(AUTH_CREDENTIAL_REVOKE_REPLY);
    PB(AuthCredentialAddReply) add = PB_INIT(AUTH_CREDENTIAL_ADD_REPLY);
    env.body_case = body;
    if (body == PB_BODY(AUTH_CREDENTIAL_ROTATE_REPLY)) {
        rot.credential = &pc;
        env.auth_credential_rotate_reply = &rot;
    } else if (body == PB_BODY(AUTH_CREDENTIAL_REVOKE_REPLY)) {
        rev.credential = &pc;
        env.auth_credential_revoke_reply = &rev;
    } else {
        add.credential = &pc;
        env.auth_credential_add_reply = &add;
    }
    send_env(srv, msg, &env);
}

static void send_allow(bus_server_t *srv, bus_msg_t *msg, cred_t *c)
{
    sx_env_t env = PB_INIT(ENVELOPE);
    PB(AuthAllowReply) rep = PB_INIT(AUTH_ALLOW_REPLY);
    char *nets[8];
    for (int i = 0; i < c->nnets; i++)
        nets[i] = c->nets[i];
    rep.username = c->user;
    rep.networks = nets;
    rep.n_networks = (size_t)c->nnets;
    env.body_case = PB_BODY(AUTH_ALLOW_REPLY);
    env.auth_allow_reply = &rep;
    send_env(srv, msg, &env);
}

/* The management requests added with allowlists, rotation and limits; 0 when not one. */
static int access_request(bus_server_t *srv, bus_msg_t *msg)
{
    const sx_env_t *e = msg->env;
    uint64_t rid = e->request_id;
    const char *user = NULL;
    switch (e->body_case) {
    case PB_BODY(AUTH_CREDENTIAL_ROTATE):
        user = e->auth_credential_rotate->username;
        break;
    case PB_BODY(AUTH_CREDENTIAL_REVOKE):
        user = e->auth_credential_revoke->username;
        break;
    case PB_BODY(AUTH_ALLOW_ADD):
        user = e->auth_allow_add->username;
        break;
    case PB_BODY(AUTH_ALLOW_REMOVE):
        user = e->auth_allow_remove->username;
        break;
    case PB_BODY(AUTH_ALLOW_LIST):
        user = e->auth_allow_list->username;
        break;
    case PB_BODY(AUTH_LIMIT_SET):
        user = e->auth_limit_set->username;
        break;
    default:
        return 0;
    }
    cred_t *c = user && *user ? find_cred(user) : NULL;
    if (e->body_case == PB_BODY(AUTH_LIMIT_SET)) {
        const PB(AuthLimitSet) *l = e->auth_limit_set;
        tenant_t *t = *l->tenant ? find_tenant(l->tenant) : NULL;
        if (t == NULL && c == NULL) {
            bus_server_error(srv, &msg->peer, rid, 404, "5.1.0", "not found");
            return 1;
        }
        if (t) {
            t->per_minute = l->per_minute;
            t->per_day = l->per_day;
        } else {
            c->per_minute = l->per_minute;
            c->per_day = l->per_day;
        }
        fake.limit_sets++;
        sx_env_t env = PB_INIT(ENVELOPE);
        PB(AuthLimitSetReply) rep = PB_INIT(AUTH_LIMIT_SET_REPLY);
        rep.tenant = l->tenant;
        rep.username = l->username;
        rep.per_minute = l->per_minute;
        rep.per_day = l->per_day;
        env.body_case = PB_BODY(AUTH_LIMIT_SET_REPLY);
        env.auth_limit_set_reply = &rep;
        send_env(srv, msg, &env);
        return 1;
    }
    if (c == NULL) {
        bus_server_error(srv, &msg->peer, rid, 404, "5.1.0", "credential %s not found", user);
        return 1;
    }
    switch (e->body_case) {
    case PB_BODY(AUTH_CREDENTIAL_ROTATE):
        snprintf(fake.last_password, sizeof(fake.last_password), "%s",
                 e->auth_credential_rotate->password);
        fake.last_grace = e->auth_credential_rotate->grace_s;
        c->rotated_at = T0 + 5000;
        send_cred(srv, msg, c, PB_BODY(AUTH_CREDENTIAL_ROTATE_REPLY));
        return 1;
    case PB_BODY(AUTH_CREDENTIAL_REVOKE):
        c->revoked = 1;
        send_cred(srv, msg, c, PB_BODY(AUTH_CREDENTIAL_REVOKE_REPLY));
        return 1;
    case PB_BODY(AUTH_ALLOW_ADD):
        snprintf(c->nets[c->nnets++], 64, "%s", e->auth_allow_add->network);
        send_allow(srv, msg, c);
        return 1;
    case PB_BODY(AUTH_ALLOW_REMOVE): {
        const char *net = e->auth_allow_remove->network;
        int at = -1;
        for (int i = 0; i < c->nnets; i++)
            if (strcmp(c->nets[i], net) == 0)
                at = i;
        if (at < 0) {
            bus_server_error(srv, &msg->peer, rid, 404, "5.1.0",
                             "network %s is not allowed for credential %s", net, user);
            return 1;
        }
        memmove(c->nets[at], c->nets[at + 1], (size_t)(c->nnets - at - 1) * 64);
        c->nnets--;
        send_allow(srv, msg, c);
        return 1;
    }
    default:
        send_allow(srv, msg, c);
        return 1;
    }
}

static void auth_request(bus_server_t *srv, bus_msg_t *msg)
{
    sx_env_t env = PB_INIT(ENVELOPE);
    uint64_t rid = msg->env->request_id;
    if (access_request(srv, msg))
        return;
    switch (msg->env->body_case) {
    case PB_BODY(AUTH_TENANT_ADD): {
        const char *name = msg->env->auth_tenant_add->name;
        if (find_tenant(name)) {
            bus_server_error(srv, &msg->peer, rid, 409, "5.7.0", "tenant %s exists", name);
            return;
        }
        tenant_t *t = &fake.tenants[fake.ntenants++];
        snprintf(t->name, sizeof(t->name), "%s", name);
        PB(Tenant) pt;
        char *doms[8];
        fill_tenant(&pt, t, doms);
        PB(AuthTenantAddReply) rep = PB_INIT(AUTH_TENANT_ADD_REPLY);
        rep.tenant = &pt;
        env.body_case = PB_BODY(AUTH_TENANT_ADD_REPLY);
        env.auth_tenant_add_reply = &rep;
        send_env(srv, msg, &env);
        return;
    }
    case PB_BODY(AUTH_TENANT_LIST): {
        PB(Tenant) pts[8], *ptrs[8];
        char *doms[8][8];
        for (int i = 0; i < fake.ntenants; i++) {
            fill_tenant(&pts[i], &fake.tenants[i], doms[i]);
            ptrs[i] = &pts[i];
        }
        PB(AuthTenantListReply) rep = PB_INIT(AUTH_TENANT_LIST_REPLY);
        rep.tenants = ptrs;
        rep.n_tenants = (size_t)fake.ntenants;
        env.body_case = PB_BODY(AUTH_TENANT_LIST_REPLY);
        env.auth_tenant_list_reply = &rep;
        send_env(srv, msg, &env);
        return;
    }
    case PB_BODY(AUTH_DOMAIN_ADD): {
        const PB(AuthDomainAdd) *d = msg->env->auth_domain_add;
        tenant_t *t = find_tenant(d->tenant);
        if (t == NULL) {
            bus_server_error(srv, &msg->peer, rid, 404, "5.1.0", "tenant %s not found", d->tenant);
            return;
        }
        t->verified[t->ndomains] = d->verified;
        snprintf(t->domains[t->ndomains++], 64, "%s", d->domain);
        PB(AuthDomainAddReply) rep = PB_INIT(AUTH_DOMAIN_ADD_REPLY);
        rep.domain = d->domain;
        rep.tenant = d->tenant;
        rep.verified = d->verified;
        env.body_case = PB_BODY(AUTH_DOMAIN_ADD_REPLY);
        env.auth_domain_add_reply = &rep;
        send_env(srv, msg, &env);
        return;
    }
    case PB_BODY(AUTH_DOMAIN_LIST): {
        const char *tenant = msg->env->auth_domain_list->tenant;
        if (*tenant && find_tenant(tenant) == NULL) {
            bus_server_error(srv, &msg->peer, rid, 404, "5.1.0", "tenant %s not found", tenant);
            return;
        }
        PB(Domain) ds[16], *ptrs[16];
        size_t n = 0;
        for (int i = 0; i < fake.ntenants; i++) {
            tenant_t *t = &fake.tenants[i];
            if (*tenant && strcmp(tenant, t->name) != 0)
                continue;
            for (int j = 0; j < t->ndomains && n < 16; j++, n++) {
                PB(Domain) init = PB_INIT(DOMAIN);
                ds[n] = init;
                ds[n].name = t->domains[j];
                ds[n].tenant = t->name;
                ds[n].verified = t->verified[j];
                ds[n].created_at_ms = T0;
                ptrs[n] = &ds[n];
            }
        }
        PB(AuthDomainListReply) rep = PB_INIT(AUTH_DOMAIN_LIST_REPLY);
        rep.domains = ptrs;
        rep.n_domains = n;
        env.body_case = PB_BODY(AUTH_DOMAIN_LIST_REPLY);
        env.auth_domain_list_reply = &rep;
        send_env(srv, msg, &env);
        return;
    }
    case PB_BODY(AUTH_CREDENTIAL_ADD): {
        const PB(AuthCredentialAdd) *a = msg->env->auth_credential_add;
        if (find_tenant(a->tenant) == NULL) {
            bus_server_error(srv, &msg->peer, rid, 404, "5.1.0", "tenant %s not found", a->tenant);
            return;
        }
        snprintf(fake.last_password, sizeof(fake.last_password), "%s", a->password);
        cred_t *c = &fake.creds[fake.ncreds++];
        snprintf(c->user, sizeof(c->user), "%s", a->username);
        snprintf(c->tenant, sizeof(c->tenant), "%s", a->tenant);
        snprintf(c->env, sizeof(c->env), "%s", a->environment);
        c->ndomains = (int)a->n_domains;
        send_cred(srv, msg, c, PB_BODY(AUTH_CREDENTIAL_ADD_REPLY));
        return;
    }
    case PB_BODY(AUTH_CREDENTIAL_LIST): {
        const char *tenant = msg->env->auth_credential_list->tenant;
        PB(Credential) pcs[8], *ptrs[8];
        char *nets[8][8];
        size_t n = 0;
        for (int i = 0; i < fake.ncreds; i++) {
            if (tenant[0] && strcmp(tenant, fake.creds[i].tenant) != 0)
                continue;
            fill_cred(&pcs[n], &fake.creds[i], nets[n]);
            ptrs[n] = &pcs[n];
            n++;
        }
        PB(AuthCredentialListReply) rep = PB_INIT(AUTH_CREDENTIAL_LIST_REPLY);
        rep.credentials = ptrs;
        rep.n_credentials = n;
        env.body_case = PB_BODY(AUTH_CREDENTIAL_LIST_REPLY);
        env.auth_credential_list_reply = &rep;
        send_env(srv, msg, &env);
        return;
    }
    default:
        bus_server_error(srv, &msg->peer, rid, 400, "5.5.1", "unexpected");
    }
}

/* Each events instance holds two of the four events of m1, out of order. */
static void events_request(fake_server_t *fs, bus_msg_t *msg)
{
    const PB(EventSearch) *s = msg->env->event_search;
    fake.searches++;
    if (msg->env->body_case != PB_BODY(EVENT_SEARCH) || strcmp(s->message_id, "bad") == 0) {
        bus_server_error(fs->srv, &msg->peer, msg->env->request_id, 400, "5.5.4",
                         "search refused by the stand-in");
        return;
    }
    PB(Event) evs[2] = {PB_INIT(EVENT), PB_INIT(EVENT)}, *ptrs[2] = {&evs[0], &evs[1]};
    static const char *ids[2][2] = {{"ev-c", "ev-a"}, {"ev-b", "ev-d"}};
    static const uint64_t at[2][2] = {{T0 + 30, T0 + 10}, {T0 + 20, T0 + 40}};
    static const char *types[2][2] = {{"delivered", "accepted"}, {"queued", "delivered"}};
    int k = fs->instance - 1;
    for (int i = 0; i < 2; i++) {
        evs[i].id = (char *)ids[k][i];
        evs[i].at_ms = at[k][i];
        evs[i].type = (char *)types[k][i];
        evs[i].message_id = "m1";
        evs[i].service = "queue";
        evs[i].instance = "1";
    }
    PB(EventSearchReply) rep = PB_INIT(EVENT_SEARCH_REPLY);
    int known = strcmp(s->message_id, "m1") == 0;
    rep.events = ptrs;
    rep.n_events = known ? 2 : 0;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(EVENT_SEARCH_REPLY);
    env.event_search_reply = &rep;
    send_env(fs->srv, msg, &env);
}

/* m1 lives in queue instance 2; instance 1 knows nothing. */
static void queue_request(fake_server_t *fs, bus_msg_t *msg)
{
    const PB(QueueMessageShow) *q = msg->env->queue_message_show;
    if (msg->env->body_case != PB_BODY(QUEUE_MESSAGE_SHOW) || fs->instance != 2 ||
        strcmp(q->message_id, "m1") != 0) {
        bus_server_error(fs->srv, &msg->peer, msg->env->request_id, 404, "5.1.0",
                         "message %s not found", q ? q->message_id : "?");
        return;
    }
    PB(QueueEnvelope) e = PB_INIT(QUEUE_ENVELOPE);
    e.message_id = "m1";
    e.mail_from = "s@example.test";
    e.received_at_ms = T0;
    PB(QueueRecipientState) r = PB_INIT(QUEUE_RECIPIENT_STATE), *rs[] = {&r};
    r.address = "a@example.test";
    r.state = "queued";
    PB(QueueMessageShowReply) rep = PB_INIT(QUEUE_MESSAGE_SHOW_REPLY);
    rep.envelope = &e;
    rep.recipients = rs;
    rep.n_recipients = 1;
    rep.state = "active";
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(QUEUE_MESSAGE_SHOW_REPLY);
    env.queue_message_show_reply = &rep;
    send_env(fs->srv, msg, &env);
}

static void sandbox_request(fake_server_t *fs, bus_msg_t *msg)
{
    const PB(SandboxFailSet) *s = msg->env->sandbox_fail_set;
    fake.sandbox_code = s->code;
    fake.sandbox_seconds = s->seconds;
    snprintf(fake.sandbox_text, sizeof(fake.sandbox_text), "%s", s->text);
    PB(SandboxFailSetReply) rep = PB_INIT(SANDBOX_FAIL_SET_REPLY);
    rep.code = s->code;
    rep.until_ms = s->code ? T0 + (uint64_t)s->seconds * 1000 : 0;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(SANDBOX_FAIL_SET_REPLY);
    env.sandbox_fail_set_reply = &rep;
    send_env(fs->srv, msg, &env);
}

static void on_request(bus_server_t *srv, bus_msg_t *msg, void *arg)
{
    fake_server_t *fs = arg;
    (void)srv;
    if (strcmp(fs->role, "auth") == 0)
        auth_request(fs->srv, msg);
    else if (strcmp(fs->role, "events") == 0)
        events_request(fs, msg);
    else if (strcmp(fs->role, "queue") == 0)
        queue_request(fs, msg);
    else
        sandbox_request(fs, msg);
}

static void on_poll(loop_t *loop, void *arg)
{
    (void)arg;
    if (atomic_load(&fake.stop))
        loop_stop(loop);
    else
        loop_timer_start(loop, &fake.poll, 5);
}

static void add_server(const char *role, int instance, const char *file)
{
    char ep[500];
    snprintf(ep, sizeof(ep), "ipc://%s/%s", fake.dir, file);
    fake_server_t *fs = &fake.servers[fake.nservers++];
    fs->f = &fake;
    fs->role = role;
    fs->instance = instance;
    fs->srv = bus_server_new(fake.bus, ep, on_request, fs);
    if (fs->srv == NULL)
        fprintf(stderr, "cannot bind %s\n", ep);
}

static void *fake_main(void *arg)
{
    (void)arg;
    fake.loop = loop_new();
    fake.bus = bus_new(fake.loop, "fake", "1");
    add_server("auth", 1, "auth.sock");
    add_server("queue", 1, "queue-1.sock");
    add_server("queue", 2, "queue-2.sock");
    add_server("events", 1, "events-1.sock");
    add_server("events", 2, "events-2.sock");
    add_server("sandbox", 1, "sandbox.sock");
    loop_timer_init(&fake.poll, on_poll, NULL);
    loop_timer_start(fake.loop, &fake.poll, 5);
    atomic_store(&fake.ready, 1);
    loop_run(fake.loop);
    for (size_t i = 0; i < fake.nservers; i++)
        bus_server_destroy(&fake.servers[i].srv);
    bus_destroy(&fake.bus);
    loop_destroy(&fake.loop);
    return NULL;
}

static void write_config(const char *path, const char *bus_body)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "# written by cli_test\nrelay = { hostname = \"x\"; };\nbus = {\n%s};\n"
            "queue = { some_setting_ctl_ignores = 1; };\n",
            bus_body);
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    memset(&fake, 0, sizeof(fake));
    const char *base = getenv("SENDARIX_TEST_TMP");
    if (base == NULL || *base == '\0')
        base = "/tmp";
    mkdir(base, 0755);
    snprintf(fake.dir, sizeof(fake.dir), "%s/ctlcli-XXXXXX", base);
    if (mkdtemp(fake.dir) == NULL)
        return -1;
    const char *d = fake.dir;
    char body[4096];
    snprintf(body, sizeof(body),
             "  ingress = [\"ipc://%s/ingress.sock\"];\n"
             "  auth = [\"ipc://%s/auth.sock\"];\n"
             "  queue = [\"ipc://%s/queue-1.sock\", \"ipc://%s/queue-2.sock\"];\n"
             "  router = [\"ipc://%s/router.sock\"];\n"
             "  router_workers = [\"ipc://%s/router-workers.sock\"];\n"
             "  delivery = [\"ipc://%s/delivery.sock\"];\n"
             "  events = [\"ipc://%s/events-1.sock\", \"ipc://%s/events-2.sock\"];\n"
             "  events_ingest = [\"ipc://%s/events-ingest.sock\"];\n"
             "  sandbox = [\"ipc://%s/sandbox.sock\"];\n",
             d, d, d, d, d, d, d, d, d, d, d);
    snprintf(fake.config, sizeof(fake.config), "%s/all.conf", d);
    write_config(fake.config, body);
    snprintf(body, sizeof(body),
             "  auth = [\"ipc://%s/auth.sock\"];\n"
             "  queue = [\"ipc://%s/queue-1.sock\", \"ipc://%s/queue-2.sock\"];\n"
             "  events = [\"ipc://%s/events-1.sock\", \"ipc://%s/events-2.sock\"];\n"
             "  sandbox = [\"ipc://%s/sandbox.sock\"];\n",
             d, d, d, d, d, d);
    snprintf(fake.config_up, sizeof(fake.config_up), "%s/up.conf", d);
    write_config(fake.config_up, body);
    snprintf(body, sizeof(body),
             "  auth = [\"ipc://%s/no-auth.sock\"];\n"
             "  events = [\"ipc://%s/events-1.sock\", \"ipc://%s/no-events.sock\"];\n",
             d, d, d);
    snprintf(fake.config_dead, sizeof(fake.config_dead), "%s/dead.conf", d);
    write_config(fake.config_dead, body);
    if (pthread_create(&fake.thread, NULL, fake_main, NULL) != 0)
        return -1;
    while (!atomic_load(&fake.ready))
        usleep(1000);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    atomic_store(&fake.stop, 1);
    pthread_join(fake.thread, NULL);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fake.dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", fake.dir);
    return 0;
}

/* ---- running the CLI ---- */

typedef struct run {
    int rc;
    char *out;
    char *err;
    json_t *doc;
    uint64_t ms;
} run_t;

/* Run sendarixctl with the words of fmt (space-separated), stdin from input (may be NULL). */
static run_t ctl(const char *input, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static run_t ctl(const char *input, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    char *argv[MAX_ARGS];
    int argc = 0;
    argv[argc++] = "sendarixctl";
    for (char *tok = strtok(line, " "); tok && argc < MAX_ARGS - 1; tok = strtok(NULL, " "))
        argv[argc++] = tok;
    argv[argc] = NULL;
    run_t r = {0};
    size_t ol, el;
    FILE *out = open_memstream(&r.out, &ol);
    FILE *err = open_memstream(&r.err, &el);
    FILE *saved_in = stdin;
    if (input)
        stdin = fmemopen((void *)input, strlen(input), "r");
    uint64_t t0 = clock_mono_ms();
    r.rc = ctl_main(argc, argv, out, err);
    r.ms = clock_mono_ms() - t0;
    if (input) {
        fclose(stdin);
        stdin = saved_in;
    }
    fclose(out);
    fclose(err);
    json_error_t jerr;
    r.doc = json_loads(r.out, 0, &jerr);
    return r;
}

static void run_free(run_t *r)
{
    json_decref(r->doc);
    free(r->out);
    free(r->err);
}

static void expect(run_t *r, int rc)
{
    if (r->rc != rc)
        fail_msg("exit %d, want %d\nstdout: %s\nstderr: %s", r->rc, rc, r->out, r->err);
}

/* ---- tests ---- */

static void test_status(void **state)
{
    (void)state;
    run_t r = ctl(NULL, "--json status --config %s", fake.config);
    expect(&r, 1);
    assert_non_null(r.doc);
    json_t *list = json_object_get(r.doc, "services");
    assert_int_equal(json_array_size(list), 9); /* events_ingest and router_workers left out */
    assert_int_equal(json_integer_value(json_object_get(r.doc, "up")), 6);
    assert_int_equal(json_integer_value(json_object_get(r.doc, "down")), 3);
    static const char *order[] = {"ingress",  "auth",   "queue",  "queue",  "router",
                                  "delivery", "events", "events", "sandbox"};
    static const int up[] = {0, 1, 1, 1, 0, 0, 1, 1, 1};
    static const char *inst[] = {"1", "1", "1", "2", "1", "1", "1", "2", "1"};
    for (size_t i = 0; i < 9; i++) {
        json_t *s = json_array_get(list, i);
        assert_string_equal(json_string_value(json_object_get(s, "service")), order[i]);
        assert_string_equal(json_string_value(json_object_get(s, "instance")), inst[i]);
        assert_int_equal(json_is_true(json_object_get(s, "up")), up[i]);
        if (up[i]) {
            assert_int_equal(json_integer_value(json_object_get(s, "pid")), getpid());
            assert_non_null(json_string_value(json_object_get(s, "version")));
            assert_true(json_is_object(json_object_get(s, "stats")));
        } else {
            assert_null(json_object_get(s, "pid"));
        }
    }
    /* down services cost one short deadline, in parallel, not one each */
    assert_true(r.ms < 2500);
    run_free(&r);

    r = ctl(NULL, "status --config %s --timeout 0.3", fake.config);
    expect(&r, 1);
    assert_non_null(strstr(r.out, "6 up, 3 down"));
    assert_non_null(strstr(r.out, "router"));
    run_free(&r);

    r = ctl(NULL, "status --json --config %s", fake.config_up);
    expect(&r, 0);
    assert_int_equal(json_integer_value(json_object_get(r.doc, "down")), 0);
    run_free(&r);
}

static void test_tenant_domain_cred(void **state)
{
    (void)state;
    const char *c = fake.config_up;
    run_t r = ctl(NULL, "--json tenant add acme --config %s", c);
    expect(&r, 0);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(r.doc, "tenant"), "name")), "acme");
    run_free(&r);

    /* the service's refusal is the CLI's message */
    r = ctl(NULL, "--json tenant add acme --config %s", c);
    expect(&r, 1);
    assert_string_equal(json_string_value(json_object_get(r.doc, "error")), "tenant acme exists");
    assert_non_null(strstr(r.err, "tenant acme exists"));
    run_free(&r);

    r = ctl(NULL, "domain add mail.acme.test --tenant acme --config %s --json", c);
    expect(&r, 0);
    assert_string_equal(json_string_value(json_object_get(r.doc, "domain")), "mail.acme.test");
    assert_string_equal(json_string_value(json_object_get(r.doc, "tenant")), "acme");
    run_free(&r);

    r = ctl(NULL, "domain add x.test --tenant nobody --config %s", c);
    expect(&r, 1);
    assert_non_null(strstr(r.err, "tenant nobody not found"));
    run_free(&r);

    r = ctl(NULL, "--json domain list --config %s", c);
    expect(&r, 0);
    json_t *d = json_object_get(r.doc, "domains");
    assert_int_equal(json_array_size(d), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(d, 0), "domain")),
                        "mail.acme.test");
    run_free(&r);

    r = ctl(NULL, "--json domain list --tenant nobody --config %s", c);
    expect(&r, 1);
    run_free(&r);

    r = ctl(NULL, "tenant list --config %s", c);
    expect(&r, 0);
    assert_non_null(strstr(r.out, "acme"));
    assert_non_null(strstr(r.out, "mail.acme.test"));
    run_free(&r);

    /* the password from stdin loses its newline, goes to auth, and is never printed */
    r = ctl("Sup3r-Secret-pw\n",
            "--json cred add alice --tenant acme --password-stdin --env staging --domain "
            "mail.acme.test --config %s",
            c);
    expect(&r, 0);
    assert_string_equal(fake.last_password, "Sup3r-Secret-pw");
    json_t *cred = json_object_get(r.doc, "credential");
    assert_string_equal(json_string_value(json_object_get(cred, "username")), "alice");
    assert_string_equal(json_string_value(json_object_get(cred, "environment")), "staging");
    assert_null(strstr(r.out, "Sup3r"));
    assert_null(strstr(r.err, "Sup3r"));
    assert_int_equal(fake.creds[0].ndomains, 1);
    run_free(&r);

    r = ctl("\n", "cred add bob --tenant acme --password-stdin --config %s", c);
    expect(&r, 1);
    assert_non_null(strstr(r.err, "empty password"));
    assert_int_equal(fake.ncreds, 1); /* nothing reached auth */
    run_free(&r);

    r = ctl(NULL, "cred add bob --tenant acme --password Other-pw-1 --config %s", c);
    expect(&r, 0);
    assert_string_equal(fake.last_password, "Other-pw-1");
    assert_string_equal(fake.creds[1].env, "production");
    assert_non_null(strstr(r.out, "bob"));
    assert_null(strstr(r.out, "Other-pw-1"));
    run_free(&r);

    r = ctl(NULL, "--json cred add carol --tenant nobody --password x1 --config %s", c);
    expect(&r, 1);
    assert_string_equal(json_string_value(json_object_get(r.doc, "error")),
                        "tenant nobody not found");
    run_free(&r);

    r = ctl(NULL, "--json cred list --tenant acme --config %s", c);
    expect(&r, 0);
    json_t *list = json_object_get(r.doc, "credentials");
    assert_int_equal(json_array_size(list), 2);
    assert_null(json_object_get(json_array_get(list, 0), "password"));
    run_free(&r);
}

static const char *jstr(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static long long jint(json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

/* Verified domains, rotation, revoke, allowlists and limits; runs after test_tenant_domain_cred. */
static void test_access(void **state)
{
    (void)state;
    const char *c = fake.config_up;
    run_t r = ctl(NULL, "--json domain add ok.acme.test --tenant acme --verified --config %s", c);
    expect(&r, 0);
    assert_true(json_is_true(json_object_get(r.doc, "verified")));
    assert_true(json_is_array(json_object_get(r.doc, "dkim")));
    assert_int_equal(json_object_size(r.doc), 4);
    assert_int_equal(find_tenant("acme")->verified[1], 1);
    run_free(&r);
    r = ctl(NULL, "domain add plain.acme.test --tenant acme --config %s", c);
    expect(&r, 0);
    assert_non_null(strstr(r.out, "not verified"));
    run_free(&r);

    r = ctl(NULL, "--json domain list --tenant acme --config %s", c);
    expect(&r, 0);
    json_t *d = json_object_get(r.doc, "domains");
    assert_int_equal(json_array_size(d), 3);
    json_t *first = json_array_get(d, 0), *second = json_array_get(d, 1);
    assert_string_equal(jstr(first, "domain"), "mail.acme.test");
    assert_true(json_is_false(json_object_get(first, "verified")));
    assert_string_equal(jstr(first, "created_at"), "2023-11-14T22:13:20Z");
    assert_true(json_is_true(json_object_get(second, "verified")));
    assert_true(json_is_null(json_object_get(first, "verified_at")));
    assert_true(json_is_array(json_object_get(first, "dkim")));
    assert_int_equal(json_object_size(first), 6);
    run_free(&r);
    r = ctl(NULL, "domain list --config %s", c);
    expect(&r, 0);
    assert_non_null(strstr(r.out, "ok.acme.test"));
    assert_non_null(strstr(r.out, " verified "));
    assert_non_null(strstr(r.out, "unverified"));
    run_free(&r);

    /* rotation: the password from stdin, the grace period in words */
    r = ctl("Next-Secret-pw\n", "--json cred rotate alice --password-stdin --grace 2h --config %s",
            c);
    expect(&r, 0);
    assert_string_equal(fake.last_password, "Next-Secret-pw");
    assert_int_equal(fake.last_grace, 7200);
    json_t *cred = json_object_get(r.doc, "credential");
    assert_string_equal(jstr(cred, "rotated_at"), "2023-11-14T22:13:25Z");
    assert_int_equal(jint(cred, "password_count"), 2);
    assert_null(strstr(r.out, "Next-Secret"));
    run_free(&r);
    r = ctl(NULL, "cred rotate alice --password Third-pw-123 --config %s", c);
    expect(&r, 0);
    assert_int_equal(fake.last_grace, 86400); /* the default: a day */
    assert_non_null(strstr(r.out, "older ones stop working at 2023-11-15T22:13:25Z"));
    assert_null(strstr(r.out, "Third-pw"));
    run_free(&r);
    r = ctl(NULL, "cred rotate alice --password Fourth-pw-123 --grace 0 --config %s", c);
    expect(&r, 0);
    assert_int_equal(fake.last_grace, 0);
    assert_non_null(strstr(r.out, "older ones stopped working"));
    run_free(&r);
    r = ctl("\n", "cred rotate alice --password-stdin --config %s", c);
    expect(&r, 1);
    assert_non_null(strstr(r.err, "empty password"));
    run_free(&r);
    r = ctl(NULL, "--json cred rotate nobody --password Some-pw-123 --config %s", c);
    expect(&r, 1);
    assert_string_equal(jstr(r.doc, "error"), "credential nobody not found");
    run_free(&r);
    r = ctl(NULL, "cred rotate alice --password x --grace 1w --config %s", c);
    expect(&r, 2);
    assert_non_null(strstr(r.err, "--grace needs a duration"));
    run_free(&r);

    /* allowlists */
    r = ctl(NULL, "--json allow add alice 10.0.0.0/8 --config %s", c);
    expect(&r, 0);
    assert_string_equal(jstr(r.doc, "username"), "alice");
    assert_string_equal(json_string_value(json_array_get(json_object_get(r.doc, "networks"), 0)),
                        "10.0.0.0/8");
    run_free(&r);
    r = ctl(NULL, "allow add alice 2001:db8::/32 --config %s", c);
    expect(&r, 0);
    assert_non_null(strstr(r.out, "added 2001:db8::/32"));
    run_free(&r);
    r = ctl(NULL, "allow list alice --config %s", c);
    expect(&r, 0);
    assert_non_null(strstr(r.out, "  10.0.0.0/8\n  2001:db8::/32\n"));
    run_free(&r);
    r = ctl(NULL, "--json allow remove alice 192.0.2.0/24 --config %s", c);
    expect(&r, 1);
    assert_string_equal(jstr(r.doc, "error"),
                        "network 192.0.2.0/24 is not allowed for credential alice");
    run_free(&r);
    r = ctl(NULL, "--json allow remove alice 10.0.0.0/8 --config %s", c);
    expect(&r, 0);
    assert_int_equal(json_array_size(json_object_get(r.doc, "networks")), 1);
    run_free(&r);
    r = ctl(NULL, "--json cred list --tenant acme --config %s", c);
    expect(&r, 0);
    cred = json_array_get(json_object_get(r.doc, "credentials"), 0);
    assert_string_equal(jstr(cred, "username"), "alice");
    assert_string_equal(
        json_string_value(json_array_get(json_object_get(cred, "allowed_networks"), 0)),
        "2001:db8::/32");
    run_free(&r);
    r = ctl(NULL, "allow list bob --config %s", c);
    expect(&r, 0);
    assert_non_null(strstr(r.out, "any client address"));
    run_free(&r);

    /* limits: an option left out keeps what auth has */
    r = ctl(NULL, "--json limit set --tenant acme --per-day 1000 --config %s", c);
    expect(&r, 0);
    assert_string_equal(jstr(r.doc, "tenant"), "acme");
    assert_int_equal(jint(r.doc, "per_minute"), 0);
    assert_int_equal(jint(r.doc, "per_day"), 1000);
    run_free(&r);
    r = ctl(NULL, "--json limit set --tenant acme --per-minute 5 --config %s", c);
    expect(&r, 0);
    assert_int_equal(find_tenant("acme")->per_minute, 5);
    assert_int_equal(find_tenant("acme")->per_day, 1000);
    assert_int_equal(jint(r.doc, "per_day"), 1000);
    run_free(&r);
    r = ctl(NULL, "limit set --cred bob --per-minute 7 --per-day 0 --config %s", c);
    expect(&r, 0);
    assert_non_null(
        strstr(r.out, "limits of credential bob: 7 messages per minute, no limit per day"));
    assert_int_equal(find_cred("bob")->per_minute, 7);
    run_free(&r);
    r = ctl(NULL, "--json tenant list --config %s", c);
    expect(&r, 0);
    assert_int_equal(jint(json_array_get(json_object_get(r.doc, "tenants"), 0), "rate_per_minute"),
                     5);
    run_free(&r);
    int sets = fake.limit_sets;
    r = ctl(NULL, "--json limit set --cred nobody --per-day 1 --config %s", c);
    expect(&r, 1);
    assert_string_equal(jstr(r.doc, "error"), "credential nobody not found");
    assert_int_equal(fake.limit_sets, sets); /* nothing was set */
    run_free(&r);

    /* revoke, last: alice stays revoked */
    r = ctl(NULL, "--json cred revoke alice --config %s", c);
    expect(&r, 0);
    cred = json_object_get(r.doc, "credential");
    assert_true(json_is_true(json_object_get(cred, "revoked")));
    assert_int_equal(jint(cred, "password_count"), 0);
    run_free(&r);
    r = ctl(NULL, "cred revoke alice --config %s", c);
    expect(&r, 0);
    assert_non_null(strstr(r.out, "revoked credential alice"));
    run_free(&r);
    r = ctl(NULL, "cred list --config %s", c);
    expect(&r, 0);
    assert_non_null(strstr(r.out, "revoked"));
    assert_non_null(strstr(r.out, "limits=7/min,0/day"));
    run_free(&r);
}

static void test_log_search(void **state)
{
    (void)state;
    run_t r = ctl(NULL, "--json log search --id m1 --config %s", fake.config_up);
    expect(&r, 0);
    json_t *list = json_object_get(r.doc, "events");
    assert_int_equal(json_array_size(list), 4);
    /* merged from both events instances, in time order */
    static const char *want[] = {"ev-a", "ev-b", "ev-c", "ev-d"};
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(json_string_value(json_object_get(json_array_get(list, i), "id")),
                            want[i]);
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "at")),
                        "2023-11-14T22:13:20.010Z");
    assert_int_equal(fake.searches, 2);
    run_free(&r);

    r = ctl(NULL, "--json log search --id m1 --limit 3 --config %s", fake.config_up);
    expect(&r, 0);
    list = json_object_get(r.doc, "events");
    assert_int_equal(json_array_size(list), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 2), "id")), "ev-c");
    run_free(&r);

    r = ctl(NULL, "log search --id m1 --config %s", fake.config_up);
    expect(&r, 0);
    int lines = 0;
    for (const char *p = r.out; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 4);
    assert_non_null(strstr(r.out, "msg=m1"));
    run_free(&r);

    r = ctl(NULL, "--json log search --id nothing-here --config %s", fake.config_up);
    expect(&r, 0);
    assert_int_equal(json_array_size(json_object_get(r.doc, "events")), 0);
    run_free(&r);

    r = ctl(NULL, "--json log search --id bad --config %s", fake.config_up);
    expect(&r, 1);
    assert_string_equal(json_string_value(json_object_get(r.doc, "error")),
                        "search refused by the stand-in");
    run_free(&r);

    /* one events instance missing: the search fails instead of answering half */
    r = ctl(NULL, "--json log search --id m1 --timeout 0.3 --config %s", fake.config_dead);
    expect(&r, 1);
    assert_non_null(strstr(json_string_value(json_object_get(r.doc, "error")), "no-events.sock"));
    run_free(&r);
}

static void test_queue_show(void **state)
{
    (void)state;
    run_t r = ctl(NULL, "--json queue show m1 --config %s", fake.config_up);
    expect(&r, 0);
    json_t *m = json_object_get(r.doc, "message");
    assert_string_equal(json_string_value(json_object_get(m, "message_id")), "m1");
    assert_string_equal(json_string_value(json_object_get(m, "received_at")),
                        "2023-11-14T22:13:20Z");
    assert_int_equal(json_array_size(json_object_get(r.doc, "recipients")), 1);
    run_free(&r);

    r = ctl(NULL, "--json queue show zz --config %s", fake.config_up);
    expect(&r, 1);
    assert_string_equal(json_string_value(json_object_get(r.doc, "error")), "message zz not found");
    run_free(&r);

    r = ctl(NULL, "queue show m1 --config %s", fake.config_up);
    expect(&r, 0);
    assert_non_null(strstr(r.out, "a@example.test"));
    run_free(&r);
}

static void test_sandbox_fail(void **state)
{
    (void)state;
    run_t r = ctl(NULL, "--json sandbox fail --code 421 --seconds 30 --text busy --config %s",
                  fake.config_up);
    expect(&r, 0);
    assert_int_equal(fake.sandbox_code, 421);
    assert_int_equal(fake.sandbox_seconds, 30);
    assert_string_equal(fake.sandbox_text, "busy");
    json_t *s = json_array_get(json_object_get(r.doc, "sandboxes"), 0);
    assert_int_equal(json_integer_value(json_object_get(s, "code")), 421);
    assert_string_equal(json_string_value(json_object_get(s, "until")), "2023-11-14T22:13:50Z");
    run_free(&r);

    r = ctl(NULL, "sandbox fail --code 0 --config %s", fake.config_up);
    expect(&r, 0);
    assert_int_equal(fake.sandbox_code, 0);
    assert_non_null(strstr(r.out, "cleared"));
    run_free(&r);
}

static void test_service_down(void **state)
{
    (void)state;
    run_t r = ctl(NULL, "--json tenant list --timeout 0.3 --config %s", fake.config_dead);
    expect(&r, 1);
    assert_non_null(strstr(json_string_value(json_object_get(r.doc, "error")), "not reachable"));
    assert_true(r.ms < 1500);
    run_free(&r);

    r = ctl(NULL, "--json status --config %s", fake.config_dead);
    expect(&r, 1);
    assert_int_equal(json_integer_value(json_object_get(r.doc, "up")), 1);
    assert_int_equal(json_integer_value(json_object_get(r.doc, "down")), 2);
    run_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status),       cmocka_unit_test(test_tenant_domain_cred),
        cmocka_unit_test(test_access),       cmocka_unit_test(test_log_search),
        cmocka_unit_test(test_queue_show),   cmocka_unit_test(test_sandbox_fail),
        cmocka_unit_test(test_service_down),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
