/*
 * ctl_queue: `sendarixctl queue show <ID>`. A message lives in exactly one
 * queue instance, so the question goes to all of them at once and the
 * first that knows the message (in instance order) answers. Not found
 * anywhere (each answering 404) is a failure; so is an instance that
 * could not be asked, since the message may be there. Whether an
 * operator holds the message is asked in the same round (a QueueList by
 * id, since the show reply does not carry it). Listing, counting and
 * operator actions: ctl_queue_ops.c.
 */
#include "ctl.h"
#include "core/alloc.h"
#include "ctl_json.h"
#include "core/isotime.h"

#include <stdlib.h>
#include <string.h>

#define QUEUE_ID_MAX 64

static const char *or_dash(const char *s)
{
    return s && *s ? s : "-";
}

static void print_text(ctl_t *ctl, const PB(QueueMessageShowReply) * r, int held)
{
    static const PB(QueueEnvelope) empty = PB_INIT(QUEUE_ENVELOPE);
    const PB(QueueEnvelope) *e = r->envelope ? r->envelope : &empty;
    char when[ISOTIME_SIZE];
    FILE *f = ctl->out;
    fprintf(f, "message   %s\n", or_dash(e->message_id));
    fprintf(f, "state     %s%s\n", or_dash(r->state), held > 0 ? " (held)" : "");
    fprintf(f, "from      <%s>\n", e->mail_from ? e->mail_from : "");
    fprintf(f, "tenant    %s (user %s)\n", or_dash(e->tenant), or_dash(e->username));
    fprintf(f, "client    %s helo %s\n", or_dash(e->client_ip), or_dash(e->helo));
    fprintf(f, "tls       %s\n", or_dash(e->tls));
    fprintf(f, "received  %s\n",
            e->received_at_ms ? isotime_format(e->received_at_ms, 0, when, sizeof(when)) : "-");
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
            fprintf(f, " next=%s", isotime_format(rc->next_attempt_ms, 0, when, sizeof(when)));
        if (rc->last_reply)
            fprintf(f, " last=\"%u %s %s\"", rc->last_reply->code,
                    rc->last_reply->enhanced ? rc->last_reply->enhanced : "",
                    rc->last_reply->text ? rc->last_reply->text : "");
        if (rc->last_remote && *rc->last_remote)
            fprintf(f, " remote=%s", rc->last_remote);
        for (size_t k = 0; k < e->n_recipients; k++) {
            const PB(QueueRecipient) *o = e->recipients[k];
            if (o == NULL || o->index != rc->index)
                continue;
            if (o->notify && *o->notify)
                fprintf(f, " notify=%s", o->notify);
            if (o->orcpt && *o->orcpt)
                fprintf(f, " orcpt=%s", o->orcpt);
            break;
        }
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
    char *ids[1] = {(char *)id};
    PB(QueueSelect) sel = PB_INIT(QUEUE_SELECT);
    sel.message_ids = ids;
    sel.n_message_ids = 1;
    PB(QueueList) list = PB_INIT(QUEUE_LIST);
    list.select = &sel;
    /* calls 0..n-1 show, n..2n-1 list the same id */
    sx_env_t *reqs = xcalloc(2 * n, sizeof(*reqs));
    ctl_call_t *calls = xcalloc(2 * n, sizeof(*calls));
    for (size_t i = 0; i < n; i++) {
        sx_env_t init = PB_INIT(ENVELOPE);
        reqs[i] = init;
        reqs[i].body_case = PB_BODY(QUEUE_MESSAGE_SHOW);
        reqs[i].queue_message_show = &show;
        reqs[n + i] = init;
        reqs[n + i].body_case = PB_BODY(QUEUE_LIST);
        reqs[n + i].queue_list = &list;
        calls[i].endpoint = calls[n + i].endpoint = ctl->ep.queue.v[i];
        calls[i].req = &reqs[i];
        calls[n + i].req = &reqs[n + i];
    }
    ctl_calls_run(ctl, calls, 2 * n, ctl->timeout_ms);

    int rc = CTL_FAIL;
    const PB(QueueMessageShowReply) *found = NULL;
    size_t at = 0;
    char problem[CTL_TEXT_MAX] = "";
    for (size_t i = 0; i < n && found == NULL; i++) {
        ctl_call_t *c = &calls[i];
        unsigned code = 0;
        char why[CTL_TEXT_MAX];
        const char *bad =
            ctl_call_check(ctl, c, PB_BODY(QUEUE_MESSAGE_SHOW_REPLY), &code, why, sizeof(why));
        if (bad == NULL && c->reply->queue_message_show_reply) {
            found = c->reply->queue_message_show_reply;
            at = i;
        } else if (code == 404) {
            continue;
        } else if (problem[0] == '\0') {
            /* the first real problem is the one reported if no instance has the message */
            snprintf(problem, sizeof(problem), "queue instance %zu: %s", i + 1,
                     bad ? bad : "unexpected reply");
        }
    }
    if (found) {
        /* held: the instance's index says so; a finished message is never held */
        int held = -1;
        const ctl_call_t *lc = &calls[n + at];
        char why[CTL_TEXT_MAX];
        if (found->state && strcmp(found->state, "done") == 0) {
            held = 0;
        } else if (ctl_call_check(ctl, lc, PB_BODY(QUEUE_LIST_REPLY), NULL, why, sizeof(why)) ==
                       NULL &&
                   lc->reply->queue_list_reply) {
            const PB(QueueListReply) *lr = lc->reply->queue_list_reply;
            held = 0;
            for (size_t k = 0; k < lr->n_messages; k++)
                if (lr->messages[k] && lr->messages[k]->message_id &&
                    strcmp(lr->messages[k]->message_id, id) == 0 && lr->messages[k]->state &&
                    strcmp(lr->messages[k]->state, "held") == 0)
                    held = 1;
        }
        if (ctl->json)
            ctl_emit(ctl, ctl_json_queue_show(found, held));
        else
            print_text(ctl, found, held);
        rc = CTL_OK;
    } else if (problem[0]) {
        rc = ctl_fail(ctl, "message %s not found, and %s", id, problem);
    } else {
        rc = ctl_fail(ctl, "message %s not found", id);
    }
    ctl_calls_free(calls, 2 * n);
    free(calls);
    free(reqs);
    return rc;
}
