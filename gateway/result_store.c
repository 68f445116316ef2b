#include "result_store.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SHARDS 16
#define NIL UINT32_MAX

typedef struct entry {
    sk_outcome o;
    uint64_t expires_ns;
    uint32_t next; /* hash chain */
} entry;

typedef struct shard {
    pthread_mutex_t lock;
    entry *ring;
    uint32_t *buckets;
    uint32_t cap, nbuckets, head, count;
} shard;

struct gw_results {
    uint64_t ttl_ns;
    shard shards[SHARDS];
};

static uint64_t id_hash(const uint8_t id[16])
{
    uint64_t h;
    memcpy(&h, id, sizeof h);
    return h;
}

int gw_results_create(size_t capacity, uint64_t ttl_ns, gw_results **out)
{
    gw_results *r = calloc(1, sizeof *r);
    size_t i;
    if (!r || capacity == 0 || capacity > UINT32_MAX / 2) {
        free(r);
        return r ? -EINVAL : -ENOMEM;
    }
    r->ttl_ns = ttl_ns;
    for (i = 0; i < SHARDS; i++) {
        shard *s = &r->shards[i];
        /* round down: the shards together hold at most `capacity` */
        s->cap = (uint32_t)(capacity >= SHARDS ? capacity / SHARDS : 1);
        s->nbuckets = 1;
        while (s->nbuckets < s->cap)
            s->nbuckets <<= 1;
        s->ring = calloc(s->cap, sizeof *s->ring);
        s->buckets = malloc(s->nbuckets * sizeof *s->buckets);
        if (!s->ring || !s->buckets) {
            free(s->ring);
            free(s->buckets);
            goto out_free_shards;
        }
        memset(s->buckets, 0xff, s->nbuckets * sizeof *s->buckets);
        pthread_mutex_init(&s->lock, NULL);
    }
    *out = r;
    return 0;

out_free_shards:
    while (i-- > 0) {
        free(r->shards[i].ring);
        free(r->shards[i].buckets);
        pthread_mutex_destroy(&r->shards[i].lock);
    }
    free(r);
    return -ENOMEM;
}

void gw_results_destroy(gw_results *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < SHARDS; i++) {
        free(r->shards[i].ring);
        free(r->shards[i].buckets);
        pthread_mutex_destroy(&r->shards[i].lock);
    }
    free(r);
}

static shard *shard_of(gw_results *r, const uint8_t id[16])
{
    return &r->shards[(id_hash(id) >> 40) % SHARDS];
}

static uint32_t *bucket_of(shard *s, const uint8_t id[16])
{
    return &s->buckets[id_hash(id) & (s->nbuckets - 1)];
}

static uint32_t find(shard *s, const uint8_t id[16])
{
    for (uint32_t i = *bucket_of(s, id); i != NIL; i = s->ring[i].next)
        if (memcmp(s->ring[i].o.request_id, id, 16) == 0)
            return i;
    return NIL;
}

static void drop_oldest(shard *s)
{
    uint32_t victim = s->head;
    for (uint32_t *pp = bucket_of(s, s->ring[victim].o.request_id); *pp != NIL;
         pp = &s->ring[*pp].next)
        if (*pp == victim) {
            *pp = s->ring[victim].next;
            break;
        }
    s->head = (s->head + 1) % s->cap;
    s->count--;
}

void gw_results_put(gw_results *r, const sk_outcome *o, uint64_t now_ns)
{
    shard *s = shard_of(r, o->request_id);
    pthread_mutex_lock(&s->lock);
    uint32_t i = find(s, o->request_id);
    if (i != NIL) {
        if (s->ring[i].o.result != SK_SUCCESS && o->result != SK_UNAVAILABLE) {
            s->ring[i].o = *o;
            s->ring[i].expires_ns = now_ns + r->ttl_ns; /* recorded now */
        }
        goto out_unlock;
    }
    while (s->count && (s->count == s->cap || s->ring[s->head].expires_ns <= now_ns))
        drop_oldest(s);
    i = (s->head + s->count) % s->cap;
    s->count++;
    s->ring[i].o = *o;
    s->ring[i].expires_ns = now_ns + r->ttl_ns;
    uint32_t *b = bucket_of(s, o->request_id);
    s->ring[i].next = *b;
    *b = i;
out_unlock:
    pthread_mutex_unlock(&s->lock);
}

int gw_results_get(gw_results *r, const uint8_t id[16], uint64_t now_ns, sk_outcome *out)
{
    shard *s = shard_of(r, id);
    int rc = -ENOENT;
    pthread_mutex_lock(&s->lock);
    uint32_t i = find(s, id);
    if (i != NIL && s->ring[i].expires_ns > now_ns) {
        *out = s->ring[i].o;
        rc = 0;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}
