#include "registry.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "redis_conn.h"
#include "sk.h"

#define KEY_MAX (sizeof SK_REGISTRY_PREFIX + SK_REGISTRY_ID_MAX)
#define SCAN_COUNT "100"

/* DEL only our own record: a successor with the same id may have replaced it. */
static const char del_if_ours[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end "
    "return 0";

struct sk_registry {
    char *host;
    int port;
    uint32_t timeout_ms;
    pthread_mutex_t lock; /* the connection and the fields below */
    pthread_cond_t wake;  /* CLOCK_MONOTONIC: the heartbeat's sleep, cut short by stop */
    redisContext *c;      /* NULL: connect at the next command */
    /* registration (heartbeat thread) */
    int registered, stop;
    pthread_t tid;
    char key[KEY_MAX];
    char addr[SK_REGISTRY_ADDR_MAX + 1];
    uint32_t ttl_ms;
    uint64_t beats;
};

/* Under r->lock. */
static int ensure_conn(sk_registry *r)
{
    if (r->c)
        return 0;
    return sk__redis_connect(r->host, r->port, r->timeout_ms, &r->c);
}

/* Under r->lock: a command failed: drop the connection, reconnect next time. */
static int conn_failed(sk_registry *r, int saved)
{
    int rc = sk__redis_errno(r->c, saved);
    redisFree(r->c);
    r->c = NULL;
    return rc;
}

/* Under r->lock. 0 when Redis answered OK. */
static int set_locked(sk_registry *r)
{
    int rc = ensure_conn(r);
    if (rc < 0)
        return rc;
    redisReply *rep = redisCommand(r->c, "SET %s %s PX %u", r->key, r->addr, (unsigned)r->ttl_ms);
    if (!rep)
        return conn_failed(r, errno);
    rc = rep->type == REDIS_REPLY_STATUS && !strcmp(rep->str, "OK") ? 0 : -EIO;
    freeReplyObject(rep);
    return rc;
}

static void deadline_after(struct timespec *ts, uint32_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void *heartbeat_main(void *arg)
{
    sk_registry *r = arg;
    int down = 0;
    pthread_mutex_lock(&r->lock);
    while (!r->stop) {
        int rc = set_locked(r);
        if (rc == 0) {
            r->beats++;
            if (down)
                sk_log(SK_LOG_INFO, "registry", NULL, "redis %s:%d reachable again, %s registered",
                       r->host, r->port, r->key);
            down = 0;
        } else if (!down) {
            /* one line per outage, not one per beat */
            sk_log(SK_LOG_WARN, "registry", NULL,
                   "redis %s:%d unreachable (%s): %s not refreshed, retrying "
                   "every %u ms",
                   r->host, r->port, strerror(-rc), r->key, (unsigned)(r->ttl_ms / 3));
            down = 1;
        }
        struct timespec until;
        deadline_after(&until, r->ttl_ms / 3);
        while (!r->stop && pthread_cond_timedwait(&r->wake, &r->lock, &until) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

int sk_registry_create(const char *host, int port, uint32_t timeout_ms, sk_registry **out)
{
    if (!host || port <= 0 || port > 65535 || !timeout_ms)
        return -EINVAL;
    sk_registry *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    r->host = strdup(host);
    if (!r->host)
        goto out_free_r;
    r->port = port;
    r->timeout_ms = timeout_ms;
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0)
        goto out_free_host;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int crc = pthread_cond_init(&r->wake, &ca);
    pthread_condattr_destroy(&ca);
    if (crc != 0)
        goto out_free_host;
    pthread_mutex_init(&r->lock, NULL);
    *out = r;
    return 0;
out_free_host:
    free(r->host);
out_free_r:
    free(r);
    return -ENOMEM;
}

void sk_registry_destroy(sk_registry *r)
{
    if (!r)
        return;
    sk_registry_unregister(r);
    if (r->c)
        redisFree(r->c);
    pthread_cond_destroy(&r->wake);
    pthread_mutex_destroy(&r->lock);
    free(r->host);
    free(r);
}

int sk_registry_register(sk_registry *r, const char *gateway_id, const char *addr,
                         uint32_t ttl_ms)
{
    if (!gateway_id || !sk_id_valid(gateway_id, strlen(gateway_id)) || !addr ||
        strlen(addr) > SK_REGISTRY_ADDR_MAX ||
        (strncmp(addr, "tcp:", 4) != 0 && strncmp(addr, "unix:", 5) != 0) || ttl_ms < 30)
        return -EINVAL;
    pthread_mutex_lock(&r->lock);
    int rc = 0;
    if (r->registered) {
        rc = -EBUSY;
        goto out_unlock;
    }
    snprintf(r->key, sizeof r->key, SK_REGISTRY_PREFIX "%s", gateway_id);
    snprintf(r->addr, sizeof r->addr, "%s", addr);
    r->ttl_ms = ttl_ms;
    r->stop = 0;
    rc = -pthread_create(&r->tid, NULL, heartbeat_main, r);
    if (rc == 0)
        r->registered = 1;
out_unlock:
    pthread_mutex_unlock(&r->lock);
    return rc;
}

int sk_registry_unregister(sk_registry *r)
{
    pthread_mutex_lock(&r->lock);
    if (!r->registered) {
        pthread_mutex_unlock(&r->lock);
        return 0;
    }
    r->stop = 1;
    pthread_cond_broadcast(&r->wake);
    pthread_mutex_unlock(&r->lock);
    pthread_join(r->tid, NULL);

    pthread_mutex_lock(&r->lock);
    r->registered = 0;
    int rc = ensure_conn(r);
    if (rc == 0) {
        redisReply *rep =
            redisCommand(r->c, "EVAL %s 1 %s %s", del_if_ours, r->key, r->addr);
        if (!rep)
            rc = conn_failed(r, errno);
        else if (rep->type != REDIS_REPLY_INTEGER)
            rc = -EIO;
        if (rep)
            freeReplyObject(rep);
    }
    if (rc < 0)
        sk_log(SK_LOG_WARN, "registry", NULL, "cannot delete %s (%s): it expires in %u ms", r->key,
               strerror(-rc), (unsigned)r->ttl_ms);
    pthread_mutex_unlock(&r->lock);
    return rc;
}

uint64_t sk_registry_beats(sk_registry *r)
{
    pthread_mutex_lock(&r->lock);
    uint64_t n = r->beats;
    pthread_mutex_unlock(&r->lock);
    return n;
}

/* Under r->lock: read the values of keys[0..n) into out, skipping expired and
 * malformed records and ids already in out. Returns the new count or -errno. */
static int read_values(sk_registry *r, const redisReply *keys, sk_registry_gateway *out,
                       size_t have, size_t cap)
{
    size_t n = keys->elements;
    if (n == 0 || have == cap)
        return (int)have;
    const char **argv = malloc((n + 1) * sizeof *argv);
    size_t *argvlen = malloc((n + 1) * sizeof *argvlen);
    int rc = -ENOMEM;
    if (!argv || !argvlen)
        goto out_free;
    argv[0] = "MGET";
    argvlen[0] = 4;
    for (size_t i = 0; i < n; i++) {
        if (keys->element[i]->type != REDIS_REPLY_STRING ||
            keys->element[i]->len <= strlen(SK_REGISTRY_PREFIX)) {
            rc = -EIO;
            goto out_free;
        }
        argv[i + 1] = keys->element[i]->str;
        argvlen[i + 1] = keys->element[i]->len;
    }
    redisReply *vals = redisCommandArgv(r->c, (int)(n + 1), argv, argvlen);
    if (!vals) {
        rc = conn_failed(r, errno);
        goto out_free;
    }
    rc = -EIO;
    if (vals->type != REDIS_REPLY_ARRAY || vals->elements != n)
        goto out_free_vals;
    for (size_t i = 0; i < n && have < cap; i++) {
        const redisReply *k = keys->element[i], *v = vals->element[i];
        const char *id = k->str + strlen(SK_REGISTRY_PREFIX);
        size_t idlen = k->len - strlen(SK_REGISTRY_PREFIX);
        if (v->type != REDIS_REPLY_STRING || v->len > SK_REGISTRY_ADDR_MAX ||
            (strncmp(v->str, "tcp:", 4) != 0 && strncmp(v->str, "unix:", 5) != 0) ||
            memchr(v->str, '\0', v->len) || !sk_id_valid(id, idlen))
            continue; /* expired since the SCAN, or not one of ours */
        size_t j = 0;
        while (j < have && strcmp(out[j].id, id) != 0)
            j++;
        if (j < have)
            continue; /* SCAN may return a key twice */
        memcpy(out[have].id, id, idlen);
        out[have].id[idlen] = '\0';
        memcpy(out[have].addr, v->str, v->len);
        out[have].addr[v->len] = '\0';
        have++;
    }
    rc = (int)have;
out_free_vals:
    freeReplyObject(vals);
out_free:
    free(argv);
    free(argvlen);
    return rc;
}

int sk_registry_list(sk_registry *r, sk_registry_gateway *out, size_t cap)
{
    char cursor[32] = "0";
    int have = 0;
    pthread_mutex_lock(&r->lock);
    int rc = ensure_conn(r);
    if (rc < 0)
        goto out_unlock;
    do {
        redisReply *rep = redisCommand(r->c, "SCAN %s MATCH " SK_REGISTRY_PREFIX "* COUNT " SCAN_COUNT,
                                       cursor);
        if (!rep) {
            rc = conn_failed(r, errno);
            goto out_unlock;
        }
        if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
            rep->element[0]->type != REDIS_REPLY_STRING || rep->element[0]->len >= sizeof cursor ||
            rep->element[1]->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(rep);
            rc = -EIO;
            goto out_unlock;
        }
        memcpy(cursor, rep->element[0]->str, rep->element[0]->len);
        cursor[rep->element[0]->len] = '\0';
        have = read_values(r, rep->element[1], out, (size_t)have, cap);
        freeReplyObject(rep);
        if (have < 0) {
            rc = have;
            goto out_unlock;
        }
    } while (strcmp(cursor, "0") != 0);
    rc = have;
out_unlock:
    pthread_mutex_unlock(&r->lock);
    return rc;
}
