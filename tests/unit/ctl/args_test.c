/*
 * ctl_args and ctl_cmd: the command line. Global options anywhere, the
 * command table, subcommands, options with "--x v" and "--x=v", repeated
 * options and arguments (`queue hold <ID>...`), "--", the selection of the
 * queue operations, and every usage error (exit 2) with its sentence; help
 * exits 0; a valid command with an unreadable config fails with 1.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ctl.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ARGS 32

/* Split a command line on spaces into argv (argv[0] = "sendarixctl"). */
static int split(char *line, char **argv)
{
    int argc = 0;
    argv[argc++] = "sendarixctl";
    for (char *tok = strtok(line, " "); tok && argc < MAX_ARGS - 1; tok = strtok(NULL, " "))
        argv[argc++] = tok;
    argv[argc] = NULL;
    return argc;
}

typedef struct parsed {
    ctl_t ctl;
    ctl_args_t args;
    char why[CTL_TEXT_MAX];
    int rc;
    char line[512];
    char *argv[MAX_ARGS];
} parsed_t;

static parsed_t *parse(const char *text)
{
    parsed_t *p = calloc(1, sizeof(*p));
    snprintf(p->line, sizeof(p->line), "%s", text);
    int argc = split(p->line, p->argv);
    p->ctl.timeout_ms = CTL_TIMEOUT_DEFAULT_MS;
    p->rc = ctl_parse(&p->ctl, ctl_commands, argc, p->argv, &p->args, p->why, sizeof(p->why));
    return p;
}

static void test_globals_anywhere(void **state)
{
    (void)state;
    static const char *lines[] = {
        "--json --config /x.conf --timeout 3 status",
        "status --json --config /x.conf --timeout 3",
        "--timeout=3 status --config=/x.conf --json",
        "--json status --timeout 3 --config /x.conf",
    };
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        parsed_t *p = parse(lines[i]);
        if (p->rc != CTL_OK)
            fail_msg("%s: %s", lines[i], p->why);
        assert_int_equal(p->ctl.json, 1);
        assert_string_equal(p->ctl.config, "/x.conf");
        assert_int_equal(p->ctl.timeout_ms, 3000);
        assert_int_equal(p->ctl.timeout_set, 1);
        assert_string_equal(p->args.cmd->name, "status");
        free(p);
    }
    parsed_t *p = parse("status");
    assert_int_equal(p->rc, CTL_OK);
    assert_int_equal(p->ctl.json, 0);
    assert_null(p->ctl.config);
    assert_int_equal(p->ctl.timeout_ms, CTL_TIMEOUT_DEFAULT_MS);
    assert_int_equal(p->ctl.timeout_set, 0);
    free(p);
    p = parse("--timeout 0.25 status");
    assert_int_equal(p->rc, CTL_OK);
    assert_int_equal(p->ctl.timeout_ms, 250);
    free(p);
}

static void test_commands_and_options(void **state)
{
    (void)state;
    parsed_t *p = parse("cred add alice --json --tenant acme --domain a.test --password-stdin "
                        "--domain=b.test --env staging");
    assert_int_equal(p->rc, CTL_OK);
    assert_string_equal(p->args.cmd->name, "cred");
    assert_string_equal(p->args.cmd->sub, "add");
    assert_string_equal(p->args.arg, "alice");
    assert_string_equal(ctl_opt(&p->args, "tenant"), "acme");
    assert_string_equal(ctl_opt(&p->args, "env"), "staging");
    assert_true(ctl_flag(&p->args, "password-stdin"));
    assert_false(ctl_flag(&p->args, "password"));
    const char *d[4];
    assert_int_equal(ctl_opt_all(&p->args, "domain", d, 4), 2);
    assert_string_equal(d[0], "a.test");
    assert_string_equal(d[1], "b.test");
    assert_int_equal(p->ctl.json, 1);
    free(p);

    /* an option's value is taken as is, even when it looks like a global option */
    p = parse("sandbox fail --code 421 --seconds 30 --text --json");
    assert_int_equal(p->rc, CTL_OK);
    assert_string_equal(ctl_opt(&p->args, "text"), "--json");
    assert_int_equal(p->ctl.json, 0);
    free(p);

    /* "--" ends the options: an id that starts with a dash */
    p = parse("queue show -- -odd-id");
    assert_int_equal(p->rc, CTL_OK);
    assert_string_equal(p->args.arg, "-odd-id");
    free(p);

    /* two arguments */
    p = parse("allow add alice --json 2001:db8::/32");
    assert_int_equal(p->rc, CTL_OK);
    assert_string_equal(p->args.cmd->name, "allow");
    assert_string_equal(p->args.arg, "alice");
    assert_string_equal(p->args.arg2, "2001:db8::/32");
    free(p);
    p = parse("domain add a.test --verified --tenant acme");
    assert_int_equal(p->rc, CTL_OK);
    assert_true(ctl_flag(&p->args, "verified"));
    free(p);

    p = parse("log search --id abc --limit 5 --since 2024-01-01");
    assert_int_equal(p->rc, CTL_OK);
    assert_string_equal(ctl_opt(&p->args, "id"), "abc");
    assert_string_equal(ctl_opt(&p->args, "limit"), "5");
    free(p);
}

static void test_usage_errors(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        const char *why; /* a part of the sentence */
    } cases[] = {
        {"", "no command"},
        {"--json", "no command"},
        {"frobnicate", "unknown command 'frobnicate'"},
        {"queue", "needs a subcommand"},
        {"queue drop x", "unknown subcommand 'queue drop'"},
        {"queue show", "missing argument <ID>"},
        {"queue show a b", "unexpected argument 'b'"},
        {"status extra", "unexpected argument 'extra'"},
        {"status --bogus", "unknown option '--bogus' for 'status'"},
        {"--bogus status", "unknown option '--bogus'"},
        {"status -x", "unknown option '-x'"},
        {"cred add bob", "missing option --tenant"},
        {"cred add --tenant t", "missing argument <USER>"},
        {"domain add x.test", "missing option --tenant"},
        {"sandbox fail --seconds 3", "missing option --code"},
        {"status --config", "needs a value"},
        {"status --timeout", "needs a value"},
        {"status --timeout abc", "--timeout needs a number"},
        {"status --timeout -1", "--timeout needs a number"},
        {"status --timeout 0", "--timeout needs a number"},
        {"status --json=yes", "takes no value"},
        {"cred list --tenant", "needs a value"},
        {"allow add alice", "missing argument <CIDR>"},
        {"allow add", "missing argument <USER>"},
        {"allow remove alice", "missing argument <CIDR>"},
        {"allow list alice 10.0.0.0/8", "unexpected argument '10.0.0.0/8'"},
        {"allow add alice 10.0.0.0/8 extra", "unexpected argument 'extra'"},
        {"cred revoke", "missing argument <USER>"},
        {"cred rotate", "missing argument <USER>"},
        {"domain add x.test --tenant t --verified=yes", "takes no value"},
        {"limit", "needs a subcommand"},
        {"allow", "needs a subcommand: add, list, remove"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        parsed_t *p = parse(cases[i].line);
        if (p->rc != CTL_USAGE)
            fail_msg("'%s' parsed (rc %d)", cases[i].line, p->rc);
        if (strstr(p->why, cases[i].why) == NULL)
            fail_msg("'%s': \"%s\" does not say \"%s\"", cases[i].line, p->why, cases[i].why);
        free(p);
    }
}

static void test_help_flag(void **state)
{
    (void)state;
    parsed_t *p = parse("queue --help");
    assert_int_equal(p->rc, CTL_OK);
    assert_true(p->args.help);
    assert_string_equal(p->args.name, "queue");
    free(p);
    p = parse("-h");
    assert_int_equal(p->rc, CTL_OK);
    assert_true(p->args.help);
    free(p);
}

/* Queue operations: repeated ids, conditions, durations, and the selection they make. */
static void test_queue_selection(void **state)
{
    (void)state;
    parsed_t *p = parse("queue hold id1 id2 --json -- id3");
    assert_int_equal(p->rc, CTL_OK);
    assert_string_equal(p->args.cmd->sub, "hold");
    assert_int_equal(p->args.nargs, 3);
    assert_string_equal(p->args.arg, "id1");
    assert_string_equal(p->args.args[2], "id3");
    PB(QueueSelect) sel = PB_INIT(QUEUE_SELECT);
    p->ctl.out = p->ctl.err = stderr;
    assert_int_equal(ctl_queue_select(&p->ctl, &p->args, &sel, 1), CTL_OK);
    assert_int_equal(sel.n_message_ids, 3);
    assert_string_equal(sel.message_ids[1], "id2");
    assert_string_equal(sel.domain, "");
    free(p);

    p = parse("queue list --domain a.example --tenant demo --state deferred --older-than 2h "
              "--recipient x@a.example --limit 5");
    assert_int_equal(p->rc, CTL_OK);
    PB(QueueSelect) sel2 = PB_INIT(QUEUE_SELECT);
    assert_int_equal(ctl_queue_select(&p->ctl, &p->args, &sel2, 0), CTL_OK);
    assert_string_equal(sel2.domain, "a.example");
    assert_string_equal(sel2.tenant, "demo");
    assert_string_equal(sel2.state, "deferred");
    assert_string_equal(sel2.recipient, "x@a.example");
    assert_int_equal(sel2.older_than_s, 7200);
    assert_int_equal(sel2.n_message_ids, 0);
    free(p);

    /* conditions alone select for an action; several conditions all hold */
    p = parse("queue bounce --older-than 3d --state held");
    assert_int_equal(p->rc, CTL_OK);
    PB(QueueSelect) sel3 = PB_INIT(QUEUE_SELECT);
    assert_int_equal(ctl_queue_select(&p->ctl, &p->args, &sel3, 1), CTL_OK);
    assert_int_equal(sel3.older_than_s, 3 * 86400);
    assert_string_equal(sel3.state, "held");
    free(p);

    p = parse("queue suspend slow.example --for 30m");
    assert_int_equal(p->rc, CTL_OK);
    assert_string_equal(p->args.arg, "slow.example");
    assert_string_equal(ctl_opt(&p->args, "for"), "30m");
    free(p);
    p = parse("suppress add a@b.example --tenant demo --reason complaint --ttl 3d");
    assert_int_equal(p->rc, CTL_OK);
    assert_string_equal(ctl_opt(&p->args, "reason"), "complaint");
    free(p);

    static const struct {
        const char *line;
        const char *why;
    } cases[] = {
        {"queue show a b", "unexpected argument 'b'"},
        {"queue suspend", "missing argument <DOMAIN>"},
        {"queue resume x.example --for 5m", "unknown option '--for'"},
        {"queue stats extra", "unexpected argument 'extra'"},
        {"queue list id1", "unexpected argument 'id1'"},
        {"queue list --domain", "needs a value"},
        {"suppress add a@b.example", "missing option --tenant"},
        {"suppress check a@b.example", "missing option --tenant"},
        {"suppress remove --tenant t", "missing argument <ADDRESS>"},
        {"suppress list a@b.example", "unexpected argument"},
        {"suppress", "needs a subcommand: add, remove, list, check"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        p = parse(cases[i].line);
        if (p->rc != CTL_USAGE)
            fail_msg("'%s' parsed (rc %d)", cases[i].line, p->rc);
        if (strstr(p->why, cases[i].why) == NULL)
            fail_msg("'%s': \"%s\" does not say \"%s\"", cases[i].line, p->why, cases[i].why);
        free(p);
    }
}

/* ---- ctl_main: exit status and what is printed where ---- */

typedef struct run {
    int rc;
    char *out;
    char *err;
} run_t;

static run_t run_main(const char *text)
{
    char line[512];
    char *argv[MAX_ARGS];
    snprintf(line, sizeof(line), "%s", text);
    int argc = split(line, argv);
    run_t r = {0};
    size_t ol, el;
    FILE *out = open_memstream(&r.out, &ol);
    FILE *err = open_memstream(&r.err, &el);
    r.rc = ctl_main(argc, argv, out, err);
    fclose(out);
    fclose(err);
    return r;
}

static void run_free(run_t *r)
{
    free(r->out);
    free(r->err);
}

static void test_main_exit_codes(void **state)
{
    (void)state;
    run_t r = run_main("frobnicate");
    assert_int_equal(r.rc, 2);
    assert_string_equal(r.out, "");
    assert_non_null(strstr(r.err, "unknown command 'frobnicate'"));
    run_free(&r);

    r = run_main("queue show");
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "missing argument <ID>"));
    assert_non_null(strstr(r.err, "usage: sendarixctl queue show <ID>"));
    run_free(&r);

    /* with --json, the usage error is also one JSON document on stdout */
    r = run_main("--json cred add bob --password x");
    assert_int_equal(r.rc, 2);
    json_error_t jerr;
    json_t *doc = json_loads(r.out, 0, &jerr);
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "error")),
                        "missing option --tenant");
    json_decref(doc);
    run_free(&r);

    r = run_main("cred add bob --tenant t");
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "--password-stdin or --password"));
    run_free(&r);

    r = run_main("cred add bob --tenant t --password a --password-stdin");
    assert_int_equal(r.rc, 2);
    run_free(&r);

    r = run_main("cred add bob --tenant t --password x --env moon");
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "--env must be"));
    run_free(&r);

    static const char *bad_values[] = {
        "log search --limit 0",
        "log search --limit 10001",
        "log search --since yesterday",
        "log search --since 2024-02-02 --until 2024-02-01",
        "sandbox fail --code 250 --seconds 5",
        "sandbox fail --code 421",
        "sandbox fail --code 421 --seconds 0",
        "sandbox fail --code abc --seconds 3",
        "help nosuch",
        "cred rotate bob",
        "cred rotate bob --password a --password-stdin",
        "cred rotate bob --password x --grace 1w",
        "cred rotate bob --password x --grace 31d",
        "cred rotate bob --password x --grace -5m",
        "cred rotate bob --password x --grace 5mm",
        "limit set --per-minute 5",
        "limit set --tenant a --cred b --per-minute 5",
        "limit set --tenant a",
        "limit set --tenant a --per-minute five",
        "limit set --cred b --per-day -1",
        "limit set --cred b --per-day 4294967296",
        "queue hold",
        "queue release --limit 5",
        "queue retry id1 --domain a.example",
        "queue delete --state done",
        "queue bounce --older-than 2w",
        "queue bounce --older-than 0",
        "queue hold --domain a@b.example",
        "queue list --state queued",
        "queue list --limit 0",
        "queue list --limit 10001",
        "queue list --older-than soon",
        "queue list --tenant=",
        "queue suspend a@b.example",
        "queue suspend x.example --for 0",
        "queue suspend x.example --for 366d",
        "suppress add nobody --tenant t",
        "suppress add a@b.example --tenant t --ttl 1y",
        "suppress add a@b.example --tenant t --reason=",
        "suppress add a@b.example --tenant=",
        "suppress check a<b@c.example --tenant t",
        "suppress list --limit 0",
        "suppress list --limit 100001",
    };
    for (size_t i = 0; i < sizeof(bad_values) / sizeof(bad_values[0]); i++) {
        r = run_main(bad_values[i]);
        if (r.rc != 2)
            fail_msg("'%s' exited %d: %s", bad_values[i], r.rc, r.err);
        run_free(&r);
    }

    /* an action naming no message is refused before anything is asked, saying why */
    r = run_main("--json queue delete --config /nonexistent/sendarix.conf");
    assert_int_equal(r.rc, 2);
    doc = json_loads(r.out, 0, &jerr);
    assert_non_null(doc);
    assert_non_null(strstr(json_string_value(json_object_get(doc, "error")), "name the messages"));
    json_decref(doc);
    assert_non_null(strstr(r.err, "usage: sendarixctl queue delete [<ID>...]"));
    run_free(&r);
    r = run_main("queue hold m1 --tenant demo");
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "not both"));
    run_free(&r);
    r = run_main("queue list --state done");
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "--state must be active, held or deferred"));
    run_free(&r);
}

static void test_main_help(void **state)
{
    (void)state;
    run_t r = run_main("help");
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "usage: sendarixctl"));
    assert_non_null(strstr(r.out, "log search"));
    assert_non_null(strstr(r.out, "sandbox fail"));
    run_free(&r);

    r = run_main("--help");
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "commands:"));
    run_free(&r);

    r = run_main("cred --help");
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "cred add <USER>"));
    assert_non_null(strstr(r.out, "cred list"));
    assert_null(strstr(r.out, "tenant add"));
    run_free(&r);

    r = run_main("--json help queue");
    assert_int_equal(r.rc, 0);
    json_error_t jerr;
    json_t *doc = json_loads(r.out, 0, &jerr);
    assert_non_null(doc);
    assert_non_null(strstr(json_string_value(json_object_get(doc, "usage")), "queue show"));
    json_decref(doc);
    run_free(&r);
}

static void test_main_config_missing(void **state)
{
    (void)state;
    run_t r = run_main("--json status --config /nonexistent/sendarix.conf");
    assert_int_equal(r.rc, 1);
    json_error_t jerr;
    json_t *doc = json_loads(r.out, 0, &jerr);
    assert_non_null(doc);
    assert_non_null(
        strstr(json_string_value(json_object_get(doc, "error")), "/nonexistent/sendarix.conf"));
    json_decref(doc);
    assert_non_null(strstr(r.err, "cannot open"));
    run_free(&r);

    /* $SENDARIX_CONFIG is used when --config is absent */
    setenv("SENDARIX_CONFIG", "/nonexistent/from-env.conf", 1);
    r = run_main("tenant list");
    assert_int_equal(r.rc, 1);
    assert_non_null(strstr(r.err, "/nonexistent/from-env.conf"));
    run_free(&r);
    unsetenv("SENDARIX_CONFIG");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_globals_anywhere),    cmocka_unit_test(test_commands_and_options),
        cmocka_unit_test(test_usage_errors),        cmocka_unit_test(test_help_flag),
        cmocka_unit_test(test_main_exit_codes),     cmocka_unit_test(test_main_help),
        cmocka_unit_test(test_main_config_missing), cmocka_unit_test(test_queue_selection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
