/*
 * ctl_cmd: the command table of sendarixctl, its usage text and the
 * dispatcher. A command is a row: name, subcommand, handler, argument,
 * options and one line of help; adding one is adding a row and a handler
 * in the file of its topic. Nothing here talks to the bus.
 */
#include "ctl.h"
#include "ctl_json.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define USAGE_GLOBAL "[--config FILE] [--json] [--timeout SECONDS]"
/* the messages of an operator action: ids, or conditions that all hold (one at least) */
#define SELECT_USAGE                                                                               \
    "[--domain D] [--tenant T] [--older-than DURATION] [--state active|held|deferred] "            \
    "[--recipient R]"

static int cmd_help(ctl_t *ctl, const ctl_args_t *args);

static const ctl_opt_spec_t opts_log_search[] = {
    {"id", CTL_OPT_VALUE},
    {"type", CTL_OPT_VALUE},
    {"recipient", CTL_OPT_VALUE},
    {"since", CTL_OPT_VALUE},
    {"until", CTL_OPT_VALUE},
    {"limit", CTL_OPT_VALUE},
    {NULL, 0},
};
static const ctl_opt_spec_t opts_cred_add[] = {
    {"tenant", CTL_OPT_VALUE | CTL_OPT_REQUIRED},
    {"password-stdin", 0},
    {"password", CTL_OPT_VALUE},
    {"env", CTL_OPT_VALUE},
    {"domain", CTL_OPT_VALUE | CTL_OPT_MULTI},
    {NULL, 0},
};
static const ctl_opt_spec_t opts_cred_rotate[] = {
    {"password-stdin", 0},
    {"password", CTL_OPT_VALUE},
    {"grace", CTL_OPT_VALUE},
    {NULL, 0},
};
static const ctl_opt_spec_t opts_domain_add[] = {
    {"tenant", CTL_OPT_VALUE | CTL_OPT_REQUIRED},
    {"verified", 0},
    {NULL, 0},
};
static const ctl_opt_spec_t opts_domain_dkim[] = {
    {"rotate", 0},
    {NULL, 0},
};
static const ctl_opt_spec_t opts_limit_set[] = {
    {"tenant", CTL_OPT_VALUE},
    {"cred", CTL_OPT_VALUE},
    {"per-minute", CTL_OPT_VALUE},
    {"per-day", CTL_OPT_VALUE},
    {NULL, 0},
};
static const ctl_opt_spec_t opts_tenant[] = {
    {"tenant", CTL_OPT_VALUE},
    {NULL, 0},
};
static const ctl_opt_spec_t opts_queue_list[] = {
    {"domain", CTL_OPT_VALUE},
    {"tenant", CTL_OPT_VALUE},
    {"recipient", CTL_OPT_VALUE},
    {"older-than", CTL_OPT_VALUE},
    {"state", CTL_OPT_VALUE},
    {"limit", CTL_OPT_VALUE},
    {NULL, 0},
};
static const ctl_opt_spec_t opts_queue_action[] = {
    {"domain", CTL_OPT_VALUE},     {"tenant", CTL_OPT_VALUE}, {"recipient", CTL_OPT_VALUE},
    {"older-than", CTL_OPT_VALUE}, {"state", CTL_OPT_VALUE},  {NULL, 0},
};
static const ctl_opt_spec_t opts_queue_suspend[] = {
    {"for", CTL_OPT_VALUE},
    {NULL, 0},
};
static const ctl_opt_spec_t opts_suppress_add[] = {
    {"tenant", CTL_OPT_VALUE | CTL_OPT_REQUIRED},
    {"reason", CTL_OPT_VALUE},
    {"ttl", CTL_OPT_VALUE},
    {NULL, 0},
};
static const ctl_opt_spec_t opts_suppress_one[] = {
    {"tenant", CTL_OPT_VALUE | CTL_OPT_REQUIRED},
    {NULL, 0},
};
static const ctl_opt_spec_t opts_suppress_list[] = {
    {"tenant", CTL_OPT_VALUE},
    {"limit", CTL_OPT_VALUE},
    {NULL, 0},
};
static const ctl_opt_spec_t opts_sandbox_fail[] = {
    {"code", CTL_OPT_VALUE | CTL_OPT_REQUIRED},
    {"seconds", CTL_OPT_VALUE},
    {"text", CTL_OPT_VALUE},
    {NULL, 0},
};
static const ctl_opt_spec_t opts_pool_drain[] = {
    {"route", CTL_OPT_VALUE},
    {NULL, 0},
};

const ctl_command_t ctl_commands[] = {
    {"status", NULL, ctl_cmd_status, NULL, 0, NULL, "",
     "ping every service on the bus; exit 1 unless all are up", NULL, 0},
    {"queue", "show", ctl_cmd_queue_show, "<ID>", 1, NULL, "",
     "a message's envelope, recipients (with DSN NOTIFY and ORCPT) and whether it is held, "
     "from the queue instance holding it",
     NULL, 0},
    {"queue", "list", ctl_cmd_queue_list, NULL, 0, opts_queue_list,
     "[--domain D] [--tenant T] [--recipient R] [--older-than DURATION] "
     "[--state active|held|deferred] [--limit N]",
     "messages in every queue instance meeting all the conditions, printed oldest first, at most "
     "--limit (1..10000, default 100) with the count of all that match; durations 30s, 5m, 2h, 3d",
     NULL, 0},
    {"queue", "stats", ctl_cmd_queue_stats, NULL, 0, NULL, "",
     "queue depth by state, the oldest message's age, and each destination domain with its last "
     "error",
     NULL, 0},
    {"queue", "hold", ctl_cmd_queue_hold, "[<ID>...]", 0, opts_queue_action, SELECT_USAGE,
     "stop trying messages until released; name them by id or by conditions", NULL, 1},
    {"queue", "release", ctl_cmd_queue_release, "[<ID>...]", 0, opts_queue_action, SELECT_USAGE,
     "try held messages again", NULL, 1},
    {"queue", "retry", ctl_cmd_queue_retry, "[<ID>...]", 0, opts_queue_action, SELECT_USAGE,
     "try the waiting recipients now", NULL, 1},
    {"queue", "delete", ctl_cmd_queue_delete, "[<ID>...]", 0, opts_queue_action, SELECT_USAGE,
     "remove messages without telling the sender", NULL, 1},
    {"queue", "bounce", ctl_cmd_queue_bounce, "[<ID>...]", 0, opts_queue_action, SELECT_USAGE,
     "fail the waiting recipients now, with a bounce report to the sender", NULL, 1},
    {"queue", "suspend", ctl_cmd_queue_suspend, "<DOMAIN>", 1, opts_queue_suspend,
     "[--for DURATION]", "stop deliveries to a domain, until resumed or for a while", NULL, 0},
    {"queue", "resume", ctl_cmd_queue_resume, "<DOMAIN>", 1, NULL, "",
     "deliver to a suspended domain again, at once", NULL, 0},
    {"suppress", "add", ctl_cmd_suppress_add, "<ADDRESS>", 1, opts_suppress_add,
     "--tenant T [--reason TEXT] [--ttl DURATION]",
     "stop a tenant's mail to an address (until removed, or for --ttl)", NULL, 0},
    {"suppress", "remove", ctl_cmd_suppress_remove, "<ADDRESS>", 1, opts_suppress_one, "--tenant T",
     "let a tenant's mail reach a suppressed address again", NULL, 0},
    {"suppress", "list", ctl_cmd_suppress_list, NULL, 0, opts_suppress_list,
     "[--tenant T] [--limit N]", "suppressed addresses (limit 1..100000, default 1000)", NULL, 0},
    {"suppress", "check", ctl_cmd_suppress_check, "<ADDRESS>", 1, opts_suppress_one, "--tenant T",
     "whether a tenant's mail to an address is suppressed, and why (exit 0 either "
     "way)",
     NULL, 0},
    {"log", "search", ctl_cmd_log_search, NULL, 0, opts_log_search,
     "[--id ID] [--type T] [--recipient R] [--since ISO] [--until ISO] [--limit N]",
     "events in time order (limit 1..10000, default 100)", NULL, 0},
    {"cred", "add", ctl_cmd_cred_add, "<USER>", 1, opts_cred_add,
     "--tenant T (--password-stdin | --password P) [--env production|staging|development] "
     "[--domain D]...",
     "add a login; --password-stdin reads one line", NULL, 0},
    {"cred", "list", ctl_cmd_cred_list, NULL, 0, opts_tenant, "[--tenant T]",
     "list logins (never their passwords)", NULL, 0},
    {"cred", "rotate", ctl_cmd_cred_rotate, "<USER>", 1, opts_cred_rotate,
     "(--password-stdin | --password P) [--grace DURATION]",
     "add a new password; the older ones keep working for --grace (default 24h; 30s, 5m, 2h, "
     "1d; 0 stops them now)",
     NULL, 0},
    {"cred", "revoke", ctl_cmd_cred_revoke, "<USER>", 1, NULL, "",
     "stop every password of a login at once, for good", NULL, 0},
    {"tenant", "add", ctl_cmd_tenant_add, "<NAME>", 1, NULL, "", "add a tenant", NULL, 0},
    {"tenant", "list", ctl_cmd_tenant_list, NULL, 0, NULL, "", "list tenants and their domains",
     NULL, 0},
    {"domain", "add", ctl_cmd_domain_add, "<DOMAIN>", 1, opts_domain_add, "--tenant T [--verified]",
     "add a sending domain to a tenant; logins may send from it once verified (--verified: you "
     "vouch for it; again with --verified marks an existing one)",
     NULL, 0},
    {"domain", "list", ctl_cmd_domain_list, NULL, 0, opts_tenant, "[--tenant T]",
     "list sending domains and whether they are verified", NULL, 0},
    {"domain", "dkim", ctl_cmd_domain_dkim, "<DOMAIN>", 1, opts_domain_dkim, "[--rotate]",
     "a domain's DKIM keys and the DNS TXT records to publish (made if it has none); "
     "--rotate makes new keys with the next selectors, which sign from then on",
     NULL, 0},
    {"domain", "verify", ctl_cmd_domain_verify, "<DOMAIN>", 1, NULL, "",
     "have auth look up the domain's DKIM records in DNS; verified when every key matches "
     "(exit 1 with the reason when not)",
     NULL, 0},
    {"allow", "add", ctl_cmd_allow_add, "<USER>", 1, NULL, "",
     "let a login in only from the networks on its list (CIDR or one address, IPv4 or IPv6)",
     "<CIDR>", 0},
    {"allow", "list", ctl_cmd_allow_list, "<USER>", 1, NULL, "",
     "the networks a login may come from (none listed: any)", NULL, 0},
    {"allow", "remove", ctl_cmd_allow_remove, "<USER>", 1, NULL, "",
     "take a network off a login's list", "<CIDR>", 0},
    {"limit", "set", ctl_cmd_limit_set, NULL, 0, opts_limit_set,
     "(--tenant T | --cred U) [--per-minute N] [--per-day N]",
     "messages a tenant or a login may send; 0 removes a limit, an option not given keeps its "
     "value",
     NULL, 0},
    {"sandbox", "fail", ctl_cmd_sandbox_fail, NULL, 0, opts_sandbox_fail,
     "--code C --seconds S [--text T]",
     "make the sandbox refuse connections with code C for S seconds; --code 0 clears", NULL, 0},
    {"pool", "list", ctl_cmd_pool_list, NULL, 0, NULL, "",
     "each router's endpoints (up, down, drained, failures, next probe), destinations (rate, "
     "connections, pauses) and source addresses (warm-up, deprioritized)",
     NULL, 0},
    {"pool", "drain", ctl_cmd_pool_drain, "<HOST:PORT>", 1, opts_pool_drain, "[--route NAME]",
     "stop using an endpoint (of one route, or of every route listing it)", NULL, 0},
    {"pool", "undrain", ctl_cmd_pool_undrain, "<HOST:PORT>", 1, opts_pool_drain, "[--route NAME]",
     "use a drained endpoint again", NULL, 0},
    {"help", NULL, cmd_help, "[COMMAND]", 0, NULL, "", "this text", NULL, 0},
    {NULL},
};

static void print_line(FILE *f, const ctl_command_t *c, int indent)
{
    char head[256];
    snprintf(head, sizeof(head), "%s%s%s%s%s%s%s", c->name, c->sub ? " " : "", c->sub ? c->sub : "",
             c->arg ? " " : "", c->arg ? c->arg : "", c->arg2 ? " " : "", c->arg2 ? c->arg2 : "");
    if (indent) {
        fprintf(f, "  %s%s%s\n", head, c->usage[0] ? " " : "", c->usage);
        fprintf(f, "      %s\n", c->summary);
    } else {
        fprintf(f, "usage: sendarixctl %s%s%s\n", head, c->usage[0] ? " " : "", c->usage);
    }
}

void ctl_print_usage(FILE *f, const ctl_command_t *only)
{
    if (only) {
        print_line(f, only, 0);
        return;
    }
    fprintf(f, "usage: sendarixctl " USAGE_GLOBAL " COMMAND ...\n"
               "\n"
               "Operate a Sendarix relay over its bus. The config (--config FILE, else\n"
               "$SENDARIX_CONFIG, else var/sendarix.conf) says where each service listens.\n"
               "Options may stand anywhere: --json prints one JSON document; --timeout\n"
               "bounds each request (default 5 s; status pings wait 1 s unless given).\n"
               "Exit status: 0 success, 1 failed operation, 2 usage error.\n"
               "\n"
               "commands:\n");
    for (const ctl_command_t *c = ctl_commands; c->name; c++)
        print_line(f, c, 1);
}

/* Usage of every row of one command name ("cred": add and list). */
static void print_named(FILE *f, const char *name)
{
    for (const ctl_command_t *c = ctl_commands; c->name; c++)
        if (strcmp(c->name, name) == 0)
            print_line(f, c, 0);
}

static int print_help(ctl_t *ctl, const char *name)
{
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    if (mem == NULL)
        return ctl_fail(ctl, "out of memory");
    if (name)
        print_named(mem, name);
    else
        ctl_print_usage(mem, NULL);
    fclose(mem);
    if (ctl->json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "usage", json_string(text));
        ctl_emit(ctl, doc);
    } else {
        fputs(text, ctl->out);
    }
    free(text);
    return CTL_OK;
}

static int cmd_help(ctl_t *ctl, const ctl_args_t *args)
{
    if (args->arg) {
        for (const ctl_command_t *c = ctl_commands; c->name; c++)
            if (strcmp(c->name, args->arg) == 0)
                return print_help(ctl, args->arg);
        return ctl_usage_error(ctl, args->cmd, "unknown command '%s'", args->arg);
    }
    return print_help(ctl, NULL);
}

int ctl_main(int argc, char **argv, FILE *out, FILE *err)
{
    ctl_t ctl = {.out = out, .err = err, .timeout_ms = CTL_TIMEOUT_DEFAULT_MS};
    ctl_args_t args;
    char why[CTL_TEXT_MAX];
    int rc = ctl_parse(&ctl, ctl_commands, argc, argv, &args, why, sizeof(why));
    if (rc != CTL_OK && args.cmd == NULL && args.name) {
        /* the command is known but not which of its subcommands: show them all */
        if (ctl.json) {
            json_t *doc = json_object();
            json_object_set_new(doc, "error", ctl_json_str(why));
            ctl_emit(&ctl, doc);
        }
        fprintf(err, "sendarixctl: %s\n", why);
        print_named(err, args.name);
        return CTL_USAGE;
    }
    if (rc != CTL_OK)
        return ctl_usage_error(&ctl, args.cmd, "%s", why);
    if (args.help)
        return print_help(&ctl, args.name);
    rc = args.cmd->fn(&ctl, &args);
    ctl_close(&ctl);
    return rc;
}
