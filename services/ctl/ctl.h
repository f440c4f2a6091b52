/*
 * ctl: what the modules of sendarixctl share. The CLI is one command
 * table (ctl_cmd.c) over a small argument parser (ctl_args.c), a request
 * runner on the bus (ctl_bus.c), JSON and time rendering (ctl_json.c,
 * ctl_time.c) and one file per topic (status, queue show, queue
 * operations, suppression list, log, auth for credentials, tenants and
 * domains, access for allowlists and limits, sandbox, pool for router
 * endpoints, destinations and source addresses).
 * Exit status: CTL_OK, CTL_FAIL (the operation failed), CTL_USAGE.
 */
#ifndef SX_CTL_H
#define SX_CTL_H

#include "core/loop.h"
#include "ipc/bus.h"
#include "ipc/service.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#define CTL_OK    0
#define CTL_FAIL  1
#define CTL_USAGE 2

#define CTL_TIMEOUT_DEFAULT_MS 5000
#define CTL_TIMEOUT_MAX_S      3600
#define CTL_PING_TIMEOUT_MS    1000 /* status: per ping, unless --timeout is given */
#define CTL_OPTS_MAX           32
#define CTL_ARGS_MAX           1000 /* positional arguments of a command whose argument repeats */
#define CTL_TEXT_MAX           512

/* A command's option: --name, with a value or not, once or repeated. */
#define CTL_OPT_VALUE    1u
#define CTL_OPT_MULTI    2u
#define CTL_OPT_REQUIRED 4u

typedef struct ctl_opt_spec {
    const char *name; /* without the leading "--" */
    unsigned flags;
} ctl_opt_spec_t;

typedef struct ctl ctl_t;
typedef struct ctl_args ctl_args_t;
typedef int (*ctl_handler_fn)(ctl_t *ctl, const ctl_args_t *args);

typedef struct ctl_command {
    const char *name;
    const char *sub; /* NULL: the command has no subcommand */
    ctl_handler_fn fn;
    const char *arg; /* the first positional argument ("<ID>"), or NULL */
    int arg_required;
    const ctl_opt_spec_t *opts; /* terminated by {NULL}; may be NULL */
    const char *usage;          /* the options, as shown after "name sub arg arg2" */
    const char *summary;
    const char *arg2; /* a second positional argument, always required, or NULL */
    int arg_multi;    /* the first argument may repeat (`queue hold <ID>...`) */
} ctl_command_t;

typedef struct ctl_opt_value {
    const char *name;
    const char *value; /* NULL for a flag */
} ctl_opt_value_t;

struct ctl_args {
    const ctl_command_t *cmd;
    const char *name;               /* the command word as typed, once known */
    const char *arg;                /* the positional argument, or NULL */
    const char *arg2;               /* the second one, or NULL */
    const char *args[CTL_ARGS_MAX]; /* every value of a repeating argument (args[0] == arg) */
    size_t nargs;
    ctl_opt_value_t opts[CTL_OPTS_MAX];
    size_t nopts;
    int help; /* --help or -h was given */
};

struct ctl {
    /* global options */
    int json;
    uint64_t timeout_ms;
    int timeout_set;
    const char *config;
    FILE *out;
    FILE *err;
    /* once connected (ctl_open) */
    char *config_path;
    endpoints_t ep;
    int ep_loaded;
    loop_t *loop;
    bus_t *bus;
};

/* ---- ctl_cmd.c ---- */

extern const ctl_command_t ctl_commands[];
/* The whole CLI: parse, dispatch, print; returns the exit status. */
int ctl_main(int argc, char **argv, FILE *out, FILE *err);
void ctl_print_usage(FILE *f, const ctl_command_t *only);

/* ---- ctl_args.c ---- */

/*
 * Parse argv (argv[0] is the program) against table: global options
 * anywhere, then the command, its subcommand, its options and argument.
 * CTL_OK, or CTL_USAGE with the problem in why (args->cmd set when known).
 * With --help, returns CTL_OK and args->help set, skipping later checks.
 */
int ctl_parse(ctl_t *ctl, const ctl_command_t *table, int argc, char **argv, ctl_args_t *args,
              char *why, size_t whylen);
/* The last value of --name, or NULL. */
const char *ctl_opt(const ctl_args_t *args, const char *name);
int ctl_flag(const ctl_args_t *args, const char *name);
/* Every value of a repeated --name, in order; returns how many (at most max). */
size_t ctl_opt_all(const ctl_args_t *args, const char *name, const char **out, size_t max);
/* A whole number in [min, max]; -1 when text is not one. */
int ctl_parse_uint(const char *text, unsigned long min, unsigned long max, unsigned long *out);

/* ---- ctl_out.c ---- */

/* Print a failure ({"error": text} on stdout with --json, text on stderr); returns CTL_FAIL. */
int ctl_fail(ctl_t *ctl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Print a usage problem and the command's usage line; returns CTL_USAGE. */
int ctl_usage_error(ctl_t *ctl, const ctl_command_t *cmd, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Print one JSON document on stdout and release it. */
void ctl_emit(ctl_t *ctl, void *json_doc);

/* ---- ctl_bus.c ---- */

typedef enum {
    CTL_CALL_PENDING = 0,
    CTL_CALL_OK,      /* reply holds the answer (maybe an Error) */
    CTL_CALL_DOWN,    /* no connection before the deadline */
    CTL_CALL_TIMEOUT, /* sent, but no reply before the deadline */
} ctl_call_state_t;

typedef struct ctl_call {
    const char *endpoint;
    sx_env_t *req; /* the caller's; must live until ctl_calls_run returns */
    ctl_call_state_t state;
    sx_env_t *reply;     /* owned; freed by ctl_calls_free */
    uint64_t connect_ms; /* not sent within this long: down (0: the whole timeout) */
    /* private to ctl_bus.c */
    struct ctl_batch *batch;
    bus_client_t *client;
    loop_timer_t retry;
    uint64_t deadline;
    uint64_t timeout_ms;
} ctl_call_t;

/* Load the config's bus section and start the loop and bus; prints the problem on failure. */
int ctl_open(ctl_t *ctl);
void ctl_close(ctl_t *ctl);
/* Send every call in parallel and run the loop until each is answered or given up. */
void ctl_calls_run(ctl_t *ctl, ctl_call_t *calls, size_t n, uint64_t timeout_ms);
void ctl_calls_free(ctl_call_t *calls, size_t n);
/* The text of an Error reply (code in *code), or NULL when the reply is no Error. */
const char *ctl_reply_error(const sx_env_t *reply, unsigned *code);
/* Why a call has no usable answer, for messages: "not reachable", "no reply within 5s"... */
const char *ctl_call_problem(const ctl_t *ctl, const ctl_call_t *call, char *buf, size_t size);
/*
 * One request to one endpoint. CTL_OK with *reply holding a body of the
 * expected case; otherwise the failure (down, timeout, Error text,
 * unexpected body) is printed with what (e.g. "auth") and CTL_FAIL returned.
 */
int ctl_call_one(ctl_t *ctl, const char *what, const char *endpoint, sx_env_t *req, int expect_case,
                 sx_env_t **reply);

/* The same request to every endpoint of a list, in parallel. */
typedef struct ctl_fanout {
    sx_env_t *reqs; /* one envelope per call: request ids are written into it */
    ctl_call_t *calls;
    size_t n;
} ctl_fanout_t;

/* Send req (its body borrowed, not copied) to every endpoint of list and wait for each. */
void ctl_fanout_run(ctl_t *ctl, ctl_fanout_t *fo, const conf_strlist_t *list, const sx_env_t *req);
void ctl_fanout_free(ctl_fanout_t *fo);
/*
 * NULL when call answered with a body of the expected case; otherwise why
 * not, in buf ("not reachable at ...", an Error's text, "unexpected reply").
 * *code gets an Error's code (0 for other problems) when not NULL.
 */
const char *ctl_call_check(const ctl_t *ctl, const ctl_call_t *call, int expect_case,
                           unsigned *code, char *buf, size_t size);
/* The first call of fo without a usable answer, as "what instance N: why" in buf; or NULL. */
const char *ctl_fanout_problem(const ctl_t *ctl, const ctl_fanout_t *fo, const char *what,
                               int expect_case, char *buf, size_t size);

/* ---- ctl_auth.c ---- */

/*
 * Read a password from in: at most size - 2 bytes, one trailing newline
 * (LF or CRLF) stripped; refuses an empty one, NUL bytes and overlong
 * input. 0, or -1 with the reason in why.
 */
int ctl_read_password(FILE *in, char *buf, size_t size, char *why, size_t whylen);
/* The first auth instance's endpoint (it owns the records), or NULL. */
const char *ctl_auth_endpoint(const ctl_t *ctl);
/* Usage check of a name argument: 1 to 255 bytes. CTL_OK or CTL_USAGE (printed). */
int ctl_check_name(ctl_t *ctl, const ctl_args_t *args, const char *what, const char *v);

/* ---- ctl_queue_ops.c ---- */

/* The --state values a selection accepts, NULL-terminated. */
extern const char *const ctl_queue_states[];
/*
 * Fill sel from --domain, --tenant, --recipient, --older-than and --state;
 * with with_ids also from the message ids given as arguments, refusing a
 * call with neither ids nor a condition, or with both. CTL_OK or
 * CTL_USAGE (printed). sel borrows the strings of args.
 */
int ctl_queue_select(ctl_t *ctl, const ctl_args_t *args, PB(QueueSelect) * sel, int with_ids);

/* ---- ctl_dkim.c ---- */

/* [{selector, algorithm, txt_name, txt_value, created_at}] of a domain's DKIM keys. */
json_t *ctl_json_dkim(PB(DkimKey) * const *keys, size_t n);
/* The TXT records to publish, as zone file lines (or how to get keys when none). */
void ctl_dkim_print_records(FILE *f, PB(DkimKey) * const *keys, size_t n);

/* ---- topics ---- */

int ctl_cmd_status(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_queue_show(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_queue_list(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_queue_stats(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_queue_hold(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_queue_release(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_queue_retry(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_queue_delete(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_queue_bounce(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_queue_suspend(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_queue_resume(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_suppress_add(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_suppress_remove(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_suppress_list(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_suppress_check(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_log_search(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_cred_add(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_cred_list(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_cred_rotate(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_cred_revoke(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_tenant_add(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_tenant_list(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_domain_add(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_domain_list(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_domain_dkim(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_domain_verify(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_allow_add(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_allow_list(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_allow_remove(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_limit_set(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_sandbox_fail(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_pool_list(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_pool_drain(ctl_t *ctl, const ctl_args_t *args);
int ctl_cmd_pool_undrain(ctl_t *ctl, const ctl_args_t *args);

#endif
