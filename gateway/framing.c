#include "framing.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

static int name_is(const char *name, size_t len, const char *want)
{
    return len == strlen(want) && strncasecmp(name, want, len) == 0;
}

/* Walk the comma-separated codings of one Transfer-Encoding field; a coding's
 * parameters (";...") do not change which coding it is. */
static void add_codings(gw_frame_scan *s, const char *v, size_t len)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && (ows(v[i]) || v[i] == ','))
            i++;
        if (i == len)
            break;
        size_t start = i;
        while (i < len && v[i] != ',' && v[i] != ';' && !ows(v[i]))
            i++;
        size_t n = i - start;
        while (i < len && v[i] != ',') /* parameters, whitespace */
            i++;
        int chunked = n == 7 && strncasecmp(v + start, "chunked", 7) == 0;
        if (s->te_chunked_last) /* something follows chunked */
            s->te_other = 1;
        if (!chunked)
            s->te_other = 1;
        s->te_chunked_last = chunked;
    }
}

static int all_digits(const char *v, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (v[i] < '0' || v[i] > '9')
            return 0;
    return 1;
}

void gw_frame_add(gw_frame_scan *s, const char *name, size_t name_len, const char *value,
                  size_t value_len)
{
    if (!value)
        value_len = 0;
    s->head_bytes += name_len + value_len + 4;
    if (name_is(name, name_len, MHD_HTTP_HEADER_CONTENT_LENGTH)) {
        if (!all_digits(value, value_len))
            s->cl_bad = 1;
        else if (s->n_cl == 0) {
            s->cl = value;
            s->cl_len = value_len;
        } else {
            /* equal values, leading zeros aside, are one length said twice */
            const char *a = s->cl, *b = value;
            size_t al = s->cl_len, bl = value_len;
            while (al > 1 && *a == '0')
                a++, al--;
            while (bl > 1 && *b == '0')
                b++, bl--;
            if (al != bl || memcmp(a, b, al) != 0)
                s->cl_bad = 1;
        }
        s->n_cl++;
    } else if (name_is(name, name_len, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        /* libmicrohttpd decodes chunked only when the first field is exactly
         * "chunked"; anything else must not reach it as a valid body */
        if (s->n_te > 0 || value_len != 7 || strncasecmp(value, "chunked", 7) != 0)
            s->te_other = 1;
        add_codings(s, value, value_len);
        s->n_te++;
    }
}

enum gw_frame gw_frame_verdict(const gw_frame_scan *s, int uri_too_long)
{
    if (uri_too_long)
        return GW_FRAME_URI_TOO_LONG;
    if (s->head_bytes > GW_HEAD_MAX)
        return GW_FRAME_HEADERS_TOO_LARGE;
    if (s->n_te) {
        if (s->http10)
            return GW_FRAME_TE_HTTP10;
        if (!s->te_chunked_last)
            return GW_FRAME_BAD_TE;
        if (s->te_other)
            return GW_FRAME_UNKNOWN_TE;
        return s->n_cl ? GW_FRAME_CLOSE : GW_FRAME_OK;
    }
    if (s->cl_bad)
        return GW_FRAME_BAD_LENGTH;
    return GW_FRAME_OK;
}

static char uri_mark;

void *gw_frame_uri_log(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls;
    (void)conn;
    return uri && strnlen(uri, GW_URI_MAX + 1) > GW_URI_MAX ? &uri_mark : NULL;
}

int gw_frame_uri_mark(const void *con_cls)
{
    return con_cls == &uri_mark;
}

static enum MHD_Result scan_one(void *cls, enum MHD_ValueKind kind, const char *key,
                                size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    gw_frame_add(cls, key, key_size, value, value_size);
    return MHD_YES;
}

enum gw_frame gw_frame_check(struct MHD_Connection *conn, const char *version, int uri_too_long)
{
    gw_frame_scan s;
    memset(&s, 0, sizeof s);
    s.http10 = version && strcmp(version, MHD_HTTP_VERSION_1_0) == 0;
    if (!uri_too_long)
        MHD_get_connection_values_n(conn, MHD_HEADER_KIND, scan_one, &s);
    return gw_frame_verdict(&s, uri_too_long);
}

unsigned gw_frame_answer(enum gw_frame f, const char **body)
{
    const char *unused;
    if (!body)
        body = &unused;
    switch (f) {
    case GW_FRAME_BAD_LENGTH:
        *body = "{\"result\":\"bad_request\",\"error\":\"conflicting or invalid Content-Length\"}";
        return 400;
    case GW_FRAME_BAD_TE:
        *body = "{\"result\":\"bad_request\",\"error\":\"chunked must be the final "
                "Transfer-Encoding\"}";
        return 400;
    case GW_FRAME_TE_HTTP10:
        *body = "{\"result\":\"bad_request\",\"error\":\"Transfer-Encoding in an HTTP/1.0 "
                "request\"}";
        return 400;
    case GW_FRAME_UNKNOWN_TE:
        *body = "{\"result\":\"not_implemented\",\"error\":\"only the chunked "
                "Transfer-Encoding is supported\"}";
        return 501;
    case GW_FRAME_URI_TOO_LONG:
        *body = "{\"result\":\"uri_too_long\"}";
        return 414;
    case GW_FRAME_HEADERS_TOO_LARGE:
        *body = "{\"result\":\"headers_too_large\"}";
        return 431;
    default:
        *body = NULL;
        return 0;
    }
}

const char *gw_frame_reason(enum gw_frame f)
{
    switch (f) {
    case GW_FRAME_BAD_LENGTH:
        return "conflicting_length";
    case GW_FRAME_BAD_TE:
        return "bad_transfer_encoding";
    case GW_FRAME_TE_HTTP10:
        return "transfer_encoding_http10";
    case GW_FRAME_UNKNOWN_TE:
        return "unknown_transfer_encoding";
    case GW_FRAME_URI_TOO_LONG:
        return "uri_too_long";
    case GW_FRAME_HEADERS_TOO_LARGE:
        return "headers_too_large";
    default:
        return NULL;
    }
}

enum MHD_Result gw_frame_reply(struct MHD_Connection *conn, enum gw_frame f, const char *request_id)
{
    const char *body;
    unsigned status = gw_frame_answer(f, &body);
    if (!status)
        return MHD_NO;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    if (request_id)
        MHD_add_response_header(r, "X-Request-Id", request_id);
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

int gw_frame_must_close(struct MHD_Connection *conn)
{
    return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING) !=
               NULL &&
           MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH) !=
               NULL;
}

int gw_frame_declared_body(struct MHD_Connection *conn, size_t limit, size_t *len)
{
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
    *len = limit;
    if (!cl || MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Transfer-Encoding"))
        return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(cl, &end, 10);
    if (errno || end == cl || *end || v > limit)
        return -EINVAL;
    *len = (size_t)v;
    return 0;
}
