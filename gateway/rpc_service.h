/*
 * rpc_service.h - a gateway's embedded queue served to worker processes.
 *
 * Workers connect over rpc/ (a challenge-response handshake proving the
 * shared secret, naming their worker id, consumer group and role), then, as
 * far as their role allows (rpc_service.c; others get ERROR EPERM):
 *   FETCH topic, max, wait  -> FETCH_OK: a batch from the group's partitions
 *                              (long-poll up to wait)
 *   COMMIT topic, partition, offset -> ACK, or ERROR EPERM (lease lost)
 *   RESULT gateway id, request id, outcome -> ACK; ERROR EXDEV when the
 *                              gateway id is not this gateway's, EPERM when
 *                              the request was not delivered to this
 *                              connection or was answered already
 *   STOCK item, left        -> ACK (the local sold-out flag)
 *   PRODUCE                 -> ERROR EPERM, always
 * Each connection is one consumer per topic (consumer id = worker id), so
 * its partitions are released when it closes or its lease runs out.
 * FETCH and COMMIT of one connection run in order on a thread of
 * that connection (a long-poll or a sync flush never blocks the event loop).
 */
#ifndef SECKILL_GW_RPC_SERVICE_H
#define SECKILL_GW_RPC_SERVICE_H

#include <stdint.h>

#include "mq.h"
#include "sk.h"

typedef struct gw_rpcsvc gw_rpcsvc;

typedef struct gw_rpcsvc_hooks {
    void *arg;
    const uint8_t *gateway_id; /* 16 bytes, copied: RESULTs for another are refused (EXDEV) */
    /* An outcome for this gateway: 0, or -EXDEV when the gateway id is not ours. */
    int (*result)(void *arg, const sk_outcome *o);
    void (*stock)(void *arg, const char *item_id, int64_t left);
} gw_rpcsvc_hooks;

/* TLS on the listener (PEM paths, read at create; rpc.h): cert and key
 * serve TLS, ca then requires client certificates from that CA. */
typedef struct gw_rpcsvc_tls {
    const char *cert;
    const char *key;
    const char *ca; /* NULL or "": no client certificates asked */
} gw_rpcsvc_tls;

/* listen: "tcp:HOST:PORT" or "unix:PATH". handshake_timeout_ms: from accept
 * to a proven secret, the TLS handshake included (0: the rpc default). tls:
 * NULL (or an empty cert) for plain TCP. q and hooks outlive the service.
 * -EINVAL for TLS files that do not load. OUT: *out (listening, not yet
 * serving). */
int gw_rpcsvc_create(const char *listen, const char *secret, uint32_t handshake_timeout_ms,
                     const gw_rpcsvc_tls *tls, mq *q, const gw_rpcsvc_hooks *hooks,
                     gw_rpcsvc **out);
int gw_rpcsvc_start(gw_rpcsvc *s);
/* The bound TCP port (or -EAFNOSUPPORT for a Unix socket). */
int gw_rpcsvc_port(const gw_rpcsvc *s);
/* Close every worker connection, wait for their threads, free. */
void gw_rpcsvc_destroy(gw_rpcsvc *s);

typedef struct gw_rpcsvc_stats {
    uint64_t auth_failures;      /* failed handshakes (wrong proof, out of order) */
    uint64_t mac_failures;       /* connections closed for a frame whose MAC failed */
    uint64_t handshake_timeouts; /* closed for not finishing the handshake in time */
    uint64_t denied;             /* frames refused for the peer's role (EPERM) */
    uint64_t tls_failures;       /* TLS handshakes that failed (no TLS, refused certificate) */
} gw_rpcsvc_stats;

/* OUT: *out (zeros for NULL). Any thread. */
void gw_rpcsvc_get_stats(const gw_rpcsvc *s, gw_rpcsvc_stats *out);

#endif
