/*
 * auth_worker: threads, a mutex-protected job queue and a finished list,
 * and an eventfd that wakes the loop when jobs finish. Worker threads start
 * with every signal blocked, so signals keep reaching the loop's signalfd.
 */
#include "auth_worker.h"
#include "core/alloc.h"
#include "core/log.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

typedef struct job {
    auth_work_fn work;
    auth_done_fn done;
    void *arg;
    struct job *next;
} job_t;

typedef struct job_list {
    job_t *head, *tail;
} job_list_t;

struct auth_worker {
    loop_t *loop;
    int efd;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job_list_t todo;     /* waiting for a thread */
    job_list_t finished; /* waiting for the loop */
    int stopping;
    size_t pending; /* submitted, not yet delivered; loop thread only */
    size_t queue_max;
    pthread_t *threads;
    unsigned nthreads;
};

static void list_push(job_list_t *l, job_t *j)
{
    j->next = NULL;
    if (l->tail)
        l->tail->next = j;
    else
        l->head = j;
    l->tail = j;
}

static job_t *list_pop(job_list_t *l)
{
    job_t *j = l->head;
    if (j) {
        l->head = j->next;
        if (l->head == NULL)
            l->tail = NULL;
    }
    return j;
}

static void *worker_main(void *arg)
{
    auth_worker_t *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->stopping && w->todo.head == NULL)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->stopping)
            break;
        job_t *j = list_pop(&w->todo);
        pthread_mutex_unlock(&w->mu);
        j->work(j->arg);
        pthread_mutex_lock(&w->mu);
        list_push(&w->finished, j);
        uint64_t one = 1;
        /* the counter cannot overflow here; a failed write only delays delivery */
        if (write(w->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
            log_warn("event=worker_wake_failed err=%d", errno);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Loop thread: hand finished jobs to their done(). */
static void on_wake(loop_t *loop, int fd, unsigned events, void *arg)
{
    (void)loop;
    (void)events;
    auth_worker_t *w = arg;
    uint64_t n;
    if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
        log_warn("event=worker_wake_read_failed err=%d", errno);
    pthread_mutex_lock(&w->mu);
    job_list_t ready = w->finished;
    w->finished.head = w->finished.tail = NULL;
    pthread_mutex_unlock(&w->mu);
    job_t *j;
    while ((j = list_pop(&ready)) != NULL) {
        w->pending--;
        j->done(j->arg, 1);
        free(j);
    }
}

auth_worker_t *auth_worker_new(loop_t *loop, unsigned threads, size_t queue_max)
{
    if (threads == 0 || threads > AUTH_WORKER_THREADS_MAX || queue_max == 0)
        return NULL;
    auth_worker_t *w = xcalloc(1, sizeof(*w));
    w->loop = loop;
    w->queue_max = queue_max;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->efd < 0 || loop_fd_add(loop, w->efd, LOOP_READ, on_wake, w) < 0) {
        log_error("event=worker_start_failed reason=eventfd err=%d", errno);
        goto fail;
    }
    w->threads = xcalloc(threads, sizeof(*w->threads));
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (unsigned i = 0; i < threads; i++) {
        int rc = pthread_create(&w->threads[i], NULL, worker_main, w);
        if (rc != 0) {
            log_error("event=worker_start_failed reason=pthread_create err=%d", rc);
            break;
        }
        w->nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (w->nthreads != threads)
        goto fail;
    return w;
fail:
    auth_worker_destroy(&w);
    return NULL;
}

void auth_worker_destroy(auth_worker_t **p)
{
    auth_worker_t *w = *p;
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopping = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    for (unsigned i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i], NULL);
    free(w->threads);
    job_t *j;
    while ((j = list_pop(&w->todo)) != NULL || (j = list_pop(&w->finished)) != NULL) {
        j->done(j->arg, 0);
        free(j);
    }
    if (w->efd >= 0) {
        loop_fd_remove(w->loop, w->efd);
        close(w->efd);
    }
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
    *p = NULL;
}

int auth_worker_submit(auth_worker_t *w, auth_work_fn work, auth_done_fn done, void *arg)
{
    if (w->pending >= w->queue_max)
        return -1;
    job_t *j = xmalloc(sizeof(*j));
    j->work = work;
    j->done = done;
    j->arg = arg;
    pthread_mutex_lock(&w->mu);
    list_push(&w->todo, j);
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    w->pending++;
    return 0;
}

size_t auth_worker_pending(const auth_worker_t *w)
{
    return w->pending;
}
