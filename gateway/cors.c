/*
 * cors.c - cross-origin answers for browser apps ([http] cors_origins).
 *
 * A browser calling from another origin sends Origin; for anything but a
 * simple GET or POST it first asks with an OPTIONS preflight. An origin in
 * the list gets its preflight answered 204 with the methods, request headers
 * and cache time allowed, and every answer carries Access-Control-Allow-Origin
 * (that origin, or "*" when the list says "*") and Vary: Origin, so a cache
 * between does not hand one origin's answer to another. Any other origin, or
 * no list, gets no CORS headers at all, and its OPTIONS the answer it always
 * got (405 or 404), which the browser takes as a refusal.
 *
 * Every answer is queued from inside the access handler (libmicrohttpd
 * allows nothing else, suspended requests included: they answer on the call
 * after their resume), so gw__on_request decides the origin once per call
 * and leaves it in a thread-local for gw__cors_headers; no answer path needs
 * to carry it.
 */
#include <string.h>

#include "internal.h"

/* the allowed value of Access-Control-Allow-Origin for the request this
 * thread is answering now, NULL outside gw__on_request or for no CORS */
static _Thread_local const char *cur_origin;

const char *gw__cors_begin(const gw *g, struct MHD_Connection *conn)
{
    const cfg *c = g->cfg;
    const char *prev = cur_origin;
    cur_origin = NULL;
    if (!c->ncors_origins)
        return prev;
    const char *o = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin");
    if (!o)
        return prev;
    for (size_t i = 0; i < c->ncors_origins; i++) {
        const char *want = c->cors_origins[i];
        if (!strcmp(want, "*")) {
            cur_origin = "*";
            break;
        }
        if (!strcmp(want, o)) {
            cur_origin = want;
            break;
        }
    }
    return prev;
}

void gw__cors_end(const char *prev)
{
    cur_origin = prev;
}

int gw__cors_preflight(const char *method)
{
    return cur_origin && !strcmp(method, MHD_HTTP_METHOD_OPTIONS);
}

void gw__cors_headers(struct MHD_Response *r)
{
    if (!cur_origin)
        return;
    MHD_add_response_header(r, "Access-Control-Allow-Origin", cur_origin);
    MHD_add_response_header(r, "Vary", "Origin");
    /* what a script may read of an answer beyond the simple headers */
    MHD_add_response_header(r, "Access-Control-Expose-Headers",
                            "X-Request-Id, Retry-After, RateLimit, RateLimit-Policy");
}

enum MHD_Result gw__cors_answer_preflight(struct MHD_Connection *conn)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    gw__cors_headers(r);
    MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS");
    MHD_add_response_header(r, "Access-Control-Allow-Headers",
                            "Content-Type, X-Request-Id, traceparent, Authorization, Idempotency-Key");
    MHD_add_response_header(r, "Access-Control-Max-Age", "600");
    enum MHD_Result ret = MHD_queue_response(conn, 204, r);
    MHD_destroy_response(r);
    gw__access_line(conn, 204, NULL);
    return ret;
}
