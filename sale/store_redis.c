/*
 * store_redis.c - the Redis store.
 *
 * Keys. Every key of an item carries the hash tag {I} (I = item id), so all
 * keys one script touches live in one Redis Cluster slot. Every key a script
 * touches is passed in KEYS; the scripts build none.
 *
 *   sk:{I}:stock        string  units left. Written by sk_redis_create (SET NX:
 *                               preheat only when absent, so a restarted worker
 *                               continues the sale), DECR by DECIDE, INCR by REAP.
 *   sk:{I}:req:<R>      string  "result|order_id", the decision of request R
 *                               (UUID text), PX 24 h. Written by DECIDE only.
 *   sk:{I}:users        hash    user -> "count|last_order_id": purchases that
 *                               count against the per-user limit. DECIDE adds,
 *                               REAP subtracts (field deleted at 0).
 *   sk:{I}:orders       hash    order_id -> "state|user|R|created_ms|deadline_ms",
 *                               state reserved -> paid (PAY) or -> cancelled
 *                               (REAP). Written by DECIDE, PAY, REAP.
 *   sk:{I}:deadlines    zset    order_id scored by pay deadline (unix ms),
 *                               reserved orders only. DECIDE adds; PAY and
 *                               REAP remove.
 *   sk:{I}:events       stream  one entry per order transition: type
 *                               reserved|paid|cancelled, order, item, user,
 *                               request, at, deadline. XADD by DECIDE, PAY and
 *                               REAP in the same script as the transition;
 *                               read by sk_redis_events_read in consumer groups.
 *
 * DECIDE (one call per item per batch; the batch's calls are pipelined):
 *   1. no stock key -> return -1 (the batch fails with -ENOENT; nothing written)
 *   2. per request, in batch order:
 *      a. a stored decision exists -> answer it, whatever the verdict now,
 *         and refresh its TTL (a write, so the WAIT below covers it, and
 *         with it every write before, the decision itself included)
 *      b. verdict is not success -> store and answer the verdict
 *      c. the user's count >= limit -> already_purchased with the last order
 *      d. stock <= 0 -> sold_out
 *      e. DECR stock, count the user, write the order (reserved), its
 *         deadline, and XADD the reserved event; answer success
 *      f. store the decision with its TTL
 *   The order id is generated in C (libuuid) and passed in ARGV; it is used
 *   only when the request buys. Redis runs a script atomically, so the stock
 *   taken, the order and its event exist together or not at all.
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
 * REAP: take up to REAP_BATCH orders whose deadline <= now from the zset and
 *   remove them; each one still reserved -> cancelled, INCR stock, the user's
 *   count - 1, XADD cancelled. The state check inside the script makes the
 *   return of stock happen once, however many reapers run.
 *
 * Connections: a pool of SK_REDIS_POOL hiredis contexts, each borrowed by one
 * thread for one call. A context that saw an I/O error or a timeout is freed
 * (a late reply would desynchronise it) and the pool generation goes up, so
 * idle contexts opened before the failure are dropped too instead of each
 * failing one more call. Reconnects happen on the next call, at most one
 * attempt per backoff period while Redis is unreachable.
 */
#include "store_redis.h"
#include "redis_conn.h"
#include "redis_scripts.h"
#include "uuid4.h"

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

enum { SCRIPT_DECIDE, SCRIPT_PAY, SCRIPT_REAP, NSCRIPTS };

static const char *const script_body[NSCRIPTS] = {sk__redis_decide_lua, sk__redis_pay_lua,
                                                  sk__redis_reap_lua};

typedef struct ritem {
    char id[SK_ID_MAX + 1];
    int64_t stock;
    uint32_t limit;
    uint32_t pay_timeout_ms;
} ritem;

/* decide() strings of one request, alive until its group's command is sent */
typedef struct rq {
    char verdict[8];
    char rid[UUID_STR];
    char oid[UUID_STR];
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

static int find_item(const sk_redis *r, const char *id)
{
    for (size_t i = 0; i < r->nitems; i++)
        if (strcmp(r->items[i].id, id) == 0)
            return (int)i;
    return -ENOENT;
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
    snprintf(nk, sizeof nk, "%d", nkeys);
    argv[argc++] = "EVALSHA";
    argv[argc++] = r->sha[which];
    argv[argc++] = nk;
    for (int i = 0; i < nkeys; i++)
        argv[argc++] = keys[i];
    for (int i = 0; i < nargs; i++)
        argv[argc++] = args[i];
    rc = command(r, 0, argc, argv, NULL, reply);
    if (rc == 0 && (*reply)->type == REDIS_REPLY_ERROR && sk__redis_reply_err(*reply) == -ENOEXEC) {
        freeReplyObject(*reply);
        argv[0] = "EVAL";
        argv[1] = script_body[which];
        rc = command(r, 0, argc, argv, NULL, reply);
    }
    return rc;
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
            rc = rep->type == REDIS_REPLY_ERROR ? sk__redis_reply_err(rep) : -EPROTO;
            goto out_free_reply;
        }
        memcpy(r->sha[s], rep->str, 41);
        freeReplyObject(rep);
    }
    for (size_t i = 0; i < r->nitems; i++) {
        char k[KEY_MAX], v[32];
        const char *argv[] = {"SET", k, v, "NX"};
        if (key(k, r->items[i].id, "stock") < 0)
            return -ENAMETOOLONG;
        snprintf(v, sizeof v, "%lld", (long long)r->items[i].stock);
        rc = command(r, 0, 4, argv, NULL, &rep);
        if (rc < 0)
            return rc;
        /* OK when set, nil when the sale already has stock in Redis */
        if (rep->type == REDIS_REPLY_ERROR) {
            rc = sk__redis_reply_err(rep);
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
    const char **argv = realloc(cn->argv, (14 + 5 * cap) * sizeof *argv);
    if (argv)
        cn->argv = argv;
    size_t *argvlen = realloc(cn->argvlen, (14 + 5 * cap) * sizeof *argvlen);
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
    char nk[16], snow[24], sdeadline[24], slimit[16], sttl[16];
    char kstock[KEY_MAX], kusers[KEY_MAX], korders[KEY_MAX], kdead[KEY_MAX], kevents[KEY_MAX];
    const char **argv = cn->argv;
    size_t m = 0, argc = 0, k;

    for (size_t i = 0; i < n; i++)
        m += cn->grp[i] == g;
    if (key(kstock, it->id, "stock") < 0 || key(kusers, it->id, "users") < 0 ||
        key(korders, it->id, "orders") < 0 || key(kdead, it->id, "deadlines") < 0 ||
        key(kevents, it->id, "events") < 0)
        return -ENAMETOOLONG;
    snprintf(nk, sizeof nk, "%zu", 5 + m);
    snprintf(snow, sizeof snow, "%llu", (unsigned long long)now);
    snprintf(sdeadline, sizeof sdeadline, "%llu", (unsigned long long)(now + it->pay_timeout_ms));
    snprintf(slimit, sizeof slimit, "%u", it->limit);
    snprintf(sttl, sizeof sttl, "%u", (unsigned)SK_REDIS_DECISION_TTL_MS);

    argv[argc++] = by_body ? "EVAL" : "EVALSHA";
    argv[argc++] = by_body ? sk__redis_decide_lua : r->sha[SCRIPT_DECIDE];
    argv[argc++] = nk;
    argv[argc++] = kstock;
    argv[argc++] = kusers;
    argv[argc++] = korders;
    argv[argc++] = kdead;
    argv[argc++] = kevents;
    for (size_t i = 0; i < n; i++)
        if (cn->grp[i] == g)
            argv[argc++] = cn->rqs[i].dkey;
    argv[argc++] = snow;
    argv[argc++] = sdeadline;
    argv[argc++] = slimit;
    argv[argc++] = sttl;
    argv[argc++] = it->id;
    argv[argc++] = "1"; /* one stock per item: an empty one is sold out */
    for (size_t i = 0; i < n; i++)
        if (cn->grp[i] == g) {
            argv[argc++] = cn->rqs[i].verdict;
            argv[argc++] = reqs[i].user_id;
            argv[argc++] = cn->rqs[i].rid;
            argv[argc++] = cn->rqs[i].oid;
        }
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
        return sk__redis_reply_err(rep);
    if (rep->type == REDIS_REPLY_INTEGER)
        return rep->integer == -1 ? -ENOENT : -EPROTO;
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
        rc = sk__redis_reply_err(rep);
    else if (rep->type != REDIS_REPLY_INTEGER)
        rc = -EPROTO;
    else if (rep->integer >= (long long)r->min_acks)
        rc = 0;
    else
        rc = -ETIMEDOUT;
    if (rc == -ETIMEDOUT || rc == 0) {
        int was = atomic_exchange(&r->acks_short, rc < 0);
        if (rc < 0 && !was)
            fprintf(stderr, "sale: redis %s:%d: %lld of %u replicas acknowledged within %u ms: "
                            "purchases wait (504 at their deadline) until they do\n",
                    r->host, r->port, rep->integer, r->min_acks, r->ack_timeout_ms);
        else if (rc == 0 && was)
            fprintf(stderr, "sale: redis %s:%d: %u replicas acknowledge again\n", r->host,
                    r->port, r->min_acks);
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
        q->oid[0] = '\0';
        if (reqs[i].verdict == SK_SUCCESS) {
            uuid_t u;
            sk_uuid4(u);
            uuid_unparse_lower(u, q->oid);
        }
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
        noscript[g] = rep->type == REDIS_REPLY_ERROR && sk__redis_reply_err(rep) == -ENOEXEC;
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
        rc = sk__redis_reply_err(rep);
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
    key(k, item_id, "stock");
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
        v = rep->type == REDIS_REPLY_ERROR ? sk__redis_reply_err(rep) : -EPROTO;
    }
    freeReplyObject(rep);
    return v;
}

/* ---- orders ---- */

static int valid_ids(const char *item_id, const char *order_id)
{
    return item_id && order_id && sk_id_valid(item_id, strlen(item_id)) &&
           strlen(order_id) <= SK_ORDER_ID_MAX && sk_id_valid(order_id, strlen(order_id));
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
        rc = sk__redis_parse_order(rep->str, item_id, o);
    else
        rc = rep->type == REDIS_REPLY_ERROR ? sk__redis_reply_err(rep) : -EPROTO;
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
        rc = sk__redis_reply_err(rep);
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
    char snow[24], smax[16];
    const char *keys[] = {kstock, kusers, korders, kdead, kevents};
    const char *args[] = {snow, smax, it->id};
    key(kstock, it->id, "stock");
    key(kusers, it->id, "users");
    key(korders, it->id, "orders");
    key(kdead, it->id, "deadlines");
    key(kevents, it->id, "events");
    snprintf(snow, sizeof snow, "%llu", (unsigned long long)now_ms);
    snprintf(smax, sizeof smax, "%d", REAP_BATCH);
    for (;;) {
        redisReply *rep = NULL;
        long long looked;
        int rc = script(r, SCRIPT_REAP, 5, keys, 3, args, &rep);
        if (rc < 0)
            return rc;
        if (rep->type == REDIS_REPLY_ERROR)
            rc = sk__redis_reply_err(rep);
        else if (rep->type == REDIS_REPLY_INTEGER)
            rc = rep->integer == -1 ? -ENOENT : -EPROTO;
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
        if (rc < 0 && !err)
            err = rc; /* go on: one item's trouble does not hold up the others */
    }
    return err ? err : cancelled;
}

/* ---- order events ---- */

/* How the shared stream readers (redis_scripts.h) reach this Redis. */
static int send_cmd(void *ctx, uint32_t block_ms, int argc, const char **argv, redisReply **rep)
{
    sk_redis *r = ctx;
    return command(r, block_ms ? r->timeout_ms + block_ms : 0, argc, argv, NULL, rep);
}

int sk_redis_events_read(sk_redis *r, const char *item_id, const char *group, const char *consumer,
                         size_t max, uint32_t block_ms, sk_redis_event_fn fn, void *arg)
{
    char k[KEY_MAX];
    if (!item_id || !sk_id_valid(item_id, strlen(item_id)))
        return -EINVAL;
    key(k, item_id, "events");
    return sk__redis_events_read(send_cmd, r, k, group, consumer, max, block_ms, fn, arg);
}

int sk_redis_events_ack(sk_redis *r, const char *item_id, const char *group, const char *const *ids,
                        size_t n)
{
    char k[KEY_MAX];
    if (!item_id || !sk_id_valid(item_id, strlen(item_id)))
        return -EINVAL;
    key(k, item_id, "events");
    return sk__redis_events_ack(send_cmd, r, k, group, ids, n);
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

static uint64_t rs_replica_ack_timeouts(sale_store *s)
{
    return sk_redis_replica_ack_timeouts(rs_of(s)->r);
}

static const sale_store_ops rs_ops = {.destroy = rs_destroy,
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

int sale__store_redis_create(const sale_store_config *c, sale_store **out, char *err, size_t errlen)
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
