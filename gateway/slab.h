/*
 * slab.h - a pool of fixed-size objects for the request hot path.
 *
 * Freed objects are kept on free lists and handed out again instead of going
 * back to malloc. The lists are sharded by thread (each thread settles on one
 * shard the first time it uses any slab), so threads do not share a lock: an
 * HTTP thread allocates from and frees to its own shard. An object may be
 * freed by any thread; it then joins that thread's shard. Each shard keeps at
 * most max_cached objects; beyond that, and when a shard is empty, the slab
 * falls back to free() and malloc(), so memory stays bounded by what is in
 * use plus shards x max_cached x obj_size.
 */
#ifndef SECKILL_GW_SLAB_H
#define SECKILL_GW_SLAB_H

#include <stddef.h>
#include <stdint.h>

typedef struct gw_slab gw_slab;

typedef struct gw_slab_stats {
    uint64_t allocs;  /* gw_slab_alloc calls that returned an object */
    uint64_t reused;  /* ... of them served from a free list */
    uint64_t cached;  /* objects on the free lists now */
} gw_slab_stats;

/* obj_size > 0, max_cached per shard (0: never cache). -EINVAL, -ENOMEM. */
int gw_slab_create(size_t obj_size, size_t max_cached, gw_slab **out);
/* Frees the cached objects; objects still in use must be freed before. */
void gw_slab_destroy(gw_slab *s);
/* An uninitialised object of obj_size bytes, or NULL when out of memory. */
void *gw_slab_alloc(gw_slab *s);
/* p from gw_slab_alloc of the same slab, or NULL. */
void gw_slab_free(gw_slab *s, void *p);
void gw_slab_stats_get(gw_slab *s, gw_slab_stats *st);

#endif
