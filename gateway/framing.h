/*
 * framing.h - how long a request's body is, and whether its head is too big,
 * decided once its headers are in (RFC 9112 sections 6 and 2.3).
 *
 * Behind a proxy, a request whose length two parties read differently lets
 * its tail pass as a second request (smuggling). libmicrohttpd 0.9.75 reads
 * the first of several Content-Length headers and lets Transfer-Encoding win
 * over Content-Length without closing; with a Transfer-Encoding other than
 * "chunked" it reads the body to end-of-file. So before anything else:
 *
 *   several Content-Length headers that differ, or one that is not a
 *     number                                      -> 400, close
 *   Transfer-Encoding whose last coding is not chunked (length unknowable,
 *     e.g. "xchunked", "chunked, gzip")           -> 400, close
 *   Transfer-Encoding with another coding before chunked ("gzip, chunked")
 *                                                 -> 501, close
 *   Transfer-Encoding in an HTTP/1.0 request (which has no chunked coding)
 *                                                 -> 400, close
 *   Transfer-Encoding: chunked with Content-Length -> served by chunked (the
 *     Content-Length is ignored), then closed
 *   request-target over GW_URI_MAX bytes          -> 414, close
 *   header fields over GW_HEAD_MAX bytes in all   -> 431, close
 *
 * libmicrohttpd refuses heads that do not fit its per-connection memory
 * (GW_CONN_MEMORY) itself, with an HTML body; our limits sit well below it so
 * that any head up to about that size gets our JSON answer. Each connection's
 * memory is bounded by GW_CONN_MEMORY.
 */
#ifndef SECKILL_GW_FRAMING_H
#define SECKILL_GW_FRAMING_H

#include <microhttpd.h>
#include <stddef.h>

#define GW_URI_MAX 2048            /* request-target, query included */
#define GW_HEAD_MAX 8192           /* header fields: names, values, ": " and CRLF */
#define GW_CONN_MEMORY (32 * 1024) /* MHD_OPTION_CONNECTION_MEMORY_LIMIT */

enum gw_frame {
    GW_FRAME_OK,
    GW_FRAME_CLOSE,             /* serve it, then close (Transfer-Encoding with Content-Length) */
    GW_FRAME_BAD_LENGTH,        /* 400: Content-Length conflicting or invalid */
    GW_FRAME_BAD_TE,            /* 400: chunked is not the final coding */
    GW_FRAME_TE_HTTP10,         /* 400: Transfer-Encoding in HTTP/1.0 */
    GW_FRAME_UNKNOWN_TE,        /* 501: a coding other than chunked */
    GW_FRAME_URI_TOO_LONG,      /* 414 */
    GW_FRAME_HEADERS_TOO_LARGE, /* 431 */
    GW_FRAME_COUNT
};

/* What the header fields of one request add up to. */
typedef struct gw_frame_scan {
    size_t head_bytes;
    unsigned n_cl;  /* Content-Length fields */
    int cl_bad;     /* one is not 1*DIGIT, or they differ */
    const char *cl; /* the first one's value */
    size_t cl_len;
    unsigned n_te;       /* Transfer-Encoding fields */
    int te_chunked_last; /* the last coding of the last field is chunked */
    int te_other;        /* some coding is not chunked, or chunked is not last */
    int http10;          /* the request is HTTP/1.0 (set by the caller) */
} gw_frame_scan;

/* Feed one header field (lengths without terminators). */
void gw_frame_add(gw_frame_scan *s, const char *name, size_t name_len, const char *value,
                  size_t value_len);
/* The verdict for a scanned request; uri_too_long from gw_frame_uri_log. */
enum gw_frame gw_frame_verdict(const gw_frame_scan *s, int uri_too_long);

/* MHD_OPTION_URI_LOG_CALLBACK: sees the raw request-target before the access
 * handler. Returns what libmicrohttpd hands the first call as *con_cls: NULL,
 * or the marker tested by gw_frame_uri_mark. */
void *gw_frame_uri_log(void *cls, const char *uri, struct MHD_Connection *conn);
int gw_frame_uri_mark(const void *con_cls);

/* The verdict for conn's request (first access handler call); version as the
 * access handler got it. */
enum gw_frame gw_frame_check(struct MHD_Connection *conn, const char *version, int uri_too_long);
/* The status and JSON body of a refusing verdict; 0 for OK and CLOSE.
 * body may be NULL. */
unsigned gw_frame_answer(enum gw_frame f, const char **body);
/* The metric label of a refusing verdict (conflicting_length, ...); NULL
 * for OK and CLOSE. */
const char *gw_frame_reason(enum gw_frame f);
/* Queue the refusing answer for verdict f with Connection: close, on the
 * first access handler call: the body's length is unknown or disputed, so
 * none of it is read (an answer queued on the first call makes
 * libmicrohttpd drop the rest of the request). request_id, when not NULL,
 * goes in X-Request-Id. */
enum MHD_Result gw_frame_reply(struct MHD_Connection *conn, enum gw_frame f,
                               const char *request_id);
/* 1 when the answer to conn's request must close the connection
 * (Transfer-Encoding and Content-Length together). */
int gw_frame_must_close(struct MHD_Connection *conn);
/* The body size conn's request declares (Content-Length), or limit when it
 * declares none or is chunked (Transfer-Encoding wins over Content-Length:
 * RFC 9112 section 6.3). -EINVAL when the header is not a number or is over
 * limit. OUT: *len. */
int gw_frame_declared_body(struct MHD_Connection *conn, size_t limit, size_t *len);

#endif
