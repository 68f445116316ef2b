/*
 * metrics.h - counters and the latency histogram, rendered as Prometheus
 * text. Every field is an atomic updated with relaxed ordering: a scrape sees
 * each value exactly, though not all of them at one instant. Every counter
 * only goes up; what can go down (stock left, stock held by unpaid orders)
 * is a gauge. The text grows with the items (promtext.h): never cut off.
 */
#ifndef SECKILL_GW_METRICS_H
#define SECKILL_GW_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "framing.h"
#include "promtext.h"

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

/* Why a request was answered 503 overloaded (nothing bought). */
enum gw_overload {
    GW_OV_QUEUE_FULL,        /* the request topic is at max_backlog(_bytes) */
    GW_OV_NO_WORKER,         /* no worker consumed within lease_timeout_ms */
    GW_OV_STORE_UNAVAILABLE, /* the store did not answer (orders endpoints) */
    GW_OV_INTERNAL,          /* out of memory, or a message that does not encode */
    GW_OV_STOPPING,          /* held by the fair opening until the gateway stopped */
    GW_OV_COUNT
};

/* What an admin API change changed (seckill_admin_changes_total{what}). */
enum gw_admin_what {
    GW_ADM_STOCK,
    GW_ADM_WINDOW,
    GW_ADM_LIMIT,
    GW_ADM_RATE,
    GW_ADM_BLOCKLIST,
    GW_ADM_SALE,
    GW_ADM_COUNT
};
const char *gw_admin_what_name(enum gw_admin_what w);

/* 1 us to 2.5 s, then +Inf */
#define GW_LATENCY_BUCKETS 21

typedef struct gw_metrics {
    _Atomic uint64_t answers[GW_A_COUNT];
    _Atomic uint64_t latency_buckets[GW_LATENCY_BUCKETS]; /* cumulative on render only */
    _Atomic uint64_t latency_count;
    _Atomic uint64_t latency_sum_ns;
    _Atomic uint64_t tb_rejections;
    _Atomic uint64_t open_held, open_flushes; /* the fair opening (opening.c) */
    _Atomic uint64_t late_outcomes;
    _Atomic uint64_t outcomes;
    _Atomic uint64_t queue_full;
    _Atomic uint64_t overloaded[GW_OV_COUNT];
    /* requests refused for their framing, by verdict (refusing ones only) */
    _Atomic uint64_t framing_refused[GW_FRAME_COUNT];
    /* how late timeouts were answered: time from a parked request's deadline
     * to its waiter being woken by the timer */
    _Atomic uint64_t lateness_count, lateness_sum_ns, lateness_max_ns;
    _Atomic uint64_t admin_changes[GW_ADM_COUNT];
    _Atomic uint64_t admin_unauthorized; /* admin requests without the right token */
} gw_metrics;

/* Record that a timeout was answered late_ns after its deadline. */
void gw_metrics_lateness(gw_metrics *m, uint64_t late_ns);

const char *gw_answer_name(enum gw_answer a);
/* Count a request refused for its framing (f: a refusing gw_frame_check verdict). */
void gw_metrics_framing(gw_metrics *m, enum gw_frame f);
void gw_metrics_answer(gw_metrics *m, enum gw_answer a, uint64_t latency_ns);
void gw_metrics_overloaded(gw_metrics *m, enum gw_overload why);
const char *gw_overload_name(enum gw_overload why);

/* The upper bound in seconds of latency bucket b (< GW_LATENCY_BUCKETS);
 * INFINITY for the last. */
double gw_metrics_bucket_le(size_t b);

/* Gauges sampled at render time. */
typedef struct gw_gauges {
    uint64_t wall_ns; /* the wall clock as the scrape is rendered: seckill_time_seconds */
    uint64_t queue_depth;
    uint64_t parked;
    uint64_t workers_live;
    uint64_t ctx_allocs, ctx_reused; /* request contexts: taken, of them from the pool */
    size_t nitems;
    const char *const *item_ids;
    const int64_t *stock_left;
    /* per item, NULL when the inventory is not in this process: orders
     * reserved, paid and cancelled since the process started (counters; a
     * restart replays the order log), stock held by reserved orders not yet
     * paid or cancelled, and distinct buyers with a live order (gauges) */
    const int64_t *reserved, *paid, *cancelled, *held, *buyers;
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

/* Append every metric to t (whole, however many items; see sk_text_failed). */
void gw_metrics_render(gw_metrics *m, const gw_gauges *g, sk_text *t);

#endif
