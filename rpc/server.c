/*
 * server.c - the rpc server: one epoll loop thread, non-blocking sockets.
 *
 * Connection states (loop thread moves between them); the handshake itself
 * (HELLO, CHALLENGE, AUTH, HELLO_OK) and the frame MAC are auth.c's:
 *
 *   accepted  --HELLO---------------> challenged (CHALLENGE sent, or held
 *                                                 until the address's turn)
 *   challenged --AUTH, right proof--> open      (sealed HELLO_OK sent, on_open;
 *                                                frames may now reach max_frame)
 *   accepted/challenged --anything else--> draining (ERROR sent, after a
 *                                                 delay when a proof was wrong)
 *   draining  --ERROR written-------> SHUT_WR, then closed at the peer's EOF
 *                                     or after one heartbeat timeout
 *   not open  --handshake deadline, or evicted by a newer connection while
 *                the pre-auth budget is full--> closed
 *   open      --a frame whose MAC fails--> closed (-EKEYREJECTED)
 *   any       --EOF, socket error, malformed frame, heartbeat silence,
 *               write queue overflow, rpc_conn_close, stop--> closed
 *
 * Only open connections are ever shown to the handlers, and on_close is
 * called exactly once for each connection that on_open saw.
 *
 * Two budgets: at most max_unauth connections are in their handshake at
 * once (a new one evicts the oldest, so a flood of silent or dripping peers
 * keeps a slot for at most a moment and a real peer that answers at once
 * gets through), and at most max_conns are open. Nobody without the secret
 * can take an open slot.
 *
 * Throttling: a wrong proof is answered after delay(f), f the failures from
 * that source (IPv4 address, IPv6 /64, all of loopback as one, all Unix
 * peers as one) within the last minute, delay doubling from auth_delay_ms up
 * to auth_delay_max_ms; the same source's next CHALLENGE waits its turn too,
 * one per delay, so parallel connections do not multiply the guesses. The
 * table of sources is bounded (the least recently failed is forgotten).
 *
 * TLS (a server with tls_cert and tls_key; tls.h): a connection starts in a
 * TLS handshake, stepped by rpc__tls_handshake on the loop thread, its epoll
 * interest set to what OpenSSL waits for (EPOLLOUT only while it wants to
 * write); nothing of the rpc handshake is read before it is done. It runs
 * while the connection is in the pre-auth list, under the same handshake
 * deadline and eviction as the rest of the handshake, so slow or stalled TLS
 * handshakes hold a slot no longer than silent plain ones and cannot keep a
 * real worker out. A record can carry more than the read buffer takes: the
 * rest waits inside OpenSSL where epoll cannot see it, so such a connection
 * is marked `more` and read again before the loop sleeps.
 *
 * Threads: the loop owns the connection list, the read buffers and every
 * close. Other threads touch a connection only through rpc_conn_send (under
 * the connection's lock, which guards the transport, write queue, `closed`
 * and the EPOLLOUT arming; with TLS the loop reads under it too, since an
 * SSL object takes one thread at a time) and through `doom`, an atomic close
 * request the loop picks up after an eventfd wake-up. A connection's memory lives until its last
 * reference is dropped: the loop holds one while it is open.
 */
#include "rpc.h"
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#define READS_PER_EVENT 16 /* then let other connections run */

/* Until the handshake is done a peer may send at most this much per frame,
 * so an unauthenticated connection costs a few KiB, never max_frame. */
#define PRE_AUTH_MAX_FRAME RPC_AUTH_MAX_FRAME
#define THROTTLE_SLOTS 256
#define THROTTLE_FORGET_MS 60000 /* failures older than this are forgiven */
#define HELD_MAX 128             /* a held CHALLENGE or ERROR */

typedef struct src_key {
    uint8_t b[17]; /* family tag + up to 16 address bytes */
} src_key;

typedef struct throttle_slot {
    src_key key;
    int used;
    uint32_t fails;
    uint64_t last_fail;
    uint64_t next_ok; /* the source's next CHALLENGE not before this */
} throttle_slot;

struct rpc_conn {
    pthread_mutex_t lock; /* guards tp, closed, out_armed, wq, peer_max, authed_send */
    rpc__tp tp;           /* the socket, and its SSL with TLS */
    int closed;
    int authed_send; /* the session is up: every frame queued from now on is sealed */
    int out_armed;
    rpc__wq wq;
    uint32_t peer_max;

    rpc_server *srv;
    atomic_int refs;
    atomic_int doom;        /* 0, or a close reason asked for by any thread */
    _Atomic(void *) data;

    /* auth: the handshake on the loop thread; once open, sealing under lock
     * and opening on the loop thread (auth.h) */
    rpc_auth *auth;

    /* loop thread only */
    rpc__rbuf rb;
    int tls_hs; /* the TLS handshake is not done yet */
    int more;   /* decrypted bytes wait inside OpenSSL: read again soon */
    int authed;
    int draining;
    int shut;
    uint64_t last_rx;
    uint64_t drain_deadline;
    uint64_t hs_deadline;      /* the handshake must be done by then */
    src_key src;
    uint8_t held[HELD_MAX];    /* a handshake reply waiting for release_at */
    size_t held_len;
    uint64_t release_at;
    int held_refusal;          /* the held reply is a refusal: drain after it */
    rpc_conn *prev, *next;
    rpc_conn *uprev, *unext;   /* the pre-auth list, newest first */
    int unlisted;              /* out of the pre-auth list (open, or evicted) */
};

struct rpc_server {
    rpc_server_config cfg; /* listen and secret point at the copies below */
    char *listen;
    uint8_t *secret;
    char *unix_path;       /* set when we bound a Unix socket (unlinked on destroy) */
    int port;
    int lfd;
    int epfd;
    int evfd;
    uint64_t accept_paused_until; /* loop only: out of descriptors, listener off epoll */
    pthread_t thread;
    int started;
    int joined;
    atomic_int stopping;
    rpc_conn *conns; /* loop thread only */
    rpc_conn *unauth_head, *unauth_tail; /* loop thread only: newest .. oldest */
    uint32_t nunauth, nauthed;           /* loop thread only */
    throttle_slot throttle[THROTTLE_SLOTS]; /* loop thread only */
    rpc__tls *tls;                          /* NULL: plain */
    uint32_t nmore;                         /* loop thread only: connections with `more` */

    _Atomic uint64_t accepted, auth_ok, auth_failed, malformed, overflowed, timed_out, refused,
        frames_in, open, mac_failed, hs_timed_out, evicted, throttled, tls_failed;
};

#define STAT_INC(s, f) atomic_fetch_add_explicit(&(s)->f, 1, memory_order_relaxed)

static uint64_t silence_limit(const rpc_server *s)
{
    return (uint64_t)s->cfg.heartbeat_ms * s->cfg.heartbeat_misses;
}

static void wake(rpc_server *s)
{
    uint64_t one = 1;
    ssize_t n = write(s->evfd, &one, sizeof(one));
    (void)n; /* a full counter already means "wake up" */
}

static void doom(rpc_conn *c, int reason)
{
    int expected = 0;
    if (atomic_compare_exchange_strong(&c->doom, &expected, reason))
        wake(c->srv);
}

/* ---- references ---- */

void rpc_conn_ref(rpc_conn *c)
{
    atomic_fetch_add(&c->refs, 1);
}

void rpc_conn_unref(rpc_conn *c)
{
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&c->lock);
    rpc__wq_release(&c->wq);
    rpc__rbuf_release(&c->rb);
    rpc_auth_destroy(c->auth);
    free(c);
}

void rpc_conn_set_data(rpc_conn *c, void *data)
{
    atomic_store(&c->data, data);
}

void *rpc_conn_data(const rpc_conn *c)
{
    return atomic_load(&((rpc_conn *)c)->data);
}

/* ---- sending (any thread) ---- */

/* Caller holds c->lock and c is not closed. */
static int send_locked(rpc_conn *c, const rpc_frame *f)
{
    int rc = rpc__wq_push(&c->wq, f, c->peer_max, c->authed_send ? c->auth : NULL);

    if (rc == -ENOBUFS) {
        STAT_INC(c->srv, overflowed);
        doom(c, -ENOBUFS);
        return rc;
    }
    if (rc)
        return rc;
    rc = rpc__wq_flush(&c->wq, &c->tp);
    if (rc) {
        doom(c, rc);
        return rc;
    }
    if (c->wq.len && !c->out_armed) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
        if (epoll_ctl(c->srv->epfd, EPOLL_CTL_MOD, c->tp.fd, &ev) == 0)
            c->out_armed = 1;
    }
    return 0;
}

int rpc_conn_send(rpc_conn *c, const rpc_frame *f)
{
    int rc;

    if (!c || !f)
        return -EINVAL;
    pthread_mutex_lock(&c->lock);
    rc = c->closed || !c->authed_send ? -ENOTCONN : send_locked(c, f);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

void rpc_conn_close(rpc_conn *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    if (!c->closed)
        doom(c, -ECONNABORTED);
    pthread_mutex_unlock(&c->lock);
}

/* ---- loop thread ---- */

static void unauth_unlink(rpc_server *s, rpc_conn *c)
{
    if (c->unlisted)
        return;
    c->unlisted = 1;
    if (c->uprev)
        c->uprev->unext = c->unext;
    else
        s->unauth_head = c->unext;
    if (c->unext)
        c->unext->uprev = c->uprev;
    else
        s->unauth_tail = c->uprev;
    c->uprev = c->unext = NULL;
    s->nunauth--;
}

static void conn_close(rpc_server *s, rpc_conn *c, int reason)
{
    pthread_mutex_lock(&c->lock);
    if (c->closed) {
        pthread_mutex_unlock(&c->lock);
        return;
    }
    c->closed = 1;
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->tp.fd, NULL);
    rpc__tp_close(&c->tp);
    rpc__wq_release(&c->wq);
    pthread_mutex_unlock(&c->lock);
    rpc__rbuf_release(&c->rb);

    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    atomic_fetch_sub(&s->open, 1);
    if (c->authed)
        s->nauthed--;
    if (c->more)
        s->nmore--;
    c->more = 0;
    unauth_unlink(s, c);

    if (c->authed && s->cfg.handlers.on_close)
        s->cfg.handlers.on_close(s->cfg.handlers.arg, c, reason);
    rpc_conn_unref(c);
}

/* After an ERROR went out on a refused connection: half-close so the peer
 * reads ERROR and then EOF (closing with unread input would send a RST,
 * which can destroy the ERROR in flight). */
static void maybe_shut(rpc_conn *c)
{
    if (c->draining && !c->shut && !c->held_len && c->wq.len == 0) {
        rpc__tp_shutdown(&c->tp);
        shutdown(c->tp.fd, SHUT_WR);
        c->shut = 1;
    }
}

/* Queue handshake bytes (never sealed: the session is not up) and write. */
static void send_raw(rpc_conn *c, const void *p, size_t n)
{
    pthread_mutex_lock(&c->lock);
    if (rpc__wq_push_raw(&c->wq, p, n) == 0 && rpc__wq_flush(&c->wq, &c->tp) == 0 && c->wq.len &&
        !c->out_armed) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
        if (epoll_ctl(c->srv->epfd, EPOLL_CTL_MOD, c->tp.fd, &ev) == 0)
            c->out_armed = 1;
    }
    maybe_shut(c);
    pthread_mutex_unlock(&c->lock);
}

/* Stop reading c and send out (an ERROR) now, then drain. */
static void refuse_now(rpc_server *s, rpc_conn *c, const void *out, size_t n, uint64_t now)
{
    c->draining = 1;
    c->drain_deadline = now + silence_limit(s);
    send_raw(c, out, n);
}

/* ---- throttling by source ---- */

static void source_of(int fd, src_key *k)
{
    struct sockaddr_storage sa;
    socklen_t len = sizeof(sa);

    memset(k, 0, sizeof(*k));
    if (getpeername(fd, (struct sockaddr *)&sa, &len) < 0)
        return;
    if (sa.ss_family == AF_INET) {
        const uint8_t *a = (const uint8_t *)&((struct sockaddr_in *)&sa)->sin_addr;
        k->b[0] = 4;
        if (a[0] != 127) /* loopback is one host whatever 127/8 address it uses */
            memcpy(k->b + 1, a, 4);
    } else if (sa.ss_family == AF_INET6) {
        const uint8_t *a = ((struct sockaddr_in6 *)&sa)->sin6_addr.s6_addr;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        static const uint8_t loop6[16] = {[15] = 1};
        if (!memcmp(a, mapped, 12)) {
            k->b[0] = 4;
            if (a[12] != 127)
                memcpy(k->b + 1, a + 12, 4);
        } else if (memcmp(a, loop6, 16) == 0) {
            k->b[0] = 4; /* ::1 is the same loopback host */
        } else {
            k->b[0] = 6;
            memcpy(k->b + 1, a, 8); /* one host owns a /64 */
        }
    } else {
        k->b[0] = 1; /* Unix peers: one source */
    }
}

static uint64_t auth_delay(const rpc_server *s, uint32_t fails)
{
    uint64_t d = s->cfg.auth_delay_ms;

    if (fails == 0)
        return 0;
    for (uint32_t i = 1; i < fails && d < s->cfg.auth_delay_max_ms; i++)
        d *= 2;
    return d < s->cfg.auth_delay_max_ms ? d : s->cfg.auth_delay_max_ms;
}

/* The slot of k, forgiving old failures; NULL when k has none (and !create). */
static throttle_slot *throttle_slot_of(rpc_server *s, const src_key *k, uint64_t now, int create)
{
    throttle_slot *victim = NULL;

    for (int i = 0; i < THROTTLE_SLOTS; i++) {
        throttle_slot *t = &s->throttle[i];
        if (t->used && now - t->last_fail > THROTTLE_FORGET_MS)
            t->used = 0;
        if (t->used && memcmp(&t->key, k, sizeof(*k)) == 0)
            return t;
        if (!victim || !t->used || (victim->used && t->last_fail < victim->last_fail))
            victim = t;
    }
    if (!create)
        return NULL;
    memset(victim, 0, sizeof(*victim));
    victim->used = 1;
    victim->key = *k;
    victim->last_fail = now;
    return victim;
}

/* ---- the handshake ---- */

static void open_conn(rpc_server *s, rpc_conn *c, const uint8_t *out, size_t n)
{
    const rpc_hello *h = rpc_auth_hello(c->auth);

    unauth_unlink(s, c);
    c->authed = 1;
    s->nauthed++;
    pthread_mutex_lock(&c->lock);
    c->peer_max = h->max_frame ? h->max_frame : RPC_DEFAULT_MAX_FRAME;
    if (c->peer_max < RPC_HEADER_SIZE + 64)
        c->peer_max = RPC_HEADER_SIZE + 64;
    pthread_mutex_unlock(&c->lock);
    send_raw(c, out, n); /* HELLO_OK, sealed by auth.c as s2c number 0 */
    pthread_mutex_lock(&c->lock);
    c->authed_send = 1;
    pthread_mutex_unlock(&c->lock);
    c->rb.max_frame = s->cfg.max_frame;
    STAT_INC(s, auth_ok);
    if (s->cfg.handlers.on_open)
        s->cfg.handlers.on_open(s->cfg.handlers.arg, c, h);
}

/* Feed one handshake frame from c's read buffer at *off. Returns 0, or the
 * reason c must be closed now. */
static int handshake(rpc_server *s, rpc_conn *c, size_t *off, uint64_t now)
{
    uint8_t out[RPC_AUTH_OUT_MAX];
    size_t used = 0, n = 0;
    int had_hello = rpc_auth_hello(c->auth) != NULL;
    int rc = rpc_auth_feed(c->auth, c->rb.buf + *off, c->rb.len - *off, &used, out, sizeof(out),
                           &n);

    *off += used;
    if (used)
        STAT_INC(s, frames_in);
    if (rc == RPC_AUTH_MORE) {
        if (!n)
            return 0;
        if (!had_hello) {
            /* a CHALLENGE: a source that failed recently waits its turn */
            throttle_slot *t = throttle_slot_of(s, &c->src, now, 0);
            if (t && t->fails && n <= sizeof(c->held)) {
                uint64_t at = t->next_ok > now ? t->next_ok : now;
                t->next_ok = at + auth_delay(s, t->fails);
                if (at > now) {
                    STAT_INC(s, throttled);
                    memcpy(c->held, out, n);
                    c->held_len = n;
                    c->release_at = at;
                    c->held_refusal = 0;
                    return 0;
                }
            }
        }
        send_raw(c, out, n);
        return 0;
    }
    if (rc == RPC_AUTH_DONE) {
        if (s->nauthed >= s->cfg.max_conns) {
            rpc_frame e = {.type = RPC_ERROR};
            size_t en = 0;
            e.u.error.code = EBUSY;
            e.u.error.message = rpc_str("too many connections");
            STAT_INC(s, refused);
            if (rpc_encode(&e, out, sizeof(out), &en) == 0)
                refuse_now(s, c, out, en, now);
            return 0;
        }
        open_conn(s, c, out, n);
        return 0;
    }
    if (!n) {
        STAT_INC(s, malformed); /* no reply for a frame that does not parse */
        return rc;
    }
    STAT_INC(s, auth_failed);
    if (rc == -EACCES) {
        /* a wrong proof: a guess at the secret. Answer late, and later with
         * each failure from the same source. */
        throttle_slot *t = throttle_slot_of(s, &c->src, now, 1);
        t->fails++;
        t->last_fail = now;
        uint64_t at = now + auth_delay(s, t->fails);
        if (t->next_ok < at)
            t->next_ok = at;
        if (n <= sizeof(c->held)) {
            c->draining = 1; /* read nothing more */
            c->drain_deadline = at + silence_limit(s);
            memcpy(c->held, out, n);
            c->held_len = n;
            c->release_at = at;
            c->held_refusal = 1;
            return 0;
        }
    }
    refuse_now(s, c, out, n, now);
    return 0;
}

/* Decode and dispatch every complete frame in c's read buffer.
 * Returns 0, or the reason c must be closed. */
static int dispatch(rpc_server *s, rpc_conn *c, uint64_t now)
{
    size_t off = 0;
    rpc_frame f;
    int rc;

    if (c->held_len && !c->held_refusal && c->rb.len) {
        /* it spoke before its CHALLENGE: no client does that */
        STAT_INC(s, auth_failed);
        return -EPROTO;
    }
    while (!c->draining && !c->held_len && !atomic_load(&c->doom)) {
        if (!c->authed) {
            size_t before = off;
            rc = handshake(s, c, &off, now);
            if (rc)
                return rc;
            if (off == before)
                break; /* incomplete, or waiting */
            continue;
        }
        size_t start = off;
        rc = rpc__rbuf_next(&c->rb, &off, &f);
        if (rc == -EAGAIN)
            break;
        if (rc) {
            STAT_INC(s, malformed);
            return rc;
        }
        if (rpc_auth_open(c->auth, c->rb.buf + start, off - start) != 0) {
            STAT_INC(s, mac_failed);
            return -EKEYREJECTED;
        }
        STAT_INC(s, frames_in);
        if (f.type == RPC_PING) {
            rpc_frame pong = {.type = RPC_PONG, .call_id = f.call_id};
            pong.u.ping.value = f.u.ping.value;
            rpc_conn_send(c, &pong);
            continue;
        }
        if (f.type == RPC_PONG)
            continue;
        if (s->cfg.handlers.on_frame)
            s->cfg.handlers.on_frame(s->cfg.handlers.arg, c, &f);
    }
    if (c->draining) {
        c->rb.len = 0; /* a refused peer's later frames are never looked at */
        return 0;
    }
    return rpc__rbuf_consume(&c->rb, off);
}

/* One step of the TLS handshake; epoll then waits for what OpenSSL waits
 * for. Returns 0, or the reason c must be closed. */
static int tls_step(rpc_server *s, rpc_conn *c)
{
    pthread_mutex_lock(&c->lock);
    int rc = rpc__tls_handshake(&c->tp);
    if (rc >= 0) {
        int want_out = rc == RPC__TLS_WANT_WRITE;
        if (rc == RPC__TLS_DONE)
            c->tls_hs = 0;
        if (want_out != c->out_armed) {
            struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
            if (epoll_ctl(s->epfd, EPOLL_CTL_MOD, c->tp.fd, &ev) == 0)
                c->out_armed = want_out;
        }
        rc = 0;
    }
    pthread_mutex_unlock(&c->lock);
    if (rc)
        STAT_INC(s, tls_failed);
    return rc;
}

/* Read once; with TLS under the lock that serializes the SSL object. */
static long conn_read(rpc_conn *c)
{
    if (!c->tp.ssl)
        return rpc__rbuf_read(&c->rb, &c->tp);
    pthread_mutex_lock(&c->lock);
    long n = rpc__rbuf_read(&c->rb, &c->tp);
    pthread_mutex_unlock(&c->lock);
    return n;
}

/* Decrypted bytes wait inside OpenSSL (never for a plain socket). */
static int conn_pending(rpc_conn *c)
{
    if (!c->tp.ssl)
        return 0;
    pthread_mutex_lock(&c->lock);
    int p = rpc__tp_pending(&c->tp);
    pthread_mutex_unlock(&c->lock);
    return p;
}

static void conn_event(rpc_server *s, rpc_conn *c, uint32_t events, uint64_t now)
{
    int rc = 0;

    if (c->tls_hs) {
        if (events & EPOLLIN)
            c->last_rx = now;
        rc = tls_step(s, c);
        if (rc)
            goto out_close;
        if (c->tls_hs)
            return;
        events = EPOLLIN; /* the first rpc bytes may have come with the last TLS ones */
    }
    if (events & EPOLLOUT) {
        pthread_mutex_lock(&c->lock);
        rc = rpc__wq_flush(&c->wq, &c->tp);
        if (!rc && !c->wq.len && c->out_armed) {
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
            epoll_ctl(s->epfd, EPOLL_CTL_MOD, c->tp.fd, &ev);
            c->out_armed = 0;
        }
        if (!rc)
            maybe_shut(c);
        pthread_mutex_unlock(&c->lock);
        if (rc)
            goto out_close;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        for (int i = 0; i < READS_PER_EVENT; i++) {
            long n = conn_read(c);
            if (n == -EAGAIN)
                break;
            if (n <= 0) {
                rc = (int)n; /* 0: the peer closed */
                goto out_close;
            }
            c->last_rx = now;
            rc = dispatch(s, c, now);
            if (rc)
                goto out_close;
            if (atomic_load(&c->doom))
                break;
        }
        if (!c->more && !c->draining && conn_pending(c)) {
            c->more = 1;
            s->nmore++;
        }
    }
    return;

out_close:
    conn_close(s, c, rc);
}

static void accept_all(rpc_server *s, uint64_t now)
{
    for (;;) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* the listener stays readable: take it off epoll for a moment
                 * instead of spinning (sweep puts it back) */
                epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->lfd, NULL);
                s->accept_paused_until = now + 100;
            }
            return;
        }
        STAT_INC(s, accepted);
        if (s->nunauth >= s->cfg.max_unauth && s->unauth_tail) {
            /* the budget for handshakes is full: the oldest gives way, so a
             * peer that answers promptly always gets its turn. Doomed, not
             * closed here: an event of this same epoll batch may still name
             * it, so only sweep may free it. */
            rpc_conn *old = s->unauth_tail;
            STAT_INC(s, evicted);
            unauth_unlink(s, old);
            doom(old, -ETIMEDOUT);
        }
        rpc_conn *c = calloc(1, sizeof(*c));
        rpc_auth_config ac = {.side = RPC_AUTH_SERVER, .secret = s->secret,
                              .secret_len = s->cfg.secret_len, .max_frame = s->cfg.max_frame,
                              .heartbeat_ms = s->cfg.heartbeat_ms};
        if (!c || rpc_auth_create(&ac, &c->auth) != 0) {
            free(c);
            close(fd);
            continue;
        }
        pthread_mutex_init(&c->lock, NULL);
        c->tp.fd = fd;
        c->srv = s;
        c->peer_max = RPC_DEFAULT_MAX_FRAME;
        c->wq.limit = s->cfg.max_write_queue;
        c->rb.max_frame = PRE_AUTH_MAX_FRAME;
        c->last_rx = now;
        c->hs_deadline = now + s->cfg.handshake_timeout_ms;
        source_of(fd, &c->src);
        atomic_init(&c->refs, 1);
        if (s->unix_path == NULL) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        if (s->tls) {
            c->tls_hs = 1;
            if (rpc__tls_attach(s->tls, &c->tp, NULL) != 0)
                c->tp.ssl = NULL;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if ((s->tls && !c->tp.ssl) || epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            rpc__tp_close(&c->tp);
            pthread_mutex_destroy(&c->lock);
            rpc_auth_destroy(c->auth);
            free(c);
            continue;
        }
        c->next = s->conns;
        if (s->conns)
            s->conns->prev = c;
        s->conns = c;
        c->unext = s->unauth_head;
        if (s->unauth_head)
            s->unauth_head->uprev = c;
        else
            s->unauth_tail = c;
        s->unauth_head = c;
        s->nunauth++;
        atomic_fetch_add(&s->open, 1);
    }
}

/* Close what was asked to close, what went silent, handshakes past their
 * deadline, and refused connections whose peer never hung up; send held
 * handshake replies whose time came. */
static void sweep(rpc_server *s, uint64_t now)
{
    rpc_conn *next;

    if (s->accept_paused_until && now >= s->accept_paused_until) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &s->lfd};
        epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->lfd, &ev);
        s->accept_paused_until = 0;
    }

    for (rpc_conn *c = s->conns; c; c = next) {
        next = c->next;
        int reason = atomic_load(&c->doom);
        if (reason) {
            conn_close(s, c, reason);
        } else if (c->held_len && now >= c->release_at) {
            size_t n = c->held_len;
            c->held_len = 0;
            if (c->held_refusal) {
                c->drain_deadline = now + silence_limit(s);
                send_raw(c, c->held, n);
            } else {
                send_raw(c, c->held, n);
                c->last_rx = now; /* the wait was ours, not the peer's silence */
                int rc = dispatch(s, c, now); /* what arrived meanwhile */
                if (rc)
                    conn_close(s, c, rc);
            }
        } else if (c->draining && !c->held_len && now >= c->drain_deadline) {
            conn_close(s, c, -EACCES);
        } else if (!c->authed && !c->draining && now >= c->hs_deadline) {
            STAT_INC(s, hs_timed_out);
            conn_close(s, c, -ETIMEDOUT);
        } else if (!c->held_len && now - c->last_rx > silence_limit(s)) {
            STAT_INC(s, timed_out);
            conn_close(s, c, -ETIMEDOUT);
        }
    }
}

static void *loop_main(void *arg)
{
    rpc_server *s = arg;
    struct epoll_event evs[64];
    int tick = (int)(s->cfg.heartbeat_ms / 4);
    uint64_t next_sweep = 0;

    if (tick < 5)
        tick = 5;
    if (tick > 50)
        tick = 50; /* held handshake replies and deadlines are due to the tick */
    while (!atomic_load(&s->stopping)) {
        int n = epoll_wait(s->epfd, evs, 64, s->nmore ? 0 : tick);
        uint64_t now = rpc__now_ms();
        int woken = 0;

        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &s->lfd) {
                accept_all(s, now);
            } else if (p == &s->evfd) {
                uint64_t v;
                ssize_t r = read(s->evfd, &v, sizeof(v));
                (void)r;
                woken = 1;
            } else {
                conn_event(s, p, evs[i].events, now);
            }
        }
        if (s->nmore) {
            rpc_conn *next;
            for (rpc_conn *c = s->conns; c; c = next) {
                next = c->next;
                if (!c->more)
                    continue;
                c->more = 0;
                s->nmore--;
                conn_event(s, c, EPOLLIN, now);
            }
        }
        if (woken || now >= next_sweep) {
            sweep(s, now);
            next_sweep = now + (uint64_t)tick;
        }
    }
    while (s->conns)
        conn_close(s, s->conns, -ESHUTDOWN);
    return NULL;
}

/* ---- lifecycle ---- */

void rpc_server_config_init(rpc_server_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->max_frame = RPC_DEFAULT_MAX_FRAME;
    cfg->max_write_queue = RPC__DEFAULT_WQ;
    cfg->heartbeat_ms = 1000;
    cfg->heartbeat_misses = 3;
    cfg->max_conns = 1024;
    cfg->max_unauth = 64;
    cfg->handshake_timeout_ms = 2000;
    cfg->auth_delay_ms = 100;
    cfg->auth_delay_max_ms = 1000;
}

static int listen_on(rpc_server *s)
{
    struct sockaddr_storage sa;
    socklen_t salen = 0;
    int rc = rpc__addr_parse(s->listen, &sa, &salen);

    if (rc)
        return rc;
    s->lfd = rpc__socket(&sa);
    if (s->lfd < 0)
        return s->lfd;
    if (sa.ss_family == AF_UNIX) {
        const char *path = ((struct sockaddr_un *)&sa)->sun_path;
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
            /* replace a socket file left behind by a process that died, never
             * one a live server still answers on */
            int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            int live = probe >= 0 && connect(probe, (struct sockaddr *)&sa, salen) == 0;
            if (probe >= 0)
                close(probe);
            if (live)
                return -EADDRINUSE;
            unlink(path);
        }
        s->unix_path = strdup(path);
        if (!s->unix_path)
            return -ENOMEM;
    } else {
        int one = 1;
        setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    }
    if (bind(s->lfd, (struct sockaddr *)&sa, salen) < 0) {
        rc = -errno;
        free(s->unix_path);
        s->unix_path = NULL;
        return rc;
    }
    if (listen(s->lfd, 128) < 0)
        return -errno;
    if (sa.ss_family != AF_UNIX) {
        struct sockaddr_storage b;
        socklen_t blen = sizeof(b);
        if (getsockname(s->lfd, (struct sockaddr *)&b, &blen) < 0)
            return -errno;
        s->port = ntohs(b.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&b)->sin6_port
                                                 : ((struct sockaddr_in *)&b)->sin_port);
    }
    return 0;
}

int rpc_server_create(const rpc_server_config *cfg, rpc_server **out)
{
    rpc_server *s = NULL;
    int rc;

    if (!cfg || !out || !cfg->listen || !cfg->secret || cfg->secret_len == 0 ||
        cfg->secret_len > RPC_SECRET_MAX || cfg->max_frame < RPC_HEADER_SIZE + 256 ||
        cfg->max_frame > RPC_MAX_FRAME_LIMIT || cfg->heartbeat_ms == 0 ||
        cfg->heartbeat_misses == 0 || cfg->max_write_queue < cfg->max_frame || cfg->max_conns == 0 ||
        cfg->max_unauth == 0 || cfg->handshake_timeout_ms == 0 ||
        cfg->auth_delay_max_ms < cfg->auth_delay_ms)
        return -EINVAL;
    int tls = (cfg->tls_cert && *cfg->tls_cert) || (cfg->tls_key && *cfg->tls_key) ||
              (cfg->tls_ca && *cfg->tls_ca);
    if (tls && strncmp(cfg->listen, "tcp:", 4) != 0)
        return -EINVAL; /* TLS applies to tcp: listeners only */

    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->lfd = s->epfd = s->evfd = -1;
    s->cfg = *cfg;
    s->listen = strdup(cfg->listen);
    s->secret = malloc(cfg->secret_len);
    if (!s->listen || !s->secret) {
        rc = -ENOMEM;
        goto out_free;
    }
    memcpy(s->secret, cfg->secret, cfg->secret_len);
    s->cfg.listen = s->listen;
    s->cfg.secret = s->secret;
    s->cfg.tls_cert = s->cfg.tls_key = s->cfg.tls_ca = NULL; /* read now, not kept */
    if (tls) {
        char err[512];
        rc = rpc__tls_server_create(cfg->tls_cert, cfg->tls_key, cfg->tls_ca, &s->tls, err,
                                    sizeof(err));
        if (rc)
            goto out_free;
    }

    rc = listen_on(s);
    if (rc)
        goto out_free;
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    s->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->epfd < 0 || s->evfd < 0) {
        rc = -errno;
        goto out_free;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &s->lfd};
    struct epoll_event wev = {.events = EPOLLIN, .data.ptr = &s->evfd};
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->lfd, &ev) < 0 ||
        epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->evfd, &wev) < 0) {
        rc = -errno;
        goto out_free;
    }
    *out = s;
    return 0;

out_free:
    rpc_server_destroy(s);
    return rc;
}

int rpc_server_start(rpc_server *s)
{
    int rc;

    if (!s)
        return -EINVAL;
    if (s->started)
        return -EALREADY;
    rc = pthread_create(&s->thread, NULL, loop_main, s);
    if (rc)
        return -rc;
    s->started = 1;
    return 0;
}

void rpc_server_stop(rpc_server *s)
{
    if (!s || !s->started || s->joined)
        return;
    atomic_store(&s->stopping, 1);
    wake(s);
    pthread_join(s->thread, NULL);
    s->joined = 1;
}

void rpc_server_destroy(rpc_server *s)
{
    if (!s)
        return;
    rpc_server_stop(s);
    /* never started: connections may not exist (accept runs on the loop only) */
    if (s->lfd >= 0)
        close(s->lfd);
    if (s->unix_path)
        unlink(s->unix_path);
    if (s->epfd >= 0)
        close(s->epfd);
    if (s->evfd >= 0)
        close(s->evfd);
    free(s->unix_path);
    free(s->listen);
    free(s->secret);
    rpc__tls_destroy(s->tls);
    free(s);
}

int rpc_server_port(const rpc_server *s)
{
    if (!s)
        return -EINVAL;
    return s->unix_path ? -EAFNOSUPPORT : s->port;
}

void rpc_server_get_stats(const rpc_server *s, rpc_server_stats *out)
{
    rpc_server *m = (rpc_server *)s;

    out->accepted = atomic_load(&m->accepted);
    out->auth_ok = atomic_load(&m->auth_ok);
    out->auth_failed = atomic_load(&m->auth_failed);
    out->malformed = atomic_load(&m->malformed);
    out->overflowed = atomic_load(&m->overflowed);
    out->timed_out = atomic_load(&m->timed_out);
    out->refused = atomic_load(&m->refused);
    out->frames_in = atomic_load(&m->frames_in);
    out->open = atomic_load(&m->open);
    out->mac_failed = atomic_load(&m->mac_failed);
    out->handshake_timeouts = atomic_load(&m->hs_timed_out);
    out->evicted = atomic_load(&m->evicted);
    out->throttled = atomic_load(&m->throttled);
    out->tls_failed = atomic_load(&m->tls_failed);
}
