/*
 * queue_write: the one synced write of each loop turn. The commits of new
 * messages (queue_accept.c) and the outcomes of attempts (queue_results.c)
 * that arrived during a turn go into one LMDB transaction, so a turn costs
 * one fsync and a group commit never waits behind a separate results
 * fsync. Nothing is answered or announced before that commit returned:
 * each side acts on its outcome only afterwards. Results on their own are
 * held a few milliseconds (results_hold) so that they ride with the next
 * commit: at one session a delivery's result otherwise lands just before
 * the next message, and that message waits for a second fsync.
 */
#include "queue.h"
#include "core/clock.h"
#include "core/log.h"

static int turn_write(store_txn_t *txn, void *arg)
{
    queue_t *q = arg;
    int rc = queue_commits_write(q, txn);
    if (rc == 0)
        rc = queue_results_write(q, txn);
    return rc;
}

static void turn_run(loop_t *loop, void *arg)
{
    (void)loop;
    queue_t *q = arg;
    /* this turn takes whatever is pending: neither timer has more to do */
    loop_timer_stop(q->svc->loop, &q->write_timer);
    loop_timer_stop(q->svc->loop, &q->results_timer);
    size_t ncommits = queue_commits_take(q);
    size_t nresults = queue_results_take(q);
    uint64_t t0 = clock_mono_ms();
    int rc = ncommits || nresults ? store_write(q->store, turn_write, q) : STORE_OK;
    if (rc != STORE_OK && ncommits && nresults) {
        /* results that cannot be written wait for their retry; the new
         * messages get a write of their own rather than a refusal */
        queue_results_done(q, rc);
        nresults = 0;
        rc = store_write(q->store, turn_write, q);
    }
    log_debug("event=store_turn messages=%zu results=%zu ms=%llu result=%s", ncommits, nresults,
              (unsigned long long)(clock_mono_ms() - t0), store_strerror(rc));
    /* ingress first: its clients wait for these replies */
    queue_commits_done(q, rc);
    if (nresults)
        queue_results_done(q, rc);
}

void queue_write_soon(queue_t *q)
{
    if (!loop_timer_active(&q->write_timer))
        loop_timer_start(q->svc->loop, &q->write_timer, 0);
}

void queue_write_results_soon(queue_t *q)
{
    if (!loop_timer_active(&q->write_timer) && !loop_timer_active(&q->results_timer))
        loop_timer_start(q->svc->loop, &q->results_timer, q->conf.results_hold);
}

void queue_write_flush(queue_t *q)
{
    if (!loop_timer_active(&q->write_timer) && !loop_timer_active(&q->results_timer))
        return;
    turn_run(q->svc->loop, q);
}

void queue_write_init(queue_t *q)
{
    loop_timer_init(&q->write_timer, turn_run, q);
    loop_timer_init(&q->results_timer, turn_run, q);
}

void queue_write_fini(queue_t *q)
{
    loop_timer_stop(q->svc->loop, &q->write_timer);
    loop_timer_stop(q->svc->loop, &q->results_timer);
}
