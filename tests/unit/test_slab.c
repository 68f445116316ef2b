/*
 * test_slab.c - the request-context pool.
 *
 * A freed object is handed out again instead of a new malloc, a shard never
 * keeps more than max_cached objects, objects in use are never handed out
 * twice (threads allocating and freeing each other's objects), and destroy
 * frees what is cached (ASan reports anything left behind).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/slab.h"

static void test_reuse_and_bound(void **state)
{
    (void)state;
    gw_slab *s;
    gw_slab_stats st;
    void *objs[8];

    assert_int_equal(gw_slab_create(0, 4, &s), -EINVAL);
    assert_int_equal(gw_slab_create(100, 4, NULL), -EINVAL);
    assert_int_equal(gw_slab_create(100, 4, &s), 0);
    void *a = gw_slab_alloc(s);
    assert_non_null(a);
    memset(a, 0xab, 100); /* the whole size is usable (ASan checks) */
    gw_slab_free(s, a);
    void *b = gw_slab_alloc(s);
    assert_ptr_equal(a, b); /* the same thread gets its freed object back */
    gw_slab_stats_get(s, &st);
    assert_int_equal(st.allocs, 2);
    assert_int_equal(st.reused, 1);
    assert_int_equal(st.cached, 0);
    gw_slab_free(s, b);
    gw_slab_free(s, NULL);

    for (int i = 0; i < 8; i++)
        assert_non_null(objs[i] = gw_slab_alloc(s));
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < i; j++)
            assert_ptr_not_equal(objs[i], objs[j]);
    for (int i = 0; i < 8; i++)
        gw_slab_free(s, objs[i]);
    gw_slab_stats_get(s, &st);
    assert_int_equal(st.cached, 4); /* the rest went back to free() */
    gw_slab_destroy(s);

    /* max_cached 0: a plain malloc/free pair */
    assert_int_equal(gw_slab_create(8, 0, &s), 0);
    a = gw_slab_alloc(s);
    gw_slab_free(s, a);
    gw_slab_stats_get(s, &st);
    assert_int_equal(st.cached, 0);
    assert_int_equal(st.reused, 0);
    gw_slab_destroy(s);
    gw_slab_destroy(NULL);
}

enum { THREADS = 4, ROUNDS = 20000, HELD = 32 };

typedef struct tharg {
    gw_slab *s;
    int id;
    int bad;
    void **handoff; /* objects this thread passes to the next one to free */
    pthread_mutex_t *mu;
} tharg;

typedef struct obj {
    int owner;
    int round;
    char pad[48];
} obj;

static void *worker(void *p)
{
    tharg *a = p;
    obj *held[HELD] = {0};
    for (int r = 0; r < ROUNDS; r++) {
        int k = r % HELD;
        if (held[k]) {
            /* untouched while held: nobody else was given it */
            if (held[k]->owner != a->id || held[k]->round != r - HELD)
                a->bad++;
            /* every other object goes to another thread to free */
            if (r % 2) {
                int next = (a->id + 1) % THREADS;
                pthread_mutex_lock(a->mu);
                void *theirs = a->handoff[next]; /* the next thread's object */
                a->handoff[next] = NULL;
                void *mine = a->handoff[a->id]; /* not taken yet */
                a->handoff[a->id] = held[k];
                pthread_mutex_unlock(a->mu);
                gw_slab_free(a->s, theirs);
                gw_slab_free(a->s, mine);
            } else {
                gw_slab_free(a->s, held[k]);
            }
        }
        held[k] = gw_slab_alloc(a->s);
        if (!held[k]) {
            a->bad++;
            continue;
        }
        held[k]->owner = a->id;
        held[k]->round = r;
        memset(held[k]->pad, a->id, sizeof held[k]->pad);
    }
    for (int k = 0; k < HELD; k++)
        gw_slab_free(a->s, held[k]);
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    gw_slab *s;
    pthread_t th[THREADS];
    tharg args[THREADS];
    void *handoff[THREADS] = {0};
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    gw_slab_stats st;

    assert_int_equal(gw_slab_create(sizeof(obj), 64, &s), 0);
    for (int i = 0; i < THREADS; i++) {
        args[i] = (tharg){.s = s, .id = i, .handoff = handoff, .mu = &mu};
        assert_int_equal(pthread_create(&th[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(args[i].bad, 0);
    }
    for (int i = 0; i < THREADS; i++)
        gw_slab_free(s, handoff[i]);
    gw_slab_stats_get(s, &st);
    assert_int_equal(st.allocs, (uint64_t)THREADS * ROUNDS);
    /* steady state: nearly every allocation is a reuse */
    assert_true(st.reused > st.allocs / 2);
    gw_slab_destroy(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reuse_and_bound),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
