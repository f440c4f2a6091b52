/*
 * sandbox_control: the sandbox's bus socket (ROUTER, the bus.sandbox
 * endpoint of this instance). It answers SandboxFailSet; ServicePing is
 * answered by the bus itself with the server's stats. Requests are
 * validated here and refused with an Error envelope, never asserted on.
 */
#ifndef SX_SANDBOX_CONTROL_H
#define SX_SANDBOX_CONTROL_H

#include "ipc/bus.h"
#include "sandbox_server.h"

typedef struct sandbox_control sandbox_control_t;

/* Bind endpoint; NULL when it cannot be bound (logged). */
sandbox_control_t *sandbox_control_new(bus_t *bus, const char *endpoint, sandbox_server_t *srv);
void sandbox_control_destroy(sandbox_control_t **ctl);

#endif
