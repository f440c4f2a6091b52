/*
 * auth_guard: one auth_table of counters, keyed "c <client>" and
 * "u <username>". Each counter keeps the times of its recent failures in a
 * ring as long as the limit, so the window slides exactly: a failure
 * older than the window drops out when the next one arrives.
 */
#include "auth_guard.h"
#include "auth_table.h"
#include "core/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GUARD_KEY_MAX (AUTH_TABLE_KEY_MAX + 1)

typedef struct guard_entry {
    uint64_t locked_until; /* 0: not locked */
    uint32_t n;            /* failures in the ring */
    uint32_t head;         /* index of the oldest */
    uint64_t times[];      /* conf.failures slots */
} guard_entry_t;

struct auth_guard {
    auth_guard_conf_t conf;
    auth_table_t *table; /* NULL: lockouts off */
    uint64_t lockouts;
    uint64_t refused;
};

auth_guard_t *auth_guard_new(const auth_guard_conf_t *conf)
{
    auth_guard_t *g = xcalloc(1, sizeof(*g));
    g->conf = *conf;
    if (g->conf.failures > AUTH_LOCKOUT_FAILURES_MAX)
        g->conf.failures = AUTH_LOCKOUT_FAILURES_MAX;
    if (g->conf.failures == 0 || g->conf.max_entries == 0)
        return g;
    g->table = auth_table_new(g->conf.max_entries,
                              sizeof(guard_entry_t) + g->conf.failures * sizeof(uint64_t));
    if (g->table == NULL)
        auth_guard_destroy(&g);
    return g;
}

void auth_guard_destroy(auth_guard_t **p)
{
    auth_guard_t *g = *p;
    if (g == NULL)
        return;
    auth_table_destroy(&g->table);
    free(g);
    *p = NULL;
}

static int make_key(char *out, char kind, const char *name)
{
    int n = snprintf(out, GUARD_KEY_MAX, "%c %s", kind, name);
    return n > 0 && n < GUARD_KEY_MAX ? 0 : -1;
}

/* Seconds left on e's lockout, rounded up; a lockout that has ended resets e. */
static uint32_t entry_locked(guard_entry_t *e, uint64_t now_ms)
{
    if (e->locked_until == 0)
        return 0;
    if (e->locked_until <= now_ms) {
        e->locked_until = 0;
        e->n = 0;
        e->head = 0;
        return 0;
    }
    uint64_t s = (e->locked_until - now_ms + 999) / 1000;
    return s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

static uint32_t key_locked(auth_guard_t *g, char kind, const char *name, uint64_t now_ms)
{
    char key[GUARD_KEY_MAX];
    if (name == NULL || *name == '\0' || make_key(key, kind, name) < 0)
        return 0;
    guard_entry_t *e = auth_table_find(g->table, key);
    return e ? entry_locked(e, now_ms) : 0;
}

uint32_t auth_guard_locked(auth_guard_t *g, const char *client, const char *user, uint64_t now_ms,
                           auth_guard_kind_t *which)
{
    *which = AUTH_GUARD_NONE;
    if (g->table == NULL)
        return 0;
    uint32_t c = key_locked(g, 'c', client, now_ms);
    uint32_t u = key_locked(g, 'u', user, now_ms);
    if (c == 0 && u == 0)
        return 0;
    g->refused++;
    *which = c >= u ? AUTH_GUARD_CLIENT : AUTH_GUARD_USER;
    return c >= u ? c : u;
}

/* Count a failure on one key; 1 when it starts a lockout. */
static int key_failure(auth_guard_t *g, char kind, const char *name, uint64_t now_ms)
{
    char key[GUARD_KEY_MAX];
    if (name == NULL || *name == '\0' || make_key(key, kind, name) < 0)
        return 0;
    guard_entry_t *e = auth_table_touch(g->table, key, NULL);
    if (e == NULL || entry_locked(e, now_ms) > 0)
        return 0;
    uint32_t cap = g->conf.failures;
    uint64_t horizon = now_ms > g->conf.window_ms ? now_ms - g->conf.window_ms : 0;
    while (e->n > 0 && e->times[e->head] <= horizon) {
        e->head = (e->head + 1) % cap;
        e->n--;
    }
    e->times[(e->head + e->n) % cap] = now_ms;
    e->n++;
    if (e->n < cap)
        return 0;
    e->locked_until = now_ms + g->conf.duration_ms;
    e->n = 0;
    e->head = 0;
    g->lockouts++;
    return 1;
}

unsigned auth_guard_failure(auth_guard_t *g, const char *client, const char *user, uint64_t now_ms)
{
    if (g->table == NULL)
        return AUTH_GUARD_NONE;
    unsigned began = AUTH_GUARD_NONE;
    if (key_failure(g, 'c', client, now_ms))
        began |= AUTH_GUARD_CLIENT;
    if (key_failure(g, 'u', user, now_ms))
        began |= AUTH_GUARD_USER;
    return began;
}

void auth_guard_success(auth_guard_t *g, const char *user)
{
    char key[GUARD_KEY_MAX];
    if (g->table == NULL || user == NULL || *user == '\0' || make_key(key, 'u', user) < 0)
        return;
    auth_table_remove(g->table, key);
}

void auth_guard_stats(const auth_guard_t *g, auth_guard_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    out->lockouts = g->lockouts;
    out->refused = g->refused;
    if (g->table) {
        out->entries = auth_table_count(g->table);
        out->evictions = auth_table_evictions(g->table);
    }
}
