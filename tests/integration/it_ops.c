/*
 * it_ops.c - operating a sale, with real processes: /metrics that hold at a
 * thousand items (checked by promtool), monotonic order counters, 503s by
 * reason, SIGHUP reloads under traffic (and a bad file refused), the SIGTERM
 * drain, the worker process's own /metrics and SIGHUP, and the order sink
 * reopening its file on SIGUSR1.
 *
 * argv: seckill-gateway, seckill-worker. promtool (Debian's prometheus
 * package, scripts/install-deps.sh) must be on PATH.
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
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "tests/redis_server.h"
#include "tests/test_time.h"

static const char *gateway_bin, *worker_bin;

/* what a failed assertion leaves running, for the teardown */
static redis_server rs;
static pid_t procs[4];
static char logs[4][128]; /* each process's log, printed when its test fails */
static int finished;      /* set as a test's last step */
static char dir[64];

/* ---- processes whose stdout and stderr go to a log file ---- */

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

/* The whole file, NUL-terminated (malloc'd); "" when absent. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    assert_non_null(m);
    if (f) {
        char chunk[4096];
        size_t n;
        while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
            fwrite(chunk, 1, n, m);
        fclose(f);
    }
    fclose(m);
    return buf;
}

/* Wait up to ms for want in the file at path (a log, the sink's file). 1
 * when seen. */
static int log_wait(const char *path, const char *want, long ms)
{
    uint64_t until = mono_ms() + (uint64_t)ms;
    do {
        char *s = slurp(path);
        int seen = strstr(s, want) != NULL;
        free(s);
        if (seen)
            return 1;
        sleep_ms(20);
    } while (mono_ms() < until);
    return 0;
}

static void forget(pid_t pid);

static pid_t spawn_logged(const char *const argv[], const char *log, const char *ready)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    for (size_t i = 0; i < sizeof procs / sizeof *procs; i++)
        if (!procs[i]) {
            procs[i] = pid;
            snprintf(logs[i], sizeof logs[i], "%s", log);
            break;
        }
    if (!log_wait(log, ready, 60000)) { /* generous: a loaded machine under sanitizers */
        char *s = slurp(log), how[64] = "still running";
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            forget(pid);
            snprintf(how, sizeof how, WIFEXITED(st) ? "exited %d" : "killed by signal %d",
                     WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
        }
        fail_msg("no '%s' from %s within 60 s (%s): %s", ready, argv[0], how, s);
    }
    return pid;
}

/* The number after key in the log (e.g. "http://127.0.0.1:"). */
static int log_port(const char *log, const char *key)
{
    char *s = slurp(log);
    const char *p = strstr(s, key);
    int port = p ? atoi(p + strlen(key)) : 0;
    free(s);
    assert_true(port > 0);
    return port;
}

static void forget(pid_t pid)
{
    for (size_t i = 0; i < sizeof procs / sizeof *procs; i++)
        if (procs[i] == pid)
            procs[i] = 0;
}

static int stop(pid_t pid, int sig)
{
    forget(pid);
    return proc_stop(pid, sig);
}

static pid_t start_gateway(const char *name, const char *ini, char *log, size_t loglen, int *port)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s.ini", dir, name);
    write_text(path, ini);
    snprintf(log, loglen, "%s/%s.log", dir, name);
    const char *argv[] = {gateway_bin, "-c", path, "--listen", "127.0.0.1:0", NULL};
    pid_t pid = spawn_logged(argv, log, "listening on http://127.0.0.1:");
    *port = log_port(log, "listening on http://127.0.0.1:");
    return pid;
}

/* ---- HTTP: a GET whose body may be large ---- */

static char *get_big(int port, const char *path, int *status)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_true(s >= 0);
    if (connect(s, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(s);
        *status = -1;
        return NULL;
    }
    char req[256];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
    assert_int_equal(write(s, req, (size_t)n), n);
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    char chunk[65536];
    ssize_t k;
    while ((k = read(s, chunk, sizeof chunk)) > 0)
        fwrite(chunk, 1, (size_t)k, m);
    fclose(m);
    close(s);
    *status = strncmp(buf, "HTTP/1.1 ", 9) == 0 ? atoi(buf + 9) : 0;
    char *body = strstr(buf, "\r\n\r\n");
    char *out = strdup(body ? body + 4 : "");
    free(buf);
    return out;
}

static char *metrics(int port)
{
    int status;
    char *m = get_big(port, "/metrics", &status);
    assert_int_equal(status, 200);
    return m;
}

/* The value of the sample line that starts with name (labels included). */
static double metric(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (!strncmp(p, name, n) && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    fail_msg("no metric %s", name);
    return -1;
}

/* promtool check metrics on text; its verdict on stdout. 0 when it passes. */
static int promtool_check(const char *text)
{
    FILE *p = popen("promtool check metrics", "w");
    assert_non_null(p);
    fputs(text, p);
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int buy(int port, const char *user, const char *item, http_resp *r)
{
    char body[200];
    snprintf(body, sizeof body, "{\"user_id\":\"%s\",\"item_id\":\"%s\"}", user, item);
    if (http_buy(port, body, r) != 0)
        return -1;
    return r->status;
}

/* ---- /metrics at a thousand items; the order counters ---- */

#define NITEMS 1000

static void test_metrics_thousand_items(void **state)
{
    (void)state;
    size_t cap = 200 + NITEMS * 100;
    char *ini = malloc(cap), log[128], id[128];
    assert_non_null(ini);
    int n = snprintf(ini, cap,
                     "[gateway]\ndrain_delay_ms = 0\nwait_timeout_ms = 15000\n"
                     "[token_bucket]\nrate = 0\n"
                     "[worker]\npay_timeout_ms = 1000\n[queue]\ndata_dir = %s/data1\n",
                     dir);
    for (int i = 0; i < NITEMS; i++) /* ids of 64 characters, the longest there are */
        n += snprintf(ini + n, cap - (size_t)n, "[item.%03d%061d]\nstock = 10\n", i, 0);
    int port;
    pid_t gw = start_gateway("thousand", ini, log, sizeof log, &port);
    free(ini);
    char item0[80];
    snprintf(item0, sizeof item0, "%03d%061d", 0, 0);
    http_resp r;
    char order[64];
    assert_int_equal(buy(port, "u1", item0, &r), 200);
    assert_int_equal(json_field(r.body, "order_id", order, sizeof order), 0);
    assert_int_equal(buy(port, "u2", item0, &r), 200);
    assert_int_equal(buy(port, "u3", item0, &r), 200);
    char path[128];
    snprintf(path, sizeof path, "/orders/%s/pay", order);
    assert_int_equal(http_do(port, "POST", path, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);

    char *m = metrics(port);
    assert_true(strlen(m) > 16384 + NITEMS * 128); /* past the old fixed buffer */
    snprintf(id, sizeof id, "seckill_stock_left{item=\"%03d%061d\"}", NITEMS - 1, 0);
    assert_int_equal(metric(m, id), 10);
    if (promtool_check(m) != 0)
        fail_msg("promtool check metrics failed on %zu bytes of /metrics", strlen(m));
    char key[160];
    snprintf(key, sizeof key, "seckill_orders_reserved_total{item=\"%s\"}", item0);
    assert_int_equal(metric(m, key), 3);
    snprintf(key, sizeof key, "seckill_stock_held{item=\"%s\"}", item0);
    assert_int_equal(metric(m, key), 2);
    assert_non_null(strstr(m, "seckill_build_info{version=\""));
    assert_true(metric(m, "process_resident_memory_bytes") > 0);
    assert_true(metric(m, "process_open_fds") > 0);
    assert_true(metric(m, "process_max_fds") > 0);
    assert_true(metric(m, "process_start_time_seconds") > 1.6e9);
    assert_non_null(strstr(m, "process_cpu_seconds_total "));
    assert_non_null(strstr(m, "seckill_request_duration_seconds_bucket{le=\"1e-06\"} "));
    assert_null(strstr(m, "seckill_sold_total"));
    free(m);

    /* the two unpaid orders are cancelled after pay_timeout_ms: held stock
     * goes down, the counters do not */
    double cancelled = 0;
    uint64_t until = mono_ms() + 20000;
    snprintf(key, sizeof key, "seckill_orders_cancelled_total{item=\"%s\"}", item0);
    while (cancelled < 2 && mono_ms() < until) {
        sleep_ms(100);
        m = metrics(port);
        cancelled = metric(m, key);
        free(m);
    }
    assert_int_equal(cancelled, 2);
    m = metrics(port);
    snprintf(key, sizeof key, "seckill_orders_reserved_total{item=\"%s\"}", item0);
    assert_int_equal(metric(m, key), 3);
    snprintf(key, sizeof key, "seckill_orders_paid_total{item=\"%s\"}", item0);
    assert_int_equal(metric(m, key), 1);
    snprintf(key, sizeof key, "seckill_stock_held{item=\"%s\"}", item0);
    assert_int_equal(metric(m, key), 0);
    snprintf(key, sizeof key, "seckill_stock_left{item=\"%s\"}", item0);
    assert_int_equal(metric(m, key), 9);
    free(m);
    assert_int_equal(stop(gw, SIGTERM), 0);
    finished = 1;
}

/* ---- SIGHUP while clients buy ---- */

typedef struct traffic {
    int port, id;
    atomic_int *stop;
    long answers, failures, unexpected;
    int bad_status;
} traffic;

static void *traffic_main(void *arg)
{
    traffic *t = arg;
    http_resp *r = malloc(sizeof *r);
    char user[32];
    for (long i = 0; !atomic_load(t->stop); i++) {
        snprintf(user, sizeof user, "t%d-%ld", t->id, i);
        int st = buy(t->port, user, "demo", r);
        if (st < 0) {
            t->failures++;
            continue;
        }
        t->answers++;
        /* a loaded machine may make one wait (504) or miss a worker's
         * lease (503): answers all the same; anything else is not */
        if (st != 200 && st != 409 && st != 429 && st != 503 && st != 504) {
            t->unexpected++;
            t->bad_status = st;
        }
        if (http_do(t->port, "GET", "/readyz", NULL, NULL, 0, r) != 0)
            t->failures++;
        else if (r->status != 200 && r->status != 503) {
            t->unexpected++;
            t->bad_status = r->status;
        }
    }
    free(r);
    return NULL;
}

#define CLIENTS 4

static void test_sighup_under_traffic(void **state)
{
    (void)state;
    char ini[1024], path[128], log[128];
    const char *base = "[gateway]\nwait_timeout_ms = 15000\ndrain_delay_ms = 0\n"
                       "[token_bucket]\nrate = 0\n"
                       "[queue]\ndata_dir = %s/data2\nlease_timeout_ms = 15000\n"
                       "[item.demo]\nstock = 5\n[item.w]\nstock = 100\n";
    snprintf(ini, sizeof ini, base, dir);
    int port;
    pid_t gw = start_gateway("hup", ini, log, sizeof log, &port);
    snprintf(path, sizeof path, "%s/hup.ini", dir);

    atomic_int halt = 0;
    pthread_t th[CLIENTS];
    traffic t[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        t[i] = (traffic){.port = port, .id = i, .stop = &halt};
        pthread_create(&th[i], NULL, traffic_main, &t[i]);
    }
    http_resp r;
    /* the stock of 5 sells out under the traffic */
    for (uint64_t until = mono_ms() + 20000; http_stock_left(port, "demo") != 0 && mono_ms() < until;)
        sleep_ms(20);
    assert_int_equal(http_stock_left(port, "demo"), 0);

    /* 1: rate 1/s, burst 1; more stock; a blocklist; item w's sale over;
     * and a key that only a restart changes */
    snprintf(ini, sizeof ini,
             "[gateway]\nwait_timeout_ms = 14000\ndrain_delay_ms = 0\n"
             "[token_bucket]\nrate = 1\nburst = 1\n"
             "[queue]\ndata_dir = %s/data2\nlease_timeout_ms = 15000\n[risk]\nblocklist = bad-user\n"
             "[item.demo]\nstock = 50\n[item.w]\nstock = 100\nends_at = 1000\n",
             dir);
    write_text(path, ini);
    kill(gw, SIGHUP);
    assert_true(log_wait(log, "reload: [risk] blocklist: 0 -> 1 user ids", 10000));
    char *s = slurp(log);
    assert_non_null(strstr(s, "reload: [token_bucket] rate 0 -> 1, burst 5000 -> 1"));
    assert_non_null(strstr(s, "reload: [item.demo] stock 5 -> 50 (45 units added to stock left)"));
    assert_non_null(strstr(s, "reload: [item.w] starts_at 0 -> 0, ends_at 0 -> 1000"));
    assert_non_null(strstr(s, "reload: [gateway] wait_timeout_ms: needs a restart"));
    free(s);
    double limited = 0;
    for (uint64_t until = mono_ms() + 20000; limited == 0 && mono_ms() < until;) {
        sleep_ms(50);
        char *m = metrics(port);
        limited = metric(m, "seckill_requests_total{result=\"rate_limited\"}");
        free(m);
    }
    assert_true(limited > 0); /* the new rate holds */
    assert_int_equal(buy(port, "someone", "w", &r), 409);
    assert_non_null(strstr(r.body, "\"ended\""));
    assert_int_equal(http_do(port, "GET", "/items/demo", NULL, NULL, 0, &r), 0);
    assert_non_null(strstr(r.body, "\"stock_total\":50"));

    /* 2: unlimited again; the raised stock sells */
    snprintf(ini, sizeof ini,
             "[gateway]\nwait_timeout_ms = 14000\ndrain_delay_ms = 0\n"
             "[token_bucket]\nrate = 0\nburst = 1\n"
             "[queue]\ndata_dir = %s/data2\nlease_timeout_ms = 15000\n[risk]\nblocklist = bad-user\n"
             "[item.demo]\nstock = 50\n[item.w]\nstock = 100\nends_at = 1000\n",
             dir);
    write_text(path, ini);
    kill(gw, SIGHUP);
    assert_true(log_wait(log, "reload: [token_bucket] rate 1 -> 0", 10000));
    for (uint64_t until = mono_ms() + 20000; http_stock_left(port, "demo") != 0 && mono_ms() < until;)
        sleep_ms(20);
    assert_int_equal(http_stock_left(port, "demo"), 0);
    /* the stock view and the store's order counters change at different
     * moments of a decision (a loaded CI machine saw 49 here): wait for it */
    double reserved = 0;
    for (uint64_t until = mono_ms() + 10000; reserved != 50 && mono_ms() < until;) {
        char *m = metrics(port);
        reserved = metric(m, "seckill_orders_reserved_total{item=\"demo\"}");
        free(m);
        if (reserved != 50)
            sleep_ms(20);
    }
    assert_int_equal(reserved, 50);
    assert_int_equal(buy(port, "bad-user", "w", &r), 409); /* ended comes first */

    /* a logrotate's SIGUSR1 does the gateway no harm */
    kill(gw, SIGUSR1);
    assert_true(log_wait(log, "SIGUSR1: nothing to reopen", 10000));

    /* the log level: at error, the info line of a SIGUSR1 is not written */
    size_t ini_len = strlen(ini);
    snprintf(ini + ini_len, sizeof ini - ini_len, "[log]\nlevel = error\n");
    write_text(path, ini);
    kill(gw, SIGHUP);
    assert_true(log_wait(log, "reload: [log] level info -> error", 10000));
    kill(gw, SIGUSR1);
    sleep_ms(300);
    ini[ini_len] = '\0';
    write_text(path, ini);
    kill(gw, SIGHUP);
    assert_true(log_wait(log, "reload: [log] level error -> info", 10000));
    s = slurp(log);
    const char *first = strstr(s, "SIGUSR1: nothing to reopen");
    assert_non_null(first);
    assert_null(strstr(first + 1, "SIGUSR1: nothing to reopen"));
    free(s);

    /* 3: a file that does not load changes nothing */
    write_text(path, "[gateway]\ndrain_delay_ms = 0\nthis line is wrong\n[token_bucket]\nrate = 1\n");
    kill(gw, SIGHUP);
    char want[200];
    snprintf(want, sizeof want, "reload rejected: %s:3: syntax error", path);
    assert_true(log_wait(log, want, 10000));
    assert_true(log_wait(log, "(the running configuration stays)", 1000));

    atomic_store(&halt, 1);
    long answers = 0;
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(th[i], NULL);
        answers += t[i].answers;
        if (t[i].failures)
            fail_msg("client %d: %ld requests without an answer", i, t[i].failures);
        if (t[i].unexpected)
            fail_msg("client %d: %ld unexpected answers (last %d)", i, t[i].unexpected,
                     t[i].bad_status);
    }
    /* still rate 0 after the refused file: the next one is not limited */
    assert_int_equal(buy(port, "after", "demo", &r), 409);
    assert_non_null(strstr(r.body, "sold_out"));
    assert_int_equal(kill(gw, 0), 0);
    printf("SIGHUP x3 under %d clients: %ld answers, none lost\n", CLIENTS, answers);
    assert_int_equal(stop(gw, SIGTERM), 0);
    assert_true(log_wait(log, "seckill-gateway: stopped: answered ", 1000));
    finished = 1;
}

/* ---- SIGTERM: /readyz 503 for drain_delay_ms while requests are served ---- */

static void test_sigterm_drain(void **state)
{
    (void)state;
    char ini[512], log[128];
    snprintf(ini, sizeof ini,
             "[gateway]\ndrain_delay_ms = 2000\nwait_timeout_ms = 15000\n[token_bucket]\nrate = 0\n"
             "[queue]\ndata_dir = %s/data3\n[item.demo]\nstock = 100\n",
             dir);
    int port;
    pid_t gw = start_gateway("drain", ini, log, sizeof log, &port);
    http_resp r;
    assert_int_equal(buy(port, "before", "demo", &r), 200);
    uint64_t t0 = mono_ms();
    kill(gw, SIGTERM);
    assert_true(log_wait(log, "SIGTERM: /readyz answers 503 stopping for 2000 ms", 10000));
    assert_int_equal(http_do(port, "GET", "/readyz", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "{\"status\":\"stopping\"}");
    assert_int_equal(http_do(port, "GET", "/livez", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    int served = 0;
    /* purchases go on until the listener closes */
    for (int i = 0; mono_ms() < t0 + 60000; i++) {
        char user[32];
        snprintf(user, sizeof user, "during-%d", i);
        int st = buy(port, user, "demo", &r);
        if (st < 0)
            break; /* refused: the listener is closed */
        assert_int_equal(st, 200);
        served++;
        sleep_ms(50);
    }
    uint64_t closed_ms = mono_ms() - t0;
    int status;
    assert_int_equal(waitpid(gw, &status, 0), gw);
    forget(gw);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    printf("drain: %d purchases served during the delay; the listener closed %llu ms after "
           "SIGTERM\n", served, (unsigned long long)closed_ms);
    assert_true(served >= 1);
    assert_true(closed_ms >= 1900); /* not before drain_delay_ms */
    /* every purchase served was counted (one whose answer the closing
     * listener cut off may be counted too) */
    assert_true(log_wait(log, "seckill-gateway: stopped: answered ", 1000));
    char *s = slurp(log);
    const char *p = strstr(s, "stopped: answered ");
    int answered = 0, success = 0;
    if (!p || sscanf(p, "stopped: answered %d purchases (success %d", &answered, &success) != 2 ||
        success < served + 1 || answered != success)
        fail_msg("served %d + 1; the log says: %s", served, s);
    free(s);
    finished = 1;
}

/* ---- the worker process: its /metrics, /livez and SIGHUP; 503 by reason ---- */

static void test_worker_metrics_and_sighup(void **state)
{
    (void)state;
    char ini[1024], wini[1400], wpath[128], glog[128], wlog[128], extra[160];
    assert_int_equal(redis_server_start(&rs), 0);
    snprintf(ini, sizeof ini,
             "[gateway]\ndrain_delay_ms = 0\nwait_timeout_ms = 15000\n[token_bucket]\nrate = 0\n"
             "[queue]\nlease_timeout_ms = 15000\n"
             "[worker]\nembedded = false\ninventory = redis\nthreads = 1\n"
             "[rpc]\nlisten = tcp:127.0.0.1:0\nsecret = ops-secret-1\n"
             "[redis]\nport = %d\n[item.wk]\nstock = 10\n",
             rs.port);
    int port;
    pid_t gw = start_gateway("wgw", ini, glog, sizeof glog, &port);
    int rport = log_port(glog, " rpc=tcp:127.0.0.1:");

    /* no worker yet: 503, counted under its reason */
    http_resp r;
    assert_int_equal(buy(port, "u0", "wk", &r), 503);
    char *m = metrics(port);
    assert_int_equal(metric(m, "seckill_overloaded_total{reason=\"no_worker\"}"), 1);
    assert_int_equal(metric(m, "seckill_overloaded_total{reason=\"queue_full\"}"), 0);
    assert_int_equal(promtool_check(m), 0);
    free(m);

    snprintf(extra, sizeof extra,
             "[worker]\nmetrics_listen = 127.0.0.1:0\n[rpc]\ngateways = tcp:127.0.0.1:%d\n", rport);
    assert_int_equal(ini_merge(wini, sizeof wini, ini, extra), 0);
    snprintf(wpath, sizeof wpath, "%s/worker.ini", dir);
    write_text(wpath, wini);
    snprintf(wlog, sizeof wlog, "%s/worker.log", dir);
    const char *argv[] = {worker_bin, "-c", wpath, "--id", "w1", NULL};
    pid_t wk = spawn_logged(argv, wlog, "role=seckill");
    int mport = log_port(wlog, " metrics=127.0.0.1:");
    assert_int_equal(http_do(mport, "GET", "/livez", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
    assert_int_equal(http_do(mport, "GET", "/nope", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 404);
    for (uint64_t until = mono_ms() + 20000; mono_ms() < until; sleep_ms(20))
        if (http_do(port, "GET", "/readyz", NULL, NULL, 0, &r) == 0 && r.status == 200)
            break;
    assert_int_equal(r.status, 200);
    assert_int_equal(buy(port, "u1", "wk", &r), 200);
    m = metrics(mport);
    assert_true(metric(m, "seckill_worker_decided_total") >= 1);
    assert_int_equal(metric(m, "seckill_worker_gateways"), 1);
    assert_non_null(strstr(m, "seckill_build_info{version=\""));
    assert_true(metric(m, "process_resident_memory_bytes") > 0);
    if (promtool_check(m) != 0)
        fail_msg("promtool check metrics failed on the worker's /metrics:\n%s", m);
    free(m);

    /* SIGHUP: the blocklist changes in place; the worker goes on */
    snprintf(extra, sizeof extra,
             "[worker]\nmetrics_listen = 127.0.0.1:0\n[rpc]\ngateways = tcp:127.0.0.1:%d\n"
             "[risk]\nblocklist = u-bad\n",
             rport);
    assert_int_equal(ini_merge(wini, sizeof wini, ini, extra), 0);
    write_text(wpath, wini);
    kill(wk, SIGHUP);
    assert_true(log_wait(wlog, "reload: [risk] blocklist: 0 -> 1 user ids", 10000));
    assert_int_equal(buy(port, "u-bad", "wk", &r), 403);
    assert_int_equal(buy(port, "u2", "wk", &r), 200);
    kill(wk, SIGUSR1); /* logrotate's signal: nothing to reopen here, no harm */
    assert_true(log_wait(wlog, "worker: SIGUSR1: nothing to reopen", 10000));
    /* a bad file: refused with its line, the worker keeps the running one */
    write_text(wpath, "[worker]\nthreads = many\n");
    kill(wk, SIGHUP);
    char want[200];
    snprintf(want, sizeof want, "worker: reload rejected: %s:2: [worker] threads", wpath);
    assert_true(log_wait(wlog, want, 10000));
    assert_int_equal(buy(port, "u-bad", "wk", &r), 403);
    assert_int_equal(kill(wk, 0), 0);
    assert_int_equal(stop(wk, SIGTERM), 0);
    assert_int_equal(stop(gw, SIGTERM), 0);
    redis_server_destroy(&rs);
    finished = 1;
}

/* ---- the order sink reopens its file on SIGUSR1 ---- */

static void test_sink_reopens_on_sigusr1(void **state)
{
    (void)state;
    char ini[1024], sini[1400], spath[128], glog[128], slog[128], out[128], rotated[160];
    char extra[128], o1[64], o2[64];
    snprintf(ini, sizeof ini,
             "[gateway]\ndrain_delay_ms = 0\nwait_timeout_ms = 15000\n[token_bucket]\nrate = 0\n"
             "[queue]\ndata_dir = %s/data5\n"
             "[rpc]\nlisten = tcp:127.0.0.1:0\nsecret = ops-secret-2\n[item.s]\nstock = 10\n",
             dir);
    int port;
    pid_t gw = start_gateway("sgw", ini, glog, sizeof glog, &port);
    int rport = log_port(glog, " rpc=tcp:127.0.0.1:");
    snprintf(extra, sizeof extra, "[rpc]\ngateways = tcp:127.0.0.1:%d\n", rport);
    assert_int_equal(ini_merge(sini, sizeof sini, ini, extra), 0);
    snprintf(spath, sizeof spath, "%s/sink.ini", dir);
    write_text(spath, sini);
    snprintf(slog, sizeof slog, "%s/sink.log", dir);
    snprintf(out, sizeof out, "%s/orders.jsonl", dir);
    const char *argv[] = {worker_bin, "-c", spath, "--role", "orders", "--id", "sink", "--out",
                          out, NULL};
    pid_t sink = spawn_logged(argv, slog, "role=orders");

    http_resp r;
    assert_int_equal(buy(port, "s1", "s", &r), 200);
    assert_int_equal(json_field(r.body, "order_id", o1, sizeof o1), 0);
    assert_true(log_wait(out, o1, 20000));
    /* logrotate: move the file away, then SIGUSR1 */
    snprintf(rotated, sizeof rotated, "%s.1", out);
    assert_int_equal(rename(out, rotated), 0);
    kill(sink, SIGUSR1);
    assert_true(log_wait(slog, "SIGUSR1: reopened", 10000));
    kill(sink, SIGHUP); /* nothing to reload, and no harm */
    assert_true(log_wait(slog, "SIGHUP: the order sink has nothing to reload", 10000));
    assert_int_equal(buy(port, "s2", "s", &r), 200);
    assert_int_equal(json_field(r.body, "order_id", o2, sizeof o2), 0);
    assert_true(log_wait(out, o2, 20000));
    char *now = slurp(out), *old = slurp(rotated);
    assert_null(strstr(now, o1));
    assert_non_null(strstr(old, o1));
    assert_null(strstr(old, o2));
    free(now);
    free(old);
    assert_int_equal(stop(sink, SIGTERM), 0);
    assert_int_equal(stop(gw, SIGTERM), 0);
    finished = 1;
}

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof procs / sizeof *procs; i++) {
        if (procs[i] > 0) {
            proc_stop(procs[i], SIGKILL);
            procs[i] = 0;
        }
        if (!finished && logs[i][0]) { /* what the failed test's processes said */
            char *s = slurp(logs[i]);
            size_t n = strlen(s);
            fprintf(stderr, "---- %s (last 6000 bytes) ----\n%s\n", logs[i],
                    s + (n > 6000 ? n - 6000 : 0));
            free(s);
        }
        logs[i][0] = 0;
    }
    finished = 0;
    if (rs.pid > 0)
        redis_server_destroy(&rs);
    return 0;
}

static int setup_dir(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/seckill-itops-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
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
        cmocka_unit_test_teardown(test_metrics_thousand_items, teardown),
        cmocka_unit_test_teardown(test_sighup_under_traffic, teardown),
        cmocka_unit_test_teardown(test_sigterm_drain, teardown),
        cmocka_unit_test_teardown(test_worker_metrics_and_sighup, teardown),
        cmocka_unit_test_teardown(test_sink_reopens_on_sigusr1, teardown),
    };
    return cmocka_run_group_tests_name("integration.ops", tests, setup_dir, teardown_dir);
}
