/*
 * registry.h - gateways announce their RPC address in Redis; workers without
 * a fixed gateway list find them there.
 *
 * Records: two keys sharing the hash tag {registry}, so one Redis Cluster
 * slot holds the whole registry and every script touches a single node:
 *   SK_REGISTRY_ZSET   sorted set  gateway id scored by its expiry (unix ms,
 *                                  Redis's clock: TIME inside the scripts, so
 *                                  gateways' clocks never matter)
 *   SK_REGISTRY_ADDRS  hash        gateway id -> its RPC address ("tcp:HOST:PORT"
 *                                  with the bound port, or "unix:PATH")
 * A gateway is live exactly while its score is in the future:
 *   sk_registry_register    starts a heartbeat thread that runs BEAT at once
 *                           and again every ttl/3 (score = now + ttl), so two
 *                           lost beats in a row still leave it alive;
 *   a crash                 stops the beats: it is no longer listed after ttl;
 *   sk_registry_unregister  stops the beats and removes the entry, only when
 *                           it still holds our address (a successor that
 *                           reused the gateway id keeps its record).
 * BEAT also prunes entries whose expiry passed (both keys), and keeps each
 * key's own TTL at least the longest entry's, so a registry whose gateways
 * all died disappears by itself. sk_registry_list (workers) reads the live
 * entries with one script call: no SCAN, no key pattern.
 *
 * The handle has its own hiredis connection (a single Redis) or Redis Cluster
 * client (sale/include/redis_cluster.h, every command sent to the master of the
 * {registry} slot), made lazily and remade after any failure; every command
 * is bounded by the timeout (connect, then one reply; a cluster follows
 * redirections and failovers within a few of them).
 * The heartbeat never blocks the caller: while Redis is unreachable the thread
 * logs one line, keeps trying every ttl/3, and logs again once it is back.
 * Thread safety: every function may be called from any thread; commands on
 * the connection are serialised by a mutex. The process must ignore SIGPIPE.
 */
#ifndef SECKILL_SK_REGISTRY_H
#define SECKILL_SK_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#define SK_REGISTRY_ZSET "sk:{registry}:gateways"
#define SK_REGISTRY_ADDRS "sk:{registry}:addrs"
#define SK_REGISTRY_ID_MAX 64    /* gateway ids: sk_id_valid */
#define SK_REGISTRY_ADDR_MAX 279 /* as [rpc] listen */

typedef struct sk_registry sk_registry;

typedef struct sk_registry_gateway {
    char id[SK_REGISTRY_ID_MAX + 1];
    char addr[SK_REGISTRY_ADDR_MAX + 1];
} sk_registry_gateway;

/* Does not connect (the first command does). nodes NULL or "": the single
 * Redis host:port; else the seeds of a Redis Cluster ("host:port, ..." as
 * [redis] nodes; host and port are then unused), whose slot map is loaded
 * by the first command and reloaded as the cluster changes. Copies host and
 * nodes. OUT: *out. */
int sk_registry_create(const char *host, int port, const char *nodes, uint32_t timeout_ms,
                       sk_registry **out);
/* Unregisters when registered, then frees. NULL is a no-op. */
void sk_registry_destroy(sk_registry *r);

/* Gateway: announce gateway_id -> addr with a TTL of ttl_ms (>= 30), kept
 * alive by a heartbeat thread until sk_registry_unregister. Returns at once,
 * before the first SET. -EBUSY when already registered, -EINVAL for a bad id
 * or address. */
int sk_registry_register(sk_registry *r, const char *gateway_id, const char *addr, uint32_t ttl_ms);
/* Stop the heartbeat and delete the key. 0 (also when not registered), or
 * negative errno when Redis could not be told: the key then expires. */
int sk_registry_unregister(sk_registry *r);
/* Successful SETs so far (tests, logs). */
uint64_t sk_registry_beats(sk_registry *r);

/* Worker: the gateways registered now, each once. OUT: out[0 .. min(found,
 * cap)). Returns how many were stored, or negative errno (-ETIMEDOUT,
 * -ECONNREFUSED, -ECONNRESET, -EIO, -ENOMEM) when Redis could not be read: the
 * caller should then keep what it knew. Records with a malformed address are
 * skipped. At most cap entries are read (those expiring soonest first). */
int sk_registry_list(sk_registry *r, sk_registry_gateway *out, size_t cap);

#endif
