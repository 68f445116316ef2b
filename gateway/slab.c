#include "slab.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define SHARDS 16

typedef struct free_obj {
    struct free_obj *next;
} free_obj;

typedef struct shard {
    pthread_mutex_t mu;
    free_obj *head;
    size_t n;
    uint64_t allocs, reused;
    char pad[64]; /* neighbouring shards on their own cache lines */
} shard;

struct gw_slab {
    size_t size, max_cached;
    shard shards[SHARDS];
};

static atomic_uint next_shard;
static _Thread_local unsigned my_shard = SHARDS;

static shard *shard_of(gw_slab *s)
{
    if (my_shard == SHARDS)
        my_shard = atomic_fetch_add(&next_shard, 1) % SHARDS;
    return &s->shards[my_shard];
}

int gw_slab_create(size_t obj_size, size_t max_cached, gw_slab **out)
{
    if (!out || obj_size == 0)
        return -EINVAL;
    gw_slab *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->size = obj_size < sizeof(free_obj) ? sizeof(free_obj) : obj_size;
    s->max_cached = max_cached;
    for (int i = 0; i < SHARDS; i++)
        pthread_mutex_init(&s->shards[i].mu, NULL);
    *out = s;
    return 0;
}

void gw_slab_destroy(gw_slab *s)
{
    if (!s)
        return;
    for (int i = 0; i < SHARDS; i++) {
        for (free_obj *o = s->shards[i].head, *nx; o; o = nx) {
            nx = o->next;
            free(o);
        }
        pthread_mutex_destroy(&s->shards[i].mu);
    }
    free(s);
}

void *gw_slab_alloc(gw_slab *s)
{
    shard *sh = shard_of(s);
    pthread_mutex_lock(&sh->mu);
    free_obj *o = sh->head;
    if (o) {
        sh->head = o->next;
        sh->n--;
        sh->reused++;
    }
    sh->allocs++;
    pthread_mutex_unlock(&sh->mu);
    if (!o && !(o = malloc(s->size))) {
        pthread_mutex_lock(&sh->mu);
        sh->allocs--;
        pthread_mutex_unlock(&sh->mu);
    }
    return o;
}

void gw_slab_free(gw_slab *s, void *p)
{
    if (!p)
        return;
    shard *sh = shard_of(s);
    free_obj *o = p;
    pthread_mutex_lock(&sh->mu);
    if (sh->n < s->max_cached) {
        o->next = sh->head;
        sh->head = o;
        sh->n++;
        o = NULL;
    }
    pthread_mutex_unlock(&sh->mu);
    free(o); /* the shard is full */
}

void gw_slab_stats_get(gw_slab *s, gw_slab_stats *st)
{
    *st = (gw_slab_stats){0};
    for (int i = 0; i < SHARDS; i++) {
        pthread_mutex_lock(&s->shards[i].mu);
        st->allocs += s->shards[i].allocs;
        st->reused += s->shards[i].reused;
        st->cached += s->shards[i].n;
        pthread_mutex_unlock(&s->shards[i].mu);
    }
}
