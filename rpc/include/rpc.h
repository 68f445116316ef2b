/*
 * rpc.h - the transport between gateways and workers: a server on epoll and
 * a reconnecting client, both speaking the frames of frame.h over TCP or a
 * Unix stream socket.
 *
 * Addresses: "tcp:HOST:PORT" (HOST a name, an IPv4 address or [IPv6]; PORT 0
 * picks a free port, see rpc_server_port) or "unix:/path/to/socket".
 *
 * TLS (optional, tcp: addresses only; tls.h): a server with tls_cert and
 * tls_key speaks only TLS (1.2 at least, 1.3 preferred) on its listener, and
 * with tls_ca as well requires a client certificate signed by that CA. A
 * client with tls_ca speaks TLS to tcp: addresses and verifies the server's
 * certificate against tls_ca and the HOST of the address; with tls_cert and
 * tls_key it presents that certificate. A unix: address stays plain on the
 * client (the socket file's permissions guard it), and a server refuses TLS
 * settings on a unix: listener (-EINVAL) rather than serve plain text to a
 * configuration that asked for TLS. The handshake below and the frame MAC
 * run unchanged inside TLS; the TLS handshake counts against the same
 * handshake deadline and pre-auth budget.
 *
 * Session: a challenge-response handshake (auth.c; docs/rpc.md): HELLO
 * (who, which role, a nonce), CHALLENGE (the server's nonce), AUTH (the
 * client's HMAC proof of the secret), HELLO_OK (the server's proof), or ERROR
 * (code EACCES) followed by closing the connection, without looking at any
 * later frame. The secret itself never goes on the wire. From then on either
 * side sends any frame, each with a MAC under a per-connection session key
 * and a per-direction sequence number; a frame whose MAC fails closes the
 * connection (-EKEYREJECTED). A frame with call_id != 0 is a request; its
 * reply carries the same call_id. PING is answered with PONG by the transport; a peer from
 * which nothing has been received for heartbeat_ms * heartbeat_misses is
 * closed (the client PINGs every heartbeat_ms, so a live peer is never silent).
 *
 * Malformed input (see rpc_decode's errors) closes the connection at once and
 * is counted; a frame's announced length is checked against max_frame (1 KiB
 * until the handshake is done) before anything is allocated for it. Memory per connection is
 * bounded: the read buffer by max_frame, the write queue by max_write_queue (a peer that does not
 * read is disconnected when its queue would pass it).
 *
 * Errors: 0 or a negative errno value, as everywhere in this project.
 * Threads: the server runs one event-loop thread, which calls every server
 * handler; the client runs one I/O thread, which calls every client handler.
 * Handlers must not block (hand slow work to another thread and reply later
 * with rpc_conn_send, holding a reference).
 */
#ifndef SECKILL_RPC_H
#define SECKILL_RPC_H

#include <stddef.h>
#include <stdint.h>

#include "frame.h"

/* Roles a client names in HELLO (bound into the session keys). The transport
 * only carries the role; the application decides what each may do. */
#define RPC_ROLE_PURCHASE 1 /* a purchase worker: requests in, outcomes and stock out */
#define RPC_ROLE_ORDERS 2   /* an order sink: reads the order topic */

typedef struct rpc_server rpc_server;
typedef struct rpc_conn rpc_conn;
typedef struct rpc_client rpc_client;

/* ---- server ---- */

typedef struct rpc_server_handlers {
    void *arg;
    /* A client passed the handshake. hello's bytes are valid during the call
     * (hello->role is what the client asked to be). May be NULL. */
    void (*on_open)(void *arg, rpc_conn *c, const rpc_hello *hello);
    /* Every frame after HELLO except PING/PONG. f points into the connection's
     * read buffer: valid until the handler returns. */
    void (*on_frame)(void *arg, rpc_conn *c, const rpc_frame *f);
    /* An opened connection is gone. reason: 0 peer closed, -ETIMEDOUT heartbeat,
     * -EBADMSG etc. malformed input, -ENOBUFS write queue full, -ECONNABORTED
     * rpc_conn_close, -ESHUTDOWN server stopping, or a socket error. c stays
     * valid until this returns, longer only for holders of a reference.
     * May be NULL. */
    void (*on_close)(void *arg, rpc_conn *c, int reason);
} rpc_server_handlers;

typedef struct rpc_server_config {
    const char *listen;        /* address, copied */
    const void *secret;        /* copied; 1..RPC_SECRET_MAX bytes */
    size_t secret_len;
    rpc_server_handlers handlers;
    uint32_t max_frame;        /* incoming frame limit, header included */
    size_t max_write_queue;    /* bytes queued per connection before it is dropped (>= max_frame) */
    uint32_t heartbeat_ms;     /* interval announced to clients */
    uint32_t heartbeat_misses; /* silent intervals before a peer is closed */
    uint32_t max_conns;        /* open (authenticated) connections; more are refused (EBUSY) */
    uint32_t max_unauth;       /* connections in their handshake; a new one evicts the oldest */
    uint32_t handshake_timeout_ms; /* from accept to an open connection */
    uint32_t auth_delay_ms;    /* a source's first wrong proof is answered this late, */
    uint32_t auth_delay_max_ms; /* doubling with each failure up to this */
    /* TLS: PEM file paths, read at create; NULL or "" = plain TCP. */
    const char *tls_cert; /* certificate chain; with tls_key turns TLS on */
    const char *tls_key;  /* private key of tls_cert */
    const char *tls_ca;   /* optional: require client certificates from this CA */
} rpc_server_config;

typedef struct rpc_server_stats {
    uint64_t accepted;
    uint64_t auth_ok;
    uint64_t auth_failed;   /* wrong proof, or a handshake frame out of order */
    uint64_t malformed;     /* connections closed for a bad frame */
    uint64_t overflowed;    /* connections closed for a full write queue */
    uint64_t timed_out;     /* connections closed by the heartbeat check */
    uint64_t refused;       /* over max_conns */
    uint64_t frames_in;     /* frames decoded (PINGs included) */
    uint64_t open;          /* connections now, in their handshake or open */
    uint64_t mac_failed;    /* connections closed for a frame whose MAC failed */
    uint64_t handshake_timeouts; /* closed for not finishing the handshake in time */
    uint64_t evicted;       /* handshakes closed to make room (max_unauth) */
    uint64_t throttled;     /* CHALLENGEs held back for a source that failed before */
    uint64_t tls_failed;    /* TLS handshakes that failed (not TLS, refused certificate) */
} rpc_server_stats;

/* Defaults: max_frame RPC_DEFAULT_MAX_FRAME, 4 MiB write queue, heartbeat
 * 1000 ms x 3, 1024 connections, 64 in their handshake, handshake deadline
 * 2000 ms, auth delay 100 ms doubling to 1000 ms; listen, secret and
 * handlers unset. */
void rpc_server_config_init(rpc_server_config *cfg);

/* Bind and listen (so rpc_server_port works at once); no thread yet.
 * A stale Unix socket file at the path is replaced; one a live server
 * answers on gives -EADDRINUSE. -EINVAL for TLS files that do not load (see
 * rpc_tls_check for the reason) or TLS on a unix: address. OUT: *out. */
int rpc_server_create(const rpc_server_config *cfg, rpc_server **out);
/* Start the event-loop thread. -EALREADY when started before. */
int rpc_server_start(rpc_server *s);
/* Close every connection (on_close with -ESHUTDOWN) and join the loop thread.
 * The listener stays bound until rpc_server_destroy. Idempotent. */
void rpc_server_stop(rpc_server *s);
/* Stop, close the listener (unlinking a Unix socket) and free. NULL is a no-op. */
void rpc_server_destroy(rpc_server *s);
/* The bound TCP port; -EAFNOSUPPORT for a Unix socket. */
int rpc_server_port(const rpc_server *s);
void rpc_server_get_stats(const rpc_server *s, rpc_server_stats *out);

/* Queue f on c and write what the socket takes now; the loop writes the rest.
 * Any thread. -ENOTCONN once c is closed, -EMSGSIZE for a frame over the
 * peer's limit (nothing sent), -ENOBUFS when the write queue would pass its
 * limit (the connection is then closed), or an encode error. */
int rpc_conn_send(rpc_conn *c, const rpc_frame *f);
/* Close c soon (on the loop thread; on_close reason -ECONNABORTED). Any thread. */
void rpc_conn_close(rpc_conn *c);
/* Keep c's memory valid past on_close; every ref needs one unref. Any thread. */
void rpc_conn_ref(rpc_conn *c);
void rpc_conn_unref(rpc_conn *c);
/* One pointer of user data per connection (e.g. set in on_open). */
void rpc_conn_set_data(rpc_conn *c, void *data);
void *rpc_conn_data(const rpc_conn *c);

/* ---- client ---- */

typedef struct rpc_client_handlers {
    void *arg;
    /* A frame that answers no waiting rpc_client_call: pushes (STOCK,
     * SOLD_OUT, ...), replies to rpc_client_send, replies after a call timed
     * out. f is valid until the handler returns. May be NULL. */
    void (*on_frame)(void *arg, rpc_client *c, const rpc_frame *f);
    /* up = 1 after each successful handshake, 0 after each disconnect
     * (reason as for on_close). May be NULL. */
    void (*on_state)(void *arg, rpc_client *c, int up, int reason);
} rpc_client_handlers;

typedef struct rpc_client_config {
    const char *addr;      /* copied */
    const char *worker_id; /* copied, sent in HELLO */
    const char *group;     /* copied, sent in HELLO */
    uint32_t role;         /* sent in HELLO: RPC_ROLE_* */
    const void *secret;    /* copied; never sent */
    size_t secret_len;
    rpc_client_handlers handlers;
    uint32_t connect_timeout_ms; /* TCP connect + the handshake (which a throttled
                                  * address may see held back for up to a second) */
    uint32_t max_frame;          /* incoming frame limit */
    size_t max_write_queue;      /* rpc_client_send/call fail with -ENOBUFS past this */
    uint32_t heartbeat_ms;       /* PING period */
    uint32_t heartbeat_misses;   /* silent intervals before the client reconnects */
    uint32_t backoff_min_ms;     /* first reconnect delay */
    uint32_t backoff_max_ms;     /* delay cap; each failure doubles, jittered to [d/2, d] */
    /* TLS to tcp: addresses: PEM file paths, read at create; NULL or "" = plain. */
    const char *tls_ca;   /* trust anchors for the server's certificate; turns TLS on */
    const char *tls_cert; /* optional client certificate ... */
    const char *tls_key;  /* ... and its key (both or neither) */
} rpc_client_config;

typedef struct rpc_client_stats {
    uint64_t connects;   /* successful handshakes */
    uint64_t failures;   /* failed connect or handshake attempts */
    uint64_t disconnects;
    uint64_t timeouts;   /* rpc_client_call that timed out */
    uint64_t malformed;  /* disconnects for a bad frame from the server */
    uint64_t mac_failed; /* disconnects for a frame whose MAC failed */
} rpc_client_stats;

/* Defaults: connect timeout 3000 ms, max_frame RPC_DEFAULT_MAX_FRAME, 4 MiB
 * write queue, heartbeat 1000 ms x 3, backoff 50 ms to 5000 ms. */
void rpc_client_config_init(rpc_client_config *cfg);

/* Start the I/O thread, which connects, handshakes and from then on keeps the
 * connection up, reconnecting with backoff after any failure or disconnect.
 * It returns without waiting: see rpc_client_wait_ready. -EINVAL for TLS
 * files that do not load (rpc_tls_check says why). OUT: *out. */
int rpc_client_create(const rpc_client_config *cfg, rpc_client **out);
/* Fail pending calls with -ESHUTDOWN, join the thread, free. NULL is a no-op. */
void rpc_client_destroy(rpc_client *c);
/* Wait up to timeout_ms for the handshake to be done. 0 when connected;
 * else -EACCES when the server refused the last handshake (or failed to
 * prove it knows the secret; with TLS also: its certificate failed
 * verification, or it refused ours), or -ETIMEDOUT. */
int rpc_client_wait_ready(rpc_client *c, uint32_t timeout_ms);
/* 1 when connected and authenticated now. */
int rpc_client_connected(rpc_client *c);

/* Send req (its call_id is replaced by a fresh one) and wait for the frame
 * that answers it, connecting first if needed, all within timeout_ms.
 * Any thread, any number at once.
 * OUT: *reply, an owned copy: release with rpc_frame_release. An ERROR reply
 * is a successful call (check reply->type).
 * Errors: -ETIMEDOUT, -ECONNRESET (the connection dropped before the reply;
 * the request may or may not have been processed: never resent), -EACCES
 * (refused handshake), -ESHUTDOWN, or as rpc_conn_send. */
int rpc_client_call(rpc_client *c, const rpc_frame *req, rpc_frame *reply, uint32_t timeout_ms);
/* Queue f as is (its call_id kept) without waiting. -ENOTCONN when not
 * connected now; otherwise as rpc_conn_send. Any thread. */
int rpc_client_send(rpc_client *c, const rpc_frame *f);
/* Like rpc_client_send, but the frame only joins the write queue: it goes out
 * with the next send, call or PING on the connection, or rpc_client_flush.
 * Frames leave in the order they were queued or sent. */
int rpc_client_queue(rpc_client *c, const rpc_frame *f);
/* Write what is queued now (the rest when the socket takes it). 0, or the
 * socket error (the connection then goes down and reconnects). */
int rpc_client_flush(rpc_client *c);
void rpc_client_get_stats(rpc_client *c, rpc_client_stats *out);

/* ---- configuration check ---- */

/* Load the TLS files of a server (server = 1: cert and key required, ca
 * optional) or a client (ca required, cert and key both or neither) the way
 * create will, to report a bad setting at start. All NULL or "": plain, 0.
 * -EINVAL with a message naming the key ("[rpc] tls_key: ... does not match
 * the certificate in tls_cert") in err; -ENOMEM. */
int rpc_tls_check(int server, const char *cert, const char *key, const char *ca, char *err,
                  size_t errlen);

#endif
