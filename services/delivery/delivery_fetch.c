/*
 * delivery_fetch: one easy handle per GET, run by curl_loop
 * (libshared/net) on the service's loop; a finished transfer is answered
 * from its done callback, a transfer that could not start from a timer on
 * the next turn.
 */
#include "delivery_fetch.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "net/curl_loop.h"

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
    curl_loop_t *cl;
    char *ca_file;
    fetch_t *fetches;
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

/* Free what the fetch itself holds; it is out of the list, curl and the loop. */
static void fetch_release(fetch_t *x)
{
    if (x->easy)
        curl_easy_cleanup(x->easy);
    curl_slist_free_all(x->resolve);
    buf_free(&x->body);
    free(x);
}

static void fetch_free(fetch_t *x)
{
    fetcher_t *f = x->f;
    fetch_unlink(x);
    loop_timer_stop(f->loop, &x->later);
    curl_loop_remove(f->cl, x->easy);
    fetch_release(x);
}

/* The transfer ended (the easy handle is out of curl, still the fetch's). */
static void on_transfer_done(CURL *easy, CURLcode rc, void *arg)
{
    (void)easy;
    fetch_t *x = arg;
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
        sx_strlcpy(x->err, x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc), sizeof(x->err));
        r.err = x->err;
    }
    buf_append(&x->body, "", 1); /* NUL for the caller; not counted */
    r.body = buf_head(&x->body);
    r.len = buf_used(&x->body) - 1;
    /* out of the list first: the callback may destroy the fetcher, so the
       release after it touches only the fetch (the content type belongs to
       the easy handle, so it waits until the callback returns) */
    fetch_unlink(x);
    if (x->fn)
        x->fn(&r, x->arg);
    fetch_release(x);
}

fetcher_t *fetcher_new(loop_t *loop, const char *ca_file, char *err, size_t errlen)
{
    curl_loop_t *cl = curl_loop_new(loop, err, errlen);
    if (cl == NULL)
        return NULL;
    fetcher_t *f = xcalloc(1, sizeof(*f));
    f->loop = loop;
    f->cl = cl;
    f->ca_file = xstrdup(ca_file ? ca_file : "");
    return f;
}

/* Safe from inside a fetch callback: that fetch no longer needs the fetcher. */
void fetcher_destroy(fetcher_t **p)
{
    fetcher_t *f = *p;
    if (f == NULL)
        return;
    *p = NULL;
    while (f->fetches)
        fetch_free(f->fetches);
    curl_loop_destroy(&f->cl); /* freed once a running done callback returns */
    free(f->ca_file);
    free(f);
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
    if (bad || curl_loop_add(f->cl, e, on_transfer_done, x) < 0) {
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
