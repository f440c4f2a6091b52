/*
 * ingress_scan: content scanning before the 250. The whole message (its
 * header lines as ingress will store them, and the body) is posted to a
 * content scanner speaking the rspamd HTTP protocol (/checkv2) with libcurl,
 * driven by the service's loop (never blocking). The verdict says whether
 * to reject (554 5.7.1 with the scanner's reason), to tempfail (451 4.7.1:
 * scanner down or slow and the configuration says so), or to accept, with
 * header lines to store in front of the message (X-Spam-* verdict lines, or
 * a mark that the message went unscanned). Thresholds can differ per tenant.
 * It does not decide anything about SMTP sessions beyond that verdict.
 */
#ifndef SX_INGRESS_SCAN_H
#define SX_INGRESS_SCAN_H

#include "core/conf.h"
#include "core/loop.h"

#include <stddef.h>
#include <stdint.h>

/*
 * The `scan` group of the ingress section:
 *   scan = {
 *     url = "http://127.0.0.1:11333/checkv2";  # empty or absent: no scanning
 *     reject_score = 15.0;       # score at or above which the message is refused
 *     timeout = "10s";           # the whole exchange, connect included
 *     max_size = "20M";          # larger messages are not scanned (marked as such)
 *     on_failure = "accept";     # scanner down/slow/garbled: "accept" (and mark) or "tempfail"
 *     tenants = ( { tenant = "demo"; reject_score = 8.0; } );
 *   };
 */
typedef struct scan_tenant {
    char *tenant;
    double reject_score;
} scan_tenant_t;

typedef struct scan_conf {
    char *url;
    double reject_score;
    uint64_t timeout_ms;
    uint64_t max_size;
    int tempfail_on_failure;
    scan_tenant_t *tenants;
    size_t ntenants;
} scan_conf_t;

/* CONF_CUSTOM parser and release for the `scan` group (field: scan_conf_t). */
int scan_conf_parse(const config_setting_t *s, void *field, char *err, size_t errlen);
void scan_conf_release(void *field);

typedef enum {
    SCAN_ACCEPT = 0,  /* store it, with the verdict header lines */
    SCAN_REJECT,      /* 554 5.7.1 <reason> */
    SCAN_TEMPFAIL,    /* 451 4.7.1 <reason> */
} scan_action_t;

typedef struct scan_verdict {
    scan_action_t action;
    double score;            /* meaningful when scanned */
    double threshold;        /* the reject score that applied */
    int scanned;             /* 0: not scanned (too big, scanner failure) */
    char reason[256];        /* for the SMTP reply and logs, printable ASCII only */
    const char *headers;     /* CRLF-terminated lines to prepend ("" for none); valid in done */
} scan_verdict_t;

/* What the scanner is told about the message (rspamd request headers). */
typedef struct scan_meta {
    const char *message_id;  /* our queue id: logs and the Queue-Id header */
    const char *tenant;
    const char *client_ip;
    const char *helo;
    const char *mail_from;
    const char *const *rcpts;
    size_t nrcpts;
    const char *username;
} scan_meta_t;

typedef struct scanner scanner_t;
typedef struct scan_job scan_job_t;

typedef void (*scan_done_fn)(const scan_verdict_t *verdict, void *arg);

/* NULL when conf has no url (scanning off). */
scanner_t *scanner_new(loop_t *loop, const scan_conf_t *conf);
void scanner_destroy(scanner_t **sc);

/*
 * Scan len bytes at data (the scanner keeps no pointer to it after this
 * call returns: it copies what it needs). done runs exactly once, later,
 * never inside this call, unless scan_cancel() is called first. Messages
 * over max_size complete at once (on the next loop turn) as not scanned.
 */
scan_job_t *scan_start(scanner_t *sc, const char *data, size_t len, const scan_meta_t *meta,
                       scan_done_fn done, void *arg);
/* The session went away: done will not run. */
void scan_cancel(scan_job_t *job);

#endif
