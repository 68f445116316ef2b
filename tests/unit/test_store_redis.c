/*
 * test_store_redis.c - the Redis backend against a real redis-server
 * (started here on a free port, AOF on; see tests/redis_server.h). Each test
 * uses its own item ids, so tests share the server without sharing keys.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uuid/uuid.h>

#include "store.h"
#include "sale/store_redis.h"
#include "tests/redis_server.h"
#include "tests/test_time.h"

/* Handles of the fault tests time out quickly; the others get a generous
 * timeout, as fsync-always AOF on a loaded machine can stall a reply. */
#define TIMEOUT_MS 200
#define SLOW_OK_MS 5000

static redis_server srv;

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- direct Redis access, to look behind the backend ---- */

static redisContext *raw(void)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", srv.port, tv);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    redisSetTimeout(c, tv);
    return c;
}

static long long raw_int(const char *fmt, const char *arg)
{
    redisContext *c = raw();
    redisReply *rep = redisCommand(c, fmt, arg);
    assert_non_null(rep);
    long long v = rep->type == REDIS_REPLY_INTEGER  ? rep->integer
                  : rep->type == REDIS_REPLY_STRING ? atoll(rep->str)
                  : rep->type == REDIS_REPLY_NIL    ? -1
                                                    : -2;
    freeReplyObject(rep);
    redisFree(c);
    return v;
}

static long long xlen(const char *item)
{
    char k[128];
    snprintf(k, sizeof k, "sk:{%s}:events", item);
    return raw_int("XLEN %s", k);
}

/* orders of item whose record starts with state */
static int orders_in(const char *item, const char *state)
{
    char k[128];
    int n = 0;
    snprintf(k, sizeof k, "sk:{%s}:orders", item);
    redisContext *c = raw();
    redisReply *rep = redisCommand(c, "HVALS %s", k);
    assert_non_null(rep);
    assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
    for (size_t i = 0; i < rep->elements; i++)
        n += strncmp(rep->element[i]->str, state, strlen(state)) == 0 &&
             rep->element[i]->str[strlen(state)] == '|';
    freeReplyObject(rep);
    redisFree(c);
    return n;
}

/* ---- batches ---- */

typedef struct batch {
    size_t n;
    sk_decide reqs[512];
    uint8_t rids[512][16];
    char users[512][16];
    sk_outcome outs[512];
    int64_t left[512];
} batch;

static void batch_add(batch *b, const char *item, const char *user, enum sk_result verdict)
{
    size_t i = b->n++;
    assert_true(i < 512);
    uuid_generate_random(b->rids[i]);
    snprintf(b->users[i], sizeof b->users[i], "%s", user);
    b->reqs[i] = (sk_decide){
        .item_id = item, .user_id = b->users[i], .request_id = b->rids[i], .verdict = verdict};
}

static int decide(sk_redis *r, batch *b)
{
    sk_backend be = sk_redis_backend(r);
    memset(b->outs, 0, sizeof b->outs);
    return be.decide(be.impl, b->reqs, b->n, b->outs, b->left);
}

static sk_redis *make_t(const char *item, int64_t stock, uint32_t limit, uint32_t pay_ms,
                        uint32_t timeout_ms)
{
    sk_redis_item it = {
        .id = item, .stock = stock, .per_user_limit = limit, .pay_timeout_ms = pay_ms};
    sk_redis *r = NULL;
    assert_int_equal(sk_redis_create("127.0.0.1", srv.port, timeout_ms, &it, 1, &r), 0);
    return r;
}

static sk_redis *make(const char *item, int64_t stock, uint32_t limit, uint32_t pay_ms)
{
    return make_t(item, stock, limit, pay_ms, SLOW_OK_MS);
}

/* ---- tests ---- */

static void test_batch_semantics(void **state)
{
    (void)state;
    sk_redis *r = make("bs", 10, 1, 60000);
    static batch b;
    b.n = 0;
    char u[16];
    for (int i = 0; i < 30; i++) {
        snprintf(u, sizeof u, "u%d", i % 20);
        batch_add(&b, "bs", u, SK_SUCCESS);
        if (i % 10 == 0)
            batch_add(&b, "nosuch", u, SK_SUCCESS); /* another group, never sent */
    }
    assert_int_equal(decide(r, &b), 0);

    int success = 0, sold_out = 0, already = 0;
    char order_of[20][SK_ORDER_ID_MAX + 1] = {{0}};
    for (size_t i = 0; i < b.n; i++) {
        if (strcmp(b.reqs[i].item_id, "nosuch") == 0) {
            assert_int_equal(b.outs[i].result, SK_UNKNOWN_ITEM);
            assert_int_equal(b.left[i], -1);
            continue;
        }
        int user = atoi(b.users[i] + 1);
        switch (b.outs[i].result) {
        case SK_SUCCESS:
            success++;
            assert_int_equal(strlen(b.outs[i].order_id), 36);
            assert_int_equal(order_of[user][0], '\0'); /* once per user */
            strcpy(order_of[user], b.outs[i].order_id);
            assert_int_equal(b.left[i], 10 - success);
            break;
        case SK_SOLD_OUT:
            sold_out++;
            assert_string_equal(b.outs[i].order_id, "");
            assert_int_equal(b.left[i], 0);
            break;
        case SK_ALREADY_PURCHASED:
            already++;
            assert_string_equal(b.outs[i].order_id, order_of[user]);
            break;
        default:
            fail_msg("unexpected result %d", b.outs[i].result);
        }
    }
    /* users u0..u9 buy; u10..u19 find it sold out; u0..u9 again hit the limit */
    assert_int_equal(success, 10);
    assert_int_equal(sold_out, 10);
    assert_int_equal(already, 10);
    assert_int_equal(sk_redis_left(r, "bs"), 0);
    assert_int_equal(xlen("bs"), 10);
    assert_int_equal(orders_in("bs", "reserved"), 10);

    sk_redis_order o;
    for (int u2 = 0; u2 < 10; u2++) {
        assert_int_equal(sk_redis_order_get(r, "bs", order_of[u2], &o), 0);
        assert_int_equal(o.state, SK_ORDER_RESERVED);
        snprintf(u, sizeof u, "u%d", u2);
        assert_string_equal(o.user_id, u);
        assert_string_equal(o.item_id, "bs");
        assert_true(o.pay_deadline_ms == o.created_ms + 60000);
    }

    /* idempotent replay: the same batch again answers the same */
    static sk_outcome first[512];
    memcpy(first, b.outs, sizeof first);
    assert_int_equal(decide(r, &b), 0);
    for (size_t i = 0; i < b.n; i++) {
        assert_int_equal(b.outs[i].result, first[i].result);
        assert_string_equal(b.outs[i].order_id, first[i].order_id);
    }
    assert_int_equal(sk_redis_left(r, "bs"), 0);
    assert_int_equal(xlen("bs"), 10);
    assert_int_equal(orders_in("bs", "reserved"), 10);
    sk_redis_destroy(r);
}

/* A buyer several times in one batch counts each purchase against the
 * limit, and a request id twice in one batch answers one decision. */
static void test_batch_repeats(void **state)
{
    (void)state;
    sk_redis *r = make("br", 10, 2, 60000);
    static batch b;
    b.n = 0;
    for (int i = 0; i < 3; i++)
        batch_add(&b, "br", "a", SK_SUCCESS);
    batch_add(&b, "br", "b", SK_SUCCESS);
    batch_add(&b, "br", "b", SK_SUCCESS);
    batch_add(&b, "br", "c", SK_SUCCESS);
    memcpy(b.rids[5], b.rids[3], 16); /* c's request is b's first again */
    assert_int_equal(decide(r, &b), 0);
    assert_int_equal(b.outs[0].result, SK_SUCCESS);
    assert_int_equal(b.outs[1].result, SK_SUCCESS);
    assert_int_equal(b.outs[2].result, SK_ALREADY_PURCHASED);
    assert_string_equal(b.outs[2].order_id, b.outs[1].order_id);
    assert_int_equal(b.outs[3].result, SK_SUCCESS);
    assert_int_equal(b.outs[4].result, SK_SUCCESS);
    assert_int_equal(b.outs[5].result, SK_SUCCESS);
    assert_string_equal(b.outs[5].order_id, b.outs[3].order_id);
    assert_int_equal(b.left[4], 6);
    assert_int_equal(b.left[5], 6);
    assert_int_equal(sk_redis_left(r, "br"), 6);
    assert_int_equal(xlen("br"), 4);
    assert_int_equal(orders_in("br", "reserved"), 4);
    assert_int_equal(raw_int("HLEN %s", "sk:{br}:users"), 2);
    /* a's count is 2 and b's too: a third of either is refused next batch */
    b.n = 0;
    batch_add(&b, "br", "a", SK_SUCCESS);
    batch_add(&b, "br", "b", SK_SUCCESS);
    assert_int_equal(decide(r, &b), 0);
    assert_int_equal(b.outs[0].result, SK_ALREADY_PURCHASED);
    assert_int_equal(b.outs[1].result, SK_ALREADY_PURCHASED);
    assert_int_equal(sk_redis_left(r, "br"), 6);
    sk_redis_destroy(r);
}

/* A batch of 2,500 (the worker's batch goes up to 4,096) in one script
 * call: every request decided once, in order, the stock exact. */
static void test_batch_large(void **state)
{
    (void)state;
    enum { N = 2500, STOCK = 2200 };
    sk_redis *r = make("bl", STOCK, 1, 60000);
    sk_decide *reqs = calloc(N, sizeof *reqs);
    uint8_t(*rids)[16] = calloc(N, 16);
    char(*users)[16] = calloc(N, 16);
    sk_outcome *outs = calloc(N, sizeof *outs);
    int64_t *left = calloc(N, sizeof *left);
    assert_true(reqs && rids && users && outs && left);
    for (int i = 0; i < N; i++) {
        uuid_generate_random(rids[i]);
        snprintf(users[i], 16, "u%d", i);
        reqs[i] = (sk_decide){.item_id = "bl", .user_id = users[i], .request_id = rids[i],
                              .verdict = SK_SUCCESS};
    }
    sk_backend be = sk_redis_backend(r);
    assert_int_equal(be.decide(be.impl, reqs, N, outs, left), 0);
    int success = 0;
    for (int i = 0; i < N; i++)
        success += outs[i].result == SK_SUCCESS;
    assert_int_equal(success, STOCK);
    assert_int_equal(outs[STOCK - 1].result, SK_SUCCESS);
    assert_int_equal(outs[STOCK].result, SK_SOLD_OUT);
    assert_int_equal(sk_redis_left(r, "bl"), 0);
    assert_int_equal(xlen("bl"), STOCK);
    assert_int_equal(orders_in("bl", "reserved"), STOCK);
    assert_int_equal(raw_int("HLEN %s", "sk:{bl}:users"), STOCK);
    /* the events stream is the reaper's deadline index: no sorted set */
    assert_int_equal(raw_int("ZCARD %s", "sk:{bl}:deadlines"), 0);
    free(reqs), free(rids), free(users), free(outs), free(left);
    sk_redis_destroy(r);
}

/* min_replicas_ack with no replica: the batch runs on the master, yet the
 * decide call fails (-ETIMEDOUT) and is counted; the decisions are stored,
 * so deciding the same batch again (here with the wait off, as if the
 * replica had caught up) answers the same, and nothing is bought twice. */
static void test_replica_ack_short(void **state)
{
    (void)state;
    sk_redis *r = make("ra", 5, 1, 60000);
    static batch b;
    b.n = 0;
    batch_add(&b, "ra", "ra-1", SK_SUCCESS);
    batch_add(&b, "ra", "ra-2", SK_SUCCESS);
    sk_redis_set_replica_ack(r, 1, 50);
    assert_int_equal(sk_redis_replica_ack_timeouts(r), 0);
    uint64_t t0 = mono_ms();
    assert_int_equal(decide(r, &b), -ETIMEDOUT);
    assert_true(mono_ms() - t0 >= 50); /* WAIT waited its timeout */
    assert_int_equal(sk_redis_replica_ack_timeouts(r), 1);
    assert_int_equal(sk_redis_left(r, "ra"), 3); /* it ran on the master */
    /* a retry of the same requests: the stored decisions, read back with a
     * write (their TTL refreshed), so the WAIT covers them: still short */
    assert_int_equal(decide(r, &b), -ETIMEDOUT);
    assert_int_equal(sk_redis_replica_ack_timeouts(r), 2);
    sk_redis_set_replica_ack(r, 0, 0);
    assert_int_equal(decide(r, &b), 0);
    for (size_t i = 0; i < b.n; i++) {
        assert_int_equal(b.outs[i].result, SK_SUCCESS);
        assert_int_equal(strlen(b.outs[i].order_id), 36);
    }
    assert_int_equal(sk_redis_left(r, "ra"), 3);
    assert_int_equal(orders_in("ra", "reserved"), 2);
    /* WAIT 0 is met at once: a batch answers as without the option */
    sk_redis_set_replica_ack(r, 0, 50);
    b.n = 0;
    batch_add(&b, "ra", "ra-3", SK_SUCCESS);
    assert_int_equal(decide(r, &b), 0);
    assert_int_equal(b.outs[0].result, SK_SUCCESS);
    assert_int_equal(sk_redis_replica_ack_timeouts(r), 2);
    sk_redis_destroy(r);
}

static void test_verdicts_recorded(void **state)
{
    (void)state;
    sk_redis *r = make("vd", 5, 1, 60000);
    static batch b;
    b.n = 0;
    batch_add(&b, "vd", "a", SK_EXPIRED);
    batch_add(&b, "vd", "b", SK_BLOCKED);
    batch_add(&b, "vd", "c", SK_NOT_STARTED);
    batch_add(&b, "vd", "d", SK_ENDED);
    batch_add(&b, "vd", "e", SK_SUCCESS);
    assert_int_equal(decide(r, &b), 0);
    assert_int_equal(b.outs[0].result, SK_EXPIRED);
    assert_int_equal(b.outs[1].result, SK_BLOCKED);
    assert_int_equal(b.outs[2].result, SK_NOT_STARTED);
    assert_int_equal(b.outs[3].result, SK_ENDED);
    assert_int_equal(b.outs[4].result, SK_SUCCESS);
    char order[SK_ORDER_ID_MAX + 1];
    strcpy(order, b.outs[4].order_id);
    assert_int_equal(sk_redis_left(r, "vd"), 4);

    /* redelivered with other verdicts: the stored decisions answer */
    for (size_t i = 0; i < 4; i++)
        b.reqs[i].verdict = SK_SUCCESS;
    b.reqs[4].verdict = SK_EXPIRED;
    assert_int_equal(decide(r, &b), 0);
    assert_int_equal(b.outs[0].result, SK_EXPIRED);
    assert_int_equal(b.outs[1].result, SK_BLOCKED);
    assert_int_equal(b.outs[2].result, SK_NOT_STARTED);
    assert_int_equal(b.outs[3].result, SK_ENDED);
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(b.outs[i].order_id, "");
    assert_int_equal(b.outs[4].result, SK_SUCCESS);
    assert_string_equal(b.outs[4].order_id, order);
    assert_int_equal(sk_redis_left(r, "vd"), 4);
    assert_int_equal(xlen("vd"), 1);

    /* the decision keys expire (bounded memory) */
    char rid[37], k[128];
    uuid_unparse_lower(b.rids[0], rid);
    snprintf(k, sizeof k, "sk:{vd}:req:%s", rid);
    long long ttl = raw_int("PTTL %s", k);
    assert_true(ttl > 0 && ttl <= SK_REDIS_DECISION_TTL_MS);
    sk_redis_destroy(r);
}

typedef struct conc {
    sk_redis *r;
    int t;
    int success;
    int err;
    char (*orders)[SK_ORDER_ID_MAX + 1];
} conc;

#define CONC_THREADS 8
#define CONC_REQS 4000
#define CONC_USERS 2000

static void *conc_main(void *arg)
{
    conc *c = arg;
    batch *b = calloc(1, sizeof *b);
    int per = CONC_REQS / CONC_THREADS;
    for (int done = 0; done < per && !c->err; done += 50) {
        b->n = 0;
        char u[16];
        for (int k = 0; k < 50; k++) {
            snprintf(u, sizeof u, "u%d", (c->t * per + done + k) % CONC_USERS);
            batch_add(b, "cc", u, SK_SUCCESS);
        }
        int rc = decide(c->r, b);
        if (rc < 0) {
            c->err = rc;
            break;
        }
        for (size_t i = 0; i < b->n; i++)
            if (b->outs[i].result == SK_SUCCESS)
                strcpy(c->orders[c->success++], b->outs[i].order_id);
    }
    free(b);
    return NULL;
}

static void test_concurrent_never_oversells(void **state)
{
    (void)state;
    sk_redis *r = make("cc", 500, 1, 60000);
    pthread_t th[CONC_THREADS];
    conc cs[CONC_THREADS];
    char(*orders)[SK_ORDER_ID_MAX + 1] = calloc(CONC_THREADS * 600, sizeof *orders);
    assert_non_null(orders);
    for (int t = 0; t < CONC_THREADS; t++) {
        cs[t] = (conc){.r = r, .t = t, .orders = orders + t * 600};
        assert_int_equal(pthread_create(&th[t], NULL, conc_main, &cs[t]), 0);
    }
    int total = 0;
    for (int t = 0; t < CONC_THREADS; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(cs[t].err, 0);
        total += cs[t].success;
    }
    assert_int_equal(total, 500);
    assert_int_equal(sk_redis_left(r, "cc"), 0);
    assert_int_equal(xlen("cc"), 500);
    assert_int_equal(orders_in("cc", "reserved"), 500);
    /* limit 1: 500 distinct buyers */
    assert_int_equal(raw_int("HLEN %s", "sk:{cc}:users"), 500);
    free(orders);
    sk_redis_destroy(r);
}

/* A reload raises the stock through the store interface: two processes
 * (two stores) reloading the same file add the difference once. */
static void test_raise_stock_once(void **state)
{
    (void)state;
    static const sale_store_item it[] = {{"rs", 10, 5}};
    sale_store_config c = {.backend = "redis", .name = "test", .items = it, .nitems = 1,
                           .pay_timeout_ms = 60000, .redis_host = "127.0.0.1",
                           .redis_port = srv.port, .redis_timeout_ms = SLOW_OK_MS,
                           .redis_patience_ms = 5000};
    sale_store *a = NULL, *b = NULL;
    char err[256];
    assert_int_equal(sale_store_create(&c, &a, err, sizeof err), 0);
    assert_int_equal(sale_store_create(&c, &b, err, sizeof err), 0);
    assert_int_equal(sale_store_left(a, 0), 10);
    assert_int_equal(sale_store_raise_stock(a, 0, 15), 5);
    assert_int_equal(sale_store_raise_stock(b, 0, 15), 0); /* the same file, once */
    assert_int_equal(sale_store_left(b, 0), 15);
    assert_int_equal(sale_store_raise_stock(b, 0, 12), 0); /* no decrease */
    assert_int_equal(sale_store_raise_stock(b, 0, 20), 5);
    assert_int_equal(sale_store_left(a, 0), 20);
    sale_store_destroy(a);
    sale_store_destroy(b);
}

static void test_preheat_nx(void **state)
{
    (void)state;
    sk_redis *r = make("nx", 10, 5, 60000);
    static batch b;
    b.n = 0;
    for (int i = 0; i < 3; i++)
        batch_add(&b, "nx", "a", SK_SUCCESS);
    assert_int_equal(decide(r, &b), 0);
    assert_int_equal(sk_redis_left(r, "nx"), 7);
    sk_redis_destroy(r);

    /* a restarted worker with (even different) config continues the sale */
    r = make("nx", 100, 5, 60000);
    assert_int_equal(sk_redis_left(r, "nx"), 7);
    sk_backend be = sk_redis_backend(r);
    assert_true(be.known(be.impl, "nx"));
    assert_false(be.known(be.impl, "other"));
    sk_redis_destroy(r);
}

static void test_missing_stock_key(void **state)
{
    (void)state;
    sk_redis *r = make("ms", 10, 1, 60000);
    assert_int_equal(raw_int("DEL %s", "sk:{ms}:stock"), 1);
    static batch b;
    b.n = 0;
    batch_add(&b, "ms", "a", SK_SUCCESS);
    batch_add(&b, "ms", "b", SK_EXPIRED);
    assert_int_equal(decide(r, &b), -ENOENT); /* defined, not a Lua error (-EIO) */
    assert_int_equal(sk_redis_left(r, "ms"), -ENOENT);
    assert_int_equal(raw_int("EXISTS %s", "sk:{ms}:stock"), 0); /* nothing recreated it */
    assert_int_equal(xlen("ms"), 0);
    char rid[37], k[128];
    uuid_unparse_lower(b.rids[1], rid);
    snprintf(k, sizeof k, "sk:{ms}:req:%s", rid);
    assert_int_equal(raw_int("EXISTS %s", k), 0); /* nothing decided */
    /* the connection is still usable */
    assert_int_equal(sk_redis_ping(r), 0);
    sk_redis_destroy(r);
}

/* ---- hash tags ---- */

typedef struct monitor {
    redisContext *c;
    pthread_t th;
    int lines, bad, scripts;
    char first_bad[512];
} monitor;

/* Every "sk:..." token of every command Redis ran (scripts' inner calls
 * included) must carry the {ht} hash tag. */
static void *monitor_main(void *arg)
{
    monitor *m = arg;
    void *v;
    while (redisGetReply(m->c, &v) == REDIS_OK) {
        redisReply *rep = v;
        if (rep->type == REDIS_REPLY_STATUS) {
            const char *s = rep->str;
            if (strstr(s, "\"ECHO\" \"monitor-end\"")) {
                freeReplyObject(rep);
                break;
            }
            if (strstr(s, "\"EVALSHA\"") || strstr(s, "\"EVAL\""))
                m->scripts++;
            m->lines++;
            for (const char *p = strstr(s, "\"sk:"); p; p = strstr(p + 1, "\"sk:"))
                if (strncmp(p, "\"sk:{ht}:", 9) != 0 && !m->bad++)
                    snprintf(m->first_bad, sizeof m->first_bad, "%s", s);
        }
        freeReplyObject(rep);
    }
    return NULL;
}

static int count_event(void *arg, const sk_redis_event *ev)
{
    (void)ev;
    (*(int *)arg)++;
    return 0;
}

static void test_hash_tags(void **state)
{
    (void)state;
    monitor m = {.c = raw()};
    struct timeval tv = {5, 0};
    redisSetTimeout(m.c, tv);
    redisReply *rep = redisCommand(m.c, "MONITOR");
    assert_non_null(rep);
    freeReplyObject(rep);
    assert_int_equal(pthread_create(&m.th, NULL, monitor_main, &m), 0);

    sk_redis *r = make("ht", 3, 1, 1000);
    static batch b;
    b.n = 0;
    batch_add(&b, "ht", "a", SK_SUCCESS);
    batch_add(&b, "ht", "b", SK_SUCCESS);
    batch_add(&b, "ht", "c", SK_EXPIRED);
    assert_int_equal(decide(r, &b), 0);
    assert_int_equal(sk_redis_order_pay(r, "ht", b.outs[0].order_id, wall_ms()), 0);
    assert_int_equal(sk_redis_reap(r, wall_ms() + 5000), 1);
    sk_redis_order o;
    assert_int_equal(sk_redis_order_get(r, "ht", b.outs[1].order_id, &o), 0);
    assert_int_equal(sk_redis_left(r, "ht"), 2);
    int nev = 0;
    /* reserved a, reserved b, paid a, cancelled b */
    assert_int_equal(sk_redis_events_read(r, "ht", "g", "c1", 10, 0, count_event, &nev), 4);
    sk_redis_destroy(r);

    redisContext *c = raw();
    rep = redisCommand(c, "ECHO monitor-end");
    freeReplyObject(rep);
    redisFree(c);
    pthread_join(m.th, NULL);
    redisFree(m.c);
    assert_true(m.scripts >= 3);
    if (m.bad)
        fail_msg("%d commands with an untagged key, first: %s", m.bad, m.first_bad);

    /* and every key in the server, from any test so far, is tagged */
    c = raw();
    char cursor[32] = "0";
    int keys = 0;
    do {
        rep = redisCommand(c, "SCAN %s COUNT 1000", cursor);
        assert_non_null(rep);
        assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
        snprintf(cursor, sizeof cursor, "%s", rep->element[0]->str);
        for (size_t i = 0; i < rep->element[1]->elements; i++) {
            const char *k = rep->element[1]->element[i]->str;
            const char *close = strstr(k, "}:");
            if (strncmp(k, "sk:{", 4) != 0 || !close || close == k + 4)
                fail_msg("key without an item hash tag: %s", k);
            keys++;
        }
        freeReplyObject(rep);
    } while (strcmp(cursor, "0") != 0);
    redisFree(c);
    assert_true(keys > 0);
}

/* ---- Redis down, slow, restarted ---- */

static void test_redis_down_and_back(void **state)
{
    (void)state;
    sk_redis *r = make_t("dn", 100, 1, 60000, TIMEOUT_MS);
    static batch b;
    b.n = 0;
    batch_add(&b, "dn", "a", SK_SUCCESS);
    assert_int_equal(decide(r, &b), 0);
    assert_int_equal(b.outs[0].result, SK_SUCCESS);
    assert_int_equal(sk_redis_left(r, "dn"), 99);

    /* stopped: fails fast, every time, never hangs */
    redis_server_stop(&srv);
    for (int k = 0; k < 3; k++) {
        b.n = 0;
        batch_add(&b, "dn", "b", SK_SUCCESS);
        uint64_t t0 = mono_ms();
        int rc = decide(r, &b);
        uint64_t took = mono_ms() - t0;
        assert_true(rc < 0);
        assert_true(took < 3 * TIMEOUT_MS + 500);
    }
    assert_true(sk_redis_ping(r) < 0);

    /* restarted from its AOF: the same handle works again, stock goes on */
    assert_int_equal(redis_server_restart(&srv), 0);
    uint64_t t0 = mono_ms();
    int rc;
    while ((rc = decide(r, &b)) < 0 && mono_ms() - t0 < 5000)
        sleep_ms(20);
    assert_int_equal(rc, 0);
    assert_int_equal(b.outs[0].result, SK_SUCCESS);
    assert_int_equal(b.left[0], 98);
    assert_int_equal(sk_redis_left(r, "dn"), 98);
    assert_int_equal(sk_redis_ping(r), 0);
    assert_int_equal(xlen("dn"), 2);

    /* paused (accepts, never answers): times out within the bound */
    redis_server_pause(&srv);
    b.n = 0;
    batch_add(&b, "dn", "c", SK_SUCCESS);
    for (int k = 0; k < 2; k++) { /* the same request, as a redelivery sends it */
        t0 = mono_ms();
        rc = decide(r, &b);
        uint64_t took = mono_ms() - t0;
        assert_true(rc < 0);
        assert_true(took < 3 * TIMEOUT_MS + 500);
    }
    redis_server_resume(&srv);
    t0 = mono_ms();
    while ((rc = decide(r, &b)) < 0 && mono_ms() - t0 < 5000)
        sleep_ms(20);
    assert_int_equal(rc, 0);
    /* the timed-out attempts were queued in Redis and ran once it resumed:
     * the retry gets that stored decision, and stock moved once */
    assert_int_equal(b.outs[0].result, SK_SUCCESS);
    assert_int_equal(b.left[0], 97);
    assert_int_equal(sk_redis_left(r, "dn"), 97);
    assert_int_equal(xlen("dn"), 3);
    sk_redis_destroy(r);
}

/* ---- orders: pay, pay timeout, reap ---- */

static void test_pay(void **state)
{
    (void)state;
    sk_redis *r = make("py", 5, 1, 1000);
    static batch b;
    b.n = 0;
    batch_add(&b, "py", "a", SK_SUCCESS);
    assert_int_equal(decide(r, &b), 0);
    const char *oid = b.outs[0].order_id;
    uint64_t now = wall_ms();
    assert_int_equal(sk_redis_order_pay(r, "py", oid, now), 0);
    assert_int_equal(sk_redis_order_pay(r, "py", oid, now + 10), 0); /* idempotent */
    sk_redis_order o;
    assert_int_equal(sk_redis_order_get(r, "py", oid, &o), 0);
    assert_int_equal(o.state, SK_ORDER_PAID);
    assert_memory_equal(o.request_id, b.rids[0], 16);
    assert_int_equal(sk_redis_reap(r, now + 100000), 0); /* paid is never reaped */
    assert_int_equal(sk_redis_order_get(r, "py", oid, &o), 0);
    assert_int_equal(o.state, SK_ORDER_PAID);
    assert_int_equal(sk_redis_left(r, "py"), 4);
    assert_int_equal(xlen("py"), 2); /* reserved, paid */

    assert_int_equal(sk_redis_order_get(r, "py", "no-such-order", &o), -ENOENT);
    assert_int_equal(sk_redis_order_pay(r, "py", "no-such-order", now), -ENOENT);
    assert_int_equal(sk_redis_order_pay(r, "py", "bad|id", now), -EINVAL);
    sk_redis_destroy(r);
}

typedef struct reaper {
    sk_redis *r;
    uint64_t now;
    int cancelled;
    pthread_barrier_t *go;
} reaper;

static void *reap_main(void *arg)
{
    reaper *rp = arg;
    pthread_barrier_wait(rp->go);
    rp->cancelled = sk_redis_reap(rp->r, rp->now);
    return NULL;
}

static void test_pay_timeout(void **state)
{
    (void)state;
    sk_redis *r = make("pt", 40, 1, 1000);
    static batch b;
    b.n = 0;
    char u[16];
    for (int i = 0; i < 40; i++) {
        snprintf(u, sizeof u, "u%d", i);
        batch_add(&b, "pt", u, SK_SUCCESS);
    }
    assert_int_equal(decide(r, &b), 0);
    assert_int_equal(sk_redis_left(r, "pt"), 0);
    uint64_t now = wall_ms();

    /* order 0 paid in time; order 1 paying too late is refused */
    assert_int_equal(sk_redis_order_pay(r, "pt", b.outs[0].order_id, now), 0);
    assert_int_equal(sk_redis_order_pay(r, "pt", b.outs[1].order_id, now + 5000), -ETIME);
    assert_int_equal(sk_redis_reap(r, now), 0); /* nothing due yet */

    /* two reapers at once, past every deadline: 39 cancelled in total */
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 2);
    reaper rp[2] = {{r, now + 5000, 0, &go}, {r, now + 5000, 0, &go}};
    pthread_t th[2];
    for (int t = 0; t < 2; t++)
        assert_int_equal(pthread_create(&th[t], NULL, reap_main, &rp[t]), 0);
    for (int t = 0; t < 2; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&go);
    assert_true(rp[0].cancelled >= 0 && rp[1].cancelled >= 0);
    assert_int_equal(rp[0].cancelled + rp[1].cancelled, 39);
    assert_int_equal(sk_redis_reap(r, now + 6000), 0); /* and again: nothing */
    assert_int_equal(sk_redis_left(r, "pt"), 39);      /* stock back exactly once */
    assert_int_equal(orders_in("pt", "cancelled"), 39);
    assert_int_equal(orders_in("pt", "paid"), 1);
    assert_int_equal(xlen("pt"), 40 + 1 + 39);

    sk_redis_order o;
    assert_int_equal(sk_redis_order_get(r, "pt", b.outs[1].order_id, &o), 0);
    assert_int_equal(o.state, SK_ORDER_CANCELLED);
    assert_int_equal(sk_redis_order_pay(r, "pt", b.outs[1].order_id, now), -ECANCELED);
    assert_int_equal(sk_redis_order_pay(r, "pt", b.outs[1].order_id, now + 9000), -ECANCELED);

    /* the user of a cancelled order may buy again; the payer may not */
    static batch b2;
    b2.n = 0;
    batch_add(&b2, "pt", "u1", SK_SUCCESS);
    batch_add(&b2, "pt", "u0", SK_SUCCESS);
    assert_int_equal(decide(r, &b2), 0);
    assert_int_equal(b2.outs[0].result, SK_SUCCESS);
    assert_string_not_equal(b2.outs[0].order_id, b.outs[1].order_id);
    assert_int_equal(b2.outs[1].result, SK_ALREADY_PURCHASED);
    assert_string_equal(b2.outs[1].order_id, b.outs[0].order_id);
    assert_int_equal(sk_redis_left(r, "pt"), 38);
    /* the old request still answers its old decision */
    assert_int_equal(decide(r, &b), 0);
    assert_int_equal(b.outs[1].result, SK_SUCCESS);
    assert_int_equal(sk_redis_left(r, "pt"), 38);
    sk_redis_destroy(r);
}

/* The reaper's index: the events stream from where it got to, and the
 * deadlines set for an order whose deadline is more than a second before
 * one already in the stream (workers configured apart), which is reaped at
 * its own deadline, not behind the other; an order in the deadlines set
 * from before order ids were request ids is reaped too. */
static void test_reap_index(void **state)
{
    (void)state;
    sk_redis *slow = make("ri", 10, 1, 60000), *fast = make("ri", 10, 1, 1000);
    static batch b;
    b.n = 0;
    batch_add(&b, "ri", "u1", SK_SUCCESS);
    assert_int_equal(decide(slow, &b), 0);
    uint64_t now = wall_ms();
    b.n = 0;
    batch_add(&b, "ri", "u2", SK_SUCCESS);
    assert_int_equal(decide(fast, &b), 0);
    assert_int_equal(b.outs[0].result, SK_SUCCESS);
    /* the order id is the request id */
    char rid[37];
    uuid_unparse_lower(b.rids[0], rid);
    assert_string_equal(b.outs[0].order_id, rid);
    assert_int_equal(sk_redis_order_pay(fast, "ri", rid, now + 5000), -ETIME);
    assert_int_equal(raw_int("ZCARD %s", "sk:{ri}:deadlines"), 1);
    assert_int_equal(sk_redis_reap(fast, now + 500), 0);
    assert_int_equal(sk_redis_reap(fast, now + 5000), 1); /* u2's, though behind u1's */
    assert_int_equal(sk_redis_left(slow, "ri"), 9);

    redisContext *c = raw();
    redisReply *rep = redisCommand(c, "HSET sk:{ri}:orders legacy reserved|u3|%s|%llu|%llu|0",
                                   rid, (unsigned long long)now, (unsigned long long)now + 10);
    freeReplyObject(rep);
    rep = redisCommand(c, "ZADD sk:{ri}:deadlines %llu legacy", (unsigned long long)now + 10);
    freeReplyObject(rep);
    rep = redisCommand(c, "HSET sk:{ri}:users u3 1|legacy");
    freeReplyObject(rep);
    rep = redisCommand(c, "DECR sk:{ri}:stock");
    freeReplyObject(rep);
    redisFree(c);
    assert_int_equal(sk_redis_left(slow, "ri"), 8);
    assert_int_equal(sk_redis_reap(fast, now + 5000), 1); /* the legacy order */
    assert_int_equal(raw_int("ZCARD %s", "sk:{ri}:deadlines"), 0);
    assert_int_equal(raw_int("HEXISTS sk:{ri}:users %s", "u3"), 0);
    assert_int_equal(sk_redis_reap(fast, now + 70000), 1); /* u1's */
    assert_int_equal(sk_redis_reap(slow, now + 70000), 0);
    assert_int_equal(sk_redis_left(slow, "ri"), 10);
    assert_int_equal(orders_in("ri", "cancelled"), 3);
    sk_redis_destroy(slow);
    sk_redis_destroy(fast);
}

/* ---- order events ---- */

typedef struct seen {
    int n;
    char ids[16][32];
    char types[16][16];
    char orders[16][SK_ORDER_ID_MAX + 1];
    int stop_after; /* 0: never */
} seen;

static int collect(void *arg, const sk_redis_event *ev)
{
    seen *s = arg;
    if (s->stop_after && s->n >= s->stop_after)
        return -1;
    assert_true(s->n < 16);
    snprintf(s->ids[s->n], sizeof s->ids[0], "%s", ev->id);
    snprintf(s->types[s->n], sizeof s->types[0], "%s", ev->type);
    snprintf(s->orders[s->n], sizeof s->orders[0], "%s", ev->order_id);
    assert_string_equal(ev->item_id, "ev");
    assert_true(ev->at_ms > 0);
    s->n++;
    return 0;
}

static void test_events_read_ack(void **state)
{
    (void)state;
    sk_redis *r = make("ev", 10, 1, 60000);
    static batch b;
    b.n = 0;
    batch_add(&b, "ev", "a", SK_SUCCESS);
    batch_add(&b, "ev", "b", SK_SUCCESS);
    batch_add(&b, "ev", "c", SK_SUCCESS);
    assert_int_equal(decide(r, &b), 0);

    seen s = {0};
    assert_int_equal(sk_redis_events_read(r, "ev", "sink", "c1", 10, 0, collect, &s), 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(s.types[i], "reserved");
        assert_string_equal(s.orders[i], b.outs[i].order_id);
    }
    /* not acknowledged: the same consumer reads them again */
    seen s2 = {0};
    assert_int_equal(sk_redis_events_read(r, "ev", "sink", "c1", 10, 0, collect, &s2), 3);
    for (int i = 0; i < 3; i++)
        assert_string_equal(s2.ids[i], s.ids[i]);
    const char *ack2[] = {s.ids[0], s.ids[1]};
    assert_int_equal(sk_redis_events_ack(r, "ev", "sink", ack2, 2), 2);
    seen s3 = {0};
    assert_int_equal(sk_redis_events_read(r, "ev", "sink", "c1", 10, 0, collect, &s3), 1);
    assert_string_equal(s3.ids[0], s.ids[2]);
    /* a callback that stops leaves the rest pending */
    seen s4 = {.stop_after = 0};
    s4.stop_after = 1;
    s4.n = 1; /* stop at once */
    assert_int_equal(sk_redis_events_read(r, "ev", "sink", "c1", 10, 0, collect, &s4), 0);
    const char *ack1[] = {s.ids[2]};
    assert_int_equal(sk_redis_events_ack(r, "ev", "sink", ack1, 1), 1);
    assert_int_equal(sk_redis_events_ack(r, "ev", "sink", ack1, 1), 0); /* already acked */

    /* nothing pending, nothing new: a short block returns 0 */
    seen s5 = {0};
    uint64_t t0 = mono_ms();
    assert_int_equal(sk_redis_events_read(r, "ev", "sink", "c1", 10, 100, collect, &s5), 0);
    assert_true(mono_ms() - t0 >= 90);

    /* a new order and its payment reach the group */
    assert_int_equal(sk_redis_order_pay(r, "ev", b.outs[0].order_id, wall_ms()), 0);
    seen s6 = {0};
    assert_int_equal(sk_redis_events_read(r, "ev", "sink", "c1", 10, 0, collect, &s6), 1);
    assert_string_equal(s6.types[0], "paid");
    assert_string_equal(s6.orders[0], b.outs[0].order_id);

    /* another group sees every event from the start */
    seen s7 = {0};
    assert_int_equal(sk_redis_events_read(r, "ev", "stats", "x", 10, 0, collect, &s7), 4);
    /* another consumer of the first group: nothing of c1's is its own */
    seen s8 = {0};
    assert_int_equal(sk_redis_events_read(r, "ev", "sink", "c2", 10, 0, collect, &s8), 0);
    sk_redis_destroy(r);
}

static void test_multi_item_batch(void **state)
{
    (void)state;
    sk_redis_item its[] = {{.id = "m1", .stock = 2, .per_user_limit = 1, .pay_timeout_ms = 1000},
                           {.id = "m2", .stock = 3, .per_user_limit = 2, .pay_timeout_ms = 1000},
                           {.id = "m3", .stock = 0, .per_user_limit = 1, .pay_timeout_ms = 1000}};
    sk_redis *r = NULL;
    assert_int_equal(sk_redis_create("127.0.0.1", srv.port, SLOW_OK_MS, its, 3, &r), 0);
    static batch b;
    b.n = 0;
    /* interleaved: one pipelined call per item, answers back in batch order */
    batch_add(&b, "m2", "a", SK_SUCCESS); /* 0 */
    batch_add(&b, "m1", "a", SK_SUCCESS); /* 1 */
    batch_add(&b, "m3", "a", SK_SUCCESS); /* 2 sold out */
    batch_add(&b, "m2", "a", SK_SUCCESS); /* 3 second of two */
    batch_add(&b, "m1", "a", SK_SUCCESS); /* 4 limit 1 */
    batch_add(&b, "m2", "a", SK_SUCCESS); /* 5 limit 2 */
    batch_add(&b, "m1", "b", SK_SUCCESS); /* 6 */
    batch_add(&b, "m1", "c", SK_SUCCESS); /* 7 sold out */
    batch_add(&b, "m2", "b", SK_BLOCKED); /* 8 */
    assert_int_equal(decide(r, &b), 0);
    const enum sk_result want[] = {SK_SUCCESS, SK_SUCCESS,           SK_SOLD_OUT,
                                   SK_SUCCESS, SK_ALREADY_PURCHASED, SK_ALREADY_PURCHASED,
                                   SK_SUCCESS, SK_SOLD_OUT,          SK_BLOCKED};
    const int64_t want_left[] = {2, 1, 0, 1, 1, 1, 0, 0, 1};
    for (size_t i = 0; i < b.n; i++) {
        assert_int_equal(b.outs[i].result, want[i]);
        assert_int_equal(b.left[i], want_left[i]);
    }
    assert_string_equal(b.outs[4].order_id, b.outs[1].order_id);
    assert_string_equal(b.outs[5].order_id, b.outs[3].order_id); /* the user's last */
    assert_int_equal(sk_redis_left(r, "m1"), 0);
    assert_int_equal(sk_redis_left(r, "m2"), 1);
    assert_int_equal(sk_redis_left(r, "m3"), 0);
    assert_int_equal(xlen("m1"), 2);
    assert_int_equal(xlen("m2"), 2);
    assert_int_equal(xlen("m3"), 0);
    sk_redis_destroy(r);
}

/* Redis lost its script cache (restart, SCRIPT FLUSH): calls resend the
 * body once and go on. */
static void test_script_cache_lost(void **state)
{
    (void)state;
    sk_redis *r = make("sf", 5, 1, 1000);
    assert_int_equal(raw_int("SCRIPT FLUSH%s", ""), -2); /* +OK, a status */
    static batch b;
    b.n = 0;
    batch_add(&b, "sf", "a", SK_SUCCESS);
    batch_add(&b, "sf", "b", SK_SUCCESS);
    assert_int_equal(decide(r, &b), 0);
    assert_int_equal(b.outs[0].result, SK_SUCCESS);
    assert_int_equal(b.outs[1].result, SK_SUCCESS);
    assert_int_equal(sk_redis_left(r, "sf"), 3);
    assert_int_equal(xlen("sf"), 2);
    assert_int_equal(raw_int("SCRIPT FLUSH%s", ""), -2);
    assert_int_equal(sk_redis_order_pay(r, "sf", b.outs[0].order_id, wall_ms()), 0);
    assert_int_equal(raw_int("SCRIPT FLUSH%s", ""), -2);
    assert_int_equal(sk_redis_reap(r, wall_ms() + 5000), 1);
    assert_int_equal(sk_redis_left(r, "sf"), 4);
    sk_redis_destroy(r);
}

static void test_bad_args(void **state)
{
    (void)state;
    sk_redis *r = NULL;
    sk_redis_item bad = {.id = "bad|id", .stock = 1, .per_user_limit = 1};
    assert_int_equal(sk_redis_create("127.0.0.1", srv.port, TIMEOUT_MS, &bad, 1, &r), -EINVAL);
    sk_redis_item ok = {.id = "ok", .stock = 1, .per_user_limit = 1};
    assert_int_equal(sk_redis_create("127.0.0.1", srv.port, 0, &ok, 1, &r), -EINVAL);
    /* nobody listens on the redis port + 1 (most likely): create fails fast */
    int rc =
        sk_redis_create("127.0.0.1", srv.port == 65535 ? 1 : srv.port + 1, TIMEOUT_MS, &ok, 1, &r);
    assert_true(rc < 0);
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
    signal(SIGPIPE, SIG_IGN); /* as the gateway does: see sale/store_redis.h */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_semantics),
        cmocka_unit_test(test_batch_repeats),
        cmocka_unit_test(test_batch_large),
        cmocka_unit_test(test_verdicts_recorded),
        cmocka_unit_test(test_replica_ack_short),
        cmocka_unit_test(test_concurrent_never_oversells),
        cmocka_unit_test(test_preheat_nx),
        cmocka_unit_test(test_missing_stock_key),
        cmocka_unit_test(test_pay),
        cmocka_unit_test(test_pay_timeout),
        cmocka_unit_test(test_reap_index),
        cmocka_unit_test(test_events_read_ack),
        cmocka_unit_test(test_multi_item_batch),
        cmocka_unit_test(test_script_cache_lost),
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_redis_down_and_back),
        cmocka_unit_test(test_hash_tags),
        cmocka_unit_test(test_raise_stock_once),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
