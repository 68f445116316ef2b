/*
 * answer.c - every answer the gateway queues goes through gw__reply: JSON,
 * the request id when there is one, Connection: close when the framing asks
 * for it. POST /seckill answers through gw__answer, which counts and times
 * them for /metrics and gives every one an id.
 *
 * Request ids: a client's own (X-Request-Id or traceparent, request.h) is
 * echoed in X-Request-Id by every answer; otherwise an admitted purchase
 * carries the gateway's id for it (the one GET /seckill/result takes) and a
 * purchase refused before admission a fresh UUID, so each one can be found
 * in the logs.
 *
 * Access lines: gw__on_request notes on its thread which request it serves
 * (gw__access_begin); gw__reply, on the same thread and call, writes the
 * line for the answer it queues when the request is in the sample.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <uuid/uuid.h>

#include "framing.h"
#include "internal.h"
#include "log.h"
#include "request.h"
#include "uuid4.h"

/* Set by gw__answer_ratelimit just before an answer is made on this thread,
 * taken by that answer: no other call of the answer functions carries them. */
static _Thread_local const char *rl_policy, *rl_state;

void gw__answer_ratelimit(const char *policy, const char *state)
{
    rl_policy = policy;
    rl_state = state;
}

/* the request this HTTP thread is answering, for its access line */
static _Thread_local struct {
    gw *g;
    const char *method, *url;
    uint64_t t0;
    uint64_t rng; /* xorshift64 state of the sample draws */
} cur;

void gw__access_begin(gw *g, const char *method, const char *url)
{
    cur.g = g->cfg->log_access_sample > 0 ? g : NULL;
    if (!cur.g)
        return;
    cur.method = method;
    cur.url = url;
    cur.t0 = gw_mono_ns();
}

static int sampled(double share)
{
    if (share >= 1)
        return 1;
    while (!cur.rng)
        if (getrandom(&cur.rng, sizeof cur.rng, 0) != sizeof cur.rng)
            cur.rng = gw_mono_ns();
    cur.rng ^= cur.rng << 13;
    cur.rng ^= cur.rng >> 7;
    cur.rng ^= cur.rng << 17;
    return (double)(cur.rng >> 11) * 0x1.0p-53 < share;
}

void gw__access_line(struct MHD_Connection *conn, unsigned status, const char *id)
{
    gw *g = cur.g;
    if (!g || !sampled(g->cfg->log_access_sample))
        return;
    char addr[INET6_ADDRSTRLEN] = "-";
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, addr, sizeof addr);
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, addr, sizeof addr);
    uint64_t us = (gw_mono_ns() - cur.t0) / 1000;
    sk_log_always(SK_LOG_INFO, "access", id, "%s %s %u %llu.%03llums client=%s",
                  cur.method ? cur.method : "-", cur.url ? cur.url : "-", status,
                  (unsigned long long)(us / 1000), (unsigned long long)(us % 1000), addr);
}

int gw__client_id(struct MHD_Connection *conn, char *out)
{
    return gw_client_request_id(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id"),
                                MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "traceparent"),
                                out);
}

const char *gw__answer_id(struct MHD_Connection *conn, const char *request_id, int fresh, char *buf)
{
    if (gw__client_id(conn, buf))
        return buf;
    if (request_id || !fresh)
        return request_id;
    uint8_t id[16];
    sk_uuid4(id);
    uuid_unparse_lower(id, buf);
    return buf;
}

/* gw__reply with the answer's id already resolved (gw__answer_id) */
static enum MHD_Result reply_as(struct MHD_Connection *conn, unsigned status, const char *body,
                                size_t len, const char *request_id, const char *hname,
                                const char *hvalue)
{
    const char *policy = rl_policy, *state = rl_state;
    rl_policy = rl_state = NULL;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (request_id)
        MHD_add_response_header(r, "X-Request-Id", request_id);
    if (hname)
        MHD_add_response_header(r, hname, hvalue);
    if (state) {
        if (policy && policy[0])
            MHD_add_response_header(r, "RateLimit-Policy", policy);
        MHD_add_response_header(r, "RateLimit", state);
    }
    return gw__queue(conn, status, r);
}

enum MHD_Result gw__queue(struct MHD_Connection *conn, unsigned status, struct MHD_Response *r)
{
    /* an answer made elsewhere than gw__reply echoes the client's id too */
    char cid[SK_TRACE_MAX + 1];
    const char *id = MHD_get_response_header(r, "X-Request-Id");
    if (!id && gw__client_id(conn, cid) &&
        MHD_add_response_header(r, "X-Request-Id", cid) == MHD_YES)
        id = cid;
    gw__cors_headers(r);
    if (gw_frame_must_close(conn))
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    gw__access_line(conn, status, id); /* id may live in r */
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result gw__reply(struct MHD_Connection *conn, unsigned status, const char *body,
                          size_t len, const char *request_id, const char *hname, const char *hvalue)
{
    char cid[SK_TRACE_MAX + 1];
    return reply_as(conn, status, body, len, gw__answer_id(conn, request_id, 0, cid), hname,
                    hvalue);
}

enum MHD_Result gw__reply_str(struct MHD_Connection *conn, unsigned status, const char *body)
{
    return gw__reply(conn, status, body, strlen(body), NULL, NULL, NULL);
}

enum MHD_Result gw__answer(gw *g, struct MHD_Connection *conn, uint64_t t0, enum gw_answer a,
                           unsigned status, const char *body, size_t len, const char *request_id,
                           const char *hname, const char *hvalue)
{
    gw_metrics_answer(&g->metrics, a, gw_mono_ns() - t0);
    char buf[SK_TRACE_MAX + 1];
    /* refused before admission: a fresh one */
    request_id = gw__answer_id(conn, request_id, 1, buf);
    if (cur.g)
        cur.t0 = t0; /* the purchase's latency, parked time included */
    return reply_as(conn, status, body, len, request_id, hname, hvalue);
}

enum MHD_Result gw__answer_overloaded(gw *g, struct MHD_Connection *conn, uint64_t t0,
                                      enum gw_overload why, const char *request_id)
{
    gw_metrics_overloaded(&g->metrics, why);
    return gw__answer(g, conn, t0, GW_A_OVERLOADED, 503, J("{\"result\":\"overloaded\"}"),
                      request_id, "Retry-After", "1");
}

static enum gw_answer answer_of(enum sk_result r)
{
    switch (r) {
    case SK_SUCCESS:
        return GW_A_SUCCESS;
    case SK_SOLD_OUT:
        return GW_A_SOLD_OUT;
    case SK_ALREADY_PURCHASED:
        return GW_A_ALREADY_PURCHASED;
    case SK_NOT_STARTED:
        return GW_A_NOT_STARTED;
    case SK_ENDED:
        return GW_A_ENDED;
    case SK_BLOCKED:
        return GW_A_BLOCKED;
    case SK_EXPIRED:
        return GW_A_TIMEOUT;
    case SK_UNKNOWN_ITEM:
        return GW_A_UNKNOWN_ITEM;
    default:
        return GW_A_OVERLOADED;
    }
}

unsigned gw__outcome_body(gw *g, const sk_outcome *o, const char *rid, char *buf, size_t cap,
                          int *len)
{
    const gw_item *it;
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
        it = gw__item_find(g, o->item_id);
        *len = snprintf(buf, cap, "{\"result\":\"not_started\",\"starts_at\":%lld}",
                        it ? (long long)atomic_load(&it->starts_at) : 0LL);
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

enum MHD_Result gw__answer_outcome(gw *g, struct MHD_Connection *conn, uint64_t t0,
                                   const sk_outcome *o, const char *rid)
{
    char buf[512];
    int n;
    unsigned status = gw__outcome_body(g, o, rid, buf, sizeof buf, &n);
    if (answer_of(o->result) == GW_A_OVERLOADED)
        gw_metrics_overloaded(&g->metrics, GW_OV_INTERNAL);
    return gw__answer(g, conn, t0, answer_of(o->result), status, buf, (size_t)n, rid, NULL, NULL);
}

/* The request id goes into the result store as undecided, so
 * GET /seckill/result answers 202 pending until the outcome comes (and then
 * the outcome). */
enum MHD_Result gw__answer_timeout(gw *g, struct MHD_Connection *conn, uint64_t t0,
                                   const uint8_t id[16], const char *rid)
{
    char buf[128];
    sk_outcome o = {.result = SK_UNAVAILABLE};
    memcpy(o.gateway_id, g->id, 16);
    memcpy(o.request_id, id, 16);
    gw_results_put(g->results, &o, gw_mono_ns());
    int n = snprintf(buf, sizeof buf, "{\"result\":\"timeout\",\"request_id\":\"%s\"}", rid);
    return gw__answer(g, conn, t0, GW_A_TIMEOUT, 504, buf, (size_t)n, rid, NULL, NULL);
}
