#include "remote.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "rpc.h"

#define MAX_BATCH 1024
#define CALL_SLACK_MS 2000 /* on top of the long-poll wait */
#define MIN_SPLIT_WAIT_MS 10 /* discovery: the least long-poll per gateway */

/* A known gateway. serial is never reused, so a thread tells a gateway that
 * was dropped and found again from one it still has. */
typedef struct gwent {
    char *addr;
    rpc_client *control; /* stock broadcasts */
    uint64_t serial;
} gwent;

/* One worker thread's connection to one gateway; owned by that thread. */
typedef struct conn {
    uint64_t serial;
    rpc_client *cli;
} conn;

typedef struct handle {
    struct sk_remote *r;
    char id[300];       /* "<worker id>@<consumer id>", sent in HELLO */
    conn conns[SK_REMOTE_MAX_GATEWAYS];
    size_t nconns;
    size_t next;        /* discovery: the connection of the next FETCH */
    size_t idle;        /* discovery: FETCHes without messages in a row */
    unsigned seen;      /* discovery: r->version of conns */
    conn *cur;          /* the last FETCH's connection: its RESULTs and COMMITs */
    rpc_frame reply;    /* owns the last FETCH_OK's bytes */
    int have_reply;
    mq_message msgs[MAX_BATCH];
    char topics[MAX_BATCH][RPC_NAME_MAX + 1];
} handle;

struct sk_remote {
    sk_remote_config cfg;
    /* discovery: gws changes under the write lock, version with it; a fixed
     * list never changes and is read without the lock */
    pthread_rwlock_t lock;
    gwent gws[SK_REMOTE_MAX_GATEWAYS];
    size_t ngws;
    atomic_uint version;
    uint64_t next_serial;
    atomic_uint next; /* fixed list: round-robin of threads over gateways */
};

static __thread handle *tl_handle; /* the calling worker thread's handle */

static rpc_client *connect_to(sk_remote *r, const char *addr, const char *id)
{
    rpc_client_config cc;
    rpc_client *cli = NULL;
    rpc_client_config_init(&cc);
    cc.addr = addr;
    cc.worker_id = id;
    cc.group = r->cfg.group;
    cc.role = r->cfg.role;
    cc.secret = r->cfg.secret;
    cc.secret_len = strlen(r->cfg.secret);
    cc.tls_ca = r->cfg.tls_ca;
    cc.tls_cert = r->cfg.tls_cert;
    cc.tls_key = r->cfg.tls_key;
    if (rpc_client_create(&cc, &cli) < 0)
        return NULL;
    return cli;
}

static void sleep_ms(uint32_t ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int src_open(void *impl, const char *consumer_id, void **out)
{
    sk_remote *r = impl;
    handle *h = calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
    h->r = r;
    snprintf(h->id, sizeof h->id, "%s@%s", r->cfg.worker_id, consumer_id);
    if (!r->cfg.discover) {
        /* a fixed list: this thread serves one gateway for good */
        size_t gw = atomic_fetch_add(&r->next, 1) % r->ngws;
        h->conns[0] = (conn){r->gws[gw].serial, connect_to(r, r->gws[gw].addr, h->id)};
        if (!h->conns[0].cli) {
            free(h);
            return -ENOMEM;
        }
        h->nconns = 1;
    } else {
        h->seen = atomic_load(&r->version) - 1; /* sync at the first FETCH */
    }
    *out = h;
    return 0;
}

static void src_close(void *impl, void *hp)
{
    handle *h = hp;
    (void)impl;
    if (h->have_reply)
        rpc_frame_release(&h->reply);
    for (size_t i = 0; i < h->nconns; i++)
        rpc_client_destroy(h->conns[i].cli);
    free(h);
}

/* Discovery: follow the gateway list. Between batches only: no message of
 * the last batch is in flight on a connection closed here. */
static void sync_conns(handle *h)
{
    sk_remote *r = h->r;
    rpc_client *gone[SK_REMOTE_MAX_GATEWAYS];
    size_t ngone = 0, keep = 0;

    pthread_rwlock_rdlock(&r->lock);
    h->seen = atomic_load(&r->version);
    for (size_t i = 0; i < h->nconns; i++) {
        size_t j = 0;
        while (j < r->ngws && r->gws[j].serial != h->conns[i].serial)
            j++;
        if (j < r->ngws)
            h->conns[keep++] = h->conns[i];
        else
            gone[ngone++] = h->conns[i].cli;
    }
    h->nconns = keep;
    for (size_t j = 0; j < r->ngws; j++) {
        size_t i = 0;
        while (i < keep && h->conns[i].serial != r->gws[j].serial)
            i++;
        if (i < keep)
            continue;
        rpc_client *cli = connect_to(r, r->gws[j].addr, h->id); /* connects in the background */
        if (cli)
            h->conns[h->nconns++] = (conn){r->gws[j].serial, cli};
        else
            h->seen--; /* out of memory: try again at the next FETCH */
    }
    pthread_rwlock_unlock(&r->lock);
    for (size_t i = 0; i < ngone; i++)
        rpc_client_destroy(gone[i]); /* the gateway releases its partitions */
    h->idle = 0;
}

/* Discovery: the next connected gateway in turn and how long to long-poll
 * it; NULL when none is connected. */
static conn *next_conn(handle *h, uint32_t wait_ms, uint32_t *wait)
{
    if (atomic_load(&h->r->version) != h->seen)
        sync_conns(h);
    size_t n = h->nconns;
    for (size_t k = 0; k < n; k++) {
        conn *c = &h->conns[h->next++ % n];
        if (!rpc_client_connected(c->cli))
            continue; /* a new or lost gateway: its client connects meanwhile */
        uint32_t split = n == 1 ? wait_ms : wait_ms / (uint32_t)n;
        if (split < MIN_SPLIT_WAIT_MS)
            split = MIN_SPLIT_WAIT_MS < wait_ms ? MIN_SPLIT_WAIT_MS : wait_ms;
        /* after messages, poll the others at once; long-poll only after a
         * whole round came back empty */
        *wait = h->idle + 1 < n ? 0 : split;
        return c;
    }
    return NULL;
}

static int src_fetch(void *hp, size_t max, uint32_t wait_ms, const mq_message **msgs)
{
    handle *h = hp;
    tl_handle = h;
    h->cur = NULL;
    if (h->have_reply) {
        rpc_frame_release(&h->reply);
        h->have_reply = 0;
    }
    if (max > MAX_BATCH)
        max = MAX_BATCH;
    uint32_t wait = wait_ms;
    conn *c = &h->conns[0];
    if (h->r->cfg.discover) {
        c = next_conn(h, wait_ms, &wait);
        if (!c) {
            sleep_ms(wait_ms < 50 ? wait_ms : 50);
            return 0;
        }
    }
    rpc_frame req = {.type = RPC_FETCH};
    req.u.fetch.topic = rpc_str(h->r->cfg.topic);
    req.u.fetch.max_messages = (uint32_t)max;
    req.u.fetch.max_wait_ms = wait;
    int rc = rpc_client_call(c->cli, &req, &h->reply, wait + CALL_SLACK_MS);
    if (rc < 0) {
        /* the worker backs off and retries; with discovery one gateway's
         * failure must not look like the end of the source */
        if (h->r->cfg.discover && (rc == -ESHUTDOWN || rc == -ECANCELED))
            rc = -ECONNRESET;
        return rc;
    }
    h->have_reply = 1;
    if (h->reply.type == RPC_ERROR)
        return -(h->reply.u.error.code > 0 ? h->reply.u.error.code : EPROTO);
    if (h->reply.type != RPC_FETCH_OK)
        return -EPROTO;
    h->cur = c;
    rpc_msg_iter it;
    rpc_msg m;
    size_t n = 0;
    rpc_msg_iter_init(&it, &h->reply.u.fetch_ok);
    while (n < MAX_BATCH && rpc_msg_iter_next(&it, &m) > 0) {
        size_t tl = m.topic.len < RPC_NAME_MAX ? m.topic.len : RPC_NAME_MAX;
        memcpy(h->topics[n], m.topic.ptr, tl);
        h->topics[n][tl] = '\0';
        h->msgs[n] = (mq_message){.topic = h->topics[n], .partition = m.partition,
                                  .offset = m.offset, .delivery = m.delivery,
                                  .key = m.key.ptr, .key_len = m.key.len,
                                  .value = m.value.ptr, .value_len = m.value.len};
        n++;
    }
    h->idle = n ? 0 : h->idle + 1;
    *msgs = h->msgs;
    return (int)n;
}

/* COMMIT on the connection the batch came from, after its RESULTs (queued on
 * the same connection: they leave together, in order). It is not waited for
 * (call_id 0: no reply): a commit that is lost or refused (the lease moved)
 * only means redelivery, which the stored decisions answer the same. The
 * next FETCH on the connection is served after it. */
static int src_commit(void *hp, const mq_message *m)
{
    handle *h = hp;
    if (!h->cur)
        return -ENOTCONN;
    rpc_frame req = {.type = RPC_COMMIT, .call_id = 0};
    req.u.commit.topic = rpc_str(m->topic);
    req.u.commit.partition = m->partition;
    req.u.commit.offset = m->offset;
    return rpc_client_send(h->cur->cli, &req);
}

sk_source sk_remote_source(sk_remote *r)
{
    return (sk_source){.impl = r, .open = src_open, .close = src_close, .fetch = src_fetch,
                       .commit = src_commit};
}

/* RESULT on the calling thread's current connection: the one its message
 * came from, ordered before its COMMIT. Queued: the batch's RESULTs and
 * COMMITs go out with one write (src_commit, or link_flush). */
static int link_deliver(void *arg, const sk_outcome *o)
{
    (void)arg;
    handle *h = tl_handle;
    if (!h || !h->cur)
        return -ENOTCONN;
    rpc_frame f = {.type = RPC_RESULT, .call_id = 0};
    memcpy(f.u.result.gateway_id, o->gateway_id, 16);
    memcpy(f.u.result.request_id, o->request_id, 16);
    f.u.result.result = (uint32_t)o->result;
    f.u.result.item_id = rpc_str(o->item_id);
    f.u.result.order_id = rpc_str(o->order_id);
    return rpc_client_queue(h->cur->cli, &f);
}

static void link_flush(void *arg)
{
    (void)arg;
    handle *h = tl_handle;
    if (h && h->cur)
        rpc_client_flush(h->cur->cli);
}

static void link_stock(void *arg, const char *item, int64_t left)
{
    sk_remote *r = arg;
    rpc_frame f = {.type = RPC_STOCK, .call_id = 0};
    f.u.stock.item_id = rpc_str(item);
    f.u.stock.left = left;
    if (r->cfg.discover)
        pthread_rwlock_rdlock(&r->lock);
    for (size_t i = 0; i < r->ngws; i++)
        if (r->gws[i].control)
            rpc_client_send(r->gws[i].control, &f); /* best effort: the flag is an optimisation */
    if (r->cfg.discover)
        pthread_rwlock_unlock(&r->lock);
}

sk_link sk_remote_link(sk_remote *r)
{
    return (sk_link){.arg = r, .deliver = link_deliver, .stock = link_stock, .flush = link_flush};
}

size_t sk_remote_connected(sk_remote *r)
{
    size_t n = 0;
    pthread_rwlock_rdlock(&r->lock);
    for (size_t i = 0; i < r->ngws; i++)
        n += r->gws[i].control && rpc_client_connected(r->gws[i].control);
    pthread_rwlock_unlock(&r->lock);
    return n;
}

size_t sk_remote_count(sk_remote *r)
{
    pthread_rwlock_rdlock(&r->lock);
    size_t n = r->ngws;
    pthread_rwlock_unlock(&r->lock);
    return n;
}

/* Under the write lock (or before any thread runs). */
static int add_gateway(sk_remote *r, const char *addr)
{
    char id[300];
    gwent *g = &r->gws[r->ngws];
    g->addr = strdup(addr);
    if (!g->addr)
        return -ENOMEM;
    snprintf(id, sizeof id, "%s@control", r->cfg.worker_id);
    g->control = connect_to(r, addr, id);
    if (!g->control) {
        free(g->addr);
        g->addr = NULL;
        return -ENOMEM;
    }
    g->serial = ++r->next_serial;
    r->ngws++;
    return 0;
}

int sk_remote_set_gateways(sk_remote *r, const char *const *addrs, size_t n)
{
    if (!r->cfg.discover)
        return -EPERM;
    gwent gone[SK_REMOTE_MAX_GATEWAYS];
    size_t ngone = 0, keep = 0;
    int changes = 0, rc = 0;

    pthread_rwlock_wrlock(&r->lock);
    for (size_t i = 0; i < r->ngws; i++) {
        size_t j = 0;
        while (j < n && strcmp(addrs[j], r->gws[i].addr) != 0)
            j++;
        if (j < n)
            r->gws[keep++] = r->gws[i];
        else
            gone[ngone++] = r->gws[i];
    }
    r->ngws = keep;
    for (size_t j = 0; j < n && r->ngws < SK_REMOTE_MAX_GATEWAYS; j++) {
        size_t i = 0;
        while (i < r->ngws && strcmp(addrs[j], r->gws[i].addr) != 0)
            i++;
        if (i < r->ngws)
            continue; /* known, or listed twice */
        rc = add_gateway(r, addrs[j]);
        if (rc < 0)
            break;
        sk_log(SK_LOG_INFO, "worker", NULL, "gateway %s found", addrs[j]);
        changes++;
    }
    changes += (int)ngone;
    if (changes)
        atomic_fetch_add(&r->version, 1);
    pthread_rwlock_unlock(&r->lock);
    for (size_t i = 0; i < ngone; i++) {
        sk_log(SK_LOG_INFO, "worker", NULL, "gateway %s dropped", gone[i].addr);
        rpc_client_destroy(gone[i].control);
        free(gone[i].addr);
    }
    return rc < 0 ? rc : changes;
}

int sk_remote_create(const sk_remote_config *cfg, sk_remote **out)
{
    if ((!cfg->ngateways && !cfg->discover) || (cfg->ngateways && cfg->discover) ||
        cfg->ngateways > SK_REMOTE_MAX_GATEWAYS || !cfg->secret || !cfg->worker_id ||
        !cfg->group || !cfg->topic)
        return -EINVAL;
    sk_remote *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    /* writers first: stock broadcasts from busy threads must not starve the
     * discovery thread */
    pthread_rwlockattr_t ra;
    int lrc = pthread_rwlockattr_init(&ra);
    if (lrc == 0) {
        pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
        lrc = pthread_rwlock_init(&r->lock, &ra);
        pthread_rwlockattr_destroy(&ra);
    }
    if (lrc != 0) {
        free(r);
        return -ENOMEM;
    }
    r->cfg = *cfg;
    r->cfg.gateways = NULL; /* kept in gws */
    r->cfg.ngateways = 0;
    char *secret = strdup(cfg->secret), *wid = strdup(cfg->worker_id),
         *group = strdup(cfg->group), *topic = strdup(cfg->topic);
    r->cfg.secret = secret;
    r->cfg.worker_id = wid;
    r->cfg.group = group;
    r->cfg.topic = topic;
    char *ca = strdup(cfg->tls_ca ? cfg->tls_ca : ""),
         *crt = strdup(cfg->tls_cert ? cfg->tls_cert : ""),
         *key = strdup(cfg->tls_key ? cfg->tls_key : "");
    r->cfg.tls_ca = ca;
    r->cfg.tls_cert = crt;
    r->cfg.tls_key = key;
    if (!secret || !wid || !group || !topic || !ca || !crt || !key)
        goto out_fail;
    for (size_t i = 0; i < cfg->ngateways; i++)
        if (add_gateway(r, cfg->gateways[i]) < 0)
            goto out_fail;
    *out = r;
    return 0;
out_fail:
    sk_remote_destroy(r);
    return -ENOMEM;
}

void sk_remote_destroy(sk_remote *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->ngws; i++) {
        rpc_client_destroy(r->gws[i].control);
        free(r->gws[i].addr);
    }
    pthread_rwlock_destroy(&r->lock);
    free((char *)r->cfg.secret);
    free((char *)r->cfg.worker_id);
    free((char *)r->cfg.group);
    free((char *)r->cfg.topic);
    free((char *)r->cfg.tls_ca);
    free((char *)r->cfg.tls_cert);
    free((char *)r->cfg.tls_key);
    free(r);
}
