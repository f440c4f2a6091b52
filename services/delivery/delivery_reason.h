/*
 * delivery_reason: the class of a recipient's outcome, for queue, events
 * and operators: mailbox, policy, content, rate, network, protocol, tls,
 * dns, config ("" when delivered). A pure function of the reply (code,
 * enhanced code, text) and of whether we made the reply up ourselves. It
 * decides nothing about retries: queue does.
 */
#ifndef SX_DELIVERY_REASON_H
#define SX_DELIVERY_REASON_H

#include "delivery_caps.h"

/* The class names, as carried in DeliveryRecipientResult.reason. */
#define REASON_MAILBOX  "mailbox"
#define REASON_POLICY   "policy"
#define REASON_CONTENT  "content"
#define REASON_RATE     "rate"
#define REASON_NETWORK  "network"
#define REASON_PROTOCOL "protocol"
#define REASON_TLS      "tls"
#define REASON_DNS      "dns"
#define REASON_CONFIG   "config"

/*
 * code, enhanced ("" or NULL: derived from code) and text of a reply;
 * local: we made it up (then x.7.5 means our TLS policy failed). Never NULL.
 */
const char *reason_classify(unsigned code, const char *enhanced, const char *text, int local);

/* The reply's own reason when it has one, else reason_classify(). */
const char *reason_of(const dlv_reply_t *r);

#endif
