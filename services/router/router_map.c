/*
 * router_map: chained hash table with FNV-1a, doubling past 3/4 full.
 */
#include "router_map.h"
#include "core/alloc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    char *key;
    void *value;
    struct entry *next;
} entry_t;

struct rmap {
    entry_t **b;
    size_t nb;
    size_t n;
};

static size_t hash(const char *s, size_t nb)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return (size_t)(h % nb);
}

rmap_t *rmap_new(void)
{
    rmap_t *m = xcalloc(1, sizeof(*m));
    m->nb = 64;
    m->b = xcalloc(m->nb, sizeof(*m->b));
    return m;
}

void rmap_destroy(rmap_t **p, void (*free_value)(void *value))
{
    rmap_t *m = *p;
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->nb; i++) {
        for (entry_t *e = m->b[i]; e;) {
            entry_t *next = e->next;
            if (free_value)
                free_value(e->value);
            free(e->key);
            free(e);
            e = next;
        }
    }
    free(m->b);
    free(m);
    *p = NULL;
}

static entry_t **find(const rmap_t *m, const char *key)
{
    entry_t **link = &m->b[hash(key, m->nb)];
    while (*link && strcmp((*link)->key, key) != 0)
        link = &(*link)->next;
    return link;
}

void *rmap_get(const rmap_t *m, const char *key)
{
    entry_t *e = *find(m, key);
    return e ? e->value : NULL;
}

static void grow(rmap_t *m)
{
    size_t nb = m->nb * 2;
    entry_t **b = xcalloc(nb, sizeof(*b));
    for (size_t i = 0; i < m->nb; i++) {
        for (entry_t *e = m->b[i]; e;) {
            entry_t *next = e->next;
            size_t h = hash(e->key, nb);
            e->next = b[h];
            b[h] = e;
            e = next;
        }
    }
    free(m->b);
    m->b = b;
    m->nb = nb;
}

void *rmap_put(rmap_t *m, const char *key, void *value)
{
    entry_t **link = find(m, key);
    if (*link) {
        void *old = (*link)->value;
        (*link)->value = value;
        return old;
    }
    entry_t *e = xcalloc(1, sizeof(*e));
    e->key = xstrdup(key);
    e->value = value;
    *link = e;
    if (++m->n > m->nb / 4 * 3)
        grow(m);
    return NULL;
}

void *rmap_del(rmap_t *m, const char *key)
{
    entry_t **link = find(m, key);
    entry_t *e = *link;
    if (e == NULL)
        return NULL;
    *link = e->next;
    void *v = e->value;
    free(e->key);
    free(e);
    m->n--;
    return v;
}

size_t rmap_count(const rmap_t *m)
{
    return m->n;
}

void rmap_each(rmap_t *m, int (*fn)(const char *key, void *value, void *arg), void *arg)
{
    for (size_t i = 0; i < m->nb; i++) {
        entry_t **link = &m->b[i];
        while (*link) {
            entry_t *e = *link;
            if (fn(e->key, e->value, arg)) {
                *link = e->next;
                free(e->key);
                free(e);
                m->n--;
            } else {
                link = &e->next;
            }
        }
    }
}
