/*
 * sandbox_control: SandboxFailSet over the bus.
 */
#include "sandbox_control.h"
#include "core/alloc.h"
#include "core/log.h"

#include <stdlib.h>

struct sandbox_control {
    bus_server_t *bus_srv;
    sandbox_server_t *srv;
};

static void fail_set(sandbox_control_t *ctl, bus_server_t *bs, bus_msg_t *msg)
{
    const PB(SandboxFailSet) *req = msg->env->sandbox_fail_set;
    uint64_t id = msg->env->request_id;
    if (req == NULL) {
        bus_server_error(bs, &msg->peer, id, 400, "5.5.4", "SandboxFailSet without a body");
        return;
    }
    char err[256];
    uint64_t until = 0;
    if (sandbox_server_fail_set(ctl->srv, req->code, req->seconds, req->text, &until, err,
                                sizeof(err)) < 0) {
        log_info("event=control_refused request=%llu from=%s body=sandbox_fail_set reason=\"%s\"",
                 (unsigned long long)id, msg->env->sender ? msg->env->sender : "", err);
        bus_server_error(bs, &msg->peer, id, 400, "5.5.4", "%s", err);
        return;
    }
    PB(SandboxFailSetReply) rep = PB_INIT(SANDBOX_FAIL_SET_REPLY);
    rep.code = req->code;
    rep.until_ms = until;
    sx_env_t env = PB_INIT(ENVELOPE);
    env.body_case = PB_BODY(SANDBOX_FAIL_SET_REPLY);
    env.sandbox_fail_set_reply = &rep;
    bus_server_send(bs, &msg->peer, id, &env, NULL);
}

static void on_request(bus_server_t *bs, bus_msg_t *msg, void *arg)
{
    sandbox_control_t *ctl = arg;
    switch (msg->env->body_case) {
    case PB_BODY(SANDBOX_FAIL_SET):
        fail_set(ctl, bs, msg);
        return;
    default:
        log_info("event=control_refused request=%llu body=%s reason=unsupported",
                 (unsigned long long)msg->env->request_id, codec_body_name(msg->env));
        bus_server_error(bs, &msg->peer, msg->env->request_id, 400, "5.5.1",
                         "the sandbox does not answer %s", codec_body_name(msg->env));
        return;
    }
}

sandbox_control_t *sandbox_control_new(bus_t *bus, const char *endpoint, sandbox_server_t *srv)
{
    sandbox_control_t *ctl = xcalloc(1, sizeof(*ctl));
    ctl->srv = srv;
    ctl->bus_srv = bus_server_new(bus, endpoint, on_request, ctl);
    if (ctl->bus_srv == NULL) {
        free(ctl);
        return NULL;
    }
    return ctl;
}

void sandbox_control_destroy(sandbox_control_t **p)
{
    sandbox_control_t *ctl = *p;
    if (ctl == NULL)
        return;
    bus_server_destroy(&ctl->bus_srv);
    free(ctl);
    *p = NULL;
}
