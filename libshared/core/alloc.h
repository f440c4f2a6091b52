/*
 * alloc: allocation that never returns NULL. Running out of memory is not a
 * condition a mail relay can reason about mid-transaction, so these abort
 * with a log line, as Postfix's mymalloc does. Not for sizes that come from
 * the network unchecked: callers bound those first.
 */
#ifndef SX_ALLOC_H
#define SX_ALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t n);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
void *xmemdup(const void *p, size_t n);

/* Bytes the allocator holds for live allocations: the heap alone, apart
 * from the LMDB maps and libraries that a process's RSS also counts; 0
 * where the allocator does not say. */
size_t sx_heap_in_use(void);

/* Bounded copy that always terminates dst; returns strlen(src). */
size_t sx_strlcpy(char *dst, const char *src, size_t size);

#endif
