/*
 * uuid4.h - random (version 4) UUIDs for request and order ids, fast.
 *
 * libuuid's uuid_generate_random() makes a getrandom() call (and getpid,
 * getuid, ...) for every id: on the full purchase path that was about 30% of
 * the gateway's CPU under load (perf, 256 connections). sk_uuid4 draws the
 * same kernel randomness in 4 KiB blocks per thread and sets the RFC 4122
 * version and variant bits itself; text form and parsing stay libuuid's
 * (uuid_unparse_lower, uuid_parse).
 */
#ifndef SECKILL_SK_UUID4_H
#define SECKILL_SK_UUID4_H

#include <stdint.h>

/* OUT: out, 16 bytes of a version 4 UUID. Never fails (falls back to
 * libuuid if the kernel refuses randomness). */
void sk_uuid4(uint8_t out[16]);

#endif
