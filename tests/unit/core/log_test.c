/*
 * log_test: log_quote (plain values, spaces, quotes, backslashes, control
 * and high bytes, truncation that never cuts an escape and never overruns),
 * level names, and the shape of a written line (its UTC time included).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <ctype.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

static void test_quote_cases(void **state)
{
    (void)state;
    static const struct {
        const char *src;
        size_t len;
        const char *want;
    } cases[] = {
        {"plain", 5, "plain"},
        {"a.b-c_d:e/f@g", 13, "a.b-c_d:e/f@g"},
        {"", 0, "\"\""},
        {"two words", 9, "\"two words\""},
        {"say \"hi\"", 8, "\"say \\\"hi\\\"\""},
        {"back\\slash", 10, "\"back\\\\slash\""},
        {"k=v", 3, "\"k=v\""},
        {"line\r\nnext", 10, "\"line\\x0d\\x0anext\""},
        {"tab\there", 8, "\"tab\\x09here\""},
        {"del\x7f", 4, "\"del\\x7f\""},
        {"caf\xc3\xa9", 5, "\"caf\\xc3\\xa9\""},
        {"nul\0byte", 8, "\"nul\\x00byte\""},
        {"x", 1, "x"},
        {"only the length counts", 4, "only"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[256];
        memset(out, 'Z', sizeof(out));
        const char *r = log_quote(out, sizeof(out), cases[i].src, cases[i].len);
        assert_ptr_equal(r, out);
        if (strcmp(out, cases[i].want) != 0)
            fail_msg("case %zu: got [%s], want [%s]", i, out, cases[i].want);
    }
}

/* Every escape sequence in out is whole: no "\x0" or lone "\" at the end. */
static void check_escapes_whole(const char *out)
{
    size_t n = strlen(out);
    size_t i = out[0] == '"' ? 1 : 0;
    while (i < n) {
        if (out[i] == '\\') {
            assert_true(i + 1 < n);
            if (out[i + 1] == 'x') {
                assert_true(i + 3 < n);
                i += 4;
            } else {
                assert_true(out[i + 1] == '"' || out[i + 1] == '\\');
                i += 2;
            }
            continue;
        }
        i++;
    }
}

static void test_quote_truncation(void **state)
{
    (void)state;
    /* the full quoted form of this needs 1 + 3 + 4 + 2 + 3 + 1 = 14 bytes + NUL */
    static const char src[] = "abc\x01\"def";
    static const char full[] = "\"abc\\x01\\\"def\"";
    size_t srclen = sizeof(src) - 1;
    for (size_t size = 1; size <= sizeof(full) + 4; size++) {
        char out[64];
        memset(out, 'Z', sizeof(out));
        log_quote(out, size, src, srclen);
        size_t n = strlen(out);
        assert_true(n < size);          /* terminated within size */
        assert_int_equal(out[size], 'Z'); /* nothing written past it */
        check_escapes_whole(out);
        /* what fits is a prefix of the full form */
        if (n > 1)
            assert_memory_equal(out, full, n - (out[n - 1] == '"' ? 1 : 0));
        /* a value whose quoted form fits is never cut */
        if (size >= sizeof(full))
            assert_string_equal(out, full);
    }

    /* plain values are cut to size - 1 */
    char out[8];
    log_quote(out, 4, "abcdef", 6);
    assert_string_equal(out, "abc");

    /* size 0 writes nothing */
    out[0] = 'Q';
    log_quote(out, 0, "abc", 3);
    assert_int_equal(out[0], 'Q');
}

static void test_quote_fits_exactly(void **state)
{
    (void)state;
    static const struct {
        const char *src;
        const char *want;
    } cases[] = {
        {"a b", "\"a b\""},
        {"\x01", "\"\\x01\""},
        {"\"", "\"\\\"\""},
        {"a b\x02", "\"a b\\x02\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[64];
        size_t size = strlen(cases[i].want) + 1; /* just enough room */
        log_quote(out, size, cases[i].src, strlen(cases[i].src));
        if (strcmp(out, cases[i].want) != 0)
            fail_msg("case %zu in %zu bytes: got [%s], want [%s]", i, size, out,
                     cases[i].want);
    }
}

static void test_level_parse(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int rc;
        log_level_t level;
    } cases[] = {
        {"debug", 0, LOG_DEBUG}, {"info", 0, LOG_INFO},   {"WARN", 0, LOG_WARN},
        {"Error", 0, LOG_ERROR}, {"fatal", 0, LOG_FATAL}, {"verbose", -1, LOG_INFO},
        {"", -1, LOG_INFO},      {"infos", -1, LOG_INFO},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        log_level_t l = LOG_INFO;
        assert_int_equal(log_level_parse(cases[i].name, &l), cases[i].rc);
        if (cases[i].rc == 0)
            assert_int_equal(l, cases[i].level);
    }
}

/* The read end of capture()'s pipe while fn runs, for fn to look at. */
static int capture_rd = -1;

/* Capture what log_write sends to stderr. */
static size_t capture(void (*fn)(void), char *out, size_t size)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    fcntl(p[1], F_SETPIPE_SZ, 1 << 16);
    capture_rd = p[0];
    int saved = dup(STDERR_FILENO);
    dup2(p[1], STDERR_FILENO);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(p[1]);
    size_t n = 0;
    ssize_t r;
    while (n < size - 1 && (r = read(p[0], out + n, size - 1 - n)) > 0)
        n += (size_t)r;
    out[n] = '\0';
    close(p[0]);
    return n;
}

static void write_some(void)
{
    log_init("queue", "2");
    log_set_level(LOG_INFO);
    log_debug("event=hidden");
    log_info("event=shown msg=%s n=%d", "abc", 7);
    log_warn("event=warned");
}

static void write_long(void)
{
    static char big[10000];
    memset(big, 'x', sizeof(big) - 1);
    log_info("event=long value=%s", big);
}

static void test_write_lines(void **state)
{
    (void)state;
    static char out[20000];
    capture(write_some, out, sizeof(out));
    assert_null(strstr(out, "hidden"));
    char *l1 = strstr(out, "level=info svc=queue event=shown msg=abc n=7\n");
    assert_non_null(l1);
    assert_true(strncmp(out, "ts=", 3) == 0);
    assert_non_null(strstr(out, "level=warn svc=queue event=warned\n"));
    /* the time is UTC to the millisecond, and now: the second part is kept
     * from one line to the next, so it must move with the clock */
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *rest = strptime(out + 3, "%Y-%m-%dT%H:%M:%S", &tm);
    assert_non_null(rest);
    assert_true(rest[0] == '.' && isdigit((unsigned char)rest[1]) &&
                isdigit((unsigned char)rest[2]) && isdigit((unsigned char)rest[3]));
    assert_memory_equal(rest + 4, "Z level=", 8);
    time_t stamped = timegm(&tm), now = time(NULL);
    assert_true(stamped <= now && now - stamped <= 2);
    assert_string_equal(log_service(), "queue");
    assert_string_equal(log_instance(), "2");

    /* an over-long line is cut, but stays one line */
    size_t n = capture(write_long, out, sizeof(out));
    assert_true(n > 1000 && n <= 4096);
    assert_int_equal(out[n - 1], '\n');
    assert_null(memchr(out, '\n', n - 1));
}

static void write_two_seconds_apart(void)
{
    log_info("event=first");
    struct timespec pause = {1, 100 * 1000 * 1000};
    nanosleep(&pause, NULL);
    log_info("event=second");
}

/* The second of a line's time is formatted once and kept: a line written a
 * second later must not carry the kept one. */
static void test_time_moves(void **state)
{
    (void)state;
    static char out[4096];
    capture(write_two_seconds_apart, out, sizeof(out));
    char *second = strstr(out, "\nts=");
    assert_non_null(second);
    struct tm a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    const char *ra = strptime(out + 3, "%Y-%m-%dT%H:%M:%S.", &a);
    const char *rb = strptime(second + 4, "%Y-%m-%dT%H:%M:%S.", &b);
    assert_non_null(ra);
    assert_non_null(rb);
    long ms_a = (long)timegm(&a) * 1000 + strtol(ra, NULL, 10);
    long ms_b = (long)timegm(&b) * 1000 + strtol(rb, NULL, 10);
    assert_true(ms_b - ms_a >= 1050 && ms_b - ms_a < 3000);
}

/* Lines held by the loop's thread: out on a warning, on a flush, or when
 * they would pass PIPE_BUF, in order and never split. */
static size_t held_seen;

static size_t drain(char *out, size_t size)
{
    ssize_t r;
    while (held_seen < size - 1 && (r = read(capture_rd, out + held_seen, size - 1 - held_seen)) > 0)
        held_seen += (size_t)r;
    out[held_seen] = '\0';
    return held_seen;
}

static char held_out[1 << 16];

static void write_held(void)
{
    log_init("router", "1");
    log_set_level(LOG_INFO);
    log_hold_lines();
    log_info("event=one");
    log_info("event=two");
    assert_int_equal(drain(held_out, sizeof(held_out)), 0); /* held */
    log_warn("event=three");
    drain(held_out, sizeof(held_out));
    char *a = strstr(held_out, "event=one\n");
    char *b = strstr(held_out, "event=two\n");
    char *c = strstr(held_out, "event=three\n");
    assert_true(a && b && c && a < b && b < c);
    size_t before = held_seen;
    for (int i = 0; i < 100; i++)
        log_info("event=many i=%03d pad=%080d", i, 0);
    /* more than PIPE_BUF was logged: some went out, less than PIPE_BUF waits */
    size_t now = drain(held_out, sizeof(held_out));
    assert_true(now > before);
    log_flush();
    drain(held_out, sizeof(held_out));
    const char *prev = held_out + before;
    for (int i = 0; i < 100; i++) {
        char want[32];
        snprintf(want, sizeof(want), "event=many i=%03d ", i);
        const char *at = strstr(prev, want);
        assert_non_null(at);
        prev = at;
    }
    assert_int_equal(held_out[held_seen - 1], '\n');
}

static void test_held_lines(void **state)
{
    (void)state;
    static char rest[256]; /* what capture reads after write_held drained the pipe */
    capture(write_held, rest, sizeof(rest));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quote_cases),
        cmocka_unit_test(test_quote_truncation),
        cmocka_unit_test(test_quote_fits_exactly),
        cmocka_unit_test(test_level_parse),
        cmocka_unit_test(test_write_lines),
        cmocka_unit_test(test_time_moves),
        cmocka_unit_test(test_held_lines), /* last: the lines stay held after it */
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
