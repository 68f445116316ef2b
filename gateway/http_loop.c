#include "http_loop.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct gw_loop {
    gw_http *h;
    struct MHD_Daemon *d;
    int epoll_fd; /* the daemon's; polled, never waited on with epoll_wait */
    int wake_fd;  /* eventfd: a command, or a resume while the loop sleeps */
    int rdhup_fd; /* epoll: its connections' EPOLLRDHUP, see http_loop.h */
    struct MHD_Connection **eof; /* FIN seen, end-of-file not yet re-armed */
    size_t neof, eof_cap;
    unsigned closed; /* connections closed so far (loop thread only) */
    pthread_t th;
    int started;
    atomic_int quiesce; /* commands, set before wake_fd is written */
    atomic_int stop;
    atomic_uint resumes; /* gw_http_resume calls so far */
    atomic_int sleeping; /* the loop is in (or about to enter) poll() */
    int quiesced; /* under h->mu: the loop has let go of the listening socket */
} gw_loop;

struct gw_http {
    MHD_NotifyConnectionCallback notify;
    void *notify_cls;
    int listen_fd;
    uint16_t port;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a loop has quiesced */
    unsigned n;        /* loops with a daemon */
    unsigned cap;      /* loops allocated */
    gw_loop loops[];
};

static void loop_wake(gw_loop *l)
{
    uint64_t one = 1;
    while (write(l->wake_fd, &one, sizeof one) < 0 && errno == EINTR)
        ;
}

static void loop_quiesce(gw_loop *l)
{
    /* returns the shared listening socket, which gw_http closes once */
    (void)MHD_quiesce_daemon(l->d);
    pthread_mutex_lock(&l->h->mu);
    l->quiesced = 1;
    pthread_cond_broadcast(&l->h->cv);
    pthread_mutex_unlock(&l->h->mu);
}

/* The re-arm writes libmicrohttpd's own epoll registration (its events and
 * data.ptr = the connection), which is internal to the version it was read
 * from; with any other version the loops leave it alone, and a half-closed
 * connection waits for request_timeout_ms (conn_guard.h) instead. */
#define REARM_EOF (MHD_VERSION == 0x00097500)

static _Thread_local gw_loop *self;

gw_loop *gw_http_self(void)
{
    return self;
}

/* In external mode libmicrohttpd has no wake-up channel of its own:
 * MHD_resume_connection only marks the connection, and the next MHD_run
 * (which looks for marked connections first) carries on with it. So the
 * loop re-runs when resumes were counted during its run, and a resumer that
 * finds the loop asleep wakes it through wake_fd: the loop publishes
 * `sleeping` before its last look at `resumes`, the resumer counts before it
 * looks at `sleeping` (all seq_cst), so one of them sees the other. A busy
 * loop costs a resumer no system call. */
void gw_http_resume(gw_loop *l, struct MHD_Connection *conn)
{
    MHD_resume_connection(conn);
    atomic_fetch_add(&l->resumes, 1);
    if (atomic_load(&l->sleeping))
        loop_wake(l);
}

/* MHD_OPTION_NOTIFY_CONNECTION: libmicrohttpd starts and closes a
 * connection on the thread of the daemon that serves it, i.e. this loop's. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    gw_http *h = cls;
    gw_loop *l = self;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (l && ci) {
        struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLET, .data.ptr = conn};
        if (code == MHD_CONNECTION_NOTIFY_STARTED) {
            (void)epoll_ctl(l->rdhup_fd, EPOLL_CTL_ADD, ci->connect_fd, &ev);
        } else { /* before libmicrohttpd closes the fd, so no event outlives conn */
            (void)epoll_ctl(l->rdhup_fd, EPOLL_CTL_DEL, ci->connect_fd, &ev);
            l->closed++;
            for (size_t i = 0; i < l->neof; i++)
                if (l->eof[i] == conn)
                    l->eof[i--] = l->eof[--l->neof];
        }
    }
    if (h->notify)
        h->notify(h->notify_cls, conn, socket_context, code);
}

/* Connections whose peer has sent its FIN join l->eof. Right after MHD_run,
 * on the loop's thread (no connection reported here has been closed since
 * epoll_wait returned it), each of them whose bytes libmicrohttpd has all
 * read is re-armed in the daemon's set; one with bytes still unread waits
 * for a later MHD_run to read them (re-arming it now would be spent on those
 * bytes again). Returns how many were re-armed. */
static int rearm_eof(gw_loop *l)
{
    struct epoll_event evs[64];
    int total = 0, n;
    do {
        n = epoll_wait(l->rdhup_fd, evs, 64, 0);
        for (int i = 0; i < n; i++) {
            if (l->neof == l->eof_cap) {
                size_t cap = l->eof_cap ? l->eof_cap * 2 : 64;
                struct MHD_Connection **e = realloc(l->eof, cap * sizeof *e);
                if (!e)
                    break; /* that connection waits for its idle timeout */
                l->eof = e;
                l->eof_cap = cap;
            }
            l->eof[l->neof++] = evs[i].data.ptr;
        }
    } while (n == 64);
    for (size_t i = 0; i < l->neof; i++) {
        struct MHD_Connection *conn = l->eof[i];
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        char b;
        if (ci && recv(ci->connect_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0)
            continue; /* not drained yet */
        if (ci && REARM_EOF) {
            /* exactly what libmicrohttpd 0.9.75 registers (daemon.c) */
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLPRI | EPOLLET,
                                     .data.ptr = conn};
            if (epoll_ctl(l->epoll_fd, EPOLL_CTL_MOD, ci->connect_fd, &ev) == 0)
                total++;
        }
        l->eof[i--] = l->eof[--l->neof];
    }
    return total;
}

static void *loop_main(void *arg)
{
    gw_loop *l = arg;
    self = l;
    struct pollfd p[3] = {{.fd = l->epoll_fd, .events = POLLIN},
                          {.fd = l->wake_fd, .events = POLLIN},
                          {.fd = l->rdhup_fd, .events = POLLIN}};
    int quiesced = 0;
    for (;;) {
        unsigned seen = atomic_load(&l->resumes), closed = l->closed;
        /* serves whatever is ready without blocking: MHD drains its epoll
         * set with a zero timeout here */
        MHD_run(l->d);
        int again = rearm_eof(l) > 0; /* read those end-of-files now */
        if (!quiesced && atomic_load(&l->quiesce)) {
            loop_quiesce(l);
            quiesced = 1;
        }
        if (atomic_load(&l->stop))
            break;
        /* A daemon at its connection limit takes the listening socket out of
         * its epoll set and puts it back only at the start of its next run:
         * after closing connections it must run again, or the backlog waits
         * for some other event (up to the idle timeout). */
        if (again || l->closed != closed)
            continue;
        MHD_UNSIGNED_LONG_LONG to;
        int ms = -1;
        if (MHD_get_timeout(l->d, &to) == MHD_YES)
            ms = to > INT_MAX ? INT_MAX : (int)to;
        if (ms == 0)
            continue; /* data already buffered */
        atomic_store(&l->sleeping, 1);
        if (atomic_load(&l->resumes) != seen) {
            atomic_store(&l->sleeping, 0);
            continue;
        }
        int n = poll(p, 3, ms);
        atomic_store(&l->sleeping, 0);
        if (n > 0 && (p[1].revents & POLLIN)) {
            uint64_t v;
            (void)!read(l->wake_fd, &v, sizeof v);
        }
    }
    return NULL;
}

static int listen_socket(const struct sockaddr_storage *addr, uint16_t *port)
{
    int v6 = addr->ss_family == AF_INET6;
    if (!v6 && addr->ss_family != AF_INET)
        return -EAFNOSUPPORT;
    int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    /* a restart binds while old connections linger in TIME_WAIT; no
     * SO_REUSEPORT: a second gateway on the same port is an error */
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    socklen_t alen = v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (bind(fd, (const struct sockaddr *)addr, alen) < 0 || listen(fd, 4096) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    *port = ntohs(v6 ? ((struct sockaddr_in6 *)&sa)->sin6_port : ((struct sockaddr_in *)&sa)->sin_port);
    return fd;
}

int gw_http_create(const gw_http_cfg *c, gw_http **out)
{
    if (!c->threads || !c->handler)
        return -EINVAL;
    gw_http *h = calloc(1, sizeof *h + c->threads * sizeof h->loops[0]);
    if (!h)
        return -ENOMEM;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    h->cap = c->threads;
    h->notify = c->notify;
    h->notify_cls = c->notify_cls;
    for (unsigned i = 0; i < c->threads; i++)
        h->loops[i].wake_fd = h->loops[i].rdhup_fd = -1;
    int rc = listen_socket(&c->addr, &h->port);
    if (rc < 0) {
        h->listen_fd = -1;
        goto out_destroy;
    }
    h->listen_fd = rc;
    /* the limit is per daemon; together they allow at least max_connections */
    unsigned per = (c->max_connections + c->threads - 1) / c->threads;
    for (unsigned i = 0; i < c->threads; i++) {
        gw_loop *l = &h->loops[i];
        l->h = h;
        l->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        l->rdhup_fd = epoll_create1(EPOLL_CLOEXEC);
        if (l->wake_fd < 0 || l->rdhup_fd < 0) {
            rc = -errno;
            goto out_destroy;
        }
        l->d = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
                                    (c->addr.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0),
                                0,
                                c->accept, c->accept_cls, c->handler, c->handler_cls,
                                MHD_OPTION_LISTEN_SOCKET, h->listen_fd,
                                MHD_OPTION_CONNECTION_LIMIT, per ? per : 1U,
                                MHD_OPTION_CONNECTION_TIMEOUT, c->connection_timeout,
                                MHD_OPTION_CONNECTION_MEMORY_LIMIT, c->connection_memory,
                                MHD_OPTION_NOTIFY_COMPLETED, c->completed, c->completed_cls,
                                MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
                                MHD_OPTION_URI_LOG_CALLBACK, c->uri_log, c->uri_log_cls,
                                MHD_OPTION_END);
        if (!l->d) {
            rc = -ENOMEM; /* the socket is bound already: MHD failed on its own resources */
            goto out_destroy;
        }
        h->n = i + 1;
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(l->d, MHD_DAEMON_INFO_EPOLL_FD);
        if (!di) {
            rc = -EINVAL;
            goto out_destroy;
        }
        l->epoll_fd = di->epoll_fd;
        rc = -pthread_create(&l->th, NULL, loop_main, l);
        if (rc < 0)
            goto out_destroy;
        l->started = 1;
        char name[16];
        snprintf(name, sizeof name, "gw-http-%u", i % 100);
        pthread_setname_np(l->th, name);
    }
    *out = h;
    return 0;
out_destroy:
    gw_http_destroy(h);
    return rc;
}

uint16_t gw_http_port(const gw_http *h)
{
    return h->port;
}

void gw_http_quiesce(gw_http *h)
{
    if (h->listen_fd < 0)
        return;
    for (unsigned i = 0; i < h->n; i++) {
        gw_loop *l = &h->loops[i];
        if (l->started) {
            atomic_store(&l->quiesce, 1);
            loop_wake(l);
        } else {
            loop_quiesce(l); /* no thread: nothing else touches the daemon */
        }
    }
    pthread_mutex_lock(&h->mu);
    for (unsigned i = 0; i < h->n; i++)
        while (!h->loops[i].quiesced)
            pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
    close(h->listen_fd); /* no daemon holds it any more */
    h->listen_fd = -1;
}

void gw_http_destroy(gw_http *h)
{
    if (!h)
        return;
    /* every daemon lets go of the shared socket first, so that none of
     * them closes it on stop */
    gw_http_quiesce(h);
    for (unsigned i = 0; i < h->n; i++) {
        gw_loop *l = &h->loops[i];
        if (l->started) {
            atomic_store(&l->stop, 1);
            loop_wake(l);
            pthread_join(l->th, NULL);
        }
        MHD_stop_daemon(l->d);
    }
    for (unsigned i = 0; i < h->cap; i++) {
        if (h->loops[i].wake_fd >= 0)
            close(h->loops[i].wake_fd);
        if (h->loops[i].rdhup_fd >= 0)
            close(h->loops[i].rdhup_fd);
        free(h->loops[i].eof);
    }
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
