/*
 * it_shutdown.c - SIGTERM while requests are parked: the gateway stops
 * accepting, answers every parked request (its outcome, or 504 at its
 * deadline), resumes every suspended connection and exits 0 (no leak under
 * ASan). The worker is a real seckill-worker process, stopped with SIGSTOP
 * so requests stay parked (past request_timeout_ms, which must not cut
 * them); stock is in a real redis-server.
 *
 * argv: seckill-gateway, seckill-worker, park mode.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "tests/redis_server.h"
#include "tests/test_proc.h"
#include "tests/test_time.h"

static const char *gateway_bin, *worker_bin, *park;

/* what a failed assertion leaves running, for the teardown */
static redis_server rs;
static gw_proc gw;
static pid_t worker;

#define PARKED 40

typedef struct client {
    int port, id, status;
    uint64_t took_ms;
} client;

static void *client_main(void *arg)
{
    client *c = arg;
    char body[96];
    http_resp *r = malloc(sizeof *r);
    snprintf(body, sizeof body, "{\"user_id\":\"u%d\",\"item_id\":\"demo\"}", c->id);
    uint64_t t0 = mono_ms();
    int rc = r ? http_buy(c->port, body, r) : -1;
    c->status = rc == 0 ? r->status : rc;
    if (rc != 0)
        fprintf(stderr, "client %d: no answer (rc %d, %s)\n", c->id, rc, strerror(errno));
    c->took_ms = mono_ms() - t0;
    free(r);
    return NULL;
}

static void test_sigterm_answers_parked(void **state)
{
    (void)state;
    char ini[1024], wini[1200], dir[] = "/tmp/seckill-itsd-XXXXXX", wpath[64], park_lines[64];
    park_ini_lines(park, park_lines, sizeof park_lines);
    assert_int_equal(redis_server_start(&rs), 0);
    assert_non_null(mkdtemp(dir));
    /* request_timeout_ms is shorter than the wait: a parked request is in
     * full, so only wait_timeout_ms may end it */
    snprintf(ini, sizeof ini,
             "[gateway]\n%swait_timeout_ms = 1500\nrequest_timeout_ms = 500\n"
             "[token_bucket]\nrate = 0\n"
             "[queue]\nlease_timeout_ms = 60000\nack_timeout_ms = 60000\n"
             "[worker]\nembedded = false\ninventory = redis\nthreads = 1\n"
             "[rpc]\nlisten = tcp:127.0.0.1:0\nsecret = shutdown-secret\n"
             "[redis]\nport = %d\n[item.demo]\nstock = 100\n",
             park_lines, rs.port);
    assert_int_equal(gw_proc_start(&gw, gateway_bin, ini), 0);
    char gws[64];
    snprintf(gws, sizeof gws, "[rpc]\ngateways = tcp:127.0.0.1:%d\n", gw.rpc_port);
    assert_int_equal(ini_merge(wini, sizeof wini, ini, gws), 0);
    snprintf(wpath, sizeof wpath, "%s/w.ini", dir);
    FILE *f = fopen(wpath, "w");
    fputs(wini, f);
    fclose(f);
    const char *argv[] = {worker_bin, "-c", wpath, "--id", "w1", NULL};
    assert_int_equal(proc_spawn(argv, "role=seckill", &worker), 0);
    http_resp r;
    for (int i = 0; i < 500; i++) {
        assert_int_equal(http_do(gw.port, "GET", "/readyz", NULL, NULL, 0, &r), 0);
        if (r.status == 200)
            break;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(r.status, 200);

    proc_pause(worker); /* consumes nothing more, its lease stays valid */
    pthread_t t[PARKED];
    client c[PARKED];
    for (int i = 0; i < PARKED; i++) {
        c[i] = (client){.port = gw.port, .id = i};
        pthread_create(&t[i], NULL, client_main, &c[i]);
    }
    /* wait until they are all parked (slow under sanitizers on a busy machine) */
    char want[64];
    snprintf(want, sizeof want, "seckill_parked_requests %d\n", PARKED);
    for (int i = 0; i < 2000; i++) {
        assert_int_equal(http_do(gw.port, "GET", "/metrics", NULL, NULL, 0, &r), 0);
        if (strstr(r.body, want))
            break;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    assert_non_null(strstr(r.body, want));
    uint64_t t0 = mono_ms();
    kill(gw.pid, SIGTERM);
    for (int i = 0; i < PARKED; i++)
        pthread_join(t[i], NULL);
    int status;
    assert_int_equal(waitpid(gw.pid, &status, 0), gw.pid);
    uint64_t exit_ms = mono_ms() - t0;
    gw.pid = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("gateway ended with status 0x%x (signal %d) after SIGTERM", status,
                 WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    /* parked requests were answered while the deadline kept them waiting */
    assert_int_equal(WEXITSTATUS(status), 0); /* ASan builds: leak-free too */
    for (int i = 0; i < PARKED; i++) {
        if (c[i].status != 504)
            fail_msg("parked request %d: answer %d, want 504", i, c[i].status);
        /* answered at its deadline (1.5 s after it was sent), not cut short */
        assert_true(c[i].took_ms >= 1400);
    }
    printf("%s park: %d parked requests answered 504, gateway exited %llu ms after SIGTERM\n",
           park, PARKED, (unsigned long long)exit_ms);
    assert_true(exit_ms < 1500 + 500 + 3000);
    gw_proc_stop(&gw); /* removes the temp config */
    kill(worker, SIGCONT);
    pid_t w = worker;
    worker = 0;
    assert_int_equal(proc_stop(w, SIGTERM), 0);
    unlink(wpath);
    rmdir(dir);
    redis_server_destroy(&rs);
}

static int teardown(void **state)
{
    (void)state;
    if (worker > 0) {
        kill(worker, SIGCONT);
        proc_stop(worker, SIGKILL);
        worker = 0;
    }
    if (gw.pid > 0)
        gw_proc_stop(&gw);
    if (rs.pid > 0)
        redis_server_destroy(&rs);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s SECKILL-GATEWAY SECKILL-WORKER thread|event|event-epoll\n", argv[0]);
        return 2;
    }
    gateway_bin = argv[1];
    worker_bin = argv[2];
    park = argv[3];
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_sigterm_answers_parked, teardown)};
    char name[64];
    snprintf(name, sizeof name, "integration.shutdown.%s", park);
    return cmocka_run_group_tests_name(name, tests, NULL, NULL);
}
