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
