#include "redis_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "test_proc.h"
#include "test_time.h"

/* A port nobody listens on right now (the kernel's choice for port 0). */
static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
    if (fd < 0)
        return -errno;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port > 0 ? port : -EADDRNOTAVAIL;
}

/* 1 when the server on port answers PING with +PONG. */
static int pong(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {0, 200000};
    char buf[16] = {0};
    int ok = 0, fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0 && write(fd, "PING\r\n", 6) == 6 &&
        read(fd, buf, sizeof buf - 1) > 0)
        ok = strncmp(buf, "+PONG", 5) == 0;
    close(fd);
    return ok;
}

static int spawn(redis_server *rs)
{
    char port[16], mport[16], log[sizeof rs->dir + 16];
    snprintf(port, sizeof port, "%d", rs->port);
    snprintf(mport, sizeof mport, "%d", rs->master_port);
    snprintf(log, sizeof log, "%s/redis.log", rs->dir);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(rs->error, sizeof rs->error, "fork: %s", strerror(errno));
        return -errno;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* no stray servers when a test dies */
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        char bus[16], tmo[16];
        const char *argv[32] = {"redis-server", "--port",        port,     "--bind",
                                "127.0.0.1",    "--save",        "",       "--appendonly",
                                "yes",          "--appendfsync", "always", "--dir",
                                rs->dir,        "--daemonize",   "no"};
        int argc = 15;
        if (rs->master_port) {
            argv[argc++] = "--replicaof";
            argv[argc++] = "127.0.0.1";
            argv[argc++] = mport;
        }
        if (rs->node_timeout_ms) {
            snprintf(bus, sizeof bus, "%d", rs->bus_port);
            snprintf(tmo, sizeof tmo, "%u", (unsigned)rs->node_timeout_ms);
            const char *more[] = {"--cluster-enabled",
                                  "yes",
                                  "--cluster-port",
                                  bus,
                                  "--cluster-node-timeout",
                                  tmo,
                                  "--cluster-config-file",
                                  "nodes.conf",
                                  "--cluster-require-full-coverage",
                                  "no"};
            for (size_t i = 0; i < sizeof more / sizeof more[0]; i++)
                argv[argc++] = more[i];
        }
        argv[argc] = NULL;
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    rs->pid = pid;
    for (int i = 0; i < 500; i++) { /* 10 s */
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            rs->pid = 0;
            if (WIFEXITED(st) && WEXITSTATUS(st) == 127) {
                snprintf(rs->error, sizeof rs->error,
                         "redis-server is not installed (not found in PATH); "
                         "run scripts/install-deps.sh");
                return -ENOENT;
            }
            snprintf(rs->error, sizeof rs->error,
                     "redis-server exited at start (status %d); see %s", st, log);
            return -ECHILD;
        }
        if (pong(rs->port))
            return 0;
        sleep_ms(20);
    }
    snprintf(rs->error, sizeof rs->error, "redis-server on port %d did not answer PING; see %s",
             rs->port, log);
    redis_server_stop(rs);
    return -ETIMEDOUT;
}

static int start_as(redis_server *rs, int master_port, uint32_t node_timeout_ms)
{
    int rc = -EADDRINUSE;
    memset(rs, 0, sizeof *rs);
    rs->master_port = master_port;
    rs->node_timeout_ms = node_timeout_ms;
    snprintf(rs->dir, sizeof rs->dir, "/tmp/sk-redis-XXXXXX");
    if (!mkdtemp(rs->dir)) {
        snprintf(rs->error, sizeof rs->error, "mkdtemp: %s", strerror(errno));
        return -errno;
    }
    /* the port can be taken between free_port and redis-server binding it */
    for (int attempt = 0; attempt < 5 && rc < 0; attempt++) {
        rs->port = free_port();
        if (rs->port > 0 && rs->node_timeout_ms)
            rs->bus_port = free_port();
        if (rs->port < 0 || rs->bus_port < 0) {
            rc = rs->port < 0 ? rs->port : rs->bus_port;
            snprintf(rs->error, sizeof rs->error, "no free port: %s", strerror(-rc));
            redis_server_destroy(rs);
            return rc;
        }
        if (rs->node_timeout_ms && rs->bus_port == rs->port)
            continue;
        rc = spawn(rs);
        if (rc == -ENOENT)
            break;
    }
    if (rc < 0) {
        char error[sizeof rs->error];
        memcpy(error, rs->error, sizeof error);
        redis_server_destroy(rs);
        memcpy(rs->error, error, sizeof error);
    }
    return rc;
}

int redis_server_start(redis_server *rs)
{
    return start_as(rs, 0, 0);
}

int redis_server_setup(redis_server *rs)
{
    if (redis_server_start(rs) < 0) {
        fprintf(stderr, "cannot start redis-server: %s\n", rs->error);
        return -1;
    }
    return 0;
}

int redis_server_start_cluster(redis_server *rs, uint32_t node_timeout_ms)
{
    return start_as(rs, 0, node_timeout_ms ? node_timeout_ms : 1);
}

int redis_server_cmd(const redis_server *rs, const char *cmd, char *buf, size_t cap)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)rs->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {2, 0};
    size_t have = 0;
    int rc = 0, fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -errno;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        write(fd, cmd, strlen(cmd)) != (ssize_t)strlen(cmd) || write(fd, "\r\n", 2) != 2) {
        rc = -errno;
        goto out_close;
    }
    /* one reply: a line, or a bulk string whose length the first line says */
    long want = -1;
    while (have + 1 < cap) {
        ssize_t n = read(fd, buf + have, cap - 1 - have);
        if (n <= 0)
            break;
        have += (size_t)n;
        buf[have] = '\0';
        char *eol = strstr(buf, "\r\n");
        if (!eol)
            continue;
        if (buf[0] != '$')
            break;
        if (want < 0)
            want = (long)(eol - buf) + 2 + strtol(buf + 1, NULL, 10) + 2;
        if ((long)have >= want)
            break;
    }
    buf[have] = '\0';
    rc = have ? (int)have : -EIO;
out_close:
    close(fd);
    return rc;
}

int redis_server_start_replica(redis_server *rs, const redis_server *master)
{
    char buf[4096];
    if (redis_server_cmd(master, "CONFIG SET repl-diskless-sync-delay 0", buf, sizeof buf) < 0 ||
        strncmp(buf, "+OK", 3) != 0) {
        memset(rs, 0, sizeof *rs);
        snprintf(rs->error, sizeof rs->error, "master on port %d: cannot set the sync delay",
                 master->port);
        return -EIO;
    }
    int rc = start_as(rs, master->port, 0);
    if (rc < 0)
        return rc;
    for (int i = 0; i < 1000; i++) { /* 20 s */
        if (redis_server_cmd(rs, "INFO replication", buf, sizeof buf) > 0 &&
            strstr(buf, "master_link_status:up"))
            return 0;
        sleep_ms(20);
    }
    snprintf(rs->error, sizeof rs->error, "replica on port %d: no link to the master on %d; see "
             "%s/redis.log", rs->port, master->port, rs->dir);
    redis_server_destroy(rs);
    return -ETIMEDOUT;
}

void redis_server_kill(redis_server *rs)
{
    if (rs->pid <= 0)
        return;
    kill(rs->pid, SIGKILL);
    waitpid(rs->pid, NULL, 0);
    rs->pid = 0;
}

void redis_server_stop(redis_server *rs)
{
    if (rs->pid <= 0)
        return;
    kill(rs->pid, SIGCONT); /* in case it was paused */
    kill(rs->pid, SIGTERM);
    for (int i = 0; i < 250; i++) { /* 5 s, then kill */
        if (waitpid(rs->pid, NULL, WNOHANG) == rs->pid) {
            rs->pid = 0;
            return;
        }
        sleep_ms(20);
    }
    kill(rs->pid, SIGKILL);
    waitpid(rs->pid, NULL, 0);
    rs->pid = 0;
}

int redis_server_restart(redis_server *rs)
{
    redis_server_stop(rs);
    return spawn(rs);
}

void redis_server_pause(redis_server *rs)
{
    if (rs->pid > 0)
        proc_pause(rs->pid);
}

void redis_server_resume(redis_server *rs)
{
    if (rs->pid > 0)
        kill(rs->pid, SIGCONT);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void redis_server_destroy(redis_server *rs)
{
    redis_server_stop(rs);
    if (rs->dir[0] && strncmp(rs->dir, "/tmp/sk-redis-", 14) == 0 &&
        nftw(rs->dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "redis_server: could not remove %s: %s\n", rs->dir, strerror(errno));
    rs->dir[0] = '\0';
}
