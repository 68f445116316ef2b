/*
 * test_timer_wheel.c - the event park's deadline wheel, on the real clock.
 * Assertions are about order and "never early"; lateness bounds are generous
 * (shared machines), the load test measures the real lateness.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "gateway/pending.h"
#include "gateway/timer_wheel.h"
#include "tests/test_time.h"

typedef struct probe {
    gw_timer t;
    _Atomic uint64_t fired_at;
    atomic_int fires;
} probe;

static void on_fire(gw_timer *t)
{
    probe *p = (probe *)t;
    atomic_store(&p->fired_at, gw_mono_ns());
    atomic_fetch_add(&p->fires, 1);
}

static void test_fires_never_early(void **state)
{
    (void)state;
    gw_wheel *w;
    assert_int_equal(gw_wheel_create(100000, &w), 0); /* 0.1 ms ticks: 102 ms per turn */
    enum { N = 200 };
    static probe ps[N];
    uint64_t now = gw_mono_ns();
    for (int i = 0; i < N; i++) {
        ps[i] = (probe){.t.fire = on_fire};
        /* 200..499 ms: several whole turns of the wheel, none due while adding */
        gw_wheel_add(w, &ps[i].t, now + 200000000ULL + (uint64_t)(i * 1500000ULL));
    }
    assert_int_equal(gw_wheel_count(w), N);
    for (int i = 0; i < 400 && gw_wheel_count(w) > 0; i++)
        sleep_ms(2);
    assert_int_equal(gw_wheel_count(w), 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(atomic_load(&ps[i].fires), 1);
        assert_true(atomic_load(&ps[i].fired_at) >= ps[i].t.deadline_ns);
        /* late by scheduling only: generous bound */
        assert_true(atomic_load(&ps[i].fired_at) - ps[i].t.deadline_ns < 500000000ULL);
    }
    gw_wheel_destroy(w);
}

static void test_del_prevents_fire(void **state)
{
    (void)state;
    gw_wheel *w;
    assert_int_equal(gw_wheel_create(1000000, &w), 0);
    probe a = {.t.fire = on_fire}, b = {.t.fire = on_fire};
    uint64_t now = gw_mono_ns();
    /* far enough ahead that a busy machine cannot make a due before the del */
    gw_wheel_add(w, &a.t, now + 300000000);
    gw_wheel_add(w, &b.t, now + 300000000);
    assert_int_equal(gw_wheel_del(w, &a.t), 0);
    assert_int_equal(gw_wheel_del(w, &a.t), -ENOENT);
    for (int i = 0; i < 1000 && !atomic_load(&b.fires); i++)
        sleep_ms(2);
    sleep_ms(20);
    assert_int_equal(atomic_load(&a.fires), 0);
    assert_int_equal(atomic_load(&b.fires), 1);
    assert_int_equal(gw_wheel_del(w, &b.t), -ENOENT); /* fired */
    gw_wheel_destroy(w);
}

static void test_past_deadline_fires_next_tick(void **state)
{
    (void)state;
    gw_wheel *w;
    assert_int_equal(gw_wheel_create(1000000, &w), 0);
    sleep_ms(5);
    probe a = {.t.fire = on_fire};
    gw_wheel_add(w, &a.t, gw_mono_ns() - 3000000);
    for (int i = 0; i < 100 && !atomic_load(&a.fires); i++)
        sleep_ms(1);
    assert_int_equal(atomic_load(&a.fires), 1);
    gw_wheel_destroy(w);
}

static void test_expire_all(void **state)
{
    (void)state;
    gw_wheel *w;
    assert_int_equal(gw_wheel_create(1000000, &w), 0);
    static probe ps[50];
    for (int i = 0; i < 50; i++) {
        ps[i] = (probe){.t.fire = on_fire};
        gw_wheel_add(w, &ps[i].t, gw_mono_ns() + 3600ULL * 1000000000ULL);
    }
    gw_wheel_expire_all(w);
    assert_int_equal(gw_wheel_count(w), 0);
    for (int i = 0; i < 50; i++)
        assert_int_equal(atomic_load(&ps[i].fires), 1);
    gw_wheel_destroy(w);
}

/* Many threads add and delete while the wheel fires: each timer either fired
 * exactly once or was deleted (del returned 0) and never fired. */
enum { THREADS = 4, PER = 2000 };
static probe race[THREADS][PER];
static int deleted[THREADS][PER];

typedef struct racer {
    gw_wheel *w;
    int id;
} racer;

static void *race_main(void *arg)
{
    racer *r = arg;
    unsigned seed = (unsigned)r->id * 7919u + 1u;
    for (int i = 0; i < PER; i++) {
        probe *p = &race[r->id][i];
        *p = (probe){.t.fire = on_fire};
        gw_wheel_add(r->w, &p->t, gw_mono_ns() + (uint64_t)(rand_r(&seed) % 3000000));
        if (rand_r(&seed) % 2) {
            if (rand_r(&seed) % 2)
                sleep_ms(0);
            deleted[r->id][i] = gw_wheel_del(r->w, &p->t) == 0;
        }
    }
    return NULL;
}

static void test_add_del_race(void **state)
{
    (void)state;
    gw_wheel *w;
    assert_int_equal(gw_wheel_create(1000000, &w), 0);
    pthread_t t[THREADS];
    racer rs[THREADS];
    for (int i = 0; i < THREADS; i++) {
        rs[i] = (racer){w, i};
        pthread_create(&t[i], NULL, race_main, &rs[i]);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 500 && gw_wheel_count(w) > 0; i++)
        sleep_ms(2);
    assert_int_equal(gw_wheel_count(w), 0);
    for (int i = 0; i < THREADS; i++)
        for (int k = 0; k < PER; k++)
            assert_int_equal(atomic_load(&race[i][k].fires), deleted[i][k] ? 0 : 1);
    gw_wheel_destroy(w);
}

/* With nothing due the thread sleeps a turn at a time (1 ms ticks: about
 * 1 s), not a tick at a time; a timer added while it sleeps wakes it when the
 * timer is earlier than the planned wake-up. */
static void test_sleeps_until_due(void **state)
{
    (void)state;
    gw_wheel *w;
    assert_int_equal(gw_wheel_create(1000000, &w), 0);
    sleep_ms(300);
    assert_true(gw_wheel_wakeups(w) <= 3); /* 300 with a wake-up per tick */

    probe far = {.t.fire = on_fire}, near = {.t.fire = on_fire};
    uint64_t now = gw_mono_ns();
    gw_wheel_add(w, &far.t, now + 900000000ULL); /* the thread now sleeps until then */
    sleep_ms(50);
    now = gw_mono_ns();
    gw_wheel_add(w, &near.t, now + 20000000ULL);
    for (int i = 0; i < 400 && !atomic_load(&near.fires); i++)
        sleep_ms(1);
    assert_int_equal(atomic_load(&near.fires), 1);
    assert_int_equal(atomic_load(&far.fires), 0);
    assert_true(atomic_load(&near.fired_at) >= near.t.deadline_ns);
    assert_true(atomic_load(&near.fired_at) < far.t.deadline_ns - 300000000ULL);
    uint64_t woke = gw_wheel_wakeups(w);
    for (int i = 0; i < 1500 && !atomic_load(&far.fires); i++)
        sleep_ms(1);
    assert_int_equal(atomic_load(&far.fires), 1);
    assert_true(atomic_load(&far.fired_at) >= far.t.deadline_ns);
    assert_true(gw_wheel_wakeups(w) - woke <= 5);
    gw_wheel_destroy(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fires_never_early),
        cmocka_unit_test(test_del_prevents_fire),
        cmocka_unit_test(test_past_deadline_fires_next_tick),
        cmocka_unit_test(test_expire_all),
        cmocka_unit_test(test_add_del_race),
        cmocka_unit_test(test_sleeps_until_due),
    };
    return cmocka_run_group_tests_name("timer_wheel", tests, NULL, NULL);
}
