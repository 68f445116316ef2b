/*
 * tls.h - the byte transport under the rpc frames (prefix rpc__tp, rpc__tls;
 * internal to rpc/): a plain stream socket, or TLS (OpenSSL libssl) over it.
 *
 * rpc__tp is what server.c, client.c and io.c read from and write to; they
 * never ask which kind it is. With ssl == NULL the calls are recv/send on fd;
 * with an SSL* they are SSL_read/SSL_write on it, and the TLS handshake runs
 * first (rpc__tls_handshake) until it reports done.
 *
 * An SSL object must never be used by two threads at once, not even one
 * reading and one writing: callers hold the same lock around every call on
 * a TLS transport (the connection's lock in server.c, `mu` in client.c).
 *
 * TLS decrypts a whole record at a time: bytes of a record that did not fit
 * the caller's buffer stay inside OpenSSL, where poll/epoll cannot see them.
 * rpc__tp_pending says so; callers read again without waiting for the socket.
 *
 * Contexts (rpc__tls, one per server or client, shared by its connections):
 * TLS 1.2 at least, 1.3 preferred; no renegotiation, no session tickets (a
 * connection lives for hours: resumption would save nothing), an unexpected
 * EOF reads as EOF (frames are length-prefixed and MACed: a cut is noticed
 * by the frame layer). Server: certificate and key, and with a CA file it
 * requires a client certificate signed by that CA. Client: the CA file it
 * trusts (required: a TLS client that verifies nothing protects nothing),
 * the name or IP address of the gateway checked against the certificate,
 * and with a certificate and key, that client certificate.
 */
#ifndef SECKILL_RPC_TLS_H
#define SECKILL_RPC_TLS_H

#include <stddef.h>

typedef struct ssl_st SSL;

typedef struct rpc__tp {
    int fd;   /* -1 when closed */
    SSL *ssl; /* NULL: plain */
} rpc__tp;

/* >0 bytes read, 0 at EOF, -EAGAIN, or -errno (-EPROTO for a TLS error). */
long rpc__tp_read(rpc__tp *t, void *buf, size_t n);
/* >0 bytes written (maybe fewer than n), -EAGAIN, or -errno. Retried after
 * -EAGAIN with the same bytes at the front (they may have moved in memory). */
long rpc__tp_write(rpc__tp *t, const void *buf, size_t n);
/* 1 when decrypted bytes wait inside OpenSSL (read them before polling). */
int rpc__tp_pending(const rpc__tp *t);
/* Send a TLS close_notify if it can go without waiting (no-op when plain). */
void rpc__tp_shutdown(rpc__tp *t);
/* Free the SSL and close fd; t is then closed (fd -1, ssl NULL). */
void rpc__tp_close(rpc__tp *t);

typedef struct rpc__tls rpc__tls;

/* A server context: cert (PEM chain) and key required; ca optional (then a
 * client certificate is required and verified). -EINVAL with a message in
 * err that names the key at fault. OUT: *out. */
int rpc__tls_server_create(const char *cert, const char *key, const char *ca, rpc__tls **out,
                           char *err, size_t errlen);
/* A client context: ca required; cert and key both or neither. */
int rpc__tls_client_create(const char *ca, const char *cert, const char *key, rpc__tls **out,
                           char *err, size_t errlen);
void rpc__tls_destroy(rpc__tls *x);

/* Start TLS on the connected socket t->fd: t->ssl is set. host (client
 * only): the name or IP address to verify the server's certificate against.
 * 0, -ENOMEM or -EINVAL. */
int rpc__tls_attach(rpc__tls *x, rpc__tp *t, const char *host);

#define RPC__TLS_DONE 0
#define RPC__TLS_WANT_READ 1
#define RPC__TLS_WANT_WRITE 2
/* One step of the handshake: RPC__TLS_DONE, RPC__TLS_WANT_*, or an error:
 * -EACCES when a certificate was refused (ours by the peer or the peer's by
 * us), -ECONNRESET when the peer closed, -EPROTO for anything else (a peer
 * that does not speak TLS). */
int rpc__tls_handshake(rpc__tp *t);

#endif
