/*
 * stats.c - GET /stats: the numbers the dashboard draws, as one JSON object
 * (docs/openapi.yaml, schema Stats; each value exact, though, as in
 * /metrics, not all read at one instant). Counters are the
 * same as /metrics (answers by result, the latency histogram, cumulative
 * since start), so a reader computes rates and recent quantiles from two
 * reads; gauges are taken now: parked requests, queue depth, live workers,
 * and stock left and sold per item.
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define RELAXED(x) ((json_int_t)atomic_load_explicit(&(x), memory_order_relaxed))

static json_t *answers_json(gw_metrics *m)
{
    json_t *a = json_object();
    for (int i = 0; a && i < GW_A_COUNT; i++)
        json_object_set_new(a, gw_answer_name((enum gw_answer)i),
                            json_integer(RELAXED(m->answers[i])));
    return a;
}

/* [[le, cumulative count], ...], le null for +Inf */
static json_t *latency_json(gw_metrics *m)
{
    json_t *b = json_array();
    json_int_t cum = 0;
    for (size_t i = 0; b && i < GW_LATENCY_BUCKETS; i++) {
        double le = gw_metrics_bucket_le(i);
        cum += RELAXED(m->latency_buckets[i]);
        json_array_append_new(b, json_pack("[o,I]", isinf(le) ? json_null() : json_real(le), cum));
    }
    return json_pack("{s:I,s:f,s:o}", "count", RELAXED(m->latency_count), "sum_seconds",
                     (double)RELAXED(m->latency_sum_us) / 1e6, "buckets", b);
}

static json_t *items_json(gw *g, int64_t now)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < g->nitems; i++) {
        const gw_item *it = &g->items[i];
        sale_item_stats st;
        int counted = sale_store_stats(g->store, i, &st) == 0;
        int64_t left = gw__item_left(g, it);
        /* sold: the store's count where this process keeps it, else what
         * the stock says (units not left) */
        json_array_append_new(
            arr, json_pack("{s:s,s:I,s:I,s:I,s:o,s:s}", "item_id", it->c->id, "stock_total",
                           (json_int_t)it->c->stock, "stock_left", (json_int_t)left, "sold",
                           (json_int_t)(counted ? st.sold : it->c->stock - left), "buyers",
                           counted ? json_integer(st.buyers) : json_null(), "status",
                           gw__item_status(it, left, now)));
    }
    return arr;
}

enum MHD_Result gw__get_stats(gw *g, struct MHD_Connection *conn)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    json_t *o =
        json_pack("{s:I,s:s,s:s,s:o,s:o,s:I,s:I,s:I,s:o}", "time_ms",
                  (json_int_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, "gateway_id", g->id_str,
                  "version", SECKILL_VERSION, "answers", answers_json(&g->metrics), "latency",
                  latency_json(&g->metrics), "parked", (json_int_t)gw_pending_count(g->pending),
                  "queue_depth", (json_int_t)mq_topic_backlog(g->topic), "workers_live",
                  (json_int_t)mq_group_live(g->topic, SK_GROUP), "items", items_json(g, ts.tv_sec));
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!body)
        return MHD_NO;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    return gw__queue(conn, 200, r);
}
