/*
 * ctl_auth: credentials (add, list, rotate, revoke), tenants and sending
 * domains, managed through the auth service (its first instance, which
 * owns them). Passwords come from stdin (--password-stdin) or the command
 * line, go to auth once and are wiped from memory after; nothing here ever
 * prints one. Auth decides what is valid beyond the obvious; its refusals
 * are printed as they come. Allowlists and limits: ctl_access.c.
 */
#include "ctl.h"
#include "ctl_json.h"
#include "core/alloc.h"
#include "core/isotime.h"

#include <stdlib.h>
#include <string.h>

#define CTL_PASSWORD_MAX    1024
#define CTL_DOMAINS_MAX     32
#define CTL_NAME_MAX        255
#define CTL_GRACE_DEFAULT_S (24u * 3600u)
#define CTL_GRACE_MAX_S     (30u * 86400u) /* auth refuses longer ones */

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

const char *ctl_auth_endpoint(const ctl_t *ctl)
{
    return ctl->ep.auth.n ? ctl->ep.auth.v[0] : NULL;
}

int ctl_check_name(ctl_t *ctl, const ctl_args_t *args, const char *what, const char *v)
{
    if (v == NULL || v[0] == '\0' || strlen(v) > CTL_NAME_MAX)
        return ctl_usage_error(ctl, args->cmd, "%s must be 1 to %d characters", what, CTL_NAME_MAX);
    return CTL_OK;
}

static void print_credential(FILE *f, const PB(Credential) * c)
{
    char when[ISOTIME_SIZE];
    fprintf(f, "%-24s %-16s %-12s %-20s %-8s", c->username ? c->username : "",
            c->tenant ? c->tenant : "", c->environment ? c->environment : "",
            c->created_at_ms ? isotime_format(c->created_at_ms, 0, when, sizeof(when)) : "-",
            c->revoked ? "revoked" : "active");
    fprintf(f, " passwords=%u", c->password_count);
    if (c->n_domains == 0)
        fprintf(f, " domains=(all of the tenant)");
    for (size_t i = 0; i < c->n_domains; i++)
        fprintf(f, "%s%s", i ? "," : " domains=", c->domains[i]);
    for (size_t i = 0; i < c->n_allowed_networks; i++)
        fprintf(f, "%s%s", i ? "," : " networks=", c->allowed_networks[i]);
    if (c->rate_per_minute || c->rate_per_day)
        fprintf(f, " limits=%u/min,%u/day", c->rate_per_minute, c->rate_per_day);
    fputc('\n', f);
}

/*
 * The password of cred add and cred rotate, from --password-stdin or
 * --password, into buf (wiped by the caller). CTL_OK, or the status of
 * the problem, already printed.
 */
static int get_password(ctl_t *ctl, const ctl_args_t *args, char *buf, size_t size)
{
    const char *given = ctl_opt(args, "password");
    int from_stdin = ctl_flag(args, "password-stdin");
    if (from_stdin && given)
        return ctl_usage_error(ctl, args->cmd, "give --password-stdin or --password, not both");
    if (!from_stdin && given == NULL)
        return ctl_usage_error(ctl, args->cmd, "missing option --password-stdin or --password");
    if (from_stdin) {
        char why[CTL_TEXT_MAX];
        if (ctl_read_password(stdin, buf, size, why, sizeof(why)) < 0)
            return ctl_fail(ctl, "%s", why);
        return CTL_OK;
    }
    if (given[0] == '\0')
        return ctl_fail(ctl, "empty password refused");
    if (strlen(given) > CTL_PASSWORD_MAX)
        return ctl_fail(ctl, "password longer than %d bytes", CTL_PASSWORD_MAX);
    sx_strlcpy(buf, given, size);
    return CTL_OK;
}

/* ---- cred ---- */

int ctl_cmd_cred_add(ctl_t *ctl, const ctl_args_t *args)
{
    const char *user = args->arg, *tenant = ctl_opt(args, "tenant");
    const char *env = ctl_opt(args, "env");
    if (ctl_check_name(ctl, args, "the user name", user) != CTL_OK ||
        ctl_check_name(ctl, args, "--tenant", tenant) != CTL_OK)
        return CTL_USAGE;
    if (ctl_flag(args, "password-stdin") && ctl_opt(args, "password"))
        return ctl_usage_error(ctl, args->cmd, "give --password-stdin or --password, not both");
    if (!ctl_flag(args, "password-stdin") && ctl_opt(args, "password") == NULL)
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
        if (ctl_check_name(ctl, args, "--domain", domains[i]) != CTL_OK)
            return CTL_USAGE;

    char password[CTL_PASSWORD_MAX + 2];
    int prc = get_password(ctl, args, password, sizeof(password));
    if (prc != CTL_OK) {
        explicit_bzero(password, sizeof(password));
        return prc;
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
    int rc = ctl_call_one(ctl, "auth", ctl_auth_endpoint(ctl), &req,
                          PB_BODY(AUTH_CREDENTIAL_ADD_REPLY), &reply);
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
    if (tenant && ctl_check_name(ctl, args, "--tenant", tenant) != CTL_OK)
        return CTL_USAGE;
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    PB(AuthCredentialList) list = PB_INIT(AUTH_CREDENTIAL_LIST);
    list.tenant = (char *)(tenant ? tenant : "");
    sx_env_t req = PB_INIT(ENVELOPE);
    req.body_case = PB_BODY(AUTH_CREDENTIAL_LIST);
    req.auth_credential_list = &list;
    sx_env_t *reply;
    int rc = ctl_call_one(ctl, "auth", ctl_auth_endpoint(ctl), &req,
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

/* Print the credential of a rotate or revoke reply; what says what happened. */
static int print_changed(ctl_t *ctl, const PB(Credential) * c, const char *what, uint64_t grace_s)
{
    if (c == NULL)
        return ctl_fail(ctl, "auth answered without the credential");
    if (ctl->json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "credential", ctl_json_credential(c));
        ctl_emit(ctl, doc);
    } else if (strcmp(what, "rotated") == 0) {
        char when[ISOTIME_SIZE];
        uint64_t until = c->rotated_at_ms + grace_s * 1000;
        fprintf(ctl->out, "rotated credential %s: %u live password%s; ", c->username,
                c->password_count, c->password_count == 1 ? "" : "s");
        if (grace_s)
            fprintf(ctl->out, "older ones stop working at %s\n",
                    isotime_format(until, 0, when, sizeof(when)));
        else
            fprintf(ctl->out, "older ones stopped working\n");
    } else {
        fprintf(ctl->out, "revoked credential %s: no password works any more\n", c->username);
    }
    return CTL_OK;
}

int ctl_cmd_cred_rotate(ctl_t *ctl, const ctl_args_t *args)
{
    const char *user = args->arg, *grace_text = ctl_opt(args, "grace");
    uint64_t grace = CTL_GRACE_DEFAULT_S;
    if (ctl_check_name(ctl, args, "the user name", user) != CTL_OK)
        return CTL_USAGE;
    if (grace_text && ctl_duration_parse(grace_text, CTL_GRACE_MAX_S, &grace) < 0)
        return ctl_usage_error(ctl, args->cmd,
                               "--grace needs a duration such as 30s, 5m, 2h or 1d (at most 30d; "
                               "0: now), not '%s'",
                               grace_text);
    char password[CTL_PASSWORD_MAX + 2];
    int rc = get_password(ctl, args, password, sizeof(password));
    if (rc == CTL_OK && ctl_open(ctl) < 0)
        rc = CTL_FAIL;
    if (rc != CTL_OK) {
        explicit_bzero(password, sizeof(password));
        return rc;
    }
    PB(AuthCredentialRotate) rot = PB_INIT(AUTH_CREDENTIAL_ROTATE);
    rot.username = (char *)user;
    rot.password = password;
    rot.grace_s = (uint32_t)grace;
    sx_env_t req = PB_INIT(ENVELOPE);
    req.body_case = PB_BODY(AUTH_CREDENTIAL_ROTATE);
    req.auth_credential_rotate = &rot;
    sx_env_t *reply;
    rc = ctl_call_one(ctl, "auth", ctl_auth_endpoint(ctl), &req,
                      PB_BODY(AUTH_CREDENTIAL_ROTATE_REPLY), &reply);
    explicit_bzero(password, sizeof(password));
    if (rc != CTL_OK)
        return rc;
    rc = print_changed(ctl, reply->auth_credential_rotate_reply->credential, "rotated", grace);
    codec_free(&reply);
    return rc;
}

int ctl_cmd_cred_revoke(ctl_t *ctl, const ctl_args_t *args)
{
    if (ctl_check_name(ctl, args, "the user name", args->arg) != CTL_OK)
        return CTL_USAGE;
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    PB(AuthCredentialRevoke) rev = PB_INIT(AUTH_CREDENTIAL_REVOKE);
    rev.username = (char *)args->arg;
    sx_env_t req = PB_INIT(ENVELOPE);
    req.body_case = PB_BODY(AUTH_CREDENTIAL_REVOKE);
    req.auth_credential_revoke = &rev;
    sx_env_t *reply;
    int rc = ctl_call_one(ctl, "auth", ctl_auth_endpoint(ctl), &req,
                          PB_BODY(AUTH_CREDENTIAL_REVOKE_REPLY), &reply);
    if (rc != CTL_OK)
        return rc;
    rc = print_changed(ctl, reply->auth_credential_revoke_reply->credential, "revoked", 0);
    codec_free(&reply);
    return rc;
}

/* ---- tenant ---- */

int ctl_cmd_tenant_add(ctl_t *ctl, const ctl_args_t *args)
{
    if (ctl_check_name(ctl, args, "the tenant name", args->arg) != CTL_OK)
        return CTL_USAGE;
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    PB(AuthTenantAdd) add = PB_INIT(AUTH_TENANT_ADD);
    add.name = (char *)args->arg;
    sx_env_t req = PB_INIT(ENVELOPE);
    req.body_case = PB_BODY(AUTH_TENANT_ADD);
    req.auth_tenant_add = &add;
    sx_env_t *reply;
    int rc = ctl_call_one(ctl, "auth", ctl_auth_endpoint(ctl), &req, PB_BODY(AUTH_TENANT_ADD_REPLY),
                          &reply);
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

/* AuthTenantList. */
static int tenant_list(ctl_t *ctl, sx_env_t **reply)
{
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    PB(AuthTenantList) list = PB_INIT(AUTH_TENANT_LIST);
    sx_env_t req = PB_INIT(ENVELOPE);
    req.body_case = PB_BODY(AUTH_TENANT_LIST);
    req.auth_tenant_list = &list;
    return ctl_call_one(ctl, "auth", ctl_auth_endpoint(ctl), &req, PB_BODY(AUTH_TENANT_LIST_REPLY),
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
        char when[ISOTIME_SIZE];
        for (size_t i = 0; i < r->n_tenants; i++) {
            const PB(Tenant) *t = r->tenants[i];
            if (t == NULL)
                continue;
            fprintf(ctl->out, "%-24s %-20s", t->name,
                    t->created_at_ms ? isotime_format(t->created_at_ms, 0, when, sizeof(when))
                                     : "-");
            for (size_t j = 0; j < t->n_domains; j++)
                fprintf(ctl->out, "%s%s", j ? "," : " ", t->domains[j]);
            if (t->rate_per_minute || t->rate_per_day)
                fprintf(ctl->out, " limits=%u/min,%u/day", t->rate_per_minute, t->rate_per_day);
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
    if (ctl_check_name(ctl, args, "the domain", args->arg) != CTL_OK ||
        ctl_check_name(ctl, args, "--tenant", tenant) != CTL_OK)
        return CTL_USAGE;
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    PB(AuthDomainAdd) add = PB_INIT(AUTH_DOMAIN_ADD);
    add.domain = (char *)args->arg;
    add.tenant = (char *)tenant;
    add.verified = ctl_flag(args, "verified");
    sx_env_t req = PB_INIT(ENVELOPE);
    req.body_case = PB_BODY(AUTH_DOMAIN_ADD);
    req.auth_domain_add = &add;
    sx_env_t *reply;
    int rc = ctl_call_one(ctl, "auth", ctl_auth_endpoint(ctl), &req, PB_BODY(AUTH_DOMAIN_ADD_REPLY),
                          &reply);
    if (rc != CTL_OK)
        return rc;
    const PB(AuthDomainAddReply) *r = reply->auth_domain_add_reply;
    const char *domain = r->domain && *r->domain ? r->domain : args->arg;
    const char *owner = r->tenant && *r->tenant ? r->tenant : tenant;
    if (ctl->json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "domain", ctl_json_str(domain));
        json_object_set_new(doc, "tenant", ctl_json_str(owner));
        json_object_set_new(doc, "verified", json_boolean(r->verified));
        json_object_set_new(doc, "dkim", ctl_json_dkim(r->dkim, r->n_dkim));
        ctl_emit(ctl, doc);
    } else {
        fprintf(ctl->out, "added domain %s to tenant %s (%s)\n", domain, owner,
                r->verified ? "verified" : "not verified: logins may not send from it yet");
        ctl_dkim_print_records(ctl->out, r->dkim, r->n_dkim);
        if (!r->verified)
            fprintf(ctl->out, "then: sendarixctl domain verify %s\n", domain);
    }
    codec_free(&reply);
    return CTL_OK;
}

int ctl_cmd_domain_list(ctl_t *ctl, const ctl_args_t *args)
{
    const char *tenant = ctl_opt(args, "tenant");
    if (tenant && ctl_check_name(ctl, args, "--tenant", tenant) != CTL_OK)
        return CTL_USAGE;
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    PB(AuthDomainList) list = PB_INIT(AUTH_DOMAIN_LIST);
    list.tenant = (char *)(tenant ? tenant : "");
    sx_env_t req = PB_INIT(ENVELOPE);
    req.body_case = PB_BODY(AUTH_DOMAIN_LIST);
    req.auth_domain_list = &list;
    sx_env_t *reply;
    int rc = ctl_call_one(ctl, "auth", ctl_auth_endpoint(ctl), &req,
                          PB_BODY(AUTH_DOMAIN_LIST_REPLY), &reply);
    if (rc != CTL_OK)
        return rc;
    const PB(AuthDomainListReply) *r = reply->auth_domain_list_reply;
    if (ctl->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < r->n_domains; i++)
            if (r->domains[i])
                json_array_append_new(arr, ctl_json_domain(r->domains[i]));
        json_t *doc = json_object();
        json_object_set_new(doc, "domains", arr);
        ctl_emit(ctl, doc);
    } else if (r->n_domains == 0) {
        fprintf(ctl->out, "no domains\n");
    } else {
        char when[ISOTIME_SIZE];
        for (size_t i = 0; i < r->n_domains; i++) {
            const PB(Domain) *d = r->domains[i];
            if (d == NULL)
                continue;
            fprintf(ctl->out, "%-32s %-16s %-12s %s\n", d->name, d->tenant,
                    d->verified ? "verified" : "unverified",
                    d->created_at_ms ? isotime_format(d->created_at_ms, 0, when, sizeof(when))
                                     : "-");
        }
    }
    codec_free(&reply);
    return CTL_OK;
}
