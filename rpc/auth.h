/*
 * auth.h - the rpc handshake and the per-frame MAC, without sockets.
 *
 * One rpc_auth per connection, on either side. It is a pure state machine:
 * rpc_auth_start (client) produces the first bytes, rpc_auth_feed consumes
 * handshake bytes as they arrived and produces the bytes to send back, until
 * it reports the peer authenticated (RPC_AUTH_DONE) or refused. After that
 * rpc_auth_seal and rpc_auth_open put and check the MAC of every frame. The
 * protocol, the key schedule and the threat model are described at the top
 * of auth.c and in docs/rpc.md.
 *
 * server.c and client.c drive it over sockets; the unit tests and a fuzz
 * target drive it with byte buffers (a fixed nonce makes a run repeatable).
 *
 * Threads: none of its own. rpc_auth_seal and rpc_auth_open use separate
 * state, so one thread may seal while another opens; each of them must be
 * serialised with itself (the transport holds the connection's lock to seal).
 */
#ifndef SECKILL_RPC_AUTH_H
#define SECKILL_RPC_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "frame.h"

typedef struct rpc_auth rpc_auth;

enum rpc_auth_side { RPC_AUTH_CLIENT = 1, RPC_AUTH_SERVER = 2 };

/* rpc_auth_feed results besides errors */
#define RPC_AUTH_MORE 0 /* keep feeding (out may hold a reply to send) */
#define RPC_AUTH_DONE 1 /* authenticated both ways (out may hold the last reply) */

/* The largest handshake frame either side accepts, header included: a HELLO
 * with two names of RPC_NAME_MAX is 580 bytes. */
#define RPC_AUTH_MAX_FRAME 1024
/* Room rpc_auth_feed and rpc_auth_start may need in out. */
#define RPC_AUTH_OUT_MAX 1024

typedef struct rpc_auth_config {
    int side;            /* enum rpc_auth_side */
    const void *secret;  /* copied; 1..RPC_SECRET_MAX bytes */
    size_t secret_len;
    /* client: what HELLO says */
    const char *worker_id; /* copied, <= RPC_NAME_MAX */
    const char *group;     /* copied, <= RPC_NAME_MAX */
    uint32_t role;
    /* either side: the largest frame it accepts (HELLO or HELLO_OK announce it) */
    uint32_t max_frame;
    /* server: the heartbeat interval HELLO_OK announces */
    uint32_t heartbeat_ms;
    /* NULL: a fresh nonce from the system's CSPRNG. Else RPC_NONCE_SIZE bytes
     * used as this side's nonce: for tests and fuzzing only, a fixed nonce
     * lets a recorded handshake be replayed. */
    const uint8_t *nonce;
} rpc_auth_config;

/* OUT: *out. -EINVAL for a bad config, -ENOMEM, -EIO when the CSPRNG or the
 * HMAC provider fails. */
int rpc_auth_create(const rpc_auth_config *cfg, rpc_auth **out);
void rpc_auth_destroy(rpc_auth *a);

/* Client: the HELLO to send first. OUT: *out_len bytes in out (cap >=
 * RPC_AUTH_OUT_MAX). -EALREADY when called twice or on a server. */
int rpc_auth_start(rpc_auth *a, void *out, size_t cap, size_t *out_len);

/* Consume at most one handshake frame from in[0, len). OUT: *consumed (0
 * when the frame is incomplete: feed again with more bytes), *out_len bytes
 * to send (0 for none; cap >= RPC_AUTH_OUT_MAX). Returns:
 *   RPC_AUTH_MORE  go on;
 *   RPC_AUTH_DONE  both sides proved the secret; the session keys are set
 *                  (server: out holds the sealed HELLO_OK);
 *   -EACCES        refused: a wrong proof (server: out holds ERROR EACCES;
 *                  the proof is checked in constant time), or the server
 *                  said ERROR EACCES, or its proof or HELLO_OK MAC is wrong
 *                  (client);
 *   -EPROTO        a frame this state does not expect (server: out holds
 *                  ERROR EACCES "handshake out of order");
 *   -E...          a server's ERROR with another code (client), or a
 *                  malformed frame (rpc_decode's errors, nothing to send).
 * After anything but RPC_AUTH_MORE, further calls return -EALREADY (DONE)
 * or the same error. */
int rpc_auth_feed(rpc_auth *a, const void *in, size_t len, size_t *consumed, void *out,
                  size_t cap, size_t *out_len);

/* 1 once RPC_AUTH_DONE was returned. */
int rpc_auth_done(const rpc_auth *a);

/* Server, after the HELLO was consumed: what the client said (its nonce
 * included). Views into a; valid until rpc_auth_destroy. NULL before. */
const rpc_hello *rpc_auth_hello(const rpc_auth *a);
/* Client, after RPC_AUTH_DONE: the server's HELLO_OK (limits). NULL before. */
const rpc_hello_ok *rpc_auth_hello_ok(const rpc_auth *a);

/* After RPC_AUTH_DONE. frame[0, len) is one encoded frame whose MAC trailer
 * is there (encoded with rpc_frame.mac pointing at zeros): write its MAC for
 * the next outgoing sequence number. -EINVAL when len cannot hold a frame
 * with a trailer or the handshake is not done. */
int rpc_auth_seal(rpc_auth *a, uint8_t *frame, size_t len);
/* After RPC_AUTH_DONE. Check the MAC of the incoming frame frame[0, len)
 * against the next incoming sequence number, in constant time. 0 (and the
 * sequence number advances), or -EKEYREJECTED: no trailer, or a MAC that is
 * not this frame's at this place in this direction of this connection
 * (tampered, replayed, reordered, dropped before, or from another session). */
int rpc_auth_open(rpc_auth *a, const uint8_t *frame, size_t len);

/* HMAC-SHA256 of data under key, through the same provider (known-answer
 * tests). OUT: out[32]. 0 or -EIO. */
int rpc_auth_hmac(const void *key, size_t key_len, const void *data, size_t len, uint8_t out[32]);

#endif
