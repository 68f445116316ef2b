#include "metrics_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct sk_metrics_srv {
    struct MHD_Daemon *d;
    sk_metrics_render_fn fn;
    void *arg;
    uint16_t port;
};

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
                             char *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

#define JSON(c, status, s)                                                                     \
    reply(c, status, "application/json", (char *)(s), sizeof(s) - 1, MHD_RESPMEM_PERSISTENT)

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *data_size, void **con_cls)
{
    sk_metrics_srv *m = cls;
    (void)version, (void)data;
    if (!*con_cls) { /* the headers: answer once the request is in */
        *con_cls = m;
        return MHD_YES;
    }
    if (*data_size) { /* a body is read and dropped */
        *data_size = 0;
        return MHD_YES;
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return JSON(c, 405, "{\"result\":\"method_not_allowed\"}");
    if (!strcmp(url, "/livez"))
        return JSON(c, 200, "{\"status\":\"ok\"}");
    if (strcmp(url, "/metrics") != 0)
        return JSON(c, 404, "{\"result\":\"not_found\"}");
    sk_text t;
    if (sk_text_init(&t, 8192) == 0) {
        m->fn(m->arg, &t);
        sk_prom_build_info(&t);
        sk_prom_process(&t);
    }
    if (sk_text_failed(&t)) { /* out of memory: no scrape rather than a cut-off one */
        sk_text_release(&t);
        return JSON(c, 503, "{\"result\":\"overloaded\"}");
    }
    return reply(c, 200, "text/plain; version=0.0.4", t.buf, t.len, MHD_RESPMEM_MUST_FREE);
}

int sk_metrics_start(const char *host, uint16_t port, sk_metrics_render_fn fn, void *arg,
                     sk_metrics_srv **out)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned v6 = 0;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        v6 = MHD_USE_IPv6;
    } else {
        return -EINVAL;
    }
    sk_metrics_srv *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    m->fn = fn;
    m->arg = arg;
    m->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | v6, 0, NULL, NULL,
                            on_request, m, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    if (!m->d) {
        free(m);
        return -EADDRINUSE;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(m->d, MHD_DAEMON_INFO_BIND_PORT);
    m->port = di ? di->port : port;
    *out = m;
    return 0;
}

uint16_t sk_metrics_port(const sk_metrics_srv *m)
{
    return m->port;
}

void sk_metrics_stop(sk_metrics_srv *m)
{
    if (!m)
        return;
    MHD_stop_daemon(m->d);
    free(m);
}
