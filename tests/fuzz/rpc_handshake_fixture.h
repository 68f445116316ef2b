/*
 * rpc_handshake_fixture.h - the one configuration both ends of the recorded
 * handshake use: fuzz_rpc_handshake.c configures the side under test with it,
 * gen_corpus_rpc_handshake.c recorded corpus_rpc_handshake/ with it. A change
 * here invalidates every recorded proof and MAC: regenerate the corpus.
 */
#ifndef SECKILL_FUZZ_RPC_HANDSHAKE_FIXTURE_H
#define SECKILL_FUZZ_RPC_HANDSHAKE_FIXTURE_H

#include <stdint.h>
#include <string.h>

#include "rpc/auth.h"
#include "rpc.h"

/* the secret the corpus was recorded with, and one no input holds */
#define HS_SECRET "fuzz-rpc-handshake-secret-0b7e2c9d41f6a358"
#define HS_OTHER_SECRET "fuzz-rpc-handshake-other-secret-e91d04a7c3"
#define HS_WORKER_ID "w-1"
#define HS_GROUP "seckill"
#define HS_ROLE RPC_ROLE_PURCHASE
#define HS_MAX_FRAME 4096u
#define HS_HEARTBEAT_MS 1000u

static const uint8_t hs_nonce_c[RPC_NONCE_SIZE] = {
    0xc1, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10,
    0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20};
static const uint8_t hs_nonce_s[RPC_NONCE_SIZE] = {
    0x5e, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff, 0xe0,
    0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xeb, 0xec, 0xed, 0xee, 0xef, 0xd0};

/* side: enum rpc_auth_side. OUT: *out, NULL when rpc_auth_create failed. */
static inline int hs_auth_create(int side, const char *secret, rpc_auth **out)
{
    rpc_auth_config cfg = {.side = side,
                           .secret = secret,
                           .secret_len = strlen(secret),
                           .worker_id = HS_WORKER_ID,
                           .group = HS_GROUP,
                           .role = HS_ROLE,
                           .max_frame = HS_MAX_FRAME,
                           .heartbeat_ms = HS_HEARTBEAT_MS,
                           .nonce = side == RPC_AUTH_CLIENT ? hs_nonce_c : hs_nonce_s};
    *out = NULL;
    return rpc_auth_create(&cfg, out);
}

#endif
