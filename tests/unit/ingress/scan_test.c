/*
 * scan_test: the content scanner client. The `scan` config group through
 * conf (every refusal names the setting and its line); verdicts against a
 * small HTTP server on 127.0.0.1 served from the same loop, which answers
 * each request by its Queue-Id from a table of canned replies: spam, ham, the
 * scanner's own reply text, injection attempts, HTTP 500, garbage JSON, an
 * oversized reply, a scanner that never answers, and a refused connection;
 * on_failure accept or tempfail, per-tenant thresholds, a message over
 * max_size, cancels before completion, several jobs at once, and that done
 * never runs inside scan_start.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/conf.h"
#include "core/loop.h"
#include "ingress_scan.h"
#include "net/conn.h"
#include "net/sock.h"

/* ---- the `scan` group through conf ---- */

typedef struct test_conf {
    scan_conf_t scan;
} test_conf_t;

static const conf_field_t test_table[] = {
    {"scan", CONF_CUSTOM, offsetof(test_conf_t, scan), NULL, 0, 0, 0, scan_conf_parse,
     scan_conf_release, "content scanner"},
    {NULL},
};

static int parse_text(const char *group, test_conf_t *out, char *err, size_t errlen)
{
    char text[4096];
    snprintf(text, sizeof(text), "ingress = {\n%s\n};\n", group);
    conf_file_t *cf = conf_open_string("test.conf", text, err, errlen);
    assert_non_null(cf);
    memset(out, 0, sizeof(*out));
    int rc = conf_section(cf, "ingress", test_table, out, err, errlen);
    conf_close(&cf);
    return rc;
}

static void test_conf_absent_and_empty_url(void **state)
{
    (void)state;
    test_conf_t c;
    char err[512];
    assert_int_equal(parse_text("", &c, err, sizeof(err)), 0);
    assert_null(c.scan.url);
    assert_true(c.scan.reject_score == 15.0);
    assert_int_equal(c.scan.timeout_ms, 10000);
    assert_int_equal(c.scan.max_size, 20u << 20);
    assert_int_equal(c.scan.tempfail_on_failure, 0);
    assert_int_equal(c.scan.ntenants, 0);
    loop_t *loop = loop_new();
    assert_null(scanner_new(loop, &c.scan)); /* scanning off */
    conf_release(test_table, &c);

    assert_int_equal(parse_text("scan = { url = \"\"; reject_score = 5; };", &c, err, sizeof(err)),
                     0);
    assert_null(c.scan.url);
    assert_null(scanner_new(loop, &c.scan));
    conf_release(test_table, &c);
    conf_release(test_table, &c); /* twice is harmless */
    scanner_t *none = NULL;
    scanner_destroy(&none);
    scanner_destroy(&none);
    loop_destroy(&loop);
}

static void test_conf_full(void **state)
{
    (void)state;
    test_conf_t c;
    char err[512];
    int rc = parse_text("scan = {\n"
                        "  url = \"https://scanner.example:11333/checkv2\";\n"
                        "  reject_score = 12.5;\n"
                        "  timeout = \"250ms\";\n"
                        "  max_size = \"5M\";\n"
                        "  on_failure = \"tempfail\";\n"
                        "  tenants = ( { tenant = \"demo\"; reject_score = 8; },\n"
                        "              { tenant = \"bulk\"; reject_score = 20.25; } );\n"
                        "};",
                        &c, err, sizeof(err));
    assert_int_equal(rc, 0);
    assert_string_equal(c.scan.url, "https://scanner.example:11333/checkv2");
    assert_true(c.scan.reject_score == 12.5);
    assert_int_equal(c.scan.timeout_ms, 250);
    assert_int_equal(c.scan.max_size, 5u << 20);
    assert_int_equal(c.scan.tempfail_on_failure, 1);
    assert_int_equal(c.scan.ntenants, 2);
    assert_string_equal(c.scan.tenants[0].tenant, "demo");
    assert_true(c.scan.tenants[0].reject_score == 8.0);
    assert_string_equal(c.scan.tenants[1].tenant, "bulk");
    assert_true(c.scan.tenants[1].reject_score == 20.25);
    conf_release(test_table, &c);

    /* plain integers: seconds and bytes; the bounds themselves are allowed */
    rc = parse_text("scan = { url = \"http://127.0.0.1/\"; timeout = 300; max_size = 1024;"
                    " on_failure = \"accept\"; tenants = (); };",
                    &c, err, sizeof(err));
    assert_int_equal(rc, 0);
    assert_int_equal(c.scan.timeout_ms, 300000);
    assert_int_equal(c.scan.max_size, 1024);
    assert_int_equal(c.scan.ntenants, 0);
    conf_release(test_table, &c);
    rc = parse_text("scan = { url = \"HTTP://[::1]:8080/checkv2\"; timeout = \"100ms\";"
                    " max_size = \"1G\"; };",
                    &c, err, sizeof(err));
    assert_int_equal(rc, 0);
    conf_release(test_table, &c);
}

typedef struct conf_case {
    const char *group;
    const char *want; /* in the error text */
} conf_case_t;

static void test_conf_refusals(void **state)
{
    (void)state;
    static const conf_case_t cases[] = {
        {"scan = \"http://127.0.0.1/\";", "expected a group"},
        {"scan = { url = \"http://127.0.0.1/\"; colour = \"red\"; };",
         "\"colour\" is an unknown setting"},
        {"scan = { url = 5; };", "url: expected a string"},
        {"scan = { url = \"ftp://127.0.0.1/\"; };", "is not an http:// or https:// URL"},
        {"scan = { url = \"127.0.0.1:11333\"; };", "is not an http:// or https:// URL"},
        {"scan = { url = \"http://\"; };", "is not an http:// or https:// URL"},
        {"scan = { url = \"http:///checkv2\"; };", "is not an http:// or https:// URL"},
        {"scan = { url = \"http://127.0.0.1/a b\"; };", "is not an http:// or https:// URL"},
        {"scan = { url = \"http://x\"; reject_score = \"15\"; };",
         "reject_score: expected a number"},
        {"scan = { url = \"http://x\"; reject_score = 0; };", "must be above 0"},
        {"scan = { url = \"http://x\"; reject_score = -2.5; };", "must be above 0"},
        {"scan = { url = \"http://x\"; reject_score = 1e9; };", "must be above 0 and at most"},
        {"scan = { url = \"http://x\"; reject_score = true; };", "expected a number"},
        {"scan = { url = \"http://x\"; timeout = \"99ms\"; };", "timeout: 99ms is out of range"},
        {"scan = { url = \"http://x\"; timeout = \"6m\"; };", "timeout: 360000ms is out of range"},
        {"scan = { url = \"http://x\"; timeout = 0; };", "out of range"},
        {"scan = { url = \"http://x\"; timeout = -1; };", "must not be negative"},
        {"scan = { url = \"http://x\"; timeout = \"soon\"; };", "is not a duration"},
        {"scan = { url = \"http://x\"; timeout = 1.5; };", "expected a duration"},
        {"scan = { url = \"http://x\"; max_size = \"512\"; };", "max_size: 512 bytes is out"},
        {"scan = { url = \"http://x\"; max_size = \"2G\"; };", "is out of range"},
        {"scan = { url = \"http://x\"; max_size = \"lots\"; };", "is not a size"},
        {"scan = { url = \"http://x\"; max_size = [1]; };", "expected a size"},
        {"scan = { url = \"http://x\"; on_failure = \"shrug\"; };",
         "on_failure: expected \"accept\" or \"tempfail\""},
        {"scan = { url = \"http://x\"; on_failure = 1; };", "on_failure: expected"},
        {"scan = { url = \"http://x\"; tenants = { tenant = \"a\"; reject_score = 1; }; };",
         "tenants: expected a list"},
        {"scan = { url = \"http://x\"; tenants = [ \"a\" ]; };", "tenants: expected a list"},
        {"scan = { url = \"http://x\"; tenants = ( \"a\" ); };", "tenants[1]: expected a group"},
        {"scan = { url = \"http://x\"; tenants = ( { tenant = \"a\"; reject_score = 1; "
         "action = \"x\"; } ); };",
         "tenants[1]: \"action\" is an unknown setting"},
        {"scan = { url = \"http://x\"; tenants = ( { tenant = \"a\"; } ); };",
         "tenants[1]: needs tenant and reject_score"},
        {"scan = { url = \"http://x\"; tenants = ( { reject_score = 3; } ); };",
         "needs tenant and reject_score"},
        {"scan = { url = \"http://x\"; tenants = ( { tenant = \"\"; reject_score = 3; } ); };",
         "tenant: expected a name"},
        {"scan = { url = \"http://x\"; tenants = ( { tenant = 7; reject_score = 3; } ); };",
         "tenant: expected a name"},
        {"scan = { url = \"http://x\"; tenants = ( { tenant = "
         "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"; "
         "reject_score = 3; } ); };",
         "tenant: expected a name"},
        {"scan = { url = \"http://x\"; tenants = ( { tenant = \"a\"; reject_score = 0; } ); };",
         "tenants[1].reject_score: 0 must be above 0"},
        {"scan = { url = \"http://x\"; tenants = ( { tenant = \"a\"; reject_score = 3; },\n"
         " { tenant = \"a\"; reject_score = 4; } ); };",
         "tenants[2]: tenant \"a\" is listed twice"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        test_conf_t c;
        char err[512] = "";
        int rc = parse_text(cases[i].group, &c, err, sizeof(err));
        if (rc != -1 || strstr(err, cases[i].want) == NULL || strstr(err, "ingress.scan") == NULL)
            fail_msg("case %zu (%s): rc=%d err=\"%s\", wanted \"%s\"", i, cases[i].group, rc, err,
                     cases[i].want);
        /* a refused group leaves nothing to free, and releasing again is harmless */
        assert_null(c.scan.url);
        assert_null(c.scan.tenants);
        conf_release(test_table, &c);
    }
}

static void test_conf_error_names_line(void **state)
{
    (void)state;
    test_conf_t c;
    char err[512];
    int rc = parse_text("scan = {\n"
                        "  url = \"http://127.0.0.1/\";\n"
                        "  on_failure = \"later\";\n"
                        "};",
                        &c, err, sizeof(err));
    assert_int_equal(rc, -1);
    /* line 4 of the file: "ingress = {" comes first */
    assert_non_null(strstr(err, "(line 4)"));
    assert_non_null(strstr(err, "test.conf:"));
    conf_release(test_table, &c);
}

/* ---- a scanner on 127.0.0.1, in the same loop ---- */

typedef enum { R_REPLY = 0, R_HANG, R_BIG, R_BIG_LENGTH } reply_mode_t;

typedef struct canned {
    const char *queue_id;
    reply_mode_t mode;
    int status;
    const char *body;
} canned_t;

#define SRV_CONNS    16
#define SRV_REQUESTS 16

typedef struct server {
    int lfd;
    unsigned port;
    conn_t *conns[SRV_CONNS];
    const canned_t *table;
    size_t ntable;
    char *requests[SRV_REQUESTS]; /* whole requests as received */
    size_t nrequests;
} server_t;

typedef struct result {
    int done;
    scan_verdict_t v;
    char headers[1024];
    uint64_t at_ms;
} result_t;

static loop_t *loop;
static server_t srv;
static loop_timer_t guard;
static int guard_fired;
static int in_start; /* scan_start is running */
static int done_inside_start;
static int want_done, ndone;
static result_t results[8];

static const canned_t *canned_for(const char *req)
{
    const char *q = strcasestr(req, "\r\nQueue-Id: ");
    if (q) {
        q += 12;
        size_t n = strcspn(q, "\r\n");
        for (size_t i = 0; i < srv.ntable; i++)
            if (strlen(srv.table[i].queue_id) == n && strncmp(srv.table[i].queue_id, q, n) == 0)
                return &srv.table[i];
    }
    return srv.ntable ? &srv.table[0] : NULL;
}

static void srv_reply(conn_t *c, const canned_t *r)
{
    if (r == NULL || r->mode == R_HANG)
        return; /* say nothing, keep the connection */
    if (r->mode == R_BIG || r->mode == R_BIG_LENGTH) {
        size_t big = (1u << 20) + 4096;
        if (r->mode == R_BIG_LENGTH)
            conn_printf(c, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                        big);
        else
            conn_printf(c, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        char *p = xmalloc(big);
        memset(p, ' ', big);
        p[0] = '{';
        conn_write(c, p, big);
        free(p);
        conn_close_after_flush(c);
        return;
    }
    conn_printf(c,
                "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                "Connection: close\r\n\r\n%s",
                r->status, strlen(r->body), r->body);
    conn_close_after_flush(c);
}

static void srv_on_data(conn_t *c, void *arg)
{
    (void)arg;
    buf_t *in = conn_in(c);
    const char *head = buf_head(in);
    size_t used = buf_used(in);
    const char *end = memmem(head, used, "\r\n\r\n", 4);
    if (end == NULL)
        return;
    size_t hlen = (size_t)(end - head) + 4;
    size_t clen = 0;
    char *h = xstrndup(head, hlen);
    const char *cl = strcasestr(h, "\r\nContent-Length: ");
    if (cl)
        clen = strtoul(cl + 18, NULL, 10);
    free(h);
    if (used < hlen + clen)
        return;
    char *req = xstrndup(head, hlen + clen);
    buf_consume(in, hlen + clen);
    if (srv.nrequests < SRV_REQUESTS)
        srv.requests[srv.nrequests++] = req;
    else
        free(req);
    srv_reply(c, canned_for(srv.requests[srv.nrequests - 1]));
}

static void srv_forget(conn_t *c)
{
    for (size_t i = 0; i < SRV_CONNS; i++)
        if (srv.conns[i] == c)
            srv.conns[i] = NULL;
}

static void srv_on_close(conn_t *c, int err, void *arg)
{
    (void)err;
    (void)arg;
    srv_forget(c);
    conn_destroy(&c);
}

static const conn_handlers_t srv_handlers = {.on_data = srv_on_data, .on_close = srv_on_close};

static void srv_accept(loop_t *l, int fd, unsigned events, void *arg)
{
    (void)events;
    (void)arg;
    sock_addr_t peer;
    int cfd;
    while ((cfd = sock_accept(fd, &peer)) >= 0) {
        conn_t *c = conn_new(l, cfd, 0, 4u << 20, &srv_handlers, NULL);
        for (size_t i = 0; i < SRV_CONNS; i++)
            if (srv.conns[i] == NULL) {
                srv.conns[i] = c;
                c = NULL;
                break;
            }
        if (c)
            conn_destroy(&c);
    }
}

static void on_guard(loop_t *l, void *arg)
{
    (void)arg;
    guard_fired = 1;
    loop_stop(l);
}

static int setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    loop = loop_new();
    memset(&srv, 0, sizeof(srv));
    char err[256];
    srv.lfd = sock_listen("127.0.0.1", 0, 64, err, sizeof(err));
    assert_true(srv.lfd >= 0);
    sock_addr_t a;
    assert_int_equal(sock_local(srv.lfd, &a), 0);
    srv.port = sock_addr_port(&a);
    assert_int_equal(loop_fd_add(loop, srv.lfd, LOOP_READ, srv_accept, NULL), 0);
    loop_timer_init(&guard, on_guard, NULL);
    guard_fired = 0;
    in_start = done_inside_start = 0;
    want_done = ndone = 0;
    memset(results, 0, sizeof(results));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < SRV_CONNS; i++)
        if (srv.conns[i])
            conn_destroy(&srv.conns[i]);
    for (size_t i = 0; i < srv.nrequests; i++)
        free(srv.requests[i]);
    loop_fd_remove(loop, srv.lfd);
    close(srv.lfd);
    loop_timer_stop(loop, &guard);
    loop_destroy(&loop);
    return 0;
}

static void on_done(const scan_verdict_t *v, void *arg)
{
    result_t *r = arg;
    if (in_start)
        done_inside_start = 1;
    r->done++;
    r->v = *v;
    snprintf(r->headers, sizeof(r->headers), "%s", v->headers ? v->headers : "(null)");
    r->v.headers = r->headers;
    r->at_ms = clock_mono_ms();
    if (++ndone >= want_done)
        loop_stop(loop);
}

/* Run the loop until want jobs are done, or guard_ms pass. */
static void run_for(int want, uint64_t guard_ms)
{
    want_done = want;
    loop_timer_start(loop, &guard, guard_ms);
    if (ndone < want_done)
        loop_run(loop);
    loop_timer_stop(loop, &guard);
}

static void make_conf(scan_conf_t *c, const char *url_path)
{
    static char url[128];
    memset(c, 0, sizeof(*c));
    snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", srv.port, url_path);
    c->url = url;
    c->reject_score = 15.0;
    c->timeout_ms = 2000;
    c->max_size = 1u << 20;
}

static const char message[] = "From: a@example.test\r\nTo: b@example.org\r\nSubject: x\r\n\r\n"
                              "hello\r\n";

static scan_job_t *start(scanner_t *sc, const char *qid, const char *tenant, result_t *r)
{
    static const char *const rcpts[] = {"b@example.org", "c@example.org"};
    scan_meta_t m = {.message_id = qid,
                     .tenant = tenant,
                     .client_ip = "127.0.0.1",
                     .helo = "client.example",
                     .mail_from = "a@example.test",
                     .rcpts = rcpts,
                     .nrcpts = 2,
                     .username = "demo"};
    in_start = 1;
    scan_job_t *job = scan_start(sc, message, sizeof(message) - 1, &m, on_done, r);
    in_start = 0;
    assert_non_null(job);
    return job;
}

/* One job against one canned reply; the verdict lands in results[0]. */
static void scan_one(const canned_t *c, int tempfail, const char *tenant)
{
    srv.table = c;
    srv.ntable = 1;
    scan_conf_t conf;
    make_conf(&conf, "/checkv2");
    conf.tempfail_on_failure = tempfail;
    scan_tenant_t t[] = {{"demo", 8.0}};
    conf.tenants = t;
    conf.ntenants = 1;
    scanner_t *sc = scanner_new(loop, &conf);
    assert_non_null(sc);
    start(sc, c->queue_id, tenant, &results[0]);
    assert_int_equal(results[0].done, 0);
    run_for(1, 5000);
    assert_false(guard_fired);
    assert_int_equal(results[0].done, 1);
    assert_false(done_inside_start);
    scanner_destroy(&sc);
    assert_null(sc);
}

static void test_spam_rejected(void **state)
{
    (void)state;
    static const canned_t c = {"Q1", R_REPLY, 200,
                               "{\"score\": 20.5, \"required_score\": 15.0, \"action\": "
                               "\"reject\", \"symbols\": {\"BAYES_SPAM\": {\"score\": 5.1}}}"};
    scan_one(&c, 0, NULL);
    const scan_verdict_t *v = &results[0].v;
    assert_int_equal(v->action, SCAN_REJECT);
    assert_int_equal(v->scanned, 1);
    assert_true(v->score == 20.5);
    assert_true(v->threshold == 15.0);
    assert_string_equal(v->reason, "Message rejected as spam (score 20.50 >= 15.00)");
    assert_string_equal(v->headers, "");
}

static void test_ham_accepted_with_headers(void **state)
{
    (void)state;
    static const canned_t c = {"Q1", R_REPLY, 200,
                               "{\"is_skipped\": false, \"score\": 2.5, \"required_score\": 15, "
                               "\"action\": \"no action\", \"symbols\": {}, \"messages\": {}}"};
    scan_one(&c, 0, NULL);
    const scan_verdict_t *v = &results[0].v;
    assert_int_equal(v->action, SCAN_ACCEPT);
    assert_int_equal(v->scanned, 1);
    assert_string_equal(v->headers, "X-Spam-Score: 2.50\r\n"
                                    "X-Spam-Status: No, score=2.50 required=15.00\r\n"
                                    "X-Spam-Action: no action\r\n");
}

static void test_negative_score_and_integer(void **state)
{
    (void)state;
    static const canned_t c = {"Q1", R_REPLY, 200, "{\"score\": -3, \"action\": \"no action\"}"};
    scan_one(&c, 0, NULL);
    assert_int_equal(results[0].v.action, SCAN_ACCEPT);
    assert_true(results[0].v.score == -3.0);
    assert_non_null(strstr(results[0].v.headers, "X-Spam-Score: -3.00\r\n"));
}

static void test_score_at_threshold_rejects_with_scanner_message(void **state)
{
    (void)state;
    /* what a GTUBE message gets: the reject score exactly, and a message */
    static const canned_t c = {"Q1", R_REPLY, 200,
                               "{\"is_skipped\": true, \"score\": 15.0, \"required_score\": 15.0,"
                               " \"action\": \"reject\", \"symbols\": {\"GTUBE\": {}},"
                               " \"messages\": {\"smtp_message\": \"Gtube pattern\"}}"};
    scan_one(&c, 0, NULL);
    assert_int_equal(results[0].v.action, SCAN_REJECT);
    assert_string_equal(results[0].v.reason, "Gtube pattern");
}

static void test_scanner_text_sanitised(void **state)
{
    (void)state;
    /* a reply trying to smuggle lines into the SMTP reply and the headers */
    static const canned_t spam = {"Q1", R_REPLY, 200,
                                  "{\"score\": 99, \"messages\": {\"smtp_message\": "
                                  "\"  Go away\\r\\n250 2.0.0 OK\\u0001\\u00e9\\ttab  \"}}"};
    scan_one(&spam, 0, NULL);
    assert_int_equal(results[0].v.action, SCAN_REJECT);
    assert_string_equal(results[0].v.reason, "Go away 250 2.0.0 OK??? tab");

    memset(results, 0, sizeof(results));
    ndone = 0;
    static const canned_t ham = {
        "Q1", R_REPLY, 200,
        "{\"score\": 1, \"action\": \"no action\\r\\nX-Spam-Status: Yes\\nBcc: x@y\"}"};
    scan_one(&ham, 0, NULL);
    const char *h = results[0].v.headers;
    int lines = 0;
    for (const char *p = h; (p = strstr(p, "\r\n")) != NULL; p += 2)
        lines++;
    assert_int_equal(lines, 3);
    assert_null(strstr(h, "\nBcc"));
    assert_null(strstr(h, "\r\nX-Spam-Status: Yes"));
    /* the action is bounded too */
    assert_true(strlen(strstr(h, "X-Spam-Action: ")) <= strlen("X-Spam-Action: ") + 32 + 2);

    memset(results, 0, sizeof(results));
    ndone = 0;
    static const canned_t empty_msg = {
        "Q1", R_REPLY, 200, "{\"score\": 40, \"messages\": {\"smtp_message\": \" \\r\\n \"}}"};
    scan_one(&empty_msg, 0, NULL);
    assert_string_equal(results[0].v.reason, "Message rejected as spam (score 40.00 >= 15.00)");

    memset(results, 0, sizeof(results));
    ndone = 0;
    static const canned_t long_msg = {
        "Q1", R_REPLY, 200,
        "{\"score\": 40, \"messages\": {\"smtp_message\": \""
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}}"};
    scan_one(&long_msg, 0, NULL);
    assert_int_equal(strlen(results[0].v.reason), sizeof(results[0].v.reason) - 1);
}

typedef struct failure_case {
    canned_t reply;
    const char *header;
} failure_case_t;

static void test_failures_accept_and_mark(void **state)
{
    (void)state;
    static const failure_case_t cases[] = {
        {{"Q1", R_REPLY, 500, "{\"error\": \"oops\"}"},
         "X-Sendarix-Scan: unscanned (scanner HTTP status 500)\r\n"},
        {{"Q1", R_REPLY, 200, "this is not json"},
         "X-Sendarix-Scan: unscanned (scanner reply not understood)\r\n"},
        {{"Q1", R_REPLY, 200, ""}, "X-Sendarix-Scan: unscanned (scanner reply not understood)\r\n"},
        {{"Q1", R_REPLY, 200, "[1, 2, 3]"},
         "X-Sendarix-Scan: unscanned (scanner reply not understood)\r\n"},
        {{"Q1", R_REPLY, 200, "{\"score\": \"20\"}"},
         "X-Sendarix-Scan: unscanned (scanner reply not understood)\r\n"},
        {{"Q1", R_REPLY, 200, "{\"action\": \"reject\"}"},
         "X-Sendarix-Scan: unscanned (scanner reply not understood)\r\n"},
        {{"Q1", R_REPLY, 200, "{\"score\": 1e300}"},
         "X-Sendarix-Scan: unscanned (scanner reply not understood)\r\n"},
        {{"Q1", R_REPLY, 200, "{\"score\": 1, \"score\": 99}"},
         "X-Sendarix-Scan: unscanned (scanner reply not understood)\r\n"},
        {{"Q1", R_REPLY, 200, "{\"score\": 1"},
         "X-Sendarix-Scan: unscanned (scanner reply not understood)\r\n"},
        {{"Q1", R_BIG, 200, NULL}, "X-Sendarix-Scan: unscanned (scanner reply too large)\r\n"},
        {{"Q1", R_BIG_LENGTH, 200, NULL},
         "X-Sendarix-Scan: unscanned (scanner reply too large)\r\n"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memset(results, 0, sizeof(results));
        ndone = 0;
        scan_one(&cases[i].reply, 0, NULL);
        const scan_verdict_t *v = &results[0].v;
        if (v->action != SCAN_ACCEPT || v->scanned != 0 || strcmp(v->headers, cases[i].header) != 0)
            fail_msg("case %zu: action=%d scanned=%d headers=\"%s\"", i, (int)v->action, v->scanned,
                     v->headers);
    }
}

static void test_failure_tempfail(void **state)
{
    (void)state;
    static const canned_t c = {"Q1", R_REPLY, 500, "{}"};
    scan_one(&c, 1, NULL);
    const scan_verdict_t *v = &results[0].v;
    assert_int_equal(v->action, SCAN_TEMPFAIL);
    assert_int_equal(v->scanned, 0);
    assert_string_equal(v->reason, "Content scanner unavailable, try again later");
    assert_string_equal(v->headers, "");
}

static void test_slow_scanner_times_out(void **state)
{
    (void)state;
    static const canned_t c = {"Q1", R_HANG, 0, NULL};
    srv.table = &c;
    srv.ntable = 1;
    for (int tempfail = 0; tempfail <= 1; tempfail++) {
        memset(results, 0, sizeof(results));
        ndone = 0;
        scan_conf_t conf;
        make_conf(&conf, "/checkv2");
        conf.timeout_ms = 300;
        conf.tempfail_on_failure = tempfail;
        scanner_t *sc = scanner_new(loop, &conf);
        uint64_t t0 = clock_mono_ms();
        start(sc, "Q1", NULL, &results[0]);
        run_for(1, 5000);
        assert_false(guard_fired);
        uint64_t took = results[0].at_ms - t0;
        assert_true(took >= 250 && took < 2000);
        if (tempfail) {
            assert_int_equal(results[0].v.action, SCAN_TEMPFAIL);
        } else {
            assert_int_equal(results[0].v.action, SCAN_ACCEPT);
            assert_string_equal(results[0].v.headers,
                                "X-Sendarix-Scan: unscanned (scanner timeout)\r\n");
        }
        scanner_destroy(&sc);
    }
}

static void test_connection_refused(void **state)
{
    (void)state;
    /* a port that was free a moment ago: nothing listens there */
    char err[256];
    int fd = sock_listen("127.0.0.1", 0, 1, err, sizeof(err));
    sock_addr_t a;
    sock_local(fd, &a);
    unsigned port = sock_addr_port(&a);
    close(fd);
    for (int tempfail = 0; tempfail <= 1; tempfail++) {
        memset(results, 0, sizeof(results));
        ndone = 0;
        char url[64];
        snprintf(url, sizeof(url), "http://127.0.0.1:%u/checkv2", port);
        scan_conf_t conf;
        make_conf(&conf, "");
        conf.url = url;
        conf.tempfail_on_failure = tempfail;
        scanner_t *sc = scanner_new(loop, &conf);
        start(sc, "Q1", NULL, &results[0]);
        run_for(1, 5000);
        assert_false(guard_fired);
        assert_false(done_inside_start);
        if (tempfail) {
            assert_int_equal(results[0].v.action, SCAN_TEMPFAIL);
            assert_string_equal(results[0].v.reason,
                                "Content scanner unavailable, try again later");
        } else {
            assert_int_equal(results[0].v.action, SCAN_ACCEPT);
            assert_string_equal(results[0].v.headers,
                                "X-Sendarix-Scan: unscanned (scanner unreachable)\r\n");
        }
        scanner_destroy(&sc);
    }
}

static void test_tenant_threshold(void **state)
{
    (void)state;
    static const canned_t c = {"Q1", R_REPLY, 200, "{\"score\": 10, \"action\": \"add header\"}"};
    scan_one(&c, 0, "demo"); /* demo's reject_score is 8 */
    assert_int_equal(results[0].v.action, SCAN_REJECT);
    assert_true(results[0].v.threshold == 8.0);
    assert_string_equal(results[0].v.reason, "Message rejected as spam (score 10.00 >= 8.00)");

    const char *others[] = {"other", "", NULL, "DEMO"};
    for (size_t i = 0; i < 4; i++) {
        memset(results, 0, sizeof(results));
        ndone = 0;
        scan_one(&c, 0, others[i]);
        assert_int_equal(results[0].v.action, SCAN_ACCEPT);
        assert_true(results[0].v.threshold == 15.0);
        assert_string_equal(results[0].v.headers,
                            "X-Spam-Score: 10.00\r\n"
                            "X-Spam-Status: No, score=10.00 required=15.00\r\n"
                            "X-Spam-Action: add header\r\n");
    }
}

static void test_request_carries_message_and_envelope(void **state)
{
    (void)state;
    static const canned_t c = {"M1", R_REPLY, 200, "{\"score\": 0}"};
    srv.table = &c;
    srv.ntable = 1;
    scan_conf_t conf;
    make_conf(&conf, "/checkv2");
    scanner_t *sc = scanner_new(loop, &conf);
    static const char *const rcpts[] = {"one@example.org", "two@example.org\r\nX-Injected: 1"};
    scan_meta_t m = {.message_id = "M1",
                     .tenant = "demo",
                     .client_ip = "192.0.2.7",
                     .helo = "evil\r\nX-Injected: 1",
                     .mail_from = "a@example.test",
                     .rcpts = rcpts,
                     .nrcpts = 2,
                     .username = ""};
    in_start = 1;
    scan_start(sc, message, sizeof(message) - 1, &m, on_done, &results[0]);
    in_start = 0;
    run_for(1, 5000);
    assert_int_equal(results[0].done, 1);
    assert_int_equal(srv.nrequests, 1);
    const char *req = srv.requests[0];
    assert_true(strncmp(req, "POST /checkv2 HTTP/1.1\r\n", 24) == 0);
    assert_non_null(strstr(req, "\r\nQueue-Id: M1\r\n"));
    assert_non_null(strstr(req, "\r\nIP: 192.0.2.7\r\n"));
    assert_non_null(strstr(req, "\r\nHelo: evilX-Injected: 1\r\n"));
    assert_non_null(strstr(req, "\r\nFrom: a@example.test\r\n"));
    assert_non_null(strstr(req, "\r\nRcpt: one@example.org\r\n"));
    assert_non_null(strstr(req, "\r\nRcpt: two@example.orgX-Injected: 1\r\n"));
    assert_null(strstr(req, "\r\nX-Injected"));
    assert_null(strstr(req, "\r\nUser:")); /* empty: not sent */
    assert_non_null(strstr(req, "\r\nPass: all\r\n"));
    char cl[64];
    snprintf(cl, sizeof(cl), "\r\nContent-Length: %zu\r\n", sizeof(message) - 1);
    assert_non_null(strstr(req, cl));
    const char *body = strstr(req, "\r\n\r\n") + 4;
    assert_string_equal(body, message);
    scanner_destroy(&sc);
}

static void test_too_big_not_scanned(void **state)
{
    (void)state;
    static const canned_t c = {"Q1", R_REPLY, 200, "{\"score\": 99}"};
    srv.table = &c;
    srv.ntable = 1;
    scan_conf_t conf;
    make_conf(&conf, "/checkv2");
    conf.max_size = 1024;
    conf.tempfail_on_failure = 1; /* too big is not a failure */
    scanner_t *sc = scanner_new(loop, &conf);
    char *big = xmalloc(2000);
    memset(big, 'a', 2000);
    scan_meta_t m = {.message_id = "Q1"};
    in_start = 1;
    scan_job_t *job = scan_start(sc, big, 2000, &m, on_done, &results[0]);
    in_start = 0;
    free(big); /* the scanner keeps no pointer to it */
    assert_non_null(job);
    assert_int_equal(results[0].done, 0);
    run_for(1, 5000);
    assert_int_equal(results[0].done, 1);
    assert_false(done_inside_start);
    assert_int_equal(results[0].v.action, SCAN_ACCEPT);
    assert_int_equal(results[0].v.scanned, 0);
    assert_string_equal(results[0].v.headers,
                        "X-Sendarix-Scan: unscanned (message larger than 1024 bytes)\r\n");
    assert_int_equal(srv.nrequests, 0);

    /* exactly max_size is scanned */
    memset(results, 0, sizeof(results));
    ndone = 0;
    big = xmalloc(1024);
    memset(big, 'b', 1024);
    scan_start(sc, big, 1024, &m, on_done, &results[0]);
    free(big);
    run_for(1, 5000);
    assert_int_equal(results[0].v.scanned, 1);
    assert_int_equal(results[0].v.action, SCAN_REJECT);
    scanner_destroy(&sc);
}

/* A timer that cancels a job some time after it started. */
static scan_job_t *to_cancel;
static void on_cancel_timer(loop_t *l, void *arg)
{
    (void)l;
    (void)arg;
    scan_cancel(to_cancel);
    to_cancel = NULL;
}

static void test_cancel_before_completion(void **state)
{
    (void)state;
    static const canned_t c[] = {{"slow", R_HANG, 0, NULL},
                                 {"fast", R_REPLY, 200, "{\"score\": 1}"}};
    srv.table = c;
    srv.ntable = 2;
    scan_conf_t conf;
    make_conf(&conf, "/checkv2");
    conf.timeout_ms = 400;
    conf.max_size = 1024;
    scanner_t *sc = scanner_new(loop, &conf);

    /* cancelled at once, before any loop turn */
    scan_job_t *a = start(sc, "fast", NULL, &results[0]);
    scan_cancel(a);
    /* cancelled while the scanner is thinking */
    to_cancel = start(sc, "slow", NULL, &results[1]);
    loop_timer_t t;
    loop_timer_init(&t, on_cancel_timer, NULL);
    loop_timer_start(loop, &t, 100);
    /* a too-big job cancelled before its next-turn delivery */
    char big[2048];
    memset(big, 'x', sizeof(big));
    scan_job_t *b = scan_start(sc, big, sizeof(big), NULL, on_done, &results[2]);
    scan_cancel(b);
    scan_cancel(NULL);
    /* one that goes through, so the loop has something to finish */
    start(sc, "fast", NULL, &results[3]);

    run_for(99, 1000); /* past the timeout: nothing but job 3 may complete */
    assert_true(guard_fired);
    assert_null(to_cancel);
    assert_int_equal(results[0].done, 0);
    assert_int_equal(results[1].done, 0);
    assert_int_equal(results[2].done, 0);
    assert_int_equal(results[3].done, 1);
    loop_timer_stop(loop, &t);
    scanner_destroy(&sc);
}

static void test_several_jobs_at_once(void **state)
{
    (void)state;
    static const canned_t c[] = {
        {"ham", R_REPLY, 200, "{\"score\": 1.5, \"action\": \"no action\"}"},
        {"spam", R_REPLY, 200, "{\"score\": 30, \"action\": \"reject\"}"},
        {"e500", R_REPLY, 500, "{}"},
        {"slow", R_HANG, 0, NULL},
        {"junk", R_REPLY, 200, "<html>"},
        {"tenant", R_REPLY, 200, "{\"score\": 9}"},
    };
    srv.table = c;
    srv.ntable = 6;
    scan_conf_t conf;
    make_conf(&conf, "/checkv2");
    conf.timeout_ms = 500;
    scan_tenant_t t[] = {{"strict", 5.0}};
    conf.tenants = t;
    conf.ntenants = 1;
    scanner_t *sc = scanner_new(loop, &conf);
    start(sc, "slow", NULL, &results[3]);
    start(sc, "ham", NULL, &results[0]);
    start(sc, "spam", NULL, &results[1]);
    start(sc, "e500", NULL, &results[2]);
    start(sc, "junk", NULL, &results[4]);
    start(sc, "tenant", "strict", &results[5]);
    run_for(6, 5000);
    assert_false(guard_fired);
    assert_false(done_inside_start);
    for (int i = 0; i < 6; i++)
        assert_int_equal(results[i].done, 1);
    assert_int_equal(results[0].v.action, SCAN_ACCEPT);
    assert_int_equal(results[0].v.scanned, 1);
    assert_int_equal(results[1].v.action, SCAN_REJECT);
    assert_int_equal(results[2].v.action, SCAN_ACCEPT);
    assert_int_equal(results[2].v.scanned, 0);
    assert_int_equal(results[3].v.action, SCAN_ACCEPT);
    assert_string_equal(results[3].v.headers, "X-Sendarix-Scan: unscanned (scanner timeout)\r\n");
    assert_int_equal(results[4].v.scanned, 0);
    assert_int_equal(results[5].v.action, SCAN_REJECT);
    /* the slow one finishes last, the others did not wait for it */
    for (int i = 0; i < 6; i++)
        if (i != 3)
            assert_true(results[i].at_ms <= results[3].at_ms);
    scanner_destroy(&sc);
}

/* done starting the next job, and destroying a scanner with jobs in flight. */
static scanner_t *chain_sc;
static result_t chain_results[3];
static int chain_n;
static void on_chain_done(const scan_verdict_t *v, void *arg)
{
    result_t *r = arg;
    r->done++;
    r->v = *v;
    if (++chain_n < 3) {
        scan_meta_t m = {.message_id = "Q1"};
        scan_start(chain_sc, message, sizeof(message) - 1, &m, on_chain_done,
                   &chain_results[chain_n]);
    } else {
        loop_stop(loop);
    }
}

static void test_done_may_start_next_and_destroy_with_jobs(void **state)
{
    (void)state;
    static const canned_t c[] = {{"Q1", R_REPLY, 200, "{\"score\": 1}"}, {"slow", R_HANG, 0, NULL}};
    srv.table = c;
    srv.ntable = 2;
    scan_conf_t conf;
    make_conf(&conf, "/checkv2");
    chain_sc = scanner_new(loop, &conf);
    chain_n = 0;
    memset(chain_results, 0, sizeof(chain_results));
    scan_meta_t m = {.message_id = "Q1"};
    scan_start(chain_sc, message, sizeof(message) - 1, &m, on_chain_done, &chain_results[0]);
    loop_timer_start(loop, &guard, 5000);
    loop_run(loop);
    loop_timer_stop(loop, &guard);
    assert_false(guard_fired);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(chain_results[i].done, 1);
        assert_int_equal(chain_results[i].v.scanned, 1);
    }
    /* jobs still running when the scanner goes: freed, never called */
    start(chain_sc, "slow", NULL, &results[0]);
    start(chain_sc, "slow", NULL, &results[1]);
    run_for(99, 200);
    scanner_destroy(&chain_sc);
    assert_null(chain_sc);
    run_for(99, 200);
    assert_int_equal(results[0].done, 0);
    assert_int_equal(results[1].done, 0);
}

/* done destroying the scanner while other jobs are in flight */
static scanner_t *doomed;
static void on_done_destroy(const scan_verdict_t *v, void *arg)
{
    on_done(v, arg);
    scanner_destroy(&doomed);
    loop_stop(loop);
}

static void test_done_may_destroy_scanner(void **state)
{
    (void)state;
    static const canned_t c[] = {{"Q1", R_REPLY, 200, "{\"score\": 1}"}, {"slow", R_HANG, 0, NULL}};
    srv.table = c;
    srv.ntable = 2;
    scan_conf_t conf;
    make_conf(&conf, "/checkv2");
    conf.max_size = 1024;
    for (int round = 0; round < 2; round++) {
        memset(results, 0, sizeof(results));
        ndone = 0;
        guard_fired = 0;
        doomed = scanner_new(loop, &conf);
        scan_meta_t m = {.message_id = "Q1"};
        scan_meta_t slow = {.message_id = "slow"};
        char big[2048] = "";
        if (round == 0) /* from a transfer, with more of them finished or running */
            for (int i = 0; i < 4; i++)
                scan_start(doomed, message, sizeof(message) - 1, &m, on_done_destroy, &results[i]);
        else /* from the next-turn delivery of a message over max_size */
            scan_start(doomed, big, sizeof(big), &m, on_done_destroy, &results[0]);
        scan_start(doomed, message, sizeof(message) - 1, &slow, on_done_destroy, &results[5]);
        loop_timer_start(loop, &guard, 5000);
        loop_run(loop);
        loop_timer_stop(loop, &guard);
        assert_false(guard_fired);
        assert_null(doomed);
        assert_int_equal(ndone, 1);
        run_for(99, 300); /* nothing else completes, nothing touches the freed scanner */
        assert_int_equal(ndone, 1);
        assert_int_equal(results[5].done, 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conf_absent_and_empty_url),
        cmocka_unit_test(test_conf_full),
        cmocka_unit_test(test_conf_refusals),
        cmocka_unit_test(test_conf_error_names_line),
        cmocka_unit_test_setup_teardown(test_spam_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ham_accepted_with_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_negative_score_and_integer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_score_at_threshold_rejects_with_scanner_message, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_scanner_text_sanitised, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failures_accept_and_mark, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_tempfail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_scanner_times_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tenant_threshold, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_carries_message_and_envelope, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_big_not_scanned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_before_completion, setup, teardown),
        cmocka_unit_test_setup_teardown(test_several_jobs_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_done_may_start_next_and_destroy_with_jobs, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_done_may_destroy_scanner, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
