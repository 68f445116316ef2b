#include "remote.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc.h"

#define MAX_BATCH 1024
#define CALL_SLACK_MS 2000 /* on top of the long-poll wait */

typedef struct handle {
    struct sk_remote *r;
    rpc_client *cli;
    size_t gw;          /* index into the gateway list */
    rpc_frame reply;    /* owns the last FETCH_OK's bytes */
    int have_reply;
    mq_message msgs[MAX_BATCH];
    char topics[MAX_BATCH][RPC_NAME_MAX + 1];
} handle;

struct sk_remote {
    sk_remote_config cfg;
    char **gateways;
    rpc_client **control; /* one per gateway: stock broadcasts */
    atomic_uint next;     /* round-robin of threads over gateways */
};

static __thread handle *tl_handle; /* the calling worker thread's connection */

static rpc_client *connect_to(sk_remote *r, const char *addr, const char *id)
{
    rpc_client_config cc;
    rpc_client *cli = NULL;
    rpc_client_config_init(&cc);
    cc.addr = addr;
    cc.worker_id = id;
    cc.group = r->cfg.group;
    cc.secret = r->cfg.secret;
    cc.secret_len = strlen(r->cfg.secret);
    if (rpc_client_create(&cc, &cli) < 0)
        return NULL;
    return cli;
}

static int src_open(void *impl, const char *consumer_id, void **out)
{
    sk_remote *r = impl;
    handle *h = calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
    h->r = r;
    h->gw = atomic_fetch_add(&r->next, 1) % r->cfg.ngateways;
    char id[300];
    snprintf(id, sizeof id, "%s@%s", r->cfg.worker_id, consumer_id);
    h->cli = connect_to(r, r->gateways[h->gw], id);
    if (!h->cli) {
        free(h);
        return -ENOMEM;
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
    rpc_client_destroy(h->cli);
    free(h);
}

static int src_fetch(void *hp, size_t max, uint32_t wait_ms, const mq_message **msgs)
{
    handle *h = hp;
    tl_handle = h;
    if (h->have_reply) {
        rpc_frame_release(&h->reply);
        h->have_reply = 0;
    }
    if (max > MAX_BATCH)
        max = MAX_BATCH;
    rpc_frame req = {.type = RPC_FETCH};
    req.u.fetch.topic = rpc_str(h->r->cfg.topic);
    req.u.fetch.max_messages = (uint32_t)max;
    req.u.fetch.max_wait_ms = wait_ms;
    int rc = rpc_client_call(h->cli, &req, &h->reply, wait_ms + CALL_SLACK_MS);
    if (rc < 0)
        return rc == -ESHUTDOWN ? -ESHUTDOWN : rc; /* the worker backs off and retries */
    h->have_reply = 1;
    if (h->reply.type == RPC_ERROR)
        return -(h->reply.u.error.code > 0 ? h->reply.u.error.code : EPROTO);
    if (h->reply.type != RPC_FETCH_OK)
        return -EPROTO;
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
    *msgs = h->msgs;
    return (int)n;
}

static int src_commit(void *hp, const mq_message *m)
{
    handle *h = hp;
    rpc_frame req = {.type = RPC_COMMIT}, reply;
    req.u.commit.topic = rpc_str(m->topic);
    req.u.commit.partition = m->partition;
    req.u.commit.offset = m->offset;
    int rc = rpc_client_call(h->cli, &req, &reply, CALL_SLACK_MS);
    if (rc < 0)
        return rc;
    if (reply.type == RPC_ERROR)
        rc = -(reply.u.error.code > 0 ? reply.u.error.code : EPROTO);
    rpc_frame_release(&reply);
    return rc;
}

sk_source sk_remote_source(sk_remote *r)
{
    return (sk_source){.impl = r, .open = src_open, .close = src_close, .fetch = src_fetch,
                       .commit = src_commit};
}

/* RESULT on the calling thread's connection: ordered before its COMMIT. */
static int link_deliver(void *arg, const sk_outcome *o)
{
    (void)arg;
    handle *h = tl_handle;
    if (!h)
        return -ENOTCONN;
    rpc_frame f = {.type = RPC_RESULT, .call_id = 0};
    memcpy(f.u.result.gateway_id, o->gateway_id, 16);
    memcpy(f.u.result.request_id, o->request_id, 16);
    f.u.result.result = (uint32_t)o->result;
    f.u.result.item_id = rpc_str(o->item_id);
    f.u.result.order_id = rpc_str(o->order_id);
    return rpc_client_send(h->cli, &f);
}

static void link_stock(void *arg, const char *item, int64_t left)
{
    sk_remote *r = arg;
    rpc_frame f = {.type = RPC_STOCK, .call_id = 0};
    f.u.stock.item_id = rpc_str(item);
    f.u.stock.left = left;
    for (size_t i = 0; i < r->cfg.ngateways; i++)
        if (r->control[i])
            rpc_client_send(r->control[i], &f); /* best effort: the flag is an optimisation */
}

sk_link sk_remote_link(sk_remote *r)
{
    return (sk_link){.arg = r, .deliver = link_deliver, .stock = link_stock};
}

size_t sk_remote_connected(sk_remote *r)
{
    size_t n = 0;
    for (size_t i = 0; i < r->cfg.ngateways; i++)
        n += r->control[i] && rpc_client_connected(r->control[i]);
    return n;
}

int sk_remote_create(const sk_remote_config *cfg, sk_remote **out)
{
    if (!cfg->ngateways || !cfg->secret || !cfg->worker_id || !cfg->group || !cfg->topic)
        return -EINVAL;
    sk_remote *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    r->cfg = *cfg;
    r->gateways = calloc(cfg->ngateways, sizeof *r->gateways);
    r->control = calloc(cfg->ngateways, sizeof *r->control);
    char *secret = strdup(cfg->secret), *wid = strdup(cfg->worker_id),
         *group = strdup(cfg->group), *topic = strdup(cfg->topic);
    r->cfg.secret = secret;
    r->cfg.worker_id = wid;
    r->cfg.group = group;
    r->cfg.topic = topic;
    if (!r->gateways || !r->control || !secret || !wid || !group || !topic)
        goto out_fail;
    r->cfg.gateways = (const char *const *)r->gateways;
    for (size_t i = 0; i < cfg->ngateways; i++) {
        r->gateways[i] = strdup(cfg->gateways[i]);
        if (!r->gateways[i])
            goto out_fail;
        char id[300];
        snprintf(id, sizeof id, "%s@control", wid);
        r->control[i] = connect_to(r, r->gateways[i], id);
        if (!r->control[i])
            goto out_fail;
    }
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
    for (size_t i = 0; i < r->cfg.ngateways; i++) {
        if (r->control)
            rpc_client_destroy(r->control[i]);
        if (r->gateways)
            free(r->gateways[i]);
    }
    free(r->control);
    free(r->gateways);
    free((char *)r->cfg.secret);
    free((char *)r->cfg.worker_id);
    free((char *)r->cfg.group);
    free((char *)r->cfg.topic);
    free(r);
}
