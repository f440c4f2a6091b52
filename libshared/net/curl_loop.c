/*
 * curl_loop: libcurl multi on the loop. CURLMOPT_SOCKETFUNCTION becomes
 * loop_fd_add/modify/remove, CURLMOPT_TIMERFUNCTION one embedded loop
 * timer; readiness and timeouts go back to curl_multi_socket_action, and
 * finished transfers are read from curl_multi_info_read and reported.
 * Each running transfer has a small record, found through CURLOPT_PRIVATE.
 * It does not retry, and does not own the easy handles.
 */
#include "curl_loop.h"
#include "core/alloc.h"
#include "core/log.h"

#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct xfer {
    curl_loop_t *cl;
    CURL *easy;
    curl_loop_done_fn done;
    void *arg;
    struct xfer *prev, *next;
} xfer_t;

struct curl_loop {
    loop_t *loop;
    CURLM *multi;
    loop_timer_t timer; /* curl's one timeout */
    xfer_t *xfers;      /* running transfers */
    int busy;           /* inside a socket or timer handler */
    int dead;           /* destroyed from a done callback: freed when the handler ends */
};

/* Take a transfer out of curl and forget it; its done will not run. */
static void xfer_drop(xfer_t *x)
{
    curl_loop_t *cl = x->cl;
    curl_multi_remove_handle(cl->multi, x->easy);
    curl_easy_setopt(x->easy, CURLOPT_PRIVATE, (char *)NULL);
    if (x->prev)
        x->prev->next = x->next;
    else
        cl->xfers = x->next;
    if (x->next)
        x->next->prev = x->prev;
    free(x);
}

static void curl_loop_free(curl_loop_t *cl)
{
    loop_timer_stop(cl->loop, &cl->timer);
    curl_multi_cleanup(cl->multi); /* closes kept connections: their watches go */
    loop_timer_stop(cl->loop, &cl->timer);
    free(cl);
}

/* Report every finished transfer; stop as soon as a callback destroys the driver. */
static void check_done(curl_loop_t *cl)
{
    CURLMsg *m;
    int left;
    while (!cl->dead && (m = curl_multi_info_read(cl->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *easy = m->easy_handle;
        CURLcode rc = m->data.result;
        char *priv = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
        if (priv == NULL)
            continue;
        xfer_t *x = (xfer_t *)priv;
        curl_loop_done_fn done = x->done;
        void *arg = x->arg;
        xfer_drop(x); /* m is gone with it */
        done(easy, rc, arg);
    }
}

/* Let curl act on fd (or on its timeout) and report what finished. */
static void drive(curl_loop_t *cl, curl_socket_t fd, int flags)
{
    int running;
    cl->busy++;
    curl_multi_socket_action(cl->multi, fd, flags, &running);
    check_done(cl);
    if (--cl->busy == 0 && cl->dead)
        curl_loop_free(cl);
}

static void on_socket_ready(loop_t *loop, int fd, unsigned events, void *arg)
{
    (void)loop;
    int flags = 0;
    if (events & LOOP_READ)
        flags |= CURL_CSELECT_IN;
    if (events & LOOP_WRITE)
        flags |= CURL_CSELECT_OUT;
    if (events & LOOP_ERROR)
        flags |= CURL_CSELECT_ERR;
    drive(arg, fd, flags);
}

static void on_timer(loop_t *loop, void *arg)
{
    (void)loop;
    drive(arg, CURL_SOCKET_TIMEOUT, 0);
}

/* curl says which events it wants on a socket; a non-NULL socketp marks a watched fd. */
static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    curl_loop_t *cl = userp;
    if (what == CURL_POLL_REMOVE) {
        if (socketp) {
            loop_fd_remove(cl->loop, fd);
            curl_multi_assign(cl->multi, fd, NULL);
        }
        return 0;
    }
    unsigned ev =
        ((what & CURL_POLL_IN) ? LOOP_READ : 0) | ((what & CURL_POLL_OUT) ? LOOP_WRITE : 0);
    if (socketp == NULL) {
        if (loop_fd_add(cl->loop, fd, ev, on_socket_ready, cl) < 0) {
            log_error("event=curl_watch_failed fd=%d", (int)fd);
            return -1;
        }
        curl_multi_assign(cl->multi, fd, cl);
    } else if (loop_fd_modify(cl->loop, fd, ev) < 0) {
        log_error("event=curl_watch_failed fd=%d", (int)fd);
        return -1;
    }
    return 0;
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    curl_loop_t *cl = userp;
    if (timeout_ms < 0)
        loop_timer_stop(cl->loop, &cl->timer);
    else
        loop_timer_start(cl->loop, &cl->timer, (uint64_t)timeout_ms);
    return 0;
}

curl_loop_t *curl_loop_new(loop_t *loop, char *err, size_t errlen)
{
    static int curl_ready;
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            snprintf(err, errlen, "libcurl: curl_global_init failed");
            return NULL;
        }
        curl_ready = 1;
    }
    curl_loop_t *cl = xcalloc(1, sizeof(*cl));
    cl->loop = loop;
    cl->multi = curl_multi_init();
    if (cl->multi == NULL) {
        snprintf(err, errlen, "libcurl: curl_multi_init failed");
        free(cl);
        return NULL;
    }
    loop_timer_init(&cl->timer, on_timer, cl);
    curl_multi_setopt(cl->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(cl->multi, CURLMOPT_SOCKETDATA, cl);
    curl_multi_setopt(cl->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(cl->multi, CURLMOPT_TIMERDATA, cl);
    return cl;
}

void curl_loop_destroy(curl_loop_t **p)
{
    curl_loop_t *cl = *p;
    if (cl == NULL)
        return;
    *p = NULL;
    while (cl->xfers)
        xfer_drop(cl->xfers);
    if (cl->busy) {
        cl->dead = 1;
        return;
    }
    curl_loop_free(cl);
}

int curl_loop_add(curl_loop_t *cl, CURL *easy, curl_loop_done_fn done, void *arg)
{
    assert(cl != NULL && easy != NULL && done != NULL);
    char *priv = NULL;
    if (curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv) != CURLE_OK || priv != NULL)
        return -1;
    xfer_t *x = xcalloc(1, sizeof(*x));
    x->cl = cl;
    x->easy = easy;
    x->done = done;
    x->arg = arg;
    if (curl_easy_setopt(easy, CURLOPT_PRIVATE, (char *)x) != CURLE_OK)
        goto fail;
    /* curl only asks for a timeout here; the transfer moves on the next loop turn */
    if (curl_multi_add_handle(cl->multi, easy) != CURLM_OK) {
        curl_easy_setopt(easy, CURLOPT_PRIVATE, (char *)NULL);
        goto fail;
    }
    x->next = cl->xfers;
    if (cl->xfers)
        cl->xfers->prev = x;
    cl->xfers = x;
    return 0;
fail:
    free(x);
    return -1;
}

void curl_loop_remove(curl_loop_t *cl, CURL *easy)
{
    if (cl == NULL || easy == NULL)
        return;
    char *priv = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
    if (priv == NULL)
        return;
    xfer_t *x = (xfer_t *)priv;
    assert(x->cl == cl && x->easy == easy);
    xfer_drop(x);
}
