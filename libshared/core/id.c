/*
 * id: time-ordered random identifiers.
 */
#include "id.h"
#include "clock.h"

#include <string.h>
#include <sys/random.h>

static const char id_alphabet[] = "0123456789abcdefghijklmnopqrstuv";

uint64_t id_random64(void)
{
    uint64_t v = 0;
    size_t got = 0;
    while (got < sizeof(v)) {
        ssize_t n = getrandom((char *)&v + got, sizeof(v) - got, 0);
        if (n > 0)
            got += (size_t)n;
    }
    return v;
}

void id_new(char out[ID_BUF_SIZE])
{
    /* ids made by one process in the same millisecond count up from the
     * first one's random bits, so they sort in the order they were made
     * (events of one step are listed in the order they happened) */
    static uint64_t last_ms, last_rnd;
    uint64_t ms = clock_wall_ms() & ((1ull << 48) - 1);
    uint64_t rnd;
    if (ms <= last_ms && last_rnd + 1 < (1ull << 52)) {
        ms = last_ms;
        rnd = last_rnd + 1;
    } else {
        rnd = id_random64() & ((1ull << 52) - 1);
    }
    last_ms = ms;
    last_rnd = rnd;
    /* 100 bits = 20 base32 digits of 50 bits each half: the first half is the
     * 48 time bits and the top 2 random bits, the second the other 50. */
    uint64_t hi = (ms << 2) | (rnd >> 50);
    uint64_t lo = rnd & ((1ull << 50) - 1);
    for (int i = 9; i >= 0; i--) {
        out[i] = id_alphabet[hi & 31];
        hi >>= 5;
    }
    for (int i = 19; i >= 10; i--) {
        out[i] = id_alphabet[lo & 31];
        lo >>= 5;
    }
    out[ID_LEN] = '\0';
}

void id_session(char out[17])
{
    static const char hex[] = "0123456789abcdef";
    uint64_t v = id_random64();
    for (int i = 15; i >= 0; i--) {
        out[i] = hex[v & 15];
        v >>= 4;
    }
    out[16] = '\0';
}

int id_valid(const char *s)
{
    if (s == NULL || strlen(s) != ID_LEN)
        return 0;
    for (size_t i = 0; i < ID_LEN; i++)
        if (strchr(id_alphabet, s[i]) == NULL || s[i] == '\0')
            return 0;
    return 1;
}
