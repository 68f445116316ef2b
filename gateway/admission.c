/*
 * admission.c - what POST /seckill passes after its body parses and before
 * the item checks and the gateway's token bucket: with [admission]
 * require_token a signed token of the body's user and item (admit_token.h;
 * 403 bad_token), then the per-client limits (client_limits.h) by client
 * address and by user id (429 with its scope, Retry-After and the RateLimit
 * headers), then Idempotency-Key (idempotency.h). After the item checks,
 * the stock-coupled gate: at most k x (stock left - in flight) requests of an
 * item in flight on this gateway (429 busy). The order endpoints ask here for
 * the token of the order's user.
 *
 * RateLimit headers (IETF httpapi ratelimit-headers draft): RateLimit-Policy
 * names every limit a purchase passes ("user", "ip", "gateway": q = burst,
 * w = seconds an empty bucket takes to fill); RateLimit gives, per limit the
 * request was checked against, r = the requests it would still admit now and
 * t = seconds until its bucket is full. Admitted answers carry the values of
 * the admission (kept in the request's context until its answer), 429s the
 * values of the refusal.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uuid/uuid.h>

#include "admit_token.h"

#include "internal.h"
#include "request.h"

int gw__admission_init(gw *g, char *err, size_t errlen)
{
    const cfg *c = g->cfg;
    gw_limits_cfg lc = {.rate = {c->lim_user_rate, c->lim_ip_rate},
                        .burst = {c->lim_user_burst, c->lim_ip_burst},
                        .capacity = c->lim_capacity,
                        .proxies = (const char *const *)c->lim_proxies,
                        .nproxies = c->nlim_proxies,
                        .forwarded = !strcmp(c->lim_client_header, "forwarded"),
                        .gateway_rate = c->tb_rate,
                        .gateway_burst = c->tb_burst};
    int rc = gw_limits_create(&lc, &g->limits, err, errlen);
    if (rc < 0)
        return rc;
    rc = gw_idem_create(c->adm_idem_capacity, (uint64_t)c->adm_idem_ttl_s * 1000000000ULL,
                        &g->idem);
    if (rc < 0)
        snprintf(err, errlen, "Idempotency-Key table: %s", strerror(-rc));
    return rc;
}

void gw__admission_release(gw *g)
{
    gw_limits_destroy(g->limits);
    g->limits = NULL;
    gw_idem_destroy(g->idem);
    g->idem = NULL;
}

/* The token of "Authorization: Bearer <token>"; NULL when there is none. */
static const char *bearer(struct MHD_Connection *conn, size_t *len)
{
    const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    if (!v || strncasecmp(v, "Bearer ", 7) != 0)
        return NULL;
    v += 7;
    v += strspn(v, " ");
    size_t n = strcspn(v, " \t");
    if (!n || v[n + strspn(v + n, " \t")])
        return NULL;
    *len = n;
    return v;
}

/* The request's token for user and item (NULL: any; OUT *t for the
 * caller's own check): GW_TOKEN_VALID, or why not. */
static enum gw_token_verdict token_verdict(gw *g, struct MHD_Connection *conn, const char *user,
                                           const char *item, gw_token *t)
{
    size_t len = 0;
    const char *tok = bearer(conn, &len);
    if (!tok)
        return GW_TOKEN_MALFORMED;
    gw_token_keys k = {g->cfg->adm_key, g->cfg->adm_key_previous};
    return gw_token_check(&k, tok, len, user, item, (int64_t)(sk_wall_ms() / 1000), t);
}

static enum MHD_Result bad_token(gw *g, struct MHD_Connection *conn, uint64_t t0,
                                 enum gw_token_verdict v, int counted)
{
    char body[96];
    int n = snprintf(body, sizeof body, "{\"result\":\"bad_token\",\"reason\":\"%s\"}",
                     gw_token_verdict_name(v));
    if (counted)
        return gw__answer(g, conn, t0, GW_A_BAD_TOKEN, 403, body, (size_t)n, NULL, NULL, NULL);
    return gw__reply(conn, 403, body, (size_t)n, NULL, NULL, NULL);
}

int gw__admission_token(gw *g, struct MHD_Connection *conn, const gw_purchase *p, uint64_t t0,
                        enum MHD_Result *ret)
{
    if (!g->cfg->adm_require_token)
        return 0;
    gw_token t;
    enum gw_token_verdict v = token_verdict(g, conn, p->user_id, p->item_id, &t);
    if (v == GW_TOKEN_VALID)
        return 0;
    *ret = bad_token(g, conn, t0, v, 1);
    return 1;
}

int gw__admission_order_token(gw *g, struct MHD_Connection *conn, const char *order_user,
                              enum MHD_Result *ret)
{
    if (!g->cfg->adm_require_token)
        return 0;
    gw_token t;
    enum gw_token_verdict v = token_verdict(g, conn, order_user, NULL, &t);
    if (v == GW_TOKEN_VALID)
        return 0;
    *ret = bad_token(g, conn, 0, v, 0);
    return 1;
}

typedef struct hdr_join {
    const char *name;
    char buf[1024];
    size_t n;
} hdr_join;

/* Every line of one header, joined by "," in order; past the buffer the
 * leftmost bytes go (the walk reads from the right). */
static enum MHD_Result join_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    hdr_join *j = cls;
    (void)kind;
    if (!key || !value || strcasecmp(key, j->name) != 0)
        return MHD_YES;
    size_t cap = sizeof j->buf - 1, m = strlen(value), sep = j->n ? 1 : 0;
    if (m >= cap) {
        memcpy(j->buf, value + m - cap, cap);
        j->n = cap;
    } else {
        if (j->n + sep + m > cap) {
            size_t drop = j->n + sep + m - cap;
            memmove(j->buf, j->buf + drop, j->n - drop);
            j->n -= drop;
        }
        if (sep)
            j->buf[j->n++] = ',';
        memcpy(j->buf + j->n, value, m);
        j->n += m;
    }
    j->buf[j->n] = 0;
    return MHD_YES;
}

/* The address key of the request's client (gw_guard_addr_key). */
static uint64_t client_key(gw *g, struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr)
        return 0;
    const struct sockaddr *peer = ci->client_addr;
    struct sockaddr_storage client;
    if (gw_limits_trusted(g->limits, peer)) {
        hdr_join j = {.name = !strcmp(g->cfg->lim_client_header, "forwarded") ? "Forwarded"
                                                                                : "X-Forwarded-For"};
        MHD_get_connection_values(conn, MHD_HEADER_KIND, join_header, &j);
        gw_limits_client(g->limits, peer, j.n ? j.buf : NULL, &client);
    } else {
        gw_limits_client(g->limits, peer, NULL, &client);
    }
    return gw_guard_addr_key((struct sockaddr *)&client, sizeof client);
}

static enum MHD_Result refuse(gw *g, struct MHD_Connection *conn, uint64_t t0, const char *scope,
                              uint64_t wait_ns, const char *state)
{
    char body[64], ra[24];
    int n = snprintf(body, sizeof body, "{\"result\":\"rate_limited\",\"scope\":\"%s\"}", scope);
    snprintf(ra, sizeof ra, "%llu", (unsigned long long)(wait_ns / 1000000000ULL + 1));
    gw__answer_ratelimit(gw_limits_policy(g->limits), state);
    return gw__answer(g, conn, t0, GW_A_RATE_LIMITED, 429, body, (size_t)n, NULL, "Retry-After",
                      ra);
}

int gw__admission_limits(gw *g, struct MHD_Connection *conn, req_ctx *rc, const gw_purchase *p,
                         uint64_t t0, enum MHD_Result *ret)
{
    gw_limit_state st;
    rc->rl[0] = 0;
    if (gw_limits_on(g->limits, GW_LIMIT_IP)) {
        uint64_t key = client_key(g, conn);
        if (key) {
            int ok = gw_limits_take(g->limits, GW_LIMIT_IP, &key, sizeof key, t0, &st);
            gw_limits_state_append(rc->rl, sizeof rc->rl, "ip", &st);
            if (!ok) {
                *ret = refuse(g, conn, t0, "ip", st.wait_ns, rc->rl);
                return 1;
            }
        }
    }
    if (gw_limits_on(g->limits, GW_LIMIT_USER)) {
        int ok = gw_limits_take(g->limits, GW_LIMIT_USER, p->user_id, strlen(p->user_id), t0, &st);
        gw_limits_state_append(rc->rl, sizeof rc->rl, "user", &st);
        if (!ok) {
            *ret = refuse(g, conn, t0, "user", st.wait_ns, rc->rl);
            return 1;
        }
    }
    return 0;
}

int gw__admission_idempotency(gw *g, struct MHD_Connection *conn, const gw_purchase *p,
                              uint64_t t0, uint8_t id[16], int *keyed, enum MHD_Result *ret)
{
    char buf[160], rid[37];
    *keyed = 0;
    const char *key = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Idempotency-Key");
    if (!key)
        return 0;
    size_t len = strlen(key);
    if (!gw_idem_key_valid(key, len)) {
        *ret = gw__answer(g, conn, t0, GW_A_BAD_REQUEST, 400,
                          J("{\"result\":\"bad_request\",\"error\":\"Idempotency-Key must be "
                            "1-64 characters of [A-Za-z0-9_.:-]\"}"),
                          NULL, NULL, NULL);
        return 1;
    }
    if (gw_idem_claim(g->idem, key, len, p->user_id, p->item_id, t0) == -EEXIST) {
        *ret = gw__answer(g, conn, t0, GW_A_BAD_REQUEST, 422,
                          J("{\"result\":\"idempotency_key_reused\"}"), NULL, NULL, NULL);
        return 1;
    }
    sk_outcome o;
    for (unsigned gen = 0; gen < GW_IDEM_GENERATIONS; gen++) {
        gw_idem_request_id(p->user_id, p->item_id, key, len, gen, id);
        uuid_unparse_lower(id, rid);
        int known = gw_results_get(g->results, id, t0, &o) == 0;
        if (known && o.result == SK_EXPIRED)
            continue; /* never bought, never will: the next generation */
        if (known && o.result != SK_UNAVAILABLE) {
            *ret = gw__answer_outcome(g, conn, t0, &o, rid); /* decided: the same answer */
            return 1;
        }
        if (gw_pending_contains(g->pending, id)) { /* parked here: its answer comes */
            int n = snprintf(buf, sizeof buf, "{\"result\":\"pending\",\"request_id\":\"%s\"}",
                             rid);
            *ret = gw__answer(g, conn, t0, GW_A_TIMEOUT, 202, buf, (size_t)n, rid, "Retry-After",
                              "1");
            return 1;
        }
        *keyed = 1; /* new, or undecided and not parked here: queued (again) under its id */
        return 0;
    }
    *ret = gw__answer_overloaded(g, conn, t0, GW_OV_INTERNAL, NULL); /* every generation expired */
    return 1;
}
int gw__admission_gate(gw *g, req_ctx *rc, gw_item *it)
{
    long k = (long)g->cfg->adm_inflight_factor;
    if (!k)
        return 0;
    long n = atomic_fetch_add(&it->inflight, 1); /* in flight before this one */
    if (n > 0 && n >= k * (gw__item_left(g, it) - n)) {
        atomic_fetch_sub(&it->inflight, 1);
        return 1;
    }
    rc->gated = it;
    return 0;
}

#define DRATE_SAMPLE_NS 100000000ULL /* 100 ms */

/* Decisions per second x 1000, an average over 100 ms samples (a quarter
 * weight each); the request that finds the sample due takes it. 0: none
 * measured yet, or none lately. */
static uint64_t decision_rate(gw *g, uint64_t now)
{
    uint64_t at = atomic_load(&g->drate.at_ns);
    if (now - at >= DRATE_SAMPLE_NS && atomic_compare_exchange_strong(&g->drate.at_ns, &at, now)) {
        uint64_t count = atomic_load_explicit(&g->metrics.outcomes, memory_order_relaxed);
        uint64_t prev = atomic_exchange(&g->drate.outcomes, count);
        if (at) { /* not the first sample */
            uint64_t inst = (count - prev) * 1000000000000ULL / (now - at);
            uint64_t old = atomic_load(&g->drate.per_s_x1000);
            atomic_store(&g->drate.per_s_x1000, old ? (old * 3 + inst) / 4 : inst);
        }
    }
    return atomic_load(&g->drate.per_s_x1000);
}

int gw__admission_deadline(gw *g, uint64_t now)
{
    if (!g->cfg->adm_deadline_gate)
        return 0;
    uint64_t rate = decision_rate(g, now);
    uint64_t depth = mq_topic_backlog(g->topic);
    if (!depth || !atomic_load(&g->metrics.outcomes))
        return 0; /* nothing ahead, or no rate to judge by yet */
    /* ms to decide the queue ahead: depth / (rate / 1000) * 1000 */
    return !(rate && depth * 1000000ULL / rate <= g->cfg->wait_timeout_ms);
}

void gw__admission_gate_release(req_ctx *rc)
{
    if (rc->gated)
        atomic_fetch_sub(&rc->gated->inflight, 1);
    rc->gated = NULL;
}

enum MHD_Result gw__admission_gateway_refused(gw *g, struct MHD_Connection *conn, req_ctx *rc,
                                              uint64_t t0, uint64_t wait_ns)
{
    gw_limit_state st = {.remaining = 0, .reset_s = wait_ns / 1000000000ULL + 1};
    gw_limits_state_append(rc->rl, sizeof rc->rl, "gateway", &st);
    return refuse(g, conn, t0, "gateway", wait_ns, rc->rl);
}

void gw__admission_headers(gw *g, const req_ctx *rc)
{
    if (rc->rl[0])
        gw__answer_ratelimit(gw_limits_policy(g->limits), rc->rl);
}
