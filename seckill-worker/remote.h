/*
 * remote.h - a worker process's view of its gateways over rpc/.
 *
 * Two ways to know the gateways:
 *   a fixed list (cfg->gateways): each worker thread gets its own connection
 *     to one gateway (thread i -> gateways[i % n]) and consumes that
 *     gateway's request topic through it: FETCH (long-poll) and COMMIT;
 *   discovery (cfg->discover): the list starts empty and follows
 *     sk_remote_set_gateways (fed from the Redis registry). Each worker thread
 *     keeps its own connection to every known gateway and serves them in
 *     turn, one FETCH each: after a batch the others are polled without
 *     waiting, and only a whole round without messages long-polls (the wait
 *     split among the gateways). A thread picks up list changes before its
 *     next FETCH, never in the middle of a batch: a dropped gateway's
 *     connection is closed there (the gateway releases its partitions), a new
 *     one is connected in the background and served once connected.
 * Either way outcomes go back as RESULT frames on the connection their
 * message came from, before the COMMIT that acknowledges them, so a gateway
 * always sees an outcome before the ack of its message. Stock updates go to
 * every gateway, so all their local sold-out flags flip together.
 */
#ifndef SECKILL_SK_REMOTE_H
#define SECKILL_SK_REMOTE_H

#include <stddef.h>

#include "worker.h"

typedef struct sk_remote sk_remote;

#define SK_REMOTE_MAX_GATEWAYS 64

typedef struct sk_remote_config {
    const char *const *gateways; /* "tcp:HOST:PORT" / "unix:PATH" */
    size_t ngateways;            /* 1..SK_REMOTE_MAX_GATEWAYS, or 0 with discover */
    int discover;                /* 1: no fixed list, see sk_remote_set_gateways */
    const char *secret;
    const char *worker_id; /* unique per worker process; threads append "-<i>" */
    const char *group;     /* consumer group, SK_GROUP for deciding workers */
    uint32_t role;         /* RPC_ROLE_PURCHASE (deciding workers) or RPC_ROLE_ORDERS (the sink) */
    const char *topic;     /* topic to consume, SK_REQUEST_TOPIC */
    /* TLS to tcp: gateways (PEM paths, copied; NULL or "" = plain): tls_ca
     * turns it on and verifies each gateway's certificate; tls_cert and
     * tls_key are the client certificate for gateways that ask for one. */
    const char *tls_ca;
    const char *tls_cert;
    const char *tls_key;
} sk_remote_config;

/* Copies cfg. OUT: *out. Connections are made by the source's open(). */
int sk_remote_create(const sk_remote_config *cfg, sk_remote **out);
void sk_remote_destroy(sk_remote *r);
sk_source sk_remote_source(sk_remote *r);
sk_link sk_remote_link(sk_remote *r);
/* Gateways connected now (for readiness and logs). */
size_t sk_remote_connected(sk_remote *r);
/* Gateways known now. */
size_t sk_remote_count(sk_remote *r);
/* Discovery: the gateways to serve from now on (addresses; duplicates count
 * once, past SK_REMOTE_MAX_GATEWAYS ignored). Gateways not listed are dropped.
 * Any thread. Returns how many were added or dropped, -EPERM with a fixed
 * list, -ENOMEM. */
int sk_remote_set_gateways(sk_remote *r, const char *const *addrs, size_t n);

#endif
