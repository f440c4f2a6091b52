/*
 * ctl_dkim: the DKIM keys of sending domains, through auth. `domain dkim`
 * shows (or, with --rotate, replaces) a domain's keys with the DNS TXT
 * records to publish; `domain verify` has auth look those records up and
 * prints each check, exiting 1 unless the domain is verified. The record
 * printer and JSON shape are shared with `domain add` and `domain list`.
 * Private keys never reach the CLI.
 */
#include "ctl.h"
#include "ctl_json.h"
#include "core/isotime.h"

#include <stdio.h>
#include <string.h>

#define TXT_STRING_MAX 255 /* one character-string of a TXT record */

json_t *ctl_json_dkim(PB(DkimKey) *const *keys, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        const PB(DkimKey) *k = keys[i];
        if (k == NULL)
            continue;
        json_t *o = json_object();
        json_object_set_new(o, "selector", ctl_json_str(k->selector));
        json_object_set_new(o, "algorithm", ctl_json_str(k->algorithm));
        json_object_set_new(o, "txt_name", ctl_json_str(k->txt_name));
        json_object_set_new(o, "txt_value", ctl_json_str(k->txt_value));
        json_object_set_new(o, "created_at", ctl_json_time(k->created_at_ms, 0));
        json_array_append_new(a, o);
    }
    return a;
}

/*
 * One record as a zone file line: the value cut into strings of at most
 * 255 characters, since an RSA key does not fit in one.
 */
static void print_record(FILE *f, const PB(DkimKey) * k)
{
    const char *v = k->txt_value ? k->txt_value : "";
    size_t len = strlen(v);
    fprintf(f, "  %s. IN TXT (", k->txt_name ? k->txt_name : "");
    for (size_t at = 0; at < len || at == 0; at += TXT_STRING_MAX) {
        size_t n = len - at < TXT_STRING_MAX ? len - at : TXT_STRING_MAX;
        fprintf(f, " \"%.*s\"", (int)n, v + at);
        if (len == 0)
            break;
    }
    fprintf(f, " )\n");
}

void ctl_dkim_print_records(FILE *f, PB(DkimKey) *const *keys, size_t n)
{
    if (n == 0) {
        fprintf(f, "no DKIM keys yet (sendarixctl domain dkim DOMAIN makes them)\n");
        return;
    }
    fprintf(f, "DKIM: publish these DNS TXT records:\n");
    for (size_t i = 0; i < n; i++)
        if (keys[i])
            print_record(f, keys[i]);
}

int ctl_cmd_domain_dkim(ctl_t *ctl, const ctl_args_t *args)
{
    if (ctl_check_name(ctl, args, "the domain", args->arg) != CTL_OK)
        return CTL_USAGE;
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    PB(AuthDomainDkim) q = PB_INIT(AUTH_DOMAIN_DKIM);
    q.domain = (char *)args->arg;
    q.rotate = ctl_flag(args, "rotate");
    sx_env_t req = PB_INIT(ENVELOPE);
    req.body_case = PB_BODY(AUTH_DOMAIN_DKIM);
    req.auth_domain_dkim = &q;
    sx_env_t *reply;
    int rc = ctl_call_one(ctl, "auth", ctl_auth_endpoint(ctl), &req,
                          PB_BODY(AUTH_DOMAIN_DKIM_REPLY), &reply);
    if (rc != CTL_OK)
        return rc;
    const PB(Domain) *d = reply->auth_domain_dkim_reply->domain;
    if (d == NULL) {
        codec_free(&reply);
        return ctl_fail(ctl, "auth answered without the domain");
    }
    if (ctl->json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "domain", ctl_json_domain(d));
        ctl_emit(ctl, doc);
    } else {
        char when[ISOTIME_SIZE];
        fprintf(ctl->out, "domain %s (tenant %s): %s", d->name, d->tenant,
                d->verified ? "verified" : "not verified");
        if (d->verified_at_ms)
            fprintf(ctl->out, ", DNS records seen %s",
                    isotime_format(d->verified_at_ms, 0, when, sizeof(when)));
        fprintf(ctl->out, "%s\n", q.rotate ? "; keys rotated: these sign from now on" : "");
        ctl_dkim_print_records(ctl->out, d->dkim, d->n_dkim);
    }
    codec_free(&reply);
    return CTL_OK;
}

int ctl_cmd_domain_verify(ctl_t *ctl, const ctl_args_t *args)
{
    if (ctl_check_name(ctl, args, "the domain", args->arg) != CTL_OK)
        return CTL_USAGE;
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    PB(AuthDomainVerify) q = PB_INIT(AUTH_DOMAIN_VERIFY);
    q.domain = (char *)args->arg;
    sx_env_t req = PB_INIT(ENVELOPE);
    req.body_case = PB_BODY(AUTH_DOMAIN_VERIFY);
    req.auth_domain_verify = &q;
    sx_env_t *reply;
    int rc = ctl_call_one(ctl, "auth", ctl_auth_endpoint(ctl), &req,
                          PB_BODY(AUTH_DOMAIN_VERIFY_REPLY), &reply);
    if (rc != CTL_OK)
        return rc;
    const PB(AuthDomainVerifyReply) *r = reply->auth_domain_verify_reply;
    const char *domain = r->domain && *r->domain ? r->domain : args->arg;
    const char *reason = NULL;
    for (size_t i = 0; i < r->n_checks && reason == NULL; i++)
        if (r->checks[i] && !r->checks[i]->matches)
            reason = r->checks[i]->detail;
    if (ctl->json) {
        json_t *doc = json_object(), *checks = json_array();
        for (size_t i = 0; i < r->n_checks; i++) {
            const PB(DkimCheck) *c = r->checks[i];
            if (c == NULL)
                continue;
            json_t *o = json_object();
            json_object_set_new(o, "selector", ctl_json_str(c->selector));
            json_object_set_new(o, "txt_name", ctl_json_str(c->txt_name));
            json_object_set_new(o, "found", json_boolean(c->found));
            json_object_set_new(o, "matches", json_boolean(c->matches));
            json_object_set_new(o, "detail", ctl_json_str(c->detail));
            json_array_append_new(checks, o);
        }
        json_object_set_new(doc, "domain", ctl_json_str(domain));
        json_object_set_new(doc, "verified", json_boolean(r->verified));
        json_object_set_new(doc, "checks", checks);
        ctl_emit(ctl, doc);
    } else {
        for (size_t i = 0; i < r->n_checks; i++) {
            const PB(DkimCheck) *c = r->checks[i];
            if (c)
                fprintf(ctl->out, "  %-6s %-40s %s: %s\n", c->selector, c->txt_name,
                        c->matches ? "ok" : "FAILED", c->detail);
        }
        if (r->verified)
            fprintf(ctl->out, "%s is verified: its DNS records match its DKIM keys\n", domain);
    }
    if (!r->verified)
        fprintf(ctl->err, "sendarixctl: %s is not verified: %s\n", domain,
                reason ? reason : "no key was checked");
    rc = r->verified ? CTL_OK : CTL_FAIL;
    codec_free(&reply);
    return rc;
}
