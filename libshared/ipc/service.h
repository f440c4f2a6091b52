/*
 * service: what every Sendarix daemon does the same way at start. It parses
 * the command line (--config FILE, --instance N), reads the shared sections
 * of the one config file (relay, bus, log), sets up logging, the loop, the
 * bus and the event publisher, and stops the loop on SIGTERM/SIGINT. The
 * service's own section is read by the service with conf_section().
 */
#ifndef SX_SERVICE_H
#define SX_SERVICE_H

#include "bus.h"
#include "core/conf.h"
#include "core/loop.h"

#include <signal.h>

/* Where every service's bus endpoints are: one list per service (instances). */
typedef struct endpoints {
    conf_strlist_t ingress;
    conf_strlist_t auth;
    conf_strlist_t queue;
    conf_strlist_t router;
    conf_strlist_t router_workers;
    conf_strlist_t delivery;
    conf_strlist_t events;
    conf_strlist_t events_ingest;
    conf_strlist_t sandbox;
} endpoints_t;

typedef struct relay_conf {
    char *hostname;   /* our name in greetings, Received:, HELO */
    char *state_dir;  /* LMDB stores live under here */
    char *log_level;
} relay_conf_t;

typedef struct service {
    const char *name;      /* "queue" */
    char instance[32];     /* "1" */
    char *config_path;
    conf_file_t *conf;
    relay_conf_t relay;
    endpoints_t ep;
    loop_t *loop;
    bus_t *bus;
    bus_push_t *events;    /* NULL when no events endpoint is configured */
    struct event_batch *event_batch; /* events of this turn, not sent yet */
} service_t;

/*
 * Parse argv, load the shared config, start the loop and bus. On failure
 * prints the reason (file:line: ...) to stderr and returns -1: the caller
 * exits with status 1.
 */
int service_init(service_t *svc, const char *name, int argc, char **argv);
void service_fini(service_t *svc);

/* Load the service's own section; on error print it and return -1. */
int service_section(service_t *svc, const conf_field_t *table, void *out);

/* The instance index, 1-based, from --instance (default 1). */
unsigned service_index(const service_t *svc);
/* The endpoint this instance binds in a list, or NULL when the list is short. */
const char *service_endpoint(const service_t *svc, const conf_strlist_t *list);
/* state_dir/<name>-<instance>, created if missing. */
const char *service_store_dir(service_t *svc, char *buf, size_t size);

/*
 * Send an event (fills id, time, service, instance; ev is packed at once and
 * stays the caller's). Events leave together in one EventPublish
 * SERVICE_EVENT_DELAY_MS after the first of them, or sooner when SERVICE_EVENT_BATCH_MAX events or
 * SERVICE_EVENT_BATCH_BYTES are waiting: one bus message and one wake-up of
 * events for all of a message's steps in this service, not one per event
 * or per loop turn. A crash of the service loses at most that window.
 */
void service_event(service_t *svc, PB(Event) * ev);
/* Send the waiting events now; service_run and service_fini call it too. */
void service_events_flush(service_t *svc);

#define SERVICE_EVENT_DELAY_MS    10
#define SERVICE_EVENT_BATCH_MAX   64
#define SERVICE_EVENT_BATCH_BYTES (256u << 10) /* well under the 4 MiB frame cap */

int service_run(service_t *svc);

/* The bus section's table, for tools that read it alone (sendarixctl). */
extern const conf_field_t service_bus_table[];
extern const conf_field_t service_relay_table[];

#endif
