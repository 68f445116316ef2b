/*
 * store_memory.c - in-memory stock, per-user purchase counts and decisions.
 *
 * Three structures, each sharded by hash with one mutex per shard:
 *   items[]        stock left as an atomic counter, decremented by CAS only
 *                  while positive: the oversell guard.
 *   users          (item, user) -> purchases and last order id; created on a
 *                  user's first success, so bounded by total stock.
 *   decisions      request id -> outcome. Successes are pinned; other outcomes
 *                  sit on a per-shard FIFO and the oldest goes past capacity.
 *
 *   orders         order id -> order (sharded like the others), plus a per
 *                  shard FIFO of orders in creation order, which is pay
 *                  deadline order (one pay timeout for all): reap walks only
 *                  its expired head.
 *
 * sk_inventory_decide holds the request's decision-shard lock for the whole
 * decision and takes the user-shard lock inside it (always in that order), so
 * two deliveries of one request cannot both buy, and two requests of one user
 * cannot both pass the per-user limit. Order-shard locks are taken alone.
 *
 * With a journal, a success is first a pending decision (decision.pending)
 * whose purchase already counts (stock taken, user count up), so nothing else
 * can sell that unit; the batch's events are appended with no lock held; then
 * each decision becomes durable and its order is inserted, or (append failed)
 * the purchase is given back and the decision unlinked. An order's busy flag
 * keeps pay and cancel exclusive while their event is being appended:
 *
 *   (pending) --durable--> reserved --pay--> paid
 *                             \--reap (deadline passed)--> cancelled
 *
 * Per-user counts and `buyers` count live orders (reserved or paid): a
 * cancel or an undo takes the unit back from both.
 *
 * Sales (epochs): sk_inventory_new_sale starts sale epoch+1 with every
 * user-shard lock held (so no purchase straddles it): the per-user records
 * go, stock left is the new stock, buyers 0. Orders stay readable; each
 * carries the epoch it was bought in, and a cancel or undo of an older
 * sale's order returns nothing (its sale is over). Stock changes take every
 * user-shard lock too, so `left` does not move while one is checked and
 * applied. With a journal each of these is a sale record (SK_EVENT_SALE)
 * appended first: replay puts the inventory back into the sale, stock and
 * limits in force.
 */
#include "store_memory.h"
#include "pool.h"
#include "log.h"
#include "uuid4.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uuid/uuid.h>

#define SHARDS 64
/* Fewer user shards: a sale or stock change holds every one of them at once
 * (with the caller's locks and the journal's), and lock checkers such as
 * ThreadSanitizer follow at most 64 locks held by one thread. A purchase
 * holds one for microseconds; 32 are plenty for the worker threads. */
#define USER_SHARDS 32
#define REAP_BATCH 256 /* cancel events per journal call */
#define STACK_BATCH 64 /* a decide batch up to this size ([worker] batch's
                        * default) needs no heap scratch */

typedef struct item {
    char id[SK_ID_MAX + 1];
    _Atomic uint32_t limit;
    _Atomic int64_t stock; /* the configured stock; set by a reload or the admin API */
    _Atomic int64_t left;
    _Atomic int64_t buyers;
    _Atomic int64_t nreserved, npaid, ncancelled; /* orders ever, for metrics */
    int64_t beyond; /* recovery: orders read back beyond the stock (one line for all) */
} item;

typedef struct purchase {
    struct purchase *next;
    uint64_t h; /* user_hash(user, item) >> 6: compared before the strings */
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
    int pending; /* a success whose order event is not durable yet */
    char order_id[SK_ORDER_ID_MAX + 1];
} decision;

typedef struct order {
    struct order *next;      /* hash chain */
    uint64_t h;              /* hash of id: compared before the strings */
    struct order *fifo_next; /* reserved ones, creation order */
    int item;
    int busy; /* a pay or cancel event of it is being appended */
    int no_unit; /* recovered beyond the configured stock: it took no unit, so
                  * its cancel gives none back */
    uint64_t epoch; /* the sale it was bought in */
    char id[SK_ORDER_ID_MAX + 1];
    sk_order o;
} order;

/* Each shard's records come from its own pool (common/pool.h), under its
 * lock: a sale adds a purchase, a decision and an order per success
 * without a malloc each. */
typedef struct user_shard {
    pthread_mutex_t lock;
    sk_pool pool; /* purchases */
    purchase **buckets;
    size_t nbuckets, count;
} user_shard;

typedef struct decision_shard {
    pthread_mutex_t lock;
    sk_pool pool;
    decision **buckets;
    size_t nbuckets, count; /* count: every decision, pinned or not */
    decision *fifo_head, *fifo_tail;
    size_t unpinned, cap;
} decision_shard;

typedef struct order_shard {
    pthread_mutex_t lock;
    sk_pool pool;
    order **buckets;
    size_t nbuckets, count;
    order *fifo_head, *fifo_tail;
    int unsorted; /* an order went in with an earlier deadline than the tail's
                   * (pay_timeout_ms lowered across a restart): the reaper
                   * walks the whole FIFO until it finds it in order again */
} order_shard;

struct sk_inventory {
    item *items;
    size_t nitems;
    user_shard users[USER_SHARDS];
    decision_shard decisions[SHARDS];
    order_shard orders[SHARDS];
    uint32_t pay_timeout_ms;
    int has_journal;
    sk_journal journal;
    uint64_t (*wall_ms)(void *arg);
    void *clock_arg;
    _Atomic int64_t nstate[3]; /* orders by state */
    _Atomic uint64_t epoch;    /* the sale in force; changed under every user-shard lock */
    pthread_mutex_t admin;     /* one stock, limit or sale change at a time */
};

/* A success of this batch waiting for its reserved event to be durable; the
 * event itself is kept beside it, in an array the journal takes as it is. */
typedef struct pending_buy {
    decision *d;
    decision_shard *ds;
    int item;
    char prev_order[SK_ORDER_ID_MAX + 1]; /* the user's last order before it */
} pending_buy;

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
        atomic_init(&inv->items[i].stock, items[i].stock);
        atomic_init(&inv->items[i].limit, items[i].per_user_limit);
        atomic_init(&inv->items[i].left, items[i].stock);
    }
    inv->pay_timeout_ms = 900000;
    pthread_mutex_init(&inv->admin, NULL);
    for (s = 0; s < SHARDS; s++) {
        user_shard *us = &inv->users[s % USER_SHARDS]; /* set up by the first USER_SHARDS */
        decision_shard *ds = &inv->decisions[s];
        order_shard *os = &inv->orders[s];
        if (s < USER_SHARDS) {
            pthread_mutex_init(&us->lock, NULL);
            sk_pool_init(&us->pool, sizeof(purchase));
            us->nbuckets = 64;
            us->buckets = calloc(us->nbuckets, sizeof *us->buckets);
        }
        pthread_mutex_init(&ds->lock, NULL);
        pthread_mutex_init(&os->lock, NULL);
        sk_pool_init(&ds->pool, sizeof(decision));
        sk_pool_init(&os->pool, sizeof(order));
        /* round down: the shards together keep at most decision_capacity */
        ds->cap = decision_capacity >= SHARDS ? decision_capacity / SHARDS : 1;
        ds->nbuckets = 1024;
        ds->buckets = calloc(ds->nbuckets, sizeof *ds->buckets);
        os->nbuckets = 64;
        os->buckets = calloc(os->nbuckets, sizeof *os->buckets);
        if (!us->buckets || !ds->buckets || !os->buckets) {
            s++;
            goto out_free_shards;
        }
    }
    *out = inv;
    return 0;

out_free_shards:
    while (s-- > 0) {
        if (s < USER_SHARDS) {
            free(inv->users[s].buckets);
            pthread_mutex_destroy(&inv->users[s].lock);
        }
        free(inv->decisions[s].buckets);
        free(inv->orders[s].buckets);
        pthread_mutex_destroy(&inv->decisions[s].lock);
        pthread_mutex_destroy(&inv->orders[s].lock);
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
        decision_shard *ds = &inv->decisions[s];
        order_shard *os = &inv->orders[s];
        sk_pool_destroy(&os->pool);
        free(os->buckets);
        pthread_mutex_destroy(&os->lock);
        sk_pool_destroy(&ds->pool);
        free(ds->buckets);
        pthread_mutex_destroy(&ds->lock);
    }
    for (size_t s = 0; s < USER_SHARDS; s++) {
        sk_pool_destroy(&inv->users[s].pool);
        free(inv->users[s].buckets);
        pthread_mutex_destroy(&inv->users[s].lock);
    }
    pthread_mutex_destroy(&inv->admin);
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
    return atomic_load(&((sk_inventory *)inv)->items[it].stock) - sk_inventory_left(inv, it);
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

static uint64_t user_hash(const char *user, int it)
{
    return hash_bytes(user, strlen(user), 14695981039346656037ULL ^ (uint64_t)it);
}

static purchase **purchase_slot(user_shard *us, int it, const char *user, uint64_t h)
{
    purchase **pp = &us->buckets[h & (us->nbuckets - 1)];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->h == h && (*pp)->item == it && strcmp((*pp)->user, user) == 0)
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
            p->next = b[p->h & (nb - 1)];
            b[p->h & (nb - 1)] = p;
        }
    free(us->buckets);
    us->buckets = b;
    us->nbuckets = nb;
}

/* The user's purchase record for item, created when absent (NULL: no memory).
 * Caller holds us->lock. */
static purchase *purchase_get(user_shard *us, int it, const char *user, uint64_t h)
{
    purchase **pp = purchase_slot(us, it, user, h >> 6);
    if (*pp)
        return *pp;
    purchase *p = sk_pool_alloc(&us->pool);
    if (!p)
        return NULL;
    p->h = h >> 6;
    p->item = it;
    strcpy(p->user, user);
    *pp = p;
    if (++us->count > us->nbuckets)
        user_shard_grow(us);
    return p;
}

/* Buy under the user-shard lock. Returns the result; fills order_id and (may
 * be NULL) prev_order, the user's last order before this one. */
static enum sk_result buy(sk_inventory *inv, int it, const char *user, char *order_id,
                          char *prev_order, uint64_t *epoch)
{
    uint64_t h = user_hash(user, it);
    user_shard *us = &inv->users[h % USER_SHARDS];
    enum sk_result r;
    pthread_mutex_lock(&us->lock);
    purchase **pp = purchase_slot(us, it, user, h >> 6);
    purchase *p = *pp;
    *epoch = atomic_load(&inv->epoch); /* stable: we hold a user-shard lock */
    if (p && p->count >= atomic_load(&inv->items[it].limit)) {
        memcpy(order_id, p->order_id, sizeof p->order_id);
        r = SK_ALREADY_PURCHASED;
        goto out_unlock;
    }
    if (!p && !atomic_load(&inv->items[it].left)) {
        r = SK_SOLD_OUT; /* sold out: no record for a user who never bought */
        goto out_unlock;
    }
    p = purchase_get(us, it, user, h);
    if (!p) {
        r = SK_SOLD_OUT; /* fail closed: never sell what we cannot record */
        goto out_unlock;
    }
    if (!stock_take(&inv->items[it])) {
        r = SK_SOLD_OUT;
        goto out_unlock;
    }
    if (prev_order)
        memcpy(prev_order, p->order_id, sizeof p->order_id);
    uuid_t u;
    sk_uuid4(u);
    uuid_unparse_lower(u, p->order_id);
    memcpy(order_id, p->order_id, sizeof p->order_id);
    if (p->count++ == 0)
        atomic_fetch_add(&inv->items[it].buyers, 1);
    r = SK_SUCCESS;
out_unlock:
    pthread_mutex_unlock(&us->lock);
    return r;
}

/* Give back one purchase of user on item, made in sale epoch: the unit goes
 * back to stock (when `unit`: the purchase took one) and the user's count
 * down. When order_id is still the user's last order, prev_order (may be
 * NULL) becomes it again (an undone purchase). A purchase of an earlier sale
 * gives nothing back: that sale is over. */
static void unbuy(sk_inventory *inv, int it, const char *user, const char *order_id,
                  const char *prev_order, int unit, uint64_t epoch)
{
    uint64_t h = user_hash(user, it);
    user_shard *us = &inv->users[h % USER_SHARDS];
    pthread_mutex_lock(&us->lock);
    if (epoch != atomic_load(&inv->epoch)) {
        pthread_mutex_unlock(&us->lock);
        return;
    }
    purchase *p = *purchase_slot(us, it, user, h >> 6);
    if (p && p->count > 0) {
        if (--p->count == 0)
            atomic_fetch_sub(&inv->items[it].buyers, 1);
        if (prev_order && !strcmp(p->order_id, order_id))
            memcpy(p->order_id, prev_order, sizeof p->order_id);
    }
    if (unit) /* under the lock: a stock change sees `left` still */
        atomic_fetch_add(&inv->items[it].left, 1);
    pthread_mutex_unlock(&us->lock);
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
    ds->count--;
    sk_pool_free(&ds->pool, old);
}

/* Link d (not in the shard yet) at the head of its chain; the table doubles
 * when chains would average more than one. */
static void decision_link(decision_shard *ds, decision *d)
{
    decision **pp = &ds->buckets[hash_id(d->id) & (ds->nbuckets - 1)];
    d->next = *pp;
    *pp = d;
    if (++ds->count <= ds->nbuckets)
        return;
    size_t nb = ds->nbuckets * 2;
    decision **b = calloc(nb, sizeof *b);
    if (!b)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < ds->nbuckets; i++)
        for (decision *x = ds->buckets[i], *nx; x; x = nx) {
            nx = x->next;
            x->next = b[hash_id(x->id) & (nb - 1)];
            b[hash_id(x->id) & (nb - 1)] = x;
        }
    free(ds->buckets);
    ds->buckets = b;
    ds->nbuckets = nb;
}

static decision_shard *decision_shard_of(sk_inventory *inv, const uint8_t id[16])
{
    return &inv->decisions[(hash_id(id) >> 32) % SHARDS];
}

static decision **decision_slot(decision_shard *ds, const uint8_t id[16])
{
    decision **pp = &ds->buckets[hash_id(id) & (ds->nbuckets - 1)];
    while (*pp && memcmp((*pp)->id, id, 16) != 0)
        pp = &(*pp)->next;
    return pp;
}

static uint64_t wall_ms(const sk_inventory *inv)
{
    if (inv->wall_ms)
        return inv->wall_ms(inv->clock_arg);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- orders ---- */

static order_shard *order_shard_of(sk_inventory *inv, const char *id, uint64_t *h)
{
    *h = hash_bytes(id, strlen(id), 14695981039346656037ULL);
    return &inv->orders[*h % SHARDS];
}

static order **order_slot(order_shard *os, const char *id, uint64_t h)
{
    order **pp = &os->buckets[(h >> 6) & (os->nbuckets - 1)];
    while (*pp && ((*pp)->h != h || strcmp((*pp)->id, id) != 0))
        pp = &(*pp)->next;
    return pp;
}

static void order_shard_grow(order_shard *os)
{
    size_t nb = os->nbuckets * 2;
    order **b = calloc(nb, sizeof *b);
    if (!b)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < os->nbuckets; i++)
        for (order *o = os->buckets[i], *nx; o; o = nx) {
            nx = o->next;
            o->next = b[(o->h >> 6) & (nb - 1)];
            b[(o->h >> 6) & (nb - 1)] = o;
        }
    free(os->buckets);
    os->buckets = b;
    os->nbuckets = nb;
}

/* Insert a reserved order from its reserved event. -EEXIST when known. */
static int order_insert(sk_inventory *inv, int it, const sk_order_event *ev, int no_unit)
{
    uint64_t h;
    order_shard *os = order_shard_of(inv, ev->order_id, &h);
    int rc = 0;
    pthread_mutex_lock(&os->lock);
    order **pp = order_slot(os, ev->order_id, h);
    if (*pp) {
        rc = -EEXIST;
        goto out_unlock;
    }
    order *o = sk_pool_alloc(&os->pool);
    if (!o) {
        rc = -ENOMEM;
        goto out_unlock;
    }
    o->h = h;
    o->item = it;
    o->no_unit = no_unit;
    o->epoch = ev->epoch;
    memcpy(o->id, ev->order_id, sizeof o->id);
    o->o.state = SK_ORDER_RESERVED;
    memcpy(o->o.user_id, ev->user_id, sizeof o->o.user_id);
    memcpy(o->o.item_id, ev->item_id, sizeof o->o.item_id);
    memcpy(o->o.request_id, ev->request_id, 16);
    o->o.created_ms = ev->at_ms;
    o->o.pay_deadline_ms = ev->pay_deadline_ms;
    *pp = o;
    if (os->fifo_tail && os->fifo_tail->o.pay_deadline_ms > o->o.pay_deadline_ms)
        os->unsorted = 1;
    if (os->fifo_tail)
        os->fifo_tail->fifo_next = o;
    else
        os->fifo_head = o;
    os->fifo_tail = o;
    atomic_fetch_add(&inv->nstate[SK_ORDER_RESERVED], 1);
    atomic_fetch_add_explicit(&inv->items[it].nreserved, 1, memory_order_relaxed);
    if (++os->count > os->nbuckets)
        order_shard_grow(os);
out_unlock:
    pthread_mutex_unlock(&os->lock);
    return rc;
}

/* A reserved order moves to state (paid or cancelled). Caller holds its lock. */
static void order_settle(sk_inventory *inv, order *o, enum sk_order_state state)
{
    o->o.state = state;
    atomic_fetch_sub(&inv->nstate[SK_ORDER_RESERVED], 1);
    atomic_fetch_add(&inv->nstate[state], 1);
    item *it = &inv->items[o->item];
    atomic_fetch_add_explicit(state == SK_ORDER_PAID ? &it->npaid : &it->ncancelled, 1,
                              memory_order_relaxed);
}

static void event_of(sk_order_event *ev, enum sk_order_state type, const order *o, uint64_t at)
{
    memset(ev, 0, sizeof *ev);
    ev->type = type;
    memcpy(ev->order_id, o->id, sizeof ev->order_id);
    memcpy(ev->item_id, o->o.item_id, sizeof ev->item_id);
    memcpy(ev->user_id, o->o.user_id, sizeof ev->user_id);
    memcpy(ev->request_id, o->o.request_id, 16);
    ev->at_ms = at;
    ev->pay_deadline_ms = o->o.pay_deadline_ms;
    ev->epoch = o->epoch;
}

void sk_inventory_set_orders(sk_inventory *inv, const sk_orders_config *cfg)
{
    inv->pay_timeout_ms = cfg->pay_timeout_ms;
    inv->has_journal = cfg->journal != NULL;
    if (cfg->journal)
        inv->journal = *cfg->journal;
    inv->wall_ms = cfg->wall_ms;
    inv->clock_arg = cfg->clock_arg;
}

/* ---- deciding ---- */

/* Decide one request. A fresh success with a journal stays pending and is
 * described in pb[*npb] and evs[*npb] (*npb incremented); without one its
 * order exists at once.
 * Returns 1 fresh, 0 stored (or pending elsewhere: SK_UNAVAILABLE), -errno. */
static int decide_one(sk_inventory *inv, int it, const char *user_id,
                      const uint8_t request_id[16], enum sk_result verdict, uint64_t now,
                      sk_outcome *o, pending_buy *pb, sk_order_event *evs, size_t *npb)
{
    decision_shard *ds = decision_shard_of(inv, request_id);
    char prev[SK_ORDER_ID_MAX + 1] = "";
    int rc = 1;

    pthread_mutex_lock(&ds->lock);
    decision *d = *decision_slot(ds, request_id);
    if (d) {
        /* another delivery of it is being journalled: answer 503, its
         * first delivery answers the real outcome */
        if (d->pending) {
            o->result = SK_UNAVAILABLE;
            o->order_id[0] = '\0';
        } else {
            o->result = d->result;
            memcpy(o->order_id, d->order_id, sizeof d->order_id);
        }
        rc = 0;
        goto out_unlock;
    }
    d = sk_pool_alloc(&ds->pool);
    if (!d) {
        rc = -ENOMEM;
        goto out_unlock;
    }
    memcpy(d->id, request_id, 16);
    uint64_t epoch = 0;
    d->result = verdict == SK_SUCCESS ? buy(inv, it, user_id, d->order_id, prev, &epoch) : verdict;
    decision_link(ds, d);
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
    if (d->result == SK_SUCCESS) {
        sk_order_event ev = {.type = SK_ORDER_RESERVED, .at_ms = now,
                             .pay_deadline_ms = now + inv->pay_timeout_ms, .epoch = epoch};
        memcpy(ev.order_id, d->order_id, sizeof ev.order_id);
        memcpy(ev.item_id, inv->items[it].id, sizeof ev.item_id);
        snprintf(ev.user_id, sizeof ev.user_id, "%s", user_id);
        memcpy(ev.request_id, request_id, 16);
        if (inv->has_journal) {
            d->pending = 1;
            pb[*npb] = (pending_buy){.d = d, .ds = ds, .item = it};
            memcpy(pb[*npb].prev_order, prev, sizeof prev);
            evs[*npb] = ev;
            ++*npb;
        } else if (order_insert(inv, it, &ev, 0) < 0) {
            /* the sale stands (stock and decision); only GET/pay miss it */
            sk_log(SK_LOG_ERROR, "store", NULL, "no memory for order %s", ev.order_id);
        }
    }
out_unlock:
    pthread_mutex_unlock(&ds->lock);
    return rc;
}

/* Journal the pending successes pb[0..n) (their events evs[0..n)): the
 * durable ones become visible orders, the others are undone. Returns 0, or
 * the first append error. */
static int settle_pending(sk_inventory *inv, pending_buy *pb, const sk_order_event *evs,
                          size_t n)
{
    if (n == 0)
        return 0;
    int rcs_stack[STACK_BATCH];
    int *rcs = n <= STACK_BATCH ? rcs_stack : calloc(n, sizeof *rcs);
    int rc = rcs ? inv->journal.append(inv->journal.arg, evs, n, rcs) : -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        pending_buy *b = &pb[i];
        const sk_order_event *ev = &evs[i];
        int ok = rcs ? rcs[i] == 0 : 0;
        if (ok && order_insert(inv, b->item, ev, 0) < 0)
            sk_log(SK_LOG_ERROR, "store", NULL, "no memory for order %s", ev->order_id);
        pthread_mutex_lock(&b->ds->lock);
        if (ok) {
            b->d->pending = 0;
        } else {
            decision **pp = decision_slot(b->ds, b->d->id);
            if (*pp == b->d) {
                *pp = b->d->next;
                b->ds->count--;
            }
            sk_pool_free(&b->ds->pool, b->d);
        }
        pthread_mutex_unlock(&b->ds->lock);
        if (!ok) {
            unbuy(inv, b->item, ev->user_id, ev->order_id, b->prev_order, 1, ev->epoch);
            if (rc == 0)
                rc = rcs ? rcs[i] : -ENOMEM;
        }
    }
    if (rcs != rcs_stack)
        free(rcs);
    return rc;
}

static int backend_decide(void *impl, const sk_decide *reqs, size_t n, sk_outcome *outs,
                          int64_t *left)
{
    sk_inventory *inv = impl;
    pending_buy pb_stack[STACK_BATCH], *pb = pb_stack;
    sk_order_event evs_stack[STACK_BATCH], *evs = evs_stack;
    size_t npb = 0;
    int rc = 0;
    if (inv->has_journal && n > STACK_BATCH) {
        pb = malloc(n * sizeof *pb);
        evs = malloc(n * sizeof *evs);
        if (!pb || !evs) {
            free(pb);
            free(evs);
            return -ENOMEM;
        }
    }
    uint64_t now = wall_ms(inv);
    for (size_t i = 0; i < n; i++) {
        int it = sk_inventory_find(inv, reqs[i].item_id);
        if (it < 0) {
            outs[i].result = SK_UNKNOWN_ITEM;
            outs[i].order_id[0] = '\0';
            left[i] = -1;
            continue;
        }
        rc = decide_one(inv, it, reqs[i].user_id, reqs[i].request_id, reqs[i].verdict, now,
                        &outs[i], pb, evs, &npb);
        if (rc < 0)
            break;
        left[i] = sk_inventory_left(inv, it);
    }
    /* the whole batch's reserved events in one journal call (one group
     * commit), before any of its outcomes can be delivered */
    int src = settle_pending(inv, pb, evs, npb);
    if (pb != pb_stack) {
        free(pb);
        free(evs);
    }
    return rc < 0 ? rc : src;
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
    pending_buy pb;
    sk_order_event ev;
    size_t npb = 0;
    int rc = decide_one(inv, it, user_id, request_id, verdict, wall_ms(inv), o, &pb, &ev, &npb);
    if (rc >= 0 && npb) {
        int src = settle_pending(inv, &pb, &ev, npb);
        if (src < 0)
            return src;
    }
    if (rc < 0)
        return rc;
    if (left)
        *left = sk_inventory_left(inv, it);
    return rc;
}

/* ---- order calls ---- */

int sk_inventory_order_get(sk_inventory *inv, const char *order_id, sk_order *out)
{
    uint64_t h;
    order_shard *os = order_shard_of(inv, order_id, &h);
    pthread_mutex_lock(&os->lock);
    order *o = *order_slot(os, order_id, h);
    if (o)
        *out = o->o;
    pthread_mutex_unlock(&os->lock);
    return o ? 0 : -ENOENT;
}

int sk_inventory_order_pay(sk_inventory *inv, const char *order_id, uint64_t now_ms)
{
    uint64_t h;
    order_shard *os = order_shard_of(inv, order_id, &h);
    sk_order_event ev;
    int rc = 0;
    pthread_mutex_lock(&os->lock);
    order *o = *order_slot(os, order_id, h);
    if (!o)
        rc = -ENOENT;
    else if (o->o.state == SK_ORDER_PAID)
        rc = 0;
    else if (o->o.state == SK_ORDER_CANCELLED)
        rc = -ECANCELED;
    else if (now_ms >= o->o.pay_deadline_ms)
        rc = -ETIME;
    else if (o->busy)
        rc = -EAGAIN;
    else if (!inv->has_journal)
        order_settle(inv, o, SK_ORDER_PAID);
    else {
        o->busy = 1;
        event_of(&ev, SK_ORDER_PAID, o, now_ms);
        pthread_mutex_unlock(&os->lock);
        int erc = 0;
        rc = inv->journal.append(inv->journal.arg, &ev, 1, &erc);
        pthread_mutex_lock(&os->lock);
        o->busy = 0;
        if (rc == 0)
            order_settle(inv, o, SK_ORDER_PAID);
    }
    pthread_mutex_unlock(&os->lock);
    return rc;
}

/* Collect from os the reserved orders due at now (marking them busy), up to
 * cap, dropping settled ones from the FIFO on the way. The FIFO is in
 * deadline order while every order had the same pay_timeout_ms, and then the
 * walk stops at the first order not yet due; once it is out of order (see
 * order_shard.unsorted) the walk goes to the end. Returns how many. */
static size_t reap_collect(order_shard *os, uint64_t now, order **out, size_t cap)
{
    size_t n = 0;
    pthread_mutex_lock(&os->lock);
    order *prev = NULL, *o = os->fifo_head;
    uint64_t last = 0;
    int in_order = 1;
    while (o && n < cap) {
        order *nx = o->fifo_next;
        if (o->o.state != SK_ORDER_RESERVED && !o->busy) {
            /* settled: leaves the FIFO, due or not */
            if (prev)
                prev->fifo_next = nx;
            else
                os->fifo_head = nx;
            if (os->fifo_tail == o)
                os->fifo_tail = prev;
            o->fifo_next = NULL;
            o = nx;
            continue;
        }
        if (o->o.pay_deadline_ms < last)
            in_order = 0;
        last = o->o.pay_deadline_ms;
        if (o->o.pay_deadline_ms > now && !os->unsorted)
            break;
        if (o->o.pay_deadline_ms <= now && !o->busy) {
            o->busy = 1;
            out[n++] = o;
        }
        prev = o;
        o = nx;
    }
    if (!o && in_order)
        os->unsorted = 0; /* walked it all: in deadline order again */
    pthread_mutex_unlock(&os->lock);
    return n;
}

int sk_inventory_reap(sk_inventory *inv, uint64_t now_ms)
{
    order *batch[REAP_BATCH];
    sk_order_event evs[REAP_BATCH];
    int rcs[REAP_BATCH];
    int cancelled = 0, err = 0;
    size_t s = 0;
    while (s < SHARDS && !err) {
        size_t n = 0;
        /* fill a batch from as many shards as it takes */
        while (s < SHARDS && n < REAP_BATCH) {
            size_t got = reap_collect(&inv->orders[s], now_ms, batch + n, REAP_BATCH - n);
            n += got;
            if (n < REAP_BATCH)
                s++; /* this shard has nothing more due */
        }
        if (n == 0)
            break;
        for (size_t i = 0; i < n; i++) {
            event_of(&evs[i], SK_ORDER_CANCELLED, batch[i], now_ms);
            rcs[i] = 0;
        }
        if (inv->has_journal)
            err = inv->journal.append(inv->journal.arg, evs, n, rcs);
        for (size_t i = 0; i < n; i++) {
            order *o = batch[i];
            uint64_t h;
            order_shard *os = order_shard_of(inv, o->id, &h);
            pthread_mutex_lock(&os->lock);
            o->busy = 0;
            if (rcs[i] == 0)
                order_settle(inv, o, SK_ORDER_CANCELLED);
            pthread_mutex_unlock(&os->lock);
            if (rcs[i] == 0) {
                unbuy(inv, o->item, o->o.user_id, o->id, NULL, !o->no_unit, o->epoch);
                cancelled++;
            }
        }
    }
    return err < 0 ? err : cancelled;
}

void sk_inventory_order_counts(sk_inventory *inv, int64_t counts[3])
{
    for (int i = 0; i < 3; i++)
        counts[i] = atomic_load(&inv->nstate[i]);
}

/* ---- sales, stock and limits (the admin API) ---- */

static void users_lock_all(sk_inventory *inv)
{
    for (size_t s = 0; s < USER_SHARDS; s++)
        pthread_mutex_lock(&inv->users[s].lock);
}

static void users_unlock_all(sk_inventory *inv)
{
    for (size_t s = USER_SHARDS; s-- > 0;)
        pthread_mutex_unlock(&inv->users[s].lock);
}

/* Sale e begins: no purchase counts any more, every item's stock is left
 * again. The caller holds every user-shard lock, or is the only thread
 * (recovery). */
static void epoch_start(sk_inventory *inv, uint64_t e)
{
    for (size_t s = 0; s < USER_SHARDS; s++) {
        user_shard *us = &inv->users[s];
        for (size_t b = 0; b < us->nbuckets; b++) {
            for (purchase *p = us->buckets[b], *nx; p; p = nx) {
                nx = p->next;
                sk_pool_free(&us->pool, p);
            }
            us->buckets[b] = NULL;
        }
        us->count = 0;
    }
    for (size_t i = 0; i < inv->nitems; i++) {
        atomic_store(&inv->items[i].left, atomic_load(&inv->items[i].stock));
        atomic_store(&inv->items[i].buyers, 0);
    }
    atomic_store(&inv->epoch, e);
}

/* Journal sale records evs[0..n) (nothing to do without a journal). */
static int journal_sale(sk_inventory *inv, const sk_order_event *evs, size_t n)
{
    if (!inv->has_journal)
        return 0;
    int rcs_stack[STACK_BATCH];
    int *rcs = n <= STACK_BATCH ? rcs_stack : calloc(n, sizeof *rcs);
    if (!rcs)
        return -ENOMEM;
    int rc = inv->journal.append(inv->journal.arg, evs, n, rcs);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = rcs[i];
    if (rcs != rcs_stack)
        free(rcs);
    return rc;
}

static sk_order_event sale_record(sk_inventory *inv, int it, uint64_t epoch, int64_t stock,
                                  uint32_t limit)
{
    sk_order_event ev = {.type = (enum sk_order_state)SK_EVENT_SALE, .epoch = epoch,
                         .at_ms = wall_ms(inv), .stock = stock, .limit = limit};
    if (it >= 0)
        memcpy(ev.item_id, inv->items[it].id, sizeof ev.item_id);
    return ev;
}

int sk_inventory_set_stock(sk_inventory *inv, int it, int64_t total, int only_raise,
                           int64_t *held)
{
    if (it < 0 || (size_t)it >= inv->nitems || total < 0)
        return -EINVAL;
    item *x = &inv->items[it];
    int64_t added = 0;
    int rc = 0;
    pthread_mutex_lock(&inv->admin);
    users_lock_all(inv); /* `left` holds still: takes and returns happen under these */
    int64_t s = atomic_load(&x->stock), l = atomic_load(&x->left);
    int64_t h = s - l > 0 ? s - l : 0;
    if (held)
        *held = h;
    if (only_raise && total <= s)
        goto out_unlock;
    if (total < h) {
        rc = -EBUSY;
        goto out_unlock;
    }
    sk_order_event ev = sale_record(inv, it, atomic_load(&inv->epoch), total, 0);
    rc = journal_sale(inv, &ev, 1);
    if (rc < 0)
        goto out_unlock;
    atomic_store(&x->left, l + total - s);
    atomic_store(&x->stock, total);
    added = total - s;
out_unlock:
    users_unlock_all(inv);
    pthread_mutex_unlock(&inv->admin);
    return rc < 0 ? rc : (int)(added > 0 ? 1 : 0);
}

int sk_inventory_set_limit(sk_inventory *inv, int it, uint32_t limit)
{
    if (it < 0 || (size_t)it >= inv->nitems || limit == 0)
        return -EINVAL;
    pthread_mutex_lock(&inv->admin);
    sk_order_event ev = sale_record(inv, it, atomic_load(&inv->epoch), -1, limit);
    int rc = journal_sale(inv, &ev, 1);
    if (rc == 0)
        atomic_store(&inv->items[it].limit, limit);
    pthread_mutex_unlock(&inv->admin);
    return rc;
}

int sk_inventory_new_sale(sk_inventory *inv, const int64_t *stock, uint64_t *epoch)
{
    size_t n = inv->nitems ? inv->nitems : 1;
    sk_order_event *evs = calloc(n, sizeof *evs);
    if (!evs)
        return -ENOMEM;
    for (size_t i = 0; stock && i < inv->nitems; i++)
        if (stock[i] < -1) {
            free(evs);
            return -EINVAL;
        }
    pthread_mutex_lock(&inv->admin);
    users_lock_all(inv); /* no purchase straddles the change */
    uint64_t e = atomic_load(&inv->epoch) + 1;
    for (size_t i = 0; i < inv->nitems; i++) {
        int64_t st = stock && stock[i] >= 0 ? stock[i] : atomic_load(&inv->items[i].stock);
        evs[i] = sale_record(inv, (int)i, e, st, 0);
    }
    if (!inv->nitems)
        evs[0] = sale_record(inv, -1, e, -1, 0);
    int rc = journal_sale(inv, evs, n);
    if (rc == 0) {
        for (size_t i = 0; i < inv->nitems; i++)
            atomic_store(&inv->items[i].stock, evs[i].stock);
        epoch_start(inv, e);
        if (epoch)
            *epoch = e;
    }
    users_unlock_all(inv);
    pthread_mutex_unlock(&inv->admin);
    free(evs);
    return rc;
}

uint64_t sk_inventory_epoch(const sk_inventory *inv)
{
    return atomic_load(&((sk_inventory *)inv)->epoch);
}

uint32_t sk_inventory_limit(const sk_inventory *inv, int it)
{
    return atomic_load(&((sk_inventory *)inv)->items[it].limit);
}

int64_t sk_inventory_stock(const sk_inventory *inv, int it)
{
    return atomic_load(&((sk_inventory *)inv)->items[it].stock);
}

/* ---- recovery ---- */

static int apply_reserved(sk_inventory *inv, const sk_order_event *ev)
{
    int it = sk_inventory_find(inv, ev->item_id);
    if (it < 0 || !sk_id_valid(ev->user_id, strlen(ev->user_id)))
        return 1;
    uint64_t hh;
    order_shard *os = order_shard_of(inv, ev->order_id, &hh);
    pthread_mutex_lock(&os->lock);
    int known = *order_slot(os, ev->order_id, hh) != NULL;
    pthread_mutex_unlock(&os->lock);
    if (known)
        return 1;
    if (ev->epoch > atomic_load(&inv->epoch))
        epoch_start(inv, ev->epoch);
    int took = 0;
    if (ev->epoch == atomic_load(&inv->epoch)) {
        /* the purchase: stock and the user's count (an earlier sale's order
         * is only an order now) */
        uint64_t h = user_hash(ev->user_id, it);
        user_shard *us = &inv->users[h % USER_SHARDS];
        pthread_mutex_lock(&us->lock);
        purchase *p = purchase_get(us, it, ev->user_id, h);
        if (p) {
            memcpy(p->order_id, ev->order_id, sizeof p->order_id);
            if (p->count++ == 0)
                atomic_fetch_add(&inv->items[it].buyers, 1);
        }
        pthread_mutex_unlock(&us->lock);
        if (!p)
            return -ENOMEM;
        took = stock_take(&inv->items[it]);
        if (!took)
            inv->items[it].beyond++; /* said once per item after recovery */
    }
    /* the decision: a redelivered request answers its success */
    decision_shard *ds = decision_shard_of(inv, ev->request_id);
    pthread_mutex_lock(&ds->lock);
    decision **pp = decision_slot(ds, ev->request_id);
    if (!*pp) {
        decision *d = sk_pool_alloc(&ds->pool);
        if (d) {
            memcpy(d->id, ev->request_id, 16);
            d->result = SK_SUCCESS;
            memcpy(d->order_id, ev->order_id, sizeof d->order_id);
            decision_link(ds, d);
        }
    }
    pthread_mutex_unlock(&ds->lock);
    return order_insert(inv, it, ev, !took) < 0 ? -ENOMEM : 0;
}

/* Replay of a sale record: the sale it names, then the item's stock and
 * limit. A stock below what the sale's orders hold leaves nothing left. */
static int apply_sale(sk_inventory *inv, const sk_order_event *ev)
{
    if (ev->epoch > atomic_load(&inv->epoch))
        epoch_start(inv, ev->epoch);
    if (!ev->item_id[0])
        return 0;
    int it = sk_inventory_find(inv, ev->item_id);
    if (it < 0)
        return 1; /* an item no longer configured */
    item *x = &inv->items[it];
    if (ev->stock >= 0) {
        int64_t l = atomic_load(&x->left) + ev->stock - atomic_load(&x->stock);
        atomic_store(&x->left, l < 0 ? 0 : l);
        atomic_store(&x->stock, ev->stock);
    }
    if (ev->limit)
        atomic_store(&x->limit, ev->limit);
    return 0;
}

int sk_inventory_apply(sk_inventory *inv, const sk_order_event *ev)
{
    if ((unsigned)ev->type == SK_EVENT_SALE)
        return apply_sale(inv, ev);
    if (ev->type == SK_ORDER_RESERVED)
        return apply_reserved(inv, ev);
    uint64_t h;
    order_shard *os = order_shard_of(inv, ev->order_id, &h);
    int rc = 1;
    pthread_mutex_lock(&os->lock);
    order *o = *order_slot(os, ev->order_id, h);
    if (o && o->o.state == SK_ORDER_RESERVED &&
        (ev->type == SK_ORDER_PAID || ev->type == SK_ORDER_CANCELLED)) {
        order_settle(inv, o, ev->type);
        rc = 0;
    }
    pthread_mutex_unlock(&os->lock);
    if (rc == 0 && ev->type == SK_ORDER_CANCELLED)
        unbuy(inv, o->item, o->o.user_id, o->id, NULL, !o->no_unit, o->epoch);
    return rc;
}

/* ---- the store interface (store.h) over the inventory ----
 *
 * The memory store keeps its order events in an embedded queue in data_dir
 * (order_log.h), which it takes with a lock on data_dir/LOCK (one process
 * per directory: two would sell the same stock twice) and replays before it
 * serves, so a restarted process goes on with the sale where it was. */

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include "order_log.h"
#include "store_impl.h"

typedef struct mem_store {
    sale_store base; /* first: the handle callers hold */
    sk_inventory *inv;
    mq *q;
    sk_order_log *olog;
    int lock_fd; /* flock on data_dir/LOCK, released by close */
} mem_store;

static mem_store *mem_of(sale_store *s)
{
    return (mem_store *)s;
}

static void mem_destroy(sale_store *s)
{
    mem_store *m = mem_of(s);
    if (m->q)
        mq_destroy(m->q);
    sk_order_log_close(m->olog);
    if (m->lock_fd >= 0)
        close(m->lock_fd);
    sk_inventory_destroy(m->inv);
    free(m);
}

static mq *mem_queue(sale_store *s)
{
    return mem_of(s)->q;
}

static int64_t mem_left(sale_store *s, size_t i)
{
    mem_store *m = mem_of(s);
    if (i >= sk_inventory_items(m->inv))
        return -ERANGE;
    return sk_inventory_left(m->inv, (int)i);
}

static int mem_stats(sale_store *s, size_t i, sale_item_stats *out)
{
    mem_store *m = mem_of(s);
    if (i >= sk_inventory_items(m->inv))
        return -ERANGE;
    out->left = sk_inventory_left(m->inv, (int)i);
    out->sold = sk_inventory_sold(m->inv, (int)i);
    out->buyers = sk_inventory_buyers(m->inv, (int)i);
    item *it = &m->inv->items[i];
    out->reserved = atomic_load_explicit(&it->nreserved, memory_order_relaxed);
    out->paid = atomic_load_explicit(&it->npaid, memory_order_relaxed);
    out->cancelled = atomic_load_explicit(&it->ncancelled, memory_order_relaxed);
    return 0;
}

static int mem_order_get(sale_store *s, const char *order_id, sk_order *o)
{
    return sk_inventory_order_get(mem_of(s)->inv, order_id, o);
}

static int mem_order_pay(sale_store *s, const char *order_id, uint64_t now_ms, sk_order *o)
{
    mem_store *m = mem_of(s);
    int rc = sk_inventory_order_get(m->inv, order_id, o);
    if (rc == 0)
        rc = sk_inventory_order_pay(m->inv, order_id, now_ms);
    if (rc == 0)
        o->state = SK_ORDER_PAID;
    return rc;
}

static int mem_reap(sale_store *s, uint64_t now_ms)
{
    return sk_inventory_reap(mem_of(s)->inv, now_ms);
}

static int mem_ping(sale_store *s)
{
    (void)s;
    return 0;
}

/* A reload's raise is a stock change like the admin API's: journalled, so a
 * restart comes back to it (and to later changes) whatever the file says. */
static int64_t mem_raise(sale_store *s, size_t i, int64_t total)
{
    mem_store *m = mem_of(s);
    if (i >= sk_inventory_items(m->inv))
        return -ERANGE;
    int64_t before = sk_inventory_stock(m->inv, (int)i);
    int rc = sk_inventory_set_stock(m->inv, (int)i, total, 1, NULL);
    if (rc < 0)
        return rc;
    return rc ? total - before : 0;
}

static int mem_item_state(sale_store *s, size_t i, sale_item_state *out)
{
    mem_store *m = mem_of(s);
    if (i >= sk_inventory_items(m->inv))
        return -ERANGE;
    out->stock = sk_inventory_stock(m->inv, (int)i);
    out->left = sk_inventory_left(m->inv, (int)i);
    out->per_user_limit = sk_inventory_limit(m->inv, (int)i);
    out->epoch = sk_inventory_epoch(m->inv);
    return 0;
}

static int mem_set_stock(sale_store *s, size_t i, int64_t total, int64_t *held)
{
    mem_store *m = mem_of(s);
    if (i >= sk_inventory_items(m->inv))
        return -ERANGE;
    int rc = sk_inventory_set_stock(m->inv, (int)i, total, 0, held);
    return rc < 0 ? rc : 0;
}

static int mem_set_limit(sale_store *s, size_t i, uint32_t limit)
{
    mem_store *m = mem_of(s);
    if (i >= sk_inventory_items(m->inv))
        return -ERANGE;
    return sk_inventory_set_limit(m->inv, (int)i, limit);
}

static int mem_new_sale(sale_store *s, const int64_t *stock, uint64_t *epoch)
{
    return sk_inventory_new_sale(mem_of(s)->inv, stock, epoch);
}

static const sale_store_ops mem_ops = {.destroy = mem_destroy,
                                       .raise = mem_raise,
                                       .item_state = mem_item_state,
                                       .set_stock = mem_set_stock,
                                       .set_limit = mem_set_limit,
                                       .new_sale = mem_new_sale,
                                       .queue = mem_queue,
                                       .left = mem_left,
                                       .stats = mem_stats,
                                       .order_get = mem_order_get,
                                       .order_pay = mem_order_pay,
                                       .reap = mem_reap,
                                       .ping = mem_ping};

/* Take data_dir, open the order log and replay it into the inventory; then
 * journal every order event there. */
static int mem_orders_open(mem_store *m, const sale_store_config *c, char *err, size_t errlen)
{
    char path[1100];
    size_t applied = 0;
    snprintf(path, sizeof path, "%s/LOCK", c->data_dir);
    m->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (m->lock_fd < 0) {
        int e = errno;
        snprintf(err, errlen, "[queue] data_dir: %s: %s", path, strerror(e));
        return -e;
    }
    if (flock(m->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        snprintf(err, errlen, "[queue] data_dir %s: %s", c->data_dir,
                 e == EWOULDBLOCK ? "in use by another gateway" : strerror(e));
        return -e;
    }
    int rc = sk_order_log_open(m->q, c->ack_timeout_ms, c->lease_timeout_ms,
                               c->order_flush_sync, &m->olog);
    if (rc == 0)
        rc = sk_order_log_recover(m->olog, m->inv, &applied);
    if (rc < 0) {
        snprintf(err, errlen, "orders: cannot recover %s/%s: %s", c->data_dir, SK_ORDER_TOPIC,
                 strerror(-rc));
        return rc;
    }
    for (size_t i = 0; i < m->inv->nitems; i++) {
        item *x = &m->inv->items[i];
        if (x->beyond)
            fprintf(stderr, "%s: [item.%s] %lld orders read back beyond the stock %lld: they are "
                            "kept, stock left is 0, and their cancel returns nothing\n",
                    c->name ? c->name : "sale", x->id, (long long)x->beyond,
                    (long long)atomic_load(&x->stock));
    }
    sk_journal j = sk_order_log_journal(m->olog);
    sk_orders_config oc = {.pay_timeout_ms = c->pay_timeout_ms, .journal = &j};
    sk_inventory_set_orders(m->inv, &oc);
    if (applied)
        sk_log(SK_LOG_INFO, "store", NULL, "%s: recovered %zu order events from %s",
               c->name ? c->name : "sale", applied, c->data_dir);
    return 0;
}

int sale__store_memory_create(const sale_store_config *c, sale_store **out, char *err,
                              size_t errlen)
{
    int rc = -ENOMEM;
    mem_store *m = calloc(1, sizeof *m);
    sk_item_spec *specs = calloc(c->nitems ? c->nitems : 1, sizeof *specs);
    if (!m || !specs) {
        snprintf(err, errlen, "out of memory");
        free(m);
        goto out_free_specs;
    }
    m->base.ops = &mem_ops;
    m->lock_fd = -1;
    for (size_t i = 0; i < c->nitems; i++)
        specs[i] = (sk_item_spec){c->items[i].id, c->items[i].stock, c->items[i].per_user_limit};
    rc = sk_inventory_create(specs, c->nitems, c->decision_capacity, &m->inv);
    if (rc < 0) {
        snprintf(err, errlen, "inventory: %s", strerror(-rc));
        goto out_destroy;
    }
    m->base.be = sk_inventory_backend(m->inv);
    rc = mq_create(c->data_dir, &m->q);
    if (rc < 0) {
        snprintf(err, errlen, "queue: %s: %s", c->data_dir, strerror(-rc));
        goto out_destroy;
    }
    rc = mem_orders_open(m, c, err, errlen);
    if (rc < 0)
        goto out_destroy;
    *out = &m->base;
    free(specs);
    return 0;

out_destroy:
    mem_destroy(&m->base);
out_free_specs:
    free(specs);
    return rc;
}
