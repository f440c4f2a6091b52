/*
 * address_test: SMTP paths and their parameters. Valid paths (plain,
 * subaddresses, quoted local parts, address literals, UTF-8 with and
 * without SMTPUTF8, the null path), ESMTP parameters, the routing tricks
 * that must be refused, length limits, malformed UTF-8, domain checks and
 * xtext decoding.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <stdio.h>

#include "mail/address.h"

typedef struct good_case {
    const char *text;
    int allow_null, allow_utf8;
    const char *local, *domain; /* NULL for the null path */
    int literal, utf8;
} good_case_t;

static const good_case_t good[] = {
    {"<user@example.org>", 0, 0, "user", "example.org", 0, 0},
    {"<User@Example.ORG>", 0, 0, "User", "example.org", 0, 0}, /* local kept, domain lowered */
    {"   <user@example.org>", 0, 0, "user", "example.org", 0, 0},
    {"<user+tag@example.org>", 0, 0, "user+tag", "example.org", 0, 0},
    {"<user+tag+more@example.org>", 0, 0, "user+tag+more", "example.org", 0, 0},
    {"<first.last@mail.sub.example.co.uk>", 0, 0, "first.last", "mail.sub.example.co.uk", 0, 0},
    {"<#$&'*+-/=?^_`{|}~@example.org>", 0, 0, "#$&'*+-/=?^_`{|}~", "example.org", 0, 0},
    {"<\"john doe\"@example.org>", 0, 0, "\"john doe\"", "example.org", 0, 0},
    {"<\"a@b\"@example.org>", 0, 0, "\"a@b\"", "example.org", 0, 0},
    {"<\"a>b\"@example.org>", 0, 0, "\"a>b\"", "example.org", 0, 0},
    {"<\"say \\\"hi\\\"\"@example.org>", 0, 0, "\"say \\\"hi\\\"\"", "example.org", 0, 0},
    {"<\"a%b!c\"@example.org>", 0, 0, "\"a%b!c\"", "example.org", 0, 0}, /* quoted: opaque */
    {"<\"\"@example.org>", 0, 0, "\"\"", "example.org", 0, 0},
    {"<user@[192.0.2.1]>", 0, 0, "user", "[192.0.2.1]", 1, 0},
    {"<user@[IPv6:2001:db8::1]>", 0, 0, "user", "[IPv6:2001:db8::1]", 1, 0},
    {"<user@[ipv6:::1]>", 0, 0, "user", "[ipv6:::1]", 1, 0},
    {"<a@b>", 0, 0, "a", "b", 0, 0},
    {"<a-b@x-y.example>", 0, 0, "a-b", "x-y.example", 0, 0},
    {"<0@0.example>", 0, 0, "0", "0.example", 0, 0},
    {"<us\xc3\xa9r@example.org>", 0, 1, "us\xc3\xa9r", "example.org", 0, 1},
    {"<user@ex\xc3\xa4mple.ORG>", 0, 1, "user", "ex\xc3\xa4mple.org", 0, 1},
    {"<\"\xe2\x82\xac uro\"@example.org>", 0, 1, "\"\xe2\x82\xac uro\"", "example.org", 0, 1},
    {"<\xf0\x9f\x93\xa7@\xe4\xbe\x8b\xe3\x81\x88.jp>", 0, 1, "\xf0\x9f\x93\xa7",
     "\xe4\xbe\x8b\xe3\x81\x88.jp", 0, 1},
    /* the edges of each UTF-8 length: U+0080, U+07FF, U+0800, U+D7FF, U+E000, U+FFFF,
     * U+10000, U+10FFFF */
    {"<\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf\xf0\x90\x80\x80"
     "\xf4\x8f\xbf\xbf@example.org>",
     0, 1,
     "\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf\xf0\x90\x80\x80"
     "\xf4\x8f\xbf\xbf",
     "example.org", 0, 1},
    {"<>", 1, 0, NULL, NULL, 0, 0},
    {"  <>", 1, 1, NULL, NULL, 0, 0},
};

static void test_valid_paths(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        const good_case_t *g = &good[i];
        mail_addr_t a;
        mail_params_t p;
        addr_status_t st = address_parse(g->text, g->allow_null, g->allow_utf8, &a, &p);
        if (st != ADDR_OK)
            fail_msg("\"%s\" refused: %s", g->text, address_status_text(st));
        assert_int_equal(p.n, 0);
        if (g->local == NULL) {
            assert_true(a.is_null);
            assert_string_equal(a.full, "");
            continue;
        }
        assert_false(a.is_null);
        assert_string_equal(a.local, g->local);
        assert_string_equal(a.domain, g->domain);
        char full[700];
        snprintf(full, sizeof(full), "%s@%s", g->local, g->domain);
        assert_string_equal(a.full, full);
        assert_int_equal(a.is_literal, g->literal);
        assert_int_equal(a.utf8, g->utf8);
    }
}

static void test_length_limits(void **state)
{
    (void)state;
    char text[1024], local[128], label[128];
    mail_addr_t a;

    /* local part: 64 octets pass, 65 do not (quotes count) */
    memset(local, 'l', 64);
    local[64] = '\0';
    snprintf(text, sizeof(text), "<%s@example.org>", local);
    assert_int_equal(address_parse(text, 0, 0, &a, NULL), ADDR_OK);
    local[64] = 'l';
    local[65] = '\0';
    snprintf(text, sizeof(text), "<%s@example.org>", local);
    assert_int_equal(address_parse(text, 0, 0, &a, NULL), ADDR_TOO_LONG);
    memset(local, 'q', 63);
    local[63] = '\0';
    snprintf(text, sizeof(text), "<\"%s\"@example.org>", local);
    assert_int_equal(address_parse(text, 0, 0, &a, NULL), ADDR_TOO_LONG);

    /* a label of 63 passes, 64 does not */
    memset(label, 'd', 63);
    label[63] = '\0';
    snprintf(text, sizeof(text), "<u@%s.example>", label);
    assert_int_equal(address_parse(text, 0, 0, &a, NULL), ADDR_OK);
    label[63] = 'd';
    label[64] = '\0';
    snprintf(text, sizeof(text), "<u@%s.example>", label);
    assert_int_equal(address_parse(text, 0, 0, &a, NULL), ADDR_SYNTAX);

    /* a domain over 255 octets, and a path over 256 */
    char dom[400] = "";
    while (strlen(dom) < 260)
        strcat(dom, "abcdefghi.");
    strcat(dom, "org");
    snprintf(text, sizeof(text), "<u@%s>", dom);
    assert_int_equal(address_parse(text, 0, 0, &a, NULL), ADDR_TOO_LONG);
    assert_false(address_domain_valid(dom, 0));
    /* 64 + 1 + 191 = 256: the longest path */
    char d191[200] = "";
    while (strlen(d191) < 180)
        strcat(d191, "abcdefghi.");
    while (strlen(d191) < 187)
        strcat(d191, "x");
    strcat(d191, ".org");
    assert_int_equal(strlen(d191), 191);
    memset(local, 'l', 64);
    local[64] = '\0';
    snprintf(text, sizeof(text), "<%s@%s>", local, d191);
    assert_int_equal(address_parse(text, 0, 0, &a, NULL), ADDR_OK);
    snprintf(text, sizeof(text), "<%s@x%s>", local, d191);
    assert_int_equal(address_parse(text, 0, 0, &a, NULL), ADDR_TOO_LONG);
}

typedef struct bad_case {
    const char *text;
    int allow_null, allow_utf8;
    addr_status_t want;
} bad_case_t;

static const bad_case_t bad[] = {
    /* routing tricks */
    {"<a%b@c.example>", 0, 0, ADDR_ROUTE},
    {"<a%b%c@relay.example>", 0, 0, ADDR_ROUTE},
    {"<@host.example:a@b.example>", 0, 0, ADDR_ROUTE},
    {"<@h1.example,@h2.example:a@b.example>", 0, 0, ADDR_ROUTE},
    {"<a@b@c.example>", 0, 0, ADDR_ROUTE},
    {"<host!user@d.example>", 0, 0, ADDR_ROUTE},
    {"<a!b!c@d.example>", 0, 0, ADDR_ROUTE},
    {"<host!user>", 0, 0, ADDR_ROUTE},
    {"<@example.org>", 0, 0, ADDR_ROUTE},
    /* brackets and what follows them */
    {"a@b.example", 0, 0, ADDR_SYNTAX},
    {"<a@b.example", 0, 0, ADDR_SYNTAX},
    {"a@b.example>", 0, 0, ADDR_SYNTAX},
    {"<<a@b.example>>", 0, 0, ADDR_SYNTAX},
    {"<a@b.example>garbage", 0, 0, ADDR_SYNTAX},
    {"<a@b.example>\tSIZE=1", 0, 0, ADDR_SYNTAX},
    {"<a@b.example> <c@d.example>", 0, 0, ADDR_PARAMS},
    {"<a@b.example> \x01", 0, 0, ADDR_PARAMS},
    {"", 0, 0, ADDR_SYNTAX},
    {"<", 0, 0, ADDR_SYNTAX},
    {"<>", 0, 0, ADDR_SYNTAX}, /* null path where it is not allowed */
    {"<> ", 0, 0, ADDR_SYNTAX},
    /* local parts */
    {"<a>", 0, 0, ADDR_SYNTAX},
    {"<a@>", 0, 0, ADDR_SYNTAX},
    {"<.a@b.example>", 0, 0, ADDR_SYNTAX},
    {"<a.@b.example>", 0, 0, ADDR_SYNTAX},
    {"<a..b@c.example>", 0, 0, ADDR_SYNTAX},
    {"<a b@c.example>", 0, 0, ADDR_SYNTAX},
    {"<a\x01@b.example>", 0, 0, ADDR_SYNTAX},
    {"<a(comment)@b.example>", 0, 0, ADDR_SYNTAX},
    {"<a,b@c.example>", 0, 0, ADDR_SYNTAX},
    {"<a\"b@c.example>", 0, 0, ADDR_SYNTAX},
    {"<\"unterminated@b.example>", 0, 0, ADDR_SYNTAX},
    {"<\"a\"b@c.example>", 0, 0, ADDR_SYNTAX},
    {"<\"a\x01\"@b.example>", 0, 0, ADDR_SYNTAX},
    {"<\"a\\\x01\"@b.example>", 0, 0, ADDR_SYNTAX},
    {"<\"a\\\"@b.example>", 0, 0, ADDR_SYNTAX},
    /* domains */
    {"<a@b..example>", 0, 0, ADDR_SYNTAX},
    {"<a@.example>", 0, 0, ADDR_SYNTAX},
    {"<a@example.>", 0, 0, ADDR_SYNTAX},
    {"<a@.>", 0, 0, ADDR_SYNTAX},
    {"<a@-example.org>", 0, 0, ADDR_SYNTAX},
    {"<a@example-.org>", 0, 0, ADDR_SYNTAX},
    {"<a@exa_mple.org>", 0, 0, ADDR_SYNTAX},
    {"<a@exa mple.org>", 0, 0, ADDR_SYNTAX},
    {"<a@[1.2.3]>", 0, 0, ADDR_SYNTAX},
    {"<a@[300.1.1.1]>", 0, 0, ADDR_SYNTAX},
    {"<a@[::1]>", 0, 0, ADDR_SYNTAX},
    {"<a@[IPv6:1.2.3.4]>", 0, 0, ADDR_SYNTAX},
    {"<a@[IPv6:2001:db8::1]x>", 0, 0, ADDR_SYNTAX},
    {"<a@[]>", 0, 0, ADDR_SYNTAX},
    {"<a@[192.0.2.1>", 0, 0, ADDR_SYNTAX},
    /* UTF-8 without SMTPUTF8 */
    {"<us\xc3\xa9r@example.org>", 0, 0, ADDR_UTF8},
    {"<user@ex\xc3\xa4mple.org>", 0, 0, ADDR_UTF8},
    {"<\"\xc3\xa9\"@example.org>", 0, 0, ADDR_UTF8},
    /* bytes that are not UTF-8 at all, even with SMTPUTF8 */
    {"<\xff@example.org>", 0, 1, ADDR_SYNTAX},
    {"<a\xc3@example.org>", 0, 1, ADDR_SYNTAX},          /* cut sequence */
    {"<\xc0\xaf@example.org>", 0, 1, ADDR_SYNTAX},       /* overlong "/" */
    {"<\xe0\x80\xae@example.org>", 0, 1, ADDR_SYNTAX},   /* overlong "." */
    {"<\xed\xa0\x80@example.org>", 0, 1, ADDR_SYNTAX},   /* surrogate */
    {"<\xf4\x90\x80\x80@example.org>", 0, 1, ADDR_SYNTAX}, /* past U+10FFFF */
    {"<\x80@example.org>", 0, 1, ADDR_SYNTAX},           /* lone continuation */
    {"<\"\xfe\"@example.org>", 0, 1, ADDR_SYNTAX},
    {"<a@ex\xffmple.org>", 0, 1, ADDR_SYNTAX},
    {"<a@\xe4\xbe.org>", 0, 1, ADDR_SYNTAX},
};

static void test_refused(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        mail_addr_t a;
        mail_params_t p;
        addr_status_t st = address_parse(bad[i].text, bad[i].allow_null, bad[i].allow_utf8, &a, &p);
        if (st != bad[i].want)
            fail_msg("case %zu \"%s\": %s (%d), want %d", i, bad[i].text,
                     address_status_text(st), st, bad[i].want);
        assert_true(strlen(address_status_text(st)) > 0);
    }
}

static void test_params(void **state)
{
    (void)state;
    mail_addr_t a;
    mail_params_t p;
    assert_int_equal(address_parse("<a@b.example> size=1000 BODY=8BITMIME smtputf8", 0, 1, &a, &p),
                     ADDR_OK);
    assert_int_equal(p.n, 3);
    const mail_param_t *size = address_param(&p, "SIZE");
    assert_non_null(size);
    assert_string_equal(size->key, "SIZE"); /* keys are uppercased */
    assert_string_equal(size->value, "1000");
    assert_true(size->has_value);
    assert_non_null(address_param(&p, "body"));
    assert_string_equal(address_param(&p, "Body")->value, "8BITMIME");
    const mail_param_t *u = address_param(&p, "SMTPUTF8");
    assert_non_null(u);
    assert_false(u->has_value);
    assert_string_equal(u->value, "");
    assert_null(address_param(&p, "RET"));

    /* the null path with parameters; extra spaces between and after */
    assert_int_equal(address_parse("<>   RET=HDRS    ENVID=QQ314159+2Bx   ", 1, 0, &a, &p), ADDR_OK);
    assert_true(a.is_null);
    assert_int_equal(p.n, 2);
    assert_string_equal(address_param(&p, "ENVID")->value, "QQ314159+2Bx");

    /* high bytes in a value are kept (RFC 6531) */
    assert_int_equal(address_parse("<a@b.example> ORCPT=utf-8;\xc3\xa9@x", 0, 1, &a, &p), ADDR_OK);
    assert_string_equal(address_param(&p, "ORCPT")->value, "utf-8;\xc3\xa9@x");

    /* sixteen parameters are the most */
    char text[1024] = "<a@b.example>";
    for (int i = 0; i < 16; i++)
        snprintf(text + strlen(text), sizeof(text) - strlen(text), " X-P%d=%d", i, i);
    assert_int_equal(address_parse(text, 0, 0, &a, &p), ADDR_OK);
    assert_int_equal(p.n, 16);
    strcat(text, " X-LAST=1");
    assert_int_equal(address_parse(text, 0, 0, &a, &p), ADDR_PARAMS);

    /* parameters where the caller takes none */
    assert_int_equal(address_parse("<a@b.example> SIZE=1", 0, 0, &a, NULL), ADDR_PARAMS);
    assert_int_equal(address_parse("<a@b.example>", 0, 0, &a, NULL), ADDR_OK);
    assert_int_equal(address_parse("<a@b.example>   ", 0, 0, &a, NULL), ADDR_OK);
}

static void test_params_malformed(void **state)
{
    (void)state;
    char longkey[64], longval[600], text[1024];
    memset(longkey, 'K', 32);
    longkey[32] = '\0';
    memset(longval, 'v', 512);
    longval[512] = '\0';
    static const char *cases[] = {
        "SIZE=1 SIZE=2",  /* given twice */
        "size=1 SIZE=2",  /* twice, in other case */
        "SMTPUTF8 SMTPUTF8",
        "SIZE=",          /* empty value */
        "=1",             /* no keyword */
        "SI_ZE=1",
        "SIZE=a=b",
        "SIZE=\x01",
        "SIZE=\x7f",
        "SIZE\x02=1",
        NULL, /* long key */
        NULL, /* long value */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (i == 10)
            snprintf(text, sizeof(text), "<a@b.example> %s=1", longkey);
        else if (i == 11)
            snprintf(text, sizeof(text), "<a@b.example> X=%s", longval);
        else
            snprintf(text, sizeof(text), "<a@b.example> %s", cases[i]);
        mail_addr_t a;
        mail_params_t p;
        addr_status_t st = address_parse(text, 0, 0, &a, &p);
        if (st != ADDR_PARAMS)
            fail_msg("params case %zu: %s", i, address_status_text(st));
    }
    /* one octet less on each is fine */
    longkey[31] = '\0';
    longval[511] = '\0';
    snprintf(text, sizeof(text), "<a@b.example> %s=%s", longkey, longval);
    mail_addr_t a;
    mail_params_t p;
    assert_int_equal(address_parse(text, 0, 0, &a, &p), ADDR_OK);
    assert_int_equal(strlen(p.v[0].value), 511);
}

static void test_domain_valid(void **state)
{
    (void)state;
    char l63[64], d255[256], d256[257];
    memset(l63, 'a', 63);
    l63[63] = '\0';
    /* four labels of 63 and their three dots: 255 octets */
    snprintf(d255, sizeof(d255), "%s.%s.%s.%s", l63, l63, l63, l63);
    memcpy(d256, d255, 255);
    memcpy(d256 + 255, "z", 2);
    static const struct {
        const char *d;
        int utf8, ok;
    } cases[] = {
        {"example.org", 0, 1},
        {"a", 0, 1},
        {"xn--bcher-kva.example", 0, 1},
        {"EXAMPLE.ORG", 0, 1},
        {"", 0, 0},
        {"-a.example", 0, 0},
        {"a-.example", 0, 0},
        {"a.-b", 0, 0},
        {"a..b", 0, 0},
        {".a", 0, 0},
        {"a.", 0, 0},
        {"ex_ample.org", 0, 0},
        {"exa mple.org", 0, 0},
        {"[192.0.2.1]", 0, 0},
        {"b\xc3\xbc" "cher.example", 0, 0},
        {"b\xc3\xbc" "cher.example", 1, 1},
        {"b\xfc" "cher.example", 1, 0}, /* Latin-1, not UTF-8 */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (address_domain_valid(cases[i].d, cases[i].utf8) != cases[i].ok)
            fail_msg("domain case %zu \"%s\"", i, cases[i].d);
    char with63[100];
    snprintf(with63, sizeof(with63), "%s.org", l63);
    assert_true(address_domain_valid(with63, 0));
    snprintf(with63, sizeof(with63), "a%s.org", l63);
    assert_false(address_domain_valid(with63, 0));
    assert_int_equal(strlen(d255), 255);
    assert_true(address_domain_valid(d255, 0));
    assert_false(address_domain_valid(d256, 0));
}

static void test_xtext(void **state)
{
    (void)state;
    static const struct {
        const char *src;
        int rc;
        const char *want;
    } cases[] = {
        {"", 0, ""},
        {"plain", 0, "plain"},
        {"a+2Bb", 0, "a+b"},
        {"+3D", 0, "="},
        {"rfc822;user+40example.org", 0, "rfc822;user@example.org"},
        {"+20+7E", 0, " ~"},
        {"+C3+A9", 0, "\xc3\xa9"},
        {"+", -1, NULL},
        {"a+", -1, NULL},
        {"+2", -1, NULL},
        {"+zz", -1, NULL},
        {"+G0", -1, NULL},
        {"a=b", -1, NULL},
        {"a b", -1, NULL},
        {"a\x7f", -1, NULL},
        {"a\x01", -1, NULL},
        {"\xc3\xa9", -1, NULL},
        {"a+00b", -1, NULL}, /* a NUL cannot be handed over in a C string */
        {"+00", -1, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[64];
        memset(out, 'Z', sizeof(out));
        int rc = address_xtext_decode(cases[i].src, out, sizeof(out));
        if (rc != cases[i].rc)
            fail_msg("xtext \"%s\": rc %d, want %d", cases[i].src, rc, cases[i].rc);
        if (rc == 0)
            assert_string_equal(out, cases[i].want);
    }
    /* the output size is respected */
    char out[4];
    assert_int_equal(address_xtext_decode("abc", out, 4), 0);
    assert_string_equal(out, "abc");
    assert_int_equal(address_xtext_decode("abcd", out, 4), -1);
    assert_int_equal(address_xtext_decode("a+2Bc", out, 4), 0);
    assert_string_equal(out, "a+c");
    assert_int_equal(address_xtext_decode("", out, 0), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_paths),
        cmocka_unit_test(test_length_limits),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_params_malformed),
        cmocka_unit_test(test_domain_valid),
        cmocka_unit_test(test_xtext),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
