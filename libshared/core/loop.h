/*
 * loop: the event loop every service runs. It waits on network sockets
 * (epoll), ZeroMQ sockets (through their ZMQ_FD, checked with ZMQ_EVENTS
 * every turn), timers (a binary heap) and signals (signalfd), and calls one
 * handler at a time. Single-threaded: handlers must not block.
 *
 * Timers and signal watches are structs the caller embeds in its own
 * objects, so there is no allocation per timer and no dangling handle:
 * stopping an inactive timer is a no-op.
 */
#ifndef SX_LOOP_H
#define SX_LOOP_H

#include <stddef.h>
#include <stdint.h>

typedef struct loop loop_t;

#define LOOP_READ  1u
#define LOOP_WRITE 2u
#define LOOP_ERROR 4u /* hang-up or error, reported with READ */

typedef void (*loop_fd_fn)(loop_t *loop, int fd, unsigned events, void *arg);
/* Receives at most one message (ZMQ_DONTWAIT): 1 when one was taken, even if
 * it was malformed and dropped; 0 when there was nothing to read. */
typedef int (*loop_zmq_fn)(loop_t *loop, void *socket, void *arg);
typedef void (*loop_timer_fn)(loop_t *loop, void *arg);
typedef void (*loop_signal_fn)(loop_t *loop, int signo, void *arg);

typedef struct loop_timer {
    uint64_t when;      /* monotonic ms */
    size_t heap_index;  /* position in the heap; SIZE_MAX when stopped */
    uint64_t seq;       /* ties broken by start order */
    loop_timer_fn fn;
    void *arg;
} loop_timer_t;

loop_t *loop_new(void);
void loop_destroy(loop_t **loop);

/* Run until loop_stop(); returns 0, or -1 if the loop itself failed. */
int loop_run(loop_t *loop);
void loop_stop(loop_t *loop);

/* Cached monotonic milliseconds, refreshed each turn. */
uint64_t loop_now(loop_t *loop);

int loop_fd_add(loop_t *loop, int fd, unsigned events, loop_fd_fn fn, void *arg);
int loop_fd_modify(loop_t *loop, int fd, unsigned events);
void loop_fd_remove(loop_t *loop, int fd);

/* Call fn until it finds nothing to read whenever socket may have messages. */
int loop_zmq_add(loop_t *loop, void *socket, loop_zmq_fn fn, void *arg);
void loop_zmq_remove(loop_t *loop, void *socket);
/* Call after sending on a registered socket: a send may consume the wake-up
 * of a message that arrived meanwhile, so the loop must look at it again. */
void loop_zmq_touch(loop_t *loop, void *socket);

void loop_timer_init(loop_timer_t *t, loop_timer_fn fn, void *arg);
/* (Re)start a one-shot timer delay_ms from now; 0 runs it this turn, after I/O. */
void loop_timer_start(loop_t *loop, loop_timer_t *t, uint64_t delay_ms);
void loop_timer_stop(loop_t *loop, loop_timer_t *t);
static inline int loop_timer_active(const loop_timer_t *t)
{
    return t->heap_index != (size_t)-1;
}

/* Deliver signo to fn through the loop instead of an async handler. */
int loop_signal_add(loop_t *loop, int signo, loop_signal_fn fn, void *arg);

#endif
