/*
 * dashboard.c - GET /dashboard: the live sale page (gateway/dashboard.html),
 * compiled into the binary by embed.cmake so it needs no file at run time
 * and loads nothing from elsewhere; its script polls GET /stats.
 */
#include "internal.h"

/* dashboard_html.c, generated at build time */
extern const unsigned char gw_dashboard_html[];
extern const size_t gw_dashboard_html_len;

enum MHD_Result gw__get_dashboard(struct MHD_Connection *conn)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        gw_dashboard_html_len, (void *)gw_dashboard_html, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    /* the page's own script and style only, and fetches to this origin */
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'none'; script-src 'unsafe-inline'; "
                            "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:");
    return gw__queue(conn, 200, r);
}
