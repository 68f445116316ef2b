/*
 * token_bucket_global.h - one admission rate for every gateway of a sale:
 * [token_bucket] scope = global.
 *
 * The bucket itself lives in Redis (one hash, refilled at `rate` up to
 * `burst` on Redis's clock by a Lua script); each gateway takes tokens from
 * it in chunks and hands them out locally, so Redis sees one call per chunk,
 * not one per request. Across N gateways the requests admitted in any window
 * of t seconds stay within rate * t + burst + one chunk per gateway (the
 * tokens each may hold from before the window); the Redis bucket alone
 * never grants more than rate * t + burst.
 *
 * Threads: tb_global_take runs on the HTTP threads and never blocks (one
 * atomic counter); a fetcher thread of its own does every Redis call: it
 * tops the local tokens up to a chunk when they fall below a quarter of one,
 * and at least once a second says "still here" (a gateway counts as drawing
 * from the bucket for 3 s after its last call).
 *
 * Redis may be one server or a Redis Cluster: both keys share the hash tag
 * {tb}, so they live in one slot and each call goes to that slot's master.
 *
 * Redis unreachable (a failed or timed-out call; on a cluster, while {tb}'s
 * slot has no master that answers): the gateway falls back to
 * a local bucket of rate / n and burst / n, n the number of gateways that
 * drew from the bucket as last counted in Redis (1 before any count): the
 * gateways together still admit about `rate`. Logged once per outage,
 * counted (tb_global_stats.fallback_takes), and left as soon as a call works
 * again (tried every 100 ms to 1 s). Tokens fetched before the outage are
 * spent first.
 */
#ifndef SECKILL_TB_GLOBAL_H
#define SECKILL_TB_GLOBAL_H

#include <stdbool.h>
#include <stdint.h>

#define TB_GLOBAL_BUCKET "sk:{tb}:bucket"     /* hash: tokens, us (last refill, unix µs) */
#define TB_GLOBAL_GATEWAYS "sk:{tb}:gateways" /* zset: gateway id scored by expiry (unix ms) */
#define TB_GLOBAL_MEMBER_TTL_MS 3000

typedef struct tb_global tb_global;

typedef struct tb_global_config {
    const char *host; /* the single Redis, when nodes is NULL or "" */
    int port;
    const char *nodes; /* Redis Cluster seeds, "host:port, ..." ([redis] nodes), or NULL */
    uint32_t timeout_ms;
    double rate;        /* tokens per second for all gateways together, > 0 */
    uint32_t burst;     /* >= 1 */
    uint32_t chunk;     /* tokens per Redis call; 0 = rate / 100 (at least 1, at most burst) */
    const char *gateway_id; /* counted in the bucket's gateway set */
} tb_global_config;

/* Start the fetcher thread; its first fetch runs before this returns (bounded
 * by about twice timeout_ms, on a cluster by a few), so a gateway starts with
 * tokens, or in fallback when Redis cannot be reached. Copies what it keeps.
 * OUT: *out. -EINVAL for a bad config. */
int tb_global_start(const tb_global_config *c, tb_global **out);
/* Stop and join the thread, free. NULL is fine. */
void tb_global_stop(tb_global *g);

/* One token, without blocking: a fetched one, or in fallback the local
 * bucket's (now_ns: monotonic). */
bool tb_global_take(tb_global *g, uint64_t now_ns);
/* A hint for Retry-After: nanoseconds until a take might succeed. */
uint64_t tb_global_wait_ns(tb_global *g, uint64_t now_ns);

typedef struct tb_global_stats {
    uint64_t fetches;        /* Redis calls that answered */
    uint64_t granted;        /* tokens Redis granted this gateway */
    uint64_t fallbacks;      /* outages: times the fallback began */
    uint64_t fallback_takes; /* tokens the fallback bucket handed out */
    uint32_t gateways;       /* gateways drawing from the bucket, last counted */
    uint32_t chunk;          /* the chunk in use */
    int fallback;            /* 1 while falling back */
} tb_global_stats;

void tb_global_get_stats(tb_global *g, tb_global_stats *out);

#endif
