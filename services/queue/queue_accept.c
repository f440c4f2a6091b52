/*
 * queue_accept: taking messages in. Chunks of a message whose DATA is still
 * arriving are held in memory (as the ZeroMQ frames they came in, no copy);
 * at commit the record and the body are written with every other commit of
 * the same loop turn in one LMDB transaction, synced to disk, and only then
 * is each ingress answered. This is the group commit: one fsync for a burst
 * of messages, and no message confirmed before its fsync returned.
 * Also answers QueueMessageShow. Scheduling is queue_sched.c's.
 */
#include "queue.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"

#include <stdlib.h>
#include <string.h>

#define QUEUE_MAX_RECIPIENTS 10000
#define QUEUE_MAX_CHUNKS     4096
#define UPLOAD_SWEEP_MS      30000

struct queue_upload {
    char id[ID_BUF_SIZE];
    zmq_msg_t *chunks;
    uint32_t nchunks;
    uint64_t bytes;
    uint64_t last_ms;
    struct queue_upload *next;
};

typedef struct queue_commit {
    bus_peer_t peer;
    uint64_t request_id;
    char id[ID_BUF_SIZE];
    uint8_t *record;        /* packed QueueRecord */
    size_t record_len;
    zmq_msg_t *parts;       /* body pieces in order */
    uint32_t nparts;
    uint64_t body_size;
    char *mail_from;
    char *tenant;
    size_t nrcpt;
    int refused;            /* no room: answered 452 without a write */
    struct queue_commit *next;
} queue_commit_t;

/* ---- uploads ---- */

static queue_upload_t *upload_find(queue_t *q, const char *id, queue_upload_t ***link_out)
{
    queue_upload_t **link = &q->uploads;
    for (queue_upload_t *u = q->uploads; u; link = &u->next, u = u->next) {
        if (strcmp(u->id, id) == 0) {
            if (link_out)
                *link_out = link;
            return u;
        }
    }
    return NULL;
}

static void upload_free(queue_t *q, queue_upload_t *u)
{
    for (uint32_t i = 0; i < u->nchunks; i++)
        zmq_msg_close(&u->chunks[i]);
    q->upload_bytes -= u->bytes;
    free(u->chunks);
    free(u);
}

static void upload_drop(queue_t *q, const char *id)
{
    queue_upload_t **link;
    queue_upload_t *u = upload_find(q, id, &link);
    if (u) {
        *link = u->next;
        upload_free(q, u);
    }
}

static void upload_sweep(loop_t *loop, void *arg)
{
    queue_t *q = arg;
    uint64_t now = clock_wall_ms();
    queue_upload_t **link = &q->uploads;
    while (*link) {
        queue_upload_t *u = *link;
        if (now - u->last_ms > q->conf.upload_idle_timeout) {
            log_info("event=upload_expired msg=%s chunks=%u bytes=%llu", u->id, u->nchunks,
                     (unsigned long long)u->bytes);
            *link = u->next;
            upload_free(q, u);
            continue;
        }
        link = &u->next;
    }
    loop_timer_start(loop, &q->upload_sweep, UPLOAD_SWEEP_MS);
}

static void reply_status(queue_t *q, const bus_peer_t *peer, uint64_t request_id, const char *id,
                         unsigned code, const char *enh, const char *text)
{
    PB(Status) st = PB_INIT(STATUS);
    st.code = code;
    st.enhanced = (char *)enh;
    st.text = (char *)text;
    PB(QueueMessageCommitReply) r = PB_INIT(QUEUE_MESSAGE_COMMIT_REPLY);
    r.message_id = (char *)id;
    r.status = &st;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(QUEUE_MESSAGE_COMMIT_REPLY);
    env.queue_message_commit_reply = &r;
    bus_server_send(q->api, peer, request_id, &env, NULL);
}

void queue_on_chunk(queue_t *q, bus_msg_t *msg)
{
    PB(QueueChunkPut) *req = msg->env->queue_chunk_put;
    uint64_t rid = msg->env->request_id;
    if (!id_valid(req->message_id)) {
        bus_server_error(q->api, &msg->peer, rid, 400, "5.5.4", "invalid message id");
        return;
    }
    size_t n = zmq_msg_size(&msg->payload);
    queue_upload_t *u = upload_find(q, req->message_id, NULL);
    if (u == NULL) {
        if (req->seq != 0) {
            bus_server_error(q->api, &msg->peer, rid, 400, "4.3.0",
                             "chunk %u of unknown upload %s", req->seq, req->message_id);
            return;
        }
        u = xcalloc(1, sizeof(*u));
        sx_strlcpy(u->id, req->message_id, sizeof(u->id));
        u->next = q->uploads;
        q->uploads = u;
    }
    if (req->seq != u->nchunks || u->nchunks >= QUEUE_MAX_CHUNKS) {
        bus_server_error(q->api, &msg->peer, rid, 400, "4.3.0",
                         "chunk %u out of order for %s (expected %u)", req->seq, u->id,
                         u->nchunks);
        upload_drop(q, req->message_id);
        return;
    }
    if (q->upload_bytes + n > q->conf.upload_memory_max) {
        log_warn("event=upload_refused msg=%s reason=memory held=%llu", u->id,
                 (unsigned long long)q->upload_bytes);
        bus_server_error(q->api, &msg->peer, rid, 452, "4.3.1",
                         "insufficient system storage for message data");
        upload_drop(q, req->message_id);
        return;
    }
    u->chunks = xrealloc(u->chunks, (u->nchunks + 1) * sizeof(*u->chunks));
    bus_msg_take_payload(msg, &u->chunks[u->nchunks]);
    u->nchunks++;
    u->bytes += n;
    q->upload_bytes += n;
    u->last_ms = clock_wall_ms();

    PB(QueueChunkPutReply) r = PB_INIT(QUEUE_CHUNK_PUT_REPLY);
    r.message_id = u->id;
    r.seq = req->seq;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(QUEUE_CHUNK_PUT_REPLY);
    env.queue_chunk_put_reply = &r;
    bus_server_send(q->api, &msg->peer, rid, &env, NULL);
}

void queue_on_abort(queue_t *q, bus_msg_t *msg)
{
    PB(QueueMessageAbort) *req = msg->env->queue_message_abort;
    if (req->message_id && upload_find(q, req->message_id, NULL)) {
        log_info("event=upload_aborted msg=%s", req->message_id);
        upload_drop(q, req->message_id);
    }
}

/* ---- commits ---- */

static void commit_free(queue_commit_t *c)
{
    for (uint32_t i = 0; i < c->nparts; i++)
        zmq_msg_close(&c->parts[i]);
    free(c->parts);
    free(c->record);
    free(c->mail_from);
    free(c->tenant);
    free(c);
}

static const char *commit_check(queue_t *q, PB(QueueMessageCommit) * req)
{
    PB(QueueEnvelope) *e = req->envelope;
    if (e == NULL)
        return "commit without an envelope";
    if (!id_valid(e->message_id))
        return "invalid message id";
    if (e->n_recipients == 0)
        return "message without recipients";
    if (e->n_recipients > QUEUE_MAX_RECIPIENTS)
        return "too many recipients";
    for (size_t i = 0; i < e->n_recipients; i++)
        if (e->recipients[i] == NULL || e->recipients[i]->address == NULL ||
            e->recipients[i]->address[0] == '\0' || strchr(e->recipients[i]->address, '@') == NULL)
            return "recipient without an address";
    for (queue_commit_t *c = q->commits; c; c = c->next)
        if (strcmp(c->id, e->message_id) == 0)
            return "message id already being committed";
    return NULL;
}

static int message_exists(queue_t *q, const char *id)
{
    store_txn_t *txn = store_begin(q->store, 0);
    if (txn == NULL)
        return 0;
    store_val_t v;
    int found = store_get(txn, q->db_msg, id, strlen(id), &v) == STORE_OK;
    store_abort(&txn);
    return found;
}

void queue_on_commit(queue_t *q, bus_msg_t *msg)
{
    PB(QueueMessageCommit) *req = msg->env->queue_message_commit;
    uint64_t rid = msg->env->request_id;
    const char *why = commit_check(q, req);
    if (why) {
        log_warn("event=commit_refused reason=\"%s\"", why);
        bus_server_error(q->api, &msg->peer, rid, 400, "5.5.4", "%s", why);
        return;
    }
    PB(QueueEnvelope) *e = req->envelope;
    if (message_exists(q, e->message_id)) {
        /* a commit repeated after a lost reply: the message is already safe */
        upload_drop(q, e->message_id);
        reply_status(q, &msg->peer, rid, e->message_id, 250, "2.0.0", "queued");
        return;
    }
    queue_upload_t **link = NULL;
    queue_upload_t *u = upload_find(q, e->message_id, &link);
    uint32_t have = u ? u->nchunks : 0;
    if (have != req->chunks) {
        bus_server_error(q->api, &msg->peer, rid, 400, "4.3.0",
                         "commit of %s names %u chunks, %u arrived", e->message_id, req->chunks,
                         have);
        upload_drop(q, e->message_id);
        return;
    }

    queue_commit_t *c = xcalloc(1, sizeof(*c));
    c->peer = msg->peer;
    c->request_id = rid;
    sx_strlcpy(c->id, e->message_id, sizeof(c->id));
    c->parts = xcalloc(have + 2, sizeof(zmq_msg_t));
    if (req->prepend.len > 0) {
        /* header lines decided at the end of data go in front of everything */
        zmq_msg_init_size(&c->parts[0], req->prepend.len);
        memcpy(zmq_msg_data(&c->parts[0]), req->prepend.data, req->prepend.len);
        c->body_size += req->prepend.len;
        c->nparts = 1;
    }
    if (u) {
        for (uint32_t i = 0; i < have; i++) {
            zmq_msg_t *part = &c->parts[c->nparts++];
            zmq_msg_init(part);
            zmq_msg_move(part, &u->chunks[i]);
            c->body_size += zmq_msg_size(part);
        }
        *link = u->next;
        upload_free(q, u); /* its chunks were moved: only bookkeeping is freed */
    }
    bus_msg_take_payload(msg, &c->parts[c->nparts]);
    c->body_size += zmq_msg_size(&c->parts[c->nparts]);
    c->nparts++;

    /* the record: the envelope as given, a state per recipient, all due now */
    uint64_t now = clock_wall_ms();
    e->size = c->body_size;
    if (e->received_at_ms == 0)
        e->received_at_ms = now;
    PB(QueueRecord) rec = PB_INIT(QUEUE_RECORD);
    rec.envelope = e;
    rec.body_size = c->body_size;
    rec.n_recipients = e->n_recipients;
    rec.recipients = xcalloc(e->n_recipients, sizeof(*rec.recipients));
    PB(QueueRecipientState) *states = xcalloc(e->n_recipients, sizeof(*states));
    for (size_t i = 0; i < e->n_recipients; i++) {
        PB(QueueRecipientState) init = PB_INIT(QUEUE_RECIPIENT_STATE);
        states[i] = init;
        states[i].index = (uint32_t)i;
        states[i].address = e->recipients[i]->address;
        states[i].state = "queued";
        states[i].next_attempt_ms = now;
        e->recipients[i]->index = (uint32_t)i;
        rec.recipients[i] = &states[i];
    }
    c->record_len = PB_FN(queue_record, get_packed_size)(&rec);
    c->record = xmalloc(c->record_len);
    PB_FN(queue_record, pack)(&rec, c->record);
    free(rec.recipients);
    free(states);
    c->mail_from = xstrdup(e->mail_from ? e->mail_from : "");
    c->tenant = xstrdup(e->tenant ? e->tenant : "");
    c->nrcpt = e->n_recipients;

    *q->commits_tail = c;
    q->commits_tail = &c->next;
    q->ncommits++;
    if (!loop_timer_active(&q->commit_timer))
        loop_timer_start(q->svc->loop, &q->commit_timer, 0);
}

typedef struct commit_batch {
    queue_t *q;
    queue_commit_t *first;
    size_t count;
} commit_batch_t;

static int commit_write(store_txn_t *txn, void *arg)
{
    commit_batch_t *b = arg;
    queue_t *q = b->q;
    queue_commit_t *c = b->first;
    for (size_t i = 0; i < b->count; i++, c = c->next) {
        size_t idlen = strlen(c->id);
        int rc = store_put(txn, q->db_msg, c->id, idlen, c->record, c->record_len);
        if (rc != STORE_OK)
            return rc;
        void *dst;
        rc = store_reserve(txn, q->db_body, c->id, idlen, c->body_size, &dst);
        if (rc != STORE_OK)
            return rc;
        char *p = dst;
        for (uint32_t k = 0; k < c->nparts; k++) {
            size_t n = zmq_msg_size(&c->parts[k]);
            if (n)
                memcpy(p, zmq_msg_data(&c->parts[k]), n);
            p += n;
        }
    }
    return 0;
}

static void commit_run(loop_t *loop, void *arg)
{
    queue_t *q = arg;
    if (q->commits == NULL)
        return;
    commit_batch_t b = {.q = q, .first = q->commits, .count = 0};
    queue_commit_t *last = NULL;
    for (queue_commit_t *c = q->commits; c && b.count < (size_t)q->conf.group_commit_max;
         c = c->next) {
        last = c;
        b.count++;
    }
    /* detach the batch before writing: handlers may queue more meanwhile */
    q->commits = last->next;
    if (q->commits == NULL)
        q->commits_tail = &q->commits;
    q->ncommits -= b.count;
    last->next = NULL;

    /* refuse at once what would leave too little room for recording
     * deliveries: a store filled to its last page could not free itself */
    size_t reserve = queue_store_reserve(q);
    size_t need = 0, fit = 0;
    for (queue_commit_t *c = b.first; c; c = c->next) {
        need += c->record_len + c->body_size;
        if (!store_has_room(q->store, need, reserve))
            break;
        fit++;
    }
    if (fit < b.count) {
        queue_commit_t *c = b.first;
        for (size_t i = 0; i < fit; i++)
            c = c->next;
        while (c) {
            c->refused = 1;
            c = c->next;
        }
        log_warn("event=store_nearly_full refused=%zu of=%zu", b.count - fit, b.count);
    }
    b.count = fit;

    uint64_t t0 = clock_mono_ms();
    int rc = fit ? store_write(q->store, commit_write, &b) : STORE_OK;
    uint64_t took = clock_mono_ms() - t0;
    q->commit_batches++;
    if (rc != STORE_OK)
        q->commit_failures++;
    log_debug("event=group_commit messages=%zu ms=%llu result=%s", b.count,
              (unsigned long long)took, store_strerror(rc));

    uint64_t now = clock_wall_ms();
    queue_commit_t *c = b.first;
    while (c) {
        queue_commit_t *next = c->next;
        if (c->refused) {
            log_error("event=commit_failed msg=%s reason=store_full", c->id);
            reply_status(q, &c->peer, c->request_id, c->id, 452, "4.3.1",
                         "insufficient system storage");
        } else if (rc == STORE_OK) {
            q->accepted++;
            reply_status(q, &c->peer, c->request_id, c->id, 250, "2.0.0", "queued");
            log_info("event=queued msg=%s from=<%s> rcpts=%zu size=%llu tenant=%s", c->id,
                     c->mail_from, c->nrcpt, (unsigned long long)c->body_size,
                     c->tenant[0] ? c->tenant : "-");
            PB(Event) ev = PB_INIT(EVENT);
            ev.type = "queued";
            ev.message_id = c->id;
            ev.sender = c->mail_from;
            ev.tenant = c->tenant;
            service_event(q->svc, &ev);
            PB(QueueRecord) *rec = PB_FN(queue_record, unpack)(NULL, c->record_len, c->record);
            if (rec) {
                queue_index_put(q, rec);
                queue_record_free(&rec);
            }
            queue_sched_add(q, c->id, now);
        } else if (rc == STORE_FULL) {
            log_error("event=commit_failed msg=%s reason=store_full", c->id);
            reply_status(q, &c->peer, c->request_id, c->id, 452, "4.3.1",
                         "insufficient system storage");
        } else {
            log_error("event=commit_failed msg=%s reason=store_error", c->id);
            reply_status(q, &c->peer, c->request_id, c->id, 451, "4.3.0",
                         "local error in processing");
        }
        commit_free(c);
        c = next;
    }
    if (q->commits)
        loop_timer_start(loop, &q->commit_timer, 0);
}

/* ---- show ---- */

void queue_on_show(queue_t *q, bus_msg_t *msg)
{
    PB(QueueMessageShow) *req = msg->env->queue_message_show;
    uint64_t rid = msg->env->request_id;
    if (!id_valid(req->message_id)) {
        bus_server_error(q->api, &msg->peer, rid, 400, "", "\"%s\" is not a message id",
                         req->message_id ? req->message_id : "");
        return;
    }
    store_txn_t *txn = store_begin(q->store, 0);
    PB(QueueRecord) *rec = txn ? queue_store_get(q, txn, req->message_id) : NULL;
    if (rec == NULL) {
        store_abort(&txn);
        bus_server_error(q->api, &msg->peer, rid, 404, "", "message %s not found",
                         req->message_id);
        return;
    }
    PB(QueueMessageShowReply) r = PB_INIT(QUEUE_MESSAGE_SHOW_REPLY);
    r.envelope = rec->envelope;
    r.recipients = rec->recipients;
    r.n_recipients = rec->n_recipients;
    r.body_size = rec->body_size;
    r.state = rec->done_at_ms ? "done" : "active";
    r.held = rec->held;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(QUEUE_MESSAGE_SHOW_REPLY);
    env.queue_message_show_reply = &r;
    bus_server_send(q->api, &msg->peer, rid, &env, NULL);
    queue_record_free(&rec);
    store_abort(&txn);
}

int queue_accept_init(queue_t *q)
{
    q->commits_tail = &q->commits;
    loop_timer_init(&q->commit_timer, commit_run, q);
    loop_timer_init(&q->upload_sweep, upload_sweep, q);
    loop_timer_start(q->svc->loop, &q->upload_sweep, UPLOAD_SWEEP_MS);
    return 0;
}

void queue_accept_fini(queue_t *q)
{
    loop_timer_stop(q->svc->loop, &q->commit_timer);
    loop_timer_stop(q->svc->loop, &q->upload_sweep);
    while (q->uploads) {
        queue_upload_t *u = q->uploads;
        q->uploads = u->next;
        upload_free(q, u);
    }
    while (q->commits) {
        queue_commit_t *c = q->commits;
        q->commits = c->next;
        commit_free(c);
    }
    q->commits_tail = &q->commits;
}
