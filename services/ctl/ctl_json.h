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
/*
 * {message, recipients, state, held, body_size}: each recipient with its
 * DSN NOTIFY and ORCPT from the envelope; held is 1, 0, or -1 when not
 * known (null).
 */
json_t *ctl_json_queue_show(const PB(QueueMessageShowReply) * r, int held);
/* One message of `queue list`, from the queue instance named instance ("1"). */
json_t *ctl_json_queue_summary(const char *instance, const PB(QueueMessageSummary) * m);
/* {tenant, address, reason, reply, created_at, expires_at} */
json_t *ctl_json_suppression(const PB(Suppression) * e);

/*
 * The merged answers of every queue instance (replies[i] from instance
 * i + 1, NULL when absent), as the CLI prints them.
 * list (ctl_queue_ops.c): messages by arrival then id, cut to limit,
 * "matched" summed. stats (ctl_queue_ops.c): per instance, totals, and
 * domains merged by name (counts summed, the latest error kept, suspended
 * if any instance says so). suppressions (ctl_suppress.c): merged by
 * tenant and address (the address without regard to case; the newest
 * entry wins), by tenant then address, cut to limit.
 */
json_t *ctl_queue_list_merge(PB(QueueListReply) *const *replies, size_t n, size_t limit);
json_t *ctl_queue_stats_merge(PB(QueueStatsReply) *const *replies, size_t n);
json_t *ctl_suppress_merge(PB(QueueSuppressReply) *const *replies, size_t n, size_t limit);

#endif
