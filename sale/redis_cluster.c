/*
 * redis_cluster.c - the Redis Cluster client.
 *
 * The slot map. map[slot] is the index of the node (in nodes[]) that
 * masters the slot, NO_NODE when unknown. It is loaded from CLUSTER SLOTS of
 * any node that answers (the seeds first at creation, later every node ever
 * learnt, starting with a different one each time), and corrected one slot
 * at a time by a MOVED reply. nodes[] only grows (bounded by
 * SK_CLUSTER_MAX_NODES): an index stays valid for the handle's life, so a
 * session's connection array needs no remapping. Replicas are learnt too
 * (a promoted replica is then already known) but never routed to.
 *
 * Routing. A command names its slot; sk_cluster_run groups the batch by
 * node, appends each node's commands to that node's connection (ASKING
 * before a command redirected by ASK), optionally WAIT, then reads each
 * node's replies in order: one round trip per node per round, the nodes'
 * pipelines in flight together. Per command:
 *   - a reply that is not a redirection: done;
 *   - MOVED slot addr: map[slot] = addr, map reload wanted, send again;
 *   - ASK slot addr: send again to addr after ASKING, this call only (the
 *     slot is migrating; the map stays);
 *   - TRYAGAIN / CLUSTERDOWN / LOADING / MASTERDOWN: send again next round,
 *     after a short pause;
 *   - no connection, a timeout, a broken pipe: the node is marked down
 *     (connect attempts back off 50 ms doubling to 1 s), the connection
 *     dropped, the map reloaded from another node, send again.
 * After SK_CLUSTER_ROUNDS rounds a command still pending fails with the last
 * error: callers fail closed, and the next call starts afresh.
 *
 * Sessions. SK_CLUSTER_POOL sessions, each with one connection per node
 * (connected on first use). A call borrows one for its whole duration, so
 * a pipeline never interleaves with another thread's. A node's gen goes up
 * when one of its connections breaks; other sessions then drop their
 * connection to that node before use instead of each failing once more.
 *
 * Locks: lock guards nodes[] bookkeeping, map[] and the sessions' busy
 * flags, never held across I/O. reload_lock makes one thread reload the map
 * while the others go on with the old one.
 */
#include "redis_cluster.h"
#include "redis_conn.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NO_NODE 0xFFFF
#define HOST_MAX 64
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 1000
#define RELOAD_MIN_MS 50 /* map reloads at most this often */

typedef struct node {
    char host[HOST_MAX];
    int port;
    uint64_t gen;        /* bumped when a connection to it breaks */
    uint64_t retry_at;   /* monotonic ms: no connect attempt before */
    uint32_t backoff_ms; /* 0 while connecting works */
    int last_err;
} node;

typedef struct session {
    int busy;
    redisContext *ctx[SK_CLUSTER_MAX_NODES];
    uint64_t gen[SK_CLUSTER_MAX_NODES];
    /* run() scratch, grown to the largest batch seen */
    size_t cap;
    int *target; /* per command: its node this round, -1 none */
    int *asking; /* per command: the node an ASK sent it to, -1 none */
    char *done;  /* per command: answered (or failed for good) */
} session;

struct sk_cluster {
    sk_cluster_config cfg;
    uint32_t conn_timeout_ms; /* the replies of WAIT included */

    pthread_mutex_t lock;
    pthread_cond_t idle;
    node nodes[SK_CLUSTER_MAX_NODES];
    int nnodes;
    uint16_t map[SK_CLUSTER_SLOTS];
    int reload_wanted;
    uint64_t reloaded_at;
    unsigned next_source; /* where the next reload starts looking */
    session pool[SK_CLUSTER_POOL];

    pthread_mutex_t reload_lock;
    _Atomic uint64_t ack_shortfalls; /* WAITs answered with too few replicas */
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- slots ---- */

static uint16_t crc16(const char *buf, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((unsigned char)buf[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

unsigned sk_cluster_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t from = (size_t)(open - key) + 1;
        const char *close = memchr(key + from, '}', len - from);
        if (close && close > key + from)
            return crc16(key + from, (size_t)(close - key - from)) & (SK_CLUSTER_SLOTS - 1);
    }
    return crc16(key, len) & (SK_CLUSTER_SLOTS - 1);
}

/* ---- nodes ---- */

/* The index of host:port, added when new. Under lock. -ENOSPC when full. */
static int node_index(sk_cluster *c, const char *host, size_t hlen, int port)
{
    if (hlen == 0 || hlen >= HOST_MAX || port <= 0 || port > 65535)
        return -EINVAL;
    for (int i = 0; i < c->nnodes; i++)
        if (c->nodes[i].port == port && strlen(c->nodes[i].host) == hlen &&
            memcmp(c->nodes[i].host, host, hlen) == 0)
            return i;
    if (c->nnodes == SK_CLUSTER_MAX_NODES)
        return -ENOSPC;
    node *nd = &c->nodes[c->nnodes];
    memset(nd, 0, sizeof *nd);
    memcpy(nd->host, host, hlen);
    nd->host[hlen] = '\0';
    nd->port = port;
    return c->nnodes++;
}

/* "host:port" or "[v6]:port" at s[0..len). OUT: host span and port. */
static int parse_addr(const char *s, size_t len, const char **host, size_t *hlen, int *port)
{
    const char *colon;
    if (len && s[0] == '[') {
        const char *end = memchr(s, ']', len);
        if (!end || (size_t)(end - s) + 1 >= len || end[1] != ':')
            return -EINVAL;
        *host = s + 1;
        *hlen = (size_t)(end - s) - 1;
        colon = end + 1;
    } else {
        colon = NULL;
        for (size_t i = 0; i < len; i++)
            if (s[i] == ':')
                colon = s + i;
        if (!colon)
            return -EINVAL;
        *host = s;
        *hlen = (size_t)(colon - s);
    }
    size_t plen = len - (size_t)(colon + 1 - s);
    int p = 0;
    if (plen == 0 || plen > 5)
        return -EINVAL;
    for (size_t i = 0; i < plen; i++) {
        if (colon[1 + i] < '0' || colon[1 + i] > '9')
            return -EINVAL;
        p = p * 10 + (colon[1 + i] - '0');
    }
    *port = p;
    return p > 0 && p <= 65535 && *hlen > 0 ? 0 : -EINVAL;
}

/* A fresh connection to node i, honouring its backoff. */
static int node_connect(sk_cluster *c, int i, redisContext **out, uint64_t *gen)
{
    char host[HOST_MAX];
    int port;
    pthread_mutex_lock(&c->lock);
    node *nd = &c->nodes[i];
    if (nd->backoff_ms && mono_ms() < nd->retry_at) {
        int err = nd->last_err;
        pthread_mutex_unlock(&c->lock);
        return err;
    }
    memcpy(host, nd->host, sizeof host);
    port = nd->port;
    pthread_mutex_unlock(&c->lock);

    int rc = sk__redis_connect(host, port, c->conn_timeout_ms, out);

    pthread_mutex_lock(&c->lock);
    if (rc < 0) {
        nd->backoff_ms = nd->backoff_ms ? nd->backoff_ms * 2 : BACKOFF_MIN_MS;
        if (nd->backoff_ms > BACKOFF_MAX_MS)
            nd->backoff_ms = BACKOFF_MAX_MS;
        nd->retry_at = mono_ms() + nd->backoff_ms;
        nd->last_err = rc;
        c->reload_wanted = 1;
    } else {
        nd->backoff_ms = 0;
        *gen = nd->gen;
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

/* ---- the map ---- */

/* Apply one CLUSTER SLOTS reply from node `from`. Under lock. */
static int apply_slots(sk_cluster *c, const redisReply *rep, int from)
{
    if (rep->type != REDIS_REPLY_ARRAY)
        return -EPROTO;
    uint16_t fresh[SK_CLUSTER_SLOTS];
    for (int s = 0; s < SK_CLUSTER_SLOTS; s++)
        fresh[s] = NO_NODE;
    for (size_t r = 0; r < rep->elements; r++) {
        const redisReply *e = rep->element[r];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER)
            return -EPROTO;
        long long lo = e->element[0]->integer, hi = e->element[1]->integer;
        int master = -1;
        for (size_t k = 2; k < e->elements; k++) {
            const redisReply *a = e->element[k];
            if (a->type != REDIS_REPLY_ARRAY || a->elements < 2 ||
                a->element[1]->type != REDIS_REPLY_INTEGER)
                return -EPROTO;
            const char *host = a->element[0]->type == REDIS_REPLY_STRING ? a->element[0]->str : "";
            size_t hlen = strlen(host);
            if (hlen == 0 || strcmp(host, "?") == 0) { /* the answering node's own address */
                host = c->nodes[from].host;
                hlen = strlen(host);
            }
            int idx = node_index(c, host, hlen, (int)a->element[1]->integer);
            if (k == 2)
                master = idx;
        }
        if (master < 0 || lo < 0 || hi >= SK_CLUSTER_SLOTS || lo > hi)
            return -EPROTO;
        for (long long s = lo; s <= hi; s++)
            fresh[s] = (uint16_t)master;
    }
    memcpy(c->map, fresh, sizeof fresh);
    return 0;
}

/* Reload the map from the first node that answers. force: even when
 * reloaded less than RELOAD_MIN_MS ago. */
static int reload(sk_cluster *c, int force)
{
    int rc = -EHOSTUNREACH, n;
    unsigned start;
    if (pthread_mutex_trylock(&c->reload_lock) != 0)
        return 0; /* another thread is at it */
    pthread_mutex_lock(&c->lock);
    if (!force && mono_ms() < c->reloaded_at + RELOAD_MIN_MS) {
        pthread_mutex_unlock(&c->lock);
        pthread_mutex_unlock(&c->reload_lock);
        return 0;
    }
    n = c->nnodes;
    start = c->next_source++;
    pthread_mutex_unlock(&c->lock);

    for (int k = 0; k < n; k++) {
        int i = (int)((start + (unsigned)k) % (unsigned)n);
        redisContext *ctx = NULL;
        uint64_t gen;
        rc = node_connect(c, i, &ctx, &gen);
        if (rc < 0)
            continue;
        redisReply *rep = redisCommand(ctx, "CLUSTER SLOTS");
        if (!rep)
            rc = sk__redis_errno(ctx, errno);
        redisFree(ctx);
        if (!rep)
            continue;
        pthread_mutex_lock(&c->lock);
        rc = rep->type == REDIS_REPLY_ERROR ? -EIO : apply_slots(c, rep, i);
        if (rc == 0) {
            c->reload_wanted = 0;
            c->reloaded_at = mono_ms();
        }
        pthread_mutex_unlock(&c->lock);
        freeReplyObject(rep);
        if (rc == 0)
            break;
    }
    pthread_mutex_unlock(&c->reload_lock);
    return rc;
}

/* ---- sessions ---- */

static session *session_take(sk_cluster *c)
{
    session *s = NULL;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        for (int i = 0; i < SK_CLUSTER_POOL && !s; i++)
            if (!c->pool[i].busy)
                s = &c->pool[i];
        if (s)
            break;
        pthread_cond_wait(&c->idle, &c->lock);
    }
    s->busy = 1;
    pthread_mutex_unlock(&c->lock);
    return s;
}

static void session_give(sk_cluster *c, session *s)
{
    pthread_mutex_lock(&c->lock);
    s->busy = 0;
    pthread_cond_signal(&c->idle);
    pthread_mutex_unlock(&c->lock);
}

static int session_reserve(session *s, size_t n)
{
    if (n <= s->cap)
        return 0;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < n)
        cap *= 2;
    int *t = realloc(s->target, cap * sizeof *t);
    if (t)
        s->target = t;
    int *a = realloc(s->asking, cap * sizeof *a);
    if (a)
        s->asking = a;
    char *d = realloc(s->done, cap);
    if (d)
        s->done = d;
    if (!t || !a || !d)
        return -ENOMEM;
    s->cap = cap;
    return 0;
}

/* The session's connection to node i, connected when needed. */
static int session_conn(sk_cluster *c, session *s, int i, redisContext **out)
{
    pthread_mutex_lock(&c->lock);
    uint64_t gen = c->nodes[i].gen;
    pthread_mutex_unlock(&c->lock);
    if (s->ctx[i] && s->gen[i] != gen) {
        redisFree(s->ctx[i]);
        s->ctx[i] = NULL;
    }
    if (!s->ctx[i]) {
        int rc = node_connect(c, i, &s->ctx[i], &s->gen[i]);
        if (rc < 0) {
            s->ctx[i] = NULL;
            return rc;
        }
    }
    *out = s->ctx[i];
    return 0;
}

/* Node i's connection in session s failed: drop it and every session's. */
static void session_broken(sk_cluster *c, session *s, int i)
{
    if (s->ctx[i]) {
        redisFree(s->ctx[i]);
        s->ctx[i] = NULL;
    }
    pthread_mutex_lock(&c->lock);
    c->nodes[i].gen++;
    c->reload_wanted = 1;
    pthread_mutex_unlock(&c->lock);
}

/* ---- run ---- */

/* What to do with a reply. */
enum verdict { DONE, MOVED, ASK, LATER };

static enum verdict classify(const redisReply *rep, const char **addr, size_t *alen)
{
    if (rep->type != REDIS_REPLY_ERROR)
        return DONE;
    int moved = strncmp(rep->str, "MOVED ", 6) == 0, ask = strncmp(rep->str, "ASK ", 4) == 0;
    if (moved || ask) {
        /* "MOVED 3999 127.0.0.1:6381" */
        const char *sp = strchr(rep->str + (moved ? 6 : 4), ' ');
        if (!sp)
            return DONE;
        *addr = sp + 1;
        *alen = strlen(sp + 1);
        return moved ? MOVED : ASK;
    }
    if (!strncmp(rep->str, "TRYAGAIN", 8) || !strncmp(rep->str, "CLUSTERDOWN", 11) ||
        !strncmp(rep->str, "LOADING", 7) || !strncmp(rep->str, "MASTERDOWN", 10))
        return LATER;
    return DONE;
}

/* An error reply kept when its command runs out of rounds. */
static int later_err(const redisReply *rep)
{
    return !strncmp(rep->str, "TRYAGAIN", 8) || !strncmp(rep->str, "LOADING", 7) ? -EAGAIN
                                                                                 : -ENETDOWN;
}

/* Append cmds targeted at node j to its connection (ASKING first where an
 * ASK sent them), then WAIT. 0, or negative errno: the connection is then
 * unusable. */
static int send_node(sk_cluster *c, session *s, redisContext *ctx, int j, sk_cluster_cmd *cmds,
                     size_t n, int wait)
{
    char waitn[16], waitms[16];
    const char *wargv[] = {"WAIT", waitn, waitms};
    for (size_t i = 0; i < n; i++) {
        if (s->target[i] != j)
            continue;
        if (s->asking[i] == j && redisAppendCommand(ctx, "ASKING") != REDIS_OK)
            return -ENOMEM;
        if (redisAppendCommandArgv(ctx, cmds[i].argc, cmds[i].argv, cmds[i].argvlen) != REDIS_OK)
            return -ENOMEM;
    }
    if (!wait)
        return 0;
    snprintf(waitn, sizeof waitn, "%u", (unsigned)c->cfg.min_replicas_ack);
    snprintf(waitms, sizeof waitms, "%u", (unsigned)c->cfg.replica_ack_timeout_ms);
    return redisAppendCommandArgv(ctx, 3, wargv, NULL) == REDIS_OK ? 0 : -ENOMEM;
}

/* Read node j's replies to what send_node appended. OUT: *later when a
 * reply asked to try again later. */
static void read_node(sk_cluster *c, session *s, int j, sk_cluster_cmd *cmds, size_t n, int wait,
                      int *later)
{
    redisContext *ctx = s->ctx[j];
    int io = 0;
    for (size_t i = 0; i < n; i++) {
        void *rep = NULL;
        const char *addr = NULL;
        size_t alen = 0;
        if (s->target[i] != j)
            continue;
        if (io) {
            cmds[i].err = io;
            continue;
        }
        if (s->asking[i] == j) {
            if (redisGetReply(ctx, &rep) != REDIS_OK || !rep) {
                cmds[i].err = io = sk__redis_errno(ctx, errno);
                continue;
            }
            freeReplyObject(rep);
            rep = NULL;
        }
        if (redisGetReply(ctx, &rep) != REDIS_OK || !rep) {
            cmds[i].err = io = sk__redis_errno(ctx, errno);
            continue;
        }
        switch (classify(rep, &addr, &alen)) {
        case DONE:
            cmds[i].reply = rep;
            cmds[i].err = 0;
            s->done[i] = 1;
            continue;
        case MOVED:
        case ASK: {
            const char *host;
            size_t hlen;
            int port, idx = -EPROTO, moved = classify(rep, &addr, &alen) == MOVED;
            if (parse_addr(addr, alen, &host, &hlen, &port) == 0) {
                pthread_mutex_lock(&c->lock);
                idx = node_index(c, host, hlen, port);
                if (idx >= 0 && moved) {
                    c->map[cmds[i].slot % SK_CLUSTER_SLOTS] = (uint16_t)idx;
                    c->reload_wanted = 1;
                }
                pthread_mutex_unlock(&c->lock);
            }
            s->asking[i] = moved || idx < 0 ? -1 : idx;
            cmds[i].err = idx < 0 ? idx : -EAGAIN;
            break;
        }
        case LATER:
            cmds[i].err = later_err(rep);
            *later = 1;
            break;
        }
        freeReplyObject(rep);
    }
    if (!io && wait) {
        redisReply *rep = NULL;
        int err = 0;
        if (redisGetReply(ctx, (void **)&rep) != REDIS_OK || !rep)
            err = io = sk__redis_errno(ctx, errno);
        else if (rep->type != REDIS_REPLY_INTEGER ||
                 rep->integer < (long long)c->cfg.min_replicas_ack) {
            err = -ENOTCONN;
            atomic_fetch_add(&c->ack_shortfalls, 1);
        }
        if (rep)
            freeReplyObject(rep);
        /* not confirmed on enough replicas: what was answered stands on
         * this node only, which a failover may lose */
        for (size_t i = 0; err && i < n; i++)
            if (s->target[i] == j && s->done[i] && cmds[i].reply) {
                freeReplyObject(cmds[i].reply);
                cmds[i].reply = NULL;
                cmds[i].err = -ENOTCONN;
            }
    }
    if (io)
        session_broken(c, s, j);
}

int sk_cluster_run(sk_cluster *c, sk_cluster_cmd *cmds, size_t n, int wait)
{
    session *s;
    int rc = 0;
    size_t pending = n;
    wait = wait && c->cfg.min_replicas_ack > 0;

    for (size_t i = 0; i < n; i++) {
        cmds[i].reply = NULL;
        cmds[i].err = -EAGAIN;
    }
    if (n == 0)
        return 0;
    s = session_take(c);
    rc = session_reserve(s, n);
    if (rc < 0) {
        for (size_t i = 0; i < n; i++)
            cmds[i].err = rc;
        goto out_give;
    }
    memset(s->done, 0, n);
    for (size_t i = 0; i < n; i++)
        s->asking[i] = -1;

    for (int round = 0, later = 0; round < SK_CLUSTER_ROUNDS && pending; round++) {
        char used[SK_CLUSTER_MAX_NODES] = {0};
        int want, nn;
        if (later)
            pause_ms(10L << round); /* a failover or a migration step is under way */
        later = 0;
        pthread_mutex_lock(&c->lock);
        want = round > 0 && c->reload_wanted;
        pthread_mutex_unlock(&c->lock);
        if (want)
            reload(c, 0);

        pthread_mutex_lock(&c->lock);
        nn = c->nnodes;
        for (size_t i = 0; i < n; i++) {
            int t = s->done[i]          ? -1
                    : s->asking[i] >= 0 ? s->asking[i]
                                        : c->map[cmds[i].slot % SK_CLUSTER_SLOTS];
            if (t == NO_NODE) {
                cmds[i].err = -ENETDOWN; /* no master known for the slot */
                c->reload_wanted = 1;
                t = -1;
            }
            s->target[i] = t;
        }
        pthread_mutex_unlock(&c->lock);

        for (int j = 0; j < nn; j++) {
            redisContext *ctx = NULL;
            int err = 0, any = 0;
            for (size_t i = 0; i < n && !any; i++)
                any = s->target[i] == j;
            if (!any)
                continue;
            err = session_conn(c, s, j, &ctx);
            if (err == 0) {
                err = send_node(c, s, ctx, j, cmds, n, wait);
                if (err < 0)
                    session_broken(c, s, j);
            }
            if (err < 0) {
                for (size_t i = 0; i < n; i++)
                    if (s->target[i] == j) {
                        cmds[i].err = err;
                        s->target[i] = -1;
                    }
                continue;
            }
            used[j] = 1;
        }
        /* every node's pipeline is on its way: now collect */
        for (int j = 0; j < nn; j++)
            if (used[j])
                read_node(c, s, j, cmds, n, wait, &later);
        pending = 0;
        for (size_t i = 0; i < n; i++)
            pending += !s->done[i];
    }
    for (size_t i = 0; i < n; i++)
        if (cmds[i].err < 0 && !rc)
            rc = cmds[i].err;
out_give:
    session_give(c, s);
    return rc;
}

int sk_cluster_command(sk_cluster *c, unsigned slot, int argc, const char **argv,
                       const size_t *argvlen, redisReply **reply)
{
    sk_cluster_cmd cmd = {.slot = slot, .argc = argc, .argv = argv, .argvlen = argvlen};
    int rc = sk_cluster_run(c, &cmd, 1, 0);
    *reply = cmd.reply;
    return rc;
}

/* The first slot of each distinct master. OUT: slots[], returns how many. */
static int master_slots(sk_cluster *c, unsigned *slots)
{
    char seen[SK_CLUSTER_MAX_NODES] = {0};
    int k = 0;
    pthread_mutex_lock(&c->lock);
    for (unsigned s = 0; s < SK_CLUSTER_SLOTS; s++) {
        uint16_t m = c->map[s];
        if (m != NO_NODE && !seen[m]) {
            seen[m] = 1;
            slots[k++] = s;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return k;
}

uint64_t sk_cluster_ack_shortfalls(sk_cluster *c)
{
    return atomic_load(&c->ack_shortfalls);
}

int sk_cluster_masters(sk_cluster *c)
{
    unsigned slots[SK_CLUSTER_MAX_NODES];
    return master_slots(c, slots);
}

int sk_cluster_ping(sk_cluster *c)
{
    unsigned slots[SK_CLUSTER_MAX_NODES];
    sk_cluster_cmd cmds[SK_CLUSTER_MAX_NODES];
    const char *argv[] = {"PING"};
    int k = master_slots(c, slots), rc;
    if (k == 0) {
        rc = reload(c, 0);
        k = master_slots(c, slots);
        if (k == 0)
            return rc < 0 ? rc : -ENETDOWN;
    }
    for (int i = 0; i < k; i++)
        cmds[i] = (sk_cluster_cmd){.slot = slots[i], .argc = 1, .argv = argv};
    rc = sk_cluster_run(c, cmds, (size_t)k, 0);
    for (int i = 0; i < k; i++) {
        if (cmds[i].reply && cmds[i].reply->type == REDIS_REPLY_ERROR && rc == 0)
            rc = -EIO;
        if (cmds[i].reply)
            freeReplyObject(cmds[i].reply);
    }
    return rc;
}

/* ---- create / destroy ---- */

int sk_cluster_create(const sk_cluster_config *cfg, sk_cluster **out)
{
    sk_cluster *c;
    int rc = 0;
    const char *p;
    if (!cfg->nodes || !cfg->timeout_ms)
        return -EINVAL;
    c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->cfg = *cfg;
    c->cfg.nodes = NULL; /* parsed below; not kept */
    c->conn_timeout_ms =
        cfg->timeout_ms + (cfg->min_replicas_ack ? cfg->replica_ack_timeout_ms : 0);
    for (int s = 0; s < SK_CLUSTER_SLOTS; s++)
        c->map[s] = NO_NODE;
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->reload_lock, NULL);
    pthread_cond_init(&c->idle, NULL);
    for (p = cfg->nodes; *p;) {
        const char *host;
        size_t len, hlen;
        int port;
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        if (!*p)
            break;
        len = strcspn(p, " ,\t");
        if (parse_addr(p, len, &host, &hlen, &port) < 0 || node_index(c, host, hlen, port) < 0) {
            rc = -EINVAL;
            goto out_destroy;
        }
        p += len;
    }
    if (c->nnodes == 0) {
        rc = -EINVAL;
        goto out_destroy;
    }
    rc = reload(c, 1);
    if (rc < 0)
        goto out_destroy;
    *out = c;
    return 0;

out_destroy:
    sk_cluster_destroy(c);
    return rc;
}

void sk_cluster_destroy(sk_cluster *c)
{
    if (!c)
        return;
    for (int i = 0; i < SK_CLUSTER_POOL; i++) {
        session *s = &c->pool[i];
        for (int j = 0; j < SK_CLUSTER_MAX_NODES; j++)
            if (s->ctx[j])
                redisFree(s->ctx[j]);
        free(s->target);
        free(s->asking);
        free(s->done);
    }
    pthread_cond_destroy(&c->idle);
    pthread_mutex_destroy(&c->reload_lock);
    pthread_mutex_destroy(&c->lock);
    free(c);
}
