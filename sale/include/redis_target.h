/*
 * redis_target.h - where a module keeps keys that all share one hash tag:
 * one Redis (host:port), or the master of that tag's slot on a Redis Cluster
 * (seed nodes). The gateway registry ({registry}) and the global token
 * bucket ({tb}) run their scripts through it, so neither branches on which.
 *
 * Not thread-safe: the owner serialises calls (one thread, or a lock).
 *
 * Failures: a single Redis's connection is made at the first call and again
 * at the first call after one failed (a late reply would desynchronise it);
 * a cluster's slot map likewise, so a Redis down at start is found later.
 * On a cluster a command whose reply was lost may run twice (see
 * redis_cluster.h): only commands whose repetition is harmless belong here.
 */
#ifndef SECKILL_SALE_REDIS_TARGET_H
#define SECKILL_SALE_REDIS_TARGET_H

#include <hiredis/hiredis.h>
#include <stdint.h>

typedef struct sk_redis_target sk_redis_target;

/* nodes: NULL or "" for the single Redis at host:port, else Redis Cluster
 * seeds ("host:port, host:port ..."); key: one of the module's keys, whose
 * hash tag picks the slot. Copies what it keeps and connects at the first
 * sk_redis_target_run. OUT: *out, destroy with sk_redis_target_destroy.
 * -EINVAL, -ENOMEM. */
int sk_redis_target_create(const char *host, int port, const char *nodes, const char *key,
                           uint32_t timeout_ms, sk_redis_target **out);
/* NULL is fine. */
void sk_redis_target_destroy(sk_redis_target *t);

/* Run one command (every key of it under the tag). OUT: *reply, possibly an
 * error reply; the caller frees it with freeReplyObject. 0, or negative
 * errno with *reply NULL. */
int sk_redis_target_run(sk_redis_target *t, int argc, const char **argv, redisReply **reply);

/* "redis host:port" or "redis cluster SEEDS", for log lines; valid until
 * sk_redis_target_destroy. */
const char *sk_redis_target_name(const sk_redis_target *t);

#endif
