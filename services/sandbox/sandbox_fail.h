/*
 * sandbox_fail: the sandbox's failure policy, without any I/O. Two sources
 * decide how the sink misbehaves: the local part of a recipient
 * (fail-421-*, fail-450-*, fail-550-*, slow-*, drop-*), and a fail mode an
 * operator sets over the bus for a number of seconds (every new connection
 * greeted with 421, or every RCPT answered with 450/451/550/554). This file
 * classifies and validates; the session applies the result.
 */
#ifndef SX_SANDBOX_FAIL_H
#define SX_SANDBOX_FAIL_H

#include <stddef.h>
#include <stdint.h>

#define FAIL_TEXT_MAX      200            /* operator text carried in SMTP replies */
#define FAIL_SECONDS_MAX   (7u * 86400u)  /* a drill longer than a week is a mistake */

/* What a recipient's local part asks for. */
typedef enum {
    STEER_NONE = 0,
    STEER_FAIL_421, /* 421 at RCPT, then close */
    STEER_FAIL_450, /* 450 at RCPT, session goes on */
    STEER_FAIL_550, /* 550 at RCPT, session goes on */
    STEER_SLOW,     /* every later reply of the transaction waits slow_delay */
    STEER_DROP,     /* close without a reply at DATA or the first BDAT */
} steer_t;

/* Classify a local part as written (quotes allowed), by case-insensitive prefix. */
steer_t steer_classify(const char *local);
const char *steer_name(steer_t s);

/* A fail mode: code 0 is "off". Times are monotonic (until_mono) and wall (until_wall) ms. */
typedef struct fail_mode {
    unsigned code;
    uint64_t until_mono;
    uint64_t until_wall;
    char text[FAIL_TEXT_MAX + 1];
} fail_mode_t;

/*
 * Validate and apply a request: code 0 clears at once; 421, 450, 451, 550 and
 * 554 need 1..FAIL_SECONDS_MAX seconds. text, when not empty, must be
 * printable ASCII of at most FAIL_TEXT_MAX octets (it goes into SMTP replies).
 * Returns 0, or -1 with a reason in err and f left unchanged.
 */
int fail_mode_set(fail_mode_t *f, unsigned code, uint64_t seconds, const char *text,
                  uint64_t now_mono, uint64_t now_wall, char *err, size_t errlen);

/* The code in force at now_mono, or 0 (an expired mode counts as off). */
unsigned fail_mode_code(const fail_mode_t *f, uint64_t now_mono);

/* Whole seconds left, rounded up; 0 when off. */
uint64_t fail_mode_seconds_left(const fail_mode_t *f, uint64_t now_mono);

/* The enhanced status code that goes with a fail code ("4.3.2" for 421). */
const char *fail_enhanced(unsigned code);

/* The reply text used when the operator gave none. */
const char *fail_default_text(unsigned code);

#endif
