/*
 * test_admit_token.c - the admission token codec: a token round-trips; a
 * bad signature, another key, the wrong user or item, expiry, not-before,
 * a rotated key, every truncation, non-base64url characters and a signed
 * but ill-formed payload are each refused with their verdict.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

#include "gateway/admit_token.h"

#define KEY "k1-0123456789abcdef"
#define KEY2 "k2-fedcba9876543210"
#define NOW 1767225600

static int issue(const char *key, const char *user, const char *item, int64_t nbf, int64_t exp,
                 char *out)
{
    gw_token t = {.not_before = nbf, .expires = exp};
    snprintf(t.user, sizeof t.user, "%s", user);
    snprintf(t.item, sizeof t.item, "%s", item);
    snprintf(t.nonce, sizeof t.nonce, "n0nce-abc123");
    return gw_token_issue(key, &t, out, GW_TOKEN_MAX + 1);
}

static enum gw_token_verdict check(const char *key, const char *prev, const char *tok,
                                   const char *user, const char *item, int64_t now)
{
    gw_token_keys k = {key, prev};
    gw_token t;
    return gw_token_check(&k, tok, strlen(tok), user, item, now, &t);
}

static void test_round_trip(void **state)
{
    (void)state;
    char tok[GW_TOKEN_MAX + 1];
    int n = issue(KEY, "u-1", "demo", NOW - 10, NOW + 600, tok);
    assert_true(n > 0);
    assert_int_equal((size_t)n, strlen(tok));
    assert_memory_equal(tok, "v1.", 3);
    gw_token_keys k = {KEY, NULL};
    gw_token t;
    assert_int_equal(gw_token_check(&k, tok, (size_t)n, "u-1", "demo", NOW, &t), GW_TOKEN_VALID);
    assert_string_equal(t.user, "u-1");
    assert_string_equal(t.item, "demo");
    assert_int_equal(t.not_before, NOW - 10);
    assert_int_equal(t.expires, NOW + 600);
    assert_string_equal(t.nonce, "n0nce-abc123");
    /* any item with "*"; any user when the caller compares it itself */
    assert_int_equal(issue(KEY, "42", "*", NOW, NOW + 1, tok) > 0, 1);
    assert_int_equal(check(KEY, NULL, tok, "42", "other", NOW), GW_TOKEN_VALID);
    assert_int_equal(check(KEY, NULL, tok, NULL, NULL, NOW), GW_TOKEN_VALID);
}

/* The signature is HMAC-SHA256 over "v1." payload, as documented. */
static void test_signature_is_documented_hmac(void **state)
{
    (void)state;
    char tok[GW_TOKEN_MAX + 1], b64[64];
    issue(KEY, "u-1", "demo", NOW, NOW + 60, tok);
    const char *dot = strrchr(tok, '.');
    unsigned char md[32];
    unsigned int mdlen = sizeof md;
    HMAC(EVP_sha256(), KEY, (int)strlen(KEY), (const unsigned char *)tok, (size_t)(dot - tok), md,
         &mdlen);
    int bl = EVP_EncodeBlock((unsigned char *)b64, md, 32);
    for (int i = 0; i < bl; i++)
        b64[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : b64[i];
    while (bl && b64[bl - 1] == '=')
        b64[--bl] = 0;
    assert_string_equal(dot + 1, b64);
}

static void test_refusals(void **state)
{
    (void)state;
    char tok[GW_TOKEN_MAX + 1];
    issue(KEY, "u-1", "demo", NOW, NOW + 600, tok);
    assert_int_equal(check(KEY2, NULL, tok, "u-1", "demo", NOW), GW_TOKEN_BAD_SIGNATURE);
    assert_int_equal(check(KEY, NULL, tok, "u-2", "demo", NOW), GW_TOKEN_WRONG_USER);
    assert_int_equal(check(KEY, NULL, tok, "u-1", "other", NOW), GW_TOKEN_WRONG_ITEM);
    assert_int_equal(check(KEY, NULL, tok, "u-1", "demo", NOW - 1), GW_TOKEN_NOT_YET_VALID);
    assert_int_equal(check(KEY, NULL, tok, "u-1", "demo", NOW + 600), GW_TOKEN_EXPIRED);
    assert_int_equal(check(KEY, NULL, tok, "u-1", "demo", NOW + 599), GW_TOKEN_VALID);
    /* one signature character changed */
    char bad[GW_TOKEN_MAX + 1];
    strcpy(bad, tok);
    size_t n = strlen(bad);
    bad[n - 5] = bad[n - 5] == 'A' ? 'B' : 'A';
    assert_int_equal(check(KEY, NULL, bad, "u-1", "demo", NOW), GW_TOKEN_BAD_SIGNATURE);
    /* one payload character changed (another user, say) */
    strcpy(bad, tok);
    bad[4] = bad[4] == 'A' ? 'B' : 'A';
    assert_int_not_equal(check(KEY, NULL, bad, "u-1", "demo", NOW), GW_TOKEN_VALID);
}

static void test_rotation(void **state)
{
    (void)state;
    char old[GW_TOKEN_MAX + 1], cur[GW_TOKEN_MAX + 1];
    issue(KEY, "u-1", "demo", NOW, NOW + 600, old);
    issue(KEY2, "u-1", "demo", NOW, NOW + 600, cur);
    /* KEY2 is the new key, KEY the previous: both valid */
    assert_int_equal(check(KEY2, KEY, old, "u-1", "demo", NOW), GW_TOKEN_VALID);
    assert_int_equal(check(KEY2, KEY, cur, "u-1", "demo", NOW), GW_TOKEN_VALID);
    /* key_previous dropped: the old token is refused */
    assert_int_equal(check(KEY2, NULL, old, "u-1", "demo", NOW), GW_TOKEN_BAD_SIGNATURE);
    assert_int_equal(check(KEY2, "", old, "u-1", "demo", NOW), GW_TOKEN_BAD_SIGNATURE);
}

static void test_truncated_and_garbage(void **state)
{
    (void)state;
    char tok[GW_TOKEN_MAX + 1];
    int n = issue(KEY, "u-1", "demo", NOW, NOW + 600, tok);
    gw_token_keys k = {KEY, NULL};
    gw_token t;
    for (int len = 0; len < n; len++) {
        enum gw_token_verdict v = gw_token_check(&k, tok, (size_t)len, "u-1", "demo", NOW, &t);
        if (v != GW_TOKEN_MALFORMED && v != GW_TOKEN_BAD_SIGNATURE)
            fail_msg("prefix of %d characters: %s", len, gw_token_verdict_name(v));
    }
    static const char *const garbage[] = {
        "",
        "v1.",
        "v2.dTEK.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "v1.dS0x+GRlbW8.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "v1.dS0x/GRlbW8=.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "v1.@@@@.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "v1.A.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "v1.dTEK.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "Bearer v1.x.y",
    };
    for (size_t i = 0; i < sizeof garbage / sizeof *garbage; i++) {
        enum gw_token_verdict v = check(KEY, NULL, garbage[i], "u-1", "demo", NOW);
        if (v != GW_TOKEN_MALFORMED)
            fail_msg("'%s': %s", garbage[i], gw_token_verdict_name(v));
    }
    /* a non-base64url character in a valid token's signature */
    char bad[GW_TOKEN_MAX + 1];
    strcpy(bad, tok);
    bad[n - 1] = '+';
    assert_int_equal(check(KEY, NULL, bad, "u-1", "demo", NOW), GW_TOKEN_MALFORMED);
    /* over the maximum length */
    char longtok[GW_TOKEN_MAX + 2];
    memset(longtok, 'A', sizeof longtok - 1);
    memcpy(longtok, "v1.", 3);
    longtok[sizeof longtok - 1] = 0;
    assert_int_equal(check(KEY, NULL, longtok, "u-1", "demo", NOW), GW_TOKEN_MALFORMED);
}

/* Signed with the right key but not the documented payload: malformed. */
static void test_signed_garbage(void **state)
{
    (void)state;
    static const char *const payloads[] = {
        "u-1|demo|1|2",             /* four fields */
        "u-1|demo|1|2|nonce123|x",  /* six */
        "u 1|demo|1|2|nonce123",    /* a space in the user */
        "u-1|demo|-1|2|nonce123",   /* a sign */
        "u-1|demo|1|2|short",       /* nonce under 8 */
        "|demo|1|2|nonce123",       /* no user */
        "u-1|demo|1|1234567890123|nonce123", /* 13 digits */
    };
    for (size_t i = 0; i < sizeof payloads / sizeof *payloads; i++) {
        char tok[GW_TOKEN_MAX + 1] = "v1.", b64[256];
        int bl = EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)payloads[i],
                                 (int)strlen(payloads[i]));
        while (bl && b64[bl - 1] == '=')
            b64[--bl] = 0;
        for (int j = 0; j < bl; j++)
            b64[j] = b64[j] == '+' ? '-' : b64[j] == '/' ? '_' : b64[j];
        strcat(tok, b64);
        unsigned char md[32];
        unsigned int mdlen = sizeof md;
        HMAC(EVP_sha256(), KEY, (int)strlen(KEY), (unsigned char *)tok, strlen(tok), md, &mdlen);
        bl = EVP_EncodeBlock((unsigned char *)b64, md, 32);
        while (bl && b64[bl - 1] == '=')
            b64[--bl] = 0;
        for (int j = 0; j < bl; j++)
            b64[j] = b64[j] == '+' ? '-' : b64[j] == '/' ? '_' : b64[j];
        strcat(tok, ".");
        strcat(tok, b64);
        enum gw_token_verdict v = check(KEY, NULL, tok, "u-1", "demo", 1);
        if (v != GW_TOKEN_MALFORMED)
            fail_msg("'%s': %s", payloads[i], gw_token_verdict_name(v));
    }
}

static void test_issue_refuses_bad_fields(void **state)
{
    (void)state;
    char tok[GW_TOKEN_MAX + 1];
    assert_int_equal(issue(KEY, "", "demo", NOW, NOW + 1, tok), -EINVAL);
    assert_int_equal(issue(KEY, "a|b", "demo", NOW, NOW + 1, tok), -EINVAL);
    assert_int_equal(issue(KEY, "u", "de mo", NOW, NOW + 1, tok), -EINVAL);
    assert_int_equal(issue(KEY, "u", "demo", NOW, NOW, tok), -EINVAL);
    assert_int_equal(issue("", "u", "demo", NOW, NOW + 1, tok), -EINVAL);
    gw_token t = {.user = "u", .item = "demo", .not_before = NOW, .expires = NOW + 1,
                  .nonce = "n0nce-abc123"};
    char small[16];
    assert_int_equal(gw_token_issue(KEY, &t, small, sizeof small), -ENOSPC);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_signature_is_documented_hmac),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_rotation),
        cmocka_unit_test(test_truncated_and_garbage),
        cmocka_unit_test(test_signed_garbage),
        cmocka_unit_test(test_issue_refuses_bad_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
