/*
 * ingress_scan: content scanning through an rspamd-compatible HTTP scanner.
 * The `scan` config group is parsed here (strictly: unknown keys refused);
 * each job POSTs a copy of the message with libcurl, run by the service's
 * loop through curl_loop (libshared/net), so nothing blocks and no thread
 * runs. The reply is untrusted: capped in size, parsed with jansson, every
 * field checked, and any text from it reduced to printable ASCII before it
 * reaches an SMTP reply, a header line or a log. A host name in the url is
 * looked up by curl's own resolver, which never blocks the loop; an IP
 * literal needs no lookup at all.
 * It does not talk SMTP, and does not store or modify the message.
 */
#include "ingress_scan.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/log.h"
#include "net/curl_loop.h"

#include <assert.h>
#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* configuration bounds and defaults */
#define SCAN_URL_MAX          2048
#define SCAN_TENANTS_MAX      1024
#define SCAN_TENANT_NAME_MAX  64
#define SCAN_SCORE_MAX        100000.0
#define SCAN_TIMEOUT_MIN_MS   100ull
#define SCAN_TIMEOUT_MAX_MS   300000ull
#define SCAN_SIZE_MIN         1024ull
#define SCAN_SIZE_MAX         (1ull << 30)
#define SCAN_DEFAULT_SCORE    15.0
#define SCAN_DEFAULT_TIMEOUT  10000ull
#define SCAN_DEFAULT_MAX_SIZE (20ull << 20)

/* what a job sends and accepts */
#define SCAN_REPLY_MAX       (1u << 20) /* scanner replies beyond this are abandoned */
#define SCAN_HDR_VALUE_MAX   512        /* one request header value */
#define SCAN_ACTION_MAX      32         /* the scanner's action name, as shown */
#define SCAN_SYMBOLS_LOG_MAX 256        /* symbol names listed in the log line */
#define SCAN_SCORE_ABS_MAX   1e9        /* a reported score beyond this is garbage */
#define SCAN_HEADERS_MAX     512        /* verdict header lines */
#define SCAN_MSGID_MAX       64
#define SCAN_TEMPFAIL_REASON "Content scanner unavailable, try again later"

struct scanner {
    loop_t *loop;
    curl_loop_t *cl;
    scan_conf_t conf; /* a private copy */
    scan_job_t *jobs; /* live jobs */
};

struct scan_job {
    scanner_t *sc;
    scan_job_t *prev, *next;
    CURL *easy; /* NULL: completes from the timer, never sent */
    struct curl_slist *req_headers;
    char *body;
    size_t len;
    buf_t reply;
    int reply_too_big;
    char errbuf[CURL_ERROR_SIZE];
    loop_timer_t later; /* delivers a verdict decided without the scanner */
    char msgid[SCAN_MSGID_MAX];
    char tenant[SCAN_TENANT_NAME_MAX + 1];
    double threshold;
    uint64_t started_ms;
    scan_done_fn done;
    void *arg;
    scan_verdict_t verdict;
    char headers[SCAN_HEADERS_MAX];
    char scanner_action[SCAN_ACTION_MAX + 1];
    char symbols[SCAN_SYMBOLS_LOG_MAX];
    char failure[96]; /* short reason when not scanned */
    int failed;       /* not scanned because the scanner failed */
};

/* ---- configuration ---- */

static const char *const scan_keys[] = {"url",      "reject_score", "timeout",
                                        "max_size", "on_failure",   "tenants"};
static const char *const tenant_keys[] = {"tenant", "reject_score"};

static int perr(char *err, size_t errlen, const config_setting_t *s, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* A reason, with the line of the setting it is about (conf adds the file). */
static int perr(char *err, size_t errlen, const config_setting_t *s, const char *fmt, ...)
{
    char reason[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    if (s)
        snprintf(err, errlen, "%s (line %u)", reason, config_setting_source_line(s));
    else
        sx_strlcpy(err, reason, errlen);
    return -1;
}

static int key_known(const char *name, const char *const *keys, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(name, keys[i]) == 0)
            return 1;
    return 0;
}

static int check_keys(const config_setting_t *g, const char *what, const char *const *keys,
                      size_t n, char *err, size_t errlen)
{
    for (int i = 0; i < config_setting_length(g); i++) {
        const config_setting_t *m = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(m);
        if (name && !key_known(name, keys, n))
            return perr(err, errlen, m, "%s\"%s\" is an unknown setting", what, name);
    }
    return 0;
}

static int get_score(const config_setting_t *s, const char *what, double *out, char *err,
                     size_t errlen)
{
    double v;
    switch (config_setting_type(s)) {
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:
        v = (double)config_setting_get_int64(s);
        break;
    case CONFIG_TYPE_FLOAT:
        v = config_setting_get_float(s);
        break;
    default:
        return perr(err, errlen, s, "%s: expected a number such as 15 or 7.5", what);
    }
    if (!isfinite(v) || v <= 0 || v > SCAN_SCORE_MAX)
        return perr(err, errlen, s, "%s: %g must be above 0 and at most %g", what, v,
                    SCAN_SCORE_MAX);
    *out = v;
    return 0;
}

/* A duration or size: an integer (seconds, bytes) or a string with a unit. */
static int get_scaled(const config_setting_t *s, int duration, uint64_t min, uint64_t max,
                      uint64_t *out, char *err, size_t errlen)
{
    const char *name = config_setting_name(s);
    const char *example = duration ? "a duration such as \"10s\"" : "a size such as \"20M\"";
    uint64_t v;
    int t = config_setting_type(s);
    if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64) {
        long long n = config_setting_get_int64(s);
        if (n < 0)
            return perr(err, errlen, s, "%s: must not be negative", name);
        if (duration && (uint64_t)n > UINT64_MAX / 1000u)
            return perr(err, errlen, s, "%s: value too large", name);
        v = (uint64_t)n * (duration ? 1000u : 1u);
    } else if (t == CONFIG_TYPE_STRING) {
        const char *text = config_setting_get_string(s);
        int rc = duration ? conf_parse_duration(text, &v) : conf_parse_size(text, &v);
        if (rc < 0)
            return perr(err, errlen, s, "%s: \"%s\" is not %s", name, text, example);
    } else {
        return perr(err, errlen, s, "%s: expected %s", name, example);
    }
    if (v < min || v > max) {
        if (duration)
            return perr(err, errlen, s, "%s: %llums is out of range %llums..%llums", name,
                        (unsigned long long)v, (unsigned long long)min, (unsigned long long)max);
        return perr(err, errlen, s, "%s: %llu bytes is out of range %llu..%llu", name,
                    (unsigned long long)v, (unsigned long long)min, (unsigned long long)max);
    }
    *out = v;
    return 0;
}

static int url_ok(const char *url)
{
    size_t n = strlen(url);
    size_t skip;
    if (strncasecmp(url, "http://", 7) == 0)
        skip = 7;
    else if (strncasecmp(url, "https://", 8) == 0)
        skip = 8;
    else
        return 0;
    if (n == skip || url[skip] == '/' || n > SCAN_URL_MAX)
        return 0; /* no host */
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f)
            return 0;
    return 1;
}

static int tenant_name_ok(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > SCAN_TENANT_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)t[i] <= 0x20 || (unsigned char)t[i] >= 0x7f)
            return 0;
    return 1;
}

static int parse_tenants(const config_setting_t *s, scan_conf_t *c, char *err, size_t errlen)
{
    int t = config_setting_type(s);
    if (t != CONFIG_TYPE_LIST)
        return perr(err, errlen, s,
                    "tenants: expected a list ( { tenant = \"...\"; reject_score = N; }, ... )");
    int n = config_setting_length(s);
    if (n > SCAN_TENANTS_MAX)
        return perr(err, errlen, s, "tenants: more than %d entries", SCAN_TENANTS_MAX);
    c->tenants = n ? xcalloc((size_t)n, sizeof(*c->tenants)) : NULL;
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        char what[64];
        snprintf(what, sizeof(what), "tenants[%d]: ", i + 1);
        if (config_setting_type(e) != CONFIG_TYPE_GROUP)
            return perr(err, errlen, e, "%sexpected a group { tenant; reject_score; }", what);
        if (check_keys(e, what, tenant_keys, 2, err, errlen) < 0)
            return -1;
        const config_setting_t *name = config_setting_get_member(e, "tenant");
        const config_setting_t *score = config_setting_get_member(e, "reject_score");
        if (name == NULL || score == NULL)
            return perr(err, errlen, e, "%sneeds tenant and reject_score", what);
        if (config_setting_type(name) != CONFIG_TYPE_STRING ||
            !tenant_name_ok(config_setting_get_string(name)))
            return perr(err, errlen, name,
                        "%stenant: expected a name of 1 to %d printable characters", what,
                        SCAN_TENANT_NAME_MAX);
        const char *tn = config_setting_get_string(name);
        for (size_t k = 0; k < c->ntenants; k++)
            if (strcmp(c->tenants[k].tenant, tn) == 0)
                return perr(err, errlen, name, "%stenant \"%s\" is listed twice", what, tn);
        char swhat[80];
        snprintf(swhat, sizeof(swhat), "tenants[%d].reject_score", i + 1);
        double v;
        if (get_score(score, swhat, &v, err, errlen) < 0)
            return -1;
        c->tenants[c->ntenants].tenant = xstrdup(tn);
        c->tenants[c->ntenants].reject_score = v;
        c->ntenants++;
    }
    return 0;
}

static void scan_conf_defaults(scan_conf_t *c)
{
    memset(c, 0, sizeof(*c));
    c->reject_score = SCAN_DEFAULT_SCORE;
    c->timeout_ms = SCAN_DEFAULT_TIMEOUT;
    c->max_size = SCAN_DEFAULT_MAX_SIZE;
}

static int scan_conf_fill(const config_setting_t *s, scan_conf_t *c, char *err, size_t errlen)
{
    if (config_setting_type(s) != CONFIG_TYPE_GROUP)
        return perr(err, errlen, NULL,
                    "expected a group { url = \"http://...\"; reject_score = 15; ... }");
    if (check_keys(s, "", scan_keys, sizeof(scan_keys) / sizeof(scan_keys[0]), err, errlen) < 0)
        return -1;
    const config_setting_t *m;
    if ((m = config_setting_get_member(s, "url")) != NULL) {
        if (config_setting_type(m) != CONFIG_TYPE_STRING)
            return perr(err, errlen, m, "url: expected a string");
        const char *url = config_setting_get_string(m);
        if (*url && !url_ok(url))
            return perr(err, errlen, m,
                        "url: \"%.200s\" is not an http:// or https:// URL with a host "
                        "(at most %d characters, no spaces)",
                        url, SCAN_URL_MAX);
        c->url = *url ? xstrdup(url) : NULL;
    }
    if ((m = config_setting_get_member(s, "reject_score")) != NULL)
        if (get_score(m, "reject_score", &c->reject_score, err, errlen) < 0)
            return -1;
    if ((m = config_setting_get_member(s, "timeout")) != NULL)
        if (get_scaled(m, 1, SCAN_TIMEOUT_MIN_MS, SCAN_TIMEOUT_MAX_MS, &c->timeout_ms, err,
                       errlen) < 0)
            return -1;
    if ((m = config_setting_get_member(s, "max_size")) != NULL)
        if (get_scaled(m, 0, SCAN_SIZE_MIN, SCAN_SIZE_MAX, &c->max_size, err, errlen) < 0)
            return -1;
    if ((m = config_setting_get_member(s, "on_failure")) != NULL) {
        const char *v =
            config_setting_type(m) == CONFIG_TYPE_STRING ? config_setting_get_string(m) : NULL;
        if (v && strcmp(v, "accept") == 0)
            c->tempfail_on_failure = 0;
        else if (v && strcmp(v, "tempfail") == 0)
            c->tempfail_on_failure = 1;
        else
            return perr(err, errlen, m, "on_failure: expected \"accept\" or \"tempfail\"");
    }
    if ((m = config_setting_get_member(s, "tenants")) != NULL)
        if (parse_tenants(m, c, err, errlen) < 0)
            return -1;
    return 0;
}

int scan_conf_parse(const config_setting_t *s, void *field, char *err, size_t errlen)
{
    scan_conf_t *c = field;
    scan_conf_defaults(c);
    if (s == NULL)
        return 0; /* no scanning */
    if (scan_conf_fill(s, c, err, errlen) < 0) {
        scan_conf_release(c);
        return -1;
    }
    return 0;
}

void scan_conf_release(void *field)
{
    scan_conf_t *c = field;
    free(c->url);
    c->url = NULL;
    for (size_t i = 0; i < c->ntenants; i++)
        free(c->tenants[i].tenant);
    free(c->tenants);
    c->tenants = NULL;
    c->ntenants = 0;
}

/* ---- text from outside ---- */

/*
 * Copy src into dst (size bytes, terminated) keeping printable ASCII; tabs,
 * CR and LF become spaces, runs of spaces one space, other bytes '?'. Leading
 * and trailing spaces go. What comes out can sit in an SMTP reply or a header.
 */
static void text_clean(char *dst, size_t size, const char *src, size_t len)
{
    size_t o = 0;
    int space = 1; /* drop leading spaces */
    for (size_t i = 0; i < len && o + 1 < size; i++) {
        unsigned char ch = (unsigned char)src[i];
        if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n') {
            if (!space)
                dst[o++] = ' ';
            space = 1;
            continue;
        }
        dst[o++] = (ch > 0x20 && ch < 0x7f) ? (char)ch : '?';
        space = 0;
    }
    while (o > 0 && dst[o - 1] == ' ')
        o--;
    if (size)
        dst[o] = '\0';
}

/* A request header value: control bytes removed, bounded. */
static void value_clean(char *dst, size_t size, const char *src)
{
    size_t o = 0;
    for (; *src && o + 1 < size; src++) {
        unsigned char ch = (unsigned char)*src;
        if (ch >= 0x20 && ch != 0x7f)
            dst[o++] = (char)ch;
    }
    while (o > 0 && dst[o - 1] == ' ')
        o--;
    dst[o] = '\0';
}

static void add_header(scan_job_t *job, const char *name, const char *value)
{
    if (value == NULL)
        return;
    char clean[SCAN_HDR_VALUE_MAX];
    value_clean(clean, sizeof(clean), value);
    const char *v = clean;
    while (*v == ' ')
        v++;
    if (*v == '\0')
        return;
    char line[SCAN_HDR_VALUE_MAX + 32];
    snprintf(line, sizeof(line), "%s: %s", name, v);
    struct curl_slist *l = curl_slist_append(job->req_headers, line);
    if (l)
        job->req_headers = l;
}

/* ---- verdicts ---- */

static double threshold_for(const scanner_t *sc, const char *tenant)
{
    if (tenant && *tenant)
        for (size_t i = 0; i < sc->conf.ntenants; i++)
            if (strcmp(sc->conf.tenants[i].tenant, tenant) == 0)
                return sc->conf.tenants[i].reject_score;
    return sc->conf.reject_score;
}

/*
 * Not scanned. A scanner failure follows on_failure (accept and mark, or
 * tempfail); a message over max_size is always accepted and marked.
 */
static void verdict_unscanned(scan_job_t *job, const char *why, int failure)
{
    scan_verdict_t *v = &job->verdict;
    v->scanned = 0;
    v->score = 0;
    v->threshold = job->threshold;
    job->failed = failure;
    sx_strlcpy(job->failure, why, sizeof(job->failure));
    if (failure && job->sc->conf.tempfail_on_failure) {
        v->action = SCAN_TEMPFAIL;
        sx_strlcpy(v->reason, SCAN_TEMPFAIL_REASON, sizeof(v->reason));
        job->headers[0] = '\0';
    } else {
        v->action = SCAN_ACCEPT;
        sx_strlcpy(v->reason, why, sizeof(v->reason));
        snprintf(job->headers, sizeof(job->headers), "X-Sendarix-Scan: unscanned (%s)\r\n", why);
    }
    v->headers = job->headers;
}

static void symbols_list(scan_job_t *job, json_t *symbols)
{
    size_t o = 0;
    const char *key;
    json_t *val;
    job->symbols[0] = '\0';
    if (!json_is_object(symbols))
        return;
    json_object_foreach(symbols, key, val)
    {
        char name[64];
        size_t n = 0;
        for (const char *p = key; *p && n + 1 < sizeof(name); p++) {
            unsigned char ch = (unsigned char)*p;
            if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                ch == '_' || ch == '-' || ch == '.')
                name[n++] = (char)ch;
        }
        name[n] = '\0';
        if (n == 0)
            continue;
        if (o + n + 2 >= sizeof(job->symbols))
            break;
        o += (size_t)snprintf(job->symbols + o, sizeof(job->symbols) - o, "%s%s", o ? "," : "",
                              name);
        (void)val;
    }
}

/* The scanner answered 200: read its verdict, or call it a failure. */
static void verdict_from_reply(scan_job_t *job)
{
    json_error_t jerr;
    json_t *root =
        json_loadb(buf_head(&job->reply), buf_used(&job->reply), JSON_REJECT_DUPLICATES, &jerr);
    json_t *score = root ? json_object_get(root, "score") : NULL;
    if (!json_is_object(root) || !json_is_number(score) || !isfinite(json_number_value(score)) ||
        fabs(json_number_value(score)) > SCAN_SCORE_ABS_MAX) {
        json_decref(root);
        verdict_unscanned(job, "scanner reply not understood", 1);
        return;
    }
    scan_verdict_t *v = &job->verdict;
    v->scanned = 1;
    v->score = json_number_value(score);
    v->threshold = job->threshold;
    json_t *action = json_object_get(root, "action");
    if (json_is_string(action))
        text_clean(job->scanner_action, sizeof(job->scanner_action), json_string_value(action),
                   json_string_length(action));
    if (job->scanner_action[0] == '\0')
        snprintf(job->scanner_action, sizeof(job->scanner_action), "unknown");
    symbols_list(job, json_object_get(root, "symbols"));

    if (v->score >= v->threshold) {
        v->action = SCAN_REJECT;
        json_t *msgs = json_object_get(root, "messages");
        json_t *smtp = json_is_object(msgs) ? json_object_get(msgs, "smtp_message") : NULL;
        if (json_is_string(smtp))
            text_clean(v->reason, sizeof(v->reason), json_string_value(smtp),
                       json_string_length(smtp));
        if (v->reason[0] == '\0')
            snprintf(v->reason, sizeof(v->reason), "Message rejected as spam (score %.2f >= %.2f)",
                     v->score, v->threshold);
        job->headers[0] = '\0';
    } else {
        v->action = SCAN_ACCEPT;
        int n = snprintf(job->headers, sizeof(job->headers),
                         "X-Spam-Score: %.2f\r\n"
                         "X-Spam-Status: No, score=%.2f required=%.2f\r\n"
                         "X-Spam-Action: %s\r\n",
                         v->score, v->score, v->threshold, job->scanner_action);
        if (n < 0 || (size_t)n >= sizeof(job->headers))
            job->headers[0] = '\0'; /* cannot happen with bounded fields; never half a line */
    }
    v->headers = job->headers;
    json_decref(root);
}

/* A transfer ended: decide from curl's result, the status and the body. */
static void verdict_from_transfer(scan_job_t *job, CURLcode rc)
{
    long status = 0;
    char why[64];
    curl_easy_getinfo(job->easy, CURLINFO_RESPONSE_CODE, &status);
    if (rc == CURLE_OK && status == 200) {
        verdict_from_reply(job);
        return;
    }
    if (rc == CURLE_OK)
        snprintf(why, sizeof(why), "scanner HTTP status %ld", status);
    else if (rc == CURLE_OPERATION_TIMEDOUT)
        snprintf(why, sizeof(why), "scanner timeout");
    else if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST)
        snprintf(why, sizeof(why), "scanner unreachable");
    else if (job->reply_too_big || rc == CURLE_FILESIZE_EXCEEDED)
        snprintf(why, sizeof(why), "scanner reply too large");
    else
        snprintf(why, sizeof(why), "scanner error %d", (int)rc);
    verdict_unscanned(job, why, 1);
}

static const char *action_name(scan_action_t a)
{
    switch (a) {
    case SCAN_ACCEPT:
        return "accept";
    case SCAN_REJECT:
        return "reject";
    case SCAN_TEMPFAIL:
        return "tempfail";
    }
    return "?";
}

static void job_log(scan_job_t *job)
{
    const scan_verdict_t *v = &job->verdict;
    char msg[SCAN_MSGID_MAX * 4 + 3], tenant[SCAN_TENANT_NAME_MAX * 4 + 3];
    char sact[SCAN_ACTION_MAX * 4 + 3], why[sizeof(job->failure) * 4 + 3];
    char reason[sizeof(v->reason) * 4 + 3], err[CURL_ERROR_SIZE * 4 + 3];
    uint64_t ms = clock_mono_ms() - job->started_ms;
    log_quote(msg, sizeof(msg), job->msgid[0] ? job->msgid : "-",
              strlen(job->msgid[0] ? job->msgid : "-"));
    log_quote(tenant, sizeof(tenant), job->tenant[0] ? job->tenant : "-",
              strlen(job->tenant[0] ? job->tenant : "-"));
    if (v->scanned) {
        log_quote(sact, sizeof(sact), job->scanner_action, strlen(job->scanner_action));
        log_quote(reason, sizeof(reason), v->reason, strlen(v->reason));
        log_info("msg=%s event=scanned tenant=%s score=%.2f threshold=%.2f action=%s "
                 "scanner_action=%s symbols=%s ms=%llu%s%s",
                 msg, tenant, v->score, v->threshold, action_name(v->action), sact,
                 job->symbols[0] ? job->symbols : "-", (unsigned long long)ms,
                 v->action == SCAN_REJECT ? " reason=" : "",
                 v->action == SCAN_REJECT ? reason : "");
        return;
    }
    log_quote(why, sizeof(why), job->failure, strlen(job->failure));
    log_quote(err, sizeof(err), job->errbuf[0] ? job->errbuf : "-",
              strlen(job->errbuf[0] ? job->errbuf : "-"));
    log_write(job->failed ? LOG_WARN : LOG_INFO,
              "msg=%s event=scan_skipped tenant=%s score=- threshold=%.2f action=%s "
              "why=%s err=%s ms=%llu",
              msg, tenant, v->threshold, action_name(v->action), why, err, (unsigned long long)ms);
}

/* ---- jobs ---- */

static void job_unlink(scan_job_t *job)
{
    scanner_t *sc = job->sc;
    if (job->prev)
        job->prev->next = job->next;
    else if (sc->jobs == job)
        sc->jobs = job->next;
    if (job->next)
        job->next->prev = job->prev;
    job->prev = job->next = NULL;
}

/* Take the job out of curl and the loop and free it; done is not called. */
static void job_free(scan_job_t *job)
{
    scanner_t *sc = job->sc;
    job_unlink(job);
    loop_timer_stop(sc->loop, &job->later);
    if (job->easy) {
        curl_loop_remove(sc->cl, job->easy);
        curl_easy_cleanup(job->easy);
        job->easy = NULL;
    }
    curl_slist_free_all(job->req_headers);
    free(job->body);
    buf_free(&job->reply);
    free(job);
}

/* The verdict is ready: log it, tell the owner, forget the job. */
static void job_complete(scan_job_t *job)
{
    job_log(job);
    scan_done_fn done = job->done;
    void *arg = job->arg;
    scan_verdict_t v = job->verdict;
    /* the header text must outlive the job only until done returns */
    char headers[SCAN_HEADERS_MAX];
    memcpy(headers, job->headers, sizeof(headers));
    v.headers = headers;
    job_free(job);
    done(&v, arg);
}

static void job_later(loop_t *loop, void *arg)
{
    (void)loop;
    job_complete(arg);
}

static size_t on_reply_bytes(char *p, size_t size, size_t nmemb, void *arg)
{
    scan_job_t *job = arg;
    size_t n = size * nmemb;
    if (buf_append(&job->reply, p, n) < 0) {
        job->reply_too_big = 1;
        return 0; /* curl aborts the transfer */
    }
    return n;
}

/* The transfer ended (the easy handle is out of curl, still the job's). */
static void on_transfer_done(CURL *easy, CURLcode rc, void *arg)
{
    (void)easy;
    scan_job_t *job = arg;
    verdict_from_transfer(job, rc);
    job_complete(job); /* may start or cancel other jobs, or destroy the scanner */
}

/* ---- the scanner ---- */

scanner_t *scanner_new(loop_t *loop, const scan_conf_t *conf)
{
    if (conf == NULL || conf->url == NULL || conf->url[0] == '\0')
        return NULL;
    char err[128];
    curl_loop_t *cl = curl_loop_new(loop, err, sizeof(err));
    if (cl == NULL) {
        char qerr[sizeof(err) * 4 + 3];
        log_error("event=scan_init_failed err=%s", log_quote(qerr, sizeof(qerr), err, strlen(err)));
        return NULL;
    }
    scanner_t *sc = xcalloc(1, sizeof(*sc));
    sc->loop = loop;
    sc->cl = cl;
    sc->conf = *conf;
    sc->conf.url = xstrdup(conf->url);
    sc->conf.tenants = conf->ntenants ? xcalloc(conf->ntenants, sizeof(*sc->conf.tenants)) : NULL;
    for (size_t i = 0; i < conf->ntenants; i++) {
        sc->conf.tenants[i].tenant = xstrdup(conf->tenants[i].tenant);
        sc->conf.tenants[i].reject_score = conf->tenants[i].reject_score;
    }
    char url[SCAN_URL_MAX * 4 + 3];
    log_info("event=scan_ready url=%s reject_score=%.2f tenants=%zu timeout_ms=%llu "
             "max_size=%llu on_failure=%s",
             log_quote(url, sizeof(url), sc->conf.url, strlen(sc->conf.url)), sc->conf.reject_score,
             sc->conf.ntenants, (unsigned long long)sc->conf.timeout_ms,
             (unsigned long long)sc->conf.max_size,
             sc->conf.tempfail_on_failure ? "tempfail" : "accept");
    return sc;
}

/*
 * Jobs still running are dropped without their done. Safe from inside a
 * done callback: the job is gone by then, and curl_loop frees itself once
 * that callback returns.
 */
void scanner_destroy(scanner_t **p)
{
    scanner_t *sc = *p;
    if (sc == NULL)
        return;
    *p = NULL;
    while (sc->jobs)
        job_free(sc->jobs);
    curl_loop_destroy(&sc->cl); /* closes kept connections: their watches go */
    scan_conf_release(&sc->conf);
    free(sc);
}

/* Set up the transfer; -1 leaves the job to complete as a failure. */
static int job_transfer(scan_job_t *job, const scan_meta_t *meta)
{
    scanner_t *sc = job->sc;
    CURL *e = curl_easy_init();
    if (e == NULL)
        return -1;
    job->easy = e;
    buf_init(&job->reply, SCAN_REPLY_MAX);
    add_header(job, "Queue-Id", meta->message_id);
    add_header(job, "IP", meta->client_ip);
    add_header(job, "Helo", meta->helo);
    add_header(job, "From", meta->mail_from);
    for (size_t i = 0; i < meta->nrcpts; i++)
        add_header(job, "Rcpt", meta->rcpts ? meta->rcpts[i] : NULL);
    add_header(job, "User", meta->username);
    add_header(job, "Pass", "all");
    add_header(job, "Content-Type", "message/rfc822");
    job->req_headers = curl_slist_append(job->req_headers, "Expect:");
    if (job->req_headers == NULL)
        return -1;

    int bad = 0;
    bad |= curl_easy_setopt(e, CURLOPT_URL, sc->conf.url) != CURLE_OK;
#if LIBCURL_VERSION_NUM >= 0x075500
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
#else
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS)) !=
           CURLE_OK;
#endif
    bad |= curl_easy_setopt(e, CURLOPT_PROXY, "") != CURLE_OK; /* never a proxy from the env */
    bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_USERAGENT, "Sendarix/" SENDARIX_VERSION) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, job->req_headers) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_POST, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)job->len) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, job->body ? job->body : "") != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)sc->conf.timeout_ms) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)sc->conf.timeout_ms) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)SCAN_REPLY_MAX) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_reply_bytes) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, job) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, job->errbuf) != CURLE_OK;
    if (bad)
        return -1;
    return curl_loop_add(sc->cl, e, on_transfer_done, job);
}

scan_job_t *scan_start(scanner_t *sc, const char *data, size_t len, const scan_meta_t *meta,
                       scan_done_fn done, void *arg)
{
    static const scan_meta_t no_meta;
    assert(done != NULL);
    if (sc == NULL)
        return NULL;
    if (meta == NULL)
        meta = &no_meta;
    scan_job_t *job = xcalloc(1, sizeof(*job));
    job->sc = sc;
    job->done = done;
    job->arg = arg;
    job->started_ms = clock_mono_ms();
    loop_timer_init(&job->later, job_later, job);
    if (meta->message_id)
        sx_strlcpy(job->msgid, meta->message_id, sizeof(job->msgid));
    if (meta->tenant)
        sx_strlcpy(job->tenant, meta->tenant, sizeof(job->tenant));
    job->threshold = threshold_for(sc, meta->tenant);
    job->verdict.headers = job->headers;
    job->next = sc->jobs;
    if (sc->jobs)
        sc->jobs->prev = job;
    sc->jobs = job;

    if (len > sc->conf.max_size) {
        char why[64];
        snprintf(why, sizeof(why), "message larger than %llu bytes",
                 (unsigned long long)sc->conf.max_size);
        verdict_unscanned(job, why, 0);
        loop_timer_start(sc->loop, &job->later, 0);
        return job;
    }
    job->len = len;
    job->body = len ? xmemdup(data, len) : NULL;
    if (job_transfer(job, meta) < 0) {
        if (job->easy) {
            curl_easy_cleanup(job->easy); /* never added, or the add failed */
            job->easy = NULL;
        }
        snprintf(job->errbuf, sizeof(job->errbuf), "transfer setup failed");
        verdict_unscanned(job, "scanner error", 1);
        loop_timer_start(sc->loop, &job->later, 0);
    }
    return job;
}

void scan_cancel(scan_job_t *job)
{
    if (job == NULL)
        return;
    job_free(job);
}
