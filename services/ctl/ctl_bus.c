/*
 * ctl_bus: sendarixctl on the bus. It reads only the `bus` section of the
 * config, runs its own loop, and sends requests through one DEALER per
 * call. A DEALER refuses to send until its connection is up, so a call is
 * retried every CTL_RETRY_MS until its deadline: a service that is merely
 * connecting is not reported down, one that never answers is. The loop
 * runs until every call has an outcome; nothing here blocks otherwise.
 */
#include "ctl.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/conf.h"
#include "core/log.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CTL_RETRY_MS     20
#define CTL_PARALLEL_MAX 24  /* sockets at once; the loop watches at most 32 */
#define CTL_GUARD_MS     500 /* past every deadline: stop the loop whatever happened */
#define CTL_CONFIG_DEF   "var/sendarix.conf"

typedef struct ctl_batch {
    loop_t *loop;
    size_t remaining;
    loop_timer_t guard;
    ctl_call_t *calls;
    size_t n;
} ctl_batch_t;

int ctl_open(ctl_t *ctl)
{
    if (ctl->bus)
        return 0;
    const char *path = ctl->config;
    if (path == NULL) {
        const char *env = getenv("SENDARIX_CONFIG");
        path = env && *env ? env : CTL_CONFIG_DEF;
    }
    ctl->config_path = xstrdup(path);
    char err[1024];
    conf_file_t *cf = conf_open(path, err, sizeof(err));
    if (cf == NULL) {
        ctl_fail(ctl, "%s", err);
        return -1;
    }
    int rc = conf_section(cf, "bus", service_bus_table, &ctl->ep, err, sizeof(err));
    conf_close(&cf);
    if (rc < 0) {
        ctl_fail(ctl, "%s", err);
        return -1;
    }
    ctl->ep_loaded = 1;

    char inst[24];
    snprintf(inst, sizeof(inst), "%d", (int)getpid());
    log_init("ctl", inst);
    log_set_level(LOG_FATAL); /* the CLI reports problems itself, in sentences */
    ctl->loop = loop_new();
    ctl->bus = ctl->loop ? bus_new(ctl->loop, "ctl", inst) : NULL;
    if (ctl->bus == NULL) {
        ctl_fail(ctl, "cannot start the event loop or the bus");
        return -1;
    }
    return 0;
}

void ctl_close(ctl_t *ctl)
{
    bus_destroy(&ctl->bus);
    loop_destroy(&ctl->loop);
    if (ctl->ep_loaded)
        conf_release(service_bus_table, &ctl->ep);
    ctl->ep_loaded = 0;
    free(ctl->config_path);
    ctl->config_path = NULL;
}

static void call_done(ctl_call_t *c, ctl_call_state_t state)
{
    if (c->state != CTL_CALL_PENDING)
        return;
    c->state = state;
    loop_timer_stop(c->batch->loop, &c->retry);
    if (--c->batch->remaining == 0)
        loop_stop(c->batch->loop);
}

static void on_reply(bus_msg_t *reply, bus_status_t status, void *arg)
{
    ctl_call_t *c = arg;
    if (status == BUS_OK && reply) {
        c->reply = reply->env; /* keep the decoded envelope past the callback */
        reply->env = NULL;
        call_done(c, CTL_CALL_OK);
    } else {
        call_done(c, CTL_CALL_TIMEOUT);
    }
}

/* Send now if the peer is connected; otherwise try again shortly, until the deadline. */
static void call_try(ctl_call_t *c)
{
    uint64_t now = clock_mono_ms();
    uint64_t give_up = c->deadline;
    if (c->connect_ms && c->connect_ms < c->timeout_ms)
        give_up = c->deadline - c->timeout_ms + c->connect_ms;
    if (c->client == NULL || now >= give_up) {
        call_done(c, CTL_CALL_DOWN);
        return;
    }
    if (bus_client_request(c->client, c->req, NULL, c->deadline - now, on_reply, c, NULL) == 0)
        return;
    uint64_t wait = give_up - now < CTL_RETRY_MS ? give_up - now : CTL_RETRY_MS;
    loop_timer_start(c->batch->loop, &c->retry, wait);
}

static void on_retry(loop_t *loop, void *arg)
{
    (void)loop;
    call_try(arg);
}

static void on_guard(loop_t *loop, void *arg)
{
    ctl_batch_t *b = arg;
    for (size_t i = 0; i < b->n; i++)
        call_done(&b->calls[i], CTL_CALL_TIMEOUT);
    loop_stop(loop);
}

static void calls_run_chunk(ctl_t *ctl, ctl_call_t *calls, size_t n, uint64_t timeout_ms)
{
    ctl_batch_t b = {.loop = ctl->loop, .remaining = n, .calls = calls, .n = n};
    loop_timer_init(&b.guard, on_guard, &b);
    uint64_t deadline = clock_mono_ms() + timeout_ms;
    for (size_t i = 0; i < n; i++) {
        ctl_call_t *c = &calls[i];
        c->batch = &b;
        c->state = CTL_CALL_PENDING;
        c->reply = NULL;
        c->deadline = deadline;
        c->timeout_ms = timeout_ms;
        loop_timer_init(&c->retry, on_retry, c);
        c->client = bus_client_new(ctl->bus, c->endpoint);
    }
    for (size_t i = 0; i < n; i++)
        call_try(&calls[i]);
    if (b.remaining > 0) {
        loop_timer_start(ctl->loop, &b.guard, timeout_ms + CTL_GUARD_MS);
        loop_run(ctl->loop);
        loop_timer_stop(ctl->loop, &b.guard);
    }
    for (size_t i = 0; i < n; i++) {
        loop_timer_stop(ctl->loop, &calls[i].retry);
        bus_client_destroy(&calls[i].client); /* drops any late reply */
        calls[i].batch = NULL;
    }
}

void ctl_calls_run(ctl_t *ctl, ctl_call_t *calls, size_t n, uint64_t timeout_ms)
{
    /* the loop watches a bounded number of ZeroMQ sockets: ask in waves */
    for (size_t i = 0; i < n; i += CTL_PARALLEL_MAX)
        calls_run_chunk(ctl, calls + i, n - i < CTL_PARALLEL_MAX ? n - i : CTL_PARALLEL_MAX,
                        timeout_ms);
}

void ctl_calls_free(ctl_call_t *calls, size_t n)
{
    for (size_t i = 0; i < n; i++)
        codec_free(&calls[i].reply);
}

const char *ctl_reply_error(const sx_env_t *reply, unsigned *code)
{
    if (reply == NULL || reply->body_case != PB_BODY(ERROR))
        return NULL;
    const PB(Status) *st = reply->error ? reply->error->status : NULL;
    if (code)
        *code = st ? st->code : 500;
    return st && st->text && st->text[0] ? st->text : "error without a reason";
}

const char *ctl_call_problem(const ctl_t *ctl, const ctl_call_t *call, char *buf, size_t size)
{
    (void)ctl;
    switch (call->state) {
    case CTL_CALL_DOWN:
        snprintf(buf, size, "not reachable at %s", call->endpoint);
        break;
    case CTL_CALL_TIMEOUT:
        snprintf(buf, size, "no reply from %s within %.3gs", call->endpoint,
                 (double)call->timeout_ms / 1000.0);
        break;
    case CTL_CALL_OK:
        snprintf(buf, size, "answered");
        break;
    default:
        snprintf(buf, size, "no answer");
        break;
    }
    return buf;
}

int ctl_call_one(ctl_t *ctl, const char *what, const char *endpoint, sx_env_t *req, int expect_case,
                 sx_env_t **reply)
{
    *reply = NULL;
    if (endpoint == NULL)
        return ctl_fail(ctl, "%s: no bus.%s endpoint in %s", what, what, ctl->config_path);
    ctl_call_t call = {.endpoint = endpoint, .req = req};
    ctl_calls_run(ctl, &call, 1, ctl->timeout_ms);
    char why[CTL_TEXT_MAX];
    if (call.state != CTL_CALL_OK)
        return ctl_fail(ctl, "%s %s", what, ctl_call_problem(ctl, &call, why, sizeof(why)));
    const char *err = ctl_reply_error(call.reply, NULL);
    if (err) {
        sx_strlcpy(why, err, sizeof(why));
        ctl_calls_free(&call, 1);
        return ctl_fail(ctl, "%s", why);
    }
    if ((int)call.reply->body_case != expect_case) {
        sx_strlcpy(why, codec_body_name(call.reply), sizeof(why));
        ctl_calls_free(&call, 1);
        return ctl_fail(ctl, "%s sent an unexpected reply (%s)", what, why);
    }
    *reply = call.reply;
    return CTL_OK;
}

void ctl_fanout_run(ctl_t *ctl, ctl_fanout_t *fo, const conf_strlist_t *list, const sx_env_t *req)
{
    fo->n = list->n;
    fo->reqs = xcalloc(fo->n ? fo->n : 1, sizeof(*fo->reqs));
    fo->calls = xcalloc(fo->n ? fo->n : 1, sizeof(*fo->calls));
    for (size_t i = 0; i < fo->n; i++) {
        fo->reqs[i] = *req;
        fo->calls[i].endpoint = list->v[i];
        fo->calls[i].req = &fo->reqs[i];
    }
    ctl_calls_run(ctl, fo->calls, fo->n, ctl->timeout_ms);
}

void ctl_fanout_free(ctl_fanout_t *fo)
{
    if (fo->calls)
        ctl_calls_free(fo->calls, fo->n);
    free(fo->calls);
    free(fo->reqs);
    fo->calls = NULL;
    fo->reqs = NULL;
    fo->n = 0;
}

const char *ctl_call_check(const ctl_t *ctl, const ctl_call_t *call, int expect_case,
                           unsigned *code, char *buf, size_t size)
{
    if (code)
        *code = 0;
    if (call->state != CTL_CALL_OK)
        return ctl_call_problem(ctl, call, buf, size);
    const char *err = ctl_reply_error(call->reply, code);
    if (err) {
        sx_strlcpy(buf, err, size);
        return buf;
    }
    if ((int)call->reply->body_case != expect_case) {
        snprintf(buf, size, "unexpected reply (%s)", codec_body_name(call->reply));
        return buf;
    }
    return NULL;
}

const char *ctl_fanout_problem(const ctl_t *ctl, const ctl_fanout_t *fo, const char *what,
                               int expect_case, char *buf, size_t size)
{
    for (size_t i = 0; i < fo->n; i++) {
        char why[CTL_TEXT_MAX];
        if (ctl_call_check(ctl, &fo->calls[i], expect_case, NULL, why, sizeof(why)) == NULL)
            continue;
        snprintf(buf, size, "%s instance %zu: %s", what, i + 1, why);
        return buf;
    }
    return NULL;
}
