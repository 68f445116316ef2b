/*
 * gen_corpus_rpc_handshake.c - writes the seed corpus of fuzz_rpc_handshake
 * into a directory: real handshakes between a client and a server configured
 * by rpc_handshake_fixture.h (fixed nonces, so every byte is reproducible),
 * followed by frames each side sealed, and the ways such a conversation goes
 * wrong (a proof or MAC off by one bit, frames out of order, replayed, sent
 * the wrong way, unsealed, truncated). Each file is one mode byte and the
 * peer's stream, as fuzz_rpc_handshake.c describes.
 *
 * Not part of the build; run by hand when the frame layout, the key schedule
 * or the fixture changes:
 *   cc -D_GNU_SOURCE -I . -I rpc -I rpc/include -I common -I tests/fuzz tests/fuzz/gen_corpus_rpc_handshake.c \
 *      rpc/frame.c rpc/auth.c common/crc32c.c -lcrypto -lpthread -o /tmp/gen_hs &&
 *   /tmp/gen_hs tests/fuzz/corpus_rpc_handshake
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/auth.h"
#include "crc32c.h"
#include "frame.h"
#include "le.h"
#include "rpc_handshake_fixture.h"

#define MODE_CLIENT 1 /* the client is under test */
#define MODE_FIX_CRC 2
#define MODE_CHUNK(n) ((n) << 2)

struct buf {
    uint8_t p[8192];
    size_t n;
};

static void must(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "gen_corpus_rpc_handshake: %s\n", what);
        exit(1);
    }
}

static void put(struct buf *b, const void *p, size_t n)
{
    must(b->n + n <= sizeof(b->p), "buffer full");
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

/* Make the CRC of the hand-edited frame p[0, n) good again (it stops
 * before a flagged MAC trailer). */
static void fix_crc(uint8_t *p, size_t n)
{
    size_t end =
        (p[6] & RPC_FLAG_MAC) && n >= RPC_HEADER_SIZE + RPC_MAC_SIZE ? n - RPC_MAC_SIZE : n;
    uint32_t crc = sk_crc32c(0, p, 16);
    sk_le_put32(p + 16, sk_crc32c(crc, p + RPC_HEADER_SIZE, end - RPC_HEADER_SIZE));
}

/* Save mode, then the frames given as (pointer, length) pairs up to NULL. */
static void save(const char *dir, const char *name, int mode, ...)
{
    char path[4096];
    struct buf out = {.n = 0};
    uint8_t m = (uint8_t)mode;
    va_list ap;

    put(&out, &m, 1);
    va_start(ap, mode);
    for (;;) {
        const struct buf *b = va_arg(ap, const struct buf *);
        if (!b)
            break;
        put(&out, b->p, b->n);
    }
    va_end(ap);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    must(f && fwrite(out.p, 1, out.n, f) == out.n && fclose(f) == 0, path);
}

/* Feed one whole frame to a. OUT: reply. Returns rpc_auth_feed's result. */
static int feed(rpc_auth *a, const struct buf *in, struct buf *reply)
{
    size_t used = 0;
    int rc = rpc_auth_feed(a, in->p, in->n, &used, reply->p, RPC_AUTH_OUT_MAX, &reply->n);
    must(used == in->n, "a handshake frame not consumed whole");
    return rc;
}

/* f encoded with a zero MAC trailer, then sealed by a (NULL: left unsealed,
 * without the trailer). */
static void sealed(rpc_auth *a, rpc_frame f, struct buf *out)
{
    static const uint8_t zero_mac[RPC_MAC_SIZE];
    f.mac = a ? zero_mac : NULL;
    must(rpc_encode(&f, out->p, sizeof(out->p), &out->n) == 0, "encode");
    must(!a || rpc_auth_seal(a, out->p, out->n) == 0, "seal");
}

struct hs {
    struct buf hello, chal, auth, ok;
};

/* A whole handshake between c and v. */
static void handshake(rpc_auth *c, rpc_auth *v, struct hs *h)
{
    struct buf none;
    must(rpc_auth_start(c, h->hello.p, RPC_AUTH_OUT_MAX, &h->hello.n) == 0, "start");
    must(feed(v, &h->hello, &h->chal) == RPC_AUTH_MORE, "HELLO refused");
    must(feed(c, &h->chal, &h->auth) == RPC_AUTH_MORE, "CHALLENGE refused");
    must(feed(v, &h->auth, &h->ok) == RPC_AUTH_DONE, "AUTH refused");
    must(feed(c, &h->ok, &none) == RPC_AUTH_DONE && none.n == 0, "HELLO_OK refused");
}

int main(int argc, char **argv)
{
    rpc_auth *c = NULL, *v = NULL;
    struct hs h;
    struct buf c2s[3], s2c[3], plain, cut, bad, err;

    if (argc != 2)
        return 2;
    const char *dir = argv[1];

    must(hs_auth_create(RPC_AUTH_CLIENT, HS_SECRET, &c) == 0, "client");
    must(hs_auth_create(RPC_AUTH_SERVER, HS_SECRET, &v) == 0, "server");
    handshake(c, v, &h);

    /* what each side sealed after it: c2s numbers 0-2, s2c numbers 1-2 */
    rpc_frame fetch = {.type = RPC_FETCH, .call_id = 1};
    fetch.u.fetch = (rpc_fetch){rpc_str("seckill.requests"), 32, 100};
    rpc_frame ping = {.type = RPC_PING, .call_id = 2};
    ping.u.ping.value = 77;
    rpc_frame stock = {.type = RPC_STOCK};
    stock.u.stock = (rpc_stock){rpc_str("item-1"), 5};
    rpc_frame pong = {.type = RPC_PONG, .call_id = 2};
    pong.u.ping.value = 77;
    rpc_frame ack = {.type = RPC_ACK, .call_id = 3};
    sealed(c, fetch, &c2s[0]);
    sealed(c, ping, &c2s[1]);
    sealed(c, stock, &c2s[2]);
    sealed(v, pong, &s2c[1]);
    sealed(v, ack, &s2c[2]);
    sealed(NULL, ping, &plain);
    cut = c2s[0];
    cut.n -= 5;

    /* ---- the server under test: the stream is the client's ---- */
    save(dir, "srv_handshake", 0, &h.hello, &h.auth, &c2s[0], &c2s[1], &c2s[2], NULL);
    save(dir, "srv_handshake_fix_crc", MODE_FIX_CRC, &h.hello, &h.auth, &c2s[0], &c2s[1], NULL);
    save(dir, "srv_handshake_chunk7", MODE_CHUNK(7), &h.hello, &h.auth, &c2s[0], &c2s[1], NULL);
    save(dir, "srv_hello_only", 0, &h.hello, NULL);
    save(dir, "srv_auth_first", 0, &h.auth, &h.hello, NULL);
    save(dir, "srv_hello_twice", 0, &h.hello, &h.hello, NULL);
    save(dir, "srv_replayed_frame", 0, &h.hello, &h.auth, &c2s[0], &c2s[0], NULL);
    save(dir, "srv_reordered_frames", 0, &h.hello, &h.auth, &c2s[1], &c2s[0], NULL);
    save(dir, "srv_frame_other_way", 0, &h.hello, &h.auth, &s2c[1], NULL);
    save(dir, "srv_unsealed_after", 0, &h.hello, &h.auth, &plain, NULL);
    save(dir, "srv_truncated_after", 0, &h.hello, &h.auth, &c2s[1], &cut, NULL);
    bad = h.auth;
    bad.p[RPC_HEADER_SIZE + 5] ^= 0x20;
    fix_crc(bad.p, bad.n);
    save(dir, "srv_bad_proof", 0, &h.hello, &bad, NULL);
    bad = c2s[0];
    bad.p[RPC_HEADER_SIZE + 3] ^= 1; /* payload changed, CRC made good again */
    fix_crc(bad.p, bad.n);
    save(dir, "srv_tampered_frame", 0, &h.hello, &h.auth, &bad, NULL);
    {
        rpc_frame f;
        size_t used = 0;
        must(rpc_decode(h.hello.p, h.hello.n, RPC_AUTH_MAX_FRAME, &f, &used) == 0, "decode");
        sealed(c, f, &bad); /* a HELLO with a trailer, which no handshake frame has */
        save(dir, "srv_hello_sealed", 0, &bad, &h.auth, NULL);
    }

    /* the longest HELLO: both names at RPC_NAME_MAX */
    {
        char name[RPC_NAME_MAX + 1];
        rpc_auth *lc = NULL, *lv = NULL;
        struct hs lh;
        memset(name, 'n', RPC_NAME_MAX);
        name[RPC_NAME_MAX] = '\0';
        rpc_auth_config cfg = {.side = RPC_AUTH_CLIENT,
                               .secret = HS_SECRET,
                               .secret_len = strlen(HS_SECRET),
                               .worker_id = name,
                               .group = name,
                               .role = RPC_ROLE_ORDERS,
                               .max_frame = 1 << 20,
                               .nonce = hs_nonce_c};
        must(rpc_auth_create(&cfg, &lc) == 0, "long client");
        must(hs_auth_create(RPC_AUTH_SERVER, HS_SECRET, &lv) == 0, "server");
        handshake(lc, lv, &lh);
        save(dir, "srv_handshake_long_names", 0, &lh.hello, &lh.auth, NULL);
        rpc_auth_destroy(lc);
        rpc_auth_destroy(lv);
    }

    /* a HELLO whose worker id gained a zero byte and more on the way, with
     * the proof of the HELLO the client sent: the server must not accept a
     * name other than the one that was proven */
    {
        rpc_frame f;
        size_t used = 0;
        char name[8] = "w-1\0xyz";
        must(rpc_decode(h.hello.p, h.hello.n, RPC_AUTH_MAX_FRAME, &f, &used) == 0, "decode");
        f.u.hello.worker_id = (rpc_bytes){name, 7};
        must(rpc_encode(&f, bad.p, sizeof(bad.p), &bad.n) == 0, "encode");
        save(dir, "srv_name_with_nul", 0, &bad, &h.auth, &c2s[0], NULL);
    }

    /* ---- the client under test: the stream is the server's ---- */
    save(dir, "cli_handshake", MODE_CLIENT, &h.chal, &h.ok, &s2c[1], &s2c[2], NULL);
    save(dir, "cli_handshake_fix_crc", MODE_CLIENT | MODE_FIX_CRC, &h.chal, &h.ok, &s2c[1], NULL);
    save(dir, "cli_handshake_chunk5", MODE_CLIENT | MODE_CHUNK(5), &h.chal, &h.ok, &s2c[1], &s2c[2],
         NULL);
    save(dir, "cli_hello_ok_first", MODE_CLIENT, &h.ok, NULL);
    save(dir, "cli_challenge_twice", MODE_CLIENT, &h.chal, &h.chal, NULL);
    save(dir, "cli_replayed_frame", MODE_CLIENT, &h.chal, &h.ok, &s2c[1], &s2c[1], NULL);
    save(dir, "cli_frame_other_way", MODE_CLIENT, &h.chal, &h.ok, &c2s[0], NULL);
    save(dir, "cli_unsealed_after", MODE_CLIENT, &h.chal, &h.ok, &plain, NULL);
    bad = h.ok;
    bad.p[bad.n - 1] ^= 0x80; /* the MAC */
    save(dir, "cli_hello_ok_bad_mac", MODE_CLIENT, &h.chal, &bad, NULL);
    bad = h.ok;
    bad.p[RPC_HEADER_SIZE + 8] ^= 1; /* the proof, CRC made good again */
    fix_crc(bad.p, bad.n);
    save(dir, "cli_hello_ok_bad_proof", MODE_CLIENT, &h.chal, &bad, NULL);
    {
        rpc_frame f;
        size_t used = 0;
        must(rpc_decode(h.ok.p, h.ok.n, RPC_AUTH_MAX_FRAME, &f, &used) == 0, "decode");
        sealed(NULL, f, &bad);
        save(dir, "cli_hello_ok_unsealed", MODE_CLIENT, &h.chal, &bad, NULL);
    }
    rpc_frame e = {.type = RPC_ERROR};
    e.u.error = (rpc_error){13, rpc_str("authentication failed")};
    sealed(NULL, e, &err);
    save(dir, "cli_refused", MODE_CLIENT, &h.chal, &err, NULL);
    e.u.error = (rpc_error){-2147483647 - 1, rpc_str("")};
    sealed(NULL, e, &err);
    save(dir, "cli_error_code_min", MODE_CLIENT, &err, NULL);

    save(dir, "empty", 0, NULL);
    save(dir, "empty_client", MODE_CLIENT, NULL);
    rpc_auth_destroy(c);
    rpc_auth_destroy(v);
    return 0;
}
