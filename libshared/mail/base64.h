/*
 * base64: strict RFC 4648 decoding for SASL (a malformed string is refused,
 * not guessed at) and encoding.
 */
#ifndef SX_BASE64_H
#define SX_BASE64_H

#include <stddef.h>

/* Decode; -1 when src is not canonical base64 or dst is too small. */
long base64_decode(const char *src, size_t len, unsigned char *dst, size_t size);
/* Encode into dst (NUL-terminated); -1 when dst is too small. */
long base64_encode(const unsigned char *src, size_t len, char *dst, size_t size);

#endif
