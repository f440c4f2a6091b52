/*
 * queue_accept: taking messages in. Chunks of a message whose DATA is still
 * arriving are held in memory (as the ZeroMQ frames they came in, no copy);
 * at commit the record and the body are written with every other commit of
 * the same loop turn, and that turn's results, in one LMDB transaction
 * (queue_write.c), synced to disk, and only then is each ingress answered.
 * This is the group commit: one fsync for a burst of messages, and no
 * message confirmed before its fsync returned. Also answers
 * QueueMessageShow. Scheduling is queue_sched.c's.
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
    sx_env_t *env;          /* the request: rec points into its envelope */
    PB(QueueRecord) rec;    /* written, then indexed, never packed to be unpacked */
    PB(QueueRecipientState) *states;
    size_t record_len;      /* packed size of rec */
    zmq_msg_t *parts;       /* body pieces in order */
    uint32_t nparts;
    uint64_t body_size;
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
    free(c->rec.recipients);
    free(c->states);
    codec_free(&c->env);
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
    int found = queue_store_has(q, txn, id);
    store_abort(&txn);
    return found;
}

/* The body in order: header lines decided at the end of data, the chunks
 * (moved out of the upload, no copy), then the last piece with the commit. */
static void commit_take_body(queue_t *q, queue_commit_t *c, bus_msg_t *msg, queue_upload_t *u,
                             queue_upload_t **link)
{
    PB(QueueMessageCommit) *req = msg->env->queue_message_commit;
    uint32_t have = u ? u->nchunks : 0;
    c->parts = xcalloc(have + 2, sizeof(zmq_msg_t));
    if (req->prepend.len > 0) {
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
}

/* The record: the envelope as given, a state per recipient, all due now. */
static void commit_build_record(queue_commit_t *c, PB(QueueEnvelope) * e)
{
    uint64_t now = clock_wall_ms();
    e->size = c->body_size;
    if (e->received_at_ms == 0)
        e->received_at_ms = now;
    PB(QueueRecord) rec = PB_INIT(QUEUE_RECORD);
    rec.envelope = e;
    rec.body_size = c->body_size;
    rec.n_recipients = e->n_recipients;
    rec.recipients = xcalloc(e->n_recipients, sizeof(*rec.recipients));
    c->states = xcalloc(e->n_recipients, sizeof(*c->states));
    for (size_t i = 0; i < e->n_recipients; i++) {
        PB(QueueRecipientState) init = PB_INIT(QUEUE_RECIPIENT_STATE);
        c->states[i] = init;
        c->states[i].index = (uint32_t)i;
        c->states[i].address = e->recipients[i]->address;
        c->states[i].state = "queued";
        c->states[i].next_attempt_ms = now;
        e->recipients[i]->index = (uint32_t)i;
        rec.recipients[i] = &c->states[i];
    }
    c->rec = rec;
    c->record_len = PB_FN(queue_record, get_packed_size)(&c->rec);
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
    commit_take_body(q, c, msg, u, link);
    commit_build_record(c, e);
    /* kept until the commit is done: the record points into the envelope */
    c->env = bus_msg_take_env(msg);

    *q->commits_tail = c;
    q->commits_tail = &c->next;
    q->ncommits++;
    queue_write_soon(q);
}

/*
 * How many commits of a batch, from its first, leave enough room for
 * recording deliveries (a store filled to its last page could not free
 * itself). One check for the whole batch; one per message only when it
 * does not all fit.
 */
static size_t batch_fit(queue_t *q, const queue_commit_t *first)
{
    size_t reserve = queue_store_reserve(q);
    size_t total = 0, count = 0;
    for (const queue_commit_t *c = first; c; c = c->next, count++)
        total += c->record_len + c->body_size;
    if (store_has_room(q->store, total, reserve))
        return count;
    size_t need = 0, fit = 0;
    for (const queue_commit_t *c = first; c; c = c->next, fit++) {
        need += c->record_len + c->body_size;
        if (!store_has_room(q->store, need, reserve))
            break;
    }
    return fit;
}

size_t queue_commits_take(queue_t *q)
{
    if (q->commits == NULL)
        return 0;
    size_t count = 0;
    queue_commit_t *last = NULL;
    for (queue_commit_t *c = q->commits; c && count < (size_t)q->conf.group_commit_max;
         c = c->next) {
        last = c;
        count++;
    }
    q->batch = q->commits;
    q->commits = last->next;
    if (q->commits == NULL)
        q->commits_tail = &q->commits;
    q->ncommits -= count;
    last->next = NULL;

    /* refuse at once what does not fit: answered 452, never written */
    size_t fit = batch_fit(q, q->batch);
    if (fit < count) {
        queue_commit_t *c = q->batch;
        for (size_t i = 0; i < fit; i++)
            c = c->next;
        for (; c; c = c->next)
            c->refused = 1;
        log_warn("event=store_nearly_full refused=%zu of=%zu", count - fit, count);
    }
    return fit;
}

int queue_commits_write(queue_t *q, store_txn_t *txn)
{
    for (queue_commit_t *c = q->batch; c && !c->refused; c = c->next) {
        int rc = queue_store_put(q, txn, &c->rec);
        if (rc != STORE_OK)
            return rc;
        void *dst;
        rc = store_reserve(txn, q->db_body, c->id, strlen(c->id), c->body_size, &dst);
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

/* A message now on disk: answer ingress, announce it, index and schedule it. */
static void commit_stored(queue_t *q, queue_commit_t *c, uint64_t now)
{
    const PB(QueueEnvelope) *e = c->rec.envelope;
    const char *from = e->mail_from ? e->mail_from : "";
    const char *tenant = e->tenant ? e->tenant : "";
    q->accepted++;
    reply_status(q, &c->peer, c->request_id, c->id, 250, "2.0.0", "queued");
    log_info("event=queued msg=%s from=<%s> rcpts=%zu size=%llu tenant=%s", c->id, from,
             c->rec.n_recipients, (unsigned long long)c->body_size, tenant[0] ? tenant : "-");
    PB(Event) ev = PB_INIT(EVENT);
    ev.type = "queued";
    ev.message_id = c->id;
    ev.sender = (char *)from;
    ev.tenant = (char *)tenant;
    service_event(q->svc, &ev);
    queue_index_put(q, &c->rec);
    /* a body in one frame (no chunks, no header added) is kept for the first job */
    queue_sched_add(q, c->id, now, c->nparts == 1 ? &c->parts[0] : NULL);
}

void queue_commits_done(queue_t *q, int rc)
{
    if (q->batch == NULL)
        return;
    q->commit_batches++;
    /* refused ones are at the end: a batch with its first refused wrote nothing */
    if (rc != STORE_OK && !q->batch->refused)
        q->commit_failures++;
    uint64_t now = clock_wall_ms();
    queue_commit_t *c = q->batch;
    q->batch = NULL;
    while (c) {
        queue_commit_t *next = c->next;
        if (c->refused || rc == STORE_FULL) {
            log_error("event=commit_failed msg=%s reason=store_full", c->id);
            reply_status(q, &c->peer, c->request_id, c->id, 452, "4.3.1",
                         "insufficient system storage");
        } else if (rc == STORE_OK) {
            commit_stored(q, c, now);
        } else {
            log_error("event=commit_failed msg=%s reason=store_error", c->id);
            reply_status(q, &c->peer, c->request_id, c->id, 451, "4.3.0",
                         "local error in processing");
        }
        commit_free(c);
        c = next;
    }
    if (q->commits)
        queue_write_soon(q);
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
    loop_timer_init(&q->upload_sweep, upload_sweep, q);
    loop_timer_start(q->svc->loop, &q->upload_sweep, UPLOAD_SWEEP_MS);
    return 0;
}

void queue_accept_fini(queue_t *q)
{
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
    while (q->batch) {
        queue_commit_t *c = q->batch;
        q->batch = c->next;
        commit_free(c);
    }
    q->commits_tail = &q->commits;
}
