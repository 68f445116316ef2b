/*
 * auth.c - the rpc handshake (challenge-response over a shared secret) and
 * the MAC on every frame after it. Crypto from OpenSSL libcrypto (HMAC-SHA256
 * through EVP_MAC, nonces from RAND_bytes); nothing here is hand-rolled.
 *
 * Handshake, protocol version 2 (frames of frame.c, none with a MAC until 4):
 *
 *   1. client -> server  HELLO {worker_id, group, role, Nc, max_frame}
 *                        Nc: 32 fresh random bytes
 *   2. server -> client  CHALLENGE {Ns}
 *                        Ns: 32 fresh random bytes (the server may hold this
 *                        back to throttle an address that failed before)
 *   3. client -> server  AUTH {Pc = HMAC(S, "seckill-rpc v2 client proof" 0 B)}
 *   4. server -> client  HELLO_OK {max_frame, heartbeat_ms,
 *                                  Ps = HMAC(S, "seckill-rpc v2 server proof" 0 B)}
 *                        sealed: the first frame with a MAC, s2c number 0;
 *                        or ERROR EACCES (not sealed) when Pc is wrong
 *
 *   S = the shared secret; 0 = one zero byte; B = the binding of everything
 *   either side said: Nc | Ns | u32 role | u16 len | worker_id | u16 len |
 *   group | u32 client max_frame (little-endian, lengths make it unambiguous).
 *
 * The server checks Pc (constant time) before it says anything derived from
 * S, so a peer without the secret learns nothing but a random Ns. The client
 * checks Ps and the MAC of HELLO_OK before it reports the connection up, so a
 * fake server cannot make it believe it is authenticated. Fresh nonces from
 * both sides make every proof good for one connection only.
 *
 * Session keys (step 4 on): K = HMAC(S, "seckill-rpc v2 session" 0 B),
 * Kc2s = HMAC(K, "c2s"), Ks2c = HMAC(K, "s2c"). Every later frame in either
 * direction has RPC_FLAG_MAC and ends in
 *   MAC = first 16 bytes of HMAC(Kdir, u64 seq | frame bytes [0, length-16))
 * where seq counts this direction's sealed frames from 0 (HELLO_OK is s2c
 * number 0, the client's first frame c2s number 0). seq is never sent: each
 * side knows which number comes next, so a frame replayed, reordered, dropped
 * (the next one then fails), moved to the other direction (other key) or to
 * another connection (other nonces, other K) fails its MAC, and the
 * connection is closed. A frame without the flag after the handshake fails
 * the same way.
 *
 * Threat model (loopback or a LAN; the payload is NOT encrypted):
 *   - An on-path observer sees every frame in clear, requests, outcomes and
 *     order ids included, but never the secret: only nonces and HMACs of
 *     them. A weak secret can be guessed offline from one recorded handshake
 *     (Pc is a known function of it): use a long random secret.
 *   - A replayer gains nothing: a recorded HELLO/AUTH meets a new Ns and its
 *     Pc is wrong; a recorded CHALLENGE/HELLO_OK meets a new Nc and its Ps
 *     and MAC are wrong; recorded frames carry MACs for another session.
 *   - An active attacker on the path can delay or cut the connection (and
 *     relay it unchanged), but any byte it changes, adds or removes after the
 *     handshake closes the connection.
 *   - A peer without the secret gets a CHALLENGE and then ERROR EACCES,
 *     delayed more with each failure from its address (server.c); it can
 *     occupy only the small budget of connections still in their handshake,
 *     each for at most the handshake deadline.
 *   - A peer with the secret is trusted as a member of the role it names in
 *     HELLO: the role is bound into the keys, and the gateway (gateway/
 *     rpc_service.c) enforces what each role may do. The secret is shared by
 *     all roles, so a holder can name any role; a role narrows what a
 *     connection can do, it does not stop a thief of the secret.
 */
#include "auth.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#define KEY_SIZE 32
#define BIND_MAX (2 * RPC_NONCE_SIZE + 4 + 2 + RPC_NAME_MAX + 2 + RPC_NAME_MAX + 4)

enum state { ST_START, ST_HELLO_SENT, ST_AUTH_SENT, ST_WAIT_HELLO, ST_WAIT_AUTH, ST_DONE, ST_FAILED };

struct rpc_auth {
    int side;
    int state;
    int fail_rc;
    uint8_t secret[RPC_SECRET_MAX];
    size_t secret_len;
    uint32_t max_frame;
    uint32_t heartbeat_ms;

    /* what HELLO says (the client's copy or the server's decoded copy) */
    char worker_id[RPC_NAME_MAX + 1];
    char group[RPC_NAME_MAX + 1];
    rpc_hello hello;
    rpc_hello_ok hello_ok;
    uint8_t my_nonce[RPC_NONCE_SIZE];
    uint8_t peer_nonce[RPC_NONCE_SIZE];

    /* session: one MAC context per direction, keyed once */
    EVP_MAC_CTX *seal_ctx;
    EVP_MAC_CTX *open_ctx;
    uint64_t seal_seq;
    uint64_t open_seq;
};

/* ---- HMAC-SHA256 ---- */

static EVP_MAC *hmac_alg;
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;

static void hmac_fetch(void)
{
    hmac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

static EVP_MAC_CTX *hmac_new(const uint8_t *key, size_t key_len)
{
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    EVP_MAC_CTX *ctx;

    pthread_once(&hmac_once, hmac_fetch);
    if (!hmac_alg)
        return NULL;
    ctx = EVP_MAC_CTX_new(hmac_alg);
    if (ctx && !EVP_MAC_init(ctx, key, key_len, params)) {
        EVP_MAC_CTX_free(ctx);
        ctx = NULL;
    }
    return ctx;
}

struct part {
    const void *p;
    size_t n;
};

/* HMAC(key, parts...) into out[32]. */
static int hmac_parts(const uint8_t *key, size_t key_len, const struct part *parts, int nparts,
                      uint8_t out[32])
{
    EVP_MAC_CTX *ctx = hmac_new(key, key_len);
    size_t olen = 0;
    int ok = ctx != NULL;

    for (int i = 0; ok && i < nparts; i++)
        ok = EVP_MAC_update(ctx, parts[i].p, parts[i].n);
    ok = ok && EVP_MAC_final(ctx, out, &olen, 32) && olen == 32;
    EVP_MAC_CTX_free(ctx);
    return ok ? 0 : -EIO;
}

int rpc_auth_hmac(const void *key, size_t key_len, const void *data, size_t len, uint8_t out[32])
{
    struct part p = {data, len};
    return hmac_parts(key, key_len, &p, 1, out);
}

/* ---- derivations ---- */

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* B: everything HELLO and CHALLENGE said. OUT: *len. */
static void binding(const rpc_auth *a, uint8_t *b, size_t *len)
{
    const uint8_t *nc = a->side == RPC_AUTH_CLIENT ? a->my_nonce : a->peer_nonce;
    const uint8_t *ns = a->side == RPC_AUTH_CLIENT ? a->peer_nonce : a->my_nonce;
    /* the names as counted on the wire, not up to a zero byte: a name that
     * gained "\0..." on the way must not keep the proof of the shorter one */
    size_t n = 0, wl = a->hello.worker_id.len, gl = a->hello.group.len;

    memcpy(b + n, nc, RPC_NONCE_SIZE);
    n += RPC_NONCE_SIZE;
    memcpy(b + n, ns, RPC_NONCE_SIZE);
    n += RPC_NONCE_SIZE;
    put_le(b + n, a->hello.role, 4);
    n += 4;
    put_le(b + n, wl, 2);
    memcpy(b + n + 2, a->worker_id, wl);
    n += 2 + wl;
    put_le(b + n, gl, 2);
    memcpy(b + n + 2, a->group, gl);
    n += 2 + gl;
    put_le(b + n, a->hello.max_frame, 4);
    n += 4;
    *len = n;
}

/* HMAC(S, label 0 B). Labels include their terminating zero byte. */
static int derive(const rpc_auth *a, const char *label, uint8_t out[32])
{
    uint8_t b[BIND_MAX];
    size_t blen = 0;

    binding(a, b, &blen);
    struct part parts[2] = {{label, strlen(label) + 1}, {b, blen}};
    return hmac_parts(a->secret, a->secret_len, parts, 2, out);
}

static int session_keys(rpc_auth *a)
{
    uint8_t k[KEY_SIZE], c2s[32], s2c[32];
    struct part pc = {"c2s", 3}, ps = {"s2c", 3};
    int rc = derive(a, "seckill-rpc v2 session", k);

    if (!rc)
        rc = hmac_parts(k, sizeof(k), &pc, 1, c2s);
    if (!rc)
        rc = hmac_parts(k, sizeof(k), &ps, 1, s2c);
    if (!rc) {
        int client = a->side == RPC_AUTH_CLIENT;
        a->seal_ctx = hmac_new(client ? c2s : s2c, 32);
        a->open_ctx = hmac_new(client ? s2c : c2s, 32);
        if (!a->seal_ctx || !a->open_ctx)
            rc = -EIO;
    }
    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(c2s, sizeof(c2s));
    OPENSSL_cleanse(s2c, sizeof(s2c));
    return rc;
}

/* MAC of frame[0, len - RPC_MAC_SIZE) at seq with ctx, keyed once per
 * connection: init with no key restarts it with the same key, so nothing of
 * ours is allocated per frame (OpenSSL 3.0's HMAC still duplicates its
 * digest state inside init and final: two small allocations in libcrypto). */
static int frame_mac(EVP_MAC_CTX *ctx, uint64_t seq, const uint8_t *frame, size_t len,
                     uint8_t out[32])
{
    uint8_t s[8];
    size_t olen = 0;

    put_le(s, seq, 8);
    if (!EVP_MAC_init(ctx, NULL, 0, NULL) || !EVP_MAC_update(ctx, s, sizeof(s)) ||
        !EVP_MAC_update(ctx, frame, len - RPC_MAC_SIZE) || !EVP_MAC_final(ctx, out, &olen, 32))
        return -EIO;
    return 0;
}

int rpc_auth_seal(rpc_auth *a, uint8_t *frame, size_t len)
{
    uint8_t mac[32];

    if (!a || a->state != ST_DONE || len < RPC_HEADER_SIZE + RPC_MAC_SIZE)
        return -EINVAL;
    if (frame_mac(a->seal_ctx, a->seal_seq, frame, len, mac))
        return -EIO;
    memcpy(frame + len - RPC_MAC_SIZE, mac, RPC_MAC_SIZE);
    a->seal_seq++;
    return 0;
}

int rpc_auth_open(rpc_auth *a, const uint8_t *frame, size_t len)
{
    uint8_t mac[32];

    if (!a || a->state != ST_DONE || len < RPC_HEADER_SIZE + RPC_MAC_SIZE ||
        !((frame[6] | frame[7] << 8) & RPC_FLAG_MAC))
        return -EKEYREJECTED;
    if (frame_mac(a->open_ctx, a->open_seq, frame, len, mac))
        return -EKEYREJECTED;
    if (CRYPTO_memcmp(mac, frame + len - RPC_MAC_SIZE, RPC_MAC_SIZE) != 0)
        return -EKEYREJECTED;
    a->open_seq++;
    return 0;
}

/* ---- the state machine ---- */

int rpc_auth_create(const rpc_auth_config *cfg, rpc_auth **out)
{
    rpc_auth *a;

    if (!cfg || !out || (cfg->side != RPC_AUTH_CLIENT && cfg->side != RPC_AUTH_SERVER) ||
        !cfg->secret || cfg->secret_len == 0 || cfg->secret_len > RPC_SECRET_MAX ||
        (cfg->worker_id && strlen(cfg->worker_id) > RPC_NAME_MAX) ||
        (cfg->group && strlen(cfg->group) > RPC_NAME_MAX))
        return -EINVAL;
    a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->side = cfg->side;
    a->state = cfg->side == RPC_AUTH_CLIENT ? ST_START : ST_WAIT_HELLO;
    memcpy(a->secret, cfg->secret, cfg->secret_len);
    a->secret_len = cfg->secret_len;
    a->max_frame = cfg->max_frame ? cfg->max_frame : RPC_DEFAULT_MAX_FRAME;
    a->heartbeat_ms = cfg->heartbeat_ms;
    if (cfg->side == RPC_AUTH_CLIENT) {
        snprintf(a->worker_id, sizeof(a->worker_id), "%s", cfg->worker_id ? cfg->worker_id : "");
        snprintf(a->group, sizeof(a->group), "%s", cfg->group ? cfg->group : "");
        a->hello.worker_id = rpc_str(a->worker_id);
        a->hello.group = rpc_str(a->group);
        a->hello.role = cfg->role;
        a->hello.max_frame = a->max_frame;
    }
    if (cfg->nonce)
        memcpy(a->my_nonce, cfg->nonce, RPC_NONCE_SIZE);
    else if (RAND_bytes(a->my_nonce, RPC_NONCE_SIZE) != 1) {
        rpc_auth_destroy(a);
        return -EIO;
    }
    *out = a;
    return 0;
}

void rpc_auth_destroy(rpc_auth *a)
{
    if (!a)
        return;
    EVP_MAC_CTX_free(a->seal_ctx);
    EVP_MAC_CTX_free(a->open_ctx);
    OPENSSL_cleanse(a->secret, sizeof(a->secret));
    free(a);
}

int rpc_auth_done(const rpc_auth *a)
{
    return a && a->state == ST_DONE;
}

const rpc_hello *rpc_auth_hello(const rpc_auth *a)
{
    if (!a || a->side != RPC_AUTH_SERVER || a->state == ST_WAIT_HELLO)
        return NULL;
    return &a->hello;
}

const rpc_hello_ok *rpc_auth_hello_ok(const rpc_auth *a)
{
    if (!a || a->side != RPC_AUTH_CLIENT || a->state != ST_DONE)
        return NULL;
    return &a->hello_ok;
}

static int emit(const rpc_frame *f, void *out, size_t cap, size_t *out_len)
{
    return rpc_encode(f, out, cap, out_len);
}

int rpc_auth_start(rpc_auth *a, void *out, size_t cap, size_t *out_len)
{
    rpc_frame h = {.type = RPC_HELLO};
    int rc;

    if (!a || !out || !out_len)
        return -EINVAL;
    if (a->side != RPC_AUTH_CLIENT || a->state != ST_START)
        return -EALREADY;
    h.u.hello.worker_id = rpc_str(a->worker_id);
    h.u.hello.group = rpc_str(a->group);
    h.u.hello.role = a->hello.role;
    memcpy(h.u.hello.nonce, a->my_nonce, RPC_NONCE_SIZE);
    h.u.hello.max_frame = a->max_frame;
    rc = emit(&h, out, cap, out_len);
    if (rc == 0)
        a->state = ST_HELLO_SENT;
    return rc;
}

static int fail(rpc_auth *a, int rc)
{
    a->state = ST_FAILED;
    a->fail_rc = rc;
    return rc;
}

/* Server: the refusal every failure gets, with the same words whatever went
 * wrong, so a prober learns nothing from them. */
static int refuse(rpc_auth *a, const rpc_frame *f, int rc, void *out, size_t cap,
                  size_t *out_len)
{
    rpc_frame e = {.type = RPC_ERROR, .call_id = f ? f->call_id : 0};
    e.u.error.code = EACCES;
    e.u.error.message = rpc_str(rc == -EPROTO ? "handshake out of order" : "authentication failed");
    emit(&e, out, cap, out_len);
    return fail(a, rc);
}

static int server_step(rpc_auth *a, const rpc_frame *f, void *out, size_t cap, size_t *out_len)
{
    if (a->state == ST_WAIT_HELLO) {
        if (f->type != RPC_HELLO || f->mac)
            return refuse(a, f, -EPROTO, out, cap, out_len);
        const rpc_hello *h = &f->u.hello;
        memcpy(a->worker_id, h->worker_id.ptr, h->worker_id.len);
        a->worker_id[h->worker_id.len] = '\0';
        memcpy(a->group, h->group.ptr, h->group.len);
        a->group[h->group.len] = '\0';
        a->hello = *h;
        a->hello.worker_id = (rpc_bytes){a->worker_id, h->worker_id.len};
        a->hello.group = (rpc_bytes){a->group, h->group.len};
        memcpy(a->peer_nonce, h->nonce, RPC_NONCE_SIZE);

        rpc_frame c = {.type = RPC_CHALLENGE, .call_id = f->call_id};
        memcpy(c.u.challenge.nonce, a->my_nonce, RPC_NONCE_SIZE);
        a->state = ST_WAIT_AUTH;
        return emit(&c, out, cap, out_len) ? fail(a, -EIO) : RPC_AUTH_MORE;
    }
    /* ST_WAIT_AUTH */
    uint8_t want[32];
    if (f->type != RPC_AUTH || f->mac)
        return refuse(a, f, -EPROTO, out, cap, out_len);
    if (derive(a, "seckill-rpc v2 client proof", want))
        return fail(a, -EIO);
    if (CRYPTO_memcmp(want, f->u.auth.proof, RPC_PROOF_SIZE) != 0)
        return refuse(a, f, -EACCES, out, cap, out_len);
    if (session_keys(a))
        return fail(a, -EIO);

    static const uint8_t zero_mac[RPC_MAC_SIZE];
    rpc_frame ok = {.type = RPC_HELLO_OK, .call_id = f->call_id, .mac = zero_mac};
    ok.u.hello_ok.max_frame = a->max_frame;
    ok.u.hello_ok.heartbeat_ms = a->heartbeat_ms;
    if (derive(a, "seckill-rpc v2 server proof", ok.u.hello_ok.proof))
        return fail(a, -EIO);
    a->state = ST_DONE;
    if (emit(&ok, out, cap, out_len) || rpc_auth_seal(a, out, *out_len))
        return fail(a, -EIO);
    return RPC_AUTH_DONE;
}

static int client_step(rpc_auth *a, const rpc_frame *f, const uint8_t *raw, size_t raw_len,
                       void *out, size_t cap, size_t *out_len)
{
    if (f->type == RPC_ERROR)
        return fail(a, f->u.error.code > 0 ? -f->u.error.code : -EACCES);
    if (a->state == ST_HELLO_SENT) {
        if (f->type != RPC_CHALLENGE || f->mac)
            return fail(a, -EPROTO);
        memcpy(a->peer_nonce, f->u.challenge.nonce, RPC_NONCE_SIZE);
        rpc_frame p = {.type = RPC_AUTH, .call_id = f->call_id};
        if (derive(a, "seckill-rpc v2 client proof", p.u.auth.proof))
            return fail(a, -EIO);
        a->state = ST_AUTH_SENT;
        return emit(&p, out, cap, out_len) ? fail(a, -EIO) : RPC_AUTH_MORE;
    }
    /* ST_AUTH_SENT */
    uint8_t want[32];
    if (f->type != RPC_HELLO_OK)
        return fail(a, -EPROTO);
    if (derive(a, "seckill-rpc v2 server proof", want) || session_keys(a))
        return fail(a, -EIO);
    if (CRYPTO_memcmp(want, f->u.hello_ok.proof, RPC_PROOF_SIZE) != 0)
        return fail(a, -EACCES);
    a->state = ST_DONE;
    if (rpc_auth_open(a, raw, raw_len) != 0)
        return fail(a, -EACCES);
    a->hello_ok = f->u.hello_ok;
    return RPC_AUTH_DONE;
}

int rpc_auth_feed(rpc_auth *a, const void *in, size_t len, size_t *consumed, void *out,
                  size_t cap, size_t *out_len)
{
    rpc_frame f;
    size_t used = 0;
    int rc;

    if (!a || (!in && len) || !consumed || !out || !out_len)
        return -EINVAL;
    *consumed = 0;
    *out_len = 0;
    if (a->state == ST_DONE)
        return -EALREADY;
    if (a->state == ST_FAILED)
        return a->fail_rc;
    if (a->state == ST_START)
        return -EPROTO; /* a client feeds only after rpc_auth_start */
    rc = rpc_decode(in, len, RPC_AUTH_MAX_FRAME, &f, &used);
    if (rc == -EAGAIN)
        return RPC_AUTH_MORE;
    if (rc)
        return fail(a, rc);
    *consumed = used;
    if (a->side == RPC_AUTH_SERVER)
        return server_step(a, &f, out, cap, out_len);
    return client_step(a, &f, in, used, out, cap, out_len);
}
