/*
 * conn_guard.h - what one client may hold of the HTTP front: a deadline for
 * each request to arrive in full, and a cap on open connections per address.
 *
 * Why: libmicrohttpd's connection timeout counts idle time only, so a client
 * that sends one header byte per second keeps a connection (and in thread
 * park a thread) forever, and a few thousand of them fill max_connections.
 *
 * Deadline. A connection is "reading" from its accept, and again from the
 * end of each request on a keep-alive connection, until its next request's
 * headers and body are complete (gw_guard_done). A reading connection past
 * request_timeout_ms is shut down (shutdown(2) of both directions, without an
 * answer): libmicrohttpd then reads end-of-file on it and closes it in its own
 * thread, whatever its I/O mode. A complete request (parked, or being
 * answered) has no deadline here: its own wait_timeout_ms governs it.
 *
 * Every deadline is "now + request_timeout_ms", so a list in arming order is
 * also in deadline order: arming appends, gw_guard_done unlinks, and the
 * sweeper pops expired heads, each O(1). The lists are sharded by connection
 * with a lock each; the sweeper thread visits every shard every tick
 * (request_timeout_ms / 10, between 5 and 100 ms), so a connection is shut
 * down at most one tick after its deadline.
 *
 * Per-address cap. A table of open connections per address (an IPv4
 * address, or an IPv6 /64: one host usually holds a whole /64), under one
 * lock taken once when a connection is accepted and once when it closes, as
 * libmicrohttpd's own per-IP table does. Its own limit is per daemon, and the
 * epoll I/O mode runs one daemon per thread, hence this table. The accept
 * policy refuses an address at its cap before libmicrohttpd allocates
 * anything; the count is taken when libmicrohttpd reports the connection
 * started and given back when it reports it closed (those two always come in
 * pairs). Two threads accepting from one address at the same instant may both
 * pass the policy: the second to start is over the cap and is shut down at once.
 *
 * Ownership and threads: libmicrohttpd's callbacks come from its threads;
 * gw_guard_destroy only after every daemon using the guard has stopped (the
 * closed notifications free the per-connection state).
 */
#ifndef SECKILL_GW_CONN_GUARD_H
#define SECKILL_GW_CONN_GUARD_H

#include <microhttpd.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct gw_guard gw_guard;
typedef struct gw_guard_conn gw_guard_conn;

typedef struct gw_guard_cfg {
    uint32_t request_timeout_ms; /* 0: no deadline */
    uint32_t max_per_ip;         /* 0: no cap */
    uint32_t max_connections;    /* sizes the address table */
} gw_guard_cfg;

/* Starts the sweeper thread when there is a deadline. -ENOMEM, or -errno of
 * pthread_create. OUT: *out, freed by gw_guard_destroy. */
int gw_guard_create(const gw_guard_cfg *c, gw_guard **out);
/* Stops the sweeper and frees the guard. NULL is a no-op. */
void gw_guard_destroy(gw_guard *g);

/* ---- libmicrohttpd hooks (cls = the guard) ---- */

/* MHD_AcceptPolicyCallback: MHD_NO for an address at its cap. */
enum MHD_Result gw_guard_accept_policy(void *cls, const struct sockaddr *addr, socklen_t addrlen);
/* MHD_NotifyConnectionCallback: counts the address and arms the deadline on
 * STARTED (state in *socket_context), gives both back on CLOSED. */
void gw_guard_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                     enum MHD_ConnectionNotificationCode code);
/* The request on conn is complete (its headers and body are in): no deadline
 * until gw_guard_next. Idempotent; from libmicrohttpd's access handler. */
void gw_guard_done(gw_guard *g, struct MHD_Connection *conn);
/* The request on conn is over (answered, or the connection ends): the next
 * one must be complete within request_timeout_ms from now. */
void gw_guard_next(gw_guard *g, struct MHD_Connection *conn);

/* ---- the same without libmicrohttpd, time passed in (tests) ---- */

/* The key a client address is counted under: one per IPv4 address (an
 * IPv4-mapped IPv6 address is its IPv4 address), one per IPv6 /64 prefix,
 * never 0; 0 for anything else (not counted). */
uint64_t gw_guard_addr_key(const struct sockaddr *sa, socklen_t len);
/* A connection on fd from address key ip (gw_guard_addr_key; 0: not
 * counted). -EUSERS when ip is at its cap, -ENOMEM. Armed at now_ns. OUT: *out. */
int gw_guard_open(gw_guard *g, int fd, uint64_t ip, uint64_t now_ns, gw_guard_conn **out);
/* Frees c and gives its address count back; fd is the caller's to close. */
void gw_guard_close(gw_guard *g, gw_guard_conn *c);
void gw_guard_conn_done(gw_guard *g, gw_guard_conn *c);
void gw_guard_conn_arm(gw_guard *g, gw_guard_conn *c, uint64_t now_ns);
/* Shut down every reading connection whose deadline is at or before now_ns;
 * returns how many. */
unsigned gw_guard_sweep(gw_guard *g, uint64_t now_ns);
/* Open connections counted for ip right now. */
uint32_t gw_guard_ip_count(gw_guard *g, uint64_t ip);
/* Connections shut down for their deadline, and refused for their address,
 * since creation. */
uint64_t gw_guard_timeouts(const gw_guard *g);
uint64_t gw_guard_refused(const gw_guard *g);

#endif
