/*
 * lifecycle.c - gw_create, gw_start, gw_stop, gw_destroy.
 *
 * gw_create builds what needs no thread and no socket, in this order: the
 * identity, the tables (token bucket, pending table, context pool, result
 * store), the item table, the store, the request topic. gw_start then runs
 * the embedded workers and the reaper, the RPC service, the connection
 * guard and the HTTP daemons; gw_stop undoes it in reverse, after the grace
 * given to parked requests. Any step that fails leaves what it made in g,
 * for gw_destroy.
 */
#include "gateway.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "framing.h"
#include "internal.h"

static int identity_init(gw *g, char *err, size_t errlen)
{
    const cfg *c = g->cfg;
    if (c->gateway_id[0]) {
        if (uuid_parse(c->gateway_id, g->id) != 0) {
            snprintf(err, errlen, "gateway_id '%s' is not a UUID", c->gateway_id);
            return -EINVAL;
        }
    } else {
        uuid_generate_random(g->id);
    }
    uuid_unparse_lower(g->id, g->id_str);
    return 0;
}

/* The store, with the stock of a running sale when it keeps one. */
static int store_open(gw *g, char *err, size_t errlen)
{
    const cfg *c = g->cfg;
    sale_store_item *specs = calloc(c->nitems ? c->nitems : 1, sizeof *specs);
    if (!specs) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    for (size_t i = 0; i < c->nitems; i++)
        specs[i] = (sale_store_item){c->items[i].id, c->items[i].stock, c->items[i].per_user_limit,
                                     c->items[i].stock_buckets};
    sale_store_config sc = {.backend = c->worker_inventory,
                            .name = "seckill-gateway",
                            .items = specs,
                            .nitems = c->nitems,
                            .pay_timeout_ms = c->worker_pay_timeout_ms,
                            .decision_capacity = c->worker_decision_capacity,
                            .data_dir = c->queue_data_dir,
                            .order_flush_sync = strcmp(c->queue_order_flush, "sync") == 0,
                            .ack_timeout_ms = c->queue_ack_timeout_ms,
                            .lease_timeout_ms = c->queue_lease_timeout_ms,
                            .redis_host = c->redis_host,
                            .redis_port = c->redis_port,
                            .redis_timeout_ms = c->redis_timeout_ms,
                            .min_replicas_ack = c->redis_min_replicas_ack,
                            .replica_ack_timeout_ms = c->redis_replica_ack_timeout_ms,
                            .redis_patience_ms = 5000,
                            .redis_cluster = c->redis_cluster,
                            .redis_nodes = c->redis_nodes};
    int rc = sale_store_create(&sc, &g->store, err, errlen);
    free(specs);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < c->nitems; i++) {
        int64_t left = sale_store_left(g->store, i);
        if (left >= 0) /* a running sale: start from where it is */
            gw__on_store_stock(g, i, left);
    }
    return 0;
}

/* The request topic goes into the store's queue when it keeps one (the
 * order events on disk, served to order consumers with the requests). */
static int topic_open(gw *g, char *err, size_t errlen)
{
    const cfg *c = g->cfg;
    int rc;
    g->q = sale_store_queue(g->store);
    if (!g->q) {
        rc = mq_create(NULL, &g->q);
        if (rc < 0) {
            snprintf(err, errlen, "queue: (memory): %s", strerror(-rc));
            return rc;
        }
        g->own_q = 1;
    }
    mq_topic_config tc;
    mq_topic_config_init(&tc);
    tc.partitions = c->queue_partitions;
    tc.max_backlog_msgs = c->queue_max_backlog;
    tc.max_backlog_bytes = c->queue_max_backlog_bytes;
    tc.ack_timeout_ms = c->queue_ack_timeout_ms;
    tc.lease_timeout_ms = c->queue_lease_timeout_ms;
    tc.max_deliveries = c->queue_max_deliveries;
    tc.storage = MQ_STORAGE_MEMORY; /* a request is worthless after its deadline */
    rc = mq_topic_open(g->q, SK_REQUEST_TOPIC, &tc, &g->topic);
    if (rc < 0) {
        snprintf(err, errlen, "queue: cannot open %s: %s", SK_REQUEST_TOPIC, strerror(-rc));
        return rc;
    }
    return 0;
}

int gw_create(const cfg *c, gw **out, char *err, size_t errlen)
{
    gw *g = calloc(1, sizeof *g);
    int rc = -ENOMEM;
    if (!g)
        goto out_oom;
    g->cfg = c;
    g->event_park = strcmp(c->park, "event") == 0;
    pthread_mutex_init(&g->ctl_lock, NULL);
    g->tb_rate = c->tb_rate;
    g->tb_burst = c->tb_burst;
    if (gw__blocklist_replace(g, c->blocklist, c->nblocklist) < 0)
        goto out_oom;
    rc = identity_init(g, err, errlen);
    if (rc < 0)
        goto out_destroy;
    if (tb_init(&g->bucket, c->tb_rate, c->tb_burst) < 0) {
        snprintf(err, errlen, "token bucket: bad rate or burst");
        rc = -EINVAL;
        goto out_destroy;
    }
    if (!strcmp(c->tb_scope, "global") && c->tb_rate > 0) {
        tb_global_config tc = {.host = c->redis_host,
                               .port = c->redis_port,
                               .nodes = c->redis_cluster ? c->redis_nodes : NULL,
                               .timeout_ms = c->redis_timeout_ms,
                               .rate = c->tb_rate,
                               .burst = c->tb_burst,
                               .chunk = c->tb_chunk,
                               .gateway_id = g->id_str};
        rc = tb_global_start(&tc, &g->gbucket);
        if (rc < 0) {
            snprintf(err, errlen, "global token bucket: %s", strerror(-rc));
            goto out_destroy;
        }
    }
    rc = gw__admission_init(g, err, errlen);
    if (rc < 0)
        goto out_destroy;
    rc = -ENOMEM;
    if (gw_pending_create(256, &g->pending) < 0 ||
        gw_slab_create(sizeof(req_ctx) + CTX_POOL_BODY + 1, CTX_POOL_CACHED, &g->ctx_pool) < 0 ||
        gw_results_create(c->result_capacity, (uint64_t)c->result_ttl_s * 1000000000ULL,
                          &g->results) < 0 ||
        gw__items_init(g) < 0)
        goto out_oom;
    rc = store_open(g, err, errlen);
    if (rc == 0)
        rc = topic_open(g, err, errlen);
    if (rc < 0)
        goto out_destroy;
    *out = g;
    return 0;

out_oom:
    snprintf(err, errlen, "out of memory");
    rc = -ENOMEM;
out_destroy:
    gw_destroy(g);
    return rc;
}

/* libmicrohttpd needs to be told when the listen address is IPv6. */
static unsigned v6_flag(const struct sockaddr_storage *sa)
{
    return sa->ss_family == AF_INET6 ? MHD_USE_IPv6 : 0;
}

/* Event park: a few HTTP threads; parked requests are suspended
 * connections, not threads. Two ways to run them ([gateway] http_io):
 * poll (default): libmicrohttpd's own thread pool in poll mode. Not its
 *   epoll mode: after an epoll_wait that fills its 128 events it waits again
 *   with the full timeout before serving them, so a pool thread whose
 *   connections are exactly 128 (or 256, ...) waiting requests stalls until
 *   a new connection comes or 30 s pass (reproduced: one pool thread,
 *   wrk -c128, every time). poll walks every connection of a thread at each
 *   wake-up.
 * epoll: our own loops over daemons in external epoll mode (http_loop.h),
 *   which cannot stall that way and cost per request, not per open
 *   connection, but each suspended request costs two epoll_ctl and a read to
 *   EAGAIN. Measured: epoll is 8-15 % slower at 256 busy connections, and
 *   several times cheaper with thousands of connections that are mostly
 *   idle.
 * No SO_REUSEPORT either way (libmicrohttpd and http_loop set SO_REUSEADDR
 * only): a second gateway on a port in use fails. */
static int http_start_event(gw *g, struct sockaddr_storage *sa, char *err, size_t errlen)
{
    const cfg *c = g->cfg;
    int rc = gw_wheel_create(1000000ULL, &g->wheel);
    if (rc < 0) {
        snprintf(err, errlen, "timer wheel: %s", strerror(-rc));
        return rc;
    }
    unsigned pool = c->pool_threads ? c->pool_threads : (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
    if (pool < 1)
        pool = 1;
    if (!strcmp(c->http_io, "epoll")) {
        gw_http_cfg hc = {.addr = *sa, /* cfg_listen_addr: AF_INET or AF_INET6 */
                          .threads = pool,
                          .max_connections = (unsigned)c->max_connections,
                          .connection_timeout = 30,
                          .connection_memory = GW_CONN_MEMORY,
                          .handler = gw__on_request,
                          .handler_cls = g,
                          .completed = gw__on_completed,
                          .completed_cls = g,
                          .accept = gw_guard_accept_policy,
                          .accept_cls = g->guard,
                          .notify = gw_guard_notify,
                          .notify_cls = g->guard,
                          .uri_log = gw_frame_uri_log};
        rc = gw_http_create(&hc, &g->http);
        if (rc < 0) {
            snprintf(err, errlen, "cannot listen on %s:%u: %s", c->listen_host, c->listen_port,
                     strerror(-rc));
            return rc;
        }
        g->port = gw_http_port(g->http);
        return 0;
    }
    g->mhd = MHD_start_daemon(
        MHD_USE_POLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG | v6_flag(sa),
        0, gw_guard_accept_policy, g->guard, gw__on_request, g, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)sa, MHD_OPTION_THREAD_POOL_SIZE, pool, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)c->max_connections, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)GW_CONN_MEMORY, MHD_OPTION_LISTEN_BACKLOG_SIZE,
        (unsigned)4096, MHD_OPTION_NOTIFY_COMPLETED, gw__on_completed, g,
        MHD_OPTION_NOTIFY_CONNECTION, gw_guard_notify, g->guard, MHD_OPTION_URI_LOG_CALLBACK,
        gw_frame_uri_log, NULL, MHD_OPTION_END);
    return 0;
}

/* Thread park: a thread per connection, blocked while its request waits. */
static void http_start_threads(gw *g, struct sockaddr_storage *sa)
{
    const cfg *c = g->cfg;
    g->mhd = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
            MHD_USE_ITC | MHD_USE_ERROR_LOG | v6_flag(sa),
        0, gw_guard_accept_policy, g->guard, gw__on_request, g, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)sa, MHD_OPTION_CONNECTION_LIMIT, (unsigned)c->max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)GW_CONN_MEMORY, MHD_OPTION_THREAD_STACK_SIZE, (size_t)(256 * 1024),
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)4096, MHD_OPTION_NOTIFY_COMPLETED,
        gw__on_completed, g, MHD_OPTION_NOTIFY_CONNECTION, gw_guard_notify, g->guard,
        MHD_OPTION_URI_LOG_CALLBACK, gw_frame_uri_log, NULL, MHD_OPTION_END);
}

/* The connection guard, then the daemons of the park mode; sets g->port. */
static int http_start(gw *g, char *err, size_t errlen)
{
    const cfg *c = g->cfg;
    struct sockaddr_storage sa; /* IPv4, IPv6, or a name resolved now */
    int rc = cfg_listen_addr(c, &sa, err, errlen);
    if (rc < 0)
        return rc;
    gw_guard_cfg gc = {.request_timeout_ms = c->request_timeout_ms,
                       .max_per_ip = c->max_connections_per_ip,
                       .max_connections = c->max_connections};
    rc = gw_guard_create(&gc, &g->guard);
    if (rc < 0) {
        snprintf(err, errlen, "connection guard: %s", strerror(-rc));
        return rc;
    }
    if (g->event_park) {
        rc = http_start_event(g, &sa, err, errlen);
        if (rc < 0 || g->http)
            return rc;
    } else {
        http_start_threads(g, &sa);
    }
    if (!g->mhd) {
        snprintf(err, errlen, "cannot listen on %s:%u", c->listen_host, c->listen_port);
        return -EADDRINUSE;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(g->mhd, MHD_DAEMON_INFO_BIND_PORT);
    g->port = di ? di->port : c->listen_port;
    return 0;
}

int gw_start(gw *g, char *err, size_t errlen)
{
    int rc;
    if (g->cfg->worker_embedded) {
        rc = gw__workers_start(g, err, errlen);
        if (rc < 0)
            return rc;
    }
    if (g->cfg->rpc_listen[0]) {
        rc = gw__rpc_start(g, err, errlen);
        if (rc < 0)
            return rc;
    }
    if (g->cfg->admin_host[0]) {
        rc = gw__admin_start(g, err, errlen);
        if (rc < 0)
            return rc;
    }
    rc = gw__opening_start(g, err, errlen);
    if (rc < 0)
        return rc;
    return http_start(g, err, errlen);
}

int gw_admin_port(const gw *g)
{
    return g->admin ? g->admin_port : -ENOTCONN;
}

uint16_t gw_port(const gw *g)
{
    return g->port;
}

int gw_rpc_port(const gw *g)
{
    return g->rpc ? gw_rpcsvc_port(g->rpc) : -ENOTCONN;
}

const char *gw_id(const gw *g)
{
    return g->id_str;
}

static void sleep_5ms(void)
{
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

#define QUIET_MS 100 /* http_drain: nothing in flight this long, then the daemons stop */

/* Stop accepting, give parked requests grace_ms to be answered, then stop
 * the daemons. */
static void http_drain(gw *g, uint32_t grace_ms)
{
    if (g->http) {
        gw_http_quiesce(g->http);
    } else {
        MHD_socket s = MHD_quiesce_daemon(g->mhd);
        if (s != MHD_INVALID_SOCKET)
            close(s);
    }
    g->parked_at_stop = gw_pending_count(g->pending);
    /* parked requests get their outcome or time out; wait until every
     * answer has been sent (on_completed), not only decided, and nothing
     * has been in flight for a quiet spell (QUIET_MS, at most half the
     * grace): a connection the daemon accepted just before the listener
     * closed may not have reached the purchase handler yet, and its request
     * is then served like the others, not cut off. (Connections still in
     * the kernel's accept queue are reset with the listening socket.) */
    uint64_t now = gw_mono_ns(), until = now + (uint64_t)grace_ms * 1000000ULL;
    uint64_t quiet_since = now,
             quiet = (uint64_t)(grace_ms / 2 < QUIET_MS ? grace_ms / 2 : QUIET_MS);
    while (now < until) {
        if (gw_pending_count(g->pending) > 0 || atomic_load(&g->inflight) > 0)
            quiet_since = now;
        else if (now - quiet_since >= quiet * 1000000ULL)
            break;
        sleep_5ms();
        now = gw_mono_ns();
    }
    atomic_store(&g->grace_over, 1);
    if (g->wheel) /* grace is over: time out whatever still waits (resumes it) */
        gw_wheel_expire_all(g->wheel);
    for (int i = 0; i < 200 && atomic_load(&g->inflight) > 0; i++)
        sleep_5ms();
    gw_http_destroy(g->http);
    g->http = NULL;
    if (g->mhd)
        MHD_stop_daemon(g->mhd);
    g->mhd = NULL;
}

void gw_drain_begin(gw *g)
{
    atomic_store(&g->draining, 1);
}

void gw_summary(gw *g, char *buf, size_t len)
{
    uint64_t total = 0;
    for (int a = 0; a < GW_A_COUNT; a++)
        total += atomic_load_explicit(&g->metrics.answers[a], memory_order_relaxed);
    int n = snprintf(buf, len, "answered %llu purchase%s (", (unsigned long long)total,
                     total == 1 ? "" : "s");
    const char *sep = "";
    for (int a = 0; a < GW_A_COUNT && n > 0 && (size_t)n < len; a++) {
        uint64_t v = atomic_load_explicit(&g->metrics.answers[a], memory_order_relaxed);
        if (!v)
            continue;
        n += snprintf(buf + n, len - (size_t)n, "%s%s %llu", sep, gw_answer_name((enum gw_answer)a),
                      (unsigned long long)v);
        sep = ", ";
    }
    if (n > 0 && (size_t)n < len)
        snprintf(buf + n, len - (size_t)n, "), %llu parked when the listener closed",
                 (unsigned long long)g->parked_at_stop);
}

void gw_stop(gw *g, uint32_t grace_ms)
{
    atomic_store(&g->stopping, 1);
    gw__admin_stop(g); /* no change while the sale stops */
    if (g->mhd || g->http)
        http_drain(g, grace_ms);
    gw_guard_destroy(g->guard); /* after the daemons: their last closes free its state */
    g->guard = NULL;
    if (g->registry) {
        sk_registry_destroy(g->registry); /* DEL: workers drop us at their next look */
        g->registry = NULL;
    }
    if (g->rpc) {
        gw_rpcsvc_destroy(g->rpc);
        g->rpc = NULL;
    }
    if (g->worker) {
        sk_worker_stop(g->worker);
        g->worker = NULL;
    }
    sale_reaper_stop(g->reaper);
    g->reaper = NULL;
    tb_global_stop(g->gbucket);
    g->gbucket = NULL;
    if (g->wheel) {
        gw_wheel_destroy(g->wheel);
        g->wheel = NULL;
    }
    /* after the wheel, whose thread hands it closed windows; the daemons are
     * gone, so nothing is held any more */
    gw__opening_stop(g);
}

void gw_destroy(gw *g)
{
    if (!g)
        return;
    gw_stop(g, 0);
    if (g->q && g->own_q)
        mq_destroy(g->q);
    sale_store_destroy(g->store); /* with its queue, when q was the store's */
    gw_results_destroy(g->results);
    gw_pending_destroy(g->pending);
    gw_slab_destroy(g->ctx_pool);
    gw__admission_release(g);
    free(g->item_index);
    free(g->windows);
    if (g->items)
        gw__opening_release(g);
    free(g->items);
    for (size_t i = 0; i < g->nblocklist; i++)
        free(g->blocklist[i]);
    free(g->blocklist);
    pthread_mutex_destroy(&g->ctl_lock);
    free(g);
}
