/*
 * store.h - where the sale's stock, decisions and orders live: one API, the
 * backend chosen once when the store is created (memory: store_memory.c,
 * Redis: store_redis.c, Redis Cluster: store_cluster.c). Callers hold a
 * sale_store * and never learn which.
 *
 * Every operation takes items by their index in the configured items
 * (sale_store_config.items), except those that find an item themselves.
 * Every function may be called from any thread at once. Errors are negative
 * errno values; a store that cannot be reached answers within about twice
 * its timeout and never hangs.
 *
 * Orders: a success reserves one unit of stock under a fresh order id; the
 * order is then paid (sale_store_order_pay, before its pay deadline) or
 * cancelled by sale_store_reap (its stock goes back), each exactly once,
 * however many processes reap the same store.
 */
#ifndef SECKILL_SALE_STORE_H
#define SECKILL_SALE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "mq.h"
#include "sk.h"

typedef struct sale_store sale_store;

typedef struct sale_store_item {
    const char *id;          /* sk_id_valid */
    int64_t stock;           /* the stock a new sale starts with */
    uint32_t per_user_limit; /* >= 1 */
    uint32_t stock_buckets;  /* Redis Cluster: buckets of stock; 0 = one per master */
} sale_store_item;

typedef struct sale_store_config {
    const char *backend;          /* "memory" or "redis" ([worker] inventory) */
    const char *name;             /* the program, for the lines the store logs */
    const sale_store_item *items; /* copied */
    size_t nitems;
    uint32_t pay_timeout_ms; /* a reserved order not paid by then is cancelled */
    /* memory: decisions, and the order log in data_dir (one process per
     * directory, taken with a lock), replayed at creation */
    size_t decision_capacity;
    const char *data_dir;
    int order_flush_sync;    /* 1: fsynced before an answer; 0: every 100 ms */
    uint32_t ack_timeout_ms; /* the order topic's consumer groups */
    uint32_t lease_timeout_ms;
    /* redis: stock preheated only when absent, so a running sale goes on */
    const char *redis_host;
    int redis_port;
    uint32_t redis_timeout_ms;
    uint32_t redis_patience_ms; /* keep trying to connect this long at creation */
    /* redis on a Redis Cluster (store_cluster.h): seeds instead of host:port */
    int redis_cluster;
    const char *redis_nodes;         /* "host:port, host:port ..." */
    uint32_t min_replicas_ack;       /* [redis] min_replicas_ack, 0 = off */
    uint32_t replica_ack_timeout_ms; /* [redis] replica_ack_timeout_ms */
} sale_store_config;

/* Create the store cfg->backend names. OUT: *out, destroy with
 * sale_store_destroy. On failure err says why, and the code says what kind
 * of failure: -EINVAL a bad configuration, -EWOULDBLOCK data_dir in use by
 * another process, -EBADMSG / -EUCLEAN stored data that does not read back,
 * anything else a resource that is not available now. */
int sale_store_create(const sale_store_config *cfg, sale_store **out, char *err, size_t errlen);
/* After every user (worker threads, reaper) stopped. NULL is fine. */
void sale_store_destroy(sale_store *s);

/* How many items: the configured ones, numbered 0..n-1 in their order. */
size_t sale_store_items(const sale_store *s);

/* The embedded queue the store keeps its order events in, with a data
 * directory; the caller may open its own topics there and serve the order
 * topic (SK_ORDER_TOPIC) to order consumers. NULL when the store keeps its
 * order events elsewhere. Owned by the store. */
mq *sale_store_queue(sale_store *s);

/* The worker loop's view of the store (decide a batch, known item): the
 * contract of backend.h. s must outlive it. */
sk_backend sale_store_backend(sale_store *s);

/* Decide reqs[0..n): a stored decision first, then the verdicts (backend.h).
 * OUT: outs[i].result and .order_id; left[i] the stock left after, -1 when
 * unknown. A failure (-errno) decided nothing the caller can rely on. */
int sale_store_decide(sale_store *s, const sk_decide *reqs, size_t n, sk_outcome *outs,
                      int64_t *left);

/* 1 when item_id is for sale here, 0 when unknown. */
int sale_store_known(sale_store *s, const char *item_id);

/* Stock left of item (>= 0) from the store itself, or negative errno. */
int64_t sale_store_left(sale_store *s, size_t item);

typedef struct sale_item_stats {
    int64_t left, sold, buyers;
    /* orders of the item since the store was created (with those its
     * creation read back): each only goes up */
    int64_t reserved, paid, cancelled;
} sale_item_stats;

/* The counts this process keeps of item, without a round trip: stock left,
 * stock sold (reserved and not cancelled), distinct buyers with a live order,
 * and the order counters. -ENODATA when the store keeps them elsewhere (its
 * workers' stock reports are then the process's view). */
int sale_store_stats(sale_store *s, size_t item, sale_item_stats *out);

/* OUT: *o. -ENOENT when there is no such order. */
int sale_store_order_get(sale_store *s, const char *order_id, sk_order *o);

/* Mark a reserved order paid at now_ms (unix ms). Idempotent: 0 when paid
 * now or already paid, with *o the order (state paid). -ENOENT unknown,
 * -ECANCELED cancelled, -ETIME its pay deadline passed (reap cancels it),
 * -EAGAIN another pay or cancel of it in flight, else the store's error. */
int sale_store_order_pay(sale_store *s, const char *order_id, uint64_t now_ms, sk_order *o);

/* Cancel every reserved order whose pay deadline is <= now_ms: its stock
 * goes back and its user may buy again. Returns how many this call
 * cancelled, or negative errno (those that failed are tried next time). */
int sale_store_reap(sale_store *s, uint64_t now_ms);

/* The item's stock goes up to total (a configuration reload): the units
 * added are added to the stock left, once however many processes raise the
 * same store to the same total. Returns the units added (0 when total is not
 * above the stock in force), or negative errno (-EOPNOTSUPP: a store that
 * cannot). Lowering is not done here. */
int64_t sale_store_raise_stock(sale_store *s, size_t item, int64_t total);

/* ---- the sale as the admin API changes it ----
 * Sale epochs: a new sale (sale_store_new_sale) starts every item from its
 * stock with no purchases counted; the orders of earlier sales stay readable
 * (sale_store_order_get) and payable, and their cancel returns nothing to
 * the new sale. Every process sharing the store follows: the memory store
 * journals it in its order log (a restart replays into the sale in force),
 * the Redis store keeps the epoch in a key its scripts check.
 * A backend without these answers -EOPNOTSUPP. */

typedef struct sale_item_state {
    int64_t stock;           /* the stock total of the sale in force */
    int64_t left;            /* units left */
    uint32_t per_user_limit; /* in force */
    uint64_t epoch;          /* the sale in force, 0 the first */
} sale_item_state;

/* OUT: *out, read from the store itself. */
int sale_store_item_state(sale_store *s, size_t item, sale_item_state *out);

/* Item's stock total becomes total (absolute) and stock left moves by the
 * difference. -EBUSY, nothing changed, when total is below the units sold
 * or held by the sale's orders; -EOPNOTSUPP, nothing changed, when it is
 * lower than the total in force on the Redis Cluster store, which only
 * raises it. OUT: *held (may be NULL): those units. */
int sale_store_set_stock(sale_store *s, size_t item, int64_t total, int64_t *held);

/* Item's per-user limit (>= 1) from the next decision on (on the Redis
 * Cluster store: of this process; every other one within a second); a user
 * already over a lowered limit keeps what they bought. */
int sale_store_set_limit(sale_store *s, size_t item, uint32_t limit);

/* Start the next sale: stock[i] (-1, or stock NULL: the stock total in force)
 * is item i's stock, all of it left, no purchase counted. OUT: *epoch (may
 * be NULL), the new sale's number. */
int sale_store_new_sale(sale_store *s, const int64_t *stock, uint64_t *epoch);

/* Readiness: 0 when the store answers. */
int sale_store_ping(sale_store *s);

/* ---- order events, for an order sink outside the deciding processes ---- */

typedef struct sale_event {
    const char *id;   /* opaque, within its stream: pass it to sale_store_events_ack */
    const char *type; /* "reserved", "paid" or "cancelled" */
    const char *order_id;
    const char *item_id;
    const char *user_id;
    const char *request_id;   /* UUID text */
    uint64_t at_ms;           /* when it happened (unix ms) */
    uint64_t pay_deadline_ms; /* reserved events; 0 otherwise */
} sale_event;

/* Called once per event; the pointers are valid during the call only.
 * Return 0 to go on, negative to stop (the rest stay pending). */
typedef int (*sale_event_fn)(void *arg, const sale_event *ev);

/* How many event streams the store keeps, numbered 0..n-1; 0 when its order
 * events are not read here (the memory store: they are on the order topic of
 * sale_store_queue, served over rpc/ by the process that holds the store). */
size_t sale_store_event_streams(const sale_store *s);

/* Read up to max events of stream as consumer `consumer` of group `group`
 * (created at the start of the stream on first use). Events this consumer
 * read before and has not acknowledged come first (at-least-once: a consumer
 * that crashed between read and ack gets them again); only when none are
 * pending does it wait up to block_ms (0: do not wait) for new ones. Returns
 * how many events were passed to fn, or negative errno (-ERANGE: no such
 * stream). */
int sale_store_events_read(sale_store *s, size_t stream, const char *group, const char *consumer,
                           size_t max, uint32_t block_ms, sale_event_fn fn, void *arg);

/* Acknowledge ids[0..n) of stream, read by sale_store_events_read. Returns how
 * many were pending, or negative errno. */
int sale_store_events_ack(sale_store *s, size_t stream, const char *group,
                          const char *const *ids, size_t n);

/* Decide calls that failed because fewer than min_replicas_ack replicas
 * acknowledged their writes in time (the purchases stay unanswered, then
 * 504 at their deadline, until a retry is acknowledged). 0 when the store
 * has no replicas to wait for. */
uint64_t sale_store_replica_ack_timeouts(sale_store *s);

/* ---- the reaper: one thread that cancels unpaid orders ---- */

typedef struct sale_reaper sale_reaper;

typedef struct sale_reaper_config {
    uint32_t period_ms; /* one round every period_ms */
    /* After each round, every item's stock left (as sale_store_left says
     * it, when it can): the caller's stock view and sold-out flags heal
     * after a lost update or returned stock. May be NULL. */
    void (*stock)(void *arg, size_t item, int64_t left);
    void *arg;
} sale_reaper_config;

/* Start the thread. s and cfg->arg outlive it. OUT: *out. */
int sale_reaper_start(sale_store *s, const sale_reaper_config *cfg, sale_reaper **out);
/* Stop and join it. NULL is fine. */
void sale_reaper_stop(sale_reaper *rp);

#endif
