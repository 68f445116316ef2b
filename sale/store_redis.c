/*
 * store_redis.c - the Redis store.
 *
 * Keys. Every key of an item carries the hash tag {I} (I = item id), so all
 * keys one script touches live in one Redis Cluster slot. Every key a script
 * touches is passed in KEYS; the scripts build none.
 *
 *   sk:{I}:epoch        string  the sale in force (absent: 0). Set by NEWSALE
 *                               only; every script that sells or returns stock
 *                               checks it against the epoch its caller built
 *                               the keys for, and answers -3 when they differ
 *                               (the caller reads the epoch again and retries).
 *   sk:{I}:stock        string  units left of sale 0; sale E > 0: sk:{I}:e<E>:stock
 *                               (so are users and total: a new sale starts on
 *                               fresh keys, the old ones are left as they are).
 *                               Written by sk_redis_create (SET NX: preheat
 *                               only when absent, so a restarted worker
 *                               continues the sale), DECR by DECIDE, INCR by
 *                               REAP, set by NEWSALE, moved by RAISE/SETSTOCK.
 *   sk:{I}:total        string  the stock total of the sale when a reload or the
 *                               admin API set it (RAISE, SETSTOCK, NEWSALE);
 *                               absent: the configured stock.
 *   sk:{I}:limit        string  the per-user limit the admin API set; absent:
 *                               the configured one. Read by DECIDE.
 *   sk:{I}:req:<R>      string  "result|order_id", the refusal of request R
 *                               (UUID text), PX 24 h. Written by DECIDE only.
 *                               (A success's decision is its order: the
 *                               order id is the request id. Successes
 *                               decided before that have a key here too.)
 *   sk:{I}:users        hash    user -> "count|last_order_id": purchases that
 *                               count against the per-user limit. DECIDE adds,
 *                               REAP subtracts (field deleted at 0).
 *   sk:{I}:orders       hash    order_id (= R since order ids are request ids)
 *                               -> "state|user|R|created_ms|deadline_ms|E"
 *                               (E the order's sale; records without it: 0),
 *                               state reserved -> paid (PAY) or -> cancelled
 *                               (REAP). Written by DECIDE, PAY, REAP.
 *   sk:{I}:deadlines    zset    order_id scored by pay deadline (unix ms): the
 *                               orders DECIDE put out of deadline order in the
 *                               events stream (see latest), and any from
 *                               before the stream was the deadline index.
 *                               PAY and REAP remove.
 *   sk:{I}:reaped       string  the id of the last events entry REAP got past.
 *   sk:{I}:latest       string  the latest pay deadline DECIDE wrote to events:
 *                               a batch more than a second before it puts its
 *                               orders in deadlines too, so REAP, which stops
 *                               at the first stream entry not yet due, does
 *                               not leave them waiting behind it.
 *   sk:{I}:events       stream  one entry per order transition: type
 *                               reserved|paid|cancelled, order, item, user,
 *                               request, at, deadline. XADD by DECIDE, PAY and
 *                               REAP in the same script as the transition;
 *                               read by sk_redis_events_read in consumer groups.
 *
 * DECIDE (one call per item per batch; the batch's calls are pipelined):
 *   1. no stock key -> return -1 (the batch fails with -ENOENT; nothing written)
 *   2. per request, in batch order:
 *      a. a stored decision exists (an order under the request id, or a
 *         refusal key) -> answer it, whatever the verdict now, and rewrite
 *         the order or refresh the key's TTL (a write, so the WAIT below
 *         covers it, and with it every write before, the decision included)
 *      b. verdict is not success -> store and answer the verdict
 *      c. the user's count >= limit -> already_purchased with the last order
 *      d. stock <= 0 -> sold_out
 *      e. take a unit, count the user, write the order (reserved) under the
 *         request id and XADD the reserved event; answer success
 *      f. a refusal (b-d) is stored under its key with its TTL
 *   Redis runs a script atomically, so the stock taken, the order and its
 *   event exist together or not at all. The script reads the batch's orders,
 *   refusals and buyers first and writes the stock, buyers and orders once
 *   at the end (redis_scripts.h): a purchase costs a Redis core about 15 µs
 *   where a key with a TTL and a sorted-set entry per purchase made it 27
 *   (loadtest/store_bench.c, docs/performance.md).
 *
 * Replica acknowledgement (min_replicas_ack = N > 0): after a batch's DECIDE
 * calls answered, `WAIT N replica_ack_timeout_ms` on the same connection.
 * WAIT returns once N replicas acknowledged every write this connection made,
 * and every DECIDE call writes (a new decision, or the refreshed TTL of a
 * stored one), so its count covers the decisions the batch is about to
 * answer. Fewer than N in time: the batch fails with -ETIMEDOUT and answers
 * nothing. Its decisions stay stored on the master; the worker loop decides
 * the batch again (each request answers its stored decision, with a new
 * WAIT) until the replicas catch up or the request's deadline passes (504
 * with its request id; GET /seckill/result tells the outcome later). So a
 * success is answered only once it is on N + 1 nodes, and a master's death
 * after the answer loses no answered order when a replica that acknowledged
 * is promoted.
 *
 * PAY: reserved and before its deadline -> paid, remove the deadline, XADD
 *   paid. Paid -> nothing (idempotent). Cancelled or deadline reached -> refused.
 * REAP: up to REAP_BATCH orders whose deadline <= now, from the zset (orders
 *   from before) and then from the events stream after sk:{I}:reaped, up to
 *   the first reserved entry not yet due; each one still reserved ->
 *   cancelled, INCR stock, the user's count - 1, XADD cancelled. The state
 *   check inside the script makes the return of stock happen once, however
 *   many reapers run.
 *
 * Connections: a pool of SK_REDIS_POOL hiredis contexts, each borrowed by one
 * thread for one call. A context that saw an I/O error or a timeout is freed
 * (a late reply would desynchronise it) and the pool generation goes up, so
 * idle contexts opened before the failure are dropped too instead of each
 * failing one more call. Reconnects happen on the next call, at most one
 * attempt per backoff period while Redis is unreachable.
 */
#include "store_redis.h"
#include "log.h"
#include "redis_conn.h"
#include "redis_scripts.h"
#include "uuid4.h"

#include <assert.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <uuid/uuid.h>

#define KEY_MAX 128
#define UUID_STR 37
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 1000
#define REAP_BATCH 256

/* The scripts return results as enum sk_result values. */
_Static_assert(SK_SUCCESS == 0 && SK_SOLD_OUT == 1 && SK_ALREADY_PURCHASED == 2,
               "DECIDE_LUA hard-codes these result codes");

/* KEYS: 1 stock, 2 users (of sale E), 3 orders, 4 deadlines, 5 events, 6 epoch,
 *       7 limit, 8 latest deadline, 8+i refusal of request i.
 * ARGV: 1 now_ms, 2 pay deadline ms, 3 per-user limit (configured), 4 refusal
 *       ttl ms, 5 item, 6 E, then per request: verdict, user, request id.
 * Returns -1 (no stock key), -2 (stock not a number), -3 (sale E is not the
 * one in force), or per request {result, order_id, stock left}: the body,
 * redis_scripts.h. */
static const char DECIDE_LUA[] =
    "if tonumber(redis.call('GET', KEYS[6]) or '0') ~= tonumber(ARGV[6]) then return -3 end\n"
    "local stock = redis.call('GET', KEYS[1])\n"
    "if not stock then return -1 end\n"
    "stock = tonumber(stock)\n"
    "if not stock then return -2 end\n"
    "local limit = tonumber(redis.call('GET', KEYS[7]) or ARGV[3])\n"
    "local kd, kdl, final, sfx = 8, KEYS[8], true, '|' .. ARGV[6]\n" SK_REDIS_LUA_BULK
        SK_REDIS_LUA_DECIDE;

/* KEYS: 1 orders, 2 deadlines, 3 events. ARGV: 1 order id, 2 now_ms, 3 item.
 * Returns 1 paid now, 0 already paid, -1 no such order, -2 cancelled,
 * -3 deadline reached. */
static const char PAY_LUA[] =
    "local rec = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if not rec then return -1 end\n"
    "local state, user, rid, created, deadline, sale =\n"
    "  string.match(rec, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)(.*)$')\n"
    "if state == 'paid' then return 0 end\n"
    "if state ~= 'reserved' then return -2 end\n"
    "if tonumber(ARGV[2]) >= tonumber(deadline) then return -3 end\n"
    "redis.call('HSET', KEYS[1], ARGV[1],\n"
    "           'paid|' .. user .. '|' .. rid .. '|' .. created .. '|' .. deadline .. sale)\n"
    "redis.call('ZREM', KEYS[2], ARGV[1])\n"
    "redis.call('XADD', KEYS[3], '*', 'type', 'paid', 'order', ARGV[1], 'item', ARGV[3],\n"
    "           'user', user, 'request', rid, 'at', ARGV[2])\n"
    "return 1\n";

/* KEYS: 1 stock, 2 users (of sale E), 3 orders, 4 deadlines, 5 events, 6 epoch,
 *       7 the reap's stream position.
 * ARGV: 1 now_ms, 2 max entries to look at, 3 item, 4 E.
 * An order of an earlier sale is cancelled without returning anything.
 * Returns -1 (no stock key), -3 (sale E not in force) or {cancelled, looked
 * at}: the body, redis_scripts.h. */
static const char REAP_LUA[] =
    "if tonumber(redis.call('GET', KEYS[6]) or '0') ~= tonumber(ARGV[4]) then return -3 end\n"
    "if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end\n"
    "local epoch, kcur, kver = tonumber(ARGV[4]), KEYS[7], nil\n" SK_REDIS_LUA_REAP;

/* SETSTOCK: the stock total of sale E becomes ARGV[1].
 * KEYS: 1 stock, 2 total (of sale E), 3 epoch. ARGV: 1 total, 2 configured
 * stock, 3 E. Returns {0, held} done, {-4, held} refused (below the units
 * the sale's orders hold), -1 no stock key, -3 sale E not in force. */
static const char SETSTOCK_LUA[] =
    "if tonumber(redis.call('GET', KEYS[3]) or '0') ~= tonumber(ARGV[3]) then return -3 end\n"
    "local left = tonumber(redis.call('GET', KEYS[1]))\n"
    "if not left then return -1 end\n"
    "local t = tonumber(redis.call('GET', KEYS[2]) or ARGV[2])\n"
    "local n = tonumber(ARGV[1])\n"
    "local held = t - left\n"
    "if held < 0 then held = 0 end\n"
    "if n < held then return {-4, held} end\n"
    "redis.call('INCRBY', KEYS[1], n - t)\n"
    "redis.call('SET', KEYS[2], ARGV[1])\n"
    "return {0, held}\n";

/* NEWSALE: sale ARGV[1] starts for this item with ARGV[2] units, unless it
 * (or a later one) already has. KEYS: 1 epoch, 2 stock, 3 total (of the new
 * sale). Returns the sale in force after it. */
static const char NEWSALE_LUA[] =
    "local cur = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "local e = tonumber(ARGV[1])\n"
    "if cur >= e then return cur end\n"
    "redis.call('SET', KEYS[2], ARGV[2])\n"
    "redis.call('SET', KEYS[3], ARGV[2])\n"
    "redis.call('SET', KEYS[1], ARGV[1])\n"
    "return e\n";

enum { SCRIPT_DECIDE, SCRIPT_PAY, SCRIPT_REAP, SCRIPT_SETSTOCK, SCRIPT_NEWSALE, NSCRIPTS };

static const char *const script_body[NSCRIPTS] = {DECIDE_LUA, PAY_LUA, REAP_LUA, SETSTOCK_LUA,
                                                  NEWSALE_LUA};

typedef struct ritem {
    char id[SK_ID_MAX + 1];
    int64_t stock;
    uint32_t limit;
    uint32_t pay_timeout_ms;
    _Atomic uint64_t epoch; /* the sale this process builds keys for (epoch_read) */
} ritem;

/* decide() strings of one request, alive until its group's command is sent */
typedef struct rq {
    char verdict[8];
    char rid[UUID_STR];
    char dkey[KEY_MAX];
} rq;

typedef struct conn {
    redisContext *c; /* NULL: not connected */
    uint64_t gen;    /* pool generation it was opened in */
    int busy;
    /* decide() scratch, grown to the largest batch seen on this connection */
    size_t cap;
    rq *rqs;
    int *grp;          /* per request: its group, -1 unknown item */
    int *gitem;        /* per group: item index */
    redisReply **reps; /* per group */
    char *noscript;    /* per group: resend by body */
    const char **argv;
    size_t *argvlen;
} conn;

struct sk_redis {
    char *host;
    int port;
    uint32_t timeout_ms;
    ritem *items;
    size_t nitems;
    char sha[NSCRIPTS][41];

    pthread_mutex_t lock; /* guards the fields below and every conn's busy */
    pthread_cond_t idle;
    conn pool[SK_REDIS_POOL];
    uint64_t gen;        /* bumped when a connection breaks */
    uint64_t retry_at;   /* monotonic ms: no connect attempt before */
    uint32_t backoff_ms; /* 0 while connecting works */
    int last_err;        /* the failed connect's error, answered during backoff */

    /* replica acknowledgement: set before the handle is shared */
    uint32_t min_acks;       /* 0: off */
    uint32_t ack_timeout_ms;
    _Atomic uint64_t ack_timeouts; /* batches failed for want of acknowledgements */
    atomic_int acks_short;         /* the last WAIT fell short: logged once per episode */
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int key(char *buf, const char *item, const char *suffix)
{
    int n = snprintf(buf, KEY_MAX, "sk:{%s}:%s", item, suffix);
    return n > 0 && n < KEY_MAX ? 0 : -ENAMETOOLONG;
}

/* A key of sale epoch: stock, users, total. Sale 0's keep their names. */
static int ekey(char *buf, const char *item, uint64_t epoch, const char *suffix)
{
    if (!epoch)
        return key(buf, item, suffix);
    int n = snprintf(buf, KEY_MAX, "sk:{%s}:e%llu:%s", item, (unsigned long long)epoch, suffix);
    return n > 0 && n < KEY_MAX ? 0 : -ENAMETOOLONG;
}

static int find_item(const sk_redis *r, const char *id)
{
    for (size_t i = 0; i < r->nitems; i++)
        if (strcmp(r->items[i].id, id) == 0)
            return (int)i;
    return -ENOENT;
}

/* An error reply from Redis as an errno. */
static int reply_err(const redisReply *rep)
{
    static const struct {
        const char *prefix;
        int err;
    } map[] = {{"NOSCRIPT", -ENOEXEC},  {"LOADING", -EAGAIN}, {"OOM", -ENOMEM},
               {"BUSY", -EBUSY},        {"READONLY", -EROFS}, {"NOGROUP", -ENOENT},
               {"MASTERDOWN", -EAGAIN}, {"TRYAGAIN", -EAGAIN}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strncmp(rep->str, map[i].prefix, strlen(map[i].prefix)) == 0)
            return map[i].err;
    return -EIO;
}

/* ---- the connection pool ---- */

static int conn_open(sk_redis *r, conn *cn)
{
    redisContext *c = NULL;
    int rc = sk__redis_connect(r->host, r->port, r->timeout_ms, &c);
    pthread_mutex_lock(&r->lock);
    if (rc < 0) {
        r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : BACKOFF_MIN_MS;
        if (r->backoff_ms > BACKOFF_MAX_MS)
            r->backoff_ms = BACKOFF_MAX_MS;
        r->retry_at = mono_ms() + r->backoff_ms;
        r->last_err = rc;
    } else {
        r->backoff_ms = 0;
        cn->gen = r->gen;
    }
    pthread_mutex_unlock(&r->lock);
    if (rc < 0) {
        if (c)
            redisFree(c);
        return rc;
    }
    cn->c = c;
    return 0;
}

/* Borrow a connected context. OUT: *out, give it back with conn_give. */
static int conn_take(sk_redis *r, conn **out)
{
    conn *cn = NULL;
    redisContext *stale = NULL;
    int rc = 0;

    pthread_mutex_lock(&r->lock);
    for (;;) {
        for (size_t i = 0; i < SK_REDIS_POOL; i++) {
            conn *k = &r->pool[i];
            if (k->busy)
                continue;
            if (k->c && k->gen == r->gen) {
                cn = k;
                break;
            }
            if (!cn)
                cn = k;
        }
        if (cn)
            break;
        pthread_cond_wait(&r->idle, &r->lock);
    }
    if (cn->c && cn->gen != r->gen) {
        stale = cn->c;
        cn->c = NULL;
    }
    if (!cn->c && mono_ms() < r->retry_at) {
        rc = r->last_err;
        pthread_mutex_unlock(&r->lock);
        goto out_free_stale;
    }
    cn->busy = 1;
    pthread_mutex_unlock(&r->lock);

    if (!cn->c)
        rc = conn_open(r, cn);
    if (rc < 0) {
        pthread_mutex_lock(&r->lock);
        cn->busy = 0;
        pthread_cond_signal(&r->idle);
        pthread_mutex_unlock(&r->lock);
        goto out_free_stale;
    }
    *out = cn;
out_free_stale:
    if (stale)
        redisFree(stale);
    return rc;
}

/* Return cn to the pool; broken: it failed, drop it and every older one. */
static void conn_give(sk_redis *r, conn *cn, int broken)
{
    if (broken && cn->c) {
        redisFree(cn->c);
        cn->c = NULL;
    }
    pthread_mutex_lock(&r->lock);
    if (broken)
        r->gen++;
    cn->busy = 0;
    pthread_cond_signal(&r->idle);
    pthread_mutex_unlock(&r->lock);
}

static void conn_release(conn *cn)
{
    if (cn->c)
        redisFree(cn->c);
    free(cn->rqs);
    free(cn->grp);
    free(cn->gitem);
    free(cn->reps);
    free(cn->noscript);
    free(cn->argv);
    free(cn->argvlen);
}

/* One command on a borrowed context. timeout_ms: 0 for the handle's, else
 * the socket timeout for this command only. OUT: *reply, an error reply
 * included; the caller frees it. */
static int command(sk_redis *r, uint32_t timeout_ms, int argc, const char **argv,
                   const size_t *argvlen, redisReply **reply)
{
    conn *cn = NULL;
    redisReply *rep = NULL;
    int rc = conn_take(r, &cn);
    if (rc < 0)
        return rc;
    if (timeout_ms && redisSetTimeout(cn->c, sk__ms_tv(timeout_ms)) != REDIS_OK) {
        rc = sk__redis_errno(cn->c, errno);
        goto out_broken;
    }
    rep = redisCommandArgv(cn->c, argc, argv, argvlen);
    if (!rep) {
        rc = sk__redis_errno(cn->c, errno);
        goto out_broken;
    }
    if (timeout_ms && redisSetTimeout(cn->c, sk__ms_tv(r->timeout_ms)) != REDIS_OK) {
        rc = sk__redis_errno(cn->c, errno);
        freeReplyObject(rep);
        goto out_broken;
    }
    conn_give(r, cn, 0);
    *reply = rep;
    return 0;

out_broken:
    conn_give(r, cn, 1);
    return rc;
}

/* Run a script by SHA, by body when Redis lost its script cache (restart). */
static int script(sk_redis *r, int which, int nkeys, const char *const *keys, int nargs,
                  const char *const *args, redisReply **reply)
{
    const char *argv[16];
    char nk[16];
    int argc = 0, rc;
    if (3 + nkeys + nargs > (int)(sizeof argv / sizeof *argv))
        return -E2BIG;
    snprintf(nk, sizeof nk, "%d", nkeys);
    argv[argc++] = "EVALSHA";
    argv[argc++] = r->sha[which];
    argv[argc++] = nk;
    for (int i = 0; i < nkeys; i++)
        argv[argc++] = keys[i];
    for (int i = 0; i < nargs; i++)
        argv[argc++] = args[i];
    rc = command(r, 0, argc, argv, NULL, reply);
    if (rc == 0 && (*reply)->type == REDIS_REPLY_ERROR && reply_err(*reply) == -ENOEXEC) {
        freeReplyObject(*reply);
        argv[0] = "EVAL";
        argv[1] = script_body[which];
        rc = command(r, 0, argc, argv, NULL, reply);
    }
    return rc;
}

/* Read item i's sale epoch from Redis into the cache its keys are built
 * from. Returns it, or negative errno (the cache stays). */
static int64_t epoch_read(sk_redis *r, size_t i)
{
    char k[KEY_MAX];
    const char *argv[] = {"GET", k};
    redisReply *rep = NULL;
    if (key(k, r->items[i].id, "epoch") < 0)
        return -ENAMETOOLONG;
    int rc = command(r, 0, 2, argv, NULL, &rep);
    if (rc < 0)
        return rc;
    int64_t e = -EPROTO;
    if (rep->type == REDIS_REPLY_NIL) {
        e = 0;
    } else if (rep->type == REDIS_REPLY_STRING) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(rep->str, &end, 10);
        if (!errno && *end == '\0' && end != rep->str && v <= INT64_MAX)
            e = (int64_t)v;
    } else if (rep->type == REDIS_REPLY_ERROR) {
        e = reply_err(rep);
    }
    freeReplyObject(rep);
    if (e >= 0)
        atomic_store(&r->items[i].epoch, (uint64_t)e);
    return e;
}

/* ---- create / destroy ---- */

static int setup(sk_redis *r)
{
    redisReply *rep = NULL;
    int rc = 0;
    for (int s = 0; s < NSCRIPTS; s++) {
        const char *argv[] = {"SCRIPT", "LOAD", script_body[s]};
        rc = command(r, 0, 3, argv, NULL, &rep);
        if (rc < 0)
            return rc;
        if (rep->type != REDIS_REPLY_STRING || rep->len != 40) {
            rc = rep->type == REDIS_REPLY_ERROR ? reply_err(rep) : -EPROTO;
            goto out_free_reply;
        }
        memcpy(r->sha[s], rep->str, 41);
        freeReplyObject(rep);
    }
    for (size_t i = 0; i < r->nitems; i++) {
        char k[KEY_MAX], v[32];
        const char *argv[] = {"SET", k, v, "NX"};
        int64_t e = epoch_read(r, i); /* the sale in force: a new sale set its keys */
        if (e < 0)
            return (int)e;
        if (ekey(k, r->items[i].id, (uint64_t)e, "stock") < 0)
            return -ENAMETOOLONG;
        snprintf(v, sizeof v, "%lld", (long long)r->items[i].stock);
        rc = command(r, 0, 4, argv, NULL, &rep);
        if (rc < 0)
            return rc;
        /* OK when set, nil when the sale already has stock in Redis */
        if (rep->type == REDIS_REPLY_ERROR) {
            rc = reply_err(rep);
            goto out_free_reply;
        }
        freeReplyObject(rep);
    }
    return 0;

out_free_reply:
    freeReplyObject(rep);
    return rc;
}

int sk_redis_create(const char *host, int port, uint32_t timeout_ms, const sk_redis_item *items,
                    size_t nitems, sk_redis **out)
{
    sk_redis *r = NULL;
    int rc = -EINVAL;
    if (!host || port <= 0 || port > 65535 || !timeout_ms || (!items && nitems))
        return -EINVAL;
    for (size_t i = 0; i < nitems; i++)
        if (!items[i].id || !sk_id_valid(items[i].id, strlen(items[i].id)) || items[i].stock < 0 ||
            items[i].per_user_limit == 0)
            return -EINVAL;
    r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    rc = -ENOMEM;
    r->host = strdup(host);
    r->items = calloc(nitems ? nitems : 1, sizeof *r->items);
    if (!r->host || !r->items)
        goto out_free_r;
    r->port = port;
    r->timeout_ms = timeout_ms;
    r->nitems = nitems;
    for (size_t i = 0; i < nitems; i++) {
        strcpy(r->items[i].id, items[i].id);
        r->items[i].stock = items[i].stock;
        r->items[i].limit = items[i].per_user_limit;
        r->items[i].pay_timeout_ms = items[i].pay_timeout_ms;
    }
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->idle, NULL);
    rc = setup(r);
    if (rc < 0)
        goto out_destroy;
    *out = r;
    return 0;

out_destroy:
    sk_redis_destroy(r);
    return rc;
out_free_r:
    free(r->items);
    free(r->host);
    free(r);
    return rc;
}

void sk_redis_destroy(sk_redis *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < SK_REDIS_POOL; i++)
        conn_release(&r->pool[i]);
    pthread_cond_destroy(&r->idle);
    pthread_mutex_destroy(&r->lock);
    free(r->items);
    free(r->host);
    free(r);
}

/* ---- decide ---- */

/* The decide call's argv for m requests: EVALSHA, sha, numkeys, 8 item keys,
 * m refusal keys, 6 scalar arguments (now, deadline, limit, ttl, item,
 * epoch) and 3 per request (verdict, user, request id); see append_group,
 * which must stay in step with this count. */
#define DECIDE_ARGC(m) (17 + 4 * (size_t)(m))

static int scratch_reserve(conn *cn, size_t n)
{
    if (n <= cn->cap)
        return 0;
    size_t cap = cn->cap ? cn->cap : 64;
    while (cap < n)
        cap *= 2;
    rq *rqs = realloc(cn->rqs, cap * sizeof *rqs);
    if (rqs)
        cn->rqs = rqs;
    int *grp = realloc(cn->grp, cap * sizeof *grp);
    if (grp)
        cn->grp = grp;
    int *gitem = realloc(cn->gitem, cap * sizeof *gitem);
    if (gitem)
        cn->gitem = gitem;
    redisReply **reps = realloc(cn->reps, cap * sizeof *reps);
    if (reps)
        cn->reps = reps;
    char *noscript = realloc(cn->noscript, cap);
    if (noscript)
        cn->noscript = noscript;
    const char **argv = realloc(cn->argv, DECIDE_ARGC(cap) * sizeof *argv);
    if (argv)
        cn->argv = argv;
    size_t *argvlen = realloc(cn->argvlen, DECIDE_ARGC(cap) * sizeof *argvlen);
    if (argvlen)
        cn->argvlen = argvlen;
    if (!rqs || !grp || !gitem || !reps || !noscript || !argv || !argvlen)
        return -ENOMEM;
    cn->cap = cap;
    return 0;
}

/* Queue group g's script call on cn (sent with the first reply read). */
static int append_group(sk_redis *r, conn *cn, const sk_decide *reqs, size_t n, int g, uint64_t now,
                        int by_body)
{
    const ritem *it = &r->items[cn->gitem[g]];
    char nk[16], snow[24], sdeadline[24], slimit[16], sttl[16], sepoch[24];
    char kstock[KEY_MAX], kusers[KEY_MAX], korders[KEY_MAX], kdead[KEY_MAX], kevents[KEY_MAX];
    char kepoch[KEY_MAX], klimit[KEY_MAX], klatest[KEY_MAX];
    const char **argv = cn->argv;
    size_t m = 0, argc = 0, k;
    uint64_t epoch = atomic_load(&it->epoch);

    for (size_t i = 0; i < n; i++)
        m += cn->grp[i] == g;
    if (ekey(kstock, it->id, epoch, "stock") < 0 || ekey(kusers, it->id, epoch, "users") < 0 ||
        key(korders, it->id, "orders") < 0 || key(kdead, it->id, "deadlines") < 0 ||
        key(kevents, it->id, "events") < 0 || key(kepoch, it->id, "epoch") < 0 ||
        key(klimit, it->id, "limit") < 0 || key(klatest, it->id, "latest") < 0)
        return -ENAMETOOLONG;
    snprintf(nk, sizeof nk, "%zu", 8 + m);
    snprintf(sepoch, sizeof sepoch, "%llu", (unsigned long long)epoch);
    snprintf(snow, sizeof snow, "%llu", (unsigned long long)now);
    snprintf(sdeadline, sizeof sdeadline, "%llu", (unsigned long long)(now + it->pay_timeout_ms));
    snprintf(slimit, sizeof slimit, "%u", it->limit);
    snprintf(sttl, sizeof sttl, "%u", (unsigned)SK_REDIS_DECISION_TTL_MS);

    argv[argc++] = by_body ? "EVAL" : "EVALSHA";
    argv[argc++] = by_body ? DECIDE_LUA : r->sha[SCRIPT_DECIDE];
    argv[argc++] = nk;
    argv[argc++] = kstock;
    argv[argc++] = kusers;
    argv[argc++] = korders;
    argv[argc++] = kdead;
    argv[argc++] = kevents;
    argv[argc++] = kepoch;
    argv[argc++] = klimit;
    argv[argc++] = klatest;
    for (size_t i = 0; i < n; i++)
        if (cn->grp[i] == g)
            argv[argc++] = cn->rqs[i].dkey;
    argv[argc++] = snow;
    argv[argc++] = sdeadline;
    argv[argc++] = slimit;
    argv[argc++] = sttl;
    argv[argc++] = it->id;
    argv[argc++] = sepoch;
    for (size_t i = 0; i < n; i++)
        if (cn->grp[i] == g) {
            argv[argc++] = cn->rqs[i].verdict;
            argv[argc++] = reqs[i].user_id;
            argv[argc++] = cn->rqs[i].rid;
        }
    assert(argc == DECIDE_ARGC(m));
    for (k = 0; k < argc; k++)
        cn->argvlen[k] = strlen(argv[k]);
    if (redisAppendCommandArgv(cn->c, (int)argc, argv, cn->argvlen) != REDIS_OK)
        return -ENOMEM;
    return 0;
}

/* Fill the outcomes of group g from its reply. */
static int parse_group(const conn *cn, size_t n, int g, const redisReply *rep, sk_outcome *outs,
                       int64_t *left)
{
    size_t j = 0;
    if (rep->type == REDIS_REPLY_ERROR)
        return reply_err(rep);
    if (rep->type == REDIS_REPLY_INTEGER)
        return rep->integer == -1 ? -ENOENT : rep->integer == -3 ? -ESTALE : -EPROTO;
    if (rep->type != REDIS_REPLY_ARRAY)
        return -EPROTO;
    for (size_t i = 0; i < n; i++) {
        if (cn->grp[i] != g)
            continue;
        if (j + 3 > rep->elements)
            return -EPROTO;
        const redisReply *res = rep->element[j], *oid = rep->element[j + 1],
                         *lft = rep->element[j + 2];
        j += 3;
        if (res->type != REDIS_REPLY_INTEGER || res->integer < 0 ||
            res->integer >= SK_RESULT_COUNT || oid->type != REDIS_REPLY_STRING ||
            oid->len > SK_ORDER_ID_MAX || lft->type != REDIS_REPLY_INTEGER)
            return -EPROTO;
        outs[i].result = (enum sk_result)res->integer;
        memcpy(outs[i].order_id, oid->str, oid->len);
        outs[i].order_id[oid->len] = '\0';
        left[i] = lft->integer;
    }
    return j == rep->elements ? 0 : -EPROTO;
}

/* Read one reply per group marked in want[] (NULL: all). */
static int read_replies(conn *cn, int ngroups, const char *want)
{
    for (int g = 0; g < ngroups; g++) {
        void *rep = NULL;
        if (want && !want[g])
            continue;
        if (redisGetReply(cn->c, &rep) != REDIS_OK || !rep)
            return sk__redis_errno(cn->c, errno);
        cn->reps[g] = rep;
    }
    return 0;
}

/* WAIT for the replicas after a batch that ran on cn (see the top of this
 * file). 0 when r->min_acks acknowledged in time, -ETIMEDOUT when fewer did;
 * OUT: *broken when the connection is not fit for reuse. */
static int wait_replicas(sk_redis *r, conn *cn, int *broken)
{
    char n[16], ms[16];
    const char *argv[] = {"WAIT", n, ms};
    redisReply *rep = NULL;
    int rc;
    snprintf(n, sizeof n, "%u", r->min_acks);
    snprintf(ms, sizeof ms, "%u", r->ack_timeout_ms);
    /* the socket waits for WAIT's own timeout on top of the usual one */
    if (redisSetTimeout(cn->c, sk__ms_tv(r->timeout_ms + r->ack_timeout_ms)) != REDIS_OK)
        goto out_broken;
    rep = redisCommandArgv(cn->c, 3, argv, NULL);
    if (!rep || redisSetTimeout(cn->c, sk__ms_tv(r->timeout_ms)) != REDIS_OK)
        goto out_broken;
    if (rep->type == REDIS_REPLY_ERROR)
        rc = reply_err(rep);
    else if (rep->type != REDIS_REPLY_INTEGER)
        rc = -EPROTO;
    else if (rep->integer >= (long long)r->min_acks)
        rc = 0;
    else
        rc = -ETIMEDOUT;
    if (rc == -ETIMEDOUT || rc == 0) {
        int was = atomic_exchange(&r->acks_short, rc < 0);
        if (rc < 0 && !was)
            sk_log(SK_LOG_WARN, "store", NULL,
                   "redis %s:%d: %lld of %u replicas acknowledged "
                   "within %u ms: purchases wait (504 at their deadline) until they do",
                   r->host, r->port, rep->integer, r->min_acks, r->ack_timeout_ms);
        else if (rc == 0 && was)
            sk_log(SK_LOG_INFO, "store", NULL, "redis %s:%d: %u replicas acknowledge again",
                   r->host, r->port, r->min_acks);
    }
    if (rc == -ETIMEDOUT)
        atomic_fetch_add(&r->ack_timeouts, 1);
    freeReplyObject(rep);
    return rc;

out_broken:
    rc = sk__redis_errno(cn->c, errno);
    if (rep)
        freeReplyObject(rep);
    *broken = 1;
    return rc;
}

void sk_redis_set_replica_ack(sk_redis *r, uint32_t n, uint32_t timeout_ms)
{
    r->min_acks = n;
    r->ack_timeout_ms = timeout_ms;
}

uint64_t sk_redis_replica_ack_timeouts(sk_redis *r)
{
    return atomic_load(&r->ack_timeouts);
}

/* A batch: group by item, pipeline one script call per group, resend the
 * groups that met NOSCRIPT with the body, parse, then WAIT for replicas.
 * One function because the connection's state (broken or reusable) and the
 * replies to free follow every step; each step's work is a function above. */
static int backend_decide(void *impl, const sk_decide *reqs, size_t n, sk_outcome *outs,
                          int64_t *left)
{
    sk_redis *r = impl;
    conn *cn = NULL;
    int ngroups = 0, rc, broken = 0, nnoscript = 0;
    uint64_t now = wall_ms();

    if (n == 0)
        return 0;
    rc = conn_take(r, &cn);
    if (rc < 0)
        return rc;
    rc = scratch_reserve(cn, n);
    if (rc < 0)
        goto out_give;

    for (size_t i = 0; i < n; i++) {
        int it = find_item(r, reqs[i].item_id);
        rq *q = &cn->rqs[i];
        cn->grp[i] = -1;
        if (it < 0) {
            outs[i].result = SK_UNKNOWN_ITEM;
            outs[i].order_id[0] = '\0';
            left[i] = -1;
            continue;
        }
        if (!reqs[i].user_id || !sk_id_valid(reqs[i].user_id, strlen(reqs[i].user_id))) {
            rc = -EINVAL; /* it would corrupt the '|'-separated records */
            goto out_give;
        }
        int g = 0;
        while (g < ngroups && cn->gitem[g] != it)
            g++;
        if (g == ngroups)
            cn->gitem[ngroups++] = it;
        cn->grp[i] = g;
        snprintf(q->verdict, sizeof q->verdict, "%d", (int)reqs[i].verdict);
        uuid_unparse_lower(reqs[i].request_id, q->rid);
        snprintf(q->dkey, sizeof q->dkey, "sk:{%s}:req:%s", r->items[it].id, q->rid);
    }
    if (ngroups == 0)
        goto out_give;

    for (int g = 0; g < ngroups; g++)
        cn->reps[g] = NULL;
    for (int g = 0; g < ngroups; g++) {
        rc = append_group(r, cn, reqs, n, g, now, 0);
        if (rc < 0) {
            broken = 1; /* part of a pipeline may be queued: do not reuse */
            goto out_free_replies;
        }
    }
    rc = read_replies(cn, ngroups, NULL);
    if (rc < 0) {
        broken = 1;
        goto out_free_replies;
    }

    /* NOSCRIPT: Redis restarted and lost its script cache; nothing ran, send
     * those groups again with the body (EVAL caches it for the next batch). */
    char *noscript = cn->noscript;
    for (int g = 0; g < ngroups; g++) {
        redisReply *rep = cn->reps[g];
        noscript[g] = rep->type == REDIS_REPLY_ERROR && reply_err(rep) == -ENOEXEC;
        if (noscript[g]) {
            freeReplyObject(rep);
            cn->reps[g] = NULL;
            nnoscript++;
        }
    }
    if (nnoscript) {
        for (int g = 0; g < ngroups; g++)
            if (noscript[g]) {
                rc = append_group(r, cn, reqs, n, g, now, 1);
                if (rc < 0) {
                    broken = 1;
                    goto out_free_replies;
                }
            }
        rc = read_replies(cn, ngroups, noscript);
        if (rc < 0) {
            broken = 1;
            goto out_free_replies;
        }
    }

    for (int g = 0; g < ngroups && rc == 0; g++)
        rc = parse_group(cn, n, g, cn->reps[g], outs, left);
    if (rc == 0 && r->min_acks)
        rc = wait_replicas(r, cn, &broken);

out_free_replies:
    for (int g = 0; g < ngroups; g++)
        if (cn->reps[g])
            freeReplyObject(cn->reps[g]);
out_give:
    conn_give(r, cn, broken);
    if (rc == -ESTALE) {
        /* another process started a new sale: the groups that ran decided
         * (their decisions are stored and answer the same again), the
         * others wrote nothing; the caller retries on the new keys */
        for (size_t i = 0; i < r->nitems; i++)
            epoch_read(r, i);
        rc = -EAGAIN;
    }
    return rc;
}

static int backend_known(void *impl, const char *item_id)
{
    return find_item(impl, item_id) >= 0;
}

sk_backend sk_redis_backend(sk_redis *r)
{
    return (sk_backend){.impl = r, .decide = backend_decide, .known = backend_known};
}

/* ---- queries ---- */

int sk_redis_ping(sk_redis *r)
{
    const char *argv[] = {"PING"};
    redisReply *rep = NULL;
    int rc = command(r, 0, 1, argv, NULL, &rep);
    if (rc < 0)
        return rc;
    if (rep->type == REDIS_REPLY_ERROR)
        rc = reply_err(rep);
    else if (rep->type != REDIS_REPLY_STATUS || strcmp(rep->str, "PONG") != 0)
        rc = -EPROTO;
    freeReplyObject(rep);
    return rc;
}

int64_t sk_redis_left(sk_redis *r, const char *item_id)
{
    char k[KEY_MAX];
    const char *argv[] = {"GET", k};
    redisReply *rep = NULL;
    int64_t v;
    char *end;
    if (!item_id || !sk_id_valid(item_id, strlen(item_id)))
        return -EINVAL;
    int it = find_item(r, item_id);
    int64_t e = it >= 0 ? epoch_read(r, (size_t)it) : 0; /* a new sale shows at once */
    if (e < 0)
        return e;
    ekey(k, item_id, (uint64_t)e, "stock");
    int rc = command(r, 0, 2, argv, NULL, &rep);
    if (rc < 0)
        return rc;
    if (rep->type == REDIS_REPLY_NIL) {
        v = -ENOENT;
    } else if (rep->type == REDIS_REPLY_STRING) {
        errno = 0;
        v = strtoll(rep->str, &end, 10);
        if (errno || *end || end == rep->str)
            v = -EPROTO;
    } else {
        v = rep->type == REDIS_REPLY_ERROR ? reply_err(rep) : -EPROTO;
    }
    freeReplyObject(rep);
    return v;
}

/* RAISE: the configured stock of an item went up to ARGV[1] (a reload). Add
 * the difference from the last total (sk:{I}:total, else the stock this
 * process was created with, ARGV[2]) to the units left, once: every gateway
 * and worker reloading the same file runs it, and only the first adds. */
static const char raise_lua[] =
    "if tonumber(redis.call('GET', KEYS[3]) or '0') ~= tonumber(ARGV[3]) then return -3 end\n"
    "if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end\n"
    "local t = tonumber(redis.call('GET', KEYS[2]) or ARGV[2])\n"
    "local n = tonumber(ARGV[1])\n"
    "if n <= t then return 0 end\n"
    "redis.call('INCRBY', KEYS[1], n - t)\n"
    "redis.call('SET', KEYS[2], ARGV[1])\n"
    "return n - t\n";

static int64_t redis_raise(sk_redis *r, size_t i, int64_t total)
{
    char ks[KEY_MAX], kt[KEY_MAX], ke[KEY_MAX], n[24], base[24], se[24];
    const ritem *it = &r->items[i];
    int64_t e = epoch_read(r, i);
    if (e < 0)
        return e;
    ekey(ks, it->id, (uint64_t)e, "stock");
    ekey(kt, it->id, (uint64_t)e, "total");
    key(ke, it->id, "epoch");
    snprintf(n, sizeof n, "%lld", (long long)total);
    snprintf(base, sizeof base, "%lld", (long long)it->stock);
    snprintf(se, sizeof se, "%lld", (long long)e);
    const char *argv[] = {"EVAL", raise_lua, "3", ks, kt, ke, n, base, se};
    redisReply *rep = NULL;
    int rc = command(r, 0, 9, argv, NULL, &rep);
    if (rc < 0)
        return rc;
    int64_t v = rep->type == REDIS_REPLY_INTEGER
                    ? (rep->integer == -3 ? -EAGAIN : rep->integer < 0 ? -ENOENT : rep->integer)
                : rep->type == REDIS_REPLY_ERROR ? reply_err(rep)
                                                 : -EPROTO;
    freeReplyObject(rep);
    return v;
}

/* ---- the sale as the admin API changes it ---- */

/* Parse a decimal Redis string reply (NIL: dflt). */
static int64_t reply_i64(const redisReply *rep, int64_t dflt)
{
    if (rep->type == REDIS_REPLY_NIL)
        return dflt;
    if (rep->type != REDIS_REPLY_STRING)
        return -EPROTO;
    char *end;
    errno = 0;
    long long v = strtoll(rep->str, &end, 10);
    return errno || *end || end == rep->str ? -EPROTO : v;
}

int sk_redis_item_state(sk_redis *r, size_t i, int64_t *stock, int64_t *left, uint32_t *limit,
                        uint64_t *epoch)
{
    char ks[KEY_MAX], kt[KEY_MAX], kl[KEY_MAX];
    const ritem *it = &r->items[i];
    int64_t e = epoch_read(r, i);
    if (e < 0)
        return (int)e;
    ekey(ks, it->id, (uint64_t)e, "stock");
    ekey(kt, it->id, (uint64_t)e, "total");
    key(kl, it->id, "limit");
    const char *argv[] = {"MGET", ks, kt, kl};
    redisReply *rep = NULL;
    int rc = command(r, 0, 4, argv, NULL, &rep);
    if (rc < 0)
        return rc;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 3) {
        rc = rep->type == REDIS_REPLY_ERROR ? reply_err(rep) : -EPROTO;
    } else {
        int64_t l = reply_i64(rep->element[0], -ENOENT);
        int64_t t = reply_i64(rep->element[1], it->stock);
        int64_t lim = reply_i64(rep->element[2], it->limit);
        rc = l < 0 ? (int)l : t < 0 ? (int)t : lim < 1 ? -EPROTO : 0;
        if (rc == 0) {
            *left = l;
            *stock = t;
            *limit = (uint32_t)lim;
            *epoch = (uint64_t)e;
        }
    }
    freeReplyObject(rep);
    return rc;
}

int sk_redis_set_stock(sk_redis *r, size_t i, int64_t total, int64_t *held)
{
    char ks[KEY_MAX], kt[KEY_MAX], ke[KEY_MAX], n[24], base[24], se[24];
    const ritem *it = &r->items[i];
    for (int attempt = 0;; attempt++) {
        uint64_t e = atomic_load(&it->epoch);
        const char *keys[] = {ks, kt, ke};
        const char *args[] = {n, base, se};
        ekey(ks, it->id, e, "stock");
        ekey(kt, it->id, e, "total");
        key(ke, it->id, "epoch");
        snprintf(n, sizeof n, "%lld", (long long)total);
        snprintf(base, sizeof base, "%lld", (long long)it->stock);
        snprintf(se, sizeof se, "%llu", (unsigned long long)e);
        redisReply *rep = NULL;
        int rc = script(r, SCRIPT_SETSTOCK, 3, keys, 3, args, &rep);
        if (rc < 0)
            return rc;
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
            rep->element[0]->type == REDIS_REPLY_INTEGER &&
            rep->element[1]->type == REDIS_REPLY_INTEGER) {
            if (held)
                *held = rep->element[1]->integer;
            rc = rep->element[0]->integer == 0 ? 0 : -EBUSY;
        } else if (rep->type == REDIS_REPLY_INTEGER) {
            rc = rep->integer == -3 ? -ESTALE : -ENOENT;
        } else {
            rc = rep->type == REDIS_REPLY_ERROR ? reply_err(rep) : -EPROTO;
        }
        freeReplyObject(rep);
        if (rc != -ESTALE || attempt == 2)
            return rc == -ESTALE ? -EAGAIN : rc;
        int64_t er = epoch_read(r, i); /* another process started a sale */
        if (er < 0)
            return (int)er;
    }
}

int sk_redis_set_limit(sk_redis *r, size_t i, uint32_t limit)
{
    char k[KEY_MAX], v[16];
    key(k, r->items[i].id, "limit");
    snprintf(v, sizeof v, "%u", limit);
    const char *argv[] = {"SET", k, v};
    redisReply *rep = NULL;
    int rc = command(r, 0, 3, argv, NULL, &rep);
    if (rc < 0)
        return rc;
    if (rep->type == REDIS_REPLY_ERROR)
        rc = reply_err(rep);
    freeReplyObject(rep);
    return rc;
}

int sk_redis_new_sale(sk_redis *r, const int64_t *stock, uint64_t *epoch)
{
    uint64_t next = 0;
    for (size_t i = 0; i < r->nitems; i++) { /* one number for every item: the highest + 1 */
        int64_t e = epoch_read(r, i);
        if (e < 0)
            return (int)e;
        if ((uint64_t)e >= next)
            next = (uint64_t)e + 1;
    }
    for (size_t i = 0; i < r->nitems; i++) {
        const ritem *it = &r->items[i];
        int64_t units = stock ? stock[i] : -1;
        if (units < 0) { /* the stock total in force */
            int64_t left;
            uint32_t limit;
            uint64_t e;
            int rc = sk_redis_item_state(r, i, &units, &left, &limit, &e);
            if (rc < 0)
                return rc;
        }
        char ke[KEY_MAX], ks[KEY_MAX], kt[KEY_MAX], se[24], su[24];
        const char *keys[] = {ke, ks, kt};
        const char *args[] = {se, su};
        key(ke, it->id, "epoch");
        ekey(ks, it->id, next, "stock");
        ekey(kt, it->id, next, "total");
        snprintf(se, sizeof se, "%llu", (unsigned long long)next);
        snprintf(su, sizeof su, "%lld", (long long)units);
        redisReply *rep = NULL;
        int rc = script(r, SCRIPT_NEWSALE, 3, keys, 2, args, &rep);
        if (rc < 0)
            return rc; /* the items done stay in the new sale: run it again to finish */
        if (rep->type != REDIS_REPLY_INTEGER)
            rc = rep->type == REDIS_REPLY_ERROR ? reply_err(rep) : -EPROTO;
        freeReplyObject(rep);
        if (rc < 0)
            return rc;
        epoch_read(r, i);
    }
    if (epoch)
        *epoch = next;
    return 0;
}

/* ---- orders ---- */

static int valid_ids(const char *item_id, const char *order_id)
{
    return item_id && order_id && sk_id_valid(item_id, strlen(item_id)) &&
           strlen(order_id) <= SK_ORDER_ID_MAX && sk_id_valid(order_id, strlen(order_id));
}

static int parse_u64(const char *s, size_t len, uint64_t *v)
{
    char buf[24], *end;
    if (len == 0 || len >= sizeof buf)
        return -EPROTO;
    memcpy(buf, s, len);
    buf[len] = '\0';
    errno = 0;
    unsigned long long x = strtoull(buf, &end, 10);
    if (errno || *end)
        return -EPROTO;
    *v = x;
    return 0;
}

/* "state|user|request|created_ms|deadline_ms[|sale]" */
static int parse_order(const char *rec, const char *item_id, sk_redis_order *o)
{
    const char *f[6];
    size_t flen[6];
    const char *p = rec;
    int nf = 0;
    for (; nf < 6; nf++) {
        const char *bar = strchr(p, '|');
        f[nf] = p;
        flen[nf] = bar ? (size_t)(bar - p) : strlen(p);
        if (!bar) {
            nf++;
            break;
        }
        p = bar + 1;
        if (nf == 5)
            return -EPROTO; /* a seventh field */
    }
    if (nf < 5)
        return -EPROTO;
    memset(o, 0, sizeof *o);
    if (flen[0] == 8 && memcmp(f[0], "reserved", 8) == 0)
        o->state = SK_ORDER_RESERVED;
    else if (flen[0] == 4 && memcmp(f[0], "paid", 4) == 0)
        o->state = SK_ORDER_PAID;
    else if (flen[0] == 9 && memcmp(f[0], "cancelled", 9) == 0)
        o->state = SK_ORDER_CANCELLED;
    else
        return -EPROTO;
    if (flen[1] == 0 || flen[1] > SK_ID_MAX || flen[2] != UUID_STR - 1)
        return -EPROTO;
    memcpy(o->user_id, f[1], flen[1]);
    strcpy(o->item_id, item_id);
    char rid[UUID_STR];
    memcpy(rid, f[2], flen[2]);
    rid[UUID_STR - 1] = '\0';
    if (uuid_parse(rid, o->request_id) != 0)
        return -EPROTO;
    if (parse_u64(f[3], flen[3], &o->created_ms) < 0 ||
        parse_u64(f[4], flen[4], &o->pay_deadline_ms) < 0)
        return -EPROTO;
    return 0;
}

int sk_redis_order_get(sk_redis *r, const char *item_id, const char *order_id, sk_redis_order *o)
{
    char k[KEY_MAX];
    const char *argv[] = {"HGET", k, order_id};
    redisReply *rep = NULL;
    int rc;
    if (!valid_ids(item_id, order_id))
        return -EINVAL;
    key(k, item_id, "orders");
    rc = command(r, 0, 3, argv, NULL, &rep);
    if (rc < 0)
        return rc;
    if (rep->type == REDIS_REPLY_NIL)
        rc = -ENOENT;
    else if (rep->type == REDIS_REPLY_STRING)
        rc = parse_order(rep->str, item_id, o);
    else
        rc = rep->type == REDIS_REPLY_ERROR ? reply_err(rep) : -EPROTO;
    freeReplyObject(rep);
    return rc;
}

int sk_redis_order_pay(sk_redis *r, const char *item_id, const char *order_id, uint64_t now_ms)
{
    char korders[KEY_MAX], kdead[KEY_MAX], kevents[KEY_MAX], snow[24];
    const char *keys[] = {korders, kdead, kevents};
    const char *args[] = {order_id, snow, item_id};
    redisReply *rep = NULL;
    int rc;
    if (!valid_ids(item_id, order_id))
        return -EINVAL;
    key(korders, item_id, "orders");
    key(kdead, item_id, "deadlines");
    key(kevents, item_id, "events");
    snprintf(snow, sizeof snow, "%llu", (unsigned long long)now_ms);
    rc = script(r, SCRIPT_PAY, 3, keys, 3, args, &rep);
    if (rc < 0)
        return rc;
    if (rep->type == REDIS_REPLY_ERROR)
        rc = reply_err(rep);
    else if (rep->type != REDIS_REPLY_INTEGER)
        rc = -EPROTO;
    else if (rep->integer >= 0)
        rc = 0;
    else if (rep->integer == -1)
        rc = -ENOENT;
    else if (rep->integer == -2)
        rc = -ECANCELED;
    else
        rc = -ETIME;
    freeReplyObject(rep);
    return rc;
}

static int reap_item(sk_redis *r, const ritem *it, uint64_t now_ms, int *cancelled)
{
    char kstock[KEY_MAX], kusers[KEY_MAX], korders[KEY_MAX], kdead[KEY_MAX], kevents[KEY_MAX];
    char kepoch[KEY_MAX], kcur[KEY_MAX], snow[24], smax[16], sepoch[24];
    const char *keys[] = {kstock, kusers, korders, kdead, kevents, kepoch, kcur};
    const char *args[] = {snow, smax, it->id, sepoch};
    uint64_t epoch = atomic_load(&it->epoch);
    ekey(kstock, it->id, epoch, "stock");
    ekey(kusers, it->id, epoch, "users");
    key(korders, it->id, "orders");
    key(kdead, it->id, "deadlines");
    key(kevents, it->id, "events");
    key(kepoch, it->id, "epoch");
    key(kcur, it->id, "reaped");
    snprintf(snow, sizeof snow, "%llu", (unsigned long long)now_ms);
    snprintf(smax, sizeof smax, "%d", REAP_BATCH);
    snprintf(sepoch, sizeof sepoch, "%llu", (unsigned long long)epoch);
    for (;;) {
        redisReply *rep = NULL;
        long long looked;
        int rc = script(r, SCRIPT_REAP, 7, keys, 4, args, &rep);
        if (rc < 0)
            return rc;
        if (rep->type == REDIS_REPLY_ERROR)
            rc = reply_err(rep);
        else if (rep->type == REDIS_REPLY_INTEGER)
            rc = rep->integer == -1 ? -ENOENT : rep->integer == -3 ? -ESTALE : -EPROTO;
        else if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
                 rep->element[0]->type != REDIS_REPLY_INTEGER ||
                 rep->element[1]->type != REDIS_REPLY_INTEGER)
            rc = -EPROTO;
        if (rc < 0) {
            freeReplyObject(rep);
            return rc;
        }
        *cancelled += (int)rep->element[0]->integer;
        looked = rep->element[1]->integer;
        freeReplyObject(rep);
        if (looked < REAP_BATCH)
            return 0;
    }
}

int sk_redis_reap(sk_redis *r, uint64_t now_ms)
{
    int cancelled = 0, err = 0;
    for (size_t i = 0; i < r->nitems; i++) {
        int rc = reap_item(r, &r->items[i], now_ms, &cancelled);
        if (rc == -ESTALE && epoch_read(r, i) >= 0) /* a new sale: its keys now */
            rc = reap_item(r, &r->items[i], now_ms, &cancelled);
        if (rc < 0 && !err)
            err = rc; /* go on: one item's trouble does not hold up the others */
    }
    return err ? err : cancelled;
}

/* ---- order events ---- */

static const char *field(const redisReply *kv, const char *name)
{
    for (size_t i = 0; i + 1 < kv->elements; i += 2)
        if (kv->element[i]->type == REDIS_REPLY_STRING &&
            kv->element[i + 1]->type == REDIS_REPLY_STRING &&
            strcmp(kv->element[i]->str, name) == 0)
            return kv->element[i + 1]->str;
    return NULL;
}

/* Pass the entries of an XREADGROUP reply to fn. Returns how many were
 * passed; OUT: *nentries, how many the reply held. */
static int deliver_events(const redisReply *rep, sk_redis_event_fn fn, void *arg, int *nentries)
{
    int count = 0;
    *nentries = 0;
    if (rep->type == REDIS_REPLY_NIL)
        return 0; /* BLOCK ran out */
    if (rep->type != REDIS_REPLY_ARRAY)
        return -EPROTO;
    for (size_t s = 0; s < rep->elements; s++) {
        const redisReply *st = rep->element[s];
        if (st->type != REDIS_REPLY_ARRAY || st->elements != 2 ||
            st->element[1]->type != REDIS_REPLY_ARRAY)
            return -EPROTO;
        const redisReply *entries = st->element[1];
        for (size_t e = 0; e < entries->elements; e++) {
            const redisReply *en = entries->element[e];
            if (en->type != REDIS_REPLY_ARRAY || en->elements != 2 ||
                en->element[0]->type != REDIS_REPLY_STRING)
                return -EPROTO;
            const redisReply *kv = en->element[1];
            (*nentries)++;
            if (kv->type != REDIS_REPLY_ARRAY)
                continue; /* trimmed away while pending: nothing to deliver */
            const char *at = field(kv, "at"), *dl = field(kv, "deadline");
            sk_redis_event ev = {
                .id = en->element[0]->str,
                .type = field(kv, "type"),
                .order_id = field(kv, "order"),
                .item_id = field(kv, "item"),
                .user_id = field(kv, "user"),
                .request_id = field(kv, "request"),
                .at_ms = at ? strtoull(at, NULL, 10) : 0,
                .pay_deadline_ms = dl ? strtoull(dl, NULL, 10) : 0,
            };
            if (!ev.type || !ev.order_id || !ev.item_id || !ev.user_id || !ev.request_id)
                return -EPROTO;
            if (fn(arg, &ev) < 0)
                return count;
            count++;
        }
    }
    return count;
}

static int xreadgroup(sk_redis *r, const char *k, const char *group, const char *consumer,
                      size_t max, const char *from, uint32_t block_ms, redisReply **rep)
{
    char scount[24], sblock[16];
    const char *argv[12];
    int argc = 0, rc, created = 0;
    snprintf(scount, sizeof scount, "%zu", max);
    snprintf(sblock, sizeof sblock, "%u", block_ms);
    argv[argc++] = "XREADGROUP";
    argv[argc++] = "GROUP";
    argv[argc++] = group;
    argv[argc++] = consumer;
    argv[argc++] = "COUNT";
    argv[argc++] = scount;
    if (block_ms) {
        argv[argc++] = "BLOCK";
        argv[argc++] = sblock;
    }
    argv[argc++] = "STREAMS";
    argv[argc++] = k;
    argv[argc++] = from;
    for (;;) {
        rc = command(r, block_ms ? r->timeout_ms + block_ms : 0, argc, argv, NULL, rep);
        if (rc < 0 || (*rep)->type != REDIS_REPLY_ERROR)
            return rc;
        rc = reply_err(*rep);
        freeReplyObject(*rep);
        if (rc != -ENOENT || created)
            return rc;
        /* NOGROUP: create it at the start of the stream, so the group sees
         * every order event ever written; a concurrent creator wins. */
        const char *cargv[] = {"XGROUP", "CREATE", k, group, "0", "MKSTREAM"};
        rc = command(r, 0, 6, cargv, NULL, rep);
        if (rc < 0)
            return rc;
        if ((*rep)->type == REDIS_REPLY_ERROR && strncmp((*rep)->str, "BUSYGROUP", 9) != 0)
            rc = reply_err(*rep);
        freeReplyObject(*rep);
        if (rc < 0)
            return rc;
        created = 1;
    }
}

int sk_redis_events_read(sk_redis *r, const char *item_id, const char *group, const char *consumer,
                         size_t max, uint32_t block_ms, sk_redis_event_fn fn, void *arg)
{
    char k[KEY_MAX];
    redisReply *rep = NULL;
    int rc, entries = 0;
    if (!item_id || !sk_id_valid(item_id, strlen(item_id)) || !group || !*group || !consumer ||
        !*consumer || !max || !fn)
        return -EINVAL;
    key(k, item_id, "events");
    /* this consumer's delivered-but-unacknowledged entries first */
    rc = xreadgroup(r, k, group, consumer, max, "0", 0, &rep);
    if (rc < 0)
        return rc;
    rc = deliver_events(rep, fn, arg, &entries);
    freeReplyObject(rep);
    if (rc != 0 || entries)
        return rc;
    rc = xreadgroup(r, k, group, consumer, max, ">", block_ms, &rep);
    if (rc < 0)
        return rc;
    rc = deliver_events(rep, fn, arg, &entries);
    freeReplyObject(rep);
    return rc;
}

int sk_redis_events_ack(sk_redis *r, const char *item_id, const char *group, const char *const *ids,
                        size_t n)
{
    char k[KEY_MAX];
    const char **argv = NULL;
    redisReply *rep = NULL;
    int rc;
    if (!item_id || !sk_id_valid(item_id, strlen(item_id)) || !group || (!ids && n))
        return -EINVAL;
    if (n == 0)
        return 0;
    argv = malloc((3 + n) * sizeof *argv);
    if (!argv)
        return -ENOMEM;
    key(k, item_id, "events");
    argv[0] = "XACK";
    argv[1] = k;
    argv[2] = group;
    for (size_t i = 0; i < n; i++)
        argv[3 + i] = ids[i];
    rc = command(r, 0, (int)(3 + n), argv, NULL, &rep);
    if (rc < 0)
        goto out_free_argv;
    if (rep->type == REDIS_REPLY_INTEGER)
        rc = (int)rep->integer;
    else
        rc = rep->type == REDIS_REPLY_ERROR ? reply_err(rep) : -EPROTO;
    freeReplyObject(rep);
out_free_argv:
    free(argv);
    return rc;
}

int sk_redis_open(const char *host, int port, uint32_t timeout_ms, const sk_redis_item *items,
                  size_t nitems, uint32_t patience_ms, sk_redis **out)
{
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int rc = sk_redis_create(host, port, timeout_ms, items, nitems, out);
        if (rc != -ETIMEDOUT && rc != -ECONNREFUSED && rc != -ECONNRESET && rc != -EAGAIN &&
            rc != -EIO)
            return rc;
        clock_gettime(CLOCK_MONOTONIC, &now);
        uint64_t spent = (uint64_t)(now.tv_sec - t0.tv_sec) * 1000 +
                         (uint64_t)((now.tv_nsec - t0.tv_nsec) / 1000000);
        if (spent >= patience_ms)
            return rc;
        struct timespec pause = {0, 100 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
}

/* ---- the store interface (store.h) over Redis ---- */

#include "store_impl.h"

typedef struct redis_store {
    sale_store base; /* first: the handle callers hold */
    sk_redis *r;
    size_t nitems;
    char (*ids)[SK_ID_MAX + 1]; /* the configured items, in their order */
} redis_store;

static redis_store *rs_of(sale_store *s)
{
    return (redis_store *)s;
}

static void rs_destroy(sale_store *s)
{
    redis_store *m = rs_of(s);
    sk_redis_destroy(m->r);
    free(m->ids);
    free(m);
}

static mq *rs_queue(sale_store *s)
{
    (void)s;
    return NULL; /* order events live in Redis streams */
}

static int64_t rs_left(sale_store *s, size_t i)
{
    redis_store *m = rs_of(s);
    if (i >= m->nitems)
        return -ERANGE;
    return sk_redis_left(m->r, m->ids[i]);
}

static int rs_stats(sale_store *s, size_t i, sale_item_stats *out)
{
    (void)s, (void)i, (void)out;
    return -ENODATA; /* counted in Redis, not here: a round trip per item */
}

/* Orders are kept per item (the item is the hash tag): find order_id among
 * the items. 0 with *item set, or negative errno. */
static int rs_order_find(redis_store *m, const char *order_id, sk_order *o, size_t *item)
{
    int last = -ENOENT;
    for (size_t i = 0; i < m->nitems; i++) {
        int rc = sk_redis_order_get(m->r, m->ids[i], order_id, o);
        if (rc == 0) {
            *item = i;
            return 0;
        }
        if (rc != -ENOENT)
            last = rc;
    }
    return last;
}

static int rs_order_get(sale_store *s, const char *order_id, sk_order *o)
{
    size_t i = 0;
    return rs_order_find(rs_of(s), order_id, o, &i);
}

static int rs_order_pay(sale_store *s, const char *order_id, uint64_t now_ms, sk_order *o)
{
    redis_store *m = rs_of(s);
    size_t i = 0; /* set when rs_order_find returns 0 */
    int rc = rs_order_find(m, order_id, o, &i);
    if (rc == 0)
        rc = sk_redis_order_pay(m->r, m->ids[i], order_id, now_ms);
    if (rc == 0)
        o->state = SK_ORDER_PAID;
    return rc;
}

static int rs_reap(sale_store *s, uint64_t now_ms)
{
    return sk_redis_reap(rs_of(s)->r, now_ms);
}

static int rs_ping(sale_store *s)
{
    return sk_redis_ping(rs_of(s)->r);
}

static int64_t rs_raise(sale_store *s, size_t i, int64_t total)
{
    redis_store *m = rs_of(s);
    if (i >= m->nitems)
        return -ERANGE;
    return redis_raise(m->r, i, total);
}

/* One stream per item, numbered as the items. */
static size_t rs_event_streams(const sale_store *s)
{
    return ((const redis_store *)s)->nitems;
}

static int rs_events_read(sale_store *s, size_t stream, const char *group, const char *consumer,
                          size_t max, uint32_t block_ms, sale_event_fn fn, void *arg)
{
    redis_store *m = rs_of(s);
    return sk_redis_events_read(m->r, m->ids[stream], group, consumer, max, block_ms, fn, arg);
}

static int rs_events_ack(sale_store *s, size_t stream, const char *group, const char *const *ids,
                         size_t n)
{
    redis_store *m = rs_of(s);
    return sk_redis_events_ack(m->r, m->ids[stream], group, ids, n);
}

static int rs_item_state(sale_store *s, size_t i, sale_item_state *out)
{
    redis_store *m = rs_of(s);
    return sk_redis_item_state(m->r, i, &out->stock, &out->left, &out->per_user_limit,
                               &out->epoch);
}

static int rs_set_stock(sale_store *s, size_t i, int64_t total, int64_t *held)
{
    return sk_redis_set_stock(rs_of(s)->r, i, total, held);
}

static int rs_set_limit(sale_store *s, size_t i, uint32_t limit)
{
    return sk_redis_set_limit(rs_of(s)->r, i, limit);
}

static int rs_new_sale(sale_store *s, const int64_t *stock, uint64_t *epoch)
{
    return sk_redis_new_sale(rs_of(s)->r, stock, epoch);
}

static uint64_t rs_replica_ack_timeouts(sale_store *s)
{
    return sk_redis_replica_ack_timeouts(rs_of(s)->r);
}

static const sale_store_ops rs_ops = {.destroy = rs_destroy,
                                      .raise = rs_raise,
                                      .item_state = rs_item_state,
                                      .set_stock = rs_set_stock,
                                      .set_limit = rs_set_limit,
                                      .new_sale = rs_new_sale,
                                      .queue = rs_queue,
                                      .left = rs_left,
                                      .stats = rs_stats,
                                      .order_get = rs_order_get,
                                      .order_pay = rs_order_pay,
                                      .reap = rs_reap,
                                      .ping = rs_ping,
                                      .event_streams = rs_event_streams,
                                      .events_read = rs_events_read,
                                      .events_ack = rs_events_ack,
                                      .replica_ack_timeouts = rs_replica_ack_timeouts};

int sale__store_redis_create(const sale_store_config *c, sale_store **out, char *err,
                             size_t errlen)
{
    int rc = -ENOMEM;
    redis_store *m = calloc(1, sizeof *m);
    sk_redis_item *ri = calloc(c->nitems ? c->nitems : 1, sizeof *ri);
    if (!m || !ri)
        goto out_oom;
    m->base.ops = &rs_ops;
    m->nitems = c->nitems;
    m->ids = calloc(c->nitems ? c->nitems : 1, sizeof *m->ids);
    if (!m->ids)
        goto out_oom;
    for (size_t i = 0; i < c->nitems; i++) {
        snprintf(m->ids[i], sizeof m->ids[i], "%s", c->items[i].id);
        ri[i] = (sk_redis_item){c->items[i].id, c->items[i].stock, c->items[i].per_user_limit,
                                c->pay_timeout_ms};
    }
    rc = sk_redis_open(c->redis_host, c->redis_port, c->redis_timeout_ms, ri, c->nitems,
                       c->redis_patience_ms, &m->r);
    if (rc < 0) {
        snprintf(err, errlen, "redis %s:%u: %s", c->redis_host, (unsigned)c->redis_port,
                 strerror(-rc));
        goto out_destroy;
    }
    sk_redis_set_replica_ack(m->r, c->min_replicas_ack, c->replica_ack_timeout_ms);
    m->base.be = sk_redis_backend(m->r);
    free(ri);
    *out = &m->base;
    return 0;

out_oom:
    snprintf(err, errlen, "out of memory");
out_destroy:
    if (m)
        rs_destroy(&m->base);
    free(ri);
    return rc;
}
