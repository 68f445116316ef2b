/*
 * it_replicas.c - [redis] min_replicas_ack against a real master and a real
 * replica (redis-server --replicaof): a success is answered 200 only once the
 * replica acknowledged it; while the replica is stopped (SIGSTOP) purchases
 * are answered 504 with their request id, never 503, and once it is back the
 * result query and buying again tell the truth; after the master is SIGKILLed
 * mid-sale and the replica promoted, every order answered 200 is on it.
 *
 * argv: seckill-gateway, seckill-worker.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "tests/redis_server.h"
#include "tests/test_time.h"

#define STOCK 100
#define SECRET "it-replicas-secret"

static const char *gateway_bin, *worker_bin;

/* The test's processes, for the teardown after a failed assertion. */
static redis_server master, replica;
static gw_proc gw;
static pid_t worker_pid;

static void start_pair(void)
{
    int rc = redis_server_start(&master);
    if (rc < 0)
        fail_msg("master: %s", master.error);
    rc = redis_server_start_replica(&replica, &master);
    if (rc < 0)
        fail_msg("replica: %s", replica.error);
}

/* A gateway on master with min_replicas_ack = 1; its workers embedded, or
 * (worker_process) one seckill-worker process over rpc/. */
static void start_sale(int worker_process)
{
    char ini[2048], wini[2600], wpath[300];
    snprintf(ini, sizeof ini,
             "[gateway]\nwait_timeout_ms = 1500\n"
             "[token_bucket]\nrate = 0\n"
             "[queue]\nack_timeout_ms = 1000\nlease_timeout_ms = 1000\n"
             "[worker]\nembedded = %s\ninventory = redis\nthreads = 2\nbatch = 16\n"
             "%s"
             "[redis]\nport = %d\ntimeout_ms = 1000\nmin_replicas_ack = 1\n"
             /* a WAIT with the replica up fits even on a loaded machine, and
              * three unacknowledged ones still fit in wait_timeout_ms */
             "replica_ack_timeout_ms = 400\n"
             "[item.demo]\nstock = %d\n",
             worker_process ? "false" : "true",
             worker_process ? "[rpc]\nlisten = tcp:127.0.0.1:0\nsecret = " SECRET "\n" : "",
             master.port, STOCK);
    assert_int_equal(gw_proc_start(&gw, gateway_bin, ini), 0);
    if (worker_process) {
        char gws[64];
        snprintf(gws, sizeof gws, "[rpc]\ngateways = tcp:127.0.0.1:%d\n", gw.rpc_port);
        assert_int_equal(ini_merge(wini, sizeof wini, ini, gws), 0);
        snprintf(wpath, sizeof wpath, "%s/worker.ini", gw.dir);
        FILE *f = fopen(wpath, "w");
        assert_non_null(f);
        fputs(wini, f);
        fclose(f);
        const char *argv[] = {worker_bin, "-c", wpath, "--id", "w0", NULL};
        assert_int_equal(proc_spawn(argv, "role=seckill", &worker_pid), 0);
    }
    http_resp r;
    for (int i = 0; i < 1000; i++) {
        if (http_do(gw.port, "GET", "/readyz", NULL, NULL, 0, &r) == 0 && r.status == 200)
            return;
        sleep_ms(10);
    }
    fail_msg("gateway never became ready: %d %s", r.status, r.body);
}

static int buy(const char *user, http_resp *r)
{
    char body[128];
    int n = snprintf(body, sizeof body, "{\"user_id\":\"%s\",\"item_id\":\"demo\"}", user);
    assert_true(n > 0 && (size_t)n < sizeof body);
    assert_int_equal(http_buy(gw.port, body, r), 0);
    return r->status;
}

/* 1 when the order is in the orders hash of the Redis on rs. */
static int order_on(const redis_server *rs, const char *oid)
{
    char cmd[128], buf[512];
    snprintf(cmd, sizeof cmd, "HGET sk:{demo}:orders %s", oid);
    int n = redis_server_cmd(rs, cmd, buf, sizeof buf);
    assert_true(n > 0);
    assert_int_equal(buf[0], '$');
    return strncmp(buf, "$-1", 3) != 0;
}

static long int_of(const redis_server *rs, const char *cmd)
{
    char buf[512];
    assert_true(redis_server_cmd(rs, cmd, buf, sizeof buf) > 0);
    if (buf[0] == ':')
        return strtol(buf + 1, NULL, 10);
    assert_int_equal(buf[0], '$'); /* a bulk string holding a number */
    const char *v = strstr(buf, "\r\n");
    assert_non_null(v);
    return strtol(v + 2, NULL, 10);
}

/* seckill_store_replica_ack_timeouts_total from the gateway's /metrics. */
static long ack_timeouts(void)
{
    http_resp r;
    assert_int_equal(http_do(gw.port, "GET", "/metrics", NULL, NULL, 0, &r), 0);
    const char *p = strstr(r.body, "\nseckill_store_replica_ack_timeouts_total ");
    assert_non_null(p);
    return strtol(p + strlen("\nseckill_store_replica_ack_timeouts_total "), NULL, 10);
}

/* The result query's answer for request rid once decided (202 = pending). */
static int result_of(const char *rid, char *oid, size_t cap)
{
    char path[96];
    http_resp r;
    snprintf(path, sizeof path, "/seckill/result/%s", rid);
    for (int i = 0; i < 500; i++) { /* 10 s */
        assert_int_equal(http_do(gw.port, "GET", path, NULL, NULL, 0, &r), 0);
        if (r.status != 202) {
            if (r.status == 200)
                assert_int_equal(json_field(r.body, "order_id", oid, cap), 0);
            return r.status;
        }
        sleep_ms(20);
    }
    fail_msg("request %s still pending 10 s after the replica came back", rid);
    return -1;
}

/* ---- concurrent buyers ---- */

#define PAUSED_BUYERS 6

typedef struct paused_buy {
    char user[32];
    http_resp r;
} paused_buy;

static void *paused_buy_main(void *arg)
{
    paused_buy *b = arg;
    buy(b->user, &b->r);
    return NULL;
}

/* The replica stops: purchases are not confirmed, so they are 504 with the
 * request id (never 503); once it is back the stored decisions are the
 * truth for the result query and for buying again. */
static void test_unconfirmed_is_504_then_true(void **state)
{
    (void)state;
    http_resp r;
    char oid[64], rid[64], hdr[64];
    start_pair();
    start_sale(0);

    for (int i = 0; i < 5; i++) {
        char user[32];
        snprintf(user, sizeof user, "up-%d", i);
        assert_int_equal(buy(user, &r), 200);
        assert_int_equal(json_field(r.body, "order_id", oid, sizeof oid), 0);
        assert_true(order_on(&replica, oid)); /* on the replica before the 200 */
    }
    /* normally 0; a WAIT that a loaded machine delays past its timeout is
     * retried (the 200s above came after the replica had them) */
    long up_timeouts = ack_timeouts();
    printf("replica up: %ld batches not acknowledged in time\n", up_timeouts);

    redis_server_pause(&replica);
    static paused_buy b[PAUSED_BUYERS];
    pthread_t t[PAUSED_BUYERS];
    for (int i = 0; i < PAUSED_BUYERS; i++) {
        snprintf(b[i].user, sizeof b[i].user, "paused-%d", i);
        assert_int_equal(pthread_create(&t[i], NULL, paused_buy_main, &b[i]), 0);
    }
    for (int i = 0; i < PAUSED_BUYERS; i++)
        pthread_join(t[i], NULL);
    long timeouts = ack_timeouts();
    printf("replica paused: %ld batches not acknowledged in time\n", timeouts - up_timeouts);
    assert_true(timeouts > up_timeouts);
    for (int i = 0; i < PAUSED_BUYERS; i++) {
        printf("replica paused: %s -> %d %s\n", b[i].user, b[i].r.status, b[i].r.body);
        assert_int_equal(b[i].r.status, 504);
        assert_int_equal(json_field(b[i].r.body, "request_id", rid, sizeof rid), 0);
        assert_int_equal(http_header(&b[i].r, "X-Request-Id", hdr, sizeof hdr), 0);
        assert_string_equal(rid, hdr);
    }
    /* still unconfirmed: the result query does not claim an outcome */
    assert_int_equal(json_field(b[0].r.body, "request_id", rid, sizeof rid), 0);
    char path[96];
    snprintf(path, sizeof path, "/seckill/result/%s", rid);
    assert_int_equal(http_do(gw.port, "GET", path, NULL, NULL, 0, &r), 0);
    assert_true(r.status == 202 || r.status == 504);
    assert_true(r.status != 200);

    redis_server_resume(&replica);
    int bought = 5, late = 0;
    for (int i = 0; i < PAUSED_BUYERS; i++) {
        char again[64];
        assert_int_equal(json_field(b[i].r.body, "request_id", rid, sizeof rid), 0);
        int st = result_of(rid, oid, sizeof oid);
        printf("replica back: %s (%s) -> %d %s\n", b[i].user, rid, st, st == 200 ? oid : "");
        if (st == 200) {
            /* the worker held the stored success until it was acknowledged */
            assert_true(order_on(&replica, oid));
            /* buying again: already purchased, with that very order */
            assert_int_equal(buy(b[i].user, &r), 409);
            assert_int_equal(json_field(r.body, "result", again, sizeof again), 0);
            assert_string_equal(again, "already_purchased");
            assert_int_equal(json_field(r.body, "order_id", again, sizeof again), 0);
            assert_string_equal(again, oid);
            late++;
        } else {
            /* first decided past its deadline (its worker was busy waiting
             * for the replica on an earlier batch): expired, nothing bought,
             * so the user can still buy */
            assert_int_equal(st, 504);
            assert_int_equal(buy(b[i].user, &r), 200);
        }
        bought++;
    }
    /* the first batch was decided in time: its successes were held back
     * until the replica acknowledged, then answered */
    assert_true(late >= 1);
    /* stock: what is left plus what was bought is what there was, on both */
    assert_int_equal(http_stock_left(gw.port, "demo"), STOCK - bought);
    assert_int_equal(int_of(&master, "GET sk:{demo}:stock"), STOCK - bought);
    assert_int_equal(int_of(&master, "HLEN sk:{demo}:orders"), bought);
    assert_int_equal(int_of(&replica, "HLEN sk:{demo}:orders"), bought);
}

/* ---- failover ---- */

#define FO_USERS 400
#define FO_THREADS 4

static atomic_int fo_stop, fo_successes;
static int fo_status[FO_USERS];
static char fo_order[FO_USERS][40];

static void *fo_buyer(void *arg)
{
    int first = (int)(intptr_t)arg;
    http_resp *r = malloc(sizeof *r);
    assert_non_null(r);
    for (int u = first; u < FO_USERS && !atomic_load(&fo_stop); u += FO_THREADS) {
        char body[96];
        snprintf(body, sizeof body, "{\"user_id\":\"fo-%d\",\"item_id\":\"demo\"}", u);
        if (http_buy(gw.port, body, r) != 0)
            continue;
        fo_status[u] = r->status;
        if (r->status == 200 && json_field(r->body, "order_id", fo_order[u], 40) == 0)
            atomic_fetch_add(&fo_successes, 1);
    }
    free(r);
    return NULL;
}

/* The master is SIGKILLed mid-sale and its replica promoted: every 200 the
 * buyers saw is an order on the replica, and its stock adds up. The workers
 * are a seckill-worker process, so its [redis] keys are in force too. */
static void test_failover_loses_no_200(void **state)
{
    (void)state;
    http_resp r;
    start_pair();
    start_sale(1);

    /* the worker process waits for the replica as well */
    redis_server_pause(&replica);
    assert_int_equal(buy("fo-paused", &r), 504);
    redis_server_resume(&replica);

    pthread_t t[FO_THREADS];
    atomic_store(&fo_stop, 0);
    atomic_store(&fo_successes, 0);
    memset(fo_status, 0, sizeof fo_status);
    for (int i = 0; i < FO_THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, fo_buyer, (void *)(intptr_t)i), 0);
    uint64_t until = mono_ms() + 20000;
    while (atomic_load(&fo_successes) < 30 && mono_ms() < until)
        sleep_ms(5);
    assert_true(atomic_load(&fo_successes) >= 30);
    redis_server_kill(&master); /* mid-sale: buyers are in flight */
    sleep_ms(300);
    atomic_store(&fo_stop, 1);
    for (int i = 0; i < FO_THREADS; i++)
        pthread_join(t[i], NULL);

    char buf[256];
    assert_true(redis_server_cmd(&replica, "REPLICAOF NO ONE", buf, sizeof buf) > 0);
    assert_int_equal(strncmp(buf, "+OK", 3), 0);
    int answered[600] = {0}, ok = 0;
    for (int u = 0; u < FO_USERS; u++) {
        answered[fo_status[u]]++;
        if (fo_status[u] != 200)
            continue;
        if (!order_on(&replica, fo_order[u]))
            fail_msg("fo-%d was answered 200 with order %s, which the promoted replica lacks", u,
                     fo_order[u]);
        ok++;
    }
    long orders = int_of(&replica, "HLEN sk:{demo}:orders");
    long left = int_of(&replica, "GET sk:{demo}:stock");
    printf("failover: %d answered 200 (all on the promoted replica), %d 504, %d 503, "
           "%d unasked; the replica holds %ld orders (1 before the sale), stock left %ld\n",
           answered[200], answered[504], answered[503], answered[0], orders, left);
    assert_true(ok >= 30);
    assert_true(orders >= ok + 1); /* 504s may have bought too: never fewer */
    assert_int_equal(orders + left, STOCK);
}

static int teardown(void **state)
{
    (void)state;
    if (worker_pid > 0) {
        proc_stop(worker_pid, SIGTERM);
        worker_pid = 0;
    }
    if (gw.pid > 0)
        gw_proc_stop(&gw);
    memset(&gw, 0, sizeof gw);
    redis_server_destroy(&replica);
    redis_server_destroy(&master);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s SECKILL-GATEWAY SECKILL-WORKER\n", argv[0]);
        return 2;
    }
    gateway_bin = argv[1];
    worker_bin = argv[2];
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_unconfirmed_is_504_then_true, teardown),
        cmocka_unit_test_teardown(test_failover_loses_no_200, teardown),
    };
    return cmocka_run_group_tests_name("integration.replicas", tests, NULL, NULL);
}
