/*
 * test_conn_guard.c - the request deadline and the per-address cap without
 * libmicrohttpd: time is passed in, connections are socketpairs, and a
 * connection shut down by the sweep shows as end-of-file on its peer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gateway/conn_guard.h"
#include "gateway/pending.h" /* gw_mono_ns */

#define MS 1000000ULL

/* Test time starts an hour ahead of the real clock, so that the guard's own
 * sweeper (real time) never finds these deadlines due. */
static uint64_t base;
#define AT(ms) (base + (uint64_t)(ms)*MS)

typedef struct pair {
    int ours, peer;
} pair;

static pair open_pair(void)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    return (pair){sv[0], sv[1]};
}

/* 1 when our side was shut down: the peer reads end-of-file at once */
static int shut(pair p)
{
    char b;
    return recv(p.peer, &b, 1, MSG_DONTWAIT) == 0;
}

static void close_pair(pair p)
{
    close(p.ours);
    close(p.peer);
}

static uint32_t ip(const char *s)
{
    struct in_addr a;
    inet_pton(AF_INET, s, &a);
    return a.s_addr;
}

static void test_deadline(void **state)
{
    (void)state;
    gw_guard *g;
    gw_guard_cfg c = {.request_timeout_ms = 1000, .max_per_ip = 0, .max_connections = 16};
    assert_int_equal(gw_guard_create(&c, &g), 0);
    pair a = open_pair(), b = open_pair(), d = open_pair();
    gw_guard_conn *ca, *cb, *cd;
    assert_int_equal(gw_guard_open(g, a.ours, 0, AT(0), &ca), 0);
    assert_int_equal(gw_guard_open(g, b.ours, 0, AT(500), &cb), 0);
    assert_int_equal(gw_guard_open(g, d.ours, 0, AT(600), &cd), 0);
    /* d's request is complete: no deadline (a parked request) */
    gw_guard_conn_done(g, cd);
    gw_guard_conn_done(g, cd); /* twice: harmless */
    assert_int_equal(gw_guard_sweep(g, AT(999)), 0);
    assert_false(shut(a));
    assert_int_equal(gw_guard_sweep(g, AT(1000)), 1); /* at its deadline */
    assert_true(shut(a));
    assert_false(shut(b));
    /* b answered its request at 1.2 s: the next one has until 2.2 s */
    gw_guard_conn_arm(g, cb, AT(1200));
    assert_int_equal(gw_guard_sweep(g, AT(2199)), 0);
    assert_false(shut(b));
    assert_int_equal(gw_guard_sweep(g, AT(10000)), 1);
    assert_true(shut(b));
    assert_false(shut(d)); /* complete, never cut */
    assert_int_equal(gw_guard_timeouts(g), 2);
    gw_guard_close(g, ca);
    gw_guard_close(g, cb);
    gw_guard_close(g, cd);
    close_pair(a);
    close_pair(b);
    close_pair(d);
    gw_guard_destroy(g);
}

/* Deadlines come out in arming order, so re-arming moves a connection to the
 * back: many connections, re-armed out of order, expire exactly on time. */
static void test_deadline_order(void **state)
{
    (void)state;
    enum { N = 64 };
    gw_guard *g;
    gw_guard_cfg c = {.request_timeout_ms = 100, .max_connections = N};
    assert_int_equal(gw_guard_create(&c, &g), 0);
    pair p[N];
    gw_guard_conn *cs[N];
    for (int i = 0; i < N; i++) {
        p[i] = open_pair();
        assert_int_equal(gw_guard_open(g, p[i].ours, 0, AT(i), &cs[i]), 0);
    }
    for (int i = 0; i < N; i += 2) /* the even ones answered a request at N + i ms */
        gw_guard_conn_arm(g, cs[i], AT(N + i));
    /* by 100 + N - 1 ms every odd one is due, no even one */
    assert_int_equal(gw_guard_sweep(g, AT(99)), 0);
    unsigned total = 0;
    for (int t = 100; t < 100 + N; t++)
        total += gw_guard_sweep(g, AT(t));
    assert_int_equal(total, N / 2);
    for (int i = 0; i < N; i++)
        assert_int_equal(shut(p[i]), i % 2);
    assert_int_equal(gw_guard_sweep(g, AT(100 + 2 * N)), N / 2);
    for (int i = 0; i < N; i++) {
        assert_true(shut(p[i]));
        gw_guard_close(g, cs[i]);
        close_pair(p[i]);
    }
    gw_guard_destroy(g);
}

static void test_no_deadline(void **state)
{
    (void)state;
    gw_guard *g;
    gw_guard_cfg c = {.request_timeout_ms = 0, .max_per_ip = 0, .max_connections = 4};
    assert_int_equal(gw_guard_create(&c, &g), 0);
    pair a = open_pair();
    gw_guard_conn *ca;
    assert_int_equal(gw_guard_open(g, a.ours, ip("127.0.0.2"), AT(0), &ca), 0);
    assert_int_equal(gw_guard_sweep(g, UINT64_MAX / 2), 0);
    assert_false(shut(a));
    assert_int_equal(gw_guard_ip_count(g, ip("127.0.0.2")), 0); /* no cap: not counted */
    gw_guard_close(g, ca);
    close_pair(a);
    gw_guard_destroy(g);
}

static void test_per_ip_cap(void **state)
{
    (void)state;
    enum { CAP = 3, ADDRS = 200 };
    gw_guard *g;
    gw_guard_cfg c = {.request_timeout_ms = 0, .max_per_ip = CAP, .max_connections = 1000};
    assert_int_equal(gw_guard_create(&c, &g), 0);
    static gw_guard_conn *cs[ADDRS][CAP];
    /* many addresses (probe runs that collide and are shifted back on delete) */
    for (int a = 0; a < ADDRS; a++) {
        uint32_t x = htonl(0x7f000000u | (uint32_t)(a * 4096 + 1));
        for (int k = 0; k < CAP; k++)
            assert_int_equal(gw_guard_open(g, -1, x, 0, &cs[a][k]), 0);
        gw_guard_conn *over;
        assert_int_equal(gw_guard_open(g, -1, x, 0, &over), -EUSERS);
        assert_int_equal(gw_guard_ip_count(g, x), CAP);
    }
    assert_int_equal(gw_guard_refused(g), ADDRS);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001u)};
    assert_int_equal(gw_guard_accept_policy(g, (struct sockaddr *)&sa, sizeof sa), MHD_NO);
    /* close every other address's connections: the others keep their counts */
    for (int a = 0; a < ADDRS; a += 2)
        for (int k = 0; k < CAP; k++)
            gw_guard_close(g, cs[a][k]);
    for (int a = 0; a < ADDRS; a++) {
        uint32_t x = htonl(0x7f000000u | (uint32_t)(a * 4096 + 1));
        assert_int_equal(gw_guard_ip_count(g, x), a % 2 ? CAP : 0);
    }
    assert_int_equal(gw_guard_accept_policy(g, (struct sockaddr *)&sa, sizeof sa), MHD_YES);
    /* one closed: one more may come */
    uint32_t x1 = htonl(0x7f000000u | (uint32_t)(1 * 4096 + 1));
    gw_guard_close(g, cs[1][0]);
    assert_int_equal(gw_guard_open(g, -1, x1, 0, &cs[1][0]), 0);
    for (int a = 1; a < ADDRS; a += 2)
        for (int k = 0; k < CAP; k++)
            gw_guard_close(g, cs[a][k]);
    assert_int_equal(gw_guard_ip_count(g, x1), 0);
    gw_guard_destroy(g);
}

int main(void)
{
    base = gw_mono_ns() + 3600 * 1000 * MS;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_deadline_order),
        cmocka_unit_test(test_no_deadline),
        cmocka_unit_test(test_per_ip_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
