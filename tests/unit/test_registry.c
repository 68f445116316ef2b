/*
 * test_registry.c - the gateway registry against a real redis-server (see
 * tests/redis_server.h): register, heartbeat past the TTL, expiry after a
 * SIGKILL, removal on a clean stop, discovery of exactly the live gateways,
 * pruning of expired entries, many gateways in one structure, and Redis
 * going away and coming back; then the same registry on a real Redis Cluster
 * (tests/redis_cluster.h): discovery, expiry after a SIGKILL, and the
 * registry's master failing over.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "registry.h"
#include "sale/include/redis_cluster.h"
#include "tests/redis_cluster.h"
#include "tests/redis_server.h"
#include "tests/test_time.h"

/* generous: fsync-always AOF on a loaded machine (sanitizers, parallel
 * ctest) can stall a reply for a while */
#define TIMEOUT_MS 500
#define TTL_MS 900

static redis_server srv;

/* ---- direct Redis access ---- */

static redisContext *raw(void)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", srv.port, tv);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    redisSetTimeout(c, tv);
    return c;
}

static void raw_cmd(const char *fmt, ...)
{
    redisContext *c = raw();
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(c, fmt, ap);
    va_end(ap);
    assert_non_null(rep);
    assert_int_not_equal(rep->type, REDIS_REPLY_ERROR);
    freeReplyObject(rep);
    redisFree(c);
}

/* Redis's clock in unix ms, as the registry's scripts read it. */
#define LUA_NOW                                                                                    \
    "local t = redis.call('TIME') "                                                                \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "

/* The live address of gateway id into buf ("" when absent or expired). */
static const char *value_of(const char *id, char *buf, size_t cap)
{
    redisContext *c = raw();
    redisReply *rep = redisCommand(c,
                                   "EVAL %s 2 " SK_REGISTRY_ZSET " " SK_REGISTRY_ADDRS " %s",
                                   LUA_NOW "local s = redis.call('ZSCORE', KEYS[1], ARGV[1]) "
                                           "if not s or tonumber(s) <= now then return '' end "
                                           "return redis.call('HGET', KEYS[2], ARGV[1]) or ''",
                                   id);
    assert_non_null(rep);
    assert_int_equal(rep->type, REDIS_REPLY_STRING);
    snprintf(buf, cap, "%s", rep->str);
    freeReplyObject(rep);
    redisFree(c);
    return buf;
}

static long long int_reply(const char *fmt, ...)
{
    redisContext *c = raw();
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(c, fmt, ap);
    va_end(ap);
    assert_non_null(rep);
    assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
    long long v = rep->integer;
    freeReplyObject(rep);
    redisFree(c);
    return v;
}

/* Milliseconds until gateway id expires; -2 when it has no entry. */
static long long pttl_of(const char *id)
{
    return int_reply("EVAL %s 1 " SK_REGISTRY_ZSET " %s",
                     LUA_NOW "local s = redis.call('ZSCORE', KEYS[1], ARGV[1]) "
                             "if not s then return -2 end "
                             "return tonumber(s) - now",
                     id);
}

/* Write an entry as another gateway (or a stranger) would: expiring in
 * ttl_ms (negative: already expired). */
static void put(const char *id, const char *addr, long ttl_ms)
{
    int_reply("EVAL %s 2 " SK_REGISTRY_ZSET " " SK_REGISTRY_ADDRS " %s %s %ld",
              LUA_NOW "redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1]) "
                      "redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) return 1",
              id, addr, ttl_ms);
}

/* Wait up to ms for gateway <id> to be listed with want ("" = to be gone). */
static int wait_value(const char *id, const char *want, long ms)
{
    char v[300];
    uint64_t until = mono_ms() + (uint64_t)ms;
    do {
        if (!strcmp(value_of(id, v, sizeof v), want))
            return 1;
        sleep_ms(10);
    } while (mono_ms() < until);
    return 0;
}

static sk_registry *make(void)
{
    sk_registry *r = NULL;
    assert_int_equal(sk_registry_create("127.0.0.1", srv.port, NULL, TIMEOUT_MS, &r), 0);
    return r;
}

/* ---- tests ---- */

static void test_register_and_unregister(void **state)
{
    (void)state;
    sk_registry *r = make();
    assert_int_equal(sk_registry_unregister(r), 0); /* not registered: nothing to do */
    uint64_t t0 = mono_ms();
    assert_int_equal(sk_registry_register(r, "gw-a", "tcp:127.0.0.1:7001", TTL_MS), 0);
    /* returns before Redis is asked (bounded loosely: a thread starts under
     * sanitizers on a loaded machine) */
    assert_true(mono_ms() - t0 < 1000);
    assert_int_equal(sk_registry_register(r, "gw-a", "tcp:127.0.0.1:7001", TTL_MS), -EBUSY);
    assert_true(wait_value("gw-a", "tcp:127.0.0.1:7001", 2000));
    long long pttl = pttl_of("gw-a");
    assert_true(pttl > 0 && pttl <= TTL_MS);
    assert_true(sk_registry_beats(r) >= 1);
    /* a clean stop deletes the key at once, not after the TTL */
    assert_int_equal(sk_registry_unregister(r), 0);
    char v[300];
    assert_string_equal(value_of("gw-a", v, sizeof v), "");
    /* registered again after a stop */
    assert_int_equal(sk_registry_register(r, "gw-a", "unix:/tmp/gw-a.sock", TTL_MS), 0);
    assert_true(wait_value("gw-a", "unix:/tmp/gw-a.sock", 2000));
    sk_registry_destroy(r); /* unregisters */
    assert_string_equal(value_of("gw-a", v, sizeof v), "");
}

static void test_bad_args(void **state)
{
    (void)state;
    sk_registry *r = NULL;
    assert_int_equal(sk_registry_create("127.0.0.1", 0, NULL, TIMEOUT_MS, &r), -EINVAL);
    assert_int_equal(sk_registry_create("127.0.0.1", srv.port, NULL, 0, &r), -EINVAL);
    assert_int_equal(sk_registry_create(NULL, 0, NULL, TIMEOUT_MS, &r), -EINVAL);
    assert_int_equal(sk_registry_create(NULL, 0, "", TIMEOUT_MS, &r), -EINVAL);
    r = make();
    assert_int_equal(sk_registry_register(r, "", "tcp:127.0.0.1:1", TTL_MS), -EINVAL);
    assert_int_equal(sk_registry_register(r, "a b", "tcp:127.0.0.1:1", TTL_MS), -EINVAL);
    assert_int_equal(sk_registry_register(r, "gw", "127.0.0.1:1", TTL_MS), -EINVAL);
    assert_int_equal(sk_registry_register(r, "gw", "tcp:127.0.0.1:1", 29), -EINVAL);
    sk_registry_destroy(r);
    sk_registry_destroy(NULL);
}

/* Beats every ttl/3 keep the key alive well past its TTL. */
static void test_heartbeat_outlives_ttl(void **state)
{
    (void)state;
    sk_registry *r = make();
    assert_int_equal(sk_registry_register(r, "gw-beat", "tcp:127.0.0.1:7002", TTL_MS), 0);
    assert_true(wait_value("gw-beat", "tcp:127.0.0.1:7002", 2000));
    char v[300];
    uint64_t until = mono_ms() + 3 * TTL_MS;
    while (mono_ms() < until) {
        assert_string_equal(value_of("gw-beat", v, sizeof v), "tcp:127.0.0.1:7002");
        sleep_ms(50);
    }
    assert_true(sk_registry_beats(r) >= 6); /* 3 TTLs at ttl/3: about 9 */
    sk_registry_destroy(r);
}

/* A gateway killed without a clean stop: its entry outlives it by at most the
 * TTL, and as it was the last one, the registry's keys expire too. */
static void test_expires_after_kill(void **state)
{
    (void)state;
    raw_cmd("FLUSHALL");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        sk_registry *r = NULL;
        if (sk_registry_create("127.0.0.1", srv.port, NULL, TIMEOUT_MS, &r) < 0 ||
            sk_registry_register(r, "gw-killed", "tcp:127.0.0.1:7003", TTL_MS) < 0)
            _exit(1);
        for (;;)
            pause();
    }
    assert_true(wait_value("gw-killed", "tcp:127.0.0.1:7003", 2000));
    sleep_ms(TTL_MS); /* alive past one TTL: the child's beats */
    char v[300];
    assert_string_equal(value_of("gw-killed", v, sizeof v), "tcp:127.0.0.1:7003");
    kill(pid, SIGKILL);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    uint64_t t0 = mono_ms();
    assert_true(wait_value("gw-killed", "", TTL_MS + 1000));
    printf("entry gone %llu ms after the kill (ttl %d)\n", (unsigned long long)(mono_ms() - t0),
           TTL_MS);
    uint64_t until = mono_ms() + TTL_MS + 1000;
    while (int_reply("EXISTS " SK_REGISTRY_ZSET " " SK_REGISTRY_ADDRS) != 0 && mono_ms() < until)
        sleep_ms(20);
    assert_int_equal(int_reply("EXISTS " SK_REGISTRY_ZSET " " SK_REGISTRY_ADDRS), 0);
}

/* A successor that reused the gateway id keeps its record. */
static void test_unregister_spares_successor(void **state)
{
    (void)state;
    sk_registry *r = make();
    assert_int_equal(sk_registry_register(r, "gw-reused", "tcp:127.0.0.1:7004", 60000), 0);
    assert_true(wait_value("gw-reused", "tcp:127.0.0.1:7004", 2000));
    put("gw-reused", "tcp:127.0.0.1:7005", 60000);
    assert_int_equal(sk_registry_unregister(r), 0);
    char v[300];
    assert_string_equal(value_of("gw-reused", v, sizeof v), "tcp:127.0.0.1:7005");
    raw_cmd("ZREM " SK_REGISTRY_ZSET " gw-reused");
    raw_cmd("HDEL " SK_REGISTRY_ADDRS " gw-reused");
    sk_registry_destroy(r);
}

static int find(const sk_registry_gateway *g, int n, const char *id, const char *addr)
{
    int hits = 0;
    for (int i = 0; i < n; i++)
        hits += !strcmp(g[i].id, id) && !strcmp(g[i].addr, addr);
    return hits;
}

/* list() returns exactly the registered gateways: each once, junk skipped,
 * among unrelated keys; gone ones disappear. */
static void test_list_exactly_live(void **state)
{
    (void)state;
    sk_registry_gateway g[64];
    raw_cmd("FLUSHALL");
    sk_registry *w = make();
    assert_int_equal(sk_registry_list(w, g, 64), 0);

    sk_registry *gw[3];
    const char *ids[3] = {"2b0c6f6e-1d1e-4a55-9f55-000000000001",
                          "2b0c6f6e-1d1e-4a55-9f55-000000000002", "gw-three"};
    const char *addrs[3] = {"tcp:127.0.0.1:7101", "tcp:10.0.0.2:7102", "unix:/run/gw3.sock"};
    for (int i = 0; i < 3; i++) {
        gw[i] = make();
        assert_int_equal(sk_registry_register(gw[i], ids[i], addrs[i], TTL_MS), 0);
        assert_true(wait_value(ids[i], addrs[i], 2000));
    }
    /* not ours, or not valid: skipped */
    put("bad/id", "tcp:127.0.0.1:1", 60000);
    put("junk", "hello", 60000);
    raw_cmd("HSET " SK_REGISTRY_ADDRS " no-score tcp:127.0.0.1:3");
    raw_cmd("ZADD " SK_REGISTRY_ZSET " 99999999999999 no-addr");
    raw_cmd("SET sk:gw:old-style tcp:127.0.0.1:2");
    for (int i = 0; i < 300; i++) /* unrelated keys are never looked at */
        raw_cmd("SET other:%d x", i);

    int n = sk_registry_list(w, g, 64);
    assert_int_equal(n, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(find(g, n, ids[i], addrs[i]), 1);
    assert_int_equal(sk_registry_list(w, g, 2), 2); /* capped */

    /* a clean stop: gone at once */
    sk_registry_destroy(gw[1]);
    n = sk_registry_list(w, g, 64);
    assert_int_equal(n, 2);
    assert_int_equal(find(g, n, ids[0], addrs[0]), 1);
    assert_int_equal(find(g, n, ids[2], addrs[2]), 1);

    /* a gateway that stopped beating: listed until its key expires */
    put("gw-dying", "tcp:127.0.0.1:7104", 300);
    n = sk_registry_list(w, g, 64);
    assert_int_equal(n, 3);
    assert_int_equal(find(g, n, "gw-dying", "tcp:127.0.0.1:7104"), 1);
    assert_true(wait_value("gw-dying", "", 2000));
    n = sk_registry_list(w, g, 64);
    assert_int_equal(n, 2);
    assert_int_equal(find(g, n, "gw-dying", "tcp:127.0.0.1:7104"), 0);

    sk_registry_destroy(gw[0]);
    sk_registry_destroy(gw[2]);
    assert_int_equal(sk_registry_list(w, g, 64), 0);
    sk_registry_destroy(w);
    raw_cmd("FLUSHALL");
}

/* Expired entries are not listed and the next beat removes them from both
 * keys; each key's own TTL follows its longest-lived entry. */
static void test_expired_pruned(void **state)
{
    (void)state;
    sk_registry_gateway g[8];
    raw_cmd("FLUSHALL");
    sk_registry *w = make();
    put("gw-old-1", "tcp:127.0.0.1:7401", -1);
    put("gw-old-2", "tcp:127.0.0.1:7402", -60000);
    assert_int_equal(sk_registry_list(w, g, 8), 0);
    assert_int_equal(int_reply("ZCARD " SK_REGISTRY_ZSET), 2); /* a list only reads */

    sk_registry *r = make();
    assert_int_equal(sk_registry_register(r, "gw-new", "tcp:127.0.0.1:7403", 300), 0);
    assert_true(wait_value("gw-new", "tcp:127.0.0.1:7403", 2000));
    assert_int_equal(int_reply("ZCARD " SK_REGISTRY_ZSET), 1);
    assert_int_equal(int_reply("HLEN " SK_REGISTRY_ADDRS), 1);
    assert_int_equal(sk_registry_list(w, g, 8), 1);
    assert_string_equal(g[0].id, "gw-new");
    /* each key's TTL covers its longest entry, no more than a TTL ahead */
    long long kttl = int_reply("PTTL " SK_REGISTRY_ZSET);
    assert_true(kttl > 0 && kttl <= 300);
    assert_true(int_reply("PTTL " SK_REGISTRY_ADDRS) > 0);

    /* a long-lived neighbour keeps the keys alive past the short one */
    sk_registry *l = make();
    assert_int_equal(sk_registry_register(l, "gw-long", "tcp:127.0.0.1:7404", 60000), 0);
    uint64_t until = mono_ms() + 5000;
    while (int_reply("PTTL " SK_REGISTRY_ZSET) <= 300 && mono_ms() < until)
        sleep_ms(10);
    assert_true(int_reply("PTTL " SK_REGISTRY_ZSET) > 300);
    sk_registry_destroy(l);

    sk_registry_destroy(r);
    assert_int_equal(sk_registry_list(w, g, 8), 0);
    sk_registry_destroy(w);
    raw_cmd("FLUSHALL");
}

/* Many gateways: all in one sorted set and one hash (two keys in all),
 * each listed once; cap bounds the answer; removals are exact. */
static void test_many_gateways(void **state)
{
    (void)state;
    enum { N = 100 };
    static sk_registry *gw[N];
    static sk_registry_gateway g[N + 8];
    char id[32], addr[64];
    raw_cmd("FLUSHALL");
    sk_registry *w = make();
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "gw-many-%03d", i);
        snprintf(addr, sizeof addr, "tcp:127.0.0.1:%d", 20000 + i);
        gw[i] = make();
        assert_int_equal(sk_registry_register(gw[i], id, addr, 3000), 0);
    }
    uint64_t until = mono_ms() + 10000;
    int n = 0;
    while ((n = sk_registry_list(w, g, N + 8)) != N && mono_ms() < until)
        sleep_ms(20);
    assert_int_equal(n, N);
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "gw-many-%03d", i);
        snprintf(addr, sizeof addr, "tcp:127.0.0.1:%d", 20000 + i);
        assert_int_equal(find(g, n, id, addr), 1);
    }
    assert_int_equal(sk_registry_list(w, g, 64), 64);
    assert_int_equal(int_reply("DBSIZE"), 2);
    for (int i = 0; i < N; i += 2)
        sk_registry_destroy(gw[i]);
    n = sk_registry_list(w, g, N + 8);
    assert_int_equal(n, N / 2);
    for (int i = 1; i < N; i += 2) {
        snprintf(id, sizeof id, "gw-many-%03d", i);
        snprintf(addr, sizeof addr, "tcp:127.0.0.1:%d", 20000 + i);
        assert_int_equal(find(g, n, id, addr), 1);
        sk_registry_destroy(gw[i]);
    }
    assert_int_equal(sk_registry_list(w, g, N + 8), 0);
    sk_registry_destroy(w);
}

/* Redis goes away: list() fails fast (the caller keeps what it knew), the
 * heartbeat keeps trying and registers again once Redis is back. */
static void test_redis_down_and_back(void **state)
{
    (void)state;
    sk_registry_gateway g[8];
    sk_registry *r = make(), *w = make();
    assert_int_equal(sk_registry_register(r, "gw-phoenix", "tcp:127.0.0.1:7201", TTL_MS), 0);
    assert_true(wait_value("gw-phoenix", "tcp:127.0.0.1:7201", 2000));
    assert_int_equal(sk_registry_list(w, g, 8), 1);

    redis_server_stop(&srv);
    uint64_t t0 = mono_ms();
    int rc = sk_registry_list(w, g, 8);
    assert_true(rc < 0);
    assert_true(mono_ms() - t0 < 2 * TIMEOUT_MS + 500);
    uint64_t beats = sk_registry_beats(r);
    sleep_ms(TTL_MS); /* a few failed beats: logged once, no crash */
    assert_int_equal(sk_registry_beats(r), beats);

    assert_int_equal(redis_server_restart(&srv), 0);
    raw_cmd("ZREM " SK_REGISTRY_ZSET " gw-phoenix"); /* whatever the AOF kept */
    assert_true(wait_value("gw-phoenix", "tcp:127.0.0.1:7201", TTL_MS + 2000));
    assert_true(sk_registry_beats(r) > beats);
    assert_int_equal(sk_registry_list(w, g, 8), 1);
    sk_registry_destroy(r);
    assert_int_equal(sk_registry_list(w, g, 8), 0);
    sk_registry_destroy(w);
}

/* No Redis at all: register still returns at once; unregister reports that
 * it could not delete, within the timeout. */
static void test_no_redis(void **state)
{
    (void)state;
    sk_registry *r = NULL;
    int port = srv.port == 65535 ? 1 : srv.port + 1; /* most likely nobody listens */
    assert_int_equal(sk_registry_create("127.0.0.1", port, NULL, 200, &r), 0);
    uint64_t t0 = mono_ms();
    assert_int_equal(sk_registry_register(r, "gw-alone", "tcp:127.0.0.1:7301", 300), 0);
    assert_true(mono_ms() - t0 < 1000);
    sleep_ms(300);
    assert_int_equal(sk_registry_beats(r), 0);
    t0 = mono_ms();
    assert_true(sk_registry_unregister(r) < 0);
    assert_true(mono_ms() - t0 < 2 * 200 + 500);
    sk_registry_destroy(r);
}

/* ---- on a Redis Cluster ---- */

static redis_cluster cl;
static char cl_nodes[512];

static sk_registry *make_on_cluster(void)
{
    sk_registry *r = NULL;
    assert_int_equal(sk_registry_create(NULL, 0, cl_nodes, TIMEOUT_MS, &r), 0);
    return r;
}

/* Wait up to ms for list to return exactly want gateways (failures, as
 * during a failover, count as not yet). The last count, or the error. */
static int wait_listed(sk_registry *w, sk_registry_gateway *g, size_t cap, int want, long ms)
{
    uint64_t until = mono_ms() + (uint64_t)ms;
    int n;
    while ((n = sk_registry_list(w, g, cap)) != want && mono_ms() < until)
        sleep_ms(20);
    return n;
}

/* The address of id in the hash, asked of the master that owns the
 * registry's slot now: a MOVED error (the record elsewhere) fails. */
static void assert_on_slot_master(const char *id, const char *want)
{
    unsigned slot = sk_cluster_slot(SK_REGISTRY_ZSET, strlen(SK_REGISTRY_ZSET));
    assert_int_equal(slot, sk_cluster_slot(SK_REGISTRY_ADDRS, strlen(SK_REGISTRY_ADDRS)));
    int m = redis_cluster_master_of(&cl, slot);
    assert_true(m >= 0);
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", cl.node[m].port, tv);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    redisReply *rep = redisCommand(c, "HGET " SK_REGISTRY_ADDRS " %s", id);
    assert_non_null(rep);
    assert_int_equal(rep->type, REDIS_REPLY_STRING);
    assert_string_equal(rep->str, want);
    freeReplyObject(rep);
    redisFree(c);
}

/* Two gateways (one in a child process) found by a worker through the
 * cluster; the SIGKILLed one gone after its TTL; the survivor's heartbeat
 * follows the registry's slot to the replica promoted when its master dies. */
static void test_cluster_discovery(void **state)
{
    (void)state;
    sk_registry_gateway g[8];
    /* the child first, while this process has one thread: a fork taken
     * while a heartbeat thread holds a lock (the resolver's, the
     * allocator's) leaves that lock held for ever in the child */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed assertion must not leave it beating */
        sk_registry *b = NULL;
        if (sk_registry_create(NULL, 0, cl_nodes, TIMEOUT_MS, &b) < 0 ||
            sk_registry_register(b, "gw-c-b", "tcp:127.0.0.1:7402", TTL_MS) < 0)
            _exit(1);
        for (;;)
            pause();
    }
    sk_registry *w = make_on_cluster(), *a = make_on_cluster();
    assert_int_equal(sk_registry_register(a, "gw-c-a", "tcp:127.0.0.1:7401", TTL_MS), 0);
    assert_int_equal(wait_listed(w, g, 8, 2, 5000), 2);
    assert_int_equal(find(g, 2, "gw-c-a", "tcp:127.0.0.1:7401"), 1);
    assert_int_equal(find(g, 2, "gw-c-b", "tcp:127.0.0.1:7402"), 1);
    assert_on_slot_master("gw-c-a", "tcp:127.0.0.1:7401");
    assert_on_slot_master("gw-c-b", "tcp:127.0.0.1:7402");
    sleep_ms(TTL_MS); /* alive past one TTL: the beats */
    assert_int_equal(sk_registry_list(w, g, 8), 2);

    kill(pid, SIGKILL);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    uint64_t t0 = mono_ms();
    assert_int_equal(wait_listed(w, g, 8, 1, TTL_MS + 2000), 1);
    printf("cluster: gw-c-b gone %llu ms after the kill (ttl %d)\n",
           (unsigned long long)(mono_ms() - t0), TTL_MS);
    assert_int_equal(find(g, 1, "gw-c-a", "tcp:127.0.0.1:7401"), 1);

    /* the registry's master dies: its replica takes the slot over */
    unsigned slot = sk_cluster_slot(SK_REGISTRY_ZSET, strlen(SK_REGISTRY_ZSET));
    int m = redis_cluster_master_of(&cl, slot);
    assert_true(m >= 0);
    redis_cluster_kill(&cl, m);
    assert_int_equal(redis_cluster_wait_ok(&cl, 30000), 0);
    int m2 = redis_cluster_master_of(&cl, slot);
    assert_true(m2 >= 0 && m2 != m);
    uint64_t beats = sk_registry_beats(a);
    uint64_t until = mono_ms() + 30000;
    while (sk_registry_beats(a) < beats + 2 && mono_ms() < until)
        sleep_ms(20);
    assert_true(sk_registry_beats(a) >= beats + 2);
    assert_int_equal(wait_listed(w, g, 8, 1, 5000), 1);
    assert_int_equal(find(g, 1, "gw-c-a", "tcp:127.0.0.1:7401"), 1);
    assert_on_slot_master("gw-c-a", "tcp:127.0.0.1:7401");

    sk_registry_destroy(a); /* unregisters on the new master */
    assert_int_equal(sk_registry_list(w, g, 8), 0);
    sk_registry_destroy(w);
}

/* No cluster answers (the seed accepts connections and never replies):
 * register returns at once, list and unregister fail within the timeouts. */
static void test_cluster_unreachable(void **state)
{
    (void)state;
    sk_registry *r = NULL;
    sk_registry_gateway g[2];
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t slen = sizeof sa;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &slen), 0);
    char seeds[64];
    snprintf(seeds, sizeof seeds, "127.0.0.1:%d", ntohs(sa.sin_port));
    assert_int_equal(sk_registry_create(NULL, 0, seeds, 200, &r), 0);
    uint64_t t0 = mono_ms();
    assert_int_equal(sk_registry_register(r, "gw-lost", "tcp:127.0.0.1:7501", 300), 0);
    assert_true(mono_ms() - t0 < 1000);
    t0 = mono_ms();
    assert_true(sk_registry_list(r, g, 2) < 0);
    assert_true(sk_registry_unregister(r) < 0);
    assert_true(mono_ms() - t0 < 4 * 200 + 1000);
    assert_int_equal(sk_registry_beats(r), 0);
    sk_registry_destroy(r);
    close(fd);
}

static int cluster_setup(void **state)
{
    (void)state;
    return redis_cluster_setup(&cl, 1000, cl_nodes, sizeof cl_nodes);
}

static int cluster_teardown(void **state)
{
    (void)state;
    redis_cluster_destroy(&cl);
    return 0;
}

static int group_setup(void **state)
{
    (void)state;
    return redis_server_setup(&srv);
}

static int group_teardown(void **state)
{
    (void)state;
    redis_server_destroy(&srv);
    return 0;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* see registry.h */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_register_and_unregister),
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_heartbeat_outlives_ttl),
        cmocka_unit_test(test_expires_after_kill),
        cmocka_unit_test(test_unregister_spares_successor),
        cmocka_unit_test(test_list_exactly_live),
        cmocka_unit_test(test_expired_pruned),
        cmocka_unit_test(test_many_gateways),
        cmocka_unit_test(test_redis_down_and_back),
        cmocka_unit_test(test_no_redis),
    };
    const struct CMUnitTest cluster_tests[] = {
        cmocka_unit_test(test_cluster_discovery),
        cmocka_unit_test(test_cluster_unreachable),
    };
    int failed = cmocka_run_group_tests_name("single redis", tests, group_setup, group_teardown);
    failed += cmocka_run_group_tests_name("redis cluster", cluster_tests, cluster_setup,
                                          cluster_teardown);
    return failed;
}
