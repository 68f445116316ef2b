/*
 * store_cluster.h - the Redis Cluster store: sale_store_create with backend
 * "redis" and redis_cluster set. Each item's stock is split into buckets,
 * each in its own hash slot so the slots (and their masters) share the
 * load; a user always buys from one bucket, so each decision stays one
 * atomic script call. Units move between buckets when one runs dry while
 * others hold some; the protocol and its invariants: store_cluster.c.
 *
 * Keys: every key of bucket b of item I carries the hash tag
 * {I/b/k}, k the first number that puts the tag's slot in the middle of
 * the b-th of B equal slot ranges (so buckets spread over masters that
 * hold equal ranges, as `redis-cli --cluster create` makes them).
 *
 * The bucket count is fixed by the first process that starts a sale
 * (sk:{I}:buckets, SET NX) and read back by every later one: changing
 * stock_buckets does not reshape a running sale.
 */
#ifndef SECKILL_SALE_STORE_CLUSTER_H
#define SECKILL_SALE_STORE_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#define SK_CLUSTER_BUCKETS_MAX 1024
#define SK_CLUSTER_TAG_MAX (64 + 24) /* "item/b/k" */

/* Test hook, read at creation: SK_CLUSTER_FAULT=kill-after-take makes the
 * process SIGKILL itself right after the first half of its first transfer
 * (units taken from a bucket, not yet given to the other); completing a
 * transfer left by another process is not affected. */
#define SK_CLUSTER_FAULT_ENV "SK_CLUSTER_FAULT"

/* The bucket (0..nbuckets-1) user_id buys from. */
uint32_t sale_cluster_user_bucket(const char *user_id, uint32_t nbuckets);

/* The hash tag of bucket b of nbuckets of item_id, without braces. OUT:
 * buf (SK_CLUSTER_TAG_MAX bytes). */
void sale_cluster_bucket_tag(const char *item_id, uint32_t b, uint32_t nbuckets, char *buf);

#endif
