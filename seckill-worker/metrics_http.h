/*
 * metrics_http.h - the worker process's own small HTTP port ([worker]
 * metrics_listen): GET /metrics (Prometheus text: what the caller's render
 * function writes, then seckill_build_info and process_*) and GET /livez.
 * One libmicrohttpd thread; nothing else is served.
 */
#ifndef SECKILL_SK_METRICS_HTTP_H
#define SECKILL_SK_METRICS_HTTP_H

#include <stdint.h>

#include "promtext.h"

typedef struct sk_metrics_srv sk_metrics_srv;

/* Called on the server's thread for each scrape: append the metrics. */
typedef void (*sk_metrics_render_fn)(void *arg, sk_text *t);

/* Listen on host:port (port 0: any free one). arg must outlive the server.
 * OUT: *out. -EADDRINUSE or -EINVAL (host not an address) when it cannot. */
int sk_metrics_start(const char *host, uint16_t port, sk_metrics_render_fn fn, void *arg,
                     sk_metrics_srv **out);
/* The bound port. */
uint16_t sk_metrics_port(const sk_metrics_srv *m);
/* Stop and free. NULL is fine. */
void sk_metrics_stop(sk_metrics_srv *m);

#endif
