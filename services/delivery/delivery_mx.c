/*
 * delivery_mx: MX order, null MX, address classes, name patterns.
 */
#include "delivery_mx.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

uint64_t mx_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void mx_order(mx_host_t *mx, size_t n, uint64_t *rand_state)
{
    /* insertion sort by preference: n is small and the sort must be stable */
    for (size_t i = 1; i < n; i++) {
        mx_host_t h = mx[i];
        size_t j = i;
        while (j > 0 && mx[j - 1].pref > h.pref) {
            mx[j] = mx[j - 1];
            j--;
        }
        mx[j] = h;
    }
    /* Fisher-Yates within each run of equal preference */
    for (size_t start = 0; start < n;) {
        size_t end = start + 1;
        while (end < n && mx[end].pref == mx[start].pref)
            end++;
        for (size_t i = end - 1; i > start; i--) {
            size_t k = start + (size_t)(mx_rand(rand_state) % (uint64_t)(i - start + 1));
            if (k != i) {
                mx_host_t tmp = mx[i];
                mx[i] = mx[k];
                mx[k] = tmp;
            }
        }
        start = end;
    }
}

int mx_is_null(const mx_host_t *mx, size_t n)
{
    return n == 1 && mx[0].name[0] == '\0';
}

size_t mx_drop_null(mx_host_t *mx, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (mx[i].name[0] != '\0')
            mx[k++] = mx[i];
    return k;
}

int mx_host_set(mx_host_t *h, const char *name, unsigned pref)
{
    size_t len = strlen(name);
    if (len > 0 && name[len - 1] == '.')
        len--;
    if (len >= sizeof(h->name))
        return -1;
    for (size_t i = 0; i < len; i++)
        h->name[i] = (char)tolower((unsigned char)name[i]);
    h->name[len] = '\0';
    h->pref = pref;
    return 0;
}

static addr_class_t class_v4(const unsigned char *b)
{
    if (b[0] == 0)
        return ADDR_UNSPECIFIED;
    if (b[0] == 127)
        return ADDR_LOOPBACK;
    if (b[0] == 10 || (b[0] == 172 && (b[1] & 0xf0) == 16) || (b[0] == 192 && b[1] == 168))
        return ADDR_PRIVATE;
    if (b[0] == 169 && b[1] == 254)
        return ADDR_LINK_LOCAL;
    if ((b[0] & 0xf0) == 224)
        return ADDR_MULTICAST;
    if ((b[0] & 0xf0) == 240)
        return ADDR_RESERVED;
    return ADDR_PUBLIC;
}

addr_class_t mx_addr_class(const sock_addr_t *a)
{
    const struct sockaddr *sa = (const struct sockaddr *)&a->ss;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)sa;
        return class_v4((const unsigned char *)&in4->sin_addr.s_addr);
    }
    if (sa->sa_family != AF_INET6)
        return ADDR_UNSPECIFIED;
    const unsigned char *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(b, mapped, 12) == 0)
        return class_v4(b + 12);
    int zero = 1;
    for (int i = 0; i < 15; i++)
        zero &= b[i] == 0;
    if (zero && b[15] == 0)
        return ADDR_UNSPECIFIED;
    if (zero && b[15] == 1)
        return ADDR_LOOPBACK;
    if ((b[0] & 0xfe) == 0xfc || (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0))
        return ADDR_PRIVATE;
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
        return ADDR_LINK_LOCAL;
    if (b[0] == 0xff)
        return ADDR_MULTICAST;
    return ADDR_PUBLIC;
}

const char *mx_addr_class_name(addr_class_t c)
{
    switch (c) {
    case ADDR_PUBLIC:
        return "public";
    case ADDR_UNSPECIFIED:
        return "unspecified";
    case ADDR_LOOPBACK:
        return "loopback";
    case ADDR_PRIVATE:
        return "private";
    case ADDR_LINK_LOCAL:
        return "link-local";
    case ADDR_MULTICAST:
        return "multicast";
    case ADDR_RESERVED:
        return "reserved";
    }
    return "unknown";
}

/* Length of name without one trailing dot. */
static size_t bare_len(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && s[n - 1] == '.' ? n - 1 : n;
}

int mx_pattern_matches(const char *pattern, const char *name)
{
    if (pattern == NULL || name == NULL)
        return 0;
    size_t pl = bare_len(pattern), nl = bare_len(name);
    if (pl == 0 || nl == 0)
        return 0;
    if (pl > 2 && pattern[0] == '*' && pattern[1] == '.') {
        /* ".example.com" must end the name, with at least one label before it */
        size_t sl = pl - 1;
        return nl > sl && strncasecmp(name + nl - sl, pattern + 1, sl) == 0;
    }
    return pl == nl && strncasecmp(pattern, name, pl) == 0;
}
