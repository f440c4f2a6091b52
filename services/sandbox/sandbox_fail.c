/*
 * sandbox_fail: recipient steering and the operator's fail mode. Pure
 * functions over plain data; the clock is passed in so tests can drive it.
 */
#include "sandbox_fail.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static const struct {
    const char *prefix;
    steer_t steer;
} steer_table[] = {
    {"fail-421-", STEER_FAIL_421},
    {"fail-450-", STEER_FAIL_450},
    {"fail-550-", STEER_FAIL_550},
    {"slow-", STEER_SLOW},
    {"drop-", STEER_DROP},
};

steer_t steer_classify(const char *local)
{
    if (local == NULL)
        return STEER_NONE;
    if (*local == '"')
        local++; /* "slow-x"@example.test steers like slow-x@example.test */
    for (size_t i = 0; i < sizeof(steer_table) / sizeof(steer_table[0]); i++) {
        size_t n = strlen(steer_table[i].prefix);
        if (strncasecmp(local, steer_table[i].prefix, n) == 0)
            return steer_table[i].steer;
    }
    return STEER_NONE;
}

const char *steer_name(steer_t s)
{
    switch (s) {
    case STEER_FAIL_421:
        return "fail-421";
    case STEER_FAIL_450:
        return "fail-450";
    case STEER_FAIL_550:
        return "fail-550";
    case STEER_SLOW:
        return "slow";
    case STEER_DROP:
        return "drop";
    case STEER_NONE:
        break;
    }
    return "none";
}

const char *fail_enhanced(unsigned code)
{
    switch (code) {
    case 421:
        return "4.3.2"; /* system not accepting network messages */
    case 450:
        return "4.2.1"; /* mailbox temporarily disabled */
    case 451:
        return "4.3.0"; /* other mail system problem */
    case 550:
        return "5.2.1"; /* mailbox disabled */
    case 554:
        return "5.3.0"; /* other mail system problem */
    default:
        return "";
    }
}

const char *fail_default_text(unsigned code)
{
    switch (code) {
    case 421:
        return "Service not available, closing transmission channel (sandbox fail mode)";
    case 450:
        return "Mailbox temporarily unavailable (sandbox fail mode)";
    case 451:
        return "Local error in processing (sandbox fail mode)";
    case 550:
        return "Mailbox unavailable (sandbox fail mode)";
    case 554:
        return "Transaction failed (sandbox fail mode)";
    default:
        return "";
    }
}

static int code_known(unsigned code)
{
    return code == 421 || code == 450 || code == 451 || code == 550 || code == 554;
}

int fail_mode_set(fail_mode_t *f, unsigned code, uint64_t seconds, const char *text,
                  uint64_t now_mono, uint64_t now_wall, char *err, size_t errlen)
{
    if (code == 0) {
        memset(f, 0, sizeof(*f));
        return 0;
    }
    if (!code_known(code)) {
        snprintf(err, errlen, "code %u is not one of 0 (clear), 421, 450, 451, 550, 554", code);
        return -1;
    }
    if (seconds == 0 || seconds > FAIL_SECONDS_MAX) {
        snprintf(err, errlen, "seconds must be from 1 to %u, not %llu", FAIL_SECONDS_MAX,
                 (unsigned long long)seconds);
        return -1;
    }
    size_t len = text ? strlen(text) : 0;
    if (len > FAIL_TEXT_MAX) {
        snprintf(err, errlen, "text is %zu octets long; at most %d are allowed", len,
                 FAIL_TEXT_MAX);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x20 || c > 0x7e) {
            snprintf(err, errlen, "text may hold printable ASCII only (octet 0x%02x at %zu)", c,
                     i);
            return -1;
        }
    }
    f->code = code;
    f->until_mono = now_mono + seconds * 1000u;
    f->until_wall = now_wall + seconds * 1000u;
    memcpy(f->text, len ? text : "", len);
    f->text[len] = '\0';
    return 0;
}

unsigned fail_mode_code(const fail_mode_t *f, uint64_t now_mono)
{
    return f->code && now_mono < f->until_mono ? f->code : 0;
}

uint64_t fail_mode_seconds_left(const fail_mode_t *f, uint64_t now_mono)
{
    if (!fail_mode_code(f, now_mono))
        return 0;
    return (f->until_mono - now_mono + 999u) / 1000u;
}
