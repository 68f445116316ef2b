#include "worker.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uuid/uuid.h>

#include "commits.h"
#include "log.h"
#include "message.h"

typedef struct thread_ctx {
    struct sk_worker *w;
    pthread_t tid;
    void *src;
    int started;
    /* per-batch scratch, sized to cfg.batch */
    sk_msg *reqs;
    sk_decide *decide;
    sk_outcome *outs;
    int64_t *left;
    int *state; /* per message: BAD, OWN (decided without the backend), or index into decide */
} thread_ctx;

/* The blocklist and sale windows in force: a deep copy, replaced whole by
 * sk_worker_set_risk under risk_lock (taken for reading once per batch). */
typedef struct risk {
    char **blocklist;
    size_t nblocklist;
    sk_item_window *windows; /* ids point into idbuf */
    size_t nwindows;
    char *idbuf;
} risk;

struct sk_worker {
    sk_worker_config cfg;
    pthread_rwlock_t risk_lock;
    risk *risk;
    sk_source src;
    sk_backend be;
    sk_link link;
    atomic_int stop;
    thread_ctx *threads;
    _Atomic uint64_t decided, expired, redelivered, bad_messages, deliver_failures,
        backend_failures;
};

enum { ST_BAD = -1, ST_OWN = -2 };

uint64_t sk_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- the embedded queue as a source ---- */

static int mq_src_open(void *impl, const char *id, void **h)
{
    return mq_consumer_create(impl, SK_GROUP, id, (mq_consumer **)h);
}

static void mq_src_close(void *impl, void *h)
{
    (void)impl;
    mq_consumer_destroy(h);
}

static int mq_src_fetch(void *h, size_t max, uint32_t wait_ms, const mq_message **msgs)
{
    return mq_fetch(h, max, wait_ms, msgs);
}

static int mq_src_commit(void *h, const mq_message *m)
{
    return mq_commit(h, m);
}

sk_source sk_source_mq(mq_topic *t)
{
    return (sk_source){.impl = t, .open = mq_src_open, .close = mq_src_close,
                       .fetch = mq_src_fetch, .commit = mq_src_commit};
}

/* ---- risk control ---- */

static void risk_free(risk *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nblocklist; i++)
        free(r->blocklist[i]);
    free(r->blocklist);
    free(r->windows);
    free(r->idbuf);
    free(r);
}

static risk *risk_copy(const char *const *blocklist, size_t nblocklist,
                       const sk_item_window *windows, size_t nwindows)
{
    risk *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->blocklist = calloc(nblocklist ? nblocklist : 1, sizeof *r->blocklist);
    r->windows = calloc(nwindows ? nwindows : 1, sizeof *r->windows);
    r->idbuf = calloc(nwindows ? nwindows : 1, SK_ID_MAX + 1);
    if (!r->blocklist || !r->windows || !r->idbuf)
        goto out_free;
    for (; r->nblocklist < nblocklist; r->nblocklist++)
        if (!(r->blocklist[r->nblocklist] = strdup(blocklist[r->nblocklist])))
            goto out_free;
    for (size_t i = 0; i < nwindows; i++) {
        char *id = r->idbuf + i * (SK_ID_MAX + 1);
        snprintf(id, SK_ID_MAX + 1, "%s", windows[i].id);
        r->windows[i] = (sk_item_window){id, windows[i].starts_at, windows[i].ends_at};
    }
    r->nwindows = nwindows;
    return r;
out_free:
    risk_free(r);
    return NULL;
}

int sk_worker_set_risk(sk_worker *w, const char *const *blocklist, size_t nblocklist,
                       const sk_item_window *windows, size_t nwindows)
{
    risk *r = risk_copy(blocklist, nblocklist, windows, nwindows);
    if (!r)
        return -ENOMEM;
    pthread_rwlock_wrlock(&w->risk_lock);
    risk *old = w->risk;
    w->risk = r;
    pthread_rwlock_unlock(&w->risk_lock);
    risk_free(old);
    return 0;
}

/* Caller holds risk_lock for reading. */
static int blocked(const sk_worker *w, const char *user)
{
    for (size_t i = 0; i < w->risk->nblocklist; i++)
        if (strcmp(w->risk->blocklist[i], user) == 0)
            return 1;
    return 0;
}

static enum sk_result window_verdict(const sk_worker *w, const char *item_id, uint64_t now_ms)
{
    int64_t now_s = (int64_t)(now_ms / 1000);
    for (size_t i = 0; i < w->risk->nwindows; i++) {
        const sk_item_window *win = &w->risk->windows[i];
        if (strcmp(win->id, item_id) != 0)
            continue;
        if (win->starts_at && now_s < win->starts_at)
            return SK_NOT_STARTED;
        if (win->ends_at && now_s >= win->ends_at)
            return SK_ENDED;
    }
    return SK_SUCCESS;
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000L};
    nanosleep(&ts, NULL);
}

static void sleep_ms(long ms)
{
    sleep_us(ms * 1000);
}

/* Decode the batch and reach each message's verdict; fills tc->decide for the
 * ones the backend must see. Returns how many those are. retry: the same
 * batch again after a failed backend call (verdicts are reached anew, since a
 * deadline may have passed meanwhile; nothing is counted twice). */
static size_t prepare(thread_ctx *tc, const mq_message *msgs, int n, int retry)
{
    sk_worker *w = tc->w;
    uint64_t now = sk_wall_ms();
    size_t nd = 0;
    pthread_rwlock_rdlock(&w->risk_lock);
    for (int i = 0; i < n; i++) {
        const mq_message *m = &msgs[i];
        sk_msg *req = &tc->reqs[i];
        sk_outcome *o = &tc->outs[i];
        if (m->delivery > 1 && !retry)
            atomic_fetch_add(&w->redelivered, 1);
        if (sk_msg_decode(m->value, m->value_len, req) < 0) {
            /* Deterministically unreadable: no redelivery can help, skip it. */
            if (!retry) {
                atomic_fetch_add(&w->bad_messages, 1);
                sk_log(SK_LOG_WARN, "worker", NULL, "dropping undecodable message %s/%u@%llu",
                       m->topic, m->partition, (unsigned long long)m->offset);
            }
            tc->state[i] = ST_BAD;
            continue;
        }
        memset(o, 0, sizeof *o);
        memcpy(o->gateway_id, req->gateway_id, 16);
        memcpy(o->request_id, req->request_id, 16);
        memcpy(o->item_id, req->item_id, sizeof o->item_id);
        tc->left[i] = -1;
        if (!w->be.known(w->be.impl, req->item_id)) {
            o->result = SK_UNKNOWN_ITEM;
            tc->state[i] = ST_OWN;
            continue;
        }
        enum sk_result verdict = SK_SUCCESS;
        if (now > req->deadline_ms)
            verdict = SK_EXPIRED;
        else if (blocked(w, req->user_id))
            verdict = SK_BLOCKED;
        else
            verdict = window_verdict(w, req->item_id, now);
        tc->decide[nd] = (sk_decide){.item_id = req->item_id, .user_id = req->user_id,
                                     .request_id = req->request_id, .verdict = verdict};
        tc->state[i] = (int)nd++;
    }
    pthread_rwlock_unlock(&w->risk_lock);
    return nd;
}

/* A decided request's line: a sale (info; as many as the stock) or any
 * other outcome (debug), under the client's trace id when it sent one. */
static void log_outcome(const sk_msg *req, const sk_outcome *o)
{
    enum sk_log_level lv = o->result == SK_SUCCESS ? SK_LOG_INFO : SK_LOG_DEBUG;
    if (!sk_log_enabled(lv))
        return;
    char rid[37];
    if (!req->trace[0])
        uuid_unparse_lower(req->request_id, rid);
    sk_log(lv, "worker", req->trace[0] ? req->trace : rid, "%s item=%s user=%s%s%s",
           o->result == SK_SUCCESS ? "sold" : sk_result_name(o->result), o->item_id, req->user_id,
           o->order_id[0] ? " order=" : "", o->order_id);
}

/* A worker thread's loop: fetch a batch, decide it in the store, deliver
 * the outcomes in order, commit per partition up to the first failed
 * delivery. Long, but one pass of the loop is the order of the
 * at-least-once contract (deliver and commit only after the decision is
 * stored), which is easier to check in one place. */
static void *thread_main(void *arg)
{
    thread_ctx *tc = arg;
    sk_worker *w = tc->w;
    /* decided outcomes live in tc->outs by message index; the backend writes
     * into a compact array, copied back below */
    sk_outcome *bouts = calloc(w->cfg.batch, sizeof *bouts);
    int64_t *bleft = calloc(w->cfg.batch, sizeof *bleft);
    long backoff_ms = 0;
    if (!bouts || !bleft)
        goto out_free;
    while (!atomic_load(&w->stop)) {
        const mq_message *msgs;
        int n = w->src.fetch(tc->src, w->cfg.batch, 100, &msgs);
        if (n < 0) {
            if (n == -ECANCELED || n == -ESHUTDOWN)
                break;
            sleep_ms(10);
            continue;
        }
        if (n == 0)
            continue;
        /* a short batch: let the next one fill a little, so one store call
         * (one Lua call per stock bucket on a cluster) decides more */
        int linger = w->cfg.linger_us && (uint32_t)n < w->cfg.batch;
        /* A failed backend call decided nothing we can rely on, yet it may
         * have taken effect (a Redis call that timed out on our side can
         * still run). So its requests get no answer from it: they stay
         * parked, and this thread decides the same batch again once the
         * backend answers; the stored decision makes the retry return what
         * the lost call did, if it ran. A request whose deadline passes
         * meanwhile is answered 504 by its gateway and its outcome stays
         * queryable. Nothing is committed before it is decided, so a stop
         * (or a lease lost meanwhile) leaves it to the next holder. */
        int brc, retry = 0;
        size_t nd;
        for (;;) {
            nd = prepare(tc, msgs, n, retry);
            brc = nd ? w->be.decide(w->be.impl, tc->decide, nd, bouts, bleft) : 0;
            if (brc >= 0 || atomic_load(&w->stop))
                break;
            atomic_fetch_add(&w->backend_failures, 1);
            backoff_ms = backoff_ms ? (backoff_ms * 2 > 1000 ? 1000 : backoff_ms * 2) : 10;
            sleep_ms(backoff_ms);
            retry = 1;
        }
        if (brc < 0)
            break;
        backoff_ms = 0;

        /* Deliver in order; commit, per partition, the last message whose
         * outcome went out, stopping a partition at its first failed delivery
         * so nothing after it is acknowledged. */
        sk_commits parts;
        sk_commits_init(&parts);
        for (int i = 0; i < n; i++) {
            const mq_message *m = &msgs[i];
            int k = sk_commits_slot(&parts, m);
            if (k < 0) {
                /* more partitions in one batch than tracked: stop here,
                 * the rest comes again after the ack timeout */
                break;
            }
            if (sk_commits_failed(&parts, k))
                continue;
            if (tc->state[i] != ST_BAD) {
                sk_outcome *o = &tc->outs[i];
                if (tc->state[i] >= 0) {
                    const sk_outcome *b = &bouts[tc->state[i]];
                    if (b->result == SK_UNAVAILABLE) {
                        /* being decided by another delivery right now: that
                         * one answers; this one is left for redelivery */
                        sk_commits_fail(&parts, k);
                        continue;
                    }
                    o->result = b->result;
                    memcpy(o->order_id, b->order_id, sizeof o->order_id);
                    tc->left[i] = bleft[tc->state[i]];
                    atomic_fetch_add(&w->decided, 1);
                    if (o->result == SK_EXPIRED)
                        atomic_fetch_add(&w->expired, 1);
                }
                if (w->link.deliver(w->link.arg, o) < 0) {
                    atomic_fetch_add(&w->deliver_failures, 1);
                    sk_commits_fail(&parts, k);
                    continue;
                }
                log_outcome(&tc->reqs[i], o);
                if (w->link.stock && tc->left[i] >= 0 &&
                    (o->result == SK_SUCCESS || tc->left[i] == 0))
                    w->link.stock(w->link.arg, o->item_id, tc->left[i]);
            }
            sk_commits_done(&parts, k, m);
        }
        sk_commits_flush(&parts, w->src.commit, tc->src);
        if (w->link.flush)
            w->link.flush(w->link.arg);
        if (linger && !atomic_load(&w->stop))
            sleep_us(w->cfg.linger_us);
    }
out_free:
    free(bouts);
    free(bleft);
    return NULL;
}

static void free_scratch(thread_ctx *tc)
{
    free(tc->reqs);
    free(tc->decide);
    free(tc->outs);
    free(tc->left);
    free(tc->state);
}

int sk_worker_start(const sk_worker_config *cfg, const sk_source *src, const sk_backend *be,
                    const sk_link *link, sk_worker **out)
{
    if (!cfg->threads || !cfg->batch || !link->deliver || !be->decide || !be->known)
        return -EINVAL;
    sk_worker *w = calloc(1, sizeof *w);
    int rc = -ENOMEM;
    if (!w)
        return -ENOMEM;
    w->cfg = *cfg;
    w->src = *src;
    w->be = *be;
    w->link = *link;
    pthread_rwlock_init(&w->risk_lock, NULL);
    w->risk = risk_copy(cfg->blocklist, cfg->nblocklist, cfg->windows, cfg->nwindows);
    w->threads = calloc(cfg->threads, sizeof *w->threads);
    if (!w->threads || !w->risk) {
        risk_free(w->risk);
        pthread_rwlock_destroy(&w->risk_lock);
        free(w->threads);
        free(w);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < cfg->threads; i++) {
        thread_ctx *tc = &w->threads[i];
        char id[128];
        snprintf(id, sizeof id, "%s-%u", cfg->name ? cfg->name : "worker", i);
        tc->w = w;
        tc->reqs = calloc(cfg->batch, sizeof *tc->reqs);
        tc->decide = calloc(cfg->batch, sizeof *tc->decide);
        tc->outs = calloc(cfg->batch, sizeof *tc->outs);
        tc->left = calloc(cfg->batch, sizeof *tc->left);
        tc->state = calloc(cfg->batch, sizeof *tc->state);
        if (!tc->reqs || !tc->decide || !tc->outs || !tc->left || !tc->state) {
            rc = -ENOMEM;
            goto out_stop;
        }
        rc = w->src.open(w->src.impl, id, &tc->src);
        if (rc < 0)
            goto out_stop;
        rc = -pthread_create(&tc->tid, NULL, thread_main, tc);
        if (rc < 0) {
            w->src.close(w->src.impl, tc->src);
            tc->src = NULL;
            goto out_stop;
        }
        tc->started = 1;
    }
    *out = w;
    return 0;

out_stop:
    sk_worker_stop(w);
    return rc;
}

void sk_worker_stop(sk_worker *w)
{
    if (!w)
        return;
    atomic_store(&w->stop, 1);
    for (uint32_t i = 0; i < w->cfg.threads; i++) {
        thread_ctx *tc = &w->threads[i];
        if (tc->started) {
            pthread_join(tc->tid, NULL);
            w->src.close(w->src.impl, tc->src);
        }
        free_scratch(tc);
    }
    risk_free(w->risk);
    pthread_rwlock_destroy(&w->risk_lock);
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
    out->backend_failures = atomic_load(&mw->backend_failures);
}
