/*
 * service.c - sd_notify for Type=notify units (see service.h).
 */
#include "service.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "log.h"

static pthread_t dog;
static int dog_started;
static pthread_mutex_t dog_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t dog_cv;
static int dog_stop;
static uint64_t dog_usec;
static int (*dog_alive)(void *);
static void *dog_arg;

void sk_service_watchdog_check(int (*alive)(void *arg), void *arg)
{
    dog_alive = alive;
    dog_arg = arg;
}

static void *dog_main(void *unused)
{
    (void)unused;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    pthread_mutex_lock(&dog_mu);
    while (!dog_stop) {
        uint64_t half = dog_usec / 2;
        next.tv_sec += (time_t)(half / 1000000);
        next.tv_nsec += (long)(half % 1000000) * 1000;
        if (next.tv_nsec >= 1000000000L) {
            next.tv_sec++;
            next.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&dog_cv, &dog_mu, &next);
        if (dog_stop)
            break;
        if (!dog_alive || dog_alive(dog_arg))
            sd_notify(0, "WATCHDOG=1");
        else
            sk_log(SK_LOG_WARN, "service", NULL, "unhealthy: watchdog ping withheld");
    }
    pthread_mutex_unlock(&dog_mu);
    return NULL;
}

void sk_service_ready(const char *status)
{
    char msg[256];
    snprintf(msg, sizeof msg, "READY=1\nSTATUS=%s", status ? status : "serving");
    if (sd_notify(0, msg) <= 0)
        return; /* not under systemd's notify protocol */
    uint64_t usec = 0;
    if (dog_started || sd_watchdog_enabled(0, &usec) <= 0 || usec < 2)
        return;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&dog_cv, &ca);
    pthread_condattr_destroy(&ca);
    dog_usec = usec;
    if (pthread_create(&dog, NULL, dog_main, NULL) == 0)
        dog_started = 1;
    else
        sk_log(SK_LOG_WARN, "service", NULL, "cannot start the watchdog thread");
}

void sk_service_reloading(void)
{
    sd_notify(0, "RELOADING=1");
}

void sk_service_reloaded(void)
{
    sd_notify(0, "READY=1");
}

void sk_service_stopping(void)
{
    sd_notify(0, "STOPPING=1");
}

void sk_service_release(void)
{
    if (!dog_started)
        return;
    pthread_mutex_lock(&dog_mu);
    dog_stop = 1;
    pthread_cond_signal(&dog_cv);
    pthread_mutex_unlock(&dog_mu);
    pthread_join(dog, NULL);
    pthread_cond_destroy(&dog_cv);
    dog_started = 0;
}
