/*
 * events_bus: handlers for EventPublish (PULL) and EventSearch (ROUTER).
 * Nothing from the bus is trusted: bodies are checked before use, and a
 * bad message is logged and answered or dropped, never asserted on.
 */
#include "events_bus.h"
#include "core/log.h"

#include <stdio.h>
#include <string.h>

void events_bus_on_publish(bus_pull_t *pl, bus_msg_t *msg, void *arg)
{
    (void)pl;
    evingest_t *in = arg;
    char sender[80];
    const char *s = msg->env->sender ? msg->env->sender : "";
    const PB(EventPublish) *pub =
        msg->env->body_case == PB_BODY(EVENT_PUBLISH) ? msg->env->event_publish : NULL;
    if (pub == NULL || (pub->event == NULL && pub->n_events == 0)) {
        log_warn("event=bus_unexpected socket=ingest body=%s from=%s", codec_body_name(msg->env),
                 log_quote(sender, sizeof(sender), s, strlen(s)));
        return;
    }
    /* a lone event, or a sender's batch of one loop turn */
    if (pub->event)
        evingest_add(in, pub->event);
    for (size_t i = 0; i < pub->n_events; i++)
        evingest_add(in, pub->events[i]);
}

int events_bus_query(const PB(EventSearch) * req, evstore_query_t *q, char *why, size_t whylen)
{
    memset(q, 0, sizeof(*q));
    q->message_id = req->message_id;
    q->type = req->type;
    q->recipient = req->recipient;
    q->since_ms = req->since_ms;
    q->until_ms = req->until_ms;
    q->limit = req->limit;
    q->max_bytes = EVBUS_REPLY_MAX_BYTES;
    return evstore_query_check(q, why, whylen);
}

static void answer_search(bus_server_t *srv, bus_msg_t *msg, evstore_t *st)
{
    const PB(EventSearch) *req = msg->env->event_search;
    uint64_t rid = msg->env->request_id;
    evstore_query_t q;
    evstore_result_t res;
    char why[160];
    if (req == NULL || events_bus_query(req, &q, why, sizeof(why)) < 0) {
        bus_server_error(srv, &msg->peer, rid, 400, "5.5.4", "%s", req ? why : "empty search");
        return;
    }
    if (evstore_search(st, &q, &res, why, sizeof(why)) < 0) {
        log_error("event=search_failed request=%llu err=\"%s\"", (unsigned long long)rid, why);
        bus_server_error(srv, &msg->peer, rid, 500, "4.3.0", "%s", why);
        return;
    }
    PB(EventSearchReply) rep = PB_INIT(EVENT_SEARCH_REPLY);
    rep.events = res.events;
    rep.n_events = res.n;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(EVENT_SEARCH_REPLY);
    env.event_search_reply = &rep;
    bus_server_send(srv, &msg->peer, rid, &env, NULL);
    char mid[80];
    const char *m = q.message_id ? q.message_id : "";
    log_debug("event=search msg=%s found=%zu scanned=%zu truncated=%d",
              log_quote(mid, sizeof(mid), m, strlen(m)), res.n, res.scanned, res.truncated);
    evstore_result_free(&res);
}

void events_bus_on_request(bus_server_t *srv, bus_msg_t *msg, void *arg)
{
    evstore_t *st = arg;
    if (msg->env->body_case == PB_BODY(EVENT_SEARCH)) {
        answer_search(srv, msg, st);
        return;
    }
    log_warn("event=bus_unexpected socket=api body=%s", codec_body_name(msg->env));
    bus_server_error(srv, &msg->peer, msg->env->request_id, 400, "5.5.1",
                     "events does not handle %s", codec_body_name(msg->env));
}
