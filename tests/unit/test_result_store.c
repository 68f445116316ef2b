/*
 * test_result_store.c - recent outcomes by request id.
 *
 * Time is passed in. Eviction is per shard (oldest first) and the store picks
 * a shard from the first 8 bytes of the request id, so ids that share those
 * bytes land in one shard: that is how the eviction-order test fills a shard.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/result_store.h"

#define SEC 1000000000ULL

static uint64_t mix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void random_id(uint8_t id[16], uint64_t n)
{
    uint64_t a = mix(n), b = mix(n ^ 0x5555555555555555ULL);
    memcpy(id, &a, 8);
    memcpy(id + 8, &b, 8);
}

/* Ids of one shard: the first 8 bytes fixed, the rest unique. */
static void shard_id(uint8_t id[16], uint64_t n)
{
    uint64_t a = 0x0123456789abcdefULL;
    memcpy(id, &a, 8);
    memcpy(id + 8, &n, 8);
}

static sk_outcome outcome(const uint8_t id[16], enum sk_result r, const char *order)
{
    sk_outcome o;
    memset(&o, 0, sizeof o);
    memset(o.gateway_id, 0x42, 16);
    memcpy(o.request_id, id, 16);
    o.result = r;
    snprintf(o.item_id, sizeof o.item_id, "item-7");
    snprintf(o.order_id, sizeof o.order_id, "%s", order);
    return o;
}

static void test_create_args(void **state)
{
    (void)state;
    gw_results *r = NULL;
    assert_int_equal(gw_results_create(0, SEC, &r), -EINVAL);
    assert_int_equal(gw_results_create(16, SEC, &r), 0);
    gw_results_destroy(r);
    gw_results_destroy(NULL);
}

static void test_put_get(void **state)
{
    (void)state;
    gw_results *r = NULL;
    uint8_t a[16], b[16], c[16];
    sk_outcome got;
    assert_int_equal(gw_results_create(1000, 60 * SEC, &r), 0);
    random_id(a, 1);
    random_id(b, 2);
    random_id(c, 3);
    assert_int_equal(gw_results_get(r, a, 0, &got), -ENOENT);

    sk_outcome oa = outcome(a, SK_SUCCESS, "1b4e28ba-2fa1-11d2-883f-0016d3cca427");
    sk_outcome ob = outcome(b, SK_SOLD_OUT, "");
    gw_results_put(r, &oa, 10);
    gw_results_put(r, &ob, 20);

    memset(&got, 0, sizeof got);
    assert_int_equal(gw_results_get(r, a, 30, &got), 0);
    assert_memory_equal(&got, &oa, sizeof got);
    assert_int_equal(gw_results_get(r, b, 30, &got), 0);
    assert_memory_equal(&got, &ob, sizeof got);
    assert_int_equal(gw_results_get(r, c, 30, &got), -ENOENT);
    gw_results_destroy(r);
}

static void test_ttl(void **state)
{
    (void)state;
    gw_results *r = NULL;
    uint8_t a[16], b[16];
    sk_outcome got;
    const uint64_t ttl = 5 * SEC, t0 = 1000 * SEC;
    assert_int_equal(gw_results_create(1000, ttl, &r), 0);
    random_id(a, 10);
    random_id(b, 11);
    sk_outcome oa = outcome(a, SK_SUCCESS, "order-a");
    sk_outcome ob = outcome(b, SK_ENDED, "");
    gw_results_put(r, &oa, t0);
    gw_results_put(r, &ob, t0 + 2 * SEC);

    assert_int_equal(gw_results_get(r, a, t0 + ttl - 1, &got), 0);
    assert_int_equal(gw_results_get(r, a, t0 + ttl, &got), -ENOENT);
    /* each entry expires ttl after it was recorded */
    assert_int_equal(gw_results_get(r, b, t0 + ttl, &got), 0);
    assert_int_equal(got.result, SK_ENDED);
    assert_int_equal(gw_results_get(r, b, t0 + 2 * SEC + ttl - 1, &got), 0);
    assert_int_equal(gw_results_get(r, b, t0 + 2 * SEC + ttl, &got), -ENOENT);
    assert_int_equal(gw_results_get(r, b, t0 + 100 * ttl, &got), -ENOENT);
    gw_results_destroy(r);
}

static void test_success_is_not_replaced(void **state)
{
    (void)state;
    gw_results *r = NULL;
    uint8_t a[16];
    sk_outcome got;
    assert_int_equal(gw_results_create(1000, 60 * SEC, &r), 0);
    random_id(a, 20);

    /* a non-success is replaced by what comes later */
    sk_outcome expired = outcome(a, SK_EXPIRED, "");
    sk_outcome sold_out = outcome(a, SK_SOLD_OUT, "");
    sk_outcome success = outcome(a, SK_SUCCESS, "order-first");
    gw_results_put(r, &expired, 1);
    assert_int_equal(gw_results_get(r, a, 2, &got), 0);
    assert_int_equal(got.result, SK_EXPIRED);
    gw_results_put(r, &sold_out, 2);
    assert_int_equal(gw_results_get(r, a, 3, &got), 0);
    assert_int_equal(got.result, SK_SOLD_OUT);
    gw_results_put(r, &success, 3);
    assert_int_equal(gw_results_get(r, a, 4, &got), 0);
    assert_memory_equal(&got, &success, sizeof got);

    /* ... but a success is kept against anything later, success included */
    static const enum sk_result later[] = {SK_EXPIRED, SK_SOLD_OUT, SK_ALREADY_PURCHASED,
                                           SK_BLOCKED, SK_ENDED};
    for (size_t i = 0; i < sizeof later / sizeof *later; i++) {
        sk_outcome o = outcome(a, later[i], "order-other");
        gw_results_put(r, &o, 5 + i);
        assert_int_equal(gw_results_get(r, a, 10, &got), 0);
        assert_memory_equal(&got, &success, sizeof got);
    }
    sk_outcome again = outcome(a, SK_SUCCESS, "order-second");
    gw_results_put(r, &again, 20);
    assert_int_equal(gw_results_get(r, a, 21, &got), 0);
    assert_string_equal(got.order_id, "order-first");
    gw_results_destroy(r);
}

/* "Undecided" (a request answered 504, still in flight) fills only an empty
 * slot; any real outcome replaces it, and it never replaces one. */
static void test_undecided_placeholder(void **state)
{
    (void)state;
    gw_results *r;
    sk_outcome got;
    uint8_t a[16], b[16];
    random_id(a, 1);
    random_id(b, 2);
    assert_int_equal(gw_results_create(64, 10 * SEC, &r), 0);

    sk_outcome pa = outcome(a, SK_UNAVAILABLE, "");
    gw_results_put(r, &pa, 1 * SEC);
    assert_int_equal(gw_results_get(r, a, 2 * SEC, &got), 0);
    assert_int_equal(got.result, SK_UNAVAILABLE);
    sk_outcome sa = outcome(a, SK_SUCCESS, "order-a");
    gw_results_put(r, &sa, 3 * SEC);
    gw_results_put(r, &pa, 4 * SEC); /* a late placeholder changes nothing */
    assert_int_equal(gw_results_get(r, a, 12 * SEC, &got), 0); /* kept from 3 s */
    assert_int_equal(got.result, SK_SUCCESS);
    assert_string_equal(got.order_id, "order-a");

    sk_outcome xb = outcome(b, SK_SOLD_OUT, "");
    gw_results_put(r, &xb, 1 * SEC);
    sk_outcome pb = outcome(b, SK_UNAVAILABLE, "");
    gw_results_put(r, &pb, 2 * SEC);
    assert_int_equal(gw_results_get(r, b, 3 * SEC, &got), 0);
    assert_int_equal(got.result, SK_SOLD_OUT);
    gw_results_destroy(r);
}

static void test_late_success_after_expiry(void **state)
{
    (void)state;
    /* A timeout is recorded, it expires, then the real outcome arrives: the
     * outcome is recorded now and must be readable for a full ttl. */
    gw_results *r = NULL;
    uint8_t a[16];
    sk_outcome got;
    const uint64_t ttl = 10 * SEC;
    assert_int_equal(gw_results_create(1000, ttl, &r), 0);
    random_id(a, 30);
    sk_outcome expired = outcome(a, SK_EXPIRED, "");
    sk_outcome success = outcome(a, SK_SUCCESS, "order-late");
    gw_results_put(r, &expired, 0);
    assert_int_equal(gw_results_get(r, a, ttl, &got), -ENOENT);
    gw_results_put(r, &success, ttl + SEC);
    assert_int_equal(gw_results_get(r, a, ttl + 2 * SEC, &got), 0);
    assert_memory_equal(&got, &success, sizeof got);
    assert_int_equal(gw_results_get(r, a, 2 * ttl + SEC - 1, &got), 0);
    assert_int_equal(gw_results_get(r, a, 2 * ttl + SEC, &got), -ENOENT);
    gw_results_destroy(r);
}

static void test_capacity_evicts_oldest(void **state)
{
    (void)state;
    enum { CAP = 64, N = 200 };
    gw_results *r = NULL;
    uint8_t id[16];
    sk_outcome got;
    assert_int_equal(gw_results_create(CAP, 3600 * SEC, &r), 0);
    for (uint64_t i = 0; i < N; i++) {
        char order[32];
        snprintf(order, sizeof order, "order-%llu", (unsigned long long)i);
        shard_id(id, i);
        sk_outcome o = outcome(id, i % 2 ? SK_SUCCESS : SK_SOLD_OUT, order);
        gw_results_put(r, &o, 100 + i);
    }
    /* what is left is the newest ones, each with its own outcome */
    size_t kept = 0;
    int seen_gap = 0;
    for (uint64_t i = N; i-- > 0;) {
        shard_id(id, i);
        if (gw_results_get(r, id, 1000, &got) == 0) {
            char order[32];
            snprintf(order, sizeof order, "order-%llu", (unsigned long long)i);
            if (seen_gap)
                fail_msg("entry %llu kept after a newer one was dropped", (unsigned long long)i);
            assert_memory_equal(got.request_id, id, 16);
            assert_string_equal(got.order_id, order);
            kept++;
        } else {
            seen_gap = 1;
        }
    }
    assert_true(kept >= 1);
    assert_true(kept < N);
    assert_true(kept <= CAP);
    shard_id(id, N - 1);
    assert_int_equal(gw_results_get(r, id, 1000, &got), 0);
    shard_id(id, 0);
    assert_int_equal(gw_results_get(r, id, 1000, &got), -ENOENT);
    gw_results_destroy(r);
}

static void test_capacity_bound(void **state)
{
    (void)state;
    static const size_t caps[] = {16, 64, 1000};
    for (size_t c = 0; c < sizeof caps / sizeof *caps; c++) {
        gw_results *r = NULL;
        uint8_t id[16];
        sk_outcome got;
        size_t n = caps[c] * 20;
        assert_int_equal(gw_results_create(caps[c], 3600 * SEC, &r), 0);
        for (size_t i = 0; i < n; i++) {
            random_id(id, 1000000 * c + i);
            sk_outcome o = outcome(id, SK_SUCCESS, "o");
            gw_results_put(r, &o, 1 + i);
        }
        size_t kept = 0;
        for (size_t i = 0; i < n; i++) {
            random_id(id, 1000000 * c + i);
            kept += gw_results_get(r, id, n + 1, &got) == 0;
        }
        if (kept > caps[c] || kept < caps[c] / 2)
            fail_msg("capacity %zu: %zu entries kept", caps[c], kept);
        random_id(id, 1000000 * c + n - 1);
        assert_int_equal(gw_results_get(r, id, n + 1, &got), 0);
        gw_results_destroy(r);
    }
}

/* ---- threads: puts and gets on all shards at once (TSan) ---- */

#define PER_THREAD 5000

typedef struct worker_arg {
    gw_results *r;
    int index;
    int errors;
} worker_arg;

static void *worker_main(void *arg)
{
    worker_arg *a = arg;
    for (uint64_t i = 0; i < PER_THREAD; i++) {
        uint8_t id[16];
        sk_outcome got;
        random_id(id, ((uint64_t)a->index << 32) | i);
        sk_outcome o = outcome(id, SK_SUCCESS, "t");
        gw_results_put(a->r, &o, i);
        if (gw_results_get(a->r, id, i, &got) != 0 || memcmp(got.request_id, id, 16) != 0)
            a->errors++;
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    enum { T = 4 };
    gw_results *r = NULL;
    pthread_t th[T];
    worker_arg a[T];
    /* room for everything: nothing may be lost, whatever the interleaving */
    assert_int_equal(gw_results_create(4 * T * PER_THREAD, 3600 * SEC, &r), 0);
    for (int i = 0; i < T; i++) {
        a[i] = (worker_arg){.r = r, .index = i};
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &a[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(a[i].errors, 0);
    }
    for (int t = 0; t < T; t++)
        for (uint64_t i = 0; i < PER_THREAD; i++) {
            uint8_t id[16];
            sk_outcome got;
            random_id(id, ((uint64_t)t << 32) | i);
            assert_int_equal(gw_results_get(r, id, PER_THREAD, &got), 0);
            assert_memory_equal(got.request_id, id, 16);
        }
    gw_results_destroy(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_args),
        cmocka_unit_test(test_put_get),
        cmocka_unit_test(test_ttl),
        cmocka_unit_test(test_success_is_not_replaced),
        cmocka_unit_test(test_undecided_placeholder),
        cmocka_unit_test(test_late_success_after_expiry),
        cmocka_unit_test(test_capacity_evicts_oldest),
        cmocka_unit_test(test_capacity_bound),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
