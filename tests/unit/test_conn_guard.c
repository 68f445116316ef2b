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
#include <sys/un.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
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

/* The table key of an address, as libmicrohttpd's callbacks compute it. */
static uint64_t key_of(const char *s)
{
    struct sockaddr_storage ss = {0};
    socklen_t len;
    if (strchr(s, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, s, &a->sin6_addr), 1);
        len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, s, &a->sin_addr), 1);
        len = sizeof *a;
    }
    return gw_guard_addr_key((struct sockaddr *)&ss, len);
}

static uint64_t ip(const char *s)
{
    return key_of(s);
}

static uint64_t v4key(uint32_t addr_net)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = addr_net};
    return gw_guard_addr_key((struct sockaddr *)&sa, sizeof sa);
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
        uint64_t x = v4key(htonl(0x7f000000u | (uint32_t)(a * 4096 + 1)));
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
        uint64_t x = v4key(htonl(0x7f000000u | (uint32_t)(a * 4096 + 1)));
        assert_int_equal(gw_guard_ip_count(g, x), a % 2 ? CAP : 0);
    }
    assert_int_equal(gw_guard_accept_policy(g, (struct sockaddr *)&sa, sizeof sa), MHD_YES);
    /* one closed: one more may come */
    uint64_t x1 = v4key(htonl(0x7f000000u | (uint32_t)(1 * 4096 + 1)));
    gw_guard_close(g, cs[1][0]);
    assert_int_equal(gw_guard_open(g, -1, x1, 0, &cs[1][0]), 0);
    for (int a = 1; a < ADDRS; a += 2)
        for (int k = 0; k < CAP; k++)
            gw_guard_close(g, cs[a][k]);
    assert_int_equal(gw_guard_ip_count(g, x1), 0);
    gw_guard_destroy(g);
}

/* IPv4 addresses count one by one, IPv6 ones per /64, an IPv4-mapped IPv6
 * address as its IPv4 address; other families are not counted. */
static void test_address_keys(void **state)
{
    (void)state;
    assert_true(ip("192.0.2.1") != 0);
    assert_true(ip("192.0.2.1") != ip("192.0.2.2"));
    assert_true(ip("::ffff:192.0.2.1") == ip("192.0.2.1"));
    assert_true(ip("2001:db8:1:2::1") == ip("2001:db8:1:2:ffff:ffff:ffff:ffff"));
    assert_true(ip("2001:db8:1:2::1") != ip("2001:db8:1:3::1"));
    assert_true(ip("::1") != 0 && ip("::1") != ip("::ffff:0.0.0.1"));
    assert_true(ip("0.0.0.1") != ip("::1"));
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    assert_true(gw_guard_addr_key((struct sockaddr *)&un, sizeof un) == 0);
    struct sockaddr_in6 shortv6 = {.sin6_family = AF_INET6};
    assert_true(gw_guard_addr_key((struct sockaddr *)&shortv6, 8) == 0);
    assert_true(gw_guard_addr_key(NULL, 0) == 0);

    /* the cap over one /64: a second address of the prefix is refused */
    gw_guard *g;
    gw_guard_cfg c = {.request_timeout_ms = 0, .max_per_ip = 1, .max_connections = 16};
    assert_int_equal(gw_guard_create(&c, &g), 0);
    gw_guard_conn *a, *b;
    assert_int_equal(gw_guard_open(g, -1, ip("2001:db8::1"), 0, &a), 0);
    struct sockaddr_in6 other = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "2001:db8::2", &other.sin6_addr);
    assert_int_equal(gw_guard_accept_policy(g, (struct sockaddr *)&other, sizeof other), MHD_NO);
    inet_pton(AF_INET6, "2001:db8:0:1::2", &other.sin6_addr);
    assert_int_equal(gw_guard_accept_policy(g, (struct sockaddr *)&other, sizeof other), MHD_YES);
    assert_int_equal(gw_guard_open(g, -1, ip("2001:db8:0:1::2"), 0, &b), 0);
    gw_guard_close(g, a);
    gw_guard_close(g, b);
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
        cmocka_unit_test(test_address_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
