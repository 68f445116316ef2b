/*
 * store_impl.h - internal to sale/: what a store backend fills in. Every
 * backend's handle starts with a struct sale_store whose ops point at its
 * functions; store.c dispatches through them and never looks further.
 */
#ifndef SECKILL_SALE_STORE_IMPL_H
#define SECKILL_SALE_STORE_IMPL_H

#include "store.h"

typedef struct sale_store_ops {
    void (*destroy)(sale_store *s);
    mq *(*queue)(sale_store *s);
    int64_t (*left)(sale_store *s, size_t item);
    int (*stats)(sale_store *s, size_t item, sale_item_stats *out);
    int (*order_get)(sale_store *s, const char *order_id, sk_order *o);
    int (*order_pay)(sale_store *s, const char *order_id, uint64_t now_ms, sk_order *o);
    int (*reap)(sale_store *s, uint64_t now_ms);
    int (*ping)(sale_store *s);
    int64_t (*raise)(sale_store *s, size_t item, int64_t total);
    /* order events; NULL when the backend has no streams of its own */
    size_t (*event_streams)(const sale_store *s);
    int (*events_read)(sale_store *s, size_t stream, const char *group, const char *consumer,
                       size_t max, uint32_t block_ms, sale_event_fn fn, void *arg);
    int (*events_ack)(sale_store *s, size_t stream, const char *group, const char *const *ids,
                      size_t n);
    /* the admin API (store.h); NULL: -EOPNOTSUPP. item < nitems, total >= 0,
     * limit >= 1 and stock[i] >= -1 are checked by store.c. */
    int (*item_state)(sale_store *s, size_t item, sale_item_state *out);
    int (*set_stock)(sale_store *s, size_t item, int64_t total, int64_t *held);
    int (*set_limit)(sale_store *s, size_t item, uint32_t limit);
    int (*new_sale)(sale_store *s, const int64_t *stock, uint64_t *epoch);
    uint64_t (*replica_ack_timeouts)(sale_store *s); /* NULL: never */
} sale_store_ops;

struct sale_store {
    const sale_store_ops *ops;
    sk_backend be; /* deciding: set by the backend's constructor, called as is */
    size_t nitems; /* set by sale_store_create */
    char name[64]; /* the program, for log lines */
};

/* Each backend's constructor: sale_store_create's contract. */
int sale__store_memory_create(const sale_store_config *cfg, sale_store **out, char *err,
                              size_t errlen);
int sale__store_redis_create(const sale_store_config *cfg, sale_store **out, char *err,
                             size_t errlen);
int sale__store_cluster_create(const sale_store_config *cfg, sale_store **out, char *err,
                               size_t errlen);

#endif
