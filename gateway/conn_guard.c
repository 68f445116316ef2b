#include "conn_guard.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mix64.h"
#include "pending.h" /* gw_mono_ns */
#include "slab.h"

#define SHARDS 16

struct gw_guard_conn {
    gw_guard_conn *prev, *next; /* in its shard's list while armed */
    uint64_t deadline_ns;
    int fd;
    uint64_t ip; /* address key counted in the address table; 0: not counted */
    uint8_t shard;
    uint8_t armed;
};

typedef struct shard {
    pthread_mutex_t mu;
    gw_guard_conn *head, *tail; /* armed, in deadline order */
} shard;

typedef struct ip_slot {
    uint64_t ip;    /* address key (gw_guard_addr_key); 0 = empty */
    uint32_t count; /* > 0 while ip is set */
} ip_slot;

struct gw_guard {
    uint64_t timeout_ns; /* 0: no deadline */
    uint32_t max_per_ip; /* 0: no cap */
    pthread_mutex_t ip_mu;
    ip_slot *ips; /* open addressing, linear probing, backward-shift delete */
    size_t ip_mask;
    size_t ip_used;
    pthread_t sweeper;
    int sweeper_started;
    pthread_mutex_t stop_mu;
    pthread_cond_t stop_cv;
    int stop;
    gw_slab *conns; /* gw_guard_conn objects: one per connection, reused */
    _Atomic uint64_t timeouts;
    _Atomic uint64_t refused;
    atomic_uint next_shard;
    shard shards[SHARDS];
};

/* ---- per-address counts ---- */

static size_t ip_hash(uint64_t ip)
{
    return (size_t)(ip ^ (ip >> 29)); /* keys are mixed already (gw_guard_addr_key) */
}

/* The slot of ip, or the empty slot where it would go. Under ip_mu. */
static ip_slot *ip_find(gw_guard *g, uint64_t ip)
{
    for (size_t i = ip_hash(ip) & g->ip_mask;; i = (i + 1) & g->ip_mask)
        if (g->ips[i].ip == ip || g->ips[i].ip == 0)
            return &g->ips[i];
}

/* Take one count of ip: -EUSERS at the cap (or when the table is full). */
static int ip_take(gw_guard *g, uint64_t ip)
{
    int rc = 0;
    pthread_mutex_lock(&g->ip_mu);
    ip_slot *s = ip_find(g, ip);
    if (s->ip == 0) {
        if (g->ip_used + 1 > g->ip_mask) { /* keep one slot empty: probes end */
            rc = -EUSERS;
            goto out_unlock;
        }
        s->ip = ip;
        s->count = 0;
        g->ip_used++;
    }
    if (s->count >= g->max_per_ip)
        rc = -EUSERS;
    else
        s->count++;
out_unlock:
    pthread_mutex_unlock(&g->ip_mu);
    return rc;
}

static void ip_give(gw_guard *g, uint64_t ip)
{
    pthread_mutex_lock(&g->ip_mu);
    ip_slot *s = ip_find(g, ip);
    if (s->ip == ip && --s->count == 0) {
        /* backward-shift delete: later entries of the probe run move up, so
         * a lookup may stop at the first empty slot */
        size_t i = (size_t)(s - g->ips), j = i;
        for (;;) {
            j = (j + 1) & g->ip_mask;
            if (g->ips[j].ip == 0)
                break;
            size_t home = ip_hash(g->ips[j].ip) & g->ip_mask;
            /* j stays when its home lies cyclically in (i, j] */
            if (i <= j ? (home > i && home <= j) : (home > i || home <= j))
                continue;
            g->ips[i] = g->ips[j];
            i = j;
        }
        g->ips[i] = (ip_slot){0, 0};
        g->ip_used--;
    }
    pthread_mutex_unlock(&g->ip_mu);
}

uint32_t gw_guard_ip_count(gw_guard *g, uint64_t ip)
{
    if (!g->ips || ip == 0)
        return 0;
    pthread_mutex_lock(&g->ip_mu);
    ip_slot *s = ip_find(g, ip);
    uint32_t n = s->ip == ip ? s->count : 0;
    pthread_mutex_unlock(&g->ip_mu);
    return n;
}

/* ---- deadlines ---- */

static void unlink_conn(shard *s, gw_guard_conn *c)
{
    if (!c->armed)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        s->tail = c->prev;
    c->prev = c->next = NULL;
    c->armed = 0;
}

void gw_guard_conn_arm(gw_guard *g, gw_guard_conn *c, uint64_t now_ns)
{
    if (!g->timeout_ns)
        return;
    shard *s = &g->shards[c->shard];
    pthread_mutex_lock(&s->mu);
    unlink_conn(s, c);
    c->deadline_ns = now_ns + g->timeout_ns;
    c->prev = s->tail;
    if (s->tail)
        s->tail->next = c;
    else
        s->head = c;
    s->tail = c;
    c->armed = 1;
    pthread_mutex_unlock(&s->mu);
}

void gw_guard_conn_done(gw_guard *g, gw_guard_conn *c)
{
    shard *s = &g->shards[c->shard];
    pthread_mutex_lock(&s->mu);
    unlink_conn(s, c);
    pthread_mutex_unlock(&s->mu);
}

unsigned gw_guard_sweep(gw_guard *g, uint64_t now_ns)
{
    unsigned n = 0;
    for (unsigned i = 0; i < SHARDS; i++) {
        shard *s = &g->shards[i];
        pthread_mutex_lock(&s->mu);
        while (s->head && s->head->deadline_ns <= now_ns) {
            gw_guard_conn *c = s->head;
            unlink_conn(s, c);
            /* the fd stays open while c is registered: libmicrohttpd closes
             * it only after the closed notification, which takes this lock */
            shutdown(c->fd, SHUT_RDWR);
            n++;
        }
        pthread_mutex_unlock(&s->mu);
    }
    if (n)
        atomic_fetch_add_explicit(&g->timeouts, n, memory_order_relaxed);
    return n;
}

static void *sweeper_main(void *arg)
{
    gw_guard *g = arg;
    uint64_t tick = g->timeout_ns / 10;
    if (tick < 5000000ULL)
        tick = 5000000ULL;
    if (tick > 100000000ULL)
        tick = 100000000ULL;
    pthread_mutex_lock(&g->stop_mu);
    while (!g->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t at = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec + tick;
        ts.tv_sec = (time_t)(at / 1000000000ULL);
        ts.tv_nsec = (long)(at % 1000000000ULL);
        pthread_cond_timedwait(&g->stop_cv, &g->stop_mu, &ts);
        if (g->stop)
            break;
        pthread_mutex_unlock(&g->stop_mu);
        gw_guard_sweep(g, gw_mono_ns());
        pthread_mutex_lock(&g->stop_mu);
    }
    pthread_mutex_unlock(&g->stop_mu);
    return NULL;
}

/* ---- connections ---- */

int gw_guard_open(gw_guard *g, int fd, uint64_t ip, uint64_t now_ns, gw_guard_conn **out)
{
    if (ip && g->ips && ip_take(g, ip) < 0) {
        atomic_fetch_add_explicit(&g->refused, 1, memory_order_relaxed);
        return -EUSERS;
    }
    gw_guard_conn *c = gw_slab_alloc(g->conns);
    if (!c) {
        if (ip && g->ips)
            ip_give(g, ip);
        return -ENOMEM;
    }
    memset(c, 0, sizeof *c);
    c->fd = fd;
    c->ip = g->ips ? ip : 0;
    c->shard =
        (uint8_t)(atomic_fetch_add_explicit(&g->next_shard, 1, memory_order_relaxed) % SHARDS);
    gw_guard_conn_arm(g, c, now_ns);
    *out = c;
    return 0;
}

void gw_guard_close(gw_guard *g, gw_guard_conn *c)
{
    if (!c)
        return;
    gw_guard_conn_done(g, c);
    if (c->ip)
        ip_give(g, c->ip);
    gw_slab_free(g->conns, c);
}

uint64_t gw_guard_timeouts(const gw_guard *g)
{
    return atomic_load_explicit(&g->timeouts, memory_order_relaxed);
}

uint64_t gw_guard_refused(const gw_guard *g)
{
    return atomic_load_explicit(&g->refused, memory_order_relaxed);
}

/* ---- libmicrohttpd ---- */

uint64_t gw_guard_addr_key(const struct sockaddr *sa, socklen_t len)
{
    uint64_t k;
    if (!sa)
        return 0;
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        k = (1ULL << 32) | ((const struct sockaddr_in *)sa)->sin_addr.s_addr;
    } else if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (!memcmp(b, mapped, sizeof mapped)) { /* ::ffff:a.b.c.d is the IPv4 client */
            uint32_t v4;
            memcpy(&v4, b + 12, 4);
            k = (1ULL << 32) | v4;
        } else { /* the /64: 2^64 addresses of one host or site count as one */
            uint64_t prefix;
            memcpy(&prefix, b, 8);
            k = sk_mix64(prefix ^ 0x6a09e667f3bcc908ULL) ^ (2ULL << 32);
            return k ? k : 1;
        }
    } else {
        return 0; /* a UNIX socket or an unknown family: not counted */
    }
    k = sk_mix64(k);
    return k ? k : 1;
}

enum MHD_Result gw_guard_accept_policy(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    gw_guard *g = cls;
    uint64_t ip = gw_guard_addr_key(addr, addrlen);
    if (!g->ips || ip == 0 || gw_guard_ip_count(g, ip) < g->max_per_ip)
        return MHD_YES;
    atomic_fetch_add_explicit(&g->refused, 1, memory_order_relaxed);
    return MHD_NO;
}

static gw_guard_conn *conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

void gw_guard_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                     enum MHD_ConnectionNotificationCode code)
{
    gw_guard *g = cls;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        gw_guard_close(g, *socket_context);
        *socket_context = NULL;
        return;
    }
    const union MHD_ConnectionInfo *fdi =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    const union MHD_ConnectionInfo *ai =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!fdi)
        return;
    /* no length comes with it: the family says how much of it to read */
    uint64_t ip = ai ? gw_guard_addr_key(ai->client_addr, sizeof(struct sockaddr_storage)) : 0;
    gw_guard_conn *c = NULL;
    if (gw_guard_open(g, fdi->connect_fd, ip, gw_mono_ns(), &c) < 0) {
        /* over the cap (a race past the accept policy) or out of memory:
         * libmicrohttpd reads end-of-file and closes it */
        shutdown(fdi->connect_fd, SHUT_RDWR);
        return;
    }
    *socket_context = c;
}

void gw_guard_done(gw_guard *g, struct MHD_Connection *conn)
{
    gw_guard_conn *c = g ? conn_of(conn) : NULL;
    if (c)
        gw_guard_conn_done(g, c);
}

void gw_guard_next(gw_guard *g, struct MHD_Connection *conn)
{
    gw_guard_conn *c = g ? conn_of(conn) : NULL;
    if (c)
        gw_guard_conn_arm(g, c, gw_mono_ns());
}

/* ---- lifecycle ---- */

int gw_guard_create(const gw_guard_cfg *cfg, gw_guard **out)
{
    gw_guard *g = calloc(1, sizeof *g);
    int rc = -ENOMEM;
    if (!g)
        return -ENOMEM;
    g->timeout_ns = (uint64_t)cfg->request_timeout_ms * 1000000ULL;
    g->max_per_ip = cfg->max_per_ip;
    pthread_mutex_init(&g->ip_mu, NULL);
    pthread_mutex_init(&g->stop_mu, NULL);
    pthread_cond_init(&g->stop_cv, NULL);
    for (unsigned i = 0; i < SHARDS; i++)
        pthread_mutex_init(&g->shards[i].mu, NULL);
    if (gw_slab_create(sizeof(gw_guard_conn), 1024, &g->conns) < 0)
        goto out_destroy;
    if (g->max_per_ip) {
        /* at most one slot per open connection: twice that keeps probes short */
        size_t n = 64;
        while (n < (size_t)cfg->max_connections * 2 + 64)
            n <<= 1;
        g->ips = calloc(n, sizeof *g->ips);
        if (!g->ips)
            goto out_destroy;
        g->ip_mask = n - 1;
    }
    if (g->timeout_ns) {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_destroy(&g->stop_cv);
        pthread_cond_init(&g->stop_cv, &ca);
        pthread_condattr_destroy(&ca);
        rc = -pthread_create(&g->sweeper, NULL, sweeper_main, g);
        if (rc < 0)
            goto out_destroy;
        g->sweeper_started = 1;
        pthread_setname_np(g->sweeper, "gw-guard");
    }
    *out = g;
    return 0;
out_destroy:
    gw_guard_destroy(g);
    return rc;
}

void gw_guard_destroy(gw_guard *g)
{
    if (!g)
        return;
    if (g->sweeper_started) {
        pthread_mutex_lock(&g->stop_mu);
        g->stop = 1;
        pthread_cond_signal(&g->stop_cv);
        pthread_mutex_unlock(&g->stop_mu);
        pthread_join(g->sweeper, NULL);
    }
    for (unsigned i = 0; i < SHARDS; i++)
        pthread_mutex_destroy(&g->shards[i].mu);
    pthread_cond_destroy(&g->stop_cv);
    pthread_mutex_destroy(&g->stop_mu);
    pthread_mutex_destroy(&g->ip_mu);
    free(g->ips);
    gw_slab_destroy(g->conns);
    free(g);
}
