/*
 * codec: the bus envelope on the wire. Encoding packs an envelope with the
 * current version; decoding checks the frame size before unpacking, rejects
 * bytes that are not a well-formed envelope, a version it does not speak, or
 * an envelope without a body, and says why. It never trusts the peer.
 */
#ifndef SX_CODEC_H
#define SX_CODEC_H

#include "proto.h"

#include <stddef.h>
#include <stdint.h>

#define CODEC_VERSION      1
#define CODEC_MAX_ENVELOPE (4u << 20) /* bodies travel in their own frame */

/* Packed bytes of env (version set to CODEC_VERSION); caller frees. */
uint8_t *codec_encode(sx_env_t *env, size_t *len);

/*
 * The same for a body that is already packed: env's own fields (its body
 * case unset), then field number `field` holding the body's bytes. The wire
 * format is a sequence of fields, so this is the envelope protobuf-c would
 * make with the body set, without building the body's structures first.
 */
uint8_t *codec_encode_packed(sx_env_t *env, uint32_t field, const void *body, size_t body_len,
                             size_t *len);

/* The tag and length of a length-delimited field into dst; the bytes written. */
#define CODEC_FIELD_HEAD 15 /* at most: a 5-byte tag and a 10-byte length */
size_t codec_field_head(uint8_t *dst, uint32_t field, size_t len);

/*
 * 0 and *out on success; -1 with a reason in err. The envelope and all it
 * points to are one allocation as far as the caller is concerned: free it
 * whole with codec_free, never a part of it, and never with protobuf-c.
 */
int codec_decode(const void *data, size_t len, sx_env_t **out, char *err, size_t errlen);
void codec_free(sx_env_t **env);

/* Name of the body case, for logs ("auth_login_verify"). */
const char *codec_body_name(const sx_env_t *env);

#endif
