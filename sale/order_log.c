#include "order_log.h"
#include "le.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define PARTITIONS 1

struct sk_order_log {
    mq_topic *t;
};

static int order_id_valid(const char *s, size_t len)
{
    return len <= SK_ORDER_ID_MAX && sk_id_valid(s, len);
}

static int sale_encode(const sk_order_event *ev, uint8_t *buf, size_t cap)
{
    size_t il = strnlen(ev->item_id, SK_ID_MAX + 1);
    if (il > SK_ID_MAX || (il && !sk_id_valid(ev->item_id, il)) || ev->stock < -1)
        return -EINVAL;
    size_t need = 2 + 8 + 8 + 8 + 4 + 1 + il;
    if (cap < need)
        return -ENOBUFS;
    uint8_t *p = buf;
    *p++ = SK_ORDER_EVENT_VERSION_EPOCH;
    *p++ = SK_EVENT_SALE;
    sk_le_put64(p, ev->epoch);
    p += 8;
    sk_le_put64(p, ev->at_ms);
    p += 8;
    sk_le_put64(p, (uint64_t)ev->stock);
    p += 8;
    sk_le_put32(p, ev->limit);
    p += 4;
    *p++ = (uint8_t)il;
    memcpy(p, ev->item_id, il);
    return (int)need;
}

int sk_order_event_encode(const sk_order_event *ev, uint8_t *buf, size_t cap)
{
    if ((unsigned)ev->type == SK_EVENT_SALE)
        return sale_encode(ev, buf, cap);
    size_t ol = strnlen(ev->order_id, SK_ORDER_ID_MAX + 1);
    size_t ul = strnlen(ev->user_id, SK_ID_MAX + 1);
    size_t il = strnlen(ev->item_id, SK_ID_MAX + 1);
    if (!order_id_valid(ev->order_id, ol) || !sk_id_valid(ev->user_id, ul) ||
        !sk_id_valid(ev->item_id, il) || (unsigned)ev->type > SK_ORDER_CANCELLED)
        return -EINVAL;
    size_t ep = ev->epoch ? 8 : 0; /* the first sale's records stay version 1 */
    size_t need = 2 + ep + 8 + 8 + 16 + 1 + ol + 1 + ul + 1 + il;
    if (cap < need)
        return -ENOBUFS;
    uint8_t *p = buf;
    *p++ = ep ? SK_ORDER_EVENT_VERSION_EPOCH : SK_ORDER_EVENT_VERSION;
    *p++ = (uint8_t)ev->type;
    if (ep) {
        sk_le_put64(p, ev->epoch);
        p += 8;
    }
    sk_le_put64(p, ev->at_ms);
    p += 8;
    sk_le_put64(p, ev->pay_deadline_ms);
    p += 8;
    memcpy(p, ev->request_id, 16);
    p += 16;
    *p++ = (uint8_t)ol;
    memcpy(p, ev->order_id, ol);
    p += ol;
    *p++ = (uint8_t)ul;
    memcpy(p, ev->user_id, ul);
    p += ul;
    *p++ = (uint8_t)il;
    memcpy(p, ev->item_id, il);
    p += il;
    return (int)(p - buf);
}

/* One length-prefixed id into out (cap includes the NUL). */
static int get_id(const uint8_t **pp, const uint8_t *end, char *out, size_t max, int last)
{
    const uint8_t *p = *pp;
    if (p >= end)
        return -EBADMSG;
    size_t n = *p++;
    if (n == 0 || n > max || (size_t)(end - p) < n + (last ? 0 : 1) ||
        (last && (size_t)(end - p) != n))
        return -EBADMSG;
    memcpy(out, p, n);
    out[n] = '\0';
    if (!sk_id_valid(out, n))
        return -EBADMSG;
    *pp = p + n;
    return 0;
}

static int sale_decode(const uint8_t *p, const uint8_t *end, sk_order_event *ev)
{
    if (end - p < 8 + 8 + 8 + 4 + 1)
        return -EBADMSG;
    ev->epoch = sk_le_get64(p);
    ev->at_ms = sk_le_get64(p + 8);
    ev->stock = (int64_t)sk_le_get64(p + 16);
    ev->limit = sk_le_get32(p + 24);
    p += 28;
    size_t il = *p++;
    if ((size_t)(end - p) != il || il > SK_ID_MAX || ev->stock < -1)
        return -EBADMSG;
    memcpy(ev->item_id, p, il);
    ev->item_id[il] = '\0';
    if (il && !sk_id_valid(ev->item_id, il))
        return -EBADMSG;
    return 0;
}

int sk_order_event_decode(const void *buf, size_t len, sk_order_event *ev)
{
    const uint8_t *p = buf, *end = p + len;
    if (len < 2)
        return -EBADMSG;
    int v2 = p[0] == SK_ORDER_EVENT_VERSION_EPOCH;
    if (!v2 && p[0] != SK_ORDER_EVENT_VERSION)
        return -EBADMSG;
    memset(ev, 0, sizeof *ev);
    if (v2 && p[1] == SK_EVENT_SALE) {
        ev->type = (enum sk_order_state)SK_EVENT_SALE;
        return sale_decode(p + 2, end, ev);
    }
    if (len < 2 + (v2 ? 8u : 0u) + 8 + 8 + 16 + 1 || p[1] > SK_ORDER_CANCELLED)
        return -EBADMSG;
    ev->type = (enum sk_order_state)p[1];
    p += 2;
    if (v2) {
        ev->epoch = sk_le_get64(p);
        p += 8;
    }
    ev->at_ms = sk_le_get64(p);
    p += 8;
    ev->pay_deadline_ms = sk_le_get64(p);
    p += 8;
    memcpy(ev->request_id, p, 16);
    p += 16;
    if (get_id(&p, end, ev->order_id, SK_ORDER_ID_MAX, 0) < 0 ||
        get_id(&p, end, ev->user_id, SK_ID_MAX, 0) < 0 ||
        get_id(&p, end, ev->item_id, SK_ID_MAX, 1) < 0)
        return -EBADMSG;
    return 0;
}

int sk_order_log_open(mq *q, uint32_t ack_timeout_ms, uint32_t lease_timeout_ms, int sync,
                      sk_order_log **out)
{
    mq_topic_config tc;
    sk_order_log *l = calloc(1, sizeof *l);
    if (!l)
        return -ENOMEM;
    mq_topic_config_init(&tc);
    tc.partitions = PARTITIONS;
    tc.storage = MQ_STORAGE_LOG;
    tc.flush = sync ? MQ_FLUSH_SYNC : MQ_FLUSH_ASYNC;
    tc.flush_interval_ms = SK_ORDER_ASYNC_FLUSH_MS;
    tc.retention_ms = 0; /* orders must not be lost: keep every segment */
    tc.retention_bytes = 0;
    /* the log is the order book, not a buffer: no group (or a stopped sink)
     * must ever refuse a sale, so no practical backlog limit */
    tc.max_backlog_msgs = UINT64_MAX / 4;
    tc.max_backlog_bytes = UINT64_MAX / 4;
    tc.max_record_bytes = SK_ORDER_RECORD_MAX + SK_ORDER_ID_MAX;
    tc.ack_timeout_ms = ack_timeout_ms;
    tc.lease_timeout_ms = lease_timeout_ms;
    int rc = mq_topic_open(q, SK_ORDER_TOPIC, &tc, &l->t);
    if (rc < 0) {
        free(l);
        return rc;
    }
    *out = l;
    return 0;
}

void sk_order_log_close(sk_order_log *l)
{
    free(l); /* the topic lives until mq_destroy */
}

mq_topic *sk_order_log_topic(sk_order_log *l)
{
    return l->t;
}

/* One allocation per call (per batch), not per event. */
static int journal_append(void *arg, const sk_order_event *evs, size_t n, int *rcs)
{
    sk_order_log *l = arg;
    mq_record *recs = malloc(n * (sizeof *recs + 2 * sizeof(size_t) + SK_ORDER_RECORD_MAX));
    int rc = 0;
    if (!recs) {
        for (size_t i = 0; i < n; i++)
            rcs[i] = -ENOMEM;
        return -ENOMEM;
    }
    size_t *idx = (size_t *)(recs + n);  /* recs[j] is evs[idx[j]] */
    int *prcs = (int *)(idx + n);         /* fits: sizeof(int) <= sizeof(size_t) */
    uint8_t *buf = (uint8_t *)(idx + 2 * n);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t *b = buf + i * SK_ORDER_RECORD_MAX;
        int len = sk_order_event_encode(&evs[i], b, SK_ORDER_RECORD_MAX);
        rcs[i] = len < 0 ? len : 0;
        if (len < 0) {
            if (!rc)
                rc = len;
            continue;
        }
        /* a sale setting is keyed by its item (or "sale") */
        const char *key = (unsigned)evs[i].type == SK_EVENT_SALE
                              ? (evs[i].item_id[0] ? evs[i].item_id : "sale")
                              : evs[i].order_id;
        recs[k] = (mq_record){.key = key, .key_len = strlen(key),
                              .value = b, .value_len = (size_t)len,
                              .partition = MQ_PARTITION_ANY};
        idx[k++] = i;
    }
    if (k) {
        /* one call: one fsync for the batch (the log's group commit) */
        int prc = mq_produce_batch(l->t, recs, k, prcs);
        for (size_t j = 0; j < k; j++)
            rcs[idx[j]] = prcs[j];
        if (prc < 0 && !rc)
            rc = prc;
    }
    free(recs);
    return rc;
}

sk_journal sk_order_log_journal(sk_order_log *l)
{
    return (sk_journal){.arg = l, .append = journal_append};
}

typedef struct replay_ctx {
    int (*fn)(void *arg, const sk_order_event *ev);
    void *arg;
    uint64_t next;
    int rc;
    int count;
} replay_ctx;

static int replay_cb(void *arg, const mq_message *m)
{
    replay_ctx *rc = arg;
    sk_order_event ev;
    rc->next = m->offset + 1;
    if (sk_order_event_decode(m->value, m->value_len, &ev) < 0) {
        rc->rc = -EBADMSG;
        return 1;
    }
    int r = rc->fn(rc->arg, &ev);
    if (r < 0) {
        rc->rc = r;
        return 1;
    }
    rc->count++;
    return 0;
}

int sk_order_log_replay(sk_order_log *l, int (*fn)(void *arg, const sk_order_event *ev),
                        void *arg)
{
    replay_ctx rc = {.fn = fn, .arg = arg};
    for (uint32_t p = 0; p < mq_topic_partitions(l->t); p++) {
        rc.next = 0;
        for (;;) {
            int n = mq_read(l->t, p, rc.next, 4096, replay_cb, &rc);
            if (n < 0)
                return n;
            if (rc.rc < 0)
                return rc.rc;
            if (n == 0)
                break;
        }
    }
    return rc.count;
}

typedef struct recover_ctx {
    sk_inventory *inv;
    size_t applied;
} recover_ctx;

static int recover_cb(void *arg, const sk_order_event *ev)
{
    recover_ctx *rc = arg;
    int r = sk_inventory_apply(rc->inv, ev);
    if (r == 0)
        rc->applied++;
    return r < 0 ? r : 0;
}

int sk_order_log_recover(sk_order_log *l, sk_inventory *inv, size_t *applied)
{
    recover_ctx rc = {.inv = inv};
    int n = sk_order_log_replay(l, recover_cb, &rc);
    if (applied)
        *applied = rc.applied;
    return n < 0 ? n : 0;
}
