/*
 * test_redis_cluster.c - the Redis Cluster client (sale/include/redis_cluster.h)
 * against a real cluster of 6 redis-server processes started here
 * (tests/redis_cluster.h): slots and hash tags, routing a pipelined batch,
 * MOVED after a slot moved, ASK while it moves, WAIT for replicas, a master
 * SIGKILLed and its replica promoted, the whole cluster down and back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sale/include/redis_cluster.h"
#include "tests/redis_cluster.h"
#include "tests/test_time.h"

#define TIMEOUT_MS 1000
#define NODE_TIMEOUT_MS 1000
#define FAILOVER_BOUND_MS 30000 /* generous: a loaded machine under sanitizers */

static redis_cluster rc;
static char nodes[512];

static sk_cluster *client(uint32_t min_replicas_ack)
{
    sk_cluster_config cfg = {.nodes = nodes,
                             .timeout_ms = TIMEOUT_MS,
                             .min_replicas_ack = min_replicas_ack,
                             .replica_ack_timeout_ms = 500};
    sk_cluster *c = NULL;
    assert_int_equal(sk_cluster_create(&cfg, &c), 0);
    return c;
}

static unsigned slot_of(const char *key)
{
    return sk_cluster_slot(key, strlen(key));
}

/* SET key value through c; 0 or the call's error. */
static int set(sk_cluster *c, const char *key, const char *value, int wait)
{
    const char *argv[] = {"SET", key, value};
    sk_cluster_cmd cmd = {.slot = slot_of(key), .argc = 3, .argv = argv};
    int err = sk_cluster_run(c, &cmd, 1, wait);
    if (err == 0 && cmd.reply->type != REDIS_REPLY_STATUS)
        err = -EPROTO;
    if (cmd.reply)
        freeReplyObject(cmd.reply);
    return err;
}

/* GET key through c into buf ("" when absent); 0 or the call's error. */
static int get(sk_cluster *c, const char *key, char *buf, size_t len)
{
    const char *argv[] = {"GET", key};
    redisReply *rep = NULL;
    int err = sk_cluster_command(c, slot_of(key), 2, argv, NULL, &rep);
    if (err < 0)
        return err;
    snprintf(buf, len, "%s", rep->type == REDIS_REPLY_STRING ? rep->str : "");
    err = rep->type == REDIS_REPLY_STRING || rep->type == REDIS_REPLY_NIL ? 0 : -EPROTO;
    freeReplyObject(rep);
    return err;
}

/* GET key straight from node i, without following redirections. */
static void raw_get(int i, const char *key, char *buf, size_t len)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", rc.node[i].port, tv);
    assert_true(c && !c->err);
    redisReply *rep = redisCommand(c, "GET %s", key);
    assert_non_null(rep);
    snprintf(buf, len, "%s", rep->type == REDIS_REPLY_STRING ? rep->str : rep->str ? rep->str : "");
    freeReplyObject(rep);
    redisFree(c);
}

static int group_setup(void **state)
{
    (void)state;
    return redis_cluster_setup(&rc, NODE_TIMEOUT_MS, nodes, sizeof nodes);
}

static int group_teardown(void **state)
{
    (void)state;
    redis_cluster_destroy(&rc);
    return 0;
}

static void test_slots(void **state)
{
    (void)state;
    assert_int_equal(sk_cluster_slot("123456789", 9), 0x31C3 % 16384);
    assert_int_equal(slot_of("foo"), 12182);
    assert_int_equal(slot_of("{user1000}.following"), slot_of("user1000"));
    assert_int_equal(slot_of("foo{}{bar}"), sk_cluster_slot("foo{}{bar}", 10)); /* whole key */
    assert_int_equal(slot_of("foo{{bar}}zap"), slot_of("{bar"));
    assert_int_equal(slot_of("foo{bar}{zap}"), slot_of("bar"));
    /* what the servers themselves say */
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", rc.node[0].port, tv);
    assert_true(c && !c->err);
    const char *keys[] = {"a", "sk:{item-1/0/3}:stock", "foo{}{bar}", "{}", "x{y}z", "ü"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        redisReply *rep = redisCommand(c, "CLUSTER KEYSLOT %s", keys[i]);
        assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
        assert_int_equal(rep->integer, slot_of(keys[i]));
        freeReplyObject(rep);
    }
    redisFree(c);
}

static void test_bad_config(void **state)
{
    (void)state;
    const char *bad[] = {"",       "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "127.0.0.1:6x",
                         "[::1:5", ":6379"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sk_cluster_config cfg = {.nodes = bad[i], .timeout_ms = TIMEOUT_MS};
        sk_cluster *c = NULL;
        assert_int_equal(sk_cluster_create(&cfg, &c), -EINVAL);
        assert_null(c);
    }
    /* nobody there: the seeds' error */
    sk_cluster_config cfg = {.nodes = "127.0.0.1:1", .timeout_ms = TIMEOUT_MS};
    sk_cluster *c = NULL;
    assert_true(sk_cluster_create(&cfg, &c) < 0);
    /* one dead seed among live ones is fine */
    char more[600];
    snprintf(more, sizeof more, "127.0.0.1:1, %s", nodes);
    cfg.nodes = more;
    assert_int_equal(sk_cluster_create(&cfg, &c), 0);
    assert_int_equal(sk_cluster_masters(c), 3);
    assert_int_equal(sk_cluster_ping(c), 0);
    sk_cluster_destroy(c);
}

/* A batch over many slots: one pipeline per master, every key where the
 * cluster says its slot lives. */
static void test_routing(void **state)
{
    (void)state;
    enum { N = 300 };
    sk_cluster *c = client(0);
    static char keys[N][32], vals[N][32];
    static const char *argv[N][3];
    sk_cluster_cmd cmds[N];
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "route:%d", i);
        snprintf(vals[i], sizeof vals[i], "v%d", i);
        argv[i][0] = "SET", argv[i][1] = keys[i], argv[i][2] = vals[i];
        cmds[i] = (sk_cluster_cmd){.slot = slot_of(keys[i]), .argc = 3, .argv = argv[i]};
    }
    assert_int_equal(sk_cluster_run(c, cmds, N, 0), 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(cmds[i].err, 0);
        assert_int_equal(cmds[i].reply->type, REDIS_REPLY_STATUS);
        freeReplyObject(cmds[i].reply);
    }
    for (int i = 0; i < N; i += 7) {
        char buf[32];
        int m = redis_cluster_master_of(&rc, slot_of(keys[i]));
        assert_true(m >= 0);
        raw_get(m, keys[i], buf, sizeof buf);
        assert_string_equal(buf, vals[i]);
        assert_int_equal(get(c, keys[i], buf, sizeof buf), 0);
        assert_string_equal(buf, vals[i]);
    }
    /* hash tags: one slot, one node, multi-key commands work */
    const char *margv[] = {"MSET", "{tag}a", "1", "{tag}b", "2"};
    redisReply *rep = NULL;
    assert_int_equal(sk_cluster_command(c, slot_of("{tag}a"), 5, margv, NULL, &rep), 0);
    assert_int_equal(rep->type, REDIS_REPLY_STATUS);
    freeReplyObject(rep);
    sk_cluster_destroy(c);
}

static int other_master(unsigned slot)
{
    int from = redis_cluster_master_of(&rc, slot);
    for (int i = 0; i < REDIS_CLUSTER_NODES; i++) {
        if (i == from)
            continue;
        for (unsigned s = 0; s < 16384; s += 512)
            if (redis_cluster_master_of(&rc, s) == i)
                return i;
    }
    return -1;
}

/* The slot moved after the client loaded its map: MOVED, then the map
 * corrected. */
static void test_moved(void **state)
{
    (void)state;
    sk_cluster *c = client(0);
    char buf[32];
    const char *key = "moved:key";
    unsigned slot = slot_of(key);
    assert_int_equal(set(c, key, "before", 0), 0);
    int to = other_master(slot);
    assert_true(to >= 0);
    assert_int_equal(redis_cluster_move_slot(&rc, slot, to, 0), 0);
    assert_int_equal(redis_cluster_master_of(&rc, slot), to);
    assert_int_equal(get(c, key, buf, sizeof buf), 0);
    assert_string_equal(buf, "before");
    assert_int_equal(set(c, key, "after", 0), 0);
    raw_get(to, key, buf, sizeof buf);
    assert_string_equal(buf, "after");
    sk_cluster_destroy(c);
}

/* The slot is half-moved (its keys on the target, MIGRATING/IMPORTING set):
 * ASK, ASKING on the target. */
static void test_ask(void **state)
{
    (void)state;
    sk_cluster *c = client(0);
    char buf[32];
    const char *key = "{ask}key", *fresh = "{ask}fresh";
    unsigned slot = slot_of(key);
    assert_int_equal(set(c, key, "v1", 0), 0);
    int from = redis_cluster_master_of(&rc, slot), to = other_master(slot);
    assert_int_equal(redis_cluster_move_slot(&rc, slot, to, 1), 0);
    raw_get(from, key, buf, sizeof buf);
    assert_memory_equal(buf, "ASK", 3); /* the source redirects */
    assert_int_equal(get(c, key, buf, sizeof buf), 0);
    assert_string_equal(buf, "v1");
    assert_int_equal(set(c, fresh, "v2", 0), 0); /* a new key of the slot: on the target */
    assert_int_equal(redis_cluster_master_of(&rc, slot), from); /* still, by the map */
    assert_int_equal(redis_cluster_finish_move(&rc, slot, to), 0);
    raw_get(to, fresh, buf, sizeof buf);
    assert_string_equal(buf, "v2");
    assert_int_equal(get(c, fresh, buf, sizeof buf), 0);
    assert_string_equal(buf, "v2");
    sk_cluster_destroy(c);
}

/* WAIT: acknowledged by the replica, or the call fails. */
static void test_wait_replicas(void **state)
{
    (void)state;
    sk_cluster *c = client(1);
    const char *key = "wait:key";
    assert_int_equal(set(c, key, "acked", 1), 0);
    int m = redis_cluster_master_of(&rc, slot_of(key)), r = redis_cluster_replica_of(&rc, m);
    assert_true(r >= 0);
    redis_server_pause(&rc.node[r]);
    assert_int_equal(set(c, key, "alone", 1), -ENOTCONN);
    assert_int_equal(set(c, key, "alone", 0), 0); /* without wait it is the master's word */
    redis_server_resume(&rc.node[r]);
    uint64_t until = mono_ms() + FAILOVER_BOUND_MS;
    int err;
    while ((err = set(c, key, "acked again", 1)) != 0 && mono_ms() < until)
        sleep_ms(50);
    assert_int_equal(err, 0);
    sk_cluster_destroy(c);
}

/* SIGKILL a master: its replica is promoted and calls succeed again within
 * a bound, with the writes the replica had acknowledged. */
static void test_failover(void **state)
{
    (void)state;
    sk_cluster *c = client(1);
    char buf[32];
    const char *key = "failover:key";
    unsigned slot = slot_of(key);
    assert_int_equal(set(c, key, "kept", 1), 0);
    int m = redis_cluster_master_of(&rc, slot), r = redis_cluster_replica_of(&rc, m);
    assert_true(m >= 0 && r >= 0);
    redis_cluster_kill(&rc, m);
    uint64_t t0 = mono_ms();
    int err, failed = 0;
    while ((err = get(c, key, buf, sizeof buf)) != 0 && mono_ms() < t0 + FAILOVER_BOUND_MS) {
        failed++;
        sleep_ms(50);
    }
    assert_int_equal(err, 0);
    assert_string_equal(buf, "kept");
    printf("failover: answers again after %llu ms (%d failed calls)\n",
           (unsigned long long)(mono_ms() - t0), failed);
    assert_int_equal(redis_cluster_master_of(&rc, slot), r);
    assert_int_equal(set(c, key, "after", 0), 0);
    /* the old master comes back as a replica of the promoted one */
    assert_int_equal(redis_cluster_restart(&rc, m), 0);
    assert_int_equal(redis_cluster_wait_ok(&rc, FAILOVER_BOUND_MS), 0);
    assert_int_equal(get(c, key, buf, sizeof buf), 0);
    assert_string_equal(buf, "after");
    sk_cluster_destroy(c);
}

/* Every node down: calls fail fast with an error, and work again once the
 * cluster is back, with the same handle. */
static void test_all_down_and_back(void **state)
{
    (void)state;
    sk_cluster *c = client(0);
    char buf[32];
    assert_int_equal(set(c, "down:key", "v", 0), 0);
    for (int i = 0; i < REDIS_CLUSTER_NODES; i++)
        redis_cluster_kill(&rc, i);
    uint64_t t0 = mono_ms();
    assert_true(get(c, "down:key", buf, sizeof buf) < 0);
    assert_true(sk_cluster_ping(c) < 0);
    assert_true(mono_ms() - t0 < 4 * TIMEOUT_MS);
    for (int i = 0; i < REDIS_CLUSTER_NODES; i++)
        assert_int_equal(redis_cluster_restart(&rc, i), 0);
    assert_int_equal(redis_cluster_wait_ok(&rc, FAILOVER_BOUND_MS), 0);
    uint64_t until = mono_ms() + FAILOVER_BOUND_MS;
    int err;
    while ((err = get(c, "down:key", buf, sizeof buf)) != 0 && mono_ms() < until)
        sleep_ms(50);
    assert_int_equal(err, 0);
    assert_string_equal(buf, "v"); /* AOF, fsync always */
    assert_int_equal(sk_cluster_ping(c), 0);
    sk_cluster_destroy(c);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* hiredis writes with write(2) */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slots),    cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_routing),  cmocka_unit_test(test_moved),
        cmocka_unit_test(test_ask),      cmocka_unit_test(test_wait_replicas),
        cmocka_unit_test(test_failover), cmocka_unit_test(test_all_down_and_back),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
