#include "registry.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "redis_target.h"
#include "sk.h"

/* Entries pruned per beat at most: a bounded script however many died. */
#define PRUNE_MAX "256"

/* Redis's clock in unix ms; every script reads it, so scores compare on one
 * clock whichever gateway wrote them. */
#define LUA_NOW                                                                                    \
    "local t = redis.call('TIME')\n"                                                               \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

/* KEYS: 1 zset, 2 addrs. ARGV: 1 id, 2 addr, 3 ttl ms. */
static const char beat_lua[] =
    LUA_NOW
    "local ttl = tonumber(ARGV[3])\n"
    "local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, " PRUNE_MAX ")\n"
    "if #dead > 0 then\n"
    "  redis.call('ZREM', KEYS[1], unpack(dead))\n"
    "  redis.call('HDEL', KEYS[2], unpack(dead))\n"
    "end\n"
    "redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])\n"
    "redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])\n"
    "for i = 1, 2 do\n"
    "  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end\n"
    "end\n"
    "return 1\n";

/* Remove only our own record: a successor with the same id may have
 * replaced it. KEYS: 1 zset, 2 addrs. ARGV: 1 id, 2 addr. */
static const char del_if_ours[] =
    "if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end\n"
    "redis.call('ZREM', KEYS[1], ARGV[1])\n"
    "return redis.call('HDEL', KEYS[2], ARGV[1])\n";

/* KEYS: 1 zset, 2 addrs. ARGV: 1 max entries. Returns {id, addr, ...} of the
 * live entries (expiry in the future), soonest expiry first. */
static const char list_lua[] =
    LUA_NOW
    "local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'LIMIT', 0, "
    "tonumber(ARGV[1]))\n"
    "local out = {}\n"
    "for _, id in ipairs(ids) do\n"
    "  local a = redis.call('HGET', KEYS[2], id)\n"
    "  if a then\n"
    "    out[#out + 1] = id\n"
    "    out[#out + 1] = a\n"
    "  end\n"
    "end\n"
    "return out\n";

struct sk_registry {
    sk_redis_target *t;   /* the {registry} keys' Redis or cluster master */
    pthread_mutex_t lock; /* t and the fields below */
    pthread_cond_t wake;  /* CLOCK_MONOTONIC: the heartbeat's sleep, cut short by stop */
    /* registration (heartbeat thread) */
    int registered, stop;
    pthread_t tid;
    char id[SK_REGISTRY_ID_MAX + 1];
    char addr[SK_REGISTRY_ADDR_MAX + 1];
    uint32_t ttl_ms;
    uint64_t beats;
};

/* Under r->lock: one BEAT. 0 when Redis ran it. */
static int beat_locked(sk_registry *r)
{
    char ttl[16];
    snprintf(ttl, sizeof ttl, "%u", (unsigned)r->ttl_ms);
    const char *argv[] = {"EVAL", beat_lua, "2", SK_REGISTRY_ZSET, SK_REGISTRY_ADDRS,
                          r->id,  r->addr,  ttl};
    redisReply *rep;
    int rc = sk_redis_target_run(r->t, 8, argv, &rep);
    if (rc < 0)
        return rc;
    rc = rep->type == REDIS_REPLY_INTEGER && rep->integer == 1 ? 0 : -EIO;
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
        int rc = beat_locked(r);
        if (rc == 0) {
            r->beats++;
            if (down)
                sk_log(SK_LOG_INFO, "registry", NULL, "%s reachable again, %s registered",
                       sk_redis_target_name(r->t), r->id);
            down = 0;
        } else if (!down) {
            /* one line per outage, not one per beat */
            sk_log(SK_LOG_WARN, "registry", NULL,
                   "%s unreachable (%s): %s not refreshed, retrying every %u ms",
                   sk_redis_target_name(r->t), strerror(-rc), r->id, (unsigned)(r->ttl_ms / 3));
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

int sk_registry_create(const char *host, int port, const char *nodes, uint32_t timeout_ms,
                       sk_registry **out)
{
    sk_registry *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    int rc = sk_redis_target_create(host, port, nodes, SK_REGISTRY_ZSET, timeout_ms, &r->t);
    if (rc < 0)
        goto out_free_r;
    rc = -ENOMEM;
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0)
        goto out_free_r;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int crc = pthread_cond_init(&r->wake, &ca);
    pthread_condattr_destroy(&ca);
    if (crc != 0)
        goto out_free_r;
    pthread_mutex_init(&r->lock, NULL);
    *out = r;
    return 0;
out_free_r:
    sk_redis_target_destroy(r->t);
    free(r);
    return rc;
}

void sk_registry_destroy(sk_registry *r)
{
    if (!r)
        return;
    sk_registry_unregister(r);
    sk_redis_target_destroy(r->t);
    pthread_cond_destroy(&r->wake);
    pthread_mutex_destroy(&r->lock);
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
    snprintf(r->id, sizeof r->id, "%s", gateway_id);
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
    const char *argv[] = {"EVAL", del_if_ours, "2", SK_REGISTRY_ZSET, SK_REGISTRY_ADDRS,
                          r->id,  r->addr};
    redisReply *rep;
    int rc = sk_redis_target_run(r->t, 7, argv, &rep);
    if (rc == 0) {
        if (rep->type != REDIS_REPLY_INTEGER)
            rc = -EIO;
        freeReplyObject(rep);
    }
    if (rc < 0)
        sk_log(SK_LOG_WARN, "registry", NULL, "cannot remove %s (%s): it expires in %u ms", r->id,
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

int sk_registry_list(sk_registry *r, sk_registry_gateway *out, size_t cap)
{
    int have = 0;
    pthread_mutex_lock(&r->lock);
    char max[16];
    snprintf(max, sizeof max, "%u", cap > 100000 ? 100000 : (unsigned)cap);
    const char *argv[] = {"EVAL", list_lua, "2", SK_REGISTRY_ZSET, SK_REGISTRY_ADDRS, max};
    redisReply *rep;
    int rc = sk_redis_target_run(r->t, 6, argv, &rep);
    if (rc < 0)
        goto out_unlock;
    rc = -EIO;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements % 2 != 0)
        goto out_free_rep;
    for (size_t i = 0; i + 1 < rep->elements && (size_t)have < cap; i += 2) {
        const redisReply *k = rep->element[i], *v = rep->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            goto out_free_rep;
        if (k->len > SK_REGISTRY_ID_MAX || !sk_id_valid(k->str, k->len) ||
            v->len > SK_REGISTRY_ADDR_MAX ||
            (strncmp(v->str, "tcp:", 4) != 0 && strncmp(v->str, "unix:", 5) != 0) ||
            memchr(v->str, '\0', v->len))
            continue; /* not one of ours */
        memcpy(out[have].id, k->str, k->len);
        out[have].id[k->len] = '\0';
        memcpy(out[have].addr, v->str, v->len);
        out[have].addr[v->len] = '\0';
        have++;
    }
    rc = have;
out_free_rep:
    freeReplyObject(rep);
out_unlock:
    pthread_mutex_unlock(&r->lock);
    return rc;
}
