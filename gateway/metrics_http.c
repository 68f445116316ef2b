/*
 * metrics_http.c - GET /metrics: the counters of metrics.h with this
 * moment's gauges (queue depth, parked requests, live workers, stock and
 * sales per item, RPC and connection refusals), in Prometheus text format.
 */
#include <stdlib.h>

#include "framing.h"
#include "internal.h"

enum MHD_Result gw__get_metrics(gw *g, struct MHD_Connection *conn)
{
    size_t cap = 16384 + g->nitems * 128;
    char *buf = malloc(cap);
    const char **ids = calloc(g->nitems + 1, sizeof *ids);
    int64_t *left = calloc(3 * (g->nitems + 1), sizeof *left);
    int64_t *sold = left + g->nitems + 1, *buyers = sold + g->nitems + 1;
    enum MHD_Result ret = MHD_NO;
    int counted = 0; /* the store counts sales here */
    if (!buf || !ids || !left)
        goto out_free;
    for (size_t i = 0; i < g->nitems; i++) {
        sale_item_stats st;
        ids[i] = g->items[i].c->id;
        left[i] = gw__item_left(g, &g->items[i]);
        counted = sale_store_stats(g->store, i, &st) == 0;
        sold[i] = counted ? st.sold : 0;
        buyers[i] = counted ? st.buyers : 0;
    }
    gw_slab_stats ps;
    gw_slab_stats_get(g->ctx_pool, &ps);
    tb_global_stats tbs;
    if (g->gbucket)
        tb_global_get_stats(g->gbucket, &tbs);
    gw_rpcsvc_stats rs;
    gw_rpcsvc_get_stats(g->rpc, &rs);
    gw_gauges ga = {.queue_depth = mq_topic_backlog(g->topic),
                    .ctx_allocs = ps.allocs,
                    .ctx_reused = ps.reused,
                    .parked = gw_pending_count(g->pending),
                    .workers_live = mq_group_live(g->topic, SK_GROUP),
                    .nitems = g->nitems,
                    .item_ids = ids,
                    .stock_left = left,
                    .sold = counted ? sold : NULL,
                    .buyers = buyers,
                    .rpc_auth_failures = rs.auth_failures,
                    .rpc_mac_failures = rs.mac_failures,
                    .rpc_handshake_timeouts = rs.handshake_timeouts,
                    .rpc_denied = rs.denied,
                    .rpc_tls_failures = rs.tls_failures,
                    .http_request_timeouts = gw_guard_timeouts(g->guard),
                    .http_per_ip_refused = gw_guard_refused(g->guard),
                    .store_replica_ack_timeouts = sale_store_replica_ack_timeouts(g->store),
                    .tb_global = g->gbucket ? &tbs : NULL};
    size_t n = gw_metrics_render(&g->metrics, &ga, buf, cap);
    struct MHD_Response *r = MHD_create_response_from_buffer(n, buf, MHD_RESPMEM_MUST_FREE);
    if (!r)
        goto out_free;
    buf = NULL;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4");
    gw__cors_headers(r);
    if (gw_frame_must_close(conn))
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    ret = MHD_queue_response(conn, 200, r);
    MHD_destroy_response(r);
out_free:
    free(buf);
    free(ids);
    free(left);
    return ret;
}
