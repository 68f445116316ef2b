/*
 * redis_conn.h - internal: what every hiredis user (sale/, seckill-worker/) does
 * the same way: connect with a timeout, and turn a failed context into an
 * errno value.
 */
#ifndef SECKILL_SK_REDIS_CONN_H
#define SECKILL_SK_REDIS_CONN_H

#include <hiredis/hiredis.h>
#include <stdint.h>
#include <sys/time.h>

struct timeval sk__ms_tv(uint32_t ms);

/* Connect to host:port within timeout_ms and use the same timeout for every
 * reply. OUT: *out. On failure nothing is left open; negative errno. */
int sk__redis_connect(const char *host, int port, uint32_t timeout_ms, redisContext **out);

/* The errno of failed context c (NULL: allocation failed); saved is errno
 * taken right after the failing call. -ETIMEDOUT, -ECONNRESET (EOF), -ENOMEM,
 * -EPROTO, or the socket's own error. */
int sk__redis_errno(const redisContext *c, int saved);

#endif
