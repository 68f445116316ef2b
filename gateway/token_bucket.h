/*
 * token_bucket.h - lock-free admission rate limit.
 *
 * Implemented as GCRA, the virtual-scheduling form of a token bucket: one
 * atomic word, the theoretical arrival time (TAT) of the next token. A take
 * at `now` succeeds when max(TAT, now) + interval - now <= burst * interval,
 * and moves TAT forward by one interval with a compare-and-swap. Over any
 * window T the accepted takes are at most burst + rate * T (interval is
 * rounded up, so rounding only ever makes the limit stricter).
 *
 * Time is passed in (monotonic nanoseconds), so tests drive it.
 */
#ifndef SECKILL_TB_H
#define SECKILL_TB_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct tb {
    _Atomic uint64_t tat;         /* ns */
    _Atomic uint64_t interval_ns; /* 0 = unlimited */
    _Atomic uint64_t tau_ns;      /* burst * interval */
} tb;

/* rate in tokens per second (0 = unlimited), burst >= 1. -EINVAL otherwise. */
int tb_init(tb *b, double rate, uint32_t burst);
/* Change rate and burst while takes go on (a configuration reload); the
 * same checks as tb_init. A take racing it may pair the old interval with
 * the new burst once; the next takes see both new. */
int tb_set(tb *b, double rate, uint32_t burst);
bool tb_take(tb *b, uint64_t now_ns);
/* Nanoseconds until a take would succeed (0 when it would now). */
uint64_t tb_wait_ns(tb *b, uint64_t now_ns);

#endif
