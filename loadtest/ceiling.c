/* ceiling: the HTTP ceiling of this machine for libmicrohttpd.
 *
 * A keep-alive server that answers every request with the same small JSON
 * ({"result":"sold_out"}, 409): poll() with an internal thread pool of one
 * thread per CPU, one response created at start and reused.
 *
 * Not epoll: libmicrohttpd 0.9.75's epoll loop stalls a pool thread that holds
 * a multiple of 128 keep-alive connections all waiting at once. When
 * epoll_wait() returns a full batch (MAX_EVENTS = 128), MHD calls it again with
 * the same blocking timeout (about the 30 s connection timeout) before serving
 * the batch; with nothing else in flight the thread sleeps until a new
 * connection arrives or the connections time out. At 256 connections on 2
 * threads that happens whenever the accept race splits them 128/128 (a few
 * per cent of runs: ~220 req/s instead of ~75k); poll() does the same work at
 * 256 and 1,000 connections without it.
 *
 * Whatever the gateway does on top of this costs requests/s below what this
 * server reaches; loadtest/bench.sh reports the gateway as a ratio to it.
 *
 * usage: ceiling [--listen HOST:PORT] [--threads N]
 * Prints "listening on http://HOST:PORT" once bound (PORT 0 picks one), runs
 * until SIGTERM or SIGINT.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static const char BODY[] = "{\"result\":\"sold_out\"}";
static struct MHD_Response *answer;

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **req_cls)
{
    (void)cls;
    (void)url;
    (void)method;
    (void)version;
    (void)upload_data;
    /* first call: headers only; let MHD read the body */
    if (*req_cls == NULL) {
        *req_cls = (void *)1;
        return MHD_YES;
    }
    if (*upload_size != 0) {
        *upload_size = 0; /* body ignored */
        return MHD_YES;
    }
    return MHD_queue_response(conn, MHD_HTTP_CONFLICT, answer);
}

static int parse_listen(const char *s, struct sockaddr_in *sa)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || colon - s >= 64)
        return -1;
    char host[64];
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || port > 65535)
        return -1;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

static void usage(FILE *f)
{
    fputs("usage: ceiling [--listen HOST:PORT] [--threads N]\n"
          "  --listen   address to bind (default 127.0.0.1:8081; port 0 picks one)\n"
          "  --threads  MHD thread pool size (default: one per online CPU)\n",
          f);
}

int main(int argc, char **argv)
{
    const char *listen_at = "127.0.0.1:8081";
    long threads = sysconf(_SC_NPROCESSORS_ONLN);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--listen") && i + 1 < argc) {
            listen_at = argv[++i];
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads = strtol(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 64;
        }
    }
    struct sockaddr_in sa;
    if (parse_listen(listen_at, &sa) < 0) {
        fprintf(stderr, "ceiling: --listen '%s': expected IPv4:PORT\n", listen_at);
        return 64;
    }
    if (threads < 1 || threads > 256)
        threads = 1;

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* MHD's threads inherit the mask */
    signal(SIGPIPE, SIG_IGN);

    answer = MHD_create_response_from_buffer(sizeof BODY - 1, (void *)BODY, MHD_RESPMEM_PERSISTENT);
    if (!answer || MHD_add_response_header(answer, "Content-Type", "application/json") != MHD_YES) {
        fputs("ceiling: cannot create the response\n", stderr);
        return 70;
    }
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_POLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned)threads, MHD_OPTION_CONNECTION_LIMIT, (unsigned)20000,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)(16 * 1024), MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)4096,
        MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "ceiling: cannot listen on %s\n", listen_at);
        MHD_destroy_response(answer);
        return 69;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    char host[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &sa.sin_addr, host, sizeof host);
    printf("listening on http://%s:%u\n", host, di ? di->port : ntohs(sa.sin_port));
    fflush(stdout);

    int sig = 0;
    sigwait(&set, &sig);
    MHD_stop_daemon(d);
    MHD_destroy_response(answer);
    return 0;
}
