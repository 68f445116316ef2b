/*
 * client_limits.c - per-client token buckets in fixed set-associative tables, and
 * the client address behind trusted proxies. The design is in client_limits.h.
 */
#include "client_limits.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "mix64.h"

typedef struct lset {
    pthread_mutex_t mu;
    uint64_t key[GW_LIMITS_WAYS]; /* 0 = empty */
    uint64_t tat[GW_LIMITS_WAYS]; /* ns */
} lset;

typedef struct ltab {
    lset *sets; /* NULL: scope off */
    size_t mask;
    uint64_t interval_ns;
    uint64_t tau_ns; /* burst * interval */
    _Atomic uint64_t evictions;
} ltab;

typedef struct proxy {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    unsigned prefix; /* bits */
} proxy;

struct gw_limits {
    ltab tab[GW_LIMIT_NSCOPES];
    uint64_t seed;
    proxy proxies[GW_LIMITS_MAX_PROXIES];
    size_t nproxies;
    int forwarded;
    char policy[256];
};

static const char *const scope_names[GW_LIMIT_NSCOPES] = {"user", "ip"};

static uint64_t key_hash(const gw_limits *l, const void *key, size_t len)
{
    const unsigned char *p = key;
    uint64_t h = 0xcbf29ce484222325ULL ^ l->seed;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    h = sk_mix64(h ^ len);
    return h ? h : 1;
}

static void policy_append(char *buf, size_t cap, const char *name, double rate, uint32_t burst)
{
    size_t n = strlen(buf);
    double w = ceil((double)burst / rate);
    snprintf(buf + n, cap - n, "%s\"%s\";q=%u;w=%llu", n ? ", " : "", name, burst,
             (unsigned long long)(w < 1 ? 1 : w));
}

static int proxy_parse(const char *s, proxy *p)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(s, '/');
    size_t hl = slash ? (size_t)(slash - s) : strlen(s);
    if (hl == 0 || hl >= sizeof host)
        return -EINVAL;
    memcpy(host, s, hl);
    host[hl] = 0;
    if (inet_pton(AF_INET, host, p->addr) == 1)
        p->family = AF_INET;
    else if (inet_pton(AF_INET6, host, p->addr) == 1)
        p->family = AF_INET6;
    else
        return -EINVAL;
    unsigned max = p->family == AF_INET ? 32 : 128;
    p->prefix = max;
    if (slash) {
        char *end;
        if (!isdigit((unsigned char)slash[1]))
            return -EINVAL;
        unsigned long v = strtoul(slash + 1, &end, 10);
        if (*end || v > max)
            return -EINVAL;
        p->prefix = (unsigned)v;
    }
    return 0;
}

int gw_limits_create(const gw_limits_cfg *c, gw_limits **out, char *err, size_t errlen)
{
    gw_limits *l = calloc(1, sizeof *l);
    if (!l)
        goto out_oom;
    if (getrandom(&l->seed, sizeof l->seed, 0) != sizeof l->seed)
        l->seed = sk_mix64((uint64_t)(uintptr_t)l);
    l->forwarded = c->forwarded;
    if (c->nproxies > GW_LIMITS_MAX_PROXIES) {
        snprintf(err, errlen, "[limits] trusted_proxies: more than %d entries",
                 GW_LIMITS_MAX_PROXIES);
        goto out_inval;
    }
    for (size_t i = 0; i < c->nproxies; i++) {
        if (proxy_parse(c->proxies[i], &l->proxies[i]) < 0) {
            snprintf(err, errlen, "[limits] trusted_proxies: '%s' is not an address or CIDR",
                     c->proxies[i]);
            goto out_inval;
        }
    }
    l->nproxies = c->nproxies;
    size_t nsets = 1;
    while (nsets * GW_LIMITS_WAYS < c->capacity)
        nsets <<= 1;
    for (int s = 0; s < GW_LIMIT_NSCOPES; s++) {
        double rate = c->rate[s];
        if (!(rate >= 0) || rate > 1e9 || (rate > 0 && c->burst[s] == 0)) {
            snprintf(err, errlen, "[limits] per_%s_rate or per_%s_burst out of range",
                     scope_names[s], scope_names[s]);
            goto out_inval;
        }
        if (rate == 0)
            continue;
        ltab *t = &l->tab[s];
        t->interval_ns = (uint64_t)ceil(1e9 / rate);
        t->tau_ns = t->interval_ns * c->burst[s];
        t->mask = nsets - 1;
        t->sets = calloc(nsets, sizeof *t->sets);
        if (!t->sets)
            goto out_oom;
        for (size_t i = 0; i < nsets; i++)
            pthread_mutex_init(&t->sets[i].mu, NULL);
        policy_append(l->policy, sizeof l->policy, scope_names[s], rate, c->burst[s]);
    }
    if (c->gateway_rate > 0 && c->gateway_burst > 0)
        policy_append(l->policy, sizeof l->policy, "gateway", c->gateway_rate, c->gateway_burst);
    *out = l;
    return 0;

out_oom:
    snprintf(err, errlen, "out of memory");
    gw_limits_destroy(l);
    return -ENOMEM;
out_inval:
    gw_limits_destroy(l);
    return -EINVAL;
}

void gw_limits_destroy(gw_limits *l)
{
    if (!l)
        return;
    for (int s = 0; s < GW_LIMIT_NSCOPES; s++) {
        ltab *t = &l->tab[s];
        if (!t->sets)
            continue;
        for (size_t i = 0; i <= t->mask; i++)
            pthread_mutex_destroy(&t->sets[i].mu);
        free(t->sets);
    }
    free(l);
}

int gw_limits_on(const gw_limits *l, enum gw_limit_scope s)
{
    return l && l->tab[s].sets != NULL;
}

/* *st from a bucket whose TAT is tat at now. */
static void fill_state(const ltab *t, uint64_t tat, uint64_t now, gw_limit_state *st)
{
    uint64_t used = tat > now ? tat - now : 0;
    st->remaining = used <= t->tau_ns ? (t->tau_ns - used) / t->interval_ns : 0;
    st->reset_s = (used + 999999999ULL) / 1000000000ULL;
}

int gw_limits_take(gw_limits *l, enum gw_limit_scope s, const void *key, size_t len,
                   uint64_t now_ns, gw_limit_state *st)
{
    memset(st, 0, sizeof *st);
    if (!gw_limits_on(l, s))
        return 1;
    ltab *t = &l->tab[s];
    uint64_t h = key_hash(l, key, len);
    lset *set = &t->sets[(h >> 32 ^ h) & t->mask];
    pthread_mutex_lock(&set->mu);
    int w = -1, victim = 0;
    for (int i = 0; i < GW_LIMITS_WAYS; i++) {
        if (set->key[i] == h) {
            w = i;
            break;
        }
        if (set->key[victim] && (!set->key[i] || set->tat[i] < set->tat[victim]))
            victim = i;
    }
    if (w < 0) { /* forgotten or new: a fresh bucket */
        w = victim;
        if (set->key[w] && set->tat[w] > now_ns)
            atomic_fetch_add_explicit(&t->evictions, 1, memory_order_relaxed);
        set->key[w] = h;
        set->tat[w] = now_ns;
    }
    uint64_t tat = set->tat[w];
    uint64_t next = (tat > now_ns ? tat : now_ns) + t->interval_ns;
    int ok = next - now_ns <= t->tau_ns;
    if (ok)
        set->tat[w] = tat = next;
    pthread_mutex_unlock(&set->mu);
    fill_state(t, tat, now_ns, st);
    if (!ok)
        st->wait_ns = next - now_ns - t->tau_ns;
    return ok;
}

uint64_t gw_limits_evictions(const gw_limits *l, enum gw_limit_scope s)
{
    return atomic_load_explicit(&l->tab[s].evictions, memory_order_relaxed);
}

/* family and the address bytes of sa, an IPv4-mapped IPv6 one as IPv4.
 * 0 for anything that is not an IP address. */
static int addr_bytes(const struct sockaddr *sa, const uint8_t **bytes)
{
    if (sa->sa_family == AF_INET) {
        *bytes = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
        return AF_INET;
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a)) {
            *bytes = a->s6_addr + 12;
            return AF_INET;
        }
        *bytes = a->s6_addr;
        return AF_INET6;
    }
    return 0;
}

int gw_limits_trusted(const gw_limits *l, const struct sockaddr *sa)
{
    const uint8_t *b;
    int fam = addr_bytes(sa, &b);
    for (size_t i = 0; fam && i < l->nproxies; i++) {
        const proxy *p = &l->proxies[i];
        if (p->family != fam)
            continue;
        unsigned full = p->prefix / 8, rest = p->prefix % 8;
        if (memcmp(p->addr, b, full) != 0)
            continue;
        if (rest && ((p->addr[full] ^ b[full]) & (uint8_t)(0xff << (8 - rest))))
            continue;
        return 1;
    }
    return 0;
}

/* An address as a proxy header writes it: 192.0.2.1, 192.0.2.1:port,
 * 2001:db8::1, [2001:db8::1] or [2001:db8::1]:port, optionally quoted. */
static int parse_hop(const char *s, size_t n, struct sockaddr_storage *out)
{
    char buf[INET6_ADDRSTRLEN + 1];
    while (n && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n >= 2 && s[0] == '"' && s[n - 1] == '"')
        s++, n -= 2;
    if (n && s[0] == '[') {
        const char *end = memchr(s, ']', n);
        if (!end)
            return -EINVAL;
        size_t rest = n - (size_t)(end + 1 - s);
        if (rest && end[1] != ':')
            return -EINVAL;
        n = (size_t)(end - s - 1);
        s++;
    } else {
        const char *colon = memchr(s, ':', n);
        if (colon && !memchr(colon + 1, ':', n - (size_t)(colon + 1 - s)))
            n = (size_t)(colon - s); /* IPv4:port */
    }
    if (n == 0 || n >= sizeof buf)
        return -EINVAL;
    memcpy(buf, s, n);
    buf[n] = 0;
    memset(out, 0, sizeof *out);
    struct sockaddr_in *v4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, buf, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, buf, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        return 0;
    }
    return -EINVAL;
}

/* The address of one Forwarded element: its for= parameter. */
static int parse_forwarded(const char *s, size_t n, struct sockaddr_storage *out)
{
    while (n) {
        const char *semi = memchr(s, ';', n);
        size_t pl = semi ? (size_t)(semi - s) : n;
        const char *p = s;
        size_t k = pl;
        while (k && (*p == ' ' || *p == '\t'))
            p++, k--;
        if (k > 4 && strncasecmp(p, "for=", 4) == 0)
            return parse_hop(p + 4, k - 4, out);
        if (!semi)
            break;
        s = semi + 1;
        n -= pl + 1;
    }
    return -EINVAL;
}

static void copy_addr(const struct sockaddr *sa, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof *out);
    if (sa->sa_family == AF_INET)
        memcpy(out, sa, sizeof(struct sockaddr_in));
    else if (sa->sa_family == AF_INET6)
        memcpy(out, sa, sizeof(struct sockaddr_in6));
    else
        out->ss_family = sa->sa_family;
}

void gw_limits_client(const gw_limits *l, const struct sockaddr *peer, const char *hdr,
                      struct sockaddr_storage *client)
{
    copy_addr(peer, client);
    if (!hdr || !gw_limits_trusted(l, peer))
        return;
    size_t end = strlen(hdr);
    for (;;) {
        size_t start = end;
        while (start && hdr[start - 1] != ',')
            start--;
        struct sockaddr_storage hop;
        int rc = l->forwarded ? parse_forwarded(hdr + start, end - start, &hop)
                              : parse_hop(hdr + start, end - start, &hop);
        if (rc < 0)
            return; /* the last trusted hop stands for the client */
        *client = hop;
        if (!gw_limits_trusted(l, (struct sockaddr *)&hop) || start == 0)
            return;
        end = start - 1;
    }
}

const char *gw_limits_policy(const gw_limits *l)
{
    return l->policy;
}

/* v in decimal at p (room for 20 digits); returns the end. */
static char *put_u64(char *p, uint64_t v)
{
    char tmp[20];
    int k = 0;
    do
        tmp[k++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (k)
        *p++ = tmp[--k];
    return p;
}

/* Formatted by hand: every admitted purchase appends one or two of these,
 * and snprintf cost 1,700 instructions each (callgrind). */
void gw_limits_state_append(char *buf, size_t cap, const char *name, const gw_limit_state *st)
{
    size_t n = strlen(buf), nl = strlen(name);
    char item[2 + 1 + 64 + 3 + 20 + 3 + 20 + 1], *p = item;
    if (nl > 64)
        return;
    if (n) {
        memcpy(p, ", ", 2);
        p += 2;
    }
    *p++ = '"';
    memcpy(p, name, nl);
    p += nl;
    memcpy(p, "\";r=", 4);
    p = put_u64(p + 4, st->remaining);
    memcpy(p, ";t=", 3);
    p = put_u64(p + 3, st->reset_s);
    size_t il = (size_t)(p - item);
    if (n + il + 1 > cap)
        return; /* it does not fit: left out whole, as snprintf's truncation was not */
    memcpy(buf + n, item, il);
    buf[n + il] = 0;
}
