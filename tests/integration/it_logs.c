/*
 * it_logs.c - request ids from the client to the worker's log, the access
 * log, JSON lines, and the systemd notify protocol, with real processes:
 *
 *   - a client's X-Request-Id (or traceparent) comes back in the answer and
 *     shows up in the log line of the seckill-worker process that decided
 *     the purchase (gateway and worker over rpc/, stock in a real
 *     redis-server); an invalid one is replaced, never echoed;
 *   - answers refused before admission (400, 404, 409, 429, framing) carry
 *     an id too, the client's when it sent one;
 *   - [log] format = json, access_sample = 1: every line of the gateway's
 *     stderr is a JSON object, with an access line per request;
 *   - NOTIFY_SOCKET: READY=1 once serving, WATCHDOG=1 pings when
 *     WATCHDOG_USEC asks for them, STOPPING=1 at SIGTERM (the gateway; the
 *     worker's READY and STOPPING in the first test).
 *
 * argv: seckill-gateway, seckill-worker.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "tests/redis_server.h"
#include "tests/test_time.h"

static const char *gateway_bin, *worker_bin;

/* what a failed assertion leaves running, for the teardown */
static redis_server rs;
static gw_proc gw;
static pid_t worker;
static char dir[64];

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf = calloc(1, 1 << 20);
    if (!buf)
        return NULL;
    if (f) {
        size_t n = fread(buf, 1, (1 << 20) - 1, f);
        buf[n] = '\0';
        fclose(f);
    }
    return buf;
}

/* Wait up to 20 s for want in the file at path. */
static int wait_for_line(const char *path, const char *want)
{
    for (uint64_t t0 = mono_ms(); mono_ms() - t0 < 20000; sleep_ms(20)) {
        char *s = slurp(path);
        int found = s && strstr(s, want);
        free(s);
        if (found)
            return 1;
    }
    char *s = slurp(path);
    fprintf(stderr, "%s lacks '%s'; it holds:\n%s\n", path, want, s ? s : "");
    free(s);
    return 0;
}

static void buy(int port, const char *headers, const char *user, http_resp *r)
{
    char body[96];
    snprintf(body, sizeof body, "{\"user_id\":\"%s\",\"item_id\":\"demo\"}", user);
    char hdrs[512];
    snprintf(hdrs, sizeof hdrs, "Content-Type: application/json\r\n%s", headers ? headers : "");
    assert_int_equal(http_do(port, "POST", "/seckill", hdrs, body, strlen(body), r), 0);
}

static void header_is(const http_resp *r, const char *want)
{
    char got[128];
    if (http_header(r, "X-Request-Id", got, sizeof got) != 0)
        fail_msg("no X-Request-Id in %d answer: %s", r->status, r->headers);
    if (strcmp(got, want) != 0)
        fail_msg("X-Request-Id '%s', want '%s'", got, want);
}

/* A gateway-made id: a UUID (36 characters, 4 dashes). */
static void header_is_uuid(const http_resp *r)
{
    char got[128];
    if (http_header(r, "X-Request-Id", got, sizeof got) != 0)
        fail_msg("no X-Request-Id in %d answer: %s", r->status, r->headers);
    assert_int_equal(strlen(got), 36);
    assert_int_equal(got[8], '-');
    assert_int_equal(got[23], '-');
}

/* A datagram socket at dir/name for NOTIFY_SOCKET. OUT: path. */
static int notify_socket(const char *name, char *path, size_t cap)
{
    snprintf(path, cap, "%s/%s", dir, name);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

/* Receive datagrams on fd until one contains want, for up to 20 s. */
static int notified(int fd, const char *want)
{
    char buf[512];
    for (uint64_t t0 = mono_ms(); mono_ms() - t0 < 20000;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 200) <= 0)
            continue;
        ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
        if (n <= 0)
            continue;
        buf[n] = '\0';
        if (strstr(buf, want))
            return 1;
    }
    fprintf(stderr, "no '%s' on the notify socket\n", want);
    return 0;
}

static void test_request_id_reaches_worker_log(void **state)
{
    (void)state;
    char ini[1024], wini[1200], wpath[96], wlog[96], cmd[512];
    assert_int_equal(redis_server_start(&rs), 0);
    snprintf(dir, sizeof dir, "/tmp/seckill-itlog-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(ini, sizeof ini,
             "[token_bucket]\nrate = 0\n"
             "[worker]\nembedded = false\ninventory = redis\nthreads = 1\n"
             "[rpc]\nlisten = tcp:127.0.0.1:0\nsecret = logs-secret-1\n"
             "[redis]\nport = %d\n[item.demo]\nstock = 100\n",
             rs.port);
    assert_int_equal(gw_proc_start(&gw, gateway_bin, ini), 0);
    char gws[64];
    snprintf(gws, sizeof gws, "[rpc]\ngateways = tcp:127.0.0.1:%d\n", gw.rpc_port);
    assert_int_equal(ini_merge(wini, sizeof wini, ini, gws), 0);
    snprintf(wpath, sizeof wpath, "%s/w.ini", dir);
    snprintf(wlog, sizeof wlog, "%s/worker.log", dir);
    FILE *f = fopen(wpath, "w");
    assert_non_null(f);
    fputs(wini, f);
    fclose(f);
    /* the worker's stderr to a file: its log lines */
    snprintf(cmd, sizeof cmd, "exec \"$0\" -c %s --id w1 2>>%s", wpath, wlog);
    const char *argv[] = {"/bin/sh", "-c", cmd, worker_bin, NULL};
    char npath[108];
    int nfd = notify_socket("worker-notify", npath, sizeof npath);
    setenv("NOTIFY_SOCKET", npath, 1); /* the worker tells systemd it is ready */
    int rc = proc_spawn(argv, "role=seckill", &worker);
    unsetenv("NOTIFY_SOCKET");
    assert_int_equal(rc, 0);
    assert_true(notified(nfd, "READY=1"));
    http_resp r;
    for (uint64_t t0 = mono_ms(); mono_ms() - t0 < 20000; sleep_ms(10)) {
        assert_int_equal(http_do(gw.port, "GET", "/readyz", NULL, NULL, 0, &r), 0);
        if (r.status == 200)
            break;
    }
    assert_int_equal(r.status, 200);

    /* X-Request-Id: echoed; the body keeps the gateway's id for /seckill/result */
    buy(gw.port, "X-Request-Id: it-logs.abc:1\r\n", "u1", &r);
    assert_int_equal(r.status, 200);
    header_is(&r, "it-logs.abc:1");
    char rid[64];
    assert_int_equal(json_field(r.body, "request_id", rid, sizeof rid), 0);
    assert_int_equal(strlen(rid), 36);
    assert_true(wait_for_line(wlog, "request_id=it-logs.abc:1: sold item=demo user=u1 order="));

    /* traceparent: its trace-id */
    buy(gw.port, "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n", "u2",
        &r);
    assert_int_equal(r.status, 200);
    header_is(&r, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_true(wait_for_line(wlog, "request_id=4bf92f3577b34da6a3ce929d0e0e4736: sold item=demo "
                                    "user=u2"));

    /* an invalid id is not echoed: the gateway's own, which the worker logs */
    buy(gw.port, "X-Request-Id: bad id <script>\r\n", "u3", &r);
    assert_int_equal(r.status, 200);
    header_is_uuid(&r);
    char own[64], want[128];
    assert_int_equal(http_header(&r, "X-Request-Id", own, sizeof own), 0);
    assert_int_equal(json_field(r.body, "request_id", rid, sizeof rid), 0);
    assert_string_equal(own, rid);
    snprintf(want, sizeof want, "request_id=%s: sold item=demo user=u3", own);
    assert_true(wait_for_line(wlog, want));
    char *s = slurp(wlog);
    assert_null(strstr(s, "<script>"));
    free(s);

    pid_t w = worker;
    worker = 0;
    kill(w, SIGTERM);
    assert_true(notified(nfd, "STOPPING=1"));
    assert_int_equal(proc_stop(w, SIGTERM), 0);
    assert_int_equal(gw_proc_stop(&gw), 0);
    close(nfd);
    unlink(npath);
    unlink(wpath);
    unlink(wlog);
    rmdir(dir);
    redis_server_destroy(&rs);
}

/* Every line of the file is one JSON object; returns how many there are,
 * and in *access the access lines with the given request id. */
static int json_lines(const char *path, const char *rid, json_t **access)
{
    char *s = slurp(path);
    int n = 0;
    *access = NULL;
    for (char *line = s, *nl; (nl = strchr(line, '\n')) != NULL; line = nl + 1, n++) {
        json_error_t e;
        json_t *o = json_loadb(line, (size_t)(nl - line), 0, &e);
        if (!o)
            fail_msg("not a JSON line (%s): %.*s", e.text, (int)(nl - line), line);
        const char *ts = json_string_value(json_object_get(o, "ts"));
        assert_non_null(ts); /* 2026-12-06T05:17:00.123Z */
        assert_int_equal(strlen(ts), 24);
        assert_non_null(json_string_value(json_object_get(o, "level")));
        const char *comp = json_string_value(json_object_get(o, "component"));
        const char *id = json_string_value(json_object_get(o, "request_id"));
        if (comp && !strcmp(comp, "access") && id && !strcmp(id, rid) && !*access)
            *access = json_incref(o);
        json_decref(o);
    }
    free(s);
    return n;
}

/* Answers before admission carry an id; with json and access_sample = 1
 * every request has its access line. */
static void test_ids_before_admission_and_access_log(void **state)
{
    (void)state;
    char log[96];
    snprintf(dir, sizeof dir, "/tmp/seckill-itlog-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(log, sizeof log, "%s/gw.log", dir);
    const char *ini = "[token_bucket]\nrate = 0.001\nburst = 1\n"
                      "[log]\nformat = json\naccess_sample = 1\nlevel = debug\n"
                      "[item.demo]\nstock = 10\n[item.later]\nstock = 1\n"
                      "starts_at = 4102444800\n";
    assert_int_equal(gw_proc_start_logged(&gw, gateway_bin, ini, log), 0);
    http_resp r;
    /* the one token: bought, and the embedded worker logs it under the id */
    buy(gw.port, "X-Request-Id: first-buy\r\n", "u1", &r);
    assert_int_equal(r.status, 200);
    header_is(&r, "first-buy");
    /* 429: a fresh id, or the client's */
    buy(gw.port, NULL, "u2", &r);
    assert_int_equal(r.status, 429);
    header_is_uuid(&r);
    buy(gw.port, "X-Request-Id: limited-1\r\n", "u2", &r);
    assert_int_equal(r.status, 429);
    header_is(&r, "limited-1");
    /* 400 (bad JSON), 404 (unknown item), 409 (not started), 415 */
    const char *hdr = "Content-Type: application/json\r\n";
    assert_int_equal(http_do(gw.port, "POST", "/seckill", hdr, "{", 1, &r), 0);
    assert_int_equal(r.status, 400);
    header_is_uuid(&r);
    const char *unknown = "{\"user_id\":\"u\",\"item_id\":\"nope\"}";
    assert_int_equal(http_do(gw.port, "POST", "/seckill", hdr, unknown, strlen(unknown), &r), 0);
    assert_int_equal(r.status, 404);
    header_is_uuid(&r);
    const char *later = "{\"user_id\":\"u\",\"item_id\":\"later\"}";
    assert_int_equal(http_do(gw.port, "POST", "/seckill",
                             "Content-Type: application/json\r\nX-Request-Id: early-1\r\n", later,
                             strlen(later), &r),
                     0);
    assert_int_equal(r.status, 409);
    header_is(&r, "early-1");
    assert_int_equal(
        http_do(gw.port, "POST", "/seckill", "Content-Type: text/plain\r\n", "x", 1, &r), 0);
    assert_int_equal(r.status, 415);
    header_is_uuid(&r);
    /* a framing refusal (Transfer-Encoding with HTTP/1.0) */
    const char *raw = "POST /seckill HTTP/1.0\r\nHost: x\r\nX-Request-Id: framed-1\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert_int_equal(http_raw(gw.port, raw, strlen(raw), &r), 0);
    assert_int_equal(r.status / 100, 4);
    header_is(&r, "framed-1");
    /* other endpoints echo a client's id, and make none */
    assert_int_equal(
        http_do(gw.port, "GET", "/items/demo", "X-Request-Id: look-1\r\n", NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    header_is(&r, "look-1");
    assert_int_equal(http_do(gw.port, "GET", "/stats", "X-Request-Id: stats-1\r\n", NULL, 0, &r),
                     0);
    assert_int_equal(r.status, 200);
    header_is(&r, "stats-1");
    assert_int_equal(http_do(gw.port, "GET", "/livez", NULL, NULL, 0, &r), 0);
    assert_int_equal(http_header(&r, "X-Request-Id", (char[8]){0}, 8), -1);

    /* the log: JSON lines, the worker's sale and the access lines */
    assert_true(
        wait_for_line(log, "\"request_id\":\"first-buy\",\"msg\":\"sold item=demo user=u1"));
    assert_true(wait_for_line(log, "\"request_id\":\"look-1\""));
    json_t *a;
    int n = json_lines(log, "first-buy", &a);
    assert_true(n >= 9);
    assert_non_null(a);
    const char *msg = json_string_value(json_object_get(a, "msg"));
    if (!strstr(msg, "POST /seckill 200 ") || !strstr(msg, "ms client=127.0.0.1"))
        fail_msg("access line: %s", msg);
    json_decref(a);
    json_lines(log, "limited-1", &a);
    assert_non_null(a);
    assert_non_null(strstr(json_string_value(json_object_get(a, "msg")), "POST /seckill 429 "));
    json_decref(a);
    json_lines(log, "framed-1", &a);
    assert_non_null(a);
    json_decref(a);
    json_lines(log, "stats-1", &a);
    assert_non_null(a);
    assert_non_null(strstr(json_string_value(json_object_get(a, "msg")), "GET /stats 200 "));
    json_decref(a);
    json_lines(log, "look-1", &a);
    assert_non_null(a);
    assert_non_null(strstr(json_string_value(json_object_get(a, "msg")), "GET /items/demo 200 "));
    json_decref(a);

    assert_int_equal(gw_proc_stop(&gw), 0);
    /* the drain line went through the log too */
    assert_true(wait_for_line(log, "\"msg\":\"SIGTERM: the listener closes, parked requests finish\""));
    unlink(log);
    rmdir(dir);
}

static void test_sd_notify(void **state)
{
    (void)state;
    char path[108];
    snprintf(dir, sizeof dir, "/tmp/seckill-itlog-XXXXXX");
    assert_non_null(mkdtemp(dir));
    int fd = notify_socket("notify", path, sizeof path);
    setenv("NOTIFY_SOCKET", path, 1);
    setenv("WATCHDOG_USEC", "400000", 1); /* pings every 200 ms */
    int rc = gw_proc_start(&gw, gateway_bin, "[item.demo]\nstock = 1\n");
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    assert_int_equal(rc, 0);
    assert_true(notified(fd, "READY=1"));
    assert_true(notified(fd, "WATCHDOG=1"));
    assert_true(notified(fd, "WATCHDOG=1"));
    kill(gw.pid, SIGTERM);
    assert_true(notified(fd, "STOPPING=1"));
    assert_int_equal(gw_proc_stop(&gw), 0);
    close(fd);
    unlink(path);
    rmdir(dir);
}

static int teardown(void **state)
{
    (void)state;
    if (worker > 0) {
        proc_stop(worker, SIGKILL);
        worker = 0;
    }
    if (gw.pid > 0)
        gw_proc_stop(&gw);
    if (rs.pid > 0)
        redis_server_destroy(&rs);
    if (dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", dir);
        dir[0] = '\0';
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s SECKILL-GATEWAY SECKILL-WORKER\n", argv[0]);
        return 2;
    }
    gateway_bin = argv[1];
    worker_bin = argv[2];
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_request_id_reaches_worker_log, teardown),
        cmocka_unit_test_teardown(test_ids_before_admission_and_access_log, teardown),
        cmocka_unit_test_teardown(test_sd_notify, teardown),
    };
    return cmocka_run_group_tests_name("integration.logs", tests, NULL, NULL);
}
