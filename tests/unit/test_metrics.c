/*
 * test_metrics.c - the gateway's Prometheus text (metrics.c, promtext.c):
 * whole at any number of items, the latency buckets from 1 us, 503s by
 * reason, every counter monotonic, build_info and process_* present.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/metrics.h"

#define NITEMS 1000

static char *render(gw_metrics *m, size_t nitems, int with_orders)
{
    const char **ids = calloc(nitems, sizeof *ids);
    char (*idbuf)[65] = calloc(nitems, sizeof *idbuf);
    int64_t *v = calloc(nitems, sizeof *v);
    assert_non_null(ids);
    assert_non_null(idbuf);
    assert_non_null(v);
    for (size_t i = 0; i < nitems; i++) {
        /* 64 characters, the longest id there is */
        snprintf(idbuf[i], sizeof idbuf[i], "%04u%060d", (unsigned)(i % 10000), 0);
        ids[i] = idbuf[i];
        v[i] = (int64_t)i;
    }
    gw_gauges g = {.wall_ns = 1700000000123456789ULL, .nitems = nitems, .item_ids = ids,
                   .stock_left = v};
    if (with_orders)
        g.reserved = g.paid = g.cancelled = g.held = g.buyers = v;
    sk_text t;
    assert_int_equal(sk_text_init(&t, 0), 0); /* the default start: it must grow */
    gw_metrics_render(m, &g, &t);
    assert_false(sk_text_failed(&t));
    assert_int_equal(strlen(t.buf), t.len);
    free(ids);
    free(idbuf);
    free(v);
    return t.buf;
}

/* A thousand items of 64-character ids: every line is there, the last
 * metrics after the items too, and every line ends. */
static void test_whole_at_any_size(void **state)
{
    (void)state;
    gw_metrics m;
    memset(&m, 0, sizeof m);
    char *s = render(&m, NITEMS, 1);
    char want[160];
    snprintf(want, sizeof want, "seckill_buyers{item=\"%04d%060d\"} %d\n", NITEMS - 1, 0,
             NITEMS - 1);
    assert_non_null(strstr(s, want));
    assert_non_null(strstr(s, "\nprocess_max_fds "));
    assert_int_equal(s[strlen(s) - 1], '\n');
    size_t stock_lines = 0;
    for (const char *p = s; (p = strstr(p, "\nseckill_stock_left{")); p++)
        stock_lines++;
    assert_int_equal(stock_lines, NITEMS);
    assert_true(strlen(s) > 16384 + NITEMS * 128); /* past the old fixed buffer */
    free(s);
}

/* 15 us lands in le="2.5e-05", not in le="1e-05"; 800 ns in le="1e-06",
 * 4 us in le="5e-06". */
static void test_buckets_from_1us(void **state)
{
    (void)state;
    gw_metrics m;
    memset(&m, 0, sizeof m);
    gw_metrics_answer(&m, GW_A_SOLD_OUT, 800);
    gw_metrics_answer(&m, GW_A_SOLD_OUT, 4000);
    gw_metrics_answer(&m, GW_A_SOLD_OUT, 15000);
    char *s = render(&m, 1, 0);
    assert_non_null(strstr(s, "seckill_request_duration_seconds_bucket{le=\"1e-06\"} 1\n"));
    assert_non_null(strstr(s, "seckill_request_duration_seconds_bucket{le=\"2.5e-06\"} 1\n"));
    assert_non_null(strstr(s, "seckill_request_duration_seconds_bucket{le=\"5e-06\"} 2\n"));
    assert_non_null(strstr(s, "seckill_request_duration_seconds_bucket{le=\"1e-05\"} 2\n"));
    assert_non_null(strstr(s, "seckill_request_duration_seconds_bucket{le=\"2.5e-05\"} 3\n"));
    assert_non_null(strstr(s, "seckill_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(s, "seckill_request_duration_seconds_count 3\n"));
    free(s);
}

static void test_overloaded_by_reason(void **state)
{
    (void)state;
    gw_metrics m;
    memset(&m, 0, sizeof m);
    gw_metrics_overloaded(&m, GW_OV_QUEUE_FULL);
    gw_metrics_overloaded(&m, GW_OV_QUEUE_FULL);
    gw_metrics_overloaded(&m, GW_OV_NO_WORKER);
    gw_metrics_overloaded(&m, GW_OV_STORE_UNAVAILABLE);
    gw_metrics_overloaded(&m, (enum gw_overload)99); /* out of range: internal */
    char *s = render(&m, 1, 0);
    assert_non_null(strstr(s, "seckill_overloaded_total{reason=\"queue_full\"} 2\n"));
    assert_non_null(strstr(s, "seckill_overloaded_total{reason=\"no_worker\"} 1\n"));
    assert_non_null(strstr(s, "seckill_overloaded_total{reason=\"store_unavailable\"} 1\n"));
    assert_non_null(strstr(s, "seckill_overloaded_total{reason=\"internal\"} 1\n"));
    free(s);
}

/* Orders are counters that only go up, held stock a gauge; the counter
 * that went down (stock minus left) is gone. */
static void test_orders_counters_and_gauges(void **state)
{
    (void)state;
    gw_metrics m;
    memset(&m, 0, sizeof m);
    char *s = render(&m, 2, 1);
    assert_non_null(strstr(s, "# TYPE seckill_orders_reserved_total counter\n"));
    assert_non_null(strstr(s, "# TYPE seckill_orders_paid_total counter\n"));
    assert_non_null(strstr(s, "# TYPE seckill_orders_cancelled_total counter\n"));
    assert_non_null(strstr(s, "# TYPE seckill_stock_held gauge\n"));
    assert_null(strstr(s, "seckill_sold_total"));
    free(s);
    s = render(&m, 2, 0); /* the inventory elsewhere: no per-item orders */
    assert_null(strstr(s, "seckill_orders_reserved_total"));
    assert_non_null(strstr(s, "seckill_stock_left{"));
    free(s);
}

static void test_build_and_process(void **state)
{
    (void)state;
    gw_metrics m;
    memset(&m, 0, sizeof m);
    char *s = render(&m, 1, 0);
    char want[128];
    snprintf(want, sizeof want, "seckill_build_info{version=\"%s\",commit=\"", SECKILL_VERSION);
    assert_non_null(strstr(s, want));
    /* the clock of the render, first: samplers place a late answer by it */
    assert_non_null(strstr(s, "\nseckill_time_seconds 1700000000.123456\n"));
    const char *names[] = {"process_cpu_seconds_total ", "process_resident_memory_bytes ",
                           "process_open_fds ", "process_max_fds ",
                           "process_start_time_seconds "};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char line[64];
        snprintf(line, sizeof line, "\n%s", names[i]);
        const char *p = strstr(s, line);
        if (!p)
            fail_msg("no %s", names[i]);
        double v = strtod(p + strlen(line), NULL);
        if (strstr(names[i], "resident") || strstr(names[i], "fds") || strstr(names[i], "start"))
            assert_true(v > 0);
    }
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_at_any_size),
        cmocka_unit_test(test_buckets_from_1us),
        cmocka_unit_test(test_overloaded_by_reason),
        cmocka_unit_test(test_orders_counters_and_gauges),
        cmocka_unit_test(test_build_and_process),
    };
    return cmocka_run_group_tests_name("unit.metrics", tests, NULL, NULL);
}
