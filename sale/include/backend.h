/*
 * backend.h - where a worker decides requests: stock, per-user limit and
 * the decision record, behind one batch call.
 *
 * Backends: the in-memory inventory (store_memory.h, embedded mode) and Redis
 * (one Lua script call per batch). Every backend keeps the same contract:
 *   - a request id is decided at most once; deciding it again returns the
 *     stored outcome, whatever verdict is passed the second time;
 *   - verdict SK_SUCCESS asks to buy; any other verdict (expired, blocked,
 *     not started, ended) is recorded as the decision unless one exists;
 *   - a failed call (-errno) decided nothing the caller can rely on: the
 *     caller retries the same requests later (idempotency makes that safe).
 */
#ifndef SECKILL_SK_BACKEND_H
#define SECKILL_SK_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "sk.h"

typedef struct sk_decide {
    const char *item_id;
    const char *user_id;
    const uint8_t *request_id; /* 16 bytes */
    enum sk_result verdict;
} sk_decide;

typedef struct sk_backend {
    void *impl;
    /* Decide reqs[0..n). OUT: outs[i].result and outs[i].order_id (other
     * fields untouched); left[i] = stock left after, -1 when unknown. */
    int (*decide)(void *impl, const sk_decide *reqs, size_t n, sk_outcome *outs, int64_t *left);
    /* 1 when item_id is for sale here, 0 when unknown. */
    int (*known)(void *impl, const char *item_id);
} sk_backend;

#endif
