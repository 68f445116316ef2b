#include "redis_target.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_cluster.h"
#include "redis_conn.h"

struct sk_redis_target {
    char *host;
    int port;
    char *nodes; /* NULL: the single Redis host:port, else Redis Cluster seeds */
    char *name;  /* for logs */
    unsigned slot;
    uint32_t timeout_ms;
    redisContext *c; /* single Redis; NULL: connect at the next command */
    sk_cluster *cl;  /* cluster; NULL: load the slot map at the next command */
};

int sk_redis_target_create(const char *host, int port, const char *nodes, const char *key,
                           uint32_t timeout_ms, sk_redis_target **out)
{
    int cluster = nodes && *nodes;
    if ((!cluster && (!host || port <= 0 || port > 65535)) || !key || !timeout_ms)
        return -EINVAL;
    sk_redis_target *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->host = strdup(cluster ? "" : host);
    t->nodes = cluster ? strdup(nodes) : NULL;
    size_t nlen = 32 + (cluster ? strlen(nodes) : strlen(host));
    t->name = malloc(nlen);
    if (!t->host || (cluster && !t->nodes) || !t->name) {
        sk_redis_target_destroy(t);
        return -ENOMEM;
    }
    if (cluster)
        snprintf(t->name, nlen, "redis cluster %s", nodes);
    else
        snprintf(t->name, nlen, "redis %s:%d", host, port);
    t->port = port;
    t->slot = sk_cluster_slot(key, strlen(key));
    t->timeout_ms = timeout_ms;
    *out = t;
    return 0;
}

void sk_redis_target_destroy(sk_redis_target *t)
{
    if (!t)
        return;
    if (t->c)
        redisFree(t->c);
    sk_cluster_destroy(t->cl);
    free(t->name);
    free(t->nodes);
    free(t->host);
    free(t);
}

int sk_redis_target_run(sk_redis_target *t, int argc, const char **argv, redisReply **reply)
{
    *reply = NULL;
    if (t->nodes) {
        if (!t->cl) {
            sk_cluster_config cc = {.nodes = t->nodes, .timeout_ms = t->timeout_ms};
            int rc = sk_cluster_create(&cc, &t->cl);
            if (rc < 0)
                return rc;
        }
        return sk_cluster_command(t->cl, t->slot, argc, argv, NULL, reply);
    }
    if (!t->c) {
        int rc = sk__redis_connect(t->host, t->port, t->timeout_ms, &t->c);
        if (rc < 0)
            return rc;
    }
    *reply = redisCommandArgv(t->c, argc, argv, NULL);
    if (*reply)
        return 0;
    int rc = sk__redis_errno(t->c, errno);
    redisFree(t->c);
    t->c = NULL;
    return rc;
}

const char *sk_redis_target_name(const sk_redis_target *t)
{
    return t->name;
}
