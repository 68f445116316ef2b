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

int sk_id_valid(const char *s, size_t len)
{
    if (len == 0 || len > SK_ID_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

int sk_msg_encode(const sk_msg *m, uint8_t *buf, size_t cap)
{
    size_t ul = strnlen(m->user_id, SK_ID_MAX + 1);
    size_t il = strnlen(m->item_id, SK_ID_MAX + 1);
    if (!sk_id_valid(m->user_id, ul) || !sk_id_valid(m->item_id, il))
        return -EINVAL;
    size_t need = 1 + 16 + 16 + 8 + 8 + 1 + ul + 1 + il;
    if (cap < need)
        return -ENOBUFS;
    uint8_t *p = buf;
    *p++ = SK_MSG_VERSION;
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
    return (int)(p - buf);
}

int sk_msg_decode(const void *buf, size_t len, sk_msg *m)
{
    const uint8_t *p = buf, *end = p + len;
    if (len < 1 + 16 + 16 + 8 + 8 + 1 || p[0] != SK_MSG_VERSION)
        return -EBADMSG;
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
    if (il == 0 || il > SK_ID_MAX || (size_t)(end - p) != il)
        return -EBADMSG;
    memcpy(m->item_id, p, il);
    m->item_id[il] = '\0';
    if (!sk_id_valid(m->user_id, ul) || !sk_id_valid(m->item_id, il))
        return -EBADMSG;
    return 0;
}
