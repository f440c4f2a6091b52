/*
 * ctl_queue: `sendarixctl queue show <ID>`. A message lives in exactly one
 * queue instance, so the question goes to all of them at once and the
 * first that knows the message (in instance order) answers. Not found
 * anywhere (each answering 404) is a failure; so is an instance that
 * could not be asked, since the message may be there.
 */
#include "ctl.h"
#include "core/alloc.h"
#include "ctl_json.h"
#include "ctl_time.h"

#include <stdlib.h>
#include <string.h>

#define QUEUE_ID_MAX 64

static const char *or_dash(const char *s)
{
    return s && *s ? s : "-";
}

static void print_text(ctl_t *ctl, const PB(QueueMessageShowReply) * r)
{
    static const PB(QueueEnvelope) empty = PB_INIT(QUEUE_ENVELOPE);
    const PB(QueueEnvelope) *e = r->envelope ? r->envelope : &empty;
    char when[CTL_TIME_ISO_SIZE];
    FILE *f = ctl->out;
    fprintf(f, "message   %s\n", or_dash(e->message_id));
    fprintf(f, "state     %s\n", or_dash(r->state));
    fprintf(f, "from      <%s>\n", e->mail_from ? e->mail_from : "");
    fprintf(f, "tenant    %s (user %s)\n", or_dash(e->tenant), or_dash(e->username));
    fprintf(f, "client    %s helo %s\n", or_dash(e->client_ip), or_dash(e->helo));
    fprintf(f, "tls       %s\n", or_dash(e->tls));
    fprintf(f, "received  %s\n",
            e->received_at_ms ? ctl_time_format(e->received_at_ms, 0, when, sizeof(when)) : "-");
    fprintf(f, "size      %llu (stored body %llu)\n", (unsigned long long)e->size,
            (unsigned long long)r->body_size);
    if ((e->dsn_ret && *e->dsn_ret) || (e->dsn_envid && *e->dsn_envid))
        fprintf(f, "dsn       ret=%s envid=%s\n", or_dash(e->dsn_ret), or_dash(e->dsn_envid));
    fprintf(f, "recipients:\n");
    for (size_t i = 0; i < r->n_recipients; i++) {
        const PB(QueueRecipientState) *rc = r->recipients[i];
        if (rc == NULL)
            continue;
        fprintf(f, "  %u %s %s attempts=%u", rc->index, or_dash(rc->address), or_dash(rc->state),
                rc->attempts);
        if (rc->next_attempt_ms)
            fprintf(f, " next=%s", ctl_time_format(rc->next_attempt_ms, 0, when, sizeof(when)));
        if (rc->last_reply)
            fprintf(f, " last=\"%u %s %s\"", rc->last_reply->code,
                    rc->last_reply->enhanced ? rc->last_reply->enhanced : "",
                    rc->last_reply->text ? rc->last_reply->text : "");
        if (rc->last_remote && *rc->last_remote)
            fprintf(f, " remote=%s", rc->last_remote);
        fputc('\n', f);
    }
}

int ctl_cmd_queue_show(ctl_t *ctl, const ctl_args_t *args)
{
    const char *id = args->arg;
    if (id[0] == '\0' || strlen(id) > QUEUE_ID_MAX)
        return ctl_usage_error(ctl, args->cmd, "'%.80s' is not a message id", id);
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    size_t n = ctl->ep.queue.n;
    if (n == 0)
        return ctl_fail(ctl, "no bus.queue endpoint in %s", ctl->config_path);

    PB(QueueMessageShow) show = PB_INIT(QUEUE_MESSAGE_SHOW);
    show.message_id = (char *)id;
    sx_env_t *reqs = xcalloc(n, sizeof(*reqs));
    ctl_call_t *calls = xcalloc(n, sizeof(*calls));
    for (size_t i = 0; i < n; i++) {
        sx_env_t init = PB_INIT(ENVELOPE);
        reqs[i] = init;
        reqs[i].body_case = PB_BODY(QUEUE_MESSAGE_SHOW);
        reqs[i].queue_message_show = &show;
        calls[i].endpoint = ctl->ep.queue.v[i];
        calls[i].req = &reqs[i];
    }
    ctl_calls_run(ctl, calls, n, ctl->timeout_ms);

    int rc = CTL_FAIL;
    const PB(QueueMessageShowReply) *found = NULL;
    char problem[CTL_TEXT_MAX] = "";
    for (size_t i = 0; i < n && found == NULL; i++) {
        ctl_call_t *c = &calls[i];
        unsigned code = 0;
        const char *err = c->state == CTL_CALL_OK ? ctl_reply_error(c->reply, &code) : NULL;
        char why[CTL_TEXT_MAX];
        if (c->state == CTL_CALL_OK && c->reply->body_case == PB_BODY(QUEUE_MESSAGE_SHOW_REPLY) &&
            c->reply->queue_message_show_reply) {
            found = c->reply->queue_message_show_reply;
        } else if (err && code == 404) {
            continue;
        } else if (problem[0] == '\0') {
            /* the first real problem is the one reported if no instance has the message */
            snprintf(problem, sizeof(problem), "queue instance %zu: %s", i + 1,
                     err                       ? err
                     : c->state == CTL_CALL_OK ? "unexpected reply"
                                               : ctl_call_problem(ctl, c, why, sizeof(why)));
        }
    }
    if (found) {
        if (ctl->json)
            ctl_emit(ctl, ctl_json_queue_show(found));
        else
            print_text(ctl, found);
        rc = CTL_OK;
    } else if (problem[0]) {
        rc = ctl_fail(ctl, "message %s not found, and %s", id, problem);
    } else {
        rc = ctl_fail(ctl, "message %s not found", id);
    }
    ctl_calls_free(calls, n);
    free(calls);
    free(reqs);
    return rc;
}
