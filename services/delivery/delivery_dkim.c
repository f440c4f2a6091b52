/*
 * delivery_dkim: the two caches (tenant -> its verified domains with keys,
 * domain -> its signing keys), one request to auth per entry however many
 * tasks wait on it, and the signing itself (libshared mail/dkim). A task's
 * prep walks: tenant entry, choice of domain, domain entry, sign, kick.
 */
#include "delivery_dkim.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"
#include "mail/dkim.h"
#include "mail/header.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_BUCKETS      1024
#define NAME_MAX_LEN       255
#define TENANT_DOMAINS_MAX 10000 /* verified domains of one tenant kept */
#define FROM_ADDR_MAX      512

typedef enum { ENTRY_TENANT = 0, ENTRY_DOMAIN } entry_kind_t;
typedef enum { ENTRY_PENDING = 0, ENTRY_READY, ENTRY_FAILED } entry_state_t;

typedef struct entry {
    dkim_signer_t *s;
    entry_kind_t kind;
    char name[NAME_MAX_LEN + 1];
    entry_state_t state;
    uint64_t expires_ms;  /* monotonic; READY and FAILED */
    uint64_t deadline_ms; /* PENDING: give up then */
    uint64_t request_id;  /* in flight, or 0 */
    loop_timer_t retry;   /* auth not connected: ask again */
    char why[64];         /* FAILED: why, for the log */
    /* tenant: its verified domains that have keys */
    char **domains;
    size_t ndomains;
    /* domain: its keys */
    dkim_key_t *keys[DKIM_KEYS_MAX];
    size_t nkeys;
    dkim_prep_t *waiters;
    struct entry *next; /* hash chain */
} entry_t;

struct dkim_signer {
    loop_t *loop;
    bus_client_t *auth;
    entry_t *buckets[CACHE_BUCKETS];
    size_t entries;
    uint64_t signed_total, unsigned_total;
};

typedef enum { PREP_TENANT = 0, PREP_DOMAIN, PREP_DONE } prep_stage_t;

struct dkim_prep {
    dkim_signer_t *s;
    loop_t *loop;
    session_txn_t *txn;
    loop_timer_t *kick;
    prep_stage_t stage;
    char ids[160];
    char tenant[NAME_MAX_LEN + 1];
    char from_domain[NAME_MAX_LEN + 1];
    char env_domain[NAME_MAX_LEN + 1];
    const char *domain; /* the chosen one: from_domain or env_domain */
    entry_t *waiting;
    dkim_prep_t *wprev, *wnext;
    char *signature; /* the DKIM-Signature header lines, txn->head */
};

static void prep_advance(dkim_prep_t *p);

/* ---- names ---- */

static unsigned bucket_of(entry_kind_t kind, const char *name)
{
    uint32_t h = 2166136261u ^ (uint32_t)kind;
    for (const char *c = name; *c; c++)
        h = (h ^ (uint8_t)*c) * 16777619u;
    return h % CACHE_BUCKETS;
}

/* The lowercased domain of an address ("user@Example.COM"), or "" */
static void domain_of(const char *addr, char *out, size_t size)
{
    out[0] = '\0';
    const char *at = addr ? strrchr(addr, '@') : NULL;
    if (at == NULL || at[1] == '\0' || strlen(at + 1) >= size)
        return;
    size_t i = 0;
    for (const char *c = at + 1; *c; c++)
        out[i++] = (char)tolower((unsigned char)*c);
    out[i] = '\0';
}

typedef struct first_addr {
    char addr[FROM_ADDR_MAX];
    int seen;
} first_addr_t;

static void on_from_addr(const char *addr, void *arg)
{
    first_addr_t *f = arg;
    if (!f->seen)
        sx_strlcpy(f->addr, addr, sizeof(f->addr));
    f->seen = 1;
}

/* The domain of the first address of the message's From: field, or "". */
static void from_domain(const char *msg, size_t len, char *out, size_t size)
{
    out[0] = '\0';
    long end = header_block_end(msg, len);
    if (end < 0)
        return;
    char value[HEADER_VALUE_MAX];
    if (header_field(msg, (size_t)end, "From", value, sizeof(value)) != 1)
        return; /* none, or several: nothing to align with */
    first_addr_t f = {.seen = 0};
    if (header_addresses(value, on_from_addr, &f) < 1)
        return;
    domain_of(f.addr, out, size);
}

/* ---- entries ---- */

static void entry_clear_data(entry_t *e)
{
    for (size_t i = 0; i < e->ndomains; i++)
        free(e->domains[i]);
    free(e->domains);
    e->domains = NULL;
    e->ndomains = 0;
    for (size_t i = 0; i < e->nkeys; i++)
        dkim_key_destroy(&e->keys[i]);
    e->nkeys = 0;
}

static void entry_free(entry_t *e)
{
    if (e->request_id)
        bus_client_cancel(e->s->auth, e->request_id);
    loop_timer_stop(e->s->loop, &e->retry);
    entry_clear_data(e);
    free(e);
}

static void waiter_unlink(dkim_prep_t *p)
{
    entry_t *e = p->waiting;
    if (e == NULL)
        return;
    if (p->wprev)
        p->wprev->wnext = p->wnext;
    else
        e->waiters = p->wnext;
    if (p->wnext)
        p->wnext->wprev = p->wprev;
    p->wprev = p->wnext = NULL;
    p->waiting = NULL;
}

static void waiter_add(entry_t *e, dkim_prep_t *p)
{
    p->waiting = e;
    p->wprev = NULL;
    p->wnext = e->waiters;
    if (e->waiters)
        e->waiters->wprev = p;
    e->waiters = p;
}

/* The entry has an answer (or gave up): every task waiting on it moves on. */
static void entry_settle(entry_t *e)
{
    dkim_prep_t *list = e->waiters;
    e->waiters = NULL;
    while (list) {
        dkim_prep_t *p = list;
        list = p->wnext;
        p->waiting = NULL;
        p->wprev = p->wnext = NULL;
        prep_advance(p);
    }
}

static void entry_fail(entry_t *e, const char *why)
{
    entry_clear_data(e);
    e->state = ENTRY_FAILED;
    e->expires_ms = clock_mono_ms() + DKIM_FAIL_TTL_MS;
    sx_strlcpy(e->why, why, sizeof(e->why));
    log_warn("event=dkim_auth_%s %s=%s reason=%s unsigned_for_ms=%u",
             e->kind == ENTRY_TENANT ? "domains_failed" : "keys_failed",
             e->kind == ENTRY_TENANT ? "tenant" : "domain", e->name, why, DKIM_FAIL_TTL_MS);
    entry_settle(e);
}

/* The tenant's verified domains that have keys. */
static void take_domains(entry_t *e, const PB(AuthDomainListReply) * r)
{
    for (size_t i = 0; r && i < r->n_domains && e->ndomains < TENANT_DOMAINS_MAX; i++) {
        const PB(Domain) *d = r->domains[i];
        if (d == NULL || d->name == NULL || !d->verified || d->n_dkim == 0 ||
            (d->tenant && strcmp(d->tenant, e->name) != 0) || strlen(d->name) > NAME_MAX_LEN)
            continue;
        e->domains = xrealloc(e->domains, (e->ndomains + 1) * sizeof(*e->domains));
        e->domains[e->ndomains++] = xstrdup(d->name);
    }
}

/* The keys of the reply; private keys wiped from the message as they are read. */
static void take_keys(entry_t *e, PB(AuthDkimKeyGetReply) * r)
{
    for (size_t i = 0; r && i < r->n_keys; i++) {
        PB(DkimPrivateKey) *k = r->keys[i];
        if (k == NULL || k->private_key_pem == NULL)
            continue;
        size_t len = strlen(k->private_key_pem);
        dkim_alg_t alg = dkim_alg_parse(k->algorithm);
        char err[128] = "";
        dkim_key_t *key = NULL;
        if (alg != DKIM_ALG_NONE && e->nkeys < DKIM_KEYS_MAX)
            key = dkim_key_from_pem(k->selector, alg, k->private_key_pem, len, err, sizeof(err));
        OPENSSL_cleanse(k->private_key_pem, len);
        if (key == NULL) {
            log_warn("event=dkim_key_refused domain=%s selector=%s algorithm=%s reason=\"%s\"",
                     e->name, k->selector ? k->selector : "-", k->algorithm ? k->algorithm : "-",
                     err[0] ? err : "unknown algorithm or too many keys");
            continue;
        }
        e->keys[e->nkeys++] = key;
    }
}

static void on_reply(bus_msg_t *msg, bus_status_t status, void *arg)
{
    entry_t *e = arg;
    e->request_id = 0;
    if (status != BUS_OK || msg == NULL) {
        entry_fail(e, status == BUS_TIMEOUT ? "auth_timeout" : "auth_unavailable");
        return;
    }
    sx_env_t *env = msg->env;
    int want = e->kind == ENTRY_TENANT ? PB_BODY(AUTH_DOMAIN_LIST_REPLY)
                                       : PB_BODY(AUTH_DKIM_KEY_GET_REPLY);
    entry_clear_data(e);
    if ((int)env->body_case == want) {
        if (e->kind == ENTRY_TENANT)
            take_domains(e, env->auth_domain_list_reply);
        else
            take_keys(e, env->auth_dkim_key_get_reply);
    } else if (env->body_case == PB_BODY(ERROR) && env->error && env->error->status &&
               env->error->status->code == 404) {
        /* unknown tenant, or a domain that is unknown or unverified: nothing signs */
    } else {
        entry_fail(e, "auth_refused");
        return;
    }
    e->state = ENTRY_READY;
    e->expires_ms = clock_mono_ms() + DKIM_CACHE_TTL_MS;
    log_debug("event=dkim_cached %s=%s %s=%zu", e->kind == ENTRY_TENANT ? "tenant" : "domain",
              e->name, e->kind == ENTRY_TENANT ? "domains" : "keys",
              e->kind == ENTRY_TENANT ? e->ndomains : e->nkeys);
    entry_settle(e);
}

/* Ask auth; when no auth is connected yet, try again until the deadline. */
static void entry_ask(entry_t *e)
{
    uint64_t now = clock_mono_ms();
    if (now >= e->deadline_ms) {
        entry_fail(e, "auth_unavailable");
        return;
    }
    sx_env_t env = PB_INIT(ENVELOPE);
    PB(AuthDomainList) list = PB_INIT(AUTH_DOMAIN_LIST);
    PB(AuthDkimKeyGet) get = PB_INIT(AUTH_DKIM_KEY_GET);
    if (e->kind == ENTRY_TENANT) {
        list.tenant = e->name;
        env.body_case = PB_BODY(AUTH_DOMAIN_LIST);
        env.auth_domain_list = &list;
    } else {
        get.domain = e->name;
        env.body_case = PB_BODY(AUTH_DKIM_KEY_GET);
        env.auth_dkim_key_get = &get;
    }
    if (bus_client_request(e->s->auth, &env, NULL, e->deadline_ms - now, on_reply, e,
                           &e->request_id) == 0)
        return;
    e->request_id = 0;
    uint64_t wait = e->deadline_ms - now < DKIM_RETRY_MS ? e->deadline_ms - now : DKIM_RETRY_MS;
    loop_timer_start(e->s->loop, &e->retry, wait);
}

static void on_retry(loop_t *loop, void *arg)
{
    (void)loop;
    entry_ask(arg);
}

/* Drop settled entries past their time; if still full, any settled one. */
static void cache_trim(dkim_signer_t *s)
{
    uint64_t now = clock_mono_ms();
    for (int pass = 0; pass < 2 && s->entries >= DKIM_CACHE_MAX; pass++)
        for (size_t b = 0; b < CACHE_BUCKETS && s->entries >= DKIM_CACHE_MAX; b++) {
            entry_t **pp = &s->buckets[b];
            while (*pp && s->entries >= DKIM_CACHE_MAX) {
                entry_t *e = *pp;
                if (e->state != ENTRY_PENDING && e->waiters == NULL &&
                    (pass == 1 || now >= e->expires_ms)) {
                    *pp = e->next;
                    s->entries--;
                    entry_free(e);
                } else {
                    pp = &e->next;
                }
            }
        }
}

/* The cached entry, asked for again when it is missing or stale. */
static entry_t *entry_get(dkim_signer_t *s, entry_kind_t kind, const char *name)
{
    unsigned b = bucket_of(kind, name);
    entry_t *e = s->buckets[b];
    while (e && (e->kind != kind || strcmp(e->name, name) != 0))
        e = e->next;
    uint64_t now = clock_mono_ms();
    if (e && (e->state == ENTRY_PENDING || now < e->expires_ms))
        return e;
    if (e == NULL) {
        if (s->entries >= DKIM_CACHE_MAX)
            cache_trim(s);
        e = xcalloc(1, sizeof(*e));
        e->s = s;
        e->kind = kind;
        sx_strlcpy(e->name, name, sizeof(e->name));
        loop_timer_init(&e->retry, on_retry, e);
        b = bucket_of(kind, name);
        e->next = s->buckets[b];
        s->buckets[b] = e;
        s->entries++;
    }
    e->state = ENTRY_PENDING;
    e->deadline_ms = now + DKIM_WAIT_MS;
    entry_ask(e);
    return e;
}

/* ---- signer ---- */

dkim_signer_t *dkim_signer_new(loop_t *loop, bus_t *bus, const char *endpoint)
{
    if (endpoint == NULL || *endpoint == '\0')
        return NULL;
    dkim_signer_t *s = xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->auth = bus_client_new(bus, endpoint);
    if (s->auth == NULL) {
        free(s);
        return NULL;
    }
    return s;
}

void dkim_signer_destroy(dkim_signer_t **p)
{
    dkim_signer_t *s = *p;
    if (s == NULL)
        return;
    for (size_t b = 0; b < CACHE_BUCKETS; b++) {
        while (s->buckets[b]) {
            entry_t *e = s->buckets[b];
            s->buckets[b] = e->next;
            while (e->waiters)
                waiter_unlink(e->waiters);
            entry_free(e);
        }
    }
    bus_client_destroy(&s->auth);
    free(s);
    *p = NULL;
}

/* ---- one task ---- */

static void prep_finish(dkim_prep_t *p, const char *unsigned_reason)
{
    p->stage = PREP_DONE;
    if (unsigned_reason) {
        p->s->unsigned_total++;
        log_info("event=dkim_unsigned %s tenant=%s from_domain=%s sender_domain=%s reason=%s",
                 p->ids, p->tenant[0] ? p->tenant : "-", p->from_domain[0] ? p->from_domain : "-",
                 p->env_domain[0] ? p->env_domain : "-", unsigned_reason);
    }
    loop_timer_start(p->loop, p->kick, 0);
}

static int in_list(const entry_t *e, const char *domain)
{
    if (domain[0] == '\0')
        return 0;
    for (size_t i = 0; i < e->ndomains; i++)
        if (strcmp(e->domains[i], domain) == 0)
            return 1;
    return 0;
}

static void prep_sign(dkim_prep_t *p, entry_t *e)
{
    session_txn_t *txn = p->txn;
    buf_t out;
    buf_init(&out, 0);
    char err[128];
    uint64_t t = clock_wall_ms() / 1000u;
    if (dkim_sign_message(txn->body, txn->body_len, p->domain, e->keys, e->nkeys, t, &out, err,
                          sizeof(err)) < 0) {
        buf_free(&out);
        char why[160];
        snprintf(why, sizeof(why), "\"%s\"", err);
        prep_finish(p, why);
        return;
    }
    /* the signature goes out in front of the body, which is not copied */
    size_t hlen;
    p->signature = buf_steal(&out, &hlen);
    txn->head = p->signature;
    txn->head_len = hlen;
    p->s->signed_total++;
    char sel[2 * (DKIM_SELECTOR_MAX + 1) + 2] = "";
    for (size_t i = 0; i < e->nkeys; i++) {
        size_t used = strlen(sel);
        snprintf(sel + used, sizeof(sel) - used, "%s%s", i ? "," : "",
                 dkim_key_selector(e->keys[i]));
    }
    log_info("event=dkim_signed %s domain=%s selectors=%s header_bytes=%zu", p->ids, p->domain, sel,
             hlen);
    prep_finish(p, NULL);
}

/* One step further; called again when the entry it waits on settles. */
static void prep_advance(dkim_prep_t *p)
{
    if (p->stage == PREP_TENANT) {
        entry_t *e = entry_get(p->s, ENTRY_TENANT, p->tenant);
        if (e->state == ENTRY_PENDING) {
            waiter_add(e, p);
            return;
        }
        if (e->state == ENTRY_FAILED) {
            prep_finish(p, e->why);
            return;
        }
        if (in_list(e, p->from_domain))
            p->domain = p->from_domain;
        else if (in_list(e, p->env_domain))
            p->domain = p->env_domain;
        if (p->domain == NULL) {
            prep_finish(p, "no_signing_domain");
            return;
        }
        p->stage = PREP_DOMAIN;
    }
    if (p->stage == PREP_DOMAIN) {
        entry_t *e = entry_get(p->s, ENTRY_DOMAIN, p->domain);
        if (e->state == ENTRY_PENDING) {
            waiter_add(e, p);
            return;
        }
        if (e->state == ENTRY_FAILED) {
            prep_finish(p, e->why);
            return;
        }
        if (e->nkeys == 0) {
            prep_finish(p, "no_keys");
            return;
        }
        prep_sign(p, e);
    }
}

dkim_prep_t *dkim_prepare(dkim_signer_t *s, loop_t *loop, const PB(DeliveryJob) * job,
                          session_txn_t *txn, const char *log_ids, loop_timer_t *kick)
{
    if (s == NULL) {
        loop_timer_start(loop, kick, 0);
        return NULL;
    }
    dkim_prep_t *p = xcalloc(1, sizeof(*p));
    p->s = s;
    p->loop = loop;
    p->txn = txn;
    p->kick = kick;
    sx_strlcpy(p->ids, log_ids, sizeof(p->ids));
    const char *tenant = job->tenant ? job->tenant : "";
    if (strlen(tenant) <= NAME_MAX_LEN)
        sx_strlcpy(p->tenant, tenant, sizeof(p->tenant));
    domain_of(job->mail_from, p->env_domain, sizeof(p->env_domain));
    from_domain(txn->body, txn->body_len, p->from_domain, sizeof(p->from_domain));
    if (p->tenant[0] == '\0')
        prep_finish(p, "no_tenant");
    else
        prep_advance(p);
    return p;
}

void dkim_prep_free(dkim_prep_t **pp)
{
    dkim_prep_t *p = *pp;
    if (p == NULL)
        return;
    waiter_unlink(p);
    free(p->signature);
    free(p);
    *pp = NULL;
}
