/*
 * auth_table: a bounded in-memory table from short text keys (client
 * addresses, usernames, tenant names) to fixed-size values, with an age
 * list so that at the size limit the least recently touched entry makes
 * room. Keys may come from clients, so buckets are picked with a keyed
 * hash (HMAC-SHA256, random key per table): nobody can aim many keys at
 * one bucket.
 * Values are zeroed when created and live inside the entry. Loop thread
 * only; no timers: callers pass no time here and keep their own in the
 * values. Used by the lockout counters and the rate limiter.
 */
#ifndef SX_AUTH_TABLE_H
#define SX_AUTH_TABLE_H

#include <stddef.h>
#include <stdint.h>

#define AUTH_TABLE_KEY_MAX 200 /* longest key, bytes */

typedef struct auth_table auth_table_t;

/* max >= 1 entries of value_size bytes each. NULL when max is 0 or OpenSSL fails. */
auth_table_t *auth_table_new(size_t max, size_t value_size);
void auth_table_destroy(auth_table_t **t);

/* The value of key, or NULL; does not change its age. */
void *auth_table_find(auth_table_t *t, const char *key);
/*
 * The value of key, created (zeroed, *created = 1) when absent, evicting
 * the oldest entry when the table is full; key becomes the newest. NULL
 * when the key is longer than AUTH_TABLE_KEY_MAX.
 */
void *auth_table_touch(auth_table_t *t, const char *key, int *created);
void auth_table_remove(auth_table_t *t, const char *key);

/* Visit every entry, oldest first; fn returns 1 to remove the entry it was given. */
typedef int (*auth_table_each_fn)(const char *key, void *value, void *arg);
void auth_table_each(auth_table_t *t, auth_table_each_fn fn, void *arg);

size_t auth_table_count(const auth_table_t *t);
uint64_t auth_table_evictions(const auth_table_t *t);

#endif
