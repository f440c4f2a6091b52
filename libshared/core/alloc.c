/*
 * alloc: abort-on-failure allocation wrappers and a bounded string copy.
 */
#include "alloc.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* built with AddressSanitizer: GCC says so with a macro, clang with a feature */
#if defined(__SANITIZE_ADDRESS__)
#define SX_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SX_ASAN 1
#endif
#endif
#if defined(SX_ASAN)
/* the sanitizer runtime's (sanitizer/allocator_interface.h, which not every compiler ships) */
size_t __sanitizer_get_current_allocated_bytes(void);
#elif defined(__GLIBC__)
#include <malloc.h>
#endif

static void alloc_fail(size_t n)
{
    log_flush(); /* the lines held before it come first */
    fprintf(stderr, "level=fatal event=out_of_memory bytes=%zu\n", n);
    abort();
}

size_t sx_heap_in_use(void)
{
#if defined(SX_ASAN)
    /* the sanitizer's allocator replaces glibc's, which would say nothing */
    return __sanitizer_get_current_allocated_bytes();
#elif defined(__GLIBC__) && __GLIBC_PREREQ(2, 33)
    struct mallinfo2 mi = mallinfo2(); /* every arena: the I/O threads' too */
    return mi.uordblks + mi.hblkhd;
#else
    return 0;
#endif
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        alloc_fail(n);
    return p;
}

void *xcalloc(size_t count, size_t n)
{
    void *p = calloc(count ? count : 1, n ? n : 1);
    if (p == NULL)
        alloc_fail(count * n);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        alloc_fail(n);
    return q;
}

char *xstrdup(const char *s)
{
    return xmemdup(s, strlen(s) + 1);
}

char *xstrndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *p = xmalloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

void *xmemdup(const void *p, size_t n)
{
    void *q = xmalloc(n);
    if (n)
        memcpy(q, p, n);
    return q;
}

size_t sx_strlcpy(char *dst, const char *src, size_t size)
{
    if (src == NULL)
        src = ""; /* an absent value copies as empty, never as a crash */
    size_t len = strlen(src);
    if (size) {
        size_t n = len < size - 1 ? len : size - 1;
        memcpy(dst, src, n);
        dst[n] = '\0';
    }
    return len;
}
