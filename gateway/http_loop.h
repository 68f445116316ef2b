/* Event loops for libmicrohttpd in epoll mode, one thread and one daemon each.
 *
 * Why not MHD's own thread pool: libmicrohttpd 0.9.75's internal epoll loop,
 * after an epoll_wait that fills its 128 events, waits again with the full
 * timeout before serving them, so a thread whose connections are exactly 128
 * waiting requests stalls for up to 30 s. Its poll mode does not stall but
 * walks every connection of the thread at every wake-up, which made the
 * gateway use a whole CPU at any load. Here each thread runs a daemon in
 * "external" epoll mode: it sleeps in poll() on the daemon's epoll descriptor
 * (which does not consume its events) and then calls MHD_run(), which drains
 * the events with a zero timeout and so never waits with events in hand.
 * In this mode a resume writes no eventfd: gw_http_resume wakes the loop
 * only when it sleeps.
 *
 * The daemons share one listening socket made here. Commands to a loop
 * (quiesce, stop) go through an eventfd and are carried out by the loop's own
 * thread, the only one that touches its daemon apart from
 * MHD_resume_connection (gw_http_resume), which libmicrohttpd allows from any
 * thread.
 *
 * End-of-file. libmicrohttpd 0.9.75 registers connections edge-triggered and
 * takes a short read as "nothing more to read"; when a client's last bytes
 * and its FIN arrive together (half a request, then shutdown(SHUT_WR)), the
 * one edge is spent on the data, the end-of-file is never read, and the
 * connection lingers until its idle timeout. So each loop also watches its
 * connections for EPOLLRDHUP in an epoll set of its own, and after MHD_run
 * re-arms the connection in the daemon's set (EPOLL_CTL_MOD, the same events
 * and data libmicrohttpd registered), which queues a new edge: the next
 * MHD_run reads the end-of-file and closes the connection as its poll mode
 * would. Suspended connections are outside the daemon's set (ENOENT, left
 * alone); libmicrohttpd re-adds them on resume, which reports the EOF then.
 * A connection whose bytes libmicrohttpd has not all read yet is re-armed
 * only once it has (MSG_PEEK), or the new edge would be spent on them too.
 * The registration repeated is libmicrohttpd 0.9.75's; built against another
 * version the loops do not re-arm (see REARM_EOF in http_loop.c).
 *
 * Connection limit. A daemon at its limit drops the listening socket from
 * its epoll set and adds it back only when its next run starts, so a loop
 * that closed connections runs again before it sleeps. */
#ifndef GW_HTTP_LOOP_H
#define GW_HTTP_LOOP_H

#include <microhttpd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdint.h>

typedef struct gw_http gw_http;
typedef struct gw_loop gw_loop;

typedef struct gw_http_cfg {
    struct sockaddr_storage addr; /* AF_INET or AF_INET6; port 0: any free port (gw_http_port) */
    unsigned threads;            /* >= 1 */
    unsigned max_connections;    /* over all threads together */
    unsigned connection_timeout; /* seconds idle before MHD closes a connection */
    size_t connection_memory;    /* MHD_OPTION_CONNECTION_MEMORY_LIMIT */
    MHD_AccessHandlerCallback handler;
    void *handler_cls;
    MHD_RequestCompletedCallback completed;
    void *completed_cls;
    MHD_AcceptPolicyCallback accept; /* may be NULL */
    void *accept_cls;
    MHD_NotifyConnectionCallback notify; /* may be NULL; called on the loop's thread */
    void *notify_cls;
    /* MHD_OPTION_URI_LOG_CALLBACK, may be NULL */
    void *(*uri_log)(void *cls, const char *uri, struct MHD_Connection *conn);
    void *uri_log_cls;
} gw_http_cfg;

/* Binds, listens and starts c->threads loops. Returns 0 or -errno
 * (-EADDRINUSE when the address is taken); on failure nothing is left
 * running. OUT: *out, freed by gw_http_destroy. */
int gw_http_create(const gw_http_cfg *c, gw_http **out);

/* The bound port (the real one when cfg.addr had port 0). */
uint16_t gw_http_port(const gw_http *h);

/* The loop whose thread calls (inside a libmicrohttpd callback); NULL on
 * any other thread. Valid until gw_http_destroy. */
gw_loop *gw_http_self(void);

/* MHD_resume_connection for a connection suspended on loop l (the
 * gw_http_self() of the handler that suspended it), from any thread.
 * Use this, not MHD_resume_connection alone: see http_loop.c. */
void gw_http_resume(gw_loop *l, struct MHD_Connection *conn);

/* Stops accepting: every loop takes the listening socket out of its daemon,
 * then it is closed. Connections already open go on being served. Idempotent. */
void gw_http_quiesce(gw_http *h);

/* Quiesces, stops the loops and then the daemons (which close their open
 * connections; suspended ones must have been resumed before). NULL is a no-op. */
void gw_http_destroy(gw_http *h);

#endif
