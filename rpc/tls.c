/*
 * tls.c - plain and TLS byte transports (tls.h) and the TLS contexts, on
 * OpenSSL libssl. The rpc handshake and frame MAC of auth.c run unchanged
 * inside TLS: TLS adds confidentiality (and with client certificates a second
 * factor), the shared secret still proves the role.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct rpc__tls {
    SSL_CTX *ctx;
    int server;
};

/* ---- transport ---- */

/* Did the peer refuse our certificate, or we its? Those are -EACCES: the
 * configuration is wrong (or the peer is not ours), not the network. */
static int cert_refused(SSL *ssl)
{
    unsigned long e;

    if (SSL_get_verify_result(ssl) != X509_V_OK)
        return 1;
    while ((e = ERR_get_error()) != 0) {
        if (ERR_GET_LIB(e) != ERR_LIB_SSL)
            continue;
        switch (ERR_GET_REASON(e)) {
        case SSL_R_CERTIFICATE_VERIFY_FAILED:
        case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
        case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
        case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
        case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
        case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
        case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
        case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
        case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
        case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
            ERR_clear_error();
            return 1;
        default:
            break;
        }
    }
    return 0;
}

/* An SSL_* result r <= 0 as this project's error convention. */
static long ssl_err(SSL *ssl, int r, int saved_errno)
{
    switch (SSL_get_error(ssl, r)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return -EAGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        return saved_errno ? -saved_errno : -ECONNRESET;
    default:
        if (cert_refused(ssl))
            return -EACCES;
        ERR_clear_error();
        return -EPROTO;
    }
}

long rpc__tp_read(rpc__tp *t, void *buf, size_t n)
{
    if (!t->ssl) {
        for (;;) {
            ssize_t k = recv(t->fd, buf, n, MSG_DONTWAIT);
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0)
                return errno == EWOULDBLOCK ? -EAGAIN : -errno;
            return (long)k;
        }
    }
    size_t got = 0;
    ERR_clear_error();
    errno = 0;
    int r = SSL_read_ex(t->ssl, buf, n, &got);
    if (r == 1)
        return (long)got;
    return ssl_err(t->ssl, r, errno);
}

long rpc__tp_write(rpc__tp *t, const void *buf, size_t n)
{
    if (!t->ssl) {
        for (;;) {
            ssize_t k = send(t->fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0)
                return errno == EWOULDBLOCK ? -EAGAIN : -errno;
            return (long)k;
        }
    }
    size_t put = 0;
    ERR_clear_error();
    errno = 0;
    int r = SSL_write_ex(t->ssl, buf, n, &put);
    if (r == 1)
        return (long)put;
    long rc = ssl_err(t->ssl, r, errno);
    return rc == 0 ? -EPIPE : rc;
}

int rpc__tp_pending(const rpc__tp *t)
{
    /* decrypted bytes only: with read-ahead off OpenSSL holds no more than
     * the record it is reading, which the socket will report when it is whole */
    return t->ssl && SSL_pending(t->ssl) > 0;
}

void rpc__tp_shutdown(rpc__tp *t)
{
    if (t->ssl && SSL_is_init_finished(t->ssl)) {
        ERR_clear_error();
        SSL_shutdown(t->ssl); /* one try: non-blocking, the answer is not awaited */
        ERR_clear_error();
    }
}

void rpc__tp_close(rpc__tp *t)
{
    if (t->ssl)
        SSL_free(t->ssl);
    t->ssl = NULL;
    if (t->fd >= 0)
        close(t->fd);
    t->fd = -1;
}

int rpc__tls_handshake(rpc__tp *t)
{
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(t->ssl);
    int saved = errno;

    if (r == 1)
        return RPC__TLS_DONE;
    switch (SSL_get_error(t->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        return RPC__TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return RPC__TLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        return -ECONNRESET;
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        return saved ? -saved : -ECONNRESET;
    default:
        if (cert_refused(t->ssl))
            return -EACCES;
        ERR_clear_error();
        return -EPROTO;
    }
}

/* ---- contexts ---- */

/* "KEY: PATH: reason", from errno when the file cannot be opened, else from
 * OpenSSL's error queue. */
static int file_error(const char *key, const char *path, const char *what, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    char reason[256];

    if (!f) {
        snprintf(reason, sizeof(reason), "%s", strerror(errno));
    } else {
        unsigned long e = ERR_peek_last_error();
        fclose(f);
        if (e)
            ERR_error_string_n(e, reason, sizeof(reason));
        else
            snprintf(reason, sizeof(reason), "unusable");
    }
    ERR_clear_error();
    snprintf(err, errlen, "[rpc] %s: %s: %s (%s)", key, path, what, reason);
    return -EINVAL;
}

static int ctx_new(int server, rpc__tls **out, char *err, size_t errlen)
{
    rpc__tls *x = calloc(1, sizeof(*x));

    if (!x)
        return -ENOMEM;
    x->server = server;
    x->ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!x->ctx) {
        free(x);
        snprintf(err, errlen, "TLS: cannot create a context");
        ERR_clear_error();
        return -ENOMEM;
    }
    SSL_CTX_set_min_proto_version(x->ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(x->ctx,
                        SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_TICKET);
    SSL_CTX_set_mode(x->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                 SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(x->ctx, SSL_SESS_CACHE_OFF);
    if (server)
        SSL_CTX_set_num_tickets(x->ctx, 0);
    *out = x;
    return 0;
}

/* Keys are read unencrypted: a daemon has nobody to type a passphrase, and
 * OpenSSL's default would ask the terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return 0;
}

static int load_pair(rpc__tls *x, const char *cert, const char *key, char *err, size_t errlen)
{
    if (SSL_CTX_use_certificate_chain_file(x->ctx, cert) != 1)
        return file_error("tls_cert", cert, "not a PEM certificate", err, errlen);
    /* read the key alone first: a key that loads but is refused by the
     * context is the wrong key for the certificate, not a broken file */
    FILE *f = fopen(key, "r");
    EVP_PKEY *pk = f ? PEM_read_PrivateKey(f, NULL, no_passphrase, NULL) : NULL;
    if (f)
        fclose(f);
    if (!pk)
        return file_error("tls_key", key, "not a PEM private key", err, errlen);
    int used = SSL_CTX_use_PrivateKey(x->ctx, pk);
    EVP_PKEY_free(pk);
    if (used != 1 || SSL_CTX_check_private_key(x->ctx) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "[rpc] tls_key: %s does not match the certificate in tls_cert (%s)",
                 key, cert);
        return -EINVAL;
    }
    return 0;
}

static int load_ca(rpc__tls *x, const char *ca, char *err, size_t errlen)
{
    if (SSL_CTX_load_verify_locations(x->ctx, ca, NULL) != 1)
        return file_error("tls_ca", ca, "not a PEM CA certificate", err, errlen);
    return 0;
}

static int set(const char *s)
{
    return s && *s;
}

int rpc__tls_server_create(const char *cert, const char *key, const char *ca, rpc__tls **out,
                           char *err, size_t errlen)
{
    rpc__tls *x = NULL;
    int rc;

    if (!set(cert) || !set(key)) {
        snprintf(err, errlen, "[rpc] %s: required for TLS on the server",
                 set(cert) ? "tls_key" : "tls_cert");
        return -EINVAL;
    }
    rc = ctx_new(1, &x, err, errlen);
    if (rc)
        return rc;
    rc = load_pair(x, cert, key, err, errlen);
    if (!rc && set(ca)) {
        rc = load_ca(x, ca, err, errlen);
        if (!rc) {
            STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
            if (names)
                SSL_CTX_set_client_CA_list(x->ctx, names);
            ERR_clear_error();
            SSL_CTX_set_verify(x->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        }
    }
    if (rc) {
        rpc__tls_destroy(x);
        return rc;
    }
    *out = x;
    return 0;
}

int rpc__tls_client_create(const char *ca, const char *cert, const char *key, rpc__tls **out,
                           char *err, size_t errlen)
{
    rpc__tls *x = NULL;
    int rc;

    if (!set(ca)) {
        snprintf(err, errlen, "[rpc] tls_ca: required for TLS on the client");
        return -EINVAL;
    }
    if (set(cert) != set(key)) {
        snprintf(err, errlen, "[rpc] %s: required with %s", set(cert) ? "tls_key" : "tls_cert",
                 set(cert) ? "tls_cert" : "tls_key");
        return -EINVAL;
    }
    rc = ctx_new(0, &x, err, errlen);
    if (rc)
        return rc;
    rc = load_ca(x, ca, err, errlen);
    if (!rc && set(cert))
        rc = load_pair(x, cert, key, err, errlen);
    if (rc) {
        rpc__tls_destroy(x);
        return rc;
    }
    SSL_CTX_set_verify(x->ctx, SSL_VERIFY_PEER, NULL);
    *out = x;
    return 0;
}

void rpc__tls_destroy(rpc__tls *x)
{
    if (!x)
        return;
    SSL_CTX_free(x->ctx);
    free(x);
}

int rpc__tls_attach(rpc__tls *x, rpc__tp *t, const char *host)
{
    SSL *ssl = SSL_new(x->ctx);

    if (!ssl) {
        ERR_clear_error();
        return -ENOMEM;
    }
    if (SSL_set_fd(ssl, t->fd) != 1)
        goto out_inval;
    if (x->server) {
        SSL_set_accept_state(ssl);
    } else {
        unsigned char ip[16];
        SSL_set_connect_state(ssl);
        if (!host || !*host)
            goto out_inval;
        if (inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1) {
            /* an address: the certificate must name it as an IP SAN */
            if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) != 1)
                goto out_inval;
        } else {
            if (SSL_set1_host(ssl, host) != 1 || SSL_set_tlsext_host_name(ssl, host) != 1)
                goto out_inval;
        }
    }
    t->ssl = ssl;
    return 0;

out_inval:
    ERR_clear_error();
    SSL_free(ssl);
    return -EINVAL;
}

int rpc_tls_check(int server, const char *cert, const char *key, const char *ca, char *err,
                  size_t errlen)
{
    rpc__tls *x = NULL;
    int rc;

    if (!set(cert) && !set(key) && !set(ca))
        return 0; /* plain */
    rc = server ? rpc__tls_server_create(cert, key, ca, &x, err, errlen)
                : rpc__tls_client_create(ca, cert, key, &x, err, errlen);
    rpc__tls_destroy(x);
    return rc;
}
