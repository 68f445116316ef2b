/*
 * seckill-worker: a worker process.
 *
 *   --role seckill (default): consume the request topic of every gateway in
 *     [rpc] gateways (group "seckill"), decide against Redis, send RESULT to
 *     the gateway the request came from, commit after sending; cancel orders
 *     not paid in time (pay timeout) and broadcast stock to the gateways.
 *   --role orders: the order sink: read the order events of every item from
 *     Redis (group "orders", at least once), store each order event once in
 *     an append-only JSON-lines file (--out), idempotent by (order id, type),
 *     fsynced before the events are acknowledged.
 *
 * Exit status: 0 after SIGTERM/SIGINT, 64 usage, 78 configuration, 69 cannot
 * start (Redis unreachable at start, file not writable).
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
#include <sysexits.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "config.h"
#include "inventory_redis.h"
#include "remote.h"
#include "worker.h"

#define DEFAULT_CONFIG "config/seckill.ini"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: seckill-worker [OPTIONS]\n"
            "Decides flash-sale requests of the gateways in [rpc] gateways against Redis,\n"
            "or (--role orders) stores order events from Redis in a file.\n"
            "\n"
            "  -c, --config FILE   INI configuration (default " DEFAULT_CONFIG ")\n"
            "      --role ROLE     seckill (default) or orders\n"
            "      --id ID         worker id (default: a fresh UUID)\n"
            "      --out FILE      orders role: the JSON-lines order file (default orders.jsonl)\n"
            "  -h, --help          show this help\n"
            "  -V, --version       show the version\n"
            "\n"
            "Exit status: 0 clean stop, 64 usage error, 78 configuration error,\n"
            "69 cannot start (e.g. Redis unreachable).\n");
}

static atomic_int stopping;

/* ---- role seckill: the pay-timeout reaper and stock broadcasts ---- */

typedef struct reaper {
    sk_redis *redis;
    sk_link link;
    const cfg *c;
    pthread_t tid;
} reaper;

static void *reaper_main(void *arg)
{
    reaper *rp = arg;
    while (!atomic_load(&stopping)) {
        int n = sk_redis_reap(rp->redis, sk_wall_ms());
        if (n > 0)
            fprintf(stderr, "seckill-worker: cancelled %d unpaid order%s\n", n, n == 1 ? "" : "s");
        /* every second, every gateway hears every item's stock: the local
         * sold-out flags heal after a lost update or returned stock */
        for (size_t i = 0; i < rp->c->nitems; i++) {
            int64_t left = sk_redis_left(rp->redis, rp->c->items[i].id);
            if (left >= 0)
                rp->link.stock(rp->link.arg, rp->c->items[i].id, left);
        }
        for (int i = 0; i < 10 && !atomic_load(&stopping); i++) {
            struct timespec ts = {0, 100 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

/* ---- role orders: the sink ---- */

typedef struct sink {
    FILE *f;
    char **seen; /* "order_id/type", sorted insert would be nicer; a hash is enough */
    size_t nseen, cap;
    size_t *buckets;
    size_t nbuckets;
    uint64_t stored, duplicates;
} sink;

static uint64_t str_hash(const char *s)
{
    uint64_t h = 14695981039346656037ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static int sink_has(sink *s, const char *key)
{
    if (!s->nbuckets)
        return 0;
    for (size_t i = str_hash(key) & (s->nbuckets - 1);; i = (i + 1) & (s->nbuckets - 1)) {
        size_t k = s->buckets[i];
        if (k == 0)
            return 0;
        if (!strcmp(s->seen[k - 1], key))
            return 1;
    }
}

static int sink_add(sink *s, const char *key)
{
    if ((s->nseen + 1) * 2 > s->nbuckets) {
        size_t nb = s->nbuckets ? s->nbuckets * 2 : 1024;
        size_t *b = calloc(nb, sizeof *b);
        if (!b)
            return -ENOMEM;
        for (size_t k = 0; k < s->nseen; k++) {
            size_t i = str_hash(s->seen[k]) & (nb - 1);
            while (b[i])
                i = (i + 1) & (nb - 1);
            b[i] = k + 1;
        }
        free(s->buckets);
        s->buckets = b;
        s->nbuckets = nb;
    }
    if (s->nseen == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 1024;
        char **n = realloc(s->seen, nc * sizeof *n);
        if (!n)
            return -ENOMEM;
        s->seen = n;
        s->cap = nc;
    }
    char *dup = strdup(key);
    if (!dup)
        return -ENOMEM;
    s->seen[s->nseen++] = dup;
    size_t i = str_hash(key) & (s->nbuckets - 1);
    while (s->buckets[i])
        i = (i + 1) & (s->nbuckets - 1);
    s->buckets[i] = s->nseen;
    return 0;
}

/* Load what an earlier run stored, so a restart stays idempotent. */
static int sink_load(sink *s, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    if (!f)
        return errno == ENOENT ? 0 : -errno;
    while (fgets(line, sizeof line, f)) {
        char order[64] = "", type[16] = "", key[96];
        const char *o = strstr(line, "\"order_id\":\""), *t = strstr(line, "\"type\":\"");
        if (!o || !t || sscanf(o + 12, "%63[^\"]", order) != 1 || sscanf(t + 8, "%15[^\"]", type) != 1)
            continue; /* a torn last line from a crash: its event is re-read (not acked) */
        snprintf(key, sizeof key, "%s/%s", order, type);
        if (!sink_has(s, key) && sink_add(s, key) < 0) {
            fclose(f);
            return -ENOMEM;
        }
    }
    fclose(f);
    return 0;
}

typedef struct sink_batch {
    sink *s;
    const char *ids[256];
    char idbuf[256][48];
    size_t n;
    int err;
} sink_batch;

static int on_event(void *arg, const sk_redis_event *ev)
{
    sink_batch *b = arg;
    sink *s = b->s;
    char key[96];
    snprintf(key, sizeof key, "%s/%s", ev->order_id, ev->type);
    if (sink_has(s, key)) {
        s->duplicates++;
    } else {
        if (fprintf(s->f,
                    "{\"order_id\":\"%s\",\"type\":\"%s\",\"item_id\":\"%s\",\"user_id\":\"%s\","
                    "\"request_id\":\"%s\",\"at_ms\":%llu}\n",
                    ev->order_id, ev->type, ev->item_id, ev->user_id, ev->request_id,
                    (unsigned long long)ev->at_ms) < 0 ||
            sink_add(s, key) < 0) {
            b->err = -EIO;
            return -1;
        }
        s->stored++;
    }
    snprintf(b->idbuf[b->n], sizeof b->idbuf[b->n], "%s", ev->id);
    b->ids[b->n] = b->idbuf[b->n];
    b->n++;
    return 0;
}

static int run_orders(const cfg *c, sk_redis *redis, const char *id, const char *out)
{
    sink s = {0};
    int rc = sink_load(&s, out);
    if (rc < 0) {
        fprintf(stderr, "seckill-worker: %s: %s\n", out, strerror(-rc));
        return EX_UNAVAILABLE;
    }
    s.f = fopen(out, "a");
    if (!s.f) {
        fprintf(stderr, "seckill-worker: %s: %s\n", out, strerror(errno));
        return EX_UNAVAILABLE;
    }
    printf("seckill-worker %s role=orders id=%s out=%s\n", SECKILL_VERSION, id, out);
    fflush(stdout);
    while (!atomic_load(&stopping)) {
        int idle = 1;
        for (size_t i = 0; i < c->nitems && !atomic_load(&stopping); i++) {
            sink_batch b = {.s = &s};
            int n = sk_redis_events_read(redis, c->items[i].id, "orders", id, 256, 100, on_event,
                                         &b);
            if (n < 0 && b.n == 0) {
                struct timespec ts = {0, 100 * 1000 * 1000};
                nanosleep(&ts, NULL);
                continue;
            }
            if (b.n == 0)
                continue;
            idle = 0;
            /* durable before acknowledged: a crash in between re-reads them,
             * and the seen set keeps the file free of duplicates */
            if (fflush(s.f) != 0 || fsync(fileno(s.f)) != 0) {
                fprintf(stderr, "seckill-worker: %s: %s\n", out, strerror(errno));
                break;
            }
            sk_redis_events_ack(redis, c->items[i].id, "orders", b.ids, b.n);
        }
        (void)idle;
    }
    fprintf(stderr, "seckill-worker: orders stored %llu, duplicates skipped %llu\n",
            (unsigned long long)s.stored, (unsigned long long)s.duplicates);
    fclose(s.f);
    for (size_t i = 0; i < s.nseen; i++)
        free(s.seen[i]);
    free(s.seen);
    free(s.buckets);
    return 0;
}

static void *signal_main(void *arg)
{
    sigset_t *set = arg;
    int sig;
    sigwait(set, &sig);
    atomic_store(&stopping, 1);
    return NULL;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"role", required_argument, NULL, 'r'},
        {"id", required_argument, NULL, 'i'},     {"out", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},         {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0}};
    const char *config_path = DEFAULT_CONFIG, *role = "seckill", *out = "orders.jsonl";
    char id[64] = "", err[512];
    int ch;
    cfg c;

    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":c:hV", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': config_path = optarg; break;
        case 'r': role = optarg; break;
        case 'i': snprintf(id, sizeof id, "%s", optarg); break;
        case 'o': out = optarg; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("seckill-worker %s\n", SECKILL_VERSION); return 0;
        case ':':
            fprintf(stderr, "seckill-worker: option '%s' needs a value\n", argv[optind - 1]);
            usage(stderr);
            return EX_USAGE;
        default:
            fprintf(stderr, "seckill-worker: unknown option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return EX_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "seckill-worker: unexpected argument '%s'\n", argv[optind]);
        return EX_USAGE;
    }
    if (strcmp(role, "seckill") != 0 && strcmp(role, "orders") != 0) {
        fprintf(stderr, "seckill-worker: --role '%s': expected seckill or orders\n", role);
        return EX_USAGE;
    }
    if (!id[0] || !sk_id_valid(id, strlen(id))) {
        if (id[0]) {
            fprintf(stderr, "seckill-worker: --id '%s': 1-64 characters of [A-Za-z0-9_.:-]\n", id);
            return EX_USAGE;
        }
        uuid_t u;
        uuid_generate_random(u);
        uuid_unparse_lower(u, id);
    }

    cfg_init(&c);
    if (cfg_load(&c, config_path, err, sizeof err) < 0) {
        fprintf(stderr, "seckill-worker: %s\n", err);
        cfg_release(&c);
        return EX_CONFIG;
    }
    if (strcmp(c.worker_inventory, "redis") != 0) {
        fprintf(stderr, "seckill-worker: %s: [worker] inventory must be redis for a worker "
                        "process (memory stock lives inside one gateway)\n", config_path);
        cfg_release(&c);
        return EX_CONFIG;
    }
    if (!strcmp(role, "seckill") && (!c.nrpc_gateways || !c.rpc_secret[0])) {
        fprintf(stderr, "seckill-worker: %s: [rpc] gateways and secret are required\n",
                config_path);
        cfg_release(&c);
        return EX_CONFIG;
    }

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    pthread_t sigthr;
    pthread_create(&sigthr, NULL, signal_main, &set);

    int status = 0;
    sk_redis *redis = NULL;
    sk_redis_item *items = calloc(c.nitems, sizeof *items);
    sk_item_window *windows = calloc(c.nitems, sizeof *windows);
    if (!items || !windows) {
        status = EX_OSERR;
        goto out;
    }
    for (size_t i = 0; i < c.nitems; i++) {
        items[i] = (sk_redis_item){c.items[i].id, c.items[i].stock, c.items[i].per_user_limit,
                                   c.worker_pay_timeout_ms};
        windows[i] = (sk_item_window){c.items[i].id, c.items[i].starts_at, c.items[i].ends_at};
    }
    int rc = sk_redis_create(c.redis_host, c.redis_port, c.redis_timeout_ms, items, c.nitems,
                             &redis);
    if (rc < 0) {
        fprintf(stderr, "seckill-worker: redis %s:%u: %s\n", c.redis_host, c.redis_port,
                strerror(-rc));
        status = EX_UNAVAILABLE;
        goto out;
    }

    if (!strcmp(role, "orders")) {
        status = run_orders(&c, redis, id, out);
        goto out;
    }

    sk_remote *remote = NULL;
    sk_remote_config rcfg = {.gateways = (const char *const *)c.rpc_gateways,
                             .ngateways = c.nrpc_gateways, .secret = c.rpc_secret,
                             .worker_id = id, .group = SK_GROUP, .topic = SK_REQUEST_TOPIC};
    rc = sk_remote_create(&rcfg, &remote);
    if (rc < 0) {
        fprintf(stderr, "seckill-worker: rpc: %s\n", strerror(-rc));
        status = EX_UNAVAILABLE;
        goto out;
    }
    sk_source src = sk_remote_source(remote);
    sk_backend be = sk_redis_backend(redis);
    sk_link link = sk_remote_link(remote);
    sk_worker_config wc = {.threads = c.worker_threads, .batch = c.worker_batch, .name = id,
                           .blocklist = (const char *const *)c.blocklist,
                           .nblocklist = c.nblocklist, .windows = windows,
                           .nwindows = c.nitems};
    sk_worker *w = NULL;
    rc = sk_worker_start(&wc, &src, &be, &link, &w);
    if (rc < 0) {
        fprintf(stderr, "seckill-worker: cannot start worker threads: %s\n", strerror(-rc));
        sk_remote_destroy(remote);
        status = EX_UNAVAILABLE;
        goto out;
    }
    reaper rp = {.redis = redis, .link = link, .c = &c};
    pthread_create(&rp.tid, NULL, reaper_main, &rp);
    printf("seckill-worker %s role=seckill id=%s gateways=%zu threads=%u\n", SECKILL_VERSION, id,
           c.nrpc_gateways, c.worker_threads);
    fflush(stdout);
    while (!atomic_load(&stopping)) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    pthread_join(rp.tid, NULL);
    sk_worker_stop(w);
    sk_remote_destroy(remote);

out:
    if (!atomic_load(&stopping))
        pthread_kill(sigthr, SIGTERM);
    pthread_join(sigthr, NULL);
    sk_redis_destroy(redis);
    free(items);
    free(windows);
    cfg_release(&c);
    return status;
}
