/*
 * result_store.h - recent outcomes by request id, for GET /seckill/result.
 *
 * Bounded two ways: at most `capacity` entries (at least one per shard; the
 * oldest of a shard dropped first) and each entry expires ttl after it was
 * recorded. Sharded; each shard is a fixed ring of entries with a hash index,
 * allocated once at create.
 */
#ifndef SECKILL_GW_RESULT_STORE_H
#define SECKILL_GW_RESULT_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "sk.h"

typedef struct gw_results gw_results;

int gw_results_create(size_t capacity, uint64_t ttl_ns, gw_results **out);
void gw_results_destroy(gw_results *r);
/* Record o (recorded at now_ns). A stored success is never replaced by a
 * later outcome of the same request (a redelivery can only repeat it).
 * o->result SK_UNAVAILABLE records "issued, not decided yet" (a request
 * answered 504 while its message is still in flight): it is stored only
 * where nothing is, and any real outcome replaces it. */
void gw_results_put(gw_results *r, const sk_outcome *o, uint64_t now_ns);
/* 0 and *out, or -ENOENT when unknown or expired. */
int gw_results_get(gw_results *r, const uint8_t id[16], uint64_t now_ns, sk_outcome *out);

#endif
