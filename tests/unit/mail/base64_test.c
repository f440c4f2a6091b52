/*
 * base64_test: RFC 4648 test vectors both ways, strict refusal of
 * malformed input (bad characters, bad or misplaced padding, non-canonical
 * trailing bits, wrong lengths, short output), and random round trips.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mail/base64.h"

static const struct {
    const char *plain, *encoded;
} vectors[] = {
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
    /* a SASL PLAIN response: NULs inside */
    {"\0user\0secret", "AHVzZXIAc2VjcmV0"},
};

static size_t plain_len(size_t i)
{
    return i == 7 ? 12 : strlen(vectors[i].plain);
}

static void test_rfc4648_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        size_t n = plain_len(i);
        char enc[64];
        memset(enc, 'Z', sizeof(enc));
        long e = base64_encode((const unsigned char *)vectors[i].plain, n, enc, sizeof(enc));
        assert_int_equal(e, (long)strlen(vectors[i].encoded));
        assert_string_equal(enc, vectors[i].encoded);

        unsigned char dec[64];
        long d = base64_decode(vectors[i].encoded, strlen(vectors[i].encoded), dec, sizeof(dec));
        assert_int_equal(d, (long)n);
        assert_memory_equal(dec, vectors[i].plain, n);
    }
}

static void test_strict_refusals(void **state)
{
    (void)state;
    static const char *bad[] = {
        "Zg",        /* padding missing */
        "Zg=",       /* length not a multiple of 4 */
        "Z",
        "Zm9vY",
        "Z===",      /* too much padding */
        "====",
        "=Zg=",
        "Zg=a",      /* data after padding */
        "Zg==Zg==",  /* padding before the end */
        "Zm8=Zm8=",
        "Zh==",      /* non-canonical: bits dropped by padding are set */
        "Zm9=",
        "Zm8/====",
        "Zm9v\r\n",  /* no line breaks or spaces */
        "Zm 9",
        " Zm9",
        "Zm9-",      /* the URL-safe alphabet is not this one */
        "Zm9_",
        "Zm9*",
        "Zm9\x80",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        unsigned char out[32];
        if (base64_decode(bad[i], strlen(bad[i]), out, sizeof(out)) != -1)
            fail_msg("\"%s\" was accepted", bad[i]);
    }
    /* a NUL in the input is not a character of the alphabet */
    unsigned char out[8];
    assert_int_equal(base64_decode("Zm\0v", 4, out, sizeof(out)), -1);
    /* the non-canonical forms next to the canonical ones */
    assert_int_equal(base64_decode("Zg==", 4, out, sizeof(out)), 1);
    assert_int_equal(base64_decode("Zm8=", 4, out, sizeof(out)), 2);
}

static void test_output_size(void **state)
{
    (void)state;
    unsigned char dec[8];
    assert_int_equal(base64_decode("Zm9vYmFy", 8, dec, 6), 6);
    assert_int_equal(base64_decode("Zm9vYmFy", 8, dec, 5), -1);
    assert_int_equal(base64_decode("Zm9vYmE=", 8, dec, 5), 5);
    assert_int_equal(base64_decode("Zm9vYmE=", 8, dec, 4), -1);
    assert_int_equal(base64_decode("", 0, dec, 0), 0);

    char enc[16];
    /* room for the text and its terminator, no less */
    assert_int_equal(base64_encode((const unsigned char *)"foobar", 6, enc, 9), 8);
    assert_string_equal(enc, "Zm9vYmFy");
    assert_int_equal(base64_encode((const unsigned char *)"foobar", 6, enc, 8), -1);
    assert_int_equal(base64_encode((const unsigned char *)"f", 1, enc, 5), 4);
    assert_int_equal(base64_encode((const unsigned char *)"f", 1, enc, 4), -1);
    assert_int_equal(base64_encode((const unsigned char *)"", 0, enc, 1), 0);
    assert_string_equal(enc, "");
    assert_int_equal(base64_encode((const unsigned char *)"", 0, enc, 0), -1);
}

static void test_round_trip(void **state)
{
    (void)state;
    uint32_t x = 123456789u;
    for (int iter = 0; iter < 3000; iter++) {
        size_t n = (size_t)(iter % 97);
        unsigned char plain[100], back[100];
        for (size_t i = 0; i < n; i++) {
            x = x * 1664525u + 1013904223u;
            plain[i] = (unsigned char)(x >> 24);
        }
        char enc[160];
        long e = base64_encode(plain, n, enc, sizeof(enc));
        assert_int_equal(e, (long)((n + 2) / 3 * 4));
        assert_int_equal(strlen(enc), (size_t)e);
        long d = base64_decode(enc, (size_t)e, back, sizeof(back));
        assert_int_equal(d, (long)n);
        assert_memory_equal(back, plain, n);
        /* flipping any character to one outside the alphabet breaks it */
        if (e > 0) {
            enc[(size_t)iter % (size_t)e] = '!';
            assert_int_equal(base64_decode(enc, (size_t)e, back, sizeof(back)), -1);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4648_vectors),
        cmocka_unit_test(test_strict_refusals),
        cmocka_unit_test(test_output_size),
        cmocka_unit_test(test_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
