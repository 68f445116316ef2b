/*
 * metrics.h - counters and the latency histogram, rendered as Prometheus
 * text. Every field is an atomic updated with relaxed ordering: a scrape sees
 * each value exactly, though not all of them at one instant.
 */
#ifndef SECKILL_GW_METRICS_H
#define SECKILL_GW_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "framing.h"

enum gw_answer {
    GW_A_SUCCESS,
    GW_A_SOLD_OUT,
    GW_A_ALREADY_PURCHASED,
    GW_A_NOT_STARTED,
    GW_A_ENDED,
    GW_A_BLOCKED,
    GW_A_RATE_LIMITED,
    GW_A_OVERLOADED,
    GW_A_TIMEOUT,
    GW_A_BAD_REQUEST,
    GW_A_UNKNOWN_ITEM,
    GW_A_PAYLOAD_TOO_LARGE,
    GW_A_UNSUPPORTED_MEDIA_TYPE,
    GW_A_METHOD_NOT_ALLOWED,
    GW_A_BAD_TOKEN,
    GW_A_BUSY,
    GW_A_COUNT
};

#define GW_LATENCY_BUCKETS 14

typedef struct gw_metrics {
    _Atomic uint64_t answers[GW_A_COUNT];
    _Atomic uint64_t latency_buckets[GW_LATENCY_BUCKETS]; /* cumulative on render only */
    _Atomic uint64_t latency_count;
    _Atomic uint64_t latency_sum_us;
    _Atomic uint64_t tb_rejections;
    _Atomic uint64_t late_outcomes;
    _Atomic uint64_t outcomes;
    _Atomic uint64_t queue_full;
    /* requests refused for their framing, by verdict (refusing ones only) */
    _Atomic uint64_t framing_refused[GW_FRAME_COUNT];
    /* how late timeouts were answered: time from a parked request's deadline
     * to its waiter being woken by the timer */
    _Atomic uint64_t lateness_count, lateness_sum_ns, lateness_max_ns;
} gw_metrics;

/* Record that a timeout was answered late_ns after its deadline. */
void gw_metrics_lateness(gw_metrics *m, uint64_t late_ns);

const char *gw_answer_name(enum gw_answer a);
/* Count a request refused for its framing (f: a refusing gw_frame_check verdict). */
void gw_metrics_framing(gw_metrics *m, enum gw_frame f);
void gw_metrics_answer(gw_metrics *m, enum gw_answer a, uint64_t latency_ns);

/* The upper bound in seconds of latency bucket b (< GW_LATENCY_BUCKETS);
 * INFINITY for the last. */
double gw_metrics_bucket_le(size_t b);

/* Gauges sampled at render time. */
typedef struct gw_gauges {
    uint64_t queue_depth;
    uint64_t parked;
    uint64_t workers_live;
    uint64_t ctx_allocs, ctx_reused; /* request contexts: taken, of them from the pool */
    size_t nitems;
    const char *const *item_ids;
    const int64_t *stock_left;
    const int64_t *sold;   /* NULL when the inventory is not in this process */
    const int64_t *buyers;
    /* rpc/ (0 when the gateway serves no workers) */
    uint64_t rpc_auth_failures, rpc_mac_failures, rpc_handshake_timeouts, rpc_denied;
    uint64_t rpc_tls_failures; /* failed TLS handshakes on the rpc listener */
    /* the connection guard (conn_guard.h): connections shut down at their
     * request deadline, and refused at their address's cap */
    uint64_t http_request_timeouts, http_per_ip_refused;
    /* decided batches of this process's workers that fewer than
     * [redis] min_replicas_ack replicas acknowledged in time */
    uint64_t store_replica_ack_timeouts;
    /* [token_bucket] scope = global: its counters (NULL: local bucket) */
    const struct tb_global_stats *tb_global;
} gw_gauges;

/* Render into buf; returns the length (truncated output is cut at cap-1). */
size_t gw_metrics_render(gw_metrics *m, const gw_gauges *g, char *buf, size_t cap);

#endif
