/*
 * io.c - buffers, clock, backoff and addresses shared by server and client.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* ---- write queue ---- */

/* Room for size more bytes at the tail. */
static int wq_reserve(rpc__wq *q, size_t size)
{
    if (q->len + size > q->limit)
        return -ENOBUFS;
    if (q->head && q->head + q->len + size > q->cap) {
        memmove(q->buf, q->buf + q->head, q->len);
        q->head = 0;
    }
    if (q->len + size > q->cap) {
        size_t cap = q->cap ? q->cap : 4096;
        while (cap < q->len + size)
            cap *= 2;
        uint8_t *nb = realloc(q->buf, cap);
        if (!nb)
            return -ENOMEM;
        q->buf = nb;
        q->cap = cap;
    }
    return 0;
}

int rpc__wq_push(rpc__wq *q, const rpc_frame *f, uint32_t peer_max, rpc_auth *seal)
{
    static const uint8_t zero_mac[RPC_MAC_SIZE];
    rpc_frame g = *f;
    size_t size;
    int rc;

    g.mac = seal ? zero_mac : NULL;
    rc = rpc_encoded_size(&g, &size);
    if (rc)
        return rc;
    if (size > peer_max)
        return -EMSGSIZE;
    rc = wq_reserve(q, size);
    if (rc)
        return rc;
    uint8_t *p = q->buf + q->head + q->len;
    rc = rpc_encode(&g, p, q->cap - q->head - q->len, NULL);
    if (!rc && seal)
        rc = rpc_auth_seal(seal, p, size);
    if (rc)
        return rc;
    q->len += size;
    return 0;
}

int rpc__wq_push_raw(rpc__wq *q, const void *p, size_t n)
{
    int rc = wq_reserve(q, n);

    if (rc)
        return rc;
    memcpy(q->buf + q->head + q->len, p, n);
    q->len += n;
    return 0;
}

int rpc__wq_flush(rpc__wq *q, rpc__tp *t)
{
    while (q->len) {
        long n = rpc__tp_write(t, q->buf + q->head, q->len);
        if (n == -EAGAIN)
            return 0;
        if (n < 0)
            return (int)n;
        q->head += (size_t)n;
        q->len -= (size_t)n;
    }
    q->head = 0;
    if (q->cap > (256u << 10)) {
        /* a burst is over: give the memory back */
        free(q->buf);
        q->buf = NULL;
        q->cap = 0;
    }
    return 0;
}

void rpc__wq_release(rpc__wq *q)
{
    free(q->buf);
    q->buf = NULL;
    q->head = q->len = q->cap = 0;
}

/* ---- read buffer ---- */

long rpc__rbuf_read(rpc__rbuf *r, rpc__tp *t)
{
    if (!r->buf) {
        r->buf = malloc(RPC__RBUF_INITIAL);
        if (!r->buf)
            return -ENOMEM;
        r->cap = RPC__RBUF_INITIAL;
    }
    if (r->len == r->cap)
        return -ENOBUFS; /* unreachable: consume makes room for the frame in progress */
    long n = rpc__tp_read(t, r->buf + r->len, r->cap - r->len);
    if (n > 0)
        r->len += (size_t)n;
    return n;
}

int rpc__rbuf_next(rpc__rbuf *r, size_t *off, rpc_frame *f)
{
    size_t used = 0;
    int rc;

    if (!r->buf)
        return -EAGAIN; /* nothing read yet */
    rc = rpc_decode(r->buf + *off, r->len - *off, r->max_frame, f, &used);

    if (rc == 0)
        *off += used;
    return rc;
}

int rpc__rbuf_consume(rpc__rbuf *r, size_t off)
{
    uint32_t need = 0;

    if (off) {
        memmove(r->buf, r->buf + off, r->len - off);
        r->len -= off;
    }
    if (r->len == 0 && r->cap > RPC__RBUF_INITIAL) {
        uint8_t *nb = realloc(r->buf, RPC__RBUF_INITIAL);
        if (nb) {
            r->buf = nb;
            r->cap = RPC__RBUF_INITIAL;
        }
        return 0;
    }
    /* the header of the front frame was accepted by rpc__rbuf_next (-EAGAIN
     * only comes after it), so need <= max_frame */
    if (rpc_peek_header(r->buf, r->len, r->max_frame, &need) == 0 && need > r->cap) {
        uint8_t *nb = realloc(r->buf, need);
        if (!nb)
            return -ENOMEM;
        r->buf = nb;
        r->cap = need;
    }
    return 0;
}

void rpc__rbuf_release(rpc__rbuf *r)
{
    free(r->buf);
    r->buf = NULL;
    r->len = r->cap = 0;
}

/* ---- clock, backoff ---- */

uint64_t rpc__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint32_t rpc__backoff_ms(uint32_t attempt, uint32_t min, uint32_t max, uint64_t *rng)
{
    uint64_t d = min ? min : 1;

    if (max < d)
        max = (uint32_t)d;
    for (uint32_t i = 0; i < attempt && d < max; i++)
        d *= 2;
    if (d > max)
        d = max;
    /* xorshift64 */
    uint64_t x = *rng ? *rng : 0x2545F4914F6CDD1DULL;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *rng = x;
    return (uint32_t)(d / 2 + x % (d - d / 2 + 1)); /* in [d/2, d] */
}

/* ---- addresses ---- */

int rpc__addr_parse(const char *addr, struct sockaddr_storage *sa, socklen_t *salen)
{
    memset(sa, 0, sizeof(*sa));
    if (!addr)
        return -EINVAL;
    if (strncmp(addr, "unix:", 5) == 0) {
        struct sockaddr_un *un = (struct sockaddr_un *)sa;
        const char *path = addr + 5;
        size_t n = strlen(path);
        if (n == 0 || n >= sizeof(un->sun_path))
            return -EINVAL;
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, path, n + 1);
        *salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
        return 0;
    }
    if (strncmp(addr, "tcp:", 4) != 0)
        return -EINVAL;

    char host[256];
    const char *hp = addr + 4;
    const char *colon = strrchr(hp, ':');
    if (!colon || colon == hp || colon[1] == '\0')
        return -EINVAL;
    size_t hn = (size_t)(colon - hp);
    if (hp[0] == '[') {
        if (hn < 3 || hp[hn - 1] != ']')
            return -EINVAL;
        hp++;
        hn -= 2;
    }
    if (hn >= sizeof(host))
        return -EINVAL;
    memcpy(host, hp, hn);
    host[hn] = '\0';

    char *end = NULL;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno || *end || port > 65535)
        return -EINVAL;

    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0 || !res)
        return -EHOSTUNREACH;
    memcpy(sa, res->ai_addr, res->ai_addrlen);
    *salen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

int rpc__socket(const struct sockaddr_storage *sa)
{
    int fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -errno;
    if (sa->ss_family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return fd;
}
