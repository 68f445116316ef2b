/*
 * remote.h - a worker process's view of its gateways over rpc/.
 *
 * Each worker thread gets its own connection to one gateway (thread i ->
 * gateways[i % n]) and consumes that gateway's request topic through it:
 * FETCH (long-poll) and COMMIT. Outcomes go back as RESULT frames on the
 * same connection, before the COMMIT that acknowledges them, so a gateway
 * always sees an outcome before the ack of its message. Stock updates go to
 * every gateway, so all their local sold-out flags flip together.
 */
#ifndef SECKILL_SK_REMOTE_H
#define SECKILL_SK_REMOTE_H

#include <stddef.h>

#include "worker.h"

typedef struct sk_remote sk_remote;

typedef struct sk_remote_config {
    const char *const *gateways; /* "tcp:HOST:PORT" / "unix:PATH" */
    size_t ngateways;
    const char *secret;
    const char *worker_id; /* unique per worker process; threads append "-<i>" */
    const char *group;     /* consumer group, SK_GROUP for deciding workers */
    const char *topic;     /* topic to consume, SK_REQUEST_TOPIC */
} sk_remote_config;

/* Copies cfg. OUT: *out. Connections are made by the source's open(). */
int sk_remote_create(const sk_remote_config *cfg, sk_remote **out);
void sk_remote_destroy(sk_remote *r);
sk_source sk_remote_source(sk_remote *r);
sk_link sk_remote_link(sk_remote *r);
/* Gateways connected now (for readiness and logs). */
size_t sk_remote_connected(sk_remote *r);

#endif
