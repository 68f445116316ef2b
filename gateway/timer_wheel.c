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

struct gw_wheel {
    uint64_t tick_ns;
    uint64_t origin_ns; /* tick 0 */
    _Atomic uint64_t count;
    _Atomic uint32_t next_shard;
    atomic_int stop;
    pthread_t thread;
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

/* Place t in shard s; caller holds s->lock. */
static void place(gw_wheel *w, wheel_shard *s, gw_timer *t)
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
}

void gw_wheel_add(gw_wheel *w, gw_timer *t, uint64_t deadline_ns)
{
    uint32_t sh = atomic_fetch_add_explicit(&w->next_shard, 1, memory_order_relaxed) %
                  GW_WHEEL_SHARDS;
    wheel_shard *s = &w->shards[sh];
    t->deadline_ns = deadline_ns;
    t->shard = sh;
    pthread_mutex_lock(&s->lock);
    place(w, s, t);
    t->armed = 1;
    pthread_mutex_unlock(&s->lock);
    atomic_fetch_add_explicit(&w->count, 1, memory_order_relaxed);
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

static void *wheel_main(void *arg)
{
    gw_wheel *w = arg;
    uint64_t next = w->origin_ns + w->tick_ns;
    while (!atomic_load(&w->stop)) {
        struct timespec ts = {.tv_sec = (time_t)(next / 1000000000ULL),
                              .tv_nsec = (long)(next % 1000000000ULL)};
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        uint64_t now = gw_mono_ns();
        uint64_t upto = (now - w->origin_ns) / w->tick_ns + 1; /* ticks whose start has passed */
        for (int i = 0; i < GW_WHEEL_SHARDS; i++)
            fire_list(w, advance(w, &w->shards[i], upto));
        next = w->origin_ns + upto * w->tick_ns;
    }
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
    int rc = pthread_create(&w->thread, NULL, wheel_main, w);
    if (rc) {
        for (int i = 0; i < GW_WHEEL_SHARDS; i++)
            pthread_mutex_destroy(&w->shards[i].lock);
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

uint64_t gw_wheel_count(gw_wheel *w)
{
    return atomic_load_explicit(&w->count, memory_order_relaxed);
}

void gw_wheel_destroy(gw_wheel *w)
{
    if (!w)
        return;
    atomic_store(&w->stop, 1);
    pthread_join(w->thread, NULL);
    for (int i = 0; i < GW_WHEEL_SHARDS; i++)
        pthread_mutex_destroy(&w->shards[i].lock);
    free(w);
}
