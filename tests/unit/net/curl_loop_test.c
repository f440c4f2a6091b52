/*
 * curl_loop_test: libcurl transfers driven by the loop against a small
 * HTTP server on 127.0.0.1 served from the same loop, which answers by path:
 * several transfers at once (answers, an HTTP error status, one that times
 * out), done never inside curl_loop_add, removes before completion (done
 * never runs, the handle can be added again), destroy with transfers
 * running and from inside a done callback, a refused connection reported
 * through done, and a kept connection closed by destroy.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/loop.h"
#include "net/conn.h"
#include "net/curl_loop.h"
#include "net/sock.h"

/* ---- the server: one canned answer per path ---- */

typedef enum { A_CLOSE = 0, A_KEEP, A_HANG } answer_mode_t;

typedef struct answer {
    const char *path;
    answer_mode_t mode;
    int status;
    const char *body;
} answer_t;

static const answer_t answers[] = {
    {"/one", A_CLOSE, 200, "first"},
    {"/two", A_CLOSE, 200, "second answer"},
    {"/missing", A_CLOSE, 404, "not here"},
    {"/keep", A_KEEP, 200, "kept"},
    {"/hang", A_HANG, 0, NULL},
};

#define SRV_CONNS 16

static loop_t *loop;
static int lfd;
static unsigned port;
static conn_t *conns[SRV_CONNS];
static unsigned requests;

static const answer_t *answer_for(const char *line, size_t n)
{
    /* "GET /path HTTP/1.1" */
    const char *p = memchr(line, ' ', n);
    if (p == NULL)
        return NULL;
    p++;
    size_t plen = strcspn(p, " \r\n");
    for (size_t i = 0; i < sizeof(answers) / sizeof(answers[0]); i++)
        if (strlen(answers[i].path) == plen && strncmp(answers[i].path, p, plen) == 0)
            return &answers[i];
    return NULL;
}

static void srv_on_data(conn_t *c, void *arg)
{
    (void)arg;
    buf_t *in = conn_in(c);
    const char *head = buf_head(in);
    const char *end = memmem(head, buf_used(in), "\r\n\r\n", 4);
    if (end == NULL)
        return;
    size_t hlen = (size_t)(end - head) + 4;
    const answer_t *a = answer_for(head, hlen);
    buf_consume(in, hlen);
    requests++;
    if (a == NULL) {
        conn_printf(c, "HTTP/1.1 400 X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        conn_close_after_flush(c);
        return;
    }
    if (a->mode == A_HANG)
        return; /* say nothing, keep the connection */
    conn_printf(c, "HTTP/1.1 %d X\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n%s\r\n%s",
                a->status, strlen(a->body), a->mode == A_CLOSE ? "Connection: close\r\n" : "",
                a->body);
    if (a->mode == A_CLOSE)
        conn_close_after_flush(c);
}

static void srv_on_close(conn_t *c, int err, void *arg)
{
    (void)err;
    (void)arg;
    for (size_t i = 0; i < SRV_CONNS; i++)
        if (conns[i] == c)
            conns[i] = NULL;
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
        conn_t *c = conn_new(l, cfd, 0, 1u << 16, &srv_handlers, NULL);
        for (size_t i = 0; i < SRV_CONNS && c; i++)
            if (conns[i] == NULL) {
                conns[i] = c;
                c = NULL;
            }
        if (c)
            conn_destroy(&c);
    }
}

/* ---- transfers ---- */

typedef struct result {
    CURL *easy;
    int done;
    CURLcode rc;
    long status;
    char content_type[64];
    char body[256];
    size_t len;
} result_t;

#define NRESULTS 8

static result_t results[NRESULTS];
static loop_timer_t guard;
static int guard_fired;
static int in_add, done_inside_add;
static int want_done, ndone;

static size_t on_bytes(char *p, size_t size, size_t nmemb, void *arg)
{
    result_t *r = arg;
    size_t n = size * nmemb;
    if (r->len + n >= sizeof(r->body))
        return 0;
    memcpy(r->body + r->len, p, n);
    r->len += n;
    r->body[r->len] = '\0';
    return n;
}

/* An easy handle for http://127.0.0.1:<port><path>, bytes into r. */
static CURL *make_easy(unsigned to_port, const char *path, long timeout_ms, result_t *r)
{
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", to_port, path);
    CURL *e = curl_easy_init();
    assert_non_null(e);
    assert_int_equal(curl_easy_setopt(e, CURLOPT_URL, url), CURLE_OK);
    assert_int_equal(curl_easy_setopt(e, CURLOPT_PROXY, ""), CURLE_OK);
    assert_int_equal(curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L), CURLE_OK);
    assert_int_equal(curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms), CURLE_OK);
    assert_int_equal(curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_bytes), CURLE_OK);
    assert_int_equal(curl_easy_setopt(e, CURLOPT_WRITEDATA, r), CURLE_OK);
    r->easy = e;
    return e;
}

static void on_done(CURL *easy, CURLcode rc, void *arg)
{
    result_t *r = arg;
    assert_ptr_equal(easy, r->easy);
    if (in_add)
        done_inside_add = 1;
    r->done++;
    r->rc = rc;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &r->status);
    char *ct = NULL;
    curl_easy_getinfo(easy, CURLINFO_CONTENT_TYPE, &ct);
    snprintf(r->content_type, sizeof(r->content_type), "%s", ct ? ct : "");
    if (++ndone >= want_done)
        loop_stop(loop);
}

static void add(curl_loop_t *cl, CURL *e, curl_loop_done_fn fn, result_t *r)
{
    in_add = 1;
    assert_int_equal(curl_loop_add(cl, e, fn, r), 0);
    in_add = 0;
}

static void on_guard(loop_t *l, void *arg)
{
    (void)arg;
    guard_fired = 1;
    loop_stop(l);
}

/* Run the loop until want transfers are done, or guard_ms pass. */
static void run_for(int want, uint64_t guard_ms)
{
    want_done = want;
    guard_fired = 0;
    loop_timer_start(loop, &guard, guard_ms);
    if (ndone < want_done)
        loop_run(loop);
    loop_timer_stop(loop, &guard);
}

static void cleanup_results(void)
{
    for (size_t i = 0; i < NRESULTS; i++)
        if (results[i].easy)
            curl_easy_cleanup(results[i].easy);
    memset(results, 0, sizeof(results));
}

static int setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    loop = loop_new();
    char err[256];
    lfd = sock_listen("127.0.0.1", 0, 64, err, sizeof(err));
    assert_true(lfd >= 0);
    sock_addr_t a;
    assert_int_equal(sock_local(lfd, &a), 0);
    port = sock_addr_port(&a);
    assert_int_equal(loop_fd_add(loop, lfd, LOOP_READ, srv_accept, NULL), 0);
    memset(conns, 0, sizeof(conns));
    memset(results, 0, sizeof(results));
    requests = 0;
    loop_timer_init(&guard, on_guard, NULL);
    guard_fired = in_add = done_inside_add = 0;
    want_done = ndone = 0;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cleanup_results();
    for (size_t i = 0; i < SRV_CONNS; i++)
        if (conns[i])
            conn_destroy(&conns[i]);
    loop_fd_remove(loop, lfd);
    close(lfd);
    loop_timer_stop(loop, &guard);
    loop_destroy(&loop);
    return 0;
}

static curl_loop_t *new_driver(void)
{
    char err[128];
    curl_loop_t *cl = curl_loop_new(loop, err, sizeof(err));
    assert_non_null(cl);
    return cl;
}

/* ---- tests ---- */

static void test_new_and_destroy(void **state)
{
    (void)state;
    curl_loop_t *a = new_driver();
    curl_loop_t *b = new_driver(); /* a second one in the process */
    curl_loop_destroy(&a);
    assert_null(a);
    curl_loop_destroy(&a); /* twice is fine */
    curl_loop_destroy(&b);
    curl_loop_remove(NULL, NULL);
}

static void test_several_at_once(void **state)
{
    (void)state;
    static const struct {
        const char *path;
        long timeout_ms;
        CURLcode rc;
        long status;
        const char *body;
    } cases[] = {
        {"/hang", 300, CURLE_OPERATION_TIMEDOUT, 0, ""},
        {"/one", 3000, CURLE_OK, 200, "first"},
        {"/two", 3000, CURLE_OK, 200, "second answer"},
        {"/missing", 3000, CURLE_OK, 404, "not here"},
        {"/one", 3000, CURLE_OK, 200, "first"},
    };
    const size_t n = sizeof(cases) / sizeof(cases[0]);
    curl_loop_t *cl = new_driver();
    for (size_t i = 0; i < n; i++)
        add(cl, make_easy(port, cases[i].path, cases[i].timeout_ms, &results[i]), on_done,
            &results[i]);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(results[i].done, 0);
    run_for((int)n, 5000);
    assert_false(guard_fired);
    assert_false(done_inside_add);
    assert_int_equal(requests, n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(results[i].done, 1);
        assert_int_equal(results[i].rc, cases[i].rc);
        assert_int_equal(results[i].status, cases[i].status);
        assert_string_equal(results[i].len ? results[i].body : "", cases[i].body);
        if (cases[i].rc == CURLE_OK)
            assert_string_equal(results[i].content_type, "text/plain");
    }
    /* reported once: nothing more comes */
    run_for(99, 100);
    assert_int_equal(ndone, (int)n);
    curl_loop_destroy(&cl);
}

/* A timer that removes a transfer while the server is thinking. */
static curl_loop_t *remove_cl;
static CURL *to_remove;
static void on_remove_timer(loop_t *l, void *arg)
{
    (void)l;
    (void)arg;
    curl_loop_remove(remove_cl, to_remove);
    to_remove = NULL;
}

static void test_remove_before_completion(void **state)
{
    (void)state;
    curl_loop_t *cl = new_driver();
    remove_cl = cl;
    /* removed at once, before any loop turn */
    CURL *a = make_easy(port, "/one", 300, &results[0]);
    add(cl, a, on_done, &results[0]);
    curl_loop_remove(cl, a);
    curl_loop_remove(cl, a); /* no longer running: a no-op */
    /* removed while the server holds the answer back, before its timeout */
    to_remove = make_easy(port, "/hang", 300, &results[1]);
    add(cl, to_remove, on_done, &results[1]);
    loop_timer_t t;
    loop_timer_init(&t, on_remove_timer, NULL);
    loop_timer_start(loop, &t, 100);
    /* never added: a no-op */
    CURL *never = make_easy(port, "/one", 300, &results[2]);
    curl_loop_remove(cl, never);
    /* one that goes through */
    add(cl, make_easy(port, "/two", 3000, &results[3]), on_done, &results[3]);

    run_for(99, 800); /* past the timeouts: only the last may complete */
    assert_true(guard_fired);
    assert_null(to_remove);
    assert_int_equal(results[0].done, 0);
    assert_int_equal(results[1].done, 0);
    assert_int_equal(results[2].done, 0);
    assert_int_equal(results[3].done, 1);
    assert_int_equal(results[3].rc, CURLE_OK);

    /* a removed handle can run again */
    ndone = 0;
    add(cl, a, on_done, &results[0]);
    assert_int_equal(curl_loop_add(cl, a, on_done, &results[0]), -1); /* running already */
    run_for(1, 5000);
    assert_false(guard_fired);
    assert_int_equal(results[0].done, 1);
    assert_int_equal(results[0].rc, CURLE_OK);
    assert_string_equal(results[0].body, "first");
    loop_timer_stop(loop, &t);
    curl_loop_destroy(&cl);
}

static void test_destroy_with_transfers_running(void **state)
{
    (void)state;
    curl_loop_t *cl = new_driver();
    add(cl, make_easy(port, "/hang", 2000, &results[0]), on_done, &results[0]);
    add(cl, make_easy(port, "/hang", 2000, &results[1]), on_done, &results[1]);
    run_for(99, 200); /* both connected and waiting */
    assert_true(guard_fired);
    curl_loop_destroy(&cl);
    assert_null(cl);
    run_for(99, 300); /* nothing is reported, nothing touches the freed driver */
    assert_int_equal(ndone, 0);
}

/* done destroying the driver while other transfers are finished or running */
static curl_loop_t *doomed;
static void on_done_destroy(CURL *easy, CURLcode rc, void *arg)
{
    on_done(easy, rc, arg);
    curl_loop_destroy(&doomed);
    loop_stop(loop);
}

static void test_destroy_from_done(void **state)
{
    (void)state;
    doomed = new_driver();
    for (int i = 0; i < 4; i++)
        add(doomed, make_easy(port, "/one", 3000, &results[i]), on_done_destroy, &results[i]);
    add(doomed, make_easy(port, "/hang", 3000, &results[5]), on_done_destroy, &results[5]);
    run_for(1, 5000);
    assert_false(guard_fired);
    assert_null(doomed);
    assert_int_equal(ndone, 1);
    run_for(99, 300); /* nothing else completes, nothing touches the freed driver */
    assert_int_equal(ndone, 1);
    assert_int_equal(results[5].done, 0);
}

/* done adding the next transfer and removing another */
static curl_loop_t *chain_cl;
static int chain_n;
static void on_chain_done(CURL *easy, CURLcode rc, void *arg)
{
    on_done(easy, rc, arg);
    if (chain_n < 2) {
        chain_n++;
        add(chain_cl, make_easy(port, "/two", 3000, &results[chain_n]), on_chain_done,
            &results[chain_n]);
    }
    curl_loop_remove(chain_cl, results[4].easy);
}

static void test_done_may_add_and_remove(void **state)
{
    (void)state;
    chain_cl = new_driver();
    chain_n = 0;
    add(chain_cl, make_easy(port, "/one", 3000, &results[0]), on_chain_done, &results[0]);
    add(chain_cl, make_easy(port, "/hang", 3000, &results[4]), on_done, &results[4]);
    run_for(3, 5000);
    assert_false(guard_fired);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(results[i].done, 1);
        assert_int_equal(results[i].rc, CURLE_OK);
    }
    assert_string_equal(results[2].body, "second answer");
    run_for(99, 200);
    assert_int_equal(results[4].done, 0);
    curl_loop_destroy(&chain_cl);
}

static void test_connection_refused(void **state)
{
    (void)state;
    /* a port that was free a moment ago: nothing listens there */
    char err[256];
    int fd = sock_listen("127.0.0.1", 0, 1, err, sizeof(err));
    assert_true(fd >= 0);
    sock_addr_t a;
    assert_int_equal(sock_local(fd, &a), 0);
    unsigned closed = sock_addr_port(&a);
    close(fd);
    curl_loop_t *cl = new_driver();
    add(cl, make_easy(closed, "/one", 3000, &results[0]), on_done, &results[0]);
    assert_int_equal(results[0].done, 0);
    run_for(1, 5000);
    assert_false(guard_fired);
    assert_false(done_inside_add);
    assert_int_equal(results[0].done, 1);
    assert_int_equal(results[0].rc, CURLE_COULDNT_CONNECT);
    assert_int_equal(results[0].status, 0);
    curl_loop_destroy(&cl);
}

/* The sockets curl opens, so a test can see them closed. */
static int opened[4];
static size_t nopened;
static int on_sockopt(void *arg, curl_socket_t fd, curlsocktype purpose)
{
    (void)arg;
    (void)purpose;
    if (nopened < sizeof(opened) / sizeof(opened[0]))
        opened[nopened++] = (int)fd;
    return CURL_SOCKOPT_OK;
}

static void test_destroy_closes_kept_connection(void **state)
{
    (void)state;
    nopened = 0;
    curl_loop_t *cl = new_driver();
    for (int i = 0; i < 2; i++) {
        CURL *e = make_easy(port, "/keep", 3000, &results[i]);
        assert_int_equal(curl_easy_setopt(e, CURLOPT_SOCKOPTFUNCTION, on_sockopt), CURLE_OK);
        add(cl, e, on_done, &results[i]);
        run_for(i + 1, 5000);
        assert_false(guard_fired);
        assert_int_equal(results[i].rc, CURLE_OK);
        assert_string_equal(results[i].body, "kept");
    }
    /* one connection, kept after the first transfer and used again */
    assert_int_equal(nopened, 1);
    assert_int_not_equal(fcntl(opened[0], F_GETFD), -1);
    curl_loop_destroy(&cl);
    assert_int_equal(fcntl(opened[0], F_GETFD), -1);
    run_for(99, 200);
    assert_int_equal(ndone, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_new_and_destroy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_several_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remove_before_completion, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_with_transfers_running, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_from_done, setup, teardown),
        cmocka_unit_test_setup_teardown(test_done_may_add_and_remove, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_closes_kept_connection, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
