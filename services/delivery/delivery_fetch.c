/*
 * delivery_fetch: libcurl multi on the loop. curl says which sockets it
 * wants watched (CURLMOPT_SOCKETFUNCTION) and when it needs a turn
 * (CURLMOPT_TIMERFUNCTION); the loop calls curl_multi_socket_action and
 * finished transfers are answered from there.
 */
#include "delivery_fetch.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FETCH_RESOLVE_MAX 1200 /* "host:port:addr,addr..." */
#define FETCH_HOST_MAX    300

struct fetch {
    fetcher_t *f;
    CURL *easy;
    struct curl_slist *resolve;
    fetch_fn fn;
    void *arg;
    buf_t body;
    size_t max_bytes;
    int too_big;
    char errbuf[CURL_ERROR_SIZE];
    char err[CURL_ERROR_SIZE + 64];
    loop_timer_t later; /* a transfer that could not start is answered from here */
    struct fetch *prev, *next;
};

struct fetcher {
    loop_t *loop;
    CURLM *multi;
    char *ca_file;
    loop_timer_t timer;
    fetch_t *fetches;
    int busy;
    int dead;
};

static void fetch_unlink(fetch_t *x)
{
    fetcher_t *f = x->f;
    if (x->prev)
        x->prev->next = x->next;
    else
        f->fetches = x->next;
    if (x->next)
        x->next->prev = x->prev;
    x->prev = x->next = NULL;
}

/* Free a fetch already out of the fetcher's list. */
static void fetch_release(fetch_t *x)
{
    fetcher_t *f = x->f;
    loop_timer_stop(f->loop, &x->later);
    if (x->easy) {
        curl_multi_remove_handle(f->multi, x->easy);
        curl_easy_cleanup(x->easy);
    }
    curl_slist_free_all(x->resolve);
    buf_free(&x->body);
    free(x);
}

static void fetch_free(fetch_t *x)
{
    fetch_unlink(x);
    fetch_release(x);
}

static void fetch_complete(fetch_t *x, CURLcode rc)
{
    fetch_result_t r;
    memset(&r, 0, sizeof(r));
    r.content_type = "";
    r.err = "";
    if (rc == CURLE_OK) {
        r.ok = 1;
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &r.status);
        char *ct = NULL;
        curl_easy_getinfo(x->easy, CURLINFO_CONTENT_TYPE, &ct);
        if (ct)
            r.content_type = ct;
    } else if (x->too_big || rc == CURLE_FILESIZE_EXCEEDED) {
        snprintf(x->err, sizeof(x->err), "more than %zu bytes", x->max_bytes);
        r.err = x->err;
    } else {
        snprintf(x->err, sizeof(x->err), "%s", x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
        r.err = x->err;
    }
    buf_append(&x->body, "", 1); /* NUL for the caller; not counted */
    r.body = buf_head(&x->body);
    r.len = buf_used(&x->body) - 1;
    /* out of the list first: the callback may destroy the fetcher */
    fetch_unlink(x);
    if (x->fn)
        x->fn(&r, x->arg);
    fetch_release(x); /* after: the content type belongs to the easy handle */
}

static void check_done(fetcher_t *f)
{
    CURLMsg *m;
    int left;
    while (!f->dead && (m = curl_multi_info_read(f->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        char *priv = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        if (priv)
            fetch_complete((fetch_t *)priv, m->data.result);
    }
}

static void fetcher_free(fetcher_t *f)
{
    loop_timer_stop(f->loop, &f->timer);
    curl_multi_cleanup(f->multi);
    free(f->ca_file);
    free(f);
}

static void on_socket_ready(loop_t *loop, int fd, unsigned events, void *arg)
{
    (void)loop;
    fetcher_t *f = arg;
    int flags = 0, running;
    if (events & LOOP_READ)
        flags |= CURL_CSELECT_IN;
    if (events & LOOP_WRITE)
        flags |= CURL_CSELECT_OUT;
    if (events & LOOP_ERROR)
        flags |= CURL_CSELECT_ERR;
    f->busy++;
    curl_multi_socket_action(f->multi, fd, flags, &running);
    check_done(f);
    if (--f->busy == 0 && f->dead)
        fetcher_free(f);
}

static void on_timer(loop_t *loop, void *arg)
{
    (void)loop;
    fetcher_t *f = arg;
    int running;
    f->busy++;
    curl_multi_socket_action(f->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(f);
    if (--f->busy == 0 && f->dead)
        fetcher_free(f);
}

/* curl says which events it wants on a socket; a non-NULL socketp marks a watched fd. */
static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    fetcher_t *f = userp;
    if (what == CURL_POLL_REMOVE) {
        if (socketp) {
            loop_fd_remove(f->loop, fd);
            curl_multi_assign(f->multi, fd, NULL);
        }
        return 0;
    }
    unsigned ev =
        ((what & CURL_POLL_IN) ? LOOP_READ : 0) | ((what & CURL_POLL_OUT) ? LOOP_WRITE : 0);
    if (socketp == NULL) {
        if (loop_fd_add(f->loop, fd, ev, on_socket_ready, f) < 0) {
            log_error("event=fetch_watch_failed fd=%d", (int)fd);
            return -1;
        }
        curl_multi_assign(f->multi, fd, f);
    } else if (loop_fd_modify(f->loop, fd, ev) < 0) {
        log_error("event=fetch_watch_failed fd=%d", (int)fd);
        return -1;
    }
    return 0;
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    fetcher_t *f = userp;
    if (timeout_ms < 0)
        loop_timer_stop(f->loop, &f->timer);
    else
        loop_timer_start(f->loop, &f->timer, (uint64_t)timeout_ms);
    return 0;
}

fetcher_t *fetcher_new(loop_t *loop, const char *ca_file, char *err, size_t errlen)
{
    static int curl_ready;
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            snprintf(err, errlen, "libcurl: curl_global_init failed");
            return NULL;
        }
        curl_ready = 1;
    }
    fetcher_t *f = xcalloc(1, sizeof(*f));
    f->loop = loop;
    f->multi = curl_multi_init();
    if (f->multi == NULL) {
        snprintf(err, errlen, "libcurl: curl_multi_init failed");
        free(f);
        return NULL;
    }
    f->ca_file = xstrdup(ca_file ? ca_file : "");
    loop_timer_init(&f->timer, on_timer, f);
    curl_multi_setopt(f->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(f->multi, CURLMOPT_SOCKETDATA, f);
    curl_multi_setopt(f->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(f->multi, CURLMOPT_TIMERDATA, f);
    return f;
}

void fetcher_destroy(fetcher_t **p)
{
    fetcher_t *f = *p;
    if (f == NULL)
        return;
    *p = NULL;
    while (f->fetches)
        fetch_free(f->fetches);
    if (f->busy) {
        f->dead = 1;
        return;
    }
    fetcher_free(f);
}

static size_t on_bytes(char *p, size_t size, size_t nmemb, void *arg)
{
    fetch_t *x = arg;
    size_t n = size * nmemb;
    if (buf_used(&x->body) + n > x->max_bytes || buf_append(&x->body, p, n) < 0) {
        x->too_big = 1;
        return 0; /* curl aborts the transfer */
    }
    return n;
}

static void on_later(loop_t *loop, void *arg)
{
    fetch_t *x = arg;
    (void)loop;
    fetch_result_t r;
    memset(&r, 0, sizeof(r));
    r.body = "";
    r.content_type = "";
    r.err = x->err;
    fetch_fn fn = x->fn;
    void *farg = x->arg;
    fetch_free(x);
    if (fn)
        fn(&r, farg);
}

fetch_t *fetch_get(fetcher_t *f, const char *host, unsigned port, const char *path,
                   const sock_addr_t *addrs, size_t naddrs, uint64_t timeout_ms, size_t max_bytes,
                   fetch_fn fn, void *arg)
{
    fetch_t *x = xcalloc(1, sizeof(*x));
    x->f = f;
    x->fn = fn;
    x->arg = arg;
    x->max_bytes = max_bytes;
    buf_init(&x->body, 0);
    loop_timer_init(&x->later, on_later, x);
    x->next = f->fetches;
    if (f->fetches)
        f->fetches->prev = x;
    f->fetches = x;

    /* "-host:port" drops what an earlier transfer told curl; then our addresses */
    char resolve[FETCH_RESOLVE_MAX];
    int n = snprintf(resolve, sizeof(resolve), "%s:%u:", host, port);
    for (size_t i = 0; i < naddrs && n > 0 && (size_t)n < sizeof(resolve); i++) {
        char ip[SOCK_ADDR_MAX];
        sock_addr_ip(&addrs[i], ip, sizeof(ip));
        int v6 = strchr(ip, ':') != NULL;
        n += snprintf(resolve + n, sizeof(resolve) - (size_t)n, "%s%s%s%s", i ? "," : "",
                      v6 ? "[" : "", ip, v6 ? "]" : "");
    }
    char drop[FETCH_HOST_MAX];
    snprintf(drop, sizeof(drop), "-%s:%u", host, port);
    char url[FETCH_HOST_MAX + 64];
    snprintf(url, sizeof(url), "https://%s:%u%s", host, port, path);
    if (naddrs == 0 || n <= 0 || (size_t)n >= sizeof(resolve)) {
        snprintf(x->err, sizeof(x->err), "no address to connect to");
        loop_timer_start(f->loop, &x->later, 0);
        return x;
    }
    x->resolve = curl_slist_append(x->resolve, drop);
    x->resolve = curl_slist_append(x->resolve, resolve);
    CURL *e = curl_easy_init();
    if (e == NULL || x->resolve == NULL) {
        if (e)
            curl_easy_cleanup(e);
        snprintf(x->err, sizeof(x->err), "cannot set up the transfer");
        loop_timer_start(f->loop, &x->later, 0);
        return x;
    }
    x->easy = e;
    int bad = 0;
    bad |= curl_easy_setopt(e, CURLOPT_URL, url) != CURLE_OK;
#if LIBCURL_VERSION_NUM >= 0x075500
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https") != CURLE_OK;
#else
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)CURLPROTO_HTTPS) != CURLE_OK;
#endif
    bad |= curl_easy_setopt(e, CURLOPT_RESOLVE, x->resolve) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PROXY, "") != CURLE_OK; /* never a proxy from the env */
    bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2) != CURLE_OK;
    if (f->ca_file[0])
        bad |= curl_easy_setopt(e, CURLOPT_CAINFO, f->ca_file) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout_ms) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max_bytes) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_USERAGENT, "Sendarix/" SENDARIX_VERSION) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_bytes) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, x) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)x) != CURLE_OK;
    if (bad || curl_multi_add_handle(f->multi, e) != CURLM_OK) {
        curl_easy_cleanup(e);
        x->easy = NULL;
        snprintf(x->err, sizeof(x->err), "cannot set up the transfer");
        loop_timer_start(f->loop, &x->later, 0);
    }
    return x;
}

void fetch_cancel(fetch_t **p)
{
    fetch_t *x = *p;
    if (x == NULL)
        return;
    *p = NULL;
    fetch_free(x);
}
