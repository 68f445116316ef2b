/*
 * redis_scripts.h - internal to sale/: the Lua scripts and reply readers
 * the Redis stores (store_redis.c, store_cluster.c) share.
 */
#ifndef SECKILL_SALE_REDIS_SCRIPTS_H
#define SECKILL_SALE_REDIS_SCRIPTS_H

#include <hiredis/hiredis.h>

#include "sk.h"
#include "store.h"

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

#endif
