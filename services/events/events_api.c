/*
 * events_api: routing, parameter checks and rendering for the HTTP API.
 * Every answer is built in memory; the server copies it out.
 */
#include "events_api.h"
#include "events_json.h"
#include "core/isotime.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TYPE_TEXT    "text/plain; charset=utf-8"
#define TYPE_METRICS "text/plain; version=0.0.4; charset=utf-8"
#define TYPE_JSON    "application/json"

static void reply_init(events_api_reply_t *r, unsigned status, const char *type)
{
    r->status = status;
    r->content_type = type;
    buf_init(&r->body, EVAPI_BODY_MAX);
}

static void reply_json(events_api_reply_t *r, unsigned status, json_t *doc)
{
    reply_init(r, status, TYPE_JSON);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (text == NULL || buf_append_str(&r->body, text) < 0 || buf_append_str(&r->body, "\n") < 0) {
        buf_reset(&r->body);
        r->status = 500;
        buf_append_str(&r->body, "{\"error\":\"response too large\"}\n");
    }
    free(text);
}

static void reply_error(events_api_reply_t *r, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void reply_error(events_api_reply_t *r, unsigned status, const char *fmt, ...)
{
    char text[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    json_t *doc = json_object();
    json_t *s = json_string(text);
    json_object_set_new(doc, "error", s ? s : json_string("bad request"));
    reply_json(r, status, doc);
}

void events_api_reply_free(events_api_reply_t *r)
{
    buf_free(&r->body);
}

/* ---- /metrics ---- */

static void metric_type(const char *type, uint64_t count, void *arg)
{
    /* types are letters, digits, '_', '-' and '.' (events_store checks): no escaping needed */
    buf_printf(arg, "sendarix_events_total{type=\"%s\"} %llu\n", type, (unsigned long long)count);
}

static void handle_metrics(evstore_t *st, const evingest_t *in, const evmetrics_t *metrics,
                           events_api_reply_t *r)
{
    reply_init(r, 200, TYPE_METRICS);
    buf_t *b = &r->body;
    evingest_stats_t s = {0};
    buf_append_str(b, "# HELP sendarix_events_total Events received since start, by type.\n"
                      "# TYPE sendarix_events_total counter\n");
    if (in) {
        evingest_stats(in, &s);
        evingest_each_type(in, metric_type, b);
    }
    buf_printf(b,
               "# HELP sendarix_events_stored Events held in the store.\n"
               "# TYPE sendarix_events_stored gauge\n"
               "sendarix_events_stored %llu\n"
               "# HELP sendarix_events_store_bytes Bytes the event store takes on disk.\n"
               "# TYPE sendarix_events_store_bytes gauge\n"
               "sendarix_events_store_bytes %zu\n"
               "# HELP sendarix_events_rejected_total Malformed events refused since start.\n"
               "# TYPE sendarix_events_rejected_total counter\n"
               "sendarix_events_rejected_total %llu\n"
               "# HELP sendarix_events_dropped_total Events lost to failed writes since start.\n"
               "# TYPE sendarix_events_dropped_total counter\n"
               "sendarix_events_dropped_total %llu\n",
               (unsigned long long)evstore_count(st), evstore_bytes(st),
               (unsigned long long)s.rejected, (unsigned long long)s.dropped);
    evmetrics_render(metrics, b);
}

/* ---- /api/v1/events ---- */

static int parse_time_param(const char *name, const char *value, uint64_t *ms,
                            events_api_reply_t *r)
{
    if (isotime_parse(value, ms) < 0) {
        reply_error(r, 400, "%s: \"%.64s\" is not an ISO 8601 time (e.g. 2024-05-01T12:00:00Z)",
                    name, value);
        return -1;
    }
    return 0;
}

static int parse_limit(const char *value, uint32_t *limit, events_api_reply_t *r)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(value, &end, 10);
    if (errno || end == value || *end || value[0] == '-' || v < 1 || v > EVSTORE_LIMIT_MAX) {
        reply_error(r, 400, "limit: \"%.32s\" is not a number from 1 to %d", value,
                    EVSTORE_LIMIT_MAX);
        return -1;
    }
    *limit = (uint32_t)v;
    return 0;
}

static void handle_events(evstore_t *st, const events_api_param_t *params, size_t n,
                          events_api_reply_t *r)
{
    evstore_query_t q = {0};
    for (size_t i = 0; i < n; i++) {
        const char *k = params[i].key, *v = params[i].value ? params[i].value : "";
        if (strcmp(k, "message_id") == 0 || strcmp(k, "id") == 0) {
            q.message_id = v;
        } else if (strcmp(k, "type") == 0) {
            q.type = v;
        } else if (strcmp(k, "recipient") == 0) {
            q.recipient = v;
        } else if (strcmp(k, "since") == 0) {
            if (parse_time_param(k, v, &q.since_ms, r) < 0)
                return;
        } else if (strcmp(k, "until") == 0) {
            if (parse_time_param(k, v, &q.until_ms, r) < 0)
                return;
        } else if (strcmp(k, "limit") == 0) {
            if (parse_limit(v, &q.limit, r) < 0)
                return;
        } else {
            reply_error(r, 400, "unknown parameter \"%.64s\"", k);
            return;
        }
    }
    evstore_result_t res;
    char why[160];
    if (evstore_query_check(&q, why, sizeof(why)) < 0) {
        reply_error(r, 400, "%s", why);
        return;
    }
    if (evstore_search(st, &q, &res, why, sizeof(why)) < 0) {
        reply_error(r, 500, "%s", why);
        return;
    }
    json_t *list = json_array();
    for (size_t i = 0; i < res.n; i++)
        json_array_append_new(list, events_json_event(res.events[i]));
    json_t *doc = json_object();
    json_object_set_new(doc, "events", list);
    json_object_set_new(doc, "truncated", json_boolean(res.truncated));
    evstore_result_free(&res);
    reply_json(r, 200, doc);
}

void events_api_handle(evstore_t *st, const evingest_t *in, const evmetrics_t *metrics,
                       const char *method, const char *path, const events_api_param_t *params,
                       size_t nparams, events_api_reply_t *out)
{
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        reply_error(out, 405, "method %.16s not allowed", method);
        return;
    }
    if (strcmp(path, "/healthz") == 0) {
        reply_init(out, 200, TYPE_TEXT);
        buf_append_str(&out->body, "ok\n");
    } else if (strcmp(path, "/metrics") == 0) {
        handle_metrics(st, in, metrics, out);
    } else if (strcmp(path, "/api/v1/events") == 0) {
        handle_events(st, params, nparams, out);
    } else {
        reply_error(out, 404, "not found");
    }
}
