/*
 * answer.c - every answer the gateway queues goes through gw__reply: JSON,
 * the request id when there is one, Connection: close when the framing asks
 * for it. POST /seckill answers through gw__answer, which counts and times
 * them for /metrics.
 */
#include <stdio.h>
#include <string.h>

#include "framing.h"
#include "internal.h"

/* Set by gw__answer_ratelimit just before an answer is made on this thread,
 * taken by that answer: no other call of the answer functions carries them. */
static _Thread_local const char *rl_policy, *rl_state;

void gw__answer_ratelimit(const char *policy, const char *state)
{
    rl_policy = policy;
    rl_state = state;
}

enum MHD_Result gw__reply(struct MHD_Connection *conn, unsigned status, const char *body,
                          size_t len, const char *request_id, const char *hname, const char *hvalue)
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
    gw__cors_headers(r);
    if (gw_frame_must_close(conn))
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
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
    return gw__reply(conn, status, body, len, request_id, hname, hvalue);
}

enum MHD_Result gw__answer_overloaded(gw *g, struct MHD_Connection *conn, uint64_t t0,
                                      const char *request_id)
{
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

enum MHD_Result gw__answer_outcome(gw *g, struct MHD_Connection *conn, uint64_t t0,
                                   const sk_outcome *o, const char *rid)
{
    char buf[512];
    int n;
    unsigned status = gw__outcome_body(g, o, rid, buf, sizeof buf, &n);
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
