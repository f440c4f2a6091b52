/*
 * smtp_data_test: the DATA reader and writer. Dot-unstuffing; the end found
 * only at CRLF "." CRLF (never LF.LF, CR.CR or a bare LF before ".\r\n");
 * bytes after the end left for the next command; feeding a byte at a time
 * or in any chunks gives what one feed gives; bare CR/LF, long lines, size
 * and 8-bit flags; and data_stuff round trips through the reader.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "mail/smtp_data.h"

typedef struct result {
    long consumed;
    int done, bare, too_long, too_big, eightbit;
    uint64_t size;
} result_t;

/* Feed text in chunks of the given size (0: all at once), stopping at the end. */
static result_t feed(const char *p, size_t n, size_t chunk, uint64_t max, size_t line_max,
                     buf_t *out)
{
    data_reader_t r;
    data_reader_init(&r, max, line_max);
    result_t res = {0};
    size_t off = 0;
    while (off < n && !r.done) {
        size_t len = chunk ? (n - off < chunk ? n - off : chunk) : n - off;
        long c = data_reader_feed(&r, p + off, len, out);
        assert_true(c >= 0);
        assert_true((size_t)c <= len);
        if ((size_t)c < len)
            assert_true(r.done); /* fewer only at the end */
        off += (size_t)c;
    }
    res.consumed = (long)off;
    res.done = r.done;
    res.bare = r.bare_cr_lf;
    res.too_long = r.line_too_long;
    res.too_big = r.too_big;
    res.eightbit = r.eightbit;
    res.size = r.size;
    return res;
}

typedef struct read_case {
    const char *in;
    const char *out;
    int done;
    long consumed; /* -1: all of it */
    int bare, eightbit;
} read_case_t;

static const read_case_t reads[] = {
    {"Hello\r\n.\r\n", "Hello\r\n", 1, -1, 0, 0},
    {".\r\n", "", 1, -1, 0, 0},
    {"..leading dot\r\n.\r\n", ".leading dot\r\n", 1, -1, 0, 0},
    {"a\r\n..\r\n.\r\n", "a\r\n.\r\n", 1, -1, 0, 0},
    {"a\r\n...\r\n.\r\n", "a\r\n..\r\n", 1, -1, 0, 0},
    {".x\r\n.\r\n", "x\r\n", 1, -1, 0, 0},
    {"a.\r\n.b\r\n.\r\n", "a.\r\nb\r\n", 1, -1, 0, 0},
    {"\r\n.\r\n", "\r\n", 1, -1, 0, 0},
    {"body\r\n.\r\nQUIT\r\n", "body\r\n", 1, 9, 0, 0},
    {"x\r\n.\r\n.\r\n", "x\r\n", 1, 6, 0, 0},
    {"caf\xc3\xa9\r\n.\r\n", "caf\xc3\xa9\r\n", 1, -1, 0, 1},
    /* long runs: an eight-bit byte past the first eight, and none at all */
    {"0123456789abcdef\xe9xyz\r\n.\r\n", "0123456789abcdef\xe9xyz\r\n", 1, -1, 0, 1},
    {"0123456789abcdefghijklmnop\r\n.\r\n", "0123456789abcdefghijklmnop\r\n", 1, -1, 0, 0},
    {"..\xff\r\n.\r\n", ".\xff\r\n", 1, -1, 0, 1},
    /* not an end: LF.LF, CR.CR, a bare LF before ".\r\n", ".\n" */
    {"a\n.\nb", "a\n.\nb", 0, -1, 1, 0},
    {"a\r.\rb", "a\r.\rb", 0, -1, 1, 0},
    {"a\n.\r\nb", "a\n.\r\nb", 0, -1, 1, 0},
    {"a\r\n.\nb", "a\r\n\nb", 0, -1, 1, 0},
    {"a\r\n.\rb", "a\r\n\rb", 0, -1, 1, 0},
    {"a\r\r\n.\r\n", "a\r\r\n", 1, -1, 1, 0},
    /* after a smuggling attempt, the real end still ends it, and the flag stays */
    {"a\n.\r\nMAIL FROM:<x@y>\r\n.\r\nNOOP\r\n", "a\n.\r\nMAIL FROM:<x@y>\r\n", 1, 25, 1, 0},
    {"", "", 0, 0, 0, 0},
};

static void test_read_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++) {
        const read_case_t *c = &reads[i];
        size_t n = strlen(c->in);
        for (size_t chunk = 0; chunk <= 3; chunk++) {
            buf_t out;
            buf_init(&out, 0);
            result_t r = feed(c->in, n, chunk, 0, 0, &out);
            long want = c->consumed < 0 ? (long)n : c->consumed;
            if (r.done != c->done || r.consumed != want)
                fail_msg("case %zu chunk %zu: done %d consumed %ld", i, chunk, r.done,
                         r.consumed);
            if (buf_used(&out) != strlen(c->out) ||
                (buf_used(&out) && memcmp(buf_head(&out), c->out, buf_used(&out)) != 0))
                fail_msg("case %zu chunk %zu: wrong output", i, chunk);
            assert_int_equal(r.size, strlen(c->out));
            assert_int_equal(r.bare, c->bare);
            assert_int_equal(r.eightbit, c->eightbit);
            buf_free(&out);
        }
    }
}

static void test_after_end_nothing_more(void **state)
{
    (void)state;
    data_reader_t r;
    data_reader_init(&r, 0, 0);
    buf_t out;
    buf_init(&out, 0);
    static const char in[] = "x\r\n.\r\nRSET\r\n";
    assert_int_equal(data_reader_feed(&r, in, sizeof(in) - 1, &out), 6);
    assert_true(r.done);
    assert_int_equal(data_reader_feed(&r, "more", 4, &out), 0);
    assert_int_equal(buf_used(&out), 3);
    buf_free(&out);
}

static void test_line_length(void **state)
{
    (void)state;
    static const struct {
        size_t len;
        size_t line_max;
        int flagged;
    } cases[] = {
        {998, 0, 0}, {999, 0, 1}, {5000, 0, 1}, {10, 10, 0}, {11, 10, 1}, {0, 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = cases[i].len;
        char *in = malloc(n + 32);
        memcpy(in, "short\r\n", 7);
        memset(in + 7, 'L', n);
        memcpy(in + 7 + n, "\r\nend\r\n.\r\n", 10);
        buf_t out;
        buf_init(&out, 0);
        result_t r = feed(in, n + 17, 0, 0, cases[i].line_max, &out);
        assert_true(r.done);
        if (r.too_long != cases[i].flagged)
            fail_msg("line of %zu (max %zu): flag %d", n, cases[i].line_max, r.too_long);
        assert_int_equal(buf_used(&out), n + 14); /* still all kept */
        free(in);
        buf_free(&out);
    }
    /* the count starts again on each line: many lines just under the limit pass */
    buf_t out;
    buf_init(&out, 0);
    buf_t in;
    buf_init(&in, 0);
    char line[1000];
    memset(line, 'm', 998);
    memcpy(line + 998, "\r\n", 2);
    for (int i = 0; i < 50; i++)
        buf_append(&in, line, sizeof(line));
    buf_append_str(&in, ".\r\n");
    result_t r = feed(buf_head(&in), buf_used(&in), 0, 0, 0, &out);
    assert_true(r.done);
    assert_false(r.too_long);
    buf_free(&in);
    buf_free(&out);
}

static void test_size_limit(void **state)
{
    (void)state;
    /* 10 lines of 20 octets = 200 */
    buf_t in;
    buf_init(&in, 0);
    for (int i = 0; i < 10; i++)
        buf_append_str(&in, "0123456789abcdefgh\r\n");
    buf_append_str(&in, ".\r\nNOOP\r\n");
    static const struct {
        uint64_t max;
        int too_big;
    } cases[] = {{0, 0}, {200, 0}, {199, 1}, {100, 1}, {1, 1}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (size_t chunk = 0; chunk <= 7; chunk += 7) {
            buf_t out;
            buf_init(&out, 0);
            result_t r = feed(buf_head(&in), buf_used(&in), chunk, cases[i].max, 0, &out);
            /* over the limit it still reads to the end, to stay in step */
            assert_true(r.done);
            assert_int_equal(r.consumed, (long)buf_used(&in) - 6);
            assert_int_equal(r.too_big, cases[i].too_big);
            /* what is kept is the first max octets, however the bytes came in */
            if (cases[i].too_big) {
                assert_int_equal(buf_used(&out), cases[i].max);
                assert_memory_equal(buf_head(&out), buf_head(&in), cases[i].max);
            }
            assert_true(r.size <= (cases[i].max ? cases[i].max : 200));
            if (!cases[i].too_big)
                assert_int_equal(buf_used(&out), 200);
            buf_free(&out);
        }
    }
    buf_free(&in);
}

static void test_out_refuses(void **state)
{
    (void)state;
    data_reader_t r;
    data_reader_init(&r, 0, 0);
    buf_t out;
    buf_init(&out, 8);
    static const char in[] = "0123456789\r\n.\r\n";
    assert_int_equal(data_reader_feed(&r, in, sizeof(in) - 1, &out), -1);
    buf_free(&out);
}

/* ---- random inputs ---- */

static uint64_t rng = 88172645463325252ull;

static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

/* Bytes that matter to the reader, often. */
static void random_text(char *p, size_t n)
{
    static const char alphabet[] = "..\r\r\n\nab \x80";
    for (size_t i = 0; i < n; i++)
        p[i] = alphabet[rnd() % (sizeof(alphabet) - 1)];
}

/* Two readings of the same text agree: every flag, the size and the output. */
static void assert_same_reading(const result_t *a, const buf_t *aout, const result_t *b,
                                const buf_t *bout)
{
    assert_int_equal(b->consumed, a->consumed);
    assert_int_equal(b->done, a->done);
    assert_int_equal(b->bare, a->bare);
    assert_int_equal(b->too_long, a->too_long);
    assert_int_equal(b->too_big, a->too_big);
    assert_int_equal(b->eightbit, a->eightbit);
    assert_int_equal(b->size, a->size);
    assert_int_equal(buf_used(bout), buf_used(aout));
    assert_memory_equal(buf_head(bout), buf_head(aout), buf_used(aout));
}

static void test_chunking_does_not_matter(void **state)
{
    (void)state;
    for (int iter = 0; iter < 3000; iter++) {
        size_t n = rnd() % 200;
        char *p = malloc(n + 1);
        random_text(p, n);
        uint64_t max = rnd() % 3 == 0 ? rnd() % 150 + 1 : 0;
        size_t line_max = rnd() % 2 ? 5 + rnd() % 20 : 0;
        buf_t one, bytes, chunks;
        buf_init(&one, 0);
        buf_init(&bytes, 0);
        buf_init(&chunks, 0);
        result_t a = feed(p, n, 0, max, line_max, &one);
        result_t b = feed(p, n, 1, max, line_max, &bytes);
        result_t c = feed(p, n, 1 + rnd() % 9, max, line_max, &chunks);
        assert_same_reading(&a, &one, &b, &bytes);
        assert_same_reading(&a, &one, &c, &chunks);
        /* the end is exactly the first CRLF.CRLF reachable from a line start */
        if (a.done)
            assert_memory_equal(p + a.consumed - 3, ".\r\n", 3);
        buf_free(&one);
        buf_free(&bytes);
        buf_free(&chunks);
        free(p);
    }
}

/*
 * Text like a real body: lines of up to 150 plain bytes, now and then an
 * 8-bit byte, a line-starting dot, a bare CR or LF, and an end somewhere.
 * Fed whole, the reader takes the runs sixteen bytes at a time; fed a
 * byte at a time it cannot: both must agree, with the runs' specials at
 * every offset within a block.
 */
static void long_line_text(char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t len = rnd() % 151;
        if (rnd() % 4 == 0)
            p[i++] = '.'; /* i < n: the loop's condition */
        for (size_t k = 0; k < len && i < n; k++) {
            unsigned x = rnd() % 100;
            p[i++] = x == 0 ? '\xe9' : x == 1 ? '\r' : x == 2 ? '\n' : (char)('a' + x % 26);
        }
        if (i < n)
            p[i++] = '\r';
        if (i < n)
            p[i++] = '\n';
        if (rnd() % 40 == 0 && i + 3 <= n) {
            memcpy(p + i, ".\r\n", 3);
            i += 3;
        }
    }
}

static void test_long_runs_like_bytes(void **state)
{
    (void)state;
    for (int iter = 0; iter < 2000; iter++) {
        size_t n = rnd() % 3000;
        char *p = malloc(n + 1);
        long_line_text(p, n);
        size_t line_max = rnd() % 2 ? 40 + rnd() % 100 : 0;
        buf_t one, bytes;
        buf_init(&one, 0);
        buf_init(&bytes, 0);
        result_t a = feed(p, n, 0, 0, line_max, &one);
        result_t b = feed(p, n, 1, 0, line_max, &bytes);
        assert_same_reading(&a, &one, &b, &bytes);
        buf_free(&one);
        buf_free(&bytes);
        free(p);
    }
}

/* Does the body contain "\r\n.\r\n" anywhere a reader would see an end? */
static int has_early_end(const char *p, size_t n)
{
    if (n >= 3 && memcmp(p, ".\r\n", 3) == 0)
        return 1;
    for (size_t i = 0; i + 5 <= n; i++)
        if (memcmp(p + i, "\r\n.\r\n", 5) == 0)
            return 1;
    return 0;
}

static void test_stuff_round_trip(void **state)
{
    (void)state;
    for (int iter = 0; iter < 5000; iter++) {
        size_t n = rnd() % 300;
        char *body = malloc(n + 1);
        random_text(body, n);
        buf_t wire;
        buf_init(&wire, 0);
        assert_int_equal(data_stuff(body, n, &wire), 0);
        /* the wire text ends with the one terminator and holds no earlier one */
        size_t w = buf_used(&wire);
        assert_true(w >= 3);
        assert_memory_equal(buf_head(&wire) + w - 3, ".\r\n", 3);
        if (w >= 5)
            assert_memory_equal(buf_head(&wire) + w - 5, "\r\n.\r\n", 5);
        assert_false(has_early_end(buf_head(&wire), w - 3));

        buf_t out;
        buf_init(&out, 0);
        result_t r = feed(buf_head(&wire), w, rnd() % 4 ? 1 + rnd() % 50 : 0, 0, 0, &out);
        assert_true(r.done);
        assert_int_equal(r.consumed, (long)w);
        /* the body comes back, with a CRLF added when it did not end in one */
        int ends_crlf = n >= 2 && body[n - 2] == '\r' && body[n - 1] == '\n';
        size_t want = n + (n && !ends_crlf ? 2 : 0);
        if (buf_used(&out) != want || (n && memcmp(buf_head(&out), body, n) != 0))
            fail_msg("round trip %d: %zu bytes back for %zu", iter, buf_used(&out), n);
        if (want > n)
            assert_memory_equal(buf_head(&out) + n, "\r\n", 2);
        buf_free(&out);
        buf_free(&wire);
        free(body);
    }
}

static void test_stuff_cases(void **state)
{
    (void)state;
    static const struct {
        const char *body, *wire;
    } cases[] = {
        {"", ".\r\n"},
        {"a", "a\r\n.\r\n"},
        {"a\r\n", "a\r\n.\r\n"},
        {".", "..\r\n.\r\n"},
        {".\r\n", "..\r\n.\r\n"},
        {"a\r\n.\r\nb", "a\r\n..\r\nb\r\n.\r\n"},
        {"a\n.\r\n", "a\n.\r\n.\r\n"}, /* a bare LF does not start a line */
        {"..\r\n...", "...\r\n....\r\n.\r\n"},
        {"a\r", "a\r\r\n.\r\n"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        buf_t wire;
        buf_init(&wire, 0);
        assert_int_equal(data_stuff(cases[i].body, strlen(cases[i].body), &wire), 0);
        if (buf_used(&wire) != strlen(cases[i].wire) ||
            memcmp(buf_head(&wire), cases[i].wire, buf_used(&wire)) != 0)
            fail_msg("stuff case %zu", i);
        buf_free(&wire);
    }
    /* an output buffer that cannot hold it refuses */
    buf_t small;
    buf_init(&small, 8);
    assert_int_equal(data_stuff("0123456789", 10, &small), -1);
    buf_free(&small);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_cases),
        cmocka_unit_test(test_after_end_nothing_more),
        cmocka_unit_test(test_line_length),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_out_refuses),
        cmocka_unit_test(test_chunking_does_not_matter),
        cmocka_unit_test(test_long_runs_like_bytes),
        cmocka_unit_test(test_stuff_round_trip),
        cmocka_unit_test(test_stuff_cases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
