/*
 * queue_index: what queue keeps in memory about its messages and their
 * destinations, so operators can list and count without reading every
 * record, and so delivery skips held messages and failing or suspended
 * domains without a store read. One entry per active message (tenant,
 * arrival, next attempt, pending recipients per domain), one per destination
 * domain seen (consecutive failures, hold, suspension, last error). Rebuilt
 * from the records at start; the records stay the truth.
 */
#include "queue.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define INDEX_BUCKETS  65536
#define DOMAIN_BUCKETS 4096

typedef struct qdom_count {
    char *domain;
    uint32_t pending;
    uint32_t deferred;
} qdom_count_t;

typedef struct qmsg {
    char id[ID_BUF_SIZE];
    char *tenant;
    uint64_t received_at;
    uint64_t next_due;
    uint32_t pending;
    int held;
    qdom_count_t *domains;
    size_t ndomains;
    char **recipients;       /* pending ones, for selection by recipient */
    size_t nrecipients;
    struct qmsg *next;
} qmsg_t;

struct queue_index {
    qmsg_t **buckets;
    size_t count;
    queue_domain_t **domains;
    size_t ndomains;
    /* totals kept as entries come and go, so QueueStats costs no scan */
    uint64_t queued, deferred, held;
    uint64_t oldest_at;
    char oldest_id[ID_BUF_SIZE];
    int oldest_dirty;   /* the oldest left: found again at the next stats */
};

static size_t hash_str(const char *s, size_t buckets)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = s; *p; p++)
        h = (h ^ (unsigned char)(*p | 0x20)) * 1099511628211ull;
    return (size_t)(h % buckets);
}

static void qmsg_free(qmsg_t *m)
{
    free(m->tenant);
    for (size_t i = 0; i < m->ndomains; i++)
        free(m->domains[i].domain);
    free(m->domains);
    for (size_t i = 0; i < m->nrecipients; i++)
        free(m->recipients[i]);
    free(m->recipients);
    free(m);
}

int queue_index_init(queue_t *q)
{
    q->index = xcalloc(1, sizeof(*q->index));
    q->index->buckets = xcalloc(INDEX_BUCKETS, sizeof(qmsg_t *));
    q->index->domains = xcalloc(DOMAIN_BUCKETS, sizeof(queue_domain_t *));
    return 0;
}

void queue_index_fini(queue_t *q)
{
    queue_index_t *ix = q->index;
    if (ix == NULL)
        return;
    for (size_t b = 0; b < INDEX_BUCKETS; b++) {
        qmsg_t *m = ix->buckets[b];
        while (m) {
            qmsg_t *next = m->next;
            qmsg_free(m);
            m = next;
        }
    }
    for (size_t b = 0; b < DOMAIN_BUCKETS; b++) {
        queue_domain_t *d = ix->domains[b];
        while (d) {
            queue_domain_t *next = d->next;
            free(d);
            d = next;
        }
    }
    free(ix->buckets);
    free(ix->domains);
    free(ix);
    q->index = NULL;
}

static void account(queue_t *q, const qmsg_t *m, int sign)
{
    queue_index_t *ix = q->index;
    for (size_t k = 0; k < m->ndomains; k++) {
        const qdom_count_t *dc = &m->domains[k];
        queue_domain_t *d = queue_domain_get(q, dc->domain, 1);
        if (sign > 0) {
            d->pending += dc->pending;
            d->deferred += dc->deferred;
            if (m->held)
                ix->held += dc->pending;
            else {
                ix->deferred += dc->deferred;
                ix->queued += dc->pending - dc->deferred;
            }
        } else {
            d->pending -= dc->pending < d->pending ? dc->pending : d->pending;
            d->deferred -= dc->deferred < d->deferred ? dc->deferred : d->deferred;
            if (m->held)
                ix->held -= dc->pending < ix->held ? dc->pending : ix->held;
            else {
                ix->deferred -= dc->deferred < ix->deferred ? dc->deferred : ix->deferred;
                uint64_t qd = dc->pending - dc->deferred;
                ix->queued -= qd < ix->queued ? qd : ix->queued;
            }
        }
    }
    if (sign > 0 && !ix->oldest_dirty && (ix->oldest_at == 0 || m->received_at < ix->oldest_at)) {
        ix->oldest_at = m->received_at;
        sx_strlcpy(ix->oldest_id, m->id, sizeof(ix->oldest_id));
    }
    if (sign < 0 && strcmp(ix->oldest_id, m->id) == 0)
        ix->oldest_dirty = 1;
}

static qmsg_t **find_link(queue_index_t *ix, const char *id)
{
    qmsg_t **link = &ix->buckets[hash_str(id, INDEX_BUCKETS)];
    while (*link && strcmp((*link)->id, id) != 0)
        link = &(*link)->next;
    return link;
}

void queue_index_drop(queue_t *q, const char *id)
{
    qmsg_t **link = find_link(q->index, id);
    if (*link) {
        qmsg_t *m = *link;
        *link = m->next;
        account(q, m, -1);
        qmsg_free(m);
        q->index->count--;
    }
}

void queue_index_put(queue_t *q, const PB(QueueRecord) * rec)
{
    const char *id = rec->envelope->message_id;
    queue_index_drop(q, id);
    if (rec->done_at_ms || queue_record_finished(rec))
        return;
    qmsg_t *m = xcalloc(1, sizeof(*m));
    sx_strlcpy(m->id, id, sizeof(m->id));
    m->tenant = xstrdup(rec->envelope->tenant ? rec->envelope->tenant : "");
    m->received_at = rec->envelope->received_at_ms;
    m->next_due = queue_record_next_due(rec);
    m->held = rec->held;
    m->recipients = xcalloc(rec->n_recipients ? rec->n_recipients : 1, sizeof(char *));
    m->domains = xcalloc(rec->n_recipients ? rec->n_recipients : 1, sizeof(qdom_count_t));
    for (size_t i = 0; i < rec->n_recipients; i++) {
        const PB(QueueRecipientState) *r = rec->recipients[i];
        if (!queue_rcpt_pending(r))
            continue;
        m->pending++;
        m->recipients[m->nrecipients++] = xstrdup(r->address);
        const char *dom = queue_rcpt_domain(r->address);
        size_t k;
        for (k = 0; k < m->ndomains; k++)
            if (strcasecmp(m->domains[k].domain, dom) == 0)
                break;
        if (k == m->ndomains) {
            m->domains[k].domain = xstrdup(dom);
            for (char *c = m->domains[k].domain; *c; c++)
                if (*c >= 'A' && *c <= 'Z')
                    *c = (char)(*c + 32);
            m->ndomains++;
        }
        m->domains[k].pending++;
        if (strcmp(r->state, "deferred") == 0)
            m->domains[k].deferred++;
    }
    qmsg_t **link = find_link(q->index, id);
    m->next = *link;
    *link = m;
    q->index->count++;
    account(q, m, +1);
}

size_t queue_index_count(const queue_t *q)
{
    return q->index->count;
}

int queue_index_held(queue_t *q, const char *id)
{
    qmsg_t *m = *find_link(q->index, id);
    return m && m->held;
}

static int msg_matches(const qmsg_t *m, const PB(QueueSelect) * sel, uint64_t now)
{
    if (sel->tenant && sel->tenant[0] && strcmp(sel->tenant, m->tenant) != 0)
        return 0;
    if (sel->older_than_s && now - m->received_at < sel->older_than_s * 1000)
        return 0;
    if (sel->domain && sel->domain[0]) {
        size_t k;
        for (k = 0; k < m->ndomains; k++)
            if (strcasecmp(m->domains[k].domain, sel->domain) == 0)
                break;
        if (k == m->ndomains)
            return 0;
    }
    if (sel->recipient && sel->recipient[0]) {
        size_t k;
        for (k = 0; k < m->nrecipients; k++)
            if (strcasecmp(m->recipients[k], sel->recipient) == 0)
                break;
        if (k == m->nrecipients)
            return 0;
    }
    if (sel->state && sel->state[0]) {
        if (strcmp(sel->state, "held") == 0 && !m->held)
            return 0;
        if (strcmp(sel->state, "active") == 0 && m->held)
            return 0;
        if (strcmp(sel->state, "deferred") == 0) {
            size_t k;
            for (k = 0; k < m->ndomains; k++)
                if (m->domains[k].deferred)
                    break;
            if (k == m->ndomains)
                return 0;
        }
        if (strcmp(sel->state, "done") == 0)
            return 0; /* finished messages are not in the index */
    }
    return 1;
}

/* The max entries of smallest received_at, kept as a max-heap on arrival. */
typedef struct pick {
    uint64_t at;
    const char *id;
} pick_t;

static void pick_sift_down(pick_t *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && h[l].at > h[m].at)
            m = l;
        if (r < n && h[r].at > h[m].at)
            m = r;
        if (m == i)
            return;
        pick_t t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static void pick_offer(pick_t *h, size_t *n, size_t max, uint64_t at, const char *id)
{
    if (max == 0)
        return;
    if (*n < max) {
        size_t i = (*n)++;
        h[i] = (pick_t){at, id};
        while (i > 0 && h[(i - 1) / 2].at < h[i].at) {
            pick_t t = h[i];
            h[i] = h[(i - 1) / 2];
            h[(i - 1) / 2] = t;
            i = (i - 1) / 2;
        }
        return;
    }
    if (at >= h[0].at)
        return;
    h[0] = (pick_t){at, id};
    pick_sift_down(h, *n, 0);
}

static int pick_cmp(const void *a, const void *b)
{
    const pick_t *x = a, *y = b;
    return x->at < y->at ? -1 : x->at > y->at ? 1 : strcmp(x->id, y->id);
}

size_t queue_index_select(queue_t *q, const PB(QueueSelect) * sel, char (*ids)[ID_BUF_SIZE],
                          size_t max, size_t *matched)
{
    uint64_t now = clock_wall_ms();
    size_t n = 0, all = 0;
    if (sel->n_message_ids > 0) {
        for (size_t i = 0; i < sel->n_message_ids; i++) {
            if (*find_link(q->index, sel->message_ids[i]) == NULL)
                continue;
            all++;
            if (n < max)
                sx_strlcpy(ids[n++], sel->message_ids[i], ID_BUF_SIZE);
        }
    } else {
        /* the oldest first: keep the max oldest matches, then sort them */
        pick_t *heap = xmalloc((max ? max : 1) * sizeof(*heap));
        for (size_t b = 0; b < INDEX_BUCKETS; b++) {
            for (qmsg_t *m = q->index->buckets[b]; m; m = m->next) {
                if (!msg_matches(m, sel, now))
                    continue;
                all++;
                pick_offer(heap, &n, max, m->received_at, m->id);
            }
        }
        qsort(heap, n, sizeof(*heap), pick_cmp);
        for (size_t i = 0; i < n; i++)
            sx_strlcpy(ids[i], heap[i].id, ID_BUF_SIZE);
        free(heap);
    }
    if (matched)
        *matched = all;
    return n;
}

/* ---- destinations ---- */

queue_domain_t *queue_domain_get(queue_t *q, const char *domain, int create)
{
    queue_domain_t **link = &q->index->domains[hash_str(domain, DOMAIN_BUCKETS)];
    for (queue_domain_t *d = *link; d; d = d->next)
        if (strcasecmp(d->name, domain) == 0)
            return d;
    if (!create)
        return NULL;
    queue_domain_t *d = xcalloc(1, sizeof(*d));
    sx_strlcpy(d->name, domain, sizeof(d->name));
    for (char *c = d->name; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c + 32);
    d->next = *link;
    *link = d;
    q->index->ndomains++;
    return d;
}

int queue_domain_blocked(queue_t *q, const char *domain, uint64_t now, uint64_t *until)
{
    queue_domain_t *d = queue_domain_get(q, domain, 0);
    if (d == NULL)
        return 0;
    uint64_t u = 0;
    if (d->suspended_until > now)
        u = d->suspended_until;
    if (d->held_until > now && d->held_until > u)
        u = d->held_until;
    if (until)
        *until = u;
    return u != 0;
}

void queue_domain_result(queue_t *q, const char *domain, int failed, const char *error,
                         uint64_t now)
{
    queue_domain_t *d = queue_domain_get(q, domain, 1);
    if (!failed) {
        if (d->hold_level)
            log_info("event=domain_recovered domain=%s", d->name);
        d->failures = 0;
        d->hold_level = 0;
        d->held_until = 0;
        return;
    }
    if (error) {
        sx_strlcpy(d->last_error, error, sizeof(d->last_error));
        d->last_error_at = now;
    }
    /* results of attempts started before the hold began change nothing */
    if (d->held_until > now)
        return;
    d->failures++;
    if (d->failures < (uint32_t)q->conf.domain_hold_after)
        return;
    /* each hold that ends in another failure doubles the next, up to the maximum */
    uint64_t hold = q->conf.domain_hold_base;
    for (uint32_t i = 0; i < d->hold_level && hold < q->conf.domain_hold_max; i++)
        hold *= 2;
    if (hold > q->conf.domain_hold_max)
        hold = q->conf.domain_hold_max;
    d->hold_level++;
    d->held_until = now + hold;
    log_info("event=domain_held domain=%s failures=%u hold_ms=%llu last_error=\"%s\"", d->name,
             d->failures, (unsigned long long)hold, d->last_error);
}

/* ---- stats ---- */

static int domain_listed(const queue_domain_t *d, uint64_t now)
{
    return d->pending || d->failures || d->suspended_until > now || d->held_until > now ||
           (d->last_error[0] && now - d->last_error_at < 3600000);
}

/* The oldest message left: found again by one scan of the index. */
static void oldest_refresh(queue_index_t *ix)
{
    ix->oldest_at = 0;
    ix->oldest_id[0] = '\0';
    for (size_t b = 0; b < INDEX_BUCKETS; b++) {
        for (qmsg_t *m = ix->buckets[b]; m; m = m->next) {
            if (ix->oldest_at == 0 || m->received_at < ix->oldest_at) {
                ix->oldest_at = m->received_at;
                sx_strlcpy(ix->oldest_id, m->id, sizeof(ix->oldest_id));
            }
        }
    }
    ix->oldest_dirty = 0;
}

/* Forget destinations with nothing to say (bounded memory for many domains). */
static void domains_prune(queue_t *q, uint64_t now)
{
    queue_index_t *ix = q->index;
    for (size_t b = 0; b < DOMAIN_BUCKETS; b++) {
        queue_domain_t **link = &ix->domains[b];
        while (*link) {
            queue_domain_t *d = *link;
            if (!domain_listed(d, now)) {
                *link = d->next;
                free(d);
                ix->ndomains--;
                continue;
            }
            link = &d->next;
        }
    }
}

void queue_on_stats(queue_t *q, bus_msg_t *msg)
{
    queue_index_t *ix = q->index;
    uint64_t now = clock_wall_ms();
    if (ix->oldest_dirty)
        oldest_refresh(ix);
    domains_prune(q, now);

    PB(QueueStatsReply) r = PB_INIT(QUEUE_STATS_REPLY);
    r.instance = q->name;
    r.messages = ix->count;
    r.oldest_age_s = ix->count && ix->oldest_at && now > ix->oldest_at
                         ? (now - ix->oldest_at) / 1000
                         : 0;
    r.suppressed = queue_suppress_count(q);
    PB(QueueCount) counts[4] = {PB_INIT(QUEUE_COUNT), PB_INIT(QUEUE_COUNT), PB_INIT(QUEUE_COUNT),
                                PB_INIT(QUEUE_COUNT)};
    PB(QueueCount) *cp[4] = {&counts[0], &counts[1], &counts[2], &counts[3]};
    counts[0].key = "queued", counts[0].count = ix->queued;
    counts[1].key = "deferred", counts[1].count = ix->deferred;
    counts[2].key = "held", counts[2].count = ix->held;
    counts[3].key = "inflight", counts[3].count = queue_sched_inflight(q);
    r.by_state = cp;
    r.n_by_state = 4;
    size_t nd = ix->ndomains;
    PB(QueueDomainStats) *ds = xcalloc(nd ? nd : 1, sizeof(*ds));
    PB(QueueDomainStats) **dp = xcalloc(nd ? nd : 1, sizeof(*dp));
    size_t a = 0;
    for (size_t b = 0; b < DOMAIN_BUCKETS; b++) {
        for (queue_domain_t *d = ix->domains[b]; d && a < nd; d = d->next) {
            PB(QueueDomainStats) init = PB_INIT(QUEUE_DOMAIN_STATS);
            ds[a] = init;
            ds[a].domain = d->name;
            ds[a].pending = d->pending;
            ds[a].deferred = d->deferred;
            ds[a].last_error = d->last_error;
            ds[a].last_error_at_ms = d->last_error_at;
            ds[a].suspended = d->suspended_until > now;
            ds[a].held_until_ms = d->held_until > now ? d->held_until : 0;
            ds[a].failures = d->failures;
            dp[a] = &ds[a];
            a++;
        }
    }
    r.domains = dp;
    r.n_domains = a;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(QUEUE_STATS_REPLY);
    env.queue_stats_reply = &r;
    bus_server_send(q->api, &msg->peer, msg->env->request_id, &env, NULL);
    free(ds);
    free(dp);
}
