#include "metrics.h"
#include "token_bucket_global.h"

#include <math.h>

static const char *const answer_names[GW_A_COUNT] = {
    "success",      "sold_out",    "already_purchased", "not_started",
    "ended",        "blocked",     "rate_limited",      "overloaded",
    "timeout",      "bad_request", "unknown_item",      "payload_too_large",
    "unsupported_media_type",      "method_not_allowed", "bad_token", "busy",
};

static const char *const overload_names[GW_OV_COUNT] = {
    "queue_full", "no_worker", "store_unavailable", "internal", "stopping"};

/* Upper bounds in nanoseconds; the last bucket is +Inf. A sold-out or
 * rate-limited answer takes a few microseconds: the lowest buckets measure
 * it rather than report a floor. */
static const uint64_t bounds_ns[GW_LATENCY_BUCKETS - 1] = {
    1000,      2500,      5000,      10000,      25000,      50000,      100000,
    250000,    500000,    1000000,   2500000,    5000000,    10000000,   25000000,
    50000000,  100000000, 250000000, 500000000,  1000000000, 2500000000};
static const char *const bounds_s[GW_LATENCY_BUCKETS] = {
    "1e-06", "2.5e-06", "5e-06", "1e-05", "2.5e-05", "5e-05", "0.0001", "0.00025", "0.0005",
    "0.001", "0.0025",  "0.005", "0.01",  "0.025",   "0.05",  "0.1",    "0.25",    "0.5",
    "1",     "2.5",     "+Inf"};

const char *gw_answer_name(enum gw_answer a)
{
    return (unsigned)a < GW_A_COUNT ? answer_names[a] : "error";
}

void gw_metrics_answer(gw_metrics *m, enum gw_answer a, uint64_t latency_ns)
{
    size_t b = 0;
    while (b < GW_LATENCY_BUCKETS - 1 && latency_ns > bounds_ns[b])
        b++;
    atomic_fetch_add_explicit(&m->answers[a], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency_buckets[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency_count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency_sum_ns, latency_ns, memory_order_relaxed);
}

const char *gw_overload_name(enum gw_overload why)
{
    return (unsigned)why < GW_OV_COUNT ? overload_names[why] : "internal";
}

void gw_metrics_overloaded(gw_metrics *m, enum gw_overload why)
{
    if ((unsigned)why >= GW_OV_COUNT)
        why = GW_OV_INTERNAL;
    atomic_fetch_add_explicit(&m->overloaded[why], 1, memory_order_relaxed);
}

void gw_metrics_lateness(gw_metrics *m, uint64_t late_ns)
{
    atomic_fetch_add_explicit(&m->lateness_count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->lateness_sum_ns, late_ns, memory_order_relaxed);
    uint64_t cur = atomic_load_explicit(&m->lateness_max_ns, memory_order_relaxed);
    while (late_ns > cur && !atomic_compare_exchange_weak_explicit(
                                &m->lateness_max_ns, &cur, late_ns, memory_order_relaxed,
                                memory_order_relaxed))
        ;
}

void gw_metrics_framing(gw_metrics *m, enum gw_frame f)
{
    if ((unsigned)f < GW_FRAME_COUNT)
        atomic_fetch_add_explicit(&m->framing_refused[f], 1, memory_order_relaxed);
}

#define LOAD(x) ((unsigned long long)atomic_load_explicit(&(x), memory_order_relaxed))

/* One gauge or counter per item, HELP and TYPE first. */
static void per_item(sk_text *t, const gw_gauges *g, const char *name, const char *type,
                     const char *help, const int64_t *v)
{
    sk_text_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    for (size_t i = 0; i < g->nitems; i++)
        sk_text_printf(t, "%s{item=\"%s\"} %lld\n", name, g->item_ids[i], (long long)v[i]);
}

/* The exposition, one metric family after another in the order a scrape
 * shows them: long, but a flat list of families, each a few lines. */
void gw_metrics_render(gw_metrics *m, const gw_gauges *g, sk_text *o)
{
    /* first, so a sampler whose scrapes overlap or wait in a busy gateway
     * knows when these counters were read (as node_time_seconds) */
    sk_text_printf(o, "# HELP seckill_time_seconds The wall clock when this scrape was rendered.\n"
                      "# TYPE seckill_time_seconds gauge\nseckill_time_seconds %llu.%06llu\n",
                   (unsigned long long)(g->wall_ns / 1000000000ULL),
                   (unsigned long long)(g->wall_ns % 1000000000ULL / 1000));
    sk_text_printf(o, "# HELP seckill_requests_total Answers to POST /seckill by result.\n"
            "# TYPE seckill_requests_total counter\n");
    for (int a = 0; a < GW_A_COUNT; a++)
        sk_text_printf(o, "seckill_requests_total{result=\"%s\"} %llu\n", answer_names[a],
            LOAD(m->answers[a]));
    sk_text_printf(o, "# HELP seckill_request_duration_seconds Time from request to answer, POST /seckill.\n"
            "# TYPE seckill_request_duration_seconds histogram\n");
    unsigned long long cum = 0;
    for (int b = 0; b < GW_LATENCY_BUCKETS; b++) {
        cum += LOAD(m->latency_buckets[b]);
        sk_text_printf(o, "seckill_request_duration_seconds_bucket{le=\"%s\"} %llu\n", bounds_s[b], cum);
    }
    sk_text_printf(o, "seckill_request_duration_seconds_sum %.9f\n", (double)LOAD(m->latency_sum_ns) / 1e9);
    sk_text_printf(o, "seckill_request_duration_seconds_count %llu\n", LOAD(m->latency_count));
    sk_text_printf(o, "# HELP seckill_token_bucket_rejections_total Requests refused by the token bucket.\n"
            "# TYPE seckill_token_bucket_rejections_total counter\n"
            "seckill_token_bucket_rejections_total %llu\n", LOAD(m->tb_rejections));
    sk_text_printf(
        o,
        "# HELP seckill_open_window_held_total Purchases held by the fair opening.\n"
        "# TYPE seckill_open_window_held_total counter\nseckill_open_window_held_total %llu\n"
        "# HELP seckill_open_window_flushes_total Opening windows closed, each releasing "
        "its held purchases in a random order.\n"
        "# TYPE seckill_open_window_flushes_total counter\n"
        "seckill_open_window_flushes_total %llu\n",
        LOAD(m->open_held), LOAD(m->open_flushes));
    sk_text_printf(o, "# HELP seckill_queue_full_total Produces refused because the request topic was full.\n"
            "# TYPE seckill_queue_full_total counter\nseckill_queue_full_total %llu\n",
        LOAD(m->queue_full));
    sk_text_printf(o, "# HELP seckill_overloaded_total Answers 503 overloaded (nothing bought), "
                      "by reason.\n# TYPE seckill_overloaded_total counter\n");
    for (int r = 0; r < GW_OV_COUNT; r++)
        sk_text_printf(o, "seckill_overloaded_total{reason=\"%s\"} %llu\n", overload_names[r],
                       LOAD(m->overloaded[r]));
    sk_text_printf(o, "# HELP seckill_admin_changes_total Changes made through the admin API, "
                      "by what they changed.\n# TYPE seckill_admin_changes_total counter\n");
    for (int w = 0; w < GW_ADM_COUNT; w++)
        sk_text_printf(o, "seckill_admin_changes_total{what=\"%s\"} %llu\n",
                       gw_admin_what_name((enum gw_admin_what)w), LOAD(m->admin_changes[w]));
    sk_text_printf(o, "# HELP seckill_admin_unauthorized_total Admin API requests refused for "
                      "a missing or wrong token.\n# TYPE seckill_admin_unauthorized_total counter\n"
                      "seckill_admin_unauthorized_total %llu\n",
                   LOAD(m->admin_unauthorized));
    sk_text_printf(o, "# HELP seckill_outcomes_total Outcomes received from workers.\n"
            "# TYPE seckill_outcomes_total counter\nseckill_outcomes_total %llu\n",
        LOAD(m->outcomes));
    sk_text_printf(o, "# HELP seckill_late_outcomes_total Outcomes that arrived after their wait ended.\n"
            "# TYPE seckill_late_outcomes_total counter\nseckill_late_outcomes_total %llu\n",
        LOAD(m->late_outcomes));
    sk_text_printf(o, "# HELP seckill_timeout_lateness_seconds How long after its deadline a timed-out "
            "request was woken.\n# TYPE seckill_timeout_lateness_seconds summary\n"
            "seckill_timeout_lateness_seconds_sum %.6f\nseckill_timeout_lateness_seconds_count %llu\n"
            "# HELP seckill_timeout_lateness_max_seconds The latest timeout so far.\n"
            "# TYPE seckill_timeout_lateness_max_seconds gauge\n"
            "seckill_timeout_lateness_max_seconds %.6f\n",
        (double)LOAD(m->lateness_sum_ns) / 1e9, LOAD(m->lateness_count),
        (double)LOAD(m->lateness_max_ns) / 1e9);
    sk_text_printf(o, "# HELP seckill_queue_depth Request messages not yet acknowledged by workers.\n"
            "# TYPE seckill_queue_depth gauge\nseckill_queue_depth %llu\n",
        (unsigned long long)g->queue_depth);
    sk_text_printf(o, "# HELP seckill_parked_requests HTTP requests waiting for an outcome.\n"
            "# TYPE seckill_parked_requests gauge\nseckill_parked_requests %llu\n",
        (unsigned long long)g->parked);
    sk_text_printf(o, "# HELP seckill_workers_live Consumers of the request topic seen within the lease.\n"
            "# TYPE seckill_workers_live gauge\nseckill_workers_live %llu\n",
        (unsigned long long)g->workers_live);
    sk_text_printf(o, "# HELP seckill_request_contexts_total Contexts of POST /seckill requests taken.\n"
            "# TYPE seckill_request_contexts_total counter\nseckill_request_contexts_total %llu\n"
            "# HELP seckill_request_contexts_reused_total Of them, reused from the pool "
            "(no malloc).\n# TYPE seckill_request_contexts_reused_total counter\n"
            "seckill_request_contexts_reused_total %llu\n",
        (unsigned long long)g->ctx_allocs, (unsigned long long)g->ctx_reused);
    sk_text_printf(o, "# HELP seckill_rpc_auth_failures_total Failed rpc handshakes: wrong proof of the "
            "secret, or frames out of order.\n# TYPE seckill_rpc_auth_failures_total counter\n"
            "seckill_rpc_auth_failures_total %llu\n"
            "# HELP seckill_rpc_mac_failures_total rpc connections closed for a frame whose MAC "
            "failed.\n# TYPE seckill_rpc_mac_failures_total counter\n"
            "seckill_rpc_mac_failures_total %llu\n"
            "# HELP seckill_rpc_handshake_timeouts_total rpc connections closed for not "
            "finishing the handshake in time.\n"
            "# TYPE seckill_rpc_handshake_timeouts_total counter\n"
            "seckill_rpc_handshake_timeouts_total %llu\n"
            "# HELP seckill_rpc_denied_total rpc frames refused for the peer's role.\n"
            "# TYPE seckill_rpc_denied_total counter\nseckill_rpc_denied_total %llu\n",
        (unsigned long long)g->rpc_auth_failures, (unsigned long long)g->rpc_mac_failures,
        (unsigned long long)g->rpc_handshake_timeouts, (unsigned long long)g->rpc_denied);
    sk_text_printf(o,
        "# HELP seckill_rpc_tls_failures_total Failed TLS handshakes on the rpc listener: "
        "a peer without TLS, or a certificate refused.\n"
        "# TYPE seckill_rpc_tls_failures_total counter\nseckill_rpc_tls_failures_total %llu\n",
        (unsigned long long)g->rpc_tls_failures);
    sk_text_printf(o, "# HELP seckill_http_request_timeouts_total HTTP connections closed because their "
            "request was not in within request_timeout_ms.\n"
            "# TYPE seckill_http_request_timeouts_total counter\n"
            "seckill_http_request_timeouts_total %llu\n"
            "# HELP seckill_http_per_ip_refused_total HTTP connections refused because their "
            "address was at max_connections_per_ip.\n"
            "# TYPE seckill_http_per_ip_refused_total counter\n"
            "seckill_http_per_ip_refused_total %llu\n",
        (unsigned long long)g->http_request_timeouts, (unsigned long long)g->http_per_ip_refused);
    if (g->tb_global) {
        const struct tb_global_stats *t = g->tb_global;
        sk_text_printf(o, "# HELP seckill_token_bucket_global_fetches_total Calls to the global bucket in "
                "Redis that answered.\n"
                "# TYPE seckill_token_bucket_global_fetches_total counter\n"
                "seckill_token_bucket_global_fetches_total %llu\n"
                "# HELP seckill_token_bucket_global_granted_total Tokens the global bucket "
                "granted this gateway.\n"
                "# TYPE seckill_token_bucket_global_granted_total counter\n"
                "seckill_token_bucket_global_granted_total %llu\n"
                "# HELP seckill_token_bucket_global_gateways Gateways drawing from the global "
                "bucket, as last counted in Redis.\n"
                "# TYPE seckill_token_bucket_global_gateways gauge\n"
                "seckill_token_bucket_global_gateways %u\n"
                "# HELP seckill_token_bucket_fallback 1 while Redis is unreachable and the "
                "gateway admits at rate / gateways on its own.\n"
                "# TYPE seckill_token_bucket_fallback gauge\n"
                "seckill_token_bucket_fallback %d\n"
                "# HELP seckill_token_bucket_fallbacks_total Times the gateway fell back to its "
                "own share of the rate.\n"
                "# TYPE seckill_token_bucket_fallbacks_total counter\n"
                "seckill_token_bucket_fallbacks_total %llu\n"
                "# HELP seckill_token_bucket_fallback_takes_total Requests admitted by the "
                "fallback share.\n"
                "# TYPE seckill_token_bucket_fallback_takes_total counter\n"
                "seckill_token_bucket_fallback_takes_total %llu\n",
            (unsigned long long)t->fetches, (unsigned long long)t->granted, t->gateways,
            t->fallback, (unsigned long long)t->fallbacks, (unsigned long long)t->fallback_takes);
    }
    sk_text_printf(o, "# HELP seckill_store_replica_ack_timeouts_total Decided batches answered nothing "
            "because fewer than min_replicas_ack Redis replicas acknowledged them in time "
            "(decided again; 504 at the deadline).\n"
            "# TYPE seckill_store_replica_ack_timeouts_total counter\n"
            "seckill_store_replica_ack_timeouts_total %llu\n",
        (unsigned long long)g->store_replica_ack_timeouts);
    sk_text_printf(o, "# HELP seckill_http_framing_refused_total HTTP requests refused for their framing "
            "(length, Transfer-Encoding, request-target or header size), then closed.\n"
            "# TYPE seckill_http_framing_refused_total counter\n");
    for (int f = 0; f < GW_FRAME_COUNT; f++)
        if (gw_frame_reason((enum gw_frame)f))
            sk_text_printf(o, "seckill_http_framing_refused_total{reason=\"%s\"} %llu\n",
                gw_frame_reason((enum gw_frame)f), LOAD(m->framing_refused[f]));
    per_item(o, g, "seckill_stock_left", "gauge", "Stock left per item, as this gateway last heard.",
             g->stock_left);
    if (g->reserved) {
        per_item(o, g, "seckill_orders_reserved_total", "counter",
                 "Orders reserved per item (successful purchases; embedded inventory).",
                 g->reserved);
        per_item(o, g, "seckill_orders_paid_total", "counter",
                 "Orders paid per item (embedded inventory).", g->paid);
        per_item(o, g, "seckill_orders_cancelled_total", "counter",
                 "Orders cancelled unpaid per item, their stock returned (embedded inventory).",
                 g->cancelled);
        per_item(o, g, "seckill_stock_held", "gauge",
                 "Stock held by reserved orders not yet paid or cancelled (embedded inventory).",
                 g->held);
        per_item(o, g, "seckill_buyers", "gauge",
                 "Distinct users with a live order of each item (embedded inventory).",
                 g->buyers);
    }
    sk_prom_build_info(o);
    sk_prom_process(o);
}

double gw_metrics_bucket_le(size_t b)
{
    return b < GW_LATENCY_BUCKETS - 1 ? (double)bounds_ns[b] / 1e9 : INFINITY;
}
