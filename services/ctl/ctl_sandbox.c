/*
 * ctl_sandbox: `sendarixctl sandbox fail --code C --seconds S [--text T]`.
 * Tells every sandbox instance to refuse new connections with code C for
 * S seconds (failover drills, retry tests); --code 0 clears it. Every
 * instance must confirm, or the command fails.
 */
#include "ctl.h"
#include "core/alloc.h"
#include "ctl_json.h"
#include "core/isotime.h"

#include <stdlib.h>
#include <string.h>

#define SANDBOX_SECONDS_MAX 86400
#define SANDBOX_TEXT_MAX    200

int ctl_cmd_sandbox_fail(ctl_t *ctl, const ctl_args_t *args)
{
    unsigned long code, seconds = 0;
    const char *v = ctl_opt(args, "code"), *text = ctl_opt(args, "text");
    if (ctl_parse_uint(v, 0, 599, &code) < 0 || (code != 0 && code < 400))
        return ctl_usage_error(ctl, args->cmd,
                               "--code must be 0 or a code from 400 to 599, not '%s'", v);
    v = ctl_opt(args, "seconds");
    if (code != 0 && v == NULL)
        return ctl_usage_error(ctl, args->cmd, "missing option --seconds");
    if (v && ctl_parse_uint(v, code ? 1 : 0, SANDBOX_SECONDS_MAX, &seconds) < 0)
        return ctl_usage_error(ctl, args->cmd, "--seconds must be a number from 1 to %d, not '%s'",
                               SANDBOX_SECONDS_MAX, v);
    if (text && strlen(text) > SANDBOX_TEXT_MAX)
        return ctl_usage_error(ctl, args->cmd, "--text is longer than %d characters",
                               SANDBOX_TEXT_MAX);
    if (ctl_open(ctl) < 0)
        return CTL_FAIL;
    size_t n = ctl->ep.sandbox.n;
    if (n == 0)
        return ctl_fail(ctl, "no bus.sandbox endpoint in %s", ctl->config_path);

    PB(SandboxFailSet) set = PB_INIT(SANDBOX_FAIL_SET);
    set.code = (uint32_t)code;
    set.seconds = (uint32_t)seconds;
    set.text = (char *)(text ? text : "");
    sx_env_t *reqs = xcalloc(n, sizeof(*reqs));
    ctl_call_t *calls = xcalloc(n, sizeof(*calls));
    for (size_t i = 0; i < n; i++) {
        sx_env_t init = PB_INIT(ENVELOPE);
        reqs[i] = init;
        reqs[i].body_case = PB_BODY(SANDBOX_FAIL_SET);
        reqs[i].sandbox_fail_set = &set;
        calls[i].endpoint = ctl->ep.sandbox.v[i];
        calls[i].req = &reqs[i];
    }
    ctl_calls_run(ctl, calls, n, ctl->timeout_ms);

    int rc = CTL_OK;
    char problem[CTL_TEXT_MAX] = "";
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++) {
        ctl_call_t *c = &calls[i];
        char why[CTL_TEXT_MAX];
        const char *err = c->state == CTL_CALL_OK ? ctl_reply_error(c->reply, NULL) : NULL;
        if (c->state == CTL_CALL_OK && c->reply->body_case == PB_BODY(SANDBOX_FAIL_SET_REPLY) &&
            c->reply->sandbox_fail_set_reply) {
            const PB(SandboxFailSetReply) *r = c->reply->sandbox_fail_set_reply;
            json_t *o = json_object();
            char inst[24];
            snprintf(inst, sizeof(inst), "%zu", i + 1);
            json_object_set_new(o, "instance", json_string(inst));
            json_object_set_new(o, "code", json_integer(r->code));
            json_object_set_new(o, "until", ctl_json_time(r->code ? r->until_ms : 0, 0));
            json_array_append_new(list, o);
        } else if (problem[0] == '\0') {
            snprintf(problem, sizeof(problem), "sandbox instance %zu: %s", i + 1,
                     err                       ? err
                     : c->state == CTL_CALL_OK ? "unexpected reply"
                                               : ctl_call_problem(ctl, c, why, sizeof(why)));
        }
    }
    if (problem[0]) {
        json_decref(list);
        rc = ctl_fail(ctl, "%s", problem);
    } else if (ctl->json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "code", json_integer((json_int_t)code));
        json_object_set_new(doc, "seconds", json_integer((json_int_t)seconds));
        json_object_set_new(doc, "sandboxes", list);
        ctl_emit(ctl, doc);
    } else {
        size_t i;
        json_t *o;
        json_array_foreach(list, i, o)
        {
            const char *until = json_string_value(json_object_get(o, "until"));
            if (json_integer_value(json_object_get(o, "code")) == 0)
                fprintf(ctl->out, "sandbox %s: failures cleared\n",
                        json_string_value(json_object_get(o, "instance")));
            else
                fprintf(ctl->out, "sandbox %s: refusing with %lld until %s\n",
                        json_string_value(json_object_get(o, "instance")),
                        (long long)json_integer_value(json_object_get(o, "code")),
                        until ? until : "-");
        }
        json_decref(list);
    }
    ctl_calls_free(calls, n);
    free(calls);
    free(reqs);
    return rc;
}
