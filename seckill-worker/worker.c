#include "worker.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "message.h"

typedef struct thread_ctx {
    struct sk_worker *w;
    pthread_t tid;
    mq_consumer *consumer;
    int started;
} thread_ctx;

struct sk_worker {
    sk_worker_config cfg;
    mq_topic *topic;
    sk_inventory *inv;
    sk_link link;
    atomic_int stop;
    thread_ctx *threads;
    _Atomic uint64_t decided, expired, redelivered, bad_messages, deliver_failures;
};

uint64_t sk_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int blocked(const sk_worker *w, const char *user)
{
    for (size_t i = 0; i < w->cfg.nblocklist; i++)
        if (strcmp(w->cfg.blocklist[i], user) == 0)
            return 1;
    return 0;
}

static enum sk_result window_verdict(const sk_worker *w, const char *item_id, uint64_t now_ms)
{
    int64_t now_s = (int64_t)(now_ms / 1000);
    for (size_t i = 0; i < w->cfg.nwindows; i++) {
        const sk_item_window *win = &w->cfg.windows[i];
        if (strcmp(win->id, item_id) != 0)
            continue;
        if (win->starts_at && now_s < win->starts_at)
            return SK_NOT_STARTED;
        if (win->ends_at && now_s >= win->ends_at)
            return SK_ENDED;
    }
    return SK_SUCCESS;
}

/* Decide one message and deliver its outcome. Returns 0 when the message may
 * be committed, negative when delivery failed (leave it for redelivery). */
static int handle(sk_worker *w, const mq_message *m)
{
    sk_msg req;
    sk_outcome o;
    int64_t left = -1;

    if (sk_msg_decode(m->value, m->value_len, &req) < 0) {
        /* Deterministically unreadable: no redelivery can help, skip it. */
        atomic_fetch_add(&w->bad_messages, 1);
        fprintf(stderr, "seckill-worker: dropping undecodable message %s/%u@%llu\n",
                m->topic, m->partition, (unsigned long long)m->offset);
        return 0;
    }
    memset(&o, 0, sizeof o);
    memcpy(o.gateway_id, req.gateway_id, 16);
    memcpy(o.request_id, req.request_id, 16);
    memcpy(o.item_id, req.item_id, sizeof o.item_id);
    if (m->delivery > 1)
        atomic_fetch_add(&w->redelivered, 1);

    int it = sk_inventory_find(w->inv, req.item_id);
    if (it < 0) {
        o.result = SK_UNKNOWN_ITEM;
    } else {
        uint64_t now = sk_wall_ms();
        enum sk_result verdict = SK_SUCCESS;
        if (now > req.deadline_ms)
            verdict = SK_EXPIRED;
        else if (blocked(w, req.user_id))
            verdict = SK_BLOCKED;
        else
            verdict = window_verdict(w, req.item_id, now);
        int rc = sk_inventory_decide(w->inv, it, req.user_id, req.request_id, verdict, &o, &left);
        if (rc < 0)
            return rc;
        if (rc == 1) {
            atomic_fetch_add(&w->decided, 1);
            if (o.result == SK_EXPIRED)
                atomic_fetch_add(&w->expired, 1);
        }
    }
    int rc = w->link.deliver(w->link.arg, &o);
    if (rc < 0) {
        atomic_fetch_add(&w->deliver_failures, 1);
        return rc;
    }
    if (o.result == SK_SUCCESS || (o.result == SK_SOLD_OUT && left == 0)) {
        if (w->link.stock)
            w->link.stock(w->link.arg, o.item_id, left);
    }
    return 0;
}

static void *thread_main(void *arg)
{
    thread_ctx *tc = arg;
    sk_worker *w = tc->w;
    while (!atomic_load(&w->stop)) {
        const mq_message *msgs;
        int n = mq_fetch(tc->consumer, w->cfg.batch, 100, &msgs);
        if (n < 0) {
            if (n == -ECANCELED || n == -ESHUTDOWN)
                break;
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
            continue;
        }
        /* Commit, per partition, the last message whose outcome went out; stop
         * a partition at its first failure so nothing after it is acked. */
        const mq_message *last[64];
        uint32_t failed[64];
        size_t nparts = 0;
        for (int i = 0; i < n; i++) {
            const mq_message *m = &msgs[i];
            size_t k = 0;
            while (k < nparts && (last[k]->partition != m->partition ||
                                  strcmp(last[k]->topic, m->topic) != 0))
                k++;
            if (k < nparts && failed[k])
                continue;
            int rc = handle(w, m);
            if (k == nparts) {
                if (nparts == 64) {
                    /* More partitions in one batch than we track: commit now. */
                    if (rc == 0)
                        mq_commit(tc->consumer, m);
                    continue;
                }
                nparts++;
                last[k] = NULL;
                failed[k] = 0;
            }
            if (rc < 0)
                failed[k] = 1;
            else
                last[k] = m;
        }
        for (size_t k = 0; k < nparts; k++)
            if (last[k])
                mq_commit(tc->consumer, last[k]);
    }
    return NULL;
}

int sk_worker_start(const sk_worker_config *cfg, mq_topic *t, sk_inventory *inv,
                    const sk_link *link, sk_worker **out)
{
    if (!cfg->threads || !cfg->batch || !link->deliver)
        return -EINVAL;
    sk_worker *w = calloc(1, sizeof *w);
    int rc = -ENOMEM;
    uint32_t i;
    if (!w)
        return -ENOMEM;
    w->cfg = *cfg;
    w->topic = t;
    w->inv = inv;
    w->link = *link;
    w->threads = calloc(cfg->threads, sizeof *w->threads);
    if (!w->threads)
        goto out_free_w;
    for (i = 0; i < cfg->threads; i++) {
        char id[128];
        snprintf(id, sizeof id, "%s-%u", cfg->name ? cfg->name : "worker", i);
        w->threads[i].w = w;
        rc = mq_consumer_create(t, SK_GROUP, id, &w->threads[i].consumer);
        if (rc < 0)
            goto out_stop;
        rc = -pthread_create(&w->threads[i].tid, NULL, thread_main, &w->threads[i]);
        if (rc < 0) {
            mq_consumer_destroy(w->threads[i].consumer);
            goto out_stop;
        }
        w->threads[i].started = 1;
    }
    *out = w;
    return 0;

out_stop:
    sk_worker_stop(w);
    return rc;
out_free_w:
    free(w);
    return rc;
}

void sk_worker_stop(sk_worker *w)
{
    if (!w)
        return;
    atomic_store(&w->stop, 1);
    for (uint32_t i = 0; i < w->cfg.threads; i++) {
        if (!w->threads[i].started)
            continue;
        pthread_join(w->threads[i].tid, NULL);
        mq_consumer_destroy(w->threads[i].consumer);
    }
    free(w->threads);
    free(w);
}

void sk_worker_get_stats(const sk_worker *w, sk_worker_stats *out)
{
    sk_worker *mw = (sk_worker *)w;
    out->decided = atomic_load(&mw->decided);
    out->expired = atomic_load(&mw->expired);
    out->redelivered = atomic_load(&mw->redelivered);
    out->bad_messages = atomic_load(&mw->bad_messages);
    out->deliver_failures = atomic_load(&mw->deliver_failures);
}
