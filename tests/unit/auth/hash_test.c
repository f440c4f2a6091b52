/*
 * hash_test: scrypt password hashes: the string format round trip, wrong
 * passwords, tampered strings, fresh salts, parameter bounds and the strict
 * parser. Uses ln=10 so each hash takes a millisecond or so.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth_hash.h"

static const auth_scrypt_params_t fast = {10, 8, 1};

static void make(const char *pw, char out[AUTH_HASH_STR_MAX])
{
    assert_int_equal(auth_hash_make(&fast, pw, strlen(pw), out, AUTH_HASH_STR_MAX), 0);
}

static void test_format_round_trip(void **state)
{
    (void)state;
    char h[AUTH_HASH_STR_MAX];
    make("correct horse", h);
    assert_true(strncmp(h, "$scrypt$ln=10,r=8,p=1$", 22) == 0);

    auth_hash_parsed_t p;
    assert_int_equal(auth_hash_parse(h, &p), 0);
    assert_int_equal(p.params.ln, 10);
    assert_int_equal(p.params.r, 8);
    assert_int_equal(p.params.p, 1);
    assert_int_equal(p.salt_len, AUTH_HASH_SALT_LEN);
    assert_int_equal(p.key_len, AUTH_HASH_KEY_LEN);
    /* salt 16 bytes = 24 base64 chars, key 32 bytes = 44: nothing else in the string */
    assert_int_equal(strlen(h), 22 + 24 + 1 + 44);

    assert_int_equal(auth_hash_verify(h, "correct horse", 13), AUTH_HASH_MATCH);
    /* the password is in no part of the string */
    assert_null(strstr(h, "correct"));
}

static void test_wrong_password(void **state)
{
    (void)state;
    char h[AUTH_HASH_STR_MAX];
    make("s3cret-password", h);
    assert_int_equal(auth_hash_verify(h, "s3cret-passworD", 15), AUTH_HASH_MISMATCH);
    assert_int_equal(auth_hash_verify(h, "s3cret-passwor", 14), AUTH_HASH_MISMATCH);
    assert_int_equal(auth_hash_verify(h, "s3cret-password!", 16), AUTH_HASH_MISMATCH);
    /* scrypt's HMAC pads short keys with zeros, so "pw" and "pw\0" derive the same key:
     * auth_verify refuses secrets with a NUL byte before they get here */
    assert_int_equal(auth_hash_verify(h, "s3cret-password\0", 16), AUTH_HASH_MATCH);
    assert_int_equal(auth_hash_verify(h, "", 0), AUTH_HASH_MISMATCH);
    assert_int_equal(auth_hash_verify(h, "s3cret-password", 15), AUTH_HASH_MATCH);
}

static void test_binary_and_empty_passwords(void **state)
{
    (void)state;
    char h[AUTH_HASH_STR_MAX];
    const char bin[] = {'a', 0, 'b', (char)0xff};
    assert_int_equal(auth_hash_make(&fast, bin, sizeof(bin), h, sizeof(h)), 0);
    assert_int_equal(auth_hash_verify(h, bin, sizeof(bin)), AUTH_HASH_MATCH);
    assert_int_equal(auth_hash_verify(h, "a", 1), AUTH_HASH_MISMATCH);
    assert_int_equal(auth_hash_make(&fast, "", 0, h, sizeof(h)), 0);
    assert_int_equal(auth_hash_verify(h, "", 0), AUTH_HASH_MATCH);
    assert_int_equal(auth_hash_verify(h, "x", 1), AUTH_HASH_MISMATCH);
}

static void test_different_salts(void **state)
{
    (void)state;
    char a[AUTH_HASH_STR_MAX], b[AUTH_HASH_STR_MAX];
    make("same password", a);
    make("same password", b);
    assert_string_not_equal(a, b);
    auth_hash_parsed_t pa, pb;
    assert_int_equal(auth_hash_parse(a, &pa), 0);
    assert_int_equal(auth_hash_parse(b, &pb), 0);
    assert_memory_not_equal(pa.salt, pb.salt, AUTH_HASH_SALT_LEN);
    assert_memory_not_equal(pa.key, pb.key, AUTH_HASH_KEY_LEN);
    assert_int_equal(auth_hash_verify(a, "same password", 13), AUTH_HASH_MATCH);
    assert_int_equal(auth_hash_verify(b, "same password", 13), AUTH_HASH_MATCH);
}

/* Flip one character of the salt or key: still well formed, no longer matching. */
static void test_tampered_string(void **state)
{
    (void)state;
    char h[AUTH_HASH_STR_MAX], t[AUTH_HASH_STR_MAX];
    make("tamper-proof", h);
    char *salt = strchr(h + 8, '$') + 1;
    char *key = strchr(salt, '$') + 1;
    size_t offsets[] = {(size_t)(salt - h), (size_t)(salt - h) + 5, (size_t)(key - h),
                        (size_t)(key - h) + 20};
    for (size_t i = 0; i < sizeof(offsets) / sizeof(offsets[0]); i++) {
        memcpy(t, h, sizeof(t));
        t[offsets[i]] = t[offsets[i]] == 'A' ? 'B' : 'A';
        assert_int_equal(auth_hash_verify(t, "tamper-proof", 12), AUTH_HASH_MISMATCH);
    }
    /* other parameters with the same salt and key: a different derivation */
    memcpy(t, h, sizeof(t));
    t[strlen("$scrypt$ln=1")] = '1';
    assert_int_equal(strncmp(t, "$scrypt$ln=11,", 14), 0);
    assert_int_equal(auth_hash_verify(t, "tamper-proof", 12), AUTH_HASH_MISMATCH);
    /* truncated key: still a valid length? 43 chars is not base64 */
    memcpy(t, h, sizeof(t));
    t[strlen(t) - 1] = '\0';
    assert_int_equal(auth_hash_verify(t, "tamper-proof", 12), AUTH_HASH_MALFORMED);
}

static void test_parse_errors(void **state)
{
    (void)state;
    char good[AUTH_HASH_STR_MAX];
    make("x", good);
    const char *tail = strchr(good + 8, '$'); /* "$salt$key" */
    char buf[512];
    static const char *const bad_params[] = {
        "ln=9,r=8,p=1",  /* below the cost floor */
        "ln=21,r=8,p=1", /* above the ceiling */
        "ln=0,r=8,p=1",   "ln=10,r=0,p=1",     "ln=10,r=33,p=1",  "ln=10,r=8,p=0",
        "ln=10,r=8,p=17", "ln=010,r=8,p=1", /* leading zero */
        "ln=10,p=1,r=8",                    /* order is fixed */
        "ln=10,r=8",      "ln=,r=8,p=1",       "ln=1000,r=8,p=1", "ln=10;r=8;p=1",
        "LN=10,r=8,p=1",  "ln=10,r=8,p=1,x=2", "ln=-1,r=8,p=1",   "ln=20,r=32,p=1", /* 4 GiB */
    };
    for (size_t i = 0; i < sizeof(bad_params) / sizeof(bad_params[0]); i++) {
        snprintf(buf, sizeof(buf), "$scrypt$%s%s", bad_params[i], tail);
        auth_hash_parsed_t p;
        if (auth_hash_parse(buf, &p) == 0)
            fail_msg("accepted %s", buf);
        assert_int_equal(auth_hash_verify(buf, "x", 1), AUTH_HASH_MALFORMED);
    }
    static const char *const bad_whole[] = {
        "",
        "$scrypt$",
        "scrypt$ln=10,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA==$"
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "$bcrypt$ln=10,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA==$"
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "$scrypt$ln=10,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA==",                          /* no key */
        "$scrypt$ln=10,r=8,p=1$$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",     /* no salt */
        "$scrypt$ln=10,r=8,p=1$AAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", /* short salt */
        "$scrypt$ln=10,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAA",                 /* short key */
        "$scrypt$ln=10,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA=$"
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "$scrypt$ln=10,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA==$"
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=$",
        "$scrypt$ln=10,r=8,p=1$AAAA "
        "AAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    };
    for (size_t i = 0; i < sizeof(bad_whole) / sizeof(bad_whole[0]); i++) {
        auth_hash_parsed_t p;
        if (auth_hash_parse(bad_whole[i], &p) == 0)
            fail_msg("accepted %s", bad_whole[i]);
    }
    /* too long as a whole */
    memset(buf, 'A', sizeof(buf) - 1);
    buf[sizeof(buf) - 1] = '\0';
    memcpy(buf, "$scrypt$ln=10,r=8,p=1$", 22);
    auth_hash_parsed_t p;
    assert_int_equal(auth_hash_parse(buf, &p), -1);
    assert_int_equal(auth_hash_parse(NULL, &p), -1);
}

static void test_params_check(void **state)
{
    (void)state;
    char err[160];
    auth_scrypt_params_t ok = {15, 8, 1};
    assert_int_equal(auth_hash_params_check(&ok, err, sizeof(err)), 0);
    assert_int_equal(auth_hash_memory(&ok), 128ull * 8 * ((1ull << 15) + 2) + 128ull * 8);
    auth_scrypt_params_t low = {9, 8, 1}, high = {21, 8, 1}, r0 = {15, 0, 1}, p0 = {15, 8, 0},
                         huge = {20, 32, 1};
    assert_int_equal(auth_hash_params_check(&low, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "ln"));
    assert_int_equal(auth_hash_params_check(&high, err, sizeof(err)), -1);
    assert_int_equal(auth_hash_params_check(&r0, err, sizeof(err)), -1);
    assert_int_equal(auth_hash_params_check(&p0, err, sizeof(err)), -1);
    assert_int_equal(auth_hash_params_check(&huge, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "MiB"));
    char h[AUTH_HASH_STR_MAX];
    assert_int_equal(auth_hash_make(&low, "x", 1, h, sizeof(h)), -1);
    /* an output buffer too small is refused, not overrun */
    assert_int_equal(auth_hash_make(&fast, "x", 1, h, 40), -1);
}

/* The default cost must work: OpenSSL's own memory cap is below what ln=15 r=8 needs. */
static void test_default_cost(void **state)
{
    (void)state;
    auth_scrypt_params_t def = {15, 8, 1};
    char h[AUTH_HASH_STR_MAX];
    assert_int_equal(auth_hash_make(&def, "default-cost", 12, h, sizeof(h)), 0);
    assert_int_equal(auth_hash_verify(h, "default-cost", 12), AUTH_HASH_MATCH);
    assert_false(auth_hash_outdated(h, &def));
    assert_true(auth_hash_outdated(h, &fast));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_round_trip),
        cmocka_unit_test(test_wrong_password),
        cmocka_unit_test(test_binary_and_empty_passwords),
        cmocka_unit_test(test_different_salts),
        cmocka_unit_test(test_tampered_string),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_params_check),
        cmocka_unit_test(test_default_cost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
