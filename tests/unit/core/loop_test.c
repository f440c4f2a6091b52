/*
 * loop_test: the event loop: timers in order, stop and restart, zero-delay
 * timers started from a handler, the heap under random starts and stops,
 * file descriptor readiness, signals through loop_signal_add and ZeroMQ
 * socket readiness over inproc://.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
#include <zmq.h>

#include "core/clock.h"
#include "core/loop.h"

/* A guard so a broken loop fails the test instead of hanging it. */
static void on_guard(loop_t *loop, void *arg)
{
    (void)loop;
    *(int *)arg = 1;
    loop_stop(loop);
}

static void run_with_guard(loop_t *loop, uint64_t ms, int *timed_out)
{
    loop_timer_t guard;
    *timed_out = 0;
    loop_timer_init(&guard, on_guard, timed_out);
    loop_timer_start(loop, &guard, ms);
    assert_int_equal(loop_run(loop), 0);
    loop_timer_stop(loop, &guard);
}

/* ---- timers ---- */

typedef struct fire_log {
    int order[64];
    uint64_t at[64];
    int n;
    int stop_after;
} fire_log_t;

typedef struct tmark {
    loop_timer_t t;
    fire_log_t *log;
    int id;
} tmark_t;

static void on_mark(loop_t *loop, void *arg)
{
    tmark_t *m = arg;
    m->log->at[m->log->n] = clock_mono_ms();
    m->log->order[m->log->n++] = m->id;
    if (m->log->n == m->log->stop_after)
        loop_stop(loop);
}

static void test_timers_fire_in_order(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    assert_non_null(loop);
    static const uint64_t delays[] = {30, 10, 20, 0, 10, 5};
    /* equal delays fire in start order: id 1 before id 4 */
    static const int want[] = {3, 5, 1, 4, 2, 0};
    fire_log_t log = {.stop_after = 6};
    tmark_t m[6];
    uint64_t start = loop_now(loop);
    for (int i = 0; i < 6; i++) {
        m[i].log = &log;
        m[i].id = i;
        loop_timer_init(&m[i].t, on_mark, &m[i]);
        assert_false(loop_timer_active(&m[i].t));
        loop_timer_start(loop, &m[i].t, delays[i]);
        assert_true(loop_timer_active(&m[i].t));
    }
    int timed_out;
    run_with_guard(loop, 2000, &timed_out);
    assert_false(timed_out);
    assert_int_equal(log.n, 6);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(log.order[i], want[i]);
        /* never early */
        assert_true(log.at[i] >= start + delays[want[i]]);
        assert_false(loop_timer_active(&m[i].t));
    }
    loop_destroy(&loop);
    assert_null(loop);
    loop_destroy(&loop); /* safe twice */
}

static void test_timer_stop_restart(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    fire_log_t log = {.stop_after = 2};
    tmark_t a = {.log = &log, .id = 1}, b = {.log = &log, .id = 2}, c = {.log = &log, .id = 3};
    loop_timer_init(&a.t, on_mark, &a);
    loop_timer_init(&b.t, on_mark, &b);
    loop_timer_init(&c.t, on_mark, &c);

    /* stopping a timer that never started is a no-op */
    loop_timer_stop(loop, &a.t);
    assert_false(loop_timer_active(&a.t));

    uint64_t start = loop_now(loop);
    loop_timer_start(loop, &a.t, 10);
    loop_timer_stop(loop, &a.t); /* a never fires */
    loop_timer_stop(loop, &a.t); /* twice is fine */
    loop_timer_start(loop, &b.t, 5);
    loop_timer_start(loop, &b.t, 60); /* a restart replaces the deadline: fires once */
    loop_timer_start(loop, &c.t, 20);

    int timed_out;
    run_with_guard(loop, 2000, &timed_out);
    assert_false(timed_out);
    assert_int_equal(log.n, 2);
    assert_int_equal(log.order[0], 3);
    assert_int_equal(log.order[1], 2);
    assert_true(log.at[1] >= start + 60);

    /* a timer can be started again after it fired */
    log.n = 0;
    log.stop_after = 1;
    loop_timer_start(loop, &a.t, 1);
    run_with_guard(loop, 2000, &timed_out);
    assert_false(timed_out);
    assert_int_equal(log.n, 1);
    assert_int_equal(log.order[0], 1);
    loop_destroy(&loop);
}

/* A timer that re-arms itself with delay 0 while a pipe stays readable. */
typedef struct starve {
    loop_timer_t t;
    int timer_runs;
    int fd_calls;
    int fd_calls_at_timer[200];
    loop_timer_t from_io;
    int from_io_fd_calls; /* fd_calls when the zero-delay timer from I/O ran */
    int from_io_started_at;
} starve_t;

static void on_rearm(loop_t *loop, void *arg)
{
    starve_t *s = arg;
    s->fd_calls_at_timer[s->timer_runs++] = s->fd_calls;
    if (s->timer_runs < 100)
        loop_timer_start(loop, &s->t, 0);
    else
        loop_stop(loop);
}

static void on_from_io(loop_t *loop, void *arg)
{
    (void)loop;
    starve_t *s = arg;
    s->from_io_fd_calls = s->fd_calls;
}

static void on_starve_fd(loop_t *loop, int fd, unsigned events, void *arg)
{
    (void)fd;
    starve_t *s = arg;
    assert_true(events & LOOP_READ);
    s->fd_calls++;
    if (s->fd_calls == 5) {
        s->from_io_started_at = s->fd_calls;
        loop_timer_start(loop, &s->from_io, 0);
    }
}

static void test_zero_delay_from_handler_runs_next_turn(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    int p[2];
    assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    assert_int_equal(write(p[1], "x", 1), 1); /* stays unread: readable every turn */
    starve_t s;
    memset(&s, 0, sizeof(s));
    s.from_io_fd_calls = -1;
    loop_timer_init(&s.t, on_rearm, &s);
    loop_timer_init(&s.from_io, on_from_io, &s);
    assert_int_equal(loop_fd_add(loop, p[0], LOOP_READ, on_starve_fd, &s), 0);
    loop_timer_start(loop, &s.t, 0);
    int timed_out;
    run_with_guard(loop, 5000, &timed_out);
    assert_false(timed_out);
    assert_int_equal(s.timer_runs, 100);
    /* each run of the re-armed timer is a turn of its own: I/O ran in between */
    for (int i = 1; i < 100; i++)
        assert_true(s.fd_calls_at_timer[i] > s.fd_calls_at_timer[i - 1]);
    /* a zero-delay timer started from an I/O handler runs in that same turn */
    assert_int_equal(s.from_io_fd_calls, s.from_io_started_at);
    loop_fd_remove(loop, p[0]);
    close(p[0]);
    close(p[1]);
    loop_destroy(&loop);
}

/* ---- the heap under random starts and stops ---- */

#define MANY 3000

typedef struct many {
    loop_timer_t t[MANY];
    int fired[MANY];
    int expect[MANY];   /* 1 if it should fire */
    uint64_t last_when, last_seq;
    int order_ok;
    int remaining;
    unsigned rng;
} many_t;

static many_t *g_many;

static unsigned rnd(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (*s >> 16) & 0x7fff;
}

static void on_many(loop_t *loop, void *arg)
{
    many_t *m = g_many;
    loop_timer_t *t = arg;
    size_t i = (size_t)(t - m->t);
    m->fired[i]++;
    if (t->when < m->last_when || (t->when == m->last_when && t->seq < m->last_seq))
        m->order_ok = 0;
    m->last_when = t->when;
    m->last_seq = t->seq;
    if (m->expect[i])
        m->remaining--;
    /* from inside a handler, stop a random other pending timer */
    size_t j = rnd(&m->rng) % MANY;
    if (j != i && loop_timer_active(&m->t[j])) {
        loop_timer_stop(loop, &m->t[j]);
        m->expect[j] = 0;
        m->remaining--;
    }
    if (m->remaining == 0)
        loop_stop(loop);
}

static void test_many_timers_random(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    many_t *m = calloc(1, sizeof(*m));
    g_many = m;
    m->rng = 12345;
    m->order_ok = 1;
    for (size_t i = 0; i < MANY; i++) {
        loop_timer_init(&m->t[i], on_many, &m->t[i]);
        loop_timer_start(loop, &m->t[i], rnd(&m->rng) % 40);
        m->expect[i] = 1;
    }
    /* random stops and restarts before running */
    for (int k = 0; k < 4 * MANY; k++) {
        size_t i = rnd(&m->rng) % MANY;
        if (rnd(&m->rng) % 3 == 0) {
            loop_timer_stop(loop, &m->t[i]);
            m->expect[i] = 0;
        } else {
            loop_timer_start(loop, &m->t[i], rnd(&m->rng) % 40);
            m->expect[i] = 1;
        }
    }
    for (size_t i = 0; i < MANY; i++) {
        assert_int_equal(loop_timer_active(&m->t[i]), m->expect[i]);
        m->remaining += m->expect[i];
    }
    assert_true(m->remaining > 0);
    int timed_out;
    run_with_guard(loop, 10000, &timed_out);
    assert_false(timed_out);
    assert_true(m->order_ok);
    for (size_t i = 0; i < MANY; i++) {
        if (m->fired[i] != m->expect[i])
            fail_msg("timer %zu fired %d times, expected %d", i, m->fired[i], m->expect[i]);
        assert_false(loop_timer_active(&m->t[i]));
    }
    free(m);
    loop_destroy(&loop);
}

/* ---- file descriptors ---- */

typedef struct pipe_ctx {
    int rfd, wfd;
    char got[64];
    size_t ngot;
    int eof;
    int writable;
} pipe_ctx_t;

static void on_pipe_read(loop_t *loop, int fd, unsigned events, void *arg)
{
    pipe_ctx_t *c = arg;
    assert_true(events & LOOP_READ);
    char tmp[64];
    ssize_t n = read(fd, tmp, sizeof(tmp));
    if (n > 0) {
        memcpy(c->got + c->ngot, tmp, (size_t)n);
        c->ngot += (size_t)n;
        if (c->ngot >= 5)
            close(c->wfd); /* the peer hangs up */
        return;
    }
    if (n == 0) {
        c->eof = 1;
        loop_fd_remove(loop, fd);
        loop_stop(loop);
    }
}

static void on_pipe_write(loop_t *loop, int fd, unsigned events, void *arg)
{
    pipe_ctx_t *c = arg;
    assert_true(events & LOOP_WRITE);
    c->writable++;
    assert_int_equal(write(fd, "hello", 5), 5);
    /* written once: stop asking for writability */
    assert_int_equal(loop_fd_modify(loop, fd, 0), 0);
}

static void test_fd_readiness(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    int p[2];
    assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    pipe_ctx_t c = {.rfd = p[0], .wfd = p[1]};
    assert_int_equal(loop_fd_add(loop, p[0], LOOP_READ, on_pipe_read, &c), 0);
    assert_int_equal(loop_fd_add(loop, p[1], LOOP_WRITE, on_pipe_write, &c), 0);
    /* adding the same fd twice fails */
    assert_int_equal(loop_fd_add(loop, p[0], LOOP_READ, on_pipe_read, &c), -1);
    /* modify of an fd that is not watched fails */
    assert_int_equal(loop_fd_modify(loop, 999, LOOP_READ), -1);
    assert_int_equal(loop_fd_add(loop, -1, LOOP_READ, on_pipe_read, &c), -1);
    int timed_out;
    run_with_guard(loop, 2000, &timed_out);
    assert_false(timed_out);
    assert_int_equal(c.writable, 1);
    assert_int_equal(c.ngot, 5);
    assert_memory_equal(c.got, "hello", 5);
    assert_true(c.eof);
    loop_fd_remove(loop, p[1]); /* already closed; removing is harmless */
    close(p[0]);
    loop_destroy(&loop);
}

/*
 * Two fds readable in one turn. Whichever handler runs first removes and
 * closes the other, and a new pipe takes over its fd number with a new
 * handler: the event already fetched for the old fd must not reach it.
 */
typedef struct swap_ctx {
    int a0, b0;
    int swapped;
    int replaced_fd;
    int newp[2];
    int first_calls;
    int victim_calls;
} swap_ctx_t;

static void on_victim(loop_t *loop, int fd, unsigned events, void *arg)
{
    (void)loop;
    (void)fd;
    (void)events;
    ((swap_ctx_t *)arg)->victim_calls++;
}

static void on_first(loop_t *loop, int fd, unsigned events, void *arg)
{
    (void)events;
    swap_ctx_t *c = arg;
    c->first_calls++;
    if (c->swapped)
        return;
    c->swapped = 1;
    int other = fd == c->a0 ? c->b0 : c->a0;
    loop_fd_remove(loop, other);
    close(other);
    assert_int_equal(pipe2(c->newp, O_NONBLOCK | O_CLOEXEC), 0);
    c->replaced_fd = other;
    assert_int_equal(loop_fd_add(loop, c->newp[0], LOOP_READ, on_victim, c), 0);
}

static void on_stop_timer(loop_t *loop, void *arg)
{
    (void)arg;
    loop_stop(loop);
}

static void test_fd_removed_in_same_turn(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    int a[2], b[2];
    assert_int_equal(pipe2(a, O_NONBLOCK | O_CLOEXEC), 0);
    assert_int_equal(pipe2(b, O_NONBLOCK | O_CLOEXEC), 0);
    assert_int_equal(write(a[1], "a", 1), 1);
    assert_int_equal(write(b[1], "b", 1), 1);
    swap_ctx_t c = {.a0 = a[0], .b0 = b[0]};
    assert_int_equal(loop_fd_add(loop, a[0], LOOP_READ, on_first, &c), 0);
    assert_int_equal(loop_fd_add(loop, b[0], LOOP_READ, on_first, &c), 0);
    loop_timer_t stop;
    loop_timer_init(&stop, on_stop_timer, NULL);
    loop_timer_start(loop, &stop, 50);
    assert_int_equal(loop_run(loop), 0);
    assert_true(c.swapped);
    /* the new pipe really took the old number, and is empty: nothing may call it */
    assert_int_equal(c.newp[0], c.replaced_fd);
    assert_int_equal(c.victim_calls, 0);
    assert_true(c.first_calls > 1); /* the survivor stays readable every turn */

    int survivor = c.replaced_fd == a[0] ? b[0] : a[0];
    loop_fd_remove(loop, survivor);
    loop_fd_remove(loop, c.newp[0]);
    close(survivor);
    close(c.newp[0]);
    close(c.newp[1]);
    close(a[1]);
    close(b[1]);
    loop_destroy(&loop);
}

/*
 * An fd number reused for a very long time: each add bumps the slot's
 * generation, which rides in the upper half of the epoll data next to the
 * loop's own tags. Half a billion reconnections on one fd number must not
 * turn its events into a signal or a ZeroMQ wake-up. Takes minutes: only
 * with SENDARIX_SLOW_TESTS set.
 */
static void on_read_once(loop_t *loop, int fd, unsigned events, void *arg)
{
    (void)fd;
    (void)events;
    (*(int *)arg)++;
    loop_stop(loop);
}

static void test_fd_generation_wraps(void **state)
{
    (void)state;
    const char *slow = getenv("SENDARIX_SLOW_TESTS");
    if (slow == NULL || *slow == '\0')
        skip();
    loop_t *loop = loop_new();
    int p[2];
    assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    int calls = 0;
    for (uint32_t i = 0; i < (1u << 29); i++) {
        assert_int_equal(loop_fd_add(loop, p[0], LOOP_READ, on_read_once, &calls), 0);
        loop_fd_remove(loop, p[0]);
    }
    assert_int_equal(write(p[1], "x", 1), 1);
    assert_int_equal(loop_fd_add(loop, p[0], LOOP_READ, on_read_once, &calls), 0);
    int timed_out;
    run_with_guard(loop, 1000, &timed_out);
    assert_false(timed_out);
    assert_int_equal(calls, 1);
    loop_fd_remove(loop, p[0]);
    close(p[0]);
    close(p[1]);
    loop_destroy(&loop);
}

/* ---- signals ---- */

typedef struct sig_ctx {
    int usr1, usr2;
} sig_ctx_t;

static void on_signal(loop_t *loop, int signo, void *arg)
{
    sig_ctx_t *s = arg;
    if (signo == SIGUSR1)
        s->usr1++;
    else if (signo == SIGUSR2)
        s->usr2++;
    if (s->usr1 && s->usr2)
        loop_stop(loop);
}

static void raise_both(loop_t *loop, void *arg)
{
    (void)loop;
    (void)arg;
    raise(SIGUSR1);
    raise(SIGUSR2);
}

static void test_signals(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    sig_ctx_t s = {0};
    assert_int_equal(loop_signal_add(loop, SIGUSR1, on_signal, &s), 0);
    assert_int_equal(loop_signal_add(loop, SIGUSR2, on_signal, &s), 0);
    loop_timer_t t;
    loop_timer_init(&t, raise_both, NULL);
    loop_timer_start(loop, &t, 5);
    int timed_out;
    run_with_guard(loop, 2000, &timed_out);
    assert_false(timed_out);
    /* delivered through the loop, not an async handler that would kill us */
    assert_int_equal(s.usr1, 1);
    assert_int_equal(s.usr2, 1);
    loop_destroy(&loop);
}

/* ---- ZeroMQ sockets ---- */

typedef struct zctx {
    int received;
    int want;
    int last;
    int in_order;
    int calls;
} zctx_t;

static int on_zmq(loop_t *loop, void *sock, void *arg)
{
    zctx_t *z = arg;
    z->calls++;
    int v;
    int n = zmq_recv(sock, &v, sizeof(v), ZMQ_DONTWAIT);
    if (n < 0)
        return 0;
    if (n != (int)sizeof(v))
        return 1;
    if (v != z->last + 1)
        z->in_order = 0;
    z->last = v;
    if (++z->received == z->want)
        loop_stop(loop);
    return 1;
}

typedef struct zsend {
    void *sock;
    int next, total;
    loop_timer_t t;
} zsend_t;

/* Send in bursts from a timer, so messages also arrive while the loop sleeps. */
static void on_zsend(loop_t *loop, void *arg)
{
    zsend_t *s = arg;
    for (int i = 0; i < 150 && s->next < s->total; i++) {
        int v = ++s->next;
        assert_int_equal(zmq_send(s->sock, &v, sizeof(v), 0), (int)sizeof(v));
    }
    if (s->next < s->total)
        loop_timer_start(loop, &s->t, 3);
}

static void test_zmq_readiness(void **state)
{
    (void)state;
    void *ctx = zmq_ctx_new();
    void *pull = zmq_socket(ctx, ZMQ_PULL);
    void *push = zmq_socket(ctx, ZMQ_PUSH);
    int zero = 0;
    zmq_setsockopt(pull, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(push, ZMQ_LINGER, &zero, sizeof(zero));
    assert_int_equal(zmq_bind(pull, "inproc://loop-test"), 0);
    assert_int_equal(zmq_connect(push, "inproc://loop-test"), 0);

    loop_t *loop = loop_new();
    zctx_t z = {.want = 1000, .in_order = 1};
    assert_int_equal(loop_zmq_add(loop, pull, on_zmq, &z), 0);
    zsend_t s = {.sock = push, .total = 1000};
    loop_timer_init(&s.t, on_zsend, &s);
    loop_timer_start(loop, &s.t, 10);
    int timed_out;
    run_with_guard(loop, 5000, &timed_out);
    assert_false(timed_out);
    assert_int_equal(z.received, 1000);
    assert_true(z.in_order);

    /* after removal the handler is not called, though a message waits */
    loop_zmq_remove(loop, pull);
    int calls = z.calls;
    int v = 5000;
    assert_int_equal(zmq_send(push, &v, sizeof(v), 0), (int)sizeof(v));
    loop_timer_t stop;
    loop_timer_init(&stop, on_stop_timer, NULL);
    loop_timer_start(loop, &stop, 30);
    assert_int_equal(loop_run(loop), 0);
    assert_int_equal(z.calls, calls);

    loop_destroy(&loop);
    zmq_close(pull);
    zmq_close(push);
    zmq_ctx_term(ctx);
}

static void test_now_advances(void **state)
{
    (void)state;
    loop_t *loop = loop_new();
    uint64_t before = loop_now(loop);
    loop_timer_t stop;
    loop_timer_init(&stop, on_stop_timer, NULL);
    loop_timer_start(loop, &stop, 20);
    assert_int_equal(loop_run(loop), 0);
    assert_true(loop_now(loop) >= before + 20);
    assert_true(loop_now(loop) <= clock_mono_ms());
    loop_destroy(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timers_fire_in_order),
        cmocka_unit_test(test_timer_stop_restart),
        cmocka_unit_test(test_zero_delay_from_handler_runs_next_turn),
        cmocka_unit_test(test_many_timers_random),
        cmocka_unit_test(test_fd_readiness),
        cmocka_unit_test(test_fd_removed_in_same_turn),
        cmocka_unit_test(test_fd_generation_wraps),
        cmocka_unit_test(test_signals),
        cmocka_unit_test(test_zmq_readiness),
        cmocka_unit_test(test_now_advances),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
