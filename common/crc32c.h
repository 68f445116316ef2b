/*
 * crc32c.h - CRC-32C (Castagnoli, reflected polynomial 0x82F63B78): the
 * checksum of every segment-log record and offsets entry (queue/) and of
 * every rpc frame (rpc/).
 *
 * The SSE4.2 crc32 instruction when the CPU has it (checked at run time),
 * software slicing-by-8 otherwise; both compute the same function.
 * Convention: sk_crc32c(0, buf, len) is the CRC of buf, and
 * sk_crc32c(sk_crc32c(0, a, n), b, m) equals the CRC of a followed by b.
 * Check value: sk_crc32c(0, "123456789", 9) == 0xE3069283.
 */
#ifndef SECKILL_CRC32C_H
#define SECKILL_CRC32C_H

#include <stddef.h>
#include <stdint.h>

uint32_t sk_crc32c(uint32_t crc, const void *buf, size_t len);

#endif
