/*
 * store_cluster.c - the Redis Cluster store.
 *
 * Buckets. Item I's stock is split into B buckets (store_cluster.h gives
 * their hash tags T). Bucket b starts with stock/B units (the first
 * stock%B buckets one more). Every bucket has the keys of the single-Redis
 * store (store_redis.c) under its own tag, and the same scripts run on them
 * (redis_scripts.c), so within a bucket every rule of backend.h holds by
 * one atomic script call:
 *   sk:{T}:stock, :users, :orders, :deadlines, :events, :reaped, :latest, :req:<R>
 * plus, for moving units between buckets:
 *   sk:{T}:xout      hash    transfer id X -> "to|units|created_ms": units
 *                            taken out of this bucket and not yet known to
 *                            have arrived. Written by TAKE, removed by CLEAR.
 *   sk:{T}:xin:<X>   string  transfer X arrived here (PX 24 h). Written by GIVE.
 *   sk:{T}:ver       counter raised by every unit that comes into the
 *                            bucket's stock from elsewhere (GIVE, REAP, RAISE).
 *   sk:{T}:total     bucket 0 only: the item's stock total, set (NX) with
 *                            the buckets' stock by the first process, and by
 *                            RAISE, which adds the units to bucket 0's stock
 *                            in the same script (absent, in a sale started
 *                            before it existed: the configured stock).
 * and per item sk:{I}:buckets, the bucket count (SET NX by the first process),
 * and sk:{I}:limit, the per-user limit the admin API set (absent: the
 * configured one; see limits_refresh).
 *
 * A user buys from bucket hash(user) mod B, always the same: the per-user
 * limit and a request's stored decision (kept in the user's bucket) stay
 * atomic. Order events are per bucket stream; an order id is found by
 * asking every bucket.
 *
 * Deciding a batch: one DECIDE call per (item, bucket), pipelined per node,
 * with final = 0: a request that meets an empty bucket is answered EMPTY
 * and nothing is recorded for it. For each bucket r with EMPTY requests,
 * REFILL:
 *   1. PROBE every bucket of the item: stock, xout records, ver. A bucket
 *      with xout records: RESUME them (below) and decide again.
 *   2. Donors: the other buckets with stock, largest first; move
 *      max(need, half the donor's stock) from each until the need is met
 *      (TRANSFER, below); decide again.
 *   3. Nothing anywhere: PROBE again. Still no stock, no record, and no
 *      bucket's ver changed: no unit can have been on its way between the
 *      two scans (units only enter a bucket by GIVE, REAP or RAISE, which
 *      raise ver), so the item was sold out at the second scan; decide again with
 *      final = 1, which records sold_out where the bucket is still empty.
 * After XFER_ROUNDS rounds with requests still EMPTY (others took every
 * unit moved), those are answered SK_UNAVAILABLE (left for redelivery).
 * So are the requests of a bucket whose node failed (no answer, WAIT short
 * of min_replicas_ack, a failed refill) while other buckets answered: one
 * shard's trouble does not hold up the others. When no request of the
 * batch was decided, the call fails and the worker retries the batch.
 *
 * TRANSFER of units from bucket d to bucket r under a fresh id X, in
 * halves, each one atomic script on its own bucket's node:
 *   TAKE(d, X):  record X exists -> rewrite it, answer its units (resume);
 *                else units = min(asked, stock); DECRBY stock; HSET xout X.
 *   GIVE(r, X):  marker xin:X exists -> nothing (already given); else
 *                INCRBY stock units, INCR ver, SET xin:X PX 24 h.
 *   CLEAR(d, X): HDEL xout X.
 * With min_replicas_ack, TAKE and GIVE are each followed by WAIT, and GIVE
 * is sent only after TAKE was acknowledged: a failover cannot lose a TAKE
 * whose units were given (which would count them twice), nor a GIVE whose
 * record was cleared (which would lose them).
 * RESUME(d, X) is TRANSFER of record X with TAKE in resume mode (an absent
 * record takes nothing, so a record cleared meanwhile is not taken again).
 * Every worker resumes the records it finds: in REFILL and after each REAP
 * round, so a worker killed between the halves leaves a record the next
 * one completes.
 *
 * Invariants (per item, S = the stock total, plus units returned by REAP as
 * in the single-Redis store):
 *   S = sum over buckets of stock + sum of xout records whose X has no xin
 *       marker at its receiver + orders reserved or paid.
 *   TAKE before GIVE before CLEAR for every X, so a unit is counted in
 *   exactly one of the three at every moment; GIVE once per X (the marker
 *   outlives by 24 h any worker that read the record before CLEAR).
 *   sold_out is recorded only by a final DECIDE on an empty bucket after
 *   two scans showed every bucket empty with no unit in transit.
 * A TAKE, GIVE or DECIDE that ran on a master that died before a replica had
 * it (min_replicas_ack = 0, or WAIT failed and the call failed) is lost
 * with that master: its caller never answered on it.
 */
#include "store_cluster.h"
#include "redis_cluster.h"
#include "redis_scripts.h"
#include "store_impl.h"
#include "uuid4.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#define KEY_MAX 160
#define UUID_STR 37
#define XFER_ROUNDS 6
#define REAP_BATCH 256
#define MARKER_TTL_MS (24 * 3600 * 1000)
#define DECISION_TTL_MS (24 * 3600 * 1000)
#define EMPTY (-1) /* DECIDE's answer for an empty bucket, final = 0 */

/* KEYS: 1 stock, 2 xout. ARGV: 1 transfer id, 2 receiver bucket, 3 units
 * asked, 4 now_ms, 5 resume ('1': only an existing record). Returns the
 * units the record holds (0: none taken). */
static const char TAKE_LUA[] =
    "local rec = redis.call('HGET', KEYS[2], ARGV[1])\n"
    "if rec then\n"
    "  redis.call('HSET', KEYS[2], ARGV[1], rec)\n" /* a write, so WAIT covers the record */
    "  return tonumber(string.match(rec, '^[^|]*|([^|]*)'))\n"
    "end\n"
    "if ARGV[5] == '1' then return 0 end\n"
    "local s = tonumber(redis.call('GET', KEYS[1]) or '0') or 0\n"
    "local k = math.min(s, tonumber(ARGV[3]))\n"
    "if k <= 0 then return 0 end\n"
    "redis.call('DECRBY', KEYS[1], k)\n"
    "redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '|' .. k .. '|' .. ARGV[4])\n"
    "return k\n";

/* KEYS: 1 stock, 2 marker xin:X, 3 ver. ARGV: 1 units, 2 marker ttl ms.
 * Returns 1 given now, 0 given before. */
static const char GIVE_LUA[] = "if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end\n"
                               "redis.call('INCRBY', KEYS[1], ARGV[1])\n"
                               "redis.call('INCR', KEYS[3])\n"
                               "redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])\n"
                               "return 1\n";

/* KEYS: 1 stock, 2 xout, 3 ver. Returns {stock (-1: no key), records,
 * ver, units in the records}. */
static const char PROBE_LUA[] =
    "local s = redis.call('GET', KEYS[1])\n"
    "s = s and (tonumber(s) or -1) or -1\n"
    "local vals = redis.call('HVALS', KEYS[2])\n"
    "local units = 0\n"
    "for _, v in ipairs(vals) do\n"
    "  units = units + (tonumber(string.match(v, '^[^|]*|([^|]*)')) or 0)\n"
    "end\n"
    "return {s, #vals, tonumber(redis.call('GET', KEYS[3]) or '0') or 0, units}\n";

/* RAISE, on bucket 0: the item's stock total becomes ARGV[1] if that is
 * more. KEYS: 1 stock, 2 total, 3 ver (of bucket 0). ARGV: 1 total, 2 the
 * configured stock (the total while none was set). Returns the units added
 * (0: the total was not below), -1 no stock key. */
static const char RAISE_LUA[] = "if not redis.call('GET', KEYS[1]) then return -1 end\n"
                                "local t = tonumber(redis.call('GET', KEYS[2]) or ARGV[2])\n"
                                "local n = tonumber(ARGV[1])\n"
                                "if n <= t then return 0 end\n"
                                "redis.call('INCRBY', KEYS[1], n - t)\n"
                                "redis.call('SET', KEYS[2], ARGV[1])\n"
                                "redis.call('INCR', KEYS[3])\n"
                                "return n - t\n";

enum { S_DECIDE, S_PAY, S_REAP, S_TAKE, S_GIVE, S_PROBE, S_RAISE, NSCRIPTS };

static const char *const script_body[NSCRIPTS] = {sk__redis_decide_lua, sk__redis_pay_lua,
                                                  sk__redis_reap_lua,   TAKE_LUA,
                                                  GIVE_LUA,             PROBE_LUA,
                                                  RAISE_LUA};

typedef struct bucket {
    char tag[SK_CLUSTER_TAG_MAX];
    unsigned slot;
} bucket;

typedef struct citem {
    char id[SK_ID_MAX + 1];
    int64_t stock;
    uint32_t limit;              /* configured */
    _Atomic uint32_t limit_now;  /* in force: sk:{I}:limit, else limit (limits_refresh) */
    uint32_t nb;
    bucket *b;
} citem;

typedef struct cluster_store {
    sale_store base; /* first: the handle callers hold */
    sk_cluster *cl;
    citem *items;
    size_t nitems;
    uint32_t pay_timeout_ms;
    uint32_t timeout_ms;
    char sha[NSCRIPTS][41];
    int fault_kill_after_take;
    _Atomic uint64_t limits_read_ms; /* when limits_refresh last ran (wall ms) */
} cluster_store;

static cluster_store *cs_of(void *s)
{
    return (cluster_store *)s;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- buckets ---- */

uint32_t sale_cluster_user_bucket(const char *user_id, uint32_t nbuckets)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)user_id; *p; p++)
        h = (h ^ *p) * 16777619u;
    return nbuckets ? h % nbuckets : 0;
}

void sale_cluster_bucket_tag(const char *item_id, uint32_t b, uint32_t nbuckets, char *buf)
{
    uint32_t width = SK_CLUSTER_SLOTS / (nbuckets ? nbuckets : 1);
    uint32_t lo = b * width + width / 4, hi = b * width + width - width / 4;
    for (uint32_t k = 0;; k++) {
        int n = snprintf(buf, SK_CLUSTER_TAG_MAX, "%s/%u/%u", item_id, (unsigned)b, (unsigned)k);
        unsigned slot = sk_cluster_slot(buf, (size_t)n);
        if ((slot >= lo && slot < hi) || k == 1000000 || width < 4)
            return;
    }
}

static void bkey(char *buf, const bucket *b, const char *suffix)
{
    snprintf(buf, KEY_MAX, "sk:{%s}:%s", b->tag, suffix);
}

static int find_item(const cluster_store *m, const char *id)
{
    for (size_t i = 0; i < m->nitems; i++)
        if (strcmp(m->items[i].id, id) == 0)
            return (int)i;
    return -ENOENT;
}

/* ---- scripts over the cluster ---- */

/* Run cmds (argv[1] of a script call: its SHA; argv[0] "EVALSHA"), again by
 * body where a node had not cached the script. body[i]: the script of
 * cmds[i]. */
static int run_scripts(cluster_store *m, sk_cluster_cmd *cmds, size_t n, const char *const *body,
                       int wait)
{
    int rc = sk_cluster_run(m->cl, cmds, n, wait);
    size_t k = 0;
    sk_cluster_cmd *redo = NULL;
    size_t *where = NULL;
    for (size_t i = 0; i < n; i++) {
        redisReply *rep = cmds[i].reply;
        if (rep && rep->type == REDIS_REPLY_ERROR && sk__redis_reply_err(rep) == -ENOEXEC) {
            freeReplyObject(rep);
            cmds[i].reply = NULL;
            cmds[i].err = -ENOEXEC;
            cmds[i].argv[0] = "EVAL";
            cmds[i].argv[1] = body[i];
            k++;
        }
    }
    if (k == 0)
        return rc;
    /* those again, in one batch; the others keep their replies */
    redo = malloc(k * sizeof *redo);
    where = malloc(k * sizeof *where);
    if (!redo || !where) {
        rc = -ENOMEM;
        goto out_free;
    }
    k = 0;
    for (size_t i = 0; i < n; i++)
        if (cmds[i].err == -ENOEXEC) {
            where[k] = i;
            redo[k++] = cmds[i];
        }
    sk_cluster_run(m->cl, redo, k, wait);
    for (size_t j = 0; j < k; j++) {
        cmds[where[j]].reply = redo[j].reply;
        cmds[where[j]].err = redo[j].err;
    }
    rc = 0;
    for (size_t i = 0; i < n && !rc; i++)
        rc = cmds[i].err;
out_free:
    free(redo);
    free(where);
    return rc;
}

static void free_replies(sk_cluster_cmd *cmds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (cmds[i].reply) {
            freeReplyObject(cmds[i].reply);
            cmds[i].reply = NULL;
        }
}

/* One script call on bucket b. OUT: *reply (not an error reply). */
static int script1(cluster_store *m, int which, const bucket *b, int nkeys, const char *const *keys,
                   int nargs, const char *const *args, int wait, redisReply **reply)
{
    const char *argv[24];
    char nk[8];
    int argc = 0;
    snprintf(nk, sizeof nk, "%d", nkeys);
    argv[argc++] = "EVALSHA";
    argv[argc++] = m->sha[which];
    argv[argc++] = nk;
    for (int i = 0; i < nkeys; i++)
        argv[argc++] = keys[i];
    for (int i = 0; i < nargs; i++)
        argv[argc++] = args[i];
    sk_cluster_cmd cmd = {.slot = b->slot, .argc = argc, .argv = argv};
    const char *body = script_body[which];
    int rc = run_scripts(m, &cmd, 1, &body, wait);
    if (rc == 0 && cmd.reply->type == REDIS_REPLY_ERROR) {
        rc = sk__redis_reply_err(cmd.reply);
        free_replies(&cmd, 1);
    }
    *reply = cmd.reply;
    return rc;
}

/* ---- probing and moving units ---- */

typedef struct probe {
    int64_t stock; /* -1: no stock key */
    int64_t records, ver, units;
} probe;

/* PROBE every bucket of it. OUT: p[0..nb). */
static int probe_item(cluster_store *m, const citem *it, probe *p)
{
    size_t nb = it->nb;
    int rc = -ENOMEM;
    sk_cluster_cmd *cmds = calloc(nb, sizeof *cmds);
    const char **argv = calloc(nb * 6, sizeof *argv);
    char(*keys)[KEY_MAX] = calloc(nb * 3, KEY_MAX);
    const char **body = calloc(nb, sizeof *body);
    if (!cmds || !argv || !keys || !body)
        goto out_free;
    for (size_t b = 0; b < nb; b++) {
        const char **a = &argv[b * 6];
        bkey(keys[b * 3], &it->b[b], "stock");
        bkey(keys[b * 3 + 1], &it->b[b], "xout");
        bkey(keys[b * 3 + 2], &it->b[b], "ver");
        a[0] = "EVALSHA", a[1] = m->sha[S_PROBE], a[2] = "3";
        a[3] = keys[b * 3], a[4] = keys[b * 3 + 1], a[5] = keys[b * 3 + 2];
        cmds[b] = (sk_cluster_cmd){.slot = it->b[b].slot, .argc = 6, .argv = a};
        body[b] = PROBE_LUA;
    }
    rc = run_scripts(m, cmds, nb, body, 0);
    for (size_t b = 0; b < nb && rc == 0; b++) {
        const redisReply *r = cmds[b].reply;
        if (r->type == REDIS_REPLY_ERROR)
            rc = sk__redis_reply_err(r);
        else if (r->type != REDIS_REPLY_ARRAY || r->elements != 4)
            rc = -EPROTO;
        else
            p[b] = (probe){r->element[0]->integer, r->element[1]->integer, r->element[2]->integer,
                           r->element[3]->integer};
    }
    free_replies(cmds, nb);
out_free:
    free(cmds);
    free(argv);
    free(keys);
    free(body);
    return rc;
}

/* TRANSFER (resume = 0, a fresh xid) or RESUME of units from d to r.
 * Returns the units that arrived (0: none taken), or negative errno (the
 * record, if any, stays for the next RESUME). */
static int64_t transfer(cluster_store *m, const citem *it, uint32_t d, uint32_t r, int64_t units,
                        const char *xid, int resume)
{
    char kstock[KEY_MAX], kxout[KEY_MAX], kmark[KEY_MAX], kver[KEY_MAX];
    char sr[16], su[24], snow[24], sttl[16];
    redisReply *rep = NULL;
    int64_t got;
    int rc;

    bkey(kstock, &it->b[d], "stock");
    bkey(kxout, &it->b[d], "xout");
    snprintf(sr, sizeof sr, "%u", (unsigned)r);
    snprintf(su, sizeof su, "%lld", (long long)units);
    snprintf(snow, sizeof snow, "%llu", (unsigned long long)wall_ms());
    const char *tkeys[] = {kstock, kxout};
    const char *targs[] = {xid, sr, su, snow, resume ? "1" : "0"};
    rc = script1(m, S_TAKE, &it->b[d], 2, tkeys, 5, targs, 1, &rep);
    if (rc < 0)
        return rc;
    got = rep->type == REDIS_REPLY_INTEGER ? rep->integer : -EPROTO;
    freeReplyObject(rep);
    if (got <= 0)
        return got;
    if (m->fault_kill_after_take && !resume)
        raise(SIGKILL); /* test hook: die between the halves of a transfer */

    bkey(kstock, &it->b[r], "stock");
    snprintf(kmark, sizeof kmark, "sk:{%s}:xin:%s", it->b[r].tag, xid);
    bkey(kver, &it->b[r], "ver");
    snprintf(su, sizeof su, "%lld", (long long)got);
    snprintf(sttl, sizeof sttl, "%u", (unsigned)MARKER_TTL_MS);
    const char *gkeys[] = {kstock, kmark, kver};
    const char *gargs[] = {su, sttl};
    rc = script1(m, S_GIVE, &it->b[r], 3, gkeys, 2, gargs, 1, &rep);
    if (rc < 0)
        return rc;
    freeReplyObject(rep);

    const char *cargv[] = {"HDEL", kxout, xid};
    if (sk_cluster_command(m->cl, it->b[d].slot, 3, cargv, NULL, &rep) == 0)
        freeReplyObject(rep); /* a failure leaves the record: RESUME finds it given */
    return got;
}

/* RESUME every transfer record of bucket d. */
static int resume_bucket(cluster_store *m, const citem *it, uint32_t d)
{
    char kxout[KEY_MAX];
    redisReply *rep = NULL;
    bkey(kxout, &it->b[d], "xout");
    const char *argv[] = {"HGETALL", kxout};
    int rc = sk_cluster_command(m->cl, it->b[d].slot, 2, argv, NULL, &rep);
    if (rc < 0)
        return rc;
    if (rep->type != REDIS_REPLY_ARRAY) {
        rc = rep->type == REDIS_REPLY_ERROR ? sk__redis_reply_err(rep) : -EPROTO;
        freeReplyObject(rep);
        return rc;
    }
    for (size_t i = 0; i + 1 < rep->elements && rc == 0; i += 2) {
        const char *xid = rep->element[i]->str, *v = rep->element[i + 1]->str;
        unsigned to = 0;
        long long units = 0;
        if (!xid || !v || sscanf(v, "%u|%lld|", &to, &units) != 2 || to >= it->nb) {
            rc = -EPROTO;
            break;
        }
        int64_t got = transfer(m, it, d, to, units, xid, 1);
        if (got < 0)
            rc = (int)got;
    }
    freeReplyObject(rep);
    return rc;
}

static int resume_item(cluster_store *m, const citem *it, const probe *p)
{
    int rc = 0;
    for (uint32_t d = 0; d < it->nb; d++)
        if (!p || p[d].records > 0) {
            int r = resume_bucket(m, it, d);
            if (r < 0 && !rc)
                rc = r;
        }
    return rc;
}

/* REFILL bucket r of it with about need units. 1: decide again; 0: the
 * item is sold out; negative errno. */
static int refill(cluster_store *m, const citem *it, uint32_t r, int64_t need)
{
    probe *p = calloc(it->nb, sizeof *p), *q = calloc(it->nb, sizeof *q);
    int rc = -ENOMEM, any = 0;
    if (!p || !q)
        goto out_free;
    rc = probe_item(m, it, p);
    if (rc < 0)
        goto out_free;
    for (uint32_t b = 0; b < it->nb; b++)
        any |= p[b].records > 0;
    if (any) {
        rc = resume_item(m, it, p);
        rc = rc < 0 ? rc : 1;
        goto out_free;
    }
    if (p[r].stock > 0) {
        rc = 1; /* units came back meanwhile */
        goto out_free;
    }
    int64_t moved = 0, seen = 0;
    while (need > 0) {
        uint32_t d = r;
        for (uint32_t b = 0; b < it->nb; b++)
            if (b != r && p[b].stock > 0 && (d == r || p[b].stock > p[d].stock))
                d = b;
        if (d == r)
            break;
        seen = 1;
        int64_t ask = p[d].stock / 2 > need ? p[d].stock / 2 : need;
        uuid_t u;
        char xid[UUID_STR];
        sk_uuid4(u);
        uuid_unparse_lower(u, xid);
        int64_t got = transfer(m, it, d, r, ask, xid, 0);
        if (got < 0) {
            rc = (int)got;
            goto out_free;
        }
        moved += got;
        need -= got;
        p[d].stock = 0; /* asked once per round */
    }
    if (moved > 0 || seen) {
        rc = 1;
        goto out_free;
    }
    rc = probe_item(m, it, q);
    if (rc < 0)
        goto out_free;
    rc = 0;
    for (uint32_t b = 0; b < it->nb; b++)
        if (q[b].stock > 0 || q[b].records > 0 || q[b].ver != p[b].ver)
            rc = 1;
out_free:
    free(p);
    free(q);
    return rc;
}

/* ---- decide ---- */

typedef struct dreq {
    int item; /* -1 unknown item */
    uint32_t bucket;
    int done;
    int failed; /* done without a decision: its error */
    int final;  /* decide with final = 1 */
    char verdict[8];
    char rid[UUID_STR];
    char dkey[KEY_MAX];
} dreq;

typedef struct dgroup {
    int item;
    uint32_t bucket;
    int final;
    size_t m;
    char keys[6][KEY_MAX];
    char snow[24], sdeadline[24], slimit[16], sttl[16], nk[16];
} dgroup;

/* A request not decided this time: SK_UNAVAILABLE, left for redelivery (a
 * retry finds the decision if one was stored). */
static void undecided(dreq *q, sk_outcome *out, int64_t *left, int err)
{
    q->done = 1;
    q->failed = err;
    out->result = SK_UNAVAILABLE;
    out->order_id[0] = '\0';
    *left = -1;
}

/* Every request of group k, undecided. */
static void fail_group(dreq *q, sk_outcome *outs, int64_t *left, size_t n, const int *gof, size_t k,
                       int err)
{
    for (size_t i = 0; i < n; i++)
        if (gof[i] == (int)k)
            undecided(&q[i], &outs[i], &left[i], err);
}

/* Fill the outcomes of group k from its DECIDE reply; EMPTY ones stay
 * pending, counted in *empty. */
static int parse_group(const redisReply *rep, const dgroup *gk, size_t k, size_t n, const int *gof,
                       dreq *q, sk_outcome *outs, int64_t *left, size_t *empty)
{
    size_t j = 0;
    if (rep->type == REDIS_REPLY_ERROR)
        return sk__redis_reply_err(rep);
    if (rep->type == REDIS_REPLY_INTEGER)
        return rep->integer == -1 ? -ENOENT : -EPROTO;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 * gk->m)
        return -EPROTO;
    for (size_t i = 0; i < n; i++) {
        if (gof[i] != (int)k)
            continue;
        const redisReply *res = rep->element[j], *oid = rep->element[j + 1];
        j += 3;
        if (res->type != REDIS_REPLY_INTEGER || res->integer < EMPTY ||
            res->integer >= SK_RESULT_COUNT || oid->type != REDIS_REPLY_STRING ||
            oid->len > SK_ORDER_ID_MAX)
            return -EPROTO;
        if (res->integer == EMPTY) {
            (*empty)++;
            continue;
        }
        q[i].done = 1;
        outs[i].result = (enum sk_result)res->integer;
        memcpy(outs[i].order_id, oid->str, oid->len);
        outs[i].order_id[oid->len] = '\0';
        /* a bucket's stock is not the item's: only a confirmed sell-out (a
         * final decide) says 0 */
        left[i] = q[i].final && res->integer == SK_SOLD_OUT ? 0 : -1;
    }
    return 0;
}

/* One DECIDE round over the pending requests. OUT: *nempty, requests
 * answered EMPTY (left pending), their count per group in gempty. */
static int decide_round(cluster_store *m, const sk_decide *reqs, size_t n, dreq *q,
                        sk_outcome *outs, int64_t *left, uint64_t now, dgroup *g, int *gof,
                        size_t *gempty, size_t *ngroups_out, const char **argv,
                        sk_cluster_cmd *cmds, const char **body)
{
    size_t ng = 0, argc = 0;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        gof[i] = -1;
        if (q[i].done)
            continue;
        size_t k = 0;
        while (k < ng &&
               !(g[k].item == q[i].item && g[k].bucket == q[i].bucket && g[k].final == q[i].final))
            k++;
        if (k == ng) {
            const citem *it = &m->items[q[i].item];
            const bucket *b = &it->b[q[i].bucket];
            g[k] = (dgroup){.item = q[i].item, .bucket = q[i].bucket, .final = q[i].final};
            bkey(g[k].keys[0], b, "stock");
            bkey(g[k].keys[1], b, "users");
            bkey(g[k].keys[2], b, "orders");
            bkey(g[k].keys[3], b, "deadlines");
            bkey(g[k].keys[4], b, "events");
            bkey(g[k].keys[5], b, "latest");
            snprintf(g[k].snow, sizeof g[k].snow, "%llu", (unsigned long long)now);
            snprintf(g[k].sdeadline, sizeof g[k].sdeadline, "%llu",
                     (unsigned long long)(now + m->pay_timeout_ms));
            snprintf(g[k].slimit, sizeof g[k].slimit, "%u", atomic_load(&it->limit_now));
            snprintf(g[k].sttl, sizeof g[k].sttl, "%u", (unsigned)DECISION_TTL_MS);
            ng++;
        }
        g[k].m++;
        gof[i] = (int)k;
    }
    for (size_t k = 0; k < ng; k++) {
        const char **a = &argv[argc];
        size_t c = 0;
        snprintf(g[k].nk, sizeof g[k].nk, "%zu", 6 + g[k].m);
        a[c++] = "EVALSHA";
        a[c++] = m->sha[S_DECIDE];
        a[c++] = g[k].nk;
        for (int j = 0; j < 6; j++)
            a[c++] = g[k].keys[j];
        for (size_t i = 0; i < n; i++)
            if (gof[i] == (int)k)
                a[c++] = q[i].dkey;
        a[c++] = g[k].snow;
        a[c++] = g[k].sdeadline;
        a[c++] = g[k].slimit;
        a[c++] = g[k].sttl;
        a[c++] = m->items[g[k].item].id;
        a[c++] = g[k].final ? "1" : "0";
        for (size_t i = 0; i < n; i++)
            if (gof[i] == (int)k) {
                a[c++] = q[i].verdict;
                a[c++] = reqs[i].user_id;
                a[c++] = q[i].rid;
            }
        cmds[k] = (sk_cluster_cmd){
            .slot = m->items[g[k].item].b[g[k].bucket].slot, .argc = (int)c, .argv = a};
        body[k] = sk__redis_decide_lua;
        argc += c;
        gempty[k] = 0;
    }
    *ngroups_out = ng;
    if (ng == 0)
        return 0;
    run_scripts(m, cmds, ng, body, 1);
    for (size_t k = 0; k < ng; k++) {
        int err = cmds[k].err < 0
                      ? cmds[k].err
                      : parse_group(cmds[k].reply, &g[k], k, n, gof, q, outs, left, &gempty[k]);
        if (err < 0) {
            fail_group(q, outs, left, n, gof, k, err);
            gempty[k] = 0;
            if (!rc)
                rc = err;
        }
    }
    free_replies(cmds, ng);
    return rc;
}

/* A command whose reply matters only when it is an error (SET and the
 * like) on slot. 0 or negative errno. */
static int write1(cluster_store *m, unsigned slot, int argc, const char **argv)
{
    redisReply *rep = NULL;
    int rc = sk_cluster_command(m->cl, slot, argc, argv, NULL, &rep);
    if (rc < 0)
        return rc;
    if (rep->type == REDIS_REPLY_ERROR)
        rc = sk__redis_reply_err(rep);
    freeReplyObject(rep);
    return rc;
}

/* ---- the per-user limit the admin API sets ----
 * One key per item, sk:{I}:limit, in the item's own slot: a bucket's script
 * cannot read it (another slot), so each process reads every item's key at
 * most once a LIMITS_REFRESH_MS and passes the limit in force to DECIDE, as
 * the configured one was. A change is one write, in force everywhere within
 * that second. */
#define LIMITS_REFRESH_MS 1000

static void limit_key(char *buf, const citem *it)
{
    snprintf(buf, KEY_MAX, "sk:{%s}:limit", it->id);
}

/* Read item it's limit in force into it->limit_now. 0 or negative errno
 * (the one in force stays). */
static int limit_read(cluster_store *m, citem *it)
{
    char k[KEY_MAX];
    redisReply *rep = NULL;
    limit_key(k, it);
    const char *argv[] = {"GET", k};
    int rc = sk_cluster_command(m->cl, sk_cluster_slot(k, strlen(k)), 2, argv, NULL, &rep);
    if (rc < 0)
        return rc;
    long v = rep->type == REDIS_REPLY_STRING ? strtol(rep->str, NULL, 10) : 0;
    if (rep->type == REDIS_REPLY_NIL)
        atomic_store(&it->limit_now, it->limit);
    else if (v >= 1 && v <= (long)UINT32_MAX)
        atomic_store(&it->limit_now, (uint32_t)v);
    else
        rc = rep->type == REDIS_REPLY_ERROR ? sk__redis_reply_err(rep) : -EPROTO;
    freeReplyObject(rep);
    return rc;
}

static void limits_refresh(cluster_store *m, uint64_t now_ms)
{
    uint64_t last = atomic_load(&m->limits_read_ms);
    if (now_ms < last + LIMITS_REFRESH_MS ||
        !atomic_compare_exchange_strong(&m->limits_read_ms, &last, now_ms))
        return; /* read lately, or another thread reads now */
    for (size_t i = 0; i < m->nitems; i++)
        if (limit_read(m, &m->items[i]) < 0)
            return; /* read again next time */
}

static int cs_set_limit(sale_store *s, size_t i, uint32_t limit)
{
    cluster_store *m = cs_of(s);
    if (i >= m->nitems)
        return -ERANGE;
    char k[KEY_MAX], v[16];
    limit_key(k, &m->items[i]);
    snprintf(v, sizeof v, "%u", limit);
    const char *argv[] = {"SET", k, v};
    int rc = write1(m, sk_cluster_slot(k, strlen(k)), 3, argv);
    if (rc == 0)
        atomic_store(&m->items[i].limit_now, limit);
    return rc;
}

static int cs_decide(void *impl, const sk_decide *reqs, size_t n, sk_outcome *outs, int64_t *left)
{
    cluster_store *m = cs_of(impl);
    uint64_t now = wall_ms();
    limits_refresh(m, now);
    int rc = -ENOMEM;
    size_t ng = 0, maxargs = 14 * n + 5 * n;
    dreq *q = calloc(n ? n : 1, sizeof *q);
    dgroup *g = calloc(n ? n : 1, sizeof *g);
    int *gof = calloc(n ? n : 1, sizeof *gof);
    size_t *gempty = calloc(n ? n : 1, sizeof *gempty);
    const char **argv = calloc(maxargs ? maxargs : 1, sizeof *argv);
    sk_cluster_cmd *cmds = calloc(n ? n : 1, sizeof *cmds);
    const char **body = calloc(n ? n : 1, sizeof *body);
    if (!q || !g || !gof || !gempty || !argv || !cmds || !body)
        goto out_free;

    rc = 0;
    for (size_t i = 0; i < n; i++) {
        int it = find_item(m, reqs[i].item_id);
        q[i].item = it;
        if (it < 0) {
            q[i].done = 1;
            outs[i].result = SK_UNKNOWN_ITEM;
            outs[i].order_id[0] = '\0';
            left[i] = -1;
            continue;
        }
        if (!reqs[i].user_id || !sk_id_valid(reqs[i].user_id, strlen(reqs[i].user_id))) {
            rc = -EINVAL; /* it would corrupt the '|'-separated records */
            goto out_free;
        }
        const citem *ci = &m->items[it];
        q[i].bucket = sale_cluster_user_bucket(reqs[i].user_id, ci->nb);
        snprintf(q[i].verdict, sizeof q[i].verdict, "%d", (int)reqs[i].verdict);
        uuid_unparse_lower(reqs[i].request_id, q[i].rid);
        snprintf(q[i].dkey, sizeof q[i].dkey, "sk:{%s}:req:%s", ci->b[q[i].bucket].tag, q[i].rid);
    }

    for (int round = 0; round < XFER_ROUNDS; round++) {
        int pending = 0;
        decide_round(m, reqs, n, q, outs, left, now, g, gof, gempty, &ng, argv, cmds, body);
        for (size_t k = 0; k < ng; k++) {
            if (!gempty[k])
                continue;
            pending = 1;
            int r = refill(m, &m->items[g[k].item], g[k].bucket, (int64_t)gempty[k]);
            for (size_t i = 0; i < n; i++) {
                if (q[i].done || q[i].item != g[k].item || q[i].bucket != g[k].bucket)
                    continue;
                if (r == 0) /* sold out: decide those with final = 1 */
                    q[i].final = 1;
                if (r < 0)
                    undecided(&q[i], &outs[i], &left[i], r);
            }
        }
        if (!pending)
            break;
    }
    /* units kept being taken by others: those go round again */
    for (size_t i = 0; i < n; i++)
        if (!q[i].done)
            undecided(&q[i], &outs[i], &left[i], -EAGAIN);
    /* one shard's trouble does not hold up the others' answers; when
     * nothing was decided, the call fails (the worker retries it) */
    rc = 0;
    int decided = 0;
    for (size_t i = 0; i < n; i++) {
        decided |= q[i].item >= 0 && !q[i].failed;
        if (q[i].failed && !rc)
            rc = q[i].failed;
    }
    if (decided)
        rc = 0;
out_free:
    free(q);
    free(g);
    free(gof);
    free(gempty);
    free(argv);
    free(cmds);
    free(body);
    return rc;
}

static int cs_known(void *impl, const char *item_id)
{
    return find_item(cs_of(impl), item_id) >= 0;
}

/* ---- the store interface ---- */

static void cs_destroy(sale_store *s)
{
    cluster_store *m = cs_of(s);
    for (size_t i = 0; m->items && i < m->nitems; i++)
        free(m->items[i].b);
    free(m->items);
    sk_cluster_destroy(m->cl);
    free(m);
}

static mq *cs_queue(sale_store *s)
{
    (void)s;
    return NULL; /* order events live in Redis streams, one per bucket */
}

static int64_t cs_left(sale_store *s, size_t i)
{
    cluster_store *m = cs_of(s);
    if (i >= m->nitems)
        return -ERANGE;
    const citem *it = &m->items[i];
    probe *p = calloc(it->nb, sizeof *p);
    if (!p)
        return -ENOMEM;
    int64_t left = probe_item(m, it, p);
    for (uint32_t b = 0; b < it->nb && left >= 0; b++)
        left = p[b].stock < 0 ? -ENOENT : left + p[b].stock + p[b].units;
    free(p);
    return left;
}

static int cs_stats(sale_store *s, size_t i, sale_item_stats *out)
{
    (void)s, (void)i, (void)out;
    return -ENODATA; /* counted in Redis, not here */
}

/* The item's stock total: bucket 0's total record, else the configured stock. */
static int64_t stock_total(cluster_store *m, const citem *it)
{
    char kt[KEY_MAX];
    redisReply *rep = NULL;
    bkey(kt, &it->b[0], "total");
    const char *argv[] = {"GET", kt};
    int rc = sk_cluster_command(m->cl, it->b[0].slot, 2, argv, NULL, &rep);
    if (rc < 0)
        return rc;
    int64_t v = rep->type == REDIS_REPLY_NIL      ? it->stock
                : rep->type == REDIS_REPLY_STRING ? strtoll(rep->str, NULL, 10)
                : rep->type == REDIS_REPLY_ERROR  ? sk__redis_reply_err(rep)
                                                  : -EPROTO;
    freeReplyObject(rep);
    return v;
}

/* RAISE on bucket 0, with WAIT as the sales' writes (min_replicas_ack): the
 * units added go to bucket 0 and reach the others by transfers, as any
 * unit a bucket lacks. ver goes up with them, so a sold-out scan running
 * meanwhile sees them come. Returns the units added. */
static int64_t cs_raise(sale_store *s, size_t i, int64_t total)
{
    cluster_store *m = cs_of(s);
    if (i >= m->nitems)
        return -ERANGE;
    const citem *it = &m->items[i];
    char ks[KEY_MAX], kt[KEY_MAX], kv[KEY_MAX], sn[24], sbase[24];
    bkey(ks, &it->b[0], "stock");
    bkey(kt, &it->b[0], "total");
    bkey(kv, &it->b[0], "ver");
    snprintf(sn, sizeof sn, "%lld", (long long)total);
    snprintf(sbase, sizeof sbase, "%lld", (long long)it->stock);
    const char *keys[] = {ks, kt, kv};
    const char *args[] = {sn, sbase};
    redisReply *rep = NULL;
    int rc = script1(m, S_RAISE, &it->b[0], 3, keys, 2, args, 1, &rep);
    if (rc < 0)
        return rc;
    int64_t v = rep->type != REDIS_REPLY_INTEGER ? -EPROTO
                : rep->integer < 0               ? -ENOENT
                                                 : rep->integer;
    freeReplyObject(rep);
    return v;
}

static int cs_item_state(sale_store *s, size_t i, sale_item_state *out)
{
    cluster_store *m = cs_of(s);
    if (i >= m->nitems)
        return -ERANGE;
    int64_t total = stock_total(m, &m->items[i]);
    if (total < 0)
        return (int)total;
    int64_t left = cs_left(s, i);
    if (left < 0)
        return (int)left;
    int rc = limit_read(m, &m->items[i]);
    if (rc < 0)
        return rc;
    *out = (sale_item_state){
        .stock = total, .left = left, .per_user_limit = atomic_load(&m->items[i].limit_now),
        .epoch = 0};
    return 0;
}

/* The admin API's stock total: raised as a reload raises it. Lowering would
 * take units out of buckets other processes are selling from, with no
 * record to finish it by if this one died half-way: not on a cluster
 * (-EOPNOTSUPP), unless the total is below the units sold (-EBUSY, as on
 * the other stores). */
static int cs_set_stock(sale_store *s, size_t i, int64_t total, int64_t *held)
{
    sale_item_state st;
    int rc = cs_item_state(s, i, &st);
    if (rc < 0)
        return rc;
    int64_t h = st.stock - st.left > 0 ? st.stock - st.left : 0;
    if (held)
        *held = h;
    if (total < h)
        return -EBUSY;
    if (total < st.stock)
        return -EOPNOTSUPP;
    int64_t added = cs_raise(s, i, total);
    return added < 0 ? (int)added : 0;
}

/* The (item, bucket) holding order_id: one HGET per bucket, pipelined. OUT:
 * *o, *item, *bucket_of. */
static int order_find(cluster_store *m, const char *order_id, sk_order *o, size_t *item,
                      uint32_t *bucket_of)
{
    size_t total = 0, k = 0;
    int rc = -ENOMEM;
    if (!order_id || strlen(order_id) > SK_ORDER_ID_MAX || !sk_id_valid(order_id, strlen(order_id)))
        return -EINVAL;
    for (size_t i = 0; i < m->nitems; i++)
        total += m->items[i].nb;
    sk_cluster_cmd *cmds = calloc(total, sizeof *cmds);
    char(*keys)[KEY_MAX] = calloc(total, KEY_MAX);
    const char **argv = calloc(total * 3, sizeof *argv);
    if (!cmds || !keys || !argv)
        goto out_free;
    for (size_t i = 0; i < m->nitems; i++)
        for (uint32_t b = 0; b < m->items[i].nb; b++, k++) {
            bkey(keys[k], &m->items[i].b[b], "orders");
            argv[k * 3] = "HGET", argv[k * 3 + 1] = keys[k], argv[k * 3 + 2] = order_id;
            cmds[k] =
                (sk_cluster_cmd){.slot = m->items[i].b[b].slot, .argc = 3, .argv = &argv[k * 3]};
        }
    rc = sk_cluster_run(m->cl, cmds, total, 0);
    if (rc < 0)
        goto out_replies;
    rc = -ENOENT;
    k = 0;
    for (size_t i = 0; i < m->nitems; i++)
        for (uint32_t b = 0; b < m->items[i].nb; b++, k++) {
            const redisReply *rep = cmds[k].reply;
            if (rc != -ENOENT || rep->type == REDIS_REPLY_NIL)
                continue;
            if (rep->type == REDIS_REPLY_STRING) {
                rc = sk__redis_parse_order(rep->str, m->items[i].id, o);
                *item = i;
                *bucket_of = b;
            } else {
                rc = rep->type == REDIS_REPLY_ERROR ? sk__redis_reply_err(rep) : -EPROTO;
            }
        }
out_replies:
    free_replies(cmds, total);
out_free:
    free(cmds);
    free(keys);
    free(argv);
    return rc;
}

static int cs_order_get(sale_store *s, const char *order_id, sk_order *o)
{
    size_t i;
    uint32_t b;
    return order_find(cs_of(s), order_id, o, &i, &b);
}

static int cs_order_pay(sale_store *s, const char *order_id, uint64_t now_ms, sk_order *o)
{
    cluster_store *m = cs_of(s);
    size_t i = 0;
    uint32_t b = 0;
    redisReply *rep = NULL;
    int rc = order_find(m, order_id, o, &i, &b);
    if (rc < 0)
        return rc;
    char korders[KEY_MAX], kdead[KEY_MAX], kevents[KEY_MAX], snow[24];
    const bucket *bk = &m->items[i].b[b];
    bkey(korders, bk, "orders");
    bkey(kdead, bk, "deadlines");
    bkey(kevents, bk, "events");
    snprintf(snow, sizeof snow, "%llu", (unsigned long long)now_ms);
    const char *keys[] = {korders, kdead, kevents};
    const char *args[] = {order_id, snow, m->items[i].id};
    rc = script1(m, S_PAY, bk, 3, keys, 3, args, 1, &rep);
    if (rc < 0)
        return rc;
    if (rep->type != REDIS_REPLY_INTEGER)
        rc = -EPROTO;
    else if (rep->integer >= 0)
        rc = 0;
    else
        rc = rep->integer == -1 ? -ENOENT : rep->integer == -2 ? -ECANCELED : -ETIME;
    freeReplyObject(rep);
    if (rc == 0)
        o->state = SK_ORDER_PAID;
    return rc;
}

/* REAP every bucket of every item, one pipelined round per REAP_BATCH, then
 * RESUME the transfer records left by workers that died mid-transfer. */
static int cs_reap(sale_store *s, uint64_t now_ms)
{
    cluster_store *m = cs_of(s);
    size_t total = 0, k;
    int rc = -ENOMEM, cancelled = 0, more = 1;
    char snow[24], smax[16];
    for (size_t i = 0; i < m->nitems; i++)
        total += m->items[i].nb;
    sk_cluster_cmd *cmds = calloc(total, sizeof *cmds);
    char(*keys)[KEY_MAX] = calloc(total * 7, KEY_MAX);
    const char **argv = calloc(total * 13, sizeof *argv);
    const char **body = calloc(total, sizeof *body);
    if (!cmds || !keys || !argv || !body)
        goto out_free;
    snprintf(snow, sizeof snow, "%llu", (unsigned long long)now_ms);
    snprintf(smax, sizeof smax, "%d", REAP_BATCH);
    while (more) {
        static const char *const suffix[] = {"stock",  "users",  "orders", "deadlines",
                                             "events", "reaped", "ver"};
        more = 0;
        k = 0;
        for (size_t i = 0; i < m->nitems; i++)
            for (uint32_t b = 0; b < m->items[i].nb; b++, k++) {
                const char **a = &argv[k * 13];
                a[0] = "EVALSHA", a[1] = m->sha[S_REAP], a[2] = "7";
                for (int j = 0; j < 7; j++) {
                    bkey(keys[k * 7 + j], &m->items[i].b[b], suffix[j]);
                    a[3 + j] = keys[k * 7 + j];
                }
                a[10] = snow, a[11] = smax, a[12] = m->items[i].id;
                cmds[k] = (sk_cluster_cmd){.slot = m->items[i].b[b].slot, .argc = 13, .argv = a};
                body[k] = sk__redis_reap_lua;
            }
        rc = run_scripts(m, cmds, total, body, 1);
        for (k = 0; k < total && rc == 0; k++) {
            const redisReply *rep = cmds[k].reply;
            if (rep->type == REDIS_REPLY_ERROR)
                rc = sk__redis_reply_err(rep);
            else if (rep->type == REDIS_REPLY_INTEGER)
                rc = rep->integer == -1 ? -ENOENT : -EPROTO;
            else if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2)
                rc = -EPROTO;
            else {
                cancelled += (int)rep->element[0]->integer;
                more |= rep->element[1]->integer >= REAP_BATCH;
            }
        }
        free_replies(cmds, total);
        if (rc < 0)
            goto out_free;
    }
    for (size_t i = 0; i < m->nitems; i++) {
        int r = resume_item(m, &m->items[i], NULL);
        if (r < 0 && rc == 0)
            rc = r;
    }
out_free:
    free(cmds);
    free(keys);
    free(argv);
    free(body);
    return rc < 0 ? rc : cancelled;
}

static int cs_ping(sale_store *s)
{
    return sk_cluster_ping(cs_of(s)->cl);
}

/* ---- order events: one stream per bucket, numbered item by item ---- */

static size_t cs_event_streams(const sale_store *s)
{
    const cluster_store *m = (const cluster_store *)s;
    size_t n = 0;
    for (size_t i = 0; i < m->nitems; i++)
        n += m->items[i].nb;
    return n;
}

/* The bucket of stream k. */
static const bucket *stream_bucket(const cluster_store *m, size_t k)
{
    for (size_t i = 0; i < m->nitems; i++) {
        if (k < m->items[i].nb)
            return &m->items[i].b[k];
        k -= m->items[i].nb;
    }
    return NULL;
}

/* How the shared stream readers (redis_scripts.h) reach a bucket. */
typedef struct stream_ctx {
    cluster_store *m;
    unsigned slot;
} stream_ctx;

static int send_cmd(void *ctx, uint32_t block_ms, int argc, const char **argv, redisReply **rep)
{
    stream_ctx *c = ctx;
    (void)block_ms; /* bounded below by the connections' reply timeout */
    return sk_cluster_command(c->m->cl, c->slot, argc, argv, NULL, rep);
}

static int cs_events_read(sale_store *s, size_t stream, const char *group, const char *consumer,
                          size_t max, uint32_t block_ms, sale_event_fn fn, void *arg)
{
    cluster_store *m = cs_of(s);
    const bucket *b = stream_bucket(m, stream);
    char k[KEY_MAX];
    if (!b)
        return -ERANGE;
    stream_ctx ctx = {m, b->slot};
    /* the connections' reply timeout bounds a blocking read */
    if (block_ms > m->timeout_ms / 2)
        block_ms = m->timeout_ms / 2;
    bkey(k, b, "events");
    return sk__redis_events_read(send_cmd, &ctx, k, group, consumer, max, block_ms, fn, arg);
}

static int cs_events_ack(sale_store *s, size_t stream, const char *group, const char *const *ids,
                         size_t n)
{
    cluster_store *m = cs_of(s);
    const bucket *b = stream_bucket(m, stream);
    char k[KEY_MAX];
    if (!b)
        return -ERANGE;
    stream_ctx ctx = {m, b->slot};
    bkey(k, b, "events");
    return sk__redis_events_ack(send_cmd, &ctx, k, group, ids, n);
}

static uint64_t cs_replica_ack_timeouts(sale_store *s)
{
    return sk_cluster_ack_shortfalls(cs_of(s)->cl);
}

static const sale_store_ops cs_ops = {.destroy = cs_destroy,
                                      .queue = cs_queue,
                                      .left = cs_left,
                                      .stats = cs_stats,
                                      .order_get = cs_order_get,
                                      .order_pay = cs_order_pay,
                                      .reap = cs_reap,
                                      .ping = cs_ping,
                                      .event_streams = cs_event_streams,
                                      .events_read = cs_events_read,
                                      .events_ack = cs_events_ack,
                                      .raise = cs_raise,
                                      .item_state = cs_item_state,
                                      .set_stock = cs_set_stock,
                                      .set_limit = cs_set_limit,
                                      .replica_ack_timeouts = cs_replica_ack_timeouts};

/* ---- create ---- */

/* The scripts' SHAs, loaded on the node of slot 0 (other nodes get the body
 * once, on NOSCRIPT). */
static int load_scripts(cluster_store *m)
{
    for (int s = 0; s < NSCRIPTS; s++) {
        const char *argv[] = {"SCRIPT", "LOAD", script_body[s]};
        redisReply *rep = NULL;
        int rc = sk_cluster_command(m->cl, 0, 3, argv, NULL, &rep);
        if (rc < 0)
            return rc;
        if (rep->type != REDIS_REPLY_STRING || rep->len != 40) {
            rc = rep->type == REDIS_REPLY_ERROR ? sk__redis_reply_err(rep) : -EPROTO;
            freeReplyObject(rep);
            return rc;
        }
        memcpy(m->sha[s], rep->str, 41);
        freeReplyObject(rep);
    }
    return 0;
}

/* Fix the bucket count (the first process's word stands) and preheat each
 * bucket's share with SET NX. */
static int setup_item(cluster_store *m, citem *it, uint32_t want)
{
    char k[KEY_MAX], v[32];
    redisReply *rep = NULL;
    snprintf(k, sizeof k, "sk:{%s}:buckets", it->id);
    snprintf(v, sizeof v, "%u", (unsigned)want);
    const char *set[] = {"SET", k, v, "NX", "GET"};
    int rc = sk_cluster_command(m->cl, sk_cluster_slot(k, strlen(k)), 5, set, NULL, &rep);
    if (rc < 0)
        return rc;
    if (rep->type == REDIS_REPLY_NIL) {
        it->nb = want;
    } else if (rep->type == REDIS_REPLY_STRING) {
        long n = strtol(rep->str, NULL, 10);
        rc = n >= 1 && n <= SK_CLUSTER_BUCKETS_MAX ? 0 : -EPROTO;
        it->nb = (uint32_t)n;
    } else {
        rc = rep->type == REDIS_REPLY_ERROR ? sk__redis_reply_err(rep) : -EPROTO;
    }
    freeReplyObject(rep);
    if (rc < 0)
        return rc;
    it->b = calloc(it->nb, sizeof *it->b);
    if (!it->b)
        return -ENOMEM;
    for (uint32_t b = 0; b < it->nb && rc == 0; b++) {
        sale_cluster_bucket_tag(it->id, b, it->nb, it->b[b].tag);
        it->b[b].slot = sk_cluster_slot(it->b[b].tag, strlen(it->b[b].tag));
        bkey(k, &it->b[b], "stock");
        snprintf(v, sizeof v, "%lld",
                 (long long)(it->stock / it->nb + ((int64_t)b < it->stock % it->nb)));
        const char *argv[] = {"SET", k, v, "NX"};
        rc = write1(m, it->b[b].slot, 4, argv);
    }
    if (rc < 0)
        return rc;
    /* the total the buckets were filled from, as they are (NX): a later
     * process configured with another stock reads it, not its own */
    bkey(k, &it->b[0], "total");
    snprintf(v, sizeof v, "%lld", (long long)it->stock);
    const char *total[] = {"SET", k, v, "NX"};
    return write1(m, it->b[0].slot, 4, total);
}

int sale__store_cluster_create(const sale_store_config *c, sale_store **out, char *err,
                               size_t errlen)
{
    int rc = -ENOMEM;
    const char *fault = getenv(SK_CLUSTER_FAULT_ENV);
    cluster_store *m = calloc(1, sizeof *m);
    if (!m)
        goto out_oom;
    m->base.ops = &cs_ops;
    m->pay_timeout_ms = c->pay_timeout_ms;
    m->timeout_ms = c->redis_timeout_ms;
    m->fault_kill_after_take = fault && !strcmp(fault, "kill-after-take");
    m->nitems = c->nitems;
    m->items = calloc(c->nitems ? c->nitems : 1, sizeof *m->items);
    if (!m->items)
        goto out_oom;
    for (size_t i = 0; i < c->nitems; i++) {
        const sale_store_item *si = &c->items[i];
        if (!si->id || !sk_id_valid(si->id, strlen(si->id)) || si->stock < 0 ||
            !si->per_user_limit || si->stock_buckets > SK_CLUSTER_BUCKETS_MAX) {
            snprintf(err, errlen, "store: item %zu: bad id, stock, limit or stock_buckets", i);
            rc = -EINVAL;
            goto out_destroy;
        }
        snprintf(m->items[i].id, sizeof m->items[i].id, "%s", si->id);
        m->items[i].stock = si->stock;
        m->items[i].limit = si->per_user_limit;
        atomic_init(&m->items[i].limit_now, si->per_user_limit);
    }
    sk_cluster_config cc = {.nodes = c->redis_nodes,
                            .timeout_ms = c->redis_timeout_ms,
                            .min_replicas_ack = c->min_replicas_ack,
                            .replica_ack_timeout_ms = c->replica_ack_timeout_ms};
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        rc = sk_cluster_create(&cc, &m->cl);
        if (rc == 0 || rc == -EINVAL)
            break;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((uint64_t)(now.tv_sec - t0.tv_sec) * 1000 +
                (uint64_t)(now.tv_nsec - t0.tv_nsec) / 1000000 >=
            c->redis_patience_ms)
            break;
        struct timespec pause = {0, 100 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    if (rc == 0)
        rc = load_scripts(m);
    int masters = m->cl ? sk_cluster_masters(m->cl) : 0;
    for (size_t i = 0; i < c->nitems && rc == 0; i++) {
        uint32_t want = c->items[i].stock_buckets ? c->items[i].stock_buckets
                                                  : (uint32_t)(masters > 0 ? masters : 1);
        rc = setup_item(m, &m->items[i], want);
    }
    if (rc < 0) {
        snprintf(err, errlen, "redis cluster %s: %s", c->redis_nodes ? c->redis_nodes : "",
                 strerror(-rc));
        goto out_destroy;
    }
    m->base.be = (sk_backend){.impl = m, .decide = cs_decide, .known = cs_known};
    *out = &m->base;
    return 0;

out_oom:
    snprintf(err, errlen, "out of memory");
out_destroy:
    if (m)
        cs_destroy(&m->base);
    return rc;
}
