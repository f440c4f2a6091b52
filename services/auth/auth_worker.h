/*
 * auth_worker: a small pool of threads for the slow part of a login check
 * (the scrypt hash), so the loop thread keeps answering while hashes run.
 * A job is two callbacks: work() runs on a pool thread and must touch only
 * the job's own memory; done() runs afterwards on the loop thread, woken
 * through an eventfd the loop watches. The pool is bounded: when it holds
 * queue_max jobs it refuses the next one and the caller answers "try later"
 * instead of piling up work. Not a general executor: no priorities, no
 * cancellation of a job once submitted.
 */
#ifndef SX_AUTH_WORKER_H
#define SX_AUTH_WORKER_H

#include "core/loop.h"

#include <stddef.h>

#define AUTH_WORKER_THREADS_MAX 64

typedef struct auth_worker auth_worker_t;

typedef void (*auth_work_fn)(void *arg);
/* completed 0: the pool is being destroyed and work() may not have run; just free. */
typedef void (*auth_done_fn)(void *arg, int completed);

/* NULL (logged) when threads or the eventfd cannot be created. threads >= 1. */
auth_worker_t *auth_worker_new(loop_t *loop, unsigned threads, size_t queue_max);
/* Waits for running jobs, then calls done(arg, 0) for every job not yet delivered. */
void auth_worker_destroy(auth_worker_t **w);

/* 0, or -1 when the pool already holds queue_max jobs (done will not run). */
int auth_worker_submit(auth_worker_t *w, auth_work_fn work, auth_done_fn done, void *arg);

/* Jobs submitted and not yet delivered to done(). */
size_t auth_worker_pending(const auth_worker_t *w);

#endif
