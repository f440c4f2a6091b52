/*
 * router_route: the route table of the router section: parsing the
 * `routes` list (a CONF_CUSTOM field), refusing what cannot work, and
 * matching a job to the first route whose conditions all hold (tenant,
 * sender domain, recipient domain, stream). An endpoint is "host:port" or
 * "smtp://host:port" (STARTTLS or plaintext, per the route's tls) or
 * "smtps://host:port" (TLS from the first byte). Each route carries its
 * DeliveryRoute message, built once at start; a task copies it shallowly to
 * reorder endpoints and add a source address. It does not pick workers,
 * track endpoint health or talk to the bus.
 */
#ifndef SX_ROUTER_ROUTE_H
#define SX_ROUTER_ROUTE_H

#include "ipc/proto.h"

#include <libconfig.h>
#include <stddef.h>

#define ROUTE_MAX          256 /* routes in one table */
#define ROUTE_ENDPOINT_MAX 32  /* endpoints of one route */
#define ROUTE_NAME_MAX     64
#define ROUTE_EP_NAME_MAX  300 /* "host:port" of an endpoint */

typedef enum { ROUTE_SMARTHOST = 0, ROUTE_MX } route_kind_t;
typedef enum { ROUTE_TLS_NONE = 0, ROUTE_TLS_OPPORTUNISTIC, ROUTE_TLS_REQUIRED } route_tls_t;

typedef struct route route_t;
typedef struct route_table route_table_t;

/*
 * conf parser for `router.routes` (conf_field_t.parse): field is a
 * route_table_t *. Errors read "routes[2].endpoints: ... (at file:line)",
 * routes counted from 1.
 */
int route_table_parse(const config_setting_t *s, void *field, char *err, size_t errlen);
/* conf release for the same field. */
void route_table_release(void *field);
void route_table_destroy(route_table_t **t);

size_t route_table_count(const route_table_t *t);
const route_t *route_table_get(const route_table_t *t, size_t i);

/*
 * The first route whose match holds for a job: recipient domain, the
 * sender's domain (may be "" for the null sender), tenant and stream (the
 * X-Sendarix-Stream header; "" or NULL when the message has none). NULL:
 * none.
 */
const route_t *route_match(const route_table_t *t, const char *rcpt_domain,
                           const char *sender_domain, const char *tenant, const char *stream);

/* The domain part of an address ("" when there is none). */
const char *route_sender_domain(const char *mail_from);

const char *route_name(const route_t *r);
/* Position in its table, from 0. */
size_t route_index(const route_t *r);
route_kind_t route_kind(const route_t *r);
route_tls_t route_tls(const route_t *r);
/* The source pool the route names ("" when none). */
const char *route_source_pool(const route_t *r);
/* 0 when the route opts out of per-provider shaping (`shaping = false`). */
int route_shaping(const route_t *r);
size_t route_endpoint_count(const route_t *r);
/* Endpoint i as "host:port" ("[v6]:port"), for logs. */
const char *route_endpoint_text(const route_t *r, size_t i, char *buf, size_t size);
/* Endpoint i's name, "host:port" as above (owned by the route); NULL past the end. */
const char *route_endpoint_name(const route_t *r, size_t i);
/* Endpoint i's bare host or IP; NULL past the end. */
const char *route_endpoint_host(const route_t *r, size_t i);
/* 1 when endpoint i speaks TLS from the first byte (written "smtps://host:port"). */
int route_endpoint_implicit_tls(const route_t *r, size_t i);
/* The endpoint named "host:port" (case-insensitive host), or -1. */
int route_endpoint_find(const route_t *r, const char *name);
/* The wire form handed to delivery workers (owned by the route). */
PB(DeliveryRoute) * route_pb(const route_t *r);

/* Parse "host:port" / "[v6]:port"; 0 or -1 with a reason. host gets the bare name/IP. */
int route_parse_hostport(const char *text, char *host, size_t hostlen, unsigned *port, char *why,
                         size_t whylen);
/*
 * Parse a route endpoint: "smtps://host:port" (implicit TLS, *implicit_tls
 * set), "smtp://host:port" or a bare "host:port" (STARTTLS or plaintext, as
 * the route's tls says); the scheme is case-insensitive, any other is
 * refused. 0 or -1 with a reason.
 */
int route_parse_endpoint(const char *text, char *host, size_t hostlen, unsigned *port,
                         int *implicit_tls, char *why, size_t whylen);

#endif
