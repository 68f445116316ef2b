/*
 * link.c - where decisions come back in, and what produces them.
 *
 * Outcomes and stock figures arrive from the embedded worker threads
 * (sk_link) or from worker processes over RPC (gw_rpcsvc_hooks): both call
 * on_outcome and on_stock. on_outcome records the outcome in the result
 * store and completes the waiter purchase.c parked. gw__workers_start runs
 * the embedded workers and the reaper; gw__rpc_start serves the request
 * topic to worker processes and announces this gateway in the registry.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

static int on_outcome(void *arg, const sk_outcome *o)
{
    gw *g = arg;
    if (memcmp(o->gateway_id, g->id, 16) != 0)
        return -EXDEV; /* not ours: routing between gateways is the RPC layer's job */
    if (o->result >= SK_RESULT_COUNT || o->result == SK_UNAVAILABLE)
        return -EINVAL; /* "not decided" is no outcome: the request stays parked */
    atomic_fetch_add_explicit(&g->metrics.outcomes, 1, memory_order_relaxed);
    gw_results_put(g->results, o, gw_mono_ns());
    if (gw_pending_complete(g->pending, o) == -ENOENT)
        atomic_fetch_add_explicit(&g->metrics.late_outcomes, 1, memory_order_relaxed);
    return 0;
}

static void on_stock(void *arg, const char *item_id, int64_t left)
{
    gw *g = arg;
    gw_item *it = gw__item_find(g, item_id);
    if (it)
        gw__item_report(it, left);
}

void gw__on_store_stock(void *arg, size_t i, int64_t left)
{
    gw *g = arg;
    gw__item_report(&g->items[i], left);
}

int gw__workers_start(gw *g, char *err, size_t errlen)
{
    const cfg *c = g->cfg;
    sk_worker_config wc = {.threads = cfg_worker_threads(c),
                           .batch = c->worker_batch,
                           .linger_us = c->worker_linger_us,
                           .name = g->id_str,
                           .blocklist = (const char *const *)c->blocklist,
                           .nblocklist = c->nblocklist,
                           .windows = g->windows,
                           .nwindows = g->nitems};
    sk_link link = {.arg = g, .deliver = on_outcome, .stock = on_stock};
    g->source = sk_source_mq(g->topic);
    g->backend = sale_store_backend(g->store);
    int rc = sk_worker_start(&wc, &g->source, &g->backend, &link, &g->worker);
    if (rc < 0) {
        snprintf(err, errlen, "worker: %s", strerror(-rc));
        return rc;
    }
    /* who decides purchases cancels their unpaid orders, and keeps the
     * stock view and sold-out flags in step with the store */
    sale_reaper_config rc_cfg = {.period_ms = 200, .stock = gw__on_store_stock, .arg = g};
    rc = sale_reaper_start(g->store, &rc_cfg, &g->reaper);
    if (rc < 0) {
        snprintf(err, errlen, "reaper: %s", strerror(-rc));
        return rc;
    }
    return 0;
}

/* Workers find gateways in the Redis of [redis], which inventory = redis
 * configures. The address announced is the bound one: port 0 in the config
 * means the real one. */
static int registry_start(gw *g, char *err, size_t errlen)
{
    const cfg *c = g->cfg;
    char addr[SK_REGISTRY_ADDR_MAX + 1];
    const char *colon = strrchr(c->rpc_listen, ':');
    if (!strncmp(c->rpc_listen, "tcp:", 4) && gw_rpcsvc_port(g->rpc) > 0)
        snprintf(addr, sizeof addr, "%.*s:%d", (int)(colon - c->rpc_listen), c->rpc_listen,
                 gw_rpcsvc_port(g->rpc));
    else
        snprintf(addr, sizeof addr, "%s", c->rpc_listen);
    int rc =
        sk_registry_create(c->redis_host, c->redis_port, c->redis_cluster ? c->redis_nodes : NULL,
                           c->redis_timeout_ms, &g->registry);
    if (rc == 0)
        rc = sk_registry_register(g->registry, g->id_str, addr, c->rpc_registry_ttl_ms);
    if (rc < 0) {
        snprintf(err, errlen, "registry: %s", strerror(-rc));
        return rc;
    }
    return 0;
}

int gw__rpc_start(gw *g, char *err, size_t errlen)
{
    const cfg *c = g->cfg;
    gw_rpcsvc_hooks hooks = {
        .arg = g, .gateway_id = g->id, .result = on_outcome, .stock = on_stock};
    gw_rpcsvc_tls tls = {.cert = c->rpc_tls_cert, .key = c->rpc_tls_key, .ca = c->rpc_tls_ca};
    int rc = gw_rpcsvc_create(c->rpc_listen, c->rpc_secret, c->rpc_handshake_timeout_ms, &tls, g->q,
                              &hooks, &g->rpc);
    if (rc == 0)
        rc = gw_rpcsvc_start(g->rpc);
    if (rc < 0) {
        snprintf(err, errlen, "rpc: cannot serve on %s: %s", c->rpc_listen, strerror(-rc));
        return rc;
    }
    /* the registry lives in the Redis of [redis]: host and port, or the
     * cluster of nodes */
    if (!strcmp(c->worker_inventory, "redis"))
        return registry_start(g, err, errlen);
    return 0;
}
