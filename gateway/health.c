/*
 * health.c - GET /livez (the process answers) and GET /readyz (it can take
 * purchases: not stopping, a live worker, a store that answers).
 */
#include "internal.h"

enum MHD_Result gw__livez(struct MHD_Connection *conn)
{
    return gw__reply_str(conn, 200, "{\"status\":\"ok\"}");
}

enum MHD_Result gw__readyz(gw *g, struct MHD_Connection *conn)
{
    if (atomic_load(&g->draining) || atomic_load(&g->stopping))
        return gw__reply_str(conn, 503, "{\"status\":\"stopping\"}");
    if (mq_group_live(g->topic, SK_GROUP) == 0)
        return gw__reply_str(conn, 503, "{\"status\":\"no_worker\"}");
    if (sale_store_ping(g->store) < 0) /* the store does not answer */
        return gw__reply_str(conn, 503, "{\"status\":\"redis_unreachable\"}");
    return gw__reply_str(conn, 200, "{\"status\":\"ready\"}");
}
