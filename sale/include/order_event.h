/*
 * order_event.h - the order event codec: one record per order transition, the
 * value of every message on the order topic (SK_ORDER_TOPIC), which the
 * memory store journals (order_log.c, where the codec lives) and an order
 * sink decodes.
 *
 * Record value (little-endian, 38..233 bytes):
 *   u8  version (1)        u8 type (sk_order_state: the state entered)
 *   u64 at_ms              u64 pay_deadline_ms     (wall clock, unix ms)
 *   u8  request_id[16]
 *   u8  order_len, order id    u8 user_len, user id    u8 item_len, item id
 */
#ifndef SECKILL_SALE_ORDER_EVENT_H
#define SECKILL_SALE_ORDER_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "sk.h"

#define SK_ORDER_EVENT_VERSION 1
#define SK_ORDER_EVENT_MAX (2 + 8 + 8 + 16 + 1 + SK_ORDER_ID_MAX + 1 + SK_ID_MAX + 1 + SK_ID_MAX)

/* Encode ev into buf. Returns the length, -EINVAL for an invalid id or type,
 * -ENOBUFS when cap is short. */
int sk_order_event_encode(const sk_order_event *ev, uint8_t *buf, size_t cap);
/* Decode len bytes. -EBADMSG when truncated, of another version, with
 * trailing bytes, an unknown type or invalid ids. */
int sk_order_event_decode(const void *buf, size_t len, sk_order_event *ev);

#endif
