/*
 * test_time.h - the clock helpers every test uses.
 */
#ifndef SECKILL_TESTS_TEST_TIME_H
#define SECKILL_TESTS_TEST_TIME_H

#include <stdint.h>
#include <time.h>

static inline void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* CLOCK_MONOTONIC in milliseconds. */
static inline uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

#endif
