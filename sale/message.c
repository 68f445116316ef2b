#include "message.h"
#include "le.h"

#include <errno.h>
#include <string.h>

static const char *const result_names[SK_RESULT_COUNT] = {
    [SK_SUCCESS] = "success",         [SK_SOLD_OUT] = "sold_out",
    [SK_ALREADY_PURCHASED] = "already_purchased", [SK_NOT_STARTED] = "not_started",
    [SK_ENDED] = "ended",             [SK_BLOCKED] = "blocked",
    [SK_EXPIRED] = "timeout",         [SK_UNKNOWN_ITEM] = "unknown_item",
    [SK_UNAVAILABLE] = "overloaded",
};

const char *sk_result_name(enum sk_result r)
{
    return (unsigned)r < SK_RESULT_COUNT ? result_names[r] : "error";
}

const char *sk_order_state_name(enum sk_order_state st)
{
    return st == SK_ORDER_PAID ? "paid" : st == SK_ORDER_CANCELLED ? "cancelled" : "reserved";
}

/* 1..max characters of [A-Za-z0-9] and the punctuation in extra */
static int word_valid(const char *s, size_t len, size_t max, const char *extra)
{
    if (len == 0 || len > max)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              (c && strchr(extra, c))))
            return 0;
    }
    return 1;
}

int sk_id_valid(const char *s, size_t len)
{
    return word_valid(s, len, SK_ID_MAX, "_.:-");
}

int sk_trace_valid(const char *s, size_t len)
{
    return word_valid(s, len, SK_TRACE_MAX, "_.:@+/=-");
}

int sk_msg_encode(const sk_msg *m, uint8_t *buf, size_t cap)
{
    size_t ul = strnlen(m->user_id, SK_ID_MAX + 1);
    size_t il = strnlen(m->item_id, SK_ID_MAX + 1);
    size_t tl = strnlen(m->trace, SK_TRACE_MAX + 1);
    if (!sk_id_valid(m->user_id, ul) || !sk_id_valid(m->item_id, il) ||
        (tl && !sk_trace_valid(m->trace, tl)))
        return -EINVAL;
    size_t need = 1 + 16 + 16 + 8 + 8 + 1 + ul + 1 + il + (tl ? 1 + tl : 0);
    if (cap < need)
        return -ENOBUFS;
    uint8_t *p = buf;
    *p++ = tl ? SK_MSG_VERSION_TRACE : SK_MSG_VERSION;
    memcpy(p, m->gateway_id, 16);
    p += 16;
    memcpy(p, m->request_id, 16);
    p += 16;
    sk_le_put64(p, m->admitted_at_ms);
    p += 8;
    sk_le_put64(p, m->deadline_ms);
    p += 8;
    *p++ = (uint8_t)ul;
    memcpy(p, m->user_id, ul);
    p += ul;
    *p++ = (uint8_t)il;
    memcpy(p, m->item_id, il);
    p += il;
    if (tl) {
        *p++ = (uint8_t)tl;
        memcpy(p, m->trace, tl);
        p += tl;
    }
    return (int)(p - buf);
}

int sk_msg_decode(const void *buf, size_t len, sk_msg *m)
{
    const uint8_t *p = buf, *end = p + len;
    if (len < 1 + 16 + 16 + 8 + 8 + 1 || (p[0] != SK_MSG_VERSION && p[0] != SK_MSG_VERSION_TRACE))
        return -EBADMSG;
    int traced = p[0] == SK_MSG_VERSION_TRACE;
    p++;
    memcpy(m->gateway_id, p, 16);
    p += 16;
    memcpy(m->request_id, p, 16);
    p += 16;
    m->admitted_at_ms = sk_le_get64(p);
    p += 8;
    m->deadline_ms = sk_le_get64(p);
    p += 8;
    size_t ul = *p++;
    if (ul == 0 || ul > SK_ID_MAX || (size_t)(end - p) < ul + 1)
        return -EBADMSG;
    memcpy(m->user_id, p, ul);
    m->user_id[ul] = '\0';
    p += ul;
    size_t il = *p++;
    if (il == 0 || il > SK_ID_MAX || (size_t)(end - p) < il + (traced ? 1 : 0) ||
        (!traced && (size_t)(end - p) != il))
        return -EBADMSG;
    memcpy(m->item_id, p, il);
    m->item_id[il] = '\0';
    p += il;
    m->trace[0] = '\0';
    if (traced) {
        size_t tl = *p++;
        if (tl == 0 || tl > SK_TRACE_MAX || (size_t)(end - p) != tl ||
            !sk_trace_valid((const char *)p, tl))
            return -EBADMSG;
        memcpy(m->trace, p, tl);
        m->trace[tl] = '\0';
    }
    if (!sk_id_valid(m->user_id, ul) || !sk_id_valid(m->item_id, il))
        return -EBADMSG;
    return 0;
}
