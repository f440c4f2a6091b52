/*
 * ctl_queue_ops: what operators do to the queue from the CLI: `queue list`,
 * `queue stats`, `queue hold|release|retry|delete|bounce` and `queue
 * suspend|resume`. Every queue instance holds its own messages, so each
 * request goes to all of them at once and the answers are merged, each
 * message saying which instance ("1", "2"...) holds it. A listing or a
 * count that misses an instance would mislead, so one that cannot be asked
 * fails the command; an action or a suspension is applied where it could
 * be, reported, and the command fails naming the instance it missed.
 * Queue decides what matches; this file only checks the arguments.
 */
#include "ctl.h"
#include "core/alloc.h"
#include "ctl_json.h"
#include "core/isotime.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define LIST_LIMIT_DEFAULT 100
#define LIST_LIMIT_MAX     10000 /* what one queue instance lists at most */
#define QUEUE_ID_MAX       64
#define DOMAIN_MAX         255
#define RECIPIENT_MAX      511
#define AGE_MAX_S          (365ull * 86400ull)
#define SUSPEND_MAX_S      (365ull * 86400ull)

const char *const ctl_queue_states[] = {"active", "held", "deferred", NULL};

static void instance_label(size_t i, char *buf, size_t size)
{
    snprintf(buf, size, "%zu", i + 1);
}

/* ---- selection ---- */

static int check_domain(ctl_t *ctl, const ctl_args_t *args, const char *what, const char *d)
{
    if (d == NULL || d[0] == '\0' || strlen(d) > DOMAIN_MAX || strpbrk(d, " @<>\t\r\n"))
        return ctl_usage_error(ctl, args->cmd, "%s must be a domain name of 1 to %d characters",
                               what, DOMAIN_MAX);
    return CTL_OK;
}

int ctl_queue_select(ctl_t *ctl, const ctl_args_t *args, PB(QueueSelect) * sel, int with_ids)
{
    const char *v;
    if ((v = ctl_opt(args, "domain")) != NULL) {
        if (check_domain(ctl, args, "--domain", v) != CTL_OK)
            return CTL_USAGE;
        sel->domain = (char *)v;
    }
    if ((v = ctl_opt(args, "tenant")) != NULL) {
        if (ctl_check_name(ctl, args, "--tenant", v) != CTL_OK)
            return CTL_USAGE;
        sel->tenant = (char *)v;
    }
    if ((v = ctl_opt(args, "recipient")) != NULL) {
        if (v[0] == '\0' || strlen(v) > RECIPIENT_MAX)
            return ctl_usage_error(ctl, args->cmd, "--recipient must be 1 to %d characters",
                                   RECIPIENT_MAX);
        sel->recipient = (char *)v;
    }
    if ((v = ctl_opt(args, "older-than")) != NULL) {
        uint64_t s;
        if (ctl_duration_parse(v, AGE_MAX_S, &s) < 0 || s == 0)
            return ctl_usage_error(ctl, args->cmd,
                                   "--older-than needs a duration such as 30s, 5m, 2h or 3d (at "
                                   "most 365d), not '%s'",
                                   v);
        sel->older_than_s = s;
    }
    if ((v = ctl_opt(args, "state")) != NULL) {
        size_t i = 0;
        while (ctl_queue_states[i] && strcmp(ctl_queue_states[i], v) != 0)
            i++;
        if (ctl_queue_states[i] == NULL)
            return ctl_usage_error(ctl, args->cmd,
                                   "--state must be active, held or deferred, not '%s'", v);
        sel->state = (char *)v;
    }
    if (!with_ids)
        return CTL_OK;
    for (size_t i = 0; i < args->nargs; i++)
        if (args->args[i][0] == '\0' || strlen(args->args[i]) > QUEUE_ID_MAX)
            return ctl_usage_error(ctl, args->cmd, "'%.80s' is not a message id", args->args[i]);
    int conditions =
        sel->domain[0] || sel->tenant[0] || sel->recipient[0] || sel->older_than_s || sel->state[0];
    if (args->nargs && conditions)
        return ctl_usage_error(ctl, args->cmd,
                               "give message ids or conditions (--domain, --tenant, "
                               "--older-than, --state, --recipient), not both");
    if (args->nargs == 0 && !conditions)
        return ctl_usage_error(ctl, args->cmd,
                               "name the messages: ids, or at least one of --domain, --tenant, "
                               "--older-than, --state, --recipient");
    sel->message_ids = (char **)args->args;
    sel->n_message_ids = args->nargs;
    return CTL_OK;
}

/* ---- list ---- */

typedef struct listed {
    const PB(QueueMessageSummary) * m;
    size_t instance;
} listed_t;

static int listed_cmp(const void *a, const void *b)
{
    const listed_t *x = a, *y = b;
    if (x->m->received_at_ms != y->m->received_at_ms)
        return x->m->received_at_ms < y->m->received_at_ms ? -1 : 1;
    int c =
        strcmp(x->m->message_id ? x->m->message_id : "", y->m->message_id ? y->m->message_id : "");
    if (c)
        return c;
    return x->instance < y->instance ? -1 : x->instance > y->instance;
}

json_t *ctl_queue_list_merge(PB(QueueListReply) *const *replies, size_t n, size_t limit)
{
    size_t total = 0, matched = 0;
    for (size_t i = 0; i < n; i++)
        if (replies[i]) {
            total += replies[i]->n_messages;
            matched += replies[i]->matched;
        }
    listed_t *all = xcalloc(total ? total : 1, sizeof(*all));
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; replies[i] && j < replies[i]->n_messages; j++)
            if (replies[i]->messages[j])
                all[k++] = (listed_t){replies[i]->messages[j], i};
    qsort(all, k, sizeof(*all), listed_cmp);
    if (k > limit)
        k = limit;
    json_t *list = json_array();
    for (size_t i = 0; i < k; i++) {
        char inst[24];
        instance_label(all[i].instance, inst, sizeof(inst));
        json_array_append_new(list, ctl_json_queue_summary(inst, all[i].m));
    }
    free(all);
    json_t *doc = json_object();
    json_object_set_new(doc, "messages", list);
    json_object_set_new(doc, "matched", json_integer((json_int_t)matched));
    return doc;
}

static const char *jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static void print_list(ctl_t *ctl, json_t *doc)
{
    FILE *f = ctl->out;
    json_t *list = json_object_get(doc, "messages");
    long long matched = json_integer_value(json_object_get(doc, "matched"));
    if (json_array_size(list) == 0) {
        fprintf(f, "no messages match\n");
        return;
    }
    fprintf(f, "%-20s %-4s %-7s %-7s %9s %-20s %-20s %s\n", "ID", "INST", "STATE", "RCPT", "SIZE",
            "RECEIVED", "NEXT ATTEMPT", "FROM");
    size_t i;
    json_t *m;
    json_array_foreach(list, i, m)
    {
        char rcpt[32];
        snprintf(rcpt, sizeof(rcpt), "%lld/%lld",
                 (long long)json_integer_value(json_object_get(m, "pending")),
                 (long long)json_integer_value(json_object_get(m, "recipients")));
        const char *next = jstr(m, "next_attempt");
        fprintf(f, "%-20s %-4s %-7s %-7s %9lld %-20s %-20s <%s>\n", jstr(m, "message_id"),
                jstr(m, "instance"), jstr(m, "state"), rcpt,
                (long long)json_integer_value(json_object_get(m, "size")), jstr(m, "received_at"),
                next[0] ? next : "-", jstr(m, "mail_from"));
        if (jstr(m, "last_error")[0])
            fprintf(f, "    last error: %s\n", jstr(m, "last_error"));
    }
    fprintf(f, "%zu shown, %lld matched\n", json_array_size(list), matched);
}

int ctl_cmd_queue_list(ctl_t *ctl, const ctl_args_t *args)
{
    PB(QueueSelect) sel = PB_INIT(QUEUE_SELECT);
    if (ctl_queue_select(ctl, args, &sel, 0) != CTL_OK)
        return CTL_USAGE;
    unsigned long limit = LIST_LIMIT_DEFAULT;
    const char *v = ctl_opt(args, "limit");
    if (v && ctl_parse_uint(v, 1, LIST_LIMIT_MAX, &limit) < 0)
        return ctl_usage_error(ctl, args->cmd, "--limit needs a number from 1 to %d, not '%s'",
                               LIST_LIMIT_MAX, v);
    sel.limit = (uint32_t)limit;
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    if (ctl->ep.queue.n == 0)
        return ctl_fail(ctl, "no bus.queue endpoint in %s", ctl->config_path);
    PB(QueueList) list = PB_INIT(QUEUE_LIST);
    list.select = &sel;
    sx_env_t req = PB_INIT(ENVELOPE);
    req.body_case = PB_BODY(QUEUE_LIST);
    req.queue_list = &list;
    ctl_fanout_t fo = {0};
    ctl_fanout_run(ctl, &fo, &ctl->ep.queue, &req);
    char problem[CTL_TEXT_MAX];
    int rc = CTL_OK;
    if (ctl_fanout_problem(ctl, &fo, "queue", PB_BODY(QUEUE_LIST_REPLY), problem,
                           sizeof(problem))) {
        rc = ctl_fail(ctl, "%s", problem);
    } else {
        PB(QueueListReply) **replies = xcalloc(fo.n, sizeof(*replies));
        for (size_t i = 0; i < fo.n; i++)
            replies[i] = fo.calls[i].reply->queue_list_reply;
        json_t *doc = ctl_queue_list_merge(replies, fo.n, limit);
        free(replies);
        if (ctl->json) {
            ctl_emit(ctl, doc);
        } else {
            print_list(ctl, doc);
            json_decref(doc);
        }
    }
    ctl_fanout_free(&fo);
    return rc;
}

/* ---- stats ---- */

static json_t *by_state(PB(QueueCount) *const *counts, size_t n)
{
    json_t *o = json_object();
    for (size_t i = 0; i < n; i++)
        if (counts[i] && counts[i]->key && counts[i]->key[0])
            json_object_set_new(o, counts[i]->key, json_integer((json_int_t)counts[i]->count));
    return o;
}

/* Add the counts of from into into, key by key. */
static void add_counts(json_t *into, json_t *from)
{
    const char *key;
    json_t *v;
    json_object_foreach(from, key, v)
    {
        json_int_t have = json_integer_value(json_object_get(into, key));
        json_object_set_new(into, key, json_integer(have + json_integer_value(v)));
    }
}

typedef struct dom_merge {
    const char *domain;
    uint64_t pending, deferred, failures;
    const char *last_error;
    uint64_t last_error_at;
    int suspended;
    uint64_t held_until;
} dom_merge_t;

static int dom_cmp(const void *a, const void *b)
{
    const dom_merge_t *x = a, *y = b;
    if (x->pending != y->pending)
        return x->pending > y->pending ? -1 : 1;
    return strcmp(x->domain, y->domain);
}

json_t *ctl_queue_stats_merge(PB(QueueStatsReply) *const *replies, size_t n)
{
    json_t *instances = json_array(), *total_states = json_object();
    uint64_t messages = 0, oldest = 0;
    size_t ndom = 0;
    for (size_t i = 0; i < n; i++)
        if (replies[i])
            ndom += replies[i]->n_domains;
    dom_merge_t *doms = xcalloc(ndom ? ndom : 1, sizeof(*doms));
    size_t nd = 0;
    for (size_t i = 0; i < n; i++) {
        const PB(QueueStatsReply) *r = replies[i];
        if (r == NULL)
            continue;
        char inst[24];
        instance_label(i, inst, sizeof(inst));
        json_t *o = json_object(), *states = by_state(r->by_state, r->n_by_state);
        json_object_set_new(o, "instance", json_string(inst));
        json_object_set_new(o, "messages", json_integer((json_int_t)r->messages));
        add_counts(total_states, states);
        json_object_set_new(o, "by_state", states);
        json_object_set_new(o, "oldest_age_s", json_integer((json_int_t)r->oldest_age_s));
        json_object_set_new(o, "suppressed", json_integer((json_int_t)r->suppressed));
        json_array_append_new(instances, o);
        messages += r->messages;
        if (r->oldest_age_s > oldest)
            oldest = r->oldest_age_s;
        for (size_t j = 0; j < r->n_domains; j++) {
            const PB(QueueDomainStats) *d = r->domains[j];
            if (d == NULL || d->domain == NULL || d->domain[0] == '\0')
                continue;
            size_t k = 0;
            while (k < nd && strcasecmp(doms[k].domain, d->domain) != 0)
                k++;
            if (k == nd)
                doms[nd++].domain = d->domain;
            dom_merge_t *m = &doms[k];
            m->pending += d->pending;
            m->deferred += d->deferred;
            m->failures += d->failures;
            m->suspended |= d->suspended;
            if (d->held_until_ms > m->held_until)
                m->held_until = d->held_until_ms;
            if (d->last_error && d->last_error[0] &&
                (m->last_error == NULL || d->last_error_at_ms > m->last_error_at)) {
                m->last_error = d->last_error;
                m->last_error_at = d->last_error_at_ms;
            }
        }
    }
    qsort(doms, nd, sizeof(*doms), dom_cmp);
    json_t *dlist = json_array();
    for (size_t k = 0; k < nd; k++) {
        const dom_merge_t *m = &doms[k];
        json_t *o = json_object();
        json_object_set_new(o, "domain", ctl_json_str(m->domain));
        json_object_set_new(o, "pending", json_integer((json_int_t)m->pending));
        json_object_set_new(o, "deferred", json_integer((json_int_t)m->deferred));
        json_object_set_new(o, "last_error", ctl_json_str(m->last_error));
        json_object_set_new(o, "last_error_at", ctl_json_time(m->last_error_at, 0));
        json_object_set_new(o, "suspended", json_boolean(m->suspended));
        json_object_set_new(o, "held_until", ctl_json_time(m->held_until, 0));
        json_object_set_new(o, "failures", json_integer((json_int_t)m->failures));
        json_array_append_new(dlist, o);
    }
    free(doms);
    json_t *total = json_object();
    json_object_set_new(total, "messages", json_integer((json_int_t)messages));
    json_object_set_new(total, "by_state", total_states);
    json_object_set_new(total, "oldest_age_s", json_integer((json_int_t)oldest));
    json_t *doc = json_object();
    json_object_set_new(doc, "instances", instances);
    json_object_set_new(doc, "total", total);
    json_object_set_new(doc, "domains", dlist);
    return doc;
}

/* "3d4h", "2h5m", "42s": an age for people. */
static const char *age_text(long long s, char *buf, size_t size)
{
    if (s >= 86400)
        snprintf(buf, size, "%lldd%lldh", s / 86400, (s % 86400) / 3600);
    else if (s >= 3600)
        snprintf(buf, size, "%lldh%lldm", s / 3600, (s % 3600) / 60);
    else if (s >= 60)
        snprintf(buf, size, "%lldm%llds", s / 60, s % 60);
    else
        snprintf(buf, size, "%llds", s);
    return buf;
}

static void print_states(FILE *f, json_t *states)
{
    const char *key;
    json_t *v;
    int first = 1;
    json_object_foreach(states, key, v)
    {
        fprintf(f, "%s%s %lld", first ? "" : ", ", key, (long long)json_integer_value(v));
        first = 0;
    }
    if (first)
        fprintf(f, "none");
}

static void print_stats(ctl_t *ctl, json_t *doc)
{
    FILE *f = ctl->out;
    char age[32];
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(doc, "instances"), i, o)
    {
        fprintf(f, "queue %s: %lld messages, oldest %s, %lld suppressed; recipients: ",
                jstr(o, "instance"), (long long)json_integer_value(json_object_get(o, "messages")),
                age_text(json_integer_value(json_object_get(o, "oldest_age_s")), age, sizeof(age)),
                (long long)json_integer_value(json_object_get(o, "suppressed")));
        print_states(f, json_object_get(o, "by_state"));
        fputc('\n', f);
    }
    json_t *t = json_object_get(doc, "total");
    fprintf(f, "total: %lld messages, oldest %s; recipients: ",
            (long long)json_integer_value(json_object_get(t, "messages")),
            age_text(json_integer_value(json_object_get(t, "oldest_age_s")), age, sizeof(age)));
    print_states(f, json_object_get(t, "by_state"));
    fputc('\n', f);
    json_t *doms = json_object_get(doc, "domains");
    if (json_array_size(doms) == 0)
        return;
    fprintf(f, "\n%-32s %7s %8s %8s %-31s %s\n", "DOMAIN", "PENDING", "DEFERRED", "FAILURES",
            "STATE", "LAST ERROR");
    json_array_foreach(doms, i, o)
    {
        char state[64];
        if (json_is_true(json_object_get(o, "suspended")))
            snprintf(state, sizeof(state), "suspended");
        else if (jstr(o, "held_until")[0])
            snprintf(state, sizeof(state), "held until %s", jstr(o, "held_until"));
        else
            snprintf(state, sizeof(state), "open");
        fprintf(f, "%-32s %7lld %8lld %8lld %-31s", jstr(o, "domain"),
                (long long)json_integer_value(json_object_get(o, "pending")),
                (long long)json_integer_value(json_object_get(o, "deferred")),
                (long long)json_integer_value(json_object_get(o, "failures")), state);
        if (jstr(o, "last_error")[0])
            fprintf(f, " %s (%s)", jstr(o, "last_error"), jstr(o, "last_error_at"));
        else
            fprintf(f, " -");
        fputc('\n', f);
    }
}

int ctl_cmd_queue_stats(ctl_t *ctl, const ctl_args_t *args)
{
    (void)args;
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    if (ctl->ep.queue.n == 0)
        return ctl_fail(ctl, "no bus.queue endpoint in %s", ctl->config_path);
    PB(QueueStats) stats = PB_INIT(QUEUE_STATS);
    sx_env_t req = PB_INIT(ENVELOPE);
    req.body_case = PB_BODY(QUEUE_STATS);
    req.queue_stats = &stats;
    ctl_fanout_t fo = {0};
    ctl_fanout_run(ctl, &fo, &ctl->ep.queue, &req);
    char problem[CTL_TEXT_MAX];
    int rc = CTL_OK;
    if (ctl_fanout_problem(ctl, &fo, "queue", PB_BODY(QUEUE_STATS_REPLY), problem,
                           sizeof(problem))) {
        rc = ctl_fail(ctl, "%s", problem);
    } else {
        PB(QueueStatsReply) **replies = xcalloc(fo.n, sizeof(*replies));
        for (size_t i = 0; i < fo.n; i++)
            replies[i] = fo.calls[i].reply->queue_stats_reply;
        json_t *doc = ctl_queue_stats_merge(replies, fo.n);
        free(replies);
        if (ctl->json) {
            ctl_emit(ctl, doc);
        } else {
            print_stats(ctl, doc);
            json_decref(doc);
        }
    }
    ctl_fanout_free(&fo);
    return rc;
}

/* ---- actions ---- */

/*
 * Finish a command whose change reached only some instances: the document
 * (what was done) gains "error", and the command fails.
 */
static int partial_failure(ctl_t *ctl, json_t *doc, const char *problem)
{
    if (ctl->json) {
        json_object_set_new(doc, "error", ctl_json_str(problem));
        ctl_emit(ctl, doc);
    } else {
        json_decref(doc);
    }
    fprintf(ctl->err, "sendarixctl: %s\n", problem);
    return CTL_FAIL;
}

static int action_run(ctl_t *ctl, const ctl_args_t *args, int kind, const char *name)
{
    PB(QueueSelect) sel = PB_INIT(QUEUE_SELECT);
    if (ctl_queue_select(ctl, args, &sel, 1) != CTL_OK)
        return CTL_USAGE;
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    if (ctl->ep.queue.n == 0)
        return ctl_fail(ctl, "no bus.queue endpoint in %s", ctl->config_path);
    PB(QueueAction) act = PB_INIT(QUEUE_ACTION);
    act.kind = kind;
    act.select = &sel;
    sx_env_t req = PB_INIT(ENVELOPE);
    req.body_case = PB_BODY(QUEUE_ACTION);
    req.queue_action = &act;
    ctl_fanout_t fo = {0};
    ctl_fanout_run(ctl, &fo, &ctl->ep.queue, &req);

    char problem[CTL_TEXT_MAX] = "";
    json_t *ids = json_array(), *instances = json_array();
    uint64_t affected = 0;
    for (size_t i = 0; i < fo.n; i++) {
        char why[CTL_TEXT_MAX], inst[24];
        const char *bad =
            ctl_call_check(ctl, &fo.calls[i], PB_BODY(QUEUE_ACTION_REPLY), NULL, why, sizeof(why));
        const PB(QueueActionReply) *r = bad ? NULL : fo.calls[i].reply->queue_action_reply;
        instance_label(i, inst, sizeof(inst));
        if (r == NULL) {
            if (problem[0] == '\0')
                snprintf(problem, sizeof(problem), "queue instance %zu: %s", i + 1,
                         bad ? bad : "empty reply");
            continue;
        }
        affected += r->affected;
        for (size_t k = 0; k < r->n_message_ids; k++)
            json_array_append_new(ids, ctl_json_str(r->message_ids[k]));
        json_t *o = json_object();
        json_object_set_new(o, "instance", json_string(inst));
        json_object_set_new(o, "affected", json_integer(r->affected));
        json_object_set_new(o, "message_ids", ctl_json_strings(r->message_ids, r->n_message_ids));
        json_array_append_new(instances, o);
    }
    ctl_fanout_free(&fo);
    json_t *doc = json_object();
    json_object_set_new(doc, "action", json_string(name));
    json_object_set_new(doc, "affected", json_integer((json_int_t)affected));
    json_object_set_new(doc, "message_ids", ids);
    json_object_set_new(doc, "instances", instances);
    if (problem[0] && json_array_size(instances) == 0) {
        json_decref(doc);
        return ctl_fail(ctl, "%s", problem);
    }
    if (!ctl->json) {
        fprintf(ctl->out, "%s: %llu message%s\n", name, (unsigned long long)affected,
                affected == 1 ? "" : "s");
        size_t i;
        json_t *id;
        json_array_foreach(ids, i, id) fprintf(ctl->out, "  %s\n", json_string_value(id));
    }
    if (problem[0])
        return partial_failure(ctl, doc, problem);
    if (ctl->json)
        ctl_emit(ctl, doc);
    else
        json_decref(doc);
    return CTL_OK;
}

int ctl_cmd_queue_hold(ctl_t *ctl, const ctl_args_t *args)
{
    return action_run(ctl, args, PB_ENUM(QUEUE_ACTION__KIND__HOLD), "hold");
}

int ctl_cmd_queue_release(ctl_t *ctl, const ctl_args_t *args)
{
    return action_run(ctl, args, PB_ENUM(QUEUE_ACTION__KIND__RELEASE), "release");
}

int ctl_cmd_queue_retry(ctl_t *ctl, const ctl_args_t *args)
{
    return action_run(ctl, args, PB_ENUM(QUEUE_ACTION__KIND__RETRY), "retry");
}

int ctl_cmd_queue_delete(ctl_t *ctl, const ctl_args_t *args)
{
    return action_run(ctl, args, PB_ENUM(QUEUE_ACTION__KIND__DELETE), "delete");
}

int ctl_cmd_queue_bounce(ctl_t *ctl, const ctl_args_t *args)
{
    return action_run(ctl, args, PB_ENUM(QUEUE_ACTION__KIND__BOUNCE), "bounce");
}

/* ---- suspend / resume ---- */

static int suspend_run(ctl_t *ctl, const ctl_args_t *args, int suspend)
{
    const char *domain = args->arg;
    if (check_domain(ctl, args, "the domain", domain) != CTL_OK)
        return CTL_USAGE;
    uint64_t seconds = 0;
    const char *v = suspend ? ctl_opt(args, "for") : NULL;
    if (v && (ctl_duration_parse(v, SUSPEND_MAX_S, &seconds) < 0 || seconds == 0))
        return ctl_usage_error(ctl, args->cmd,
                               "--for needs a duration such as 30s, 5m, 2h or 3d (at most 365d), "
                               "not '%s'",
                               v);
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    if (ctl->ep.queue.n == 0)
        return ctl_fail(ctl, "no bus.queue endpoint in %s", ctl->config_path);
    PB(QueueDomainSuspend) ds = PB_INIT(QUEUE_DOMAIN_SUSPEND);
    ds.domain = (char *)domain;
    ds.suspend = suspend;
    ds.seconds = (uint32_t)seconds;
    sx_env_t req = PB_INIT(ENVELOPE);
    req.body_case = PB_BODY(QUEUE_DOMAIN_SUSPEND);
    req.queue_domain_suspend = &ds;
    ctl_fanout_t fo = {0};
    ctl_fanout_run(ctl, &fo, &ctl->ep.queue, &req);

    char problem[CTL_TEXT_MAX] = "", name[DOMAIN_MAX + 1];
    sx_strlcpy(name, domain, sizeof(name));
    uint64_t until = 0;
    json_t *instances = json_array();
    for (size_t i = 0; i < fo.n; i++) {
        char why[CTL_TEXT_MAX], inst[24];
        const char *bad = ctl_call_check(ctl, &fo.calls[i], PB_BODY(QUEUE_DOMAIN_SUSPEND_REPLY),
                                         NULL, why, sizeof(why));
        const PB(QueueDomainSuspendReply) *r =
            bad ? NULL : fo.calls[i].reply->queue_domain_suspend_reply;
        if (r == NULL) {
            if (problem[0] == '\0')
                snprintf(problem, sizeof(problem), "queue instance %zu: %s", i + 1,
                         bad ? bad : "empty reply");
            continue;
        }
        if (r->domain && r->domain[0])
            sx_strlcpy(name, r->domain, sizeof(name)); /* as queue keeps it: lower case */
        if (r->until_ms > until)
            until = r->until_ms;
        instance_label(i, inst, sizeof(inst));
        json_t *o = json_object();
        json_object_set_new(o, "instance", json_string(inst));
        json_object_set_new(o, "suspended", json_boolean(r->suspended));
        json_object_set_new(o, "until", ctl_json_time(r->until_ms, 0));
        json_array_append_new(instances, o);
    }
    ctl_fanout_free(&fo);
    json_t *doc = json_object();
    json_object_set_new(doc, "domain", ctl_json_str(name));
    json_object_set_new(doc, "suspended", json_boolean(suspend));
    json_object_set_new(doc, "until", ctl_json_time(suspend ? until : 0, 0));
    json_object_set_new(doc, "instances", instances);
    if (problem[0] && json_array_size(instances) == 0) {
        json_decref(doc);
        return ctl_fail(ctl, "%s", problem);
    }
    if (!ctl->json) {
        char when[ISOTIME_SIZE];
        if (!suspend)
            fprintf(ctl->out, "%s resumed: deliveries start again\n", name);
        else if (until)
            fprintf(ctl->out, "%s suspended until %s\n", name,
                    isotime_format(until, 0, when, sizeof(when)));
        else
            fprintf(ctl->out, "%s suspended until resumed\n", name);
    }
    if (problem[0])
        return partial_failure(ctl, doc, problem);
    if (ctl->json)
        ctl_emit(ctl, doc);
    else
        json_decref(doc);
    return CTL_OK;
}

int ctl_cmd_queue_suspend(ctl_t *ctl, const ctl_args_t *args)
{
    return suspend_run(ctl, args, 1);
}

int ctl_cmd_queue_resume(ctl_t *ctl, const ctl_args_t *args)
{
    return suspend_run(ctl, args, 0);
}
