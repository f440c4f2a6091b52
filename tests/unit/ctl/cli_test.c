/*
 * sendarixctl against stand-in services: a thread runs its own loop and
 * bus with ROUTER sockets that answer like auth, queue (two instances),
 * events (two instances) and sandbox, while ingress, router and delivery
 * are absent. Each test runs ctl_main as the binary would and checks the
 * exit status, the JSON document and what reached the services.
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
    int ndomains;
} tenant_t;

typedef struct cred {
    char user[64];
    char tenant[64];
    char env[32];
    int ndomains;
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

static void fill_tenant(PB(Tenant) * t, tenant_t *src, char **doms)
{
    PB(Tenant) init = PB_INIT(TENANT);
    *t = init;
    t->name = src->name;
    t->created_at_ms = T0;
    for (int i = 0; i < src->ndomains; i++)
        doms[i] = src->domains[i];
    t->domains = doms;
    t->n_domains = (size_t)src->ndomains;
}

static void fill_cred(PB(Credential) * c, cred_t *src)
{
    PB(Credential) init = PB_INIT(CREDENTIAL);
    *c = init;
    c->username = src->user;
    c->tenant = src->tenant;
    c->environment = src->env;
    c->created_at_ms = T0;
    c->password_count = 1;
}

static void auth_request(bus_server_t *srv, bus_msg_t *msg)
{
    sx_env_t env = PB_INIT(ENVELOPE);
    uint64_t rid = msg->env->request_id;
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
        snprintf(t->domains[t->ndomains++], 64, "%s", d->domain);
        PB(AuthDomainAddReply) rep = PB_INIT(AUTH_DOMAIN_ADD_REPLY);
        rep.domain = d->domain;
        rep.tenant = d->tenant;
        env.body_case = PB_BODY(AUTH_DOMAIN_ADD_REPLY);
        env.auth_domain_add_reply = &rep;
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
        PB(Credential) pc;
        fill_cred(&pc, c);
        PB(AuthCredentialAddReply) rep = PB_INIT(AUTH_CREDENTIAL_ADD_REPLY);
        rep.credential = &pc;
        env.body_case = PB_BODY(AUTH_CREDENTIAL_ADD_REPLY);
        env.auth_credential_add_reply = &rep;
        send_env(srv, msg, &env);
        return;
    }
    case PB_BODY(AUTH_CREDENTIAL_LIST): {
        const char *tenant = msg->env->auth_credential_list->tenant;
        PB(Credential) pcs[8], *ptrs[8];
        size_t n = 0;
        for (int i = 0; i < fake.ncreds; i++) {
            if (tenant[0] && strcmp(tenant, fake.creds[i].tenant) != 0)
                continue;
            fill_cred(&pcs[n], &fake.creds[i]);
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
        cmocka_unit_test(test_log_search),   cmocka_unit_test(test_queue_show),
        cmocka_unit_test(test_sandbox_fail), cmocka_unit_test(test_service_down),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
