/*
 * request.h - validation of a POST /seckill body, and of the request id a
 * client may send with any request.
 */
#ifndef SECKILL_GW_REQUEST_H
#define SECKILL_GW_REQUEST_H

#include <stddef.h>

#include "sk.h"

typedef struct gw_purchase {
    char user_id[SK_ID_MAX + 1];
    char item_id[SK_ID_MAX + 1];
} gw_purchase;

/* Parse {"user_id": ..., "item_id": ...}: each a string of 1-64 characters of
 * [A-Za-z0-9_.:-] or a non-negative integer (kept as its decimal text).
 * Duplicate keys are refused; other keys are ignored.
 * 0 on success; -EINVAL with the 400 answer's JSON body in err. */
int gw_parse_purchase(const char *body, size_t len, gw_purchase *p, char *err, size_t errlen);

/* 1 when the Content-Type value names JSON: application/json, any case,
 * optionally followed by parameters ("; charset=utf-8"). */
int gw_is_json_type(const char *content_type);

/* The request id a client sent, for its answer's X-Request-Id, the log lines
 * and the queue message: x_request_id when it is 1-64 characters of
 * [A-Za-z0-9_.:@+/=-]; else the trace-id (32 lowercase hex digits) of a
 * valid W3C traceparent ("00-<trace-id>-<parent-id>-<flags>", neither id all
 * zeros; a version above 00 may append "-..." fields, version ff is
 * invalid); else none. Either header may be NULL. OUT: out (SK_TRACE_MAX + 1
 * bytes). Returns 1 when out holds an id, 0 when none was usable. */
int gw_client_request_id(const char *x_request_id, const char *traceparent, char *out);

#endif
