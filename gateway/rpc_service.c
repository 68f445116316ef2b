/*
 * rpc_service.c - the gateway's side of rpc/: what an authenticated worker
 * may do, and the queue operations it asks for.
 *
 * Roles (named in HELLO, bound into the session keys by rpc/auth.c, checked
 * in on_open and on every frame; a refusal is an ERROR EPERM, counted in
 * `denied`, and the frame has no effect):
 *   RPC_ROLE_PURCHASE, group SK_GROUP: FETCH/COMMIT the request topic and its
 *     retry topic; RESULT; STOCK/SOLD_OUT.
 *   RPC_ROLE_ORDERS, group SK_ORDER_GROUP: FETCH/COMMIT the order topic and
 *     its retry topic. Nothing else.
 *   PRODUCE: nobody. No worker, sink or tool produces over rpc/ (requests
 *     come through HTTP admission, order events from the deciding worker
 *     inside the gateway's process), and a PRODUCE into the durable order
 *     topic could write records the gateway cannot read back at restart, or
 *     forge "reserved" events that replay into sales.
 *
 * RESULT is accepted only for a request this gateway issued and handed to
 * this very connection, still undecided there: do_fetch records the request
 * ids of every batch it delivers (the current and the previous batch per
 * connection, so bounded by 2 x MAX_FETCH), and a RESULT takes its id out.
 * A worker sends a batch's RESULTs before its next FETCH on the same
 * connection, so a genuine outcome always finds its id, also when the buyer
 * already got a 504 (the message was still in flight; the outcome is real and
 * GET /seckill/result must show it). A RESULT for an id never issued, issued
 * to another connection, or already answered on this one is refused and
 * stored nowhere.
 */
#include "rpc_service.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "message.h"
#include "rpc.h"

#define MAX_TOPICS 4     /* consumers per connection (request topic, order topic, ...) */
#define OPS 256          /* queued operations per connection: a batch's COMMITs
                          * (one per partition, not awaited) and its next FETCH */
#define MAX_FETCH 1024   /* messages per FETCH */
#define MAX_WAIT_MS 5000 /* long-poll cap */
#define NAME_MAX_ 256
#define DELIV_SLOTS (2 * MAX_FETCH) /* one batch's ids at load <= 1/2 */

enum op_type { OP_FETCH, OP_COMMIT };

typedef struct op {
    enum op_type type;
    uint64_t call_id;
    char topic[NAME_MAX_];
    uint32_t max, wait_ms;  /* fetch */
    uint32_t partition;     /* commit */
    uint64_t offset;
} op;

/* The request ids of one delivered batch: open addressing on the id's
 * (random) first bytes; `used` lists the slots to clear. */
enum { SLOT_EMPTY, SLOT_LIVE, SLOT_ANSWERED };
typedef struct idset {
    struct {
        uint8_t id[16];
        uint8_t state;
    } slot[DELIV_SLOTS];
    uint16_t used[MAX_FETCH];
    uint32_t nused;
} idset;

typedef struct wconn {
    gw_rpcsvc *svc;
    rpc_conn *c;
    char worker_id[NAME_MAX_];
    char group[NAME_MAX_];
    uint32_t role;
    char topic[NAME_MAX_]; /* the one topic the role reads */
    char retry[NAME_MAX_]; /* and its retry topic */
    idset *deliv[2];       /* purchase role, from its first FETCH: [0] the last batch,
                            * [1] the one before; under mu */
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
    _Atomic uint64_t denied;
    uint8_t gateway_id[16];
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

static uint32_t id_hash(const uint8_t id[16])
{
    return (uint32_t)(id[0] | id[1] << 8 | id[2] << 16 | (uint32_t)id[3] << 24);
}

static void idset_clear(idset *d)
{
    for (uint32_t i = 0; i < d->nused; i++)
        d->slot[d->used[i]].state = SLOT_EMPTY;
    d->nused = 0;
}

static void idset_add(idset *d, const uint8_t id[16])
{
    if (d->nused == MAX_FETCH)
        return; /* unreachable: a batch holds at most MAX_FETCH */
    for (uint32_t i = id_hash(id) % DELIV_SLOTS;; i = (i + 1) % DELIV_SLOTS) {
        if (d->slot[i].state == SLOT_EMPTY) {
            memcpy(d->slot[i].id, id, 16);
            d->slot[i].state = SLOT_LIVE;
            d->used[d->nused++] = (uint16_t)i;
            return;
        }
        if (!memcmp(d->slot[i].id, id, 16)) {
            d->slot[i].state = SLOT_LIVE; /* delivered again */
            return;
        }
    }
}

/* Take id out of d: 1 when it was delivered and not yet answered. */
static int idset_take(idset *d, const uint8_t id[16])
{
    if (!d)
        return 0; /* nothing fetched on this connection yet */
    for (uint32_t i = id_hash(id) % DELIV_SLOTS; d->slot[i].state != SLOT_EMPTY;
         i = (i + 1) % DELIV_SLOTS) {
        if (!memcmp(d->slot[i].id, id, 16)) {
            int live = d->slot[i].state == SLOT_LIVE;
            d->slot[i].state = SLOT_ANSWERED;
            return live;
        }
    }
    return 0;
}

static void deny(rpc_conn *c, gw_rpcsvc *s, uint64_t call_id, const char *msg)
{
    atomic_fetch_add_explicit(&s->denied, 1, memory_order_relaxed);
    send_error(c, call_id, EPERM, msg);
}

static int topic_allowed(const wconn *w, const char *topic)
{
    return !strcmp(topic, w->topic) || !strcmp(topic, w->retry);
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
    if (w->role == RPC_ROLE_PURCHASE && !w->deliv[0]) {
        /* at the first FETCH: a connection that only sends STOCK never
         * needs them */
        idset *a = calloc(1, sizeof(idset)), *b = calloc(1, sizeof(idset));
        if (!a || !b) {
            free(a);
            free(b);
            send_error(w->c, o->call_id, ENOMEM, "out of memory");
            return;
        }
        pthread_mutex_lock(&w->mu);
        w->deliv[0] = a;
        w->deliv[1] = b;
        pthread_mutex_unlock(&w->mu);
    }
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
    if (w->role == RPC_ROLE_PURCHASE && n > 0) {
        /* the ids this connection may answer from now on: this batch, and
         * the one before for an answer still on its way (an empty long-poll
         * changes nothing) */
        pthread_mutex_lock(&w->mu);
        idset *t = w->deliv[1];
        w->deliv[1] = w->deliv[0];
        w->deliv[0] = t;
        idset_clear(t);
        for (int i = 0; i < n; i++) {
            sk_msg m;
            if (sk_msg_decode(msgs[i].value, msgs[i].value_len, &m) == 0)
                idset_add(t, m.request_id);
        }
        pthread_mutex_unlock(&w->mu);
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
        }
    }
    /* closed: release partitions at once, drop what was queued */
    for (int i = 0; i < MAX_TOPICS; i++)
        if (w->cons[i].c)
            mq_consumer_destroy(w->cons[i].c);
    w->count = 0;
    rpc_conn_unref(w->c);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w->batch);
    free(w->deliv[0]);
    free(w->deliv[1]);
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
    w->role = hello->role;
    copy_name(w->worker_id, hello->worker_id);
    copy_name(w->group, hello->group);
    if (!w->worker_id[0] || !w->group[0]) {
        send_error(c, 0, EINVAL, "HELLO needs a worker id and a group");
        rpc_conn_close(c);
        free(w->batch);
        free(w);
        return;
    }
    const char *topic = NULL, *group = NULL;
    if (w->role == RPC_ROLE_PURCHASE) {
        topic = SK_REQUEST_TOPIC;
        group = SK_GROUP;
    } else if (w->role == RPC_ROLE_ORDERS) {
        topic = SK_ORDER_TOPIC;
        group = SK_ORDER_GROUP;
    }
    if (!topic || strcmp(w->group, group) != 0) {
        /* a role we do not know, or a group that is not the role's */
        deny(c, s, 0, "role not allowed with this group");
        rpc_conn_close(c);
        free(w->batch);
        free(w);
        return;
    }
    snprintf(w->topic, sizeof w->topic, "%s", topic);
    snprintf(w->retry, sizeof w->retry, "%s.%s.retry", topic, group);
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
        free(w->deliv[0]);
        free(w->deliv[1]);
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

/* FETCH and COMMIT of an allowed topic become an op for the connection's
 * thread. 0 with *o filled, or -1 when answered here already. */
static int fetch_op(gw_rpcsvc *s, rpc_conn *c, wconn *w, const rpc_frame *f, op *o)
{
    o->type = OP_FETCH;
    copy_name(o->topic, f->u.fetch.topic);
    if (!topic_allowed(w, o->topic)) {
        if (!mq_topic_find(s->q, o->topic))
            send_error(c, f->call_id, ENOENT, "no such topic");
        else
            deny(c, s, f->call_id, "topic not allowed for this role");
        return -1;
    }
    o->max = f->u.fetch.max_messages;
    if (o->max == 0 || o->max > MAX_FETCH)
        o->max = o->max ? MAX_FETCH : 1;
    o->wait_ms = f->u.fetch.max_wait_ms > MAX_WAIT_MS ? MAX_WAIT_MS : f->u.fetch.max_wait_ms;
    return 0;
}

static int commit_op(gw_rpcsvc *s, rpc_conn *c, wconn *w, const rpc_frame *f, op *o)
{
    o->type = OP_COMMIT;
    copy_name(o->topic, f->u.commit.topic);
    if (!topic_allowed(w, o->topic)) {
        atomic_fetch_add_explicit(&s->denied, 1, memory_order_relaxed);
        if (f->call_id) /* sent without waiting: no answer */
            send_error(c, f->call_id, EPERM, "topic not allowed for this role");
        return -1;
    }
    o->partition = f->u.commit.partition;
    o->offset = f->u.commit.offset;
    return 0;
}

/* RESULT: only from a purchase worker, only for a request this gateway
 * handed to this same connection and that is still unanswered there. */
static void on_result(gw_rpcsvc *s, rpc_conn *c, wconn *w, const rpc_frame *f)
{
    const rpc_result *r = &f->u.result;
    sk_outcome out = {0};
    if (w->role != RPC_ROLE_PURCHASE) {
        deny(c, s, f->call_id, "RESULT is for purchase workers");
        return;
    }
    if (r->result >= SK_RESULT_COUNT || r->item_id.len > SK_ID_MAX ||
        r->order_id.len > SK_ORDER_ID_MAX) {
        send_error(c, f->call_id, EINVAL, "bad RESULT");
        return;
    }
    if (memcmp(r->gateway_id, s->gateway_id, 16) != 0) {
        send_error(c, f->call_id, EXDEV, "gateway id is not this gateway's");
        return;
    }
    pthread_mutex_lock(&w->mu);
    int issued = idset_take(w->deliv[0], r->request_id) || idset_take(w->deliv[1], r->request_id);
    pthread_mutex_unlock(&w->mu);
    if (!issued) {
        deny(c, s, f->call_id, "no such request outstanding on this connection");
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
}

/* STOCK and SOLD_OUT: a purchase worker's view of an item's stock. */
static void on_stock(gw_rpcsvc *s, rpc_conn *c, wconn *w, const rpc_frame *f)
{
    char item[SK_ID_MAX + 1];
    const rpc_stock *st = &f->u.stock;
    if (w->role != RPC_ROLE_PURCHASE) {
        deny(c, s, f->call_id, "STOCK is for purchase workers");
        return;
    }
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
        if (fetch_op(s, c, w, f, &o) < 0)
            return;
        break;
    case RPC_COMMIT:
        if (commit_op(s, c, w, f, &o) < 0)
            return;
        break;
    case RPC_PRODUCE: deny(c, s, f->call_id, "PRODUCE is not allowed over rpc"); return;
    case RPC_RESULT: on_result(s, c, w, f); return;
    case RPC_STOCK:
    case RPC_SOLD_OUT: on_stock(s, c, w, f); return;
    default: send_error(c, f->call_id, EOPNOTSUPP, "unexpected frame type"); return;
    }
    if (enqueue(w, &o) < 0) {
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

int gw_rpcsvc_create(const char *listen, const char *secret, uint32_t handshake_timeout_ms,
                     const gw_rpcsvc_tls *tls, mq *q, const gw_rpcsvc_hooks *hooks, gw_rpcsvc **out)
{
    gw_rpcsvc *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->q = q;
    s->hooks = *hooks;
    memcpy(s->gateway_id, hooks->gateway_id, 16);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    rpc_server_config rc;
    rpc_server_config_init(&rc);
    rc.listen = listen;
    rc.secret = secret;
    rc.secret_len = strlen(secret);
    if (handshake_timeout_ms)
        rc.handshake_timeout_ms = handshake_timeout_ms;
    if (tls && tls->cert && *tls->cert) {
        rc.tls_cert = tls->cert;
        rc.tls_key = tls->key;
        rc.tls_ca = tls->ca;
    }
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

void gw_rpcsvc_get_stats(const gw_rpcsvc *s, gw_rpcsvc_stats *out)
{
    rpc_server_stats st;
    memset(out, 0, sizeof *out);
    if (!s)
        return;
    rpc_server_get_stats(s->srv, &st);
    out->auth_failures = st.auth_failed;
    out->mac_failures = st.mac_failed;
    out->handshake_timeouts = st.handshake_timeouts;
    out->tls_failures = st.tls_failed;
    out->denied = atomic_load_explicit(&((gw_rpcsvc *)s)->denied, memory_order_relaxed);
}
