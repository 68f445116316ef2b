#include "gateway.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "conn_guard.h"
#include "framing.h"
#include "http_loop.h"
#include "message.h"
#include "metrics.h"
#include "mq.h"
#include "pending.h"
#include "registry.h"
#include "request.h"
#include "result_store.h"
#include "rpc_service.h"
#include "timer_wheel.h"
#include "slab.h"
#include "store.h"
#include "token_bucket.h"
#include "uuid4.h"
#include "worker.h"

/* A string literal and its length, for fixed JSON answers. */
#define J(s) s, sizeof(s) - 1

typedef struct gw_item {
    const cfg_item *c;
    _Atomic int64_t left;   /* as last reported by a worker */
    atomic_int sold_out;    /* local flag: answer 409 without a token */
} gw_item;

struct gw {
    const cfg *cfg;
    uint8_t id[16];
    char id_str[37];
    tb bucket;
    gw_pending *pending;
    gw_results *results;
    gw_metrics metrics;
    mq *q;
    mq_topic *topic;
    int own_q;           /* q is ours, not the store's */
    sale_store *store;   /* stock, decisions, orders ([worker] inventory) */
    sale_reaper *reaper; /* embedded workers: cancels unpaid orders (pay_timeout_ms) */
    sk_worker *worker;
    sk_source source;   /* what the embedded worker reads and decides with */
    sk_backend backend;
    sk_item_window *windows;
    gw_item *items;
    size_t nitems;
    int32_t *item_index; /* open addressing over items, -1 = empty */
    size_t index_mask;
    struct MHD_Daemon *mhd; /* thread park, and event park on poll */
    gw_http *http;          /* event park on epoll ([gateway] http_io) */
    gw_guard *guard;        /* request deadline and per-address cap, every mode */
    gw_wheel *wheel; /* event park: deadlines of suspended requests */
    gw_slab *ctx_pool; /* req_ctx objects with a body of up to CTX_POOL_BODY bytes */
    gw_rpcsvc *rpc;  /* the queue served to worker processes, when [rpc] listen is set */
    sk_registry *registry; /* rpc with a Redis: announces the RPC address to workers */
    int event_park;
    uint16_t port;
    atomic_int stopping;
    atomic_uint inflight; /* POST /seckill requests not yet completed (answer sent) */
};

enum phase { PH_READING, PH_PARKED, PH_ANSWERED };

/* A purchase body is some 50 bytes: contexts with room for this many come
 * from the pool, larger ones (up to body_limit) from malloc. */
#define CTX_POOL_BODY 256
#define CTX_POOL_CACHED 512 /* per pool shard */

/* Per-request state of a POST /seckill. Thread park: freed by on_completed.
 * Event park: reference counted, one reference for MHD (dropped by
 * on_completed) and one for the armed deadline timer (dropped when the timer
 * is disarmed or has fired), so a firing timer never touches freed memory. */
typedef struct req_ctx {
    enum phase phase;
    int too_large;
    int produce_failed;
    int pooled; /* from g->ctx_pool */
    atomic_int refs;
    atomic_int resumed; /* event park: exactly one MHD_resume_connection */
    size_t cap;         /* body bytes allocated: Content-Length, or body_limit when chunked */
    uint64_t t0;
    gw *g;
    struct MHD_Connection *conn;
    gw_loop *loop; /* event park on epoll: the loop serving conn; NULL on poll */
    gw_waiter w;
    gw_timer timer;
    char rid[37];
    size_t len;
    char body[];
} req_ctx;

static void ctx_unref(req_ctx *rc)
{
    if (atomic_fetch_sub(&rc->refs, 1) != 1)
        return;
    if (rc->pooled)
        gw_slab_free(rc->g->ctx_pool, rc);
    else
        free(rc);
}

/* The first of outcome, deadline and produce failure to get here resumes. */
static void resume_once(req_ctx *rc)
{
    int expected = 0;
    if (atomic_compare_exchange_strong(&rc->resumed, &expected, 1)) {
        if (rc->loop)
            gw_http_resume(rc->loop, rc->conn);
        else
            MHD_resume_connection(rc->conn);
    }
}

/* Outcome arrived (called under the pending shard lock). */
static void ev_wake(gw_waiter *w)
{
    resume_once(w->user);
}

/* Deadline passed (wheel thread). */
static void ev_deadline(gw_timer *t)
{
    req_ctx *rc = (req_ctx *)((char *)t - offsetof(req_ctx, timer));
    if (gw_pending_cancel(rc->g->pending, &rc->w) == 0) {
        uint64_t now = gw_mono_ns();
        gw_metrics_lateness(&rc->g->metrics, now > t->deadline_ns ? now - t->deadline_ns : 0);
        resume_once(rc); /* removed before any outcome: a timeout */
    }
    ctx_unref(rc);
}

static uint64_t item_hash(const char *s)
{
    uint64_t h = 14695981039346656037ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static gw_item *item_find(gw *g, const char *id)
{
    for (size_t i = item_hash(id) & g->index_mask;; i = (i + 1) & g->index_mask) {
        int32_t k = g->item_index[i];
        if (k < 0)
            return NULL;
        if (strcmp(g->items[k].c->id, id) == 0)
            return &g->items[k];
    }
}

/* ---- the link the worker calls back into ---- */

static int on_outcome(void *arg, const sk_outcome *o)
{
    gw *g = arg;
    if (memcmp(o->gateway_id, g->id, 16) != 0)
        return -EXDEV; /* not ours: routing between gateways is the RPC layer's job */
    if (o->result >= SK_RESULT_COUNT || o->result == SK_UNAVAILABLE)
        return -EINVAL; /* "not decided" is no outcome: the request stays parked */
    atomic_fetch_add_explicit(&g->metrics.outcomes, 1, memory_order_relaxed);
    gw_results_put(g->results, o, gw_mono_ns());
    if (gw_pending_complete(g->pending, o) == -ENOENT)
        atomic_fetch_add_explicit(&g->metrics.late_outcomes, 1, memory_order_relaxed);
    return 0;
}

static void on_stock(void *arg, const char *item_id, int64_t left)
{
    gw *g = arg;
    gw_item *it = item_find(g, item_id);
    if (!it)
        return;
    /* Stock goes down with sales and up when an unpaid order is cancelled.
     * Reports may arrive out of order; workers repeat the current figure
     * every second, so a stale one is corrected within a second. The flag
     * only saves work: the worker's decision is what prevents overselling. */
    atomic_store(&it->left, left);
    atomic_store(&it->sold_out, left <= 0);
}

/* ---- answers ---- */

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *body,
                             size_t len, const char *request_id, const char *hname,
                             const char *hvalue)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (request_id)
        MHD_add_response_header(r, "X-Request-Id", request_id);
    if (hname)
        MHD_add_response_header(r, hname, hvalue);
    if (gw_frame_must_close(conn))
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply_str(struct MHD_Connection *conn, unsigned status, const char *body)
{
    return reply(conn, status, body, strlen(body), NULL, NULL, NULL);
}

static enum MHD_Result answer(gw *g, struct MHD_Connection *conn, uint64_t t0, enum gw_answer a,
                              unsigned status, const char *body, size_t len,
                              const char *request_id, const char *hname, const char *hvalue)
{
    gw_metrics_answer(&g->metrics, a, gw_mono_ns() - t0);
    return reply(conn, status, body, len, request_id, hname, hvalue);
}

static enum gw_answer answer_of(enum sk_result r)
{
    switch (r) {
    case SK_SUCCESS: return GW_A_SUCCESS;
    case SK_SOLD_OUT: return GW_A_SOLD_OUT;
    case SK_ALREADY_PURCHASED: return GW_A_ALREADY_PURCHASED;
    case SK_NOT_STARTED: return GW_A_NOT_STARTED;
    case SK_ENDED: return GW_A_ENDED;
    case SK_BLOCKED: return GW_A_BLOCKED;
    case SK_EXPIRED: return GW_A_TIMEOUT;
    case SK_UNKNOWN_ITEM: return GW_A_UNKNOWN_ITEM;
    default: return GW_A_OVERLOADED;
    }
}

/* The JSON body and status for an outcome, shared by POST /seckill and
 * GET /seckill/result. */
static unsigned outcome_body(gw *g, const sk_outcome *o, const char *rid, char *buf, size_t cap,
                             int *len)
{
    const cfg_item *ci;
    switch (o->result) {
    case SK_SUCCESS:
        *len = snprintf(buf, cap,
                        "{\"result\":\"success\",\"request_id\":\"%s\",\"order_id\":\"%s\","
                        "\"item_id\":\"%s\"}",
                        rid, o->order_id, o->item_id);
        return 200;
    case SK_ALREADY_PURCHASED:
        *len = snprintf(buf, cap, "{\"result\":\"already_purchased\",\"order_id\":\"%s\"}",
                        o->order_id);
        return 409;
    case SK_NOT_STARTED:
        ci = cfg_find_item(g->cfg, o->item_id);
        *len = snprintf(buf, cap, "{\"result\":\"not_started\",\"starts_at\":%lld}",
                        ci ? (long long)ci->starts_at : 0LL);
        return 409;
    case SK_EXPIRED:
        *len = snprintf(buf, cap, "{\"result\":\"timeout\",\"request_id\":\"%s\"}", rid);
        return 504;
    case SK_BLOCKED:
        *len = snprintf(buf, cap, "{\"result\":\"blocked\"}");
        return 403;
    case SK_UNKNOWN_ITEM:
        *len = snprintf(buf, cap, "{\"result\":\"unknown_item\"}");
        return 404;
    default:
        *len = snprintf(buf, cap, "{\"result\":\"%s\"}", sk_result_name(o->result));
        return 409;
    }
}

/* ---- POST /seckill ---- */

/* Event park: suspend the connection, produce, return. The outcome callback
 * or the deadline timer resumes it and MHD calls on_request again, which
 * lands in finish_parked. Suspending before producing means a resume can
 * never come before the suspend. */
static enum MHD_Result park_event(gw *g, struct MHD_Connection *conn, req_ctx *rc,
                                  const sk_msg *m, const mq_record *rec, const char *rid,
                                  uint64_t t0)
{
    memset(&rc->w, 0, sizeof rc->w);
    memcpy(rc->w.id, m->request_id, 16);
    rc->w.wake = ev_wake;
    rc->w.user = rc;
    rc->conn = conn;
    rc->loop = gw_http_self();
    rc->g = g;
    rc->t0 = t0;
    memcpy(rc->rid, rid, sizeof rc->rid);
    rc->timer.fire = ev_deadline;
    rc->phase = PH_PARKED;
    atomic_fetch_add(&rc->refs, 1); /* the timer's reference */
    gw_pending_add(g->pending, &rc->w);
    gw_wheel_add(g->wheel, &rc->timer, t0 + (uint64_t)g->cfg->wait_timeout_ms * 1000000ULL);
    MHD_suspend_connection(conn);
    if (mq_produce(g->topic, rec, NULL, NULL) < 0) {
        atomic_fetch_add_explicit(&g->metrics.queue_full, 1, memory_order_relaxed);
        if (gw_pending_cancel(g->pending, &rc->w) == 0) {
            rc->produce_failed = 1;
            resume_once(rc);
        }
    }
    return MHD_YES;
}

static unsigned outcome_body(gw *g, const sk_outcome *o, const char *rid, char *buf, size_t cap,
                             int *len);
static enum gw_answer answer_of(enum sk_result r);

/* 504: the outcome is not known yet. The request id goes into the result
 * store as undecided, so GET /seckill/result answers 202 pending until the
 * outcome comes (and then the outcome). */
static enum MHD_Result answer_timeout(gw *g, struct MHD_Connection *conn, uint64_t t0,
                                      const uint8_t id[16], const char *rid)
{
    char buf[128];
    sk_outcome o = {.result = SK_UNAVAILABLE};
    memcpy(o.gateway_id, g->id, 16);
    memcpy(o.request_id, id, 16);
    gw_results_put(g->results, &o, gw_mono_ns());
    int n = snprintf(buf, sizeof buf, "{\"result\":\"timeout\",\"request_id\":\"%s\"}", rid);
    return answer(g, conn, t0, GW_A_TIMEOUT, 504, buf, (size_t)n, rid, NULL, NULL);
}

/* Event park: the connection was resumed; answer with what woke it. */
static enum MHD_Result finish_parked(gw *g, struct MHD_Connection *conn, req_ctx *rc)
{
    char buf[512];
    int n;
    int done = gw_pending_cancel(g->pending, &rc->w) == -EALREADY;
    if (gw_wheel_del(g->wheel, &rc->timer) == 0)
        ctx_unref(rc); /* the timer will not fire: drop its reference */
    rc->phase = PH_ANSWERED;
    if (done) {
        unsigned status = outcome_body(g, &rc->w.out, rc->rid, buf, sizeof buf, &n);
        return answer(g, conn, rc->t0, answer_of(rc->w.out.result), status, buf, (size_t)n,
                      rc->rid, NULL, NULL);
    }
    if (rc->produce_failed)
        return answer(g, conn, rc->t0, GW_A_OVERLOADED, 503, J("{\"result\":\"overloaded\"}"),
                      rc->rid, "Retry-After", "1");
    return answer_timeout(g, conn, rc->t0, rc->w.id, rc->rid);
}

static int64_t wall_s(void)
{
    return (int64_t)time(NULL);
}

static enum MHD_Result purchase(gw *g, struct MHD_Connection *conn, req_ctx *rc)
{
    uint64_t t0 = gw_mono_ns();
    char buf[512];
    int n;
    gw_purchase p;

    if (rc->too_large)
        return answer(g, conn, t0, GW_A_PAYLOAD_TOO_LARGE, 413,
                      J("{\"result\":\"payload_too_large\"}"), NULL, NULL, NULL);
    if (gw_parse_purchase(rc->body, rc->len, &p, buf, sizeof buf) < 0)
        return answer(g, conn, t0, GW_A_BAD_REQUEST, 400, buf, strlen(buf), NULL, NULL, NULL);

    gw_item *it = item_find(g, p.item_id);
    if (!it)
        return answer(g, conn, t0, GW_A_UNKNOWN_ITEM, 404, J("{\"result\":\"unknown_item\"}"),
                      NULL, NULL, NULL);
    int64_t now_s = wall_s();
    if (it->c->starts_at && now_s < it->c->starts_at) {
        n = snprintf(buf, sizeof buf, "{\"result\":\"not_started\",\"starts_at\":%lld}",
                     (long long)it->c->starts_at);
        return answer(g, conn, t0, GW_A_NOT_STARTED, 409, buf, (size_t)n, NULL, NULL, NULL);
    }
    if (it->c->ends_at && now_s >= it->c->ends_at)
        return answer(g, conn, t0, GW_A_ENDED, 409, J("{\"result\":\"ended\"}"), NULL, NULL,
                      NULL);
    if (atomic_load_explicit(&it->sold_out, memory_order_relaxed))
        return answer(g, conn, t0, GW_A_SOLD_OUT, 409, J("{\"result\":\"sold_out\"}"), NULL,
                      NULL, NULL);
    if (mq_group_live(g->topic, SK_GROUP) == 0)
        return answer(g, conn, t0, GW_A_OVERLOADED, 503, J("{\"result\":\"overloaded\"}"),
                      NULL, "Retry-After", "1");
    if (!tb_take(&g->bucket, t0)) {
        atomic_fetch_add_explicit(&g->metrics.tb_rejections, 1, memory_order_relaxed);
        uint64_t wait = tb_wait_ns(&g->bucket, t0);
        char ra[24];
        snprintf(ra, sizeof ra, "%llu", (unsigned long long)(wait / 1000000000ULL + 1));
        return answer(g, conn, t0, GW_A_RATE_LIMITED, 429, J("{\"result\":\"rate_limited\"}"),
                      NULL, "Retry-After", ra);
    }

    /* Admitted: a request id, a parked waiter, a message. */
    sk_msg m;
    char rid[37];
    uint8_t wire[SK_MSG_MAX];
    gw_waiter w;
    sk_uuid4(m.request_id);
    uuid_unparse_lower(m.request_id, rid);
    memcpy(m.gateway_id, g->id, 16);
    m.admitted_at_ms = sk_wall_ms();
    m.deadline_ms = m.admitted_at_ms + g->cfg->wait_timeout_ms;
    memcpy(m.user_id, p.user_id, sizeof m.user_id);
    memcpy(m.item_id, p.item_id, sizeof m.item_id);
    int wl = sk_msg_encode(&m, wire, sizeof wire);
    mq_record rec = {.key = p.user_id, .key_len = strlen(p.user_id), .value = wire,
                     .value_len = (size_t)wl, .partition = MQ_PARTITION_ANY};
    if (g->event_park && wl > 0)
        return park_event(g, conn, rc, &m, &rec, rid, t0);
    if (wl < 0 || gw_waiter_init(&w, m.request_id) < 0)
        return answer(g, conn, t0, GW_A_OVERLOADED, 503, J("{\"result\":\"overloaded\"}"), rid,
                      "Retry-After", "1");
    gw_pending_add(g->pending, &w);
    int prc = mq_produce(g->topic, &rec, NULL, NULL);
    if (prc < 0) {
        gw_pending_cancel(g->pending, &w); /* nobody can complete it: never produced */
        gw_waiter_release(&w);
        atomic_fetch_add_explicit(&g->metrics.queue_full, 1, memory_order_relaxed);
        return answer(g, conn, t0, GW_A_OVERLOADED, 503, J("{\"result\":\"overloaded\"}"), rid,
                      "Retry-After", "1");
    }
    uint64_t deadline = t0 + (uint64_t)g->cfg->wait_timeout_ms * 1000000ULL;
    int wrc = gw_pending_wait(g->pending, &w, deadline);
    gw_waiter_release(&w);
    if (wrc == -ETIMEDOUT) {
        uint64_t now = gw_mono_ns();
        gw_metrics_lateness(&g->metrics, now > deadline ? now - deadline : 0);
        return answer_timeout(g, conn, t0, m.request_id, rid);
    }
    unsigned status = outcome_body(g, &w.out, rid, buf, sizeof buf, &n);
    return answer(g, conn, t0, answer_of(w.out.result), status, buf, (size_t)n, rid, NULL,
                  NULL);
}

/* ---- GET endpoints ---- */

static enum MHD_Result get_result(gw *g, struct MHD_Connection *conn, const char *rid)
{
    uuid_t id;
    char buf[512];
    int n;
    sk_outcome o;
    if (strlen(rid) != 36 || uuid_parse(rid, id) != 0)
        return reply_str(conn, 400,
                         "{\"result\":\"bad_request\",\"error\":\"request_id must be a UUID\"}");
    char canon[37];
    uuid_unparse_lower(id, canon);
    int known = gw_results_get(g->results, id, gw_mono_ns(), &o) == 0;
    if (known && o.result != SK_UNAVAILABLE) {
        unsigned status = outcome_body(g, &o, canon, buf, sizeof buf, &n);
        return reply(conn, status, buf, (size_t)n, canon, NULL, NULL);
    }
    if (known || gw_pending_contains(g->pending, id)) {
        n = snprintf(buf, sizeof buf, "{\"result\":\"pending\",\"request_id\":\"%s\"}", canon);
        return reply(conn, 202, buf, (size_t)n, canon, NULL, NULL);
    }
    return reply(conn, 404, J("{\"result\":\"not_found\"}"), canon, NULL, NULL);
}

/* Stock left of it as this process knows it without a round trip: the
 * store's own counter when it keeps one here (its items are in g->items'
 * order), else the workers' last report. */
static int64_t item_left(const gw *g, const gw_item *it)
{
    sale_item_stats st;
    if (sale_store_stats(g->store, (size_t)(it - g->items), &st) == 0)
        return st.left;
    return atomic_load(&((gw_item *)it)->left);
}

static enum MHD_Result get_item(gw *g, struct MHD_Connection *conn, const char *id)
{
    char buf[512];
    gw_item *it = sk_id_valid(id, strlen(id)) ? item_find(g, id) : NULL;
    if (!it)
        return reply_str(conn, 404, "{\"result\":\"unknown_item\"}");
    /* ask the store, the authority, rather than the last report */
    int64_t now = wall_s(), left = sale_store_left(g->store, (size_t)(it - g->items));
    if (left < 0)
        left = item_left(g, it);
    const char *status = "on_sale";
    if (it->c->starts_at && now < it->c->starts_at)
        status = "upcoming";
    else if (it->c->ends_at && now >= it->c->ends_at)
        status = "ended";
    else if (left <= 0)
        status = "sold_out";
    int n = snprintf(buf, sizeof buf,
                     "{\"item_id\":\"%s\",\"stock_total\":%lld,\"stock_left\":%lld,"
                     "\"status\":\"%s\",\"starts_at\":%lld,\"ends_at\":%lld,"
                     "\"per_user_limit\":%u}",
                     it->c->id, (long long)it->c->stock, (long long)left, status,
                     (long long)it->c->starts_at, (long long)it->c->ends_at,
                     it->c->per_user_limit);
    return reply(conn, 200, buf, (size_t)n, NULL, NULL, NULL);
}

/* ---- orders ---- */

static enum MHD_Result orders(gw *g, struct MHD_Connection *conn, const char *method,
                              const char *path)
{
    char order_id[64], buf[768], rid[37];
    uuid_t u;
    int pay = 0;
    size_t n = strcspn(path, "/");
    if (n == 0 || n >= sizeof order_id)
        return reply_str(conn, 404, "{\"result\":\"not_found\"}");
    memcpy(order_id, path, n);
    order_id[n] = '\0';
    if (!strcmp(path + n, "/pay"))
        pay = 1;
    else if (path[n])
        return reply_str(conn, 404, "{\"result\":\"not_found\"}");
    if (pay ? strcmp(method, MHD_HTTP_METHOD_POST) != 0
            : strcmp(method, MHD_HTTP_METHOD_GET) != 0)
        return reply(conn, 405, J("{\"result\":\"method_not_allowed\"}"), NULL, "Allow",
                     pay ? "POST" : "GET");
    if (n != 36 || uuid_parse(order_id, u) != 0)
        return reply_str(conn, 400,
                         "{\"result\":\"bad_request\",\"error\":\"order_id must be a UUID\"}");
    sk_order o;
    int rc = pay ? sale_store_order_pay(g->store, order_id, sk_wall_ms(), &o)
                 : sale_store_order_get(g->store, order_id, &o);
    if (rc == -ENOENT)
        return reply_str(conn, 404, "{\"result\":\"not_found\"}");
    if (rc == -ECANCELED)
        return reply_str(conn, 409, "{\"result\":\"cancelled\"}");
    if (rc == -ETIME)
        return reply_str(conn, 409, "{\"result\":\"pay_timeout\"}");
    if (rc < 0)
        return reply(conn, 503, J("{\"result\":\"overloaded\"}"), NULL, "Retry-After", "1");
    uuid_unparse_lower(o.request_id, rid);
    int len = snprintf(buf, sizeof buf,
                       "{\"order_id\":\"%s\",\"item_id\":\"%s\",\"user_id\":\"%s\","
                       "\"request_id\":\"%s\",\"state\":\"%s\",\"created_at_ms\":%llu,"
                       "\"pay_deadline_ms\":%llu}",
                       order_id, o.item_id, o.user_id, rid, sk_order_state_name(o.state),
                       (unsigned long long)o.created_ms, (unsigned long long)o.pay_deadline_ms);
    return reply(conn, 200, buf, (size_t)len, NULL, NULL, NULL);
}

static enum MHD_Result get_metrics(gw *g, struct MHD_Connection *conn)
{
    size_t cap = 16384 + g->nitems * 128;
    char *buf = malloc(cap);
    const char **ids = calloc(g->nitems + 1, sizeof *ids);
    int64_t *left = calloc(3 * (g->nitems + 1), sizeof *left);
    int64_t *sold = left + g->nitems + 1, *buyers = sold + g->nitems + 1;
    enum MHD_Result ret = MHD_NO;
    int counted = 0; /* the store counts sales here */
    if (!buf || !ids || !left)
        goto out_free;
    for (size_t i = 0; i < g->nitems; i++) {
        sale_item_stats st;
        ids[i] = g->items[i].c->id;
        left[i] = item_left(g, &g->items[i]);
        counted = sale_store_stats(g->store, i, &st) == 0;
        sold[i] = counted ? st.sold : 0;
        buyers[i] = counted ? st.buyers : 0;
    }
    gw_slab_stats ps;
    gw_slab_stats_get(g->ctx_pool, &ps);
    gw_rpcsvc_stats rs;
    gw_rpcsvc_get_stats(g->rpc, &rs);
    gw_gauges ga = {.queue_depth = mq_topic_backlog(g->topic),
                    .ctx_allocs = ps.allocs,
                    .ctx_reused = ps.reused,
                    .parked = gw_pending_count(g->pending),
                    .workers_live = mq_group_live(g->topic, SK_GROUP),
                    .nitems = g->nitems,
                    .item_ids = ids,
                    .stock_left = left,
                    .sold = counted ? sold : NULL,
                    .buyers = buyers,
                    .rpc_auth_failures = rs.auth_failures,
                    .rpc_mac_failures = rs.mac_failures,
                    .rpc_handshake_timeouts = rs.handshake_timeouts,
                    .rpc_denied = rs.denied,
                    .rpc_tls_failures = rs.tls_failures,
                    .http_request_timeouts = gw_guard_timeouts(g->guard),
                    .http_per_ip_refused = gw_guard_refused(g->guard)};
    size_t n = gw_metrics_render(&g->metrics, &ga, buf, cap);
    struct MHD_Response *r = MHD_create_response_from_buffer(n, buf, MHD_RESPMEM_MUST_FREE);
    if (!r)
        goto out_free;
    buf = NULL;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4");
    if (gw_frame_must_close(conn))
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    ret = MHD_queue_response(conn, 200, r);
    MHD_destroy_response(r);
out_free:
    free(buf);
    free(ids);
    free(left);
    return ret;
}

/* The body size the request declares (Content-Length), or body_limit when it
 * declares none or is chunked (Transfer-Encoding wins over Content-Length:
 * RFC 9112 section 6.3). -1 when the header is not a number or is over
 * body_limit. */
static int declared_body(const gw *g, struct MHD_Connection *conn, size_t *len)
{
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
    *len = g->cfg->body_limit;
    if (!cl || MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Transfer-Encoding"))
        return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(cl, &end, 10);
    if (errno || end == cl || *end || v > g->cfg->body_limit)
        return -1;
    *len = (size_t)v;
    return 0;
}

/* *con_cls of a request other than POST /seckill between its calls */
static char route_mark;
static enum MHD_Result route(gw *g, struct MHD_Connection *conn, const char *url,
                             const char *method);

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    gw *g = cls;
    req_ctx *rc = *con_cls;

    if (!*con_cls || gw_frame_uri_mark(*con_cls)) { /* the headers are in */
        enum gw_frame f = gw_frame_check(conn, version, *con_cls != NULL);
        *con_cls = NULL;
        if (gw_frame_answer(f, NULL)) {
            gw_guard_done(g->guard, conn); /* answered: nothing more to wait for */
            gw_metrics_framing(&g->metrics, f);
            return gw_frame_reply(conn, f);
        }
        rc = NULL;
    } else if (*upload_data_size == 0) {
        /* headers and body are in: from here the request waits for its
         * answer (parked ones for wait_timeout_ms), not for the client */
        gw_guard_done(g->guard, conn);
    }

    if (*con_cls == &route_mark) { /* the request is in: answer it (a body is ignored) */
        if (*upload_data_size) {
            *upload_data_size = 0;
            return MHD_YES;
        }
        return route(g, conn, url, method);
    }
    if (rc) { /* POST /seckill: body chunks, then the final call */
        if (*upload_data_size) {
            if (rc->len + *upload_data_size > rc->cap)
                rc->too_large = 1;
            else {
                memcpy(rc->body + rc->len, upload_data, *upload_data_size);
                rc->len += *upload_data_size;
            }
            *upload_data_size = 0;
            return MHD_YES;
        }
        if (rc->phase == PH_PARKED)
            return finish_parked(g, conn, rc);
        return purchase(g, conn, rc);
    }

    if (strcmp(url, "/seckill") == 0) {
        uint64_t t0 = gw_mono_ns();
        if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
            return answer(g, conn, t0, GW_A_METHOD_NOT_ALLOWED, 405,
                          J("{\"result\":\"method_not_allowed\"}"), NULL, "Allow", "POST");
        const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
        if (!gw_is_json_type(ct))
            return answer(g, conn, t0, GW_A_UNSUPPORTED_MEDIA_TYPE, 415,
                          J("{\"result\":\"unsupported_media_type\"}"), NULL, NULL, NULL);
        size_t cap; /* a parked request keeps only what it needs */
        if (declared_body(g, conn, &cap) < 0)
            return answer(g, conn, t0, GW_A_PAYLOAD_TOO_LARGE, 413,
                          J("{\"result\":\"payload_too_large\"}"), NULL, NULL, NULL);
        int pooled = cap <= CTX_POOL_BODY;
        rc = pooled ? gw_slab_alloc(g->ctx_pool) : malloc(sizeof *rc + cap + 1);
        if (!rc)
            return MHD_NO;
        memset(rc, 0, sizeof *rc);
        rc->g = g;
        rc->pooled = pooled;
        atomic_fetch_add(&g->inflight, 1);
        rc->phase = PH_READING;
        rc->cap = cap;
        atomic_init(&rc->refs, 1);
        atomic_init(&rc->resumed, 0);
        *con_cls = rc;
        return MHD_YES;
    }
    /* Answer on the next call, once libmicrohttpd has the whole request: a
     * response queued on the first call closes the connection, and apps
     * polling /seckill/result keep theirs open. A body is read and dropped,
     * so a declared one over body_limit is refused at once. */
    size_t len;
    if (declared_body(g, conn, &len) < 0)
        return reply_str(conn, 413, "{\"result\":\"payload_too_large\"}");
    *con_cls = &route_mark;
    return MHD_YES;
}

/* Every endpoint but POST /seckill. */
static enum MHD_Result route(gw *g, struct MHD_Connection *conn, const char *url,
                             const char *method)
{
    int is_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
                 strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    if (strncmp(url, "/orders/", 8) == 0)
        return orders(g, conn, method, url + 8);
    if (!is_get) {
        if (strncmp(url, "/seckill/result/", 16) == 0 || strncmp(url, "/items/", 7) == 0 ||
            !strcmp(url, "/livez") || !strcmp(url, "/readyz") || !strcmp(url, "/metrics"))
            return reply(conn, 405, J("{\"result\":\"method_not_allowed\"}"), NULL, "Allow",
                         "GET, HEAD");
        return reply_str(conn, 404, "{\"result\":\"not_found\"}");
    }
    if (strncmp(url, "/seckill/result/", 16) == 0)
        return get_result(g, conn, url + 16);
    if (strncmp(url, "/items/", 7) == 0)
        return get_item(g, conn, url + 7);
    if (strcmp(url, "/livez") == 0)
        return reply_str(conn, 200, "{\"status\":\"ok\"}");
    if (strcmp(url, "/readyz") == 0) {
        if (atomic_load(&g->stopping))
            return reply_str(conn, 503, "{\"status\":\"stopping\"}");
        if (mq_group_live(g->topic, SK_GROUP) == 0)
            return reply_str(conn, 503, "{\"status\":\"no_worker\"}");
        if (sale_store_ping(g->store) < 0) /* the store does not answer */
            return reply_str(conn, 503, "{\"status\":\"redis_unreachable\"}");
        return reply_str(conn, 200, "{\"status\":\"ready\"}");
    }
    if (strcmp(url, "/metrics") == 0)
        return get_metrics(g, conn);
    return reply_str(conn, 404, "{\"result\":\"not_found\"}");
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    gw *g = cls;
    req_ctx *rc = *con_cls;
    (void)toe;
    /* a keep-alive connection's next request must be in within
     * request_timeout_ms from now */
    gw_guard_next(g->guard, conn);
    if (!rc || *con_cls == &route_mark || gw_frame_uri_mark(rc))
        return;
    if (rc->phase == PH_PARKED) {
        /* ended while parked (connection reset, daemon stopping): leave
         * nothing behind that could wake freed memory */
        gw_pending_cancel(g->pending, &rc->w);
        if (gw_wheel_del(g->wheel, &rc->timer) == 0)
            ctx_unref(rc);
    }
    *con_cls = NULL;
    ctx_unref(rc);
    atomic_fetch_sub(&g->inflight, 1); /* its answer is out (or the client went away) */
}

/* The stock view and sold-out flags, from the store (reaper rounds). */
static void on_store_stock(void *arg, size_t i, int64_t left)
{
    gw *g = arg;
    atomic_store(&g->items[i].left, left);
    atomic_store(&g->items[i].sold_out, left <= 0);
}

/* ---- lifecycle ---- */

int gw_create(const cfg *c, gw **out, char *err, size_t errlen)
{
    gw *g = calloc(1, sizeof *g);
    sale_store_item *specs = NULL;
    int rc = -ENOMEM;
    if (!g)
        goto out_oom;
    g->cfg = c;
    g->event_park = strcmp(c->park, "event") == 0;
    if (c->gateway_id[0]) {
        if (uuid_parse(c->gateway_id, g->id) != 0) {
            snprintf(err, errlen, "gateway_id '%s' is not a UUID", c->gateway_id);
            rc = -EINVAL;
            goto out_destroy;
        }
    } else {
        uuid_generate_random(g->id);
    }
    uuid_unparse_lower(g->id, g->id_str);
    if (tb_init(&g->bucket, c->tb_rate, c->tb_burst) < 0) {
        snprintf(err, errlen, "token bucket: bad rate or burst");
        rc = -EINVAL;
        goto out_destroy;
    }
    if (gw_pending_create(256, &g->pending) < 0 ||
        gw_slab_create(sizeof(req_ctx) + CTX_POOL_BODY + 1, CTX_POOL_CACHED, &g->ctx_pool) < 0 ||
        gw_results_create(c->result_capacity, (uint64_t)c->result_ttl_s * 1000000000ULL,
                          &g->results) < 0)
        goto out_oom;

    g->nitems = c->nitems;
    g->items = calloc(c->nitems ? c->nitems : 1, sizeof *g->items);
    g->windows = calloc(c->nitems ? c->nitems : 1, sizeof *g->windows);
    specs = calloc(c->nitems ? c->nitems : 1, sizeof *specs);
    size_t isz = 16;
    while (isz < c->nitems * 2)
        isz <<= 1;
    g->item_index = malloc(isz * sizeof *g->item_index);
    if (!g->items || !g->windows || !specs || !g->item_index)
        goto out_oom;
    g->index_mask = isz - 1;
    memset(g->item_index, 0xff, isz * sizeof *g->item_index);
    for (size_t i = 0; i < c->nitems; i++) {
        const cfg_item *ci = &c->items[i];
        g->items[i].c = ci;
        atomic_init(&g->items[i].left, ci->stock);
        atomic_init(&g->items[i].sold_out, ci->stock == 0);
        size_t k = item_hash(ci->id) & g->index_mask;
        while (g->item_index[k] >= 0)
            k = (k + 1) & g->index_mask;
        g->item_index[k] = (int32_t)i;
        g->windows[i] = (sk_item_window){ci->id, ci->starts_at, ci->ends_at};
        specs[i] = (sale_store_item){ci->id, ci->stock, ci->per_user_limit};
    }
    sale_store_config sc = {.backend = c->worker_inventory,
                            .name = "seckill-gateway",
                            .items = specs,
                            .nitems = c->nitems,
                            .pay_timeout_ms = c->worker_pay_timeout_ms,
                            .decision_capacity = c->worker_decision_capacity,
                            .data_dir = c->queue_data_dir,
                            .order_flush_sync = strcmp(c->queue_order_flush, "sync") == 0,
                            .ack_timeout_ms = c->queue_ack_timeout_ms,
                            .lease_timeout_ms = c->queue_lease_timeout_ms,
                            .redis_host = c->redis_host,
                            .redis_port = c->redis_port,
                            .redis_timeout_ms = c->redis_timeout_ms,
                            .redis_patience_ms = 5000};
    rc = sale_store_create(&sc, &g->store, err, errlen);
    if (rc < 0)
        goto out_destroy;
    for (size_t i = 0; i < c->nitems; i++) {
        int64_t left = sale_store_left(g->store, i);
        if (left >= 0) /* a running sale: start from where it is */
            on_store_stock(g, i, left);
    }

    /* the request topic goes into the store's queue when it keeps one (the
     * order events on disk, served to order consumers with the requests) */
    g->q = sale_store_queue(g->store);
    if (!g->q) {
        rc = mq_create(NULL, &g->q);
        if (rc < 0) {
            snprintf(err, errlen, "queue: (memory): %s", strerror(-rc));
            goto out_destroy;
        }
        g->own_q = 1;
    }
    mq_topic_config tc;
    mq_topic_config_init(&tc);
    tc.partitions = c->queue_partitions;
    tc.max_backlog_msgs = c->queue_max_backlog;
    tc.max_backlog_bytes = c->queue_max_backlog_bytes;
    tc.ack_timeout_ms = c->queue_ack_timeout_ms;
    tc.lease_timeout_ms = c->queue_lease_timeout_ms;
    tc.max_deliveries = c->queue_max_deliveries;
    tc.storage = MQ_STORAGE_MEMORY; /* a request is worthless after its deadline */
    rc = mq_topic_open(g->q, SK_REQUEST_TOPIC, &tc, &g->topic);
    if (rc < 0) {
        snprintf(err, errlen, "queue: cannot open %s: %s", SK_REQUEST_TOPIC, strerror(-rc));
        goto out_destroy;
    }
    free(specs);
    *out = g;
    return 0;

out_oom:
    snprintf(err, errlen, "out of memory");
    rc = -ENOMEM;
out_destroy:
    free(specs);
    gw_destroy(g);
    return rc;
}

int gw_start(gw *g, char *err, size_t errlen)
{
    const cfg *c = g->cfg;
    int rc;
    if (c->worker_embedded) {
        sk_worker_config wc = {.threads = cfg_worker_threads(c),
                               .batch = c->worker_batch,
                               .name = g->id_str,
                               .blocklist = (const char *const *)c->blocklist,
                               .nblocklist = c->nblocklist,
                               .windows = g->windows,
                               .nwindows = g->nitems};
        sk_link link = {.arg = g, .deliver = on_outcome, .stock = on_stock};
        g->source = sk_source_mq(g->topic);
        g->backend = sale_store_backend(g->store);
        rc = sk_worker_start(&wc, &g->source, &g->backend, &link, &g->worker);
        if (rc < 0) {
            snprintf(err, errlen, "worker: %s", strerror(-rc));
            return rc;
        }
    }
    if (c->worker_embedded) {
        /* who decides purchases cancels their unpaid orders, and keeps the
         * stock view and sold-out flags in step with the store */
        sale_reaper_config rc_cfg = {.period_ms = 200, .stock = on_store_stock, .arg = g};
        rc = sale_reaper_start(g->store, &rc_cfg, &g->reaper);
        if (rc < 0) {
            snprintf(err, errlen, "reaper: %s", strerror(-rc));
            return rc;
        }
    }
    if (c->rpc_listen[0]) {
        gw_rpcsvc_hooks hooks = {.arg = g, .gateway_id = g->id, .result = on_outcome,
                                 .stock = on_stock};
        gw_rpcsvc_tls tls = {.cert = c->rpc_tls_cert, .key = c->rpc_tls_key, .ca = c->rpc_tls_ca};
        rc = gw_rpcsvc_create(c->rpc_listen, c->rpc_secret, c->rpc_handshake_timeout_ms, &tls, g->q,
                              &hooks, &g->rpc);
        if (rc == 0)
            rc = gw_rpcsvc_start(g->rpc);
        if (rc < 0) {
            snprintf(err, errlen, "rpc: cannot serve on %s: %s", c->rpc_listen, strerror(-rc));
            return rc;
        }
        if (!strcmp(c->worker_inventory, "redis")) {
            /* workers find gateways in the Redis of [redis], which
             * inventory = redis configures; the bound address: port 0 in
             * the config means the real one */
            char addr[SK_REGISTRY_ADDR_MAX + 1];
            const char *colon = strrchr(c->rpc_listen, ':');
            if (!strncmp(c->rpc_listen, "tcp:", 4) && gw_rpcsvc_port(g->rpc) > 0)
                snprintf(addr, sizeof addr, "%.*s:%d", (int)(colon - c->rpc_listen),
                         c->rpc_listen, gw_rpcsvc_port(g->rpc));
            else
                snprintf(addr, sizeof addr, "%s", c->rpc_listen);
            rc = sk_registry_create(c->redis_host, c->redis_port, c->redis_timeout_ms,
                                    &g->registry);
            if (rc == 0)
                rc = sk_registry_register(g->registry, g->id_str, addr, c->rpc_registry_ttl_ms);
            if (rc < 0) {
                snprintf(err, errlen, "registry: %s", strerror(-rc));
                return rc;
            }
        }
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(c->listen_port)};
    if (inet_pton(AF_INET, c->listen_host, &sa.sin_addr) != 1) {
        snprintf(err, errlen, "listen: '%s' is not an IPv4 address", c->listen_host);
        return -EINVAL;
    }
    gw_guard_cfg gc = {.request_timeout_ms = c->request_timeout_ms,
                       .max_per_ip = c->max_connections_per_ip,
                       .max_connections = c->max_connections};
    rc = gw_guard_create(&gc, &g->guard);
    if (rc < 0) {
        snprintf(err, errlen, "connection guard: %s", strerror(-rc));
        return rc;
    }
    if (g->event_park) {
        /* A few HTTP threads; parked requests are suspended connections, not
         * threads. Two ways to run them ([gateway] http_io):
         * poll (default): libmicrohttpd's own thread pool in poll mode. Not
         *   its epoll mode: after an epoll_wait that fills its 128 events it
         *   waits again with the full timeout before serving them, so a pool
         *   thread whose connections are exactly 128 (or 256, ...) waiting
         *   requests stalls until a new connection comes or 30 s pass
         *   (reproduced: one pool thread, wrk -c128, every time). poll walks
         *   every connection of a thread at each wake-up.
         * epoll: our own loops over daemons in external epoll mode
         *   (http_loop.h), which cannot stall that way and cost per request,
         *   not per open connection, but each suspended request costs two
         *   epoll_ctl and a read to EAGAIN. Measured: epoll is 8-15 % slower
         *   at 256 busy connections, and several times cheaper with
         *   thousands of connections that are mostly idle.
         * No SO_REUSEPORT either way (libmicrohttpd and http_loop set
         * SO_REUSEADDR only): a second gateway on a port in use fails. */
        rc = gw_wheel_create(1000000ULL, &g->wheel);
        if (rc < 0) {
            snprintf(err, errlen, "timer wheel: %s", strerror(-rc));
            return rc;
        }
        unsigned pool = c->pool_threads ? c->pool_threads : (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
        if (pool < 1)
            pool = 1;
        if (!strcmp(c->http_io, "epoll")) {
            gw_http_cfg hc = {.addr = sa,
                              .threads = pool,
                              .max_connections = (unsigned)c->max_connections,
                              .connection_timeout = 30,
                              .connection_memory = GW_CONN_MEMORY,
                              .handler = on_request,
                              .handler_cls = g,
                              .completed = on_completed,
                              .completed_cls = g,
                              .accept = gw_guard_accept_policy,
                              .accept_cls = g->guard,
                              .notify = gw_guard_notify,
                              .notify_cls = g->guard,
                              .uri_log = gw_frame_uri_log};
            rc = gw_http_create(&hc, &g->http);
            if (rc < 0) {
                snprintf(err, errlen, "cannot listen on %s:%u: %s", c->listen_host,
                         c->listen_port, strerror(-rc));
                return rc;
            }
            g->port = gw_http_port(g->http);
            return 0;
        }
        g->mhd = MHD_start_daemon(
            MHD_USE_POLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0,
            gw_guard_accept_policy, g->guard, on_request, g, MHD_OPTION_SOCK_ADDR,
            (struct sockaddr *)&sa, MHD_OPTION_THREAD_POOL_SIZE, pool,
            MHD_OPTION_CONNECTION_LIMIT, (unsigned)c->max_connections,
            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
            (size_t)GW_CONN_MEMORY, MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)4096,
            MHD_OPTION_NOTIFY_COMPLETED, on_completed, g, MHD_OPTION_NOTIFY_CONNECTION,
            gw_guard_notify, g->guard, MHD_OPTION_URI_LOG_CALLBACK, gw_frame_uri_log, NULL,
            MHD_OPTION_END);
    } else {
        g->mhd = MHD_start_daemon(
            MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                MHD_USE_ITC | MHD_USE_ERROR_LOG,
            0, gw_guard_accept_policy, g->guard, on_request, g, MHD_OPTION_SOCK_ADDR,
            (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_LIMIT, (unsigned)c->max_connections,
            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
            (size_t)GW_CONN_MEMORY, MHD_OPTION_THREAD_STACK_SIZE, (size_t)(256 * 1024),
            MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)4096, MHD_OPTION_NOTIFY_COMPLETED,
            on_completed, g, MHD_OPTION_NOTIFY_CONNECTION, gw_guard_notify, g->guard,
            MHD_OPTION_URI_LOG_CALLBACK, gw_frame_uri_log, NULL, MHD_OPTION_END);
    }
    if (!g->mhd) {
        snprintf(err, errlen, "cannot listen on %s:%u", c->listen_host, c->listen_port);
        return -EADDRINUSE;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(g->mhd, MHD_DAEMON_INFO_BIND_PORT);
    g->port = di ? di->port : c->listen_port;
    return 0;
}

uint16_t gw_port(const gw *g)
{
    return g->port;
}

int gw_rpc_port(const gw *g)
{
    return g->rpc ? gw_rpcsvc_port(g->rpc) : -ENOTCONN;
}

const char *gw_id(const gw *g)
{
    return g->id_str;
}

void gw_stop(gw *g, uint32_t grace_ms)
{
    atomic_store(&g->stopping, 1);
    if (g->mhd || g->http) {
        if (g->http) {
            gw_http_quiesce(g->http);
        } else {
            MHD_socket s = MHD_quiesce_daemon(g->mhd);
            if (s != MHD_INVALID_SOCKET)
                close(s);
        }
        /* parked requests get their outcome or time out; wait until every
         * answer has been sent (on_completed), not only decided */
        uint64_t until = gw_mono_ns() + (uint64_t)grace_ms * 1000000ULL;
        while ((gw_pending_count(g->pending) > 0 || atomic_load(&g->inflight) > 0) &&
               gw_mono_ns() < until) {
            struct timespec ts = {0, 5 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        if (g->wheel) /* grace is over: time out whatever still waits (resumes it) */
            gw_wheel_expire_all(g->wheel);
        for (int i = 0; i < 200 && atomic_load(&g->inflight) > 0; i++) {
            struct timespec ts = {0, 5 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        gw_http_destroy(g->http);
        g->http = NULL;
        if (g->mhd)
            MHD_stop_daemon(g->mhd);
        g->mhd = NULL;
    }
    gw_guard_destroy(g->guard); /* after the daemons: their last closes free its state */
    g->guard = NULL;
    if (g->registry) {
        sk_registry_destroy(g->registry); /* DEL: workers drop us at their next look */
        g->registry = NULL;
    }
    if (g->rpc) {
        gw_rpcsvc_destroy(g->rpc);
        g->rpc = NULL;
    }
    if (g->worker) {
        sk_worker_stop(g->worker);
        g->worker = NULL;
    }
    sale_reaper_stop(g->reaper);
    g->reaper = NULL;
    if (g->wheel) {
        gw_wheel_destroy(g->wheel);
        g->wheel = NULL;
    }
}

void gw_destroy(gw *g)
{
    if (!g)
        return;
    gw_stop(g, 0);
    if (g->q && g->own_q)
        mq_destroy(g->q);
    sale_store_destroy(g->store); /* with its queue, when q was the store's */
    gw_results_destroy(g->results);
    gw_pending_destroy(g->pending);
    gw_slab_destroy(g->ctx_pool);
    free(g->item_index);
    free(g->windows);
    free(g->items);
    free(g);
}
