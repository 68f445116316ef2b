/*
 * redis_server.h - a throwaway real redis-server for tests.
 *
 * redis_server_start picks a free port on 127.0.0.1 and a fresh temporary
 * directory, runs redis-server as a child process with AOF on and fsync
 * always (so a restart keeps every acknowledged write), and returns once it
 * answers PING. The server's log is <dir>/redis.log.
 */
#ifndef SECKILL_TESTS_REDIS_SERVER_H
#define SECKILL_TESTS_REDIS_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct redis_server {
    pid_t pid; /* 0 when not running */
    int port;
    int bus_port;             /* cluster nodes: the cluster bus port, else 0 */
    uint32_t node_timeout_ms; /* cluster nodes: cluster-node-timeout, else 0 */
    int master_port;          /* a replica's master (REPLICAOF), 0 for a master */
    char dir[64];
    char error[256]; /* why the last call failed */
} redis_server;

/* 0, or negative errno with rs->error set (-ENOENT: redis-server is not
 * installed; scripts/install-deps.sh installs it) and nothing left behind. */
int redis_server_start(redis_server *rs);
/* A test group's setup: redis_server_start, its error on stderr. 0, or -1
 * (cmocka then fails the group: never a silent skip). */
int redis_server_setup(redis_server *rs);
/* redis_server_start for a Redis Cluster node: cluster-enabled, its bus on
 * a second free port, cluster-node-timeout node_timeout_ms, nodes.conf in
 * its directory (so a restarted node rejoins), and full coverage not
 * required (the slots of live masters keep answering while one fails over). */
int redis_server_start_cluster(redis_server *rs, uint32_t node_timeout_ms);
/* Start a replica of master (--replicaof) on a free port and a fresh
 * directory, and return once its replication link is up (the first full
 * sync done). Sets the master's repl-diskless-sync-delay to 0 first, so that
 * takes well under a second instead of the default 5 s. Same errors as
 * redis_server_start, -ETIMEDOUT when the link does not come up in 20 s. */
int redis_server_start_replica(redis_server *rs, const redis_server *master);
/* Send one inline command (no quoting: words separated by spaces) and read
 * the reply into buf (cap bytes, NUL-terminated, cut when longer). Returns
 * the reply's length, or negative errno. */
int redis_server_cmd(const redis_server *rs, const char *cmd, char *buf, size_t cap);
/* Stop the process (SIGTERM, then wait); keeps the port and the directory. */
void redis_server_stop(redis_server *rs);
/* Stop when running, then start again on the same port and directory. */
int redis_server_restart(redis_server *rs);
/* SIGKILL and reap: a crash, nothing flushed on the way out. */
void redis_server_kill(redis_server *rs);
/* SIGSTOP / SIGCONT: a server that accepts but never answers. */
void redis_server_pause(redis_server *rs);
void redis_server_resume(redis_server *rs);
/* SIGKILL: a crash, with no chance to write anything more. */
void redis_server_kill(redis_server *rs);
/* Stop and remove the directory. */
void redis_server_destroy(redis_server *rs);

#endif
