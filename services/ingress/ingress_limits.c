/*
 * ingress_limits: limits that span more than one command: connections per
 * client address (a table of counts) and commands that carry no message
 * (a client that only says NOOP, RSET or bad commands is cut off).
 * Message size, line length and recipient limits are checked where those
 * things are read.
 */
#include "ingress.h"
#include "core/alloc.h"
#include "core/log.h"

#include <stdlib.h>
#include <string.h>

#define IP_BUCKETS 4096

typedef struct ip_count {
    char ip[64];
    long long n;
    struct ip_count *next;
} ip_count_t;

static size_t ip_bucket(const char *ip)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = ip; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return (size_t)(h % IP_BUCKETS);
}

int limits_connection_open(ingress_t *ing, const char *ip)
{
    if (ing->ip_counts == NULL) {
        ing->ip_buckets = IP_BUCKETS;
        ing->ip_counts = xcalloc(ing->ip_buckets, sizeof(*ing->ip_counts));
    }
    size_t b = ip_bucket(ip);
    ip_count_t *c;
    for (c = ing->ip_counts[b]; c; c = c->next)
        if (strcmp(c->ip, ip) == 0)
            break;
    if (c == NULL) {
        c = xcalloc(1, sizeof(*c));
        sx_strlcpy(c->ip, ip, sizeof(c->ip));
        c->next = ing->ip_counts[b];
        ing->ip_counts[b] = c;
    }
    c->n++;
    return c->n > ing->conf.max_connections_per_ip ? -1 : 0;
}

void limits_connection_close(ingress_t *ing, const char *ip)
{
    if (ing->ip_counts == NULL)
        return;
    ip_count_t **link = &ing->ip_counts[ip_bucket(ip)];
    for (ip_count_t *c = *link; c; link = &c->next, c = c->next) {
        if (strcmp(c->ip, ip) != 0)
            continue;
        if (--c->n <= 0) {
            *link = c->next;
            free(c);
        }
        return;
    }
}

void limits_fini(ingress_t *ing)
{
    if (ing->ip_counts == NULL)
        return;
    for (size_t b = 0; b < ing->ip_buckets; b++) {
        ip_count_t *c = ing->ip_counts[b];
        while (c) {
            ip_count_t *next = c->next;
            free(c);
            c = next;
        }
    }
    free(ing->ip_counts);
    ing->ip_counts = NULL;
}

int limits_junk(session_t *s)
{
    if (++s->junk <= s->ing->conf.max_junk_commands)
        return 0;
    log_info("sid=%s event=junk_limit ip=%s commands=%d", s->sid, s->ip, s->junk);
    session_reply(s, "421 4.7.0 %s Too many commands without a message, closing connection",
                  s->ing->svc->relay.hostname);
    session_enter_state(s, SS_CLOSING);
    conn_close_after_flush(s->conn);
    return 1;
}
