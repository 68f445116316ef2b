/*
 * opening.c - the fair opening ([admission] open_window_ms = W).
 *
 * When an item's sale starts, bots that fire at starts_at to the
 * millisecond would win a first-come queue. Instead, a purchase of an item
 * that arrives in [starts_at, starts_at + W) and has passed the checks that
 * do not depend on the moment (token, per-client limits, Idempotency-Key,
 * item, window) is held: parked as any purchase (its waiter in the pending
 * table, its deadline timer armed from its arrival, its connection
 * suspended) but its message not produced. When the window closes (one
 * timer per item on the gateway's wheel), the held purchases are put in a
 * random order (Fisher-Yates, seeded from getrandom, so the order cannot be
 * predicted from the outside) and each in turn goes through the checks of
 * the moment (sold out, workers, deadline and stock gates, token bucket):
 * admitted ones are produced in that order, refused ones answered with their
 * refusal. Arriving 1 ms or W - 1 ms after the start makes no difference.
 * A purchase arriving after the window while its purchases are still being
 * released is held too and released after them (first come, first served
 * again), so aiming at the window's close does not jump the line; the
 * flush goes on until nothing is held.
 * A held purchase whose deadline comes first (the wheel fell behind, or the
 * stop's grace ended) is taken back by its answer (gw__opening_forget from
 * finish_parked): never queued, it is answered 503, never 504.
 *
 * Bounds: a held purchase is a suspended connection, so how many can be held
 * is bounded by the connection limit; the held array grows to that. W is at
 * most half of wait_timeout_ms (config), so a held purchase has time left to
 * be decided. A gateway told to stop releases them as usual when the window
 * closes, within its grace (wait_timeout_ms); what a window still holds when
 * the grace is over is answered 503 (never queued: no purchase). Needs park =
 * event.
 *
 * Threads: the wheel's thread only marks a closed window due; one opening
 * thread per gateway flushes, so a window of many thousands of purchases
 * does not hold up the other timers (the deadlines).
 *
 * Locking: an item's hold_lock guards its held array, its timer's arming
 * and each gw_held's state, and orders what the flush writes into a request
 * (its verdict, produce_failed) before its answer reads it. The flush takes
 * it once per purchase, so an answer or a close meanwhile
 * (gw__opening_forget) waits at most for one purchase's produce and finds
 * it either still held (then taken back, never produced) or done.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "internal.h"
#include "log.h"

enum held_state {
    HELD_LISTED,   /* in the item's held array */
    HELD_FLUSHING, /* taken by a flush, not yet released */
    HELD_GONE,     /* its connection closed while the flush had it */
};

struct gw_held {
    req_ctx *rc;  /* holds a reference (gw__purchase_ref) until released */
    size_t index; /* in it->held, while HELD_LISTED */
    enum held_state state;
    mq_record rec;
    char key[SK_ID_MAX + 1];
    uint8_t wire[SK_MSG_MAX];
};

struct gw_opening {
    pthread_mutex_t lock; /* with wake: the items' flush_due, stop */
    pthread_cond_t wake;
    int stop;
    pthread_t tid;
};

static void window_closed(gw_timer *t);
static void flush(gw *g, gw_item *it);

void gw__opening_init_item(gw *g, gw_item *it)
{
    pthread_mutex_init(&it->hold_lock, NULL);
    it->g = g;
    it->hold_timer.fire = window_closed;
    atomic_init(&it->hold_busy, 0);
}

/* The opening thread: flush every item whose window closed, until told to
 * stop (then once more, so nothing due is left behind). */
static void *opening_main(void *arg)
{
    gw *g = arg;
    struct gw_opening *o = g->opening;
    pthread_mutex_lock(&o->lock);
    for (;;) {
        int any = 0;
        for (size_t i = 0; i < g->nitems; i++) {
            gw_item *it = &g->items[i];
            if (!it->flush_due)
                continue;
            it->flush_due = 0;
            any = 1;
            pthread_mutex_unlock(&o->lock);
            flush(g, it);
            pthread_mutex_lock(&o->lock);
        }
        if (!any && o->stop)
            break;
        if (!any)
            pthread_cond_wait(&o->wake, &o->lock);
    }
    pthread_mutex_unlock(&o->lock);
    return NULL;
}

int gw__opening_start(gw *g, char *err, size_t errlen)
{
    if (!g->cfg->adm_open_window_ms)
        return 0;
    struct gw_opening *o = calloc(1, sizeof *o);
    if (!o) {
        snprintf(err, errlen, "fair opening: %s", strerror(ENOMEM));
        return -ENOMEM;
    }
    pthread_mutex_init(&o->lock, NULL);
    pthread_cond_init(&o->wake, NULL);
    g->opening = o;
    int rc = -pthread_create(&o->tid, NULL, opening_main, g);
    if (rc < 0) {
        snprintf(err, errlen, "fair opening thread: %s", strerror(-rc));
        pthread_cond_destroy(&o->wake);
        pthread_mutex_destroy(&o->lock);
        free(o);
        g->opening = NULL;
    }
    return rc;
}

void gw__opening_stop(gw *g)
{
    struct gw_opening *o = g->opening;
    if (!o)
        return;
    pthread_mutex_lock(&o->lock);
    o->stop = 1;
    pthread_cond_signal(&o->wake);
    pthread_mutex_unlock(&o->lock);
    pthread_join(o->tid, NULL);
    pthread_cond_destroy(&o->wake);
    pthread_mutex_destroy(&o->lock);
    free(o);
    g->opening = NULL;
}

/* The window of the timer's item closed (wheel thread): hand it to the
 * opening thread (g->opening is set before the wheel starts and cleared
 * after it is gone); without one, flush here. */
static void window_closed(gw_timer *t)
{
    gw_item *it = (gw_item *)((char *)t - offsetof(gw_item, hold_timer));
    struct gw_opening *o = it->g->opening;
    if (!o) {
        flush(it->g, it);
        return;
    }
    pthread_mutex_lock(&o->lock);
    it->flush_due = 1;
    pthread_cond_signal(&o->wake);
    pthread_mutex_unlock(&o->lock);
}

void gw__opening_release(gw *g)
{
    for (size_t i = 0; i < g->nitems; i++) {
        gw_item *it = &g->items[i];
        /* the daemons closed every connection, which forgot its hold */
        free(it->held);
        it->held = NULL;
        pthread_mutex_destroy(&it->hold_lock);
    }
}

int gw__opening_open(const gw *g, const gw_item *it, int64_t now_ms)
{
    uint32_t w = g->cfg->adm_open_window_ms;
    if (!w)
        return 0;
    int64_t start = atomic_load_explicit(&it->starts_at, memory_order_relaxed);
    if (!start || now_ms < start * 1000)
        return 0;
    /* in the window; or after it while its purchases are not all released:
     * then held too, queued after them (first come, first served again) */
    return now_ms < start * 1000 + w || atomic_load(&it->hold_busy);
}

int gw__opening_hold(gw *g, gw_item *it, req_ctx *rc, const mq_record *rec, int64_t now_ms)
{
    struct gw_held *h = malloc(sizeof *h);
    if (!h)
        return -ENOMEM;
    h->rc = rc;
    h->state = HELD_LISTED;
    memcpy(h->wire, rec->value, rec->value_len);
    snprintf(h->key, sizeof h->key, "%.*s", (int)rec->key_len, (const char *)rec->key);
    h->rec = *rec;
    h->rec.key = h->key;
    h->rec.value = h->wire;
    rc->hold_item = it;
    int64_t close_ms = atomic_load_explicit(&it->starts_at, memory_order_relaxed) * 1000 +
                       g->cfg->adm_open_window_ms;
    pthread_mutex_lock(&it->hold_lock);
    if (it->nheld == it->held_cap) {
        size_t cap = it->held_cap ? it->held_cap * 2 : 256;
        struct gw_held **v = realloc(it->held, cap * sizeof *v);
        if (!v) {
            pthread_mutex_unlock(&it->hold_lock);
            free(h);
            return -ENOMEM;
        }
        it->held = v;
        it->held_cap = cap;
    }
    gw__purchase_ref(rc); /* the hold's reference */
    h->index = it->nheld;
    it->held[it->nheld++] = h;
    rc->held = h;
    if (!it->hold_armed) { /* the first held purchase of this window */
        it->hold_armed = 1;
        atomic_store(&it->hold_busy, 1);
        int64_t left_ms = close_ms > now_ms ? close_ms - now_ms : 0;
        gw_wheel_add(g->wheel, &it->hold_timer, gw_mono_ns() + (uint64_t)left_ms * 1000000ULL);
    }
    pthread_mutex_unlock(&it->hold_lock);
    atomic_fetch_add_explicit(&g->metrics.open_held, 1, memory_order_relaxed);
    return 0;
}

int gw__opening_forget(req_ctx *rc)
{
    gw_item *it = rc->hold_item;
    struct gw_held *h = NULL;
    pthread_mutex_lock(&it->hold_lock);
    int held = rc->held != NULL;
    if (rc->held && rc->held->state == HELD_LISTED) {
        h = rc->held;
        struct gw_held *last = it->held[--it->nheld];
        it->held[h->index] = last;
        last->index = h->index;
        rc->held = NULL;
    } else if (rc->held) {
        rc->held->state = HELD_GONE; /* the flush releases it */
    }
    pthread_mutex_unlock(&it->hold_lock);
    if (h) {
        free(h);
        gw__purchase_unref(rc); /* the hold's; the caller still holds MHD's */
    }
    return held;
}

/* splitmix64: a fast generator for the shuffle; its seed is what must be
 * unpredictable, and getrandom gives that. */
static uint64_t next_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void shuffle(struct gw_held **v, size_t n)
{
    uint64_t s;
    if (getrandom(&s, sizeof s, 0) != (ssize_t)sizeof s)
        s = gw_mono_ns() ^ (uint64_t)(uintptr_t)v; /* not expected after boot */
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(next_rand(&s) % i); /* bias below 2^-40 for any real n */
        struct gw_held *t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

/* One held purchase, in its turn: produced, or refused. Under hold_lock. */
static void release(gw *g, gw_item *it, struct gw_held *h)
{
    req_ctx *rc = h->rc;
    uint64_t wait = 0;
    enum gw_verdict v = atomic_load(&g->grace_over)
                            ? GW_V_STOPPING
                            : gw__purchase_verdict(g, rc, it, gw_mono_ns(), &wait);
    if (v == GW_V_ADMIT)
        gw__purchase_release_held(g, rc, &h->rec);
    else
        gw__purchase_refuse_held(g, rc, v, wait);
}

/* Release v[0..n) in that order; returns how many had gone. */
static size_t release_all(gw *g, gw_item *it, struct gw_held **v, size_t n)
{
    size_t gone = 0;
    for (size_t i = 0; i < n; i++) {
        struct gw_held *h = v[i];
        pthread_mutex_lock(&it->hold_lock);
        if (h->state == HELD_FLUSHING)
            release(g, it, h);
        else
            gone++;
        h->rc->held = NULL;
        pthread_mutex_unlock(&it->hold_lock);
        gw__purchase_unref(h->rc); /* the hold's */
        free(h);
    }
    return gone;
}

/* Take what it holds now (under hold_lock); *n 0 when nothing: the window
 * and its flush are over then. */
static struct gw_held **take_held(gw_item *it, size_t *n)
{
    pthread_mutex_lock(&it->hold_lock);
    struct gw_held **v = it->held;
    *n = it->nheld;
    it->held = NULL;
    it->nheld = it->held_cap = 0;
    for (size_t i = 0; i < *n; i++)
        v[i]->state = HELD_FLUSHING;
    if (!*n) {
        it->hold_armed = 0;
        atomic_store(&it->hold_busy, 0);
    }
    pthread_mutex_unlock(&it->hold_lock);
    return v;
}

/* The window of it closed (opening thread): release what it held in a
 * random order, then what arrived meanwhile in arrival order, until nothing
 * is held. */
static void flush(gw *g, gw_item *it)
{
    size_t n, total = 0, gone = 0;
    struct gw_held **v = take_held(it, &n);
    shuffle(v, n);
    while (n) {
        gone += release_all(g, it, v, n);
        total += n;
        free(v);
        v = take_held(it, &n);
    }
    free(v);
    atomic_fetch_add_explicit(&g->metrics.open_flushes, 1, memory_order_relaxed);
    sk_log(SK_LOG_INFO, "gateway", NULL,
           "item %s: opening window closed, %zu held purchases released in a random order%s",
           it->c->id, total - gone, gone ? " (the others were answered before)" : "");
}
