/*
 * caps_test: the SMTP client's decisions from server replies: EHLO
 * capabilities (STARTTLS, AUTH and its mechanisms PLAIN and LOGIN, SIZE and
 * its limit, PIPELINING, SMTPUTF8, 8BITMIME), whether to start TLS or AUTH
 * (PLAIN before LOGIN, never without TLS) under each policy, the MAIL FROM
 * parameters and refusals, and the outcome each reply code means for a
 * recipient.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "delivery_caps.h"

/* Parse raw reply text into caps (via the real multi-line reply reader). */
static void caps_of(const char *text, ehlo_caps_t *caps)
{
    buf_t b;
    buf_init(&b, 0);
    buf_append_str(&b, text);
    smtp_reply_t r;
    memset(&r, 0, sizeof(r));
    assert_int_equal(reply_read(&b, &r), REPLY_DONE);
    caps_parse(&r, caps);
    reply_clear(&r);
    buf_free(&b);
}

static void test_caps_parse(void **state)
{
    (void)state;
    ehlo_caps_t c;
    caps_of("250-mx.example.net Hello\r\n"
            "250-PIPELINING\r\n"
            "250-SIZE 10240000\r\n"
            "250-8BITMIME\r\n"
            "250-STARTTLS\r\n"
            "250-AUTH LOGIN PLAIN\r\n"
            "250 SMTPUTF8\r\n",
            &c);
    assert_true(c.esmtp);
    assert_true(c.pipelining);
    assert_true(c.size);
    assert_int_equal(c.size_max, 10240000);
    assert_true(c.eightbitmime);
    assert_true(c.starttls);
    assert_true(c.auth);
    assert_true(c.auth_plain);
    assert_true(c.auth_login);
    assert_true(c.smtputf8);

    /* only the greeting line: nothing offered; keywords in it do not count */
    caps_of("250 mx.example.net STARTTLS PIPELINING\r\n", &c);
    assert_true(c.esmtp);
    assert_false(c.starttls);
    assert_false(c.pipelining);
    assert_false(c.size);

    /* lowercase keywords, SIZE without a limit, old AUTH= form, LOGIN only */
    caps_of("250-host\r\n250-size\r\n250-starttls\r\n250-AUTH=LOGIN CRAM-MD5\r\n250 pipelining\r\n",
            &c);
    assert_true(c.size);
    assert_int_equal(c.size_max, 0);
    assert_true(c.starttls);
    assert_true(c.pipelining);
    assert_true(c.auth);
    assert_false(c.auth_plain);
    assert_true(c.auth_login);

    /* near misses are not keywords */
    caps_of("250-host\r\n250-STARTTLSX\r\n250-XPIPELINING\r\n250-SIZE abc\r\n"
            "250-X-LOGIN\r\n250 AUTH PLAINX XLOGIN LOGINS\r\n",
            &c);
    assert_false(c.starttls);
    assert_false(c.pipelining);
    assert_true(c.size);
    assert_int_equal(c.size_max, 0);
    assert_false(c.auth_plain);
    assert_false(c.auth_login);

    /* LOGIN in lowercase, on a second AUTH line */
    caps_of("250-host\r\n250-AUTH CRAM-MD5\r\n250 AUTH login\r\n", &c);
    assert_true(c.auth_login);
    assert_false(c.auth_plain);

    /* a refusal offers nothing */
    caps_of("502 5.5.1 EHLO not implemented\r\n", &c);
    assert_false(c.esmtp);
    caps_parse(NULL, &c);
    assert_false(c.esmtp);
}

static void test_tls_policy_and_step(void **state)
{
    (void)state;
    assert_int_equal(caps_tls_policy("none"), POLICY_TLS_NONE);
    assert_int_equal(caps_tls_policy("opportunistic"), POLICY_TLS_OPPORTUNISTIC);
    assert_int_equal(caps_tls_policy(""), POLICY_TLS_OPPORTUNISTIC);
    assert_int_equal(caps_tls_policy(NULL), POLICY_TLS_OPPORTUNISTIC);
    assert_int_equal(caps_tls_policy("required"), POLICY_TLS_REQUIRED);
    assert_int_equal(caps_tls_policy("Required!"), POLICY_TLS_REQUIRED); /* unknown: strict */

    ehlo_caps_t offered = {.esmtp = 1, .starttls = 1}, not_offered = {.esmtp = 1};
    static const struct {
        tls_policy_t policy;
        int offered, is_tls;
        tls_step_t want;
    } cases[] = {
        {POLICY_TLS_NONE, 1, 0, TLS_STEP_SKIP},
        {POLICY_TLS_NONE, 0, 0, TLS_STEP_SKIP},
        {POLICY_TLS_OPPORTUNISTIC, 1, 0, TLS_STEP_START},
        {POLICY_TLS_OPPORTUNISTIC, 0, 0, TLS_STEP_SKIP},
        {POLICY_TLS_REQUIRED, 1, 0, TLS_STEP_START},
        {POLICY_TLS_REQUIRED, 0, 0, TLS_STEP_FAIL},
        {POLICY_TLS_REQUIRED, 1, 1, TLS_STEP_SKIP}, /* after the handshake: done */
        {POLICY_TLS_REQUIRED, 0, 1, TLS_STEP_SKIP},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tls_step_t got = caps_tls_step(cases[i].policy, cases[i].offered ? &offered : &not_offered,
                                       cases[i].is_tls);
        if (got != cases[i].want)
            fail_msg("case %zu: got %d want %d", i, got, cases[i].want);
    }
}

static void test_auth_step(void **state)
{
    (void)state;
    static const ehlo_caps_t plain = {.esmtp = 1, .auth = 1, .auth_plain = 1};
    static const ehlo_caps_t login = {.esmtp = 1, .auth = 1, .auth_login = 1};
    static const ehlo_caps_t both = {.esmtp = 1, .auth = 1, .auth_plain = 1, .auth_login = 1};
    static const ehlo_caps_t other = {.esmtp = 1,
                                      .auth = 1}; /* CRAM-MD5, XOAUTH2...: none we speak */
    static const ehlo_caps_t none = {.esmtp = 1};
    static const struct {
        int creds;
        const ehlo_caps_t *caps;
        int is_tls;
        auth_step_t want;
    } cases[] = {
        {0, &plain, 1, AUTH_STEP_SKIP},
        {0, &login, 0, AUTH_STEP_SKIP},
        {1, &plain, 1, AUTH_STEP_PLAIN},
        {1, &both, 1, AUTH_STEP_PLAIN}, /* PLAIN stays preferred */
        {1, &login, 1, AUTH_STEP_LOGIN},
        {1, &other, 1, AUTH_STEP_NO_MECH},
        {1, &none, 1, AUTH_STEP_SKIP},
        /* credentials never over plaintext, whatever the server offers */
        {1, &plain, 0, AUTH_STEP_NO_TLS},
        {1, &login, 0, AUTH_STEP_NO_TLS},
        {1, &both, 0, AUTH_STEP_NO_TLS},
        {1, &none, 0, AUTH_STEP_NO_TLS},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        auth_step_t got = caps_auth_step(cases[i].creds, cases[i].caps, cases[i].is_tls);
        if (got != cases[i].want)
            fail_msg("case %zu: got %d want %d", i, got, cases[i].want);
    }
}

static void test_mail_params_and_check(void **state)
{
    (void)state;
    char p[128];
    ehlo_caps_t all = {.esmtp = 1, .size = 1, .size_max = 1000, .eightbitmime = 1,
                       .smtputf8 = 1};
    ehlo_caps_t bare = {.esmtp = 1};
    caps_mail_params(&all, 321, 1, 1, p, sizeof(p));
    assert_string_equal(p, " SIZE=321 BODY=8BITMIME SMTPUTF8");
    caps_mail_params(&all, 321, 0, 0, p, sizeof(p));
    assert_string_equal(p, " SIZE=321");
    caps_mail_params(&bare, 321, 1, 0, p, sizeof(p)); /* 8BITMIME not offered: sent as is */
    assert_string_equal(p, "");
    char small[8];
    caps_mail_params(&all, 123456789, 1, 1, small, sizeof(small)); /* cut, terminated */
    assert_true(strlen(small) < sizeof(small));

    dlv_reply_t why;
    assert_int_equal(caps_mail_check(&all, 1000, 1, &why), 0);
    assert_int_equal(caps_mail_check(&all, 1001, 0, &why), -1);
    assert_int_equal(why.code, 552);
    assert_string_equal(why.enhanced, "5.3.4");
    assert_int_equal(caps_mail_check(&bare, 1u << 30, 0, &why), 0); /* no limit known */
    assert_int_equal(caps_mail_check(&bare, 10, 1, &why), -1);
    assert_int_equal(why.code, 550);
    assert_string_equal(why.enhanced, "5.6.7");
    assert_string_equal(why.text, "destination does not support SMTPUTF8");
}

static void test_outcomes(void **state)
{
    (void)state;
    static const struct {
        unsigned code;
        outcome_t want;
    } cases[] = {
        {250, OUTCOME_DELIVERED}, {251, OUTCOME_DELIVERED}, {421, OUTCOME_DEFERRED},
        {450, OUTCOME_DEFERRED},  {451, OUTCOME_DEFERRED},  {452, OUTCOME_DEFERRED},
        {550, OUTCOME_BOUNCED},   {552, OUTCOME_BOUNCED},   {554, OUTCOME_BOUNCED},
        {354, OUTCOME_DEFERRED},  {0, OUTCOME_DEFERRED},    {999, OUTCOME_DEFERRED},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (caps_outcome(cases[i].code) != cases[i].want)
            fail_msg("code %u", cases[i].code);
    assert_string_equal(caps_outcome_name(OUTCOME_DELIVERED), "delivered");
    assert_string_equal(caps_outcome_name(OUTCOME_DEFERRED), "deferred");
    assert_string_equal(caps_outcome_name(OUTCOME_BOUNCED), "bounced");
}

static void test_reply_copy(void **state)
{
    (void)state;
    smtp_reply_t r;
    memset(&r, 0, sizeof(r));
    r.code = 550;
    snprintf(r.text, sizeof(r.text), "no such user");
    dlv_reply_t d;
    dlv_reply_from_smtp(&d, &r);
    assert_int_equal(d.code, 550);
    assert_string_equal(d.enhanced, "5.0.0"); /* the class default when none was given */
    assert_string_equal(d.text, "no such user");
    snprintf(r.enhanced, sizeof(r.enhanced), "5.1.1");
    memset(r.text, 'x', sizeof(r.text) - 1);
    r.text[sizeof(r.text) - 1] = '\0';
    dlv_reply_from_smtp(&d, &r);
    assert_string_equal(d.enhanced, "5.1.1");
    assert_int_equal(strlen(d.text), sizeof(d.text) - 1); /* cut, not overflowed */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_caps_parse),     cmocka_unit_test(test_tls_policy_and_step),
        cmocka_unit_test(test_auth_step),      cmocka_unit_test(test_mail_params_and_check),
        cmocka_unit_test(test_outcomes),       cmocka_unit_test(test_reply_copy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
