/*
 * ctl_auth: credentials, tenants and sending domains, managed through the
 * auth service (its first instance, which owns them). Passwords come from
 * stdin (--password-stdin) or the command line, go to auth once and are
 * wiped from memory after; nothing here ever prints one. Auth decides
 * what is valid beyond the obvious; its refusals are printed as they come.
 */
#include "ctl.h"
#include "ctl_json.h"
#include "ctl_time.h"

#include <stdlib.h>
#include <string.h>

#define CTL_PASSWORD_MAX 1024
#define CTL_DOMAINS_MAX  32
#define CTL_NAME_MAX     255

static const char *const environments[] = {"production", "staging", "development", NULL};

int ctl_read_password(FILE *in, char *buf, size_t size, char *why, size_t whylen)
{
    size_t n = fread(buf, 1, size - 1, in);
    if (ferror(in)) {
        snprintf(why, whylen, "cannot read the password from stdin");
        return -1;
    }
    if (n == size - 1 && fgetc(in) != EOF) {
        snprintf(why, whylen, "password longer than %zu bytes", size - 2);
        return -1;
    }
    buf[n] = '\0';
    if (memchr(buf, '\0', n) != NULL) {
        snprintf(why, whylen, "password contains a NUL byte");
        return -1;
    }
    if (n > 0 && buf[n - 1] == '\n') {
        buf[--n] = '\0';
        if (n > 0 && buf[n - 1] == '\r')
            buf[--n] = '\0';
    }
    if (n == 0) {
        snprintf(why, whylen, "empty password refused");
        return -1;
    }
    if (n > size - 2) {
        snprintf(why, whylen, "password longer than %zu bytes", size - 2);
        return -1;
    }
    return 0;
}

static const char *auth_endpoint(const ctl_t *ctl)
{
    return ctl->ep.auth.n ? ctl->ep.auth.v[0] : NULL;
}

static int check_name(ctl_t *ctl, const ctl_args_t *args, const char *what, const char *v)
{
    if (v == NULL || v[0] == '\0' || strlen(v) > CTL_NAME_MAX)
        return ctl_usage_error(ctl, args->cmd, "%s must be 1 to %d characters", what, CTL_NAME_MAX);
    return CTL_OK;
}

static void print_credential(FILE *f, const PB(Credential) * c)
{
    char when[CTL_TIME_ISO_SIZE];
    fprintf(f, "%-24s %-16s %-12s %-20s %-8s", c->username ? c->username : "",
            c->tenant ? c->tenant : "", c->environment ? c->environment : "",
            c->created_at_ms ? ctl_time_format(c->created_at_ms, 0, when, sizeof(when)) : "-",
            c->revoked ? "revoked" : "active");
    if (c->n_domains == 0)
        fprintf(f, " (all tenant domains)");
    for (size_t i = 0; i < c->n_domains; i++)
        fprintf(f, "%s%s", i ? "," : " ", c->domains[i]);
    fputc('\n', f);
}

/* ---- cred ---- */

int ctl_cmd_cred_add(ctl_t *ctl, const ctl_args_t *args)
{
    const char *user = args->arg, *tenant = ctl_opt(args, "tenant");
    const char *given = ctl_opt(args, "password"), *env = ctl_opt(args, "env");
    int from_stdin = ctl_flag(args, "password-stdin");
    if (check_name(ctl, args, "the user name", user) != CTL_OK ||
        check_name(ctl, args, "--tenant", tenant) != CTL_OK)
        return CTL_USAGE;
    if (from_stdin && given)
        return ctl_usage_error(ctl, args->cmd, "give --password-stdin or --password, not both");
    if (!from_stdin && given == NULL)
        return ctl_usage_error(ctl, args->cmd, "missing option --password-stdin or --password");
    if (env) {
        size_t i = 0;
        while (environments[i] && strcmp(environments[i], env) != 0)
            i++;
        if (environments[i] == NULL)
            return ctl_usage_error(
                ctl, args->cmd, "--env must be production, staging or development, not '%s'", env);
    }
    const char *domains[CTL_DOMAINS_MAX + 1];
    size_t nd = ctl_opt_all(args, "domain", domains, CTL_DOMAINS_MAX + 1);
    if (nd > CTL_DOMAINS_MAX)
        return ctl_usage_error(ctl, args->cmd, "at most %d --domain options", CTL_DOMAINS_MAX);
    for (size_t i = 0; i < nd; i++)
        if (check_name(ctl, args, "--domain", domains[i]) != CTL_OK)
            return CTL_USAGE;

    char password[CTL_PASSWORD_MAX + 2];
    char why[CTL_TEXT_MAX];
    if (from_stdin) {
        if (ctl_read_password(stdin, password, sizeof(password), why, sizeof(why)) < 0) {
            explicit_bzero(password, sizeof(password));
            return ctl_fail(ctl, "%s", why);
        }
    } else {
        if (given[0] == '\0')
            return ctl_fail(ctl, "empty password refused");
        if (strlen(given) > CTL_PASSWORD_MAX)
            return ctl_fail(ctl, "password longer than %d bytes", CTL_PASSWORD_MAX);
        snprintf(password, sizeof(password), "%s", given);
    }
    if (ctl_open(ctl) < 0) {
        explicit_bzero(password, sizeof(password));
        return CTL_FAIL;
    }
    PB(AuthCredentialAdd) add = PB_INIT(AUTH_CREDENTIAL_ADD);
    add.username = (char *)user;
    add.password = password;
    add.tenant = (char *)tenant;
    add.environment = (char *)(env ? env : "production");
    add.domains = (char **)domains;
    add.n_domains = nd;
    sx_env_t req = PB_INIT(ENVELOPE);
    req.body_case = PB_BODY(AUTH_CREDENTIAL_ADD);
    req.auth_credential_add = &add;
    sx_env_t *reply;
    int rc = ctl_call_one(ctl, "auth", auth_endpoint(ctl), &req, PB_BODY(AUTH_CREDENTIAL_ADD_REPLY),
                          &reply);
    explicit_bzero(password, sizeof(password));
    if (rc != CTL_OK)
        return rc;
    const PB(Credential) *c = reply->auth_credential_add_reply->credential;
    if (c == NULL) {
        codec_free(&reply);
        return ctl_fail(ctl, "auth answered without the credential");
    }
    if (ctl->json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "credential", ctl_json_credential(c));
        ctl_emit(ctl, doc);
    } else {
        fprintf(ctl->out, "added credential %s (tenant %s, environment %s)\n", c->username,
                c->tenant, c->environment);
    }
    codec_free(&reply);
    return CTL_OK;
}

int ctl_cmd_cred_list(ctl_t *ctl, const ctl_args_t *args)
{
    const char *tenant = ctl_opt(args, "tenant");
    if (tenant && check_name(ctl, args, "--tenant", tenant) != CTL_OK)
        return CTL_USAGE;
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    PB(AuthCredentialList) list = PB_INIT(AUTH_CREDENTIAL_LIST);
    list.tenant = (char *)(tenant ? tenant : "");
    sx_env_t req = PB_INIT(ENVELOPE);
    req.body_case = PB_BODY(AUTH_CREDENTIAL_LIST);
    req.auth_credential_list = &list;
    sx_env_t *reply;
    int rc = ctl_call_one(ctl, "auth", auth_endpoint(ctl), &req,
                          PB_BODY(AUTH_CREDENTIAL_LIST_REPLY), &reply);
    if (rc != CTL_OK)
        return rc;
    const PB(AuthCredentialListReply) *r = reply->auth_credential_list_reply;
    if (ctl->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < r->n_credentials; i++)
            if (r->credentials[i])
                json_array_append_new(arr, ctl_json_credential(r->credentials[i]));
        json_t *doc = json_object();
        json_object_set_new(doc, "credentials", arr);
        ctl_emit(ctl, doc);
    } else if (r->n_credentials == 0) {
        fprintf(ctl->out, "no credentials\n");
    } else {
        for (size_t i = 0; i < r->n_credentials; i++)
            if (r->credentials[i])
                print_credential(ctl->out, r->credentials[i]);
    }
    codec_free(&reply);
    return CTL_OK;
}

/* ---- tenant ---- */

int ctl_cmd_tenant_add(ctl_t *ctl, const ctl_args_t *args)
{
    if (check_name(ctl, args, "the tenant name", args->arg) != CTL_OK)
        return CTL_USAGE;
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    PB(AuthTenantAdd) add = PB_INIT(AUTH_TENANT_ADD);
    add.name = (char *)args->arg;
    sx_env_t req = PB_INIT(ENVELOPE);
    req.body_case = PB_BODY(AUTH_TENANT_ADD);
    req.auth_tenant_add = &add;
    sx_env_t *reply;
    int rc =
        ctl_call_one(ctl, "auth", auth_endpoint(ctl), &req, PB_BODY(AUTH_TENANT_ADD_REPLY), &reply);
    if (rc != CTL_OK)
        return rc;
    const PB(Tenant) *t = reply->auth_tenant_add_reply->tenant;
    PB(Tenant) fallback = PB_INIT(TENANT);
    fallback.name = (char *)args->arg;
    if (t == NULL)
        t = &fallback;
    if (ctl->json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "tenant", ctl_json_tenant(t));
        ctl_emit(ctl, doc);
    } else {
        fprintf(ctl->out, "added tenant %s\n", t->name);
    }
    codec_free(&reply);
    return CTL_OK;
}

/* AuthTenantList, shared by `tenant list` and `domain list`. */
static int tenant_list(ctl_t *ctl, sx_env_t **reply)
{
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    PB(AuthTenantList) list = PB_INIT(AUTH_TENANT_LIST);
    sx_env_t req = PB_INIT(ENVELOPE);
    req.body_case = PB_BODY(AUTH_TENANT_LIST);
    req.auth_tenant_list = &list;
    return ctl_call_one(ctl, "auth", auth_endpoint(ctl), &req, PB_BODY(AUTH_TENANT_LIST_REPLY),
                        reply);
}

int ctl_cmd_tenant_list(ctl_t *ctl, const ctl_args_t *args)
{
    (void)args;
    sx_env_t *reply;
    int rc = tenant_list(ctl, &reply);
    if (rc != CTL_OK)
        return rc;
    const PB(AuthTenantListReply) *r = reply->auth_tenant_list_reply;
    if (ctl->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < r->n_tenants; i++)
            if (r->tenants[i])
                json_array_append_new(arr, ctl_json_tenant(r->tenants[i]));
        json_t *doc = json_object();
        json_object_set_new(doc, "tenants", arr);
        ctl_emit(ctl, doc);
    } else if (r->n_tenants == 0) {
        fprintf(ctl->out, "no tenants\n");
    } else {
        char when[CTL_TIME_ISO_SIZE];
        for (size_t i = 0; i < r->n_tenants; i++) {
            const PB(Tenant) *t = r->tenants[i];
            if (t == NULL)
                continue;
            fprintf(ctl->out, "%-24s %-20s", t->name,
                    t->created_at_ms ? ctl_time_format(t->created_at_ms, 0, when, sizeof(when))
                                     : "-");
            for (size_t j = 0; j < t->n_domains; j++)
                fprintf(ctl->out, "%s%s", j ? "," : " ", t->domains[j]);
            fputc('\n', ctl->out);
        }
    }
    codec_free(&reply);
    return CTL_OK;
}

/* ---- domain ---- */

int ctl_cmd_domain_add(ctl_t *ctl, const ctl_args_t *args)
{
    const char *tenant = ctl_opt(args, "tenant");
    if (check_name(ctl, args, "the domain", args->arg) != CTL_OK ||
        check_name(ctl, args, "--tenant", tenant) != CTL_OK)
        return CTL_USAGE;
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    PB(AuthDomainAdd) add = PB_INIT(AUTH_DOMAIN_ADD);
    add.domain = (char *)args->arg;
    add.tenant = (char *)tenant;
    sx_env_t req = PB_INIT(ENVELOPE);
    req.body_case = PB_BODY(AUTH_DOMAIN_ADD);
    req.auth_domain_add = &add;
    sx_env_t *reply;
    int rc =
        ctl_call_one(ctl, "auth", auth_endpoint(ctl), &req, PB_BODY(AUTH_DOMAIN_ADD_REPLY), &reply);
    if (rc != CTL_OK)
        return rc;
    const PB(AuthDomainAddReply) *r = reply->auth_domain_add_reply;
    const char *domain = r->domain && *r->domain ? r->domain : args->arg;
    const char *owner = r->tenant && *r->tenant ? r->tenant : tenant;
    if (ctl->json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "domain", ctl_json_str(domain));
        json_object_set_new(doc, "tenant", ctl_json_str(owner));
        ctl_emit(ctl, doc);
    } else {
        fprintf(ctl->out, "added domain %s to tenant %s\n", domain, owner);
    }
    codec_free(&reply);
    return CTL_OK;
}

int ctl_cmd_domain_list(ctl_t *ctl, const ctl_args_t *args)
{
    const char *tenant = ctl_opt(args, "tenant");
    if (tenant && check_name(ctl, args, "--tenant", tenant) != CTL_OK)
        return CTL_USAGE;
    sx_env_t *reply;
    int rc = tenant_list(ctl, &reply);
    if (rc != CTL_OK)
        return rc;
    const PB(AuthTenantListReply) *r = reply->auth_tenant_list_reply;
    int tenant_seen = 0;
    json_t *arr = json_array();
    for (size_t i = 0; i < r->n_tenants; i++) {
        const PB(Tenant) *t = r->tenants[i];
        if (t == NULL || (tenant && strcmp(t->name, tenant) != 0))
            continue;
        tenant_seen = 1;
        for (size_t j = 0; j < t->n_domains; j++) {
            json_t *o = json_object();
            json_object_set_new(o, "domain", ctl_json_str(t->domains[j]));
            json_object_set_new(o, "tenant", ctl_json_str(t->name));
            json_array_append_new(arr, o);
        }
    }
    codec_free(&reply);
    if (tenant && !tenant_seen) {
        json_decref(arr);
        return ctl_fail(ctl, "tenant %s not found", tenant);
    }
    if (ctl->json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "domains", arr);
        ctl_emit(ctl, doc);
        return CTL_OK;
    }
    if (json_array_size(arr) == 0)
        fprintf(ctl->out, "no domains\n");
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o)
    {
        fprintf(ctl->out, "%-32s %s\n", json_string_value(json_object_get(o, "domain")),
                json_string_value(json_object_get(o, "tenant")));
    }
    json_decref(arr);
    return CTL_OK;
}
