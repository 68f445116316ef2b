/*
 * inventory.h - the in-memory inventory: stock, per-user limits, decisions.
 *
 * Invariants it keeps, under any number of threads:
 *   - successes for an item never exceed its stock (atomic check-and-decrement);
 *   - a user never buys an item more than per_user_limit times;
 *   - a request is decided once: a request id seen again (a redelivered
 *     message) gets the stored outcome, whatever its deadline now says.
 * Successful decisions are kept for the life of the process (there are at most
 * `stock` of them); other decisions are kept up to decision_capacity, oldest
 * dropped first, which is far beyond any redelivery window.
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

#endif
