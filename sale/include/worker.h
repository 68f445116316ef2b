/*
 * worker.h - seckill worker threads: consume the request topic in group
 * "seckill" in batches, decide each batch in one backend call, deliver every
 * outcome, then commit.
 *
 * Per message: decode -> past deadline? (verdict expired: stock untouched)
 * -> blocklist -> sale window -> backend (stored decision, per-user limit,
 * stock) -> link->deliver -> link->stock. Messages are committed only after
 * their outcomes were handed over (ack after delivery): a crash in between
 * redelivers them, and the backend's stored decision answers again.
 *
 * Where messages come from is an sk_source: the embedded queue (sk_source_mq)
 * or, in a separate worker process, a gateway over rpc/.
 */
#ifndef SECKILL_SK_WORKER_H
#define SECKILL_SK_WORKER_H

#include <stdint.h>

#include "backend.h"
#include "mq.h"
#include "sk.h"

typedef struct sk_worker sk_worker;

/* A stream of request messages with cumulative acknowledgement, one handle per
 * worker thread (mq_consumer semantics: see mq.h). */
typedef struct sk_source {
    void *impl;
    int (*open)(void *impl, const char *consumer_id, void **handle);
    void (*close)(void *impl, void *handle);
    int (*fetch)(void *handle, size_t max, uint32_t wait_ms, const mq_message **msgs);
    int (*commit)(void *handle, const mq_message *m);
} sk_source;

/* The request topic of the embedded queue, consumed in group SK_GROUP. */
sk_source sk_source_mq(mq_topic *t);

typedef struct sk_item_window {
    const char *id;
    int64_t starts_at; /* unix seconds; 0: open from the start */
    int64_t ends_at;   /* unix seconds; 0: never ends */
} sk_item_window;

typedef struct sk_worker_config {
    uint32_t threads;
    uint32_t batch;               /* messages per fetch and per backend call */
    uint32_t linger_us;           /* after a batch short of batch, pause before the next fetch */
    const char *name;             /* consumer id prefix, unique per worker instance */
    const char *const *blocklist; /* user ids refused by risk control */
    size_t nblocklist;
    const sk_item_window *windows; /* sale windows, by item id */
    size_t nwindows;
} sk_worker_config;

typedef struct sk_worker_stats {
    uint64_t decided, expired, redelivered, bad_messages, deliver_failures, backend_failures;
} sk_worker_stats;

/* Start cfg->threads threads. The source, backend and link must outlive the
 * worker; cfg's blocklist and windows are copied. OUT: *out, stop with
 * sk_worker_stop. */
int sk_worker_start(const sk_worker_config *cfg, const sk_source *src, const sk_backend *be,
                    const sk_link *link, sk_worker **out);
/* Replace the blocklist and the sale windows (a configuration reload): both
 * are copied; batches after the call see the new ones. -ENOMEM changes
 * nothing. */
int sk_worker_set_risk(sk_worker *w, const char *const *blocklist, size_t nblocklist,
                       const sk_item_window *windows, size_t nwindows);
/* Stop and join the threads; their partitions are released at once. */
void sk_worker_stop(sk_worker *w);
void sk_worker_get_stats(const sk_worker *w, sk_worker_stats *out);

/* Wall clock in ms since the epoch. */
uint64_t sk_wall_ms(void);

#endif
