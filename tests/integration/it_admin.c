/*
 * it_admin.c - the admin API against real processes: a gateway with
 * [admin] listen, its token refused when missing or wrong, bad input that
 * changes nothing, stock, limit, window, rate and blocklist changes seen by
 * purchases, and a new sale on the memory store (across a restart) and on a
 * real redis-server with a separate seckill-worker process.
 *
 * argv: seckill-gateway, seckill-worker, scripts/seckillctl.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "tests/redis_server.h"
#include "tests/test_time.h"

#define TOKEN "it-admin-token-0123456789"
#define AUTH "Authorization: Bearer " TOKEN "\r\n"
#define JSON_CT "Content-Type: application/json\r\n"

static const char *gateway_bin, *worker_bin, *ctl_script;

/* One admin request with the right token (auth 1), none (0) or a wrong one (-1). */
static void admin(int port, int auth, const char *method, const char *path, const char *body,
                  http_resp *r)
{
    char hdr[256];
    snprintf(hdr, sizeof hdr, "%s%s",
             auth > 0   ? AUTH
             : auth < 0 ? "Authorization: Bearer it-admin-token-0123456788\r\n"
                        : "",
             body ? JSON_CT : "");
    assert_int_equal(http_do(port, method, path, hdr, body, body ? strlen(body) : 0, r), 0);
}

static long field_long(const char *body, const char *name)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", name);
    const char *p = strstr(body, pat);
    assert_non_null(p);
    return atol(p + strlen(pat));
}

static int buy(int port, const char *user, char *order_id, size_t cap)
{
    char body[128];
    http_resp r;
    snprintf(body, sizeof body, "{\"user_id\":\"%s\",\"item_id\":\"demo\"}", user);
    assert_int_equal(http_buy(port, body, &r), 0);
    if (order_id && json_field(r.body, "order_id", order_id, cap) != 0)
        order_id[0] = '\0';
    return r.status;
}

static char data_dir[64];

static void memory_ini(char *buf, size_t cap, long stock)
{
    snprintf(buf, cap,
             "[token_bucket]\nrate = 0\n"
             "[queue]\ndata_dir = %s\n"
             "[admin]\nlisten = 127.0.0.1:0\ntoken = " TOKEN "\n"
             "[item.demo]\nstock = %ld\n",
             data_dir, stock);
}

static int setup_dir(void **state)
{
    (void)state;
    snprintf(data_dir, sizeof data_dir, "/tmp/seckill-itadm-XXXXXX");
    return mkdtemp(data_dir) ? 0 : -1;
}

static int remove_dir(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", data_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* [admin] listen without a token: refused at start with 78, nothing served. */
static void test_token_required(void **state)
{
    (void)state;
    char path[128], out[512], err[1024];
    snprintf(path, sizeof path, "%s/notoken.ini", data_dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "[admin]\nlisten = 127.0.0.1:0\n[item.demo]\nstock = 1\n");
    fclose(f);
    const char *argv[] = {gateway_bin, "-c", path, "--listen", "127.0.0.1:0", NULL};
    assert_int_equal(run_capture(argv, out, sizeof out, err, sizeof err), 78);
    assert_non_null(strstr(err, "[admin] token is required"));
}

static void test_auth_and_bad_input(void **state)
{
    (void)state;
    char ini[1024];
    http_resp r;
    gw_proc g;
    memory_ini(ini, sizeof ini, 5);
    assert_int_equal(gw_proc_start(&g, gateway_bin, ini), 0);
    assert_true(g.admin_port > 0);

    admin(g.admin_port, 0, "GET", "/items/demo", NULL, &r);
    assert_int_equal(r.status, 401);
    char www[128];
    assert_int_equal(http_header(&r, "WWW-Authenticate", www, sizeof www), 0);
    admin(g.admin_port, -1, "PATCH", "/items/demo", "{\"stock\":0}", &r);
    assert_int_equal(r.status, 401);
    admin(g.admin_port, -1, "POST", "/sale", NULL, &r);
    assert_int_equal(r.status, 401);
    assert_int_equal(http_metric(g.port, "seckill_admin_unauthorized_total "), 3);
    /* the refused ones changed nothing */
    admin(g.admin_port, 1, "GET", "/items/demo", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(field_long(r.body, "stock_total"), 5);
    assert_int_equal(field_long(r.body, "sale"), 0);

    /* bad input: 400 (or 415), and nothing changes */
    static const char *const bad[] = {
        "{\"stock\":-1}", "{\"stock\":\"7\"}", "{\"stock\":7,\"colour\":1}", "{\"stock\":7",
        "[7]", "{}", "{\"per_user_limit\":0}", "{\"starts_at\":200,\"ends_at\":100}",
        "{\"stock\":7,\"stock\":8}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        admin(g.admin_port, 1, "PATCH", "/items/demo", bad[i], &r);
        if (r.status != 400)
            fail_msg("%s: %d %s", bad[i], r.status, r.body);
        assert_non_null(strstr(r.body, "\"error\""));
    }
    assert_int_equal(http_do(g.admin_port, "PATCH", "/items/demo", AUTH "Content-Type: text/plain\r\n",
                             "{\"stock\":7}", 11, &r), 0);
    assert_int_equal(r.status, 415);
    admin(g.admin_port, 1, "PUT", "/rate", "{\"rate\":-3}", &r);
    assert_int_equal(r.status, 400);
    admin(g.admin_port, 1, "PUT", "/blocklist/bad%20id", NULL, &r);
    assert_int_equal(r.status, 400);
    admin(g.admin_port, 1, "POST", "/sale", "{\"stock\":{\"nope\":3}}", &r);
    assert_int_equal(r.status, 400);
    admin(g.admin_port, 1, "GET", "/items/nope", NULL, &r);
    assert_int_equal(r.status, 404);
    admin(g.admin_port, 1, "DELETE", "/items/demo", NULL, &r);
    assert_int_equal(r.status, 405);
    admin(g.admin_port, 1, "GET", "/items/demo", NULL, &r);
    assert_int_equal(field_long(r.body, "stock_total"), 5);
    assert_int_equal(field_long(r.body, "per_user_limit"), 1);
    assert_int_equal(field_long(r.body, "starts_at"), 0);
    assert_int_equal(field_long(r.body, "sale"), 0);
    assert_int_equal(http_metric(g.port, "seckill_admin_changes_total{what=\"stock\"} "), 0);
    assert_int_equal(gw_proc_stop(&g), 0);
}

/* Stock, limit, window, rate and blocklist, each seen by purchases. */
static void test_changes_seen_by_purchases(void **state)
{
    (void)state;
    char ini[1024], user[16];
    http_resp r;
    gw_proc g;
    memory_ini(ini, sizeof ini, 2);
    assert_int_equal(gw_proc_start(&g, gateway_bin, ini), 0);

    admin(g.admin_port, 1, "PATCH", "/items/demo", "{\"stock\":4}", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(http_do(g.port, "GET", "/items/demo", NULL, NULL, 0, &r), 0);
    assert_int_equal(field_long(r.body, "stock_total"), 4);
    assert_int_equal(field_long(r.body, "stock_left"), 4);
    for (int i = 0; i < 4; i++) {
        snprintf(user, sizeof user, "s%d", i);
        assert_int_equal(buy(g.port, user, NULL, 0), 200);
    }
    assert_int_equal(buy(g.port, "s9", NULL, 0), 409);
    /* below the 4 units sold: 409, nothing changed */
    admin(g.admin_port, 1, "PATCH", "/items/demo", "{\"stock\":3}", &r);
    assert_int_equal(r.status, 409);
    assert_int_equal(field_long(r.body, "held"), 4);
    admin(g.admin_port, 1, "PATCH", "/items/demo", "{\"stock\":6,\"per_user_limit\":2}", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(field_long(r.body, "stock_left"), 2);
    assert_int_equal(field_long(r.body, "sold"), 4);
    assert_int_equal(buy(g.port, "s0", NULL, 0), 200); /* a second unit: limit 2 */
    assert_int_equal(buy(g.port, "s0", NULL, 0), 409);
    assert_int_equal(buy(g.port, "s9", NULL, 0), 200);
    assert_int_equal(buy(g.port, "s8", NULL, 0), 409); /* sold out at 6 */

    /* a window that has not started yet, then open again */
    admin(g.admin_port, 1, "PATCH", "/items/demo", "{\"starts_at\":4102444800}", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(http_buy(g.port, "{\"user_id\":\"w1\",\"item_id\":\"demo\"}", &r), 0);
    assert_int_equal(r.status, 409);
    assert_non_null(strstr(r.body, "not_started"));
    admin(g.admin_port, 1, "PATCH", "/items/demo", "{\"starts_at\":0,\"stock\":9}", &r);
    assert_int_equal(r.status, 200);

    /* the blocklist: 403, then removed */
    admin(g.admin_port, 1, "PUT", "/blocklist/b1", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"b1\""));
    assert_int_equal(buy(g.port, "b1", NULL, 0), 403);
    admin(g.admin_port, 1, "DELETE", "/blocklist/b1", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_null(strstr(r.body, "\"b1\""));
    assert_int_equal(buy(g.port, "b1", NULL, 0), 200);

    /* the token bucket: one token per 1000 s, so the second request is refused */
    admin(g.admin_port, 1, "PUT", "/rate", "{\"rate\":0.001,\"burst\":1}", &r);
    assert_int_equal(r.status, 200);
    admin(g.admin_port, 1, "GET", "/rate", NULL, &r);
    assert_non_null(strstr(r.body, "\"burst\":1"));
    int a = buy(g.port, "t1", NULL, 0), b = buy(g.port, "t2", NULL, 0);
    assert_true(a != 429);
    assert_int_equal(b, 429);

    assert_int_equal(http_metric(g.port, "seckill_admin_changes_total{what=\"stock\"} "), 3);
    assert_int_equal(http_metric(g.port, "seckill_admin_changes_total{what=\"limit\"} "), 1);
    assert_int_equal(http_metric(g.port, "seckill_admin_changes_total{what=\"window\"} "), 2);
    assert_int_equal(http_metric(g.port, "seckill_admin_changes_total{what=\"blocklist\"} "), 2);
    assert_int_equal(http_metric(g.port, "seckill_admin_changes_total{what=\"rate\"} "), 1);
    assert_int_equal(gw_proc_stop(&g), 0);
}

/* Memory store: buy out, new sale, the same user buys again, the old order
 * still answers, and a restart replays into the new sale. */
static void test_new_sale_memory(void **state)
{
    (void)state;
    char ini[1024], o1[64], o2[64], o3[64], path[128];
    http_resp r;
    gw_proc g;
    memory_ini(ini, sizeof ini, 2);
    assert_int_equal(gw_proc_start(&g, gateway_bin, ini), 0);
    assert_int_equal(buy(g.port, "u1", o1, sizeof o1), 200);
    assert_int_equal(buy(g.port, "u2", o2, sizeof o2), 200);
    assert_int_equal(buy(g.port, "u3", NULL, 0), 409);
    assert_int_equal(buy(g.port, "u1", NULL, 0), 409);

    admin(g.admin_port, 1, "POST", "/sale", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(field_long(r.body, "sale"), 1);
    assert_int_equal(field_long(r.body, "stock_left"), 2);
    assert_int_equal(buy(g.port, "u1", o3, sizeof o3), 200);
    assert_string_not_equal(o1, o3);
    assert_int_equal(buy(g.port, "u1", NULL, 0), 409); /* the limit counts in the new sale */
    snprintf(path, sizeof path, "/orders/%s", o1);
    assert_int_equal(http_do(g.port, "GET", path, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"user_id\":\"u1\""));
    assert_int_equal(http_metric(g.port, "seckill_admin_changes_total{what=\"sale\"} "), 1);
    assert_int_equal(gw_proc_stop(&g), 0);

    /* a restart on the same data_dir replays into sale 1 */
    assert_int_equal(gw_proc_start(&g, gateway_bin, ini), 0);
    admin(g.admin_port, 1, "GET", "/items/demo", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(field_long(r.body, "sale"), 1);
    assert_int_equal(field_long(r.body, "stock_left"), 1);
    assert_int_equal(buy(g.port, "u1", NULL, 0), 409);
    assert_int_equal(buy(g.port, "u2", NULL, 0), 200);
    assert_int_equal(buy(g.port, "u3", NULL, 0), 409);
    assert_int_equal(http_do(g.port, "GET", path, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    /* a new sale with a given stock */
    admin(g.admin_port, 1, "POST", "/sale", "{\"stock\":{\"demo\":3}}", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(field_long(r.body, "sale"), 2);
    assert_int_equal(field_long(r.body, "stock_total"), 3);
    assert_int_equal(buy(g.port, "u3", NULL, 0), 200);
    assert_int_equal(gw_proc_stop(&g), 0);
}

/* Redis store with a separate seckill-worker process: the new sale moves the
 * worker to fresh keys, the old order stays readable. */
static void test_new_sale_redis(void **state)
{
    (void)state;
    redis_server rs;
    char ini[2048], wini[2600], wpath[128], o1[64], path[128];
    http_resp r;
    gw_proc g;
    pid_t worker = 0;
    memset(&rs, 0, sizeof rs);
    assert_int_equal(redis_server_start(&rs), 0);
    snprintf(ini, sizeof ini,
             "[gateway]\nwait_timeout_ms = 5000\n[token_bucket]\nrate = 0\n"
             "[queue]\nack_timeout_ms = 1000\nlease_timeout_ms = 1000\n"
             "[worker]\nembedded = false\ninventory = redis\nthreads = 1\n"
             "[rpc]\nlisten = tcp:127.0.0.1:0\nsecret = it-admin-secret\n"
             "[redis]\nport = %d\ntimeout_ms = 1000\n"
             "[admin]\nlisten = 127.0.0.1:0\ntoken = " TOKEN "\n"
             "[item.demo]\nstock = 2\n",
             rs.port);
    assert_int_equal(gw_proc_start(&g, gateway_bin, ini), 0);
    char gwl[128];
    snprintf(gwl, sizeof gwl, "[rpc]\ngateways = tcp:127.0.0.1:%d\n", g.rpc_port);
    assert_int_equal(ini_merge(wini, sizeof wini, ini, gwl), 0);
    snprintf(wpath, sizeof wpath, "%s/worker.ini", data_dir);
    FILE *f = fopen(wpath, "w");
    assert_non_null(f);
    fputs(wini, f);
    fclose(f);
    const char *argv[] = {worker_bin, "-c", wpath, "--id", "w0", NULL};
    assert_int_equal(proc_spawn(argv, "role=seckill", &worker), 0);
    for (int i = 0; i < 2000; i++) { /* up to 20 s: the worker connects and fetches */
        if (http_do(g.port, "GET", "/readyz", NULL, NULL, 0, &r) == 0 && r.status == 200)
            break;
        sleep_ms(10);
    }
    if (r.status != 200)
        fail_msg("gateway never ready: %d %s", r.status, r.body);

    assert_int_equal(buy(g.port, "u1", o1, sizeof o1), 200);
    assert_int_equal(buy(g.port, "u2", NULL, 0), 200);
    assert_int_equal(buy(g.port, "u3", NULL, 0), 409);
    admin(g.admin_port, 1, "PATCH", "/items/demo", "{\"stock\":1}", &r);
    assert_int_equal(r.status, 409);
    assert_int_equal(field_long(r.body, "held"), 2);

    admin(g.admin_port, 1, "POST", "/sale", "{\"stock\":{\"demo\":3}}", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(field_long(r.body, "sale"), 1);
    assert_int_equal(field_long(r.body, "stock_left"), 3);
    /* the worker built its keys for sale 0: the script refuses them, it reads
     * the epoch again and decides on sale 1's keys */
    assert_int_equal(buy(g.port, "u1", NULL, 0), 200);
    assert_int_equal(buy(g.port, "u1", NULL, 0), 409);
    admin(g.admin_port, 1, "PATCH", "/items/demo", "{\"per_user_limit\":2,\"stock\":4}", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(field_long(r.body, "stock_left"), 3);
    assert_int_equal(buy(g.port, "u1", NULL, 0), 200); /* the worker reads the limit key */
    assert_int_equal(buy(g.port, "u2", NULL, 0), 200);
    assert_int_equal(buy(g.port, "u3", NULL, 0), 200);
    assert_int_equal(buy(g.port, "u4", NULL, 0), 409);
    snprintf(path, sizeof path, "/orders/%s", o1);
    assert_int_equal(http_do(g.port, "GET", path, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"user_id\":\"u1\""));
    assert_int_equal(http_do(g.port, "GET", "/items/demo", NULL, NULL, 0, &r), 0);
    assert_int_equal(field_long(r.body, "stock_left"), 0);
    assert_int_equal(field_long(r.body, "stock_total"), 4);

    /* a gateway restarted later starts in sale 1, from Redis */
    assert_int_equal(proc_stop(worker, SIGTERM), 0);
    assert_int_equal(gw_proc_stop(&g), 0);
    assert_int_equal(gw_proc_start(&g, gateway_bin, ini), 0);
    admin(g.admin_port, 1, "GET", "/items/demo", NULL, &r);
    assert_int_equal(field_long(r.body, "sale"), 1);
    assert_int_equal(field_long(r.body, "per_user_limit"), 2);
    assert_int_equal(field_long(r.body, "stock_left"), 0);
    assert_int_equal(gw_proc_stop(&g), 0);
    redis_server_destroy(&rs);
}

/* scripts/seckillctl: the token from the environment, exit 1 on a refusal. */
static void test_seckillctl(void **state)
{
    (void)state;
    char ini[1024], url[64], out[4096], err[1024];
    gw_proc g;
    memory_ini(ini, sizeof ini, 2);
    assert_int_equal(gw_proc_start(&g, gateway_bin, ini), 0);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", g.admin_port);
    setenv("SECKILL_ADMIN_TOKEN", TOKEN, 1);
    const char *stock[] = {ctl_script, "--url", url, "stock", "demo", "5", NULL};
    assert_int_equal(run_capture(stock, out, sizeof out, err, sizeof err), 0);
    assert_non_null(strstr(out, "\"stock_total\":5"));
    const char *low[] = {ctl_script, "--url", url, "stock", "demo", "-1", NULL};
    assert_int_not_equal(run_capture(low, out, sizeof out, err, sizeof err), 0);
    const char *sale[] = {ctl_script, "--url", url, "new-sale", "demo=3", NULL};
    assert_int_equal(run_capture(sale, out, sizeof out, err, sizeof err), 0);
    assert_non_null(strstr(out, "\"sale\":1"));
    const char *block[] = {ctl_script, "--url", url, "block", "x1", NULL};
    assert_int_equal(run_capture(block, out, sizeof out, err, sizeof err), 0);
    assert_int_equal(buy(g.port, "x1", NULL, 0), 403);
    setenv("SECKILL_ADMIN_TOKEN", "it-admin-token-wrong-000000", 1);
    const char *item[] = {ctl_script, "--url", url, "item", "demo", NULL};
    assert_int_equal(run_capture(item, out, sizeof out, err, sizeof err), 1);
    assert_non_null(strstr(out, "unauthorized"));
    unsetenv("SECKILL_ADMIN_TOKEN");
    assert_int_equal(run_capture(item, out, sizeof out, err, sizeof err), 2);
    assert_int_equal(gw_proc_stop(&g), 0);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s SECKILL-GATEWAY SECKILL-WORKER SECKILLCTL\n", argv[0]);
        return 2;
    }
    gateway_bin = argv[1];
    worker_bin = argv[2];
    ctl_script = argv[3];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_token_required, setup_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_auth_and_bad_input, setup_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_changes_seen_by_purchases, setup_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_new_sale_memory, setup_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_new_sale_redis, setup_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_seckillctl, setup_dir, remove_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
