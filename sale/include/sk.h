/*
 * sk.h - the interface between a gateway and seckill workers.
 *
 * A gateway writes one request message (message.h) per admitted purchase to
 * the request topic. A worker decides it and hands back an sk_outcome through
 * an sk_link: today an in-process call into the gateway's pending table,
 * later the RESULT frame of rpc/. The same link carries stock updates so a
 * gateway can answer sold_out locally without a token or a queue slot.
 */
#ifndef SECKILL_SK_H
#define SECKILL_SK_H

#include <stdint.h>

#define SK_ID_MAX 64       /* user and item ids: 1..64 chars of [A-Za-z0-9_.:-] */
#define SK_ORDER_ID_MAX 36 /* a UUID in text form */

#define SK_REQUEST_TOPIC "seckill.requests"
#define SK_GROUP "seckill"

enum sk_result {
    SK_SUCCESS = 0,
    SK_SOLD_OUT,
    SK_ALREADY_PURCHASED, /* per-user limit reached; order_id names the user's last order */
    SK_NOT_STARTED,
    SK_ENDED,
    SK_BLOCKED,      /* risk control: user on the blocklist */
    SK_EXPIRED,      /* reached the worker past its deadline; stock untouched */
    SK_UNKNOWN_ITEM,
    SK_UNAVAILABLE,  /* not decided yet (another delivery of the request is being
                      * decided): never recorded, never delivered, never an answer */
    SK_RESULT_COUNT
};

const char *sk_result_name(enum sk_result r);

typedef struct sk_outcome {
    uint8_t gateway_id[16];
    uint8_t request_id[16];
    enum sk_result result;
    char item_id[SK_ID_MAX + 1];
    char order_id[SK_ORDER_ID_MAX + 1]; /* "" unless success or already_purchased */
} sk_outcome;

/* What a worker calls back into. Both functions may be called from any worker
 * thread at once; they must not block for long. */
typedef struct sk_link {
    void *arg;
    /* Deliver an outcome to the gateway named by o->gateway_id. 0 when handed
     * over (the worker then commits the message), negative errno otherwise. */
    int (*deliver)(void *arg, const sk_outcome *o);
    /* Stock of item_id is now `left` (0: sold out). */
    void (*stock)(void *arg, const char *item_id, int64_t left);
    /* Outcomes delivered may wait to go out with the batch's commits; the
     * worker calls this after them. May be NULL. */
    void (*flush)(void *arg);
} sk_link;

/* ---- orders ----
 * A success reserves one unit of stock under a fresh order id. The order is
 * then paid (POST /orders/{id}/pay, before its pay deadline) or cancelled
 * (not paid in time: its stock goes back and its user may buy again). Each
 * change is an order event (the same three names) for the order consumers. */
#define SK_ORDER_TOPIC "seckill.orders" /* memory inventory: the durable order events */
#define SK_ORDER_GROUP "orders"         /* the order sink's consumer group */

enum sk_order_state { SK_ORDER_RESERVED = 0, SK_ORDER_PAID, SK_ORDER_CANCELLED };

/* "reserved", "paid", "cancelled" */
const char *sk_order_state_name(enum sk_order_state st);

typedef struct sk_order {
    enum sk_order_state state;
    char user_id[SK_ID_MAX + 1];
    char item_id[SK_ID_MAX + 1];
    uint8_t request_id[16];
    uint64_t created_ms;      /* unix ms */
    uint64_t pay_deadline_ms; /* unix ms */
} sk_order;

/* One order event: type is the state the order entered. */
typedef struct sk_order_event {
    enum sk_order_state type;
    char order_id[SK_ORDER_ID_MAX + 1];
    char item_id[SK_ID_MAX + 1];
    char user_id[SK_ID_MAX + 1];
    uint8_t request_id[16];
    uint64_t at_ms;           /* when it happened (unix ms) */
    uint64_t pay_deadline_ms; /* the order's pay deadline (unix ms) */
} sk_order_event;

/* true when s (len bytes) is a valid user or item id. */
int sk_id_valid(const char *s, size_t len);

#endif
