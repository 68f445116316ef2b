/*
 * frame.c - the rpc wire format, version 2.
 *
 * A connection carries a stream of frames in both directions. All integers
 * are little-endian. A frame is a 20-byte header and a payload:
 *
 *   offset size  field
 *   0      4     length   whole frame in bytes, header included:
 *                         RPC_HEADER_SIZE <= length <= max_frame (per endpoint,
 *                         default 1 MiB, announced to clients in HELLO_OK)
 *   4      1     version  RPC_VERSION (2)
 *   5      1     type     enum rpc_type
 *   6      2     flags    bit 0 RPC_FLAG_MAC: the frame ends in a MAC trailer;
 *                         every other bit 0, reserved for a later version
 *   8      8     call_id  0 for one-way frames; a reply repeats its request's id
 *   16     4     crc      CRC-32C of header bytes [0,16) followed by the
 *                         payload bytes
 *   20     ...   payload  length - 20 bytes (- RPC_MAC_SIZE with the flag),
 *                         layout by type (below)
 *   end-16 16    mac      with RPC_FLAG_MAC only: HMAC-SHA256/128 under the
 *                         session key of the direction, over a sequence number
 *                         and bytes [0, length - 16) (auth.c). Every frame
 *                         after the handshake carries one; the codec only
 *                         carries it, the transport checks it.
 *
 * The CRC catches a damaged frame cheaply and tells "corrupt" apart from
 * "forged"; only the MAC stops someone who recomputes the CRC.
 *
 * Why this order of checks (rpc_peek_header, then rpc_decode): a reader can
 * reject a frame from its first 20 bytes - length under the header, length
 * over the maximum, wrong version - before it grows a buffer or waits for the
 * rest, so an announced size is never allocated before it is checked. Then the
 * CRC covers everything, then the type, then the payload.
 *
 * Payload field types:
 *   u32/u64/i32/i64   fixed width, little-endian
 *   id16              16 raw bytes
 *   nonce32, proof32  32 raw bytes
 *   str               u16 length + bytes; each str field has a limit
 *                     (RPC_NAME_MAX, ...) enforced by encoder and decoder
 *   blob              u32 length + bytes (bounded only by the frame)
 *
 * Payloads (every decoder checks every length against the bytes left and
 * rejects trailing bytes):
 *   HELLO       str worker_id, str group, u32 role, nonce32 nonce, u32 max_frame
 *   CHALLENGE   nonce32 nonce
 *   AUTH        proof32 proof
 *   HELLO_OK    u32 max_frame, u32 heartbeat_ms, proof32 proof
 *   ERROR       i32 code, str message
 *   FETCH       str topic, u32 max_messages, u32 max_wait_ms
 *   FETCH_OK    u32 count, then count messages:
 *                 str topic, u32 partition, u64 offset, u32 delivery,
 *                 blob key, blob value
 *   COMMIT      str topic, u32 partition, u64 offset
 *   RESULT      id16 gateway_id, id16 request_id, u32 result,
 *               str item_id, str order_id
 *   PRODUCE     str topic, blob key, blob payload, u64 producer_id, u64 seq
 *   PRODUCE_OK  u32 partition, u64 offset
 *   SOLD_OUT    str item_id
 *   STOCK       str item_id, i64 left
 *   PING, PONG  u64 value (a PONG echoes its PING)
 *   ACK         empty
 *
 * Compatibility: a change to any layout bumps RPC_VERSION; a peer refuses a
 * version it does not speak (-EPROTONOSUPPORT) rather than guess.
 *
 * Encoding runs each type's writer twice over the same code: once with no
 * buffer to size and validate the frame, once to write it, so the size and
 * the bytes can never disagree.
 */
#include "frame.h"
#include "crc32c.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MSG_MIN_SIZE (2 + 4 + 8 + 4 + 4 + 4) /* one FETCH_OK message, all strings empty */

/* ---- little-endian helpers ---- */

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* ---- writer: sizes (buf == NULL) or writes ---- */

typedef struct writer {
    uint8_t *buf;
    size_t pos;
    int err;
} writer;

static void w_int(writer *w, uint64_t v, int n)
{
    if (w->buf)
        put_le(w->buf + w->pos, v, n);
    w->pos += (size_t)n;
}

static void w_raw(writer *w, const void *p, size_t n)
{
    if (w->buf && n)
        memcpy(w->buf + w->pos, p, n);
    w->pos += n;
}

static void w_str(writer *w, rpc_bytes s, uint32_t limit)
{
    if (s.len > limit || (s.len && !s.ptr)) {
        w->err = -EINVAL;
        return;
    }
    w_int(w, s.len, 2);
    w_raw(w, s.ptr, s.len);
}

static void w_blob(writer *w, rpc_bytes s)
{
    if (s.len && !s.ptr) {
        w->err = -EINVAL;
        return;
    }
    w_int(w, s.len, 4);
    w_raw(w, s.ptr, s.len);
}

static void w_msg(writer *w, const rpc_msg *m)
{
    w_str(w, m->topic, RPC_NAME_MAX);
    w_int(w, m->partition, 4);
    w_int(w, m->offset, 8);
    w_int(w, m->delivery, 4);
    w_blob(w, m->key);
    w_blob(w, m->value);
}

static void w_payload(writer *w, const rpc_frame *f)
{
    switch (f->type) {
    case RPC_HELLO:
        w_str(w, f->u.hello.worker_id, RPC_NAME_MAX);
        w_str(w, f->u.hello.group, RPC_NAME_MAX);
        w_int(w, f->u.hello.role, 4);
        w_raw(w, f->u.hello.nonce, RPC_NONCE_SIZE);
        w_int(w, f->u.hello.max_frame, 4);
        break;
    case RPC_HELLO_OK:
        w_int(w, f->u.hello_ok.max_frame, 4);
        w_int(w, f->u.hello_ok.heartbeat_ms, 4);
        w_raw(w, f->u.hello_ok.proof, RPC_PROOF_SIZE);
        break;
    case RPC_CHALLENGE:
        w_raw(w, f->u.challenge.nonce, RPC_NONCE_SIZE);
        break;
    case RPC_AUTH:
        w_raw(w, f->u.auth.proof, RPC_PROOF_SIZE);
        break;
    case RPC_ERROR:
        w_int(w, (uint32_t)f->u.error.code, 4);
        w_str(w, f->u.error.message, RPC_MESSAGE_MAX);
        break;
    case RPC_FETCH:
        w_str(w, f->u.fetch.topic, RPC_NAME_MAX);
        w_int(w, f->u.fetch.max_messages, 4);
        w_int(w, f->u.fetch.max_wait_ms, 4);
        break;
    case RPC_FETCH_OK: {
        const rpc_fetch_ok *fo = &f->u.fetch_ok;
        w_int(w, fo->count, 4);
        if (fo->msgs) {
            for (uint32_t i = 0; i < fo->count; i++)
                w_msg(w, &fo->msgs[i]);
        } else if (fo->count) {
            /* forwarding a decoded batch: raw holds exactly count messages */
            if (!fo->raw)
                w->err = -EINVAL;
            else
                w_raw(w, fo->raw, fo->raw_len);
        }
        break;
    }
    case RPC_COMMIT:
        w_str(w, f->u.commit.topic, RPC_NAME_MAX);
        w_int(w, f->u.commit.partition, 4);
        w_int(w, f->u.commit.offset, 8);
        break;
    case RPC_RESULT:
        w_raw(w, f->u.result.gateway_id, 16);
        w_raw(w, f->u.result.request_id, 16);
        w_int(w, f->u.result.result, 4);
        w_str(w, f->u.result.item_id, RPC_ITEM_ID_MAX);
        w_str(w, f->u.result.order_id, RPC_ORDER_ID_MAX);
        break;
    case RPC_PRODUCE:
        w_str(w, f->u.produce.topic, RPC_NAME_MAX);
        w_blob(w, f->u.produce.key);
        w_blob(w, f->u.produce.payload);
        w_int(w, f->u.produce.producer_id, 8);
        w_int(w, f->u.produce.seq, 8);
        break;
    case RPC_PRODUCE_OK:
        w_int(w, f->u.produce_ok.partition, 4);
        w_int(w, f->u.produce_ok.offset, 8);
        break;
    case RPC_SOLD_OUT:
        w_str(w, f->u.stock.item_id, RPC_ITEM_ID_MAX);
        break;
    case RPC_STOCK:
        w_str(w, f->u.stock.item_id, RPC_ITEM_ID_MAX);
        w_int(w, (uint64_t)f->u.stock.left, 8);
        break;
    case RPC_PING:
    case RPC_PONG:
        w_int(w, f->u.ping.value, 8);
        break;
    case RPC_ACK:
        break;
    default:
        w->err = -EINVAL;
        break;
    }
}

int rpc_encoded_size(const rpc_frame *f, size_t *size)
{
    writer w = {NULL, RPC_HEADER_SIZE, 0};

    if (!f || !size)
        return -EINVAL;
    w_payload(&w, f);
    if (w.err)
        return w.err;
    if (f->mac)
        w.pos += RPC_MAC_SIZE;
    if (w.pos > RPC_MAX_FRAME_LIMIT)
        return -EMSGSIZE;
    *size = w.pos;
    return 0;
}

int rpc_encode(const rpc_frame *f, void *buf, size_t cap, size_t *len)
{
    size_t size;
    int rc = rpc_encoded_size(f, &size);

    if (rc)
        return rc;
    if (!buf || cap < size)
        return -ENOSPC;

    uint8_t *p = buf;
    writer w = {p, RPC_HEADER_SIZE, 0};
    w_payload(&w, f);

    put_le(p, size, 4);
    p[4] = RPC_VERSION;
    p[5] = f->type;
    put_le(p + 6, f->mac ? RPC_FLAG_MAC : 0, 2);
    put_le(p + 8, f->call_id, 8);
    size_t body_end = size - (f->mac ? RPC_MAC_SIZE : 0);
    uint32_t crc = sk_crc32c(0, p, 16);
    crc = sk_crc32c(crc, p + RPC_HEADER_SIZE, body_end - RPC_HEADER_SIZE);
    put_le(p + 16, crc, 4);
    if (f->mac)
        memmove(p + body_end, f->mac, RPC_MAC_SIZE); /* memmove: f->mac may be this trailer */
    if (len)
        *len = size;
    return 0;
}

/* ---- reader: every get checks the bytes left ---- */

typedef struct reader {
    const uint8_t *p;
    const uint8_t *end;
    int err;
} reader;

static int r_need(reader *r, size_t n)
{
    if (r->err)
        return 0;
    if ((size_t)(r->end - r->p) < n) {
        r->err = -EPROTO;
        return 0;
    }
    return 1;
}

static uint64_t r_int(reader *r, int n)
{
    if (!r_need(r, (size_t)n))
        return 0;
    uint64_t v = get_le(r->p, n);
    r->p += n;
    return v;
}

static void r_raw(reader *r, void *out, size_t n)
{
    if (!r_need(r, n))
        return;
    memcpy(out, r->p, n);
    r->p += n;
}

static rpc_bytes r_bytes(reader *r, int lenw, uint32_t limit)
{
    rpc_bytes b = {NULL, 0};
    uint32_t n = (uint32_t)r_int(r, lenw);

    if (r->err)
        return b;
    if (n > limit) {
        r->err = -ENAMETOOLONG;
        return b;
    }
    if (!r_need(r, n))
        return b;
    b.ptr = r->p;
    b.len = n;
    r->p += n;
    return b;
}

static rpc_bytes r_str(reader *r, uint32_t limit)
{
    return r_bytes(r, 2, limit);
}

static rpc_bytes r_blob(reader *r)
{
    return r_bytes(r, 4, UINT32_MAX);
}

static void r_msg(reader *r, rpc_msg *m)
{
    m->topic = r_str(r, RPC_NAME_MAX);
    m->partition = (uint32_t)r_int(r, 4);
    m->offset = r_int(r, 8);
    m->delivery = (uint32_t)r_int(r, 4);
    m->key = r_blob(r);
    m->value = r_blob(r);
}

static void r_payload(reader *r, rpc_frame *f)
{
    switch (f->type) {
    case RPC_HELLO:
        f->u.hello.worker_id = r_str(r, RPC_NAME_MAX);
        f->u.hello.group = r_str(r, RPC_NAME_MAX);
        f->u.hello.role = (uint32_t)r_int(r, 4);
        r_raw(r, f->u.hello.nonce, RPC_NONCE_SIZE);
        f->u.hello.max_frame = (uint32_t)r_int(r, 4);
        break;
    case RPC_HELLO_OK:
        f->u.hello_ok.max_frame = (uint32_t)r_int(r, 4);
        f->u.hello_ok.heartbeat_ms = (uint32_t)r_int(r, 4);
        r_raw(r, f->u.hello_ok.proof, RPC_PROOF_SIZE);
        break;
    case RPC_CHALLENGE:
        r_raw(r, f->u.challenge.nonce, RPC_NONCE_SIZE);
        break;
    case RPC_AUTH:
        r_raw(r, f->u.auth.proof, RPC_PROOF_SIZE);
        break;
    case RPC_ERROR:
        f->u.error.code = (int32_t)(uint32_t)r_int(r, 4);
        f->u.error.message = r_str(r, RPC_MESSAGE_MAX);
        break;
    case RPC_FETCH:
        f->u.fetch.topic = r_str(r, RPC_NAME_MAX);
        f->u.fetch.max_messages = (uint32_t)r_int(r, 4);
        f->u.fetch.max_wait_ms = (uint32_t)r_int(r, 4);
        break;
    case RPC_FETCH_OK: {
        rpc_fetch_ok *fo = &f->u.fetch_ok;
        fo->count = (uint32_t)r_int(r, 4);
        fo->msgs = NULL;
        if (r->err)
            break;
        /* a cheap bound first: count can't promise more than the bytes hold */
        if (fo->count > (size_t)(r->end - r->p) / MSG_MIN_SIZE) {
            r->err = -EPROTO;
            break;
        }
        fo->raw = r->p;
        for (uint32_t i = 0; i < fo->count && !r->err; i++) {
            rpc_msg m;
            r_msg(r, &m);
        }
        fo->raw_len = (uint32_t)(r->p - (const uint8_t *)fo->raw);
        if (!fo->count)
            fo->raw = NULL;
        break;
    }
    case RPC_COMMIT:
        f->u.commit.topic = r_str(r, RPC_NAME_MAX);
        f->u.commit.partition = (uint32_t)r_int(r, 4);
        f->u.commit.offset = r_int(r, 8);
        break;
    case RPC_RESULT:
        r_raw(r, f->u.result.gateway_id, 16);
        r_raw(r, f->u.result.request_id, 16);
        f->u.result.result = (uint32_t)r_int(r, 4);
        f->u.result.item_id = r_str(r, RPC_ITEM_ID_MAX);
        f->u.result.order_id = r_str(r, RPC_ORDER_ID_MAX);
        break;
    case RPC_PRODUCE:
        f->u.produce.topic = r_str(r, RPC_NAME_MAX);
        f->u.produce.key = r_blob(r);
        f->u.produce.payload = r_blob(r);
        f->u.produce.producer_id = r_int(r, 8);
        f->u.produce.seq = r_int(r, 8);
        break;
    case RPC_PRODUCE_OK:
        f->u.produce_ok.partition = (uint32_t)r_int(r, 4);
        f->u.produce_ok.offset = r_int(r, 8);
        break;
    case RPC_SOLD_OUT:
        f->u.stock.item_id = r_str(r, RPC_ITEM_ID_MAX);
        f->u.stock.left = 0;
        break;
    case RPC_STOCK:
        f->u.stock.item_id = r_str(r, RPC_ITEM_ID_MAX);
        f->u.stock.left = (int64_t)r_int(r, 8);
        break;
    case RPC_PING:
    case RPC_PONG:
        f->u.ping.value = r_int(r, 8);
        break;
    case RPC_ACK:
        break;
    default:
        r->err = -ENOMSG;
        break;
    }
    if (!r->err && r->p != r->end)
        r->err = -EPROTO; /* trailing bytes: a layout we don't know */
}

int rpc_peek_header(const void *buf, size_t len, uint32_t max_frame, uint32_t *frame_len)
{
    const uint8_t *p = buf;

    if (len < RPC_HEADER_SIZE)
        return -EAGAIN;
    uint32_t n = (uint32_t)get_le(p, 4);
    if (n < RPC_HEADER_SIZE)
        return -ERANGE;
    if (n > max_frame)
        return -EMSGSIZE;
    if (p[4] != RPC_VERSION)
        return -EPROTONOSUPPORT;
    if (frame_len)
        *frame_len = n;
    return 0;
}

int rpc_decode(const void *buf, size_t len, uint32_t max_frame, rpc_frame *f, size_t *consumed)
{
    const uint8_t *p = buf;
    uint32_t n = 0;
    int rc;

    if (!f || (!buf && len))
        return -EINVAL;
    rc = rpc_peek_header(buf, len, max_frame, &n);
    if (rc)
        return rc;
    if (len < n)
        return -EAGAIN;

    uint32_t flags = (uint32_t)get_le(p + 6, 2);
    uint32_t body_end = n;
    if ((flags & RPC_FLAG_MAC) && n >= RPC_HEADER_SIZE + RPC_MAC_SIZE)
        body_end = n - RPC_MAC_SIZE;
    uint32_t crc = sk_crc32c(0, p, 16);
    crc = sk_crc32c(crc, p + RPC_HEADER_SIZE, body_end - RPC_HEADER_SIZE);
    if (crc != (uint32_t)get_le(p + 16, 4))
        return -EBADMSG;
    if ((flags & ~RPC_FLAG_MAC) || ((flags & RPC_FLAG_MAC) && body_end == n))
        return -EPROTO;

    memset(f, 0, sizeof(*f));
    f->type = p[5];
    f->call_id = get_le(p + 8, 8);
    if (flags & RPC_FLAG_MAC)
        f->mac = p + body_end;
    reader r = {p + RPC_HEADER_SIZE, p + body_end, 0};
    r_payload(&r, f);
    if (r.err) {
        memset(f, 0, sizeof(*f));
        return r.err;
    }
    if (consumed)
        *consumed = n;
    return 0;
}

void rpc_msg_iter_init(rpc_msg_iter *it, const rpc_fetch_ok *f)
{
    it->p = f->raw;
    it->end = it->p ? it->p + f->raw_len : NULL;
    it->left = f->raw ? f->count : 0;
}

int rpc_msg_iter_next(rpc_msg_iter *it, rpc_msg *m)
{
    if (!it->left)
        return 0;
    reader r = {it->p, it->end, 0};
    r_msg(&r, m);
    if (r.err) {
        /* only reachable when raw was not produced by rpc_decode */
        it->left = 0;
        return 0;
    }
    it->p = r.p;
    it->left--;
    return 1;
}

rpc_bytes rpc_str(const char *s)
{
    rpc_bytes b = {s, 0};
    if (s) {
        size_t n = strlen(s);
        b.len = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
    }
    return b;
}

const char *rpc_type_name(int type)
{
    static const char *const names[] = {
        [RPC_HELLO] = "HELLO",       [RPC_HELLO_OK] = "HELLO_OK", [RPC_ERROR] = "ERROR",
        [RPC_FETCH] = "FETCH",       [RPC_FETCH_OK] = "FETCH_OK", [RPC_COMMIT] = "COMMIT",
        [RPC_RESULT] = "RESULT",     [RPC_PRODUCE] = "PRODUCE",   [RPC_PRODUCE_OK] = "PRODUCE_OK",
        [RPC_SOLD_OUT] = "SOLD_OUT", [RPC_STOCK] = "STOCK",       [RPC_PING] = "PING",
        [RPC_PONG] = "PONG",         [RPC_ACK] = "ACK",           [RPC_CHALLENGE] = "CHALLENGE",
        [RPC_AUTH] = "AUTH",
    };
    if (type < 1 || type > RPC_TYPE_MAX)
        return "UNKNOWN";
    return names[type];
}

void rpc_frame_release(rpc_frame *f)
{
    if (!f)
        return;
    free(f->owned);
    f->owned = NULL;
}

int rpc_secret_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    const volatile uint8_t *x = a;
    const volatile uint8_t *y = b;
    uint8_t d = alen != blen;

    /* the loop runs over alen whatever the contents; b is read only in bounds */
    for (size_t i = 0; i < alen; i++)
        d |= (uint8_t)(x[i] ^ (i < blen ? y[i] : 0));
    return d == 0;
}
