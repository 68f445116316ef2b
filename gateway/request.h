/*
 * request.h - validation of a POST /seckill body.
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

#endif
