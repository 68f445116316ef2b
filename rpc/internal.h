/*
 * internal.h - pieces shared by server.c and client.c (prefix rpc__).
 *
 * rpc__wq: a connection's outgoing bytes. Frames are encoded straight into
 * it; bytes [head, head + len) are still to be written. Bounded by `limit`.
 * rpc__rbuf: a connection's incoming bytes, holding at most one frame's worth
 * beyond what was already dispatched: it grows to a frame's length only after
 * rpc_peek_header accepted that length, and shrinks back when idle.
 */
#ifndef SECKILL_RPC_INTERNAL_H
#define SECKILL_RPC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "auth.h"
#include "frame.h"
#include "tls.h"

#define RPC__RBUF_INITIAL (16u << 10)
#define RPC__DEFAULT_WQ (4u << 20)

typedef struct rpc__wq {
    uint8_t *buf;
    size_t head;
    size_t len;
    size_t cap;
    size_t limit;
} rpc__wq;

/* Encode f at the tail; with seal (an authenticated session) the frame gets
 * its MAC trailer, sealed with the next outgoing sequence number (so frames
 * must be pushed in the order they are written, under the same lock).
 * -EMSGSIZE when over peer_max, -ENOBUFS when the queue would pass its limit,
 * -ENOMEM, or an encode error; nothing queued then. */
int rpc__wq_push(rpc__wq *q, const rpc_frame *f, uint32_t peer_max, rpc_auth *seal);
/* Append bytes already encoded (a handshake reply). Same errors. */
int rpc__wq_push_raw(rpc__wq *q, const void *p, size_t n);
/* Write until the transport would block. 0 (bytes may remain) or -errno. */
int rpc__wq_flush(rpc__wq *q, rpc__tp *t);
void rpc__wq_release(rpc__wq *q);

typedef struct rpc__rbuf {
    uint8_t *buf;
    size_t len;
    size_t cap;
    uint32_t max_frame;
} rpc__rbuf;

/* One read into the free space. >0 bytes read, 0 at EOF, -EAGAIN, -errno. */
long rpc__rbuf_read(rpc__rbuf *r, rpc__tp *t);
/* Decode the frame at *off. 0: OUT *f (a view into r), *off advanced past it.
 * -EAGAIN: incomplete. Anything else: malformed (rpc_decode's codes). */
int rpc__rbuf_next(rpc__rbuf *r, size_t *off, rpc_frame *f);
/* Drop the bytes before off (after their frames were dispatched) and make
 * room for the frame now at the front, whose header was already accepted. */
int rpc__rbuf_consume(rpc__rbuf *r, size_t off);
void rpc__rbuf_release(rpc__rbuf *r);

uint64_t rpc__now_ms(void);

/* Reconnect delay after `attempt` consecutive failures (0: the first try
 * after a disconnect): min * 2^attempt capped at max, jittered uniformly into
 * [d/2, d] with the xorshift state *rng. */
uint32_t rpc__backoff_ms(uint32_t attempt, uint32_t min, uint32_t max, uint64_t *rng);

/* Parse "tcp:HOST:PORT" / "unix:PATH". OUT: *sa, *salen. -EINVAL, or
 * -EHOSTUNREACH when HOST does not resolve. */
int rpc__addr_parse(const char *addr, struct sockaddr_storage *sa, socklen_t *salen);

/* A non-blocking, close-on-exec stream socket for sa's family (TCP_NODELAY for TCP). */
int rpc__socket(const struct sockaddr_storage *sa);

#endif
