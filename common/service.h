/*
 * service.h - telling systemd how a Type=notify service is doing
 * (sd_notify): READY once it serves, RELOADING while it rereads its
 * configuration, STOPPING when it begins to stop, and WATCHDOG pings while it
 * runs when the unit sets WatchdogSec=.
 *
 * Without NOTIFY_SOCKET (started by hand, by a test, or by a unit of another
 * Type=) every call does nothing. The watchdog thread pings every half of
 * WATCHDOG_USEC as long as alive() says so (alive NULL: as long as the
 * process runs, which catches a process that cannot be scheduled or has
 * lost its threads, not a wedged request path).
 */
#ifndef SECKILL_SERVICE_H
#define SECKILL_SERVICE_H

/* READY=1 with STATUS=status (may be NULL); starts the watchdog pings when
 * systemd asks for them. Call once the service answers. */
void sk_service_ready(const char *status);
/* The watchdog's health check, called from its thread; set before
 * sk_service_ready. NULL: none. */
void sk_service_watchdog_check(int (*alive)(void *arg), void *arg);
void sk_service_reloading(void);
void sk_service_reloaded(void);
void sk_service_stopping(void);
/* Stop the watchdog thread (call before exit). */
void sk_service_release(void);

#endif
