/*
 * queue-bench: throughput and produce latency of the embedded queue.
 *
 * For each storage (memory; log with flush none, async, sync) and producer
 * count (1 and 16 by default) it produces 100-byte messages for a fixed time
 * and prints msgs/s and p50/p99 produce latency, then consumes the topic with
 * one consumer group and prints consume msgs/s. It reports; it asserts
 * nothing about speed.
 *
 * usage: queue-bench [--seconds S] [--size BYTES] [--partitions N] [--dir DIR]
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mq.h"

static double opt_seconds = 2.0;
static size_t opt_size = 100;
static uint32_t opt_partitions = 8;
static const char *opt_dir = NULL;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

typedef struct producer {
    pthread_t tid;
    mq_topic *topic;
    uint64_t until_ns;
    uint64_t *lat; /* ns per produce */
    size_t n, cap;
    uint64_t errors;
    int id;
} producer;

static void *produce_loop(void *arg)
{
    producer *p = arg;
    char payload[4096];
    memset(payload, 'x', sizeof payload);
    while (now_ns() < p->until_ns) {
        snprintf(payload, 32, "p%d-%zu", p->id, p->n);
        mq_record rec = {.value = payload,
                         .value_len = opt_size,
                         .partition = MQ_PARTITION_ANY};
        uint64_t t0 = now_ns();
        int rc = mq_produce(p->topic, &rec, NULL, NULL);
        uint64_t dt = now_ns() - t0;
        if (rc < 0) {
            p->errors++;
            if (rc == -ENOBUFS)
                break;
            continue;
        }
        if (p->n == p->cap) {
            size_t nc = p->cap ? p->cap * 2 : 65536;
            uint64_t *nl = realloc(p->lat, nc * sizeof *nl);
            if (!nl)
                break;
            p->lat = nl;
            p->cap = nc;
        }
        p->lat[p->n++] = dt;
    }
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct consumer_arg {
    pthread_t tid;
    mq_consumer *c;
    _Atomic uint64_t *consumed;
    uint64_t target;
} consumer_arg;

static void *consume_loop(void *arg)
{
    consumer_arg *a = arg;
    int idle = 0;
    while (atomic_load(a->consumed) < a->target && idle < 20) {
        const mq_message *msgs;
        int n = mq_fetch(a->c, 512, 50, &msgs);
        if (n <= 0) {
            idle++;
            continue;
        }
        idle = 0;
        /* commit the last message of each partition in the batch */
        for (int i = 0; i < n; i++)
            if (i == n - 1 || msgs[i + 1].partition != msgs[i].partition ||
                strcmp(msgs[i + 1].topic, msgs[i].topic) != 0)
                mq_commit(a->c, &msgs[i]);
        atomic_fetch_add(a->consumed, (uint64_t)n);
    }
    return NULL;
}

static void run(const char *label, enum mq_storage storage, enum mq_flush flush, int nprod,
                int nconsumers)
{
    char dir[512] = "";
    mq *q = NULL;
    mq_topic *t = NULL;
    if (storage == MQ_STORAGE_LOG) {
        snprintf(dir, sizeof dir, "%s/qb-XXXXXX", opt_dir ? opt_dir : "/tmp");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            return;
        }
    }
    int rc = mq_create(storage == MQ_STORAGE_LOG ? dir : NULL, &q);
    mq_topic_config tc;
    mq_topic_config_init(&tc);
    tc.partitions = opt_partitions;
    tc.storage = storage;
    tc.flush = flush;
    tc.flush_interval_ms = 100;
    tc.max_backlog_msgs = 1ULL << 40;
    tc.max_backlog_bytes = 1ULL << 42;
    tc.max_record_bytes = 4096;
    if (rc == 0)
        rc = mq_topic_open(q, "bench", &tc, &t);
    if (rc < 0) {
        printf("%-14s %3d  error: %s\n", label, nprod, strerror(-rc));
        if (q)
            mq_destroy(q);
        return;
    }

    producer *ps = calloc((size_t)nprod, sizeof *ps);
    uint64_t t0 = now_ns(), until = t0 + (uint64_t)(opt_seconds * 1e9);
    for (int i = 0; i < nprod; i++) {
        ps[i] = (producer){.topic = t, .until_ns = until, .id = i};
        pthread_create(&ps[i].tid, NULL, produce_loop, &ps[i]);
    }
    size_t total = 0;
    uint64_t errors = 0;
    for (int i = 0; i < nprod; i++) {
        pthread_join(ps[i].tid, NULL);
        total += ps[i].n;
        errors += ps[i].errors;
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    uint64_t *all = malloc((total ? total : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < nprod; i++) {
        memcpy(all + k, ps[i].lat, ps[i].n * sizeof *all);
        k += ps[i].n;
        free(ps[i].lat);
    }
    qsort(all, total, sizeof *all, cmp_u64);
    double p50 = total ? (double)all[total / 2] / 1e3 : 0;
    double p99 = total ? (double)all[(size_t)((double)total * 0.99)] / 1e3 : 0;
    free(all);
    free(ps);

    /* consume everything with one group */
    _Atomic uint64_t consumed = 0;
    consumer_arg *cs = calloc((size_t)nconsumers, sizeof *cs);
    uint64_t c0 = now_ns();
    for (int i = 0; i < nconsumers; i++) {
        char id[32];
        snprintf(id, sizeof id, "c%d", i);
        cs[i] = (consumer_arg){.consumed = &consumed, .target = total};
        if (mq_consumer_create(t, "bench", id, &cs[i].c) == 0)
            pthread_create(&cs[i].tid, NULL, consume_loop, &cs[i]);
    }
    for (int i = 0; i < nconsumers; i++)
        if (cs[i].c) {
            pthread_join(cs[i].tid, NULL);
            mq_consumer_destroy(cs[i].c);
        }
    double csecs = (double)(now_ns() - c0) / 1e9;
    free(cs);

    printf("%-14s %9d %12.0f %10.1f %10.1f %12.0f %9llu\n", label, nprod, (double)total / secs,
           p50, p99, (double)atomic_load(&consumed) / csecs, (unsigned long long)errors);
    fflush(stdout);
    mq_destroy(q);
    if (dir[0]) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "queue-bench: could not remove %s\n", dir);
    }
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"seconds", required_argument, NULL, 's'},
                                         {"size", required_argument, NULL, 'b'},
                                         {"partitions", required_argument, NULL, 'p'},
                                         {"dir", required_argument, NULL, 'd'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "s:b:p:d:h", opts, NULL)) != -1) {
        switch (ch) {
        case 's': opt_seconds = atof(optarg); break;
        case 'b': opt_size = (size_t)atol(optarg); break;
        case 'p': opt_partitions = (uint32_t)atol(optarg); break;
        case 'd': opt_dir = optarg; break;
        case 'h':
            printf("usage: queue-bench [--seconds S] [--size BYTES] [--partitions N] [--dir DIR]\n");
            return 0;
        default: return 64;
        }
    }
    if (opt_seconds <= 0 || opt_size < 16 || opt_size > 4096 || opt_partitions == 0) {
        fprintf(stderr, "queue-bench: need seconds > 0, 16 <= size <= 4096, partitions >= 1\n");
        return 64;
    }
    printf("queue-bench: %zu-byte messages, %u partitions, %.1f s per run, %ld cpus\n", opt_size,
           opt_partitions, opt_seconds, sysconf(_SC_NPROCESSORS_ONLN));
    printf("%-14s %9s %12s %10s %10s %12s %9s\n", "storage", "producers", "produce/s", "p50_us",
           "p99_us", "consume/s", "errors");
    static const struct {
        const char *label;
        enum mq_storage s;
        enum mq_flush f;
    } modes[] = {{"memory", MQ_STORAGE_MEMORY, MQ_FLUSH_NONE},
                 {"log/none", MQ_STORAGE_LOG, MQ_FLUSH_NONE},
                 {"log/async", MQ_STORAGE_LOG, MQ_FLUSH_ASYNC},
                 {"log/sync", MQ_STORAGE_LOG, MQ_FLUSH_SYNC}};
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        run(modes[m].label, modes[m].s, modes[m].f, 1, 1);
        run(modes[m].label, modes[m].s, modes[m].f, 16, 2);
    }
    return 0;
}
