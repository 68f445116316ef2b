/*
 * test_worker.c - worker threads over the real embedded queue and the real
 * in-memory inventory; the backend and the link are wrapped to inject faults.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uuid/uuid.h>

#include "sale/store_memory.h"
#include "tests/test_time.h"
#include "message.h"
#include "worker.h"

#define MAXO 4096

typedef struct rig {
    mq *q;
    mq_topic *t;
    sk_inventory *inv;
    sk_backend inner;
    atomic_int fail_decides;  /* backend calls still to fail */
    atomic_int lost_decides;  /* backend calls still to take effect, then fail */
    atomic_int fail_after_lost; /* added to fail_decides by a lost call */
    atomic_int fail_delivers; /* deliveries still to refuse */
    atomic_int decide_calls;
    pthread_mutex_t lock;
    sk_outcome outs[MAXO];
    int nouts;
    int64_t last_stock;
    int stock_calls;
    int unflushed;             /* delivered since the link's last flush */
    int decides_with_unflushed; /* backend calls made while outcomes waited */
    uint8_t gw[16];
} rig;

/* 1 when *n was positive and is now one less; it never goes below 0. */
static int take(atomic_int *n)
{
    int v = atomic_load(n);
    while (v > 0 && !atomic_compare_exchange_weak(n, &v, v - 1))
        ;
    return v > 0;
}

static int flaky_decide(void *impl, const sk_decide *reqs, size_t n, sk_outcome *outs,
                        int64_t *left)
{
    rig *r = impl;
    atomic_fetch_add(&r->decide_calls, 1);
    pthread_mutex_lock(&r->lock);
    r->decides_with_unflushed += r->unflushed > 0;
    pthread_mutex_unlock(&r->lock);
    if (take(&r->fail_decides))
        return -ETIMEDOUT;
    int rc = r->inner.decide(r->inner.impl, reqs, n, outs, left);
    /* a call that ran but whose reply was lost, as a Redis call that timed
     * out on the client side */
    if (rc == 0 && take(&r->lost_decides)) {
        atomic_fetch_add(&r->fail_decides, atomic_load(&r->fail_after_lost));
        return -ETIMEDOUT;
    }
    return rc;
}

static int flaky_known(void *impl, const char *item)
{
    rig *r = impl;
    return r->inner.known(r->inner.impl, item);
}

static int deliver(void *arg, const sk_outcome *o)
{
    rig *r = arg;
    if (atomic_fetch_sub(&r->fail_delivers, 1) > 0)
        return -ECONNRESET;
    pthread_mutex_lock(&r->lock);
    if (r->nouts < MAXO)
        r->outs[r->nouts++] = *o;
    r->unflushed++;
    pthread_mutex_unlock(&r->lock);
    return 0;
}

/* A link that holds outcomes until flushed (as the rpc link does). */
static void flush(void *arg)
{
    rig *r = arg;
    pthread_mutex_lock(&r->lock);
    r->unflushed = 0;
    pthread_mutex_unlock(&r->lock);
}

static void stock(void *arg, const char *item, int64_t left)
{
    rig *r = arg;
    (void)item;
    pthread_mutex_lock(&r->lock);
    r->stock_calls++;
    if (left < r->last_stock)
        r->last_stock = left;
    pthread_mutex_unlock(&r->lock);
}

static void rig_init(rig *r, int64_t stock_n)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
    r->last_stock = INT64_MAX;
    uuid_generate_random(r->gw);
    assert_int_equal(mq_create(NULL, &r->q), 0);
    mq_topic_config tc;
    mq_topic_config_init(&tc);
    tc.partitions = 2;
    tc.ack_timeout_ms = 50; /* redeliver fast */
    tc.max_deliveries = 100;
    assert_int_equal(mq_topic_open(r->q, SK_REQUEST_TOPIC, &tc, &r->t), 0);
    sk_item_spec items[] = {{"demo", stock_n, 1}, {"later", 10, 1}};
    assert_int_equal(sk_inventory_create(items, 2, 1000, &r->inv), 0);
    r->inner = sk_inventory_backend(r->inv);
}

static void rig_release(rig *r)
{
    mq_destroy(r->q);
    sk_inventory_destroy(r->inv);
    pthread_mutex_destroy(&r->lock);
}

static void produce(rig *r, const char *user, const char *item, int64_t deadline_delta_ms,
                    uint8_t rid_out[16])
{
    sk_msg m = {0};
    uint8_t wire[SK_MSG_MAX];
    memcpy(m.gateway_id, r->gw, 16);
    uuid_generate_random(m.request_id);
    if (rid_out)
        memcpy(rid_out, m.request_id, 16);
    m.admitted_at_ms = sk_wall_ms();
    m.deadline_ms = (uint64_t)((int64_t)m.admitted_at_ms + deadline_delta_ms);
    snprintf(m.user_id, sizeof m.user_id, "%s", user);
    snprintf(m.item_id, sizeof m.item_id, "%s", item);
    int n = sk_msg_encode(&m, wire, sizeof wire);
    assert_true(n > 0);
    mq_record rec = {.value = wire, .value_len = (size_t)n, .partition = MQ_PARTITION_ANY};
    assert_int_equal(mq_produce(r->t, &rec, NULL, NULL), 0);
}

static int wait_outs(rig *r, int want, int ms)
{
    for (int i = 0; i < ms; i++) {
        pthread_mutex_lock(&r->lock);
        int n = r->nouts;
        pthread_mutex_unlock(&r->lock);
        if (n >= want)
            return n;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return r->nouts;
}

static void wait_drained(rig *r)
{
    for (int i = 0; i < 5000 && mq_topic_backlog(r->t) > 0; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(mq_topic_backlog(r->t), 0);
}

static sk_worker *start(rig *r, const sk_worker_config *extra)
{
    static const char *const block[] = {"bot"};
    static const sk_item_window win[] = {{"later", 4102444800LL, 0}}; /* 2100-01-01 */
    sk_worker_config wc = {.threads = 2, .batch = 16, .name = "t", .blocklist = block,
                           .nblocklist = 1, .windows = win, .nwindows = 1};
    if (extra)
        wc = *extra;
    sk_source src = sk_source_mq(r->t);
    sk_backend be = {.impl = r, .decide = flaky_decide, .known = flaky_known};
    sk_link link = {.arg = r, .deliver = deliver, .stock = stock, .flush = flush};
    sk_worker *w = NULL;
    assert_int_equal(sk_worker_start(&wc, &src, &be, &link, &w), 0);
    return w;
}

static int count(rig *r, enum sk_result res)
{
    int n = 0;
    for (int i = 0; i < r->nouts; i++)
        n += r->outs[i].result == res;
    return n;
}

static void test_sale_and_verdicts(void **state)
{
    (void)state;
    rig r;
    rig_init(&r, 5);
    sk_worker *w = start(&r, NULL);
    char user[32];
    for (int i = 0; i < 20; i++) {
        snprintf(user, sizeof user, "u%d", i % 10);
        produce(&r, user, "demo", 5000, NULL);
    }
    produce(&r, "bot", "demo", 5000, NULL);      /* blocklist */
    produce(&r, "u1", "later", 5000, NULL);      /* not started */
    produce(&r, "u1", "demo", -1000, NULL);      /* past its deadline */
    produce(&r, "u1", "nothing", 5000, NULL);    /* unknown item */
    mq_record junk = {.value = "junk", .value_len = 4, .partition = 0};
    assert_int_equal(mq_produce(r.t, &junk, NULL, NULL), 0);
    assert_int_equal(wait_outs(&r, 24, 5000), 24);
    wait_drained(&r);
    sk_worker_stats st;
    sk_worker_get_stats(w, &st);
    sk_worker_stop(w);

    assert_int_equal(count(&r, SK_SUCCESS), 5);
    assert_int_equal(count(&r, SK_SOLD_OUT) + count(&r, SK_ALREADY_PURCHASED), 15);
    assert_int_equal(count(&r, SK_BLOCKED), 1);
    assert_int_equal(count(&r, SK_NOT_STARTED), 1);
    assert_int_equal(count(&r, SK_EXPIRED), 1);
    assert_int_equal(count(&r, SK_UNKNOWN_ITEM), 1);
    assert_int_equal(st.bad_messages, 1);
    assert_int_equal(sk_inventory_left(r.inv, 0), 0); /* the expired one took nothing */
    assert_int_equal(r.last_stock, 0);
    for (int i = 0; i < r.nouts; i++)
        assert_memory_equal(r.outs[i].gateway_id, r.gw, 16);
    rig_release(&r);
}

/* A reload replaces the blocklist and the windows while the threads run;
 * the caller's arrays may go right after (they are copied). */
static void test_set_risk_while_running(void **state)
{
    (void)state;
    rig r;
    rig_init(&r, 5);
    sk_worker *w = start(&r, NULL);
    produce(&r, "bot", "demo", 5000, NULL);
    assert_int_equal(wait_outs(&r, 1, 5000), 1);
    char *block[] = {strdup("u7")};
    char later_id[] = "later";
    sk_item_window win[] = {{later_id, 0, 0}}; /* "later" open now */
    assert_int_equal(sk_worker_set_risk(w, (const char *const *)block, 1, win, 1), 0);
    free(block[0]);
    memset(later_id, 'x', 5);
    produce(&r, "bot", "demo", 5000, NULL);  /* no longer blocked */
    produce(&r, "u7", "demo", 5000, NULL);   /* blocked now */
    produce(&r, "u8", "later", 5000, NULL);  /* its window opened */
    assert_int_equal(wait_outs(&r, 4, 5000), 4);
    wait_drained(&r);
    sk_worker_stop(w);
    assert_int_equal(r.outs[0].result, SK_BLOCKED);
    for (int i = 1; i < 4; i++) {
        const sk_outcome *o = &r.outs[i];
        if (!strcmp(o->item_id, "later"))
            assert_int_equal(o->result, SK_SUCCESS); /* its window is open now */
    }
    assert_int_equal(count(&r, SK_BLOCKED), 2);  /* bot before, u7 after */
    assert_int_equal(count(&r, SK_SUCCESS), 2);  /* bot, u8 */
    assert_int_equal(count(&r, SK_NOT_STARTED), 0);
    rig_release(&r);
}

static void test_backend_failure_keeps_request_undecided_then_decides_once(void **state)
{
    (void)state;
    rig r;
    rig_init(&r, 100);
    atomic_store(&r.fail_decides, 3);
    sk_worker_config wc = {.threads = 1, .batch = 8, .name = "t"};
    sk_worker *w = start(&r, &wc);
    uint8_t rid[16];
    produce(&r, "alice", "demo", 10000, rid);
    /* three failed calls answer nothing (the outcome is not known); the
     * fourth decides, and that is the only outcome delivered */
    int n = wait_outs(&r, 1, 5000);
    wait_drained(&r);
    sk_worker_stats st;
    sk_worker_get_stats(w, &st);
    sk_worker_stop(w);
    assert_int_equal(n, 1);
    assert_int_equal(r.nouts, 1);
    assert_int_equal(r.outs[0].result, SK_SUCCESS);
    assert_memory_equal(r.outs[0].request_id, rid, 16);
    assert_int_equal(st.backend_failures, 3);
    assert_int_equal(atomic_load(&r.decide_calls), 4);
    /* the outcome went out before the worker asked the backend again */
    assert_int_equal(r.decides_with_unflushed, 0);
    assert_int_equal(r.unflushed, 0);
    assert_int_equal(sk_inventory_left(r.inv, 0), 99);
    rig_release(&r);
}

/* A backend call that took effect but reported failure (a Redis call that
 * timed out on our side and ran anyway): the buyer must hear the purchase,
 * never a "no", and stock moves once. */
static void test_lost_reply_answers_the_purchase(void **state)
{
    (void)state;
    rig r;
    rig_init(&r, 100);
    atomic_store(&r.lost_decides, 2);
    sk_worker_config wc = {.threads = 1, .batch = 8, .name = "t"};
    sk_worker *w = start(&r, &wc);
    uint8_t rid[16];
    produce(&r, "carol", "demo", 10000, rid);
    assert_int_equal(wait_outs(&r, 1, 5000), 1);
    wait_drained(&r);
    sk_worker_stats st;
    sk_worker_get_stats(w, &st);
    sk_worker_stop(w);
    assert_int_equal(r.nouts, 1);
    assert_int_equal(r.outs[0].result, SK_SUCCESS);
    assert_memory_equal(r.outs[0].request_id, rid, 16);
    assert_true(r.outs[0].order_id[0] != '\0');
    assert_int_equal(st.backend_failures, 2);
    assert_int_equal(sk_inventory_left(r.inv, 0), 99);
    rig_release(&r);
}

/* The deadline passes while the backend fails. A request whose lost call had
 * bought still answers success (the stored decision wins over "expired"); one
 * that never reached the backend is decided expired, stock untouched. */
static void test_deadline_passing_during_outage(void **state)
{
    (void)state;
    rig r;
    rig_init(&r, 100);
    sk_worker_config wc = {.threads = 1, .batch = 8, .name = "t"};
    /* the first call buys and loses its reply; then the backend fails long
     * enough (10 + 20 + 40 + 80 + 160 ms of backoff) for the 150 ms deadline
     * to pass before the next call reaches the inventory */
    atomic_store(&r.lost_decides, 1);
    atomic_store(&r.fail_after_lost, 5);
    uint8_t bought[16], never[16];
    produce(&r, "dave", "demo", 150, bought);
    sk_worker *w = start(&r, &wc);
    assert_int_equal(wait_outs(&r, 1, 5000), 1);
    sk_worker_stop(w);
    assert_int_equal(r.outs[0].result, SK_SUCCESS);
    assert_memory_equal(r.outs[0].request_id, bought, 16);
    assert_int_equal(atomic_load(&r.decide_calls), 7);

    atomic_store(&r.fail_decides, 5);
    produce(&r, "erin", "demo", 150, never);
    w = start(&r, &wc);
    assert_int_equal(wait_outs(&r, 2, 5000), 2);
    wait_drained(&r);
    sk_worker_stop(w);
    assert_int_equal(r.nouts, 2);
    assert_int_equal(r.outs[1].result, SK_EXPIRED);
    assert_memory_equal(r.outs[1].request_id, never, 16);
    assert_int_equal(sk_inventory_left(r.inv, 0), 99);
    rig_release(&r);
}

static void test_delivery_failure_redelivers_same_decision(void **state)
{
    (void)state;
    rig r;
    rig_init(&r, 100);
    atomic_store(&r.fail_delivers, 1);
    sk_worker_config wc = {.threads = 1, .batch = 8, .name = "t"};
    sk_worker *w = start(&r, &wc);
    produce(&r, "bob", "demo", 10000, NULL);
    assert_int_equal(wait_outs(&r, 1, 5000), 1);
    wait_drained(&r);
    sk_worker_stats st;
    sk_worker_get_stats(w, &st);
    sk_worker_stop(w);
    /* the first delivery was refused, the redelivered message got the stored
     * success (not already_purchased), and stock moved once */
    assert_int_equal(st.deliver_failures, 1);
    assert_true(st.redelivered >= 1);
    assert_int_equal(r.outs[0].result, SK_SUCCESS);
    assert_int_equal(sk_inventory_left(r.inv, 0), 99);
    rig_release(&r);
}

/* 200 requests produced one a millisecond. With linger_us = 20 ms, one
 * thread pauses 20 ms after each short batch, so its store calls are at most
 * about one per 20 ms (about 10, each taking what queued meanwhile) however
 * the machine schedules; without it, the thread calls the store as soon as
 * anything is queued. */
static int decide_calls_trickled(uint32_t linger_us)
{
    rig r;
    rig_init(&r, 1000);
    sk_worker_config wc = {.threads = 1, .batch = 64, .name = "t", .linger_us = linger_us};
    sk_worker *w = start(&r, &wc);
    char user[32];
    uint64_t t0 = mono_ms();
    for (int i = 0; i < 200; i++) {
        snprintf(user, sizeof user, "u%d", i);
        produce(&r, user, "demo", 5000, NULL);
        sleep_ms(1);
    }
    assert_int_equal(wait_outs(&r, 200, 5000), 200);
    uint64_t ms = mono_ms() - t0;
    sk_worker_stop(w);
    int calls = atomic_load(&r.decide_calls);
    assert_int_equal(count(&r, SK_SUCCESS), 200);
    printf("linger_us = %u: 200 requests in %d store calls over %llu ms\n", linger_us, calls,
           (unsigned long long)ms);
    if (linger_us)
        assert_true((uint64_t)calls <= ms * 1000 / linger_us + 2);
    rig_release(&r);
    return calls;
}

static void test_linger_fills_batches(void **state)
{
    (void)state;
    int lingering = decide_calls_trickled(20000);
    int eager = decide_calls_trickled(0);
    assert_true(eager > lingering); /* the pause is what made the batches fuller */
}

static void test_bad_config(void **state)
{
    (void)state;
    rig r;
    rig_init(&r, 1);
    sk_worker_config wc = {.threads = 0, .batch = 8};
    sk_source src = sk_source_mq(r.t);
    sk_backend be = sk_inventory_backend(r.inv);
    sk_link link = {.arg = &r, .deliver = deliver};
    sk_worker *w = NULL;
    assert_int_equal(sk_worker_start(&wc, &src, &be, &link, &w), -EINVAL);
    wc.threads = 1;
    wc.batch = 0;
    assert_int_equal(sk_worker_start(&wc, &src, &be, &link, &w), -EINVAL);
    rig_release(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sale_and_verdicts),
        cmocka_unit_test(test_set_risk_while_running),
        cmocka_unit_test(test_backend_failure_keeps_request_undecided_then_decides_once),
        cmocka_unit_test(test_lost_reply_answers_the_purchase),
        cmocka_unit_test(test_deadline_passing_during_outage),
        cmocka_unit_test(test_delivery_failure_redelivers_same_decision),
        cmocka_unit_test(test_linger_fills_batches),
        cmocka_unit_test(test_bad_config),
    };
    return cmocka_run_group_tests_name("worker", tests, NULL, NULL);
}
