/*
 * ctl_access: who may log in from where and how much may be sent:
 * `allow add|list|remove` (a login's client networks) and `limit set`
 * (messages per minute and per day of a tenant or a login), through the
 * auth service's first instance. Auth checks and normalises networks; this
 * file only refuses what is plainly no argument. A limit option left out
 * keeps the value auth has, read first, since the request sets both.
 */
#include "ctl.h"
#include "ctl_json.h"

#include <stdlib.h>
#include <string.h>

#define CTL_NETWORK_MAX 64 /* longer than any IPv6 CIDR */

/* ---- allow ---- */

static int print_allow(ctl_t *ctl, const PB(AuthAllowReply) * r, const char *done)
{
    if (ctl->json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "username", ctl_json_str(r->username));
        json_object_set_new(doc, "networks", ctl_json_strings(r->networks, r->n_networks));
        ctl_emit(ctl, doc);
        return CTL_OK;
    }
    if (done)
        fprintf(ctl->out, "%s; ", done);
    if (r->n_networks == 0) {
        fprintf(ctl->out, "credential %s: no networks listed, any client address may log in\n",
                r->username);
        return CTL_OK;
    }
    fprintf(ctl->out, "credential %s may log in from:\n", r->username);
    for (size_t i = 0; i < r->n_networks; i++)
        fprintf(ctl->out, "  %s\n", r->networks[i]);
    return CTL_OK;
}

typedef enum { ALLOW_ADD, ALLOW_REMOVE, ALLOW_LIST } allow_op_t;

static int allow_run(ctl_t *ctl, const ctl_args_t *args, allow_op_t op)
{
    const char *user = args->arg, *net = args->arg2;
    if (ctl_check_name(ctl, args, "the user name", user) != CTL_OK)
        return CTL_USAGE;
    if (op != ALLOW_LIST && (net == NULL || *net == '\0' || strlen(net) > CTL_NETWORK_MAX))
        return ctl_usage_error(ctl, args->cmd, "the network must be 1 to %d characters",
                               CTL_NETWORK_MAX);
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    sx_env_t req = PB_INIT(ENVELOPE);
    PB(AuthAllowAdd) add = PB_INIT(AUTH_ALLOW_ADD);
    PB(AuthAllowRemove) rem = PB_INIT(AUTH_ALLOW_REMOVE);
    PB(AuthAllowList) list = PB_INIT(AUTH_ALLOW_LIST);
    if (op == ALLOW_ADD) {
        add.username = (char *)user;
        add.network = (char *)net;
        req.body_case = PB_BODY(AUTH_ALLOW_ADD);
        req.auth_allow_add = &add;
    } else if (op == ALLOW_REMOVE) {
        rem.username = (char *)user;
        rem.network = (char *)net;
        req.body_case = PB_BODY(AUTH_ALLOW_REMOVE);
        req.auth_allow_remove = &rem;
    } else {
        list.username = (char *)user;
        req.body_case = PB_BODY(AUTH_ALLOW_LIST);
        req.auth_allow_list = &list;
    }
    sx_env_t *reply;
    int rc =
        ctl_call_one(ctl, "auth", ctl_auth_endpoint(ctl), &req, PB_BODY(AUTH_ALLOW_REPLY), &reply);
    if (rc != CTL_OK)
        return rc;
    char done[CTL_TEXT_MAX];
    snprintf(done, sizeof(done), "%s %s", op == ALLOW_ADD ? "added" : "removed", net ? net : "");
    rc = print_allow(ctl, reply->auth_allow_reply, op == ALLOW_LIST ? NULL : done);
    codec_free(&reply);
    return rc;
}

int ctl_cmd_allow_add(ctl_t *ctl, const ctl_args_t *args)
{
    return allow_run(ctl, args, ALLOW_ADD);
}

int ctl_cmd_allow_remove(ctl_t *ctl, const ctl_args_t *args)
{
    return allow_run(ctl, args, ALLOW_REMOVE);
}

int ctl_cmd_allow_list(ctl_t *ctl, const ctl_args_t *args)
{
    return allow_run(ctl, args, ALLOW_LIST);
}

/* ---- limit ---- */

/* The limits auth has now for the tenant or the credential; CTL_OK or printed failure. */
static int current_limits(ctl_t *ctl, const char *tenant, const char *user, uint32_t *per_minute,
                          uint32_t *per_day)
{
    sx_env_t req = PB_INIT(ENVELOPE);
    PB(AuthTenantList) tl = PB_INIT(AUTH_TENANT_LIST);
    PB(AuthCredentialList) cl = PB_INIT(AUTH_CREDENTIAL_LIST);
    int expect;
    if (tenant) {
        req.body_case = PB_BODY(AUTH_TENANT_LIST);
        req.auth_tenant_list = &tl;
        expect = PB_BODY(AUTH_TENANT_LIST_REPLY);
    } else {
        cl.tenant = (char *)"";
        req.body_case = PB_BODY(AUTH_CREDENTIAL_LIST);
        req.auth_credential_list = &cl;
        expect = PB_BODY(AUTH_CREDENTIAL_LIST_REPLY);
    }
    sx_env_t *reply;
    int rc = ctl_call_one(ctl, "auth", ctl_auth_endpoint(ctl), &req, expect, &reply);
    if (rc != CTL_OK)
        return rc;
    int found = 0;
    if (tenant) {
        const PB(AuthTenantListReply) *r = reply->auth_tenant_list_reply;
        for (size_t i = 0; i < r->n_tenants && !found; i++) {
            const PB(Tenant) *t = r->tenants[i];
            if (t && t->name && strcmp(t->name, tenant) == 0) {
                *per_minute = t->rate_per_minute;
                *per_day = t->rate_per_day;
                found = 1;
            }
        }
    } else {
        const PB(AuthCredentialListReply) *r = reply->auth_credential_list_reply;
        for (size_t i = 0; i < r->n_credentials && !found; i++) {
            const PB(Credential) *c = r->credentials[i];
            if (c && c->username && strcmp(c->username, user) == 0) {
                *per_minute = c->rate_per_minute;
                *per_day = c->rate_per_day;
                found = 1;
            }
        }
    }
    codec_free(&reply);
    if (!found)
        return ctl_fail(ctl, "%s %s not found", tenant ? "tenant" : "credential",
                        tenant ? tenant : user);
    return CTL_OK;
}

static void print_limit(FILE *f, const char *what, uint32_t n)
{
    if (n)
        fprintf(f, "%u messages per %s", n, what);
    else
        fprintf(f, "no limit per %s", what);
}

int ctl_cmd_limit_set(ctl_t *ctl, const ctl_args_t *args)
{
    const char *tenant = ctl_opt(args, "tenant"), *user = ctl_opt(args, "cred");
    const char *minute_text = ctl_opt(args, "per-minute"), *day_text = ctl_opt(args, "per-day");
    unsigned long minute = 0, day = 0;
    if ((tenant == NULL) == (user == NULL))
        return ctl_usage_error(ctl, args->cmd, "give --tenant or --cred (exactly one)");
    if ((tenant && ctl_check_name(ctl, args, "--tenant", tenant) != CTL_OK) ||
        (user && ctl_check_name(ctl, args, "--cred", user) != CTL_OK))
        return CTL_USAGE;
    if (minute_text == NULL && day_text == NULL)
        return ctl_usage_error(ctl, args->cmd, "give --per-minute, --per-day or both");
    if (minute_text && ctl_parse_uint(minute_text, 0, UINT32_MAX, &minute) < 0)
        return ctl_usage_error(ctl, args->cmd, "--per-minute needs a whole number, not '%s'",
                               minute_text);
    if (day_text && ctl_parse_uint(day_text, 0, UINT32_MAX, &day) < 0)
        return ctl_usage_error(ctl, args->cmd, "--per-day needs a whole number, not '%s'",
                               day_text);
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    PB(AuthLimitSet) set = PB_INIT(AUTH_LIMIT_SET);
    set.tenant = (char *)(tenant ? tenant : "");
    set.username = (char *)(user ? user : "");
    set.per_minute = (uint32_t)minute;
    set.per_day = (uint32_t)day;
    if (minute_text == NULL || day_text == NULL) {
        uint32_t cur_minute = 0, cur_day = 0;
        int rc = current_limits(ctl, tenant, user, &cur_minute, &cur_day);
        if (rc != CTL_OK)
            return rc;
        if (minute_text == NULL)
            set.per_minute = cur_minute;
        if (day_text == NULL)
            set.per_day = cur_day;
    }
    sx_env_t req = PB_INIT(ENVELOPE);
    req.body_case = PB_BODY(AUTH_LIMIT_SET);
    req.auth_limit_set = &set;
    sx_env_t *reply;
    int rc = ctl_call_one(ctl, "auth", ctl_auth_endpoint(ctl), &req, PB_BODY(AUTH_LIMIT_SET_REPLY),
                          &reply);
    if (rc != CTL_OK)
        return rc;
    const PB(AuthLimitSetReply) *r = reply->auth_limit_set_reply;
    if (ctl->json) {
        json_t *doc = json_object();
        json_object_set_new(doc, tenant ? "tenant" : "credential",
                            ctl_json_str(tenant ? tenant : user));
        json_object_set_new(doc, "per_minute", json_integer(r->per_minute));
        json_object_set_new(doc, "per_day", json_integer(r->per_day));
        ctl_emit(ctl, doc);
    } else {
        fprintf(ctl->out, "limits of %s %s: ", tenant ? "tenant" : "credential",
                tenant ? tenant : user);
        print_limit(ctl->out, "minute", r->per_minute);
        fprintf(ctl->out, ", ");
        print_limit(ctl->out, "day", r->per_day);
        fputc('\n', ctl->out);
    }
    codec_free(&reply);
    return CTL_OK;
}
