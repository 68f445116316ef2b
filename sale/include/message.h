/*
 * message.h - the request message a gateway writes to the request topic.
 *
 * Wire layout (little-endian, 51..179 bytes):
 *   u8  version (1)
 *   u8  gateway_id[16]   u8 request_id[16]
 *   u64 admitted_at_ms   u64 deadline_ms     (wall clock, ms since the epoch)
 *   u8  user_len, user bytes   u8 item_len, item bytes
 * Times are wall-clock because the worker deciding a request may run on
 * another machine than the gateway that admitted it.
 */
#ifndef SECKILL_SK_MESSAGE_H
#define SECKILL_SK_MESSAGE_H

#include <stddef.h>
#include <stdint.h>

#include "sk.h"

#define SK_MSG_VERSION 1
#define SK_MSG_MAX (1 + 16 + 16 + 8 + 8 + 1 + SK_ID_MAX + 1 + SK_ID_MAX)

typedef struct sk_msg {
    uint8_t gateway_id[16];
    uint8_t request_id[16];
    uint64_t admitted_at_ms;
    uint64_t deadline_ms;
    char user_id[SK_ID_MAX + 1];
    char item_id[SK_ID_MAX + 1];
} sk_msg;

/* Encode m into buf (at least SK_MSG_MAX bytes). Returns the length, or -EINVAL
 * when an id is not valid. */
int sk_msg_encode(const sk_msg *m, uint8_t *buf, size_t cap);
/* Decode len bytes; -EBADMSG when truncated, of another version, or with
 * trailing bytes or invalid ids. */
int sk_msg_decode(const void *buf, size_t len, sk_msg *m);

#endif
