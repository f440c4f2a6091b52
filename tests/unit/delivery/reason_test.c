/*
 * reason_test: the reason class of every kind of reply, as a table:
 * mailbox, policy, content, rate (by enhanced code and by text), network,
 * protocol, TLS (only when we made the reply up), the fallbacks by basic
 * code when the enhanced code is missing or contradicts it, and reasons
 * fixed by whoever made the reply (dns, config).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "delivery_reason.h"

static const struct {
    unsigned code;
    const char *enh;
    const char *text;
    int local;
    const char *want;
} table[] = {
    {250, "2.0.0", "OK", 0, ""},
    {251, "", "forwarded", 0, ""},
    /* mailbox */
    {550, "5.1.1", "no such user", 0, "mailbox"},
    {553, "5.1.3", "bad address syntax", 0, "mailbox"},
    {552, "5.2.2", "mailbox full", 0, "mailbox"},
    {450, "4.2.1", "mailbox disabled for now", 0, "mailbox"},
    {452, "4.2.2", "over quota", 0, "mailbox"},
    /* policy */
    {550, "5.7.1", "relaying denied", 0, "policy"},
    {550, "5.7.26", "unauthenticated mail is prohibited", 0, "policy"},
    {530, "5.7.0", "must issue STARTTLS first", 0, "policy"},
    {451, "4.7.1", "greylisted, come back later", 0, "policy"},
    {421, "4.7.1", "try again", 0, "policy"},
    /* content */
    {554, "5.6.0", "malformed message", 0, "content"},
    {550, "5.6.7", "destination does not support SMTPUTF8", 1, "content"},
    {552, "5.3.4", "message too big", 0, "content"},
    {550, "5.7.1", "Message rejected as spam", 0, "content"},
    {554, "5.7.1", "virus found in attachment", 0, "content"},
    {550, "5.7.1", "rejected: content policy violation", 0, "content"},
    /* rate */
    {421, "4.7.28", "unusual rate of mail from your IP", 0, "rate"},
    {550, "5.7.28", "too much unsolicited mail", 0, "rate"},
    {421, "4.7.0", "too many connections", 0, "rate"},
    {451, "4.7.1", "rate limit exceeded, slow down", 0, "rate"},
    {450, "4.7.0", "Throttled: please retry later", 0, "rate"},
    {452, "4.5.3", "too many recipients", 0, "rate"},
    {451, "4.7.1", "separate issue", 0, "policy"}, /* "rate" inside a word is not a rate */
    /* network */
    {451, "4.4.1", "connection refused", 1, "network"},
    {451, "4.4.2", "timeout waiting for DATA reply", 1, "network"},
    {421, "4.4.5", "system congestion", 0, "network"},
    {451, "4.3.0", "local error in processing", 0, "network"},
    {421, "", "service not available", 0, "network"},
    {451, "", "try later", 0, "network"},
    /* protocol */
    {500, "5.5.1", "command unrecognized", 0, "protocol"},
    {501, "5.5.4", "bad parameters", 0, "protocol"},
    {503, "", "bad sequence", 0, "protocol"},
    /* TLS: our own 4.7.5 only */
    {451, "4.7.5", "TLS required but mx does not offer STARTTLS", 1, "tls"},
    {454, "4.7.5", "cryptographic failure", 0, "policy"},
    /* basic codes when there is no (or a contradicting) enhanced code */
    {550, "", "no", 0, "mailbox"},
    {554, "", "no", 0, "policy"},
    {550, "4.1.1", "class does not match the code", 0, "mailbox"},
    {554, "4.7.1", "class does not match the code", 0, "policy"},
    {552, "5.x.1", "not an enhanced code", 0, "mailbox"},
    {599, "5.9.9", "unknown subject", 0, "policy"},
    {0, "", "", 1, "network"},
};

static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        const char *got =
            reason_classify(table[i].code, table[i].enh, table[i].text, table[i].local);
        if (strcmp(got, table[i].want) != 0)
            fail_msg("%u %s \"%s\" local=%d: %s, want %s", table[i].code, table[i].enh,
                     table[i].text, table[i].local, got, table[i].want);
    }
    assert_string_equal(reason_classify(550, NULL, NULL, 0), "mailbox");
}

static void test_fixed_reasons(void **state)
{
    (void)state;
    dlv_reply_t r;
    dlv_reply_set(&r, 451, "4.4.3", "MX lookup for example.org failed");
    assert_true(r.local);
    assert_string_equal(reason_of(&r), "network");
    r.reason = REASON_DNS;
    assert_string_equal(reason_of(&r), "dns");
    dlv_reply_set(&r, 451, "4.4.4", "10.0.0.1 is private");
    r.reason = REASON_CONFIG;
    assert_string_equal(reason_of(&r), "config");
    /* a delivered recipient has no reason, whatever was set */
    dlv_reply_set(&r, 250, "2.0.0", "ok");
    r.reason = REASON_DNS;
    assert_string_equal(reason_of(&r), "");
    /* a fresh reply set forgets an older reason */
    dlv_reply_set(&r, 550, "5.1.1", "no");
    assert_null(r.reason);
    assert_string_equal(reason_of(&r), "mailbox");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_fixed_reasons),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
