/*
 * orders.c - GET /orders/{order_id} and POST /orders/{order_id}/pay, both
 * answered by the store; an unpaid order past pay_timeout_ms is cancelled
 * (409 pay_timeout or cancelled) and its stock returns. With [admission]
 * require_token both need the token of the order's user (admission.c).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <uuid/uuid.h>

#include "internal.h"

/* path: what follows "/orders/" */
enum MHD_Result gw__orders(gw *g, struct MHD_Connection *conn, const char *method, const char *path)
{
    char order_id[64], buf[768], rid[37];
    uuid_t u;
    int pay = 0;
    size_t n = strcspn(path, "/");
    if (n == 0 || n >= sizeof order_id)
        return gw__reply_str(conn, 404, "{\"result\":\"not_found\"}");
    memcpy(order_id, path, n);
    order_id[n] = '\0';
    if (!strcmp(path + n, "/pay"))
        pay = 1;
    else if (path[n])
        return gw__reply_str(conn, 404, "{\"result\":\"not_found\"}");
    if (pay ? strcmp(method, MHD_HTTP_METHOD_POST) != 0 : strcmp(method, MHD_HTTP_METHOD_GET) != 0)
        return gw__reply(conn, 405, J("{\"result\":\"method_not_allowed\"}"), NULL, "Allow",
                         pay ? "POST" : "GET");
    if (n != 36 || uuid_parse(order_id, u) != 0)
        return gw__reply_str(conn, 400,
                             "{\"result\":\"bad_request\",\"error\":\"order_id must be a UUID\"}");
    sk_order o;
    enum MHD_Result ret;
    int rc = 0;
    if (g->cfg->adm_require_token) { /* the token of the order's user, before anything changes */
        if (gw__admission_order_token(g, conn, NULL, &ret))
            return ret;
        rc = sale_store_order_get(g->store, order_id, &o);
        if (rc == 0 && gw__admission_order_token(g, conn, o.user_id, &ret))
            return ret;
    }
    if (rc == 0)
        rc = pay ? sale_store_order_pay(g->store, order_id, sk_wall_ms(), &o)
                 : sale_store_order_get(g->store, order_id, &o);
    if (rc == -ENOENT)
        return gw__reply_str(conn, 404, "{\"result\":\"not_found\"}");
    if (rc == -ECANCELED)
        return gw__reply_str(conn, 409, "{\"result\":\"cancelled\"}");
    if (rc == -ETIME)
        return gw__reply_str(conn, 409, "{\"result\":\"pay_timeout\"}");
    if (rc < 0) {
        gw_metrics_overloaded(&g->metrics, GW_OV_STORE_UNAVAILABLE);
        return gw__reply(conn, 503, J("{\"result\":\"overloaded\"}"), NULL, "Retry-After", "1");
    }
    uuid_unparse_lower(o.request_id, rid);
    int len = snprintf(buf, sizeof buf,
                       "{\"order_id\":\"%s\",\"item_id\":\"%s\",\"user_id\":\"%s\","
                       "\"request_id\":\"%s\",\"state\":\"%s\",\"created_at_ms\":%llu,"
                       "\"pay_deadline_ms\":%llu}",
                       order_id, o.item_id, o.user_id, rid, sk_order_state_name(o.state),
                       (unsigned long long)o.created_ms, (unsigned long long)o.pay_deadline_ms);
    return gw__reply(conn, 200, buf, (size_t)len, NULL, NULL, NULL);
}
