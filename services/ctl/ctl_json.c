/*
 * ctl_json: bus messages -> jansson documents. Every key is always
 * present, so scripts need not test for absent ones.
 */
#include "ctl_json.h"
#include "ctl.h"
#include "core/alloc.h"
#include "core/isotime.h"

#include <stdlib.h>

static char *ascii_copy(const char *s)
{
    char *c = xstrdup(s);
    for (char *p = c; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    return c;
}

json_t *ctl_json_str(const char *s)
{
    json_t *j = json_string(s ? s : "");
    if (j == NULL) {
        char *c = ascii_copy(s);
        j = json_string(c);
        free(c);
    }
    return j;
}

json_t *ctl_json_time(uint64_t ms, int with_ms)
{
    if (ms == 0)
        return json_null();
    char iso[ISOTIME_SIZE];
    return json_string(isotime_format(ms, with_ms, iso, sizeof(iso)));
}

json_t *ctl_json_status(const PB(Status) * st)
{
    if (st == NULL)
        return json_null();
    json_t *o = json_object();
    json_object_set_new(o, "code", json_integer(st->code));
    json_object_set_new(o, "enhanced", ctl_json_str(st->enhanced));
    json_object_set_new(o, "text", ctl_json_str(st->text));
    return o;
}

json_t *ctl_json_attrs(PB(Attr) * *attrs, size_t n)
{
    json_t *o = json_object();
    for (size_t i = 0; i < n; i++) {
        const PB(Attr) *a = attrs[i];
        if (a == NULL || a->key == NULL || a->key[0] == '\0')
            continue;
        if (json_object_set_new(o, a->key, ctl_json_str(a->value)) < 0) {
            char *k = ascii_copy(a->key);
            json_object_set_new(o, k, ctl_json_str(a->value));
            free(k);
        }
    }
    return o;
}

json_t *ctl_json_event(const PB(Event) * ev)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", ctl_json_str(ev->id));
    json_object_set_new(o, "at", ctl_json_time(ev->at_ms, 1));
    json_object_set_new(o, "type", ctl_json_str(ev->type));
    json_object_set_new(o, "service", ctl_json_str(ev->service));
    json_object_set_new(o, "instance", ctl_json_str(ev->instance));
    json_object_set_new(o, "message_id", ctl_json_str(ev->message_id));
    json_object_set_new(o, "recipient", ctl_json_str(ev->recipient));
    json_object_set_new(o, "rcpt_index", json_integer(ev->rcpt_index));
    json_object_set_new(o, "sender", ctl_json_str(ev->sender));
    json_object_set_new(o, "tenant", ctl_json_str(ev->tenant));
    json_object_set_new(o, "reply", ctl_json_status(ev->reply));
    json_object_set_new(o, "attempt", json_integer(ev->attempt));
    json_object_set_new(o, "remote_host", ctl_json_str(ev->remote_host));
    json_object_set_new(o, "session_id", ctl_json_str(ev->session_id));
    json_object_set_new(o, "attrs", ctl_json_attrs(ev->attrs, ev->n_attrs));
    return o;
}

json_t *ctl_json_pong(const char *service, unsigned instance, const char *endpoint,
                      const PB(ServicePong) * pong, uint64_t now_ms, const char *problem)
{
    json_t *o = json_object();
    char inst[16];
    snprintf(inst, sizeof(inst), "%u", instance);
    json_object_set_new(o, "service", ctl_json_str(service));
    json_object_set_new(o, "instance", json_string(inst));
    json_object_set_new(o, "endpoint", ctl_json_str(endpoint));
    json_object_set_new(o, "up", json_boolean(pong != NULL));
    if (pong == NULL) {
        if (problem)
            json_object_set_new(o, "error", ctl_json_str(problem));
        return o;
    }
    uint64_t started = pong->started_at_ms;
    uint64_t uptime = started && now_ms > started ? (now_ms - started) / 1000 : 0;
    json_object_set_new(o, "pid", json_integer(pong->pid));
    json_object_set_new(o, "version", ctl_json_str(pong->version));
    json_object_set_new(o, "uptime_s", json_integer((json_int_t)uptime));
    json_object_set_new(o, "stats", ctl_json_attrs(pong->stats, pong->n_stats));
    return o;
}

json_t *ctl_json_strings(char **v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, ctl_json_str(v[i]));
    return a;
}

json_t *ctl_json_credential(const PB(Credential) * c)
{
    json_t *o = json_object();
    json_object_set_new(o, "username", ctl_json_str(c->username));
    json_object_set_new(o, "tenant", ctl_json_str(c->tenant));
    json_object_set_new(o, "environment", ctl_json_str(c->environment));
    json_object_set_new(o, "created_at", ctl_json_time(c->created_at_ms, 0));
    json_object_set_new(o, "revoked", json_boolean(c->revoked));
    json_object_set_new(o, "password_count", json_integer(c->password_count));
    json_object_set_new(o, "domains", ctl_json_strings(c->domains, c->n_domains));
    json_object_set_new(o, "allowed_networks",
                        ctl_json_strings(c->allowed_networks, c->n_allowed_networks));
    json_object_set_new(o, "rotated_at", ctl_json_time(c->rotated_at_ms, 0));
    json_object_set_new(o, "rate_per_minute", json_integer(c->rate_per_minute));
    json_object_set_new(o, "rate_per_day", json_integer(c->rate_per_day));
    return o;
}

json_t *ctl_json_tenant(const PB(Tenant) * t)
{
    json_t *o = json_object();
    json_object_set_new(o, "name", ctl_json_str(t->name));
    json_object_set_new(o, "created_at", ctl_json_time(t->created_at_ms, 0));
    json_object_set_new(o, "domains", ctl_json_strings(t->domains, t->n_domains));
    json_object_set_new(o, "rate_per_minute", json_integer(t->rate_per_minute));
    json_object_set_new(o, "rate_per_day", json_integer(t->rate_per_day));
    return o;
}

json_t *ctl_json_domain(const PB(Domain) * d)
{
    json_t *o = json_object();
    json_object_set_new(o, "domain", ctl_json_str(d->name));
    json_object_set_new(o, "tenant", ctl_json_str(d->tenant));
    json_object_set_new(o, "verified", json_boolean(d->verified));
    json_object_set_new(o, "created_at", ctl_json_time(d->created_at_ms, 0));
    json_object_set_new(o, "verified_at", ctl_json_time(d->verified_at_ms, 0));
    json_object_set_new(o, "dkim", ctl_json_dkim(d->dkim, d->n_dkim));
    return o;
}

static json_t *queue_message(const PB(QueueEnvelope) * e)
{
    json_t *o = json_object();
    json_object_set_new(o, "message_id", ctl_json_str(e->message_id));
    json_object_set_new(o, "mail_from", ctl_json_str(e->mail_from));
    json_object_set_new(o, "tenant", ctl_json_str(e->tenant));
    json_object_set_new(o, "username", ctl_json_str(e->username));
    json_object_set_new(o, "client_ip", ctl_json_str(e->client_ip));
    json_object_set_new(o, "helo", ctl_json_str(e->helo));
    json_object_set_new(o, "tls", ctl_json_str(e->tls));
    json_object_set_new(o, "received_at", ctl_json_time(e->received_at_ms, 0));
    json_object_set_new(o, "size", json_integer((json_int_t)e->size));
    json_object_set_new(o, "dsn_ret", ctl_json_str(e->dsn_ret));
    json_object_set_new(o, "dsn_envid", ctl_json_str(e->dsn_envid));
    return o;
}

static json_t *queue_recipient(const PB(QueueRecipientState) * r, const PB(QueueEnvelope) * e)
{
    /* NOTIFY and ORCPT were given with the envelope's recipient of the same index */
    const PB(QueueRecipient) *orig = NULL;
    for (size_t i = 0; i < e->n_recipients && orig == NULL; i++)
        if (e->recipients[i] && e->recipients[i]->index == r->index)
            orig = e->recipients[i];
    json_t *o = json_object();
    json_object_set_new(o, "index", json_integer(r->index));
    json_object_set_new(o, "address", ctl_json_str(r->address));
    json_object_set_new(o, "state", ctl_json_str(r->state));
    json_object_set_new(o, "attempts", json_integer(r->attempts));
    json_object_set_new(o, "next_attempt", ctl_json_time(r->next_attempt_ms, 0));
    json_object_set_new(o, "last_reply", ctl_json_status(r->last_reply));
    json_object_set_new(o, "last_remote", ctl_json_str(r->last_remote));
    json_object_set_new(o, "notify", ctl_json_str(orig ? orig->notify : ""));
    json_object_set_new(o, "orcpt", ctl_json_str(orig ? orig->orcpt : ""));
    return o;
}

json_t *ctl_json_queue_show(const PB(QueueMessageShowReply) * r, int held)
{
    static const PB(QueueEnvelope) empty = PB_INIT(QUEUE_ENVELOPE);
    const PB(QueueEnvelope) *e = r->envelope ? r->envelope : &empty;
    json_t *o = json_object();
    json_object_set_new(o, "message", queue_message(e));
    json_t *list = json_array();
    for (size_t i = 0; i < r->n_recipients; i++)
        if (r->recipients[i])
            json_array_append_new(list, queue_recipient(r->recipients[i], e));
    json_object_set_new(o, "recipients", list);
    json_object_set_new(o, "state", ctl_json_str(r->state));
    json_object_set_new(o, "held", held < 0 ? json_null() : json_boolean(held));
    json_object_set_new(o, "body_size", json_integer((json_int_t)r->body_size));
    return o;
}

json_t *ctl_json_queue_summary(const char *instance, const PB(QueueMessageSummary) * m)
{
    json_t *o = json_object();
    json_object_set_new(o, "instance", ctl_json_str(instance));
    json_object_set_new(o, "message_id", ctl_json_str(m->message_id));
    json_object_set_new(o, "mail_from", ctl_json_str(m->mail_from));
    json_object_set_new(o, "tenant", ctl_json_str(m->tenant));
    json_object_set_new(o, "received_at", ctl_json_time(m->received_at_ms, 0));
    json_object_set_new(o, "size", json_integer((json_int_t)m->size));
    json_object_set_new(o, "recipients", json_integer(m->recipients));
    json_object_set_new(o, "pending", json_integer(m->pending));
    json_object_set_new(o, "state", ctl_json_str(m->state));
    json_object_set_new(o, "next_attempt", ctl_json_time(m->next_attempt_ms, 0));
    json_object_set_new(o, "last_error", ctl_json_str(m->last_error));
    json_object_set_new(o, "domains", ctl_json_strings(m->domains, m->n_domains));
    return o;
}

json_t *ctl_json_suppression(const PB(Suppression) * e)
{
    json_t *o = json_object();
    json_object_set_new(o, "tenant", ctl_json_str(e->tenant));
    json_object_set_new(o, "address", ctl_json_str(e->address));
    json_object_set_new(o, "reason", ctl_json_str(e->reason));
    json_object_set_new(o, "reply", ctl_json_status(e->reply));
    json_object_set_new(o, "created_at", ctl_json_time(e->created_at_ms, 0));
    json_object_set_new(o, "expires_at", ctl_json_time(e->expires_at_ms, 0));
    return o;
}
