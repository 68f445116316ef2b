/*
 * fuzz_rpc_handshake.c - libFuzzer target: the rpc handshake state machine
 * (rpc/auth.c) fed a peer's bytes, one side at a time.
 *
 * Input: one mode byte, then the byte stream the peer sends.
 *   bit 0      0: the server is under test, the stream is a client's (HELLO,
 *              AUTH, then sealed frames); 1: the client is under test, the
 *              stream is a server's (CHALLENGE, HELLO_OK, then sealed frames)
 *   bit 1      rewrite the CRC of every whole frame of the stream first, so a
 *              mutated payload reaches the state machine instead of stopping
 *              at the CRC check
 *   bits 2-7   0: the stream arrives at once; n: n bytes at a time, as a slow
 *              socket delivers it
 * Frames are cut by their own length fields, as a transport cuts them.
 *
 * The side under test is configured by rpc_handshake_fixture.h (secret, fixed
 * nonce), so the handshakes gen_corpus_rpc_handshake.c recorded with it replay
 * to RPC_AUTH_DONE and their sealed frames open. Checked on every input:
 *   - rpc_auth_feed never reports more consumed than it was given nor more
 *     output than cap (out is a heap block of exactly cap bytes, so ASan sees
 *     any write past it), sends nothing while a frame is incomplete, and after
 *     any result but MORE keeps returning it (-EALREADY after DONE);
 *   - DONE only with the right proofs: the proofs and the HELLO_OK MAC that
 *     were accepted or produced are recomputed here from the key schedule
 *     auth.c documents, with nothing but HMAC over the fields as decoded from
 *     the wire, and must match; what rpc_auth_hello / rpc_auth_hello_ok report
 *     is what was proven;
 *   - the same stream against HS_OTHER_SECRET never reaches DONE: the input
 *     holds no proof made with it (unless it holds the secret itself, then
 *     that check is skipped);
 *   - after DONE every further frame goes through rpc_auth_open, which must
 *     accept it exactly when its trailer is the MAC under the session key of
 *     that direction at the next sequence number; the first frame refused
 *     ends the input, as it ends a connection.
 * Any broken invariant aborts (replay.c and libFuzzer both report it).
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/auth.h"
#include "crc32c.h"
#include "frame.h"
#include "le.h"
#include "rpc_handshake_fixture.h"

#define OUT_CAP RPC_AUTH_OUT_MAX
#define MAX_STEPS 4 /* frames a handshake consumes on one side: 2, more is a bug */
#define BIND_MAX (2 * RPC_NONCE_SIZE + 4 + 2 + RPC_NAME_MAX + 2 + RPC_NAME_MAX + 4)
#define LABEL_MAX 32

static void fuzz_check(int ok)
{
    if (!ok)
        abort();
}

/* ---- the key schedule, from its description at the top of auth.c ---- */

/* B = Nc | Ns | u32 role | u16 len | worker_id | u16 len | group | u32 max_frame */
static size_t spec_binding(uint8_t *b, const uint8_t *nc, const uint8_t *ns, uint32_t role,
                           rpc_bytes worker_id, rpc_bytes group, uint32_t max_frame)
{
    size_t n = 0;

    memcpy(b + n, nc, RPC_NONCE_SIZE);
    n += RPC_NONCE_SIZE;
    memcpy(b + n, ns, RPC_NONCE_SIZE);
    n += RPC_NONCE_SIZE;
    sk_le_put32(b + n, role);
    n += 4;
    b[n] = (uint8_t)worker_id.len;
    b[n + 1] = (uint8_t)(worker_id.len >> 8);
    if (worker_id.len)
        memcpy(b + n + 2, worker_id.ptr, worker_id.len);
    n += 2 + worker_id.len;
    b[n] = (uint8_t)group.len;
    b[n + 1] = (uint8_t)(group.len >> 8);
    if (group.len)
        memcpy(b + n + 2, group.ptr, group.len);
    n += 2 + group.len;
    sk_le_put32(b + n, max_frame);
    return n + 4;
}

/* HMAC(S, label 0 B) */
static void spec_derive(const char *secret, const char *label, const uint8_t *b, size_t blen,
                        uint8_t out[32])
{
    uint8_t data[LABEL_MAX + BIND_MAX];
    size_t ll = strlen(label) + 1;

    memcpy(data, label, ll);
    memcpy(data + ll, b, blen);
    fuzz_check(rpc_auth_hmac(secret, strlen(secret), data, ll + blen, out) == 0);
}

struct spec_keys {
    uint8_t client_proof[32], server_proof[32], c2s[32], s2c[32];
};

static void spec_keys(const char *secret, const uint8_t *b, size_t blen, struct spec_keys *k)
{
    uint8_t session[32];

    spec_derive(secret, "seckill-rpc v2 client proof", b, blen, k->client_proof);
    spec_derive(secret, "seckill-rpc v2 server proof", b, blen, k->server_proof);
    spec_derive(secret, "seckill-rpc v2 session", b, blen, session);
    fuzz_check(rpc_auth_hmac(session, sizeof(session), "c2s", 3, k->c2s) == 0);
    fuzz_check(rpc_auth_hmac(session, sizeof(session), "s2c", 3, k->s2c) == 0);
}

/* 1 when frame[0, len) carries the flag and the MAC of key at seq. */
static int spec_sealed(const uint8_t key[32], uint64_t seq, const uint8_t *frame, size_t len)
{
    uint8_t mac[32], *data;
    int ok;

    if (len < RPC_HEADER_SIZE + RPC_MAC_SIZE || !(sk_le_get32(frame + 4) >> 16 & RPC_FLAG_MAC))
        return 0;
    data = malloc(8 + len);
    fuzz_check(data != NULL);
    sk_le_put64(data, seq);
    memcpy(data + 8, frame, len - RPC_MAC_SIZE);
    fuzz_check(rpc_auth_hmac(key, 32, data, 8 + len - RPC_MAC_SIZE, mac) == 0);
    ok = memcmp(mac, frame + len - RPC_MAC_SIZE, RPC_MAC_SIZE) == 0;
    free(data);
    return ok;
}

/* Make the CRC of the whole frame p[0, len) good: it covers the header
 * before it and the payload after it, up to a MAC trailer when flagged. */
static void fix_crc(uint8_t *p, uint32_t len)
{
    uint32_t end = len;
    if ((p[6] & RPC_FLAG_MAC) && len >= RPC_HEADER_SIZE + RPC_MAC_SIZE)
        end = len - RPC_MAC_SIZE;
    uint32_t crc = sk_crc32c(0, p, 16);
    sk_le_put32(p + 16, sk_crc32c(crc, p + RPC_HEADER_SIZE, end - RPC_HEADER_SIZE));
}

/* ---- driving one side ---- */

struct trace {
    int rc;     /* the last rpc_auth_feed result: MORE when the stream ran out */
    size_t end; /* stream bytes consumed */
    int steps;  /* frames consumed */
    size_t at[MAX_STEPS], len[MAX_STEPS]; /* where each was in the stream */
    uint8_t reply[MAX_STEPS][OUT_CAP];    /* and what a's answer to it was */
    size_t reply_len[MAX_STEPS];
};

/* Feed s[0, n) to a, chunk bytes more at a time (0: all at once). */
static void drive(rpc_auth *a, const uint8_t *s, size_t n, size_t chunk, struct trace *t)
{
    uint8_t *out = malloc(OUT_CAP);
    size_t pos = 0, avail = chunk && chunk < n ? chunk : n;

    fuzz_check(out != NULL);
    memset(t, 0, sizeof(*t));
    for (;;) {
        size_t used = SIZE_MAX, olen = SIZE_MAX;
        int rc = rpc_auth_feed(a, s + pos, avail - pos, &used, out, OUT_CAP, &olen);

        fuzz_check(used <= avail - pos && olen <= OUT_CAP);
        t->rc = rc;
        if (rc == RPC_AUTH_MORE && used == 0) {
            fuzz_check(olen == 0); /* nothing to say about half a frame */
            if (avail == n)
                break;
            avail = avail + chunk < n ? avail + chunk : n;
            continue;
        }
        if (used) {
            fuzz_check(t->steps < MAX_STEPS);
            t->at[t->steps] = pos;
            t->len[t->steps] = used;
            memcpy(t->reply[t->steps], out, olen);
            t->reply_len[t->steps] = olen;
            t->steps++;
            pos += used;
        } else {
            fuzz_check(rc != RPC_AUTH_MORE && rc != RPC_AUTH_DONE);
        }
        if (rc != RPC_AUTH_MORE) {
            int again = rpc_auth_feed(a, s + pos, n - pos, &used, out, OUT_CAP, &olen);
            fuzz_check(again == (rc == RPC_AUTH_DONE ? -EALREADY : rc));
            fuzz_check(used == 0 && olen == 0);
            break;
        }
    }
    t->end = pos;
    free(out);
}

static void decode_one(const uint8_t *p, size_t len, int type, rpc_frame *f)
{
    size_t used = 0;
    fuzz_check(rpc_decode(p, len, RPC_AUTH_MAX_FRAME, f, &used) == 0);
    fuzz_check(used == len && f->type == type);
}

/* After DONE: every further frame of s[0, n), cut by its length field (a
 * length that does not fit: the rest as one frame), through rpc_auth_open. */
static void open_rest(rpc_auth *a, const uint8_t *s, size_t n, const uint8_t key[32], uint64_t seq)
{
    size_t pos = 0;

    while (pos < n) {
        size_t len = n - pos;
        if (len >= 4) {
            uint32_t fl = sk_le_get32(s + pos);
            if (fl >= RPC_HEADER_SIZE && fl <= len)
                len = fl;
        }
        int want = spec_sealed(key, seq, s + pos, len);
        int got = rpc_auth_open(a, s + pos, len);
        fuzz_check(got == 0 || got == -EKEYREJECTED);
        fuzz_check(want == (got == 0));
        if (got)
            break;
        seq++;
        pos += len;
    }
}

/* ---- the two sides ---- */

static void server_side(const uint8_t *s, size_t n, size_t chunk, const char *secret,
                        int may_finish)
{
    rpc_auth *a = NULL;
    struct trace *t = malloc(sizeof(*t));
    rpc_frame hello, auth, chal, ok;
    uint8_t b[BIND_MAX];
    struct spec_keys k;

    fuzz_check(t != NULL && hs_auth_create(RPC_AUTH_SERVER, secret, &a) == 0);
    drive(a, s, n, chunk, t);
    if (t->rc == RPC_AUTH_DONE) {
        fuzz_check(may_finish);
        fuzz_check(t->steps == 2 && t->reply_len[1] > 0);
        decode_one(s + t->at[0], t->len[0], RPC_HELLO, &hello);
        decode_one(s + t->at[1], t->len[1], RPC_AUTH, &auth);
        decode_one(t->reply[0], t->reply_len[0], RPC_CHALLENGE, &chal);
        decode_one(t->reply[1], t->reply_len[1], RPC_HELLO_OK, &ok);
        fuzz_check(hello.mac == NULL && auth.mac == NULL && chal.mac == NULL);
        fuzz_check(memcmp(chal.u.challenge.nonce, hs_nonce_s, RPC_NONCE_SIZE) == 0);

        /* the proof it accepted is the one for the HELLO it read */
        const rpc_hello *h = &hello.u.hello;
        size_t blen =
            spec_binding(b, h->nonce, hs_nonce_s, h->role, h->worker_id, h->group, h->max_frame);
        spec_keys(secret, b, blen, &k);
        fuzz_check(memcmp(auth.u.auth.proof, k.client_proof, RPC_PROOF_SIZE) == 0);

        /* and that HELLO is what it reports */
        const rpc_hello *seen = rpc_auth_hello(a);
        fuzz_check(seen != NULL && seen->role == h->role && seen->max_frame == h->max_frame);
        fuzz_check(memcmp(seen->nonce, h->nonce, RPC_NONCE_SIZE) == 0);
        fuzz_check(seen->worker_id.len == h->worker_id.len && seen->group.len == h->group.len);
        fuzz_check(!h->worker_id.len ||
                   !memcmp(seen->worker_id.ptr, h->worker_id.ptr, h->worker_id.len));
        fuzz_check(!h->group.len || !memcmp(seen->group.ptr, h->group.ptr, h->group.len));

        /* its HELLO_OK: the server's proof, sealed as s2c number 0 */
        fuzz_check(ok.mac != NULL && ok.call_id == auth.call_id);
        fuzz_check(ok.u.hello_ok.max_frame == HS_MAX_FRAME &&
                   ok.u.hello_ok.heartbeat_ms == HS_HEARTBEAT_MS);
        fuzz_check(memcmp(ok.u.hello_ok.proof, k.server_proof, RPC_PROOF_SIZE) == 0);
        fuzz_check(spec_sealed(k.s2c, 0, t->reply[1], t->reply_len[1]));

        open_rest(a, s + t->end, n - t->end, k.c2s, 0);
    }
    rpc_auth_destroy(a);
    free(t);
}

static void client_side(const uint8_t *s, size_t n, size_t chunk, const char *secret,
                        int may_finish)
{
    rpc_auth *a = NULL;
    struct trace *t = malloc(sizeof(*t));
    uint8_t *hello = malloc(OUT_CAP);
    size_t hello_len = SIZE_MAX;
    rpc_frame chal, auth, ok;
    uint8_t b[BIND_MAX];
    struct spec_keys k;

    fuzz_check(t != NULL && hello != NULL && hs_auth_create(RPC_AUTH_CLIENT, secret, &a) == 0);
    fuzz_check(rpc_auth_start(a, hello, OUT_CAP, &hello_len) == 0 && hello_len <= OUT_CAP);
    drive(a, s, n, chunk, t);
    if (t->rc == RPC_AUTH_DONE) {
        fuzz_check(may_finish);
        fuzz_check(t->steps == 2 && t->reply_len[1] == 0);
        decode_one(s + t->at[0], t->len[0], RPC_CHALLENGE, &chal);
        decode_one(s + t->at[1], t->len[1], RPC_HELLO_OK, &ok);
        decode_one(t->reply[0], t->reply_len[0], RPC_AUTH, &auth);
        fuzz_check(chal.mac == NULL && auth.mac == NULL && ok.mac != NULL);

        size_t blen = spec_binding(b, hs_nonce_c, chal.u.challenge.nonce, HS_ROLE,
                                   rpc_str(HS_WORKER_ID), rpc_str(HS_GROUP), HS_MAX_FRAME);
        spec_keys(secret, b, blen, &k);
        fuzz_check(memcmp(auth.u.auth.proof, k.client_proof, RPC_PROOF_SIZE) == 0);
        /* it believed a server that proved the secret, in a HELLO_OK sealed
         * as s2c number 0 */
        fuzz_check(memcmp(ok.u.hello_ok.proof, k.server_proof, RPC_PROOF_SIZE) == 0);
        fuzz_check(spec_sealed(k.s2c, 0, s + t->at[1], t->len[1]));
        const rpc_hello_ok *seen = rpc_auth_hello_ok(a);
        fuzz_check(seen != NULL && seen->max_frame == ok.u.hello_ok.max_frame &&
                   seen->heartbeat_ms == ok.u.hello_ok.heartbeat_ms);

        open_rest(a, s + t->end, n - t->end, k.s2c, 1);
    }
    rpc_auth_destroy(a);
    free(hello);
    free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int mode = data[0];
    size_t n = size - 1, chunk = (size_t)(mode >> 2);
    uint8_t *s = malloc(n ? n : 1);
    fuzz_check(s != NULL);
    memcpy(s, data + 1, n);

    if (mode & 2) {
        for (size_t pos = 0; n - pos >= RPC_HEADER_SIZE;) {
            uint32_t fl = sk_le_get32(s + pos);
            if (fl < RPC_HEADER_SIZE || fl > n - pos)
                break;
            fix_crc(s + pos, fl);
            pos += fl;
        }
    }

    int other_absent = memmem(data, size, HS_OTHER_SECRET, strlen(HS_OTHER_SECRET)) == NULL;
    if (mode & 1) {
        client_side(s, n, chunk, HS_SECRET, 1);
        client_side(s, n, chunk, HS_OTHER_SECRET, !other_absent);
    } else {
        server_side(s, n, chunk, HS_SECRET, 1);
        server_side(s, n, chunk, HS_OTHER_SECRET, !other_absent);
    }
    free(s);
    return 0;
}
