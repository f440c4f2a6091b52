/*
 * codec: envelope pack/unpack with size and version checks.
 */
#include "codec.h"
#include "core/alloc.h"

#include <stdio.h>
#include <stdlib.h>

uint8_t *codec_encode(sx_env_t *env, size_t *len)
{
    env->version = CODEC_VERSION;
    size_t n = PB_FN(envelope, get_packed_size)(env);
    uint8_t *p = xmalloc(n ? n : 1);
    *len = PB_FN(envelope, pack)(env, p);
    return p;
}

int codec_decode(const void *data, size_t len, sx_env_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (len == 0) {
        snprintf(err, errlen, "empty frame");
        return -1;
    }
    if (len > CODEC_MAX_ENVELOPE) {
        snprintf(err, errlen, "frame of %zu bytes exceeds %u", len, CODEC_MAX_ENVELOPE);
        return -1;
    }
    sx_env_t *env = PB_FN(envelope, unpack)(NULL, len, data);
    if (env == NULL) {
        snprintf(err, errlen, "malformed envelope (%zu bytes)", len);
        return -1;
    }
    if (env->version != CODEC_VERSION) {
        snprintf(err, errlen, "unsupported envelope version %u", env->version);
        PB_FN(envelope, free_unpacked)(env, NULL);
        return -1;
    }
    if (env->body_case == PB_BODY(_NOT_SET)) {
        snprintf(err, errlen, "envelope without a known body");
        PB_FN(envelope, free_unpacked)(env, NULL);
        return -1;
    }
    *out = env;
    return 0;
}

void codec_free(sx_env_t **env)
{
    if (*env) {
        PB_FN(envelope, free_unpacked)(*env, NULL);
        *env = NULL;
    }
}

const char *codec_body_name(const sx_env_t *env)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field(&sendarix__v1__envelope__descriptor,
                                                (unsigned)env->body_case);
    return f ? f->name : "none";
}
