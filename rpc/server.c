/*
 * server.c - the rpc server: one epoll loop thread, non-blocking sockets.
 *
 * Connection states (loop thread moves between them):
 *
 *   accepted --HELLO, right secret--> open      (HELLO_OK sent, on_open; frames
 *                                                may now reach max_frame, not 1 KiB)
 *   accepted --anything else--------> draining  (ERROR sent, input ignored)
 *   draining --ERROR written--------> SHUT_WR, then closed at the peer's EOF
 *                                     or after one heartbeat timeout
 *   any      --EOF, socket error, malformed frame, heartbeat silence,
 *              write queue overflow, rpc_conn_close, stop--> closed
 *
 * Only open connections are ever shown to the handlers, and on_close is
 * called exactly once for each connection that on_open saw.
 *
 * Threads: the loop owns the connection list, the read buffers and every
 * close. Other threads touch a connection only through rpc_conn_send (under
 * the connection's lock, which guards fd, write queue, `closed` and the
 * EPOLLOUT arming) and through `doom`, an atomic close request the loop picks
 * up after an eventfd wake-up. A connection's memory lives until its last
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

/* Until HELLO is accepted a peer may send at most this much per frame (the
 * largest HELLO is 796 bytes), so an unauthenticated connection costs a few
 * KiB, never max_frame. */
#define PRE_AUTH_MAX_FRAME 1024

struct rpc_conn {
    pthread_mutex_t lock; /* guards fd, closed, out_armed, wq, peer_max */
    int fd;
    int closed;
    int out_armed;
    rpc__wq wq;
    uint32_t peer_max;

    rpc_server *srv;
    atomic_int refs;
    atomic_int doom;        /* 0, or a close reason asked for by any thread */
    _Atomic(void *) data;

    /* loop thread only */
    rpc__rbuf rb;
    int authed;
    int draining;
    int shut;
    uint64_t last_rx;
    uint64_t drain_deadline;
    rpc_conn *prev, *next;
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

    _Atomic uint64_t accepted, auth_ok, auth_failed, malformed, overflowed, timed_out, refused,
        frames_in, open;
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
    int rc = rpc__wq_push(&c->wq, f, c->peer_max);

    if (rc == -ENOBUFS) {
        STAT_INC(c->srv, overflowed);
        doom(c, -ENOBUFS);
        return rc;
    }
    if (rc)
        return rc;
    rc = rpc__wq_flush(&c->wq, c->fd);
    if (rc) {
        doom(c, rc);
        return rc;
    }
    if (c->wq.len && !c->out_armed) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
        if (epoll_ctl(c->srv->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
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
    rc = c->closed ? -ENOTCONN : send_locked(c, f);
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

static void conn_close(rpc_server *s, rpc_conn *c, int reason)
{
    pthread_mutex_lock(&c->lock);
    if (c->closed) {
        pthread_mutex_unlock(&c->lock);
        return;
    }
    c->closed = 1;
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
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

    if (c->authed && s->cfg.handlers.on_close)
        s->cfg.handlers.on_close(s->cfg.handlers.arg, c, reason);
    rpc_conn_unref(c);
}

/* After an ERROR went out on a refused connection: half-close so the peer
 * reads ERROR and then EOF (closing with unread input would send a RST,
 * which can destroy the ERROR in flight). */
static void maybe_shut(rpc_conn *c)
{
    if (c->draining && !c->shut && c->wq.len == 0) {
        shutdown(c->fd, SHUT_WR);
        c->shut = 1;
    }
}

static void refuse(rpc_server *s, rpc_conn *c, const rpc_frame *f, uint64_t now)
{
    rpc_frame e = {.type = RPC_ERROR, .call_id = f ? f->call_id : 0};

    e.u.error.code = EACCES;
    e.u.error.message = rpc_str(f && f->type == RPC_HELLO ? "authentication failed"
                                                          : "first frame must be HELLO");
    STAT_INC(s, auth_failed);
    c->draining = 1;
    c->drain_deadline = now + silence_limit(s);
    pthread_mutex_lock(&c->lock);
    send_locked(c, &e);
    maybe_shut(c);
    pthread_mutex_unlock(&c->lock);
}

static void handshake(rpc_server *s, rpc_conn *c, const rpc_frame *f, uint64_t now)
{
    if (f->type != RPC_HELLO ||
        !rpc_secret_equal(f->u.hello.secret.ptr, f->u.hello.secret.len, s->secret,
                          s->cfg.secret_len)) {
        refuse(s, c, f, now);
        return;
    }

    rpc_frame ok = {.type = RPC_HELLO_OK, .call_id = f->call_id};
    ok.u.hello_ok.max_frame = s->cfg.max_frame;
    ok.u.hello_ok.heartbeat_ms = s->cfg.heartbeat_ms;

    pthread_mutex_lock(&c->lock);
    c->peer_max = f->u.hello.max_frame ? f->u.hello.max_frame : RPC_DEFAULT_MAX_FRAME;
    if (c->peer_max < RPC_HEADER_SIZE + 64)
        c->peer_max = RPC_HEADER_SIZE + 64;
    send_locked(c, &ok);
    pthread_mutex_unlock(&c->lock);

    c->authed = 1;
    c->rb.max_frame = s->cfg.max_frame;
    STAT_INC(s, auth_ok);
    if (s->cfg.handlers.on_open)
        s->cfg.handlers.on_open(s->cfg.handlers.arg, c, &f->u.hello);
}

/* Decode and dispatch every complete frame in c's read buffer.
 * Returns 0, or the reason c must be closed. */
static int dispatch(rpc_server *s, rpc_conn *c, uint64_t now)
{
    size_t off = 0;
    rpc_frame f;
    int rc;

    while (!c->draining && !atomic_load(&c->doom)) {
        rc = rpc__rbuf_next(&c->rb, &off, &f);
        if (rc == -EAGAIN)
            break;
        if (rc) {
            STAT_INC(s, malformed);
            return rc;
        }
        STAT_INC(s, frames_in);
        if (!c->authed) {
            handshake(s, c, &f, now);
            continue;
        }
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

static void conn_event(rpc_server *s, rpc_conn *c, uint32_t events, uint64_t now)
{
    int rc = 0;

    if (events & EPOLLOUT) {
        pthread_mutex_lock(&c->lock);
        rc = rpc__wq_flush(&c->wq, c->fd);
        if (!rc && !c->wq.len && c->out_armed) {
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
            epoll_ctl(s->epfd, EPOLL_CTL_MOD, c->fd, &ev);
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
            long n = rpc__rbuf_read(&c->rb, c->fd);
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
        if (atomic_load(&s->open) >= s->cfg.max_conns) {
            STAT_INC(s, refused);
            close(fd);
            continue;
        }
        rpc_conn *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
        pthread_mutex_init(&c->lock, NULL);
        c->fd = fd;
        c->srv = s;
        c->peer_max = RPC_DEFAULT_MAX_FRAME;
        c->wq.limit = s->cfg.max_write_queue;
        c->rb.max_frame = PRE_AUTH_MAX_FRAME;
        c->last_rx = now;
        atomic_init(&c->refs, 1);
        if (s->unix_path == NULL) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            pthread_mutex_destroy(&c->lock);
            free(c);
            continue;
        }
        c->next = s->conns;
        if (s->conns)
            s->conns->prev = c;
        s->conns = c;
        atomic_fetch_add(&s->open, 1);
    }
}

/* Close what was asked to close, what went silent, and refused connections
 * whose peer never hung up. */
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
        } else if (c->draining && now >= c->drain_deadline) {
            conn_close(s, c, -EACCES);
        } else if (now - c->last_rx > silence_limit(s)) {
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
    if (tick > 250)
        tick = 250;
    while (!atomic_load(&s->stopping)) {
        int n = epoll_wait(s->epfd, evs, 64, tick);
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
        cfg->heartbeat_misses == 0 || cfg->max_write_queue < cfg->max_frame || cfg->max_conns == 0)
        return -EINVAL;

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
}
