/*
 * worker.h - seckill worker threads: consume the request topic in group
 * "seckill", decide each request, deliver the outcome, then commit.
 *
 * Per message: decode -> stored decision? -> past deadline? (expired, stock
 * untouched) -> blocklist -> sale window -> inventory (limit + stock) ->
 * link->deliver -> link->stock when stock changed. The batch's messages are
 * committed only after their outcomes were handed over (ack after delivery):
 * a crash in between redelivers them, and the stored decision answers again.
 */
#ifndef SECKILL_SK_WORKER_H
#define SECKILL_SK_WORKER_H

#include <stdint.h>

#include "inventory.h"
#include "mq.h"
#include "sk.h"

typedef struct sk_worker sk_worker;

typedef struct sk_item_window {
    const char *id;
    int64_t starts_at; /* unix seconds; 0: open from the start */
    int64_t ends_at;   /* unix seconds; 0: never ends */
} sk_item_window;

typedef struct sk_worker_config {
    uint32_t threads;
    uint32_t batch;              /* messages per fetch */
    const char *name;            /* consumer id prefix, unique per worker instance */
    const char *const *blocklist; /* user ids refused by risk control */
    size_t nblocklist;
    const sk_item_window *windows; /* sale windows, by item id */
    size_t nwindows;
} sk_worker_config;

typedef struct sk_worker_stats {
    uint64_t decided, expired, redelivered, bad_messages, deliver_failures;
} sk_worker_stats;

/* Start cfg->threads consumer threads on topic t. inv and link must outlive
 * the worker. OUT: *out, stop with sk_worker_stop. */
int sk_worker_start(const sk_worker_config *cfg, mq_topic *t, sk_inventory *inv,
                    const sk_link *link, sk_worker **out);
/* Stop and join the threads; their partitions are released at once. */
void sk_worker_stop(sk_worker *w);
void sk_worker_get_stats(const sk_worker *w, sk_worker_stats *out);

/* Wall clock in ms since the epoch. */
uint64_t sk_wall_ms(void);

#endif
