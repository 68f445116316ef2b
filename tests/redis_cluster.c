#include "redis_cluster.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_time.h"

#define SLOTS 16384

static void fail(redis_cluster *rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rc->error, sizeof rc->error, fmt, ap);
    va_end(ap);
}

static redisContext *node_conn(const redis_cluster *rc, int i)
{
    struct timeval tv = {2, 0};
    if (rc->node[i].pid <= 0)
        return NULL;
    redisContext *c = redisConnectWithTimeout("127.0.0.1", rc->node[i].port, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    return c;
}

/* One command on node i; NULL when it cannot be reached. */
static redisReply *node_cmd(const redis_cluster *rc, int i, const char *fmt, ...)
{
    va_list ap;
    redisContext *c = node_conn(rc, i);
    if (!c)
        return NULL;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    return rep;
}

static int node_by_port(const redis_cluster *rc, long long port)
{
    for (int i = 0; i < REDIS_CLUSTER_NODES; i++)
        if (rc->node[i].port == port)
            return i;
    return -1;
}

static int node_id(const redis_cluster *rc, int i, char id[41])
{
    redisReply *rep = node_cmd(rc, i, "CLUSTER MYID");
    int ok = rep && rep->type == REDIS_REPLY_STRING && rep->len == 40;
    if (ok)
        memcpy(id, rep->str, 41);
    if (rep)
        freeReplyObject(rep);
    return ok ? 0 : -EIO;
}

/* Fill owner[slot] with node indexes from node i's CLUSTER SLOTS (-1: none
 * known). 0, or -EIO when node i cannot say. */
static int slot_owners(const redis_cluster *rc, int i, int *owner)
{
    redisReply *rep = node_cmd(rc, i, "CLUSTER SLOTS");
    int rc_ = -EIO;
    for (int s = 0; s < SLOTS; s++)
        owner[s] = -1;
    if (!rep || rep->type != REDIS_REPLY_ARRAY)
        goto out;
    for (size_t r = 0; r < rep->elements; r++) {
        redisReply *e = rep->element[r];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2)
            goto out;
        int m = node_by_port(rc, e->element[2]->element[1]->integer);
        for (long long s = e->element[0]->integer; s <= e->element[1]->integer && s < SLOTS; s++)
            owner[s] = m;
    }
    rc_ = 0;
out:
    if (rep)
        freeReplyObject(rep);
    return rc_;
}

static int info_has(const redis_cluster *rc, int i, const char *section, const char *needle)
{
    redisReply *rep = node_cmd(rc, i, section);
    int ok = rep && rep->type != REDIS_REPLY_ERROR && rep->str && strstr(rep->str, needle);
    if (rep)
        freeReplyObject(rep);
    return ok;
}

int redis_cluster_master_of(const redis_cluster *rc, unsigned slot)
{
    static __thread int owner[SLOTS];
    for (int i = 0; i < REDIS_CLUSTER_NODES; i++)
        if (rc->node[i].pid > 0 && slot_owners(rc, i, owner) == 0 && owner[slot] >= 0 &&
            rc->node[owner[slot]].pid > 0)
            return owner[slot];
    return -1;
}

int redis_cluster_replica_of(const redis_cluster *rc, int m)
{
    char id[41];
    if (node_id(rc, m, id) < 0)
        return -1;
    for (int i = 0; i < REDIS_CLUSTER_NODES; i++) {
        if (i == m || rc->node[i].pid <= 0)
            continue;
        redisReply *rep = node_cmd(rc, i, "CLUSTER NODES");
        int mine = 0;
        if (rep && rep->type == REDIS_REPLY_STRING) {
            /* this node's own line: "<id> <addr> myself,slave <master-id> ..." */
            for (char *line = rep->str; line && *line; line = strchr(line, '\n')) {
                if (*line == '\n')
                    line++;
                char *eol = strchr(line, '\n');
                if (eol)
                    *eol = '\0';
                if (strstr(line, "myself") && strstr(line, id) && strstr(line, "slave"))
                    mine = 1;
                if (eol)
                    *eol = '\n';
            }
        }
        if (rep)
            freeReplyObject(rep);
        if (mine)
            return i;
    }
    return -1;
}

int redis_cluster_wait_ok(redis_cluster *rc, uint32_t timeout_ms)
{
    static __thread int owner[SLOTS];
    uint64_t until = mono_ms() + timeout_ms;
    do {
        int ok = 1;
        for (int i = 0; i < REDIS_CLUSTER_NODES && ok; i++) {
            if (rc->node[i].pid <= 0)
                continue;
            ok = info_has(rc, i, "CLUSTER INFO", "cluster_state:ok") &&
                 slot_owners(rc, i, owner) == 0;
            for (int s = 0; s < SLOTS && ok; s++)
                ok = owner[s] >= 0 && rc->node[owner[s]].pid > 0;
        }
        if (ok)
            return 0;
        sleep_ms(50);
    } while (mono_ms() < until);
    fail(rc, "the cluster did not reach cluster_state:ok in %u ms", (unsigned)timeout_ms);
    return -ETIMEDOUT;
}

/* Every master has a replica whose link to it is up. */
static int replicas_up(redis_cluster *rc)
{
    for (int i = 0; i < REDIS_CLUSTER_NODES; i++) {
        if (info_has(rc, i, "INFO replication", "role:master") &&
            !info_has(rc, i, "INFO replication", "connected_slaves:1"))
            return 0;
        if (info_has(rc, i, "INFO replication", "role:slave") &&
            !info_has(rc, i, "INFO replication", "master_link_status:up"))
            return 0;
    }
    return 1;
}

static int create(redis_cluster *rc)
{
    char addr[REDIS_CLUSTER_NODES][32], log[96];
    const char *argv[REDIS_CLUSTER_NODES + 8];
    int argc = 0, st;
    argv[argc++] = "redis-cli";
    argv[argc++] = "--cluster";
    argv[argc++] = "create";
    for (int i = 0; i < REDIS_CLUSTER_NODES; i++) {
        snprintf(addr[i], sizeof addr[i], "127.0.0.1:%d", rc->node[i].port);
        argv[argc++] = addr[i];
    }
    argv[argc++] = "--cluster-replicas";
    argv[argc++] = "1";
    argv[argc++] = "--cluster-yes";
    argv[argc] = NULL;
    snprintf(log, sizeof log, "%s/create.log", rc->node[0].dir);
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execvp("redis-cli", (char *const *)argv);
        _exit(127);
    }
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fail(rc, "redis-cli --cluster create failed (status %d); see %s", st, log);
        return -ECHILD;
    }
    return 0;
}

int redis_cluster_start(redis_cluster *rc, uint32_t node_timeout_ms)
{
    int err = 0;
    memset(rc, 0, sizeof *rc);
    for (int i = 0; i < REDIS_CLUSTER_NODES; i++) {
        err = redis_server_start_cluster(&rc->node[i], node_timeout_ms);
        if (err < 0) {
            fail(rc, "node %d: %s", i, rc->node[i].error);
            goto out_destroy;
        }
    }
    err = create(rc);
    if (err < 0)
        goto out_destroy;
    err = redis_cluster_wait_ok(rc, 60000);
    if (err < 0)
        goto out_destroy;
    for (uint64_t until = mono_ms() + 60000; !replicas_up(rc);) {
        if (mono_ms() > until) {
            fail(rc, "the replicas did not attach in 60 s");
            err = -ETIMEDOUT;
            goto out_destroy;
        }
        sleep_ms(50);
    }
    return 0;

out_destroy : {
    char error[sizeof rc->error];
    memcpy(error, rc->error, sizeof error);
    redis_cluster_destroy(rc);
    memcpy(rc->error, error, sizeof error);
    return err;
}
}

int redis_cluster_setup(redis_cluster *rc, uint32_t node_timeout_ms, char *nodes, size_t len)
{
    if (redis_cluster_start(rc, node_timeout_ms) < 0) {
        fprintf(stderr, "redis cluster: %s\n", rc->error);
        return -1;
    }
    if (nodes)
        redis_cluster_nodes(rc, nodes, len);
    return 0;
}

void redis_cluster_destroy(redis_cluster *rc)
{
    for (int i = 0; i < REDIS_CLUSTER_NODES; i++)
        if (rc->node[i].dir[0])
            redis_server_destroy(&rc->node[i]);
}

void redis_cluster_nodes(const redis_cluster *rc, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (int i = 0; i < REDIS_CLUSTER_NODES && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s127.0.0.1:%d", i ? "," : "",
                                rc->node[i].port);
}

void redis_cluster_kill(redis_cluster *rc, int i)
{
    redis_server_kill(&rc->node[i]);
}

int redis_cluster_restart(redis_cluster *rc, int i)
{
    int err = redis_server_restart(&rc->node[i]);
    if (err < 0)
        fail(rc, "node %d: %s", i, rc->node[i].error);
    return err;
}

static int ok_reply(redis_cluster *rc, redisReply *rep, const char *what)
{
    int ok = rep && rep->type != REDIS_REPLY_ERROR;
    if (!ok)
        fail(rc, "%s: %s", what, rep ? rep->str : "no answer");
    if (rep)
        freeReplyObject(rep);
    return ok ? 0 : -EIO;
}

int redis_cluster_move_slot(redis_cluster *rc, unsigned slot, int to, int stop_after_migrating)
{
    char from_id[41], to_id[41];
    int from = redis_cluster_master_of(rc, slot);
    if (from < 0 || from == to) {
        fail(rc, "slot %u: no live master, or already on node %d", slot, to);
        return -EINVAL;
    }
    if (node_id(rc, from, from_id) < 0 || node_id(rc, to, to_id) < 0) {
        fail(rc, "CLUSTER MYID failed");
        return -EIO;
    }
    if (ok_reply(rc, node_cmd(rc, to, "CLUSTER SETSLOT %u IMPORTING %s", slot, from_id),
                 "SETSLOT IMPORTING") < 0 ||
        ok_reply(rc, node_cmd(rc, from, "CLUSTER SETSLOT %u MIGRATING %s", slot, to_id),
                 "SETSLOT MIGRATING") < 0)
        return -EIO;
    for (;;) {
        redisReply *keys = node_cmd(rc, from, "CLUSTER GETKEYSINSLOT %u 100", slot);
        if (!keys || keys->type != REDIS_REPLY_ARRAY) {
            ok_reply(rc, keys, "GETKEYSINSLOT");
            return -EIO;
        }
        size_t n = keys->elements;
        for (size_t k = 0; k < n; k++) {
            char port[16];
            snprintf(port, sizeof port, "%d", rc->node[to].port);
            const char *argv[] = {"MIGRATE", "127.0.0.1", port, keys->element[k]->str, "0", "5000"};
            redisContext *c = node_conn(rc, from);
            redisReply *rep = c ? redisCommandArgv(c, 6, argv, NULL) : NULL;
            if (c)
                redisFree(c);
            if (ok_reply(rc, rep, "MIGRATE") < 0) {
                freeReplyObject(keys);
                return -EIO;
            }
        }
        freeReplyObject(keys);
        if (n == 0)
            break;
    }
    return stop_after_migrating ? 0 : redis_cluster_finish_move(rc, slot, to);
}

int redis_cluster_finish_move(redis_cluster *rc, unsigned slot, int to)
{
    char to_id[41];
    if (node_id(rc, to, to_id) < 0) {
        fail(rc, "CLUSTER MYID failed");
        return -EIO;
    }
    /* the target first, so the slot always has an owner that knows it */
    if (ok_reply(rc, node_cmd(rc, to, "CLUSTER SETSLOT %u NODE %s", slot, to_id), "SETSLOT NODE") <
        0)
        return -EIO;
    for (int i = 0; i < REDIS_CLUSTER_NODES; i++)
        if (i != to && rc->node[i].pid > 0 && info_has(rc, i, "INFO replication", "role:master") &&
            ok_reply(rc, node_cmd(rc, i, "CLUSTER SETSLOT %u NODE %s", slot, to_id),
                     "SETSLOT NODE") < 0)
            return -EIO;
    return 0;
}
