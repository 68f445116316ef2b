/*
 * store_memory.h - the in-memory store: stock, per-user limits, decisions.
 *
 * Invariants it keeps, under any number of threads:
 *   - successes for an item never exceed its stock (atomic check-and-decrement);
 *   - a user never buys an item more than per_user_limit times;
 *   - a request is decided once: a request id seen again (a redelivered
 *     message) gets the stored outcome, whatever its deadline now says.
 * Successful decisions are kept for the life of the process (there are at most
 * `stock` of them); other decisions are kept up to decision_capacity, oldest
 * dropped first, which is far beyond any redelivery window.
 *
 * Orders: every success creates an order (reserved, with a pay deadline),
 * paid by sk_inventory_order_pay or cancelled by sk_inventory_reap once the
 * deadline passed (stock back, the user may buy again), each exactly once.
 * With a journal (sk_orders_config) every order event is durable before it
 * takes effect where anyone can see it:
 *   reserved   decide() buys in memory with the decision marked pending,
 *              appends the events of the whole batch in one journal call,
 *              then marks them durable; a failed append undoes its purchase
 *              (stock, the user's count and the decision) and fails the
 *              batch. A request that meets another thread's pending decision
 *              gets SK_UNAVAILABLE (not recorded; the worker leaves that
 *              delivery uncommitted, the pending one answers); the order
 *              is not visible to get/pay/reap before it is durable.
 *   paid       pay() marks the order busy, appends, then sets it paid.
 *   cancelled  reap() marks expired orders busy, appends them as one batch,
 *              then cancels them and gives their stock back.
 * Recovery feeds the journal's events back in order to sk_inventory_apply
 * before the inventory serves, which rebuilds stock, per-user counts,
 * decisions of successes and orders.
 */
#ifndef SECKILL_SK_INVENTORY_H
#define SECKILL_SK_INVENTORY_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "sk.h"

typedef struct sk_inventory sk_inventory;

typedef struct sk_item_spec {
    const char *id;
    int64_t stock;
    uint32_t per_user_limit;
} sk_item_spec;

/* Copies items. OUT: *out, destroy with sk_inventory_destroy. */
int sk_inventory_create(const sk_item_spec *items, size_t n, size_t decision_capacity,
                        sk_inventory **out);
void sk_inventory_destroy(sk_inventory *inv);

/* Index of item_id, or -ENOENT. */
int sk_inventory_find(const sk_inventory *inv, const char *item_id);
int64_t sk_inventory_left(const sk_inventory *inv, int item);
size_t sk_inventory_items(const sk_inventory *inv);

/* Decide request_id for user_id on item (an index from sk_inventory_find).
 * verdict: SK_SUCCESS to try to buy, or a verdict the worker already reached
 * (expired, blocked, not started, ended), recorded only when the request has
 * no decision yet. OUT: o->result and o->order_id; *left (may be NULL) gets the
 * stock left after the decision. Returns 1 when the outcome was decided now,
 * 0 when it is a stored earlier decision, negative errno on failure. */
int sk_inventory_decide(sk_inventory *inv, int item, const char *user_id,
                        const uint8_t request_id[16], enum sk_result verdict, sk_outcome *o,
                        int64_t *left);

/* The backend interface over inv (inv must outlive it). */
sk_backend sk_inventory_backend(sk_inventory *inv);

/* Successful purchases of item so far. */
int64_t sk_inventory_sold(const sk_inventory *inv, int item);
/* Distinct users who bought item: with a per-user limit of 1, sold == buyers
 * is the "no duplicate winner" check operators and the load test read. */
int64_t sk_inventory_buyers(const sk_inventory *inv, int item);

/* ---- orders ---- */

/* Where order events are made durable. append() gets evs[0..n) (any order
 * ids, at most one event per order per call) and returns only when each is
 * durable or failed. OUT: rcs[i], 0 when evs[i] is durable, else negative
 * errno. Returns 0 when all are durable. Called from any thread, with no
 * inventory lock held. */
typedef struct sk_journal {
    void *arg;
    int (*append)(void *arg, const sk_order_event *evs, size_t n, int *rcs);
} sk_journal;

typedef struct sk_orders_config {
    uint32_t pay_timeout_ms;   /* a reserved order not paid by created + this is cancelled */
    const sk_journal *journal; /* NULL: orders live in memory only; copied */
    uint64_t (*wall_ms)(void *arg); /* NULL: CLOCK_REALTIME; stamps decide()'s orders */
    void *clock_arg;
} sk_orders_config;

/* Set before the inventory serves (default: 900000 ms, no journal). */
void sk_inventory_set_orders(sk_inventory *inv, const sk_orders_config *cfg);

/* Recovery: apply one stored event, in journal order, before serving.
 * Returns 0 when applied, 1 when ignored (unknown item, unknown order, an
 * event for a state already reached), negative errno on failure. A reserved
 * event beyond the configured stock (stock lowered between runs) is kept as
 * an order and leaves the stock at 0; it took no unit, so its cancel gives
 * none back. */
int sk_inventory_apply(sk_inventory *inv, const sk_order_event *ev);

/* OUT: *o. -ENOENT when unknown (or not yet durable). */
int sk_inventory_order_get(sk_inventory *inv, const char *order_id, sk_order *o);

/* Mark a reserved order paid at now_ms. Idempotent: 0 when paid now or
 * already paid. -ECANCELED when cancelled, -ETIME when its pay deadline has
 * passed (reap cancels it), -ENOENT when unknown, -EAGAIN while another pay
 * or a cancel of it is in flight, or the journal's error (still reserved). */
int sk_inventory_order_pay(sk_inventory *inv, const char *order_id, uint64_t now_ms);

/* Cancel every reserved order whose pay deadline is <= now_ms: its stock goes
 * back and its user's count goes down, exactly once. Never early; may be one
 * round late for an order created out of order by a few ms. Returns how many
 * were cancelled, or the journal's error (the orders that failed stay
 * reserved and are tried again next time; the others are cancelled). */
int sk_inventory_reap(sk_inventory *inv, uint64_t now_ms);

/* ---- sales, stock and limits (the admin API, a reload) ----
 * Each is journalled first (a sale record, order_event.h) and changes
 * nothing when the journal refuses it. */

/* Item's stock total becomes total; stock left moves by the difference.
 * -EBUSY (nothing changed) when total is below the units the sale's orders
 * hold; only_raise: 0 and nothing changed unless total is above the stock in
 * force. Returns 1 when stock was added, 0 otherwise. OUT: *held (may be
 * NULL), the units the orders of the sale hold. */
int sk_inventory_set_stock(sk_inventory *inv, int item, int64_t total, int only_raise,
                           int64_t *held);
/* Item's per-user limit from the next decision on (>= 1). */
int sk_inventory_set_limit(sk_inventory *inv, int item, uint32_t limit);
/* Start sale epoch+1: stock[i] (-1 or stock NULL: the stock in force) is
 * item i's stock and all of it is left, no user has bought. Orders of
 * earlier sales stay readable and payable; their cancel returns nothing.
 * OUT: *epoch (may be NULL), the new sale's. */
int sk_inventory_new_sale(sk_inventory *inv, const int64_t *stock, uint64_t *epoch);
uint64_t sk_inventory_epoch(const sk_inventory *inv);
uint32_t sk_inventory_limit(const sk_inventory *inv, int item);
int64_t sk_inventory_stock(const sk_inventory *inv, int item);

/* Orders by state, for tests and metrics. OUT: counts[state]. */
void sk_inventory_order_counts(sk_inventory *inv, int64_t counts[3]);

#endif
