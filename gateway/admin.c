/*
 * admin.c - the admin API: its own libmicrohttpd daemon on [admin] listen (a
 * thread per connection: a few operators, never the sale's traffic), every
 * request authenticated by `Authorization: Bearer <[admin] token>`, JSON in
 * and out (jansson). Reference: docs/admin.md.
 *
 *   GET    /items, /items/{id}  stock total and left, sold, window, limit, sale
 *   PATCH  /items/{id}          {"stock", "starts_at", "ends_at", "per_user_limit"}
 *   GET    /rate, PUT /rate     {"rate", "burst"} of the token bucket
 *   GET    /blocklist           {"users": [...]}
 *   PUT    /blocklist/{user}, DELETE /blocklist/{user}
 *   GET    /sale, POST /sale    the sale epoch; POST starts the next sale
 *
 * A request is checked whole before anything changes: a bad one gets a 400
 * (401 without the token, 404 unknown item, 409 a stock below what the
 * sale's orders hold) and changes nothing. Every change is logged (what,
 * old -> new, from which address) and counted in
 * seckill_admin_changes_total{what}; refused tokens in
 * seckill_admin_unauthorized_total.
 *
 * Stock, limit and sales live in the store (store.h), so every process that
 * shares it follows; the window, the rate and the blocklist are this
 * gateway's (and its embedded workers'), like a reload's. ctl_lock
 * serialises the changes with each other and with gw_reload.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "internal.h"

#define ADMIN_BODY_MAX 65536 /* a new sale with stock for 1,024 items fits */
#define LOG "seckill-gateway: admin: "

static const char *const what_names[GW_ADM_COUNT] = {"stock", "window", "limit",
                                                     "rate",  "blocklist", "sale"};

const char *gw_admin_what_name(enum gw_admin_what w)
{
    return what_names[w];
}

typedef struct admin_req {
    char *body;
    size_t len;
    int too_large;
} admin_req;

static enum MHD_Result reply_json(struct MHD_Connection *c, unsigned status, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s)
        return gw__reply_str(c, 500, "{\"result\":\"internal\",\"error\":\"out of memory\"}");
    enum MHD_Result r = gw__reply(c, status, s, strlen(s), NULL, NULL, NULL);
    free(s);
    return r;
}

static enum MHD_Result fail(struct MHD_Connection *c, unsigned status, const char *result,
                            const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static enum MHD_Result fail(struct MHD_Connection *c, unsigned status, const char *result,
                            const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return reply_json(c, status, json_pack("{s:s,s:s}", "result", result, "error", msg));
}

/* The store's error as an answer: nothing changed. */
static enum MHD_Result store_fail(struct MHD_Connection *c, int rc)
{
    if (rc == -EOPNOTSUPP)
        return fail(c, 501, "not_implemented", "the store does not support this");
    return fail(c, 503, "store_unavailable", "the store refused or did not answer: %s",
                strerror(-rc));
}

/* The client's address, for the log lines. */
static void peer(struct MHD_Connection *c, char *buf, size_t len)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(buf, len, "?");
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, (socklen_t)len);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf, (socklen_t)len);
}

static void counted(gw *g, enum gw_admin_what w)
{
    atomic_fetch_add_explicit(&g->metrics.admin_changes[w], 1, memory_order_relaxed);
}

/* SHA-256 of the presented token against the configured one's, compared in
 * constant time: neither the bytes nor the length of the token leak. */
static int authorized(gw *g, struct MHD_Connection *c)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    unsigned char d[32];
    unsigned int dl = 0;
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return 0;
    h += 7;
    if (!EVP_Digest(h, strlen(h), d, &dl, EVP_sha256(), NULL) || dl != sizeof d)
        return 0;
    return CRYPTO_memcmp(d, g->admin_digest, sizeof d) == 0;
}

/* ---- items ---- */

static json_t *item_json(gw *g, size_t i)
{
    gw_item *it = &g->items[i];
    sale_item_state st;
    int rc = sale_store_item_state(g->store, i, &st);
    if (rc < 0) {
        /* a store without the admin calls: what this process knows */
        st.stock = atomic_load(&it->stock);
        st.left = gw__item_left(g, it);
        st.per_user_limit = atomic_load(&it->per_user_limit);
        st.epoch = 0;
    }
    int64_t sold = st.stock - st.left;
    return json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "item_id", it->c->id, "stock_total",
                     (json_int_t)st.stock, "stock_left", (json_int_t)st.left, "sold",
                     (json_int_t)(sold > 0 ? sold : 0), "starts_at",
                     (json_int_t)atomic_load(&it->starts_at), "ends_at",
                     (json_int_t)atomic_load(&it->ends_at), "per_user_limit",
                     (json_int_t)st.per_user_limit, "sale", (json_int_t)st.epoch);
}

/* A non-negative integer member at most max; absent leaves *v. */
static int get_int(json_t *o, const char *name, int64_t max, int64_t *v, int *set, char *err,
                   size_t errlen)
{
    json_t *j = json_object_get(o, name);
    if (!j)
        return 0;
    if (!json_is_integer(j) || json_integer_value(j) < 0 || json_integer_value(j) > max) {
        snprintf(err, errlen, "%s must be an integer from 0 to %lld", name, (long long)max);
        return -EINVAL;
    }
    *v = json_integer_value(j);
    *set = 1;
    return 0;
}

/* Only the listed members, for an object body. */
static int only_members(json_t *o, const char *const *names, char *err, size_t errlen)
{
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        int ok = 0;
        for (size_t i = 0; names[i] && !ok; i++)
            ok = !strcmp(k, names[i]);
        if (!ok) {
            snprintf(err, errlen, "unknown member \"%s\"", k);
            return -EINVAL;
        }
    }
    return 0;
}

/* body: the request's JSON object, or NULL with a 400/415 sent. */
static json_t *parse_body(struct MHD_Connection *c, admin_req *rq, enum MHD_Result *ret)
{
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    json_error_t je;
    if (rq->len && (!ct || strncasecmp(ct, "application/json", 16) != 0)) {
        *ret = fail(c, 415, "unsupported_media_type", "the body must be application/json");
        return NULL;
    }
    json_t *j = json_loadb(rq->len ? rq->body : "{}", rq->len ? rq->len : 2,
                           JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        *ret = fail(c, 400, "bad_request", "invalid JSON at position %d: %s", je.position,
                    je.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        *ret = fail(c, 400, "bad_request", "the body must be a JSON object");
        return NULL;
    }
    return j;
}

/* PATCH /items/{id}: check every member first, then apply them (stock,
 * window, limit); one function so that "nothing changes unless all of it
 * is valid" is visible in one place. */
static enum MHD_Result patch_item(gw *g, struct MHD_Connection *c, size_t i, admin_req *rq)
{
    static const char *const names[] = {"stock", "starts_at", "ends_at", "per_user_limit", NULL};
    enum MHD_Result ret;
    char err[256], from[64];
    json_t *b = parse_body(c, rq, &ret);
    if (!b)
        return ret;
    gw_item *it = &g->items[i];
    int64_t stock = 0, starts = atomic_load(&it->starts_at), ends = atomic_load(&it->ends_at);
    int64_t limit = 0;
    int set_stock = 0, set_starts = 0, set_ends = 0, set_limit = 0;
    if (only_members(b, names, err, sizeof err) < 0 ||
        get_int(b, "stock", 1000000000000LL, &stock, &set_stock, err, sizeof err) < 0 ||
        get_int(b, "starts_at", INT64_MAX / 2, &starts, &set_starts, err, sizeof err) < 0 ||
        get_int(b, "ends_at", INT64_MAX / 2, &ends, &set_ends, err, sizeof err) < 0 ||
        get_int(b, "per_user_limit", 1000000, &limit, &set_limit, err, sizeof err) < 0) {
        json_decref(b);
        return fail(c, 400, "bad_request", "%s", err);
    }
    json_decref(b);
    if (!set_stock && !set_starts && !set_ends && !set_limit)
        return fail(c, 400, "bad_request", "nothing to change: give stock, starts_at, ends_at "
                                           "or per_user_limit");
    if (set_limit && limit < 1)
        return fail(c, 400, "bad_request", "per_user_limit must be at least 1");
    if (ends && starts && ends <= starts)
        return fail(c, 400, "bad_request", "ends_at (%lld) must be after starts_at (%lld)",
                    (long long)ends, (long long)starts);
    peer(c, from, sizeof from);
    const char *id = it->c->id;
    pthread_mutex_lock(&g->ctl_lock);
    if (set_stock) {
        int64_t held = 0, before = atomic_load(&it->stock);
        sale_item_state st;
        if (sale_store_item_state(g->store, i, &st) == 0)
            before = st.stock;
        int rc = sale_store_set_stock(g->store, i, stock, &held);
        if (rc == -EBUSY) {
            pthread_mutex_unlock(&g->ctl_lock);
            return reply_json(
                c, 409,
                json_pack("{s:s,s:s,s:I}", "result", "conflict", "error",
                          "stock below the units sold or held by orders of this sale: "
                          "nothing changed",
                          "held", (json_int_t)held));
        }
        if (rc == -EOPNOTSUPP) {
            pthread_mutex_unlock(&g->ctl_lock);
            return fail(c, 501, "not_implemented",
                        "the store cannot lower the stock total (on a Redis Cluster it can only "
                        "be raised): nothing changed");
        }
        if (rc < 0) {
            pthread_mutex_unlock(&g->ctl_lock);
            return store_fail(c, rc);
        }
        atomic_store(&it->stock, stock);
        int64_t left = sale_store_left(g->store, i);
        if (left >= 0) /* the sold-out flag follows now, not at the next report */
            gw__item_report(it, left);
        fprintf(stderr, LOG "[item.%s] stock %lld -> %lld (from %s)\n", id, (long long)before,
                (long long)stock, from);
        counted(g, GW_ADM_STOCK);
    }
    if (set_limit) {
        int rc = sale_store_set_limit(g->store, i, (uint32_t)limit);
        if (rc < 0) {
            pthread_mutex_unlock(&g->ctl_lock);
            return store_fail(c, rc);
        }
        fprintf(stderr, LOG "[item.%s] per_user_limit %u -> %lld (from %s)\n", id,
                atomic_load(&it->per_user_limit), (long long)limit, from);
        atomic_store(&it->per_user_limit, (uint32_t)limit);
        counted(g, GW_ADM_LIMIT);
    }
    if (set_starts || set_ends) {
        fprintf(stderr, LOG "[item.%s] starts_at %lld -> %lld, ends_at %lld -> %lld (from %s)\n",
                id, (long long)atomic_load(&it->starts_at), (long long)starts,
                (long long)atomic_load(&it->ends_at), (long long)ends, from);
        atomic_store(&it->starts_at, starts);
        atomic_store(&it->ends_at, ends);
        g->windows[i] = (sk_item_window){id, starts, ends};
        if (g->worker && gw__risk_apply(g) < 0)
            fprintf(stderr, LOG "out of memory: the embedded workers keep the previous windows\n");
        counted(g, GW_ADM_WINDOW);
    }
    pthread_mutex_unlock(&g->ctl_lock);
    fflush(stderr);
    return reply_json(c, 200, item_json(g, i));
}

static enum MHD_Result items(gw *g, struct MHD_Connection *c, const char *method,
                             const char *id, admin_req *rq)
{
    if (!*id) {
        if (strcmp(method, "GET") != 0)
            return gw__reply(c, 405, J("{\"result\":\"method_not_allowed\"}"), NULL, "Allow",
                             "GET");
        json_t *a = json_array();
        for (size_t i = 0; i < g->nitems; i++)
            json_array_append_new(a, item_json(g, i));
        return reply_json(c, 200, json_pack("{s:o}", "items", a));
    }
    gw_item *it = sk_id_valid(id, strlen(id)) ? gw__item_find(g, id) : NULL;
    if (!it)
        return gw__reply_str(c, 404, "{\"result\":\"unknown_item\"}");
    size_t i = (size_t)(it - g->items);
    if (!strcmp(method, "GET"))
        return reply_json(c, 200, item_json(g, i));
    if (!strcmp(method, "PATCH"))
        return patch_item(g, c, i, rq);
    return gw__reply(c, 405, J("{\"result\":\"method_not_allowed\"}"), NULL, "Allow",
                     "GET, PATCH");
}

/* ---- the token bucket ---- */

static enum MHD_Result rate(gw *g, struct MHD_Connection *c, const char *method, admin_req *rq)
{
    static const char *const names[] = {"rate", "burst", NULL};
    if (!strcmp(method, "GET")) {
        pthread_mutex_lock(&g->ctl_lock);
        json_t *j = json_pack("{s:f,s:I}", "rate", g->tb_rate, "burst", (json_int_t)g->tb_burst);
        pthread_mutex_unlock(&g->ctl_lock);
        return reply_json(c, 200, j);
    }
    if (strcmp(method, "PUT") != 0)
        return gw__reply(c, 405, J("{\"result\":\"method_not_allowed\"}"), NULL, "Allow",
                         "GET, PUT");
    if (g->gbucket) /* one bucket in Redis shared by every gateway: not this one's to change */
        return fail(c, 501, "not_implemented",
                    "[token_bucket] scope = global: the rate is shared in Redis; change it in "
                    "every gateway's file and restart them");
    enum MHD_Result ret;
    char err[256], from[64];
    json_t *b = parse_body(c, rq, &ret);
    if (!b)
        return ret;
    json_t *jr = json_object_get(b, "rate");
    int64_t burst = 0;
    int set_burst = 0;
    int bad = only_members(b, names, err, sizeof err) < 0 ||
              get_int(b, "burst", 100000000, &burst, &set_burst, err, sizeof err) < 0;
    if (!bad && jr && (!json_is_number(jr) || !isfinite(json_number_value(jr)) ||
                       json_number_value(jr) < 0 || json_number_value(jr) > 1e9)) {
        snprintf(err, sizeof err, "rate must be a number from 0 (unlimited) to 1e9");
        bad = 1;
    }
    if (!bad && !jr && !set_burst) {
        snprintf(err, sizeof err, "nothing to change: give rate or burst");
        bad = 1;
    }
    if (!bad && set_burst && burst < 1) {
        snprintf(err, sizeof err, "burst must be at least 1");
        bad = 1;
    }
    double r = jr ? json_number_value(jr) : 0;
    json_decref(b);
    if (bad)
        return fail(c, 400, "bad_request", "%s", err);
    peer(c, from, sizeof from);
    pthread_mutex_lock(&g->ctl_lock);
    double nr = jr ? r : g->tb_rate;
    uint32_t nb = set_burst ? (uint32_t)burst : g->tb_burst;
    if (tb_set(&g->bucket, nr, nb) < 0) {
        pthread_mutex_unlock(&g->ctl_lock);
        return fail(c, 400, "bad_request", "rate %g with burst %u refused", nr, nb);
    }
    fprintf(stderr, LOG "[token_bucket] rate %g -> %g, burst %u -> %u (from %s)\n", g->tb_rate,
            nr, g->tb_burst, nb, from);
    fflush(stderr);
    g->tb_rate = nr;
    g->tb_burst = nb;
    counted(g, GW_ADM_RATE);
    json_t *j = json_pack("{s:f,s:I}", "rate", g->tb_rate, "burst", (json_int_t)g->tb_burst);
    pthread_mutex_unlock(&g->ctl_lock);
    return reply_json(c, 200, j);
}

/* ---- the blocklist ---- */

static json_t *blocklist_json(gw *g)
{
    json_t *a = json_array();
    for (size_t i = 0; i < g->nblocklist; i++)
        json_array_append_new(a, json_string(g->blocklist[i]));
    return json_pack("{s:o}", "users", a);
}

static ssize_t blocklist_find(const gw *g, const char *user)
{
    for (size_t i = 0; i < g->nblocklist; i++)
        if (!strcmp(g->blocklist[i], user))
            return (ssize_t)i;
    return -1;
}

static enum MHD_Result blocklist(gw *g, struct MHD_Connection *c, const char *method,
                                 const char *user)
{
    char from[64];
    if (!*user) {
        if (strcmp(method, "GET") != 0)
            return gw__reply(c, 405, J("{\"result\":\"method_not_allowed\"}"), NULL, "Allow",
                             "GET");
        pthread_mutex_lock(&g->ctl_lock);
        json_t *j = blocklist_json(g);
        pthread_mutex_unlock(&g->ctl_lock);
        return reply_json(c, 200, j);
    }
    int add = !strcmp(method, "PUT");
    if (!add && strcmp(method, "DELETE") != 0)
        return gw__reply(c, 405, J("{\"result\":\"method_not_allowed\"}"), NULL, "Allow",
                         "PUT, DELETE");
    if (!sk_id_valid(user, strlen(user)))
        return fail(c, 400, "bad_request",
                    "a user id is 1-64 characters of A-Z a-z 0-9 _ . : - or an integer");
    peer(c, from, sizeof from);
    pthread_mutex_lock(&g->ctl_lock);
    ssize_t at = blocklist_find(g, user);
    int changed = 0;
    if (add && at < 0) {
        char *u = strdup(user);
        char **l = u ? realloc(g->blocklist, (g->nblocklist + 1) * sizeof *l) : NULL;
        if (!l) {
            free(u);
            pthread_mutex_unlock(&g->ctl_lock);
            return fail(c, 500, "internal", "out of memory");
        }
        g->blocklist = l;
        g->blocklist[g->nblocklist++] = u;
        changed = 1;
    } else if (!add && at >= 0) {
        free(g->blocklist[at]);
        g->blocklist[at] = g->blocklist[--g->nblocklist];
        changed = 1;
    }
    if (changed) {
        fprintf(stderr, LOG "[risk] blocklist %s %s: %zu user ids (from %s)\n",
                add ? "+" : "-", user, g->nblocklist, from);
        fflush(stderr);
        if (g->worker && gw__risk_apply(g) < 0)
            fprintf(stderr, LOG "out of memory: the embedded workers keep the previous "
                                "blocklist\n");
        counted(g, GW_ADM_BLOCKLIST);
    }
    json_t *j = blocklist_json(g);
    pthread_mutex_unlock(&g->ctl_lock);
    return reply_json(c, 200, j);
}

/* ---- sales ---- */

static enum MHD_Result sale(gw *g, struct MHD_Connection *c, const char *method, admin_req *rq)
{
    static const char *const names[] = {"stock", NULL};
    sale_item_state st;
    if (!strcmp(method, "GET")) {
        int rc = g->nitems ? sale_store_item_state(g->store, 0, &st) : -EOPNOTSUPP;
        if (rc < 0)
            return store_fail(c, rc);
        return reply_json(c, 200, json_pack("{s:I}", "sale", (json_int_t)st.epoch));
    }
    if (strcmp(method, "POST") != 0)
        return gw__reply(c, 405, J("{\"result\":\"method_not_allowed\"}"), NULL, "Allow",
                         "GET, POST");
    enum MHD_Result ret;
    char err[256], from[64];
    json_t *b = parse_body(c, rq, &ret);
    if (!b)
        return ret;
    int64_t *stock = malloc((g->nitems ? g->nitems : 1) * sizeof *stock);
    if (!stock) {
        json_decref(b);
        return fail(c, 500, "internal", "out of memory");
    }
    for (size_t i = 0; i < g->nitems; i++)
        stock[i] = -1;
    json_t *js = json_object_get(b, "stock");
    int bad = only_members(b, names, err, sizeof err) < 0;
    if (!bad && js && !json_is_object(js)) {
        snprintf(err, sizeof err, "stock must be an object: item id -> units");
        bad = 1;
    }
    const char *k;
    json_t *v;
    if (!bad && js)
        json_object_foreach(js, k, v)
        {
            gw_item *it = sk_id_valid(k, strlen(k)) ? gw__item_find(g, k) : NULL;
            if (!it) {
                snprintf(err, sizeof err, "stock: unknown item \"%.64s\"", k);
                bad = 1;
                break;
            }
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) > 1000000000000LL) {
                snprintf(err, sizeof err, "stock.%s must be an integer from 0 to 1e12", k);
                bad = 1;
                break;
            }
            stock[it - g->items] = json_integer_value(v);
        }
    json_decref(b);
    if (bad) {
        free(stock);
        return fail(c, 400, "bad_request", "%s", err);
    }
    peer(c, from, sizeof from);
    pthread_mutex_lock(&g->ctl_lock);
    uint64_t epoch = 0;
    int rc = sale_store_new_sale(g->store, stock, &epoch);
    free(stock);
    if (rc < 0) {
        pthread_mutex_unlock(&g->ctl_lock);
        return store_fail(c, rc);
    }
    json_t *a = json_array();
    for (size_t i = 0; i < g->nitems; i++) {
        gw_item *it = &g->items[i];
        if (sale_store_item_state(g->store, i, &st) == 0) {
            atomic_store(&it->stock, st.stock);
            gw__item_report(it, st.left);
        }
        json_array_append_new(a, item_json(g, i));
    }
    fprintf(stderr, LOG "sale %llu started: every item back to its stock, no purchase counted; "
                        "the orders of earlier sales stay readable (from %s)\n",
            (unsigned long long)epoch, from);
    fflush(stderr);
    counted(g, GW_ADM_SALE);
    pthread_mutex_unlock(&g->ctl_lock);
    return reply_json(c, 200, json_pack("{s:I,s:o}", "sale", (json_int_t)epoch, "items", a));
}

/* ---- the daemon ---- */

static enum MHD_Result route(gw *g, struct MHD_Connection *c, const char *url, const char *method,
                             admin_req *rq)
{
    if (!authorized(g, c)) {
        atomic_fetch_add_explicit(&g->metrics.admin_unauthorized, 1, memory_order_relaxed);
        return gw__reply(c, 401, J("{\"result\":\"unauthorized\"}"), NULL, "WWW-Authenticate",
                         "Bearer realm=\"seckill-admin\"");
    }
    if (rq->too_large)
        return gw__reply_str(c, 413, "{\"result\":\"payload_too_large\"}");
    if (!strcmp(url, "/items"))
        return items(g, c, method, "", rq);
    if (!strncmp(url, "/items/", 7))
        return items(g, c, method, url + 7, rq);
    if (!strcmp(url, "/rate"))
        return rate(g, c, method, rq);
    if (!strcmp(url, "/blocklist"))
        return blocklist(g, c, method, "");
    if (!strncmp(url, "/blocklist/", 11))
        return blocklist(g, c, method, url + 11);
    if (!strcmp(url, "/sale"))
        return sale(g, c, method, rq);
    return gw__reply_str(c, 404, "{\"result\":\"not_found\"}");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *data_size, void **con_cls)
{
    gw *g = cls;
    admin_req *rq = *con_cls;
    (void)version;
    if (!rq) { /* the headers are in: answer once the body is */
        rq = calloc(1, sizeof *rq);
        if (!rq)
            return MHD_NO;
        *con_cls = rq;
        return MHD_YES;
    }
    if (*data_size) {
        if (rq->len + *data_size > ADMIN_BODY_MAX) {
            rq->too_large = 1; /* read and dropped; answered 413 */
        } else if (!rq->too_large) {
            char *b = realloc(rq->body, rq->len + *data_size + 1);
            if (!b)
                return MHD_NO;
            memcpy(b + rq->len, data, *data_size);
            rq->body = b;
            rq->len += *data_size;
        }
        *data_size = 0;
        return MHD_YES;
    }
    return route(g, c, url, method, rq);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    admin_req *rq = *con_cls;
    (void)cls, (void)c, (void)toe;
    if (rq) {
        free(rq->body);
        free(rq);
    }
    *con_cls = NULL;
}

int gw__risk_apply(gw *g)
{
    return sk_worker_set_risk(g->worker, (const char *const *)g->blocklist, g->nblocklist,
                              g->windows, g->nitems);
}

int gw__blocklist_replace(gw *g, char *const *list, size_t n)
{
    char **l = calloc(n ? n : 1, sizeof *l);
    if (!l)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (!(l[i] = strdup(list[i]))) {
            while (i-- > 0)
                free(l[i]);
            free(l);
            return -ENOMEM;
        }
    for (size_t i = 0; i < g->nblocklist; i++)
        free(g->blocklist[i]);
    free(g->blocklist);
    g->blocklist = l;
    g->nblocklist = n;
    return 0;
}

int gw__admin_start(gw *g, char *err, size_t errlen)
{
    const cfg *c = g->cfg;
    unsigned int dl = 0;
    if (!EVP_Digest(c->admin_token, strlen(c->admin_token), g->admin_digest, &dl, EVP_sha256(),
                    NULL)) {
        snprintf(err, errlen, "admin: cannot hash the token");
        return -ENOMEM;
    }
    struct sockaddr_storage ss; /* IPv4, IPv6, or a name resolved now */
    int rc = cfg_resolve_addr("[admin] listen", c->admin_host, c->admin_port, &ss, err, errlen);
    if (rc < 0)
        return rc;
    unsigned v6 = ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0;
    g->admin = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                                    MHD_USE_POLL | MHD_USE_ERROR_LOG | v6,
                                0, NULL, NULL, on_request, g, MHD_OPTION_SOCK_ADDR,
                                (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT, (unsigned)16,
                                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                                MHD_OPTION_NOTIFY_COMPLETED, on_completed, g, MHD_OPTION_END);
    if (!g->admin) {
        snprintf(err, errlen, "[admin] cannot listen on %s:%u", c->admin_host, c->admin_port);
        return -EADDRINUSE;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(g->admin, MHD_DAEMON_INFO_BIND_PORT);
    g->admin_port = di ? di->port : c->admin_port;
    return 0;
}

void gw__admin_stop(gw *g)
{
    if (g->admin)
        MHD_stop_daemon(g->admin);
    g->admin = NULL;
}
