/*
 * result.c - GET /seckill/result/{request_id}: the outcome of a request this
 * gateway admitted, 202 while it is undecided (parked, or answered 504), 404
 * when it is unknown here or has left the result store.
 */
#include <stdio.h>
#include <string.h>
#include <uuid/uuid.h>

#include "internal.h"

enum MHD_Result gw__get_result(gw *g, struct MHD_Connection *conn, const char *rid)
{
    uuid_t id;
    char buf[512];
    int n;
    sk_outcome o;
    if (strlen(rid) != 36 || uuid_parse(rid, id) != 0)
        return gw__reply_str(
            conn, 400, "{\"result\":\"bad_request\",\"error\":\"request_id must be a UUID\"}");
    char canon[37];
    uuid_unparse_lower(id, canon);
    int known = gw_results_get(g->results, id, gw_mono_ns(), &o) == 0;
    if (known && o.result != SK_UNAVAILABLE) {
        unsigned status = gw__outcome_body(g, &o, canon, buf, sizeof buf, &n);
        return gw__reply(conn, status, buf, (size_t)n, canon, NULL, NULL);
    }
    if (known || gw_pending_contains(g->pending, id)) {
        n = snprintf(buf, sizeof buf, "{\"result\":\"pending\",\"request_id\":\"%s\"}", canon);
        return gw__reply(conn, 202, buf, (size_t)n, canon, NULL, NULL);
    }
    return gw__reply(conn, 404, J("{\"result\":\"not_found\"}"), canon, NULL, NULL);
}
