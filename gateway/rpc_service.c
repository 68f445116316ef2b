#include "rpc_service.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc.h"

#define MAX_TOPICS 4     /* consumers per connection (request topic, order topic, ...) */
#define OPS 256          /* queued operations per connection: a batch's COMMITs
                          * (one per partition, not awaited) and its next FETCH */
#define MAX_FETCH 1024   /* messages per FETCH */
#define MAX_WAIT_MS 5000 /* long-poll cap */
#define NAME_MAX_ 256

enum op_type { OP_FETCH, OP_COMMIT, OP_PRODUCE };

typedef struct op {
    enum op_type type;
    uint64_t call_id;
    char topic[NAME_MAX_];
    uint32_t max, wait_ms;  /* fetch */
    uint32_t partition;     /* commit */
    uint64_t offset;
    uint64_t producer_id, seq; /* produce */
    void *key, *payload;    /* produce: owned copies */
    uint32_t key_len, payload_len;
} op;

typedef struct wconn {
    gw_rpcsvc *svc;
    rpc_conn *c;
    char worker_id[NAME_MAX_];
    char group[NAME_MAX_];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    op ops[OPS];
    unsigned head, count;
    int closed;
    struct {
        mq_topic *t;
        mq_consumer *c;
    } cons[MAX_TOPICS];
    rpc_msg *batch; /* FETCH_OK scratch */
} wconn;

struct gw_rpcsvc {
    rpc_server *srv;
    mq *q;
    gw_rpcsvc_hooks hooks;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned threads; /* connection threads still running */
};

static void send_error(rpc_conn *c, uint64_t call_id, int code, const char *msg)
{
    rpc_frame f = {.type = RPC_ERROR, .call_id = call_id};
    f.u.error.code = code;
    f.u.error.message = rpc_str(msg);
    rpc_conn_send(c, &f);
}

static void send_ack(rpc_conn *c, uint64_t call_id)
{
    rpc_frame f = {.type = RPC_ACK, .call_id = call_id};
    rpc_conn_send(c, &f);
}

/* The consumer of w for a topic, created on first use. NULL with *err set. */
static mq_consumer *consumer_for(wconn *w, const char *topic, int *err)
{
    for (int i = 0; i < MAX_TOPICS && w->cons[i].c; i++) {
        const char *name = mq_topic_name(w->cons[i].t);
        size_t n = strlen(name);
        /* the topic itself, or its retry topic "<topic>.<group>.retry" */
        if (!strcmp(name, topic) || (!strncmp(name, topic, n) && topic[n] == '.'))
            return w->cons[i].c;
    }
    mq_topic *t = mq_topic_find(w->svc->q, topic);
    if (!t) {
        *err = ENOENT;
        return NULL;
    }
    for (int i = 0; i < MAX_TOPICS; i++)
        if (!w->cons[i].c) {
            int rc = mq_consumer_create(t, w->group, w->worker_id, &w->cons[i].c);
            if (rc < 0) {
                *err = -rc;
                return NULL;
            }
            w->cons[i].t = t;
            return w->cons[i].c;
        }
    *err = EMFILE;
    return NULL;
}

static void do_fetch(wconn *w, const op *o)
{
    int err = 0;
    mq_consumer *c = consumer_for(w, o->topic, &err);
    if (!c) {
        send_error(w->c, o->call_id, err, err == ENOENT ? "no such topic" : "cannot consume");
        return;
    }
    const mq_message *msgs;
    int n = mq_fetch(c, o->max, o->wait_ms, &msgs);
    if (n < 0) {
        send_error(w->c, o->call_id, -n, "fetch failed");
        return;
    }
    for (int i = 0; i < n; i++)
        w->batch[i] = (rpc_msg){.topic = rpc_str(msgs[i].topic),
                                .partition = msgs[i].partition,
                                .offset = msgs[i].offset,
                                .delivery = msgs[i].delivery,
                                .key = {msgs[i].key, (uint32_t)msgs[i].key_len},
                                .value = {msgs[i].value, (uint32_t)msgs[i].value_len}};
    rpc_frame f = {.type = RPC_FETCH_OK, .call_id = o->call_id};
    f.u.fetch_ok.count = (uint32_t)n;
    f.u.fetch_ok.msgs = w->batch;
    int rc = rpc_conn_send(w->c, &f);
    if (rc == -EMSGSIZE)
        send_error(w->c, o->call_id, EMSGSIZE, "batch over the frame limit: fetch fewer");
}

static void do_commit(wconn *w, const op *o)
{
    int err = 0;
    mq_consumer *c = consumer_for(w, o->topic, &err);
    if (!c) {
        if (o->call_id) /* sent without waiting: no answer, redelivery covers it */
            send_error(w->c, o->call_id, err, "no such topic");
        return;
    }
    mq_message m = {.topic = o->topic, .partition = o->partition, .offset = o->offset};
    int rc = mq_commit(c, &m);
    if (!o->call_id)
        return; /* sent without waiting: no answer */
    if (rc < 0)
        send_error(w->c, o->call_id, -rc,
                   rc == -EPERM ? "partition lease lost: the new holder redelivers"
                                : "commit refused");
    else
        send_ack(w->c, o->call_id);
}

static void do_produce(wconn *w, const op *o)
{
    mq_topic *t = mq_topic_find(w->svc->q, o->topic);
    if (!t) {
        send_error(w->c, o->call_id, ENOENT, "no such topic");
        return;
    }
    mq_record rec = {.key = o->key, .key_len = o->key_len, .value = o->payload,
                     .value_len = o->payload_len, .partition = MQ_PARTITION_ANY,
                     .producer_id = o->producer_id, .seq = o->seq};
    uint32_t part = 0;
    uint64_t off = 0;
    int rc = mq_produce(t, &rec, &part, &off);
    if (rc == 0 || rc == -EALREADY) { /* a retried send: stored once, acknowledged again */
        rpc_frame f = {.type = RPC_PRODUCE_OK, .call_id = o->call_id};
        f.u.produce_ok.partition = part;
        f.u.produce_ok.offset = off;
        rpc_conn_send(w->c, &f);
    } else {
        send_error(w->c, o->call_id, -rc, "produce refused");
    }
}

static void *conn_main(void *arg)
{
    wconn *w = arg;
    gw_rpcsvc *s = w->svc;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        while (!w->count && !w->closed)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->closed) {
            pthread_mutex_unlock(&w->mu);
            break;
        }
        op o = w->ops[w->head];
        w->head = (w->head + 1) % OPS;
        w->count--;
        pthread_mutex_unlock(&w->mu);
        switch (o.type) {
        case OP_FETCH: do_fetch(w, &o); break;
        case OP_COMMIT: do_commit(w, &o); break;
        case OP_PRODUCE: do_produce(w, &o); break;
        }
        free(o.key);
        free(o.payload);
    }
    /* closed: release partitions at once, drop what was queued */
    for (int i = 0; i < MAX_TOPICS; i++)
        if (w->cons[i].c)
            mq_consumer_destroy(w->cons[i].c);
    while (w->count) {
        free(w->ops[w->head].key);
        free(w->ops[w->head].payload);
        w->head = (w->head + 1) % OPS;
        w->count--;
    }
    rpc_conn_unref(w->c);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w->batch);
    free(w);
    pthread_mutex_lock(&s->mu);
    if (--s->threads == 0)
        pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void copy_name(char *dst, rpc_bytes b)
{
    size_t n = b.len < NAME_MAX_ - 1 ? b.len : NAME_MAX_ - 1;
    memcpy(dst, b.ptr, n);
    dst[n] = '\0';
}

static void on_open(void *arg, rpc_conn *c, const rpc_hello *hello)
{
    gw_rpcsvc *s = arg;
    wconn *w = calloc(1, sizeof *w);
    pthread_t tid;
    if (!w || !(w->batch = calloc(MAX_FETCH, sizeof *w->batch))) {
        free(w);
        rpc_conn_close(c);
        return;
    }
    w->svc = s;
    w->c = c;
    copy_name(w->worker_id, hello->worker_id);
    copy_name(w->group, hello->group);
    if (!w->worker_id[0] || !w->group[0]) {
        send_error(c, 0, EINVAL, "HELLO needs a worker id and a group");
        rpc_conn_close(c);
        free(w->batch);
        free(w);
        return;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    rpc_conn_ref(c);
    pthread_mutex_lock(&s->mu);
    s->threads++;
    pthread_mutex_unlock(&s->mu);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&tid, &attr, conn_main, w);
    pthread_attr_destroy(&attr);
    if (rc) {
        pthread_mutex_lock(&s->mu);
        s->threads--;
        pthread_mutex_unlock(&s->mu);
        rpc_conn_unref(c);
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        free(w->batch);
        free(w);
        rpc_conn_close(c);
        return;
    }
    rpc_conn_set_data(c, w);
}

static int enqueue(wconn *w, const op *o)
{
    int rc = 0;
    pthread_mutex_lock(&w->mu);
    if (w->count == OPS) {
        rc = -ENOBUFS;
    } else {
        w->ops[(w->head + w->count) % OPS] = *o;
        w->count++;
        pthread_cond_signal(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

static void on_frame(void *arg, rpc_conn *c, const rpc_frame *f)
{
    gw_rpcsvc *s = arg;
    wconn *w = rpc_conn_data(c);
    op o = {.call_id = f->call_id};
    if (!w)
        return;
    switch (f->type) {
    case RPC_FETCH:
        o.type = OP_FETCH;
        copy_name(o.topic, f->u.fetch.topic);
        o.max = f->u.fetch.max_messages;
        if (o.max == 0 || o.max > MAX_FETCH)
            o.max = o.max ? MAX_FETCH : 1;
        o.wait_ms = f->u.fetch.max_wait_ms > MAX_WAIT_MS ? MAX_WAIT_MS : f->u.fetch.max_wait_ms;
        break;
    case RPC_COMMIT:
        o.type = OP_COMMIT;
        copy_name(o.topic, f->u.commit.topic);
        o.partition = f->u.commit.partition;
        o.offset = f->u.commit.offset;
        break;
    case RPC_PRODUCE:
        o.type = OP_PRODUCE;
        copy_name(o.topic, f->u.produce.topic);
        o.producer_id = f->u.produce.producer_id;
        o.seq = f->u.produce.seq;
        o.key_len = f->u.produce.key.len;
        o.payload_len = f->u.produce.payload.len;
        o.key = malloc(o.key_len + 1);
        o.payload = malloc(o.payload_len + 1);
        if (!o.key || !o.payload) {
            free(o.key);
            free(o.payload);
            send_error(c, f->call_id, ENOMEM, "out of memory");
            return;
        }
        if (o.key_len)
            memcpy(o.key, f->u.produce.key.ptr, o.key_len);
        if (o.payload_len)
            memcpy(o.payload, f->u.produce.payload.ptr, o.payload_len);
        break;
    case RPC_RESULT: {
        const rpc_result *r = &f->u.result;
        sk_outcome out = {0};
        if (r->result >= SK_RESULT_COUNT || r->item_id.len > SK_ID_MAX ||
            r->order_id.len > SK_ORDER_ID_MAX) {
            send_error(c, f->call_id, EINVAL, "bad RESULT");
            return;
        }
        memcpy(out.gateway_id, r->gateway_id, 16);
        memcpy(out.request_id, r->request_id, 16);
        out.result = (enum sk_result)r->result;
        memcpy(out.item_id, r->item_id.ptr, r->item_id.len);
        if (r->order_id.len)
            memcpy(out.order_id, r->order_id.ptr, r->order_id.len);
        int rc = s->hooks.result(s->hooks.arg, &out);
        if (rc == -EXDEV)
            send_error(c, f->call_id, EXDEV, "gateway id is not this gateway's");
        else if (f->call_id)
            send_ack(c, f->call_id);
        return;
    }
    case RPC_STOCK:
    case RPC_SOLD_OUT: {
        char item[SK_ID_MAX + 1];
        const rpc_stock *st = &f->u.stock;
        if (st->item_id.len == 0 || st->item_id.len > SK_ID_MAX) {
            send_error(c, f->call_id, EINVAL, "bad item id");
            return;
        }
        memcpy(item, st->item_id.ptr, st->item_id.len);
        item[st->item_id.len] = '\0';
        if (s->hooks.stock)
            s->hooks.stock(s->hooks.arg, item, f->type == RPC_SOLD_OUT ? 0 : st->left);
        if (f->call_id)
            send_ack(c, f->call_id);
        return;
    }
    default:
        send_error(c, f->call_id, EOPNOTSUPP, "unexpected frame type");
        return;
    }
    if (enqueue(w, &o) < 0) {
        free(o.key);
        free(o.payload);
        if (f->call_id) /* a COMMIT sent without waiting gets no answer */
            send_error(c, f->call_id, ENOBUFS, "too many requests in flight on this connection");
    }
}

static void on_close(void *arg, rpc_conn *c, int reason)
{
    (void)arg;
    (void)reason;
    wconn *w = rpc_conn_data(c);
    if (!w)
        return;
    rpc_conn_set_data(c, NULL);
    pthread_mutex_lock(&w->mu);
    w->closed = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    /* a FETCH long-poll in progress ends within its wait; the thread then
     * releases the consumers and its reference */
}

int gw_rpcsvc_create(const char *listen, const char *secret, mq *q, const gw_rpcsvc_hooks *hooks,
                     gw_rpcsvc **out)
{
    gw_rpcsvc *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->q = q;
    s->hooks = *hooks;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    rpc_server_config rc;
    rpc_server_config_init(&rc);
    rc.listen = listen;
    rc.secret = secret;
    rc.secret_len = strlen(secret);
    rc.handlers = (rpc_server_handlers){.arg = s, .on_open = on_open, .on_frame = on_frame,
                                        .on_close = on_close};
    int err = rpc_server_create(&rc, &s->srv);
    if (err < 0) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        free(s);
        return err;
    }
    *out = s;
    return 0;
}

int gw_rpcsvc_start(gw_rpcsvc *s)
{
    return rpc_server_start(s->srv);
}

int gw_rpcsvc_port(const gw_rpcsvc *s)
{
    return rpc_server_port(s->srv);
}

void gw_rpcsvc_destroy(gw_rpcsvc *s)
{
    if (!s)
        return;
    rpc_server_stop(s->srv); /* on_close for every connection */
    pthread_mutex_lock(&s->mu);
    while (s->threads)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    rpc_server_destroy(s->srv);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}
