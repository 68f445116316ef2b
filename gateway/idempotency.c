/*
 * idempotency.c - the request id of a keyed purchase, and the table of keys
 * and bodies. The design is in idempotency.h.
 */
#include "idempotency.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "sk.h"

typedef struct iset {
    pthread_mutex_t mu;
    uint64_t key[GW_IDEM_WAYS]; /* 0 = empty */
    uint64_t body[GW_IDEM_WAYS];
    uint64_t expires[GW_IDEM_WAYS]; /* ns */
} iset;

struct gw_idem {
    iset *sets;
    size_t mask;
    uint64_t ttl_ns;
    _Atomic uint64_t full;
};

int gw_idem_create(size_t capacity, uint64_t ttl_ns, gw_idem **out)
{
    if (!capacity || !ttl_ns)
        return -EINVAL;
    gw_idem *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    size_t n = 1;
    while (n * GW_IDEM_WAYS < capacity)
        n <<= 1;
    t->sets = calloc(n, sizeof *t->sets);
    if (!t->sets) {
        free(t);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        pthread_mutex_init(&t->sets[i].mu, NULL);
    t->mask = n - 1;
    t->ttl_ns = ttl_ns;
    *out = t;
    return 0;
}

void gw_idem_destroy(gw_idem *t)
{
    if (!t)
        return;
    for (size_t i = 0; i <= t->mask; i++)
        pthread_mutex_destroy(&t->sets[i].mu);
    free(t->sets);
    free(t);
}

int gw_idem_key_valid(const char *key, size_t len)
{
    return sk_id_valid(key, len); /* the charset and length of ids */
}

#define MD_LEN 32 /* SHA-256 */

/* SHA-256 of tag, a and b each followed by a 0 byte (ids hold none), then
 * clen bytes of c; a and b are ids of at most 64 characters, tag a literal. */
static void digest(const char *tag, const char *a, const char *b, const char *c, size_t clen,
                   unsigned char md[MD_LEN])
{
    char buf[64 + 3 * 65 + GW_IDEM_KEY_MAX];
    size_t n = 0, l;
    const char *parts[3] = {tag, a, b};
    for (int i = 0; i < 3; i++) {
        l = strnlen(parts[i], 64);
        memcpy(buf + n, parts[i], l);
        n += l;
        buf[n++] = 0;
    }
    if (c) {
        l = clen < GW_IDEM_KEY_MAX ? clen : GW_IDEM_KEY_MAX;
        memcpy(buf + n, c, l);
        n += l;
    }
    EVP_Digest(buf, n, md, NULL, EVP_sha256(), NULL);
}

void gw_idem_request_id(const char *user, const char *item, const char *key, size_t len,
                        unsigned gen, uint8_t id[16])
{
    unsigned char md[MD_LEN];
    char tag[48];
    snprintf(tag, sizeof tag, "seckill-idempotency-v1/%u", gen);
    digest(tag, user, item, key, len, md);
    memcpy(id, md, 16);
    id[6] = (uint8_t)((id[6] & 0x0f) | 0x40); /* version 4 */
    id[8] = (uint8_t)((id[8] & 0x3f) | 0x80); /* RFC 4122 variant */
}

static uint64_t fp(const unsigned char *md)
{
    uint64_t v;
    memcpy(&v, md, sizeof v);
    return v ? v : 1;
}

int gw_idem_claim(gw_idem *t, const char *key, size_t len, const char *user, const char *item,
                  uint64_t now_ns)
{
    unsigned char md[MD_LEN];
    digest("seckill-idempotency-key", "", "", key, len, md);
    uint64_t k = fp(md);
    digest("seckill-idempotency-body", user, item, NULL, 0, md);
    uint64_t body = fp(md);
    iset *s = &t->sets[(k >> 32 ^ k) & t->mask];
    int rc = -ENOSPC, freeway = -1;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < GW_IDEM_WAYS; i++) {
        int live = s->key[i] && s->expires[i] > now_ns;
        if (live && s->key[i] == k) {
            rc = s->body[i] == body ? 1 : -EEXIST;
            goto out_unlock;
        }
        if (!live && freeway < 0)
            freeway = i;
    }
    if (freeway >= 0) {
        s->key[freeway] = k;
        s->body[freeway] = body;
        s->expires[freeway] = now_ns + t->ttl_ns;
        rc = 0;
    } else {
        atomic_fetch_add_explicit(&t->full, 1, memory_order_relaxed);
    }
out_unlock:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

uint64_t gw_idem_full(const gw_idem *t)
{
    return atomic_load_explicit(&t->full, memory_order_relaxed);
}
