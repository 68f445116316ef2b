/*
 * test_store_cluster.c - the Redis Cluster store (sale/store_cluster.h)
 * through the store interface, against a real cluster of 6 redis-server
 * processes started here (tests/redis_cluster.h): exact sell-out over
 * buckets with uniform and skewed buyers (units moved between buckets),
 * threads at once, the per-user limit, stored decisions, pay and reap, a
 * worker SIGKILLed between the halves of a transfer, and a master SIGKILLed
 * mid-sale with min_replicas_ack = 1. Each test uses its own item ids.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sale/include/redis_cluster.h"
#include "store.h"
#include "sale/store_cluster.h"
#include "uuid4.h"
#include "worker.h" /* sk_wall_ms */
#include "tests/redis_cluster.h"
#include "tests/test_time.h"

#define BOUND_MS 30000 /* generous: a loaded machine under sanitizers */

static redis_cluster rc;
static char nodes[512];

static sale_store *open_store(const sale_store_item *items, size_t n, uint32_t pay_timeout_ms,
                              uint32_t min_replicas_ack)
{
    sale_store_config c = {.backend = "redis",
                           .name = "test_store_cluster",
                           .items = items,
                           .nitems = n,
                           .pay_timeout_ms = pay_timeout_ms,
                           .redis_timeout_ms = 1000,
                           .redis_patience_ms = 5000,
                           .redis_cluster = 1,
                           .redis_nodes = nodes,
                           .min_replicas_ack = min_replicas_ack,
                           .replica_ack_timeout_ms = 1000};
    sale_store *s = NULL;
    char err[256] = "";
    int e = sale_store_create(&c, &s, err, sizeof err);
    if (e < 0)
        fprintf(stderr, "store: %s\n", err);
    assert_int_equal(e, 0);
    return s;
}

/* Decide one purchase of item by user. OUT: *o. Returns the call's code. */
static int buy(sale_store *s, const char *item, const char *user, const uint8_t rid[16],
               sk_outcome *o)
{
    sk_decide d = {.item_id = item, .user_id = user, .request_id = rid, .verdict = SK_SUCCESS};
    int64_t left;
    memset(o, 0, sizeof *o);
    return sale_store_decide(s, &d, 1, o, &left);
}

/* A user id of bucket b of nb, the k-th one. */
static void user_in(char *buf, size_t len, uint32_t b, uint32_t nb, int k)
{
    for (int i = 0;; i++) {
        snprintf(buf, len, "u%d-%d", k, i);
        if (sale_cluster_user_bucket(buf, nb) == b)
            return;
    }
}

/* Straight from the cluster: an integer key of bucket b (-1 absent). */
static long long bucket_int(const char *item, uint32_t b, uint32_t nb, const char *suffix,
                            const char *cmd)
{
    char tag[SK_CLUSTER_TAG_MAX], key[200];
    sk_cluster_config cfg = {.nodes = nodes, .timeout_ms = 2000};
    sk_cluster *c = NULL;
    redisReply *rep = NULL;
    sale_cluster_bucket_tag(item, b, nb, tag);
    snprintf(key, sizeof key, "sk:{%s}:%s", tag, suffix);
    assert_int_equal(sk_cluster_create(&cfg, &c), 0);
    const char *argv[] = {cmd, key};
    assert_int_equal(sk_cluster_command(c, sk_cluster_slot(key, strlen(key)), 2, argv, NULL, &rep),
                     0);
    long long v = rep->type == REDIS_REPLY_INTEGER  ? rep->integer
                  : rep->type == REDIS_REPLY_STRING ? atoll(rep->str)
                                                    : -1;
    freeReplyObject(rep);
    sk_cluster_destroy(c);
    return v;
}

static int group_setup(void **state)
{
    (void)state;
    return redis_cluster_setup(&rc, 1000, nodes, sizeof nodes);
}

static int group_teardown(void **state)
{
    (void)state;
    redis_cluster_destroy(&rc);
    return 0;
}

/* Buckets spread over the 3 masters; the default count is one per master. */
static void test_buckets(void **state)
{
    (void)state;
    const sale_store_item items[] = {{"spread", 10, 1, 0}};
    sale_store *s = open_store(items, 1, 60000, 0);
    int owner[3];
    for (uint32_t b = 0; b < 3; b++) {
        char tag[SK_CLUSTER_TAG_MAX];
        sale_cluster_bucket_tag("spread", b, 3, tag);
        owner[b] = redis_cluster_master_of(&rc, sk_cluster_slot(tag, strlen(tag)));
        assert_true(owner[b] >= 0);
        assert_int_equal(bucket_int("spread", b, 3, "stock", "GET"), b == 0 ? 4 : 3);
    }
    assert_true(owner[0] != owner[1] && owner[1] != owner[2] && owner[0] != owner[2]);
    assert_int_equal(sale_store_left(s, 0), 10);
    assert_int_equal(sale_store_ping(s), 0);
    /* what this store does not do is refused, and changes nothing */
    int64_t held = 0;
    uint64_t epoch = 0;
    assert_int_equal(sale_store_set_stock(s, 0, 9, &held), -EOPNOTSUPP);
    assert_int_equal(sale_store_new_sale(s, NULL, &epoch), -EOPNOTSUPP);
    assert_int_equal(sale_store_left(s, 0), 10);
    sale_store_destroy(s);
    /* a later process with another count and stock keeps the sale's */
    const sale_store_item other[] = {{"spread", 40, 1, 5}};
    s = open_store(other, 1, 60000, 0);
    assert_int_equal(sale_store_left(s, 0), 10);
    sale_item_state st;
    assert_int_equal(sale_store_item_state(s, 0, &st), 0);
    assert_int_equal(st.stock, 10);
    assert_int_equal(sale_store_raise_stock(s, 0, 12), 2);
    sale_store_destroy(s);
}

/* Sell item to users drawn by pick(k) until n requests are answered.
 * Returns successes; checks every answer. */
static int sell(sale_store *s, const char *item, int n, void (*pick)(char *, size_t, int))
{
    int sold = 0;
    for (int k = 0; k < n; k++) {
        char user[64];
        uint8_t rid[16];
        sk_outcome o;
        pick(user, sizeof user, k);
        sk_uuid4(rid);
        assert_int_equal(buy(s, item, user, rid, &o), 0);
        assert_true(o.result == SK_SUCCESS || o.result == SK_SOLD_OUT);
        sold += o.result == SK_SUCCESS;
    }
    return sold;
}

static void uniform(char *buf, size_t len, int k)
{
    snprintf(buf, len, "uni-%d", k);
}

static void skewed(char *buf, size_t len, int k)
{
    if (k % 10 == 9)
        snprintf(buf, len, "skew-%d", k);
    else
        user_in(buf, len, 0, 3, k); /* nine in ten buyers in bucket 0 */
}

static void skewed_late(char *buf, size_t len, int k)
{
    skewed(buf, len, 1000 + k); /* users no earlier call used */
}

static void assert_drained(const char *item, uint32_t nb)
{
    for (uint32_t b = 0; b < nb; b++) {
        assert_int_equal(bucket_int(item, b, nb, "stock", "GET"), 0);
        assert_int_equal(bucket_int(item, b, nb, "xout", "HLEN"), 0);
    }
}

static void test_exact_sellout_uniform(void **state)
{
    (void)state;
    const sale_store_item items[] = {{"uni", 100, 1, 3}};
    sale_store *s = open_store(items, 1, 60000, 0);
    assert_int_equal(sell(s, "uni", 160, uniform), 100);
    assert_int_equal(sale_store_left(s, 0), 0);
    assert_drained("uni", 3);
    /* sold out is the answer now, with left 0 */
    sk_decide d = {.item_id = "uni", .user_id = "late", .verdict = SK_SUCCESS};
    uint8_t rid[16];
    sk_uuid4(rid);
    d.request_id = rid;
    sk_outcome o;
    int64_t left = -2;
    assert_int_equal(sale_store_decide(s, &d, 1, &o, &left), 0);
    assert_int_equal(o.result, SK_SOLD_OUT);
    assert_int_equal(left, 0);
    sale_store_destroy(s);
}

static void test_exact_sellout_skewed(void **state)
{
    (void)state;
    const sale_store_item items[] = {{"skew", 90, 1, 3}};
    sale_store *s = open_store(items, 1, 60000, 0);
    assert_int_equal(sell(s, "skew", 200, skewed), 90);
    assert_drained("skew", 3);
    assert_true(bucket_int("skew", 0, 3, "ver", "GET") > 0); /* units came into bucket 0 */
    sale_store_destroy(s);
}

/* A reload or the admin API raises the stock total of a sold-out item: the
 * units go to bucket 0, once however often the same total is asked for,
 * and buyers of the other buckets get them by transfers; the total can
 * not go below the units sold, nor down at all on a cluster. */
static void user_of(char *buf, size_t len, int k)
{
    user_in(buf, len, 1 + (uint32_t)k % 2, 3, k); /* buckets 1 and 2 only */
}

static void test_raise_stock(void **state)
{
    (void)state;
    const sale_store_item items[] = {{"rai", 6, 1, 3}};
    sale_store *s = open_store(items, 1, 60000, 0);
    sale_item_state st;
    assert_int_equal(sale_store_item_state(s, 0, &st), 0);
    assert_int_equal(st.stock, 6);
    assert_int_equal(st.left, 6);
    assert_int_equal(st.per_user_limit, 1);
    assert_int_equal(sell(s, "rai", 10, uniform), 6);
    assert_int_equal(sale_store_left(s, 0), 0);

    assert_int_equal(sale_store_raise_stock(s, 0, 10), 4);
    assert_int_equal(sale_store_raise_stock(s, 0, 10), 0); /* once */
    assert_int_equal(sale_store_raise_stock(s, 0, 8), 0);  /* never down */
    assert_int_equal(bucket_int("rai", 0, 3, "total", "GET"), 10);
    assert_int_equal(sale_store_item_state(s, 0, &st), 0);
    assert_int_equal(st.stock, 10);
    assert_int_equal(st.left, 4);
    /* buyers away from bucket 0 buy the new units, and no more */
    assert_int_equal(sell(s, "rai", 8, user_of), 4);
    assert_drained("rai", 3);

    int64_t held = -1;
    assert_int_equal(sale_store_set_stock(s, 0, 9, &held), -EBUSY);
    assert_int_equal(held, 10);
    assert_int_equal(sale_store_set_stock(s, 0, 10, &held), 0);
    assert_int_equal(sale_store_set_stock(s, 0, 12, &held), 0);
    assert_int_equal(sale_store_left(s, 0), 2);
    assert_int_equal(sale_store_set_stock(s, 0, 11, &held), -EOPNOTSUPP);
    assert_int_equal(held, 10);

    /* the per-user limit: raised to 2 by one process, in force in another
     * (started before the change) within a second */
    sale_store *other = open_store(items, 1, 60000, 0);
    char buyer[64];
    uint8_t rid[16];
    sk_outcome o;
    uniform(buyer, sizeof buyer, 0); /* bought one unit above */
    sk_uuid4(rid);
    assert_int_equal(buy(other, "rai", buyer, rid, &o), 0);
    assert_int_equal(o.result, SK_ALREADY_PURCHASED);
    assert_int_equal(sale_store_set_limit(s, 0, 2), 0);
    assert_int_equal(sale_store_item_state(s, 0, &st), 0);
    assert_int_equal(st.per_user_limit, 2);
    struct timespec pause = {1, 100 * 1000 * 1000};
    nanosleep(&pause, NULL);
    sk_uuid4(rid);
    assert_int_equal(buy(other, "rai", buyer, rid, &o), 0);
    assert_int_equal(o.result, SK_SUCCESS);
    sk_uuid4(rid);
    assert_int_equal(buy(s, "rai", buyer, rid, &o), 0);
    assert_int_equal(o.result, SK_ALREADY_PURCHASED); /* 2 of 2 */
    sale_store_destroy(other);
    sale_store_destroy(s);

    /* a new store over the same keys reads the raised total and limit */
    s = open_store(items, 1, 60000, 0);
    assert_int_equal(sale_store_item_state(s, 0, &st), 0);
    assert_int_equal(st.stock, 12);
    assert_int_equal(st.left, 1);
    assert_int_equal(st.per_user_limit, 2);
    sale_store_destroy(s);
}

/* Stored decisions, the per-user limit, batches mixing items and buckets. */
static void test_decisions_and_limit(void **state)
{
    (void)state;
    const sale_store_item items[] = {{"lim", 50, 2, 3}, {"lim2", 1, 1, 2}};
    sale_store *s = open_store(items, 2, 60000, 0);
    enum { N = 12 };
    sk_decide d[N];
    sk_outcome o[N], again[N];
    int64_t left[N];
    uint8_t rids[N][16];
    char users[N][32];
    for (int i = 0; i < N; i++) {
        snprintf(users[i], sizeof users[i], "lim-user-%d", i % 4); /* 3 requests per user */
        sk_uuid4(rids[i]);
        d[i] = (sk_decide){.item_id = i == N - 1   ? "nope"
                                      : i % 5 == 0 ? "lim2"
                                                   : "lim",
                           .user_id = users[i],
                           .request_id = rids[i],
                           .verdict = i == 7 ? SK_BLOCKED : SK_SUCCESS};
    }
    assert_int_equal(sale_store_decide(s, d, N, o, left), 0);
    assert_int_equal(o[N - 1].result, SK_UNKNOWN_ITEM);
    assert_int_equal(o[7].result, SK_BLOCKED);
    int per_user[4] = {0}, lim2 = 0;
    for (int i = 0; i < N - 1; i++) {
        if (o[i].result == SK_SUCCESS && !strcmp(d[i].item_id, "lim"))
            per_user[i % 4]++;
        if (o[i].result == SK_SUCCESS && !strcmp(d[i].item_id, "lim2"))
            lim2++;
    }
    for (int u = 0; u < 4; u++)
        assert_true(per_user[u] <= 2);
    assert_int_equal(lim2, 1);
    /* the same requests again, verdicts flipped: the stored outcomes */
    for (int i = 0; i < N; i++)
        d[i].verdict = d[i].verdict == SK_SUCCESS ? SK_EXPIRED : SK_SUCCESS;
    assert_int_equal(sale_store_decide(s, d, N, again, left), 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(again[i].result, o[i].result);
        assert_string_equal(again[i].order_id, o[i].order_id);
    }
    /* bad user id: refused, nothing written */
    sk_decide bad = {.item_id = "lim", .user_id = "a|b", .request_id = rids[0]};
    assert_int_equal(sale_store_decide(s, &bad, 1, o, left), -EINVAL);
    sale_store_destroy(s);
}

typedef struct evcount {
    int reserved, paid, cancelled;
    char ids[16][64];
    size_t n;
} evcount;

static int on_event(void *arg, const sale_event *ev)
{
    evcount *c = arg;
    assert_string_equal(ev->item_id, "pay");
    c->reserved += !strcmp(ev->type, "reserved");
    c->paid += !strcmp(ev->type, "paid");
    c->cancelled += !strcmp(ev->type, "cancelled");
    if (c->n < 16)
        snprintf(c->ids[c->n++], sizeof c->ids[0], "%s", ev->id);
    return 0;
}

/* Every order event of the store's streams, read and acknowledged. */
static evcount read_all_events(sale_store *s)
{
    evcount c;
    memset(&c, 0, sizeof c);
    size_t n = sale_store_event_streams(s);
    for (size_t k = 0; k < n; k++) {
        size_t first = c.n;
        assert_true(sale_store_events_read(s, k, "sink", "c1", 100, 0, on_event, &c) >= 0);
        const char *ids[16];
        for (size_t i = first; i < c.n; i++)
            ids[i - first] = c.ids[i];
        assert_int_equal(sale_store_events_ack(s, k, "sink", ids, c.n - first), (int)(c.n - first));
    }
    assert_int_equal(sale_store_events_read(s, n, "sink", "c1", 100, 0, on_event, &c), -ERANGE);
    return c;
}

static void test_pay_and_reap(void **state)
{
    (void)state;
    const sale_store_item items[] = {{"pay", 4, 1, 2}};
    sale_store *s = open_store(items, 1, 300, 0);
    sk_outcome a, b;
    sk_order o;
    uint8_t r1[16], r2[16];
    sk_uuid4(r1);
    sk_uuid4(r2);
    assert_int_equal(buy(s, "pay", "payer", r1, &a), 0);
    assert_int_equal(buy(s, "pay", "idler", r2, &b), 0);
    assert_int_equal(a.result, SK_SUCCESS);
    assert_int_equal(b.result, SK_SUCCESS);
    assert_int_equal(sale_store_order_get(s, a.order_id, &o), 0);
    assert_int_equal(o.state, SK_ORDER_RESERVED);
    assert_string_equal(o.user_id, "payer");
    assert_string_equal(o.item_id, "pay");
    assert_int_equal(sale_store_order_pay(s, a.order_id, sk_wall_ms(), &o), 0);
    assert_int_equal(o.state, SK_ORDER_PAID);
    assert_int_equal(sale_store_order_pay(s, a.order_id, sk_wall_ms(), &o), 0); /* idempotent */
    assert_int_equal(sale_store_order_get(s, "00000000-0000-4000-8000-000000000000", &o), -ENOENT);
    assert_int_equal(sale_store_left(s, 0), 2);
    /* the idle one is cancelled once its deadline passed, its unit back */
    assert_int_equal(sale_store_reap(s, sk_wall_ms() + 1000), 1);
    assert_int_equal(sale_store_reap(s, sk_wall_ms() + 1000), 0);
    assert_int_equal(sale_store_left(s, 0), 3);
    assert_int_equal(sale_store_order_pay(s, b.order_id, sk_wall_ms(), &o), -ECANCELED);
    /* each transition once in the bucket streams, gone once acknowledged */
    assert_int_equal(sale_store_event_streams(s), 2);
    evcount c = read_all_events(s);
    assert_int_equal(c.reserved, 2);
    assert_int_equal(c.paid, 1);
    assert_int_equal(c.cancelled, 1);
    c = read_all_events(s);
    assert_int_equal(c.n, 0);
    sale_store_destroy(s);
}

typedef struct crowd {
    sale_store *s;
    const char *item;
    int base, n;
    atomic_int *sold;
    atomic_int *failed;
    sk_outcome *got; /* OUT: [0..n) */
} crowd;

static void *crowd_main(void *arg)
{
    crowd *c = arg;
    for (int k = 0; k < c->n; k++) {
        char user[32];
        uint8_t rid[16];
        sk_outcome o;
        snprintf(user, sizeof user, "crowd-%d", c->base + k);
        sk_uuid4(rid);
        int e;
        /* a failed call decided nothing the caller relies on: retry as the
         * worker loop does, the same request id */
        while ((e = buy(c->s, c->item, user, rid, &o)) != 0) {
            if (atomic_fetch_add(c->failed, 1) % 50 == 0)
                fprintf(stderr, "crowd: %s\n", strerror(-e));
            sleep_ms(20);
        }
        if (o.result == SK_SUCCESS)
            atomic_fetch_add(c->sold, 1);
        c->got[k] = o;
    }
    return NULL;
}

/* Every success answered has its order, reserved. */
static void assert_orders_exist(sale_store *s, const sk_outcome *got, int n)
{
    for (int i = 0; i < n; i++) {
        sk_order o;
        if (got[i].result != SK_SUCCESS)
            continue;
        assert_int_equal(sale_store_order_get(s, got[i].order_id, &o), 0);
        assert_int_equal(o.state, SK_ORDER_RESERVED);
    }
}

/* T threads of PER buyers each (users base..), outcomes into got. */
static void crowd_start(crowd *c, pthread_t *t, int T, int PER, sale_store *s, const char *item,
                        int base, atomic_int *sold, atomic_int *failed, sk_outcome *got)
{
    for (int i = 0; i < T; i++) {
        c[i] = (crowd){s, item, base + i * PER, PER, sold, failed, &got[i * PER]};
        assert_int_equal(pthread_create(&t[i], NULL, crowd_main, &c[i]), 0);
    }
}

static void test_threads_never_oversell(void **state)
{
    (void)state;
    enum { T = 4, PER = 60 };
    const sale_store_item items[] = {{"thr", 150, 1, 3}};
    sale_store *s = open_store(items, 1, 60000, 0);
    static sk_outcome got[T * PER];
    atomic_int sold = 0, failed = 0;
    pthread_t t[T];
    crowd c[T];
    crowd_start(c, t, T, PER, s, "thr", 0, &sold, &failed, got);
    for (int i = 0; i < T; i++)
        pthread_join(t[i], NULL);
    printf("threads: sold %d, %d failed calls retried\n", atomic_load(&sold), atomic_load(&failed));
    assert_int_equal(atomic_load(&sold), 150);
    assert_drained("thr", 3);
    assert_orders_exist(s, got, T * PER);
    sale_store_destroy(s);
}

/* A process SIGKILLed right after taking units from a bucket: the record
 * holds them; the next reap (any process) completes the transfer; nothing
 * lost, nothing counted twice. */
static void test_killed_mid_transfer(void **state)
{
    (void)state;
    const sale_store_item items[] = {{"xfer", 30, 1, 3}};
    sale_store *s = open_store(items, 1, 60000, 0);
    char user[64];
    /* empty bucket 0 (10 units) with its own users */
    for (int k = 0; k < 10; k++) {
        uint8_t rid[16];
        sk_outcome o;
        user_in(user, sizeof user, 0, 3, k);
        sk_uuid4(rid);
        assert_int_equal(buy(s, "xfer", user, rid, &o), 0);
        assert_int_equal(o.result, SK_SUCCESS);
    }
    assert_int_equal(bucket_int("xfer", 0, 3, "stock", "GET"), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setenv(SK_CLUSTER_FAULT_ENV, "kill-after-take", 1);
        sale_store *cs = open_store(items, 1, 60000, 0);
        uint8_t rid[16];
        sk_outcome o;
        user_in(user, sizeof user, 0, 3, 99);
        sk_uuid4(rid);
        buy(cs, "xfer", user, rid, &o); /* dies inside */
        _exit(3);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    long long records =
        bucket_int("xfer", 1, 3, "xout", "HLEN") + bucket_int("xfer", 2, 3, "xout", "HLEN");
    assert_int_equal(records, 1);
    assert_int_equal(sale_store_left(s, 0), 20); /* the units in the record count */
    assert_int_equal(sale_store_reap(s, sk_wall_ms()), 0);
    assert_int_equal(
        bucket_int("xfer", 1, 3, "xout", "HLEN") + bucket_int("xfer", 2, 3, "xout", "HLEN"), 0);
    assert_true(bucket_int("xfer", 0, 3, "stock", "GET") > 0); /* given to bucket 0 */
    assert_int_equal(sale_store_left(s, 0), 20);
    /* and the sale sells exactly what is left */
    assert_int_equal(sell(s, "xfer", 60, skewed_late), 20);
    assert_drained("xfer", 3);
    sale_store_destroy(s);
}

/* SIGKILL the master of a bucket mid-sale with min_replicas_ack = 1: every
 * success answered exists afterwards, and the sale still sells exactly its
 * stock once the replica took over. */
static void test_failover_mid_sale(void **state)
{
    (void)state;
    enum { T = 3, PER = 80 };
    const sale_store_item items[] = {{"fo", 120, 1, 3}};
    sale_store *s = open_store(items, 1, 60000, 1);
    static sk_outcome got[T * PER];
    atomic_int sold = 0, failed = 0;
    pthread_t t[T];
    crowd c[T];
    crowd_start(c, t, T, PER, s, "fo", 1000, &sold, &failed, got);
    char tag[SK_CLUSTER_TAG_MAX];
    sale_cluster_bucket_tag("fo", 1, 3, tag);
    int m = redis_cluster_master_of(&rc, sk_cluster_slot(tag, strlen(tag)));
    assert_true(m >= 0);
    while (atomic_load(&sold) < 20)
        sleep_ms(5);
    uint64_t t0 = mono_ms();
    redis_cluster_kill(&rc, m);
    /* the replica takes over; until a node replicates it again, WAIT 1
     * fails on that shard and its buckets answer nothing (fail closed) */
    int now_master;
    while ((now_master = redis_cluster_master_of(&rc, sk_cluster_slot(tag, strlen(tag)))) < 0 ||
           now_master == m)
        assert_true(mono_ms() < t0 + BOUND_MS), sleep_ms(50);
    assert_int_equal(redis_cluster_restart(&rc, m), 0); /* back as its replica */
    for (int i = 0; i < T; i++)
        pthread_join(t[i], NULL);
    printf("failover: sold %d, %d failed calls retried, %llu ms from the kill\n",
           atomic_load(&sold), atomic_load(&failed), (unsigned long long)(mono_ms() - t0));
    assert_int_equal(atomic_load(&sold), 120);
    assert_drained("fo", 3);
    assert_orders_exist(s, got, T * PER); /* no answered success lost to the failover */
    assert_int_equal(redis_cluster_wait_ok(&rc, BOUND_MS), 0);
    sale_store_destroy(s);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* hiredis writes with write(2) */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buckets),
        cmocka_unit_test(test_exact_sellout_uniform),
        cmocka_unit_test(test_exact_sellout_skewed),
        cmocka_unit_test(test_raise_stock),
        cmocka_unit_test(test_decisions_and_limit),
        cmocka_unit_test(test_pay_and_reap),
        cmocka_unit_test(test_threads_never_oversell),
        cmocka_unit_test(test_killed_mid_transfer),
        cmocka_unit_test(test_failover_mid_sale),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
