/*
 * test_store_memory.c - stock, per-user limits and once-only decisions.
 *
 * The threaded tests check the invariants of sale/store_memory.h over every decision
 * made: successes never exceed stock, no user passes per_user_limit, order ids
 * are unique, and a request id decided by several threads at once is decided
 * exactly once with every caller seeing the same outcome.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sale/store_memory.h"

static uint64_t mix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* A request id as random as a UUID's, unique per n. */
static void req_id(uint8_t id[16], uint64_t n)
{
    uint64_t a = mix(n), b = n;
    memcpy(id, &a, 8);
    memcpy(id + 8, &b, 8);
}

static int is_uuid(const char *s)
{
    if (strlen(s) != 36)
        return 0;
    for (int i = 0; i < 36; i++) {
        int dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    }
    return 1;
}

static sk_inventory *make(int64_t stock, uint32_t limit, size_t capacity)
{
    sk_item_spec items[] = {
        {"sku-1", stock, limit},
        {"sku-2", 5, 1},
        {"empty", 0, 1},
    };
    sk_inventory *inv = NULL;
    assert_int_equal(sk_inventory_create(items, 3, capacity, &inv), 0);
    return inv;
}

/* decide and return the rc; o filled */
static int decide(sk_inventory *inv, int item, const char *user, uint64_t n, enum sk_result v,
                  sk_outcome *o, int64_t *left)
{
    uint8_t id[16];
    req_id(id, n);
    memset(o, 0x3c, sizeof *o);
    return sk_inventory_decide(inv, item, user, id, v, o, left);
}

/* ---- single-threaded ---- */

static void test_create_and_lookup(void **state)
{
    (void)state;
    sk_inventory *inv = NULL;
    sk_item_spec bad_id[] = {{"bad id", 1, 1}};
    sk_item_spec empty_id[] = {{"", 1, 1}};
    sk_item_spec bad_stock[] = {{"ok", -1, 1}};
    sk_item_spec bad_limit[] = {{"ok", 1, 0}};
    assert_int_equal(sk_inventory_create(bad_id, 1, 100, &inv), -EINVAL);
    assert_int_equal(sk_inventory_create(empty_id, 1, 100, &inv), -EINVAL);
    assert_int_equal(sk_inventory_create(bad_stock, 1, 100, &inv), -EINVAL);
    assert_int_equal(sk_inventory_create(bad_limit, 1, 100, &inv), -EINVAL);

    inv = make(10, 1, 1000);
    assert_int_equal(sk_inventory_items(inv), 3);
    assert_int_equal(sk_inventory_find(inv, "sku-1"), 0);
    assert_int_equal(sk_inventory_find(inv, "sku-2"), 1);
    assert_int_equal(sk_inventory_find(inv, "empty"), 2);
    assert_int_equal(sk_inventory_find(inv, "sku-3"), -ENOENT);
    assert_int_equal(sk_inventory_find(inv, "sku-"), -ENOENT);
    assert_int_equal(sk_inventory_left(inv, 0), 10);
    assert_int_equal(sk_inventory_left(inv, 1), 5);
    assert_int_equal(sk_inventory_sold(inv, 0), 0);
    sk_inventory_destroy(inv);
    sk_inventory_destroy(NULL);
}

static void test_bad_item_index(void **state)
{
    (void)state;
    sk_inventory *inv = make(10, 1, 1000);
    sk_outcome o;
    int64_t left = 12345;
    assert_int_equal(decide(inv, -1, "u", 1, SK_SUCCESS, &o, &left), -EINVAL);
    assert_int_equal(decide(inv, 3, "u", 1, SK_SUCCESS, &o, &left), -EINVAL);
    assert_int_equal(decide(inv, 1000, "u", 1, SK_SUCCESS, &o, &left), -EINVAL);
    assert_int_equal(left, 12345);
    /* nothing was recorded for that request id */
    assert_int_equal(decide(inv, 0, "u", 1, SK_SUCCESS, &o, &left), 1);
    assert_int_equal(o.result, SK_SUCCESS);
    assert_int_equal(left, 9);
    sk_inventory_destroy(inv);
}

static void test_buy_and_stock(void **state)
{
    (void)state;
    sk_inventory *inv = make(3, 1, 1000);
    sk_outcome o;
    int64_t left = -1;
    char seen[3][SK_ORDER_ID_MAX + 1];
    for (int i = 0; i < 3; i++) {
        char user[32];
        snprintf(user, sizeof user, "user-%d", i);
        assert_int_equal(decide(inv, 0, user, 100 + (uint64_t)i, SK_SUCCESS, &o, &left), 1);
        assert_int_equal(o.result, SK_SUCCESS);
        assert_true(is_uuid(o.order_id));
        assert_int_equal(left, 2 - i);
        strcpy(seen[i], o.order_id);
    }
    assert_string_not_equal(seen[0], seen[1]);
    assert_string_not_equal(seen[1], seen[2]);
    assert_string_not_equal(seen[0], seen[2]);
    assert_int_equal(sk_inventory_sold(inv, 0), 3);

    assert_int_equal(decide(inv, 0, "user-9", 200, SK_SUCCESS, &o, &left), 1);
    assert_int_equal(o.result, SK_SOLD_OUT);
    assert_string_equal(o.order_id, "");
    assert_int_equal(left, 0);
    assert_int_equal(sk_inventory_left(inv, 0), 0);
    /* another item is independent; left may be NULL */
    assert_int_equal(decide(inv, 1, "user-9", 201, SK_SUCCESS, &o, NULL), 1);
    assert_int_equal(o.result, SK_SUCCESS);
    assert_int_equal(sk_inventory_left(inv, 1), 4);
    sk_inventory_destroy(inv);
}

static void test_stock_zero(void **state)
{
    (void)state;
    sk_inventory *inv = make(3, 1, 1000);
    sk_outcome o;
    int64_t left = -1;
    for (uint64_t i = 0; i < 5; i++) {
        assert_int_equal(decide(inv, 2, "u", 300 + i, SK_SUCCESS, &o, &left), 1);
        assert_int_equal(o.result, SK_SOLD_OUT);
        assert_string_equal(o.order_id, "");
        assert_int_equal(left, 0);
    }
    assert_int_equal(sk_inventory_sold(inv, 2), 0);
    /* a refused buyer was not recorded as one: it buys on another item */
    assert_int_equal(decide(inv, 0, "u", 310, SK_SUCCESS, &o, NULL), 1);
    assert_int_equal(o.result, SK_SUCCESS);
    sk_inventory_destroy(inv);
}

static void test_per_user_limit_1(void **state)
{
    (void)state;
    sk_inventory *inv = make(100, 1, 1000);
    sk_outcome o;
    int64_t left;
    assert_int_equal(decide(inv, 0, "alice", 1, SK_SUCCESS, &o, &left), 1);
    assert_int_equal(o.result, SK_SUCCESS);
    char first[SK_ORDER_ID_MAX + 1];
    strcpy(first, o.order_id);
    for (uint64_t n = 2; n < 6; n++) {
        assert_int_equal(decide(inv, 0, "alice", n, SK_SUCCESS, &o, &left), 1);
        assert_int_equal(o.result, SK_ALREADY_PURCHASED);
        assert_string_equal(o.order_id, first); /* names the user's order */
        assert_int_equal(left, 99);
    }
    /* ids are exact: a longer or shorter name is someone else */
    assert_int_equal(decide(inv, 0, "alic", 10, SK_SUCCESS, &o, NULL), 1);
    assert_int_equal(o.result, SK_SUCCESS);
    assert_int_equal(decide(inv, 0, "alice2", 11, SK_SUCCESS, &o, NULL), 1);
    assert_int_equal(o.result, SK_SUCCESS);
    /* the limit is per item */
    assert_int_equal(decide(inv, 1, "alice", 12, SK_SUCCESS, &o, NULL), 1);
    assert_int_equal(o.result, SK_SUCCESS);
    assert_int_equal(sk_inventory_sold(inv, 0), 3);
    sk_inventory_destroy(inv);
}

static void test_per_user_limit_3(void **state)
{
    (void)state;
    sk_inventory *inv = make(100, 3, 1000);
    sk_outcome o;
    char orders[3][SK_ORDER_ID_MAX + 1];
    for (int i = 0; i < 3; i++) {
        assert_int_equal(decide(inv, 0, "bob", 20 + (uint64_t)i, SK_SUCCESS, &o, NULL), 1);
        assert_int_equal(o.result, SK_SUCCESS);
        strcpy(orders[i], o.order_id);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(orders[i], orders[j]);
    }
    for (int i = 0; i < 3; i++) {
        assert_int_equal(decide(inv, 0, "bob", 30 + (uint64_t)i, SK_SUCCESS, &o, NULL), 1);
        assert_int_equal(o.result, SK_ALREADY_PURCHASED);
        assert_string_equal(o.order_id, orders[2]); /* the last order */
    }
    assert_int_equal(sk_inventory_sold(inv, 0), 3);
    assert_int_equal(decide(inv, 0, "carol", 40, SK_SUCCESS, &o, NULL), 1);
    assert_int_equal(o.result, SK_SUCCESS);
    sk_inventory_destroy(inv);
}

static void test_idempotent_decisions(void **state)
{
    (void)state;
    sk_inventory *inv = make(2, 1, 1000);
    sk_outcome o, first;
    int64_t left;

    /* success, then redelivered: the stored success, whatever the verdict now */
    assert_int_equal(decide(inv, 0, "u1", 50, SK_SUCCESS, &first, &left), 1);
    assert_int_equal(first.result, SK_SUCCESS);
    assert_int_equal(left, 1);
    static const enum sk_result verdicts[] = {SK_SUCCESS, SK_EXPIRED, SK_BLOCKED, SK_ENDED,
                                              SK_NOT_STARTED};
    for (size_t i = 0; i < sizeof verdicts / sizeof *verdicts; i++) {
        assert_int_equal(decide(inv, 0, "u1", 50, verdicts[i], &o, &left), 0);
        assert_int_equal(o.result, SK_SUCCESS);
        assert_string_equal(o.order_id, first.order_id);
        assert_int_equal(left, 1); /* nothing bought again */
    }

    /* a non-success verdict is recorded and replayed: no purchase later */
    assert_int_equal(decide(inv, 0, "u2", 51, SK_EXPIRED, &o, &left), 1);
    assert_int_equal(o.result, SK_EXPIRED);
    assert_string_equal(o.order_id, "");
    assert_int_equal(left, 1);
    assert_int_equal(decide(inv, 0, "u2", 51, SK_SUCCESS, &o, &left), 0);
    assert_int_equal(o.result, SK_EXPIRED);
    assert_string_equal(o.order_id, "");
    assert_int_equal(left, 1);

    assert_int_equal(decide(inv, 0, "u3", 52, SK_BLOCKED, &o, NULL), 1);
    assert_int_equal(o.result, SK_BLOCKED);
    assert_int_equal(decide(inv, 0, "u3", 52, SK_SUCCESS, &o, NULL), 0);
    assert_int_equal(o.result, SK_BLOCKED);

    /* already_purchased is replayed with its order id */
    assert_int_equal(decide(inv, 0, "u1", 53, SK_SUCCESS, &o, NULL), 1);
    assert_int_equal(o.result, SK_ALREADY_PURCHASED);
    assert_string_equal(o.order_id, first.order_id);
    assert_int_equal(decide(inv, 0, "u1", 53, SK_SUCCESS, &o, NULL), 0);
    assert_int_equal(o.result, SK_ALREADY_PURCHASED);
    assert_string_equal(o.order_id, first.order_id);

    /* sold out is replayed too */
    assert_int_equal(decide(inv, 0, "u4", 54, SK_SUCCESS, &o, &left), 1);
    assert_int_equal(o.result, SK_SUCCESS);
    assert_int_equal(left, 0);
    assert_int_equal(decide(inv, 0, "u5", 55, SK_SUCCESS, &o, NULL), 1);
    assert_int_equal(o.result, SK_SOLD_OUT);
    assert_int_equal(decide(inv, 0, "u5", 55, SK_SUCCESS, &o, NULL), 0);
    assert_int_equal(o.result, SK_SOLD_OUT);
    assert_int_equal(sk_inventory_sold(inv, 0), 2);
    sk_inventory_destroy(inv);
}

/* Far more decisions than the table starts with buckets (64 shards of
 * 1,024): the table grows, and every decision is still found, once. */
static void test_many_decisions(void **state)
{
    (void)state;
    enum { N = 300000, BUYERS = 2000 };
    sk_inventory *inv = make(BUYERS, 1, 4 * (size_t)N); /* no shard evicts */
    sk_outcome o;
    for (uint64_t n = 0; n < N; n++) {
        char user[32];
        snprintf(user, sizeof user, "u%llu", (unsigned long long)n);
        assert_int_equal(decide(inv, 0, user, n, n < BUYERS ? SK_SUCCESS : SK_EXPIRED, &o, NULL),
                         1);
    }
    for (uint64_t n = 0; n < N; n++) {
        char user[32];
        snprintf(user, sizeof user, "u%llu", (unsigned long long)n);
        assert_int_equal(decide(inv, 0, user, n, SK_SUCCESS, &o, NULL), 0);
        assert_int_equal(o.result, n < BUYERS ? SK_SUCCESS : SK_EXPIRED);
    }
    assert_int_equal(sk_inventory_sold(inv, 0), BUYERS);
    sk_inventory_destroy(inv);
}

static void test_decision_capacity(void **state)
{
    (void)state;
    enum { CAP = 640, SUCCESSES = 50, OTHERS = 20000 };
    sk_inventory *inv = make(SUCCESSES, 1, CAP);
    sk_outcome o;
    char orders[SUCCESSES][SK_ORDER_ID_MAX + 1];
    int s = 0;

    /* successes spread among many non-success decisions */
    for (uint64_t n = 0; n < OTHERS; n++) {
        if (n % (OTHERS / SUCCESSES) == 0 && s < SUCCESSES) {
            char user[32];
            snprintf(user, sizeof user, "buyer-%d", s);
            assert_int_equal(decide(inv, 0, user, 1000000 + (uint64_t)s, SK_SUCCESS, &o, NULL), 1);
            assert_int_equal(o.result, SK_SUCCESS);
            strcpy(orders[s++], o.order_id);
        }
        assert_int_equal(decide(inv, 0, "late", n, SK_EXPIRED, &o, NULL), 1);
    }
    assert_int_equal(s, SUCCESSES);

    /* Which non-success decisions are still known? Probe newest first with a
     * different verdict: a known one answers 0 with the stored verdict. (A
     * miss records a new decision, which can only push out decisions older
     * than every one still to be found.) */
    size_t kept = 0;
    int newest_kept = 0, oldest_kept = 0;
    for (uint64_t n = OTHERS; n-- > 0;) {
        int rc = decide(inv, 0, "late", n, SK_BLOCKED, &o, NULL);
        if (rc == 0) {
            assert_int_equal(o.result, SK_EXPIRED);
            kept++;
        } else {
            assert_int_equal(rc, 1);
            assert_int_equal(o.result, SK_BLOCKED);
        }
        if (n == OTHERS - 1)
            newest_kept = rc == 0;
        if (n == 0)
            oldest_kept = rc == 0;
    }
    assert_true(newest_kept);
    assert_false(oldest_kept);
    if (kept > CAP || kept < CAP / 2)
        fail_msg("capacity %d: %zu non-success decisions kept", CAP, kept);

    /* every success is still known: redelivered, it answers the same order */
    for (int i = 0; i < SUCCESSES; i++) {
        char user[32];
        snprintf(user, sizeof user, "buyer-%d", i);
        assert_int_equal(decide(inv, 0, user, 1000000 + (uint64_t)i, SK_EXPIRED, &o, NULL), 0);
        assert_int_equal(o.result, SK_SUCCESS);
        assert_string_equal(o.order_id, orders[i]);
    }
    assert_int_equal(sk_inventory_sold(inv, 0), SUCCESSES);
    assert_int_equal(sk_inventory_left(inv, 0), 0);
    sk_inventory_destroy(inv);
}

/* ---- threads: many buyers ---- */

#define THREADS 8
#define PER_THREAD 5000
#define USERS 2000
#define STOCK 1000

typedef struct rec {
    int user;
    int rc;
    enum sk_result result;
    char order_id[SK_ORDER_ID_MAX + 1];
} rec;

typedef struct buyers {
    sk_inventory *inv;
    int users;
    int per_thread;
    rec *recs; /* THREADS * per_thread, each thread its own slice */
    pthread_barrier_t go;
} buyers;

typedef struct buyer_arg {
    buyers *b;
    int index;
    int replay_errors; /* a redelivery that did not answer the stored outcome */
} buyer_arg;

static void *buyer_main(void *arg)
{
    buyer_arg *a = arg;
    buyers *b = a->b;
    rec *mine = b->recs + (size_t)a->index * (size_t)b->per_thread;
    uint64_t seed = mix((uint64_t)a->index + 77);
    pthread_barrier_wait(&b->go);
    for (int j = 0; j < b->per_thread; j++) {
        char user[32];
        uint8_t id[16];
        sk_outcome o;
        seed = mix(seed);
        mine[j].user = (int)(seed % (uint64_t)b->users);
        snprintf(user, sizeof user, "u%d", mine[j].user);
        req_id(id, ((uint64_t)a->index << 32) | (uint64_t)j);
        mine[j].rc = sk_inventory_decide(b->inv, 0, user, id, SK_SUCCESS, &o, NULL);
        mine[j].result = o.result;
        memcpy(mine[j].order_id, o.order_id, sizeof o.order_id);

        if ((seed >> 40) % 8 == 0) { /* redeliver an earlier request of this thread */
            int k = (int)((seed >> 20) % (uint64_t)(j + 1));
            snprintf(user, sizeof user, "u%d", mine[k].user);
            req_id(id, ((uint64_t)a->index << 32) | (uint64_t)k);
            int rc = sk_inventory_decide(b->inv, 0, user, id,
                                         (seed >> 50) % 2 ? SK_SUCCESS : SK_EXPIRED, &o, NULL);
            if (rc != 0 || o.result != mine[k].result || strcmp(o.order_id, mine[k].order_id) != 0)
                a->replay_errors++;
        }
    }
    return NULL;
}

static int cmp_str(const void *x, const void *y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

static void run_buyers(int64_t stock, uint32_t limit, int users, int per_thread)
{
    buyers b = {.inv = make(stock, limit, 100000), .users = users, .per_thread = per_thread};
    pthread_t th[THREADS];
    buyer_arg a[THREADS];
    size_t total = (size_t)THREADS * (size_t)per_thread;
    b.recs = calloc(total, sizeof *b.recs);
    assert_non_null(b.recs);
    pthread_barrier_init(&b.go, NULL, THREADS);
    for (int i = 0; i < THREADS; i++) {
        a[i] = (buyer_arg){.b = &b, .index = i};
        assert_int_equal(pthread_create(&th[i], NULL, buyer_main, &a[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(a[i].replay_errors, 0);
    }
    pthread_barrier_destroy(&b.go);

    int *bought = calloc((size_t)users, sizeof *bought);
    const char **user_order = calloc((size_t)users, sizeof *user_order); /* last success */
    const char **orders = calloc(total, sizeof *orders);
    assert_non_null(bought);
    assert_non_null(user_order);
    assert_non_null(orders);
    size_t successes = 0, sold_out = 0;
    for (size_t i = 0; i < total; i++) {
        rec *r = &b.recs[i];
        assert_int_equal(r->rc, 1); /* every request id was new */
        switch (r->result) {
        case SK_SUCCESS:
            if (!is_uuid(r->order_id))
                fail_msg("success without an order id: '%s'", r->order_id);
            orders[successes++] = r->order_id;
            if (++bought[r->user] > (int)limit)
                fail_msg("user %d bought %d times (limit %u)", r->user, bought[r->user], limit);
            user_order[r->user] = r->order_id;
            break;
        case SK_SOLD_OUT:
            assert_string_equal(r->order_id, "");
            sold_out++;
            break;
        case SK_ALREADY_PURCHASED:
            assert_true(is_uuid(r->order_id));
            break;
        default:
            fail_msg("unexpected result %d", r->result);
        }
    }
    assert_int_equal(successes,
                     (size_t)(stock < (int64_t)users * limit ? stock : (int64_t)users * limit));
    assert_int_equal(sk_inventory_sold(b.inv, 0), (int64_t)successes);
    assert_int_equal(sk_inventory_left(b.inv, 0), stock - (int64_t)successes);
    if (limit == 1) /* already_purchased names the one order the user has */
        for (size_t i = 0; i < total; i++)
            if (b.recs[i].result == SK_ALREADY_PURCHASED)
                assert_string_equal(b.recs[i].order_id, user_order[b.recs[i].user]);
    qsort(orders, successes, sizeof *orders, cmp_str);
    for (size_t i = 1; i < successes; i++)
        if (strcmp(orders[i - 1], orders[i]) == 0)
            fail_msg("order id %s given twice", orders[i]);
    print_message("stock %lld limit %u: %zu sold, %zu sold out\n", (long long)stock, limit,
                  successes, sold_out);
    free(orders);
    free(user_order);
    free(bought);
    free(b.recs);
    sk_inventory_destroy(b.inv);
}

static void test_threads_never_oversell(void **state)
{
    (void)state;
    run_buyers(STOCK, 1, USERS, PER_THREAD);
}

static void test_threads_per_user_limit_3(void **state)
{
    (void)state;
    /* 10 users with a limit of 3 and plenty of stock: exactly 30 sold */
    run_buyers(1000, 3, 10, 500);
}

/* ---- threads: one request delivered to several workers at once ---- */

#define SHARED 2000
#define SHARED_STOCK 500

typedef struct shared {
    sk_inventory *inv;
    pthread_barrier_t go;
    struct {
        int rc;
        enum sk_result result;
        char order_id[SK_ORDER_ID_MAX + 1];
    } seen[4][SHARED];
} shared;

typedef struct shared_arg {
    shared *s;
    int index;
} shared_arg;

static void *shared_main(void *arg)
{
    shared_arg *a = arg;
    shared *s = a->s;
    pthread_barrier_wait(&s->go);
    for (int j = 0; j < SHARED; j++) {
        int k = a->index % 2 ? SHARED - 1 - j : j; /* two forwards, two backwards */
        /* thread 3 reached a verdict of its own on odd requests: whoever
         * decides first wins, and everyone must then see that */
        char user[32];
        uint8_t id[16];
        sk_outcome o;
        snprintf(user, sizeof user, "s%d", k);
        req_id(id, 0xabc00000u + (uint64_t)k);
        s->seen[a->index][k].rc = sk_inventory_decide(
            s->inv, 0, user, id, a->index == 3 && k % 2 ? SK_EXPIRED : SK_SUCCESS, &o, NULL);
        s->seen[a->index][k].result = o.result;
        memcpy(s->seen[a->index][k].order_id, o.order_id, sizeof o.order_id);
    }
    return NULL;
}

static void test_threads_redelivery(void **state)
{
    (void)state;
    shared *s = calloc(1, sizeof *s);
    pthread_t th[4];
    shared_arg a[4];
    assert_non_null(s);
    s->inv = make(SHARED_STOCK, 1, 100000);
    pthread_barrier_init(&s->go, NULL, 4);
    for (int i = 0; i < 4; i++) {
        a[i] = (shared_arg){s, i};
        assert_int_equal(pthread_create(&th[i], NULL, shared_main, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&s->go);

    int successes = 0;
    for (int k = 0; k < SHARED; k++) {
        int fresh = 0;
        for (int t = 0; t < 4; t++) {
            fresh += s->seen[t][k].rc == 1;
            assert_true(s->seen[t][k].rc == 0 || s->seen[t][k].rc == 1);
            assert_int_equal(s->seen[t][k].result, s->seen[0][k].result);
            assert_string_equal(s->seen[t][k].order_id, s->seen[0][k].order_id);
        }
        if (fresh != 1)
            fail_msg("request %d decided %d times", k, fresh);
        successes += s->seen[0][k].result == SK_SUCCESS;
    }
    /* every even request tries to buy, for distinct users: all stock goes */
    assert_int_equal(successes, SHARED_STOCK);
    assert_int_equal(sk_inventory_sold(s->inv, 0), SHARED_STOCK);
    sk_inventory_destroy(s->inv);
    free(s);
}

/* ---- orders: pay, reap, journal, undo, replay ---- */

#define PAY_MS 1000

static uint64_t fake_ms;
static uint64_t fake_wall(void *arg)
{
    (void)arg;
    return fake_ms;
}

/* A journal in memory: records what it made durable; fails events whose
 * index in the whole run is in fail_mask (bit i: the i-th event offered). */
typedef struct fake_journal {
    sk_order_event evs[256];
    size_t n;
    unsigned offered;
    uint64_t fail_mask;
    int fail_all;
    /* re-entry while appending: the pending decision is not visible */
    sk_inventory *peek_inv;
    uint64_t peek_req;
    enum sk_result peek_result;
    int peek_get;
} fake_journal;

static int fake_append(void *arg, const sk_order_event *evs, size_t n, int *rcs)
{
    fake_journal *j = arg;
    int rc = 0;
    if (j->peek_inv) {
        sk_outcome o;
        sk_order ord;
        uint8_t id[16];
        req_id(id, j->peek_req);
        sk_inventory_decide(j->peek_inv, 0, "someone", id, SK_SUCCESS, &o, NULL);
        j->peek_result = o.result;
        j->peek_get = sk_inventory_order_get(j->peek_inv, evs[0].order_id, &ord);
    }
    for (size_t i = 0; i < n; i++) {
        unsigned k = j->offered++;
        if (j->fail_all || (k < 64 && (j->fail_mask >> k) & 1)) {
            rcs[i] = -ENOSPC;
            rc = rc ? rc : -ENOSPC;
            continue;
        }
        rcs[i] = 0;
        assert_true(j->n < 256);
        j->evs[j->n++] = evs[i];
    }
    return rc;
}

static sk_inventory *make_orders(int64_t stock, uint32_t limit, fake_journal *j)
{
    sk_inventory *inv = make(stock, limit, 1000);
    sk_journal jr = {.arg = j, .append = fake_append};
    sk_orders_config oc = {.pay_timeout_ms = PAY_MS, .journal = j ? &jr : NULL,
                           .wall_ms = fake_wall};
    sk_inventory_set_orders(inv, &oc);
    return inv;
}

static void buy_ok(sk_inventory *inv, const char *user, uint64_t n, char *order_id)
{
    sk_outcome o;
    assert_int_equal(decide(inv, 0, user, n, SK_SUCCESS, &o, NULL), 1);
    assert_int_equal(o.result, SK_SUCCESS);
    strcpy(order_id, o.order_id);
}

static void test_orders_pay_and_reap(void **state)
{
    (void)state;
    fake_ms = 1000000;
    sk_inventory *inv = make_orders(3, 1, NULL); /* memory only */
    char a[40], b[40], c[40];
    sk_order o;
    sk_outcome out;
    int64_t counts[3];
    buy_ok(inv, "alice", 1, a);
    fake_ms += 10;
    buy_ok(inv, "bob", 2, b);
    buy_ok(inv, "carol", 3, c);
    assert_int_equal(sk_inventory_order_get(inv, a, &o), 0);
    assert_int_equal(o.state, SK_ORDER_RESERVED);
    assert_string_equal(o.user_id, "alice");
    assert_string_equal(o.item_id, "sku-1");
    assert_int_equal(o.created_ms, 1000000);
    assert_int_equal(o.pay_deadline_ms, 1000000 + PAY_MS);
    uint8_t rid[16];
    req_id(rid, 1);
    assert_memory_equal(o.request_id, rid, 16);
    assert_int_equal(sk_inventory_order_get(inv, "0b7e3a6c-5a4e-4c55-9a55-6a1f0c7d9e21", &o),
                     -ENOENT);
    assert_int_equal(sk_inventory_left(inv, 0), 0);

    /* pay: idempotent */
    assert_int_equal(sk_inventory_order_pay(inv, a, fake_ms), 0);
    assert_int_equal(sk_inventory_order_pay(inv, a, fake_ms), 0);
    assert_int_equal(sk_inventory_order_get(inv, a, &o), 0);
    assert_int_equal(o.state, SK_ORDER_PAID);
    assert_int_equal(sk_inventory_order_pay(inv, "nope", fake_ms), -ENOENT);

    /* never early: alice's deadline passed, bob's not */
    assert_int_equal(sk_inventory_reap(inv, 1000000 + PAY_MS + 9), 0);
    /* c: too late to pay, even before the reaper got to it */
    assert_int_equal(sk_inventory_order_pay(inv, c, 1000000 + PAY_MS + 10), -ETIME);
    assert_int_equal(sk_inventory_reap(inv, 1000000 + PAY_MS + 10), 2);
    assert_int_equal(sk_inventory_reap(inv, 1000000 + PAY_MS + 5000), 0); /* once only */
    assert_int_equal(sk_inventory_left(inv, 0), 2);
    assert_int_equal(sk_inventory_sold(inv, 0), 1);
    assert_int_equal(sk_inventory_buyers(inv, 0), 1);
    assert_int_equal(sk_inventory_order_get(inv, b, &o), 0);
    assert_int_equal(o.state, SK_ORDER_CANCELLED);
    assert_int_equal(sk_inventory_order_pay(inv, b, fake_ms), -ECANCELED);
    assert_int_equal(sk_inventory_order_get(inv, a, &o), 0);
    assert_int_equal(o.state, SK_ORDER_PAID);
    sk_inventory_order_counts(inv, counts);
    assert_int_equal(counts[SK_ORDER_RESERVED], 0);
    assert_int_equal(counts[SK_ORDER_PAID], 1);
    assert_int_equal(counts[SK_ORDER_CANCELLED], 2);

    /* the cancelled buyer may buy again; the paid one may not */
    assert_int_equal(decide(inv, 0, "bob", 4, SK_SUCCESS, &out, NULL), 1);
    assert_int_equal(out.result, SK_SUCCESS);
    assert_int_equal(decide(inv, 0, "alice", 5, SK_SUCCESS, &out, NULL), 1);
    assert_int_equal(out.result, SK_ALREADY_PURCHASED);
    assert_string_equal(out.order_id, a);
    /* the stored decision of a cancelled order still answers its success */
    assert_int_equal(decide(inv, 0, "bob", 2, SK_SUCCESS, &out, NULL), 0);
    assert_int_equal(out.result, SK_SUCCESS);
    assert_string_equal(out.order_id, b);
    sk_inventory_destroy(inv);
}

/* A failed append undoes exactly the purchases it failed: stock, the user's
 * count and last order, the decision; the batch call fails. */
static void test_orders_journal_undo(void **state)
{
    (void)state;
    fake_journal *j = calloc(1, sizeof *j);
    fake_ms = 5000000;
    sk_inventory *inv = make_orders(10, 1, j);
    sk_backend be = sk_inventory_backend(inv);
    uint8_t ids[4][16];
    const char *users[4] = {"u0", "u1", "u2", "u3"};
    sk_decide reqs[4];
    sk_outcome outs[4];
    int64_t left[4];
    for (int i = 0; i < 4; i++) {
        req_id(ids[i], 100 + (uint64_t)i);
        reqs[i] = (sk_decide){"sku-1", users[i], ids[i], i == 2 ? SK_BLOCKED : SK_SUCCESS};
    }
    j->fail_mask = 1u << 1; /* the second reserved event (u1) fails */
    assert_int_equal(be.decide(be.impl, reqs, 4, outs, left), -ENOSPC);
    assert_int_equal(j->n, 2); /* u0, u3 durable */
    assert_int_equal(sk_inventory_left(inv, 0), 8);
    assert_int_equal(sk_inventory_buyers(inv, 0), 2);
    sk_order o;
    assert_int_equal(sk_inventory_order_get(inv, j->evs[0].order_id, &o), 0);
    assert_string_equal(o.user_id, "u0");

    /* redelivered: the durable ones answer their success, u1 buys now */
    assert_int_equal(be.decide(be.impl, reqs, 4, outs, left), 0);
    assert_int_equal(outs[0].result, SK_SUCCESS);
    assert_string_equal(outs[0].order_id, j->evs[0].order_id);
    assert_int_equal(outs[1].result, SK_SUCCESS);
    assert_int_equal(outs[2].result, SK_BLOCKED);
    assert_int_equal(outs[3].result, SK_SUCCESS);
    assert_int_equal(j->n, 3);
    assert_string_equal(outs[1].order_id, j->evs[2].order_id);
    assert_int_equal(sk_inventory_left(inv, 0), 7);
    assert_int_equal(sk_inventory_buyers(inv, 0), 3);

    /* every append fails: nothing sells, nothing is left behind */
    j->fail_all = 1;
    sk_outcome out;
    assert_int_equal(decide(inv, 0, "u9", 200, SK_SUCCESS, &out, NULL), -ENOSPC);
    assert_int_equal(sk_inventory_left(inv, 0), 7);
    assert_int_equal(decide(inv, 0, "u1", 201, SK_SUCCESS, &out, NULL), 0 + 1);
    assert_int_equal(out.result, SK_ALREADY_PURCHASED); /* no append: nothing new */
    /* pay and reap fail closed too: the order stays reserved */
    assert_int_equal(sk_inventory_order_pay(inv, outs[0].order_id, fake_ms), -ENOSPC);
    assert_int_equal(sk_inventory_reap(inv, fake_ms + PAY_MS), -ENOSPC);
    assert_int_equal(sk_inventory_order_get(inv, outs[0].order_id, &o), 0);
    assert_int_equal(o.state, SK_ORDER_RESERVED);
    assert_int_equal(sk_inventory_left(inv, 0), 7);
    j->fail_all = 0;
    assert_int_equal(decide(inv, 0, "u9", 200, SK_SUCCESS, &out, NULL), 1);
    assert_int_equal(out.result, SK_SUCCESS);
    assert_int_equal(sk_inventory_order_pay(inv, outs[0].order_id, fake_ms), 0);
    assert_int_equal(sk_inventory_reap(inv, fake_ms + PAY_MS), 3); /* u1, u3, u9 */
    assert_int_equal(sk_inventory_left(inv, 0), 9);
    sk_inventory_destroy(inv);
    free(j);
}

/* While a success is being journalled, a second delivery of the same request
 * gets SK_UNAVAILABLE (not recorded) and the order is not visible yet. */
static void test_orders_pending_invisible(void **state)
{
    (void)state;
    fake_journal *j = calloc(1, sizeof *j);
    fake_ms = 7000000;
    sk_inventory *inv = make_orders(10, 1, j);
    j->peek_inv = inv;
    j->peek_req = 300;
    char a[40];
    buy_ok(inv, "first", 300, a);
    assert_int_equal(j->peek_result, SK_UNAVAILABLE);
    assert_int_equal(j->peek_get, -ENOENT);
    j->peek_inv = NULL;
    sk_outcome o;
    assert_int_equal(decide(inv, 0, "first", 300, SK_SUCCESS, &o, NULL), 0);
    assert_int_equal(o.result, SK_SUCCESS);
    assert_string_equal(o.order_id, a);
    assert_int_equal(sk_inventory_left(inv, 0), 9);
    sk_inventory_destroy(inv);
    free(j);
}

/* Stock lowered between runs: the orders past the new stock are recovered
 * but hold no unit, so neither their cancel event nor a reap gives one back
 * (that unit would be sold again: more live orders than the stock). */
static void test_orders_replay_beyond_stock(void **state)
{
    (void)state;
    fake_journal *j = calloc(1, sizeof *j);
    fake_ms = 9000000;
    sk_inventory *inv = make_orders(5, 1, j);
    char a[40], b[40], c[40];
    buy_ok(inv, "a", 1, a);
    buy_ok(inv, "b", 2, b);
    buy_ok(inv, "c", 3, c);
    assert_int_equal(sk_inventory_reap(inv, 9000000 + PAY_MS), 3);
    assert_int_equal(j->n, 6);
    sk_inventory_destroy(inv);

    fake_journal *j2 = calloc(1, sizeof *j2);
    inv = make_orders(1, 1, j2);
    for (size_t i = 0; i < 3; i++) /* the reserved events: a takes the one unit */
        assert_int_equal(sk_inventory_apply(inv, &j->evs[i]), 0);
    assert_int_equal(sk_inventory_left(inv, 0), 0);
    for (size_t i = 3; i < 6; i++) /* every cancel: only a's unit comes back */
        assert_int_equal(sk_inventory_apply(inv, &j->evs[i]), 0);
    assert_int_equal(sk_inventory_left(inv, 0), 1);
    assert_int_equal(sk_inventory_buyers(inv, 0), 0);
    sk_inventory_destroy(inv);

    /* the same orders reaped after recovery instead */
    inv = make_orders(1, 1, j2);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(sk_inventory_apply(inv, &j->evs[i]), 0);
    assert_int_equal(sk_inventory_reap(inv, 9000000 + PAY_MS), 3);
    assert_int_equal(sk_inventory_left(inv, 0), 1);
    sk_inventory_destroy(inv);
    free(j);
    free(j2);
}

/* The journal replayed into a fresh inventory rebuilds stock, counts,
 * order states and decisions; replaying an event twice changes nothing. */
static void test_orders_replay(void **state)
{
    (void)state;
    fake_journal *j = calloc(1, sizeof *j);
    fake_ms = 9000000;
    sk_inventory *inv = make_orders(5, 1, j);
    char a[40], b[40], c[40];
    buy_ok(inv, "a", 1, a);
    buy_ok(inv, "b", 2, b);
    fake_ms += 500;
    buy_ok(inv, "c", 3, c);
    assert_int_equal(sk_inventory_order_pay(inv, a, fake_ms), 0);
    assert_int_equal(sk_inventory_reap(inv, 9000000 + PAY_MS), 1); /* b */
    assert_int_equal(j->n, 5);
    sk_inventory_destroy(inv);

    fake_journal *j2 = calloc(1, sizeof *j2);
    inv = make_orders(5, 1, j2);
    for (size_t i = 0; i < j->n; i++)
        assert_int_equal(sk_inventory_apply(inv, &j->evs[i]), 0);
    for (size_t i = 0; i < j->n; i++) /* duplicates are ignored */
        assert_int_equal(sk_inventory_apply(inv, &j->evs[i]), 1);
    sk_order_event unknown = j->evs[0];
    strcpy(unknown.item_id, "gone");
    strcpy(unknown.order_id, "x");
    assert_int_equal(sk_inventory_apply(inv, &unknown), 1);
    assert_int_equal(sk_inventory_left(inv, 0), 3);
    assert_int_equal(sk_inventory_buyers(inv, 0), 2);
    sk_order o;
    assert_int_equal(sk_inventory_order_get(inv, a, &o), 0);
    assert_int_equal(o.state, SK_ORDER_PAID);
    assert_int_equal(sk_inventory_order_get(inv, b, &o), 0);
    assert_int_equal(o.state, SK_ORDER_CANCELLED);
    assert_int_equal(sk_inventory_order_get(inv, c, &o), 0);
    assert_int_equal(o.state, SK_ORDER_RESERVED);
    assert_int_equal(o.pay_deadline_ms, 9000500 + PAY_MS);
    sk_outcome out;
    /* a redelivered request answers its stored success */
    assert_int_equal(decide(inv, 0, "c", 3, SK_SUCCESS, &out, NULL), 0);
    assert_int_equal(out.result, SK_SUCCESS);
    assert_string_equal(out.order_id, c);
    /* a new request of a buyer: already purchased, the old order */
    assert_int_equal(decide(inv, 0, "a", 10, SK_SUCCESS, &out, NULL), 1);
    assert_int_equal(out.result, SK_ALREADY_PURCHASED);
    assert_string_equal(out.order_id, a);
    /* b was cancelled: may buy again */
    assert_int_equal(decide(inv, 0, "b", 11, SK_SUCCESS, &out, NULL), 1);
    assert_int_equal(out.result, SK_SUCCESS);
    /* c's recovered order is reaped like b's new one (same deadline), once */
    assert_int_equal(sk_inventory_left(inv, 0), 2);
    assert_int_equal(sk_inventory_reap(inv, 9000500 + PAY_MS), 2);
    assert_int_equal(sk_inventory_reap(inv, 9000500 + PAY_MS), 0);
    assert_int_equal(sk_inventory_left(inv, 0), 4);
    sk_inventory_destroy(inv);
    free(j);
    free(j2);
}

/* Orders recovered with a long pay timeout sit ahead of new ones with a
 * shorter timeout (pay_timeout_ms lowered across a restart): the new orders
 * are still reaped at their own deadline, the old ones at theirs. 64 old
 * orders over 64 shards put one ahead of most new orders. */
static void test_orders_reap_timeout_lowered(void **state)
{
    (void)state;
    enum { OLD = 64, NEW = 64 };
    fake_ms = 5000000;
    sk_inventory *inv = make_orders(OLD + NEW, 1, NULL);
    for (int i = 0; i < OLD; i++) {
        sk_order_event ev = {.type = SK_ORDER_RESERVED, .at_ms = fake_ms - 1000,
                             .pay_deadline_ms = fake_ms + 600000};
        snprintf(ev.order_id, sizeof ev.order_id, "old-%d", i);
        snprintf(ev.item_id, sizeof ev.item_id, "sku-1");
        snprintf(ev.user_id, sizeof ev.user_id, "old%d", i);
        req_id(ev.request_id, 100000 + (uint64_t)i);
        assert_int_equal(sk_inventory_apply(inv, &ev), 0);
    }
    char id[40];
    for (int i = 0; i < NEW; i++) {
        char user[16];
        snprintf(user, sizeof user, "new%d", i);
        buy_ok(inv, user, 1 + (uint64_t)i, id);
    }
    assert_int_equal(sk_inventory_left(inv, 0), 0);
    assert_int_equal(sk_inventory_reap(inv, fake_ms + PAY_MS - 1), 0);
    assert_int_equal(sk_inventory_reap(inv, fake_ms + PAY_MS), NEW);
    assert_int_equal(sk_inventory_left(inv, 0), NEW);
    assert_int_equal(sk_inventory_reap(inv, fake_ms + 599999), 0);
    assert_int_equal(sk_inventory_reap(inv, fake_ms + 600000), OLD);
    assert_int_equal(sk_inventory_left(inv, 0), OLD + NEW);
    sk_inventory_destroy(inv);
}

/* Payers and reapers race on orders at their deadline: each order ends paid
 * or cancelled, once, and exactly the cancelled ones gave their stock back. */
#define RACE_ORDERS 400
typedef struct race {
    sk_inventory *inv;
    char ids[RACE_ORDERS][40];
    int paid[RACE_ORDERS];
    _Atomic int cancelled;
    pthread_barrier_t go;
} race;

static void *race_payer(void *arg)
{
    race *r = arg;
    pthread_barrier_wait(&r->go);
    for (int i = 0; i < RACE_ORDERS; i++)
        r->paid[i] = sk_inventory_order_pay(r->inv, r->ids[i], 9999999 + (uint64_t)(i % 2));
    return NULL;
}

static void *race_reaper(void *arg)
{
    race *r = arg;
    pthread_barrier_wait(&r->go);
    for (int k = 0; k < 50; k++) {
        int n = sk_inventory_reap(r->inv, 10000000);
        assert_true(n >= 0);
        atomic_fetch_add(&r->cancelled, n);
    }
    return NULL;
}

static void test_orders_pay_reap_race(void **state)
{
    (void)state;
    race *r = calloc(1, sizeof *r);
    fake_journal *j = calloc(1, sizeof *j);
    (void)j;
    fake_ms = 10000000 - PAY_MS; /* deadline: 10000000 */
    r->inv = make_orders(RACE_ORDERS, 1, NULL);
    for (int i = 0; i < RACE_ORDERS; i++) {
        char user[16];
        snprintf(user, sizeof user, "r%d", i);
        buy_ok(r->inv, user, 1000 + (uint64_t)i, r->ids[i]);
    }
    pthread_barrier_init(&r->go, NULL, 3);
    pthread_t th[3];
    pthread_create(&th[0], NULL, race_payer, r);
    pthread_create(&th[1], NULL, race_reaper, r);
    pthread_create(&th[2], NULL, race_reaper, r);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&r->go);
    int paid = 0, cancelled = 0;
    for (int i = 0; i < RACE_ORDERS; i++) {
        sk_order o;
        assert_int_equal(sk_inventory_order_get(r->inv, r->ids[i], &o), 0);
        assert_true(o.state != SK_ORDER_RESERVED);
        if (o.state == SK_ORDER_PAID) {
            assert_int_equal(r->paid[i], 0);
            assert_int_equal(i % 2, 0);
            paid++;
        } else {
            assert_true(r->paid[i] != 0);
            cancelled++;
        }
    }
    assert_int_equal(cancelled, atomic_load(&r->cancelled));
    assert_int_equal(paid + cancelled, RACE_ORDERS);
    assert_int_equal(sk_inventory_left(r->inv, 0), cancelled);
    assert_true(cancelled >= RACE_ORDERS / 2); /* the odd ones were too late to pay */
    sk_inventory_destroy(r->inv);
    free(r);
    free(j);
}

/* Sale epochs and stock changes, journalled and replayed: a new sale starts
 * from its stock with no purchase counted, an old order's cancel returns
 * nothing, and the replay rebuilds the sale, stock and limit in force. */
static void test_sales_replay(void **state)
{
    (void)state;
    fake_journal *j = calloc(1, sizeof *j);
    fake_ms = 9000000;
    sk_inventory *inv = make_orders(2, 1, j);
    char a[40], b[40], c[40];
    int64_t held = -1;
    buy_ok(inv, "a", 1, a);
    buy_ok(inv, "b", 2, b);
    assert_int_equal(sk_inventory_set_stock(inv, 0, 1, 0, &held), -EBUSY);
    assert_int_equal(held, 2);
    assert_int_equal(sk_inventory_left(inv, 0), 0);
    assert_int_equal(sk_inventory_set_stock(inv, 0, 3, 0, &held), 1);
    assert_int_equal(sk_inventory_left(inv, 0), 1);
    assert_int_equal(sk_inventory_set_limit(inv, 0, 2), 0);
    uint64_t e = 0;
    int64_t stock[3] = {-1, 7, -1};
    assert_int_equal(sk_inventory_new_sale(inv, stock, &e), 0);
    assert_int_equal(e, 1);
    assert_int_equal(sk_inventory_left(inv, 0), 3);
    assert_int_equal(sk_inventory_left(inv, 1), 7);
    assert_int_equal(sk_inventory_buyers(inv, 0), 0);
    fake_ms += 500;
    buy_ok(inv, "a", 3, c); /* a buys again in sale 1 */
    sk_order o;
    assert_int_equal(sk_inventory_order_get(inv, a, &o), 0); /* sale 0's order answers */
    /* sale 0's orders cancelled: nothing comes back to sale 1 */
    assert_int_equal(sk_inventory_reap(inv, 9000000 + PAY_MS), 2);
    assert_int_equal(sk_inventory_left(inv, 0), 2);
    assert_int_equal(sk_inventory_buyers(inv, 0), 1);
    size_t n = j->n;
    sk_inventory_destroy(inv);

    /* replay: sale 1, stock 3 with a's unit taken, limit 2, sku-2 at 7 */
    fake_journal *j2 = calloc(1, sizeof *j2);
    inv = make_orders(2, 1, j2);
    for (size_t i = 0; i < n; i++)
        assert_true(sk_inventory_apply(inv, &j->evs[i]) >= 0);
    assert_int_equal(sk_inventory_epoch(inv), 1);
    assert_int_equal(sk_inventory_stock(inv, 0), 3);
    assert_int_equal(sk_inventory_left(inv, 0), 2);
    assert_int_equal(sk_inventory_limit(inv, 0), 2);
    assert_int_equal(sk_inventory_left(inv, 1), 7);
    assert_int_equal(sk_inventory_buyers(inv, 0), 1);
    assert_int_equal(sk_inventory_order_get(inv, b, &o), 0);
    assert_int_equal(o.state, SK_ORDER_CANCELLED);
    sk_outcome out;
    assert_int_equal(decide(inv, 0, "a", 4, SK_SUCCESS, &out, NULL), 1);
    assert_int_equal(out.result, SK_SUCCESS); /* limit 2 in sale 1 */
    assert_int_equal(decide(inv, 0, "a", 5, SK_SUCCESS, &out, NULL), 1);
    assert_int_equal(out.result, SK_ALREADY_PURCHASED);
    sk_inventory_destroy(inv);
    free(j);
    free(j2);
}

/* Buyers on four threads while sales start and the stock moves: in the
 * sale in force at the end, the units sold are exactly its buyers' (each
 * buys at most one): no purchase straddles a change. */
typedef struct sale_racer {
    sk_inventory *inv;
    int t;
    atomic_int *stop;
} sale_racer;

static void *sale_buyer(void *arg)
{
    sale_racer *r = arg;
    char user[32];
    for (uint64_t k = 0; !atomic_load(r->stop); k++) {
        sk_outcome o;
        uint8_t id[16];
        snprintf(user, sizeof user, "t%d-%llu", r->t, (unsigned long long)(k % 500));
        req_id(id, ((uint64_t)r->t << 40) | k);
        assert_true(sk_inventory_decide(r->inv, 0, user, id, SK_SUCCESS, &o, NULL) >= 0);
    }
    return NULL;
}

static void test_sales_race_buyers(void **state)
{
    (void)state;
    sk_inventory *inv = make(40, 1, 100000);
    atomic_int stop = 0;
    pthread_t th[4];
    sale_racer rs[4];
    for (int t = 0; t < 4; t++) {
        rs[t] = (sale_racer){inv, t, &stop};
        assert_int_equal(pthread_create(&th[t], NULL, sale_buyer, &rs[t]), 0);
    }
    for (int round = 0; round < 60; round++) {
        int64_t held;
        if (round % 3 == 0)
            assert_int_equal(sk_inventory_new_sale(inv, NULL, NULL), 0);
        int rc = sk_inventory_set_stock(inv, 0, 30 + round % 20, 0, &held);
        assert_true(rc >= 0 || rc == -EBUSY);
        int64_t left = sk_inventory_left(inv, 0);
        assert_true(left >= 0 && left <= sk_inventory_stock(inv, 0));
    }
    atomic_store(&stop, 1);
    for (int t = 0; t < 4; t++)
        pthread_join(th[t], NULL);
    assert_int_equal(sk_inventory_epoch(inv), 20);
    assert_int_equal(sk_inventory_sold(inv, 0), sk_inventory_buyers(inv, 0));
    sk_inventory_destroy(inv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_and_lookup),
        cmocka_unit_test(test_bad_item_index),
        cmocka_unit_test(test_buy_and_stock),
        cmocka_unit_test(test_stock_zero),
        cmocka_unit_test(test_per_user_limit_1),
        cmocka_unit_test(test_per_user_limit_3),
        cmocka_unit_test(test_idempotent_decisions),
        cmocka_unit_test(test_many_decisions),
        cmocka_unit_test(test_decision_capacity),
        cmocka_unit_test(test_threads_never_oversell),
        cmocka_unit_test(test_threads_per_user_limit_3),
        cmocka_unit_test(test_threads_redelivery),
        cmocka_unit_test(test_orders_pay_and_reap),
        cmocka_unit_test(test_orders_journal_undo),
        cmocka_unit_test(test_orders_pending_invisible),
        cmocka_unit_test(test_orders_replay),
        cmocka_unit_test(test_orders_reap_timeout_lowered),
        cmocka_unit_test(test_orders_replay_beyond_stock),
        cmocka_unit_test(test_orders_pay_reap_race),
        cmocka_unit_test(test_sales_replay),
        cmocka_unit_test(test_sales_race_buyers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
