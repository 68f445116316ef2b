/*
 * it_workers.c - gateways and seckill-worker processes over rpc/, stock in a
 * real redis-server, orders in the order sink; faults injected for real
 * (SIGKILL of a worker, a Redis restart); workers that find their gateways
 * in the Redis registry as they come and go; a sale over mutual TLS, and
 * bad TLS files refused at start.
 *
 * With a third argument `redis-cluster`, the sales run on a real Redis
 * Cluster of 3 masters and 3 replicas instead (the stock in 3 buckets):
 * uniform and skewed buyers (units move between buckets), a master
 * SIGKILLed mid-sale with min_replicas_ack = 1, a bucket's slot moved to
 * another master mid-sale, a worker SIGKILLed between the halves of a
 * transfer, the whole cluster down and back, and workers that find their
 * gateways in the registry on the cluster.
 *
 * argv: seckill-gateway, seckill-worker [redis-cluster].
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "harness.h"
#include "rpc.h"
#include "message.h"
#include "sale/include/redis_cluster.h"
#include "sale/store_cluster.h"
#include "tests/redis_cluster.h"
#include "tests/redis_server.h"
#include "tests/test_time.h"

#define SECRET "it-workers-secret"

static const char *gateway_bin, *worker_bin;
static pid_t sink_pid;
typedef struct cluster cluster;
static cluster *current; /* for the teardown after a failed assertion */

struct cluster {
    redis_server rs;
    redis_cluster rc; /* instead of rs with use_rcluster */
    int on_rcluster;
    gw_proc gw[3];
    int ngw;
    pid_t workers[8];
    int nworkers;
    char dir[64];
    char wini[128];
    long stock;
};

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int pay_timeout_ms = 600000;
/* generous for sales on a busy machine; the slow-Redis test sets 200 ms */
static int redis_timeout_ms = 1000;
static int wait_timeout_ms = 5000;
static int use_rcluster;     /* cluster_start: a Redis Cluster instead of one redis-server */
static int min_replicas_ack; /* with use_rcluster */

static void common_ini(char *buf, size_t cap, const cluster *cl, const char *extra)
{
    char base[2048], redis[1024];
    if (cl->on_rcluster) {
        char nodes[512];
        redis_cluster_nodes(&cl->rc, nodes, sizeof nodes);
        snprintf(redis, sizeof redis,
                 "cluster = true\nnodes = %s\nmin_replicas_ack = %d\n"
                 "replica_ack_timeout_ms = 1000\n",
                 nodes, min_replicas_ack);
    } else {
        snprintf(redis, sizeof redis, "port = %d\n", cl->rs.port);
    }
    snprintf(base, sizeof base,
             "[gateway]\nwait_timeout_ms = %d\npark = event\n"
             "[token_bucket]\nrate = 0\n"
             "[queue]\nack_timeout_ms = 1000\nlease_timeout_ms = 1000\n"
             "[worker]\nembedded = false\ninventory = redis\nthreads = 2\nbatch = 32\n"
             "pay_timeout_ms = %d\n"
             "[rpc]\nlisten = tcp:127.0.0.1:0\nsecret = " SECRET "\n"
             "[redis]\n%stimeout_ms = %d\n"
             "[item.demo]\nstock = %ld\n",
             wait_timeout_ms, pay_timeout_ms, redis, redis_timeout_ms, cl->stock);
    assert_int_equal(ini_merge(buf, cap, base, extra ? extra : ""), 0);
}

static int workers_discover;     /* cluster_start: workers without [rpc] gateways */
static const char *worker_log;  /* start_worker: the workers' stderr goes here */

static void start_worker(cluster *cl)
{
    char id[32];
    int saved = -1;
    snprintf(id, sizeof id, "w%d", cl->nworkers);
    const char *argv[] = {worker_bin, "-c", cl->wini, "--id", id, NULL};
    if (worker_log) { /* the child inherits stderr: point it at the log meanwhile */
        int fd = open(worker_log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        assert_true(fd >= 0);
        saved = dup(2);
        dup2(fd, 2);
        close(fd);
    }
    int rc = proc_spawn(argv, "role=seckill", &cl->workers[cl->nworkers]);
    if (saved >= 0) {
        dup2(saved, 2);
        close(saved);
    }
    assert_int_equal(rc, 0);
    cl->nworkers++;
}

static void wait_ready(int port)
{
    http_resp r;
    for (int i = 0; i < 500; i++) {
        if (http_do(port, "GET", "/readyz", NULL, NULL, 0, &r) == 0 && r.status == 200)
            return;
        sleep_ms(10);
    }
    fail_msg("gateway on %d never became ready: %d %s", port, r.status, r.body);
}

static void cluster_start(cluster *cl, int ngw, int nworkers, long stock, const char *extra)
{
    char ini[2048], gws[256] = "", wtext[4096];
    memset(cl, 0, sizeof *cl);
    current = cl;
    cl->stock = stock;
    cl->on_rcluster = use_rcluster;
    if (cl->on_rcluster)
        assert_int_equal(redis_cluster_setup(&cl->rc, 1000, NULL, 0), 0);
    else
        assert_int_equal(redis_server_start(&cl->rs), 0);
    snprintf(cl->dir, sizeof cl->dir, "/tmp/seckill-itw-XXXXXX");
    assert_non_null(mkdtemp(cl->dir));
    common_ini(ini, sizeof ini, cl, extra);
    for (int i = 0; i < ngw; i++) {
        assert_int_equal(gw_proc_start(&cl->gw[i], gateway_bin, ini), 0);
        assert_true(cl->gw[i].rpc_port > 0);
        size_t n = strlen(gws);
        snprintf(gws + n, sizeof gws - n, "%stcp:127.0.0.1:%d", i ? ", " : "", cl->gw[i].rpc_port);
    }
    cl->ngw = ngw;
    /* the workers' config: the same file with the gateways to consume, or
     * without them (the workers look in the registry) */
    if (workers_discover)
        snprintf(wtext, sizeof wtext, "%s", ini);
    else {
        char gwl[600];
        snprintf(gwl, sizeof gwl, "[rpc]\ngateways = %s\n", gws);
        assert_int_equal(ini_merge(wtext, sizeof wtext, ini, gwl), 0);
    }
    snprintf(cl->wini, sizeof cl->wini, "%s/worker.ini", cl->dir);
    write_text(cl->wini, wtext);
    for (int i = 0; i < nworkers; i++)
        start_worker(cl);
    for (int i = 0; i < ngw; i++)
        wait_ready(cl->gw[i].port);
}


static void cluster_stop(cluster *cl)
{
    if (sink_pid > 0) {
        pid_t p = sink_pid;
        sink_pid = 0;
        assert_int_equal(proc_stop(p, SIGTERM), 0);
    }
    for (int i = 0; i < cl->nworkers; i++)
        if (cl->workers[i] > 0) {
            pid_t p = cl->workers[i];
            cl->workers[i] = 0;
            assert_int_equal(proc_stop(p, SIGTERM), 0);
        }
    for (int i = 0; i < cl->ngw; i++)
        if (cl->gw[i].pid > 0)
            assert_int_equal(gw_proc_stop(&cl->gw[i]), 0);
    cl->ngw = 0;
    redis_server_destroy(&cl->rs);
    redis_cluster_destroy(&cl->rc);
    current = NULL;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", cl->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", cl->dir);
}

/* ---- concurrent buyers ---- */

typedef struct buyer {
    int port;
    int first, count, stride; /* users first, first+stride, ... */
    int *status;              /* per user */
    char (*order)[40];        /* per user */
} buyer;

/* The id of buyer u. */
static void user_plain(int u, char *buf, size_t len)
{
    snprintf(buf, len, "user-%d", u);
}

/* Nine in ten buyers in bucket 0 of 3: that bucket runs dry first and units
 * move to it from the others. */
static void user_skewed(int u, char *buf, size_t len)
{
    for (int i = 0;; i++) {
        snprintf(buf, len, "user-%d-%d", u, i);
        if (u % 10 == 9 || sale_cluster_user_bucket(buf, 3) == 0)
            return;
    }
}

static void (*user_of)(int u, char *buf, size_t len) = user_plain;

static void *buyer_main(void *arg)
{
    buyer *b = arg;
    http_resp *r = malloc(sizeof *r);
    for (int k = 0; k < b->count; k++) {
        int u = b->first + k * b->stride;
        char body[128], user[48];
        user_of(u, user, sizeof user);
        snprintf(body, sizeof body, "{\"user_id\":\"%s\",\"item_id\":\"demo\"}", user);
        if (http_buy(b->port, body, r) == 0) {
            b->status[u] = r->status;
            if (r->status == 200)
                json_field(r->body, "order_id", b->order[u], sizeof b->order[u]);
        } else {
            b->status[u] = -1;
            fprintf(stderr, "buyer: user %d: no HTTP answer (%s)\n", u, strerror(errno));
        }
    }
    free(r);
    return NULL;
}

#define USERS 5000
#define BUYERS 50
static int status[USERS];
static char order[USERS][40];

static void run_buyers(cluster *cl, void (*midway)(cluster *))
{
    pthread_t t[BUYERS];
    buyer b[BUYERS];
    memset(status, 0, sizeof status);
    memset(order, 0, sizeof order);
    for (int i = 0; i < BUYERS; i++) {
        b[i] = (buyer){.port = cl->gw[i % cl->ngw].port, .first = i, .count = USERS / BUYERS,
                       .stride = BUYERS, .status = status, .order = order};
        pthread_create(&t[i], NULL, buyer_main, &b[i]);
    }
    if (midway)
        midway(cl);
    for (int i = 0; i < BUYERS; i++)
        pthread_join(t[i], NULL);
}

/* Count the order sink's distinct reserved orders, waiting until it has at
 * least want of them (or 15 s). Returns the count; fills ids when given. */
static int sink_orders(const char *path, int want, char (*ids)[40], int cap)
{
    int n = 0;
    for (int tries = 0; tries < 300; tries++) {
        FILE *f = fopen(path, "r");
        char line[1024];
        n = 0;
        if (f) {
            while (fgets(line, sizeof line, f))
                if (strstr(line, "\"type\":\"reserved\"")) {
                    if (ids && n < cap)
                        json_field(line, "order_id", ids[n], sizeof ids[n]);
                    n++;
                }
            fclose(f);
        }
        if (n >= want)
            break;
        sleep_ms(50);
    }
    return n;
}

static int cmp_str40(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

static char sink_ids[USERS][40];

/* The invariants after a sale: every 200 has exactly one order in the sink,
 * the sink has no order twice, sold = orders <= stock, no user won twice,
 * every answer documented. Returns successes. */
static int check_sale(cluster *cl, const char *sink_path, int allow_unavailable)
{
    int ok = 0, other = 0, unknown = 0;
    for (int u = 0; u < USERS; u++) {
        int st = status[u];
        if (st == 200)
            ok++;
        else if (st == 409 || (allow_unavailable && (st == 503 || st == 504)))
            other++, unknown += st == 504;
        else
            fail_msg("user %d: undocumented answer %d", u, st);
    }
    http_resp r;
    char v[32];
    assert_int_equal(http_do(cl->gw[0].port, "GET", "/items/demo", NULL, NULL, 0, &r), 0);
    assert_int_equal(json_field(r.body, "stock_left", v, sizeof v), 0);
    long left = atol(v);
    long sold = cl->stock - left;
    assert_true(sold >= ok);          /* a late success may have no 200 */
    assert_true(sold <= ok + unknown); /* ... but only a 504's: 409 and 503 bought nothing */
    assert_true(sold <= cl->stock);   /* never oversell */
    int n = sink_orders(sink_path, (int)sold, sink_ids, USERS);
    assert_int_equal(n, sold);        /* every sale has its order, once */
    qsort(sink_ids, (size_t)n, sizeof sink_ids[0], cmp_str40);
    for (int i = 1; i < n; i++)
        assert_string_not_equal(sink_ids[i - 1], sink_ids[i]);
    for (int u = 0; u < USERS; u++)  /* every success the app saw is in the sink */
        if (status[u] == 200)
            assert_non_null(bsearch(order[u], sink_ids, (size_t)n, sizeof sink_ids[0], cmp_str40));
    printf("sale: %d success answers, %d other, sold %ld, sink %d orders\n", ok, other, sold, n);
    return ok;
}

static pid_t start_sink(cluster *cl, char *path, size_t cap)
{
    pid_t pid;
    snprintf(path, cap, "%s/orders.jsonl", cl->dir);
    const char *argv[] = {worker_bin, "-c", cl->wini, "--role", "orders", "--id", "sink-1",
                          "--out", path, NULL};
    assert_int_equal(proc_spawn(argv, "role=orders", &pid), 0);
    sink_pid = pid;
    return pid;
}

/* 2 gateways x 4 workers selling stock 1,000 to 5,000 users */
static void test_two_gateways_four_workers(void **state)
{
    (void)state;
    cluster cl;
    char sink_path[128];
    cluster_start(&cl, 2, 4, 1000, NULL);
    pid_t sink = start_sink(&cl, sink_path, sizeof sink_path);
    run_buyers(&cl, NULL);
    int ok = check_sale(&cl, sink_path, 0);
    assert_int_equal(ok, 1000); /* everyone was answered in time: exactly the stock */
    /* the local sold-out flag flipped on both gateways */
    http_resp r, q;
    for (int g = 0; g < 2; g++) {
        /* answered before the queue: its id (made for the answer) names no
         * request a worker decided, so the result endpoint does not know it */
        char rid[64], path[96];
        for (int i = 0; i < 300; i++) {
            assert_int_equal(http_buy(cl.gw[g].port, "{\"user_id\":\"late\",\"item_id\":\"demo\"}",
                                      &r), 0);
            assert_int_equal(http_header(&r, "X-Request-Id", rid, sizeof rid), 0);
            snprintf(path, sizeof path, "/seckill/result/%s", rid);
            assert_int_equal(http_do(cl.gw[g].port, "GET", path, NULL, NULL, 0, &q), 0);
            if (!strcmp(r.body, "{\"result\":\"sold_out\"}") && q.status == 404)
                break;
            sleep_ms(10);
        }
        assert_string_equal(r.body, "{\"result\":\"sold_out\"}");
        assert_int_equal(q.status, 404);
    }
    (void)sink;
    cluster_stop(&cl); /* stops the sink too */
}

/* Wait until the sale is under way: some stock sold, not all. */
static void wait_mid_sale(cluster *cl)
{
    for (int i = 0; i < 2000; i++) {
        long left = http_stock_left(cl->gw[0].port, "demo");
        if (left >= 0 && left < cl->stock - 50)
            return;
        sleep_ms(2);
    }
    fail_msg("the sale never started");
}

static void kill_one_worker(cluster *cl)
{
    wait_mid_sale(cl);
    assert_int_equal(proc_stop(cl->workers[0], SIGKILL), 128 + SIGKILL);
    cl->workers[0] = 0;
}

/* A worker SIGKILLed mid-sale: its partitions move on, nothing decided twice. */
static void test_worker_killed(void **state)
{
    (void)state;
    cluster cl;
    char sink_path[128];
    cluster_start(&cl, 2, 4, 1000, NULL);
    pid_t sink = start_sink(&cl, sink_path, sizeof sink_path);
    run_buyers(&cl, kill_one_worker);
    check_sale(&cl, sink_path, 1);
    (void)sink;
    cluster_stop(&cl); /* stops the sink too */
}

static void restart_redis(cluster *cl)
{
    wait_mid_sale(cl);
    redis_server_stop(&cl->rs);
    sleep_ms(500);
    assert_int_equal(redis_server_restart(&cl->rs), 0);
}

/* Redis restarted mid-sale: requests fail closed meanwhile, the sale goes on
 * from where it was (AOF), workers reconnect by themselves. */
static void test_redis_restart(void **state)
{
    (void)state;
    cluster cl;
    char sink_path[128];
    cluster_start(&cl, 2, 2, 1000, NULL);
    pid_t sink = start_sink(&cl, sink_path, sizeof sink_path);
    run_buyers(&cl, restart_redis);
    check_sale(&cl, sink_path, 1);
    /* after the restart everything works again, without restarting anything */
    http_resp r;
    for (int i = 0; i < 500; i++) {
        assert_int_equal(http_do(cl.gw[1].port, "GET", "/readyz", NULL, NULL, 0, &r), 0);
        if (r.status == 200)
            break;
        sleep_ms(10);
    }
    assert_int_equal(r.status, 200);
    (void)sink;
    cluster_stop(&cl); /* stops the sink too */
}

/* Redis that accepts but never answers, mid-sale. A Redis call that timed out
 * on the worker's side may still run once Redis answers again, so no request
 * in flight may be told "no": each is answered with its outcome once Redis is
 * back, or 504 with its request id at its deadline, and that outcome is then
 * queryable. A 503 (refused at the door: no worker fetching) or 409 must mean
 * no purchase: buying again as that user succeeds afterwards. */
#define PAUSED_BUYERS 20

typedef struct paused_buy {
    int port;
    char user[32];
    http_resp r;
} paused_buy;

static void *paused_buy_main(void *arg)
{
    paused_buy *b = arg;
    char body[96];
    snprintf(body, sizeof body, "{\"user_id\":\"%s\",\"item_id\":\"demo\"}", b->user);
    if (http_buy(b->port, body, &b->r) < 0)
        b->r.status = -1;
    return NULL;
}

/* GET /seckill/result/{rid} while it answers 202 pending (up to 10 s).
 * Returns the status of the decision; OUT: the order id of a success. */
static int decided_result(int port, const char *rid, char *order_id, size_t cap)
{
    char path[96];
    http_resp r;
    snprintf(path, sizeof path, "/seckill/result/%s", rid);
    for (int i = 0; i < 500; i++) {
        assert_int_equal(http_do(port, "GET", path, NULL, NULL, 0, &r), 0);
        if (r.status == 200) {
            assert_int_equal(json_field(r.body, "order_id", order_id, cap), 0);
            return 200;
        }
        /* the gateway issued it: never "unknown", pending until decided */
        if (r.status != 202)
            return r.status;
        sleep_ms(20);
    }
    fail_msg("request %s: no decision 10 s after Redis came back", rid);
    return -1;
}

static void test_redis_paused_answers_are_true(void **state)
{
    (void)state;
    cluster cl;
    http_resp r;
    redis_timeout_ms = 200;
    wait_timeout_ms = 1000;
    cluster_start(&cl, 1, 1, 100, NULL);
    redis_timeout_ms = 1000;
    wait_timeout_ms = 5000;
    int port = cl.gw[0].port;
    assert_int_equal(http_buy(port, "{\"user_id\":\"before\",\"item_id\":\"demo\"}", &r), 0);
    assert_int_equal(r.status, 200);

    /* the buyers' requests reach the worker while Redis is stopped; it comes
     * back after their 1 s deadline, so they are answered 504 */
    redis_server_pause(&cl.rs);
    static paused_buy b[PAUSED_BUYERS];
    pthread_t t[PAUSED_BUYERS];
    for (int i = 0; i < PAUSED_BUYERS; i++) {
        b[i].port = port;
        snprintf(b[i].user, sizeof b[i].user, "paused-%d", i);
        pthread_create(&t[i], NULL, paused_buy_main, &b[i]);
    }
    sleep_ms(1200);
    assert_int_equal(http_do(port, "GET", "/readyz", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 503);
    sleep_ms(300);
    redis_server_resume(&cl.rs);
    for (int i = 0; i < PAUSED_BUYERS; i++)
        pthread_join(t[i], NULL);

    int bought = 1, answered[600] = {0};
    for (int i = 0; i < PAUSED_BUYERS; i++) {
        const http_resp *a = &b[i].r;
        char rid[64] = "", oid[40];
        printf("redis paused: %s -> %d %s\n", b[i].user, a->status, a->body);
        assert_true(a->status >= 200 && a->status < 600);
        answered[a->status]++;
        if (a->status == 200) {
            bought++;
        } else if (a->status == 504) {
            /* unknown at the time: the request id says where to ask */
            assert_int_equal(json_field(a->body, "request_id", rid, sizeof rid), 0);
            assert_int_equal(http_header(a, "X-Request-Id", oid, sizeof oid), 0);
            assert_string_equal(rid, oid);
            int st = decided_result(port, rid, oid, sizeof oid);
            if (st == 200) {
                char path[96];
                snprintf(path, sizeof path, "/orders/%s", oid);
                assert_int_equal(http_do(port, "GET", path, NULL, NULL, 0, &r), 0);
                assert_int_equal(r.status, 200);
                assert_non_null(strstr(r.body, rid)); /* the order of that request */
                bought++;
            } else {
                assert_int_equal(st, 504); /* decided expired: nothing bought */
            }
        } else if (a->status == 503 || a->status == 409) {
            /* "no purchase" must be true: the user can still buy */
            char body[96];
            snprintf(body, sizeof body, "{\"user_id\":\"%s\",\"item_id\":\"demo\"}",
                     b[i].user);
            assert_int_equal(http_buy(port, body, &r), 0);
            if (r.status != 200)
                fail_msg("%s was answered %d, yet buying again gives %d %s", b[i].user,
                         a->status, r.status, r.body);
            bought++;
        } else {
            fail_msg("%s: undocumented answer %d %s", b[i].user, a->status, a->body);
        }
    }
    printf("redis paused: %d answered 200, %d 504, %d 503, %d 409; %d bought\n", answered[200],
           answered[504], answered[503], answered[409], bought);
    assert_int_equal(answered[504] + answered[200], PAUSED_BUYERS); /* all were in flight */
    assert_int_equal(http_stock_left(port, "demo"), 100 - bought);
    cluster_stop(&cl);
}

/* A reserved order not paid in time is cancelled and its stock returned once. */
static void test_pay_timeout(void **state)
{
    (void)state;
    cluster cl;
    http_resp r;
    char a[40], b[40], path[128], v[32];
    pay_timeout_ms = 1000;
    cluster_start(&cl, 1, 1, 10, NULL);
    pay_timeout_ms = 600000;
    int port = cl.gw[0].port;
    assert_int_equal(http_buy(port, "{\"user_id\":\"payer\",\"item_id\":\"demo\"}", &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_field(r.body, "order_id", a, sizeof a), 0);
    assert_int_equal(http_buy(port, "{\"user_id\":\"sleeper\",\"item_id\":\"demo\"}", &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_field(r.body, "order_id", b, sizeof b), 0);

    snprintf(path, sizeof path, "/orders/%s/pay", a);
    assert_int_equal(http_do(port, "POST", path, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_field(r.body, "state", v, sizeof v), 0);
    assert_string_equal(v, "paid");
    assert_int_equal(http_do(port, "POST", path, NULL, NULL, 0, &r), 0); /* idempotent */
    assert_int_equal(r.status, 200);
    assert_int_equal(http_stock_left(port, "demo"), 8);

    /* pay_timeout_ms = 1000: the worker's reaper cancels b */
    snprintf(path, sizeof path, "/orders/%s", b);
    for (int i = 0; i < 500; i++) {
        assert_int_equal(http_do(port, "GET", path, NULL, NULL, 0, &r), 0);
        assert_int_equal(json_field(r.body, "state", v, sizeof v), 0);
        if (!strcmp(v, "cancelled"))
            break;
        sleep_ms(10);
    }
    assert_string_equal(v, "cancelled");
    sleep_ms(1500); /* more reaper rounds: the stock must come back once only */
    assert_int_equal(http_stock_left(port, "demo"), 9);
    snprintf(path, sizeof path, "/orders/%s", a);
    assert_int_equal(http_do(port, "GET", path, NULL, NULL, 0, &r), 0);
    assert_int_equal(json_field(r.body, "state", v, sizeof v), 0);
    assert_string_equal(v, "paid");
    snprintf(path, sizeof path, "/orders/%s/pay", b);
    assert_int_equal(http_do(port, "POST", path, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 409);
    assert_string_equal(r.body, "{\"result\":\"cancelled\"}");
    /* the cancelled buyer may buy again */
    assert_int_equal(http_buy(port, "{\"user_id\":\"sleeper\",\"item_id\":\"demo\"}", &r), 0);
    assert_int_equal(r.status, 200);
    /* bad order ids */
    assert_int_equal(http_do(port, "GET", "/orders/nope", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 400);
    assert_int_equal(http_do(port, "GET", "/orders/0b7e3a6c-5a4e-4c55-9a55-6a1f0c7d9e21", NULL,
                             NULL, 0, &r), 0);
    assert_int_equal(r.status, 404);
    cluster_stop(&cl);
}

/* The RPC door: a wrong secret is refused (and counted in /metrics); a RESULT
 * for another gateway gets an error frame; PRODUCE is refused to everyone. */
static void test_rpc_auth_and_routing(void **state)
{
    (void)state;
    cluster cl;
    cluster_start(&cl, 1, 1, 10, NULL);
    char addr[64];
    snprintf(addr, sizeof addr, "tcp:127.0.0.1:%d", cl.gw[0].rpc_port);

    rpc_client_config cc;
    rpc_client *bad = NULL, *good = NULL;
    rpc_client_config_init(&cc);
    cc.addr = addr;
    cc.worker_id = "intruder";
    cc.group = "seckill";
    cc.role = RPC_ROLE_PURCHASE;
    cc.secret = "not-the-secret";
    cc.secret_len = strlen(cc.secret);
    assert_int_equal(rpc_client_create(&cc, &bad), 0);
    assert_int_equal(rpc_client_wait_ready(bad, 2000), -EACCES);
    rpc_client_destroy(bad);

    cc.worker_id = "tester";
    cc.secret = SECRET;
    cc.secret_len = strlen(SECRET);
    assert_int_equal(rpc_client_create(&cc, &good), 0);
    assert_int_equal(rpc_client_wait_ready(good, 2000), 0);
    rpc_frame f = {.type = RPC_RESULT}, reply;
    uuid_generate_random(f.u.result.gateway_id); /* not this gateway */
    uuid_generate_random(f.u.result.request_id);
    f.u.result.result = 0;
    f.u.result.item_id = rpc_str("demo");
    assert_int_equal(rpc_client_call(good, &f, &reply, 2000), 0);
    assert_int_equal(reply.type, RPC_ERROR);
    assert_int_equal(reply.u.error.code, EXDEV);
    rpc_frame_release(&reply);
    /* a FETCH of an unknown topic is refused, not a crash */
    rpc_frame fe = {.type = RPC_FETCH};
    fe.u.fetch.topic = rpc_str("no.such.topic");
    fe.u.fetch.max_messages = 1;
    assert_int_equal(rpc_client_call(good, &fe, &reply, 2000), 0);
    assert_int_equal(reply.type, RPC_ERROR);
    assert_int_equal(reply.u.error.code, ENOENT);
    rpc_frame_release(&reply);

    /* PRODUCE: a request message slipped in over rpc/ instead of through
     * HTTP admission, sent twice with the same (producer id, seq): refused
     * both times, nothing stored, nothing decided, nothing to look up */
    sk_msg m = {0};
    uint8_t wire[SK_MSG_MAX];
    char rid[37], path[96], v[64];
    assert_int_equal(uuid_parse(cl.gw[0].gateway_id, m.gateway_id), 0);
    uuid_generate_random(m.request_id);
    uuid_unparse_lower(m.request_id, rid);
    m.admitted_at_ms = (uint64_t)time(NULL) * 1000;
    m.deadline_ms = m.admitted_at_ms + 60000;
    strcpy(m.user_id, "via-rpc");
    strcpy(m.item_id, "demo");
    int wl = sk_msg_encode(&m, wire, sizeof wire);
    assert_true(wl > 0);
    rpc_frame pr = {.type = RPC_PRODUCE};
    pr.u.produce.topic = rpc_str("seckill.requests");
    pr.u.produce.key = rpc_str("via-rpc");
    pr.u.produce.payload = (rpc_bytes){wire, (uint32_t)wl};
    pr.u.produce.producer_id = 7;
    for (int i = 0; i < 2; i++) {
        /* the same send, retried: seq 1 both times */
        pr.u.produce.seq = 1;
        assert_int_equal(rpc_client_call(good, &pr, &reply, 2000), 0);
        assert_int_equal(reply.type, RPC_ERROR);
        assert_int_equal(reply.u.error.code, EPERM);
        rpc_frame_release(&reply);
    }
    pr.u.produce.seq = 5;
    assert_int_equal(rpc_client_call(good, &pr, &reply, 2000), 0);
    assert_int_equal(reply.type, RPC_ERROR);
    assert_int_equal(reply.u.error.code, EPERM);
    rpc_frame_release(&reply);
    pr.u.produce.topic = rpc_str("no.such.topic");
    assert_int_equal(rpc_client_call(good, &pr, &reply, 2000), 0);
    assert_int_equal(reply.type, RPC_ERROR);
    assert_int_equal(reply.u.error.code, EPERM);
    rpc_frame_release(&reply);
    http_resp hr;
    snprintf(path, sizeof path, "/seckill/result/%s", rid);
    sleep_ms(300); /* time a worker would have had to decide it */
    assert_int_equal(http_do(cl.gw[0].port, "GET", path, NULL, NULL, 0, &hr), 0);
    assert_int_equal(hr.status, 404);
    assert_int_equal(json_field(hr.body, "result", v, sizeof v), 0);
    assert_string_equal(v, "not_found");
    assert_int_equal(http_stock_left(cl.gw[0].port, "demo"), 10); /* nothing sold */
    /* the refusals are counted */
    assert_int_equal(http_do(cl.gw[0].port, "GET", "/metrics", NULL, NULL, 0, &hr), 0);
    assert_non_null(strstr(hr.body, "seckill_rpc_auth_failures_total "));
    assert_null(strstr(hr.body, "seckill_rpc_auth_failures_total 0\n"));
    assert_null(strstr(hr.body, "seckill_rpc_denied_total 0\n"));
    rpc_client_destroy(good);
    cluster_stop(&cl);
}

static rpc_client *role_client(const char *addr, const char *id, const char *group,
                               uint32_t role)
{
    rpc_client *c = NULL;
    assert_int_equal(rpc_role_client(addr, id, group, role, SECRET, &c), 0);
    return c;
}

/* One call that must come back as ERROR code. */
static void call_refused(rpc_client *c, const rpc_frame *f, int code)
{
    rpc_frame reply;
    assert_int_equal(rpc_client_call(c, f, &reply, 2000), 0);
    if (reply.type != RPC_ERROR || reply.u.error.code != code)
        fail_msg("%s: got %s code %d, want ERROR %d", rpc_type_name(f->type),
                 rpc_type_name(reply.type), reply.type == RPC_ERROR ? reply.u.error.code : 0,
                 code);
    rpc_frame_release(&reply);
}

static long metric(int port, const char *name)
{
    http_resp hr;
    char needle[128];
    assert_int_equal(http_do(port, "GET", "/metrics", NULL, NULL, 0, &hr), 0);
    snprintf(needle, sizeof needle, "\n%s ", name);
    const char *p = strstr(hr.body, needle);
    assert_non_null(p);
    return strtol(p + strlen(needle), NULL, 10);
}

/* What each role may do: the order sink takes no requests and sends no
 * outcomes or stock; a purchase worker never touches the order topic; nobody
 * PRODUCEs (it_orders has the order topic itself, with inventory = memory). */
static void test_rpc_roles(void **state)
{
    (void)state;
    cluster cl;
    cluster_start(&cl, 1, 1, 10, NULL);
    char addr[64];
    snprintf(addr, sizeof addr, "tcp:127.0.0.1:%d", cl.gw[0].rpc_port);
    int port = cl.gw[0].port;
    long denied0 = metric(port, "seckill_rpc_denied_total");

    rpc_client *sink = role_client(addr, "sink-1", "orders", RPC_ROLE_ORDERS);
    rpc_frame pr = {.type = RPC_PRODUCE};
    pr.u.produce.topic = rpc_str("seckill.orders");
    pr.u.produce.key = rpc_str("k");
    pr.u.produce.payload = (rpc_bytes){"\x00junk", 5};
    call_refused(sink, &pr, EPERM);
    rpc_frame fe = {.type = RPC_FETCH};
    fe.u.fetch.topic = rpc_str("seckill.requests");
    fe.u.fetch.max_messages = 1;
    call_refused(sink, &fe, EPERM);
    rpc_frame res = {.type = RPC_RESULT};
    assert_int_equal(uuid_parse(cl.gw[0].gateway_id, res.u.result.gateway_id), 0);
    uuid_generate_random(res.u.result.request_id);
    res.u.result.item_id = rpc_str("demo");
    call_refused(sink, &res, EPERM);
    rpc_frame st = {.type = RPC_STOCK};
    st.u.stock.item_id = rpc_str("demo");
    st.u.stock.left = 0;
    call_refused(sink, &st, EPERM);
    rpc_frame reply;

    rpc_client *wk = role_client(addr, "w-x", "seckill", RPC_ROLE_PURCHASE);
    call_refused(wk, &pr, EPERM); /* into the order topic */
    rpc_frame co = {.type = RPC_COMMIT};
    co.u.commit.topic = rpc_str("seckill.orders");
    call_refused(wk, &co, EPERM);

    /* the stock flag only moves for purchase workers: still on sale */
    http_resp r;
    assert_int_equal(http_buy(port, "{\"user_id\":\"u-roles\",\"item_id\":\"demo\"}", &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(metric(port, "seckill_rpc_denied_total"), denied0 + 6);
    rpc_client_destroy(wk);
    rpc_client_destroy(sink);

    /* a role with another role's group is turned away after the handshake */
    rpc_client *odd = role_client(addr, "odd", "orders", RPC_ROLE_PURCHASE);
    fe.u.fetch.topic = rpc_str("seckill.requests");
    int rc = rpc_client_call(odd, &fe, &reply, 1000);
    if (rc == 0) {
        assert_int_not_equal(reply.type, RPC_FETCH_OK);
        rpc_frame_release(&reply);
    }
    rpc_client_destroy(odd);
    cluster_stop(&cl);
}

/* A RESULT counts only for a request this gateway issued and handed to the
 * connection that answers it: one invented by a peer is refused and never
 * served by GET /seckill/result; one that comes after the buyer got 504 is
 * real and is served; the same one again is refused. */
static void test_rpc_result_must_be_issued(void **state)
{
    (void)state;
    cluster cl;
    wait_timeout_ms = 400;
    cluster_start(&cl, 1, 1, 10, NULL);
    wait_timeout_ms = 5000;
    char addr[64], path[96], v[64], rid[40];
    snprintf(addr, sizeof addr, "tcp:127.0.0.1:%d", cl.gw[0].rpc_port);
    int port = cl.gw[0].port;
    /* this test plays the only worker */
    pid_t w = cl.workers[0];
    cl.workers[0] = 0;
    assert_int_equal(proc_stop(w, SIGTERM), 0);
    rpc_client *me = role_client(addr, "me", "seckill", RPC_ROLE_PURCHASE);

    /* invented: never issued */
    rpc_frame res = {.type = RPC_RESULT}, reply;
    assert_int_equal(uuid_parse(cl.gw[0].gateway_id, res.u.result.gateway_id), 0);
    uuid_generate_random(res.u.result.request_id);
    res.u.result.result = SK_SUCCESS;
    res.u.result.item_id = rpc_str("demo");
    res.u.result.order_id = rpc_str("123e4567-e89b-12d3-a456-426614174000");
    call_refused(me, &res, EPERM);
    uuid_unparse_lower(res.u.result.request_id, rid);
    snprintf(path, sizeof path, "/seckill/result/%s", rid);
    http_resp hr;
    assert_int_equal(http_do(port, "GET", path, NULL, NULL, 0, &hr), 0);
    assert_int_equal(hr.status, 404);

    /* a real request nobody answers in time: 504 with its id */
    rpc_frame fe = {.type = RPC_FETCH};
    fe.u.fetch.topic = rpc_str("seckill.requests");
    fe.u.fetch.max_messages = 16;
    fe.u.fetch.max_wait_ms = 0;
    assert_int_equal(rpc_client_call(me, &fe, &reply, 2000), 0); /* the group is live */
    assert_int_equal(reply.type, RPC_FETCH_OK);
    rpc_frame_release(&reply);
    http_resp r;
    assert_int_equal(http_buy(port, "{\"user_id\":\"u-late\",\"item_id\":\"demo\"}", &r), 0);
    assert_int_equal(r.status, 504);
    assert_int_equal(json_field(r.body, "request_id", rid, sizeof rid), 0);
    /* not decided yet, and the gateway says so instead of "unknown" */
    snprintf(path, sizeof path, "/seckill/result/%s", rid);
    assert_int_equal(http_do(port, "GET", path, NULL, NULL, 0, &hr), 0);
    assert_int_equal(hr.status, 202);
    assert_int_equal(json_field(hr.body, "result", v, sizeof v), 0);
    assert_string_equal(v, "pending");

    /* its message is still in flight: the worker takes it now and decides */
    sk_msg m;
    int found = 0;
    fe.u.fetch.max_wait_ms = 500;
    for (int i = 0; i < 10 && !found; i++) {
        assert_int_equal(rpc_client_call(me, &fe, &reply, 3000), 0);
        assert_int_equal(reply.type, RPC_FETCH_OK);
        rpc_msg_iter it;
        rpc_msg mm;
        rpc_msg_iter_init(&it, &reply.u.fetch_ok);
        while (rpc_msg_iter_next(&it, &mm)) {
            char got[40];
            assert_int_equal(sk_msg_decode(mm.value.ptr, mm.value.len, &m), 0);
            uuid_unparse_lower(m.request_id, got);
            found |= !strcmp(got, rid);
        }
        rpc_frame_release(&reply);
    }
    assert_true(found);
    memcpy(res.u.result.request_id, m.request_id, 16);
    assert_int_equal(rpc_client_call(me, &res, &reply, 2000), 0);
    assert_int_equal(reply.type, RPC_ACK);
    rpc_frame_release(&reply);
    snprintf(path, sizeof path, "/seckill/result/%s", rid);
    assert_int_equal(http_do(port, "GET", path, NULL, NULL, 0, &hr), 0);
    assert_int_equal(hr.status, 200);
    assert_int_equal(json_field(hr.body, "result", v, sizeof v), 0);
    assert_string_equal(v, "success");
    /* answered once; a second answer is refused */
    call_refused(me, &res, EPERM);
    rpc_client_destroy(me);
    cluster_stop(&cl);
}

/* 1,100 connections from loopback that never finish a handshake (each sent
 * half a HELLO and drips) do not keep a real worker out: a worker started
 * during the flood connects and sells. */
static void test_rpc_flood_real_worker(void **state)
{
    (void)state;
    enum { FLOOD = 1100 };
    cluster cl;
    cluster_start(&cl, 1, 1, 10, NULL);
    int port = cl.gw[0].port;
    int *fds = calloc(FLOOD, sizeof(int));
    uint8_t hello[256];
    size_t hn = 0;
    rpc_frame h = {.type = RPC_HELLO};
    h.u.hello.worker_id = rpc_str("flood");
    h.u.hello.group = rpc_str("seckill");
    h.u.hello.role = RPC_ROLE_PURCHASE;
    assert_int_equal(rpc_encode(&h, hello, sizeof hello, &hn), 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)cl.gw[0].rpc_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < FLOOD; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fds[i] >= 0);
        assert_int_equal(connect(fds[i], (struct sockaddr *)&sa, sizeof sa), 0);
        send(fds[i], hello, hn / 2, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    /* a new worker joins during the flood (its two threads' connections are
     * seen as live consumers next to the old worker's two), the old one leaves */
    start_worker(&cl);
    for (int i = 0; i < FLOOD; i++)
        send(fds[i], hello + hn / 2, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    long live = 0;
    for (int i = 0; i < 500 && (live = metric(port, "seckill_workers_live")) < 4; i++)
        sleep_ms(10);
    if (live < 4)
        fail_msg("the new worker did not get in: %ld consumers live", live);
    pid_t old = cl.workers[0];
    cl.workers[0] = 0;
    assert_int_equal(proc_stop(old, SIGTERM), 0);
    http_resp r;
    for (int i = 0; i < 3; i++) {
        char body[96];
        snprintf(body, sizeof body, "{\"user_id\":\"flood-buyer-%d\",\"item_id\":\"demo\"}", i);
        assert_int_equal(http_buy(port, body, &r), 0);
        if (r.status != 200)
            fail_msg("buyer %d during the flood: %d %s", i, r.status, r.body);
    }
    for (int i = 0; i < FLOOD; i++)
        close(fds[i]);
    free(fds);
    cluster_stop(&cl);
}

/* Wait up to ms for a line containing needle in the file at path. */
static int log_has(const char *path, const char *needle, int ms)
{
    for (uint64_t until = mono_ms() + (uint64_t)ms;;) {
        FILE *f = fopen(path, "r");
        char line[512];
        int found = 0;
        while (f && !found && fgets(line, sizeof line, f))
            found = strstr(line, needle) != NULL;
        if (f)
            fclose(f);
        if (found)
            return 1;
        if (mono_ms() >= until)
            return 0;
        sleep_ms(20);
    }
}

static void buy_late_item(int port, const char *user)
{
    char body[96];
    http_resp r;
    snprintf(body, sizeof body, "{\"user_id\":\"%s\",\"item_id\":\"late\"}", user);
    assert_int_equal(http_buy(port, body, &r), 0);
    if (r.status != 200)
        fail_msg("%s on %d: %d %s", user, port, r.status, r.body);
}

/* Workers with no [rpc] gateways: they find the two registered gateways and
 * sell through both; a third gateway started later is found and served
 * within about 2 s (1 s refresh); a gateway stopped cleanly (DEL) and one
 * SIGKILLed (its key expires after registry_ttl_ms) are dropped. */
static void test_registry_discovery(void **state)
{
    (void)state;
    cluster cl;
    char log[160], ini[2048], needle[96], sink_path[128];
    const char *extra = "[item.late]\nstock = 100\n[rpc]\nregistry_ttl_ms = 900\n";
    snprintf(log, sizeof log, "/tmp/seckill-itw-discovery-%d.log", (int)getpid());
    unlink(log);
    workers_discover = 1;
    worker_log = log;
    cluster_start(&cl, 2, 1, 1000, extra); /* returns once both gateways have a consumer */
    workers_discover = 0;
    worker_log = NULL;
    for (int g = 0; g < 2; g++) {
        snprintf(needle, sizeof needle, "gateway tcp:127.0.0.1:%d found", cl.gw[g].rpc_port);
        if (!log_has(log, needle, 2000))
            fail_msg("no '%s' in %s", needle, log);
    }

    /* a sale through both gateways, every invariant checked */
    start_sink(&cl, sink_path, sizeof sink_path);
    run_buyers(&cl, NULL);
    assert_int_equal(check_sale(&cl, sink_path, 0), 1000);
    int per_gw[2] = {0, 0};
    for (int u = 0; u < USERS; u++) /* buyer i (user u % BUYERS) used gateway i % 2 */
        per_gw[(u % BUYERS) % 2] += status[u] == 200;
    printf("discovery sale: %d successes on gateway 0, %d on gateway 1\n", per_gw[0], per_gw[1]);
    assert_true(per_gw[0] > 0 && per_gw[1] > 0);

    /* a third gateway, started later */
    common_ini(ini, sizeof ini, &cl, extra);
    uint64_t t0 = mono_ms();
    assert_int_equal(gw_proc_start(&cl.gw[2], gateway_bin, ini), 0);
    cl.ngw = 3;
    wait_ready(cl.gw[2].port);
    uint64_t took = mono_ms() - t0;
    printf("third gateway served after %llu ms\n", (unsigned long long)took);
    assert_true(took < 3000);
    buy_late_item(cl.gw[2].port, "third-1");
    buy_late_item(cl.gw[2].port, "third-2");

    /* a clean stop deletes its key: dropped at the next refresh */
    int rpc1 = cl.gw[1].rpc_port, rpc2 = cl.gw[2].rpc_port;
    assert_int_equal(gw_proc_stop(&cl.gw[1]), 0);
    snprintf(needle, sizeof needle, "gateway tcp:127.0.0.1:%d dropped", rpc1);
    if (!log_has(log, needle, 2500))
        fail_msg("no '%s' in %s", needle, log);
    /* a SIGKILL: dropped once its key expires */
    t0 = mono_ms();
    kill(cl.gw[2].pid, SIGKILL);
    assert_int_equal(gw_proc_stop(&cl.gw[2]), 128 + SIGKILL);
    snprintf(needle, sizeof needle, "gateway tcp:127.0.0.1:%d dropped", rpc2);
    if (!log_has(log, needle, 900 + 3000))
        fail_msg("no '%s' in %s", needle, log);
    printf("killed gateway dropped after %llu ms (ttl 900)\n",
           (unsigned long long)(mono_ms() - t0));

    /* the survivor is still served, without waiting on the dead ones */
    t0 = mono_ms();
    for (int i = 0; i < 10; i++) {
        char user[32];
        snprintf(user, sizeof user, "survivor-%d", i);
        buy_late_item(cl.gw[0].port, user);
    }
    assert_true(mono_ms() - t0 < 5000);
    cluster_stop(&cl); /* stops the sink and the worker (exit 0: sanitizers clean) */
    unlink(log);
}

/* After a failed assertion: kill whatever the test left running. */
static int teardown(void **state)
{
    (void)state;
    workers_discover = 0;
    worker_log = NULL;
    if (sink_pid > 0)
        proc_stop(sink_pid, SIGKILL);
    sink_pid = 0;
    if (current) {
        for (int i = 0; i < current->nworkers; i++)
            if (current->workers[i] > 0)
                proc_stop(current->workers[i], SIGKILL);
        for (int i = 0; i < current->ngw; i++)
            if (current->gw[i].pid > 0)
                proc_stop(current->gw[i].pid, SIGKILL);
        redis_server_destroy(&current->rs);
        redis_cluster_destroy(&current->rc);
        current = NULL;
    }
    min_replicas_ack = 0;
    user_of = user_plain;
    return 0;
}

/* ---- TLS ---- */

/* A sale over mutual TLS: the gateway serves TLS with its certificate and
 * requires client certificates from the test CA; the workers verify it
 * against that CA and present theirs (one file for both, as a shared config
 * would have it: the test's server certificate is valid for clients too). A
 * plain rpc client gets nowhere on the TLS port, and the secret still
 * matters inside TLS. Bad TLS files stop either program at start with 78. */
static void test_rpc_tls_sale(void **state)
{
    (void)state;
    cluster cl;
    char certs[96], cmd[256], extra[640];
    snprintf(certs, sizeof certs, "/tmp/seckill-itw-certs.%d", (int)getpid());
    snprintf(cmd, sizeof cmd, "sh %s/tests/gen_test_certs.sh %s", SOURCE_DIR, certs);
    assert_int_equal(system(cmd), 0);
    snprintf(extra, sizeof extra,
             "[rpc]\ntls_cert = %s/server.crt\ntls_key = %s/server.key\ntls_ca = %s/ca.crt\n",
             certs, certs, certs);
    cluster_start(&cl, 1, 2, 40, extra);
    int port = cl.gw[0].port;

    /* 60 buyers one after another, stock 40: exactly 40 sold, 20 sold out */
    int ok = 0, sold_out = 0;
    for (int u = 0; u < 60; u++) {
        http_resp r;
        char body[96];
        snprintf(body, sizeof body, "{\"user_id\":\"tls-%d\",\"item_id\":\"demo\"}", u);
        assert_int_equal(http_buy(port, body, &r), 0);
        if (r.status == 200)
            ok++;
        else if (r.status == 409)
            sold_out++;
        else
            fail_msg("user tls-%d: %d %s", u, r.status, r.body);
    }
    assert_int_equal(ok, 40);
    assert_int_equal(sold_out, 20);
    assert_int_equal(http_stock_left(port, "demo"), 0);
    assert_int_equal(metric(port, "seckill_rpc_tls_failures_total"), 0);
    assert_int_equal(metric(port, "seckill_rpc_auth_failures_total"), 0);

    char addr[64], ca[128], crt[128], key[128];
    snprintf(addr, sizeof addr, "tcp:127.0.0.1:%d", cl.gw[0].rpc_port);
    snprintf(ca, sizeof ca, "%s/ca.crt", certs);
    snprintf(crt, sizeof crt, "%s/client.crt", certs);
    snprintf(key, sizeof key, "%s/client.key", certs);
    rpc_client_config cc;
    rpc_client *c = NULL;
    rpc_client_config_init(&cc);
    cc.addr = addr;
    cc.worker_id = "tester";
    cc.group = "seckill";
    cc.role = RPC_ROLE_PURCHASE;
    cc.secret = SECRET;
    cc.secret_len = strlen(SECRET);
    assert_int_equal(rpc_client_create(&cc, &c), 0); /* plain */
    assert_true(rpc_client_wait_ready(c, 1000) != 0);
    rpc_client_destroy(c);
    assert_true(metric(port, "seckill_rpc_tls_failures_total") >= 1);
    /* each wait returns at the refusal; the long bound is for a loaded
     * machine, where a refusal read as a reset makes the client try again */
    cc.tls_ca = ca; /* TLS, but no client certificate */
    assert_int_equal(rpc_client_create(&cc, &c), 0);
    assert_int_equal(rpc_client_wait_ready(c, 10000), -EACCES);
    rpc_client_destroy(c);
    cc.tls_cert = crt;
    cc.tls_key = key;
    cc.secret = "not-the-secret"; /* the certificate alone is not enough */
    cc.secret_len = strlen(cc.secret);
    assert_int_equal(rpc_client_create(&cc, &c), 0);
    assert_int_equal(rpc_client_wait_ready(c, 10000), -EACCES);
    rpc_client_destroy(c);
    assert_true(metric(port, "seckill_rpc_auth_failures_total") >= 1);
    cc.secret = SECRET;
    cc.secret_len = strlen(SECRET);
    assert_int_equal(rpc_client_create(&cc, &c), 0);
    assert_int_equal(rpc_client_wait_ready(c, 10000), 0);
    rpc_client_destroy(c);
    cluster_stop(&cl);

    /* a key that does not match its certificate, a CA file that is not
     * there: configuration errors naming the key, exit 78 */
    char ini[1024], path[160], out[512], err[1024];
    snprintf(path, sizeof path, "%s/bad.ini", certs);
    snprintf(ini, sizeof ini,
             "[rpc]\nlisten = tcp:127.0.0.1:0\nsecret = " SECRET "\n"
             "tls_cert = %s/server.crt\ntls_key = %s/client.key\n[item.demo]\nstock = 1\n",
             certs, certs);
    write_text(path, ini);
    const char *gargv[] = {gateway_bin, "-c", path, "--check-config", NULL};
    assert_int_equal(run_capture(gargv, out, sizeof out, err, sizeof err), 78);
    assert_non_null(strstr(err, "[rpc] tls_key"));
    assert_non_null(strstr(err, "does not match"));
    snprintf(ini, sizeof ini,
             "[worker]\ninventory = redis\n[rpc]\nsecret = " SECRET "\n"
             "gateways = tcp:127.0.0.1:1\ntls_ca = %s/no-such-ca.crt\n[item.demo]\nstock = 1\n",
             certs);
    write_text(path, ini);
    const char *wargv[] = {worker_bin, "-c", path, NULL};
    assert_int_equal(run_capture(wargv, out, sizeof out, err, sizeof err), 78);
    assert_non_null(strstr(err, "[rpc] tls_ca"));
    assert_non_null(strstr(err, "No such file"));
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", certs);
    assert_int_equal(system(cmd), 0);
}

/* ---- on a Redis Cluster ---- */

/* Sell 1,000 in 3 buckets to 5,000 buyers through 2 gateways and 3
 * workers: exactly the stock, every 200 once in the sink. */
static void rcluster_sale(void (*users)(int, char *, size_t))
{
    cluster cl;
    char sink_path[128];
    user_of = users;
    cluster_start(&cl, 2, 3, 1000, "[item.demo]\nstock_buckets = 3\n");
    start_sink(&cl, sink_path, sizeof sink_path);
    run_buyers(&cl, NULL);
    assert_int_equal(check_sale(&cl, sink_path, 0), 1000);
    cluster_stop(&cl);
}

static void test_rcluster_sale(void **state)
{
    (void)state;
    rcluster_sale(user_plain);
}

static void test_rcluster_skewed(void **state)
{
    (void)state;
    rcluster_sale(user_skewed);
}

/* Buy item demo as prefix-0, prefix-1, ... until the gateway's view says
 * none is left (at most tries). Returns the 200s; any other answer is a
 * 409 sold_out. */
static int buy_until_sold_out(int port, const char *prefix, int tries)
{
    http_resp r;
    int sold = 0;
    for (int i = 0; i < tries && http_stock_left(port, "demo") != 0; i++) {
        char body[96];
        snprintf(body, sizeof body, "{\"user_id\":\"%s-%d\",\"item_id\":\"demo\"}", prefix, i);
        assert_int_equal(http_buy(port, body, &r), 0);
        if (r.status != 200 && r.status != 409)
            fail_msg("buyer %s-%d: %d %s", prefix, i, r.status, r.body);
        sold += r.status == 200;
    }
    return sold;
}

#define ADMIN_TOKEN "it-workers-admin-token-0123"

/* A sold-out item on a cluster gets more stock: by a reload (SIGHUP) and by
 * the admin API. Exactly the units added are sold; the admin API shows the
 * cluster's total, refuses to lower it (501, nothing changed) and raises
 * the per-user limit, which every worker follows. */
static void test_rcluster_raise_stock(void **state)
{
    (void)state;
    cluster cl;
    http_resp r;
    char hdr[160];
    snprintf(hdr, sizeof hdr, "Authorization: Bearer " ADMIN_TOKEN "\r\n"
                              "Content-Type: application/json\r\n");
    cluster_start(&cl, 1, 2, 20,
                  "[item.demo]\nstock_buckets = 3\n"
                  "[admin]\nlisten = 127.0.0.1:0\ntoken = " ADMIN_TOKEN "\n");
    int port = cl.gw[0].port, aport = cl.gw[0].admin_port;
    assert_true(aport > 0);
    assert_int_equal(buy_until_sold_out(port, "first", 200), 20);

    /* the file says 30 now: SIGHUP adds 10 units */
    FILE *f = fopen(cl.gw[0].config, "r");
    assert_non_null(f);
    char text[4096], out[4096];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    char *at = strstr(text, "stock = 20\n");
    assert_non_null(at);
    snprintf(out, sizeof out, "%.*sstock = 30\n%s", (int)(at - text), text, at + 11);
    write_text(cl.gw[0].config, out);
    kill(cl.gw[0].pid, SIGHUP);
    uint64_t t0 = mono_ms();
    while (http_stock_left(port, "demo") != 10) {
        assert_true(mono_ms() < t0 + 10000);
        sleep_ms(50);
    }
    assert_int_equal(buy_until_sold_out(port, "second", 200), 10);

    /* the admin API: the total from the cluster, raised again, never lowered */
    assert_int_equal(http_do(aport, "GET", "/items/demo", hdr, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"stock_total\":30"));
    assert_non_null(strstr(r.body, "\"stock_left\":0"));
    const char *raise = "{\"stock\":35}";
    assert_int_equal(http_do(aport, "PATCH", "/items/demo", hdr, raise, strlen(raise), &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(http_stock_left(port, "demo"), 5);
    const char *lower = "{\"stock\":33}";
    assert_int_equal(http_do(aport, "PATCH", "/items/demo", hdr, lower, strlen(lower), &r), 0);
    assert_int_equal(r.status, 501);
    /* a second unit for each buyer: the workers read the new limit within a
     * second; until then a second purchase is refused (409), never sold */
    const char *limit = "{\"per_user_limit\":2}";
    assert_int_equal(http_do(aport, "PATCH", "/items/demo", hdr, limit, strlen(limit), &r), 0);
    assert_int_equal(r.status, 200);
    t0 = mono_ms();
    for (;;) {
        assert_int_equal(http_buy(port, "{\"user_id\":\"first-0\",\"item_id\":\"demo\"}", &r), 0);
        if (r.status == 200)
            break;
        assert_int_equal(r.status, 409);
        assert_non_null(strstr(r.body, "already_purchased"));
        assert_true(mono_ms() < t0 + 10000);
        sleep_ms(100);
    }
    assert_int_equal(buy_until_sold_out(port, "third", 200), 4);
    assert_int_equal(http_do(aport, "GET", "/items/demo", hdr, NULL, 0, &r), 0);
    assert_non_null(strstr(r.body, "\"stock_total\":35"));
    cluster_stop(&cl);
}

/* After a faulty sale: nothing was lost, so what was not sold is still for
 * sale and sells, to exactly the stock, each order once in the sink. */
static void sell_the_rest(cluster *cl, const char *sink_path)
{
    http_resp r;
    long left = -1;
    for (int i = 0; i < 3000 && left != 0; i++) {
        char body[96];
        snprintf(body, sizeof body, "{\"user_id\":\"after-%d\",\"item_id\":\"demo\"}", i);
        assert_int_equal(http_buy(cl->gw[i % cl->ngw].port, body, &r), 0);
        left = http_stock_left(cl->gw[0].port, "demo");
    }
    assert_int_equal(left, 0);
    assert_int_equal(sink_orders(sink_path, (int)cl->stock, NULL, 0), cl->stock);
}

/* The master of bucket 1, SIGKILLed mid-sale; the old master comes back as
 * the replica once the promotion happened (WAIT needs one). */
static void kill_bucket_master(cluster *cl)
{
    char tag[SK_CLUSTER_TAG_MAX];
    sale_cluster_bucket_tag("demo", 1, 3, tag);
    unsigned slot = sk_cluster_slot(tag, strlen(tag));
    int m = redis_cluster_master_of(&cl->rc, slot), now;
    assert_true(m >= 0);
    wait_mid_sale(cl);
    redis_cluster_kill(&cl->rc, m);
    uint64_t t0 = mono_ms();
    while ((now = redis_cluster_master_of(&cl->rc, slot)) < 0 || now == m) {
        assert_true(mono_ms() < t0 + 30000);
        sleep_ms(50);
    }
    printf("failover: replica promoted %llu ms after the kill\n",
           (unsigned long long)(mono_ms() - t0));
    assert_int_equal(redis_cluster_restart(&cl->rc, m), 0);
}

/* A master SIGKILLed mid-sale with min_replicas_ack = 1: never oversold,
 * no 200 lost (each in the sink), 503 and 504 only where allowed. */
static void test_rcluster_master_killed(void **state)
{
    (void)state;
    cluster cl;
    char sink_path[128];
    min_replicas_ack = 1;
    cluster_start(&cl, 2, 3, 1000, "[item.demo]\nstock_buckets = 3\n");
    start_sink(&cl, sink_path, sizeof sink_path);
    run_buyers(&cl, kill_bucket_master);
    check_sale(&cl, sink_path, 1);
    sell_the_rest(&cl, sink_path);
    cluster_stop(&cl);
}

/* The only worker at first SIGKILLs itself right after the first half of
 * its first transfer (SK_CLUSTER_FAULT): two workers started then complete
 * the transfer and the sale, which sells exactly its stock. */
static void faulty_worker_dies(cluster *cl)
{
    int st = 0;
    uint64_t t0 = mono_ms();
    while (waitpid(cl->workers[0], &st, WNOHANG) != cl->workers[0]) {
        assert_true(mono_ms() < t0 + 30000);
        sleep_ms(20);
    }
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL); /* by itself, in a transfer */
    cl->workers[0] = 0;
    start_worker(cl);
    start_worker(cl);
}

static void test_rcluster_worker_killed_mid_transfer(void **state)
{
    (void)state;
    cluster cl;
    char sink_path[128];
    user_of = user_skewed;
    setenv(SK_CLUSTER_FAULT_ENV, "kill-after-take", 1);
    cluster_start(&cl, 2, 1, 1000, "[item.demo]\nstock_buckets = 3\n");
    unsetenv(SK_CLUSTER_FAULT_ENV);
    start_sink(&cl, sink_path, sizeof sink_path);
    run_buyers(&cl, faulty_worker_dies);
    check_sale(&cl, sink_path, 1);
    sell_the_rest(&cl, sink_path);
    cluster_stop(&cl);
}

/* Bucket 0's slot moves to another master mid-sale, keys and all: first
 * half-moved (ASK), then done (MOVED). */
static void reshard_bucket(cluster *cl)
{
    char tag[SK_CLUSTER_TAG_MAX];
    sale_cluster_bucket_tag("demo", 0, 3, tag);
    unsigned slot = sk_cluster_slot(tag, strlen(tag));
    int from = redis_cluster_master_of(&cl->rc, slot);
    int to = redis_cluster_master_of(&cl->rc, (slot + 8192) % 16384); /* another third */
    assert_true(from >= 0 && to >= 0 && from != to);
    wait_mid_sale(cl);
    if (redis_cluster_move_slot(&cl->rc, slot, to, 1) < 0)
        fail_msg("moving slot %u: %s", slot, cl->rc.error);
    sleep_ms(300);
    if (redis_cluster_finish_move(&cl->rc, slot, to) < 0)
        fail_msg("finishing slot %u: %s", slot, cl->rc.error);
    assert_int_equal(redis_cluster_master_of(&cl->rc, slot), to);
}

/* Resharding mid-sale: never oversold, no 200 lost, and the sale sells
 * exactly its stock afterwards. */
static void test_rcluster_reshard(void **state)
{
    (void)state;
    cluster cl;
    char sink_path[128];
    cluster_start(&cl, 2, 2, 1000, "[item.demo]\nstock_buckets = 3\n");
    start_sink(&cl, sink_path, sizeof sink_path);
    run_buyers(&cl, reshard_bucket);
    check_sale(&cl, sink_path, 1);
    sell_the_rest(&cl, sink_path);
    cluster_stop(&cl);
}

static void whole_cluster_down(cluster *cl)
{
    http_resp r;
    wait_mid_sale(cl);
    for (int i = 0; i < REDIS_CLUSTER_NODES; i++)
        redis_cluster_kill(&cl->rc, i);
    for (int i = 0; i < 500; i++) {
        assert_int_equal(http_do(cl->gw[0].port, "GET", "/readyz", NULL, NULL, 0, &r), 0);
        if (r.status == 503)
            break;
        sleep_ms(10);
    }
    assert_int_equal(r.status, 503);
    sleep_ms(500);
    for (int i = 0; i < REDIS_CLUSTER_NODES; i++)
        assert_int_equal(redis_cluster_restart(&cl->rc, i), 0);
    assert_int_equal(redis_cluster_wait_ok(&cl->rc, 30000), 0);
}

/* Every node down mid-sale: /readyz 503, answers 503/504 only, and the sale
 * goes on once the cluster is back, nothing restarted. */
static void test_rcluster_down_and_back(void **state)
{
    (void)state;
    cluster cl;
    char sink_path[128];
    cluster_start(&cl, 2, 2, 1000, "[item.demo]\nstock_buckets = 3\n");
    start_sink(&cl, sink_path, sizeof sink_path);
    run_buyers(&cl, whole_cluster_down);
    check_sale(&cl, sink_path, 1);
    wait_ready(cl.gw[1].port);
    http_resp r;
    assert_int_equal(http_buy(cl.gw[1].port, "{\"user_id\":\"back\",\"item_id\":\"demo\"}", &r), 0);
    assert_true(r.status == 200 || r.status == 409);
    cluster_stop(&cl);
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
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_rpc_auth_and_routing, teardown),
        cmocka_unit_test_teardown(test_rpc_roles, teardown),
        cmocka_unit_test_teardown(test_rpc_result_must_be_issued, teardown),
        cmocka_unit_test_teardown(test_rpc_flood_real_worker, teardown),
        cmocka_unit_test_teardown(test_pay_timeout, teardown),
        cmocka_unit_test_teardown(test_two_gateways_four_workers, teardown),
        cmocka_unit_test_teardown(test_worker_killed, teardown),
        cmocka_unit_test_teardown(test_redis_restart, teardown),
        cmocka_unit_test_teardown(test_redis_paused_answers_are_true, teardown),
        cmocka_unit_test_teardown(test_registry_discovery, teardown),
        cmocka_unit_test_teardown(test_rpc_tls_sale, teardown),
    };
    const struct CMUnitTest rcluster[] = {
        cmocka_unit_test_teardown(test_registry_discovery, teardown),
        cmocka_unit_test_teardown(test_rcluster_sale, teardown),
        cmocka_unit_test_teardown(test_rcluster_skewed, teardown),
        cmocka_unit_test_teardown(test_rcluster_raise_stock, teardown),
        cmocka_unit_test_teardown(test_rcluster_master_killed, teardown),
        cmocka_unit_test_teardown(test_rcluster_reshard, teardown),
        cmocka_unit_test_teardown(test_rcluster_worker_killed_mid_transfer, teardown),
        cmocka_unit_test_teardown(test_rcluster_down_and_back, teardown),
    };
    if (argc > 3 && !strcmp(argv[3], "redis-cluster")) {
        use_rcluster = 1;
        return cmocka_run_group_tests_name("integration.workers.redis_cluster", rcluster, NULL,
                                           NULL);
    }
    return cmocka_run_group_tests_name("integration.workers", tests, NULL, NULL);
}
