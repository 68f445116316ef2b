/*
 * redis_scripts.h - internal to sale/: the Lua scripts and reply readers
 * the Redis stores (store_redis.c, store_cluster.c) share.
 */
#ifndef SECKILL_SALE_REDIS_SCRIPTS_H
#define SECKILL_SALE_REDIS_SCRIPTS_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#include "sk.h"
#include "store.h"

/* Lua shared by the decide scripts: bulk_read(cmd, key, t) runs MGET (key
 * nil) or HMGET over the names in t, bulk_write(cmd, key, t) HSET or ZADD
 * over the pairs in t, in slices of 1,000 under Lua's unpack limit (8,000). */
#define SK_REDIS_LUA_BULK \
    "local function bulk_read(cmd, key, t)\n" \
    "  if #t == 0 then return {} end\n" \
    "  if #t <= 1000 then\n" \
    "    if key then return redis.call(cmd, key, unpack(t)) end\n" \
    "    return redis.call(cmd, unpack(t))\n" \
    "  end\n" \
    "  local r = {}\n" \
    "  for i = 1, #t, 1000 do\n" \
    "    local part = bulk_read(cmd, key, {unpack(t, i, math.min(i + 999, #t))})\n" \
    "    for k = 1, #part do r[i + k - 1] = part[k] end\n" \
    "  end\n" \
    "  return r\n" \
    "end\n" \
    "local function bulk_write(cmd, key, t)\n" \
    "  for i = 1, #t, 1000 do redis.call(cmd, key, unpack(t, i, math.min(i + 999, #t))) end\n" \
    "end\n" "\n"

/* The decide scripts' body (the Redis store's own, and the cluster store's
 * per bucket), after a prologue that sets
 *   stock  units left          limit  the per-user limit
 *   kd     KEYS[kd + i] is request i's refusal key
 *   kdl    the key of the latest pay deadline in the events stream
 *   final  false: an empty stock answers -1 and records nothing
 *   sfx    the order record's ending
 * KEYS: 1 stock, 2 users, 3 orders, 4 deadlines, 5 events. ARGV: 1 now_ms,
 * 2 pay deadline, 4 refusal ttl ms, 5 item, then per request: verdict,
 * user, request id. Returns per request {result, order id, left}.
 *
 * A success's order id is its request id, so its order record is its
 * stored decision; a refusal is stored under its own key with a TTL. The
 * batch's reads come first (orders, refusals, buyers: one call each) and
 * its writes of the stock, the buyers and the orders last (one call each),
 * so a purchase runs one command of its own, its XADD. Redis's CPU goes to
 * the objects a purchase creates, far more than to the calls, and most to
 * keys with a TTL and sorted-set entries (docs/performance.md). A buyer or
 * a request id twice in a batch sees the earlier one's purchase.
 *
 * The reaper reads the stream in order and stops at the first order not
 * yet due, so a batch whose deadline is more than a second before the
 * latest one (a lower pay_timeout_ms on this worker, a clock behind) also
 * puts its orders in the deadlines set, which the reaper reads by deadline. */
#define SK_REDIS_LUA_DECIDE \
    "local n = (#ARGV - 6) / 3\n" \
    "local rids = {}\n" \
    "for i = 1, n do rids[i] = ARGV[6 + 3 * i] end\n" \
    "local recs = bulk_read('HMGET', KEYS[3], rids)\n" \
    "local dk, di, ds = {}, {}, {}\n" \
    "for i = 1, n do\n" \
    "  if not recs[i] then\n" \
    "    dk[#dk + 1] = KEYS[kd + i]\n" \
    "    di[#dk] = i\n" \
    "  end\n" \
    "end\n" \
    "local got = bulk_read('MGET', nil, dk)\n" \
    "for j = 1, #dk do ds[di[j]] = got[j] end\n" \
    "local uq, cnt, last = {}, {}, {}\n" \
    "for i = 1, n do\n" \
    "  local user = ARGV[5 + 3 * i]\n" \
    "  if not recs[i] and not ds[i] and ARGV[4 + 3 * i] == '0' and not cnt[user] then\n" \
    "    cnt[user] = 0\n" \
    "    uq[#uq + 1] = user\n" \
    "  end\n" \
    "end\n" \
    "local ul = bulk_read('HMGET', KEYS[2], uq)\n" \
    "for j = 1, #uq do\n" \
    "  if ul[j] then\n" \
    "    local c, l = string.match(ul[j], '^(%d+)|(.*)$')\n" \
    "    cnt[uq[j]], last[uq[j]] = tonumber(c), l\n" \
    "  end\n" \
    "end\n" \
    "local out, done, start, tail = {}, {}, stock, '|' .. ARGV[1] .. '|' .. ARGV[2] .. sfx\n" \
    "local uw, ow = {}, {}\n" \
    "for i = 1, n do\n" \
    "  local user, rid = ARGV[5 + 3 * i], ARGV[6 + 3 * i]\n" \
    "  local res, order\n" \
    "  local j = done[rid]\n" \
    "  if j then\n" \
    "    res, order = out[j], out[j + 1]\n" \
    "  elseif recs[i] then\n" \
    "    res, order = 0, rid\n" \
    "    redis.call('HSET', KEYS[3], rid, recs[i])\n" \
    "  elseif ds[i] then\n" \
    "    local r, o = string.match(ds[i], '^(%d+)|(.*)$')\n" \
    "    res, order = tonumber(r), o\n" \
    "    redis.call('PEXPIRE', KEYS[kd + i], ARGV[4])\n" \
    "  else\n" \
    "    local verdict = tonumber(ARGV[4 + 3 * i])\n" \
    "    if verdict ~= 0 then\n" \
    "      res, order = verdict, ''\n" \
    "    elseif cnt[user] >= limit then\n" \
    "      res, order = 2, last[user] or ''\n" \
    "    elseif stock <= 0 then\n" \
    "      if final then res = 1 else res = -1 end\n" \
    "      order = ''\n" \
    "    else\n" \
    "      stock = stock - 1\n" \
    "      if not uw[user] then\n" \
    "        uw[user] = true\n" \
    "        uw[#uw + 1] = user\n" \
    "      end\n" \
    "      cnt[user], last[user] = cnt[user] + 1, rid\n" \
    "      ow[#ow + 1] = rid\n" \
    "      ow[#ow + 1] = 'reserved|' .. user .. '|' .. rid .. tail\n" \
    "      redis.call('XADD', KEYS[5], '*', 'type', 'reserved', 'order', rid, 'item', ARGV[5],\n" \
    "                 'user', user, 'request', rid, 'at', ARGV[1], 'deadline', ARGV[2])\n" \
    "      res, order = 0, rid\n" \
    "    end\n" \
    "    if res > 0 then redis.call('SET', KEYS[kd + i], res .. '|' .. order, 'PX', ARGV[4]) end\n" \
    "  end\n" \
    "  done[rid] = #out + 1\n" \
    "  out[#out + 1] = res\n" \
    "  out[#out + 1] = order\n" \
    "  out[#out + 1] = stock\n" \
    "end\n" \
    "if stock ~= start then redis.call('DECRBY', KEYS[1], start - stock) end\n" \
    "local uv = {}\n" \
    "for k = 1, #uw do\n" \
    "  uv[2 * k - 1] = uw[k]\n" \
    "  uv[2 * k] = cnt[uw[k]] .. '|' .. last[uw[k]]\n" \
    "end\n" \
    "bulk_write('HSET', KEYS[2], uv)\n" \
    "bulk_write('HSET', KEYS[3], ow)\n" \
    "if #ow > 0 then\n" \
    "  local dl = tonumber(ARGV[2])\n" \
    "  local top = tonumber(redis.call('GET', kdl) or '0')\n" \
    "  if dl > top then\n" \
    "    redis.call('SET', kdl, ARGV[2])\n" \
    "  elseif dl < top - 1000 then\n" \
    "    local zw = {}\n" \
    "    for k = 1, #ow, 2 do\n" \
    "      zw[#zw + 1] = ARGV[2]\n" \
    "      zw[#zw + 1] = ow[k]\n" \
    "    end\n" \
    "    bulk_write('ZADD', KEYS[4], zw)\n" \
    "  end\n" \
    "end\n" \
    "return out\n" "\n"

/* The reap scripts' body, after a prologue that sets epoch (the sale whose
 * orders give their unit back), kcur (the key of the stream position the
 * reap got to) and kver (nil, or a counter raised per unit given back).
 * KEYS: 1 stock, 2 users, 3 orders, 4 deadlines, 5 events. ARGV: 1 now_ms,
 * 2 max entries to look at, 3 item. Orders in the deadlines set (those
 * decide put there, and any from before order ids were request ids) first;
 * then the events stream from
 * kcur: each reserved entry whose deadline passed is cancelled if its order
 * is still reserved, up to the first not yet due. The stream is in
 * deadline order within a second (decide puts an order that would break
 * that in the deadlines set too). Returns {cancelled, looked at}. */
#define SK_REDIS_LUA_REAP \
    "local now, max, cancelled, looked = tonumber(ARGV[1]), tonumber(ARGV[2]), 0, 0\n" \
    "local function cancel(oid)\n" \
    "  local rec = redis.call('HGET', KEYS[3], oid)\n" \
    "  if not rec then return end\n" \
    "  local state, user, rid, created, deadline, sale =\n" \
    "    string.match(rec, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)(.*)$')\n" \
    "  if state ~= 'reserved' then return end\n" \
    "  redis.call('HSET', KEYS[3], oid,\n" \
    "             'cancelled|' .. user .. '|' .. rid .. '|' .. created .. '|' .. deadline .. sale)\n" \
    "  if (tonumber(string.sub(sale, 2)) or 0) == epoch then\n" \
    "    redis.call('INCR', KEYS[1])\n" \
    "    local u = redis.call('HGET', KEYS[2], user)\n" \
    "    if u then\n" \
    "      local c, l = string.match(u, '^(%d+)|(.*)$')\n" \
    "      c = tonumber(c) - 1\n" \
    "      if c <= 0 then\n" \
    "        redis.call('HDEL', KEYS[2], user)\n" \
    "      else\n" \
    "        redis.call('HSET', KEYS[2], user, c .. '|' .. l)\n" \
    "      end\n" \
    "    end\n" \
    "    if kver then redis.call('INCR', kver) end\n" \
    "  end\n" \
    "  redis.call('XADD', KEYS[5], '*', 'type', 'cancelled', 'order', oid, 'item', ARGV[3],\n" \
    "             'user', user, 'request', rid, 'at', ARGV[1])\n" \
    "  cancelled = cancelled + 1\n" \
    "end\n" \
    "local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, max)\n" \
    "for _, oid in ipairs(due) do\n" \
    "  redis.call('ZREM', KEYS[4], oid)\n" \
    "  cancel(oid)\n" \
    "end\n" \
    "looked = #due\n" \
    "if looked < max then\n" \
    "  local last\n" \
    "  local ents = redis.call('XRANGE', KEYS[5], '(' .. (redis.call('GET', kcur) or '0-0'), '+',\n" \
    "                          'COUNT', max - looked)\n" \
    "  for _, e in ipairs(ents) do\n" \
    "    local f, typ, oid, dl = e[2]\n" \
    "    for j = 1, #f, 2 do\n" \
    "      if f[j] == 'type' then typ = f[j + 1]\n" \
    "      elseif f[j] == 'order' then oid = f[j + 1]\n" \
    "      elseif f[j] == 'deadline' then dl = tonumber(f[j + 1]) end\n" \
    "    end\n" \
    "    if typ == 'reserved' then\n" \
    "      if dl and dl > now then break end\n" \
    "      cancel(oid)\n" \
    "    end\n" \
    "    last = e[1]\n" \
    "    looked = looked + 1\n" \
    "  end\n" \
    "  if last then redis.call('SET', kcur, last) end\n" \
    "end\n" \
    "return {cancelled, looked}\n" "\n"

/* KEYS and ARGV: the comment above each in redis_scripts.c. */
extern const char sk__redis_decide_lua[];
extern const char sk__redis_pay_lua[];
extern const char sk__redis_reap_lua[];

/* An error reply as an errno: NOSCRIPT -ENOEXEC, LOADING / MASTERDOWN /
 * TRYAGAIN -EAGAIN, OOM -ENOMEM, BUSY -EBUSY, READONLY -EROFS, NOGROUP
 * -ENOENT, anything else -EIO. */
int sk__redis_reply_err(const redisReply *rep);

/* An order record "state|user|request|created_ms|deadline_ms" of item_id.
 * OUT: *o. -EPROTO when it does not read back. */
int sk__redis_parse_order(const char *rec, const char *item_id, sk_order *o);

/* Pass the entries of an XREADGROUP reply to fn (stopping where it asks).
 * Returns how many were passed, or -EPROTO; OUT: *nentries, how many the
 * reply held. */
int sk__redis_deliver_events(const redisReply *rep, sale_event_fn fn, void *arg, int *nentries);

/* How a store sends one command of the stream readers below: block_ms > 0
 * when the reply may take that much longer than a plain one. OUT: *rep, an
 * error reply included. 0 or negative errno. */
typedef int (*sk__redis_send_fn)(void *ctx, uint32_t block_ms, int argc, const char **argv,
                                 redisReply **rep);

/* sale_store_events_read on the stream at key: this consumer's entries not
 * yet acknowledged first, else wait up to block_ms for new ones; the group
 * is created at the start of the stream on first use. */
int sk__redis_events_read(sk__redis_send_fn send, void *ctx, const char *key, const char *group,
                          const char *consumer, size_t max, uint32_t block_ms, sale_event_fn fn,
                          void *arg);
/* sale_store_events_ack on the stream at key (XACK). */
int sk__redis_events_ack(sk__redis_send_fn send, void *ctx, const char *key, const char *group,
                         const char *const *ids, size_t n);

#endif
