/*
 * reply_test: reading SMTP replies as a client: single and multi-line,
 * enhanced codes and their class, partial input, garbage, EHLO keywords,
 * and that exactly one reply is taken off the buffer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "mail/reply.h"

typedef struct done_case {
    const char *in;
    unsigned code;
    const char *enhanced;
    const char *text;
    size_t nlines;
} done_case_t;

static const done_case_t done[] = {
    {"250 OK\r\n", 250, "", "OK", 1},
    {"250 2.0.0 OK: queued as 01k8g0tnohpnur4cpbro\r\n", 250, "2.0.0",
     "OK: queued as 01k8g0tnohpnur4cpbro", 1},
    {"220 mx.example ESMTP ready\r\n", 220, "", "mx.example ESMTP ready", 1},
    {"250\r\n", 250, "", "", 1},
    {"250 \r\n", 250, "", "", 1},
    {"250 OK\n", 250, "", "OK", 1}, /* a bare LF ends a line too */
    {"550-5.1.1 No such user\r\n550-5.1.1 here, or\r\n550 5.1.1 anywhere\r\n", 550, "5.1.1",
     "No such user; here, or; anywhere", 3},
    {"451-4.7.1 first\r\n451 second\r\n", 451, "4.7.1", "first; second", 2},
    {"421 4.3.2 Service shutting down\r\n", 421, "4.3.2", "Service shutting down", 1},
    {"452 4.5.3 Too many recipients\r\n", 452, "4.5.3", "Too many recipients", 1},
    {"550 5.7.10 longer detail\r\n", 550, "5.7.10", "longer detail", 1},
    {"550 5.700.100 three digits each\r\n", 550, "5.700.100", "three digits each", 1},
    /* not enhanced codes: kept in the text */
    {"550 5.7000.1 four digits\r\n", 550, "", "5.7000.1 four digits", 1},
    {"550 5.7 short\r\n", 550, "", "5.7 short", 1},
    {"550 6.0.0 bad class\r\n", 550, "", "6.0.0 bad class", 1},
    {"550 5.1.1x glued\r\n", 550, "", "5.1.1x glued", 1},
    /* the enhanced class must match the basic code */
    {"250 5.0.0 mismatch\r\n", 250, "", "5.0.0 mismatch", 1},
    {"550 2.0.0 mismatch\r\n", 550, "", "2.0.0 mismatch", 1},
    {"354 Start mail input; end with <CRLF>.<CRLF>\r\n", 354, "",
     "Start mail input; end with <CRLF>.<CRLF>", 1},
};

static void test_done(void **state)
{
    (void)state;
    smtp_reply_t r;
    memset(&r, 0, sizeof(r));
    for (size_t i = 0; i < sizeof(done) / sizeof(done[0]); i++) {
        buf_t in;
        buf_init(&in, 0);
        buf_append_str(&in, done[i].in);
        reply_status_t st = reply_read(&in, &r); /* the same reply reused: no leak */
        if (st != REPLY_DONE)
            fail_msg("case %zu: status %d", i, st);
        assert_int_equal(r.code, done[i].code);
        assert_string_equal(r.enhanced, done[i].enhanced);
        assert_string_equal(r.text, done[i].text);
        assert_int_equal(r.nlines, done[i].nlines);
        assert_int_equal(buf_used(&in), 0);
        buf_free(&in);
    }
    reply_clear(&r);
    assert_int_equal(r.nlines, 0);
    assert_null(r.lines);
    reply_clear(&r); /* safe twice */
}

static void test_ehlo_keywords(void **state)
{
    (void)state;
    buf_t in;
    buf_init(&in, 0);
    buf_append_str(&in, "250-mx.example.org Hello client [192.0.2.7]\r\n"
                        "250-PIPELINING\r\n"
                        "250-SIZE 10240000\r\n"
                        "250-8bitmime\r\n"
                        "250-AUTH=LOGIN\r\n"
                        "250-AUTH PLAIN LOGIN\r\n"
                        "250-ENHANCEDSTATUSCODES\r\n"
                        "250 STARTTLS\r\n");
    smtp_reply_t r;
    memset(&r, 0, sizeof(r));
    assert_int_equal(reply_read(&in, &r), REPLY_DONE);
    assert_int_equal(r.code, 250);
    assert_int_equal(r.nlines, 8);
    assert_string_equal(r.lines[0], "mx.example.org Hello client [192.0.2.7]");
    assert_string_equal(r.lines[2], "SIZE 10240000");
    static const struct {
        const char *kw;
        int has;
    } kws[] = {
        {"PIPELINING", 1}, {"pipelining", 1}, {"SIZE", 1},     {"8BITMIME", 1},
        {"AUTH", 1},       {"STARTTLS", 1},   {"StartTLS", 1}, {"ENHANCEDSTATUSCODES", 1},
        {"PIPE", 0},       {"SMTPUTF8", 0},   {"CHUNKING", 0}, {"ENHANCED", 0},
        {"mx.example.org", 0}, /* the greeting line is not a keyword */
        {"10240000", 0},
    };
    for (size_t i = 0; i < sizeof(kws) / sizeof(kws[0]); i++)
        if (reply_has_keyword(&r, kws[i].kw) != kws[i].has)
            fail_msg("keyword %s: want %d", kws[i].kw, kws[i].has);
    reply_clear(&r);
    buf_free(&in);
}

static void test_one_reply_at_a_time(void **state)
{
    (void)state;
    buf_t in;
    buf_init(&in, 0);
    /* a pipelined burst: MAIL, RCPT, RCPT, DATA answers in one read */
    buf_append_str(&in, "250 2.1.0 Ok\r\n"
                        "250-2.1.5 Ok\r\n250 2.1.5 really\r\n"
                        "550 5.1.1 No\r\n"
                        "354 Go ahead\r\n"
                        "250 partial");
    smtp_reply_t r;
    memset(&r, 0, sizeof(r));
    static const unsigned codes[] = {250, 250, 550, 354};
    static const char *texts[] = {"Ok", "Ok; really", "No", "Go ahead"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(reply_read(&in, &r), REPLY_DONE);
        assert_int_equal(r.code, codes[i]);
        assert_string_equal(r.text, texts[i]);
    }
    /* what is left is the start of the next reply, untouched */
    assert_int_equal(buf_used(&in), 11);
    assert_memory_equal(buf_head(&in), "250 partial", 11);
    assert_int_equal(reply_read(&in, &r), REPLY_INCOMPLETE);
    assert_int_equal(buf_used(&in), 11);
    reply_clear(&r);
    buf_free(&in);
}

static void test_incomplete(void **state)
{
    (void)state;
    static const char *parts[] = {
        "", "2", "25", "250", "250 ", "250 O", "250 OK", "250 OK\r",
        "250-first\r\n", "250-first\r\n250", "250-first\r\n250 second",
        "250-first\r\n250-second\r\n",
    };
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        buf_t in;
        buf_init(&in, 0);
        buf_append_str(&in, parts[i]);
        smtp_reply_t r;
        memset(&r, 0, sizeof(r));
        if (reply_read(&in, &r) != REPLY_INCOMPLETE)
            fail_msg("\"%s\" is not incomplete", parts[i]);
        assert_int_equal(buf_used(&in), strlen(parts[i])); /* nothing consumed */
        buf_free(&in);
    }

    /* completed a byte at a time, it gives the same reply as all at once */
    static const char full[] = "250-one\r\n250-two\r\n250 2.0.0 three\r\n";
    buf_t in;
    buf_init(&in, 0);
    smtp_reply_t r;
    memset(&r, 0, sizeof(r));
    for (size_t i = 0; i < sizeof(full) - 1; i++) {
        buf_append(&in, full + i, 1);
        reply_status_t st = reply_read(&in, &r);
        assert_int_equal(st, i + 1 < sizeof(full) - 1 ? REPLY_INCOMPLETE : REPLY_DONE);
    }
    assert_int_equal(r.code, 250);
    assert_string_equal(r.text, "one; two; 2.0.0 three"); /* codes only from the first line */
    assert_string_equal(r.enhanced, "");
    reply_clear(&r);
    buf_free(&in);
}

static void test_bad(void **state)
{
    (void)state;
    char longline[1100];
    memset(longline, 'x', sizeof(longline) - 1);
    longline[sizeof(longline) - 1] = '\0';
    memcpy(longline, "250 ", 4);
    char longlf[1100];
    memcpy(longlf, longline, 1090);
    memcpy(longlf + 1090, "\r\n", 3);
    static const char *bad[] = {
        "hello\r\n",
        "2x0 OK\r\n",
        "250_OK\r\n",
        "25\r\n",
        "\r\n",
        " 250 OK\r\n",
        "250-first\r\nhello\r\n",
        "250-first\r\n25\r\n",
        /* every line of one reply carries the same code */
        "250-first\r\n550 second\r\n",
        "250-first\r\n251-second\r\n250 third\r\n",
        NULL, /* a line over the limit, no newline yet */
        NULL, /* a line over the limit, with its newline */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *text = bad[i] ? bad[i] : i == 10 ? longline : longlf;
        buf_t in;
        buf_init(&in, 0);
        buf_append_str(&in, text);
        smtp_reply_t r;
        memset(&r, 0, sizeof(r));
        reply_status_t st = reply_read(&in, &r);
        if (st != REPLY_BAD)
            fail_msg("bad case %zu: status %d", i, st);
        reply_clear(&r);
        buf_free(&in);
    }

    /* more lines than a reply may have */
    buf_t in;
    buf_init(&in, 0);
    for (int i = 0; i < REPLY_LINES_MAX; i++)
        buf_append_str(&in, "250-line\r\n");
    buf_append_str(&in, "250 last\r\n");
    smtp_reply_t r;
    memset(&r, 0, sizeof(r));
    assert_int_equal(reply_read(&in, &r), REPLY_BAD);
    buf_free(&in);
}

static void test_text_capped(void **state)
{
    (void)state;
    buf_t in;
    buf_init(&in, 0);
    char line[REPLY_LINE_MAX];
    memset(line, 't', sizeof(line));
    memcpy(line, "250-", 4);
    memcpy(line + sizeof(line) - 2, "\r\n", 2);
    for (int i = 0; i < 10; i++)
        buf_append(&in, line, sizeof(line));
    buf_append_str(&in, "250 end\r\n");
    smtp_reply_t r;
    memset(&r, 0, sizeof(r));
    assert_int_equal(reply_read(&in, &r), REPLY_DONE);
    assert_int_equal(r.nlines, 11);
    assert_int_equal(strlen(r.text), REPLY_TEXT_MAX - 1);
    assert_int_equal(strlen(r.lines[0]), REPLY_LINE_MAX - 6);
    assert_string_equal(r.lines[10], "end");
    reply_clear(&r);
    buf_free(&in);
}

static void test_enhanced_prefix(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        const char *want;
    } cases[] = {
        {"2.0.0 OK", "2.0.0"},   {"4.7.1", "4.7.1"},     {"5.1.10 x", "5.1.10"},
        {"5.123.456 x", "5.123.456"}, {"3.0.0 x", ""},   {"5.1 x", ""},
        {"5..1 x", ""},          {"5.1.1.1 x", ""},      {"5.1.1x", ""},
        {"x5.1.1", ""},          {"", ""},               {"5.1234.1 x", ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[16] = "unset";
        size_t n = reply_enhanced_prefix(cases[i].text, out, sizeof(out));
        assert_int_equal(n, strlen(cases[i].want));
        if (n)
            assert_string_equal(out, cases[i].want);
    }
    /* an output too small for the code gives nothing, not a cut code */
    char tiny[5];
    assert_int_equal(reply_enhanced_prefix("5.1.1 x", tiny, sizeof(tiny)), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_done),
        cmocka_unit_test(test_ehlo_keywords),
        cmocka_unit_test(test_one_reply_at_a_time),
        cmocka_unit_test(test_incomplete),
        cmocka_unit_test(test_bad),
        cmocka_unit_test(test_text_capped),
        cmocka_unit_test(test_enhanced_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
