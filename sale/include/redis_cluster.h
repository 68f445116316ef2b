/*
 * redis_cluster.h - a small Redis Cluster client on hiredis, used by the
 * cluster store (store_cluster.c) and the gateway registry
 * (seckill-worker/registry.c).
 * Commands are routed by hash slot to the master that owns it, in batches
 * pipelined per node; redirections and failovers are followed inside a
 * call, within a bounded number of rounds. Design: redis_cluster.c.
 *
 * Thread safety: every function may be called from any thread at once. A
 * call borrows one of SK_CLUSTER_POOL sessions (one connection per node
 * each) and waits when all are borrowed.
 *
 * Failures: a call that cannot get an answer returns a negative errno
 * within a few command timeouts and never hangs; the next calls find the
 * cluster again by themselves once it answers (a promoted replica, a moved
 * slot, a restarted node). A command may run more than once when its
 * connection broke before the reply (the call retries it on a fresh map),
 * so only idempotent commands belong here.
 *
 * hiredis writes with write(2): the process must ignore SIGPIPE.
 */
#ifndef SECKILL_SALE_REDIS_CLUSTER_H
#define SECKILL_SALE_REDIS_CLUSTER_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#define SK_CLUSTER_SLOTS 16384
#define SK_CLUSTER_MAX_NODES 64 /* addresses a handle ever learns */
#define SK_CLUSTER_POOL 16      /* sessions per handle */
#define SK_CLUSTER_ROUNDS 4     /* sends of one command within a call */

typedef struct sk_cluster sk_cluster;

typedef struct sk_cluster_config {
    const char *nodes;   /* seeds: "host:port, host:port ..." ([::1]:port for IPv6) */
    uint32_t timeout_ms; /* connect, and each reply */
    /* after a batch run with wait set: WAIT min_replicas_ack on every node it
     * wrote to; fewer acknowledgements in replica_ack_timeout_ms fail it */
    uint32_t min_replicas_ack;
    uint32_t replica_ack_timeout_ms;
} sk_cluster_config;

/* Parse the seeds and load the slot map from the first seed that answers.
 * OUT: *out, destroy with sk_cluster_destroy. -EINVAL a bad node list, else
 * the last seed's error. */
int sk_cluster_create(const sk_cluster_config *cfg, sk_cluster **out);
void sk_cluster_destroy(sk_cluster *c);

/* The hash slot of key[0..len): CRC16 (XMODEM) mod 16384 of the key, or of
 * the part between the first '{' and the next '}' when that is not empty. */
unsigned sk_cluster_slot(const char *key, size_t len);

typedef struct sk_cluster_cmd {
    unsigned slot; /* the slot of every key of the command */
    int argc;
    const char **argv;
    const size_t *argvlen; /* NULL: strlen */
    /* OUT: */
    redisReply *reply; /* the answer (an error reply included) when err is 0;
                        * the caller frees it with freeReplyObject */
    int err;           /* 0, or negative errno (reply is then NULL) */
} sk_cluster_cmd;

/* Run cmds[0..n): each goes to the master of its slot, one pipeline per
 * node per round, redirections (MOVED: the map is corrected; ASK: ASKING on
 * the target) and lost nodes (the map is reloaded from another node)
 * retried for up to SK_CLUSTER_ROUNDS rounds. wait: followed by WAIT on
 * every node of the batch (see sk_cluster_config); a node whose replicas do
 * not acknowledge in time fails its commands with -ENOTCONN, whose effects
 * may still stand. Returns 0 when every cmds[i].err is 0, else the first
 * error. */
int sk_cluster_run(sk_cluster *c, sk_cluster_cmd *cmds, size_t n, int wait);

/* One command: sk_cluster_run of a single command. OUT: *reply. */
int sk_cluster_command(sk_cluster *c, unsigned slot, int argc, const char **argv,
                       const size_t *argvlen, redisReply **reply);

/* 0 when every master of the map answers PING. */
int sk_cluster_ping(sk_cluster *c);

/* How many WAITs were answered with fewer than min_replicas_ack replicas
 * (or not at all) since creation. */
uint64_t sk_cluster_ack_shortfalls(sk_cluster *c);

/* How many distinct masters the map holds now. */
int sk_cluster_masters(sk_cluster *c);

#endif
