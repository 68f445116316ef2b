/*
 * metrics_http.c - GET /metrics: the counters of metrics.h with this
 * moment's gauges (queue depth, parked requests, live workers, stock and
 * orders per item, RPC and connection refusals) and the process, in
 * Prometheus text format. The text grows with the items: a sale of a
 * thousand items is one whole scrape, never a cut-off one.
 */
#include <stdlib.h>
#include <time.h>

#include "framing.h"
#include "internal.h"

enum MHD_Result gw__get_metrics(gw *g, struct MHD_Connection *conn)
{
    size_t n1 = g->nitems + 1;
    const char **ids = calloc(n1, sizeof *ids);
    int64_t *v = calloc(6 * n1, sizeof *v); /* left, reserved, paid, cancelled, held, buyers */
    int64_t *left = v, *reserved = v + n1, *paid = v + 2 * n1, *cancelled = v + 3 * n1,
            *held = v + 4 * n1, *buyers = v + 5 * n1;
    sk_text t = {0};
    enum MHD_Result ret = MHD_NO;
    int counted = 0; /* the store counts orders here */
    int answered = 0;
    if (!ids || !v || sk_text_init(&t, 16384 + g->nitems * 512) < 0)
        goto out_free;
    for (size_t i = 0; i < g->nitems; i++) {
        sale_item_stats st;
        ids[i] = g->items[i].c->id;
        left[i] = gw__item_left(g, &g->items[i]);
        counted = sale_store_stats(g->store, i, &st) == 0;
        if (counted) {
            reserved[i] = st.reserved;
            paid[i] = st.paid;
            cancelled[i] = st.cancelled;
            held[i] = st.reserved - st.paid - st.cancelled;
            buyers[i] = st.buyers;
        }
    }
    gw_slab_stats ps;
    gw_slab_stats_get(g->ctx_pool, &ps);
    tb_global_stats tbs;
    if (g->gbucket)
        tb_global_get_stats(g->gbucket, &tbs);
    gw_rpcsvc_stats rs;
    gw_rpcsvc_get_stats(g->rpc, &rs);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    gw_gauges ga = {.wall_ns = (uint64_t)now.tv_sec * 1000000000ULL + (uint64_t)now.tv_nsec,
                    .queue_depth = mq_topic_backlog(g->topic),
                    .ctx_allocs = ps.allocs,
                    .ctx_reused = ps.reused,
                    .parked = gw_pending_count(g->pending),
                    .workers_live = mq_group_live(g->topic, SK_GROUP),
                    .nitems = g->nitems,
                    .item_ids = ids,
                    .stock_left = left,
                    .reserved = counted ? reserved : NULL,
                    .paid = paid,
                    .cancelled = cancelled,
                    .held = held,
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
    gw_metrics_render(&g->metrics, &ga, &t);
    if (sk_text_failed(&t)) /* a scrape cut short would be refused whole: say so */
        goto out_free;
    struct MHD_Response *r = MHD_create_response_from_buffer(t.len, t.buf, MHD_RESPMEM_MUST_FREE);
    if (!r)
        goto out_free;
    t.buf = NULL; /* the response frees it */
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4");
    if (gw_frame_must_close(conn))
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    ret = MHD_queue_response(conn, 200, r);
    MHD_destroy_response(r);
    answered = 1;
out_free:
    sk_text_release(&t);
    free(ids);
    free(v);
    if (!answered) /* out of memory: no scrape rather than a cut-off one */
        return gw__reply(conn, 503, J("{\"result\":\"overloaded\"}"), NULL, "Retry-After", "1");
    return ret;
}
