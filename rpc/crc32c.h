/*
 * crc32c.h - CRC-32C (Castagnoli), the checksum of every rpc frame.
 *
 * Table-driven, one byte at a time: frames are small and the codec must not
 * depend on queue/ (which has its own copy for the segment log).
 */
#ifndef SECKILL_RPC_CRC32C_H
#define SECKILL_RPC_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continue a CRC: start with crc = 0. rpc_crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t rpc_crc32c(uint32_t crc, const void *data, size_t len);

#endif
