#include "token_bucket.h"

#include <errno.h>
#include <math.h>

int tb_init(tb *b, double rate, uint32_t burst)
{
    if (!(rate >= 0) || rate > 1e9 || (rate > 0 && burst == 0))
        return -EINVAL;
    atomic_init(&b->tat, 0);
    b->interval_ns = rate > 0 ? (uint64_t)ceil(1e9 / rate) : 0;
    b->tau_ns = b->interval_ns * burst;
    return 0;
}

bool tb_take(tb *b, uint64_t now_ns)
{
    if (!b->interval_ns)
        return true;
    uint64_t tat = atomic_load_explicit(&b->tat, memory_order_relaxed);
    for (;;) {
        uint64_t next = (tat > now_ns ? tat : now_ns) + b->interval_ns;
        if (next - now_ns > b->tau_ns)
            return false;
        if (atomic_compare_exchange_weak_explicit(&b->tat, &tat, next, memory_order_relaxed,
                                                  memory_order_relaxed))
            return true;
    }
}

uint64_t tb_wait_ns(tb *b, uint64_t now_ns)
{
    if (!b->interval_ns)
        return 0;
    uint64_t tat = atomic_load_explicit(&b->tat, memory_order_relaxed);
    uint64_t next = (tat > now_ns ? tat : now_ns) + b->interval_ns;
    return next - now_ns > b->tau_ns ? next - now_ns - b->tau_ns : 0;
}
