/*
 * delivery_pool: a list of idle connections, most recently kept first, each
 * with its own idle timer. Lookups scan the list: it is bounded and small.
 */
#include "delivery_pool.h"
#include "core/alloc.h"

#include <stdlib.h>
#include <string.h>

typedef struct pool_entry {
    pool_t *pool;
    char *key;
    void *conn;
    unsigned used;
    loop_timer_t idle;
    struct pool_entry *prev, *next;
} pool_entry_t;

struct pool {
    loop_t *loop;
    size_t max;
    pool_close_fn close_fn;
    void *arg;
    pool_entry_t *head, *tail; /* head: kept last */
    size_t count;
    uint64_t reused;
};

pool_t *pool_new(loop_t *loop, size_t max, pool_close_fn close_fn, void *arg)
{
    pool_t *p = xcalloc(1, sizeof(*p));
    p->loop = loop;
    p->max = max;
    p->close_fn = close_fn;
    p->arg = arg;
    return p;
}

static void entry_unlink(pool_t *p, pool_entry_t *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        p->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        p->tail = e->prev;
    p->count--;
    loop_timer_stop(p->loop, &e->idle);
}

/* Take e out and free it; the connection is returned (not closed). */
static void *entry_remove(pool_t *p, pool_entry_t *e)
{
    void *conn = e->conn;
    entry_unlink(p, e);
    free(e->key);
    free(e);
    return conn;
}

static void close_entry(pool_t *p, pool_entry_t *e, const char *why)
{
    void *conn = entry_remove(p, e);
    if (p->close_fn)
        p->close_fn(conn, why, p->arg);
}

void pool_destroy(pool_t **pp)
{
    pool_t *p = *pp;
    if (p == NULL)
        return;
    *pp = NULL;
    while (p->head)
        close_entry(p, p->head, "shutdown");
    free(p);
}

static void on_idle(loop_t *loop, void *arg)
{
    pool_entry_t *e = arg;
    (void)loop;
    close_entry(e->pool, e, "idle");
}

int pool_put(pool_t *p, const char *key, void *conn, unsigned used, unsigned max_uses,
             uint64_t idle_ms)
{
    if (max_uses <= 1 || used >= max_uses || idle_ms == 0 || p->max == 0 ||
        strlen(key) > POOL_KEY_MAX)
        return 0;
    if (p->count >= p->max)
        close_entry(p, p->tail, "pool_full");
    pool_entry_t *e = xcalloc(1, sizeof(*e));
    e->pool = p;
    e->key = xstrdup(key);
    e->conn = conn;
    e->used = used;
    loop_timer_init(&e->idle, on_idle, e);
    loop_timer_start(p->loop, &e->idle, idle_ms);
    e->next = p->head;
    if (p->head)
        p->head->prev = e;
    else
        p->tail = e;
    p->head = e;
    p->count++;
    return 1;
}

void *pool_take(pool_t *p, const char *key, unsigned *used)
{
    for (pool_entry_t *e = p->head; e; e = e->next) {
        if (strcmp(e->key, key) == 0) {
            if (used)
                *used = e->used;
            p->reused++;
            return entry_remove(p, e);
        }
    }
    return NULL;
}

int pool_has(const pool_t *p, const char *key)
{
    for (const pool_entry_t *e = p->head; e; e = e->next)
        if (strcmp(e->key, key) == 0)
            return 1;
    return 0;
}

int pool_forget(pool_t *p, void *conn)
{
    for (pool_entry_t *e = p->head; e; e = e->next) {
        if (e->conn == conn) {
            entry_remove(p, e);
            return 1;
        }
    }
    return 0;
}

size_t pool_count(const pool_t *p)
{
    return p->count;
}

uint64_t pool_reused_total(const pool_t *p)
{
    return p->reused;
}
