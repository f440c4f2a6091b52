/*
 * ctl_args: the command line of sendarixctl. Global options (--config,
 * --json, --timeout, --help) may stand anywhere; the first word is the
 * command, the next its subcommand when it has some; then come the
 * command's own options and its arguments (one, two for `allow add`, or
 * any number for `queue hold <ID>...`). "--name=value" and
 * "--name value" both work; "--" ends the options. Every problem is a
 * usage error with a sentence naming it. It does not run anything.
 */
#include "ctl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct global_opt {
    const char *name;
    int takes_value;
} global_opt_t;

static const global_opt_t globals[] = {
    {"config", 1}, {"json", 0}, {"timeout", 1}, {"help", 0}, {NULL, 0},
};

int ctl_parse_uint(const char *text, unsigned long min, unsigned long max, unsigned long *out)
{
    if (text == NULL || *text < '0' || *text > '9')
        return -1;
    char *end;
    errno = 0;
    unsigned long v = strtoul(text, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_timeout(const char *text, uint64_t *ms)
{
    if (text == NULL || !((*text >= '0' && *text <= '9') || *text == '.'))
        return -1;
    char *end;
    errno = 0;
    double s = strtod(text, &end);
    if (errno || *end || s <= 0 || s > CTL_TIMEOUT_MAX_S)
        return -1;
    *ms = (uint64_t)(s * 1000.0 + 0.5);
    if (*ms == 0)
        *ms = 1;
    return 0;
}

static const global_opt_t *find_global(const char *name, size_t len)
{
    for (const global_opt_t *g = globals; g->name; g++)
        if (strlen(g->name) == len && strncmp(g->name, name, len) == 0)
            return g;
    return NULL;
}

static const ctl_opt_spec_t *find_opt(const ctl_command_t *cmd, const char *name, size_t len)
{
    if (cmd == NULL || cmd->opts == NULL)
        return NULL;
    for (const ctl_opt_spec_t *o = cmd->opts; o->name; o++)
        if (strlen(o->name) == len && strncmp(o->name, name, len) == 0)
            return o;
    return NULL;
}

static int has_command(const ctl_command_t *table, const char *name)
{
    for (const ctl_command_t *c = table; c->name; c++)
        if (strcmp(c->name, name) == 0)
            return 1;
    return 0;
}

/* The entry for name alone (no subcommands), or NULL. */
static const ctl_command_t *find_plain(const ctl_command_t *table, const char *name)
{
    for (const ctl_command_t *c = table; c->name; c++)
        if (strcmp(c->name, name) == 0 && c->sub == NULL)
            return c;
    return NULL;
}

static const ctl_command_t *find_sub(const ctl_command_t *table, const char *name, const char *sub)
{
    for (const ctl_command_t *c = table; c->name; c++)
        if (c->sub && strcmp(c->name, name) == 0 && strcmp(c->sub, sub) == 0)
            return c;
    return NULL;
}

/* "add, list": the subcommands of name, for messages. */
static void list_subs(const ctl_command_t *table, const char *name, char *buf, size_t size)
{
    size_t len = 0;
    buf[0] = '\0';
    for (const ctl_command_t *c = table; c->name; c++) {
        if (c->sub == NULL || strcmp(c->name, name) != 0)
            continue;
        int n = snprintf(buf + len, size - len, "%s%s", len ? ", " : "", c->sub);
        if (n < 0 || (size_t)n >= size - len)
            return;
        len += (size_t)n;
    }
}

static int set_global(ctl_t *ctl, ctl_args_t *args, const global_opt_t *g, const char *value,
                      char *why, size_t whylen)
{
    if (strcmp(g->name, "json") == 0) {
        ctl->json = 1;
    } else if (strcmp(g->name, "help") == 0) {
        args->help = 1;
    } else if (strcmp(g->name, "config") == 0) {
        if (*value == '\0') {
            snprintf(why, whylen, "--config needs a file name");
            return CTL_USAGE;
        }
        ctl->config = value;
    } else if (strcmp(g->name, "timeout") == 0) {
        if (parse_timeout(value, &ctl->timeout_ms) < 0) {
            snprintf(why, whylen, "--timeout needs a number of seconds from 0.001 to %d, not '%s'",
                     CTL_TIMEOUT_MAX_S, value);
            return CTL_USAGE;
        }
        ctl->timeout_set = 1;
    }
    return CTL_OK;
}

static int add_opt(ctl_args_t *args, const ctl_opt_spec_t *o, const char *value, char *why,
                   size_t whylen)
{
    if (args->nopts == CTL_OPTS_MAX) {
        snprintf(why, whylen, "too many options");
        return CTL_USAGE;
    }
    args->opts[args->nopts].name = o->name;
    args->opts[args->nopts].value = value;
    args->nopts++;
    return CTL_OK;
}

/* Resolve a positional word: command, subcommand, or the argument. */
static int positional(const ctl_command_t *table, ctl_args_t *args, const char *w, char *why,
                      size_t whylen)
{
    if (args->name == NULL) {
        if (!has_command(table, w)) {
            snprintf(why, whylen, "unknown command '%s'", w);
            return CTL_USAGE;
        }
        args->name = w;
        args->cmd = find_plain(table, w);
        return CTL_OK;
    }
    if (args->cmd == NULL) {
        args->cmd = find_sub(table, args->name, w);
        if (args->cmd == NULL) {
            char subs[128];
            list_subs(table, args->name, subs, sizeof(subs));
            snprintf(why, whylen, "unknown subcommand '%s %s' (try: %s)", args->name, w, subs);
            return CTL_USAGE;
        }
        return CTL_OK;
    }
    if (args->cmd->arg != NULL && (args->arg == NULL || args->cmd->arg_multi)) {
        if (args->nargs == CTL_ARGS_MAX) {
            snprintf(why, whylen, "at most %d arguments %s", CTL_ARGS_MAX, args->cmd->arg);
            return CTL_USAGE;
        }
        args->args[args->nargs++] = w;
        args->arg = args->args[0];
        return CTL_OK;
    }
    if (args->cmd->arg2 != NULL && args->arg2 == NULL) {
        args->arg2 = w;
        return CTL_OK;
    }
    snprintf(why, whylen, "unexpected argument '%s'", w);
    return CTL_USAGE;
}

/* Check what only the whole line can tell: a command, its argument, its required options. */
static int finish(const ctl_command_t *table, ctl_args_t *args, char *why, size_t whylen)
{
    if (args->name == NULL) {
        snprintf(why, whylen, "no command given");
        return CTL_USAGE;
    }
    if (args->cmd == NULL) {
        char subs[128];
        list_subs(table, args->name, subs, sizeof(subs));
        snprintf(why, whylen, "'%s' needs a subcommand: %s", args->name, subs);
        return CTL_USAGE;
    }
    const ctl_command_t *c = args->cmd;
    if (c->arg && (c->arg_required || c->arg2) && args->arg == NULL) {
        snprintf(why, whylen, "missing argument %s", c->arg);
        return CTL_USAGE;
    }
    if (c->arg2 && args->arg2 == NULL) {
        snprintf(why, whylen, "missing argument %s", c->arg2);
        return CTL_USAGE;
    }
    for (const ctl_opt_spec_t *o = c->opts; o && o->name; o++) {
        if ((o->flags & CTL_OPT_REQUIRED) && ctl_opt(args, o->name) == NULL) {
            snprintf(why, whylen, "missing option --%s", o->name);
            return CTL_USAGE;
        }
    }
    return CTL_OK;
}

int ctl_parse(ctl_t *ctl, const ctl_command_t *table, int argc, char **argv, ctl_args_t *args,
              char *why, size_t whylen)
{
    memset(args, 0, sizeof(*args));
    why[0] = '\0';
    int end_of_opts = 0;
    for (int i = 1; i < argc; i++) {
        const char *w = argv[i];
        if (!end_of_opts && strcmp(w, "--") == 0) {
            end_of_opts = 1;
            continue;
        }
        if (end_of_opts || w[0] != '-' || w[1] == '\0') {
            int rc = positional(table, args, w, why, whylen);
            if (rc != CTL_OK)
                return rc;
            continue;
        }
        if (strcmp(w, "-h") == 0) {
            args->help = 1;
            continue;
        }
        if (w[1] != '-') {
            snprintf(why, whylen, "unknown option '%s'", w);
            return CTL_USAGE;
        }
        const char *name = w + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const global_opt_t *g = find_global(name, len);
        const ctl_opt_spec_t *o = g ? NULL : find_opt(args->cmd, name, len);
        if (g == NULL && o == NULL) {
            if (args->cmd)
                snprintf(why, whylen, "unknown option '--%.*s' for '%s%s%s'", (int)len, name,
                         args->cmd->name, args->cmd->sub ? " " : "",
                         args->cmd->sub ? args->cmd->sub : "");
            else
                snprintf(why, whylen, "unknown option '--%.*s'", (int)len, name);
            return CTL_USAGE;
        }
        int wants_value = g ? g->takes_value : (o->flags & CTL_OPT_VALUE) != 0;
        const char *value = NULL;
        if (wants_value) {
            if (eq) {
                value = eq + 1;
            } else if (i + 1 < argc) {
                value = argv[++i];
            } else {
                snprintf(why, whylen, "option '--%.*s' needs a value", (int)len, name);
                return CTL_USAGE;
            }
        } else if (eq) {
            snprintf(why, whylen, "option '--%.*s' takes no value", (int)len, name);
            return CTL_USAGE;
        }
        int rc =
            g ? set_global(ctl, args, g, value, why, whylen) : add_opt(args, o, value, why, whylen);
        if (rc != CTL_OK)
            return rc;
    }
    if (args->help)
        return CTL_OK;
    return finish(table, args, why, whylen);
}

const char *ctl_opt(const ctl_args_t *args, const char *name)
{
    const char *v = NULL;
    for (size_t i = 0; i < args->nopts; i++)
        if (strcmp(args->opts[i].name, name) == 0)
            v = args->opts[i].value ? args->opts[i].value : "";
    return v;
}

int ctl_flag(const ctl_args_t *args, const char *name)
{
    return ctl_opt(args, name) != NULL;
}

size_t ctl_opt_all(const ctl_args_t *args, const char *name, const char **out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < args->nopts && n < max; i++)
        if (strcmp(args->opts[i].name, name) == 0)
            out[n++] = args->opts[i].value;
    return n;
}
