/*
 * test_redis_target.c - one Redis or a Redis Cluster behind one call: bad
 * arguments, the names log lines use, a real redis-server (tests/
 * redis_server.h) answering, going away and answering again on the next
 * call, and a cluster whose seeds all refuse failing without hanging. The
 * cluster path against a real cluster runs in test_registry.c and
 * integration.global_bucket.redis_cluster.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "sale/include/redis_target.h"
#include "tests/redis_server.h"
#include "tests/test_time.h"

#define TIMEOUT_MS 500

static redis_server srv;

static void test_bad_args(void **state)
{
    (void)state;
    sk_redis_target *t = NULL;
    assert_int_equal(sk_redis_target_create("127.0.0.1", 0, NULL, "k", TIMEOUT_MS, &t), -EINVAL);
    assert_int_equal(sk_redis_target_create("127.0.0.1", 65536, NULL, "k", TIMEOUT_MS, &t),
                     -EINVAL);
    assert_int_equal(sk_redis_target_create(NULL, 6379, "", "k", TIMEOUT_MS, &t), -EINVAL);
    assert_int_equal(sk_redis_target_create("127.0.0.1", 6379, NULL, NULL, TIMEOUT_MS, &t),
                     -EINVAL);
    assert_int_equal(sk_redis_target_create("127.0.0.1", 6379, NULL, "k", 0, &t), -EINVAL);
    assert_null(t);
    sk_redis_target_destroy(NULL);
}

static void test_names(void **state)
{
    (void)state;
    sk_redis_target *one, *cl;
    assert_int_equal(sk_redis_target_create("10.0.0.7", 6380, NULL, "k", TIMEOUT_MS, &one), 0);
    assert_string_equal(sk_redis_target_name(one), "redis 10.0.0.7:6380");
    /* host and port are unused with seeds */
    assert_int_equal(
        sk_redis_target_create(NULL, 0, "10.0.0.1:7000, 10.0.0.2:7000", "k", TIMEOUT_MS, &cl), 0);
    assert_string_equal(sk_redis_target_name(cl), "redis cluster 10.0.0.1:7000, 10.0.0.2:7000");
    sk_redis_target_destroy(one); /* never connected: nothing to close */
    sk_redis_target_destroy(cl);
}

static int64_t incr(sk_redis_target *t, int *err)
{
    const char *argv[] = {"INCR", "{t}:n"};
    redisReply *rep = NULL;
    *err = sk_redis_target_run(t, 2, argv, &rep);
    if (*err < 0) {
        assert_null(rep);
        return -1;
    }
    assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
    int64_t n = rep->integer;
    freeReplyObject(rep);
    return n;
}

/* Connected at the first call; a failed call drops the connection and the
 * first call after Redis is back makes a new one. */
static void test_single_redis_away_and_back(void **state)
{
    (void)state;
    sk_redis_target *t;
    int err;
    assert_int_equal(sk_redis_target_create("127.0.0.1", srv.port, NULL, "{t}:n", TIMEOUT_MS, &t),
                     0);
    assert_int_equal(incr(t, &err), 1);
    assert_int_equal(incr(t, &err), 2);
    redis_server_stop(&srv);
    assert_int_equal(incr(t, &err), -1);
    assert_true(err < 0);
    assert_int_equal(incr(t, &err), -1); /* not a stale connection's answer */
    assert_int_equal(redis_server_restart(&srv), 0);
    assert_int_equal(incr(t, &err), 3); /* AOF: the count survived */
    sk_redis_target_destroy(t);
}

/* Every seed refuses (a stopped server's port): an error, at once. */
static void test_cluster_unreachable(void **state)
{
    (void)state;
    char seeds[64];
    sk_redis_target *t;
    int err;
    snprintf(seeds, sizeof seeds, "127.0.0.1:%d", srv.port);
    redis_server_stop(&srv);
    assert_int_equal(sk_redis_target_create(NULL, 0, seeds, "{t}:n", TIMEOUT_MS, &t), 0);
    uint64_t t0 = mono_ms();
    assert_int_equal(incr(t, &err), -1);
    assert_true(err < 0);
    assert_true(mono_ms() - t0 < 4 * TIMEOUT_MS);
    sk_redis_target_destroy(t);
    assert_int_equal(redis_server_restart(&srv), 0);
}

static int setup(void **state)
{
    (void)state;
    return redis_server_setup(&srv);
}

static int teardown(void **state)
{
    (void)state;
    redis_server_destroy(&srv);
    return 0;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* hiredis writes to a server that went away */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_single_redis_away_and_back),
        cmocka_unit_test(test_cluster_unreachable),
    };
    return cmocka_run_group_tests_name("unit.redis_target", tests, setup, teardown);
}
