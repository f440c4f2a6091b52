/*
 * sendarixctl's queue operations against two stand-in queue instances (a
 * thread with its own loop and bus): queue list with each condition and
 * the merge of both instances, queue stats, hold / release / retry /
 * delete / bounce by id and by condition, suspend and resume, queue show
 * with DSN options and the held flag, and the suppression list (add and
 * remove to the first instance reachable, list and check merged). Each
 * test checks the exit status, the JSON document and what reached the
 * instances; a config whose first queue instance is absent checks the
 * failures: a listing fails, an action reports what it did and fails.
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
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define T0       1700000000000ull /* 2023-11-14T22:13:20Z */
#define MAX_ARGS 40
#define MSG_MAX  8
#define SUPP_MAX 8

typedef struct fmsg {
    const char *id;
    const char *tenant;
    const char *domain;
    const char *rcpt;
    uint64_t received;
    int held;
    int deferred;
    int present;
} fmsg_t;

typedef struct fsupp {
    char tenant[64];
    char address[128];
    char reason[64];
    uint64_t created, expires;
    int used;
} fsupp_t;

typedef struct finst {
    int index; /* 1, 2 */
    bus_server_t *srv;
    fmsg_t msgs[MSG_MAX];
    size_t nmsgs;
    fsupp_t supp[SUPP_MAX];
    /* what reached this instance */
    int lists, stats, actions, suspends, supp_adds, supp_removes, supp_lists, supp_checks, shows;
    int last_kind;
    uint64_t last_older_than;
    uint32_t last_limit;
    char last_domain[128], last_tenant[64], last_state[32], last_recipient[128];
    size_t last_nids;
    char suspend_domain[128];
    int suspend_on;
    uint32_t suspend_seconds;
    uint64_t supp_expires;
    char supp_reason[64];
} finst_t;

static struct {
    char dir[300];
    char config[400];
    char config_down[400];
    pthread_t thread;
    atomic_int stop;
    atomic_int ready;
    loop_t *loop;
    bus_t *bus;
    loop_timer_t poll;
    finst_t inst[2];
} fake;

/* ---- the stand-in queue instances ---- */

static void send_env(finst_t *q, bus_msg_t *msg, sx_env_t *env)
{
    bus_server_send(q->srv, &msg->peer, msg->env->request_id, env, NULL);
}

static int matches(const fmsg_t *m, const PB(QueueSelect) * s, uint64_t now)
{
    if (!m->present)
        return 0;
    if (s->n_message_ids) {
        for (size_t i = 0; i < s->n_message_ids; i++)
            if (strcmp(s->message_ids[i], m->id) == 0)
                return 1;
        return 0;
    }
    if (s->domain[0] && strcasecmp(s->domain, m->domain) != 0)
        return 0;
    if (s->tenant[0] && strcmp(s->tenant, m->tenant) != 0)
        return 0;
    if (s->recipient[0] && strcasecmp(s->recipient, m->rcpt) != 0)
        return 0;
    if (s->older_than_s && now - m->received < s->older_than_s * 1000)
        return 0;
    if (strcmp(s->state, "held") == 0 && !m->held)
        return 0;
    if (strcmp(s->state, "active") == 0 && m->held)
        return 0;
    if (strcmp(s->state, "deferred") == 0 && !m->deferred)
        return 0;
    return 1;
}

static void note_select(finst_t *q, const PB(QueueSelect) * s)
{
    snprintf(q->last_domain, sizeof(q->last_domain), "%s", s->domain);
    snprintf(q->last_tenant, sizeof(q->last_tenant), "%s", s->tenant);
    snprintf(q->last_state, sizeof(q->last_state), "%s", s->state);
    snprintf(q->last_recipient, sizeof(q->last_recipient), "%s", s->recipient);
    q->last_older_than = s->older_than_s;
    q->last_limit = s->limit;
    q->last_nids = s->n_message_ids;
}

/* "now" of the stand-ins: a day after T0, so every message is at least a day old */
#define FAKE_NOW (T0 + 86400000ull)

static void on_list(finst_t *q, bus_msg_t *msg)
{
    const PB(QueueSelect) *s = msg->env->queue_list->select;
    q->lists++;
    note_select(q, s);
    PB(QueueMessageSummary) sums[MSG_MAX], *ptrs[MSG_MAX];
    static char *doms[MSG_MAX][1];
    size_t n = 0, matched = 0;
    for (size_t i = 0; i < q->nmsgs; i++) {
        fmsg_t *m = &q->msgs[i];
        if (!matches(m, s, FAKE_NOW))
            continue;
        matched++;
        if (s->limit && n >= s->limit)
            continue;
        PB(QueueMessageSummary) init = PB_INIT(QUEUE_MESSAGE_SUMMARY);
        sums[n] = init;
        sums[n].message_id = (char *)m->id;
        sums[n].mail_from = "app@example.test";
        sums[n].tenant = (char *)m->tenant;
        sums[n].received_at_ms = m->received;
        sums[n].size = 1000 + i;
        sums[n].recipients = 1;
        sums[n].pending = 1;
        sums[n].state = m->held ? "held" : "active";
        sums[n].next_attempt_ms = m->held ? 0 : m->received + 60000;
        sums[n].last_error = m->deferred ? "451 4.4.1 connection refused" : "";
        doms[i][0] = (char *)m->domain;
        sums[n].domains = doms[i];
        sums[n].n_domains = 1;
        ptrs[n] = &sums[n];
        n++;
    }
    PB(QueueListReply) rep = PB_INIT(QUEUE_LIST_REPLY);
    rep.messages = ptrs;
    rep.n_messages = n;
    rep.matched = (uint32_t)matched;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(QUEUE_LIST_REPLY);
    env.queue_list_reply = &rep;
    send_env(q, msg, &env);
}

static void on_stats(finst_t *q, bus_msg_t *msg)
{
    q->stats++;
    PB(QueueCount)
    c[4] = {PB_INIT(QUEUE_COUNT), PB_INIT(QUEUE_COUNT), PB_INIT(QUEUE_COUNT), PB_INIT(QUEUE_COUNT)};
    PB(QueueCount) * cp[4] = {&c[0], &c[1], &c[2], &c[3]};
    c[0].key = "queued", c[0].count = q->index;
    c[1].key = "deferred", c[1].count = 2;
    c[2].key = "held", c[2].count = q->index == 1 ? 1 : 0;
    c[3].key = "inflight", c[3].count = 0;
    PB(QueueDomainStats) d = PB_INIT(QUEUE_DOMAIN_STATS), *dp[] = {&d};
    d.domain = "dead.example";
    d.pending = 2;
    d.deferred = 2;
    d.failures = 3;
    d.last_error = q->index == 1 ? "451 4.4.1 first error" : "451 4.4.1 connection refused";
    d.last_error_at_ms = T0 + (uint64_t)q->index * 1000;
    d.held_until_ms = q->index == 2 ? T0 + 600000 : 0;
    PB(QueueStatsReply) rep = PB_INIT(QUEUE_STATS_REPLY);
    rep.instance = q->index == 1 ? "queue/1" : "queue/2";
    rep.messages = (uint64_t)q->index + 1;
    rep.by_state = cp;
    rep.n_by_state = 4;
    rep.domains = dp;
    rep.n_domains = 1;
    rep.oldest_age_s = q->index == 1 ? 120 : 3700;
    rep.suppressed = 1;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(QUEUE_STATS_REPLY);
    env.queue_stats_reply = &rep;
    send_env(q, msg, &env);
}

static void on_action(finst_t *q, bus_msg_t *msg)
{
    const PB(QueueAction) *a = msg->env->queue_action;
    q->actions++;
    q->last_kind = a->kind;
    note_select(q, a->select);
    char *ids[MSG_MAX];
    size_t n = 0;
    for (size_t i = 0; i < q->nmsgs; i++) {
        fmsg_t *m = &q->msgs[i];
        if (!matches(m, a->select, FAKE_NOW))
            continue;
        switch (a->kind) {
        case PB_ENUM(QUEUE_ACTION__KIND__HOLD):
            if (m->held)
                continue;
            m->held = 1;
            break;
        case PB_ENUM(QUEUE_ACTION__KIND__RELEASE):
            if (!m->held)
                continue;
            m->held = 0;
            break;
        case PB_ENUM(QUEUE_ACTION__KIND__DELETE):
        case PB_ENUM(QUEUE_ACTION__KIND__BOUNCE):
            m->present = 0;
            break;
        default:
            break;
        }
        ids[n++] = (char *)m->id;
    }
    PB(QueueActionReply) rep = PB_INIT(QUEUE_ACTION_REPLY);
    rep.affected = (uint32_t)n;
    rep.message_ids = ids;
    rep.n_message_ids = n;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(QUEUE_ACTION_REPLY);
    env.queue_action_reply = &rep;
    send_env(q, msg, &env);
}

static void on_suspend(finst_t *q, bus_msg_t *msg)
{
    const PB(QueueDomainSuspend) *s = msg->env->queue_domain_suspend;
    q->suspends++;
    char lower[128];
    snprintf(lower, sizeof(lower), "%s", s->domain);
    for (char *c = lower; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c + 32);
    snprintf(q->suspend_domain, sizeof(q->suspend_domain), "%s", lower);
    q->suspend_on = s->suspend;
    q->suspend_seconds = s->seconds;
    PB(QueueDomainSuspendReply) rep = PB_INIT(QUEUE_DOMAIN_SUSPEND_REPLY);
    rep.domain = lower;
    rep.suspended = s->suspend;
    rep.until_ms = s->suspend && s->seconds ? T0 + (uint64_t)s->seconds * 1000 : 0;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(QUEUE_DOMAIN_SUSPEND_REPLY);
    env.queue_domain_suspend_reply = &rep;
    send_env(q, msg, &env);
}

static fsupp_t *supp_find(finst_t *q, const char *tenant, const char *address)
{
    for (size_t i = 0; i < SUPP_MAX; i++)
        if (q->supp[i].used && strcmp(q->supp[i].tenant, tenant) == 0 &&
            strcasecmp(q->supp[i].address, address) == 0)
            return &q->supp[i];
    return NULL;
}

static void supp_put(finst_t *q, const PB(Suppression) * e)
{
    fsupp_t *s = supp_find(q, e->tenant, e->address);
    for (size_t i = 0; s == NULL && i < SUPP_MAX; i++)
        if (!q->supp[i].used)
            s = &q->supp[i];
    if (s == NULL)
        return;
    s->used = 1;
    snprintf(s->tenant, sizeof(s->tenant), "%s", e->tenant);
    snprintf(s->address, sizeof(s->address), "%s", e->address);
    snprintf(s->reason, sizeof(s->reason), "%s", e->reason[0] ? e->reason : "operator");
    s->created = e->created_at_ms;
    s->expires = e->expires_at_ms;
}

static void fill_supp(PB(Suppression) * e, fsupp_t *s)
{
    PB(Suppression) init = PB_INIT(SUPPRESSION);
    *e = init;
    e->tenant = s->tenant;
    e->address = s->address;
    e->reason = s->reason;
    e->created_at_ms = s->created;
    e->expires_at_ms = s->expires;
}

static void send_supp(finst_t *q, bus_msg_t *msg, fsupp_t **list, size_t n)
{
    PB(Suppression) es[SUPP_MAX], *ptrs[SUPP_MAX];
    for (size_t i = 0; i < n; i++) {
        fill_supp(&es[i], list[i]);
        ptrs[i] = &es[i];
    }
    PB(QueueSuppressReply) rep = PB_INIT(QUEUE_SUPPRESS_REPLY);
    rep.entries = ptrs;
    rep.n_entries = n;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(QUEUE_SUPPRESS_REPLY);
    env.queue_suppress_reply = &rep;
    send_env(q, msg, &env);
}

static void on_suppress(finst_t *q, bus_msg_t *msg)
{
    const sx_env_t *e = msg->env;
    fsupp_t *hits[SUPP_MAX];
    size_t n = 0;
    switch (e->body_case) {
    case PB_BODY(QUEUE_SUPPRESS_ADD): {
        const PB(Suppression) *s = e->queue_suppress_add->entry;
        q->supp_adds++;
        q->supp_expires = s->expires_at_ms;
        snprintf(q->supp_reason, sizeof(q->supp_reason), "%s", s->reason);
        /* as queue does: the entry is passed to the other instance */
        supp_put(&fake.inst[0], s);
        supp_put(&fake.inst[1], s);
        hits[n++] = supp_find(q, s->tenant, s->address);
        send_supp(q, msg, hits, n);
        return;
    }
    case PB_BODY(QUEUE_SUPPRESS_REMOVE): {
        const PB(QueueSuppressRemove) *r = e->queue_suppress_remove;
        q->supp_removes++;
        fsupp_t *s = supp_find(q, r->tenant, r->address);
        if (s == NULL) {
            bus_server_error(q->srv, &msg->peer, e->request_id, 404, "",
                             "%s is not suppressed for tenant \"%s\"", r->address, r->tenant);
            return;
        }
        fsupp_t old = *s;
        for (int i = 0; i < 2; i++) {
            fsupp_t *o = supp_find(&fake.inst[i], r->tenant, r->address);
            if (o)
                o->used = 0;
        }
        hits[n++] = &old;
        send_supp(q, msg, hits, n);
        return;
    }
    case PB_BODY(QUEUE_SUPPRESS_CHECK): {
        const PB(QueueSuppressCheck) *c = e->queue_suppress_check;
        q->supp_checks++;
        fsupp_t *s = supp_find(q, c->tenant, c->address);
        if (s)
            hits[n++] = s;
        send_supp(q, msg, hits, n);
        return;
    }
    default: {
        const PB(QueueSuppressList) *l = e->queue_suppress_list;
        q->supp_lists++;
        for (size_t i = 0; i < SUPP_MAX; i++)
            if (q->supp[i].used && (!l->tenant[0] || strcmp(l->tenant, q->supp[i].tenant) == 0))
                hits[n++] = &q->supp[i];
        send_supp(q, msg, hits, n);
        return;
    }
    }
}

/* m1 lives in instance 1, with DSN options on its recipient. */
static void on_show(finst_t *q, bus_msg_t *msg)
{
    const PB(QueueMessageShow) *s = msg->env->queue_message_show;
    q->shows++;
    fmsg_t *m = NULL;
    for (size_t i = 0; i < q->nmsgs; i++)
        if (q->msgs[i].present && strcmp(q->msgs[i].id, s->message_id) == 0)
            m = &q->msgs[i];
    if (m == NULL) {
        bus_server_error(q->srv, &msg->peer, msg->env->request_id, 404, "", "message %s not found",
                         s->message_id);
        return;
    }
    PB(QueueRecipient) er = PB_INIT(QUEUE_RECIPIENT), *ers[] = {&er};
    er.index = 0;
    er.address = (char *)m->rcpt;
    er.notify = "SUCCESS,FAILURE";
    er.orcpt = "rfc822;Orig@a.example";
    PB(QueueEnvelope) env_ = PB_INIT(QUEUE_ENVELOPE);
    env_.message_id = (char *)m->id;
    env_.mail_from = "app@example.test";
    env_.tenant = (char *)m->tenant;
    env_.received_at_ms = m->received;
    env_.recipients = ers;
    env_.n_recipients = 1;
    PB(QueueRecipientState) r = PB_INIT(QUEUE_RECIPIENT_STATE), *rs[] = {&r};
    r.index = 0;
    r.address = (char *)m->rcpt;
    r.state = "queued";
    PB(QueueMessageShowReply) rep = PB_INIT(QUEUE_MESSAGE_SHOW_REPLY);
    rep.envelope = &env_;
    rep.recipients = rs;
    rep.n_recipients = 1;
    rep.state = "active";
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(QUEUE_MESSAGE_SHOW_REPLY);
    env.queue_message_show_reply = &rep;
    send_env(q, msg, &env);
}

static void on_request(bus_server_t *srv, bus_msg_t *msg, void *arg)
{
    (void)srv;
    finst_t *q = arg;
    switch (msg->env->body_case) {
    case PB_BODY(QUEUE_LIST):
        on_list(q, msg);
        break;
    case PB_BODY(QUEUE_STATS):
        on_stats(q, msg);
        break;
    case PB_BODY(QUEUE_ACTION):
        on_action(q, msg);
        break;
    case PB_BODY(QUEUE_DOMAIN_SUSPEND):
        on_suspend(q, msg);
        break;
    case PB_BODY(QUEUE_SUPPRESS_ADD):
    case PB_BODY(QUEUE_SUPPRESS_REMOVE):
    case PB_BODY(QUEUE_SUPPRESS_LIST):
    case PB_BODY(QUEUE_SUPPRESS_CHECK):
        on_suppress(q, msg);
        break;
    case PB_BODY(QUEUE_MESSAGE_SHOW):
        on_show(q, msg);
        break;
    default:
        bus_server_error(q->srv, &msg->peer, msg->env->request_id, 400, "", "unexpected");
    }
}

static void on_poll(loop_t *loop, void *arg)
{
    (void)arg;
    if (atomic_load(&fake.stop))
        loop_stop(loop);
    else
        loop_timer_start(loop, &fake.poll, 5);
}

static void *fake_main(void *arg)
{
    (void)arg;
    fake.loop = loop_new();
    fake.bus = bus_new(fake.loop, "fake", "1");
    for (int i = 0; i < 2; i++) {
        char ep[500];
        snprintf(ep, sizeof(ep), "ipc://%s/queue-%d.sock", fake.dir, i + 1);
        fake.inst[i].srv = bus_server_new(fake.bus, ep, on_request, &fake.inst[i]);
        if (fake.inst[i].srv == NULL)
            fprintf(stderr, "cannot bind %s\n", ep);
    }
    loop_timer_init(&fake.poll, on_poll, NULL);
    loop_timer_start(fake.loop, &fake.poll, 5);
    atomic_store(&fake.ready, 1);
    loop_run(fake.loop);
    for (int i = 0; i < 2; i++)
        bus_server_destroy(&fake.inst[i].srv);
    bus_destroy(&fake.bus);
    loop_destroy(&fake.loop);
    return NULL;
}

static void write_config(const char *path, const char *queue_list)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "relay = { hostname = \"x\"; };\nbus = {\n  queue = [%s];\n};\n", queue_list);
    fclose(f);
}

/* The messages each instance holds at the start of every test. */
static void seed(void)
{
    finst_t *a = &fake.inst[0], *b = &fake.inst[1];
    fmsg_t m1 = {"m1", "demo", "a.example", "x@a.example", T0 + 1000, 0, 0, 1};
    fmsg_t m2 = {"m2", "demo", "b.example", "y@b.example", FAKE_NOW - 600000, 1, 0, 1};
    fmsg_t m3 = {"m3", "acme", "a.example", "z@a.example", T0 + 2000, 0, 1, 1};
    a->msgs[0] = m1;
    a->msgs[1] = m2;
    a->nmsgs = 2;
    b->msgs[0] = m3;
    b->nmsgs = 1;
}

static int setup(void **state)
{
    (void)state;
    memset(&fake, 0, sizeof(fake));
    fake.inst[0].index = 1;
    fake.inst[1].index = 2;
    const char *base = getenv("SENDARIX_TEST_TMP");
    if (base == NULL || *base == '\0')
        base = "/tmp";
    mkdir(base, 0755);
    snprintf(fake.dir, sizeof(fake.dir), "%s/ctlqueue-XXXXXX", base);
    if (mkdtemp(fake.dir) == NULL)
        return -1;
    char list[1200];
    snprintf(list, sizeof(list), "\"ipc://%s/queue-1.sock\", \"ipc://%s/queue-2.sock\"", fake.dir,
             fake.dir);
    snprintf(fake.config, sizeof(fake.config), "%s/up.conf", fake.dir);
    write_config(fake.config, list);
    snprintf(list, sizeof(list),
             "\"ipc://%s/no-queue.sock\", \"ipc://%s/queue-1.sock\", \"ipc://%s/queue-2.sock\"",
             fake.dir, fake.dir, fake.dir);
    snprintf(fake.config_down, sizeof(fake.config_down), "%s/down.conf", fake.dir);
    write_config(fake.config_down, list);
    seed();
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

static run_t ctl(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Run sendarixctl with the words of fmt (space-separated). */
static run_t ctl(const char *fmt, ...)
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
    uint64_t t0 = clock_mono_ms();
    r.rc = ctl_main(argc, argv, out, err);
    r.ms = clock_mono_ms() - t0;
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
        fail_msg("exit %d, wanted %d; out: %s; err: %s", r->rc, rc, r->out, r->err);
}

static const char *jstr(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static long long jint(json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

/* The message ids of a list document, in order, joined by commas. */
static const char *ids_of(json_t *list, char *buf, size_t size)
{
    size_t i, len = 0;
    json_t *m;
    buf[0] = '\0';
    json_array_foreach(list, i, m)
    {
        const char *id = jstr(m, "message_id") ? jstr(m, "message_id") : json_string_value(m);
        len += (size_t)snprintf(buf + len, size - len, "%s%s", i ? "," : "", id ? id : "?");
        if (len >= size)
            break;
    }
    return buf;
}

/* ---- tests ---- */

static void test_list(void **state)
{
    (void)state;
    const char *c = fake.config;
    char ids[128];
    run_t r = ctl("--json queue list --config %s", c);
    expect(&r, 0);
    json_t *list = json_object_get(r.doc, "messages");
    /* both instances, by arrival */
    assert_string_equal(ids_of(list, ids, sizeof(ids)), "m1,m3,m2");
    assert_int_equal(jint(r.doc, "matched"), 3);
    assert_string_equal(jstr(json_array_get(list, 0), "instance"), "1");
    assert_string_equal(jstr(json_array_get(list, 1), "instance"), "2");
    assert_string_equal(jstr(json_array_get(list, 1), "last_error"),
                        "451 4.4.1 connection refused");
    assert_string_equal(jstr(json_array_get(list, 2), "state"), "held");
    assert_int_equal(fake.inst[0].last_limit, 100); /* the default limit reached queue */
    run_free(&r);

    static const struct {
        const char *opts;
        const char *want;
    } filters[] = {
        {"--domain A.example", "m1,m3"},
        {"--tenant acme", "m3"},
        {"--recipient y@b.example", "m2"},
        {"--older-than 2h", "m1,m3"}, /* m2 arrived ten minutes before the stand-ins' now */
        {"--state held", "m2"},
        {"--state deferred", "m3"},
        {"--state active", "m1,m3"},
        {"--domain a.example --tenant demo", "m1"},
        {"--limit 2", "m1,m3"},
    };
    for (size_t i = 0; i < sizeof(filters) / sizeof(filters[0]); i++) {
        r = ctl("--json queue list %s --config %s", filters[i].opts, c);
        expect(&r, 0);
        const char *got = ids_of(json_object_get(r.doc, "messages"), ids, sizeof(ids));
        if (strcmp(got, filters[i].want) != 0)
            fail_msg("%s: %s, wanted %s", filters[i].opts, got, filters[i].want);
        run_free(&r);
    }
    /* what the last runs told both instances */
    assert_int_equal(fake.inst[1].last_limit, 2);
    r = ctl("--json queue list --older-than 2h --config %s", c);
    run_free(&r);
    assert_int_equal(fake.inst[0].last_older_than, 7200);
    assert_int_equal(fake.inst[1].last_older_than, 7200);
    r = ctl("--json queue list --limit 2 --config %s", c);
    assert_int_equal(jint(r.doc, "matched"), 3); /* all that matched, beyond the limit */
    run_free(&r);

    r = ctl("queue list --config %s", c);
    expect(&r, 0);
    assert_non_null(strstr(r.out, "ID "));
    assert_non_null(strstr(r.out, "m3 "));
    assert_non_null(strstr(r.out, "last error: 451 4.4.1 connection refused"));
    assert_non_null(strstr(r.out, "3 shown, 3 matched"));
    run_free(&r);
    r = ctl("queue list --tenant nobody --config %s", c);
    expect(&r, 0);
    assert_non_null(strstr(r.out, "no messages match"));
    run_free(&r);
}

static void test_stats(void **state)
{
    (void)state;
    run_t r = ctl("--json queue stats --config %s", fake.config);
    expect(&r, 0);
    json_t *insts = json_object_get(r.doc, "instances");
    assert_int_equal(json_array_size(insts), 2);
    assert_string_equal(jstr(json_array_get(insts, 1), "instance"), "2");
    assert_int_equal(jint(json_array_get(insts, 1), "oldest_age_s"), 3700);
    json_t *total = json_object_get(r.doc, "total");
    assert_int_equal(jint(total, "messages"), 5);
    assert_int_equal(jint(total, "oldest_age_s"), 3700);
    assert_int_equal(jint(json_object_get(total, "by_state"), "queued"), 3);
    assert_int_equal(jint(json_object_get(total, "by_state"), "deferred"), 4);
    json_t *d = json_array_get(json_object_get(r.doc, "domains"), 0);
    assert_string_equal(jstr(d, "domain"), "dead.example");
    assert_int_equal(jint(d, "pending"), 4);
    assert_int_equal(jint(d, "failures"), 6);
    assert_string_equal(jstr(d, "last_error"), "451 4.4.1 connection refused");
    assert_string_equal(jstr(d, "last_error_at"), "2023-11-14T22:13:22Z");
    assert_string_equal(jstr(d, "held_until"), "2023-11-14T22:23:20Z");
    run_free(&r);

    r = ctl("queue stats --config %s", fake.config);
    expect(&r, 0);
    assert_non_null(strstr(r.out, "total: 5 messages, oldest 1h1m; recipients: queued 3, "
                                  "deferred 4, held 1, inflight 0"));
    assert_non_null(strstr(r.out, "dead.example"));
    assert_non_null(strstr(r.out, "held until 2023-11-14T22:23:20Z"));
    assert_non_null(strstr(r.out, "451 4.4.1 connection refused (2023-11-14T22:13:22Z)"));
    run_free(&r);
}

static void test_actions(void **state)
{
    (void)state;
    const char *c = fake.config;
    char ids[128];
    /* by id: each instance acts on what it holds */
    run_t r = ctl("--json queue hold m1 m3 --config %s", c);
    expect(&r, 0);
    assert_string_equal(jstr(r.doc, "action"), "hold");
    assert_int_equal(jint(r.doc, "affected"), 2);
    assert_string_equal(ids_of(json_object_get(r.doc, "message_ids"), ids, sizeof(ids)), "m1,m3");
    assert_int_equal(fake.inst[0].last_kind, PB_ENUM(QUEUE_ACTION__KIND__HOLD));
    assert_int_equal(fake.inst[1].last_nids, 2);
    assert_int_equal(json_array_size(json_object_get(r.doc, "instances")), 2);
    assert_true(fake.inst[0].msgs[0].held && fake.inst[1].msgs[0].held);
    run_free(&r);

    /* by condition */
    r = ctl("--json queue release --state held --tenant demo --config %s", c);
    expect(&r, 0);
    assert_string_equal(jstr(r.doc, "action"), "release");
    assert_string_equal(ids_of(json_object_get(r.doc, "message_ids"), ids, sizeof(ids)), "m1,m2");
    assert_string_equal(fake.inst[1].last_state, "held");
    assert_string_equal(fake.inst[1].last_tenant, "demo");
    assert_int_equal(fake.inst[1].last_nids, 0);
    assert_true(fake.inst[1].msgs[0].held); /* m3 is acme's: still held */
    run_free(&r);

    r = ctl("--json queue retry --domain a.example --config %s", c);
    expect(&r, 0);
    assert_int_equal(fake.inst[0].last_kind, PB_ENUM(QUEUE_ACTION__KIND__RETRY));
    assert_string_equal(fake.inst[0].last_domain, "a.example");
    assert_int_equal(jint(r.doc, "affected"), 2);
    run_free(&r);

    r = ctl("queue delete m2 --config %s", c);
    expect(&r, 0);
    assert_non_null(strstr(r.out, "delete: 1 message\n  m2\n"));
    assert_false(fake.inst[0].msgs[1].present);
    assert_int_equal(fake.inst[0].last_kind, PB_ENUM(QUEUE_ACTION__KIND__DELETE));
    run_free(&r);

    r = ctl("--json queue bounce --older-than 1h --recipient z@a.example --config %s", c);
    expect(&r, 0);
    assert_int_equal(fake.inst[1].last_kind, PB_ENUM(QUEUE_ACTION__KIND__BOUNCE));
    assert_int_equal(fake.inst[1].last_older_than, 3600);
    assert_string_equal(fake.inst[1].last_recipient, "z@a.example");
    assert_string_equal(ids_of(json_object_get(r.doc, "message_ids"), ids, sizeof(ids)), "m3");
    run_free(&r);

    /* nothing matched: success with nothing affected */
    r = ctl("--json queue hold nosuch --config %s", c);
    expect(&r, 0);
    assert_int_equal(jint(r.doc, "affected"), 0);
    run_free(&r);

    /* neither ids nor conditions: refused before any instance is asked */
    int before = fake.inst[0].actions;
    r = ctl("--json queue delete --config %s", c);
    expect(&r, 2);
    assert_non_null(strstr(jstr(r.doc, "error"), "name the messages"));
    assert_int_equal(fake.inst[0].actions, before);
    run_free(&r);
    seed();
}

static void test_suspend_resume(void **state)
{
    (void)state;
    run_t r = ctl("--json queue suspend Slow.Example --for 2h --config %s", fake.config);
    expect(&r, 0);
    assert_string_equal(jstr(r.doc, "domain"), "slow.example");
    assert_true(json_is_true(json_object_get(r.doc, "suspended")));
    assert_string_equal(jstr(r.doc, "until"), "2023-11-15T00:13:20Z");
    for (int i = 0; i < 2; i++) {
        assert_string_equal(fake.inst[i].suspend_domain, "slow.example");
        assert_int_equal(fake.inst[i].suspend_on, 1);
        assert_int_equal(fake.inst[i].suspend_seconds, 7200);
    }
    run_free(&r);

    r = ctl("queue suspend slow.example --config %s", fake.config);
    expect(&r, 0);
    assert_int_equal(fake.inst[1].suspend_seconds, 0);
    assert_non_null(strstr(r.out, "slow.example suspended until resumed"));
    run_free(&r);

    r = ctl("--json queue resume slow.example --config %s", fake.config);
    expect(&r, 0);
    assert_true(json_is_false(json_object_get(r.doc, "suspended")));
    assert_true(json_is_null(json_object_get(r.doc, "until")));
    assert_int_equal(fake.inst[0].suspend_on, 0);
    assert_int_equal(fake.inst[1].suspend_on, 0);
    run_free(&r);
}

static void test_show(void **state)
{
    (void)state;
    fake.inst[0].msgs[1].held = 1;
    run_t r = ctl("--json queue show m2 --config %s", fake.config);
    expect(&r, 0);
    assert_true(json_is_true(json_object_get(r.doc, "held")));
    json_t *rc = json_array_get(json_object_get(r.doc, "recipients"), 0);
    assert_string_equal(jstr(rc, "notify"), "SUCCESS,FAILURE");
    assert_string_equal(jstr(rc, "orcpt"), "rfc822;Orig@a.example");
    run_free(&r);

    r = ctl("--json queue show m3 --config %s", fake.config);
    expect(&r, 0);
    assert_true(json_is_false(json_object_get(r.doc, "held")));
    run_free(&r);

    r = ctl("queue show m2 --config %s", fake.config);
    expect(&r, 0);
    assert_non_null(strstr(r.out, "state     active (held)"));
    assert_non_null(strstr(r.out, "notify=SUCCESS,FAILURE orcpt=rfc822;Orig@a.example"));
    run_free(&r);
}

static void test_suppress(void **state)
{
    (void)state;
    const char *c = fake.config;
    run_t r = ctl("--json suppress add Gone@Example.org --tenant demo --reason complaint --ttl 3d "
                  "--config %s",
                  c);
    expect(&r, 0);
    json_t *e = json_object_get(r.doc, "suppression");
    assert_string_equal(jstr(e, "tenant"), "demo");
    assert_string_equal(jstr(e, "address"), "Gone@Example.org");
    assert_string_equal(jstr(e, "reason"), "complaint");
    assert_true(json_is_null(json_object_get(e, "reply")));
    assert_non_null(jstr(e, "created_at"));
    assert_non_null(jstr(e, "expires_at"));
    assert_int_equal(json_object_size(e), 6);
    /* to the first instance only; the expiry three days on */
    assert_int_equal(fake.inst[0].supp_adds, 1);
    assert_int_equal(fake.inst[1].supp_adds, 0);
    uint64_t now = clock_wall_ms();
    assert_true(fake.inst[0].supp_expires >= now + 3 * 86400000ull - 60000);
    assert_true(fake.inst[0].supp_expires <= now + 3 * 86400000ull);
    run_free(&r);

    r = ctl("suppress add other@example.org --tenant acme --config %s", c);
    expect(&r, 0);
    assert_non_null(strstr(r.out, "suppressed other@example.org for tenant acme (operator) until "
                                  "removed"));
    assert_string_equal(fake.inst[0].supp_reason, "operator");
    run_free(&r);
    /* an entry only one instance kept (it was down when the other passed it on) */
    PB(Suppression) only = PB_INIT(SUPPRESSION);
    only.tenant = "demo";
    only.address = "late@example.org";
    only.reason = "hard-bounce";
    only.created_at_ms = T0;
    supp_put(&fake.inst[1], &only);

    r = ctl("--json suppress list --config %s", c);
    expect(&r, 0);
    json_t *list = json_object_get(r.doc, "suppressions");
    assert_int_equal(json_array_size(list), 3); /* merged: each entry once */
    assert_string_equal(jstr(json_array_get(list, 0), "tenant"), "acme");
    assert_string_equal(jstr(json_array_get(list, 1), "address"), "Gone@Example.org");
    assert_string_equal(jstr(json_array_get(list, 2), "address"), "late@example.org");
    assert_int_equal(fake.inst[0].supp_lists, 1);
    assert_int_equal(fake.inst[1].supp_lists, 1);
    run_free(&r);
    r = ctl("--json suppress list --tenant acme --config %s", c);
    expect(&r, 0);
    assert_int_equal(json_array_size(json_object_get(r.doc, "suppressions")), 1);
    run_free(&r);
    r = ctl("suppress list --config %s", c);
    expect(&r, 0);
    assert_non_null(strstr(r.out, "TENANT"));
    assert_non_null(strstr(r.out, "late@example.org"));
    run_free(&r);

    r = ctl("--json suppress check gone@example.org --tenant demo --config %s", c);
    expect(&r, 0);
    assert_true(json_is_true(json_object_get(r.doc, "suppressed")));
    assert_string_equal(jstr(json_object_get(r.doc, "entry"), "reason"), "complaint");
    run_free(&r);
    r = ctl("--json suppress check late@example.org --tenant demo --config %s", c);
    expect(&r, 0);
    assert_true(json_is_true(json_object_get(r.doc, "suppressed")));
    run_free(&r);
    r = ctl("--json suppress check gone@example.org --tenant acme --config %s", c);
    expect(&r, 0); /* not suppressed is an answer, not a failure */
    assert_true(json_is_false(json_object_get(r.doc, "suppressed")));
    assert_true(json_is_null(json_object_get(r.doc, "entry")));
    run_free(&r);
    r = ctl("suppress check gone@example.org --tenant acme --config %s", c);
    expect(&r, 0);
    assert_non_null(strstr(r.out, "is not suppressed for tenant acme"));
    run_free(&r);

    r = ctl("--json suppress remove gone@example.org --tenant demo --config %s", c);
    expect(&r, 0);
    assert_true(json_is_true(json_object_get(r.doc, "removed")));
    assert_string_equal(jstr(json_object_get(r.doc, "suppression"), "reason"), "complaint");
    assert_int_equal(fake.inst[0].supp_removes, 1);
    assert_int_equal(fake.inst[1].supp_removes, 0);
    run_free(&r);
    r = ctl("--json suppress check gone@example.org --tenant demo --config %s", c);
    assert_true(json_is_false(json_object_get(r.doc, "suppressed")));
    run_free(&r);
    /* queue's refusal: exit 1 with its sentence */
    r = ctl("--json suppress remove gone@example.org --tenant demo --config %s", c);
    expect(&r, 1);
    assert_string_equal(jstr(r.doc, "error"),
                        "gone@example.org is not suppressed for tenant \"demo\"");
    run_free(&r);
}

/* The first configured instance is absent. */
static void test_instance_down(void **state)
{
    (void)state;
    const char *c = fake.config_down;
    /* a listing that would miss an instance fails, naming it */
    run_t r = ctl("--json --timeout 0.3 queue list --config %s", c);
    expect(&r, 1);
    assert_non_null(strstr(jstr(r.doc, "error"), "queue instance 1: not reachable"));
    run_free(&r);
    r = ctl("--json --timeout 0.3 queue stats --config %s", c);
    expect(&r, 1);
    run_free(&r);
    r = ctl("--json --timeout 0.3 suppress check a@example.org --tenant demo --config %s", c);
    expect(&r, 1);
    run_free(&r);

    /* an action is applied where it can be, said so, and the command fails */
    r = ctl("--json --timeout 0.3 queue hold m1 --config %s", c);
    expect(&r, 1);
    assert_int_equal(jint(r.doc, "affected"), 1);
    assert_non_null(strstr(jstr(r.doc, "error"), "queue instance 1: not reachable"));
    assert_int_equal(json_array_size(json_object_get(r.doc, "instances")), 2);
    assert_true(fake.inst[0].msgs[0].held);
    run_free(&r);
    r = ctl("--timeout 0.3 queue suspend x.example --config %s", c);
    expect(&r, 1);
    assert_non_null(strstr(r.out, "x.example suspended"));
    assert_non_null(strstr(r.err, "queue instance 1"));
    run_free(&r);

    /* add goes on to the next instance, after a short wait for the first */
    int adds = fake.inst[0].supp_adds;
    r = ctl("--json suppress add down@example.org --tenant demo --config %s", c);
    expect(&r, 0);
    assert_int_equal(fake.inst[0].supp_adds, adds + 1);
    assert_true(r.ms >= 900 && r.ms < 3000);
    run_free(&r);
    seed();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list),          cmocka_unit_test(test_stats),
        cmocka_unit_test(test_actions),       cmocka_unit_test(test_suspend_resume),
        cmocka_unit_test(test_show),          cmocka_unit_test(test_suppress),
        cmocka_unit_test(test_instance_down),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
