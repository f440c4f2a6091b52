/*
 * dkim_test: relaxed canonicalization (the RFC 6376 3.4.6 example), body
 * hash vectors and the body hash fed in pieces, the published RFC 8463
 * signatures checked by our verifier, signatures made with fixed keys that
 * must come out the same every time, and what a signature must catch:
 * a changed header or body, a From added on top (oversigning), a key that
 * does not match its record.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "core/buf.h"
#include "mail/base64.h"
#include "mail/dkim.h"

/* RFC 8463 Appendix A: the Ed25519 key (seed nWGxne/9...) as PKCS#8 PEM */
static const char rfc_ed_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n"
    "-----END PRIVATE KEY-----\n";
static const char rfc_ed_record[] =
    "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
static const char rfc_rsa_record[] =
    "v=DKIM1; k=rsa; "
    "p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/"
    "J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/"
    "8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3"
    "Ip3G+2kryOTIKT+l/K4w3QIDAQAB";

/* RFC 8463 Appendix A.3: the example message signed with both algorithms */
static const char rfc_signed[] = "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
                                 " d=football.example.com; i=@football.example.com;\r\n"
                                 " q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
                                 " subject : date : message-id : from : subject : date;\r\n"
                                 " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
                                 " b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\r\n"
                                 " Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==\r\n"
                                 "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n"
                                 " d=football.example.com; i=@football.example.com;\r\n"
                                 " q=dns/txt; s=test; t=1528637909; h=from : to : subject :\r\n"
                                 " date : message-id : from : subject : date;\r\n"
                                 " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
                                 " b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3\r\n"
                                 " DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz\r\n"
                                 " dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=\r\n";

static const char rfc_message[] = "From: Joe SixPack <joe@football.example.com>\r\n"
                                  "To: Suzie Q <suzie@shopping.example.net>\r\n"
                                  "Subject: Is dinner ready?\r\n"
                                  "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
                                  "Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
                                  "\r\n"
                                  "Hi.\r\n"
                                  "\r\n"
                                  "We lost the game.  Are you hungry yet?\r\n"
                                  "\r\n"
                                  "Joe.\r\n";

/* A fixed RSA 2048 key, so RSA signatures can be compared byte for byte too */
static const char fixed_rsa_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDCE33PDDgxACvN\n"
    "z26o494ht2H01hZ1OqFRidBwfsrFucRrr60QTIYwskK9PYg6sXeNGW6Elvi+sxGr\n"
    "azNJIyz3fqV8/NHxElF8A+oaaHCzofivV01kqcIdbwEpyFFIwhF9VUqGQEIqoQkI\n"
    "bVsnhDbsJ5P97XZLnJ6GAqc9LmQpIeUUGbjRWvKfDKCYz4JcJ7fs55oXWxkGQHQs\n"
    "XcsRXd1SxCLuTON7P0WcEy+Yox5xrlbWZSyLFG6ABVxjVdumnP56Az7Ls46Xwziv\n"
    "nbRXCsm2isMQMHUSU4bGGg/KRk1yiYm8WCPDhFbemEkNYTiRhxRh8lDHEe7nCMzP\n"
    "ohTAMz+JAgMBAAECggEAAvpElGAmHo5XnbVAh+PTHSZQoO6F8q9/GR6prYgseUMj\n"
    "4dkUqSrbZjTd9ERU6j2dzXLl8K/WSiq6KyyeYVFiV7vAMz43xGCZEnOG7HfMvtzN\n"
    "0Xbf75rxKP1ygZ8arCiaFxevaIbk3P2Sg2gWHXGYXCAxU5SIm5lgD0NMKJKlI8Jk\n"
    "BiSk9SoTxlmEKs3tPJWnv8AzMK8r0S9yEZ6mZqW2ViN0rmMK5VAwA8baESUjNb4X\n"
    "EN5ofP7dEU36tpnCtaWgSqyjOJSEJCnjJq2BSqbu8QhfE+ocubUSkC2HMOSSeZI5\n"
    "2B6s/lppEJB6aeJWjKoB0ei/kxlYwJ/8j3BMeab+AQKBgQDpHL1WI4l4IQRIHtPm\n"
    "lwyuSwE+SL8uNeSdZS70NflbUAUHrDEpO1A1/NZtdtdGZEzJMHo6pVr8Twl5XtYK\n"
    "vCt16uESmNwJTNhmaT7zlk2MJr+/uj+a9tUiPasRyxe0HTsAipXK6M9Zz5+iCv13\n"
    "CbMcRt6f0DcA4U+2tIbHC1zFCQKBgQDVIZThhLEIUq0x0q/ax85yCs7SvA7+9ryF\n"
    "q+KU1wkcVg2yRqJWvOvLhpM8FghZKjOll0jtuJIYJcUEGF1du6OT8IkvU17Itz3+\n"
    "0DI0rtwmh3BY74sakSuUNObQkiV3j/DdYPt50U+twdERVvrgt+7VX80r2PWzWCcG\n"
    "uL1g0FfGgQKBgBCkm6P1v4/TE6IuiURyTlZ3Rmxy9ytOb7cJDVQkMlxhlypYEd52\n"
    "vKBOH+UK0g3VhWHr0x4yxg8zeWKv8aosixHNJiqUvUjwspaFNxhfB8RU0+XVX0sq\n"
    "Ckd6jackj9mtKJQ+ULl+66bm2ufPzw7bo20GZkiUrgijDXTm6KR3XDU5AoGBAM+7\n"
    "lIYetAJduwu1w8tlNjX3jNDflWozCVrsRsM1uF6TDXR23iHWr6jG+Vj2TJrDxGUg\n"
    "yGdTn6nDnny4VsBWdEBskPm8s8TEvbtQJ68rw84V8o3spNN3LVeeHF6sI7KebHEJ\n"
    "5vI77gJ4x5K0CYDgJfx5DNww8oIkaJ1nkMX9K6CBAoGAbBkvqNfDaw6s4CfDcMmK\n"
    "j2J7DQHl8QQ6wujtgrRPu8DnrQoUhs2rQq5JUmrcWLO50Y9o7DAxB6brBeYz/iqS\n"
    "oShG6RvuT3ECTUd1ZD2pZCVWfFGC06c88saZhnns2vm+C/pIpMmiy6X48J1wGJ/H\n"
    "Ebfl+EHhvvJ9kAolK7CRlR4=\n"
    "-----END PRIVATE KEY-----\n";

/* ---- helpers ---- */

typedef struct records {
    const char *selector[4];
    const char *txt[4];
    size_t n;
} records_t;

static const char *lookup(const char *selector, const char *domain, void *arg)
{
    records_t *r = arg;
    (void)domain;
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->selector[i], selector) == 0)
            return r->txt[i];
    return NULL;
}

static char *concat(const char *a, size_t alen, const char *b, size_t blen)
{
    char *s = malloc(alen + blen + 1);
    memcpy(s, a, alen);
    memcpy(s + alen, b, blen);
    s[alen + blen] = '\0';
    return s;
}

static void body_hash_b64(const char *body, size_t len, size_t piece, char out[64])
{
    dkim_body_t b;
    uint8_t h[DKIM_HASH_LEN];
    assert_int_equal(dkim_body_init(&b), 0);
    for (size_t at = 0; at < len; at += piece) {
        size_t n = len - at < piece ? len - at : piece;
        assert_int_equal(dkim_body_update(&b, body + at, n), 0);
    }
    assert_int_equal(dkim_body_final(&b, h), 0);
    assert_true(base64_encode(h, sizeof(h), out, 64) > 0);
}

static char *collect_body(const char *body)
{
    buf_t out;
    buf_init(&out, 0);
    dkim_body_t b;
    dkim_body_init_collect(&b, &out);
    assert_int_equal(dkim_body_update(&b, body, strlen(body)), 0);
    assert_int_equal(dkim_body_final(&b, NULL), 0);
    buf_append(&out, "", 1);
    size_t n;
    return buf_steal(&out, &n);
}

/* ---- canonicalization ---- */

static void test_canon_header_rfc6376_example(void **state)
{
    (void)state;
    /* RFC 6376 3.4.6 */
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"A: X\r\n", "a:X"},
        {"B : Y\t\r\n\tZ  \r\n", "b:Y Z"},
        {"Subject:   many   spaces\t here  ", "subject:many spaces here"},
        {"X-Empty:\r\n", "x-empty:"},
        {"MIXED-Case\t:\tv\r\n", "mixed-case:v"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        buf_t out;
        buf_init(&out, 0);
        assert_int_equal(dkim_canon_header(cases[i].in, strlen(cases[i].in), &out), 0);
        assert_int_equal(buf_used(&out), strlen(cases[i].out));
        assert_memory_equal(buf_head(&out), cases[i].out, strlen(cases[i].out));
        buf_free(&out);
    }
    buf_t out;
    buf_init(&out, 0);
    assert_int_equal(dkim_canon_header("no colon\r\n", 10, &out), -1);
    buf_free(&out);
}

static void test_canon_body_rfc6376_example(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {" C \r\nD \t E\r\n\r\n\r\n", " C\r\nD E\r\n"}, /* RFC 6376 3.4.6 */
        {"", ""},
        {"\r\n\r\n\r\n", ""},
        {"  \t \r\n \r\n", ""},
        {"no line end", "no line end\r\n"},
        {"a\r\n\r\nb\r\n\r\n", "a\r\n\r\nb\r\n"},
        {"tail  ", "tail\r\n"},
        {"bare\rcr\r\n", "bare\rcr\r\n"},
        {"ends with cr\r", "ends with cr\r\r\n"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *got = collect_body(cases[i].in);
        assert_string_equal(got, cases[i].out);
        free(got);
    }
}

static void test_body_hash_vectors(void **state)
{
    (void)state;
    static const struct {
        const char *body, *hash;
    } cases[] = {
        /* an empty body hashes as nothing at all (relaxed) */
        {"", "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="},
        {"\r\n\r\n", "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="},
        {" C \r\nD \t E\r\n\r\n\r\n", "unak6JHq0wL+Q1HP7dW1tjBx9FLA6DffoZ0qrLwbbpo="},
        /* RFC 8463's body, with its published bh=, however it is spaced and ended */
        {"Hi.\r\n\r\nWe lost the game.  Are you hungry yet?\r\n\r\nJoe.\r\n",
         "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8="},
        {"Hi. \r\n\r\nWe  lost\tthe game. Are you hungry yet?\r\n\r\nJoe.\r\n\r\n\r\n",
         "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8="},
        {"Hi.\r\n\r\nWe lost the game. Are you hungry yet?\r\n\r\nJoe.",
         "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8="},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char got[64];
        body_hash_b64(cases[i].body, strlen(cases[i].body), 1 << 20, got);
        assert_string_equal(got, cases[i].hash);
    }
    /* a changed word is a different hash */
    char got[64];
    const char *other = "Hi.\r\n\r\nWe won the game. Are you hungry yet?\r\n\r\nJoe.\r\n";
    body_hash_b64(other, strlen(other), 1 << 20, got);
    assert_string_not_equal(got, "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=");
}

static void test_body_hash_in_pieces(void **state)
{
    (void)state;
    const char *body = "line one  \r\n\tindented\t\r\n\r\nbare\rcr and  spaces\r\n \r\n\r\n";
    char whole[64];
    body_hash_b64(body, strlen(body), 1 << 20, whole);
    /* every piece size, so a CR and its LF, or a run of spaces, fall on a boundary */
    for (size_t piece = 1; piece < 16; piece++) {
        char got[64];
        body_hash_b64(body, strlen(body), piece, got);
        assert_string_equal(got, whole);
    }
}

/*
 * A body far longer than the digest's staging area, with a line longer than
 * it, hashed in pieces of every awkward size: the same hash as SHA-256 of
 * its canonical form collected whole.
 */
static void test_body_hash_long(void **state)
{
    (void)state;
    buf_t body;
    buf_init(&body, 0);
    for (int i = 0; i < 400; i++)
        buf_printf(&body, "line %d  with\tspace \r\n%s", i, i % 7 == 0 ? "\r\n\r\n" : "");
    for (int i = 0; i < 3 * DKIM_BODY_STAGE; i++)
        buf_append(&body, i % 5000 == 4999 ? " " : "x", 1); /* runs past the stage */
    buf_append_str(&body, "\r\nbare\rcr and\nlf\r\n\r\n");
    buf_append(&body, "", 1);
    const char *text = buf_head(&body);
    size_t len = strlen(text);

    char *canon = collect_body(text);
    uint8_t h[32];
    unsigned hn = 0;
    assert_int_equal(EVP_Digest(canon, strlen(canon), h, &hn, EVP_sha256(), NULL), 1);
    char want[64];
    assert_true(base64_encode(h, sizeof(h), want, sizeof(want)) > 0);
    free(canon);

    const size_t pieces[] = {1, 3, 1000, DKIM_BODY_STAGE - 1, DKIM_BODY_STAGE,
                             DKIM_BODY_STAGE + 1, 1 << 20};
    for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
        char got[64];
        body_hash_b64(text, len, pieces[i], got);
        assert_string_equal(got, want);
    }
    buf_free(&body);
}

/* ---- the published signatures ---- */

static void test_verify_rfc8463_signatures(void **state)
{
    (void)state;
    records_t recs = {{"brisbane", "test"}, {rfc_ed_record, rfc_rsa_record}, 2};
    char *msg = concat(rfc_signed, strlen(rfc_signed), rfc_message, strlen(rfc_message));
    dkim_result_t res[4];
    assert_int_equal(dkim_verify_message(msg, strlen(msg), lookup, &recs, res, 4), 2);
    assert_true(res[0].ok);
    assert_int_equal(res[0].alg, DKIM_ALG_ED25519_SHA256);
    assert_string_equal(res[0].selector, "brisbane");
    assert_string_equal(res[0].domain, "football.example.com");
    assert_true(res[1].ok);
    assert_int_equal(res[1].alg, DKIM_ALG_RSA_SHA256);

    /* a changed subject: both fail on the header hash */
    char *bad = strdup(msg);
    memcpy(strstr(bad, "Is dinner"), "Is lunch ", 9);
    assert_int_equal(dkim_verify_message(bad, strlen(bad), lookup, &recs, res, 4), 2);
    assert_false(res[0].ok);
    assert_string_equal(res[0].why, "signature does not verify");
    assert_false(res[1].ok);
    free(bad);

    /* a changed body: the body hash */
    bad = strdup(msg);
    memcpy(strstr(bad, "Joe.\r\n"), "Bob.", 4);
    assert_int_equal(dkim_verify_message(bad, strlen(bad), lookup, &recs, res, 4), 2);
    assert_false(res[0].ok);
    assert_string_equal(res[0].why, "body hash does not match");
    free(bad);

    /* the key records swapped: the key type does not match */
    records_t swapped = {{"brisbane", "test"}, {rfc_rsa_record, rfc_ed_record}, 2};
    assert_int_equal(dkim_verify_message(msg, strlen(msg), lookup, &swapped, res, 4), 2);
    assert_false(res[0].ok);
    assert_false(res[1].ok);
    free(msg);
}

/* ---- signing ---- */

static const char sample[] = "Received: from client by relay; Fri, 1 Mar 2024 10:00:00 +0000\r\n"
                             "From: App <app@example.test>\r\n"
                             "To: Someone <someone@example.org>\r\n"
                             "Subject: a  signed\r\n"
                             "\tmessage\r\n"
                             "Date: Fri, 1 Mar 2024 10:00:00 +0000\r\n"
                             "Message-ID: <m1@example.test>\r\n"
                             "X-Mailer: not signed\r\n"
                             "List-Unsubscribe: <mailto:unsub@example.test>\r\n"
                             "Resent-From: other@example.test\r\n"
                             "\r\n"
                             "Hello.\r\n"
                             "\r\n";

static dkim_key_t *key_from(const char *sel, dkim_alg_t alg, const char *pem)
{
    char err[128];
    dkim_key_t *k = dkim_key_from_pem(sel, alg, pem, strlen(pem), err, sizeof(err));
    assert_non_null(k);
    return k;
}

static char *sign(const char *msg, dkim_key_t *const *keys, size_t n)
{
    buf_t out;
    buf_init(&out, 0);
    char err[128];
    assert_int_equal(dkim_sign_message(msg, strlen(msg), "example.test", keys, n, 1709287200, &out,
                                       err, sizeof(err)),
                     0);
    buf_append(&out, "", 1);
    size_t len;
    return buf_steal(&out, &len);
}

/*
 * What the fixed keys must give for sample at t=1709287200 (both deterministic:
 * Ed25519, and RSA PKCS#1 v1.5). These fields were checked with an independent
 * verifier when they were recorded; tests/e2e/test_dkim.py does that for every run.
 */
static const char golden_ed[] =
    "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed; d=example.test;\r\n"
    "\ts=sx1e; t=1709287200; h=from:from:to:subject:date:message-id:\r\n"
    "\tlist-unsubscribe:resent-from;\r\n"
    "\tbh=yZQq1c8wjBl0fZ4Wc/oraMCAG1mZJv5v/hlvyFy+t6A=; b=vsKyQgl8zrlNgP1qP\r\n"
    "\tByqyweICPxmP9slBWSwVlqxP/tIeY1j/OtqWW2R1zHdpdbCpz2L69rAfd0H5Mz6TpN0A\r\n"
    "\tQ==\r\n";
static const char golden_rsa[] =
    "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.test; s=sx1;\r\n"
    "\tt=1709287200; h=from:from:to:subject:date:message-id:\r\n"
    "\tlist-unsubscribe:resent-from;\r\n"
    "\tbh=yZQq1c8wjBl0fZ4Wc/oraMCAG1mZJv5v/hlvyFy+t6A=; b=bxL4LiWd9MSYlaNuC\r\n"
    "\tmSIPgmgxmjmc8Enop2rLVgUli28Ev1z6myg0RXIlpElKbzg2crrjrkKgZXwsUlsezce+\r\n"
    "\tiNr1+9FQ0wRYtEOHj0zRuaa62FgVZhkz+Kh6L7uYwAJwzzKoNLtBTUldfMhp4wp7/E4D\r\n"
    "\t4jp6y7hOLnr0tXYXbuGQY5pn/18YwSH+YY0Fz8B37FQa9PlbHrv7rezmGS7ZKFUr+OO8\r\n"
    "\teGDAsR27jTQitsYe1i2wW7pBFU5KSuoIFGuZ+LhBkubNGD4CULPL5jkwjdfArGGHTAIR\r\n"
    "\tqpCpBsW/UOF1TgO96mWHB0EkQYEFqcLAx9WGBZmjXU5XFXVUDNOeQ==\r\n";

static void test_sign_fixed_keys_stable(void **state)
{
    (void)state;
    dkim_key_t *keys[2] = {key_from("sx1e", DKIM_ALG_ED25519_SHA256, rfc_ed_pem),
                           key_from("sx1", DKIM_ALG_RSA_SHA256, fixed_rsa_pem)};
    char *a = sign(sample, &keys[0], 1);
    assert_string_equal(a, golden_ed);
    char *b = sign(sample, &keys[1], 1);
    assert_string_equal(b, golden_rsa);
    char *both = sign(sample, keys, 2);
    char *again = sign(sample, keys, 2);
    assert_string_equal(both, again);
    /* one field per key, in the order of the keys */
    char *want = concat(a, strlen(a), b, strlen(b));
    assert_string_equal(both, want);
    free(want);
    free(a);
    free(b);
    free(both);
    free(again);
    dkim_key_destroy(&keys[0]);
    dkim_key_destroy(&keys[1]);
    dkim_key_destroy(&keys[1]);
}

static void test_sign_shape(void **state)
{
    (void)state;
    dkim_key_t *k = key_from("sx1", DKIM_ALG_RSA_SHA256, fixed_rsa_pem);
    char *sig = sign(sample, &k, 1);
    /* folded: CRLF line ends, continuation lines start with a tab, none too long */
    assert_true(strncmp(sig, "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;", 53) == 0);
    size_t lines = 0;
    for (const char *p = sig; *p;) {
        const char *e = strstr(p, "\r\n");
        assert_non_null(e);
        assert_true(e - p <= 78);
        if (p != sig)
            assert_int_equal(*p, '\t');
        lines++;
        p = e + 2;
    }
    assert_true(lines >= 4);
    /* unfolded, the h= list signs From twice and what is present, not Received or X- */
    char flat[4096];
    size_t o = 0;
    for (const char *p = sig; *p && o + 1 < sizeof(flat); p++)
        if (*p != '\r' && *p != '\n' && *p != '\t' && *p != ' ')
            flat[o++] = *p;
    flat[o] = '\0';
    assert_non_null(strstr(flat, ";d=example.test;"));
    assert_non_null(strstr(flat, ";s=sx1;"));
    assert_non_null(strstr(flat, ";t=1709287200;"));
    assert_non_null(strstr(flat, "h=from:from:to:subject:date:message-id:list-unsubscribe:"
                                 "resent-from;"));
    assert_null(strstr(flat, "received"));
    assert_null(strstr(flat, "x-mailer"));
    free(sig);
    dkim_key_destroy(&k);
}

static void test_sign_verify_generated_keys(void **state)
{
    (void)state;
    char *pem_rsa, *pem_ed, pub_rsa[DKIM_PUBLIC_MAX], pub_ed[DKIM_PUBLIC_MAX];
    assert_int_equal(dkim_key_generate(DKIM_ALG_RSA_SHA256, &pem_rsa, pub_rsa, sizeof(pub_rsa)), 0);
    assert_int_equal(dkim_key_generate(DKIM_ALG_ED25519_SHA256, &pem_ed, pub_ed, sizeof(pub_ed)),
                     0);
    assert_int_equal(strlen(pub_ed), 44);
    assert_true(strlen(pub_rsa) > 300);
    char again[DKIM_PUBLIC_MAX];
    assert_int_equal(
        dkim_public_from_pem(DKIM_ALG_RSA_SHA256, pem_rsa, strlen(pem_rsa), again, sizeof(again)),
        0);
    assert_string_equal(again, pub_rsa);
    assert_int_equal(dkim_public_from_pem(DKIM_ALG_ED25519_SHA256, pem_rsa, strlen(pem_rsa), again,
                                          sizeof(again)),
                     -1);
    char rec_rsa[700], rec_ed[200], name[300];
    assert_int_equal(dkim_record_value(DKIM_ALG_RSA_SHA256, pub_rsa, rec_rsa, sizeof(rec_rsa)), 0);
    assert_int_equal(dkim_record_value(DKIM_ALG_ED25519_SHA256, pub_ed, rec_ed, sizeof(rec_ed)), 0);
    assert_true(strncmp(rec_ed, "v=DKIM1; k=ed25519; p=", 22) == 0);
    assert_int_equal(dkim_record_name("sx1", "example.test", name, sizeof(name)), 0);
    assert_string_equal(name, "sx1._domainkey.example.test");

    dkim_key_t *keys[2] = {key_from("sx1", DKIM_ALG_RSA_SHA256, pem_rsa),
                           key_from("sx1e", DKIM_ALG_ED25519_SHA256, pem_ed)};
    char *sigs = sign(sample, keys, 2);
    char *msg = concat(sigs, strlen(sigs), sample, strlen(sample));
    records_t recs = {{"sx1", "sx1e"}, {rec_rsa, rec_ed}, 2};
    dkim_result_t res[4];
    assert_int_equal(dkim_verify_message(msg, strlen(msg), lookup, &recs, res, 4), 2);
    assert_true(res[0].ok);
    assert_true(res[1].ok);
    assert_int_equal(res[0].alg, DKIM_ALG_RSA_SHA256);
    assert_int_equal(res[1].alg, DKIM_ALG_ED25519_SHA256);

    /* relaxed: refolded header and respaced body still verify */
    char *loose = strdup(msg);
    char *s = strstr(loose, "Subject: a  signed\r\n\tmessage");
    memcpy(s, "Subject:  a signed \r\n message", 29);
    assert_int_equal(dkim_verify_message(loose, strlen(loose), lookup, &recs, res, 4), 2);
    assert_true(res[0].ok && res[1].ok);
    free(loose);

    /* a second From on top: oversigning catches it */
    const char *extra = "From: Mallory <m@evil.example>\r\n";
    size_t cut = strlen(sigs);
    char *added = malloc(strlen(msg) + strlen(extra) + 1);
    memcpy(added, msg, cut);
    strcpy(added + cut, extra);
    strcat(added, msg + cut);
    assert_int_equal(dkim_verify_message(added, strlen(added), lookup, &recs, res, 4), 2);
    assert_false(res[0].ok);
    assert_false(res[1].ok);
    free(added);

    /* another key under the same selector: no */
    char *pem_other, pub_other[DKIM_PUBLIC_MAX], rec_other[200];
    assert_int_equal(
        dkim_key_generate(DKIM_ALG_ED25519_SHA256, &pem_other, pub_other, sizeof(pub_other)), 0);
    dkim_record_value(DKIM_ALG_ED25519_SHA256, pub_other, rec_other, sizeof(rec_other));
    records_t wrong = {{"sx1", "sx1e"}, {rec_rsa, rec_other}, 2};
    assert_int_equal(dkim_verify_message(msg, strlen(msg), lookup, &wrong, res, 4), 2);
    assert_true(res[0].ok);
    assert_false(res[1].ok);

    free(sigs);
    free(msg);
    dkim_secret_free(pem_rsa);
    dkim_secret_free(pem_ed);
    dkim_secret_free(pem_other);
    dkim_key_destroy(&keys[0]);
    dkim_key_destroy(&keys[1]);
}

static void test_sign_refusals(void **state)
{
    (void)state;
    char err[128];
    /* a key of the wrong type, a bad selector, garbage */
    assert_null(dkim_key_from_pem("sx1", DKIM_ALG_RSA_SHA256, rfc_ed_pem, strlen(rfc_ed_pem), err,
                                  sizeof(err)));
    assert_null(dkim_key_from_pem("sx1", DKIM_ALG_ED25519_SHA256, fixed_rsa_pem,
                                  strlen(fixed_rsa_pem), err, sizeof(err)));
    assert_null(dkim_key_from_pem("bad selector", DKIM_ALG_ED25519_SHA256, rfc_ed_pem,
                                  strlen(rfc_ed_pem), err, sizeof(err)));
    assert_null(dkim_key_from_pem("sx1", DKIM_ALG_ED25519_SHA256, "junk", 4, err, sizeof(err)));
    assert_null(strstr(err, "PRIVATE"));

    dkim_key_t *k = key_from("sx1e", DKIM_ALG_ED25519_SHA256, rfc_ed_pem);
    buf_t out;
    buf_init(&out, 0);
    const char *no_from = "To: a@example.org\r\nSubject: x\r\n\r\nbody\r\n";
    assert_int_equal(dkim_sign_message(no_from, strlen(no_from), "example.test", &k, 1, 1, &out,
                                       err, sizeof(err)),
                     -1);
    assert_string_equal(err, "the message has no From field");
    const char *broken = " leading continuation\r\nFrom: a@example.test\r\n\r\n";
    assert_int_equal(
        dkim_sign_message(broken, strlen(broken), "example.test", &k, 1, 1, &out, err, sizeof(err)),
        -1);
    assert_int_equal(
        dkim_sign_message(sample, strlen(sample), "bad domain;", &k, 1, 1, &out, err, sizeof(err)),
        -1);
    assert_int_equal(buf_used(&out), 0);
    buf_free(&out);
    dkim_key_destroy(&k);
}

static void test_record_parse(void **state)
{
    (void)state;
    dkim_record_t r;
    const char *why;
    const char *t1 = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    assert_int_equal(dkim_record_parse(t1, strlen(t1), &r, &why), 0);
    assert_string_equal(r.k, "ed25519");
    assert_string_equal(r.p, "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=");
    const char *t2 = "p=MIIB IjAN Bgkq ; t=y";
    assert_int_equal(dkim_record_parse(t2, strlen(t2), &r, &why), 0);
    assert_string_equal(r.k, "rsa");
    assert_string_equal(r.p, "MIIBIjANBgkq");
    const char *t3 = "v=DKIM1; k=rsa; p=";
    assert_int_equal(dkim_record_parse(t3, strlen(t3), &r, &why), 0);
    assert_string_equal(r.p, "");
    const char *bad[] = {"k=rsa; v=DKIM1; p=abc", "v=DKIM2; p=abc", "v=DKIM1; k=rsa",
                         "v=DKIM1; junk; p=abc"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(dkim_record_parse(bad[i], strlen(bad[i]), &r, &why), -1);
        assert_non_null(why);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_canon_header_rfc6376_example),
        cmocka_unit_test(test_canon_body_rfc6376_example),
        cmocka_unit_test(test_body_hash_vectors),
        cmocka_unit_test(test_body_hash_in_pieces),
        cmocka_unit_test(test_body_hash_long),
        cmocka_unit_test(test_verify_rfc8463_signatures),
        cmocka_unit_test(test_sign_fixed_keys_stable),
        cmocka_unit_test(test_sign_shape),
        cmocka_unit_test(test_sign_verify_generated_keys),
        cmocka_unit_test(test_sign_refusals),
        cmocka_unit_test(test_record_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
