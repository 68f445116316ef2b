/*
 * store_redis.h - the Redis store: stock, per-user limits, decisions,
 * orders and order events kept in Redis, shared by any number of workers.
 *
 * Every decision is one Lua script call per item, so the invariants of
 * backend.h hold across processes: never oversell, never more than
 * per_user_limit per user, a request id decided once. A success writes its
 * order record and its order event in the same script: stock is never taken
 * without an order. Key layout and script steps: store_redis.c.
 *
 * Thread safety: every function may be called from any thread at once. The
 * handle keeps a pool of connections (SK_REDIS_POOL); a call borrows one for
 * its duration and waits when all are borrowed.
 *
 * Failures: a call that cannot reach Redis returns a negative errno within
 * about twice the command timeout (connect, then one read) and never hangs.
 * A broken connection is dropped; the next call reconnects, at most once per
 * backoff period (50 ms doubling to 1 s) while Redis stays unreachable, and
 * gets that period's error meanwhile. Errors: -ETIMEDOUT (no answer in time),
 * -ECONNREFUSED / -ECONNRESET / -EIO (connection), -ENOENT (an item's stock
 * key is missing: not preheated, or Redis lost its data), -EAGAIN (Redis is
 * loading its data set), -ENOMEM.
 *
 * hiredis writes with write(2): the process must ignore SIGPIPE (the gateway
 * does), or a write to a connection Redis just closed kills it.
 */
#ifndef SECKILL_SK_INVENTORY_REDIS_H
#define SECKILL_SK_INVENTORY_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "sk.h"
#include "store.h"

typedef struct sk_redis sk_redis;

#define SK_REDIS_POOL 16                            /* connections per handle */
#define SK_REDIS_DECISION_TTL_MS (24 * 3600 * 1000) /* how long a decision is kept */

typedef struct sk_redis_item {
    const char *id;          /* sk_id_valid */
    int64_t stock;           /* preheated only when Redis has no stock for id */
    uint32_t per_user_limit; /* >= 1 */
    uint32_t pay_timeout_ms; /* a reserved order not paid by then is cancelled by reap */
} sk_redis_item;

/* Connect to host:port, load the scripts and preheat each item's stock with
 * SET NX, so a restarted worker continues a running sale instead of resetting
 * it. timeout_ms bounds connecting and each reply. Copies items.
 * OUT: *out, destroy with sk_redis_destroy. Fails when Redis is unreachable. */
int sk_redis_create(const char *host, int port, uint32_t timeout_ms, const sk_redis_item *items,
                    size_t nitems, sk_redis **out);
void sk_redis_destroy(sk_redis *r);
/* sk_redis_create, tried again every 100 ms for up to patience_ms while Redis
 * cannot be reached or is loading its data (a gateway or worker starting
 * together with Redis, or on a busy machine). Other errors return at once. */
int sk_redis_open(const char *host, int port, uint32_t timeout_ms, const sk_redis_item *items,
                  size_t nitems, uint32_t patience_ms, sk_redis **out);

/* The backend interface over r (r must outlive it). decide() sends one
 * EVALSHA per item of the batch, pipelined: one round trip. Items not
 * configured answer SK_UNKNOWN_ITEM without asking Redis; known() answers
 * from the configured items. */
sk_backend sk_redis_backend(sk_redis *r);

/* Answer a decided batch only once n replicas acknowledged its writes
 * (WAIT n timeout_ms after the batch; store_redis.c says why that covers
 * them); fewer in time: the decide call fails with -ETIMEDOUT, its decisions
 * stay stored, and deciding the same requests again answers them once the
 * replicas caught up. n = 0: off (the default). Call before r is shared. */
void sk_redis_set_replica_ack(sk_redis *r, uint32_t n, uint32_t timeout_ms);
/* Decide calls failed because fewer than n replicas acknowledged in time. */
uint64_t sk_redis_replica_ack_timeouts(sk_redis *r);

/* Readiness: 0 when Redis answers PING. */
int sk_redis_ping(sk_redis *r);

/* Stock left for item_id (>= 0), or negative errno (-ENOENT: not preheated). */
int64_t sk_redis_left(sk_redis *r, const char *item_id);

/* ---- orders ---- */

typedef sk_order sk_redis_order; /* states and fields: sk.h */

/* Orders live per item (the item is the Redis Cluster hash tag), so every
 * order call names (item_id, order_id); a success's sk_outcome carries both.
 * OUT: *o. -ENOENT when there is no such order. */
int sk_redis_order_get(sk_redis *r, const char *item_id, const char *order_id, sk_redis_order *o);

/* Mark a reserved order paid, at now_ms (unix ms). Idempotent: 0 when paid
 * now or already paid. -ECANCELED when it was cancelled, -ETIME when its pay
 * deadline has passed (reap will cancel it), -ENOENT when unknown. */
int sk_redis_order_pay(sk_redis *r, const char *item_id, const char *order_id, uint64_t now_ms);

/* Cancel every reserved order whose pay deadline is <= now_ms: its stock goes
 * back and its user may buy again, each exactly once however many reapers run.
 * Returns how many orders this call cancelled, or negative errno (orders
 * cancelled before the error stay cancelled). */
int sk_redis_reap(sk_redis *r, uint64_t now_ms);

/* ---- order events: one Redis stream per item, consumed in groups ---- */

/* The events of store.h; id is the stream entry id. */
typedef sale_event sk_redis_event;
typedef sale_event_fn sk_redis_event_fn;

/* Read up to max events of item_id's stream as consumer `consumer` of group
 * `group` (created at the start of the stream on first use). Entries this
 * consumer read before and has not acknowledged come first (at-least-once: a
 * consumer that crashed between read and ack gets them again); only when none
 * are pending does it wait up to block_ms (0: do not wait) for new ones.
 * Returns how many events were passed to fn, or negative errno. */
int sk_redis_events_read(sk_redis *r, const char *item_id, const char *group, const char *consumer,
                         size_t max, uint32_t block_ms, sk_redis_event_fn fn, void *arg);

/* Acknowledge ids[0..n) (XACK). Returns how many were pending, or negative errno. */
int sk_redis_events_ack(sk_redis *r, const char *item_id, const char *group, const char *const *ids,
                        size_t n);

#endif
