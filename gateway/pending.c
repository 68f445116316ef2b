#include "pending.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct shard {
    pthread_mutex_t lock;
    gw_waiter *buckets[64];
} __attribute__((aligned(64))) shard;

struct gw_pending {
    size_t nshards; /* power of two */
    _Atomic size_t count;
    shard *shards;
};

uint64_t gw_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t id_hash(const uint8_t id[16])
{
    uint64_t h; /* request ids are random UUIDs: their bytes are the hash */
    memcpy(&h, id + 8, sizeof h);
    return h;
}

static shard *shard_of(gw_pending *p, const uint8_t id[16], gw_waiter ***bucket)
{
    uint64_t h = id_hash(id);
    shard *s = &p->shards[h & (p->nshards - 1)];
    *bucket = &s->buckets[(h >> 32) & 63];
    return s;
}

int gw_pending_create(size_t nshards, gw_pending **out)
{
    size_t n = 1;
    while (n < nshards)
        n <<= 1;
    gw_pending *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->shards = aligned_alloc(64, n * sizeof *p->shards);
    if (!p->shards) {
        free(p);
        return -ENOMEM;
    }
    memset(p->shards, 0, n * sizeof *p->shards);
    p->nshards = n;
    for (size_t i = 0; i < n; i++)
        pthread_mutex_init(&p->shards[i].lock, NULL);
    *out = p;
    return 0;
}

void gw_pending_destroy(gw_pending *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->nshards; i++)
        pthread_mutex_destroy(&p->shards[i].lock);
    free(p->shards);
    free(p);
}

int gw_waiter_init(gw_waiter *w, const uint8_t id[16])
{
    pthread_condattr_t ca;
    memset(w, 0, sizeof *w);
    memcpy(w->id, id, 16);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&w->cond, &ca);
    pthread_condattr_destroy(&ca);
    return -rc;
}

void gw_waiter_release(gw_waiter *w)
{
    pthread_cond_destroy(&w->cond);
}

void gw_pending_add(gw_pending *p, gw_waiter *w)
{
    gw_waiter **b;
    shard *s = shard_of(p, w->id, &b);
    pthread_mutex_lock(&s->lock);
    w->done = 0;
    w->next = *b;
    *b = w;
    atomic_fetch_add(&p->count, 1); /* under the lock: a completer's decrement comes after */
    pthread_mutex_unlock(&s->lock);
}

/* Unlink w from its bucket; caller holds the shard lock. 1 when it was there. */
static int unlink_waiter(gw_waiter **b, gw_waiter *w)
{
    for (gw_waiter **pp = b; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            w->next = NULL;
            return 1;
        }
    return 0;
}

int gw_pending_wait(gw_pending *p, gw_waiter *w, uint64_t deadline_ns)
{
    gw_waiter **b;
    shard *s = shard_of(p, w->id, &b);
    struct timespec ts = {.tv_sec = (time_t)(deadline_ns / 1000000000ULL),
                          .tv_nsec = (long)(deadline_ns % 1000000000ULL)};
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    while (!w->done) {
        int e = pthread_cond_timedwait(&w->cond, &s->lock, &ts);
        if (e == ETIMEDOUT && !w->done) {
            if (unlink_waiter(b, w))
                atomic_fetch_sub(&p->count, 1);
            rc = -ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int gw_pending_cancel(gw_pending *p, gw_waiter *w)
{
    gw_waiter **b;
    shard *s = shard_of(p, w->id, &b);
    int rc;
    pthread_mutex_lock(&s->lock);
    if (w->done) {
        rc = -EALREADY;
    } else {
        if (unlink_waiter(b, w))
            atomic_fetch_sub(&p->count, 1);
        rc = 0;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int gw_pending_complete(gw_pending *p, const sk_outcome *o)
{
    gw_waiter **b;
    shard *s = shard_of(p, o->request_id, &b);
    gw_waiter *w;
    pthread_mutex_lock(&s->lock);
    for (w = *b; w; w = w->next)
        if (memcmp(w->id, o->request_id, 16) == 0)
            break;
    if (!w) {
        pthread_mutex_unlock(&s->lock);
        return -ENOENT;
    }
    unlink_waiter(b, w);
    atomic_fetch_sub(&p->count, 1);
    w->out = *o;
    w->done = 1;
    if (w->wake)
        w->wake(w);
    else
        pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int gw_pending_contains(gw_pending *p, const uint8_t id[16])
{
    gw_waiter **b;
    shard *s = shard_of(p, id, &b);
    int found = 0;
    pthread_mutex_lock(&s->lock);
    for (gw_waiter *w = *b; w; w = w->next)
        if (memcmp(w->id, id, 16) == 0) {
            found = 1;
            break;
        }
    pthread_mutex_unlock(&s->lock);
    return found;
}

size_t gw_pending_count(gw_pending *p)
{
    return atomic_load(&p->count);
}
