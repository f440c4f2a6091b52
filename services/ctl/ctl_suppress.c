/*
 * ctl_suppress: the suppression list from the CLI: `suppress add|remove`
 * go to the first queue instance that can be reached (it passes the change
 * to the others), `suppress list|check` ask every instance and merge the
 * answers, since an instance that was down when an entry was passed may
 * lack it. Queue checks addresses and tenants; this file refuses what is
 * plainly no argument.
 */
#include "ctl.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "ctl_json.h"
#include "core/isotime.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SUPP_TENANT_MAX   64 /* what queue keeps of a tenant name */
#define SUPP_ADDRESS_MAX  511
#define SUPP_REASON_MAX   200
#define SUPP_TTL_MAX_S    (3650ull * 86400ull)
#define SUPP_LIST_DEFAULT 1000
#define SUPP_LIST_MAX     100000
#define SUPP_FALLBACK_MS  1000 /* an instance not connected within this is passed over */

static int check_address(ctl_t *ctl, const ctl_args_t *args, const char *a)
{
    if (a == NULL || a[0] == '\0' || strlen(a) > SUPP_ADDRESS_MAX || strchr(a, '@') == NULL ||
        strpbrk(a, " <>\t\r\n"))
        return ctl_usage_error(ctl, args->cmd, "'%.80s' is not an address such as user@example.org",
                               a ? a : "");
    return CTL_OK;
}

static int check_tenant(ctl_t *ctl, const ctl_args_t *args, const char *t)
{
    if (t == NULL || t[0] == '\0' || strlen(t) > SUPP_TENANT_MAX)
        return ctl_usage_error(ctl, args->cmd, "--tenant must be 1 to %d characters",
                               SUPP_TENANT_MAX);
    return CTL_OK;
}

/* ---- merging ---- */

static int supp_cmp(const void *a, const void *b)
{
    const PB(Suppression) *x = *(const PB(Suppression) *const *)a;
    const PB(Suppression) *y = *(const PB(Suppression) *const *)b;
    int c = strcmp(x->tenant ? x->tenant : "", y->tenant ? y->tenant : "");
    if (c)
        return c;
    c = strcasecmp(x->address ? x->address : "", y->address ? y->address : "");
    if (c)
        return c;
    /* the same entry from several instances: the newest first */
    if (x->created_at_ms != y->created_at_ms)
        return x->created_at_ms > y->created_at_ms ? -1 : 1;
    return 0;
}

static int same_entry(const PB(Suppression) * x, const PB(Suppression) * y)
{
    return strcmp(x->tenant ? x->tenant : "", y->tenant ? y->tenant : "") == 0 &&
           strcasecmp(x->address ? x->address : "", y->address ? y->address : "") == 0;
}

/* Every entry of the replies, sorted and without repeats; returns how many (*out freed by caller).
 */
static size_t merge_entries(PB(QueueSuppressReply) *const *replies, size_t n,
                            const PB(Suppression) * **out)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        if (replies[i])
            total += replies[i]->n_entries;
    const PB(Suppression) **all = xcalloc(total ? total : 1, sizeof(*all));
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; replies[i] && j < replies[i]->n_entries; j++)
            if (replies[i]->entries[j] && replies[i]->entries[j]->address)
                all[k++] = replies[i]->entries[j];
    qsort(all, k, sizeof(*all), supp_cmp);
    size_t m = 0;
    for (size_t i = 0; i < k; i++)
        if (m == 0 || !same_entry(all[m - 1], all[i]))
            all[m++] = all[i];
    *out = all;
    return m;
}

json_t *ctl_suppress_merge(PB(QueueSuppressReply) *const *replies, size_t n, size_t limit)
{
    const PB(Suppression) * *all;
    size_t m = merge_entries(replies, n, &all);
    json_t *list = json_array();
    for (size_t i = 0; i < m && i < limit; i++)
        json_array_append_new(list, ctl_json_suppression(all[i]));
    free(all);
    json_t *doc = json_object();
    json_object_set_new(doc, "suppressions", list);
    json_object_set_new(doc, "count", json_integer((json_int_t)(m < limit ? m : limit)));
    return doc;
}

static void print_entry(FILE *f, json_t *e)
{
    const char *exp = json_string_value(json_object_get(e, "expires_at"));
    const char *created = json_string_value(json_object_get(e, "created_at"));
    fprintf(f, "%-16s %-40s %-12s %-20s %-20s", json_string_value(json_object_get(e, "tenant")),
            json_string_value(json_object_get(e, "address")),
            json_string_value(json_object_get(e, "reason")), created ? created : "-",
            exp ? exp : "never");
    json_t *reply = json_object_get(e, "reply");
    if (json_is_object(reply))
        fprintf(f, " %lld %s %s", (long long)json_integer_value(json_object_get(reply, "code")),
                json_string_value(json_object_get(reply, "enhanced")),
                json_string_value(json_object_get(reply, "text")));
    fputc('\n', f);
}

static void print_header(FILE *f)
{
    fprintf(f, "%-16s %-40s %-12s %-20s %-20s %s\n", "TENANT", "ADDRESS", "REASON", "CREATED",
            "EXPIRES", "REPLY");
}

/* ---- add / remove: the first instance that can be reached ---- */

/*
 * Send req to the queue instances in order until one is reached (one that
 * is not connected within SUPP_FALLBACK_MS is passed over, except the
 * last). CTL_OK with *reply holding a body of the expected case, or the
 * failure printed.
 */
static int first_instance(ctl_t *ctl, sx_env_t *req, int expect_case, sx_env_t **reply)
{
    *reply = NULL;
    size_t n = ctl->ep.queue.n;
    if (n == 0)
        return ctl_fail(ctl, "no bus.queue endpoint in %s", ctl->config_path);
    char problem[CTL_TEXT_MAX] = "";
    for (size_t i = 0; i < n; i++) {
        ctl_call_t call = {.endpoint = ctl->ep.queue.v[i], .req = req};
        if (i + 1 < n)
            call.connect_ms = SUPP_FALLBACK_MS;
        ctl_calls_run(ctl, &call, 1, ctl->timeout_ms);
        char why[CTL_TEXT_MAX];
        if (call.state == CTL_CALL_DOWN) {
            if (problem[0] == '\0')
                snprintf(problem, sizeof(problem), "queue instance %zu: %s", i + 1,
                         ctl_call_problem(ctl, &call, why, sizeof(why)));
            continue;
        }
        const char *bad = ctl_call_check(ctl, &call, expect_case, NULL, why, sizeof(why));
        if (bad) {
            int rc = call.state == CTL_CALL_OK && ctl_reply_error(call.reply, NULL)
                         ? ctl_fail(ctl, "%s", bad)
                         : ctl_fail(ctl, "queue instance %zu: %s", i + 1, bad);
            ctl_calls_free(&call, 1);
            return rc;
        }
        *reply = call.reply;
        return CTL_OK;
    }
    return ctl_fail(ctl, "no queue instance could be reached; %s", problem);
}

int ctl_cmd_suppress_add(ctl_t *ctl, const ctl_args_t *args)
{
    const char *tenant = ctl_opt(args, "tenant"), *reason = ctl_opt(args, "reason");
    const char *ttl_text = ctl_opt(args, "ttl");
    if (check_address(ctl, args, args->arg) != CTL_OK || check_tenant(ctl, args, tenant) != CTL_OK)
        return CTL_USAGE;
    if (reason && (reason[0] == '\0' || strlen(reason) > SUPP_REASON_MAX))
        return ctl_usage_error(ctl, args->cmd, "--reason must be 1 to %d characters",
                               SUPP_REASON_MAX);
    uint64_t ttl = 0;
    if (ttl_text && (ctl_duration_parse(ttl_text, SUPP_TTL_MAX_S, &ttl) < 0 || ttl == 0))
        return ctl_usage_error(ctl, args->cmd,
                               "--ttl needs a duration such as 30s, 5m, 2h or 3d (at most 3650d), "
                               "not '%s'",
                               ttl_text);
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    uint64_t now = clock_wall_ms();
    PB(Suppression) e = PB_INIT(SUPPRESSION);
    e.tenant = (char *)tenant;
    e.address = (char *)args->arg;
    e.reason = (char *)(reason ? reason : "operator");
    e.created_at_ms = now;
    e.expires_at_ms = ttl ? now + ttl * 1000 : 0;
    PB(QueueSuppressAdd) add = PB_INIT(QUEUE_SUPPRESS_ADD);
    add.entry = &e;
    sx_env_t req = PB_INIT(ENVELOPE);
    req.body_case = PB_BODY(QUEUE_SUPPRESS_ADD);
    req.queue_suppress_add = &add;
    sx_env_t *reply;
    int rc = first_instance(ctl, &req, PB_BODY(QUEUE_SUPPRESS_REPLY), &reply);
    if (rc != CTL_OK)
        return rc;
    const PB(QueueSuppressReply) *r = reply->queue_suppress_reply;
    const PB(Suppression) *got = r && r->n_entries && r->entries[0] ? r->entries[0] : &e;
    if (ctl->json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "suppression", ctl_json_suppression(got));
        ctl_emit(ctl, doc);
    } else {
        char when[ISOTIME_SIZE];
        fprintf(ctl->out, "suppressed %s for tenant %s (%s)", got->address, got->tenant,
                got->reason);
        if (got->expires_at_ms)
            fprintf(ctl->out, " until %s\n",
                    isotime_format(got->expires_at_ms, 0, when, sizeof(when)));
        else
            fprintf(ctl->out, " until removed\n");
    }
    codec_free(&reply);
    return CTL_OK;
}

int ctl_cmd_suppress_remove(ctl_t *ctl, const ctl_args_t *args)
{
    const char *tenant = ctl_opt(args, "tenant");
    if (check_address(ctl, args, args->arg) != CTL_OK || check_tenant(ctl, args, tenant) != CTL_OK)
        return CTL_USAGE;
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    PB(QueueSuppressRemove) rm = PB_INIT(QUEUE_SUPPRESS_REMOVE);
    rm.tenant = (char *)tenant;
    rm.address = (char *)args->arg;
    sx_env_t req = PB_INIT(ENVELOPE);
    req.body_case = PB_BODY(QUEUE_SUPPRESS_REMOVE);
    req.queue_suppress_remove = &rm;
    sx_env_t *reply;
    int rc = first_instance(ctl, &req, PB_BODY(QUEUE_SUPPRESS_REPLY), &reply);
    if (rc != CTL_OK)
        return rc;
    const PB(QueueSuppressReply) *r = reply->queue_suppress_reply;
    const PB(Suppression) *old = r && r->n_entries && r->entries[0] ? r->entries[0] : NULL;
    if (ctl->json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "removed", json_true());
        json_object_set_new(doc, "tenant", ctl_json_str(tenant));
        json_object_set_new(doc, "address", ctl_json_str(args->arg));
        json_object_set_new(doc, "suppression", old ? ctl_json_suppression(old) : json_null());
        ctl_emit(ctl, doc);
    } else {
        fprintf(ctl->out, "removed %s from the suppression list of tenant %s\n", args->arg, tenant);
    }
    codec_free(&reply);
    return CTL_OK;
}

/* ---- list / check: every instance ---- */

/* Ask every queue instance; CTL_OK with the replies in fo, or the failure printed. */
static int ask_all(ctl_t *ctl, sx_env_t *req, ctl_fanout_t *fo)
{
    if (ctl->ep.queue.n == 0)
        return ctl_fail(ctl, "no bus.queue endpoint in %s", ctl->config_path);
    ctl_fanout_run(ctl, fo, &ctl->ep.queue, req);
    char problem[CTL_TEXT_MAX];
    if (ctl_fanout_problem(ctl, fo, "queue", PB_BODY(QUEUE_SUPPRESS_REPLY), problem,
                           sizeof(problem))) {
        ctl_fanout_free(fo);
        return ctl_fail(ctl, "%s", problem);
    }
    return CTL_OK;
}

static PB(QueueSuppressReply) * *replies_of(const ctl_fanout_t *fo)
{
    PB(QueueSuppressReply) **r = xcalloc(fo->n ? fo->n : 1, sizeof(*r));
    for (size_t i = 0; i < fo->n; i++)
        r[i] = fo->calls[i].reply->queue_suppress_reply;
    return r;
}

int ctl_cmd_suppress_list(ctl_t *ctl, const ctl_args_t *args)
{
    const char *tenant = ctl_opt(args, "tenant"), *v = ctl_opt(args, "limit");
    if (tenant && check_tenant(ctl, args, tenant) != CTL_OK)
        return CTL_USAGE;
    unsigned long limit = SUPP_LIST_DEFAULT;
    if (v && ctl_parse_uint(v, 1, SUPP_LIST_MAX, &limit) < 0)
        return ctl_usage_error(ctl, args->cmd, "--limit needs a number from 1 to %d, not '%s'",
                               SUPP_LIST_MAX, v);
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    PB(QueueSuppressList) ls = PB_INIT(QUEUE_SUPPRESS_LIST);
    ls.tenant = (char *)(tenant ? tenant : "");
    ls.limit = (uint32_t)limit;
    sx_env_t req = PB_INIT(ENVELOPE);
    req.body_case = PB_BODY(QUEUE_SUPPRESS_LIST);
    req.queue_suppress_list = &ls;
    ctl_fanout_t fo = {0};
    int rc = ask_all(ctl, &req, &fo);
    if (rc != CTL_OK)
        return rc;
    PB(QueueSuppressReply) **replies = replies_of(&fo);
    json_t *doc = ctl_suppress_merge(replies, fo.n, limit);
    free(replies);
    if (ctl->json) {
        ctl_emit(ctl, doc);
    } else {
        json_t *list = json_object_get(doc, "suppressions");
        if (json_array_size(list) == 0) {
            fprintf(ctl->out, "no suppressed addresses\n");
        } else {
            print_header(ctl->out);
            size_t i;
            json_t *e;
            json_array_foreach(list, i, e) print_entry(ctl->out, e);
        }
        json_decref(doc);
    }
    ctl_fanout_free(&fo);
    return CTL_OK;
}

int ctl_cmd_suppress_check(ctl_t *ctl, const ctl_args_t *args)
{
    const char *tenant = ctl_opt(args, "tenant");
    if (check_address(ctl, args, args->arg) != CTL_OK || check_tenant(ctl, args, tenant) != CTL_OK)
        return CTL_USAGE;
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    PB(QueueSuppressCheck) ck = PB_INIT(QUEUE_SUPPRESS_CHECK);
    ck.tenant = (char *)tenant;
    ck.address = (char *)args->arg;
    sx_env_t req = PB_INIT(ENVELOPE);
    req.body_case = PB_BODY(QUEUE_SUPPRESS_CHECK);
    req.queue_suppress_check = &ck;
    ctl_fanout_t fo = {0};
    int rc = ask_all(ctl, &req, &fo);
    if (rc != CTL_OK)
        return rc;
    PB(QueueSuppressReply) **replies = replies_of(&fo);
    const PB(Suppression) * *all;
    size_t m = merge_entries(replies, fo.n, &all);
    free(replies);
    /* an instance answers only for the address asked; the newest entry of it wins */
    const PB(Suppression) *hit = m ? all[0] : NULL;
    if (ctl->json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "suppressed", json_boolean(hit != NULL));
        json_object_set_new(doc, "entry", hit ? ctl_json_suppression(hit) : json_null());
        ctl_emit(ctl, doc);
    } else if (hit) {
        char when[ISOTIME_SIZE];
        fprintf(ctl->out, "%s is suppressed for tenant %s (%s", hit->address, hit->tenant,
                hit->reason);
        if (hit->reply)
            fprintf(ctl->out, ": %u %s %s", hit->reply->code,
                    hit->reply->enhanced ? hit->reply->enhanced : "",
                    hit->reply->text ? hit->reply->text : "");
        if (hit->expires_at_ms)
            fprintf(ctl->out, ") until %s\n",
                    isotime_format(hit->expires_at_ms, 0, when, sizeof(when)));
        else
            fprintf(ctl->out, ") until removed\n");
    } else {
        fprintf(ctl->out, "%s is not suppressed for tenant %s\n", args->arg, tenant);
    }
    free(all);
    ctl_fanout_free(&fo);
    return CTL_OK;
}
