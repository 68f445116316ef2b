#include "token_bucket.h"

#include <errno.h>
#include <math.h>

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

int tb_set(tb *b, double rate, uint32_t burst)
{
    if (!(rate >= 0) || rate > 1e9 || (rate > 0 && burst == 0))
        return -EINVAL;
    uint64_t interval = rate > 0 ? (uint64_t)ceil(1e9 / rate) : 0;
    atomic_store_explicit(&b->interval_ns, interval, memory_order_relaxed);
    atomic_store_explicit(&b->tau_ns, interval * burst, memory_order_relaxed);
    return 0;
}

int tb_init(tb *b, double rate, uint32_t burst)
{
    atomic_init(&b->tat, 0);
    atomic_init(&b->interval_ns, 0);
    atomic_init(&b->tau_ns, 0);
    return tb_set(b, rate, burst);
}

bool tb_take(tb *b, uint64_t now_ns)
{
    uint64_t interval = LOAD(b->interval_ns), tau = LOAD(b->tau_ns);
    if (!interval)
        return true;
    uint64_t tat = atomic_load_explicit(&b->tat, memory_order_relaxed);
    for (;;) {
        uint64_t next = (tat > now_ns ? tat : now_ns) + interval;
        if (next - now_ns > tau)
            return false;
        if (atomic_compare_exchange_weak_explicit(&b->tat, &tat, next, memory_order_relaxed,
                                                  memory_order_relaxed))
            return true;
    }
}

uint64_t tb_wait_ns(tb *b, uint64_t now_ns)
{
    uint64_t interval = LOAD(b->interval_ns), tau = LOAD(b->tau_ns);
    if (!interval)
        return 0;
    uint64_t tat = atomic_load_explicit(&b->tat, memory_order_relaxed);
    uint64_t next = (tat > now_ns ? tat : now_ns) + interval;
    return next - now_ns > tau ? next - now_ns - tau : 0;
}
