/*
 * proto: short names for the generated protobuf-c types, so service code
 * reads PB(AuthLoginVerify) instead of Sendarix__V1__AuthLoginVerify.
 */
#ifndef SX_PROTO_H
#define SX_PROTO_H

#include "sendarix/v1/envelope.pb-c.h"

#define PB(name)          Sendarix__V1__##name
#define PB_INIT(NAME)     SENDARIX__V1__##NAME##__INIT
#define PB_BODY(NAME)     SENDARIX__V1__ENVELOPE__BODY_##NAME
#define PB_FN(name, verb) sendarix__v1__##name##__##verb
#define PB_ENUM(NAME)     SENDARIX__V1__##NAME

typedef Sendarix__V1__Envelope sx_env_t;

#endif
