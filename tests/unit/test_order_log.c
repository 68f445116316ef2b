/*
 * test_order_log.c - the memory inventory's order events on a real log topic
 * (sale/order_log.h): the event codec, the journal (one batch per
 * decide call), a disk-full append that undoes its purchases, and recovery
 * of stock, orders and decisions by replaying the topic after a reopen.
 * Disk full is injected with -Wl,--wrap=pwrite.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "mq.h"
#include "sale/store_memory.h"
#include "sale/order_log.h"

ssize_t __real_pwrite(int fd, const void *buf, size_t n, off_t off);
ssize_t __wrap_pwrite(int fd, const void *buf, size_t n, off_t off);

static atomic_int disk_full;

ssize_t __wrap_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    if (atomic_load(&disk_full)) {
        errno = ENOSPC;
        return -1;
    }
    return __real_pwrite(fd, buf, n, off);
}

static sk_order_event sample(void)
{
    sk_order_event ev = {.type = SK_ORDER_PAID, .at_ms = 1767225600123ULL,
                         .pay_deadline_ms = 1767226500123ULL};
    strcpy(ev.order_id, "0b7e3a6c-5a4e-4c55-9a55-6a1f0c7d9e21");
    strcpy(ev.item_id, "demo");
    strcpy(ev.user_id, "user:42");
    for (int i = 0; i < 16; i++)
        ev.request_id[i] = (uint8_t)(i * 17);
    return ev;
}

static void test_codec(void **state)
{
    (void)state;
    uint8_t buf[SK_ORDER_EVENT_MAX];
    sk_order_event ev = sample(), back;
    int n = sk_order_event_encode(&ev, buf, sizeof buf);
    assert_true(n > 0);
    assert_int_equal(sk_order_event_decode(buf, (size_t)n, &back), 0);
    assert_memory_equal(&ev, &back, sizeof ev);
    /* the longest ids fit SK_ORDER_EVENT_MAX */
    memset(ev.user_id, 'u', SK_ID_MAX);
    memset(ev.item_id, 'i', SK_ID_MAX);
    n = sk_order_event_encode(&ev, buf, sizeof buf);
    assert_int_equal(n, SK_ORDER_EVENT_MAX);
    assert_int_equal(sk_order_event_decode(buf, (size_t)n, &back), 0);
    assert_string_equal(back.user_id, ev.user_id);
    assert_int_equal(sk_order_event_encode(&ev, buf, (size_t)n - 1), -ENOBUFS);
    /* every truncation, trailing bytes, other versions and types are refused */
    for (int k = 0; k < n; k++)
        assert_int_equal(sk_order_event_decode(buf, (size_t)k, &back), -EBADMSG);
    uint8_t longer[SK_ORDER_EVENT_MAX + 1];
    memcpy(longer, buf, (size_t)n);
    longer[n] = 'x';
    assert_int_equal(sk_order_event_decode(longer, (size_t)n + 1, &back), -EBADMSG);
    buf[0] = 2;
    assert_int_equal(sk_order_event_decode(buf, (size_t)n, &back), -EBADMSG);
    buf[0] = SK_ORDER_EVENT_VERSION;
    buf[1] = 3;
    assert_int_equal(sk_order_event_decode(buf, (size_t)n, &back), -EBADMSG);
    ev = sample();
    strcpy(ev.user_id, "bad id");
    assert_int_equal(sk_order_event_encode(&ev, buf, sizeof buf), -EINVAL);
    ev = sample();
    ev.order_id[0] = '\0';
    assert_int_equal(sk_order_event_encode(&ev, buf, sizeof buf), -EINVAL);
    ev = sample();
    ev.type = (enum sk_order_state)7;
    assert_int_equal(sk_order_event_encode(&ev, buf, sizeof buf), -EINVAL);
}

static uint64_t now_ms;
static uint64_t clock_fn(void *arg)
{
    (void)arg;
    return now_ms;
}

typedef struct fixture {
    char dir[64];
    mq *q;
    sk_order_log *log;
    sk_inventory *inv;
    sk_journal j;
} fixture;

static void open_all(fixture *f, int recover)
{
    sk_item_spec items[] = {{"demo", 10, 1}};
    assert_int_equal(mq_create(f->dir, &f->q), 0);
    assert_int_equal(sk_order_log_open(f->q, 1000, 1000, 1, &f->log), 0);
    assert_int_equal(sk_inventory_create(items, 1, 1000, &f->inv), 0);
    if (recover)
        assert_int_equal(sk_order_log_recover(f->log, f->inv, NULL), 0);
    f->j = sk_order_log_journal(f->log);
    sk_orders_config oc = {.pay_timeout_ms = 1000, .journal = &f->j, .wall_ms = clock_fn};
    sk_inventory_set_orders(f->inv, &oc);
}

static void close_all(fixture *f)
{
    mq_destroy(f->q);
    sk_order_log_close(f->log);
    sk_inventory_destroy(f->inv);
}

static void rid(uint8_t id[16], int n)
{
    memset(id, 0, 16);
    id[0] = (uint8_t)n;
    id[9] = 0x5a;
}

static int count_cb(void *arg, const sk_order_event *ev)
{
    int *counts = arg;
    counts[ev->type]++;
    return 0;
}

static void test_journal_recover(void **state)
{
    (void)state;
    fixture f = {.dir = "/tmp/test_order_log.XXXXXX"};
    assert_non_null(mkdtemp(f.dir));
    now_ms = 1767225600000ULL;
    open_all(&f, 0);
    sk_backend be = sk_inventory_backend(f.inv);
    uint8_t ids[4][16];
    const char *users[4] = {"a", "b", "c", "d"};
    sk_decide reqs[4];
    sk_outcome outs[4];
    int64_t left[4];
    for (int i = 0; i < 4; i++) {
        rid(ids[i], i + 1);
        reqs[i] = (sk_decide){"demo", users[i], ids[i], SK_SUCCESS};
    }
    /* one batch of three: three records, durable together */
    assert_int_equal(be.decide(be.impl, reqs, 3, outs, left), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(outs[i].result, SK_SUCCESS);
    mq_topic *t = sk_order_log_topic(f.log);
    assert_int_equal(mq_end_offset(t, 0), 3);

    /* disk full: the purchase is undone and the call fails (503, redelivered) */
    atomic_store(&disk_full, 1);
    assert_int_equal(be.decide(be.impl, &reqs[3], 1, &outs[3], &left[3]), -ENOSPC);
    assert_int_equal(sk_inventory_left(f.inv, 0), 7);
    assert_int_equal(sk_inventory_order_pay(f.inv, outs[0].order_id, now_ms), -ENOSPC);
    atomic_store(&disk_full, 0);
    assert_int_equal(be.decide(be.impl, &reqs[3], 1, &outs[3], &left[3]), 0);
    assert_int_equal(outs[3].result, SK_SUCCESS);
    assert_int_equal(left[3], 6);
    assert_int_equal(mq_end_offset(t, 0), 4);

    /* a pays, the others time out; c's user buys again */
    assert_int_equal(sk_inventory_order_pay(f.inv, outs[0].order_id, now_ms + 10), 0);
    assert_int_equal(sk_inventory_reap(f.inv, now_ms + 1000), 3);
    now_ms += 2000;
    sk_outcome again;
    uint8_t id5[16];
    rid(id5, 5);
    assert_int_equal(sk_inventory_decide(f.inv, 0, "c", id5, SK_SUCCESS, &again, NULL), 1);
    assert_int_equal(again.result, SK_SUCCESS);
    assert_int_equal(sk_inventory_left(f.inv, 0), 8);
    assert_int_equal(mq_end_offset(t, 0), 9); /* 5 reserved, 1 paid, 3 cancelled */

    /* the sink's group reads and commits everything: replay still sees it all */
    mq_consumer *c;
    const mq_message *m;
    int n, got = 0;
    assert_int_equal(mq_consumer_create(t, SK_ORDER_GROUP, "sink", &c), 0);
    while ((n = mq_fetch(c, 16, 0, &m)) > 0) {
        sk_order_event ev;
        for (int i = 0; i < n; i++, got++) {
            assert_int_equal(sk_order_event_decode(m[i].value, m[i].value_len, &ev), 0);
            assert_int_equal(m[i].key_len, strlen(ev.order_id));
            assert_memory_equal(m[i].key, ev.order_id, m[i].key_len);
        }
        assert_int_equal(mq_commit(c, &m[n - 1]), 0);
    }
    assert_int_equal(got, 9);
    close_all(&f);

    /* restart: the same state from the log */
    open_all(&f, 1);
    int counts[3] = {0};
    assert_int_equal(sk_order_log_replay(f.log, count_cb, counts), 9);
    assert_int_equal(counts[SK_ORDER_RESERVED], 5);
    assert_int_equal(counts[SK_ORDER_PAID], 1);
    assert_int_equal(counts[SK_ORDER_CANCELLED], 3);
    assert_int_equal(sk_inventory_left(f.inv, 0), 8);
    assert_int_equal(sk_inventory_buyers(f.inv, 0), 2);
    sk_order o;
    assert_int_equal(sk_inventory_order_get(f.inv, outs[0].order_id, &o), 0);
    assert_int_equal(o.state, SK_ORDER_PAID);
    assert_int_equal(sk_inventory_order_get(f.inv, outs[1].order_id, &o), 0);
    assert_int_equal(o.state, SK_ORDER_CANCELLED);
    assert_int_equal(sk_inventory_order_get(f.inv, again.order_id, &o), 0);
    assert_int_equal(o.state, SK_ORDER_RESERVED);
    sk_outcome r;
    /* redelivery of a recovered request: its stored success */
    be = sk_inventory_backend(f.inv);
    assert_int_equal(be.decide(be.impl, &reqs[3], 1, &r, &left[0]), 0);
    assert_int_equal(r.result, SK_SUCCESS);
    assert_string_equal(r.order_id, outs[3].order_id);
    /* a new request of a buyer: already purchased, with the old order */
    uint8_t id6[16];
    rid(id6, 6);
    assert_int_equal(sk_inventory_decide(f.inv, 0, "a", id6, SK_SUCCESS, &r, NULL), 1);
    assert_int_equal(r.result, SK_ALREADY_PURCHASED);
    assert_string_equal(r.order_id, outs[0].order_id);
    /* sell out the rest: never more than the stock across the restart */
    int sold = 0;
    for (int i = 0; i < 20; i++) {
        char user[16];
        uint8_t id[16];
        snprintf(user, sizeof user, "n%d", i);
        rid(id, 100 + i);
        assert_true(sk_inventory_decide(f.inv, 0, user, id, SK_SUCCESS, &r, NULL) >= 0);
        sold += r.result == SK_SUCCESS;
    }
    assert_int_equal(sold, 8);
    assert_int_equal(sk_inventory_left(f.inv, 0), 0);
    close_all(&f);

    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f.dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codec),
        cmocka_unit_test(test_journal_recover),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
