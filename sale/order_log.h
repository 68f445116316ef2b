/*
 * order_log.h - the memory inventory's order events on the embedded queue.
 *
 * Topic SK_ORDER_TOPIC: a log with MQ_FLUSH_SYNC, no retention, one
 * partition (one fsync covers a whole batch of appends, and an order's
 * events keep their order), key = order id, one record per event. It is at
 * once the inventory's journal (store_memory.h: an event is durable before
 * it takes effect), its recovery source (replayed from offset 0 at start)
 * and the feed of the order consumer groups (the order sink: group
 * SK_ORDER_GROUP over rpc/).
 *
 * Record value: order_event.h.
 */
#ifndef SECKILL_SK_ORDER_LOG_H
#define SECKILL_SK_ORDER_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "mq.h"
#include "order_event.h"
#include "sk.h"
#include "store_memory.h"

typedef struct sk_order_log sk_order_log;

/* Open (creating or recovering) SK_ORDER_TOPIC in q, which must have a data
 * directory. ack_timeout_ms and lease_timeout_ms apply to its consumer
 * groups. sync: an append returns once fsynced (group commit); else the log
 * is fsynced every SK_ORDER_ASYNC_FLUSH_MS. OUT: *out; q outlives it. */
#define SK_ORDER_ASYNC_FLUSH_MS 100
int sk_order_log_open(mq *q, uint32_t ack_timeout_ms, uint32_t lease_timeout_ms, int sync,
                      sk_order_log **out);
void sk_order_log_close(sk_order_log *l);
mq_topic *sk_order_log_topic(sk_order_log *l);

/* The journal for sk_inventory_set_orders: one mq_produce_batch per call. */
sk_journal sk_order_log_journal(sk_order_log *l);

/* Pass every stored event, oldest first, to fn (fn returning negative stops
 * and is returned). Returns the number of events, or negative errno:
 * -EBADMSG when a stored record does not decode (recovery must not guess). */
int sk_order_log_replay(sk_order_log *l, int (*fn)(void *arg, const sk_order_event *ev),
                        void *arg);

/* Replay into inv (sk_inventory_apply). OUT: *applied (may be NULL). */
int sk_order_log_recover(sk_order_log *l, sk_inventory *inv, size_t *applied);

#endif
