/*
 * admit_token.c - the admission token codec: HMAC-SHA256 and base64 from
 * libcrypto, base64url and the field checks here. The format is in
 * admit_token.h.
 *
 * Cost: libcrypto's one-shot HMAC() fetches the algorithms, builds a context
 * and absorbs the key's two padded blocks on every call: about 24,000
 * instructions of a 45,000-instruction admitted purchase (callgrind). So
 * each thread keeps, per active key, an HMAC context keyed once
 * (EVP_MAC_init with the key), and a signature only resets it to that state
 * (EVP_MAC_init without a key), absorbs the message and finishes. The
 * contexts are freed when their thread exits.
 */
#include "admit_token.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIG_B64 43 /* 32 bytes, base64url without padding */

static int b64url_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_';
}

/* base64url of in (n bytes) without padding into out (room for 4 * (n + 2)
 * / 3 + 1). Returns its length. */
static size_t b64url_encode(const unsigned char *in, size_t n, char *out)
{
    int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    while (len > 0 && out[len - 1] == '=')
        len--;
    for (int i = 0; i < len; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    out[len] = 0;
    return (size_t)len;
}

/* The 6-bit value of a base64url character, or -1. */
static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '-' ? 62 : c == '_' ? 63 : -1;
}

/* Decode s (n characters of base64url, no padding) into out (cap bytes).
 * Returns the length, or -EINVAL. Decoded here rather than by
 * EVP_DecodeBlock, which needs the standard alphabet and padding, so a copy:
 * a check runs it on every purchase. Bits left over in the last character
 * must be zero (one encoding per payload). */
static int b64url_decode(const char *s, size_t n, unsigned char *out, size_t cap)
{
    if (n == 0 || n % 4 == 1 || n + 3 > GW_TOKEN_MAX || (n + 3) / 4 * 3 > cap)
        return -EINVAL;
    uint32_t acc = 0;
    int bits = 0;
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_value((unsigned char)s[i]);
        if (v < 0)
            return -EINVAL;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[len++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0)
        return -EINVAL;
    return (int)len;
}

/* A thread's keyed contexts: the two active keys (key, key_previous). */
#define MAC_SLOTS 2
typedef struct mac_slot {
    char key[GW_TOKEN_MAX + 1];
    EVP_MAC_CTX *ctx;
} mac_slot;

static pthread_once_t mac_once = PTHREAD_ONCE_INIT;
static pthread_key_t mac_key;
static EVP_MAC *mac_hmac; /* fetched once, for the life of the process */

static void mac_slots_free(void *p)
{
    mac_slot *s = p;
    for (int i = 0; i < MAC_SLOTS; i++)
        EVP_MAC_CTX_free(s[i].ctx);
    free(s);
}

static void mac_init_once(void)
{
    mac_hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    pthread_key_create(&mac_key, mac_slots_free);
}

/* This thread's context keyed with key, made on first use; NULL when
 * libcrypto cannot make one (out of memory). */
static EVP_MAC_CTX *keyed_ctx(const char *key)
{
    pthread_once(&mac_once, mac_init_once);
    if (!mac_hmac)
        return NULL;
    mac_slot *s = pthread_getspecific(mac_key);
    if (!s) {
        s = calloc(MAC_SLOTS, sizeof *s);
        if (!s || pthread_setspecific(mac_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    size_t klen = strlen(key);
    mac_slot *victim = &s[MAC_SLOTS - 1];
    for (int i = 0; i < MAC_SLOTS; i++) {
        if (s[i].ctx && !strcmp(s[i].key, key))
            return s[i].ctx;
        if (!s[i].ctx)
            victim = &s[i];
    }
    if (klen > GW_TOKEN_MAX)
        return NULL;
    EVP_MAC_CTX_free(victim->ctx); /* a key no longer in use (a restart changed it) */
    victim->ctx = EVP_MAC_CTX_new(mac_hmac);
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    if (!victim->ctx ||
        !EVP_MAC_init(victim->ctx, (const unsigned char *)key, klen, params)) {
        EVP_MAC_CTX_free(victim->ctx);
        victim->ctx = NULL;
        return NULL;
    }
    memcpy(victim->key, key, klen + 1);
    return victim->ctx;
}

/* The base64url HMAC-SHA256 of msg under key; -ENOMEM when libcrypto could
 * not compute it (out holds no signature then). */
static int sign(const char *key, const char *msg, size_t n, char out[SIG_B64 + 1])
{
    unsigned char md[32];
    size_t mdlen = 0;
    EVP_MAC_CTX *ctx = keyed_ctx(key);
    /* EVP_MAC_init without a key: back to the keyed state */
    if (!ctx || !EVP_MAC_init(ctx, NULL, 0, NULL) ||
        !EVP_MAC_update(ctx, (const unsigned char *)msg, n) ||
        !EVP_MAC_final(ctx, md, &mdlen, sizeof md) || mdlen != sizeof md) {
        out[0] = 0;
        return -ENOMEM;
    }
    b64url_encode(md, mdlen, out);
    return 0;
}

/* 1-64 characters: ids of [A-Za-z0-9_.:-], or (nonce) of base64url. */
static int field_ok(const char *s, size_t n, size_t min, int id)
{
    if (n < min || n > GW_TOKEN_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!b64url_char(c) && !(id && (c == '.' || c == ':')))
            return 0;
    }
    return 1;
}

int gw_token_issue(const char *key, const gw_token *t, char *out, size_t cap)
{
    char payload[4 * GW_TOKEN_ID_MAX], enc[GW_TOKEN_MAX];
    if (!key || !key[0] || !field_ok(t->user, strlen(t->user), 1, 1) ||
        !(strcmp(t->item, "*") == 0 || field_ok(t->item, strlen(t->item), 1, 1)) ||
        !field_ok(t->nonce, strlen(t->nonce), 8, 0) || t->not_before < 0 ||
        t->expires <= t->not_before)
        return -EINVAL;
    int n = snprintf(payload, sizeof payload, "%s|%s|%" PRId64 "|%" PRId64 "|%s", t->user,
                     t->item, t->not_before, t->expires, t->nonce);
    if (n < 0 || (size_t)n >= sizeof payload)
        return -EINVAL;
    memcpy(enc, "v1.", 3);
    size_t len = 3 + b64url_encode((unsigned char *)payload, (size_t)n, enc + 3);
    if (len + 1 + SIG_B64 > GW_TOKEN_MAX || len + 1 + SIG_B64 + 1 > cap)
        return -ENOSPC;
    char sig[SIG_B64 + 1];
    if (sign(key, enc, len, sig) < 0)
        return -ENOMEM;
    memcpy(out, enc, len);
    out[len] = '.';
    memcpy(out + len + 1, sig, SIG_B64 + 1);
    return (int)(len + 1 + SIG_B64);
}

/* A decimal unix time of 1-12 digits. */
static int parse_time(const char *s, size_t n, int64_t *out)
{
    if (n == 0 || n > 12)
        return -EINVAL;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* The five fields of a decoded payload. */
static int parse_payload(const char *p, size_t n, gw_token *t)
{
    const char *f[5];
    size_t fl[5];
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || p[i] == '|') {
            if (k == 5)
                return -EINVAL;
            f[k] = p + start;
            fl[k++] = i - start;
            start = i + 1;
        }
    }
    if (k != 5 || !field_ok(f[0], fl[0], 1, 1) ||
        !((fl[1] == 1 && f[1][0] == '*') || field_ok(f[1], fl[1], 1, 1)) ||
        parse_time(f[2], fl[2], &t->not_before) < 0 || parse_time(f[3], fl[3], &t->expires) < 0 ||
        !field_ok(f[4], fl[4], 8, 0))
        return -EINVAL;
    memcpy(t->user, f[0], fl[0]);
    t->user[fl[0]] = 0;
    memcpy(t->item, f[1], fl[1]);
    t->item[fl[1]] = 0;
    memcpy(t->nonce, f[4], fl[4]);
    t->nonce[fl[4]] = 0;
    return 0;
}

static int signed_by(const char *key, const char *tok, size_t body, const char *sig)
{
    char want[SIG_B64 + 1];
    if (!key || !key[0] || sign(key, tok, body, want) < 0)
        return 0; /* libcrypto failing refuses the token: fail closed */
    return CRYPTO_memcmp(want, sig, SIG_B64) == 0;
}

enum gw_token_verdict gw_token_check(const gw_token_keys *k, const char *tok, size_t len,
                                     const char *user, const char *item, int64_t now_s,
                                     gw_token *t)
{
    unsigned char payload[GW_TOKEN_MAX];
    memset(t, 0, sizeof *t);
    if (len > GW_TOKEN_MAX || len < 3 + 1 + SIG_B64 || memcmp(tok, "v1.", 3) != 0)
        return GW_TOKEN_MALFORMED;
    size_t body = len - SIG_B64 - 1; /* "v1." payload */
    if (tok[body] != '.')
        return GW_TOKEN_MALFORMED;
    for (size_t i = body + 1; i < len; i++)
        if (!b64url_char((unsigned char)tok[i]))
            return GW_TOKEN_MALFORMED;
    int pl = b64url_decode(tok + 3, body - 3, payload, sizeof payload);
    if (pl < 0 || parse_payload((const char *)payload, (size_t)pl, t) < 0)
        return GW_TOKEN_MALFORMED;
    if (!signed_by(k->key, tok, body, tok + body + 1) &&
        !signed_by(k->previous, tok, body, tok + body + 1))
        return GW_TOKEN_BAD_SIGNATURE;
    if (now_s < t->not_before)
        return GW_TOKEN_NOT_YET_VALID;
    if (now_s >= t->expires)
        return GW_TOKEN_EXPIRED;
    if (user && strcmp(t->user, user) != 0)
        return GW_TOKEN_WRONG_USER;
    if (item && strcmp(t->item, "*") != 0 && strcmp(t->item, item) != 0)
        return GW_TOKEN_WRONG_ITEM;
    return GW_TOKEN_VALID;
}

const char *gw_token_verdict_name(enum gw_token_verdict v)
{
    static const char *const names[] = {"valid",       "malformed", "bad_signature",
                                        "not_yet_valid", "expired", "wrong_user",
                                        "wrong_item"};
    return (unsigned)v < sizeof names / sizeof *names ? names[v] : "?";
}
