/*
 * ctl_json: the JSON that sendarixctl prints, built from bus messages.
 * One function per shape, each returning a new reference, so tests can
 * check the documents without a running relay. Times are ISO 8601 UTC
 * strings (null when unset); text from services that is not UTF-8 is
 * printed with '?' in place of the foreign bytes. Nothing here prints.
 */
#ifndef SX_CTL_JSON_H
#define SX_CTL_JSON_H

#include "ipc/proto.h"

#include <jansson.h>
#include <stdint.h>

json_t *ctl_json_str(const char *s);
/* ISO time, with milliseconds or not; null for 0. */
json_t *ctl_json_time(uint64_t ms, int with_ms);
/* {code, enhanced, text} or null. */
json_t *ctl_json_status(const PB(Status) * st);
json_t *ctl_json_attrs(PB(Attr) * *attrs, size_t n);

json_t *ctl_json_event(const PB(Event) * ev);
/*
 * One line of `status`: service (the bus key), instance (1-based), endpoint,
 * up; when pong is not NULL also pid, version, uptime_s (from now_ms) and
 * stats; when it is, the problem as "error" (may be NULL).
 */
json_t *ctl_json_pong(const char *service, unsigned instance, const char *endpoint,
                      const PB(ServicePong) * pong, uint64_t now_ms, const char *problem);
json_t *ctl_json_credential(const PB(Credential) * c);
json_t *ctl_json_tenant(const PB(Tenant) * t);
/* {domain, tenant, verified, created_at} */
json_t *ctl_json_domain(const PB(Domain) * d);
json_t *ctl_json_strings(char **v, size_t n);
json_t *ctl_json_queue_show(const PB(QueueMessageShowReply) * r);

#endif
