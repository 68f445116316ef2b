/*
 * admit_token.h - signed admission tokens: the shop's login or captcha
 * service, which holds a key shared with the gateways, gives each buyer a
 * token; with [admission] require_token a purchase (and the buyer's order
 * endpoints) needs one. The gateway keeps no state for them.
 *
 * Format (docs/admission-tokens.md has it with an example and a Python
 * issuer):
 *
 *   token   = "v1." payload "." signature
 *   payload = base64url(user "|" item "|" not_before "|" expires "|" nonce)
 *   signature = base64url(HMAC-SHA256(key, "v1." payload))
 *
 * base64url without padding (RFC 4648 §5). user: a user id (1-64 characters
 * of [A-Za-z0-9_.:-]); item: an item id, or "*" for every item; not_before and
 * expires: unix seconds in decimal, valid while not_before <= now < expires;
 * nonce: 8-64 characters of [A-Za-z0-9_-], so no two tokens are alike. The
 * whole token is at most GW_TOKEN_MAX characters.
 *
 * Two keys may be active (key and key_previous): a token signed with either
 * is valid, so a rotation is "new key in, old key to key_previous, wait out
 * the token lifetime, drop key_previous". Signatures are compared in constant
 * time.
 */
#ifndef SECKILL_GW_ADMIT_TOKEN_H
#define SECKILL_GW_ADMIT_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#define GW_TOKEN_MAX 512
#define GW_TOKEN_ID_MAX 64

typedef struct gw_token {
    char user[GW_TOKEN_ID_MAX + 1];
    char item[GW_TOKEN_ID_MAX + 1]; /* "*": any item */
    int64_t not_before, expires;    /* unix seconds */
    char nonce[GW_TOKEN_ID_MAX + 1];
} gw_token;

enum gw_token_verdict {
    GW_TOKEN_VALID,
    GW_TOKEN_MALFORMED,     /* not v1.X.Y, not base64url, a bad field, too long */
    GW_TOKEN_BAD_SIGNATURE, /* no active key signed it */
    GW_TOKEN_NOT_YET_VALID,
    GW_TOKEN_EXPIRED,
    GW_TOKEN_WRONG_USER,
    GW_TOKEN_WRONG_ITEM,
};

/* The active keys: key (required) and key_previous (NULL or "" = none). */
typedef struct gw_token_keys {
    const char *key;
    const char *previous;
} gw_token_keys;

/* Write t signed with key into out (cap bytes, a string). Returns its length,
 * -EINVAL for a bad field (t as described above), -ENOSPC, -ENOMEM when
 * libcrypto cannot sign. */
int gw_token_issue(const char *key, const gw_token *t, char *out, size_t cap);

/* Check tok (len bytes) at now_s for user and item (NULL: not checked; the
 * caller compares t->user itself). The first failing check decides: form,
 * signature, time, user, item. OUT: *t, the fields (when well formed). */
enum gw_token_verdict gw_token_check(const gw_token_keys *k, const char *tok, size_t len,
                                     const char *user, const char *item, int64_t now_s,
                                     gw_token *t);

const char *gw_token_verdict_name(enum gw_token_verdict v);

#endif
