/*
 * timer_wheel.h - deadlines for parked requests in event mode.
 *
 * A hashed timing wheel: slots of tick_ns each, 1024 slots per turn; a timer
 * further away than one turn waits in its slot for the turns in between.
 * Sharded: a timer goes to one of GW_WHEEL_SHARDS wheels, each with its own
 * lock, so adds and deletes from many threads do not meet on one lock. One
 * thread advances every wheel each tick and fires what expired, outside the
 * locks. A timer fires at most one tick after its deadline. The thread sleeps
 * until the next tick that holds a timer (at most one turn), so an idle wheel
 * wakes about once per turn, not once per tick.
 *
 * Ownership: the caller owns each gw_timer. After gw_wheel_del returns
 * -ENOENT the timer has fired or is firing: the fire callback is the one to
 * release what it guards (the event park counts a reference for it).
 */
#ifndef SECKILL_GW_TIMER_WHEEL_H
#define SECKILL_GW_TIMER_WHEEL_H

#include <stdint.h>

typedef struct gw_wheel gw_wheel;
typedef struct gw_timer gw_timer;

struct gw_timer {
    gw_timer *prev, *next; /* slot list; owned by the wheel while armed */
    uint64_t deadline_ns;  /* CLOCK_MONOTONIC */
    uint64_t turns;        /* whole turns still to wait */
    uint32_t shard;
    uint32_t slot;
    int armed;
    void (*fire)(gw_timer *t); /* called on the wheel thread, no lock held */
};

/* tick_ns: resolution (e.g. 1 ms). Starts the wheel thread. */
int gw_wheel_create(uint64_t tick_ns, gw_wheel **out);
/* Stops the thread; timers still armed are not fired. */
void gw_wheel_destroy(gw_wheel *w);
/* Arm t to fire at deadline_ns (fires at the next tick when already past). */
void gw_wheel_add(gw_wheel *w, gw_timer *t, uint64_t deadline_ns);
/* Disarm. 0: removed, will not fire. -ENOENT: not armed (fired or firing). */
int gw_wheel_del(gw_wheel *w, gw_timer *t);
/* Fire every armed timer now (shutdown: answer everything that waits). */
void gw_wheel_expire_all(gw_wheel *w);
/* Timers armed right now. */
uint64_t gw_wheel_count(gw_wheel *w);
/* Times the wheel thread has woken from its sleep (tests). */
uint64_t gw_wheel_wakeups(gw_wheel *w);

#endif
