/*
 * inventory.c - in-memory stock, per-user purchase counts and decisions.
 *
 * Three structures, each sharded by hash with one mutex per shard:
 *   items[]        stock left as an atomic counter, decremented by CAS only
 *                  while positive: the oversell guard.
 *   users          (item, user) -> purchases and last order id; created on a
 *                  user's first success, so bounded by total stock.
 *   decisions      request id -> outcome. Successes are pinned; other outcomes
 *                  sit on a per-shard FIFO and the oldest goes past capacity.
 *
 * sk_inventory_decide holds the request's decision-shard lock for the whole
 * decision and takes the user-shard lock inside it (always in that order), so
 * two deliveries of one request cannot both buy, and two requests of one user
 * cannot both pass the per-user limit.
 */
#include "inventory.h"
#include "uuid4.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <uuid/uuid.h>

#define SHARDS 64

typedef struct item {
    char id[SK_ID_MAX + 1];
    uint32_t limit;
    int64_t stock;
    _Atomic int64_t left;
    _Atomic int64_t buyers;
} item;

typedef struct purchase {
    struct purchase *next;
    int item;
    uint32_t count;
    char order_id[SK_ORDER_ID_MAX + 1];
    char user[SK_ID_MAX + 1];
} purchase;

typedef struct decision {
    struct decision *next;      /* hash chain */
    struct decision *fifo_next; /* unpinned ones, oldest first */
    uint8_t id[16];
    enum sk_result result;
    char order_id[SK_ORDER_ID_MAX + 1];
} decision;

typedef struct user_shard {
    pthread_mutex_t lock;
    purchase **buckets;
    size_t nbuckets, count;
} user_shard;

typedef struct decision_shard {
    pthread_mutex_t lock;
    decision **buckets;
    size_t nbuckets;
    decision *fifo_head, *fifo_tail;
    size_t unpinned, cap;
} decision_shard;

struct sk_inventory {
    item *items;
    size_t nitems;
    user_shard users[SHARDS];
    decision_shard decisions[SHARDS];
};

static uint64_t hash_bytes(const void *p, size_t n, uint64_t h)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static uint64_t hash_id(const uint8_t id[16])
{
    uint64_t h;
    memcpy(&h, id, sizeof h); /* request ids are random UUIDs */
    return h ^ (h >> 29);
}

int sk_inventory_create(const sk_item_spec *items, size_t n, size_t decision_capacity,
                        sk_inventory **out)
{
    sk_inventory *inv = calloc(1, sizeof *inv);
    size_t i = 0, s = 0;
    if (!inv)
        return -ENOMEM;
    inv->items = calloc(n ? n : 1, sizeof *inv->items);
    if (!inv->items)
        goto out_free_inv;
    inv->nitems = n;
    for (i = 0; i < n; i++) {
        size_t len = strlen(items[i].id);
        if (!sk_id_valid(items[i].id, len) || items[i].stock < 0 || items[i].per_user_limit == 0)
            goto out_free_items;
        memcpy(inv->items[i].id, items[i].id, len + 1);
        inv->items[i].stock = items[i].stock;
        inv->items[i].limit = items[i].per_user_limit;
        atomic_init(&inv->items[i].left, items[i].stock);
    }
    for (s = 0; s < SHARDS; s++) {
        user_shard *us = &inv->users[s];
        decision_shard *ds = &inv->decisions[s];
        pthread_mutex_init(&us->lock, NULL);
        pthread_mutex_init(&ds->lock, NULL);
        us->nbuckets = 64;
        us->buckets = calloc(us->nbuckets, sizeof *us->buckets);
        /* round down: the shards together keep at most decision_capacity */
        ds->cap = decision_capacity >= SHARDS ? decision_capacity / SHARDS : 1;
        ds->nbuckets = 1024;
        ds->buckets = calloc(ds->nbuckets, sizeof *ds->buckets);
        if (!us->buckets || !ds->buckets) {
            s++;
            goto out_free_shards;
        }
    }
    *out = inv;
    return 0;

out_free_shards:
    while (s-- > 0) {
        free(inv->users[s].buckets);
        free(inv->decisions[s].buckets);
        pthread_mutex_destroy(&inv->users[s].lock);
        pthread_mutex_destroy(&inv->decisions[s].lock);
    }
    free(inv->items);
    free(inv);
    return -ENOMEM;
out_free_items:
    free(inv->items);
out_free_inv:
    free(inv);
    return i < n ? -EINVAL : -ENOMEM;
}

void sk_inventory_destroy(sk_inventory *inv)
{
    if (!inv)
        return;
    for (size_t s = 0; s < SHARDS; s++) {
        user_shard *us = &inv->users[s];
        decision_shard *ds = &inv->decisions[s];
        for (size_t b = 0; b < us->nbuckets; b++)
            for (purchase *p = us->buckets[b], *nx; p; p = nx) {
                nx = p->next;
                free(p);
            }
        for (size_t b = 0; b < ds->nbuckets; b++)
            for (decision *d = ds->buckets[b], *nx; d; d = nx) {
                nx = d->next;
                free(d);
            }
        free(us->buckets);
        free(ds->buckets);
        pthread_mutex_destroy(&us->lock);
        pthread_mutex_destroy(&ds->lock);
    }
    free(inv->items);
    free(inv);
}

int sk_inventory_find(const sk_inventory *inv, const char *item_id)
{
    for (size_t i = 0; i < inv->nitems; i++)
        if (strcmp(inv->items[i].id, item_id) == 0)
            return (int)i;
    return -ENOENT;
}

size_t sk_inventory_items(const sk_inventory *inv)
{
    return inv->nitems;
}

int64_t sk_inventory_left(const sk_inventory *inv, int it)
{
    return atomic_load(&((sk_inventory *)inv)->items[it].left);
}

int64_t sk_inventory_sold(const sk_inventory *inv, int it)
{
    return inv->items[it].stock - sk_inventory_left(inv, it);
}

int64_t sk_inventory_buyers(const sk_inventory *inv, int it)
{
    return atomic_load(&((sk_inventory *)inv)->items[it].buyers);
}

/* Take one unit while any is left; false when sold out. */
static int stock_take(item *it)
{
    int64_t cur = atomic_load(&it->left);
    while (cur > 0)
        if (atomic_compare_exchange_weak(&it->left, &cur, cur - 1))
            return 1;
    return 0;
}

static purchase **purchase_slot(user_shard *us, int it, const char *user, uint64_t h)
{
    purchase **pp = &us->buckets[h & (us->nbuckets - 1)];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->item == it && strcmp((*pp)->user, user) == 0)
            break;
    return pp;
}

static void user_shard_grow(user_shard *us)
{
    size_t nb = us->nbuckets * 2;
    purchase **b = calloc(nb, sizeof *b);
    if (!b)
        return; /* stay at the current size: slower chains, still correct */
    for (size_t i = 0; i < us->nbuckets; i++)
        for (purchase *p = us->buckets[i], *nx; p; p = nx) {
            nx = p->next;
            uint64_t h = hash_bytes(p->user, strlen(p->user), 14695981039346656037ULL ^ (uint64_t)p->item);
            p->next = b[(h >> 6) & (nb - 1)];
            b[(h >> 6) & (nb - 1)] = p;
        }
    free(us->buckets);
    us->buckets = b;
    us->nbuckets = nb;
}

/* Buy under the user-shard lock. Returns the result; fills order_id. */
static enum sk_result buy(sk_inventory *inv, int it, const char *user, char *order_id)
{
    uint64_t h = hash_bytes(user, strlen(user), 14695981039346656037ULL ^ (uint64_t)it);
    user_shard *us = &inv->users[h % SHARDS];
    enum sk_result r;
    pthread_mutex_lock(&us->lock);
    purchase **pp = purchase_slot(us, it, user, h >> 6);
    purchase *p = *pp;
    if (p && p->count >= inv->items[it].limit) {
        memcpy(order_id, p->order_id, sizeof p->order_id);
        r = SK_ALREADY_PURCHASED;
        goto out_unlock;
    }
    if (!p) {
        p = calloc(1, sizeof *p);
        if (!p) {
            r = SK_SOLD_OUT; /* fail closed: never sell what we cannot record */
            goto out_unlock;
        }
    }
    if (!stock_take(&inv->items[it])) {
        if (!*pp)
            free(p);
        r = SK_SOLD_OUT;
        goto out_unlock;
    }
    uuid_t u;
    sk_uuid4(u);
    uuid_unparse_lower(u, p->order_id);
    memcpy(order_id, p->order_id, sizeof p->order_id);
    p->count++;
    if (!*pp) {
        p->item = it;
        strcpy(p->user, user);
        *pp = p;
        atomic_fetch_add(&inv->items[it].buyers, 1);
        if (++us->count > us->nbuckets * 2)
            user_shard_grow(us);
    }
    r = SK_SUCCESS;
out_unlock:
    pthread_mutex_unlock(&us->lock);
    return r;
}

static void decision_evict_oldest(decision_shard *ds)
{
    decision *old = ds->fifo_head;
    decision **pp = &ds->buckets[hash_id(old->id) & (ds->nbuckets - 1)];
    while (*pp != old)
        pp = &(*pp)->next;
    *pp = old->next;
    ds->fifo_head = old->fifo_next;
    if (!ds->fifo_head)
        ds->fifo_tail = NULL;
    ds->unpinned--;
    free(old);
}

static int backend_decide(void *impl, const sk_decide *reqs, size_t n, sk_outcome *outs,
                          int64_t *left)
{
    sk_inventory *inv = impl;
    for (size_t i = 0; i < n; i++) {
        int it = sk_inventory_find(inv, reqs[i].item_id);
        if (it < 0) {
            outs[i].result = SK_UNKNOWN_ITEM;
            outs[i].order_id[0] = '\0';
            left[i] = -1;
            continue;
        }
        int rc = sk_inventory_decide(inv, it, reqs[i].user_id, reqs[i].request_id,
                                     reqs[i].verdict, &outs[i], &left[i]);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int backend_known(void *impl, const char *item_id)
{
    return sk_inventory_find(impl, item_id) >= 0;
}

sk_backend sk_inventory_backend(sk_inventory *inv)
{
    return (sk_backend){.impl = inv, .decide = backend_decide, .known = backend_known};
}

int sk_inventory_decide(sk_inventory *inv, int it, const char *user_id,
                        const uint8_t request_id[16], enum sk_result verdict, sk_outcome *o,
                        int64_t *left)
{
    if (it < 0 || (size_t)it >= inv->nitems)
        return -EINVAL;
    uint64_t h = hash_id(request_id);
    decision_shard *ds = &inv->decisions[(h >> 32) % SHARDS];
    int fresh = 0, rc = 0;

    pthread_mutex_lock(&ds->lock);
    decision **pp = &ds->buckets[h & (ds->nbuckets - 1)];
    decision *d = *pp;
    while (d && memcmp(d->id, request_id, 16) != 0)
        d = d->next;
    if (d) {
        o->result = d->result;
        memcpy(o->order_id, d->order_id, sizeof d->order_id);
        goto out_unlock;
    }
    d = calloc(1, sizeof *d);
    if (!d) {
        rc = -ENOMEM;
        goto out_unlock;
    }
    memcpy(d->id, request_id, 16);
    d->result = verdict == SK_SUCCESS ? buy(inv, it, user_id, d->order_id) : verdict;
    d->next = *pp;
    *pp = d;
    if (d->result != SK_SUCCESS) {
        if (ds->fifo_tail)
            ds->fifo_tail->fifo_next = d;
        else
            ds->fifo_head = d;
        ds->fifo_tail = d;
        if (++ds->unpinned > ds->cap)
            decision_evict_oldest(ds);
    }
    o->result = d->result;
    memcpy(o->order_id, d->order_id, sizeof d->order_id);
    fresh = 1;
out_unlock:
    pthread_mutex_unlock(&ds->lock);
    if (rc < 0)
        return rc;
    if (left)
        *left = sk_inventory_left(inv, it);
    return fresh;
}
