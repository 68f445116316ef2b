/*
 * it_orders.c - durable orders of the memory inventory, with real processes:
 * a seckill-gateway (embedded workers, orders in [queue] data_dir) and the
 * order sink (seckill-worker --role orders, inventory = memory) reading the
 * gateway's order topic over rpc/.
 *
 * Buy 3, pay 2, let 1 time out (its stock comes back once); SIGKILL the
 * gateway and start it again on the same data_dir: stock, order states and
 * the buyers' orders are as before; sell out the rest (never more than the
 * stock); SIGKILL the sink on the way: it stores every order event once.
 * The sink reads the order topic over mutual TLS as well.
 *
 * argv: seckill-gateway, seckill-worker.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "rpc.h"
#include "tests/test_time.h"

#define SECRET "it-orders-secret"
#define STOCK 10

static const char *gateway_bin, *worker_bin;

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* POST /seckill for user: the status; the order id into order (may be NULL). */
static int buy(int port, const char *user, char *order)
{
    http_resp r;
    char body[128];
    snprintf(body, sizeof body, "{\"user_id\":\"%s\",\"item_id\":\"demo\"}", user);
    assert_int_equal(http_buy(port, body, &r), 0);
    if (order && (r.status == 200 || r.status == 409) &&
        json_field(r.body, "order_id", order, 40) != 0)
        order[0] = '\0';
    return r.status;
}

static void order_state(int port, const char *order, char *state)
{
    http_resp r;
    char path[96];
    snprintf(path, sizeof path, "/orders/%s", order);
    assert_int_equal(http_do(port, "GET", path, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_field(r.body, "state", state, 16), 0);
}

static int pay(int port, const char *order)
{
    http_resp r;
    char path[96];
    snprintf(path, sizeof path, "/orders/%s/pay", order);
    assert_int_equal(http_do(port, "POST", path, NULL, NULL, 0, &r), 0);
    return r.status;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void wait_ready(int port)
{
    http_resp r;
    for (int i = 0; i < 500; i++) {
        if (http_do(port, "GET", "/readyz", NULL, NULL, 0, &r) == 0 && r.status == 200)
            return;
        sleep_ms(10);
    }
    fail_msg("gateway on %d never became ready", port);
}

/* Lines of the sink file per type, failing on any (order, type) twice;
 * waits up to 15 s for want reserved events. Fills ids with reserved ones. */
static void sink_counts(const char *path, int want, int counts[3], char (*ids)[40], int cap)
{
    static char keys[256][64];
    for (int tries = 0; tries < 300; tries++) {
        FILE *f = fopen(path, "r");
        char line[1024];
        int nkeys = 0;
        counts[0] = counts[1] = counts[2] = 0;
        if (f) {
            while (fgets(line, sizeof line, f)) {
                char order[40], type[16];
                assert_int_equal(json_field(line, "order_id", order, sizeof order), 0);
                assert_int_equal(json_field(line, "type", type, sizeof type), 0);
                int t = !strcmp(type, "reserved") ? 0 : !strcmp(type, "paid") ? 1 : 2;
                counts[t]++;
                if (t == 0 && ids && counts[0] <= cap)
                    strcpy(ids[counts[0] - 1], order);
                assert_true(nkeys < 256);
                snprintf(keys[nkeys], sizeof keys[nkeys], "%s/%s", order, type);
                for (int k = 0; k < nkeys; k++)
                    if (!strcmp(keys[k], keys[nkeys]))
                        fail_msg("the sink stored %s twice", keys[k]);
                nkeys++;
            }
            fclose(f);
        }
        if (counts[0] >= want)
            return;
        sleep_ms(50);
    }
}

/* first and second: [queue] order_flush of the run before and after the kill */
static void survive_restart(const char *first, const char *second)
{
    char dir[] = "/tmp/seckill-ito-XXXXXX", ini[1024], wini_path[128], wtext[1400];
    char sink_path[128], o[4][40], again[40], st[16];
    gw_proc gw;
    pid_t sink;
    int rpc_port = free_port();
    assert_non_null(mkdtemp(dir));
    /* pay timeout 1 s for the first run, 10 min after the restart */
    const char *fmt = "[gateway]\nwait_timeout_ms = 5000\npark = event\n"
                      "[token_bucket]\nrate = 0\n"
                      "[queue]\ndata_dir = %s/data\nack_timeout_ms = 1000\nlease_timeout_ms = 1000\n"
                      "order_flush = %s\n"
                      "[worker]\npay_timeout_ms = %d\n"
                      "[rpc]\nlisten = tcp:127.0.0.1:%d\nsecret = " SECRET "\n"
                      "[item.demo]\nstock = %d\n";
    snprintf(ini, sizeof ini, fmt, dir, first, 1000, rpc_port, STOCK);
    assert_int_equal(gw_proc_start(&gw, gateway_bin, ini), 0);
    int port = gw.port;
    wait_ready(port);

    /* the sink, over rpc/ */
    char gws[64];
    snprintf(gws, sizeof gws, "[rpc]\ngateways = tcp:127.0.0.1:%d\n", rpc_port);
    assert_int_equal(ini_merge(wtext, sizeof wtext, ini, gws), 0);
    snprintf(wini_path, sizeof wini_path, "%s/worker.ini", dir);
    write_text(wini_path, wtext);
    snprintf(sink_path, sizeof sink_path, "%s/orders.jsonl", dir);
    const char *sargv[] = {worker_bin, "-c", wini_path, "--role", "orders", "--id", "sink-1",
                           "--out", sink_path, NULL};
    assert_int_equal(proc_spawn(sargv, "role=orders", &sink), 0);

    /* buy 3, pay 2 (the second pay is idempotent), let 1 time out */
    assert_int_equal(buy(port, "u1", o[0]), 200);
    assert_int_equal(buy(port, "u2", o[1]), 200);
    assert_int_equal(buy(port, "u3", o[2]), 200);
    assert_int_equal(pay(port, o[0]), 200);
    assert_int_equal(pay(port, o[2]), 200);
    assert_int_equal(pay(port, o[2]), 200);
    assert_int_equal(http_stock_left(port, "demo"), STOCK - 3);
    for (int i = 0; i < 300; i++) {
        order_state(port, o[1], st);
        if (!strcmp(st, "cancelled"))
            break;
        sleep_ms(10);
    }
    assert_string_equal(st, "cancelled");
    sleep_ms(600); /* more reaper rounds: the stock comes back once only */
    assert_int_equal(http_stock_left(port, "demo"), STOCK - 2);
    assert_int_equal(pay(port, o[1]), 409);

    /* SIGKILL: nothing is flushed on the way out */
    assert_int_equal(proc_stop(gw.pid, SIGKILL), 128 + SIGKILL);
    gw.pid = 0;
    gw_proc_stop(&gw);
    snprintf(ini, sizeof ini, fmt, dir, second, 600000, rpc_port, STOCK);
    assert_int_equal(gw_proc_start(&gw, gateway_bin, ini), 0);
    port = gw.port;
    wait_ready(port);
    assert_int_equal(http_stock_left(port, "demo"), STOCK - 2);
    order_state(port, o[0], st);
    assert_string_equal(st, "paid");
    order_state(port, o[1], st);
    assert_string_equal(st, "cancelled");
    order_state(port, o[2], st);
    assert_string_equal(st, "paid");
    /* new requests of the same buyers: their old orders */
    assert_int_equal(buy(port, "u1", again), 409);
    assert_string_equal(again, o[0]);
    assert_int_equal(buy(port, "u3", again), 409);
    assert_string_equal(again, o[2]);
    /* the timed-out buyer may buy again */
    assert_int_equal(buy(port, "u2", o[3]), 200);

    /* the sink dies mid-way and comes back */
    assert_int_equal(proc_stop(sink, SIGKILL), 128 + SIGKILL);
    int sold = 0;
    for (int i = 0; i < 3; i++) {
        char user[24];
        snprintf(user, sizeof user, "late-%d", i);
        sold += buy(port, user, NULL) == 200;
    }
    assert_int_equal(proc_spawn(sargv, "role=orders", &sink), 0);
    for (int i = 3; i < 20; i++) {
        char user[24];
        snprintf(user, sizeof user, "late-%d", i);
        int s = buy(port, user, NULL);
        assert_true(s == 200 || s == 409);
        sold += s == 200;
        if (i == 6) { /* and once more while events stream */
            assert_int_equal(proc_stop(sink, SIGKILL), 128 + SIGKILL);
            assert_int_equal(proc_spawn(sargv, "role=orders", &sink), 0);
        }
    }
    /* never more than the stock: 3 live before, u2 again, the rest now */
    assert_int_equal(sold, STOCK - 3);
    assert_int_equal(http_stock_left(port, "demo"), 0);

    /* every order event once: 3 + 1 + 7 reserved, 2 paid, 1 cancelled */
    int counts[3];
    char ids[16][40];
    sink_counts(sink_path, STOCK + 1, counts, ids, 16);
    assert_int_equal(counts[0], STOCK + 1);
    assert_int_equal(counts[1], 2);
    assert_int_equal(counts[2], 1);
    for (int k = 0; k < 4; k++) {
        int found = 0;
        for (int i = 0; i < counts[0]; i++)
            found |= !strcmp(ids[i], o[k]);
        assert_true(found);
    }
    assert_int_equal(proc_stop(sink, SIGTERM), 0);
    assert_int_equal(gw_proc_stop(&gw), 0);

    /* a second gateway on the same data_dir is refused */
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_orders_survive_restart(void **state)
{
    (void)state;
    survive_restart("sync", "sync");
}

/* async flush: a confirmed order is written before its answer, so a killed
 * process loses none (a machine crash could lose the last 100 ms); the log
 * reopens with either setting */
static void test_orders_survive_restart_async(void **state)
{
    (void)state;
    survive_restart("async", "sync");
}

/* The order sink reads the order topic over mutual TLS: the gateway serves
 * TLS and asks for a client certificate from the test CA, the sink verifies
 * the gateway against that CA and presents its certificate (the same file as
 * the gateway's here: valid for clients too). Every order reaches it. */
static void test_orders_sink_over_tls(void **state)
{
    (void)state;
    char dir[] = "/tmp/seckill-ito-XXXXXX", ini[1400], wtext[1600], wini_path[128];
    char sink_path[128], cmd[256], o[3][40];
    gw_proc gw;
    pid_t sink;
    int rpc_port = free_port();
    assert_non_null(mkdtemp(dir));
    snprintf(cmd, sizeof cmd, "sh %s/tests/gen_test_certs.sh %s/certs", SOURCE_DIR, dir);
    assert_int_equal(system(cmd), 0);
    snprintf(ini, sizeof ini,
             "[gateway]\nwait_timeout_ms = 5000\n[token_bucket]\nrate = 0\n"
             "[queue]\ndata_dir = %s/data\n"
             "[rpc]\nlisten = tcp:127.0.0.1:%d\nsecret = " SECRET "\n"
             "tls_cert = %s/certs/server.crt\ntls_key = %s/certs/server.key\n"
             "tls_ca = %s/certs/ca.crt\n"
             "[item.demo]\nstock = %d\n",
             dir, rpc_port, dir, dir, dir, STOCK);
    assert_int_equal(gw_proc_start(&gw, gateway_bin, ini), 0);
    wait_ready(gw.port);
    char gws[64];
    snprintf(gws, sizeof gws, "[rpc]\ngateways = tcp:127.0.0.1:%d\n", rpc_port);
    assert_int_equal(ini_merge(wtext, sizeof wtext, ini, gws), 0);
    snprintf(wini_path, sizeof wini_path, "%s/worker.ini", dir);
    write_text(wini_path, wtext);
    snprintf(sink_path, sizeof sink_path, "%s/orders.jsonl", dir);
    const char *sargv[] = {worker_bin, "-c",       wini_path, "--role",  "orders",
                           "--id",     "sink-tls", "--out",   sink_path, NULL};
    assert_int_equal(proc_spawn(sargv, "role=orders", &sink), 0);

    for (int i = 0; i < 3; i++) {
        char user[24];
        snprintf(user, sizeof user, "tls-%d", i);
        assert_int_equal(buy(gw.port, user, o[i]), 200);
    }
    int counts[3];
    char ids[16][40];
    sink_counts(sink_path, 3, counts, ids, 16);
    assert_int_equal(counts[0], 3);
    for (int k = 0; k < 3; k++) {
        int found = 0;
        for (int i = 0; i < counts[0]; i++)
            found |= !strcmp(ids[i], o[k]);
        assert_true(found);
    }
    assert_int_equal(proc_stop(sink, SIGTERM), 0);
    assert_int_equal(gw_proc_stop(&gw), 0);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static rpc_client *role_client(int rpc_port, const char *group, uint32_t role)
{
    char addr[64];
    rpc_client *c = NULL;
    snprintf(addr, sizeof addr, "tcp:127.0.0.1:%d", rpc_port);
    assert_int_equal(rpc_role_client(addr, group, group, role, SECRET, &c), 0);
    return c;
}

static int call_type(rpc_client *c, const rpc_frame *f, int *code)
{
    rpc_frame reply;
    assert_int_equal(rpc_client_call(c, f, &reply, 2000), 0);
    int t = reply.type;
    *code = t == RPC_ERROR ? reply.u.error.code : 0;
    rpc_frame_release(&reply);
    return t;
}

/* The durable order topic cannot be written over rpc/, not even by a peer
 * that knows the secret: a junk record there would keep the gateway from
 * starting on its data_dir again, and forged "reserved" events would replay
 * into buyers past the stock. The sink still reads it; a purchase worker
 * cannot. */
static void test_order_topic_not_writable(void **state)
{
    (void)state;
    char dir[] = "/tmp/seckill-ito-XXXXXX", ini[1024];
    gw_proc gw;
    int code = 0, rpc_port = free_port();
    assert_non_null(mkdtemp(dir));
    snprintf(ini, sizeof ini,
             "[gateway]\nwait_timeout_ms = 5000\n[token_bucket]\nrate = 0\n"
             "[queue]\ndata_dir = %s/data\n"
             "[rpc]\nlisten = tcp:127.0.0.1:%d\nsecret = " SECRET "\n[item.demo]\nstock = %d\n",
             dir, rpc_port, STOCK);
    assert_int_equal(gw_proc_start(&gw, gateway_bin, ini), 0);
    wait_ready(gw.port);

    rpc_client *sink = role_client(rpc_port, "orders", RPC_ROLE_ORDERS);
    rpc_frame pr = {.type = RPC_PRODUCE};
    pr.u.produce.topic = rpc_str("seckill.orders");
    pr.u.produce.key = rpc_str("k");
    pr.u.produce.payload = (rpc_bytes){"\x00junk", 5};
    assert_int_equal(call_type(sink, &pr, &code), RPC_ERROR);
    assert_int_equal(code, EPERM);
    char ev[160];
    for (int i = 0; i < 80; i++) { /* forged "reserved" events */
        snprintf(ev, sizeof ev,
                 "{\"type\":\"reserved\",\"order_id\":\"forged-%d\",\"item_id\":\"demo\","
                 "\"user_id\":\"ghost-%d\"}", i, i);
        pr.u.produce.payload = rpc_str(ev);
        pr.u.produce.seq = (uint64_t)i + 1;
        assert_int_equal(call_type(sink, &pr, &code), RPC_ERROR);
        assert_int_equal(code, EPERM);
    }
    rpc_frame fe = {.type = RPC_FETCH};
    fe.u.fetch.topic = rpc_str("seckill.orders");
    fe.u.fetch.max_messages = 8;
    assert_int_equal(call_type(sink, &fe, &code), RPC_FETCH_OK);
    rpc_client *wk = role_client(rpc_port, "seckill", RPC_ROLE_PURCHASE);
    assert_int_equal(call_type(wk, &fe, &code), RPC_ERROR);
    assert_int_equal(code, EPERM);
    assert_int_equal(call_type(wk, &pr, &code), RPC_ERROR);
    assert_int_equal(code, EPERM);
    rpc_client_destroy(wk);
    rpc_client_destroy(sink);
    assert_int_equal(buy(gw.port, "real-1", NULL), 200);

    /* killed and started again on the same data_dir: it starts, and only the
     * real sale is there */
    assert_int_equal(proc_stop(gw.pid, SIGKILL), 128 + SIGKILL);
    gw.pid = 0;
    gw_proc_stop(&gw);
    assert_int_equal(gw_proc_start(&gw, gateway_bin, ini), 0);
    wait_ready(gw.port);
    assert_int_equal(http_stock_left(gw.port, "demo"), STOCK - 1);
    assert_int_equal(gw_proc_stop(&gw), 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* Two gateways cannot share a data_dir. */
static void test_data_dir_locked(void **state)
{
    (void)state;
    char dir[] = "/tmp/seckill-ito-XXXXXX", ini[512], out[1024], err[1024], path[128];
    gw_proc a;
    assert_non_null(mkdtemp(dir));
    snprintf(ini, sizeof ini, "[queue]\ndata_dir = %s/data\n[item.demo]\nstock = 1\n", dir);
    assert_int_equal(gw_proc_start(&a, gateway_bin, ini), 0);
    snprintf(path, sizeof path, "%s/b.ini", dir);
    write_text(path, ini);
    const char *argv[] = {gateway_bin, "-c", path, "--listen", "127.0.0.1:0", NULL};
    assert_int_equal(run_capture(argv, out, sizeof out, err, sizeof err), 78);
    assert_non_null(strstr(err, "in use by another gateway"));
    assert_int_equal(gw_proc_stop(&a), 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* Redis that does not answer at start is no configuration error: the gateway
 * exits 69 (start me again later), not 78 (do not restart). */
static void test_redis_unreachable_at_start(void **state)
{
    (void)state;
    char dir[] = "/tmp/seckill-ito-XXXXXX", ini[512], out[1024], err[1024], path[128];
    assert_non_null(mkdtemp(dir));
    /* a port bound here and never listened on: nothing can take it while
     * the gateway tries, and every connect is refused */
    int hold = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t salen = sizeof sa;
    assert_true(hold >= 0);
    assert_int_equal(bind(hold, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(hold, (struct sockaddr *)&sa, &salen), 0);
    snprintf(ini, sizeof ini,
             "[worker]\ninventory = redis\n[redis]\nport = %d\ntimeout_ms = 100\n"
             "[item.demo]\nstock = 1\n",
             ntohs(sa.sin_port));
    snprintf(path, sizeof path, "%s/gw.ini", dir);
    write_text(path, ini);
    const char *argv[] = {gateway_bin, "-c", path, "--listen", "127.0.0.1:0", NULL};
    assert_int_equal(run_capture(argv, out, sizeof out, err, sizeof err), 69);
    assert_non_null(strstr(err, "redis 127.0.0.1:"));
    close(hold);
    unlink(path);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s seckill-gateway seckill-worker\n", argv[0]);
        return 2;
    }
    gateway_bin = argv[1];
    worker_bin = argv[2];
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_orders_survive_restart),
        cmocka_unit_test(test_orders_survive_restart_async),
        cmocka_unit_test(test_orders_sink_over_tls),
        cmocka_unit_test(test_order_topic_not_writable),
        cmocka_unit_test(test_data_dir_locked),
        cmocka_unit_test(test_redis_unreachable_at_start),
    };
    return cmocka_run_group_tests_name("integration.orders", tests, NULL, NULL);
}
