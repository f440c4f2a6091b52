/*
 * ingress_data: the message text, from DATA (dot-stuffed, ended by
 * CRLF.CRLF) or BDAT (counted chunks, RFC 3030), to the queue. Bytes go to
 * the queue instance chosen at MAIL as they arrive, in chunks, so a large
 * message never sits whole in ingress; the end of the message is a commit
 * that queue answers only after its synced write. Only then does the client
 * hear 250. A message with a bare CR or LF is refused whole (no second
 * message can hide behind one), as is one past the size limit.
 */
#include "ingress.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"
#include "mail/header.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Reply codes decided while the text was arriving, given at its end. */
#define DERR_NONE      0
#define DERR_TOO_BIG   1
#define DERR_BARE_EOL  2
#define DERR_LONG_LINE 3
#define DERR_QUEUE     4
#define DERR_STORAGE   5
#define DERR_HEADER    6
#define DERR_UNCONFIRMED 7 /* the commit went out but no answer came back */

/* a commit no queue instance took is tried again this often (the bus
 * reconnects after 100 ms, then backs off to 2 s) */
#define QUEUE_RETRY_MS 100

/* a text smaller than this grows its buffer in a few steps: nothing reserved */
#define BODY_RESERVE_MIN 16384
/* room for the Received: header that goes first */
#define RECEIVED_MAX 1024

static void send_commit(session_t *s);

bus_client_t *ingress_pick_queue(ingress_t *ing, bus_client_t *not_this)
{
    for (size_t k = 0; k < ing->nqueues; k++) {
        bus_client_t *c = ing->queues[(ing->next_queue + k) % ing->nqueues];
        if (c != not_this && bus_client_up(c)) {
            ing->next_queue = (ing->next_queue + k + 1) % ing->nqueues;
            return c;
        }
    }
    for (size_t k = 0; k < ing->nqueues; k++) {
        bus_client_t *c = ing->queues[(ing->next_queue + k) % ing->nqueues];
        if (c != not_this) {
            ing->next_queue = (ing->next_queue + k + 1) % ing->nqueues;
            return c;
        }
    }
    return NULL;
}

static void free_body(void *data, void *hint)
{
    (void)hint;
    free(data);
}

/* Move the buffered body into a frame, without copying. */
static void body_to_frame(session_t *s, zmq_msg_t *frame)
{
    size_t len;
    char *p = buf_steal(&s->body, &len);
    zmq_msg_init_data(frame, p, len, free_body, NULL);
}

static void received_header(session_t *s)
{
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    const char *proto = s->esmtp ? (conn_is_tls(s->conn) ? (s->authed ? "ESMTPSA" : "ESMTPS")
                                                         : (s->authed ? "ESMTPA" : "ESMTP"))
                                 : "SMTP";
    buf_printf(&s->body, "Received: from %s ([%s])\r\n", s->helo[0] ? s->helo : "unknown",
               s->ip);
    if (conn_is_tls(s->conn))
        buf_printf(&s->body, "\t(using %s with cipher %s)\r\n", conn_tls_version(s->conn),
                   conn_tls_cipher(s->conn));
    buf_printf(&s->body, "\tby %s (Sendarix) with %s id %s", s->ing->svc->relay.hostname, proto,
               s->msgid);
    if (s->nrcpts == 1)
        buf_printf(&s->body, "\r\n\tfor <%s>", s->rcpts[0].address);
    buf_printf(&s->body, "; %s\r\n", date);
}

/*
 * Room for the whole text before it arrives, when its size can be guessed
 * (the SIZE= of MAIL, else the session's last message, which body_total
 * still holds until text_begin sets it): a buffer grown by doubling copies a
 * large message about once more on its way in. At most a chunk, which is as
 * much as the buffer ever holds; untouched room costs no memory until
 * written.
 */
static void body_reserve(session_t *s)
{
    uint64_t want = s->declared_size ? s->declared_size : s->body_total;
    if (want > s->ing->conf.chunk_size)
        want = s->ing->conf.chunk_size;
    if (want > BODY_RESERVE_MIN)
        buf_reserve(&s->body, (size_t)want + RECEIVED_MAX);
}

static void text_begin(session_t *s)
{
    buf_reset(&s->body);
    body_reserve(s);
    buf_reset(&s->header);
    buf_reset(&s->scan_copy);
    s->header_done = 0;
    s->scan_too_big = 0;
    s->chunks_sent = 0;
    s->commit_pending = 0;
    s->data_error = DERR_NONE;
    received_header(s);
    s->body_total = buf_used(&s->body);
    if (s->ing->scanner)
        buf_append(&s->scan_copy, buf_head(&s->body), buf_used(&s->body));
}

/*
 * Message bytes (after dot-unstuffing) were added: keep the client's header
 * block while it lasts, to check its size and its From:, and a copy of the
 * whole message for the content scanner while it fits.
 */
static void text_appended(session_t *s, const char *p, size_t n)
{
    if (n == 0)
        return;
    if (!s->header_done) {
        size_t had = buf_used(&s->header);
        size_t from = had > 3 ? had - 3 : 0;
        /* copy up to the first blank line in what came (the block ends there
         * or sooner), and no further than a block can go: a large message
         * arrives in one piece, and its text is not the header's */
        const char *blank = memmem(p, n, "\r\n\r\n", 4);
        size_t take = blank ? (size_t)(blank - p) + 4 : n;
        size_t most = s->ing->conf.max_header_size + 4;
        if (take > most - had)
            take = most - had;
        buf_append(&s->header, p, take);
        long end = header_block_end(buf_head(&s->header) + from, buf_used(&s->header) - from);
        if (end >= 0 && from + (size_t)end <= s->ing->conf.max_header_size + 2) {
            s->header_done = 1;
            s->header.len = s->header.off + from + (size_t)end;
        } else if (end >= 0 || buf_used(&s->header) > s->ing->conf.max_header_size) {
            s->header_done = 1;
            buf_free(&s->header);
            if (s->data_error == DERR_NONE)
                s->data_error = DERR_HEADER;
        }
    }
    if (s->ing->scanner && !s->scan_too_big) {
        if (buf_used(&s->scan_copy) + n > s->ing->conf.scan.max_size) {
            s->scan_too_big = 1;
            buf_free(&s->scan_copy);
        } else {
            buf_append(&s->scan_copy, p, n);
        }
    }
}

void data_begin(session_t *s)
{
    text_begin(s);
    data_reader_init(&s->reader, s->ing->conf.max_message_size, 0);
    session_enter_state(s, SS_DATA);
    session_arm(s);
}

/* A held commit's bytes let go. */
static void commit_release(session_t *s)
{
    loop_timer_stop(s->ing->svc->loop, &s->queue_retry);
    if (s->commit_held) {
        zmq_msg_close(&s->commit_body);
        s->commit_held = 0;
    }
}

void data_abandon(session_t *s)
{
    commit_release(s);
    if (s->req_id && s->req_client) {
        bus_client_cancel(s->req_client, s->req_id);
        s->req_id = 0;
        s->req_client = NULL;
    }
    if (s->chunks_sent > 0 && s->queue) {
        PB(QueueMessageAbort) ab = PB_INIT(QUEUE_MESSAGE_ABORT);
        ab.message_id = s->msgid;
        sx_env_t env = PB_INIT(ENVELOPE);
        env.body_case = PB_BODY(QUEUE_MESSAGE_ABORT);
        env.queue_message_abort = &ab;
        bus_client_send(s->queue, 0, &env, NULL);
    }
    if (s->scan_job) {
        scan_cancel(s->scan_job);
        s->scan_job = NULL;
    }
    free(s->prepend);
    s->prepend = NULL;
    s->chunks_sent = 0;
    s->commit_pending = 0;
    s->bdat_left = 0;
    s->bdat_open = 0;
    buf_free(&s->body);
    buf_free(&s->header);
    buf_free(&s->scan_copy);
}

/* ---- chunks ---- */

static void on_chunk_reply(bus_msg_t *reply, bus_status_t status, void *arg)
{
    session_t *s = arg;
    s->req_id = 0;
    s->req_client = NULL;
    if (status != BUS_OK || reply->env->body_case != PB_BODY(QUEUE_CHUNK_PUT_REPLY)) {
        int storage = status == BUS_OK && reply->env->body_case == PB_BODY(ERROR) &&
                      reply->env->error->status && reply->env->error->status->code == 452;
        log_warn("sid=%s msg=%s event=chunk_failed status=%d", s->sid, s->msgid, (int)status);
        if (s->data_error == DERR_NONE)
            s->data_error = storage ? DERR_STORAGE : DERR_QUEUE;
        /* the queue has dropped the upload: nothing to abort there */
        s->chunks_sent = 0;
        buf_free(&s->body);
    }
    if (s->commit_pending) {
        s->commit_pending = 0;
        send_commit(s);
        return;
    }
    if (s->waiting)
        session_resume(s);
}

static void maybe_send_chunk(session_t *s)
{
    uint64_t chunk = s->ing->conf.chunk_size;
    if (s->data_error != DERR_NONE) {
        buf_free(&s->body); /* refused already: keep nothing */
        return;
    }
    if (buf_used(&s->body) < chunk)
        return;
    if (s->req_id) {
        /* one chunk in flight at a time; past two chunks held, stop reading */
        if (buf_used(&s->body) >= 2 * chunk)
            s->waiting = 1;
        return;
    }
    PB(QueueChunkPut) put = PB_INIT(QUEUE_CHUNK_PUT);
    put.message_id = s->msgid;
    put.seq = s->chunks_sent;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(QUEUE_CHUNK_PUT);
    env.queue_chunk_put = &put;
    zmq_msg_t frame;
    body_to_frame(s, &frame);
    uint64_t id;
    if (bus_client_request(s->queue, &env, &frame, s->ing->conf.queue_timeout, on_chunk_reply, s,
                           &id) < 0) {
        log_warn("sid=%s msg=%s event=queue_unavailable step=chunk", s->sid, s->msgid);
        s->data_error = DERR_QUEUE;
        s->chunks_sent = 0;
        return;
    }
    s->req_id = id;
    s->req_client = s->queue;
    s->chunks_sent++;
}

/* ---- the end of the message ---- */

static void finish_transaction(session_t *s)
{
    s->chunks_sent = 0; /* committed or already dropped by queue: no abort */
    session_reset_transaction(s);
    session_enter_state(s, SS_READY);
}

static void reply_data_error(session_t *s, int err)
{
    switch (err) {
    case DERR_TOO_BIG:
        session_reply(s, "552 5.3.4 Message size exceeds fixed maximum message size");
        break;
    case DERR_BARE_EOL:
        session_reply(s, "550 5.6.0 Message refused: bare CR or LF found; lines must end "
                         "with CRLF");
        break;
    case DERR_LONG_LINE:
        session_reply(s, "500 5.5.2 Message refused: line longer than %d octets",
                      DATA_LINE_MAX);
        break;
    case DERR_STORAGE:
        session_reply(s, "452 4.3.1 Insufficient system storage, try again later");
        break;
    case DERR_UNCONFIRMED:
        /* the queue may have stored it: do not claim it was refused */
        session_reply(s, "451 4.3.0 The queue did not confirm the message in time; "
                         "try again later");
        break;
    case DERR_HEADER:
        session_reply(s, "552 5.3.4 Message header exceeds %llu octets",
                      (unsigned long long)s->ing->conf.max_header_size);
        break;
    default:
        session_reply(s, "451 4.3.0 Queue unavailable, message not accepted, try again later");
        break;
    }
    log_info("sid=%s msg=%s event=rejected reason=%d", s->sid, s->msgid, err);
    s->ing->rejected++;
}

static void on_commit_reply(bus_msg_t *reply, bus_status_t status, void *arg)
{
    session_t *s = arg;
    s->req_id = 0;
    s->req_client = NULL;
    if (status == BUS_OK && reply->env->body_case == PB_BODY(QUEUE_MESSAGE_COMMIT_REPLY) &&
        reply->env->queue_message_commit_reply->status) {
        PB(Status) *st = reply->env->queue_message_commit_reply->status;
        if (st->code == 250) {
            s->ing->accepted++;
            s->junk = 0;
            session_reply(s, "250 2.0.0 OK: queued as %s", s->msgid);
            log_info("sid=%s msg=%s event=accepted from=<%s> rcpts=%zu size=%llu user=%s "
                     "tenant=%s",
                     s->sid, s->msgid, s->mail_from, s->nrcpts,
                     (unsigned long long)s->body_total, s->username[0] ? s->username : "-",
                     s->tenant[0] ? s->tenant : "-");
            char size[32], rcpts[32];
            snprintf(size, sizeof(size), "%llu", (unsigned long long)s->body_total);
            snprintf(rcpts, sizeof(rcpts), "%zu", s->nrcpts);
            PB(Attr) a[4] = {PB_INIT(ATTR), PB_INIT(ATTR), PB_INIT(ATTR), PB_INIT(ATTR)};
            a[0].key = "client_ip", a[0].value = s->ip;
            a[1].key = "username", a[1].value = s->username;
            a[2].key = "size", a[2].value = size;
            a[3].key = "recipients", a[3].value = rcpts;
            PB(Attr) *ap[4] = {&a[0], &a[1], &a[2], &a[3]};
            PB(Event) ev = PB_INIT(EVENT);
            ev.type = "accepted";
            ev.message_id = s->msgid;
            ev.sender = s->mail_from;
            ev.tenant = s->tenant;
            ev.session_id = s->sid;
            ev.attrs = ap;
            ev.n_attrs = 4;
            service_event(s->ing->svc, &ev);
        } else {
            s->ing->rejected++;
            log_warn("sid=%s msg=%s event=commit_refused code=%u", s->sid, s->msgid, st->code);
            session_reply(s, "%u %s %s", st->code, st->enhanced[0] ? st->enhanced : "4.3.0",
                          st->text[0] ? st->text : "message not accepted");
        }
    } else {
        const char *why = status == BUS_TIMEOUT ? "timeout" : "error";
        log_warn("sid=%s msg=%s event=commit_failed reason=%s", s->sid, s->msgid, why);
        reply_data_error(s, status == BUS_TIMEOUT ? DERR_UNCONFIRMED : DERR_QUEUE);
    }
    finish_transaction(s);
    session_resume(s);
}

/* A stream name: trimmed, printable ASCII without spaces, lowercased. */
static void stream_clean(char *v)
{
    char *p = v;
    while (*p == ' ' || *p == '\t')
        p++;
    size_t o = 0;
    for (; *p && *p != ' ' && *p != '\t'; p++)
        if ((unsigned char)*p > 32 && (unsigned char)*p < 127)
            v[o++] = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    v[o] = '\0';
}

static void send_commit(session_t *s)
{
    if (s->data_error != DERR_NONE) {
        reply_data_error(s, s->data_error);
        data_abandon(s);
        finish_transaction(s);
        session_resume(s);
        return;
    }
    PB(QueueEnvelope) e = PB_INIT(QUEUE_ENVELOPE);
    e.message_id = s->msgid;
    e.mail_from = s->mail_from;
    e.tenant = s->tenant;
    e.username = s->username;
    e.client_ip = s->ip;
    e.helo = s->helo;
    char tls[160] = "";
    if (conn_is_tls(s->conn))
        snprintf(tls, sizeof(tls), "%s %s", conn_tls_version(s->conn), conn_tls_cipher(s->conn));
    e.tls = tls;
    e.received_at_ms = clock_wall_ms();
    e.size = s->body_total;
    e.dsn_ret = s->dsn_ret;
    e.dsn_envid = s->dsn_envid;
    e.smtputf8 = s->smtputf8;
    e.eightbit = s->eightbit || s->reader.eightbit;
    e.session_id = s->sid;
    /* routing rules may match on the stream a message declares */
    char stream[128] = "";
    if (s->header_done) {
        header_field(buf_head(&s->header), buf_used(&s->header), "X-Sendarix-Stream", stream,
                     sizeof(stream));
        stream_clean(stream);
    }
    e.stream = stream;
    PB(QueueRecipient) *r = xcalloc(s->nrcpts, sizeof(*r));
    PB(QueueRecipient) **rp = xcalloc(s->nrcpts, sizeof(*rp));
    for (size_t i = 0; i < s->nrcpts; i++) {
        PB(QueueRecipient) init = PB_INIT(QUEUE_RECIPIENT);
        r[i] = init;
        r[i].index = (uint32_t)i;
        r[i].address = s->rcpts[i].address;
        r[i].notify = s->rcpts[i].notify;
        r[i].orcpt = s->rcpts[i].orcpt;
        rp[i] = &r[i];
    }
    e.recipients = rp;
    e.n_recipients = s->nrcpts;
    PB(QueueMessageCommit) commit = PB_INIT(QUEUE_MESSAGE_COMMIT);
    commit.envelope = &e;
    commit.chunks = s->chunks_sent;
    if (s->prepend) {
        commit.prepend.data = (uint8_t *)s->prepend;
        commit.prepend.len = strlen(s->prepend);
    }
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(QUEUE_MESSAGE_COMMIT);
    env.queue_message_commit = &commit;

    /* the body is handed over, not copied, and held until an instance takes
     * it: a whole message still in hand can go to another instance if this
     * one is down, or wait for one to come back, each attempt sending a
     * reference to the same bytes */
    int first_try = !s->commit_held;
    if (first_try) {
        if (buf_used(&s->body) > 0)
            body_to_frame(s, &s->commit_body);
        else
            zmq_msg_init(&s->commit_body);
        s->commit_held = 1;
        s->queue_wait_until = clock_mono_ms() + s->ing->conf.queue_wait;
    }
    int rc = -1;
    uint64_t id = 0;
    for (size_t attempt = 0; attempt < s->ing->nqueues && rc < 0; attempt++) {
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        zmq_msg_copy(&frame, &s->commit_body);
        rc = bus_client_request(s->queue, &env, &frame, s->ing->conf.queue_timeout,
                                on_commit_reply, s, &id);
        if (rc < 0 && s->chunks_sent == 0) {
            bus_client_t *other = ingress_pick_queue(s->ing, s->queue);
            if (other == NULL)
                break;
            log_info("sid=%s msg=%s event=queue_failover from=%s to=%s", s->sid, s->msgid,
                     bus_client_endpoint(s->queue), bus_client_endpoint(other));
            s->queue = other;
        } else if (rc < 0) {
            break;
        }
    }
    free(r);
    free(rp);
    if (rc < 0 && s->chunks_sent == 0 && clock_mono_ms() < s->queue_wait_until) {
        /* no instance is connected, as while one restarts: the client waits
         * a little for it rather than get a 451 */
        if (first_try)
            log_info("sid=%s msg=%s event=queue_wait ms=%llu", s->sid, s->msgid,
                     (unsigned long long)s->ing->conf.queue_wait);
        loop_timer_start(s->ing->svc->loop, &s->queue_retry, QUEUE_RETRY_MS);
        return;
    }
    commit_release(s);
    buf_free(&s->body);
    if (rc < 0) {
        log_warn("sid=%s msg=%s event=queue_unavailable step=commit", s->sid, s->msgid);
        reply_data_error(s, DERR_QUEUE);
        s->chunks_sent = 0;
        finish_transaction(s);
        session_resume(s);
        return;
    }
    s->req_id = id;
    s->req_client = s->queue;
    s->waiting = 1;
}

void data_commit_retry(loop_t *loop, void *arg)
{
    (void)loop;
    session_t *s = arg;
    bus_client_t *q = ingress_pick_queue(s->ing, NULL);
    if (q)
        s->queue = q;
    send_commit(s);
}

/* Commit now, or once the chunk in flight is confirmed. */
static void commit_when_ready(session_t *s)
{
    s->waiting = 1;
    if (s->req_id) {
        s->commit_pending = 1;
        return;
    }
    send_commit(s);
}

typedef struct from_check {
    const session_t *s;
    char refused[300];
    int count;
} from_check_t;

static void from_address(const char *addr, void *arg)
{
    from_check_t *fc = arg;
    fc->count++;
    const char *at = strrchr(addr, '@');
    if (fc->refused[0] == '\0' && (at == NULL || !session_domain_allowed(fc->s, at + 1)))
        sx_strlcpy(fc->refused, addr, sizeof(fc->refused));
}

/* Sender policy on the From: header; 0 when it passes (or there is none to check). */
static int from_policy(session_t *s)
{
    if (s->role == ROLE_LEGACY || !s->header_done)
        return 0;
    char value[HEADER_VALUE_MAX];
    int n = header_field(buf_head(&s->header), buf_used(&s->header), "From", value,
                         sizeof(value));
    if (n == 0)
        return 0;
    if (n > 1) {
        session_reply(s, "550 5.6.0 Message refused: more than one From: header");
        return -1;
    }
    from_check_t fc = {.s = s};
    if (header_addresses(value, from_address, &fc) <= 0) {
        session_reply(s, "553 5.7.1 Message refused: the From: header does not hold a "
                         "readable address");
        return -1;
    }
    if (fc.refused[0]) {
        log_info("sid=%s msg=%s event=from_refused user=%s from=<%s>", s->sid, s->msgid,
                 s->username, fc.refused);
        session_reply(s, "553 5.7.1 Message refused: From: address <%s> is not in a sending "
                         "domain of this login",
                      fc.refused);
        return -1;
    }
    return 0;
}

static void on_scan(const scan_verdict_t *v, void *arg)
{
    session_t *s = arg;
    s->scan_job = NULL;
    buf_free(&s->scan_copy);
    if (v->action == SCAN_REJECT || v->action == SCAN_TEMPFAIL) {
        if (v->action == SCAN_REJECT)
            s->ing->scanned_spam++;
        log_info("sid=%s msg=%s event=scan_refused action=%s score=%.2f threshold=%.2f", s->sid,
                 s->msgid, v->action == SCAN_REJECT ? "reject" : "tempfail", v->score,
                 v->threshold);
        if (v->action == SCAN_REJECT)
            session_reply(s, "554 5.7.1 %s", v->reason);
        else
            session_reply(s, "451 4.7.1 %s", v->reason);
        s->ing->rejected++;
        data_abandon(s);
        finish_transaction(s);
        session_resume(s);
        return;
    }
    if (v->headers && v->headers[0])
        s->prepend = xstrdup(v->headers);
    commit_when_ready(s);
}

/* The whole text has arrived: refuse it, have it scanned, or commit it. */
static void text_end(session_t *s)
{
    if (s->data_error != DERR_NONE && s->data_error != DERR_QUEUE &&
        s->data_error != DERR_STORAGE) {
        reply_data_error(s, s->data_error);
        data_abandon(s);
        finish_transaction(s);
        return;
    }
    if (s->data_error == DERR_NONE && from_policy(s) < 0) {
        s->ing->rejected++;
        data_abandon(s);
        finish_transaction(s);
        return;
    }
    if (s->ing->scanner && s->data_error == DERR_NONE) {
        const char **rcpts = xcalloc(s->nrcpts ? s->nrcpts : 1, sizeof(char *));
        for (size_t i = 0; i < s->nrcpts; i++)
            rcpts[i] = s->rcpts[i].address;
        scan_meta_t meta = {.message_id = s->msgid, .tenant = s->tenant, .client_ip = s->ip,
                            .helo = s->helo, .mail_from = s->mail_from, .rcpts = rcpts,
                            .nrcpts = s->nrcpts, .username = s->username};
        uint64_t len = s->scan_too_big ? s->ing->conf.scan.max_size + 1 : buf_used(&s->scan_copy);
        s->scan_job = scan_start(s->ing->scanner, s->scan_too_big ? NULL : buf_head(&s->scan_copy),
                                 (size_t)len, &meta, on_scan, s);
        free(rcpts);
        if (s->scan_job) {
            s->waiting = 1;
            return;
        }
    }
    commit_when_ready(s);
}

/* ---- DATA ---- */

static int data_feed_text(session_t *s)
{
    buf_t *in = conn_in(s->conn);
    size_t n = buf_used(in);
    if (n == 0)
        return 0;
    size_t before = buf_used(&s->body);
    long used = data_reader_feed(&s->reader, buf_head(in), n, &s->body);
    if (used >= 0 && buf_used(&s->body) > before)
        text_appended(s, buf_head(&s->body) + before, buf_used(&s->body) - before);
    if (used < 0) {
        s->data_error = DERR_STORAGE;
        used = (long)n;
        buf_reset(&s->body);
    }
    buf_consume(in, (size_t)used);
    if (s->data_error == DERR_NONE) {
        if (s->reader.too_big)
            s->data_error = DERR_TOO_BIG;
        else if (s->reader.bare_cr_lf)
            s->data_error = DERR_BARE_EOL;
        else if (s->reader.line_too_long)
            s->data_error = DERR_LONG_LINE;
    }
    maybe_send_chunk(s);
    if (s->reader.done) {
        s->body_total = s->reader.size;
        text_end(s);
    }
    return used > 0;
}

/* ---- BDAT ---- */

/* BDAT text obeys DATA's rules: CRLF line ends only, lines of at most
 * DATA_LINE_MAX octets, so a message is refused or taken the same either way. */
static void bdat_check_eol(session_t *s, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if ((s->bdat_prev_cr && c != '\n') || (c == '\n' && !s->bdat_prev_cr))
            s->bdat_bad_eol = 1;
        s->bdat_prev_cr = c == '\r';
        if (c == '\n') {
            s->bdat_line = 0;
        } else if (c != '\r' && ++s->bdat_line > DATA_LINE_MAX && s->data_error == DERR_NONE) {
            s->data_error = DERR_LONG_LINE;
        }
    }
}

/* The announced bytes of one BDAT have all been read. */
static void bdat_chunk_done(session_t *s)
{
    if (s->bdat_failed) {
        int code = s->bdat_failed;
        s->bdat_failed = 0;
        session_enter_state(s, s->bdat_return_state);
        session_reply(s, "%s", code == 554 ? "554 5.5.1 Error: no valid recipients"
                                           : "503 5.5.1 Error: need MAIL and RCPT before BDAT");
        return;
    }
    session_enter_state(s, SS_RCPT);
    if (s->data_error == DERR_NONE && s->bdat_bad_eol)
        s->data_error = DERR_BARE_EOL;
    if (!s->bdat_last) {
        maybe_send_chunk(s);
        session_reply(s, "250 2.0.0 %llu octets received", (unsigned long long)s->reader.size);
        return;
    }
    if (s->bdat_prev_cr && s->data_error == DERR_NONE)
        s->data_error = DERR_BARE_EOL;
    s->body_total = s->reader.size;
    text_end(s);
}

static int bdat_feed(session_t *s)
{
    buf_t *in = conn_in(s->conn);
    if (s->bdat_left == 0) {
        bdat_chunk_done(s);
        return 1;
    }
    size_t n = buf_used(in);
    if (n == 0)
        return 0;
    if (n > s->bdat_left)
        n = (size_t)s->bdat_left;
    const char *p = buf_head(in);
    if (!s->bdat_failed) {
        bdat_check_eol(s, p, n);
        if (s->reader.size + n > s->ing->conf.max_message_size && s->data_error == DERR_NONE)
            s->data_error = DERR_TOO_BIG;
        if (s->data_error == DERR_NONE && buf_append(&s->body, p, n) < 0)
            s->data_error = DERR_STORAGE;
        if (s->data_error == DERR_NONE)
            text_appended(s, p, n);
        s->reader.size += n;
        maybe_send_chunk(s);
    }
    buf_consume(in, n); /* chunk bytes are consumed whatever the verdict */
    s->bdat_left -= n;
    if (s->bdat_left == 0)
        bdat_chunk_done(s);
    return 1;
}

void bdat_command(session_t *s, char *args)
{
    char *end;
    while (*args == ' ')
        args++;
    errno = 0;
    unsigned long long size = isdigit((unsigned char)*args) ? strtoull(args, &end, 10) : 0;
    int ok = isdigit((unsigned char)*args) && errno == 0;
    int last = 0;
    if (ok) {
        while (*end == ' ')
            end++;
        if (strncasecmp(end, "LAST", 4) == 0 && (end[4] == '\0' || end[4] == ' ')) {
            last = 1;
            end += 4;
            while (*end == ' ')
                end++;
        }
        ok = *end == '\0';
    }
    if (!ok) {
        /* without a size the chunk cannot be skipped safely: end the session */
        session_reply(s, "501 5.5.4 Syntax: BDAT size [LAST]; closing connection");
        session_enter_state(s, SS_CLOSING);
        conn_close_after_flush(s->conn);
        return;
    }
    s->bdat_left = size;
    s->bdat_last = last;
    s->bdat_failed = 0;
    s->bdat_return_state = s->state;
    if ((s->role == ROLE_SUBMISSION && !conn_is_tls(s->conn)) || s->state == SS_CONNECTED ||
        s->state == SS_READY) {
        s->bdat_failed = 503;
    } else if (s->state == SS_MAIL) {
        s->bdat_failed = 554;
    } else if (!s->bdat_open) {
        /* the first chunk of this message */
        text_begin(s);
        data_reader_init(&s->reader, s->ing->conf.max_message_size, 0);
        s->bdat_open = 1;
        s->bdat_prev_cr = 0;
        s->bdat_bad_eol = 0;
        s->bdat_line = 0;
    }
    session_enter_state(s, SS_BDAT);
    session_arm(s);
}

int data_feed(session_t *s)
{
    if (s->state == SS_BDAT)
        return bdat_feed(s);
    return data_feed_text(s);
}
