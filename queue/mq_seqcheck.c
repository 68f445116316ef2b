/*
 * mq_seqcheck.c - consumer-side loss detection for idempotent producers.
 *
 * Keeps, per (partition, producer id), the highest seq seen. A seq more than
 * one above it means the ones between were never seen: they are counted as
 * missing and named in one stderr line. Producers start at seq 1 (mq.h), so a
 * first observation above 1 is a gap too. Lower or equal seqs (redeliveries,
 * reorders) change nothing. Open addressing, grown at half load; one mutex,
 * since the checker is shared by consumer threads and is not on the queue's
 * hot path.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "mq.h"
#include "log.h"

struct sc_ent {
    uint64_t producer_id;
    uint64_t high; /* 0: slot unused (seqs start at 1) */
    uint32_t partition;
};

struct mq_seqcheck {
    pthread_mutex_t mu;
    struct sc_ent *tab;
    size_t cap, n; /* cap: power of two */
    uint64_t missing;
};

static size_t sc_hash(uint32_t partition, uint64_t producer_id)
{
    uint64_t h = producer_id * 0x9e3779b97f4a7c15ULL ^ ((uint64_t)partition << 32 | partition);
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 29;
    return (size_t)h;
}

static struct sc_ent *sc_slot(struct sc_ent *tab, size_t cap, uint32_t partition,
                              uint64_t producer_id)
{
    size_t i = sc_hash(partition, producer_id) & (cap - 1);
    while (tab[i].high && (tab[i].partition != partition || tab[i].producer_id != producer_id))
        i = (i + 1) & (cap - 1);
    return &tab[i];
}

static int sc_grow(mq_seqcheck *s)
{
    size_t ncap = s->cap ? s->cap * 2 : 64;
    struct sc_ent *nt = calloc(ncap, sizeof *nt);
    if (!nt)
        return -ENOMEM;
    for (size_t i = 0; i < s->cap; i++)
        if (s->tab[i].high)
            *sc_slot(nt, ncap, s->tab[i].partition, s->tab[i].producer_id) = s->tab[i];
    free(s->tab);
    s->tab = nt;
    s->cap = ncap;
    return 0;
}

int mq_seqcheck_create(mq_seqcheck **out)
{
    if (!out)
        return -EINVAL;
    mq_seqcheck *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    if (sc_grow(s) < 0) {
        free(s);
        return -ENOMEM;
    }
    pthread_mutex_init(&s->mu, NULL);
    *out = s;
    return 0;
}

void mq_seqcheck_destroy(mq_seqcheck *s)
{
    if (!s)
        return;
    pthread_mutex_destroy(&s->mu);
    free(s->tab);
    free(s);
}

uint64_t mq_seqcheck_observe(mq_seqcheck *s, uint32_t partition, uint64_t producer_id, uint64_t seq)
{
    uint64_t gap = 0, from = 0;
    if (!s || seq == 0)
        return 0;
    pthread_mutex_lock(&s->mu);
    if ((s->n + 1) * 2 > s->cap && sc_grow(s) < 0) {
        pthread_mutex_unlock(&s->mu);
        return 0; /* out of memory: stop tracking new producers rather than invent gaps */
    }
    struct sc_ent *e = sc_slot(s->tab, s->cap, partition, producer_id);
    if (!e->high) {
        e->partition = partition;
        e->producer_id = producer_id;
        s->n++;
    }
    if (seq > e->high + 1) {
        from = e->high + 1;
        gap = seq - from;
        s->missing += gap;
    }
    if (seq > e->high)
        e->high = seq;
    pthread_mutex_unlock(&s->mu);
    if (gap)
        sk_log(SK_LOG_WARN, "mq", NULL,
               "seqcheck: producer %" PRIu64 " partition %" PRIu32 ": missing seq %" PRIu64
               "..%" PRIu64 " (%" PRIu64 " messages)",
               producer_id, partition, from, seq - 1, gap);
    return gap;
}

uint64_t mq_seqcheck_missing(const mq_seqcheck *s)
{
    if (!s)
        return 0;
    mq_seqcheck *m = (mq_seqcheck *)s; /* the lock is not part of the value */
    pthread_mutex_lock(&m->mu);
    uint64_t v = m->missing;
    pthread_mutex_unlock(&m->mu);
    return v;
}
