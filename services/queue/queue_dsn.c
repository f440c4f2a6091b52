/*
 * queue_dsn: delivery status notifications (RFC 3464) to the envelope
 * sender: a multipart/report with a readable part, the machine-readable
 * message/delivery-status part, and the original message (or its header,
 * when RET=HDRS or the message is large). The report is sent from the null
 * sender, so it is never itself bounced. Which recipients get a report is
 * the caller's choice (queue_dsn_wanted reads their NOTIFY).
 */
#include "queue.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/clock.h"
#include "mail/address.h"
#include "mail/header.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

int queue_dsn_wanted(const PB(QueueRecipient) * orig, const char *action)
{
    const char *notify = orig && orig->notify ? orig->notify : "";
    if (notify[0] == '\0')
        return strcmp(action, "failed") == 0; /* RFC 3461 4.1: the default */
    if (strcasestr(notify, "NEVER"))
        return 0;
    if (strcmp(action, "failed") == 0)
        return strcasestr(notify, "FAILURE") != NULL;
    if (strcmp(action, "delayed") == 0)
        return strcasestr(notify, "DELAY") != NULL;
    return strcasestr(notify, "SUCCESS") != NULL; /* relayed, delivered */
}

void queue_dsn_record_free(PB(QueueRecord) * rec)
{
    queue_record_free(&rec);
}

static void rfc5322_date(uint64_t ms, char *out, size_t size)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, size, "%a, %d %b %Y %H:%M:%S +0000", &tm);
}

/* Header-safe: no CR or LF from a remote reply may start a new header line. */
static void clean(const char *in, char *out, size_t size)
{
    size_t o = 0;
    for (const char *p = in ? in : ""; *p && o + 1 < size; p++)
        out[o++] = (*p == '\r' || *p == '\n' || (unsigned char)*p < 32) ? ' ' : *p;
    out[o] = '\0';
}

static const char *final_status(const PB(QueueRecipientState) * st, const char *action)
{
    if (strcmp(action, "relayed") == 0 || strcmp(action, "delivered") == 0)
        return "2.0.0";
    if (strcmp(action, "delayed") == 0)
        return st->last_reply && st->last_reply->enhanced[0] ? st->last_reply->enhanced
                                                             : "4.0.0";
    if (st->last_reply && st->last_reply->enhanced[0] == '5')
        return st->last_reply->enhanced;
    return "5.4.7"; /* delivery time expired after temporary failures */
}

PB(QueueRecord) * queue_dsn_build(queue_t *q, const PB(QueueRecord) * rec, const dsn_rcpt_t *rcpts,
                                  size_t n, const void *orig_body, size_t orig_len, char **body,
                                  size_t *len)
{
    const PB(QueueEnvelope) *e = rec->envelope;
    if (e->mail_from == NULL || e->mail_from[0] == '\0' || n == 0)
        return NULL;
    const char *host = q->svc->relay.hostname;
    uint64_t now = clock_wall_ms();
    char id[ID_BUF_SIZE], date[64], arrival[64], boundary[96];
    id_new(id);
    rfc5322_date(now, date, sizeof(date));
    rfc5322_date(e->received_at_ms, arrival, sizeof(arrival));
    snprintf(boundary, sizeof(boundary), "%s/%s", id, host);
    int all_ok = 1;
    for (size_t i = 0; i < n; i++)
        if (strcmp(rcpts[i].action, "failed") == 0 || strcmp(rcpts[i].action, "delayed") == 0)
            all_ok = 0;

    buf_t b;
    buf_init(&b, 0);
    buf_printf(&b, "Date: %s\r\nFrom: Mail Delivery System <MAILER-DAEMON@%s>\r\n", date, host);
    buf_printf(&b, "To: <%s>\r\n", e->mail_from);
    buf_printf(&b, "Subject: %s\r\n", all_ok ? "Successful Mail Delivery Report"
                                             : "Undelivered Mail Returned to Sender");
    buf_printf(&b, "Message-ID: <%s@%s>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n",
               id, host);
    buf_printf(&b, "Content-Type: multipart/report; report-type=delivery-status;\r\n"
                   "\tboundary=\"%s\"\r\n\r\nThis is a MIME-encapsulated message.\r\n\r\n",
               boundary);

    /* the part for people */
    buf_printf(&b, "--%s\r\nContent-Description: Notification\r\n"
                   "Content-Type: text/plain; charset=us-ascii\r\n\r\n",
               boundary);
    buf_printf(&b, "This is the mail system at host %s.\r\n\r\n", host);
    buf_printf(&b, all_ok ? "Your message was delivered to the following recipients:\r\n\r\n"
                          : "Your message could not be delivered to one or more recipients.\r\n"
                            "It is attached below.\r\n\r\n");
    for (size_t i = 0; i < n; i++) {
        const PB(QueueRecipientState) *st = rcpts[i].state;
        char why[512];
        clean(st->last_reply ? st->last_reply->text : "", why, sizeof(why));
        if (st->last_reply && st->last_reply->code)
            buf_printf(&b, "<%s>: %s: %u %s %s\r\n", st->address, rcpts[i].action,
                       st->last_reply->code, st->last_reply->enhanced, why);
        else
            buf_printf(&b, "<%s>: %s\r\n", st->address, rcpts[i].action);
    }

    /* the part for programs */
    buf_printf(&b, "\r\n--%s\r\nContent-Description: Delivery report\r\n"
                   "Content-Type: message/delivery-status\r\n\r\n",
               boundary);
    buf_printf(&b, "Reporting-MTA: dns; %s\r\nX-Sendarix-Queue-ID: %s\r\n", host, e->message_id);
    if (e->dsn_envid && e->dsn_envid[0]) {
        char envid[128];
        if (address_xtext_decode(e->dsn_envid, envid, sizeof(envid)) == 0) {
            clean(envid, envid, sizeof(envid));
            buf_printf(&b, "Original-Envelope-Id: %s\r\n", envid);
        }
    }
    buf_printf(&b, "Arrival-Date: %s\r\n", arrival);
    for (size_t i = 0; i < n; i++) {
        const PB(QueueRecipientState) *st = rcpts[i].state;
        buf_printf(&b, "\r\nFinal-Recipient: rfc822; %s\r\n", st->address);
        if (rcpts[i].orig && rcpts[i].orig->orcpt && rcpts[i].orig->orcpt[0]) {
            char orcpt[512];
            clean(rcpts[i].orig->orcpt, orcpt, sizeof(orcpt));
            buf_printf(&b, "Original-Recipient: %s\r\n", orcpt);
        }
        buf_printf(&b, "Action: %s\r\nStatus: %s\r\n", rcpts[i].action,
                   final_status(st, rcpts[i].action));
        if (st->last_remote && st->last_remote[0]) {
            char remote[256];
            clean(st->last_remote, remote, sizeof(remote));
            buf_printf(&b, "Remote-MTA: dns; %s\r\n", remote);
        }
        if (st->last_reply && st->last_reply->code) {
            char why[512];
            clean(st->last_reply->text, why, sizeof(why));
            buf_printf(&b, "Diagnostic-Code: smtp; %u %s %s\r\n", st->last_reply->code,
                       st->last_reply->enhanced, why);
        }
        buf_printf(&b, "Last-Attempt-Date: %s\r\n", date);
    }

    /* the original, whole or its header */
    int hdrs_only = (e->dsn_ret && strcasecmp(e->dsn_ret, "HDRS") == 0) ||
                    orig_len > q->conf.dsn_max_return || orig_body == NULL;
    size_t part_len = orig_len;
    if (hdrs_only && orig_body) {
        long end = header_block_end(orig_body, orig_len);
        part_len = end > 0 ? (size_t)end : (orig_len < 65536 ? orig_len : 65536);
    }
    buf_printf(&b, "\r\n--%s\r\nContent-Description: %s\r\nContent-Type: %s\r\n\r\n", boundary,
               hdrs_only ? "Undelivered Message Headers" : "Undelivered Message",
               hdrs_only ? "text/rfc822-headers" : "message/rfc822");
    if (orig_body && part_len)
        buf_append(&b, orig_body, part_len);
    if (b.len < 2 || memcmp(buf_head(&b) + buf_used(&b) - 2, "\r\n", 2) != 0)
        buf_append_str(&b, "\r\n");
    buf_printf(&b, "\r\n--%s--\r\n", boundary);

    /* the record: from the null sender to the original sender */
    PB(QueueRecipient) r0 = PB_INIT(QUEUE_RECIPIENT);
    r0.address = e->mail_from;
    r0.notify = "NEVER";
    PB(QueueRecipient) *rp = &r0;
    PB(QueueEnvelope) ne = PB_INIT(QUEUE_ENVELOPE);
    ne.message_id = id;
    ne.mail_from = "";
    ne.recipients = &rp;
    ne.n_recipients = 1;
    ne.tenant = e->tenant;
    ne.received_at_ms = now;
    ne.size = buf_used(&b);
    ne.helo = (char *)host;
    PB(QueueRecipientState) s0 = PB_INIT(QUEUE_RECIPIENT_STATE);
    s0.address = e->mail_from;
    s0.state = "queued";
    s0.next_attempt_ms = now;
    PB(QueueRecipientState) *sp = &s0;
    PB(QueueRecord) nr = PB_INIT(QUEUE_RECORD);
    nr.envelope = &ne;
    nr.recipients = &sp;
    nr.n_recipients = 1;
    nr.body_size = buf_used(&b);
    size_t plen = PB_FN(queue_record, get_packed_size)(&nr);
    uint8_t *packed = xmalloc(plen);
    PB_FN(queue_record, pack)(&nr, packed);
    PB(QueueRecord) *out = PB_FN(queue_record, unpack)(NULL, plen, packed);
    free(packed);
    *body = buf_steal(&b, len);
    return out;
}
