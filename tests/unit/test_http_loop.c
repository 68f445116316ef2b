/*
 * test_http_loop.c - libmicrohttpd event loops (gateway/http_loop.c) over real
 * loopback sockets: requests suspended by the handler and resumed from
 * another thread are all answered (no lost wake-up), a loop with 128 ready
 * connections serves them at once (libmicrohttpd's own epoll loop stalled
 * there), quiesce stops accepting but keeps serving, a taken port is a
 * clear error, and half-closed connections are freed at their end-of-file. Timeouts here are failure detectors (seconds), not measurements.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gateway/http_loop.h"

/* ---- the server side: a handler that parks every request ----
 * (no cmocka asserts here: they run on the loop threads) */

typedef struct parked {
    struct MHD_Connection *conn;
    gw_loop *loop;
} parked;

enum { RING = 4096 };

typedef struct server {
    gw_http *h;
    int park; /* 1: suspend each request, a resumer thread resumes it */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    parked ring[RING];
    unsigned head, tail;
    int stop;
    pthread_t resumer;
    atomic_uint answered;
} server;

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **con_cls)
{
    (void)url, (void)method, (void)version, (void)upload, (void)upload_size;
    server *s = cls;
    static int headers, parked_mark, resumed;
    if (*con_cls == NULL) {
        /* headers only: an answer queued now would close the connection */
        *con_cls = &headers;
        return MHD_YES;
    }
    if (s->park && *con_cls == &headers) {
        /* park it; the resumer resumes it */
        *con_cls = &parked_mark;
        gw_loop *l = gw_http_self();
        if (!l)
            return MHD_NO; /* not on a loop thread: the client sees a closed connection */
        MHD_suspend_connection(conn);
        pthread_mutex_lock(&s->mu);
        s->ring[s->tail++ % RING] = (parked){conn, l};
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        return MHD_YES;
    }
    *con_cls = &resumed;
    static const char body[] = "ok";
    struct MHD_Response *r =
        MHD_create_response_from_buffer(2, (void *)body, MHD_RESPMEM_PERSISTENT);
    enum MHD_Result rc = MHD_queue_response(conn, 200, r);
    MHD_destroy_response(r);
    atomic_fetch_add(&s->answered, 1);
    return rc;
}

/* Resumes parked requests one at a time, some at once and some after a few
 * microseconds, so resumes land both while a loop runs and while it sleeps. */
static void *resumer_main(void *arg)
{
    server *s = arg;
    unsigned seed = 7;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (s->head == s->tail && !s->stop)
            pthread_cond_wait(&s->cv, &s->mu);
        if (s->head == s->tail && s->stop)
            break;
        parked p = s->ring[s->head++ % RING];
        pthread_mutex_unlock(&s->mu);
        unsigned r = (unsigned)rand_r(&seed) % 4;
        if (r) {
            struct timespec ts = {0, (long)r * 20000};
            nanosleep(&ts, NULL);
        }
        gw_http_resume(p.loop, p.conn);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static unsigned max_connections = 1024; /* of the next server_start */
static int listen_v6; /* the next server_start listens on [::1] */

/* 127.0.0.1 (or ::1) at port. */
static void loopback(struct sockaddr_storage *ss, int v6, uint16_t port)
{
    memset(ss, 0, sizeof *ss);
    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        a->sin6_port = htons(port);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a->sin_port = htons(port);
    }
}

static void server_start(server *s, unsigned threads, int park)
{
    memset(s, 0, sizeof *s);
    s->park = park;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    gw_http_cfg c = {.threads = threads,
                     .max_connections = max_connections,
                     .connection_timeout = 30,
                     .connection_memory = 8 * 1024,
                     .handler = handler,
                     .handler_cls = s};
    loopback(&c.addr, listen_v6, 0);
    assert_int_equal(gw_http_create(&c, &s->h), 0);
    assert_true(gw_http_port(s->h) > 0);
    assert_int_equal(pthread_create(&s->resumer, NULL, resumer_main, s), 0);
}

static void server_stop(server *s)
{
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->resumer, NULL); /* resumes whatever is still parked */
    gw_http_destroy(s->h);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
}

/* ---- the client side: keep-alive connections on raw sockets ---- */

static int client_connect(uint16_t port)
{
    struct sockaddr_storage sa;
    loopback(&sa, listen_v6, port);
    int fd = socket(sa.ss_family, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    socklen_t len = listen_v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (connect(fd, (struct sockaddr *)&sa, len) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void send_request(int fd)
{
    static const char req[] = "GET /x HTTP/1.1\r\nHost: t\r\n\r\n";
    assert_int_equal(write(fd, req, sizeof req - 1), (ssize_t)(sizeof req - 1));
}

/* Reads one whole "200 ... ok" answer from every fd within timeout_ms in
 * total; returns how many answered. */
static int await_answers(const int *fds, int n, int timeout_ms)
{
    char buf[n][512];
    size_t got[n];
    int done[n];
    memset(got, 0, sizeof got);
    memset(done, 0, sizeof done);
    int ndone = 0;
    struct pollfd *p = calloc((size_t)n, sizeof *p);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (ndone < n) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        long left = timeout_ms - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
        if (left <= 0)
            break;
        for (int i = 0; i < n; i++)
            p[i] = (struct pollfd){.fd = done[i] ? -1 : fds[i], .events = POLLIN};
        if (poll(p, (nfds_t)n, (int)left) <= 0)
            continue;
        for (int i = 0; i < n; i++) {
            if (done[i] || !(p[i].revents & POLLIN))
                continue;
            ssize_t r = read(fds[i], buf[i] + got[i], sizeof buf[i] - 1 - got[i]);
            if (r <= 0)
                fail_msg("read: %zd (%s) after %zu bytes: %.*s", r, r < 0 ? strerror(errno) : "closed", got[i], (int)got[i], buf[i]);
            got[i] += (size_t)r;
            buf[i][got[i]] = '\0';
            char *end = strstr(buf[i], "\r\n\r\n");
            if (end && got[i] >= (size_t)(end + 4 - buf[i]) + 2) {
                assert_memory_equal(buf[i], "HTTP/1.1 200", 12);
                assert_memory_equal(end + 4, "ok", 2);
                assert_int_equal(got[i], (size_t)(end + 6 - buf[i])); /* one answer only */
                done[i] = 1;
                ndone++;
            }
        }
    }
    free(p);
    return ndone;
}

/* Rounds of one request on every connection at once. */
static void rounds(server *s, int nconn, int nrounds)
{
    int *fds = calloc((size_t)nconn, sizeof *fds);
    for (int i = 0; i < nconn; i++) {
        fds[i] = client_connect(gw_http_port(s->h));
        assert_true(fds[i] >= 0);
    }
    for (int r = 0; r < nrounds; r++) {
        for (int i = 0; i < nconn; i++)
            send_request(fds[i]);
        int ok = await_answers(fds, nconn, 5000);
        if (ok != nconn)
            fail_msg("round %d: %d of %d connections answered within 5 s", r, ok, nconn);
    }
    for (int i = 0; i < nconn; i++)
        close(fds[i]);
    free(fds);
}

/* Every suspended request is resumed from another thread, at random moments
 * relative to the loop: none may wait for an unrelated event to be served. */
static void test_resumed_from_another_thread(void **state)
{
    (void)state;
    server s;
    server_start(&s, 2, 1);
    rounds(&s, 16, 200);
    /* one connection at a time: each resume finds the loop asleep */
    rounds(&s, 1, 300);
    assert_int_equal(atomic_load(&s.answered), 16 * 200 + 300);
    server_stop(&s);
}

/* One loop, 128 connections whose requests arrive together: libmicrohttpd
 * 0.9.75's own epoll loop waited with a full epoll_wait of events in hand. */
static void test_many_ready_at_once(void **state)
{
    (void)state;
    server s;
    server_start(&s, 1, 0);
    rounds(&s, 128, 20);
    rounds(&s, 256, 5);
    server_stop(&s);
}

/* Quiesce: new connections are refused, open ones are still served. */
static void test_quiesce_keeps_open_connections(void **state)
{
    (void)state;
    server s;
    server_start(&s, 2, 1);
    uint16_t port = gw_http_port(s.h);
    int fd = client_connect(port);
    assert_true(fd >= 0);
    send_request(fd);
    assert_int_equal(await_answers(&fd, 1, 5000), 1);
    gw_http_quiesce(s.h);
    gw_http_quiesce(s.h); /* idempotent */
    assert_int_equal(client_connect(port), -ECONNREFUSED);
    send_request(fd);
    assert_int_equal(await_answers(&fd, 1, 5000), 1);
    close(fd);
    server_stop(&s);
}

/* A listener on [::1] answers clients that connect over IPv6; one of
 * another family is refused. */
static void test_ipv6_listener(void **state)
{
    (void)state;
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_storage ss;
    loopback(&ss, 1, 0);
    int have_v6 = probe >= 0 && bind(probe, (struct sockaddr *)&ss, sizeof(struct sockaddr_in6)) == 0;
    if (probe >= 0)
        close(probe);
    if (!have_v6) {
        print_message("no IPv6 loopback on this machine: skipped\n");
        skip();
    }
    server s;
    listen_v6 = 1;
    server_start(&s, 2, 0);
    rounds(&s, 4, 2);
    server_stop(&s);
    listen_v6 = 0;

    gw_http_cfg c = {.threads = 1, .max_connections = 16, .connection_timeout = 30,
                     .connection_memory = 8 * 1024, .handler = handler, .handler_cls = &s};
    c.addr.ss_family = AF_UNIX;
    gw_http *h = NULL;
    assert_int_equal(gw_http_create(&c, &h), -EAFNOSUPPORT);
    assert_null(h);
}

/* A port in use is -EADDRINUSE, and nothing is left running. */
static void test_port_in_use(void **state)
{
    (void)state;
    server s;
    server_start(&s, 1, 0);
    gw_http_cfg c = {.threads = 2, .max_connections = 16, .connection_timeout = 30,
                     .connection_memory = 8 * 1024, .handler = handler, .handler_cls = &s};
    loopback(&c.addr, 0, gw_http_port(s.h));
    gw_http *h2 = (gw_http *)&c; /* must stay untouched */
    assert_int_equal(gw_http_create(&c, &h2), -EADDRINUSE);
    assert_ptr_equal(h2, (gw_http *)&c);
    c.threads = 0;
    assert_int_equal(gw_http_create(&c, &h2), -EINVAL);
    /* the first server still answers */
    rounds(&s, 2, 2);
    server_stop(&s);
}

/* Half a request, then FIN, on many connections at once: each is closed at
 * its end-of-file (libmicrohttpd's own edge-triggered epoll missed an EOF
 * that came with the last bytes and kept such connections until the idle
 * timeout), and a loop at its connection limit takes its backlog as soon as
 * those are closed. */
static void test_half_closed_freed_at_eof(void **state)
{
    (void)state;
    enum { N = 300 };
    server s;
    max_connections = 32;
    server_start(&s, 1, 0);
    max_connections = 1024;
    static int fds[N];
    static const char half[] = "POST /x HTTP/1.1\r\nHost: t\r\nContent-Le";
    for (int i = 0; i < N; i++) {
        fds[i] = client_connect(gw_http_port(s.h));
        assert_true(fds[i] >= 0);
        assert_int_equal(write(fds[i], half, sizeof half - 1), (ssize_t)(sizeof half - 1));
        shutdown(fds[i], SHUT_WR);
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int closed = 0;
    long ms = 0;
    for (int i = 0; i < N; i++) {
        struct pollfd p = {.fd = fds[i], .events = POLLIN};
        char b;
        /* 10 s in all: a failure detector; the idle timeout would be 30 s */
        if (poll(&p, 1, ms < 10000 ? (int)(10000 - ms) : 0) == 1 && recv(fds[i], &b, 1, 0) <= 0)
            closed++;
        close(fds[i]);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    }
    if (closed != N)
        fail_msg("%d of %d half-closed connections closed (%ld ms)", closed, N, ms);
    server_stop(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resumed_from_another_thread),
        cmocka_unit_test(test_many_ready_at_once),
        cmocka_unit_test(test_quiesce_keeps_open_connections),
        cmocka_unit_test(test_port_in_use),
        cmocka_unit_test(test_ipv6_listener),
        cmocka_unit_test(test_half_closed_freed_at_eof),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
