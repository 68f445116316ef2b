#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rpc.h"

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(text, f);
    return fclose(f);
}

int gw_proc_start(gw_proc *p, const char *binary, const char *ini_text)
{
    return gw_proc_start_logged(p, binary, ini_text, NULL);
}

int gw_proc_start_logged(gw_proc *p, const char *binary, const char *ini_text, const char *log_path)
{
    int pipefd[2];
    memset(p, 0, sizeof *p);
    snprintf(p->dir, sizeof p->dir, "/tmp/seckill-it-XXXXXX");
    if (!mkdtemp(p->dir))
        return -1;
    snprintf(p->config, sizeof p->config, "%s/gw.ini", p->dir);
    /* durable state (the memory inventory's order log) in the temp dir too,
     * unless the test names its own: no run sees another's, nothing is left */
    size_t cap = strlen(ini_text) + sizeof p->dir + 128;
    char *text = malloc(cap), *tmp = malloc(cap);
    if (!text || !tmp) {
        free(text);
        free(tmp);
        return -1;
    }
    strcpy(text, ini_text);
    if (!strstr(ini_text, "data_dir")) {
        char extra[sizeof p->dir + 32];
        snprintf(extra, sizeof extra, "[queue]\ndata_dir = %s/data\n", p->dir);
        ini_merge(tmp, cap, text, extra);
        strcpy(text, tmp);
    }
    /* no load balancer to wait for: SIGTERM closes the listener at once,
     * unless the test is about the drain */
    if (!strstr(ini_text, "drain_delay_ms")) {
        ini_merge(tmp, cap, text, "[gateway]\ndrain_delay_ms = 0\n");
        strcpy(text, tmp);
    }
    free(tmp);
    int wrc = write_file(p->config, text);
    free(text);
    if (wrc < 0 || pipe(pipefd) < 0)
        return -1;
    p->pid = fork();
    if (p->pid < 0)
        return -1;
    if (p->pid == 0) {
        /* a test that dies (failed assertion, timeout) takes its servers along */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(pipefd[1], 1);
        close(pipefd[0]);
        close(pipefd[1]);
        int lf = log_path ? open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600) : -1;
        if (lf >= 0) {
            dup2(lf, 2);
            close(lf);
        }
        execl(binary, binary, "-c", p->config, "--listen", "127.0.0.1:0", (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    p->out_fd = pipefd[0];
    /* Read the banner: "... listening on http://127.0.0.1:PORT gateway_id=ID" */
    char line[512];
    size_t n = 0;
    struct pollfd pfd = {.fd = p->out_fd, .events = POLLIN};
    while (n < sizeof line - 1) {
        if (poll(&pfd, 1, 20000) <= 0)
            break;
        ssize_t k = read(p->out_fd, line + n, 1);
        if (k <= 0)
            break;
        if (line[n++] == '\n')
            break;
    }
    line[n] = '\0';
    const char *at = strstr(line, "http://127.0.0.1:");
    const char *id = strstr(line, "gateway_id=");
    if (!at || !id) {
        fprintf(stderr, "harness: gateway did not start (banner: '%s')\n", line);
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
        return -1;
    }
    p->port = atoi(at + strlen("http://127.0.0.1:"));
    const char *rpc = strstr(line, " rpc=tcp:");
    if (rpc) { /* tcp:HOST:PORT, the last colon before the next field */
        const char *end = strchr(rpc + 1, ' '), *colon = NULL;
        for (const char *c = rpc + 1; *c && (!end || c < end); c++)
            if (*c == ':')
                colon = c;
        p->rpc_port = colon ? atoi(colon + 1) : 0;
    }
    const char *adm = strstr(line, " admin=http://");
    p->admin_port = adm ? atoi(strrchr(adm, ':') + 1) : 0;
    snprintf(p->gateway_id, sizeof p->gateway_id, "%.36s", id + strlen("gateway_id="));
    return 0;
}

int gw_proc_stop(gw_proc *p)
{
    int status = -1;
    if (p->pid > 0) {
        kill(p->pid, SIGTERM);
        for (int i = 0; i < 3000; i++) { /* up to 30 s: a drain on a busy machine */
            pid_t r = waitpid(p->pid, &status, WNOHANG);
            if (r == p->pid)
                break;
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
            if (i == 2999) {
                kill(p->pid, SIGKILL);
                waitpid(p->pid, &status, 0);
                status = -1;
            }
        }
        p->pid = 0;
    }
    if (p->out_fd > 0)
        close(p->out_fd);
    p->out_fd = 0;
    if (p->dir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", p->dir); /* the config and data/ */
        if (system(cmd) != 0)
            fprintf(stderr, "harness: cannot remove %s\n", p->dir);
        p->dir[0] = '\0';
    }
    if (status == -1)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void park_ini_lines(const char *mode, char *buf, size_t cap)
{
    if (!strcmp(mode, "event-epoll"))
        snprintf(buf, cap, "park = event\nhttp_io = epoll\n");
    else
        snprintf(buf, cap, "park = %s\n", mode);
}

#define CAPTURE_DEADLINE_MS 20000

/* Read what fd has into buf[*n..len-1), dropping the rest; 0 at EOF. */
static int capture_some(int fd, char *buf, size_t len, size_t *n)
{
    char sink[4096];
    ssize_t k;
    if (*n < len - 1)
        k = read(fd, buf + *n, len - 1 - *n);
    else
        k = read(fd, sink, sizeof sink);
    if (k > 0 && *n < len - 1)
        *n += (size_t)k;
    buf[*n] = '\0';
    return k == 0 ? 0 : 1;
}

int run_capture(const char *const argv[], char *out, size_t outlen, char *err, size_t errlen)
{
    int po[2], pe[2];
    if (pipe(po) < 0)
        return -1;
    if (pipe(pe) < 0) {
        close(po[0]);
        close(po[1]);
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        dup2(po[1], 1);
        dup2(pe[1], 2);
        close(po[0]);
        close(pe[0]);
        close(po[1]);
        close(pe[1]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    /* both pipes at once (a full stderr never blocks a child we wait on
     * for stdout), and a deadline: a program that should have exited but
     * serves on is killed, and the call fails */
    size_t no = 0, ne = 0;
    out[0] = err[0] = '\0';
    struct pollfd p[2] = {{.fd = po[0], .events = POLLIN}, {.fd = pe[0], .events = POLLIN}};
    int timed_out = 0;
    for (int left = CAPTURE_DEADLINE_MS; p[0].fd >= 0 || p[1].fd >= 0;) {
        if (left <= 0) {
            timed_out = 1;
            kill(pid, SIGKILL);
            break;
        }
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int r = poll(p, 2, left);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        left -= (int)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);
        if (r < 0 && errno != EINTR)
            break;
        if (p[0].fd >= 0 && p[0].revents && !capture_some(po[0], out, outlen, &no))
            p[0].fd = -1;
        if (p[1].fd >= 0 && p[1].revents && !capture_some(pe[0], err, errlen, &ne))
            p[1].fd = -1;
    }
    close(po[0]);
    close(pe[0]);
    int status;
    waitpid(pid, &status, 0);
    if (timed_out) {
        fprintf(stderr, "run_capture: %s still running after %d ms: killed\n", argv[0],
                CAPTURE_DEADLINE_MS);
        return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* src: a loopback source address to bind, NULL for any. */
static int connect_port_from(const char *src, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0)
        return -1;
    if (src) {
        struct sockaddr_in me = {.sin_family = AF_INET};
        if (inet_pton(AF_INET, src, &me.sin_addr) != 1 ||
            bind(fd, (struct sockaddr *)&me, sizeof me) < 0) {
            close(fd);
            return -1;
        }
    }
    struct timeval tv = {30, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (int attempt = 0; attempt < 50; attempt++) {
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
            return fd;
        if (errno != ECONNREFUSED && errno != EAGAIN)
            break;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    close(fd);
    return -1;
}

static int send_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t k = send(fd, buf, len, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += k;
        len -= (size_t)k;
    }
    return 0;
}

static int parse_response(char *buf, size_t n, http_resp *r)
{
    char *eoh = strstr(buf, "\r\n\r\n");
    if (!eoh || sscanf(buf, "HTTP/1.%*d %d", &r->status) != 1)
        return -1;
    size_t hl = (size_t)(eoh - buf);
    if (hl >= sizeof r->headers)
        hl = sizeof r->headers - 1;
    memcpy(r->headers, buf, hl);
    r->headers[hl] = '\0';
    size_t bl = n - (size_t)(eoh + 4 - buf);
    if (bl >= sizeof r->body)
        bl = sizeof r->body - 1;
    memcpy(r->body, eoh + 4, bl);
    r->body[bl] = '\0';
    r->body_len = bl;
    return 0;
}

int http_raw(int port, const char *req, size_t len, http_resp *r)
{
    return http_raw_from(NULL, port, req, len, r);
}

int http_raw_from(const char *src, int port, const char *req, size_t len, http_resp *r)
{
    memset(r, 0, sizeof *r);
    int fd = connect_port_from(src, port);
    if (fd < 0) {
        fprintf(stderr, "harness: cannot connect to 127.0.0.1:%d: %s\n", port, strerror(errno));
        return -1;
    }
    /* A server may answer (413, 415) and close before reading the whole body. */
    int sent = send_all(fd, req, len);
    static __thread char buf[16384];
    size_t n = 0;
    for (;;) {
        ssize_t k = recv(fd, buf + n, sizeof buf - 1 - n, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            if (n == 0)
                fprintf(stderr, "harness: connection to %d ended with no answer (recv %zd, %s, "
                                "send %d)\n", port, k, k < 0 ? strerror(errno) : "EOF", sent);
            break;
        }
        n += (size_t)k;
        if (n == sizeof buf - 1)
            break;
    }
    close(fd);
    buf[n] = '\0';
    if (n == 0)
        return sent < 0 ? -1 : -2;
    int rc = parse_response(buf, n, r);
    if (rc < 0)
        fprintf(stderr, "harness: unparsable answer (%zu bytes): %.200s\n", n, buf);
    return rc;
}

int http_do(int port, const char *method, const char *path, const char *extra_headers,
            const char *body, size_t body_len, http_resp *r)
{
    char *req = malloc(2048 + body_len);
    if (!req)
        return -1;
    int n = snprintf(req, 2048,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s"
                     "Content-Length: %zu\r\n\r\n",
                     method, path, extra_headers ? extra_headers : "", body_len);
    if (body_len)
        memcpy(req + n, body, body_len);
    int rc = http_raw(port, req, (size_t)n + body_len, r);
    free(req);
    return rc;
}

int http_buy(int port, const char *json, http_resp *r)
{
    return http_do(port, "POST", "/seckill", "Content-Type: application/json\r\n", json,
                   strlen(json), r);
}

int http_header(const http_resp *r, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    for (const char *line = strstr(r->headers, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        const char *h = line + 2;
        if (strncasecmp(h, name, nl) == 0 && h[nl] == ':') {
            h += nl + 1;
            while (*h == ' ')
                h++;
            const char *end = strstr(h, "\r\n");
            size_t len = end ? (size_t)(end - h) : strlen(h);
            if (len >= outlen)
                len = outlen - 1;
            memcpy(out, h, len);
            out[len] = '\0';
            return 0;
        }
    }
    return -1;
}

int json_field(const char *body, const char *key, char *out, size_t outlen)
{
    char pat[96];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(body, pat);
    if (!p)
        return -1;
    p += strlen(pat);
    size_t n = 0;
    if (*p == '"') {
        p++;
        while (p[n] && p[n] != '"')
            n++;
    } else {
        while (p[n] && p[n] != ',' && p[n] != '}')
            n++;
    }
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, p, n);
    out[n] = '\0';
    return 0;
}

int proc_spawn(const char *const argv[], const char *ready, pid_t *pid)
{
    int fd[2];
    if (pipe(fd) < 0)
        return -1;
    pid_t child = fork();
    if (child < 0)
        return -1;
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fd[1]);
    *pid = child;
    int ok = ready == NULL;
    char line[512];
    size_t n = 0;
    struct pollfd pfd = {.fd = fd[0], .events = POLLIN};
    while (!ok && n < sizeof line - 1 && poll(&pfd, 1, 20000) > 0) {
        ssize_t k = read(fd[0], line + n, 1);
        if (k <= 0)
            break;
        if (line[n++] == '\n') {
            line[n] = '\0';
            ok = strstr(line, ready) != NULL;
            n = 0;
        }
    }
    /* the programs print only their banner on stdout (they ignore SIGPIPE) */
    close(fd[0]);
    if (!ok) {
        fprintf(stderr, "harness: %s did not become ready\n", argv[0]);
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        return -1;
    }
    return 0;
}

int proc_stop(pid_t pid, int sig)
{
    int status = -1;
    kill(pid, sig);
    for (int i = 0; i < 3000; i++) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

long http_stock_left(int port, const char *item)
{
    char path[128], v[32];
    http_resp r;
    snprintf(path, sizeof path, "/items/%s", item);
    if (http_do(port, "GET", path, NULL, NULL, 0, &r) != 0 || r.status != 200 ||
        json_field(r.body, "stock_left", v, sizeof v) != 0)
        return -1;
    return atol(v);
}

long http_metric(int port, const char *line)
{
    http_resp r;
    if (http_do(port, "GET", "/metrics", NULL, NULL, 0, &r) != 0 || r.status != 200)
        return -1;
    char want[160];
    snprintf(want, sizeof want, "\n%s", line); /* a sample line, not its HELP */
    const char *p = strstr(r.body, want);
    return p ? atol(p + strlen(want)) : -1;
}

int ini_merge(char *out, size_t cap, const char *base, const char *extra)
{
    size_t n = strlen(base);
    if (n + strlen(extra) + 2 > cap)
        return -ENOSPC;
    memcpy(out, base, n + 1);
    if (n && out[n - 1] != '\n') {
        out[n++] = '\n';
        out[n] = '\0';
    }
    for (const char *p = extra; *p;) {
        /* one block: an optional header line and the lines up to the next header */
        const char *body = p, *end = p;
        size_t hlen = 0;
        if (*p == '[') {
            const char *nl = strchr(p, '\n');
            hlen = nl ? (size_t)(nl - p + 1) : strlen(p);
            body = end = p + hlen;
        }
        while (*end && *end != '[') {
            const char *nl = strchr(end, '\n');
            end = nl ? nl + 1 : end + strlen(end);
        }
        size_t blen = (size_t)(end - body);
        char *at = NULL;
        for (char *s = out; hlen && (s = strstr(s, "[")) != NULL; s++) {
            if ((s == out || s[-1] == '\n') && !strncmp(s, p, hlen)) {
                at = s + hlen;
                break;
            }
        }
        if (at) { /* into the section base has */
            memmove(at + blen, at, strlen(at) + 1);
            memcpy(at, body, blen);
        } else { /* a new section at the end */
            memcpy(out + strlen(out), p, hlen + blen);
            out[n + hlen + blen] = '\0';
        }
        n = strlen(out);
        p = end;
    }
    return 0;
}

int rpc_role_client(const char *addr, const char *id, const char *group, uint32_t role,
                    const char *secret, rpc_client **out)
{
    rpc_client_config cc;
    rpc_client *c = NULL;
    rpc_client_config_init(&cc);
    cc.addr = addr;
    cc.worker_id = id;
    cc.group = group;
    cc.role = role;
    cc.secret = secret;
    cc.secret_len = strlen(secret);
    int rc = rpc_client_create(&cc, &c);
    if (rc == 0 && (rc = rpc_client_wait_ready(c, 3000)) < 0)
        rpc_client_destroy(c);
    if (rc == 0)
        *out = c;
    return rc;
}
