#include "pool.h"

#include "prefault.h"

#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define CHUNK_HDR 16u /* next-chunk link, keeps objects 16-byte aligned */
#define FIRST_CHUNK_OBJS 16u

void sk_pool_init(sk_pool *p, size_t obj_size)
{
    memset(p, 0, sizeof *p);
    p->size = (obj_size + 15u) & ~(size_t)15u;
    p->next_chunk = FIRST_CHUNK_OBJS;
}

static int pool_grow(sk_pool *p)
{
    size_t n = p->next_chunk;
    char *c = malloc(CHUNK_HDR + n * p->size);
    if (!c)
        return -1;
    sk_prefault(c, CHUNK_HDR + n * p->size);
    *(void **)c = p->chunks;
    p->chunks = c;
    p->bump = c + CHUNK_HDR;
    p->end = p->bump + n * p->size;
    POISON(p->bump, n * p->size);
    if ((2 * n) * p->size + CHUNK_HDR <= SK_POOL_CHUNK_MAX)
        p->next_chunk = 2 * n;
    return 0;
}

void *sk_pool_alloc(sk_pool *p)
{
    void *o = p->free;
    if (o) {
        UNPOISON(o, p->size);
        p->free = *(void **)o;
    } else {
        if (p->bump == p->end && pool_grow(p) < 0)
            return NULL;
        o = p->bump;
        p->bump += p->size;
        UNPOISON(o, p->size);
    }
    memset(o, 0, p->size);
    p->live++;
    return o;
}

void sk_pool_free(sk_pool *p, void *obj)
{
    if (!obj)
        return;
    *(void **)obj = p->free;
    p->free = obj;
    p->live--;
    POISON(obj, p->size);
}

void sk_pool_destroy(sk_pool *p)
{
    void *c = p->chunks;
    while (c) {
        void *next = *(void **)c;
        free(c);
        c = next;
    }
    p->chunks = p->free = NULL;
    p->bump = p->end = NULL;
    p->live = 0;
}
