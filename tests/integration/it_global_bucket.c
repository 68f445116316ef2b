/*
 * it_global_bucket.c - [token_bucket] scope = global with three real gateway
 * processes and a real redis-server: under demand far above the rate, the
 * requests all three admit together stay within rate * t + burst + one chunk
 * per gateway; with Redis stopped each gateway admits at its fallback share
 * (rate / 3, burst / 3) and counts it; with Redis back the fallback ends.
 *
 * With a second argument `redis-cluster` the same on a real Redis Cluster
 * (3 masters, 3 replicas): the bucket's keys live in {tb}'s slot, and
 * "Redis stopped" is every master killed (no replica can be promoted
 * without a majority of masters to vote), "back" the masters restarted.
 *
 * argv: seckill-gateway [redis-cluster].
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

#include "harness.h"
#include "tests/redis_cluster.h"
#include "tests/redis_server.h"
#include "tests/test_time.h"

#define NGW 3
#define RATE 40.0
#define BURST 30
#define CHUNK 4
#define CLIENTS_PER_GW 3

static const char *gateway_bin;
static gw_proc gw[NGW];

/* ---- Redis: one server, or a Redis Cluster ---- */

static int use_rcluster;
static redis_server rs;
static redis_cluster rcl;
static int masters[3]; /* rcl's masters, as redis_down found them */

/* Start Redis. OUT: the gateways' [redis] keys that name it. */
static void redis_up(char *keys, size_t cap)
{
    if (!use_rcluster) {
        assert_int_equal(redis_server_start(&rs), 0);
        snprintf(keys, cap, "port = %d\n", rs.port);
        return;
    }
    char nodes[512];
    assert_int_equal(redis_cluster_setup(&rcl, 1000, nodes, sizeof nodes), 0);
    snprintf(keys, cap, "cluster = true\nnodes = %s\n", nodes);
}

static void redis_down(void)
{
    if (!use_rcluster) {
        redis_server_stop(&rs);
        return;
    }
    static const unsigned thirds[] = {0, 8192, 16383}; /* a slot of each master's range */
    for (int i = 0; i < 3; i++) {
        masters[i] = redis_cluster_master_of(&rcl, thirds[i]);
        assert_true(masters[i] >= 0);
    }
    for (int i = 0; i < 3; i++)
        redis_cluster_kill(&rcl, masters[i]);
}

static void redis_back(void)
{
    if (!use_rcluster) {
        assert_int_equal(redis_server_restart(&rs), 0);
        return;
    }
    for (int i = 0; i < 3; i++)
        if (rcl.node[masters[i]].pid <= 0)
            assert_int_equal(redis_cluster_restart(&rcl, masters[i]), 0);
    assert_int_equal(redis_cluster_wait_ok(&rcl, 30000), 0);
}

/* ---- load ---- */

typedef struct client {
    int port, id;
    uint64_t until_ms;
    long admitted, refused, other;
} client;

static atomic_int next_user;

static void *client_main(void *arg)
{
    client *c = arg;
    http_resp *r = malloc(sizeof *r);
    assert_non_null(r);
    while (mono_ms() < c->until_ms) {
        char body[96];
        snprintf(body, sizeof body, "{\"user_id\":\"u-%d\",\"item_id\":\"demo\"}",
                 atomic_fetch_add(&next_user, 1));
        if (http_buy(c->port, body, r) != 0)
            continue;
        if (r->status == 429)
            c->refused++;
        else if (r->status == 200)
            c->admitted++;
        else
            c->other++;
    }
    free(r);
    return NULL;
}

/* Offer load to every gateway for ms. OUT: admitted[i] per gateway; returns
 * the window it took, from before the first request to after the last answer. */
static uint64_t offer(long ms, long admitted[NGW], long *refused)
{
    static client cl[NGW * CLIENTS_PER_GW];
    pthread_t t[NGW * CLIENTS_PER_GW];
    uint64_t t0 = mono_ms();
    for (int i = 0; i < NGW * CLIENTS_PER_GW; i++) {
        cl[i] = (client){.port = gw[i % NGW].port, .id = i, .until_ms = t0 + (uint64_t)ms};
        assert_int_equal(pthread_create(&t[i], NULL, client_main, &cl[i]), 0);
    }
    *refused = 0;
    for (int g = 0; g < NGW; g++)
        admitted[g] = 0;
    for (int i = 0; i < NGW * CLIENTS_PER_GW; i++) {
        pthread_join(t[i], NULL);
        admitted[i % NGW] += cl[i].admitted;
        *refused += cl[i].refused;
        assert_int_equal(cl[i].other, 0); /* only 200 or 429: stock is plenty */
    }
    return mono_ms() - t0;
}

/* A metric of gateway g (its first sample), -1 when absent. */
static double metric(int g, const char *name)
{
    http_resp r;
    char key[128];
    assert_int_equal(http_do(gw[g].port, "GET", "/metrics", NULL, NULL, 0, &r), 0);
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(r.body, key);
    return p ? strtod(p + strlen(key), NULL) : -1;
}

static void wait_metric(int g, const char *name, double want)
{
    uint64_t until = mono_ms() + 10000;
    while (metric(g, name) != want && mono_ms() < until)
        sleep_ms(20);
    assert_true(metric(g, name) == want);
}

/* ---- the test ---- */

static void test_global_rate_across_gateways(void **state)
{
    (void)state;
    char ini[1536], redis[640];
    redis_up(redis, sizeof redis);
    snprintf(ini, sizeof ini,
             "[gateway]\nwait_timeout_ms = 5000\n"
             "[token_bucket]\nscope = global\nrate = %g\nburst = %d\nchunk = %d\n"
             "[queue]\norder_flush = async\n"
             "[redis]\n%stimeout_ms = 2000\n"
             "[item.demo]\nstock = 1000000\n",
             RATE, BURST, CHUNK, redis);
    for (int g = 0; g < NGW; g++)
        assert_int_equal(gw_proc_start(&gw[g], gateway_bin, ini), 0);
    for (int g = 0; g < NGW; g++)
        wait_metric(g, "seckill_token_bucket_global_gateways", NGW);

    long admitted[NGW], refused, total = 0;
    uint64_t t = offer(3000, admitted, &refused);
    for (int g = 0; g < NGW; g++)
        total += admitted[g];
    double bound = RATE * (double)t / 1000.0 + BURST + NGW * CHUNK;
    double fetches = 0, granted = 0;
    for (int g = 0; g < NGW; g++) {
        fetches += metric(g, "seckill_token_bucket_global_fetches_total");
        granted += metric(g, "seckill_token_bucket_global_granted_total");
    }
    printf("global: %ld admitted (%ld + %ld + %ld), %ld refused in %llu ms; bound rate*t + "
           "burst + %d chunks = %.1f; %.0f Redis calls granted %.0f\n",
           total, admitted[0], admitted[1], admitted[2], refused, (unsigned long long)t, NGW,
           bound, fetches, granted);
    assert_true(refused > total); /* demand far above the rate, or the bound proves nothing */
    assert_true((double)total <= bound);
    for (int g = 0; g < NGW; g++)
        assert_true(metric(g, "seckill_token_bucket_fallback") == 0);

    /* Redis stopped: each gateway on its own, at rate / 3 and burst / 3 */
    redis_down();
    long before[NGW];
    for (int g = 0; g < NGW; g++)
        before[g] = (long)metric(g, "seckill_token_bucket_fallback_takes_total");
    t = offer(2000, admitted, &refused);
    for (int g = 0; g < NGW; g++) {
        double share = RATE / NGW * (double)t / 1000.0 + BURST / NGW + CHUNK;
        long takes = (long)metric(g, "seckill_token_bucket_fallback_takes_total") - before[g];
        printf("fallback: gateway %d admitted %ld in %llu ms (its share's bound %.1f), "
               "%ld by the fallback\n",
               g, admitted[g], (unsigned long long)t, share, takes);
        assert_true(metric(g, "seckill_token_bucket_fallback") == 1);
        assert_true(metric(g, "seckill_token_bucket_fallbacks_total") >= 1);
        assert_true(takes > 0);
        assert_true((double)admitted[g] <= share);
    }
    assert_true(refused > 0);

    /* Redis back: the shared bucket again */
    redis_back();
    for (int g = 0; g < NGW; g++)
        wait_metric(g, "seckill_token_bucket_fallback", 0);
}

static int teardown(void **state)
{
    (void)state;
    for (int g = 0; g < NGW; g++)
        if (gw[g].pid > 0)
            gw_proc_stop(&gw[g]);
    if (use_rcluster)
        redis_cluster_destroy(&rcl);
    else
        redis_server_destroy(&rs);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s SECKILL-GATEWAY [redis-cluster]\n", argv[0]);
        return 2;
    }
    gateway_bin = argv[1];
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_global_rate_across_gateways, teardown),
    };
    if (argc > 2 && !strcmp(argv[2], "redis-cluster")) {
        use_rcluster = 1;
        return cmocka_run_group_tests_name("integration.global_bucket.redis_cluster", tests, NULL,
                                           NULL);
    }
    return cmocka_run_group_tests_name("integration.global_bucket", tests, NULL, NULL);
}
