/*
 * tls_test: building TLS contexts from PEM files and the errors that name
 * the file at fault; the protocol policy (TLS 1.2 and 1.3 only, AEAD
 * ciphers for 1.2) checked with in-memory handshakes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/err.h>

#include "net/tls.h"
#include "test_cert.h"

static test_cert_t tc;

static int setup(void **state)
{
    (void)state;
    return test_cert_make(&tc);
}

static int teardown(void **state)
{
    (void)state;
    test_cert_remove(&tc);
    return 0;
}

static void test_server_ctx(void **state)
{
    (void)state;
    char err[512] = "";
    SSL_CTX *ctx = tls_server_ctx(tc.cert, tc.key, err, sizeof(err));
    if (ctx == NULL)
        fail_msg("%s", err);
    assert_int_equal(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
    uint64_t opts = SSL_CTX_get_options(ctx);
    assert_true(opts & SSL_OP_NO_COMPRESSION);
    assert_true(opts & SSL_OP_NO_RENEGOTIATION);
    tls_ctx_free(&ctx);
    assert_null(ctx);
    tls_ctx_free(&ctx); /* safe twice */
}

static void test_server_ctx_errors(void **state)
{
    (void)state;
    char missing[700], garbage[700];
    snprintf(missing, sizeof(missing), "%s/missing.pem", tc.dir);
    snprintf(garbage, sizeof(garbage), "%s/garbage.pem", tc.dir);
    FILE *f = fopen(garbage, "w");
    fputs("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n", f);
    fclose(f);

    static const struct {
        int cert_which, key_which; /* 0: good, 1: missing, 2: garbage, 3: other key */
        int name_cert;             /* the error names the cert (1), the key (2), both (3) */
        const char *reason;
    } cases[] = {
        {1, 0, 1, "cannot load certificate"},
        {2, 0, 1, "cannot load certificate"},
        {0, 1, 2, "cannot load private key"},
        {0, 2, 2, "cannot load private key"},
        {0, 3, 2, "mismatch"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *paths[] = {NULL, missing, garbage, tc.other_key};
        const char *cert = cases[i].cert_which ? paths[cases[i].cert_which] : tc.cert;
        const char *key = cases[i].key_which ? paths[cases[i].key_which] : tc.key;
        char err[1024] = "";
        SSL_CTX *ctx = tls_server_ctx(cert, key, err, sizeof(err));
        assert_null(ctx);
        if (strstr(err, cases[i].reason) == NULL)
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err, cases[i].reason);
        if ((cases[i].name_cert & 1) && strstr(err, cert) == NULL)
            fail_msg("case %zu: \"%s\" does not name %s", i, err, cert);
        if ((cases[i].name_cert & 2) && strstr(err, key) == NULL)
            fail_msg("case %zu: \"%s\" does not name %s", i, err, key);
        /* the error queue is left clean for the next caller */
        assert_int_equal(ERR_peek_error(), 0);
    }
    unlink(garbage);
}

static void test_client_ctx(void **state)
{
    (void)state;
    char err[512] = "";
    SSL_CTX *ctx = tls_client_ctx(tc.cert, err, sizeof(err));
    assert_non_null(ctx);
    assert_int_equal(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
    tls_ctx_free(&ctx);

    ctx = tls_client_ctx(NULL, err, sizeof(err)); /* the system store */
    assert_non_null(ctx);
    tls_ctx_free(&ctx);

    char missing[700];
    snprintf(missing, sizeof(missing), "%s/no-ca.pem", tc.dir);
    assert_null(tls_client_ctx(missing, err, sizeof(err)));
    assert_non_null(strstr(err, missing));
    assert_non_null(strstr(err, "trust anchors"));
}

static void test_last_error(void **state)
{
    (void)state;
    char buf[256];
    ERR_clear_error();
    assert_string_equal(tls_last_error(buf, sizeof(buf)), "unknown TLS error");
    ERR_raise(ERR_LIB_SSL, SSL_R_NO_CIPHERS_AVAILABLE);
    tls_last_error(buf, sizeof(buf));
    assert_non_null(strstr(buf, "no cipher"));
    assert_int_equal(ERR_peek_error(), 0);
}

/* In-memory handshake; 1 on success with the version, 0 when refused. */
static int handshake(SSL_CTX *sctx, SSL_CTX *cctx, char *version, size_t size)
{
    SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
    BIO *sb, *cb;
    assert_int_equal(BIO_new_bio_pair(&sb, 0, &cb, 0), 1);
    SSL_set_bio(s, sb, sb);
    SSL_set_bio(c, cb, cb);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    int ok = 0, cdone = 0, sdone = 0;
    for (int i = 0; i < 50; i++) {
        int rc = cdone ? 1 : SSL_do_handshake(c);
        if (rc == 1)
            cdone = 1;
        else if (SSL_get_error(c, rc) != SSL_ERROR_WANT_READ &&
                 SSL_get_error(c, rc) != SSL_ERROR_WANT_WRITE)
            break;
        rc = sdone ? 1 : SSL_do_handshake(s);
        if (rc == 1)
            sdone = 1;
        else if (SSL_get_error(s, rc) != SSL_ERROR_WANT_READ &&
                 SSL_get_error(s, rc) != SSL_ERROR_WANT_WRITE)
            break;
        if (cdone && sdone) {
            ok = 1;
            snprintf(version, size, "%s %s", SSL_get_version(s), SSL_get_cipher_name(s));
            break;
        }
    }
    ERR_clear_error();
    SSL_free(s);
    SSL_free(c);
    return ok;
}

static void test_protocol_policy(void **state)
{
    (void)state;
    char err[512] = "";
    SSL_CTX *sctx = tls_server_ctx(tc.cert, tc.key, err, sizeof(err));
    assert_non_null(sctx);
    static const struct {
        int min, max;
        const char *ciphers; /* TLS 1.2 and below */
        int ok;
        const char *want;
    } cases[] = {
        {0, 0, NULL, 1, "TLSv1.3"},
        {TLS1_2_VERSION, TLS1_2_VERSION, NULL, 1, "TLSv1.2 ECDHE-ECDSA-"},
        {TLS1_2_VERSION, TLS1_2_VERSION, "ECDHE-ECDSA-CHACHA20-POLY1305", 1,
         "TLSv1.2 ECDHE-ECDSA-CHACHA20-POLY1305"},
        /* CBC suites are not offered by the server */
        {TLS1_2_VERSION, TLS1_2_VERSION, "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384", 0,
         NULL},
        /* old protocols are refused even when the client offers them */
        {TLS1_VERSION, TLS1_1_VERSION, "DEFAULT:@SECLEVEL=0", 0, NULL},
        {TLS1_VERSION, TLS1_VERSION, "DEFAULT:@SECLEVEL=0", 0, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
        SSL_CTX_set_security_level(cctx, 0);
        if (cases[i].min)
            SSL_CTX_set_min_proto_version(cctx, cases[i].min);
        if (cases[i].max)
            SSL_CTX_set_max_proto_version(cctx, cases[i].max);
        if (cases[i].ciphers)
            SSL_CTX_set_cipher_list(cctx, cases[i].ciphers);
        SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
        char got[128] = "";
        int ok = handshake(sctx, cctx, got, sizeof(got));
        if (ok != cases[i].ok)
            fail_msg("case %zu: handshake %s", i, ok ? "accepted" : "refused");
        if (ok && strncmp(got, cases[i].want, strlen(cases[i].want)) != 0)
            fail_msg("case %zu: \"%s\", want \"%s...\"", i, got, cases[i].want);
        SSL_CTX_free(cctx);
    }
    tls_ctx_free(&sctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_ctx),
        cmocka_unit_test(test_server_ctx_errors),
        cmocka_unit_test(test_client_ctx),
        cmocka_unit_test(test_last_error),
        cmocka_unit_test(test_protocol_policy),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
