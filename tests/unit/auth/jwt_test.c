/*
 * jwt_test: bearer tokens checked by auth_jwt against keys made here with
 * OpenSSL: good HS256, RS256 and ES256 tokens pass, and each refusal is
 * told apart (bad signature, alg none, alg that is not the issuer's, key
 * confusion, expiry with and without the allowed skew, nbf and iat in the
 * future, wrong iss, wrong aud, identity, malformed base64url and JSON).
 * Also the oauth_issuers config: good lists load, bad ones stop with the
 * entry, file and line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "auth_jwt.h"
#include "core/conf.h"
#include "jwt_fixture.h"

#include <sys/stat.h>
#include <unistd.h>

#define USER "app@acme.test"

typedef struct jt {
    jf_keys_t keys;
    auth_jwt_issuers_t *issuers;
    char base[PATH_MAX / 4];
} jt_t;

static jt_t jt;

static int group_setup(void **state)
{
    (void)state;
    const char *base = getenv("SENDARIX_TEST_TMP");
    snprintf(jt.base, sizeof(jt.base), "%s", base && *base ? base : "/tmp");
    mkdir(jt.base, 0750);
    if (jf_keys_make(&jt.keys, jt.base) < 0)
        return -1;
    auth_jwt_global_init();
    char err[512];
    jt.issuers = auth_jwt_issuers_new();
    if (auth_jwt_issuers_add(jt.issuers, JF_ISS_HS, JF_AUD, "HS256", JF_SECRET, NULL, err,
                             sizeof(err)) < 0 ||
        auth_jwt_issuers_add(jt.issuers, JF_ISS_RS, JF_AUD, "RS256", NULL, jt.keys.rsa_pem, err,
                             sizeof(err)) < 0 ||
        auth_jwt_issuers_add(jt.issuers, JF_ISS_ES, JF_AUD, "ES256", NULL, jt.keys.ec_pem, err,
                             sizeof(err)) < 0) {
        fprintf(stderr, "issuers: %s\n", err);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    auth_jwt_issuers_destroy(&jt.issuers);
    jf_keys_free(&jt.keys);
    return 0;
}

static uint64_t now_ms(void)
{
    return (uint64_t)jf_now() * 1000;
}

static auth_jwt_status_t check(const char *token, const char *user)
{
    auth_jwt_result_t r;
    auth_jwt_status_t st = auth_jwt_verify(jt.issuers, token, strlen(token), user, now_ms(), &r);
    assert_int_equal(st, r.status);
    return st;
}

static void test_good_tokens(void **state)
{
    (void)state;
    char tok[JF_TOKEN_MAX];
    static const char *const algs[] = {"HS256", "RS256", "ES256"};
    static const char *const iss[] = {JF_ISS_HS, JF_ISS_RS, JF_ISS_ES};
    for (size_t i = 0; i < 3; i++) {
        jf_token(tok, &jt.keys, algs[i], USER, NULL);
        auth_jwt_result_t r;
        assert_int_equal(auth_jwt_verify(jt.issuers, tok, strlen(tok), USER, now_ms(), &r),
                         AUTH_JWT_OK);
        assert_string_equal(r.issuer, iss[i]);
    }
    /* aud as an array, email as the identity, nbf and iat in the past */
    char claims[1024];
    snprintf(claims, sizeof(claims),
             "{\"iss\":\"%s\",\"aud\":[\"other\",\"%s\"],\"email\":\"%s\",\"sub\":\"12345\","
             "\"exp\":%lld,\"nbf\":%lld,\"iat\":%lld.5}",
             JF_ISS_RS, JF_AUD, USER, jf_now() + 60, jf_now() - 10, jf_now() - 10);
    jf_sign(tok, "RS256", "RS256", claims, jt.keys.rsa, NULL);
    assert_int_equal(check(tok, USER), AUTH_JWT_OK);
}

static void test_bad_signature(void **state)
{
    (void)state;
    char tok[JF_TOKEN_MAX];
    static const char *const algs[] = {"HS256", "RS256", "ES256"};
    for (size_t i = 0; i < 3; i++) {
        jf_token(tok, &jt.keys, algs[i], USER, NULL);
        /* change the claims after signing: another user */
        char claims[1024], forged[JF_TOKEN_MAX];
        jf_claims(claims, sizeof(claims),
                  i == 0   ? JF_ISS_HS
                  : i == 1 ? JF_ISS_RS
                           : JF_ISS_ES,
                  "admin@acme.test", NULL);
        jf_sign(forged, algs[i], algs[i], claims, i == 1 ? jt.keys.rsa : jt.keys.ec, JF_SECRET);
        char *sig_orig = strrchr(tok, '.'), *sig_forged = strrchr(forged, '.');
        strcpy(sig_forged, sig_orig);
        assert_int_equal(check(forged, "admin@acme.test"), AUTH_JWT_SIGNATURE);
        /* one bit of the signature flipped */
        char *last = tok + strlen(tok) - 3;
        *last = *last == 'A' ? 'B' : 'A';
        assert_int_equal(check(tok, USER), AUTH_JWT_SIGNATURE);
    }
    /* HS256 signed with another secret */
    char claims[1024];
    jf_claims(claims, sizeof(claims), JF_ISS_HS, USER, NULL);
    jf_sign(tok, "HS256", "HS256", claims, NULL, "another-secret-of-thirty-two-bytes!!");
    assert_int_equal(check(tok, USER), AUTH_JWT_SIGNATURE);
    /* ES256 signed by the RSA issuer's key type is no ES256 signature */
    jf_claims(claims, sizeof(claims), JF_ISS_ES, USER, NULL);
    jf_sign(tok, "ES256", "RS256", claims, jt.keys.rsa, NULL);
    assert_int_equal(check(tok, USER), AUTH_JWT_SIGNATURE);
    /* an empty signature */
    jf_sign(tok, "HS256", "none", claims, NULL, NULL);
    assert_int_equal(check(tok, USER), AUTH_JWT_ALG); /* HS256 header, ES256 issuer */
    jf_claims(claims, sizeof(claims), JF_ISS_HS, USER, NULL);
    jf_sign(tok, "HS256", "none", claims, NULL, NULL);
    assert_int_equal(check(tok, USER), AUTH_JWT_SIGNATURE);
}

/* ES256 in the DER form OpenSSL produces is not the JWT form, and is refused. */
static void test_es256_der_refused(void **state)
{
    (void)state;
    char claims[1024], tok[JF_TOKEN_MAX];
    jf_claims(claims, sizeof(claims), JF_ISS_ES, USER, NULL);
    jf_sign(tok, "ES256", "RS256", claims, jt.keys.ec, NULL); /* RS256 path: DER as is */
    assert_int_equal(check(tok, USER), AUTH_JWT_SIGNATURE);
}

static void test_alg(void **state)
{
    (void)state;
    char claims[1024], tok[JF_TOKEN_MAX];
    static const char *const nones[] = {"none", "None", "NONE"};
    for (size_t i = 0; i < 3; i++) {
        jf_claims(claims, sizeof(claims), JF_ISS_HS, USER, NULL);
        jf_sign(tok, nones[i], "none", claims, NULL, NULL);
        assert_int_equal(check(tok, USER), AUTH_JWT_ALG);
    }
    /* the issuer signs RS256; a token claiming HS256 is refused before any key is used,
     * so the RSA public key can never serve as an HMAC secret */
    FILE *f = fopen(jt.keys.rsa_pem, "r");
    char pem[4096];
    size_t n = fread(pem, 1, sizeof(pem) - 1, f);
    fclose(f);
    pem[n] = '\0';
    jf_claims(claims, sizeof(claims), JF_ISS_RS, USER, NULL);
    jf_sign(tok, "HS256", "HS256", claims, NULL, pem);
    assert_int_equal(check(tok, USER), AUTH_JWT_ALG);
    /* other algorithms and other spellings */
    static const char *const others[] = {"RS384", "hs256", "PS256", "ES256K", ""};
    for (size_t i = 0; i < 5; i++) {
        jf_claims(claims, sizeof(claims), JF_ISS_HS, USER, NULL);
        jf_sign(tok, others[i], "HS256", claims, NULL, JF_SECRET);
        assert_int_equal(check(tok, USER), AUTH_JWT_ALG);
    }
    /* a header without alg, and one with crit */
    char header_b64[256], claims_b64[2048], sig[8] = "";
    const char *h = "{\"typ\":\"JWT\"}";
    jf_b64url((const unsigned char *)h, strlen(h), header_b64);
    jf_b64url((const unsigned char *)claims, strlen(claims), claims_b64);
    snprintf(tok, sizeof(tok), "%s.%s.%s", header_b64, claims_b64, sig);
    assert_int_equal(check(tok, USER), AUTH_JWT_MALFORMED);
}

static void test_times(void **state)
{
    (void)state;
    char claims[1024], tok[JF_TOKEN_MAX];
    long long now = jf_now();
    struct {
        const char *claim;
        const char *quote;
        long long value;
        auth_jwt_status_t want;
    } cases[] = {
        {"exp", "", now - 61, AUTH_JWT_EXPIRED},
        {"exp", "", now - 30, AUTH_JWT_OK},            /* inside the skew */
        {"nbf", "", now, AUTH_JWT_EXPIRED},            /* no exp at all */
        {"exp", "\"", now + 3600, AUTH_JWT_MALFORMED}, /* exp as a string */
        {"exp", "", -5, AUTH_JWT_MALFORMED},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char t[128];
        snprintf(t, sizeof(t), "\"%s\":%s%lld%s", cases[i].claim, cases[i].quote, cases[i].value,
                 cases[i].quote);
        snprintf(claims, sizeof(claims), "{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"%s\",%s}",
                 JF_ISS_HS, JF_AUD, USER, t);
        jf_sign(tok, "HS256", "HS256", claims, NULL, JF_SECRET);
        if (check(tok, USER) != cases[i].want)
            fail_msg("case %zu (%s): %s", i, t, auth_jwt_status_name(check(tok, USER)));
    }
    /* nbf and iat in the future (beyond the skew), and just inside it */
    jf_token(tok, &jt.keys, "ES256", USER, "\"nbf\":9999999999");
    assert_int_equal(check(tok, USER), AUTH_JWT_NOT_YET);
    char extra[64];
    snprintf(extra, sizeof(extra), "\"iat\":%lld", now + 120);
    jf_token(tok, &jt.keys, "ES256", USER, extra);
    assert_int_equal(check(tok, USER), AUTH_JWT_NOT_YET);
    snprintf(extra, sizeof(extra), "\"nbf\":%lld", now + 30);
    jf_token(tok, &jt.keys, "ES256", USER, extra);
    assert_int_equal(check(tok, USER), AUTH_JWT_OK);
    /* the clock the caller gives is the one used: an hour later the token is gone */
    jf_token(tok, &jt.keys, "HS256", USER, NULL);
    auth_jwt_result_t r;
    assert_int_equal(auth_jwt_verify(jt.issuers, tok, strlen(tok), USER, now_ms() + 3661000, &r),
                     AUTH_JWT_EXPIRED);
}

static void test_issuer_audience_identity(void **state)
{
    (void)state;
    char claims[1024], tok[JF_TOKEN_MAX];
    auth_jwt_result_t r;
    jf_claims(claims, sizeof(claims), "https://evil.example.test", USER, NULL);
    jf_sign(tok, "HS256", "HS256", claims, NULL, JF_SECRET);
    assert_int_equal(auth_jwt_verify(jt.issuers, tok, strlen(tok), USER, now_ms(), &r),
                     AUTH_JWT_ISSUER);
    assert_string_equal(r.issuer, "");
    /* an issuer differing only by a trailing slash is another issuer */
    jf_claims(claims, sizeof(claims), JF_ISS_HS "/", USER, NULL);
    jf_sign(tok, "HS256", "HS256", claims, NULL, JF_SECRET);
    assert_int_equal(check(tok, USER), AUTH_JWT_ISSUER);
    /* no issuers configured at all */
    jf_token(tok, &jt.keys, "HS256", USER, NULL);
    assert_int_equal(auth_jwt_verify(NULL, tok, strlen(tok), USER, now_ms(), &r), AUTH_JWT_ISSUER);

    static const char *const auds[] = {"\"aud\":\"other\"", "\"aud\":[\"a\",\"b\"]", "\"aud\":[]",
                                       "\"aud\":42", "\"aud\":[42]"};
    for (size_t i = 0; i < 5; i++) {
        snprintf(claims, sizeof(claims), "{\"iss\":\"%s\",%s,\"sub\":\"%s\",\"exp\":%lld}",
                 JF_ISS_RS, auds[i], USER, jf_now() + 60);
        jf_sign(tok, "RS256", "RS256", claims, jt.keys.rsa, NULL);
        assert_int_equal(check(tok, USER), AUTH_JWT_AUDIENCE);
    }
    snprintf(claims, sizeof(claims), "{\"iss\":\"%s\",\"sub\":\"%s\",\"exp\":%lld}", JF_ISS_RS,
             USER, jf_now() + 60);
    jf_sign(tok, "RS256", "RS256", claims, jt.keys.rsa, NULL);
    assert_int_equal(check(tok, USER), AUTH_JWT_AUDIENCE);

    /* identity: sub for another user, email that overrides a matching sub, case differs */
    jf_token(tok, &jt.keys, "HS256", "someone@acme.test", NULL);
    assert_int_equal(check(tok, USER), AUTH_JWT_IDENTITY);
    jf_token(tok, &jt.keys, "HS256", USER, "\"email\":\"boss@acme.test\"");
    assert_int_equal(check(tok, USER), AUTH_JWT_IDENTITY);
    assert_int_equal(check(tok, "boss@acme.test"), AUTH_JWT_OK);
    jf_token(tok, &jt.keys, "HS256", "App@acme.test", NULL);
    assert_int_equal(check(tok, USER), AUTH_JWT_IDENTITY);
    snprintf(claims, sizeof(claims), "{\"iss\":\"%s\",\"aud\":\"%s\",\"exp\":%lld}", JF_ISS_HS,
             JF_AUD, jf_now() + 60);
    jf_sign(tok, "HS256", "HS256", claims, NULL, JF_SECRET);
    assert_int_equal(check(tok, USER), AUTH_JWT_IDENTITY);
}

static void test_malformed(void **state)
{
    (void)state;
    char tok[JF_TOKEN_MAX], bad[JF_TOKEN_MAX + 16];
    jf_token(tok, &jt.keys, "HS256", USER, NULL);
    assert_int_equal(check(tok, USER), AUTH_JWT_OK);
    size_t len = strlen(tok);
    char *dot1 = strchr(tok, '.');

    /* padding, the other alphabet, a stray character */
    snprintf(bad, sizeof(bad), "%s=", tok);
    assert_int_equal(check(bad, USER), AUTH_JWT_MALFORMED);
    static const char subst[] = {'+', '/', '=', ' ', '*'};
    for (size_t i = 0; i < sizeof(subst); i++) {
        memcpy(bad, tok, len + 1);
        bad[dot1 - tok + 3] = subst[i];
        assert_int_equal(check(bad, USER), AUTH_JWT_MALFORMED);
    }
    /* two parts, four parts, empty parts */
    snprintf(bad, sizeof(bad), "%.*s", (int)(strrchr(tok, '.') - tok), tok);
    assert_int_equal(check(bad, USER), AUTH_JWT_MALFORMED);
    snprintf(bad, sizeof(bad), "%s.x", tok);
    assert_int_equal(check(bad, USER), AUTH_JWT_MALFORMED);
    assert_int_equal(check("..", USER), AUTH_JWT_MALFORMED);
    assert_int_equal(check("", USER), AUTH_JWT_MALFORMED);

    /* the signature's last character with non-zero unused bits: the same bytes
     * spelled another way (32 bytes are 43 characters, the last one carrying 2
     * unused bits), refused as malformed before any signature check */
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    memcpy(bad, tok, len + 1);
    assert_int_equal(strlen(strrchr(bad, '.') + 1), 43);
    char *last = bad + len - 1;
    size_t idx = (size_t)(strchr(abc, *last) - abc);
    assert_int_equal(idx % 4, 0);
    *last = abc[idx + 1];
    assert_int_equal(check(bad, USER), AUTH_JWT_MALFORMED);
    /* a base64url length that no byte count has */
    snprintf(bad, sizeof(bad), "A%s", tok);
    assert_int_equal(strcspn(bad, ".") % 4, 1);
    assert_int_equal(check(bad, USER), AUTH_JWT_MALFORMED);

    /* JSON that is no object, JSON with a repeated key, no JSON at all */
    static const char *const payloads[] = {"[1,2]", "\"text\"", "{\"iss\":\"a\",\"iss\":\"b\"}",
                                           "not json", "{\"iss\":\"x\"} trailing"};
    for (size_t i = 0; i < 5; i++) {
        jf_sign(bad, "HS256", "HS256", payloads[i], NULL, JF_SECRET);
        assert_int_equal(check(bad, USER), AUTH_JWT_MALFORMED);
    }
    /* a NUL inside, and a token longer than any we take */
    memcpy(bad, tok, len + 1);
    assert_int_equal(
        auth_jwt_verify(jt.issuers, bad, len + 1, USER, now_ms(), &(auth_jwt_result_t){0}),
        AUTH_JWT_MALFORMED);
    char *big = malloc(AUTH_JWT_TOKEN_MAX + 2);
    memset(big, 'A', AUTH_JWT_TOKEN_MAX + 1);
    big[AUTH_JWT_TOKEN_MAX + 1] = '\0';
    assert_int_equal(check(big, USER), AUTH_JWT_MALFORMED);
    free(big);
    assert_int_equal(auth_jwt_verify(jt.issuers, NULL, 0, USER, now_ms(), &(auth_jwt_result_t){0}),
                     AUTH_JWT_MALFORMED);
}

/* ---- configuration ---- */

/* Parse an auth section holding text; 0 or -1 with the message in err. */
static int parse_conf(const char *text, auth_jwt_issuers_t **out, char *err, size_t errlen)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/issuers.conf", jt.keys.dir);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    conf_file_t *cf = conf_open(path, err, errlen);
    assert_non_null(cf);
    static const conf_field_t table[] = {
        {"oauth_issuers", CONF_CUSTOM, 0, NULL, 0, 0, 0, auth_jwt_conf_parse, auth_jwt_conf_release,
         "issuers"},
        {NULL},
    };
    *out = NULL;
    int rc = conf_section(cf, "auth", table, out, err, errlen);
    conf_close(&cf);
    unlink(path);
    return rc;
}

static void test_config(void **state)
{
    (void)state;
    char text[3 * PATH_MAX], err[1024];
    auth_jwt_issuers_t *l;
    snprintf(text, sizeof(text),
             "auth = {\n"
             "  oauth_issuers = (\n"
             "    { issuer = \"https://id.example.test\"; audience = \"sendarix\";\n"
             "      algorithm = \"HS256\"; secret = \"%s\"; },\n"
             "    { issuer = \"https://rs.example.test\"; audience = \"sendarix\";\n"
             "      algorithm = \"RS256\"; public_key = \"%s\"; },\n"
             "    { issuer = \"https://es.example.test\"; audience = \"sendarix\";\n"
             "      algorithm = \"ES256\"; public_key = \"%s\"; }\n"
             "  );\n"
             "};\n",
             JF_SECRET, jt.keys.rsa_pem, jt.keys.ec_pem);
    if (parse_conf(text, &l, err, sizeof(err)) < 0)
        fail_msg("%s", err);
    assert_int_equal(auth_jwt_issuers_count(l), 3);
    auth_jwt_issuers_destroy(&l);

    /* absent: no issuers */
    assert_int_equal(parse_conf("auth = { };\n", &l, err, sizeof(err)), 0);
    assert_null(l);

    struct {
        const char *entry; /* the second line of the list */
        const char *words;
    } bad[] = {
        {"{ issuer = \"https://a.test\"; audience = \"x\"; algorithm = \"HS256\"; "
         "secret = \"short\"; }",
         "at least"},
        {"{ issuer = \"https://a.test\"; audience = \"x\"; algorithm = \"RS256\"; "
         "public_key = \"/nonexistent/key.pem\"; }",
         "/nonexistent/key.pem: cannot read"},
        {"{ issuer = \"https://a.test\"; audience = \"x\"; algorithm = \"RS256\"; "
         "public_key = \"@EC@\"; }",
         "RS256 needs an RSA key"},
        {"{ issuer = \"https://a.test\"; audience = \"x\"; algorithm = \"ES256\"; "
         "public_key = \"@RSA@\"; }",
         "ES256 needs an EC key"},
        {"{ issuer = \"https://a.test\"; audience = \"x\"; algorithm = \"RS256\"; "
         "public_key = \"@SMALL@\"; }",
         "1024 bits"},
        {"{ issuer = \"https://a.test\"; audience = \"x\"; algorithm = \"none\"; }",
         "HS256, RS256 or ES256"},
        {"{ issuer = \"https://a.test\"; algorithm = \"HS256\"; secret = \"" JF_SECRET "\"; }",
         "audience is missing"},
        {"{ issuer = \"https://a.test\"; audience = \"x\"; algorithm = \"HS256\"; "
         "secret = \"" JF_SECRET "\"; colour = \"red\"; }",
         "unknown setting colour"},
        {"{ issuer = \"https://a.test\"; audience = \"x\"; algorithm = \"HS256\"; "
         "public_key = \"@RSA@\"; }",
         "HS256 takes a secret"},
        {"{ issuer = \"https://id.example.test\"; audience = \"x\"; algorithm = \"HS256\"; "
         "secret = \"" JF_SECRET "\"; }",
         "listed twice"},
        {"{ issuer = \"has space\"; audience = \"x\"; algorithm = \"HS256\"; "
         "secret = \"" JF_SECRET "\"; }",
         "issuer must be"},
        {"{ issuer = 42; audience = \"x\"; algorithm = \"HS256\"; }", "must be a string"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char entry[1024];
        snprintf(entry, sizeof(entry), "%s", bad[i].entry);
        char *at;
        const char *subst[][2] = {{"@EC@", jt.keys.ec_pem},
                                  {"@RSA@", jt.keys.rsa_pem},
                                  {"@SMALL@", jt.keys.rsa_small_pem}};
        for (size_t k = 0; k < 3; k++) {
            if ((at = strstr(entry, subst[k][0])) != NULL) {
                char rest[1024];
                snprintf(rest, sizeof(rest), "%s", at + strlen(subst[k][0]));
                snprintf(at, sizeof(entry) - (size_t)(at - entry), "%s%s", subst[k][1], rest);
            }
        }
        snprintf(text, sizeof(text),
                 "auth = {\n"
                 "  oauth_issuers = (\n"
                 "    { issuer = \"https://id.example.test\"; audience = \"sendarix\";\n"
                 "      algorithm = \"HS256\"; secret = \"%s\"; },\n"
                 "    %s\n"
                 "  );\n"
                 "};\n",
                 JF_SECRET, entry);
        assert_int_equal(parse_conf(text, &l, err, sizeof(err)), -1);
        assert_null(l);
        if (strstr(err, bad[i].words) == NULL || strstr(err, "entry 2") == NULL ||
            strstr(err, "issuers.conf:5") == NULL)
            fail_msg("case %zu: %s", i, err);
    }
    /* not a list */
    assert_int_equal(parse_conf("auth = { oauth_issuers = \"x\"; };\n", &l, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "issuers.conf:1"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_tokens),
        cmocka_unit_test(test_bad_signature),
        cmocka_unit_test(test_es256_der_refused),
        cmocka_unit_test(test_alg),
        cmocka_unit_test(test_times),
        cmocka_unit_test(test_issuer_audience_identity),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_config),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
