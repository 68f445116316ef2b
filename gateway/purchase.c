/*
 * purchase.c - POST /seckill, from its headers to its answer.
 *
 * gw__purchase_open refuses a bad method, type or size on the headers and
 * makes the request's context (pooled when the body is small);
 * gw__purchase_step collects the body and then runs the admission checks of
 * gateway.h in order (purchase), each answering without going further. An
 * admitted request gets an id, is parked in the pending table and produced
 * to the request topic; it waits there for its outcome (on_outcome in
 * link.c completes the waiter) or its deadline (504):
 *   thread park: the MHD thread blocks in gw_pending_wait (park_thread);
 *   event park: the connection is suspended (park_event); the outcome or the
 *     deadline timer resumes it (resume_once), and the next call answers
 *     (finish_parked).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uuid/uuid.h>

#include "framing.h"
#include "internal.h"
#include "log.h"
#include "request.h"
#include "uuid4.h"

void gw__purchase_ref(req_ctx *rc)
{
    atomic_fetch_add(&rc->refs, 1);
}

void gw__purchase_unref(req_ctx *rc)
{
    if (atomic_fetch_sub(&rc->refs, 1) != 1)
        return;
    if (rc->pooled)
        gw_slab_free(rc->g->ctx_pool, rc);
    else
        free(rc);
}

/* The first of outcome, deadline, produce failure and the fair opening's
 * refusal to claim the resume resumes; what it writes into rc before
 * resume_now is what finish_parked reads. */
static int resume_claim(req_ctx *rc)
{
    int expected = 0;
    return atomic_compare_exchange_strong(&rc->resumed, &expected, 1);
}

static void resume_now(req_ctx *rc)
{
    if (rc->loop)
        gw_http_resume(rc->loop, rc->conn);
    else
        MHD_resume_connection(rc->conn);
}

static void resume_once(req_ctx *rc)
{
    if (resume_claim(rc))
        resume_now(rc);
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
    gw__purchase_unref(rc);
}

/* Event park: the waiter in the pending table and the deadline timer armed
 * (t0 + wait_timeout_ms), then the connection suspended. */
static void park_arm(gw *g, struct MHD_Connection *conn, req_ctx *rc, const uint8_t id[16],
                     const char *rid, uint64_t t0)
{
    memset(&rc->w, 0, sizeof rc->w);
    memcpy(rc->w.id, id, 16);
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
}

/* A parked request's message to the queue; when it does not fit, the
 * request is answered 503 (never queued) unless its deadline answered it
 * first. produce_failed is written before the resume is claimed; for a held
 * request, under its item's hold_lock, which finish_parked takes before it
 * reads it. */
static void park_produce(gw *g, req_ctx *rc, const mq_record *rec)
{
    if (mq_produce(g->topic, rec, NULL, NULL) < 0) {
        atomic_fetch_add_explicit(&g->metrics.queue_full, 1, memory_order_relaxed);
        rc->produce_failed = 1;
        if (gw_pending_cancel(g->pending, &rc->w) == 0)
            resume_once(rc);
    }
}

/* Event park: suspend the connection, produce, return. The outcome callback
 * or the deadline timer resumes it and MHD calls the access handler again,
 * which lands in finish_parked. Suspending before producing means a resume
 * can never come before the suspend. */
static enum MHD_Result park_event(gw *g, struct MHD_Connection *conn, req_ctx *rc, const sk_msg *m,
                                  const mq_record *rec, const char *rid, uint64_t t0)
{
    park_arm(g, conn, rc, m->request_id, rid, t0);
    park_produce(g, rc, rec);
    return MHD_YES;
}

void gw__purchase_release_held(gw *g, req_ctx *rc, const mq_record *rec)
{
    park_produce(g, rc, rec);
}

void gw__purchase_refuse_held(gw *g, req_ctx *rc, enum gw_verdict v, uint64_t wait_ns)
{
    /* written whoever resumes it (its deadline may have, meanwhile): never
     * queued, so the refusal is its answer; read as park_produce says */
    rc->verdict = v;
    rc->verdict_wait_ns = wait_ns;
    if (gw_pending_cancel(g->pending, &rc->w) == 0)
        resume_once(rc);
}

/* The answer of a refusing verdict. */
static enum MHD_Result answer_verdict(gw *g, struct MHD_Connection *conn, req_ctx *rc,
                                      enum gw_verdict v, uint64_t t0, uint64_t wait_ns)
{
    switch (v) {
    case GW_V_SOLD_OUT:
        return gw__answer(g, conn, t0, GW_A_SOLD_OUT, 409, J("{\"result\":\"sold_out\"}"), NULL,
                          NULL, NULL);
    case GW_V_NO_WORKER:
        return gw__answer_overloaded(g, conn, t0, GW_OV_NO_WORKER, NULL);
    case GW_V_DEADLINE:
        return gw__answer_overloaded(g, conn, t0, GW_OV_QUEUE_FULL, NULL);
    case GW_V_BUSY:
        return gw__answer(g, conn, t0, GW_A_BUSY, 429, J("{\"result\":\"busy\"}"), NULL,
                          "Retry-After", "1");
    case GW_V_TOKEN_BUCKET:
        return gw__admission_gateway_refused(g, conn, rc, t0, wait_ns);
    case GW_V_STOPPING:
        return gw__answer_overloaded(g, conn, t0, GW_OV_STOPPING, NULL);
    case GW_V_INTERNAL:
    case GW_V_ADMIT:
        break;
    }
    return gw__answer_overloaded(g, conn, t0, GW_OV_INTERNAL, NULL);
}

/* Event park: the connection was resumed; answer with what woke it. */
static enum MHD_Result finish_parked(gw *g, struct MHD_Connection *conn, req_ctx *rc)
{
    /* held by the fair opening: still held means its deadline came first and
     * it was never queued (taken back here, the flush skips it); else the
     * flush is done with it and what it wrote is visible after the lock */
    int never_queued = rc->hold_item && gw__opening_forget(rc);
    int done = gw_pending_cancel(g->pending, &rc->w) == -EALREADY;
    if (gw_wheel_del(g->wheel, &rc->timer) == 0)
        gw__purchase_unref(rc); /* the timer will not fire: drop its reference */
    rc->phase = PH_ANSWERED;
    gw__admission_headers(g, rc);
    if (done)
        return gw__answer_outcome(g, conn, rc->t0, &rc->w.out, rc->rid);
    if (never_queued)
        return answer_verdict(
            g, conn, rc, atomic_load(&g->grace_over) ? GW_V_STOPPING : GW_V_DEADLINE, rc->t0, 0);
    if (rc->verdict != GW_V_ADMIT)
        return answer_verdict(g, conn, rc, rc->verdict, rc->t0, rc->verdict_wait_ns);
    if (rc->produce_failed)
        return gw__answer_overloaded(g, conn, rc->t0, GW_OV_QUEUE_FULL, rc->rid);
    return gw__answer_timeout(g, conn, rc->t0, rc->w.id, rc->rid);
}

/* Thread park: this MHD thread waits for the outcome or the deadline. */
static enum MHD_Result park_thread(gw *g, struct MHD_Connection *conn, const sk_msg *m,
                                   const mq_record *rec, const char *rid, uint64_t t0)
{
    gw_waiter w;
    if (gw_waiter_init(&w, m->request_id) < 0)
        return gw__answer_overloaded(g, conn, t0, GW_OV_INTERNAL, rid);
    gw_pending_add(g->pending, &w);
    if (mq_produce(g->topic, rec, NULL, NULL) < 0) {
        gw_pending_cancel(g->pending, &w); /* nobody can complete it: never produced */
        gw_waiter_release(&w);
        atomic_fetch_add_explicit(&g->metrics.queue_full, 1, memory_order_relaxed);
        return gw__answer_overloaded(g, conn, t0, GW_OV_QUEUE_FULL, rid);
    }
    uint64_t deadline = t0 + (uint64_t)g->cfg->wait_timeout_ms * 1000000ULL;
    int wrc = gw_pending_wait(g->pending, &w, deadline);
    gw_waiter_release(&w);
    if (wrc == -ETIMEDOUT) {
        uint64_t now = gw_mono_ns();
        gw_metrics_lateness(&g->metrics, now > deadline ? now - deadline : 0);
        return gw__answer_timeout(g, conn, t0, m->request_id, rid);
    }
    return gw__answer_outcome(g, conn, t0, &w.out, rid);
}

/* The request message of an admitted purchase: a request id (id, or a fresh
 * one) in m and rid, encoded into wire (SK_MSG_MAX bytes) and described by
 * rec. 0, or -1 when it does not encode. */
static int build(gw *g, struct MHD_Connection *conn, const gw_purchase *p, const uint8_t *id,
                 sk_msg *m, char rid[37], uint8_t *wire, mq_record *rec)
{
    if (id) /* Idempotency-Key: the id its body and key make */
        memcpy(m->request_id, id, 16);
    else
        sk_uuid4(m->request_id);
    uuid_unparse_lower(m->request_id, rid);
    memcpy(m->gateway_id, g->id, 16);
    m->admitted_at_ms = sk_wall_ms();
    m->deadline_ms = m->admitted_at_ms + g->cfg->wait_timeout_ms;
    memcpy(m->user_id, p->user_id, sizeof m->user_id);
    memcpy(m->item_id, p->item_id, sizeof m->item_id);
    gw__client_id(conn, m->trace); /* the worker's lines about it carry the client's id */
    sk_log(SK_LOG_DEBUG, "gateway", m->trace[0] ? m->trace : rid, "admitted item=%s user=%s",
           m->item_id, m->user_id);
    int wl = sk_msg_encode(m, wire, SK_MSG_MAX);
    if (wl < 0)
        return -1;
    *rec = (mq_record){.key = m->user_id,
                       .key_len = strlen(m->user_id),
                       .value = wire,
                       .value_len = (size_t)wl,
                       .partition = MQ_PARTITION_ANY};
    return 0;
}

/* Admitted: a message, a parked waiter. With hold_in (the fair opening),
 * parked now and its message produced when hold_in's window closes
 * (opening.c); its deadline still runs from its arrival. */
static enum MHD_Result admit(gw *g, struct MHD_Connection *conn, req_ctx *rc, const gw_purchase *p,
                             const uint8_t *id, uint64_t t0, gw_item *hold_in, int64_t now_ms)
{
    sk_msg m;
    char rid[37];
    uint8_t wire[SK_MSG_MAX];
    mq_record rec;
    if (build(g, conn, p, id, &m, rid, wire, &rec) < 0)
        return gw__answer_overloaded(g, conn, t0, GW_OV_INTERNAL, rid);
    if (hold_in) {
        park_arm(g, conn, rc, m.request_id, rid, t0);
        if (gw__opening_hold(g, hold_in, rc, &rec, now_ms) < 0)
            gw__purchase_refuse_held(g, rc, GW_V_INTERNAL, 0); /* out of memory: never queued */
        return MHD_YES;
    }
    if (g->event_park)
        return park_event(g, conn, rc, &m, &rec, rid, t0);
    gw__admission_headers(g, rc);
    return park_thread(g, conn, &m, &rec, rid, t0);
}

enum gw_verdict gw__purchase_verdict(gw *g, req_ctx *rc, gw_item *it, uint64_t now,
                                     uint64_t *wait_ns)
{
    if (atomic_load_explicit(&it->sold_out, memory_order_relaxed))
        return GW_V_SOLD_OUT;
    if (mq_group_live(g->topic, SK_GROUP) == 0)
        return GW_V_NO_WORKER;
    if (gw__admission_deadline(g, now))
        return GW_V_DEADLINE;
    if (gw__admission_gate(g, rc, it))
        return GW_V_BUSY;
    if (g->gbucket ? !tb_global_take(g->gbucket, now) : !tb_take(&g->bucket, now)) {
        gw__admission_gate_release(rc);
        atomic_fetch_add_explicit(&g->metrics.tb_rejections, 1, memory_order_relaxed);
        *wait_ns = g->gbucket ? tb_global_wait_ns(g->gbucket, now) : tb_wait_ns(&g->bucket, now);
        return GW_V_TOKEN_BUCKET;
    }
    return GW_V_ADMIT;
}

/* The checks of gateway.h after framing, method, type and size. */
static enum MHD_Result purchase(gw *g, struct MHD_Connection *conn, req_ctx *rc)
{
    uint64_t t0 = gw_mono_ns();
    char buf[512];
    gw_purchase p;

    if (rc->too_large)
        return gw__answer(g, conn, t0, GW_A_PAYLOAD_TOO_LARGE, 413,
                          J("{\"result\":\"payload_too_large\"}"), NULL, NULL, NULL);
    if (gw_parse_purchase(rc->body, rc->len, &p, buf, sizeof buf) < 0)
        return gw__answer(g, conn, t0, GW_A_BAD_REQUEST, 400, buf, strlen(buf), NULL, NULL, NULL);
    enum MHD_Result ret;
    uint8_t id[16];
    int keyed = 0;
    if (gw__admission_token(g, conn, &p, t0, &ret) ||
        gw__admission_limits(g, conn, rc, &p, t0, &ret) ||
        gw__admission_idempotency(g, conn, &p, t0, id, &keyed, &ret))
        return ret;

    gw_item *it = gw__item_find(g, p.item_id);
    if (!it)
        return gw__answer(g, conn, t0, GW_A_UNKNOWN_ITEM, 404, J("{\"result\":\"unknown_item\"}"),
                          NULL, NULL, NULL);
    /* the precise clock: time() is the coarse one, up to a tick behind, and
     * would answer not_started in the first milliseconds of a sale */
    int64_t now_ms = (int64_t)sk_wall_ms(), now_s = now_ms / 1000;
    int64_t starts_at = atomic_load_explicit(&it->starts_at, memory_order_relaxed);
    int64_t ends_at = atomic_load_explicit(&it->ends_at, memory_order_relaxed);
    if (starts_at && now_s < starts_at) {
        int n = snprintf(buf, sizeof buf, "{\"result\":\"not_started\",\"starts_at\":%lld}",
                         (long long)starts_at);
        return gw__answer(g, conn, t0, GW_A_NOT_STARTED, 409, buf, (size_t)n, NULL, NULL, NULL);
    }
    if (ends_at && now_s >= ends_at)
        return gw__answer(g, conn, t0, GW_A_ENDED, 409, J("{\"result\":\"ended\"}"), NULL, NULL,
                          NULL);
    if (gw__opening_open(g, it, now_ms) && !atomic_load(&it->sold_out) &&
        !atomic_load(&g->grace_over))
        return admit(g, conn, rc, &p, keyed ? id : NULL, t0, it, now_ms);
    uint64_t wait = 0;
    enum gw_verdict v = gw__purchase_verdict(g, rc, it, t0, &wait);
    if (v != GW_V_ADMIT)
        return answer_verdict(g, conn, rc, v, t0, wait);
    return admit(g, conn, rc, &p, keyed ? id : NULL, t0, NULL, 0);
}

enum MHD_Result gw__purchase_open(gw *g, struct MHD_Connection *conn, const char *method,
                                  void **con_cls)
{
    uint64_t t0 = gw_mono_ns();
    if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
        return gw__answer(g, conn, t0, GW_A_METHOD_NOT_ALLOWED, 405,
                          J("{\"result\":\"method_not_allowed\"}"), NULL, "Allow", "POST");
    const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
    if (!gw_is_json_type(ct))
        return gw__answer(g, conn, t0, GW_A_UNSUPPORTED_MEDIA_TYPE, 415,
                          J("{\"result\":\"unsupported_media_type\"}"), NULL, NULL, NULL);
    size_t cap; /* a parked request keeps only what it needs */
    if (gw_frame_declared_body(conn, g->cfg->body_limit, &cap) < 0)
        return gw__answer(g, conn, t0, GW_A_PAYLOAD_TOO_LARGE, 413,
                          J("{\"result\":\"payload_too_large\"}"), NULL, NULL, NULL);
    int pooled = cap <= CTX_POOL_BODY;
    req_ctx *rc = pooled ? gw_slab_alloc(g->ctx_pool) : malloc(sizeof *rc + cap + 1);
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

enum MHD_Result gw__purchase_step(gw *g, struct MHD_Connection *conn, req_ctx *rc,
                                  const char *upload_data, size_t *upload_data_size)
{
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

void gw__purchase_close(gw *g, req_ctx *rc)
{
    if (rc->hold_item) /* first: the fair opening's flush queues nothing of it after this */
        gw__opening_forget(rc);
    if (rc->phase == PH_PARKED) {
        /* ended while parked (connection reset, daemon stopping): leave
         * nothing behind that could wake freed memory */
        gw_pending_cancel(g->pending, &rc->w);
        if (gw_wheel_del(g->wheel, &rc->timer) == 0)
            gw__purchase_unref(rc);
    }
    gw__admission_gate_release(rc);
    gw__purchase_unref(rc);
    atomic_fetch_sub(&g->inflight, 1); /* its answer is out (or the client went away) */
}
