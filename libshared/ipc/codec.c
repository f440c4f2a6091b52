/*
 * codec: envelope pack/unpack with size and version checks.
 */
#include "codec.h"
#include "core/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * A decoded envelope lives in an arena: protobuf-c's allocations for its
 * strings, sub-messages and arrays are carved from a few blocks and freed
 * together, rather than one malloc and one free each (a busy service spent
 * about a tenth of its time in the allocator, much of it here). The
 * envelope is the arena's first allocation, so codec_free finds the arena
 * just before it. Nothing may free part of a decoded envelope on its own:
 * a holder keeps the whole envelope.
 */
#define ARENA_ALIGN 16u
#define ARENA_MAGIC 0x53584152u /* "SXAR" */
#define ARENA_SLACK 512u        /* beyond three times the frame: most envelopes fit one block */

typedef struct arena_block {
    struct arena_block *next;
} arena_block_t;

typedef struct codec_arena {
    uint32_t magic;
    arena_block_t *more; /* blocks added when the first ran out, newest first */
    char *cur, *end;     /* the free part of the newest block */
    size_t next_cap;
} codec_arena_t;

#define ALIGN_UP(n)   (((n) + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1))
#define ARENA_HEADER  ALIGN_UP(sizeof(codec_arena_t))
#define BLOCK_HEADER  ALIGN_UP(sizeof(arena_block_t))

static void *arena_alloc(void *data, size_t size)
{
    codec_arena_t *a = data;
    if (size > CODEC_MAX_ENVELOPE * (size_t)64)
        return NULL; /* no frame we accept asks for this much: fail the decode */
    size = size ? ALIGN_UP(size) : ARENA_ALIGN;
    if ((size_t)(a->end - a->cur) < size) {
        size_t cap = a->next_cap > size ? a->next_cap : size;
        arena_block_t *b = malloc(BLOCK_HEADER + cap);
        if (b == NULL)
            return NULL;
        b->next = a->more;
        a->more = b;
        a->cur = (char *)b + BLOCK_HEADER;
        a->end = a->cur + cap;
        a->next_cap = cap * 2;
    }
    void *p = a->cur;
    a->cur += size;
    return p;
}

static void arena_free(void *data, void *p)
{
    (void)data;
    (void)p; /* everything goes at once, in arena_release */
}

static codec_arena_t *arena_new(size_t frame_len)
{
    size_t cap = ALIGN_UP(ARENA_SLACK + 3 * frame_len);
    codec_arena_t *a = xmalloc(ARENA_HEADER + cap);
    a->magic = ARENA_MAGIC;
    a->more = NULL;
    a->cur = (char *)a + ARENA_HEADER;
    a->end = a->cur + cap;
    a->next_cap = cap * 2;
    return a;
}

static void arena_release(codec_arena_t *a)
{
    arena_block_t *b = a->more;
    while (b) {
        arena_block_t *next = b->next;
        free(b);
        b = next;
    }
    a->magic = 0;
    free(a);
}

/* env packed (version set) into a buffer with `extra` bytes of room after it. */
static uint8_t *pack_envelope(sx_env_t *env, size_t extra, size_t *len)
{
    env->version = CODEC_VERSION;
    size_t n = PB_FN(envelope, get_packed_size)(env) + extra;
    uint8_t *p = xmalloc(n ? n : 1);
    *len = PB_FN(envelope, pack)(env, p);
    return p;
}

uint8_t *codec_encode(sx_env_t *env, size_t *len)
{
    return pack_envelope(env, 0, len);
}

static size_t put_varint(uint8_t *dst, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        dst[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    dst[n++] = (uint8_t)v;
    return n;
}

size_t codec_field_head(uint8_t *dst, uint32_t field, size_t len)
{
    size_t n = put_varint(dst, (uint64_t)field << 3 | 2); /* wire type 2: length-delimited */
    return n + put_varint(dst + n, len);
}

uint8_t *codec_encode_packed(sx_env_t *env, uint32_t field, const void *body, size_t body_len,
                             size_t *len)
{
    env->body_case = PB_BODY(_NOT_SET);
    size_t n;
    uint8_t *p = pack_envelope(env, CODEC_FIELD_HEAD + body_len, &n);
    n += codec_field_head(p + n, field, body_len);
    memcpy(p + n, body, body_len);
    *len = n + body_len;
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
    codec_arena_t *a = arena_new(len);
    ProtobufCAllocator allocator = {.alloc = arena_alloc, .free = arena_free, .allocator_data = a};
    sx_env_t *env = PB_FN(envelope, unpack)(&allocator, len, data);
    if (env == NULL) {
        snprintf(err, errlen, "malformed envelope (%zu bytes)", len);
    } else if ((char *)env != (char *)a + ARENA_HEADER) {
        /* codec_free could not find the arena: refuse rather than leak */
        snprintf(err, errlen, "decoder did not allocate the envelope first");
    } else if (env->version != CODEC_VERSION) {
        snprintf(err, errlen, "unsupported envelope version %u", env->version);
    } else if (env->body_case == PB_BODY(_NOT_SET)) {
        snprintf(err, errlen, "envelope without a known body");
    } else {
        *out = env;
        return 0;
    }
    arena_release(a);
    return -1;
}

void codec_free(sx_env_t **env)
{
    if (*env == NULL)
        return;
    codec_arena_t *a = (codec_arena_t *)(void *)((char *)*env - ARENA_HEADER);
    if (a->magic != ARENA_MAGIC)
        abort(); /* not from codec_decode, or freed twice: memory is already wrong */
    arena_release(a);
    *env = NULL;
}

const char *codec_body_name(const sx_env_t *env)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field(&sendarix__v1__envelope__descriptor,
                                                (unsigned)env->body_case);
    return f ? f->name : "none";
}
