/*
 * internal.h - what the gateway's own files share: struct gw, the per-request
 * state of POST /seckill and the gw__ functions between them. Only the .c
 * files of gateway/ include it; everyone else uses gateway.h.
 *
 * One file per concern:
 *   routes.c     the access handler: framing, then POST /seckill to
 *                purchase.c and every other request to its endpoint file
 *   purchase.c   POST /seckill: checks, token bucket, request id, parking
 *   admission.c  POST /seckill's admission token, per-client limits,
 *                RateLimit headers and Idempotency-Key; the token of the
 *                order endpoints
 *                (thread or event mode) until the outcome or the deadline
 *   answer.c     replies, the body of an outcome, the 504 of a timeout
 *   items.c      the item table: lookup, stock view, GET /items/{id}
 *   result.c     GET /seckill/result/{id}
 *   orders.c     GET /orders/{id}, POST /orders/{id}/pay
 *   metrics_http.c GET /metrics
 *   health.c     GET /livez, GET /readyz
 *   stats.c      GET /stats: the sale's numbers as JSON for the dashboard
 *   dashboard.c  GET /dashboard: the live page, embedded at build time
 *   cors.c       [http] cors_origins: preflights and Access-Control-* headers
 *   link.c       what workers call back (outcomes, stock), the embedded
 *                workers and reaper, the RPC service and its registry entry
 *   lifecycle.c  gw_create, gw_start, gw_drain_begin, gw_stop, gw_destroy
 *   reload.c     gw_reload: a new configuration while serving (SIGHUP)
 *   admin.c      the admin API on its own listener ([admin] listen)
 *   opening.c    [admission] open_window_ms: purchases of an item's first
 *                W ms held, then queued in a random order
 *
 * A purchase: routes.c gw__on_request -> purchase.c (admission, park) ->
 * answer.c; its outcome comes in through link.c on_outcome, which completes
 * the pending waiter that purchase.c parked.
 */
#ifndef SECKILL_GW_INTERNAL_H
#define SECKILL_GW_INTERNAL_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "conn_guard.h"
#include "gateway.h"
#include "http_loop.h"
#include "idempotency.h"
#include "client_limits.h"
#include "message.h"
#include "metrics.h"
#include "mq.h"
#include "pending.h"
#include "registry.h"
#include "request.h"
#include "result_store.h"
#include "rpc_service.h"
#include "slab.h"
#include "store.h"
#include "timer_wheel.h"
#include "token_bucket.h"
#include "token_bucket_global.h"
#include "worker.h"

/* A string literal and its length, for fixed JSON answers. */
#define J(s) s, sizeof(s) - 1

/* c's id and per_user_limit hold for the life of the gateway; what a reload
 * may change (the sale window, a raised stock) is read from the atomics. */
typedef struct gw_item {
    const cfg_item *c;
    _Atomic int64_t left; /* as last reported by a worker */
    atomic_int sold_out;  /* local flag: answer 409 without a token */
    _Atomic int64_t stock, starts_at, ends_at;
    _Atomic uint32_t per_user_limit; /* as last set here (the store holds the one in force) */
    atomic_long inflight; /* admitted through the stock gate, not yet answered */
    /* [admission] open_window_ms (opening.c): the purchases held until the
     * item's opening window closes, under hold_lock */
    pthread_mutex_t hold_lock;
    struct gw_held **held;
    size_t nheld, held_cap;
    gw_timer hold_timer; /* fires when the window closes: the flush */
    int hold_armed;      /* from the first hold until a flush found nothing more */
    int flush_due;       /* the window closed: the opening thread flushes it (its lock) */
    atomic_int hold_busy; /* hold_armed, read without the lock by purchases */
    gw *g;
} gw_item;

struct gw {
    const cfg *cfg;
    uint8_t id[16];
    char id_str[37];
    tb bucket;
    tb_global *gbucket; /* [token_bucket] scope = global (and a rate): used instead of bucket */
    gw_pending *pending;
    gw_results *results;
    gw_metrics metrics;
    mq *q;
    mq_topic *topic;
    int own_q;           /* q is ours, not the store's */
    sale_store *store;   /* stock, decisions, orders ([worker] inventory) */
    sale_reaper *reaper; /* embedded workers: cancels unpaid orders (pay_timeout_ms) */
    sk_worker *worker;
    sk_source source; /* what the embedded worker reads and decides with */
    sk_backend backend;
    sk_item_window *windows;
    gw_item *items;
    size_t nitems;
    int32_t *item_index; /* open addressing over items, -1 = empty */
    size_t index_mask;
    struct MHD_Daemon *mhd; /* thread park, and event park on poll */
    gw_http *http;          /* event park on epoll ([gateway] http_io) */
    gw_guard *guard;        /* request deadline and per-address cap, every mode */
    gw_limits *limits;      /* [limits] per-client buckets (admission.c) */
    gw_idem *idem;          /* Idempotency-Key bodies (admission.c) */
    struct {                /* decisions per second, measured (admission.c) */
        _Atomic uint64_t at_ns, outcomes, per_s_x1000;
    } drate;
    gw_wheel *wheel;        /* event park: deadlines of suspended requests */
    gw_slab *ctx_pool;      /* req_ctx objects with a body of up to CTX_POOL_BODY bytes */
    gw_rpcsvc *rpc;         /* the queue served to worker processes, when [rpc] listen is set */
    sk_registry *registry;  /* rpc with a Redis: announces the RPC address to workers */
    int event_park;
    uint16_t port;
    atomic_int stopping;
    atomic_int draining; /* SIGTERM came: /readyz says stopping, all else is served */
    atomic_int grace_over;   /* the stop's grace is over: the fair opening queues no more */
    struct gw_opening *opening; /* [admission] open_window_ms: the thread that flushes */
    uint64_t parked_at_stop; /* requests parked when the listener closed */
    atomic_uint inflight; /* POST /seckill requests not yet completed (answer sent) */
    /* What the admin API and a reload change, under ctl_lock: the token
     * bucket's settings, and the blocklist the embedded workers were given. */
    pthread_mutex_t ctl_lock;
    double tb_rate;
    uint32_t tb_burst;
    char **blocklist;
    size_t nblocklist;
    struct MHD_Daemon *admin; /* [admin] listen; NULL when off */
    uint16_t admin_port;
    unsigned char admin_digest[32]; /* SHA-256 of [admin] token */
};

enum phase { PH_READING, PH_PARKED, PH_ANSWERED };

/* What the checks of the moment (sold out, workers, the gates, the token
 * bucket) say of a purchase that passed the item checks: admit it, or the
 * refusal its answer gives (purchase.c). */
enum gw_verdict {
    GW_V_ADMIT,
    GW_V_SOLD_OUT,     /* 409 sold_out */
    GW_V_NO_WORKER,    /* 503: no worker consumed within lease_timeout_ms */
    GW_V_DEADLINE,     /* 503: the deadline gate */
    GW_V_BUSY,         /* 429 busy: the stock-coupled gate */
    GW_V_TOKEN_BUCKET, /* 429: the gateway's token bucket */
    GW_V_STOPPING,     /* 503: held through the fair opening until the gateway stopped */
    GW_V_INTERNAL,     /* 503: out of memory */
};

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
    char rl[96]; /* the RateLimit header of its answer ("" = none), admission.c */
    gw_item *gated; /* counted in gated->inflight until the request is over */
    gw_item *hold_item;       /* the fair opening held it (opening.c): set once, by the holder */
    struct gw_held *held;     /* while held, under hold_item->hold_lock */
    enum gw_verdict verdict;  /* parked and refused by the fair opening's flush */
    uint64_t verdict_wait_ns; /* GW_V_TOKEN_BUCKET: until the bucket has a token */
    size_t len;
    char body[];
} req_ctx;

/* ---- routes.c: the libmicrohttpd callbacks, cls = the gw ---- */
enum MHD_Result gw__on_request(void *cls, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version, const char *upload_data,
                               size_t *upload_data_size, void **con_cls);
void gw__on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                      enum MHD_RequestTerminationCode toe);

/* ---- purchase.c: POST /seckill ---- */
/* The headers are in: refuse a bad method, type or size (405, 415, 413), or
 * make the request's context. OUT: *con_cls, the context. */
enum MHD_Result gw__purchase_open(gw *g, struct MHD_Connection *conn, const char *method,
                                  void **con_cls);
/* A later call: take a body chunk, or answer once the body is in. */
enum MHD_Result gw__purchase_step(gw *g, struct MHD_Connection *conn, req_ctx *rc,
                                  const char *upload_data, size_t *upload_data_size);
/* The request is over (answered, reset or stopping): disarm what could
 * still wake it and drop MHD's reference; rc may be freed on return. */
void gw__purchase_close(gw *g, req_ctx *rc);

/* ---- admission.c ---- */
/* [limits]: g->limits. -EINVAL (message in err) or -ENOMEM. */
int gw__admission_init(gw *g, char *err, size_t errlen);
void gw__admission_release(gw *g);
/* [admission] require_token: the request's token must be valid for the
 * body's user and item; 1 when it answered (403, *ret), 0 to go on. */
int gw__admission_token(gw *g, struct MHD_Connection *conn, const gw_purchase *p, uint64_t t0,
                        enum MHD_Result *ret);
/* The same for the order endpoints: a token of order_user (NULL: of any
 * user, checked before the order is looked up). */
int gw__admission_order_token(gw *g, struct MHD_Connection *conn, const char *order_user,
                              enum MHD_Result *ret);
/* Per-client limits of a parsed purchase: 1 when it answered (429, *ret
 * the MHD result), 0 to go on, with rc->rl set for the answer. */
int gw__admission_limits(gw *g, struct MHD_Connection *conn, req_ctx *rc, const gw_purchase *p,
                         uint64_t t0, enum MHD_Result *ret);
/* Idempotency-Key (idempotency.h): 1 when it answered (400 bad key, 422
 * key reused with another body, the known outcome, 202 while the first is
 * parked here; *ret), 0 to go on: *keyed set, and then id is the request's. */
int gw__admission_idempotency(gw *g, struct MHD_Connection *conn, const gw_purchase *p,
                              uint64_t t0, uint8_t id[16], int *keyed, enum MHD_Result *ret);
/* [admission] inflight_factor: 1 when the item has too many requests in
 * flight (the caller answers 429 busy); 0 to go on, the request then counted
 * in flight for it (rc->gated) until gw__admission_gate_release. Needs no
 * connection: the fair opening calls it off the HTTP threads. */
int gw__admission_gate(gw *g, req_ctx *rc, gw_item *it);
/* [admission] deadline_gate: 1 when the queue would outlast wait_timeout_ms
 * at the measured decision rate (the caller answers 503, nothing queued). */
int gw__admission_deadline(gw *g, uint64_t now);
void gw__admission_gate_release(req_ctx *rc);
/* The 429 of the gateway's token bucket, wait_ns until it has a token. */
enum MHD_Result gw__admission_gateway_refused(gw *g, struct MHD_Connection *conn, req_ctx *rc,
                                              uint64_t t0, uint64_t wait_ns);
/* Put rc's RateLimit headers on the next answer this thread makes. */
void gw__admission_headers(gw *g, const req_ctx *rc);

/* ---- purchase.c: what opening.c calls ---- */
/* The checks of the moment at now for rc's purchase of it. OUT: *wait_ns for
 * GW_V_TOKEN_BUCKET. GW_V_ADMIT takes a token and may count rc in flight
 * (rc->gated). */
enum gw_verdict gw__purchase_verdict(gw *g, req_ctx *rc, gw_item *it, uint64_t now,
                                     uint64_t *wait_ns);
/* A held (parked, not yet produced) request: produce its message, or refuse
 * it with v; either way its connection gets its answer. */
void gw__purchase_release_held(gw *g, req_ctx *rc, const mq_record *rec);
void gw__purchase_refuse_held(gw *g, req_ctx *rc, enum gw_verdict v, uint64_t wait_ns);
void gw__purchase_ref(req_ctx *rc);
void gw__purchase_unref(req_ctx *rc);

/* ---- opening.c: [admission] open_window_ms, the fair opening ---- */
void gw__opening_init_item(gw *g, gw_item *it);
/* The thread that releases closed windows (off the timer wheel's thread, so
 * a large window does not hold up the deadlines); none when the fair
 * opening is off. Stop it after the timer wheel, before the items go. */
int gw__opening_start(gw *g, char *err, size_t errlen);
void gw__opening_stop(gw *g);
void gw__opening_release(gw *g);
/* 1 when a purchase of it arriving at now_ms (unix ms) falls in its window. */
int gw__opening_open(const gw *g, const gw_item *it, int64_t now_ms);
/* Hold rc (parked, its connection suspended) until the window closes, with
 * the message rec to produce then. 0, or -ENOMEM (nothing held). */
int gw__opening_hold(gw *g, gw_item *it, req_ctx *rc, const mq_record *rec, int64_t now_ms);
/* rc is being answered or its connection is closing: forget it if it is
 * still held (never queued then). 1 when it was. */
int gw__opening_forget(req_ctx *rc);

/* ---- answer.c ---- */
/* gw__on_request, on each call: the request this thread now serves, named by
 * the access line of its answer ([log] access_sample). */
void gw__access_begin(gw *g, const char *method, const char *url);
/* The client's request id (X-Request-Id or traceparent, request.h).
 * OUT: out, SK_TRACE_MAX + 1 bytes. 1 when there is one. */
int gw__client_id(struct MHD_Connection *conn, char *out);
/* The id an answer carries: the client's (in buf, SK_TRACE_MAX + 1 bytes),
 * else request_id, else with fresh a new UUID in buf, else NULL. */
const char *gw__answer_id(struct MHD_Connection *conn, const char *request_id, int fresh,
                          char *buf);
/* The access line of an answer just queued, when its request is sampled:
 * method, path, status, latency since the request was in, id, client. */
void gw__access_line(struct MHD_Connection *conn, unsigned status, const char *id);
/* RateLimit-Policy and RateLimit for the next gw__reply on this thread
 * (both must stay valid until then); that reply clears them. */
void gw__answer_ratelimit(const char *policy, const char *state);
/* Queue a JSON answer; request_id and the extra header hname may be NULL. */
enum MHD_Result gw__reply(struct MHD_Connection *conn, unsigned status, const char *body,
                          size_t len, const char *request_id, const char *hname,
                          const char *hvalue);
enum MHD_Result gw__reply_str(struct MHD_Connection *conn, unsigned status, const char *body);
/* Queue r (any body) with the headers every answer gets (CORS, Connection:
 * close when the framing asks for it), then destroy it. */
enum MHD_Result gw__queue(struct MHD_Connection *conn, unsigned status, struct MHD_Response *r);
/* gw__reply for POST /seckill, counted under a and timed from t0. */
enum MHD_Result gw__answer(gw *g, struct MHD_Connection *conn, uint64_t t0, enum gw_answer a,
                           unsigned status, const char *body, size_t len, const char *request_id,
                           const char *hname, const char *hvalue);
/* 503 overloaded with Retry-After: nothing was or will be bought; counted
 * under why. */
enum MHD_Result gw__answer_overloaded(gw *g, struct MHD_Connection *conn, uint64_t t0,
                                      enum gw_overload why, const char *request_id);
/* The answer to POST /seckill for a decided outcome. */
enum MHD_Result gw__answer_outcome(gw *g, struct MHD_Connection *conn, uint64_t t0,
                                   const sk_outcome *o, const char *rid);
/* 504: the outcome is not known yet; rid stays queryable. */
enum MHD_Result gw__answer_timeout(gw *g, struct MHD_Connection *conn, uint64_t t0,
                                   const uint8_t id[16], const char *rid);
/* The JSON body and status for an outcome, shared by POST /seckill and
 * GET /seckill/result. OUT: buf, *len. */
unsigned gw__outcome_body(gw *g, const sk_outcome *o, const char *rid, char *buf, size_t cap,
                          int *len);

/* ---- items.c ---- */
/* Build the item table and its index from the config; -ENOMEM. */
int gw__items_init(gw *g);
gw_item *gw__item_find(gw *g, const char *id);
/* A stock figure from a worker or the store. */
void gw__item_report(gw_item *it, int64_t left);
/* Stock left as this process knows it without a round trip. */
int64_t gw__item_left(const gw *g, const gw_item *it);
/* upcoming, on_sale, sold_out or ended, at now (unix seconds) */
const char *gw__item_status(const gw_item *it, int64_t left, int64_t now);
enum MHD_Result gw__get_item(gw *g, struct MHD_Connection *conn, const char *id);

/* ---- the other endpoints, one file each ---- */
enum MHD_Result gw__get_result(gw *g, struct MHD_Connection *conn, const char *rid);
enum MHD_Result gw__orders(gw *g, struct MHD_Connection *conn, const char *method,
                           const char *path);
enum MHD_Result gw__get_metrics(gw *g, struct MHD_Connection *conn);
enum MHD_Result gw__livez(struct MHD_Connection *conn);
enum MHD_Result gw__readyz(gw *g, struct MHD_Connection *conn);

enum MHD_Result gw__get_stats(gw *g, struct MHD_Connection *conn);
enum MHD_Result gw__get_dashboard(struct MHD_Connection *conn);

/* ---- cors.c ---- */
/* Decide the CORS origin of the request on conn for this thread's call of
 * the access handler; returns what gw__cors_end restores. */
const char *gw__cors_begin(const gw *g, struct MHD_Connection *conn);
void gw__cors_end(const char *prev);
/* An OPTIONS from an allowed origin: answered by gw__cors_answer_preflight. */
int gw__cors_preflight(const char *method);
enum MHD_Result gw__cors_answer_preflight(struct MHD_Connection *conn);
/* Access-Control-Allow-Origin and Vary on r when the origin is allowed. */
void gw__cors_headers(struct MHD_Response *r);

/* ---- admin.c ---- */
/* Serve the admin API on [admin] listen; sets g->admin_port. */
int gw__admin_start(gw *g, char *err, size_t errlen);
void gw__admin_stop(gw *g);
/* Give the embedded workers g's blocklist and windows (under ctl_lock). */
int gw__risk_apply(gw *g);
/* g's blocklist becomes a copy of list[0..n) (under ctl_lock); -ENOMEM
 * leaves it as it was. */
int gw__blocklist_replace(gw *g, char *const *list, size_t n);

/* ---- link.c ---- */
/* The stock view of item i, from the store (sale_reaper_config.stock). */
void gw__on_store_stock(void *arg, size_t i, int64_t left);
/* Embedded mode: the worker threads and the reaper. */
int gw__workers_start(gw *g, char *err, size_t errlen);
/* [rpc] listen: serve the queue to worker processes, announce it. */
int gw__rpc_start(gw *g, char *err, size_t errlen);

#endif
