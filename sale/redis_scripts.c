/*
 * redis_scripts.c - what the Redis stores share: the Lua scripts that decide,
 * pay and reap (one bucket of stock per call; the single-Redis store has one
 * bucket per item, the cluster store several), and the reading of Redis
 * replies and order records. Key layout and script steps: store_redis.c.
 */
#include "redis_scripts.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uuid/uuid.h>

#define UUID_STR 37

/* The scripts return results as enum sk_result values. */
_Static_assert(SK_SUCCESS == 0 && SK_SOLD_OUT == 1 && SK_ALREADY_PURCHASED == 2,
               "the decide script hard-codes these result codes");

/* KEYS: 1 stock, 2 users, 3 orders, 4 deadlines, 5 events, 6 latest deadline,
 *       6+i refusal of request i.
 * ARGV: 1 now_ms, 2 pay deadline ms, 3 per-user limit, 4 refusal ttl ms, 5 item,
 *       6 final: '1' an empty stock answers (and records) sold_out; else it
 *       answers -1 and records nothing (stock may come from elsewhere),
 *       then per request: verdict, user, request id.
 * Returns -1 (no stock key), -2 (stock not a number), or per request
 * {result, order_id, stock left}: the body, redis_scripts.h. */
const char sk__redis_decide_lua[] = "local stock = redis.call('GET', KEYS[1])\n"
                                    "if not stock then return -1 end\n"
                                    "stock = tonumber(stock)\n"
                                    "if not stock then return -2 end\n"
                                    "local limit = tonumber(ARGV[3])\n"
                                    "local kd, kdl, final, sfx = 6, KEYS[6], ARGV[6] == '1', ''\n"
                                        SK_REDIS_LUA_BULK
                                        SK_REDIS_LUA_DECIDE;

/* KEYS: 1 orders, 2 deadlines, 3 events. ARGV: 1 order id, 2 now_ms, 3 item.
 * Returns 1 paid now, 0 already paid, -1 no such order, -2 cancelled,
 * -3 deadline reached. */
const char sk__redis_pay_lua[] =
    "local rec = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if not rec then return -1 end\n"
    "local state, user, rid, created, deadline =\n"
    "  string.match(rec, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$')\n"
    "if state == 'paid' then return 0 end\n"
    "if state ~= 'reserved' then return -2 end\n"
    "if tonumber(ARGV[2]) >= tonumber(deadline) then return -3 end\n"
    "redis.call('HSET', KEYS[1], ARGV[1],\n"
    "           'paid|' .. user .. '|' .. rid .. '|' .. created .. '|' .. deadline)\n"
    "redis.call('ZREM', KEYS[2], ARGV[1])\n"
    "redis.call('XADD', KEYS[3], '*', 'type', 'paid', 'order', ARGV[1], 'item', ARGV[3],\n"
    "           'user', user, 'request', rid, 'at', ARGV[2])\n"
    "return 1\n";

/* KEYS: 1 stock, 2 users, 3 orders, 4 deadlines, 5 events, 6 the reap's
 * stream position, 7 a counter raised by the units returned to the stock.
 * ARGV: 1 now_ms, 2 max entries to look at, 3 item.
 * Returns -1 (no stock key) or {cancelled, looked at}: the body,
 * redis_scripts.h. */
const char sk__redis_reap_lua[] = "if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end\n"
                                  "local epoch, kcur, kver = 0, KEYS[6], KEYS[7]\n" SK_REDIS_LUA_REAP;

/* An error reply from Redis as an errno. */
int sk__redis_reply_err(const redisReply *rep)
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

/* "state|user|request|created_ms|deadline_ms" */
int sk__redis_parse_order(const char *rec, const char *item_id, sk_order *o)
{
    const char *f[5];
    size_t flen[5];
    const char *p = rec;
    for (int i = 0; i < 5; i++) {
        const char *bar = strchr(p, '|');
        if ((i < 4) != (bar != NULL))
            return -EPROTO;
        f[i] = p;
        flen[i] = bar ? (size_t)(bar - p) : strlen(p);
        p = bar ? bar + 1 : p;
    }
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

static const char *field(const redisReply *kv, const char *name)
{
    for (size_t i = 0; i + 1 < kv->elements; i += 2)
        if (kv->element[i]->type == REDIS_REPLY_STRING &&
            kv->element[i + 1]->type == REDIS_REPLY_STRING &&
            strcmp(kv->element[i]->str, name) == 0)
            return kv->element[i + 1]->str;
    return NULL;
}

int sk__redis_deliver_events(const redisReply *rep, sale_event_fn fn, void *arg, int *nentries)
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
            sale_event ev = {
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

/* XREADGROUP from `from`, the group created on NOGROUP. */
static int xreadgroup(sk__redis_send_fn send, void *ctx, const char *k, const char *group,
                      const char *consumer, size_t max, const char *from, uint32_t block_ms,
                      redisReply **rep)
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
        rc = send(ctx, block_ms, argc, argv, rep);
        if (rc < 0 || (*rep)->type != REDIS_REPLY_ERROR)
            return rc;
        rc = sk__redis_reply_err(*rep);
        freeReplyObject(*rep);
        if (rc != -ENOENT || created)
            return rc;
        /* NOGROUP: create it at the start of the stream, so the group sees
         * every order event ever written; a concurrent creator wins. */
        const char *cargv[] = {"XGROUP", "CREATE", k, group, "0", "MKSTREAM"};
        rc = send(ctx, 0, 6, cargv, rep);
        if (rc < 0)
            return rc;
        if ((*rep)->type == REDIS_REPLY_ERROR && strncmp((*rep)->str, "BUSYGROUP", 9) != 0)
            rc = sk__redis_reply_err(*rep);
        freeReplyObject(*rep);
        if (rc < 0)
            return rc;
        created = 1;
    }
}

int sk__redis_events_read(sk__redis_send_fn send, void *ctx, const char *key, const char *group,
                          const char *consumer, size_t max, uint32_t block_ms, sale_event_fn fn,
                          void *arg)
{
    redisReply *rep = NULL;
    int rc, entries = 0;
    if (!group || !*group || !consumer || !*consumer || !max || !fn)
        return -EINVAL;
    /* this consumer's delivered-but-unacknowledged entries first */
    rc = xreadgroup(send, ctx, key, group, consumer, max, "0", 0, &rep);
    if (rc < 0)
        return rc;
    rc = sk__redis_deliver_events(rep, fn, arg, &entries);
    freeReplyObject(rep);
    if (rc != 0 || entries)
        return rc;
    rc = xreadgroup(send, ctx, key, group, consumer, max, ">", block_ms, &rep);
    if (rc < 0)
        return rc;
    rc = sk__redis_deliver_events(rep, fn, arg, &entries);
    freeReplyObject(rep);
    return rc;
}

int sk__redis_events_ack(sk__redis_send_fn send, void *ctx, const char *key, const char *group,
                         const char *const *ids, size_t n)
{
    const char **argv = NULL;
    redisReply *rep = NULL;
    int rc;
    if (!group || (!ids && n))
        return -EINVAL;
    if (n == 0)
        return 0;
    argv = malloc((3 + n) * sizeof *argv);
    if (!argv)
        return -ENOMEM;
    argv[0] = "XACK";
    argv[1] = key;
    argv[2] = group;
    for (size_t i = 0; i < n; i++)
        argv[3 + i] = ids[i];
    rc = send(ctx, 0, (int)(3 + n), argv, &rep);
    if (rc < 0)
        goto out_free_argv;
    if (rep->type == REDIS_REPLY_INTEGER)
        rc = (int)rep->integer;
    else
        rc = rep->type == REDIS_REPLY_ERROR ? sk__redis_reply_err(rep) : -EPROTO;
    freeReplyObject(rep);
out_free_argv:
    free(argv);
    return rc;
}
