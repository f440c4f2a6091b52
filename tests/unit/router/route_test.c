/*
 * route_test: the router's route table: a good config loads with its
 * defaults and its wire form; each refusal (no routes, duplicate names, bad
 * host:port, unknown kind or tls, credentials over plaintext, unknown
 * settings, an endpoint twice) stops the load with a message naming the
 * route, the setting and the line; matching takes the first route whose
 * conditions all hold, streams included; MX routes load without endpoints;
 * allow_private, source_pool and shaping reach the route and its wire form;
 * endpoints written smtps:// are implicit TLS, smtp:// and bare ones are
 * not, other schemes and smtps:// with tls = "none" are refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/conf.h"
#include "router_route.h"

typedef struct conf {
    route_table_t *routes;
} conf_t;

static const conf_field_t table[] = {
    {"routes", CONF_CUSTOM, offsetof(conf_t, routes), NULL, 0, 0, 0, route_table_parse,
     route_table_release, "routes"},
    {NULL},
};

/* Load "router = { <body> };"; returns the table or NULL with err filled. */
static route_table_t *load(const char *body, char *err, size_t errlen)
{
    char text[4096];
    snprintf(text, sizeof(text), "router = {\n%s\n};\n", body);
    conf_file_t *cf = conf_open_string("test.conf", text, err, errlen);
    if (cf == NULL)
        return NULL;
    conf_t c = {0};
    int rc = conf_section(cf, "router", table, &c, err, errlen);
    conf_close(&cf);
    return rc == 0 ? c.routes : NULL;
}

static void test_good_config(void **state)
{
    (void)state;
    char err[1024] = "";
    route_table_t *t =
        load("routes = (\n"
             "  { name = \"ses\"; kind = \"smarthost\"; endpoints = [ \"smtp.example.net:587\", "
             "\"[::1]:2525\", \"192.0.2.7:25\" ];\n"
             "    tls = \"required\"; auth_username = \"u\"; auth_password = \"p\"; helo = "
             "\"out.example.test\";\n"
             "    match = { sender_domains = [ \"Example.TEST\" ]; tenants = \"acme\"; }; },\n"
             "  { name = \"mx\"; kind = \"mx\"; },\n"
             "  { name = \"default\"; endpoints = \"127.0.0.1:2526\"; }\n"
             ");",
             err, sizeof(err));
    assert_non_null(t);
    assert_int_equal(route_table_count(t), 3);

    const route_t *r = route_table_get(t, 0);
    assert_string_equal(route_name(r), "ses");
    assert_int_equal(route_kind(r), ROUTE_SMARTHOST);
    assert_int_equal(route_tls(r), ROUTE_TLS_REQUIRED);
    assert_int_equal(route_endpoint_count(r), 3);
    char ep[300];
    assert_string_equal(route_endpoint_text(r, 1, ep, sizeof(ep)), "[::1]:2525");
    PB(DeliveryRoute) *pb = route_pb(r);
    assert_string_equal(pb->name, "ses");
    assert_string_equal(pb->tls, "required");
    assert_string_equal(pb->auth_username, "u");
    assert_string_equal(pb->auth_password, "p");
    assert_string_equal(pb->helo, "out.example.test");
    assert_int_equal(pb->n_endpoints, 3);
    assert_string_equal(pb->endpoints[0]->host, "smtp.example.net");
    assert_int_equal(pb->endpoints[0]->port, 587);
    assert_string_equal(pb->endpoints[1]->host, "::1");

    r = route_table_get(t, 1);
    assert_int_equal(route_kind(r), ROUTE_MX);
    assert_int_equal(route_pb(r)->kind, SENDARIX__V1__DELIVERY_ROUTE__KIND__MX);
    assert_int_equal(route_endpoint_count(r), 0);

    r = route_table_get(t, 2);
    assert_int_equal(route_tls(r), ROUTE_TLS_OPPORTUNISTIC); /* the default */
    assert_string_equal(route_pb(r)->tls, "opportunistic");
    assert_string_equal(route_pb(r)->auth_username, "");
    assert_null(route_table_get(t, 3));
    route_table_destroy(&t);
    assert_null(t);
    route_table_destroy(&t); /* twice is safe */
}

typedef struct refusal {
    const char *body;
    const char *needle1;
    const char *needle2;
} refusal_t;

static const refusal_t refusals[] = {
    {"", "at least one route", "router.routes"},
    {"routes = ();", "at least one route", "test.conf:2"},
    {"routes = { name = \"a\"; };", "expected a list", NULL},
    {"routes = (\n { name = \"a\"; endpoints = [\"127.0.0.1:25\"]; },\n"
     " { name = \"a\"; endpoints = [\"127.0.0.1:26\"]; }\n);",
     "routes[2].name", "already the name of routes[1]"},
    {"routes = (\n { name = \"a\"; endpoints = [\"127.0.0.1:25\"]; },\n"
     " { name = \"b\";\n   endpoints = [\"127.0.0.1\"]; }\n);",
     "routes[2].endpoints", "(at line 5)"},
    {"routes = ( { name = \"a\"; endpoints = [\"127.0.0.1:0\"]; } );", "routes[1].endpoints",
     "1..65535"},
    {"routes = ( { name = \"a\"; endpoints = [\"127.0.0.1:99999\"]; } );", "routes[1].endpoints",
     NULL},
    {"routes = ( { name = \"a\"; endpoints = [\"::1:25\"]; } );", "[addr]:port", NULL},
    {"routes = ( { name = \"a\"; endpoints = [\"[example.org]:25\"]; } );", "brackets", NULL},
    {"routes = ( { name = \"a\"; endpoints = [\"bad_host!:25\"]; } );",
     "neither an IP address nor a host name", NULL},
    {"routes = ( { name = \"a\"; endpoints = [\"host:25x\"]; } );", "port", NULL},
    {"routes = ( { name = \"a\"; endpoints = []; } );", "at least one endpoint", NULL},
    {"routes = ( { name = \"a\"; } );", "at least one endpoint", NULL},
    {"routes = ( { name = \"a\"; kind = \"lmtp\"; endpoints = [\"h:25\"]; } );", "routes[1].kind",
     "\"smarthost\" or \"mx\""},
    {"routes = ( { name = \"a\"; tls = \"maybe\"; endpoints = [\"h:25\"]; } );", "routes[1].tls",
     "\"none\", \"opportunistic\" or \"required\""},
    {"routes = ( { name = \"a\"; tls = \"none\"; auth_username = \"u\"; auth_password = \"p\"; "
     "endpoints = [\"h:25\"]; } );",
     "routes[1].tls", "credentials never cross plaintext"},
    {"routes = ( { name = \"a\"; auth_username = \"u\"; endpoints = [\"h:25\"]; } );",
     "auth_password", "go together"},
    {"routes = ( { endpoints = [\"h:25\"]; } );", "routes[1].name", "needs a name"},
    {"routes = ( { name = \"a\"; endpoint = [\"h:25\"]; } );", "routes[1].endpoint",
     "unknown setting"},
    {"routes = ( { name = \"a\"; endpoints = [\"h:25\"]; match = { domains = [\"x\"]; }; } );",
     "routes[1].match.domains", "unknown setting"},
    {"routes = ( { name = \"a\"; endpoints = [\"h:25\"]; "
     "match = { recipient_domains = [\"not a domain\"]; }; } );",
     "match.recipient_domains", "not a domain"},
    {"routes = ( { name = \"a\"; endpoints = [\"h:25\"]; helo = \"no spaces\"; } );",
     "routes[1].helo", NULL},
    {"routes = ( { name = \"a\"; endpoints = [\"h:25\", \"H:25\"]; } );", "routes[1].endpoints",
     "listed twice"},
    {"routes = ( { name = \"a\"; endpoints = [\"h:25\"]; allow_private = \"yes\"; } );",
     "routes[1].allow_private", "true or false"},
    {"routes = ( { name = \"a\"; endpoints = [\"h:25\"]; shaping = 1; } );", "routes[1].shaping",
     "true or false"},
    {"routes = ( { name = \"a\"; endpoints = [\"h:25\"]; source_pool = 7; } );",
     "routes[1].source_pool", "string"},
    {"routes = ( { name = \"a\"; endpoints = [\"h:25\"]; match = { streams = [\"\"]; }; } );",
     "routes[1].match.streams", "non-empty"},
    {"routes = ( { name = \"a\"; endpoints = [\"h:25\"]; match = { stream = \"x\"; }; } );",
     "routes[1].match.stream", "unknown setting"},
};

static void test_refusals(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
        char err[1024] = "";
        route_table_t *t = load(refusals[i].body, err, sizeof(err));
        if (t != NULL)
            fail_msg("case %zu loaded: %s", i, refusals[i].body);
        if (strstr(err, refusals[i].needle1) == NULL ||
            (refusals[i].needle2 && strstr(err, refusals[i].needle2) == NULL))
            fail_msg("case %zu: message \"%s\" lacks \"%s\" / \"%s\"", i, err, refusals[i].needle1,
                     refusals[i].needle2 ? refusals[i].needle2 : "");
        /* conf puts the file and line in front of every error */
        if (strncmp(err, "test.conf:", 10) != 0)
            fail_msg("case %zu: message \"%s\" does not start with the file", i, err);
    }
}

static void test_hostport(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int ok;
        const char *host;
        unsigned port;
    } cases[] = {
        {"127.0.0.1:25", 1, "127.0.0.1", 25},
        {"[2001:db8::1]:587", 1, "2001:db8::1", 587},
        {"smtp.example.net:2525", 1, "smtp.example.net", 2525},
        {"localhost:1", 1, "localhost", 1},
        {"localhost:65535", 1, "localhost", 65535},
        {"localhost:65536", 0, NULL, 0},
        {"localhost:", 0, NULL, 0},
        {":25", 0, NULL, 0},
        {"localhost", 0, NULL, 0},
        {"[::1]25", 0, NULL, 0},
        {"[::1:25", 0, NULL, 0},
        {"2001:db8::1:25", 0, NULL, 0},
        {"host name:25", 0, NULL, 0},
        {"localhost:-1", 0, NULL, 0},
        {"localhost:+25", 0, NULL, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char host[256] = "", why[256] = "";
        unsigned port = 0;
        int rc = route_parse_hostport(cases[i].text, host, sizeof(host), &port, why, sizeof(why));
        if ((rc == 0) != cases[i].ok)
            fail_msg("\"%s\": rc %d (%s)", cases[i].text, rc, why);
        if (cases[i].ok) {
            assert_string_equal(host, cases[i].host);
            assert_int_equal(port, cases[i].port);
        } else {
            assert_true(why[0] != '\0');
        }
    }
}

static void test_matching(void **state)
{
    (void)state;
    char err[1024] = "";
    route_table_t *t = load("routes = (\n"
                            "  { name = \"acme-gmail\"; endpoints = [\"h1:25\"];\n"
                            "    match = { recipient_domains = [\"gmail.com\", \"*.google.com\"]; "
                            "tenants = [\"acme\"]; }; },\n"
                            "  { name = \"from-news\"; endpoints = [\"h2:25\"];\n"
                            "    match = { sender_domains = [\"news.example.test\"]; }; },\n"
                            "  { name = \"gmail\"; endpoints = [\"h3:25\"]; match = { "
                            "recipient_domains = \"gmail.com\"; }; },\n"
                            "  { name = \"default\"; endpoints = [\"h4:25\"]; match = { }; },\n"
                            "  { name = \"never\"; endpoints = [\"h5:25\"]; }\n"
                            ");",
                            err, sizeof(err));
    if (t == NULL)
        fail_msg("%s", err);
    static const struct {
        const char *rcpt_domain, *sender, *tenant, *route;
    } cases[] = {
        {"gmail.com", "a@x.test", "acme", "acme-gmail"},
        {"GMail.COM", "a@x.test", "ACME", "acme-gmail"},            /* no case */
        {"mail.google.com", "a@x.test", "acme", "acme-gmail"},      /* wildcard below */
        {"google.com", "a@x.test", "acme", "default"},              /* not the apex */
        {"gmail.com", "a@x.test", "other", "gmail"},                /* every condition must hold */
        {"gmail.com", "a@news.example.test", "other", "from-news"}, /* first match wins */
        {"gmail.com", "a@news.example.test", "acme", "acme-gmail"},
        {"example.org", "", "", "default"}, /* null sender */
        {"example.org", "a@sub.news.example.test", "", "default"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const route_t *r = route_match(t, cases[i].rcpt_domain,
                                       route_sender_domain(cases[i].sender), cases[i].tenant, "");
        assert_non_null(r);
        if (strcmp(route_name(r), cases[i].route) != 0)
            fail_msg("case %zu (%s, %s, %s): got %s, want %s", i, cases[i].rcpt_domain,
                     cases[i].sender, cases[i].tenant, route_name(r), cases[i].route);
    }
    route_table_destroy(&t);

    /* without a catch-all, an unmatched job has no route */
    t = load("routes = ( { name = \"only\"; endpoints = [\"h:25\"]; "
             "match = { recipient_domains = [\"a.example\"]; }; } );",
             err, sizeof(err));
    assert_non_null(t);
    assert_null(route_match(t, "b.example", "", "", NULL));
    assert_non_null(route_match(t, "a.example", "", "", NULL));
    route_table_destroy(&t);
}

static void test_streams(void **state)
{
    (void)state;
    char err[1024] = "";
    route_table_t *t = load("routes = (\n"
                            "  { name = \"news\"; endpoints = [\"h1:25\"]; match = { streams = [ "
                            "\"newsletter\", \"alerts\" ]; }; },\n"
                            "  { name = \"acme-bulk\"; endpoints = [\"h2:25\"]; match = { streams "
                            "= \"bulk\"; tenants = \"acme\"; }; },\n"
                            "  { name = \"default\"; endpoints = [\"h3:25\"]; }\n"
                            ");",
                            err, sizeof(err));
    if (t == NULL)
        fail_msg("%s", err);
    static const struct {
        const char *stream, *tenant, *route;
    } cases[] = {
        {"newsletter", "x", "news"},
        {"Alerts", "x", "news"},   /* no case */
        {"alert", "x", "default"}, /* whole names only */
        {"", "x", "default"},      /* a message without the header */
        {NULL, "x", "default"},
        {"bulk", "acme", "acme-bulk"},
        {"bulk", "other", "default"}, /* every condition must hold */
        {"transactional", "acme", "default"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const route_t *r =
            route_match(t, "example.org", "example.test", cases[i].tenant, cases[i].stream);
        assert_non_null(r);
        if (strcmp(route_name(r), cases[i].route) != 0)
            fail_msg("case %zu (%s, %s): got %s, want %s", i,
                     cases[i].stream ? cases[i].stream : "(null)", cases[i].tenant, route_name(r),
                     cases[i].route);
    }
    route_table_destroy(&t);
}

static void test_route_settings(void **state)
{
    (void)state;
    char err[1024] = "";
    route_table_t *t = load(
        "routes = (\n"
        "  { name = \"direct\"; kind = \"mx\"; allow_private = true; source_pool = \"main\"; },\n"
        "  { name = \"relay\"; endpoints = [\"127.0.0.2:25\", \"[::1]:2525\"]; shaping = false; }\n"
        ");",
        err, sizeof(err));
    if (t == NULL)
        fail_msg("%s", err);
    const route_t *mx = route_table_get(t, 0), *relay = route_table_get(t, 1);
    assert_int_equal(route_index(mx), 0);
    assert_int_equal(route_index(relay), 1);
    assert_string_equal(route_source_pool(mx), "main");
    assert_int_equal(route_shaping(mx), 1); /* the default */
    assert_true(route_pb(mx)->allow_private);
    assert_string_equal(route_pb(mx)->tls_reason, "route");
    assert_string_equal(route_source_pool(relay), "");
    assert_int_equal(route_shaping(relay), 0);
    assert_false(route_pb(relay)->allow_private);
    /* endpoints carry their "host:port" name, which health and operators use */
    assert_string_equal(route_pb(relay)->endpoints[0]->name, "127.0.0.2:25");
    assert_string_equal(route_endpoint_name(relay, 1), "[::1]:2525");
    assert_string_equal(route_endpoint_host(relay, 1), "::1");
    assert_null(route_endpoint_name(relay, 2));
    assert_int_equal(route_endpoint_find(relay, "[::1]:2525"), 1);
    assert_int_equal(route_endpoint_find(relay, "127.0.0.2:26"), -1);
    route_table_destroy(&t);
}

/* Endpoint schemes: smtps:// is implicit TLS, smtp:// and a bare host:port are not. */
static void test_endpoint_schemes(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int ok;
        const char *host;
        unsigned port;
        int implicit_tls;
        const char *why; /* part of the reason when refused */
    } cases[] = {
        {"smtps://smtp.example.net:465", 1, "smtp.example.net", 465, 1, NULL},
        {"SMTPS://smtp.example.net:465", 1, "smtp.example.net", 465, 1, NULL},
        {"smtps://[2001:db8::1]:465", 1, "2001:db8::1", 465, 1, NULL},
        {"smtps://127.0.0.1:2465", 1, "127.0.0.1", 2465, 1, NULL},
        {"smtp://smtp.example.net:587", 1, "smtp.example.net", 587, 0, NULL},
        {"Smtp://smtp.example.net:587", 1, "smtp.example.net", 587, 0, NULL},
        {"smtp.example.net:465", 1, "smtp.example.net", 465, 0, NULL}, /* bare: as it was */
        {"lmtp://smtp.example.net:24", 0, NULL, 0, 0, "unknown scheme \"lmtp\""},
        {"https://smtp.example.net:443", 0, NULL, 0, 0, "unknown scheme \"https\""},
        {"smtp+tls://smtp.example.net:465", 0, NULL, 0, 0, "unknown scheme \"smtp+tls\""},
        {"://smtp.example.net:465", 0, NULL, 0, 0, "unknown scheme \"\""},
        {"smtps://smtp.example.net", 0, NULL, 0, 0, "host:port"},
        {"smtps://smtp.example.net:465/", 0, NULL, 0, 0, "port"},
        {"smtps://", 0, NULL, 0, 0, "host:port"},
        {"smtps://smtps://h:465", 0, NULL, 0, 0, NULL},
        {"smtps:/h:465", 0, NULL, 0, 0, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char host[256] = "", why[400] = "";
        unsigned port = 0;
        int implicit_tls = -1;
        int rc = route_parse_endpoint(cases[i].text, host, sizeof(host), &port, &implicit_tls, why,
                                      sizeof(why));
        if ((rc == 0) != cases[i].ok)
            fail_msg("\"%s\": rc %d (%s)", cases[i].text, rc, why);
        if (cases[i].ok) {
            assert_string_equal(host, cases[i].host);
            assert_int_equal(port, cases[i].port);
            if (implicit_tls != cases[i].implicit_tls)
                fail_msg("\"%s\": implicit_tls %d", cases[i].text, implicit_tls);
        } else if (why[0] == '\0' || (cases[i].why && strstr(why, cases[i].why) == NULL)) {
            fail_msg("\"%s\": reason \"%s\" lacks \"%s\"", cases[i].text, why,
                     cases[i].why ? cases[i].why : "");
        }
    }
}

/* The wire form and the names health and operators use, for each form of endpoint. */
static void test_implicit_tls_routes(void **state)
{
    (void)state;
    char err[1024] = "";
    route_table_t *t =
        load("routes = (\n"
             "  { name = \"sendgrid\"; endpoints = [ \"smtps://smtp.sendgrid.net:465\", "
             "\"smtp://smtp.sendgrid.net:587\", \"smtp.sendgrid.net:2525\" ];\n"
             "    tls = \"required\"; auth_username = \"apikey\"; auth_password = \"secret\"; },\n"
             "  { name = \"opp\"; endpoints = \"smtps://127.0.0.1:2465\"; }\n"
             ");",
             err, sizeof(err));
    if (t == NULL)
        fail_msg("%s", err);
    const route_t *r = route_table_get(t, 0);
    PB(DeliveryRoute) *pb = route_pb(r);
    assert_int_equal(pb->n_endpoints, 3);
    assert_true(pb->endpoints[0]->implicit_tls);
    assert_false(pb->endpoints[1]->implicit_tls);
    assert_false(pb->endpoints[2]->implicit_tls);
    assert_true(route_endpoint_implicit_tls(r, 0));
    assert_false(route_endpoint_implicit_tls(r, 1));
    assert_false(route_endpoint_implicit_tls(r, 3)); /* past the end */
    /* the scheme is not part of the name: drain and health speak "host:port" */
    assert_string_equal(pb->endpoints[0]->name, "smtp.sendgrid.net:465");
    assert_string_equal(pb->endpoints[0]->host, "smtp.sendgrid.net");
    assert_int_equal(pb->endpoints[0]->port, 465);
    assert_string_equal(route_endpoint_name(r, 1), "smtp.sendgrid.net:587");
    assert_int_equal(route_endpoint_find(r, "smtp.sendgrid.net:465"), 0);
    /* implicit TLS goes with the default, opportunistic, policy */
    r = route_table_get(t, 1);
    assert_int_equal(route_tls(r), ROUTE_TLS_OPPORTUNISTIC);
    assert_true(route_pb(r)->endpoints[0]->implicit_tls);
    route_table_destroy(&t);

    static const refusal_t bad[] = {
        /* TLS is the point of smtps://: "none" is a contradiction */
        {"routes = ( { name = \"a\"; tls = \"none\"; endpoints = [ \"h:25\", "
         "\"smtps://h:465\" ]; } );",
         "routes[1].tls", "smtps:// endpoint h:465"},
        {"routes = ( { name = \"a\"; endpoints = [ \"submission://h:587\" ]; } );",
         "routes[1].endpoints", "unknown scheme \"submission\""},
        /* one endpoint written twice, with and without the scheme */
        {"routes = ( { name = \"a\"; endpoints = [ \"smtps://h:465\", \"h:465\" ]; } );",
         "routes[1].endpoints", "listed twice"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        t = load(bad[i].body, err, sizeof(err));
        if (t != NULL)
            fail_msg("case %zu loaded: %s", i, bad[i].body);
        if (strstr(err, bad[i].needle1) == NULL || strstr(err, bad[i].needle2) == NULL)
            fail_msg("case %zu: message \"%s\" lacks \"%s\" / \"%s\"", i, err, bad[i].needle1,
                     bad[i].needle2);
    }
    /* plaintext-only endpoints with tls = "none" still load */
    t = load("routes = ( { name = \"a\"; tls = \"none\"; endpoints = [ \"smtp://h:25\" ]; } );",
             err, sizeof(err));
    if (t == NULL)
        fail_msg("%s", err);
    assert_false(route_endpoint_implicit_tls(route_table_get(t, 0), 0));
    route_table_destroy(&t);
}

static void test_sender_domain(void **state)
{
    (void)state;
    assert_string_equal(route_sender_domain("a@b.example"), "b.example");
    assert_string_equal(route_sender_domain("\"a@x\"@b.example"), "b.example");
    assert_string_equal(route_sender_domain(""), "");
    assert_string_equal(route_sender_domain(NULL), "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_config),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_hostport),
        cmocka_unit_test(test_matching),
        cmocka_unit_test(test_sender_domain),
        cmocka_unit_test(test_streams),
        cmocka_unit_test(test_route_settings),
        cmocka_unit_test(test_endpoint_schemes),
        cmocka_unit_test(test_implicit_tls_routes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
