/*
 * routes.c - the libmicrohttpd access handler and completion callback.
 *
 * Every request first passes the framing checks (framing.h) on its headers.
 * POST /seckill (any method on /seckill) then belongs to purchase.c, its
 * context in *con_cls; every other request is answered on the call after its
 * body is in, by the endpoint file route() picks.
 */
#include <string.h>

#include "framing.h"
#include "internal.h"

/* *con_cls of a request other than POST /seckill between its calls */
static char route_mark;

/* Every endpoint but POST /seckill. */
static enum MHD_Result route(gw *g, struct MHD_Connection *conn, const char *url,
                             const char *method)
{
    int is_get =
        strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    if (gw__cors_preflight(method))
        return gw__cors_answer_preflight(conn);
    if (strncmp(url, "/orders/", 8) == 0)
        return gw__orders(g, conn, method, url + 8);
    if (!is_get) {
        if (strncmp(url, "/seckill/result/", 16) == 0 || strncmp(url, "/items/", 7) == 0 ||
            !strcmp(url, "/livez") || !strcmp(url, "/readyz") || !strcmp(url, "/metrics") ||
            !strcmp(url, "/stats") || !strcmp(url, "/dashboard"))
            return gw__reply(conn, 405, J("{\"result\":\"method_not_allowed\"}"), NULL, "Allow",
                             "GET, HEAD");
        return gw__reply_str(conn, 404, "{\"result\":\"not_found\"}");
    }
    if (strncmp(url, "/seckill/result/", 16) == 0)
        return gw__get_result(g, conn, url + 16);
    if (strncmp(url, "/items/", 7) == 0)
        return gw__get_item(g, conn, url + 7);
    if (strcmp(url, "/livez") == 0)
        return gw__livez(conn);
    if (strcmp(url, "/readyz") == 0)
        return gw__readyz(g, conn);
    if (strcmp(url, "/metrics") == 0)
        return gw__get_metrics(g, conn);
    if (strcmp(url, "/stats") == 0)
        return gw__get_stats(g, conn);
    if (strcmp(url, "/dashboard") == 0)
        return gw__get_dashboard(conn);
    return gw__reply_str(conn, 404, "{\"result\":\"not_found\"}");
}

static enum MHD_Result on_request(gw *g, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
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
    if (rc) /* POST /seckill: body chunks, then the final call */
        return gw__purchase_step(g, conn, rc, upload_data, upload_data_size);
    if (strcmp(url, "/seckill") == 0 && !gw__cors_preflight(method))
        return gw__purchase_open(g, conn, method, con_cls);
    /* Answer on the next call, once libmicrohttpd has the whole request: a
     * response queued on the first call closes the connection, and apps
     * polling /seckill/result keep theirs open. A body is read and dropped,
     * so a declared one over body_limit is refused at once. */
    size_t len;
    if (gw_frame_declared_body(conn, g->cfg->body_limit, &len) < 0)
        return gw__reply_str(conn, 413, "{\"result\":\"payload_too_large\"}");
    *con_cls = &route_mark;
    return MHD_YES;
}

/* Every answer, whichever path queues it, is queued inside this call: the
 * request's CORS origin is decided here once for all of them. */
enum MHD_Result gw__on_request(void *cls, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version, const char *upload_data,
                               size_t *upload_data_size, void **con_cls)
{
    const char *prev = gw__cors_begin(cls, conn);
    enum MHD_Result ret =
        on_request(cls, conn, url, method, version, upload_data, upload_data_size, con_cls);
    gw__cors_end(prev);
    return ret;
}

void gw__on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
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
    *con_cls = NULL;
    gw__purchase_close(g, rc);
}
