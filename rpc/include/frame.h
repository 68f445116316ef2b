/*
 * frame.h - the rpc frame codec: one binary frame <-> one rpc_frame value.
 *
 * The wire layout is described at the top of frame.c. This header is the
 * value side: an rpc_frame is a small struct the caller embeds, with a type,
 * a call id and one payload struct per type.
 *
 * Ownership: rpc_decode never allocates. Every rpc_bytes in a decoded frame
 * points into the buffer that was decoded and is valid only as long as that
 * buffer (for frames handed to a callback: until the callback returns). A
 * frame returned by rpc_client_call owns a private copy instead; release it
 * with rpc_frame_release.
 *
 * Errors of rpc_decode, each specific so a test (or a counter) can tell them
 * apart:
 *   -EAGAIN          fewer bytes than the frame announces (a stream needs more)
 *   -ERANGE          length field smaller than the header
 *   -EMSGSIZE        length field larger than max_frame (checked before
 *                    anything is allocated or waited for)
 *   -EPROTONOSUPPORT version is not RPC_VERSION
 *   -EBADMSG         CRC mismatch
 *   -ENOMSG          unknown frame type
 *   -EPROTO          payload does not parse: a length past the payload end,
 *                    a field past the end, trailing bytes, an unknown flag,
 *                    a MAC flag on a frame too short to hold the MAC
 *   -ENAMETOOLONG    a string longer than its field allows
 */
#ifndef SECKILL_RPC_FRAME_H
#define SECKILL_RPC_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define RPC_VERSION 2
#define RPC_HEADER_SIZE 20
#define RPC_NONCE_SIZE 32 /* HELLO and CHALLENGE nonces */
#define RPC_PROOF_SIZE 32 /* AUTH and HELLO_OK proofs: a full HMAC-SHA256 */
#define RPC_MAC_SIZE 16   /* per-frame MAC trailer: HMAC-SHA256 cut to 128 bits */
#define RPC_FLAG_MAC 0x0001u /* header flag: the frame ends in a RPC_MAC_SIZE MAC */
#define RPC_DEFAULT_MAX_FRAME (1u << 20) /* 1 MiB, header included */
#define RPC_MAX_FRAME_LIMIT (64u << 20)  /* no configuration may go above this */

/* Field limits, checked by both encoder and decoder. */
#define RPC_NAME_MAX 255     /* worker id, group, topic */
#define RPC_SECRET_MAX 256   /* shared secret (never sent) */
#define RPC_MESSAGE_MAX 1024 /* ERROR message */
#define RPC_ITEM_ID_MAX 64   /* = SK_ID_MAX (rpc depends on nothing of ours) */
#define RPC_ORDER_ID_MAX 36  /* = SK_ORDER_ID_MAX: a UUID in text form */

enum rpc_type {
    RPC_HELLO = 1,      /* client -> server, must be the first frame: who, role, nonce */
    RPC_HELLO_OK = 2,   /* server -> client, handshake accepted, with the server's proof */
    RPC_ERROR = 3,      /* either way: code + message; a reply to any request */
    RPC_FETCH = 4,      /* worker -> gateway: give me messages of a topic */
    RPC_FETCH_OK = 5,   /* the batch */
    RPC_COMMIT = 6,     /* worker -> gateway: ack up to an offset */
    RPC_RESULT = 7,     /* worker -> gateway: the outcome of one request */
    RPC_PRODUCE = 8,    /* append a record to a topic */
    RPC_PRODUCE_OK = 9, /* where it was stored */
    RPC_SOLD_OUT = 10,  /* item sold out (payload: item id; left is 0) */
    RPC_STOCK = 11,     /* stock of an item is now `left` */
    RPC_PING = 12,      /* heartbeat; answered by the transport itself */
    RPC_PONG = 13,
    RPC_ACK = 14,       /* empty success reply (COMMIT, RESULT, STOCK) */
    RPC_CHALLENGE = 15, /* server -> client after HELLO: the server's nonce */
    RPC_AUTH = 16,      /* client -> server after CHALLENGE: the client's proof */
    RPC_TYPE_MAX = RPC_AUTH
};

/* A length-counted byte string. Not NUL-terminated. */
typedef struct rpc_bytes {
    const void *ptr; /* may be NULL when len == 0 */
    uint32_t len;
} rpc_bytes;

/* rpc_bytes for a C string (NULL gives the empty string). */
rpc_bytes rpc_str(const char *s);

typedef struct rpc_hello {
    rpc_bytes worker_id; /* <= RPC_NAME_MAX */
    rpc_bytes group;     /* <= RPC_NAME_MAX */
    uint32_t role;       /* what the peer asks to do (rpc.h RPC_ROLE_*); bound into every proof */
    uint8_t nonce[RPC_NONCE_SIZE]; /* the client's fresh random nonce */
    uint32_t max_frame;  /* the largest frame the client accepts (0: RPC_DEFAULT_MAX_FRAME) */
} rpc_hello;

typedef struct rpc_hello_ok {
    uint32_t max_frame;    /* the server's frame limit */
    uint32_t heartbeat_ms; /* the server's heartbeat interval */
    uint8_t proof[RPC_PROOF_SIZE]; /* the server's proof of the secret (auth.c) */
} rpc_hello_ok;

typedef struct rpc_challenge {
    uint8_t nonce[RPC_NONCE_SIZE]; /* the server's fresh random nonce */
} rpc_challenge;

typedef struct rpc_auth_proof {
    uint8_t proof[RPC_PROOF_SIZE]; /* the client's proof of the secret (auth.c) */
} rpc_auth_proof;

typedef struct rpc_error {
    int32_t code;      /* a positive errno value (EACCES: auth refused) or an application code */
    rpc_bytes message; /* <= RPC_MESSAGE_MAX */
} rpc_error;

typedef struct rpc_fetch {
    rpc_bytes topic; /* <= RPC_NAME_MAX */
    uint32_t max_messages;
    uint32_t max_wait_ms;
} rpc_fetch;

typedef struct rpc_msg {
    rpc_bytes topic; /* <= RPC_NAME_MAX; the topic it was read from (main or retry) */
    uint32_t partition;
    uint64_t offset;
    uint32_t delivery;
    rpc_bytes key;
    rpc_bytes value;
} rpc_msg;

/* To encode: set count and msgs (count entries), or leave msgs NULL and set
 * raw/raw_len from a decoded frame to forward it unchanged.
 * After decode: count, raw and raw_len are set, msgs is NULL; walk the batch
 * with rpc_msg_iter (every message was already validated by the decoder). */
typedef struct rpc_fetch_ok {
    uint32_t count;
    const rpc_msg *msgs;
    const void *raw;
    uint32_t raw_len;
} rpc_fetch_ok;

typedef struct rpc_msg_iter {
    const uint8_t *p;
    const uint8_t *end;
    uint32_t left;
} rpc_msg_iter;

void rpc_msg_iter_init(rpc_msg_iter *it, const rpc_fetch_ok *f);
/* OUT: *m. 1 while there is a message, 0 at the end. */
int rpc_msg_iter_next(rpc_msg_iter *it, rpc_msg *m);

typedef struct rpc_commit {
    rpc_bytes topic; /* <= RPC_NAME_MAX */
    uint32_t partition;
    uint64_t offset;
} rpc_commit;

typedef struct rpc_result {
    uint8_t gateway_id[16];
    uint8_t request_id[16];
    uint32_t result;   /* enum sk_result */
    rpc_bytes item_id; /* <= RPC_ITEM_ID_MAX */
    rpc_bytes order_id; /* <= RPC_ORDER_ID_MAX, may be empty */
} rpc_result;

typedef struct rpc_produce {
    rpc_bytes topic; /* <= RPC_NAME_MAX */
    rpc_bytes key;
    rpc_bytes payload;
    uint64_t producer_id;
    uint64_t seq;
} rpc_produce;

typedef struct rpc_produce_ok {
    uint32_t partition;
    uint64_t offset;
} rpc_produce_ok;

/* RPC_STOCK and RPC_SOLD_OUT (which carries no `left` and decodes as 0). */
typedef struct rpc_stock {
    rpc_bytes item_id; /* <= RPC_ITEM_ID_MAX */
    int64_t left;
} rpc_stock;

/* RPC_PING / RPC_PONG: a PONG echoes the PING's value. */
typedef struct rpc_ping {
    uint64_t value;
} rpc_ping;

typedef struct rpc_frame {
    uint8_t type;     /* enum rpc_type */
    uint64_t call_id; /* 0: one-way; else a reply carries the request's id */
    union {
        rpc_hello hello;
        rpc_hello_ok hello_ok;
        rpc_error error;
        rpc_fetch fetch;
        rpc_fetch_ok fetch_ok;
        rpc_commit commit;
        rpc_result result;
        rpc_produce produce;
        rpc_produce_ok produce_ok;
        rpc_stock stock;
        rpc_ping ping;
        rpc_challenge challenge;
        rpc_auth_proof auth;
    } u;
    /* The MAC trailer: NULL for a frame without one (the handshake), else
     * RPC_MAC_SIZE bytes. Decoded: points into the buffer (the MAC itself is
     * checked by the transport, auth.c). Encoded: copied as is; the transport
     * encodes zeros and then seals the trailer in place. */
    const uint8_t *mac;
    void *owned; /* internal: the copy an rpc_client_call reply owns; NULL otherwise */
} rpc_frame;

const char *rpc_type_name(int type);

/* Encoded size of f, header included. -EINVAL for an unknown type or a field
 * over its limit, -EMSGSIZE past RPC_MAX_FRAME_LIMIT. */
int rpc_encoded_size(const rpc_frame *f, size_t *size);

/* Encode f into buf (cap bytes). OUT: *len, the frame size.
 * -ENOSPC when cap is too small, else as rpc_encoded_size. */
int rpc_encode(const rpc_frame *f, void *buf, size_t cap, size_t *len);

/* Decode the frame at the start of buf (len bytes available). max_frame: the
 * largest acceptable frame, header included. OUT: *f (pointing into buf) and
 * *consumed (the frame size). Errors as listed at the top of this header. */
int rpc_decode(const void *buf, size_t len, uint32_t max_frame, rpc_frame *f, size_t *consumed);

/* Check only the header of a frame (len >= RPC_HEADER_SIZE, else -EAGAIN).
 * OUT: *frame_len. -ERANGE, -EMSGSIZE or -EPROTONOSUPPORT as rpc_decode.
 * A stream reader calls this before growing its buffer to *frame_len. */
int rpc_peek_header(const void *buf, size_t len, uint32_t max_frame, uint32_t *frame_len);

/* Free what a frame owns (a no-op for decoded views). Safe to call twice. */
void rpc_frame_release(rpc_frame *f);

/* Constant-time comparison (time depends on the lengths only): 1 when equal. */
int rpc_secret_equal(const void *a, size_t alen, const void *b, size_t blen);

#endif
