/*
 * client.c - the rpc client: one I/O thread keeps one connection up.
 *
 * The I/O thread loops over two states:
 *
 *   down: wait until next_try, then dial (connect with timeout, then the
 *         handshake of auth.c: HELLO, CHALLENGE, AUTH, HELLO_OK, whose proof
 *         and MAC show the server knows the secret). Failure: next_try =
 *         now + backoff(attempt++).
 *         Success: up, attempt = 0, wake everyone waiting for readiness.
 *   up:   poll the socket (POLLOUT only while the write queue has bytes) and
 *         an eventfd; read and dispatch frames; PING every heartbeat_ms;
 *         on EOF, a socket error, a malformed frame or silence for
 *         heartbeat_ms * misses go down, failing every pending call with
 *         -ECONNRESET, and retry after backoff(0).
 *
 * A call registers a `call` (on the caller's stack, with its own condition
 * variable) in a small hash by call id, then sends. The I/O thread, on a
 * frame whose call id is registered, copies the frame into a buffer the reply
 * owns, decodes it there and signals the caller. Frames nobody waits for go
 * to on_frame.
 *
 * Every frame sent while up is sealed (auth.c) as it is queued, under `mu`,
 * so sequence numbers follow the order of the bytes; every frame received is
 * checked on the I/O thread before it is looked at.
 *
 * TLS (tls_ca set, tcp: addresses; tls.h): dial runs the TLS handshake
 * after connect, verifying the server's certificate against tls_ca and the
 * address's HOST, and only then sends HELLO: a server that fails
 * verification never sees a byte of the rpc handshake. Reads that OpenSSL
 * can serve from a record it already holds are done before polling again.
 *
 * Locking: `mu` guards the transport (socket and SSL: with TLS the I/O
 * thread reads under it too, an SSL object takes one thread at a time), the
 * write queue, the session
 * (auth, for sealing), the state and the call table; any thread sends by encoding into the queue
 * and writing what the socket takes (non-blocking), waking the I/O thread when bytes remain.
 * Handlers run on the I/O thread without `mu`.
 */
#include "rpc.h"
#include "internal.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define CALL_BUCKETS 64

struct call {
    uint64_t id;
    rpc_frame *reply;
    int done;
    int err;
    pthread_cond_t cv;
    struct call *next;
};

struct rpc_client {
    rpc_client_config cfg; /* strings point at the copies below */
    char *addr;
    char *worker_id;
    char *group;
    uint8_t *secret;
    rpc__tls *tls;  /* NULL: plain */
    char host[256]; /* the address's HOST, checked against the certificate */

    pthread_mutex_t mu;
    pthread_cond_t state_cv; /* up/down/last_err changes, stop */
    rpc__tp tp;              /* tp.fd -1 while down */
    int up;
    int last_err;
    int stopping;
    rpc__wq wq;
    rpc_auth *auth;          /* the session while up (sealing under mu, opening on the I/O thread) */
    uint32_t peer_max;
    uint64_t next_id;
    struct call *calls[CALL_BUCKETS];

    /* I/O thread only */
    rpc__rbuf rb;
    uint64_t rng;

    int evfd;
    pthread_t thread;

    _Atomic uint64_t connects, failures, disconnects, timeouts, malformed, mac_failed;
};

#define STAT_INC(c, f) atomic_fetch_add_explicit(&(c)->f, 1, memory_order_relaxed)

static void wake(rpc_client *c)
{
    uint64_t one = 1;
    ssize_t n = write(c->evfd, &one, sizeof(one));
    (void)n;
}

static struct timespec abs_ms(uint64_t deadline_ms)
{
    struct timespec ts = {(time_t)(deadline_ms / 1000), (long)(deadline_ms % 1000) * 1000000};
    return ts;
}

static void cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

static int wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t deadline_ms)
{
    struct timespec ts = abs_ms(deadline_ms);
    return pthread_cond_timedwait(cv, mu, &ts) == ETIMEDOUT ? -ETIMEDOUT : 0;
}

/* ---- call table (under mu) ---- */

static void call_insert(rpc_client *c, struct call *k)
{
    struct call **b = &c->calls[k->id % CALL_BUCKETS];
    k->next = *b;
    *b = k;
}

static struct call *call_take(rpc_client *c, uint64_t id)
{
    for (struct call **p = &c->calls[id % CALL_BUCKETS]; *p; p = &(*p)->next) {
        if ((*p)->id == id) {
            struct call *k = *p;
            *p = k->next;
            return k;
        }
    }
    return NULL;
}

static void calls_fail_all(rpc_client *c, int err)
{
    for (int i = 0; i < CALL_BUCKETS; i++) {
        while (c->calls[i]) {
            struct call *k = c->calls[i];
            c->calls[i] = k->next;
            k->err = err;
            k->done = 1;
            pthread_cond_signal(&k->cv);
        }
    }
}

/* ---- sending (under mu) ---- */

/* Write what the queue holds without blocking; the rest is the I/O
 * thread's. Returns rpc__wq_flush's result. */
static int flush_locked(rpc_client *c)
{
    int rc = rpc__wq_flush(&c->wq, &c->tp);
    if (rc < 0 || c->wq.len)
        wake(c); /* an error is for the I/O thread to notice; leftovers need POLLOUT */
    return rc;
}

static int send_locked(rpc_client *c, const rpc_frame *f)
{
    int rc;

    if (c->tp.fd < 0 || !c->auth)
        return -ENOTCONN;
    rc = rpc__wq_push(&c->wq, f, c->peer_max, c->auth);
    if (rc)
        return rc;
    (void)flush_locked(c);
    return 0;
}

int rpc_client_send(rpc_client *c, const rpc_frame *f)
{
    int rc;

    if (!c || !f)
        return -EINVAL;
    pthread_mutex_lock(&c->mu);
    rc = c->up ? send_locked(c, f) : -ENOTCONN;
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int rpc_client_queue(rpc_client *c, const rpc_frame *f)
{
    int rc;

    if (!c || !f)
        return -EINVAL;
    pthread_mutex_lock(&c->mu);
    if (!c->up || c->tp.fd < 0 || !c->auth)
        rc = -ENOTCONN;
    else
        rc = rpc__wq_push(&c->wq, f, c->peer_max, c->auth);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int rpc_client_flush(rpc_client *c)
{
    int rc = 0;

    if (!c)
        return -EINVAL;
    pthread_mutex_lock(&c->mu);
    if (c->wq.len && c->tp.fd >= 0)
        rc = flush_locked(c);
    pthread_mutex_unlock(&c->mu);
    return rc < 0 ? rc : 0;
}

/* Wait (mu held) until up, stopping, or the deadline. */
static int wait_up_locked(rpc_client *c, uint64_t deadline, int stop_on_refusal)
{
    for (;;) {
        if (c->stopping)
            return -ESHUTDOWN;
        if (c->up)
            return 0;
        if (stop_on_refusal && c->last_err == -EACCES)
            return -EACCES;
        if (rpc__now_ms() >= deadline || wait_until(&c->state_cv, &c->mu, deadline)) {
            if (c->up)
                return 0;
            return c->last_err == -EACCES ? -EACCES : -ETIMEDOUT;
        }
    }
}

int rpc_client_wait_ready(rpc_client *c, uint32_t timeout_ms)
{
    int rc;

    if (!c)
        return -EINVAL;
    pthread_mutex_lock(&c->mu);
    rc = wait_up_locked(c, rpc__now_ms() + timeout_ms, 1);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int rpc_client_connected(rpc_client *c)
{
    int up;

    pthread_mutex_lock(&c->mu);
    up = c->up;
    pthread_mutex_unlock(&c->mu);
    return up;
}

int rpc_client_call(rpc_client *c, const rpc_frame *req, rpc_frame *reply, uint32_t timeout_ms)
{
    uint64_t deadline = rpc__now_ms() + timeout_ms;
    struct call k = {0};
    rpc_frame f;
    int rc;

    if (!c || !req || !reply)
        return -EINVAL;
    memset(reply, 0, sizeof(*reply));
    pthread_mutex_lock(&c->mu);
    rc = wait_up_locked(c, deadline, 0);
    if (rc)
        goto out_unlock;

    if (++c->next_id == 0)
        c->next_id = 1;
    k.id = c->next_id;
    k.reply = reply;
    cond_init_mono(&k.cv);
    f = *req;
    f.call_id = k.id;
    f.owned = NULL;
    rc = send_locked(c, &f);
    if (rc)
        goto out_cond;
    call_insert(c, &k);
    while (!k.done) {
        if (wait_until(&k.cv, &c->mu, deadline) && !k.done) {
            call_take(c, k.id);
            STAT_INC(c, timeouts);
            rc = -ETIMEDOUT;
            goto out_cond;
        }
    }
    rc = k.err;

out_cond:
    pthread_cond_destroy(&k.cv);
out_unlock:
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* ---- I/O thread ---- */

/* Poll fd for events (and the eventfd, so a stop interrupts) until deadline.
 * 0 when ready, -ETIMEDOUT, -ESHUTDOWN. */
static int poll_until(rpc_client *c, int fd, short events, uint64_t deadline)
{
    for (;;) {
        uint64_t now = rpc__now_ms();
        if (now >= deadline)
            return -ETIMEDOUT;
        struct pollfd p[2] = {{fd, events, 0}, {c->evfd, POLLIN, 0}};
        int n = poll(p, 2, (int)(deadline - now));
        if (n < 0 && errno != EINTR)
            return -errno;
        if (n <= 0)
            continue;
        if (p[1].revents) {
            uint64_t v;
            ssize_t r = read(c->evfd, &v, sizeof(v));
            (void)r;
            pthread_mutex_lock(&c->mu);
            int stop = c->stopping;
            pthread_mutex_unlock(&c->mu);
            if (stop)
                return -ESHUTDOWN;
        }
        if (p[0].revents)
            return 0;
    }
}

/* Write all of p[0, n) to t before deadline. */
static int send_all(rpc_client *c, rpc__tp *t, const uint8_t *p, size_t n, uint64_t deadline)
{
    size_t sent = 0;

    while (sent < n) {
        long k = rpc__tp_write(t, p + sent, n - sent);
        if (k == -EAGAIN) {
            int rc = poll_until(c, t->fd, POLLOUT, deadline);
            if (rc)
                return rc;
            continue;
        }
        if (k < 0)
            return (int)k;
        sent += (size_t)k;
    }
    return 0;
}

/* The TLS handshake on t before deadline: 0, or as rpc__tls_handshake. */
static int tls_connect(rpc_client *c, rpc__tp *t, uint64_t deadline)
{
    int rc = rpc__tls_attach(c->tls, t, c->host);

    while (rc == 0) {
        rc = rpc__tls_handshake(t);
        if (rc == RPC__TLS_DONE)
            return 0;
        if (rc < 0)
            return rc;
        rc = poll_until(c, t->fd, rc == RPC__TLS_WANT_WRITE ? POLLOUT : POLLIN, deadline);
    }
    return rc;
}

/* Connect, TLS when configured, and handshake. OUT: *tp_out, *auth_out (the
 * session), *peer_max. Bytes after HELLO_OK stay in rb. */
static int dial(rpc_client *c, rpc__tp *tp_out, rpc_auth **auth_out, uint32_t *peer_max)
{
    rpc__tp t = {.fd = -1, .ssl = NULL};
    uint64_t deadline = rpc__now_ms() + c->cfg.connect_timeout_ms;
    struct sockaddr_storage sa;
    socklen_t salen = 0;
    uint8_t out[RPC_AUTH_OUT_MAX];
    size_t olen = 0;
    rpc_auth *a = NULL;
    int fd = -1;
    int rc;

    rc = rpc__addr_parse(c->cfg.addr, &sa, &salen);
    if (rc)
        return rc;
    rpc_auth_config ac = {.side = RPC_AUTH_CLIENT, .secret = c->secret,
                          .secret_len = c->cfg.secret_len, .worker_id = c->cfg.worker_id,
                          .group = c->cfg.group, .role = c->cfg.role,
                          .max_frame = c->cfg.max_frame};
    rc = rpc_auth_create(&ac, &a);
    if (rc)
        return rc;
    fd = rpc__socket(&sa);
    if (fd < 0) {
        rc = fd;
        goto out_auth;
    }
    if (connect(fd, (struct sockaddr *)&sa, salen) < 0) {
        if (errno != EINPROGRESS && errno != EAGAIN) {
            rc = -errno;
            goto out_close;
        }
        rc = poll_until(c, fd, POLLOUT, deadline);
        if (rc)
            goto out_close;
        int err = 0;
        socklen_t elen = sizeof(err);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen);
        if (err) {
            rc = -err;
            goto out_close;
        }
    }

    t.fd = fd;
    if (c->tls && sa.ss_family != AF_UNIX) {
        rc = tls_connect(c, &t, deadline);
        if (rc)
            goto out_close;
    }

    rc = rpc_auth_start(a, out, sizeof(out), &olen);
    if (!rc)
        rc = send_all(c, &t, out, olen, deadline);
    if (rc)
        goto out_close;

    c->rb.len = 0;
    for (;;) {
        size_t used = 0;
        rc = rpc_auth_feed(a, c->rb.buf, c->rb.buf ? c->rb.len : 0, &used, out, sizeof(out),
                           &olen);
        if (rc < 0)
            break;
        if (olen) {
            int src = send_all(c, &t, out, olen, deadline);
            if (src) {
                rc = src;
                break;
            }
        }
        int done = rc == RPC_AUTH_DONE;
        rc = rpc__rbuf_consume(&c->rb, used);
        if (rc || done)
            break;
        if (used)
            continue; /* another frame may be there already */
        if (!rpc__tp_pending(&t)) {
            rc = poll_until(c, fd, POLLIN, deadline);
            if (rc)
                break;
        }
        long n = rpc__rbuf_read(&c->rb, &t);
        if (n == 0) {
            rc = -ECONNRESET;
            break;
        }
        if (n < 0 && n != -EAGAIN) {
            rc = (int)n;
            break;
        }
    }
    if (rc)
        goto out_close;
    *peer_max = rpc_auth_hello_ok(a)->max_frame;
    *tp_out = t;
    *auth_out = a;
    return 0;

out_close:
    if (t.fd < 0)
        close(fd);
    else
        rpc__tp_close(&t);
out_auth:
    rpc_auth_destroy(a);
    return rc;
}

static void go_down(rpc_client *c, int reason)
{
    pthread_mutex_lock(&c->mu);
    rpc__tp_close(&c->tp);
    c->up = 0;
    c->wq.head = c->wq.len = 0;
    rpc_auth_destroy(c->auth);
    c->auth = NULL;
    calls_fail_all(c, reason == -ESHUTDOWN ? -ESHUTDOWN : -ECONNRESET);
    pthread_cond_broadcast(&c->state_cv);
    pthread_mutex_unlock(&c->mu);
    c->rb.len = 0;
    STAT_INC(c, disconnects);
    if (c->cfg.handlers.on_state)
        c->cfg.handlers.on_state(c->cfg.handlers.arg, c, 0, reason);
}

/* Hand every complete frame in rb to its caller or to on_frame. 0 or a
 * malformed-frame error. */
static int dispatch(rpc_client *c)
{
    size_t off = 0;
    rpc_frame f;
    int rc;

    for (;;) {
        size_t start = off;
        rc = rpc__rbuf_next(&c->rb, &off, &f);
        if (rc == -EAGAIN)
            break;
        if (rc)
            return rc;
        /* the I/O thread is the only one that opens, and auth changes only
         * on this thread (dial, go_down): no lock needed to read it here */
        if (rpc_auth_open(c->auth, c->rb.buf + start, off - start) != 0)
            return -EKEYREJECTED;
        if (f.type == RPC_PONG)
            continue;
        if (f.type == RPC_PING) {
            rpc_frame pong = {.type = RPC_PONG, .call_id = f.call_id};
            pong.u.ping.value = f.u.ping.value;
            pthread_mutex_lock(&c->mu);
            send_locked(c, &pong);
            pthread_mutex_unlock(&c->mu);
            continue;
        }
        if (f.call_id) {
            pthread_mutex_lock(&c->mu);
            struct call *k = call_take(c, f.call_id);
            if (k) {
                size_t n = off - start;
                void *copy = malloc(n);
                if (!copy) {
                    k->err = -ENOMEM;
                } else {
                    memcpy(copy, c->rb.buf + start, n);
                    k->err = rpc_decode(copy, n, c->rb.max_frame, k->reply, NULL);
                    if (k->err)
                        free(copy); /* unreachable: the same bytes just decoded */
                    else
                        k->reply->owned = copy;
                }
                k->done = 1;
                pthread_cond_signal(&k->cv);
            }
            pthread_mutex_unlock(&c->mu);
            if (k)
                continue;
        }
        if (c->cfg.handlers.on_frame)
            c->cfg.handlers.on_frame(c->cfg.handlers.arg, c, &f);
    }
    return rpc__rbuf_consume(&c->rb, off);
}

/* One up-state iteration. 0 to go on, else the reason to go down. */
static int serve(rpc_client *c, uint64_t *last_rx, uint64_t *next_ping)
{
    int fd = c->tp.fd; /* changes only on this thread */
    uint64_t now = rpc__now_ms();
    uint64_t silence = (uint64_t)c->cfg.heartbeat_ms * c->cfg.heartbeat_misses;
    int rc = 0;

    if (now - *last_rx > silence)
        return -ETIMEDOUT;
    if (now >= *next_ping) {
        rpc_frame ping = {.type = RPC_PING};
        ping.u.ping.value = now;
        pthread_mutex_lock(&c->mu);
        send_locked(c, &ping);
        pthread_mutex_unlock(&c->mu);
        *next_ping = now + c->cfg.heartbeat_ms;
    }

    pthread_mutex_lock(&c->mu);
    short events = POLLIN | (c->wq.len ? POLLOUT : 0);
    int pending = rpc__tp_pending(&c->tp);
    pthread_mutex_unlock(&c->mu);

    uint64_t until = *next_ping < *last_rx + silence + 1 ? *next_ping : *last_rx + silence + 1;
    struct pollfd p[2] = {{fd, events, 0}, {c->evfd, POLLIN, 0}};
    int n = poll(p, 2, pending ? 0 : until > now ? (int)(until - now) : 0);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    if (pending)
        p[0].revents |= POLLIN; /* bytes OpenSSL already decrypted */
    if (p[1].revents) {
        uint64_t v;
        ssize_t r = read(c->evfd, &v, sizeof(v));
        (void)r;
    }
    if (p[0].revents & POLLOUT) {
        pthread_mutex_lock(&c->mu);
        rc = rpc__wq_flush(&c->wq, &c->tp);
        pthread_mutex_unlock(&c->mu);
        if (rc)
            return rc;
    }
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
        for (int i = 0; i < 16; i++) {
            long r;
            if (c->tp.ssl) {
                pthread_mutex_lock(&c->mu);
                r = rpc__rbuf_read(&c->rb, &c->tp);
                pthread_mutex_unlock(&c->mu);
            } else {
                r = rpc__rbuf_read(&c->rb, &c->tp);
            }
            if (r == -EAGAIN)
                break;
            if (r == 0)
                return -ECONNRESET;
            if (r < 0)
                return (int)r;
            *last_rx = rpc__now_ms();
            rc = dispatch(c);
            if (rc) {
                if (rc == -EKEYREJECTED)
                    STAT_INC(c, mac_failed);
                else if (rc != -ENOMEM)
                    STAT_INC(c, malformed);
                return rc;
            }
        }
    }
    return 0;
}

static void *client_main(void *arg)
{
    rpc_client *c = arg;
    uint32_t attempt = 0;
    uint64_t next_try = 0, last_rx = 0, next_ping = 0;
    int fd = -1; /* c->tp.fd while up, -1 while down */

    pthread_mutex_lock(&c->mu);
    while (!c->stopping) {
        if (fd >= 0) {
            pthread_mutex_unlock(&c->mu);
            int rc = serve(c, &last_rx, &next_ping);
            if (rc) {
                go_down(c, rc);
                fd = -1;
                attempt = 0;
                next_try = rpc__now_ms() + rpc__backoff_ms(attempt++, c->cfg.backoff_min_ms,
                                                           c->cfg.backoff_max_ms, &c->rng);
            }
            pthread_mutex_lock(&c->mu);
            continue;
        }
        if (rpc__now_ms() < next_try) {
            wait_until(&c->state_cv, &c->mu, next_try);
            continue;
        }
        pthread_mutex_unlock(&c->mu);
        uint32_t peer_max = RPC_DEFAULT_MAX_FRAME;
        rpc_auth *auth = NULL;
        rpc__tp tp = {.fd = -1, .ssl = NULL};
        int rc = dial(c, &tp, &auth, &peer_max);
        pthread_mutex_lock(&c->mu);
        if (rc) {
            fd = -1;
            STAT_INC(c, failures);
            if (rc != -ESHUTDOWN)
                c->last_err = rc;
            next_try = rpc__now_ms() + rpc__backoff_ms(attempt++, c->cfg.backoff_min_ms,
                                                       c->cfg.backoff_max_ms, &c->rng);
            pthread_cond_broadcast(&c->state_cv);
            continue;
        }
        c->tp = tp;
        fd = tp.fd;
        c->auth = auth;
        c->up = 1;
        c->last_err = 0;
        c->peer_max = peer_max < RPC_HEADER_SIZE + 64 ? RPC_HEADER_SIZE + 64 : peer_max;
        c->wq.head = c->wq.len = 0;
        pthread_cond_broadcast(&c->state_cv);
        pthread_mutex_unlock(&c->mu);

        STAT_INC(c, connects);
        attempt = 0;
        last_rx = rpc__now_ms();
        next_ping = last_rx + c->cfg.heartbeat_ms;
        if (c->cfg.handlers.on_state)
            c->cfg.handlers.on_state(c->cfg.handlers.arg, c, 1, 0);
        int drc = dispatch(c); /* frames that came right behind HELLO_OK */
        if (drc) {
            go_down(c, drc);
            fd = -1;
            next_try = rpc__now_ms() + rpc__backoff_ms(attempt++, c->cfg.backoff_min_ms,
                                                       c->cfg.backoff_max_ms, &c->rng);
        }
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    if (fd >= 0)
        go_down(c, -ESHUTDOWN);
    return NULL;
}

/* ---- lifecycle ---- */

/* The HOST of "tcp:HOST:PORT" (brackets of [IPv6] dropped); "" for unix:. */
static int addr_host(const char *addr, char *out, size_t cap)
{
    out[0] = '\0';
    if (strncmp(addr, "tcp:", 4) != 0)
        return 0;
    const char *h = addr + 4, *colon = strrchr(h, ':');
    if (!colon || colon == h)
        return -EINVAL;
    size_t n = (size_t)(colon - h);
    if (h[0] == '[' && n >= 2 && h[n - 1] == ']') {
        h++;
        n -= 2;
    }
    if (n == 0 || n >= cap)
        return -EINVAL;
    memcpy(out, h, n);
    out[n] = '\0';
    return 0;
}

void rpc_client_config_init(rpc_client_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->connect_timeout_ms = 3000;
    cfg->max_frame = RPC_DEFAULT_MAX_FRAME;
    cfg->max_write_queue = RPC__DEFAULT_WQ;
    cfg->heartbeat_ms = 1000;
    cfg->heartbeat_misses = 3;
    cfg->backoff_min_ms = 50;
    cfg->backoff_max_ms = 5000;
}

static void client_free(rpc_client *c)
{
    if (c->evfd >= 0)
        close(c->evfd);
    pthread_cond_destroy(&c->state_cv);
    pthread_mutex_destroy(&c->mu);
    rpc__wq_release(&c->wq);
    rpc__rbuf_release(&c->rb);
    free(c->addr);
    free(c->worker_id);
    free(c->group);
    free(c->secret);
    rpc__tls_destroy(c->tls);
    free(c);
}

int rpc_client_create(const rpc_client_config *cfg, rpc_client **out)
{
    rpc_client *c = NULL;
    int rc;

    if (!cfg || !out || !cfg->addr || !cfg->secret || cfg->secret_len == 0 ||
        cfg->secret_len > RPC_SECRET_MAX || cfg->max_frame < RPC_HEADER_SIZE + 256 ||
        cfg->max_frame > RPC_MAX_FRAME_LIMIT || cfg->heartbeat_ms == 0 ||
        cfg->heartbeat_misses == 0 || cfg->connect_timeout_ms == 0 || cfg->backoff_min_ms == 0 ||
        cfg->backoff_max_ms < cfg->backoff_min_ms || cfg->max_write_queue == 0 ||
        strlen(cfg->worker_id ? cfg->worker_id : "") > RPC_NAME_MAX ||
        strlen(cfg->group ? cfg->group : "") > RPC_NAME_MAX)
        return -EINVAL;

    c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    pthread_mutex_init(&c->mu, NULL);
    cond_init_mono(&c->state_cv);
    c->tp.fd = -1;
    c->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    c->cfg = *cfg;
    c->addr = strdup(cfg->addr);
    c->worker_id = strdup(cfg->worker_id ? cfg->worker_id : "");
    c->group = strdup(cfg->group ? cfg->group : "");
    c->secret = malloc(cfg->secret_len);
    if (c->evfd < 0) {
        rc = -errno;
        goto out_free;
    }
    if (!c->addr || !c->worker_id || !c->group || !c->secret) {
        rc = -ENOMEM;
        goto out_free;
    }
    memcpy(c->secret, cfg->secret, cfg->secret_len);
    c->cfg.tls_ca = c->cfg.tls_cert = c->cfg.tls_key = NULL; /* read now, not kept */
    if ((cfg->tls_ca && *cfg->tls_ca) || (cfg->tls_cert && *cfg->tls_cert) ||
        (cfg->tls_key && *cfg->tls_key)) {
        char err[512];
        rc = rpc__tls_client_create(cfg->tls_ca, cfg->tls_cert, cfg->tls_key, &c->tls, err,
                                    sizeof(err));
        if (!rc)
            rc = addr_host(cfg->addr, c->host, sizeof(c->host));
        if (rc)
            goto out_free;
    }
    c->cfg.addr = c->addr;
    c->cfg.worker_id = c->worker_id;
    c->cfg.group = c->group;
    c->cfg.secret = c->secret;
    c->wq.limit = cfg->max_write_queue;
    c->rb.max_frame = cfg->max_frame;
    c->peer_max = RPC_DEFAULT_MAX_FRAME;
    c->rng = (uint64_t)(uintptr_t)c ^ rpc__now_ms() * 0x9E3779B97F4A7C15ULL;

    rc = pthread_create(&c->thread, NULL, client_main, c);
    if (rc) {
        rc = -rc;
        goto out_free;
    }
    *out = c;
    return 0;

out_free:
    client_free(c);
    return rc;
}

void rpc_client_destroy(rpc_client *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->stopping = 1;
    pthread_cond_broadcast(&c->state_cv);
    pthread_mutex_unlock(&c->mu);
    wake(c);
    pthread_join(c->thread, NULL);
    client_free(c);
}

void rpc_client_get_stats(rpc_client *c, rpc_client_stats *out)
{
    out->connects = atomic_load(&c->connects);
    out->failures = atomic_load(&c->failures);
    out->disconnects = atomic_load(&c->disconnects);
    out->timeouts = atomic_load(&c->timeouts);
    out->malformed = atomic_load(&c->malformed);
    out->mac_failed = atomic_load(&c->mac_failed);
}
