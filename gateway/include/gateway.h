/*
 * gateway.h - one seckill gateway: HTTP front (libmicrohttpd), token bucket,
 * pending table, request topic on the embedded queue, and (embedded mode)
 * the worker threads that decide requests against the store (sale/include/store.h).
 *
 * POST /seckill, in order, each step answering without going further:
 *   framing and head size, for every path (400, 501, 414, 431, framing.h) ->
 *   method/type/size checks (405, 415, 413) -> JSON and ids (400) ->
 *   unknown item (404) -> sale window (409 not_started / ended) ->
 *   local sold-out flag (409) -> no live worker (503) -> token bucket (429) ->
 *   request id, park in the pending table, produce (503 when the topic is
 *   full) -> wait for the outcome or the deadline (504).
 * The first fast paths cost neither a token nor a queue slot.
 *
 * Every connection, from accept, also has a deadline for each request to
 * arrive in full and counts against its address's cap (conn_guard.h).
 */
#ifndef SECKILL_GW_GATEWAY_H
#define SECKILL_GW_GATEWAY_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef struct gw gw;

/* c must outlive the gateway. On error writes a message to err. OUT: *out. */
int gw_create(const cfg *c, gw **out, char *err, size_t errlen);
/* Start the worker threads (embedded mode) and the HTTP listener. */
int gw_start(gw *g, char *err, size_t errlen);
/* The bound port (useful with port 0). */
uint16_t gw_port(const gw *g);
const char *gw_id(const gw *g);
/* The bound RPC port when serving workers over TCP; negative errno otherwise. */
int gw_rpc_port(const gw *g);
/* Stop accepting connections, let parked requests finish (outcome or
 * timeout) for up to grace_ms, then stop HTTP and the workers. */
void gw_stop(gw *g, uint32_t grace_ms);
void gw_destroy(gw *g);

#endif
