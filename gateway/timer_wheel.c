#include "timer_wheel.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pending.h"

#define SLOTS 1024
#define GW_WHEEL_SHARDS 16

typedef struct wheel_shard {
    pthread_mutex_t lock;
    gw_timer *slots[SLOTS];
    uint64_t tick;  /* the next tick to process (absolute tick number) */
} __attribute__((aligned(64))) wheel_shard;

/* The wheel thread sleeps until the next tick that holds a timer (at most
 * one turn), not every tick: an idle gateway, or one whose requests are all
 * answered long before their deadlines, wakes about once a second instead of
 * once a millisecond. An add earlier than the planned wake-up signals it.
 * Lost wake-ups are excluded Dekker-style: the thread publishes sleep_until,
 * then rereads adds; an adder bumps adds, then reads sleep_until (all
 * seq_cst), so one of them sees the other. */
struct gw_wheel {
    uint64_t tick_ns;
    uint64_t origin_ns; /* tick 0 */
    _Atomic uint64_t count;
    _Atomic uint32_t next_shard;
    atomic_int stop;
    pthread_t thread;
    pthread_mutex_t mu;    /* with cv: the wheel thread's sleep */
    pthread_cond_t cv;     /* CLOCK_MONOTONIC */
    _Atomic uint64_t sleep_until; /* tick the thread sleeps until; 0 while awake */
    _Atomic uint64_t adds;
    _Atomic uint64_t wakeups;
    wheel_shard shards[GW_WHEEL_SHARDS];
};

static void slot_push(gw_timer **head, gw_timer *t)
{
    t->prev = NULL;
    t->next = *head;
    if (*head)
        (*head)->prev = t;
    *head = t;
}

static void slot_unlink(gw_timer **head, gw_timer *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        *head = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->prev = t->next = NULL;
}

/* Place t in shard s; caller holds s->lock. Returns the tick it fires at. */
static uint64_t place(gw_wheel *w, wheel_shard *s, gw_timer *t)
{
    uint64_t at = t->deadline_ns <= w->origin_ns ? 0 : (t->deadline_ns - w->origin_ns) / w->tick_ns;
    if (t->deadline_ns > w->origin_ns && (t->deadline_ns - w->origin_ns) % w->tick_ns)
        at++; /* never early */
    if (at < s->tick)
        at = s->tick;
    uint64_t delta = at - s->tick;
    t->turns = delta / SLOTS;
    t->slot = (uint32_t)(at % SLOTS);
    slot_push(&s->slots[t->slot], t);
    return at;
}

void gw_wheel_add(gw_wheel *w, gw_timer *t, uint64_t deadline_ns)
{
    uint32_t sh = atomic_fetch_add_explicit(&w->next_shard, 1, memory_order_relaxed) %
                  GW_WHEEL_SHARDS;
    wheel_shard *s = &w->shards[sh];
    t->deadline_ns = deadline_ns;
    t->shard = sh;
    pthread_mutex_lock(&s->lock);
    uint64_t at = place(w, s, t);
    t->armed = 1;
    pthread_mutex_unlock(&s->lock);
    atomic_fetch_add_explicit(&w->count, 1, memory_order_relaxed);
    atomic_fetch_add(&w->adds, 1);
    uint64_t until = atomic_load(&w->sleep_until);
    if (until != 0 && at < until) {
        pthread_mutex_lock(&w->mu);
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
    }
}

int gw_wheel_del(gw_wheel *w, gw_timer *t)
{
    wheel_shard *s = &w->shards[t->shard];
    int rc = -ENOENT;
    pthread_mutex_lock(&s->lock);
    if (t->armed) {
        slot_unlink(&s->slots[t->slot], t);
        t->armed = 0;
        rc = 0;
    }
    pthread_mutex_unlock(&s->lock);
    if (rc == 0)
        atomic_fetch_sub_explicit(&w->count, 1, memory_order_relaxed);
    return rc;
}

/* Advance shard s up to tick `upto` (exclusive); collect expired timers. */
static gw_timer *advance(gw_wheel *w, wheel_shard *s, uint64_t upto)
{
    gw_timer *fired = NULL;
    pthread_mutex_lock(&s->lock);
    while (s->tick < upto) {
        gw_timer **slot = &s->slots[s->tick % SLOTS];
        gw_timer *t = *slot, *nx;
        for (; t; t = nx) {
            nx = t->next;
            if (t->turns) {
                t->turns--;
                continue;
            }
            slot_unlink(slot, t);
            t->armed = 0;
            t->next = fired;
            fired = t;
        }
        s->tick++;
    }
    pthread_mutex_unlock(&s->lock);
    (void)w;
    return fired;
}

static void fire_list(gw_wheel *w, gw_timer *t)
{
    while (t) {
        gw_timer *nx = t->next;
        t->next = NULL;
        atomic_fetch_sub_explicit(&w->count, 1, memory_order_relaxed);
        t->fire(t); /* may free t */
        t = nx;
    }
}

/* The first tick from `from` (at most one turn ahead) whose slot in any
 * shard holds a timer; from + SLOTS when none does. */
static uint64_t next_busy_tick(gw_wheel *w, uint64_t from)
{
    uint64_t best = from + SLOTS;
    for (int i = 0; i < GW_WHEEL_SHARDS; i++) {
        wheel_shard *s = &w->shards[i];
        pthread_mutex_lock(&s->lock);
        for (uint64_t k = s->tick; k < best; k++)
            if (s->slots[k % SLOTS]) {
                best = k;
                break;
            }
        pthread_mutex_unlock(&s->lock);
    }
    return best;
}

static void *wheel_main(void *arg)
{
    gw_wheel *w = arg;
    uint64_t next = 1, scanned_adds = 0; /* next: tick to wake at */
    pthread_mutex_lock(&w->mu);
    while (!atomic_load(&w->stop)) {
        if (next > (gw_mono_ns() - w->origin_ns) / w->tick_ns) {
            atomic_store(&w->sleep_until, next);
            if (atomic_load(&w->adds) == scanned_adds) { /* else scan again first */
                uint64_t at = w->origin_ns + next * w->tick_ns;
                struct timespec ts = {.tv_sec = (time_t)(at / 1000000000ULL),
                                      .tv_nsec = (long)(at % 1000000000ULL)};
                pthread_cond_timedwait(&w->cv, &w->mu, &ts);
                atomic_fetch_add_explicit(&w->wakeups, 1, memory_order_relaxed);
            }
            atomic_store(&w->sleep_until, 0);
        }
        pthread_mutex_unlock(&w->mu);
        scanned_adds = atomic_load(&w->adds); /* timers added before this are seen below */
        uint64_t upto = (gw_mono_ns() - w->origin_ns) / w->tick_ns + 1; /* ticks whose start has passed */
        for (int i = 0; i < GW_WHEEL_SHARDS; i++)
            fire_list(w, advance(w, &w->shards[i], upto));
        next = next_busy_tick(w, upto);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

int gw_wheel_create(uint64_t tick_ns, gw_wheel **out)
{
    if (tick_ns == 0)
        return -EINVAL;
    gw_wheel *w = aligned_alloc(64, sizeof *w);
    if (!w)
        return -ENOMEM;
    memset(w, 0, sizeof *w);
    w->tick_ns = tick_ns;
    w->origin_ns = gw_mono_ns();
    for (int i = 0; i < GW_WHEEL_SHARDS; i++)
        pthread_mutex_init(&w->shards[i].lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&w->mu, NULL);
    int rc = pthread_create(&w->thread, NULL, wheel_main, w);
    if (rc) {
        for (int i = 0; i < GW_WHEEL_SHARDS; i++)
            pthread_mutex_destroy(&w->shards[i].lock);
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return -rc;
    }
    *out = w;
    return 0;
}

void gw_wheel_expire_all(gw_wheel *w)
{
    for (int i = 0; i < GW_WHEEL_SHARDS; i++) {
        wheel_shard *s = &w->shards[i];
        gw_timer *fired = NULL;
        pthread_mutex_lock(&s->lock);
        for (int k = 0; k < SLOTS; k++)
            while (s->slots[k]) {
                gw_timer *t = s->slots[k];
                slot_unlink(&s->slots[k], t);
                t->armed = 0;
                t->next = fired;
                fired = t;
            }
        pthread_mutex_unlock(&s->lock);
        fire_list(w, fired);
    }
}

uint64_t gw_wheel_wakeups(gw_wheel *w)
{
    return atomic_load_explicit(&w->wakeups, memory_order_relaxed);
}

uint64_t gw_wheel_count(gw_wheel *w)
{
    return atomic_load_explicit(&w->count, memory_order_relaxed);
}

void gw_wheel_destroy(gw_wheel *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    atomic_store(&w->stop, 1);
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    for (int i = 0; i < GW_WHEEL_SHARDS; i++)
        pthread_mutex_destroy(&w->shards[i].lock);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}
