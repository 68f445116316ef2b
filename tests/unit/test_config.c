/*
 * test_config.c - the INI configuration: the shipped file, defaults, and a
 * table of broken files, each with the exact "PATH:LINE: message" it must
 * produce (PATH stands for the file's path in the expected strings).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"

#ifndef SOURCE_DIR
#error "SOURCE_DIR must name the source tree (tests/CMakeLists.txt)"
#endif

typedef struct tmp {
    char dir[64];
    char path[128];
} tmp;

static int setup_dir(void **state)
{
    tmp *t = calloc(1, sizeof *t);
    assert_non_null(t);
    strcpy(t->dir, "/tmp/test_config.XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    snprintf(t->path, sizeof t->path, "%s/seckill.ini", t->dir);
    *state = t;
    return 0;
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int teardown_dir(void **state)
{
    tmp *t = *state;
    nftw(t->dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
    free(t);
    return 0;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* expected with every "PATH" replaced by path */
static void expand(const char *expected, const char *path, char *out, size_t outlen)
{
    size_t n = 0;
    for (const char *p = expected; *p && n + 1 < outlen;) {
        if (strncmp(p, "PATH", 4) == 0) {
            n += (size_t)snprintf(out + n, outlen - n, "%s", path);
            p += 4;
        } else {
            out[n++] = *p++;
        }
    }
    out[n < outlen ? n : outlen - 1] = '\0';
}

/* ---- the shipped file and the defaults ---- */

static void test_shipped_config(void **state)
{
    (void)state;
    cfg c;
    char err[512] = "";
    cfg_init(&c);
    int rc = cfg_load(&c, SOURCE_DIR "/config/seckill.ini", err, sizeof err);
    if (rc != 0)
        fail_msg("config/seckill.ini: %s", err);
    assert_string_equal(c.listen_host, "127.0.0.1");
    assert_int_equal(c.listen_port, 8080);
    assert_string_equal(c.gateway_id, "");
    assert_int_equal(c.wait_timeout_ms, 2000);
    assert_int_equal(c.body_limit, 4096);
    assert_int_equal(c.max_connections_per_ip, 256);
    assert_int_equal(c.request_timeout_ms, 10000);
    assert_int_equal(c.result_ttl_s, 300);
    assert_int_equal(c.result_capacity, 100000);
    assert_string_equal(c.http_io, "poll");
    assert_true(c.tb_rate == 50000);
    assert_int_equal(c.tb_burst, 5000);
    assert_int_equal(c.queue_partitions, 4);
    assert_int_equal(c.queue_max_backlog, 65536);
    assert_int_equal(c.queue_max_backlog_bytes, 67108864);
    assert_int_equal(c.queue_max_deliveries, 5);
    assert_string_equal(c.queue_data_dir, "/var/tmp/seckill-gateway");
    assert_int_equal(c.worker_embedded, 1);
    assert_int_equal(c.worker_threads, 0);
    assert_int_equal(cfg_worker_threads(&c), 1);
    assert_string_equal(c.worker_inventory, "memory");
    assert_int_equal(c.rpc_registry_ttl_ms, 3000);
    assert_int_equal(c.rpc_handshake_timeout_ms, 2000);
    assert_string_equal(c.rpc_tls_cert, ""); /* plain TCP unless asked */
    assert_string_equal(c.rpc_tls_key, "");
    assert_string_equal(c.rpc_tls_ca, "");
    assert_int_equal(c.nblocklist, 0);
    assert_int_equal(c.nitems, 1);
    const cfg_item *it = cfg_find_item(&c, "demo");
    assert_non_null(it);
    assert_int_equal(it->stock, 100);
    assert_int_equal(it->per_user_limit, 1);
    assert_int_equal(it->starts_at, 0);
    assert_int_equal(it->ends_at, 0);
    assert_null(cfg_find_item(&c, "dem"));
    assert_int_equal(cfg_validate(&c, err, sizeof err), 0);
    cfg_release(&c);
    cfg_release(&c); /* released twice: harmless */
}

static void test_defaults(void **state)
{
    tmp *t = *state;
    cfg c;
    char err[512] = "";
    cfg_init(&c);
    assert_string_equal(c.listen_host, "127.0.0.1");
    assert_int_equal(c.listen_port, 8080);
    assert_int_equal(c.wait_timeout_ms, 2000);
    assert_int_equal(c.body_limit, 4096);
    assert_int_equal(c.max_connections, 4096);
    assert_int_equal(c.max_connections_per_ip, 256);
    assert_int_equal(c.request_timeout_ms, 10000);
    assert_int_equal(c.result_ttl_s, 300);
    assert_int_equal(c.result_capacity, 100000);
    assert_true(c.tb_rate == 50000);
    assert_int_equal(c.tb_burst, 5000);
    assert_int_equal(c.queue_partitions, 4);
    assert_int_equal(c.queue_max_backlog, 65536);
    assert_int_equal(c.queue_max_backlog_bytes, 64ULL << 20);
    assert_int_equal(c.queue_ack_timeout_ms, 5000);
    assert_int_equal(c.queue_lease_timeout_ms, 3000);
    assert_int_equal(c.queue_max_deliveries, 5);
    assert_string_equal(c.queue_data_dir, CFG_DEFAULT_DATA_DIR);
    assert_string_equal(c.queue_order_flush, "sync");
    assert_int_equal(c.worker_embedded, 1);
    assert_int_equal(c.worker_threads, 0);
    assert_int_equal(cfg_worker_threads(&c), 1);
    snprintf(c.worker_inventory, sizeof c.worker_inventory, "redis");
    assert_int_equal(cfg_worker_threads(&c), 2);
    snprintf(c.worker_inventory, sizeof c.worker_inventory, "memory");
    assert_int_equal(c.worker_batch, 64);
    assert_string_equal(c.worker_inventory, "memory");
    assert_int_equal(c.worker_decision_capacity, 1000000);
    assert_int_equal(c.rpc_registry_ttl_ms, 3000);
    assert_int_equal(c.nitems, 0);
    assert_int_equal(c.nblocklist, 0);
    /* no item yet: not a valid configuration */
    assert_int_equal(cfg_validate(&c, err, sizeof err), -EINVAL);
    assert_string_equal(err, "no [item.<id>] section: nothing to sell");

    /* a file with only an item keeps every other default */
    write_file(t->path, "[item.x]\nstock = 3\n");
    assert_int_equal(cfg_load(&c, t->path, err, sizeof err), 0);
    assert_int_equal(c.listen_port, 8080);
    assert_int_equal(c.tb_burst, 5000);
    assert_int_equal(c.nitems, 1);
    assert_string_equal(c.items[0].id, "x");
    assert_int_equal(c.items[0].stock, 3);
    assert_int_equal(c.items[0].per_user_limit, 1);
    assert_int_equal(c.items[0].starts_at, 0);
    assert_int_equal(c.items[0].ends_at, 0);
    assert_int_equal(c.items[0].line, 1);
    cfg_release(&c);
}

/* the slow-client limits: both may be turned off with 0 */
static void test_client_limits(void **state)
{
    tmp *t = *state;
    cfg c;
    char err[512] = "";
    cfg_init(&c);
    write_file(t->path, "[gateway]\nmax_connections_per_ip = 0\nrequest_timeout_ms = 0\n"
                        "[item.a]\nstock = 1\n");
    if (cfg_load(&c, t->path, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(c.max_connections_per_ip, 0);
    assert_int_equal(c.request_timeout_ms, 0);
    write_file(t->path, "[gateway]\nmax_connections_per_ip = 1000000\n"
                        "request_timeout_ms = 3600000\n");
    if (cfg_load(&c, t->path, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(c.max_connections_per_ip, 1000000);
    assert_int_equal(c.request_timeout_ms, 3600000);
    cfg_release(&c);
}

/* The global bucket's keys share one slot ({tb}), so it runs on a cluster too. */
static void test_global_bucket_on_cluster(void **state)
{
    tmp *t = *state;
    cfg c;
    char err[512] = "";
    cfg_init(&c);
    write_file(t->path, "[token_bucket]\nscope = global\nrate = 100\n"
                        "[redis]\ncluster = true\nnodes = 127.0.0.1:7000, 127.0.0.1:7001\n"
                        "[item.a]\nstock = 1\n");
    if (cfg_load(&c, t->path, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_string_equal(c.tb_scope, "global");
    assert_true(c.tb_rate == 100);
    assert_true(c.redis_cluster);
    assert_string_equal(c.redis_nodes, "127.0.0.1:7000, 127.0.0.1:7001");
    cfg_release(&c);
}

static void test_values(void **state)
{
    tmp *t = *state;
    cfg c;
    char err[512] = "";
    cfg_init(&c);
    write_file(t->path, "# a comment\n"
                        "[gateway]\n"
                        "listen = 0.0.0.0:0          ; inline comment\n"
                        "gateway_id = 3f1c9a2e-0000-4000-8000-000000000001\n"
                        "wait_timeout_ms = 600000\n"
                        "result_capacity = 16\n"
                        "http_io = epoll\n"
                        "[token_bucket]\n"
                        "rate = 0\n"
                        "burst = 1\n"
                        "[queue]\n"
                        "max_backlog_bytes = 1099511627776\n"
                        "order_flush = async\n"
                        "[worker]\n"
                        "embedded = yes\n"
                        "threads = 256\n"
                        "[rpc]\n"
                        "registry_ttl_ms = 600000\n"
                        "handshake_timeout_ms = 60000\n"
                        "tls_cert = /etc/seckill/gw.crt\n"
                        "tls_key = /etc/seckill/gw.key\n"
                        "tls_ca = /etc/seckill/ca.crt\n"
                        "[item.a]\n"
                        "stock = 0\n"
                        "per_user_limit = 2\n"
                        "[item.b-2]\n"
                        "stock = 1000000000000\n"
                        "per_user_limit = 3\n"
                        "starts_at = 1700000000\n"
                        "ends_at = 1700000001\n");
    if (cfg_load(&c, t->path, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_string_equal(c.listen_host, "0.0.0.0");
    assert_int_equal(c.listen_port, 0);
    assert_string_equal(c.gateway_id, "3f1c9a2e-0000-4000-8000-000000000001");
    assert_int_equal(c.wait_timeout_ms, 600000);
    assert_int_equal(c.result_capacity, 16);
    assert_string_equal(c.http_io, "epoll");
    assert_true(c.tb_rate == 0);
    assert_int_equal(c.tb_burst, 1);
    assert_int_equal(c.queue_max_backlog_bytes, 1ULL << 40);
    assert_int_equal(c.worker_threads, 256);
    assert_string_equal(c.queue_order_flush, "async");
    assert_int_equal(cfg_worker_threads(&c), 256);
    assert_int_equal(c.rpc_registry_ttl_ms, 600000);
    assert_int_equal(c.rpc_handshake_timeout_ms, 60000);
    assert_string_equal(c.rpc_tls_cert, "/etc/seckill/gw.crt");
    assert_string_equal(c.rpc_tls_key, "/etc/seckill/gw.key");
    assert_string_equal(c.rpc_tls_ca, "/etc/seckill/ca.crt");
    assert_int_equal(c.nitems, 2);
    const cfg_item *a = cfg_find_item(&c, "a"), *b = cfg_find_item(&c, "b-2");
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(a->stock, 0);
    assert_int_equal(a->per_user_limit, 2);
    assert_int_equal(a->line, 23);
    assert_int_equal(b->stock, 1000000000000LL);
    assert_int_equal(b->per_user_limit, 3);
    assert_int_equal(b->starts_at, 1700000000);
    assert_int_equal(b->ends_at, 1700000001);
    assert_int_equal(b->line, 26);
    cfg_release(&c);
    assert_null(c.items);
    assert_int_equal(c.nitems, 0);
}

static void test_long_item_id(void **state)
{
    /* section names are longer than the INI parser keeps: ids stay whole */
    tmp *t = *state;
    static const char *ids[] = {
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRS",                    /* 45 */
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.", /* 64 */
    };
    for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
        cfg c;
        char text[256], err[512] = "";
        cfg_init(&c);
        snprintf(text, sizeof text, "[item.%s]\nstock = 7\n[item.short]\nstock = 1\n", ids[i]);
        write_file(t->path, text);
        if (cfg_load(&c, t->path, err, sizeof err) != 0)
            fail_msg("%s", err);
        assert_int_equal(c.nitems, 2);
        assert_string_equal(c.items[0].id, ids[i]);
        assert_int_equal(c.items[0].stock, 7);
        assert_string_equal(c.items[1].id, "short");
        cfg_release(&c);
    }
}

/* ---- broken files ---- */

typedef struct bad {
    const char *name;
    const char *text;
    const char *err; /* "PATH" stands for the file's path */
} bad;

#define ITEM "[item.a]\nstock = 1\n"

static const bad bads[] = {
    {"unknown key", "[gateway]\nlisten = 127.0.0.1:80\nlistn = 1.2.3.4:80\n",
     "PATH:3: [gateway] unknown key 'listn'"},
    {"unknown key in an item", ITEM "stok = 5\n", "PATH:3: [item.a] unknown key 'stok'"},
    {"unknown key in risk", ITEM "[risk]\nblock = u1\n", "PATH:4: [risk] unknown key 'block'"},
    {"unknown section", ITEM "\n[gatway]\nlisten = 127.0.0.1:80\n",
     "PATH:5: unknown section [gatway]"},
    {"key before any section", "stock = 1\n" ITEM, "PATH:1: unknown section []"},
    {"item without a dot", "[item]\nstock = 1\n", "PATH:2: unknown section [item]"},
    {"bad number", ITEM "[gateway]\nwait_timeout_ms = 12ms\n",
     "PATH:4: [gateway] wait_timeout_ms: expected an integer from 1 to 600000"},
    {"bad order_flush", ITEM "[queue]\norder_flush = fast\n",
     "PATH:4: [queue] order_flush: expected 'sync' or 'async'"},
    {"empty data_dir", ITEM "[queue]\ndata_dir =\n",
     "PATH:4: [queue] data_dir: expected a directory path of 1 to 1023 characters"},
    {"hex number", ITEM "[queue]\npartitions = 0x10\n",
     "PATH:4: [queue] partitions: expected an integer from 1 to 1024"},
    {"negative number", ITEM "[worker]\nthreads = -2\n",
     "PATH:4: [worker] threads: expected an integer from 0 to 256"},
    {"empty number", ITEM "[worker]\nbatch =\n",
     "PATH:4: [worker] batch: expected an integer from 1 to 4096"},
    {"number overflow", ITEM "[queue]\nmax_backlog = 99999999999999999999999\n",
     "PATH:4: [queue] max_backlog: expected an integer from 1 to 100000000"},
    {"below range", ITEM "[gateway]\nresult_capacity = 15\n",
     "PATH:4: [gateway] result_capacity: expected an integer from 16 to 100000000"},
    {"above range", ITEM "[queue]\npartitions = 1025\n",
     "PATH:4: [queue] partitions: expected an integer from 1 to 1024"},
    {"zero burst", ITEM "[token_bucket]\nburst = 0\n",
     "PATH:4: [token_bucket] burst: expected an integer from 1 to 100000000"},
    {"negative rate", ITEM "[token_bucket]\nrate = -1\n",
     "PATH:4: [token_bucket] rate: expected tokens per second from 0 (unlimited) to 1e9"},
    {"huge rate", ITEM "[token_bucket]\nrate = 1e10\n",
     "PATH:4: [token_bucket] rate: expected tokens per second from 0 (unlimited) to 1e9"},
    {"nan rate", ITEM "[token_bucket]\nrate = nan\n",
     "PATH:4: [token_bucket] rate: expected tokens per second from 0 (unlimited) to 1e9"},
    {"negative stock", "[item.a]\nstock = -1\n",
     "PATH:2: [item.a] stock: expected an integer from 0 to 1000000000000"},
    {"stock too big", "[item.a]\nstock = 1000000000001\n",
     "PATH:2: [item.a] stock: expected an integer from 0 to 1000000000000"},
    {"zero per_user_limit", ITEM "per_user_limit = 0\n",
     "PATH:3: [item.a] per_user_limit: expected an integer from 1 to 1000000"},
    {"bad starts_at", ITEM "starts_at = soon\n",
     "PATH:3: [item.a] starts_at: expected unix seconds (0 = none)"},
    {"listen without port", ITEM "[gateway]\nlisten = localhost\n",
     "PATH:4: [gateway] listen: expected HOST:PORT"},
    {"listen without host", ITEM "[gateway]\nlisten = :8080\n",
     "PATH:4: [gateway] listen: expected HOST:PORT"},
    {"listen port too big", ITEM "[gateway]\nlisten = 127.0.0.1:65536\n",
     "PATH:4: [gateway] listen: expected HOST:PORT"},
    {"listen port not a number", ITEM "[gateway]\nlisten = 127.0.0.1:http\n",
     "PATH:4: [gateway] listen: expected HOST:PORT"},
    {"short gateway_id", ITEM "[gateway]\ngateway_id = 1234\n",
     "PATH:4: [gateway] gateway_id: expected a UUID (36 characters) or nothing"},
    {"park", ITEM "[gateway]\npark = fibers\n",
     "PATH:4: [gateway] park: expected 'thread' or 'event'"},
    {"http_io", ITEM "[gateway]\nhttp_io = select\n",
     "PATH:4: [gateway] http_io: expected 'poll' or 'epoll'"},
    {"embedded not a bool", ITEM "[worker]\nembedded = maybe\n",
     "PATH:4: [worker] embedded: expected true or false"},
    {"inventory", ITEM "[worker]\ninventory = disk\n",
     "PATH:4: [worker] inventory: expected 'memory' or 'redis'"},
    {"rpc listen", ITEM "[rpc]\nlisten = 127.0.0.1:7000\n",
     "PATH:4: [rpc] listen: expected tcp:HOST:PORT or unix:SOCKET"},
    {"rpc secret short", ITEM "[rpc]\nsecret = abc\n",
     "PATH:4: [rpc] secret: expected a shared secret of 8 to 256 characters"},
    {"rpc gateways", ITEM "[rpc]\ngateways = tcp:127.0.0.1:7000, 10.0.0.1:7000\n",
     "PATH:4: [rpc] gateways: '10.0.0.1:7000' is not tcp:HOST:PORT or unix:SOCKET"},
    {"rpc registry ttl", ITEM "[rpc]\nregistry_ttl_ms = 299\n",
     "PATH:4: [rpc] registry_ttl_ms: expected an integer from 300 to 600000"},
    {"rpc handshake timeout", ITEM "[rpc]\nhandshake_timeout_ms = 99\n",
     "PATH:4: [rpc] handshake_timeout_ms: expected an integer from 100 to 60000"},
    {"rpc registry ttl not a number", ITEM "[rpc]\nregistry_ttl_ms = 3s\n",
     "PATH:4: [rpc] registry_ttl_ms: expected an integer from 300 to 600000"},
    {"rpc without secret", ITEM "[rpc]\nlisten = tcp:127.0.0.1:7000\n",
     "PATH: [rpc] secret is required when RPC is used"},
    {"rpc tls_cert without tls_key", ITEM "[rpc]\ntls_cert = /etc/gw.crt\n",
     "PATH: [rpc] tls_key is required with tls_cert"},
    {"rpc tls_key without tls_cert", ITEM "[rpc]\ntls_key = /etc/gw.key\ntls_ca = /etc/ca.crt\n",
     "PATH: [rpc] tls_cert is required with tls_key"},
    {"rpc tls on a unix listener",
     ITEM "[rpc]\nlisten = unix:/tmp/gw.sock\nsecret = 12345678\ntls_cert = a\ntls_key = b\n",
     "PATH: [rpc] tls_cert: TLS applies to tcp: addresses; listen = unix:/tmp/gw.sock is a Unix "
     "socket (guarded by its file permissions): drop the tls_ keys or listen on tcp:"},
    {"rpc tls_ca alone on a gateway",
     ITEM "[rpc]\nlisten = tcp:127.0.0.1:7000\nsecret = 12345678\ntls_ca = /etc/ca.crt\n",
     "PATH: [rpc] tls_ca: a gateway with listen serves TLS only with tls_cert and tls_key; set "
     "them too"},
    {"fair opening with thread park",
     ITEM "[gateway]\npark = thread\n[admission]\nopen_window_ms = 500\n",
     "PATH: [admission] open_window_ms needs [gateway] park = event"},
    {"fair opening past half the wait",
     ITEM "[gateway]\nwait_timeout_ms = 1000\n[admission]\nopen_window_ms = 501\n",
     "PATH: [admission] open_window_ms = 501 must be at most half of [gateway] wait_timeout_ms = "
     "1000"},
    {"redis port", ITEM "[redis]\nport = 0\n",
     "PATH:4: [redis] port: expected an integer from 1 to 65535"},
    {"redis unknown", ITEM "[redis]\npassword = x\n", "PATH:4: [redis] unknown key 'password'"},
    {"decision capacity", ITEM "[worker]\ndecision_capacity = 1023\n",
     "PATH:4: [worker] decision_capacity: expected an integer from 1024 to 100000000"},
    {"bad item id", "[item.bad/id]\nstock = 1\n",
     "PATH:2: [item.bad/id]: item id must be 1-64 characters of A-Z a-z 0-9 _ . : -"},
    {"empty item id", "[item.]\nstock = 1\n",
     "PATH:2: [item.]: item id must be 1-64 characters of A-Z a-z 0-9 _ . : -"},
    {"65-character item id",
     "[item.abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-]\nstock = 1\n",
     "PATH:2: [item.abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-]: item id "
     "must be 1-64 characters of A-Z a-z 0-9 _ . : -"},
    {"blocklist id", ITEM "[risk]\nblocklist = bot-1, bot/2\n",
     "PATH:4: [risk] blocklist: 'bot/2' is not a valid user id"},
    {"cors origin with a path",
     ITEM "[http]\ncors_origins = https://a.example, https://b.example/app\n",
     "PATH:4: [http] cors_origins: 'https://b.example/app' is not an origin (http[s]://HOST[:PORT] "
     "or *)"},
    {"cors origin without a scheme", ITEM "[http]\ncors_origins = shop.example\n",
     "PATH:4: [http] cors_origins: 'shop.example' is not an origin (http[s]://HOST[:PORT] or *)"},
    {"missing stock", ITEM "\n[item.b]\nper_user_limit = 2\nstarts_at = 0\n",
     "PATH:4: [item.b]: stock is required"},
    {"ends_at before starts_at",
     ITEM "[item.b]\nstock = 2\nstarts_at = 1700000000\nends_at = 1600000000\n",
     "PATH:3: [item.b]: ends_at must be after starts_at"},
    {"ends_at at starts_at", "[item.b]\nstock = 2\nstarts_at = 1700000000\nends_at = 1700000000\n",
     "PATH:1: [item.b]: ends_at must be after starts_at"},
    {"no items", "[gateway]\nlisten = 127.0.0.1:80\n",
     "PATH: no [item.<id>] section: nothing to sell"},
    {"empty file", "", "PATH: no [item.<id>] section: nothing to sell"},
    {"embedded = false", ITEM "[worker]\nembedded = false\n",
     "PATH: [worker] embedded = false: set [rpc] listen so workers can reach this gateway's queue"},
    {"memory inventory in separate workers",
     ITEM "[worker]\nembedded = false\n[rpc]\nlisten = tcp:127.0.0.1:0\nsecret = 0123456789\n",
     "PATH: [worker] inventory = memory needs embedded = true; use redis for separate worker "
     "processes"},
    {"syntax error", ITEM "[gateway]\nthis is not a key\n",
     "PATH:4: syntax error (expected [section] or key = value)"},
    {"unclosed section", ITEM "[gateway\nlisten = 127.0.0.1:80\n",
     "PATH:3: syntax error (expected [section] or key = value)"},
    {"first error wins: two key errors", ITEM "[gateway]\nbogus = 1\n[queue]\npartitions = 0\n",
     "PATH:4: [gateway] unknown key 'bogus'"},
    {"first error wins: key error, then syntax", ITEM "[gateway]\nbogus = 1\nnot a pair\n",
     "PATH:4: [gateway] unknown key 'bogus'"},
    {"first error wins: syntax, then key error", ITEM "[gateway]\nnot a pair\nbogus = 1\n",
     "PATH:4: syntax error (expected [section] or key = value)"},
    {"request_timeout_ms too long", ITEM "[gateway]\nrequest_timeout_ms = 3600001\n",
     "PATH:4: [gateway] request_timeout_ms: expected an integer from 0 to 3600000"},
    {"max_connections_per_ip negative", ITEM "[gateway]\nmax_connections_per_ip = -1\n",
     "PATH:4: [gateway] max_connections_per_ip: expected an integer from 0 to 1000000"},
    {"key set twice",
     ITEM "[gateway]\nwait_timeout_ms = 100\nbody_limit = 64\nwait_timeout_ms = 200\n",
     "PATH:6: [gateway] wait_timeout_ms: set twice (first at line 4)"},
    {"item key set twice", ITEM "per_user_limit = 2\nstock = 3\n",
     "PATH:4: [item.a] stock: set twice (first at line 2)"},
    {"section twice", ITEM "[gateway]\nbody_limit = 64\n[queue]\npartitions = 2\n[gateway]\n",
     "PATH:7: [gateway]: section appears twice (first at line 3)"},
    {"item section twice", ITEM "[item.b]\nstock = 2\n[item.a]\nper_user_limit = 2\n",
     "PATH:5: [item.a]: section appears twice (first at line 1)"},
    {"listen: a bracket that is not an IPv6 literal", ITEM "[gateway]\nlisten = [::1:80\n",
     "PATH:4: [gateway] listen: expected HOST:PORT"},
    {"first error wins: key error before a missing stock",
     "[item.b]\nper_user_limit = 2\n[gateway]\nbody_limit = 1\n",
     "PATH:4: [gateway] body_limit: expected an integer from 64 to 1048576"},
};

static void test_bad_files(void **state)
{
    tmp *t = *state;
    for (size_t i = 0; i < sizeof bads / sizeof *bads; i++) {
        cfg c;
        char err[512] = "", want[512];
        cfg_init(&c);
        write_file(t->path, bads[i].text);
        int rc = cfg_load(&c, t->path, err, sizeof err);
        expand(bads[i].err, t->path, want, sizeof want);
        if (rc != -EINVAL)
            fail_msg("%s: cfg_load returned %d (%s)", bads[i].name, rc, err);
        if (strcmp(err, want) != 0)
            fail_msg("%s:\n  got  %s\n  want %s", bads[i].name, err, want);
        cfg_release(&c);
    }
}

static void test_missing_file(void **state)
{
    tmp *t = *state;
    cfg c;
    char err[512], path[160], want[256];
    cfg_init(&c);
    snprintf(path, sizeof path, "%s/nope.ini", t->dir);
    assert_int_equal(cfg_load(&c, path, err, sizeof err), -ENOENT);
    snprintf(want, sizeof want, "%s: %s", path, strerror(ENOENT));
    assert_string_equal(err, want);
    cfg_release(&c);
}

/* ---- blocklist ---- */

static void test_blocklist(void **state)
{
    tmp *t = *state;
    cfg c;
    char err[512] = "";
    cfg_init(&c);
    write_file(t->path, ITEM "[risk]\n"
                             "blocklist = bot-1, bot-2,bot-3\tbot-4   bot:5 ,, \n"
                             "blocklist =\n"
                             "blocklist = u.6\n"
                             "  u_7, U8\n" /* a continuation line adds to the list */
                             "[gateway]\n"
                             "listen = 127.0.0.1:1\n"
                             "[risk]\n"
                             "blocklist = last ; a comment, not-an-id!\n");
    if (cfg_load(&c, t->path, err, sizeof err) != 0)
        fail_msg("%s", err);
    static const char *want[] = {"bot-1", "bot-2", "bot-3", "bot-4", "bot:5",
                                 "u.6",   "u_7",   "U8",    "last"};
    assert_int_equal(c.nblocklist, sizeof want / sizeof *want);
    for (size_t i = 0; i < c.nblocklist; i++)
        assert_string_equal(c.blocklist[i], want[i]);
    cfg_release(&c);
    assert_null(c.blocklist);
    assert_int_equal(c.nblocklist, 0);
}

static void test_cors_origins(void **state)
{
    tmp *t = *state;
    cfg c;
    char err[512] = "";
    cfg_init(&c);
    assert_int_equal(c.ncors_origins, 0); /* no CORS unless asked */
    write_file(t->path, ITEM "[http]\n"
                             "cors_origins = https://shop.example, http://127.0.0.1:3000 *\n");
    if (cfg_load(&c, t->path, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(c.ncors_origins, 3);
    assert_string_equal(c.cors_origins[0], "https://shop.example");
    assert_string_equal(c.cors_origins[1], "http://127.0.0.1:3000");
    assert_string_equal(c.cors_origins[2], "*");
    cfg_release(&c);
    assert_null(c.cors_origins);
    assert_int_equal(c.ncors_origins, 0);
}

static void test_blocklist_limit(void **state)
{
    tmp *t = *state;
    size_t cap = (CFG_MAX_BLOCKLIST + 2) * 32 + 64;
    char *text = malloc(cap), err[512] = "", want[512];
    size_t n = 0;
    assert_non_null(text);
    n += (size_t)snprintf(text + n, cap - n, ITEM "[risk]\n"); /* 3 lines */
    for (int i = 0; i < CFG_MAX_BLOCKLIST; i++)
        n += (size_t)snprintf(text + n, cap - n, "blocklist = u%d\n", i);

    cfg c;
    cfg_init(&c);
    write_file(t->path, text);
    if (cfg_load(&c, t->path, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(c.nblocklist, CFG_MAX_BLOCKLIST);
    assert_string_equal(c.blocklist[CFG_MAX_BLOCKLIST - 1], "u4095");
    cfg_release(&c);

    snprintf(text + n, cap - n, "blocklist = one-too-many\n");
    cfg_init(&c);
    write_file(t->path, text);
    assert_int_equal(cfg_load(&c, t->path, err, sizeof err), -EINVAL);
    snprintf(want, sizeof want, "%s:%d: [risk] blocklist: more than %d user ids", t->path,
             3 + CFG_MAX_BLOCKLIST + 1, CFG_MAX_BLOCKLIST);
    assert_string_equal(err, want);
    cfg_release(&c);
    free(text);
}

/* ---- cfg_parse_listen ---- */

static void test_parse_listen(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int rc;
        const char *host;
        unsigned port;
    } t[] = {
        {"127.0.0.1:8080", 0, "127.0.0.1", 8080},
        {"0.0.0.0:0", 0, "0.0.0.0", 0},
        {"localhost:65535", 0, "localhost", 65535},
        {"a:b:80", 0, "a:b", 80}, /* the last colon separates the port */
        {"h:1", 0, "h", 1},
        {"127.0.0.1:65536", -EINVAL, NULL, 0},
        {"127.0.0.1:-1", -EINVAL, NULL, 0},
        {"127.0.0.1:", -EINVAL, NULL, 0},
        {"127.0.0.1:80x", -EINVAL, NULL, 0},
        {"127.0.0.1:99999999999999999999", -EINVAL, NULL, 0},
        {":80", -EINVAL, NULL, 0},
        {"127.0.0.1", -EINVAL, NULL, 0},
        {"", -EINVAL, NULL, 0},
        {"0123456789abcdef:1", -EINVAL, NULL, 0}, /* 16 characters: too long for 16 bytes */
        {"0123456789abcde:1", 0, "0123456789abcde", 1},
        {"[::1]:8080", 0, "::1", 8080}, /* IPv6 in brackets, kept without them */
        {"[fe80::1%lo]:1", 0, "fe80::1%lo", 1},
        {"[::1]8080", -EINVAL, NULL, 0},
        {"[::1:8080", -EINVAL, NULL, 0},
        {"[]:80", -EINVAL, NULL, 0},
        {"::1]:80", -EINVAL, NULL, 0},
        {"127.0.0.1:+80", -EINVAL, NULL, 0},
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        char host[16];
        uint16_t port = 4242;
        strcpy(host, "untouched");
        int rc = cfg_parse_listen(t[i].s, host, sizeof host, &port);
        if (rc != t[i].rc)
            fail_msg("'%s': %d, want %d", t[i].s, rc, t[i].rc);
        if (rc == 0) {
            assert_string_equal(host, t[i].host);
            assert_int_equal(port, t[i].port);
        } else { /* nothing written on failure */
            assert_string_equal(host, "untouched");
            assert_int_equal(port, 4242);
        }
    }
}

/* ---- every key of the table is documented ---- */

/* Does the line name key as a setting, "key =" or commented out "; key ="? */
static int ini_line_sets(const char *line, const char *key)
{
    line += strspn(line, " \t");
    if (*line == ';' || *line == '#')
        line += 1 + strspn(line + 1, " \t");
    size_t n = strlen(key);
    if (strncmp(line, key, n) != 0)
        return 0;
    line += n;
    line += strspn(line, " \t");
    return *line == '=';
}

/* In seckill.ini, under its section ([item.<id>]: any item section). */
static int in_shipped_ini(FILE *f, const cfg_key *k)
{
    char line[512], section[128] = "";
    int item = !strcmp(k->section, "item.<id>");
    rewind(f);
    while (fgets(line, sizeof line, f)) {
        const char *p = line + strspn(line, " \t");
        if (*p == '[') {
            size_t n = strcspn(p + 1, "]");
            snprintf(section, sizeof section, "%.*s", (int)n, p + 1);
            continue;
        }
        int here = item ? !strncmp(section, "item.", 5) : !strcmp(section, k->section);
        if (here && ini_line_sets(line, k->name))
            return 1;
    }
    return 0;
}

/* In a table row ("| ... `key` ... |") of the configuration reference. */
static int in_reference(FILE *f, const cfg_key *k)
{
    char line[4096], quoted[96];
    snprintf(quoted, sizeof quoted, "`%s`", k->name);
    rewind(f);
    while (fgets(line, sizeof line, f))
        if (line[0] == '|' && strstr(line, quoted))
            return 1;
    return 0;
}

static void test_every_key_documented(void **state)
{
    (void)state;
    /* the reference moves from the README to docs/configuration.md */
    const char *ref_path = SOURCE_DIR "/docs/configuration.md";
    FILE *ref = fopen(ref_path, "r");
    if (!ref) {
        ref_path = SOURCE_DIR "/README.md";
        ref = fopen(ref_path, "r");
    }
    FILE *ini = fopen(SOURCE_DIR "/config/seckill.ini", "r");
    assert_non_null(ref);
    assert_non_null(ini);
    const cfg_key *tables[2];
    size_t ns[2];
    tables[0] = cfg_keys(&ns[0]);
    tables[1] = cfg_item_keys(&ns[1]);
    int missing = 0;
    for (int t = 0; t < 2; t++) {
        for (size_t i = 0; i < ns[t]; i++) {
            const cfg_key *k = &tables[t][i];
            assert_non_null(k->help);
            if (!in_shipped_ini(ini, k)) {
                print_error("[%s] %s: not in config/seckill.ini\n", k->section, k->name);
                missing++;
            }
            if (!in_reference(ref, k)) {
                print_error("[%s] %s: no table row in %s\n", k->section, k->name, ref_path);
                missing++;
            }
        }
    }
    fclose(ref);
    fclose(ini);
    assert_int_equal(missing, 0);
}

/* cfg_print's output loads back to the same configuration */
/* A reload names what differs and is not reloadable; items that differ
 * are one line. */
static void test_report_restart(void **state)
{
    tmp *t = *state;
    cfg a, b;
    char err[512] = "", *text = NULL;
    size_t len = 0;
    cfg_init(&a);
    cfg_init(&b);
    write_file(t->path, "[token_bucket]\nrate = 5\n[risk]\nblocklist = u1\n"
                        "[item.a]\nstock = 5\n");
    assert_int_equal(cfg_load(&a, t->path, err, sizeof err), 0);
    write_file(t->path, "[gateway]\nlisten = 127.0.0.1:81\n[token_bucket]\nrate = 6\n"
                        "[risk]\nblocklist = u1 u2\n[item.a]\nstock = 9\nper_user_limit = 2\n");
    assert_int_equal(cfg_load(&b, t->path, err, sizeof err), 0);
    assert_int_equal(cfg_key_differs(cfg_find_key("risk", "blocklist"), &a, &b), 1);
    assert_int_equal(cfg_key_differs(cfg_find_key("token_bucket", "rate"), &a, &b), 1);
    assert_int_equal(cfg_key_differs(cfg_find_key("token_bucket", "burst"), &a, &b), 0);
    assert_null(cfg_find_key("token_bucket", "nope"));
    assert_true(cfg_same_items(&a, &b));
    static const char *const live[] = {"token_bucket.rate", "risk.blocklist", "item.stock", NULL};
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    assert_int_equal(cfg_report_restart(&a, &b, live, f), 2);
    assert_int_equal(fclose(f), 0);
    assert_non_null(strstr(text, "[gateway] listen: needs a restart"));
    assert_non_null(strstr(text, "[item.a] per_user_limit: needs a restart"));
    assert_null(strstr(text, "rate"));
    assert_null(strstr(text, "stock"));
    free(text);
    cfg_release(&b);
    cfg_init(&b);
    write_file(t->path, "[item.b]\nstock = 5\n");
    assert_int_equal(cfg_load(&b, t->path, err, sizeof err), 0);
    assert_false(cfg_same_items(&a, &b));
    f = open_memstream(&text, &len);
    assert_int_equal(cfg_report_restart(&a, &b, live, f), 1);
    assert_int_equal(fclose(f), 0);
    assert_non_null(strstr(text, "items added, removed or reordered"));
    free(text);
    cfg_release(&a);
    cfg_release(&b);
}

static void test_print_loads_back(void **state)
{
    tmp *t = *state;
    cfg c, d;
    char err[512] = "";
    cfg_init(&c);
    write_file(t->path, "[gateway]\nlisten = [::1]:81\n[rpc]\ngateways = tcp:a:1, unix:/s\n"
                        "secret = do-not-print\n"
                        "[risk]\nblocklist = u1 u2\n[item.a]\nstock = 5\nends_at = 9\n");
    if (cfg_load(&c, t->path, err, sizeof err) != 0)
        fail_msg("%s", err);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    cfg_print(&c, f);
    assert_int_equal(fclose(f), 0);
    assert_null(strstr(text, "do-not-print"));
    char *secret = strstr(text, "secret = <set>\n");
    assert_non_null(secret);
    *secret = '\0'; /* redacted: put back by hand to load the dump */
    f = fopen(t->path, "w");
    assert_non_null(f);
    fprintf(f, "%ssecret = do-not-print\n%s", text, secret + strlen("secret = <set>\n"));
    assert_int_equal(fclose(f), 0);
    free(text);
    cfg_init(&d);
    if (cfg_load(&d, t->path, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_string_equal(d.listen_host, "::1");
    assert_int_equal(d.listen_port, 81);
    assert_string_equal(d.rpc_secret, "do-not-print");
    assert_int_equal(d.nrpc_gateways, 2);
    assert_string_equal(d.rpc_gateways[1], "unix:/s");
    assert_int_equal(d.nblocklist, 2);
    assert_int_equal(d.items[0].stock, 5);
    assert_int_equal(d.items[0].ends_at, 9);
    assert_true(d.tb_rate == c.tb_rate);
    assert_int_equal(d.queue_max_backlog_bytes, c.queue_max_backlog_bytes);
    assert_string_equal(d.queue_data_dir, c.queue_data_dir);
    cfg_release(&c);
    cfg_release(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_config),
        cmocka_unit_test_setup_teardown(test_defaults, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_values, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_client_limits, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_global_bucket_on_cluster, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_long_item_id, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_bad_files, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_missing_file, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_blocklist, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_blocklist_limit, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_cors_origins, setup_dir, teardown_dir),
        cmocka_unit_test(test_parse_listen),
        cmocka_unit_test(test_every_key_documented),
        cmocka_unit_test_setup_teardown(test_print_loads_back, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_report_restart, setup_dir, teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
