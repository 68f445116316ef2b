/*
 * token_bucket_global.c - the global token bucket (token_bucket_global.h).
 *
 * State in Redis, both keys under the hash tag {tb}, so on a Redis Cluster
 * they live in one slot and every TAKE goes to that slot's master (the
 * fetcher sends it through sk_redis_target, which routes to the single
 * Redis or to the cluster alike):
 *   TB_GLOBAL_BUCKET    hash  tokens (fractional, as text), us (the refill
 *                             time, unix µs on Redis's clock). Absent = full.
 *   TB_GLOBAL_GATEWAYS  zset  gateway id -> the expiry of its membership.
 * TAKE (one script call): refill by (now - us) * rate up to burst, grant
 * min(want, whole tokens), record the call's gateway, drop expired ones and
 * answer {granted, gateways}. Every gateway passes its own rate and burst,
 * so they must be configured alike.
 *
 * A TAKE may be granted twice on a cluster: the cluster client resends a
 * command whose connection broke before the reply, and the lost reply's
 * grant is then spent in the bucket but never handed out. That only makes
 * admission stricter (by at most a chunk per lost reply), never looser,
 * which is why the script may run there although it is not idempotent.
 *
 * Local state: `tokens`, the fetched tokens not yet handed out (an atomic
 * counter the HTTP threads decrement), and `fallback`, the local bucket in
 * force while Redis cannot be reached (NULL otherwise). The fetcher thread
 * owns the Redis target (its connection or cluster client) and every other
 * field. A fallback bucket is written only while unpublished: the fetcher
 * alternates between two slots, so the one it initialises is never the one a
 * straggling take may still read from the previous outage.
 */
#include "token_bucket_global.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "redis_target.h"
#include "token_bucket.h"

#define BEAT_MS (TB_GLOBAL_MEMBER_TTL_MS / 3)
#define IDLE_WAIT_MS 5 /* the fetcher's longest nap without a kick */
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 1000
#define EMPTY_WAIT_MAX_MS 100

/* KEYS: 1 bucket, 2 gateways. ARGV: 1 rate, 2 burst, 3 want, 4 gateway id,
 * 5 membership ttl ms. Returns {granted, gateways}. */
static const char take_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local now_ms = math.floor(now / 1000)\n"
    "local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local b = redis.call('HMGET', KEYS[1], 'tokens', 'us')\n"
    "local tokens, last = tonumber(b[1]), tonumber(b[2])\n"
    "if not tokens or not last then tokens, last = burst, now end\n"
    "if now > last then tokens = math.min(burst, tokens + (now - last) * rate / 1000000) end\n"
    "local grant = math.min(want, math.floor(tokens))\n"
    "if grant < 0 then grant = 0 end\n"
    "tokens = tokens - grant\n"
    "redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'us',\n"
    "           string.format('%.0f', math.max(now, last)))\n"
    /* gone after it would have refilled anyway: absent reads as full */
    "redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)\n"
    "redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[5]), ARGV[4])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)\n"
    "redis.call('PEXPIRE', KEYS[2], ARGV[5])\n"
    "return {grant, redis.call('ZCARD', KEYS[2])}\n";

struct tb_global {
    /* HTTP threads */
    _Atomic int64_t tokens;
    _Atomic(tb *) fallback; /* NULL: Redis answers */
    atomic_int kick;        /* 1: a take wants the fetcher to look now */
    _Atomic uint64_t fallback_takes;

    /* the fetcher thread's, read by get_stats under lock */
    pthread_mutex_t lock;
    pthread_cond_t wake; /* CLOCK_MONOTONIC */
    int stop;
    pthread_t tid;
    uint64_t fetches, granted, fallbacks;
    uint32_t gateways;

    /* fixed at start */
    double rate;
    uint32_t burst, chunk, low;
    char id[64];

    /* the fetcher thread's only */
    sk_redis_target *t; /* the single Redis, or the master of {tb}'s slot */
    tb slots[2];
    int slot; /* the slot the next fallback uses */
    uint64_t next_fetch_ms, next_beat_ms, retry_ms;
    uint32_t backoff_ms;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* One TAKE of want tokens. OUT: *grant, *gateways. 0 or negative errno. */
static int call_take(tb_global *g, uint32_t want, int64_t *grant, uint32_t *gateways)
{
    char rate[32], burst[16], swant[16], ttl[16];
    snprintf(rate, sizeof rate, "%.6f", g->rate);
    snprintf(burst, sizeof burst, "%u", g->burst);
    snprintf(swant, sizeof swant, "%u", want);
    snprintf(ttl, sizeof ttl, "%u", (unsigned)TB_GLOBAL_MEMBER_TTL_MS);
    const char *argv[] = {"EVAL", take_lua, "2",   TB_GLOBAL_BUCKET, TB_GLOBAL_GATEWAYS,
                          rate,   burst,    swant, g->id,            ttl};
    redisReply *rep;
    int rc = sk_redis_target_run(g->t, 10, argv, &rep);
    if (rc < 0)
        return rc;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        rep->element[0]->type != REDIS_REPLY_INTEGER ||
        rep->element[1]->type != REDIS_REPLY_INTEGER || rep->element[0]->integer < 0 ||
        rep->element[0]->integer > want)
        rc = -EPROTO; /* an error reply too: LOADING, a replica, no scripts */
    else {
        *grant = rep->element[0]->integer;
        *gateways = rep->element[1]->integer > 0 ? (uint32_t)rep->element[1]->integer : 1;
    }
    freeReplyObject(rep);
    return rc;
}

static void fallback_begin(tb_global *g, int err)
{
    uint32_t n = g->gateways ? g->gateways : 1;
    uint32_t burst = g->burst / n ? g->burst / n : 1;
    tb *b = &g->slots[g->slot];
    g->slot ^= 1;
    tb_init(b, g->rate / n, burst);
    atomic_store_explicit(&g->fallback, b, memory_order_release);
    pthread_mutex_lock(&g->lock);
    g->fallbacks++;
    pthread_mutex_unlock(&g->lock);
    sk_log(SK_LOG_WARN, "gateway", NULL,
           "global token bucket: %s unreachable (%s): admitting at "
           "%.3g/s (rate / %u gateways) until it answers",
           sk_redis_target_name(g->t), strerror(-err), g->rate / n, n);
}

static void fallback_end(tb_global *g)
{
    atomic_store_explicit(&g->fallback, NULL, memory_order_release);
    sk_log(SK_LOG_INFO, "gateway", NULL, "global token bucket: %s answers again",
           sk_redis_target_name(g->t));
}

/* One round of the fetcher: fetch when low (or a beat is due), fall back
 * when Redis does not answer. */
static void fetch_round(tb_global *g)
{
    uint64_t now = mono_ms();
    int64_t have = atomic_load(&g->tokens);
    int in_fallback = atomic_load_explicit(&g->fallback, memory_order_relaxed) != NULL;
    int low = have < (int64_t)g->low;
    if (in_fallback ? now < g->retry_ms
                    : !(low && now >= g->next_fetch_ms) && now < g->next_beat_ms)
        return;
    uint32_t want = low ? (uint32_t)((int64_t)g->chunk - (have > 0 ? have : 0)) : 0;
    int64_t grant = 0;
    uint32_t n = 0;
    int rc = call_take(g, want, &grant, &n);
    now = mono_ms();
    if (rc < 0) {
        if (!in_fallback) {
            fallback_begin(g, rc);
            g->backoff_ms = RETRY_MIN_MS;
        } else {
            g->backoff_ms = g->backoff_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : g->backoff_ms * 2;
        }
        g->retry_ms = now + g->backoff_ms;
        return;
    }
    atomic_fetch_add(&g->tokens, grant);
    pthread_mutex_lock(&g->lock);
    g->fetches++;
    g->granted += (uint64_t)grant;
    g->gateways = n;
    pthread_mutex_unlock(&g->lock);
    if (in_fallback)
        fallback_end(g);
    g->next_beat_ms = now + BEAT_MS;
    g->next_fetch_ms = now;
    if (grant < want) { /* the bucket is short: ask again when it may have refilled */
        double ms = (double)(want - grant) * 1000.0 / g->rate;
        g->next_fetch_ms = now + (uint64_t)(ms < 1 ? 1 : ms > EMPTY_WAIT_MAX_MS ? EMPTY_WAIT_MAX_MS : ms);
    }
}

static void *fetcher_main(void *arg)
{
    tb_global *g = arg;
    pthread_mutex_lock(&g->lock);
    while (!g->stop) {
        pthread_mutex_unlock(&g->lock);
        atomic_store(&g->kick, 0);
        fetch_round(g);
        pthread_mutex_lock(&g->lock);
        if (g->stop || atomic_load(&g->kick))
            continue;
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += IDLE_WAIT_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&g->wake, &g->lock, &until);
    }
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

int tb_global_start(const tb_global_config *c, tb_global **out)
{
    if (!(c->rate > 0) || c->rate > 1e9 || c->burst == 0 || !c->gateway_id || !*c->gateway_id ||
        strlen(c->gateway_id) >= sizeof((tb_global *)0)->id)
        return -EINVAL;
    tb_global *g = calloc(1, sizeof *g);
    if (!g)
        return -ENOMEM;
    int rc =
        sk_redis_target_create(c->host, c->port, c->nodes, TB_GLOBAL_BUCKET, c->timeout_ms, &g->t);
    if (rc < 0) {
        free(g);
        return rc;
    }
    g->rate = c->rate;
    g->burst = c->burst;
    g->chunk = c->chunk ? c->chunk : (uint32_t)ceil(c->rate / 100);
    if (g->chunk < 1)
        g->chunk = 1;
    if (g->chunk > c->burst)
        g->chunk = c->burst;
    g->low = g->chunk / 4 ? g->chunk / 4 : 1;
    snprintf(g->id, sizeof g->id, "%s", c->gateway_id);
    atomic_init(&g->tokens, 0);
    atomic_init(&g->fallback, NULL);
    atomic_init(&g->kick, 0);
    atomic_init(&g->fallback_takes, 0);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->wake, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&g->lock, NULL);
    fetch_round(g); /* tokens (or the fallback) before the first request */
    rc = -pthread_create(&g->tid, NULL, fetcher_main, g);
    if (rc < 0) {
        g->tid = 0;
        tb_global_stop(g);
        return rc;
    }
    *out = g;
    return 0;
}

void tb_global_stop(tb_global *g)
{
    if (!g)
        return;
    if (g->tid) {
        pthread_mutex_lock(&g->lock);
        g->stop = 1;
        pthread_cond_signal(&g->wake);
        pthread_mutex_unlock(&g->lock);
        pthread_join(g->tid, NULL);
    }
    sk_redis_target_destroy(g->t);
    pthread_cond_destroy(&g->wake);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

/* Wake the fetcher, once until it has looked. */
static void kick(tb_global *g)
{
    if (atomic_exchange_explicit(&g->kick, 1, memory_order_relaxed) == 0)
        pthread_cond_signal(&g->wake);
}

bool tb_global_take(tb_global *g, uint64_t now_ns)
{
    int64_t t = atomic_load_explicit(&g->tokens, memory_order_relaxed);
    while (t > 0)
        if (atomic_compare_exchange_weak_explicit(&g->tokens, &t, t - 1, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            if (t - 1 < (int64_t)g->low)
                kick(g);
            return true;
        }
    kick(g);
    tb *fb = atomic_load_explicit(&g->fallback, memory_order_acquire);
    if (fb && tb_take(fb, now_ns)) {
        atomic_fetch_add_explicit(&g->fallback_takes, 1, memory_order_relaxed);
        return true;
    }
    return false;
}

uint64_t tb_global_wait_ns(tb_global *g, uint64_t now_ns)
{
    tb *fb = atomic_load_explicit(&g->fallback, memory_order_acquire);
    if (fb)
        return tb_wait_ns(fb, now_ns);
    /* the shared bucket refills a chunk in chunk / rate seconds */
    return (uint64_t)((double)g->chunk / g->rate * 1e9);
}

void tb_global_get_stats(tb_global *g, tb_global_stats *out)
{
    pthread_mutex_lock(&g->lock);
    out->fetches = g->fetches;
    out->granted = g->granted;
    out->fallbacks = g->fallbacks;
    out->gateways = g->gateways;
    pthread_mutex_unlock(&g->lock);
    out->chunk = g->chunk;
    out->fallback_takes = atomic_load(&g->fallback_takes);
    out->fallback = atomic_load(&g->fallback) != NULL;
}
