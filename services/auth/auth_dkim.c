/*
 * auth_dkim: key sets, their public view and the check of a published record.
 */
#include "auth_dkim.h"
#include "core/alloc.h"
#include "mail/dkim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int auth_dkim_generate(auth_dkim_rec_t *rec, uint32_t generation, uint64_t now_ms)
{
    static const struct {
        dkim_alg_t alg;
        const char *suffix;
    } kinds[AUTH_DKIM_KEYS_MAX] = {{DKIM_ALG_RSA_SHA256, ""}, {DKIM_ALG_ED25519_SHA256, "e"}};
    auth_dkim_rec_clear(rec);
    rec->generation = generation;
    for (size_t i = 0; i < AUTH_DKIM_KEYS_MAX; i++) {
        auth_dkim_key_t *k = &rec->keys[i];
        char pub[DKIM_PUBLIC_MAX];
        rec->n = i + 1;
        snprintf(k->selector, sizeof(k->selector), "sx%u%s", generation, kinds[i].suffix);
        k->alg = (uint8_t)kinds[i].alg;
        k->created_at_ms = now_ms;
        if (dkim_key_generate(kinds[i].alg, &k->private_pem, pub, sizeof(pub)) < 0) {
            auth_dkim_rec_clear(rec);
            return -1;
        }
        k->public_b64 = xstrdup(pub);
    }
    return 0;
}

PB(DkimKey) * *auth_dkim_public(const char *domain, const auth_dkim_rec_t *rec, size_t *n)
{
    *n = 0;
    if (rec->n == 0)
        return NULL;
    PB(DkimKey) **v = xcalloc(rec->n, sizeof(*v));
    for (size_t i = 0; i < rec->n; i++) {
        const auth_dkim_key_t *k = &rec->keys[i];
        char name[AUTH_DKIM_TXT_NAME_MAX], value[AUTH_DKIM_TXT_VALUE_MAX];
        PB(DkimKey) *d = xmalloc(sizeof(*d));
        PB(DkimKey) init = PB_INIT(DKIM_KEY);
        *d = init;
        const char *alg = dkim_alg_name((dkim_alg_t)k->alg);
        if (dkim_record_name(k->selector, domain, name, sizeof(name)) < 0)
            name[0] = '\0';
        if (dkim_record_value((dkim_alg_t)k->alg, k->public_b64, value, sizeof(value)) < 0)
            value[0] = '\0';
        d->selector = xstrdup(k->selector);
        d->algorithm = xstrdup(alg ? alg : "");
        d->public_key = xstrdup(k->public_b64);
        d->txt_name = xstrdup(name);
        d->txt_value = xstrdup(value);
        d->created_at_ms = k->created_at_ms;
        v[(*n)++] = d;
    }
    return v;
}

/* A shortened copy of a published text for the detail line. */
static void excerpt(char *out, size_t size, const char *s)
{
    size_t n = strlen(s);
    if (n + 1 <= size) {
        sx_strlcpy(out, s, size);
        return;
    }
    snprintf(out, size, "%.*s...", (int)(size - 4), s);
}

int auth_dkim_check(const char *domain, const auth_dkim_key_t *key, char *const *txts, size_t n,
                    const char *lookup_err, PB(DkimCheck) * check)
{
    char name[AUTH_DKIM_TXT_NAME_MAX], detail[AUTH_DKIM_DETAIL_MAX] = "";
    PB(DkimCheck) init = PB_INIT(DKIM_CHECK);
    *check = init;
    if (dkim_record_name(key->selector, domain, name, sizeof(name)) < 0)
        name[0] = '\0';
    const char *want_k = dkim_alg_key_type((dkim_alg_t)key->alg);
    int found = 0, matches = 0;
    if (n == 0) {
        snprintf(detail, sizeof(detail), "no record: %s",
                 lookup_err && *lookup_err ? lookup_err : "no TXT record at that name");
    }
    for (size_t i = 0; i < n && !matches; i++) {
        dkim_record_t rec;
        const char *why = NULL;
        char seen[80];
        excerpt(seen, sizeof(seen), txts[i]);
        if (dkim_record_parse(txts[i], strlen(txts[i]), &rec, &why) < 0) {
            if (!found)
                snprintf(detail, sizeof(detail), "not a DKIM key record (%s): %s", why, seen);
            continue;
        }
        found = 1;
        if (want_k == NULL || strcasecmp(rec.k, want_k) != 0) {
            snprintf(detail, sizeof(detail), "published k=%s, expected k=%s", rec.k,
                     want_k ? want_k : "?");
        } else if (rec.p[0] == '\0') {
            snprintf(detail, sizeof(detail), "published key is empty (revoked)");
        } else if (strcmp(rec.p, key->public_b64) != 0) {
            snprintf(detail, sizeof(detail), "published p= is another key: %s", seen);
        } else {
            matches = 1;
            snprintf(detail, sizeof(detail), "published key matches");
        }
    }
    if (n > 0 && !found && detail[0] == '\0')
        snprintf(detail, sizeof(detail), "no DKIM key record among %zu TXT records", n);
    check->selector = xstrdup(key->selector);
    check->txt_name = xstrdup(name);
    check->found = found;
    check->matches = matches;
    check->detail = xstrdup(detail);
    return matches;
}

void auth_dkim_check_clear(PB(DkimCheck) * check)
{
    free(check->selector);
    free(check->txt_name);
    free(check->detail);
    check->selector = check->txt_name = check->detail = NULL;
}
