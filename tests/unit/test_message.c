/*
 * test_message.c - the request message on the request topic: round trips,
 * the exact wire layout, and refusal of every truncation, other versions,
 * trailing bytes and invalid ids.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "message.h"

#define HDR (1 + 16 + 16 + 8 + 8) /* fixed part before user_len */
#define ID64 "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_."

static sk_msg sample(const char *user, const char *item)
{
    sk_msg m;
    memset(&m, 0, sizeof m);
    for (int i = 0; i < 16; i++) {
        m.gateway_id[i] = (uint8_t)(0x10 + i);
        m.request_id[i] = (uint8_t)(0xf0 - i);
    }
    m.admitted_at_ms = 0x0102030405060708ULL;
    m.deadline_ms = 0x1122334455667788ULL;
    strcpy(m.user_id, user);
    strcpy(m.item_id, item);
    return m;
}

static void assert_msg_equal(const sk_msg *a, const sk_msg *b)
{
    assert_memory_equal(a->gateway_id, b->gateway_id, 16);
    assert_memory_equal(a->request_id, b->request_id, 16);
    assert_int_equal(a->admitted_at_ms, b->admitted_at_ms);
    assert_int_equal(a->deadline_ms, b->deadline_ms);
    assert_string_equal(a->user_id, b->user_id);
    assert_string_equal(a->item_id, b->item_id);
}

static void test_wire_layout(void **state)
{
    (void)state;
    sk_msg m = sample("u-1", "it");
    uint8_t buf[SK_MSG_MAX];
    int n = sk_msg_encode(&m, buf, sizeof buf);
    assert_int_equal(n, HDR + 1 + 3 + 1 + 2);
    static const uint8_t want[] = {
        1,                                                                      /* version */
        0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, /* gateway */
        0x1c, 0x1d, 0x1e, 0x1f,                                                 /* */
        0xf0, 0xef, 0xee, 0xed, 0xec, 0xeb, 0xea, 0xe9, 0xe8, 0xe7, 0xe6, 0xe5, /* request */
        0xe4, 0xe3, 0xe2, 0xe1,                                                 /* */
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, /* admitted_at_ms, LE */
        0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, /* deadline_ms, LE */
        3,    'u',  '-',  '1',  2,    'i',  't',
    };
    assert_int_equal(sizeof want, (size_t)n);
    assert_memory_equal(buf, want, sizeof want);
    assert_int_equal(SK_MSG_MAX, HDR + 2 + 2 * SK_ID_MAX);
}

static void test_round_trip(void **state)
{
    (void)state;
    static const char *ids[][2] = {
        {"u", "i"},
        {"user:42", "item.demo-1"},
        {ID64, ID64},
        {"0", ID64},
    };
    for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
        sk_msg m = sample(ids[i][0], ids[i][1]), d;
        uint8_t buf[SK_MSG_MAX];
        m.admitted_at_ms = i == 0 ? 0 : UINT64_MAX - i;
        m.deadline_ms = i == 0 ? UINT64_MAX : i;
        int n = sk_msg_encode(&m, buf, sizeof buf);
        assert_int_equal(n, HDR + 2 + strlen(ids[i][0]) + strlen(ids[i][1]));
        memset(&d, 0x77, sizeof d);
        assert_int_equal(sk_msg_decode(buf, (size_t)n, &d), 0);
        assert_msg_equal(&d, &m);
    }
}

static void test_encode_capacity(void **state)
{
    (void)state;
    sk_msg m = sample(ID64, ID64);
    uint8_t buf[SK_MSG_MAX + 1];
    buf[SK_MSG_MAX] = 0xcc;
    assert_int_equal(sk_msg_encode(&m, buf, SK_MSG_MAX - 1), -ENOBUFS);
    assert_int_equal(sk_msg_encode(&m, buf, SK_MSG_MAX), SK_MSG_MAX);
    assert_int_equal(buf[SK_MSG_MAX], 0xcc); /* nothing written past the message */

    m = sample("ab", "c");
    int need = HDR + 2 + 3;
    assert_int_equal(sk_msg_encode(&m, buf, (size_t)need - 1), -ENOBUFS);
    assert_int_equal(sk_msg_encode(&m, buf, (size_t)need), need);
}

static void test_every_truncation(void **state)
{
    (void)state;
    static const char *ids[][2] = {{"u", "i"}, {"user-17", "sku.9"}, {ID64, ID64}};
    for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
        sk_msg m = sample(ids[i][0], ids[i][1]), d;
        uint8_t buf[SK_MSG_MAX];
        int n = sk_msg_encode(&m, buf, sizeof buf);
        assert_true(n > 0);
        for (int len = 0; len < n; len++) {
            /* a copy of exactly len bytes, so ASan sees any read past it */
            uint8_t *cut = malloc(len ? (size_t)len : 1);
            assert_non_null(cut);
            memcpy(cut, buf, (size_t)len);
            if (sk_msg_decode(cut, (size_t)len, &d) != -EBADMSG)
                fail_msg("ids %zu: %d of %d bytes decoded", i, len, n);
            free(cut);
        }
        assert_int_equal(sk_msg_decode(buf, (size_t)n, &d), 0);
    }
}

static void test_wrong_version(void **state)
{
    (void)state;
    sk_msg m = sample("u", "i"), d;
    uint8_t buf[SK_MSG_MAX];
    int n = sk_msg_encode(&m, buf, sizeof buf);
    static const uint8_t versions[] = {0, 2, 3, 0x81, 0xff};
    for (size_t i = 0; i < sizeof versions; i++) {
        buf[0] = versions[i];
        assert_int_equal(sk_msg_decode(buf, (size_t)n, &d), -EBADMSG);
    }
    buf[0] = SK_MSG_VERSION;
    assert_int_equal(sk_msg_decode(buf, (size_t)n, &d), 0);
}

static void test_trailing_bytes(void **state)
{
    (void)state;
    sk_msg m = sample("user", "item"), d;
    uint8_t buf[SK_MSG_MAX + 16];
    int n = sk_msg_encode(&m, buf, SK_MSG_MAX);
    memset(buf + n, 0, 16);
    for (int extra = 1; extra <= 16; extra++)
        assert_int_equal(sk_msg_decode(buf, (size_t)(n + extra), &d), -EBADMSG);
    /* a longer item_len byte that would swallow the trailing bytes is still
     * refused: the item would hold a NUL */
    buf[HDR + 1 + 4] = 5;
    assert_int_equal(sk_msg_decode(buf, (size_t)n + 1, &d), -EBADMSG);
}

static void test_encode_invalid_ids(void **state)
{
    (void)state;
    static const char *bad[] = {"",        "a b",   "a/b",        "caf\xc3\xa9", "a\tb",
                                "quote\"", "x\xff", "semi;colon", "comma,"};
    uint8_t buf[SK_MSG_MAX];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        sk_msg m = sample("ok", "ok");
        strcpy(m.user_id, bad[i]);
        if (sk_msg_encode(&m, buf, sizeof buf) != -EINVAL)
            fail_msg("user id '%s' encoded", bad[i]);
        m = sample("ok", "ok");
        strcpy(m.item_id, bad[i]);
        if (sk_msg_encode(&m, buf, sizeof buf) != -EINVAL)
            fail_msg("item id '%s' encoded", bad[i]);
    }
    /* 65 characters: fills the array with no terminator */
    sk_msg m = sample("ok", "ok");
    memset(m.user_id, 'a', sizeof m.user_id);
    assert_int_equal(sk_msg_encode(&m, buf, sizeof buf), -EINVAL);
    m = sample("ok", "ok");
    memset(m.item_id, 'b', sizeof m.item_id);
    assert_int_equal(sk_msg_encode(&m, buf, sizeof buf), -EINVAL);
}

/* Patch a well-formed encoding of ("abc", "xyz"); the ids start at HDR + 1
 * and HDR + 1 + 3 + 1. */
static void test_decode_invalid_ids(void **state)
{
    (void)state;
    sk_msg m = sample("abc", "xyz"), d;
    uint8_t good[SK_MSG_MAX], buf[SK_MSG_MAX];
    int n = sk_msg_encode(&m, good, sizeof good);
    const int user = HDR + 1, item = HDR + 1 + 3 + 1;
    static const uint8_t bad_bytes[] = {' ', '/', 0, 0x80, 0xc3, '"', '\n', '+'};

    for (size_t i = 0; i < sizeof bad_bytes; i++) {
        memcpy(buf, good, (size_t)n);
        buf[user + 1] = bad_bytes[i];
        assert_int_equal(sk_msg_decode(buf, (size_t)n, &d), -EBADMSG);
        memcpy(buf, good, (size_t)n);
        buf[item + 2] = bad_bytes[i];
        assert_int_equal(sk_msg_decode(buf, (size_t)n, &d), -EBADMSG);
    }

    /* zero lengths */
    uint8_t z[HDR + 2 + 1];
    memcpy(z, good, HDR);
    z[HDR] = 0; /* user_len 0, item_len 1 'x' */
    z[HDR + 1] = 1;
    z[HDR + 2] = 'x';
    assert_int_equal(sk_msg_decode(z, sizeof z, &d), -EBADMSG);
    z[HDR] = 1; /* user 'x'... */
    z[HDR + 1] = 'x';
    z[HDR + 2] = 0; /* ...item_len 0 */
    assert_int_equal(sk_msg_decode(z, sizeof z, &d), -EBADMSG);

    /* lengths past SK_ID_MAX, with the bytes present */
    uint8_t big[HDR + 1 + 65 + 1 + 65];
    memcpy(big, good, HDR);
    big[HDR] = 65;
    memset(big + HDR + 1, 'a', 65);
    big[HDR + 1 + 65] = 1;
    big[HDR + 2 + 65] = 'b';
    assert_int_equal(sk_msg_decode(big, HDR + 2 + 65 + 1, &d), -EBADMSG);
    big[HDR] = 1;
    big[HDR + 1] = 'a';
    big[HDR + 2] = 65;
    memset(big + HDR + 3, 'b', 65);
    assert_int_equal(sk_msg_decode(big, HDR + 3 + 65, &d), -EBADMSG);
    big[HDR + 2] = 64; /* 64 is fine */
    assert_int_equal(sk_msg_decode(big, HDR + 3 + 64, &d), 0);
    assert_string_equal(d.user_id, "a");
    assert_int_equal(strlen(d.item_id), 64);

    /* user_len pointing past the end */
    memcpy(buf, good, (size_t)n);
    buf[HDR] = 200;
    assert_int_equal(sk_msg_decode(buf, (size_t)n, &d), -EBADMSG);
    memcpy(buf, good, (size_t)n);
    buf[HDR] = (uint8_t)(n - HDR - 1); /* user swallows the rest: no item_len */
    assert_int_equal(sk_msg_decode(buf, (size_t)n, &d), -EBADMSG);
}

static void test_ids_and_names(void **state)
{
    (void)state;
    assert_true(sk_id_valid("a", 1));
    assert_true(sk_id_valid(ID64, 64));
    assert_true(sk_id_valid("A-z_0.9:", 8));
    assert_false(sk_id_valid(ID64 "x", 65));
    assert_false(sk_id_valid("", 0));
    assert_false(sk_id_valid("a b", 3));
    assert_true(sk_id_valid("a b", 1)); /* only len bytes count */
    assert_false(sk_id_valid("a\0b", 3));

    assert_string_equal(sk_result_name(SK_SUCCESS), "success");
    assert_string_equal(sk_result_name(SK_SOLD_OUT), "sold_out");
    assert_string_equal(sk_result_name(SK_ALREADY_PURCHASED), "already_purchased");
    assert_string_equal(sk_result_name(SK_NOT_STARTED), "not_started");
    assert_string_equal(sk_result_name(SK_ENDED), "ended");
    assert_string_equal(sk_result_name(SK_BLOCKED), "blocked");
    assert_string_equal(sk_result_name(SK_EXPIRED), "timeout");
    assert_string_equal(sk_result_name(SK_UNKNOWN_ITEM), "unknown_item");
    assert_string_equal(sk_result_name(SK_RESULT_COUNT), "error");
    assert_string_equal(sk_result_name((enum sk_result) - 1), "error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wire_layout),        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_encode_capacity),    cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_wrong_version),      cmocka_unit_test(test_trailing_bytes),
        cmocka_unit_test(test_encode_invalid_ids), cmocka_unit_test(test_decode_invalid_ids),
        cmocka_unit_test(test_ids_and_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
