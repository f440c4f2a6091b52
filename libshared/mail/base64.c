/*
 * base64: strict decoder and encoder.
 */
#include "base64.h"

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

long base64_decode(const char *src, size_t len, unsigned char *dst, size_t size)
{
    if (len % 4 != 0)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        int pad = 0;
        for (int j = 0; j < 4; j++) {
            unsigned char c = (unsigned char)src[i + j];
            if (c == '=') {
                /* padding only at the very end, and only in the last two places */
                if (i + 4 != len || j < 2)
                    return -1;
                pad++;
                v[j] = 0;
                continue;
            }
            if (pad)
                return -1;
            v[j] = b64_value(c);
            if (v[j] < 0)
                return -1;
        }
        unsigned long triple = ((unsigned long)v[0] << 18) | ((unsigned long)v[1] << 12) |
                               ((unsigned long)v[2] << 6) | (unsigned long)v[3];
        size_t out = 3 - (size_t)pad;
        /* canonical: the bits dropped by padding must be zero */
        if ((pad == 1 && (v[2] & 3)) || (pad == 2 && (v[1] & 15)))
            return -1;
        if (o + out > size)
            return -1;
        dst[o++] = (unsigned char)(triple >> 16);
        if (out > 1)
            dst[o++] = (unsigned char)(triple >> 8);
        if (out > 2)
            dst[o++] = (unsigned char)triple;
    }
    return (long)o;
}

long base64_encode(const unsigned char *src, size_t len, char *dst, size_t size)
{
    size_t need = (len + 2) / 3 * 4 + 1;
    if (size < need)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        unsigned long t = (unsigned long)src[i] << 16;
        if (i + 1 < len)
            t |= (unsigned long)src[i + 1] << 8;
        if (i + 2 < len)
            t |= src[i + 2];
        dst[o++] = b64[(t >> 18) & 63];
        dst[o++] = b64[(t >> 12) & 63];
        dst[o++] = i + 1 < len ? b64[(t >> 6) & 63] : '=';
        dst[o++] = i + 2 < len ? b64[t & 63] : '=';
    }
    dst[o] = '\0';
    return (long)o;
}
