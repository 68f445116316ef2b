/*
 * pending.h - the pending table: request id -> parked HTTP request.
 *
 * A handler adds its waiter before it produces the request message, then
 * parks. The outcome callback (any worker thread, or the RPC receiver later)
 * looks the id up and completes the waiter; a timed-out handler removes its
 * waiter first. Both run under the waiter's shard lock, so exactly one of
 * "completed" and "timed out" happens, and once the waiter is out of the table
 * nothing touches it again (the handler may free it).
 *
 * The table is sharded (no global lock). The park itself is pluggable: a
 * waiter with wake == NULL is parked on its condition variable by
 * gw_pending_wait (thread-per-connection); an event-driven park sets wake,
 * which is called under the shard lock when the outcome arrives.
 */
#ifndef SECKILL_GW_PENDING_H
#define SECKILL_GW_PENDING_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "sk.h"

typedef struct gw_pending gw_pending;
typedef struct gw_waiter gw_waiter;

struct gw_waiter {
    gw_waiter *next;       /* shard chain; owned by the table while parked */
    uint8_t id[16];
    int done;              /* outcome arrived; guarded by the shard lock */
    sk_outcome out;        /* valid once done */
    void (*wake)(gw_waiter *w); /* NULL: condvar park */
    void *user;
    pthread_cond_t cond;
};

/* shards: rounded up to a power of two. OUT: *out. */
int gw_pending_create(size_t shards, gw_pending **out);
void gw_pending_destroy(gw_pending *p);

/* Condvar park: init/release the waiter's condition variable (CLOCK_MONOTONIC). */
int gw_waiter_init(gw_waiter *w, const uint8_t id[16]);
void gw_waiter_release(gw_waiter *w);

void gw_pending_add(gw_pending *p, gw_waiter *w);
/* Park until the outcome arrives or CLOCK_MONOTONIC reaches deadline_ns.
 * 0: w->out holds the outcome. -ETIMEDOUT: w was removed without one. Either
 * way w is out of the table on return. */
int gw_pending_wait(gw_pending *p, gw_waiter *w, uint64_t deadline_ns);
/* Remove w unless its outcome already arrived. 0: removed. -EALREADY: done. */
int gw_pending_cancel(gw_pending *p, gw_waiter *w);
/* Hand o to the waiter of o->request_id. 0: delivered. -ENOENT: nobody
 * waits (timed out already, or unknown): the caller records it as late. */
int gw_pending_complete(gw_pending *p, const sk_outcome *o);
/* 1 when a request with this id is parked now. */
int gw_pending_contains(gw_pending *p, const uint8_t id[16]);
size_t gw_pending_count(gw_pending *p);

uint64_t gw_mono_ns(void);

#endif
