/*
 * message.h - the request message a gateway writes to the request topic.
 *
 * Wire layout (little-endian, 53..244 bytes):
 *   u8  version (1, or 2 with a trace id)
 *   u8  gateway_id[16]   u8 request_id[16]
 *   u64 admitted_at_ms   u64 deadline_ms     (wall clock, ms since the epoch)
 *   u8  user_len, user bytes   u8 item_len, item bytes
 *   version 2 only: u8 trace_len (1..64), trace bytes
 * The trace id is the client's X-Request-Id (or its traceparent's trace-id),
 * which the worker's log lines about the request carry. A request without
 * one is written as version 1, byte for byte what earlier gateways wrote;
 * the decoder reads both.
 * Times are wall-clock because the worker deciding a request may run on
 * another machine than the gateway that admitted it.
 */
#ifndef SECKILL_SK_MESSAGE_H
#define SECKILL_SK_MESSAGE_H

#include <stddef.h>
#include <stdint.h>

#include "sk.h"

#define SK_MSG_VERSION 1
#define SK_MSG_VERSION_TRACE 2
#define SK_TRACE_MAX 64 /* 1..64 characters of [A-Za-z0-9_.:@+/=-] */
#define SK_MSG_MAX (1 + 16 + 16 + 8 + 8 + 1 + SK_ID_MAX + 1 + SK_ID_MAX + 1 + SK_TRACE_MAX)

typedef struct sk_msg {
    uint8_t gateway_id[16];
    uint8_t request_id[16];
    uint64_t admitted_at_ms;
    uint64_t deadline_ms;
    char user_id[SK_ID_MAX + 1];
    char item_id[SK_ID_MAX + 1];
    char trace[SK_TRACE_MAX + 1]; /* "" = none */
} sk_msg;

/* 1 when s[0..len) may be a trace id: 1..SK_TRACE_MAX characters of
 * [A-Za-z0-9_.:@+/=-] (safe in a header, a log line and JSON). */
int sk_trace_valid(const char *s, size_t len);

/* Encode m into buf (at least SK_MSG_MAX bytes). Returns the length, or -EINVAL
 * when an id or the trace is not valid. */
int sk_msg_encode(const sk_msg *m, uint8_t *buf, size_t cap);
/* Decode len bytes (m->trace "" for version 1); -EBADMSG when truncated, of
 * another version, or with trailing bytes, invalid ids or an invalid trace. */
int sk_msg_decode(const void *buf, size_t len, sk_msg *m);

#endif
