/*
 * seckill-worker: a worker process.
 *
 *   --role seckill (default): consume the request topic of every gateway in
 *     [rpc] gateways, or, when that is empty, of every gateway registered in
 *     Redis (registry.h, followed every second) (group "seckill"), decide
 *     against Redis, send RESULT to
 *     the gateway the request came from, commit after sending; cancel orders
 *     not paid in time (pay timeout) and broadcast stock to the gateways.
 *   --role orders: the order sink: read the order events of every item from
 *     Redis, or (inventory = memory) the order topic of every gateway in
 *     [rpc] gateways over rpc/ (group "orders", at least once), store each
 *     order event once in an append-only JSON-lines file (--out, order_sink.h),
 *     idempotent by (order id, type), fsynced before the events are
 *     acknowledged.
 *
 * Signals: SIGTERM/SIGINT stop. SIGHUP reads the configuration again and
 * applies the blocklist, the sale windows and stock increases (role
 * seckill), naming every other change as needing a restart; a file that
 * does not load is refused with its file:line. SIGUSR1 makes the order sink
 * reopen --out (after logrotate moved it).
 *
 * [worker] metrics_listen: GET /metrics and GET /livez on their own port.
 *
 * Exit status: 0 after SIGTERM/SIGINT, 64 usage, 78 configuration, 69 cannot
 * start (Redis unreachable at start, file not writable, metrics_listen taken).
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

#include "commits.h"
#include "config.h"
#include "log.h"
#include "metrics_http.h"
#include "order_event.h"
#include "service.h"
#include "order_sink.h"
#include "registry.h"
#include "remote.h"
#include "rpc.h"
#include "store.h"
#include "worker.h"

/* an installed worker finds its configuration from any directory */
#define DEFAULT_CONFIG SECKILL_DEFAULT_CONFIG

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: seckill-worker [OPTIONS]\n"
            "Decides flash-sale requests of the gateways in [rpc] gateways (or, when empty,\n"
            "of those registered in Redis) against Redis,\n"
            "or (--role orders) stores order events from Redis (or, with inventory = memory,\n"
            "from the gateways' order topics) in a file.\n"
            "\n"
            "  -c, --config FILE   INI configuration (default " DEFAULT_CONFIG ")\n"
            "      --role ROLE     seckill (default) or orders\n"
            "      --id ID         worker id (default: a fresh UUID)\n"
            "      --out FILE      orders role: the JSON-lines order file (default orders.jsonl)\n"
            "      --print-config  print the effective configuration as INI (secrets shown as\n"
            "                      <set>), then exit\n"
            "  -h, --help          show this help\n"
            "  -V, --version       show the version\n"
            "\n"
            "Exit status: 0 clean stop, 64 usage error, 78 configuration error,\n"
            "69 cannot start (e.g. Redis unreachable).\n");
}

static atomic_int stopping;
static atomic_int reload_asked; /* SIGHUP */
static atomic_int reopen_asked; /* SIGUSR1 */
static char metrics_note[96];   /* " metrics=HOST:PORT" in the start line, or "" */

/* ---- /metrics of the worker process ---- */

typedef struct worker_view {
    sk_worker *w;       /* role seckill, once started */
    sk_remote *remote;
    sk_sink *sink;      /* role orders, once open */
    pthread_mutex_t lock; /* the pointers above, set and cleared by main */
} worker_view;

static worker_view view = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void view_set(sk_worker *w, sk_remote *remote, sk_sink *sink)
{
    pthread_mutex_lock(&view.lock);
    view.w = w;
    view.remote = remote;
    view.sink = sink;
    pthread_mutex_unlock(&view.lock);
}

static void counter(sk_text *t, const char *name, const char *help, unsigned long long v)
{
    sk_text_printf(t, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name, v);
}

static void render_worker(void *arg, sk_text *t)
{
    (void)arg;
    pthread_mutex_lock(&view.lock);
    if (view.w) {
        sk_worker_stats st;
        sk_worker_get_stats(view.w, &st);
        counter(t, "seckill_worker_decided_total", "Requests decided.", st.decided);
        counter(t, "seckill_worker_expired_total",
                "Requests that reached the worker past their deadline (nothing bought).",
                st.expired);
        counter(t, "seckill_worker_redelivered_total", "Requests delivered more than once.",
                st.redelivered);
        counter(t, "seckill_worker_bad_messages_total", "Undecodable request messages dropped.",
                st.bad_messages);
        counter(t, "seckill_worker_deliver_failures_total",
                "Outcomes that could not be handed to their gateway.", st.deliver_failures);
        counter(t, "seckill_worker_backend_failures_total",
                "Store calls that failed (the batch is decided again).", st.backend_failures);
    }
    if (view.remote)
        sk_text_printf(t, "# HELP seckill_worker_gateways Gateways this worker consumes.\n"
                          "# TYPE seckill_worker_gateways gauge\nseckill_worker_gateways %zu\n",
                       sk_remote_count(view.remote));
    if (view.sink) {
        uint64_t stored, dups;
        sk_sink_stats(view.sink, &stored, &dups);
        counter(t, "seckill_sink_orders_stored_total", "Order events stored in the file.",
                stored);
        counter(t, "seckill_sink_duplicates_total",
                "Order events delivered again and skipped (already stored).", dups);
    }
    pthread_mutex_unlock(&view.lock);
}

/* The order sink between batches: SIGUSR1 reopens its file, SIGHUP has
 * nothing to change in it. */
static void sink_signals(sk_sink *s, const char *out)
{
    if (atomic_exchange(&reopen_asked, 0)) {
        int rc = sk_sink_reopen(s);
        if (rc < 0)
            sk_log(SK_LOG_ERROR, "orders", NULL,
                   "SIGUSR1: cannot reopen %s: %s (still writing the old file)", out,
                   strerror(-rc));
        else
            sk_log(SK_LOG_INFO, "orders", NULL, "SIGUSR1: reopened %s", out);
    }
    if (atomic_exchange(&reload_asked, 0))
        sk_log(SK_LOG_INFO, "orders", NULL, "SIGHUP: the order sink has nothing to reload");
}

/* ---- role seckill: stock broadcasts after each reaper round ---- */

/* Every second, every gateway hears every item's stock: the local sold-out
 * flags heal after a lost update or returned stock. */
typedef struct stock_feed {
    sk_link link;
    const cfg *c;
} stock_feed;

static void on_store_stock(void *arg, size_t i, int64_t left)
{
    stock_feed *f = arg;
    f->link.stock(f->link.arg, f->c->items[i].id, left);
}

/* ---- role seckill without [rpc] gateways: follow the registry ---- */

typedef struct discovery {
    sk_registry *reg;
    sk_remote *remote;
    pthread_t tid;
} discovery;

static void *discovery_main(void *arg)
{
    discovery *d = arg;
    sk_registry_gateway gws[SK_REMOTE_MAX_GATEWAYS];
    const char *addrs[SK_REMOTE_MAX_GATEWAYS];
    int down = 0;
    while (!atomic_load(&stopping)) {
        int n = sk_registry_list(d->reg, gws, SK_REMOTE_MAX_GATEWAYS);
        if (n < 0) {
            /* keep serving the gateways we know: an unreadable registry says
             * nothing about them */
            if (!down)
                sk_log(SK_LOG_WARN, "worker", NULL,
                       "registry unreadable (%s): keeping %zu known "
                       "gateway%s",
                       strerror(-n), sk_remote_count(d->remote),
                       sk_remote_count(d->remote) == 1 ? "" : "s");
            down = 1;
        } else {
            if (down)
                sk_log(SK_LOG_INFO, "worker", NULL, "registry readable again");
            down = 0;
            for (int i = 0; i < n; i++)
                addrs[i] = gws[i].addr;
            int rc = sk_remote_set_gateways(d->remote, addrs, (size_t)n);
            if (rc < 0)
                sk_log(SK_LOG_ERROR, "worker", NULL, "gateways: %s", strerror(-rc));
        }
        for (int i = 0; i < 10 && !atomic_load(&stopping); i++) {
            struct timespec ts = {0, 100 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

/* ---- role orders: the sink (order_sink.h), fed from Redis or over rpc/ ---- */

typedef struct sink_batch {
    sk_sink *s;
    const char *ids[256];
    char idbuf[256][48];
    size_t n;
    int err;
} sink_batch;

static int on_event(void *arg, const sale_event *ev)
{
    sink_batch *b = arg;
    sk_sink_record r = {.order_id = ev->order_id, .type = ev->type, .item_id = ev->item_id,
                        .user_id = ev->user_id, .request_id = ev->request_id,
                        .at_ms = ev->at_ms};
    int rc = sk_sink_put(b->s, &r);
    if (rc < 0) {
        b->err = rc;
        return -1;
    }
    snprintf(b->idbuf[b->n], sizeof b->idbuf[b->n], "%s", ev->id);
    b->ids[b->n] = b->idbuf[b->n];
    b->n++;
    return 0;
}

static sk_sink *sink_start(const char *out, const char *id, const char *from)
{
    sk_sink *s = NULL;
    int rc = sk_sink_open(out, &s);
    if (rc < 0) {
        sk_log(SK_LOG_ERROR, "orders", NULL, "%s: %s", out, strerror(-rc));
        return NULL;
    }
    view_set(NULL, NULL, s);
    printf("seckill-worker %s role=orders id=%s out=%s from=%s%s\n", SECKILL_VERSION, id, out,
           from, metrics_note);
    fflush(stdout);
    sk_service_ready("orders");
    return s;
}

static void sink_finish(sk_sink *s)
{
    uint64_t stored, dups;
    view_set(NULL, NULL, NULL);
    sk_sink_stats(s, &stored, &dups);
    sk_log(SK_LOG_INFO, "orders", NULL, "orders stored %llu, duplicates skipped %llu",
           (unsigned long long)stored, (unsigned long long)dups);
    sk_sink_close(s);
}

/* inventory = redis: the store's order event streams, group "orders". */
static int run_orders(sale_store *store, const char *id, const char *out)
{
    sk_sink *s = sink_start(out, id, "redis");
    if (!s)
        return EX_UNAVAILABLE;
    size_t nstreams = sale_store_event_streams(store);
    while (!atomic_load(&stopping)) {
        sink_signals(s, out);
        for (size_t i = 0; i < nstreams && !atomic_load(&stopping); i++) {
            sink_batch b = {.s = s};
            int n = sale_store_events_read(store, i, SK_ORDER_GROUP, id, 256, 100, on_event, &b);
            if (n < 0 && b.n == 0) {
                struct timespec ts = {0, 100 * 1000 * 1000};
                nanosleep(&ts, NULL);
                continue;
            }
            if (b.n == 0)
                continue;
            /* durable before acknowledged: a crash in between re-reads them,
             * and the sink's keys keep the file free of duplicates */
            int rc = sk_sink_sync(s);
            if (rc < 0) {
                sk_log(SK_LOG_ERROR, "orders", NULL, "%s: %s", out, strerror(-rc));
                atomic_store(&stopping, 1);
                break;
            }
            sale_store_events_ack(store, i, SK_ORDER_GROUP, b.ids, b.n);
        }
    }
    sink_finish(s);
    return 0;
}

/* inventory = memory: the order topic (SK_ORDER_TOPIC) of every gateway in
 * [rpc] gateways, group "orders", over rpc/: FETCH, store, fsync, COMMIT. */
static int run_orders_rpc(const cfg *c, const char *id, const char *out)
{
    sk_remote *remote = NULL;
    sk_remote_config rcfg = {.gateways = (const char *const *)c->rpc_gateways,
                             .ngateways = c->nrpc_gateways,
                             .secret = c->rpc_secret,
                             .worker_id = id,
                             .group = SK_ORDER_GROUP,
                             .topic = SK_ORDER_TOPIC,
                             .role = RPC_ROLE_ORDERS,
                             .tls_ca = c->rpc_tls_ca,
                             .tls_cert = c->rpc_tls_cert,
                             .tls_key = c->rpc_tls_key};
    void **h = calloc(c->nrpc_gateways, sizeof *h);
    sk_sink *s = NULL;
    int rc = h ? sk_remote_create(&rcfg, &remote) : -ENOMEM;
    if (rc < 0) {
        sk_log(SK_LOG_ERROR, "orders", NULL, "rpc: %s", strerror(-rc));
        free(h);
        return EX_UNAVAILABLE;
    }
    sk_source src = sk_remote_source(remote);
    int status = EX_UNAVAILABLE;
    for (size_t g = 0; g < c->nrpc_gateways; g++) { /* one connection per gateway */
        char cid[32];
        snprintf(cid, sizeof cid, "sink-%zu", g);
        rc = src.open(src.impl, cid, &h[g]);
        if (rc < 0) {
            sk_log(SK_LOG_ERROR, "orders", NULL, "rpc: %s", strerror(-rc));
            goto out_close;
        }
    }
    s = sink_start(out, id, "rpc");
    if (!s)
        goto out_close;
    status = 0;
    while (!atomic_load(&stopping)) {
        sink_signals(s, out);
        for (size_t g = 0; g < c->nrpc_gateways && !atomic_load(&stopping); g++) {
            const mq_message *msgs;
            int n = src.fetch(h[g], 256, 100, &msgs);
            if (n <= 0) {
                if (n < 0) { /* gateway down or restarting: the client reconnects */
                    struct timespec ts = {0, 100 * 1000 * 1000};
                    nanosleep(&ts, NULL);
                }
                continue;
            }
            sk_commits last; /* commits are cumulative: the last message per partition */
            sk_commits_init(&last);
            int failed = 0;
            for (int i = 0; i < n && !failed; i++) {
                sk_order_event ev;
                char rid[37];
                if (sk_order_event_decode(msgs[i].value, msgs[i].value_len, &ev) < 0) {
                    sk_log(SK_LOG_WARN, "orders", NULL,
                           "skipping an undecodable order event "
                           "%s/%u@%llu",
                           msgs[i].topic, msgs[i].partition, (unsigned long long)msgs[i].offset);
                } else if ((unsigned)ev.type != SK_EVENT_SALE) { /* a sale setting: no order */
                    uuid_unparse_lower(ev.request_id, rid);
                    sk_sink_record r = {.order_id = ev.order_id,
                                        .type = sk_order_state_name(ev.type),
                                        .item_id = ev.item_id, .user_id = ev.user_id,
                                        .request_id = rid, .at_ms = ev.at_ms};
                    rc = sk_sink_put(s, &r);
                    if (rc < 0) {
                        failed = 1;
                        break;
                    }
                }
                int k = sk_commits_slot(&last, &msgs[i]);
                if (k < 0)
                    break; /* the rest comes again */
                sk_commits_done(&last, k, &msgs[i]);
            }
            /* durable before committed: a crash in between delivers them
             * again, and the sink's keys drop the copies */
            if (!failed)
                rc = sk_sink_sync(s);
            if (failed || rc < 0) {
                sk_log(SK_LOG_ERROR, "orders", NULL, "%s: %s", out, strerror(-rc));
                status = EX_IOERR;
                atomic_store(&stopping, 1);
                break;
            }
            sk_commits_flush(&last, src.commit, h[g]);
        }
    }
    sink_finish(s);
out_close:
    for (size_t g = 0; g < c->nrpc_gateways; g++)
        if (h[g])
            src.close(src.impl, h[g]);
    sk_remote_destroy(remote);
    free(h);
    return status;
}

static void *signal_main(void *arg)
{
    sigset_t *set = arg;
    for (;;) {
        int sig;
        sigwait(set, &sig);
        if (sig == SIGHUP)
            atomic_store(&reload_asked, 1);
        else if (sig == SIGUSR1)
            atomic_store(&reopen_asked, 1);
        else
            break;
    }
    sk_service_stopping();
    atomic_store(&stopping, 1);
    return NULL;
}

/* Role seckill, SIGHUP: the blocklist, the sale windows and stock increases
 * change in place; anything else is named as needing a restart. */
static void reload(cfg *run, const char *path, sk_worker *w, sale_store *store,
                   sk_item_window *windows)
{
    static const char *const live[] = {"risk.blocklist", "item.starts_at", "item.ends_at",
                                       "item.stock",     "log.level",      NULL};
    char err[512];
    cfg n;
    int changes = 0;
    cfg_init(&n);
    FILE *log = NULL;
    sk_service_reloading();
    sk_log(SK_LOG_INFO, "worker", NULL, "SIGHUP: reloading %s", path);
    if (cfg_load(&n, path, err, sizeof err) < 0) {
        sk_log(SK_LOG_ERROR, "worker", NULL,
               "reload rejected: %s (the running configuration stays)", err);
        goto out_release;
    }
    log = sk_log_stream(SK_LOG_INFO, "reload");
    if (!log)
        log = stderr;
    cfg_report_restart(run, &n, live, log);
    if (sk_log_level_reload(run->log_level, n.log_level)) {
        memcpy(run->log_level, n.log_level, sizeof run->log_level);
        changes++;
    }
    for (size_t i = 0; cfg_same_items(run, &n) && i < n.nitems; i++) {
        cfg_item *r = &run->items[i];
        const cfg_item *ni = &n.items[i];
        if (r->starts_at != ni->starts_at || r->ends_at != ni->ends_at) {
            fprintf(log,
                    "[item.%s] starts_at %lld -> %lld, "
                    "ends_at %lld -> %lld\n",
                    r->id, (long long)r->starts_at, (long long)ni->starts_at, (long long)r->ends_at,
                    (long long)ni->ends_at);
            r->starts_at = windows[i].starts_at = ni->starts_at;
            r->ends_at = windows[i].ends_at = ni->ends_at;
            changes++;
        }
        int64_t added = ni->stock > r->stock ? sale_store_raise_stock(store, i, ni->stock) : 0;
        if (ni->stock != r->stock)
            fprintf(log, "[item.%s] stock %lld -> %lld: %s\n", r->id, (long long)r->stock,
                    (long long)ni->stock,
                    ni->stock < r->stock ? "a decrease needs a restart (the running stock stays)"
                    : added < 0          ? strerror((int)-added)
                                         : "raised");
        if (ni->stock > r->stock && added >= 0) {
            r->stock = ni->stock;
            changes++;
        }
    }
    int blocklist_changed = cfg_key_differs(cfg_find_key("risk", "blocklist"), run, &n);
    if (blocklist_changed) {
        fprintf(log, "[risk] blocklist: %zu -> %zu user ids\n", run->nblocklist, n.nblocklist);
        char **l = run->blocklist; /* swap: n frees the old list */
        size_t nl = run->nblocklist;
        run->blocklist = n.blocklist;
        run->nblocklist = n.nblocklist;
        n.blocklist = l;
        n.nblocklist = nl;
        changes++;
    }
    if (changes && sk_worker_set_risk(w, (const char *const *)run->blocklist, run->nblocklist,
                                      windows, run->nitems) < 0)
        fprintf(log, "out of memory: the previous blocklist and "
                     "windows stay\n");
    if (!changes)
        fprintf(log, "nothing to change\n");
out_release:
    if (log && log != stderr)
        fclose(log);
    cfg_release(&n);
    sk_service_reloaded();
}

/* Options, config checks per role, then the role's start-up, loop and
 * shutdown, in the order they happen: long, kept in one piece so each
 * role's sequence reads top to bottom; the roles' own logic is in the
 * functions above. */
int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"role", required_argument, NULL, 'r'},
        {"id", required_argument, NULL, 'i'},     {"out", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},         {"version", no_argument, NULL, 'V'},
        {"print-config", no_argument, NULL, 'p'}, {NULL, 0, NULL, 0}};
    const char *config_path = DEFAULT_CONFIG, *role = "seckill", *out = "orders.jsonl";
    char id[64] = "", err[512];
    int ch, print = 0;
    cfg c;

    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":c:hV", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': config_path = optarg; break;
        case 'r': role = optarg; break;
        case 'p': print = 1; break;
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
    if (print) {
        cfg_print(&c, stdout);
        cfg_release(&c);
        return 0;
    }
    /* inventory = memory: the order sink reads the gateways' order topics */
    int memory_orders = !strcmp(role, "orders") && !strcmp(c.worker_inventory, "memory");
    if (strcmp(c.worker_inventory, "redis") != 0 && !memory_orders) {
        fprintf(stderr, "seckill-worker: %s: [worker] inventory must be redis for a worker "
                        "process (memory stock lives inside one gateway)\n", config_path);
        cfg_release(&c);
        return EX_CONFIG;
    }
    if (memory_orders && (!c.nrpc_gateways || !c.rpc_secret[0])) {
        fprintf(stderr, "seckill-worker: %s: --role orders with inventory = memory needs "
                        "[rpc] gateways and secret\n", config_path);
        cfg_release(&c);
        return EX_CONFIG;
    }
    /* the gateways come from [rpc] gateways, or else from the registry in
     * [redis], which inventory = redis (checked above) always configures */
    if (!strcmp(role, "seckill") && !c.rpc_secret[0]) {
        fprintf(stderr, "seckill-worker: %s: [rpc] secret is required\n", config_path);
        cfg_release(&c);
        return EX_CONFIG;
    }

    /* TLS files matter where rpc/ is used: not to the order sink fed from Redis */
    if ((!strcmp(role, "seckill") || memory_orders) &&
        rpc_tls_check(0, c.rpc_tls_cert, c.rpc_tls_key, c.rpc_tls_ca, err, sizeof err) < 0) {
        fprintf(stderr, "seckill-worker: %s: %s\n", config_path, err);
        cfg_release(&c);
        return EX_CONFIG;
    }

    sk_log_setup("seckill-worker", sk_log_format_parse(c.log_format),
                 sk_log_level_parse(c.log_level), 2);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    sk_metrics_srv *msrv = NULL;
    if (c.worker_metrics_host[0]) {
        int mrc = sk_metrics_start(c.worker_metrics_host, c.worker_metrics_port, render_worker,
                                   NULL, &msrv);
        if (mrc < 0) {
            fprintf(stderr, "seckill-worker: [worker] metrics_listen %s:%u: %s\n",
                    c.worker_metrics_host, c.worker_metrics_port, strerror(-mrc));
            cfg_release(&c);
            return EX_UNAVAILABLE;
        }
        const char *lb = strchr(c.worker_metrics_host, ':') ? "[" : "", *rb = *lb ? "]" : "";
        snprintf(metrics_note, sizeof metrics_note, " metrics=%s%s%s:%u", lb,
                 c.worker_metrics_host, rb, sk_metrics_port(msrv));
    }
    pthread_t sigthr;
    pthread_create(&sigthr, NULL, signal_main, &set);

    int status = 0;
    sale_store *store = NULL;
    sale_store_item *sitems = calloc(c.nitems, sizeof *sitems);
    sk_item_window *windows = calloc(c.nitems, sizeof *windows);
    if (!sitems || !windows) {
        status = EX_OSERR;
        goto out;
    }
    for (size_t i = 0; i < c.nitems; i++) {
        sitems[i] = (sale_store_item){c.items[i].id, c.items[i].stock, c.items[i].per_user_limit,
                                       c.items[i].stock_buckets};
        windows[i] = (sk_item_window){c.items[i].id, c.items[i].starts_at, c.items[i].ends_at};
    }
    if (memory_orders) {
        status = run_orders_rpc(&c, id, out);
        goto out;
    }
    sale_store_config sc = {.backend = c.worker_inventory,
                            .name = "seckill-worker",
                            .items = sitems,
                            .nitems = c.nitems,
                            .pay_timeout_ms = c.worker_pay_timeout_ms,
                            .decision_capacity = c.worker_decision_capacity,
                            .data_dir = c.queue_data_dir,
                            .order_flush_sync = strcmp(c.queue_order_flush, "sync") == 0,
                            .ack_timeout_ms = c.queue_ack_timeout_ms,
                            .lease_timeout_ms = c.queue_lease_timeout_ms,
                            .redis_host = c.redis_host,
                            .redis_port = c.redis_port,
                            .redis_timeout_ms = c.redis_timeout_ms,
                            .min_replicas_ack = c.redis_min_replicas_ack,
                            .replica_ack_timeout_ms = c.redis_replica_ack_timeout_ms,
                            .redis_patience_ms = 5000,
                            .redis_cluster = c.redis_cluster,
                            .redis_nodes = c.redis_nodes};
    int rc = sale_store_create(&sc, &store, err, sizeof err);
    if (rc < 0) {
        sk_log(SK_LOG_ERROR, "worker", NULL, "%s", err);
        status = EX_UNAVAILABLE;
        goto out;
    }
    if (!strcmp(role, "orders")) { /* the store's order event streams */
        status = run_orders(store, id, out);
        goto out;
    }

    sk_remote *remote = NULL;
    discovery disc = {0};
    sk_remote_config rcfg = {.gateways = (const char *const *)c.rpc_gateways,
                             .ngateways = c.nrpc_gateways,
                             .discover = !c.nrpc_gateways,
                             .secret = c.rpc_secret,
                             .worker_id = id,
                             .group = SK_GROUP,
                             .topic = SK_REQUEST_TOPIC,
                             .role = RPC_ROLE_PURCHASE,
                             .tls_ca = c.rpc_tls_ca,
                             .tls_cert = c.rpc_tls_cert,
                             .tls_key = c.rpc_tls_key};
    rc = sk_remote_create(&rcfg, &remote);
    if (rc == 0 && rcfg.discover)
        rc = sk_registry_create(c.redis_host, c.redis_port, c.redis_cluster ? c.redis_nodes : NULL,
                                c.redis_timeout_ms, &disc.reg);
    if (rc < 0) {
        sk_log(SK_LOG_ERROR, "worker", NULL, "rpc: %s", strerror(-rc));
        sk_remote_destroy(remote);
        status = EX_UNAVAILABLE;
        goto out;
    }
    sk_source src = sk_remote_source(remote);
    sk_backend be = sale_store_backend(store);
    sk_link link = sk_remote_link(remote);
    sk_worker_config wc = {.threads = cfg_worker_threads(&c), .batch = c.worker_batch,
                           .linger_us = c.worker_linger_us, .name = id,
                           .blocklist = (const char *const *)c.blocklist,
                           .nblocklist = c.nblocklist, .windows = windows,
                           .nwindows = c.nitems};
    sk_worker *w = NULL;
    rc = sk_worker_start(&wc, &src, &be, &link, &w);
    if (rc < 0) {
        sk_log(SK_LOG_ERROR, "worker", NULL, "cannot start worker threads: %s", strerror(-rc));
        sk_remote_destroy(remote);
        sk_registry_destroy(disc.reg);
        status = EX_UNAVAILABLE;
        goto out;
    }
    stock_feed feed = {.link = link, .c = &c};
    sale_reaper_config rpc_cfg = {.period_ms = 1000, .stock = on_store_stock, .arg = &feed};
    sale_reaper *rp = NULL;
    rc = sale_reaper_start(store, &rpc_cfg, &rp);
    if (rc < 0)
        sk_log(SK_LOG_ERROR, "worker", NULL, "reaper: %s", strerror(-rc));
    if (disc.reg) {
        disc.remote = remote;
        pthread_create(&disc.tid, NULL, discovery_main, &disc);
        printf("seckill-worker %s role=seckill id=%s gateways=registry threads=%u%s\n",
               SECKILL_VERSION, id, cfg_worker_threads(&c), metrics_note);
    } else {
        printf("seckill-worker %s role=seckill id=%s gateways=%zu threads=%u%s\n",
               SECKILL_VERSION, id, c.nrpc_gateways, cfg_worker_threads(&c), metrics_note);
    }
    fflush(stdout);
    sk_service_ready(id);
    view_set(w, remote, NULL);
    while (!atomic_load(&stopping)) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (atomic_exchange(&reload_asked, 0))
            reload(&c, config_path, w, store, windows);
        if (atomic_exchange(&reopen_asked, 0))
            sk_log(SK_LOG_INFO, "worker", NULL,
                   "SIGUSR1: nothing to reopen (role seckill logs to stderr)");
    }
    view_set(NULL, NULL, NULL);
    sale_reaper_stop(rp);
    if (disc.reg)
        pthread_join(disc.tid, NULL);
    sk_worker_stop(w);
    sk_remote_destroy(remote);
    sk_registry_destroy(disc.reg);

out:
    if (!atomic_load(&stopping))
        pthread_kill(sigthr, SIGTERM);
    pthread_join(sigthr, NULL);
    sk_service_release();
    sk_metrics_stop(msrv);
    sale_store_destroy(store);
    free(sitems);
    free(windows);
    cfg_release(&c);
    return status;
}
