/*
 * test_idempotency.c - Idempotency-Key: the key's charset and length, the
 * request id a body and key make (stable, apart for any other body or key,
 * a version-4 UUID), and the table of bodies: a repeat, a conflicting body,
 * expiry, a full set (not remembered, counted), threads on one key.
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
#include <string.h>

#include "gateway/idempotency.h"

#define SEC 1000000000ULL
#define T0 (1000 * SEC)

static void test_key_valid(void **state)
{
    (void)state;
    char k[80];
    assert_true(gw_idem_key_valid("a", 1));
    assert_true(gw_idem_key_valid("9f1c-2b:x.y_Z", 13));
    memset(k, 'x', 64);
    assert_true(gw_idem_key_valid(k, 64));
    assert_false(gw_idem_key_valid(k, 65));
    assert_false(gw_idem_key_valid("", 0));
    assert_false(gw_idem_key_valid("a b", 3));
    assert_false(gw_idem_key_valid("a\"b", 3));
    assert_false(gw_idem_key_valid("a/b", 3));
    assert_false(gw_idem_key_valid("\xc3\xa9", 2));
}

static void test_request_id(void **state)
{
    (void)state;
    uint8_t a[16], b[16];
    gw_idem_request_id("u1", "demo", "k-1", 3, 0, a);
    gw_idem_request_id("u1", "demo", "k-1", 3, 0, b);
    assert_memory_equal(a, b, 16);
    assert_int_equal(a[6] >> 4, 4);
    assert_int_equal(a[8] >> 6, 2);
    gw_idem_request_id("u2", "demo", "k-1", 3, 0, b);
    assert_memory_not_equal(a, b, 16);
    gw_idem_request_id("u1", "other", "k-1", 3, 0, b);
    assert_memory_not_equal(a, b, 16);
    gw_idem_request_id("u1", "demo", "k-2", 3, 0, b);
    assert_memory_not_equal(a, b, 16);
    gw_idem_request_id("u1", "demo", "k-1", 3, 1, b); /* the next generation */
    assert_memory_not_equal(a, b, 16);
    /* fields cannot slide into each other */
    gw_idem_request_id("u1d", "emo", "k-1", 3, 0, b);
    assert_memory_not_equal(a, b, 16);
}

static void test_claim(void **state)
{
    (void)state;
    gw_idem *t;
    assert_int_equal(gw_idem_create(0, SEC, &t), -EINVAL);
    assert_int_equal(gw_idem_create(1024, 60 * SEC, &t), 0);
    assert_int_equal(gw_idem_claim(t, "k1", 2, "u1", "demo", T0), 0);
    assert_int_equal(gw_idem_claim(t, "k1", 2, "u1", "demo", T0 + SEC), 1);
    assert_int_equal(gw_idem_claim(t, "k1", 2, "u2", "demo", T0 + SEC), -EEXIST);
    assert_int_equal(gw_idem_claim(t, "k1", 2, "u1", "other", T0 + SEC), -EEXIST);
    assert_int_equal(gw_idem_claim(t, "k2", 2, "u2", "demo", T0), 0);
    /* past the TTL the key is new again, with whatever body */
    assert_int_equal(gw_idem_claim(t, "k1", 2, "u2", "demo", T0 + 60 * SEC), 0);
    assert_int_equal(gw_idem_claim(t, "k1", 2, "u2", "demo", T0 + 61 * SEC), 1);
    assert_int_equal(gw_idem_full(t), 0);
    gw_idem_destroy(t);
}

static void test_full_set(void **state)
{
    (void)state;
    gw_idem *t;
    assert_int_equal(gw_idem_create(GW_IDEM_WAYS, 10 * SEC, &t), 0); /* one set */
    char k[16];
    for (int i = 0; i < GW_IDEM_WAYS; i++) {
        snprintf(k, sizeof k, "k%d", i);
        assert_int_equal(gw_idem_claim(t, k, strlen(k), "u", "demo", T0), 0);
    }
    assert_int_equal(gw_idem_claim(t, "late", 4, "u", "demo", T0), -ENOSPC);
    assert_int_equal(gw_idem_claim(t, "late", 4, "v", "demo", T0), -ENOSPC); /* unnoticed */
    assert_int_equal(gw_idem_full(t), 2);
    /* the live ones keep their bodies */
    assert_int_equal(gw_idem_claim(t, "k3", 2, "x", "demo", T0 + SEC), -EEXIST);
    /* once they expire there is room */
    assert_int_equal(gw_idem_claim(t, "late", 4, "u", "demo", T0 + 10 * SEC), 0);
    gw_idem_destroy(t);
}

typedef struct race {
    gw_idem *t;
    atomic_int new_claims, repeats, conflicts;
    int id;
} race;

static race shared;

static void *race_main(void *arg)
{
    int me = (int)(intptr_t)arg;
    char user[16], key[16];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "key%d", i);
        snprintf(user, sizeof user, "u%d", me & 1); /* two bodies per key */
        int rc = gw_idem_claim(shared.t, key, strlen(key), user, "demo", T0);
        if (rc == 0)
            atomic_fetch_add(&shared.new_claims, 1);
        else if (rc == 1)
            atomic_fetch_add(&shared.repeats, 1);
        else if (rc == -EEXIST)
            atomic_fetch_add(&shared.conflicts, 1);
    }
    return NULL;
}

/* Four threads claim the same 5,000 keys, two bodies each: every key is
 * new exactly once, and every other claim a repeat or a conflict. */
static void test_threads(void **state)
{
    (void)state;
    assert_int_equal(gw_idem_create(65536, 60 * SEC, &shared.t), 0);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, race_main, (void *)(intptr_t)i), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(gw_idem_full(shared.t), 0);
    assert_int_equal(atomic_load(&shared.new_claims), 5000);
    assert_int_equal(atomic_load(&shared.repeats) + atomic_load(&shared.conflicts), 15000);
    assert_int_equal(atomic_load(&shared.conflicts), 10000); /* the other body's two threads */
    gw_idem_destroy(shared.t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_valid),
        cmocka_unit_test(test_request_id),
        cmocka_unit_test(test_claim),
        cmocka_unit_test(test_full_set),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
