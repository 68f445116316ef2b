/*
 * store.c - the store interface: picks the backend at creation, then every
 * call goes through the backend's ops (store_impl.h). Also the reaper, the
 * one thread that cancels unpaid orders, in whatever process runs it.
 */
#include "store.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "store_impl.h"
#include "worker.h" /* sk_wall_ms */

int sale_store_create(const sale_store_config *cfg, sale_store **out, char *err, size_t errlen)
{
    int rc;
    *out = NULL;
    if (cfg->backend && !strcmp(cfg->backend, "memory"))
        rc = sale__store_memory_create(cfg, out, err, errlen);
    else if (cfg->backend && !strcmp(cfg->backend, "redis") && cfg->redis_cluster)
        rc = sale__store_cluster_create(cfg, out, err, errlen);
    else if (cfg->backend && !strcmp(cfg->backend, "redis"))
        rc = sale__store_redis_create(cfg, out, err, errlen);
    else {
        snprintf(err, errlen, "store: unknown backend '%s'", cfg->backend ? cfg->backend : "");
        return -EINVAL;
    }
    if (rc < 0)
        return rc;
    (*out)->nitems = cfg->nitems;
    snprintf((*out)->name, sizeof(*out)->name, "%s", cfg->name ? cfg->name : "sale");
    return 0;
}

size_t sale_store_items(const sale_store *s)
{
    return s->nitems;
}

void sale_store_destroy(sale_store *s)
{
    if (s)
        s->ops->destroy(s);
}

mq *sale_store_queue(sale_store *s)
{
    return s->ops->queue(s);
}

int sale_store_decide(sale_store *s, const sk_decide *reqs, size_t n, sk_outcome *outs,
                      int64_t *left)
{
    return s->be.decide(s->be.impl, reqs, n, outs, left);
}

int sale_store_known(sale_store *s, const char *item_id)
{
    return s->be.known(s->be.impl, item_id);
}

sk_backend sale_store_backend(sale_store *s)
{
    return s->be;
}

uint64_t sale_store_replica_ack_timeouts(sale_store *s)
{
    return s->ops->replica_ack_timeouts ? s->ops->replica_ack_timeouts(s) : 0;
}

int64_t sale_store_left(sale_store *s, size_t item)
{
    return s->ops->left(s, item);
}

int64_t sale_store_raise_stock(sale_store *s, size_t item, int64_t total)
{
    if (item >= s->nitems || total < 0)
        return -EINVAL;
    return s->ops->raise ? s->ops->raise(s, item, total) : -EOPNOTSUPP;
}

int sale_store_item_state(sale_store *s, size_t item, sale_item_state *out)
{
    if (item >= s->nitems)
        return -EINVAL;
    return s->ops->item_state ? s->ops->item_state(s, item, out) : -EOPNOTSUPP;
}

int sale_store_set_stock(sale_store *s, size_t item, int64_t total, int64_t *held)
{
    if (item >= s->nitems || total < 0)
        return -EINVAL;
    return s->ops->set_stock ? s->ops->set_stock(s, item, total, held) : -EOPNOTSUPP;
}

int sale_store_set_limit(sale_store *s, size_t item, uint32_t limit)
{
    if (item >= s->nitems || limit == 0)
        return -EINVAL;
    return s->ops->set_limit ? s->ops->set_limit(s, item, limit) : -EOPNOTSUPP;
}

int sale_store_new_sale(sale_store *s, const int64_t *stock, uint64_t *epoch)
{
    for (size_t i = 0; stock && i < s->nitems; i++)
        if (stock[i] < -1)
            return -EINVAL;
    return s->ops->new_sale ? s->ops->new_sale(s, stock, epoch) : -EOPNOTSUPP;
}

int sale_store_stats(sale_store *s, size_t item, sale_item_stats *out)
{
    return s->ops->stats(s, item, out);
}

int sale_store_order_get(sale_store *s, const char *order_id, sk_order *o)
{
    return s->ops->order_get(s, order_id, o);
}

int sale_store_order_pay(sale_store *s, const char *order_id, uint64_t now_ms, sk_order *o)
{
    return s->ops->order_pay(s, order_id, now_ms, o);
}

int sale_store_reap(sale_store *s, uint64_t now_ms)
{
    return s->ops->reap(s, now_ms);
}

int sale_store_ping(sale_store *s)
{
    return s->ops->ping(s);
}

size_t sale_store_event_streams(const sale_store *s)
{
    return s->ops->event_streams ? s->ops->event_streams(s) : 0;
}

int sale_store_events_read(sale_store *s, size_t stream, const char *group, const char *consumer,
                           size_t max, uint32_t block_ms, sale_event_fn fn, void *arg)
{
    if (stream >= sale_store_event_streams(s))
        return -ERANGE;
    return s->ops->events_read(s, stream, group, consumer, max, block_ms, fn, arg);
}

int sale_store_events_ack(sale_store *s, size_t stream, const char *group,
                          const char *const *ids, size_t n)
{
    if (stream >= sale_store_event_streams(s))
        return -ERANGE;
    return s->ops->events_ack(s, stream, group, ids, n);
}

/* ---- the reaper ---- */

struct sale_reaper {
    sale_store *s;
    sale_reaper_config cfg;
    size_t nitems;
    atomic_int stop;
    pthread_t tid;
};

static void *reaper_main(void *arg)
{
    sale_reaper *rp = arg;
    int failing = 0;
    while (!atomic_load(&rp->stop)) {
        int n = sale_store_reap(rp->s, sk_wall_ms());
        if (n > 0)
            sk_log(SK_LOG_INFO, "reaper", NULL, "%s: cancelled %d unpaid order%s", rp->s->name, n,
                   n == 1 ? "" : "s");
        if (n < 0 && !failing)
            sk_log(SK_LOG_WARN, "reaper", NULL, "%s: cancelling unpaid orders: %s (retrying)",
                   rp->s->name, strerror(-n));
        failing = n < 0;
        for (size_t i = 0; rp->cfg.stock && i < rp->nitems; i++) {
            int64_t left = sale_store_left(rp->s, i);
            if (left >= 0)
                rp->cfg.stock(rp->cfg.arg, i, left);
        }
        /* in slices, so that a stop is not kept waiting a whole period */
        for (uint32_t t = 0; t < rp->cfg.period_ms && !atomic_load(&rp->stop); t += 50) {
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

int sale_reaper_start(sale_store *s, const sale_reaper_config *cfg, sale_reaper **out)
{
    sale_reaper *rp = calloc(1, sizeof *rp);
    if (!rp)
        return -ENOMEM;
    rp->s = s;
    rp->cfg = *cfg;
    rp->nitems = sale_store_items(s);
    int rc = -pthread_create(&rp->tid, NULL, reaper_main, rp);
    if (rc < 0) {
        free(rp);
        return rc;
    }
    *out = rp;
    return 0;
}

void sale_reaper_stop(sale_reaper *rp)
{
    if (!rp)
        return;
    atomic_store(&rp->stop, 1);
    pthread_join(rp->tid, NULL);
    free(rp);
}
