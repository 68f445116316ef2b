/*
 * idempotency.h - Idempotency-Key on POST /seckill.
 *
 * Never twice: the request id of a keyed purchase is derived from what it
 * asks (SHA-256 of user id, item id, key and a generation, shaped as a
 * version-4 UUID), so a retry with the same key and body is the same request,
 * on any gateway. Workers decide a request id at most once (the store keeps
 * its decision), so a retry that reaches them gets the first decision back
 * instead of buying again; a gateway that holds the outcome answers it
 * without queueing.
 *
 * Generations: a request that reached a worker past its deadline is decided
 * "expired" (nothing bought, and its id can never buy), which would leave the
 * key unable to buy forever. So a gateway that knows generation g of a key
 * was decided expired sends the retry as generation g + 1. Generation g + 1 is
 * only ever sent once g is decided expired, so at most one generation of a
 * key can still buy at any time, whichever gateways the retries reach. After
 * GW_IDEM_GENERATIONS expired ones the key is spent (503: use a new key).
 *
 * Another body with the same key (a client bug, or a key reused for another
 * purchase) is refused with 422. For that each gateway remembers, for
 * ttl, which body a key came with: a fixed table of sets of
 * GW_IDEM_WAYS slots, each set under its own lock, holding 64-bit
 * fingerprints of the key and of the body (no strings kept). An expired slot
 * is reused; a set whose slots are all live does not remember the new key
 * (counted): a conflicting body then goes unnoticed, while "never twice",
 * which rests on the request id alone, still holds.
 *
 * Time is passed in (monotonic nanoseconds).
 */
#ifndef SECKILL_GW_IDEMPOTENCY_H
#define SECKILL_GW_IDEMPOTENCY_H

#include <stddef.h>
#include <stdint.h>

#define GW_IDEM_WAYS 8
#define GW_IDEM_KEY_MAX 64 /* SK_ID_MAX */
#define GW_IDEM_GENERATIONS 64

typedef struct gw_idem gw_idem;

/* capacity: keys remembered (rounded up to a power of two of sets); ttl_ns
 * how long. -EINVAL, -ENOMEM. OUT: *out, freed by gw_idem_destroy. */
int gw_idem_create(size_t capacity, uint64_t ttl_ns, gw_idem **out);
void gw_idem_destroy(gw_idem *t);

/* 1 when key (len bytes) is 1-GW_IDEM_KEY_MAX characters of [A-Za-z0-9_.:-]. */
int gw_idem_key_valid(const char *key, size_t len);

/* The request id of generation gen of a keyed purchase. OUT: id. */
void gw_idem_request_id(const char *user, const char *item, const char *key, size_t len,
                        unsigned gen, uint8_t id[16]);

/* Remember key with this body (user, item) at now_ns: 0 new (or its entry
 * expired), 1 seen before with the same body, -EEXIST seen with another
 * body, -ENOSPC not remembered (its set is full of live keys). */
int gw_idem_claim(gw_idem *t, const char *key, size_t len, const char *user, const char *item,
                  uint64_t now_ns);

/* Keys not remembered for want of room, since creation. */
uint64_t gw_idem_full(const gw_idem *t);

#endif
