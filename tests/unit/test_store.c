/*
 * test_store.c - the store interface (sale/include/store.h) over the memory backend,
 * as the gateway and the worker process use it: a batch decided through the
 * worker loop's view, stock and counts per item, an order got and paid, the
 * reaper cancelling an unpaid one and reporting the stock it gave back, the
 * order log replayed by a new store on the same data_dir, and data_dir taken
 * by one store at a time. Also the per-partition commit tracking of
 * sale/include/commits.h.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "commits.h"
#include "store.h"
#include "worker.h" /* sk_wall_ms */

static const sale_store_item items[] = {{"a", 2, 1}, {"b", 5, 1}};

static sale_store_config memory_config(const char *dir, uint32_t pay_timeout_ms)
{
    return (sale_store_config){.backend = "memory",
                               .name = "test_store",
                               .items = items,
                               .nitems = 2,
                               .pay_timeout_ms = pay_timeout_ms,
                               .decision_capacity = 1000,
                               .data_dir = dir,
                               .order_flush_sync = 1,
                               .ack_timeout_ms = 1000,
                               .lease_timeout_ms = 1000};
}

static void rid(uint8_t id[16], int n)
{
    memset(id, 0, 16);
    id[0] = (uint8_t)n;
    id[15] = 0x42;
}

static void test_unknown_backend(void **state)
{
    (void)state;
    sale_store_config c = memory_config("/nonexistent", 1000);
    c.backend = "paper";
    sale_store *s = (sale_store *)1;
    char err[256];
    assert_int_equal(sale_store_create(&c, &s, err, sizeof err), -EINVAL);
    assert_null(s);
    assert_non_null(strstr(err, "paper"));
    sale_store_destroy(NULL);
}

typedef struct seen {
    atomic_int rounds;
    _Atomic int64_t left[2];
} seen;

static void on_stock(void *arg, size_t item, int64_t left)
{
    seen *v = arg;
    assert_true(item < 2);
    atomic_store(&v->left[item], left);
    if (item == 1)
        atomic_fetch_add(&v->rounds, 1);
}

static void test_memory_store(void **state)
{
    (void)state;
    char dir[] = "/tmp/seckill-store-XXXXXX", err[512], cmd[128];
    assert_non_null(mkdtemp(dir));
    sale_store_config c = memory_config(dir, 60000);
    sale_store *s = NULL;
    assert_int_equal(sale_store_create(&c, &s, err, sizeof err), 0);
    assert_int_equal(sale_store_items(s), 2);
    assert_non_null(sale_store_queue(s));
    assert_int_equal(sale_store_ping(s), 0);
    assert_int_equal(sale_store_known(s, "a"), 1);
    assert_int_equal(sale_store_known(s, "zz"), 0);
    assert_int_equal(sale_store_left(s, 0), 2);
    assert_true(sale_store_left(s, 2) < 0);

    /* the worker loop's view: a stored decision answers again */
    uint8_t r1[16], r2[16], r3[16];
    rid(r1, 1), rid(r2, 2), rid(r3, 3);
    sk_decide reqs[3] = {
        {"a", "u1", r1, SK_SUCCESS}, {"a", "u1", r2, SK_SUCCESS}, {"b", "u2", r3, SK_BLOCKED}};
    sk_outcome outs[3];
    int64_t left[3];
    sk_backend be = sale_store_backend(s);
    assert_true(be.decide(be.impl, reqs, 3, outs, left) >= 0);
    assert_int_equal(outs[0].result, SK_SUCCESS);
    assert_int_equal(outs[1].result, SK_ALREADY_PURCHASED);
    assert_string_equal(outs[1].order_id, outs[0].order_id);
    assert_int_equal(outs[2].result, SK_BLOCKED);
    assert_int_equal(left[0], 1);
    assert_true(sale_store_decide(s, reqs, 1, outs + 1, left) >= 0);
    assert_string_equal(outs[1].order_id, outs[0].order_id);

    sale_item_stats st;
    assert_int_equal(sale_store_stats(s, 0, &st), 0);
    assert_int_equal(st.left, 1);
    assert_int_equal(st.sold, 1);
    assert_int_equal(st.buyers, 1);

    sk_order o;
    assert_int_equal(sale_store_order_get(s, outs[0].order_id, &o), 0);
    assert_int_equal(o.state, SK_ORDER_RESERVED);
    assert_string_equal(o.user_id, "u1");
    assert_int_equal(sale_store_order_get(s, "00000000-0000-4000-8000-000000000000", &o), -ENOENT);
    assert_int_equal(sale_store_order_pay(s, outs[0].order_id, sk_wall_ms(), &o), 0);
    assert_int_equal(o.state, SK_ORDER_PAID);
    assert_int_equal(sale_store_order_pay(s, outs[0].order_id, sk_wall_ms(), &o), 0);
    assert_int_equal(sale_store_reap(s, sk_wall_ms()), 0);

    /* one store per data_dir */
    sale_store *other = NULL;
    assert_int_equal(sale_store_create(&c, &other, err, sizeof err), -EWOULDBLOCK);
    assert_non_null(strstr(err, "in use by another gateway"));
    sale_store_destroy(s);

    /* a new store on the same directory goes on where the sale was */
    c.pay_timeout_ms = 1;
    assert_int_equal(sale_store_create(&c, &s, err, sizeof err), 0);
    assert_int_equal(sale_store_left(s, 0), 1);
    assert_int_equal(sale_store_order_get(s, outs[0].order_id, &o), 0);
    assert_int_equal(o.state, SK_ORDER_PAID);

    /* an unpaid order: the reaper cancels it and reports the stock back */
    uint8_t r4[16];
    rid(r4, 4);
    sk_decide buy = {"b", "u3", r4, SK_SUCCESS};
    sk_outcome bo;
    assert_true(sale_store_decide(s, &buy, 1, &bo, left) >= 0);
    assert_int_equal(bo.result, SK_SUCCESS);
    assert_int_equal(sale_store_left(s, 1), 4);
    seen v = {0};
    sale_reaper_config rc = {.period_ms = 50, .stock = on_stock, .arg = &v};
    sale_reaper *rp = NULL;
    assert_int_equal(sale_reaper_start(s, &rc, &rp), 0);
    for (int i = 0; i < 200 && (atomic_load(&v.rounds) < 2 || atomic_load(&v.left[1]) != 5); i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    sale_reaper_stop(rp);
    assert_int_equal(atomic_load(&v.left[1]), 5);
    assert_int_equal(atomic_load(&v.left[0]), 1);
    assert_int_equal(sale_store_order_get(s, bo.order_id, &o), 0);
    assert_int_equal(o.state, SK_ORDER_CANCELLED);
    assert_int_equal(sale_store_order_pay(s, bo.order_id, sk_wall_ms(), &o), -ECANCELED);
    sale_store_destroy(s);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_commits(void **state)
{
    (void)state;
    mq_message m[5] = {{.topic = "t", .partition = 0, .offset = 1},
                       {.topic = "t", .partition = 1, .offset = 1},
                       {.topic = "t", .partition = 0, .offset = 2},
                       {.topic = "t", .partition = 1, .offset = 2},
                       {.topic = "t", .partition = 1, .offset = 3}};
    sk_commits c;
    sk_commits_init(&c);
    for (int i = 0; i < 5; i++) {
        int k = sk_commits_slot(&c, &m[i]);
        assert_true(k >= 0);
        if (i == 3)
            sk_commits_fail(&c, k);
        if (!sk_commits_failed(&c, k))
            sk_commits_done(&c, k, &m[i]);
    }
    assert_int_equal(c.n, 2);
    assert_ptr_equal(c.parts[0].upto, &m[2]);
    assert_ptr_equal(c.parts[1].upto, &m[1]); /* nothing after its failure */

    mq_message many[SK_COMMITS_MAX + 1];
    sk_commits_init(&c);
    for (uint32_t i = 0; i <= SK_COMMITS_MAX; i++) {
        many[i] = (mq_message){.topic = "t", .partition = i};
        assert_int_equal(sk_commits_slot(&c, &many[i]) < 0, i == SK_COMMITS_MAX);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unknown_backend),
        cmocka_unit_test(test_memory_store),
        cmocka_unit_test(test_commits),
    };
    return cmocka_run_group_tests_name("unit.store", tests, NULL, NULL);
}
