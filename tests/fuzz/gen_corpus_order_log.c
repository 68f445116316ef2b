/*
 * gen_corpus_order_log.c - writes the seed corpus of fuzz_order_log_replay
 * into a directory (input formats: the top of fuzz_order_log_replay.c).
 *
 * Not part of the build; run by hand when the event layout changes:
 *   cc -D_GNU_SOURCE -ffunction-sections -I . -I sale -I sale/include -I queue/include -I common -I rpc/include \
 *      tests/fuzz/gen_corpus_order_log.c sale/order_log.c sale/message.c \
 *      -Wl,--gc-sections -o /tmp/gen && /tmp/gen tests/fuzz/corpus_order_log_replay
 * (--gc-sections drops the parts of order_log.c that need the queue.)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sale/order_log.h"

static uint8_t buf[1 << 16];
static size_t n;

static void save(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, n, f) != n) {
        perror(path);
        exit(1);
    }
    fclose(f);
}

static void begin(void)
{
    memcpy(buf, "OLEV", 4);
    n = 4;
}

static sk_order_event event(enum sk_order_state type, const char *order, const char *item,
                            const char *user)
{
    sk_order_event ev = {.type = type, .at_ms = 1767225600000ull,
                         .pay_deadline_ms = 1767226500000ull};
    snprintf(ev.order_id, sizeof ev.order_id, "%s", order);
    snprintf(ev.item_id, sizeof ev.item_id, "%s", item);
    snprintf(ev.user_id, sizeof ev.user_id, "%s", user);
    for (int i = 0; i < 16; i++)
        ev.request_id[i] = (uint8_t)(order[0] * 31 + i);
    return ev;
}

/* One entry: u8 len, the encoded event. */
static void add(enum sk_order_state type, const char *order, const char *item, const char *user)
{
    sk_order_event ev = event(type, order, item, user);
    int len = sk_order_event_encode(&ev, buf + n + 1, sizeof buf - n - 1);
    if (len < 0 || len > 255)
        abort();
    buf[n] = (uint8_t)len;
    n += 1 + (size_t)len;
}

static void add_raw(const void *p, size_t len)
{
    memcpy(buf + n, p, len);
    n += len;
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    const char *dir = argv[1];

    n = 0;
    save(dir, "empty");

    begin();
    add(SK_ORDER_RESERVED, "o1", "demo", "u1");
    add(SK_ORDER_RESERVED, "o2", "demo", "u2");
    add(SK_ORDER_PAID, "o1", "demo", "u1");
    add(SK_ORDER_CANCELLED, "o2", "demo", "u2");
    add(SK_ORDER_RESERVED, "o3", "i1", "u1");
    save(dir, "reserve_pay_cancel");

    /* events recovery ignores: unknown item and order, repeats, pay after cancel */
    begin();
    add(SK_ORDER_RESERVED, "o1", "nosuch", "u1");
    add(SK_ORDER_PAID, "o9", "demo", "u1");
    add(SK_ORDER_RESERVED, "o2", "demo", "u2");
    add(SK_ORDER_RESERVED, "o2", "demo", "u2");
    add(SK_ORDER_CANCELLED, "o2", "demo", "u2");
    add(SK_ORDER_PAID, "o2", "demo", "u2");
    add(SK_ORDER_CANCELLED, "o2", "demo", "u2");
    save(dir, "ignored_events");

    /* more orders than the configured stock (stock lowered between runs) */
    begin();
    add(SK_ORDER_RESERVED, "a1", "demo", "u1");
    add(SK_ORDER_RESERVED, "a2", "demo", "u2");
    add(SK_ORDER_RESERVED, "a3", "demo", "u3");
    add(SK_ORDER_RESERVED, "a4", "demo", "u4");
    add(SK_ORDER_RESERVED, "a5", "x", "u5");
    add(SK_ORDER_CANCELLED, "a4", "demo", "u4");
    add(SK_ORDER_CANCELLED, "a5", "x", "u5");
    save(dir, "beyond_stock");

    /* one user over the per-user limit */
    begin();
    add(SK_ORDER_RESERVED, "b1", "demo", "u1");
    add(SK_ORDER_RESERVED, "b2", "demo", "u1");
    add(SK_ORDER_PAID, "b2", "demo", "u1");
    save(dir, "over_user_limit");

    /* longest ids */
    begin();
    add(SK_ORDER_RESERVED, "0b7e3a6c-5a4e-4c55-9a55-6a1f0c7d9e21", "i1",
        "u-abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789");
    save(dir, "long_ids");

    /* valid events, then a torn record */
    begin();
    add(SK_ORDER_RESERVED, "c1", "i1", "u1");
    add(SK_ORDER_RESERVED, "c2", "i1", "u2");
    buf[n] = 60;
    add_raw("\x01\x00torn", 6);
    n++;
    save(dir, "torn_tail");

    /* a record that is not an order event: other version, trailing byte, bad id */
    begin();
    add(SK_ORDER_RESERVED, "d1", "i1", "u1");
    add(SK_ORDER_RESERVED, "d2", "i1", "u2");
    buf[n - 1] = ' '; /* the item id's last character */
    save(dir, "bad_id_byte");
    begin();
    add(SK_ORDER_RESERVED, "e1", "i1", "u1");
    buf[5] = 2; /* version 2 */
    save(dir, "other_version");
    begin();
    add(SK_ORDER_RESERVED, "f1", "i1", "u1");
    buf[4]++; /* one trailing byte */
    buf[n++] = 'z';
    save(dir, "trailing_byte");
    begin();
    add(SK_ORDER_RESERVED, "g1", "i1", "u1");
    buf[6] = 3; /* no such state */
    save(dir, "unknown_type");

    /* raw segment files */
    memset(buf, 0, 256);
    n = 256;
    save(dir, "zeros");
    for (size_t i = 0; i < 200; i++)
        buf[i] = (uint8_t)(i * 37 + 11);
    n = 200;
    save(dir, "garbage");
    return 0;
}
