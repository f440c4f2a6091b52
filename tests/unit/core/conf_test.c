/*
 * conf_test: declarative config tables: every field type, defaults, bounds,
 * wrong types, required and unknown settings (also inside nested groups),
 * the duration and size parsers, and that every error names the file, the
 * line and the setting, from a real file and from a string.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/conf.h"

typedef enum { MODE_NONE = 0, MODE_FAST, MODE_SAFE } mode_t_;

typedef struct svc_conf {
    long long workers;
    int enabled;
    char *name;
    conf_strlist_t hosts;
    uint64_t timeout;
    uint64_t max_size;
    char *cert;
    char *key;
    int *mode; /* custom: allocated, so release() has work to do */
} svc_conf_t;

static int mode_parse(const config_setting_t *s, void *field, char *err, size_t errlen)
{
    int **out = field;
    const char *v = "fast";
    if (s) {
        v = config_setting_get_string(s);
        if (v == NULL) {
            snprintf(err, errlen, "expected \"fast\" or \"safe\"");
            return -1;
        }
    }
    int m;
    if (strcmp(v, "fast") == 0)
        m = MODE_FAST;
    else if (strcmp(v, "safe") == 0)
        m = MODE_SAFE;
    else {
        snprintf(err, errlen, "unknown mode \"%s\"", v);
        return -1;
    }
    *out = malloc(sizeof(int));
    **out = m;
    return 0;
}

static void mode_release(void *field)
{
    int **p = field;
    free(*p);
    *p = NULL;
}

#define F(name, type, member, def, min, max, flags)                                            \
    {name, type, offsetof(svc_conf_t, member), def, min, max, flags, NULL, NULL, NULL}

static const conf_field_t svc_table[] = {
    F("workers", CONF_INT, workers, "4", 1, 64, 0),
    F("enabled", CONF_BOOL, enabled, "true", 0, 0, 0),
    F("name", CONF_STRING, name, "relay", 0, 0, 0),
    F("hosts", CONF_STRLIST, hosts, "localhost", 0, 0, 0),
    F("timeout", CONF_DURATION, timeout, "30s", 1000, 3600000, 0),
    F("max_size", CONF_SIZE, max_size, "50M", 1024, 1ll << 30, 0),
    F("tls.cert", CONF_STRING, cert, NULL, 0, 0, 0),
    F("tls.key", CONF_STRING, key, "key.pem", 0, 0, 0),
    {"mode", CONF_CUSTOM, offsetof(svc_conf_t, mode), NULL, 0, 0, 0, mode_parse, mode_release,
     NULL},
    {NULL},
};

typedef struct req_conf {
    char *secret;
    long long port;
} req_conf_t;

static const conf_field_t req_table[] = {
    {"secret", CONF_STRING, offsetof(req_conf_t, secret), NULL, 0, 0, CONF_REQUIRED, NULL, NULL,
     NULL},
    {"port", CONF_INT, offsetof(req_conf_t, port), "25", 1, 65535, 0, NULL, NULL, NULL},
    {NULL},
};

/* ---- parsers ---- */

static void test_parse_duration(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int rc;
        uint64_t ms;
    } cases[] = {
        {"250ms", 0, 250},
        {"30s", 0, 30000},
        {"5m", 0, 300000},
        {"2h", 0, 7200000},
        {"5d", 0, 432000000},
        {"10", 0, 10000}, /* bare numbers are seconds */
        {"0", 0, 0},
        {"0ms", 0, 0},
        {" 7s", 0, 7000},
        {"7 s", 0, 7000},
        {"3MS", 0, 3},
        {"1H", 0, 3600000},
        {"", -1, 0},
        {"s", -1, 0},
        {"ms", -1, 0},
        {"1.5s", -1, 0},
        {"-1s", -1, 0},
        {"+1s", -1, 0},
        {"5x", -1, 0},
        {"5 minutes", -1, 0},
        {"5s5", -1, 0},
        {"99999999999999999999", -1, 0},    /* does not fit 64 bits */
        {"18446744073709551615d", -1, 0},   /* fits, but not once scaled */
        {"18446744073709552", -1, 0},       /* seconds that overflow as ms */
        {"18446744073709551", 0, 18446744073709551000ull},
        {"213503982335d", -1, 0},
        {"213503982334d", 0, 213503982334ull * 86400000ull},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t ms = 12345;
        int rc = conf_parse_duration(cases[i].text, &ms);
        if (rc != cases[i].rc)
            fail_msg("duration \"%s\": rc %d, want %d", cases[i].text, rc, cases[i].rc);
        if (rc == 0 && ms != cases[i].ms)
            fail_msg("duration \"%s\": %llu, want %llu", cases[i].text, (unsigned long long)ms,
                     (unsigned long long)cases[i].ms);
    }
}

static void test_parse_size(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int rc;
        uint64_t bytes;
    } cases[] = {
        {"512", 0, 512},
        {"64K", 0, 65536},
        {"64k", 0, 65536},
        {"64KB", 0, 65536},
        {"50M", 0, 50ull << 20},
        {"2mb", 0, 2ull << 20},
        {"1G", 0, 1ull << 30},
        {"1gb", 0, 1ull << 30},
        {"100b", 0, 100},
        {"0", 0, 0},
        {"1T", -1, 0},
        {"K", -1, 0},
        {"-1", -1, 0},
        {"1.5M", -1, 0},
        {"", -1, 0},
        {"17179869184G", -1, 0}, /* 2^34 GiB: past 64 bits */
        {"17179869183G", 0, 17179869183ull << 30},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t b = 12345;
        int rc = conf_parse_size(cases[i].text, &b);
        if (rc != cases[i].rc)
            fail_msg("size \"%s\": rc %d, want %d", cases[i].text, rc, cases[i].rc);
        if (rc == 0 && b != cases[i].bytes)
            fail_msg("size \"%s\": %llu, want %llu", cases[i].text, (unsigned long long)b,
                     (unsigned long long)cases[i].bytes);
    }
}

/* ---- loading ---- */

static void test_defaults_when_section_absent(void **state)
{
    (void)state;
    char err[512] = "";
    conf_file_t *cf = conf_open_string("test.conf", "other = { x = 1; };\n", err, sizeof(err));
    assert_non_null(cf);
    svc_conf_t c;
    memset(&c, 0, sizeof(c));
    assert_int_equal(conf_section(cf, "svc", svc_table, &c, err, sizeof(err)), 0);
    assert_int_equal(c.workers, 4);
    assert_int_equal(c.enabled, 1);
    assert_string_equal(c.name, "relay");
    assert_int_equal(c.hosts.n, 1);
    assert_string_equal(c.hosts.v[0], "localhost");
    assert_int_equal(c.timeout, 30000);
    assert_int_equal(c.max_size, 50ull << 20);
    assert_string_equal(c.cert, ""); /* no default: empty */
    assert_string_equal(c.key, "key.pem");
    assert_non_null(c.mode);
    assert_int_equal(*c.mode, MODE_FAST);
    conf_release(svc_table, &c);
    assert_null(c.name);
    assert_null(c.mode);
    assert_int_equal(c.hosts.n, 0);
    conf_close(&cf);
    assert_null(cf);
    conf_close(&cf); /* safe twice */
}

static void test_every_type_from_file_text(void **state)
{
    (void)state;
    static const char text[] = "svc = {\n"
                               "  workers = 16;\n"
                               "  enabled = false;\n"
                               "  name = \"mx-1\";\n"
                               "  hosts = [\"a.example\", \"b.example\", \"c.example\"];\n"
                               "  timeout = \"5m\";\n"
                               "  max_size = \"64K\";\n"
                               "  tls = {\n"
                               "    cert = \"/etc/cert.pem\";\n"
                               "    key = \"/etc/key.pem\";\n"
                               "  };\n"
                               "  mode = \"safe\";\n"
                               "};\n";
    char err[512] = "";
    conf_file_t *cf = conf_open_string("test.conf", text, err, sizeof(err));
    assert_non_null(cf);
    assert_string_equal(conf_path(cf), "test.conf");
    assert_non_null(conf_group(cf, "svc"));
    assert_null(conf_group(cf, "nothere"));
    svc_conf_t c;
    memset(&c, 0, sizeof(c));
    if (conf_section(cf, "svc", svc_table, &c, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    assert_int_equal(c.workers, 16);
    assert_int_equal(c.enabled, 0);
    assert_string_equal(c.name, "mx-1");
    assert_int_equal(c.hosts.n, 3);
    assert_string_equal(c.hosts.v[0], "a.example");
    assert_string_equal(c.hosts.v[2], "c.example");
    assert_int_equal(c.timeout, 300000);
    assert_int_equal(c.max_size, 65536);
    assert_string_equal(c.cert, "/etc/cert.pem");
    assert_string_equal(c.key, "/etc/key.pem");
    assert_int_equal(*c.mode, MODE_SAFE);
    conf_release(svc_table, &c);
    conf_close(&cf);
}

static void test_alternative_forms(void **state)
{
    (void)state;
    /* a strlist may be one string or a list; durations and sizes may be integers */
    static const char text[] = "svc = {\n"
                               "  hosts = \"only.example\";\n"
                               "  timeout = 90;\n"
                               "  max_size = 4096;\n"
                               "};\n"
                               "svc2 = {\n"
                               "  hosts = (\"x\", \"y\");\n"
                               "  timeout = \"250ms\";\n"
                               "};\n"
                               "svc3 = {\n"
                               "  hosts = [];\n"
                               "};\n";
    char err[512] = "";
    conf_file_t *cf = conf_open_string("test.conf", text, err, sizeof(err));
    assert_non_null(cf);
    svc_conf_t c;
    memset(&c, 0, sizeof(c));
    assert_int_equal(conf_section(cf, "svc", svc_table, &c, err, sizeof(err)), 0);
    assert_int_equal(c.hosts.n, 1);
    assert_string_equal(c.hosts.v[0], "only.example");
    assert_int_equal(c.timeout, 90000);
    assert_int_equal(c.max_size, 4096);
    conf_release(svc_table, &c);

    memset(&c, 0, sizeof(c));
    /* 250ms is below the 1s minimum of timeout */
    assert_int_equal(conf_section(cf, "svc2", svc_table, &c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "svc2.timeout"));
    assert_null(c.name); /* a failed load releases what it filled */
    assert_int_equal(c.hosts.n, 0);

    memset(&c, 0, sizeof(c));
    assert_int_equal(conf_section(cf, "svc3", svc_table, &c, err, sizeof(err)), 0);
    assert_int_equal(c.hosts.n, 0);
    conf_release(svc_table, &c);
    conf_close(&cf);
}

/* Each bad setting, the line it is on, and the reason expected. */
static const struct {
    const char *body;   /* lines inside "svc = {" ... "};" starting at line 2 */
    int line;
    const char *setting;
    const char *reason;
} bad_cases[] = {
    {"workers = \"four\";", 2, "svc.workers", "expected an integer"},
    {"workers = 1.5;", 2, "svc.workers", "expected an integer"},
    {"workers = 0;", 2, "svc.workers", "out of range 1..64"},
    {"workers = 65;", 2, "svc.workers", "out of range 1..64"},
    {"workers = -3;", 2, "svc.workers", "out of range"},
    {"name = \"a\";\nenabled = 1;", 3, "svc.enabled", "expected true or false"},
    {"enabled = \"yes\";", 2, "svc.enabled", "expected true or false"},
    {"name = 5;", 2, "svc.name", "expected a string"},
    {"name = [\"a\"];", 2, "svc.name", "expected a string"},
    {"hosts = 5;", 2, "svc.hosts", "expected a string or a list of strings"},
    {"hosts = [1, 2];", 2, "svc.hosts", "element 1 is not a string"},
    {"hosts = (\"a\", 2);", 2, "svc.hosts", "element 2 is not a string"},
    {"timeout = true;", 2, "svc.timeout", "expected a duration"},
    {"timeout = 1.5;", 2, "svc.timeout", "expected a duration"},
    {"timeout = \"soon\";", 2, "svc.timeout", "is not a valid duration"},
    {"timeout = \"5x\";", 2, "svc.timeout", "is not a valid duration"},
    {"timeout = -5;", 2, "svc.timeout", "must not be negative"},
    {"timeout = \"2h\";", 2, "svc.timeout", "out of range 1000..3600000"},
    {"timeout = \"999ms\";", 2, "svc.timeout", "out of range"},
    /* seconds that wrap around 64 bits once turned into milliseconds */
    {"timeout = 18446744073709552L;", 2, "svc.timeout", "too large"},
    {"max_size = \"50Q\";", 2, "svc.max_size", "is not a valid size"},
    {"max_size = \"2G\";", 2, "svc.max_size", "out of range"},
    {"max_size = 100;", 2, "svc.max_size", "out of range"},
    {"max_size = -1;", 2, "svc.max_size", "must not be negative"},
    {"max_size = \"16E\";", 2, "svc.max_size", "is not a valid size"},
    {"mode = \"slow\";", 2, "svc.mode", "unknown mode \"slow\""},
    {"mode = 3;", 2, "svc.mode", "expected \"fast\" or \"safe\""},
    {"bogus = 1;", 2, "svc.bogus", "unknown setting"},
    {"workers = 2;\n\n\nworkerz = 3;", 5, "svc.workerz", "unknown setting"},
    {"tls = {\n  cert = \"c\";\n  bogus = 1;\n};", 4, "svc.tls.bogus", "unknown setting"},
    {"tls = {\n  cert = { deep = 1; };\n};", 3, "svc.tls.cert", "expected a string"},
    {"tls = {\n  sub = { deep = 1; };\n};", 3, "svc.tls.sub", "unknown setting"},
    /* a group in the table given as a plain value is not silently ignored */
    {"tls = \"on\";", 2, "svc.tls", "expected a group"},
    {"tls = [\"c\", \"k\"];", 2, "svc.tls", "expected a group"},
};

static char *make_text(const char *body)
{
    size_t n = strlen(body) + 64;
    char *t = malloc(n);
    snprintf(t, n, "svc = {\n%s\n};\n", body);
    return t;
}

static void check_error(const char *err, const char *file, int line, const char *setting,
                        const char *reason)
{
    char want[512];
    snprintf(want, sizeof(want), "%s:%d: %s: ", file, line, setting);
    if (strncmp(err, want, strlen(want)) != 0)
        fail_msg("error \"%s\" does not start with \"%s\"", err, want);
    if (strstr(err + strlen(want), reason) == NULL)
        fail_msg("error \"%s\" does not give the reason \"%s\"", err, reason);
}

static void test_errors_name_file_line_setting(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        char *text = make_text(bad_cases[i].body);
        char err[512] = "";
        conf_file_t *cf = conf_open_string("inline.conf", text, err, sizeof(err));
        if (cf == NULL)
            fail_msg("case %zu does not parse: %s", i, err);
        svc_conf_t c;
        memset(&c, 0, sizeof(c));
        int rc = conf_section(cf, "svc", svc_table, &c, err, sizeof(err));
        if (rc != -1)
            fail_msg("case %zu (%s) was accepted", i, bad_cases[i].body);
        check_error(err, "inline.conf", bad_cases[i].line, bad_cases[i].setting,
                    bad_cases[i].reason);
        /* nothing is left allocated after a refusal */
        assert_null(c.name);
        assert_null(c.cert);
        assert_null(c.key);
        assert_null(c.mode);
        assert_null(c.hosts.v);
        conf_close(&cf);
        free(text);
    }
}

static void test_required(void **state)
{
    (void)state;
    char err[512] = "";
    req_conf_t r;

    /* present */
    conf_file_t *cf =
        conf_open_string("req.conf", "auth = {\n  secret = \"s3\";\n};\n", err, sizeof(err));
    assert_non_null(cf);
    memset(&r, 0, sizeof(r));
    assert_int_equal(conf_section(cf, "auth", req_table, &r, err, sizeof(err)), 0);
    assert_string_equal(r.secret, "s3");
    assert_int_equal(r.port, 25);
    conf_release(req_table, &r);
    conf_close(&cf);

    /* missing inside a section: the section's line is named */
    cf = conf_open_string("req.conf", "# header\nauth = {\n  port = 2525;\n};\n", err,
                          sizeof(err));
    assert_non_null(cf);
    memset(&r, 0, sizeof(r));
    assert_int_equal(conf_section(cf, "auth", req_table, &r, err, sizeof(err)), -1);
    check_error(err, "req.conf", 2, "auth.secret", "required setting is missing");
    conf_close(&cf);

    /* the whole section missing: the file is named */
    cf = conf_open_string("req.conf", "other = 1;\n", err, sizeof(err));
    assert_non_null(cf);
    memset(&r, 0, sizeof(r));
    assert_int_equal(conf_section(cf, "auth", req_table, &r, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "req.conf"));
    assert_non_null(strstr(err, "auth.secret: required setting is missing"));
    conf_close(&cf);

    /* a section that is not a group */
    cf = conf_open_string("req.conf", "\n\nauth = 5;\n", err, sizeof(err));
    assert_non_null(cf);
    memset(&r, 0, sizeof(r));
    assert_int_equal(conf_section(cf, "auth", req_table, &r, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "req.conf:3: auth"));
    assert_non_null(strstr(err, "expected a group"));
    conf_close(&cf);
}

static void test_syntax_error_names_line(void **state)
{
    (void)state;
    char err[512] = "";
    conf_file_t *cf = conf_open_string("broken.conf", "a = 1;\nb = 2;\nc = = 3;\n", err,
                                       sizeof(err));
    assert_null(cf);
    assert_non_null(strstr(err, "broken.conf:3: "));
}

/* ---- from a file on disk ---- */

static char tmpdir[512];

static int setup_tmp(void **state)
{
    (void)state;
    const char *base = getenv("SENDARIX_TEST_TMP");
    if (base == NULL || *base == '\0')
        base = "/tmp";
    mkdir(base, 0700);
    snprintf(tmpdir, sizeof(tmpdir), "%s/conf_test.XXXXXX", base);
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_tmp(void **state)
{
    (void)state;
    char path[600];
    snprintf(path, sizeof(path), "%s/relay.conf", tmpdir);
    unlink(path);
    rmdir(tmpdir);
    return 0;
}

static const char *write_conf(const char *text)
{
    static char path[600];
    snprintf(path, sizeof(path), "%s/relay.conf", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_file_errors_name_the_file(void **state)
{
    (void)state;
    char err[1024] = "";
    const char *path = write_conf("svc = {\n  workers = 100;\n};\n");
    conf_file_t *cf = conf_open(path, err, sizeof(err));
    assert_non_null(cf);
    assert_string_equal(conf_path(cf), path);
    svc_conf_t c;
    memset(&c, 0, sizeof(c));
    assert_int_equal(conf_section(cf, "svc", svc_table, &c, err, sizeof(err)), -1);
    check_error(err, path, 2, "svc.workers", "out of range");
    conf_close(&cf);

    path = write_conf("svc = {\n  tls = {\n    kee = \"x\";\n  };\n};\n");
    cf = conf_open(path, err, sizeof(err));
    assert_non_null(cf);
    memset(&c, 0, sizeof(c));
    assert_int_equal(conf_section(cf, "svc", svc_table, &c, err, sizeof(err)), -1);
    check_error(err, path, 3, "svc.tls.kee", "unknown setting");
    conf_close(&cf);

    path = write_conf("svc = {\n  workers = 8;\n  mode = \"warp\";\n};\n");
    cf = conf_open(path, err, sizeof(err));
    assert_non_null(cf);
    memset(&c, 0, sizeof(c));
    assert_int_equal(conf_section(cf, "svc", svc_table, &c, err, sizeof(err)), -1);
    check_error(err, path, 3, "svc.mode", "unknown mode");
    conf_close(&cf);

    /* a syntax error in the file names the file and the line */
    path = write_conf("svc = {\n  workers = 8;\n  name = \"x\" \"y\" = 3;\n};\n");
    cf = conf_open(path, err, sizeof(err));
    assert_null(cf);
    char want[700];
    snprintf(want, sizeof(want), "%s:3: ", path);
    if (strncmp(err, want, strlen(want)) != 0)
        fail_msg("error \"%s\" does not start with \"%s\"", err, want);

    /* a file that is not there */
    char missing[700];
    snprintf(missing, sizeof(missing), "%s/nothere.conf", tmpdir);
    cf = conf_open(missing, err, sizeof(err));
    assert_null(cf);
    assert_non_null(strstr(err, missing));
    assert_non_null(strstr(err, "cannot open"));
}

static void test_file_good(void **state)
{
    (void)state;
    char err[1024] = "";
    const char *path = write_conf("# relay\nsvc = {\n  workers = 2;\n  hosts = [\"h\"];\n"
                                  "  tls = { cert = \"c.pem\"; };\n};\n");
    conf_file_t *cf = conf_open(path, err, sizeof(err));
    assert_non_null(cf);
    svc_conf_t c;
    memset(&c, 0, sizeof(c));
    if (conf_section(cf, "svc", svc_table, &c, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    assert_int_equal(c.workers, 2);
    assert_string_equal(c.cert, "c.pem");
    assert_string_equal(c.key, "key.pem");
    conf_release(svc_table, &c);

    /* conf_where names the file and line of a setting */
    const config_setting_t *g = conf_group(cf, "svc");
    assert_non_null(g);
    const config_setting_t *w = config_setting_lookup((config_setting_t *)g, "workers");
    assert_non_null(w);
    char where[700], want[700];
    snprintf(want, sizeof(want), "%s:3", path);
    assert_string_equal(conf_where(w, where, sizeof(where)), want);
    conf_close(&cf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_defaults_when_section_absent),
        cmocka_unit_test(test_every_type_from_file_text),
        cmocka_unit_test(test_alternative_forms),
        cmocka_unit_test(test_errors_name_file_line_setting),
        cmocka_unit_test(test_required),
        cmocka_unit_test(test_syntax_error_names_line),
        cmocka_unit_test(test_file_errors_name_the_file),
        cmocka_unit_test(test_file_good),
    };
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
