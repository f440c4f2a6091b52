/*
 * auth_dkim_api: the requests about DKIM keys: a domain's keys and their
 * rotation (AuthDomainDkim), the DNS check that verifies a domain
 * (AuthDomainVerify, around lookups auth.c runs) and the signing keys
 * delivery asks for (AuthDkimKeyGet). Private keys appear only in the
 * AuthDkimKeyGet reply and in no log line. Making keys is auth_dkim.c;
 * where they are kept is auth_store.c.
 */
#include "auth_api_int.h"
#include "core/alloc.h"
#include "core/log.h"
#include "mail/dkim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The domain of a request, normalised; 0 or -1 with err (400). */
static int domain_arg(const char *given, char out[AUTH_DOMAIN_MAX + 1], auth_err_t *err)
{
    if (auth_domain_normalize(given, out) == 0)
        return 0;
    char q[160];
    return auth_fail(err, 400, "domain %s is not a valid host name",
                     auth_quoted(q, sizeof(q), given));
}

/* A domain's keys (and record); 0 or -1 with err (404, 500). */
static int load_keys(auth_api_t *api, const char *domain, auth_domain_rec_t *dom,
                     auth_dkim_rec_t *keys, auth_err_t *err)
{
    auth_st_t st = auth_store_dkim_get(api->st, domain, dom, keys);
    if (st == AUTH_ST_NOTFOUND)
        return auth_fail(err, 404, "domain %s not found", domain);
    if (st != AUTH_ST_OK)
        return auth_fail_store(err, st, "", 500);
    return 0;
}

static void log_selectors(const char *event, const char *domain, const auth_dkim_rec_t *keys)
{
    char sel[2 * (AUTH_DKIM_SELECTOR_MAX + 1) + 2] = "";
    for (size_t i = 0; i < keys->n; i++) {
        size_t used = strlen(sel);
        snprintf(sel + used, sizeof(sel) - used, "%s%s", i ? "," : "", keys->keys[i].selector);
    }
    log_info("event=%s domain=%s generation=%u selectors=%s", event, domain, keys->generation,
             sel[0] ? sel : "-");
}

int auth_api_domain_dkim(auth_api_t *api, const PB(AuthDomainDkim) * req, auth_dkim_rec_t *fresh,
                         uint32_t *generation, PB(AuthDomainDkimReply) * *reply, auth_err_t *err)
{
    *reply = NULL;
    char domain[AUTH_DOMAIN_MAX + 1], text[AUTH_ERR_TEXT_MAX] = "";
    if (domain_arg(req ? auth_str(req->domain) : "", domain, err) < 0)
        return -1;
    int rotate = req && req->rotate;
    auth_domain_rec_t dom;
    auth_dkim_rec_t have;
    if (load_keys(api, domain, &dom, &have, err) < 0)
        return -1;
    uint32_t at = have.generation, next = at + 1;
    int need = have.n == 0 || rotate;
    auth_dkim_rec_clear(&have);
    if (need && fresh == NULL) {
        if (generation)
            *generation = next;
        return 1;
    }
    if (need) {
        if (fresh->generation != next || fresh->n == 0)
            return auth_fail(err, 409, "the DKIM keys of %s changed meanwhile; try again", domain);
        auth_st_t st = auth_store_dkim_replace(api->st, domain, fresh, at, text, sizeof(text));
        if (st != AUTH_ST_OK)
            return auth_fail_store(err, st, text, 409);
        log_selectors(at ? "dkim_rotated" : "dkim_keys_made", domain, fresh);
    }
    PB(Domain) *d = NULL;
    auth_st_t st = auth_store_domain_get(api->st, domain, &d);
    if (st != AUTH_ST_OK)
        return auth_fail_store(err, st, "", 500);
    PB(AuthDomainDkimReply) *r = xmalloc(sizeof(*r));
    PB(AuthDomainDkimReply) init = PB_INIT(AUTH_DOMAIN_DKIM_REPLY);
    *r = init;
    r->domain = d;
    *reply = r;
    return 0;
}

int auth_api_domain_verify_begin(auth_api_t *api, const PB(AuthDomainVerify) * req,
                                 char domain[AUTH_DOMAIN_MAX + 1], auth_dkim_rec_t *keys,
                                 auth_err_t *err)
{
    memset(keys, 0, sizeof(*keys));
    if (domain_arg(req ? auth_str(req->domain) : "", domain, err) < 0)
        return -1;
    auth_domain_rec_t dom;
    if (load_keys(api, domain, &dom, keys, err) < 0)
        return -1;
    if (keys->n == 0) {
        auth_dkim_rec_clear(keys);
        return auth_fail(err, 409,
                         "domain %s has no DKIM keys yet: make them first (sendarixctl domain dkim "
                         "%s)",
                         domain, domain);
    }
    /* the check needs the public parts only */
    for (size_t i = 0; i < keys->n; i++) {
        char *pem = keys->keys[i].private_pem;
        if (pem) {
            OPENSSL_cleanse(pem, strlen(pem));
            free(pem);
            keys->keys[i].private_pem = NULL;
        }
    }
    return 0;
}

int auth_api_domain_verify_finish(auth_api_t *api, const char *domain, const auth_dkim_rec_t *keys,
                                  PB(DkimCheck) * checks, PB(AuthDomainVerifyReply) * *reply,
                                  auth_err_t *err)
{
    *reply = NULL;
    size_t matched = 0;
    for (size_t i = 0; i < keys->n; i++)
        matched += checks[i].matches != 0;
    int all = keys->n > 0 && matched == keys->n;
    if (all) {
        char text[AUTH_ERR_TEXT_MAX] = "";
        auth_st_t st = auth_store_dkim_verified(api->st, domain, keys->generation, auth_now(api),
                                                text, sizeof(text));
        if (st != AUTH_ST_OK)
            return auth_fail_store(err, st, text, 409);
    }
    for (size_t i = 0; i < keys->n; i++) {
        char q[2 * AUTH_DKIM_DETAIL_MAX + 8];
        const char *detail = checks[i].detail ? checks[i].detail : "";
        log_info("event=dkim_check domain=%s selector=%s found=%d matches=%d detail=%s", domain,
                 keys->keys[i].selector, checks[i].found != 0, checks[i].matches != 0,
                 log_quote(q, sizeof(q), detail, strlen(detail)));
    }
    log_info("event=%s domain=%s generation=%u matched=%zu/%zu",
             all ? "domain_dkim_verified" : "domain_dkim_unverified", domain, keys->generation,
             matched, keys->n);
    PB(AuthDomainVerifyReply) *r = xmalloc(sizeof(*r));
    PB(AuthDomainVerifyReply) init = PB_INIT(AUTH_DOMAIN_VERIFY_REPLY);
    *r = init;
    r->domain = xstrdup(domain);
    r->verified = all;
    r->checks = xcalloc(keys->n ? keys->n : 1, sizeof(*r->checks));
    for (size_t i = 0; i < keys->n; i++) {
        PB(DkimCheck) *c = xmalloc(sizeof(*c));
        *c = checks[i];
        c->selector = xstrdup(checks[i].selector ? checks[i].selector : "");
        c->txt_name = xstrdup(checks[i].txt_name ? checks[i].txt_name : "");
        c->detail = xstrdup(checks[i].detail ? checks[i].detail : "");
        r->checks[r->n_checks++] = c;
    }
    *reply = r;
    return 0;
}

int auth_api_dkim_key_get(auth_api_t *api, const PB(AuthDkimKeyGet) * req,
                          PB(AuthDkimKeyGetReply) * *reply, auth_err_t *err)
{
    *reply = NULL;
    char domain[AUTH_DOMAIN_MAX + 1];
    if (domain_arg(req ? auth_str(req->domain) : "", domain, err) < 0)
        return -1;
    auth_domain_rec_t dom;
    auth_dkim_rec_t keys;
    if (load_keys(api, domain, &dom, &keys, err) < 0)
        return -1;
    if (!dom.verified) {
        auth_dkim_rec_clear(&keys);
        return auth_fail(err, 404, "domain %s is not verified: it signs nothing", domain);
    }
    PB(AuthDkimKeyGetReply) *r = xmalloc(sizeof(*r));
    PB(AuthDkimKeyGetReply) init = PB_INIT(AUTH_DKIM_KEY_GET_REPLY);
    *r = init;
    r->domain = xstrdup(domain);
    r->keys = xcalloc(keys.n ? keys.n : 1, sizeof(*r->keys));
    for (size_t i = 0; i < keys.n; i++) {
        const char *alg = dkim_alg_name((dkim_alg_t)keys.keys[i].alg);
        PB(DkimPrivateKey) *k = xmalloc(sizeof(*k));
        PB(DkimPrivateKey) kinit = PB_INIT(DKIM_PRIVATE_KEY);
        *k = kinit;
        k->selector = xstrdup(keys.keys[i].selector);
        k->algorithm = xstrdup(alg ? alg : "");
        k->private_key_pem = keys.keys[i].private_pem; /* moved */
        keys.keys[i].private_pem = NULL;
        r->keys[r->n_keys++] = k;
    }
    log_debug("event=dkim_keys_given domain=%s keys=%zu generation=%u", domain, keys.n,
              keys.generation);
    auth_dkim_rec_clear(&keys);
    *reply = r;
    return 0;
}
