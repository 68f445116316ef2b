/*
 * client_limits.h - per-client rate limits of POST /seckill: one token bucket per
 * user id and one per client address, in bounded memory.
 *
 * Buckets. Each key (a user id, or an address key: an IPv4 address or an
 * IPv6 /64) has a GCRA bucket like token_bucket.h's: a theoretical arrival
 * time (TAT); a take at now succeeds when max(TAT, now) + interval - now <=
 * burst * interval. Over any window T a key is admitted at most burst +
 * rate * T times while its bucket stays in the table.
 *
 * Table. Per scope (user, ip) a fixed table of sets of GW_LIMITS_WAYS slots,
 * the set chosen by a seeded 64-bit hash of the key (the seed is random per
 * process, so clients cannot aim their keys at one set), each set under its
 * own lock: no global lock on the request path. A key not in its set takes
 * the slot with the smallest TAT: an empty slot, or else the bucket closest
 * to full. Eviction fails safe: a forgotten key starts again with a fresh
 * (full) bucket, never with no limit; and the keys that are spending hardest
 * (TAT far ahead) are the last to be forgotten, so churning other keys does
 * not reset a hammering client's bucket before every quieter one in its set
 * is gone. Two keys with the same 64-bit hash share a bucket (stricter).
 *
 * Client address. The peer address of the connection, unless the peer is in
 * trusted_proxies: then the header those proxies append to (X-Forwarded-For,
 * or the for= parameters of Forwarded) is read from the right, every line of
 * it in order, skipping addresses in trusted_proxies; the first other
 * address is the client's. An entry that is not an address ("unknown", an
 * obfuscated name) stops the walk at the last trusted hop, which is then
 * limited as the client: a wrong header never lifts a limit.
 *
 * Time is passed in (monotonic nanoseconds), so tests drive it.
 */
#ifndef SECKILL_GW_CLIENT_LIMITS_H
#define SECKILL_GW_CLIENT_LIMITS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define GW_LIMITS_WAYS 8
#define GW_LIMITS_MAX_PROXIES 64

typedef struct gw_limits gw_limits;

enum gw_limit_scope { GW_LIMIT_USER, GW_LIMIT_IP, GW_LIMIT_NSCOPES };

typedef struct gw_limits_cfg {
    double rate[GW_LIMIT_NSCOPES];    /* per key, tokens per second; 0 = scope off */
    uint32_t burst[GW_LIMIT_NSCOPES]; /* >= 1 when the rate is set */
    uint32_t capacity;                /* buckets per scope (rounded up to a power of two) */
    const char *const *proxies;       /* trusted_proxies: CIDRs or addresses */
    size_t nproxies;
    int forwarded;        /* 1: read Forwarded for=; 0: X-Forwarded-For */
    double gateway_rate;  /* [token_bucket], for the "gateway" policy; 0 = none */
    uint32_t gateway_burst;
} gw_limits_cfg;

/* What a take left, for the RateLimit and Retry-After headers. */
typedef struct gw_limit_state {
    uint64_t remaining; /* takes that would succeed now */
    uint64_t reset_s;   /* seconds until the bucket is full again */
    uint64_t wait_ns;   /* refused: until a take would succeed; else 0 */
} gw_limit_state;

/* -EINVAL (with a message in err) for a bad rate, burst or proxy entry,
 * -ENOMEM. OUT: *out, freed by gw_limits_destroy. */
int gw_limits_create(const gw_limits_cfg *c, gw_limits **out, char *err, size_t errlen);
/* NULL is a no-op. */
void gw_limits_destroy(gw_limits *l);

/* 1 when the scope has a rate. */
int gw_limits_on(const gw_limits *l, enum gw_limit_scope s);
/* Take a token of key (len bytes) in scope s at now_ns: 1 admitted, 0
 * refused, either way *st filled. A scope that is off always admits. */
int gw_limits_take(gw_limits *l, enum gw_limit_scope s, const void *key, size_t len,
                   uint64_t now_ns, gw_limit_state *st);
/* Keys forgotten for room since creation, per scope. */
uint64_t gw_limits_evictions(const gw_limits *l, enum gw_limit_scope s);

/* 1 when the address is in trusted_proxies. */
int gw_limits_trusted(const gw_limits *l, const struct sockaddr *sa);
/* The client address of a request from peer whose proxy header (all its
 * lines joined by ",", in order; NULL when absent) is hdr, as described
 * above. OUT: *client (a copy of peer or a parsed address; port 0). */
void gw_limits_client(const gw_limits *l, const struct sockaddr *peer, const char *hdr,
                      struct sockaddr_storage *client);

/* RateLimit-Policy for the scopes that are on, plus "gateway" when
 * gateway_rate > 0: e.g. "user";q=5;w=1, "ip";q=50;w=1
 * (q the burst, w the seconds an empty bucket takes to fill). "" when none. */
const char *gw_limits_policy(const gw_limits *l);
/* Append one RateLimit list member ("name";r=R;t=T) to buf (of cap, holding
 * a string), with ", " between members; a member that does not fit is left
 * out whole. */
void gw_limits_state_append(char *buf, size_t cap, const char *name, const gw_limit_state *st);

#endif
