/*
 * events: placeholder main until the service lands.
 */
#include "ipc/service.h"

int main(int argc, char **argv)
{
    service_t svc;
    if (service_init(&svc, "events", argc, argv) < 0)
        return 1;
    int rc = service_run(&svc);
    service_fini(&svc);
    return rc == 0 ? 0 : 1;
}
