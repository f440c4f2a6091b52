/*
 * loop: epoll + ZeroMQ + timer heap + signalfd.
 *
 * ZeroMQ sockets are not file descriptors; each exposes ZMQ_FD, which only
 * signals that the socket's state may have changed. A socket is "dirty" when
 * its ZMQ_FD fired or something was sent on it (a send processes the
 * socket's commands and may swallow the wake-up of a message that arrived
 * meanwhile). Each turn, the handler of every dirty socket is called until
 * its receive finds nothing (EAGAIN), and the loop sleeps only when no
 * socket is dirty. A receive that finds a message is cheap; one that finds
 * nothing (like asking ZMQ_EVENTS) costs a poll and a getpid inside the
 * library, so the loop pays that once per dirty socket per turn, not once
 * per socket per turn and per message.
 */
#include "loop.h"
#include "alloc.h"
#include "clock.h"
#include "log.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <zmq.h>

#define LOOP_MAX_EVENTS   256
#define LOOP_SIGNAL_MAX   8
#define LOOP_TAG_ZMQ      (1ull << 62)
#define LOOP_TAG_SIGNAL   (1ull << 61)
/* An fd's generation rides in bits 32..60 of the epoll data, below the tags:
 * it wraps there instead of growing into them. */
#define LOOP_GEN_MASK     ((1u << 29) - 1)
/* One ZeroMQ handler call may process at most this many messages per turn,
 * so network sockets are never starved by a busy bus. */
#define LOOP_ZMQ_BUDGET   64

typedef struct loop_fd {
    loop_fd_fn fn;
    void *arg;
    unsigned events;
    uint32_t gen; /* bumps on remove, so stale epoll events are ignored */
    int active;
} loop_fd_t;

typedef struct loop_zmq {
    void *socket;
    int fd;
    loop_zmq_fn fn;
    void *arg;
    int dirty; /* ZMQ_EVENTS must be read before the loop may sleep */
} loop_zmq_t;

typedef struct loop_sig {
    int signo;
    loop_signal_fn fn;
    void *arg;
} loop_sig_t;

struct loop {
    int epfd;
    int running;
    uint64_t now;
    uint64_t timer_seq;

    loop_fd_t *fds;
    size_t nfds;

    loop_zmq_t *zmq;
    size_t nzmq, zmq_cap;

    loop_timer_t **heap;
    size_t heap_len, heap_cap;

    int sigfd;
    sigset_t sigmask;
    loop_sig_t sigs[LOOP_SIGNAL_MAX];
    size_t nsigs;
};

loop_t *loop_new(void)
{
    loop_t *loop = xcalloc(1, sizeof(*loop));
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) {
        free(loop);
        return NULL;
    }
    loop->sigfd = -1;
    sigemptyset(&loop->sigmask);
    loop->now = clock_mono_ms();
    return loop;
}

void loop_destroy(loop_t **p)
{
    loop_t *loop = *p;
    if (loop == NULL)
        return;
    close(loop->epfd);
    if (loop->sigfd >= 0)
        close(loop->sigfd);
    free(loop->fds);
    free(loop->zmq);
    free(loop->heap);
    free(loop);
    *p = NULL;
}

uint64_t loop_now(loop_t *loop)
{
    return loop->now;
}

void loop_stop(loop_t *loop)
{
    loop->running = 0;
}

/* ---- file descriptors ---- */

static uint32_t fd_epoll_events(unsigned events)
{
    uint32_t e = 0;
    if (events & LOOP_READ)
        e |= EPOLLIN | EPOLLRDHUP;
    if (events & LOOP_WRITE)
        e |= EPOLLOUT;
    return e;
}

static int fd_grow(loop_t *loop, int fd)
{
    if (fd < 0)
        return -1;
    if ((size_t)fd < loop->nfds)
        return 0;
    size_t n = loop->nfds ? loop->nfds : 64;
    while (n <= (size_t)fd)
        n *= 2;
    loop->fds = xrealloc(loop->fds, n * sizeof(*loop->fds));
    memset(loop->fds + loop->nfds, 0, (n - loop->nfds) * sizeof(*loop->fds));
    loop->nfds = n;
    return 0;
}

int loop_fd_add(loop_t *loop, int fd, unsigned events, loop_fd_fn fn, void *arg)
{
    if (fd_grow(loop, fd) < 0)
        return -1;
    loop_fd_t *f = &loop->fds[fd];
    struct epoll_event ev = {.events = fd_epoll_events(events)};
    uint32_t gen = (f->gen + 1) & LOOP_GEN_MASK;
    ev.data.u64 = ((uint64_t)gen << 32) | (uint32_t)fd;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return -1;
    f->gen = gen;
    f->fn = fn;
    f->arg = arg;
    f->events = events;
    f->active = 1;
    return 0;
}

int loop_fd_modify(loop_t *loop, int fd, unsigned events)
{
    if (fd < 0 || (size_t)fd >= loop->nfds || !loop->fds[fd].active)
        return -1;
    loop_fd_t *f = &loop->fds[fd];
    if (f->events == events)
        return 0;
    struct epoll_event ev = {.events = fd_epoll_events(events)};
    ev.data.u64 = ((uint64_t)f->gen << 32) | (uint32_t)fd;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) < 0)
        return -1;
    f->events = events;
    return 0;
}

void loop_fd_remove(loop_t *loop, int fd)
{
    if (fd < 0 || (size_t)fd >= loop->nfds || !loop->fds[fd].active)
        return;
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
    loop->fds[fd].active = 0;
    loop->fds[fd].fn = NULL;
}

/* ---- ZeroMQ sockets ---- */

int loop_zmq_add(loop_t *loop, void *socket, loop_zmq_fn fn, void *arg)
{
    if (loop->nzmq == loop->zmq_cap) {
        loop->zmq_cap = loop->zmq_cap ? loop->zmq_cap * 2 : 16;
        loop->zmq = xrealloc(loop->zmq, loop->zmq_cap * sizeof(*loop->zmq));
    }
    int fd;
    size_t len = sizeof(fd);
    if (zmq_getsockopt(socket, ZMQ_FD, &fd, &len) < 0)
        return -1;
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.u64 = LOOP_TAG_ZMQ | (uint32_t)fd;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return -1;
    loop->zmq[loop->nzmq++] =
        (loop_zmq_t){.socket = socket, .fd = fd, .fn = fn, .arg = arg, .dirty = 1};
    return 0;
}

void loop_zmq_touch(loop_t *loop, void *socket)
{
    for (size_t i = 0; i < loop->nzmq; i++)
        if (loop->zmq[i].socket == socket)
            loop->zmq[i].dirty = 1;
}

static void zmq_fd_fired(loop_t *loop, int fd)
{
    for (size_t i = 0; i < loop->nzmq; i++)
        if (loop->zmq[i].fd == fd)
            loop->zmq[i].dirty = 1;
}

void loop_zmq_remove(loop_t *loop, void *socket)
{
    for (size_t i = 0; i < loop->nzmq; i++) {
        if (loop->zmq[i].socket != socket)
            continue;
        epoll_ctl(loop->epfd, EPOLL_CTL_DEL, loop->zmq[i].fd, NULL);
        loop->zmq[i] = loop->zmq[--loop->nzmq];
        return;
    }
}

/*
 * Drain the dirty ZeroMQ sockets. A socket stays dirty when its budget ran
 * out with messages perhaps left; a handler's sends on it are covered by the
 * receive that follows them, and its sends on other sockets mark those.
 */
static void zmq_dispatch(loop_t *loop)
{
    for (size_t i = 0; i < loop->nzmq; i++) {
        if (!loop->zmq[i].dirty)
            continue;
        loop_zmq_t z = loop->zmq[i];
        loop->zmq[i].dirty = 0;
        for (int n = 0;; n++) {
            if (n == LOOP_ZMQ_BUDGET) {
                loop->zmq[i].dirty = 1;
                break;
            }
            int got = z.fn(loop, z.socket, z.arg);
            /* the handler may have removed sockets: stop if this one moved */
            if (i >= loop->nzmq || loop->zmq[i].socket != z.socket)
                break;
            loop->zmq[i].dirty = 0;
            if (!got)
                break;
        }
    }
}

static int zmq_any_dirty(loop_t *loop)
{
    for (size_t i = 0; i < loop->nzmq; i++)
        if (loop->zmq[i].dirty)
            return 1;
    return 0;
}

/* ---- timers: a binary min-heap on (when, seq) ---- */

static int timer_less(const loop_timer_t *a, const loop_timer_t *b)
{
    return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void heap_set(loop_t *loop, size_t i, loop_timer_t *t)
{
    loop->heap[i] = t;
    t->heap_index = i;
}

static void heap_up(loop_t *loop, size_t i)
{
    loop_timer_t *t = loop->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!timer_less(t, loop->heap[parent]))
            break;
        heap_set(loop, i, loop->heap[parent]);
        i = parent;
    }
    heap_set(loop, i, t);
}

static void heap_down(loop_t *loop, size_t i)
{
    loop_timer_t *t = loop->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        loop_timer_t *best = t;
        if (l < loop->heap_len && timer_less(loop->heap[l], best)) {
            m = l;
            best = loop->heap[l];
        }
        if (r < loop->heap_len && timer_less(loop->heap[r], best)) {
            m = r;
            best = loop->heap[r];
        }
        if (m == i)
            break;
        heap_set(loop, i, best);
        i = m;
    }
    heap_set(loop, i, t);
}

void loop_timer_init(loop_timer_t *t, loop_timer_fn fn, void *arg)
{
    memset(t, 0, sizeof(*t));
    t->heap_index = (size_t)-1;
    t->fn = fn;
    t->arg = arg;
}

void loop_timer_stop(loop_t *loop, loop_timer_t *t)
{
    size_t i = t->heap_index;
    /* also safe on a zeroed timer that was never initialised or started */
    if (i == (size_t)-1 || i >= loop->heap_len || loop->heap[i] != t)
        return;
    t->heap_index = (size_t)-1;
    loop->heap_len--;
    if (i == loop->heap_len)
        return;
    loop_timer_t *moved = loop->heap[loop->heap_len];
    heap_set(loop, i, moved);
    heap_up(loop, i);
    heap_down(loop, moved->heap_index);
}

void loop_timer_start(loop_t *loop, loop_timer_t *t, uint64_t delay_ms)
{
    loop_timer_stop(loop, t);
    /* a fresh clock: timers started before the first turn, or late in a
     * long one, must not fire early */
    loop->now = clock_mono_ms();
    t->when = loop->now + delay_ms;
    t->seq = loop->timer_seq++;
    if (loop->heap_len == loop->heap_cap) {
        loop->heap_cap = loop->heap_cap ? loop->heap_cap * 2 : 64;
        loop->heap = xrealloc(loop->heap, loop->heap_cap * sizeof(*loop->heap));
    }
    size_t i = loop->heap_len++;
    heap_set(loop, i, t);
    heap_up(loop, i);
}

static void timers_run(loop_t *loop)
{
    /* Only timers due at the start of this pass run; ones a handler starts
     * with delay 0 run next turn, so a handler cannot starve the loop. */
    uint64_t now = loop->now;
    uint64_t seq_limit = loop->timer_seq;
    while (loop->heap_len > 0) {
        loop_timer_t *t = loop->heap[0];
        if (t->when > now || t->seq >= seq_limit)
            break;
        loop_timer_stop(loop, t);
        t->fn(loop, t->arg);
    }
}

static int timers_timeout(loop_t *loop)
{
    if (loop->heap_len == 0)
        return 1000;
    uint64_t when = loop->heap[0]->when;
    if (when <= loop->now)
        return 0;
    uint64_t d = when - loop->now;
    return d > 1000 ? 1000 : (int)d;
}

/* ---- signals ---- */

int loop_signal_add(loop_t *loop, int signo, loop_signal_fn fn, void *arg)
{
    if (loop->nsigs >= LOOP_SIGNAL_MAX)
        return -1;
    sigaddset(&loop->sigmask, signo);
    if (sigprocmask(SIG_BLOCK, &loop->sigmask, NULL) < 0)
        return -1;
    int fd = signalfd(loop->sigfd, &loop->sigmask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0)
        return -1;
    if (loop->sigfd < 0) {
        struct epoll_event ev = {.events = EPOLLIN};
        ev.data.u64 = LOOP_TAG_SIGNAL;
        if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            return -1;
        }
        loop->sigfd = fd;
    }
    loop->sigs[loop->nsigs++] = (loop_sig_t){.signo = signo, .fn = fn, .arg = arg};
    return 0;
}

static void signals_dispatch(loop_t *loop)
{
    struct signalfd_siginfo si;
    while (read(loop->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        for (size_t i = 0; i < loop->nsigs; i++)
            if ((int)si.ssi_signo == loop->sigs[i].signo)
                loop->sigs[i].fn(loop, (int)si.ssi_signo, loop->sigs[i].arg);
    }
}

/* ---- the turn ---- */

int loop_run(loop_t *loop)
{
    struct epoll_event events[LOOP_MAX_EVENTS];
    loop->running = 1;
    log_hold_lines();
    while (loop->running) {
        loop->now = clock_mono_ms();
        zmq_dispatch(loop);
        if (!loop->running)
            break;
        /* a handler of a later socket may have sent on an earlier one */
        if (zmq_any_dirty(loop))
            zmq_dispatch(loop);
        int timeout = zmq_any_dirty(loop) ? 0 : timers_timeout(loop);
        log_flush(); /* the turn's lines, before sleeping */
        int n = epoll_wait(loop->epfd, events, LOOP_MAX_EVENTS, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            log_error("event=loop_failed err=%s", strerror(errno));
            return -1;
        }
        loop->now = clock_mono_ms();
        for (int i = 0; i < n && loop->running; i++) {
            uint64_t data = events[i].data.u64;
            if (data & LOOP_TAG_ZMQ) {
                zmq_fd_fired(loop, (int)(uint32_t)data); /* dispatched next turn */
                continue;
            }
            if (data & LOOP_TAG_SIGNAL) {
                signals_dispatch(loop);
                continue;
            }
            int fd = (int)(uint32_t)data;
            uint32_t gen = (uint32_t)(data >> 32);
            if ((size_t)fd >= loop->nfds)
                continue;
            loop_fd_t *f = &loop->fds[fd];
            if (!f->active || f->gen != gen)
                continue;
            unsigned ev = 0;
            uint32_t e = events[i].events;
            if (e & (EPOLLIN | EPOLLRDHUP))
                ev |= LOOP_READ;
            if (e & EPOLLOUT)
                ev |= LOOP_WRITE;
            if (e & (EPOLLERR | EPOLLHUP))
                ev |= LOOP_ERROR | LOOP_READ;
            f->fn(loop, fd, ev, f->arg);
        }
        timers_run(loop);
    }
    log_flush();
    return 0;
}
