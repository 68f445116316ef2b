/*
 * le.h - little-endian fixed-width integers in byte buffers: the on-disk and
 * on-wire layouts of the log records, offsets entries, queue envelopes,
 * request messages and order events.
 */
#ifndef SECKILL_LE_H
#define SECKILL_LE_H

#include <stdint.h>

static inline void sk_le_put32(void *p, uint32_t v)
{
    unsigned char *b = p;
    for (int i = 0; i < 4; i++)
        b[i] = (unsigned char)(v >> (8 * i));
}

static inline void sk_le_put64(void *p, uint64_t v)
{
    sk_le_put32(p, (uint32_t)v);
    sk_le_put32((unsigned char *)p + 4, (uint32_t)(v >> 32));
}

static inline uint32_t sk_le_get32(const void *p)
{
    const unsigned char *b = p;
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static inline uint64_t sk_le_get64(const void *p)
{
    return (uint64_t)sk_le_get32(p) | (uint64_t)sk_le_get32((const unsigned char *)p + 4) << 32;
}

#endif
