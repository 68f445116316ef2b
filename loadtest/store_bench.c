/*
 * store-bench: the Redis CPU a purchase costs, measured on a Redis that has
 * its CPU to itself.
 *
 * It starts a redis-server (as loadtest/run.sh does: AOF fsynced every
 * second, no RDB), opens the Redis store (sale/include/store.h) on it with
 * one item of 10^9 units, and has T threads decide batches of B fresh
 * purchases (new users, new request ids) through the store's own decide
 * call for S seconds. It prints purchases/s and the redis-server's CPU
 * (user + system, from /proc) per purchase. In `loadtest/run.sh --redis`
 * wrk, the gateway and the worker share the machine's CPUs with Redis and
 * roughly double what Redis spends; this is the figure that carries to a
 * Redis host of its own. It reports; it asserts nothing about speed.
 *
 * usage: store-bench [--seconds S] [--threads T] [--batch B] [--port P] [--aof yes|no]
 *   --aof no   the redis-server without its append-only file: what the AOF
 *              costs a purchase (replicas and min_replicas_ack instead keep
 *              a confirmed order when one node dies, not when all do)
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store.h"
#include "uuid4.h"

static double opt_seconds = 5.0;
static int opt_threads = 2;
static int opt_batch = 16;
static int opt_port = 17390;
static const char *opt_aof = "yes";

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* CPU seconds (user + system) of process pid, or -1. */
static double cpu_of(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    unsigned long long ut, st;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt
     * majflt cmajflt utime stime */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

typedef struct runner {
    pthread_t tid;
    sale_store *s;
    int id;
    uint64_t until_ns;
    uint64_t bought, calls;
    int err;
} runner;

static void *run(void *arg)
{
    runner *r = arg;
    size_t b = (size_t)opt_batch;
    sk_decide *reqs = calloc(b, sizeof *reqs);
    sk_outcome *outs = calloc(b, sizeof *outs);
    int64_t *left = calloc(b, sizeof *left);
    uint8_t(*rids)[16] = calloc(b, 16);
    char(*users)[32] = calloc(b, 32);
    if (!reqs || !outs || !left || !rids || !users) {
        r->err = -ENOMEM;
        goto out;
    }
    sk_backend be = sale_store_backend(r->s);
    for (uint64_t k = 0; now_ns() < r->until_ns; r->calls++) {
        for (size_t i = 0; i < b; i++, k++) {
            snprintf(users[i], 32, "t%d-u%llu", r->id, (unsigned long long)k);
            sk_uuid4(rids[i]);
            reqs[i] = (sk_decide){.item_id = "bench",
                                  .user_id = users[i],
                                  .request_id = rids[i],
                                  .verdict = SK_SUCCESS};
        }
        int rc = be.decide(be.impl, reqs, b, outs, left);
        if (rc < 0) {
            r->err = rc;
            break;
        }
        for (size_t i = 0; i < b; i++)
            r->bought += outs[i].result == SK_SUCCESS;
    }
out:
    free(reqs), free(outs), free(left), free(rids), free(users);
    return NULL;
}

static pid_t start_redis(const char *dir)
{
    char port[16];
    snprintf(port, sizeof port, "%d", opt_port);
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0)
            dup2(null, 1), dup2(null, 2);
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", opt_aof, "--appendfsync", "everysec", "--dir", dir, "--loglevel",
               "warning", (char *)NULL);
        _exit(127);
    }
    return pid;
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {
        {"seconds", required_argument, NULL, 's'}, {"threads", required_argument, NULL, 't'},
        {"batch", required_argument, NULL, 'b'},   {"port", required_argument, NULL, 'p'},
        {"aof", required_argument, NULL, 'a'},     {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 's':
            opt_seconds = atof(optarg);
            break;
        case 't':
            opt_threads = atoi(optarg);
            break;
        case 'b':
            opt_batch = atoi(optarg);
            break;
        case 'p':
            opt_port = atoi(optarg);
            break;
        case 'a':
            opt_aof = optarg;
            break;
        default:
            fprintf(stderr,
                    "usage: %s [--seconds S] [--threads T] [--batch B] [--port P] [--aof yes|no]\n",
                    argv[0]);
            return 2;
        }
    }
    if (opt_seconds <= 0 || opt_threads < 1 || opt_threads > 64 || opt_batch < 1 ||
        opt_batch > 4096 || opt_port <= 0 || opt_port > 65535 ||
        (strcmp(opt_aof, "yes") != 0 && strcmp(opt_aof, "no") != 0)) {
        fprintf(stderr,
                "store-bench: seconds > 0, threads 1-64, batch 1-4096, a port, aof yes or no\n");
        return 2;
    }
    char dir[] = "/tmp/store-bench-XXXXXX", err[256] = "";
    if (!mkdtemp(dir)) {
        perror("store-bench: mkdtemp");
        return 1;
    }
    pid_t redis = start_redis(dir);
    sale_store_item item = {.id = "bench", .stock = 1000000000, .per_user_limit = 1};
    sale_store_config cfg = {.backend = "redis",
                             .name = "store-bench",
                             .items = &item,
                             .nitems = 1,
                             .pay_timeout_ms = 900000,
                             .redis_host = "127.0.0.1",
                             .redis_port = opt_port,
                             .redis_timeout_ms = 5000,
                             .redis_patience_ms = 5000};
    sale_store *s = NULL;
    int rc = redis > 0 ? sale_store_create(&cfg, &s, err, sizeof err) : -ECHILD;
    if (rc < 0) {
        fprintf(stderr, "store-bench: %s\n", err[0] ? err : strerror(-rc));
        goto out;
    }
    runner *rs = calloc((size_t)opt_threads, sizeof *rs);
    uint64_t t0 = now_ns();
    double cpu0 = cpu_of(redis);
    for (int i = 0; i < opt_threads; i++) {
        rs[i] = (runner){.s = s, .id = i, .until_ns = t0 + (uint64_t)(opt_seconds * 1e9)};
        pthread_create(&rs[i].tid, NULL, run, &rs[i]);
    }
    uint64_t bought = 0, calls = 0;
    for (int i = 0; i < opt_threads; i++) {
        pthread_join(rs[i].tid, NULL);
        bought += rs[i].bought;
        calls += rs[i].calls;
        if (rs[i].err && !rc)
            rc = rs[i].err;
    }
    double secs = (double)(now_ns() - t0) / 1e9, cpu = cpu_of(redis) - cpu0;
    free(rs);
    if (rc < 0)
        fprintf(stderr, "store-bench: decide: %s\n", strerror(-rc));
    else if (bought == 0)
        fprintf(stderr, "store-bench: nothing bought\n"), rc = -EIO;
    else
        printf("store-bench: store=redis aof=%s threads=%d batch=%d purchases=%llu "
               "purchases_per_s=%.0f purchases_per_call=%.1f redis_cpu_pct=%.0f "
               "redis_cpu_us_per_purchase=%.1f\n",
               opt_aof, opt_threads, opt_batch, (unsigned long long)bought, (double)bought / secs,
               (double)bought / (double)calls, 100.0 * cpu / secs, cpu * 1e6 / (double)bought);
out:
    sale_store_destroy(s);
    if (redis > 0) {
        kill(redis, SIGTERM);
        waitpid(redis, NULL, 0);
    }
    char cmd[64];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "store-bench: could not remove %s\n", dir);
    return rc < 0 ? 1 : 0;
}
