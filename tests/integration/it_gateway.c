/*
 * it_gateway.c - the gateway as a user sees it: a real seckill-gateway
 * process on a loopback port, real HTTP over real sockets.
 *
 * argv[1]: path of the seckill-gateway binary.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "tests/test_time.h"

static const char *gateway_bin;
static const char *park_mode = "thread"; /* thread | event | event-epoll */
static char park_ini[64] = "park = thread\n"; /* its [gateway] lines */
static gw_proc *running; /* killed by the teardown when a test fails midway */

static void make_ini(char *buf, size_t cap, long stock, const char *tb, const char *extra)
{
    snprintf(buf, cap,
             "[gateway]\nwait_timeout_ms = 5000\n"
             "[token_bucket]\n%s\n"
             "[worker]\nthreads = 2\n"
             "[item.demo]\nstock = %ld\nper_user_limit = 1\n%s",
             tb ? tb : "rate = 0", stock, extra ? extra : "");
}

/* Every config starts with [gateway]: add the park mode under test there. */
static void with_park(char *buf, size_t cap, const char *ini)
{
    assert_true(strncmp(ini, "[gateway]\n", 10) == 0);
    snprintf(buf, cap, "[gateway]\n%s%s", park_ini, ini + 10);
}

static void start(gw_proc *p, const char *ini)
{
    char buf[4096];
    with_park(buf, sizeof buf, ini);
    assert_int_equal(gw_proc_start(p, gateway_bin, buf), 0);
    running = p;
}

static void stop(gw_proc *p)
{
    running = NULL;
    assert_int_equal(gw_proc_stop(p), 0); /* SIGTERM: a clean stop exits 0 */
}

/* ---- a table of bad requests and their exact answers ---- */

typedef struct bad_case {
    const char *name;
    const char *raw; /* whole request; "%s" stands for nothing */
    int status;
    const char *body;   /* exact body, or NULL */
    const char *prefix; /* body prefix, or NULL */
    const char *header; /* "Name: value" that must be present, or NULL */
} bad_case;

#define POSTJ(body)                                                                                \
    "POST /seckill HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n" \
    "Content-Length: " #body "\r\n\r\n"

static char big_body[6000];

static void test_bad_requests(void **state)
{
    (void)state;
    gw_proc p;
    char ini[1024], req[8192];
    make_ini(ini, sizeof ini, 100, NULL, NULL);
    start(&p, ini);
    const bad_case cases[] = {
        {"malformed json", "{\"user_id\":", 400, NULL,
         "{\"result\":\"bad_request\",\"error\":\"malformed JSON:", NULL},
        {"not an object", "[1,2]", 400,
         "{\"result\":\"bad_request\",\"error\":\"body must be a JSON object\"}", NULL, NULL},
        {"missing item", "{\"user_id\":\"u1\"}", 400,
         "{\"result\":\"bad_request\",\"error\":\"item_id is required\"}", NULL, NULL},
        {"missing user", "{\"item_id\":\"demo\"}", 400,
         "{\"result\":\"bad_request\",\"error\":\"user_id is required\"}", NULL, NULL},
        {"negative user", "{\"user_id\":-1,\"item_id\":\"demo\"}", 400, NULL,
         "{\"result\":\"bad_request\",\"error\":\"user_id must be", NULL},
        {"float user", "{\"user_id\":1.5,\"item_id\":\"demo\"}", 400, NULL,
         "{\"result\":\"bad_request\",\"error\":\"user_id must be", NULL},
        {"bad chars", "{\"user_id\":\"a b\",\"item_id\":\"demo\"}", 400, NULL,
         "{\"result\":\"bad_request\",\"error\":\"user_id must be", NULL},
        {"empty id", "{\"user_id\":\"\",\"item_id\":\"demo\"}", 400, NULL,
         "{\"result\":\"bad_request\",\"error\":\"user_id must be", NULL},
        {"duplicate key", "{\"user_id\":\"u1\",\"user_id\":\"u2\",\"item_id\":\"demo\"}", 400, NULL,
         "{\"result\":\"bad_request\",\"error\":\"malformed JSON: duplicate object key", NULL},
        {"unknown item", "{\"user_id\":\"u1\",\"item_id\":\"nope\"}", 404,
         "{\"result\":\"unknown_item\"}", NULL, NULL},
    };
    long before = http_stock_left(p.port, "demo");
    assert_int_equal(before, 100);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        http_resp r;
        assert_int_equal(http_buy(p.port, cases[i].raw, &r), 0);
        if (r.status != cases[i].status)
            fail_msg("%s: status %d, want %d (%s)", cases[i].name, r.status, cases[i].status,
                     r.body);
        if (cases[i].body && strcmp(r.body, cases[i].body) != 0)
            fail_msg("%s: body '%s', want '%s'", cases[i].name, r.body, cases[i].body);
        if (cases[i].prefix && strncmp(r.body, cases[i].prefix, strlen(cases[i].prefix)) != 0)
            fail_msg("%s: body '%s', want prefix '%s'", cases[i].name, r.body, cases[i].prefix);
    }
    /* malformed JSON names the position */
    http_resp r;
    assert_int_equal(http_buy(p.port, "{\"user_id\": x}", &r), 0);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "\"line\":1"));
    assert_non_null(strstr(r.body, "\"column\":"));
    assert_non_null(strstr(r.body, "\"position\":"));

    /* wrong method, with Allow */
    char v[64];
    assert_int_equal(http_do(p.port, "GET", "/seckill", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 405);
    assert_string_equal(r.body, "{\"result\":\"method_not_allowed\"}");
    assert_int_equal(http_header(&r, "Allow", v, sizeof v), 0);
    assert_string_equal(v, "POST");
    assert_int_equal(http_do(p.port, "PUT", "/seckill", "Content-Type: application/json\r\n",
                             "{}", 2, &r), 0);
    assert_int_equal(r.status, 405);

    /* not JSON */
    assert_int_equal(http_do(p.port, "POST", "/seckill", "Content-Type: text/plain\r\n",
                             "user_id=1", 9, &r), 0);
    assert_int_equal(r.status, 415);
    assert_string_equal(r.body, "{\"result\":\"unsupported_media_type\"}");
    assert_int_equal(http_do(p.port, "POST", "/seckill", NULL, "{}", 2, &r), 0);
    assert_int_equal(r.status, 415);

    /* over the body limit: refused on Content-Length, before any buffering */
    memset(big_body, ' ', sizeof big_body);
    memcpy(big_body, "{\"user_id\":\"u1\",\"item_id\":\"demo\"}", 33);
    assert_int_equal(http_do(p.port, "POST", "/seckill", "Content-Type: application/json\r\n",
                             big_body, sizeof big_body, &r), 0);
    assert_int_equal(r.status, 413);
    assert_string_equal(r.body, "{\"result\":\"payload_too_large\"}");
    /* other paths ignore a body, and refuse a declared one over the limit */
    assert_int_equal(http_do(p.port, "POST", "/orders/00000000-0000-4000-8000-000000000000/pay",
                             NULL, big_body, sizeof big_body, &r), 0);
    assert_int_equal(r.status, 413);
    assert_int_equal(http_do(p.port, "POST", "/livez", NULL, "x", 1, &r), 0);
    assert_int_equal(r.status, 405);
    /* ... and when chunked, without a Content-Length, once it grows past it */
    int n = snprintf(req, sizeof req,
                     "POST /seckill HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int c = 0; c < 5; c++)
        n += snprintf(req + n, sizeof req - (size_t)n, "3e8\r\n%1000s\r\n", " ");
    n += snprintf(req + n, sizeof req - (size_t)n, "0\r\n\r\n");
    assert_int_equal(http_raw(p.port, req, (size_t)n, &r), 0);
    assert_int_equal(r.status, 413);

    /* other paths */
    assert_int_equal(http_do(p.port, "GET", "/nope", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 404);
    assert_string_equal(r.body, "{\"result\":\"not_found\"}");
    assert_int_equal(http_do(p.port, "GET", "/seckill/result/not-a-uuid", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 400);
    assert_int_equal(http_do(p.port, "GET", "/seckill/result/0b7e3a6c-5a4e-4c55-9a55-6a1f0c7d9e21",
                             NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 404);
    assert_int_equal(http_do(p.port, "GET", "/items/nope", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 404);
    assert_int_equal(http_do(p.port, "DELETE", "/items/demo", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 405);

    /* none of that touched the stock */
    assert_int_equal(http_stock_left(p.port, "demo"), before);
    stop(&p);
}

/* ---- one purchase, seen from every endpoint ---- */

static void test_purchase_flow(void **state)
{
    (void)state;
    gw_proc p;
    char ini[1024], rid[64], hdr[64], order[64], v[64];
    make_ini(ini, sizeof ini, 10, NULL, NULL);
    start(&p, ini);

    http_resp r;
    assert_int_equal(http_do(p.port, "GET", "/livez", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    /* ready once a worker consumes: give the embedded workers a moment */
    for (int i = 0; i < 100; i++) {
        assert_int_equal(http_do(p.port, "GET", "/readyz", NULL, NULL, 0, &r), 0);
        if (r.status == 200)
            break;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(r.status, 200);

    assert_int_equal(http_buy(p.port, "{\"user_id\":\"alice\",\"item_id\":\"demo\"}", &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_field(r.body, "result", v, sizeof v), 0);
    assert_string_equal(v, "success");
    assert_int_equal(json_field(r.body, "request_id", rid, sizeof rid), 0);
    assert_int_equal(strlen(rid), 36);
    assert_int_equal(json_field(r.body, "order_id", order, sizeof order), 0);
    assert_true(strlen(order) > 0);
    assert_int_equal(json_field(r.body, "item_id", v, sizeof v), 0);
    assert_string_equal(v, "demo");
    assert_int_equal(http_header(&r, "X-Request-Id", hdr, sizeof hdr), 0);
    assert_string_equal(hdr, rid);

    /* the recorded outcome */
    char path[128];
    snprintf(path, sizeof path, "/seckill/result/%s", rid);
    assert_int_equal(http_do(p.port, "GET", path, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_field(r.body, "order_id", v, sizeof v), 0);
    assert_string_equal(v, order);

    /* the same user again: already purchased, pointing at the first order */
    assert_int_equal(http_buy(p.port, "{\"user_id\":\"alice\",\"item_id\":\"demo\"}", &r), 0);
    assert_int_equal(r.status, 409);
    assert_int_equal(json_field(r.body, "result", v, sizeof v), 0);
    assert_string_equal(v, "already_purchased");
    assert_int_equal(json_field(r.body, "order_id", v, sizeof v), 0);
    assert_string_equal(v, order);
    assert_int_equal(http_header(&r, "X-Request-Id", hdr, sizeof hdr), 0);

    /* integer user ids work too */
    assert_int_equal(http_buy(p.port, "{\"user_id\":42,\"item_id\":\"demo\"}", &r), 0);
    assert_int_equal(r.status, 200);

    assert_int_equal(http_do(p.port, "GET", "/items/demo", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"item_id\":\"demo\",\"stock_total\":10,\"stock_left\":8,"
                                "\"status\":\"on_sale\",\"starts_at\":0,\"ends_at\":0,"
                                "\"per_user_limit\":1}");

    assert_int_equal(http_do(p.port, "GET", "/metrics", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "seckill_requests_total{result=\"success\"} 2\n"));
    assert_non_null(strstr(r.body, "seckill_requests_total{result=\"already_purchased\"} 1\n"));
    assert_non_null(strstr(r.body, "seckill_request_duration_seconds_count 3\n"));
    assert_non_null(strstr(r.body, "seckill_parked_requests 0\n"));
    assert_non_null(strstr(r.body, "seckill_stock_left{item=\"demo\"} 8\n"));
    stop(&p);
}

/* ---- the sale: stock 100, 1,000 concurrent requests from 500 users ---- */

#define SALE_REQUESTS 1000
#define SALE_USERS 500

typedef struct sale_req {
    int port;
    int user;
    pthread_barrier_t *go;
    int status;
    char result[32];
    char order[64];
} sale_req;

static void *sale_thread(void *arg)
{
    sale_req *s = arg;
    char body[128];
    http_resp *r = malloc(sizeof *r);
    snprintf(body, sizeof body, "{\"user_id\":\"user-%d\",\"item_id\":\"demo\"}", s->user);
    pthread_barrier_wait(s->go);
    if (r && http_buy(s->port, body, r) == 0) {
        s->status = r->status;
        json_field(r->body, "result", s->result, sizeof s->result);
        json_field(r->body, "order_id", s->order, sizeof s->order);
    }
    free(r);
    return NULL;
}

static void test_sale(void **state)
{
    (void)state;
    gw_proc p;
    char ini[1024], text[1100];
    make_ini(ini, sizeof ini, 100, NULL, NULL);
    /* 1,000 clients at once, all from 127.0.0.1: no per-address cap */
    snprintf(text, sizeof text, "[gateway]\nmax_connections_per_ip = 0\n%s", ini + 10);
    start(&p, text);

    static sale_req reqs[SALE_REQUESTS];
    static pthread_t tids[SALE_REQUESTS];
    pthread_barrier_t go;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    pthread_barrier_init(&go, NULL, SALE_REQUESTS);
    for (int i = 0; i < SALE_REQUESTS; i++) {
        reqs[i] = (sale_req){.port = p.port, .user = i % SALE_USERS, .go = &go};
        assert_int_equal(pthread_create(&tids[i], &attr, sale_thread, &reqs[i]), 0);
    }
    for (int i = 0; i < SALE_REQUESTS; i++)
        pthread_join(tids[i], NULL);
    pthread_barrier_destroy(&go);
    pthread_attr_destroy(&attr);

    int success = 0, sold_out = 0, already = 0;
    static int wins[SALE_USERS];
    memset(wins, 0, sizeof wins);
    for (int i = 0; i < SALE_REQUESTS; i++) {
        sale_req *s = &reqs[i];
        if (s->status == 200 && !strcmp(s->result, "success")) {
            success++;
            wins[s->user]++;
            for (int j = 0; j < i; j++) /* every order id is distinct */
                if (reqs[j].status == 200)
                    assert_string_not_equal(reqs[j].order, s->order);
        } else if (s->status == 409 && !strcmp(s->result, "sold_out")) {
            sold_out++;
        } else if (s->status == 409 && !strcmp(s->result, "already_purchased")) {
            already++;
        } else {
            fail_msg("request %d: undocumented answer %d '%s'", i, s->status, s->result);
        }
    }
    for (int u = 0; u < SALE_USERS; u++)
        assert_true(wins[u] <= 1);
    printf("sale: %d success, %d sold_out, %d already_purchased\n", success, sold_out, already);
    assert_int_equal(success, 100);
    assert_int_equal(success + sold_out + already, SALE_REQUESTS);
    assert_int_equal(http_stock_left(p.port, "demo"), 0);
    http_resp r;
    assert_int_equal(http_do(p.port, "GET", "/items/demo", NULL, NULL, 0, &r), 0);
    char v[32];
    assert_int_equal(json_field(r.body, "status", v, sizeof v), 0);
    assert_string_equal(v, "sold_out");
    /* after the sale the local flag answers without the queue */
    assert_int_equal(http_buy(p.port, "{\"user_id\":\"late\",\"item_id\":\"demo\"}", &r), 0);
    assert_int_equal(r.status, 409);
    assert_string_equal(r.body, "{\"result\":\"sold_out\"}");
    /* one context per POST; the late one at least found a freed one to reuse */
    assert_int_equal(http_do(p.port, "GET", "/metrics", NULL, NULL, 0, &r), 0);
    const char *m = strstr(r.body, "\nseckill_request_contexts_total ");
    assert_non_null(m);
    assert_int_equal(strtoll(m + 32, NULL, 10), SALE_REQUESTS + 1);
    m = strstr(r.body, "\nseckill_request_contexts_reused_total ");
    assert_non_null(m);
    long long reused = strtoll(m + 39, NULL, 10);
    assert_true(reused >= 1 && reused <= SALE_REQUESTS);
    stop(&p);
}

/* ---- sale window, rate limit, risk control ---- */

static void test_window_rate_risk(void **state)
{
    (void)state;
    gw_proc p;
    char ini[2048], extra[1024];
    long now = (long)time(NULL);
    snprintf(extra, sizeof extra,
             "[item.later]\nstock = 5\nstarts_at = %ld\n"
             "[item.over]\nstock = 5\nstarts_at = %ld\nends_at = %ld\n"
             "[risk]\nblocklist = bot-1, bot-2\n",
             now + 3600, now - 7200, now - 3600);
    make_ini(ini, sizeof ini, 1000, "rate = 1\nburst = 3", extra);
    start(&p, ini);
    http_resp r;
    char want[128], v[64];

    assert_int_equal(http_buy(p.port, "{\"user_id\":\"u1\",\"item_id\":\"later\"}", &r), 0);
    assert_int_equal(r.status, 409);
    snprintf(want, sizeof want, "{\"result\":\"not_started\",\"starts_at\":%ld}", now + 3600);
    assert_string_equal(r.body, want);
    assert_int_equal(http_do(p.port, "GET", "/items/later", NULL, NULL, 0, &r), 0);
    assert_int_equal(json_field(r.body, "status", v, sizeof v), 0);
    assert_string_equal(v, "upcoming");

    assert_int_equal(http_buy(p.port, "{\"user_id\":\"u1\",\"item_id\":\"over\"}", &r), 0);
    assert_int_equal(r.status, 409);
    assert_string_equal(r.body, "{\"result\":\"ended\"}");
    assert_int_equal(http_do(p.port, "GET", "/items/over", NULL, NULL, 0, &r), 0);
    assert_int_equal(json_field(r.body, "status", v, sizeof v), 0);
    assert_string_equal(v, "ended");

    /* window answers cost no token: the bucket (burst 3) still admits 3 */
    assert_int_equal(http_buy(p.port, "{\"user_id\":\"bot-1\",\"item_id\":\"demo\"}", &r), 0);
    assert_int_equal(r.status, 403);
    assert_string_equal(r.body, "{\"result\":\"blocked\"}");
    assert_int_equal(http_header(&r, "X-Request-Id", v, sizeof v), 0);
    assert_int_equal(http_buy(p.port, "{\"user_id\":\"u2\",\"item_id\":\"demo\"}", &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(http_buy(p.port, "{\"user_id\":\"u3\",\"item_id\":\"demo\"}", &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(http_buy(p.port, "{\"user_id\":\"u4\",\"item_id\":\"demo\"}", &r), 0);
    assert_int_equal(r.status, 429);
    assert_string_equal(r.body, "{\"result\":\"rate_limited\",\"scope\":\"gateway\"}");
    assert_int_equal(http_header(&r, "Retry-After", v, sizeof v), 0);
    assert_true(atoi(v) >= 1);
    assert_int_equal(http_stock_left(p.port, "demo"), 998);
    assert_int_equal(http_do(p.port, "GET", "/metrics", NULL, NULL, 0, &r), 0);
    assert_non_null(strstr(r.body, "seckill_token_bucket_rejections_total 1\n"));
    stop(&p);
}

/* ---- parked requests that time out: 504, then the recorded outcome ---- */

#define TO_REQUESTS 200

typedef struct to_req {
    int port;
    int user;
    pthread_barrier_t *go;
    int status;
    char rid[64];
    char hdr[64];
} to_req;

static void *timeout_thread(void *arg)
{
    to_req *t = arg;
    char body[128];
    http_resp *r = malloc(sizeof *r);
    snprintf(body, sizeof body, "{\"user_id\":\"t-%d\",\"item_id\":\"demo\"}", t->user);
    pthread_barrier_wait(t->go);
    if (r && http_buy(t->port, body, r) == 0) {
        t->status = r->status;
        json_field(r->body, "request_id", t->rid, sizeof t->rid);
        http_header(r, "X-Request-Id", t->hdr, sizeof t->hdr);
    }
    free(r);
    return NULL;
}

static void test_timeouts(void **state)
{
    (void)state;
    gw_proc p;
    /* A 1 ms wait with 200 requests racing two worker threads on a 2-core
     * machine: many waits end before their outcome arrives. */
    const char *ini = "[gateway]\nwait_timeout_ms = 1\n[token_bucket]\nrate = 0\n"
                      "[worker]\nthreads = 1\nbatch = 1\n[item.demo]\nstock = 50\n";
    start(&p, ini);
    static to_req reqs[TO_REQUESTS];
    static pthread_t tids[TO_REQUESTS];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, TO_REQUESTS);
    for (int i = 0; i < TO_REQUESTS; i++) {
        reqs[i] = (to_req){.port = p.port, .user = i, .go = &go};
        assert_int_equal(pthread_create(&tids[i], NULL, timeout_thread, &reqs[i]), 0);
    }
    for (int i = 0; i < TO_REQUESTS; i++)
        pthread_join(tids[i], NULL);
    pthread_barrier_destroy(&go);

    int ok = 0, timeouts = 0, sold_out = 0;
    for (int i = 0; i < TO_REQUESTS; i++) {
        if (reqs[i].status == 504) {
            timeouts++;
            assert_int_equal(strlen(reqs[i].rid), 36);
            assert_string_equal(reqs[i].hdr, reqs[i].rid);
        } else if (reqs[i].status == 200) {
            ok++;
        } else if (reqs[i].status == 409) {
            sold_out++;
        } else {
            fail_msg("request %d: undocumented answer %d", i, reqs[i].status);
        }
    }
    printf("timeouts: %d answered 504, %d success, %d sold_out\n", timeouts, ok, sold_out);
    assert_true(timeouts > 0);

    /* Every timed-out request gets a recorded outcome: a late success, or the
     * worker's "timeout" when it came past the deadline (stock untouched). */
    int late_success = 0;
    for (int i = 0; i < TO_REQUESTS; i++) {
        if (reqs[i].status != 504)
            continue;
        char path[128], v[32];
        http_resp r;
        snprintf(path, sizeof path, "/seckill/result/%s", reqs[i].rid);
        for (int tries = 0; tries < 200; tries++) {
            assert_int_equal(http_do(p.port, "GET", path, NULL, NULL, 0, &r), 0);
            if (r.status != 202)
                break;
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        assert_int_equal(json_field(r.body, "result", v, sizeof v), 0);
        if (r.status == 200 && !strcmp(v, "success"))
            late_success++;
        else if (!(r.status == 504 && !strcmp(v, "timeout")) &&
                 !(r.status == 409 && !strcmp(v, "sold_out")))
            fail_msg("result of %s: %d %s", reqs[i].rid, r.status, r.body);
    }
    /* sold = successes the apps saw + late successes, never above stock */
    long left = http_stock_left(p.port, "demo");
    assert_int_equal(50 - left, ok + late_success);
    http_resp r;
    assert_int_equal(http_do(p.port, "GET", "/metrics", NULL, NULL, 0, &r), 0);
    assert_non_null(strstr(r.body, "seckill_parked_requests 0\n"));
    char want[96];
    snprintf(want, sizeof want, "seckill_requests_total{result=\"timeout\"} %d\n", timeouts);
    assert_non_null(strstr(r.body, want));
    stop(&p);
}

/* ---- command line ---- */

static void test_cli(void **state)
{
    (void)state;
    char out[4096], err[4096], dir[] = "/tmp/seckill-cli-XXXXXX", path[300];
    assert_non_null(mkdtemp(dir));

    const char *help[] = {gateway_bin, "--help", NULL};
    assert_int_equal(run_capture(help, out, sizeof out, err, sizeof err), 0);
    assert_non_null(strstr(out, "Usage: seckill-gateway"));
    const char *ver[] = {gateway_bin, "--version", NULL};
    assert_int_equal(run_capture(ver, out, sizeof out, err, sizeof err), 0);
    assert_non_null(strstr(out, "seckill-gateway "));
    const char *bad[] = {gateway_bin, "--bogus", NULL};
    assert_int_equal(run_capture(bad, out, sizeof out, err, sizeof err), 64);
    assert_non_null(strstr(err, "unknown option '--bogus'"));
    const char *noval[] = {gateway_bin, "-c", NULL};
    assert_int_equal(run_capture(noval, out, sizeof out, err, sizeof err), 64);

    snprintf(path, sizeof path, "%s/bad.ini", dir);
    FILE *f = fopen(path, "w");
    fputs("[gateway]\nwait_timeout_ms = 100\n\n[token_bucket]\nrate = fast\n", f);
    fclose(f);
    const char *chk[] = {gateway_bin, "-c", path, "--check-config", NULL};
    assert_int_equal(run_capture(chk, out, sizeof out, err, sizeof err), 78);
    char want[400];
    snprintf(want, sizeof want, "%s:5: [token_bucket] rate: expected", path);
    if (!strstr(err, want))
        fail_msg("stderr '%s' lacks '%s'", err, want);

    f = fopen(path, "w");
    fputs("[item.x]\nstock = 3\n", f);
    fclose(f);
    assert_int_equal(run_capture(chk, out, sizeof out, err, sizeof err), 0);
    assert_non_null(strstr(out, "OK (1 item"));
    const char *badlisten[] = {gateway_bin, "-c", path, "--listen", "nowhere", NULL};
    assert_int_equal(run_capture(badlisten, out, sizeof out, err, sizeof err), 64);
    const char *missing[] = {gateway_bin, "-c", "/nonexistent/x.ini", NULL};
    assert_int_equal(run_capture(missing, out, sizeof out, err, sizeof err), 78);
    assert_non_null(strstr(err, "/nonexistent/x.ini: No such file"));
    unlink(path);
    rmdir(dir);
}

/* ---- listen: IPv6 literals and host names, checked as start-up binds ---- */

/* Start a gateway of config path on [::1] at sa's port, and get an answer. */
static void serve_v6(const char *path, struct sockaddr_in6 *sa)
{
    char listen[64], ready[96];
    snprintf(listen, sizeof listen, "[::1]:%u", ntohs(sa->sin6_port));
    snprintf(ready, sizeof ready, "listening on http://%s ", listen);
    const char *run[] = {gateway_bin, "-c", path, "--listen", listen, NULL};
    pid_t pid;
    assert_int_equal(proc_spawn(run, ready, &pid), 0);
    int s = socket(AF_INET6, SOCK_STREAM, 0);
    assert_true(s >= 0);
    assert_int_equal(connect(s, (struct sockaddr *)sa, sizeof *sa), 0);
    const char req[] = "GET /seckill HTTP/1.0\r\n\r\n";
    assert_int_equal(write(s, req, sizeof req - 1), (ssize_t)(sizeof req - 1));
    char resp[64] = "";
    ssize_t n = read(s, resp, sizeof resp - 1);
    close(s);
    assert_true(n > 0);
    assert_int_equal(strncmp(resp, "HTTP/1.", 7), 0);
    assert_int_equal(proc_stop(pid, SIGTERM), 0);
}

static void test_listen_forms(void **state)
{
    (void)state;
    char dir[] = "/tmp/seckill-listen-XXXXXX", path[300], text[600], out[8192], err[4096];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/gw.ini", dir);
    snprintf(text, sizeof text,
             "[gateway]\nlisten = localhost:0\ndrain_delay_ms = 0\n[queue]\ndata_dir = %s/data\n"
             "[rpc]\nsecret = not-printed-ever\n[risk]\nblocklist = bot-1\nblocklist = bot-2\n"
             "[item.x]\nstock = 3\n",
             dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);

    /* a name resolves; one that does not is a configuration error */
    const char *chk[] = {gateway_bin, "-c", path, "--check-config", NULL};
    assert_int_equal(run_capture(chk, out, sizeof out, err, sizeof err), 0);
    assert_non_null(strstr(out, "listen localhost:0"));
    const char *bad[] = {gateway_bin, "-c", path, "--listen", "nosuchhost.invalid:80",
                         "--check-config", NULL};
    assert_int_equal(run_capture(bad, out, sizeof out, err, sizeof err), 78);
    if (!strstr(err, "[gateway] listen: 'nosuchhost.invalid' does not resolve"))
        fail_msg("stderr: %s", err);

    /* the effective configuration, secrets redacted */
    const char *print[] = {gateway_bin, "-c", path, "--print-config", NULL};
    assert_int_equal(run_capture(print, out, sizeof out, err, sizeof err), 0);
    assert_non_null(strstr(out, "[gateway]\nlisten = localhost:0\n"));
    assert_non_null(strstr(out, "wait_timeout_ms = 2000\n"));
    assert_non_null(strstr(out, "secret = <set>\n"));
    assert_null(strstr(out, "not-printed-ever"));
    assert_non_null(strstr(out, "blocklist = bot-1\nblocklist = bot-2\n"));
    assert_non_null(strstr(out, "[item.x]\nstock = 3\nper_user_limit = 1\n"));

    /* [::1]:PORT serves, where the machine has IPv6 loopback */
    int s = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    socklen_t len = sizeof sa;
    if (s < 0 || bind(s, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        getsockname(s, (struct sockaddr *)&sa, &len) < 0) {
        if (s >= 0)
            close(s);
        fprintf(stderr, "test_listen_forms: no IPv6 loopback here: [::1] not tested\n");
        goto out_rm;
    }
    close(s); /* its port, free again, for the gateway */
    serve_v6(path, &sa);
    /* and with the gateway's own epoll loops */
    f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "[gateway]\nhttp_io = epoll\n%s", text + strlen("[gateway]\n"));
    fclose(f);
    serve_v6(path, &sa);
out_rm:;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* ---- 128 keep-alive connections with a request each, at once ---- */

#define READY_CONNS 128
#define READY_ROUNDS 20

/* Read one whole response (headers and Content-Length body) from fd. */
static int read_response(int fd, int *status)
{
    char buf[2048];
    size_t len = 0;
    for (;;) {
        ssize_t n = recv(fd, buf + len, sizeof buf - 1 - len, 0);
        if (n <= 0)
            return -1; /* closed, or nothing within SO_RCVTIMEO */
        len += (size_t)n;
        buf[len] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        const char *cl = strstr(buf, "Content-Length: ");
        if (end && cl && len >= (size_t)(end + 4 - buf) + strtoul(cl + 16, NULL, 10)) {
            *status = atoi(buf + 9);
            return 0;
        }
        if (len == sizeof buf - 1)
            return -1;
    }
}

/* One pool thread whose connections all have a request waiting: it must
 * serve them (libmicrohttpd 0.9.75's epoll loop stalled here until a new
 * connection or its 30 s timeout, when exactly 128 were ready). */
static void test_many_ready_at_once(void **state)
{
    (void)state;
    gw_proc p;
    char ini[1024];
    make_ini(ini, sizeof ini, 10, NULL, NULL);
    char one[1100];
    snprintf(one, sizeof one, "[gateway]\npool_threads = 1\n%s", ini + 10);
    start(&p, one);
    int fds[READY_CONNS];
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p.port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    struct timeval tv = {10, 0}; /* a stall lasts 30 s */
    for (int i = 0; i < READY_CONNS; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        assert_true(fds[i] >= 0);
        setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        assert_int_equal(connect(fds[i], (struct sockaddr *)&sa, sizeof sa), 0);
    }
    static const char req[] = "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n";
    for (int round = 0; round < READY_ROUNDS; round++) {
        for (int i = 0; i < READY_CONNS; i++)
            assert_int_equal(send(fds[i], req, sizeof req - 1, MSG_NOSIGNAL),
                             (ssize_t)(sizeof req - 1));
        for (int i = 0; i < READY_CONNS; i++) {
            int status = 0;
            if (read_response(fds[i], &status) < 0)
                fail_msg("round %d: connection %d got no answer within 10 s", round, i);
            assert_int_equal(status, 200);
        }
    }
    for (int i = 0; i < READY_CONNS; i++)
        close(fds[i]);
    stop(&p);
}

/* A second gateway on the port of a running one fails (exit 69, the
 * address named) instead of sharing the port: two gateways with their own
 * stock behind one address would sell the stock twice. */
static void test_port_in_use(void **state)
{
    (void)state;
    gw_proc p;
    char ini[1024];
    make_ini(ini, sizeof ini, 10, NULL, NULL);
    start(&p, ini);
    char dir[] = "/tmp/seckill-port-XXXXXX", path[300], listen[32], text[1400];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/second.ini", dir);
    with_park(text, sizeof text, ini);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    char extra[128], merged[1600];
    snprintf(extra, sizeof extra, "[queue]\ndata_dir = %s/data\n", dir);
    assert_int_equal(ini_merge(merged, sizeof merged, text, extra), 0);
    fputs(merged, f);
    fclose(f);
    snprintf(listen, sizeof listen, "127.0.0.1:%d", p.port);
    const char *second[] = {gateway_bin, "-c", path, "--listen", listen, NULL};
    char out[4096], err[4096];
    assert_int_equal(run_capture(second, out, sizeof out, err, sizeof err), 69);
    char want[64];
    snprintf(want, sizeof want, "cannot listen on %s", listen);
    if (!strstr(err, want))
        fail_msg("stderr '%s' lacks '%s'", err, want);
    /* the first one still serves */
    http_resp r;
    assert_int_equal(http_do(p.port, "GET", "/livez", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    stop(&p);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* ---- slow clients: a request deadline and a per-address cap ---- */

/* A TCP connection to 127.0.0.1:port from source address src, non-blocking
 * once connected; -1 on failure. */
static int connect_from(const char *src, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in me = {.sin_family = AF_INET};
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, src, &me.sin_addr);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (bind(fd, (struct sockaddr *)&me, sizeof me) < 0 ||
        connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* 1 when the server has closed fd (end-of-file or reset), 0 while it is open. */
static int closed_by_server(int fd)
{
    char buf[512];
    for (;;) {
        ssize_t k = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR))
            return 1;
        if (k < 0)
            return 0;
    }
}

/* The value of one series in a /metrics scrape ("name" or
 * "name{label=\"v\"}"), or -1 when the scrape does not have it. */
static long long metric(int port, const char *series)
{
    http_resp r;
    char line[256];
    if (http_do(port, "GET", "/metrics", NULL, NULL, 0, &r) != 0 || r.status != 200)
        return -1;
    snprintf(line, sizeof line, "\n%s ", series);
    const char *at = strstr(r.body, line);
    return at ? strtoll(at + strlen(line), NULL, 10) : -1;
}

#define SLOW_CONNS 1000
#define SLOW_CAP 64
#define SLOW_TIMEOUT_MS 3000 /* room for 1,000 connects and refusals under sanitizers */

typedef struct dripper {
    int *fds;
    int n;
    atomic_int stop;
} dripper;

/* One byte of a request head per connection per second, as a slow client
 * that never finishes its headers sends them. */
static void *drip_main(void *arg)
{
    dripper *d = arg;
    static const char head[] = "POST /seckill HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaa";
    for (size_t at = 0; !atomic_load(&d->stop); at++) {
        for (int i = 0; i < d->n; i++)
            if (d->fds[i] >= 0)
                (void)send(d->fds[i], head + at % (sizeof head - 1), 1,
                           MSG_NOSIGNAL | MSG_DONTWAIT);
        for (int t = 0; t < 20 && !atomic_load(&d->stop); t++)
            sleep_ms(50);
    }
    return NULL;
}

/* the dripper of the test running, stopped by the teardown when it fails */
static dripper *dripping;
static pthread_t dripping_th;

static void drip_start(dripper *d)
{
    assert_int_equal(pthread_create(&dripping_th, NULL, drip_main, d), 0);
    dripping = d;
}

static void drip_stop(void)
{
    if (!dripping)
        return;
    atomic_store(&dripping->stop, 1);
    pthread_join(dripping_th, NULL);
    dripping = NULL;
}

static int count_open(const int *fds, int n)
{
    int open = 0;
    for (int i = 0; i < n; i++)
        open += fds[i] >= 0 && !closed_by_server(fds[i]);
    return open;
}

/* 1,000 connections from 127.0.0.2 that never finish their headers: no more
 * than the per-address cap are kept, a client from 127.0.0.1 is served at
 * once meanwhile, and the kept ones are closed at their request deadline
 * (libmicrohttpd alone keeps them while a byte comes every second). */
static void test_slow_clients(void **state)
{
    (void)state;
    gw_proc p;
    char ini[1024], extra[256];
    snprintf(extra, sizeof extra, "[gateway]\nrequest_timeout_ms = %d\nmax_connections_per_ip = %d\n",
             SLOW_TIMEOUT_MS, SLOW_CAP);
    make_ini(ini, sizeof ini, 100, NULL, NULL);
    char text[1400];
    snprintf(text, sizeof text, "%s%s", extra, ini + 10); /* its [gateway] keys first */
    start(&p, text);
    static int fds[SLOW_CONNS];
    uint64_t t0 = mono_ms();
    for (int i = 0; i < SLOW_CONNS; i++) {
        fds[i] = connect_from("127.0.0.2", p.port);
        if (fds[i] < 0)
            fail_msg("slow connection %d: %s", i, strerror(errno));
        (void)send(fds[i], "P", 1, MSG_NOSIGNAL);
    }
    static dripper d;
    d = (dripper){.fds = fds, .n = SLOW_CONNS};
    drip_start(&d);

    /* the address's connections beyond the cap are closed at once */
    int open = SLOW_CONNS;
    while (mono_ms() - t0 < SLOW_TIMEOUT_MS - 500 && (open = count_open(fds, SLOW_CONNS)) > SLOW_CAP)
        sleep_ms(20);
    uint64_t capped_ms = mono_ms() - t0;
    printf("slow clients: %d of %d from one address kept after %llu ms\n", open, SLOW_CONNS,
           (unsigned long long)capped_ms);
    assert_true(open <= SLOW_CAP);
    assert_true(open > 0);

    /* a client from another address is served at once */
    http_resp r;
    uint64_t b0 = mono_ms();
    assert_int_equal(http_buy(p.port, "{\"user_id\":\"fast\",\"item_id\":\"demo\"}", &r), 0);
    uint64_t buy_ms = mono_ms() - b0;
    assert_int_equal(r.status, 200);
    assert_true(buy_ms < 1000);
    /* the kept ones are still open before their deadline ... */
    if (mono_ms() - t0 < SLOW_TIMEOUT_MS - 300)
        assert_int_equal(count_open(fds, SLOW_CONNS), open);
    /* ... and closed after it, although they keep sending */
    int left = open;
    while (mono_ms() - t0 < SLOW_TIMEOUT_MS + 3000 && (left = count_open(fds, SLOW_CONNS)) > 0)
        sleep_ms(20);
    uint64_t all_closed_ms = mono_ms() - t0;
    printf("slow clients: served another address in %llu ms; the last slow one closed at %llu ms "
           "(request_timeout_ms %d)\n",
           (unsigned long long)buy_ms, (unsigned long long)all_closed_ms, SLOW_TIMEOUT_MS);
    assert_int_equal(left, 0);
    assert_true(all_closed_ms >= SLOW_TIMEOUT_MS - 100);
    drip_stop();
    for (int i = 0; i < SLOW_CONNS; i++)
        close(fds[i]);
    /* the address has its connections back */
    int fd = connect_from("127.0.0.2", p.port);
    assert_true(fd >= 0);
    static const char livez[] = "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(send(fd, livez, sizeof livez - 1, MSG_NOSIGNAL), (ssize_t)(sizeof livez - 1));
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 5000), 1);
    char buf[256];
    assert_true(recv(fd, buf, sizeof buf, 0) > 12);
    assert_int_equal(strncmp(buf, "HTTP/1.1 200", 12), 0);
    close(fd);
    /* each of the 1,000 was either refused for its address or kept until
     * its deadline, and /metrics tells which */
    assert_int_equal(metric(p.port, "seckill_http_request_timeouts_total"), open);
    assert_int_equal(metric(p.port, "seckill_http_per_ip_refused_total"), SLOW_CONNS - open);
    stop(&p);
}

/* Without a per-address cap, slow clients that fill max_connections hold it
 * only until their request deadline; then everyone is served again. */
static void test_request_deadline_frees_capacity(void **state)
{
    (void)state;
    gw_proc p;
    char ini[1024], text[1400];
    make_ini(ini, sizeof ini, 100, NULL, NULL);
    snprintf(text, sizeof text,
             "[gateway]\nrequest_timeout_ms = %d\nmax_connections_per_ip = 0\n"
             "max_connections = 64\npool_threads = 2\n%s",
             SLOW_TIMEOUT_MS, ini + 10);
    start(&p, text);
    enum { N = 100 };
    static int fds[N];
    uint64_t t0 = mono_ms();
    for (int i = 0; i < N; i++) {
        fds[i] = connect_from("127.0.0.3", p.port);
        assert_true(fds[i] >= 0);
        (void)send(fds[i], "P", 1, MSG_NOSIGNAL);
    }
    static dripper d;
    d = (dripper){.fds = fds, .n = N};
    drip_start(&d);
    /* capacity is back by the deadline (plus a sweep and a loaded machine) */
    http_resp r;
    int status = 0;
    while (mono_ms() - t0 < SLOW_TIMEOUT_MS + 4000) {
        if (http_buy(p.port, "{\"user_id\":\"late\",\"item_id\":\"demo\"}", &r) == 0) {
            status = r.status;
            break;
        }
        sleep_ms(50);
    }
    uint64_t served_ms = mono_ms() - t0;
    printf("deadline: served again %llu ms after the slow clients came (request_timeout_ms %d)\n",
           (unsigned long long)served_ms, SLOW_TIMEOUT_MS);
    assert_int_equal(status, 200);
    /* those that waited in the backlog meanwhile get a deadline of their own */
    int left = N;
    while (mono_ms() - t0 < 2 * SLOW_TIMEOUT_MS + 4000 && (left = count_open(fds, N)) > 0)
        sleep_ms(20);
    assert_int_equal(left, 0);
    drip_stop();
    for (int i = 0; i < N; i++)
        close(fds[i]);
    /* /metrics: the slow ones that held the 64 slots were closed by their
     * deadline; those beyond them were closed by libmicrohttpd at accept in
     * thread park, and waited in the backlog for a deadline of their own in
     * event park. None was refused for its address: there is no cap. */
    long long timeouts = metric(p.port, "seckill_http_request_timeouts_total");
    printf("deadline: %lld connections closed by their deadline\n", timeouts);
    assert_int_equal(timeouts, strcmp(park_mode, "thread") == 0 ? 64 : N);
    assert_int_equal(metric(p.port, "seckill_http_per_ip_refused_total"), 0);
    stop(&p);
}

/* Half a request, then FIN: the connection is freed at end-of-file, not
 * after the 30 s idle timeout (libmicrohttpd 0.9.75 in epoll mode missed an
 * end-of-file that came with the last bytes). */
static void test_half_closed(void **state)
{
    (void)state;
    gw_proc p;
    char ini[1024], text[1400];
    make_ini(ini, sizeof ini, 100, NULL, NULL);
    snprintf(text, sizeof text,
             "[gateway]\nrequest_timeout_ms = 60000\nmax_connections_per_ip = 0\n"
             "max_connections = 64\n%s",
             ini + 10);
    start(&p, text);
    enum { N = 500 };
    static int fds[N];
    static const char half[] = "POST /seckill HTTP/1.1\r\nHost: x\r\nContent-Le";
    uint64_t t0 = mono_ms();
    for (int i = 0; i < N; i++) {
        fds[i] = connect_from("127.0.0.1", p.port);
        assert_true(fds[i] >= 0);
        (void)send(fds[i], half, sizeof half - 1, MSG_NOSIGNAL);
        shutdown(fds[i], SHUT_WR);
    }
    int left = N;
    while (mono_ms() - t0 < 5000 && (left = count_open(fds, N)) > 0)
        sleep_ms(20);
    uint64_t closed_ms = mono_ms() - t0;
    printf("half-closed: %d of %d still open after %llu ms\n", left, N,
           (unsigned long long)closed_ms);
    assert_int_equal(left, 0);
    for (int i = 0; i < N; i++)
        close(fds[i]);
    http_resp r;
    assert_int_equal(http_buy(p.port, "{\"user_id\":\"after\",\"item_id\":\"demo\"}", &r), 0);
    assert_int_equal(r.status, 200);
    stop(&p);
}

/* ---- framing (RFC 9112 section 6) ---- */

/* Send req on a fresh connection and read until the server closes or
 * within_ms pass. OUT: out (NUL-terminated), *eof. Returns bytes read. */
static size_t exchange(int port, const char *req, size_t len, char *out, size_t cap,
                       int within_ms, int *eof)
{
    int fd = connect_from("127.0.0.1", port);
    size_t n = 0;
    *eof = 0;
    out[0] = '\0';
    if (fd < 0)
        return 0;
    for (size_t off = 0; off < len;) {
        ssize_t k = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (k < 0 && errno == EAGAIN) {
            struct pollfd w = {.fd = fd, .events = POLLOUT};
            poll(&w, 1, 100);
            continue;
        }
        if (k <= 0)
            break; /* answered and closed before all was sent */
        off += (size_t)k;
    }
    uint64_t until = mono_ms() + (uint64_t)within_ms;
    while (n < cap - 1) {
        int64_t left = (int64_t)(until - mono_ms());
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            break;
        ssize_t k = recv(fd, out + n, cap - 1 - n, 0);
        if (k <= 0) {
            *eof = 1;
            break;
        }
        n += (size_t)k;
    }
    out[n] = '\0';
    close(fd);
    return n;
}

static int count_answers(const char *s)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, "HTTP/1.1 ")) != NULL; p++)
        n += p == s || p[-1] == '\n';
    return n;
}

typedef struct frame_case {
    const char *name;
    const char *head;  /* request head, without the final CRLF */
    const char *body;  /* sent after the head, may be NULL */
    int status;
    const char *json;  /* exact body of the (first) answer, or NULL */
    int must_close;    /* Connection: close, one answer, then end-of-file */
} frame_case;

#define PJ "POST /seckill HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
#define BUY "{\"user_id\":\"%s\",\"item_id\":\"demo\"}"
#define NEXT "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n" /* a request smuggled in the body */

static void test_framing(void **state)
{
    (void)state;
    gw_proc p;
    char ini[1024];
    make_ini(ini, sizeof ini, 100, NULL, NULL);
    start(&p, ini);
    static char longuri[3200], bighead[10400], req[16384], out[16384], body[512];
    snprintf(longuri, sizeof longuri, "GET /items/%03000d HTTP/1.1\r\nHost: x\r\n", 7);
    snprintf(bighead, sizeof bighead, "GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: %010000d\r\n", 7);
    const frame_case cases[] = {
        {"two Content-Length", PJ "Content-Length: 33\r\nContent-Length: 66\r\n",
         "{\"user_id\":\"f1\",\"item_id\":\"demo\"}" NEXT, 400,
         "{\"result\":\"bad_request\",\"error\":\"conflicting or invalid Content-Length\"}", 1},
        {"Content-Length twice, same value", PJ "Content-Length: 33\r\nContent-Length: 033\r\n",
         "{\"user_id\":\"f2\",\"item_id\":\"demo\"}", 200, NULL, 0},
        {"Transfer-Encoding with Content-Length",
         PJ "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
         "22\r\n{\"user_id\":\"f3\",\"item_id\":\"demo\"}\r\n0\r\n\r\n" NEXT, 200, NULL, 1},
        {"gzip, chunked", PJ "Transfer-Encoding: gzip, chunked\r\n", "5\r\nhello\r\n0\r\n\r\n", 501,
         "{\"result\":\"not_implemented\",\"error\":\"only the chunked Transfer-Encoding is "
         "supported\"}",
         1},
        {"xchunked", PJ "Transfer-Encoding: xchunked\r\n", "5\r\nhello\r\n0\r\n\r\n", 400,
         "{\"result\":\"bad_request\",\"error\":\"chunked must be the final Transfer-Encoding\"}",
         1},
        {"chunked, gzip", PJ "Transfer-Encoding: chunked, gzip\r\n", "5\r\nhello\r\n0\r\n\r\n",
         400, NULL, 1},
        {"two Transfer-Encoding fields", PJ "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
         "0\r\n\r\n", 501, NULL, 1},
        {"Transfer-Encoding in HTTP/1.0",
         "POST /seckill HTTP/1.0\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n"
         "Transfer-Encoding: chunked\r\n",
         "22\r\n{\"user_id\":\"f6\",\"item_id\":\"demo\"}\r\n0\r\n\r\n", 400,
         "{\"result\":\"bad_request\",\"error\":\"Transfer-Encoding in an HTTP/1.0 request\"}", 1},
        {"URI too long", longuri, NULL, 414, "{\"result\":\"uri_too_long\"}", 1},
        {"headers too large", bighead, NULL, 431, "{\"result\":\"headers_too_large\"}", 1},
        {"chunked alone stays open", PJ "Transfer-Encoding: chunked\r\n",
         "22\r\n{\"user_id\":\"f4\",\"item_id\":\"demo\"}\r\n0\r\n\r\n", 200, NULL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const frame_case *c = &cases[i];
        int n = snprintf(req, sizeof req, "%s\r\n%s", c->head, c->body ? c->body : "");
        int eof;
        uint64_t t0 = mono_ms();
        /* an answer that keeps the connection is read until 1 s of silence */
        exchange(p.port, req, (size_t)n, out, sizeof out, c->must_close ? 5000 : 1000, &eof);
        uint64_t took = mono_ms() - t0;
        int status = 0;
        if (sscanf(out, "HTTP/1.1 %d", &status) != 1 || status != c->status)
            fail_msg("%s: answer '%.300s', want status %d", c->name, out, c->status);
        if (!strstr(out, "Content-Type: application/json\r\n"))
            fail_msg("%s: no JSON Content-Type in '%.300s'", c->name, out);
        const char *b = strstr(out, "\r\n\r\n");
        if (c->json && (!b || strncmp(b + 4, c->json, strlen(c->json)) != 0))
            fail_msg("%s: body '%s', want '%s'", c->name, b ? b + 4 : "", c->json);
        int has_close = strstr(out, "Connection: close\r\n") != NULL;
        if (c->must_close) {
            if (!has_close || !eof || took > 4000)
                fail_msg("%s: Connection: close %d, closed %d after %llu ms: '%.300s'", c->name,
                         has_close, eof, (unsigned long long)took, out);
            if (count_answers(out) != 1)
                fail_msg("%s: %d answers, want 1 (the body's tail served as a request): '%s'",
                         c->name, count_answers(out), out);
        } else if (has_close || eof) {
            fail_msg("%s: closed (Connection: close %d, end-of-file %d)", c->name, has_close, eof);
        }
    }
    /* a body declared over the limit by a Content-Length that Transfer-Encoding
     * overrides is read by chunks: under the limit, it is served */
    snprintf(body, sizeof body, BUY, "f5");
    int n = snprintf(req, sizeof req, PJ "Content-Length: 999999\r\nTransfer-Encoding: chunked\r\n\r\n%zx\r\n%s\r\n0\r\n\r\n",
                     strlen(body), body);
    int eof;
    exchange(p.port, req, (size_t)n, out, sizeof out, 5000, &eof);
    assert_int_equal(strncmp(out, "HTTP/1.1 200", 12), 0);
    assert_true(eof);
    /* every purchase above that was served was one purchase */
    assert_int_equal(http_stock_left(p.port, "demo"), 96);
    /* each refusal above is counted under its reason */
    static const struct {
        const char *reason;
        long long n;
    } refused[] = {
        {"conflicting_length", 1},        /* two Content-Length */
        {"bad_transfer_encoding", 2},     /* xchunked; chunked, gzip */
        {"unknown_transfer_encoding", 2}, /* gzip, chunked; two fields */
        {"transfer_encoding_http10", 1},  /* chunked in HTTP/1.0 */
        {"uri_too_long", 1},              /* a 3,000-byte target */
        {"headers_too_large", 1},         /* a 10,000-byte field */
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char series[128];
        snprintf(series, sizeof series, "seckill_http_framing_refused_total{reason=\"%s\"}",
                 refused[i].reason);
        long long got = metric(p.port, series);
        if (got != refused[i].n)
            fail_msg("%s: %lld, want %lld", series, got, refused[i].n);
    }
    assert_int_equal(metric(p.port, "seckill_http_per_ip_refused_total"), 0);
    stop(&p);
}

static int teardown(void **state)
{
    (void)state;
    drip_stop();
    if (running) {
        gw_proc_stop(running);
        running = NULL;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s PATH-TO-seckill-gateway [thread|event|event-epoll]\n", argv[0]);
        return 2;
    }
    gateway_bin = argv[1];
    if (argc > 2)
        park_mode = argv[2];
    park_ini_lines(park_mode, park_ini, sizeof park_ini);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_cli, teardown),
        cmocka_unit_test_teardown(test_listen_forms, teardown),
        cmocka_unit_test_teardown(test_bad_requests, teardown),
        cmocka_unit_test_teardown(test_purchase_flow, teardown),
        cmocka_unit_test_teardown(test_window_rate_risk, teardown),
        cmocka_unit_test_teardown(test_sale, teardown),
        cmocka_unit_test_teardown(test_timeouts, teardown),
        cmocka_unit_test_teardown(test_many_ready_at_once, teardown),
        cmocka_unit_test_teardown(test_port_in_use, teardown),
        cmocka_unit_test_teardown(test_framing, teardown),
        cmocka_unit_test_teardown(test_half_closed, teardown),
        cmocka_unit_test_teardown(test_slow_clients, teardown),
        cmocka_unit_test_teardown(test_request_deadline_frees_capacity, teardown),
    };
    char name[64];
    snprintf(name, sizeof name, "integration.gateway.%s", park_mode);
    return cmocka_run_group_tests_name(name, tests, NULL, NULL);
}
