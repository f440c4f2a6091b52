/*
 * ctl_log: `sendarixctl log search`. Each service pushes its events to one
 * events instance, so a message's events may be spread over several: the
 * search goes to every instance and the answers are merged in time order
 * (then by event id) and cut to the limit. An instance that cannot be
 * asked makes the search fail rather than silently miss events.
 */
#include "ctl.h"
#include "core/alloc.h"
#include "ctl_json.h"
#include "core/isotime.h"

#include <stdlib.h>
#include <string.h>

#define LOG_LIMIT_DEFAULT 100
#define LOG_LIMIT_MAX     10000
#define LOG_FILTER_MAX    320
#define LOG_ID_MAX        64
#define LOG_TYPE_MAX      32

static int event_cmp(const void *a, const void *b)
{
    const PB(Event) *x = *(const PB(Event) *const *)a;
    const PB(Event) *y = *(const PB(Event) *const *)b;
    if (x->at_ms != y->at_ms)
        return x->at_ms < y->at_ms ? -1 : 1;
    return strcmp(x->id ? x->id : "", y->id ? y->id : "");
}

static void print_event(FILE *f, const PB(Event) * ev)
{
    char at[ISOTIME_SIZE];
    fprintf(f, "%s %-10s", isotime_format(ev->at_ms, 1, at, sizeof(at)),
            ev->type ? ev->type : "-");
    if (ev->message_id && *ev->message_id)
        fprintf(f, " msg=%s", ev->message_id);
    if (ev->recipient && *ev->recipient)
        fprintf(f, " rcpt=%s", ev->recipient);
    if (ev->sender && *ev->sender)
        fprintf(f, " from=%s", ev->sender);
    if (ev->tenant && *ev->tenant)
        fprintf(f, " tenant=%s", ev->tenant);
    if (ev->reply)
        fprintf(f, " reply=\"%u %s %s\"", ev->reply->code,
                ev->reply->enhanced ? ev->reply->enhanced : "",
                ev->reply->text ? ev->reply->text : "");
    if (ev->attempt)
        fprintf(f, " attempt=%u", ev->attempt);
    if (ev->remote_host && *ev->remote_host)
        fprintf(f, " remote=%s", ev->remote_host);
    fprintf(f, " svc=%s/%s", ev->service ? ev->service : "-", ev->instance ? ev->instance : "-");
    for (size_t i = 0; i < ev->n_attrs; i++)
        if (ev->attrs[i] && ev->attrs[i]->key && *ev->attrs[i]->key)
            fprintf(f, " %s=%s", ev->attrs[i]->key, ev->attrs[i]->value ? ev->attrs[i]->value : "");
    fputc('\n', f);
}

/* Fill the search from the options; CTL_OK or a usage error already printed. */
static int build_search(ctl_t *ctl, const ctl_args_t *args, PB(EventSearch) * s)
{
    const char *v;
    s->message_id = (char *)(ctl_opt(args, "id") ? ctl_opt(args, "id") : "");
    s->type = (char *)(ctl_opt(args, "type") ? ctl_opt(args, "type") : "");
    s->recipient = (char *)(ctl_opt(args, "recipient") ? ctl_opt(args, "recipient") : "");
    if (strlen(s->message_id) > LOG_ID_MAX || strlen(s->type) > LOG_TYPE_MAX ||
        strlen(s->recipient) > LOG_FILTER_MAX)
        return ctl_usage_error(ctl, args->cmd, "--id, --type or --recipient is too long");
    if ((v = ctl_opt(args, "since")) && isotime_parse(v, &s->since_ms) < 0)
        return ctl_usage_error(
            ctl, args->cmd, "--since '%s' is not an ISO 8601 time (e.g. 2024-05-01T12:00:00Z)", v);
    if ((v = ctl_opt(args, "until")) && isotime_parse(v, &s->until_ms) < 0)
        return ctl_usage_error(
            ctl, args->cmd, "--until '%s' is not an ISO 8601 time (e.g. 2024-05-01T12:00:00Z)", v);
    if (s->since_ms && s->until_ms && s->since_ms > s->until_ms)
        return ctl_usage_error(ctl, args->cmd, "--since is after --until");
    unsigned long limit = LOG_LIMIT_DEFAULT;
    if ((v = ctl_opt(args, "limit")) && ctl_parse_uint(v, 1, LOG_LIMIT_MAX, &limit) < 0)
        return ctl_usage_error(ctl, args->cmd, "--limit needs a number from 1 to %d, not '%s'",
                               LOG_LIMIT_MAX, v);
    s->limit = (uint32_t)limit;
    return CTL_OK;
}

int ctl_cmd_log_search(ctl_t *ctl, const ctl_args_t *args)
{
    PB(EventSearch) search = PB_INIT(EVENT_SEARCH);
    int rc = build_search(ctl, args, &search);
    if (rc != CTL_OK)
        return rc;
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    size_t n = ctl->ep.events.n;
    if (n == 0)
        return ctl_fail(ctl, "no bus.events endpoint in %s", ctl->config_path);

    sx_env_t *reqs = xcalloc(n, sizeof(*reqs));
    ctl_call_t *calls = xcalloc(n, sizeof(*calls));
    for (size_t i = 0; i < n; i++) {
        sx_env_t init = PB_INIT(ENVELOPE);
        reqs[i] = init;
        reqs[i].body_case = PB_BODY(EVENT_SEARCH);
        reqs[i].event_search = &search;
        calls[i].endpoint = ctl->ep.events.v[i];
        calls[i].req = &reqs[i];
    }
    ctl_calls_run(ctl, calls, n, ctl->timeout_ms);

    size_t total = 0;
    char problem[CTL_TEXT_MAX] = "";
    for (size_t i = 0; i < n && problem[0] == '\0'; i++) {
        ctl_call_t *c = &calls[i];
        char why[CTL_TEXT_MAX];
        const char *err = c->state == CTL_CALL_OK ? ctl_reply_error(c->reply, NULL) : NULL;
        if (c->state != CTL_CALL_OK)
            snprintf(problem, sizeof(problem), "events %s",
                     ctl_call_problem(ctl, c, why, sizeof(why)));
        else if (err)
            sx_strlcpy(problem, err, sizeof(problem));
        else if (c->reply->body_case != PB_BODY(EVENT_SEARCH_REPLY) ||
                 c->reply->event_search_reply == NULL)
            snprintf(problem, sizeof(problem), "events sent an unexpected reply (%s)",
                     codec_body_name(c->reply));
        else
            total += c->reply->event_search_reply->n_events;
    }
    if (problem[0]) {
        rc = ctl_fail(ctl, "%s", problem);
    } else {
        PB(Event) **all = xcalloc(total ? total : 1, sizeof(*all));
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            const PB(EventSearchReply) *r = calls[i].reply->event_search_reply;
            for (size_t j = 0; j < r->n_events; j++)
                if (r->events[j])
                    all[k++] = r->events[j];
        }
        qsort(all, k, sizeof(*all), event_cmp);
        if (k > search.limit)
            k = search.limit;
        if (ctl->json) {
            json_t *list = json_array();
            for (size_t i = 0; i < k; i++)
                json_array_append_new(list, ctl_json_event(all[i]));
            json_t *doc = json_object();
            json_object_set_new(doc, "events", list);
            ctl_emit(ctl, doc);
        } else if (k == 0) {
            fprintf(ctl->out, "no events found\n");
        } else {
            for (size_t i = 0; i < k; i++)
                print_event(ctl->out, all[i]);
        }
        free(all);
        rc = CTL_OK;
    }
    ctl_calls_free(calls, n);
    free(calls);
    free(reqs);
    return rc;
}
