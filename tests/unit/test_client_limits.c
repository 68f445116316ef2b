/*
 * test_client_limits.c - per-client buckets and the client address.
 *
 * Time is passed in: a key's burst at one instant, its refill, keys apart
 * from each other and scopes apart; eviction that fails safe (a hammering key
 * outlives quieter ones; a forgotten key gets a fresh bucket, which still
 * limits it); threads on one key at a frozen clock admit exactly the burst;
 * the client address behind trusted proxies (X-Forwarded-For and Forwarded,
 * spoofed entries, garbage, IPv6, IPv4-mapped peers); the RateLimit values.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "gateway/client_limits.h"

#define SEC 1000000000ULL
#define T0 (1000 * SEC)

static gw_limits *make(double user_rate, uint32_t user_burst, double ip_rate, uint32_t ip_burst,
                       uint32_t capacity)
{
    gw_limits_cfg c = {.rate = {user_rate, ip_rate},
                       .burst = {user_burst, ip_burst},
                       .capacity = capacity};
    gw_limits *l = NULL;
    char err[128];
    assert_int_equal(gw_limits_create(&c, &l, err, sizeof err), 0);
    return l;
}

static int take(gw_limits *l, enum gw_limit_scope s, const char *key, uint64_t now)
{
    gw_limit_state st;
    return gw_limits_take(l, s, key, strlen(key), now, &st);
}

static void test_create_rejects_bad_args(void **state)
{
    (void)state;
    char err[128] = "";
    gw_limits *l = NULL;
    gw_limits_cfg c = {.rate = {10, 0}, .burst = {0, 0}, .capacity = 1024};
    assert_int_equal(gw_limits_create(&c, &l, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "per_user"));
    assert_null(l);
    const char *bad[] = {"10.0.0.0/33"};
    gw_limits_cfg d = {.capacity = 1024, .proxies = bad, .nproxies = 1};
    assert_int_equal(gw_limits_create(&d, &l, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "10.0.0.0/33"));
    const char *bad2[] = {"example.com"};
    d.proxies = bad2;
    assert_int_equal(gw_limits_create(&d, &l, err, sizeof err), -EINVAL);
}

static void test_burst_refill_and_keys(void **state)
{
    (void)state;
    gw_limits *l = make(2, 3, 0, 0, 1024); /* 2/s per user, burst 3 */
    assert_true(gw_limits_on(l, GW_LIMIT_USER));
    assert_false(gw_limits_on(l, GW_LIMIT_IP));
    gw_limit_state st;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(gw_limits_take(l, GW_LIMIT_USER, "u1", 2, T0, &st), 1);
        assert_int_equal(st.remaining, (uint64_t)(2 - i));
    }
    assert_int_equal(gw_limits_take(l, GW_LIMIT_USER, "u1", 2, T0, &st), 0);
    assert_int_equal(st.remaining, 0);
    assert_int_equal(st.wait_ns, SEC / 2);
    assert_int_equal(st.reset_s, 2); /* 1.5 s of spent tokens, rounded up */
    /* another key, another bucket; the ip scope is off: always admits */
    assert_int_equal(take(l, GW_LIMIT_USER, "u2", T0), 1);
    for (int i = 0; i < 100; i++)
        assert_int_equal(take(l, GW_LIMIT_IP, "1.2.3.4", T0), 1);
    /* half a second later: one token back */
    assert_int_equal(take(l, GW_LIMIT_USER, "u1", T0 + SEC / 2), 1);
    assert_int_equal(take(l, GW_LIMIT_USER, "u1", T0 + SEC / 2), 0);
    /* long after: a full bucket, never more */
    int n = 0;
    while (take(l, GW_LIMIT_USER, "u1", T0 + 100 * SEC))
        n++;
    assert_int_equal(n, 3);
    gw_limits_destroy(l);
}

/* Over a long random stream of takes for one key, every window [a, b]
 * admits at most burst + rate * (b - a). */
static void test_window_bound(void **state)
{
    (void)state;
    gw_limits *l = make(10, 4, 0, 0, 1024);
    enum { N = 20000 };
    static uint64_t admitted[N];
    size_t na = 0;
    uint64_t now = T0, x = 12345;
    for (int i = 0; i < N; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        now += (x >> 33) % (SEC / 20);
        if (take(l, GW_LIMIT_USER, "k", now))
            admitted[na++] = now;
    }
    for (size_t a = 0; a < na; a += 7)
        for (size_t b = a; b < na && b < a + 400; b++) {
            double allowed = 4 + 10.0 * (double)(admitted[b] - admitted[a]) / SEC;
            assert_true((double)(b - a + 1) <= allowed + 1e-9);
        }
    assert_true(na > 0);
    gw_limits_destroy(l);
}

/* One set of 8 ways: a hammering key outlives quieter ones; once forgotten
 * it starts again with a fresh bucket, which still limits it. */
static void test_eviction_fails_safe(void **state)
{
    (void)state;
    gw_limits *l = make(1, 5, 0, 0, GW_LIMITS_WAYS); /* exactly one set */
    while (take(l, GW_LIMIT_USER, "bot", T0))
        ;
    char k[32];
    for (int i = 0; i < 1000; i++) { /* churn: each new key evicts a quieter one */
        snprintf(k, sizeof k, "churn%d", i);
        assert_int_equal(take(l, GW_LIMIT_USER, k, T0), 1);
        assert_int_equal(take(l, GW_LIMIT_USER, "bot", T0), 0);
    }
    assert_true(gw_limits_evictions(l, GW_LIMIT_USER) > 0);
    /* a second on, every other way spends harder than the bot: it goes */
    for (int w = 0; w < GW_LIMITS_WAYS; w++) {
        snprintf(k, sizeof k, "heavy%d", w);
        for (int i = 0; i < 5; i++)
            take(l, GW_LIMIT_USER, k, T0 + SEC);
    }
    int n = 0;
    for (int i = 0; i < 100; i++)
        n += take(l, GW_LIMIT_USER, "bot", T0 + SEC);
    assert_int_equal(n, 5); /* a fresh bucket: the burst, not unlimited */
    gw_limits_destroy(l);
}

/* A full table of buckets that refilled is reused without counting an
 * eviction: those keys lose nothing. */
static void test_full_buckets_reused(void **state)
{
    (void)state;
    gw_limits *l = make(1000, 1, 0, 0, 1024);
    char k[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(k, sizeof k, "u%d", i);
        assert_int_equal(take(l, GW_LIMIT_USER, k, T0 + (uint64_t)i * SEC), 1);
    }
    assert_int_equal(gw_limits_evictions(l, GW_LIMIT_USER), 0);
    gw_limits_destroy(l);
}

typedef struct hammer {
    gw_limits *l;
    atomic_int admitted;
} hammer;

static void *hammer_main(void *arg)
{
    hammer *h = arg;
    for (int i = 0; i < 20000; i++) {
        if (take(h->l, GW_LIMIT_IP, "one", T0))
            atomic_fetch_add(&h->admitted, 1);
        char k[16];
        snprintf(k, sizeof k, "o%d", i % 3000); /* other keys in the same table */
        take(h->l, GW_LIMIT_IP, k, T0);
    }
    return NULL;
}

static void test_threads_frozen_clock(void **state)
{
    (void)state;
    hammer h = {.l = make(0, 0, 10, 50, 65536)};
    atomic_init(&h.admitted, 0);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer_main, &h), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&h.admitted), 50);
    gw_limits_destroy(h.l);
}

/* ---- the client address ---- */

static struct sockaddr_storage v4(const char *s)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    a->sin_family = AF_INET;
    a->sin_port = htons(5555);
    assert_int_equal(inet_pton(AF_INET, s, &a->sin_addr), 1);
    return ss;
}

static struct sockaddr_storage v6(const char *s)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    a->sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, s, &a->sin6_addr), 1);
    return ss;
}

static void addr_str(const struct sockaddr_storage *ss, char *out, size_t cap)
{
    if (ss->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, out, (socklen_t)cap);
    else
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, out, (socklen_t)cap);
}

static void expect_client(gw_limits *l, struct sockaddr_storage peer, const char *hdr,
                          const char *want)
{
    struct sockaddr_storage c;
    char got[INET6_ADDRSTRLEN];
    gw_limits_client(l, (struct sockaddr *)&peer, hdr, &c);
    addr_str(&c, got, sizeof got);
    if (strcmp(got, want) != 0)
        fail_msg("header '%s': client %s, want %s", hdr ? hdr : "(none)", got, want);
}

static gw_limits *with_proxies(int forwarded)
{
    static const char *const proxies[] = {"10.0.0.0/8", "127.0.0.1", "2001:db8:ff::/48"};
    gw_limits_cfg c = {.capacity = 1024, .proxies = proxies, .nproxies = 3,
                       .forwarded = forwarded};
    gw_limits *l = NULL;
    char err[128];
    assert_int_equal(gw_limits_create(&c, &l, err, sizeof err), 0);
    return l;
}

static void test_client_xff(void **state)
{
    (void)state;
    gw_limits *l = with_proxies(0);
    /* an untrusted peer: its own address, whatever it writes */
    expect_client(l, v4("192.0.2.9"), "1.1.1.1", "192.0.2.9");
    expect_client(l, v4("10.1.2.3"), NULL, "10.1.2.3");
    expect_client(l, v4("10.1.2.3"), "198.51.100.7", "198.51.100.7");
    /* the client's own entries are left of what the proxies appended */
    expect_client(l, v4("10.1.2.3"), "6.6.6.6, 198.51.100.7, 10.9.9.9", "198.51.100.7");
    expect_client(l, v4("127.0.0.1"), "6.6.6.6,198.51.100.7:4711", "198.51.100.7");
    /* every hop trusted: the leftmost */
    expect_client(l, v4("10.1.2.3"), "10.0.0.5, 10.0.0.6", "10.0.0.5");
    /* garbage stops the walk at the last trusted hop */
    expect_client(l, v4("10.1.2.3"), "198.51.100.7, unknown", "10.1.2.3");
    expect_client(l, v4("10.1.2.3"), "198.51.100.7, 10.0.0.8, ", "10.1.2.3"); /* empty */
    expect_client(l, v4("10.1.2.3"), "[2001:db8::1]:80", "2001:db8::1");
    expect_client(l, v4("10.1.2.3"), "2001:db8:ff::1, 2001:db8::2", "2001:db8::2");
    /* an IPv4-mapped peer matches an IPv4 proxy */
    expect_client(l, v6("::ffff:10.1.2.3"), "198.51.100.7", "198.51.100.7");
    expect_client(l, v6("2001:db8:ff:1::1"), "203.0.113.1", "203.0.113.1");
    expect_client(l, v6("2001:db8:fe::1"), "203.0.113.1", "2001:db8:fe::1");
    gw_limits_destroy(l);
}

static void test_client_forwarded(void **state)
{
    (void)state;
    gw_limits *l = with_proxies(1);
    expect_client(l, v4("10.1.2.3"), "for=192.0.2.60;proto=http;by=203.0.113.43",
                  "192.0.2.60");
    expect_client(l, v4("10.1.2.3"), "for=6.6.6.6, For=\"[2001:db8:cafe::17]:4711\"",
                  "2001:db8:cafe::17");
    expect_client(l, v4("10.1.2.3"), "proto=https;for=198.51.100.1:80, for=10.0.0.1",
                  "198.51.100.1");
    expect_client(l, v4("10.1.2.3"), "for=_hidden", "10.1.2.3");
    expect_client(l, v4("10.1.2.3"), "proto=https", "10.1.2.3");
    gw_limits_destroy(l);
}

static void test_headers(void **state)
{
    (void)state;
    gw_limits_cfg c = {.rate = {0.5, 100},
                       .burst = {2, 50},
                       .capacity = 1024,
                       .gateway_rate = 50000,
                       .gateway_burst = 5000};
    gw_limits *l = NULL;
    char err[128];
    assert_int_equal(gw_limits_create(&c, &l, err, sizeof err), 0);
    assert_string_equal(gw_limits_policy(l),
                        "\"user\";q=2;w=4, \"ip\";q=50;w=1, \"gateway\";q=5000;w=1");
    char buf[96] = "";
    gw_limit_state a = {.remaining = 49, .reset_s = 1}, b = {.remaining = 0, .reset_s = 4};
    gw_limits_state_append(buf, sizeof buf, "ip", &a);
    gw_limits_state_append(buf, sizeof buf, "user", &b);
    assert_string_equal(buf, "\"ip\";r=49;t=1, \"user\";r=0;t=4");
    /* the largest figures; a member that does not fit is left out whole */
    gw_limit_state big = {.remaining = UINT64_MAX, .reset_s = 18446744073709551615ULL};
    char small[64] = "";
    gw_limits_state_append(small, sizeof small, "gateway", &big);
    assert_string_equal(small, "\"gateway\";r=18446744073709551615;t=18446744073709551615");
    gw_limits_state_append(small, sizeof small, "ip", &a);
    assert_string_equal(small, "\"gateway\";r=18446744073709551615;t=18446744073709551615");
    gw_limits_destroy(l);
    gw_limits *off = make(0, 0, 0, 0, 1024);
    assert_string_equal(gw_limits_policy(off), "");
    gw_limits_destroy(off);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_rejects_bad_args),
        cmocka_unit_test(test_burst_refill_and_keys),
        cmocka_unit_test(test_window_bound),
        cmocka_unit_test(test_eviction_fails_safe),
        cmocka_unit_test(test_full_buckets_reused),
        cmocka_unit_test(test_threads_frozen_clock),
        cmocka_unit_test(test_client_xff),
        cmocka_unit_test(test_client_forwarded),
        cmocka_unit_test(test_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
