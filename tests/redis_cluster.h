/*
 * redis_cluster.h - a throwaway real Redis Cluster for tests: 3 masters and
 * 3 replicas of redis-server (tests/redis_server.h, cluster-enabled, AOF with
 * fsync always, each in its own temporary directory on free loopback ports),
 * joined with `redis-cli --cluster create ... --cluster-replicas 1
 * --cluster-yes`. redis_cluster_start returns once every node reports
 * cluster_state:ok and every master has its replica attached.
 */
#ifndef SECKILL_TESTS_REDIS_CLUSTER_H
#define SECKILL_TESTS_REDIS_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "redis_server.h"

#define REDIS_CLUSTER_NODES 6

typedef struct redis_cluster {
    redis_server node[REDIS_CLUSTER_NODES];
    char error[512]; /* why the last call failed */
} redis_cluster;

/* Start and join the nodes with cluster-node-timeout node_timeout_ms. 0, or
 * negative errno with rc->error set and nothing left running. */
int redis_cluster_start(redis_cluster *rc, uint32_t node_timeout_ms);
/* A test group's setup: redis_cluster_start, its error on stderr, and the
 * node list into nodes (redis_cluster_nodes) unless NULL. 0 or -1. */
int redis_cluster_setup(redis_cluster *rc, uint32_t node_timeout_ms, char *nodes, size_t len);
/* Stop every node and remove their directories. */
void redis_cluster_destroy(redis_cluster *rc);

/* "127.0.0.1:P1,127.0.0.1:P2,..." of every node, for [redis] nodes. */
void redis_cluster_nodes(const redis_cluster *rc, char *buf, size_t len);

/* The index of the node that is master of slot now, as the live nodes say
 * it (CLUSTER SLOTS), or -1. */
int redis_cluster_master_of(const redis_cluster *rc, unsigned slot);
/* The index of a live replica of master m, or -1. */
int redis_cluster_replica_of(const redis_cluster *rc, int m);

/* Wait up to timeout_ms until every running node reports cluster_state:ok
 * and agrees on a live master for every slot. 0 or -ETIMEDOUT. */
int redis_cluster_wait_ok(redis_cluster *rc, uint32_t timeout_ms);

/* SIGKILL node i / start it again on its port and directory (it rejoins
 * from its nodes.conf, as a replica when it was failed over). */
void redis_cluster_kill(redis_cluster *rc, int i);
int redis_cluster_restart(redis_cluster *rc, int i);

/* Move slot from its master to node `to` (a master) by hand, keys and all:
 * SETSLOT IMPORTING/MIGRATING, MIGRATE of every key, SETSLOT NODE on all
 * masters. stop_after_migrating: leave the slot half-moved (MIGRATING /
 * IMPORTING set, keys moved) so clients see ASK; finish it with
 * redis_cluster_finish_move. 0 or negative errno with rc->error set. */
int redis_cluster_move_slot(redis_cluster *rc, unsigned slot, int to, int stop_after_migrating);
int redis_cluster_finish_move(redis_cluster *rc, unsigned slot, int to);

#endif
