/*
 * test_pending.c - the pending table: request id -> parked request.
 *
 * The property that matters is the hand-off: for every parked request exactly
 * one of "the handler got the outcome and the completer was told 0" and "the
 * handler timed out and the completer was told -ENOENT" happens, and once a
 * waiter is out of the table nothing touches it (the race test frees every
 * waiter as soon as its wait returns, so a late touch is a use-after-free
 * under ASan and a data race under TSan).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway/pending.h"

#define MS 1000000ULL

static uint64_t mix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* A request id: bytes 0-7 make it unique, bytes 8-15 are random-looking (the
 * table hashes them, as it would a UUID's). */
static void make_id(uint8_t id[16], uint64_t n)
{
    uint64_t h = mix(n);
    memcpy(id, &n, 8);
    memcpy(id + 8, &h, 8);
}

static sk_outcome outcome_for(const uint8_t id[16], enum sk_result r, const char *order)
{
    sk_outcome o;
    memset(&o, 0, sizeof o);
    memcpy(o.request_id, id, 16);
    o.result = r;
    snprintf(o.item_id, sizeof o.item_id, "item-1");
    snprintf(o.order_id, sizeof o.order_id, "%s", order);
    return o;
}

static int setup_table(void **state)
{
    gw_pending *p = NULL;
    assert_int_equal(gw_pending_create(8, &p), 0);
    *state = p;
    return 0;
}

static int teardown_table(void **state)
{
    gw_pending_destroy(*state);
    return 0;
}

/* ---- single-threaded semantics ---- */

static void test_outcome_before_wait(void **state)
{
    gw_pending *p = *state;
    gw_waiter w;
    uint8_t id[16];
    make_id(id, 1);
    assert_int_equal(gw_waiter_init(&w, id), 0);
    gw_pending_add(p, &w);
    assert_int_equal(gw_pending_count(p), 1);

    sk_outcome o = outcome_for(id, SK_ALREADY_PURCHASED, "order-1");
    assert_int_equal(gw_pending_complete(p, &o), 0);
    assert_int_equal(gw_pending_count(p), 0);
    assert_false(gw_pending_contains(p, id));

    /* The outcome is already there: wait returns it even with a deadline in
     * the past, so it cannot have parked. */
    assert_int_equal(gw_pending_wait(p, &w, 0), 0);
    assert_memory_equal(w.out.request_id, id, 16);
    assert_int_equal(w.out.result, SK_ALREADY_PURCHASED);
    assert_string_equal(w.out.order_id, "order-1");
    assert_string_equal(w.out.item_id, "item-1");

    /* delivered once: a redelivery finds nobody */
    assert_int_equal(gw_pending_complete(p, &o), -ENOENT);
    gw_waiter_release(&w);
}

static void test_timeout_then_late_complete(void **state)
{
    gw_pending *p = *state;
    gw_waiter w;
    uint8_t id[16];
    make_id(id, 2);
    assert_int_equal(gw_waiter_init(&w, id), 0);
    gw_pending_add(p, &w);
    assert_true(gw_pending_contains(p, id));

    uint64_t t0 = gw_mono_ns();
    assert_int_equal(gw_pending_wait(p, &w, t0 + 20 * MS), -ETIMEDOUT);
    assert_true(gw_mono_ns() >= t0 + 20 * MS); /* it did wait for the deadline */
    assert_false(gw_pending_contains(p, id));
    assert_int_equal(gw_pending_count(p), 0);

    sk_outcome o = outcome_for(id, SK_SUCCESS, "order-late");
    assert_int_equal(gw_pending_complete(p, &o), -ENOENT);
    assert_int_equal(w.done, 0); /* the late outcome never reached the waiter */
    gw_waiter_release(&w);

    /* a deadline already past times out at once */
    assert_int_equal(gw_waiter_init(&w, id), 0);
    gw_pending_add(p, &w);
    assert_int_equal(gw_pending_wait(p, &w, 0), -ETIMEDOUT);
    assert_int_equal(gw_pending_count(p), 0);
    gw_waiter_release(&w);
}

static void test_cancel(void **state)
{
    gw_pending *p = *state;
    gw_waiter w;
    uint8_t id[16];
    make_id(id, 3);

    /* cancel before any outcome: removed, a later outcome finds nobody */
    assert_int_equal(gw_waiter_init(&w, id), 0);
    gw_pending_add(p, &w);
    assert_int_equal(gw_pending_cancel(p, &w), 0);
    assert_false(gw_pending_contains(p, id));
    assert_int_equal(gw_pending_count(p), 0);
    sk_outcome o = outcome_for(id, SK_SUCCESS, "order-3");
    assert_int_equal(gw_pending_complete(p, &o), -ENOENT);
    gw_waiter_release(&w);

    /* cancel after the outcome: -EALREADY, the outcome is kept */
    assert_int_equal(gw_waiter_init(&w, id), 0);
    gw_pending_add(p, &w);
    assert_int_equal(gw_pending_complete(p, &o), 0);
    assert_int_equal(gw_pending_cancel(p, &w), -EALREADY);
    assert_int_equal(gw_pending_count(p), 0);
    assert_int_equal(w.done, 1);
    assert_string_equal(w.out.order_id, "order-3");
    assert_int_equal(gw_pending_wait(p, &w, 0), 0);
    gw_waiter_release(&w);
}

static void test_contains_and_count(void **state)
{
    gw_pending *p = *state;
    enum { N = 300 };
    gw_waiter *w = calloc(N, sizeof *w);
    uint8_t ids[N][16];
    assert_non_null(w);
    for (int i = 0; i < N; i++) {
        make_id(ids[i], 1000 + (uint64_t)i);
        if (i % 3 == 0) /* same hashed bytes as the previous id: one bucket, a chain */
            memcpy(ids[i] + 8, ids[i > 0 ? i - 1 : 0] + 8, 8);
        assert_int_equal(gw_waiter_init(&w[i], ids[i]), 0);
        assert_false(gw_pending_contains(p, ids[i]));
        gw_pending_add(p, &w[i]);
        assert_true(gw_pending_contains(p, ids[i]));
        assert_int_equal(gw_pending_count(p), (size_t)i + 1);
    }
    uint8_t other[16];
    make_id(other, 999999);
    assert_false(gw_pending_contains(p, other));

    /* take out every other one, by completion or cancel, from the middle of chains */
    size_t left = N;
    for (int i = 0; i < N; i += 2) {
        if (i % 4 == 0) {
            sk_outcome o = outcome_for(ids[i], SK_SOLD_OUT, "");
            assert_int_equal(gw_pending_complete(p, &o), 0);
            assert_int_equal(w[i].done, 1);
            assert_int_equal(w[i].out.result, SK_SOLD_OUT);
        } else {
            assert_int_equal(gw_pending_cancel(p, &w[i]), 0);
        }
        assert_int_equal(gw_pending_count(p), --left);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(gw_pending_contains(p, ids[i]), i % 2 == 1);
        if (i % 2 == 1) /* the completion reached the right waiter of a chain */
            assert_int_equal(w[i].done, 0);
    }
    for (int i = 1; i < N; i += 2) {
        char order[16];
        snprintf(order, sizeof order, "o%d", i);
        sk_outcome o = outcome_for(ids[i], SK_SUCCESS, order);
        assert_int_equal(gw_pending_complete(p, &o), 0);
        assert_int_equal(gw_pending_wait(p, &w[i], 0), 0);
        assert_memory_equal(w[i].out.request_id, ids[i], 16);
        assert_string_equal(w[i].out.order_id, order);
    }
    assert_int_equal(gw_pending_count(p), 0);
    for (int i = 0; i < N; i++)
        gw_waiter_release(&w[i]);
    free(w);
}

static int wake_calls;

static void wake_cb(gw_waiter *w)
{
    wake_calls++;
    /* called with the outcome in place and the waiter already out of the table */
    assert_int_equal(w->done, 1);
    assert_int_equal(w->out.result, SK_BLOCKED);
    assert_ptr_equal(w->user, &wake_calls);
}

static void test_wake_callback(void **state)
{
    gw_pending *p = *state;
    gw_waiter w;
    uint8_t id[16];
    make_id(id, 4);
    wake_calls = 0;
    assert_int_equal(gw_waiter_init(&w, id), 0);
    w.wake = wake_cb;
    w.user = &wake_calls;
    gw_pending_add(p, &w);
    sk_outcome o = outcome_for(id, SK_BLOCKED, "");
    assert_int_equal(gw_pending_complete(p, &o), 0);
    assert_int_equal(wake_calls, 1);
    assert_int_equal(gw_pending_complete(p, &o), -ENOENT);
    assert_int_equal(wake_calls, 1);

    /* cancelled before the outcome: never woken */
    gw_pending_add(p, &w);
    assert_int_equal(gw_pending_cancel(p, &w), 0);
    assert_int_equal(gw_pending_complete(p, &o), -ENOENT);
    assert_int_equal(wake_calls, 1);
    gw_waiter_release(&w);
}

static void test_shard_counts(void **state)
{
    (void)state;
    static const size_t shards[] = {0, 1, 3, 64, 1000};
    for (size_t s = 0; s < sizeof shards / sizeof *shards; s++) {
        gw_pending *p = NULL;
        enum { N = 200 };
        gw_waiter w[N];
        uint8_t id[16];
        assert_int_equal(gw_pending_create(shards[s], &p), 0);
        for (int i = 0; i < N; i++) {
            make_id(id, 5000 + (uint64_t)i);
            assert_int_equal(gw_waiter_init(&w[i], id), 0);
            gw_pending_add(p, &w[i]);
        }
        assert_int_equal(gw_pending_count(p), N);
        for (int i = 0; i < N; i++) {
            make_id(id, 5000 + (uint64_t)i);
            assert_true(gw_pending_contains(p, id));
            sk_outcome o = outcome_for(id, SK_SUCCESS, "x");
            assert_int_equal(gw_pending_complete(p, &o), 0);
            assert_int_equal(gw_pending_wait(p, &w[i], 0), 0);
            assert_memory_equal(w[i].out.request_id, id, 16);
            gw_waiter_release(&w[i]);
        }
        assert_int_equal(gw_pending_count(p), 0);
        gw_pending_destroy(p);
    }
}

/* ---- the race: handlers park with short deadlines, completers race them ---- */

#define HANDLERS 8
#define PER_HANDLER 2000
#define COMPLETERS 2
#define TOTAL (HANDLERS * PER_HANDLER)

typedef struct race {
    gw_pending *p;
    pthread_mutex_t lock; /* guards queue/nqueue */
    int queue[TOTAL];     /* parked ids not yet taken by a completer */
    int nqueue;
    _Atomic int handlers_left;
    _Atomic int stop_observer;
    _Atomic int bad_outcome;  /* a handler got an outcome that was not its own */
    _Atomic size_t max_count; /* largest gw_pending_count seen */
    int handler_rc[TOTAL];    /* each written by one thread, read after join */
    int completer_rc[TOTAL];
} race;

typedef struct race_arg {
    race *r;
    int index;
} race_arg;

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)ns};
    nanosleep(&ts, NULL);
}

static void race_id(uint8_t id[16], int k)
{
    make_id(id, 0x100000u + (uint64_t)k);
}

static void *handler_main(void *arg)
{
    race_arg *a = arg;
    race *r = a->r;
    uint64_t seed = mix((uint64_t)a->index * 7919);
    for (int i = 0; i < PER_HANDLER; i++) {
        int k = a->index * PER_HANDLER + i;
        uint8_t id[16];
        race_id(id, k);
        gw_waiter *w = malloc(sizeof *w); /* freed as soon as it is out: late touches show */
        if (!w || gw_waiter_init(w, id) != 0)
            abort();
        gw_pending_add(r->p, w);
        pthread_mutex_lock(&r->lock);
        r->queue[r->nqueue++] = k;
        pthread_mutex_unlock(&r->lock);

        seed = mix(seed);
        uint64_t deadline = gw_mono_ns() + seed % (2 * MS + 1);
        int rc = gw_pending_wait(r->p, w, deadline);
        if (rc == 0) {
            char order[SK_ORDER_ID_MAX + 1];
            snprintf(order, sizeof order, "order-%d", k);
            if (memcmp(w->out.request_id, id, 16) != 0 || w->out.result != SK_SUCCESS ||
                strcmp(w->out.order_id, order) != 0)
                atomic_fetch_add(&r->bad_outcome, 1);
        }
        r->handler_rc[k] = rc;
        gw_waiter_release(w);
        memset(w, 0xa5, sizeof *w);
        free(w);
    }
    atomic_fetch_sub(&r->handlers_left, 1);
    return NULL;
}

static void *completer_main(void *arg)
{
    race_arg *a = arg;
    race *r = a->r;
    uint64_t seed = mix((uint64_t)a->index * 104729 + 1);
    for (;;) {
        int done = atomic_load(&r->handlers_left) == 0;
        int k = -1;
        seed = mix(seed);
        pthread_mutex_lock(&r->lock);
        if (r->nqueue > 0) { /* any parked id, not only the oldest */
            int at = (int)(seed % (uint64_t)r->nqueue);
            k = r->queue[at];
            r->queue[at] = r->queue[--r->nqueue];
        }
        pthread_mutex_unlock(&r->lock);
        if (k < 0) {
            if (done)
                break;
            sched_yield();
            continue;
        }
        /* at random moments: now, after a yield, or after up to 2 ms */
        switch ((seed >> 32) % 8) {
        case 0:
            sleep_ns((seed >> 40) % (2 * MS));
            break;
        case 1:
            sched_yield();
            break;
        default:
            break;
        }
        uint8_t id[16];
        char order[SK_ORDER_ID_MAX + 1];
        race_id(id, k);
        snprintf(order, sizeof order, "order-%d", k);
        sk_outcome o = outcome_for(id, SK_SUCCESS, order);
        r->completer_rc[k] = gw_pending_complete(r->p, &o);
    }
    return NULL;
}

static void *observer_main(void *arg)
{
    race *r = arg;
    while (!atomic_load(&r->stop_observer)) {
        size_t n = gw_pending_count(r->p);
        size_t m = atomic_load(&r->max_count);
        while (n > m && !atomic_compare_exchange_weak(&r->max_count, &m, n))
            ;
        sched_yield();
    }
    return NULL;
}

static void test_race_complete_vs_timeout(void **state)
{
    (void)state;
    race *r = calloc(1, sizeof *r);
    pthread_t h[HANDLERS], c[COMPLETERS], obs;
    race_arg ha[HANDLERS], ca[COMPLETERS];
    assert_non_null(r);
    assert_int_equal(gw_pending_create(16, &r->p), 0);
    pthread_mutex_init(&r->lock, NULL);
    atomic_init(&r->handlers_left, HANDLERS);
    for (int i = 0; i < TOTAL; i++)
        r->handler_rc[i] = r->completer_rc[i] = 1; /* neither 0 nor an errno */

    assert_int_equal(pthread_create(&obs, NULL, observer_main, r), 0);
    for (int i = 0; i < COMPLETERS; i++) {
        ca[i] = (race_arg){r, i};
        assert_int_equal(pthread_create(&c[i], NULL, completer_main, &ca[i]), 0);
    }
    for (int i = 0; i < HANDLERS; i++) {
        ha[i] = (race_arg){r, i};
        assert_int_equal(pthread_create(&h[i], NULL, handler_main, &ha[i]), 0);
    }
    for (int i = 0; i < HANDLERS; i++)
        pthread_join(h[i], NULL);
    for (int i = 0; i < COMPLETERS; i++)
        pthread_join(c[i], NULL);
    atomic_store(&r->stop_observer, 1);
    pthread_join(obs, NULL);

    int delivered = 0, timed_out = 0, handler_got = 0, completer_ok = 0;
    int handler_timeout = 0, completer_enoent = 0;
    for (int k = 0; k < TOTAL; k++) {
        int hr = r->handler_rc[k], cr = r->completer_rc[k];
        handler_got += hr == 0;
        handler_timeout += hr == -ETIMEDOUT;
        completer_ok += cr == 0;
        completer_enoent += cr == -ENOENT;
        if (hr == 0 && cr == 0)
            delivered++;
        else if (hr == -ETIMEDOUT && cr == -ENOENT)
            timed_out++;
        else
            fail_msg("request %d: handler %d, completer %d", k, hr, cr);
    }
    assert_int_equal(delivered + timed_out, TOTAL);
    assert_int_equal(handler_got, completer_ok);
    assert_int_equal(handler_timeout, completer_enoent);
    assert_int_equal(handler_got, delivered);
    assert_int_equal(handler_timeout, timed_out);
    /* both sides of the race were exercised */
    assert_true(delivered > 0);
    assert_true(timed_out > 0);
    assert_int_equal(atomic_load(&r->bad_outcome), 0);
    /* each handler parks one request at a time */
    assert_true(atomic_load(&r->max_count) <= HANDLERS);
    assert_int_equal(gw_pending_count(r->p), 0);
    print_message("race: %d delivered, %d timed out\n", delivered, timed_out);

    pthread_mutex_destroy(&r->lock);
    gw_pending_destroy(r->p);
    free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_outcome_before_wait, setup_table, teardown_table),
        cmocka_unit_test_setup_teardown(test_timeout_then_late_complete, setup_table,
                                        teardown_table),
        cmocka_unit_test_setup_teardown(test_cancel, setup_table, teardown_table),
        cmocka_unit_test_setup_teardown(test_contains_and_count, setup_table, teardown_table),
        cmocka_unit_test_setup_teardown(test_wake_callback, setup_table, teardown_table),
        cmocka_unit_test(test_shard_counts),
        cmocka_unit_test(test_race_complete_vs_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
