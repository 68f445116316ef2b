/*
 * test_token_bucket.c - the GCRA admission limit.
 *
 * Time is passed in, so every test drives a fake clock: a burst at one
 * instant, refill after one interval, the window bound (accepted <= burst +
 * rate * T over every window, sliding ones included) and the lower bound
 * (accepted >= rate * T - 1 when takes are attempted continuously), the
 * concurrent CAS path with a frozen clock, and tb_wait_ns against tb_take.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "gateway/token_bucket.h"

#define SEC 1000000000ULL
#define T0 (1000 * SEC) /* an arbitrary, non-zero start of the fake clock */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
    /* splitmix64: reproducible across runs */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* ---- basics ---- */

static void test_init_rejects_bad_args(void **state)
{
    (void)state;
    tb b;
    assert_int_equal(tb_init(&b, -1, 10), -EINVAL);
    assert_int_equal(tb_init(&b, -0.001, 10), -EINVAL);
    assert_int_equal(tb_init(&b, NAN, 10), -EINVAL);
    assert_int_equal(tb_init(&b, INFINITY, 10), -EINVAL);
    assert_int_equal(tb_init(&b, 1e9 + 1, 10), -EINVAL);
    assert_int_equal(tb_init(&b, 100, 0), -EINVAL); /* a limit needs a burst of at least 1 */
    assert_int_equal(tb_init(&b, 1e9, 1), 0);
    assert_int_equal(tb_init(&b, 0.5, 1), 0);
}

static void test_unlimited(void **state)
{
    (void)state;
    tb b;
    assert_int_equal(tb_init(&b, 0, 0), 0); /* rate 0: no burst needed */
    for (int i = 0; i < 100000; i++)
        assert_true(tb_take(&b, T0));
    assert_int_equal(tb_wait_ns(&b, T0), 0);
    assert_true(tb_take(&b, 0));
    assert_true(tb_take(&b, UINT64_MAX / 2));

    assert_int_equal(tb_init(&b, 0, 7), 0);
    for (int i = 0; i < 1000; i++)
        assert_true(tb_take(&b, T0));
}

static void test_burst_then_refusal(void **state)
{
    (void)state;
    tb b;
    assert_int_equal(tb_init(&b, 100, 25), 0);
    for (int i = 0; i < 25; i++)
        assert_true(tb_take(&b, T0));
    for (int i = 0; i < 100; i++)
        assert_false(tb_take(&b, T0));
    /* refusals do not consume anything: still refused a moment before refill */
    assert_false(tb_take(&b, T0 + SEC / 100 - 1));
}

/* A reload changes rate and burst in place: the new burst and rate hold
 * from the next take, unlimited and back. */
static void test_set_while_running(void **state)
{
    (void)state;
    tb b;
    assert_int_equal(tb_init(&b, 100, 25), 0);
    assert_true(tb_take(&b, T0));
    assert_int_equal(tb_set(&b, 0, 1), 0); /* unlimited */
    for (int i = 0; i < 1000; i++)
        assert_true(tb_take(&b, T0));
    assert_int_equal(tb_set(&b, 1, 2), 0); /* 1/s, burst 2 */
    assert_true(tb_take(&b, T0 + SEC));
    assert_true(tb_take(&b, T0 + SEC));
    assert_false(tb_take(&b, T0 + SEC));
    assert_true(tb_take(&b, T0 + 2 * SEC));
    assert_int_equal(tb_set(&b, -1, 2), -EINVAL);
    assert_int_equal(tb_set(&b, 5, 0), -EINVAL);
    assert_false(tb_take(&b, T0 + 2 * SEC)); /* a refused set changed nothing */
}

static void test_refill_after_one_interval(void **state)
{
    (void)state;
    tb b;
    const uint64_t iv = SEC / 100; /* rate 100/s */
    assert_int_equal(tb_init(&b, 100, 3), 0);
    for (int i = 0; i < 3; i++)
        assert_true(tb_take(&b, T0));
    assert_false(tb_take(&b, T0));

    /* one token per interval, no more */
    for (int k = 1; k <= 5; k++) {
        uint64_t t = T0 + (uint64_t)k * iv;
        assert_false(tb_take(&b, t - 1));
        assert_true(tb_take(&b, t));
        assert_false(tb_take(&b, t));
    }

    /* a long idle period refills to the burst, not beyond */
    uint64_t t = T0 + 100 * SEC;
    for (int i = 0; i < 3; i++)
        assert_true(tb_take(&b, t));
    assert_false(tb_take(&b, t));
}

static void test_fractional_rate(void **state)
{
    (void)state;
    tb b;
    assert_int_equal(tb_init(&b, 0.5, 1), 0); /* one every 2 s */
    assert_true(tb_take(&b, T0));
    assert_false(tb_take(&b, T0 + 2 * SEC - 1));
    assert_true(tb_take(&b, T0 + 2 * SEC));
    assert_false(tb_take(&b, T0 + 3 * SEC));
}

static void test_wait_ns(void **state)
{
    (void)state;
    tb b;
    const uint64_t iv = SEC / 1000; /* rate 1000/s */
    assert_int_equal(tb_init(&b, 1000, 4), 0);
    assert_int_equal(tb_wait_ns(&b, T0), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(tb_wait_ns(&b, T0), 0);
        assert_true(tb_take(&b, T0));
    }
    assert_int_equal(tb_wait_ns(&b, T0), iv);
    assert_int_equal(tb_wait_ns(&b, T0 + iv / 4), iv - iv / 4);
    assert_int_equal(tb_wait_ns(&b, T0 + iv), 0);
    /* tb_wait_ns does not take */
    assert_int_equal(tb_wait_ns(&b, T0), iv);

    /* exactly the advertised wait: not a nanosecond earlier, and then it works */
    for (int r = 0; r < 2000; r++) {
        uint64_t now = T0 + (uint64_t)r * 137;
        uint64_t w = tb_wait_ns(&b, now);
        if (w == 0) {
            assert_true(tb_take(&b, now));
            continue;
        }
        assert_false(tb_take(&b, now + w - 1));
        assert_true(tb_take(&b, now + w));
    }
}

/* ---- accuracy against a fake clock ---- */

typedef struct run {
    uint64_t *acc; /* times of accepted takes, ascending */
    size_t nacc;
    uint64_t *att; /* times at which takes were attempted */
    size_t natt;
} run;

/* Drive `seconds` of simulated time with random steps of 0..max_step ns and
 * 1..3 takes at each step. */
static void drive(tb *b, uint64_t seconds, uint64_t max_step, run *r)
{
    size_t cap = (size_t)(seconds * SEC / (max_step / 2 + 1)) * 2 + 1024;
    r->acc = malloc(cap * 3 * sizeof *r->acc);
    r->att = malloc(cap * sizeof *r->att);
    assert_non_null(r->acc);
    assert_non_null(r->att);
    r->nacc = r->natt = 0;
    for (uint64_t now = T0; now <= T0 + seconds * SEC; now += rnd() % (max_step + 1)) {
        assert_true(r->natt < cap);
        r->att[r->natt++] = now;
        int takes = 1 + (int)(rnd() % 3);
        for (int i = 0; i < takes; i++)
            if (tb_take(b, now))
                r->acc[r->nacc++] = now;
    }
}

/* Accepted takes with a time in [from, from + len]. */
static size_t count_in(const run *r, size_t *lo, size_t *hi, uint64_t from, uint64_t len)
{
    while (*lo < r->nacc && r->acc[*lo] < from)
        (*lo)++;
    if (*hi < *lo)
        *hi = *lo;
    while (*hi < r->nacc && r->acc[*hi] <= from + len)
        (*hi)++;
    return *hi - *lo;
}

/* Steps of up to interval / step_div. With a burst of 1 a late attempt loses
 * its lateness (the bucket was full), so "continuous" means much finer steps. */
static void check_accuracy(double rate, uint32_t burst, uint64_t step_div)
{
    const uint64_t seconds = 10;
    tb b;
    run r;
    assert_int_equal(tb_init(&b, rate, burst), 0);
    uint64_t iv = (uint64_t)ceil(1e9 / rate);
    drive(&b, seconds, iv / step_div, &r);
    assert_true(r.nacc > burst);

    static const double windows_s[] = {0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10};
    for (size_t w = 0; w < sizeof windows_s / sizeof *windows_s; w++) {
        uint64_t len = (uint64_t)(windows_s[w] * 1e9);
        double upper = burst + rate * windows_s[w];

        /* Upper bound over every window: the densest window of a given length
         * starts at an accepted take, so sliding over those covers them all. */
        size_t lo = 0, hi = 0;
        for (size_t i = 0; i < r.nacc; i++) {
            size_t n = count_in(&r, &lo, &hi, r.acc[i], len);
            if ((double)n > upper)
                fail_msg("rate %g burst %u: %zu accepted in %g s from t=%llu (limit %g)", rate,
                         burst, n, windows_s[w], (unsigned long long)(r.acc[i] - T0), upper);
        }

        /* Lower bound over windows starting at attempt times, inside the run. */
        double lower = rate * windows_s[w] - 1;
        lo = hi = 0;
        for (size_t i = 0; i < r.natt && r.att[i] + len <= T0 + seconds * SEC; i++) {
            size_t n = count_in(&r, &lo, &hi, r.att[i], len);
            if ((double)n < lower)
                fail_msg("rate %g burst %u: only %zu accepted in %g s from t=%llu (at least %g)",
                         rate, burst, n, windows_s[w], (unsigned long long)(r.att[i] - T0), lower);
        }
    }

    /* the whole run: the initial burst plus the rate */
    assert_true((double)r.nacc <= burst + rate * seconds);
    assert_true((double)r.nacc >= burst + rate * seconds - 1);
    free(r.acc);
    free(r.att);
}

static void test_accuracy_round_interval(void **state)
{
    (void)state;
    check_accuracy(1000, 50, 5);
}

static void test_accuracy_rounded_interval(void **state)
{
    (void)state;
    check_accuracy(333, 7, 5); /* 1e9 / 333 is not an integer: interval rounded up */
}

static void test_accuracy_slow_rate(void **state)
{
    (void)state;
    check_accuracy(2.5, 1, 1000);
}

static void test_accuracy_sparse_attempts(void **state)
{
    (void)state;
    /* Attempts far apart (up to 20 intervals): the window bound still holds. */
    tb b;
    run r;
    const double rate = 200;
    const uint32_t burst = 10;
    assert_int_equal(tb_init(&b, rate, burst), 0);
    drive(&b, 10, 20 * SEC / 200, &r);
    static const double windows_s[] = {0.005, 0.05, 0.3, 1, 4};
    for (size_t w = 0; w < sizeof windows_s / sizeof *windows_s; w++) {
        uint64_t len = (uint64_t)(windows_s[w] * 1e9);
        size_t lo = 0, hi = 0;
        for (size_t i = 0; i < r.nacc; i++)
            assert_true((double)count_in(&r, &lo, &hi, r.acc[i], len) <=
                        burst + rate * windows_s[w]);
    }
    free(r.acc);
    free(r.att);
}

/* ---- threads ---- */

#define THREADS 4
#define BURST 20000

typedef struct hammer {
    tb *b;
    pthread_barrier_t *go;
    uint64_t now;
    long ok;
} hammer;

static void *hammer_main(void *arg)
{
    hammer *h = arg;
    pthread_barrier_wait(h->go);
    for (int i = 0; i < BURST; i++) /* each alone could take the whole burst */
        h->ok += tb_take(h->b, h->now);
    return NULL;
}

static void test_threads_frozen_clock(void **state)
{
    (void)state;
    for (int round = 0; round < 3; round++) {
        tb b;
        pthread_t th[THREADS];
        hammer h[THREADS];
        pthread_barrier_t go;
        assert_int_equal(tb_init(&b, 1000, BURST), 0);
        pthread_barrier_init(&go, NULL, THREADS);
        for (int i = 0; i < THREADS; i++) {
            h[i] = (hammer){.b = &b, .go = &go, .now = T0 + (uint64_t)round * SEC};
            assert_int_equal(pthread_create(&th[i], NULL, hammer_main, &h[i]), 0);
        }
        long total = 0;
        for (int i = 0; i < THREADS; i++) {
            pthread_join(th[i], NULL);
            total += h[i].ok;
        }
        pthread_barrier_destroy(&go);
        assert_int_equal(total, BURST);
        assert_false(tb_take(&b, T0 + (uint64_t)round * SEC));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_rejects_bad_args),
        cmocka_unit_test(test_unlimited),
        cmocka_unit_test(test_burst_then_refusal),
        cmocka_unit_test(test_set_while_running),
        cmocka_unit_test(test_refill_after_one_interval),
        cmocka_unit_test(test_fractional_rate),
        cmocka_unit_test(test_wait_ns),
        cmocka_unit_test(test_accuracy_round_interval),
        cmocka_unit_test(test_accuracy_rounded_interval),
        cmocka_unit_test(test_accuracy_slow_rate),
        cmocka_unit_test(test_accuracy_sparse_attempts),
        cmocka_unit_test(test_threads_frozen_clock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
