/*
 * pool.h - fixed-size objects carved from chunks, for records that live as
 * long as the sale (the memory inventory's purchases, decisions and orders).
 *
 * An allocation takes a freed object or the next slot of the newest chunk; it
 * calls malloc only for a new chunk. Chunks start small (16 objects) and
 * double up to SK_POOL_CHUNK_MAX bytes, so an idle pool costs nothing and a
 * busy one one malloc per few hundred objects. A new chunk's pages are faulted
 * in at once (prefault.h), not one fault per page at first touch. Memory goes
 * back to the system
 * only at sk_pool_destroy: the pool holds at most its peak of live objects
 * plus one chunk. Not thread-safe: each pool belongs to one lock of its user.
 * Under AddressSanitizer free and unused slots are poisoned, so a use after
 * sk_pool_free is still reported.
 */
#ifndef SECKILL_POOL_H
#define SECKILL_POOL_H

#include <stddef.h>

#define SK_POOL_CHUNK_MAX (64u << 10)

typedef struct sk_pool {
    size_t size;        /* object size, rounded up to 16 */
    size_t next_chunk;  /* objects in the next chunk */
    void *free;         /* freed objects, linked through their first word */
    char *bump, *end;   /* unused slots of the newest chunk */
    void *chunks;       /* every chunk, linked through its first 16 bytes */
    size_t live;        /* objects handed out and not freed */
} sk_pool;

/* obj_size > 0. No memory is taken until the first allocation. */
void sk_pool_init(sk_pool *p, size_t obj_size);
/* A zeroed object, or NULL when out of memory. */
void *sk_pool_alloc(sk_pool *p);
/* obj from sk_pool_alloc of p, or NULL. */
void sk_pool_free(sk_pool *p, void *obj);
/* Returns every chunk; objects still handed out become invalid. */
void sk_pool_destroy(sk_pool *p);

#endif
