/*
 * test_rpc.c - the rpc frame codec and the TCP/Unix transport.
 *
 * Codec: every frame type round-trips (and re-encodes to the same bytes); a
 * table of malformed frames, each rejected with its own error; every prefix
 * of every frame is "incomplete", every cut of every payload is malformed;
 * the committed fuzz corpus replays through the fuzz target's own function.
 *
 * Handshake and frame MAC without sockets (auth.h): HMAC known answers and
 * the proof's exact input; wrong secret refused both ways (a fake server
 * neither learns the secret nor convinces the client); replayed handshakes
 * refused; tampered, replayed, reordered, reflected and foreign frames
 * refused.
 *
 * Transport: a real server and client over TCP loopback and a Unix socket:
 * handshake accepted and refused (wrong secret, a FETCH before HELLO), a
 * recorded handshake replayed, frames without a good MAC, wrong proofs
 * answered later and later, 1,100 connections stuck in their handshake while
 * a real client gets in, many
 * concurrent calls from several threads (replies sent from the loop thread
 * and from another thread), oversized and corrupt frames from a raw socket,
 * a peer that does not read, reconnect after a server restart, heartbeats in
 * both directions. Timeouts are short; nothing asserts on speed.
 *
 * TLS (certificates made fresh by tests/gen_test_certs.sh): the transport
 * tests that use only real clients run again over TLS; a client that does not
 * trust the server's CA (or whose address the certificate does not name)
 * sends nothing and reports -EACCES; a plain peer on a TLS listener never
 * gets a CHALLENGE; mutual TLS refuses clients without a certificate from
 * its CA (and still wants the secret); TLS handshakes that never finish are
 * closed by the handshake deadline and evicted by the pre-auth budget while
 * a real worker gets in; bad TLS files are refused naming their key.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/le.h"
#include "frame.h"
#include "rpc/internal.h"
#include "rpc.h"

/* the fuzz target itself, so the corpus replay runs the exact same checks */
#include "tests/fuzz/fuzz_rpc_frame.c"
#include "tests/test_time.h"

#define SECRET "s3cret-shared"
#define MAXF 4096

static int bytes_eq(rpc_bytes b, const char *s)
{
    return b.len == strlen(s) && (b.len == 0 || memcmp(b.ptr, s, b.len) == 0);
}

/* ---- sample frames ---- */

static const rpc_msg sample_msgs[3] = {
    {{"seckill.requests", 16}, 3, 1234567890123ULL, 1, {"user-1", 6}, {"{\"item\":\"i1\"}", 13}},
    {{NULL, 0}, 0, 0, 9, {NULL, 0}, {NULL, 0}},
    {{"seckill.requests.seckill.retry", 30}, 1, 5, 2, {"\0\1\2", 3}, {"v", 1}},
};

static rpc_frame sample(int type)
{
    rpc_frame f;
    memset(&f, 0, sizeof(f));
    f.type = (uint8_t)type;
    f.call_id = 0x0102030405060708ULL + (uint64_t)type;
    switch (type) {
    case RPC_HELLO:
        f.u.hello.worker_id = rpc_str("worker-7");
        f.u.hello.group = rpc_str("seckill");
        f.u.hello.role = RPC_ROLE_PURCHASE;
        for (int i = 0; i < RPC_NONCE_SIZE; i++)
            f.u.hello.nonce[i] = (uint8_t)(0x30 + i);
        f.u.hello.max_frame = 65536;
        break;
    case RPC_HELLO_OK:
        f.u.hello_ok.max_frame = RPC_DEFAULT_MAX_FRAME;
        f.u.hello_ok.heartbeat_ms = 1000;
        memset(f.u.hello_ok.proof, 0x5a, RPC_PROOF_SIZE);
        break;
    case RPC_CHALLENGE:
        for (int i = 0; i < RPC_NONCE_SIZE; i++)
            f.u.challenge.nonce[i] = (uint8_t)(0x90 + i);
        break;
    case RPC_AUTH:
        memset(f.u.auth.proof, 0xa5, RPC_PROOF_SIZE);
        break;
    case RPC_ERROR:
        f.u.error.code = -42; /* signed survives */
        f.u.error.message = rpc_str("nope");
        break;
    case RPC_FETCH:
        f.u.fetch.topic = rpc_str("seckill.requests");
        f.u.fetch.max_messages = 64;
        f.u.fetch.max_wait_ms = 250;
        break;
    case RPC_FETCH_OK:
        f.u.fetch_ok.count = 3;
        f.u.fetch_ok.msgs = sample_msgs;
        break;
    case RPC_COMMIT:
        f.u.commit.topic = rpc_str("seckill.requests");
        f.u.commit.partition = 2;
        f.u.commit.offset = UINT64_MAX;
        break;
    case RPC_RESULT:
        for (int i = 0; i < 16; i++) {
            f.u.result.gateway_id[i] = (uint8_t)i;
            f.u.result.request_id[i] = (uint8_t)(0xf0 + i);
        }
        f.u.result.result = 2;
        f.u.result.item_id = rpc_str("item-1");
        f.u.result.order_id = rpc_str("123e4567-e89b-12d3-a456-426614174000");
        break;
    case RPC_PRODUCE:
        f.u.produce.topic = rpc_str("orders");
        f.u.produce.key = rpc_str("user-1");
        f.u.produce.payload = rpc_str("{\"order\":1}");
        f.u.produce.producer_id = 77;
        f.u.produce.seq = 1;
        break;
    case RPC_PRODUCE_OK:
        f.u.produce_ok.partition = 3;
        f.u.produce_ok.offset = 99;
        break;
    case RPC_SOLD_OUT:
        f.u.stock.item_id = rpc_str("item-1");
        break;
    case RPC_STOCK:
        f.u.stock.item_id = rpc_str("item-2");
        f.u.stock.left = -1; /* signed survives */
        break;
    case RPC_PING:
    case RPC_PONG:
        f.u.ping.value = 0xdeadbeefcafeULL;
        break;
    default:
        break;
    }
    return f;
}

static void assert_msg_eq(const rpc_msg *a, const rpc_msg *b)
{
    assert_int_equal(a->topic.len, b->topic.len);
    if (a->topic.len)
        assert_memory_equal(a->topic.ptr, b->topic.ptr, a->topic.len);
    assert_int_equal(a->partition, b->partition);
    assert_true(a->offset == b->offset);
    assert_int_equal(a->delivery, b->delivery);
    assert_int_equal(a->key.len, b->key.len);
    if (a->key.len)
        assert_memory_equal(a->key.ptr, b->key.ptr, a->key.len);
    assert_int_equal(a->value.len, b->value.len);
    if (a->value.len)
        assert_memory_equal(a->value.ptr, b->value.ptr, a->value.len);
}

static void assert_bytes_eq(rpc_bytes a, rpc_bytes b)
{
    assert_int_equal(a.len, b.len);
    if (a.len)
        assert_memory_equal(a.ptr, b.ptr, a.len);
}

static void assert_frame_eq(const rpc_frame *a, const rpc_frame *b)
{
    assert_int_equal(a->type, b->type);
    assert_true(a->call_id == b->call_id);
    switch (a->type) {
    case RPC_HELLO:
        assert_bytes_eq(a->u.hello.worker_id, b->u.hello.worker_id);
        assert_bytes_eq(a->u.hello.group, b->u.hello.group);
        assert_int_equal(a->u.hello.role, b->u.hello.role);
        assert_memory_equal(a->u.hello.nonce, b->u.hello.nonce, RPC_NONCE_SIZE);
        assert_int_equal(a->u.hello.max_frame, b->u.hello.max_frame);
        break;
    case RPC_HELLO_OK:
        assert_int_equal(a->u.hello_ok.max_frame, b->u.hello_ok.max_frame);
        assert_int_equal(a->u.hello_ok.heartbeat_ms, b->u.hello_ok.heartbeat_ms);
        assert_memory_equal(a->u.hello_ok.proof, b->u.hello_ok.proof, RPC_PROOF_SIZE);
        break;
    case RPC_CHALLENGE:
        assert_memory_equal(a->u.challenge.nonce, b->u.challenge.nonce, RPC_NONCE_SIZE);
        break;
    case RPC_AUTH:
        assert_memory_equal(a->u.auth.proof, b->u.auth.proof, RPC_PROOF_SIZE);
        break;
    case RPC_ERROR:
        assert_int_equal(a->u.error.code, b->u.error.code);
        assert_bytes_eq(a->u.error.message, b->u.error.message);
        break;
    case RPC_FETCH:
        assert_bytes_eq(a->u.fetch.topic, b->u.fetch.topic);
        assert_int_equal(a->u.fetch.max_messages, b->u.fetch.max_messages);
        assert_int_equal(a->u.fetch.max_wait_ms, b->u.fetch.max_wait_ms);
        break;
    case RPC_COMMIT:
        assert_bytes_eq(a->u.commit.topic, b->u.commit.topic);
        assert_int_equal(a->u.commit.partition, b->u.commit.partition);
        assert_true(a->u.commit.offset == b->u.commit.offset);
        break;
    case RPC_RESULT:
        assert_memory_equal(a->u.result.gateway_id, b->u.result.gateway_id, 16);
        assert_memory_equal(a->u.result.request_id, b->u.result.request_id, 16);
        assert_int_equal(a->u.result.result, b->u.result.result);
        assert_bytes_eq(a->u.result.item_id, b->u.result.item_id);
        assert_bytes_eq(a->u.result.order_id, b->u.result.order_id);
        break;
    case RPC_PRODUCE:
        assert_bytes_eq(a->u.produce.topic, b->u.produce.topic);
        assert_bytes_eq(a->u.produce.key, b->u.produce.key);
        assert_bytes_eq(a->u.produce.payload, b->u.produce.payload);
        assert_true(a->u.produce.producer_id == b->u.produce.producer_id);
        assert_true(a->u.produce.seq == b->u.produce.seq);
        break;
    case RPC_PRODUCE_OK:
        assert_int_equal(a->u.produce_ok.partition, b->u.produce_ok.partition);
        assert_true(a->u.produce_ok.offset == b->u.produce_ok.offset);
        break;
    case RPC_SOLD_OUT:
    case RPC_STOCK:
        assert_bytes_eq(a->u.stock.item_id, b->u.stock.item_id);
        assert_true(a->u.stock.left == b->u.stock.left);
        break;
    case RPC_PING:
    case RPC_PONG:
        assert_true(a->u.ping.value == b->u.ping.value);
        break;
    default:
        break;
    }
}

/* ---- codec ---- */

static void test_crc32c_vector(void **state)
{
    (void)state;
    assert_int_equal(sk_crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(sk_crc32c(0, "", 0), 0);
    /* incremental == one shot */
    assert_int_equal(sk_crc32c(sk_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
}

static void test_roundtrip_every_type(void **state)
{
    (void)state;
    uint8_t stream[8192];
    size_t total = 0;

    for (int t = 1; t <= RPC_TYPE_MAX; t++) {
        rpc_frame in = sample(t), out;
        uint8_t buf[2048], again[2048];
        size_t len = 0, size = 0, used = 0, len2 = 0;

        assert_int_equal(rpc_encoded_size(&in, &size), 0);
        assert_int_equal(rpc_encode(&in, buf, sizeof(buf), &len), 0);
        assert_int_equal(len, size);
        assert_int_equal(rpc_decode(buf, len, MAXF, &out, &used), 0);
        assert_int_equal(used, len);
        if (t == RPC_FETCH_OK) {
            rpc_msg_iter it;
            rpc_msg m;
            uint32_t n = 0;
            assert_int_equal(out.u.fetch_ok.count, 3);
            assert_null(out.u.fetch_ok.msgs);
            rpc_msg_iter_init(&it, &out.u.fetch_ok);
            while (rpc_msg_iter_next(&it, &m))
                assert_msg_eq(&m, &sample_msgs[n++]);
            assert_int_equal(n, 3);
        } else {
            assert_frame_eq(&in, &out);
        }
        /* decoded frames re-encode to the same bytes (FETCH_OK through raw) */
        assert_int_equal(rpc_encode(&out, again, sizeof(again), &len2), 0);
        assert_int_equal(len2, len);
        assert_memory_equal(again, buf, len);
        assert_string_not_equal(rpc_type_name(t), "UNKNOWN");

        memcpy(stream + total, buf, len);
        total += len;
    }

    /* the whole sequence as one stream, as a socket would deliver it */
    size_t off = 0;
    for (int t = 1; t <= RPC_TYPE_MAX; t++) {
        rpc_frame out;
        size_t used = 0;
        assert_int_equal(rpc_decode(stream + off, total - off, MAXF, &out, &used), 0);
        assert_int_equal(out.type, t);
        off += used;
    }
    assert_int_equal(off, total);

    /* an empty batch and empty strings */
    rpc_frame e = {.type = RPC_FETCH_OK}, d;
    uint8_t buf[64];
    size_t len = 0;
    assert_int_equal(rpc_encode(&e, buf, sizeof(buf), &len), 0);
    assert_int_equal(len, RPC_HEADER_SIZE + 4);
    assert_int_equal(rpc_decode(buf, len, MAXF, &d, NULL), 0);
    assert_int_equal(d.u.fetch_ok.count, 0);
    rpc_msg_iter it;
    rpc_msg m;
    rpc_msg_iter_init(&it, &d.u.fetch_ok);
    assert_int_equal(rpc_msg_iter_next(&it, &m), 0);
}

static void test_encode_rejects(void **state)
{
    (void)state;
    char big[RPC_MESSAGE_MAX + 2];
    uint8_t buf[4096];
    size_t len;

    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';

    rpc_frame f = sample(RPC_RESULT);
    f.u.result.item_id.len = RPC_ITEM_ID_MAX + 1;
    f.u.result.item_id.ptr = big;
    assert_int_equal(rpc_encode(&f, buf, sizeof(buf), &len), -EINVAL);

    f = sample(RPC_ERROR);
    f.u.error.message = rpc_str(big);
    assert_int_equal(rpc_encode(&f, buf, sizeof(buf), &len), -EINVAL);
    f.u.error.message.len = RPC_MESSAGE_MAX; /* exactly the limit is fine */
    assert_int_equal(rpc_encode(&f, buf, sizeof(buf), &len), 0);

    f = sample(RPC_HELLO);
    f.u.hello.group.len = RPC_NAME_MAX + 1;
    f.u.hello.group.ptr = big;
    assert_int_equal(rpc_encode(&f, buf, sizeof(buf), &len), -EINVAL);

    f = sample(RPC_PRODUCE);
    f.u.produce.key.ptr = NULL; /* len 6 with no bytes */
    assert_int_equal(rpc_encode(&f, buf, sizeof(buf), &len), -EINVAL);

    f = sample(RPC_PING);
    f.type = 0;
    assert_int_equal(rpc_encode(&f, buf, sizeof(buf), &len), -EINVAL);
    f.type = RPC_TYPE_MAX + 1;
    assert_int_equal(rpc_encode(&f, buf, sizeof(buf), &len), -EINVAL);

    f = sample(RPC_PING);
    assert_int_equal(rpc_encode(&f, buf, RPC_HEADER_SIZE + 7, &len), -ENOSPC);
    assert_int_equal(rpc_encode(&f, buf, RPC_HEADER_SIZE + 8, &len), 0);

    f = sample(RPC_FETCH_OK);
    f.u.fetch_ok.msgs = NULL; /* count 3, neither msgs nor raw */
    assert_int_equal(rpc_encode(&f, buf, sizeof(buf), &len), -EINVAL);
}

/* ---- malformed frames ---- */

/* Write a frame by hand: header fields as given, payload bytes as given,
 * CRC correct unless the row breaks it. Returns the byte count. */
static size_t hand_frame(uint8_t *buf, uint32_t length, uint8_t version, uint8_t type,
                         uint16_t flags, const void *payload, size_t plen)
{
    sk_le_put32(buf, length);
    buf[4] = version;
    buf[5] = type;
    buf[6] = (uint8_t)flags;
    buf[7] = (uint8_t)(flags >> 8);
    memset(buf + 8, 0x11, 8);
    if (plen)
        memcpy(buf + RPC_HEADER_SIZE, payload, plen);
    uint32_t crc = sk_crc32c(0, buf, 16);
    crc = sk_crc32c(crc, buf + RPC_HEADER_SIZE, plen);
    sk_le_put32(buf + 16, crc);
    return RPC_HEADER_SIZE + plen;
}

#define P(...) ((const uint8_t[]){__VA_ARGS__}), sizeof((const uint8_t[]){__VA_ARGS__})

#define KEEP_LEN 0xFFFFFFFEu /* sentinel: header + payload, CRC recomputed */

struct bad_row {
    const char *name;
    uint32_t length; /* or KEEP_LEN */
    uint8_t version;
    uint8_t type;
    uint16_t flags;
    const uint8_t *payload;
    size_t plen;
    int corrupt_crc;
    int expect;
};

static const uint8_t ping_payload[8] = {1, 2, 3, 4, 5, 6, 7, 8};
static const uint8_t long_item[2 + 65 + 8] = {65, 0, 'x'}; /* STOCK, item id 65 bytes */

#define V RPC_VERSION
static const struct bad_row bad_rows[] = {
    {"bad crc", KEEP_LEN, V, RPC_PING, 0, ping_payload, 8, 1, -EBADMSG},
    {"bad crc, empty payload", KEEP_LEN, V, RPC_ACK, 0, NULL, 0, 1, -EBADMSG},
    {"version 0", KEEP_LEN, 0, RPC_PING, 0, ping_payload, 8, 0, -EPROTONOSUPPORT},
    {"version 1", KEEP_LEN, 1, RPC_PING, 0, ping_payload, 8, 0, -EPROTONOSUPPORT},
    {"length over max by one", MAXF + 1, V, RPC_PING, 0, NULL, 0, 0, -EMSGSIZE},
    {"length 4 GiB", 0xFFFFFFFFu, V, RPC_PING, 0, NULL, 0, 0, -EMSGSIZE},
    {"length 0", 0, V, RPC_PING, 0, NULL, 0, 0, -ERANGE},
    {"length under header", RPC_HEADER_SIZE - 1, V, RPC_PING, 0, NULL, 0, 0, -ERANGE},
    {"unknown type 0", KEEP_LEN, V, 0, 0, ping_payload, 8, 0, -ENOMSG},
    {"unknown type max+1", KEEP_LEN, V, RPC_TYPE_MAX + 1, 0, ping_payload, 8, 0, -ENOMSG},
    {"unknown type 255", KEEP_LEN, V, 255, 0, NULL, 0, 0, -ENOMSG},
    {"reserved flags set", KEEP_LEN, V, RPC_PING, 0x0100, ping_payload, 8, 0, -EPROTO},
    {"ping payload short", KEEP_LEN, V, RPC_PING, 0, ping_payload, 7, 0, -EPROTO},
    {"ack with a trailing byte", KEEP_LEN, V, RPC_ACK, 0, ping_payload, 1, 0, -EPROTO},
    {"hello worker id past end", KEEP_LEN, V, RPC_HELLO, 0, P(200, 0, 'w'), 0, -EPROTO},
    {"hello worker id 65535", KEEP_LEN, V, RPC_HELLO, 0, P(0xff, 0xff, 'w'), 0, -ENAMETOOLONG},
    {"hello secret past end", KEEP_LEN, V, RPC_HELLO, 0, P(1, 0, 'w', 0, 0, 9, 0, 's'), 0,
     -EPROTO},
    {"hello without max_frame", KEEP_LEN, V, RPC_HELLO, 0, P(0, 0, 0, 0, 0, 0), 0, -EPROTO},
    {"error message past end", KEEP_LEN, V, RPC_ERROR, 0, P(13, 0, 0, 0, 5, 0, 'a', 'b'), 0,
     -EPROTO},
    {"error message over limit", KEEP_LEN, V, RPC_ERROR, 0, P(13, 0, 0, 0, 0x01, 0x04), 0,
     -ENAMETOOLONG},
    {"topic over RPC_NAME_MAX", KEEP_LEN, V, RPC_FETCH, 0, P(0x00, 0x01, 'a'), 0, -ENAMETOOLONG},
    {"stock item id over limit", KEEP_LEN, V, RPC_STOCK, 0, long_item, sizeof(long_item), 0,
     -ENAMETOOLONG},
    {"fetch_ok count 2^32-1", KEEP_LEN, V, RPC_FETCH_OK, 0, P(0xff, 0xff, 0xff, 0xff), 0,
     -EPROTO},
    {"fetch_ok count 1, empty", KEEP_LEN, V, RPC_FETCH_OK, 0,
     P(1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
     0, -EPROTO},
    {"fetch_ok value past end", KEEP_LEN, V, RPC_FETCH_OK, 0,
     P(1, 0, 0, 0, /* topic */ 0, 0, /* partition */ 0, 0, 0, 0, /* offset */ 0, 0, 0, 0, 0, 0, 0,
       0, /* delivery */ 1, 0, 0, 0, /* key */ 0, 0, 0, 0, /* value len */ 0xff, 0xff, 0xff, 0x7f),
     0, -EPROTO},
    {"produce key past end", KEEP_LEN, V, RPC_PRODUCE, 0,
     P(1, 0, 't', 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0), 0, -EPROTO},
    {"result ids cut", KEEP_LEN, V, RPC_RESULT, 0, P(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0, -EPROTO},
    {"commit offset cut", KEEP_LEN, V, RPC_COMMIT, 0, P(0, 0, 1, 0, 0, 0, 9, 9, 9), 0, -EPROTO},
    {"version 3", KEEP_LEN, 3, RPC_PING, 0, ping_payload, 8, 0, -EPROTONOSUPPORT},
    {"unknown flag", KEEP_LEN, V, RPC_PING, 0x0002, ping_payload, 8, 0, -EPROTO},
    {"mac flag, no room for the mac", KEEP_LEN, V, RPC_PING, RPC_FLAG_MAC, ping_payload, 8, 0,
     -EPROTO},
    {"challenge nonce cut", KEEP_LEN, V, RPC_CHALLENGE, 0, ping_payload, 8, 0, -EPROTO},
    {"auth proof cut", KEEP_LEN, V, RPC_AUTH, 0, ping_payload, 8, 0, -EPROTO},
};

static void test_malformed_table(void **state)
{
    (void)state;
    uint8_t buf[512];

    for (size_t i = 0; i < sizeof(bad_rows) / sizeof(bad_rows[0]); i++) {
        const struct bad_row *r = &bad_rows[i];
        size_t n = hand_frame(buf, 0, r->version, r->type, r->flags, r->payload, r->plen);
        uint32_t length = r->length == KEEP_LEN ? (uint32_t)n : r->length;
        sk_le_put32(buf, length);
        if (r->length == KEEP_LEN) {
            /* the length is part of the CRC: recompute for the edited header */
            uint32_t crc = sk_crc32c(0, buf, 16);
            crc = sk_crc32c(crc, buf + RPC_HEADER_SIZE, r->plen);
            sk_le_put32(buf + 16, crc);
        }
        if (r->corrupt_crc)
            buf[17] ^= 0x40;

        rpc_frame f;
        size_t used = 12345;
        int rc = rpc_decode(buf, n, MAXF, &f, &used);
        if (rc != r->expect)
            fail_msg("row '%s': got %d, want %d", r->name, rc, r->expect);
        assert_int_equal(used, 12345); /* nothing consumed */

        /* the same bytes through the fuzz target: no crash */
        LLVMFuzzerTestOneInput(buf, n);
    }

    /* header-only checks need nothing but the header: an announced 4 GiB
     * frame is refused from 20 bytes, not waited for */
    uint32_t flen = 0;
    hand_frame(buf, 0xFFFFFFFFu, 1, RPC_PING, 0, NULL, 0);
    assert_int_equal(rpc_peek_header(buf, RPC_HEADER_SIZE, MAXF, &flen), -EMSGSIZE);
    assert_int_equal(rpc_peek_header(buf, RPC_HEADER_SIZE - 1, MAXF, &flen), -EAGAIN);
}

static void test_truncated_at_every_byte(void **state)
{
    (void)state;

    for (int t = 1; t <= RPC_TYPE_MAX; t++) {
        rpc_frame in = sample(t), out;
        uint8_t buf[2048], cut[2048];
        size_t len = 0;
        assert_int_equal(rpc_encode(&in, buf, sizeof(buf), &len), 0);

        /* a stream cut anywhere is incomplete, never an error and never a frame */
        for (size_t k = 0; k < len; k++) {
            uint8_t *copy = malloc(k ? k : 1); /* exact size: ASan sees any overread */
            memcpy(copy, buf, k);
            assert_int_equal(rpc_decode(copy, k, MAXF, &out, NULL), -EAGAIN);
            free(copy);
        }

        /* a frame whose payload was cut (length and CRC consistent) is malformed */
        size_t plen = len - RPC_HEADER_SIZE;
        for (size_t k = 0; k < plen; k++) {
            memcpy(cut, buf, RPC_HEADER_SIZE + k);
            sk_le_put32(cut, (uint32_t)(RPC_HEADER_SIZE + k));
            uint32_t crc = sk_crc32c(0, cut, 16);
            crc = sk_crc32c(crc, cut + RPC_HEADER_SIZE, k);
            sk_le_put32(cut + 16, crc);
            uint8_t *exact = malloc(RPC_HEADER_SIZE + k);
            memcpy(exact, cut, RPC_HEADER_SIZE + k);
            int rc = rpc_decode(exact, RPC_HEADER_SIZE + k, MAXF, &out, NULL);
            free(exact);
            if (rc != -EPROTO)
                fail_msg("%s cut at payload byte %zu: got %d", rpc_type_name(t), k, rc);
        }
    }
}

static void test_helpers(void **state)
{
    (void)state;
    assert_true(rpc_secret_equal("abc", 3, "abc", 3));
    assert_false(rpc_secret_equal("abc", 3, "abd", 3));
    assert_false(rpc_secret_equal("abc", 3, "abcd", 4));
    assert_false(rpc_secret_equal("abcd", 4, "abc", 3));
    assert_false(rpc_secret_equal("", 0, "a", 1));
    assert_true(rpc_secret_equal(NULL, 0, NULL, 0));

    /* backoff: 50 ms doubling to 5 s, each jittered into [d/2, d] */
    uint64_t rng = 1;
    for (int rep = 0; rep < 200; rep++) {
        uint32_t d0 = rpc__backoff_ms(0, 50, 5000, &rng);
        uint32_t d3 = rpc__backoff_ms(3, 50, 5000, &rng);
        uint32_t d20 = rpc__backoff_ms(20, 50, 5000, &rng);
        uint32_t d99 = rpc__backoff_ms(1000, 50, 5000, &rng);
        assert_in_range(d0, 25, 50);
        assert_in_range(d3, 200, 400);
        assert_in_range(d20, 2500, 5000);
        assert_in_range(d99, 2500, 5000);
    }

    struct sockaddr_storage sa;
    socklen_t len;
    assert_int_equal(rpc__addr_parse("tcp:127.0.0.1:7000", &sa, &len), 0);
    assert_int_equal(sa.ss_family, AF_INET);
    assert_int_equal(rpc__addr_parse("tcp:[::1]:0", &sa, &len), 0);
    assert_int_equal(sa.ss_family, AF_INET6);
    assert_int_equal(rpc__addr_parse("unix:/tmp/x.sock", &sa, &len), 0);
    assert_int_equal(sa.ss_family, AF_UNIX);
    assert_int_equal(rpc__addr_parse("tcp:127.0.0.1", &sa, &len), -EINVAL);
    assert_int_equal(rpc__addr_parse("tcp:127.0.0.1:70000", &sa, &len), -EINVAL);
    assert_int_equal(rpc__addr_parse("tcp:127.0.0.1:7x", &sa, &len), -EINVAL);
    assert_int_equal(rpc__addr_parse("udp:1.2.3.4:5", &sa, &len), -EINVAL);
    assert_int_equal(rpc__addr_parse("unix:", &sa, &len), -EINVAL);
    assert_int_equal(rpc__addr_parse(NULL, &sa, &len), -EINVAL);
}

/* ---- handshake and frame MAC, without sockets (auth.h) ---- */

static const uint8_t nonce_c[RPC_NONCE_SIZE] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
static const uint8_t nonce_s[RPC_NONCE_SIZE] = {0xf1, 0xf2, 0xf3, 0xf4};

static rpc_auth *mk_auth(int side, const char *secret, const uint8_t *nonce)
{
    rpc_auth *a = NULL;
    rpc_auth_config ac = {.side = side, .secret = secret, .secret_len = strlen(secret),
                          .worker_id = "w-1", .group = "seckill", .role = RPC_ROLE_PURCHASE,
                          .max_frame = 4096, .heartbeat_ms = 1000, .nonce = nonce};
    assert_int_equal(rpc_auth_create(&ac, &a), 0);
    return a;
}

/* One message: feed what `from` produced (in[0, n)) to `to`. OUT: reply. */
static int step(rpc_auth *to, const uint8_t *in, size_t n, uint8_t *out, size_t *out_len)
{
    size_t used = 0;
    int rc = rpc_auth_feed(to, in, n, &used, out, RPC_AUTH_OUT_MAX, out_len);
    if (rc >= 0)
        assert_int_equal(used, n);
    return rc;
}

/* The wire bytes of a whole handshake. */
struct hs {
    uint8_t hello[RPC_AUTH_OUT_MAX], chal[RPC_AUTH_OUT_MAX], auth[RPC_AUTH_OUT_MAX],
        ok[RPC_AUTH_OUT_MAX];
    size_t nh, nc, na, no;
};

/* Run a handshake between c and v. Returns the client's last result. */
static int handshake_mem(rpc_auth *c, rpc_auth *v, struct hs *h, int *srv_rc)
{
    int rc;
    assert_int_equal(rpc_auth_start(c, h->hello, sizeof(h->hello), &h->nh), 0);
    assert_int_equal(step(v, h->hello, h->nh, h->chal, &h->nc), RPC_AUTH_MORE);
    assert_int_equal(step(c, h->chal, h->nc, h->auth, &h->na), RPC_AUTH_MORE);
    *srv_rc = step(v, h->auth, h->na, h->ok, &h->no);
    size_t n = 0;
    uint8_t junk[RPC_AUTH_OUT_MAX];
    rc = step(c, h->ok, h->no, junk, &n);
    assert_int_equal(n, 0);
    return rc;
}

static void test_auth_hmac_kat(void **state)
{
    (void)state;
    /* RFC 4231 test cases 1 and 2 */
    static const uint8_t want1[32] = {
        0xb0, 0x34, 0x4c, 0x61, 0xd8, 0xdb, 0x38, 0x53, 0x5c, 0xa8, 0xaf, 0xce, 0xaf, 0x0b, 0xf1, 0x2b,
        0x88, 0x1d, 0xc2, 0x00, 0xc9, 0x83, 0x3d, 0xa7, 0x26, 0xe9, 0x37, 0x6c, 0x2e, 0x32, 0xcf, 0xf7};
    static const uint8_t want2[32] = {
        0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95, 0x75, 0xc7,
        0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9, 0x64, 0xec, 0x38, 0x43};
    uint8_t key1[20], out[32];
    memset(key1, 0x0b, sizeof(key1));
    assert_int_equal(rpc_auth_hmac(key1, sizeof(key1), "Hi There", 8, out), 0);
    assert_memory_equal(out, want1, 32);
    const char *d2 = "what do ya want for nothing?";
    assert_int_equal(rpc_auth_hmac("Jefe", 4, d2, strlen(d2), out), 0);
    assert_memory_equal(out, want2, 32);

    /* the client's proof is HMAC(S, "seckill-rpc v2 client proof" 0 B) with
     * B as auth.c documents it: pin the wire format */
    rpc_auth *c = mk_auth(RPC_AUTH_CLIENT, SECRET, nonce_c);
    rpc_auth *v = mk_auth(RPC_AUTH_SERVER, SECRET, nonce_s);
    struct hs h;
    int src = 0;
    assert_int_equal(handshake_mem(c, v, &h, &src), RPC_AUTH_DONE);
    assert_int_equal(src, RPC_AUTH_DONE);
    uint8_t msg[512];
    size_t n = 0;
    const char *label = "seckill-rpc v2 client proof";
    memcpy(msg, label, strlen(label) + 1);
    n = strlen(label) + 1;
    memcpy(msg + n, nonce_c, 32);
    memcpy(msg + n + 32, nonce_s, 32);
    n += 64;
    sk_le_put32(msg + n, RPC_ROLE_PURCHASE);
    n += 4;
    msg[n++] = 3;
    msg[n++] = 0;
    memcpy(msg + n, "w-1", 3);
    n += 3;
    msg[n++] = 7;
    msg[n++] = 0;
    memcpy(msg + n, "seckill", 7);
    n += 7;
    sk_le_put32(msg + n, 4096);
    n += 4;
    assert_int_equal(rpc_auth_hmac(SECRET, strlen(SECRET), msg, n, out), 0);
    rpc_frame f;
    assert_int_equal(rpc_decode(h.auth, h.na, 4096, &f, NULL), 0);
    assert_int_equal(f.type, RPC_AUTH);
    assert_memory_equal(f.u.auth.proof, out, 32);
    /* and the server's proof the same with its own label */
    label = "seckill-rpc v2 server proof";
    memcpy(msg, label, strlen(label) + 1); /* same length as the client label */
    assert_int_equal(rpc_auth_hmac(SECRET, strlen(SECRET), msg, n, out), 0);
    assert_int_equal(rpc_decode(h.ok, h.no, 4096, &f, NULL), 0);
    assert_int_equal(f.type, RPC_HELLO_OK);
    assert_non_null(f.mac); /* HELLO_OK is the first sealed frame */
    assert_memory_equal(f.u.hello_ok.proof, out, 32);
    rpc_auth_destroy(c);
    rpc_auth_destroy(v);
}

/* A HELLO whose worker id or group gained a zero byte and more on the way
 * does not keep the proof the client made for the names it sent: the proof
 * binds each name with its length on the wire. */
static void test_auth_names_bound_whole(void **state)
{
    (void)state;
    static const char w_ext[] = "w-1\0evil", g_ext[] = "seckill\0other";
    const rpc_bytes names[2][2] = {{{w_ext, sizeof w_ext - 1}, rpc_str("seckill")},
                                   {rpc_str("w-1"), {g_ext, sizeof g_ext - 1}}};

    for (int i = 0; i < 2; i++) {
        rpc_auth *c = mk_auth(RPC_AUTH_CLIENT, SECRET, nonce_c);
        rpc_auth *v = mk_auth(RPC_AUTH_SERVER, SECRET, nonce_s);
        uint8_t hello[RPC_AUTH_OUT_MAX], moved[RPC_AUTH_OUT_MAX], chal[RPC_AUTH_OUT_MAX],
            auth[RPC_AUTH_OUT_MAX], out[RPC_AUTH_OUT_MAX];
        size_t nh = 0, nm = 0, nc = 0, na = 0, no = 0;
        rpc_frame f;

        assert_int_equal(rpc_auth_start(c, hello, sizeof hello, &nh), 0);
        assert_int_equal(rpc_decode(hello, nh, 4096, &f, NULL), 0);
        f.u.hello.worker_id = names[i][0];
        f.u.hello.group = names[i][1];
        assert_int_equal(rpc_encode(&f, moved, sizeof moved, &nm), 0);
        assert_int_equal(step(v, moved, nm, chal, &nc), RPC_AUTH_MORE);
        assert_int_equal(step(c, chal, nc, auth, &na), RPC_AUTH_MORE);
        assert_int_equal(step(v, auth, na, out, &no), -EACCES);
        assert_int_equal(rpc_decode(out, no, 4096, &f, NULL), 0);
        assert_int_equal(f.type, RPC_ERROR);
        assert_false(rpc_auth_done(v));
        rpc_auth_destroy(c);
        rpc_auth_destroy(v);
    }
}

/* The secret never appears in anything a side sends. */
static void assert_no_secret(const uint8_t *p, size_t n, const char *secret)
{
    assert_null(memmem(p, n, secret, strlen(secret)));
}

static void test_auth_state_machine(void **state)
{
    (void)state;
    struct hs h, h2;
    int src = 0;
    uint8_t out[RPC_AUTH_OUT_MAX];
    size_t n = 0;

    /* both sides right: done, the session works both ways */
    rpc_auth *c = mk_auth(RPC_AUTH_CLIENT, SECRET, NULL);
    rpc_auth *v = mk_auth(RPC_AUTH_SERVER, SECRET, NULL);
    assert_false(rpc_auth_done(c));
    assert_int_equal(handshake_mem(c, v, &h, &src), RPC_AUTH_DONE);
    assert_int_equal(src, RPC_AUTH_DONE);
    assert_true(rpc_auth_done(c) && rpc_auth_done(v));
    assert_int_equal(rpc_auth_hello_ok(c)->max_frame, 4096);
    assert_string_equal((const char *)rpc_auth_hello(v)->worker_id.ptr, "w-1");
    assert_int_equal(rpc_auth_hello(v)->role, RPC_ROLE_PURCHASE);
    assert_no_secret(h.hello, h.nh, SECRET);
    assert_no_secret(h.auth, h.na, SECRET);
    assert_no_secret(h.chal, h.nc, SECRET);
    assert_no_secret(h.ok, h.no, SECRET);
    assert_int_equal(rpc_auth_feed(c, h.ok, h.no, &n, out, sizeof(out), &n), -EALREADY);

    static const uint8_t zero[RPC_MAC_SIZE];
    uint8_t f1[256], f2[256], keep[256];
    size_t n1 = 0, n2 = 0;
    rpc_frame p = sample(RPC_PING);
    p.mac = zero;
    assert_int_equal(rpc_encode(&p, f1, sizeof(f1), &n1), 0);
    assert_int_equal(rpc_auth_seal(c, f1, n1), 0);
    rpc_frame r = sample(RPC_RESULT);
    r.mac = zero;
    assert_int_equal(rpc_encode(&r, f2, sizeof(f2), &n2), 0);
    assert_int_equal(rpc_auth_seal(c, f2, n2), 0);

    /* reordered: the second frame first is refused */
    rpc_auth *v2 = NULL;
    {
        rpc_auth *c2 = mk_auth(RPC_AUTH_CLIENT, SECRET, NULL);
        v2 = mk_auth(RPC_AUTH_SERVER, SECRET, NULL);
        assert_int_equal(handshake_mem(c2, v2, &h2, &src), RPC_AUTH_DONE);
        /* a frame of another session (other nonces, other keys) is refused */
        assert_int_equal(rpc_auth_open(v2, f1, n1), -EKEYREJECTED);
        rpc_auth_destroy(c2);
    }
    assert_int_equal(rpc_auth_open(v, f2, n2), -EKEYREJECTED);
    /* in order: accepted */
    assert_int_equal(rpc_auth_open(v, f1, n1), 0);
    /* replayed: refused (the server expects number 1 now) */
    assert_int_equal(rpc_auth_open(v, f1, n1), -EKEYREJECTED);
    /* tampered (CRC recomputed, so only the MAC can tell): refused */
    memcpy(keep, f2, n2);
    keep[RPC_HEADER_SIZE + 32] ^= 1; /* the result code */
    uint32_t crc = sk_crc32c(0, keep, 16);
    crc = sk_crc32c(crc, keep + RPC_HEADER_SIZE, n2 - RPC_HEADER_SIZE - RPC_MAC_SIZE);
    sk_le_put32(keep + 16, crc);
    rpc_frame dec;
    assert_int_equal(rpc_decode(keep, n2, 4096, &dec, NULL), 0); /* well-formed */
    assert_int_equal(rpc_auth_open(v, keep, n2), -EKEYREJECTED);
    /* the same frame without its MAC flag: refused */
    rpc_frame bare = sample(RPC_RESULT);
    uint8_t nb[256];
    size_t nbl = 0;
    assert_int_equal(rpc_encode(&bare, nb, sizeof(nb), &nbl), 0);
    assert_int_equal(rpc_auth_open(v, nb, nbl), -EKEYREJECTED);
    /* the genuine second frame is still good: failures do not advance */
    assert_int_equal(rpc_auth_open(v, f2, n2), 0);
    /* reflected: a client frame sent back to the client (other direction's key) */
    assert_int_equal(rpc_auth_open(c, f1, n1), -EKEYREJECTED);
    /* server -> client: sealed by the server, opened by the client */
    uint8_t s1[256];
    size_t ns1 = 0;
    p.mac = zero;
    assert_int_equal(rpc_encode(&p, s1, sizeof(s1), &ns1), 0);
    assert_int_equal(rpc_auth_seal(v, s1, ns1), 0);
    assert_int_equal(rpc_auth_open(c, s1, ns1), 0);
    rpc_auth_destroy(c);
    rpc_auth_destroy(v);
    rpc_auth_destroy(v2);

    /* wrong secret at the client: the server refuses, and says so */
    c = mk_auth(RPC_AUTH_CLIENT, "not-the-secret", NULL);
    v = mk_auth(RPC_AUTH_SERVER, SECRET, NULL);
    assert_int_equal(handshake_mem(c, v, &h, &src), -EACCES);
    assert_int_equal(src, -EACCES);
    assert_false(rpc_auth_done(c) || rpc_auth_done(v));
    rpc_frame e;
    assert_int_equal(rpc_decode(h.ok, h.no, 4096, &e, NULL), 0);
    assert_int_equal(e.type, RPC_ERROR);
    assert_int_equal(e.u.error.code, EACCES);
    assert_null(e.mac);
    rpc_auth_destroy(c);
    rpc_auth_destroy(v);

    /* a fake server (wrong secret) cannot make the client believe it: the
     * client refuses its HELLO_OK; and what the fake server saw holds no
     * secret, only the client's proof for the fake server's nonce */
    c = mk_auth(RPC_AUTH_CLIENT, SECRET, NULL);
    v = mk_auth(RPC_AUTH_SERVER, "fake-server-guess", NULL);
    assert_int_equal(rpc_auth_start(c, h.hello, sizeof(h.hello), &h.nh), 0);
    assert_int_equal(step(v, h.hello, h.nh, h.chal, &h.nc), RPC_AUTH_MORE);
    assert_int_equal(step(c, h.chal, h.nc, h.auth, &h.na), RPC_AUTH_MORE);
    assert_no_secret(h.hello, h.nh, SECRET);
    assert_no_secret(h.auth, h.na, SECRET);
    /* the fake server refuses the (right) proof; it cannot compute its own */
    assert_int_equal(step(v, h.auth, h.na, h.ok, &h.no), -EACCES);
    /* it sends a HELLO_OK anyway, with a made-up proof and MAC */
    rpc_frame fake = sample(RPC_HELLO_OK);
    fake.mac = zero;
    assert_int_equal(rpc_encode(&fake, h.ok, sizeof(h.ok), &h.no), 0);
    assert_int_equal(step(c, h.ok, h.no, out, &n), -EACCES);
    assert_false(rpc_auth_done(c));
    assert_int_equal(rpc_auth_seal(c, f1, n1), -EINVAL); /* no session to send with */
    rpc_auth_destroy(c);
    rpc_auth_destroy(v);

    /* replayed client messages: a recorded HELLO + AUTH meet a fresh server
     * nonce and are refused */
    c = mk_auth(RPC_AUTH_CLIENT, SECRET, NULL);
    v = mk_auth(RPC_AUTH_SERVER, SECRET, NULL);
    assert_int_equal(handshake_mem(c, v, &h, &src), RPC_AUTH_DONE);
    rpc_auth_destroy(c);
    rpc_auth_destroy(v);
    v = mk_auth(RPC_AUTH_SERVER, SECRET, NULL);
    assert_int_equal(step(v, h.hello, h.nh, out, &n), RPC_AUTH_MORE);
    assert_int_equal(step(v, h.auth, h.na, out, &n), -EACCES);
    rpc_auth_destroy(v);
    /* replayed server messages: a recorded CHALLENGE + HELLO_OK meet a fresh
     * client nonce and are refused */
    c = mk_auth(RPC_AUTH_CLIENT, SECRET, NULL);
    assert_int_equal(rpc_auth_start(c, out, sizeof(out), &n), 0);
    assert_int_equal(step(c, h.chal, h.nc, out, &n), RPC_AUTH_MORE);
    assert_int_equal(step(c, h.ok, h.no, out, &n), -EACCES);
    rpc_auth_destroy(c);

    /* out of order: AUTH first, or a sealed frame before the handshake */
    v = mk_auth(RPC_AUTH_SERVER, SECRET, NULL);
    assert_int_equal(step(v, h.auth, h.na, out, &n), -EPROTO);
    assert_true(n > 0); /* an ERROR to send */
    assert_int_equal(step(v, h.hello, h.nh, out, &n), -EPROTO); /* stays failed */
    rpc_auth_destroy(v);
    /* a truncated frame is just incomplete; garbage is malformed */
    v = mk_auth(RPC_AUTH_SERVER, SECRET, NULL);
    size_t used = 99;
    assert_int_equal(rpc_auth_feed(v, h.hello, h.nh - 1, &used, out, sizeof(out), &n),
                     RPC_AUTH_MORE);
    assert_int_equal(used, 0);
    assert_int_equal(n, 0);
    uint8_t junk[64];
    memset(junk, 0x42, sizeof(junk));
    assert_int_equal(rpc_auth_feed(v, junk, sizeof(junk), &used, out, sizeof(out), &n),
                     -EMSGSIZE);
    rpc_auth_destroy(v);

    /* fixed nonces make a handshake repeatable, byte for byte */
    c = mk_auth(RPC_AUTH_CLIENT, SECRET, nonce_c);
    v = mk_auth(RPC_AUTH_SERVER, SECRET, nonce_s);
    assert_int_equal(handshake_mem(c, v, &h, &src), RPC_AUTH_DONE);
    rpc_auth_destroy(c);
    rpc_auth_destroy(v);
    c = mk_auth(RPC_AUTH_CLIENT, SECRET, nonce_c);
    v = mk_auth(RPC_AUTH_SERVER, SECRET, nonce_s);
    assert_int_equal(handshake_mem(c, v, &h2, &src), RPC_AUTH_DONE);
    assert_int_equal(h.no, h2.no);
    assert_memory_equal(h.ok, h2.ok, h.no);
    rpc_auth_destroy(c);
    rpc_auth_destroy(v);
    rpc_auth_destroy(NULL);
}

/* ---- corpus replay ---- */

static void corpus_dir(char *out, size_t cap)
{
#ifdef RPC_CORPUS_DIR
    snprintf(out, cap, "%s", RPC_CORPUS_DIR);
#else
    /* tests/unit/test_rpc.c -> tests/fuzz/corpus_rpc (CMake passes absolute paths) */
    snprintf(out, cap, "%s", __FILE__);
    char *slash = strrchr(out, '/');
    if (slash)
        *slash = '\0';
    slash = strrchr(out, '/');
    if (slash)
        *slash = '\0';
    strncat(out, "/fuzz/corpus_rpc", cap - strlen(out) - 1);
#endif
}

static void test_corpus_replay(void **state)
{
    (void)state;
    char dir[4096];
    int files = 0;

    corpus_dir(dir, sizeof(dir));
    DIR *d = opendir(dir);
    if (!d)
        fail_msg("corpus directory %s: %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[8192];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
        assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, (size_t)n);
        free(buf);
        files++;
    }
    closedir(d);
    assert_true(files >= 10);
}

/* ---- transport fixtures ---- */

struct job {
    rpc_conn *c;
    uint64_t call_id;
    uint64_t producer_id;
    uint64_t seq;
};

struct srv {
    rpc_server *s;
    char addr[160];
    atomic_int opens;
    atomic_int closes;
    atomic_int last_close_reason;
    atomic_int frames;
    atomic_int flood_result;
    char last_worker[64];

    /* replies handed to another thread (rpc_conn_send from outside the loop) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job jobs[8192];
    size_t head, tail;
    int stop;
    pthread_t replier;
};

static void *replier_main(void *arg)
{
    struct srv *x = arg;
    pthread_mutex_lock(&x->mu);
    for (;;) {
        while (x->head == x->tail && !x->stop)
            pthread_cond_wait(&x->cv, &x->mu);
        if (x->head == x->tail && x->stop)
            break;
        struct job j = x->jobs[x->head++ % 8192];
        pthread_mutex_unlock(&x->mu);
        rpc_frame r = {.type = RPC_PRODUCE_OK, .call_id = j.call_id};
        r.u.produce_ok.partition = (uint32_t)j.producer_id;
        r.u.produce_ok.offset = j.seq;
        rpc_conn_send(j.c, &r);
        rpc_conn_unref(j.c);
        pthread_mutex_lock(&x->mu);
    }
    pthread_mutex_unlock(&x->mu);
    return NULL;
}

static void on_open(void *arg, rpc_conn *c, const rpc_hello *h)
{
    struct srv *x = arg;
    size_t n = h->worker_id.len < sizeof(x->last_worker) - 1 ? h->worker_id.len
                                                              : sizeof(x->last_worker) - 1;
    memcpy(x->last_worker, h->worker_id.ptr, n);
    x->last_worker[n] = '\0';
    atomic_fetch_add(&x->opens, 1);
    /* a push right behind HELLO_OK: the client must hand it to on_frame */
    rpc_frame s = {.type = RPC_STOCK};
    s.u.stock.item_id = rpc_str("item-1");
    s.u.stock.left = 5;
    rpc_conn_send(c, &s);
}

static void on_close(void *arg, rpc_conn *c, int reason)
{
    struct srv *x = arg;
    (void)c;
    atomic_store(&x->last_close_reason, reason);
    atomic_fetch_add(&x->closes, 1);
}

static void on_frame(void *arg, rpc_conn *c, const rpc_frame *f)
{
    struct srv *x = arg;
    atomic_fetch_add(&x->frames, 1);

    switch (f->type) {
    case RPC_PRODUCE: {
        if (f->u.produce.seq % 2) {
            /* odd: answer from another thread */
            rpc_conn_ref(c);
            pthread_mutex_lock(&x->mu);
            x->jobs[x->tail++ % 8192] =
                (struct job){c, f->call_id, f->u.produce.producer_id, f->u.produce.seq};
            pthread_cond_signal(&x->cv);
            pthread_mutex_unlock(&x->mu);
            return;
        }
        rpc_frame r = {.type = RPC_PRODUCE_OK, .call_id = f->call_id};
        r.u.produce_ok.partition = (uint32_t)f->u.produce.producer_id;
        r.u.produce_ok.offset = f->u.produce.seq;
        rpc_conn_send(c, &r);
        return;
    }
    case RPC_FETCH: {
        if (bytes_eq(f->u.fetch.topic, "flood")) {
            /* never read by the peer: keep sending until the queue limit trips */
            static char blob[3000];
            rpc_msg m = {rpc_str("flood"), 0, 0, 1, {NULL, 0}, {blob, sizeof(blob)}};
            rpc_frame r = {.type = RPC_FETCH_OK, .call_id = f->call_id};
            r.u.fetch_ok.count = 1;
            r.u.fetch_ok.msgs = &m;
            int rc = 0;
            for (int i = 0; i < 100000 && rc == 0; i++)
                rc = rpc_conn_send(c, &r);
            atomic_store(&x->flood_result, rc);
            return;
        }
        if (bytes_eq(f->u.fetch.topic, "big")) {
            /* one message over many TLS records (16 KiB each) */
            static char blob[300 << 10];
            memset(blob, 'z', sizeof(blob));
            rpc_msg m = {rpc_str("big"), 0, 7, 1, {NULL, 0}, {blob, sizeof(blob)}};
            rpc_frame r = {.type = RPC_FETCH_OK, .call_id = f->call_id};
            r.u.fetch_ok.count = 1;
            r.u.fetch_ok.msgs = &m;
            rpc_conn_send(c, &r);
            return;
        }
        rpc_msg ms[16];
        uint32_t n = f->u.fetch.max_messages > 16 ? 16 : f->u.fetch.max_messages;
        for (uint32_t i = 0; i < n; i++)
            ms[i] = (rpc_msg){f->u.fetch.topic, i, 100 + i, 1, rpc_str("k"), rpc_str("v")};
        rpc_frame r = {.type = RPC_FETCH_OK, .call_id = f->call_id};
        r.u.fetch_ok.count = n;
        r.u.fetch_ok.msgs = ms;
        rpc_conn_send(c, &r);
        return;
    }
    default: {
        rpc_frame r = {.type = RPC_ACK, .call_id = f->call_id};
        if (f->call_id)
            rpc_conn_send(c, &r);
        return;
    }
    }
}

static int unix_mode;
static int tls_mode; /* servers serve TLS with server.crt, clients trust ca.crt */
static char certs[128];
static char cert_path[16][192];

/* certs/name, in one of a few static buffers */
static const char *cert(const char *name)
{
    static int next;
    char *p = cert_path[next++ % 16];
    snprintf(p, sizeof(cert_path[0]), "%s/%s", certs, name);
    return p;
}
static int srv_seq;
static uint32_t srv_max_frame; /* of the server started last */

static void srv_start_cfg(struct srv *x, const char *listen, const rpc_server_config *tmpl)
{
    rpc_server_config cfg;
    memset(x, 0, sizeof(*x));
    pthread_mutex_init(&x->mu, NULL);
    pthread_cond_init(&x->cv, NULL);
    assert_int_equal(pthread_create(&x->replier, NULL, replier_main, x), 0);

    if (tmpl) {
        cfg = *tmpl;
    } else {
        rpc_server_config_init(&cfg);
        cfg.auth_delay_ms = 5; /* refusals come quickly unless a test is about them */
        cfg.auth_delay_max_ms = 40;
    }
    if (tls_mode && !cfg.tls_cert) {
        cfg.tls_cert = cert("server.crt");
        cfg.tls_key = cert("server.key");
    }
    cfg.listen = listen;
    cfg.secret = SECRET;
    cfg.secret_len = strlen(SECRET);
    cfg.handlers = (rpc_server_handlers){x, on_open, on_frame, on_close};
    srv_max_frame = cfg.max_frame;
    assert_int_equal(rpc_server_create(&cfg, &x->s), 0);
    assert_int_equal(rpc_server_start(x->s), 0);
    assert_int_equal(rpc_server_start(x->s), -EALREADY);
    if (strncmp(listen, "tcp:", 4) == 0) {
        int port = rpc_server_port(x->s);
        assert_true(port > 0);
        snprintf(x->addr, sizeof(x->addr), "tcp:127.0.0.1:%d", port);
    } else {
        assert_int_equal(rpc_server_port(x->s), -EAFNOSUPPORT);
        snprintf(x->addr, sizeof(x->addr), "%s", listen);
    }
}

static void srv_start(struct srv *x, const rpc_server_config *tmpl)
{
    char listen[160];
    if (unix_mode)
        snprintf(listen, sizeof(listen), "unix:/tmp/test_rpc.%d.%d.sock", (int)getpid(),
                 srv_seq++);
    else
        snprintf(listen, sizeof(listen), "tcp:127.0.0.1:0");
    srv_start_cfg(x, listen, tmpl);
}

static void srv_stop(struct srv *x)
{
    rpc_server_destroy(x->s);
    x->s = NULL;
    pthread_mutex_lock(&x->mu);
    x->stop = 1;
    pthread_cond_signal(&x->cv);
    pthread_mutex_unlock(&x->mu);
    pthread_join(x->replier, NULL);
    pthread_mutex_destroy(&x->mu);
    pthread_cond_destroy(&x->cv);
}

static rpc_server_stats srv_stats(struct srv *x)
{
    rpc_server_stats st;
    rpc_server_get_stats(x->s, &st);
    return st;
}

/* The server's stats once it counted at least want failed TLS handshakes (or
 * after 2 s): it counts a refused handshake on its own loop, which may come
 * after the client has seen the refusal. */
static rpc_server_stats srv_stats_tls_failed(struct srv *x, uint64_t want)
{
    rpc_server_stats st = srv_stats(x);
    for (int i = 0; i < 200 && st.tls_failed < want; i++) {
        usleep(10000);
        st = srv_stats(x);
    }
    return st;
}

/* Wait up to ms for *v to reach want. */
static int wait_for(atomic_int *v, int want, unsigned ms)
{
    for (unsigned i = 0; i < ms / 5; i++) {
        if (atomic_load(v) >= want)
            return 1;
        sleep_ms(5);
    }
    return atomic_load(v) >= want;
}

struct cli {
    rpc_client *c;
    atomic_int ups;
    atomic_int downs;
    atomic_int pushes;
    atomic_int acks;
    atomic_int last_down_reason;
};

static void cli_on_frame(void *arg, rpc_client *c, const rpc_frame *f)
{
    struct cli *k = arg;
    (void)c;
    if (f->type == RPC_STOCK)
        atomic_fetch_add(&k->pushes, 1);
    if (f->type == RPC_ACK)
        atomic_fetch_add(&k->acks, 1);
}

static void cli_on_state(void *arg, rpc_client *c, int up, int reason)
{
    struct cli *k = arg;
    (void)c;
    if (up) {
        atomic_fetch_add(&k->ups, 1);
    } else {
        atomic_store(&k->last_down_reason, reason);
        atomic_fetch_add(&k->downs, 1);
    }
}

static void cli_open(struct cli *k, const char *addr, const char *secret,
                     const rpc_client_config *tmpl)
{
    rpc_client_config cfg;
    memset(k, 0, sizeof(*k));
    if (tmpl)
        cfg = *tmpl;
    else
        rpc_client_config_init(&cfg);
    cfg.addr = addr;
    cfg.worker_id = "worker-1";
    cfg.group = "seckill";
    cfg.secret = secret;
    cfg.secret_len = strlen(secret);
    cfg.connect_timeout_ms = 2000;
    cfg.handlers = (rpc_client_handlers){k, cli_on_frame, cli_on_state};
    if (tls_mode && !cfg.tls_ca)
        cfg.tls_ca = cert("ca.crt");
    assert_int_equal(rpc_client_create(&cfg, &k->c), 0);
}

/* ---- raw sockets: a peer that does exactly what the test says ---- */

/* A raw peer's session once its handshake is done, by descriptor: frames it
 * sends are sealed and frames it reads are checked (in order). */
#define RAW_FDS 32768
static rpc_auth *raw_sess[RAW_FDS];

static int raw_connect(const char *addr)
{
    struct sockaddr_storage sa;
    socklen_t len = 0;
    assert_int_equal(rpc__addr_parse(addr, &sa, &len), 0);
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0 && fd < RAW_FDS);
    rpc_auth_destroy(raw_sess[fd]); /* of an earlier socket closed with this number */
    raw_sess[fd] = NULL;
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, len), 0);
    struct timeval tv = {2, 0}; /* no test waits this long unless broken */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static void raw_send(int fd, const void *p, size_t n)
{
    assert_int_equal(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

static void raw_send_frame(int fd, const rpc_frame *f)
{
    static const uint8_t zero[RPC_MAC_SIZE];
    uint8_t buf[2048];
    size_t n = 0;
    rpc_frame g = *f;
    if (raw_sess[fd])
        g.mac = zero;
    assert_int_equal(rpc_encode(&g, buf, sizeof(buf), &n), 0);
    if (raw_sess[fd])
        assert_int_equal(rpc_auth_seal(raw_sess[fd], buf, n), 0);
    raw_send(fd, buf, n);
}

static int raw_read_frame(int fd, uint8_t *buf, size_t cap, rpc_frame *f);

/* The client side of the handshake on fd, as worker-7 (HELLO as sample()
 * has it, call id included). 1 when authenticated (fd then has a session),
 * else 0 with *f the frame that ended it (an ERROR) or f->type 0 at EOF. */
static int raw_handshake(int fd, const char *secret, uint8_t *buf, size_t cap, rpc_frame *f)
{
    rpc_frame h = sample(RPC_HELLO);
    rpc_auth *a = NULL;
    rpc_auth_config ac = {.side = RPC_AUTH_CLIENT, .secret = secret,
                          .secret_len = strlen(secret), .worker_id = "worker-7",
                          .group = "seckill", .role = RPC_ROLE_PURCHASE, .max_frame = 65536,
                          .nonce = h.u.hello.nonce};
    uint8_t out[RPC_AUTH_OUT_MAX];
    size_t n = 0, used = 0;
    int rc;

    assert_int_equal(rpc_auth_create(&ac, &a), 0);
    assert_int_equal(rpc_auth_start(a, out, sizeof(out), &n), 0);
    raw_send_frame(fd, &h); /* the same bytes as out, with sample()'s call id */
    for (;;) {
        memset(f, 0, sizeof(*f));
        if (raw_read_frame(fd, buf, cap, f) != 1) {
            rpc_auth_destroy(a);
            return 0;
        }
        rc = rpc_auth_feed(a, buf, sk_le_get32(buf), &used, out, sizeof(out), &n);
        assert_int_equal(used, sk_le_get32(buf));
        if (n)
            raw_send(fd, out, n);
        if (rc == RPC_AUTH_DONE) {
            raw_sess[fd] = a;
            return 1;
        }
        if (rc < 0) {
            rpc_auth_destroy(a);
            return 0;
        }
    }
}

/* Read one frame into buf (OUT: *f views it). 1 on a frame, 0 on EOF or a
 * reset, -1 on timeout. */
static int raw_read_frame(int fd, uint8_t *buf, size_t cap, rpc_frame *f)
{
    size_t have = 0;
    for (;;) {
        size_t used = 0;
        int rc = rpc_decode(buf, have, (uint32_t)cap, f, &used);
        if (rc == 0) {
            if (raw_sess[fd])
                assert_int_equal(rpc_auth_open(raw_sess[fd], buf, used), 0);
            return 1;
        }
        assert_int_equal(rc, -EAGAIN);
        ssize_t n = recv(fd, buf + have, 1, 0); /* one byte at a time: never read past */
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return 0;
        if (n < 0)
            return -1;
        have += (size_t)n;
    }
}

/* 1 when the server closed fd (EOF or reset) within the receive timeout. */
static int raw_closed(int fd)
{
    char b[256];
    for (;;) {
        ssize_t n = recv(fd, b, sizeof(b), 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET) || (n < 0 && errno == EPIPE))
            return 1;
        if (n < 0)
            return 0;
    }
}

/* ---- transport tests (each runs over TCP, then over a Unix socket) ---- */

static int setup_tcp(void **state)
{
    (void)state;
    unix_mode = 0;
    tls_mode = 0;
    return 0;
}

static int setup_unix(void **state)
{
    (void)state;
    unix_mode = 1;
    tls_mode = 0;
    return 0;
}

static int setup_tls(void **state)
{
    (void)state;
    unix_mode = 0;
    tls_mode = 1;
    return 0;
}

static void test_auth_ok(void **state)
{
    (void)state;
    struct srv *x = calloc(1, sizeof(*x)); /* heap: a failed test leaks, never reuses */
    struct cli *k = calloc(1, sizeof(*k));
    srv_start(x, NULL);
    cli_open(k, x->addr, SECRET, NULL);

    assert_int_equal(rpc_client_wait_ready(k->c, 3000), 0);
    assert_true(rpc_client_connected(k->c));
    assert_true(wait_for(&x->opens, 1, 2000));
    assert_string_equal(x->last_worker, "worker-1");
    assert_true(wait_for(&k->pushes, 1, 2000)); /* the STOCK pushed from on_open */

    rpc_frame req = sample(RPC_COMMIT), rep;
    assert_int_equal(rpc_client_call(k->c, &req, &rep, 2000), 0);
    assert_int_equal(rep.type, RPC_ACK);
    rpc_frame_release(&rep);
    rpc_frame_release(&rep); /* twice is fine */

    /* a 600 KB frame: the server's read buffer grows past its initial size */
    static char big[600 << 10];
    memset(big, 'b', sizeof(big));
    req = sample(RPC_PRODUCE);
    req.u.produce.payload.ptr = big;
    req.u.produce.payload.len = sizeof(big);
    req.u.produce.seq = 10;
    assert_int_equal(rpc_client_call(k->c, &req, &rep, 3000), 0);
    assert_int_equal(rep.type, RPC_PRODUCE_OK);
    assert_true(rep.u.produce_ok.offset == 10);
    rpc_frame_release(&rep);
    req = sample(RPC_FETCH);
    req.u.fetch.max_messages = 16;
    assert_int_equal(rpc_client_call(k->c, &req, &rep, 3000), 0);
    assert_int_equal(rep.u.fetch_ok.count, 16);
    rpc_frame_release(&rep);

    /* async send with a call id nobody waits for: the reply goes to on_frame */
    rpc_frame r = sample(RPC_RESULT);
    r.call_id = 0x8000000000000001ULL;
    assert_int_equal(rpc_client_send(k->c, &r), 0);
    assert_true(wait_for(&k->acks, 1, 2000));

    rpc_server_stats st = srv_stats(x);
    assert_int_equal(st.auth_ok, 1);
    assert_int_equal(st.auth_failed, 0);
    assert_int_equal(st.open, 1);

    rpc_client_destroy(k->c);
    assert_true(wait_for(&x->closes, 1, 2000));
    assert_int_equal(atomic_load(&x->last_close_reason), 0); /* the peer closed */
    srv_stop(x);
    free(k);
    free(x);
}

/* rpc_client_queue holds frames until a flush, a send or a call writes the
 * queue; they leave in order. Heartbeats are slowed so no PING writes it. */
static void test_queue_then_flush(void **state)
{
    (void)state;
    struct srv *x = calloc(1, sizeof(*x));
    struct cli *k = calloc(1, sizeof(*k));
    rpc_client_config cc;
    rpc_client_config_init(&cc);
    cc.heartbeat_ms = 60000;
    srv_start(x, NULL);
    cli_open(k, x->addr, SECRET, &cc);
    assert_int_equal(rpc_client_wait_ready(k->c, 3000), 0);
    assert_true(wait_for(&k->pushes, 1, 2000));
    int base = atomic_load(&x->frames);

    rpc_frame r = sample(RPC_RESULT);
    for (int i = 0; i < 3; i++) {
        r.call_id = 0x8000000000000010ULL + (uint64_t)i; /* acked to on_frame */
        assert_int_equal(rpc_client_queue(k->c, &r), 0);
    }
    sleep_ms(200);
    assert_int_equal(atomic_load(&x->frames), base); /* nothing written yet */
    assert_int_equal(atomic_load(&k->acks), 0);
    assert_int_equal(rpc_client_flush(k->c), 0);
    assert_true(wait_for(&k->acks, 3, 2000));
    assert_int_equal(atomic_load(&x->frames), base + 3);
    assert_int_equal(rpc_client_flush(k->c), 0); /* nothing queued: a no-op */

    /* queued frames go out ahead of a later send, and of a call */
    assert_int_equal(rpc_client_queue(k->c, &r), 0);
    assert_int_equal(rpc_client_send(k->c, &r), 0);
    assert_true(wait_for(&k->acks, 5, 2000));
    assert_int_equal(rpc_client_queue(k->c, &r), 0);
    rpc_frame req = sample(RPC_COMMIT), rep;
    assert_int_equal(rpc_client_call(k->c, &req, &rep, 2000), 0);
    assert_int_equal(rep.type, RPC_ACK);
    rpc_frame_release(&rep);
    assert_true(wait_for(&k->acks, 6, 2000)); /* the queued one was written first */
    assert_int_equal(atomic_load(&x->frames), base + 7);

    assert_int_equal(rpc_client_queue(NULL, &r), -EINVAL);
    assert_int_equal(rpc_client_flush(NULL), -EINVAL);
    rpc_client_destroy(k->c);
    srv_stop(x);
    free(k);
    free(x);
}

static void test_auth_refused(void **state)
{
    (void)state;
    struct srv *x = calloc(1, sizeof(*x)); /* heap: a failed test leaks, never reuses */
    struct cli *k = calloc(1, sizeof(*k));
    uint8_t buf[2048];
    rpc_frame f;
    srv_start(x, NULL);

    /* a client with the wrong secret learns it was refused */
    cli_open(k, x->addr, "wrong-secret", NULL);
    assert_int_equal(rpc_client_wait_ready(k->c, 3000), -EACCES);
    rpc_frame req = sample(RPC_COMMIT), rep;
    assert_int_equal(rpc_client_call(k->c, &req, &rep, 100), -EACCES);
    rpc_client_destroy(k->c);

    /* raw peer, wrong secret: ERROR (EACCES), then EOF */
    int fd = raw_connect(x->addr);
    rpc_frame h = sample(RPC_HELLO);
    assert_int_equal(raw_handshake(fd, "SECRET-but-not-quite", buf, sizeof(buf), &f), 0);
    assert_int_equal(f.type, RPC_ERROR);
    assert_int_equal(f.u.error.code, EACCES);
    assert_true(f.call_id == h.call_id);
    assert_true(raw_closed(fd));
    close(fd);

    /* raw peer that sends FETCH first, then a perfect HELLO in the same write:
     * refused on the FETCH, and the HELLO is never looked at */
    fd = raw_connect(x->addr);
    uint8_t two[1024];
    size_t n1 = 0, n2 = 0;
    rpc_frame fetch = sample(RPC_FETCH);
    rpc_frame good = sample(RPC_HELLO);
    assert_int_equal(rpc_encode(&fetch, two, sizeof(two), &n1), 0);
    assert_int_equal(rpc_encode(&good, two + n1, sizeof(two) - n1, &n2), 0);
    raw_send(fd, two, n1 + n2);
    assert_int_equal(raw_read_frame(fd, buf, sizeof(buf), &f), 1);
    assert_int_equal(f.type, RPC_ERROR);
    assert_int_equal(f.u.error.code, EACCES);
    assert_true(raw_closed(fd));
    close(fd);

    /* a secret of the right length with one bit off, and an empty one */
    fd = raw_connect(x->addr);
    char near[sizeof(SECRET)];
    memcpy(near, SECRET, sizeof(SECRET));
    near[sizeof(SECRET) - 2] ^= 1;
    assert_int_equal(raw_handshake(fd, near, buf, sizeof(buf), &f), 0);
    assert_int_equal(f.type, RPC_ERROR);
    assert_true(raw_closed(fd));
    close(fd);

    assert_int_equal(atomic_load(&x->opens), 0);
    assert_int_equal(atomic_load(&x->frames), 0); /* no handler saw anything */
    assert_int_equal(atomic_load(&x->closes), 0);
    rpc_server_stats st = srv_stats(x);
    assert_true(st.auth_failed >= 4); /* the client's attempt(s) + 3 raw peers */
    assert_int_equal(st.auth_ok, 0);
    srv_stop(x);
    free(k);
    free(x);
}

struct caller {
    rpc_client *c;
    int id;
    int calls;
    atomic_int *ok;
};

static void *caller_main(void *arg)
{
    struct caller *a = arg;
    for (int i = 0; i < a->calls; i++) {
        rpc_frame req, rep;
        if (i % 5 == 4) {
            req = sample(RPC_FETCH);
            req.u.fetch.max_messages = (uint32_t)(i % 16);
            if (rpc_client_call(a->c, &req, &rep, 5000) != 0)
                continue;
            if (rep.type == RPC_FETCH_OK && rep.u.fetch_ok.count == req.u.fetch.max_messages) {
                rpc_msg_iter it;
                rpc_msg m;
                uint32_t n = 0, good = 1;
                rpc_msg_iter_init(&it, &rep.u.fetch_ok);
                while (rpc_msg_iter_next(&it, &m))
                    good &= m.offset == 100 + n++ && bytes_eq(m.topic, "seckill.requests");
                if (good && n == req.u.fetch.max_messages)
                    atomic_fetch_add(a->ok, 1);
            }
            rpc_frame_release(&rep);
            continue;
        }
        req = sample(RPC_PRODUCE);
        req.u.produce.producer_id = (uint64_t)a->id;
        req.u.produce.seq = (uint64_t)i;
        if (rpc_client_call(a->c, &req, &rep, 5000) != 0)
            continue;
        if (rep.type == RPC_PRODUCE_OK && rep.u.produce_ok.partition == (uint32_t)a->id &&
            rep.u.produce_ok.offset == (uint64_t)i)
            atomic_fetch_add(a->ok, 1);
        rpc_frame_release(&rep);
    }
    return NULL;
}

static void test_concurrent_calls(void **state)
{
    (void)state;
    enum { THREADS = 8, CALLS = 250 };
    struct srv *x = calloc(1, sizeof(*x)); /* heap: a failed test leaks, never reuses */
    struct cli *k = calloc(1, sizeof(*k));
    pthread_t th[THREADS];
    struct caller a[THREADS];
    atomic_int ok = 0;

    srv_start(x, NULL);
    cli_open(k, x->addr, SECRET, NULL);
    assert_int_equal(rpc_client_wait_ready(k->c, 3000), 0);
    for (int i = 0; i < THREADS; i++) {
        a[i] = (struct caller){k->c, i + 1, CALLS, &ok};
        assert_int_equal(pthread_create(&th[i], NULL, caller_main, &a[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&ok), THREADS * CALLS);

    rpc_client_stats cs;
    rpc_client_get_stats(k->c, &cs);
    assert_int_equal(cs.connects, 1);
    assert_int_equal(cs.timeouts, 0);
    rpc_client_destroy(k->c);
    srv_stop(x);
    free(k);
    free(x);
}

static int raw_authed(struct srv *x)
{
    uint8_t buf[2048];
    rpc_frame f;
    int fd = raw_connect(x->addr);
    assert_int_equal(raw_handshake(fd, SECRET, buf, sizeof(buf), &f), 1);
    assert_int_equal(f.type, RPC_HELLO_OK);
    assert_int_equal(f.u.hello_ok.max_frame, x->s ? srv_max_frame : 0);
    return fd;
}

static void test_oversized_and_corrupt(void **state)
{
    (void)state;
    struct srv *x = calloc(1, sizeof(*x)); /* heap: a failed test leaks, never reuses */
    rpc_server_config cfg;
    rpc_server_config_init(&cfg);
    cfg.max_frame = MAXF;
    srv_start(x, &cfg);

    /* an authenticated peer announces 1 MiB: closed from the header alone */
    int fd = raw_authed(x);
    uint8_t hdr[RPC_HEADER_SIZE] = {0};
    sk_le_put32(hdr, 1u << 20);
    hdr[4] = RPC_VERSION;
    hdr[5] = RPC_PRODUCE;
    raw_send(fd, hdr, sizeof(hdr));
    assert_true(raw_closed(fd));
    close(fd);
    assert_true(wait_for(&x->closes, 1, 2000));
    assert_int_equal(atomic_load(&x->last_close_reason), -EMSGSIZE);
    assert_int_equal(srv_stats(x).malformed, 1);

    /* the same before any HELLO */
    fd = raw_connect(x->addr);
    sk_le_put32(hdr, 0xFFFFFFF0u);
    raw_send(fd, hdr, sizeof(hdr));
    assert_true(raw_closed(fd));
    close(fd);

    /* before HELLO even a well-formed 2 KiB frame is over the (1 KiB) limit */
    fd = raw_connect(x->addr);
    {
        static char two_k[2048];
        uint8_t fb[4096];
        size_t fl = 0;
        rpc_frame pr = sample(RPC_PRODUCE);
        pr.u.produce.payload.ptr = two_k;
        pr.u.produce.payload.len = sizeof(two_k);
        assert_int_equal(rpc_encode(&pr, fb, sizeof(fb), &fl), 0);
        raw_send(fd, fb, fl);
    }
    assert_true(raw_closed(fd));
    close(fd);

    /* a frame one byte over the limit, sent in full */
    fd = raw_authed(x);
    uint8_t *big = calloc(1, MAXF + 1);
    hand_frame(big, MAXF + 1, RPC_VERSION, RPC_ACK, 0, NULL, 0);
    send(fd, big, MAXF + 1, MSG_NOSIGNAL);
    free(big);
    assert_true(raw_closed(fd));
    close(fd);

    /* a bad CRC after the handshake */
    fd = raw_authed(x);
    uint8_t buf[64];
    rpc_frame p = sample(RPC_PING);
    size_t n = 0;
    assert_int_equal(rpc_encode(&p, buf, sizeof(buf), &n), 0);
    buf[n - 1] ^= 0xff;
    raw_send(fd, buf, n);
    assert_true(raw_closed(fd));
    close(fd);
    assert_true(wait_for(&x->closes, 3, 2000));
    assert_int_equal(atomic_load(&x->last_close_reason), -EBADMSG);

    /* a frame of exactly the limit is fine, and the server still serves */
    fd = raw_authed(x);
    rpc_frame pr = sample(RPC_PRODUCE);
    pr.u.produce.seq = 2;
    static char payload[MAXF];
    static const uint8_t zero_mac[RPC_MAC_SIZE];
    pr.u.produce.payload.ptr = payload;
    pr.mac = zero_mac; /* the limit counts the MAC trailer */
    size_t sz = 0;
    pr.u.produce.payload.len = 0;
    assert_int_equal(rpc_encoded_size(&pr, &sz), 0);
    pr.u.produce.payload.len = (uint32_t)(MAXF - sz);
    uint8_t *exact = malloc(MAXF);
    assert_int_equal(rpc_encode(&pr, exact, MAXF, &n), 0);
    assert_int_equal(n, MAXF);
    assert_int_equal(rpc_auth_seal(raw_sess[fd], exact, n), 0);
    raw_send(fd, exact, n);
    free(exact);
    uint8_t rb[2048];
    rpc_frame f;
    do {
        assert_int_equal(raw_read_frame(fd, rb, sizeof(rb), &f), 1);
    } while (f.type == RPC_STOCK); /* the on_open push */
    assert_int_equal(f.type, RPC_PRODUCE_OK);
    close(fd);

    rpc_server_stats st = srv_stats(x);
    assert_int_equal(st.malformed, 5);
    assert_int_equal(st.auth_failed, 0); /* malformed is not a refusal */
    srv_stop(x);
    free(x);
}

static void test_reconnect_after_restart(void **state)
{
    (void)state;
    struct srv *x = calloc(1, sizeof(*x)); /* heap: a failed test leaks, never reuses */
    struct cli *k = calloc(1, sizeof(*k));
    char listen[160];
    rpc_client_config cc;

    srv_start(x, NULL);
    if (unix_mode)
        snprintf(listen, sizeof(listen), "%s", x->addr);
    else
        snprintf(listen, sizeof(listen), "tcp:127.0.0.1:%d", rpc_server_port(x->s));

    rpc_client_config_init(&cc);
    cc.backoff_min_ms = 20;
    cc.backoff_max_ms = 200;
    cli_open(k, x->addr, SECRET, &cc);
    assert_int_equal(rpc_client_wait_ready(k->c, 3000), 0);
    rpc_frame req = sample(RPC_COMMIT), rep;
    assert_int_equal(rpc_client_call(k->c, &req, &rep, 2000), 0);
    rpc_frame_release(&rep);

    srv_stop(x);
    assert_true(wait_for(&k->downs, 1, 3000));
    int rc = rpc_client_call(k->c, &req, &rep, 100);
    assert_true(rc == -ETIMEDOUT || rc == -ECONNRESET);
    sleep_ms(150); /* a few failed attempts with backoff */

    srv_start_cfg(x, listen, NULL);
    /* the call waits for the reconnect within its timeout */
    assert_int_equal(rpc_client_call(k->c, &req, &rep, 5000), 0);
    assert_int_equal(rep.type, RPC_ACK);
    rpc_frame_release(&rep);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(rpc_client_call(k->c, &req, &rep, 2000), 0);
        rpc_frame_release(&rep);
    }

    rpc_client_stats cs;
    rpc_client_get_stats(k->c, &cs);
    assert_int_equal(cs.connects, 2);
    assert_true(cs.failures >= 1);
    assert_int_equal(atomic_load(&k->ups), 2);
    rpc_client_destroy(k->c);
    srv_stop(x);
    free(k);
    free(x);
}

static void test_heartbeat(void **state)
{
    (void)state;
    struct srv *x = calloc(1, sizeof(*x)); /* heap: a failed test leaks, never reuses */
    struct cli *k = calloc(1, sizeof(*k));
    uint8_t buf[2048];
    rpc_frame f;
    rpc_server_config cfg;
    rpc_server_config_init(&cfg);
    cfg.heartbeat_ms = 100;
    cfg.heartbeat_misses = 3;
    srv_start(x, &cfg);

    /* an authenticated raw peer that goes silent is closed */
    int fd = raw_authed(x);
    assert_true(raw_closed(fd)); /* sees the STOCK push, then EOF */
    close(fd);
    assert_true(wait_for(&x->closes, 1, 2000));
    assert_int_equal(atomic_load(&x->last_close_reason), -ETIMEDOUT);

    /* a peer that never says anything is closed too */
    fd = raw_connect(x->addr);
    assert_true(raw_closed(fd));
    close(fd);
    assert_true(srv_stats(x).timed_out >= 2);

    /* PING is answered by the transport, with the value echoed */
    fd = raw_authed(x);
    rpc_frame p = sample(RPC_PING);
    raw_send_frame(fd, &p);
    do {
        assert_int_equal(raw_read_frame(fd, buf, sizeof(buf), &f), 1);
    } while (f.type == RPC_STOCK);
    assert_int_equal(f.type, RPC_PONG);
    assert_true(f.u.ping.value == p.u.ping.value);
    assert_true(f.call_id == p.call_id);
    close(fd);

    srv_stop(x);

    /* a client that PINGs stays connected through many intervals. The server
     * would close it after 1 s of silence, the client gives up after 2 s:
     * only a machine stalled that long breaks this, whatever the sanitizer. */
    rpc_server_config_init(&cfg);
    cfg.heartbeat_ms = 200;
    cfg.heartbeat_misses = 5;
    srv_start(x, &cfg);
    rpc_client_config cc;
    rpc_client_config_init(&cc);
    cc.heartbeat_ms = 40;
    cc.heartbeat_misses = 50;
    cli_open(k, x->addr, SECRET, &cc);
    assert_int_equal(rpc_client_wait_ready(k->c, 3000), 0);
    sleep_ms(1500); /* longer than the server's silence limit */
    rpc_client_stats cs;
    rpc_client_get_stats(k->c, &cs);
    assert_int_equal(cs.connects, 1);
    assert_int_equal(cs.disconnects, 0);
    assert_true(rpc_client_connected(k->c));
    assert_true(srv_stats(x).frames_in >= 5); /* the PINGs */
    assert_int_equal(srv_stats(x).timed_out, 0);
    rpc_client_destroy(k->c);
    srv_stop(x);
    free(k);
    free(x);
}

/* A "server" that completes the handshake and then never answers: the
 * client must notice the silence and go down on its own. */
static void test_client_heartbeat_timeout(void **state)
{
    (void)state;
    struct cli *k = calloc(1, sizeof(*k));
    char addr[160];
    int lfd;

    if (unix_mode) {
        struct sockaddr_un un = {.sun_family = AF_UNIX};
        snprintf(un.sun_path, sizeof(un.sun_path), "/tmp/test_rpc.%d.silent.sock", (int)getpid());
        unlink(un.sun_path);
        lfd = socket(AF_UNIX, SOCK_STREAM, 0);
        assert_int_equal(bind(lfd, (struct sockaddr *)&un, sizeof(un)), 0);
        snprintf(addr, sizeof(addr), "unix:%s", un.sun_path);
    } else {
        struct sockaddr_in in = {.sin_family = AF_INET};
        in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof(in);
        lfd = socket(AF_INET, SOCK_STREAM, 0);
        assert_int_equal(bind(lfd, (struct sockaddr *)&in, sizeof(in)), 0);
        getsockname(lfd, (struct sockaddr *)&in, &len);
        snprintf(addr, sizeof(addr), "tcp:127.0.0.1:%d", ntohs(in.sin_port));
    }
    assert_int_equal(listen(lfd, 4), 0);

    rpc_client_config cc;
    rpc_client_config_init(&cc);
    cc.heartbeat_ms = 30;
    cc.heartbeat_misses = 3;
    cc.backoff_min_ms = 1000; /* no quick second connection to serve */
    cli_open(k, addr, SECRET, &cc);

    int fd = accept(lfd, NULL, NULL);
    assert_true(fd >= 0 && fd < RAW_FDS);
    rpc_auth_destroy(raw_sess[fd]); /* of an earlier socket closed with this number */
    raw_sess[fd] = NULL;
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    uint8_t buf[2048];
    rpc_frame f;
    assert_int_equal(raw_read_frame(fd, buf, sizeof(buf), &f), 1);
    assert_int_equal(f.type, RPC_HELLO);
    assert_true(bytes_eq(f.u.hello.worker_id, "worker-1"));
    /* the server side of the handshake, by hand: CHALLENGE, then HELLO_OK */
    rpc_auth *sa = NULL;
    rpc_auth_config ac = {.side = RPC_AUTH_SERVER, .secret = SECRET, .secret_len = strlen(SECRET),
                          .max_frame = MAXF, .heartbeat_ms = 30};
    uint8_t out[RPC_AUTH_OUT_MAX];
    size_t used = 0, on = 0;
    assert_int_equal(rpc_auth_create(&ac, &sa), 0);
    assert_int_equal(rpc_auth_feed(sa, buf, sk_le_get32(buf), &used, out, sizeof(out), &on),
                     RPC_AUTH_MORE);
    raw_send(fd, out, on);
    assert_int_equal(raw_read_frame(fd, buf, sizeof(buf), &f), 1);
    assert_int_equal(f.type, RPC_AUTH);
    assert_int_equal(rpc_auth_feed(sa, buf, sk_le_get32(buf), &used, out, sizeof(out), &on),
                     RPC_AUTH_DONE);
    raw_send(fd, out, on); /* HELLO_OK */
    raw_sess[fd] = sa;
    assert_int_equal(rpc_client_wait_ready(k->c, 2000), 0);

    /* PINGs arrive; we never answer */
    assert_int_equal(raw_read_frame(fd, buf, sizeof(buf), &f), 1);
    assert_int_equal(f.type, RPC_PING);
    assert_true(wait_for(&k->downs, 1, 2000));
    assert_int_equal(atomic_load(&k->last_down_reason), -ETIMEDOUT);
    assert_true(raw_closed(fd));
    close(fd);
    rpc_client_destroy(k->c);
    close(lfd);
    if (unix_mode)
        unlink(addr + 5);
    free(k);
}

static void test_slow_reader_dropped(void **state)
{
    (void)state;
    struct srv *x = calloc(1, sizeof(*x)); /* heap: a failed test leaks, never reuses */
    rpc_server_config cfg;
    rpc_server_config_init(&cfg);
    cfg.max_frame = MAXF;
    cfg.max_write_queue = 64 << 10;
    srv_start(x, &cfg);

    int fd = raw_authed(x);
    rpc_frame req = sample(RPC_FETCH);
    req.u.fetch.topic = rpc_str("flood");
    raw_send_frame(fd, &req);
    /* we never read: the queue passes 64 KiB once the socket buffers fill */
    assert_true(wait_for(&x->closes, 1, 5000));
    assert_int_equal(atomic_load(&x->flood_result), -ENOBUFS);
    assert_int_equal(atomic_load(&x->last_close_reason), -ENOBUFS);
    assert_int_equal(srv_stats(x).overflowed, 1);
    close(fd);
    srv_stop(x);
    free(x);
}

/* A reference outlives the connection: sends fail cleanly, nothing crashes. */
static _Atomic(rpc_conn *) held; /* set on the loop thread, read by the test */

static void hold_open(void *arg, rpc_conn *c, const rpc_hello *h)
{
    (void)arg;
    (void)h;
    rpc_conn_ref(c);
    rpc_conn_set_data(c, (void *)&held);
    atomic_store(&held, c);
}

static void test_conn_ref_after_close(void **state)
{
    (void)state;
    rpc_server *s;
    rpc_server_config cfg;
    char listen[160];

    if (unix_mode)
        snprintf(listen, sizeof(listen), "unix:/tmp/test_rpc.%d.ref.sock", (int)getpid());
    else
        snprintf(listen, sizeof(listen), "tcp:127.0.0.1:0");
    rpc_server_config_init(&cfg);
    cfg.listen = listen;
    cfg.secret = SECRET;
    cfg.secret_len = strlen(SECRET);
    cfg.handlers.on_open = hold_open;
    assert_int_equal(rpc_server_create(&cfg, &s), 0);
    assert_int_equal(rpc_server_start(s), 0);

    char addr[160];
    if (unix_mode)
        snprintf(addr, sizeof(addr), "%s", listen);
    else
        snprintf(addr, sizeof(addr), "tcp:127.0.0.1:%d", rpc_server_port(s));
    atomic_store(&held, NULL);
    int fd = raw_connect(addr);
    uint8_t buf[256];
    rpc_frame f;
    assert_int_equal(raw_handshake(fd, SECRET, buf, sizeof(buf), &f), 1);
    for (int i = 0; i < 400 && !atomic_load(&held); i++)
        sleep_ms(5);
    rpc_conn *c = atomic_load(&held);
    assert_non_null(c);
    assert_ptr_equal(rpc_conn_data(c), (void *)&held);

    rpc_frame s1 = sample(RPC_SOLD_OUT);
    assert_int_equal(rpc_conn_send(c, &s1), 0);
    assert_int_equal(raw_read_frame(fd, buf, sizeof(buf), &f), 1);
    assert_int_equal(f.type, RPC_SOLD_OUT);

    /* too big for the peer's announced limit (65536): refused, nothing sent */
    static char huge[70000];
    rpc_frame pr = sample(RPC_PRODUCE);
    pr.u.produce.payload.ptr = huge;
    pr.u.produce.payload.len = sizeof(huge);
    assert_int_equal(rpc_conn_send(c, &pr), -EMSGSIZE);

    rpc_conn_close(c);
    assert_true(raw_closed(fd));
    close(fd);
    for (int i = 0; i < 400 && rpc_conn_send(c, &s1) != -ENOTCONN; i++)
        sleep_ms(5);
    assert_int_equal(rpc_conn_send(c, &s1), -ENOTCONN);
    rpc_server_destroy(s);
    assert_int_equal(rpc_conn_send(c, &s1), -ENOTCONN);
    rpc_conn_close(c); /* no-op */
    rpc_conn_unref(c);
}

/* After the handshake every frame needs its MAC: a frame without one, a
 * replayed one or a tampered one (CRC fixed up) closes the connection and is
 * counted; nothing reaches the handler. */
static void test_frame_mac_enforced(void **state)
{
    (void)state;
    struct srv *x = calloc(1, sizeof(*x));
    uint8_t buf[2048];
    rpc_frame f;
    srv_start(x, NULL);

    /* unsealed: what a v1 peer (or anyone without the session key) sends */
    int fd = raw_authed(x);
    rpc_auth *keep = raw_sess[fd];
    raw_sess[fd] = NULL;
    rpc_frame c = sample(RPC_COMMIT);
    raw_send_frame(fd, &c);
    raw_sess[fd] = keep;
    assert_true(raw_closed(fd));
    close(fd);
    assert_true(wait_for(&x->closes, 1, 2000));
    assert_int_equal(atomic_load(&x->last_close_reason), -EKEYREJECTED);

    /* replayed: the same sealed bytes twice */
    fd = raw_authed(x);
    static const uint8_t zero[RPC_MAC_SIZE];
    uint8_t fr[256];
    size_t n = 0;
    c.mac = zero;
    assert_int_equal(rpc_encode(&c, fr, sizeof(fr), &n), 0);
    assert_int_equal(rpc_auth_seal(raw_sess[fd], fr, n), 0);
    raw_send(fd, fr, n);
    do {
        assert_int_equal(raw_read_frame(fd, buf, sizeof(buf), &f), 1);
    } while (f.type == RPC_STOCK);
    assert_int_equal(f.type, RPC_ACK); /* the first is served */
    raw_send(fd, fr, n);
    assert_true(raw_closed(fd));
    close(fd);
    assert_true(wait_for(&x->closes, 2, 2000));

    /* tampered after sealing, CRC recomputed */
    fd = raw_authed(x);
    assert_int_equal(rpc_encode(&c, fr, sizeof(fr), &n), 0);
    assert_int_equal(rpc_auth_seal(raw_sess[fd], fr, n), 0);
    fr[RPC_HEADER_SIZE + 2] ^= 1; /* a topic byte */
    uint32_t crc = sk_crc32c(0, fr, 16);
    crc = sk_crc32c(crc, fr + RPC_HEADER_SIZE, n - RPC_HEADER_SIZE - RPC_MAC_SIZE);
    sk_le_put32(fr + 16, crc);
    raw_send(fd, fr, n);
    assert_true(raw_closed(fd));
    close(fd);
    assert_true(wait_for(&x->closes, 3, 2000));
    assert_int_equal(atomic_load(&x->last_close_reason), -EKEYREJECTED);

    rpc_server_stats st = srv_stats(x);
    assert_int_equal(st.mac_failed, 3);
    assert_int_equal(st.malformed, 0);
    assert_int_equal(atomic_load(&x->frames), 1); /* only the genuine COMMIT */
    srv_stop(x);
    free(x);
}

/* Wrong proofs from one source are answered later and later, and counted;
 * parallel attempts wait their turn; the right secret still gets in. */
static void test_auth_throttled(void **state)
{
    (void)state;
    struct srv *x = calloc(1, sizeof(*x));
    struct cli *k = calloc(1, sizeof(*k));
    uint8_t buf[2048];
    rpc_frame f;
    rpc_server_config cfg;
    rpc_server_config_init(&cfg);
    cfg.heartbeat_ms = 100;
    cfg.heartbeat_misses = 50;
    cfg.handshake_timeout_ms = 5000;
    cfg.auth_delay_ms = 40;
    cfg.auth_delay_max_ms = 160;
    srv_start(x, &cfg);

    /* one after the other: delays 40, 80, 160, 160, 160 ms for the refusals,
     * and from the second on the CHALLENGE waits for its turn too */
    uint64_t t0 = mono_ms();
    for (int i = 0; i < 5; i++) {
        int fd = raw_connect(x->addr);
        assert_int_equal(raw_handshake(fd, "guess", buf, sizeof(buf), &f), 0);
        assert_int_equal(f.type, RPC_ERROR);
        assert_int_equal(f.u.error.code, EACCES);
        close(fd);
    }
    uint64_t took = mono_ms() - t0;
    if (took < 40 + 80 + 160 + 160 + 160)
        fail_msg("5 wrong proofs answered in %llu ms", (unsigned long long)took);

    /* ten at once: their CHALLENGEs come one per delay, not all together */
    int fds[10];
    for (int i = 0; i < 10; i++) {
        fds[i] = raw_connect(x->addr);
        rpc_frame h = sample(RPC_HELLO);
        raw_send_frame(fds[i], &h);
    }
    t0 = mono_ms();
    for (int i = 0; i < 10; i++) {
        struct timeval tv = {5, 0};
        setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        assert_int_equal(raw_read_frame(fds[i], buf, sizeof(buf), &f), 1);
        assert_int_equal(f.type, RPC_CHALLENGE);
    }
    took = mono_ms() - t0;
    if (took < 9 * 160 - 100)
        fail_msg("10 parallel CHALLENGEs in %llu ms", (unsigned long long)took);
    for (int i = 0; i < 10; i++)
        close(fds[i]);

    rpc_server_stats st = srv_stats(x);
    assert_int_equal(st.auth_failed, 5);
    assert_true(st.throttled >= 9); /* all but the first of the ten */
    assert_int_equal(st.auth_ok, 0);

    /* the right secret from the same source: in, after its turn */
    rpc_client_config cc;
    rpc_client_config_init(&cc);
    cli_open(k, x->addr, SECRET, &cc);
    assert_int_equal(rpc_client_wait_ready(k->c, 5000), 0);
    rpc_frame req = sample(RPC_COMMIT), rep;
    assert_int_equal(rpc_client_call(k->c, &req, &rep, 2000), 0);
    assert_int_equal(rep.type, RPC_ACK);
    rpc_frame_release(&rep);
    rpc_client_destroy(k->c);
    srv_stop(x);
    free(k);
    free(x);
}

/* 1,100 connections that never finish a handshake (each sent half a HELLO)
 * do not keep a real client out: the handshake budget is small and separate
 * from max_conns, the oldest gives way, and the deadline closes the rest. */
static void test_handshake_flood(void **state)
{
    (void)state;
    enum { FLOOD = 1100 };
    struct srv *x = calloc(1, sizeof(*x));
    struct cli *k = calloc(1, sizeof(*k));
    int *fds = calloc(FLOOD, sizeof(int));
    rpc_server_config cfg;
    rpc_server_config_init(&cfg);
    cfg.max_conns = 1024;
    cfg.max_unauth = 64;
    cfg.handshake_timeout_ms = 1500;
    cfg.heartbeat_ms = 1000;
    cfg.heartbeat_misses = 10;
    srv_start(x, &cfg);

    uint8_t half[RPC_AUTH_OUT_MAX];
    size_t hn = 0;
    rpc_frame h = sample(RPC_HELLO);
    assert_int_equal(rpc_encode(&h, half, sizeof(half), &hn), 0);
    for (int i = 0; i < FLOOD; i++) {
        fds[i] = raw_connect(x->addr);
        raw_send(fds[i], half, hn / 2);
    }
    /* the real client connects while the flood holds on */
    cli_open(k, x->addr, SECRET, NULL);
    assert_int_equal(rpc_client_wait_ready(k->c, 5000), 0);
    rpc_frame req = sample(RPC_FETCH), rep;
    req.u.fetch.max_messages = 3;
    assert_int_equal(rpc_client_call(k->c, &req, &rep, 2000), 0);
    assert_int_equal(rep.type, RPC_FETCH_OK);
    assert_int_equal(rep.u.fetch_ok.count, 3);
    rpc_frame_release(&rep);
    /* the flood drips on: another byte each, and the worker keeps working */
    for (int i = 0; i < FLOOD; i++)
        send(fds[i], half + hn / 2, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    req = sample(RPC_COMMIT);
    assert_int_equal(rpc_client_call(k->c, &req, &rep, 2000), 0);
    assert_int_equal(rep.type, RPC_ACK);
    rpc_frame_release(&rep);

    rpc_server_stats st = srv_stats(x);
    assert_true(st.evicted >= FLOOD - 64);
    assert_int_equal(st.auth_ok, 1);
    /* what is left of the flood meets the deadline */
    for (int i = 0; i < 400 && srv_stats(x).open > 1; i++)
        sleep_ms(10);
    st = srv_stats(x);
    assert_int_equal(st.open, 1);
    assert_true(st.handshake_timeouts >= 1);
    assert_true(rpc_client_connected(k->c));
    for (int i = 0; i < FLOOD; i++)
        close(fds[i]);
    rpc_client_destroy(k->c);
    srv_stop(x);
    free(fds);
    free(k);
    free(x);
}

/* What a real client sends can be recorded in full (here by a server that
 * plays along) and holds no secret; replayed to the real server, the
 * recorded HELLO and AUTH are refused, and nothing reaches the handlers. */
static void test_sniffed_handshake_replayed(void **state)
{
    (void)state;
    struct cli *k = calloc(1, sizeof(*k));
    struct srv *x = calloc(1, sizeof(*x));
    char addr[160];
    int lfd;
    uint8_t buf[2048], rec_hello[1024], rec_auth[1024];
    size_t nh = 0, na = 0;
    rpc_frame f;

    if (unix_mode) {
        struct sockaddr_un un = {.sun_family = AF_UNIX};
        snprintf(un.sun_path, sizeof(un.sun_path), "/tmp/test_rpc.%d.sniff.sock", (int)getpid());
        unlink(un.sun_path);
        lfd = socket(AF_UNIX, SOCK_STREAM, 0);
        assert_int_equal(bind(lfd, (struct sockaddr *)&un, sizeof(un)), 0);
        snprintf(addr, sizeof(addr), "unix:%s", un.sun_path);
    } else {
        struct sockaddr_in in = {.sin_family = AF_INET};
        in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof(in);
        lfd = socket(AF_INET, SOCK_STREAM, 0);
        assert_int_equal(bind(lfd, (struct sockaddr *)&in, sizeof(in)), 0);
        getsockname(lfd, (struct sockaddr *)&in, &len);
        snprintf(addr, sizeof(addr), "tcp:127.0.0.1:%d", ntohs(in.sin_port));
    }
    assert_int_equal(listen(lfd, 4), 0);
    rpc_client_config cc;
    rpc_client_config_init(&cc);
    cc.backoff_min_ms = 1000;
    cli_open(k, addr, SECRET, &cc);
    int fd = accept(lfd, NULL, NULL);
    assert_true(fd >= 0 && fd < RAW_FDS);
    rpc_auth_destroy(raw_sess[fd]);
    raw_sess[fd] = NULL;
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    rpc_auth *sa = NULL;
    rpc_auth_config ac = {.side = RPC_AUTH_SERVER, .secret = SECRET, .secret_len = strlen(SECRET),
                          .max_frame = MAXF, .heartbeat_ms = 1000};
    uint8_t out[RPC_AUTH_OUT_MAX];
    size_t used = 0, on = 0;
    assert_int_equal(rpc_auth_create(&ac, &sa), 0);
    assert_int_equal(raw_read_frame(fd, buf, sizeof(buf), &f), 1);
    nh = sk_le_get32(buf);
    memcpy(rec_hello, buf, nh);
    assert_int_equal(rpc_auth_feed(sa, buf, nh, &used, out, sizeof(out), &on), RPC_AUTH_MORE);
    raw_send(fd, out, on);
    assert_int_equal(raw_read_frame(fd, buf, sizeof(buf), &f), 1);
    na = sk_le_get32(buf);
    memcpy(rec_auth, buf, na);
    assert_int_equal(rpc_auth_feed(sa, buf, na, &used, out, sizeof(out), &on), RPC_AUTH_DONE);
    raw_send(fd, out, on);
    raw_sess[fd] = sa;
    assert_int_equal(rpc_client_wait_ready(k->c, 2000), 0);
    assert_null(memmem(rec_hello, nh, SECRET, strlen(SECRET)));
    assert_null(memmem(rec_auth, na, SECRET, strlen(SECRET)));
    /* the client checks MACs too: a sealed push is taken, an unsealed one
     * (what an injector without the key can send) takes the connection down */
    rpc_frame push = sample(RPC_STOCK);
    push.call_id = 0;
    raw_send_frame(fd, &push);
    assert_true(wait_for(&k->pushes, 1, 2000));
    raw_sess[fd] = NULL;
    raw_send_frame(fd, &push);
    raw_sess[fd] = sa;
    assert_true(wait_for(&k->downs, 1, 2000));
    assert_int_equal(atomic_load(&k->last_down_reason), -EKEYREJECTED);
    assert_int_equal(atomic_load(&k->pushes), 1);
    rpc_client_stats cs;
    rpc_client_get_stats(k->c, &cs);
    assert_int_equal(cs.mac_failed, 1);
    rpc_client_destroy(k->c);
    close(fd);
    close(lfd);
    if (unix_mode)
        unlink(addr + 5);

    /* the recording, replayed to the real server */
    srv_start(x, NULL);
    fd = raw_connect(x->addr);
    raw_send(fd, rec_hello, nh);
    assert_int_equal(raw_read_frame(fd, buf, sizeof(buf), &f), 1);
    assert_int_equal(f.type, RPC_CHALLENGE); /* a fresh nonce... */
    raw_send(fd, rec_auth, na);              /* ...that the recorded proof is not for */
    assert_int_equal(raw_read_frame(fd, buf, sizeof(buf), &f), 1);
    assert_int_equal(f.type, RPC_ERROR);
    assert_int_equal(f.u.error.code, EACCES);
    assert_true(raw_closed(fd));
    close(fd);
    assert_int_equal(atomic_load(&x->opens), 0);
    assert_int_equal(atomic_load(&x->frames), 0);
    assert_int_equal(srv_stats(x).auth_failed, 1);
    srv_stop(x);
    free(x);
    free(k);
}

static void test_config_rejects(void **state)
{
    (void)state;
    rpc_server_config cfg;
    rpc_server *s = NULL;
    rpc_server_config_init(&cfg);
    cfg.listen = "tcp:127.0.0.1:0";
    assert_int_equal(rpc_server_create(&cfg, &s), -EINVAL); /* no secret */
    cfg.secret = SECRET;
    cfg.secret_len = strlen(SECRET);
    cfg.max_frame = RPC_MAX_FRAME_LIMIT + 1;
    assert_int_equal(rpc_server_create(&cfg, &s), -EINVAL);
    cfg.max_frame = RPC_DEFAULT_MAX_FRAME;
    cfg.listen = "carrier-pigeon:1";
    assert_int_equal(rpc_server_create(&cfg, &s), -EINVAL);
    assert_null(s);

    /* a port in use */
    cfg.listen = "tcp:127.0.0.1:0";
    assert_int_equal(rpc_server_create(&cfg, &s), 0);
    char busy[64];
    snprintf(busy, sizeof(busy), "tcp:127.0.0.1:%d", rpc_server_port(s));
    rpc_server *s2 = NULL;
    cfg.listen = busy;
    assert_int_equal(rpc_server_create(&cfg, &s2), -EADDRINUSE);
    rpc_server_destroy(s); /* never started */
    rpc_server_destroy(NULL);

    /* Unix: a live server's socket is not taken over, a stale file is */
    char path[96], ulisten[160];
    snprintf(path, sizeof(path), "/tmp/test_rpc.%d.cfg.sock", (int)getpid());
    snprintf(ulisten, sizeof(ulisten), "unix:%s", path);
    cfg.listen = ulisten;
    assert_int_equal(rpc_server_create(&cfg, &s), 0);
    assert_int_equal(rpc_server_create(&cfg, &s2), -EADDRINUSE);
    rpc_server_destroy(s);
    int stale = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    snprintf(un.sun_path, sizeof(un.sun_path), "%s", path);
    assert_int_equal(bind(stale, (struct sockaddr *)&un, sizeof(un)), 0);
    close(stale); /* the file stays, nobody listens */
    assert_int_equal(access(path, F_OK), 0);
    assert_int_equal(rpc_server_create(&cfg, &s), 0);
    rpc_server_destroy(s);
    assert_int_equal(access(path, F_OK), -1); /* unlinked on destroy */

    rpc_client_config cc;
    rpc_client *c = NULL;
    rpc_client_config_init(&cc);
    cc.addr = "tcp:127.0.0.1:1";
    assert_int_equal(rpc_client_create(&cc, &c), -EINVAL); /* no secret */
    cc.secret = SECRET;
    cc.secret_len = strlen(SECRET);
    cc.connect_timeout_ms = 200;
    assert_int_equal(rpc_client_create(&cc, &c), 0);
    /* nobody listens there: not ready, and send needs a connection */
    assert_int_equal(rpc_client_wait_ready(c, 100), -ETIMEDOUT);
    rpc_frame p = sample(RPC_PING);
    assert_int_equal(rpc_client_send(c, &p), -ENOTCONN);
    assert_int_equal(rpc_client_queue(c, &p), -ENOTCONN);
    assert_int_equal(rpc_client_flush(c), 0);
    rpc_client_destroy(c);
    rpc_client_destroy(NULL);
}

/* ---- TLS ---- */

/* A client with TLS settings (tls_ca etc., NULL for none) against x. */
static void tls_cli_open(struct cli *k, const char *addr, const char *secret, const char *ca,
                         const char *crt, const char *key)
{
    rpc_client_config cc;
    rpc_client_config_init(&cc);
    cc.backoff_min_ms = 20;
    cc.backoff_max_ms = 100;
    cc.tls_ca = ca ? ca : "";
    cc.tls_cert = crt;
    cc.tls_key = key;
    int saved = tls_mode;
    tls_mode = 0; /* exactly these settings */
    cli_open(k, addr, secret, &cc);
    tls_mode = saved;
}

/* Everything the server sends on fd until it closes (or 2 s pass). */
static size_t raw_read_all(int fd, uint8_t *buf, size_t cap)
{
    size_t have = 0;
    while (have < cap) {
        ssize_t n = recv(fd, buf + have, cap - have, 0);
        if (n <= 0)
            break;
        have += (size_t)n;
    }
    return have;
}

static void call_ok(rpc_client *c)
{
    rpc_frame req = sample(RPC_COMMIT), rep;
    assert_int_equal(rpc_client_call(c, &req, &rep, 2000), 0);
    assert_int_equal(rep.type, RPC_ACK);
    rpc_frame_release(&rep);
}

/* The client refuses a server its CA did not sign, or whose certificate
 * names another host, before it says anything: no rpc frame reaches the
 * server, and the client reports -EACCES (a refusal, not a network fault). */
static void test_tls_server_not_trusted(void **state)
{
    (void)state;
    const char *bad[][2] = {{"other-server.crt", "other-server.key"},
                            {"wronghost.crt", "wronghost.key"}};
    for (int i = 0; i < 2; i++) {
        struct srv *x = calloc(1, sizeof(*x));
        struct cli *k = calloc(1, sizeof(*k));
        rpc_server_config cfg;
        rpc_server_config_init(&cfg);
        cfg.tls_cert = cert(bad[i][0]);
        cfg.tls_key = cert(bad[i][1]);
        tls_mode = 0;
        srv_start(x, &cfg);
        tls_cli_open(k, x->addr, SECRET, cert("ca.crt"), NULL, NULL);
        assert_int_equal(rpc_client_wait_ready(k->c, 3000), -EACCES);
        assert_int_equal(atomic_load(&k->ups), 0);
        rpc_server_stats st = srv_stats(x);
        assert_int_equal(st.frames_in, 0); /* not even a HELLO */
        assert_int_equal(st.auth_ok, 0);
        assert_int_equal(atomic_load(&x->opens), 0);
        rpc_client_destroy(k->c);
        srv_stop(x);
        free(k);
        free(x);
    }
}

/* An address by name: the certificate's DNS entry is checked (and SNI sent),
 * not only its IP entries. */
static void test_tls_host_name(void **state)
{
    (void)state;
    struct srv *x = calloc(1, sizeof(*x));
    struct cli *k = calloc(1, sizeof(*k));
    char addr[64];
    tls_mode = 1;
    srv_start_cfg(x, "tcp:localhost:0", NULL); /* resolved as the client will */
    snprintf(addr, sizeof(addr), "tcp:localhost:%d", rpc_server_port(x->s));
    tls_cli_open(k, addr, SECRET, cert("ca.crt"), NULL, NULL);
    assert_int_equal(rpc_client_wait_ready(k->c, 3000), 0);
    call_ok(k->c);
    rpc_client_destroy(k->c);
    srv_stop(x);

    /* the same name against a certificate for gw.invalid only */
    rpc_server_config cfg;
    rpc_server_config_init(&cfg);
    cfg.tls_cert = cert("wronghost.crt");
    cfg.tls_key = cert("wronghost.key");
    srv_start_cfg(x, "tcp:localhost:0", &cfg);
    snprintf(addr, sizeof(addr), "tcp:localhost:%d", rpc_server_port(x->s));
    tls_cli_open(k, addr, SECRET, cert("ca.crt"), NULL, NULL);
    assert_int_equal(rpc_client_wait_ready(k->c, 3000), -EACCES);
    assert_int_equal(srv_stats(x).frames_in, 0);
    rpc_client_destroy(k->c);
    srv_stop(x);
    free(k);
    free(x);
}

/* A TLS listener does not speak plaintext rpc: a HELLO in clear gets no
 * CHALLENGE, only the end of the connection; a plain client never gets up;
 * a TLS client on a plain listener does not either. */
static void test_tls_no_plaintext(void **state)
{
    (void)state;
    struct srv *x = calloc(1, sizeof(*x));
    struct cli *k = calloc(1, sizeof(*k));
    tls_mode = 1;
    srv_start(x, NULL);

    int fd = raw_connect(x->addr);
    rpc_frame h = sample(RPC_HELLO);
    raw_send_frame(fd, &h);
    static uint8_t buf[16384];
    size_t n = raw_read_all(fd, buf, sizeof(buf));
    rpc_frame f;
    size_t used = 0;
    assert_true(n == 0 ||
                rpc_decode(buf, n, sizeof(buf), &f, &used) != 0); /* a TLS alert at most */
    close(fd);

    tls_cli_open(k, x->addr, SECRET, NULL, NULL, NULL); /* plain */
    assert_true(rpc_client_wait_ready(k->c, 500) != 0);
    rpc_client_destroy(k->c);
    rpc_server_stats st = srv_stats_tls_failed(x, 2);
    assert_int_equal(st.frames_in, 0);
    assert_int_equal(st.auth_ok, 0);
    assert_true(st.tls_failed >= 2);
    srv_stop(x);

    tls_mode = 0;
    srv_start(x, NULL); /* plain */
    tls_cli_open(k, x->addr, SECRET, cert("ca.crt"), NULL, NULL);
    assert_true(rpc_client_wait_ready(k->c, 500) != 0);
    assert_int_equal(srv_stats(x).auth_ok, 0);
    rpc_client_destroy(k->c);
    srv_stop(x);
    free(k);
    free(x);
}

/* Mutual TLS: only a client certificate from the server's tls_ca gets in,
 * and it still needs the secret. */
static void test_tls_mutual(void **state)
{
    (void)state;
    struct srv *x = calloc(1, sizeof(*x));
    struct cli *k = calloc(1, sizeof(*k));
    rpc_server_config cfg;
    rpc_server_config_init(&cfg);
    cfg.auth_delay_ms = 5;
    cfg.auth_delay_max_ms = 40;
    cfg.tls_cert = cert("server.crt");
    cfg.tls_key = cert("server.key");
    cfg.tls_ca = cert("ca.crt");
    tls_mode = 0;
    srv_start(x, &cfg);
    const char *ca = cert("ca.crt");

    tls_cli_open(k, x->addr, SECRET, ca, NULL, NULL); /* no certificate */
    assert_int_equal(rpc_client_wait_ready(k->c, 3000), -EACCES);
    rpc_client_destroy(k->c);
    tls_cli_open(k, x->addr, SECRET, ca, cert("other-client.crt"), cert("other-client.key"));
    assert_int_equal(rpc_client_wait_ready(k->c, 3000), -EACCES);
    rpc_client_destroy(k->c);
    rpc_server_stats st = srv_stats_tls_failed(x, 2);
    assert_int_equal(st.frames_in, 0);
    assert_int_equal(st.auth_ok, 0);
    assert_true(st.tls_failed >= 2);

    tls_cli_open(k, x->addr, "not-the-secret", ca, cert("client.crt"), cert("client.key"));
    assert_int_equal(rpc_client_wait_ready(k->c, 3000), -EACCES);
    rpc_client_destroy(k->c);
    assert_int_equal(srv_stats(x).auth_ok, 0);
    assert_true(srv_stats(x).auth_failed >= 1);

    tls_cli_open(k, x->addr, SECRET, ca, cert("client.crt"), cert("client.key"));
    assert_int_equal(rpc_client_wait_ready(k->c, 3000), 0);
    call_ok(k->c);
    /* a large reply, written in parts and read across records */
    for (int i = 0; i < 5; i++) {
        rpc_frame req = sample(RPC_FETCH), rep;
        req.u.fetch.topic = rpc_str("big");
        req.u.fetch.max_messages = 1;
        assert_int_equal(rpc_client_call(k->c, &req, &rep, 3000), 0);
        assert_int_equal(rep.type, RPC_FETCH_OK);
        assert_int_equal(rep.u.fetch_ok.count, 1);
        rpc_msg_iter it;
        rpc_msg m;
        rpc_msg_iter_init(&it, &rep.u.fetch_ok);
        assert_int_equal(rpc_msg_iter_next(&it, &m), 1);
        assert_int_equal(m.value.len, 300 << 10);
        assert_int_equal(((const char *)m.value.ptr)[(300 << 10) - 1], 'z');
        rpc_frame_release(&rep);
        call_ok(k->c);
    }
    assert_int_equal(srv_stats(x).auth_ok, 1);
    rpc_client_destroy(k->c);
    srv_stop(x);
    free(k);
    free(x);
}

/* TLS handshakes that never finish (silent, or a ClientHello cut short)
 * meet the handshake deadline, and while many are pending the pre-auth
 * budget evicts the oldest, so a real worker gets in at once. */
static void test_tls_handshake_deadline(void **state)
{
    (void)state;
    enum { STALLED = 40 };
    struct srv *x = calloc(1, sizeof(*x));
    struct cli *k = calloc(1, sizeof(*k));
    int fds[STALLED];
    rpc_server_config cfg;
    rpc_server_config_init(&cfg);
    cfg.handshake_timeout_ms = 400;
    cfg.max_unauth = 8;
    cfg.heartbeat_ms = 1000;
    cfg.heartbeat_misses = 10;
    tls_mode = 1;
    srv_start(x, &cfg);

    /* the first bytes of a TLS 1.x ClientHello record, then nothing */
    static const uint8_t hello_start[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc};
    int silent = raw_connect(x->addr);
    int cut = raw_connect(x->addr);
    raw_send(cut, hello_start, sizeof(hello_start));
    assert_true(raw_closed(silent)); /* within the 2 s receive timeout */
    assert_true(raw_closed(cut));
    close(silent);
    close(cut);
    assert_true(srv_stats(x).handshake_timeouts >= 2);

    for (int i = 0; i < STALLED; i++) {
        fds[i] = raw_connect(x->addr);
        if (i % 2)
            raw_send(fds[i], hello_start, sizeof(hello_start));
    }
    cli_open(k, x->addr, SECRET, NULL);
    assert_int_equal(rpc_client_wait_ready(k->c, 3000), 0);
    call_ok(k->c);
    rpc_server_stats st = srv_stats(x);
    assert_true(st.evicted >= STALLED - 8);
    assert_int_equal(st.auth_ok, 1);
    for (int i = 0; i < 200 && srv_stats(x).open > 1; i++)
        sleep_ms(10);
    assert_int_equal(srv_stats(x).open, 1);
    assert_true(rpc_client_connected(k->c));
    for (int i = 0; i < STALLED; i++)
        close(fds[i]);
    rpc_client_destroy(k->c);
    srv_stop(x);
    free(k);
    free(x);
}

/* Bad TLS settings are refused at start, the message naming the key. */
static void test_tls_config_rejects(void **state)
{
    (void)state;
    char err[512];
    char crt[192], key[192], ca[192], okey[192];
    snprintf(crt, sizeof(crt), "%s", cert("server.crt"));
    snprintf(key, sizeof(key), "%s", cert("server.key"));
    snprintf(ca, sizeof(ca), "%s", cert("ca.crt"));
    snprintf(okey, sizeof(okey), "%s", cert("client.key"));

    assert_int_equal(rpc_tls_check(1, NULL, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(rpc_tls_check(0, "", "", "", err, sizeof(err)), 0);
    assert_int_equal(rpc_tls_check(1, crt, key, NULL, err, sizeof(err)), 0);
    assert_int_equal(rpc_tls_check(1, crt, key, ca, err, sizeof(err)), 0);
    assert_int_equal(rpc_tls_check(0, NULL, NULL, ca, err, sizeof(err)), 0);
    assert_int_equal(rpc_tls_check(0, cert("client.crt"), okey, ca, err, sizeof(err)), 0);

    assert_int_equal(rpc_tls_check(1, crt, NULL, NULL, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "tls_key"));
    assert_int_equal(rpc_tls_check(1, NULL, key, ca, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "tls_cert"));
    assert_int_equal(rpc_tls_check(1, "/nonexistent/gw.crt", key, NULL, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "tls_cert"));
    assert_non_null(strstr(err, "No such file"));
    assert_int_equal(rpc_tls_check(1, crt, okey, NULL, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "tls_key"));
    assert_non_null(strstr(err, "does not match"));
    assert_int_equal(rpc_tls_check(1, crt, crt, NULL, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "tls_key"));
    assert_int_equal(rpc_tls_check(1, crt, key, "/nonexistent/ca.crt", err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "tls_ca"));
    assert_int_equal(rpc_tls_check(0, crt, key, NULL, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "tls_ca"));
    assert_int_equal(rpc_tls_check(0, crt, NULL, ca, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "tls_key"));
    assert_int_equal(rpc_tls_check(0, NULL, NULL, key, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "tls_ca"));

    /* create refuses the same; TLS on a Unix socket is refused, not ignored */
    rpc_server *s = NULL;
    rpc_server_config sc;
    rpc_server_config_init(&sc);
    sc.secret = SECRET;
    sc.secret_len = strlen(SECRET);
    sc.listen = "tcp:127.0.0.1:0";
    sc.tls_cert = crt;
    sc.tls_key = okey;
    assert_int_equal(rpc_server_create(&sc, &s), -EINVAL);
    sc.tls_key = key;
    sc.listen = "unix:/tmp/test_rpc_tls_refused.sock";
    assert_int_equal(rpc_server_create(&sc, &s), -EINVAL);
    rpc_client *c = NULL;
    rpc_client_config cc;
    rpc_client_config_init(&cc);
    cc.addr = "tcp:127.0.0.1:1";
    cc.secret = SECRET;
    cc.secret_len = strlen(SECRET);
    cc.tls_ca = "/nonexistent/ca.crt";
    assert_int_equal(rpc_client_create(&cc, &c), -EINVAL);
}

static int make_certs(void **state)
{
    char cmd[512];
    (void)state;
    snprintf(certs, sizeof(certs), "/tmp/test_rpc_certs.%d", (int)getpid());
    snprintf(cmd, sizeof(cmd), "sh %s/tests/gen_test_certs.sh %s", SOURCE_DIR, certs);
    return system(cmd) == 0 ? 0 : -1;
}

static int remove_certs(void **state)
{
    char cmd[512];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf %s", certs);
    return system(cmd) == 0 ? 0 : -1;
}

#define BOTH(t)                                                                                    \
    cmocka_unit_test_setup(t, setup_tcp), cmocka_unit_test_setup(t, setup_unix)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_vector),
        cmocka_unit_test(test_roundtrip_every_type),
        cmocka_unit_test(test_encode_rejects),
        cmocka_unit_test(test_malformed_table),
        cmocka_unit_test(test_truncated_at_every_byte),
        cmocka_unit_test(test_helpers),
        cmocka_unit_test(test_auth_hmac_kat),
        cmocka_unit_test(test_auth_state_machine),
        cmocka_unit_test(test_auth_names_bound_whole),
        cmocka_unit_test(test_corpus_replay),
        cmocka_unit_test(test_config_rejects),
        BOTH(test_auth_ok),
        BOTH(test_queue_then_flush),
        BOTH(test_auth_refused),
        BOTH(test_concurrent_calls),
        BOTH(test_oversized_and_corrupt),
        BOTH(test_reconnect_after_restart),
        BOTH(test_heartbeat),
        BOTH(test_client_heartbeat_timeout),
        BOTH(test_slow_reader_dropped),
        BOTH(test_conn_ref_after_close),
        BOTH(test_frame_mac_enforced),
        BOTH(test_auth_throttled),
        BOTH(test_handshake_flood),
        BOTH(test_sniffed_handshake_replayed),
        cmocka_unit_test_setup(test_auth_ok, setup_tls),
        cmocka_unit_test_setup(test_queue_then_flush, setup_tls),
        cmocka_unit_test_setup(test_concurrent_calls, setup_tls),
        cmocka_unit_test_setup(test_reconnect_after_restart, setup_tls),
        cmocka_unit_test_setup(test_tls_server_not_trusted, setup_tcp),
        cmocka_unit_test_setup(test_tls_host_name, setup_tcp),
        cmocka_unit_test_setup(test_tls_no_plaintext, setup_tcp),
        cmocka_unit_test_setup(test_tls_mutual, setup_tcp),
        cmocka_unit_test_setup(test_tls_handshake_deadline, setup_tcp),
        cmocka_unit_test(test_tls_config_rejects),
    };
    return cmocka_run_group_tests(tests, make_certs, remove_certs);
}
